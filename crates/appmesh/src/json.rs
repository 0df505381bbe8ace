//! Reading App Mesh JSON with paths: every field read is marked taken, so that what is left
//! (fields this importer does not know) can be reported with its path, and every shape error
//! names the field it is about.

use std::cell::RefCell;

use serde_json::{Map, Value};

/// An App Mesh spec problem at a JSON path inside one file (the file is added by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bad {
    /// `$.spec.listeners[0].portMapping.port`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Results of reading.
pub(crate) type R<T> = Result<T, Bad>;

impl Bad {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// One JSON object being read, with the keys taken so far.
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// Path of the object itself.
    pub path: String,
    taken: RefCell<Vec<&'a str>>,
}

/// `parent.key`.
pub(crate) fn join(parent: &str, key: &str) -> String {
    format!("{parent}.{key}")
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The JSON type of a value, for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `v` as an object at `path`.
pub(crate) fn object<'a>(v: &'a Value, path: &str) -> R<Obj<'a>> {
    match v {
        Value::Object(map) => Ok(Obj {
            map,
            path: path.to_owned(),
            taken: RefCell::new(Vec::new()),
        }),
        other => Err(Bad::new(
            path,
            format!("expected an object, found {}", type_name(other)),
        )),
    }
}

impl<'a> Obj<'a> {
    /// The path of `key` in this object.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Whether the object has `key` (not null); does not take it.
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// The value of `key`, taken; null counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.taken.borrow_mut().push(k.as_str());
        (!v.is_null()).then_some(v)
    }

    /// Marks `key` taken without reading it (bookkeeping fields skipped on purpose).
    pub fn skip(&self, key: &str) {
        let _ = self.get(key);
    }

    /// A required value.
    pub fn req(&self, key: &str) -> R<&'a Value> {
        self.get(key)
            .ok_or_else(|| Bad::new(self.at(key), "missing: App Mesh requires this field"))
    }

    /// An optional nested object.
    pub fn obj(&self, key: &str) -> R<Option<Obj<'a>>> {
        self.get(key).map(|v| object(v, &self.at(key))).transpose()
    }

    /// A required nested object.
    pub fn req_obj(&self, key: &str) -> R<Obj<'a>> {
        object(self.req(key)?, &self.at(key))
    }

    /// An optional string.
    pub fn str(&self, key: &str) -> R<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Bad::new(
                self.at(key),
                format!("expected a string, found {}", type_name(other)),
            )),
        }
    }

    /// A required, non-empty string.
    pub fn req_str(&self, key: &str) -> R<&'a str> {
        match self.str(key)? {
            Some("") => Err(Bad::new(self.at(key), "must not be empty")),
            Some(s) => Ok(s),
            None => Err(Bad::new(
                self.at(key),
                "missing: App Mesh requires this field",
            )),
        }
    }

    /// An optional whole number within `min..=max`.
    pub fn int(&self, key: &str, min: i64, max: i64) -> R<Option<i64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| {
                Bad::new(
                    self.at(key),
                    format!("expected a whole number, found {}", type_name(v)),
                )
            })?;
        if n < min || n > max {
            return Err(Bad::new(
                self.at(key),
                format!("{n} is out of range: App Mesh takes {min} to {max}"),
            ));
        }
        Ok(Some(n))
    }

    /// A required whole number within `min..=max`.
    pub fn req_int(&self, key: &str, min: i64, max: i64) -> R<i64> {
        self.int(key, min, max)?
            .ok_or_else(|| Bad::new(self.at(key), "missing: App Mesh requires this field"))
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> R<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Bad::new(
                self.at(key),
                format!("expected true or false, found {}", type_name(other)),
            )),
        }
    }

    /// An optional array, each item with its path.
    pub fn arr(&self, key: &str) -> R<Vec<(String, &'a Value)>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                let at = self.at(key);
                Ok(items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (index(&at, i), v))
                    .collect())
            }
            Some(other) => Err(Bad::new(
                self.at(key),
                format!("expected an array, found {}", type_name(other)),
            )),
        }
    }

    /// An optional array of strings.
    pub fn strs(&self, key: &str) -> R<Vec<String>> {
        self.arr(key)?
            .into_iter()
            .map(|(at, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(Bad::new(
                    at,
                    format!("expected a string, found {}", type_name(other)),
                )),
            })
            .collect()
    }

    /// An optional string that must be one of `allowed` (App Mesh's enums are exact).
    pub fn one_of(&self, key: &str, allowed: &[&'static str]) -> R<Option<&'static str>> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        allowed
            .iter()
            .find(|a| **a == s)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                Bad::new(
                    self.at(key),
                    format!("`{s}` is not one of {}", allowed.join(", ")),
                )
            })
    }

    /// Exactly one of `keys` is present (taken); its name. `what` names the choice.
    pub fn exactly_one(&self, keys: &[&'static str]) -> R<&'static str> {
        let present: Vec<&'static str> = keys.iter().copied().filter(|k| self.has(k)).collect();
        match present.as_slice() {
            [one] => Ok(one),
            [] => Err(Bad::new(
                self.path.clone(),
                format!("give one of {}", keys.join(", ")),
            )),
            many => Err(Bad::new(
                self.path.clone(),
                format!(
                    "give only one of {} (found {})",
                    keys.join(", "),
                    many.join(", ")
                ),
            )),
        }
    }

    /// Paths of the keys not taken, in the object's order.
    pub fn rest(&self) -> Vec<(String, &'a str)> {
        let taken = self.taken.borrow();
        self.map
            .keys()
            .filter(|k| !taken.contains(&k.as_str()))
            .map(|k| (self.at(k), k.as_str()))
            .collect()
    }
}
