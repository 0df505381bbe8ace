//! Phase `accept`: what makes a request malformed whatever its route, and the one host it
//! is routed, checked, logged and forwarded by. Opens the access log line.

use http::header::HOST;
use http::{HeaderValue, Request, Version};

use super::{Ctx, Flow, Step, host_of};
use crate::body::ClientBody;
use crate::exchange::LogFields;
use crate::fault::{ErrorKind, ProxyError};

/// Makes the request's host canonical, then opens its log line (with the host it is routed
/// by, or the one it came with when it is refused).
pub fn accept(cx: &mut Ctx<'_>, req: &mut Request<ClientBody>) -> Flow {
    let host = canonical_host(req);
    let span = cx
        .lr
        .tracer
        .as_ref()
        .filter(|_| cx.trace.sampled)
        .map(|tracer| {
            Box::new(crate::exchange::SpanStart {
                tracer: tracer.clone(),
                parent_id: cx.trace.parent_id,
                trace_state: cx
                    .trace
                    .tracestate
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                start: crate::exchange::unix_nanos()
                    .saturating_sub(cx.ex.started.elapsed().as_nanos() as u64),
                // Route, authenticate, limit, upstream connect and response: one allocation.
                phases: Vec::with_capacity(6),
            })
        });
    if cx.lr.access_log.is_some() || span.is_some() {
        cx.ex.span = span;
        cx.ex.log = Some(Box::new(LogFields {
            sink: cx.lr.access_log.clone(),
            client: cx.conn.peer,
            listener: cx.lr.name.clone(),
            method: req.method().clone(),
            host: host_of(req).to_owned(),
            target: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            version: req.version(),
            request_id: Some(cx.request_id.clone()),
            trace: Some((cx.trace.trace_id, cx.trace.span_id)),
            route: None,
            service: None,
            consumer: None,
            error: None,
            attempts: 0,
        }));
    }
    host.map(|()| Step::Next)
}

/// Makes `Host` the one host a request is routed, checked, logged and forwarded by. An
/// absolute-form target's authority replaces `Host` (RFC 9112 section 3.2.2); on HTTP/2 a
/// `host` that differs from `:authority` makes the request malformed (RFC 9113 section
/// 8.3.1). Userinfo in either, two `Host` fields, or none on HTTP/1.1 is refused.
fn canonical_host(req: &mut Request<ClientBody>) -> Result<(), ProxyError> {
    let bad = |what: &'static str| ProxyError::new(ErrorKind::BadRequest, what);
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("the request has more than one Host header"));
    }
    if host.is_some_and(|h| h.as_bytes().contains(&b'@')) {
        return Err(bad(
            "the Host header carries userinfo (`user@`), which is refused",
        ));
    }
    let Some(authority) = req.uri().authority() else {
        if host.is_none() && req.version() == Version::HTTP_11 {
            return Err(bad("an HTTP/1.1 request needs exactly one Host header"));
        }
        return Ok(());
    };
    let authority = authority.as_str();
    if authority.contains('@') {
        return Err(bad(
            "the request's authority carries userinfo (`user@`), which is refused",
        ));
    }
    match host {
        Some(h) if h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) => return Ok(()),
        Some(_) if req.version() == Version::HTTP_2 => {
            return Err(bad(
                "the `host` header differs from `:authority` (RFC 9113 section 8.3.1)",
            ));
        }
        // HTTP/2 without `host`: `:authority` is the host ([`host_of`] reads it), no copy.
        None if req.version() == Version::HTTP_2 => return Ok(()),
        _ => {}
    }
    // HTTP/1.1 absolute form: the target's authority replaces `Host`.
    let value = HeaderValue::from_str(authority).map_err(|_| bad("bad authority"))?;
    req.headers_mut().insert(HOST, value);
    Ok(())
}
