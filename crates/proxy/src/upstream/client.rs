//! Sending a request to one endpoint: connect (with timeout), reuse pooled connections,
//! wait for the response headers (with timeout), classify what went wrong.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::Service;
use super::endpoint::Endpoint;
use super::pool::{self, Release};
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
    /// The connection broke or the upstream answered with something that is not HTTP.
    /// `reused` says whether it was a pooled connection (a keep-alive race, safe to retry).
    Reset {
        /// What went wrong.
        error: hyper::Error,
        /// The connection came from the pool.
        reused: bool,
    },
    /// The request body passed its limit.
    BodyTooLarge(u64),
    /// The client's body broke off.
    ClientBody(hyper::Error),
}

/// A response with what it took to get it.
#[derive(Debug)]
pub struct Sent {
    /// The upstream response.
    pub response: Response<Incoming>,
    /// Returns the connection to the pool at the end of the body (HTTP/1.1).
    pub release: Option<Release>,
    /// Time from sending to the response headers.
    pub elapsed: Duration,
}

/// The request is handed back when it was not sent, so it can go elsewhere.
pub type Failed = (SendError, Option<Request<RequestBody>>);

impl SendError {
    /// True when nothing reached the upstream.
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::ConnectTimeout)
    }
}

/// Sends `req` to `ep`. `body_done` fires when the request body has been read; the request
/// timeout runs from then (from now when there is no body).
pub async fn send(
    svc: &Service,
    ep: &Endpoint,
    mut req: Request<RequestBody>,
    timeout: Duration,
    body_done: Option<oneshot::Receiver<()>>,
) -> Result<Sent, Failed> {
    let started = Instant::now();
    if svc.protocol.is_http2() {
        return send_h2(svc, ep, req, timeout, body_done, started).await;
    }
    let mut body_done = body_done;
    loop {
        let (mut tx, reused) = match pool::checkout_h1(ep.addr) {
            Some(tx) => (tx, true),
            None => match connect_h1(svc, ep).await {
                Ok(tx) => (tx, false),
                Err(e) => return Err((e, Some(req))),
            },
        };
        let fut = tx.try_send_request(req);
        match timed(fut, timeout, body_done.take()).await {
            Some(Ok(response)) => {
                let release = Release::new(tx, ep.addr, svc.idle_timeout, svc.max_idle);
                return Ok(Sent {
                    response,
                    release: Some(release),
                    elapsed: started.elapsed(),
                });
            }
            Some(Err(mut e)) => match e.take_message() {
                // Not sent on a pooled connection that turned out dead: try a fresh one.
                Some(r) if reused => {
                    req = r;
                    continue;
                }
                Some(r) => return Err((classify(e.into_error(), false), Some(r))),
                None => return Err((classify(e.into_error(), reused), None)),
            },
            None => return Err((SendError::Timeout, None)),
        }
    }
}

async fn send_h2(
    svc: &Service,
    ep: &Endpoint,
    req: Request<RequestBody>,
    timeout: Duration,
    body_done: Option<oneshot::Receiver<()>>,
    started: Instant,
) -> Result<Sent, Failed> {
    let (mut tx, reused) = match pool::h2(ep.addr) {
        Some(tx) => (tx, true),
        None => match connect_h2(svc, ep).await {
            Ok(tx) => {
                pool::put_h2(ep.addr, tx.clone());
                (tx, false)
            }
            Err(e) => return Err((e, Some(req))),
        },
    };
    if let Err(e) = tx.ready().await {
        pool::remove_h2(ep.addr);
        return Err((classify(e, reused), Some(req)));
    }
    match timed(tx.try_send_request(req), timeout, body_done).await {
        Some(Ok(response)) => Ok(Sent {
            response,
            release: None,
            elapsed: started.elapsed(),
        }),
        Some(Err(mut e)) => {
            if tx.is_closed() {
                pool::remove_h2(ep.addr);
            }
            let req = e.take_message();
            Err((classify(e.into_error(), reused), req))
        }
        None => Err((SendError::Timeout, None)),
    }
}

/// Opens a dedicated HTTP/1.1 connection that may be upgraded (WebSocket and the like).
pub async fn send_upgrade(
    svc: &Service,
    ep: &Endpoint,
    req: Request<RequestBody>,
    timeout: Duration,
) -> Result<Sent, Failed> {
    let started = Instant::now();
    let stream = match connect(svc, ep).await {
        Ok(s) => s,
        Err(e) => return Err((e, Some(req))),
    };
    let (mut tx, conn) = match http1::Builder::new().handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return Err((classify(e, false), Some(req))),
    };
    let gauge = svc.stats.connections.clone();
    gauge.inc();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
        gauge.dec();
    });
    match timed(tx.send_request(req), timeout, None).await {
        Some(Ok(response)) => Ok(Sent {
            response,
            release: None,
            elapsed: started.elapsed(),
        }),
        Some(Err(e)) => Err((classify(e, false), None)),
        None => Err((SendError::Timeout, None)),
    }
}

async fn connect(svc: &Service, ep: &Endpoint) -> Result<TcpStream, SendError> {
    match tokio::time::timeout(svc.connect_timeout, TcpStream::connect(ep.addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
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

async fn connect_h1(
    svc: &Service,
    ep: &Endpoint,
) -> Result<http1::SendRequest<RequestBody>, SendError> {
    let stream = connect(svc, ep).await?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Reset {
            error: e,
            reused: false,
        })?;
    let gauge = svc.stats.connections.clone();
    gauge.inc();
    tokio::spawn(async move {
        let _ = conn.await;
        gauge.dec();
    });
    Ok(tx)
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
        .map_err(|e| SendError::Reset {
            error: e,
            reused: false,
        })?;
    let gauge = svc.stats.connections.clone();
    gauge.inc();
    tokio::spawn(async move {
        let _ = conn.await;
        gauge.dec();
    });
    Ok(tx)
}

/// Runs `fut` under the request timeout, which starts when `body_done` fires (now without it).
/// `None` means the timeout passed.
async fn timed<F: Future>(
    fut: F,
    timeout: Duration,
    body_done: Option<oneshot::Receiver<()>>,
) -> Option<F::Output> {
    match body_done {
        None => tokio::time::timeout(timeout, fut).await.ok(),
        Some(rx) => {
            let deadline = async move {
                let _ = rx.await;
                tokio::time::sleep(timeout).await;
            };
            tokio::select! {
                out = fut => Some(out),
                _ = deadline => None,
            }
        }
    }
}

fn classify(e: hyper::Error, reused: bool) -> SendError {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge(n) => SendError::BodyTooLarge(*n),
                BodyError::Client(_) => SendError::ClientBody(e),
            };
        }
        source = s.source();
    }
    SendError::Reset { error: e, reused }
}
