//! Helpers shared by the end-to-end tests: a control plane process, gateway nodes
//! installed with `portico gateway init`, polling until a URL answers.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portico_testkit::Client;
use portico_testkit::process::Process;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_portico");
pub const WAIT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up by default): a port picked there can
    // be taken as the source port of any outgoing connection before the child binds it.
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (start - 20_000 + n) % 12_000;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

pub struct ControlPlane {
    pub process: Process,
    pub url: String,
    pub token: String,
    pub gateway_port: u16,
}

pub async fn start_server(
    data: &Path,
    admin_port: u16,
    gateway_port: u16,
    token: Option<&str>,
) -> ControlPlane {
    start_server_with(data, admin_port, gateway_port, token, &[]).await
}

/// A control plane on free ports with its data in `root/data`, its admin token made at
/// first start, and `extra` arguments.
pub async fn server(root: &Path, extra: &[&str]) -> ControlPlane {
    start_server_with(&root.join("data"), free_port(), free_port(), None, extra).await
}

/// [`start_server`] with more arguments.
pub async fn start_server_with(
    data: &Path,
    admin_port: u16,
    gateway_port: u16,
    token: Option<&str>,
    extra: &[&str],
) -> ControlPlane {
    let url = format!("http://127.0.0.1:{admin_port}");
    let listen = format!("127.0.0.1:{admin_port}");
    let gw_port = gateway_port.to_string();
    let mut args: Vec<&str> = vec![
        "server",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--gateway-port",
        &gw_port,
        "--internal",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--node-offline-after",
        "3",
    ];
    // A test that names its own database keeps it.
    let database = if extra.contains(&"--database") {
        None
    } else {
        test_database(data)
    };
    if let Some(url) = &database {
        args.extend(["--database", url.as_str()]);
    }
    args.extend_from_slice(extra);
    let process = Process::spawn(Path::new(BIN), &args, &[]);
    process.wait_for("control plane ready", WAIT).await;
    let token = match token {
        Some(t) => t.to_owned(),
        // Standard output (the banner) and standard error (the log) are read separately:
        // wait for the token line itself.
        None => process.wait_for("    pat_", WAIT).await.trim().to_owned(),
    };
    ControlPlane {
        process,
        url,
        token,
        gateway_port,
    }
}

impl ControlPlane {
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_with(method, path, body, &[]).await
    }

    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Runs a client command of the binary against this control plane.
    pub async fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new(BIN)
            .args(args)
            .env("PORTICO_URL", &self.url)
            .env("PORTICO_TOKEN", &self.token)
            .env("PORTICO_CLI_CONFIG", "/nonexistent/cli.json")
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub async fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.cli(args).await;
        assert!(ok, "portico {args:?} failed:\n{text}");
        text
    }
}

/// A node installed with `portico gateway init`.
pub struct Node {
    /// Extra arguments for `gateway run`.
    pub extra: Vec<String>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub token: String,
    pub secret: String,
    pub admin_port: u16,
    pub traffic_port: u16,
    pub process: Option<Process>,
}

pub async fn init_node(root: &Path, name: &str, cp_url: &str) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.toml");
    let admin_port = free_port();
    let out = tokio::process::Command::new(BIN)
        .args([
            "gateway",
            "init",
            "--config",
            config.to_str().unwrap(),
            "--control-plane",
            cp_url,
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "gateway init failed: {text}");
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"))
    };
    let token = field("API token:");
    let secret = field("JWT secret:");
    // The file holds both, readable by its owner only.
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(file.contains(&token) && file.contains(&secret));
    // Report every second: the test control plane calls a node offline after 3 s.
    let faster = file.replace("heartbeat = \"10s\"", "heartbeat = \"1s\"");
    assert_ne!(faster, file, "no heartbeat in:\n{file}");
    std::fs::write(&config, &faster).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    Node {
        extra: Vec::new(),
        dir,
        config,
        token,
        secret,
        admin_port,
        traffic_port: free_port(),
        process: None,
    }
}

impl Node {
    pub async fn start(&mut self) {
        let mut args: Vec<&str> = vec![
            "gateway",
            "run",
            "--config",
            self.config.to_str().unwrap(),
            // Two workers bind the traffic port with SO_REUSEPORT, so a second node of
            // the same gateway can share it on this one machine.
            "--workers",
            "2",
            // Several nodes share this machine: each gets its own internal port.
            "--internal",
            "127.0.0.1:0",
        ];
        if !self.extra.iter().any(|a| a == "--poll-wait") {
            args.extend(["--poll-wait", "5"]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let p = Process::spawn(Path::new(BIN), &args, &[]);
        p.wait_for("admin API ready", WAIT).await;
        self.process = Some(p);
    }

    pub async fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal(libc::SIGTERM);
            assert!(
                p.wait(WAIT).await.is_some(),
                "the node did not stop:\n{}",
                p.output()
            );
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.traffic_port)
    }

    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(Process::output)
            .unwrap_or_default()
    }
}

/// Polls until `url` answers `want` (deploys reach nodes asynchronously).
pub async fn eventually_serves(client: &Client, url: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match client.send(portico_testkit::client::get(url)).await {
            Ok(r) if r.status == 200 && r.text() == want => return,
            Ok(r) => last = format!("{} {}", r.status, r.text()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered `{want}`; last answer: {last}");
}

/// A real `redis-server` on a free port, without persistence.
pub async fn start_redis() -> (Process, u16) {
    let port = free_port();
    let p = Process::spawn(
        Path::new("redis-server"),
        &[
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
    );
    p.wait_for("Ready to accept connections", WAIT).await;
    (p, port)
}

impl ControlPlane {
    /// Creates the API `spec` (its id is `<name>-<version>`, lower case), freezes revision 1
    /// and deploys it to `gateway`, waiting until the gateway's nodes serve it.
    pub async fn deploy_api(&self, spec: Value, gateway: &str) {
        let (st, v) = self.api("POST", "/api/v1/apis", Some(spec)).await;
        assert_eq!(st, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (st, v) = self
            .api("POST", &format!("/api/v1/apis/{id}/revisions"), None)
            .await;
        assert_eq!(st, 201, "{v}");
        self.cli_ok(&[
            "deploy",
            &id,
            "--revision",
            "1",
            "--gateway",
            gateway,
            "--wait",
        ])
        .await;
    }

    /// Creates tier `name`: `limit` requests a minute.
    pub async fn tier(&self, name: &str, limit: u64) {
        let body = serde_json::json!({"name": name, "limit": limit, "per": "minute"});
        let (st, v) = self.api("POST", "/api/v1/tiers", Some(body)).await;
        assert_eq!(st, 201, "{v}");
    }

    /// Creates consumer `name` on `tier`, subscribes it to `api` and answers a new
    /// production API key for it, all with the CLI.
    pub async fn consumer_key(&self, name: &str, tier: &str, api: &str) -> String {
        self.cli_ok(&["consumers", "create", name, "--tier", tier])
            .await;
        self.cli_ok(&["subscriptions", "add", name, "--api", api])
            .await;
        let out = self
            .cli_ok(&["keys", "create", name, "--type", "production"])
            .await;
        out.split_whitespace()
            .find(|w| w.starts_with("pk_"))
            .unwrap_or_else(|| panic!("no key in {out}"))
            .to_owned()
    }

    /// Links `node` as gateway `name` of type `kind` (its traffic on the node's port) with
    /// the CLI; answers what it printed.
    pub async fn link(&self, node: &Node, name: &str, kind: &str, extra: &[&str]) -> String {
        let url = format!("http://127.0.0.1:{}", node.admin_port);
        let listen = node.traffic_port.to_string();
        let mut args = vec![
            "gateways",
            "link",
            name,
            "--type",
            kind,
            "--url",
            &url,
            "--api-token",
            &node.token,
            "--jwt-secret",
            &node.secret,
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        self.cli_ok(&args).await
    }
}

impl Node {
    /// Another node of the same gateway (HA): same token, secret, traffic port and
    /// arguments, its own admin port and cache, its config written beside this one's.
    pub fn sibling(&self, name: &str) -> Node {
        let other = Node {
            extra: self.extra.clone(),
            dir: self.dir.join(name),
            config: self.dir.join(format!("{name}.toml")),
            token: self.token.clone(),
            secret: self.secret.clone(),
            admin_port: free_port(),
            traffic_port: self.traffic_port,
            process: None,
        };
        let text = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace(
                &format!("127.0.0.1:{}", self.admin_port),
                &format!("127.0.0.1:{}", other.admin_port),
            )
            .replace(
                self.dir.join("cache").to_str().unwrap(),
                other.dir.join("cache").to_str().unwrap(),
            );
        std::fs::write(&other.config, text).unwrap();
        other
    }
}

/// The password of the people the browser tests make.
pub const PASSWORD: &str = "correct horse battery";

/// Creates a user with `roles` through the admin API.
pub async fn user(cp: &ControlPlane, name: &str, roles: &[&str]) {
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/users",
            Some(serde_json::json!({"name": name, "password": PASSWORD, "roles": roles})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
}

/// Signs `name` in with the form at `area`'s sign-in page (`console` or `portal`).
pub async fn sign_in(
    b: &portico_testkit::Browser,
    cp: &ControlPlane,
    area: &str,
    name: &str,
) -> Result<(), portico_testkit::browser::Error> {
    b.goto(&format!("{}/{area}/login", cp.url)).await?;
    b.fill("#name", name).await?;
    b.fill("#password", PASSWORD).await?;
    b.click("#signin-form button[type=submit]").await?;
    b.wait_for_text("#whoami", name).await?;
    Ok(())
}

/// Signs `name` up with the portal's form (the shared password) and waits for the notice
/// that says what happens next (`expect`: a word of it).
pub async fn sign_up(
    b: &portico_testkit::Browser,
    cp: &ControlPlane,
    name: &str,
    expect: &str,
) -> Result<(), portico_testkit::browser::Error> {
    b.goto(&format!("{}/portal/signup", cp.url)).await?;
    b.fill("#signup-name", name).await?;
    b.fill("#signup-password", PASSWORD).await?;
    b.click("#signup-form button[type=submit]").await?;
    b.wait_for_text(".notice", expect).await?;
    Ok(())
}

/// Where Debian keeps PostgreSQL's server programs (`initdb`, `pg_ctl`).
fn pg_bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .last()
        .map(|v| v.join("bin").join(program))
        .unwrap_or_else(|| PathBuf::from(program))
}

/// A throwaway PostgreSQL cluster on loopback, run as the `postgres` user (the tests run as
/// root, which PostgreSQL refuses), stopped and removed when dropped.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The server's options, for a start after a stop.
    opts: String,
}

impl PgCluster {
    /// initdb in a fresh directory, then start it on a free port (trust on loopback only).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// [`PgCluster::start`] taking TLS connections only, with this certificate chain and key
    /// (PEM): a client that does not speak TLS is refused.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("portico-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres", dir.path().to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {out:?}");
            let out = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        run(&[
            pg_bin("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]);
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        if let Some((cert, key)) = tls {
            let (cert_file, key_file) = (data.join("server.crt"), data.join("server.key"));
            std::fs::write(&cert_file, cert).unwrap();
            std::fs::write(&key_file, key).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            // TLS or nothing on loopback.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_file.display(),
                key_file.display()
            ));
            // The files are the server's: `run` hands the directory to `postgres`.
            run(&["true"]);
        }
        let pg = Self { dir, port, opts };
        pg.start_again();
        pg
    }

    /// Starts the server (again, after [`PgCluster::stop`]) and waits until it answers.
    pub fn start_again(&self) {
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", self.dir.path().join("data").to_str().unwrap()])
            .args(["-o", &self.opts])
            .args(["-l", self.dir.path().join("log").to_str().unwrap()])
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    /// The URL of database `name` on it.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server now (`-m fast`: sessions end).
    pub fn stop(&self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", self.dir.path().join("data").to_str().unwrap()])
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes database `name` on the PostgreSQL server at `server` (`postgres://USER@HOST:PORT`)
/// unless it exists.
pub fn create_database(server: &str, name: &str) {
    let exists = std::process::Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args([
            "-tAc",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        ])
        .output()
        .unwrap();
    assert!(exists.status.success(), "psql: {exists:?}");
    if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
        let out = std::process::Command::new("psql")
            .arg(format!("{server}/postgres"))
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql: {out:?}");
    }
}

/// When the suite runs against PostgreSQL (`PORTICO_TEST_POSTGRES=postgres://USER@HOST:PORT`,
/// set by `scripts/test.sh` for its second pass), the database of the control plane whose
/// data directory is `data`: one per directory, so a restart finds its state again.
pub fn test_database(data: &Path) -> Option<String> {
    let server = std::env::var("PORTICO_TEST_POSTGRES").ok()?;
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
        data.to_string_lossy().as_bytes(),
    ));
    let name: String = std::iter::once("t_".to_owned())
        .chain(digest.iter().take(12).map(|b| format!("{b:02x}")))
        .collect();
    create_database(&server, &name);
    Some(format!("{server}/{name}"))
}

/// A database name for a test: `prefix` and the test's temporary directory's name.
pub fn db_name(prefix: &str, root: &Path) -> String {
    let suffix: String = root
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("{prefix}_{}", suffix.to_ascii_lowercase())
}

/// A database of its own on the suite's PostgreSQL, or on a cluster started for this test.
pub fn database(name: &str) -> (Option<PgCluster>, String) {
    match std::env::var("PORTICO_TEST_POSTGRES") {
        Ok(server) => {
            create_database(&server, name);
            (None, format!("{server}/{name}"))
        }
        Err(_) => {
            let pg = PgCluster::start();
            create_database(pg.url("").trim_end_matches('/'), name);
            let url = pg.url(name);
            (Some(pg), url)
        }
    }
}

/// The node's admin status, with the JWT the control plane would send.
pub async fn node_status(n: &Node) -> Value {
    use portico_model::{ADMIN_AUDIENCE, ADMIN_ISSUER, AdminClaims};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = AdminClaims {
        iss: ADMIN_ISSUER.into(),
        aud: ADMIN_AUDIENCE.into(),
        sub: "test".into(),
        iat: now,
        exp: now + 60,
        tok: None,
    };
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(n.secret.as_bytes()),
    )
    .unwrap();
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/admin/v1/status", n.admin_port))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}
