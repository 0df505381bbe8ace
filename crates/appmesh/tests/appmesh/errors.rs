//! What the importer refuses, and how it says where.

use std::path::Path;

use portico_appmesh::{Error, Outcome, Source, import, read_path};
use serde_json::{Value, json};

use crate::common::*;

fn refused(values: &[(&str, Value)]) -> Error {
    let sources: Vec<Source> = values
        .iter()
        .map(|(n, v)| Source::new(*n, v.to_string()))
        .collect();
    match import(&sources) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

#[track_caller]
fn invalid_at(e: Error, file: &str, path: &str, words: &str) {
    match &e {
        Error::Invalid {
            file: f,
            path: p,
            message,
        } => {
            assert_eq!((f.as_str(), p.as_str()), (file, path), "{e}");
            assert!(message.contains(words), "{e}");
        }
        other => panic!("not Invalid: {other}"),
    }
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let path = fixture("errors/malformed.json");
    let e = import(&read_path(&path).expect("reads")).expect_err("refused");
    match &e {
        Error::Json {
            file,
            line,
            column,
            message,
        } => {
            assert_eq!(file, &path.display().to_string());
            assert_eq!((*line, *column), (5, 9));
            assert!(message.contains("expected `,` or `}`"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("malformed.json:5:9"), "{e}");
}

#[test]
fn invalid_specs_name_the_field() {
    let e = refused(&[(
        "gw.json",
        vgw(
            "gw",
            json!({"listeners": [{"portMapping": {"port": 70000, "protocol": "http"}}]}),
        ),
    )]);
    invalid_at(
        e,
        "gw.json",
        "$.virtualGateway.spec.listeners[0].portMapping.port",
        "1 to 65535",
    );
    let e = refused(&[(
        "gw.json",
        vgw(
            "gw",
            json!({"listeners": [{"portMapping": {"port": 80, "protocol": "udp"}}]}),
        ),
    )]);
    invalid_at(
        e,
        "gw.json",
        "$.virtualGateway.spec.listeners[0].portMapping.protocol",
        "`udp` is not one of http, http2, grpc",
    );
    let e = refused(&[(
        "r.json",
        http_gr(
            "gw",
            "r",
            "s",
            json!({"headers": [{"name": "x", "match": {"exact": "1"}}]}),
            Value::Null,
        ),
    )]);
    invalid_at(
        e,
        "r.json",
        "$.gatewayRoute.spec.httpRoute.match",
        "one of `prefix`, `path` or `hostname`",
    );
    let e = refused(&[(
        "r.json",
        http_gr(
            "gw",
            "r",
            "s",
            json!({"prefix": "/", "path": {"exact": "/x"}}),
            Value::Null,
        ),
    )]);
    invalid_at(
        e,
        "r.json",
        "$.gatewayRoute.spec.httpRoute.match",
        "not both",
    );
    let e = refused(&[(
        "r.json",
        gr("gw", "r", json!({"httpRoute": {"match": {"prefix": "/"}}})),
    )]);
    invalid_at(
        e,
        "r.json",
        "$.gatewayRoute.spec.httpRoute.action",
        "missing",
    );
    let e = refused(&[(
        "route.json",
        rroute(
            "rt",
            "r",
            json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "a", "weight": 101}]}}}),
        ),
    )]);
    invalid_at(
        e,
        "route.json",
        "$.route.spec.httpRoute.action.weightedTargets[0].weight",
        "0 to 100",
    );
    let e = refused(&[(
        "r.json",
        gr(
            "gw",
            "r",
            json!({"priority": 1001, "httpRoute": {"match": {"prefix": "/"}, "action": {"target": {"virtualService": {"virtualServiceName": "s"}}}}}),
        ),
    )]);
    invalid_at(e, "r.json", "$.gatewayRoute.spec.priority", "0 to 1000");
    let e = refused(&[("x.json", json!({"name": "not app mesh"}))]);
    invalid_at(e, "x.json", "$", "not an App Mesh object");
    let e = refused(&[(
        "gw.json",
        json!({"virtualGateway": {"virtualGatewayName": "gw", "spec": {}}}),
    )]);
    invalid_at(e, "gw.json", "$.virtualGateway.meshName", "missing");
}

#[test]
fn conflicting_definitions_name_both_files() {
    let e = import(&read_path(&fixture("errors/conflict")).expect("reads")).expect_err("refused");
    match &e {
        Error::Conflict {
            kind,
            name,
            first,
            second,
        } => {
            assert_eq!(kind, "gateway route");
            assert_eq!(name, "gw/web (mesh m)");
            assert!(first.contains("describe.json $.gatewayRoute"), "{first}");
            assert!(second.contains("edited.json $"), "{second}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn identical_duplicates_are_fine() {
    // The same gateway route from describe, --cli-input-json and list.
    let imp = import(&read_path(&fixture("errors/duplicate")).expect("reads")).expect("imports");
    // Its gateway is not in the input: reported once, not refused.
    assert_eq!(
        imp.report
            .with(Outcome::NotCarried)
            .filter(|i| i.message.contains("its virtual gateway gw"))
            .count(),
        1
    );
    assert!(
        imp.report
            .items
            .iter()
            .all(|i| !i.message.contains("listed only"))
    );
}

#[test]
fn unreadable_paths_and_unknown_gateways() {
    assert!(matches!(
        read_path(Path::new("/nonexistent/appmesh")),
        Err(Error::Io { .. })
    ));
    let empty = std::env::temp_dir().join(format!("appmesh-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("mkdir");
    assert!(matches!(read_path(&empty), Err(Error::NoFiles { .. })));
    let _ = std::fs::remove_dir(&empty);
    let imp = import_fixture("shop");
    assert!(matches!(
        imp.gateway_file("nope"),
        Err(Error::UnknownGateway { .. })
    ));
}
