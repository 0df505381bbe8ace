//! Phase `cors`: preflights answered at the gateway, `Access-Control-*` headers on the
//! responses of routes with a CORS policy, and the developer portal's Try Out rule, which
//! is the same machinery with the portal's origin, any method, the requested headers and
//! every response header exposed.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, SET_COOKIE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use portico_model::Cors;

use crate::body::ResponseBody;
use crate::fault::{ErrorKind, ProxyError};

/// Longest `Access-Control-Request-Headers` echoed back; a longer one is refused.
pub const MAX_ECHOED_HEADERS: usize = 2048;

/// How long browsers may cache a Try Out preflight, in seconds.
pub const PORTAL_MAX_AGE: u32 = 600;

/// A compiled CORS policy: a route's `cors`, or the portal's Try Out rule.
#[derive(Debug)]
pub struct CorsPolicy {
    any_origin: bool,
    origins: Vec<String>,
    /// Methods allowed and their header value; `None` allows the method a preflight asks for.
    methods: Option<(Vec<Method>, HeaderValue)>,
    headers: Vec<String>,
    headers_value: Option<HeaderValue>,
    expose: Expose,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

/// Which response headers a browser may read.
#[derive(Debug)]
enum Expose {
    /// Only the CORS-safelisted ones.
    Safelisted,
    /// These.
    Listed(HeaderValue),
    /// Every one the response carries (the portal's Try Out shows them).
    All,
}

fn join(list: &[String]) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&list.join(", ")).map_err(|_| format!("bad CORS list {list:?}"))
}

impl CorsPolicy {
    /// Compiles a policy.
    pub fn compile(c: &Cors) -> Result<Self, String> {
        let methods: Vec<String> = if c.allow_methods.is_empty() {
            vec!["GET".into(), "HEAD".into(), "POST".into()]
        } else {
            c.allow_methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect()
        };
        Ok(Self {
            any_origin: c.allow_origins.iter().any(|o| o == "*"),
            origins: c
                .allow_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            methods: Some((
                methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect(),
                join(&methods)?,
            )),
            headers: c
                .allow_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            headers_value: if c.allow_headers.is_empty() {
                None
            } else {
                Some(join(&c.allow_headers)?)
            },
            expose: if c.expose_headers.is_empty() {
                Expose::Safelisted
            } else {
                Expose::Listed(join(&c.expose_headers)?)
            },
            credentials: c.allow_credentials,
            max_age: c.max_age.map(HeaderValue::from),
        })
    }

    /// The developer portal's Try Out rule for `origin` (a Snapshot's `portal.origin`): its
    /// preflights allow the method and headers they ask for, and its requests may read every
    /// response header. No credentials: the Try Out sends its key or token itself.
    pub fn portal(origin: &str) -> Result<Self, String> {
        let origin = portico_model::portal::parse_origin(origin)?;
        Ok(Self {
            any_origin: false,
            origins: vec![origin],
            methods: None,
            headers: Vec::new(),
            headers_value: None,
            expose: Expose::All,
            credentials: false,
            max_age: Some(HeaderValue::from(PORTAL_MAX_AGE)),
        })
    }

    /// Whether `origin` may call (without allocating: this runs on every request that
    /// carries an `Origin` to a route with a policy).
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any_origin && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        self.allows(origin).then(|| origin.clone())
    }

    /// Whether this request is a preflight.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        *method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answers a preflight: 204 with what is allowed, or 403 saying what is not.
    pub fn preflight(&self, headers: &HeaderMap) -> Result<Response<ResponseBody>, ProxyError> {
        let forbidden = |d: &'static str| ProxyError::new(ErrorKind::Forbidden, d);
        let origin = headers.get(ORIGIN).ok_or_else(|| forbidden("no Origin"))?;
        let allow_origin = self
            .allow_origin(origin)
            .ok_or_else(|| forbidden("this origin may not call the API (CORS)"))?;
        let requested_method = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .ok_or_else(|| forbidden("no Access-Control-Request-Method"))?;
        let method = Method::from_bytes(requested_method.as_bytes())
            .map_err(|_| forbidden("Access-Control-Request-Method is not a method"))?;
        let allow_methods = match &self.methods {
            Some((list, _)) if !list.contains(&method) => {
                return Err(forbidden("this method is not allowed cross-origin (CORS)"));
            }
            Some((_, value)) => value.clone(),
            None => requested_method.clone(),
        };
        let requested = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(req) = requested.and_then(|v| v.to_str().ok())
            && !self.headers.is_empty()
        {
            for h in req.split(',').map(str::trim) {
                if !h.is_empty() && !self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)) {
                    return Err(forbidden(
                        "a requested header is not allowed cross-origin (CORS)",
                    ));
                }
            }
        }
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, allow_methods);
        match (&self.headers_value, requested) {
            (Some(v), _) => {
                h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            (None, Some(r)) => {
                // Echoed: only a bounded list of header names goes back.
                if r.len() > MAX_ECHOED_HEADERS || !is_name_list(r.as_bytes()) {
                    return Err(forbidden(
                        "Access-Control-Request-Headers is not a short list of header names",
                    ));
                }
                h.insert(ACCESS_CONTROL_ALLOW_HEADERS, r.clone());
            }
            (None, None) => {}
        }
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(m) = &self.max_age {
            h.insert(ACCESS_CONTROL_MAX_AGE, m.clone());
        }
        h.insert(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Ok(resp)
    }

    /// Adds the CORS headers to an actual response for `origin`. What a policy applied
    /// before (the route's own, when this is the portal's) is kept: exposed headers are
    /// added to, `Vary: Origin` is not repeated.
    pub fn decorate(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        let Some(allow) = self.allow_origin(origin) else {
            return;
        };
        match &self.expose {
            Expose::Safelisted => {}
            Expose::Listed(e) => {
                h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
            }
            Expose::All => {
                if let Some(all) = response_names(h) {
                    h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, all);
                }
            }
        }
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !varies_by_origin(h) {
            h.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// `Access-Control-Expose-Headers` naming every header of the response (but the CORS ones
/// and `Set-Cookie`, which browsers never expose), after the names already exposed.
fn response_names(h: &HeaderMap) -> Option<HeaderValue> {
    let mut out = String::new();
    if let Some(before) = h
        .get(ACCESS_CONTROL_EXPOSE_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        out.push_str(before.trim());
    }
    for name in h.keys() {
        let n = name.as_str();
        if n.starts_with("access-control-") || *name == SET_COOKIE {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(n);
    }
    HeaderValue::from_str(&out).ok().filter(|_| !out.is_empty())
}

/// Whether a `Vary` of the response already names `Origin` (or `*`).
fn varies_by_origin(h: &HeaderMap) -> bool {
    h.get_all(VARY).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.eq_ignore_ascii_case(b"origin")
        })
    })
}

/// A comma-separated list of header names (HTTP tokens), as a preflight asks for them.
fn is_name_list(v: &[u8]) -> bool {
    v.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~, \t".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy::compile(&Cors {
            allow_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["apikey".into(), "content-type".into()],
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: credentials,
            max_age: Some(600),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            ORIGIN,
            HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("x")),
        );
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap_or(HeaderValue::from_static("x")),
        );
        if let Some(v) = headers {
            h.insert(
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        h
    }

    #[test]
    fn preflights_allow_what_is_listed_and_name_what_is_not() {
        let p = policy(&["https://app.example.com"], true);
        let r = p
            .preflight(&preflight(
                "https://app.example.com",
                "PUT",
                Some("ApiKey, Content-Type"),
            ))
            .unwrap_or_else(|e| panic!("{}", e.detail));
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        for (o, m, hd) in [
            ("https://evil.example.com", "PUT", None),
            ("https://app.example.com", "DELETE", None),
            ("https://app.example.com", "GET", Some("x-secret")),
        ] {
            let e = p
                .preflight(&preflight(o, m, hd))
                .err()
                .unwrap_or_else(|| panic!("{o} {m} allowed"));
            assert_eq!(e.kind, ErrorKind::Forbidden);
        }
    }

    #[test]
    fn any_origin_is_a_star_without_credentials() {
        let p = policy(&["*"], false);
        let mut h = HeaderMap::new();
        p.decorate(&HeaderValue::from_static("https://x.example"), &mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        let strict = policy(&["https://a.example"], false);
        let mut h = HeaderMap::new();
        strict.decorate(&HeaderValue::from_static("https://b.example"), &mut h);
        assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[test]
    fn the_portal_rule_echoes_what_is_asked_and_exposes_every_header() {
        let p =
            CorsPolicy::portal("HTTPS://Portal.Example.com:443").unwrap_or_else(|e| panic!("{e}"));
        assert!(p.allows(&HeaderValue::from_static("https://portal.example.com")));
        assert!(p.allows(&HeaderValue::from_static("https://PORTAL.example.com")));
        assert!(!p.allows(&HeaderValue::from_static("https://portal.example.com:8443")));
        assert!(!p.allows(&HeaderValue::from_static("http://portal.example.com")));
        let r = p
            .preflight(&preflight(
                "https://portal.example.com",
                "DELETE",
                Some("apikey, x-trace"),
            ))
            .unwrap_or_else(|e| panic!("{}", e.detail));
        let h = r.headers();
        assert_eq!(r.status(), 204);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://portal.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "DELETE");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "apikey, x-trace");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        // Echoed lists are bounded and must be header names.
        let long = vec!["x-a"; MAX_ECHOED_HEADERS / 3].join(",");
        for asked in [long.as_str(), "x-a; evil=1", "x-a\"b"] {
            let e = p
                .preflight(&preflight("https://portal.example.com", "GET", Some(asked)))
                .err()
                .unwrap_or_else(|| panic!("{asked} echoed"));
            assert_eq!(e.kind, ErrorKind::Forbidden);
        }
        // The actual response: every header the try-out may show, `Vary` once.
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-request-id", HeaderValue::from_static("1"));
        h.append(SET_COOKIE, HeaderValue::from_static("a=b"));
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding, origin"));
        p.decorate(
            &HeaderValue::from_static("https://portal.example.com"),
            &mut h,
        );
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://portal.example.com");
        assert_eq!(
            h[ACCESS_CONTROL_EXPOSE_HEADERS],
            "content-type, x-request-id, vary"
        );
        assert_eq!(h.get_all(VARY).iter().count(), 1);
    }

    #[test]
    fn the_portal_rule_adds_to_an_apis_own_policy() {
        let own = policy(&["https://portal.example.com"], true);
        let p = CorsPolicy::portal("https://portal.example.com").unwrap_or_else(|e| panic!("{e}"));
        let origin = HeaderValue::from_static("https://portal.example.com");
        let mut h = HeaderMap::new();
        h.insert("x-upstream", HeaderValue::from_static("1"));
        own.decorate(&origin, &mut h);
        p.decorate(&origin, &mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://portal.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            h[ACCESS_CONTROL_EXPOSE_HEADERS],
            "x-request-id, x-upstream, vary"
        );
        assert_eq!(h[VARY], "Origin");
        assert_eq!(h.get_all(VARY).iter().count(), 1);
    }
}
