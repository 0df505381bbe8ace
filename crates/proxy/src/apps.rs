//! Hosted apps: a version's files served from the node's file store by content hash.
//! Request paths are only ever looked up in the version's file list, never joined onto a
//! directory, so no path (`..`, encoded or double-encoded) reaches another file. Responses
//! carry the MIME type, a strong `ETag` and `Last-Modified` (304 on a match), honour one
//! `Range`, prefer precompressed `.br`/`.gz` siblings the client accepts, and set
//! `Cache-Control` (long-lived for names with a content hash, `no-cache` for HTML).
//! Small files are served from memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED,
    LOCATION, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use portico_model::AppBundle;

use crate::body::ResponseBody;
use crate::fault::{ErrorKind, ProxyError};

/// Files at most this big are kept in memory once read.
const MEMORY_FILE_MAX: u64 = 256 * 1024;
/// Memory for cached files, per node.
const MEMORY_TOTAL_MAX: usize = 64 * 1024 * 1024;
/// Text files from this size up to [`GZIP_MAX`] are gzipped when the client takes it and
/// the app has no precompressed sibling; the result is kept in memory.
const GZIP_MIN: u64 = 512;
const GZIP_MAX: u64 = 8 * 1024 * 1024;

/// The node's app files: a directory by content hash, and the small ones in memory.
#[derive(Debug)]
pub struct AppFiles {
    dir: PathBuf,
    /// Read on every small-file request, written once per file: readers never wait on
    /// each other.
    memory: RwLock<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    files: HashMap<String, Bytes>,
    /// Gzipped copies of text files, by the hash of the original.
    gzipped: HashMap<String, Bytes>,
    bytes: usize,
}

impl AppFiles {
    /// Files under `dir` (`<dir>/ab/abcdef...`).
    pub fn new(dir: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            dir: dir.into(),
            memory: RwLock::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a file is kept.
    pub fn path(&self, hash: &str) -> PathBuf {
        portico_model::app::blob_path(&self.dir, hash)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Memory> {
        self.memory
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Memory> {
        self.memory
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A file's bytes `start..end`, from memory or disk.
    async fn body(
        &self,
        hash: &str,
        size: u64,
        start: u64,
        end: u64,
    ) -> std::io::Result<ResponseBody> {
        if size <= MEMORY_FILE_MAX {
            let cached = self.read().files.get(hash).cloned();
            let all = match cached {
                Some(b) => b,
                None => {
                    let b = Bytes::from(tokio::fs::read(self.path(hash)).await?);
                    let mut m = self.write();
                    if m.bytes + b.len() <= MEMORY_TOTAL_MAX && !m.files.contains_key(hash) {
                        m.bytes += b.len();
                        m.files.insert(hash.to_owned(), b.clone());
                    }
                    b
                }
            };
            let (s, e) = (start as usize, (end as usize).min(all.len()));
            return Ok(ResponseBody::full(all.slice(s.min(e)..e)));
        }
        let mut file = tokio::fs::File::open(self.path(hash)).await?;
        if start > 0 {
            use tokio::io::AsyncSeekExt as _;
            file.seek(std::io::SeekFrom::Start(start)).await?;
        }
        Ok(ResponseBody::file(file, end - start))
    }

    /// The gzip of a file, made once (off the event loop) and kept in memory.
    async fn gzip(&self, hash: &str, size: u64) -> std::io::Result<Bytes> {
        {
            let m = self.read();
            if let Some(b) = m.gzipped.get(hash) {
                return Ok(b.clone());
            }
            // Compressing again for every request would cost more than sending the file as
            // it is: only when the result can be kept.
            if m.bytes + size as usize > MEMORY_TOTAL_MAX {
                return Err(std::io::Error::other(
                    "no memory left for compressed copies",
                ));
            }
        }
        let raw = tokio::fs::read(self.path(hash)).await?;
        let zipped = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(raw.len() / 3),
                flate2::Compression::new(6),
            );
            enc.write_all(&raw)?;
            enc.finish()
        })
        .await
        .map_err(std::io::Error::other)??;
        let b = Bytes::from(zipped);
        let mut m = self.write();
        if m.bytes + b.len() <= MEMORY_TOTAL_MAX && !m.gzipped.contains_key(hash) {
            m.bytes += b.len();
            m.gzipped.insert(hash.to_owned(), b.clone());
        }
        Ok(b)
    }

    /// Drops memory copies of files no longer served.
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        let mut m = self.write();
        m.files.retain(|h, _| keep.contains(h));
        m.gzipped.retain(|h, _| keep.contains(h));
        m.bytes = m
            .files
            .values()
            .chain(m.gzipped.values())
            .map(Bytes::len)
            .sum();
    }

    /// Removes files from disk that `keep` does not name; answers how many.
    pub fn sweep(&self, keep: &std::collections::HashSet<String>) -> usize {
        let mut removed = 0;
        let Ok(top) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        for d in top.flatten() {
            if d.file_name().len() != 2 {
                continue;
            }
            let Ok(files) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                // Whole files no longer served, and downloads a crash left behind.
                let stale = (portico_model::app::hash_ok(&name) && !keep.contains(&name))
                    || name.ends_with(".part");
                if stale && std::fs::remove_file(f.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// One file, with the headers of its responses made once.
#[derive(Debug)]
struct Entry {
    hash: String,
    size: u64,
    content_type: HeaderValue,
    etag: HeaderValue,
    cache_control: HeaderValue,
    /// Precompressed siblings: (`br` or `gzip`, hash, size, etag).
    encoded: Vec<(&'static str, String, u64, HeaderValue)>,
    /// Text worth gzipping on the fly (when no sibling is there).
    compressible: bool,
    /// The ETag of the on-the-fly gzip.
    gzip_etag: HeaderValue,
}

/// A compiled app version.
#[derive(Debug)]
pub struct AppRuntime {
    slug: String,
    files: HashMap<String, Arc<Entry>>,
    spa: Option<Arc<Entry>>,
    not_found: Option<Arc<Entry>>,
    last_modified: HeaderValue,
    modified: std::time::SystemTime,
    store: Arc<AppFiles>,
}

impl AppRuntime {
    /// Compiles a bundle; every file must be in the store already (a version is switched
    /// to only when all of its files are present).
    pub fn compile(b: &AppBundle, store: &Arc<AppFiles>) -> Result<Self, String> {
        let mut missing = 0;
        for f in b.files.values() {
            match std::fs::metadata(store.path(&f.hash)) {
                Ok(m) if m.len() == f.size => {}
                _ => missing += 1,
            }
        }
        if missing > 0 {
            return Err(format!(
                "app {}: {missing} of its {} files are not on this node yet",
                b.key(),
                b.files.len()
            ));
        }
        let modified =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(b.created_at.max(0) as u64);
        let last_modified =
            HeaderValue::from_str(&httpdate::fmt_http_date(modified)).map_err(|e| e.to_string())?;
        let mut files = HashMap::with_capacity(b.files.len());
        for (path, f) in &b.files {
            let mut encoded = Vec::new();
            for (suffix, coding) in [(".br", "br"), (".gz", "gzip")] {
                if let Some(c) = b.files.get(&format!("{path}{suffix}")) {
                    encoded.push((coding, c.hash.clone(), c.size, etag(&c.hash)));
                }
            }
            let cache = cache_control(b, path);
            files.insert(
                path.clone(),
                Arc::new(Entry {
                    hash: f.hash.clone(),
                    size: f.size,
                    content_type: HeaderValue::from_static(mime(path)),
                    etag: etag(&f.hash),
                    compressible: compressible(mime(path)) && encoded.is_empty(),
                    gzip_etag: HeaderValue::from_str(&format!(
                        "\"{}-gz\"",
                        &f.hash[..f.hash.len().min(32)]
                    ))
                    .unwrap_or_else(|_| HeaderValue::from_static("\"gz\"")),
                    cache_control: HeaderValue::from_str(&cache)
                        .map_err(|_| format!("app {}: bad Cache-Control `{cache}`", b.key()))?,
                    encoded,
                }),
            );
        }
        let spa = if b.spa {
            files.get("index.html").cloned()
        } else {
            None
        };
        let not_found = b.not_found.as_ref().and_then(|p| files.get(p).cloned());
        Ok(Self {
            slug: b.slug.clone(),
            files,
            spa,
            not_found,
            last_modified,
            modified,
            store: store.clone(),
        })
    }

    /// The hashes of its files.
    pub fn hashes(&self) -> impl Iterator<Item = &str> {
        self.files.values().map(|e| e.hash.as_str())
    }

    /// Answers a request whose path below the app's root is `rest` (`root` is the matched
    /// prefix, for redirects to the root with a trailing slash).
    pub async fn serve(
        &self,
        method: &Method,
        root: &str,
        rest: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if method != Method::GET && method != Method::HEAD {
            let mut e = ProxyError::new(ErrorKind::MethodNotAllowed, "an app answers GET and HEAD");
            e.allow = Some("GET, HEAD");
            return Err(e);
        }
        let head = method == Method::HEAD;
        if rest.is_empty() && !root.is_empty() {
            // `/my-app` -> `/my-app/`, so the app's relative links resolve under its root.
            return Ok(redirect(&format!("{root}/"), query));
        }
        let Some(decoded) = percent_decode(rest) else {
            return Err(ProxyError::new(
                ErrorKind::BadRequest,
                "the path is not valid UTF-8 once decoded",
            ));
        };
        let trimmed = decoded.trim_start_matches('/');
        let key: std::borrow::Cow<'_, str> = if trimmed.is_empty() || trimmed.ends_with('/') {
            format!("{trimmed}index.html").into()
        } else {
            trimmed.into()
        };
        if let Some(e) = self.files.get(key.as_ref()) {
            return self.file(e, StatusCode::OK, headers, head).await;
        }
        if self.files.contains_key(&format!("{key}/index.html")) {
            return Ok(redirect(&format!("{root}/{key}/"), query));
        }
        let last = key.rsplit('/').next().unwrap_or("");
        let wants_html = headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        if let Some(index) = &self.spa
            && (!last.contains('.') || wants_html)
        {
            return self.file(index, StatusCode::OK, headers, head).await;
        }
        match &self.not_found {
            Some(page) => {
                self.file(page, StatusCode::NOT_FOUND, &HeaderMap::new(), head)
                    .await
            }
            None => Err(ProxyError::new(
                ErrorKind::NotFound,
                format!("app `{}` has no file `{key}`", self.slug),
            )),
        }
    }

    async fn file(
        &self,
        e: &Entry,
        status: StatusCode,
        req: &HeaderMap,
        head: bool,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // Precompressed sibling the client takes, best first.
        let accepted = accepted_encodings(req);
        let (mut coding, hash, mut size, mut tag) = e
            .encoded
            .iter()
            .find(|(c, ..)| accepted.takes(c))
            .map_or((None, &e.hash, e.size, &e.etag), |(c, h, s, t)| {
                (Some(*c), h, *s, t)
            });
        // Text without a precompressed sibling: gzip it (once) when the client takes it.
        let mut zipped = None;
        if coding.is_none()
            && e.compressible
            && (GZIP_MIN..=GZIP_MAX).contains(&e.size)
            && accepted.gzip
        {
            match self.store.gzip(&e.hash, e.size).await {
                Ok(b) => {
                    coding = Some("gzip");
                    size = b.len() as u64;
                    tag = &e.gzip_etag;
                    zipped = Some(b);
                }
                Err(err) => {
                    tracing::debug!(app = %self.slug, file = %e.hash, error = %err, "not gzipped; sent as it is");
                }
            }
        }
        let mut h = HeaderMap::with_capacity(12);
        h.insert(CONTENT_TYPE, e.content_type.clone());
        h.insert(
            CACHE_CONTROL,
            if status == StatusCode::OK {
                e.cache_control.clone()
            } else {
                HeaderValue::from_static("no-cache")
            },
        );
        if !e.encoded.is_empty() || e.compressible {
            h.insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
        let mut resp = Response::new(ResponseBody::empty());
        if status == StatusCode::OK {
            h.insert(ETAG, tag.clone());
            h.insert(LAST_MODIFIED, self.last_modified.clone());
            if not_modified(req, tag, self.modified) {
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                h.remove(CONTENT_TYPE);
                *resp.headers_mut() = h;
                return Ok(resp);
            }
        }
        if let Some(c) = coding {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(c));
        }
        let mut start = 0;
        let mut end = size;
        *resp.status_mut() = status;
        if status == StatusCode::OK && coding.is_none() {
            h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            match range(req, tag, self.modified, size) {
                Range::Full => {}
                Range::Part(s, e_) => {
                    start = s;
                    end = e_;
                    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{}/{size}", e_ - 1)) {
                        h.insert(CONTENT_RANGE, v);
                    }
                }
                Range::Unsatisfiable => {
                    let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        r.headers_mut().insert(CONTENT_RANGE, v);
                    }
                    return Ok(r);
                }
            }
        }
        *resp.headers_mut() = h;
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(end - start));
        if head {
            return Ok(resp);
        }
        if let Some(b) = zipped {
            *resp.body_mut() = ResponseBody::full(b);
            return Ok(resp);
        }
        match self.store.body(hash, size, start, end).await {
            Ok(b) => *resp.body_mut() = b,
            Err(err) => {
                tracing::error!(app = %self.slug, file = %hash, error = %err, "an app file cannot be read");
                return Err(ProxyError::new(
                    ErrorKind::Internal,
                    "the file cannot be read on this node",
                ));
            }
        }
        Ok(resp)
    }
}

fn etag(hash: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", &hash[..hash.len().min(32)]))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn plain(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(text.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn redirect(to: &str, query: Option<&str>) -> Response<ResponseBody> {
    let target = match query {
        Some(q) => format!("{to}?{q}"),
        None => to.to_owned(),
    };
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&target) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8 or holds a NUL.
fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('%') {
        return Some(s.into());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    let text = String::from_utf8(out).ok()?;
    (!text.contains('\0')).then_some(text.into())
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The codings of ours a client takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Accepted {
    br: bool,
    gzip: bool,
}

impl Accepted {
    fn takes(self, coding: &str) -> bool {
        match coding {
            "br" => self.br,
            "gzip" => self.gzip,
            _ => false,
        }
    }

    /// Brotli first when both are taken.
    #[cfg(test)]
    fn list(self) -> Vec<&'static str> {
        [(self.br, "br"), (self.gzip, "gzip")]
            .into_iter()
            .filter_map(|(on, c)| on.then_some(c))
            .collect()
    }
}

/// `br` and `gzip` as far as `Accept-Encoding` allows them (q=0 refuses); no allocation.
fn accepted_encodings(h: &HeaderMap) -> Accepted {
    let mut out = Accepted::default();
    for v in h.get_all(ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            if refused {
                continue;
            }
            if name.eq_ignore_ascii_case("br") {
                out.br = true;
            } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                out.gzip = true;
            } else if name == "*" {
                out = Accepted {
                    br: true,
                    gzip: true,
                };
            }
        }
    }
    out
}

/// Whether the client's copy is current: `If-None-Match` (weak comparison), else
/// `If-Modified-Since`.
fn not_modified(h: &HeaderMap, tag: &HeaderValue, modified: std::time::SystemTime) -> bool {
    if let Some(inm) = h.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let mine = tag.to_str().unwrap_or("");
        return inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == mine);
    }
    h.get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| modified <= since)
}

enum Range {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (several, or a malformed one, get the whole file, as RFC 9110
/// allows); `If-Range` with another validator gets the whole file too.
fn range(h: &HeaderMap, tag: &HeaderValue, modified: std::time::SystemTime, size: u64) -> Range {
    let Some(spec) = h.get(http::header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Full;
    };
    if let Some(cond) = h.get(IF_RANGE).and_then(|v| v.to_str().ok()) {
        let current = if cond.starts_with('"') {
            Some(cond) == tag.to_str().ok()
        } else {
            httpdate::parse_http_date(cond).is_ok_and(|d| modified <= d)
        };
        if !current {
            return Range::Full;
        }
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    if set.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = set.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else {
                return Range::Full;
            };
            if n == 0 {
                return Range::Unsatisfiable;
            }
            (size.saturating_sub(n), size)
        }
        (false, _) => {
            let Ok(s) = a.parse::<u64>() else {
                return Range::Full;
            };
            let e = if b.is_empty() {
                size
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= s => e.saturating_add(1).min(size),
                    _ => return Range::Full,
                }
            };
            (s, e)
        }
        (true, true) => return Range::Full,
    };
    if start >= size || start >= end {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end)
}

/// The `Cache-Control` of a path: the app's first matching rule, else by kind.
fn cache_control(b: &AppBundle, path: &str) -> String {
    if let Some(r) = b.cache_control.iter().find(|r| glob(&r.pattern, path)) {
        return r.value.clone();
    }
    if path.ends_with(".html") || path.ends_with(".htm") {
        "no-cache".into()
    } else if has_content_hash(path) {
        "public, max-age=31536000, immutable".into()
    } else {
        "public, max-age=3600".into()
    }
}

/// `*` matches any run of characters (slashes included).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Whether a file name carries a content hash (`app.3f2a9c1b.js`, `index-DiwrgTda.js`): a
/// `.`- or `-`-separated part of 8 or more letters and digits with a digit or both cases.
fn has_content_hash(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    stem.split(['.', '-']).any(|part| {
        part.len() >= 8
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && (part.bytes().any(|b| b.is_ascii_digit())
                || (part.bytes().any(|b| b.is_ascii_uppercase())
                    && part.bytes().any(|b| b.is_ascii_lowercase())))
    })
}

/// Whether a type is text that compresses well.
fn compressible(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime.starts_with("application/json")
        || mime.starts_with("application/manifest+json")
        || mime.starts_with("application/xml")
        || mime.starts_with("image/svg+xml")
        || mime == "application/wasm"
}

/// The MIME type by extension.
fn mime(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "br" => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hashed_names_are_recognised() {
        for hashed in [
            "assets/app.3f2a9c1b.js",
            "index-DiwrgTda.js",
            "main.8f14e45fceea167a.css",
        ] {
            assert!(has_content_hash(hashed), "{hashed}");
        }
        for plain in [
            "index.html",
            "bootstrap.min.css",
            "jquery-3.6.0.min.js",
            "logo.png",
        ] {
            assert!(!has_content_hash(plain), "{plain}");
        }
    }

    #[test]
    fn globs_match_with_stars() {
        assert!(glob("*.js", "assets/a.js"));
        assert!(glob("assets/*", "assets/x/y.png"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("*.js", "a.json"));
        assert!(glob("index.html", "index.html"));
        assert!(!glob("index.html", "x/index.html"));
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let tag = HeaderValue::from_static("\"abc\"");
        let t = std::time::UNIX_EPOCH;
        let r = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::RANGE,
                HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
            match range(&h, &tag, t, 100) {
                Range::Full => "full".to_owned(),
                Range::Part(a, b) => format!("{a}-{b}"),
                Range::Unsatisfiable => "416".to_owned(),
            }
        };
        assert_eq!(r("bytes=0-9"), "0-10");
        assert_eq!(r("bytes=90-"), "90-100");
        assert_eq!(r("bytes=-5"), "95-100");
        assert_eq!(r("bytes=50-500"), "50-100");
        assert_eq!(r("bytes=100-"), "416");
        assert_eq!(r("bytes=-0"), "416");
        assert_eq!(r("bytes=0-1,5-6"), "full");
        assert_eq!(r("items=0-1"), "full");
        assert_eq!(r("bytes=9-3"), "full");
        assert_eq!(r("bytes=0-18446744073709551615"), "0-100");
    }

    #[test]
    fn accept_encoding_prefers_brotli_and_honours_q_zero() {
        let a = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                ACCEPT_ENCODING,
                HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
            accepted_encodings(&h).list()
        };
        assert_eq!(a("gzip, deflate, br"), vec!["br", "gzip"]);
        assert_eq!(a("gzip;q=1, br;q=0"), vec!["gzip"]);
        assert_eq!(a("identity"), Vec::<&str>::new());
    }

    #[test]
    fn percent_decoding_refuses_nul_and_bad_utf8() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%2e%2e/x").as_deref(), Some("../x"));
        assert_eq!(percent_decode("%00"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
    }
}
