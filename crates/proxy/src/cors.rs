//! Phase `cors`: preflights answered at the gateway, `Access-Control-*` headers on the
//! responses of routes with a CORS policy.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use portico_model::Cors;

use crate::body::ResponseBody;
use crate::respond::{ErrorKind, ProxyError};

/// A route's compiled CORS policy.
#[derive(Debug)]
pub struct CorsPolicy {
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    headers: Vec<String>,
    headers_value: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
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
            methods_value: join(&methods)?,
            methods: methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
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
                None
            } else {
                Some(join(&c.expose_headers)?)
            },
            credentials: c.allow_credentials,
            max_age: c.max_age.map(HeaderValue::from),
        })
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any_origin && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin.to_str().ok()?.to_ascii_lowercase();
        (self.any_origin || self.origins.contains(&o)).then(|| origin.clone())
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
        let method = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or_else(|| forbidden("Access-Control-Request-Method is not a method"))?;
        if !self.methods.contains(&method) {
            return Err(forbidden("this method is not allowed cross-origin (CORS)"));
        }
        let requested = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(req) = requested.and_then(|v| v.to_str().ok())
            && !self.headers.is_empty()
        {
            for h in req.split(',').map(|h| h.trim().to_ascii_lowercase()) {
                if !h.is_empty() && !self.headers.contains(&h) {
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
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone());
        match (&self.headers_value, requested) {
            (Some(v), _) => {
                h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            (None, Some(r)) => {
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

    /// Adds the CORS headers to an actual response for `origin`.
    pub fn decorate(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        let Some(allow) = self.allow_origin(origin) else {
            return;
        };
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = &self.expose {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
        h.append(VARY, HeaderValue::from_static("Origin"));
    }
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
}
