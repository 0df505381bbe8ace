//! Automatic certificates: the control plane's ACME client (RFC 8555). For every host a
//! gateway with an `acme` listener serves, it orders a certificate from the configured CA,
//! publishes the challenge to every node of the gateways serving the host (in their
//! snapshots, so any node can answer the CA), waits until those nodes serve it, and stores
//! the certificate (key sealed) for their listeners. Certificates are renewed two thirds
//! into their lifetime; failed orders are retried with exponential back-off, and an hour
//! at least after the CA says its rate limit was hit. One order at a time: the CA sees one
//! client per control plane, whatever the number of nodes.

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

/// Runs the ACME client until `shutdown` turns true.
pub fn spawn(
    cp: Arc<ControlPlane>,
    config: AcmeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = run(&cp, &config) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    })
}

async fn run(cp: &ControlPlane, config: &AcmeConfig) {
    tracing::info!(directory = %config.directory, challenge = config.challenge.as_str(), "automatic certificates on");
    match cp.store.acme_clear_challenges().await {
        Ok(m) => cp.hub.publish(&m),
        Err(e) => tracing::warn!(error = %e, "cannot clear old ACME challenges"),
    }
    let mut account: Option<Account> = None;
    loop {
        let hosts = match cp.store.acme_reconcile().await {
            Ok((hosts, moved)) => {
                cp.hub.publish(&moved);
                hosts
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the hosts that want certificates");
                Vec::new()
            }
        };
        let t = now();
        for h in hosts.iter().filter(|h| h.next_attempt <= t) {
            let started = Instant::now();
            let result = order(cp, config, &mut account, &h.host).await;
            match result {
                Ok(not_after) => {
                    tracing::info!(host = %h.host, not_after, took_ms = started.elapsed().as_millis() as u64, "certificate issued");
                }
                Err(e) => {
                    let limited = e.rate_limited();
                    let base = config.retry_base.as_secs().max(1) as i64;
                    let max = config.retry_max.as_secs().max(1) as i64;
                    let retry_at = |attempts: i64| {
                        let mut delay = base
                            .saturating_mul(1i64 << (attempts - 1).clamp(0, 30))
                            .min(max);
                        if limited {
                            delay = delay.max(3600);
                        }
                        now() + delay
                    };
                    tracing::warn!(host = %h.host, error = %e, rate_limited = limited, "certificate order failed; retrying later");
                    match cp
                        .store
                        .acme_failed(&h.host, &e.to_string(), retry_at)
                        .await
                    {
                        Ok(m) => cp.hub.publish(&m),
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
        let next = match cp.store.acme_hosts().await {
            Ok(hosts) => hosts.iter().map(|h| h.next_attempt).min(),
            Err(_) => None,
        };
        let wait = next.map_or(60, |n| (n - now()).clamp(1, 60)) as u64;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(wait)) => {}
            () = cp.hub.changed.notified() => {}
        }
    }
}

/// Orders one host's certificate; returns its `notAfter`.
async fn order(
    cp: &ControlPlane,
    config: &AcmeConfig,
    account: &mut Option<Account>,
    host: &str,
) -> Result<i64, OrderError> {
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
    let moved = cp
        .store
        .acme_ordering(host)
        .await
        .map_err(|e| OrderError::Other(e.to_string()))?;
    cp.hub.publish(&moved);
    let acct = match account {
        Some(a) => a.clone(),
        None => {
            let a = load_account(cp, config).await?;
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
            let moved = cp
                .store
                .acme_add_challenge(&c)
                .await
                .map_err(|e| OrderError::Other(e.to_string()))?;
            cp.hub.publish(&moved);
            wait_for_nodes(cp, &moved, config.propagation_timeout).await;
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
    let sealed = cp
        .sealer
        .seal(&key.serialize_pem())
        .map_err(|e| OrderError::Other(e.to_string()))?;
    let moved = cp
        .store
        .acme_issued(host, &chain, &sealed, not_before, not_after, renew_at)
        .await
        .map_err(|e| OrderError::Other(e.to_string()))?;
    cp.hub.publish(&moved);
    Ok(not_after)
}

/// The account at the configured CA: restored from the store, or made and stored (sealed).
async fn load_account(cp: &ControlPlane, config: &AcmeConfig) -> Result<Account, OrderError> {
    let builder = match &config.ca_file {
        Some(path) => Account::builder_with_root(path)?,
        None => Account::builder()?,
    };
    let other = |e: crate::Error| OrderError::Other(e.to_string());
    if let Some(sealed) = cp
        .store
        .acme_account(&config.directory)
        .await
        .map_err(other)?
    {
        let creds: AccountCredentials =
            serde_json::from_str(&cp.sealer.open(&sealed).map_err(other)?).map_err(|e| {
                OrderError::Other(format!("stored ACME account is unreadable: {e}"))
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
    let sealed = cp.sealer.seal(&json).map_err(other)?;
    cp.store
        .acme_save_account(&config.directory, &sealed)
        .await
        .map_err(other)?;
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
