//! Phase `act`: what the route does with an admitted request. Redirects, fixed responses
//! and hosted apps' files are answered by the gateway itself; everything else is forwarded
//! ([`super::forward`]).

use std::borrow::Cow;
use std::fmt::Write as _;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Request, Response};

use super::{Ctx, host_of};
use crate::body::{ClientBody, ResponseBody};
use crate::fault::ProxyError;
use crate::headers::X_REQUEST_ID;
use crate::rewrite;
use crate::runtime::{Action, Fixed, PathRewrite, Redirect, Route};

/// Runs the route's action.
pub async fn act(
    cx: &mut Ctx<'_>,
    req: Request<ClientBody>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let route = cx.route()?;
    let mut resp = match &route.action {
        Action::Redirect(r) => redirect(cx, r, route, &req),
        Action::Fixed(f) => fixed(f, cx.head),
        Action::App(app) => {
            let path = cx.normalized.as_deref().unwrap_or(req.uri().path());
            let cut = route.prefix_len.unwrap_or(0).min(path.len());
            let (root, rest) = path.split_at(cut);
            let root = root.trim_end_matches('/');
            // Boxed: file serving's future (reads, gzip) would otherwise size every
            // request's, forwarded ones included.
            Box::pin(app.serve(req.method(), root, rest, req.uri().query(), req.headers())).await?
        }
        Action::Forward(f) => {
            let f = match (&route.sandbox, cx.sandbox) {
                (Some(s), true) => s,
                _ => f,
            };
            return super::forward::forward(cx, f, route, req).await;
        }
    };
    route.response_headers.apply(resp.headers_mut());
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), cx.request_id.clone());
    Ok(resp)
}

/// A redirect, after the Gateway API's rules for its scheme, host, port and path.
fn redirect(
    cx: &Ctx<'_>,
    r: &Redirect,
    route: &Route,
    req: &Request<ClientBody>,
) -> Response<ResponseBody> {
    let conn = cx.conn;
    let (req_host, req_port) = split_port(host_of(req));
    let scheme = r.scheme.as_deref().unwrap_or(conn.scheme);
    let host = r.host.as_deref().unwrap_or(req_host);
    // A given port wins; a scheme change goes to that scheme's default port; otherwise the
    // port stays: the one the client used, else the listener's.
    let port = match r.port {
        Some(p) => Some(p),
        None if scheme != conn.scheme => None,
        None => req_port.or((conn.listener_port != 0).then_some(conn.listener_port)),
    };
    let path = cx.normalized.as_deref().unwrap_or(req.uri().path());
    let path: Cow<str> = match &r.path {
        PathRewrite::Keep => Cow::Borrowed(path),
        PathRewrite::Full(p) => Cow::Borrowed(p),
        PathRewrite::Prefix(v) => Cow::Owned(rewrite::replace_prefix(
            path,
            route.prefix_len.unwrap_or(0),
            v,
        )),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port
        && !((scheme == "http" && p == 80) || (scheme == "https" && p == 443))
    {
        let _ = write!(location, ":{p}");
    }
    location.push_str(&path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// A fixed response (no body for `HEAD`).
fn fixed(f: &Fixed, head: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(if head {
        ResponseBody::empty()
    } else {
        ResponseBody::full(f.body.clone())
    });
    *resp.status_mut() = f.status;
    let h = resp.headers_mut();
    for (k, v) in &f.headers {
        h.append(k.clone(), v.clone());
    }
    if !f.body.is_empty() && !h.contains_key(CONTENT_TYPE) {
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(f.body.len()));
    resp
}

/// A host and its port, when it names one.
fn split_port(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        return match host.rfind("]:") {
            Some(i) => (&host[..=i], host[i + 2..].parse().ok()),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}
