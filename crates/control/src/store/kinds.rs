//! The kinds stored as their JSON definition with the common columns (services, raw
//! routes, consumers, tiers), each declared once by what sets it apart: what a write must
//! check, which gateways' snapshots hold it, and what it writes beside its own row. One
//! generic path lists, reads, creates, updates and deletes them all through the write
//! guard (audit row, recompile, announcement).

use std::future::{Future, ready};

use portico_model::{ConsumerSpec, RouteSpec, Service, Tier};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;

use super::{
    Record, Store, Write, all_gateway_ids, check_route_refs, from_json, get, key, list,
    route_gateway_ids, set_route_gateways,
};
use crate::access::KindId;
use crate::error::Error;
use crate::page::Page;

/// A kind stored as its definition.
pub(crate) trait SpecKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Which kind.
    const KIND: KindId;
    /// Why an update may not change the name.
    const RENAME: &'static str;
    /// Whether a write that makes routes collide on a gateway is refused.
    const REFUSE_COLLISIONS: bool = false;
    /// Whether the object is a consumer: its writes change that consumer's keys and
    /// tiers on gateways. Other kinds' writes change no consumer's.
    const CONSUMER: bool = false;

    /// Its unique name.
    fn name(&self) -> &str;

    /// Refuses a write that breaks a reference or takes away what is in use, inside the
    /// write: `spec` is the new definition, none for a delete of `name`.
    fn check<'a>(
        _conn: &'a mut AnyConnection,
        _name: &'a str,
        _spec: Option<&'a Self>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        ready(Ok(()))
    }

    /// The gateways whose snapshots hold the object with this row id, now.
    fn gateways(
        conn: &mut AnyConnection,
        id: i64,
    ) -> impl Future<Output = Result<Vec<i64>, Error>> + Send;

    /// Writes what the object's own row does not hold, after it.
    fn written<'a>(
        _conn: &'a mut AnyConnection,
        _id: i64,
        _spec: &'a Self,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        ready(Ok(()))
    }

    /// How a gateway that no longer compiles without it refuses its delete.
    fn still_used(_name: &str, e: Error) -> Error {
        e
    }
}

impl Write<'_> {
    async fn recompile_for<T: SpecKind>(
        &mut self,
        ids: &mut Vec<i64>,
        name: &str,
    ) -> Result<(), Error> {
        ids.sort_unstable();
        ids.dedup();
        let consumer = [name];
        let keys = super::KeysTouched::Of(if T::CONSUMER { &consumer } else { &[] });
        if T::REFUSE_COLLISIONS {
            self.recompile_checked_keys(ids, keys).await
        } else {
            self.recompile_keys(ids, keys).await
        }
    }
}

async fn row_id(conn: &mut AnyConnection, kind: KindId, name: &str) -> Result<i64, Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {} WHERE name_key = $1",
        super::table(kind)?
    )))
    .bind(key(name))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found(kind, name))
}

impl Store {
    /// A page of objects of a kind, by name.
    pub(crate) async fn list_of<T: SpecKind>(&self, page: &Page) -> Result<Vec<Record<T>>, Error> {
        list(&self.pool, T::KIND, page).await
    }

    /// One object of a kind.
    pub(crate) async fn one<T: SpecKind>(&self, name: &str) -> Result<Record<T>, Error> {
        get(&self.pool, T::KIND, name).await
    }

    /// Creates an object; the gateways holding it recompile.
    pub(crate) async fn create<T: SpecKind>(&self, spec: &T) -> Result<Record<T>, Error> {
        let mut w = self.write().await?;
        T::check(&mut w, spec.name(), Some(spec)).await?;
        let id = w.insert(T::KIND, spec.name(), spec).await?;
        T::written(&mut w, id, spec).await?;
        let mut ids = T::gateways(&mut w, id).await?;
        w.recompile_for::<T>(&mut ids, spec.name()).await?;
        w.commit().await?;
        self.one(spec.name()).await
    }

    /// Replaces an object if `expected` is its version; the gateways that held it and
    /// those that hold it now recompile.
    pub(crate) async fn update<T: SpecKind>(
        &self,
        name: &str,
        spec: &T,
        expected: i64,
    ) -> Result<Record<T>, Error> {
        if key(spec.name()) != key(name) {
            return Err(Error::Conflict(T::RENAME.into()));
        }
        let mut w = self.write().await?;
        T::check(&mut w, name, Some(spec)).await?;
        let id = w.update(T::KIND, name, spec, expected).await?;
        let mut ids = T::gateways(&mut w, id).await?;
        T::written(&mut w, id, spec).await?;
        ids.extend(T::gateways(&mut w, id).await?);
        w.recompile_for::<T>(&mut ids, name).await?;
        w.commit().await?;
        self.one(name).await
    }

    /// Deletes an object nothing uses; the gateways that held it recompile.
    pub(crate) async fn delete<T: SpecKind>(&self, name: &str) -> Result<(), Error> {
        let mut w = self.write().await?;
        let id = row_id(&mut w, T::KIND, name).await?;
        T::check(&mut w, name, None).await?;
        let mut ids = T::gateways(&mut w, id).await?;
        w.delete(T::KIND, name).await?;
        w.recompile_for::<T>(&mut ids, name)
            .await
            .map_err(|e| T::still_used(name, e))?;
        w.commit().await?;
        Ok(())
    }
}

impl SpecKind for Service {
    const KIND: KindId = KindId::Service;
    const RENAME: &'static str =
        "a service cannot be renamed: create the new one, move routes to it, delete the old";

    fn name(&self) -> &str {
        &self.name
    }

    async fn check(
        conn: &mut AnyConnection,
        name: &str,
        spec: Option<&Service>,
    ) -> Result<(), Error> {
        if spec.is_some() {
            return Ok(());
        }
        let routes: Vec<String> = sqlx::query_scalar("SELECT spec FROM routes")
            .fetch_all(&mut *conn)
            .await?;
        for r in routes {
            let r: RouteSpec = from_json(&r)?;
            if r.route
                .all_targets()
                .iter()
                .any(|t| key(&t.service) == key(name))
            {
                return Err(Error::Conflict(format!(
                    "route `{}` forwards to service `{name}`: change or delete the route first",
                    r.name
                )));
            }
        }
        Ok(())
    }

    async fn gateways(conn: &mut AnyConnection, _id: i64) -> Result<Vec<i64>, Error> {
        all_gateway_ids(conn).await
    }
}

impl SpecKind for RouteSpec {
    const KIND: KindId = KindId::Route;
    const RENAME: &'static str = "a route cannot be renamed: create the new one and delete the old";
    const REFUSE_COLLISIONS: bool = true;

    fn name(&self) -> &str {
        &self.name
    }

    async fn check(
        conn: &mut AnyConnection,
        _name: &str,
        spec: Option<&RouteSpec>,
    ) -> Result<(), Error> {
        match spec {
            Some(s) => check_route_refs(conn, s).await,
            None => Ok(()),
        }
    }

    async fn gateways(conn: &mut AnyConnection, id: i64) -> Result<Vec<i64>, Error> {
        route_gateway_ids(conn, id).await
    }

    async fn written(conn: &mut AnyConnection, id: i64, spec: &RouteSpec) -> Result<(), Error> {
        set_route_gateways(conn, id, spec).await.map(drop)
    }
}

impl SpecKind for ConsumerSpec {
    const KIND: KindId = KindId::Consumer;
    const RENAME: &'static str = "a consumer cannot be renamed: its keys and tokens name it";
    const CONSUMER: bool = true;

    fn name(&self) -> &str {
        &self.name
    }

    async fn gateways(conn: &mut AnyConnection, id: i64) -> Result<Vec<i64>, Error> {
        super::consumers::consumer_gateways(conn, id).await
    }
}

impl SpecKind for Tier {
    const KIND: KindId = KindId::Tier;
    const RENAME: &'static str = "a tier cannot be renamed: create a new one";

    fn name(&self) -> &str {
        &self.name
    }

    async fn check(conn: &mut AnyConnection, name: &str, spec: Option<&Tier>) -> Result<(), Error> {
        if spec.is_some() {
            return Ok(());
        }
        let subs: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE lower(tier) = $1")
                .bind(key(name))
                .fetch_one(&mut *conn)
                .await?;
        let consumers: Vec<String> = sqlx::query_scalar("SELECT spec FROM consumers")
            .fetch_all(&mut *conn)
            .await?;
        let by_consumer = consumers
            .iter()
            .filter_map(|s| from_json::<ConsumerSpec>(s).ok())
            .any(|c| c.tier.is_some_and(|t| key(&t) == key(name)));
        if subs > 0 || by_consumer {
            return Err(Error::Conflict(format!(
                "tier `{name}` is used by consumers or subscriptions: move them to another tier first"
            )));
        }
        // APIs that limit with it or offer it to subscribers.
        let apis: Vec<(String, String)> = sqlx::query_as("SELECT api_key, spec FROM apis")
            .fetch_all(&mut *conn)
            .await?;
        let named: Vec<String> = apis
            .iter()
            .filter(|(_, s)| {
                from_json::<portico_model::ApiSpec>(s).is_ok_and(|a| {
                    a.tier
                        .iter()
                        .chain(a.operations.iter().filter_map(|o| o.tier.as_ref()))
                        .chain(&a.subscription_tiers)
                        .any(|t| key(t) == key(name))
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !named.is_empty() {
            return Err(Error::Conflict(format!(
                "tier `{name}` is named by the APIs {}: change them first",
                named.join(", ")
            )));
        }
        Ok(())
    }

    async fn gateways(conn: &mut AnyConnection, _id: i64) -> Result<Vec<i64>, Error> {
        all_gateway_ids(conn).await
    }

    /// Deployed APIs that name it would no longer compile: that refuses the delete.
    fn still_used(name: &str, e: Error) -> Error {
        match e {
            Error::Compile(m) => {
                Error::Conflict(format!("tier `{name}` is used by a deployed API: {m}"))
            }
            other => other,
        }
    }
}
