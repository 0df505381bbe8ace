//! Phase `authenticate`: who is calling, checked against the key material in the Snapshot
//! (no call to the control plane). API keys are looked up by their SHA-256.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use portico_model::{AuthMode, GatewayKind, KeyType, RouteAuth, Security};
use sha2::{Digest, Sha256};

use crate::respond::{ErrorKind, ProxyError};

/// The consumer's name, sent upstream.
pub static X_CONSUMER: HeaderName = HeaderName::from_static("x-portico-consumer");
/// The credential's key type, sent upstream.
pub static X_KEY_TYPE: HeaderName = HeaderName::from_static("x-portico-key-type");

/// The gateway's key material, compiled once per Snapshot.
#[derive(Debug, Default)]
pub struct SecurityRuntime {
    /// Which key types this gateway accepts.
    pub gateway_type: GatewayKind,
    /// API keys by SHA-256.
    pub api_keys: HashMap<[u8; 32], KeyEntry>,
}

/// One API key.
#[derive(Debug)]
pub struct KeyEntry {
    /// The consumer's name.
    pub consumer: HeaderValue,
    /// Production or sandbox.
    pub key_type: KeyType,
    /// Subscribed APIs.
    pub apis: Vec<Arc<str>>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
}

/// A route's compiled policy.
#[derive(Debug)]
pub struct Auth {
    /// The API callers must be subscribed to.
    pub api: Arc<str>,
    /// Accepted credentials.
    pub mode: AuthMode,
    /// API key header.
    pub header: HeaderName,
    /// API key query parameter.
    pub query: Option<String>,
}

/// Who called.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The consumer's name.
    pub consumer: HeaderValue,
    /// The credential's key type.
    pub key_type: KeyType,
}

impl SecurityRuntime {
    /// Compiles the Snapshot's security section.
    pub fn compile(s: &Security) -> Self {
        let mut api_keys = HashMap::with_capacity(s.api_keys.len());
        for k in &s.api_keys {
            let Some(hash) = decode_hex32(&k.hash) else {
                continue;
            };
            let Ok(consumer) = HeaderValue::from_str(&k.consumer) else {
                continue;
            };
            api_keys.insert(
                hash,
                KeyEntry {
                    consumer,
                    key_type: k.key_type,
                    apis: k.apis.iter().map(|a| Arc::from(a.as_str())).collect(),
                    expires_at: k.expires_at,
                },
            );
        }
        Self {
            gateway_type: s.gateway_type,
            api_keys,
        }
    }
}

impl Auth {
    /// Compiles a route's policy.
    pub fn compile(a: &RouteAuth) -> Result<Self, String> {
        Ok(Self {
            api: a.api.as_str().into(),
            mode: a.mode,
            header: HeaderName::from_bytes(a.api_key_header.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("bad API key header `{}`", a.api_key_header))?,
            query: a.api_key_query.clone(),
        })
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let h = (b[2 * i] as char).to_digit(16)?;
        let l = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (h * 16 + l) as u8;
    }
    Some(out)
}

fn unauthorized(detail: &'static str) -> ProxyError {
    ProxyError::new(ErrorKind::Unauthorized, detail)
}

fn forbidden(detail: &'static str) -> ProxyError {
    ProxyError::new(ErrorKind::Forbidden, detail)
}

/// The API key in the request, if any: the header, else the query parameter.
fn find_key<'a>(auth: &Auth, headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a [u8]> {
    if let Some(v) = headers.get(&auth.header) {
        return Some(v.as_bytes());
    }
    let name = auth.query.as_deref()?;
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// Checks the caller's credentials for a route; the error says why, never echoing them.
pub fn authenticate(
    sec: &SecurityRuntime,
    auth: &Auth,
    headers: &HeaderMap,
    query: Option<&str>,
    now_secs: u64,
) -> Result<Caller, ProxyError> {
    let Some(key) = find_key(auth, headers, query).filter(|_| auth.mode.api_key()) else {
        return Err(unauthorized(
            "this API needs credentials: send an API key in the `apikey` header (or the API's configured header)",
        ));
    };
    let hash: [u8; 32] = Sha256::digest(key).into();
    let Some(entry) = sec.api_keys.get(&hash) else {
        return Err(unauthorized(
            "the API key is not valid (unknown or revoked)",
        ));
    };
    if entry.expires_at.is_some_and(|t| now_secs >= t) {
        return Err(unauthorized("the API key has expired"));
    }
    if !entry.key_type.accepted_by(sec.gateway_type) {
        return Err(forbidden(match entry.key_type {
            KeyType::Production => "a production key cannot be used on a sandbox gateway",
            KeyType::Sandbox => "a sandbox key cannot be used on a production gateway",
        }));
    }
    if !entry.apis.iter().any(|a| **a == *auth.api) {
        return Err(forbidden("the consumer is not subscribed to this API"));
    }
    Ok(Caller {
        consumer: entry.consumer.clone(),
        key_type: entry.key_type,
    })
}

/// Removes what the client sent that only the gateway may set, and the credential itself
/// (the upstream has no use for it), then says who called.
pub fn forward_identity(auth: &Auth, caller: &Caller, headers: &mut HeaderMap) {
    headers.remove(&auth.header);
    headers.insert(X_CONSUMER.clone(), caller.consumer.clone());
    headers.insert(
        X_KEY_TYPE.clone(),
        HeaderValue::from_static(caller.key_type.as_str()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_model::ApiKeyGrant;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn sec(kind: GatewayKind) -> SecurityRuntime {
        let grant = |key: &str, t: KeyType, exp: Option<u64>| ApiKeyGrant {
            hash: hex(&Sha256::digest(key.as_bytes())),
            consumer: "acme".into(),
            key_type: t,
            apis: vec!["pets-v1".into()],
            expires_at: exp,
        };
        SecurityRuntime::compile(&Security {
            gateway_type: kind,
            api_keys: vec![
                grant("prod-key", KeyType::Production, None),
                grant("sand-key", KeyType::Sandbox, None),
                grant("old-key", KeyType::Production, Some(100)),
            ],
        })
    }

    fn auth(api: &str) -> Auth {
        Auth {
            api: api.into(),
            mode: AuthMode::ApiKey,
            header: HeaderName::from_static("apikey"),
            query: Some("api_key".into()),
        }
    }

    fn call(
        s: &SecurityRuntime,
        a: &Auth,
        key: Option<&str>,
        q: Option<&str>,
    ) -> Result<Caller, ErrorKind> {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert(
                "apikey",
                HeaderValue::from_str(k).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        authenticate(s, a, &h, q, 1000).map_err(|e| e.kind)
    }

    #[test]
    fn key_types_follow_the_gateway_type() {
        let a = auth("pets-v1");
        for (kind, prod, sand) in [
            (GatewayKind::Production, true, false),
            (GatewayKind::Sandbox, false, true),
            (GatewayKind::Hybrid, true, true),
        ] {
            let s = sec(kind);
            assert_eq!(
                call(&s, &a, Some("prod-key"), None).is_ok(),
                prod,
                "{kind:?}"
            );
            assert_eq!(
                call(&s, &a, Some("sand-key"), None).is_ok(),
                sand,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn missing_unknown_expired_and_unsubscribed_are_told_apart() {
        let s = sec(GatewayKind::Hybrid);
        assert_eq!(
            call(&s, &auth("pets-v1"), None, None).err(),
            Some(ErrorKind::Unauthorized)
        );
        assert_eq!(
            call(&s, &auth("pets-v1"), Some("nope"), None).err(),
            Some(ErrorKind::Unauthorized)
        );
        assert_eq!(
            call(&s, &auth("pets-v1"), Some("old-key"), None).err(),
            Some(ErrorKind::Unauthorized)
        );
        assert_eq!(
            call(&s, &auth("other-v1"), Some("prod-key"), None).err(),
            Some(ErrorKind::Forbidden)
        );
        assert!(call(&s, &auth("pets-v1"), None, Some("a=1&api_key=prod-key")).is_ok());
        assert_eq!(
            call(&s, &auth("pets-v1"), None, Some("api_keyx=prod-key")).err(),
            Some(ErrorKind::Unauthorized)
        );
    }
}
