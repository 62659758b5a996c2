//! One client connection: reads frames, dispatches requests, writes responses in order.
//!
//! Owns the socket of a connection accepted by this shard. Requests are dispatched in arrival
//! order (their ordering-sensitive part runs before the next frame is read) and run
//! concurrently; a writer task sends the responses strictly in request order, as Kafka clients
//! that pipeline require. Bad framing closes this connection only.

use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use tracing::{debug, warn};

use crate::handlers::{self, Response};
use crate::storage::LogChunk;
use crate::protocol::{self, FrameError};
use crate::shard::Shard;

/// Requests of one connection being processed or waiting to be written at once; the reader
/// stops reading when this many are outstanding (backpressure on a pipelining client).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
/// Read buffer per connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Most iovecs handed to one sendmsg(2).
const MAX_IOVECS: usize = 64;
/// When the socket is full, this many bytes of the response go through glommio's own async
/// send, whose completion is the wait for room (glommio offers no writability wait); the rest
/// goes out by sendmsg/sendfile without being copied.
const WAIT_CHUNK_BYTES: usize = 16 << 10;

type ResponseTask = glommio::Task<Option<Response>>;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    // A second handle on the same socket for the writer: reads and writes proceed independently.
    let wfd = unsafe { libc::dup(fd) };
    if wfd < 0 {
        warn!(%peer, "dup failed: {}", std::io::Error::last_os_error());
        return;
    }
    let wstream = unsafe { TcpStream::from_raw_fd(wfd) };
    // sendfile(2) has no per-call flag: the socket itself is made non-blocking so a full socket
    // answers EAGAIN instead of stalling the shard. glommio's own io_uring sends and receives
    // do not depend on this flag.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let (tx, rx) = local_channel::new_bounded::<ResponseTask>(MAX_IN_FLIGHT_PER_CONNECTION);
    let writer = glommio::spawn_local(write_responses(wstream, rx, wfd)).detach();

    let max_frame = shard.config.socket_request_max_bytes;
    let conn = handlers::ConnContext {
        client_host: stream.peer_addr().map(|a| format!("/{}", a.ip())).unwrap_or_default(),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    loop {
        // Backpressure: while the shard's device is behind, read no more requests.
        crate::storage::memory::wait_for_write_room().await;
        match read_frame(&mut reader, max_frame).await {
            Ok(None) => break,
            Ok(Some(frame)) => match handlers::dispatch(&shard, &conn, frame) {
                Ok(fut) => {
                    let task = glommio::spawn_local(fut);
                    if tx.send(task).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    warn!(%peer, "closing connection: {e}");
                    shutdown(fd);
                    break;
                }
            },
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
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

enum ReadError {
    Frame(FrameError),
    Io(std::io::Error),
}

/// Reads one size-prefixed frame. `Ok(None)` on a clean end of stream between frames.
async fn read_frame(reader: &mut BufReader<TcpStream>, max: usize) -> Result<Option<Bytes>, ReadError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let len = protocol::check_frame_len(i32::from_be_bytes(len), max).map_err(ReadError::Frame)?;
    let mut buf = BytesMut::zeroed(len);
    reader.read_exact(&mut buf).await.map_err(ReadError::Io)?;
    Ok(Some(buf.freeze()))
}

async fn write_responses(mut stream: TcpStream, rx: local_channel::LocalReceiver<ResponseTask>, fd: i32) {
    while let Some(task) = rx.recv().await {
        let Some(response) = task.await else { continue };
        if let Err(e) = send_response(&mut stream, fd, &response.chunks).await {
            debug!("connection write failed: {e}");
            shutdown(fd);
            break;
        }
    }
    // Drain: finish (and drop) whatever was dispatched, so appends still complete.
    while let Some(task) = rx.recv().await {
        let _ = task.await;
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
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
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
            let mut buf = vec![0u8; n];
            std::os::unix::fs::FileExt::read_exact_at(&*r.file, &mut buf, r.pos + off as u64)?;
            stream.write_all(&buf).await?;
        }
    }
    Ok(n)
}
