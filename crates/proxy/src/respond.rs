//! Errors on the request path and the one place they become responses: JSON for HTTP
//! clients, trailers-only gRPC status for gRPC clients.

use std::borrow::Cow;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// Who caused an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something the gateway will not forward.
    Downstream,
    /// The upstream failed or could not be reached.
    Upstream,
    /// The gateway itself.
    Internal,
}

/// What went wrong while serving a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matches.
    NoRoute,
    /// The request is malformed (bad path, bad header).
    BadRequest,
    /// The request headers are larger than the limit.
    HeadersTooLarge,
    /// The request body is larger than the limit.
    BodyTooLarge,
    /// The route's service has no available endpoint.
    NoEndpoint,
    /// The service's connection pool is full (`max_connections`, `max_requests`,
    /// `max_pending_requests`).
    Overflow,
    /// Connecting to the endpoint failed.
    ConnectFailed,
    /// Connecting to the endpoint timed out.
    ConnectTimeout,
    /// The upstream did not answer within the request timeout.
    UpstreamTimeout,
    /// The upstream closed or reset the connection, or answered with something that is not HTTP.
    UpstreamReset,
    /// An upgrade was asked of a service that speaks HTTP/2.
    UpgradeUnsupported,
    /// The client broke off its request body.
    ClientAborted,
    /// The client's request body stalled past the listener's body timeouts.
    RequestTimeout,
    /// The request uses a feature the gateway does not implement (a transfer coding).
    NotImplemented,
    /// Credentials are missing, unknown or expired.
    Unauthorized,
    /// The caller is known but may not call this (key type, subscription).
    Forbidden,
    /// A throttling tier's limit is reached.
    RateLimited,
}

/// An error with the detail shown to the client.
#[derive(Clone, Debug)]
pub struct ProxyError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail (never a secret).
    pub detail: Cow<'static, str>,
    /// For 429: the limit that was reached.
    pub rate: Option<RateInfo>,
}

/// The limit behind a 429, for `Retry-After` and the `RateLimit-*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests per window.
    pub limit: u32,
    /// Window length in seconds.
    pub window: u64,
    /// Seconds until a request would pass.
    pub retry_after: u64,
    /// `RateLimit-Policy` (`limit;w=window`), made when the tier was compiled.
    pub policy: HeaderValue,
}

impl ProxyError {
    /// An error of `kind` with `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            rate: None,
        }
    }
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest | Self::ClientAborted => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoEndpoint | Self::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectFailed | Self::UpstreamReset | Self::UpgradeUnsupported => {
                StatusCode::BAD_GATEWAY
            }
            Self::ConnectTimeout | Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The machine-readable reason in JSON bodies and access logs.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::BadRequest => "bad_request",
            Self::HeadersTooLarge => "headers_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::NoEndpoint => "no_healthy_endpoint",
            Self::Overflow => "upstream_overflow",
            Self::ConnectFailed => "upstream_connect_failed",
            Self::ConnectTimeout => "upstream_connect_timeout",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamReset => "upstream_reset",
            Self::UpgradeUnsupported => "upgrade_unsupported",
            Self::ClientAborted => "client_aborted",
            Self::RequestTimeout => "request_timeout",
            Self::NotImplemented => "not_implemented",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
        }
    }

    /// Who was at fault.
    pub fn fault(self) -> Fault {
        match self {
            Self::NoRoute
            | Self::BadRequest
            | Self::HeadersTooLarge
            | Self::BodyTooLarge
            | Self::ClientAborted
            | Self::RequestTimeout
            | Self::NotImplemented
            | Self::Unauthorized
            | Self::Forbidden
            | Self::RateLimited => Fault::Downstream,
            Self::NoEndpoint
            | Self::Overflow
            | Self::ConnectFailed
            | Self::ConnectTimeout
            | Self::UpstreamTimeout
            | Self::UpstreamReset
            | Self::UpgradeUnsupported => Fault::Upstream,
        }
    }

    /// The gRPC status code for gRPC clients.
    pub fn grpc_status(self) -> u8 {
        match self {
            Self::NoRoute | Self::NotImplemented => 12, // UNIMPLEMENTED
            Self::BadRequest | Self::ClientAborted => 3, // INVALID_ARGUMENT
            Self::HeadersTooLarge | Self::BodyTooLarge => 8, // RESOURCE_EXHAUSTED
            Self::UpstreamTimeout | Self::RequestTimeout => 4, // DEADLINE_EXCEEDED
            Self::UpgradeUnsupported => 13,             // INTERNAL
            Self::Unauthorized => 16,                   // UNAUTHENTICATED
            Self::Forbidden => 7,                       // PERMISSION_DENIED
            Self::RateLimited => 8,                     // RESOURCE_EXHAUSTED
            Self::NoEndpoint
            | Self::Overflow
            | Self::ConnectFailed
            | Self::ConnectTimeout
            | Self::UpstreamReset => 14, // UNAVAILABLE
        }
    }
}

/// Turns an error into the response the client gets.
pub fn error_response(
    err: &ProxyError,
    grpc: bool,
    request_id: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let mut builder = Response::builder();
    if grpc {
        builder = builder
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/grpc")
            .header("grpc-status", err.kind.grpc_status().to_string())
            .header("grpc-message", grpc_message(&err.detail));
    } else {
        let mut body = String::with_capacity(128 + err.detail.len());
        body.push_str("{\"error\":\"");
        body.push_str(err.kind.code());
        body.push_str("\",\"status\":");
        body.push_str(err.kind.status().as_str());
        body.push_str(",\"message\":");
        crate::access_log::json_str(&mut body, &err.detail);
        if let Some(id) = request_id.and_then(|v| v.to_str().ok()) {
            body.push_str(",\"request_id\":");
            crate::access_log::json_str(&mut body, id);
        }
        body.push_str("}\n");
        builder = builder
            .status(err.kind.status())
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, body.len());
        if let Some(id) = request_id {
            builder = builder.header("x-request-id", id.clone());
        }
        if let Some(r) = &err.rate {
            builder = builder
                .header("retry-after", r.retry_after)
                .header("ratelimit-limit", r.limit)
                .header("ratelimit-remaining", 0)
                .header("ratelimit-reset", r.retry_after)
                .header("ratelimit-policy", r.policy.clone());
        }
        if err.kind == ErrorKind::Unauthorized {
            builder = builder.header(
                "www-authenticate",
                "Bearer realm=\"portico\", APIKey realm=\"portico\"",
            );
        }
        return builder
            .body(ResponseBody::full(body))
            .unwrap_or_else(|_| fallback());
    }
    if let Some(id) = request_id {
        builder = builder.header("x-request-id", id.clone());
    }
    builder
        .body(ResponseBody::empty())
        .unwrap_or_else(|_| fallback())
}

fn fallback() -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// Percent-encodes a gRPC status message as the gRPC HTTP/2 spec asks.
fn grpc_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_where_they_should_be() {
        assert_eq!(ErrorKind::ConnectFailed.status(), 502);
        assert_eq!(ErrorKind::NoEndpoint.status(), 503);
        assert_eq!(ErrorKind::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorKind::ConnectTimeout.status(), 504);
        assert_eq!(ErrorKind::NotImplemented.status(), 501);
        assert_eq!(ErrorKind::NoRoute.fault(), Fault::Downstream);
        assert_eq!(ErrorKind::UpstreamReset.fault(), Fault::Upstream);
    }

    #[test]
    fn grpc_errors_are_trailers_only_with_status() {
        let r = error_response(
            &ProxyError::new(ErrorKind::NoEndpoint, "no endpoint: café"),
            true,
            None,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no endpoint: caf%C3%A9");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }
}
