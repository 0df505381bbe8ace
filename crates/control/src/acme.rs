//! Automatic certificates: the control plane's ACME client (RFC 8555). For every host a
//! gateway with an `acme` listener serves, it orders a certificate from the configured CA,
//! publishes the challenge to every node of the gateways serving the host (in their
//! snapshots, so any node can answer the CA), waits until those nodes serve it, and stores
//! the certificate (key sealed) for their listeners. Certificates are renewed two thirds
//! into their lifetime; failed orders are retried with exponential back-off, and an hour
//! at least after the CA says its rate limit was hit. One order at a time: the CA sees one
//! client per control plane, whatever the number of nodes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use portico_model::{AcmeChallenge, ChallengeKind};
use tokio::sync::watch;

use crate::ControlPlane;
use crate::store::now;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How the control plane gets certificates.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact addresses for the account (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// PEM CA bundle the directory's HTTPS certificate is checked against (a private or test
    /// CA); the system's roots when not given.
    pub ca_file: Option<PathBuf>,
    /// External Account Binding: key id and base64url HMAC key, for CAs that need it.
    pub eab: Option<(String, String)>,
    /// The challenge the gateways answer.
    pub challenge: ChallengeKind,
    /// First retry delay after a failed order; doubles with every failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Longest wait for the nodes to serve a new challenge before the CA is told to check.
    pub propagation_timeout: Duration,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: LETS_ENCRYPT.into(),
            contact: Vec::new(),
            ca_file: None,
            eab: None,
            challenge: ChallengeKind::Http01,
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(6 * 3600),
            propagation_timeout: Duration::from_secs(30),
        }
    }
}

impl AcmeConfig {
    /// The client's settings from `[node.acme]` (or the server's `--acme-*` flags):
    /// `letsencrypt` and `letsencrypt-staging` name Let's Encrypt's directories, e-mail
    /// addresses become `mailto:` contacts.
    pub fn from_settings(s: &portico_model::NodeAcme) -> Self {
        Self {
            directory: match s.directory.as_str() {
                "letsencrypt" => LETS_ENCRYPT.into(),
                "letsencrypt-staging" => LETS_ENCRYPT_STAGING.into(),
                d => d.to_owned(),
            },
            contact: s
                .email
                .iter()
                .map(|e| format!("mailto:{}", e.trim_start_matches("mailto:")))
                .collect(),
            ca_file: s.ca_file.as_ref().map(PathBuf::from),
            eab: s.eab_kid.clone().zip(s.eab_hmac_key.clone()),
            challenge: ChallengeKind::parse(&s.challenge).unwrap_or_default(),
            ..Self::default()
        }
    }
}

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The CA answered with a problem document or could not be reached.
    #[error("{}", with_causes(.0))]
    Acme(#[from] instant_acme::Error),
    /// Anything else, said plainly.
    #[error("{0}")]
    Other(String),
}

/// An error and its causes (`client error (Connect): ... invalid peer certificate ...`).
fn with_causes(e: &instant_acme::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl OrderError {
    fn rate_limited(&self) -> bool {
        matches!(self, Self::Acme(instant_acme::Error::Api(p))
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited"))
    }
}

/// Where the ACME client keeps its account, hosts, challenges and certificates, and how
/// challenges reach the servers that answer them: the control plane's store and its
/// gateways' snapshots, or a standalone gateway's own state directory.
pub trait Backend: Send + Sync {
    /// The hosts that want a certificate now, each with the Unix second of its next order.
    fn hosts(&self) -> impl Future<Output = Result<Vec<(String, i64)>, String>> + Send;
    /// An order for `host` starts.
    fn ordering(&self, host: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Publishes a challenge and returns once the servers answer it.
    fn challenge(&self, c: &AcmeChallenge) -> impl Future<Output = Result<(), String>> + Send;
    /// Keeps an issued certificate (chain and key as PEM) and closes the host's challenges.
    #[allow(clippy::too_many_arguments)] // one certificate's parts
    fn issued(
        &self,
        host: &str,
        chain: &str,
        key_pem: &str,
        not_before: i64,
        not_after: i64,
        renew_at: i64,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Records a failed order; `retry_at(failures in a row)` says when to try again, and
    /// that time is returned.
    fn failed(
        &self,
        host: &str,
        error: &str,
        retry_at: &(dyn Fn(i64) -> i64 + Sync),
    ) -> impl Future<Output = Result<i64, String>> + Send;
    /// The account's credentials (JSON) at this directory, if one was made.
    fn account(
        &self,
        directory: &str,
    ) -> impl Future<Output = Result<Option<String>, String>> + Send;
    /// Keeps a new account's credentials (JSON; secret).
    fn save_account(
        &self,
        directory: &str,
        credentials: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Drops challenges a previous run left open.
    fn clear_challenges(&self) -> impl Future<Output = ()> + Send;
    /// Returns when something changed that may add hosts.
    fn changed(&self) -> impl Future<Output = ()> + Send;
}

/// The control plane as the ACME client's backend.
struct ControlPlaneBackend<'a> {
    cp: &'a ControlPlane,
    propagation_timeout: Duration,
}

impl Backend for ControlPlaneBackend<'_> {
    async fn hosts(&self) -> Result<Vec<(String, i64)>, String> {
        let (hosts, _) = self
            .cp
            .store
            .acme_reconcile()
            .await
            .map_err(|e| e.to_string())?;
        Ok(hosts
            .into_iter()
            .map(|h| (h.host, h.next_attempt))
            .collect())
    }

    async fn ordering(&self, host: &str) -> Result<(), String> {
        self.cp
            .store
            .acme_ordering(host)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn challenge(&self, c: &AcmeChallenge) -> Result<(), String> {
        let moved = self
            .cp
            .store
            .acme_add_challenge(c)
            .await
            .map_err(|e| e.to_string())?;
        wait_for_nodes(self.cp, &moved, self.propagation_timeout).await;
        Ok(())
    }

    async fn issued(
        &self,
        host: &str,
        chain: &str,
        key_pem: &str,
        not_before: i64,
        not_after: i64,
        renew_at: i64,
    ) -> Result<(), String> {
        let sealed = self.cp.sealer.seal(key_pem).map_err(|e| e.to_string())?;
        self.cp
            .store
            .acme_issued(host, chain, &sealed, not_before, not_after, renew_at)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn failed(
        &self,
        host: &str,
        error: &str,
        retry_at: &(dyn Fn(i64) -> i64 + Sync),
    ) -> Result<i64, String> {
        let (next, _) = self
            .cp
            .store
            .acme_failed(host, error, retry_at)
            .await
            .map_err(|e| e.to_string())?;
        Ok(next)
    }

    async fn account(&self, directory: &str) -> Result<Option<String>, String> {
        match self
            .cp
            .store
            .acme_account(directory)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(sealed) => self
                .cp
                .sealer
                .open(&sealed)
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    async fn save_account(&self, directory: &str, credentials: &str) -> Result<(), String> {
        let sealed = self
            .cp
            .sealer
            .seal(credentials)
            .map_err(|e| e.to_string())?;
        self.cp
            .store
            .acme_save_account(directory, &sealed)
            .await
            .map_err(|e| e.to_string())
    }

    async fn clear_challenges(&self) {
        match self.cp.store.acme_clear_challenges().await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot clear old ACME challenges"),
        }
    }

    async fn changed(&self) {
        self.cp.hub.changed.notified().await;
    }
}

/// Runs the control plane's ACME client until `shutdown` turns true, while this node
/// leads the background duties: an order in flight when leadership is lost is dropped at
/// once (the host stays due, and the new leader orders it again).
pub fn spawn(
    cp: Arc<ControlPlane>,
    config: AcmeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let backend = ControlPlaneBackend {
            cp: &cp,
            propagation_timeout: config.propagation_timeout,
        };
        let mut leader = cp.leader.clone();
        loop {
            tokio::select! {
                () = leader.until_leader() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            tokio::select! {
                () = run(&backend, &config) => return,
                () = leader.until_lost() => {
                    tracing::warn!("not the leader any more: automatic certificates stop here");
                }
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    })
}

/// Orders and renews certificates for the backend's hosts, for ever.
pub async fn run<B: Backend>(backend: &B, config: &AcmeConfig) {
    tracing::info!(directory = %config.directory, challenge = config.challenge.as_str(), "automatic certificates on");
    backend.clear_challenges().await;
    let mut account: Option<Account> = None;
    loop {
        let hosts = match backend.hosts().await {
            Ok(hosts) => hosts,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the hosts that want certificates");
                Vec::new()
            }
        };
        let t = now();
        // The earliest next order: hosts not due keep theirs, ordered ones get a new one.
        let mut next: Option<i64> = hosts.iter().map(|(_, n)| *n).filter(|n| *n > t).min();
        for (host, _) in hosts.iter().filter(|(_, next)| *next <= t) {
            let started = Instant::now();
            let result = order(backend, config, &mut account, host).await;
            match result {
                Ok((not_after, renew_at)) => {
                    next = Some(next.map_or(renew_at, |n| n.min(renew_at)));
                    tracing::info!(host = %host, not_after, took_ms = started.elapsed().as_millis() as u64, "certificate issued");
                }
                Err(e) => {
                    let limited = e.rate_limited();
                    let base = config.retry_base.as_secs().max(1) as i64;
                    let max = config.retry_max.as_secs().max(1) as i64;
                    let retry_at = move |attempts: i64| {
                        let mut delay = base
                            .saturating_mul(1i64 << (attempts - 1).clamp(0, 30))
                            .min(max);
                        if limited {
                            delay = delay.max(3600);
                        }
                        now() + delay
                    };
                    tracing::warn!(host = %host, error = %e, rate_limited = limited, "certificate order failed; retrying later");
                    match backend.failed(host, &e.to_string(), &retry_at).await {
                        Ok(at) => next = Some(next.map_or(at, |n| n.min(at))),
                        Err(e) => tracing::error!(error = %e, "cannot record a failed order"),
                    }
                    if matches!(e, OrderError::Acme(_)) {
                        // A fresh client next time: the CA may have been away.
                        account = None;
                    }
                }
            }
        }
        // Sleep until the earliest renewal or retry, a change anywhere, or a minute.
        let wait = next.map_or(60, |n| (n - now()).clamp(1, 60)) as u64;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(wait)) => {}
            () = backend.changed() => {}
        }
    }
}

/// Orders one host's certificate; returns its `notAfter` and when to renew it.
async fn order<B: Backend>(
    backend: &B,
    config: &AcmeConfig,
    account: &mut Option<Account>,
    host: &str,
) -> Result<(i64, i64), OrderError> {
    if host.starts_with("*.") {
        return Err(OrderError::Other(
            "a wildcard host needs the DNS-01 challenge, which the gateway cannot answer: upload a certificate for it".into(),
        ));
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(OrderError::Other(
            "certificates are ordered for host names, not IP addresses: upload one".into(),
        ));
    }
    backend.ordering(host).await.map_err(OrderError::Other)?;
    let acct = match account {
        Some(a) => a.clone(),
        None => {
            let a = load_account(backend, config).await?;
            *account = Some(a.clone());
            a
        }
    };
    let ids = [Identifier::Dns(host.to_owned())];
    let mut order = acct.new_order(&NewOrder::new(&ids)).await?;
    let kind = match config.challenge {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => {
                    return Err(OrderError::Other(format!(
                        "the CA's authorization for {host} is {s:?}"
                    )));
                }
            }
            let mut ch = a.challenge(kind.clone()).ok_or_else(|| {
                OrderError::Other(format!(
                    "the CA offers no {} challenge for {host}",
                    config.challenge.as_str()
                ))
            })?;
            let c = AcmeChallenge {
                host: host.to_owned(),
                kind: config.challenge,
                token: ch.token.clone(),
                key_authorization: ch.key_authorization().as_str().to_owned(),
            };
            if !portico_model::acme::token_ok(&c.token) {
                return Err(OrderError::Other(format!(
                    "the CA sent a malformed challenge token for {host}"
                )));
            }
            backend.challenge(&c).await.map_err(OrderError::Other)?;
            ch.set_ready().await?;
        }
    }
    let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(OrderError::Other(format!(
            "the CA could not validate {host} with {}: {}",
            config.challenge.as_str(),
            challenge_errors(&mut order).await
        )));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| OrderError::Other(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])
        .map_err(|e| OrderError::Other(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| OrderError::Other(e.to_string()))?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&retries).await?;
    let (not_before, not_after) = validity(&chain)?;
    let renew_at = not_before + (not_after - not_before) * 2 / 3;
    backend
        .issued(
            host,
            &chain,
            &key.serialize_pem(),
            not_before,
            not_after,
            renew_at,
        )
        .await
        .map_err(OrderError::Other)?;
    Ok((not_after, renew_at))
}

/// The account at the configured CA: restored from the backend, or made and kept there.
async fn load_account<B: Backend>(backend: &B, config: &AcmeConfig) -> Result<Account, OrderError> {
    let builder = match &config.ca_file {
        Some(path) => Account::builder_with_root(path)?,
        None => Account::builder()?,
    };
    if let Some(json) = backend
        .account(&config.directory)
        .await
        .map_err(OrderError::Other)?
    {
        let creds: AccountCredentials = serde_json::from_str(&json).map_err(|e| {
            OrderError::Other(format!("the stored ACME account is unreadable: {e}"))
        })?;
        return Ok(builder.from_credentials(creds).await?);
    }
    let eab = match &config.eab {
        Some((kid, key)) => {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.trim_end_matches('='))
                .map_err(|_| OrderError::Other("the EAB HMAC key is not base64url".into()))?;
            Some(ExternalAccountKey::new(kid.clone(), &raw))
        }
        None => None,
    };
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let (acct, creds) = builder
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            eab.as_ref(),
        )
        .await?;
    let json = serde_json::to_string(&creds).map_err(|e| OrderError::Other(e.to_string()))?;
    backend
        .save_account(&config.directory, &json)
        .await
        .map_err(OrderError::Other)?;
    tracing::info!(directory = %config.directory, "ACME account created");
    Ok(acct)
}

/// Waits until every node seen recently of each moved gateway serves its new version.
async fn wait_for_nodes(cp: &ControlPlane, moved: &[(i64, u64)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let fresh = cp.config.node_offline_after.as_secs() as i64;
    loop {
        let mut behind = 0;
        for &(gid, version) in moved {
            if let Ok(nodes) = cp.store.nodes(gid).await {
                behind += nodes
                    .iter()
                    .filter(|n| n.last_seen >= now() - fresh)
                    .filter(|n| n.applied_version.is_none_or(|v| v < version))
                    .count();
            }
        }
        if behind == 0 {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                nodes_behind = behind,
                "not every node took the ACME challenge in time; asking the CA anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the CA said about the failed challenges.
async fn challenge_errors(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        if let Ok(state) = a.refresh().await {
            for c in &state.challenges {
                if let Some(p) = &c.error {
                    out.push(p.detail.clone().unwrap_or_else(|| p.to_string()));
                }
            }
        }
    }
    if out.is_empty() {
        "the order became invalid".into()
    } else {
        out.join("; ")
    }
}

/// `notBefore` and `notAfter` of the chain's first certificate.
fn validity(chain_pem: &str) -> Result<(i64, i64), OrderError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let first = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| OrderError::Other("the CA sent no certificate".into()))?
        .map_err(|e| OrderError::Other(format!("the CA sent an unreadable certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&first)
        .map_err(|e| OrderError::Other(format!("the CA sent an unreadable certificate: {e}")))?;
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}
