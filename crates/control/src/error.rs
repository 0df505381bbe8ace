//! The control plane's errors, and how each becomes an HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portico_model::FieldError;
use serde_json::json;

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body or parameters cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// The request reads but breaks rules; every problem has a field path.
    #[error("the request is not valid")]
    Invalid(Vec<FieldError>),
    /// No such object, or no such endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is larger than the endpoint takes.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is not JSON by its `Content-Type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The change conflicts with what is stored (a name taken, something still in use).
    #[error("{0}")]
    Conflict(String),
    /// An update named a version that is not the current one.
    #[error("{0}")]
    Stale(String),
    /// An update named no version.
    #[error("{0}")]
    PreconditionRequired(String),
    /// The change would make a gateway's snapshot invalid.
    #[error("{0}")]
    Compile(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but lacks the role.
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts: wait this many seconds.
    #[error("{0}")]
    TooManyRequests(String, u64),
    /// Linking: the gateway's admin API did not answer.
    #[error("{0}")]
    GatewayUnreachable(String),
    /// Linking: the gateway refused the JWT (the secret differs).
    #[error("{0}")]
    JwtSecretMismatch(String),
    /// Linking: the gateway holds another API token.
    #[error("{0}")]
    ApiTokenMismatch(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A bug or an unreadable stored value.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// `kind` `name` does not exist.
    pub fn not_found(kind: crate::access::KindId, name: &str) -> Self {
        let (path, command) = kind.listed_at();
        Self::NotFound(format!(
            "no {} named `{name}`: list them with `portico {command}` (GET /api/v1/{path})",
            kind.noun()
        ))
    }

    /// The HTTP status the error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Stale(_) => (StatusCode::CONFLICT, "stale_version"),
            Self::PreconditionRequired(_) => {
                (StatusCode::PRECONDITION_REQUIRED, "version_required")
            }
            Self::Compile(_) => (StatusCode::UNPROCESSABLE_ENTITY, "snapshot_invalid"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::TooManyRequests(..) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::GatewayUnreachable(_) => (StatusCode::BAD_GATEWAY, "gateway_unreachable"),
            Self::JwtSecretMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "jwt_secret_mismatch"),
            Self::ApiTokenMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "api_token_mismatch"),
            Self::Db(e) if unavailable(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            Self::Db(e) if unstorable_text(e) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Db(_) | Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The database is away (down, restarting, out of connections) rather than refusing the
/// statement: worth a retry.
fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        // PostgreSQL going away: connection exceptions (08...), shutting down or starting
        // up (57P01-57P03), too many connections (53300).
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// PostgreSQL refused a text value it cannot hold (the NUL character, SQLSTATE 22021):
/// the request's fault, not the server's. The API refuses NUL at the door; this is the
/// net under every other way in (a form, a TOML document's escape).
fn unstorable_text(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c == "22021"))
}

impl Error {
    /// What a caller is told: the error's own words, except for the database's and the
    /// server's own failures, which are logged here and answered in general terms (their
    /// text can name hosts, tables or statements).
    pub fn public_message(&self) -> String {
        match self {
            Self::Invalid(fields) => format!(
                "the request has {} problem{}: fix the fields listed and send it again",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ),
            Self::Db(e) if unavailable(e) => {
                tracing::warn!(error = %e, "the database cannot be reached");
                "the database cannot be reached right now, so the change was not confirmed: try again shortly".into()
            }
            Self::Db(e) if unstorable_text(e) => {
                "a text value holds the NUL character (\\u0000), which cannot be stored: nothing was changed".into()
            }
            Self::Db(e) => {
                tracing::error!(error = %e, "database error");
                "the database failed; the change was not applied (see the server log)".into()
            }
            Self::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                "internal error; the change was not applied (see the server log)".into()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = self.public_message();
        let body = match &self {
            Self::Invalid(fields) => json!({
                "error": code,
                "message": message,
                "fields": fields.iter().map(|f| json!({"path": f.path, "message": f.message})).collect::<Vec<_>>(),
            }),
            _ => json!({"error": code, "message": message}),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Self::TooManyRequests(_, secs) = self {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}
