//! Automatic certificates for a gateway run from a file: the same ACME client as the control
//! plane's, with its state in a directory of the node (account credentials, certificates and
//! their keys, in one owner-only file), and the challenges and certificates laid over the
//! file's Snapshot in this process. The hosts are `[node.acme] hosts`, else the exact names
//! routes match on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use portico_control::acme::Backend;
use portico_model::{
    AcmeChallenge, AcmeHostState, AcmeHostStatus, AcmeState, NodeAcme, Snapshot, TlsCertificate,
};
use portico_proxy::Gateway;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

const STATE_FILE: &str = "state.json";

/// What is kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Account credentials (JSON) per CA directory.
    #[serde(default)]
    accounts: BTreeMap<String, String>,
    /// Each host's certificate and state.
    #[serde(default)]
    hosts: BTreeMap<String, Host>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Host {
    state: AcmeHostState,
    #[serde(default)]
    cert_pem: Option<String>,
    #[serde(default)]
    key_pem: Option<String>,
    #[serde(default)]
    not_after: Option<i64>,
    next_attempt: i64,
    #[serde(default)]
    attempts: i64,
    #[serde(default)]
    last_error: Option<String>,
}

/// A standalone gateway's ACME backend.
pub struct LocalAcme {
    dir: PathBuf,
    explicit_hosts: Vec<String>,
    gateway: Arc<Gateway>,
    base: Mutex<Snapshot>,
    state: Mutex<State>,
    challenges: Mutex<Vec<AcmeChallenge>>,
    changed: Notify,
}

fn now() -> i64 {
    portico_control::store::now()
}

impl LocalAcme {
    /// Opens (or starts) the state directory and serves `base` with what it holds.
    pub async fn open(
        settings: &NodeAcme,
        gateway: Arc<Gateway>,
        base: Snapshot,
    ) -> anyhow::Result<Arc<Self>> {
        let dir = PathBuf::from(&settings.state_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let state = match std::fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("{}: unreadable: {e}", dir.join(STATE_FILE).display())
            })?,
            Err(_) => State::default(),
        };
        let me = Arc::new(Self {
            dir,
            explicit_hosts: settings
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            gateway,
            base: Mutex::new(base),
            state: Mutex::new(state),
            challenges: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        me.apply().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(me)
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves a new file Snapshot (a reload) with the certificates and challenges over it.
    pub async fn set_base(&self, base: Snapshot) -> Result<std::sync::Arc<str>, String> {
        let previous = std::mem::replace(&mut *Self::lock(&self.base), base);
        match self.apply().await {
            Ok(v) => {
                self.changed.notify_one();
                Ok(v)
            }
            Err(e) => {
                *Self::lock(&self.base) = previous;
                Err(e)
            }
        }
    }

    /// The file's Snapshot with issued certificates in its `acme` listeners (after the
    /// listener's own files, which win) and the open challenges.
    fn overlay(&self) -> Snapshot {
        let mut s = Self::lock(&self.base).clone();
        let state = Self::lock(&self.state);
        let issued: Vec<TlsCertificate> = state
            .hosts
            .iter()
            .filter(|(_, h)| h.not_after.is_some_and(|t| t > now()))
            .filter_map(|(host, h)| {
                Some(TlsCertificate {
                    hosts: vec![host.clone()],
                    cert_pem: Some(h.cert_pem.clone()?),
                    key_pem: Some(h.key_pem.clone()?),
                    ..Default::default()
                })
            })
            .collect();
        for l in &mut s.listeners {
            if let Some(tls) = &mut l.tls
                && tls.acme
            {
                tls.certificates.extend(issued.iter().cloned());
            }
        }
        s.acme = AcmeState {
            challenges: Self::lock(&self.challenges).clone(),
            hosts: state
                .hosts
                .iter()
                .map(|(host, h)| AcmeHostStatus {
                    host: host.clone(),
                    state: h.state,
                    not_after: h.not_after,
                    next_attempt: Some(h.next_attempt),
                    last_error: h.last_error.clone(),
                })
                .collect(),
        };
        s
    }

    async fn apply(&self) -> Result<std::sync::Arc<str>, String> {
        let snapshot = self.overlay();
        self.gateway
            .apply(&snapshot)
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes the state file (owner-only, replaced whole).
    fn save(&self) -> Result<(), String> {
        let bytes =
            serde_json::to_vec_pretty(&*Self::lock(&self.state)).map_err(|e| e.to_string())?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        portico_control::secrets::write_private(&tmp, &bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, self.dir.join(STATE_FILE)).map_err(|e| e.to_string())
    }

    /// The hosts that want certificates: the configured ones, else the exact names the
    /// routes match on; none unless a listener takes automatic certificates.
    fn wanted(&self) -> Vec<String> {
        let base = Self::lock(&self.base);
        if !base
            .listeners
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.acme))
        {
            return Vec::new();
        }
        let mut hosts: Vec<String> = if self.explicit_hosts.is_empty() {
            base.routes
                .iter()
                .flat_map(|r| r.matches.hosts.iter())
                .filter(|h| !h.starts_with("*.") && h.parse::<std::net::IpAddr>().is_err())
                .map(|h| h.to_ascii_lowercase())
                .collect()
        } else {
            self.explicit_hosts.clone()
        };
        // A certificate the file names for a host wins: no order for it.
        let filed: Vec<String> = base
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.certificates.iter().flat_map(|c| c.hosts.iter()))
            .map(|h| h.to_ascii_lowercase())
            .collect();
        hosts.retain(|h| !filed.contains(h));
        hosts.sort();
        hosts.dedup();
        hosts
    }

    fn drop_challenges(&self, host: &str) {
        Self::lock(&self.challenges).retain(|c| c.host != host);
    }
}

impl Backend for LocalAcme {
    async fn hosts(&self) -> Result<Vec<(String, i64)>, String> {
        let wanted = self.wanted();
        let changed = {
            let mut st = Self::lock(&self.state);
            let before = st.hosts.len();
            st.hosts.retain(|h, _| wanted.contains(h));
            let mut changed = st.hosts.len() != before;
            for h in &wanted {
                if !st.hosts.contains_key(h) {
                    st.hosts.insert(
                        h.clone(),
                        Host {
                            state: AcmeHostState::Pending,
                            cert_pem: None,
                            key_pem: None,
                            not_after: None,
                            next_attempt: 0,
                            attempts: 0,
                            last_error: None,
                        },
                    );
                    changed = true;
                }
            }
            changed
        };
        if changed {
            self.save()?;
        }
        Ok(Self::lock(&self.state)
            .hosts
            .iter()
            .map(|(h, v)| (h.clone(), v.next_attempt))
            .collect())
    }

    async fn ordering(&self, host: &str) -> Result<(), String> {
        if let Some(h) = Self::lock(&self.state).hosts.get_mut(host)
            && h.state != AcmeHostState::Valid
        {
            h.state = AcmeHostState::Pending;
        }
        Ok(())
    }

    async fn challenge(&self, c: &AcmeChallenge) -> Result<(), String> {
        Self::lock(&self.challenges).push(c.clone());
        // One process: the challenge is answered once the runtime has it.
        self.apply().await.map(|_| ())
    }

    async fn issued(
        &self,
        host: &str,
        chain: &str,
        key_pem: &str,
        _not_before: i64,
        not_after: i64,
        renew_at: i64,
    ) -> Result<(), String> {
        if let Some(h) = Self::lock(&self.state).hosts.get_mut(host) {
            h.state = AcmeHostState::Valid;
            h.cert_pem = Some(chain.to_owned());
            h.key_pem = Some(key_pem.to_owned());
            h.not_after = Some(not_after);
            h.next_attempt = renew_at;
            h.attempts = 0;
            h.last_error = None;
        }
        self.drop_challenges(host);
        self.save()?;
        self.apply().await.map(|_| ())
    }

    async fn failed(
        &self,
        host: &str,
        error: &str,
        retry_at: &(dyn Fn(i64) -> i64 + Sync),
    ) -> Result<i64, String> {
        let mut next = retry_at(1);
        if let Some(h) = Self::lock(&self.state).hosts.get_mut(host) {
            h.attempts += 1;
            h.next_attempt = retry_at(h.attempts);
            next = h.next_attempt;
            h.last_error = Some(error.to_owned());
            h.state = if h.not_after.is_some_and(|t| t > now()) {
                AcmeHostState::Valid
            } else {
                AcmeHostState::Error
            };
        }
        self.drop_challenges(host);
        self.save()?;
        self.apply().await.map(|_| next)
    }

    async fn account(&self, directory: &str) -> Result<Option<String>, String> {
        Ok(Self::lock(&self.state).accounts.get(directory).cloned())
    }

    async fn save_account(&self, directory: &str, credentials: &str) -> Result<(), String> {
        Self::lock(&self.state)
            .accounts
            .insert(directory.to_owned(), credentials.to_owned());
        self.save()
    }

    async fn clear_challenges(&self) {
        Self::lock(&self.challenges).clear();
    }

    async fn changed(&self) {
        self.changed.notified().await;
    }
}
