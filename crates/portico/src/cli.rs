//! Client commands: `portico login`, then `gateways`, `services`, `apis`, `revisions`,
//! `deploy`, `undeploy`, `status` and `apply` against a control plane's admin API. Tables for
//! people, `-o json` for scripts; every error says what to do next.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use portico_model::{ApiSpec, Format, GatewaySpec};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `println!` for client commands: when the reader has gone away (`portico apis list |
/// head`), the command ends quietly with 141 (128 + SIGPIPE), as Unix tools do, instead of
/// panicking on the write.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::emit(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// Writes one line to standard output (see [`out!`]).
pub(crate) fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

/// Where the CLI keeps the control plane URL and token.
pub(crate) fn credentials_path() -> PathBuf {
    if let Ok(p) = std::env::var("PORTICO_CLI_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|_| PathBuf::from("."));
    base.join("portico").join("cli.json")
}

/// What `portico login` saved.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Saved {
    /// The control plane's URL.
    pub(crate) url: String,
    /// An admin token, a personal access token or a session token.
    pub(crate) token: String,
    /// PEM of the CA that signed the control plane's HTTPS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_file: Option<String>,
}

impl Saved {
    /// What `portico login` saved, if anything.
    pub(crate) fn load() -> Option<Self> {
        std::fs::read(credentials_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Writes URL and token where later commands find them (mode 0600); answers the file.
    pub(crate) fn store(&self) -> anyhow::Result<PathBuf> {
        let path = credentials_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(&path);
        let body = serde_json::to_vec_pretty(&Saved {
            url: self.url.trim_end_matches('/').to_owned(),
            token: self.token.clone(),
            ca_file: self.ca_file.clone(),
        })?;
        portico_control::secrets::write_private(&path, &body)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(path)
    }
}

/// An answer of any status: only a failure to reach the control plane is an error here.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The status.
    pub(crate) status: StatusCode,
    /// The body as JSON (`null` when it is not JSON).
    pub(crate) value: Value,
    text: String,
    retry_after: Option<u64>,
}

impl Answer {
    /// The server's `message` with every field it names, else the status and body.
    pub(crate) fn message(&self) -> String {
        let mut msg = self
            .value
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(
                || format!("{}: {}", self.status, self.text),
                ToOwned::to_owned,
            );
        if let Some(fields) = self.value.get("fields").and_then(Value::as_array) {
            for f in fields {
                msg.push_str(&format!(
                    "\n  {}: {}",
                    f["path"].as_str().unwrap_or(""),
                    f["message"].as_str().unwrap_or("")
                ));
            }
        }
        if self.value.get("message").is_none()
            && let Some(s) = self.retry_after
        {
            msg.push_str(&format!("\nTry again in {s} s."));
        }
        msg
    }
}

/// A connection to the admin API.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
    /// Output format.
    pub output: Output,
}

/// `portico login --token`: checks the token and stores URL and token (mode 0600).
pub async fn login(url: &str, token: &str, ca_file: Option<&str>) -> anyhow::Result<()> {
    let client = Client::new(
        url.to_owned(),
        token.to_owned(),
        ca_file.map(ToOwned::to_owned),
        Output::Table,
    )?;
    // Any signed-in caller may ask who it is; a control plane without `whoami` is checked
    // with the status an admin token reads.
    let answer = client
        .try_call(Method::GET, "/api/v1/auth/whoami", None)
        .await?;
    if answer.status == StatusCode::NOT_FOUND {
        client
            .call(Method::GET, "/api/v1/status", None, None)
            .await?;
    } else if !answer.status.is_success() {
        bail!("{}", client.refusal(&answer));
    }
    let path = Saved {
        url: url.to_owned(),
        token: token.to_owned(),
        ca_file: ca_file.map(ToOwned::to_owned),
    }
    .store()?;
    crate::cli::out!(
        "Logged in to {url}; credentials saved in {}",
        path.display()
    );
    Ok(())
}

impl Client {
    /// A client for `url`; an empty token sends no `Authorization` (signing in).
    pub(crate) fn new(
        url: String,
        token: String,
        ca_file: Option<String>,
        output: Output,
    ) -> anyhow::Result<Self> {
        if !portico_model::node::secure_enough(&url)
            && std::env::var_os("PORTICO_ALLOW_INSECURE_HTTP").is_none()
        {
            bail!(
                "{url} is plain HTTP to another machine: the admin token would cross the network in clear. Use https:// (with --ca-file for a private CA), or set PORTICO_ALLOW_INSECURE_HTTP=1 for development"
            );
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(f) = ca_file.or_else(|| std::env::var("PORTICO_CA_FILE").ok()) {
            let pem = std::fs::read(&f).with_context(|| format!("cannot read the CA file {f}"))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{f} is not a PEM certificate bundle"))?
            {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build()?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
            output,
        })
    }

    /// From flags or environment, else from what `portico login` saved.
    pub fn connect(
        url: Option<String>,
        token: Option<String>,
        output: Output,
    ) -> anyhow::Result<Self> {
        let (url, token, ca) = match (url, token, Saved::load()) {
            (Some(u), Some(t), s) => (u, t, s.and_then(|s| s.ca_file)),
            (u, t, Some(s)) => (u.unwrap_or(s.url), t.unwrap_or(s.token), s.ca_file),
            _ => bail!(
                "not logged in: run `portico login --url http://127.0.0.1:9400 --token <admin token>` (or `--user NAME`), or pass --server URL --admin-token TOKEN"
            ),
        };
        Self::new(url, token, ca, output)
    }

    /// One API call; non-2xx answers become errors carrying the server's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<i64>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&without_nulls(b));
        }
        if let Some(v) = if_match {
            req = req.header("if-match", format!("\"{v}\""));
        }
        self.finish(req).await
    }

    /// One API call whose refusals the caller reads itself: only a failure to reach the
    /// control plane is an error.
    pub(crate) async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&without_nulls(b));
        }
        self.exchange(req).await
    }

    /// Every item of a list: follows `next` page by page (1000 items each) to the end and
    /// answers `{"items": [...]}` with all of them.
    pub(crate) async fn get_all(&self, path: &str) -> anyhow::Result<Value> {
        const PAGE: u32 = 1000;
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_path = format!("{path}{sep}limit={PAGE}");
            if let Some(c) = &cursor {
                page_path.push_str("&cursor=");
                page_path.push_str(&encode(c));
            }
            let mut page = self.get(&page_path).await?;
            match page.get_mut("items").map(Value::take) {
                Some(Value::Array(a)) => items.extend(a),
                _ => bail!(
                    "{path}: the control plane answered without an `items` list (is it older than this CLI?)"
                ),
            }
            let next = match page.get("next") {
                None | Some(Value::Null) => break,
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    bail!("{path}: the control plane answered a cursor `{other}` that is not text")
                }
            };
            if cursor.as_deref() == Some(next.as_str()) {
                bail!(
                    "{path}: the control plane answered the cursor it was given as the next one; the list would never end"
                );
            }
            cursor = Some(next);
        }
        Ok(json!({ "items": items }))
    }

    /// The control plane's URL, without a trailing `/`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A request to `path` with the token, when there is one.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.url));
        if self.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.token)
        }
    }

    /// Sends a text body (a file as it is) with its content type; errors as [`Self::call`].
    pub(crate) async fn send_text(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        text: String,
    ) -> anyhow::Result<Value> {
        let req = self
            .request(method, path)
            .header("content-type", content_type)
            .body(text);
        Ok(self.finish(req).await?.1)
    }

    /// Sends a request; non-2xx answers become errors carrying the server's message and
    /// every field it names.
    async fn finish(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let answer = self.exchange(req).await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_MODIFIED {
            return Ok((answer.status, answer.value));
        }
        bail!("{}", self.refusal(&answer))
    }

    /// A refusal as an error message: the server's, and how to sign in again after a 401.
    pub(crate) fn refusal(&self, answer: &Answer) -> String {
        let mut msg = answer.message();
        if answer.status == StatusCode::UNAUTHORIZED {
            msg.push_str("\nLog in again: `portico login --url URL --token <admin token>` or `--user NAME` (or pass --admin-token).");
        }
        msg
    }

    /// Sends a request and reads the answer, whatever its status.
    async fn exchange(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the control plane at {}: {}\nIs `portico server` running there? Check the URL given to `portico login`.",
                self.url,
                if e.is_connect() { "connection refused".to_owned() } else { e.to_string() }
            )
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse().ok());
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            value,
            text,
            retry_after,
        })
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, path, None, None).await?.1)
    }

    /// Sends raw bytes with PUT (an app file); errors carry the server's message.
    pub(crate) async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let resp = self
            .request(Method::PUT, path)
            .header("content-type", "application/octet-stream")
            .timeout(Duration::from_secs(600))
            .body(bytes)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("upload to {} failed: {e}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{}",
                value
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("{status}: {text}"), ToOwned::to_owned)
            );
        }
        Ok(value)
    }

    /// Says what was done: the sentence on a terminal, `{"ok": true, "message": ...}` with
    /// `-o json`.
    pub(crate) fn done(&self, sentence: String) {
        if self.output == Output::Json {
            crate::cli::out!("{}", json!({ "ok": true, "message": sentence }));
        } else {
            crate::cli::out!("{sentence}");
        }
    }

    pub(crate) fn print(&self, value: &Value, columns: &[(&str, &str)], items_key: Option<&str>) {
        if self.output == Output::Json {
            crate::cli::out!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
            return;
        }
        let items: Vec<&Value> = match items_key
            .and_then(|k| value.get(k))
            .and_then(Value::as_array)
        {
            Some(a) => a.iter().collect(),
            None => vec![value],
        };
        table(columns, &items);
    }
}

/// `v` without the fields it has no value for: options not given are left out, as the API
/// refuses `null`.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Names given as repeated flags or comma-separated (`--gateway a,b --gateway c`).
pub(crate) fn names(given: &[String]) -> Vec<String> {
    given
        .iter()
        .flat_map(|g| g.split(','))
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .collect()
}

/// `text` as one query string value: every byte but RFC 3986's unreserved ones
/// percent-encoded.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads `pointer` (a JSON pointer such as `/spec/name`) as display text.
pub(crate) fn cell(v: &Value, pointer: &str) -> String {
    let is_time = pointer == "/at"
        || ["_at", "not_after", "not_before", "next_attempt"]
            .iter()
            .any(|s| pointer.ends_with(s));
    match v.pointer(pointer) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::Number(n)) if is_time && n.as_i64().is_some() => {
            utc(n.as_i64().unwrap_or_default())
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), ToOwned::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn utc(secs: i64) -> String {
    portico_model::units::utc(secs)
}

/// Widest a table cell is shown: longer values end in `…` (`-o json` shows them whole).
const CELL_MAX: usize = 60;

/// A value as one table cell: one line, at most [`CELL_MAX`] characters.
fn fit(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(CELL_MAX + 1)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.chars().count() > CELL_MAX {
        out = out.chars().take(CELL_MAX - 1).collect();
        out.push('…');
    }
    out
}

fn table(columns: &[(&str, &str)], items: &[&Value]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| columns.iter().map(|(_, p)| fit(&cell(v, p))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let pad = w.saturating_sub(c.chars().count());
                format!("{c}{}", " ".repeat(pad))
            })
            .collect();
        crate::cli::out!("{}", s.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
    for r in rows {
        line(r);
    }
}

fn read_file(path: &Path) -> anyhow::Result<(String, Format)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((text, Format::from_path(&path.to_string_lossy())))
}

fn parse_file<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let (text, format) = read_file(path)?;
    portico_model::snapshot::parse(&text, format).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.field_errors()
                .iter()
                .map(|f| format!("{}: {f}", path.display()))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

const GATEWAY_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/spec/name"),
    ("TYPE", "/spec/type"),
    ("URL", "/spec/url"),
    ("HOSTS", "/spec/hosts"),
    ("TOKEN", "/token_active"),
    ("BUILTIN", "/builtin"),
    ("VERSION", "/version"),
];

/// `portico gateways ...`
pub async fn gateways(c: &Client, cmd: crate::GatewaysCommand) -> anyhow::Result<()> {
    use crate::GatewaysCommand as G;
    match cmd {
        G::List => c.print(
            &c.get_all("/api/v1/gateways").await?,
            GATEWAY_COLUMNS,
            Some("items"),
        ),
        G::Get { name } => c.print(
            &c.get(&format!("/api/v1/gateways/{name}")).await?,
            GATEWAY_COLUMNS,
            None,
        ),
        G::Create { file } => {
            let spec: GatewaySpec = parse_file(&file)?;
            let (_, v) = c
                .call(Method::POST, "/api/v1/gateways", Some(&json!(spec)), None)
                .await?;
            c.print(&v, GATEWAY_COLUMNS, None);
        }
        G::Link(a) => {
            let admin_ca = match &a.admin_ca {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let mut body = json!({
                "admin_ca_pem": admin_ca,
                "name": a.name, "type": a.kind, "url": a.url, "ip": a.ip,
                "jwt_secret": a.jwt_secret, "api_token": a.api_token, "hosts": a.hosts,
                "listeners": a.listen.iter().map(|p| json!({"port": p})).collect::<Vec<_>>(),
                "verify": !a.no_verify, "description": a.description,
            });
            if let Some(p) = a.port {
                body["admin_port"] = json!(p);
            }
            let (_, v) = c
                .call(Method::POST, "/api/v1/gateways/link", Some(&body), None)
                .await?;
            if c.output == Output::Json {
                c.print(&v, &[], None);
            } else {
                crate::cli::out!(
                    "Linked gateway `{}` ({}){}.",
                    cell(&v, "/gateway/spec/name"),
                    cell(&v, "/gateway/spec/type"),
                    if a.no_verify {
                        " without checking it"
                    } else {
                        "; its admin API answered and the credentials match"
                    }
                );
            }
        }
        G::Delete { name, force } => {
            let path = if force {
                format!("/api/v1/gateways/{name}?force=true")
            } else {
                format!("/api/v1/gateways/{name}")
            };
            let (_, v) = c.call(Method::DELETE, &path, None, None).await?;
            if c.output == Output::Json {
                c.print(&v, &[], None);
                return Ok(());
            }
            crate::cli::out!("Deleted gateway `{name}`.");
            for what in v["removed"].as_array().into_iter().flatten() {
                crate::cli::out!("  removed with it: {}", what.as_str().unwrap_or_default());
            }
        }
        G::RotateToken { name } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/api/v1/gateways/{name}/token"),
                    None,
                    None,
                )
                .await?;
            if c.output == Output::Json {
                c.print(&v, &[], None);
            } else {
                crate::cli::out!(
                    "New API token for `{name}` (shown once): {}",
                    cell(&v, "/api_token")
                );
                if v.get("jwt_secret").is_some() {
                    crate::cli::out!("JWT secret (shown once): {}", cell(&v, "/jwt_secret"));
                }
            }
        }
        G::RevokeToken { name } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/gateways/{name}/token"),
                None,
                None,
            )
            .await?;
            c.done(format!(
                "Revoked the API token of `{name}`: its nodes keep serving what they have but receive nothing new."
            ));
        }
        G::Resync { name } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/api/v1/gateways/{name}/resync"),
                    None,
                    None,
                )
                .await?;
            c.print(
                &v,
                &[
                    ("GATEWAY", "/gateway"),
                    ("NODE", "/node/node_id"),
                    ("APPLIED", "/node/applied_version"),
                ],
                None,
            );
        }
    }
    Ok(())
}

const SERVICE_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/spec/name"),
    ("PROTOCOL", "/spec/protocol"),
    ("VERSION", "/version"),
];

/// `portico services ...`
pub async fn services(c: &Client, cmd: crate::ObjectCommand) -> anyhow::Result<()> {
    object_command(c, cmd, "services", SERVICE_COLUMNS).await
}

const ROUTE_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/spec/name"),
    ("GATEWAYS", "/spec/gateways"),
    ("VERSION", "/version"),
];

/// `portico routes ...`
pub async fn routes(c: &Client, cmd: crate::ObjectCommand) -> anyhow::Result<()> {
    object_command(c, cmd, "routes", ROUTE_COLUMNS).await
}

async fn object_command(
    c: &Client,
    cmd: crate::ObjectCommand,
    kind: &str,
    columns: &[(&str, &str)],
) -> anyhow::Result<()> {
    use crate::ObjectCommand as O;
    match cmd {
        O::List => c.print(
            &c.get_all(&format!("/api/v1/{kind}")).await?,
            columns,
            Some("items"),
        ),
        O::Get { name } => c.print(
            &c.get(&format!("/api/v1/{kind}/{name}")).await?,
            columns,
            None,
        ),
        O::Delete { name } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/{kind}/{name}"),
                None,
                None,
            )
            .await?;
            c.done(format!("Deleted `{name}`."));
        }
    }
    Ok(())
}

const API_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/spec/name"),
    ("VERSION", "/spec/version"),
    ("CONTEXT", "/spec/context"),
    ("LIFECYCLE", "/lifecycle"),
];

/// `portico apis ...`
pub async fn apis(c: &Client, cmd: crate::ApisCommand) -> anyhow::Result<()> {
    use crate::ApisCommand as A;
    match cmd {
        A::List => c.print(
            &c.get_all("/api/v1/apis").await?,
            API_COLUMNS,
            Some("items"),
        ),
        A::Get { id } => {
            let v = c.get(&format!("/api/v1/apis/{id}")).await?;
            c.print(&v, API_COLUMNS, None);
            if c.output != Output::Json {
                let deployed = v["invoke_urls"].as_array().cloned().unwrap_or_default();
                if deployed.is_empty() {
                    crate::cli::out!(
                        "\nDeployed nowhere: `portico deploy {id} --revision N --gateway G`."
                    );
                } else {
                    crate::cli::out!("\nInvoke URLs:");
                }
                for d in deployed {
                    for u in d["urls"].as_array().into_iter().flatten() {
                        crate::cli::out!(
                            "  {}  ({} gateway `{}`, revision {})",
                            u.as_str().unwrap_or_default(),
                            cell(&d, "/type"),
                            cell(&d, "/gateway"),
                            cell(&d, "/revision")
                        );
                    }
                }
            }
        }
        A::Create { file } => {
            let mut spec: ApiSpec = parse_file(&file)?;
            read_openapi(&mut spec, &file)?;
            let (_, v) = c
                .call(Method::POST, "/api/v1/apis", Some(&json!(spec)), None)
                .await?;
            c.print(&v, API_COLUMNS, None);
        }
        A::Lifecycle { id, state } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/api/v1/apis/{id}/lifecycle"),
                    Some(&json!({"state": state})),
                    None,
                )
                .await?;
            c.print(&v, API_COLUMNS, None);
        }
        A::Delete { id, force } => {
            let path = if force {
                format!("/api/v1/apis/{id}?force=true")
            } else {
                format!("/api/v1/apis/{id}")
            };
            let (_, v) = c.call(Method::DELETE, &path, None, None).await?;
            if c.output == Output::Json {
                c.print(&v, &[], None);
                return Ok(());
            }
            crate::cli::out!("Deleted API `{id}`.");
            for g in v["undeployed_from"].as_array().into_iter().flatten() {
                crate::cli::out!(
                    "  undeployed from gateway `{}`",
                    g.as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

const REVISION_COLUMNS: &[(&str, &str)] = &[
    ("API", "/api"),
    ("REVISION", "/number"),
    ("NOTE", "/note"),
    ("DEPLOYED ON", "/deployed_on"),
];

/// `portico revisions ...`
pub async fn revisions(c: &Client, cmd: crate::RevisionsCommand) -> anyhow::Result<()> {
    use crate::RevisionsCommand as R;
    match cmd {
        R::List { api } => c.print(
            &c.get_all(&format!("/api/v1/apis/{api}/revisions")).await?,
            REVISION_COLUMNS,
            Some("items"),
        ),
        R::Create { api, note } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/api/v1/apis/{api}/revisions"),
                    Some(&json!({"note": note})),
                    None,
                )
                .await?;
            c.print(&v, REVISION_COLUMNS, None);
        }
        R::Delete { api, number } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/apis/{api}/revisions/{number}"),
                None,
                None,
            )
            .await?;
            c.done(format!("Deleted revision {number} of `{api}`."));
        }
    }
    Ok(())
}

/// `portico deploy API --revision N --gateway G...`
pub async fn deploy(
    c: &Client,
    api: &str,
    revision: u32,
    gateways: &[String],
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let gateways = names(gateways);
    let (_, v) = c
        .call(
            Method::POST,
            &format!("/api/v1/apis/{api}/deployments"),
            Some(&json!({"revision": revision, "gateways": gateways})),
            None,
        )
        .await?;
    if c.output != Output::Json {
        crate::cli::out!(
            "Deployed revision {revision} of `{api}` to {}.",
            gateways.join(", ")
        );
    }
    let waited = match wait {
        Some(limit) => Some(wait_for(c, &v, limit).await?),
        None => None,
    };
    if c.output == Output::Json {
        let mut out = v;
        if let Some(w) = waited {
            out["wait"] = w;
        }
        c.print(&out, &[], None);
    }
    Ok(())
}

/// `portico undeploy API --gateway G[,H]`: every gateway named is checked before any is
/// touched, so a typo undeploys nothing.
pub async fn undeploy(
    c: &Client,
    api: &str,
    gateways: &[String],
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let gateways = names(gateways);
    let deployed = c
        .get_all(&format!("/api/v1/apis/{api}/deployments"))
        .await?;
    let on: Vec<String> = deployed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["gateway"].as_str().map(str::to_lowercase))
        .collect();
    let missing: Vec<&String> = gateways
        .iter()
        .filter(|g| !on.contains(&g.to_lowercase()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "`{api}` is not deployed on {}: nothing was undeployed (see `portico apis get {api}` for where it runs)",
            missing
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut targets = Vec::new();
    for g in &gateways {
        let (_, v) = c
            .call(
                Method::DELETE,
                &format!("/api/v1/apis/{api}/deployments/{g}"),
                None,
                None,
            )
            .await?;
        targets.extend(v["targets"].as_array().cloned().unwrap_or_default());
        if c.output != Output::Json {
            crate::cli::out!("Undeployed `{api}` from `{g}`.");
        }
    }
    let mut out = json!({ "api": api, "undeployed_from": gateways, "targets": targets });
    if let Some(limit) = wait {
        out["wait"] = wait_for(c, &out, limit).await?;
    }
    if c.output == Output::Json {
        c.print(&out, &[], None);
    }
    Ok(())
}

/// Polls `/status` until every node of every target gateway serves its target version;
/// answers how it ended (per gateway: version, nodes ready of nodes) for `-o json`, where
/// nothing else is printed.
pub(crate) async fn wait_for(c: &Client, answer: &Value, limit: Duration) -> anyhow::Result<Value> {
    let quiet = c.output == Output::Json;
    let targets: Vec<(String, u64)> = answer["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        cell(t, "/gateway"),
                        t["snapshot_version"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tty = !quiet && std::io::stderr().is_terminal();
    let start = Instant::now();
    loop {
        let status = c.get("/api/v1/status").await?;
        let mut done = true;
        let mut line = Vec::new();
        let mut summary = Vec::new();
        for (g, want) in &targets {
            let gw = status["gateways"].as_array().and_then(|a| {
                a.iter().find(|x| {
                    x["gateway"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(g))
                })
            });
            let nodes: Vec<&Value> = gw
                .and_then(|x| x["nodes"].as_array())
                .map(|a| a.iter().filter(|n| n["state"] != "offline").collect())
                .unwrap_or_default();
            let ready = nodes
                .iter()
                .filter(|n| n["applied_version"].as_u64().is_some_and(|v| v >= *want))
                .count();
            if nodes.is_empty() || ready < nodes.len() {
                done = false;
            }
            line.push(format!(
                "{g}: {ready}/{} nodes at version {want}",
                nodes.len()
            ));
            summary.push(json!({"gateway": g, "snapshot_version": want, "nodes_ready": ready, "nodes": nodes.len()}));
        }
        let text = line.join(", ");
        if tty {
            eprint!("\r\x1b[2K{text}");
        }
        if done {
            if tty {
                eprintln!();
            } else if !quiet {
                eprintln!("{text}");
            }
            let seconds = start.elapsed().as_secs_f64();
            if !quiet {
                crate::cli::out!("Every node serves it ({seconds:.1} s).");
            }
            return Ok(json!({"gateways": summary, "seconds": seconds}));
        }
        if start.elapsed() > limit {
            if tty {
                eprintln!();
            }
            bail!(
                "not every node reached its version within {limit:?} ({text}): see `portico status` for nodes that are stale or offline and their last error"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `portico status`
pub async fn status(c: &Client) -> anyhow::Result<()> {
    let v = c.get("/api/v1/status").await?;
    if c.output == Output::Json {
        c.print(&v, &[], None);
        return Ok(());
    }
    let mut rows = Vec::new();
    for g in v["gateways"].as_array().into_iter().flatten() {
        let nodes = g["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.is_empty() {
            rows.push(json!({"gateway": g["gateway"], "type": g["type"], "version": g["snapshot_version"], "node": "-", "state": if g["token_active"] == true { "no nodes" } else { "not linked" }}));
        }
        for n in nodes {
            rows.push(json!({
                "gateway": g["gateway"], "type": g["type"], "version": g["snapshot_version"],
                "node": n["node_id"], "host": n["hostname"], "applied": n["applied_version"],
                "state": n["state"], "seen": n["last_seen_seconds_ago"], "error": n["last_error"],
                "error_at": n["last_error_at"],
            }));
        }
    }
    let refs: Vec<&Value> = rows.iter().collect();
    table(
        &[
            ("GATEWAY", "/gateway"),
            ("TYPE", "/type"),
            ("VERSION", "/version"),
            ("NODE", "/node"),
            ("HOST", "/host"),
            ("APPLIED", "/applied"),
            ("STATE", "/state"),
            ("SEEN(s)", "/seen"),
            ("LAST ERROR", "/error"),
            ("ERROR AT", "/error_at"),
        ],
        &refs,
    );
    for g in v["gateways"].as_array().into_iter().flatten() {
        for n in g["nodes"].as_array().into_iter().flatten() {
            for e in n["unhealthy_endpoints"].as_array().into_iter().flatten() {
                crate::cli::out!(
                    "unhealthy: gateway `{}` node {}: service `{}` endpoint {} fails its health checks",
                    g["gateway"].as_str().unwrap_or_default(),
                    n["node_id"].as_str().unwrap_or_default(),
                    e["service"].as_str().unwrap_or_default(),
                    e["endpoint"].as_str().unwrap_or_default()
                );
            }
        }
        for w in g["warnings"].as_array().into_iter().flatten() {
            crate::cli::out!(
                "warning: gateway `{}`: {}: the second is never reached",
                g["gateway"].as_str().unwrap_or_default(),
                w.as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

const PLAN_COLUMNS: &[(&str, &str)] = &[
    ("ACTION", "/action"),
    ("KIND", "/kind"),
    ("NAME", "/name"),
    ("CHANGES", "/changes"),
];

/// `portico apply -f FILE [--dry-run] [--prune]`: sends the file (TOML, or JSON for `.json`)
/// to the control plane, which checks every object and writes all of them in one transaction
/// (a dry run checks the same way and writes nothing), and prints its plan.
pub async fn apply(c: &Client, file: &Path, dry_run: bool, prune: bool) -> anyhow::Result<()> {
    let (text, format) = read_file(file)?;
    let content_type = match format {
        Format::Json => "application/json",
        Format::Toml => "application/toml",
    };
    apply_text(
        c,
        text,
        content_type,
        &file.display().to_string(),
        dry_run,
        prune,
    )
    .await
}

/// Sends an apply document (`content_type` JSON or TOML) read from `source` and prints the plan.
pub async fn apply_text(
    c: &Client,
    text: String,
    content_type: &str,
    source: &str,
    dry_run: bool,
    prune: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/apply?dry_run={dry_run}&prune={prune}");
    let plan = c
        .send_text(Method::POST, &path, content_type, text)
        .await
        .with_context(|| format!("{source}: nothing was applied"))?;
    if c.output == Output::Json {
        crate::cli::out!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
        return Ok(());
    }
    let items: Vec<&Value> = plan["items"].as_array().into_iter().flatten().collect();
    if !items.is_empty() {
        table(PLAN_COLUMNS, &items);
    }
    let n = |k: &str| plan[k].as_u64().unwrap_or_default();
    crate::cli::out!(
        "{} created, {} updated, {} deleted, {} unchanged.",
        n("created"),
        n("updated"),
        n("deleted"),
        n("unchanged")
    );
    if dry_run {
        crate::cli::out!("Dry run: everything was checked and nothing was changed.");
    } else {
        crate::cli::out!("Applied.");
    }
    Ok(())
}

const CONSUMER_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/spec/name"),
    ("OWNER", "/spec/owner"),
    ("TIER", "/spec/tier"),
    ("BLOCKED", "/spec/blocked"),
    ("VERSION", "/version"),
];

/// `portico consumers ...`
pub async fn consumers(c: &Client, cmd: crate::ConsumersCommand) -> anyhow::Result<()> {
    use crate::ConsumersCommand as C;
    match cmd {
        C::List => c.print(
            &c.get_all("/api/v1/consumers").await?,
            CONSUMER_COLUMNS,
            Some("items"),
        ),
        C::Get { name } => c.print(
            &c.get(&format!("/api/v1/consumers/{name}")).await?,
            CONSUMER_COLUMNS,
            None,
        ),
        C::Create { name, owner, tier } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    "/api/v1/consumers",
                    Some(&json!({"name": name, "owner": owner, "tier": tier})),
                    None,
                )
                .await?;
            c.print(&v, CONSUMER_COLUMNS, None);
        }
        C::Delete { name } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/consumers/{name}"),
                None,
                None,
            )
            .await?;
            c.done(format!(
                "Deleted consumer `{name}` with its subscriptions and keys."
            ));
        }
        C::Block { name } => set_blocked(c, &name, true).await?,
        C::Unblock { name } => set_blocked(c, &name, false).await?,
    }
    Ok(())
}

/// Blocks or unblocks a consumer (read, change, write back naming the version read).
async fn set_blocked(c: &Client, name: &str, blocked: bool) -> anyhow::Result<()> {
    let path = format!("/api/v1/consumers/{name}");
    let current = c.get(&path).await?;
    let mut spec = current["spec"].clone();
    spec["blocked"] = Value::Bool(blocked);
    let (_, v) = c
        .call(Method::PUT, &path, Some(&spec), current["version"].as_i64())
        .await?;
    if c.output == Output::Json {
        c.print(&v, CONSUMER_COLUMNS, None);
    } else if blocked {
        c.done(format!(
            "Blocked consumer `{name}`: its keys and tokens are refused from the next snapshot on."
        ));
    } else {
        c.done(format!("Unblocked consumer `{name}`."));
    }
    Ok(())
}

/// `portico subscriptions ...`
pub async fn subscriptions(c: &Client, cmd: crate::SubscriptionsCommand) -> anyhow::Result<()> {
    use crate::SubscriptionsCommand as S;
    let columns: &[(&str, &str)] = &[("API", "/api"), ("TIER", "/tier")];
    match cmd {
        S::List { consumer } => c.print(
            &c.get_all(&format!("/api/v1/consumers/{consumer}/subscriptions"))
                .await?,
            columns,
            Some("items"),
        ),
        S::Add {
            consumer,
            api,
            tier,
        } => {
            c.call(
                Method::POST,
                &format!("/api/v1/consumers/{consumer}/subscriptions"),
                Some(&json!({"api": api, "tier": tier})),
                None,
            )
            .await?;
            c.done(format!("Subscribed `{consumer}` to `{api}`."));
        }
        S::Remove { consumer, api } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/consumers/{consumer}/subscriptions/{api}"),
                None,
                None,
            )
            .await?;
            c.done(format!("Unsubscribed `{consumer}` from `{api}`."));
        }
    }
    Ok(())
}

/// `portico keys ...`
pub async fn keys(c: &Client, cmd: crate::KeysCommand) -> anyhow::Result<()> {
    use crate::KeysCommand as K;
    match cmd {
        K::List { consumer } => c.print(
            &c.get_all(&format!("/api/v1/consumers/{consumer}/keys"))
                .await?,
            &[
                ("ID", "/id"),
                ("KIND", "/kind"),
                ("TYPE", "/key_type"),
                ("HINT", "/hint"),
                ("EXPIRES", "/expires_at"),
                ("REVOKED", "/revoked_at"),
            ],
            Some("items"),
        ),
        K::Create {
            consumer,
            key_type,
            client,
            expires_in_days,
        } => {
            let body = json!({
                "type": key_type,
                "kind": if client { "client" } else { "api_key" },
                "expires_in_days": expires_in_days,
            });
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/api/v1/consumers/{consumer}/keys"),
                    Some(&body),
                    None,
                )
                .await?;
            if c.output == Output::Json {
                c.print(&v, &[], None);
            } else if client {
                crate::cli::out!(
                    "Client for `{consumer}` ({key_type}), shown once:\n    client_id:     {}\n    client_secret: {}",
                    cell(&v, "/client_id"),
                    cell(&v, "/client_secret")
                );
            } else {
                crate::cli::out!(
                    "API key for `{consumer}` ({key_type}), shown once (id {}):\n    {}",
                    cell(&v, "/id"),
                    cell(&v, "/key")
                );
            }
        }
        K::Rotate { consumer, id } => {
            let list = c
                .get_all(&format!("/api/v1/consumers/{consumer}/keys"))
                .await?;
            let Some(old) = list["items"].as_array().and_then(|a| {
                a.iter()
                    .find(|k| k["id"] == id.as_str() && k["revoked_at"].is_null())
            }) else {
                bail!(
                    "`{consumer}` has no active credential `{id}`: see `portico keys list {consumer}`"
                );
            };
            let body = json!({"type": old["key_type"], "kind": old["kind"]});
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/api/v1/consumers/{consumer}/keys"),
                    Some(&body),
                    None,
                )
                .await?;
            c.call(
                Method::DELETE,
                &format!("/api/v1/consumers/{consumer}/keys/{id}"),
                None,
                None,
            )
            .await?;
            if c.output == Output::Json {
                c.print(&v, &[], None);
            } else if v.get("key").is_some() {
                crate::cli::out!(
                    "New API key (id {}), shown once; `{id}` is revoked:\n    {}",
                    cell(&v, "/id"),
                    cell(&v, "/key")
                );
            } else {
                crate::cli::out!(
                    "New client secret, shown once; `{id}` is revoked:\n    client_id:     {}\n    client_secret: {}",
                    cell(&v, "/client_id"),
                    cell(&v, "/client_secret")
                );
            }
        }
        K::Revoke { consumer, id } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/consumers/{consumer}/keys/{id}"),
                None,
                None,
            )
            .await?;
            c.done(format!(
                "Revoked `{id}`: gateways refuse it from their next sync."
            ));
        }
    }
    Ok(())
}

/// `portico token --consumer C --type T`
pub async fn token(
    c: &Client,
    consumer: &str,
    key_type: &str,
    scope: Option<&str>,
) -> anyhow::Result<()> {
    let (_, v) = c
        .call(
            Method::POST,
            &format!("/api/v1/consumers/{consumer}/token"),
            Some(&json!({"type": key_type, "scope": scope})),
            None,
        )
        .await?;
    if c.output == Output::Json {
        c.print(&v, &[], None);
    } else {
        crate::cli::out!("{}", cell(&v, "/access_token"));
    }
    Ok(())
}

/// `portico tiers ...`
pub async fn tiers(c: &Client, cmd: crate::TiersCommand) -> anyhow::Result<()> {
    use crate::TiersCommand as T;
    let columns: &[(&str, &str)] = &[
        ("NAME", "/spec/name"),
        ("LIMIT", "/spec/limit"),
        ("PER", "/spec/per"),
        ("BURST", "/spec/burst"),
    ];
    match cmd {
        T::List => c.print(&c.get_all("/api/v1/tiers").await?, columns, Some("items")),
        T::Create {
            name,
            limit,
            per,
            burst,
        } => {
            let (_, v) = c
                .call(
                    Method::POST,
                    "/api/v1/tiers",
                    Some(&json!({"name": name, "limit": limit, "per": per, "burst": burst})),
                    None,
                )
                .await?;
            c.print(&v, columns, None);
        }
        T::Delete { name } => {
            c.call(Method::DELETE, &format!("/api/v1/tiers/{name}"), None, None)
                .await?;
            c.done(format!("Deleted tier `{name}`."));
        }
    }
    Ok(())
}

/// `portico certificates ...`
pub async fn certificates(c: &Client, cmd: crate::CertificatesCommand) -> anyhow::Result<()> {
    use crate::CertificatesCommand as C;
    match cmd {
        C::List => c.print(
            &c.get_all("/api/v1/certificates").await?,
            &[
                ("NAME", "/name"),
                ("HOSTS", "/hosts"),
                ("NOT AFTER", "/not_after"),
            ],
            Some("items"),
        ),
        C::Upload { name, cert, key } => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let (_, v) = c
                .call(
                    Method::POST,
                    "/api/v1/certificates",
                    Some(&json!({"name": name, "cert_pem": read(&cert)?, "key_pem": read(&key)?})),
                    None,
                )
                .await?;
            crate::cli::out!(
                "Uploaded certificate `{name}` for {} (valid until {} UTC).",
                cell(&v, "/hosts"),
                cell(&v, "/not_after")
            );
        }
        C::Delete { name } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/certificates/{name}"),
                None,
                None,
            )
            .await?;
            c.done(format!("Deleted certificate `{name}`."));
        }
        C::Acme => c.print(
            &c.get_all("/api/v1/acme/hosts").await?,
            &[
                ("HOST", "/host"),
                ("STATE", "/state"),
                ("NOT AFTER", "/not_after"),
                ("NEXT", "/next_attempt"),
                ("LAST ERROR", "/last_error"),
            ],
            Some("items"),
        ),
        C::Order { host } => {
            c.call(
                Method::POST,
                &format!("/api/v1/acme/hosts/{host}/order"),
                None,
                None,
            )
            .await?;
            c.done(format!(
                "Ordering a certificate for {host}; see `portico certificates acme`."
            ));
        }
    }
    Ok(())
}

/// An API definition's `openapi` given as a file name: the JSON document read from beside
/// the definition file.
fn read_openapi(spec: &mut ApiSpec, definition: &Path) -> anyhow::Result<()> {
    let Some(serde_json::Value::String(name)) = &spec.openapi else {
        return Ok(());
    };
    let path = definition
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("openapi: cannot read {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "openapi: {} is not JSON (convert a YAML document to JSON first)",
            path.display()
        )
    })?;
    spec.openapi = Some(doc);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_seconds_print_as_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_795_977_311), "2026-11-29 18:35:11");
        assert_eq!(super::utc(4_107_542_399), "2100-02-28 23:59:59");
    }

    #[test]
    fn a_cell_is_one_line_of_at_most_sixty_characters() {
        assert_eq!(super::fit("short"), "short");
        assert_eq!(super::fit("a\nb\tc"), "a b c");
        let long = super::fit(&"é".repeat(200_000));
        assert_eq!(long.chars().count(), super::CELL_MAX);
        assert!(long.ends_with('…'));
        assert_eq!(super::fit(&"x".repeat(60)), "x".repeat(60));
    }

    #[test]
    fn options_not_given_are_left_out_of_bodies() {
        let body = serde_json::json!({"name": "c", "tier": null, "nested": {"a": null, "b": [1]}});
        assert_eq!(
            super::without_nulls(&body),
            serde_json::json!({"name": "c", "nested": {"b": [1]}})
        );
    }
}
