//! Hosted apps end to end with the real binary: a folder uploaded as versions (only changed
//! files sent), the draft on the built-in gateway by path and the published version on a
//! second gateway's custom domain, what serving does (SPA fallback, 404 page, conditional and
//! range requests, precompressed files, traversal attempts), a node restarted with the
//! control plane down, a 50 MiB bundle, and version switches under load with no failed
//! request.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tempfile::TempDir;

fn write(dir: &Path, rel: &str, body: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A client that does not decompress (to see `Content-Encoding`) or follow redirects.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(
    c: &reqwest::Client,
    url: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = c.get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.bytes().await.unwrap().to_vec())
}

/// Polls until `url` (with `host`) answers 200 with `want`.
async fn serves(c: &reqwest::Client, url: &str, host: Option<&str>, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (st, _, body) = get(c, url, host, &[]).await;
        if st == 200 && body == want.as_bytes() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} ({host:?}) never answered `{want}`; last {st} {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_on_default_published_on_a_custom_domain_with_everything_serving_does() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let dist = root.path().join("dist");
    write(&dist, "index.html", b"<h1>v1</h1>");
    write(&dist, "404.html", b"no such page");
    write(
        &dist,
        "assets/app.3f2a9c1b.js",
        b"console.log('v1 app code');",
    );
    let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    write(&dist, "data/blob.bin", &big);
    write(&dist, "styles.css", b"body { color: red }");
    write(&dist, "styles.css.gz", b"pretend-gzip-bytes");
    write(&dist, "styles.css.br", b"pretend-brotli-bytes");
    let story = "once upon a time there was a gateway. ".repeat(60);
    write(&dist, "story.txt", story.as_bytes());
    cp.cli_ok(&["apps", "create", "shop", "--spa", "--not-found", "404.html"])
        .await;
    let out = cp
        .cli_ok(&["apps", "upload", dist.to_str().unwrap(), "--app", "shop"])
        .await;
    assert!(
        out.contains("Version 1 of `shop`: 8 files, 8 uploaded"),
        "{out}"
    );
    // Version 2 changes one file: only that one travels.
    write(&dist, "index.html", b"<h1>v2</h1>");
    let out = cp
        .cli_ok(&[
            "apps",
            "deploy",
            dist.to_str().unwrap(),
            "--app",
            "shop",
            "--note",
            "new title",
        ])
        .await;
    assert!(
        out.contains("Version 2 of `shop`: 8 files, 1 uploaded (11 bytes), 7 already there"),
        "{out}"
    );
    // The old form of upload still works, and says what it is called now.
    assert!(
        out.contains("is now `portico apps upload DIR --app SLUG`"),
        "{out}"
    );
    cp.cli_ok(&["apps", "publish", "shop", "1"]).await;

    // The draft (2) on the built-in gateway by path, the published one (1) on `live` at
    // shop.example.com.
    let mut n = init_node(root.path(), "live", &cp.url).await;
    n.start().await;
    cp.link(&n, "live", "production", &[]).await;
    cp.cli_ok(&[
        "apps",
        "deploy",
        "shop",
        "2",
        "--gateway",
        "default",
        "--wait",
    ])
    .await;
    cp.cli_ok(&[
        "apps",
        "deploy",
        "shop",
        "1",
        "--gateway",
        "live",
        "--host",
        "shop.example.com",
        "--wait",
    ])
    .await;
    let c = raw_client();
    let draft = format!("http://127.0.0.1:{}/shop/", cp.gateway_port);
    let live = n.url("/");
    serves(&c, &draft, None, "<h1>v2</h1>").await;
    serves(&c, &live, Some("shop.example.com"), "<h1>v1</h1>").await;
    // A draft goes to a production gateway only when asked to, and shows as a draft.
    let (ok, out) = cp
        .cli(&[
            "apps",
            "deploy",
            "shop",
            "2",
            "--gateway",
            "live",
            "--host",
            "shop.example.com",
        ])
        .await;
    assert!(
        !ok && out.contains("--allow-draft") && out.contains("draft"),
        "{out}"
    );
    serves(&c, &live, Some("shop.example.com"), "<h1>v1</h1>").await;
    let out = cp.cli_ok(&["apps", "status", "shop"]).await;
    let default_row = out.lines().find(|l| l.starts_with("default")).unwrap_or("");
    assert!(default_row.contains("draft"), "{out}");
    let live_row = out.lines().find(|l| l.starts_with("live")).unwrap_or("");
    assert!(live_row.contains("published"), "{out}");
    // A node fetches only files of what its gateway serves, and only with its token.
    let sha = |b: &[u8]| -> String {
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(b))
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    let fetch = |hash: String, token: Option<String>| {
        let url = format!("{}/api/v1/sync/blobs/{hash}", cp.url);
        async move {
            let mut req = reqwest::Client::new().get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    let (st, body) = fetch(sha(b"<h1>v1</h1>"), Some(n.token.clone())).await;
    assert_eq!((st, body.as_slice()), (200, b"<h1>v1</h1>".as_slice()));
    let (st, _) = fetch(sha(b"<h1>v2</h1>"), Some(n.token.clone())).await;
    assert_eq!(st, 404, "the draft's file is not the live gateway's");
    let (st, _) = fetch(sha(b"<h1>v1</h1>"), None).await;
    assert_eq!(st, 401);

    // Only the app's domain is served there.
    let (st, _, _) = get(&c, &live, Some("other.example.com"), &[]).await;
    assert_eq!(st, 404);
    let versions = cp.cli_ok(&["apps", "versions", "shop"]).await;
    assert!(
        versions.lines().any(|l| l.starts_with("1 ")
            && l.contains("published")
            && l.contains("live (shop.example.com)")),
        "{versions}"
    );
    assert!(
        versions
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains("draft") && l.contains("default")),
        "{versions}"
    );
    let status = cp.cli_ok(&["apps", "status", "shop"]).await;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("live") && l.contains("node-") && l.contains("(serving it)")),
        "{status}"
    );
    assert!(
        status
            .lines()
            // `builtin`, or `builtin-<id>` for a control-plane node on PostgreSQL.
            .any(|l| l.starts_with("default")
                && l.contains("builtin")
                && l.contains("(serving it)")),
        "{status}"
    );

    // The path without its slash redirects; SPA routes get index.html; assets do not.
    let (st, h, _) = get(
        &c,
        &format!("http://127.0.0.1:{}/shop", cp.gateway_port),
        None,
        &[],
    )
    .await;
    assert_eq!((st, h["location"].to_str().unwrap()), (308, "/shop/"));
    let (st, h, body) = get(&c, &format!("{draft}account/settings"), None, &[]).await;
    assert_eq!((st, body.as_slice()), (200, b"<h1>v2</h1>".as_slice()));
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    let (st, h, body) = get(&c, &format!("{draft}assets/missing.js"), None, &[]).await;
    assert_eq!((st, body.as_slice()), (404, b"no such page".as_slice()));
    assert_eq!(h["cache-control"], "no-cache");

    // MIME types and caching.
    let js = format!("{draft}assets/app.3f2a9c1b.js");
    let (st, h, _) = get(&c, &js, None, &[]).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    let etag = h["etag"].to_str().unwrap().to_owned();
    let modified = h["last-modified"].to_str().unwrap().to_owned();
    let (st, _, body) = get(&c, &js, None, &[("if-none-match", &etag)]).await;
    assert_eq!((st, body.len()), (304, 0));
    let (st, _, _) = get(&c, &js, None, &[("if-modified-since", &modified)]).await;
    assert_eq!(st, 304);
    let (st, _, _) = get(&c, &js, None, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(st, 200);

    // Ranges.
    let bin = format!("{draft}data/blob.bin");
    let (st, h, body) = get(&c, &bin, None, &[("range", "bytes=100-199")]).await;
    assert_eq!(st, 206);
    assert_eq!(h["content-range"], format!("bytes 100-199/{}", big.len()));
    assert_eq!(body, big[100..200]);
    let (st, _, body) = get(&c, &bin, None, &[("range", "bytes=-10")]).await;
    assert_eq!((st, body.as_slice()), (206, &big[big.len() - 10..]));
    let (st, h, _) = get(&c, &bin, None, &[("range", "bytes=999999999-")]).await;
    assert_eq!(st, 416);
    assert_eq!(h["content-range"], format!("bytes */{}", big.len()));
    let (st, _, body) = get(
        &c,
        &bin,
        None,
        &[("range", "bytes=0-1"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!((st, body.len()), (200, big.len()));

    // Precompressed siblings when accepted, the file itself otherwise.
    let css = format!("{draft}styles.css");
    let (_, h, body) = get(&c, &css, None, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(
        (h["content-encoding"].to_str().unwrap(), body.as_slice()),
        ("br", b"pretend-brotli-bytes".as_slice())
    );
    assert_eq!(h["content-type"], "text/css; charset=utf-8");
    assert_eq!(h["vary"], "accept-encoding");
    let (_, h, body) = get(&c, &css, None, &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (h["content-encoding"].to_str().unwrap(), body.as_slice()),
        ("gzip", b"pretend-gzip-bytes".as_slice())
    );
    let (_, h, body) = get(&c, &css, None, &[]).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(body, b"body { color: red }");

    // Text without a sibling is gzipped on the fly for clients that take it.
    let txt = format!("{draft}story.txt");
    let (_, h, body) = get(&c, &txt, None, &[("accept-encoding", "gzip")]).await;
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["vary"], "accept-encoding");
    assert!(body.len() < story.len() / 4, "{} bytes", body.len());
    let unzipped = reqwest::get(&txt).await.unwrap().text().await.unwrap();
    assert_eq!(unzipped, story);
    let (_, h, body) = get(&c, &txt, None, &[]).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(body, story.as_bytes());

    // Traversal: nothing outside the app's files, whatever the encoding.
    std::fs::write(root.path().join("secret.txt"), "top secret").unwrap();
    for attempt in [
        "/shop/../secret.txt",
        "/shop/%2e%2e/secret.txt",
        "/shop/%2e%2e%2fsecret.txt",
        "/shop/..%2f..%2fsecret.txt",
        "/shop/%252e%252e/%252e%252e/secret.txt",
        "/shop/assets/..%5c..%5csecret.txt",
        "/shop/%00index.html",
    ] {
        let url = format!("http://127.0.0.1:{}{attempt}", cp.gateway_port);
        let (st, _, body) = get(&c, &url, None, &[]).await;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("top secret"), "{attempt}: {st} {text}");
        assert!(
            st == 400 || st == 404 || text == "<h1>v2</h1>",
            "{attempt}: {st} {text}"
        );
    }
    // Only GET and HEAD.
    let r = c.post(&draft).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = c.head(&bin).send().await.unwrap();
    assert_eq!(
        r.headers()["content-length"],
        big.len().to_string().as_str()
    );

    // Version 1 on the built-in gateway too, then a rollback to what ran before (2).
    cp.cli_ok(&[
        "apps",
        "deploy",
        "shop",
        "1",
        "--gateway",
        "default",
        "--wait",
    ])
    .await;
    serves(&c, &draft, None, "<h1>v1</h1>").await;
    cp.cli_ok(&["apps", "rollback", "shop", "--gateway", "default", "--wait"])
        .await;
    serves(&c, &draft, None, "<h1>v2</h1>").await;
    let (ok, text) = cp
        .cli(&["apps", "rollback", "shop", "--gateway", "live"])
        .await;
    assert!(!ok && text.contains("no earlier version"), "{text}");

    // The node restarts while the control plane is down: it serves from its cache.
    let mut cp = cp;
    cp.process.signal(libc::SIGTERM);
    assert!(cp.process.wait(WAIT).await.is_some());
    n.stop().await;
    n.start().await;
    serves(&c, &live, Some("shop.example.com"), "<h1>v1</h1>").await;
    let (st, _, body) = get(
        &c,
        &format!("{live}data/blob.bin"),
        Some("shop.example.com"),
        &[],
    )
    .await;
    assert_eq!((st, body.len()), (200, big.len()));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_bundle_reaches_a_node_intact() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let dist = root.path().join("dist");
    let mut big = vec![0u8; 50 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    write(&dist, "index.html", b"big app");
    write(&dist, "video/intro.mp4", &big);
    cp.cli_ok(&["apps", "create", "media"]).await;
    let mut n = init_node(root.path(), "edge", &cp.url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    cp.cli_ok(&[
        "apps",
        "deploy",
        dist.to_str().unwrap(),
        "--app",
        "media",
        "--allow-draft",
        "--gateway",
        "edge",
        "--wait",
    ])
    .await;
    let c = raw_client();
    serves(&c, &n.url("/media/"), None, "big app").await;
    let (st, h, body) = get(&c, &n.url("/media/video/intro.mp4"), None, &[]).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-type"], "video/mp4");
    assert!(
        body == big,
        "the 50 MiB file differs ({} bytes)",
        body.len()
    );
    let (st, _, body) = get(
        &c,
        &n.url("/media/video/intro.mp4"),
        None,
        &[("range", "bytes=52428700-")],
    )
    .await;
    assert_eq!((st, body.as_slice()), (206, &big[52_428_700..]));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_versions_under_load_fails_no_request() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let dist = root.path().join("dist");
    cp.cli_ok(&["apps", "create", "site"]).await;
    for v in 1..=3 {
        write(&dist, "index.html", format!("version {v}").as_bytes());
        // Each version has its own asset, not the ones before.
        let _ = std::fs::remove_file(dist.join(format!("assets/v{}.js", v - 1)));
        write(
            &dist,
            &format!("assets/v{v}.js"),
            format!("asset of {v}").as_bytes(),
        );
        cp.cli_ok(&["apps", "deploy", dist.to_str().unwrap(), "--app", "site"])
            .await;
    }
    let mut n = init_node(root.path(), "blue", &cp.url).await;
    n.start().await;
    cp.link(&n, "blue", "production", &[]).await;
    cp.cli_ok(&[
        "apps",
        "deploy",
        "site",
        "1",
        "--allow-draft",
        "--gateway",
        "blue",
        "--wait",
    ])
    .await;
    let c = raw_client();
    let url = n.url("/site/");
    serves(&c, &url, None, "version 1").await;
    // Load: four clients requesting as fast as they can through every switch.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url, c) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            url.clone(),
            c.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        if body.starts_with("version ") {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.lock().unwrap().push(format!("body {body}"));
                        }
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    cp.cli_ok(&[
        "apps",
        "deploy",
        "site",
        "2",
        "--allow-draft",
        "--gateway",
        "blue",
        "--wait",
    ])
    .await;
    serves(&c, &url, None, "version 2").await;
    cp.cli_ok(&[
        "apps",
        "deploy",
        "site",
        "3",
        "--allow-draft",
        "--gateway",
        "blue",
        "--wait",
    ])
    .await;
    serves(&c, &url, None, "version 3").await;
    cp.cli_ok(&["apps", "rollback", "site", "--gateway", "blue", "--wait"])
        .await;
    serves(&c, &url, None, "version 2").await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    // The node keeps the files of what it serves (2) and what it served before (3); version
    // 1's own file is gone from its cache.
    let cached = |v: u32| {
        let hash: String = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
            format!("asset of {v}"),
        ))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
        n.dir
            .join("cache/files")
            .join(&hash[..2])
            .join(&hash)
            .exists()
    };
    assert_eq!(
        (cached(1), cached(2), cached(3)),
        (false, true, true),
        "{}",
        n.output()
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_beyond_the_kept_number_are_deleted_unless_deployed() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let dist = root.path().join("dist");
    cp.cli_ok(&["apps", "create", "tiny", "--keep-versions", "2"])
        .await;
    for v in 1..=4 {
        write(&dist, "index.html", format!("v{v}").as_bytes());
        cp.cli_ok(&["apps", "deploy", dist.to_str().unwrap(), "--app", "tiny"])
            .await;
        if v == 1 {
            cp.cli_ok(&["apps", "release", "tiny", "1", "--gateway", "default"])
                .await;
        }
    }
    let (_, v) = cp.api("GET", "/api/v1/apps/tiny/versions", None).await;
    let numbers: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![4, 3, 1], "{v}");
    // An app that runs somewhere cannot be deleted; once undeployed it can.
    let (ok, text) = cp.cli(&["apps", "delete", "tiny"]).await;
    assert!(!ok && text.contains("undeploy"), "{text}");
    cp.cli_ok(&["apps", "undeploy", "tiny", "--gateway", "default"])
        .await;
    cp.cli_ok(&["apps", "delete", "tiny"]).await;
    let (st, _) = cp.api("GET", "/api/v1/apps/tiny", None).await;
    assert_eq!(st, 404);
    // Bad input is refused with the field named.
    let (st, v) = cp
        .api("POST", "/api/v1/apps", Some(json!({"slug": "Not A Slug"})))
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "slug");
    cp.cli_ok(&["apps", "create", "ok-app"]).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apps/ok-app/versions",
            Some(json!({"files": {"../etc/passwd": {"hash": "0".repeat(64), "size": 1}}})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apps/ok-app/versions",
            Some(json!({"files": {"index.html": {"hash": "a".repeat(64), "size": 1}}})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("not uploaded yet"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_forwards_its_api_paths_to_a_service() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = portico_testkit::Upstream::echo().await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/services",
            Some(json!({"name": "backend", "endpoints": [up.addr.to_string()]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apps",
            Some(json!({"slug": "portal", "spa": true,
                "routes": [{"path": "/api", "service": "backend"}]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let dist = root.path().join("dist");
    write(&dist, "index.html", b"portal");
    cp.cli_ok(&[
        "apps",
        "deploy",
        dist.to_str().unwrap(),
        "--app",
        "portal",
        "--gateway",
        "default",
        "--wait",
    ])
    .await;
    let c = raw_client();
    let base = format!("http://127.0.0.1:{}/portal", cp.gateway_port);
    serves(&c, &format!("{base}/"), None, "portal").await;
    let (st, _, body) = get(&c, &format!("{base}/api/orders?x=1"), None, &[]).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    // The service sees the path inside the app.
    assert_eq!(up.last().uri.to_string(), "/api/orders?x=1");
    // Other paths stay with the app (SPA fallback).
    let (st, _, body) = get(&c, &format!("{base}/apiary"), None, &[]).await;
    assert_eq!((st, body.as_slice()), (200, b"portal".as_slice()));
    // A route to a service that does not exist is refused when deploying, and nothing moves.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apps",
            Some(json!({"slug": "broken", "routes": [{"path": "/api", "service": "nope"}]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (ok, text) = cp
        .cli(&[
            "apps",
            "deploy",
            dist.to_str().unwrap(),
            "--app",
            "broken",
            "--gateway",
            "default",
        ])
        .await;
    assert!(!ok && text.contains("nope"), "{text}");
    serves(&c, &format!("{base}/"), None, "portal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_upload_like_folders_and_unsafe_paths_are_refused() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    cp.cli_ok(&["apps", "create", "packed"]).await;
    // A .tar.gz of the folder itself: `dist/index.html` becomes `index.html`.
    let tgz = root.path().join("app.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tgz).unwrap(),
            flate2::Compression::default(),
        );
        let mut t = tar::Builder::new(gz);
        for (p, body) in [("dist/index.html", "from tar"), ("dist/js/a.js", "a")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, p, body.as_bytes()).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
    }
    let out = cp
        .cli_ok(&[
            "apps",
            "deploy",
            tgz.to_str().unwrap(),
            "--app",
            "packed",
            "--gateway",
            "default",
            "--wait",
        ])
        .await;
    assert!(out.contains("2 files"), "{out}");
    let c = raw_client();
    let base = format!("http://127.0.0.1:{}/packed/", cp.gateway_port);
    serves(&c, &base, None, "from tar").await;
    // A .zip with the files at its top.
    let zip_path = root.path().join("app.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("index.html", opts).unwrap();
        std::io::Write::write_all(&mut z, b"from zip").unwrap();
        z.finish().unwrap();
    }
    cp.cli_ok(&[
        "apps",
        "deploy",
        zip_path.to_str().unwrap(),
        "--app",
        "packed",
        "--gateway",
        "default",
        "--wait",
    ])
    .await;
    serves(&c, &base, None, "from zip").await;
    // An archive that climbs out of its root is refused before anything is sent.
    let evil = root.path().join("evil.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&evil).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("index.html", opts).unwrap();
        z.start_file("../escape.txt", opts).unwrap();
        z.finish().unwrap();
    }
    let (ok, text) = cp
        .cli(&["apps", "deploy", evil.to_str().unwrap(), "--app", "packed"])
        .await;
    assert!(!ok && text.contains("escape.txt"), "{text}");
    let (_, v) = cp.api("GET", "/api/v1/apps/packed/versions", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
}
