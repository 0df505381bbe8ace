//! The developer portal's pages: published APIs the viewer may see (searchable, paged) and
//! each API with one set of invoke URLs per visible gateway. They read through the same
//! functions as `/api/v1/portal/…`, so a page never shows what the API would not.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{Nav, St, Viewer, error_page, page};
use crate::access::{self, Action, KindId};
use crate::error::Error;
use crate::page::{Page, PageQuery};

/// The portal's routes.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route("/portal", get(apis))
        .route("/portal/apis/{id}", get(api))
        .route("/portal/signup", get(signup_page).post(signup))
        .route("/portal/apis/{id}/tryout-token", post(tryout_token))
}

/// An API in the list.
struct ApiCard {
    id: String,
    name: String,
    version: String,
    description: String,
}

#[derive(Template)]
#[template(path = "portal/apis.html")]
struct ApisPage {
    nav: Nav,
    q: String,
    apis: Vec<ApiCard>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Search {
    #[serde(default)]
    q: String,
    cursor: Option<String>,
    limit: Option<String>,
}

/// Items on a portal page when the address names no `limit`.
pub(super) const PORTAL_LIMIT: &str = "20";

/// A next page's query: `pairs` with their values URL-encoded, empty ones left out.
pub(super) fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

/// Pages a list held in memory as the API's lists do ([`Page::of`]): sorted by key, what
/// follows the cursor, cut to the page, with the next page's cursor.
pub(super) fn page_of<T>(
    page: &Page,
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let mut keyed: Vec<(String, T)> = items
        .into_iter()
        .map(|i| (key(&i), i))
        .filter(|(k, _)| page.wants(k))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.truncate(page.limit.saturating_add(1));
    page.split(keyed)
}

async fn apis(State(st): St, v: Viewer, Query(s): Query<Search>) -> Response {
    let page_q = PageQuery {
        limit: Some(s.limit.clone().unwrap_or_else(|| PORTAL_LIMIT.into())),
        cursor: s.cursor.clone(),
    };
    let viewer = access::Viewer::new(v.caller.as_ref());
    let needle = s.q.trim().to_lowercase();
    let found = async {
        let page = Page::from_query(&page_q)?;
        crate::api::portal::visible_apis(&st, viewer, &page, |a| {
            needle.is_empty()
                || a.spec.name.to_lowercase().contains(&needle)
                || a.spec.description.to_lowercase().contains(&needle)
                || a.id.contains(&needle)
        })
        .await
    }
    .await;
    match found {
        Ok((list, next)) => page(
            StatusCode::OK,
            &ApisPage {
                nav: v.nav(),
                q: s.q.clone(),
                apis: list
                    .into_iter()
                    .map(|a| ApiCard {
                        id: a.id,
                        name: a.spec.name,
                        version: a.spec.version,
                        description: a.spec.description,
                    })
                    .collect(),
                next: next.map(|c| {
                    query(&[
                        ("q", &s.q),
                        ("cursor", &c),
                        ("limit", s.limit.as_deref().unwrap_or_default()),
                    ])
                }),
            },
        ),
        Err(e) => error_page(v.nav(), e),
    }
}

/// A gateway's URLs on an API's page.
struct UrlSet {
    name: String,
    kind: String,
    urls: Vec<String>,
}

#[derive(Template)]
#[template(path = "portal/api.html")]
struct ApiPage {
    nav: Nav,
    id: String,
    name: String,
    version: String,
    lifecycle: String,
    description: String,
    gateways: Vec<UrlSet>,
    /// Gateways of the try-out picker: name, the URL tried, type.
    try_out: Vec<(String, String, String)>,
    applications: Vec<String>,
    signed_in: bool,
    /// The API's OpenAPI document, readably.
    reference: Option<Reference>,
}

/// An OpenAPI document as the API's page shows it.
struct Reference {
    title: String,
    version: String,
    description: String,
    operations: Vec<RefOperation>,
}

/// One operation of the document.
struct RefOperation {
    method: String,
    path: String,
    summary: String,
    /// `name (in, required)` for each parameter.
    parameters: Vec<String>,
    /// The statuses it answers, with their descriptions.
    responses: Vec<String>,
}

/// Reads what a reader needs from an OpenAPI (or Swagger 2) document: its title and each
/// operation with its parameters and responses. Whatever is missing is left empty.
fn reference(doc: &serde_json::Value) -> Reference {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            let Some(op) = item.get(method).filter(|o| o.is_object()) else {
                continue;
            };
            let params = item["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(op["parameters"].as_array().into_iter().flatten())
                .filter_map(|p| {
                    let name = p["name"].as_str()?;
                    let required = if p["required"].as_bool() == Some(true) {
                        ", required"
                    } else {
                        ""
                    };
                    Some(format!("{name} ({}{required})", s(&p["in"])))
                })
                .collect();
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, r)| format!("{code} {}", s(&r["description"])).trim().to_owned())
                .collect();
            operations.push(RefOperation {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                summary: [&op["summary"], &op["description"], &op["operationId"]]
                    .into_iter()
                    .map(s)
                    .find(|t| !t.is_empty())
                    .unwrap_or_default(),
                parameters: params,
                responses,
            });
        }
    }
    Reference {
        title: s(&doc["info"]["title"]),
        version: s(&doc["info"]["version"]),
        description: s(&doc["info"]["description"]),
        operations,
    }
}

async fn api(State(st): St, v: Viewer, Path(id): Path<String>) -> Response {
    let viewer = access::Viewer::new(v.caller.as_ref());
    let shown = async {
        let a = crate::api::portal::visible_api(&st, viewer, &id).await?;
        let reference = a.spec.openapi.as_ref().map(reference);
        Ok::<_, Error>((
            crate::api::portal::shown_api(&st, viewer, &a).await?,
            reference,
        ))
    }
    .await;
    match shown {
        Ok((a, reference)) => {
            let text = |p: &str| {
                a.pointer(p)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let gateways: Vec<UrlSet> = a["gateways"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| UrlSet {
                    name: g["gateway"].as_str().unwrap_or_default().to_owned(),
                    kind: g["type"].as_str().unwrap_or_default().to_owned(),
                    urls: g["urls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect(),
                })
                .collect();
            let try_out: Vec<(String, String, String)> = a["try_out"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    let name = t["gateway"].as_str()?;
                    let set = gateways.iter().find(|g: &&UrlSet| g.name == name)?;
                    Some((name.to_owned(), set.urls.first()?.clone(), set.kind.clone()))
                })
                .collect();
            let applications = match &v.caller {
                Some(c) => st
                    .store
                    .owned_consumers(&c.name)
                    .await
                    .map(|l| l.into_iter().map(|r| r.spec.name).collect())
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            page(
                StatusCode::OK,
                &ApiPage {
                    nav: v.nav(),
                    id: text("/id"),
                    applications,
                    signed_in: v.caller.is_some(),
                    name: text("/name"),
                    version: text("/version"),
                    lifecycle: text("/lifecycle"),
                    description: text("/description"),
                    gateways,
                    try_out,
                    reference,
                },
            )
        }
        Err(e) => error_page(v.nav(), e),
    }
}

#[derive(Template)]
#[template(path = "portal/signup.html")]
struct SignupPage {
    nav: Nav,
    open: bool,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
}

fn signup_view(
    st: &crate::ControlPlane,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
) -> SignupPage {
    SignupPage {
        nav: Viewer::anonymous(true).nav(),
        open: st.config.portal_signup != crate::Signup::Closed,
        csrf,
        notice,
        error,
    }
}

async fn signup_page(State(st): St) -> Response {
    super::form_page(&st, StatusCode::OK, |csrf| {
        signup_view(&st, csrf, None, None)
    })
}

#[derive(Debug, Deserialize)]
struct SignupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// A sign-up answers the same whether the name was free or taken: it never tells who
/// has an account.
async fn signup(
    State(st): St,
    headers: HeaderMap,
    axum::extract::Form(f): axum::extract::Form<SignupForm>,
) -> Response {
    let again = |status: StatusCode, notice: Option<String>, error: Option<String>| {
        super::form_page(&st, status, |csrf| signup_view(&st, csrf, notice, error))
    };
    if st.config.portal_signup == crate::Signup::Closed {
        return again(
            StatusCode::FORBIDDEN,
            None,
            Some("Sign-up is closed.".into()),
        );
    }
    if !super::cookie(&headers, super::PRE_SESSION).is_some_and(|c| super::same(c, &f.csrf)) {
        return again(
            StatusCode::FORBIDDEN,
            None,
            Some("The form is out of date: try again.".into()),
        );
    }
    let name = f.name.trim();
    let name_ok = !name.is_empty()
        && name.chars().count() <= portico_model::validate::limits::NAME
        && !name.contains(char::is_whitespace)
        && !name.contains('/');
    if !name_ok || f.password.chars().count() < 12 {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(format!(
                "Use a name of 1 to {} characters without spaces or `/`, and a password of 12 characters or more.",
                portico_model::validate::limits::NAME
            )),
        );
    }
    let password = f.password.clone();
    let hashed = tokio::task::spawn_blocking(move || crate::tokens::hash_password(&password)).await;
    let Ok(Ok(hash)) = hashed else {
        return again(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            Some("The sign-up did not work: try again.".into()),
        );
    };
    let approved = st.config.portal_signup == crate::Signup::Open;
    let done = crate::store::ACTOR
        .scope(
            format!("signup:{name}"),
            st.store.sign_up(name, &hash, approved),
        )
        .await;
    match done {
        Ok(_) | Err(Error::Conflict(_)) => {
            let notice = if approved {
                "Thank you. If the name was free, your account is ready: sign in."
            } else {
                "Thank you. If the name was free, an administrator will approve your account; sign in once they have."
            };
            again(StatusCode::OK, Some(notice.into()), None)
        }
        Err(e) => error_page(Viewer::anonymous(true).nav(), e),
    }
}

/// A short-lived access token for one of the viewer's applications subscribed to an API
/// the viewer may see: the try-out's credential, made on the server so that no key shown
/// once is ever needed again.
async fn tryout_token(
    State(st): St,
    v: Viewer,
    Path(id): Path<String>,
    f: super::Fields,
) -> Response {
    // The page's script reads the answer: errors stay JSON.
    if let Err(e) = access::authorize(v.caller.as_ref(), KindId::Portal, Action::Write, None)
        .and_then(|()| v.check_csrf(f.get("csrf")))
    {
        return e.into_response();
    }
    let made = async {
        let app = f.get("application");
        super::applications::owned(&st, &v, app).await?;
        let viewer = access::Viewer::new(v.caller.as_ref());
        crate::api::portal::visible_api(&st, viewer, &id).await?;
        if !st
            .store
            .subscriptions(app)
            .await?
            .iter()
            .any(|s| s.api == id)
        {
            return Err(Error::Conflict(format!(
                "application `{app}` is not subscribed to `{id}`: subscribe it on its page first"
            )));
        }
        let key_type = match f.get("type") {
            "sandbox" => portico_model::KeyType::Sandbox,
            _ => portico_model::KeyType::Production,
        };
        let (token, _) = crate::api::oauth::consumer_token(
            &st,
            app,
            "portal",
            key_type,
            None,
            TRYOUT_SECONDS,
            0,
        )
        .await?;
        Ok::<_, Error>(token)
    }
    .await;
    match made {
        Ok(token) => {
            axum::Json(serde_json::json!({ "access_token": token, "expires_in": TRYOUT_SECONDS }))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// How long a try-out token lasts.
const TRYOUT_SECONDS: i64 = 300;
