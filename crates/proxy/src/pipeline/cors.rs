//! Phase `cors`: on a route with a `cors` policy, or a Try Out route when the Snapshot names
//! the developer portal's origin, a preflight is answered here (after routing, before any
//! credential is asked for, never forwarded), and the origin whose answers get CORS headers
//! is kept for [`super::finish`]. Requests without `Origin`, and routes with neither, pass
//! with no more than a header lookup: nothing is allocated or locked for them.

use http::{HeaderMap, Request};

use super::{CorsAnswer, Ctx, Flow, Step};
use crate::body::ClientBody;
use crate::cors::CorsPolicy;
use crate::runtime::Route;

/// Answers preflights; notes the origin an actual request's answer is decorated for.
pub fn cors<'a>(cx: &mut Ctx<'a>, req: &Request<ClientBody>) -> Flow {
    let route = cx.route()?;
    let portal = cx.lr.portal.as_deref().filter(|_| route.try_out);
    let origin = match (&route.cors, portal) {
        (None, None) => return Ok(Step::Next),
        _ => req.headers().get(http::header::ORIGIN),
    };
    let portal = portal.filter(|p| origin.is_some_and(|o| p.allows(o)));
    let Some(origin) = origin.filter(|_| route.cors.is_some() || portal.is_some()) else {
        return Ok(Step::Next);
    };
    if CorsPolicy::is_preflight(req.method(), req.headers()) {
        if let Some(p) = portal.filter(|_| cx.try_out_preflight) {
            // The API's own answer when it allows all that is asked, else the portal's.
            if let Some(Ok(own)) = route.cors.as_ref().map(|c| c.preflight(req.headers())) {
                return Ok(Step::Answer(own));
            }
            return p.preflight(req.headers()).map(Step::Answer);
        }
        if let Some(cors) = &route.cors {
            return cors.preflight(req.headers()).map(Step::Answer);
        }
    }
    cx.cors = Some(CorsAnswer {
        origin: origin.clone(),
        portal,
    });
    Ok(Step::Next)
}

/// Adds the CORS headers to an answer (the gateway's own errors included: a browser reads
/// only answers that carry them): the route's policy first, then the portal's rule, which
/// adds to what the policy set.
pub fn decorate(route: Option<&Route>, c: &CorsAnswer<'_>, h: &mut HeaderMap) {
    if let Some(cors) = route.and_then(|r| r.cors.as_ref()) {
        cors.decorate(&c.origin, h);
    }
    if let Some(p) = c.portal {
        p.decorate(&c.origin, h);
    }
}
