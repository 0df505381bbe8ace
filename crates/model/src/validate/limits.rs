//! Bounds on every string and list a definition may hold, shared by the admin API, the CLI
//! and gateway files (docs/control-plane.md, "Limits", lists them).
//!
//! Two layers keep every value bounded. [`check`] walks a whole document and gives every
//! string and list a ceiling ([`TEXT`], [`LIST`], with a few wider ones by field); the rules
//! of each kind then set tighter limits where a field has a meaning (names, contexts, hosts,
//! endpoint URLs, header names). Lengths count characters (Unicode scalar values), as JSON
//! Schema's `maxLength` does.

use serde_json::Value;

use crate::error::FieldError;

/// Names of gateways, consumers, tiers, route definitions and users.
pub const NAME: usize = 64;
/// Names inside a snapshot: services, routes and listeners.
pub const OBJECT_NAME: usize = 128;
/// An API's name.
pub const API_NAME: usize = 100;
/// An API's version label.
pub const API_VERSION: usize = 30;
/// An API's context path.
pub const CONTEXT: usize = 256;
/// A hostname (DNS allows no more).
pub const HOST: usize = 253;
/// A backend URL or a gateway's admin URL.
pub const URL: usize = 2048;
/// An HTTP token: a header name (in matches, edits, fixed responses, `api_key_header`) or a
/// method.
pub const HEADER_NAME: usize = 256;
/// Any other string: descriptions, notes, header values, paths, regular expressions.
pub const TEXT: usize = 4096;
/// PEM text (`*_pem` fields): a certificate chain or a key.
pub const PEM: usize = 65_536;
/// The body of a fixed response.
pub const BODY: usize = 65_536;
/// Hostnames in one `hosts` list.
pub const HOSTS: usize = 100;
/// Backend URLs or endpoints in one list (`endpoints`, `production_endpoints`,
/// `sandbox_endpoints`).
pub const ENDPOINTS: usize = 100;
/// The whole content of a gateway file or an app version: `routes`, `services`, `files`,
/// `hashes`.
pub const COLLECTION: usize = 10_000;
/// Any other list or map: operations, methods, scopes, header matches and edits, origins,
/// networks, listeners, gateways.
pub const LIST: usize = 1000;

/// Fields whose object value is a map: its keys are data (header names, file paths), not
/// field names.
const MAPS: [&str; 5] = ["add", "set", "headers", "files", "subscriptions"];

/// The ceiling of a string in field `key` (of a struct, or the list it is an item of).
/// Fields whose name means the same everywhere get their own limit here; names, whose limit
/// depends on what they name, get it from their kind's rules.
pub fn string_limit(key: &str) -> usize {
    match key {
        k if k.ends_with("_pem") => PEM,
        "body" => BODY,
        "context" => CONTEXT,
        "hosts" => HOST,
        "url"
        | "endpoints"
        | "production_endpoints"
        | "sandbox_endpoints"
        | "production_failover_endpoints"
        | "sandbox_failover_endpoints" => URL,
        "api_key_header" | "remove" | "allow_headers" | "expose_headers" | "method" | "methods"
        | "allow_methods" => HEADER_NAME,
        _ => TEXT,
    }
}

/// The ceiling of a key of the map in field `key`: header names, file paths.
pub fn map_key_limit(key: &str) -> usize {
    match key {
        "add" | "set" | "headers" => HEADER_NAME,
        "files" => crate::app::MAX_PATH,
        _ => TEXT,
    }
}

/// The ceiling of a list or map in field `key`.
pub fn list_limit(key: &str) -> usize {
    match key {
        "hosts" => HOSTS,
        "endpoints"
        | "production_endpoints"
        | "sandbox_endpoints"
        | "production_failover_endpoints"
        | "sandbox_failover_endpoints" => ENDPOINTS,
        "routes" | "services" | "files" | "hashes" => COLLECTION,
        _ => LIST,
    }
}

/// Every string and list of `doc` over its ceiling, with its field path.
pub fn check(doc: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut path = String::new();
    walk(doc, &mut path, "", false, &mut out);
    out
}

/// Every `null` in `doc`, with its field path: a field without a value is left out.
pub fn nulls(doc: &Value) -> Vec<FieldError> {
    fn go(v: &Value, path: &mut String, out: &mut Vec<FieldError>) {
        match v {
            Value::Null => out.push(FieldError::new(
                shown(path),
                "null is not a value here: leave the field out for its default",
            )),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    go(item, path, out);
                    path.truncate(len);
                }
            }
            Value::Object(fields) => {
                for (k, item) in fields {
                    let len = path.len();
                    push_key(path, k);
                    go(item, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    go(doc, &mut String::new(), &mut out);
    out
}

/// [`check`] of a typed value, as it serializes.
pub fn of<T: serde::Serialize>(value: &T) -> Vec<FieldError> {
    serde_json::to_value(value)
        .map(|v| check(&v))
        .unwrap_or_default()
}

/// Adds `more` to `errors`, but none at a path `errors` already has a problem with: the
/// tighter rule of a field speaks for it.
pub fn merge(errors: &mut Vec<FieldError>, more: Vec<FieldError>) {
    for e in more {
        if !errors.iter().any(|f| f.path == e.path) {
            errors.push(e);
        }
    }
}

/// `Err` with the message when `value` (at a field with a tighter limit) is too long.
pub fn at_most(value: &str, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n > max {
        Err(format!("at most {max} characters (this one has {n})"))
    } else {
        Ok(())
    }
}

/// Walks `v` found under field `key`; `in_map` when `v` is a value of a map.
fn walk(v: &Value, path: &mut String, key: &str, in_map: bool, out: &mut Vec<FieldError>) {
    match v {
        Value::String(s) => {
            let max = if in_map { TEXT } else { string_limit(key) };
            if let Err(m) = at_most(s, max) {
                out.push(FieldError::new(shown(path), m));
            }
        }
        Value::Array(items) => {
            let max = list_limit(key);
            if items.len() > max {
                out.push(FieldError::new(
                    shown(path),
                    format!("at most {max} items (this list has {})", items.len()),
                ));
                return;
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, key, in_map, out);
                path.truncate(len);
            }
        }
        Value::Object(fields) => {
            let is_map = !in_map && MAPS.contains(&key);
            if is_map && fields.len() > list_limit(key) {
                out.push(FieldError::new(
                    shown(path),
                    format!(
                        "at most {} entries (this one has {})",
                        list_limit(key),
                        fields.len()
                    ),
                ));
                return;
            }
            let key_max = if is_map { map_key_limit(key) } else { TEXT };
            for (k, item) in fields {
                let len = path.len();
                push_key(path, k);
                if let Err(m) = at_most(k, key_max) {
                    out.push(FieldError::new(shown(path), format!("the name is {m}")));
                } else if is_map {
                    walk(item, path, k, true, out);
                } else {
                    walk(item, path, k, false, out);
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    // A key over the limit is named by its start only.
    path.extend(key.chars().take(64));
}

fn shown(path: &str) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(v: &Value) -> Vec<String> {
        check(v).into_iter().map(|f| f.path).collect()
    }

    #[test]
    fn every_string_and_list_has_a_ceiling_named_by_its_path() {
        let long = "x".repeat(TEXT + 1);
        let doc = json!({
            "description": long,
            "hosts": vec!["a.example"; HOSTS + 1],
            "operations": [{"path": "/ok"}, {"path": long}],
            "cert_pem": "y".repeat(TEXT + 1),
            "request_headers": {"set": {"x-a": long}},
        });
        assert_eq!(
            paths(&doc),
            [
                "description",
                "hosts",
                "operations[1].path",
                "request_headers.set.x-a"
            ]
        );
        assert!(
            check(&json!({"key_pem": "k".repeat(PEM + 1)}))[0]
                .message
                .starts_with("at most 65536 characters")
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert!(at_most(&"é".repeat(API_NAME), API_NAME).is_ok());
        assert!(at_most(&"é".repeat(API_NAME + 1), API_NAME).is_err());
    }

    #[test]
    fn map_keys_are_data_not_field_names() {
        // A header named `body` gets the header value ceiling, not the fixed body's.
        let doc = json!({"set": {"body": "v".repeat(TEXT + 1)}, "body": "b".repeat(TEXT + 1)});
        assert_eq!(paths(&doc), ["set.body"]);
    }

    #[test]
    fn nulls_are_found_anywhere() {
        let doc = json!({"a": null, "b": [1, null], "c": {"d": null}, "e": "x"});
        let got: Vec<String> = nulls(&doc).into_iter().map(|f| f.path).collect();
        assert_eq!(got, ["a", "b[1]", "c.d"]);
    }
}
