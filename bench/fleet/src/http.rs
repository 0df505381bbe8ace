//! One HTTP/1.1 connection to the control plane, kept alive between requests like a
//! pooled client's, and reopened when the server closed it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::Error;

/// The largest body accepted, inflated (a runaway answer fails instead of eating memory).
const MAX_BODY: u64 = 256 << 20;

/// A connection of its own (opened on first use).
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// How many times a TCP connection was opened.
    pub connects: u64,
}

/// A whole answer.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as sent (possibly gzip).
    pub body: Bytes,
}

impl Reply {
    /// The body, inflated when it came as gzip.
    pub fn decoded(&self) -> Result<Vec<u8>, Error> {
        use std::io::Read as _;
        let gzip = self
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if !gzip {
            return Ok(self.body.to_vec());
        }
        let mut out = Vec::with_capacity(self.body.len() * 4);
        flate2::read::GzDecoder::new(&self.body[..])
            .take(MAX_BODY)
            .read_to_end(&mut out)
            .map_err(Error::Gzip)?;
        Ok(out)
    }

    /// The content type, without parameters.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        Ok(serde_json::from_slice(&self.decoded()?)?)
    }

    /// The start of the body, for an error message.
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(300).collect()
    }
}

impl Conn {
    /// A connection to `addr`, opened on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            sender: None,
            connects: 0,
        }
    }

    async fn open(&mut self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: self.addr,
                source,
            })?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.connects += 1;
        Ok(sender)
    }

    /// Sends one request and reads the whole answer within `timeout`.
    ///
    /// A kept-alive connection the server closed meanwhile fails the first request sent on
    /// it: as a pooled client does, that request is sent once more on a new connection.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        match self.try_send(&method, path, headers, &body, timeout).await {
            Err(Error::Http(_)) if reused => {
                self.sender = None;
                self.try_send(&method, path, headers, &body, timeout).await
            }
            other => other,
        }
    }

    async fn try_send(
        &mut self,
        method: &Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: &Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.open().await?,
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.clone().unwrap_or_default()))?;
        let exchange = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Error>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let reply = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        // Kept for the next request unless the server said it closes.
        let closes = reply
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closes {
            self.sender = Some(sender);
        }
        Ok(reply)
    }
}
