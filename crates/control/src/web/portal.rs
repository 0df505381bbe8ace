//! The developer portal's pages: published APIs the viewer may see (searchable, paged) and
//! each API with one set of invoke URLs per visible gateway. They read through the same
//! functions as `/api/v1/portal/…`, so a page never shows what the API would not.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::{Nav, St, Viewer, error_page, page};
use crate::access;
use crate::page::{Page, PageQuery};

/// The portal's routes.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route("/portal", get(apis))
        .route("/portal/apis/{id}", get(api))
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
}

async fn apis(State(st): St, headers: HeaderMap, Query(s): Query<Search>) -> Response {
    let v = match Viewer::of(&st, &headers).await {
        Ok(v) => v,
        Err(e) => {
            return error_page(
                Nav::portal(&Viewer {
                    caller: None,
                    csrf: String::new(),
                }),
                e,
            );
        }
    };
    let page_q = PageQuery {
        limit: Some("20".into()),
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
                nav: Nav::portal(&v),
                q: s.q,
                apis: list
                    .into_iter()
                    .map(|a| ApiCard {
                        id: a.id,
                        name: a.spec.name,
                        version: a.spec.version,
                        description: a.spec.description,
                    })
                    .collect(),
                next,
            },
        ),
        Err(e) => error_page(Nav::portal(&v), e),
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
    name: String,
    version: String,
    lifecycle: String,
    description: String,
    gateways: Vec<UrlSet>,
    try_out: Vec<String>,
}

async fn api(State(st): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let v = match Viewer::of(&st, &headers).await {
        Ok(v) => v,
        Err(e) => {
            return error_page(
                Nav::portal(&Viewer {
                    caller: None,
                    csrf: String::new(),
                }),
                e,
            );
        }
    };
    let viewer = access::Viewer::new(v.caller.as_ref());
    let shown = async {
        let a = crate::api::portal::visible_api(&st, viewer, &id).await?;
        crate::api::portal::shown_api(&st, viewer, &a).await
    }
    .await;
    match shown {
        Ok(a) => {
            let text = |p: &str| {
                a.pointer(p)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let gateways = a["gateways"]
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
            let try_out = a["try_out"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["gateway"].as_str().map(str::to_owned))
                .collect();
            page(
                StatusCode::OK,
                &ApiPage {
                    nav: Nav::portal(&v),
                    name: text("/name"),
                    version: text("/version"),
                    lifecycle: text("/lifecycle"),
                    description: text("/description"),
                    gateways,
                    try_out,
                },
            )
        }
        Err(e) => error_page(Nav::portal(&v), e),
    }
}
