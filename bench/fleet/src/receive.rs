//! What one simulated node holds, and the one place where an answer of the control plane is
//! decoded and verified as a real node does (`portico_proxy::node::apply` without the
//! runtime build: parse, content hash, validation).
//!
//! When the protocol gains deltas, this file is the one to change: [`Replica::query`] asks
//! for them (`&deltas=1`), and [`Replica::receive`] applies a delta chain
//! (`application/vnd.portico.delta+json`) to [`Replica::held`] with `portico_model`'s
//! delta API and checks the resulting hash, keeping the full-envelope branch for first
//! syncs and fallbacks. Nothing else in the tool looks inside a body.

use portico_model::{Snapshot, SyncEnvelope};

use crate::Error;

/// The content type of a whole snapshot envelope.
pub const ENVELOPE: &str = "application/json";

/// What a node serves after an apply: the version and hash it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Gateway snapshot version.
    pub version: u64,
    /// Content hash of the snapshot, as the control plane computes it.
    pub hash: String,
}

/// The state of one simulated node: the snapshot it serves (nothing before its first sync).
#[derive(Debug, Default)]
pub struct Replica {
    held: Option<(Held, Snapshot)>,
}

impl Replica {
    /// What the node serves now.
    pub fn held(&self) -> Option<&Held> {
        self.held.as_ref().map(|(h, _)| h)
    }

    /// The query parameters after `wait=` that say what the node holds.
    pub fn query(&self) -> String {
        match self.held() {
            Some(h) => format!("&after={}", h.version),
            None => String::new(),
        }
    }

    /// Decodes and verifies an answer of `GET /api/v1/sync/snapshot` (already inflated) and
    /// makes it what the node holds; on any failure the node keeps what it had.
    pub fn receive(&mut self, content_type: Option<&str>, body: &[u8]) -> Result<Held, Error> {
        match content_type {
            Some(ENVELOPE) | None => {}
            Some(other) => {
                return Err(Error::Verify(format!(
                    "an answer of type `{other}`: this tool reads `{ENVELOPE}` envelopes only"
                )));
            }
        }
        let env: SyncEnvelope = serde_json::from_slice(body)
            .map_err(|e| Error::Verify(format!("the snapshot is unreadable: {e}")))?;
        if env.snapshot.content_hash() != env.hash {
            return Err(Error::Verify(format!(
                "snapshot {} of gateway `{}` does not match its hash {}",
                env.version, env.gateway, env.hash
            )));
        }
        if let Err(e) = env.snapshot.validate() {
            return Err(Error::Verify(format!(
                "snapshot {} of gateway `{}` is invalid: {e}",
                env.version, env.gateway
            )));
        }
        let held = Held {
            version: env.version,
            hash: env.hash,
        };
        self.held = Some((held.clone(), env.snapshot));
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(version: u64) -> SyncEnvelope {
        let snapshot = Snapshot::default();
        SyncEnvelope {
            gateway: "g".into(),
            version,
            hash: snapshot.content_hash(),
            snapshot,
        }
    }

    #[test]
    fn a_verified_envelope_is_held_and_asked_after() {
        let mut r = Replica::default();
        assert_eq!(r.query(), "");
        let body = serde_json::to_vec(&envelope(7)).unwrap();
        let held = r.receive(Some(ENVELOPE), &body).unwrap();
        assert_eq!(held.version, 7);
        assert_eq!(r.query(), "&after=7");
    }

    #[test]
    fn a_wrong_hash_or_an_unknown_type_is_refused_and_the_old_kept() {
        let mut r = Replica::default();
        r.receive(None, &serde_json::to_vec(&envelope(1)).unwrap())
            .unwrap();
        let mut bad = envelope(2);
        bad.hash = "sha256:00".into();
        let e = r.receive(None, &serde_json::to_vec(&bad).unwrap());
        assert!(matches!(e, Err(Error::Verify(m)) if m.contains("does not match its hash")));
        let e = r.receive(Some("text/plain"), b"{}");
        assert!(matches!(e, Err(Error::Verify(_))));
        assert_eq!(r.held().map(|h| h.version), Some(1));
    }
}
