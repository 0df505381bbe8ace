//! HTTPS listeners: SNI picks the certificate (exact host, wildcard, default), ALPN picks
//! HTTP/2 or HTTP/1.1, certificates change on reload without dropping connections, and a
//! certificate whose key does not match is refused with a clear error.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::{Gw, service};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_testkit::Upstream;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio_rustls::TlsConnector;

/// A test CA and leaf certificates written as PEM files.
struct Pki {
    dir: TempDir,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        Self {
            dir: TempDir::new().unwrap(),
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes `<name>.crt` and `<name>.key` for `hosts`; returns the leaf's DER.
    fn leaf(&self, name: &str, hosts: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let crt = self.dir.path().join(format!("{name}.crt"));
        let pem_key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&pem_key, key.serialize_pem()).unwrap();
        (crt, pem_key, cert.der().to_vec())
    }

    /// A client certificate and key signed by this CA.
    fn client_identity(
        &self,
    ) -> (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["client.example.com".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    fn connector_with(
        &self,
        identity: Option<(
            Vec<CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        )>,
    ) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
            None => b.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }

    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn config(certs: &[(&[&str], &Path, &Path)], up: &Upstream) -> String {
    let mut out = String::from(
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\n[listeners.tls]\n",
    );
    for (hosts, crt, key) in certs {
        let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        out.push_str(&format!(
            "[[listeners.tls.certificates]]\nhosts = [{}]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            hosts.join(", "),
            crt.display(),
            key.display()
        ));
    }
    out.push_str(&service("up", &[up.addr], ""));
    out.push_str("\n[[routes]]\nforward = { service = \"up\" }\n");
    out
}

/// Connects with SNI `name` (or none) and answers the certificate the server showed and
/// the protocol ALPN chose.
async fn handshake(
    pki: &Pki,
    gw: &Gw,
    name: &str,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    let tcp = tokio::net::TcpStream::connect(gw.addr("web"))
        .await
        .unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = pki.connector(alpn).connect(server_name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_the_protocol() {
    let pki = Pki::new();
    let up = Upstream::echo().await;
    let (a_crt, a_key, a_der) = pki.leaf("a", &["a.example.com"]);
    let (w_crt, w_key, w_der) = pki.leaf("w", &["*.b.example.com"]);
    let (d_crt, d_key, d_der) = pki.leaf("d", &["default.example.com", "a.example.com"]);
    let gw = Gw::start(&config(
        &[
            (&["default.example.com"], &d_crt, &d_key),
            (&["a.example.com"], &a_crt, &a_key),
            (&["*.b.example.com"], &w_crt, &w_key),
        ],
        &up,
    ))
    .await;
    // Exact host, wildcard (one label), and the first certificate for anything else.
    assert_eq!(handshake(&pki, &gw, "a.example.com", &[]).await.1, a_der);
    assert_eq!(handshake(&pki, &gw, "x.b.example.com", &[]).await.1, w_der);
    assert_eq!(
        handshake(&pki, &gw, "default.example.com", &[]).await.1,
        d_der
    );

    // ALPN h2: HTTP/2 over TLS; the upstream is told the client came over https.
    let (tls, _) = handshake(&pki, &gw, "a.example.com", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://a.example.com/over/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/over/h2");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // ALPN http/1.1 (and no ALPN at all): HTTP/1.1 over TLS.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let (tls, _) = handshake(&pki, &gw, "a.example.com", alpn).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/over/h1")
            .header("host", "a.example.com")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["path"], "/over/h1");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let out =
        portico_testkit::client::raw(gw.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_change_on_reload_and_mismatched_keys_are_refused() {
    let pki = Pki::new();
    let up = Upstream::echo().await;
    let (old_crt, old_key, old_der) = pki.leaf("old", &["a.example.com"]);
    let (new_crt, new_key, new_der) = pki.leaf("new", &["a.example.com"]);
    let gw = Gw::start(&config(&[(&["a.example.com"], &old_crt, &old_key)], &up)).await;
    // An open HTTP/1.1 connection made with the old certificate...
    let (tls, leaf) = handshake(&pki, &gw, "a.example.com", &[b"http/1.1"]).await;
    assert_eq!(leaf, old_der);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    // A certificate with somebody else's key: refused, the running one keeps serving.
    let err = gw
        .apply(&config(&[(&["a.example.com"], &new_crt, &old_key)], &up))
        .await
        .unwrap_err();
    assert!(err.contains("do not belong together"), "{err}");
    assert_eq!(handshake(&pki, &gw, "a.example.com", &[]).await.1, old_der);
    // The new certificate: new handshakes get it, the open connection keeps working.
    gw.apply(&config(&[(&["a.example.com"], &new_crt, &new_key)], &up))
        .await
        .unwrap();
    assert_eq!(handshake(&pki, &gw, "a.example.com", &[]).await.1, new_der);
    let req = Request::get("/still")
        .header("host", "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    // A missing file is named.
    let err = gw
        .apply(&config(&[(&[], Path::new("/nope.crt"), &new_key)], &up))
        .await
        .unwrap_err();
    assert!(err.contains("/nope.crt"), "{err}");
}

/// One HTTP/1.1 request over a TLS connection made by `connector`; `Err` when the server
/// refuses the handshake or the request.
async fn get_over(gw: &Gw, connector: &TlsConnector) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(gw.addr("web"))
        .await
        .unwrap();
    let name = ServerName::try_from("a.example.com".to_owned()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/m")
        .header("host", "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    send.send_request(req)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_client_certificates_from_the_ca_only() {
    let pki = Pki::new();
    let other = Pki::new();
    let up = Upstream::echo().await;
    let (crt, key, _) = pki.leaf("a", &["a.example.com"]);
    let ca = pki.dir.path().join("clients-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let cfg = config(&[(&["a.example.com"], &crt, &key)], &up).replace(
        "[listeners.tls]\n",
        &format!("[listeners.tls]\nclient_ca_file = \"{}\"\n", ca.display()),
    );
    let gw = Gw::start(&cfg).await;
    assert_eq!(
        get_over(&gw, &pki.connector_with(Some(pki.client_identity()))).await,
        Ok(200)
    );
    assert!(
        get_over(&gw, &pki.connector_with(None)).await.is_err(),
        "no client certificate"
    );
    // A client certificate from another CA (the client still trusts our server's CA).
    let (chain, k) = other.client_identity();
    assert!(
        get_over(&gw, &pki.connector_with(Some((chain, k))))
            .await
            .is_err(),
        "foreign CA"
    );
    // Optional client certificates: without one is fine, a bad one still is not.
    let optional = cfg.replace(
        "client_ca_file",
        "client_cert_required = false\nclient_ca_file",
    );
    gw.apply(&optional).await.unwrap();
    assert_eq!(get_over(&gw, &pki.connector_with(None)).await, Ok(200));
    let (chain, k) = other.client_identity();
    assert!(
        get_over(&gw, &pki.connector_with(Some((chain, k))))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_trailers() {
    use portico_testkit::grpc::{EchoReply, EchoRequest, GrpcServer};
    use prost::Message as _;
    let pki = Pki::new();
    let grpc = GrpcServer::start().await;
    let (crt, key, _) = pki.leaf("g", &["grpc.example.com"]);
    let cfg = format!(
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"grpc\"\n\
         [listeners.tls]\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n{}\n\
         [[routes]]\nmatch = {{ grpc = {{ service = \"test.Echo\" }} }}\nforward = {{ service = \"g\" }}\n",
        crt.display(),
        key.display(),
        service("g", &[grpc.addr], "protocol = \"grpc\""),
    );
    let gw = Gw::start(&cfg).await;
    let (tls, _) = handshake(&pki, &gw, "grpc.example.com", &[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let call = |msg: &str, fail: u32| {
        let m = EchoRequest {
            message: msg.into(),
            count: 0,
            fail_code: fail,
        }
        .encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(m.len() as u32).to_be_bytes());
        frame.extend_from_slice(&m);
        Request::post("https://grpc.example.com/test.Echo/Unary")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(Bytes::from(frame)))
            .unwrap()
    };
    let resp = send.send_request(call("over tls", 0)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    let body = collected.to_bytes();
    let reply = EchoReply::decode(&body[5..]).unwrap();
    assert_eq!(reply.message, "over tls");
    // An error status from the service reaches the client too.
    // (A "trailers-only" answer carries it in the headers.)
    let resp = send.send_request(call("x", 5)).await.unwrap();
    let in_headers = resp.headers().get("grpc-status").cloned();
    let collected = resp.into_body().collect().await.unwrap();
    let status = in_headers
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
        })
        .unwrap();
    assert_eq!(status, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_over_tls() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let pki = Pki::new();
    let ws = portico_testkit::websocket::WsEcho::start().await;
    let (crt, key, _) = pki.leaf("w", &["ws.example.com"]);
    let cfg = format!(
        "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\n\
         [listeners.tls]\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n{}\n\
         [[routes]]\nforward = {{ service = \"ws\" }}\n",
        crt.display(),
        key.display(),
        service("ws", &[ws.addr], ""),
    );
    let gw = Gw::start(&cfg).await;
    let (tls, _) = handshake(&pki, &gw, "ws.example.com", &[b"http/1.1"]).await;
    let (mut stream, resp) = tokio_tungstenite::client_async("wss://ws.example.com/chat", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["one", "two"] {
        stream.send(Message::text(text)).await.unwrap();
        let back = stream.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
}

/// `openssl s_client -status` against the listener: what it printed.
async fn s_client_status(port: u16, name: &str) -> String {
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            name,
            "-status",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// OCSP stapling: a certificate naming a responder (a real `openssl ocsp` responder here)
/// gets a fetched response stapled; another gets its response from a file; a file that is
/// not an OCSP response is refused with its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_responses_are_fetched_and_stapled() {
    use portico_testkit::process::Process;
    let dir = TempDir::new().unwrap();
    let path = |n: &str| dir.path().join(n);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "OCSP test CA");
    let ca = ca_params.clone().self_signed(&ca_key).unwrap();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("ca.key"), ca_key.serialize_pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let responder_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A leaf whose Authority Information Access names the responder.
    let leaf = |name: &str, host: &str, serial: u8, aia: bool| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(vec![serial]));
        if aia {
            let url = format!("http://127.0.0.1:{responder_port}/");
            // SEQUENCE { SEQUENCE { id-ad-ocsp, [6] url } }
            let mut access = vec![0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
            access.push(0x86);
            access.push(url.len() as u8);
            access.extend_from_slice(url.as_bytes());
            let mut desc = vec![0x30, access.len() as u8];
            desc.extend_from_slice(&access);
            let mut aia_der = vec![0x30, desc.len() as u8];
            aia_der.extend_from_slice(&desc);
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                    aia_der,
                ));
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        // The chain carries the issuer: the request names it by hash.
        std::fs::write(
            path(&format!("{name}.crt")),
            format!("{}{}", cert.pem(), ca.pem()),
        )
        .unwrap();
        std::fs::write(path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    leaf("fetched", "fetched.example.com", 0x21, true);
    leaf("filed", "filed.example.com", 0x22, false);
    std::fs::write(
        path("index.txt"),
        "V\t351231000000Z\t\t21\tunknown\t/CN=fetched.example.com\n\
         V\t351231000000Z\t\t22\tunknown\t/CN=filed.example.com\n",
    )
    .unwrap();
    let responder = Process::spawn(
        Path::new("openssl"),
        &[
            "ocsp",
            "-index",
            path("index.txt").to_str().unwrap(),
            "-port",
            &responder_port.to_string(),
            "-rsigner",
            path("ca.pem").to_str().unwrap(),
            "-rkey",
            path("ca.key").to_str().unwrap(),
            "-CA",
            path("ca.pem").to_str().unwrap(),
            "-ndays",
            "1",
        ],
        &[],
    );
    responder
        .wait_for(
            "waiting for OCSP client connections",
            std::time::Duration::from_secs(10),
        )
        .await;
    // The response for the second certificate, fetched with openssl into a file.
    let out = std::process::Command::new("openssl")
        .args([
            "ocsp",
            "-issuer",
            path("ca.pem").to_str().unwrap(),
            "-serial",
            "0x22",
            "-url",
            &format!("http://127.0.0.1:{responder_port}/"),
            "-respout",
            path("filed.der").to_str().unwrap(),
            "-noverify",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = |name: &str, host: &str, extra: &str| {
        format!(
            "[[listeners.tls.certificates]]\nhosts = [\"{host}\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n",
            path(&format!("{name}.crt")).display(),
            path(&format!("{name}.key")).display()
        )
    };
    let up = Upstream::named("ocsp").await;
    let cfg = |filed_ocsp: &str| {
        format!(
            "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\n[listeners.tls]\n{}{}{}\n[[routes]]\nforward = {{ service = \"up\" }}\n",
            cert("fetched", "fetched.example.com", ""),
            cert(
                "filed",
                "filed.example.com",
                &format!("ocsp_file = \"{filed_ocsp}\"")
            ),
            service("up", &[up.addr], ""),
        )
    };
    let gw = Gw::start(&cfg(path("filed.der").to_str().unwrap())).await;
    let port = gw.addr("web").port();
    // The fetched response arrives in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = s_client_status(port, "fetched.example.com").await;
        if text.contains("OCSP Response Status: successful") {
            assert!(text.contains("Cert Status: good"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no staple for fetched.example.com:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let text = s_client_status(port, "filed.example.com").await;
    assert!(text.contains("OCSP Response Status: successful"), "{text}");
    assert!(text.contains("Serial Number: 22"), "{text}");
    // Not an OCSP response: refused, naming the file; the running config keeps serving.
    std::fs::write(path("junk.der"), b"not der").unwrap();
    let err = gw
        .apply(&cfg(path("junk.der").to_str().unwrap()))
        .await
        .unwrap_err();
    assert!(err.contains("junk.der"), "{err}");
    let text = s_client_status(port, "fetched.example.com").await;
    assert!(text.contains("OCSP Response Status: successful"), "{text}");
}
