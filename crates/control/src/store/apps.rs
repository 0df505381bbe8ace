//! Hosted apps: apps, their immutable versions (file manifests), where versions are
//! deployed, and the content-addressed files. Every write that changes what a gateway
//! serves recompiles it in the same transaction. File bytes live on disk
//! ([`crate::blobs`]); this module keeps their rows and decides which are unreferenced.

use std::collections::{BTreeMap, BTreeSet};

use portico_model::{AppFile, AppSpec, FieldError};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Meta, Moved, Store, change_one, from_json, key, now, to_json};
use crate::access::KindId;
use crate::error::Error;

/// A stored app.
#[derive(Clone, Debug, Serialize)]
pub struct AppRecord {
    /// Its settings.
    pub spec: AppSpec,
    /// Bookkeeping.
    #[serde(flatten)]
    pub meta: Meta,
}

/// An immutable version of an app.
#[derive(Clone, Debug, Serialize)]
pub struct AppVersionRecord {
    /// The app's slug.
    pub app: String,
    /// Number, from 1 per app.
    pub number: u32,
    /// `draft` or `published`.
    pub state: &'static str,
    /// What the author said about it.
    pub note: String,
    /// Files.
    pub file_count: i64,
    /// Bytes, all files.
    pub size: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Gateways (and hosts) running it.
    pub deployed_on: Vec<String>,
}

/// Version V of an app on gateway G (on a host, or the gateway's apps host).
#[derive(Clone, Debug, Serialize)]
pub struct AppDeploymentRecord {
    /// The app's slug.
    pub app: String,
    /// The gateway's name.
    pub gateway: String,
    /// The custom domain; none for `apps.<gateway host>/<slug>`.
    pub host: Option<String>,
    /// The version running.
    pub version: u32,
    /// The version it replaced (what a rollback goes back to).
    pub previous: Option<u32>,
    /// The version running is a draft (not published).
    pub draft: bool,
    /// Unix seconds.
    pub deployed_at: i64,
}

/// An app version deployed to a gateway, for its snapshot.
#[derive(Clone, Debug)]
pub(super) struct DeployedApp {
    pub spec: AppSpec,
    pub version: u32,
    pub files: BTreeMap<String, AppFile>,
    pub created_at: i64,
    pub host: Option<String>,
}

pub(super) async fn for_snapshot(
    conn: &mut AnyConnection,
    gid: i64,
) -> Result<Vec<DeployedApp>, Error> {
    let rows: Vec<(String, i64, String, i64, String)> = sqlx::query_as(
        "SELECT a.spec, d.version, v.files, v.created_at, d.host FROM app_deployments d \
         JOIN apps a ON a.id = d.app_id \
         JOIN app_versions v ON v.app_id = d.app_id AND v.number = d.version \
         WHERE d.gateway_id = $1 ORDER BY a.slug, d.host",
    )
    .bind(gid)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(spec, version, files, created_at, host)| {
            Ok(DeployedApp {
                spec: from_json(&spec)?,
                version: version as u32,
                files: from_json(&files)?,
                created_at,
                host: (!host.is_empty()).then_some(host),
            })
        })
        .collect()
}

async fn app_id(conn: &mut AnyConnection, slug: &str) -> Result<(i64, AppSpec), Error> {
    let row: Option<(i64, String)> = sqlx::query_as("SELECT id, spec FROM apps WHERE slug = $1")
        .bind(key(slug))
        .fetch_optional(&mut *conn)
        .await?;
    let (id, spec) = row.ok_or_else(|| Error::not_found(crate::access::KindId::App, slug))?;
    Ok((id, from_json(&spec)?))
}

async fn gateway_id(conn: &mut AnyConnection, name: &str) -> Result<i64, Error> {
    sqlx::query_scalar("SELECT id FROM gateways WHERE name_key = $1")
        .bind(key(name))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found(crate::access::KindId::Gateway, name))
}

async fn app_gateway_ids(conn: &mut AnyConnection, app: i64) -> Result<Vec<i64>, Error> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT gateway_id FROM app_deployments WHERE app_id = $1")
            .bind(app)
            .fetch_all(&mut *conn)
            .await?,
    )
}

fn app_record(r: &sqlx::any::AnyRow) -> Result<AppRecord, Error> {
    Ok(AppRecord {
        spec: from_json(&r.try_get::<String, _>(0)?)?,
        meta: Meta {
            version: r.try_get(1)?,
            created_at: r.try_get(2)?,
            updated_at: r.try_get(3)?,
        },
    })
}

impl super::Keyed for AppRecord {
    fn key(&self) -> String {
        key(&self.spec.slug)
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
}

impl Store {
    /// Every app.
    pub async fn apps(&self, page: &crate::page::Page) -> Result<Vec<AppRecord>, Error> {
        super::page_rows(&self.pool, KindId::App, super::SPEC_COLUMNS, page)
            .await?
            .iter()
            .map(app_record)
            .collect()
    }

    /// One app.
    pub async fn app(&self, slug: &str) -> Result<AppRecord, Error> {
        app_record(&super::row_of(&self.pool, KindId::App, super::SPEC_COLUMNS, slug).await?)
    }

    /// Creates an app.
    pub async fn create_app(&self, spec: &AppSpec) -> Result<AppRecord, Error> {
        let mut tx = self.write().await?;
        tx.insert(crate::access::KindId::App, &spec.slug, spec)
            .await?;
        tx.commit().await?;
        self.app(&spec.slug).await
    }

    /// Changes an app's settings (not its slug); the gateways running it recompile.
    pub async fn update_app(
        &self,
        slug: &str,
        spec: &AppSpec,
        expected: i64,
    ) -> Result<AppRecord, Error> {
        if key(&spec.slug) != key(slug) {
            return Err(Error::Invalid(vec![FieldError::new(
                "slug",
                "an app's slug cannot change: create a new app",
            )]));
        }
        let mut tx = self.write().await?;
        let id = tx
            .update(crate::access::KindId::App, slug, spec, expected)
            .await?;
        let ids = app_gateway_ids(&mut tx, id).await?;
        tx.recompile(&ids).await?;
        tx.commit().await?;
        self.app(slug).await
    }

    /// Deletes an app that runs nowhere; answers the hashes no version references any more.
    pub async fn delete_app(&self, slug: &str) -> Result<Vec<String>, Error> {
        let mut tx = self.write().await?;
        let (id, _) = app_id(&mut tx, slug).await?;
        if !app_gateway_ids(&mut tx, id).await?.is_empty() {
            return Err(Error::Conflict(format!(
                "app `{slug}` is deployed: undeploy it from every gateway first"
            )));
        }
        sqlx::query("DELETE FROM app_versions WHERE app_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.delete(crate::access::KindId::App, slug).await?;
        let orphans = orphan_blobs(&mut tx).await?;
        tx.commit().await?;
        Ok(orphans)
    }

    /// The hashes of `hashes` that are not stored yet. The stored ones count as fresh again:
    /// a version about to use them must not lose them to a sweep.
    pub async fn missing_blobs(&self, hashes: &[String]) -> Result<Vec<String>, Error> {
        let _w = self.write.lock().await;
        let mut missing = Vec::new();
        let t = now();
        for h in hashes.iter().collect::<BTreeSet<_>>() {
            let touched = sqlx::query("UPDATE blobs SET created_at = $2 WHERE hash = $1")
                .bind(h)
                .bind(t)
                .execute(&self.pool)
                .await?;
            if touched.rows_affected() == 0 {
                missing.push(h.clone());
            }
        }
        Ok(missing)
    }

    /// Records a stored file (or marks a stored one fresh).
    pub async fn add_blob(&self, hash: &str, size: u64) -> Result<(), Error> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO blobs (hash, size, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (hash) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(hash)
        .bind(size as i64)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a file is stored.
    pub async fn has_blob(&self, hash: &str) -> Result<bool, Error> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT size FROM blobs WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Makes a new version from files already stored; older versions beyond the app's
    /// `keep_versions` that are neither deployed nor published are deleted. Answers the
    /// version and the hashes no version references any more (to delete from disk).
    pub async fn create_app_version(
        &self,
        slug: &str,
        files: &BTreeMap<String, AppFile>,
        note: &str,
    ) -> Result<(AppVersionRecord, Vec<String>), Error> {
        let mut tx = self.write().await?;
        tx.event("create_version", KindId::App, slug);
        let (id, spec) = app_id(&mut tx, slug).await?;
        let problems = portico_model::app::validate_files(files, &spec, "files");
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        let mut missing = Vec::new();
        for f in files.values() {
            let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE hash = $1")
                .bind(&f.hash)
                .fetch_optional(&mut *tx)
                .await?;
            match size {
                Some(s) if s as u64 == f.size => {}
                Some(_) => {
                    return Err(Error::Invalid(vec![FieldError::new(
                        "files",
                        format!("file {} is stored with another size than given", f.hash),
                    )]));
                }
                None => missing.push(f.hash.clone()),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(Error::Invalid(vec![FieldError::new(
                "files",
                format!(
                    "{} file(s) not uploaded yet (`portico apps upload` sends them; PUT /api/v1/blobs/<hash>): {}",
                    missing.len(),
                    missing.join(", ")
                ),
            )]));
        }
        let number: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM app_versions WHERE app_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let size: u64 = files.values().map(|f| f.size).sum();
        let t = now();
        sqlx::query(
            "INSERT INTO app_versions (app_id, number, files, file_count, size, note, published, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(id)
        .bind(number)
        .bind(to_json(files)?)
        .bind(files.len() as i64)
        .bind(size as i64)
        .bind(note)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        // Retention: the newest `keep_versions`, plus whatever runs or is published.
        sqlx::query(
            "DELETE FROM app_versions WHERE app_id = $1 AND published = 0 \
             AND number NOT IN (SELECT version FROM app_deployments WHERE app_id = $1) \
             AND number NOT IN (SELECT previous FROM app_deployments WHERE app_id = $1 AND previous IS NOT NULL) \
             AND number <= (SELECT MAX(number) FROM app_versions WHERE app_id = $1) - $2",
        )
        .bind(id)
        .bind(i64::from(spec.keep_versions.max(1)))
        .execute(&mut *tx)
        .await?;
        let orphans = orphan_blobs(&mut tx).await?;
        tx.commit().await?;
        Ok((
            AppVersionRecord {
                app: spec.slug,
                number: number as u32,
                state: "draft",
                note: note.to_owned(),
                file_count: files.len() as i64,
                size: size as i64,
                created_at: t,
                deployed_on: Vec::new(),
            },
            orphans,
        ))
    }

    /// An app's versions, newest first.
    pub async fn app_versions(&self, slug: &str) -> Result<Vec<AppVersionRecord>, Error> {
        let mut conn = self.pool.acquire().await?;
        let (id, spec) = app_id(&mut conn, slug).await?;
        let rows: Vec<(i64, String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT number, note, file_count, size, published, created_at FROM app_versions \
             WHERE app_id = $1 ORDER BY number DESC",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let deployments = self.app_deployments(slug).await?;
        Ok(rows
            .into_iter()
            .map(
                |(number, note, file_count, size, published, created_at)| AppVersionRecord {
                    app: spec.slug.clone(),
                    number: number as u32,
                    state: if published != 0 { "published" } else { "draft" },
                    note,
                    file_count,
                    size,
                    created_at,
                    deployed_on: deployments
                        .iter()
                        .filter(|d| d.version == number as u32)
                        .map(|d| match &d.host {
                            Some(h) => format!("{} ({h})", d.gateway),
                            None => d.gateway.clone(),
                        })
                        .collect(),
                },
            )
            .collect())
    }

    /// A version's files.
    pub async fn app_version_files(
        &self,
        slug: &str,
        number: u32,
    ) -> Result<BTreeMap<String, AppFile>, Error> {
        let mut conn = self.pool.acquire().await?;
        let (id, _) = app_id(&mut conn, slug).await?;
        let files: String =
            sqlx::query_scalar("SELECT files FROM app_versions WHERE app_id = $1 AND number = $2")
                .bind(id)
                .bind(i64::from(number))
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| no_version(slug, number))?;
        from_json(&files)
    }

    /// Marks version `number` published (the one before stops being so).
    pub async fn publish_app_version(&self, slug: &str, number: u32) -> Result<(), Error> {
        let mut tx = self.write().await?;
        tx.event(
            "publish_version",
            KindId::App,
            &format!("{slug} version {number}"),
        );
        let (id, _) = app_id(&mut tx, slug).await?;
        ensure_version(&mut tx, id, slug, number).await?;
        sqlx::query("UPDATE app_versions SET published = CASE WHEN number = $2 THEN 1 ELSE 0 END WHERE app_id = $1")
            .bind(id)
            .bind(i64::from(number))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs version `number` of an app on these gateways (on `host`, or by path on each
    /// gateway's apps host). The version before on each is kept for a rollback.
    pub async fn deploy_app(
        &self,
        slug: &str,
        number: u32,
        gateways: &[String],
        host: Option<&str>,
        allow_draft: bool,
    ) -> Result<(Vec<AppDeploymentRecord>, Moved), Error> {
        let mut tx = self.write().await?;
        tx.event(
            "deploy",
            KindId::App,
            &format!("{slug} version {number} to {}", gateways.join(", ")),
        );
        let (id, _) = app_id(&mut tx, slug).await?;
        ensure_version(&mut tx, id, slug, number).await?;
        let published: i64 = sqlx::query_scalar(
            "SELECT published FROM app_versions WHERE app_id = $1 AND number = $2",
        )
        .bind(id)
        .bind(i64::from(number))
        .fetch_one(&mut *tx)
        .await?;
        if published == 0 && !allow_draft {
            // A draft may go anywhere but production without a second thought.
            for g in gateways {
                let spec: Option<String> =
                    sqlx::query_scalar("SELECT spec FROM gateways WHERE name_key = $1")
                        .bind(key(g))
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(spec) = spec else { continue };
                let spec: portico_model::GatewaySpec = from_json(&spec)?;
                if spec.kind == portico_model::GatewayKind::Production {
                    return Err(Error::Conflict(format!(
                        "version {number} of `{slug}` is a draft and `{}` is a production gateway: publish it first (`portico apps publish {slug} {number}`), or deploy it anyway with --allow-draft (`allow_draft: true`)",
                        spec.name
                    )));
                }
            }
        }
        let host = host.map(str::to_ascii_lowercase).unwrap_or_default();
        let t = now();
        let mut gids = Vec::new();
        for g in gateways {
            let gid = gateway_id(&mut tx, g).await?;
            sqlx::query(
                "INSERT INTO app_deployments (app_id, gateway_id, host, version, previous, deployed_at) \
                 VALUES ($1, $2, $3, $4, NULL, $5) \
                 ON CONFLICT (app_id, gateway_id, host) DO UPDATE SET \
                 previous = CASE WHEN app_deployments.version = excluded.version \
                     THEN app_deployments.previous ELSE app_deployments.version END, \
                 version = excluded.version, deployed_at = excluded.deployed_at",
            )
            .bind(id)
            .bind(gid)
            .bind(&host)
            .bind(i64::from(number))
            .bind(t)
            .execute(&mut *tx)
            .await?;
            gids.push(gid);
        }
        tx.recompile(&gids).await?;
        let moved = tx.commit().await?;
        let all = self.app_deployments(slug).await?;
        let mine = all
            .into_iter()
            .filter(|d| {
                gateways.iter().any(|g| key(g) == key(&d.gateway))
                    && d.host.as_deref().unwrap_or("") == host
            })
            .collect();
        Ok((mine, moved))
    }

    /// Switches a gateway back to the version that ran before the last deploy.
    pub async fn rollback_app(
        &self,
        slug: &str,
        gateway: &str,
        host: Option<&str>,
    ) -> Result<(AppDeploymentRecord, Moved), Error> {
        let mut tx = self.write().await?;
        tx.event("rollback", KindId::App, &format!("{slug} on {gateway}"));
        let (id, _) = app_id(&mut tx, slug).await?;
        let gid = gateway_id(&mut tx, gateway).await?;
        let host = host.map(str::to_ascii_lowercase).unwrap_or_default();
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT version, previous FROM app_deployments WHERE app_id = $1 AND gateway_id = $2 AND host = $3",
        )
        .bind(id)
        .bind(gid)
        .bind(&host)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((current, Some(previous))) = row else {
            return Err(Error::Conflict(format!(
                "app `{slug}` has no earlier version on gateway `{gateway}` to go back to"
            )));
        };
        sqlx::query(
            "UPDATE app_deployments SET version = $4, previous = $5, deployed_at = $6 \
             WHERE app_id = $1 AND gateway_id = $2 AND host = $3",
        )
        .bind(id)
        .bind(gid)
        .bind(&host)
        .bind(previous)
        .bind(current)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.recompile(&[gid]).await?;
        let moved = tx.commit().await?;
        let d = self
            .app_deployments(slug)
            .await?
            .into_iter()
            .find(|d| key(&d.gateway) == key(gateway) && d.host.as_deref().unwrap_or("") == host)
            .ok_or_else(|| Error::Internal("the rolled back deployment vanished".into()))?;
        Ok((d, moved))
    }

    /// Stops serving an app on a gateway (on `host`, or by path).
    pub async fn undeploy_app(
        &self,
        slug: &str,
        gateway: &str,
        host: Option<&str>,
    ) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event("undeploy", KindId::App, &format!("{slug} from {gateway}"));
        let (id, _) = app_id(&mut tx, slug).await?;
        let gid = gateway_id(&mut tx, gateway).await?;
        change_one(
            &mut tx,
            sqlx::query(
                "DELETE FROM app_deployments WHERE app_id = $1 AND gateway_id = $2 AND host = $3",
            )
            .bind(id)
            .bind(gid)
            .bind(host.map(str::to_ascii_lowercase).unwrap_or_default()),
            || {
                Error::NotFound(format!(
                    "app `{slug}` is not deployed on gateway `{gateway}`{}",
                    host.map(|h| format!(" for {h}")).unwrap_or_default()
                ))
            },
        )
        .await?;
        tx.recompile(&[gid]).await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }

    /// Forgets the stored files no version references (untouched for an hour); answers
    /// their hashes, for removal from disk.
    pub async fn take_unreferenced_blobs(&self) -> Result<Vec<String>, Error> {
        let mut tx = self.write().await?;
        let orphans = orphan_blobs(&mut tx).await?;
        tx.commit().await?;
        Ok(orphans)
    }

    /// Where an app's versions run.
    pub async fn app_deployments(&self, slug: &str) -> Result<Vec<AppDeploymentRecord>, Error> {
        // app, gateway spec, host, version, previous, deployed at, published
        type Row = (String, String, String, i64, Option<i64>, i64, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT a.slug, g.spec, d.host, d.version, d.previous, d.deployed_at, v.published \
             FROM app_deployments d JOIN apps a ON a.id = d.app_id \
             JOIN gateways g ON g.id = d.gateway_id \
             JOIN app_versions v ON v.app_id = d.app_id AND v.number = d.version \
             WHERE a.slug = $1 ORDER BY g.name_key, d.host",
        )
        .bind(key(slug))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(app, gspec, host, version, previous, deployed_at, published)| {
                    let g: portico_model::GatewaySpec = from_json(&gspec)?;
                    Ok(AppDeploymentRecord {
                        app,
                        gateway: g.name,
                        host: (!host.is_empty()).then_some(host),
                        version: version as u32,
                        previous: previous.map(|p| p as u32),
                        draft: published == 0,
                        deployed_at,
                    })
                },
            )
            .collect()
    }
}

fn no_version(slug: &str, number: u32) -> Error {
    Error::NotFound(format!(
        "app `{slug}` has no version {number}: list them with `portico apps versions {slug}` (GET /api/v1/apps/{slug}/versions)"
    ))
}

async fn ensure_version(
    conn: &mut AnyConnection,
    id: i64,
    slug: &str,
    number: u32,
) -> Result<(), Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT number FROM app_versions WHERE app_id = $1 AND number = $2")
            .bind(id)
            .bind(i64::from(number))
            .fetch_optional(&mut *conn)
            .await?;
    found.map(|_| ()).ok_or_else(|| no_version(slug, number))
}

/// Forgets stored files that no version references and nobody touched for an hour (an
/// upload in progress refreshes its files), inside the caller's transaction; answers their
/// hashes, whose files the caller removes from disk after the commit.
pub(super) async fn orphan_blobs(conn: &mut AnyConnection) -> Result<Vec<String>, Error> {
    let mut used = BTreeSet::new();
    for files in sqlx::query_scalar::<_, String>("SELECT files FROM app_versions")
        .fetch_all(&mut *conn)
        .await?
    {
        let files: BTreeMap<String, AppFile> = from_json(&files)?;
        used.extend(files.into_values().map(|f| f.hash));
    }
    // Files uploaded in the last hour may belong to a version being made right now.
    let all: Vec<String> = sqlx::query_scalar("SELECT hash FROM blobs WHERE created_at < $1")
        .bind(now() - 3600)
        .fetch_all(&mut *conn)
        .await?;
    let orphans: Vec<String> = all.into_iter().filter(|h| !used.contains(h)).collect();
    for h in &orphans {
        sqlx::query("DELETE FROM blobs WHERE hash = $1")
            .bind(h)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM blob_chunks WHERE hash = $1")
            .bind(h)
            .execute(&mut *conn)
            .await?;
    }
    Ok(orphans)
}
