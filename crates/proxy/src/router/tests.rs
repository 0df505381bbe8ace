use http::{HeaderMap, HeaderValue, Method};
use portico_model::{Format, GatewayFile};

use super::*;

/// Builds a router from TOML `[[routes]]` (matches only) and returns the winner's name.
struct Fixture {
    router: Router,
    names: Vec<String>,
}

impl Fixture {
    fn new(routes_toml: &str) -> Self {
        let text =
            format!("[[services]]\nname = \"s\"\nendpoints = [\"127.0.0.1:1\"]\n{routes_toml}");
        let file = GatewayFile::parse(&text, Format::Toml).expect("valid test config");
        let names = file
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| r.effective_name(i))
            .collect();
        let router = Router::build(
            file.routes
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u32, r.priority, &r.matches)),
        )
        .expect("router builds");
        Self { router, names }
    }

    fn get(&self, host: &str, path_and_query: &str) -> Option<&str> {
        self.req(host, path_and_query, Method::GET, &[])
    }

    fn req(
        &self,
        host: &str,
        path_and_query: &str,
        method: Method,
        headers: &[(&str, &str)],
    ) -> Option<&str> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let grpc = map
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let req = Request {
            host,
            path,
            method: &method,
            headers: &map,
            query,
            grpc,
        };
        self.router
            .lookup(&req)
            .map(|id| self.names[id as usize].as_str())
    }
}

fn route(name: &str, matches: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ {matches} }}\nforward = {{ service = \"s\" }}\n"
    )
}

fn routes(list: &[(&str, &str)]) -> Fixture {
    Fixture::new(&list.iter().map(|(n, m)| route(n, m)).collect::<String>())
}

#[test]
fn path_kinds() {
    let f = routes(&[
        ("prefix", r#"path = { prefix = "/api" }"#),
        ("segment", r#"path = { path_prefix = "/seg" }"#),
        ("exact", r#"path = { exact = "/exact" }"#),
        ("regex", r#"path = { regex = "/users/[0-9]+" }"#),
    ]);
    // Plain prefixes are string prefixes, as App Mesh, Kong and nginx have them.
    assert_eq!(f.get("h", "/api"), Some("prefix"));
    assert_eq!(f.get("h", "/api/x"), Some("prefix"));
    assert_eq!(f.get("h", "/apix"), Some("prefix"));
    // Segment prefixes match whole segments only.
    assert_eq!(f.get("h", "/seg"), Some("segment"));
    assert_eq!(f.get("h", "/seg/"), Some("segment"));
    assert_eq!(f.get("h", "/seg/a"), Some("segment"));
    assert_eq!(f.get("h", "/segment"), None);
    assert_eq!(f.get("h", "/exact"), Some("exact"));
    assert_eq!(f.get("h", "/exact/"), None);
    // Regexes match the whole path.
    assert_eq!(f.get("h", "/users/42"), Some("regex"));
    assert_eq!(f.get("h", "/users/42/x"), None);
    assert_eq!(f.get("h", "/nothing"), None);
}

#[test]
fn path_precedence_exact_then_longest_prefix_then_regex() {
    let f = routes(&[
        ("regex", r#"path = { regex = "/a/.*" }"#),
        ("short", r#"path = { prefix = "/a" }"#),
        ("long", r#"path = { prefix = "/a/b" }"#),
        ("exact", r#"path = { exact = "/a/b/c" }"#),
        ("catchall", ""),
    ]);
    assert_eq!(f.get("h", "/a/b/c"), Some("exact"));
    assert_eq!(f.get("h", "/a/b/d"), Some("long"));
    assert_eq!(f.get("h", "/a/x"), Some("short"));
    assert_eq!(f.get("h", "/zzz"), Some("catchall"));
    let f = routes(&[
        ("regex", r#"path = { regex = "/r/[0-9]+" }"#),
        ("catchall", ""),
    ]);
    assert_eq!(f.get("h", "/r/1"), Some("regex"));
    assert_eq!(f.get("h", "/r/x"), Some("catchall"));
}

#[test]
fn priority_beats_specificity_and_any_priority_beats_none() {
    let text = [
        route("exact", r#"path = { exact = "/a" }"#),
        "[[routes]]\nname = \"prio5\"\npriority = 5\nforward = { service = \"s\" }\n".to_string(),
        "[[routes]]\nname = \"prio1\"\npriority = 1\nmatch = { path = { regex = \"/a|/b\" } }\nforward = { service = \"s\" }\n".to_string(),
    ]
    .concat();
    let f = Fixture::new(&text);
    assert_eq!(f.get("h", "/a"), Some("prio1"));
    assert_eq!(f.get("h", "/b"), Some("prio1"));
    assert_eq!(f.get("h", "/c"), Some("prio5"));
}

#[test]
fn hosts_exact_then_longest_wildcard_then_any() {
    let f = routes(&[
        ("any", ""),
        ("wild", r#"hosts = ["*.example.com"]"#),
        ("wild2", r#"hosts = ["*.b.example.com"]"#),
        ("exact", r#"hosts = ["a.b.example.com", "other.org"]"#),
    ]);
    assert_eq!(f.get("a.b.example.com", "/"), Some("exact"));
    assert_eq!(f.get("other.org", "/"), Some("exact"));
    assert_eq!(f.get("c.b.example.com", "/"), Some("wild2"));
    assert_eq!(f.get("x.example.com", "/"), Some("wild"));
    assert_eq!(f.get("deep.x.example.com", "/"), Some("wild"));
    // A wildcard does not match the bare domain.
    assert_eq!(f.get("example.com", "/"), Some("any"));
    assert_eq!(f.get("elsewhere", "/"), Some("any"));
}

#[test]
fn host_outranks_path() {
    let f = routes(&[
        ("any-exact-path", r#"path = { exact = "/x" }"#),
        ("host-catchall", r#"hosts = ["api.example.com"]"#),
    ]);
    assert_eq!(f.get("api.example.com", "/x"), Some("host-catchall"));
    assert_eq!(f.get("web.example.com", "/x"), Some("any-exact-path"));
}

#[test]
fn more_conditions_win_then_definition_order() {
    let f = routes(&[
        ("first", r#"path = { prefix = "/p" }"#),
        ("second", r#"path = { prefix = "/p" }"#),
        ("method", r#"path = { prefix = "/p" }, methods = ["POST"]"#),
        (
            "one-header",
            r#"path = { prefix = "/p" }, headers = [{ name = "x-a", present = true }]"#,
        ),
        (
            "two-headers",
            r#"path = { prefix = "/p" }, headers = [{ name = "x-a", present = true }, { name = "x-b", exact = "1" }]"#,
        ),
        (
            "query",
            r#"path = { prefix = "/p" }, query = [{ name = "v", exact = "2" }]"#,
        ),
    ]);
    assert_eq!(f.get("h", "/p"), Some("first"));
    assert_eq!(
        f.req("h", "/p", Method::POST, &[("x-a", "1"), ("x-b", "1")]),
        Some("method")
    );
    assert_eq!(
        f.req("h", "/p", Method::GET, &[("x-a", "1"), ("x-b", "1")]),
        Some("two-headers")
    );
    assert_eq!(
        f.req("h", "/p", Method::GET, &[("x-a", "1"), ("x-b", "2")]),
        Some("one-header")
    );
    assert_eq!(f.get("h", "/p?v=2"), Some("query"));
    assert_eq!(f.get("h", "/p?v=3"), Some("first"));
}

#[test]
fn header_conditions() {
    let f = routes(&[
        (
            "exact",
            r#"headers = [{ name = "x-env", exact = "canary" }]"#,
        ),
        (
            "prefix",
            r#"headers = [{ name = "x-env", prefix = "pre" }]"#,
        ),
        (
            "suffix",
            r#"headers = [{ name = "x-env", suffix = "post" }]"#,
        ),
        (
            "regex",
            r#"headers = [{ name = "x-env", regex = "v[0-9]+" }]"#,
        ),
        (
            "not-beta",
            r#"headers = [{ name = "x-env", exact = "beta", invert = true }, { name = "x-only", present = true }]"#,
        ),
        (
            "absent",
            r#"headers = [{ name = "x-env", absent = true }, { name = "x-absent-check", present = true }]"#,
        ),
    ]);
    let get = |h: &[(&str, &str)]| f.req("h", "/", Method::GET, h);
    assert_eq!(get(&[("x-env", "canary")]), Some("exact"));
    assert_eq!(get(&[("x-env", "prelude")]), Some("prefix"));
    assert_eq!(get(&[("x-env", "signpost")]), Some("suffix"));
    assert_eq!(get(&[("x-env", "v12")]), Some("regex"));
    assert_eq!(get(&[("x-env", "v12x")]), None);
    assert_eq!(
        get(&[("x-env", "gamma"), ("x-only", "1")]),
        Some("not-beta")
    );
    assert_eq!(get(&[("x-env", "beta"), ("x-only", "1")]), None);
    assert_eq!(get(&[("x-absent-check", "1")]), Some("absent"));
    // Any of several values may match.
    assert_eq!(get(&[("x-env", "zzz"), ("x-env", "canary")]), Some("exact"));
}

#[test]
fn query_conditions_decode_values() {
    let f = routes(&[
        ("exact", r#"query = [{ name = "q", exact = "a b" }]"#),
        ("regex", r#"query = [{ name = "n", regex = "[0-9]+" }]"#),
        ("present", r#"query = [{ name = "flag", present = true }]"#),
    ]);
    assert_eq!(f.get("h", "/?q=a%20b"), Some("exact"));
    assert_eq!(f.get("h", "/?x=1&q=a+b"), Some("exact"));
    assert_eq!(f.get("h", "/?n=123"), Some("regex"));
    assert_eq!(f.get("h", "/?n=12a"), None);
    assert_eq!(f.get("h", "/?flag"), Some("present"));
    assert_eq!(f.get("h", "/"), None);
}

#[test]
fn grpc_service_and_method() {
    let f = routes(&[
        (
            "method",
            r#"grpc = { service = "pkg.Greeter", method = "SayHello" }"#,
        ),
        ("service", r#"grpc = { service = "pkg.Greeter" }"#),
        ("any-grpc", r#"grpc = {}"#),
    ]);
    let grpc = [("content-type", "application/grpc")];
    let g = |p: &str| f.req("h", p, Method::POST, &grpc);
    assert_eq!(g("/pkg.Greeter/SayHello"), Some("method"));
    assert_eq!(g("/pkg.Greeter/SayBye"), Some("service"));
    assert_eq!(g("/other.Svc/X"), Some("any-grpc"));
    // Not gRPC: no gRPC route matches.
    assert_eq!(
        f.req(
            "h",
            "/pkg.Greeter/SayHello",
            Method::POST,
            &[("content-type", "application/json")]
        ),
        None
    );
}

#[test]
fn grpc_matches_outrank_a_catch_all_defined_before_them() {
    let f = routes(&[
        ("catch-all", r#"path = { prefix = "/" }"#),
        ("service", r#"grpc = { service = "pkg.Greeter" }"#),
        ("any-grpc", r#"grpc = {}"#),
        ("same-path", r#"path = { prefix = "/pkg.Greeter/" }"#),
    ]);
    let grpc = [("content-type", "application/grpc")];
    let g = |p: &str| f.req("h", p, Method::POST, &grpc);
    // A gRPC match is the path it implies plus its content-type condition.
    assert_eq!(g("/pkg.Greeter/SayHello"), Some("service"));
    assert_eq!(g("/other.Svc/X"), Some("any-grpc"));
    // Requests that are not gRPC go where they went.
    assert_eq!(f.get("h", "/pkg.Greeter/SayHello"), Some("same-path"));
    assert_eq!(f.get("h", "/other"), Some("catch-all"));
}

#[test]
fn many_routes_still_find_the_right_one() {
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&route(
            &format!("r{i}"),
            &format!(
                r#"hosts = ["h{}.example.com"], path = {{ prefix = "/svc{i}" }}"#,
                i % 50
            ),
        ));
    }
    let f = Fixture::new(&text);
    assert_eq!(f.get("h7.example.com", "/svc1007/x"), Some("r1007"));
    // /svc100 is a string prefix of /svc1007 but r100 is on another host (h0).
    assert_eq!(f.get("h0.example.com", "/svc1007"), Some("r100"));
    assert_eq!(f.get("h7.example.com", "/svc1008"), None);
}

proptest::proptest! {
    #[test]
    fn lookups_never_panic(host in "[a-zA-Z0-9.*:-]{0,30}", path in "[ -~]{0,60}", q in proptest::option::of("[ -~]{0,30}")) {
        let f = routes(&[
            ("a", r#"hosts = ["*.example.com"], path = { prefix = "/a" }"#),
            ("b", r#"path = { path_prefix = "/b/" }, query = [{ name = "x", regex = "[0-9]+" }]"#),
            ("c", r#"path = { regex = "/c/.*" }, headers = [{ name = "x-h", prefix = "v" }]"#),
            ("d", r#"path = { exact = "/d" }"#),
        ]);
        let map = HeaderMap::new();
        let req = Request { host: &host, path: &path, method: &Method::GET, headers: &map, query: q.as_deref(), grpc: false };
        let _ = f.router.lookup(&req);
    }
}

/// A route for the update tests: one of three hosts (or none), a path kind, a priority.
fn change_route(seed: u32) -> (Option<u32>, RouteMatch) {
    let hosts = match seed % 4 {
        0 => vec![],
        1 => vec!["a.example.com".to_owned()],
        2 => vec!["*.example.com".to_owned()],
        _ => vec!["b.example.com".to_owned(), "a.example.com".to_owned()],
    };
    let path = match (seed / 4) % 4 {
        0 => Some(PathMatch::Exact("/x".into())),
        1 => Some(PathMatch::Prefix("/".into())),
        2 => Some(PathMatch::Prefix("/x".into())),
        _ => None,
    };
    let priority = seed.is_multiple_of(7).then_some(seed % 3);
    (
        priority,
        RouteMatch {
            hosts,
            path,
            ..RouteMatch::default()
        },
    )
}

proptest::proptest! {
    /// A router updated with some routes added, changed and removed answers every request
    /// as one built from scratch with the same routes in the same order.
    #[test]
    fn an_updated_router_answers_as_one_built_whole(
        before in proptest::collection::vec(0u32..64, 1..24),
        edits in proptest::collection::vec((0usize..24, proptest::option::of(0u32..64), 0usize..30), 0..8),
    ) {
        // (stable id, route) in definition order.
        let mut list: Vec<(u32, (Option<u32>, RouteMatch))> =
            before.iter().enumerate().map(|(i, s)| (i as u32, change_route(*s))).collect();
        let old = Router::build(list.iter().map(|(id, (p, m))| (*id, *p, m))).unwrap();
        let mut next_id = list.len() as u32;
        type Owned = (u32, Option<(Option<u32>, RouteMatch)>);
        let mut changed: Vec<Owned> = Vec::new();
        for (at, new, pos) in edits {
            match new {
                // Remove the route at `at`.
                None if !list.is_empty() => {
                    let (id, _) = list.remove(at % list.len());
                    changed.retain(|(c, _)| *c != id);
                    changed.push((id, None));
                }
                None => {}
                // Add a route at `pos`, or change the one at `at`.
                Some(seed) if pos % 2 == 0 || list.is_empty() => {
                    let id = next_id;
                    next_id += 1;
                    let r = change_route(seed);
                    list.insert(pos % (list.len() + 1), (id, r.clone()));
                    changed.push((id, Some(r)));
                }
                Some(seed) => {
                    let i = at % list.len();
                    let r = change_route(seed);
                    list[i].1 = r.clone();
                    let id = list[i].0;
                    changed.retain(|(c, _)| *c != id);
                    changed.push((id, Some(r)));
                }
            }
        }
        let whole = Router::build(list.iter().map(|(id, (p, m))| (*id, *p, m))).unwrap();
        let position: HashMap<u32, u32> =
            list.iter().enumerate().map(|(i, (id, _))| (*id, i as u32)).collect();
        let refs: Vec<RouteChange<'_>> = changed
            .iter()
            .map(|(id, r)| (*id, r.as_ref().map(|(p, m)| (*p, m))))
            .collect();
        let updated = old
            .update(&refs, &|id| position.get(&id).copied().unwrap_or(u32::MAX))
            .unwrap();
        let headers = HeaderMap::new();
        for host in ["a.example.com", "b.example.com", "c.example.com", "other.test"] {
            for path in ["/", "/x", "/x/y", "/z"] {
                let req = Request {
                    host,
                    path,
                    method: &Method::GET,
                    headers: &headers,
                    query: None,
                    grpc: false,
                };
                proptest::prop_assert_eq!(updated.lookup(&req), whole.lookup(&req), "{} {}", host, path);
            }
        }
    }
}
