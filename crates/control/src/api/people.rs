//! People: users and their roles, roles of the operator's own, personal access tokens and
//! sign-in sessions, the admin token, and the audit log.

use std::net::IpAddr;

use super::*;
use crate::access::Via;
use crate::store::AuditFilter;

/// How long a sign-in session lasts.
pub(crate) const SESSION_SECONDS: i64 = 12 * 3600;
/// The longest password taken (Argon2 hashes what it is given: no unbounded work).
const MAX_PASSWORD: usize = 4096;
/// The longest a personal access token may live when it expires at all (two years).
const MAX_TOKEN_SECONDS: i64 = 2 * 366 * 24 * 3600;

/// `/users`, `/users/{name}`, `/users/{name}/roles` (admins).
pub(super) fn users() -> R {
    R::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{name}", get(get_user).delete(delete_user))
        .route("/users/{name}/roles", axum::routing::put(set_roles))
        .route("/users/{name}/approve", post(approve_user))
}

/// `/roles`, `/roles/{name}` (admins).
pub(super) fn roles() -> R {
    R::new()
        .route("/roles", get(list_roles).post(create_role))
        .route("/roles/{name}", axum::routing::delete(delete_role))
}

/// A user's own tokens (that user or admins), and who the caller is.
pub(super) fn tokens() -> R {
    R::new()
        .route("/users/{name}/tokens", get(list_tokens).post(create_token))
        .route(
            "/users/{name}/tokens/{id}",
            axum::routing::delete(revoke_token),
        )
        .route(
            "/users/{name}/password",
            axum::routing::put(change_password),
        )
        .route("/auth/whoami", get(whoami))
        .route("/auth/logout", post(logout))
}

/// Checks a name and password, with the back-off shared by every sign-in (the console's,
/// the CLI's and the password grant's): too many failures for the name or from the address
/// pause it (429), and an unknown name costs one Argon2 verification like a known one, so
/// neither its answer nor its time tells them apart. Answers the user's name and roles;
/// a wrong name or password is `Unauthorized`.
pub(crate) async fn sign_in(
    st: &ControlPlane,
    name: &str,
    password: &str,
    addr: Option<IpAddr>,
) -> Result<(String, Vec<String>), Error> {
    if let Some(wait) = st.signins.paused(&st.store, name, addr).await? {
        let secs = wait.as_secs().max(1);
        return Err(Error::TooManyRequests(
            format!(
                "too many failed sign-ins for this user or from this address: try again in {secs} s"
            ),
            secs,
        ));
    }
    let found = st.store.password_hash(name).await?;
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || match found {
        Some((name, hash, roles, active)) => {
            crate::tokens::verify_password(&password, &hash).then_some((name, roles, active))
        }
        None => {
            crate::tokens::verify_unknown_user(&password);
            None
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    match ok {
        // Told only to who knows the password: the name alone reveals nothing.
        Some((_, _, false)) => Err(Error::Forbidden(
            "your sign-up waits for an administrator's approval".into(),
        )),
        Some((name_, roles, true)) => {
            st.signins.succeeded(&st.store, name).await?;
            Ok((name_, roles))
        }
        None => {
            st.signins.failed(&st.store, name, addr).await?;
            Err(Error::Unauthorized(
                "the user name or password is wrong".into(),
            ))
        }
    }
}

/// Starts a session for a user who signed in: its token (shown to them once) and when it
/// ends. The audit log names the user.
pub(crate) async fn start_session(st: &ControlPlane, name: &str) -> Result<(String, i64), Error> {
    let token = secrets::generate("pss_");
    let id = secrets::generate("ses_");
    let expires_at = now() + SESSION_SECONDS;
    // Signing in is outside authentication: the audit log names the user who did.
    crate::store::ACTOR
        .scope(
            format!("user:{name}"),
            st.store.create_user_token(
                name,
                Via::Session,
                "session",
                &id,
                &secrets::hash(&token),
                Some(expires_at),
            ),
        )
        .await?;
    tracing::info!(user = %name, "signed in");
    Ok((token, expires_at))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    name: String,
    password: String,
}

/// `POST /api/v1/auth/login`: a session token for a user's name and password.
pub(super) async fn login(
    State(st): St,
    ext: axum::http::Extensions,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: LoginRequest = body(&bytes)?;
    let addr = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let (name, roles) = sign_in(&st, &req.name, &req.password, addr).await?;
    let (token, expires_at) = start_session(&st, &name).await?;
    ok(json!({
        "token": token,
        "expires_at": expires_at,
        "user": { "name": name, "roles": roles },
    }))
}

async fn whoami(who: Who) -> Res {
    let c = who.signed_in()?;
    ok(json!({ "name": c.name, "roles": c.roles, "via": c.via.as_str() }))
}

async fn logout(State(st): St, who: Who) -> Res {
    let c = who.signed_in()?;
    match (&c.via, &c.token_id) {
        (Via::Session, Some(id)) => {
            st.store.revoke_user_token(&c.name, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(Error::Conflict(
            "this is not a session: revoke a personal token with `portico users tokens revoke USER ID`".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    name: String,
    password: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// The roles as given, or `subscriber` when none are.
fn roles_or_default(roles: Option<Vec<String>>) -> Vec<String> {
    roles.unwrap_or_else(|| vec![access::SUBSCRIBER.to_owned()])
}

async fn list_users(State(st): St, Query(q): Pq) -> Res {
    let page = Page::from_query(&q)?;
    let items = st.store.users(&page).await?;
    ok(page.answer(
        items
            .iter()
            .map(|(k, u)| (k.clone(), to_value(u)))
            .collect(),
    ))
}

async fn get_user(State(st): St, Path(name): Path<String>) -> Res {
    ok(to_value(&st.store.user(&name).await?))
}

async fn create_user(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: UserRequest = body(&bytes)?;
    let roles = roles_or_default(req.roles);
    let u = add_user(&st, &req.name, &req.password, &roles).await?;
    Ok((StatusCode::CREATED, axum::Json(to_value(&u))).into_response())
}

/// Checks a new user's name and password, hashes the password and creates the user with
/// these (existing) roles: the API's and the console's.
pub(crate) async fn add_user(
    st: &ControlPlane,
    name: &str,
    password: &str,
    roles: &[String],
) -> Result<crate::store::UserRecord, Error> {
    let mut fields = Vec::new();
    if name.is_empty()
        || name.chars().count() > limits::NAME
        || name.contains(char::is_whitespace)
        || name.contains('/')
    {
        fields.push(FieldError::new(
            "name",
            format!("1 to {} characters without spaces or `/`", limits::NAME),
        ));
    }
    if !(12..=MAX_PASSWORD).contains(&password.chars().count()) {
        fields.push(FieldError::new(
            "password",
            format!("use 12 to {MAX_PASSWORD} characters"),
        ));
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || crate::tokens::hash_password(&password))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    st.store.create_user(name, &hash, roles).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    /// The password now: required when users change their own.
    #[serde(default)]
    current_password: Option<String>,
    password: String,
}

/// `PUT /users/{name}/password`: users change their own (giving the current one, checked
/// with sign-in's back-off), admins anyone's. Every session of the user ends.
async fn change_password(
    State(st): St,
    who: Who,
    ext: axum::http::Extensions,
    Path(name): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: PasswordRequest = body(&bytes)?;
    let caller = who.signed_in()?;
    let addr = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let ended = set_password(
        &st,
        caller,
        &name,
        req.current_password.as_deref(),
        &req.password,
        addr,
    )
    .await?;
    ok(json!({ "name": name, "sessions_ended": ended }))
}

/// Changes `name`'s password as `caller` may (see [`change_password`]): how many sessions
/// ended. The console's account page does the same.
pub(crate) async fn set_password(
    st: &ControlPlane,
    caller: &access::Caller,
    name: &str,
    current: Option<&str>,
    password: &str,
    addr: Option<IpAddr>,
) -> Result<u64, Error> {
    if !(12..=MAX_PASSWORD).contains(&password.chars().count()) {
        return Err(Error::Invalid(vec![FieldError::new(
            "password",
            format!("use 12 to {MAX_PASSWORD} characters"),
        )]));
    }
    if caller.is_user(name) {
        let Some(current) = current.filter(|c| !c.is_empty()) else {
            return Err(Error::Invalid(vec![FieldError::new(
                "current_password",
                "give your current password to change it",
            )]));
        };
        match sign_in(st, name, current, addr).await {
            Ok(_) => {}
            Err(Error::Unauthorized(_)) => {
                return Err(Error::Forbidden("the current password is wrong".into()));
            }
            Err(e) => return Err(e),
        }
    } else if !caller.is_admin() {
        return Err(Error::Forbidden(format!(
            "only `{}` may change another user's password",
            access::ADMIN
        )));
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || crate::tokens::hash_password(&password))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let ended = st.store.set_password(name, &hash).await?;
    tracing::info!(user = %name, sessions_ended = ended, "password changed");
    Ok(ended)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesRequest {
    roles: Vec<String>,
}

async fn set_roles(State(st): St, Path(name): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    let req: RolesRequest = body(&bytes)?;
    ok(to_value(&st.store.set_user_roles(&name, &req.roles).await?))
}

async fn approve_user(State(st): St, Path(name): Path<String>) -> Res {
    ok(to_value(&st.store.approve_user(&name).await?))
}

async fn delete_user(State(st): St, Path(name): Path<String>, Query(q): Query<ForceQuery>) -> Res {
    let removed = st.store.delete_user(&name, q.force).await?;
    if removed.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    ok(json!({ "deleted": name, "applications_removed": removed }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRequest {
    name: String,
    #[serde(default)]
    description: String,
}

async fn list_roles(State(st): St, Query(q): Pq) -> Res {
    paged(&q, st.store.roles().await?, |r| r.name.to_ascii_lowercase())
}

async fn create_role(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: RoleRequest = body(&bytes)?;
    let r = add_role(&st, &req.name, &req.description).await?;
    Ok((StatusCode::CREATED, axum::Json(to_value(&r))).into_response())
}

/// Checks a role's name and creates it: the API's and the console's.
pub(crate) async fn add_role(
    st: &ControlPlane,
    name: &str,
    description: &str,
) -> Result<crate::store::RoleRecord, Error> {
    let ok_name = !name.is_empty()
        && name.len() <= limits::NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok_name {
        return Err(Error::Invalid(vec![FieldError::new(
            "name",
            format!(
                "`{name}`: use 1 to {} letters, digits, `.`, `_` or `-`",
                limits::NAME
            ),
        )]));
    }
    st.store.create_role(name, description).await
}

async fn delete_role(State(st): St, Path(name): Path<String>) -> Res {
    st.store.delete_role(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    name: Option<String>,
    /// Seconds from now; never when absent.
    #[serde(default)]
    expires_in: Option<i64>,
}

async fn list_tokens(State(st): St, Path(name): Path<String>, Query(q): Pq) -> Res {
    paged(&q, st.store.user_tokens(&name).await?, |t| t.id.clone())
}

async fn create_token(State(st): St, Path(name): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    let req: TokenRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        body(&bytes)?
    };
    let label = req.name.unwrap_or_else(|| "token".to_owned());
    let mut fields = Vec::new();
    if label.is_empty() || label.chars().count() > limits::NAME {
        fields.push(FieldError::new(
            "name",
            format!("1 to {} characters", limits::NAME),
        ));
    }
    if let Some(s) = req.expires_in
        && !(60..=MAX_TOKEN_SECONDS).contains(&s)
    {
        fields.push(FieldError::new(
            "expires_in",
            format!("seconds from now, 60 to {MAX_TOKEN_SECONDS} (leave it out for a token that does not expire)"),
        ));
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let token = secrets::generate("pat_");
    let id = secrets::generate("tok_");
    let id = id[..16.min(id.len())].to_owned();
    let r = st
        .store
        .create_user_token(
            &name,
            Via::Token,
            &label,
            &id,
            &secrets::hash(&token),
            req.expires_in.map(|s| now() + s),
        )
        .await?;
    let mut v = to_value(&r);
    v["token"] = json!(token);
    v["message"] = json!("shown once: keep it like a password");
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn revoke_token(State(st): St, Path((name, id)): Path<(String, String)>) -> Res {
    st.store.revoke_user_token(&name, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/admin-tokens/rotate`: a new admin token; every older one stops working.
pub(super) async fn rotate_admin_token(State(st): St) -> Res {
    let token = secrets::generate("pat_");
    st.store
        .rotate_admin_token("rotated", &secrets::hash(&token))
        .await?;
    tracing::info!("admin token rotated");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "message": "shown once: every older admin token no longer works",
        })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    user: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn seconds(name: &str, raw: Option<&str>) -> Result<Option<i64>, Error> {
    raw.map(|r| {
        r.parse::<i64>()
            .map_err(|_| Error::BadRequest(format!("{name}: `{r}` is not a time in Unix seconds")))
    })
    .transpose()
}

/// `GET /api/v1/audit`: who did what, newest first.
pub(super) async fn audit(State(st): St, Query(q): Query<AuditQuery>) -> Res {
    let page = Page::from_query(&PageQuery {
        limit: q.limit.clone(),
        cursor: q.cursor.clone(),
    })?;
    if let Some(k) = &q.kind
        && KindId::parse(k).is_none()
    {
        return Err(Error::BadRequest(format!(
            "kind: `{k}` is not a kind; the kinds are {}",
            access::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let filter = AuditFilter {
        actor: q.user.clone(),
        kind: q.kind.clone(),
        since: seconds("since", q.since.as_deref())?,
        until: seconds("until", q.until.as_deref())?,
    };
    let rows = st.store.audit(&filter, &page).await?;
    ok(page.answer(rows.into_iter().map(|(k, r)| (k, to_value(&r))).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn an_unknown_user_costs_one_argon2_verification_like_a_known_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = crate::Config {
            data_dir: dir.path().to_owned(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ..crate::Config::default()
        };
        let running = crate::start(config, std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let st = running.state.clone();
        let hash =
            crate::tokens::hash_password("correct horse battery").unwrap_or_else(|e| panic!("{e}"));
        st.store
            .create_user("alice", &hash, &["subscriber".to_owned()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let count = || crate::tokens::VERIFICATIONS.load(Ordering::Relaxed);
        for (name, password, want) in [
            ("alice", "correct horse battery", true),
            ("alice", "wrong horse battery", false),
            ("nobody", "correct horse battery", false),
        ] {
            let before = count();
            let got = sign_in(&st, name, password, None).await;
            assert_eq!(got.is_ok(), want, "{name}");
            if let Err(e) = got {
                assert!(matches!(e, Error::Unauthorized(_)), "{name}: {e}");
            }
            assert_eq!(count() - before, 1, "{name}: one verification per attempt");
        }
        running.task.abort();
    }
}
