//! Listeners: a port and a protocol, as App Mesh virtual gateways have them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::units::{ByteSize, Duration};

/// One port a gateway accepts traffic on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name routes use to bind to this listener; defaults to `<protocol>-<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address to bind; `0.0.0.0` (every IPv4 interface) by default.
    #[serde(default = "defaults::listen_address")]
    pub address: IpAddr,
    /// TCP port; 0 picks a free port (useful in tests).
    pub port: u16,
    /// Protocol spoken by clients on this port.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Size limits for requests on this listener; routes may tighten them.
    #[serde(default)]
    pub limits: Limits,
    /// How long a client connection may sit idle before it is closed. For HTTP/1.1 this is the
    /// time allowed for the next request's headers to arrive in full (so it also bounds slow
    /// senders); for HTTP/2, the time with no request in flight and no bytes moving.
    #[serde(default = "defaults::client_idle_timeout")]
    pub idle_timeout: Duration,
    /// Longest wait for the next bytes of a request body once it has started (60 s by
    /// default; `0s` turns it off): a client that sends headers and then stalls gets 408
    /// instead of holding a gateway and a backend connection.
    #[serde(
        default = "defaults::request_body_idle_timeout",
        skip_serializing_if = "defaults::is_request_body_idle_timeout"
    )]
    pub request_body_idle_timeout: Duration,
    /// Longest a whole request body may take to arrive; off unless set, so large uploads
    /// and long gRPC client streams keep working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_timeout: Option<Duration>,
    /// Proxies in front of this listener (load balancers) whose `X-Forwarded-For` is
    /// believed: the client is the last address not in these networks. Nobody's by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Serve HTTPS: TLS 1.2/1.3 with ALPN (`h2`, `http/1.1`), the certificate chosen by SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

/// A listener's TLS settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates; SNI picks the one whose `hosts` match (exact, then wildcard), and the
    /// first one answers clients that send no name or an unknown one.
    pub certificates: Vec<TlsCertificate>,
    /// Ask clients for a certificate signed by one of these CAs (PEM file): mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// With `client_ca_file`: refuse clients without a certificate (else they may connect
    /// without one, and those with one must present a valid one).
    #[serde(default = "crate::defaults::yes")]
    pub client_cert_required: bool,
    /// Get certificates for the gateway's hosts automatically from the control plane's ACME
    /// CA (Let's Encrypt or any RFC 8555 CA); an uploaded certificate for a host wins.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acme: bool,
}

/// A certificate chain and its private key: PEM files on the node, or PEM text (how the
/// control plane hands uploaded certificates to its gateways).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// Host names it serves: `api.example.com` or `*.example.com`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// PEM file with the certificate, then its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM file with the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The certificate chain as PEM text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// The private key as PEM text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// A DER OCSP response file to staple (instead of fetching one from the certificate's
    /// responder; read again on reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_file: Option<String>,
}

impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("hosts", &self.hosts)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("ocsp_file", &self.ocsp_file)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What clients speak on a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// HTTP/1.1, with HTTP/2 prior knowledge (h2c) and `Upgrade` requests detected on the same port.
    #[default]
    Http,
    /// HTTP/2 only (cleartext prior knowledge until TLS is configured).
    Http2,
    /// gRPC over HTTP/2; every error the gateway itself makes is gRPC-shaped.
    Grpc,
}

/// Request size limits, for a listener or a route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request header block (request line and every header); 431 above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_header_bytes: Option<ByteSize>,
    /// Largest request body; 413 above it. Unlimited unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<ByteSize>,
}

impl Listener {
    /// A listener on every IPv4 interface with default limits and timeouts.
    pub fn new(port: u16, protocol: ListenerProtocol) -> Self {
        Self {
            name: None,
            address: defaults::listen_address(),
            port,
            protocol,
            limits: Limits::default(),
            idle_timeout: defaults::client_idle_timeout(),
            request_body_idle_timeout: defaults::request_body_idle_timeout(),
            request_body_timeout: None,
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }

    /// The listener's name: the configured one or `<protocol>-<port>`.
    pub fn effective_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{}-{}", self.protocol.as_str(), self.port),
        }
    }
}

impl ListenerProtocol {
    /// The name used in config files and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
        }
    }
}
