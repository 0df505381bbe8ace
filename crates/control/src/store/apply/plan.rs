//! The plan of an apply, and its checks against the state the plan would leave: pure, over
//! what was read inside the transaction. Every problem is collected, each naming the object
//! (`route \`orders\``) and its field path in the document.

use std::collections::{BTreeMap, BTreeSet};

use portico_model::apply::{Document, Kind};
use portico_model::{FieldError, GatewayKind};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Action, PlanItem, Stored};
use crate::apply::label;
use crate::error::Error;
use crate::store::key;

/// Each object of the document as created, updated or unchanged, then (with `prune`) each
/// stored object of a kind the document names that it does not name, as deleted. The
/// built-in gateway is never deleted.
pub(super) fn plan(doc: &Document, stored: &Stored, prune: bool) -> Vec<PlanItem> {
    let mut items = Vec::new();
    for kind in Kind::ALL {
        for (i, name) in doc.names(kind).into_iter().enumerate() {
            let (action, changes) = match stored.current(kind, &key(&name)) {
                None => (Action::Created, Vec::new()),
                Some(old) => {
                    let changes = changed_fields(&old, &file_value(doc, kind, i));
                    if changes.is_empty() {
                        (Action::Unchanged, changes)
                    } else {
                        (Action::Updated, changes)
                    }
                }
            };
            items.push(PlanItem {
                kind: kind.word(),
                name,
                action,
                changes,
                of: kind,
                index: Some(i),
            });
        }
    }
    if prune {
        for &kind in &doc.kinds {
            let named: BTreeSet<String> = doc.names(kind).iter().map(|n| key(n)).collect();
            for (k, name) in stored.names(kind) {
                if named.contains(&k) || (kind == Kind::Gateway && stored.builtin.contains(&k)) {
                    continue;
                }
                items.push(PlanItem {
                    kind: kind.word(),
                    name,
                    action: Action::Deleted,
                    changes: Vec::new(),
                    of: kind,
                    index: None,
                });
            }
        }
    }
    items
}

/// Checks every reference of the document's objects, and every deletion, against the state
/// the plan leaves: what is stored, plus the document, less what is deleted.
pub(super) fn check(doc: &Document, stored: &Stored, items: &[PlanItem]) -> Result<(), Error> {
    let world = World::new(doc, stored, items);
    let mut errors = Vec::new();
    let mut at = |kind: Kind, i: usize, field: &str, message: String| {
        let name = doc.names(kind).into_iter().nth(i).unwrap_or_default();
        errors.push(FieldError::new(
            doc.path(kind, i, field),
            format!("{} `{name}`: {message}", label(kind)),
        ));
    };
    for (i, g) in doc.gateways.iter().enumerate() {
        if stored.builtin.contains(&key(&g.name)) && g.kind != GatewayKind::Hybrid {
            at(
                Kind::Gateway,
                i,
                "type",
                "the built-in gateway keeps its type, hybrid: change its hosts or listeners only"
                    .into(),
            );
        }
    }
    for (i, a) in doc.apis.iter().enumerate() {
        for (field, tier) in crate::api::api_tier_refs(a) {
            if let Some(t) = tier.as_deref().filter(|t| !world.exists(Kind::Tier, t)) {
                at(Kind::Api, i, &field, missing(Kind::Tier, t));
            }
        }
    }
    for (i, c) in doc.consumers.iter().enumerate() {
        if let Some(t) = c.tier.as_deref().filter(|t| !world.exists(Kind::Tier, t)) {
            at(Kind::Consumer, i, "tier", missing(Kind::Tier, t));
        }
    }
    for (i, s) in doc.subscriptions.iter().enumerate() {
        if !world.exists(Kind::Consumer, &s.consumer) {
            at(
                Kind::Subscription,
                i,
                "consumer",
                missing(Kind::Consumer, &s.consumer),
            );
        }
        if !world.exists(Kind::Api, &s.api) {
            at(Kind::Subscription, i, "api", missing(Kind::Api, &s.api));
        }
        if let Some(t) = s.tier.as_deref().filter(|t| !world.exists(Kind::Tier, t)) {
            at(Kind::Subscription, i, "tier", missing(Kind::Tier, t));
        }
    }
    for (i, r) in doc.routes.iter().enumerate() {
        for (j, g) in r.gateways.iter().enumerate() {
            if !world.exists(Kind::Gateway, g) {
                at(
                    Kind::Route,
                    i,
                    &format!("gateways[{j}]"),
                    missing(Kind::Gateway, g),
                );
            }
        }
        for t in r.route.all_targets() {
            if !world.exists(Kind::Service, &t.service) {
                at(
                    Kind::Route,
                    i,
                    "route.forward",
                    missing(Kind::Service, &t.service),
                );
            }
        }
    }
    for (i, c) in doc.certificates.iter().enumerate() {
        match stored.certificates.get(&key(&c.name)) {
            None => at(
                Kind::Certificate,
                i,
                "name",
                format!(
                    "no certificate named `{}` is uploaded: upload it first with `portico certificates upload` (apply takes no private keys)",
                    c.name
                ),
            ),
            Some((_, names)) => {
                for (j, h) in c.hosts.iter().enumerate() {
                    let host = h.to_ascii_lowercase();
                    if !names.iter().any(|n| portico_compile::host_covers(n, &host)) {
                        at(
                            Kind::Certificate,
                            i,
                            &format!("hosts[{j}]"),
                            format!(
                                "the uploaded certificate does not cover `{h}` (it names {})",
                                names.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
    for (i, a) in doc.apps.iter().enumerate() {
        for (j, r) in a.routes.iter().enumerate() {
            if !world.exists(Kind::Service, &r.service) {
                at(
                    Kind::App,
                    i,
                    &format!("routes[{j}].service"),
                    missing(Kind::Service, &r.service),
                );
            }
        }
    }
    errors.extend(world.deletion_problems(doc, stored, items));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

fn missing(kind: Kind, name: &str) -> String {
    format!(
        "no {} named `{name}`: add it to the file, or create it first",
        label(kind)
    )
}

/// The state a plan leaves, by kind: names (lower case) that will exist.
struct World {
    in_file: BTreeMap<Kind, BTreeSet<String>>,
    deleted: BTreeSet<(Kind, String)>,
    stored: BTreeMap<Kind, BTreeSet<String>>,
}

impl World {
    fn new(doc: &Document, stored: &Stored, items: &[PlanItem]) -> Self {
        let mut in_file = BTreeMap::new();
        let mut kept = BTreeMap::new();
        for kind in Kind::ALL {
            // Certificates are never created by apply: naming one does not make it exist.
            let named = if kind == Kind::Certificate {
                BTreeSet::new()
            } else {
                doc.names(kind).iter().map(|n| key(n)).collect()
            };
            in_file.insert(kind, named);
            kept.insert(
                kind,
                stored.names(kind).into_iter().map(|(k, _)| k).collect(),
            );
        }
        Self {
            in_file,
            deleted: items
                .iter()
                .filter(|i| i.action == Action::Deleted)
                .map(|i| (i.of, key(&i.name)))
                .collect(),
            stored: kept,
        }
    }

    fn exists(&self, kind: Kind, name: &str) -> bool {
        let k = key(name);
        self.in_file.get(&kind).is_some_and(|s| s.contains(&k))
            || (self.stored.get(&kind).is_some_and(|s| s.contains(&k))
                && !self.deleted.contains(&(kind, k)))
    }

    /// Whether a stored object stays as stored (neither replaced by the file nor deleted).
    fn kept_as_stored(&self, kind: Kind, k: &str) -> bool {
        !self.in_file.get(&kind).is_some_and(|s| s.contains(k))
            && !self.deleted.contains(&(kind, k.to_owned()))
    }

    /// Deletions that would leave something pointing at nothing, or take away what runs.
    fn deletion_problems(
        &self,
        doc: &Document,
        stored: &Stored,
        items: &[PlanItem],
    ) -> Vec<FieldError> {
        let mut out = Vec::new();
        for item in items.iter().filter(|i| i.action == Action::Deleted) {
            let k = key(&item.name);
            let users: Vec<String> = match item.of {
                Kind::Api if stored.deployed_apis.contains(&k) => {
                    vec!["its deployments: undeploy it first".into()]
                }
                Kind::App if stored.deployed_apps.contains(&k) => {
                    vec!["its deployments: undeploy it from every gateway first".into()]
                }
                Kind::Service => self.service_users(doc, stored, &k),
                Kind::Tier => self.tier_users(doc, stored, &k),
                _ => Vec::new(),
            };
            if !users.is_empty() {
                out.push(FieldError::new(
                    item.of.section(),
                    format!(
                        "{} `{}` is not in the file, so --prune would delete it, but it is used by {}",
                        label(item.of),
                        item.name,
                        users.join(", ")
                    ),
                ));
            }
        }
        out
    }

    fn service_users(&self, doc: &Document, stored: &Stored, service: &str) -> Vec<String> {
        let routes = doc.routes.iter().chain(
            stored
                .routes
                .iter()
                .filter(|(k, _)| self.kept_as_stored(Kind::Route, k))
                .map(|(_, r)| &r.spec),
        );
        let apps = doc.apps.iter().chain(
            stored
                .apps
                .iter()
                .filter(|(k, _)| self.kept_as_stored(Kind::App, k))
                .map(|(_, a)| &a.spec),
        );
        let mut out: Vec<String> = routes
            .filter(|r| {
                r.route
                    .all_targets()
                    .iter()
                    .any(|t| key(&t.service) == service)
            })
            .map(|r| format!("route `{}`", r.name))
            .collect();
        out.extend(
            apps.filter(|a| a.routes.iter().any(|r| key(&r.service) == service))
                .map(|a| format!("app `{}`", a.slug)),
        );
        out
    }

    fn tier_users(&self, doc: &Document, stored: &Stored, tier: &str) -> Vec<String> {
        let names = |t: &Option<String>| t.as_deref().is_some_and(|t| key(t) == tier);
        let mut out = Vec::new();
        let consumers = doc.consumers.iter().chain(
            stored
                .consumers
                .iter()
                .filter(|(k, _)| self.kept_as_stored(Kind::Consumer, k))
                .map(|(_, c)| &c.spec),
        );
        out.extend(
            consumers
                .filter(|c| names(&c.tier))
                .map(|c| format!("consumer `{}`", c.name)),
        );
        let apis = doc.apis.iter().chain(
            stored
                .apis
                .iter()
                .filter(|(k, _)| self.kept_as_stored(Kind::Api, k))
                .map(|(_, a)| &a.spec),
        );
        out.extend(
            apis.filter(|a| {
                crate::api::api_tier_refs(a)
                    .into_iter()
                    .any(|(_, t)| names(t))
            })
            .map(|a| format!("API `{}`", a.id())),
        );
        let mut subs: Vec<(String, &Option<String>)> = doc
            .subscriptions
            .iter()
            .map(|s| (format!("{}/{}", s.consumer, s.api), &s.tier))
            .collect();
        for (k, s) in &stored.subscriptions {
            let (consumer, api) = k.split_once('/').unwrap_or_default();
            if self.kept_as_stored(Kind::Subscription, k)
                && self.exists(Kind::Consumer, consumer)
                && self.exists(Kind::Api, api)
            {
                subs.push((s.name.clone(), &s.tier));
            }
        }
        out.extend(
            subs.into_iter()
                .filter(|(_, t)| names(t))
                .map(|(n, _)| format!("subscription `{n}`")),
        );
        out
    }
}

impl Stored {
    /// A stored object's comparable form, when it exists.
    fn current(&self, kind: Kind, k: &str) -> Option<Value> {
        match kind {
            Kind::Gateway => self.gateways.get(k).map(|r| value(&r.spec)),
            Kind::Service => self.services.get(k).map(|r| value(&r.spec)),
            Kind::Tier => self.tiers.get(k).map(|r| value(&r.spec)),
            Kind::Api => self.apis.get(k).map(|r| value(&r.spec)),
            Kind::Consumer => self.consumers.get(k).map(|r| value(&r.spec)),
            Kind::Subscription => self.subscriptions.get(k).map(|s| json!({"tier": s.tier})),
            Kind::Route => self.routes.get(k).map(|r| value(&r.spec)),
            Kind::Certificate => self.certificates.get(k).map(|_| json!({})),
            Kind::App => self.apps.get(k).map(|r| value(&r.spec)),
        }
    }

    /// Every stored object of a kind: (lower-case key, name as shown).
    fn names(&self, kind: Kind) -> Vec<(String, String)> {
        fn of<T>(
            map: &BTreeMap<String, T>,
            f: impl Fn(&String, &T) -> String,
        ) -> Vec<(String, String)> {
            map.iter().map(|(k, v)| (k.clone(), f(k, v))).collect()
        }
        match kind {
            Kind::Gateway => of(&self.gateways, |_, r| r.spec.name.clone()),
            Kind::Service => of(&self.services, |_, r| r.spec.name.clone()),
            Kind::Tier => of(&self.tiers, |_, r| r.spec.name.clone()),
            Kind::Api => of(&self.apis, |k, _| k.clone()),
            Kind::Consumer => of(&self.consumers, |_, r| r.spec.name.clone()),
            Kind::Subscription => of(&self.subscriptions, |_, s| s.name.clone()),
            Kind::Route => of(&self.routes, |_, r| r.spec.name.clone()),
            Kind::Certificate => of(&self.certificates, |_, (name, _)| name.clone()),
            Kind::App => of(&self.apps, |_, r| r.spec.slug.clone()),
        }
    }
}

/// The document's object in the form [`Stored::current`] answers.
fn file_value(doc: &Document, kind: Kind, i: usize) -> Value {
    let v = match kind {
        Kind::Gateway => doc.gateways.get(i).map(value),
        Kind::Service => doc.services.get(i).map(value),
        Kind::Tier => doc.tiers.get(i).map(value),
        Kind::Api => doc.apis.get(i).map(value),
        Kind::Consumer => doc.consumers.get(i).map(value),
        Kind::Subscription => doc.subscriptions.get(i).map(|s| json!({"tier": s.tier})),
        Kind::Route => doc.routes.get(i).map(value),
        Kind::Certificate => doc.certificates.get(i).map(|_| json!({})),
        Kind::App => doc.apps.get(i).map(value),
    };
    v.unwrap_or(Value::Null)
}

fn value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The top-level fields whose values differ.
fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut fields: BTreeSet<&String> = BTreeSet::new();
    for (k, v) in n {
        if o.get(k) != Some(v) {
            fields.insert(k);
        }
    }
    for k in o.keys() {
        if !n.contains_key(k) {
            fields.insert(k);
        }
    }
    fields.into_iter().cloned().collect()
}
