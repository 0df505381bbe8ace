//! oauth

use super::*;
// ---- token service ----

/// An RFC 6749 error answer.
pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portico\""),
        );
    }
    r
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// `POST /oauth2/token`: the client-credentials grant (RFC 6749 section 4.4), client
/// authenticated by HTTP Basic or form fields; answers a signed ES256 JWT.
pub(super) async fn oauth_token(
    State(st): St,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Response {
    let form: TokenForm = match serde_urlencoded::from_bytes(&bytes) {
        Ok(f) => f,
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
    };
    let user = match form.grant_type.as_deref() {
        Some("client_credentials") => None,
        Some("password") => {
            let (Some(u), Some(p)) = (form.username.clone(), form.password.clone()) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the password grant needs username and password",
                );
            };
            Some((u, p))
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "this token service supports grant_type=client_credentials and grant_type=password",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            );
        }
    };
    let Some((client_id, secret)) = basic_credentials(&headers)
        .or_else(|| Some((form.client_id.clone()?, form.client_secret.clone()?)))
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "authenticate the client with HTTP Basic or client_id and client_secret",
        );
    };
    // The client first: without a good client nothing is said about any user.
    let client = match authenticate_client(&st, &client_id, &secret).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client, wrong secret, or the credential was revoked or has expired",
            );
        }
        Err(e) => return e.into_response(),
    };
    let user = match user {
        None => None,
        Some((name, password)) => {
            let addr = ext
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            match people::sign_in(&st, &name, &password, addr).await {
                Ok((n, roles)) => {
                    // Tokens for calling APIs as a person are for the portal's people: an
                    // admin's or a publisher's password never leaves the control plane.
                    let portal_user = roles.iter().any(|r| r == access::SUBSCRIBER)
                        && !roles
                            .iter()
                            .any(|r| r == access::ADMIN || r == access::PUBLISHER);
                    if !portal_user {
                        return oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "the password grant serves users with the subscriber role only (never admins or publishers)",
                        );
                    }
                    Some(n)
                }
                Err(Error::TooManyRequests(m, secs)) => {
                    let mut r = oauth_error(StatusCode::TOO_MANY_REQUESTS, "invalid_request", &m);
                    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                        r.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                    return r;
                }
                Err(Error::Unauthorized(_)) => {
                    // One answer for an unknown user and a wrong password.
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "the username or password is wrong",
                    );
                }
                Err(e) => return e.into_response(),
            }
        }
    };
    match issue_for_client(&st, client, &client_id, form.scope.as_deref(), user).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The client credential when its id and secret are good and it (and its consumer) may
/// get tokens.
pub(super) async fn authenticate_client(
    st: &ControlPlane,
    client_id: &str,
    secret: &str,
) -> Result<Option<crate::store::ClientRecord>, Error> {
    let Some(client) = st.store.client(client_id).await? else {
        return Ok(None);
    };
    let t = now();
    if client.revoked_at.is_some()
        || client.expires_at.is_some_and(|e| t >= e)
        || !constant_time_eq(
            client.secret_hash.as_bytes(),
            secrets::hash(secret).as_bytes(),
        )
        || st
            .store
            .one::<ConsumerSpec>(&client.consumer)
            .await?
            .spec
            .blocked
    {
        return Ok(None);
    }
    Ok(Some(client))
}

pub(super) async fn issue_for_client(
    st: &ControlPlane,
    client: crate::store::ClientRecord,
    client_id: &str,
    scope: Option<&str>,
    user: Option<String>,
) -> Result<Response, Error> {
    let (grantable, apis) = st.store.grantable(&client.consumer).await?;
    let scopes: Vec<String> = match scope {
        None => grantable.clone(),
        Some(s) => {
            let asked: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
            if let Some(bad) = asked.iter().find(|a| !grantable.contains(a)) {
                return Ok(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!(
                        "scope `{bad}` is not declared by any API this consumer is subscribed to"
                    ),
                ));
            }
            asked
        }
    };
    let token = sign_token(
        st,
        &crate::tokens::Grant {
            consumer: client.consumer,
            client_id: client_id.to_owned(),
            key_type: client.key_type,
            scopes: scopes.clone(),
            apis,
            expires_in: crate::tokens::TOKEN_LIFETIME,
            not_before_in: 0,
            user,
        },
    )
    .await?;
    let mut r = axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": crate::tokens::TOKEN_LIFETIME,
        "scope": scopes.join(" "),
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn sign_token(
    st: &ControlPlane,
    g: &crate::tokens::Grant,
) -> Result<String, Error> {
    let key = st
        .store
        .active_signing_key()
        .await?
        .ok_or_else(|| Error::Internal("no signing key".into()))?;
    crate::tokens::sign(&st.sealer, &key, g)
}

/// `GET /oauth2/jwks`: the public keys, the active one and those still verifying tokens.
pub(super) async fn oauth_jwks(State(st): St) -> Res {
    let t = now();
    let keys: Vec<_> = st
        .store
        .signing_keys()
        .await?
        .into_iter()
        .filter(|k| {
            k.retired_at
                .is_none_or(|r| r > t - crate::store::TOKEN_MAX_LIFETIME)
        })
        .collect();
    ok(crate::tokens::jwks(&keys))
}

pub(super) async fn list_signing_keys(State(st): St, Query(q): Pq) -> Res {
    // Newest first, as rotations come.
    paged(&q, st.store.signing_keys().await?, |k| {
        format!("{:020}-{}", i64::MAX - k.created_at, k.kid)
    })
}

pub(super) async fn rotate_signing_key(State(st): St) -> Res {
    let key = crate::tokens::generate_key(&st.sealer)?;
    st.store.add_signing_key(&key).await?;
    tracing::info!(kid = %key.kid, "token signing key rotated");
    Ok((StatusCode::CREATED, axum::Json(to_value(&key))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestTokenRequest {
    #[serde(rename = "type")]
    key_type: KeyType,
    #[serde(default)]
    scope: Option<String>,
    /// Seconds until it expires; negative makes an expired token (to test clients).
    #[serde(default = "one_hour")]
    expires_in: i64,
    /// Seconds until it becomes valid.
    #[serde(default)]
    not_before_in: i64,
}

/// A signed access token for a consumer as the token service makes them: its scopes (every
/// one its subscriptions declare unless `scope` names some) and the APIs it may call.
pub(crate) async fn consumer_token(
    st: &ControlPlane,
    name: &str,
    client_id: &str,
    key_type: KeyType,
    scope: Option<&str>,
    expires_in: i64,
    not_before_in: i64,
) -> Result<(String, Vec<String>), Error> {
    let (grantable, apis) = st.store.grantable(name).await?;
    let scopes: Vec<String> = match scope {
        None => grantable,
        Some(s) => s.split_whitespace().map(str::to_owned).collect(),
    };
    let token = sign_token(
        st,
        &crate::tokens::Grant {
            consumer: name.to_owned(),
            client_id: client_id.into(),
            key_type,
            scopes: scopes.clone(),
            apis,
            expires_in,
            not_before_in,
            user: None,
        },
    )
    .await?;
    Ok((token, scopes))
}

pub(super) fn one_hour() -> i64 {
    crate::tokens::TOKEN_LIFETIME
}

/// `POST /api/v1/consumers/{name}/token`: a token for a consumer without a client secret
/// (admins testing an API).
pub(super) async fn test_token(
    State(st): St,
    Path(name): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: TestTokenRequest = body(&bytes)?;
    let mut fields = Vec::new();
    if !(-86_400..=86_400).contains(&req.expires_in) {
        fields.push(FieldError::new(
            "expires_in",
            "give -86400 to 86400 seconds",
        ));
    }
    if !(0..=86_400).contains(&req.not_before_in) {
        fields.push(FieldError::new("not_before_in", "give 0 to 86400 seconds"));
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    if st.store.one::<ConsumerSpec>(&name).await?.spec.blocked {
        return Err(Error::Conflict(format!(
            "consumer `{name}` is blocked: unblock it first (`portico consumers unblock {name}`)"
        )));
    }
    let (token, scopes) = consumer_token(
        &st,
        &name,
        "admin",
        req.key_type,
        req.scope.as_deref(),
        req.expires_in,
        req.not_before_in,
    )
    .await?;
    ok(
        json!({ "access_token": token, "token_type": "Bearer", "expires_in": req.expires_in, "scope": scopes.join(" ") }),
    )
}
