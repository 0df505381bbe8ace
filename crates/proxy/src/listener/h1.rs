//! HTTP/1.1 for client connections, written for the proxy path, over plain TCP and TLS
//! alike (one parser, one set of limits and rejections for `http` and `https`). One task per
//! connection reads a request head, runs the pipeline, writes the response and reads the
//! next. The request body, when there is one, takes the connection's read side with it and
//! gives it back when it ends; buffers are released while the connection waits for a
//! request, so an idle connection holds next to no memory.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::Shared;
use super::transport::{Reader, Transport};
use crate::body::{ClientBody, ResponseBody};
use crate::codec::{self, CodingError, Codings, Decoded, Decoder};
use crate::exchange::Interim;
use crate::fault::{ErrorKind, ProxyError, error_response};
use crate::headers;
use crate::pipeline::{self, Conn, Tunnel};

/// Most request headers accepted.
const MAX_HEADERS: usize = 100;
/// First read buffer of a request; it grows up to the header limit.
const READ_SIZE: usize = 4096;
/// Unread request body drained to keep a connection, at most.
const MAX_DRAIN: u64 = 64 * 1024;

/// The connection's read side: the socket half and what was read but not used yet.
#[derive(Debug)]
struct ReadSide {
    rd: Reader,
    buf: BytesMut,
    /// The body that had it stopped before its end (bytes still to skip).
    unread: Decoder,
}

/// Where a request body returns the read side.
type Home = Arc<Mutex<Option<ReadSide>>>;

/// A client's request body, read from the connection as it is polled.
#[derive(Debug)]
pub struct RequestBody {
    side: Option<ReadSide>,
    decoder: Decoder,
    home: Home,
}

/// Why a request could not be read.
#[derive(Debug)]
enum HeadError {
    /// The head is malformed or breaks HTTP/1.1's framing rules.
    Bad(&'static str),
    /// The head is larger than the limit.
    TooLarge,
    /// A transfer coding the gateway does not decode (RFC 9112 section 6.1: 501).
    NotImplemented(&'static str),
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    request: Request<()>,
    framing: Option<Decoder>,
    keep_alive: bool,
    expect_continue: bool,
}

/// Serves a client connection (`scheme`: `http` or `https`) until it closes, goes idle, or
/// the listener stops.
pub async fn serve<S: Transport>(
    stream: S,
    peer: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    idle: Duration,
    max_header: usize,
) {
    let mut conn = Conn::new(peer, scheme);
    conn.listener_port = shared.port;
    // Interim answers of HTTP/1.1 upstreams (103 Early Hints) come back through here.
    conn.interim = Some(Interim::default());
    let (rd, mut wr) = stream.split();
    let home: Home = Arc::new(Mutex::new(None));
    let mut side = Some(ReadSide {
        rd,
        buf: BytesMut::new(),
        unread: Decoder::Done,
    });
    let mut stop = shared.stop.subscribe();
    let mut out: Vec<u8> = Vec::new();
    loop {
        let Some(mut rs) = side.take().or_else(|| lock(&home).take()) else {
            return;
        };
        if !rs.unread.is_done() && !drain(&mut rs, idle).await {
            return;
        }
        if rs.buf.is_empty() {
            // Waiting for the next request: hold no buffer meanwhile.
            rs.buf = BytesMut::new();
            out = Vec::new();
        }
        let head = match read_head(&mut rs, idle, max_header, &mut stop).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                let (kind, detail) = match e {
                    HeadError::Bad(what) => (ErrorKind::BadRequest, what),
                    HeadError::NotImplemented(what) => (ErrorKind::NotImplemented, what),
                    HeadError::TooLarge => (
                        ErrorKind::HeadersTooLarge,
                        "the request headers are larger than the listener's limit",
                    ),
                };
                let resp = error_response(
                    &ProxyError::new(kind, detail),
                    false,
                    Some(&headers::new_request_id()),
                );
                let _ = write_response(
                    &mut wr,
                    &mut out,
                    resp,
                    &Method::GET,
                    Version::HTTP_11,
                    false,
                    false,
                )
                .await;
                // Over TLS, close_notify: the client can tell the answer is complete.
                let _ = wr.shutdown().await;
                return;
            }
        };
        if head.expect_continue && head.framing.is_some() {
            let sent = wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            if sent.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let method = head.request.method().clone();
        let version = head.request.version();
        let trailers_ok = head
            .request
            .headers()
            .get(TE)
            .is_some_and(|v| headers_contain(v, b"trailers"));
        let (parts, ()) = head.request.into_parts();
        let body = match head.framing {
            Some(decoder) => {
                let b = RequestBody {
                    side: Some(rs),
                    decoder,
                    home: home.clone(),
                };
                ClientBody::H1(b)
            }
            None => {
                side = Some(rs);
                ClientBody::Empty
            }
        };
        let lr = shared.state.load_full();
        // Pinned where it is made: the request's future is kilobytes, and moving it into
        // `relay_interim` would copy it on every request.
        let handled = pipeline::handle(lr, &conn, Request::from_parts(parts, body));
        tokio::pin!(handled);
        let Some(mut resp) = relay_interim(handled, &conn, &mut wr, &mut out).await else {
            return;
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let tunnel = resp
                .extensions_mut()
                .remove::<Tunnel>()
                .and_then(|t| t.take());
            let ok = write_response(&mut wr, &mut out, resp, &method, version, true, false)
                .await
                .unwrap_or(false);
            let rs = side.take().or_else(|| lock(&home).take());
            if let (true, Some((upstream, leftover)), Some(rs)) = (ok, tunnel, rs) {
                Box::pin(run_tunnel::<S>(rs, wr, upstream, leftover)).await;
            }
            return;
        }
        // A stalled body is still unread: drop the connection rather than wait to drain it.
        let keep_alive =
            head.keep_alive && !*stop.borrow() && resp.status() != StatusCode::REQUEST_TIMEOUT;
        match write_response(
            &mut wr,
            &mut out,
            resp,
            &method,
            version,
            keep_alive,
            trailers_ok,
        )
        .await
        {
            Ok(true) if keep_alive => {}
            _ => {
                let _ = wr.shutdown().await;
                return;
            }
        }
    }
}

/// Runs the pipeline for one request; interim answers from the upstream go out meanwhile, in
/// order, before the final one. `None` when the client is gone.
async fn relay_interim<W: AsyncWrite + Unpin, F>(
    mut handled: Pin<&mut F>,
    conn: &Conn,
    wr: &mut W,
    out: &mut Vec<u8>,
) -> Option<http::Response<ResponseBody>>
where
    F: std::future::Future<Output = http::Response<ResponseBody>>,
{
    let Some(interim) = &conn.interim else {
        return Some(handled.await);
    };
    let resp = loop {
        tokio::select! {
            biased;
            resp = handled.as_mut() => break resp,
            head = std::future::poll_fn(|cx| interim.poll_next(cx)) => {
                write_interim(wr, out, &head).await.ok()?;
            }
        }
    };
    while let Some(head) = interim.take() {
        write_interim(wr, out, &head).await.ok()?;
    }
    Some(resp)
}

/// Writes a 1xx response head.
async fn write_interim<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    head: &http::response::Parts,
) -> io::Result<()> {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let written = wr.write_all(out).await;
    out.clear();
    written?;
    wr.flush().await
}

fn lock(home: &Home) -> std::sync::MutexGuard<'_, Option<ReadSide>> {
    home.lock().unwrap_or_else(|p| p.into_inner())
}

fn headers_contain(v: &HeaderValue, token: &[u8]) -> bool {
    v.as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Skips what a request body left unread, up to a limit; false when the connection must close.
async fn drain(rs: &mut ReadSide, idle: Duration) -> bool {
    let mut skipped = 0u64;
    let deadline = tokio::time::Instant::now() + idle;
    loop {
        match rs.unread.decode(&mut rs.buf) {
            Ok(Decoded::Frame(f)) => {
                skipped += f.data_ref().map_or(0, |d| d.len() as u64);
                if skipped > MAX_DRAIN {
                    return false;
                }
            }
            Ok(Decoded::End) => return true,
            Ok(Decoded::NeedMore) => {
                rs.buf.reserve(READ_SIZE);
                match tokio::time::timeout_at(deadline, rs.rd.read_buf(&mut rs.buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return false,
                }
            }
            Err(_) => return false,
        }
    }
}

/// Reads and parses the next request head. `Ok(None)`: the client closed or stayed idle,
/// or the listener stops while nothing is pending.
async fn read_head(
    rs: &mut ReadSide,
    idle: Duration,
    max_header: usize,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Head>, HeadError> {
    let started = Instant::now();
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        if !rs.buf.is_empty() {
            if let Some(head) = parse_head(&mut rs.buf, max_header)? {
                return Ok(Some(head));
            }
            if rs.buf.len() > max_header {
                return Err(HeadError::TooLarge);
            }
        }
        if rs.buf.capacity() - rs.buf.len() < 1024 {
            rs.buf.reserve(READ_SIZE.min(max_header + 1024));
        }
        if *stop.borrow() && rs.buf.is_empty() {
            return Ok(None);
        }
        tokio::select! {
            biased;
            read = rs.rd.read_buf(&mut rs.buf) => match read {
                Ok(0) | Err(_) => {
                    if rs.buf.is_empty() {
                        return Ok(None);
                    }
                    return Err(HeadError::Bad("the connection closed in the middle of a request head"));
                }
                Ok(_) => {}
            },
            _ = stop.changed(), if rs.buf.is_empty() => return Ok(None),
            _ = sleep.as_mut() => {
                // Idle between requests, or a head that takes too long to arrive.
                let _ = started;
                return Ok(None);
            }
        }
    }
}

/// What parsing a request head said, for the fuzz targets (`portico_proxy::fuzz`).
pub(crate) enum HeadOutcome {
    /// A complete head, this many bytes long on the wire.
    Complete {
        /// Bytes of the head.
        consumed: usize,
    },
    /// More bytes are needed.
    Partial,
    /// Refused (the client gets 400, 431 or 501).
    Refused,
}

/// Parses `data` as the start of a request (the fuzz targets' view of [`parse_head`]).
pub(crate) fn probe_head(data: &[u8], max_header: usize) -> HeadOutcome {
    let mut buf = BytesMut::from(data);
    match parse_head(&mut buf, max_header) {
        Ok(Some(_)) => HeadOutcome::Complete {
            consumed: data.len() - buf.len(),
        },
        Ok(None) => HeadOutcome::Partial,
        Err(_) => HeadOutcome::Refused,
    }
}

/// Parses a complete request head at the start of `buf` and consumes it.
fn parse_head(buf: &mut BytesMut, max_header: usize) -> Result<Option<Head>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max_header => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) if later_minor_version(buf) => {
            return parse_head(buf, max_header);
        }
        Err(_) => return Err(HeadError::Bad("malformed request line or header")),
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Bad("bad method"))?;
    if method == Method::CONNECT {
        return Err(HeadError::Bad("CONNECT is not supported"));
    }
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let target = req.path.unwrap_or("");
    let target_range = (target.as_ptr() as usize - base, target.len());
    let mut kept: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut close = version == Version::HTTP_10;
    let mut expect_continue = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Bad("bad header name"))?;
        if name == CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError::Bad("bad content-length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(HeadError::Bad("conflicting content-length headers"));
            }
            content_length = Some(n);
        } else if name == TRANSFER_ENCODING {
            codings.add(h.value);
        } else if name == CONNECTION {
            for t in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        } else if name == EXPECT {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name == HOST {
            hosts += 1;
        }
        let start = h.value.as_ptr() as usize - base;
        kept.push((name, start, start + h.value.len()));
    }
    let chunked = match codings.chunked() {
        Ok(chunked) => chunked,
        // Without chunked last, once, the body's length cannot be known (RFC 9112 6.3).
        Err(CodingError::NotChunkedLast) => {
            return Err(HeadError::Bad(
                "transfer-encoding must end in chunked, which appears once",
            ));
        }
        // gzip, deflate and the like would have to be decoded, and the gateway does not.
        Err(CodingError::Unsupported) => {
            return Err(HeadError::NotImplemented(
                "transfer codings other than chunked are not implemented",
            ));
        }
    };
    if chunked && (content_length.is_some() || version == Version::HTTP_10) {
        // A request smuggling vector (RFC 9112 section 6.1): refuse rather than guess.
        return Err(HeadError::Bad(
            "transfer-encoding together with content-length (or on HTTP/1.0)",
        ));
    }
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(HeadError::Bad(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_range.0..target_range.0 + target_range.1))
        .map_err(|_| HeadError::Bad("bad request target"))?;
    if uri.scheme().is_none() && !uri.path().starts_with('/') && uri.path() != "*" {
        return Err(HeadError::Bad("bad request target"));
    }
    let mut map = HeaderMap::with_capacity(kept.len());
    for (name, start, end) in kept {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| HeadError::Bad("bad header value"))?;
        map.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    let framing = if chunked {
        Some(Decoder::ChunkSize)
    } else {
        content_length.filter(|n| *n > 0).map(Decoder::Length)
    };
    Ok(Some(Head {
        request,
        framing,
        keep_alive: !close,
        expect_continue,
    }))
}

/// True when `buf` starts with a request line of HTTP/1.x, x > 1, which then reads HTTP/1.1:
/// a later minor version is compatible and is answered as the highest the server speaks
/// (RFC 9110 section 2.5). httparse knows only 1.0 and 1.1. The line may be incomplete.
fn later_minor_version(buf: &mut BytesMut) -> bool {
    // Empty lines before a request line are ignored (RFC 9112 section 2.2).
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let end = buf[start..]
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .map_or(buf.len(), |n| start + n);
    let Some(sp) = buf[start..end].iter().rposition(|b| *b == b' ') else {
        return false;
    };
    let v = start + sp + 1;
    if end - v != 8 || &buf[v..v + 7] != b"HTTP/1." || !matches!(buf[v + 7], b'2'..=b'9') {
        return false;
    }
    buf[v + 7] = b'1';
    true
}

/// Writes a response; `Ok(true)` when the connection can serve another request.
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    resp: http::Response<ResponseBody>,
    method: &Method,
    version: Version,
    keep_alive: bool,
    trailers_ok: bool,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let exact = body.size_hint().exact();
    // Framing: the declared length, else the body's exact length, else chunked (HTTP/1.1)
    // or until close (HTTP/1.0).
    let (length, chunked, mut keep_alive) = if no_body {
        (None, false, keep_alive)
    } else if let Some(n) = declared.or(exact) {
        (Some(n), false, keep_alive)
    } else if version == Version::HTTP_11 {
        (None, true, keep_alive)
    } else {
        (None, false, false)
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || (name == CONNECTION && status != StatusCode::SWITCHING_PROTOCOLS)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&crate::clock::http_date());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        codec::decimal(out, n);
        out.extend_from_slice(b"\r\n");
    } else if no_body
        && declared.is_some()
        && status != StatusCode::NO_CONTENT
        && !status.is_informational()
    {
        // HEAD or 304: the length a GET would have. Never on 1xx and 204 (RFC 9110 8.6).
        out.extend_from_slice(b"content-length: ");
        codec::decimal(out, declared.unwrap_or(0));
        out.extend_from_slice(b"\r\n");
    } else if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !keep_alive && status != StatusCode::SWITCHING_PROTOCOLS {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if no_body {
        drop(body);
        wr.write_all(out).await?;
        wr.flush().await?;
        return Ok(keep_alive);
    }
    // Frames that are ready now are gathered behind the head and written together (the
    // usual answer is one write); the buffer goes out whenever the body has to wait or
    // holds `COALESCE` bytes.
    let mut written: u64 = 0;
    let mut chunk_head = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    loop {
        let frame = match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)))
            .await
        {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if !out.is_empty() {
                    wr.write_all(out).await?;
                    out.clear();
                }
                // What is written must reach the client before waiting on the body.
                wr.flush().await?;
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    written += data.len() as u64;
                    if length.is_some_and(|n| written > n) {
                        // More than announced: stop here and close.
                        return Ok(false);
                    }
                    if chunked {
                        chunk_head.clear();
                        codec::chunk_header(&mut chunk_head, data.len());
                        out.extend_from_slice(&chunk_head);
                    }
                    if data.len() >= COALESCE {
                        // Large frames go as they are, after what is buffered.
                        if !out.is_empty() {
                            wr.write_all(out).await?;
                            out.clear();
                        }
                        wr.write_all(&data).await?;
                    } else {
                        out.extend_from_slice(&data);
                    }
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if out.len() >= COALESCE {
                        wr.write_all(out).await?;
                        out.clear();
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            },
            Some(Err(_)) => {
                // The upstream broke off: the client must not take a short body as whole.
                if !out.is_empty() {
                    wr.write_all(out).await?;
                }
                wr.flush().await?;
                return Ok(false);
            }
            None => break,
        }
    }
    if chunked {
        let mut tail = BytesMut::new();
        codec::last_chunk(
            &mut tail,
            if trailers_ok { trailers.as_ref() } else { None },
        );
        out.extend_from_slice(&tail);
    }
    if !out.is_empty() {
        wr.write_all(out).await?;
        out.clear();
    }
    // A write can leave bytes inside the TLS session when the socket is full; the answer
    // is complete only once they are out (on plain TCP this costs nothing).
    wr.flush().await?;
    if length.is_some_and(|n| written != n) {
        keep_alive = false;
    }
    Ok(keep_alive)
}

/// Response bytes gathered before a write: large enough that a typical body goes out with
/// its head in one system call, small enough that a connection's buffer stays modest.
const COALESCE: usize = 64 * 1024;

/// After a 101: bytes both ways between the client and the upstream until either closes.
async fn run_tunnel<S: Transport>(
    rs: ReadSide,
    wr: S::Wr,
    mut upstream: crate::upstream::tls::UpStream,
    upstream_leftover: Bytes,
) {
    let Some(mut client) = S::join(rs.rd, wr) else {
        return;
    };
    if !upstream_leftover.is_empty() && client.write_all(&upstream_leftover).await.is_err() {
        return;
    }
    if !rs.buf.is_empty() && upstream.write_all(&rs.buf).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

impl RequestBody {
    fn give_back(&mut self) {
        if let Some(mut side) = self.side.take() {
            side.unread = self.decoder;
            *lock(&self.home) = Some(side);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // Unread or not, the connection's read side goes home; the server drains or closes.
        self.give_back();
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if this.decoder.is_done() {
                this.give_back();
                return Poll::Ready(None);
            }
            let Some(side) = this.side.as_mut() else {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "request body unavailable",
                ))));
            };
            match this.decoder.decode(&mut side.buf) {
                Ok(Decoded::Frame(f)) => {
                    if this.decoder.is_done() {
                        this.give_back();
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Ok(Decoded::End) => {
                    this.give_back();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {
                    side.buf.reserve(16 * 1024);
                    let n = ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut side.rd),
                        cx,
                        &mut side.buf
                    ))?;
                    if n == 0 {
                        this.side = None;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection in the middle of the body",
                        ))));
                    }
                }
                Err(e) => {
                    this.side = None;
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

    fn parse(raw: &str) -> Result<Option<Head>, HeadError> {
        parse_head(&mut BytesMut::from(raw), 64 * 1024)
    }

    fn bad(raw: &str) -> &'static str {
        match parse(raw) {
            Err(HeadError::Bad(w)) => w,
            Err(HeadError::TooLarge) => "too large",
            Err(HeadError::NotImplemented(_)) => "not implemented",
            Ok(_) => "accepted",
        }
    }

    #[test]
    fn requests_parse_with_framing_and_keep_alive() {
        let h = parse("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.uri().path_and_query().unwrap().as_str(), "/a?b=1");
        assert_eq!(h.framing, Some(Decoder::Length(5)));
        assert!(h.keep_alive);
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.framing, None);
        let h = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = parse("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Some(Decoder::ChunkSize));
        assert!(h.expect_continue && !h.keep_alive);
        let h = parse("GET http://example.com/x HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.request.uri().host(), Some("example.com"));
        assert!(
            parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none(),
            "incomplete"
        );
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        assert!(bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").contains("transfer-encoding"));
        assert_eq!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            "conflicting content-length headers"
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"),
            "bad content-length"
        );
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
                .contains("transfer-encoding")
        );
        assert!(bad("GET / HTTP/1.1\r\n\r\n").contains("Host"));
        assert!(bad("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").contains("Host"));
        assert_eq!(
            bad("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            "CONNECT is not supported"
        );
        assert_eq!(bad("GARBAGE\r\n\r\n"), "malformed request line or header");
    }

    #[test]
    fn transfer_codings_other_than_a_single_final_chunked_are_refused() {
        let te = |v: &str| {
            bad(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {v}\r\n\r\n"
            ))
        };
        assert_eq!(te("chunked"), "accepted");
        assert_eq!(te("Chunked"), "accepted");
        assert_eq!(
            te(" , chunked ,"),
            "accepted",
            "empty list elements are ignored"
        );
        assert_eq!(te("gzip, chunked"), "not implemented");
        assert_eq!(te("x-custom,chunked"), "not implemented");
        for refused in [
            "chunked, chunked",
            "chunked, gzip",
            "gzip",
            "",
            "chunked;q=1",
        ] {
            assert!(
                te(refused).contains("chunked"),
                "{refused:?}: {}",
                te(refused)
            );
        }
        // Two lines make one list.
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")
                .contains("chunked")
        );
        assert_eq!(
            bad(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            "not implemented"
        );
    }

    #[test]
    fn later_minor_versions_read_as_http_1_1() {
        let h = parse("GET / HTTP/1.9\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.request.version(), Version::HTTP_11);
        assert!(h.keep_alive);
        let h = parse("\r\nGET / HTTP/1.2\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.request.version(), Version::HTTP_11);
        assert!(parse("GET / HTTP/1.9").unwrap().is_none(), "incomplete");
        for refused in [
            "GET / HTTP/1.10\r\nHost: x\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.x\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(
                bad(refused),
                "malformed request line or header",
                "{refused}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_head(&mut BytesMut::from(&bytes[..]), 64 * 1024);
        }
    }
}
