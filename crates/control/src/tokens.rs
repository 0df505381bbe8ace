//! The token service: ES256 signing keys (generated here, private halves sealed), access
//! tokens for the client-credentials grant, and the JWKS that publishes the public keys.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portico_model::{AccessClaims, KeyType};

use crate::error::Error;
use crate::secrets::{self, Sealer};
use crate::store::{AUDIENCE, ISSUER, SigningKeyRecord, now};

/// Lifetime of a token from `/oauth2/token`.
pub const TOKEN_LIFETIME: i64 = 3600;

/// Makes a new P-256 key pair; the private half sealed.
pub fn generate_key(sealer: &Sealer) -> Result<SigningKeyRecord, Error> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| Error::Internal("cannot generate a signing key".into()))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| Error::Internal("cannot read a generated signing key".into()))?;
    let public = pair.public_key().as_ref();
    // Uncompressed point: 0x04 || X || Y.
    if public.len() != 65 || public[0] != 4 {
        return Err(Error::Internal("unexpected public key encoding".into()));
    }
    let kid = format!("k{}", &secrets::hash(&B64.encode(public))[..16]);
    Ok(SigningKeyRecord {
        kid,
        private_sealed: sealer.seal(&B64.encode(pkcs8.as_ref()))?,
        x: B64.encode(&public[1..33]),
        y: B64.encode(&public[33..65]),
        created_at: now(),
        retired_at: None,
    })
}

/// What a token is for.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The consumer.
    pub consumer: String,
    /// The client it is issued to.
    pub client_id: String,
    /// Production or sandbox.
    pub key_type: KeyType,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Subscribed APIs.
    pub apis: Vec<String>,
    /// Seconds until it expires (negative: already expired, for testing clients).
    pub expires_in: i64,
    /// Seconds until it becomes valid.
    pub not_before_in: i64,
    /// The person the application acts for (password grant).
    pub user: Option<String>,
}

/// Signs an access token with `key`.
pub fn sign(sealer: &Sealer, key: &SigningKeyRecord, g: &Grant) -> Result<String, Error> {
    let der = B64
        .decode(sealer.open(&key.private_sealed)?)
        .map_err(|_| Error::Internal("a sealed signing key is not base64".into()))?;
    let t = now();
    let claims = AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: g.consumer.clone(),
        iat: t.max(0) as u64,
        nbf: (t + g.not_before_in).max(0) as u64,
        exp: (t + g.expires_in).max(0) as u64,
        jti: secrets::generate("")[..22].to_owned(),
        client_id: g.client_id.clone(),
        key_type: g.key_type,
        scope: g.scopes.join(" "),
        apis: g.apis.clone(),
        user: g.user.clone(),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&der))
        .map_err(|e| Error::Internal(format!("cannot sign a token: {e}")))
}

/// The JWKS document for `keys`.
pub fn jwks(keys: &[SigningKeyRecord]) -> serde_json::Value {
    serde_json::json!({
        "keys": keys.iter().map(|k| serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": k.kid, "x": k.x, "y": k.y,
        })).collect::<Vec<_>>()
    })
}

/// Hashes a person's password with Argon2id and a random salt (slow on purpose: run it off
/// the event loop).
pub fn hash_password(password: &str) -> Result<String, Error> {
    use argon2::password_hash::PasswordHasher as _;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash a password: {e}")))
}

/// Argon2 verifications run so far (the password grant does one for every attempt, known
/// user or not; tests read it to see that).
pub static VERIFICATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Checks a password against its Argon2 hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier as _;
    use argon2::password_hash::phc::PasswordHash;
    VERIFICATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Does the work of [`verify_password`] for a user that does not exist, so that an unknown
/// name costs what a known one does: a verification against a hash of a random password
/// made once with the same parameters. Always false.
pub fn verify_unknown_user(password: &str) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password(&secrets::generate("")).unwrap_or_default());
    verify_password(password, hash);
    false
}
