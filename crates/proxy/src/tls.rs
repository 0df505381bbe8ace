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
}

impl std::fmt::Debug for TlsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsRuntime")
    }
}

#[derive(Debug)]
struct Sni {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        // A wildcard stands for exactly one label.
        if let Some((_, parent)) = name.split_once('.')
            && let Some(c) = self.wildcard.get(parent)
        {
            return Some(c.clone());
        }
        Some(self.default.clone())
    }
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
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| format!("{cert_src} and {key_src} do not belong together: {e}"))?;
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
    pub fn compile(t: &ListenerTls, protocol: ListenerProtocol) -> Result<Self, String> {
        let alpn = match protocol {
            ListenerProtocol::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ListenerProtocol::Http2 | ListenerProtocol::Grpc => vec![b"h2".to_vec()],
        };
        Self::with_alpn(t, alpn)
    }

    /// An acceptor for HTTP/1.1 only (the node's admin API).
    pub fn http1(t: &ListenerTls) -> Result<Self, String> {
        Self::with_alpn(t, vec![b"http/1.1".to_vec()])
    }

    fn with_alpn(t: &ListenerTls, alpn: Vec<Vec<u8>>) -> Result<Self, String> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for c in &t.certificates {
            let ck = load(c)?;
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
        let default = default.ok_or("no certificate")?;
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
        }));
        config.alpn_protocols = alpn;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}
