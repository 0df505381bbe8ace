//! Bodies that stall: a client that sends headers and then nothing gets 408 instead of
//! holding a gateway and a backend connection; a body may have a total deadline; a backend
//! that stalls mid-body has its response ended.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Gw, service};
use portico_testkit::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads until the peer closes or `limit` passes (the test's safety net, not a threshold);
/// answers what was read and whether the peer closed.
async fn read_until_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn config(listener_extra: &str, up: SocketAddr, service_extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\n{listener_extra}\n{}\n[[routes]]\nname = \"r\"\nforward = {{ service = \"s\" }}\n",
        service("s", &[up], service_extra)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_and_frees_the_connections() {
    let up = Upstream::echo().await;
    let gw = Gw::start(&config(
        "request_body_idle_timeout = \"1s\"",
        up.addr,
        "retries = { attempts = 0 }",
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr("web")).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nten bytes.")
        .await
        .unwrap();
    let (out, closed) = read_until_close(&mut s, Duration::from_secs(20)).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("request_timeout"), "{out}");
    assert!(closed, "the connection stays open after a 408:\n{out}");

    // A body that keeps moving is never cut, however long it takes in all.
    let mut s = TcpStream::connect(gw.addr("web")).await.unwrap();
    s.write_all(
        b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for b in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let (out, _) = read_until_close(&mut s, Duration::from_secs(20)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"body_len\":6"), "{out}");

    // With a total deadline, a trickle that never pauses long is still cut.
    let gw = Gw::start(&config(
        "request_body_idle_timeout = \"10s\"\nrequest_body_timeout = \"1s\"",
        up.addr,
        "retries = { attempts = 0 }",
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr("web")).await.unwrap();
    s.write_all(b"POST /trickle HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"x").await.is_err() {
                break;
            }
        }
        s
    });
    let mut s = writer.await.unwrap();
    let (out, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");

    // HTTP/2: the stream gets 408 too.
    let stream = TcpStream::connect(gw.addr("web")).await.unwrap();
    let (mut send, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://a/h2").body(()).unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"start"), false)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 408);
}

/// A backend that answers with a 100-byte body, sends 10 bytes of it and stalls.
async fn stalling_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nten bytes.")
                    .await;
                tokio::time::sleep(Duration::from_secs(120)).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stalls_mid_body_has_its_response_ended() {
    let backend = stalling_backend().await;
    let gw = Gw::start(&config(
        "",
        backend,
        "retries = { attempts = 0 }\nbody_idle_timeout = \"1s\"",
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr("web")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (out, closed) = read_until_close(&mut s, Duration::from_secs(20)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("ten bytes."), "{out}");
    assert!(closed, "the client is still held:\n{out}");
}
