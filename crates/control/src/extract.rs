//! Request parts read the admin API's way. Every rejection of the framework (a path or query
//! that does not parse, a body too large or not JSON, a method or path that does not exist,
//! a handler that panicked) becomes an [`Error`], and so the one JSON error shape.

use axum::body::{Bytes, to_bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Largest request body the admin API reads into memory (2 MiB). App files are not bodies
/// of this kind: `PUT /api/v1/blobs/{hash}` streams them to disk.
pub const MAX_BODY: usize = 2 << 20;

/// The body of a JSON endpoint: empty (where the endpoint allows it), or JSON by its
/// `Content-Type`.
pub struct JsonBody(pub Bytes);

/// A body read whatever its type (the token endpoint's form).
pub struct RawBody(pub Bytes);

/// Path parameters; one that does not parse is a 400 in the JSON shape.
pub struct Path<T>(pub T);

/// Query parameters; a query that does not parse is a 400 in the JSON shape.
pub struct Query<T>(pub T);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if !json && !bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        if let Some(at) = nul_in_json(&bytes) {
            return Err(Error::BadRequest(format!(
                "{at} holds the NUL character (\\u0000): text cannot contain it"
            )));
        }
        Ok(Self(bytes))
    }
}

/// Where a JSON body holds the NUL character (escaped as `\u0000`, the only way JSON can
/// carry it), named the way field errors are (`name`, `routes[0].path`), or `the body`.
/// `None` when it holds none (the cheap byte scan finds most bodies clean).
///
/// PostgreSQL cannot store NUL in text, and no name, path or note needs it: it is refused
/// at the door on both backends alike.
fn nul_in_json(bytes: &[u8]) -> Option<String> {
    // A `\u0000` preceded by an even number of other backslashes is an escaped NUL.
    let escaped = bytes.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    });
    if !escaped {
        return None;
    }
    // A body that does not parse says so where it is parsed.
    let value = serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
    portico_model::snapshot::nul_at(&value).map(|at| match at.as_str() {
        "." => "the body".to_owned(),
        _ => format!("`{at}`"),
    })
}

/// An encoded NUL character (`%00`): no name or id holds one (they are refused when made),
/// and PostgreSQL cannot even look one up.
fn has_nul(text: &str) -> bool {
    text.as_bytes().windows(3).any(|w| w == b"%00")
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(body_error)
    }
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        if has_nul(parts.uri.path()) {
            return Err(Error::NotFound(
                "nothing is named with the NUL character (%00) the path holds".into(),
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Self(p.0)),
            Err(e) if e.status().is_server_error() => Err(Error::Internal(e.body_text())),
            Err(e) => Err(Error::BadRequest(format!(
                "the URL does not read: {}",
                e.body_text()
            ))),
        }
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        if parts.uri.query().is_some_and(has_nul) {
            return Err(Error::BadRequest(
                "the query string holds the NUL character (%00): no name or value has it".into(),
            ));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| {
                Error::BadRequest(format!("the query string does not read: {}", e.body_text()))
            })
    }
}

/// `application/json` or `application/<something>+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .to_ascii_lowercase()
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

fn body_error(e: BytesRejection) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge(format!(
            "the body is larger than the {} MiB this endpoint reads",
            MAX_BODY >> 20
        ))
    } else {
        Error::BadRequest(format!("the body could not be read: {}", e.body_text()))
    }
}

/// The answer to a path that exists with another method (the `Allow` header lists those).
pub async fn method_not_allowed(method: Method) -> Error {
    Error::MethodNotAllowed(format!(
        "{method} is not allowed here: the Allow header lists the methods that are (see /api/v1/openapi.json)"
    ))
}

/// The answer to a path that does not exist.
pub async fn not_found() -> Error {
    Error::NotFound(
        "no such endpoint: the API lives under /api/v1 (see /api/v1/openapi.json)".into(),
    )
}

/// The answer when a handler panicked: a bug, logged; the client gets the JSON shape.
pub fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Error::Internal("a request handler panicked".into()).into_response()
}

/// The last guard of the error shape: an error answer that is not JSON (one the framework
/// made where no handler ran) is turned into one, keeping its status and headers.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // Pages answer their errors as pages.
    if json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    tracing::debug!(%status, message = %text, "a framework answer put in the JSON error shape");
    let error = match status {
        StatusCode::NOT_FOUND => Error::NotFound(text),
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed(text),
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType(text),
        StatusCode::UNAUTHORIZED => Error::Unauthorized(text),
        s if s.is_client_error() => Error::BadRequest(text),
        _ => Error::Internal(text),
    };
    let fresh = error.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let (_, body) = fresh.into_parts();
    // The status a handler or the framework chose stays, with its headers (`Allow`).
    Response::from_parts(parts, body)
}
