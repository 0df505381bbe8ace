//! The real `portico` binary: `gateway check`, `gateway run` with its internal port and
//! access log, reload on SIGHUP and on file change, drain on SIGTERM, and memory that stays
//! flat while 1 GiB streams through each way.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use portico_testkit::process::Process;
use portico_testkit::upstream::pattern_chunk;
use portico_testkit::{Client, Reply, Upstream};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_portico");
const WAIT: Duration = Duration::from_secs(20);

/// A config file in a temporary directory.
struct Config {
    dir: TempDir,
    path: PathBuf,
}

impl Config {
    fn new(name: &str, text: &str) -> Self {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    fn write(&self, text: &str) {
        // Write then rename, as editors do, so the watcher never reads half a file.
        let tmp = self.dir.path().join("next.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn node(access_log: &Path) -> String {
    format!(
        "[node]\nworkers = 1\ninternal = {{ address = \"127.0.0.1:0\" }}\naccess_log = {{ path = \"{}\" }}\ndrain_timeout = \"10s\"\n\
         [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = 0\n",
        access_log.display()
    )
}

/// A running gateway and its addresses.
struct Running {
    process: Process,
    web: SocketAddr,
    internal: SocketAddr,
}

async fn run(config: &Path) -> Running {
    let process = Process::spawn(
        Path::new(BIN),
        &["gateway", "run", "--config", config.to_str().unwrap()],
        &[("PORTICO_LOG_FORMAT", "json"), ("PORTICO_LOG", "info")],
    );
    let web = process.wait_for_log("listener ready", WAIT).await["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let internal = process
        .wait_for_log("internal port ready: /healthz /readyz /metrics", WAIT)
        .await["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Running {
        process,
        web,
        internal,
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_error_with_its_path() {
    let ok = Config::new(
        "gw.toml",
        "[[listeners]]\nport = 8080\n[[routes]]\nfixed_response = { status = 200, body = \"hi\" }\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["gateway", "check", "--config"])
        .arg(&ok.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1 listeners, 0 services, 1 routes"));

    let bad = Config::new(
        "bad.toml",
        "[[listeners]]\nport = 8080\n[[routes]]\nmatch = { path = { regex = \"(abc\" } }\nforward = { service = \"users\" }\n\
         [[routes]]\nmatch = { hosts = [\"a.com:80\"] }\nredirect = { status = 200 }\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["gateway", "check", "--config"])
        .arg(&bad.path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "bad.toml: routes[0].match.path.regex: unclosed group",
        "bad.toml: routes[0].forward.service: no service is named `users`",
        "bad.toml: routes[1].match.hosts[0]",
        "bad.toml: routes[1].redirect.status",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }

    let syntax = Config::new("port.toml", "[[listeners]]\nport = \"eighty\"\n");
    let out = std::process::Command::new(BIN)
        .args(["gateway", "check", "--config"])
        .arg(&syntax.path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners[0].port") && err.contains("line 2"),
        "{err}"
    );

    let json = Config::new(
        "gw.json",
        r#"{"listeners": [{"port": 8080}], "routes": [{"fixed_response": {"status": 204}}]}"#,
    );
    let out = std::process::Command::new(BIN)
        .args(["gateway", "check", "--config"])
        .arg(&json.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_with_health_metrics_and_an_access_log() {
    let up = Upstream::echo().await;
    let cfg = Config::new("gw.toml", "");
    let log = cfg.file("access.log");
    cfg.write(&format!(
        "{}[[services]]\nname = \"users\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"users-route\"\nmatch = {{ path = {{ prefix = \"/users\" }} }}\nforward = {{ service = \"users\" }}\n",
        node(&log),
        up.addr
    ));
    let gw = run(&cfg.path).await;
    let client = Client::new();
    let r = client.get(&format!("http://{}/users/7", gw.web)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/7");
    let id = r.header("x-request-id").unwrap();
    assert_eq!(
        client
            .get(&format!("http://{}/healthz", gw.internal))
            .await
            .status,
        200
    );
    let ready = client.get(&format!("http://{}/readyz", gw.internal)).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    let metrics = client
        .get(&format!("http://{}/metrics", gw.internal))
        .await
        .text();
    assert!(
        metrics.contains("portico_requests_total{listener=\"web\",route=\"users-route\",service=\"users\",code=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("portico_request_duration_seconds_bucket"));
    assert!(metrics.contains("portico_client_connections{listener=\"web\"}"));
    assert!(metrics.contains("portico_upstream_connections{service=\"users\"} 1"));
    let mut line = String::new();
    eventually("the access log line", async || {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        !line.is_empty()
    })
    .await;
    let entry: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["route"], "users-route");
    assert_eq!(entry["service"], "users");
    assert_eq!(entry["endpoint"], up.addr.to_string());
    assert_eq!(entry["request_id"], id.as_str());
    assert_eq!(entry["path"], "/users/7");
    assert!(entry["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(entry["bytes_out"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_sighup_and_on_file_change_and_refuses_bad_configs() {
    let cfg = Config::new("gw.toml", "");
    let log = cfg.file("access.log");
    let body = |b: &str| {
        format!(
            "{}[[routes]]\nname = \"r\"\nfixed_response = {{ status = 200, body = \"{b}\" }}\n",
            node(&log)
        )
    };
    cfg.write(&body("one"));
    let mut gw = run(&cfg.path).await;
    let url = format!("http://{}/", gw.web);
    let client = Client::new();
    assert_eq!(client.get(&url).await.text(), "one");

    // File change (watch is on by default).
    cfg.write(&body("two"));
    eventually("the file-change reload", async || {
        client.get(&url).await.text() == "two"
    })
    .await;

    // SIGHUP, with the watcher racing us: either way "three" must be served.
    cfg.write(&body("three"));
    gw.process.signal(libc::SIGHUP);
    eventually("the SIGHUP reload", async || {
        client.get(&url).await.text() == "three"
    })
    .await;

    // A broken config is refused; the running one keeps serving.
    cfg.write(&format!("{}[[routes]]\nmatch = {{ path = {{ regex = \"(\" }} }}\nfixed_response = {{ status = 200 }}\n", node(&log)));
    gw.process.signal(libc::SIGHUP);
    gw.process.wait_for("reload refused", WAIT).await;
    assert!(
        gw.process.output().contains("unclosed group"),
        "{}",
        gw.process.output()
    );
    assert_eq!(client.get(&url).await.text(), "three");
    gw.process.signal(libc::SIGTERM);
    let status = gw.process.wait(WAIT).await.expect("exits");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let slow = Upstream::start(|_| {
        Reply::Delay(Duration::from_millis(1500), Box::new(Reply::text("done")))
    })
    .await;
    let cfg = Config::new("gw.toml", "");
    cfg.write(&format!(
        "{}[[services]]\nname = \"slow\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nforward = {{ service = \"slow\" }}\n",
        node(&cfg.file("access.log")),
        slow.addr
    ));
    let mut gw = run(&cfg.path).await;
    let url = format!("http://{}/", gw.web);
    let request = tokio::spawn(async move { Client::new().get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.process.signal(libc::SIGTERM);
    let r = request.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "done");
    let status = gw.process.wait(WAIT).await.expect("exits after draining");
    assert!(status.success(), "{status:?}");
    assert!(gw.process.output().contains("draining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_while_a_gibibyte_streams_each_way() {
    const LEN: u64 = 1 << 30;
    let up = Upstream::start(|r| {
        if r.method == http::Method::GET {
            Reply::Stream {
                status: http::StatusCode::OK,
                len: LEN,
            }
        } else {
            Reply::text(r.body_len.to_string())
        }
    })
    .await;
    let cfg = Config::new("gw.toml", "");
    cfg.write(&format!(
        "{}[[services]]\nname = \"big\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nforward = {{ service = \"big\" }}\n",
        node(&cfg.file("access.log")),
        up.addr
    ));
    let gw = run(&cfg.path).await;
    assert_eq!(
        Client::new()
            .send(portico_testkit::client::request(
                http::Method::POST,
                &format!("http://{}/warm", gw.web),
                "x",
                &[]
            ))
            .await
            .unwrap()
            .status,
        200
    );
    let (_, before) = gw.process.memory_kib();

    // Download, counted as it arrives.
    let stream = tokio::net::TcpStream::connect(gw.web).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            Request::get("/down")
                .header("host", "x")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            seen += d.len() as u64;
        }
    }
    assert_eq!(seen, LEN);

    // Upload, streamed from here without a content-length.
    let chunks = (0..(LEN / 65_536)).map(|_| Ok::<_, std::io::Error>(Frame::data(pattern_chunk())));
    let stream = tokio::net::TcpStream::connect(gw.web).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/up")
        .header("host", "x")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        LEN.to_string()
    );

    let (_, after) = gw.process.memory_kib();
    eprintln!("peak RSS before {before} KiB, after streaming 2 GiB {after} KiB");
    assert!(before > 0 && after > 0);
    assert!(
        after - before < 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB while streaming 2 GiB"
    );
}

/// Two gateways set up in one folder each get a cache of their own, named after their
/// config (a shared cache would start one gateway from the other's snapshot).
#[tokio::test]
async fn gateways_initialised_in_one_folder_never_share_a_cache() {
    let root = TempDir::new().unwrap();
    let mut caches = Vec::new();
    for name in ["edge", "eu"] {
        let out = tokio::process::Command::new(BIN)
            .current_dir(root.path())
            .args(["gateway", "init", "--config", &format!("{name}.toml")])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(root.path().join(format!("{name}.toml"))).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("cache_dir"))
            .unwrap()
            .to_owned();
        caches.push(line);
    }
    assert_eq!(
        caches,
        ["cache_dir = \"edge-cache\"", "cache_dir = \"eu-cache\""]
    );
}
