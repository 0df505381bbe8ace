//! Paged lists: every list endpoint takes `?limit=N&cursor=C` and answers
//! `{"items": [...], "next": C or null}`. A cursor is the key of the last item of a page
//! (opaque to callers), so a page starts after it whatever was inserted or deleted
//! meanwhile: no item is seen twice or skipped because of a concurrent write.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;

/// Items on a page when the caller names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The most items a page may hold.
pub const MAX_LIMIT: usize = 1000;

/// `?limit=N&cursor=C` as sent.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// Items per page.
    pub limit: Option<String>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// A page request, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Key of the last item already seen.
    pub after: Option<String>,
    /// Items to answer at most.
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Self::all()
    }
}

impl Page {
    /// Every item at once (for the control plane's own use).
    pub fn all() -> Self {
        Self {
            after: None,
            limit: i64::MAX as usize - 1,
        }
    }

    /// Checks a query: a `limit` of 1 to 1000, a cursor this API gave out.
    pub fn from_query(q: &PageQuery) -> Result<Self, Error> {
        let limit = match q.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(Error::BadRequest(format!(
                        "limit: `{raw}` is not a number from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let after = match q.cursor.as_deref() {
            None => None,
            Some(c) => Some(
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        Error::BadRequest(
                            "cursor: not a cursor this list gave out (use the `next` of the previous page, or leave it out to start at the beginning)".into(),
                        )
                    })?,
            ),
        };
        Ok(Self { after, limit })
    }

    /// Rows to fetch: one more than the limit tells whether there is a next page.
    pub fn fetch(&self) -> i64 {
        (self.limit.saturating_add(1)).min(i64::MAX as usize) as i64
    }

    /// Whether an item with this key belongs after the cursor.
    pub fn wants(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|a| key > a)
    }

    /// The answer for items in key order starting after the cursor (at most one more
    /// than the limit), each with its key.
    pub fn answer(&self, mut items: Vec<(String, Value)>) -> Value {
        let next = if items.len() > self.limit {
            items.truncate(self.limit);
            items
                .last()
                .map(|(k, _)| URL_SAFE_NO_PAD.encode(k.as_bytes()))
        } else {
            None
        };
        json!({
            "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "next": next,
        })
    }

    /// Items in key order starting after the cursor (at most one more than the limit),
    /// cut to the page, with the cursor of the next page.
    pub fn split<T>(&self, mut items: Vec<(String, T)>) -> (Vec<T>, Option<String>) {
        let next = if items.len() > self.limit {
            items.truncate(self.limit);
            items
                .last()
                .map(|(k, _)| URL_SAFE_NO_PAD.encode(k.as_bytes()))
        } else {
            None
        };
        (items.into_iter().map(|(_, v)| v).collect(), next)
    }

    /// Pages a list held in memory: sorts by key, keeps what follows the cursor.
    pub fn of<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
        value: impl Fn(&T) -> Value,
    ) -> Value {
        let mut keyed: Vec<(String, Value)> = items
            .iter()
            .map(|i| (key(i), i))
            .filter(|(k, _)| self.wants(k))
            .map(|(k, i)| (k, value(i)))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.truncate(self.limit.saturating_add(1));
        self.answer(keyed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: Option<&str>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit: limit.map(Into::into),
            cursor: cursor.map(Into::into),
        }
    }

    #[test]
    fn limits_and_cursors_are_checked() {
        assert_eq!(
            Page::from_query(&q(None, None)).map(|p| p.limit).ok(),
            Some(100)
        );
        for bad in ["0", "1001", "-1", "x", ""] {
            let e = Page::from_query(&q(Some(bad), None))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("limit:"), "{e}");
        }
        for bad in ["%%%", "", "!!"] {
            let e = Page::from_query(&q(None, Some(bad)))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("cursor:"), "{e}");
        }
    }

    #[test]
    fn pages_follow_keys_not_offsets() {
        let page = Page::from_query(&q(Some("2"), None)).unwrap_or_default();
        let v = page.of(vec!["c", "a", "b"], |s| (*s).to_owned(), |s| json!(s));
        assert_eq!(v["items"], json!(["a", "b"]));
        let cursor = v["next"].as_str().unwrap_or_default().to_owned();
        // "aa" inserted before the cursor does not shift the next page.
        let page = Page::from_query(&q(Some("2"), Some(&cursor))).unwrap_or_default();
        let v = page.of(vec!["c", "a", "aa", "b"], |s| (*s).to_owned(), |s| json!(s));
        assert_eq!(v["items"], json!(["c"]));
        assert!(v["next"].is_null());
    }
}
