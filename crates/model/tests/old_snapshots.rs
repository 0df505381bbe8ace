//! Snapshots written by earlier builds keep loading, and keep their content hash: a node's
//! disk cache and a control plane's stored snapshots outlive an upgrade.

#![allow(clippy::unwrap_used)]

use portico_model::{Format, Snapshot};

/// Compiled by the build before the developer portal's origin reached snapshots (commit
/// 078b058): an API with an API key and its own CORS policy, and an open API.
const BEFORE_PORTAL: &str = include_str!("fixtures/snapshot-before-portal.json");
/// Its content hash, as that build computed it.
const BEFORE_PORTAL_HASH: &str =
    "sha256:bee2d147640a7a83d66e6354d242ffdd10824c9fb967def407f93bbaaf5d5e2b";

#[test]
fn a_snapshot_from_before_the_portal_field_loads_with_its_hash() {
    let s = Snapshot::parse(BEFORE_PORTAL, Format::Json).unwrap();
    assert_eq!(s.portal, None);
    assert!(s.routes.iter().all(|r| !r.try_out));
    assert_eq!(s.content_hash(), BEFORE_PORTAL_HASH);
}

#[test]
fn the_portal_origin_is_part_of_the_content_and_is_validated() {
    let mut s = Snapshot::parse(BEFORE_PORTAL, Format::Json).unwrap();
    s.portal = Some(portico_model::Portal {
        origin: "https://portal.example.com".into(),
    });
    let with_portal = s.content_hash();
    assert_ne!(with_portal, BEFORE_PORTAL_HASH);
    let text = serde_json::to_string(&s).unwrap();
    let back = Snapshot::parse(&text, Format::Json).unwrap();
    assert_eq!(back.content_hash(), with_portal);
    s.portal = Some(portico_model::Portal {
        origin: "https://other.example.com".into(),
    });
    assert_ne!(s.content_hash(), with_portal);
    s.portal = Some(portico_model::Portal {
        origin: "portal.example.com/try".into(),
    });
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("portal.origin"), "{e}");
}
