//! HTTPS for the admin API and the public side: certificate files the operator gives, or
//! certificates from the control plane's own CA. That CA is kept in the database (its key
//! sealed with the secret key), so every control-plane node of one database signs with the
//! same CA and clients trust one `ca.pem` whichever node answers. A CA an older Portico
//! made in `<data-dir>/tls/` is adopted on first start, so the clients that trust it keep
//! working.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::secrets::Sealer;
use crate::store::Store;

/// How the admin API (and the public side) serves HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminTls {
    /// This certificate chain and private key (PEM files).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// A certificate for these host names and IPs, signed by the control plane's CA.
    SelfSigned {
        /// Host names and IPs the certificate is for.
        hosts: Vec<String>,
    },
}

/// The settings row the CA is kept in.
const SETTING: &str = "admin_ca";

/// The CA as stored: its certificate, and its key sealed with the secret key.
#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    key_sealed: String,
}

/// The control plane's CA, as its certificate (what clients trust) and its key pair.
struct Ca {
    cert_pem: String,
    key: KeyPair,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Portico control plane CA");
    params
}

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("the control plane's HTTPS certificate: {e}"))
}

/// The CA the database holds; on the first start, the one an older Portico left in
/// `<data-dir>/tls/`, or a new one. Two nodes starting together agree on the first stored.
async fn ca(store: &Store, sealer: &Sealer, dir: &Path) -> Result<Ca, Error> {
    if let Some(text) = store.setting(SETTING).await? {
        let stored: StoredCa = serde_json::from_str(&text).map_err(tls_error)?;
        let key = KeyPair::from_pem(&sealer.open(&stored.key_sealed)?).map_err(tls_error)?;
        return Ok(Ca {
            cert_pem: stored.cert_pem,
            key,
        });
    }
    let legacy = (
        std::fs::read_to_string(dir.join("ca.pem")),
        std::fs::read_to_string(dir.join("ca.key")),
    );
    let (cert_pem, key_pem) = match legacy {
        (Ok(cert), Ok(key)) => {
            tracing::info!(dir = %dir.display(), "the control plane's CA moves from files into the database");
            (cert, key)
        }
        _ => {
            let key = KeyPair::generate().map_err(tls_error)?;
            let cert = ca_params().self_signed(&key).map_err(tls_error)?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let stored = StoredCa {
        cert_pem,
        key_sealed: sealer.seal(&key_pem)?,
    };
    let text = serde_json::to_string(&stored).map_err(tls_error)?;
    store.add_setting(SETTING, &text).await?;
    // Another node may have stored its own first: everyone uses the stored one.
    Box::pin(ca(store, sealer, dir)).await
}

/// The certificate chain and key (PEM) the HTTPS listeners serve, and the CA file clients
/// are told to trust (written to `<data-dir>/tls/ca.pem`) when the control plane signs.
pub(crate) async fn identity(
    tls: &AdminTls,
    store: &Store,
    sealer: &Sealer,
    data_dir: &Path,
) -> Result<(Vec<u8>, Vec<u8>, Option<PathBuf>), Error> {
    match tls {
        AdminTls::Files { cert, key } => {
            let read =
                |p: &Path| std::fs::read(p).map_err(|e| tls_error(format!("{}: {e}", p.display())));
            Ok((read(cert)?, read(key)?, None))
        }
        AdminTls::SelfSigned { hosts } => {
            let dir = data_dir.join("tls");
            let ca = ca(store, sealer, &dir).await?;
            crate::secrets::private_dir(&dir)?;
            let ca_file = dir.join("ca.pem");
            if std::fs::read_to_string(&ca_file).ok().as_deref() != Some(&ca.cert_pem) {
                std::fs::write(&ca_file, &ca.cert_pem)
                    .map_err(|e| tls_error(format!("{}: {e}", ca_file.display())))?;
            }
            // The issuer as the CA's certificate names it (an adopted CA's name may differ).
            let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca.key).map_err(tls_error)?;
            let key = KeyPair::generate().map_err(tls_error)?;
            let cert = CertificateParams::new(hosts.clone())
                .map_err(tls_error)?
                .signed_by(&key, &issuer)
                .map_err(tls_error)?;
            Ok((
                cert.pem().into_bytes(),
                key.serialize_pem().into_bytes(),
                Some(ca_file),
            ))
        }
    }
}

/// A TLS acceptor for a certificate chain and key (PEM), speaking HTTP/2 and HTTP/1.1;
/// `tls` names where they came from in errors.
pub(crate) fn acceptor(
    tls: &AdminTls,
    chain: &[u8],
    key: &[u8],
) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_from, key_from) = match tls {
        AdminTls::Files { cert, key } => (cert.display().to_string(), key.display().to_string()),
        AdminTls::SelfSigned { .. } => ("the CA's certificate".into(), "its key".into()),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(format!("{cert_from}: {e}")))?;
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_error(format!("{key_from}: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            tls_error(format!(
                "{cert_from} and {key_from} do not work together: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
