//! Sending a request to one endpoint: connect (with timeout), reuse pooled connections,
//! wait for the response headers (with timeout), classify what went wrong. HTTP/1.1 goes
//! through [`super::h1`]; HTTP/2 and gRPC through hyper's HTTP/2 client.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use http::response::Parts;
use http::{Method, Request};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::Service;
use super::endpoint::Endpoint;
use super::h1;
use super::pool::{self, PoolSlot};
use super::tls::UpStream;
use crate::body::{BodyError, RequestBody};

/// Why an attempt failed.
#[derive(Debug)]
pub enum SendError {
    /// The connection could not be opened (refused, unreachable). Nothing was sent.
    Connect(io::Error),
    /// Opening the connection took longer than the connect timeout. Nothing was sent.
    ConnectTimeout,
    /// No response headers within the request timeout.
    Timeout,
    /// The connection broke before a complete response.
    Reset {
        /// What went wrong.
        detail: String,
    },
    /// The upstream refused or reset this one HTTP/2 stream: an answer about the request,
    /// not about the endpoint's health.
    StreamReset {
        /// What went wrong.
        detail: String,
    },
    /// The upstream answered with something that is not HTTP.
    Invalid(String),
    /// The request body passed its limit.
    BodyTooLarge(u64),
    /// The client's body broke off.
    ClientBody,
    /// The client's body paused past the listener's limit.
    ClientStalled(Duration),
}

/// The response body of an upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    /// Read from an HTTP/1.1 connection by [`h1::ResponseBody`].
    H1(h1::ResponseBody),
    /// An HTTP/2 stream.
    H2(Incoming),
}

/// A response with what it took to get it.
#[derive(Debug)]
pub struct Sent {
    /// Status and headers.
    pub head: Parts,
    /// The body, still streaming.
    pub body: UpstreamBody,
    /// Time from sending to the response headers.
    pub elapsed: Duration,
    /// When sending began (a connection was asked for).
    pub started: Instant,
    /// When a connection was in hand (pooled or new) and the request went on it, on
    /// traced requests (the clock is not read for others).
    pub connected: Option<Instant>,
}

/// An HTTP/1.1 request, encoded.
#[derive(Debug)]
pub struct H1Request<'a> {
    /// The request head.
    pub head: &'a [u8],
    /// The method (for HEAD response framing).
    pub method: &'a Method,
    /// Chunked request body framing.
    pub chunked: bool,
    /// The request can be sent again (idempotent, no body).
    pub replayable: bool,
    /// Where interim (1xx) responses go; dropped without.
    pub interim: Option<&'a crate::exchange::Interim>,
    /// The request is traced: note when its connection was in hand.
    pub timed: bool,
}

/// What comes back when nothing reached the upstream: the body, to send elsewhere.
pub type H1Failed = (SendError, Option<RequestBody>);
/// What comes back from HTTP/2: the request when it was not sent.
pub type H2Failed = (SendError, Option<Request<RequestBody>>);

/// Sends an HTTP/1.1 request to `ep`. The request timeout runs from when `body_done` fires
/// (from now when there is none). A request that finds its pooled connection closed by the
/// upstream is sent again once on a fresh connection when it is replayable.
pub async fn send_h1(
    svc: &Service,
    ep: &Endpoint,
    req: H1Request<'_>,
    body: RequestBody,
    timeout: Duration,
    body_done: &mut Option<oneshot::Receiver<()>>,
) -> Result<Sent, H1Failed> {
    let started = Instant::now();
    let key = svc.pool_key(ep);
    let slot = PoolSlot {
        key,
        idle_timeout: svc.idle_timeout,
        max_idle: svc.max_idle,
    };
    let mut body = Some(body);
    let mut again = true;
    loop {
        let mut conn = match pool::checkout_h1(key, svc.idle_timeout) {
            Some(c) => c,
            // Boxed: connecting (TCP, maybe TLS) is the cold branch of a pooled exchange, and
            // its future held inline would make every request's future (copied as it is
            // made and awaited) as large as a TLS handshake's.
            None => match Box::pin(connect(svc, ep)).await {
                Ok(s) => h1::Conn::new(s, svc.stats.connections.clone()),
                Err(e) => return Err((e, body)),
            },
        };
        let reused = conn.reused;
        let connected = req.timed.then(Instant::now);
        let b = body.take().unwrap_or(RequestBody::Empty);
        let fut = h1::exchange(&mut conn, req.head, b, req.chunked, req.method, req.interim);
        match timed(fut, timeout, body_done.take()).await {
            Some(Ok((head, framing))) => {
                let body = h1::ResponseBody::new(conn, framing, slot);
                return Ok(Sent {
                    head,
                    body: UpstreamBody::H1(body),
                    elapsed: started.elapsed(),
                    started,
                    connected,
                });
            }
            Some(Err(h1::Error::Closed {
                nothing_received: true,
            })) if reused && req.replayable && again => {
                // A keep-alive race: the upstream closed the idle connection as we reused it.
                again = false;
                continue;
            }
            Some(Err(e)) => return Err((h1_error(e, svc), None)),
            None => return Err((SendError::Timeout, None)),
        }
    }
}

fn h1_error(e: h1::Error, svc: &Service) -> SendError {
    match e {
        h1::Error::Body(BodyError::TooLarge(n)) => SendError::BodyTooLarge(n),
        h1::Error::Body(BodyError::Client(_)) => SendError::ClientBody,
        h1::Error::Body(BodyError::Stalled(d)) => SendError::ClientStalled(d),
        h1::Error::Invalid(what) => {
            svc.stats.failures.inc();
            SendError::Invalid(what.to_owned())
        }
        other => SendError::Reset {
            detail: other.to_string(),
        },
    }
}

/// Sends an HTTP/2 (or gRPC) request to `ep` over the worker's shared connection; a
/// `traced` request notes when its connection was in hand.
pub async fn send_h2(
    svc: &Service,
    ep: &Endpoint,
    req: Request<RequestBody>,
    timeout: Duration,
    body_done: &mut Option<oneshot::Receiver<()>>,
    traced: bool,
) -> Result<Sent, H2Failed> {
    let started = Instant::now();
    let key = svc.pool_key(ep);
    let mut tx = match pool::h2(key) {
        Some(tx) => tx,
        None => match Box::pin(connect_h2(svc, ep)).await {
            Ok(tx) => {
                pool::put_h2(key, tx.clone());
                tx
            }
            Err(e) => return Err((e, Some(req))),
        },
    };
    if let Err(e) = tx.ready().await {
        pool::remove_h2(key);
        return Err((h2_error(e), Some(req)));
    }
    let connected = traced.then(Instant::now);
    match timed(tx.try_send_request(req), timeout, body_done.take()).await {
        Some(Ok(response)) => {
            let (head, body) = response.into_parts();
            Ok(Sent {
                head,
                body: UpstreamBody::H2(body),
                elapsed: started.elapsed(),
                started,
                connected,
            })
        }
        Some(Err(mut e)) => {
            if tx.is_closed() {
                pool::remove_h2(key);
            }
            let req = e.take_message();
            Err((h2_error(e.into_error()), req))
        }
        None => Err((SendError::Timeout, None)),
    }
}

/// Opens a connection to `ep` (and does the TLS handshake when the service has TLS), all
/// within the connect timeout.
async fn connect(svc: &Service, ep: &Endpoint) -> Result<UpStream, SendError> {
    let open = async {
        let s = TcpStream::connect(ep.addr).await?;
        let _ = s.set_nodelay(true);
        match &svc.tls {
            None => Ok(UpStream::Plain(s)),
            Some(tls) => tls.connect(s, host_of(&ep.authority)).await,
        }
    };
    match tokio::time::timeout(svc.connect_timeout, open).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            svc.stats.connect_errors.inc();
            Err(SendError::Connect(e))
        }
        Err(_) => {
            svc.stats.timeouts.inc();
            Err(SendError::ConnectTimeout)
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
pub(crate) fn host_of(authority: &http::HeaderValue) -> &str {
    let a = authority.to_str().unwrap_or_default();
    let host = match a.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => a,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

async fn connect_h2(
    svc: &Service,
    ep: &Endpoint,
) -> Result<http2::SendRequest<RequestBody>, SendError> {
    let stream = connect(svc, ep).await?;
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(h2_error)?;
    let gauge = svc.stats.connections.clone();
    gauge.inc();
    tokio::spawn(async move {
        let _ = conn.await;
        gauge.dec();
    });
    Ok(tx)
}

/// `fut` under the request timeout: its result, or `None` when the timeout passed first.
/// With `body_done`, the timeout starts once the request body has been sent (a slow
/// upload is the body's own timeouts' business), else at once.
///
/// A future written by hand, not an `async fn`: an `async fn` keeps its argument `fut` as
/// well as the timeout wrapped around it, so every request's future (copied as it is made
/// and awaited, level after level) carried the upstream exchange twice.
fn timed<F: Future>(
    fut: F,
    timeout: Duration,
    body_done: Option<oneshot::Receiver<()>>,
) -> Timed<F> {
    let start = match body_done {
        None => tokio::time::Instant::now() + timeout,
        // Far off until the body is sent; reset then.
        Some(_) => tokio::time::Instant::now() + Duration::from_secs(86_400 * 365),
    };
    Timed {
        fut,
        deadline: tokio::time::sleep_until(start),
        body_done,
        timeout,
    }
}

pin_project_lite::pin_project! {
    /// See [`timed`].
    struct Timed<F> {
        #[pin]
        fut: F,
        #[pin]
        deadline: tokio::time::Sleep,
        body_done: Option<oneshot::Receiver<()>>,
        timeout: Duration,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let mut this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if let Some(rx) = this.body_done {
            match std::pin::Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Sent (or the sender gone with the body): the timeout starts now.
                Poll::Ready(_) => {
                    *this.body_done = None;
                    let at = tokio::time::Instant::now() + *this.timeout;
                    this.deadline.as_mut().reset(at);
                }
            }
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn h2_error(e: hyper::Error) -> SendError {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge(n) => SendError::BodyTooLarge(*n),
                BodyError::Client(_) => SendError::ClientBody,
                BodyError::Stalled(d) => SendError::ClientStalled(*d),
            };
        }
        source = s.source();
    }
    if e.is_parse() {
        return SendError::Invalid(e.to_string());
    }
    let mut stream_reset = false;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            stream_reset = h.is_reset() && !h.is_go_away();
            break;
        }
        source = s.source();
    }
    if stream_reset {
        SendError::StreamReset {
            detail: e.to_string(),
        }
    } else {
        SendError::Reset {
            detail: e.to_string(),
        }
    }
}
