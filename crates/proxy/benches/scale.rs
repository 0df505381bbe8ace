//! A node holding a large configuration: 50,000 routes and 1,000,000 API keys (each its
//! consumer's, subscribed to one API). Measures, in one process: building what the node
//! holds and serves from a whole snapshot; a one-route change as it travels (JSON and
//! gzip bytes) and as it applies (the delta to what is held, then the runtime); the memory
//! per route and per key; and the cost of one key lookup at 1,000 keys and at 1,000,000,
//! side by side.
//!
//! Run: `cargo bench -p portico-proxy --bench scale` (`ROUTES=` and `KEYS=` change the
//! sizes). Release build, about a minute and 2 GiB of memory at the full sizes.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use http::HeaderMap;
use portico_model::delta::{Changes, Held, Kind, PlacedRoute, Touched};
use portico_model::packed::{ApiKeys, Consumers};
use portico_model::{
    ApiKeyGrant, ConsumerLimits, DeltaStep, Format, GatewayFile, KeyType, Route, Snapshot,
    SyncDeltas,
};
use portico_proxy::Gateway;
use portico_proxy::auth::{Auth, SecurityRuntime, authenticate};
use sha2::{Digest as _, Sha256};

const NODE: &str = r#"
[node]
workers = 1
internal = { address = "127.0.0.1:0" }
access_log = { enabled = false }

[[listeners]]
name = "web"
address = "127.0.0.1"
port = 0
"#;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident and peak memory of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn route(i: usize, service: usize) -> Route {
    serde_json::from_value(serde_json::json!({
        "name": format!("r{i}"),
        "match": {
            "hosts": [format!("h{}.example.com", i / 10)],
            "path": {"prefix": format!("/api/{i}")},
        },
        "forward": {"targets": [{"service": format!("s{service}")}]},
        "auth": {"api": format!("api-{}", i % 10), "mode": "api_key"},
    }))
    .unwrap()
}

/// The node's settings and a snapshot of `routes` routes and `keys` keys.
fn snapshot(routes: usize, keys: usize) -> (portico_model::NodeSettings, Snapshot) {
    let (node, mut s) = GatewayFile::parse(NODE, Format::Toml).unwrap().into_parts();
    s.services = (0..100)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "name": format!("s{i}"),
                "endpoints": [{"address": format!("127.0.0.1:{}", 20000 + i)}],
            }))
            .unwrap()
        })
        .collect();
    s.routes = (0..routes).map(|i| route(i, i % 100)).collect();
    // Packed as they are made, as a node packs them as it reads them.
    s.security.api_keys = ApiKeys::try_from_iter((0..keys).map(|i| ApiKeyGrant {
        hash: hex(&Sha256::digest(format!("key-{i}"))),
        consumer: format!("consumer-{i}"),
        key_type: KeyType::Production,
        apis: vec![format!("api-{}", i % 10)],
        expires_at: None,
    }))
    .unwrap();
    s.security.consumers = Consumers::try_from_iter((0..keys).map(|i| ConsumerLimits {
        name: format!("consumer-{i}"),
        tier: None,
        subscriptions: Default::default(),
        apis: vec![format!("api-{}", i % 10)],
    }))
    .unwrap();
    (node, s)
}

/// Applies `changes` as a node does: to what is held (checking the digest), then to the
/// runtime, compiling only what they touched.
async fn apply(gw: &Gateway, held: &mut Held, changes: Changes, want: &str) {
    let mut touched = Touched::default();
    touched.add(&changes);
    let t = Instant::now();
    held.apply(changes, want).expect("applies");
    let applied = t.elapsed();
    let t = Instant::now();
    gw.apply_update(held.snapshot(), &touched, "next")
        .await
        .expect("serves");
    let served = t.elapsed();
    println!(
        "  applied: {} to what is held, {} to the runtime, {} in all",
        ms(applied),
        ms(served),
        ms(applied + served)
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// Nanoseconds per key lookup (a valid key, found) with `keys` keys.
fn lookup_ns(keys: usize) -> f64 {
    let (_, s) = snapshot(0, keys);
    let sec = SecurityRuntime::compile(&s.security);
    let auth = Auth::compile(&portico_model::RouteAuth {
        api: "api-3".into(),
        mode: portico_model::AuthMode::ApiKey,
        api_key_header: "apikey".into(),
        api_key_query: None,
        scopes: Vec::new(),
    })
    .unwrap();
    // Keys spread over the whole table, each subscribed to api-3.
    let headers: Vec<HeaderMap> = (0..1000)
        .map(|j| {
            let i = (j * 7919 % (keys / 10).max(1)) * 10 + 3;
            let mut h = HeaderMap::new();
            h.insert("apikey", format!("key-{i}").parse().unwrap());
            h
        })
        .collect();
    for h in &headers {
        authenticate(&sec, &auth, h, None, 0).expect("a valid key");
    }
    let rounds = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        for h in &headers {
            black_box(authenticate(&sec, &auth, black_box(h), None, 0).is_ok());
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * headers.len()) as f64
}

/// Set in the process that measures memory: the file with the snapshot's JSON.
const CHILD: &str = "PORTICO_SCALE_SNAPSHOT";

/// Reads the snapshot at `path` as a node does, holds it and starts a gateway on it,
/// saying what each step added to this process's resident memory.
fn node_memory(path: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (node, _) = GatewayFile::parse(NODE, Format::Toml).unwrap().into_parts();
    let (start, _) = rss();
    // Streamed from the file, as a node reads its cache and a whole snapshot it fetches.
    let t = Instant::now();
    let file = std::fs::File::open(path).unwrap();
    let s: Snapshot =
        serde_json::from_reader(std::io::BufReader::with_capacity(1 << 20, file)).unwrap();
    let read = t.elapsed();
    let t = Instant::now();
    let held = Held::new(s);
    let digest = t.elapsed();
    let (with_held, _) = rss();
    let t = Instant::now();
    let gw = rt
        .block_on(Gateway::start(&node, held.snapshot()))
        .expect("starts");
    let started = t.elapsed();
    let (now, peak) = rss();
    println!(
        "read in {}, digest in {}, runtime started in {}",
        ms(read),
        ms(digest),
        ms(started)
    );
    println!(
        "memory of a node (a fresh process): {} for the snapshot as held, {} more for the runtime, {} in all (peak {} while reading its JSON)",
        mib(with_held - start),
        mib(now - with_held),
        mib(now - start),
        mib(peak.saturating_sub(start)),
    );
    rt.block_on(gw.shutdown());
}

fn main() {
    if let Ok(path) = std::env::var(CHILD) {
        return node_memory(&path);
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    let routes = env("ROUTES", 50_000);
    let keys = env("KEYS", 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("# A node with {routes} routes and {keys} API keys\n");

    // Key lookups, side by side, before anything large is in memory.
    let small = lookup_ns(1_000);
    let large = lookup_ns(keys);
    println!(
        "key lookup (SHA-256 of the key, table probe, checks): {small:.0} ns at 1,000 keys, {large:.0} ns at {keys} keys ({:.2}x)",
        large / small
    );
    if std::env::var_os("LOOKUP_ONLY").is_some() {
        return;
    }

    // The node's side starts from the JSON it reads (from the control plane or its
    // cache). Memory is measured in a fresh process that does just that: in this one,
    // what building the snapshot freed would be reused and hide what holding it costs.
    let (node, s) = snapshot(routes, keys);
    let body = serde_json::to_vec(&s).unwrap();
    drop(s);
    println!("whole snapshot: {} of JSON", mib(body.len() as u64));
    let path = std::env::temp_dir().join(format!("portico-scale-{}.json", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(child.status.success(), "{child:?}");
    print!("{}", String::from_utf8_lossy(&child.stdout));
    let s: Snapshot = serde_json::from_slice(&body).unwrap();
    drop(body);

    rt.block_on(async move {
        let mut held = Held::new(s);
        let gw = Gateway::start(&node, held.snapshot())
            .await
            .expect("starts");

        // Changes as the control plane would send them, each applied as a node does.
        let mut version = 1u64;
        let mut step = |changes: Changes, want: portico_model::delta::Digest| {
            version += 1;
            let wire = serde_json::to_vec(&SyncDeltas {
                gateway: "edge".into(),
                steps: vec![DeltaStep {
                    from: version - 1,
                    version,
                    hash: want.to_text(),
                    changes: changes.clone(),
                }],
            })
            .unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&wire).unwrap();
            (
                changes,
                want.to_text(),
                wire.len(),
                gz.finish().unwrap().len(),
            )
        };
        let placed = |after: &str, r: &Route| PlacedRoute {
            after: Some(after.to_owned()),
            route: r.clone(),
        };

        // 1. One route changes where it stands.
        let i = routes / 2;
        let old = held.snapshot().routes[i].clone();
        let new = route(i, (i + 1) % 100);
        let prev = format!("r{}", i - 1);
        let mut want = held.digest();
        want.remove(Kind::Route, &format!("r{i}"), &placed(&prev, &old));
        want.add(Kind::Route, &format!("r{i}"), &placed(&prev, &new));
        let (changes, want, json, gz) = step(
            Changes {
                routes: vec![placed(&prev, &new)],
                ..Default::default()
            },
            want,
        );
        println!("\none route changed: {json} bytes of JSON on the wire, {gz} gzipped");
        apply(&gw, &mut held, changes, &want).await;

        // 2. One route added between two others (the one after it is placed again).
        let added = route(routes + 1, 7);
        let next = held.snapshot().routes[i + 1].clone();
        let me = format!("r{i}");
        let added_name = format!("r{}", routes + 1);
        let mut want = held.digest();
        want.add(Kind::Route, &added_name, &placed(&me, &added));
        want.remove(Kind::Route, &format!("r{}", i + 1), &placed(&me, &next));
        want.add(
            Kind::Route,
            &format!("r{}", i + 1),
            &placed(&added_name, &next),
        );
        let (changes, want, json, gz) = step(
            Changes {
                routes: vec![placed(&me, &added), placed(&added_name, &next)],
                ..Default::default()
            },
            want,
        );
        println!("\none route added: {json} bytes of JSON on the wire, {gz} gzipped");
        apply(&gw, &mut held, changes, &want).await;

        // 3. One API key added.
        let key = ApiKeyGrant {
            hash: hex(&Sha256::digest("key-new")),
            consumer: "consumer-new".into(),
            key_type: KeyType::Production,
            apis: vec!["api-1".into()],
            expires_at: None,
        };
        let mut want = held.digest();
        want.add(Kind::ApiKey, &key.hash, &key);
        let (changes, want, json, gz) = step(
            Changes {
                api_keys: vec![key],
                ..Default::default()
            },
            want,
        );
        println!("\none API key added: {json} bytes of JSON on the wire, {gz} gzipped");
        apply(&gw, &mut held, changes, &want).await;
        gw.shutdown().await;
    });
    let _ = std::io::stdout().flush();
}
