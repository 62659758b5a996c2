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

use crate::handlers;
use crate::protocol::{self, FrameError};
use crate::shard::Shard;

/// Requests of one connection being processed or waiting to be written at once; the reader
/// stops reading when this many are outstanding (backpressure on a pipelining client).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
/// Read buffer per connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

type ResponseTask = glommio::Task<Option<Bytes>>;

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
    let (tx, rx) = local_channel::new_bounded::<ResponseTask>(MAX_IN_FLIGHT_PER_CONNECTION);
    let writer = glommio::spawn_local(write_responses(wstream, rx, wfd)).detach();

    let max_frame = shard.config.socket_request_max_bytes;
    let conn = handlers::ConnContext {
        client_host: stream.peer_addr().map(|a| format!("/{}", a.ip())).unwrap_or_default(),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    loop {
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
        let Some(bytes) = task.await else { continue };
        if let Err(e) = stream.write_all(&bytes).await {
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
