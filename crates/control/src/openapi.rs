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
    }

    /// Walks a request schema: every string has a `maxLength`, every list a `maxItems`,
    /// every map a `maxProperties`, every object with fields refuses others.
    fn unbounded(
        doc: &Value,
        s: &Value,
        at: &str,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default().to_owned();
            if seen.insert(name.clone()) {
                unbounded(doc, &doc["components"]["schemas"][&name], &name, seen, out);
            }
            return;
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            for (i, sub) in s[key].as_array().into_iter().flatten().enumerate() {
                unbounded(doc, sub, &format!("{at}/{key}[{i}]"), seen, out);
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
            unbounded(doc, &s["items"], &format!("{at}[]"), seen, out);
        }
        if let Some(fields) = s.get("properties").and_then(Value::as_object) {
            if s.get("additionalProperties") != Some(&Value::Bool(false)) {
                out.push(format!("{at}: an object that takes unknown fields"));
            }
            for (k, v) in fields {
                unbounded(doc, v, &format!("{at}.{k}"), seen, out);
            }
        } else if let Some(values) = s.get("additionalProperties").filter(|v| v.is_object()) {
            if s.get("maxProperties").is_none() || s["propertyNames"].get("maxLength").is_none() {
                out.push(format!(
                    "{at}: a map without maxProperties and propertyNames"
                ));
            }
            unbounded(doc, values, &format!("{at}.*"), seen, out);
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
        ] {
            assert_eq!(
                s.pointer(pointer).and_then(Value::as_u64),
                Some(want as u64),
                "{pointer}"
            );
        }
    }
}
