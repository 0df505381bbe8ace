//! The browser harness end to end on pages that exist today: a real control plane's OpenAPI
//! document and health check shown in headless Chromium, scripts and alerts detected, a
//! failing step leaving its screenshot (for an `Err` and for a panic), and a browser
//! dropped without `close` leaving no process behind.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;
use portico_testkit::Browser;
use tempfile::TempDir;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_control_plane_pages_and_screenshots_failed_steps() {
    let root = TempDir::new().unwrap();
    let data = root.path().join("data");
    let (cp, mut b) = tokio::join!(
        start_server(&data, free_port(), free_port(), None),
        Browser::start()
    );

    b.step("openapi", async {
        b.goto(&format!("{}/api/v1/openapi.json", cp.url)).await?;
        let body = b.wait_for_text("body", "\"openapi\"").await?;
        assert!(body.contains("/api/v1/apis"), "{body}");
        assert!(b.current_url().await?.ends_with("/api/v1/openapi.json"));
        Ok(())
    })
    .await
    .unwrap();

    b.step("healthz", async {
        b.goto(&format!("{}/healthz", cp.url)).await?;
        assert_eq!(b.text("body").await?.trim(), "ok");
        assert!(b.page_source().await?.contains("ok"));
        Ok(())
    })
    .await
    .unwrap();

    // What injection tests look for: a marker set by a script, and an alert.
    b.step("scripts", async {
        assert!(!b.js_marker("__xss").await?);
        b.execute("window.__xss = 1;", vec![]).await?;
        assert!(b.js_marker("__xss").await?);
        assert_eq!(b.alert().await?, None);
        b.execute("setTimeout(() => alert('hi'), 0);", vec![])
            .await?;
        let mut seen = None;
        for _ in 0..40 {
            seen = b.alert().await?;
            if seen.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(seen.as_deref(), Some("hi"));
        assert_eq!(b.alert().await?, None, "the alert was dismissed");
        Ok(())
    })
    .await
    .unwrap();

    // A failing step leaves its screenshot, for an error...
    let shot = b.screenshot_path("missing");
    let _ = std::fs::remove_file(&shot);
    b.set_wait(Duration::from_millis(300));
    let err = b
        .step("missing", async { b.wait_for("#no-such-element").await })
        .await
        .unwrap_err();
    assert_eq!(err.screenshot(), Some(shot.as_path()), "{err}");
    assert!(err.to_string().contains("#no-such-element"), "{err}");
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));

    // ...and for a panic, which goes on (its message and backtrace in the output are
    // expected: a panic hook is global, and silencing it would hide other tests' panics).
    let shot = b.screenshot_path("panics");
    let _ = std::fs::remove_file(&shot);
    let panicked = AssertUnwindSafe(b.step("panics", async {
        assert_eq!(b.text("body").await?, "not this");
        Ok(())
    }))
    .catch_unwind()
    .await;
    assert!(panicked.is_err());
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));

    b.close().await;
}

/// A test that fails before `close` must not leave Chromium running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_browser_leaves_no_process() {
    let b = Browser::start().await;
    let group = b.driver_pid();
    assert!(alive_in_group(group) > 1, "chromedriver and Chromium run");
    drop(b);
    // SIGKILL was sent; the processes need a moment to die.
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = alive_in_group(group);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "processes left in group {group}");
}

/// Processes of process group `pgid` not yet dead (zombies are dead: in a container whose
/// init does not reap, Chromium's orphans stay zombies).
fn alive_in_group(pgid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces, so split after `)`.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X"
        })
        .count()
}
