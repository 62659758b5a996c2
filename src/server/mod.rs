//! The broker process: start-up checks, one pinned glommio executor per shard, the mesh between
//! them, and the per-shard listener (SO_REUSEPORT) whose connections the shard serves itself.

pub mod connection;
pub mod preflight;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{debug, error, info, warn};

use crate::config::BrokerConfig;
use crate::metadata::MetadataStore;
use crate::routing::{build_mesh, ShardRouter};
use crate::shard::Shard;

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let mut v: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
    if v.is_empty() {
        v = (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect();
    }
    v
}

/// Every shard's executor wakes at least this often, whatever it waits for. Observed in the
/// crash-loop test on a loaded 2-core host (about 1 start in 30 after kill -9): both executors
/// asleep in io_uring_enter during start-up with work pending, one shard never reaching the
/// ready barrier — a wakeup glommio lost. A periodic timer makes the reactor reap completions,
/// submit queued requests and poll shared channels again, so a lost wakeup costs at most this
/// long instead of hanging forever. The cost is one timer per shard per tick.
const STALL_GUARD_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// glibc malloc arenas the broker may use. By default glibc gives each thread that contends its
/// own arena, up to 8 per core; log batches allocated on one shard are freed on another (the
/// owner's tail cache evicts them), and free memory scattered over many arenas is not given back,
/// so resident memory crept up over long runs (issue 7's soak). Two arenas kept it flat.
const MALLOC_ARENA_LIMIT: i32 = 2;

/// Applies [`MALLOC_ARENA_LIMIT`] before any executor thread starts, unless the operator set
/// `MALLOC_ARENA_MAX` in the environment (glibc reads that itself and it wins).
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only changes allocator parameters; called before the shards' threads exist.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENA_LIMIT) };
    if ok != 1 {
        warn!("mallopt(M_ARENA_MAX, {MALLOC_ARENA_LIMIT}) failed; resident memory may creep on long runs");
    }
}

/// Runs the broker until the process is killed.
pub fn run(mut config: BrokerConfig) -> Result<()> {
    limit_malloc_arenas();
    let cpus = match &config.cpus {
        Some(list) => list.clone(),
        None => allowed_cpus(),
    };
    if config.shards == 0 {
        config.shards = cpus.len();
    }
    if config.shards > cpus.len() && config.cpus.is_some() {
        bail!("--shards {} needs at least that many CPUs in --cpus (got {})", config.shards, cpus.len());
    }
    // Absolute from here on: glommio opens directories relative to no working directory
    // (`Directory::open` of a relative path fails with EBADF), and the default is relative.
    config.data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("cannot resolve the data directory {}", config.data_dir.display()))?;
    preflight::check_all(&config.data_dir, config.listen)?;
    let leftovers = crate::storage::file_deleter::remove_deleted_dirs(&config.data_dir);
    if leftovers > 0 {
        info!(count = leftovers, "removing the directories of deleted partitions left by the last run");
    }
    if config.listen.port() == 0 {
        // Pick a port once so that every shard listens on the same one.
        let l = std::net::TcpListener::bind(config.listen).context("bind")?;
        config.listen = l.local_addr()?;
    }
    let store = MetadataStore::open(&config.data_dir, config.shards)?;
    crate::groups::migrate::rebalance_group_logs(&config.data_dir, config.shards).context("cannot move groups to their coordinator shard")?;
    let snapshot = store.snapshot();
    let mut store = Some(store);
    let shards = config.shards;
    let mesh = build_mesh(shards);
    let counter = connection::ConnectionCounter::new(&config);
    // Shards count themselves ready here; none accepts before all are (a blocking barrier inside
    // an executor would freeze its reactor while peers may still need it).
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::with_capacity(shards);
    for (id, endpoints) in mesh.into_iter().enumerate() {
        let cpu = cpus[id % cpus.len()];
        let config = config.clone();
        let snapshot = snapshot.clone();
        let store = if id == 0 { store.take() } else { None };
        let ready = ready.clone();
        let failed = failed.clone();
        let counter = counter.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{id}"))
            .io_memory(crate::storage::segment::IO_MEMORY_BYTES)
            .spawn(move || async move {
                let listen = config.listen;
                let data_dir = config.data_dir.clone();
                let config = Rc::new(config);
                // Stall guard: a timer that wakes this executor every STALL_GUARD_TICK.
                glommio::spawn_local(async {
                    loop {
                        glommio::timer::sleep(STALL_GUARD_TICK).await;
                    }
                })
                .detach();
                // Trap: open a non-empty DMA file first (see preflight::PROBE_FILE).
                match glommio::io::DmaFile::open(data_dir.join(preflight::PROBE_FILE)).await {
                    Ok(f) => {
                        let _ = f.read_at(0, 512).await;
                        let _ = f.close().await;
                    }
                    Err(e) => error!(shard = id, "cannot open probe file: {e}"),
                }
                debug!(shard = id, "start-up: probe read");
                // This shard's share of --memory: half for the tail cache, a quarter for
                // appended bytes waiting for the device; the rest is headroom for connections,
                // indexes and sessions.
                let share = config.memory_bytes / config.shards.max(1);
                crate::storage::memory::set_limits(share / 2, share / 4);
                crate::storage::segment::set_preallocate(config.log_preallocate);
                let shard = Shard::new(id, config, snapshot.clone(), store);
                let router = ShardRouter::connect(id, endpoints, Rc::downgrade(&shard)).await;
                shard.set_router(router);
                debug!(shard = id, "start-up: mesh connected");
                shard.clone().apply_metadata(snapshot).await;
                debug!(shard = id, "start-up: partition logs open");
                let groups = shard.start_groups().await;
                debug!(shard = id, "start-up: group log open");
                if let Err(e) = groups {
                    error!(shard = id, "cannot open the group log: {e}");
                    failed.store(true, Ordering::SeqCst);
                    ready.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                shard.start_lifecycle();
                let listener = bind_listener(listen);
                let listener = match listener {
                    Ok(l) => l,
                    Err(e) => {
                        error!(shard = id, "cannot listen on {listen}: {e}");
                        failed.store(true, Ordering::SeqCst);
                        ready.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                ready.fetch_add(1, Ordering::SeqCst);
                debug!(shard = id, "start-up: listening, waiting for the other shards");
                while ready.load(Ordering::SeqCst) < shards {
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                let conns = connection::ShardConnections::new(&shard.config, shards);
                glommio::spawn_local(conns.clone().sweep_idle()).detach();
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            let ip = stream.peer_addr().ok().map(|a| a.ip());
                            match counter.try_acquire(ip) {
                                Some(permit) => {
                                    glommio::spawn_local(connection::serve(shard.clone(), conns.clone(), stream, permit)).detach();
                                }
                                // Over max.connections(.per.ip): closed at once, as Kafka does.
                                None => {
                                    debug!(shard = id, ?ip, "connection refused: too many connections");
                                    drop(stream);
                                }
                            }
                        }
                        Err(e) => {
                            error!(shard = id, "accept failed: {e}");
                            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {id} on CPU {cpu}: {e}; is io_uring available and the memlock limit high enough (ulimit -l)?"))?;
        handles.push(handle);
    }
    while ready.load(Ordering::SeqCst) < shards {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if failed.load(Ordering::SeqCst) {
        bail!("a shard failed to start (listen on {} or open its logs); see the log above", config.listen);
    }
    announce(config.listen, shards, &config.data_dir);
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Accept backlog of each shard's listener.
const LISTEN_BACKLOG: i32 = 1024;

/// A listener with SO_REUSEPORT (every shard listens on the same address; the kernel spreads
/// connections) and SO_REUSEADDR (connections left in FIN_WAIT/TIME_WAIT by a killed run do not
/// block a restart on the same port, as with Kafka).
fn bind_listener(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    // SAFETY: the fd is a bound, listening TCP socket whose ownership moves to the listener.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(sock.into_raw_fd()) })
}

fn announce(listen: SocketAddr, shards: usize, data_dir: &std::path::Path) {
    info!(%listen, shards, data_dir = %data_dir.display(), "strand is ready");
    eprintln!("strand listening on {listen} with {shards} shard(s), data in {}", data_dir.display());
}
