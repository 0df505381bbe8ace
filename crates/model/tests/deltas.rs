//! Deltas: applying what changed between two snapshots to the first gives the second, with
//! the digest the second has; applying them to anything else is caught by the digest.

#![allow(clippy::unwrap_used)]

use portico_model::delta::{self, DeltaError, Held};
use portico_model::packed::ApiKeys;
use portico_model::{
    ApiKeyGrant, AppBundle, AppFile, ConsumerLimits, Format, JwtKey, JwtSettings, KeyType, Portal,
    Route, Snapshot, Tier,
};
use proptest::prelude::*;

const BASE: &str = include_str!("fixtures/snapshot-before-portal.json");

fn base() -> Snapshot {
    Snapshot::parse(BASE, Format::Json).unwrap()
}

fn key(n: u8, consumer: &str) -> ApiKeyGrant {
    ApiKeyGrant {
        hash: format!("{n:02x}").repeat(32),
        consumer: consumer.into(),
        key_type: KeyType::Production,
        apis: vec!["pets-v1".into()],
        expires_at: None,
    }
}

fn fixed(name: &str, body: &str) -> Route {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "match": {"path": {"exact": format!("/{name}")}},
        "fixed_response": {"status": 200, "body": body},
    }))
    .unwrap()
}

/// A snapshot with something of every kind.
fn full() -> Snapshot {
    let mut s = base();
    s.security.api_keys = (1..=5).map(|n| key(n, &format!("c{n}"))).collect();
    s.security.tiers = vec![Tier {
        name: "gold".into(),
        limit: 10,
        per: Default::default(),
        burst: None,
    }];
    s.security.consumers = vec![ConsumerLimits {
        name: "c1".into(),
        tier: Some("gold".into()),
        subscriptions: Default::default(),
        apis: vec!["pets-v1".into()],
    }]
    .into();
    s.security.jwt = Some(JwtSettings {
        issuer: "i".into(),
        audience: "a".into(),
        keys: vec![JwtKey {
            kid: "k1".into(),
            x: "x".into(),
            y: "y".into(),
        }],
    });
    s.portal = Some(Portal {
        origin: "https://portal.example.com".into(),
    });
    for n in ["a", "b", "c"] {
        s.routes.push(fixed(n, n));
    }
    s.apps = (1..=2).map(app).collect();
    s
}

/// Version `version` of app `site`, one file.
fn app(version: u32) -> AppBundle {
    AppBundle {
        slug: "site".into(),
        version,
        files: [(
            "index.html".to_owned(),
            AppFile {
                hash: format!("{version:02x}").repeat(32),
                size: 10,
            },
        )]
        .into(),
        spa: false,
        not_found: None,
        cache_control: Vec::new(),
        created_at: 1,
    }
}

/// Applies diff(old, new) to old and checks the result is new, as content and digest.
fn round_trip(old: &Snapshot, new: &Snapshot) -> usize {
    let changes = delta::diff(old, new).unwrap();
    let n = changes.len();
    // It travels as JSON.
    let wire = serde_json::to_string(&changes).unwrap();
    let changes = serde_json::from_str(&wire).unwrap();
    let mut held = Held::new(old.clone());
    held.apply(changes, &new.digest()).unwrap();
    assert_eq!(held.digest().to_text(), new.digest());
    assert_eq!(held.snapshot().routes, new.routes, "route order");
    assert_eq!(Held::new(held.snapshot().clone()).digest(), held.digest());
    n
}

#[test]
fn the_digest_moves_with_content_and_not_with_the_order_of_unordered_lists() {
    let a = full();
    let mut b = full();
    let mut keys: Vec<_> = b.security.api_keys.iter().collect();
    keys.reverse();
    b.security.api_keys = ApiKeys::try_from_iter(keys).unwrap();
    b.services.reverse();
    assert_eq!(a.digest(), b.digest());
    assert!(a.hash_matches(&a.digest()));
    assert!(a.hash_matches(&a.content_hash()));
    let mut c = full();
    c.routes.swap(0, 1);
    assert_ne!(a.digest(), c.digest(), "route order is content");
    let mut d = full();
    let mut keys: Vec<_> = d.security.api_keys.iter().collect();
    keys[0].apis.push("other".into());
    d.security.api_keys = keys.into();
    assert_ne!(a.digest(), d.digest());
    let mut e = full();
    e.apps[1].spa = true;
    assert_ne!(a.digest(), e.digest());
}

#[test]
fn one_changed_entity_travels_alone() {
    let old = full();
    let mut new = full();
    new.security
        .api_keys
        .update(vec![key(9, "c9")], &[], |_| {})
        .unwrap();
    assert_eq!(round_trip(&old, &new), 1);
    let mut new = full();
    let b = new
        .routes
        .iter()
        .position(|r| r.name.as_deref() == Some("b"))
        .unwrap();
    new.routes[b] = fixed("b", "changed");
    assert_eq!(round_trip(&old, &new), 1);
    // Inserting a route moves the one after it too (its predecessor changed).
    let mut new = full();
    new.routes.insert(3, fixed("a2", "x"));
    assert_eq!(round_trip(&old, &new), 2);
    // Removing one re-places its follower.
    let mut new = full();
    let i = new
        .routes
        .iter()
        .position(|r| r.name.as_deref() == Some("b"))
        .unwrap();
    new.routes.remove(i);
    assert_eq!(round_trip(&old, &new), 2);
}

#[test]
fn every_kind_of_entity_can_be_removed() {
    let old = full();
    let mut new = full();
    new.listeners.clear();
    new.routes.clear();
    new.services.clear();
    new.security = Default::default();
    new.apps.clear();
    new.portal = None;
    round_trip(&old, &new);
    // And put back.
    round_trip(&new, &old);
    // One kind at a time.
    for cut in 0..8 {
        let mut new = full();
        match cut {
            0 => {
                let k = new.security.api_keys.iter().nth(2).unwrap().hash;
                new.security.api_keys.update(vec![], &[k], |_| {}).unwrap();
            }
            1 => new.security.consumers = Default::default(),
            2 => drop(new.security.tiers.pop()),
            3 => drop(new.services.pop()),
            4 => new.security.jwt = None,
            5 => new.portal = None,
            6 => drop(new.apps.remove(0)),
            _ => drop(new.listeners.pop()),
        }
        assert!(round_trip(&old, &new) >= 1, "cut {cut}");
    }
}

#[test]
fn a_delta_applied_to_other_content_is_caught() {
    let old = full();
    let mut new = full();
    let a = new
        .routes
        .iter()
        .position(|r| r.name.as_deref() == Some("a"))
        .unwrap();
    new.routes[a] = fixed("a", "changed");
    let changes = delta::diff(&old, &new).unwrap();
    // The node's copy differs from what the control plane diffed against.
    let mut other = full();
    let k = other.security.api_keys.iter().next().unwrap().hash;
    other
        .security
        .api_keys
        .update(vec![], &[k], |_| {})
        .unwrap();
    let mut held = Held::new(other);
    let e = held.apply(changes, &new.digest()).unwrap_err();
    assert!(matches!(e, DeltaError::Mismatch { .. }), "{e}");
    // A route placed after one that is not there.
    let mut held = Held::new(old.clone());
    let mut changes = delta::diff(&old, &new).unwrap();
    changes.routes[0].after = Some("nowhere".into());
    assert!(matches!(
        held.apply(changes, &new.digest()),
        Err(DeltaError::NoRouteBefore { .. })
    ));
}

#[test]
fn unnamed_routes_travel_whole() {
    let old = base();
    let mut new = base();
    new.routes[0].name = None;
    assert!(matches!(
        delta::diff(&old, &new),
        Err(DeltaError::UnnamedRoute(0))
    ));
    // Held all the same (a node serves it), but deltas do not apply to it.
    let mut held = Held::new(new.clone());
    assert!(held.matches(&new.digest()));
    assert!(matches!(
        held.apply(Default::default(), &new.digest()),
        Err(DeltaError::UnnamedRoute(0))
    ));
}

proptest! {
    /// Any two route lists (subsets of one name pool, in any order, some bodies changed).
    #[test]
    fn any_reordering_of_routes_round_trips(
        old in proptest::sample::subsequence((0..12).collect::<Vec<u8>>(), 0..12).prop_shuffle(),
        new in proptest::sample::subsequence((0..12).collect::<Vec<u8>>(), 0..12).prop_shuffle(),
        changed in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let mut a = base();
        a.routes = old.iter().map(|n| fixed(&format!("r{n}"), "x")).collect();
        let mut b = base();
        b.routes = new
            .iter()
            .map(|n| fixed(&format!("r{n}"), if changed[*n as usize] { "y" } else { "x" }))
            .collect();
        round_trip(&a, &b);
    }
}

/// A snapshot with a bad key hash, or one key twice, is refused with what and where.
#[test]
fn bad_or_repeated_keys_in_a_snapshot_are_refused_with_what_and_where() {
    use portico_model::{Format, Snapshot, snapshot::parse};
    let good = "ab".repeat(32);
    let key = |hash: &str| {
        format!(r#"{{"hash":"{hash}","consumer":"acme","key_type":"production","apis":["a"]}}"#)
    };
    let snapshot = |keys: &str| format!(r#"{{"schema":1,"security":{{"api_keys":[{keys}]}}}}"#);
    let ok: Snapshot = parse(&snapshot(&key(&good)), Format::Json).unwrap();
    assert_eq!(ok.security.api_keys.len(), 1);
    let e = parse::<Snapshot>(&snapshot(&key("xyz")), Format::Json)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("security.api_keys") && e.contains("64 hex digits"),
        "{e}"
    );
    let twice = format!("{},{}", key(&good), key(&good));
    let e = parse::<Snapshot>(&snapshot(&twice), Format::Json)
        .unwrap_err()
        .to_string();
    assert!(e.contains("listed twice") && e.contains(&good), "{e}");
}
