//! The combined conditions must take exactly the requests App Mesh's two steps take, and
//! send on the same path. Checked on every path built from pieces of the prefixes involved.

use super::*;

/// Portico's prefix rewrite (crates/proxy/src/rewrite.rs `replace_prefix`, as the model
/// documents it): the matched prefix replaced, one `/` dropped where both sides have one.
fn replace_prefix(path: &str, len: usize, with: &str) -> String {
    let rest = &path[len..];
    let mut out = with.to_owned();
    if with.ends_with('/') && rest.starts_with('/') {
        out.push_str(&rest[1..]);
    } else {
        out.push_str(rest);
    }
    if out.is_empty() { "/".into() } else { out }
}

fn regex_hit(x: &str, p: &str) -> bool {
    portico_model::validate::anchored_regex(x)
        .map(|re| re.is_match(p))
        .unwrap_or(false)
}

/// App Mesh: the gateway route's match and rewrite, then the router route's match.
fn app_mesh(g: &Gateway, r: &Router, p: &str) -> Option<String> {
    let sent = match g {
        Gateway::Any => p.to_owned(),
        Gateway::Prefix { prefix, replace } => {
            if !p.starts_with(prefix.as_str()) {
                return None;
            }
            match replace {
                None => p.to_owned(),
                Some(v) => replace_prefix(p, prefix.len(), v),
            }
        }
        Gateway::Exact { path, rewrite } => {
            if p != path {
                return None;
            }
            rewrite.clone().unwrap_or_else(|| p.to_owned())
        }
        Gateway::Regex { regex, rewrite } => {
            if !regex_hit(regex, p) {
                return None;
            }
            rewrite.clone().unwrap_or_else(|| p.to_owned())
        }
    };
    let hit = match r {
        Router::Any => true,
        Router::Prefix(x) => sent.starts_with(x.as_str()),
        Router::Exact(x) => &sent == x,
        Router::Regex(x) => regex_hit(x, &sent),
    };
    hit.then_some(sent)
}

/// Portico: the first of the flat routes that matches, and the path it sends on.
fn portico(flats: &[Flat], p: &str) -> Option<String> {
    let hits: Vec<String> = flats
        .iter()
        .filter_map(|f| {
            let (hit, prefix_len) = match &f.path {
                None => (true, None),
                Some(PathMatch::Prefix(x)) => (p.starts_with(x.as_str()), Some(x.len())),
                Some(PathMatch::Exact(x)) => (p == x, None),
                Some(PathMatch::Regex(x)) => (regex_hit(x, p), None),
                Some(PathMatch::PathPrefix(_)) => unreachable!("never made"),
            };
            if !hit {
                return None;
            }
            Some(match (&f.rewrite_path, &f.prefix, prefix_len) {
                (Some(x), _, _) => x.clone(),
                (None, Some(PrefixRewrite::Off), _) | (None, _, None) => p.to_owned(),
                (None, Some(PrefixRewrite::Value(v)), Some(n)) => replace_prefix(p, n, v),
                (None, None, Some(n)) => replace_prefix(p, n, "/"),
            })
        })
        .collect();
    assert!(hits.len() <= 1, "two flat routes take `{p}`: {flats:?}");
    hits.into_iter().next()
}

/// Paths from pieces: every sequence of up to four pieces, without `//`.
fn paths(pieces: &[&str]) -> Vec<String> {
    let mut out = vec!["/".to_owned()];
    let mut frontier = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for f in &frontier {
            for piece in pieces {
                let p = format!("{f}{piece}");
                if !p.contains("//") {
                    next.push(p.clone());
                    if p.starts_with('/') {
                        out.push(p);
                    }
                }
            }
        }
        frontier = next;
    }
    out.sort();
    out.dedup();
    out
}

fn check(g: &Gateway, r: &Router) {
    let flats = match combine(g, r) {
        Combined::Routes(f) => f,
        Combined::Never(_) => Vec::new(),
        Combined::Inexpressible(m) => panic!("{g:?} + {r:?}: {m}"),
    };
    for p in paths(&["/", "chapter", "page", "1", "x", "api", "v2"]) {
        assert_eq!(
            portico(&flats, &p),
            app_mesh(g, r, &p),
            "{g:?} + {r:?} on `{p}` (flat: {flats:?})"
        );
    }
}

fn prefix(p: &str, v: Option<&str>) -> Gateway {
    Gateway::Prefix {
        prefix: p.into(),
        replace: v.map(str::to_owned),
    }
}

#[test]
fn every_pairing_takes_what_app_mesh_takes() {
    let gateways = [
        Gateway::Any,
        prefix("/", Some("/")),
        prefix("/chapter", Some("/")),
        prefix("/chapter/", Some("/")),
        prefix("/chapter", None),
        prefix("/chapter", Some("/v2")),
        prefix("/chapter", Some("/v2/")),
        prefix("/chapter/", Some("/api/v2/")),
        Gateway::Exact {
            path: "/chapter/page".into(),
            rewrite: None,
        },
        Gateway::Exact {
            path: "/x".into(),
            rewrite: Some("/page/1".into()),
        },
        Gateway::Regex {
            regex: "/chapter/[0-9]+".into(),
            rewrite: Some("/page".into()),
        },
    ];
    let routers = [
        Router::Any,
        Router::Prefix("/".into()),
        Router::Prefix("/page".into()),
        Router::Prefix("/page/".into()),
        Router::Prefix("/1".into()),
        Router::Prefix("/v2".into()),
        Router::Prefix("/v2/page".into()),
        Router::Prefix("/chapter/page".into()),
        Router::Exact("/page".into()),
        Router::Exact("/".into()),
        Router::Exact("/v2/".into()),
        Router::Exact("/chapter/1".into()),
    ];
    for g in &gateways {
        for r in &routers {
            check(g, r);
        }
    }
    // Regexes pair with what keeps the path.
    for g in [Gateway::Any, prefix("/", Some("/")), prefix("/", None)] {
        check(&g, &Router::Regex("/page/[a-z0-9]+".into()));
    }
}

#[test]
fn the_documented_examples_hold() {
    // Gateway prefix `/chapter` straight to a node: `/chapter/page` -> `/page`, `/chapter1` -> `/1`.
    let g = prefix("/chapter", Some("/"));
    let f = alone(&g);
    assert_eq!(f.path, Some(PathMatch::Prefix("/chapter".into())));
    assert_eq!(f.prefix, None, "Portico's default rewrite is App Mesh's");
    assert_eq!(
        portico(std::slice::from_ref(&f), "/chapter/page").as_deref(),
        Some("/page")
    );
    assert_eq!(portico(&[f], "/chapter1").as_deref(), Some("/1"));
    // Behind a router with routes `/1` and `/page`.
    let Combined::Routes(page) = combine(&g, &Router::Prefix("/page".into())) else {
        panic!("combines")
    };
    assert_eq!(
        page.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
        [
            Some(PathMatch::Prefix("/chapter/page".into())),
            Some(PathMatch::Prefix("/chapterpage".into()))
        ]
    );
    assert_eq!(portico(&page, "/chapter/page").as_deref(), Some("/page"));
    let Combined::Routes(one) = combine(&g, &Router::Prefix("/1".into())) else {
        panic!("combines")
    };
    assert_eq!(portico(&one, "/chapter1").as_deref(), Some("/1"));
    // `/` keeps every path as it is: the router's prefix is the client's.
    let Combined::Routes(all) = combine(&prefix("/", Some("/")), &Router::Prefix("/page".into()))
    else {
        panic!("combines")
    };
    assert_eq!(
        all,
        [Flat {
            path: Some(PathMatch::Prefix("/page".into())),
            prefix: Some(PrefixRewrite::Off),
            rewrite_path: None
        }]
    );
}

#[test]
fn what_cannot_be_said_is_told() {
    assert!(matches!(
        combine(
            &prefix("/chapter", Some("/")),
            &Router::Regex("/p.*".into())
        ),
        Combined::Inexpressible(_)
    ));
    assert!(matches!(
        combine(&prefix("/chapter", None), &Router::Prefix("/page".into())),
        Combined::Never(_)
    ));
    assert!(matches!(
        combine(
            &prefix("/chapter", Some("/v2/")),
            &Router::Prefix("/v1".into())
        ),
        Combined::Never(_)
    ));
}
