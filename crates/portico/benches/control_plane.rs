//! Control plane benchmarks, with the real binary (not a timed test):
//!
//! 1. deploy → serving: ten nodes, one gateway each; each deploy goes to all ten and the time
//!    until every node answers with the new revision's backend is measured per node;
//! 2. scale: 1,000 gateways and 10,000 APIs (a revision each, each deployed to one gateway),
//!    then the latency of listing everything (every page, following `next`), status and one
//!    more deploy.
//!
//! Each runs on SQLite and then on PostgreSQL (a throwaway cluster from
//! `scripts/postgres.sh`), side by side; on PostgreSQL the deploys are written through
//! control-plane node A while the gateway nodes sync through node B.
//!
//! Run: `cargo bench -p portico --bench control_plane` (`-- --quick` for a smaller run).

#![allow(clippy::unwrap_used, missing_docs)] // a benchmark driver: setup failures panic

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_testkit::process::Process;
use portico_testkit::{Client, Upstream};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<44} n={:<6} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// Where the control plane keeps its state in a run.
#[derive(Clone)]
enum Backend {
    Sqlite,
    /// A PostgreSQL URL, and a second control-plane node on it for the gateways.
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }
}

/// A throwaway PostgreSQL cluster (`scripts/postgres.sh`), stopped when dropped.
struct Pg {
    dir: std::path::PathBuf,
    port: u16,
}

impl Pg {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("portico-bench-pg-{}", std::process::id()));
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
        let ok = std::process::Command::new(script)
            .args(["start", dir.to_str().unwrap(), &port.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "scripts/postgres.sh start failed");
        Self { dir, port }
    }

    /// A fresh database on it.
    fn database(&self, name: &str) -> String {
        let server = format!("postgres://postgres@127.0.0.1:{}", self.port);
        let ok = std::process::Command::new("psql")
            .arg(format!("{server}/postgres"))
            .args(["-qc", &format!("CREATE DATABASE {name}")])
            .status()
            .unwrap();
        assert!(ok.success());
        format!("{server}/{name}")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
        let _ = std::process::Command::new(script)
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

/// A control-plane node on `backend`; with `token`, a further node of a database that has
/// one already (it prints no token, and serves no built-in gateway).
async fn start_server_on(dir: &Path, backend: &Backend, token: Option<&str>) -> (Process, Api) {
    let port = free_port();
    let data = dir.join(if token.is_some() { "data-b" } else { "data" });
    let (listen, gw) = (format!("127.0.0.1:{port}"), free_port().to_string());
    let key = dir.join("secret.key");
    let mut args = vec![
        "server",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--gateway-port",
        &gw,
        "--internal",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--secret-key-file",
        key.to_str().unwrap(),
    ];
    if let Backend::Postgres(url) = backend {
        args.extend(["--database", url.as_str()]);
    }
    if token.is_some() {
        args.push("--no-builtin-gateway");
    }
    let p = Process::spawn(Path::new(BIN), &args, &[("PORTICO_LOG", "warn")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = match token {
        Some(t) => t.to_owned(),
        None => loop {
            if let Some(t) = p
                .lines()
                .iter()
                .map(|l| l.trim().to_owned())
                .find(|l| l.starts_with("pat_"))
            {
                break t;
            }
            assert!(Instant::now() < deadline, "no token:\n{}", p.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
    };
    let api = Api {
        url: format!("http://127.0.0.1:{port}"),
        token,
        http: reqwest::Client::new(),
    };
    // Ready when the API answers.
    while api
        .http
        .get(format!("{}/healthz", api.url))
        .send()
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (p, api)
}

async fn deploy_to_serving(nodes: usize, deploys: usize, backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = start_server_on(dir.path(), backend, None).await;
    // On PostgreSQL the gateway nodes sync through a second control-plane node.
    let (_b, sync_url) = match backend {
        Backend::Sqlite => (None, api.url.clone()),
        Backend::Postgres(_) => {
            let (p, b) = start_server_on(dir.path(), backend, Some(&api.token)).await;
            (Some(p), b.url)
        }
    };
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    let mut names = Vec::new();
    for i in 0..nodes {
        let config = dir.path().join(format!("node{i}.toml"));
        let admin = free_port();
        let out = std::process::Command::new(BIN)
            .args([
                "gateway",
                "init",
                "--config",
                config.to_str().unwrap(),
                "--control-plane",
                &sync_url,
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
                "--cache-dir",
                dir.path().join(format!("cache{i}")).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
                .unwrap()
        };
        let (token, secret) = (field("API token:"), field("JWT secret:"));
        let p = Process::spawn(
            Path::new(BIN),
            &[
                "gateway",
                "run",
                "--config",
                config.to_str().unwrap(),
                "--workers",
                "1",
                "--internal",
                "127.0.0.1:0",
            ],
            &[("PORTICO_LOG", "warn")],
        );
        let traffic = free_port();
        // The admin port answers once the node is up.
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let name = format!("gw{i}");
        api.ok(
            "POST",
            "/api/v1/gateways/link",
            Some(json!({
                "name": name, "type": "production", "url": format!("http://127.0.0.1:{admin}"),
                "api_token": token, "jwt_secret": secret, "listeners": [{"port": traffic, "address": "127.0.0.1"}],
            })),
        )
        .await;
        procs.push(p);
        ports.push(traffic);
        names.push(name);
    }
    let def = |up: &Upstream| json!({"name": "bench", "version": "v1", "context": "/b", "production_endpoints": [format!("http://{}", up.addr)]});
    api.ok("POST", "/api/v1/apis", Some(def(&blue))).await;
    api.ok("POST", "/api/v1/apis/bench-v1/revisions", None)
        .await;
    let v = api.ok("GET", "/api/v1/apis/bench-v1", None).await;
    let version = v["version"].as_i64().unwrap();
    let resp = api
        .http
        .put(format!("{}/api/v1/apis/bench-v1", api.url))
        .bearer_auth(&api.token)
        .header("if-match", format!("\"{version}\""))
        .json(&def(&green))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    api.ok("POST", "/api/v1/apis/bench-v1/revisions", None)
        .await;
    let client = Arc::new(Client::new());
    let mut samples = Vec::new();
    for d in 0..deploys + 1 {
        let (revision, want) = if d % 2 == 0 {
            (1, "blue")
        } else {
            (2, "green")
        };
        let start = Instant::now();
        api.ok(
            "POST",
            "/api/v1/apis/bench-v1/deployments",
            Some(json!({"revision": revision, "gateways": names})),
        )
        .await;
        let mut tasks = Vec::new();
        for port in &ports {
            let client = client.clone();
            let url = format!("http://127.0.0.1:{port}/b/x");
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Ok(r) = client.send(portico_testkit::client::get(&url)).await
                        && r.text() == want
                    {
                        return start.elapsed();
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "{url} never served {want}"
                    );
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            }));
        }
        for t in tasks {
            let took = t.await.unwrap();
            // The first deploy also binds listeners; measure the steady state.
            if d > 0 {
                samples.push(took.as_secs_f64() * 1000.0);
            }
        }
    }
    summary(
        &format!(
            "{}: deploy -> serving, {nodes} nodes, {deploys} deploys",
            backend.name()
        ),
        samples,
    );
}

async fn scale(gateways: usize, apis: usize, backend: &Backend) {
    println!("{}:", backend.name());
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = start_server_on(dir.path(), backend, None).await;
    let api = Arc::new(api);
    let up = Upstream::named("x").await;
    let t = Instant::now();
    run_parallel(gateways, 4, {
        let api = api.clone();
        move |i| {
            let api = api.clone();
            async move {
                api.ok(
                    "POST",
                    "/api/v1/gateways",
                    Some(json!({"name": format!("g{i}"), "type": "production"})),
                )
                .await;
            }
        }
    })
    .await;
    println!(
        "{:<44} {:.1} s",
        format!("create {gateways} gateways"),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let addr = up.addr;
    let deploy_ms = Arc::new(std::sync::Mutex::new(Vec::new()));
    run_parallel(apis, 4, {
        let api = api.clone();
        let deploy_ms = deploy_ms.clone();
        move |i| {
            let api = api.clone();
            let deploy_ms = deploy_ms.clone();
            async move {
                api.ok(
                    "POST",
                    "/api/v1/apis",
                    Some(json!({"name": format!("a{i}"), "version": "v1", "context": format!("/a{i}"), "production_endpoints": [format!("http://{addr}")]})),
                )
                .await;
                api.ok("POST", &format!("/api/v1/apis/a{i}-v1/revisions"), None).await;
                let s = Instant::now();
                api.ok(
                    "POST",
                    &format!("/api/v1/apis/a{i}-v1/deployments"),
                    Some(json!({"revision": 1, "gateways": [format!("g{}", i % gateways)]})),
                )
                .await;
                deploy_ms.lock().unwrap().push(s.elapsed().as_secs_f64() * 1000.0);
            }
        }
    })
    .await;
    println!(
        "{:<44} {:.1} s",
        format!("create, revise and deploy {apis} APIs"),
        t.elapsed().as_secs_f64()
    );
    summary(
        "deploy call while loading (4 clients)",
        deploy_ms.lock().unwrap().clone(),
    );
    // A list is paged (100 by default, 1,000 at most): "all" follows `next` to the end, in
    // pages of 1,000, and the time is that of every page.
    for (name, path, want) in [
        (
            "GET /api/v1/gateways (every page)",
            "/api/v1/gateways",
            gateways,
        ),
        ("GET /api/v1/apis (every page)", "/api/v1/apis", apis),
    ] {
        let mut ms = Vec::new();
        for _ in 0..20 {
            let s = Instant::now();
            let got = list_all(&api, path).await;
            ms.push(s.elapsed().as_secs_f64() * 1000.0);
            // At least what was created (the built-in `default` is listed too).
            assert!(got >= want, "{path}: {got} items, {want} created");
        }
        summary(name, ms);
    }
    for (name, path) in [
        ("GET /api/v1/status (all gateways)", "/api/v1/status"),
        (
            "GET /api/v1/gateways/g7/snapshot",
            "/api/v1/gateways/g7/snapshot",
        ),
    ] {
        let mut ms = Vec::new();
        for _ in 0..20 {
            let s = Instant::now();
            api.ok("GET", path, None).await;
            ms.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        summary(name, ms);
    }
    let mut ms = Vec::new();
    for r in 0..20 {
        let s = Instant::now();
        api.ok(
            "POST",
            "/api/v1/apis/a7-v1/deployments",
            Some(json!({"revision": 1, "gateways": [format!("g{}", (8 + r) % gateways)]})),
        )
        .await;
        ms.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    summary("deploy one API to one more gateway (idle)", ms);
}

/// Every item of the list at `path`, page after page of 1,000 (following `next`): how many.
async fn list_all(api: &Api, path: &str) -> usize {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            None => format!("{path}?limit=1000"),
            Some(c) => format!("{path}?limit=1000&cursor={c}"),
        };
        let v = api.ok("GET", &page, None).await;
        count += v["items"].as_array().map_or(0, Vec::len);
        match v["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return count,
        }
    }
}

async fn run_parallel<F, Fut>(n: usize, workers: usize, f: F)
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let next = next.clone();
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                f(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = Pg::start();
    rt.block_on(async {
        let (nodes, deploys, gateways, apis) = if quick {
            (3, 10, 50, 500)
        } else {
            (10, 50, 1000, 10_000)
        };
        for backend in [
            Backend::Sqlite,
            Backend::Postgres(pg.database("bench_deploy")),
        ] {
            deploy_to_serving(nodes, deploys, &backend).await;
        }
        for backend in [
            Backend::Sqlite,
            Backend::Postgres(pg.database("bench_scale")),
        ] {
            scale(gateways, apis, &backend).await;
        }
    });
}
