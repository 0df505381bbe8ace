//! `apply`: a whole document of objects written in one transaction. Under the writer lock
//! the stored objects are read, the plan is made (created, updated, unchanged, deleted per
//! object), every reference is checked against the state the plan leaves, and only then is
//! anything written; every gateway is then recompiled inside the same transaction, so a
//! document that would leave a gateway with a snapshot its nodes refuse changes nothing. A
//! dry run takes the same path and rolls back.

use std::collections::{BTreeMap, BTreeSet};

use portico_model::apply::{Document, Kind};
use portico_model::{ApiSpec, AppSpec, ConsumerSpec, GatewaySpec, RouteSpec, Service, Tier};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;

use super::{
    Moved, Store, Write, all_gateway_ids, delete, from_json, insert, key, now, set_route_gateways,
    to_json, update,
};
use crate::access::KindId;
use crate::error::Error;

mod plan;

/// What an apply does to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Not stored yet: created.
    Created,
    /// Stored with another definition: replaced.
    Updated,
    /// Stored as the document has it: left alone.
    Unchanged,
    /// Stored, of a kind the document names, but not in it: deleted (`prune` only).
    Deleted,
}

impl Action {
    /// How the audit log names it.
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "apply:create",
            Self::Updated => "apply:update",
            Self::Unchanged => "apply:unchanged",
            Self::Deleted => "apply:delete",
        }
    }
}

/// One object of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanItem {
    /// Its kind (`api`, `tier`, ...).
    pub kind: &'static str,
    /// Its name: an API's id, an app's slug, `consumer/api` for a subscription.
    pub name: String,
    /// What the apply does (a dry run: would do) to it.
    pub action: Action,
    /// For an update, the top-level fields that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(skip)]
    of: Kind,
    /// Its place in the document (none for a deletion).
    #[serde(skip)]
    index: Option<usize>,
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every object of the document, then every deletion.
    pub items: Vec<PlanItem>,
    /// Snapshot versions that moved (none in a dry run).
    pub moved: Moved,
    /// Files no app version references any more, to remove from disk (none in a dry run).
    pub orphans: Vec<String>,
    /// Row ids of the gateways deleted (their nodes' long-polls are woken).
    pub deleted_gateways: Vec<i64>,
}

/// A stored object: its row id, definition and version.
#[derive(Clone, Debug)]
struct Row<T> {
    id: i64,
    spec: T,
    version: i64,
}

/// A stored subscription.
#[derive(Clone, Debug)]
struct StoredSubscription {
    consumer_id: i64,
    api_id: i64,
    /// Display name, `consumer/api`.
    name: String,
    tier: Option<String>,
}

/// Everything stored of the kinds `apply` takes, by lower-case key.
#[derive(Debug, Default)]
struct Stored {
    gateways: BTreeMap<String, Row<GatewaySpec>>,
    builtin: BTreeSet<String>,
    services: BTreeMap<String, Row<Service>>,
    tiers: BTreeMap<String, Row<Tier>>,
    apis: BTreeMap<String, Row<ApiSpec>>,
    deployed_apis: BTreeSet<String>,
    consumers: BTreeMap<String, Row<ConsumerSpec>>,
    /// By `consumer/api`, lower case.
    subscriptions: BTreeMap<String, StoredSubscription>,
    routes: BTreeMap<String, Row<RouteSpec>>,
    /// Name as uploaded, and the hosts it covers.
    certificates: BTreeMap<String, (String, Vec<String>)>,
    apps: BTreeMap<String, Row<AppSpec>>,
    deployed_apps: BTreeSet<String>,
}

/// How an apply runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Delete stored objects of the kinds the document names that it does not name.
    pub prune: bool,
    /// Make the plan and check everything, then roll back.
    pub dry_run: bool,
}

impl Store {
    /// Applies a document (already checked object by object) in one transaction, or with
    /// `dry_run` checks all of it the same way and rolls back. Answers the plan.
    pub async fn apply(&self, doc: &Document, opts: ApplyOptions) -> Result<Applied, Error> {
        let mut tx = self.write().await?;
        let stored = Stored::load(&mut tx).await?;
        let items = plan::plan(doc, &stored, opts.prune);
        plan::check(doc, &stored, &items)?;
        write(&mut tx, doc, &stored, &items).await?;
        let changed = items.iter().any(|i| i.action != Action::Unchanged);
        if changed {
            let all = all_gateway_ids(&mut tx).await?;
            // Raw routes written alike on a gateway are refused here as everywhere else.
            tx.recompile_checked(&all).await?;
        }
        let deletes_apps = items
            .iter()
            .any(|i| i.of == Kind::App && i.action == Action::Deleted);
        let orphans = if deletes_apps {
            super::apps::orphan_blobs(&mut tx).await?
        } else {
            Vec::new()
        };
        let deleted_gateways = items
            .iter()
            .filter(|i| i.of == Kind::Gateway && i.action == Action::Deleted)
            .filter_map(|i| stored.gateways.get(&key(&i.name)).map(|r| r.id))
            .collect();
        if opts.dry_run {
            drop(tx);
            return Ok(Applied {
                items,
                ..Applied::default()
            });
        }
        let moved = tx.commit().await?;
        Ok(Applied {
            items,
            moved,
            orphans,
            deleted_gateways,
        })
    }
}

impl Stored {
    async fn load(conn: &mut AnyConnection) -> Result<Self, Error> {
        let mut s = Self {
            gateways: rows(conn, "SELECT id, name_key, spec, version FROM gateways").await?,
            services: rows(conn, "SELECT id, name_key, spec, version FROM services").await?,
            tiers: rows(conn, "SELECT id, name_key, spec, version FROM tiers").await?,
            apis: rows(conn, "SELECT id, api_key, spec, version FROM apis").await?,
            consumers: rows(conn, "SELECT id, name_key, spec, version FROM consumers").await?,
            routes: rows(conn, "SELECT id, name_key, spec, version FROM routes").await?,
            apps: rows(conn, "SELECT id, slug, spec, version FROM apps").await?,
            ..Self::default()
        };
        s.builtin = sqlx::query_scalar("SELECT name_key FROM gateways WHERE builtin = 1")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
        s.deployed_apis = sqlx::query_scalar(
            "SELECT DISTINCT a.api_key FROM deployments d JOIN apis a ON a.id = d.api_id",
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        s.deployed_apps = sqlx::query_scalar(
            "SELECT DISTINCT a.slug FROM app_deployments d JOIN apps a ON a.id = d.app_id",
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let subs: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT s.consumer_id, s.api_id, co.spec, a.api_key, s.tier FROM subscriptions s \
             JOIN consumers co ON co.id = s.consumer_id JOIN apis a ON a.id = s.api_id",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (consumer_id, api_id, consumer, api, tier) in subs {
            let consumer: ConsumerSpec = from_json(&consumer)?;
            let name = format!("{}/{api}", consumer.name);
            s.subscriptions.insert(
                key(&name),
                StoredSubscription {
                    consumer_id,
                    api_id,
                    name,
                    tier,
                },
            );
        }
        let certs: Vec<(String, String, String)> =
            sqlx::query_as("SELECT name_key, name, hosts FROM certificates")
                .fetch_all(&mut *conn)
                .await?;
        for (k, name, hosts) in certs {
            s.certificates.insert(k, (name, from_json(&hosts)?));
        }
        Ok(s)
    }
}

async fn rows<T: DeserializeOwned>(
    conn: &mut AnyConnection,
    sql: &'static str,
) -> Result<BTreeMap<String, Row<T>>, Error> {
    let found: Vec<(i64, String, String, i64)> = sqlx::query_as(sql).fetch_all(&mut *conn).await?;
    found
        .into_iter()
        .map(|(id, k, spec, version)| {
            Ok((
                k,
                Row {
                    id,
                    spec: from_json(&spec)?,
                    version,
                },
            ))
        })
        .collect()
}

/// Writes the plan: creations and updates in kind order (what is named exists before what
/// names it), then deletions in the reverse order.
async fn write(
    w: &mut Write<'_>,
    doc: &Document,
    stored: &Stored,
    items: &[PlanItem],
) -> Result<(), Error> {
    for item in items.iter().filter(|i| i.action != Action::Unchanged) {
        let (kind, action) = (crate::apply::audited(item.of), item.action.as_str());
        w.audit(action, kind, &item.name, None, None);
    }
    let conn: &mut AnyConnection = w;
    for item in items.iter().filter(|i| i.action != Action::Deleted) {
        if let Some(i) = item.index {
            upsert(conn, doc, stored, item, i).await?;
        }
    }
    let mut deletions: Vec<&PlanItem> = items
        .iter()
        .filter(|i| i.action == Action::Deleted)
        .collect();
    deletions.sort_by_key(|i| std::cmp::Reverse(i.of));
    for item in deletions {
        remove(conn, stored, item).await?;
    }
    Ok(())
}

/// Creates or replaces one object of the document.
async fn upsert(
    conn: &mut AnyConnection,
    doc: &Document,
    stored: &Stored,
    item: &PlanItem,
    i: usize,
) -> Result<(), Error> {
    if item.action == Action::Unchanged {
        return Ok(());
    }
    let k = key(&item.name);
    match item.of {
        Kind::Gateway => {
            let spec = &doc.gateways[i];
            match stored.gateways.get(&k) {
                Some(row) => {
                    update(conn, KindId::Gateway, &spec.name, spec, row.version).await?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO gateways (name_key, spec, builtin, version, created_at, updated_at) \
                         VALUES ($1, $2, 0, 1, $3, $3)",
                    )
                    .bind(&k)
                    .bind(to_json(spec)?)
                    .bind(now())
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        Kind::Service => {
            let spec = &doc.services[i];
            named(
                conn,
                KindId::Service,
                &spec.name,
                spec,
                stored.services.get(&k),
            )
            .await?;
        }
        Kind::Tier => {
            let spec = &doc.tiers[i];
            named(conn, KindId::Tier, &spec.name, spec, stored.tiers.get(&k)).await?;
        }
        Kind::Consumer => {
            let spec = &doc.consumers[i];
            let row = stored.consumers.get(&k);
            named(conn, KindId::Consumer, &spec.name, spec, row).await?;
        }
        Kind::Route => {
            let spec = &doc.routes[i];
            let id = named(conn, KindId::Route, &spec.name, spec, stored.routes.get(&k)).await?;
            set_route_gateways(conn, id, spec).await?;
        }
        Kind::Api => {
            let spec = &doc.apis[i];
            let t = now();
            match stored.apis.get(&k) {
                Some(row) => replace_by_id(conn, "apis", row.id, spec, t).await?,
                None => {
                    sqlx::query(
                        "INSERT INTO apis (api_key, spec, lifecycle, version, created_at, updated_at) \
                         VALUES ($1, $2, 'created', 1, $3, $3)",
                    )
                    .bind(&k)
                    .bind(to_json(spec)?)
                    .bind(t)
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        Kind::Subscription => {
            let s = &doc.subscriptions[i];
            sqlx::query(
                "INSERT INTO subscriptions (consumer_id, api_id, tier, created_at) \
                 SELECT co.id, a.id, $3, $4 FROM consumers co, apis a WHERE co.name_key = $1 AND a.api_key = $2 \
                 ON CONFLICT (consumer_id, api_id) DO UPDATE SET tier = excluded.tier",
            )
            .bind(key(&s.consumer))
            .bind(key(&s.api))
            .bind(&s.tier)
            .bind(now())
            .execute(&mut *conn)
            .await?;
        }
        Kind::App => {
            let spec = &doc.apps[i];
            let t = now();
            match stored.apps.get(&k) {
                Some(row) => replace_by_id(conn, "apps", row.id, spec, t).await?,
                None => {
                    sqlx::query(
                        "INSERT INTO apps (slug, spec, version, created_at, updated_at) VALUES ($1, $2, 1, $3, $3)",
                    )
                    .bind(&k)
                    .bind(to_json(spec)?)
                    .bind(t)
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        // Never written: uploaded with their keys, `apply` only names them.
        Kind::Certificate => {}
    }
    Ok(())
}

/// Replaces the definition in row `id` of `table`, one version on.
async fn replace_by_id<T: Serialize>(
    conn: &mut AnyConnection,
    table: &'static str,
    id: i64,
    spec: &T,
    t: i64,
) -> Result<(), Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET spec = $1, version = version + 1, updated_at = $2 WHERE id = $3"
    )))
    .bind(to_json(spec)?)
    .bind(t)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates or replaces an object of a table keyed by `name_key`; answers its row id.
async fn named<T: Serialize>(
    conn: &mut AnyConnection,
    kind: KindId,
    name: &str,
    spec: &T,
    current: Option<&Row<impl Sized>>,
) -> Result<i64, Error> {
    match current {
        Some(row) => update(conn, kind, name, spec, row.version).await,
        None => insert(conn, kind, name, spec).await,
    }
}

/// Deletes one stored object the document does not name.
async fn remove(conn: &mut AnyConnection, stored: &Stored, item: &PlanItem) -> Result<(), Error> {
    let k = key(&item.name);
    match item.of {
        Kind::Gateway => {
            sqlx::query("DELETE FROM route_gateways WHERE gateway_key = $1")
                .bind(&k)
                .execute(&mut *conn)
                .await?;
            delete(conn, KindId::Gateway, &item.name).await.map(drop)
        }
        Kind::Service => delete(conn, KindId::Service, &item.name).await.map(drop),
        Kind::Tier => delete(conn, KindId::Tier, &item.name).await.map(drop),
        Kind::Consumer => delete(conn, KindId::Consumer, &item.name).await.map(drop),
        Kind::Route => delete(conn, KindId::Route, &item.name).await.map(drop),
        Kind::Api => {
            sqlx::query("DELETE FROM apis WHERE api_key = $1")
                .bind(&k)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        Kind::Subscription => {
            if let Some(s) = stored.subscriptions.get(&k) {
                sqlx::query("DELETE FROM subscriptions WHERE consumer_id = $1 AND api_id = $2")
                    .bind(s.consumer_id)
                    .bind(s.api_id)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }
        Kind::Certificate => {
            sqlx::query("DELETE FROM certificates WHERE name_key = $1")
                .bind(&k)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        Kind::App => {
            sqlx::query(
                "DELETE FROM app_versions WHERE app_id = (SELECT id FROM apps WHERE slug = $1)",
            )
            .bind(&k)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM apps WHERE slug = $1")
                .bind(&k)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }
}
