//! The developer portal's API: published APIs as the caller may see them (anonymous callers
//! see public ones on gateways without visibility rules), each with its invoke URLs per
//! visible gateway and the gateways of its try-out picker; and the caller's own
//! applications, their keys and subscriptions. Everything seen passes [`Viewer`].

use super::*;
use crate::access::Viewer;

/// Every portal route.
pub(super) fn routes() -> R {
    R::new()
        .route("/portal/apis", get(list_apis))
        .route("/portal/apis/{id}", get(get_api))
        .route(
            "/portal/applications",
            get(list_applications).post(create_application),
        )
        .route(
            "/portal/applications/{name}",
            get(get_application).delete(delete_application),
        )
        .route(
            "/portal/applications/{name}/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/portal/applications/{name}/keys/{id}",
            axum::routing::delete(revoke_key),
        )
        .route(
            "/portal/applications/{name}/keys/{id}/regenerate",
            post(regenerate_key),
        )
        .route(
            "/portal/applications/{name}/subscriptions",
            get(list_subscriptions).post(subscribe),
        )
        .route(
            "/portal/applications/{name}/subscriptions/{api}",
            axum::routing::delete(unsubscribe),
        )
}

/// An API as the portal shows it to `viewer`.
pub(crate) async fn shown_api(
    st: &ControlPlane,
    viewer: Viewer<'_>,
    a: &ApiRecord,
) -> Result<Value, Error> {
    let gateways = apis::invoke_urls(st, &a.id, |g| viewer.sees_gateway(g)).await?;
    let mut try_out = Vec::new();
    for d in st.store.deployments(Some(&a.id)).await? {
        let g = st.store.gateway(&d.gateway).await?.spec;
        if viewer.tries_on(&g) {
            try_out.push(json!({ "gateway": g.name, "type": g.kind.as_str() }));
        }
    }
    Ok(json!({
        "id": a.id,
        "name": a.spec.name,
        "version": a.spec.version,
        "context": a.spec.context,
        "description": a.spec.description,
        "lifecycle": a.lifecycle,
        "auth": a.spec.auth,
        "operations": a.spec.operations,
        "tiers": a.spec.subscription_tiers,
        "gateways": gateways,
        "try_out": try_out,
    }))
}

fn no_api(id: &str) -> Error {
    Error::NotFound(format!(
        "no published API `{id}` that you may see: list them with GET /api/v1/portal/apis"
    ))
}

/// The API when the viewer may see it in the portal, else 404 (not 403: what one may not
/// see, one is not told exists).
pub(crate) async fn visible_api(
    st: &ControlPlane,
    viewer: Viewer<'_>,
    id: &str,
) -> Result<ApiRecord, Error> {
    match st.store.api(id).await {
        Ok(a) if viewer.sees_api(a.lifecycle, &a.spec) => Ok(a),
        Ok(_) | Err(Error::NotFound(_)) => Err(no_api(id)),
        Err(e) => Err(e),
    }
}

/// A page of the published APIs `viewer` may see that `keep` keeps, in id order, and the
/// cursor of the next page. Reads on through the stored ones until a page is full.
pub(crate) async fn visible_apis(
    st: &ControlPlane,
    viewer: Viewer<'_>,
    page: &Page,
    keep: impl Fn(&ApiRecord) -> bool,
) -> Result<(Vec<ApiRecord>, Option<String>), Error> {
    let mut out: Vec<ApiRecord> = Vec::new();
    let mut cursor = page.clone();
    loop {
        let batch = st.store.apis(&cursor).await?;
        let more = batch.len() > cursor.limit;
        let last = batch
            .get(cursor.limit.saturating_sub(1))
            .map(|a| a.id.clone());
        out.extend(
            batch
                .into_iter()
                .take(cursor.limit)
                .filter(|a| viewer.sees_api(a.lifecycle, &a.spec) && keep(a)),
        );
        if out.len() > page.limit || !more {
            break;
        }
        cursor.after = last;
    }
    let keyed = out.into_iter().map(|a| (a.id.clone(), a)).collect();
    Ok(page.split(keyed))
}

async fn list_apis(State(st): St, who: Who, Query(q): Query<PageQuery>) -> Res {
    let page = Page::from_query(&q)?;
    let viewer = Viewer::new(who.0.as_ref());
    let (apis, next) = visible_apis(&st, viewer, &page, |_| true).await?;
    let mut items = Vec::new();
    for a in &apis {
        items.push(shown_api(&st, viewer, a).await?);
    }
    ok(json!({ "items": items, "next": next }))
}

async fn get_api(State(st): St, who: Who, Path(id): Path<String>) -> Res {
    let viewer = Viewer::new(who.0.as_ref());
    let a = visible_api(&st, viewer, &id).await?;
    ok(shown_api(&st, viewer, &a).await?)
}

/// The application when the caller owns it (admins: any), else 404.
async fn own_application(st: &ControlPlane, who: &Who, name: &str) -> Result<(), Error> {
    let c = who.signed_in()?;
    if c.is_admin() || st.store.owns_consumer(&c.name, name).await? {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "you have no application named `{name}`: list yours with GET /api/v1/portal/applications"
    )))
}

async fn list_applications(State(st): St, who: Who, Query(q): Pq) -> Res {
    let c = who.signed_in()?;
    paged(&q, st.store.owned_consumers(&c.name).await?, |r| {
        r.spec.name.to_ascii_lowercase()
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationRequest {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_application(State(st): St, who: Who, JsonBody(bytes): JsonBody) -> Res {
    let c = who.signed_in()?;
    let req: ApplicationRequest = body(&bytes)?;
    let spec = ConsumerSpec {
        name: req.name,
        owner: c.name.clone(),
        description: req.description,
        tier: None,
        blocked: false,
    };
    spec.validate().map_err(invalid)?;
    let r = st.store.create_owned_consumer(&spec, Some(&c.name)).await?;
    Ok(with_etag(StatusCode::CREATED, &r.meta, to_value(&r)))
}

async fn get_application(State(st): St, who: Who, Path(name): Path<String>) -> Res {
    own_application(&st, &who, &name).await?;
    let r = st.store.one::<ConsumerSpec>(&name).await?;
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn delete_application(State(st): St, who: Who, Path(name): Path<String>) -> Res {
    own_application(&st, &who, &name).await?;
    st.store.delete::<ConsumerSpec>(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_keys(State(st): St, who: Who, Path(name): Path<String>, q: Query<PageQuery>) -> Res {
    own_application(&st, &who, &name).await?;
    consumers::list_keys(State(st), Path(name), q).await
}

async fn create_key(State(st): St, who: Who, Path(name): Path<String>, json: JsonBody) -> Res {
    own_application(&st, &who, &name).await?;
    consumers::create_key(State(st), Path(name), json).await
}

async fn revoke_key(State(st): St, who: Who, Path((name, id)): Path<(String, String)>) -> Res {
    own_application(&st, &who, &name).await?;
    consumers::revoke_key(State(st), Path((name, id))).await
}

async fn regenerate_key(State(st): St, who: Who, Path((name, id)): Path<(String, String)>) -> Res {
    own_application(&st, &who, &name).await?;
    consumers::regenerate_key(State(st), Path((name, id))).await
}

async fn list_subscriptions(
    State(st): St,
    who: Who,
    Path(name): Path<String>,
    q: Query<PageQuery>,
) -> Res {
    own_application(&st, &who, &name).await?;
    consumers::list_subscriptions(State(st), Path(name), q).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalSubscribe {
    api: String,
    /// One of the API's `subscription_tiers`.
    #[serde(default)]
    tier: Option<String>,
}

async fn subscribe(
    State(st): St,
    who: Who,
    Path(name): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    own_application(&st, &who, &name).await?;
    let req: PortalSubscribe = body(&bytes)?;
    let tier = offered_tier(
        &st,
        Viewer::new(who.0.as_ref()),
        &req.api,
        req.tier.as_deref(),
    )
    .await?;
    st.store.subscribe(&name, &req.api, tier.as_deref()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "application": name, "api": req.api, "tier": tier })),
    )
        .into_response())
}

async fn unsubscribe(State(st): St, who: Who, Path((name, api)): Path<(String, String)>) -> Res {
    own_application(&st, &who, &name).await?;
    consumers::unsubscribe(State(st), Path((name, api))).await
}

/// Checks a subscription's tier against what the API offers subscribers (its
/// `subscription_tiers`): a subscriber never picks a plan the API does not offer. Answers
/// the tier to store (none when none was asked for).
pub(crate) async fn offered_tier(
    st: &ControlPlane,
    viewer: Viewer<'_>,
    api: &str,
    tier: Option<&str>,
) -> Result<Option<String>, Error> {
    let a = visible_api(st, viewer, api).await?;
    let Some(t) = tier.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    match a
        .spec
        .subscription_tiers
        .iter()
        .find(|o| o.eq_ignore_ascii_case(t))
    {
        Some(o) => Ok(Some(o.clone())),
        None if a.spec.subscription_tiers.is_empty() => Err(Error::Invalid(vec![FieldError::new(
            "tier",
            format!("`{api}` offers no tiers to choose: subscribe without one"),
        )])),
        None => Err(Error::Invalid(vec![FieldError::new(
            "tier",
            format!(
                "`{api}` offers the tiers {}: choose one of them",
                a.spec.subscription_tiers.join(", ")
            ),
        )])),
    }
}
