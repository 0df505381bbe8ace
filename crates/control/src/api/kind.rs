//! Every kind of object with a definition (gateways, services, routes, APIs, consumers,
//! tiers, apps) is one declaration here: where it lives in the API, how a definition is
//! checked, and which store calls read and write it. One set of generic handlers serves
//! them all: paged lists, gets with an `ETag`, creates, updates that name the version they
//! read, and deletes. Who may call them is decided before, by the kind's section of the
//! router ([`super::section`]); the store's write guard audits and announces each change.

use std::future::Future;

use portico_model::{AppSpec, ConsumerSpec, Tier};

use super::*;
use crate::store::{AppRecord, GatewayRecord, Keyed, Record, SpecKind};

/// One kind of object with a definition.
pub(crate) trait Kind: Send + Sync + 'static {
    /// Which kind, for authorization and messages.
    const KIND: KindId;
    /// Where its list lives under `/api/v1`.
    const PATH: &'static str;
    /// The name of its key in paths (`name`, `id`, `slug`).
    const PARAM: &'static str;
    /// Its definition.
    type Spec: DeserializeOwned + Send + Sync + 'static;
    /// A stored one.
    type Record: Keyed + serde::Serialize + Send + Sync + 'static;

    /// Everything wrong with a definition: its own rules and what it names.
    fn check(
        st: &ControlPlane,
        spec: &Self::Spec,
    ) -> impl Future<Output = Result<Vec<FieldError>, Error>> + Send;
    /// A page, in key order after the cursor (one more than the limit when there is more).
    fn list(
        st: &ControlPlane,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<Self::Record>, Error>> + Send;
    /// One by key.
    fn get(
        st: &ControlPlane,
        key: &str,
    ) -> impl Future<Output = Result<Self::Record, Error>> + Send;
    /// Creates one.
    fn create(
        st: &ControlPlane,
        spec: &Self::Spec,
    ) -> impl Future<Output = Result<Self::Record, Error>> + Send;
    /// Replaces one if `expected` is its version.
    fn update(
        st: &ControlPlane,
        key: &str,
        spec: &Self::Spec,
        expected: i64,
    ) -> impl Future<Output = Result<Self::Record, Error>> + Send;
    /// Deletes one; answers a body when there is more to say than 204.
    fn delete(
        st: &ControlPlane,
        key: &str,
        force: bool,
    ) -> impl Future<Output = Result<Option<Value>, Error>> + Send;
    /// How one is shown on its own (a get adds what a list leaves out).
    fn shown(
        _st: &ControlPlane,
        r: &Self::Record,
    ) -> impl Future<Output = Result<Value, Error>> + Send {
        std::future::ready(Ok(to_value(r)))
    }
}

/// The store calls of a kind, by the names its store gives them.
macro_rules! stored_as {
    ($list:ident, $get:ident, $create:ident, $update:ident) => {
        async fn list(st: &ControlPlane, page: &Page) -> Result<Vec<Self::Record>, Error> {
            st.store.$list(page).await
        }
        async fn get(st: &ControlPlane, key: &str) -> Result<Self::Record, Error> {
            st.store.$get(key).await
        }
        async fn create(st: &ControlPlane, spec: &Self::Spec) -> Result<Self::Record, Error> {
            st.store.$create(spec).await
        }
        async fn update(
            st: &ControlPlane,
            key: &str,
            spec: &Self::Spec,
            expected: i64,
        ) -> Result<Self::Record, Error> {
            st.store.$update(key, spec, expected).await
        }
    };
}

/// A kind's section of the router: its list, get, create, update and delete routes with
/// the kind's `more` routes, all behind the kind's authorization.
pub(super) fn routes<K: Kind>(more: R) -> R {
    section(
        K::KIND,
        more.route(K::PATH, get(list::<K>).post(create::<K>)).route(
            &format!("{}/{{{}}}", K::PATH, K::PARAM),
            get(show::<K>).put(update::<K>).delete(delete::<K>),
        ),
    )
}

async fn list<K: Kind>(State(st): St, Query(q): Pq) -> Res {
    let page = Page::from_query(&q)?;
    let items = K::list(&st, &page).await?;
    ok(page.answer(items.iter().map(|r| (r.key(), to_value(r))).collect()))
}

async fn show<K: Kind>(State(st): St, Path(key): Path<String>) -> Res {
    let r = K::get(&st, &key).await?;
    Ok(with_etag(
        StatusCode::OK,
        r.meta(),
        K::shown(&st, &r).await?,
    ))
}

async fn checked<K: Kind>(st: &ControlPlane, bytes: &Bytes) -> Result<K::Spec, Error> {
    let spec: K::Spec = body(bytes)?;
    let fields = K::check(st, &spec).await?;
    if fields.is_empty() {
        Ok(spec)
    } else {
        Err(Error::Invalid(fields))
    }
}

/// Checks a definition as the API does, then creates it (`key` none) or replaces the one
/// at `key` if it is still at version `expected`: the console's forms save through this.
pub(crate) async fn save<K: Kind>(
    st: &ControlPlane,
    key: Option<(&str, i64)>,
    spec: &K::Spec,
) -> Result<K::Record, Error> {
    let fields = K::check(st, spec).await?;
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    match key {
        None => K::create(st, spec).await,
        Some((key, expected)) => K::update(st, key, spec, expected).await,
    }
}

async fn create<K: Kind>(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec = checked::<K>(&st, &bytes).await?;
    let r = K::create(&st, &spec).await?;
    Ok(with_etag(StatusCode::CREATED, r.meta(), to_value(&r)))
}

async fn update<K: Kind>(
    State(st): St,
    Path(key): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec = checked::<K>(&st, &bytes).await?;
    let r = K::update(&st, &key, &spec, expected).await?;
    Ok(with_etag(StatusCode::OK, r.meta(), to_value(&r)))
}

async fn delete<K: Kind>(
    State(st): St,
    Path(key): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Res {
    match K::delete(&st, &key, q.force).await? {
        Some(v) => ok(v),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

fn own(r: Result<(), portico_model::Error>) -> Vec<FieldError> {
    r.err().map(|e| e.field_errors()).unwrap_or_default()
}

/// A service definition's problems: the data plane's rules for it, paths from the service.
pub(crate) fn service_problems(spec: &Service) -> Vec<FieldError> {
    let probe = portico_model::Snapshot {
        services: vec![spec.clone()],
        ..Default::default()
    };
    own(probe.validate())
        .into_iter()
        .map(|mut f| {
            f.path = f.path.replacen("services[0].", "", 1);
            f
        })
        .collect()
}

/// A tier's problems.
pub(crate) fn tier_problems(t: &Tier) -> Vec<FieldError> {
    t.problems()
        .into_iter()
        .map(|(f, m)| FieldError::new(f, m))
        .collect()
}

/// The tiers a definition names that do not exist.
pub(super) async fn missing_tiers(
    st: &ControlPlane,
    refs: &[(String, &Option<String>)],
) -> Result<Vec<FieldError>, Error> {
    let mut fields = Vec::new();
    for (path, tier) in refs {
        if let Some(t) = tier
            && st.store.one::<Tier>(t).await.is_err()
        {
            fields.push(FieldError::new(
                path.clone(),
                format!("no tier is named `{t}`: create it with `portico tiers create {t}` (POST /api/v1/tiers)"),
            ));
        }
    }
    Ok(fields)
}

/// Every tier an API names, with its field path.
pub(crate) fn api_tier_refs(spec: &ApiSpec) -> Vec<(String, &Option<String>)> {
    let mut refs = vec![("tier".to_owned(), &spec.tier)];
    for (i, op) in spec.operations.iter().enumerate() {
        refs.push((format!("operations[{i}].tier"), &op.tier));
    }
    refs
}

/// The roles a gateway's visibility names that do not exist.
pub(crate) async fn gateway_role_problems(
    st: &ControlPlane,
    g: &GatewaySpec,
) -> Result<Vec<FieldError>, Error> {
    let mut fields = st
        .store
        .unknown_roles(&g.visibility.roles_allowed, "visibility.roles_allowed")
        .await?;
    fields.extend(
        st.store
            .unknown_roles(&g.visibility.roles_denied, "visibility.roles_denied")
            .await?,
    );
    Ok(fields)
}

/// Gateways: deploy targets. Credentials, nodes and snapshots are in [`super::gateways`].
pub(crate) struct Gateways;

impl Kind for Gateways {
    const KIND: KindId = KindId::Gateway;
    const PATH: &'static str = "/gateways";
    const PARAM: &'static str = "name";
    type Spec = GatewaySpec;
    type Record = GatewayRecord;

    async fn check(st: &ControlPlane, spec: &GatewaySpec) -> Result<Vec<FieldError>, Error> {
        let mut fields = gateway_problems(st, spec);
        fields.extend(gateway_role_problems(st, spec).await?);
        Ok(fields)
    }
    stored_as!(gateways, gateway, create_gateway, update_gateway);
    async fn delete(st: &ControlPlane, key: &str, force: bool) -> Result<Option<Value>, Error> {
        let removed = st.store.delete_gateway(key, force).await?;
        Ok(Some(json!({ "deleted": key, "removed": removed })))
    }
}

/// A kind stored as its definition ([`SpecKind`]), declared for the API by where it lives
/// and how a definition is checked.
pub(crate) trait Declared: SpecKind {
    /// Where its list lives under `/api/v1`.
    const PATH: &'static str;
    /// Everything wrong with a definition: its own rules and what it names.
    fn problems(
        st: &ControlPlane,
        spec: &Self,
    ) -> impl Future<Output = Result<Vec<FieldError>, Error>> + Send;
}

/// The API of a [`Declared`] kind: every part of it comes from the generic store path.
pub(crate) struct Spec<T>(std::marker::PhantomData<T>);

impl<T: Declared> Kind for Spec<T> {
    const KIND: KindId = T::KIND;
    const PATH: &'static str = T::PATH;
    const PARAM: &'static str = "name";
    type Spec = T;
    type Record = Record<T>;

    async fn check(st: &ControlPlane, spec: &T) -> Result<Vec<FieldError>, Error> {
        T::problems(st, spec).await
    }
    stored_as!(list_of, one, create, update);
    async fn delete(st: &ControlPlane, key: &str, _force: bool) -> Result<Option<Value>, Error> {
        st.store.delete::<T>(key).await?;
        Ok(None)
    }
}

impl Declared for Service {
    const PATH: &'static str = "/services";
    async fn problems(_st: &ControlPlane, spec: &Service) -> Result<Vec<FieldError>, Error> {
        Ok(service_problems(spec))
    }
}

impl Declared for RouteSpec {
    const PATH: &'static str = "/routes";
    async fn problems(_st: &ControlPlane, spec: &RouteSpec) -> Result<Vec<FieldError>, Error> {
        Ok(own(spec.validate()))
    }
}

impl Declared for ConsumerSpec {
    const PATH: &'static str = "/consumers";
    async fn problems(st: &ControlPlane, spec: &ConsumerSpec) -> Result<Vec<FieldError>, Error> {
        let mut fields = own(spec.validate());
        fields.extend(missing_tiers(st, &[("tier".into(), &spec.tier)]).await?);
        Ok(fields)
    }
}

impl Declared for Tier {
    const PATH: &'static str = "/tiers";
    async fn problems(_st: &ControlPlane, spec: &Tier) -> Result<Vec<FieldError>, Error> {
        Ok(tier_problems(spec))
    }
}

/// Managed APIs. Revisions, deployments and lifecycle are in [`super::apis`].
pub(crate) struct Apis;

impl Kind for Apis {
    const KIND: KindId = KindId::Api;
    const PATH: &'static str = "/apis";
    const PARAM: &'static str = "id";
    type Spec = ApiSpec;
    type Record = ApiRecord;

    async fn check(st: &ControlPlane, spec: &ApiSpec) -> Result<Vec<FieldError>, Error> {
        let mut fields = own(spec.validate());
        fields.extend(missing_tiers(st, &api_tier_refs(spec)).await?);
        let offered: Vec<(String, Option<String>)> = spec
            .subscription_tiers
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("subscription_tiers[{i}]"), Some(t.clone())))
            .collect();
        let offered: Vec<(String, &Option<String>)> =
            offered.iter().map(|(p, t)| (p.clone(), t)).collect();
        fields.extend(missing_tiers(st, &offered).await?);
        fields.extend(
            st.store
                .unknown_roles(&spec.visible_roles, "visible_roles")
                .await?,
        );
        Ok(fields)
    }
    stored_as!(apis, api, create_api, update_api);
    async fn delete(st: &ControlPlane, key: &str, force: bool) -> Result<Option<Value>, Error> {
        let (undeployed, _) = st.store.delete_api(key, force).await?;
        Ok(Some(
            json!({ "deleted": key, "undeployed_from": undeployed }),
        ))
    }
    async fn shown(st: &ControlPlane, r: &ApiRecord) -> Result<Value, Error> {
        let mut v = to_value(r);
        v["invoke_urls"] = json!(apis::invoke_urls(st, &r.id, |_| true).await?);
        Ok(v)
    }
}

/// Hosted apps. Versions, files and deployments are in [`super::apps`].
pub(crate) struct Apps;

impl Kind for Apps {
    const KIND: KindId = KindId::App;
    const PATH: &'static str = "/apps";
    const PARAM: &'static str = "slug";
    type Spec = AppSpec;
    type Record = AppRecord;

    async fn check(_st: &ControlPlane, spec: &AppSpec) -> Result<Vec<FieldError>, Error> {
        Ok(own(spec.validate()))
    }
    stored_as!(apps, app, create_app, update_app);
    async fn delete(st: &ControlPlane, key: &str, _force: bool) -> Result<Option<Value>, Error> {
        let orphans = st.store.delete_app(key).await?;
        st.sweep_files(orphans).await;
        Ok(None)
    }
}
