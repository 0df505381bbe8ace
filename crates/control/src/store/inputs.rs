//! What every gateway's snapshot gets alike (services, the token signing keys, uploaded and
//! automatic certificates, tiers), read in one statement: a recompile inside a write holds
//! the writer lock, and on PostgreSQL each statement is a round trip.

use portico_model::{JwtKey, JwtSettings, Service, Tier, TlsCertificate};
use sqlx::AnyConnection;

use super::keys::{AUDIENCE, ISSUER, TOKEN_MAX_LIFETIME};
use super::{from_json, now};
use crate::error::Error;

/// The shared inputs of a snapshot.
pub(super) struct Shared {
    /// Every service.
    pub services: Vec<Service>,
    /// The keys tokens are verified with; none before the first key exists.
    pub jwt: Option<JwtSettings>,
    /// Uploaded certificates with their keys opened (none without a sealer).
    pub certificates: Vec<TlsCertificate>,
    /// Valid automatic certificates with their keys opened (none without a sealer).
    pub acme_certificates: Vec<TlsCertificate>,
    /// Every tier.
    pub tiers: Vec<Tier>,
}

/// One row per object, tagged with its part: `s` a service, `k` a signing key (kid, x, y),
/// `c` an uploaded certificate (hosts, chain, sealed key), `a` an automatic one (host,
/// chain, sealed key), `t` a tier. Each part in the order the snapshot lists it.
const SHARED: &str = "\
    SELECT 's' AS part, spec AS a, NULL AS b, NULL AS c, '' AS ord FROM services \
    UNION ALL SELECT 'k', kid, x, y, kid FROM signing_keys WHERE retired_at IS NULL OR retired_at > $1 \
    UNION ALL SELECT 'c', hosts, cert_pem, key_sealed, name_key FROM certificates \
    UNION ALL SELECT 'a', host, cert_pem, key_sealed, host FROM acme_hosts \
        WHERE cert_pem IS NOT NULL AND key_sealed IS NOT NULL AND not_after > $2 \
    UNION ALL SELECT 't', spec, NULL, NULL, '' FROM tiers \
    ORDER BY 1, 5";

/// Reads the shared inputs; `sealer` opens certificate keys (certificates are left out
/// without it).
pub(super) async fn shared(
    conn: &mut AnyConnection,
    sealer: Option<&crate::secrets::Sealer>,
) -> Result<Shared, Error> {
    type Row = (String, String, Option<String>, Option<String>, String);
    let t = now();
    let rows: Vec<Row> = sqlx::query_as(SHARED)
        .bind(t - TOKEN_MAX_LIFETIME)
        .bind(t)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Shared {
        services: Vec::new(),
        jwt: None,
        certificates: Vec::new(),
        acme_certificates: Vec::new(),
        tiers: Vec::new(),
    };
    let mut keys = Vec::new();
    for (part, a, b, c, _) in rows {
        let (b, c) = (b.unwrap_or_default(), c.unwrap_or_default());
        match part.as_str() {
            "s" => out.services.push(from_json(&a)?),
            "k" => keys.push(JwtKey { kid: a, x: b, y: c }),
            "c" | "a" => {
                let Some(sealer) = sealer else { continue };
                let certificate = TlsCertificate {
                    hosts: if part == "c" { from_json(&a)? } else { vec![a] },
                    cert_pem: Some(b),
                    key_pem: Some(sealer.open(&c)?),
                    ..Default::default()
                };
                if part == "c" {
                    out.certificates.push(certificate);
                } else {
                    out.acme_certificates.push(certificate);
                }
            }
            "t" => out.tiers.push(from_json(&a)?),
            other => {
                return Err(Error::Internal(format!(
                    "the snapshot inputs query answered a part `{other}`"
                )));
            }
        }
    }
    if !keys.is_empty() {
        out.jwt = Some(JwtSettings {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            keys,
        });
    }
    Ok(out)
}
