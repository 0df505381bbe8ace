//! Phases `limits`, `ip`, `authenticate` and `throttle`: whether the route takes this
//! request from this caller, now.

use http::Request;
use http::header::CONTENT_LENGTH;

use super::{Ctx, Flow, Step};
use crate::body::ClientBody;
use crate::clock;
use crate::fault::{ErrorKind, ProxyError};

/// Phase `limits`: the route's header and declared body limits (the listener's header limit
/// is enforced while parsing: exactly by the HTTP/1.1 server, plain and TLS, and by
/// hyper's header list size on HTTP/2; only a smaller route limit is left).
pub fn limits(cx: &mut Ctx<'_>, req: &Request<ClientBody>) -> Flow {
    let route = cx.route()?;
    if route.max_header < cx.lr.max_header {
        let size: usize = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
            + req.method().as_str().len()
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if size as u64 > route.max_header {
            return Err(ProxyError::new(
                ErrorKind::HeadersTooLarge,
                format!(
                    "the request headers are {size} bytes; this route takes at most {}",
                    route.max_header
                ),
            ));
        }
    }
    if let Some(max) = route.max_body {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > max) {
            return Err(ProxyError::new(
                ErrorKind::BodyTooLarge,
                format!("the request body is {n} bytes; this route takes at most {max}"),
            ));
        }
    }
    Ok(Step::Next)
}

/// Phase `ip`: the route's client address rules.
pub fn ip(cx: &mut Ctx<'_>, req: &Request<ClientBody>) -> Flow {
    if let Some(rules) = &cx.route()?.ip {
        rules.check(crate::ip::client_ip(
            cx.conn.peer.ip(),
            req.headers(),
            &cx.lr.trusted_proxies,
        ))?;
    }
    Ok(Step::Next)
}

/// Phase `authenticate`: the route's credentials (API keys, JWTs); the caller's identity is
/// forwarded in headers only the gateway may set.
pub fn authenticate(cx: &mut Ctx<'_>, req: &mut Request<ClientBody>) -> Flow {
    let Some(policy) = &cx.route()?.auth else {
        // Only the gateway says who called.
        req.headers_mut().remove(&crate::auth::X_CONSUMER);
        req.headers_mut().remove(&crate::auth::X_KEY_TYPE);
        return Ok(Step::Next);
    };
    // Before checking it: a wrong key stays out of the log line too.
    if let (Some(name), Some(l)) = (&policy.query, &mut cx.ex.log)
        && let Some(redacted) = crate::auth::redact_query(&l.target, name)
    {
        l.target = redacted;
    }
    let c = crate::auth::authenticate(
        &cx.lr.security,
        policy,
        req.headers(),
        req.uri().query(),
        clock::unix_secs(),
    )?;
    cx.sandbox = c.key_type == portico_model::KeyType::Sandbox;
    crate::auth::forward_identity(policy, &c, req.headers_mut());
    if let Some(l) = &mut cx.ex.log {
        l.consumer = Some(c.consumer.clone());
    }
    cx.caller = Some(c);
    Ok(Step::Next)
}

/// Phase `throttle`: the route's tiers, for the caller (or by client when anonymous).
pub async fn throttle(cx: &mut Ctx<'_>) -> Flow {
    if let Some(t) = &cx.route()?.throttle {
        cx.lr
            .security
            .throttle(t, cx.caller.as_ref(), clock::now_ns())
            .await?;
    }
    Ok(Step::Next)
}
