//! Gateways' last compiled snapshots, held in memory by the control-plane node that
//! compiled them, so that the next change to a gateway is compiled from them: the
//! consumers' keys a write did not touch are taken as they are (a million keys are not
//! read and packed again for one), the new digest is the old one moved by what changed,
//! and the delta nodes receive is worked out without reading the stored snapshot back.
//!
//! An entry is used only while the database still says it is the gateway's snapshot (the
//! same version and digest): a write by another control-plane node, an import or a
//! rolled-back write leaves it unused and the gateway is compiled whole, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portico_model::delta::{Digest, Held};
use portico_model::{Snapshot, SyncEnvelope};

/// How much the held snapshots may weigh together (see [`weight`]): about 300 MB, a
/// gateway with a million keys and a million consumers and a few hundred small ones.
const BUDGET: usize = 4_000_000;

/// One gateway's last compiled snapshot.
#[derive(Debug)]
pub(crate) struct LastCompiled {
    /// Its version.
    pub version: i64,
    /// Its digest, as stored.
    pub hash: String,
    /// The gateway's name its stored body carries.
    pub gateway: String,
    /// The snapshot and its digest.
    pub held: Held,
}

impl LastCompiled {
    /// What `envelope`, just stored, holds; `digest` is its snapshot's.
    pub(crate) fn of(envelope: SyncEnvelope, digest: Digest) -> Arc<Self> {
        Arc::new(Self {
            version: envelope.version as i64,
            hash: envelope.hash,
            gateway: envelope.gateway,
            held: Held::known(envelope.snapshot, digest),
        })
    }
}

#[derive(Default)]
struct Inner {
    /// By gateway row id: the entry, when it was last used, its weight.
    by_gateway: HashMap<i64, (Arc<LastCompiled>, u64, usize)>,
    weight: usize,
    tick: u64,
    /// How many compiles started from a held snapshot.
    hits: u64,
}

/// The held snapshots of this control-plane node.
#[derive(Default)]
pub(crate) struct HeldSnapshots {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for HeldSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSnapshots").finish_non_exhaustive()
    }
}

/// What a snapshot weighs: a key or a consumer one, a route, service, listener or app
/// (a kilobyte or more each) sixteen.
fn weight(s: &Snapshot) -> usize {
    1 + s.security.api_keys.len()
        + s.security.consumers.len()
        + 16 * (s.routes.len() + s.services.len() + s.listeners.len() + s.apps.len())
}

impl HeldSnapshots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gateway `gid`'s held snapshot when it is the stored one (`version`, `hash`).
    pub(crate) fn get(
        &self,
        gid: i64,
        version: Option<i64>,
        hash: Option<&str>,
    ) -> Option<Arc<LastCompiled>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (entry, used, _) = inner.by_gateway.get_mut(&gid)?;
        if Some(entry.version) != version || Some(entry.hash.as_str()) != hash {
            return None;
        }
        *used = tick;
        let entry = entry.clone();
        inner.hits += 1;
        Some(entry)
    }

    /// How many compiles started from a held snapshot.
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.lock().hits
    }

    /// Holds gateway `gid`'s new snapshot (after its write committed), forgetting the
    /// least recently used ones past the budget.
    pub(crate) fn put(&self, gid: i64, entry: Arc<LastCompiled>) {
        let w = weight(entry.held.snapshot());
        let mut inner = self.lock();
        if let Some((_, _, old)) = inner.by_gateway.remove(&gid) {
            inner.weight -= old;
        }
        if w > BUDGET {
            return;
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.by_gateway.insert(gid, (entry, tick, w));
        inner.weight += w;
        while inner.weight > BUDGET {
            let Some((&oldest, _)) = inner
                .by_gateway
                .iter()
                .min_by_key(|(_, (_, used, _))| *used)
            else {
                break;
            };
            if let Some((_, _, w)) = inner.by_gateway.remove(&oldest) {
                inner.weight -= w;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use portico_model::delta::{Held, digest};
    use portico_model::{ApiSpec, ConsumerSpec, KeyType, SyncEnvelope, Tier};

    use super::super::{CredentialKind, NewCredential, Store};

    fn or_panic<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The gateway's stored snapshot, checked: its hash is the whole snapshot's digest.
    async fn stored(store: &Store, gid: i64) -> (u64, portico_model::Snapshot) {
        let rec = or_panic(store.snapshot(gid).await).unwrap_or_else(|| panic!("no snapshot"));
        let env: SyncEnvelope = or_panic(serde_json::from_str(&rec.body));
        assert_eq!(rec.hash, digest(&env.snapshot).to_text(), "stored hash");
        assert_eq!(env.hash, rec.hash);
        (rec.version, env.snapshot)
    }

    fn key(n: u32) -> NewCredential {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(format!("secret-{n}"));
        NewCredential {
            id: format!("key-{n}"),
            kind: CredentialKind::ApiKey,
            key_type: if n.is_multiple_of(2) {
                KeyType::Production
            } else {
                KeyType::Sandbox
            },
            secret_hash: hash.iter().map(|b| format!("{b:02x}")).collect(),
            hint: "pk_".into(),
            expires_at: None,
        }
    }

    fn consumer(name: &str, tier: Option<&str>, blocked: bool) -> ConsumerSpec {
        or_panic(serde_json::from_value(serde_json::json!({
            "name": name, "tier": tier, "blocked": blocked
        })))
    }

    /// Every write that names the consumers it touched compiles from the held snapshot;
    /// what it stores (snapshot, digest, delta) is what compiling everything from the
    /// database gives, and a write by another control-plane node (a second store on the
    /// same database) is never overwritten with what this one held.
    #[tokio::test]
    async fn a_gateway_compiled_from_its_held_snapshot_is_the_one_compiled_whole() {
        let dir = or_panic(tempfile::tempdir());
        let store = or_panic(Store::open(dir.path()).await);
        let other = or_panic(Store::open(dir.path()).await);
        or_panic(store.ensure_default_gateway(18080).await);
        let gid = or_panic(store.gateway_id("default").await);
        let gw = vec!["default".to_owned()];
        for (name, limit) in [("gold", 100), ("silver", 10)] {
            let t: Tier = or_panic(serde_json::from_value(
                serde_json::json!({"name": name, "limit": limit, "per": "minute"}),
            ));
            or_panic(store.create(&t).await);
        }
        for (name, ctx) in [("pets", "/pets"), ("toys", "/toys")] {
            let api: ApiSpec = or_panic(serde_json::from_value(serde_json::json!({
                "name": name, "version": "v1", "context": ctx,
                "production_endpoints": ["http://127.0.0.1:9"], "auth": "api_key"
            })));
            or_panic(store.create_api(&api).await);
            or_panic(store.create_revision(&format!("{name}-v1"), "one").await);
            or_panic(store.deploy(&format!("{name}-v1"), 1, &gw).await);
        }
        for (i, name) in ["acme", "Bolt", "crane"].iter().enumerate() {
            let tier = (i == 0).then_some("gold");
            or_panic(store.create(&consumer(name, tier, false)).await);
            or_panic(store.subscribe(name, "pets-v1", None).await);
            or_panic(store.add_credential(name, &key(i as u32)).await);
        }
        let mut at = Steps::new(&store, gid).await;
        assert_eq!(at.before.security.api_keys.len(), 3);
        at.watch(&store);

        // After each step: the write compiled from the held snapshot (its hits moved), one
        // new version whose stored delta turns the version before into it, and compiling
        // everything again from the database finds nothing to change.
        or_panic(store.add_credential("bolt", &key(10)).await);
        at.check(&store, true, "a key added").await;
        assert_eq!(at.before.security.api_keys.len(), 4);
        or_panic(store.revoke_credential("ACME", "key-0").await);
        at.check(&store, true, "a key revoked").await;
        or_panic(store.replace_credential("crane", "key-2", &key(12)).await);
        at.check(&store, true, "a key replaced").await;
        or_panic(store.subscribe("crane", "toys-v1", Some("silver")).await);
        at.check(&store, true, "a subscription tier").await;
        assert!(at.before.security.consumers.tiers("crane").is_some());
        assert!(at.before.security.tiers.iter().any(|t| t.name == "silver"));
        or_panic(store.unsubscribe("crane", "toys-v1").await);
        at.check(&store, true, "a subscription ended").await;
        assert!(!at.before.security.tiers.iter().any(|t| t.name == "silver"));
        let bolt = or_panic(store.one::<ConsumerSpec>("bolt").await);
        let blocked = consumer("Bolt", None, true);
        or_panic(store.update("BOLT", &blocked, bolt.meta.version).await);
        at.check(&store, true, "a consumer blocked").await;
        assert!(at.before.security.consumers.apis("Bolt").is_none());
        assert_eq!(at.keys_of("Bolt"), 0);
        or_panic(store.create_revision("pets-v1", "two").await);
        or_panic(store.deploy("pets-v1", 2, &gw).await);
        // The same routes: the revision changes nothing served.
        assert_eq!(stored(&store, gid).await.0, at.version);
        // Another control-plane node's write (it held nothing: compiled whole) ...
        at.watch(&other);
        or_panic(other.add_credential("acme", &key(20)).await);
        at.check(&other, false, "another node").await;
        // ... leaves this node's held snapshot stale: compiled whole, the key kept.
        at.watch(&store);
        let deprecated = portico_model::Lifecycle::Deprecated;
        or_panic(store.set_lifecycle("toys-v1", deprecated, None).await);
        at.check(&store, false, "a lifecycle").await;
        assert_eq!(at.keys_of("acme"), 1);
        or_panic(store.delete::<ConsumerSpec>("ACME").await);
        at.check(&store, true, "a consumer deleted").await;
        assert!(at.before.security.consumers.apis("acme").is_none());
        assert_eq!(at.keys_of("acme"), 0);
    }

    /// The version a gateway was at, and each store's held-snapshot hits then.
    struct Steps {
        gid: i64,
        version: u64,
        before: portico_model::Snapshot,
        hits: std::collections::HashMap<*const Store, u64>,
    }

    impl Steps {
        async fn new(store: &Store, gid: i64) -> Self {
            let (version, before) = stored(store, gid).await;
            Self {
                gid,
                version,
                before,
                hits: std::collections::HashMap::new(),
            }
        }

        /// Counts `store`'s held-snapshot hits from now.
        fn watch(&mut self, store: &Store) {
            self.hits
                .insert(std::ptr::from_ref(store), store.held.hits());
        }

        /// How many keys consumer `name` has in the last version.
        fn keys_of(&self, name: &str) -> usize {
            let name = name.as_bytes();
            self.before
                .security
                .api_keys
                .hashes_where(|c| c == name)
                .len()
        }

        /// Checks the write `store` just made (see the test above).
        async fn check(&mut self, store: &Store, from_held: bool, what: &str) {
            let was = self.hits.get(&std::ptr::from_ref(store)).copied();
            let was = was.unwrap_or_else(|| panic!("{what}: watch the store first"));
            let hits = store.held.hits();
            assert_eq!(
                hits,
                was + u64::from(from_held),
                "{what}: from the held snapshot"
            );
            let (v, now) = stored(store, self.gid).await;
            assert_eq!(v, self.version + 1, "{what}: one new version");
            let chain = or_panic(
                store
                    .delta_chain(self.gid, "default", self.version, v)
                    .await,
            )
            .unwrap_or_else(|| panic!("{what}: no delta stored"));
            let chain: portico_model::SyncDeltas = or_panic(serde_json::from_str(&chain));
            let mut held = Held::new(self.before.clone());
            for step in chain.steps {
                or_panic(held.apply(step.changes, &step.hash));
            }
            assert_eq!(held.digest(), digest(&now), "{what}: the delta");
            assert!(or_panic(store.recompile_all().await).is_empty());
            assert_eq!(
                stored(store, self.gid).await.0,
                v,
                "{what}: compiled whole, the same"
            );
            self.hits
                .insert(std::ptr::from_ref(store), store.held.hits());
            (self.version, self.before) = (v, now);
        }
    }
}
