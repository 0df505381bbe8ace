//! Applying Snapshots while serving, listener reconciliation, refusing bad Snapshots as a
//! whole, and graceful drain.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Gw, WEB, service};
use portico_testkit::{Client, Reply, Upstream};

fn config(target: &str, a: &Upstream, b: &Upstream) -> String {
    format!(
        "{WEB}{}{}\n[[routes]]\nname = \"r\"\nforward = {{ service = \"{target}\" }}\n",
        service("a", &[a.addr], ""),
        service("b", &[b.addr], "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_snapshots_under_load_fails_no_request() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let gw = Arc::new(Gw::start(&config("a", &a, &b)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (gw, stop, failures, done) = (gw.clone(), stop.clone(), failures.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            let mut seen = std::collections::HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                match client
                    .send(portico_testkit::client::get(&gw.url("/")))
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        seen.insert(r.text());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        }));
    }
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let target = if i % 2 == 0 { "b" } else { "a" };
        gw.apply(&config(target, &a, &b))
            .await
            .expect("valid snapshot applies");
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(done.load(Ordering::Relaxed) > 100);
    assert!(seen.contains("a") && seen.contains("b"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_reconciled_by_diff() {
    let fixed = |name: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nfixed_response = {{ status = 200, body = \"{name}\" }}\n"
        )
    };
    let gw = Gw::start(&format!("{WEB}{}", fixed("one"))).await;
    let web = gw.addr("web");
    let client = Client::new();
    assert_eq!(client.get(&format!("http://{web}/")).await.text(), "one");
    // Add a listener; the unchanged one keeps its port and gets the new routes.
    let two = "[[listeners]]\nname = \"extra\"\naddress = \"127.0.0.1\"\nport = 0\n";
    gw.apply(&format!("{WEB}{two}{}", fixed("two")))
        .await
        .unwrap();
    let listeners = gw.gw.listeners().await;
    let port_of = |n: &str| {
        listeners
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, a)| a.port())
    };
    assert_eq!(
        port_of("web"),
        Some(web.port()),
        "an unchanged listener keeps its socket"
    );
    let extra = port_of("extra").expect("the new listener is bound");
    assert_eq!(client.get(&format!("http://{web}/")).await.text(), "two");
    assert_eq!(
        Client::new()
            .get(&format!("http://127.0.0.1:{extra}/"))
            .await
            .text(),
        "two"
    );
    // Remove it: new connections are refused.
    gw.apply(&format!("{WEB}{}", fixed("three"))).await.unwrap();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", extra))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a removed listener stops accepting");
    assert_eq!(client.get(&format!("http://{web}/")).await.text(), "three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshots_change_nothing() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let gw = Gw::start(&config("a", &a, &b)).await;
    let client = Client::new();
    let version = gw.gw.version();
    // Invalid: refused by the gateway itself (not only by the parser) with the field path;
    // the old routes serve on.
    let invalid: portico_model::Snapshot =
        portico_model::snapshot::parse(&config("nobody", &a, &b), portico_model::Format::Toml)
            .unwrap();
    let err = gw.gw.apply(&invalid).await.unwrap_err().to_string();
    assert!(err.contains("routes[0].forward.service"), "{err}");
    assert_eq!(client.get(&gw.url("/")).await.text(), "a");
    assert_eq!(gw.gw.version(), version);
    // Valid but a new listener cannot bind: refused as a whole, so the route change in the
    // same Snapshot does not take effect either.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let with_bad_listener = format!(
        "{}[[listeners]]\nname = \"taken\"\naddress = \"127.0.0.1\"\nport = {port}\n",
        config("b", &a, &b)
    );
    let err = gw.apply(&with_bad_listener).await.unwrap_err();
    assert!(err.contains(&port.to_string()), "{err}");
    assert_eq!(
        client.get(&gw.url("/")).await.text(),
        "a",
        "nothing of the refused Snapshot applies"
    );
    assert_eq!(gw.gw.version(), version);
    let m = gw.metrics().await;
    assert!(
        m.contains("portico_config_reloads_total{result=\"rejected\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let slow = Upstream::start(|_| {
        Reply::Delay(
            Duration::from_millis(1000),
            Box::new(Reply::text("finished")),
        )
    })
    .await;
    let cfg = format!(
        "{WEB}{}\n[[routes]]\nname = \"r\"\nforward = {{ service = \"s\" }}\n",
        service("s", &[slow.addr], "")
    );
    let gw = Arc::new(Gw::start(&cfg).await);
    let internal = gw.gw.internal_addr().unwrap();
    let client = Client::new();
    assert_eq!(
        client
            .get(&format!("http://{internal}/readyz"))
            .await
            .status,
        200
    );
    let url = gw.url("/");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shutdown = tokio::spawn({
        let gw = gw.clone();
        async move { gw.gw.shutdown().await }
    });
    // While draining, the node is not ready.
    let mut not_ready = false;
    for _ in 0..50 {
        if client
            .get(&format!("http://{internal}/readyz"))
            .await
            .status
            == 503
        {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(not_ready, "/readyz answers 503 while draining");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "finished");
    shutdown.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(gw.addr("web"))
            .await
            .is_err(),
        "no new connections after shutdown"
    );
}

/// Routes as TOML: (name, host, path, body) in definition order.
fn fixed_routes(routes: &[(&str, &str, &str, &str)]) -> String {
    routes
        .iter()
        .map(|(name, host, path, body)| {
            format!(
                "[[routes]]\nname = \"{name}\"\nmatch = {{ hosts = [\"{host}\"], path = {{ prefix = \"{path}\" }} }}\nfixed_response = {{ status = 200, body = \"{body}\" }}\n"
            )
        })
        .collect()
}

/// A change applied as the routes it touched (what a node does with deltas) serves exactly
/// what the whole snapshot does: changed, added and removed routes, and a route added in
/// front of one that matches the same requests (definition order decides between them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_compiled_by_what_it_touched_serves_like_the_whole_snapshot() {
    use portico_model::{Format, GatewayFile, delta};
    let parse = |routes: &str| {
        GatewayFile::parse(&format!("{}\n{WEB}{routes}", common::NODE), Format::Toml)
            .unwrap()
            .into_parts()
            .1
    };
    let before = fixed_routes(&[
        ("a", "a.test", "/", "a1"),
        ("b", "b.test", "/", "b1"),
        ("c", "c.test", "/x", "c1"),
        ("gone", "d.test", "/", "d1"),
    ]);
    let gw = Gw::start(&format!("{WEB}{before}")).await;
    let client = Client::new();
    let get = |host: &'static str, path: &'static str| {
        let mut r = portico_testkit::client::get(&gw.url(path));
        r.headers_mut().insert("host", host.parse().unwrap());
        client.send(r)
    };
    assert_eq!(get("a.test", "/").await.unwrap().text(), "a1");
    // `a` changes, `first` is added before `c` on its host and path (it wins the tie),
    // `gone` is removed, `b` stays.
    let after = fixed_routes(&[
        ("a", "a.test", "/", "a2"),
        ("b", "b.test", "/", "b1"),
        ("first", "c.test", "/x", "first"),
        ("c", "c.test", "/x", "c1"),
    ]);
    let (old, new) = (parse(&before), parse(&after));
    let changes = delta::diff(&old, &new).unwrap();
    let mut touched = delta::Touched::default();
    touched.add(&changes);
    assert!(!touched.other, "{touched:?}");
    let mut held = delta::Held::new(old);
    held.apply(changes, &new.digest()).unwrap();
    gw.gw
        .apply_update(held.snapshot(), &touched, "next")
        .await
        .unwrap();
    for (host, path, want) in [
        ("a.test", "/", "a2"),
        ("b.test", "/", "b1"),
        ("c.test", "/x", "first"),
    ] {
        let r = get(host, path).await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, want.to_owned()),
            "{host}"
        );
    }
    assert_eq!(get("d.test", "/").await.unwrap().status, 404);
    // A change of anything else (a listener) compiles everything, and still applies.
    let mut more = held.snapshot().clone();
    more.listeners[0].idle_timeout = "2m".parse().unwrap();
    let changes = delta::diff(held.snapshot(), &more).unwrap();
    let mut touched = delta::Touched::default();
    touched.add(&changes);
    assert!(touched.other);
    held.apply(changes, &more.digest()).unwrap();
    gw.gw
        .apply_update(held.snapshot(), &touched, "again")
        .await
        .unwrap();
    assert_eq!(get("c.test", "/x").await.unwrap().text(), "first");
    // A changed route the runtime refuses refuses the whole change: the old one serves.
    let mut bad = held.snapshot().clone();
    bad.routes[0].forward = Some(portico_model::Forward {
        service: Some("nowhere".into()),
        ..Default::default()
    });
    bad.routes[0].fixed_response = None;
    let changes = delta::diff(held.snapshot(), &bad).unwrap();
    let mut touched = delta::Touched::default();
    touched.add(&changes);
    held.apply(changes, &bad.digest()).unwrap();
    assert!(
        gw.gw
            .apply_update(held.snapshot(), &touched, "bad")
            .await
            .is_err()
    );
    assert_eq!(get("a.test", "/").await.unwrap().text(), "a2");
}
