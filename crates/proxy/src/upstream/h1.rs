//! HTTP/1.1 to upstreams, written for the proxy path. The request's own task writes the
//! request and reads the response: no connection task, no channels between them, and the
//! response body is read straight from the upstream socket by whoever polls it. The request
//! head is encoded into bytes, so a retry sends the same bytes again without cloning headers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use super::tls::UpStream;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

use crate::body::{BodyError, RequestBody};
use crate::codec::{self, CodingError, Codings, Decoded, Decoder};
use crate::exchange::Interim;
use crate::headers;
use crate::upstream::pool::{self, PoolSlot};

/// Largest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;
/// Read size.
const READ_SIZE: usize = 16 * 1024;

/// An open HTTP/1.1 connection to an endpoint.
#[derive(Debug)]
pub struct Conn {
    stream: UpStream,
    buf: BytesMut,
    /// The connection came from the pool (it may have been closed by the upstream meanwhile).
    pub reused: bool,
    /// When it was last returned to the pool.
    pub idle_since: Instant,
    /// How long it may stay idle in the pool.
    pub idle_timeout: std::time::Duration,
    _open: OpenGuard,
}

/// Counts a connection open in the upstream connections gauge while it lives.
#[derive(Debug)]
struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What went wrong on the connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a complete response head.
    #[error("the connection closed before a complete response")]
    Closed {
        /// Not a single response byte arrived.
        nothing_received: bool,
    },
    /// The response is not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The request body failed (limit or client).
    #[error(transparent)]
    Body(#[from] BodyError),
}

impl Conn {
    /// Wraps a connected stream; `gauge` counts open connections until this is dropped.
    pub fn new(stream: UpStream, gauge: Gauge) -> Self {
        gauge.inc();
        Self {
            stream,
            buf: BytesMut::new(),
            reused: false,
            idle_since: Instant::now(),
            idle_timeout: std::time::Duration::from_secs(60),
            _open: OpenGuard(gauge),
        }
    }

    /// True when an idle connection looks usable: the upstream has not closed it or sent
    /// anything unasked. Costs no system call unless the socket became readable.
    pub fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        if let UpStream::Tls(tls) = &mut self.stream {
            // rustls may hold decrypted bytes the socket no longer shows, and may read
            // records that came unasked (a TLS 1.3 session ticket): poll it without waiting;
            // usable only when it has nothing (no data, no EOF, no error).
            let mut probe = [0u8; 1];
            let mut buf = tokio::io::ReadBuf::new(&mut probe);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            return matches!(
                tokio::io::AsyncRead::poll_read(
                    std::pin::Pin::new(tls.as_mut()),
                    &mut cx,
                    &mut buf
                ),
                std::task::Poll::Pending
            );
        }
        match self.stream.tcp().ready(Interest::READABLE).now_or_never() {
            None => true,
            Some(Ok(r)) if r.is_read_closed() => false,
            Some(Ok(_)) => match &mut self.stream {
                UpStream::Plain(tcp) => {
                    let mut probe = [0u8; 1];
                    // Readable while idle means EOF, an error, or unexpected bytes: none is
                    // usable.
                    matches!(tcp.try_read(&mut probe), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
                }
                UpStream::Tls(tls) => {
                    // TLS records may arrive unasked (a TLS 1.3 session ticket): let rustls
                    // read them without waiting; usable unless they held data, EOF or an error.
                    let mut probe = [0u8; 1];
                    let mut buf = tokio::io::ReadBuf::new(&mut probe);
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    matches!(
                        tokio::io::AsyncRead::poll_read(
                            std::pin::Pin::new(tls.as_mut()),
                            &mut cx,
                            &mut buf
                        ),
                        std::task::Poll::Pending
                    )
                }
            },
            Some(Err(_)) => false,
        }
    }

    /// Takes the socket and any bytes already read, for a protocol upgrade.
    pub fn into_upgraded(self) -> (UpStream, Bytes) {
        // The tunnel owns the socket from here; the gauge counts pooled-path connections.
        let Conn { stream, buf, .. } = self;
        (stream, buf.freeze())
    }
}

/// The headers the gateway adds to a forwarded request, written straight into the head.
#[derive(Debug)]
pub struct Forwarded<'a> {
    /// The client's IP, appended to `X-Forwarded-For`.
    pub client_ip: &'a HeaderValue,
    /// `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// `X-Forwarded-Host`: the Host the client asked for.
    pub host: Option<HeaderValue>,
    /// `x-request-id`.
    pub request_id: &'a HeaderValue,
    /// This gateway's `Via` entry.
    pub via: &'static str,
    /// An upgrade request: `Connection: upgrade` and `Upgrade` pass.
    pub upgrade: bool,
}

/// Appends the request head. `content_length` and `chunked` describe the body framing the
/// upstream is told about; `content-length`, `transfer-encoding` and `host` in `headers` are
/// replaced by these. With `fwd`, hop-by-hop headers are left out and the forwarding
/// headers written in the same pass; without, `headers` is sent as it is.
#[allow(clippy::too_many_arguments)]
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    content_length: Option<u64>,
    chunked: bool,
    fwd: Option<&Forwarded<'_>>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let Some(fwd) = fwd else {
        for (name, value) in headers {
            if name != HOST && name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
                line(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        framing(out, content_length, chunked);
        return;
    };
    let listed = if headers.contains_key(CONNECTION) {
        headers::connection_listed(headers)
    } else {
        Vec::new()
    };
    let mut xff: Vec<u8> = Vec::new();
    for (name, value) in headers {
        if name == HOST
            || name == CONTENT_LENGTH
            || name == EXPECT
            || name == headers::X_REQUEST_ID
            || name == headers::X_FORWARDED_PROTO
            || name == headers::X_FORWARDED_HOST
        {
            continue;
        }
        if name == headers::X_FORWARDED_FOR {
            if !xff.is_empty() {
                xff.extend_from_slice(b", ");
            }
            xff.extend_from_slice(value.as_bytes());
            continue;
        }
        if headers::is_hop_by_hop(name) {
            let keep = (name == TE && value.as_bytes().eq_ignore_ascii_case(b"trailers"))
                || (fwd.upgrade && name == UPGRADE);
            if !keep {
                continue;
            }
        }
        if !listed.is_empty() && listed.contains(name) {
            continue;
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if !xff.is_empty() {
        out.extend_from_slice(&xff);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    line(out, b"x-forwarded-proto", fwd.proto.as_bytes());
    if let Some(h) = &fwd.host {
        line(out, b"x-forwarded-host", h.as_bytes());
    }
    line(out, b"via", fwd.via.as_bytes());
    line(out, b"x-request-id", fwd.request_id.as_bytes());
    if fwd.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    framing(out, content_length, chunked);
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn framing(out: &mut Vec<u8>, content_length: Option<u64>, chunked: bool) {
    if let Some(n) = content_length {
        out.extend_from_slice(b"content-length: ");
        codec::decimal(out, n);
        out.extend_from_slice(b"\r\n");
    } else if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends `head` and `body` and reads the response head. Returns the head and how its body
/// is framed. When the upstream answers before the request body is complete, the body is
/// abandoned and the connection will not be reused.
pub async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    body: RequestBody,
    chunked: bool,
    method: &Method,
    interim: Option<&Interim>,
) -> Result<(Parts, Framing), Error> {
    let Conn {
        stream,
        buf,
        reused,
        ..
    } = conn;
    let reused = *reused;
    match stream {
        UpStream::Plain(tcp) => {
            let (rd, wr) = tcp.split();
            exchange_on(rd, wr, buf, reused, head, body, chunked, method, interim).await
        }
        UpStream::Tls(tls) => {
            let (rd, wr) = tokio::io::split(tls.as_mut());
            exchange_on(rd, wr, buf, reused, head, body, chunked, method, interim).await
        }
    }
}

#[allow(clippy::too_many_arguments)] // the halves of one connection and one request
async fn exchange_on<R, W>(
    mut rd: R,
    mut wr: W,
    buf: &mut BytesMut,
    reused: bool,
    head: &[u8],
    body: RequestBody,
    chunked: bool,
    method: &Method,
    interim: Option<&Interim>,
) -> Result<(Parts, Framing), Error>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    if matches!(body, RequestBody::Empty) {
        if let Err(e) = wr.write_all(head).await {
            return Err(stale(e, reused));
        }
    } else {
        if let Err(e) = wr.write_all(head).await {
            return Err(stale(e, reused));
        }
        let write = write_body(&mut wr, body, chunked);
        let read = read_head(&mut rd, buf, method, reused, interim);
        tokio::pin!(write, read);
        tokio::select! {
            biased;
            w = &mut write => match w {
                Ok(()) => {}
                Err(Error::Body(b)) => return Err(Error::Body(b)),
                // The upstream may have answered and closed: prefer its answer.
                Err(e) => return read.await.map(|(p, f)| (p, f.not_reusable())).map_err(|_| e),
            },
            r = &mut read => return r.map(|(p, f)| (p, f.not_reusable())),
        }
        return read.await;
    }
    read_head(&mut rd, buf, method, reused, interim).await
}

fn stale(e: io::Error, reused: bool) -> Error {
    if reused
        && matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    {
        Error::Closed {
            nothing_received: true,
        }
    } else {
        Error::Io(e)
    }
}

async fn write_body<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    mut body: RequestBody,
    chunked: bool,
) -> Result<(), Error> {
    let mut trailers: Option<HeaderMap> = None;
    let mut scratch = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    scratch.clear();
                    codec::chunk_header(&mut scratch, data.len());
                    scratch.extend_from_slice(&data);
                    scratch.extend_from_slice(b"\r\n");
                    wr.write_all(&scratch).await?;
                } else {
                    wr.write_all(&data).await?;
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    if chunked {
        scratch.clear();
        codec::last_chunk(&mut scratch, trailers.as_ref());
        wr.write_all(&scratch).await?;
    }
    wr.flush().await?;
    Ok(())
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty {
        /// The connection may serve another request afterwards.
        reusable: bool,
    },
    /// `content-length`.
    Length {
        /// Body length.
        len: u64,
        /// The connection may serve another request afterwards.
        reusable: bool,
    },
    /// `transfer-encoding: chunked`.
    Chunked {
        /// The connection may serve another request afterwards.
        reusable: bool,
    },
    /// Until the upstream closes.
    UntilClose,
    /// 101: the connection becomes a tunnel.
    Upgrade,
}

impl Framing {
    fn not_reusable(self) -> Self {
        match self {
            Framing::Empty { .. } => Framing::Empty { reusable: false },
            Framing::Length { len, .. } => Framing::Length {
                len,
                reusable: false,
            },
            Framing::Chunked { .. } => Framing::Chunked { reusable: false },
            other => other,
        }
    }
}

async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    method: &Method,
    reused: bool,
    interim: Option<&Interim>,
) -> Result<(Parts, Framing), Error> {
    let mut received = !buf.is_empty();
    loop {
        if !buf.is_empty() {
            if let Some((parts, framing)) = parse_head(buf, method)? {
                if parts.status.is_informational()
                    && parts.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    // The final response follows. 100 Continue is the gateway's own to give
                    // (it answers the client's `Expect` itself); 103 Early Hints and other
                    // interim answers go on to the client.
                    if let Some(i) = interim
                        && parts.status != StatusCode::CONTINUE
                    {
                        i.push(parts);
                    }
                    continue;
                }
                return Ok((parts, framing));
            }
            if buf.len() > MAX_HEAD {
                return Err(Error::Invalid("the response head is larger than 64 KiB"));
            }
        }
        buf.reserve(READ_SIZE);
        let n = match rd.read_buf(buf).await {
            Ok(n) => n,
            Err(e) if !received => return Err(stale(e, reused)),
            Err(e) => return Err(Error::Io(e)),
        };
        if n == 0 {
            return Err(Error::Closed {
                nothing_received: !received,
            });
        }
        received = true;
    }
}

/// Parses a complete response head at the start of `buf` and consumes it; `None` when more
/// bytes are needed. Header values share the read buffer instead of being copied.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<(Parts, Framing)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("more than 128 response headers"));
        }
        Err(_) => return Err(Error::Invalid("malformed status line or header")),
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or(0))
        .map_err(|_| Error::Invalid("bad status code"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    let base = buf.as_ptr() as usize;
    let mut kept: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(resp.headers.len());
    let mut listed: Vec<HeaderName> = Vec::new();
    let mut content_length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut close = version == Version::HTTP_10;
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Invalid("bad header name"))?;
        if name == CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(Error::Invalid("bad content-length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(Error::Invalid("conflicting content-length headers"));
            }
            content_length = Some(n);
        } else if name == TRANSFER_ENCODING {
            codings.add(h.value);
        } else if name == CONNECTION {
            for t in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"upgrade")
                    && let Ok(n) = HeaderName::from_bytes(t)
                {
                    listed.push(n);
                }
            }
        }
        // Hop-by-hop headers stop here (a 101 keeps `Connection` and `Upgrade`).
        if headers::is_hop_by_hop(&name) && !(upgrade && (name == CONNECTION || name == UPGRADE)) {
            continue;
        }
        let start = h.value.as_ptr() as usize - base;
        kept.push((name, start, start + h.value.len()));
    }
    // The same rule as for requests: a coding the gateway would pass on undecoded, with
    // Transfer-Encoding dropped as hop-by-hop, would reach the client as corrupt content.
    let chunked = codings.chunked().map_err(|e| {
        Error::Invalid(match e {
            CodingError::NotChunkedLast => "transfer-encoding does not end in a single chunked",
            CodingError::Unsupported => "unsupported transfer coding",
        })
    })?;
    let head = buf.split_to(head_len).freeze();
    let mut map = HeaderMap::with_capacity(kept.len());
    for (name, start, end) in kept {
        if listed.contains(&name) || (chunked && name == CONTENT_LENGTH) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| Error::Invalid("bad header value"))?;
        map.append(name, value);
    }
    if upgrade {
        map.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let reusable = !close;
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if upgrade {
        Framing::Upgrade
    } else if no_body {
        Framing::Empty { reusable }
    } else if chunked {
        // Transfer-Encoding wins over Content-Length (RFC 9112 6.3), and the pair is suspect.
        Framing::Chunked {
            reusable: reusable && content_length.is_none(),
        }
    } else if let Some(len) = content_length {
        Framing::Length { len, reusable }
    } else {
        Framing::UntilClose
    };
    let mut r = Response::new(());
    *r.status_mut() = status;
    *r.version_mut() = version;
    *r.headers_mut() = map;
    let (parts, ()) = r.into_parts();
    Ok(Some((parts, framing)))
}

/// A response body read from an upstream connection.
pub struct ResponseBody {
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    slot: Option<PoolSlot>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("decoder", &self.decoder)
            .finish()
    }
}

impl ResponseBody {
    /// A body read from `conn` as `framing` says; at its end `conn` goes back to `slot`.
    pub fn new(conn: Conn, framing: Framing, slot: PoolSlot) -> Self {
        let (decoder, reusable) = match framing {
            Framing::Empty { reusable } => (Decoder::Done, reusable),
            Framing::Length { len, reusable } => (Decoder::length(len), reusable),
            Framing::Chunked { reusable } => (Decoder::ChunkSize, reusable),
            Framing::UntilClose => (Decoder::UntilClose, false),
            Framing::Upgrade => (Decoder::Done, false),
        };
        let mut body = Self {
            conn: Some(conn),
            decoder,
            reusable,
            slot: Some(slot),
        };
        // An upgrade keeps its connection for the tunnel; other empty bodies are done now.
        if body.decoder.is_done() && framing != Framing::Upgrade {
            body.done();
        }
        body
    }

    fn done(&mut self) {
        self.decoder = Decoder::Done;
        if let (Some(conn), Some(slot)) = (self.conn.take(), self.slot.take())
            && self.reusable
            && conn.buf.is_empty()
        {
            pool::put_h1(conn, slot);
        }
    }

    /// For a 101 answer: the upstream socket and any bytes already read after the head.
    pub fn into_upgraded(mut self) -> Option<(UpStream, Bytes)> {
        self.slot = None;
        self.conn.take().map(Conn::into_upgraded)
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the upstream closed the connection in the middle of the body",
    )
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if this.decoder.is_done() {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(Some(Err(eof())));
            };
            match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Frame(frame)) => {
                    if this.decoder.is_done() {
                        this.done();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Decoded::End) => {
                    this.done();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {
                    conn.buf.reserve(READ_SIZE);
                    let n = ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut conn.stream),
                        cx,
                        &mut conn.buf
                    ))?;
                    if n == 0 {
                        this.conn = None;
                        if this.decoder == Decoder::UntilClose {
                            this.decoder = Decoder::Done;
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Err(eof())));
                    }
                }
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_encoded_with_our_framing() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(HOST, HeaderValue::from_static("ignored"));
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::POST,
            "/p?q=1",
            &HeaderValue::from_static("example.com"),
            &h,
            Some(12),
            false,
            None,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\ncontent-length: 12\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::PUT,
            "/",
            &HeaderValue::from_static("h"),
            &HeaderMap::new(),
            None,
            true,
            None,
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("transfer-encoding: chunked\r\n\r\n")
        );
    }

    #[test]
    fn forwarded_heads_drop_hop_by_hop_and_add_forwarding() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("expect", "100-continue"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "old"),
            ("via", "1.0 corp"),
            ("x-app", "a"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let ip = HeaderValue::from_static("192.0.2.1");
        let id = HeaderValue::from_static("rid");
        let fwd = Forwarded {
            client_ip: &ip,
            proto: "http",
            host: Some(HeaderValue::from_static("public.example")),
            request_id: &id,
            via: "1.1 portico",
            upgrade: false,
        };
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::GET,
            "/x",
            &HeaderValue::from_static("up"),
            &h,
            None,
            false,
            Some(&fwd),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nhost: up\r\nte: trailers\r\nvia: 1.0 corp\r\nx-app: a\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: public.example\r\nvia: 1.1 portico\r\nx-request-id: rid\r\n\r\n"
        );
    }

    #[test]
    fn response_hop_by_hop_headers_are_dropped_while_parsing() {
        let (_, parts, _) = parse(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\nkeep-alive: 5\r\nx-app: a\r\ncontent-length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        let mut names: Vec<_> = parts.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-length", "x-app"]);
        let (_, parts, _) = parse(
            "HTTP/1.1 101 Switching\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(parts.headers["connection"], "upgrade");
        assert_eq!(parts.headers["upgrade"], "websocket");
    }

    fn parse(raw: &str, method: Method) -> Result<Option<((), Parts, Framing)>, Error> {
        parse_head(&mut BytesMut::from(raw), &method).map(|o| o.map(|(p, f)| ((), p, f)))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &str, m: Method| parse(raw, m).unwrap().unwrap().2;
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::GET),
            Framing::Length {
                len: 5,
                reusable: true
            }
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD),
            Framing::Empty { reusable: true }
        );
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
            Framing::Empty { reusable: true }
        );
        assert_eq!(
            f(
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                Method::GET
            ),
            Framing::Empty { reusable: true }
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Method::GET
            ),
            Framing::Chunked { reusable: true }
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                Method::GET
            ),
            Framing::Chunked { reusable: false }
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\n\r\n", Method::GET),
            Framing::UntilClose
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET),
            Framing::Length {
                len: 1,
                reusable: false
            }
        );
        assert_eq!(
            f(
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                Method::GET
            ),
            Framing::Length {
                len: 1,
                reusable: true
            }
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                Method::GET
            ),
            Framing::Length {
                len: 1,
                reusable: false
            }
        );
        assert_eq!(
            f(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
                Method::GET
            ),
            Framing::Upgrade
        );
        assert!(
            parse("HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
                .unwrap()
                .is_none()
        );
        assert!(
            parse(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        for coding in ["gzip", "gzip, chunked", "chunked, chunked", "chunked, gzip"] {
            let raw = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {coding}\r\n\r\n");
            assert!(parse(&raw, Method::GET).is_err(), "{coding}");
        }
        assert!(parse("NOT HTTP\r\n\r\n", Method::GET).is_err());
    }

    proptest::proptest! {
        #[test]
        fn response_heads_of_any_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = parse_head(&mut buf, &Method::GET);
        }

        #[test]
        fn plausible_heads_parse_or_fail_cleanly(
            status in 100u16..600,
            name in "[a-zA-Z-]{1,12}",
            value in "[ -~]{0,20}",
            len in proptest::option::of(0u64..1000),
        ) {
            let mut raw = format!("HTTP/1.1 {status} X\r\n{name}: {value}\r\n");
            if let Some(l) = len {
                raw.push_str(&format!("content-length: {l}\r\n"));
            }
            raw.push_str("\r\n");
            let mut buf = BytesMut::from(raw.as_str());
            let _ = parse_head(&mut buf, &Method::GET);
        }
    }
}
