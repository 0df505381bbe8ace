//! TLS to upstreams: certificates verified against a given CA with the server name in SNI,
//! pooled TLS connections, refusals that say why (unknown CA, wrong name, missing client
//! certificate), mutual TLS to the backend, the explicit insecure mode, and gRPC and
//! WebSocket to TLS backends. The backends are the test upstreams behind a TLS terminator
//! written here (tokio-rustls), which records what each handshake offered.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::{Gw, WEB, service};
use portico_testkit::{Client, Upstream};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

/// A CA writing PEM files.
struct Ca {
    dir: TempDir,
    der: CertificateDer<'static>,
    pem_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let dir = TempDir::new().unwrap();
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, ca.pem()).unwrap();
        Self {
            dir,
            der: ca.der().clone(),
            pem_file,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `host`: its DER chain and key, and the same written as PEM files.
    fn leaf(
        &self,
        name: &str,
        host: &str,
    ) -> (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
        PathBuf,
    ) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let (crt, kf) = (
            self.dir.path().join(format!("{name}.crt")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&kf, key.serialize_pem()).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            crt,
            kf,
        )
    }
}

/// What a TLS terminator saw of one handshake.
#[derive(Clone, Debug)]
struct Seen {
    sni: Option<String>,
    client_cert: bool,
}

/// Terminates TLS (certificate for `host` from `ca`, ALPN `alpn`, client certificates from
/// `client_ca` required when given) and relays the bytes to `backend`.
struct Terminator {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Terminator {
    async fn start(
        ca: &Ca,
        host: &str,
        alpn: &[&[u8]],
        client_ca: Option<&Ca>,
        backend: SocketAddr,
    ) -> Self {
        let (chain, key, _, _) = ca.leaf("server", host);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_ca {
            None => b.with_no_client_auth(),
            Some(c) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(c.der.clone()).unwrap();
                b.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .unwrap(),
                )
            }
        };
        let mut config = b.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    log.lock().unwrap().push(Seen {
                        sni: conn.server_name().map(str::to_owned),
                        client_cert: conn.peer_certificates().is_some(),
                    });
                    let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn config(addr: SocketAddr, tls: &str) -> String {
    format!(
        "{WEB}{}\n[[routes]]\nforward = {{ service = \"b\" }}\n",
        service(
            "b",
            &[addr],
            // Failures here are the point: no ejection, so each answer shows its own cause.
            &format!("tls = {{ {tls} }}\noutlier_detection = {{ consecutive_failures = 0 }}")
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_verified_by_name_and_ca_and_connections_are_pooled() {
    let ca = Ca::new();
    let up = Upstream::named("secure-backend").await;
    let term = Terminator::start(&ca, "backend.internal", &[b"http/1.1"], None, up.addr).await;
    let ca_file = ca.pem_file.display().to_string();
    let gw = Gw::start(&config(
        term.addr,
        &format!("ca_file = \"{ca_file}\", server_name = \"backend.internal\""),
    ))
    .await;
    let client = Client::new();
    for _ in 0..5 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "secure-backend");
    }
    // One TLS connection served all five requests, with the configured name in SNI.
    let seen = term.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].sni.as_deref(), Some("backend.internal"));
    assert!(!seen[0].client_cert);

    // Another CA's certificate is refused, and the answer says why.
    let other = Ca::new();
    gw.apply(&config(
        term.addr,
        &format!(
            "ca_file = \"{}\", server_name = \"backend.internal\"",
            other.pem_file.display()
        ),
    ))
    .await
    .unwrap();
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("TLS handshake failed"), "{}", r.text());
    // So is the right CA with the wrong name.
    gw.apply(&config(
        term.addr,
        &format!("ca_file = \"{ca_file}\", server_name = \"elsewhere.internal\""),
    ))
    .await
    .unwrap();
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("TLS handshake failed"), "{}", r.text());
    // Without a server name the endpoint's host (here an IP) is checked: not in the
    // certificate, refused.
    gw.apply(&config(term.addr, &format!("ca_file = \"{ca_file}\"")))
        .await
        .unwrap();
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("not valid for name"), "{}", r.text());
    // The explicit insecure mode accepts it (for tests only).
    gw.apply(&config(term.addr, "insecure_skip_verify = true"))
        .await
        .unwrap();
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A missing CA file is refused when the config is applied, naming the file.
    let err = gw
        .apply(&config(term.addr, "ca_file = \"/nonexistent/ca.pem\""))
        .await
        .unwrap_err();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_the_backend() {
    let ca = Ca::new();
    let clients = Ca::new();
    let up = Upstream::named("mtls-backend").await;
    let term =
        Terminator::start(&ca, "api.internal", &[b"http/1.1"], Some(&clients), up.addr).await;
    let ca_file = ca.pem_file.display().to_string();
    let base = format!("ca_file = \"{ca_file}\", server_name = \"api.internal\"");
    let gw = Gw::start(&config(term.addr, &base)).await;
    let client = Client::new();
    // The backend asks for a client certificate and gets none: refused.
    assert_eq!(client.get(&gw.url("/x")).await.status, 502);
    let (_, _, crt, key) = clients.leaf("gateway", "gateway.internal");
    gw.apply(&config(
        term.addr,
        &format!(
            "{base}, client_cert_file = \"{}\", client_key_file = \"{}\"",
            crt.display(),
            key.display()
        ),
    ))
    .await
    .unwrap();
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "mtls-backend");
    assert!(term.seen().iter().any(|s| s.client_cert));
    // A certificate without its key is a config error.
    let err = gw
        .apply(&config(
            term.addr,
            &format!("{base}, client_cert_file = \"{}\"", crt.display()),
        ))
        .await
        .unwrap_err();
    assert!(err.contains("client_key_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_websocket_to_tls_backends() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use portico_testkit::grpc::{GrpcClient, GrpcServer};
    use tokio_tungstenite::tungstenite::Message;
    let ca = Ca::new();
    let grpc = GrpcServer::start().await;
    let grpc_tls = Terminator::start(&ca, "grpc.internal", &[b"h2"], None, grpc.addr).await;
    let ws = portico_testkit::websocket::WsEcho::start().await;
    let ws_tls = Terminator::start(&ca, "ws.internal", &[b"http/1.1"], None, ws.addr).await;
    let ca_file = ca.pem_file.display();
    let cfg = format!(
        "{WEB}\
         [[listeners]]\nname = \"grpc\"\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"grpc\"\n\
         {}\n{}\n\
         [[routes]]\nlisteners = [\"grpc\"]\nmatch = {{ grpc = {{ service = \"test.Echo\" }} }}\nforward = {{ service = \"g\" }}\n\
         [[routes]]\nlisteners = [\"web\"]\nforward = {{ service = \"w\" }}\n",
        service(
            "g",
            &[grpc_tls.addr],
            &format!(
                "protocol = \"grpc\"\ntls = {{ ca_file = \"{ca_file}\", server_name = \"grpc.internal\" }}"
            )
        ),
        service(
            "w",
            &[ws_tls.addr],
            &format!("tls = {{ ca_file = \"{ca_file}\", server_name = \"ws.internal\" }}")
        ),
    );
    let gw = Gw::start(&cfg).await;
    let mut g = GrpcClient::connect(gw.addr("grpc")).await;
    let reply = g.unary("through tls", 0).await.unwrap();
    assert_eq!(reply.get_ref().message, "through tls");
    let status = g.unary("fail", 7).await.unwrap_err();
    assert_eq!(status.code() as i32, 7);
    assert_eq!(grpc_tls.seen()[0].sni.as_deref(), Some("grpc.internal"));

    let (mut stream, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr("web")))
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["one", "two"] {
        stream.send(Message::text(text)).await.unwrap();
        let back = stream.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    assert_eq!(ws_tls.seen()[0].sni.as_deref(), Some("ws.internal"));
}
