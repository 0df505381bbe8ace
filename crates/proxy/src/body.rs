//! Body types of the proxy: the request body sent upstream (streamed, limited, counted) and
//! the response body sent to the client (streamed from upstream, or made by the gateway),
//! which completes the exchange's log and metrics when it ends or is dropped.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::exchange::Exchange;
use crate::upstream::client::UpstreamBody;

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body passed the route's or listener's limit.
    #[error("request body larger than the {0}-byte limit")]
    TooLarge(u64),
    /// Reading from the client failed.
    #[error("reading the request body: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The client sent no body bytes for too long, or not the whole body in time.
    #[error("the client's request body stalled for {0:?}")]
    Stalled(std::time::Duration),
}

/// A limit on pauses between body frames, and optionally on the whole body. The timer is
/// armed only when the body has to wait, so a body that flows costs no clock reads.
#[derive(Debug)]
pub struct Stall {
    idle: Option<std::time::Duration>,
    total: Option<std::time::Duration>,
    deadline: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was last set.
    moved: bool,
}

impl Stall {
    /// A limit of `idle` between frames and `total` for the whole body; `None` for neither.
    pub fn new(
        idle: Option<std::time::Duration>,
        total: Option<std::time::Duration>,
    ) -> Option<Self> {
        if idle.is_none() && total.is_none() {
            return None;
        }
        Some(Self {
            idle,
            total,
            deadline: total.map(|t| tokio::time::Instant::now() + t),
            sleep: None,
            moved: true,
        })
    }

    /// The limit that ended the body (for messages).
    fn limit(&self) -> std::time::Duration {
        match (self.deadline, self.idle) {
            (Some(d), _) if d <= tokio::time::Instant::now() => self.total.unwrap_or_default(),
            (_, Some(i)) => i,
            _ => self.total.unwrap_or_default(),
        }
    }

    /// The body has to wait: ready once it waited too long.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.moved {
            self.moved = false;
            let idle = self.idle.map(|i| tokio::time::Instant::now() + i);
            let until = match (idle, self.deadline) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => return Poll::Pending,
            };
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(until),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        match &mut self.sleep {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// A client's request body, whichever server read it.
#[derive(Debug)]
pub enum ClientBody {
    /// No body.
    Empty,
    /// Read by our HTTP/1.1 server.
    H1(crate::listener::h1::RequestBody),
    /// An HTTP/2 stream, read by hyper.
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| BodyError::Client(Box::new(e))),
            ClientBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| BodyError::Client(Box::new(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// The request body sent upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// The client's body, streamed.
    Stream(RequestStream),
}

/// The client's body with a size limit, a byte count and an end-of-body signal.
#[derive(Debug)]
pub struct RequestStream {
    inner: ClientBody,
    limit: u64,
    seen: u64,
    counter: Arc<AtomicU64>,
    done: Option<oneshot::Sender<()>>,
    stall: Option<Stall>,
}

impl RequestStream {
    /// Wraps `inner`; `done` fires when the body has been read completely; `stall` ends a
    /// body that pauses too long.
    pub fn new(
        inner: ClientBody,
        limit: Option<u64>,
        counter: Arc<AtomicU64>,
        done: Option<oneshot::Sender<()>>,
        stall: Option<Stall>,
    ) -> Self {
        Self {
            inner,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            counter,
            done,
            stall,
        }
    }

    fn finished(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let s = match self.get_mut() {
            RequestBody::Empty => return Poll::Ready(None),
            RequestBody::Stream(s) => s,
        };
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(st) = &mut s.stall {
                    st.moved = true;
                }
                if let Some(t) = frame.trailers_mut() {
                    crate::headers::strip_trailer_fields(t);
                }
                if let Some(data) = frame.data_ref() {
                    s.seen += data.len() as u64;
                    s.counter.store(s.seen, Ordering::Relaxed);
                    if s.seen > s.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(s.limit))));
                    }
                }
                if s.inner.is_end_stream() {
                    s.finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                s.finished();
                Poll::Ready(None)
            }
            Poll::Pending => match &mut s.stall {
                Some(st) => match st.poll_expired(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled(st.limit())))),
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Stream(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Stream(s) => s.inner.size_hint(),
        }
    }
}

/// The response body sent to the client.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    exchange: Option<Exchange>,
    /// Ends an upstream body that pauses too long.
    stall: Option<Stall>,
}

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// A file streamed from disk: what is left to send.
    File(tokio::fs::File, u64),
}

/// Why a response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// Reading an HTTP/1.1 upstream failed.
    #[error("upstream body: {0}")]
    H1(#[from] std::io::Error),
    /// An HTTP/2 upstream stream failed.
    #[error("upstream stream: {0}")]
    H2(#[from] hyper::Error),
    /// Reading a served file failed.
    #[error("file: {0}")]
    File(std::io::Error),
    /// The upstream sent no body bytes for too long.
    #[error("the upstream's response body stalled for {0:?}")]
    Stalled(std::time::Duration),
}

impl ResponseBody {
    /// A body made by the gateway.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        Self {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
            exchange: None,
            stall: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            exchange: None,
            stall: None,
        }
    }

    /// `len` bytes of a file from its current position, streamed.
    pub fn file(file: tokio::fs::File, len: u64) -> Self {
        Self {
            inner: Inner::File(file, len),
            exchange: None,
            stall: None,
        }
    }

    /// An upstream body, streamed, ended when it pauses longer than `idle`.
    pub fn upstream(body: UpstreamBody, idle: Option<std::time::Duration>) -> Self {
        Self {
            inner: Inner::Upstream(body),
            exchange: None,
            stall: Stall::new(idle, None),
        }
    }

    /// Attaches the exchange that is completed when this body ends or is dropped.
    pub fn attach(&mut self, exchange: Exchange) {
        let ended = self.is_end_stream();
        self.exchange = Some(exchange);
        if ended {
            // Nothing will be polled (e.g. HEAD, 204): complete now.
            self.complete(true);
        }
    }

    fn complete(&mut self, ok: bool) {
        if let Some(mut ex) = self.exchange.take() {
            ex.finish(ok);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|bytes| Ok(Frame::data(bytes)))),
            Inner::Upstream(UpstreamBody::H1(b)) => {
                Pin::new(b).poll_frame(cx).map_err(ResponseError::from)
            }
            Inner::Upstream(UpstreamBody::H2(b)) => {
                Pin::new(b).poll_frame(cx).map_err(ResponseError::from)
            }
            Inner::File(file, left) => poll_file(file, left, cx),
        };
        match polled {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(st) = &mut this.stall {
                    st.moved = true;
                }
                if let Some(t) = frame.trailers_mut() {
                    crate::headers::strip_trailer_fields(t);
                }
                if let (Some(data), Some(ex)) = (frame.data_ref(), &mut this.exchange) {
                    ex.bytes_out += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.complete(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.complete(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.complete(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                let expired = match &mut this.stall {
                    Some(st) => st.poll_expired(cx).is_ready().then(|| st.limit()),
                    None => None,
                };
                match expired {
                    Some(limit) => {
                        this.stall = None;
                        this.complete(false);
                        Poll::Ready(Some(Err(ResponseError::Stalled(limit))))
                    }
                    None => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(UpstreamBody::H1(b)) => b.is_end_stream(),
            Inner::Upstream(UpstreamBody::H2(b)) => b.is_end_stream(),
            Inner::File(_, left) => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(UpstreamBody::H1(b)) => b.size_hint(),
            Inner::Upstream(UpstreamBody::H2(b)) => b.size_hint(),
            Inner::File(_, left) => SizeHint::with_exact(*left),
        }
    }
}

/// Reads the next chunk (at most 64 KiB) of a file body.
fn poll_file(
    file: &mut tokio::fs::File,
    left: &mut u64,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, ResponseError>>> {
    if *left == 0 {
        return Poll::Ready(None);
    }
    let want = (*left).min(64 * 1024) as usize;
    let mut buf = bytes::BytesMut::zeroed(want);
    let mut rb = tokio::io::ReadBuf::new(&mut buf);
    match tokio::io::AsyncRead::poll_read(Pin::new(file), cx, &mut rb) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Err(e)) => Poll::Ready(Some(Err(ResponseError::File(e)))),
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            if n == 0 {
                // The file is shorter than it was said to be.
                return Poll::Ready(Some(Err(ResponseError::File(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file ended early",
                )))));
            }
            buf.truncate(n);
            *left -= n as u64;
            Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the connection broke).
        self.complete(false);
    }
}
