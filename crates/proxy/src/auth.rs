//! Phase `authenticate`: who is calling, checked against the key material in the Snapshot
//! (no call to the control plane). API keys are looked up by their SHA-256.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portico_model::{AccessClaims, AuthMode, GatewayKind, KeyType, RouteAuth, Security};
use sha2::{Digest, Sha256};

use crate::fault::{ErrorKind, ProxyError};
use crate::throttle::{Checks, Gcra, Limit, Limiters, SharedLimits};

/// The consumer's name, sent upstream.
pub static X_CONSUMER: HeaderName = HeaderName::from_static("x-portico-consumer");
/// The credential's key type, sent upstream.
pub static X_KEY_TYPE: HeaderName = HeaderName::from_static("x-portico-key-type");

/// The gateway's key material, compiled once per Snapshot.
#[derive(Debug, Default)]
pub struct SecurityRuntime {
    /// Which key types this gateway accepts.
    pub gateway_type: GatewayKind,
    /// API keys by SHA-256: the packed table the snapshot holds, shared, not copied.
    pub api_keys: portico_model::packed::ApiKeys,
    /// JWT verification keys by `kid`, with the checks every token gets.
    pub jwt: Option<JwtRuntime>,
    /// Tokens already verified, by SHA-256, until they expire: bounded, sharded, each
    /// shard evicting one entry at a time (a clock).
    verified: crate::token_cache::TokenCache<Verified>,
    /// Limiters by tier name (lower case).
    tiers: HashMap<String, Arc<Gcra>>,
    /// Consumers' subscriptions (what their tokens may open): shared with the snapshot.
    consumers: portico_model::packed::Consumers,
    /// Limits of the consumers that have tiers: their own, and per subscribed API.
    limits: HashMap<String, ConsumerTiers>,
    /// Limits shared through Redis.
    pub shared: Option<Arc<SharedLimits>>,
}

#[derive(Debug, Default)]
struct ConsumerTiers {
    /// The consumer's own tier and its key (`c:<consumer>`).
    own: Option<Limit>,
    /// Subscription tiers by API, with their keys (`s:<consumer>:<api>`).
    by_api: HashMap<String, Limit>,
}

/// A route's throttling tiers.
#[derive(Debug)]
pub struct RouteThrottle {
    /// The API.
    pub api: Arc<str>,
    /// Over all callers of the API, with its key (`a:<api>`).
    pub api_tier: Option<Limit>,
    /// Over all callers of this route, with its key (`o:<route>`).
    pub operation_tier: Option<Limit>,
}

/// JWT verification.
pub struct JwtRuntime {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for JwtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtRuntime")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a verified token says.
#[derive(Debug)]
struct Verified {
    caller: Caller,
    nbf: u64,
    exp: u64,
    scopes: Vec<String>,
}

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 30;

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
    /// Scopes a token must carry.
    pub scopes: Vec<String>,
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
    /// Compiles the Snapshot's security section with fresh limiters (tests).
    pub fn compile(s: &Security) -> Self {
        Self::compile_with(s, &Limiters::default(), None)
    }

    /// The limiter of a tier.
    pub fn tier(&self, name: &str) -> Option<Arc<Gcra>> {
        self.tiers.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The limits a request on this route meets: the consumer's, the subscription's, the
    /// API's and the operation's tiers, in that order. Their cells were found when the
    /// Snapshot compiled: nothing is looked up, formatted or allocated per request.
    pub fn checks<'a>(&'a self, t: &'a RouteThrottle, caller: Option<&Caller>) -> Checks<'a> {
        let mut out: Checks<'a> = [None; 4];
        if let Some(c) = caller
            && let Ok(name) = c.consumer.to_str()
            && let Some(ct) = self.limits.get(name)
        {
            out[0] = ct
                .own
                .as_ref()
                .map(|l| (l, "the consumer's rate limit is reached"));
            out[1] = ct
                .by_api
                .get(&*t.api)
                .map(|l| (l, "the subscription's rate limit is reached"));
        }
        out[2] = t
            .api_tier
            .as_ref()
            .map(|l| (l, "the API's rate limit is reached"));
        out[3] = t
            .operation_tier
            .as_ref()
            .map(|l| (l, "the operation's rate limit is reached"));
        out
    }

    /// Phase `throttle`: shared through Redis when configured (one round trip), else local.
    pub async fn throttle(
        &self,
        t: &RouteThrottle,
        caller: Option<&Caller>,
        now_ns: u64,
    ) -> Result<(), ProxyError> {
        let checks = self.checks(t, caller);
        if checks.iter().all(Option::is_none) {
            return Ok(());
        }
        match &self.shared {
            // Boxed: the Redis round trip is the cold branch; inline, its future would
            // grow every request's.
            Some(shared) => Box::pin(shared.check(&checks, now_ns)).await,
            None => crate::throttle::check_local(&checks, now_ns),
        }
    }

    /// Compiles the Snapshot's security section, taking limiters from `limiters`.
    pub fn compile_with(
        s: &Security,
        limiters: &Limiters,
        shared: Option<Arc<SharedLimits>>,
    ) -> Self {
        let jwt = s.jwt.as_ref().map(|j| {
            let mut keys = HashMap::new();
            for k in &j.keys {
                if let Ok(d) = DecodingKey::from_ec_components(&k.x, &k.y) {
                    keys.insert(k.kid.clone(), d);
                }
            }
            let mut validation = Validation::new(Algorithm::ES256);
            validation.set_issuer(&[&j.issuer]);
            validation.set_audience(&[&j.audience]);
            validation.leeway = LEEWAY;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            JwtRuntime { keys, validation }
        });
        let tiers: HashMap<String, Arc<Gcra>> = s
            .tiers
            .iter()
            .map(|t| (t.name.to_ascii_lowercase(), limiters.get(t)))
            .collect();
        let lookup = |n: &str| tiers.get(&n.to_ascii_lowercase()).cloned();
        // Only consumers with tiers get limits; the others (most of a million) are
        // found in the shared table when a token names them.
        let limits = s
            .consumers
            .tiered()
            .map(|(name, t)| {
                (
                    name.to_owned(),
                    ConsumerTiers {
                        own: t
                            .tier
                            .as_deref()
                            .and_then(lookup)
                            .map(|g| g.limit(&format!("c:{name}"))),
                        by_api: t
                            .subscriptions
                            .iter()
                            .filter_map(|(api, t)| {
                                let limit = lookup(t)?.limit(&format!("s:{name}:{api}"));
                                Some((api.clone(), limit))
                            })
                            .collect(),
                    },
                )
            })
            .collect();
        Self {
            gateway_type: s.gateway_type,
            api_keys: s.api_keys.clone(),
            jwt,
            verified: crate::token_cache::TokenCache::default(),
            tiers,
            consumers: s.consumers.clone(),
            limits,
            shared,
        }
    }

    /// Whether `consumer` is subscribed to `api` in this snapshot.
    fn subscribed(&self, consumer: &HeaderValue, api: &str) -> bool {
        consumer
            .to_str()
            .ok()
            .and_then(|c| self.consumers.apis(c))
            .is_some_and(|apis| apis.iter().any(|a| **a == *api))
    }

    /// Verifies a bearer token (cached by hash until it expires).
    fn verify_jwt(&self, token: &[u8], now: u64) -> Result<Arc<Verified>, ProxyError> {
        let hash: [u8; 32] = Sha256::digest(token).into();
        let v = match self.verified.get(&hash) {
            Some(v) => v,
            None => {
                let v = Arc::new(self.verify_uncached(token)?);
                self.verified.insert(hash, v.clone());
                v
            }
        };
        if now >= v.exp + LEEWAY {
            return Err(unauthorized("the token has expired"));
        }
        if now + LEEWAY < v.nbf {
            return Err(unauthorized("the token is not valid yet"));
        }
        Ok(v)
    }

    fn verify_uncached(&self, token: &[u8]) -> Result<Verified, ProxyError> {
        let Some(jwt) = &self.jwt else {
            return Err(unauthorized(
                "this gateway has no keys to verify tokens with",
            ));
        };
        let token =
            std::str::from_utf8(token).map_err(|_| unauthorized("the token is malformed"))?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("the token is malformed"))?;
        if header.alg != Algorithm::ES256 {
            return Err(unauthorized(
                "the token's algorithm is not accepted (ES256 only)",
            ));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| jwt.keys.get(kid))
            .ok_or_else(|| unauthorized("the token is signed with an unknown key"))?;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, key, &jwt.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                unauthorized(match e.kind() {
                    K::ExpiredSignature => "the token has expired",
                    K::ImmatureSignature => "the token is not valid yet",
                    K::InvalidAudience => "the token is for another audience",
                    K::InvalidIssuer => "the token is from another issuer",
                    K::InvalidSignature => "the token's signature does not verify",
                    K::InvalidAlgorithm => "the token's algorithm is not accepted (ES256 only)",
                    K::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is malformed",
                })
            })?;
        let c = data.claims;
        let consumer =
            HeaderValue::from_str(&c.sub).map_err(|_| unauthorized("the token is malformed"))?;
        Ok(Verified {
            caller: Caller {
                consumer,
                key_type: c.key_type,
            },
            nbf: c.nbf,
            exp: c.exp,
            scopes: c.scope.split_whitespace().map(str::to_owned).collect(),
        })
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
            scopes: a.scopes.clone(),
        })
    }
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

/// `target` (a path and query) with the values of query parameter `name` replaced by
/// `[redacted]`, when it has any: an API key sent in the query never reaches a log line or
/// a span.
pub fn redact_query(target: &str, name: &str) -> Option<String> {
    let (path, query) = target.split_once('?')?;
    let named = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k) == name;
    if !query.split('&').any(named) {
        return None;
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            if named(pair) {
                format!("{name}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    Some(format!("{path}?{}", query.join("&")))
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(AUTHORIZATION)?.as_bytes();
    (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
}

fn check_environment(sec: &SecurityRuntime, key_type: KeyType) -> Result<(), ProxyError> {
    if key_type.accepted_by(sec.gateway_type) {
        return Ok(());
    }
    Err(forbidden(match key_type {
        KeyType::Production => "production credentials cannot be used on a sandbox gateway",
        KeyType::Sandbox => "sandbox credentials cannot be used on a production gateway",
    }))
}

/// Checks the caller's credentials for a route; the error says why, never echoing them.
pub fn authenticate(
    sec: &SecurityRuntime,
    auth: &Auth,
    headers: &HeaderMap,
    query: Option<&str>,
    now_secs: u64,
) -> Result<Caller, ProxyError> {
    if let Some(key) = find_key(auth, headers, query).filter(|_| auth.mode.api_key()) {
        let hash: [u8; 32] = Sha256::digest(key).into();
        // A consumer name that cannot be a header value is refused like an unknown key.
        // (Copied: cheaper than sharing the arena, whose count would be one more cache
        // line written per request.)
        let found = sec
            .api_keys
            .find(&hash)
            .and_then(|k| HeaderValue::from_bytes(k.consumer()).ok().map(|c| (k, c)));
        let Some((entry, consumer)) = found else {
            return Err(unauthorized(
                "the API key is not valid (unknown or revoked)",
            ));
        };
        if entry.expires_at().is_some_and(|t| now_secs >= t) {
            return Err(unauthorized("the API key has expired"));
        }
        check_environment(sec, entry.key_type())?;
        if !entry.apis().iter().any(|a| **a == *auth.api) {
            return Err(forbidden("the consumer is not subscribed to this API"));
        }
        return Ok(Caller {
            consumer,
            key_type: entry.key_type(),
        });
    }
    if let Some(token) = bearer(headers).filter(|_| auth.mode.jwt()) {
        let v = sec.verify_jwt(token, now_secs)?;
        check_environment(sec, v.caller.key_type)?;
        // The snapshot says who is subscribed now, not the token (issued up to an hour
        // ago): a deleted, blocked or unsubscribed consumer's token opens nothing.
        if !sec.subscribed(&v.caller.consumer, &auth.api) {
            return Err(forbidden("the consumer is not subscribed to this API"));
        }
        if !auth.scopes.iter().all(|s| v.scopes.contains(s)) {
            return Err(forbidden("the token lacks a scope this operation requires"));
        }
        return Ok(v.caller.clone());
    }
    Err(unauthorized(match auth.mode {
        AuthMode::Jwt => "this API needs a token: send `Authorization: Bearer <access token>`",
        AuthMode::Any => {
            "this API needs credentials: an API key or `Authorization: Bearer <access token>`"
        }
        _ => {
            "this API needs credentials: send an API key in the `apikey` header (or the API's configured header)"
        }
    }))
}

/// Removes what the client sent that only the gateway may set, and the credential itself
/// (the upstream has no use for it), then says who called.
pub fn forward_identity(auth: &Auth, caller: &Caller, headers: &mut HeaderMap) {
    headers.remove(&auth.header);
    if auth.mode.jwt() {
        headers.remove(AUTHORIZATION);
    }
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
            ]
            .into(),
            jwt: None,
            tiers: vec![],
            consumers: Default::default(),
        })
    }

    fn auth(api: &str) -> Auth {
        Auth {
            api: api.into(),
            mode: AuthMode::ApiKey,
            header: HeaderName::from_static("apikey"),
            query: Some("api_key".into()),
            scopes: vec![],
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
    fn query_keys_are_redacted_for_logs() {
        assert_eq!(
            redact_query("/a/x?q=1&api_key=pk_secret&z", "api_key").as_deref(),
            Some("/a/x?q=1&api_key=[redacted]&z")
        );
        assert_eq!(redact_query("/a/x?q=1", "api_key"), None);
        assert_eq!(redact_query("/a/x", "api_key"), None);
        assert_eq!(redact_query("/a?api_keys=1", "api_key"), None);
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

    mod jwt {
        use super::*;
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use jsonwebtoken::{EncodingKey, Header};
        use portico_model::{JwtKey, JwtSettings};

        /// jsonwebtoken checks `exp` and `nbf` against the system clock: use it.
        fn now() -> u64 {
            crate::clock::unix_secs()
        }

        /// A real P-256 key: (PKCS#8 DER, public key as the Snapshot carries it).
        fn key(kid: &str) -> (Vec<u8>, JwtKey) {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .unwrap_or_else(|_| panic!("keygen"));
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap_or_else(|_| panic!("key"));
            let p = pair.public_key().as_ref();
            (
                pkcs8.as_ref().to_vec(),
                JwtKey {
                    kid: kid.into(),
                    x: B64.encode(&p[1..33]),
                    y: B64.encode(&p[33..65]),
                },
            )
        }

        fn claims() -> AccessClaims {
            AccessClaims {
                iss: "portico".into(),
                aud: "portico-gateways".into(),
                sub: "acme".into(),
                iat: now(),
                nbf: now(),
                exp: now() + 3600,
                jti: "j1".into(),
                client_id: "cl".into(),
                key_type: KeyType::Sandbox,
                scope: "read write".into(),
                apis: vec!["pets-v1".into()],
                user: None,
            }
        }

        fn sign(der: &[u8], kid: &str, c: &AccessClaims) -> String {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid.into());
            jsonwebtoken::encode(&h, c, &EncodingKey::from_ec_der(der))
                .unwrap_or_else(|e| panic!("{e}"))
        }

        fn gateway(kind: GatewayKind, keys: Vec<JwtKey>) -> SecurityRuntime {
            gateway_with(kind, keys, &["pets-v1"])
        }

        /// A gateway where consumer `acme` is subscribed to `apis`.
        fn gateway_with(kind: GatewayKind, keys: Vec<JwtKey>, apis: &[&str]) -> SecurityRuntime {
            SecurityRuntime::compile(&Security {
                gateway_type: kind,
                api_keys: Default::default(),
                jwt: Some(JwtSettings {
                    issuer: "portico".into(),
                    audience: "portico-gateways".into(),
                    keys,
                }),
                tiers: vec![],
                consumers: vec![portico_model::ConsumerLimits {
                    name: "acme".into(),
                    apis: apis.iter().map(|a| (*a).to_owned()).collect(),
                    ..Default::default()
                }]
                .into(),
            })
        }

        #[test]
        fn the_snapshot_decides_subscriptions_not_the_tokens_claim() {
            let (der, public) = key("k1");
            // The token says `pets-v1`; the gateway's snapshot no longer lists the
            // subscription (unsubscribed, deleted or blocked since the token was issued).
            let t = sign(&der, "k1", &claims());
            for apis in [&[][..], &["other-v1"][..]] {
                let gw = gateway_with(GatewayKind::Hybrid, vec![public.clone()], apis);
                let (k, why) = reason(call(&gw, &route(&[]), &t));
                assert_eq!(k, ErrorKind::Forbidden, "{apis:?}");
                assert!(why.contains("not subscribed"), "{why}");
            }
            // A subscription made after the token was issued counts too.
            let mut c = claims();
            c.apis = vec![];
            let t = sign(&der, "k1", &c);
            let gw = gateway(GatewayKind::Hybrid, vec![public]);
            assert!(call(&gw, &route(&[]), &t).is_ok());
        }

        fn route(scopes: &[&str]) -> Auth {
            Auth {
                api: "pets-v1".into(),
                mode: AuthMode::Jwt,
                header: HeaderName::from_static("apikey"),
                query: None,
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            }
        }

        fn call(s: &SecurityRuntime, a: &Auth, token: &str) -> Result<Caller, ProxyError> {
            let mut h = HeaderMap::new();
            h.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .unwrap_or(HeaderValue::from_static("x")),
            );
            authenticate(s, a, &h, None, now() + 10)
        }

        fn reason(r: Result<Caller, ProxyError>) -> (ErrorKind, String) {
            let e = r.err().unwrap_or_else(|| panic!("accepted"));
            (e.kind, e.detail.into_owned())
        }

        #[test]
        fn a_good_token_passes_and_its_environment_counts() {
            let (der, public) = key("k1");
            let t = sign(&der, "k1", &claims());
            let c = call(
                &gateway(GatewayKind::Sandbox, vec![public.clone()]),
                &route(&["read"]),
                &t,
            )
            .unwrap_or_else(|e| panic!("{}", e.detail));
            assert_eq!(c.consumer, "acme");
            assert_eq!(c.key_type, KeyType::Sandbox);
            assert!(
                call(
                    &gateway(GatewayKind::Hybrid, vec![public.clone()]),
                    &route(&[]),
                    &t
                )
                .is_ok()
            );
            let (k, why) = reason(call(
                &gateway(GatewayKind::Production, vec![public]),
                &route(&[]),
                &t,
            ));
            assert_eq!(k, ErrorKind::Forbidden);
            assert!(why.contains("sandbox credentials"), "{why}");
        }

        #[test]
        fn bad_tokens_are_refused_with_their_reason() {
            let (der, public) = key("k1");
            let (other_der, _) = key("k1");
            let gw = gateway(GatewayKind::Hybrid, vec![public]);
            let r = route(&[]);
            let mut expired = claims();
            expired.exp = now() - 3600;
            let mut early = claims();
            early.nbf = now() + 3600;
            let mut aud = claims();
            aud.aud = "someone-else".into();
            let mut iss = claims();
            iss.iss = "evil".into();
            let cases: Vec<(String, &str)> = vec![
                (sign(&der, "k1", &expired), "expired"),
                (sign(&der, "k1", &early), "not valid yet"),
                (sign(&der, "k1", &aud), "another audience"),
                (sign(&der, "k1", &iss), "another issuer"),
                (
                    sign(&other_der, "k1", &claims()),
                    "signature does not verify",
                ),
                (sign(&der, "k9", &claims()), "unknown key"),
                ("not.a.token".into(), "malformed"),
                ("%%%".into(), "malformed"),
            ];
            for (token, want) in cases {
                let (k, why) = reason(call(&gw, &r, &token));
                assert_eq!(k, ErrorKind::Unauthorized, "{want}");
                assert!(why.contains(want), "{want}: {why}");
                assert!(!why.contains(&token), "the reason echoes the token");
            }
            // `alg: none` and HS256 (with the public key as an HMAC secret) are refused.
            let body = B64.encode(serde_json::to_vec(&claims()).unwrap_or_default());
            let none = format!(
                "{}.{body}.",
                B64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#)
            );
            let (_, why) = reason(call(&gw, &r, &none));
            assert!(
                why.contains("malformed") || why.contains("algorithm"),
                "{why}"
            );
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k1".into());
            let hs = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(b"k1"))
                .unwrap_or_default();
            let (_, why) = reason(call(&gw, &r, &hs));
            assert!(why.contains("algorithm"), "{why}");
        }

        #[test]
        fn subscriptions_and_scopes_are_checked() {
            let (der, public) = key("k1");
            let gw = gateway(GatewayKind::Hybrid, vec![public]);
            let t = sign(&der, "k1", &claims());
            let (k, why) = reason(call(&gw, &route(&["admin"]), &t));
            assert_eq!(k, ErrorKind::Forbidden);
            assert!(why.contains("scope"), "{why}");
            let mut other = route(&[]);
            other.api = "other-v1".into();
            let (k, why) = reason(call(&gw, &other, &t));
            assert_eq!(k, ErrorKind::Forbidden);
            assert!(why.contains("not subscribed"), "{why}");
            // Verified once, then served from the cache: still checked per route.
            assert!(call(&gw, &route(&["read", "write"]), &t).is_ok());
            assert!(call(&gw, &route(&["read", "write"]), &t).is_ok());
        }

        #[test]
        fn rotation_keeps_old_tokens_valid_while_their_key_is_published() {
            let (old_der, old) = key("old");
            let (new_der, new) = key("new");
            let both = gateway(GatewayKind::Hybrid, vec![old.clone(), new]);
            assert!(call(&both, &route(&[]), &sign(&old_der, "old", &claims())).is_ok());
            assert!(call(&both, &route(&[]), &sign(&new_der, "new", &claims())).is_ok());
            let only_old = gateway(GatewayKind::Hybrid, vec![old]);
            let (_, why) = reason(call(
                &only_old,
                &route(&[]),
                &sign(&new_der, "new", &claims()),
            ));
            assert!(why.contains("unknown key"), "{why}");
        }
    }
}
