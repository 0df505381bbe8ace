//! The Snapshot, everything one gateway serves, and the static config file that carries one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::acme::AcmeState;
use crate::error::Error;
use crate::listener::Listener;
use crate::node::NodeSettings;
use crate::route::Route;
use crate::security::Security;
use crate::service::Service;
use crate::validate;

/// The Snapshot schema this build writes and reads.
pub const SCHEMA: u32 = 1;

/// Everything one gateway serves: the only contract between control plane and data plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Schema version of this document.
    #[serde(default = "schema")]
    pub schema: u32,
    /// Ports and protocols.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Upstreams.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Routes, in definition order (the last tie-breaker of precedence).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Key material for routes with an `auth` policy.
    #[serde(default, skip_serializing_if = "Security::is_empty")]
    pub security: Security,
    /// Open ACME challenges and the state of each host's automatic certificate.
    #[serde(default, skip_serializing_if = "AcmeState::is_empty")]
    pub acme: AcmeState,
    /// Hosted app versions the routes serve (their files are fetched by hash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<crate::app::AppBundle>,
    /// The developer portal, whose Try Out routes with `try_out` answer cross-origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<crate::portal::Portal>,
    /// Which requests the gateway's nodes trace, when the control plane sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::node::Sampling>,
}

impl Default for Snapshot {
    /// An empty snapshot of the current schema: no listeners, nothing served.
    fn default() -> Self {
        Self {
            schema: SCHEMA,
            listeners: Vec::new(),
            services: Vec::new(),
            routes: Vec::new(),
            security: Security::default(),
            acme: AcmeState::default(),
            apps: Vec::new(),
            portal: None,
            sampling: None,
        }
    }
}

/// A static gateway config file: node settings plus the Snapshot it serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Schema version of the snapshot part.
    #[serde(default = "schema")]
    pub schema: u32,
    /// Process settings.
    #[serde(default)]
    pub node: NodeSettings,
    /// Ports and protocols.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Upstreams.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A config file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// The format a file name implies: `.json` is JSON, anything else TOML.
    pub fn from_path(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".json") {
            Self::Json
        } else {
            Self::Toml
        }
    }
}

impl Snapshot {
    /// Parses and validates a Snapshot document.
    pub fn parse(text: &str, format: Format) -> Result<Self, Error> {
        let snapshot: Snapshot = parse(text, format)?;
        snapshot.validate()?;
        Ok(snapshot)
    }

    /// Checks every rule and reports every problem with its field path.
    pub fn validate(&self) -> Result<(), Error> {
        validate::snapshot(self)
    }

    /// Content hash of the canonical JSON form: `sha256:<hex>`. Equal content, equal hash.
    pub fn content_hash(&self) -> String {
        // Serialising plain structs, vectors and BTreeMaps cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&bytes);
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for b in digest.iter() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The digest nodes and the control plane identify content by: `msha256:<hex>`, the
    /// sum of each entity's hash (see [`crate::delta`]). Equal content, equal digest.
    pub fn digest(&self) -> String {
        crate::delta::digest(self).to_text()
    }

    /// Whether `hash` names this content: a digest, or the `sha256:` of the whole JSON
    /// that builds before deltas wrote (their disk caches still load).
    pub fn hash_matches(&self, hash: &str) -> bool {
        if hash.starts_with(crate::delta::DIGEST_PREFIX) {
            self.digest() == hash
        } else {
            self.content_hash() == hash
        }
    }

    /// Short version label for logs and metrics: the first 12 hex digits of the digest.
    pub fn short_version(&self) -> String {
        short_version(&self.digest())
    }
}

/// The first 12 hex digits of a hash's text (`msha256:…` or `sha256:…`).
pub fn short_version(hash: &str) -> String {
    let hex = hash.split_once(':').map_or(hash, |(_, h)| h);
    hex.chars().take(12).collect()
}

impl GatewayFile {
    /// Parses and validates a static gateway config file.
    pub fn parse(text: &str, format: Format) -> Result<Self, Error> {
        let file: GatewayFile = parse(text, format)?;
        file.validate()?;
        Ok(file)
    }

    /// Checks every rule and reports every problem with its field path.
    pub fn validate(&self) -> Result<(), Error> {
        validate::gateway_file(self)
    }

    /// Splits the file into node settings and the Snapshot it serves.
    pub fn into_parts(self) -> (NodeSettings, Snapshot) {
        let snapshot = Snapshot {
            schema: self.schema,
            listeners: self.listeners,
            services: self.services,
            routes: self.routes,
            security: Security::default(),
            acme: AcmeState::default(),
            apps: Vec::new(),
            portal: None,
            sampling: None,
        };
        (self.node, snapshot)
    }
}

/// Deserializes a document, naming the path of the field that failed.
pub fn parse<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, Error> {
    match format {
        Format::Toml => {
            let de =
                toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e, ".".into()))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                toml_error(text, e.inner(), path)
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Syntax {
                path: e.path().to_string(),
                line: Some(e.inner().line()).filter(|l| *l > 0),
                message: strip_json_position(&e.inner().to_string()),
            })?;
            de.end().map_err(|e| Error::Syntax {
                path: ".".into(),
                line: Some(e.line()),
                message: strip_json_position(&e.to_string()),
            })?;
            Ok(value)
        }
    }
}

/// Deserializes a JSON document already read, naming the path of the field that failed. A
/// number with no fraction (`3.0`) reads as the integer it is, as JSON Schema has it.
pub fn parse_value<T: DeserializeOwned>(mut doc: serde_json::Value) -> Result<T, Error> {
    refuse_nul(&doc)?;
    integral_floats(&mut doc);
    serde_path_to_error::deserialize(doc).map_err(|e| Error::Syntax {
        path: e.path().to_string(),
        line: None,
        message: e.inner().to_string(),
    })
}

/// Where a document holds the NUL character, in a value or a field name, as a field path
/// (`routes[0].path`, `.` for the whole): `None` when it holds none. No name, path or note
/// needs NUL, and PostgreSQL cannot store it in text: documents with it are refused whole,
/// on either backend.
pub fn nul_at(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    fn walk(v: &Value, at: &mut String) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, x)| {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                let found = walk(x, at);
                if !found {
                    at.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(k, x)| {
                let len = at.len();
                if !at.is_empty() {
                    at.push('.');
                }
                at.push_str(k);
                let found = k.contains('\0') || walk(x, at);
                if !found {
                    at.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut at = String::new();
    walk(v, &mut at).then(|| {
        if at.is_empty() {
            ".".into()
        } else {
            at.replace('\0', "\\u0000")
        }
    })
}

/// [`nul_at`] as the syntax error it is.
pub fn refuse_nul(v: &serde_json::Value) -> Result<(), Error> {
    match nul_at(v) {
        Some(path) => Err(Error::Syntax {
            path,
            line: None,
            message: "holds the NUL character (\\u0000): text cannot contain it".into(),
        }),
        None => Ok(()),
    }
}

fn integral_floats(v: &mut serde_json::Value) {
    use serde_json::Value;
    // Integers beyond 2^63 do not fit any field: they stay floats and fail as such.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0)
                && f.abs() < LIMIT
            {
                *v = if f >= 0.0 {
                    Value::from(f as u64)
                } else {
                    Value::from(f as i64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats),
        _ => {}
    }
}

fn toml_error(text: &str, e: &toml::de::Error, path: String) -> Error {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    Error::Syntax {
        path,
        line,
        message: e.message().trim().to_owned(),
    }
}

fn strip_json_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn schema() -> u32 {
    SCHEMA
}
