//! The console's users (admins): a page of users with their roles and status, a form to
//! create one, each user's roles changed and the user deleted in place, portal sign-ups
//! approved. Every write goes through the admin API's own functions, and a refusal is said
//! beside the field or the user it is about.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use super::{Fields, Nav, St, Viewer, error_page, page, under};
use crate::access::{Action, KindId};
use crate::error::Error;
use crate::page::{Page, PageQuery};

/// The users page and its forms.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route("/console/users", get(show).post(create))
        .route("/console/users/{name}/roles", post(set_roles))
        .route("/console/users/{name}/delete", post(delete))
        .route("/console/users/{name}/approve", post(approve))
}

/// A user as listed.
struct UserRow {
    name: String,
    roles: Vec<String>,
    status: String,
    /// Why the last change asked of this user was refused.
    error: Option<String>,
}

/// The create form as sent back: what was typed (never the password) and each field's
/// problem.
struct CreateForm {
    name: String,
    roles: Vec<String>,
    name_error: Option<String>,
    password_error: Option<String>,
    roles_error: Option<String>,
}

impl Default for CreateForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            // What a portal sign-up gets, and what the API gives when no role is named.
            roles: vec![crate::access::SUBSCRIBER.to_owned()],
            name_error: None,
            password_error: None,
            roles_error: None,
        }
    }
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<UserRow>,
    /// Every role, to choose from.
    roles: Vec<String>,
    /// The viewer may create, change and delete users.
    can_write: bool,
    create: CreateForm,
    notice: Option<String>,
    error: Option<String>,
    /// The next page's query (`cursor=…&limit=…`).
    next: Option<String>,
}

/// What the last write did: shown above the list or beside what it was about.
struct Outcome {
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
    /// A user's name and the problem with the change asked of them.
    row_error: Option<(String, String)>,
    create: CreateForm,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            status: StatusCode::OK,
            notice: None,
            error: None,
            row_error: None,
            create: CreateForm::default(),
        }
    }
}

impl Outcome {
    fn done(notice: String) -> Self {
        Self {
            notice: Some(notice),
            ..Self::default()
        }
    }

    /// A change to `user` refused: beside their row.
    fn row(user: &str, e: Error) -> Self {
        Self {
            status: e.status(),
            row_error: Some((user.to_owned(), super::error_text(e))),
            ..Self::default()
        }
    }
}

/// A page of users (`?limit&cursor`, as the API's list) with the outcome of the last write.
async fn render(st: &crate::ControlPlane, v: &Viewer, q: &PageQuery, out: Outcome) -> Response {
    if let Err(r) = v.require(KindId::User, Action::Read) {
        return *r;
    }
    let built = async {
        let page = Page::from_query(q)?;
        let rows = st.store.users(&page).await?;
        let roles = st.store.roles().await?;
        Ok::<_, Error>((page.split(rows), roles))
    }
    .await;
    let ((users, next), roles) = match built {
        Ok(x) => x,
        Err(e) => return error_page(v.nav(), e),
    };
    let mut row_error = out.row_error;
    let users = users
        .into_iter()
        .map(|u| UserRow {
            error: row_error
                .take_if(|(n, _)| n.eq_ignore_ascii_case(&u.name))
                .map(|(_, m)| m),
            name: u.name,
            roles: u.roles,
            status: u.status,
        })
        .collect();
    // About a user not on this page (or no longer anywhere): above the list.
    let error = out.error.or(row_error.map(|(_, m)| m));
    let limit = q.limit.as_deref().map(|l| format!("&limit={l}"));
    page(
        out.status,
        &UsersPage {
            nav: v.nav(),
            users,
            roles: roles.into_iter().map(|r| r.name).collect(),
            can_write: v.may(KindId::User, Action::Write),
            create: out.create,
            notice: out.notice,
            error,
            next: next.map(|c| format!("cursor={c}{}", limit.unwrap_or_default())),
        },
    )
}

async fn show(State(st): St, v: Viewer, Query(q): Query<PageQuery>) -> Response {
    render(&st, &v, &q, Outcome::default()).await
}

/// The roles chosen in a form, in the order the page lists them.
fn chosen(f: &Fields) -> Vec<String> {
    f.all("roles").map(str::to_owned).collect()
}

/// A new user, as `POST /api/v1/users` makes one: each problem beside its field.
async fn create(State(st): St, v: Viewer, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::User, Action::Write, &f) {
        return *r;
    }
    let name = f.get("name").trim();
    let roles = chosen(&f);
    let done = v
        .act(crate::api::add_user(&st, name, f.get("password"), &roles))
        .await;
    let out = match done {
        Ok(u) => Outcome::done(format!("Created {} ({}).", u.name, u.roles.join(", "))),
        Err(e) => {
            let mut form = CreateForm {
                name: name.to_owned(),
                roles,
                name_error: None,
                password_error: None,
                roles_error: None,
            };
            let status = e.status();
            let mut general = None;
            match e {
                Error::Invalid(fields) => {
                    for fe in fields {
                        let slot = if under(&fe.path, "name") {
                            &mut form.name_error
                        } else if under(&fe.path, "password") {
                            &mut form.password_error
                        } else {
                            &mut form.roles_error
                        };
                        *slot = Some(match slot.take() {
                            Some(before) => format!("{before}; {}", fe.message),
                            None => fe.message,
                        });
                    }
                }
                // A name taken: an admin may know who has an account.
                Error::Conflict(m) => form.name_error = Some(m),
                other => general = Some(other.public_message()),
            }
            Outcome {
                status,
                error: general,
                create: form,
                ..Outcome::default()
            }
        }
    };
    render(&st, &v, &PageQuery::default(), out).await
}

/// A user's roles replaced, as `PUT /api/v1/users/{name}/roles` does.
async fn set_roles(State(st): St, v: Viewer, Path(name): Path<String>, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::User, Action::Write, &f) {
        return *r;
    }
    let roles = chosen(&f);
    let out = match v.act(st.store.set_user_roles(&name, &roles)).await {
        Ok(u) => Outcome::done(format!(
            "{} now has the roles: {}.",
            u.name,
            if u.roles.is_empty() {
                "none".to_owned()
            } else {
                u.roles.join(", ")
            }
        )),
        Err(e) => Outcome::row(&name, e),
    };
    render(&st, &v, &PageQuery::default(), out).await
}

/// A user deleted, as `DELETE /api/v1/users/{name}` does (`force`: their portal
/// applications too).
async fn delete(State(st): St, v: Viewer, Path(name): Path<String>, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::User, Action::Write, &f) {
        return *r;
    }
    let force = f.get("force") == "true";
    let out = match v.act(st.store.delete_user(&name, force)).await {
        Ok(apps) if apps.is_empty() => Outcome::done(format!("Deleted {name}.")),
        Ok(apps) => Outcome::done(format!(
            "Deleted {name} and their applications {}.",
            apps.join(", ")
        )),
        Err(e) => Outcome::row(&name, e),
    };
    render(&st, &v, &PageQuery::default(), out).await
}

/// Approving a portal sign-up: the admin's, as the API's `POST /users/{name}/approve`.
async fn approve(State(st): St, v: Viewer, Path(name): Path<String>, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::User, Action::Write, &f) {
        return *r;
    }
    let out = match v.act(st.store.approve_user(&name)).await {
        Ok(u) => Outcome::done(format!("Approved {}.", u.name)),
        Err(e) => Outcome::row(&name, e),
    };
    render(&st, &v, &PageQuery::default(), out).await
}
