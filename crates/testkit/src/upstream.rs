//! A programmable upstream server on 127.0.0.1:0 that speaks HTTP/1.1 and h2c (prior
//! knowledge) and records every request it sees.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the upstream saw.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: Method,
    /// Request target as received.
    pub uri: Uri,
    /// Protocol version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// The first MiB of the body.
    pub body: Bytes,
    /// Total body length.
    pub body_len: u64,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
    /// The client's address (the gateway's side of the connection).
    pub peer: SocketAddr,
    /// The body ended as its framing says (false: the connection broke off in the middle).
    pub body_complete: bool,
}

/// What the upstream answers.
pub enum Reply {
    /// A complete response.
    Full {
        /// Status.
        status: StatusCode,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Bytes,
    },
    /// A streamed body of `len` bytes of a repeating pattern, produced without buffering.
    Stream {
        /// Status.
        status: StatusCode,
        /// Total bytes.
        len: u64,
    },
    /// A body followed by trailers.
    Trailers {
        /// Body.
        body: Bytes,
        /// Trailers.
        trailers: Vec<(String, String)>,
    },
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Close the connection without answering.
    Close,
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A running upstream.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    count: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

impl Reply {
    /// 200 with a text body.
    pub fn text(body: impl Into<String>) -> Self {
        Reply::Full {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from(body.into()),
        }
    }

    /// A status with an empty body.
    pub fn status(status: u16) -> Self {
        Reply::Full {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            headers: vec![],
            body: Bytes::new(),
        }
    }

    /// A JSON description of the request: method, path, version, headers, body length.
    pub fn echo(r: &Recorded) -> Self {
        let mut headers = serde_json::Map::new();
        for (k, v) in &r.headers {
            headers.insert(
                k.as_str().into(),
                serde_json::Value::String(v.to_str().unwrap_or("").into()),
            );
        }
        let body = serde_json::json!({
            "method": r.method.as_str(),
            "uri": r.uri.to_string(),
            "path": r.uri.path(),
            "version": format!("{:?}", r.version),
            "headers": headers,
            "body_len": r.body_len,
        });
        Reply::Full {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }
}

impl Upstream {
    /// Starts an upstream answering every request with `handler`.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), handler).await
    }

    /// Starts an upstream that echoes requests as JSON.
    pub async fn echo() -> Self {
        Self::start(Reply::echo).await
    }

    /// Starts an upstream that answers `name` as text (to tell upstreams apart).
    pub async fn named(name: &'static str) -> Self {
        Self::start(move |_| Reply::text(name)).await
    }

    /// Starts an upstream that answers `name`, and `health_path` with 200 `ok` while `up`
    /// is true and 503 while it is false (for health checks).
    pub async fn with_health(
        name: &'static str,
        health_path: &'static str,
        up: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self::start(move |r| {
            if r.uri.path() != health_path {
                Reply::text(name)
            } else if up.load(Ordering::SeqCst) {
                Reply::text("ok")
            } else {
                Reply::status(503)
            }
        })
        .await
    }

    /// Starts on a given address (to restart an upstream on the same port).
    pub async fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let handler: Arc<Handler> = Arc::new(handler);
        let (s2, c2, conns) = (seen.clone(), count.clone(), connections.clone());
        tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop_rx.changed() => return,
                    r = listener.accept() => match r { Ok(p) => p, Err(_) => continue },
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, count) = (handler.clone(), s2.clone(), c2.clone());
                let mut conn_stop = stop_rx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, seen, count) = (handler.clone(), seen.clone(), count.clone());
                        async move { serve(req, peer, handler, seen, count).await }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            count,
            connections,
            stop,
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().expect("lock").clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the upstream saw no request")
    }

    /// How many requests were answered.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    req: Request<Incoming>,
    peer: SocketAddr,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Recorded>>>,
    count: Arc<AtomicUsize>,
) -> Result<Response<ReplyBody>, std::io::Error> {
    let (parts, mut body) = req.into_parts();
    let mut kept = Vec::new();
    let mut len = 0u64;
    let mut trailers = None;
    let mut body_complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            body_complete = false;
            break;
        };
        if let Some(d) = frame.data_ref() {
            len += d.len() as u64;
            if kept.len() < 1 << 20 {
                kept.extend_from_slice(&d[..d.len().min((1 << 20) - kept.len())]);
            }
        } else if let Some(t) = frame.trailers_ref() {
            trailers = Some(t.clone());
        }
    }
    let rec = Recorded {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body: Bytes::from(kept),
        body_len: len,
        trailers,
        peer,
        body_complete,
    };
    let mut reply = handler(&rec);
    seen.lock().expect("lock").push(rec);
    count.fetch_add(1, Ordering::SeqCst);
    loop {
        match reply {
            Reply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            other => {
                reply = other;
                break;
            }
        }
    }
    let resp = match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut r = Response::new(ReplyBody::Full(Some(body)));
            *r.status_mut() = status;
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().append(k, v);
                }
            }
            r
        }
        Reply::Stream { status, len } => {
            let mut r = Response::new(ReplyBody::Stream { left: len });
            *r.status_mut() = status;
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
        Reply::Trailers { body, trailers } => {
            let declared = trailers
                .iter()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
                .join(", ");
            let mut map = HeaderMap::new();
            for (k, v) in trailers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    map.append(k, v);
                }
            }
            let mut r = Response::new(ReplyBody::Trailers(Some(body), Some(map)));
            // HTTP/1.1 sends only the trailers the response declares.
            if let Ok(v) = HeaderValue::from_str(&declared) {
                r.headers_mut().insert(http::header::TRAILER, v);
            }
            r
        }
        Reply::Close => {
            return Err(std::io::Error::other(
                "closing without an answer, on purpose",
            ));
        }
        Reply::Delay(..) => Response::new(ReplyBody::Full(None)),
    };
    Ok(resp)
}

/// The upstream's response body.
pub enum ReplyBody {
    /// All at once.
    Full(Option<Bytes>),
    /// A pattern, `left` bytes more.
    Stream {
        /// Bytes still to send.
        left: u64,
    },
    /// Body then trailers.
    Trailers(Option<Bytes>, Option<HeaderMap>),
    /// Fails at once, which breaks the connection.
    Abort,
}

/// 64 KiB of the streaming pattern.
pub fn pattern_chunk() -> Bytes {
    static CHUNK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    CHUNK
        .get_or_init(|| Bytes::from((0..65_536u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()))
        .clone()
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        Poll::Ready(match this {
            ReplyBody::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            ReplyBody::Stream { left } => {
                if *left == 0 {
                    None
                } else {
                    let chunk = pattern_chunk();
                    let n = (*left).min(chunk.len() as u64) as usize;
                    *left -= n as u64;
                    Some(Ok(Frame::data(chunk.slice(..n))))
                }
            }
            ReplyBody::Trailers(b, t) => match (b.take(), t.take()) {
                (Some(b), t) => {
                    *this = ReplyBody::Trailers(None, t);
                    Some(Ok(Frame::data(b)))
                }
                (None, Some(t)) => Some(Ok(Frame::trailers(t))),
                (None, None) => None,
            },
            ReplyBody::Abort => Some(Err(std::io::Error::other("aborted on purpose"))),
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Full(b) => b.is_none(),
            ReplyBody::Stream { left } => *left == 0,
            ReplyBody::Trailers(b, t) => b.is_none() && t.is_none(),
            ReplyBody::Abort => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ReplyBody::Full(None) => SizeHint::with_exact(0),
            ReplyBody::Stream { left } => SizeHint::with_exact(*left),
            _ => SizeHint::default(),
        }
    }
}
