//! The data plane's one error type on the request path ([`ProxyError`]: what went wrong,
//! who caused it, whether it may be retried) and how any of them is rendered as a response
//! ([`error_response`]: JSON for HTTP clients, a trailers-only gRPC status for gRPC
//! clients). The pipeline's `fail` step is the one place that calls it for a request (log
//! line, metrics, CORS); the HTTP/1.1 server calls it for heads it cannot parse, before
//! there is a request.

use std::borrow::Cow;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// Who caused an error: its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something the gateway will not forward.
    Downstream,
    /// The upstream failed or could not be reached.
    Upstream,
    /// The gateway itself (a bug, or a resource of this node such as a file it cannot read).
    Internal,
    /// The gateway's configuration asks for something it cannot do for this request.
    Config,
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
    /// The upstream reset this request's HTTP/2 stream: an answer about the request, not a
    /// sign that the endpoint is unwell.
    StreamReset,
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
    /// What the request names does not exist (a hosted app's file).
    NotFound,
    /// The method is not one the target answers (`allow` says which are).
    MethodNotAllowed,
    /// The gateway failed on its own side.
    Internal,
}

/// An error on the request path, with the detail shown to the client.
#[derive(Clone, Debug)]
pub struct ProxyError {
    /// What went wrong (and from it, the status and the source: [`ErrorKind::fault`]).
    pub kind: ErrorKind,
    /// Human-readable detail (never a secret).
    pub detail: Cow<'static, str>,
    /// Whether the request may be sent again, to another endpoint: true only when it is
    /// known not to have reached the upstream (connect failures). Whether it is retried also
    /// depends on the request (a body already streamed cannot be sent again), the service's
    /// attempts and its retry budget.
    pub retry: bool,
    /// For 429: the limit that was reached.
    pub rate: Option<RateInfo>,
    /// For 405: the methods the target answers.
    pub allow: Option<&'static str>,
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
            retry: false,
            rate: None,
            allow: None,
        }
    }

    /// Marks the error as one after which the request may be sent again.
    pub fn retryable(mut self) -> Self {
        self.retry = true;
        self
    }

    /// Who caused it.
    pub fn fault(&self) -> Fault {
        self.kind.fault()
    }
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadRequest | Self::ClientAborted => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoEndpoint | Self::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectFailed
            | Self::UpstreamReset
            | Self::StreamReset
            | Self::UpgradeUnsupported => StatusCode::BAD_GATEWAY,
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
            Self::UpstreamReset | Self::StreamReset => "upstream_reset",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Internal => "internal_error",
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
            | Self::RateLimited
            | Self::NotFound
            | Self::MethodNotAllowed => Fault::Downstream,
            Self::NoEndpoint
            | Self::Overflow
            | Self::ConnectFailed
            | Self::ConnectTimeout
            | Self::UpstreamTimeout
            | Self::UpstreamReset
            | Self::StreamReset => Fault::Upstream,
            Self::UpgradeUnsupported => Fault::Config,
            Self::Internal => Fault::Internal,
        }
    }

    /// Whether an error of this kind, met on an attempt, says the endpoint is unwell (for
    /// outlier detection): connect failures and timeouts, broken connections; never what
    /// the client did, a reset stream, or the gateway's own limits.
    pub fn counts_against_endpoint(self) -> bool {
        matches!(
            self,
            Self::ConnectFailed
                | Self::ConnectTimeout
                | Self::UpstreamTimeout
                | Self::UpstreamReset
        )
    }

    /// The gRPC status code for gRPC clients.
    pub fn grpc_status(self) -> u8 {
        match self {
            Self::NoRoute | Self::NotImplemented | Self::MethodNotAllowed => 12, // UNIMPLEMENTED
            Self::NotFound => 5,                                                 // NOT_FOUND
            Self::Internal => 13,                                                // INTERNAL
            Self::BadRequest | Self::ClientAborted => 3,                         // INVALID_ARGUMENT
            Self::HeadersTooLarge | Self::BodyTooLarge => 8, // RESOURCE_EXHAUSTED
            Self::UpstreamTimeout | Self::RequestTimeout => 4, // DEADLINE_EXCEEDED
            Self::UpgradeUnsupported => 13,                  // INTERNAL
            Self::Unauthorized => 16,                        // UNAUTHENTICATED
            Self::Forbidden => 7,                            // PERMISSION_DENIED
            Self::RateLimited => 8,                          // RESOURCE_EXHAUSTED
            Self::NoEndpoint
            | Self::Overflow
            | Self::ConnectFailed
            | Self::ConnectTimeout
            | Self::UpstreamReset
            | Self::StreamReset => 14, // UNAVAILABLE
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
        if let Some(allow) = &err.allow {
            builder = builder.header(http::header::ALLOW, HeaderValue::from_static(allow));
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
        assert_eq!(ErrorKind::UpgradeUnsupported.fault(), Fault::Config);
        assert_eq!(ErrorKind::Internal.fault(), Fault::Internal);
        assert_eq!(ErrorKind::Internal.status(), 500);
        // A reset stream answers about the request; a reset connection about the endpoint.
        assert!(ErrorKind::UpstreamReset.counts_against_endpoint());
        assert!(!ErrorKind::StreamReset.counts_against_endpoint());
        assert_eq!(
            ErrorKind::StreamReset.code(),
            ErrorKind::UpstreamReset.code()
        );
        assert!(!ErrorKind::BodyTooLarge.counts_against_endpoint());
    }

    #[test]
    fn only_errors_marked_so_may_be_retried() {
        let e = ProxyError::new(ErrorKind::ConnectFailed, "refused");
        assert!(!e.retry);
        assert!(e.retryable().retry);
    }

    #[test]
    fn a_405_says_what_the_target_answers() {
        let mut e = ProxyError::new(ErrorKind::MethodNotAllowed, "an app answers GET and HEAD");
        e.allow = Some("GET, HEAD");
        let r = error_response(&e, false, None);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET, HEAD");
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
