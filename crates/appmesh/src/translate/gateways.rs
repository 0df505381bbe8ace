//! Virtual gateways to Portico gateways: listeners with their TLS, and what the gateway's
//! routes need to know of it (listener names, client TLS towards the backends).

use portico_model::apply::CertificateRef;
use portico_model::{
    GatewayKind, GatewaySpec, Listener, ListenerProtocol, ListenerTls, TlsCertificate, UpstreamTls,
};

use crate::mesh::Cx;
use crate::mesh::common::{Cert, ClientTls, Proto, TlsMode, Trust};
use crate::mesh::gateway::{GatewayListener, VirtualGateway};
use crate::translate::names::{Named, sanitize};

/// Whether a listener's clients speak TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP.
    Plain,
    /// TLS only.
    Tls,
    /// Both on one port (App Mesh's PERMISSIVE).
    Both,
}

/// One listener as routes bind to it.
#[derive(Clone, Debug)]
pub(crate) struct Bound {
    /// Port.
    pub port: u16,
    /// App Mesh protocol.
    pub protocol: Proto,
    /// Portico listener name.
    pub name: String,
    /// TLS or not.
    pub scheme: Scheme,
}

/// A virtual gateway made into a Portico gateway.
#[derive(Clone, Debug)]
pub(crate) struct Gateway {
    /// The gateway.
    pub spec: GatewaySpec,
    /// Its listeners, as routes bind to them.
    pub listeners: Vec<Bound>,
    /// TLS towards backends on these ports (every port when empty).
    pub client_tls: Option<(Vec<u16>, UpstreamTls)>,
    /// The access log file, for a gateway file's `node.access_log.path`.
    pub access_log: Option<String>,
    /// Why a gateway file for it cannot stand alone.
    pub incomplete: Vec<String>,
    /// Uploaded certificates it needs.
    pub certificates: Vec<CertificateRef>,
}

/// Makes the gateway, reporting what is not carried.
pub(crate) fn gateway(vg: &VirtualGateway, named: &Named, cx: &mut Cx<'_>) -> Gateway {
    let mut spec = GatewaySpec::new(&named.name, GatewayKind::Production);
    spec.description = format!(
        "App Mesh virtual gateway {} of mesh {}",
        vg.meta.name, vg.meta.mesh
    );
    if let Some(why) = &named.why {
        cx.changed(vg.meta.path(".virtualGatewayName"), why.clone());
    }
    let mut out = Gateway {
        spec,
        listeners: Vec::new(),
        client_tls: None,
        access_log: None,
        incomplete: Vec::new(),
        certificates: Vec::new(),
    };
    for l in &vg.listeners {
        let listener = listener(l, &mut out, cx);
        out.spec.listeners.push(listener);
    }
    cx.carried(
        vg.meta.path(""),
        format!(
            "-> gateway `{}` with listeners {}",
            out.spec.name,
            out.listeners
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    if let Some(t) = &vg.client_tls {
        out.client_tls = client_tls(t, cx);
    }
    if let Some(log) = &vg.access_log {
        let file_path = if log.path == "/dev/stdout" {
            "-"
        } else {
            log.path.as_str()
        };
        out.access_log = Some(file_path.to_owned());
        cx.changed(
            log.at.clone(),
            format!(
                "a gateway file made for this gateway logs to `{file_path}` (node.access_log.path); a node linked to a control plane logs where its own node settings say"
            ),
        );
        if let Some(at) = &log.format_at {
            cx.not_carried(
                at.clone(),
                "Portico writes its own access log line (one JSON object per request); the format is not carried",
            );
        }
    }
    out
}

fn listener(l: &GatewayListener, gw: &mut Gateway, cx: &mut Cx<'_>) -> Listener {
    let protocol = match l.protocol {
        Proto::Http2 => ListenerProtocol::Http2,
        Proto::Grpc => ListenerProtocol::Grpc,
        _ => ListenerProtocol::Http,
    };
    let mut out = Listener::new(l.port, protocol);
    let name = format!("{}-{}", protocol.as_str(), l.port);
    out.name = Some(name.clone());
    let mut scheme = Scheme::Plain;
    if let Some(t) = &l.tls {
        match t.mode {
            TlsMode::Disabled => cx.carried(t.at.clone(), "mode DISABLED: a plain listener"),
            mode => {
                scheme = if mode == TlsMode::Permissive {
                    cx.changed(
                        format!("{}.mode", t.at),
                        "PERMISSIVE takes TLS and plaintext on one port; a Portico TLS listener takes TLS only, so plaintext clients of this port are refused",
                    );
                    Scheme::Both
                } else {
                    Scheme::Tls
                };
                let mut tls = ListenerTls {
                    certificates: Vec::new(),
                    client_ca_file: None,
                    client_cert_required: true,
                    acme: false,
                };
                match &t.cert {
                    Cert::File { chain, key } => {
                        tls.certificates.push(TlsCertificate {
                            cert_file: Some(chain.clone()),
                            key_file: Some(key.clone()),
                            ..TlsCertificate::default()
                        });
                        cx.changed(
                            t.cert_at.clone(),
                            format!(
                                "-> cert_file `{chain}`, key_file `{key}`: the files must exist at these paths on every gateway node"
                            ),
                        );
                    }
                    Cert::Acm { arn } => {
                        let cert_name = acm_name(arn);
                        cx.not_carried(
                            t.cert_at.clone(),
                            format!(
                                "ACM certificates are AWS-only: upload the certificate with `portico certificates upload --name {cert_name}` and attach it (the gateway's hosts must be names it covers); the listener serves TLS with the uploaded certificates"
                            ),
                        );
                        gw.incomplete.push(format!(
                            "listener {name} uses the ACM certificate {arn}: give cert_file and key_file"
                        ));
                        if !gw.certificates.iter().any(|c| c.name == cert_name) {
                            gw.certificates.push(CertificateRef {
                                name: cert_name,
                                hosts: Vec::new(),
                            });
                        }
                    }
                    Cert::Sds { secret } => {
                        cx.not_carried(
                            t.cert_at.clone(),
                            format!(
                                "SDS secret `{secret}` is Envoy's: write the certificate and key to files (cert_file, key_file) or upload them with `portico certificates upload`"
                            ),
                        );
                        gw.incomplete.push(format!(
                            "listener {name} uses the SDS secret {secret}: give cert_file and key_file"
                        ));
                    }
                }
                if let Some((vat, v)) = &t.validation {
                    match &v.trust {
                        Trust::File { chain } => {
                            tls.client_ca_file = Some(chain.clone());
                            cx.carried(
                                vat.clone(),
                                format!(
                                    "client certificates -> client_ca_file `{chain}`, required"
                                ),
                            );
                        }
                        other => cx.not_carried(
                            v.trust_at.clone(),
                            format!(
                                "{} trust is not a file: clients are not asked for certificates; give client_ca_file",
                                trust_word(other)
                            ),
                        ),
                    }
                    if let Some(at) = &v.sans_at {
                        cx.not_carried(
                            at.clone(),
                            "Portico takes any client certificate its CA signed; it does not check subject alternative names",
                        );
                    }
                }
                out.tls = Some(tls);
            }
        }
    }
    if let Some(h) = &l.health {
        cx.changed(
            h.at.clone(),
            "the gateway's own health: Portico nodes answer /healthz (and /readyz) on their internal port, 127.0.0.1:9401 by default; point the load balancer's check there",
        );
    }
    if let Some(p) = &l.pool {
        cx.not_carried(
            p.at.clone(),
            "a virtual gateway's connection pool: Portico's connection limits are per service (a virtual node listener's connectionPool is carried onto its service)",
        );
    }
    cx.carried(
        l.at.clone(),
        format!(
            "port {} ({}) -> listener `{name}` on 0.0.0.0",
            l.port,
            l.protocol.word()
        ),
    );
    gw.listeners.push(Bound {
        port: l.port,
        protocol: l.protocol,
        name,
        scheme,
    });
    out
}

fn client_tls(t: &ClientTls, cx: &mut Cx<'_>) -> Option<(Vec<u16>, UpstreamTls)> {
    if !t.enforce {
        cx.carried(
            format!("{}.enforce", t.at),
            "enforce false: no TLS towards the backends, as in App Mesh",
        );
        return None;
    }
    let mut tls = UpstreamTls::default();
    match &t.validation.trust {
        Trust::File { chain } => tls.ca_file = Some(chain.clone()),
        other => cx.changed(
            t.validation.trust_at.clone(),
            format!(
                "{} trust is not a file: backends' certificates are checked against the system's CAs; give tls.ca_file",
                trust_word(other)
            ),
        ),
    }
    match t.validation.sans.as_slice() {
        [one] => tls.server_name = Some(one.clone()),
        [] => cx.changed(
            t.validation.trust_at.clone(),
            "no subjectAlternativeNames: App Mesh checks the chain only; Portico also checks the backend's name (the service's hostname, the virtual service name, else the endpoint's host)",
        ),
        many => cx.changed(
            t.validation.sans_at.clone().unwrap_or_default(),
            format!(
                "{} names: Portico checks one (the service's hostname, the virtual service name, else the endpoint's host)",
                many.len()
            ),
        ),
    }
    if let Some((at, c)) = &t.cert {
        match c {
            Cert::File { chain, key } => {
                tls.client_cert_file = Some(chain.clone());
                tls.client_key_file = Some(key.clone());
            }
            other => cx.not_carried(
                at.clone(),
                format!(
                    "{}: give client_cert_file and client_key_file (files on every gateway node)",
                    match other {
                        Cert::Sds { secret } => format!("SDS secret `{secret}` is Envoy's"),
                        _ => "not a file".to_owned(),
                    }
                ),
            ),
        }
    }
    let ports = if t.ports.is_empty() {
        "every backend port".to_owned()
    } else {
        format!(
            "backend ports {}",
            t.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    cx.carried(
        t.at.clone(),
        format!("-> tls of every service this gateway's routes reach on {ports}"),
    );
    Some((t.ports.clone(), tls))
}

fn trust_word(t: &Trust) -> &'static str {
    match t {
        Trust::File { .. } => "file",
        Trust::Acm { .. } => "ACM Private CA",
        Trust::Sds { .. } => "SDS",
    }
}

/// The name an ACM certificate is to be uploaded under: `acm-<its id>`.
pub(crate) fn acm_name(arn: &str) -> String {
    let id = arn.rsplit('/').next().unwrap_or(arn);
    crate::translate::names::fit(&format!("acm-{}", sanitize(id)), 64)
}
