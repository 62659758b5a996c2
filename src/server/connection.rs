//! One client connection: reads frames, dispatches requests, writes responses in order.
//!
//! Owns the socket of a connection accepted by this shard. Requests are dispatched in arrival
//! order (their ordering-sensitive part runs before the next frame is read) and run
//! concurrently; a writer task sends the responses strictly in request order, as Kafka clients
//! that pipeline require. Bad framing closes this connection only.
//!
//! Limits (all read-side backpressure: a client is slowed, never answered with an error):
//! - `max.in.flight.requests.per.connection`: the reader stops while that many requests of the
//!   connection are processed or waiting to be written;
//! - fetches of one connection run one at a time, in order, and only while the connection's
//!   finished but unwritten fetch responses are under `MAX_UNWRITTEN_FETCH_BYTES`; the reader
//!   stops too while they are over it. A client that fetches and never reads its socket holds
//!   at most that much plus one response (Kafka serves one request per connection at a time;
//!   clients keep one fetch in flight per connection, so nothing is lost). Its writer awaits the
//!   socket, so it never blocks the shard;
//! - `queued.max.request.bytes` (`ShardConnections`): bytes of requests read and not yet
//!   answered on this shard; over the shard's share, every connection of the shard waits before
//!   reading its next request body until memory is released;
//! - `connections.max.idle.ms`: a per-shard sweep closes connections that sent nothing for that
//!   long (no timer per request);
//! - `max.connections` / `max.connections.per.ip` (`ConnectionCounter`): counted over all shards
//!   at accept and close only; a connection over the limit is closed at once, as Kafka does.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use futures_lite::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use tracing::{debug, warn};

use crate::config::BrokerConfig;
use crate::handlers::{self, Response};
use crate::storage::LogChunk;
use crate::protocol::{self, FrameError};
use crate::shard::Shard;

/// Read buffer per connection.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Finished fetch responses of one connection not yet written, above which it is not read and
/// its next fetch waits.
pub const MAX_UNWRITTEN_FETCH_BYTES: usize = 32 << 20;
/// Bounds of the idle sweep period (a tenth of `connections.max.idle.ms` in between).
const IDLE_SWEEP_MIN: Duration = Duration::from_millis(50);
const IDLE_SWEEP_MAX: Duration = Duration::from_secs(1);

/// Most iovecs handed to one sendmsg(2).
const MAX_IOVECS: usize = 64;
/// When the socket is full, this many bytes of the response go through glommio's own async
/// send, whose completion is the wait for room (glommio offers no writability wait); the rest
/// goes out by sendmsg/sendfile without being copied.
const WAIT_CHUNK_BYTES: usize = 16 << 10;

/// A dispatched request's response, and whether it is a fetch response (counted as unwritten).
type ResponseTask = (glommio::Task<Option<Response>>, bool);

/// Open connections over all shards (`max.connections`, `max.connections.per.ip`). Touched at
/// accept and close only, never per request: an atomic counter, and a map under a mutex only
/// when a per-IP limit is set.
pub struct ConnectionCounter {
    open: AtomicUsize,
    max: usize,
    max_per_ip: Option<usize>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it gives the slot back.
pub struct ConnectionPermit {
    counter: Arc<ConnectionCounter>,
    ip: Option<IpAddr>,
}

impl ConnectionCounter {
    pub fn new(config: &BrokerConfig) -> Arc<ConnectionCounter> {
        Arc::new(ConnectionCounter {
            open: AtomicUsize::new(0),
            max: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for a new connection from `ip`, or `None` when a limit is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<ConnectionPermit> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let ip = match (self.max_per_ip, ip) {
            (Some(max), Some(ip)) => {
                let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                let n = map.entry(ip).or_insert(0);
                if *n >= max {
                    drop(map);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                *n += 1;
                Some(ip)
            }
            _ => None,
        };
        Some(ConnectionPermit { counter: self.clone(), ip })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut map = self.counter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.counter.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections of one shard: the shard's request memory budget and the idle sweep.
pub struct ShardConnections {
    /// This shard's share of `queued.max.request.bytes`.
    budget: Option<usize>,
    queued: Cell<usize>,
    released: Event,
    idle_after: Duration,
    open: RefCell<HashMap<u64, Rc<ConnState>>>,
    next_id: Cell<u64>,
}

/// What the shard knows of one of its connections.
struct ConnState {
    fd: i32,
    last_read: Cell<Instant>,
    /// Bytes of finished fetch responses not yet written; the event fires when some are written
    /// or a fetch ends.
    unwritten: Cell<usize>,
    written: Event,
    /// Fetch turns, in request order: the next ticket to give and the one allowed to run.
    fetch_tickets: Cell<u64>,
    fetch_turn: Cell<u64>,
}

/// Bytes of a request counted against the shard's budget until dropped (when it is answered).
struct BudgetPermit {
    conns: Rc<ShardConnections>,
    bytes: usize,
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        let q = &self.conns.queued;
        q.set(q.get() - self.bytes);
        self.conns.released.notify(usize::MAX);
    }
}

impl ShardConnections {
    pub fn new(config: &BrokerConfig, shards: usize) -> Rc<ShardConnections> {
        Rc::new(ShardConnections {
            budget: config.queued_max_request_bytes.map(|b| (b / shards.max(1)).max(1)),
            queued: Cell::new(0),
            released: Event::new(),
            idle_after: Duration::from_millis(config.connections_max_idle_ms),
            open: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        })
    }

    /// Bytes of requests read and not yet answered on this shard.
    pub fn queued_bytes(&self) -> usize {
        self.queued.get()
    }

    /// Waits until `bytes` more fit in the budget (a request larger than the whole budget is
    /// let through alone), then counts them.
    async fn acquire(self: &Rc<Self>, bytes: usize) -> BudgetPermit {
        if let Some(budget) = self.budget {
            loop {
                let listener = self.released.listen();
                let q = self.queued.get();
                if q == 0 || q + bytes <= budget {
                    break;
                }
                listener.await;
            }
        }
        self.queued.set(self.queued.get() + bytes);
        BudgetPermit { conns: self.clone(), bytes }
    }

    /// Closes connections of this shard that sent nothing for `connections.max.idle.ms`.
    /// Runs for the life of the shard.
    pub async fn sweep_idle(self: Rc<Self>) {
        let period = (self.idle_after / 10).clamp(IDLE_SWEEP_MIN, IDLE_SWEEP_MAX);
        loop {
            glommio::timer::sleep(period).await;
            let now = Instant::now();
            for c in self.open.borrow().values() {
                if now.duration_since(c.last_read.get()) >= self.idle_after {
                    // The reader sees the end of the stream and the connection winds down.
                    c.last_read.set(now);
                    shutdown(c.fd);
                }
            }
        }
    }
}

/// Kafka's Fetch API key.
const FETCH_API_KEY: i16 = 1;

impl ConnState {
    /// Waits until `ready` holds, re-checking whenever a response is written or a fetch ends.
    async fn wait(&self, ready: impl Fn(&ConnState) -> bool) {
        loop {
            let listener = self.written.listen();
            if ready(self) {
                return;
            }
            listener.await;
        }
    }
}

/// Removes a connection from its shard's table when it ends.
struct Registered {
    conns: Rc<ShardConnections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.open.borrow_mut().remove(&self.id);
    }
}

pub async fn serve(shard: Rc<Shard>, conns: Rc<ShardConnections>, stream: TcpStream, _permit: ConnectionPermit) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    // A second handle on the same socket for the writer: reads and writes proceed independently.
    // SAFETY: dup takes an open descriptor (the stream's) and returns a new one or -1.
    let wfd = unsafe { libc::dup(fd) };
    if wfd < 0 {
        warn!(%peer, "dup failed: {}", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: `wfd` is a fresh descriptor from dup, owned by nothing else; the stream takes it.
    let wstream = unsafe { TcpStream::from_raw_fd(wfd) };
    // sendfile(2) has no per-call flag: the socket itself is made non-blocking so a full socket
    // answers EAGAIN instead of stalling the shard. glommio's own io_uring sends and receives
    // do not depend on this flag.
    // SAFETY: fcntl on the stream's open descriptor; only its status flags change.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let state = Rc::new(ConnState {
        fd,
        last_read: Cell::new(Instant::now()),
        unwritten: Cell::new(0),
        written: Event::new(),
        fetch_tickets: Cell::new(0),
        fetch_turn: Cell::new(0),
    });
    let id = conns.next_id.get();
    conns.next_id.set(id + 1);
    conns.open.borrow_mut().insert(id, state.clone());
    let _registered = Registered { conns: conns.clone(), id };
    // The writer awaits one task and the channel holds the rest.
    let queue = shard.config.max_in_flight_per_connection.saturating_sub(1).max(1);
    let (tx, rx) = local_channel::new_bounded::<ResponseTask>(queue);
    let writer = glommio::spawn_local(write_responses(wstream, rx, wfd, state.clone())).detach();

    let max_frame = shard.config.socket_request_max_bytes;
    let conn = handlers::ConnContext {
        client_host: stream.peer_addr().map(|a| format!("/{}", a.ip())).unwrap_or_default(),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    loop {
        // A client that does not read its responses is not read either.
        state.wait(|s| s.unwritten.get() <= MAX_UNWRITTEN_FETCH_BYTES).await;
        // Backpressure: while the shard's device is behind, read no more requests.
        crate::storage::memory::wait_for_write_room().await;
        match read_frame(&mut reader, max_frame, &conns).await {
            Ok(None) => break,
            Ok(Some((frame, permit))) => {
                let is_fetch = frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == FETCH_API_KEY;
                let fut = match handlers::dispatch(&shard, &conn, frame) {
                    Ok(fut) => fut,
                    Err(e) => {
                        warn!(%peer, "closing connection: {e}");
                        shutdown(fd);
                        break;
                    }
                };
                state.last_read.set(Instant::now());
                let st = state.clone();
                let task = if is_fetch {
                    let ticket = st.fetch_tickets.get();
                    st.fetch_tickets.set(ticket + 1);
                    glommio::spawn_local(async move {
                        st.wait(|s| s.fetch_turn.get() == ticket && s.unwritten.get() <= MAX_UNWRITTEN_FETCH_BYTES).await;
                        let out = fut.await;
                        drop(permit);
                        if let Some(r) = &out {
                            st.unwritten.set(st.unwritten.get() + r.len());
                        }
                        st.fetch_turn.set(ticket + 1);
                        st.written.notify(usize::MAX);
                        out
                    })
                } else {
                    glommio::spawn_local(async move {
                        let out = fut.await;
                        drop(permit);
                        out
                    })
                };
                if tx.send((task, is_fetch)).await.is_err() {
                    break;
                }
            }
            Err(ReadError::Frame(e)) => {
                warn!(%peer, "closing connection: {e}");
                shutdown(fd);
                break;
            }
            Err(ReadError::Io(e)) => {
                debug!(%peer, "connection read ended: {e}");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn shutdown(fd: i32) {
    // SAFETY: shutdown on a socket descriptor takes no memory; a closed fd only gives EBADF.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

enum ReadError {
    Frame(FrameError),
    Io(std::io::Error),
}

/// Reads one size-prefixed frame, counted against the shard's request budget (waiting for room
/// before its body is read). `Ok(None)` on a clean end of stream between frames.
async fn read_frame(reader: &mut BufReader<TcpStream>, max: usize, conns: &Rc<ShardConnections>) -> Result<Option<(Bytes, BudgetPermit)>, ReadError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let len = protocol::check_frame_len(i32::from_be_bytes(len), max).map_err(ReadError::Frame)?;
    let permit = conns.acquire(len).await;
    let body = read_body(reader, len).await.map_err(ReadError::Io)?;
    Ok(Some((body, permit)))
}

/// Reads a frame body of `len` bytes into memory that is not zeroed first: whatever the
/// `BufReader` already holds is copied, the rest is received by recv(2) straight into the
/// allocation's spare capacity (the kernel writes it; no Rust slice of uninitialised bytes is
/// ever made). Only when the socket is empty does a window of at most `READ_BUFFER_BYTES` get
/// zeroed, for glommio's read that awaits readiness (glommio offers no readability wait).
/// Zeroing every body was 6% of the broker's samples on the produce path; without it that
/// work is gone, though A/B runs could not tell the CPU apart (BENCHMARKS.md, session 5).
/// Pages of a large declared frame are also no longer touched before its bytes arrive.
async fn read_body(reader: &mut BufReader<TcpStream>, len: usize) -> std::io::Result<Bytes> {
    let fd = reader.get_ref().as_raw_fd();
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let held = reader.buffer();
        if !held.is_empty() {
            let n = held.len().min(len - buf.len());
            buf.extend_from_slice(&held[..n]);
            reader.consume(n);
            continue;
        }
        let want = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: recv writes at most `spare.len()` bytes into the spare capacity, and `set_len`
        // covers exactly the bytes it wrote.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
        if n > 0 {
            // SAFETY: recv initialised these `n` bytes of the spare capacity (see above).
            unsafe { buf.set_len(buf.len() + n as usize) };
            continue;
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => {
                let start = buf.len();
                buf.resize(start + (len - start).min(READ_BUFFER_BYTES), 0);
                let got = reader.read(&mut buf[start..]).await?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.truncate(start + got);
            }
            _ => return Err(e),
        }
    }
    debug_assert_eq!(buf.len(), len);
    Ok(Bytes::from(buf))
}

async fn write_responses(mut stream: TcpStream, rx: local_channel::LocalReceiver<ResponseTask>, fd: i32, state: Rc<ConnState>) {
    while let Some((task, is_fetch)) = rx.recv().await {
        let Some(response) = task.await else { continue };
        let res = send_response(&mut stream, fd, &response.chunks).await;
        if is_fetch {
            state.unwritten.set(state.unwritten.get() - response.len());
            state.written.notify(usize::MAX);
        }
        if let Err(e) = res {
            debug!("connection write failed: {e}");
            shutdown(fd);
            break;
        }
    }
    // Drain: finish (and drop) whatever was dispatched, so appends still complete.
    while let Some((task, is_fetch)) = rx.recv().await {
        if let (Some(response), true) = (task.await, is_fetch) {
            state.unwritten.set(state.unwritten.get() - response.len());
            state.written.notify(usize::MAX);
        }
    }
}

/// Sends a response's chunks in order without copying them: in-memory chunks by sendmsg(2)
/// with an iovec each, file ranges by sendfile(2). Neither call blocks; when the socket is full
/// the next few KiB go through glommio's async send, which returns once there is room.
async fn send_response(stream: &mut TcpStream, fd: i32, chunks: &[LogChunk]) -> std::io::Result<()> {
    let (mut i, mut off) = (0usize, 0usize);
    while i < chunks.len() {
        let sent = match &chunks[i] {
            LogChunk::Mem(_) => sendmsg_nonblocking(fd, &chunks[i..], off),
            LogChunk::File(r) => {
                let mut pos = (r.pos + off as u64) as libc::off_t;
                // SAFETY: both descriptors are open (the chunk holds the file); sendfile writes
                // only `pos`, a local.
                let n = unsafe { libc::sendfile(fd, std::os::fd::AsRawFd::as_raw_fd(&*r.file), &mut pos, r.len - off) };
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment file shorter than its index says"));
                }
                if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
            }
        };
        let n = match sent {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_for_room(stream, &chunks[i], off).await?,
            Err(e) => return Err(e),
        };
        // Advance over what went out.
        let mut n = n;
        while n > 0 {
            let left = chunks[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
        while i < chunks.len() && chunks[i].len() == off {
            i += 1;
            off = 0;
        }
    }
    Ok(())
}

/// One sendmsg over the consecutive in-memory chunks at the start of `chunks` (the first from
/// byte `off`).
fn sendmsg_nonblocking(fd: i32, chunks: &[LogChunk], off: usize) -> std::io::Result<usize> {
    // SAFETY: iovec is a C struct of a pointer and a length; zeroed is a valid (empty) value.
    let mut iov: [libc::iovec; MAX_IOVECS] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    let mut more = false;
    for (k, c) in chunks.iter().enumerate() {
        let LogChunk::Mem(b) = c else {
            more = true;
            break;
        };
        if n == MAX_IOVECS {
            more = true;
            break;
        }
        let s = if k == 0 { &b[off..] } else { &b[..] };
        iov[n] = libc::iovec { iov_base: s.as_ptr() as *mut libc::c_void, iov_len: s.len() };
        n += 1;
    }
    // SAFETY: msghdr is a C struct of pointers and lengths; zeroed means no name, no control.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: the first `n` iovecs point into chunks borrowed for this call; sendmsg only
    // reads them.
    let r = unsafe { libc::sendmsg(fd, &msg, flags) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// The socket is full: send up to `WAIT_CHUNK_BYTES` of `chunk` (from `off`) through glommio,
/// which completes when the socket has taken them. Returns the bytes sent.
async fn wait_for_room(stream: &mut TcpStream, chunk: &LogChunk, off: usize) -> std::io::Result<usize> {
    let n = (chunk.len() - off).min(WAIT_CHUNK_BYTES);
    match chunk {
        LogChunk::Mem(b) => stream.write_all(&b[off..off + n]).await?,
        LogChunk::File(r) => {
            // Read through io_uring: a page-cache miss does not stall this shard.
            let buf = crate::storage::partition_log::read_range(&r.file, r.pos + off as u64, n).await?;
            stream.write_all(&buf).await?;
        }
    }
    Ok(n)
}
