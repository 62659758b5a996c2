//! Shared test harness: spawns the `strand` binary on a free port with a
//! temporary data directory, waits until it accepts TCP connections, and
//! offers kill -9 / stop / restart on the same port and data directory.
//!
//! Usage from an integration test file:
//! ```ignore
//! mod common;
//! use common::{Broker, StartOpts};
//! let b = Broker::start(StartOpts::default().set("num.partitions", "3"));
//! let bootstrap = b.bootstrap(); // "127.0.0.1:PORT"
//! ```
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for the broker to start accepting connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restart keeps retrying while the old port is still "in use".
/// Sockets of a killed broker linger in FIN-WAIT-2 / TIME-WAIT for up to
/// 60 s (tcp_fin_timeout); a listener without SO_REUSEADDR cannot rebind
/// until they are gone. Real Kafka rebinds immediately.
pub const PORT_BUSY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Debug)]
pub struct StartOpts {
    /// `--shards N`
    pub shards: usize,
    /// `--set key=value` pairs (Kafka config names).
    pub sets: Vec<(String, String)>,
    /// Run as the README does: in the root temp dir as the working directory, with no
    /// `--data-dir` (the default, relative `strand-data`).
    pub default_data_dir: bool,
}

impl Default for StartOpts {
    fn default() -> Self {
        StartOpts { shards: 1, sets: Vec::new(), default_data_dir: false }
    }
}

impl StartOpts {
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.sets.push((key.to_string(), value.to_string()));
        self
    }
    pub fn default_data_dir(mut self) -> Self {
        self.default_data_dir = true;
        self
    }
}

pub struct Broker {
    opts: StartOpts,
    port: u16,
    /// Root temp dir: holds `data/` (the broker data dir) and `broker.log`.
    root: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

/// Pick a free TCP port on 127.0.0.1 (bind :0, read the port, drop).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// True if `addr` answers a Kafka ApiVersions v0 request (correlation id
/// echoed). A bare TCP connect is not enough: after a kill -9 the old
/// listening socket can linger briefly in the kernel and still accept.
pub fn probe_api_versions(addr: SocketAddr) -> bool {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(s) => s,
        Err(_) => return false,
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(1000)));
    let corr: i32 = 0x5eed;
    let mut req = Vec::new();
    req.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    req.extend_from_slice(&0i16.to_be_bytes()); // v0
    req.extend_from_slice(&corr.to_be_bytes());
    req.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    if s.write_all(&frame).is_err() {
        return false;
    }
    let mut hdr = [0u8; 8];
    if s.read_exact(&mut hdr).is_err() {
        return false;
    }
    i32::from_be_bytes(hdr[4..8].try_into().unwrap()) == corr
}

/// Kernel and user stacks of every thread of a process (for a broker stuck at start-up):
/// /proc wchan and state always, gdb backtraces when gdb is installed.
pub fn thread_stacks(pid: u32) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            let p = t.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default().trim().to_string();
            out.push_str(&format!("task {} {} wchan={} stat={}\n", t.file_name().to_string_lossy(), read("comm"), read("wchan"), read("stat")));
        }
    }
    if let Ok(o) = Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 30"])
        .output()
    {
        let text = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('#') || l.starts_with("Thread")).take(300).collect();
        out.push_str(&lines.join("\n"));
    }
    out
}

impl Broker {
    /// Start a broker on a fresh free port with a fresh temporary data dir.
    pub fn start(opts: StartOpts) -> Broker {
        let root = tempfile::Builder::new()
            .prefix("strand-test-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(root.path().join("data")).unwrap();
        let mut b = Broker { opts, port: free_port(), root, child: None, starts: 0 };
        b.spawn_and_wait();
        b
    }

    /// Start a broker reusing an existing root temp dir (as returned by
    /// `into_dir`), e.g. to restart with different options.
    pub fn start_in(opts: StartOpts, root: tempfile::TempDir) -> Broker {
        std::fs::create_dir_all(root.path().join("data")).unwrap();
        let mut b = Broker { opts, port: free_port(), root, child: None, starts: 0 };
        b.spawn_and_wait();
        b
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    /// "127.0.0.1:PORT"
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join(if self.opts.default_data_dir { "strand-data" } else { "data" })
    }
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("broker.log")
    }
    pub fn opts(&self) -> &StartOpts {
        &self.opts
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Entire broker stderr log so far (all runs, separated by markers).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    }

    /// Last `n` lines of the broker log.
    pub fn log_tail(&self, n: usize) -> String {
        let all = self.logs();
        let lines: Vec<&str> = all.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    fn spawn_once(&mut self) -> Child {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open broker log");
        let _ = writeln!(
            log,
            "===== harness: start #{} on port {} =====",
            self.starts, self.port
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strand"));
        cmd.arg("serve").arg("--listen").arg(self.bootstrap());
        if self.opts.default_data_dir {
            cmd.current_dir(self.root.path());
        } else {
            cmd.arg("--data-dir").arg(self.data_dir());
        }
        cmd.arg("--shards").arg(self.opts.shards.to_string());
        for (k, v) in &self.opts.sets {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        cmd.spawn().expect("spawn strand binary")
    }

    /// Spawn the broker and wait until its port accepts connections. If the
    /// process exits early (e.g. the port is still briefly unavailable after
    /// a kill), retry until READY_TIMEOUT.
    fn spawn_and_wait(&mut self) {
        let t0 = Instant::now();
        let mut deadline = t0 + READY_TIMEOUT;
        let mut warned = false;
        let mut child = self.spawn_once();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if self.log_tail(3).contains("already in use") && !warned {
                    warned = true;
                    deadline = t0 + PORT_BUSY_TIMEOUT;
                    let ss = Command::new("ss")
                        .args(["-tan", &format!("( sport = :{} )", self.port)])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    eprintln!(
                        "WARNING (broker issue): strand cannot rebind port {} after restart \
                         (address already in use); retrying for up to {:?}. Sockets:\n{ss}",
                        self.port, PORT_BUSY_TIMEOUT
                    );
                }
                if Instant::now() >= deadline {
                    panic!(
                        "strand exited before becoming ready ({status}); log tail:\n{}",
                        self.log_tail(60)
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
                child = self.spawn_once();
                continue;
            }
            if probe_api_versions(self.addr()) && matches!(child.try_wait(), Ok(None)) {
                if warned {
                    eprintln!(
                        "strand rebound port {} after {:?}",
                        self.port,
                        t0.elapsed()
                    );
                }
                self.child = Some(child);
                return;
            }
            if Instant::now() >= deadline {
                let stacks = thread_stacks(child.id());
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "strand did not accept connections on {} within {:?}; log tail:\n{}\nthreads of the stuck process:\n{stacks}",
                    self.bootstrap(),
                    READY_TIMEOUT,
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the broker and reap it. No-op if not running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to 10 s for exit, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        return;
                    }
                }
            }
        }
    }

    /// Start again (same port, same data dir, same options). Kills (-9) the
    /// current process first if it is still running.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait();
    }

    /// Start again after a graceful `stop()`.
    pub fn restart_graceful(&mut self) {
        self.stop();
        self.spawn_and_wait();
    }

    /// Kill the process and hand back the temp dir (data dir + log), e.g. to
    /// start again with different options via `start_in`.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.kill9();
        let root = std::mem::replace(
            &mut self.root,
            tempfile::Builder::new().prefix("strand-empty-").tempdir().unwrap(),
        );
        root
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "----- strand log tail ({}) -----\n{}\n----- end strand log -----",
                self.log_path().display(),
                self.log_tail(200)
            );
            if std::env::var_os("STRAND_TEST_KEEP").is_some() {
                let p = std::mem::replace(
                    &mut self.root,
                    tempfile::Builder::new().prefix("strand-empty-").tempdir().unwrap(),
                )
                .keep();
                eprintln!("kept test dir at {}", p.display());
            }
        }
    }
}
