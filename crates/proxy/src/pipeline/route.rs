//! Phases `acme` and `route`: an open ACME HTTP-01 challenge is answered before any route;
//! then host and path are normalized and the route table is looked up once.

use std::borrow::Cow;

use http::{HeaderValue, Method, Request, Response};

use super::{Ctx, Flow, Step, host_of};
use crate::body::{ClientBody, ResponseBody};
use crate::fault::{ErrorKind, ProxyError};
use crate::rewrite;
use crate::router;
use crate::runtime::ListenerRuntime;

/// Phase `acme`: an ACME CA's HTTP-01 validation request, answered before any route (a
/// redirect to HTTPS or a catch-all route must not hide it).
pub fn acme(cx: &mut Ctx<'_>, req: &Request<ClientBody>) -> Flow {
    if cx.lr.acme_http01.is_empty() {
        return Ok(Step::Next);
    }
    let Some(answer) = req
        .uri()
        .path()
        .strip_prefix(portico_model::acme::HTTP01_PREFIX)
        .and_then(|token| cx.lr.acme_http01.get(token))
    else {
        return Ok(Step::Next);
    };
    let mut resp = Response::new(ResponseBody::full(answer.clone()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(Step::Answer(resp))
}

/// Phase `route`: finds the request's route. The developer portal's Try Out preflight is
/// routed by the method it asks for, so it is answered for the route the actual request
/// will take, and only if that is a Try Out route.
pub fn route(cx: &mut Ctx<'_>, req: &Request<ClientBody>) -> Flow {
    let lr = cx.lr;
    let try_out = try_out_preflight(lr, req)
        .and_then(|m| lookup(lr, req, &m, cx.grpc).ok())
        .filter(|(id, _)| lr.routes[*id as usize].try_out);
    cx.try_out_preflight = try_out.is_some();
    let (id, normalized) = match try_out {
        Some(found) => found,
        None => lookup(lr, req, req.method(), cx.grpc)?,
    };
    let route = &lr.routes[id as usize];
    cx.route = Some(route);
    cx.normalized = normalized;
    cx.ex.stats = Some(route.stats.clone());
    if let Some(l) = &mut cx.ex.log {
        l.route = Some(route.name.clone());
    }
    Ok(Step::Next)
}

/// The method a CORS preflight from the developer portal's origin asks for, when the
/// listener answers the portal's Try Out. Costs a pointer test on requests that are not
/// `OPTIONS` or when no portal is set.
fn try_out_preflight(lr: &ListenerRuntime, req: &Request<ClientBody>) -> Option<Method> {
    let portal = lr.portal.as_deref()?;
    if req.method() != Method::OPTIONS {
        return None;
    }
    let h = req.headers();
    if !portal.allows(h.get(http::header::ORIGIN)?) {
        return None;
    }
    Method::from_bytes(
        h.get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?
            .as_bytes(),
    )
    .ok()
}

/// Normalizes host and path and finds the route for `method` (the request's, or the one a
/// Try Out preflight asks for): its index and the normalized path when it differs.
fn lookup(
    lr: &ListenerRuntime,
    req: &Request<ClientBody>,
    method: &Method,
    grpc: bool,
) -> Result<(u32, Option<String>), ProxyError> {
    let host = rewrite::normalize_host(host_of(req));
    let path = req.uri().path();
    if path == "*" && method != Method::OPTIONS {
        // The asterisk-form belongs to OPTIONS alone (RFC 9112 section 3.2.4).
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "only OPTIONS may have `*` as its target",
        ));
    }
    let normalized = rewrite::normalize_path(path).map_err(|e| {
        ProxyError::new(
            ErrorKind::BadRequest,
            match e {
                rewrite::PathError::BadPercentEncoding => {
                    "the path has a `%` that is not followed by two hex digits"
                }
                rewrite::PathError::AboveRoot => "the path climbs above the root with `..`",
            },
        )
    })?;
    let rreq = router::Request {
        host: &host,
        path: &normalized,
        method,
        headers: req.headers(),
        query: req.uri().query(),
        grpc,
    };
    match lr.router.lookup(&rreq) {
        Some(id) => Ok((
            id,
            match normalized {
                Cow::Owned(s) => Some(s),
                Cow::Borrowed(_) => None,
            },
        )),
        None => Err(ProxyError::new(
            ErrorKind::NoRoute,
            format!(
                "no route for {} {}{}",
                method,
                host,
                truncate(&normalized, 200)
            ),
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
