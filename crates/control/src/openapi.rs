//! The OpenAPI document served at `/api/v1/openapi.json`.

/// OpenAPI 3.1 description of the admin API.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use portico_model::validate::limits;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(super::DOCUMENT).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_document_is_json_and_names_every_path() {
        let doc = doc();
        let paths = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        assert!(paths >= 20, "{paths} paths");
        assert!(doc["paths"]["/api/v1/apis/{id}/deployments"]["post"].is_object());
        assert!(doc["paths"]["/api/v1/apply"]["post"].is_object());
        assert!(doc["paths"]["/api/v1/auth/login"]["post"].is_object());
        assert!(doc["paths"]["/api/v1/users/{name}/tokens/{id}"]["delete"].is_object());
        assert!(
            doc["paths"]["/api/v1/portal/applications/{name}/subscriptions/{api}"]["delete"]
                .is_object()
        );
    }

    /// Every field a snapshot or a gateway can carry is in their schemas (which refuse
    /// others): a field added to the model and not to the document fails here, not in a
    /// client that checks answers against it.
    #[test]
    fn the_snapshot_and_gateway_schemas_name_every_field() {
        let doc = doc();
        let sampling = portico_model::node::Sampling {
            sampler: "ratio".into(),
            ratio: 0.5,
        };
        let snapshot = portico_model::Snapshot {
            portal: Some(portico_model::Portal {
                origin: "https://portal.example.com".into(),
            }),
            sampling: Some(sampling.clone()),
            ..Default::default()
        };
        let mut gateway =
            portico_model::GatewaySpec::new("edge", portico_model::GatewayKind::default());
        gateway.sampling = Some(sampling);
        gateway.url = Some("https://edge:2020".into());
        for (schema, value) in [
            ("Snapshot", serde_json::to_value(&snapshot)),
            ("GatewaySpec", serde_json::to_value(&gateway)),
        ] {
            let value = value.unwrap_or_else(|e| panic!("{e}"));
            let props = &doc["components"]["schemas"][schema]["properties"];
            for key in value.as_object().into_iter().flat_map(|o| o.keys()) {
                assert!(props.get(key).is_some(), "{schema} has no `{key}`");
            }
        }
    }

    /// Walks a request schema: every string has a `maxLength`, every list a `maxItems`,
    /// every map a `maxProperties`, every object with fields refuses others. A branch of
    /// `allOf`, `oneOf` or `anyOf` without a `type` only adds rules to the object it is in
    /// (`ApiSpec`'s visibility), whose own `additionalProperties` decides about other fields.
    fn unbounded(
        doc: &Value,
        s: &Value,
        at: &str,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        walk(doc, s, at, false, seen, out);
    }

    fn walk(
        doc: &Value,
        s: &Value,
        at: &str,
        branch: bool,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default().to_owned();
            if seen.insert(name.clone()) {
                let named = &doc["components"]["schemas"][&name];
                walk(doc, named, &name, false, seen, out);
            }
            return;
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            for (i, sub) in s[key].as_array().into_iter().flatten().enumerate() {
                walk(doc, sub, &format!("{at}/{key}[{i}]"), true, seen, out);
            }
        }
        let types: Vec<&str> = match &s["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let open = s.get("enum").is_none() && s.get("const").is_none();
        if types.contains(&"string")
            && open
            && s.get("contentMediaType").is_none()
            && s.get("maxLength").is_none()
        {
            out.push(format!("{at}: a string without maxLength"));
        }
        if types.contains(&"array") {
            if s.get("maxItems").is_none() {
                out.push(format!("{at}: a list without maxItems"));
            }
            walk(doc, &s["items"], &format!("{at}[]"), false, seen, out);
        }
        if let Some(fields) = s.get("properties").and_then(Value::as_object) {
            let adds_rules = branch && s.get("type").is_none();
            if !adds_rules && s.get("additionalProperties") != Some(&Value::Bool(false)) {
                out.push(format!("{at}: an object that takes unknown fields"));
            }
            for (k, v) in fields {
                walk(doc, v, &format!("{at}.{k}"), false, seen, out);
            }
        } else if let Some(values) = s.get("additionalProperties").filter(|v| v.is_object()) {
            if s.get("maxProperties").is_none() || s["propertyNames"].get("maxLength").is_none() {
                out.push(format!(
                    "{at}: a map without maxProperties and propertyNames"
                ));
            }
            walk(doc, values, &format!("{at}.*"), false, seen, out);
        }
    }

    #[test]
    fn every_string_and_list_a_request_takes_is_bounded() {
        let doc = doc();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in ops.as_object().into_iter().flatten() {
                let mut body = &op["requestBody"];
                if let Some(r) = body.get("$ref").and_then(Value::as_str) {
                    body = &doc["components"]["requestBodies"]
                        [r.rsplit('/').next().unwrap_or_default()];
                }
                // The token endpoint's form is RFC 6749's: unknown fields are ignored there.
                if let Some(s) = body.pointer("/content/application~1json/schema") {
                    unbounded(&doc, s, &format!("{method} {path}"), &mut seen, &mut out);
                }
            }
        }
        assert!(out.is_empty(), "{}", out.join("\n"));
    }

    #[test]
    fn the_limits_it_states_are_the_models() {
        let doc = doc();
        let s = &doc["components"]["schemas"];
        for (pointer, want) in [
            ("/ApiSpec/properties/context/maxLength", limits::CONTEXT),
            ("/ApiSpec/properties/name/maxLength", limits::API_NAME),
            ("/ApiSpec/properties/version/maxLength", limits::API_VERSION),
            ("/ApiSpec/properties/description/maxLength", limits::TEXT),
            ("/ApiSpec/properties/hosts/maxItems", limits::HOSTS),
            ("/ApiSpec/properties/hosts/items/maxLength", limits::HOST),
            (
                "/ApiSpec/properties/production_endpoints/maxItems",
                limits::ENDPOINTS,
            ),
            (
                "/ApiSpec/properties/production_endpoints/items/maxLength",
                limits::URL,
            ),
            ("/ApiSpec/properties/operations/maxItems", limits::LIST),
            (
                "/ApiSpec/properties/api_key_header/maxLength",
                limits::HEADER_NAME,
            ),
            ("/GatewaySpec/properties/name/maxLength", limits::NAME),
            ("/GatewaySpec/properties/url/maxLength", limits::URL),
            (
                "/HeaderEdits/properties/set/propertyNames/maxLength",
                limits::HEADER_NAME,
            ),
            (
                "/HeaderEdits/properties/set/additionalProperties/maxLength",
                limits::TEXT,
            ),
            ("/TlsCertificate/properties/cert_pem/maxLength", limits::PEM),
            ("/Service/properties/name/maxLength", limits::OBJECT_NAME),
            ("/UserRequest/properties/name/maxLength", limits::NAME),
            ("/RoleRequest/properties/name/maxLength", limits::NAME),
            ("/RoleName/maxLength", limits::NAME),
            ("/TokenRequest/properties/name/maxLength", limits::NAME),
            (
                "/ApplicationRequest/properties/name/maxLength",
                limits::NAME,
            ),
            ("/Page/properties/items/maxItems", crate::page::MAX_LIMIT),
        ] {
            assert_eq!(
                s.pointer(pointer).and_then(Value::as_u64),
                Some(want as u64),
                "{pointer}"
            );
        }
    }

    /// The schema a `$ref` names, or the schema itself.
    fn resolved<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null),
            None => s,
        }
    }

    /// Every operation, with its method and path.
    fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
        let mut out = Vec::new();
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in ops.as_object().into_iter().flatten() {
                if method != "parameters" {
                    out.push((method.as_str(), path.as_str(), op));
                }
            }
        }
        out
    }

    #[test]
    fn every_list_is_a_page_with_limit_and_cursor() {
        use crate::page::{DEFAULT_LIMIT, MAX_LIMIT};
        let doc = doc();
        let limit = &doc["components"]["parameters"]["Limit"]["schema"];
        assert_eq!(limit["minimum"], 1);
        assert_eq!(limit["maximum"].as_u64(), Some(MAX_LIMIT as u64));
        assert_eq!(limit["default"].as_u64(), Some(DEFAULT_LIMIT as u64));
        let page = "#/components/schemas/Page";
        let mut lists = 0;
        for (method, path, op) in operations(&doc) {
            let at = format!("{method} {path}");
            let answer = resolved(
                &doc,
                op.pointer("/responses/200/content/application~1json/schema")
                    .unwrap_or(&Value::Null),
            );
            // A page is the `Page` envelope with its items, or an envelope of its own that
            // carries `items` and `next` beside what it says of the whole (a gateway's nodes
            // beside its snapshot version).
            let required = |f: &str| {
                answer["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&Value::from(f)))
            };
            let own_envelope = answer.pointer("/properties/items/type")
                == Some(&Value::from("array"))
                && required("items")
                && required("next")
                && answer.pointer("/properties/items/maxItems").is_some();
            assert!(
                method != "get"
                    || own_envelope
                    || answer.pointer("/properties/items/type") != Some(&Value::from("array")),
                "{at}: a list that is not a `Page`"
            );
            let paged = answer.pointer("/allOf/0/$ref") == Some(&Value::from(page)) || own_envelope;
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["$ref"].as_str())
                .collect();
            let takes = |p: &str| params.contains(&format!("#/components/parameters/{p}").as_str());
            assert_eq!(
                paged,
                takes("Limit"),
                "{at}: a page takes `limit`, and only a page"
            );
            if paged {
                lists += 1;
                assert!(takes("Cursor"), "{at}: no `cursor`");
                assert!(op["responses"]["400"].is_object(), "{at}: no 400");
                let words = op["description"].as_str().unwrap_or_default();
                assert!(
                    words.contains("100 items") && words.contains("`next`"),
                    "{at}: the description does not say how pages go: {words}"
                );
            }
        }
        assert!(lists >= 25, "{lists} lists");
    }

    /// Every operation behind the bearer token documents 401 and 403, but those
    /// [`crate::access::authorize`] lets every caller through: asking who one is, ending one's
    /// session, and the developer portal's reads.
    #[test]
    fn every_operation_a_role_can_refuse_documents_403() {
        use crate::access::{Action, Caller, KindId, Via, authorize};
        let anyone = [
            ("get", "/api/v1/auth/whoami", KindId::Token),
            ("post", "/api/v1/auth/logout", KindId::Token),
            ("get", "/api/v1/portal/apis", KindId::Portal),
            ("get", "/api/v1/portal/apis/{id}", KindId::Portal),
            ("get", "/api/v1/portal/applications", KindId::Portal),
            ("get", "/api/v1/portal/applications/{name}", KindId::Portal),
            (
                "get",
                "/api/v1/portal/applications/{name}/keys",
                KindId::Portal,
            ),
            (
                "get",
                "/api/v1/portal/applications/{name}/subscriptions",
                KindId::Portal,
            ),
        ];
        let no_roles = Caller {
            name: "someone".into(),
            roles: Vec::new(),
            via: Via::Token,
            token_id: None,
        };
        for (method, path, kind) in anyone {
            let action = if method == "get" {
                Action::Read
            } else {
                Action::Write
            };
            assert!(
                authorize(Some(&no_roles), kind, action, None).is_ok(),
                "{method} {path} refuses callers without roles: document its 403"
            );
        }
        let doc = doc();
        let mut refusable = 0;
        for (method, path, op) in operations(&doc) {
            let at = format!("{method} {path}");
            let security = op.get("security").unwrap_or(&doc["security"]);
            let bearer = security
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s.get("bearer").is_some());
            let documents = |status: &str| op["responses"][status].is_object();
            if !bearer {
                assert!(!documents("403"), "{at}: no bearer token, no roles, no 403");
                continue;
            }
            assert!(documents("401"), "{at}: no 401");
            let exempt = anyone.iter().any(|(m, p, _)| (*m, *p) == (method, path));
            assert_eq!(documents("403"), !exempt, "{at}");
            if !exempt {
                refusable += 1;
                assert_eq!(
                    op["responses"]["403"]["$ref"], "#/components/responses/Forbidden",
                    "{at}"
                );
            }
        }
        assert!(refusable >= 90, "{refusable} operations");
    }

    #[test]
    fn the_audit_log_is_filtered_by_every_kind() {
        let doc = doc();
        let kinds = doc["paths"]["/api/v1/audit"]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "kind")
            .map(|p| p["schema"]["enum"].clone())
            .unwrap_or_default();
        let want: Vec<&str> = crate::access::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, Value::from(want));
    }
}
