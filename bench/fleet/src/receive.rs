//! What one simulated node holds, and the one place where an answer of the control plane is
//! decoded and verified as a real node does (`portico_proxy::node::apply` and
//! `apply_deltas` without the runtime build): a whole envelope is parsed, its content hash
//! checked and validated; a chain of deltas is applied step by step to what is held, the
//! digest checked after each. Nothing else in the tool looks inside a body.

use portico_model::delta::Held as Content;
use portico_model::{DELTA_CONTENT_TYPE, SyncDeltas, SyncEnvelope};

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
    held: Option<(Held, String, Content)>,
}

impl Replica {
    /// What the node serves now.
    pub fn held(&self) -> Option<&Held> {
        self.held.as_ref().map(|(h, _, _)| h)
    }

    /// The query parameters after `wait=` that say what the node holds (and that it takes
    /// deltas to it).
    pub fn query(&self) -> String {
        match self.held() {
            Some(h) => format!("&after={}&deltas=true", h.version),
            None => String::new(),
        }
    }

    /// Decodes and verifies an answer of `GET /api/v1/sync/snapshot` (already inflated) and
    /// makes it what the node holds. A bad envelope leaves the node with what it had; deltas
    /// that do not apply leave it with nothing (its next poll fetches the whole snapshot).
    pub fn receive(&mut self, content_type: Option<&str>, body: &[u8]) -> Result<Held, Error> {
        match content_type {
            Some(ENVELOPE) | None => self.whole(body),
            Some(DELTA_CONTENT_TYPE) => {
                let taken = self.held.take();
                let out = Self::deltas(taken, body)?;
                let held = out.0.clone();
                self.held = Some(out);
                Ok(held)
            }
            Some(other) => Err(Error::Verify(format!(
                "an answer of type `{other}`: neither `{ENVELOPE}` nor `{DELTA_CONTENT_TYPE}`"
            ))),
        }
    }

    fn whole(&mut self, body: &[u8]) -> Result<Held, Error> {
        let env: SyncEnvelope = serde_json::from_slice(body)
            .map_err(|e| Error::Verify(format!("the snapshot is unreadable: {e}")))?;
        let content = Content::new(env.snapshot);
        if !content.matches(&env.hash) {
            return Err(Error::Verify(format!(
                "snapshot {} of gateway `{}` does not match its hash {}",
                env.version, env.gateway, env.hash
            )));
        }
        if let Err(e) = content.snapshot().validate() {
            return Err(Error::Verify(format!(
                "snapshot {} of gateway `{}` is invalid: {e}",
                env.version, env.gateway
            )));
        }
        let held = Held {
            version: env.version,
            hash: env.hash,
        };
        self.held = Some((held.clone(), env.gateway, content));
        Ok(held)
    }

    fn deltas(
        taken: Option<(Held, String, Content)>,
        body: &[u8],
    ) -> Result<(Held, String, Content), Error> {
        let chain: SyncDeltas = serde_json::from_slice(body)
            .map_err(|e| Error::Verify(format!("the deltas are unreadable: {e}")))?;
        let (mut held, gateway, mut content) = taken
            .ok_or_else(|| Error::Verify("deltas came to a node that holds nothing".into()))?;
        if chain.gateway != gateway {
            return Err(Error::Verify(format!(
                "deltas for gateway `{}` came to a node of `{gateway}`",
                chain.gateway
            )));
        }
        for step in chain.steps {
            if step.from != held.version {
                return Err(Error::Verify(format!(
                    "a delta from version {} came to a node at version {}",
                    step.from, held.version
                )));
            }
            content
                .apply(step.changes, &step.hash)
                .map_err(|e| Error::Verify(format!("version {}: {e}", step.version)))?;
            held = Held {
                version: step.version,
                hash: step.hash,
            };
        }
        Ok((held, gateway, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use portico_model::Snapshot;

    fn envelope(version: u64) -> SyncEnvelope {
        let snapshot = Snapshot::default();
        SyncEnvelope {
            gateway: "g".into(),
            version,
            hash: snapshot.digest(),
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
        assert_eq!(r.query(), "&after=7&deltas=true");
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
