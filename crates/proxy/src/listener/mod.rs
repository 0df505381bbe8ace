//! Listeners: binding sockets, accepting on every worker, and serving each client
//! connection: HTTP/1.1 (with upgrades), plain or over TLS, on our own server; HTTP/2 (h2c
//! detected by its preface, HTTP/2-only listeners, or ALPN `h2`) on hyper's; each with an
//! idle timeout and graceful shutdown.

pub mod h1;
pub mod transport;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_model::ListenerProtocol;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::body::ClientBody;
use crate::exchange::ConnActivity;
use crate::pipeline::{self, Conn};
use crate::runtime::ListenerRuntime;

/// Binds `addr` for one worker. With `reuse_port` several sockets share the port and the
/// kernel spreads connections across them.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.set_nonblocking(true)?;
    // Accepted connections inherit TCP_NODELAY from the listening socket (Linux): one
    // setsockopt per listener instead of one per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// What every connection of a listener shares.
#[derive(Debug)]
pub struct Shared {
    /// The routes and settings, swapped on reload.
    pub state: ArcSwap<ListenerRuntime>,
    /// Set to true to stop accepting and drain.
    pub stop: watch::Sender<bool>,
    /// Open connections, across workers.
    pub open: AtomicUsize,
    /// Signalled when a connection closes.
    pub closed: Notify,
    /// The port it is bound to (redirects that keep the port use it).
    pub port: u16,
}

impl Shared {
    /// Shared state for a listener serving `state`.
    pub fn new(state: Arc<ListenerRuntime>, port: u16) -> Arc<Self> {
        Arc::new(Self {
            port,
            state: ArcSwap::new(state),
            stop: watch::channel(false).0,
            open: AtomicUsize::new(0),
            closed: Notify::new(),
        })
    }

    /// Waits until every connection has closed.
    pub async fn drained(&self) {
        loop {
            let notified = self.closed.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Accepts on one worker's socket until the listener is stopped.
pub async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register a listening socket");
            return;
        }
    };
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.open.fetch_add(1, Ordering::AcqRel);
                    tokio::spawn(serve_tcp(stream, peer, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// A plain TCP connection: `http` listeners tell HTTP/1.1 from h2c prior knowledge by
/// peeking at the first bytes (nothing is consumed); `http2` and `grpc` listeners speak
/// HTTP/2 only. HTTP/1.1 runs on our own server ([`h1`]), HTTP/2 on hyper's. The seam for
/// TLS: a TLS listener decides by ALPN and serves the decrypted stream the same way.
async fn serve_tcp(stream: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (protocol, idle, max_header, stats) = {
        let lr = shared.state.load();
        (
            lr.protocol,
            lr.idle_timeout,
            lr.max_header as usize,
            lr.stats.clone(),
        )
    };
    stats.open.inc();
    stats.accepted.inc();
    let tls = shared.state.load().tls.clone();
    if let Some(tls) = tls {
        serve_tls(stream, peer, &shared, &tls, idle, max_header).await;
        stats.open.dec();
        if shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.closed.notify_waiters();
        }
        return;
    }
    let proto = if protocol == ListenerProtocol::Http {
        // A connection that has sent nothing yet is idle: a drain closes it at once.
        let mut stop = shared.stop.subscribe();
        tokio::select! {
            p = tokio::time::timeout(idle, sniff(&stream)) => p.ok().flatten(),
            _ = stopped(&mut stop) => None,
        }
    } else {
        Some(Proto::Http2)
    };
    match proto {
        Some(Proto::Http1) => {
            h1::serve(stream, peer, "http", shared.clone(), idle, max_header).await;
        }
        Some(Proto::Http2) => serve_h2(stream, peer, "http", &shared, idle, max_header).await,
        // Closed, or silent for a whole idle period, before sending anything.
        None => {}
    }
    stats.open.dec();
    if shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.closed.notify_waiters();
    }
}

/// An HTTPS connection: the handshake (within the idle timeout, abandoned on drain), then
/// HTTP/2 (hyper) or HTTP/1.1 (the same server as plain `http`, so both speak one HTTP/1.1)
/// by ALPN over the decrypted stream.
async fn serve_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    tls: &crate::tls::TlsRuntime,
    idle: Duration,
    max_header: usize,
) {
    let mut stop = shared.stop.subscribe();
    let accepted = tokio::select! {
        r = tokio::time::timeout(idle, tls.acceptor.accept(stream)) => r,
        _ = stopped(&mut stop) => return,
    };
    let Ok(Ok(stream)) = accepted else {
        // A failed or abandoned handshake: rustls has answered with an alert where it could.
        return;
    };
    let alpn = stream.get_ref().1.alpn_protocol();
    if alpn == Some(crate::tls::ACME_TLS_ALPN) {
        // A TLS-ALPN-01 validation: the handshake was the answer (RFC 8737 section 3).
        let mut stream = stream;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        return;
    }
    let h2 = alpn == Some(b"h2");
    if h2 {
        serve_h2(stream, peer, "https", shared, idle, max_header).await;
    } else {
        h1::serve(stream, peer, "https", shared.clone(), idle, max_header).await;
    }
}

/// Peeks until the first bytes are, or cannot be, the HTTP/2 preface. `None` on close.
async fn sniff(stream: &tokio::net::TcpStream) -> Option<Proto> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(Proto::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Proto::Http2);
        }
        // A prefix of the preface: wait for more bytes.
        stream.readable().await.ok()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Serves an HTTP/2 connection over any byte stream to its end, with hyper.
async fn serve_h2<I>(
    io: I,
    peer: SocketAddr,
    scheme: &'static str,
    shared: &Arc<Shared>,
    idle: Duration,
    max_header: usize,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut conn = Conn::new(peer, scheme);
    conn.listener_port = shared.port;
    let conn = Arc::new(conn);
    let activity = conn.activity.clone();
    let svc_shared = shared.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let lr = svc_shared.state.load_full();
        let conn = conn.clone();
        // One allocation for the request's state instead of copying kilobytes of future
        // each time hyper moves it.
        Box::pin(async move {
            Ok::<_, Infallible>(pipeline::handle(lr, &conn, req.map(ClientBody::H2)).await)
        })
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(max_header.min(u32::MAX as usize) as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), svc);
    drive(connection, shared, idle, &activity).await;
}

/// A client connection that can be asked to finish gracefully.
trait Graceful: Future {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, E, B> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives a connection to its end: graceful shutdown when the listener stops, and the idle
/// check twice per idle period (close when no request started and none is in flight).
async fn drive<C: Graceful>(
    connection: C,
    shared: &Shared,
    idle: Duration,
    activity: &ConnActivity,
) {
    tokio::pin!(connection);
    let mut stop_rx = shared.stop.subscribe();
    let mut shutting_down = *stop_rx.borrow_and_update();
    if shutting_down {
        connection.as_mut().graceful();
    }
    // Made once and kept: the connection is polled on every wake-up, the other branches
    // must cost next to nothing then.
    let stop = stopped(&mut stop_rx);
    tokio::pin!(stop);
    let tick = idle / 2;
    let mut last_started = u64::MAX;
    let mut quiet_ticks = 0u32;
    let sleep = tokio::time::sleep(tick);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            _ = connection.as_mut() => break,
            _ = stop.as_mut(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful();
            }
            _ = sleep.as_mut(), if !shutting_down => {
                let started = activity.started.load(Ordering::Relaxed);
                if started == last_started && activity.in_flight.load(Ordering::Relaxed) == 0 {
                    quiet_ticks += 1;
                } else {
                    quiet_ticks = 0;
                }
                last_started = started;
                if quiet_ticks >= 2 {
                    shutting_down = true;
                    connection.as_mut().graceful();
                }
                sleep.as_mut().reset(tokio::time::Instant::now() + tick);
            }
        }
    }
}

/// Resolves once the stop flag is set (never, if its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_have_nagle_off_without_a_call_of_their_own() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "inherited from the listening socket"
        );
    }
}
