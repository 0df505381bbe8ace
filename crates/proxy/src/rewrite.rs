//! Path and host handling: normalization before routing, App Mesh prefix rewrites, percent
//! decoding. Pure functions, table-tested.

use std::borrow::Cow;

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// Dot segments climb above the root.
    AboveRoot,
}

/// Normalizes a request path before routing, so that what the router matches is what the
/// upstream receives: percent-encoded unreserved characters are decoded (`%7E` → `~`,
/// `%2e` → `.`), other escapes get upper-case hex, and `.`/`..` segments are resolved
/// (RFC 3986 section 5.2.4). `..` above the root is refused rather than clamped.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let needs_work = path.contains('%') || has_dot_segment(path);
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    if !has_dot_segment(&decoded) {
        return Ok(Cow::Owned(decoded));
    }
    remove_dot_segments(&decoded).map(Cow::Owned)
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| seg == "." || seg == "..")
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) else {
                return Err(PathError::BadPercentEncoding);
            };
            let c = h * 16 + l;
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(HEX[(c >> 4) as usize] as char);
                out.push(HEX[(c & 15) as usize] as char);
            }
            i += 3;
        } else {
            // Copy the run up to the next '%' (keeps multi-byte characters whole).
            let next = path[i..].find('%').map_or(path.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
        }
    }
    Ok(out)
}

fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Ok(s)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as written; invalid UTF-8 is replaced).
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Replaces the first `prefix_len` bytes of `path` with `replacement`, App Mesh style: with
/// replacement `/`, prefix `/chapter` turns `/chapter/page` into `/page`, `/chapter1` into
/// `/1` and `/chapter` into `/`. One slash is dropped where both sides have one.
pub fn replace_prefix(path: &str, prefix_len: usize, replacement: &str) -> String {
    let rest = path.get(prefix_len..).unwrap_or("");
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    if replacement.ends_with('/') && rest.starts_with('/') {
        out.push_str(&rest[1..]);
    } else {
        out.push_str(rest);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The host a request is routed on: lower-case, without port or trailing dot.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                raw
            }
        })
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_mesh_prefix_rewrite_examples() {
        // The App Mesh virtual gateway documentation's own examples, with prefix `/chapter`.
        for (path, want) in [
            ("/chapter/page", "/page"),
            ("/chapter1", "/1"),
            ("/chapter", "/"),
        ] {
            assert_eq!(replace_prefix(path, "/chapter".len(), "/"), want, "{path}");
        }
        // With prefix `/`, the default rewrite changes nothing.
        assert_eq!(replace_prefix("/chapter/page", 1, "/"), "/chapter/page");
        // A trailing-slash prefix.
        assert_eq!(
            replace_prefix("/chapter/page", "/chapter/".len(), "/"),
            "/page"
        );
    }

    #[test]
    fn prefix_replacement_values() {
        for (path, plen, repl, want) in [
            ("/foo/bar", 4, "/xyz", "/xyz/bar"),
            ("/foo", 4, "/xyz", "/xyz"),
            ("/foo/bar", 4, "/xyz/", "/xyz/bar"),
            ("/foo/", 4, "/xyz/", "/xyz/"),
            ("/foo/bar", 4, "/", "/bar"),
            ("/v1/users", 3, "/v2", "/v2/users"),
        ] {
            assert_eq!(replace_prefix(path, plen, repl), want, "{path} {repl}");
        }
    }

    #[test]
    fn paths_are_normalized() {
        for (input, want) in [
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/%7Euser", "/~user"),
            ("/a%2fb", "/a%2Fb"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E%2E/%2e/b", "/b"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/", "/"),
            ("/..a/b", "/..a/b"),
        ] {
            assert_eq!(normalize_path(input).as_deref(), Ok(want), "{input}");
        }
        assert_eq!(normalize_path("/../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(
            normalize_path("/a/%2e%2e/%2e%2e/x"),
            Err(PathError::AboveRoot)
        );
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadPercentEncoding));
        assert!(matches!(
            normalize_path("/plain/path"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn hosts_are_normalized() {
        for (input, want) in [
            ("Example.COM", "example.com"),
            ("example.com:8080", "example.com"),
            ("example.com.", "example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("127.0.0.1:80", "127.0.0.1"),
        ] {
            assert_eq!(normalize_host(input), want, "{input}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalization_never_panics_and_is_idempotent(path in "/[a-zA-Z0-9%./~_-]{0,40}") {
            if let Ok(once) = normalize_path(&path) {
                proptest::prop_assert!(once.starts_with('/'));
                proptest::prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
                let twice = normalize_path(&once).expect("a normalized path normalizes");
                proptest::prop_assert_eq!(&*twice, &*once);
            }
        }

        #[test]
        fn any_input_is_handled(raw in proptest::prelude::any::<String>(), n in 0usize..64) {
            let _ = normalize_path(&raw);
            let _ = normalize_host(&raw);
            let _ = percent_decode(&raw);
            let _ = replace_prefix(&raw, n, "/x");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
