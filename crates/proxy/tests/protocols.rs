//! Protocols end to end: h2c from clients and to upstreams, gRPC (unary, streaming, errors,
//! gateway-made statuses), trailers, WebSocket, size limits, large streamed bodies and
//! malformed input.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Gw, WEB, service};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use portico_testkit::client::{raw, request};
use portico_testkit::grpc::{GrpcClient, GrpcServer};
use portico_testkit::upstream::pattern_chunk;
use portico_testkit::websocket::{WsEcho, round_trip};
use portico_testkit::{Client, Reply, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

fn listener(name: &str, protocol: &str) -> String {
    format!(
        "[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"{protocol}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_and_h2_upstreams() {
    let up = Upstream::echo().await;
    let cfg = format!(
        "{}{}{}{}\n[[routes]]\nname = \"h1\"\nmatch = {{ path = {{ prefix = \"/h1\" }} }}\nforward = {{ service = \"h1\" }}\n\
         [[routes]]\nname = \"h2\"\nmatch = {{ path = {{ prefix = \"/h2\" }} }}\nforward = {{ service = \"h2\" }}\n",
        listener("web", "http"),
        listener("only2", "http2"),
        service("h1", &[up.addr], ""),
        service("h2", &[up.addr], "protocol = \"http2\""),
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    // h2c prior knowledge on an `http` listener, and on an `http2` listener.
    for l in ["web", "only2"] {
        let r = client.get_h2(&format!("http://{}/h1/x", gw.addr(l))).await;
        assert_eq!(r.status, 200, "{l}");
        assert_eq!(r.version, Version::HTTP_2, "{l}");
        assert_eq!(r.json()["version"], "HTTP/1.1", "the upstream is HTTP/1.1");
        assert_eq!(r.json()["headers"]["via"], "2 portico");
    }
    // HTTP/1.1 on the h2-only listener gets no HTTP/1.1 answer.
    let out = raw(gw.addr("only2"), b"GET /h1/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
    // An HTTP/2 upstream.
    let r = client.get(&gw.url("/h2/y?q=1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(
        r.json()["uri"]
            .as_str()
            .unwrap()
            .rsplit_once('/')
            .unwrap()
            .1,
        "y?q=1"
    );
    let seen = up.last();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.uri.path(), "/y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_and_errors_pass_through() {
    let server = GrpcServer::start().await;
    for protocol in ["grpc", "http"] {
        let cfg = format!(
            "{}{}\n[[routes]]\nname = \"echo\"\nmatch = {{ grpc = {{ service = \"test.Echo\" }} }}\nforward = {{ service = \"g\" }}\n",
            listener("web", protocol),
            service("g", &[server.addr], "protocol = \"grpc\""),
        );
        let gw = Gw::start(&cfg).await;
        let mut c = GrpcClient::connect(gw.addr("web")).await;
        let r = c.unary("hello", 0).await.expect("unary call");
        assert_eq!(r.get_ref().message, "hello", "{protocol}");
        assert_eq!(
            r.metadata().get("x-echo-server").unwrap(),
            "portico-testkit"
        );
        let (items, status) = c.stream("s", 5, 0).await;
        status.expect("stream ends OK");
        assert_eq!(
            items.iter().map(|i| i.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        let err = c.unary("nope", 5).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), "failed on purpose: nope");
        let (items, status) = c.stream("s", 3, 9).await;
        assert_eq!(items.len(), 3, "messages before the failure arrive");
        assert_eq!(status.unwrap_err().code(), Code::FailedPrecondition);
        let seen_path = c.call("/test.Echo/Missing").await.unwrap_err();
        assert_eq!(
            seen_path.code(),
            Code::Unimplemented,
            "the upstream's own UNIMPLEMENTED"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_method_routing_and_gateway_made_statuses() {
    let server = GrpcServer::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = format!(
        "{}{}{}\n[[routes]]\nname = \"unary\"\nmatch = {{ grpc = {{ service = \"test.Echo\", method = \"Unary\" }} }}\nforward = {{ service = \"g\" }}\n\
         [[routes]]\nname = \"rest\"\nmatch = {{ grpc = {{ service = \"test.Echo\" }} }}\nforward = {{ service = \"dead\" }}\n",
        listener("web", "grpc"),
        service("g", &[server.addr], "protocol = \"grpc\""),
        service(
            "dead",
            &[dead],
            "protocol = \"grpc\"\nretries = { attempts = 0 }"
        ),
    );
    let gw = Gw::start(&cfg).await;
    let mut c = GrpcClient::connect(gw.addr("web")).await;
    assert_eq!(c.unary("ok", 0).await.unwrap().get_ref().message, "ok");
    // Stream goes to the dead service: the gateway answers UNAVAILABLE itself.
    let (_, status) = c.stream("x", 1, 0).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("service `dead`"), "{status:?}");
    // No route at all: UNIMPLEMENTED.
    let err = c.call("/other.Service/Call").await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    // The raw HTTP shape: status 200 with grpc-status in the headers.
    let r = Client::new()
        .send_h2(request(
            Method::POST,
            &format!("http://{}/other.Service/Call", gw.addr("web")),
            Bytes::new(),
            &[("content-type", "application/grpc"), ("te", "trailers")],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status").as_deref(), Some("12"));
    assert!(r.header("grpc-message").unwrap().contains("no route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through_http2() {
    let up = Upstream::start(|_| Reply::Trailers {
        body: Bytes::from_static(b"body"),
        trailers: vec![("x-checksum".into(), "abc123".into())],
    })
    .await;
    let cfg = format!(
        "{WEB}{}\n[[routes]]\nname = \"t\"\nforward = {{ service = \"s\" }}\n",
        service("s", &[up.addr], "protocol = \"http2\"")
    );
    let gw = Gw::start(&cfg).await;
    let r = Client::new().get_h2(&gw.url("/")).await;
    assert_eq!(r.text(), "body");
    assert_eq!(r.trailers.expect("trailers")["x-checksum"], "abc123");
    // The same upstream over HTTP/1.1 (chunked trailers) to an h2 client.
    let cfg = format!(
        "{WEB}{}\n[[routes]]\nname = \"t\"\nforward = {{ service = \"s\" }}\n",
        service("s", &[up.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    // An HTTP/1.1 server sends trailers only to clients that say `TE: trailers`.
    let r = Client::new()
        .send_h2(request(
            Method::GET,
            &gw.url("/"),
            Bytes::new(),
            &[("te", "trailers")],
        ))
        .await
        .unwrap();
    assert_eq!(r.text(), "body");
    assert_eq!(
        r.trailers.expect("trailers over HTTP/1.1 chunked")["x-checksum"],
        "abc123"
    );
    // And to an HTTP/1.1 client, which also asks with `TE: trailers`.
    let r = Client::new()
        .send(request(
            Method::GET,
            &gw.url("/"),
            Bytes::new(),
            &[("te", "trailers")],
        ))
        .await
        .unwrap();
    assert_eq!(r.text(), "body");
    assert_eq!(
        r.trailers.expect("trailers to an HTTP/1.1 client")["x-checksum"],
        "abc123"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_tunnelled() {
    let ws = WsEcho::start().await;
    let up = Upstream::echo().await;
    let cfg = format!(
        "{WEB}{}{}\n[[routes]]\nname = \"ws\"\nmatch = {{ path = {{ prefix = \"/chat\" }} }}\nforward = {{ service = \"ws\" }}\nrewrite = {{ prefix = false }}\n\
         [[routes]]\nname = \"h2ws\"\nmatch = {{ path = {{ prefix = \"/h2\" }} }}\nforward = {{ service = \"h2\" }}\n",
        service("ws", &[ws.addr], ""),
        service("h2", &[up.addr], "protocol = \"http2\""),
    );
    let gw = Gw::start(&cfg).await;
    let echoed = round_trip(
        &format!("ws://{}/chat", gw.addr("web")),
        &["a", "bb", "ccc"],
    )
    .await
    .unwrap();
    assert_eq!(echoed, vec!["a", "bb", "ccc"]);
    let err = round_trip(&format!("ws://{}/h2", gw.addr("web")), &["a"])
        .await
        .unwrap_err();
    assert!(err.contains("502"), "{err}");
    let r = Client::new()
        .send(request(
            Method::GET,
            &gw.url("/h2"),
            "",
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upgrade_unsupported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_body_limits() {
    let up = Upstream::echo().await;
    let cfg = format!(
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\nlimits = {{ max_request_header_bytes = \"16KiB\" }}\n{}\n\
         [[routes]]\nname = \"small-headers\"\nmatch = {{ path = {{ prefix = \"/small\" }} }}\nforward = {{ service = \"s\" }}\nlimits = {{ max_request_header_bytes = \"2KiB\" }}\n\
         [[routes]]\nname = \"small-body\"\nmatch = {{ path = {{ prefix = \"/upload\" }} }}\nforward = {{ service = \"s\" }}\nlimits = {{ max_request_body_bytes = \"1KiB\" }}\n\
         [[routes]]\nname = \"rest\"\nforward = {{ service = \"s\" }}\n",
        service("s", &[up.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let big = "x".repeat(20 * 1024);
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/any"),
            "",
            &[("x-big", &big)],
        ))
        .await;
    match r {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => panic!("expected a 431 answer, got {e}"),
    }
    let mid = "x".repeat(3 * 1024);
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/small"),
            "",
            &[("x-mid", &mid)],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "headers_too_large");
    let before = up.count();
    let r = client
        .send(request(
            Method::POST,
            &gw.url("/upload"),
            vec![b'a'; 2000],
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(up.count(), before, "the upstream saw nothing");
    // Chunked bodies are counted as they stream.
    let chunk = "a".repeat(1000);
    let mut raw_req =
        String::from("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..5 {
        raw_req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw_req.push_str("0\r\n\r\n");
    let out = raw(gw.addr("web"), raw_req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("body_too_large"), "{out}");
    let r = client
        .send(request(
            Method::POST,
            &gw.url("/upload"),
            vec![b'a'; 900],
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.last().body_len, 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    const LEN: u64 = 64 << 20;
    let up = Upstream::start(|r| {
        if r.method == Method::GET {
            Reply::Stream {
                status: http::StatusCode::OK,
                len: LEN,
            }
        } else {
            Reply::text(r.body_len.to_string())
        }
    })
    .await;
    let cfg = format!(
        "{WEB}{}\n[[routes]]\nname = \"r\"\nforward = {{ service = \"s\" }}\n",
        service("s", &[up.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    // Upload: a streamed body of 1,024 chunks of 64 KiB, without content-length.
    let chunks = (0..1024).map(|_| Ok::<_, std::io::Error>(Frame::data(pattern_chunk())));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let stream = tokio::net::TcpStream::connect(gw.addr("web"))
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/up").header("host", "x").body(body).unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, LEN.to_string());
    // Download, checked as it arrives.
    let stream = tokio::net::TcpStream::connect(gw.addr("web"))
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            Request::get("/down")
                .header("host", "x")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(d) = frame.data_ref() {
            for (i, b) in d.iter().enumerate().step_by(4099) {
                assert_eq!(
                    *b as u64,
                    ((seen + i as u64) % 65_536) % 251,
                    "byte {}",
                    seen + i as u64
                );
            }
            seen += d.len() as u64;
        }
    }
    assert_eq!(seen, LEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_clean_errors_and_the_gateway_stays_up() {
    let up = Upstream::echo().await;
    let cfg = format!(
        "{WEB}{}\n[[routes]]\nname = \"any\"\nforward = {{ service = \"s\" }}\n[[routes]]\nname = \"ex\"\nmatch = {{ hosts = [\"example.com\"] }}\nfixed_response = {{ status = 200, body = \"by authority\" }}\n",
        service("s", &[up.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    let addr = gw.addr("web");
    let garbage = raw(addr, b"GARBAGE\r\n\r\n").await;
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    let bad_escape = raw(
        addr,
        b"GET /a%zz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(bad_escape.starts_with("HTTP/1.1 400"), "{bad_escape}");
    assert!(bad_escape.contains("bad_request"), "{bad_escape}");
    let above_root = raw(
        addr,
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(above_root.starts_with("HTTP/1.1 400"), "{above_root}");
    let absolute = raw(
        addr,
        b"GET http://example.com/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        absolute.starts_with("HTTP/1.1 200") && absolute.ends_with("by authority"),
        "{absolute}"
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: nope\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
    // Still serving.
    let r = Client::new().get(&gw.url("/fine")).await;
    assert_eq!(r.status, 200);
}

/// Counts the complete responses (head and content-length body) at the start of `text`.
fn complete_responses(text: &str) -> usize {
    let mut rest = text;
    let mut n = 0;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let body_start = end + 4;
        if rest.len() < body_start + len {
            break;
        }
        n += 1;
        rest = &rest[body_start + len..];
    }
    n
}

/// Reads from `s` until `n` complete responses arrived, or the peer closed or went quiet.
async fn read_responses(s: &mut tokio::net::TcpStream, n: usize) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while complete_responses(&String::from_utf8_lossy(&out)) < n {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => out.extend_from_slice(&buf[..k]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connection_semantics() {
    let up = Upstream::echo().await;
    let cfg = format!(
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\nidle_timeout = \"300ms\"\n{}\n\
         [[routes]]\nname = \"fixed\"\nmatch = {{ path = {{ prefix = \"/fixed\" }} }}\nfixed_response = {{ status = 200, body = \"fixed\" }}\n\
         [[routes]]\nname = \"up\"\nforward = {{ service = \"s\" }}\n",
        service("s", &[up.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    let addr = gw.addr("web");

    // Two pipelined requests in one write get two answers, in order.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /fixed/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /fixed/2 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_responses(&mut s, 2).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(
        text.contains("date: "),
        "gateway answers carry a Date: {text}"
    );

    // An unread request body (the fixed route ignores it) is drained; the connection lives on.
    s.write_all(b"POST /fixed HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789GET /fixed/3 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let text = read_responses(&mut s, 2).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");

    // Expect: 100-continue gets its interim answer, then the final one.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"data").await.unwrap();
    let text = read_responses(&mut s, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(up.last().body_len, 4);
    assert!(
        !up.last().headers.contains_key("expect"),
        "Expect is answered here, not forwarded"
    );

    // HEAD keeps the length without a body.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"HEAD /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        text.contains("content-length: 5\r\n") && text.ends_with("\r\n\r\n"),
        "{text}"
    );

    // HTTP/1.0 without keep-alive: the answer says close and the connection closes.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /fixed HTTP/1.0\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("connection: close") && text.ends_with("fixed"),
        "{text}"
    );

    // An idle keep-alive connection is closed after the listener's idle timeout.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let _ = read_responses(&mut s, 1).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, 0, "the idle connection was closed");

    // Smuggling vectors get 400 and a closed connection.
    let out = raw(addr, b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("bad_request"),
        "{out}"
    );
}
