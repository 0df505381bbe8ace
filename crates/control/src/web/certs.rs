//! The console's certificates: those uploaded (with their hosts and expiry) and the upload
//! form, and the automatic ones with their state, each hostname's order one click away.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::{Fields, Nav, St, Viewer, error_page, page};
use crate::access::{Action, KindId};
use crate::error::Error;

/// The certificates page and its form.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route("/console/certificates", get(show).post(upload))
        .route("/console/certificates/order", axum::routing::post(order))
}

/// An uploaded certificate as listed.
struct Uploaded {
    name: String,
    hosts: String,
    expires: String,
}

/// An automatic certificate's hostname as listed.
struct Automatic {
    host: String,
    state: String,
    expires: String,
    last_error: String,
}

#[derive(Template)]
#[template(path = "console/certificates.html")]
struct CertificatesPage {
    nav: Nav,
    uploaded: Vec<Uploaded>,
    automatic: Vec<Automatic>,
    can_upload: bool,
    may_see_automatic: bool,
    /// May order a hostname's certificate now.
    can_order: bool,
    name: String,
    notice: Option<String>,
    error: Option<String>,
    name_error: Option<String>,
    pem_error: Option<String>,
}

async fn render(
    st: &crate::ControlPlane,
    v: &Viewer,
    name: &str,
    notice: Option<String>,
    failed: Option<Error>,
) -> Response {
    if let Err(r) = v.require(KindId::Certificate, Action::Read) {
        return *r;
    }
    let status = failed.as_ref().map_or(StatusCode::OK, Error::status);
    let (mut error, mut name_error, mut pem_error) = (None, None, None);
    match failed {
        Some(Error::Invalid(fs)) => {
            for f in fs {
                if f.path == "name" {
                    name_error = Some(f.message);
                } else {
                    pem_error = Some(format!("{}: {}", f.path, f.message));
                }
            }
        }
        // What is wrong with the PEM itself is said beside it.
        Some(e @ Error::BadRequest(_)) => pem_error = Some(e.public_message()),
        Some(e) => error = Some(e.public_message()),
        None => {}
    }
    let may_see_automatic = v.may(KindId::Acme, Action::Read);
    let built = async {
        let uploaded = st.store.certificates().await?;
        let automatic = if may_see_automatic {
            st.store.acme_hosts().await?
        } else {
            Vec::new()
        };
        Ok::<_, Error>((uploaded, automatic))
    }
    .await;
    let (uploaded, automatic) = match built {
        Ok(x) => x,
        Err(e) => return error_page(v.nav(), e),
    };
    page(
        status,
        &CertificatesPage {
            nav: v.nav(),
            uploaded: uploaded
                .into_iter()
                .map(|c| Uploaded {
                    name: c.name,
                    hosts: c.hosts.join(", "),
                    expires: super::lists::utc(c.not_after),
                })
                .collect(),
            automatic: automatic
                .into_iter()
                .map(|h| Automatic {
                    host: h.host,
                    state: serde_json::to_value(h.state)
                        .ok()
                        .and_then(|s| s.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    expires: h.not_after.map(super::lists::utc).unwrap_or_default(),
                    last_error: h.last_error.unwrap_or_default(),
                })
                .collect(),
            can_upload: v.may(KindId::Certificate, Action::Write),
            may_see_automatic,
            can_order: v.may(KindId::Acme, Action::Write),
            name: name.to_owned(),
            notice,
            error,
            name_error,
            pem_error,
        },
    )
}

async fn show(State(st): St, v: Viewer) -> Response {
    render(&st, &v, "", None, None).await
}

/// The upload form: the API's check and store (the key sealed), errors beside the fields;
/// the PEM texts are never sent back into the page.
async fn upload(State(st): St, v: Viewer, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::Certificate, Action::Write, &f) {
        return *r;
    }
    let name = f.get("name").trim();
    let done = v
        .act(crate::api::certs::add_certificate(
            &st,
            name,
            f.get("cert_pem"),
            f.get("key_pem"),
        ))
        .await;
    match done {
        Ok(_) => Redirect::to("/console/certificates").into_response(),
        Err(e) => render(&st, &v, name, None, Some(e)).await,
    }
}

/// Orders a hostname's certificate now (an early renewal, or a retry after a failure): the
/// API's check and call.
async fn order(State(st): St, v: Viewer, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::Acme, Action::Write, &f) {
        return *r;
    }
    let host = f.get("host").trim().to_ascii_lowercase();
    let done = v.act(st.store.acme_order_now(&host)).await;
    match done {
        Ok(()) => {
            st.hub.changed.notify_one();
            let notice = format!("A new certificate for {host} is being ordered.");
            render(&st, &v, "", Some(notice), None).await
        }
        Err(e) => render(&st, &v, "", None, Some(e)).await,
    }
}
