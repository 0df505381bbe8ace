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

/// What one gateway's snapshot is made of besides the shared inputs.
pub(super) struct ForGateway {
    /// Its definition.
    pub spec: String,
    /// Its stored snapshot's version and hash, when it has one.
    pub current: Option<(i64, String)>,
    /// The route collisions its stored snapshot has (JSON), when it has one.
    pub warnings: Option<String>,
    /// The APIs deployed on it: id, lifecycle, revision, the revision's definition.
    pub deployed: Vec<(String, String, i64, String)>,
    /// The raw routes placed on it (definitions).
    pub routes: Vec<String>,
    /// The API keys of consumers subscribed to APIs deployed on it.
    pub keys: Vec<super::consumers::KeyRow>,
    /// The app versions deployed on it.
    pub apps: Vec<(String, i64, String, i64, String)>,
    /// The subscriptions to APIs deployed on it, with their tiers.
    pub limits: Vec<(String, String, Option<String>)>,
}

/// One row per object of a gateway, tagged with its part (columns `a` to `e` as the part
/// has them; integers as text), each part in the order the snapshot lists it.
const FOR_GATEWAY: &str = "\
    SELECT 'g' AS part, g.spec AS a, CAST(s.version AS TEXT) AS b, s.hash AS c, s.warnings AS d, \
        NULL AS e, '' AS o1, '' AS o2 \
        FROM gateways g LEFT JOIN snapshots s ON s.gateway_id = g.id WHERE g.id = $1 \
    UNION ALL SELECT 'd', a.api_key, a.lifecycle, CAST(d.revision AS TEXT), r.spec, NULL, a.api_key, '' \
        FROM deployments d JOIN apis a ON a.id = d.api_id \
        JOIN revisions r ON r.api_id = d.api_id AND r.number = d.revision WHERE d.gateway_id = $1 \
    UNION ALL SELECT 'r', r.spec, NULL, NULL, NULL, NULL, r.name_key, '' \
        FROM routes r JOIN route_gateways rg ON rg.route_id = r.id \
        WHERE rg.gateway_key = (SELECT name_key FROM gateways WHERE id = $1) \
    UNION ALL SELECT 'k', c.secret_hash, co.spec, c.key_type, a.api_key, CAST(c.expires_at AS TEXT), \
        c.secret_hash, a.api_key \
        FROM credentials c JOIN consumers co ON co.id = c.consumer_id \
        JOIN subscriptions s ON s.consumer_id = c.consumer_id \
        JOIN deployments d ON d.api_id = s.api_id AND d.gateway_id = $1 \
        JOIN apis a ON a.id = s.api_id \
        WHERE c.kind = 'api_key' AND c.revoked_at IS NULL \
    UNION ALL SELECT 'p', a.spec, CAST(d.version AS TEXT), v.files, CAST(v.created_at AS TEXT), d.host, \
        a.slug, d.host \
        FROM app_deployments d JOIN apps a ON a.id = d.app_id \
        JOIN app_versions v ON v.app_id = d.app_id AND v.number = d.version WHERE d.gateway_id = $1 \
    UNION ALL SELECT 'l', co.spec, a.api_key, s.tier, NULL, NULL, co.name_key, a.api_key \
        FROM subscriptions s JOIN consumers co ON co.id = s.consumer_id \
        JOIN apis a ON a.id = s.api_id \
        JOIN deployments d ON d.api_id = s.api_id AND d.gateway_id = $1 \
    ORDER BY 1, 7, 8";

/// Reads what gateway `gid`'s snapshot is made of, in one statement.
pub(super) async fn for_gateway(conn: &mut AnyConnection, gid: i64) -> Result<ForGateway, Error> {
    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(FOR_GATEWAY)
        .bind(gid)
        .fetch_all(&mut *conn)
        .await?;
    let int = |v: Option<String>| -> Result<i64, Error> {
        v.as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| Error::Internal(format!("a stored number reads `{v:?}`")))
    };
    let text = |v: Option<String>| v.unwrap_or_default();
    let mut spec = None;
    let mut out = ForGateway {
        spec: String::new(),
        current: None,
        warnings: None,
        deployed: Vec::new(),
        routes: Vec::new(),
        keys: Vec::new(),
        apps: Vec::new(),
        limits: Vec::new(),
    };
    for (part, a, b, c, d, e, _, _) in rows {
        match part.as_str() {
            "g" => {
                spec = a;
                out.current = match (b, c) {
                    (Some(v), Some(hash)) => Some((int(Some(v))?, hash)),
                    _ => None,
                };
                out.warnings = d;
            }
            "d" => out.deployed.push((text(a), text(b), int(c)?, text(d))),
            "r" => out.routes.push(text(a)),
            "k" => out.keys.push((
                text(a),
                text(b),
                text(c),
                text(d),
                e.map(|v| int(Some(v))).transpose()?,
            )),
            "p" => out.apps.push((text(a), int(b)?, text(c), int(d)?, text(e))),
            "l" => out.limits.push((text(a), text(b), c)),
            other => {
                return Err(Error::Internal(format!(
                    "the gateway inputs query answered a part `{other}`"
                )));
            }
        }
    }
    out.spec = spec.ok_or_else(|| Error::Internal(format!("gateway {gid} is gone")))?;
    Ok(out)
}
