//! TLS to upstreams: a service's endpoints verified against the system's roots or given
//! CAs, the server name in SNI, an optional client certificate (mutual TLS), or no
//! verification at all for tests (with a warning in the log). Connections are either plain
//! TCP or TLS over TCP: [`UpStream`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use portico_model::{UpstreamProtocol, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection to an endpoint: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum UpStream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A service's TLS client settings, compiled.
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// Tells pooled connections of different TLS settings to one address apart (never 0).
    pub id: u32,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("id", &self.id)
            .finish()
    }
}

/// The system's trusted roots, read once.
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "a system CA certificate could not be read");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no system CA certificates found (install ca-certificates): upstream TLS without ca_file will fail"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

impl TlsClient {
    /// Loads the CAs and client certificate and builds the connector; `hostname` is the
    /// service's `hostname` (the default server name).
    pub fn compile(
        t: &UpstreamTls,
        hostname: Option<&str>,
        protocol: UpstreamProtocol,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let mut fingerprint = Vec::new();
        let builder = if t.insecure_skip_verify {
            tracing::warn!(
                "upstream TLS without certificate verification (insecure_skip_verify): anyone on the path can read and change this traffic; for tests only"
            );
            fingerprint.push(1);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            let roots = match (&t.ca_file, &t.ca_pem) {
                (None, None) => system_roots(),
                (file, pem) => {
                    let (source, bytes) = match (file, pem) {
                        (Some(f), _) => (
                            f.clone(),
                            std::fs::read(f).map_err(|e| format!("ca_file {f}: {e}"))?,
                        ),
                        (None, Some(p)) => ("ca_pem".to_owned(), p.as_bytes().to_vec()),
                        (None, None) => unreachable!("matched above"),
                    };
                    fingerprint.extend_from_slice(&bytes);
                    let mut roots = rustls::RootCertStore::empty();
                    for c in CertificateDer::pem_slice_iter(&bytes) {
                        let c = c.map_err(|e| format!("{source}: {e}"))?;
                        roots.add(c).map_err(|e| format!("{source}: {e}"))?;
                    }
                    if roots.is_empty() {
                        return Err(format!("{source}: no CA certificate in it"));
                    }
                    Arc::new(roots)
                }
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match (&t.client_cert_file, &t.client_key_file) {
            (Some(cf), Some(kf)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cf)
                    .map_err(|e| format!("client_cert_file {cf}: {e}"))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("client_cert_file {cf}: {e}"))?;
                let key = PrivateKeyDer::from_pem_file(kf)
                    .map_err(|e| format!("client_key_file {kf}: {e}"))?;
                fingerprint.extend_from_slice(cf.as_bytes());
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!(
                        "client_cert_file {cf} and client_key_file {kf} do not work together: {e}"
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match protocol {
            UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => vec![b"h2".to_vec()],
        };
        let name = t.server_name.as_deref().or(hostname.map(|h| {
            // `hostname` may carry a port (`api.example.com:8443`).
            h.rsplit_once(':')
                .filter(|(_, p)| p.parse::<u16>().is_ok())
                .map_or(h, |(host, _)| host)
        }));
        let server_name = name
            .map(|n| {
                ServerName::try_from(n.to_owned()).map_err(|e| format!("server name `{n}`: {e}"))
            })
            .transpose()?;
        fingerprint.extend_from_slice(name.unwrap_or("").as_bytes());
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&fingerprint);
        let id = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]).max(1);
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            id,
        })
    }

    /// Whether one name is sent to every endpoint (else each endpoint's own host).
    pub fn has_server_name(&self) -> bool {
        self.server_name.is_some()
    }

    /// The TLS handshake over a connected socket to an endpoint whose configured host is
    /// `host` (the server name unless one is set).
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> io::Result<UpStream> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_owned()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("server name `{host}`: {e}"),
                )
            })?,
        };
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
        Ok(UpStream::Tls(Box::new(tls)))
    }
}

/// Accepts every certificate (signatures of the handshake are still checked).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
