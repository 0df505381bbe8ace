//! HTTPS listeners: rustls with TLS 1.2 and 1.3 only, ALPN (`h2`, `http/1.1`), and the
//! certificate chosen by SNI: an exact host, then a wildcard, then the listener's first
//! certificate. Compiled with the listener's runtime, so a reload swaps certificates without
//! touching the socket or open connections.

use std::collections::HashMap;
use std::sync::Arc;

use portico_model::{ListenerProtocol, ListenerTls, TlsCertificate};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A listener's TLS acceptor.
#[derive(Clone)]
pub struct TlsRuntime {
    /// Accepts TLS connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Stapler ids of the certificates it serves.
    pub stapled: Vec<u64>,
}

impl std::fmt::Debug for TlsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsRuntime")
    }
}

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// TLS-ALPN-01 answers: per host, a self-signed certificate carrying the challenge's digest.
pub type AlpnChallenges = Arc<HashMap<String, Arc<CertifiedKey>>>;

/// A served certificate and, when it can be stapled, its id in the stapler.
#[derive(Debug, Clone)]
struct Served {
    ck: Arc<CertifiedKey>,
    staple: Option<u64>,
}

#[derive(Debug)]
struct Sni {
    exact: HashMap<String, Served>,
    wildcard: HashMap<String, Served>,
    /// None while an ACME listener waits for its first certificate: handshakes fail.
    default: Option<Served>,
    acme: AlpnChallenges,
    stapler: Arc<crate::ocsp::Stapler>,
}

impl Sni {
    /// The certificate with its OCSP staple when the stapler has a current one.
    fn serve(&self, s: &Served) -> Arc<CertifiedKey> {
        match s.staple.and_then(|id| self.stapler.get(id)) {
            Some(stapled) => stapled,
            None => s.ck.clone(),
        }
    }
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let Some(name) = hello.server_name() else {
            return if validating {
                None
            } else {
                self.default.as_ref().map(|s| self.serve(s))
            };
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if validating {
            // A CA validating a TLS-ALPN-01 challenge gets the challenge certificate or
            // nothing, never a served one.
            return self.acme.get(&name).cloned();
        }
        if let Some(c) = self.exact.get(&name) {
            return Some(self.serve(c));
        }
        // A wildcard stands for exactly one label.
        if let Some((_, parent)) = name.split_once('.')
            && let Some(c) = self.wildcard.get(parent)
        {
            return Some(self.serve(c));
        }
        self.default.as_ref().map(|s| self.serve(s))
    }
}

/// Builds the TLS-ALPN-01 answer certificates for the open challenges of that kind.
pub fn alpn_challenges(acme: &portico_model::AcmeState) -> Result<AlpnChallenges, String> {
    let mut out = HashMap::new();
    for c in &acme.challenges {
        if c.kind != portico_model::ChallengeKind::TlsAlpn01 {
            continue;
        }
        let digest = <sha2::Sha256 as sha2::Digest>::digest(c.key_authorization.as_bytes());
        let key = rcgen::KeyPair::generate().map_err(|e| format!("ACME challenge key: {e}"))?;
        let mut params = rcgen::CertificateParams::new(vec![c.host.clone()])
            .map_err(|e| format!("ACME challenge for {}: {e}", c.host))?;
        params.custom_extensions =
            vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("ACME challenge for {}: {e}", c.host))?;
        let der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| format!("ACME challenge key: {e}"))?;
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
            .map_err(|e| format!("ACME challenge key: {e}"))?;
        out.insert(
            c.host.to_ascii_lowercase(),
            Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)),
        );
    }
    Ok(Arc::new(out))
}

/// Loads one certificate chain and key (files or PEM text), checking that they belong
/// together.
fn load(c: &TlsCertificate) -> Result<Arc<CertifiedKey>, String> {
    let (cert_src, key_src) = match (&c.cert_file, &c.key_file) {
        (Some(cf), Some(kf)) => (cf.clone(), kf.clone()),
        _ => ("the certificate".to_owned(), "its key".to_owned()),
    };
    let certs: Vec<CertificateDer<'static>> = match (&c.cert_file, &c.cert_pem) {
        (Some(f), _) => CertificateDer::pem_file_iter(f)
            .map_err(|e| format!("{f}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{f}: {e}"))?,
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{cert_src}: {e}"))?,
        (None, None) => return Err("no certificate given".into()),
    };
    if certs.is_empty() {
        return Err(format!("{cert_src}: no certificate in it"));
    }
    let key = match (&c.key_file, &c.key_pem) {
        (Some(f), _) => PrivateKeyDer::from_pem_file(f).map_err(|e| format!("{f}: {e}"))?,
        (None, Some(pem)) => {
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("{key_src}: {e}"))?
        }
        (None, None) => return Err("no private key given".into()),
    };
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| format!("{key_src}: unsupported key: {e}"))?;
    let mut ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| format!("{cert_src} and {key_src} do not belong together: {e}"))?;
    if let Some(f) = &c.ocsp_file {
        let der = std::fs::read(f).map_err(|e| format!("ocsp_file {f}: {e}"))?;
        crate::ocsp::check_response(&der).map_err(|e| format!("ocsp_file {f}: {e}"))?;
        ck.ocsp = Some(der);
    }
    Ok(Arc::new(ck))
}

/// Checks that a chain and key (PEM text) load and belong together.
pub fn check_pem(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    load(&TlsCertificate {
        cert_pem: Some(cert_pem.to_owned()),
        key_pem: Some(key_pem.to_owned()),
        ..Default::default()
    })
    .map(|_| ())
}

impl TlsRuntime {
    /// Loads the certificates and builds the acceptor.
    pub fn compile(
        t: &ListenerTls,
        protocol: ListenerProtocol,
        acme: &AlpnChallenges,
        stapler: &Arc<crate::ocsp::Stapler>,
    ) -> Result<Self, String> {
        let mut alpn = match protocol {
            ListenerProtocol::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ListenerProtocol::Http2 | ListenerProtocol::Grpc => vec![b"h2".to_vec()],
        };
        if t.acme {
            alpn.push(ACME_TLS_ALPN.to_vec());
        }
        Self::with_alpn(t, alpn, acme.clone(), Some(stapler))
    }

    /// An acceptor for HTTP/1.1 only (the node's admin API).
    pub fn http1(t: &ListenerTls) -> Result<Self, String> {
        Self::with_alpn(
            t,
            vec![b"http/1.1".to_vec()],
            AlpnChallenges::default(),
            None,
        )
    }

    fn with_alpn(
        t: &ListenerTls,
        alpn: Vec<Vec<u8>>,
        acme: AlpnChallenges,
        stapler: Option<&Arc<crate::ocsp::Stapler>>,
    ) -> Result<Self, String> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        let mut stapled = Vec::new();
        for c in &t.certificates {
            let ck = load(c)?;
            // A response from a file is stapled as it is; others are fetched.
            let staple = match stapler {
                Some(s) if ck.ocsp.is_none() => s.register(&ck),
                _ => None,
            };
            stapled.extend(staple);
            let ck = Served { ck, staple };
            default.get_or_insert_with(|| ck.clone());
            for h in &c.hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(parent) => {
                        wildcard
                            .entry(parent.to_owned())
                            .or_insert_with(|| ck.clone());
                    }
                    None => {
                        exact.entry(h).or_insert_with(|| ck.clone());
                    }
                }
            }
        }
        if default.is_none() && !t.acme {
            return Err("no certificate".into());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = match &t.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(path).map_err(|e| format!("{path}: {e}"))? {
                    let c = c.map_err(|e| format!("{path}: {e}"))?;
                    roots.add(c).map_err(|e| format!("{path}: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("{path}: no CA certificate in it"));
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                );
                let v = if t.client_cert_required {
                    v
                } else {
                    v.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(v.build().map_err(|e| format!("{path}: {e}"))?)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Sni {
            exact,
            wildcard,
            default,
            acme: if t.acme {
                acme
            } else {
                AlpnChallenges::default()
            },
            stapler: stapler.cloned().unwrap_or_default(),
        }));
        config.alpn_protocols = alpn;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            stapled,
        })
    }
}
