//! `portico apply` end to end with the real binary: the README's one-API file, a file of every
//! kind applied in one transaction (and again, unchanged), a file with one bad object that
//! applies nothing (and a dry run that says the same), and `--prune` limited to the kinds a
//! file names.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

/// Writes `text` to `name` in `dir`.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `portico -o json apply -f FILE [extra...]` and answers the plan.
async fn apply_json(cp: &ControlPlane, path: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["-o", "json", "apply", "-f", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = cp.cli_ok(&args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (kind, name, action) of every item of a plan.
fn actions(plan: &Value) -> Vec<(String, String, String)> {
    plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["name"].as_str().unwrap().to_owned(),
                i["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn triple(kind: &str, name: &str, action: &str) -> (String, String, String) {
    (kind.into(), name.into(), action.into())
}

/// A self-signed certificate for `host`: (cert PEM, key PEM).
fn certificate(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Status of `GET path`.
async fn status(cp: &ControlPlane, path: &str) -> u16 {
    cp.api("GET", path, None).await.0
}

const README_API: &str = r#"name = "Files"
version = "v1"
context = "/files/v1"
production_endpoints = ["http://127.0.0.1:9000"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_api_file_applies_as_it_is() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let api = file(root.path(), "files.toml", README_API);

    let out = cp.cli_ok(&["apply", "-f", api.to_str().unwrap()]).await;
    assert!(out.contains("created") && out.contains("files-v1"), "{out}");
    assert!(
        out.contains("1 created, 0 updated, 0 deleted, 0 unchanged."),
        "{out}"
    );
    let (st, v) = cp.api("GET", "/api/v1/apis/files-v1", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["spec"]["context"], "/files/v1");

    // The same file again: nothing to do.
    let out = cp.cli_ok(&["apply", "-f", api.to_str().unwrap()]).await;
    assert!(
        out.contains("0 created, 0 updated, 0 deleted, 1 unchanged."),
        "{out}"
    );

    // A change shows which field moves, and lands.
    let changed = file(
        root.path(),
        "files2.toml",
        &README_API.replace("9000", "9001"),
    );
    let plan = apply_json(&cp, &changed, &[]).await;
    assert_eq!(actions(&plan), [triple("api", "files-v1", "updated")]);
    assert_eq!(plan["items"][0]["changes"], json!(["production_endpoints"]));
    let (_, v) = cp.api("GET", "/api/v1/apis/files-v1", None).await;
    assert_eq!(
        v["spec"]["production_endpoints"][0],
        "http://127.0.0.1:9001"
    );

    // Any other lone object names its kind; a tier is also told by its `limit`.
    let tier = file(
        root.path(),
        "gold.toml",
        "kind = \"tier\"\nname = \"gold\"\nlimit = 5\n",
    );
    let plan = apply_json(&cp, &tier, &[]).await;
    assert_eq!(actions(&plan), [triple("tier", "gold", "created")]);
    let consumer = file(
        root.path(),
        "acme.json",
        r#"{"kind": "consumer", "name": "acme", "tier": "gold"}"#,
    );
    let plan = apply_json(&cp, &consumer, &[]).await;
    assert_eq!(actions(&plan), [triple("consumer", "acme", "created")]);
    let (_, v) = cp.api("GET", "/api/v1/consumers/acme", None).await;
    assert_eq!(v["spec"]["tier"], "gold", "{v}");
    // Without `kind`, an object no field tells apart is refused, saying what to add.
    let vague = file(root.path(), "vague.toml", "name = \"edge\"\n");
    let (ok, out) = cp.cli(&["apply", "-f", vague.to_str().unwrap()]).await;
    assert!(!ok && out.contains("kind: cannot tell which kind"), "{out}");
}

/// A file with every kind `apply` takes, the certificate named by its upload.
fn every_kind(limit: u32) -> String {
    format!(
        r#"[[gateways]]
name = "edge"
type = "production"
hosts = ["shop.example.test"]

[[services]]
name = "backend"
endpoints = ["127.0.0.1:9"]

[[tiers]]
name = "gold"
limit = {limit}
per = "minute"

[[apis]]
name = "Pets"
version = "v1"
context = "/pets/v1"
production_endpoints = ["http://127.0.0.1:9"]
tier = "gold"

[[consumers]]
name = "acme"
owner = "team-a"

[[subscriptions]]
consumer = "acme"
api = "pets-v1"
tier = "gold"

[[routes]]
name = "hello"
gateways = ["edge"]
route = {{ match = {{ path = {{ prefix = "/hello" }} }}, forward = {{ service = "backend" }} }}

[[certificates]]
name = "shop"
hosts = ["shop.example.test"]

[[apps]]
slug = "shop"
name = "Shop"
spa = true
not_found = "404.html"
cache_control = [{{ pattern = "*.js", value = "public, max-age=600" }}]
routes = [{{ path = "/api", service = "backend" }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_every_kind_applies_in_one_go_and_a_second_run_changes_nothing() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let (cert, key) = certificate("shop.example.test");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/certificates",
            Some(json!({"name": "shop", "cert_pem": cert, "key_pem": key})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let path = file(root.path(), "all.toml", &every_kind(100));

    let plan = apply_json(&cp, &path, &[]).await;
    assert_eq!(
        actions(&plan),
        [
            triple("gateway", "edge", "created"),
            triple("service", "backend", "created"),
            triple("tier", "gold", "created"),
            triple("api", "pets-v1", "created"),
            triple("consumer", "acme", "created"),
            triple("subscription", "acme/pets-v1", "created"),
            triple("route", "hello", "created"),
            // Never uploaded by apply: named, checked, left as it is.
            triple("certificate", "shop", "unchanged"),
            triple("app", "shop", "created"),
        ]
    );
    assert!(!plan.to_string().contains("PRIVATE KEY"), "{plan}");
    // Everything is stored, as the file says.
    for p in [
        "/api/v1/gateways/edge",
        "/api/v1/services/backend",
        "/api/v1/tiers/gold",
        "/api/v1/apis/pets-v1",
        "/api/v1/consumers/acme",
        "/api/v1/routes/hello",
        "/api/v1/apps/shop",
    ] {
        assert_eq!(status(&cp, p).await, 200, "{p}");
    }
    let (_, subs) = cp
        .api("GET", "/api/v1/consumers/acme/subscriptions", None)
        .await;
    assert_eq!(subs["items"][0]["api"], "pets-v1", "{subs}");
    assert_eq!(subs["items"][0]["tier"], "gold", "{subs}");
    let (_, app) = cp.api("GET", "/api/v1/apps/shop", None).await;
    assert_eq!(app["spec"]["routes"][0]["service"], "backend", "{app}");
    assert_eq!(app["spec"]["not_found"], "404.html", "{app}");
    // The raw route reached the gateway's snapshot in the same write.
    let (_, snap) = cp.api("GET", "/api/v1/gateways/edge/snapshot", None).await;
    assert!(snap.to_string().contains("/hello"), "{snap}");
    let (_, before) = cp.api("GET", "/api/v1/gateways/edge", None).await;

    // Again: every object unchanged, no version moves.
    let plan = apply_json(&cp, &path, &[]).await;
    let unchanged: Vec<_> = actions(&plan).into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(unchanged, vec!["unchanged"; 9], "{plan}");
    assert_eq!(
        (
            plan["created"].as_u64(),
            plan["updated"].as_u64(),
            plan["deleted"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    let (_, after) = cp.api("GET", "/api/v1/gateways/edge", None).await;
    assert_eq!(before["version"], after["version"]);

    // One value changed: one object updated, naming the field; the table says so too.
    let path = file(root.path(), "all.toml", &every_kind(200));
    let out = cp.cli_ok(&["apply", "-f", path.to_str().unwrap()]).await;
    assert!(
        out.contains("0 created, 1 updated, 0 deleted, 8 unchanged."),
        "{out}"
    );
    let line = out.lines().find(|l| l.starts_with("updated")).unwrap();
    assert!(
        line.contains("tier") && line.contains("gold") && line.contains("limit"),
        "{out}"
    );
    let (_, tier) = cp.api("GET", "/api/v1/tiers/gold", None).await;
    assert_eq!(tier["spec"]["limit"], 200);
}

/// What an apply and its dry run answer for a file that must fail, and proof that neither
/// stored anything: every name in `absent` is still 404.
async fn refused(cp: &ControlPlane, path: &Path, absent: &[&str]) -> String {
    let p = path.to_str().unwrap();
    let (ok, dry) = cp.cli(&["apply", "-f", p, "--dry-run"]).await;
    assert!(!ok, "the dry run passed:\n{dry}");
    for a in absent {
        assert_eq!(status(cp, a).await, 404, "{a} after the dry run");
    }
    let (ok, real) = cp.cli(&["apply", "-f", p]).await;
    assert!(!ok, "the apply passed:\n{real}");
    for a in absent {
        assert_eq!(status(cp, a).await, 404, "{a} after the apply");
    }
    // The dry run checks exactly what the apply checks.
    assert_eq!(dry, real);
    assert!(real.contains("nothing was applied"), "{real}");
    real
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_one_bad_object_applies_nothing_and_its_dry_run_says_so() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let good = "[[services]]\nname = \"backend\"\nendpoints = [\"127.0.0.1:9\"]\n\n\
                [[tiers]]\nname = \"gold\"\nlimit = 10\n\n\
                [[apis]]\nname = \"Pets\"\nversion = \"v1\"\ncontext = \"/pets/v1\"\nproduction_endpoints = [\"http://127.0.0.1:9\"]\n\n\
                [[consumers]]\nname = \"acme\"\n\n";
    let stored = [
        "/api/v1/services/backend",
        "/api/v1/tiers/gold",
        "/api/v1/apis/pets-v1",
        "/api/v1/consumers/acme",
    ];

    // A subscription on a tier that exists nowhere.
    let bad_tier = file(
        root.path(),
        "bad-tier.toml",
        &format!(
            "{good}[[subscriptions]]\nconsumer = \"acme\"\napi = \"pets-v1\"\ntier = \"platinum\"\n"
        ),
    );
    let out = refused(&cp, &bad_tier, &stored).await;
    assert!(
        out.contains(
            "subscriptions[0].tier: subscription `acme/pets-v1`: no tier named `platinum`"
        ),
        "{out}"
    );

    // A route to a service that exists nowhere.
    let bad_route = file(
        root.path(),
        "bad-route.toml",
        &format!(
            "{good}[[routes]]\nname = \"orders\"\ngateways = [\"default\"]\nroute = {{ forward = {{ service = \"orders\" }} }}\n"
        ),
    );
    let mut absent = stored.to_vec();
    absent.push("/api/v1/routes/orders");
    let out = refused(&cp, &bad_route, &absent).await;
    assert!(
        out.contains("routes[0].route.forward: route `orders`: no service named `orders`"),
        "{out}"
    );

    // An object that breaks its own kind's rules, among good ones.
    let bad_rule = file(
        root.path(),
        "bad-rule.toml",
        &format!("{good}[[tiers]]\nname = \"zero\"\nlimit = 0\n"),
    );
    let out = refused(&cp, &bad_rule, &stored).await;
    assert!(
        out.contains("tiers[1].limit: tier `zero`: must be 1 or more"),
        "{out}"
    );

    // A file whose objects are each fine but that would leave a gateway with a snapshot its
    // nodes refuse (an HTTPS listener no uploaded certificate covers): refused by the
    // recompile inside the same transaction, dry run included.
    let bad_snapshot = file(
        root.path(),
        "bad-snapshot.toml",
        &format!(
            "{good}[[gateways]]\nname = \"secure\"\nhosts = [\"secure.example.test\"]\n\
             listeners = [{{ port = 8443, tls = {{ certificates = [] }} }}]\n"
        ),
    );
    let mut absent = stored.to_vec();
    absent.push("/api/v1/gateways/secure");
    let out = refused(&cp, &bad_snapshot, &absent).await;
    assert!(
        out.contains("gateway `secure`") && out.contains("no uploaded certificate covers"),
        "{out}"
    );

    // A certificate is named, never uploaded by apply.
    let no_cert = file(
        root.path(),
        "no-cert.toml",
        &format!("{good}[[certificates]]\nname = \"shop\"\n"),
    );
    let out = refused(&cp, &no_cert, &stored).await;
    assert!(
        out.contains(
            "certificates[0].name: certificate `shop`: no certificate named `shop` is uploaded"
        ),
        "{out}"
    );

    // Fixed, the same file applies whole.
    let fixed = file(
        root.path(),
        "fixed.toml",
        &format!(
            "{good}[[subscriptions]]\nconsumer = \"acme\"\napi = \"pets-v1\"\ntier = \"gold\"\n"
        ),
    );
    let plan = apply_json(&cp, &fixed, &[]).await;
    assert_eq!(plan["created"], 5, "{plan}");
    for p in stored {
        assert_eq!(status(&cp, p).await, 200, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_objects_of_the_kinds_the_file_names() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    for (path, body) in [
        (
            "/api/v1/services",
            json!({"name": "keep", "endpoints": ["127.0.0.1:9"]}),
        ),
        (
            "/api/v1/services",
            json!({"name": "old", "endpoints": ["127.0.0.1:9"]}),
        ),
        (
            "/api/v1/services",
            json!({"name": "used", "endpoints": ["127.0.0.1:9"]}),
        ),
        ("/api/v1/tiers", json!({"name": "gold", "limit": 10})),
        ("/api/v1/consumers", json!({"name": "acme"})),
        ("/api/v1/gateways", json!({"name": "edge"})),
        (
            "/api/v1/routes",
            json!({"name": "r", "gateways": ["edge"], "route": {"forward": {"service": "used"}}}),
        ),
    ] {
        let (st, v) = cp.api("POST", path, Some(body)).await;
        assert_eq!(st, 201, "{path}: {v}");
    }

    // The file names services only: other services go, nothing of another kind does.
    let services = file(
        root.path(),
        "services.toml",
        "[[services]]\nname = \"keep\"\nendpoints = [\"127.0.0.1:9\"]\n\n\
         [[services]]\nname = \"used\"\nendpoints = [\"127.0.0.1:9\"]\n",
    );
    let dry = apply_json(&cp, &services, &["--prune", "--dry-run"]).await;
    assert_eq!(
        actions(&dry),
        [
            triple("service", "keep", "unchanged"),
            triple("service", "used", "unchanged"),
            triple("service", "old", "deleted"),
        ]
    );
    assert_eq!(
        status(&cp, "/api/v1/services/old").await,
        200,
        "dry run deleted"
    );
    let plan = apply_json(&cp, &services, &["--prune"]).await;
    assert_eq!(actions(&plan), actions(&dry));
    assert_eq!(status(&cp, "/api/v1/services/old").await, 404);
    for p in [
        "/api/v1/services/keep",
        "/api/v1/tiers/gold",
        "/api/v1/consumers/acme",
        "/api/v1/gateways/edge",
        "/api/v1/routes/r",
    ] {
        assert_eq!(status(&cp, p).await, 200, "{p}");
    }
    // Without --prune nothing is deleted.
    let plan = apply_json(&cp, &services, &[]).await;
    assert_eq!(plan["deleted"], 0, "{plan}");

    // An empty section names its kind: every stored gateway but the built-in one goes,
    // and the routes' services and the tiers stay.
    let gateways = file(root.path(), "gateways.toml", "gateways = []\n");
    let plan = apply_json(&cp, &gateways, &["--prune"]).await;
    assert_eq!(actions(&plan), [triple("gateway", "edge", "deleted")]);
    assert_eq!(status(&cp, "/api/v1/gateways/edge").await, 404);
    assert_eq!(status(&cp, "/api/v1/gateways/default").await, 200);

    // A deletion that would leave a route forwarding to nothing is refused, naming the
    // route, and nothing of the file is applied.
    let only_keep = file(
        root.path(),
        "only-keep.toml",
        "[[services]]\nname = \"keep\"\nendpoints = [\"127.0.0.1:9\"]\n\n\
         [[tiers]]\nname = \"silver\"\nlimit = 5\n",
    );
    let (ok, out) = cp
        .cli(&["apply", "-f", only_keep.to_str().unwrap(), "--prune"])
        .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("service `used` is not in the file, so --prune would delete it, but it is used by route `r`"),
        "{out}"
    );
    assert_eq!(status(&cp, "/api/v1/services/used").await, 200);
    assert_eq!(status(&cp, "/api/v1/tiers/gold").await, 200);
    assert_eq!(status(&cp, "/api/v1/tiers/silver").await, 404);

    // A lone object names its kind too: a one-tier file prunes the other tiers.
    let silver = file(
        root.path(),
        "silver.toml",
        "kind = \"tier\"\nname = \"silver\"\nlimit = 5\n",
    );
    let plan = apply_json(&cp, &silver, &["--prune"]).await;
    assert_eq!(
        actions(&plan),
        [
            triple("tier", "silver", "created"),
            triple("tier", "gold", "deleted"),
        ]
    );
    assert_eq!(status(&cp, "/api/v1/tiers/gold").await, 404);
    assert_eq!(status(&cp, "/api/v1/consumers/acme").await, 200);
}
