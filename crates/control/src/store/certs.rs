//! Uploaded certificates: the chain in clear, the private key sealed. Gateways with an
//! HTTPS listener get the ones for the hosts they serve, in their snapshots.

use serde::Serialize;

use super::{Moved, Store, all_gateway_ids, change_one, from_json, key, now, to_json};
use crate::access::KindId;
use crate::error::Error;

/// An uploaded certificate, without its key.
#[derive(Clone, Debug, Serialize)]
pub struct CertificateRecord {
    /// Name.
    pub name: String,
    /// Host names it is for (its DNS names).
    pub hosts: Vec<String>,
    /// Unix seconds after which it is no longer valid.
    pub not_after: i64,
    /// Unix seconds.
    pub created_at: i64,
}

impl Store {
    /// Every uploaded certificate.
    pub async fn certificates(&self) -> Result<Vec<CertificateRecord>, Error> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT name, hosts, not_after, created_at FROM certificates ORDER BY name_key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(name, hosts, not_after, created_at)| {
                Ok(CertificateRecord {
                    name,
                    hosts: from_json(&hosts)?,
                    not_after,
                    created_at,
                })
            })
            .collect()
    }

    /// Stores a checked certificate; gateways serving its hosts recompile.
    pub async fn add_certificate(
        &self,
        name: &str,
        hosts: &[String],
        cert_pem: &str,
        key_sealed: &str,
        not_after: i64,
    ) -> Result<(CertificateRecord, Moved), Error> {
        let mut tx = self.write().await?;
        tx.event("upload", KindId::Certificate, name);
        let t = now();
        let q = sqlx::query(
            "INSERT INTO certificates (name_key, name, hosts, cert_pem, key_sealed, not_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name_key) DO NOTHING",
        )
        .bind(key(name))
        .bind(name)
        .bind(to_json(&hosts)?)
        .bind(cert_pem)
        .bind(key_sealed)
        .bind(not_after)
        .bind(t);
        change_one(&mut tx, q, || {
            Error::Conflict(format!(
                "a certificate named `{name}` exists already: delete it first, or pick another name"
            ))
        })
        .await?;
        let all = all_gateway_ids(&mut tx).await?;
        tx.recompile(&all).await?;
        let moved = tx.commit().await?;
        Ok((
            CertificateRecord {
                name: name.to_owned(),
                hosts: hosts.to_vec(),
                not_after,
                created_at: t,
            },
            moved,
        ))
    }

    /// Deletes a certificate.
    pub async fn delete_certificate(&self, name: &str) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event("delete", KindId::Certificate, name);
        change_one(
            &mut tx,
            sqlx::query("DELETE FROM certificates WHERE name_key = $1").bind(key(name)),
            || Error::not_found(crate::access::KindId::Certificate, name),
        )
        .await?;
        let all = all_gateway_ids(&mut tx).await?;
        tx.recompile(&all).await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }
}
