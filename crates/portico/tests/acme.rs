//! Automatic certificates end to end: the real `portico` binary as control plane and nodes,
//! a real ACME CA (Debian's `pebble`) with `pebble-challtestsrv` as its DNS (every name
//! resolves to 127.0.0.1, where the gateways listen), HTTP-01 and TLS-ALPN-01 answered by
//! the gateways themselves.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use portico_testkit::process::Process;
use portico_testkit::{Browser, Upstream};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Orders, validation and issuance take a few seconds each; renewals wait for lifetimes.
const ACME_WAIT: Duration = Duration::from_secs(90);

struct Pebble {
    _dns: Process,
    ca: Process,
    /// The ACME directory URL.
    directory: String,
    /// The CA the directory's HTTPS certificate is signed by (given to the control plane).
    tls_ca: PathBuf,
    management: u16,
}

/// A CA and a certificate for `localhost`/127.0.0.1 signed by it, for Pebble's own HTTPS.
fn pebble_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("pebble-ca.pem"),
        dir.join("pebble-cert.pem"),
        dir.join("pebble-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// The directory URL and CA file a Pebble started later will use.
struct PebblePlan {
    dir: PathBuf,
    acme_port: u16,
    tls_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl PebblePlan {
    fn new(dir: &Path) -> Self {
        let (tls_ca, cert, key) = pebble_tls(dir);
        Self {
            dir: dir.to_owned(),
            acme_port: free_port(),
            tls_ca,
            cert,
            key,
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// Starts the CA, validating on `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01), with
    /// certificates valid for `validity` seconds when given, and External Account Binding
    /// required with this key id and HMAC key when given.
    async fn start(
        &self,
        http_port: u16,
        tls_port: u16,
        validity: Option<u64>,
        eab: Option<(&str, &str)>,
    ) -> Pebble {
        let dns_port = free_port();
        let dns_addr = format!("127.0.0.1:{dns_port}");
        let dns_mgmt = format!("127.0.0.1:{}", free_port());
        let dns = Process::spawn(
            Path::new("pebble-challtestsrv"),
            &[
                "-dns01",
                &dns_addr,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &dns_mgmt,
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ],
            &[],
        );
        dns.wait_for("Starting management server", WAIT).await;
        let management = free_port();
        let mut config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.acme_port),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": self.cert,
            "privateKey": self.key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = json!(v);
        }
        if let Some((kid, key)) = eab {
            config["pebble"]["externalAccountBindingRequired"] = json!(true);
            config["pebble"]["externalAccountMACKeys"] = json!({ kid: key });
        }
        let config_path = self.dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let ca = Process::spawn(
            Path::new("pebble"),
            &[
                "-config",
                config_path.to_str().unwrap(),
                "-dnsserver",
                &dns_addr,
                "-strict=false",
            ],
            &[
                ("PEBBLE_VA_NOSLEEP", "1"),
                // Every order validates for real (no authorization reuse).
                ("PEBBLE_AUTHZREUSE", "0"),
            ],
        );
        ca.wait_for("ACME directory available", WAIT).await;
        Pebble {
            _dns: dns,
            ca,
            directory: self.directory(),
            tls_ca: self.tls_ca.clone(),
            management,
        }
    }
}

impl Pebble {
    /// The root the issued certificates chain to (new on every Pebble start).
    async fn root(&self) -> rustls::pki_types::CertificateDer<'static> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.tls_ca).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let pem = client
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
}

/// Opens HTTPS to 127.0.0.1:`port` for `host`, trusting only `root`; sends one GET and
/// answers the served certificate and the response, or why it failed.
async fn https_get(
    port: u16,
    host: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> Result<(Vec<u8>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    Ok((served, String::from_utf8_lossy(&out).into_owned()))
}

/// Polls the control plane until `host`'s automatic certificate is in `state`.
async fn acme_state(cp: &ControlPlane, host: &str, state: &str) -> Value {
    let deadline = Instant::now() + ACME_WAIT;
    loop {
        let (st, v) = cp.api("GET", "/api/v1/acme/hosts", None).await;
        assert_eq!(st, 200, "{v}");
        if let Some(h) = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == host)
            && h["state"] == state
        {
            return h.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{host} never became {state}: {v}\n{}",
            cp.process.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until HTTPS for `host` verifies against `root` and answers 200.
async fn eventually_https(
    port: u16,
    host: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> (Vec<u8>, String) {
    let deadline = Instant::now() + ACME_WAIT;
    loop {
        let last = https_get(port, host, root, path).await;
        if let Ok((cert, text)) = &last
            && text.starts_with("HTTP/1.1 200")
        {
            return (cert.clone(), text.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no trusted HTTPS answer for {host}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn self_signed(host: &str) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A gateway with two nodes sharing its ports: HTTP-01 orders for two hosts (whichever node
/// the CA reaches answers) from a CA that wants External Account Binding, SNI picks among
/// three hosts, the third served by an uploaded certificate that takes precedence over
/// ACME, and the node's admin API shows the states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_certificates_for_a_gateway_with_two_nodes_and_an_uploaded_one_wins() {
    let root = TempDir::new().unwrap();
    let plan = PebblePlan::new(root.path());
    let (http_port, tls_port) = (free_port(), free_port());
    // This CA wants External Account Binding, as some commercial CAs do.
    let eab_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = plan
        .start(http_port, tls_port, None, Some(("kid-1", eab_key)))
        .await;
    let directory = pebble.directory.clone();
    let cp = server(
        root.path(),
        &[
            "--acme-directory",
            &directory,
            "--acme-ca-file",
            pebble.tls_ca.to_str().unwrap(),
            "--acme-email",
            "ops@example.com",
            "--acme-eab-kid",
            "kid-1",
            "--acme-eab-hmac-key",
            eab_key,
            // A transient failure is retried within the test's patience.
            "--acme-retry-base",
            "2",
        ],
    )
    .await;
    // The uploaded certificate for c.test is there first: no order for that host.
    let (c_pem, c_key, c_der) = self_signed("c.test");
    let (c_cert_file, c_key_file) = (root.path().join("c.pem"), root.path().join("c.key"));
    std::fs::write(&c_cert_file, c_pem).unwrap();
    std::fs::write(&c_key_file, c_key).unwrap();
    let out = cp
        .cli_ok(&[
            "certificates",
            "upload",
            "c",
            "--cert",
            c_cert_file.to_str().unwrap(),
            "--key",
            c_key_file.to_str().unwrap(),
        ])
        .await;
    assert!(out.contains("c.test"), "{out}");

    let up = Upstream::named("edge-app").await;
    let mut n1 = init_node(root.path(), "n1", &cp.url).await;
    n1.traffic_port = http_port;
    n1.start().await;
    let mut n2 = n1.sibling("n2");
    n2.start().await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/gateways/link",
            Some(json!({
                "name": "edge", "type": "production",
                "url": format!("http://127.0.0.1:{}", n1.admin_port),
                "api_token": n1.token, "jwt_secret": n1.secret,
                "hosts": ["a.test", "b.test", "c.test"],
                "listeners": [
                    {"port": http_port},
                    {"port": tls_port, "tls": {"certificates": [], "acme": true}},
                ],
            })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    cp.deploy_api(
        json!({"name": "App", "version": "v1", "context": "/app",
            "production_endpoints": [format!("http://{}", up.addr)]}),
        "edge",
    )
    .await;

    let a = acme_state(&cp, "a.test", "valid").await;
    acme_state(&cp, "b.test", "valid").await;
    assert!(a["not_after"].as_i64().unwrap() > a["next_attempt"].as_i64().unwrap());
    let (_, list) = cp.api("GET", "/api/v1/acme/hosts", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains("PRIVATE KEY"), "{list}");

    // Both nodes serve the issued certificates; SNI picks each host's own.
    let ca_root = pebble.root().await;
    for host in ["a.test", "b.test"] {
        let (cert, text) = eventually_https(tls_port, host, &ca_root, "/app/x").await;
        assert!(text.ends_with("edge-app"), "{text}");
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
        let names: Vec<String> = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, vec![format!("DNSName({host})")]);
    }
    // c.test: the uploaded certificate, not one from the CA.
    let (cert, text) = eventually_https(tls_port, "c.test", &c_der, "/app/x").await;
    assert_eq!(cert, c_der.to_vec());
    assert!(text.ends_with("edge-app"), "{text}");
    assert!(
        https_get(tls_port, "c.test", &ca_root, "/app/x")
            .await
            .is_err()
    );

    // An app on its own domain gets a certificate too, and is served over HTTPS with it.
    let dist = root.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("index.html"), "shop over https").unwrap();
    cp.cli_ok(&["apps", "create", "shop"]).await;
    cp.cli_ok(&[
        "apps",
        "deploy",
        dist.to_str().unwrap(),
        "--app",
        "shop",
        "--allow-draft",
        "--gateway",
        "edge",
        "--host",
        "shop.test",
        "--wait",
    ])
    .await;
    acme_state(&cp, "shop.test", "valid").await;
    let (_, text) = eventually_https(tls_port, "shop.test", &ca_root, "/").await;
    assert!(text.ends_with("shop over https"), "{text}");

    // Each node's admin API shows the hosts' states.
    for n in [&n1, &n2] {
        let status = node_status(n).await;
        let hosts = status["certificates"].as_array().unwrap();
        assert_eq!(hosts.len(), 3, "{status}");
        assert!(hosts.iter().all(|h| h["state"] == "valid"), "{status}");
    }
    // The CLI shows the same; an early renewal on request gives a new certificate.
    let table = cp.cli_ok(&["certificates", "acme"]).await;
    assert!(table.starts_with("HOST"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a.test") && l.contains("valid")),
        "{table}"
    );
    assert_eq!(cp.process.count("certificate issued"), 3);
    let (before, _) = eventually_https(tls_port, "a.test", &ca_root, "/app/x").await;
    // In the console: the uploaded certificate and the automatic ones with their state, and
    // an early renewal one click away.
    user(&cp, "ada", &["admin"]).await;
    let b = Browser::start_named("console-certificates").await;
    b.step(
        "the certificates page shows every automatic host valid",
        async {
            sign_in(&b, &cp, "console", "ada").await?;
            b.goto(&format!("{}/console/certificates", cp.url)).await?;
            b.wait_for_text("#uploaded tr[data-certificate=c]", "c.test")
                .await?;
            for host in ["a.test", "b.test", "shop.test"] {
                let row = format!("#automatic tr[data-host='{host}']");
                assert_eq!(b.text(&format!("{row} .state")).await?, "valid");
                assert!(b.text(&format!("{row} .expires")).await?.ends_with(" UTC"));
            }
            b.click("#automatic tr[data-host='a.test'] form.order button")
                .await?;
            b.wait_for_text(".notice", "A new certificate for a.test is being ordered")
                .await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + ACME_WAIT;
    while eventually_https(tls_port, "a.test", &ca_root, "/app/x")
        .await
        .0
        == before
    {
        assert!(Instant::now() < deadline, "no new certificate for a.test");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cp.process.count("certificate issued"), 4);
    b.step("the page shows the new certificate, valid", async {
        b.goto(&format!("{}/console/certificates", cp.url)).await?;
        b.wait_for_text("#automatic tr[data-host='a.test'] .state", "valid")
            .await?;
        Ok(())
    })
    .await
    .unwrap();
    b.close().await;
    let (ok, text) = cp.cli(&["certificates", "order", "nowhere.test"]).await;
    assert!(!ok && text.contains("nowhere.test"), "{text}");
    n2.stop().await;
    n1.stop().await;
    drop(pebble);
}

/// The built-in gateway with TLS-ALPN-01: the CA is down at first (the order fails, is
/// retried with back-off and says why), then up (issued); short-lived certificates are
/// renewed two thirds into their lifetime without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_waits_for_a_ca_that_is_down_then_renews_short_lived_certificates() {
    let root = TempDir::new().unwrap();
    let plan = PebblePlan::new(root.path());
    let (http_port, tls_port) = (free_port(), free_port());
    let directory = plan.directory();
    let cp = start_server_with(
        &root.path().join("data"),
        free_port(),
        http_port,
        None,
        &[
            "--acme-directory",
            &directory,
            "--acme-ca-file",
            plan.tls_ca.to_str().unwrap(),
            "--acme-challenge",
            "tls-alpn-01",
            "--acme-retry-base",
            "1",
        ],
    )
    .await;
    let up = Upstream::named("builtin-app").await;
    let (_, gw) = cp.api("GET", "/api/v1/gateways/default", None).await;
    let mut spec = gw["spec"].clone();
    spec["hosts"] = json!(["app.test"]);
    spec["listeners"] = json!([
        {"port": http_port},
        {"port": tls_port, "tls": {"certificates": [], "acme": true}},
    ]);
    let (st, v) = cp
        .api_with(
            "PUT",
            "/api/v1/gateways/default",
            Some(spec),
            &[("if-match", &gw["version"].to_string())],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    cp.deploy_api(
        json!({"name": "Site", "version": "v1", "context": "/site",
            "production_endpoints": [format!("http://{}", up.addr)]}),
        "default",
    )
    .await;

    // No CA yet: the order fails and says why; it is retried later.
    let failed = acme_state(&cp, "app.test", "error").await;
    assert!(
        failed["last_error"].as_str().unwrap_or("").len() > 10,
        "{failed}"
    );
    assert!(failed["attempts"].as_i64().unwrap() >= 1, "{failed}");

    // The CA comes up, issuing 30-second certificates.
    let pebble = plan.start(http_port, tls_port, Some(30), None).await;
    let valid = acme_state(&cp, "app.test", "valid").await;
    assert!(valid["last_error"].is_null(), "{valid}");
    let ca_root = pebble.root().await;
    let (first, text) = eventually_https(tls_port, "app.test", &ca_root, "/site/x").await;
    assert!(text.ends_with("builtin-app"), "{text}");

    // Two thirds into the lifetime a new certificate replaces it.
    let deadline = Instant::now() + ACME_WAIT;
    loop {
        let (cert, text) = eventually_https(tls_port, "app.test", &ca_root, "/site/x").await;
        assert!(text.ends_with("builtin-app"), "{text}");
        if cert != first {
            let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
            let (_, old) = x509_parser::parse_x509_certificate(&first).unwrap();
            assert!(parsed.validity().not_after > old.validity().not_after);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was never renewed:\n{}",
            cp.process.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(cp.process.count("certificate issued") >= 2);
    let _ = pebble.ca.pid();
}

/// A control plane without an ACME CA refuses listeners that wait for automatic
/// certificates (they would never come), naming the field and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_listeners_need_a_control_plane_with_an_acme_ca() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let (_, gw) = cp.api("GET", "/api/v1/gateways/default", None).await;
    let mut spec = gw["spec"].clone();
    spec["listeners"] = json!([{"port": free_port(), "tls": {"certificates": [], "acme": true}}]);
    let (st, v) = cp
        .api_with(
            "PUT",
            "/api/v1/gateways/default",
            Some(spec),
            &[("if-match", &gw["version"].to_string())],
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "listeners[0].tls.acme", "{v}");
    assert!(
        v["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--acme-directory"),
        "{v}"
    );
    // Nothing changed.
    let (_, after) = cp.api("GET", "/api/v1/gateways/default", None).await;
    assert_eq!(after["version"], gw["version"]);
}

/// A gateway run from a file, without a control plane: `[node.acme]` orders the certificate
/// for the host its route matches (HTTP-01 answered by itself), keeps it in its state
/// directory (owner-only), and a restart serves it without ordering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_gateway_gets_and_keeps_its_certificate() {
    let root = TempDir::new().unwrap();
    let plan = PebblePlan::new(root.path());
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = plan.start(http_port, tls_port, None, None).await;
    let state = root.path().join("acme-state");
    let config = root.path().join("solo.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[node]
workers = 1
internal = {{ address = "127.0.0.1:0" }}
[node.acme]
directory = "{}"
ca_file = "{}"
state_dir = "{}"
email = ["ops@example.com"]
[[listeners]]
port = {http_port}
[[listeners]]
port = {tls_port}
tls = {{ certificates = [], acme = true }}
[[routes]]
match = {{ hosts = ["solo.test"] }}
fixed_response = {{ status = 200, body = "solo" }}
"#,
            pebble.directory,
            pebble.tls_ca.display(),
            state.display()
        ),
    )
    .unwrap();
    let run = || {
        Process::spawn(
            Path::new(BIN),
            &["gateway", "run", "--config", config.to_str().unwrap()],
            &[],
        )
    };
    let gw = run();
    gw.wait_for("gateway running", WAIT).await;
    let ca_root = pebble.root().await;
    let (first, text) = eventually_https(tls_port, "solo.test", &ca_root, "/").await;
    assert!(text.ends_with("solo"), "{text}");
    assert_eq!(gw.count("certificate issued"), 1, "{}", gw.output());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(state.join("state.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(gw);
    // Restarted: the kept certificate serves at once, no new order.
    let gw = run();
    gw.wait_for("gateway running", WAIT).await;
    let (again, _) = eventually_https(tls_port, "solo.test", &ca_root, "/").await;
    assert_eq!(again, first);
    assert_eq!(gw.count("certificate issued"), 0, "{}", gw.output());
    // Without [node.acme], an acme listener is refused with the fix named.
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[[listeners]]\nport = {tls_port}\ntls = {{ certificates = [], acme = true }}\n[[routes]]\nfixed_response = {{ status = 200 }}\n"),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["gateway", "check", "--config", bad.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("[node.acme]"),
        "{text}"
    );
}

/// Two control-plane nodes on one PostgreSQL, A leading the background duties: A is killed
/// with SIGKILL in the middle of an order (its challenge published, the gateway's node
/// paused so that the order cannot end before); B takes over the lead, orders the host again, and the
/// store ends with exactly one valid certificate, which the gateway serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acme_leader_killed_mid_order_leaves_one_certificate_issued_by_the_next() {
    let root = TempDir::new().unwrap();
    let plan = PebblePlan::new(root.path());
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = plan.start(http_port, tls_port, None, None).await;
    let (_pg, url) = database(&db_name("acme", root.path()));
    let key = root.path().join("secret.key");
    let acme = |extra: &[&'static str]| {
        let mut args = vec![
            "--database".to_owned(),
            url.clone(),
            "--secret-key-file".to_owned(),
            key.to_str().unwrap().to_owned(),
            "--acme-directory".to_owned(),
            pebble.directory.clone(),
            "--acme-ca-file".to_owned(),
            pebble.tls_ca.to_str().unwrap().to_owned(),
            "--acme-retry-base".to_owned(),
            "2".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let a_args = acme(&[]);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = start_server_with(
        &root.path().join("a"),
        free_port(),
        free_port(),
        None,
        &a_args,
    )
    .await;
    a.process
        .wait_for("leads the background duties", WAIT)
        .await;
    let b_args = acme(&["--no-builtin-gateway"]);
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let b = start_server_with(
        &root.path().join("b"),
        free_port(),
        free_port(),
        Some(&a.token),
        &b_args,
    )
    .await;

    // The gateway's node syncs through B; it serves HTTP-01 challenges on `http_port`.
    let up = Upstream::named("secure").await;
    let mut n = init_node(root.path(), "n", &b.url).await;
    n.traffic_port = http_port;
    n.start().await;
    let (st, v) = b
        .api(
            "POST",
            "/api/v1/gateways/link",
            Some(json!({
                "name": "edge", "type": "production",
                "url": format!("http://127.0.0.1:{}", n.admin_port),
                "api_token": n.token, "jwt_secret": n.secret,
                "hosts": ["a.test"],
                "listeners": [{"port": http_port}],
            })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    b.deploy_api(
        json!({"name": "App", "version": "v1", "context": "/app",
            "production_endpoints": [format!("http://{}", up.addr)]}),
        "edge",
    )
    .await;

    // The node pauses; an automatic certificate is asked for; A starts the order and waits
    // for the node to take the challenge. Then A dies.
    let node = n.process.as_ref().unwrap();
    node.signal(libc::SIGSTOP);
    let (_, g) = b.api("GET", "/api/v1/gateways/edge", None).await;
    let mut spec = g["spec"].clone();
    spec["listeners"] =
        json!([{"port": http_port}, {"port": tls_port, "tls": {"certificates": [], "acme": true}}]);
    let (st, v) = b
        .api(
            "PUT",
            &format!("/api/v1/gateways/edge?version={}", g["version"]),
            Some(spec),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // Mid-order: A has published the challenge and waits for the paused node to take it.
    let deadline = Instant::now() + ACME_WAIT;
    loop {
        let (_, snap) = b.api("GET", "/api/v1/gateways/edge/snapshot", None).await;
        if snap.to_string().contains("key_authorization") {
            break;
        }
        assert!(Instant::now() < deadline, "no challenge published: {snap}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.process.signal(libc::SIGKILL);
    node.signal(libc::SIGCONT);

    // B leads now, and finishes: one valid certificate, issued once, by B.
    b.process
        .wait_for("leads the background duties", WAIT)
        .await;
    acme_state(&b, "a.test", "valid").await;
    assert_eq!(
        b.process.count("certificate issued"),
        1,
        "{}",
        b.process.output()
    );
    assert_eq!(
        a.process.count("certificate issued"),
        0,
        "{}",
        a.process.output()
    );
    let (_, hosts) = b.api("GET", "/api/v1/acme/hosts", None).await;
    assert_eq!(hosts["items"].as_array().unwrap().len(), 1, "{hosts}");
    let ca_root = pebble.root().await;
    let (_, text) = eventually_https(tls_port, "a.test", &ca_root, "/app/x").await;
    assert!(text.ends_with("secure"), "{text}");
    n.stop().await;
}
