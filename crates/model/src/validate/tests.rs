use super::*;
use crate::snapshot::{Format, GatewayFile};

fn errors(toml: &str) -> Vec<String> {
    match GatewayFile::parse(toml, Format::Toml) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .field_errors()
            .into_iter()
            .map(|f| f.to_string())
            .collect(),
    }
}

const BASE: &str = r#"
[[listeners]]
name = "web"
port = 8080

[[services]]
name = "users"
endpoints = ["127.0.0.1:9000"]
"#;

fn with(extra: &str) -> Vec<String> {
    errors(&format!("{BASE}\n{extra}"))
}

#[test]
fn a_good_config_has_no_errors() {
    let errs = with(
        r#"
[[routes]]
name = "api"
match = { hosts = ["api.example.com", "*.example.org"], path = { prefix = "/api" }, methods = ["GET"] }
forward = { service = "users" }
rewrite = { prefix = "/v2/" }
"#,
    );
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn every_rule_reports_its_field_path() {
    let cases: &[(&str, &str)] = &[
        (
            r#"[[routes]]
match = { path = { regex = "(abc" } }
forward = { service = "users" }"#,
            "routes[0].match.path.regex: unclosed group",
        ),
        (
            r#"[[routes]]
forward = { service = "nobody" }"#,
            "routes[0].forward.service: no service is named `nobody`",
        ),
        (
            r#"[[routes]]
match = { path = { prefix = "api" } }
forward = { service = "users" }"#,
            "routes[0].match.path.prefix: `api` must start with `/`",
        ),
        (
            r#"[[routes]]
listeners = ["nope"]
forward = { service = "users" }"#,
            "routes[0].listeners[0]: no listener is named `nope` (listeners: web)",
        ),
        (
            r#"[[routes]]
match = { path = { prefix = "/a" } }"#,
            "routes[0]: give an action: forward, redirect, fixed_response or app",
        ),
        (
            r#"[[routes]]
forward = { service = "users" }
fixed_response = { status = 200 }"#,
            "routes[0]: give only one action of forward, redirect, fixed_response and app",
        ),
        (
            r#"[[routes]]
match = { path = { exact = "/a" } }
forward = { service = "users" }
rewrite = { prefix = "/b" }"#,
            "routes[0].rewrite.prefix: a prefix rewrite needs a `prefix` or `path_prefix` path match",
        ),
        (
            r#"[[routes]]
match = { hosts = ["example.com:8080"] }
forward = { service = "users" }"#,
            "routes[0].match.hosts[0]: `example.com:8080`: hosts are matched without the port; remove `:8080`",
        ),
        (
            r#"[[routes]]
match = { methods = ["get"] }
forward = { service = "users" }"#,
            "routes[0].match.methods[0]: methods are case-sensitive: write `GET`",
        ),
        (
            r#"[[routes]]
match = { headers = [{ name = "x-env" }] }
forward = { service = "users" }"#,
            "routes[0].match.headers[0]: give one condition: exact, prefix, suffix, regex, present = true or absent = true",
        ),
        (
            r#"[[routes]]
match = { headers = [{ name = "x-env", exact = "a", regex = "b" }] }
forward = { service = "users" }"#,
            "routes[0].match.headers[0]: give only one condition of exact, prefix, suffix, regex, present = true or absent = true",
        ),
        (
            r#"[[routes]]
match = { query = [{ name = "v", regex = "[" }] }
forward = { service = "users" }"#,
            "routes[0].match.query[0].regex: unclosed character class",
        ),
        (
            r#"[[routes]]
match = { grpc = { method = "Get" } }
forward = { service = "users" }"#,
            "routes[0].match.grpc.method: a method needs its service: set `service` too",
        ),
        (
            r#"[[routes]]
redirect = { status = 200 }"#,
            "routes[0].redirect.status: 200: use 301, 302, 303, 307 or 308",
        ),
        (
            r#"[[routes]]
fixed_response = { status = 200, headers = { connection = "close" } }"#,
            "routes[0].fixed_response.headers.connection: `connection` is a hop-by-hop header the gateway manages itself",
        ),
        (
            r#"[[routes]]
forward = { targets = [{ service = "users", weight = 0 }] }"#,
            "routes[0].forward.targets: at least one target needs a weight above 0",
        ),
        (
            r#"[[services]]
name = "users"
endpoints = ["10.0.0.1"]"#,
            "services[1].name: `users` is already the name of services[0]",
        ),
        (
            r#"[[services]]
name = "b"
endpoints = ["10.0.0.1"]"#,
            "services[1].endpoints[0].address: `10.0.0.1` has no port; write `host:port`, e.g. `127.0.0.1:8080`",
        ),
        (
            r#"[[services]]
name = "c"
endpoints = []"#,
            "services[1].endpoints: list at least one endpoint, e.g. [\"127.0.0.1:8080\"]",
        ),
        (
            r#"[[services]]
name = "d"
endpoints = ["a:1"]
retries = { statuses = [200] }"#,
            "services[1].retries.statuses[0]: 200: only 4xx and 5xx statuses can be retried",
        ),
        (
            r#"[[listeners]]
name = "web"
port = 8081"#,
            "listeners[1].name: `web` is already the name of listeners[0]",
        ),
        (
            r#"[[listeners]]
port = 8080"#,
            "listeners[1].port: 0.0.0.0:8080 is already used by listeners[0]",
        ),
    ];
    for (extra, want) in cases {
        let errs = with(extra);
        assert!(
            errs.iter().any(|e| e == want),
            "config:\n{extra}\nwant: {want}\ngot: {errs:?}"
        );
    }
}

#[test]
fn all_errors_are_reported_not_just_the_first() {
    let errs = with(
        r#"
[[routes]]
match = { path = { regex = "(" } }
forward = { service = "x" }

[[routes]]
match = { path = { prefix = "nope" } }
redirect = { status = 999 }
"#,
    );
    assert_eq!(errs.len(), 4, "{errs:?}");
}

#[test]
fn syntax_errors_name_the_field_and_line() {
    let err = GatewayFile::parse(
        "[[listeners]]\nport = 80\nprotocol = \"spdy\"\n",
        Format::Toml,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("listeners[0].protocol"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains("spdy"), "{text}");

    let err = GatewayFile::parse("[[routes]]\nmatchh = {}\n", Format::Toml).unwrap_err();
    assert!(err.to_string().contains("unknown field `matchh`"), "{err}");

    let err =
        GatewayFile::parse(r#"{"listeners": [{"port": "eighty"}]}"#, Format::Json).unwrap_err();
    assert!(err.to_string().contains("listeners[0].port"), "{err}");
}

#[test]
fn json_and_toml_describe_the_same_snapshot() {
    let toml = format!("{BASE}\n[[routes]]\nforward = {{ service = \"users\" }}\n");
    let a = GatewayFile::parse(&toml, Format::Toml)
        .expect("toml")
        .into_parts()
        .1;
    let json = serde_json::to_string(&a).expect("json");
    let b = crate::Snapshot::parse(&json, Format::Json).expect("json back");
    assert_eq!(a, b);
    assert_eq!(a.content_hash(), b.content_hash());
}

#[test]
fn content_hash_moves_only_with_content() {
    let a = GatewayFile::parse(BASE, Format::Toml)
        .expect("a")
        .into_parts()
        .1;
    let b = GatewayFile::parse(&format!("# a comment\n{BASE}"), Format::Toml)
        .expect("b")
        .into_parts()
        .1;
    assert_eq!(a.content_hash(), b.content_hash());
    let c = GatewayFile::parse(&BASE.replace("9000", "9001"), Format::Toml)
        .expect("c")
        .into_parts()
        .1;
    assert_ne!(a.content_hash(), c.content_hash());
}

#[test]
fn endpoints_take_strings_or_tables() {
    let f = GatewayFile::parse(
        r#"[[services]]
name = "s"
endpoints = ["127.0.0.1:1", { address = "[::1]:2", weight = 3 }]
load_balancing = { consistent_hash = { header = "x-user" } }
"#,
        Format::Toml,
    )
    .expect("parse");
    let s = &f.services[0];
    assert_eq!(s.endpoints[1].weight, 3);
    assert_eq!(s.endpoints[1].host_port().expect("hp"), ("::1", 2));
    assert_eq!(
        s.load_balancing,
        LoadBalancing::ConsistentHash(HashOn::Header("x-user".into()))
    );
}

#[test]
fn gateway_files_keep_the_limits_of_the_admin_api() {
    let errs = with(&format!(
        r#"
[[routes]]
name = "api"
match = {{ hosts = [{}] }}
forward = {{ service = "users" }}
request_headers = {{ set = {{ x-long = "{}" }} }}
"#,
        vec!["\"a.example.com\""; 101].join(", "),
        "v".repeat(4097)
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("routes[0].match.hosts: at most 100 items")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e
            .starts_with("routes[0].request_headers.set.x-long: at most 4096 characters")),
        "{errs:?}"
    );
}

#[test]
fn health_checks_and_pools_name_each_bad_field() {
    let errs = errors(
        r#"
[[services]]
name = "s"
protocol = "http2"
endpoints = [{ address = "127.0.0.1:9000", priority = 101 }]
health_check = { path = "/héalth", interval = "50ms", timeout = "0s", healthy_threshold = 0, grpc_service = "x" }
connection_pool = { max_connections = 4, max_requests = 0 }

[[services]]
name = "t"
endpoints = ["127.0.0.1:9001"]
health_check = { protocol = "tcp", host = "a.example", expected_statuses = [500] }
connection_pool = { max_pending_requests = 3 }
"#,
    );
    let all = errs.join("\n");
    for want in [
        "services[0].endpoints[0].priority",
        "services[0].health_check.path",
        "services[0].health_check.interval",
        "services[0].health_check.timeout",
        "services[0].health_check.healthy_threshold",
        "services[0].health_check.grpc_service",
        "services[0].connection_pool.max_connections",
        "services[0].connection_pool.max_requests",
        "services[1].health_check.host",
        "services[1].health_check.expected_statuses",
        "services[1].connection_pool.max_pending_requests",
    ] {
        assert!(all.contains(want), "no error at {want}:\n{all}");
    }
    // `299-200` is not a range: refused while reading, naming the field.
    let errs = errors(
        "[[services]]\nname = \"s\"\nendpoints = [\"127.0.0.1:1\"]\nhealth_check = { expected_statuses = [\"299-200\"] }\n",
    );
    assert!(errs.join("\n").contains("the lower one first"), "{errs:?}");
}

#[test]
fn tracing_settings_are_checked_field_by_field() {
    let node = |t: &str| errors(&format!("[node.tracing]\n{t}\n{BASE}"));
    assert!(
        node(
            "otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsampler = \"ratio\"\nratio = 0.25"
        )
        .is_empty()
    );
    for (t, path) in [
        ("sampler = \"sometimes\"", "node.tracing.sampler"),
        ("ratio = 1.5", "node.tracing.ratio"),
        (
            "otlp_endpoint = \"collector:4318\"",
            "node.tracing.otlp_endpoint",
        ),
        ("service_name = \" \"", "node.tracing.service_name"),
        ("queue = 0", "node.tracing.queue"),
    ] {
        let errs = node(t);
        assert!(errs.iter().any(|e| e.starts_with(path)), "{t}: {errs:?}");
    }
}
