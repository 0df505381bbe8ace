//! Hosted web apps: an app (slug, settings) and its immutable versions, each a set of files
//! named by content hash. A gateway serves a version from a bundle in its Snapshot; the
//! files themselves travel separately (by hash) and are cached on the node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError};

/// Longest path of a file in an app.
pub const MAX_PATH: usize = 1024;

/// An app as the control plane stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// URL-safe unique name: lower-case letters, digits and `-` (its path on the apps host).
    pub slug: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Single-page app: paths that match no file get `index.html`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spa: bool,
    /// The file answered with 404 when nothing matches (e.g. `404.html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<String>,
    /// `Cache-Control` by path pattern, first match wins, before the defaults (a year and
    /// `immutable` for names with a content hash, `no-cache` for HTML, an hour otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_control: Vec<CacheRule>,
    /// Paths under the app forwarded to a service (`/api` -> service `backend`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<AppRoute>,
    /// Versions kept besides the deployed and published ones; the oldest others are deleted.
    #[serde(default = "default_keep")]
    pub keep_versions: u32,
}

fn default_keep() -> u32 {
    10
}

/// A `Cache-Control` value for the paths matching a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// `*.js`, `assets/*` or an exact path; `*` matches any run of characters.
    pub pattern: String,
    /// The header value, e.g. `public, max-age=600`.
    pub value: String,
}

/// Requests under an app path that go to a service instead of files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoute {
    /// Path prefix inside the app, e.g. `/api`.
    pub path: String,
    /// A stored service.
    pub service: String,
}

/// One file of an app version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    /// SHA-256 of the content, lower-case hex.
    pub hash: String,
    /// Bytes.
    pub size: u64,
}

/// A version of an app as a gateway serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBundle {
    /// The app.
    pub slug: String,
    /// The version.
    pub version: u32,
    /// Files by path (`index.html`, `assets/app.3f2a9c.js`).
    pub files: BTreeMap<String, AppFile>,
    /// Single-page app fallback to `index.html`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spa: bool,
    /// The 404 page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<String>,
    /// `Cache-Control` rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_control: Vec<CacheRule>,
    /// Unix seconds the version was made (its files' `Last-Modified`).
    pub created_at: i64,
}

impl AppBundle {
    /// The key routes name it by: `slug@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.slug, self.version)
    }
}

/// Whether `slug` is a valid app slug.
pub fn slug_ok(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 63
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
}

/// Whether `hash` is a SHA-256 in lower-case hex.
pub fn hash_ok(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a file path of an app: relative, `/`-separated, no empty, `.` or `..` segment, no
/// backslash or control character.
pub fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Some("a file path is 1 to 1024 bytes");
    }
    if path.starts_with('/') {
        return Some("a file path is relative (no leading /)");
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Some("a file path has no backslash or control character");
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Some("a file path has no empty, `.` or `..` segment");
    }
    None
}

impl AppSpec {
    /// Checks every rule; errors carry field paths.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        if !slug_ok(&self.slug) {
            errors.push(FieldError::new(
                "slug",
                format!(
                    "`{}`: use lower-case letters, digits and `-` (1 to 63, not at the ends)",
                    self.slug
                ),
            ));
        }
        if let Some(p) = &self.not_found
            && let Some(m) = path_problem(p)
        {
            errors.push(FieldError::new("not_found", m));
        }
        for (i, r) in self.cache_control.iter().enumerate() {
            if r.pattern.is_empty() {
                errors.push(FieldError::new(
                    format!("cache_control[{i}].pattern"),
                    "give a pattern such as `*.js`",
                ));
            }
            if http_value_bad(&r.value) {
                errors.push(FieldError::new(
                    format!("cache_control[{i}].value"),
                    "not a valid header value",
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !r.path.starts_with('/') || r.path.len() < 2 || r.path.ends_with('/') {
                errors.push(FieldError::new(
                    format!("routes[{i}].path"),
                    "a path such as `/api` (leading /, no trailing /)",
                ));
            }
            if r.service.is_empty() {
                errors.push(FieldError::new(
                    format!("routes[{i}].service"),
                    "name a stored service",
                ));
            }
        }
        crate::validate::limits::merge(&mut errors, crate::validate::limits::of(self));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(errors))
        }
    }
}

fn http_value_bad(v: &str) -> bool {
    v.is_empty() || v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// Checks a version's file list: paths, hashes, and that the files its settings name exist.
pub fn validate_files(
    files: &BTreeMap<String, AppFile>,
    spec: &AppSpec,
    prefix: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if files.is_empty() {
        errors.push(FieldError::new(
            prefix,
            "an app version has at least one file",
        ));
    }
    for (path, f) in files {
        if let Some(m) = path_problem(path) {
            errors.push(FieldError::new(format!("{prefix}[{path}]"), m));
        }
        if !hash_ok(&f.hash) {
            errors.push(FieldError::new(
                format!("{prefix}[{path}].hash"),
                "a SHA-256 in lower-case hex",
            ));
        }
    }
    if spec.spa && !files.contains_key("index.html") {
        errors.push(FieldError::new(
            prefix,
            "a single-page app needs an index.html at its root",
        ));
    }
    if let Some(nf) = &spec.not_found
        && !files.contains_key(nf)
    {
        errors.push(FieldError::new(
            prefix,
            format!("the 404 page `{nf}` is not among the files"),
        ));
    }
    errors
}

/// Where the file with this hash is kept under a blob directory (the control plane's and a
/// node's cache use one layout): `<dir>/<first two hex digits>/<hash>`.
pub fn blob_path(dir: &std::path::Path, hash: &str) -> std::path::PathBuf {
    dir.join(hash.get(..2).unwrap_or("xx")).join(hash)
}
