//! Routes that can never both be reached: the same match on the same listeners. The
//! second one is dead (definition order picks the first), which is never what was meant:
//! two APIs on one context, two raw routes written alike.

use std::collections::HashMap;

use portico_model::Snapshot;

/// Pairs of route names with the same match on the same listeners, in definition order
/// (the first one wins every request; the second is never reached), described for people:
/// `API \`a\`` for the routes of the APIs in `api_ids`, `route \`r\`` for the others.
pub fn collisions(snapshot: &Snapshot, api_ids: &[&str]) -> Vec<String> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in snapshot.routes.iter().enumerate() {
        let mut listeners = r.listeners.clone();
        listeners.sort_unstable();
        // The match, listeners and priority written out (derived `Debug` prints every
        // field): equal keys are routes the router cannot tell apart.
        let key = format!("{:?}", (listeners, &r.matches, r.priority));
        let name = describe(&r.effective_name(i), api_ids);
        match seen.get(&key) {
            Some(first) if *first != name => {
                out.push(format!("{first} and {name} match the same requests"));
            }
            Some(_) => {}
            None => {
                seen.insert(key, name);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `api.<id>` and `api.<id>.<operation>` are an API's routes; anything else a raw route
/// (or an app's).
fn describe(route: &str, api_ids: &[&str]) -> String {
    let api = route.strip_prefix("api.").and_then(|rest| {
        api_ids.iter().find(|id| {
            rest.strip_prefix(**id).is_some_and(|op| {
                op.is_empty()
                    || op
                        .strip_prefix('.')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
    });
    match api {
        Some(id) => format!("API `{id}`"),
        None => format!("route `{route}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_alike_are_named_by_what_made_them() {
        let text = r#"
[[services]]
name = "s"
endpoints = ["127.0.0.1:1"]
[[routes]]
name = "api.pets-v1.2"
match = { path = { path_prefix = "/pets" } }
forward = { service = "s" }
[[routes]]
name = "api.pets-v2.0"
match = { path = { path_prefix = "/pets" } }
forward = { service = "s" }
[[routes]]
name = "raw"
match = { path = { path_prefix = "/pets" }, methods = ["GET"] }
forward = { service = "s" }
[[routes]]
name = "raw-again"
match = { path = { path_prefix = "/pets" }, methods = ["GET"] }
forward = { service = "s" }
"#;
        let file = portico_model::GatewayFile::parse(text, portico_model::Format::Toml)
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, snapshot) = file.into_parts();
        assert_eq!(
            collisions(&snapshot, &["pets-v1.2", "pets-v2"]),
            vec![
                "API `pets-v1.2` and API `pets-v2` match the same requests".to_owned(),
                "route `raw` and route `raw-again` match the same requests".to_owned(),
            ]
        );
    }
}
