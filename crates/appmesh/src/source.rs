//! Input: files as read, their JSON documents, and the App Mesh objects in them, whatever
//! shape the `aws appmesh` command that printed (or takes) them has.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::Error;
use crate::json::{Bad, index, object};
use crate::mesh::Kind;
use crate::report::{Item, Outcome};

/// One input file: where it came from and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file's path (shown in the report and in errors as it is written here).
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl Source {
    /// A source from text, e.g. for tests or standard input.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// Reads a file, or every `*.json` file under a directory (recursively), sorted by path.
pub fn read_path(path: &Path) -> Result<Vec<Source>, Error> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_dir() {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        return Ok(vec![Source::new(path, text)]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let p = entry.path();
            let kind = entry.file_type().map_err(io(&p))?;
            if kind.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            {
                files.push(p);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::NoFiles {
            path: path.to_path_buf(),
        });
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(io(&p))?;
            Ok(Source::new(p, text))
        })
        .collect()
}

/// One JSON document of a file (a file may hold several, one after the other, as appended
/// `aws` outputs are).
pub(crate) struct Document {
    /// The file as shown: its path, with `#n` for the n-th document after the first.
    pub file: String,
    /// The parsed document.
    pub value: Value,
}

/// Parses every document of every source.
pub(crate) fn documents(sources: &[Source]) -> Result<Vec<Document>, Error> {
    let mut out = Vec::new();
    for s in sources {
        let file = s.path.display().to_string();
        let mut values = Vec::new();
        let stream = serde_json::Deserializer::from_str(&s.text).into_iter::<Value>();
        for v in stream {
            values.push(v.map_err(|e| Error::Json {
                file: file.clone(),
                line: e.line(),
                column: e.column(),
                message: strip_position(&e.to_string()),
            })?);
        }
        if values.is_empty() {
            return Err(Error::Json {
                file,
                line: 1,
                column: 1,
                message: "the file holds no JSON".into(),
            });
        }
        let many = values.len() > 1;
        for (i, value) in values.into_iter().enumerate() {
            let file = if many && i > 0 {
                format!("{file}#{}", i + 1)
            } else {
                file.clone()
            };
            out.push(Document { file, value });
        }
    }
    Ok(out)
}

/// One App Mesh object found in a document: a full one (with its spec) or a reference
/// printed by a `list-*` command.
pub(crate) struct Found<'a> {
    /// Its kind.
    pub kind: Kind,
    /// The file, as shown.
    pub file: &'a str,
    /// JSON path of the object in the file.
    pub at: String,
    /// The object.
    pub value: &'a Value,
    /// Printed by `list-*`: names only.
    pub listed: bool,
}

/// Finds the objects of a document; shapes that are none are errors, and keys beside the
/// objects that mean nothing here are reported.
pub(crate) fn find<'a>(
    doc: &'a Document,
    found: &mut Vec<Found<'a>>,
    notes: &mut Vec<Item>,
) -> Result<(), Error> {
    walk(&doc.file, &doc.value, "$".into(), found, notes).map_err(|b| Error::Invalid {
        file: doc.file.clone(),
        path: b.path,
        message: b.message,
    })
}

fn walk<'a>(
    file: &'a str,
    v: &'a Value,
    at: String,
    found: &mut Vec<Found<'a>>,
    notes: &mut Vec<Item>,
) -> Result<(), Bad> {
    if let Value::Array(items) = v {
        for (i, item) in items.iter().enumerate() {
            walk(file, item, index(&at, i), found, notes)?;
        }
        return Ok(());
    }
    let o = object(v, &at)?;
    // describe-*, create-*, update-* print `{"virtualGateway": {...}}`.
    let wrapped: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| o.has(k.wrapper()))
        .collect();
    // list-* prints `{"virtualGateways": [...], "nextToken": ...}`.
    let lists: Vec<Kind> = Kind::ALL.into_iter().filter(|k| o.has(k.list())).collect();
    if wrapped.is_empty() && lists.is_empty() {
        // A bare object: describe's inner object, a --cli-input-json file, or one item of
        // a list.
        let kind = Kind::of_bare(&o).ok_or_else(|| {
            Bad::new(
                at.clone(),
                "not an App Mesh object: expected what `aws appmesh describe-*`, `list-*` or `create-* --cli-input-json` print or take (a virtual gateway, gateway route, virtual service, virtual router, route or virtual node)",
            )
        })?;
        let listed = !o.has("spec") && o.has("arn");
        found.push(Found {
            kind,
            file,
            at,
            value: v,
            listed,
        });
        return Ok(());
    }
    for k in wrapped {
        let inner = o.req(k.wrapper())?;
        let inner_at = o.at(k.wrapper());
        if !inner.is_object() {
            return Err(Bad::new(inner_at, "expected an object"));
        }
        found.push(Found {
            kind: k,
            file,
            at: inner_at,
            value: inner,
            listed: false,
        });
    }
    for k in lists {
        for (item_at, item) in o.arr(k.list())? {
            if !item.is_object() {
                return Err(Bad::new(item_at, "expected an object"));
            }
            found.push(Found {
                kind: k,
                file,
                at: item_at,
                value: item,
                listed: true,
            });
        }
    }
    if o.str("nextToken")?.is_some() {
        notes.push(Item {
            file: file.to_owned(),
            path: o.at("nextToken"),
            object: "list".into(),
            outcome: Outcome::NotCarried,
            message: "the list has more pages: run the list command again with --starting-token (or without --max-items) to get every object".into(),
        });
    }
    for (path, key) in o.rest() {
        notes.push(Item {
            file: file.to_owned(),
            path,
            object: "file".into(),
            outcome: Outcome::NotCarried,
            message: format!("`{key}` is not part of any App Mesh output this importer reads"),
        });
    }
    Ok(())
}

/// serde_json's message without its ` at line L column C` (the error gives them apart).
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}
