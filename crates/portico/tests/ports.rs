//! Ports across processes: the nodes of one gateway may share a port on one machine, a
//! process of another gateway is refused it, with an error that names both.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::path::Path;

use portico_testkit::process::Process;
use tempfile::TempDir;

mod common;

use common::*;

/// A gateway file with one listener on `port` answering `body`.
fn gateway_file(dir: &Path, name: &str, port: u16, body: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[node]\nworkers = 2\ninternal = {{ enabled = false }}\n\n[[listeners]]\naddress = \"127.0.0.1\"\nport = {port}\n\n[[routes]]\nfixed_response = {{ status = 200, body = \"{body}\" }}\n"
        ),
    )
    .unwrap();
    path
}

fn run(config: &Path) -> Process {
    Process::spawn(
        Path::new(BIN),
        &["gateway", "run", "--config", config.to_str().unwrap()],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_is_shared_only_by_the_processes_of_one_gateway() {
    let root = TempDir::new().unwrap();
    let gw_port = free_port();
    let cp = start_server(&root.path().join("data"), free_port(), gw_port, None).await;
    // "control plane ready" comes before the built-in gateway binds its port.
    cp.process.wait_for("listener ready", WAIT).await;

    // The built-in gateway holds its port: a gateway from a file is refused it.
    let intruder = gateway_file(root.path(), "intruder", gw_port, "intruder");
    let mut p = run(&intruder);
    let status = p.wait(WAIT).await.expect("the intruder exits");
    assert!(!status.success());
    let out = p.output();
    assert!(
        out.contains(&format!(
            "port {gw_port} is held by the built-in gateway `default`"
        )),
        "{out}"
    );
    assert!(
        out.contains("intruder.toml"),
        "the error names both:\n{out}"
    );

    // Two processes run from one file are one gateway: they share the port.
    let port = free_port();
    let shared = gateway_file(root.path(), "shared", port, "shared");
    let a = run(&shared);
    a.wait_for("gateway running", WAIT).await;
    let b = run(&shared);
    b.wait_for("gateway running", WAIT).await;
    let client = portico_testkit::Client::new();
    eventually_serves(&client, &format!("http://127.0.0.1:{port}/"), "shared").await;

    // Another gateway's file on that port is refused while either holds it...
    let other = gateway_file(root.path(), "other", port, "other");
    let mut p = run(&other);
    assert!(!p.wait(WAIT).await.unwrap().success());
    assert!(p.output().contains("shared.toml"), "{}", p.output());
    // ...and takes it once both are gone.
    for mut g in [a, b] {
        g.signal(libc::SIGTERM);
        assert!(g.wait(WAIT).await.is_some());
    }
    let c = run(&other);
    c.wait_for("gateway running", WAIT).await;
    eventually_serves(&client, &format!("http://127.0.0.1:{port}/"), "other").await;
}
