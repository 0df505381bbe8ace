//! Linking a gateway: the control plane proves that the JWT secret and API token it was given
//! are the gateway's, by calling the node's admin API (port 2020) with a short-lived HS256
//! JWT signed with the secret and carrying the token's hash.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use portico_model::{ADMIN_AUDIENCE, ADMIN_ISSUER, AdminClaims};

use crate::error::Error;
use crate::secrets;

/// Where a gateway's admin API is.
#[derive(Clone, Debug)]
pub struct AdminTarget {
    /// Base URL, e.g. `http://gw1.example.com:2020`.
    pub base: reqwest::Url,
    /// Connect to this address instead of resolving the URL's host.
    pub connect_to: Option<SocketAddr>,
    /// PEM certificate (or CA) its HTTPS is trusted by, besides the system's roots.
    pub ca_pem: Option<String>,
}

impl AdminTarget {
    /// From the gateway's admin URL, IP and port: the URL names it (its port wins when it
    /// has one), the IP says where to connect.
    pub fn new(
        url: Option<&str>,
        ip: Option<&str>,
        port: u16,
        ca_pem: Option<&str>,
    ) -> Result<Self, Error> {
        let ip: Option<IpAddr> = match ip {
            Some(ip) => Some(ip.parse().map_err(|_| {
                Error::Invalid(vec![portico_model::FieldError::new(
                    "ip",
                    format!("`{ip}` is not an IP address"),
                )])
            })?),
            None => None,
        };
        let base = match (url, ip) {
            (Some(u), _) => {
                let mut base = reqwest::Url::parse(u).map_err(|e| {
                    Error::Invalid(vec![portico_model::FieldError::new(
                        "url",
                        format!("`{u}`: {e}"),
                    )])
                })?;
                if base.port().is_none() {
                    let _ = base.set_port(Some(port));
                }
                base
            }
            (None, Some(ip)) => {
                let host = match ip {
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    IpAddr::V4(v4) => v4.to_string(),
                };
                reqwest::Url::parse(&format!("http://{host}:{port}"))
                    .map_err(|e| Error::Internal(e.to_string()))?
            }
            (None, None) => {
                return Err(Error::Invalid(vec![portico_model::FieldError::new(
                    "url",
                    "give the gateway's admin URL (or at least its IP) so the control plane can reach port 2020",
                )]));
            }
        };
        let connect_to =
            ip.map(|ip| SocketAddr::new(ip, base.port_or_known_default().unwrap_or(port)));
        Ok(Self {
            base,
            connect_to,
            ca_pem: ca_pem.map(ToOwned::to_owned),
        })
    }

    fn client(&self) -> Result<reqwest::Client, Error> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        if let (Some(addr), Some(host)) = (self.connect_to, self.base.host_str()) {
            b = b.resolve(host, addr);
        }
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                Error::Invalid(vec![portico_model::FieldError::new(
                    "admin_ca_pem",
                    format!("not a PEM certificate: {e}"),
                )])
            })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        b.build()
            .map_err(|e| Error::Internal(format!("HTTP client: {e}")))
    }
}

/// Signs the admin JWT for `gateway`.
pub fn admin_jwt(gateway: &str, secret: &str, token: Option<&str>) -> Result<String, Error> {
    let now = store_now();
    let claims = AdminClaims {
        iss: ADMIN_ISSUER.into(),
        aud: ADMIN_AUDIENCE.into(),
        sub: gateway.into(),
        iat: now,
        exp: now + 60,
        tok: token.map(secrets::hash),
    };
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| Error::Internal(format!("cannot sign a JWT: {e}")))
}

fn store_now() -> u64 {
    crate::store::now().max(0) as u64
}

/// Calls the node's `POST /admin/v1/verify`; each failure has its own error.
pub async fn verify(
    gateway: &str,
    target: &AdminTarget,
    secret: &str,
    token: &str,
) -> Result<serde_json::Value, Error> {
    call(gateway, target, secret, Some(token), "verify").await
}

/// Asks the node to fetch its snapshot now.
pub async fn resync(
    gateway: &str,
    target: &AdminTarget,
    secret: &str,
) -> Result<serde_json::Value, Error> {
    call(gateway, target, secret, None, "resync").await
}

async fn call(
    gateway: &str,
    target: &AdminTarget,
    secret: &str,
    token: Option<&str>,
    what: &str,
) -> Result<serde_json::Value, Error> {
    let jwt = admin_jwt(gateway, secret, token)?;
    let url = target
        .base
        .join(&format!("admin/v1/{what}"))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let base = target.base.as_str().trim_end_matches('/');
    let resp = target
        .client()?
        .post(url)
        .bearer_auth(jwt)
        .send()
        .await
        .map_err(|e| {
            let why = if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "connection refused or no route".to_owned()
            } else {
                e.to_string()
            };
            Error::GatewayUnreachable(format!(
                "cannot reach gateway `{gateway}`'s admin API at {base} ({why}): check the URL, IP and port (2020), that `portico gateway run` is running there and that no firewall blocks the control plane"
            ))
        })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    match status.as_u16() {
        200..=299 => Ok(body),
        401 => Err(Error::JwtSecretMismatch(format!(
            "gateway `{gateway}` at {base} refused the control plane's JWT: the JWT secret given is not the one the gateway was installed with (see its config from `portico gateway init`)"
        ))),
        403 if body.get("error").and_then(|e| e.as_str()) == Some("api_token_mismatch") => {
            Err(Error::ApiTokenMismatch(format!(
                "gateway `{gateway}` at {base} accepted the JWT secret but holds a different API token: give the token from its config (`portico gateway init` printed it)"
            )))
        }
        other => Err(Error::GatewayUnreachable(format!(
            "{base} answered {other} to /admin/v1/{what}: is this a Portico gateway's admin port?"
        ))),
    }
}
