use super::*;

fn toml(text: &str) -> Result<Document, Error> {
    Document::parse(text, Format::Toml)
}

fn paths(e: Error) -> Vec<String> {
    e.field_errors().into_iter().map(|f| f.path).collect()
}

#[test]
fn the_api_file_of_apis_create_is_one_api() {
    let doc = toml(
        "name = \"Files\"\nversion = \"v1\"\ncontext = \"/files/v1\"\nproduction_endpoints = [\"http://127.0.0.1:9000\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(doc.single);
    assert_eq!(doc.kinds, BTreeSet::from([Kind::Api]));
    assert_eq!(doc.apis.len(), 1);
    assert_eq!(doc.apis[0].id(), "files-v1");
    assert_eq!(doc.path(Kind::Api, 0, "context"), "context");
}

#[test]
fn a_lone_object_is_told_by_kind_or_by_the_field_only_its_kind_has() {
    for (text, kind) in [
        ("kind = \"gateway\"\nname = \"edge\"\n", Kind::Gateway),
        ("kind = \"consumers\"\nname = \"acme\"\n", Kind::Consumer),
        (
            "kind = \"certificate\"\nname = \"shop\"\n",
            Kind::Certificate,
        ),
        ("name = \"gold\"\nlimit = 10\n", Kind::Tier),
        (
            "name = \"b\"\nendpoints = [\"127.0.0.1:1\"]\n",
            Kind::Service,
        ),
        (
            "consumer = \"acme\"\napi = \"pets-v1\"\n",
            Kind::Subscription,
        ),
        ("slug = \"shop\"\nspa = true\nroutes = []\n", Kind::App),
        (
            "name = \"r\"\nroute = { fixed_response = { status = 204 } }\n",
            Kind::Route,
        ),
    ] {
        let doc = toml(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(doc.single, "{text}");
        assert_eq!(doc.kinds, BTreeSet::from([kind]), "{text}");
        assert_eq!(doc.len(), 1, "{text}");
    }
}

#[test]
fn sections_hold_many_objects_and_name_their_kinds_even_when_empty() {
    let doc = toml(
        "services = []\n[[tiers]]\nname = \"gold\"\nlimit = 10\n[[subscriptions]]\nconsumer = \"acme\"\napi = \"pets-v1\"\ntier = \"gold\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!doc.single);
    assert_eq!(
        doc.kinds,
        BTreeSet::from([Kind::Service, Kind::Tier, Kind::Subscription])
    );
    assert_eq!(doc.len(), 2);
    assert_eq!(
        doc.path(Kind::Subscription, 0, "tier"),
        "subscriptions[0].tier"
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    // Reported kind by kind (the order objects are written in), each with its own path.
    let e = toml(
        "[[apis]]\nname = \"A\"\nversion = \"v1\"\ncontext = \"/a\"\ncontex = \"x\"\n[[tiers]]\nname = \"t\"\n[[routes]]\nname = \"r\"\nroute = { fixed_response = { status = \"x\" } }\n",
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(
        paths(e),
        [
            "tiers[0]",
            "apis[0].contex",
            "routes[0].route.fixed_response.status"
        ]
    );
}

#[test]
fn an_unknown_or_ambiguous_lone_object_asks_for_kind() {
    for text in [
        "name = \"x\"\n",
        "kind = \"thing\"\nname = \"x\"\n",
        "slug = \"a\"\ncontext = \"/a\"\n",
        "",
    ] {
        let e = toml(text)
            .err()
            .unwrap_or_else(|| panic!("{text} accepted"));
        let p = paths(e);
        assert!(p == ["kind"] || p == ["."], "{text}: {p:?}");
    }
    // A misspelt section beside real ones.
    let e = toml("tiers = []\ntier = []\n")
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(paths(e), ["tier"]);
    // A section that is not a list.
    let e = toml("apis = 3\n")
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(paths(e), ["apis"]);
}

#[test]
fn json_documents_read_the_same() {
    let doc = Document::parse(
        r#"{"apis": [{"name": "A", "version": "v1", "context": "/a", "production_endpoints": ["http://x"]}]}"#,
        Format::Json,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.apis[0].id(), "a-v1");
    let e = Document::parse(
        r#"{"kind": "tier", "name": "t", "limit": "many"}"#,
        Format::Json,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(paths(e), ["limit"]);
}

/// Every TOML example of docs/apply.md reads; each of "One example per kind" is one object
/// of the kind its heading names.
#[test]
fn the_documented_examples_read() {
    let doc = include_str!("../../../../docs/apply.md");
    let mut heading = String::new();
    let mut block: Option<String> = None;
    let mut seen = 0;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            heading = h.trim().to_owned();
        } else if line.starts_with("## ") {
            heading.clear();
        }
        match (&mut block, line) {
            (None, "```toml") => block = Some(String::new()),
            (Some(text), "```") => {
                let parsed = toml(text).unwrap_or_else(|e| panic!("{heading}: {e}\n{text}"));
                if let Some(kind) = Kind::from_word(&heading) {
                    assert!(parsed.single, "{heading}");
                    assert_eq!(parsed.kinds, BTreeSet::from([kind]), "{heading}");
                    assert_eq!(parsed.len(), 1, "{heading}");
                }
                seen += 1;
                block = None;
            }
            (Some(text), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(seen >= 10, "{seen} examples");
}
