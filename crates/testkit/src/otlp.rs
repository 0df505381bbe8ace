//! An OTLP/HTTP trace receiver on 127.0.0.1:0: reads each `POST`, decodes its protobuf
//! body and answers 200, or, when silent, takes the request and never answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_otlp::proto::{ExportTraceServiceRequest, Span, any_value};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request received: its request line, content type and decoded body.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST /v1/traces HTTP/1.1`.
    pub line: String,
    /// The `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: ExportTraceServiceRequest,
}

/// A running receiver.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:PORT/v1/traces`.
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Starts one; a `silent` one never answers.
    pub async fn start(silent: bool) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/v1/traces", l.local_addr().expect("addr"));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(serve(s, g.clone(), silent));
            }
        });
        Self { url, got, task }
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received()
            .into_iter()
            .flat_map(|r| r.body.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    /// Every span received so far, with its resource's `service.name`.
    pub fn service_spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for rs in self
            .received()
            .into_iter()
            .flat_map(|r| r.body.resource_spans)
        {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                out.push((service.clone(), span));
            }
        }
        out
    }

    /// Waits (up to 10 s) until `done` holds for the spans received, with their services.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[(String, Span)]) -> bool,
    ) -> Vec<(String, Span)> {
        for _ in 0..400 {
            let spans = self.service_spans();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let names: Vec<String> = self
            .service_spans()
            .iter()
            .map(|(svc, s)| format!("{svc}: {}", s.name))
            .collect();
        panic!("{what} never arrived; received: {names:?}");
    }

    /// Waits until `n` spans arrived, and returns them.
    pub async fn wait_spans(&self, n: usize) -> Vec<Span> {
        for _ in 0..400 {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} spans arrived: {:?}", self.spans());
    }
}

/// A span's string or integer attribute, as text.
pub fn attribute(s: &Span, key: &str) -> Option<String> {
    let v = s.attributes.iter().find(|kv| kv.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads more of the request into `buf`; false when the peer is gone.
async fn read_more(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

async fn serve(mut s: tokio::net::TcpStream, got: Arc<Mutex<Vec<Received>>>, silent: bool) {
    loop {
        let mut buf = Vec::new();
        let head_end = loop {
            if !read_more(&mut s, &mut buf).await {
                return;
            }
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap_or_default()
        };
        let len: usize = header("content-length").parse().unwrap_or(0);
        while buf.len() < head_end + len {
            if !read_more(&mut s, &mut buf).await {
                return;
            }
        }
        let body = ExportTraceServiceRequest::decode(&buf[head_end..head_end + len])
            .expect("an OTLP body");
        got.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Received {
                line: head.lines().next().unwrap_or_default().to_owned(),
                content_type: header("content-type"),
                body,
            });
        if silent {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}
