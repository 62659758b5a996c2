//! Start-up checks: each says what is wrong and how to fix it, before any shard starts.
//!
//! Owns the checks of the environment (data directory filesystem and O_DIRECT, io_uring,
//! memlock, listen port). Touches nothing but a probe file in the data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// File opened first by every shard: glommio probes polled-I/O support by reading offset 0 of the
/// first DMA file an executor opens, and an empty first file wrongly marks the disk pollable,
/// which breaks every later O_DIRECT read. This file is never empty.
pub const PROBE_FILE: &str = ".strand-probe";
const PROBE_LEN: usize = 4096;
/// glommio's executor refuses to start below this RLIMIT_MEMLOCK for non-root users.
const MIN_MEMLOCK_BYTES: u64 = 512 << 10;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6u32 as i64;

pub fn check_all(data_dir: &Path, listen: SocketAddr) -> Result<()> {
    check_io_uring()?;
    check_memlock()?;
    prepare_data_dir(data_dir)?;
    warn_discard_mount(data_dir);
    check_port(listen)?;
    Ok(())
}

fn check_io_uring() -> Result<()> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() == "2" {
            bail!("io_uring is disabled on this host (kernel.io_uring_disabled=2); Strand needs it: run `sysctl -w kernel.io_uring_disabled=0`");
        }
    }
    // io_uring_setup with a tiny ring tells whether the kernel (or a seccomp filter) allows it.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) (120) bytes into
    // `params`, which holds that many.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        bail!("io_uring is unavailable ({err}); Strand needs Linux >= 5.8 with io_uring allowed (check kernel.io_uring_disabled, and seccomp profiles in containers)");
    }
    // SAFETY: `fd` is the ring descriptor just created and owned by nothing else.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn check_memlock() -> Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(());
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root && lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < MIN_MEMLOCK_BYTES {
        bail!(
            "the memlock limit is {} KiB, below the {} KiB io_uring needs; raise it with `ulimit -l unlimited` (or LimitMEMLOCK=infinity in the systemd unit, or tuning/memlock.sh)",
            lim.rlim_cur / 1024,
            MIN_MEMLOCK_BYTES / 1024
        );
    }
    Ok(())
}

/// Creates the data directory, refuses filesystems without O_DIRECT, and writes the probe file.
fn prepare_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!("cannot create the data directory {}; choose another with --data-dir", dir.display())
    })?;
    // SAFETY: statfs is a plain C struct of integers, valid when zeroed.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let cpath = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).context("data directory path")?;
    // SAFETY: `cpath` is a NUL-terminated path and `st` a writable statfs.
    if unsafe { libc::statfs(cpath.as_ptr(), &mut st) } == 0 {
        let ftype = st.f_type as i64;
        if ftype == TMPFS_MAGIC || ftype == RAMFS_MAGIC {
            bail!(
                "the data directory {} is on tmpfs/ramfs, which does not support O_DIRECT; put it on a disk filesystem such as ext4 or xfs (--data-dir DIR)",
                dir.display()
            );
        }
    }
    let probe = dir.join(PROBE_FILE);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&probe)
        .with_context(|| format!("the data directory {} is not writable", dir.display()))?;
    f.write_all(&[b'S'; PROBE_LEN])?;
    f.sync_all()?;
    drop(f);
    // An O_DIRECT write of one aligned block must work.
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let ok = direct.is_ok_and(|file| aligned_write_works(&file));
    if !ok {
        bail!(
            "the filesystem of the data directory {} does not support O_DIRECT writes; put it on ext4 or xfs (--data-dir DIR)",
            dir.display()
        );
    }
    Ok(())
}

/// Writes one 4 KiB-aligned block at offset 0 of `file` (opened O_DIRECT); true when all of it
/// was written. The aligned block is a slice of a larger vector: no raw allocation to check.
fn aligned_write_works(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    const ALIGN: usize = 4096;
    let buf = vec![b'S'; PROBE_LEN + ALIGN];
    let start = buf.as_ptr().align_offset(ALIGN);
    matches!(file.write_at(&buf[start..start + PROBE_LEN], 0), Ok(n) if n == PROBE_LEN)
}

/// Warns (does not refuse) when the data directory's filesystem discards freed blocks
/// synchronously: every segment removed then stalls the other partitions' writes behind the
/// journal commit that discards it (tuning/README.md, "Discard").
fn warn_discard_mount(dir: &Path) {
    let (Ok(dir), Ok(mountinfo)) = (dir.canonicalize(), std::fs::read_to_string("/proc/self/mountinfo")) else {
        return;
    };
    if let Some(mount) = discard_mount(&mountinfo, &dir) {
        tracing::warn!(
            "the data directory {} is on {}, mounted with `discard`: freeing a deleted segment stalls the other partitions' writes while the device discards it; remount without `discard` and run `fstrim` on a timer instead (`systemctl enable --now fstrim.timer`; see tuning/README.md)",
            dir.display(),
            mount
        );
    }
}

/// The mount point holding `path` (the longest mount point that contains it, from
/// /proc/self/mountinfo's text), if that mount discards synchronously: `discard` (ext4, XFS) or
/// `discard=sync` (btrfs) in its mount or superblock options.
fn discard_mount(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(String, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent major:minor root mount-point mount-options [optional...] - fstype source super-options
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        if sep < 6 || fields.len() < sep + 4 {
            continue;
        }
        let mount_point = fields[4].replace("\\040", " ");
        if !path.starts_with(&mount_point) {
            continue;
        }
        let discards = fields[5]
            .split(',')
            .chain(fields[sep + 3].split(','))
            .any(|o| o == "discard" || o == "discard=sync");
        if best.as_ref().is_none_or(|(held, _)| mount_point.len() >= held.len()) {
            best = Some((mount_point, discards));
        }
    }
    best.and_then(|(mount_point, discards)| discards.then_some(mount_point))
}

/// How long start-up waits for a listen address held by a process that just died (the kernel
/// releases the listening sockets of a killed io_uring process a moment later).
const PORT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses an address another process listens on. The probe socket sets SO_REUSEADDR (so
/// connections left in TIME_WAIT/FIN_WAIT by a previous run do not count) but not SO_REUSEPORT
/// (so another broker's listener does).
fn check_port(listen: SocketAddr) -> Result<()> {
    if listen.port() == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + PORT_WAIT;
    loop {
        let sock = socket2::Socket::new(socket2::Domain::for_address(listen), socket2::Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        match sock.bind(&listen.into()).and_then(|_| sock.listen(1)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "cannot listen on {listen}: the address is already in use by another process; stop it or choose another port with --listen HOST:PORT"
            ),
            Err(e) => bail!("cannot listen on {listen}: {e}; choose another address with --listen HOST:PORT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::discard_mount;
    use std::path::Path;

    const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict
40 27 254:16 / /data rw,noatime shared:5 - xfs /dev/vdb rw,attr2,inode64
41 27 254:32 / /fast\\040disk rw,noatime - ext4 /dev/vdc rw,nodiscard
42 27 254:48 / /btr rw,relatime - btrfs /dev/vdd rw,discard=async,space_cache=v2
43 27 254:64 / /btrsync rw,relatime,discard - btrfs /dev/vde rw,space_cache=v2
";

    #[test]
    fn the_mount_holding_the_path_decides() {
        // The root filesystem discards; /data, mounted on it, does not.
        assert_eq!(discard_mount(MOUNTINFO, Path::new("/work/strand-data")).as_deref(), Some("/"));
        assert_eq!(discard_mount(MOUNTINFO, Path::new("/data/strand")), None);
        // A mount point is matched by whole components, so /database is on /, not /data.
        assert_eq!(discard_mount(MOUNTINFO, Path::new("/database")).as_deref(), Some("/"));
        // Escaped spaces in mount points; `nodiscard` and btrfs's async discard do not count.
        assert_eq!(discard_mount(MOUNTINFO, Path::new("/fast disk/strand")), None);
        assert_eq!(discard_mount(MOUNTINFO, Path::new("/btr/strand")), None);
        // The option counts in the per-mount options too.
        assert_eq!(discard_mount(MOUNTINFO, Path::new("/btrsync/strand")).as_deref(), Some("/btrsync"));
        // Nothing parseable: no warning.
        assert_eq!(discard_mount("garbage line\n", Path::new("/x")), None);
    }
}
