//! The document `portico apply` sends (`POST /api/v1/apply`): many objects of every kind in
//! sections (`[[apis]]`, `[[tiers]]`, ...), or one object alone, the same file
//! `portico apis create -f` takes. Reading it is pure: which kind a lone object is, every
//! object typed, every problem with its path. Checking objects against what is stored is the
//! control plane's part.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, FieldError};
use crate::snapshot::{Format, parse};
use crate::{ApiSpec, AppSpec, ConsumerSpec, GatewaySpec, RouteSpec, Service, Tier};

/// A kind of object `apply` takes, in the order it writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A deploy target ([`GatewaySpec`]).
    Gateway,
    /// An upstream ([`Service`]).
    Service,
    /// A throttling tier ([`Tier`]).
    Tier,
    /// A managed API's working definition ([`ApiSpec`]).
    Api,
    /// Who calls APIs ([`ConsumerSpec`]).
    Consumer,
    /// A consumer's subscription to an API ([`SubscriptionSpec`]).
    Subscription,
    /// A raw gateway route ([`RouteSpec`]).
    Route,
    /// An uploaded certificate, by name ([`CertificateRef`]).
    Certificate,
    /// A hosted app's settings ([`AppSpec`]), not its files.
    App,
}

impl Kind {
    /// Every kind, in write order.
    pub const ALL: [Self; 9] = [
        Self::Gateway,
        Self::Service,
        Self::Tier,
        Self::Api,
        Self::Consumer,
        Self::Subscription,
        Self::Route,
        Self::Certificate,
        Self::App,
    ];

    /// The word for one object, as `kind = "..."` takes it: `api`, `tier`, ...
    pub fn word(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Service => "service",
            Self::Tier => "tier",
            Self::Api => "api",
            Self::Consumer => "consumer",
            Self::Subscription => "subscription",
            Self::Route => "route",
            Self::Certificate => "certificate",
            Self::App => "app",
        }
    }

    /// The section of a multi-object document: `apis`, `tiers`, ...
    pub fn section(self) -> &'static str {
        match self {
            Self::Gateway => "gateways",
            Self::Service => "services",
            Self::Tier => "tiers",
            Self::Api => "apis",
            Self::Consumer => "consumers",
            Self::Subscription => "subscriptions",
            Self::Route => "routes",
            Self::Certificate => "certificates",
            Self::App => "apps",
        }
    }

    /// The kind `kind = "..."` names (singular, or its section's plural).
    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.word() == word || k.section() == word)
    }

    /// The field only this kind's objects have, which tells a lone object's kind without
    /// `kind = "..."` (gateways, consumers and certificates have none).
    pub fn telling_field(self) -> Option<&'static str> {
        match self {
            Self::Api => Some("context"),
            Self::App => Some("slug"),
            Self::Subscription => Some("consumer"),
            Self::Route => Some("route"),
            Self::Service => Some("endpoints"),
            Self::Tier => Some("limit"),
            Self::Gateway | Self::Consumer | Self::Certificate => None,
        }
    }
}

/// A consumer's subscription to an API, optionally on a throttling tier. Its key is the
/// pair (consumer, API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// The consumer's name.
    pub consumer: String,
    /// The API's id (`name-version`, e.g. `pets-v1`).
    pub api: String,
    /// Throttling tier of this subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// An uploaded certificate, by name: `apply` never uploads one (its private key stays out of
/// files and answers) but checks that it is there and, with `hosts`, that it covers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRef {
    /// The name it was uploaded under (`portico certificates upload --name`).
    pub name: String,
    /// Hosts it must cover (`api.example.com`; a `*.example.com` name covers one label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// What an `apply` file holds, every object typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    /// One object alone (its fields at the top level), not sections.
    pub single: bool,
    /// The kinds the document names (a section, even an empty one, or the lone object's):
    /// `--prune` deletes stored objects of these kinds only.
    pub kinds: BTreeSet<Kind>,
    /// Gateways.
    pub gateways: Vec<GatewaySpec>,
    /// Services.
    pub services: Vec<Service>,
    /// Throttling tiers.
    pub tiers: Vec<Tier>,
    /// APIs.
    pub apis: Vec<ApiSpec>,
    /// Consumers.
    pub consumers: Vec<ConsumerSpec>,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Raw routes.
    pub routes: Vec<RouteSpec>,
    /// Uploaded certificates, by name.
    pub certificates: Vec<CertificateRef>,
    /// Apps' settings.
    pub apps: Vec<AppSpec>,
}

impl Document {
    /// Reads a document: TOML or JSON, sections or one object, every object typed. Every
    /// problem is reported, each with its path (`apis[1].context`, or `context` in a
    /// one-object file).
    pub fn parse(text: &str, format: Format) -> Result<Self, Error> {
        let root: Value = parse(text, format)?;
        crate::snapshot::refuse_nul(&root)?;
        let Value::Object(mut root) = root else {
            return Err(Error::Invalid(vec![FieldError::new(
                ".",
                "an apply document is an object: one object's fields, or sections such as `apis`",
            )]));
        };
        let mut doc = Self::default();
        let mut errors = Vec::new();
        match shape(&mut root) {
            Ok(Shape::Single(kind)) => {
                doc.single = true;
                doc.kinds.insert(kind);
                doc.take(kind, Value::Object(root), String::new(), &mut errors);
            }
            Ok(Shape::Sections) => {
                if root.is_empty() {
                    errors.push(FieldError::new(".", EMPTY));
                }
                for kind in Kind::ALL {
                    let Some(section) = root.remove(kind.section()) else {
                        continue;
                    };
                    doc.kinds.insert(kind);
                    match section {
                        Value::Array(items) => {
                            for (i, item) in items.into_iter().enumerate() {
                                let at = format!("{}[{i}]", kind.section());
                                doc.take(kind, item, at, &mut errors);
                            }
                        }
                        _ => errors.push(FieldError::new(
                            kind.section(),
                            format!(
                                "a list of {} objects (`[[{}]]` in TOML)",
                                kind.word(),
                                kind.section()
                            ),
                        )),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if errors.is_empty() {
            Ok(doc)
        } else {
            Err(Error::Invalid(errors))
        }
    }

    /// The path of `field` of the `index`th object of `kind` (`apis[1].context`, or
    /// `context` in a one-object file); `field` empty for the object itself.
    pub fn path(&self, kind: Kind, index: usize, field: &str) -> String {
        let at = if self.single {
            String::new()
        } else {
            format!("{}[{index}]", kind.section())
        };
        join(&at, field)
    }

    /// The names of the objects of `kind`, in file order: a name, an API's id, an app's
    /// slug, `consumer/api` for a subscription.
    pub fn names(&self, kind: Kind) -> Vec<String> {
        fn of<T>(list: &[T], f: impl Fn(&T) -> String) -> Vec<String> {
            list.iter().map(f).collect()
        }
        match kind {
            Kind::Gateway => of(&self.gateways, |g| g.name.clone()),
            Kind::Service => of(&self.services, |s| s.name.clone()),
            Kind::Tier => of(&self.tiers, |t| t.name.clone()),
            Kind::Api => of(&self.apis, ApiSpec::id),
            Kind::Consumer => of(&self.consumers, |c| c.name.clone()),
            Kind::Subscription => of(&self.subscriptions, |s| format!("{}/{}", s.consumer, s.api)),
            Kind::Route => of(&self.routes, |r| r.name.clone()),
            Kind::Certificate => of(&self.certificates, |c| c.name.clone()),
            Kind::App => of(&self.apps, |a| a.slug.clone()),
        }
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.gateways.len()
            + self.services.len()
            + self.tiers.len()
            + self.apis.len()
            + self.consumers.len()
            + self.subscriptions.len()
            + self.routes.len()
            + self.certificates.len()
            + self.apps.len()
    }

    /// Whether it holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&mut self, kind: Kind, item: Value, at: String, errors: &mut Vec<FieldError>) {
        fn push<T: DeserializeOwned>(
            list: &mut Vec<T>,
            item: Value,
            at: &str,
            errors: &mut Vec<FieldError>,
        ) {
            if let Some(v) = typed(item, at, errors) {
                list.push(v);
            }
        }
        match kind {
            Kind::Gateway => push(&mut self.gateways, item, &at, errors),
            Kind::Service => push(&mut self.services, item, &at, errors),
            Kind::Tier => push(&mut self.tiers, item, &at, errors),
            Kind::Api => push(&mut self.apis, item, &at, errors),
            Kind::Consumer => push(&mut self.consumers, item, &at, errors),
            Kind::Subscription => push(&mut self.subscriptions, item, &at, errors),
            Kind::Route => push(&mut self.routes, item, &at, errors),
            Kind::Certificate => push(&mut self.certificates, item, &at, errors),
            Kind::App => push(&mut self.apps, item, &at, errors),
        }
    }
}

const EMPTY: &str = "the document names no objects: write one object (an API file such as `apis create -f` takes) or sections such as `[[apis]]`";

enum Shape {
    Single(Kind),
    Sections,
}

/// Whether the document is sections or one object, and which kind that object is; takes a
/// `kind` field out.
fn shape(root: &mut Map<String, Value>) -> Result<Shape, FieldError> {
    if let Some(kind) = root.remove("kind") {
        let word = kind.as_str().unwrap_or_default();
        return Kind::from_word(word).map(Shape::Single).ok_or_else(|| {
            FieldError::new(
                "kind",
                format!(
                    "`{}` is not a kind: use one of {}",
                    word,
                    Kind::ALL.map(Kind::word).join(", ")
                ),
            )
        });
    }
    let is_section = |k: &String| Kind::ALL.iter().any(|kind| kind.section() == k);
    if root.keys().all(is_section) {
        return Ok(Shape::Sections);
    }
    let told: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.telling_field().is_some_and(|f| root.contains_key(f)))
        .collect();
    match told.as_slice() {
        [one] => Ok(Shape::Single(*one)),
        // Sections beside a key that is none: a misspelt section, most likely.
        [] if root.keys().any(is_section) => {
            let unknown: Vec<&str> = root
                .keys()
                .filter(|k| !is_section(k))
                .map(String::as_str)
                .collect();
            Err(FieldError::new(
                unknown.first().copied().unwrap_or("."),
                format!(
                    "`{}` is not a section: the sections are {}",
                    unknown.join("`, `"),
                    Kind::ALL.map(Kind::section).join(", ")
                ),
            ))
        }
        [] => Err(FieldError::new(
            "kind",
            "cannot tell which kind of object this is: add `kind = \"gateway\"` (or consumer, certificate, ...), or write sections such as `[[gateways]]`",
        )),
        many => Err(FieldError::new(
            "kind",
            format!(
                "the fields fit more than one kind ({}): add `kind = \"...\"`",
                many.iter().map(|k| k.word()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// One object from its JSON form, or its problem with the path.
fn typed<T: DeserializeOwned>(item: Value, at: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(item) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." { String::new() } else { inner };
            let path = join(at, &field);
            errors.push(FieldError::new(
                if path.is_empty() {
                    ".".to_owned()
                } else {
                    path
                },
                e.into_inner().to_string(),
            ));
            None
        }
    }
}

/// `at.field`, `at[3]` or either alone.
fn join(at: &str, field: &str) -> String {
    match (at.is_empty(), field.is_empty()) {
        (_, true) => at.to_owned(),
        (true, false) => field.to_owned(),
        (false, false) if field.starts_with('[') => format!("{at}{field}"),
        (false, false) => format!("{at}.{field}"),
    }
}

#[cfg(test)]
mod tests;
