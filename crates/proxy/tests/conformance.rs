//! HTTP/1.1 as RFC 9110 and 9112 have it, the same on `http` and `https` listeners: raw
//! requests, each with the status it must get and, when it passes, what the backend must
//! see; interim responses, 204s, trailers and cookies on their way through.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Gw, service};
use http::{Method, Version};
use portico_testkit::client::{raw, raw_on, request};
use portico_testkit::{Canned, Client, Recorded, Upstream};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio_rustls::TlsConnector;

/// A CA, one leaf for `localhost` written as PEM files, and a client trusting the CA.
struct Pki {
    _dir: TempDir,
    crt: std::path::PathBuf,
    key: std::path::PathBuf,
    connector: TlsConnector,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = TempDir::new().unwrap();
        let crt = dir.path().join("leaf.crt");
        let key_file = dir.path().join("leaf.key");
        std::fs::write(&crt, leaf.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            _dir: dir,
            crt,
            key: key_file,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }
}

/// A gateway with the same routes on an `http` listener (`web`) and an `https` one
/// (`secure`).
struct Both {
    gw: Gw,
    pki: Pki,
}

impl Both {
    /// `routes`: the routes and services, shared by both listeners.
    async fn start(routes: &str) -> Self {
        let pki = Pki::new();
        let cfg = format!(
            "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\n\
             [[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1\"\nport = 0\n\
             [listeners.tls]\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n{routes}",
            pki.crt.display(),
            pki.key.display(),
        );
        Self {
            gw: Gw::start(&cfg).await,
            pki,
        }
    }

    /// Sends `bytes` over `listener` and returns what came back until the gateway closed.
    async fn raw(&self, listener: &str, bytes: &[u8]) -> String {
        let addr = self.gw.addr(listener);
        if listener == "web" {
            return raw(addr, bytes).await;
        }
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = self
            .pki
            .connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        raw_on(tls, bytes).await
    }
}

/// The status code of a raw answer.
fn status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {answer:?}"))
}

/// One raw request and what must come of it.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// When the request passes: a check of what the backend received.
    seen: Option<fn(&Recorded)>,
}

fn case(name: &'static str, request: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        name,
        request: request.into(),
        status,
        seen: None,
    }
}

fn passes(name: &'static str, request: impl Into<Vec<u8>>, seen: fn(&Recorded)) -> Case {
    Case {
        name,
        request: request.into(),
        status: 200,
        seen: Some(seen),
    }
}

/// A GET with `headers` (each ending in CRLF) between `Host` and `Connection: close`.
fn get(headers: &str) -> String {
    format!("GET /t HTTP/1.1\r\nHost: h\r\n{headers}Connection: close\r\n\r\n")
}

/// A GET whose head is exactly `len` bytes.
fn get_of_len(len: usize) -> String {
    let bare = get("x-pad: \r\n").len();
    get(&format!("x-pad: {}\r\n", "a".repeat(len - bare)))
}

/// A chunked POST with `body` as it is on the wire.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out =
        b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    out.extend_from_slice(body);
    out
}

/// A POST with `Transfer-Encoding: coding` and a chunked "hello".
fn coded(coding: &str) -> String {
    format!(
        "POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {coding}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
}

fn hello(r: &Recorded) {
    assert_eq!(r.body, "hello");
}

fn cases() -> Vec<Case> {
    const LIMIT: usize = 64 * 1024;
    vec![
        // Item 28: one HTTP/1.1 on both listeners.
        case("no Host", "GET /t HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        case("two Hosts", get("Host: other\r\n"), 400),
        passes("a head of exactly 64 KiB", get_of_len(LIMIT), |r| {
            assert_eq!(r.headers["x-pad"].len(), LIMIT - get("x-pad: \r\n").len());
        }),
        case("a head one byte over 64 KiB", get_of_len(LIMIT + 1), 431),
        // Item 29: chunk-size = 1*HEXDIG [ chunk-ext ] CRLF, nothing else.
        passes("chunked", chunked(b"5\r\nhello\r\n0\r\n\r\n"), hello),
        passes(
            "a 17-digit zero-padded chunk size",
            chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
            hello,
        ),
        passes(
            "chunk extensions, tokens and quoted strings",
            chunked(b"5 ; a = b;c=\"x \\\" y\";d\r\nhello\r\n0;e\r\n\r\n"),
            hello,
        ),
        case("a plus sign", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
        case("an LF before the size", chunked(b"\n5\r\nhello\r\n0\r\n\r\n"), 400),
        case("a space before the size", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
        case("a form feed after the size", chunked(b"5\x0c\r\nhello\r\n0\r\n\r\n"), 400),
        case("NUL in an extension", chunked(b"5;a\x00b\r\nhello\r\n0\r\n\r\n"), 400),
        case("CR in an extension", chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), 400),
        case("LF in an extension", chunked(b"5;a\nb\r\nhello\r\n0\r\n\r\n"), 400),
        case("a bare LF after the size", chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
        case("a bare LF after the data", chunked(b"5\r\nhello\n0\r\n\r\n"), 400),
        case("a size over 64 bits", chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n"), 400),
        // Item 29: Transfer-Encoding is exactly one final chunked.
        case("chunked twice", coded("chunked, chunked"), 400),
        case("chunked, then gzip", coded("chunked, gzip"), 400),
        case("gzip alone", coded("gzip"), 400),
        case("gzip, then chunked", coded("gzip, chunked"), 501),
        // Item 31: framing fields never travel in trailers.
        passes(
            "trailers with framing fields",
            chunked(b"5\r\nhello\r\n0\r\nx-sum: 42\r\ncontent-length: 5\r\ntransfer-encoding: gzip\r\n\r\n"),
            |r| {
                hello(r);
                let t = r.trailers.as_ref().expect("trailers reach the backend");
                assert_eq!(t["x-sum"], "42");
                assert!(!t.contains_key("content-length"), "{t:?}");
                assert!(!t.contains_key("transfer-encoding"), "{t:?}");
            },
        ),
        // Item 31: HTTP/1.x with x > 1 is HTTP/1.1; `*` is for OPTIONS only.
        passes(
            "HTTP/1.9",
            "GET /t HTTP/1.9\r\nHost: h\r\nConnection: close\r\n\r\n",
            |r| {
                assert_eq!(r.version, Version::HTTP_11);
                assert_eq!(r.uri.path(), "/t");
            },
        ),
        case("GET *", "GET * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 400),
        // Framing and smuggling: one length, one way to tell it, clean header lines.
        case(
            "two Content-Lengths that differ",
            "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!",
            400,
        ),
        case(
            "one Content-Length listing two values",
            "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\nConnection: close\r\n\r\nhello!",
            400,
        ),
        case(
            "Content-Length with Transfer-Encoding",
            "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "a Content-Length that is not a number",
            "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 5x\r\nConnection: close\r\n\r\nhello",
            400,
        ),
        case(
            "a negative Content-Length",
            "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\nConnection: close\r\n\r\nhello",
            400,
        ),
        case("an obs-fold continuation line", get("x-a: 1\r\n folded\r\n"), 400),
        case("a space before the colon", get("x-a : 1\r\n"), 400),
        case("NUL in a header value", get("x-a: 1\x002\r\n"), 400),
        case("CR alone in a header value", get("x-a: 1\r2\r\n"), 400),
        case("a header name with a space", get("x a: 1\r\n"), 400),
        passes(
            "bare LF line endings (RFC 9112 section 2.2 lets a recipient take them)",
            "GET /t HTTP/1.1\nHost: h\nx-a: 1\nConnection: close\n\n",
            |r| {
                assert_eq!(r.uri.path(), "/t");
                assert_eq!(r.headers["x-a"], "1");
            },
        ),
        case("POST *", "POST * HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 400),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_get_the_same_answer_over_http_and_https() {
    let up = Upstream::echo().await;
    let both = Both::start(&format!(
        "{}\n[[routes]]\nforward = {{ service = \"s\" }}\n",
        service("s", &[up.addr], "")
    ))
    .await;
    let mut failures = Vec::new();
    for listener in ["web", "secure"] {
        for c in cases() {
            let before = up.count();
            let answer = both.raw(listener, &c.request).await;
            let got = status(&answer);
            if got != c.status {
                let head = answer.split("\r\n\r\n").next().unwrap_or("");
                failures.push(format!(
                    "{listener}: {}: {got} instead of {}\n  {head:?}",
                    c.name, c.status
                ));
                continue;
            }
            // A refused request never reaches the backend whole: either not at all, or (a
            // body found broken while it streamed) cut off, never ended cleanly.
            if c.seen.is_none() && up.count() > before {
                let seen = up.last();
                if seen.body_complete {
                    failures.push(format!(
                        "{listener}: {}: refused, yet the backend received it whole: {seen:?}",
                        c.name
                    ));
                }
            }
            if let Some(check) = c.seen {
                assert_eq!(up.count(), before + 1, "{listener}: {}", c.name);
                let seen = up.last();
                let checked = std::panic::catch_unwind(|| check(&seen));
                if checked.is_err() {
                    failures.push(format!("{listener}: {}: the backend saw {seen:?}", c.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_reach_http1_clients() {
    let canned = Canned::start(
        &b"HTTP/1.1 100 Continue\r\n\r\n\
           HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
           HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"[..],
    )
    .await;
    let both = Both::start(&format!(
        "{}\n[[routes]]\nforward = {{ service = \"s\" }}\n",
        service("s", &[canned.addr], "")
    ))
    .await;
    for listener in ["web", "secure"] {
        let answer = both.raw(listener, get("").as_bytes()).await;
        assert!(
            answer.starts_with(
                "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
            ),
            "{listener}: {answer}"
        );
        assert!(answer.ends_with("\r\n\r\nok"), "{listener}: {answer}");
        assert!(!answer.contains("100 Continue"), "{listener}: {answer}");
        // HTTP/1.0 clients get no interim answers (RFC 9110 section 15.2).
        let answer = both
            .raw(listener, b"GET /t HTTP/1.0\r\nHost: h\r\n\r\n")
            .await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{listener}: {answer}"
        );
    }
    assert_eq!(canned.heads().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_answers_say_no_length() {
    let no_content = Canned::start(
        &b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
    )
    .await;
    let not_modified = Canned::start(
        &b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"[..],
    )
    .await;
    let both = Both::start(&format!(
        "{}{}\n[[routes]]\nmatch = {{ path = {{ prefix = \"/fixed\" }} }}\nfixed_response = {{ status = 204 }}\n\
         [[routes]]\nmatch = {{ path = {{ prefix = \"/304\" }} }}\nforward = {{ service = \"nm\" }}\n\
         [[routes]]\nforward = {{ service = \"nc\" }}\n",
        service("nc", &[no_content.addr], ""),
        service("nm", &[not_modified.addr], ""),
    ))
    .await;
    for listener in ["web", "secure"] {
        for path in ["/fixed", "/up"] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
            let answer = both.raw(listener, req.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 204"),
                "{listener} {path}: {answer}"
            );
            assert!(
                !answer.to_ascii_lowercase().contains("content-length"),
                "{listener} {path}: {answer}"
            );
        }
        // A 304 keeps its length: that of the representation a 200 would have sent.
        let answer = both
            .raw(
                listener,
                b"GET /304 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            )
            .await;
        assert!(
            answer.starts_with("HTTP/1.1 304") && answer.contains("content-length: 5\r\n"),
            "{listener}: {answer}"
        );
    }
    // And over HTTP/2.
    let r = Client::new()
        .get_h2(&format!("http://{}/fixed", both.gw.addr("web")))
        .await;
    assert_eq!(r.status, 204);
    assert!(!r.headers.contains_key("content-length"), "{:?}", r.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_fields_in_upstream_trailers_stop_at_the_gateway() {
    let canned = Canned::start(
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\nconnection: close\r\n\r\n\
           4\r\nbody\r\n0\r\nx-sum: 42\r\ncontent-length: 99\r\ntransfer-encoding: gzip\r\nhost: elsewhere\r\n\r\n"[..],
    )
    .await;
    let both = Both::start(&format!(
        "{}\n[[routes]]\nforward = {{ service = \"s\" }}\n",
        service("s", &[canned.addr], "")
    ))
    .await;
    for listener in ["web", "secure"] {
        let answer = both.raw(listener, get("TE: trailers\r\n").as_bytes()).await;
        assert!(
            answer.ends_with("\r\n\r\n4\r\nbody\r\n0\r\nx-sum: 42\r\n\r\n"),
            "{listener}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_fields_are_joined_for_http1_upstreams() {
    let up = Upstream::echo().await;
    let cfg = format!(
        "{}{}{}\n[[routes]]\nmatch = {{ path = {{ prefix = \"/h2\" }} }}\nforward = {{ service = \"h2\" }}\n\
         [[routes]]\nmatch = {{ path = {{ prefix = \"/edited\" }} }}\nforward = {{ service = \"h1\" }}\n\
         request_headers = {{ set = {{ \"x-env\" = \"prod\" }} }}\n\
         [[routes]]\nforward = {{ service = \"h1\" }}\n",
        common::WEB,
        service("h1", &[up.addr], ""),
        service("h2", &[up.addr], "protocol = \"http2\""),
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let cookies = [("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")];
    // From HTTP/2, where each cookie may be its own field (RFC 9113 section 8.2.3), to an
    // HTTP/1.1 upstream: one field. Also with route header edits (the map path).
    for path in ["/x", "/edited"] {
        let r = client
            .send_h2(request(Method::GET, &gw.url(path), Bytes::new(), &cookies))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let seen = up.last();
        let values: Vec<_> = seen.headers.get_all("cookie").iter().collect();
        assert_eq!(values, ["a=1; b=2; c=3"], "{path}: {:?}", seen.headers);
    }
    // One field stays as it is.
    client
        .send_h2(request(
            Method::GET,
            &gw.url("/x"),
            Bytes::new(),
            &cookies[..1],
        ))
        .await
        .unwrap();
    let seen = up.last();
    let values: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(values, ["a=1"]);
    // To an HTTP/2 upstream the fields may stay apart; they all arrive.
    client
        .send_h2(request(Method::GET, &gw.url("/h2"), Bytes::new(), &cookies))
        .await
        .unwrap();
    let seen = up.last();
    let all: Vec<_> = seen
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.join("; "), "a=1; b=2; c=3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_over_tls_arrive_whole_to_a_slow_reader() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LEN: u64 = 8 << 20;
    let up = Upstream::start(|_| portico_testkit::Reply::Stream {
        status: http::StatusCode::OK,
        len: LEN,
    })
    .await;
    let both = Both::start(&format!(
        "{}\n[[routes]]\nforward = {{ service = \"s\" }}\n",
        service("s", &[up.addr], "")
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(both.gw.addr("secure"))
        .await
        .unwrap();
    let mut tls = both
        .pki
        .connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // Keep-alive: the connection stays open after the answer, so nothing but the gateway's
    // own writes can push its last bytes out.
    tls.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0u64;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {got} body bytes");
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            got += n as u64;
        } else {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                got += (head.len() - end - 4) as u64;
            }
        }
        if got >= LEN {
            break;
        }
        // A slow reader: the gateway's socket fills and its writes wait.
        tokio::task::yield_now().await;
    }
    assert_eq!(got, LEN);
}
