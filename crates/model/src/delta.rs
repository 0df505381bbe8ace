//! Deltas: what changed between two snapshots of one gateway, entity by entity, and the
//! digest that lets a node check what it holds after applying one.
//!
//! A Snapshot is a set of entities: each listener, service, route, API key, consumer, tier
//! and app version is one, keyed by its name (a key by its hash, an app version by
//! `slug@version`), and the few settings that are not lists (the schema, the gateway type,
//! JWT verification, the ACME state, the portal) are one entity together, [`Singles`]. A
//! route's entity also names the route before it, so the order of routes (the last
//! tie-breaker of precedence) is part of the content.
//!
//! The [`Digest`] of a Snapshot is the sum, lane by lane modulo 2^64, of the SHA-256 of each
//! entity's canonical JSON: adding, changing or removing one entity moves it by that
//! entity's terms alone, so a node holding a million keys checks a one-key change without
//! hashing the million. (A sum of hashes detects corruption and divergence; it is not meant
//! to resist someone who chooses entities to collide, and nothing here trusts content it
//! did not get over the authenticated sync channel.)

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::acme::AcmeState;
use crate::app::AppBundle;
use crate::control::GatewayKind;
use crate::listener::Listener;
use crate::packed::{ApiKeys, Consumers};
use crate::portal::Portal;
use crate::route::Route;
use crate::security::{ApiKeyGrant, ConsumerLimits, JwtSettings, Security, Tier};
use crate::service::Service;
use crate::snapshot::Snapshot;

/// How the text form of a [`Digest`] begins.
pub const DIGEST_PREFIX: &str = "msha256:";

/// A Snapshot's digest: the lane-wise sum of its entities' SHA-256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest([u64; 4]);

/// The kinds of entity a Snapshot is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A listener, by name.
    Listener,
    /// A service, by name.
    Service,
    /// A route, by name, with the route before it.
    Route,
    /// An API key, by hash.
    ApiKey,
    /// A consumer's limits and subscriptions, by name.
    Consumer,
    /// A throttling tier, by name.
    Tier,
    /// An app version, by `slug@version`.
    App,
    /// Everything that is not a list.
    Singles,
}

impl Kind {
    /// The word hashed with each entity of this kind.
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Listener => b"listener",
            Self::Service => b"service",
            Self::Route => b"route",
            Self::ApiKey => b"api_key",
            Self::Consumer => b"consumer",
            Self::Tier => b"tier",
            Self::App => b"app",
            Self::Singles => b"singles",
        }
    }
}

impl Digest {
    /// The terms one entity adds.
    fn term<T: Serialize + ?Sized>(kind: Kind, key: &str, value: &T) -> [u64; 4] {
        let mut h = Sha256::new();
        h.update(kind.tag());
        h.update([0]);
        h.update(key.as_bytes());
        h.update([0]);
        // Serialising plain structs, vectors and BTreeMaps cannot fail.
        h.update(serde_json::to_vec(value).unwrap_or_default());
        let d = h.finalize();
        let mut out = [0u64; 4];
        for (i, lane) in out.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[i * 8..i * 8 + 8]);
            *lane = u64::from_le_bytes(b);
        }
        out
    }

    /// Counts an entity in.
    pub fn add<T: Serialize + ?Sized>(&mut self, kind: Kind, key: &str, value: &T) {
        let t = Self::term(kind, key, value);
        for (lane, t) in self.0.iter_mut().zip(t) {
            *lane = lane.wrapping_add(t);
        }
    }

    /// Counts an entity out.
    pub fn remove<T: Serialize + ?Sized>(&mut self, kind: Kind, key: &str, value: &T) {
        let t = Self::term(kind, key, value);
        for (lane, t) in self.0.iter_mut().zip(t) {
            *lane = lane.wrapping_sub(t);
        }
    }

    /// `msha256:<64 hex digits>`.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(DIGEST_PREFIX.len() + 64);
        out.push_str(DIGEST_PREFIX);
        for lane in self.0 {
            for b in lane.to_le_bytes() {
                out.push_str(&format!("{b:02x}"));
            }
        }
        out
    }
}

/// The settings of a Snapshot that are not lists, as one entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Singles {
    /// Schema version.
    pub schema: u32,
    /// The gateway's type.
    #[serde(default)]
    pub gateway_type: GatewayKind,
    /// JWT verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// ACME challenges and host states.
    #[serde(default, skip_serializing_if = "AcmeState::is_empty")]
    pub acme: AcmeState,
    /// The developer portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<Portal>,
    /// Which requests the nodes trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::node::Sampling>,
}

impl Singles {
    /// The singles of `s`.
    pub fn of(s: &Snapshot) -> Self {
        Self {
            schema: s.schema,
            gateway_type: s.security.gateway_type,
            jwt: s.security.jwt.clone(),
            acme: s.acme.clone(),
            portal: s.portal.clone(),
            sampling: s.sampling.clone(),
        }
    }

    /// Whether `s` has these singles.
    fn same_as(&self, s: &Snapshot) -> bool {
        self.schema == s.schema
            && self.gateway_type == s.security.gateway_type
            && self.jwt == s.security.jwt
            && self.acme == s.acme
            && self.portal == s.portal
            && self.sampling == s.sampling
    }

    /// Writes them into `s`.
    fn set(self, s: &mut Snapshot) {
        s.schema = self.schema;
        s.security.gateway_type = self.gateway_type;
        s.security.jwt = self.jwt;
        s.acme = self.acme;
        s.portal = self.portal;
        s.sampling = self.sampling;
    }
}

/// A route with the name of the route before it (none for the first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedRoute {
    /// The route before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The route.
    pub route: Route,
}

/// The route entity's value as hashed: borrowed, so hashing copies nothing.
#[derive(Serialize)]
struct PlacedRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<&'a str>,
    route: &'a Route,
}

/// Keys of the entities a delta removes, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    /// Listener names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<String>,
    /// Service names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Route names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// API key hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
    /// Consumer names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    /// Tier names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    /// App versions, `slug@version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
}

impl Removed {
    /// True when nothing is removed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entities it removes.
    pub fn len(&self) -> usize {
        // Every field: one left out here would be lost on the way to the nodes.
        let Self {
            listeners,
            services,
            routes,
            api_keys,
            consumers,
            tiers,
            apps,
        } = self;
        listeners.len()
            + services.len()
            + routes.len()
            + api_keys.len()
            + consumers.len()
            + tiers.len()
            + apps.len()
    }
}

/// The entities one version added or changed (whole), and the keys of those it removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// Listeners added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// Services added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Routes added, changed or moved, in their new order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<PlacedRoute>,
    /// API keys added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeyGrant>,
    /// Consumers added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerLimits>,
    /// Tiers added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// App versions added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppBundle>,
    /// The settings that are not lists, when any of them changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singles: Option<Singles>,
    /// What is gone.
    #[serde(default, skip_serializing_if = "Removed::is_empty")]
    pub removed: Removed,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entities it adds, changes or removes.
    pub fn len(&self) -> usize {
        let Self {
            listeners,
            services,
            routes,
            api_keys,
            consumers,
            tiers,
            apps,
            singles,
            removed,
        } = self;
        listeners.len()
            + services.len()
            + routes.len()
            + api_keys.len()
            + consumers.len()
            + tiers.len()
            + apps.len()
            + usize::from(singles.is_some())
            + removed.len()
    }
}

/// What changes touched, for a runtime that rebuilds only that: the routes by name, the
/// API keys and consumers put (removals need no checking), and whether anything else
/// changed (listeners, services, tiers, apps, the singles), which rebuilds everything.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    /// Routes added, changed, moved or removed.
    pub routes: std::collections::BTreeSet<String>,
    /// API keys added or changed.
    pub put_keys: Vec<ApiKeyGrant>,
    /// Consumers added or changed.
    pub put_consumers: Vec<ConsumerLimits>,
    /// Keys or consumers changed or were removed.
    pub security: bool,
    /// Something besides routes, keys and consumers changed.
    pub other: bool,
}

impl Touched {
    /// Counts in what `c` touches (before it is applied).
    pub fn add(&mut self, c: &Changes) {
        let r = &c.removed;
        self.routes
            .extend(c.routes.iter().filter_map(|p| p.route.name.clone()));
        self.routes.extend(r.routes.iter().cloned());
        self.put_keys.extend(c.api_keys.iter().cloned());
        self.put_consumers.extend(c.consumers.iter().cloned());
        self.security |= !c.api_keys.is_empty()
            || !c.consumers.is_empty()
            || !r.api_keys.is_empty()
            || !r.consumers.is_empty();
        self.other |= !c.listeners.is_empty()
            || !c.services.is_empty()
            || !c.tiers.is_empty()
            || !c.apps.is_empty()
            || c.singles.is_some()
            || !r.listeners.is_empty()
            || !r.services.is_empty()
            || !r.tiers.is_empty()
            || !r.apps.is_empty();
    }
}

/// Why a delta could not be applied: the node falls back to a full snapshot.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// The delta names a route to follow that the node does not have.
    #[error("route `{route}` is to follow route `{after}`, which is not there")]
    NoRouteBefore {
        /// The route placed.
        route: String,
        /// The route it follows.
        after: String,
    },
    /// Routes without names cannot be told apart across versions.
    #[error("routes[{0}] has no name: snapshots with unnamed routes travel whole")]
    UnnamedRoute(usize),
    /// Two entities of one kind share a key.
    #[error("two {kind} entities are both `{key}`")]
    Duplicate {
        /// The kind, in words.
        kind: &'static str,
        /// The key.
        key: String,
    },
    /// After applying, the content is not what the control plane has.
    #[error("after applying, the content's digest is {got}, not {want}")]
    Mismatch {
        /// What the node computed.
        got: String,
        /// What the control plane said.
        want: String,
    },
    /// An API key or consumer in the delta cannot be held.
    #[error("{0}")]
    Packed(crate::packed::PackError),
    /// The routes did not come out in the order the delta gives.
    #[error("route `{0}` did not land after the route the delta names")]
    Misplaced(String),
}

/// The key of an app version.
pub fn app_key(a: &AppBundle) -> String {
    format!("{}@{}", a.slug, a.version)
}

/// Each keyed kind: how to find an entity's key and where its list is.
trait Keyed: Serialize + PartialEq + Clone {
    const KIND: Kind;
    const WORD: &'static str;
    fn key(&self) -> std::borrow::Cow<'_, str>;
}

macro_rules! keyed {
    ($t:ty, $kind:expr, $word:literal, |$x:ident| $key:expr) => {
        impl Keyed for $t {
            const KIND: Kind = $kind;
            const WORD: &'static str = $word;
            fn key(&self) -> std::borrow::Cow<'_, str> {
                let $x = self;
                $key
            }
        }
    };
}

keyed!(Listener, Kind::Listener, "listener", |l| l
    .effective_name()
    .into());
keyed!(Service, Kind::Service, "service", |s| s
    .name
    .as_str()
    .into());
keyed!(ApiKeyGrant, Kind::ApiKey, "API key", |k| k
    .hash
    .as_str()
    .into());
keyed!(ConsumerLimits, Kind::Consumer, "consumer", |c| c
    .name
    .as_str()
    .into());
keyed!(Tier, Kind::Tier, "tier", |t| t.name.as_str().into());
keyed!(AppBundle, Kind::App, "app", |a| app_key(a).into());

/// Entities of one kind in `old` and `new`: what to put and the keys to remove.
fn diff_kind<T: Keyed>(old: &[T], new: &[T]) -> Result<(Vec<T>, Vec<String>), DeltaError> {
    let mut before: HashMap<std::borrow::Cow<'_, str>, &T> = HashMap::with_capacity(old.len());
    for o in old {
        if before.insert(o.key(), o).is_some() {
            return Err(DeltaError::Duplicate {
                kind: T::WORD,
                key: o.key().into_owned(),
            });
        }
    }
    let mut put = Vec::new();
    let mut seen: std::collections::HashSet<std::borrow::Cow<'_, str>> =
        std::collections::HashSet::with_capacity(new.len());
    for n in new {
        let k = n.key();
        if before.get(&k).is_none_or(|o| *o != n) {
            put.push(n.clone());
        }
        if !seen.insert(k) {
            return Err(DeltaError::Duplicate {
                kind: T::WORD,
                key: n.key().into_owned(),
            });
        }
    }
    let removed = before
        .into_keys()
        .filter(|k| !seen.contains(k))
        .map(std::borrow::Cow::into_owned)
        .collect();
    Ok((put, removed))
}

/// The names of `routes`, refusing unnamed ones.
fn route_names(routes: &[Route]) -> Result<Vec<&str>, DeltaError> {
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| r.name.as_deref().ok_or(DeltaError::UnnamedRoute(i)))
        .collect()
}

/// What changed from `old` to `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Result<Changes, DeltaError> {
    let mut c = Changes::default();
    (c.listeners, c.removed.listeners) = diff_kind(&old.listeners, &new.listeners)?;
    (c.services, c.removed.services) = diff_kind(&old.services, &new.services)?;
    let (put, gone) = ApiKeys::diff(&old.security.api_keys, &new.security.api_keys);
    (c.api_keys, c.removed.api_keys) = (put, gone.into_iter().map(|k| k.hash).collect());
    let (put, gone) = Consumers::diff(&old.security.consumers, &new.security.consumers);
    (c.consumers, c.removed.consumers) = (put, gone.into_iter().map(|c| c.name).collect());
    (c.tiers, c.removed.tiers) = diff_kind(&old.security.tiers, &new.security.tiers)?;
    (c.apps, c.removed.apps) = diff_kind(&old.apps, &new.apps)?;
    // Routes: an entity is the route and the name of the one before it.
    let old_names = route_names(&old.routes)?;
    let new_names = route_names(&new.routes)?;
    let mut before: HashMap<&str, (Option<&str>, &Route)> =
        HashMap::with_capacity(old.routes.len());
    for (i, r) in old.routes.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| old_names[p]);
        if before.insert(old_names[i], (prev, r)).is_some() {
            return Err(DeltaError::Duplicate {
                kind: "route",
                key: old_names[i].to_owned(),
            });
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(new.routes.len());
    for (i, r) in new.routes.iter().enumerate() {
        let name = new_names[i];
        let prev = i.checked_sub(1).map(|p| new_names[p]);
        if before.get(name).is_none_or(|(p, o)| *p != prev || *o != r) {
            c.routes.push(PlacedRoute {
                after: prev.map(str::to_owned),
                route: r.clone(),
            });
        }
        if !seen.insert(name) {
            return Err(DeltaError::Duplicate {
                kind: "route",
                key: name.to_owned(),
            });
        }
    }
    c.removed.routes = old_names
        .iter()
        .filter(|n| !seen.contains(**n))
        .map(|n| (*n).to_owned())
        .collect();
    let singles = Singles::of(new);
    if !singles.same_as(old) {
        c.singles = Some(singles);
    }
    Ok(c)
}

/// The digest of a whole Snapshot.
pub fn digest(s: &Snapshot) -> Digest {
    let mut d = Digest::default();
    fn all<T: Keyed, I: std::borrow::Borrow<T>>(
        d: &mut Digest,
        items: impl IntoIterator<Item = I>,
    ) {
        for i in items {
            let i = i.borrow();
            d.add(T::KIND, &i.key(), i);
        }
    }
    // Every field, each a kind of entity or in the singles: one added to the Snapshot
    // must be given its place here (and in `diff` and `Held::apply`).
    let Snapshot {
        schema: _,
        listeners,
        services,
        routes,
        security:
            Security {
                gateway_type: _,
                api_keys,
                jwt: _,
                tiers,
                consumers,
            },
        acme: _,
        apps,
        portal: _,
        sampling: _,
    } = s;
    all::<Listener, _>(&mut d, listeners);
    all::<Service, _>(&mut d, services);
    all::<ApiKeyGrant, _>(&mut d, api_keys.iter());
    all::<ConsumerLimits, _>(&mut d, consumers.iter());
    all::<Tier, _>(&mut d, tiers);
    all::<AppBundle, _>(&mut d, apps);
    for (i, r) in routes.iter().enumerate() {
        let name = r.effective_name(i);
        let after = i.checked_sub(1).map(|p| s.routes[p].effective_name(p));
        d.add(
            Kind::Route,
            &name,
            &PlacedRef {
                after: after.as_deref(),
                route: r,
            },
        );
    }
    d.add(Kind::Singles, "", &Singles::of(s));
    d
}

/// A Snapshot a node holds, with its digest and an index of its keyed lists, so a delta
/// applies in time proportional to its size.
#[derive(Debug, Clone)]
pub struct Held {
    snapshot: Snapshot,
    digest: Digest,
    /// Why deltas cannot apply to it (unnamed routes, two entities with one key).
    unfit: Option<DeltaError>,
    services: HashMap<String, usize>,
    tiers: HashMap<String, usize>,
    apps: HashMap<String, usize>,
}

/// Positions of each key in a list.
fn positions<T: Keyed>(items: &[T]) -> Result<HashMap<String, usize>, DeltaError> {
    let mut out = HashMap::with_capacity(items.len());
    for (i, x) in items.iter().enumerate() {
        if out.insert(x.key().into_owned(), i).is_some() {
            return Err(DeltaError::Duplicate {
                kind: T::WORD,
                key: x.key().into_owned(),
            });
        }
    }
    Ok(out)
}

/// Puts and removes entities of one unordered kind, keeping the digest and index.
fn apply_kind<T: Keyed>(
    items: &mut Vec<T>,
    index: &mut HashMap<String, usize>,
    digest: &mut Digest,
    put: Vec<T>,
    remove: &[String],
) {
    for k in remove {
        let Some(i) = index.remove(k) else { continue };
        let gone = items.swap_remove(i);
        digest.remove(T::KIND, k, &gone);
        if let Some(moved) = items.get(i) {
            index.insert(moved.key().into_owned(), i);
        }
    }
    for x in put {
        let k = x.key().into_owned();
        match index.get(&k) {
            Some(&i) => {
                digest.remove(T::KIND, &k, &items[i]);
                digest.add(T::KIND, &k, &x);
                items[i] = x;
            }
            None => {
                digest.add(T::KIND, &k, &x);
                index.insert(k, items.len());
                items.push(x);
            }
        }
    }
}

impl Held {
    /// Indexes `snapshot` and computes its digest. A snapshot deltas cannot apply to
    /// (unnamed routes, two entities with one key) is held all the same; [`Held::apply`]
    /// then says why.
    pub fn new(snapshot: Snapshot) -> Self {
        let digest = digest(&snapshot);
        Self::known(snapshot, digest)
    }

    /// Whether its content is what `hash` names (a digest, or the `sha256:` of the whole
    /// JSON older builds wrote).
    pub fn matches(&self, hash: &str) -> bool {
        if hash.starts_with(DIGEST_PREFIX) {
            self.digest.to_text() == hash
        } else {
            self.snapshot.content_hash() == hash
        }
    }

    /// The Snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Its digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Gives the Snapshot up.
    pub fn into_snapshot(self) -> Snapshot {
        self.snapshot
    }

    /// Holds `snapshot` whose digest is already known (worked out by [`Held::advance`] on
    /// the version before), without hashing every entity again.
    pub fn known(snapshot: Snapshot, digest: Digest) -> Self {
        let index = || -> Result<_, DeltaError> {
            route_names(&snapshot.routes)?;
            Ok((
                positions(&snapshot.services)?,
                positions(&snapshot.security.tiers)?,
                positions(&snapshot.apps)?,
            ))
        };
        let (unfit, (services, tiers, apps)) = match index() {
            Ok(i) => (None, i),
            Err(e) => (Some(e), Default::default()),
        };
        Self {
            digest,
            unfit,
            services,
            tiers,
            apps,
            snapshot,
        }
    }

    /// Applies `changes` and checks the result against `want` (a digest's text). On an
    /// error what is held is no longer trustworthy: drop it and fetch the whole snapshot.
    pub fn apply(&mut self, changes: Changes, want: &str) -> Result<(), DeltaError> {
        self.advance(changes)?;
        let got = self.digest.to_text();
        if got != want {
            return Err(DeltaError::Mismatch {
                got,
                want: want.to_owned(),
            });
        }
        Ok(())
    }

    /// Applies `changes`, moving the digest by the entities they touch: what the control
    /// plane does to learn a new version's digest from the one before. On an error what
    /// is held is no longer trustworthy.
    pub fn advance(&mut self, changes: Changes) -> Result<(), DeltaError> {
        if let Some(e) = &self.unfit {
            return Err(e.clone());
        }
        let Changes {
            listeners,
            services,
            routes,
            api_keys,
            consumers,
            tiers,
            apps,
            singles,
            removed,
        } = changes;
        let s = &mut self.snapshot;
        let d = &mut self.digest;
        // Listeners are few: their order is kept, new ones go last.
        for name in &removed.listeners {
            if let Some(i) = s.listeners.iter().position(|l| l.effective_name() == *name) {
                let gone = s.listeners.remove(i);
                d.remove(Kind::Listener, name, &gone);
            }
        }
        for l in listeners {
            let name = l.effective_name();
            d.add(Kind::Listener, &name, &l);
            match s.listeners.iter().position(|x| x.effective_name() == name) {
                Some(i) => {
                    d.remove(Kind::Listener, &name, &s.listeners[i]);
                    s.listeners[i] = l;
                }
                None => s.listeners.push(l),
            }
        }
        apply_kind(
            &mut s.services,
            &mut self.services,
            d,
            services,
            &removed.services,
        );
        // Keys and consumers are held packed (a million of each): only the shards a
        // change touches are copied.
        let mut api_keys = api_keys;
        for k in &mut api_keys {
            // Held (and hashed) as the control plane holds it: in lower case.
            k.hash.make_ascii_lowercase();
            d.add(Kind::ApiKey, &k.key(), k);
        }
        s.security
            .api_keys
            .update(api_keys, &removed.api_keys, |gone| {
                d.remove(Kind::ApiKey, &gone.key(), gone)
            })
            .map_err(DeltaError::Packed)?;
        for c in &consumers {
            d.add(Kind::Consumer, &c.key(), c);
        }
        s.security
            .consumers
            .update(consumers, &removed.consumers, |gone| {
                d.remove(Kind::Consumer, &gone.key(), gone)
            })
            .map_err(DeltaError::Packed)?;
        apply_kind(
            &mut s.security.tiers,
            &mut self.tiers,
            d,
            tiers,
            &removed.tiers,
        );
        apply_kind(&mut s.apps, &mut self.apps, d, apps, &removed.apps);
        apply_routes(&mut s.routes, d, routes, &removed.routes)?;
        if let Some(new) = singles {
            d.remove(Kind::Singles, "", &Singles::of(s));
            d.add(Kind::Singles, "", &new);
            new.set(s);
        }
        Ok(())
    }
}

/// Removes and places routes. Every route names the one before it, so the new order is
/// the chain those links make: the routes the delta does not touch keep the link they
/// had, the ones it places take the link it gives. The digest terms of every route touched
/// are taken out with the link it had and put back with the new one.
fn apply_routes(
    routes: &mut Vec<Route>,
    d: &mut Digest,
    put: Vec<PlacedRoute>,
    remove: &[String],
) -> Result<(), DeltaError> {
    if put.is_empty() && remove.is_empty() {
        return Ok(());
    }
    if remove.is_empty() && replace_in_place(routes, d, &put) {
        return Ok(());
    }
    let mut touched: std::collections::HashSet<&str> = remove.iter().map(String::as_str).collect();
    for (i, p) in put.iter().enumerate() {
        touched.insert(p.route.name.as_deref().ok_or(DeltaError::UnnamedRoute(i))?);
    }
    // Where each route goes: untouched ones keep the link they had, placed ones take the
    // link the delta gives; the new order is the chain the links make. Worked out on
    // names and positions alone, then the routes are moved once.
    #[derive(Clone, Copy)]
    enum From {
        Old(usize),
        Put(usize),
    }
    let order: Vec<From> = {
        fn name(r: &Route) -> &str {
            r.name.as_deref().unwrap_or_default()
        }
        let mut next: HashMap<Option<&str>, From> =
            HashMap::with_capacity(routes.len() + put.len());
        let mut clash = None;
        for (i, r) in routes.iter().enumerate() {
            let after = i.checked_sub(1).map(|p| name(&routes[p]));
            if touched.contains(name(r)) {
                d.remove(Kind::Route, name(r), &PlacedRef { after, route: r });
            } else if next.insert(after, From::Old(i)).is_some() {
                clash = Some(name(r));
            }
        }
        for (j, p) in put.iter().enumerate() {
            d.add(
                Kind::Route,
                name(&p.route),
                &PlacedRef {
                    after: p.after.as_deref(),
                    route: &p.route,
                },
            );
            if next.insert(p.after.as_deref(), From::Put(j)).is_some() {
                clash = Some(name(&p.route));
            }
        }
        if let Some(n) = clash {
            return Err(DeltaError::Misplaced(n.to_owned()));
        }
        let mut order = Vec::with_capacity(next.len());
        let mut at: Option<&str> = None;
        while let Some(f) = next.remove(&at) {
            at = Some(match f {
                From::Old(i) => name(&routes[i]),
                From::Put(j) => name(&put[j].route),
            });
            order.push(f);
        }
        if let Some((after, f)) = next.into_iter().next() {
            let route = match f {
                From::Old(i) => name(&routes[i]),
                From::Put(j) => name(&put[j].route),
            };
            return Err(DeltaError::NoRouteBefore {
                route: route.to_owned(),
                after: after.unwrap_or_default().to_owned(),
            });
        }
        order
    };
    let mut old = std::mem::take(routes);
    let mut put = put;
    routes.reserve(order.len());
    for f in order {
        routes.push(match f {
            From::Old(i) => std::mem::take(&mut old[i]),
            From::Put(j) => std::mem::take(&mut put[j].route),
        });
    }
    Ok(())
}

/// The common change, routes edited where they stand: each placed route exists and still
/// follows the route the delta names, so it is replaced in place (no route moves, no
/// other link changes). Answers false, touching nothing, when that is not the case.
fn replace_in_place(routes: &mut [Route], d: &mut Digest, put: &[PlacedRoute]) -> bool {
    let mut at = Vec::with_capacity(put.len());
    for p in put {
        let Some(name) = p.route.name.as_deref() else {
            return false;
        };
        let Some(i) = routes.iter().position(|r| r.name.as_deref() == Some(name)) else {
            return false;
        };
        let before = i.checked_sub(1).and_then(|b| routes[b].name.as_deref());
        if before != p.after.as_deref() {
            return false;
        }
        at.push(i);
    }
    for (p, i) in put.iter().zip(at) {
        let name = p.route.name.as_deref().unwrap_or_default();
        let after = p.after.as_deref();
        d.remove(
            Kind::Route,
            name,
            &PlacedRef {
                after,
                route: &routes[i],
            },
        );
        d.add(
            Kind::Route,
            name,
            &PlacedRef {
                after,
                route: &p.route,
            },
        );
        routes[i] = p.route.clone();
    }
    true
}
