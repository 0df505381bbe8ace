//! Path conditions of a gateway route and a virtual router's route, combined into Portico
//! path matches and rewrites.
//!
//! In App Mesh a gateway route matches the client's path and rewrites it; the virtual
//! router's route then matches the *rewritten* path. A Portico route matches once, on the
//! client's path, so the router route's condition is carried back through the gateway's
//! rewrite. The rewrite is the one Portico applies to a `prefix` match (App Mesh's): the
//! matched prefix is replaced by a value (`/` by default), and where the value ends with `/`
//! and the rest of the path starts with `/`, one of the two is dropped — `/chapter/page`
//! becomes `/page` and `/chapter1` becomes `/1` under the prefix `/chapter`.
//!
//! So a router prefix `/page` behind the gateway prefix `/chapter` is reached by the client
//! paths `/chapter/page…` and `/chapterpage…`: two Portico routes, both rewriting their
//! prefix to `/page`. Paths with an empty segment (`//`) at the junction are the one case not
//! followed: after a gateway prefix that ends with `/` they would need their own route,
//! which no client path without `//` reaches.

use portico_model::{PathMatch, PrefixRewrite};

/// What a gateway route does with the path of the requests it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Gateway {
    /// No path condition: every path, kept.
    Any,
    /// A prefix; the matched prefix replaced by the value (`/` by default), or kept (`None`).
    Prefix {
        /// The prefix matched.
        prefix: String,
        /// What replaces it; kept when `None`.
        replace: Option<String>,
    },
    /// An exact path, rewritten to another one when given.
    Exact {
        /// The path matched.
        path: String,
        /// The path sent on.
        rewrite: Option<String>,
    },
    /// A regular expression over the whole path, rewritten to a path when given.
    Regex {
        /// The expression.
        regex: String,
        /// The path sent on.
        rewrite: Option<String>,
    },
}

/// A router route's path condition (on the path the gateway sends on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Router {
    /// Every path.
    Any,
    /// A prefix.
    Prefix(String),
    /// An exact path.
    Exact(String),
    /// A regular expression over the whole path.
    Regex(String),
}

/// One Portico path condition with the rewrite that sends on the path App Mesh would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Flat {
    /// The match.
    pub path: Option<PathMatch>,
    /// The prefix rewrite (`None`: Portico's default, `/` for a prefix match).
    pub prefix: Option<PrefixRewrite>,
    /// The whole path sent on.
    pub rewrite_path: Option<String>,
}

/// The outcome of combining.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Combined {
    /// These Portico conditions together take exactly the requests App Mesh's pair takes.
    Routes(Vec<Flat>),
    /// No request can meet both conditions.
    Never(String),
    /// No set of Portico path conditions says the same.
    Inexpressible(String),
}

impl Flat {
    fn prefix(prefix: String, replace: Option<&str>) -> Self {
        let rw = match replace {
            None => Some(PrefixRewrite::Off),
            Some("/") => None,
            Some(v) if v == prefix => Some(PrefixRewrite::Off),
            Some(v) => Some(PrefixRewrite::Value(v.to_owned())),
        };
        Self {
            path: Some(PathMatch::Prefix(prefix)),
            prefix: rw,
            rewrite_path: None,
        }
    }

    fn exact(path: String, sent: Option<&str>) -> Self {
        let rewrite_path = sent.filter(|s| *s != path).map(str::to_owned);
        Self {
            path: Some(PathMatch::Exact(path)),
            prefix: None,
            rewrite_path,
        }
    }

    fn regex(regex: String, sent: Option<&str>) -> Self {
        Self {
            path: Some(PathMatch::Regex(regex)),
            prefix: None,
            rewrite_path: sent.map(str::to_owned),
        }
    }
}

/// The gateway route's path condition alone (a virtual service provided by a node).
pub(crate) fn alone(g: &Gateway) -> Flat {
    match g {
        Gateway::Any => Flat {
            path: None,
            prefix: None,
            rewrite_path: None,
        },
        Gateway::Prefix { prefix, replace } => Flat::prefix(prefix.clone(), replace.as_deref()),
        Gateway::Exact { path, rewrite } => Flat::exact(path.clone(), rewrite.as_deref()),
        Gateway::Regex { regex, rewrite } => Flat::regex(regex.clone(), rewrite.as_deref()),
    }
}

/// The Portico path conditions taking the requests that meet `g` and, once `g` rewrote
/// them, `r`.
pub(crate) fn combine(g: &Gateway, r: &Router) -> Combined {
    match g {
        Gateway::Any => Combined::Routes(vec![match r {
            Router::Any => Flat {
                path: None,
                prefix: None,
                rewrite_path: None,
            },
            Router::Prefix(p) => Flat::prefix(p.clone(), None),
            Router::Exact(e) => Flat::exact(e.clone(), None),
            Router::Regex(x) => Flat::regex(x.clone(), None),
        }]),
        Gateway::Prefix {
            prefix,
            replace: None,
        } => kept_prefix(prefix, r),
        Gateway::Prefix {
            prefix,
            replace: Some(v),
        } => rewritten_prefix(prefix, v, r),
        Gateway::Exact { path, rewrite } => {
            let sent = rewrite.as_deref().unwrap_or(path);
            constant(sent, r, || Flat::exact(path.clone(), rewrite.as_deref()))
        }
        Gateway::Regex {
            regex,
            rewrite: Some(sent),
        } => constant(sent, r, || Flat::regex(regex.clone(), Some(sent))),
        Gateway::Regex {
            regex,
            rewrite: None,
        } => match r {
            Router::Any => Combined::Routes(vec![Flat::regex(regex.clone(), None)]),
            Router::Prefix(p) if p == "/" => {
                Combined::Routes(vec![Flat::regex(regex.clone(), None)])
            }
            Router::Exact(e) => match regex_matches(regex, e) {
                Ok(true) => Combined::Routes(vec![Flat::exact(e.clone(), None)]),
                Ok(false) => Combined::Never(format!(
                    "the gateway route's regex `{regex}` never matches the router route's path `{e}`"
                )),
                Err(m) => Combined::Inexpressible(m),
            },
            Router::Regex(x) if x == regex => {
                Combined::Routes(vec![Flat::regex(regex.clone(), None)])
            }
            _ => Combined::Inexpressible(format!(
                "the gateway route's regex `{regex}` and the router route's path condition cannot be written as one Portico path condition"
            )),
        },
    }
}

/// The gateway keeps the path (`defaultPrefix: DISABLED`).
fn kept_prefix(g: &str, r: &Router) -> Combined {
    let never = |what: &str| {
        Combined::Never(format!(
            "the gateway route's prefix `{g}` and the router route's {what} take no path in common"
        ))
    };
    match r {
        Router::Any => Combined::Routes(vec![Flat::prefix(g.to_owned(), None)]),
        Router::Prefix(p) if g.starts_with(p.as_str()) => {
            Combined::Routes(vec![Flat::prefix(g.to_owned(), None)])
        }
        Router::Prefix(p) if p.starts_with(g) => {
            Combined::Routes(vec![Flat::prefix(p.clone(), None)])
        }
        Router::Prefix(p) => never(&format!("prefix `{p}`")),
        Router::Exact(e) if e.starts_with(g) => {
            Combined::Routes(vec![Flat::exact(e.clone(), None)])
        }
        Router::Exact(e) => never(&format!("path `{e}`")),
        Router::Regex(x) if g == "/" => Combined::Routes(vec![Flat::regex(x.clone(), None)]),
        Router::Regex(x) => Combined::Inexpressible(format!(
            "a path starting with `{g}` that also matches the regex `{x}` cannot be written as one Portico path condition"
        )),
    }
}

/// The gateway replaces its matched prefix `g` by `v`.
fn rewritten_prefix(g: &str, v: &str, r: &Router) -> Combined {
    // Where the rest of the path must start, in the client's path, for the rewritten path to
    // continue with `s` after `v`: one place when `v` does not end with `/`, two otherwise
    // (`/chapter` + `page` and `/chapter` + `/page` both become `/page`).
    let joins = |s: &str| -> Vec<String> {
        if !v.ends_with('/') || s.starts_with('/') {
            return vec![format!("{g}{}{s}", if v.ends_with('/') { "/" } else { "" })];
        }
        if g.ends_with('/') {
            vec![format!("{g}{s}")]
        } else {
            vec![format!("{g}/{s}"), format!("{g}{s}")]
        }
    };
    match r {
        Router::Any => Combined::Routes(vec![Flat::prefix(g.to_owned(), Some(v))]),
        Router::Prefix(p) if v.starts_with(p.as_str()) => {
            Combined::Routes(vec![Flat::prefix(g.to_owned(), Some(v))])
        }
        Router::Prefix(p) if p.starts_with(v) => {
            let s = &p[v.len()..];
            Combined::Routes(
                joins(s)
                    .into_iter()
                    .map(|m| Flat::prefix(m, Some(p)))
                    .collect(),
            )
        }
        Router::Prefix(p) => Combined::Never(format!(
            "the gateway route sends paths starting with `{v}`, which the router route's prefix `{p}` never takes"
        )),
        Router::Exact(e) if e.starts_with(v) => {
            let t = &e[v.len()..];
            Combined::Routes(
                joins(t)
                    .into_iter()
                    .map(|m| Flat::exact(m, Some(e)))
                    .collect(),
            )
        }
        Router::Exact(e) => Combined::Never(format!(
            "the gateway route sends paths starting with `{v}`, never the router route's path `{e}`"
        )),
        Router::Regex(x) if g == "/" && v == "/" => {
            Combined::Routes(vec![Flat::regex(x.clone(), None)])
        }
        Router::Regex(x) => Combined::Inexpressible(format!(
            "the router route's regex `{x}` applies to the path after the gateway route's rewrite of `{g}` to `{v}`, which no Portico regex on the client's path can say in general"
        )),
    }
}

/// The gateway sends one path, `sent`, for every request it takes.
fn constant(sent: &str, r: &Router, flat: impl Fn() -> Flat) -> Combined {
    let hit = match r {
        Router::Any => Ok(true),
        Router::Prefix(p) => Ok(sent.starts_with(p.as_str())),
        Router::Exact(e) => Ok(sent == e),
        Router::Regex(x) => regex_matches(x, sent),
    };
    match hit {
        Ok(true) => Combined::Routes(vec![flat()]),
        Ok(false) => Combined::Never(format!(
            "the gateway route sends the path `{sent}`, which the router route never takes"
        )),
        Err(m) => Combined::Inexpressible(m),
    }
}

fn regex_matches(regex: &str, path: &str) -> Result<bool, String> {
    portico_model::validate::anchored_regex(regex)
        .map(|re| re.is_match(path))
        .map_err(|m| format!("the regex `{regex}` is not one Portico can run: {m}"))
}

#[cfg(test)]
#[path = "paths/tests.rs"]
mod tests;
