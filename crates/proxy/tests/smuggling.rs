//! Request smuggling and policy bypasses found by third-party suites, end to end: the host
//! a request is routed by is the host the backend receives (absolute-form targets, HTTP/2
//! `:authority` against `host`, userinfo), and `Upgrade` is relayed only for protocols a
//! route allows (never `h2c`), so no tunnel reaches paths the gateway refuses.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::net::SocketAddr;

use common::{Gw, WEB, service};
use portico_testkit::Upstream;
use portico_testkit::client::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `admin.test` is for 10.0.0.0/8 only; `public.test` is open; both forward to `up`.
fn two_hosts(up: SocketAddr) -> String {
    format!(
        "{WEB}{}\n[[routes]]\nname = \"admin\"\nmatch = {{ hosts = [\"admin.test\"] }}\nip = {{ allow = [\"10.0.0.0/8\"] }}\nforward = {{ service = \"s\" }}\n\
         [[routes]]\nname = \"public\"\nmatch = {{ hosts = [\"public.test\"] }}\nforward = {{ service = \"s\" }}\n",
        service("s", &[up], ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_a_request_is_routed_by_is_the_host_the_backend_receives() {
    let up = Upstream::echo().await;
    let gw = Gw::start(&two_hosts(up.addr)).await;
    let addr = gw.addr("web");

    // The admin host is closed to this client.
    let out = raw(addr, b"GET /x HTTP/1.1\r\nHost: admin.test\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(up.count(), 0);

    // Absolute form: its authority replaces Host, for routing and for the backend alike.
    let out = raw(
        addr,
        b"GET http://public.test/x HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = up.last();
    assert_eq!(seen.headers["host"], "public.test");
    assert!(
        !seen
            .headers
            .get_all("host")
            .iter()
            .any(|h| h == "admin.test"),
        "{:?}",
        seen.headers
    );
    // And the other way round: routed as the admin host, so refused.
    let out = raw(
        addr,
        b"GET http://admin.test/x HTTP/1.1\r\nHost: public.test\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");

    // Userinfo in the authority or in Host is refused.
    for req in [
        &b"GET http://user@public.test/x HTTP/1.1\r\nHost: public.test\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: user@public.test\r\n\r\n",
    ] {
        let out = raw(addr, req).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }
    assert_eq!(
        up.count(),
        1,
        "only the one good request reached the backend"
    );

    // HTTP/2: a `host` that differs from `:authority` makes the request malformed.
    let r = send_h2_with_authority(addr, "public.test", Some("admin.test")).await;
    assert_eq!(r.0, 400, "{}", r.1);
    let r = send_h2_with_authority(addr, "admin.test", Some("public.test")).await;
    assert_eq!(r.0, 400, "{}", r.1);
    // The same authority in both is fine, and the backend receives that host.
    let r = send_h2_with_authority(addr, "public.test", Some("public.test")).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = send_h2_with_authority(addr, "public.test", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(up.last().headers["host"], "public.test");
    assert_eq!(up.count(), 3);
}

/// Sends `GET /x` over h2c to `addr` with `:authority` and, optionally, a `host` header;
/// answers the status and body.
async fn send_h2_with_authority(
    addr: SocketAddr,
    authority: &str,
    host: Option<&str>,
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method("GET")
        .uri(format!("http://{authority}/x"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let (resp, _) = send.send_request(req.body(()).unwrap(), true).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    (status, String::from_utf8_lossy(&text).into_owned())
}

/// A backend that switches to any protocol it is asked for (or always, on `/always101`)
/// and then answers every request on the tunnel with `SECRET`; other requests get `public`.
async fn switching_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut tunnelled = false;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end + 4);
                    let answer: &[u8] = if tunnelled {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nSECRET"
                    } else if head.contains("\r\nupgrade:") || head.starts_with("get /always101") {
                        tunnelled = true;
                        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\npublic"
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_relayed_only_when_the_route_allows_them_and_never_h2c() {
    let backend = switching_backend().await;
    let cfg = format!(
        "{WEB}{}\n[[routes]]\nname = \"internal\"\npriority = 1\nmatch = {{ path = {{ prefix = \"/internal\" }} }}\nfixed_response = {{ status = 403, body = \"no\" }}\n\
         [[routes]]\nname = \"ws\"\nmatch = {{ path = {{ prefix = \"/ws\" }} }}\nforward = {{ service = \"b\" }}\n\
         [[routes]]\nname = \"closed\"\nmatch = {{ path = {{ prefix = \"/closed\" }} }}\nupgrades = []\nforward = {{ service = \"b\" }}\n\
         [[routes]]\nname = \"public\"\nforward = {{ service = \"b\" }}\n",
        service("b", &[backend], ""),
    );
    let gw = Gw::start(&cfg).await;
    let addr = gw.addr("web");

    // h2c smuggling: the upgrade is not relayed, so the next request is the gateway's.
    let smuggle = b"GET /public HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n\
                    GET /internal/secret HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let out = raw(addr, smuggle).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        !out.contains("SECRET"),
        "a tunnel reached the backend:\n{out}"
    );
    assert!(out.contains("public"), "{out}");
    assert!(
        out.contains("HTTP/1.1 403"),
        "the gateway answered the second:\n{out}"
    );

    // WebSocket passes on a route that allows it (the default)...
    let ws = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /internal/secret HTTP/1.1\r\nHost: a\r\n\r\n";
    let out = raw(addr, ws).await;
    assert!(out.starts_with("HTTP/1.1 101"), "{out}");
    // ...and not on one with `upgrades = []`, where the request goes on as a plain one.
    let closed = b"GET /closed HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /internal/secret HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let out = raw(addr, closed).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!out.contains("SECRET"), "{out}");
    assert!(out.contains("HTTP/1.1 403"), "{out}");
    // Several protocols offered: all must be allowed.
    let mixed = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n\r\nGET /internal/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let out = raw(addr, mixed).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("HTTP/1.1 403"),
        "{out}"
    );

    // A backend that switches protocols uninvited gets no tunnel: 502.
    let out = raw(
        addr,
        b"GET /always101 HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(!out.contains("SECRET"), "{out}");

    // `h2c` cannot be allowed.
    let refused = gw
        .apply(&cfg.replace("upgrades = []", "upgrades = [\"h2c\"]"))
        .await
        .unwrap_err();
    assert!(
        refused.contains("upgrades[0]") && refused.contains("h2c"),
        "{refused}"
    );
}
