//! The gateway's TCP connections. [`Listener`] accepts them as [`Socket`]s, which can also be
//! written from outside the task serving the connection, through a [`SocketWriter`]: a
//! shared subscription execution writes each result straight into thousands of WebSocket
//! connections in turn (see `crate::fanout`), without waking each connection's task.
//!
//! Both kinds of writes go through one lock per socket and are taken whole, so they never
//! interleave: what the kernel does not take at once waits in the socket's backlog, which
//! every later write waits behind and the connection's own task writes out as the socket
//! drains ([`SocketWriter::write_backlog`]). Every connection gets `TCP_NODELAY`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Accepts the gateway's connections (see the module documentation).
pub struct Listener(tokio::net::TcpListener);

impl Listener {
    pub fn new(listener: tokio::net::TcpListener) -> Self {
        Self(listener)
    }
}

impl axum::serve::Listener for Listener {
    type Io = Socket;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Socket, SocketAddr) {
        // axum's own accept: it retries, and logs what is worth logging.
        let (stream, address) = axum::serve::Listener::accept(&mut self.0).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        (Socket::new(stream), address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// What a handler learns of its connection (`ConnectInfo<Peer>`): the peer's address, and a
/// writer to the socket.
#[derive(Clone)]
pub struct Peer {
    pub address: SocketAddr,
    pub socket: SocketWriter,
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Peer {
            address: *stream.remote_addr(),
            socket: stream.io().writer(),
        }
    }
}

/// One accepted connection, as hyper and the WebSocket read and write it.
pub struct Socket {
    reader: OwnedReadHalf,
    shared: Arc<Shared>,
}

/// The part of a socket its writers share.
struct Shared {
    writer: OwnedWriteHalf,
    writes: Mutex<Writes>,
}

#[derive(Default)]
struct Writes {
    /// Whole writes, or what is left of them, waiting for the socket to take them.
    backlog: VecDeque<Vec<u8>>,
    /// How much of the backlog's first write the socket has taken.
    written_of_first: usize,
    /// The connection's task, to be woken when the backlog stops being empty.
    drainer: Option<Waker>,
    /// Set by the first failed write: every later one fails at once.
    broken: bool,
}

impl Socket {
    /// The connection `stream` (what [`Listener`] accepts).
    pub fn new(stream: tokio::net::TcpStream) -> Self {
        let (reader, writer) = stream.into_split();
        Socket {
            reader,
            shared: Arc::new(Shared {
                writer,
                writes: Mutex::default(),
            }),
        }
    }

    /// A writer to this connection, for use from anywhere.
    pub fn writer(&self) -> SocketWriter {
        SocketWriter(self.shared.clone())
    }
}

/// What became of a write offered with [`SocketWriter::write_whole`].
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// The socket, or its backlog, took it.
    Taken,
    /// Refused: the backlog already holds as many writes as allowed.
    BacklogFull,
    /// Refused: the connection is gone.
    Broken,
}

impl Shared {
    fn writes(&self) -> MutexGuard<'_, Writes> {
        self.writes
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// Writes out as much of the backlog as the socket takes now.
    fn drain(&self, writes: &mut Writes) {
        while let Some(first) = writes.backlog.front() {
            match self.writer.try_write(&first[writes.written_of_first..]) {
                Ok(0) => writes.fail(),
                Ok(count) => {
                    writes.written_of_first += count;
                    if writes.written_of_first == first.len() {
                        writes.backlog.pop_front();
                        writes.written_of_first = 0;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => writes.fail(),
            }
        }
    }

    /// Ready, with the writes locked, once the backlog is written out; an error once the
    /// connection is gone.
    fn poll_empty_backlog(&self, cx: &mut Context<'_>) -> Poll<io::Result<MutexGuard<'_, Writes>>> {
        loop {
            let mut writes = self.writes();
            self.drain(&mut writes);
            if writes.broken {
                return Poll::Ready(Err(broken_pipe()));
            }
            if writes.backlog.is_empty() {
                return Poll::Ready(Ok(writes));
            }
            drop(writes);
            ready!(self.writer.as_ref().poll_write_ready(cx))?;
        }
    }

    /// Writes `bytes` into the socket, the backlog being empty; what it does not take
    /// starts the backlog (and wakes the connection's task to write it out).
    fn write_after_empty_backlog(&self, writes: &mut Writes, bytes: &[u8]) {
        debug_assert!(writes.backlog.is_empty());
        let taken = match self.writer.try_write(bytes) {
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                writes.fail();
                return;
            }
        };
        if taken < bytes.len() {
            writes.backlog.push_back(bytes[taken..].to_vec());
            if let Some(drainer) = writes.drainer.take() {
                drainer.wake();
            }
        }
    }
}

impl Writes {
    /// The connection is gone: its task learns it from the backlog writer.
    fn fail(&mut self) {
        self.broken = true;
        self.backlog.clear();
        self.written_of_first = 0;
        if let Some(drainer) = self.drainer.take() {
            drainer.wake();
        }
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection is gone")
}

/// Writes to one connection from anywhere (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct SocketWriter(Arc<Shared>);

impl SocketWriter {
    /// Writes `bytes` whole, after whatever waits in the backlog, unless `max_backlog`
    /// writes wait already. Never waits: what the socket does not take now joins the
    /// backlog, written out by the connection's task ([`SocketWriter::write_backlog`]).
    pub fn write_whole(&self, bytes: &[u8], max_backlog: usize) -> Written {
        let shared = &self.0;
        let mut writes = shared.writes();
        shared.drain(&mut writes);
        if writes.broken {
            return Written::Broken;
        }
        if writes.backlog.is_empty() {
            shared.write_after_empty_backlog(&mut writes, bytes);
        } else if writes.backlog.len() >= max_backlog {
            return Written::BacklogFull;
        } else {
            writes.backlog.push_back(bytes.to_vec());
        }
        match writes.broken {
            true => Written::Broken,
            false => Written::Taken,
        }
    }

    /// Writes the backlog out as the socket drains; ends only when the connection is gone.
    /// The connection's task keeps this polled.
    pub async fn write_backlog(&self) -> io::Error {
        let shared = &self.0;
        std::future::poll_fn(|cx| loop {
            {
                let mut writes = shared.writes();
                shared.drain(&mut writes);
                if writes.broken {
                    return Poll::Ready(broken_pipe());
                }
                // Woken when a write joins an empty backlog, or fails; also while the
                // socket's own write-readiness waker is another task's.
                if !writes
                    .drainer
                    .as_ref()
                    .is_some_and(|drainer| drainer.will_wake(cx.waker()))
                {
                    writes.drainer = Some(cx.waker().clone());
                }
                if writes.backlog.is_empty() {
                    return Poll::Pending;
                }
            }
            if let Err(error) = ready!(shared.writer.as_ref().poll_write_ready(cx)) {
                return Poll::Ready(error);
            }
        })
        .await
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    /// Takes all of `buf` once the backlog is empty (what the socket does not take joins
    /// it), so that a write from elsewhere never lands inside this one.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.shared;
        let mut writes = ready!(shared.poll_empty_backlog(cx))?;
        shared.write_after_empty_backlog(&mut writes, buf);
        Poll::Ready(match writes.broken {
            true => Err(broken_pipe()),
            false => Ok(buf.len()),
        })
    }

    /// Ready once the backlog is written out.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _written_out = ready!(self.shared.poll_empty_backlog(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Flushes; the write side is shut down when the last writer is dropped (as
    /// `OwnedWriteHalf` does), so a result being written from elsewhere still lands whole.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection through loopback: the client's end, and the server's as a [`Socket`].
    async fn connection() -> (tokio::net::TcpStream, Socket) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, Socket::new(server))
    }

    #[tokio::test]
    async fn writes_the_socket_cannot_take_wait_whole_and_in_order_behind_a_bounded_backlog() {
        let (mut client, mut server) = connection().await;
        let writer = server.writer();
        // Writes of 16 KiB, each filled with its own number, until two wait in the backlog.
        let mut taken: Vec<u8> = Vec::new();
        let mut count: u8 = 0;
        loop {
            let write = vec![count; 16 * 1024];
            match writer.write_whole(&write, 2) {
                Written::Taken => taken.extend_from_slice(&write),
                Written::BacklogFull => break,
                Written::Broken => panic!("the connection is open"),
            }
            count = count.wrapping_add(1);
            assert!(taken.len() < 256 << 20, "the backlog never filled");
        }
        assert!(
            writer.0.writes().backlog.len() == 2,
            "a refused write leaves the backlog as it was"
        );
        // The connection's own write waits behind the backlog; its task writes that out.
        let drainer = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write_backlog().await }
        });
        let own_write = tokio::spawn(async move {
            server.write_all(b"own write").await.unwrap();
            server.flush().await.unwrap();
            server
        });
        let mut received = vec![0; taken.len() + b"own write".len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut received),
        )
        .await
        .expect("everything within 10 s")
        .unwrap();
        assert!(
            received[..taken.len()] == taken[..],
            "the writes, whole and in order"
        );
        assert_eq!(&received[taken.len()..], b"own write");
        let _server = own_write.await.unwrap();
        // Room again: a write is taken, and arrives.
        assert_eq!(writer.write_whole(b"again", 2), Written::Taken);
        let mut again = [0; 5];
        client.read_exact(&mut again).await.unwrap();
        assert_eq!(&again, b"again");
        // Once the client is gone, writes fail, and so does the backlog writer.
        drop(client);
        let mut outcome = Written::Taken;
        for _ in 0..100 {
            outcome = writer.write_whole(b"into the void", 2);
            if outcome == Written::Broken {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(outcome, Written::Broken);
        tokio::time::timeout(std::time::Duration::from_secs(5), drainer)
            .await
            .expect("the backlog writer ends with the connection")
            .unwrap();
    }
}
