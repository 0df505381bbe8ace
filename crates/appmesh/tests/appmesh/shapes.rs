//! Every shape the CLI prints or takes, and the report's own shape.

use portico_appmesh::{Outcome, Source, import};
use serde_json::{Value, json};

use crate::common::*;

fn spec() -> Value {
    json!({"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]})
}

#[test]
fn describe_bare_cli_input_and_arrays_read_alike() {
    let describe = vgw("gw", spec());
    let bare = describe["virtualGateway"].clone();
    let cli_input = json!({"meshName": MESH, "virtualGatewayName": "gw", "spec": spec()});
    for (shape, v) in [
        ("describe", describe.clone()),
        ("bare", bare),
        ("cli-input", cli_input.clone()),
        ("array", json!([describe])),
        ("nested array", json!([[cli_input]])),
    ] {
        let imp = import_values(&[("gw.json", v)]);
        assert_eq!(imp.objects.gateways.len(), 1, "{shape}");
        assert_eq!(imp.objects.gateways[0].name, "gw", "{shape}");
        assert_eq!(imp.objects.gateways[0].listeners[0].port, 8080, "{shape}");
        // Bookkeeping (metadata, status, arn, version, timestamps) is skipped silently.
        assert!(
            imp.report
                .items
                .iter()
                .all(|i| !i.path.contains("metadata") && !i.path.contains("status")),
            "{shape}: {}",
            imp.report
        );
    }
}

#[test]
fn list_output_is_names_only() {
    let list = json!({
        "virtualGateways": [
            {"arn": "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualGateway/gw", "createdAt": "2024-01-01T00:00:00Z", "lastUpdatedAt": "2024-01-01T00:00:00Z", "meshName": MESH, "meshOwner": "111122223333", "resourceOwner": "111122223333", "version": 1, "virtualGatewayName": "gw"},
            {"arn": "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualGateway/other", "createdAt": "2024-01-01T00:00:00Z", "lastUpdatedAt": "2024-01-01T00:00:00Z", "meshName": MESH, "meshOwner": "111122223333", "resourceOwner": "111122223333", "version": 1, "virtualGatewayName": "other"}
        ],
        "nextToken": "eyJ0b2tlbiI6IDJ9"
    });
    let imp = import_values(&[("list.json", list), ("gw.json", vgw("gw", spec()))]);
    assert_eq!(imp.objects.gateways.len(), 1, "only the described one");
    let listed: Vec<_> = imp
        .report
        .items
        .iter()
        .filter(|i| i.message.contains("listed only"))
        .collect();
    assert_eq!(listed.len(), 1, "{}", imp.report);
    assert_eq!(listed[0].path, "$.virtualGateways[1]");
    assert_eq!(listed[0].object, "virtual gateway other");
    assert!(listed[0].message.contains("describe-virtual-gateway"));
    reported(&imp, Outcome::NotCarried, "$.nextToken", "more pages");
}

#[test]
fn a_file_of_appended_outputs_reads_as_many() {
    let text = format!(
        "{}\n{}\n",
        vgw("a", spec()),
        json!({"meshName": MESH, "virtualGatewayName": "b", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}], "mystery": 1}})
    );
    let imp = checked(import(&[Source::new("all.json", text)]).expect("imports"));
    assert_eq!(imp.objects.gateways.len(), 2);
    let unknown = items(&imp, Outcome::NotCarried, "$.spec.mystery");
    assert_eq!(unknown.len(), 1, "{}", imp.report);
    assert_eq!(unknown[0].file, "all.json#2");
    assert!(
        unknown[0]
            .message
            .contains("`mystery` is not an App Mesh field")
    );
}

#[test]
fn a_directory_is_read_recursively_in_path_order() {
    let sources = portico_appmesh::read_path(&fixture("shop")).expect("reads");
    let names: Vec<String> = sources
        .iter()
        .map(|s| {
            s.path
                .strip_prefix(fixture("shop"))
                .expect("under")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "gateway-routes.json",
            "list-virtual-nodes.json",
            "nodes/api-v1.json",
            "nodes/api-v2.json",
            "nodes/secure.json",
            "nodes/web.json",
            "router-api.json",
            "vgw-ingress.json",
            "virtual-services.json"
        ]
    );
}

#[test]
fn unknown_and_aws_only_fields_are_reported_with_their_paths() {
    let imp = import_values(&[(
        "gw.json",
        json!({
            "meshName": MESH, "virtualGatewayName": "gw", "meshOwner": "444455556666",
            "tags": [{"key": "env", "value": "prod"}],
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}, "futureField": true}]}
        }),
    )]);
    reported(&imp, Outcome::NotCarried, "$.tags", "tags");
    reported(&imp, Outcome::NotCarried, "$.meshOwner", "444455556666");
    reported(
        &imp,
        Outcome::NotCarried,
        "$.spec.listeners[0].futureField",
        "not an App Mesh field",
    );
    // A key beside describe's wrapper.
    let imp = import_values(&[(
        "gw.json",
        json!({"virtualGateway": vgw("gw", spec())["virtualGateway"].clone(), "ResponseMetadata": {}}),
    )]);
    reported(
        &imp,
        Outcome::NotCarried,
        "$.ResponseMetadata",
        "not part of any App Mesh output",
    );
}

#[test]
fn the_report_prints_one_line_per_item_and_serializes_in_snake_case() {
    let imp = import_fixture("shop");
    let text = imp.report.to_string();
    assert_eq!(text.lines().count(), imp.report.items.len());
    let item = imp
        .report
        .items
        .iter()
        .find(|i| i.path == "$.virtualGateway.spec.logging.accessLog.file.path")
        .expect("the access log is reported");
    let line = item.to_string();
    assert!(
        line.starts_with(&format!(
            "changed      {} $.virtualGateway.spec.logging.accessLog.file.path  virtual gateway ingress-gw: ",
            item.file
        )),
        "{line}"
    );
    assert!(text.lines().any(|l| l.starts_with("not carried  ")));
    let json = serde_json::to_value(&imp.report).expect("serializes");
    let outcomes: Vec<&str> = json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["outcome"].as_str())
        .collect();
    assert!(outcomes.contains(&"not_carried"));
    assert!(outcomes.contains(&"changed"));
    assert!(outcomes.contains(&"carried"));
    for key in ["file", "path", "object", "outcome", "message"] {
        assert!(json["items"][0].get(key).is_some(), "{key}");
    }
    let (carried, changed, not_carried) = imp.report.counts();
    assert_eq!(carried + changed + not_carried, imp.report.items.len());
}

#[test]
fn names_shared_by_two_meshes_get_their_mesh() {
    let in_mesh = |mesh: &str, v: Value| -> Value {
        let text = v.to_string().replace(
            &format!("\"meshName\":\"{MESH}\""),
            &format!("\"meshName\":\"{mesh}\""),
        );
        serde_json::from_str(&text).expect("JSON")
    };
    let mut values = Vec::new();
    for mesh in ["blue", "green"] {
        values.push((
            format!("{mesh}-gw.json"),
            in_mesh(mesh, http_gateway("edge")),
        ));
        values.push((
            format!("{mesh}-r.json"),
            in_mesh(
                mesh,
                http_gr(
                    "edge",
                    "r",
                    "app.local",
                    json!({"prefix": "/"}),
                    Value::Null,
                ),
            ),
        ));
        values.push((
            format!("{mesh}-vs.json"),
            in_mesh(mesh, vs_node("app.local", "app")),
        ));
        values.push((
            format!("{mesh}-node.json"),
            in_mesh(
                mesh,
                node("app", &format!("app.{mesh}.internal"), 8080, "http"),
            ),
        ));
    }
    let borrowed: Vec<(&str, Value)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    let imp = import_values(&borrowed);
    let gateways: Vec<&str> = imp
        .objects
        .gateways
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(gateways, ["blue.edge", "green.edge"]);
    assert_eq!(
        service(&imp, "green.app").endpoints[0].address,
        "app.green.internal:8080"
    );
    let r = route(&imp, "green.edge.r");
    assert_eq!(
        r.forward
            .as_ref()
            .and_then(|f| f.service.clone())
            .as_deref(),
        Some("green.app")
    );
    reported(
        &imp,
        Outcome::Changed,
        ".virtualGatewayName",
        "another mesh",
    );
    reported(&imp, Outcome::Changed, ".virtualNodeName", "another mesh");
    assert!(
        imp.report
            .items
            .iter()
            .any(|i| i.object == "virtual gateway blue/edge")
    );
    // The App Mesh name alone is ambiguous; the Portico name is not.
    assert!(imp.gateway_file("edge").is_err());
    imp.gateway_file("blue.edge").expect("gateway file");
}
