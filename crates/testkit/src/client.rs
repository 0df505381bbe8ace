//! An HTTP client for tests: HTTP/1.1 and h2c (prior knowledge), whole responses with
//! trailers, plus a raw TCP helper for malformed requests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole response.
#[derive(Clone, Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Version.
    pub version: Version,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_owned())
    }
}

/// HTTP/1.1 and h2c clients with connection pooling.
#[derive(Clone)]
pub struct Client {
    h1: Legacy<HttpConnector, Full<Bytes>>,
    h2: Legacy<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// New clients.
    pub fn new() -> Self {
        let h1 = Legacy::builder(TokioExecutor::new()).build_http();
        let h2 = Legacy::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        Self { h1, h2 }
    }

    /// GET over HTTP/1.1; panics on a transport error.
    pub async fn get(&self, url: &str) -> Resp {
        self.send(get(url))
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// GET over h2c; panics on a transport error.
    pub async fn get_h2(&self, url: &str) -> Resp {
        self.send_h2(get(url))
            .await
            .unwrap_or_else(|e| panic!("GET {url} (h2c): {e}"))
    }

    /// Sends over HTTP/1.1.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        collect(self.h1.request(req).await.map_err(|e| format!("{e:?}"))?).await
    }

    /// Sends over h2c.
    pub async fn send_h2(&self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        collect(self.h2.request(req).await.map_err(|e| format!("{e:?}"))?).await
    }
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Result<Resp, String> {
    let (parts, body) = resp.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body: collected.to_bytes(),
        trailers,
    })
}

/// A GET request.
pub fn get(url: &str) -> Request<Full<Bytes>> {
    request(Method::GET, url, Bytes::new(), &[])
}

/// A request with a body and headers.
pub fn request(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).expect("valid request")
}

/// Writes `bytes` to `addr` and returns everything read until the peer closes or is quiet
/// for 1 s.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_on(TcpStream::connect(addr).await.expect("connect"), bytes).await
}

/// [`raw`] over a stream already open (a TLS session, say).
pub async fn raw_on<S>(mut s: S, bytes: &[u8]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
