//! Portico names for App Mesh names. App Mesh allows up to 255 characters; Portico names are
//! letters, digits, `.`, `_` and `-`, at most 64 characters for gateways and route
//! definitions and 128 for services. Names are mapped deterministically: other characters
//! become `-`, a name too long is cut and given a hash of the whole, and a name already
//! taken gets `-2`, `-3`, ...

use std::collections::HashSet;

/// Longest gateway and route name.
pub(crate) const SHORT: usize = 64;
/// Longest service name.
pub(crate) const LONG: usize = 128;

/// The names of one kind handed out so far (case-insensitively unique).
#[derive(Debug)]
pub(crate) struct Names {
    limit: usize,
    taken: HashSet<String>,
}

/// A name handed out, and why it differs from the one wanted (when it does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Named {
    /// The Portico name.
    pub name: String,
    /// What changed, for the report.
    pub why: Option<String>,
}

impl Names {
    /// Names of at most `limit` characters.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            taken: HashSet::new(),
        }
    }

    /// A unique Portico name for `wanted`.
    pub fn take(&mut self, wanted: &str) -> Named {
        let mut why = Vec::new();
        let clean = sanitize(wanted);
        if clean != wanted {
            why.push(format!(
                "`{wanted}` has characters a Portico name cannot (letters, digits, `.`, `_`, `-`)"
            ));
        }
        let fitted = fit(&clean, self.limit);
        if fitted != clean {
            why.push(format!(
                "longer than {} characters, so cut and given a hash of the whole",
                self.limit
            ));
        }
        let mut name = fitted.clone();
        let mut n = 2;
        while self.taken.contains(&name.to_ascii_lowercase()) {
            let suffix = format!("-{n}");
            name = format!("{}{suffix}", cut(&fitted, self.limit - suffix.len()));
            n += 1;
        }
        if name != fitted {
            why.push(format!("`{fitted}` was already taken"));
        }
        self.taken.insert(name.to_ascii_lowercase());
        let why = (!why.is_empty()).then(|| format!("named `{name}`: {}", why.join("; ")));
        Named { name, why }
    }
}

/// `s` with every character a Portico name cannot hold replaced by `-`.
pub(crate) fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

/// `s` cut to `limit` characters with an 8-digit hash of the whole, when longer.
pub(crate) fn fit(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    format!("{}-{}", cut(s, limit - 9), hash8(s))
}

fn cut(s: &str, n: usize) -> &str {
    // Names are ASCII by now.
    &s[..n.min(s.len())]
}

/// FNV-1a, 32 bits, as 8 hex digits: short, stable across runs and platforms.
pub(crate) fn hash8(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_cleaned_cut_and_made_unique() {
        let mut n = Names::new(SHORT);
        assert_eq!(n.take("ingress-gw").name, "ingress-gw");
        assert!(n.take("ingress-gw").why.is_some());
        let spaced = n.take("my gateway");
        assert_eq!(spaced.name, "my-gateway");
        assert!(spaced.why.unwrap_or_default().contains("characters"));
        let long = "x".repeat(100);
        let a = n.take(&long);
        assert_eq!(a.name.len(), SHORT);
        assert_eq!(a.name, fit(&long, SHORT));
        let b = n.take(&long);
        assert_eq!(b.name.len(), SHORT);
        assert_ne!(a.name, b.name);
        assert_eq!(n.take("INGRESS-GW").name, "INGRESS-GW-3");
    }
}
