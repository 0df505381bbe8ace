//! W3C trace context (`traceparent`, `tracestate`): what a request brings is kept when it is
//! valid and replaced when it is not (never passed on malformed), a new trace starts when
//! there is none, and the upstream is told this gateway's span as the parent.
//!
//! `traceparent` is `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`, lower case;
//! an all-zero id, version `ff`, or a header given twice makes it invalid. A later version
//! is read by its first four fields, as the recommendation asks. `tracestate` travels only
//! with a valid `traceparent`, and only when it is a list of at most 32 `key=value`
//! members in at most 512 characters.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The header a control plane's sync answer names the deploy of its snapshot in (a
/// `traceparent` value), when that deploy was traced: a node's apply is its child.
pub const DEPLOY_TRACE: &str = "portico-deploy-trace";

/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on, and its most members.
const TRACESTATE_MAX: usize = 512;
const TRACESTATE_MEMBERS: usize = 32;

/// Which requests are recorded (the `sampled` flag sent upstream, and the spans kept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Every request.
    Always,
    /// None.
    Never,
    /// This fraction of new traces (0 to 1), decided by the trace id so that every
    /// gateway a trace crosses decides alike.
    Ratio(f64),
    /// As the caller decided (its `sampled` flag); new traces by the inner sampler.
    ParentBased(Root),
}

/// How a parent-based sampler decides for traces that start here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Every one.
    Always,
    /// None.
    Never,
    /// This fraction, by trace id.
    Ratio(f64),
}

impl Default for Sampler {
    fn default() -> Self {
        Self::ParentBased(Root::Always)
    }
}

impl Sampler {
    /// The sampler settings name (`always`, `never`, `ratio`, `parent_based`) with its
    /// ratio; an unknown name (settings are validated before) is parent-based.
    pub fn named(name: &str, ratio: f64) -> Self {
        match name {
            "always" => Self::Always,
            "never" => Self::Never,
            "ratio" => Self::Ratio(ratio),
            _ if ratio >= 1.0 => Self::ParentBased(Root::Always),
            _ if ratio <= 0.0 => Self::ParentBased(Root::Never),
            _ => Self::ParentBased(Root::Ratio(ratio)),
        }
    }
}

/// Whether a trace id falls within `ratio`: its last 8 bytes as a number below the
/// ratio of 2^64 (the same rule OpenTelemetry's `TraceIdRatioBased` uses).
fn by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&trace_id[8..]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(b) >> 1) < bound
}

impl Sampler {
    /// Whether the trace is recorded here.
    pub fn sampled(&self, trace_id: &[u8; 16], parent: Option<bool>) -> bool {
        match (*self, parent) {
            (Self::Always, _) => true,
            (Self::Never, _) => false,
            (Self::Ratio(r), _) => by_ratio(trace_id, r),
            (Self::ParentBased(_), Some(p)) => p,
            (Self::ParentBased(Root::Always), None) => true,
            (Self::ParentBased(Root::Never), None) => false,
            (Self::ParentBased(Root::Ratio(r)), None) => by_ratio(trace_id, r),
        }
    }
}

/// A request's place in its trace.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// This gateway's span for the request: the parent the upstream is told.
    pub span_id: [u8; 8],
    /// Whether it is recorded.
    pub sampled: bool,
    /// The caller's `tracestate`, passed on as it came (valid `traceparent` only).
    pub tracestate: Option<HeaderValue>,
}

/// A parsed `traceparent`: trace id, parent id, sampled.
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55.
    if v.len() < 55 {
        return None;
    }
    let version = hex_bytes::<1>(&v[0..2])?[0];
    if version == 0xff
        || (version == 0 && v.len() != 55)
        || (version > 0 && v.len() > 55 && v[55] != b'-')
    {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = hex_bytes::<16>(&v[3..35])?;
    let parent_id = hex_bytes::<8>(&v[36..52])?;
    let flags = hex_bytes::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags & 1 == 1))
}

/// Lower-case hex digits into `N` bytes.
fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    Some(out)
}

/// Whether a `tracestate` is one that may be passed on.
fn tracestate_ok(v: &[u8]) -> bool {
    if v.len() > TRACESTATE_MAX {
        return false;
    }
    let Ok(s) = std::str::from_utf8(v) else {
        return false;
    };
    let mut members = 0;
    for m in s.split(',') {
        let m = m.trim_matches([' ', '\t']);
        if m.is_empty() {
            continue;
        }
        members += 1;
        let Some((key, value)) = m.split_once('=') else {
            return false;
        };
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
            });
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && value
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
            && !value.ends_with(' ');
        if !key_ok || !value_ok {
            return false;
        }
    }
    members <= TRACESTATE_MEMBERS
}

impl TraceContext {
    /// The request's context from its headers: continued when `traceparent` is valid,
    /// a new trace otherwise.
    pub fn from_headers(h: &HeaderMap, sampler: &Sampler) -> Self {
        let mut parents = h.get_all(&TRACEPARENT).iter();
        let parent = match (parents.next(), parents.next()) {
            (Some(v), None) => parse_traceparent(v.as_bytes()),
            _ => None,
        };
        let span_id = new_span_id();
        match parent {
            Some((trace_id, parent_id, sampled)) => {
                let mut states = h.get_all(&TRACESTATE).iter();
                let tracestate = match (states.next(), states.next()) {
                    (Some(v), None) if tracestate_ok(v.as_bytes()) => Some(v.clone()),
                    _ => None,
                };
                Self {
                    trace_id,
                    parent_id: Some(parent_id),
                    span_id,
                    sampled: sampler.sampled(&trace_id, Some(sampled)),
                    tracestate,
                }
            }
            None => {
                let trace_id = new_trace_id();
                Self {
                    trace_id,
                    parent_id: None,
                    span_id,
                    sampled: sampler.sampled(&trace_id, None),
                    tracestate: None,
                }
            }
        }
    }

    /// The `traceparent` the upstream gets: this trace, this gateway's span as parent.
    pub fn traceparent(&self) -> HeaderValue {
        // Written on the stack: the header value is the one allocation per request.
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for (i, b) in self.trace_id.iter().enumerate() {
            out[3 + 2 * i] = DIGITS[(b >> 4) as usize];
            out[4 + 2 * i] = DIGITS[(b & 15) as usize];
        }
        for (i, b) in self.span_id.iter().enumerate() {
            out[36 + 2 * i] = DIGITS[(b >> 4) as usize];
            out[37 + 2 * i] = DIGITS[(b & 15) as usize];
        }
        if self.sampled {
            out[54] = b'1';
        }
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The trace id in hex.
    pub fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// This gateway's span id in hex.
    pub fn span_hex(&self) -> String {
        hex(&self.span_id)
    }
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `b` in lower-case hex (trace and span ids in log lines).
pub fn push_hex(out: &mut String, b: &[u8]) {
    for x in b {
        out.push(DIGITS[(x >> 4) as usize] as char);
        out.push(DIGITS[(x & 15) as usize] as char);
    }
}

fn hex(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() * 2);
    push_hex(&mut out, b);
    out
}

/// A random, non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A random, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_valid_parent_is_continued_with_this_gateway_as_the_parent() {
        let h = headers(&[
            (TRACEPARENT.as_str(), GOOD),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ]);
        let t = TraceContext::from_headers(&h, &Sampler::default());
        assert_eq!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert!(t.sampled);
        let out = t.traceparent();
        let out = out.to_str().unwrap();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert_ne!(
            &out[36..52],
            "00f067aa0ba902b7",
            "the gateway's own span is the parent"
        );
        assert_eq!(&out[36..52], t.span_hex());
        assert_eq!(
            t.tracestate.unwrap(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        // Not sampled by the caller: parent-based follows it.
        let h = headers(&[(TRACEPARENT.as_str(), &GOOD.replace("-01", "-00"))]);
        let t = TraceContext::from_headers(&h, &Sampler::default());
        assert!(!t.sampled);
        assert!(t.traceparent().to_str().unwrap().ends_with("-00"));
        // A later version is read by its first fields.
        let later = format!("cc{}-what-comes-next", &GOOD[2..]);
        let t =
            TraceContext::from_headers(&headers(&[("traceparent", &later)]), &Sampler::default());
        assert_eq!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_malformed_parent_is_replaced_and_its_state_dropped() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ];
        for b in bad {
            let h = headers(&[("traceparent", b), ("tracestate", "a=b")]);
            let t = TraceContext::from_headers(&h, &Sampler::default());
            assert_ne!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736", "{b:?}");
            assert!(t.parent_id.is_none() && t.tracestate.is_none(), "{b:?}");
            assert_eq!(t.traceparent().len(), 55);
            assert!(t.sampled, "a new trace, sampled by the root rule");
        }
        // Twice is invalid too.
        let h = headers(&[("traceparent", GOOD), ("traceparent", GOOD)]);
        assert!(
            TraceContext::from_headers(&h, &Sampler::default())
                .parent_id
                .is_none()
        );
        // A bad tracestate is dropped, the parent kept.
        for state in ["no-equals", "UPPER=1", &"a=b,".repeat(40), "k=v,k2=v=x"] {
            let h = headers(&[("traceparent", GOOD), ("tracestate", state)]);
            let t = TraceContext::from_headers(&h, &Sampler::default());
            assert!(t.parent_id.is_some() && t.tracestate.is_none(), "{state}");
        }
    }

    #[test]
    fn samplers_decide_as_configured_and_ratios_by_trace_id() {
        let low = [0u8; 16];
        let mut high = [0xffu8; 16];
        high[0] = 1;
        assert!(Sampler::Always.sampled(&high, Some(false)));
        assert!(!Sampler::Never.sampled(&low, Some(true)));
        assert!(Sampler::Ratio(0.5).sampled(&low, None));
        assert!(!Sampler::Ratio(0.5).sampled(&high, None));
        assert!(!Sampler::Ratio(0.0).sampled(&low, None));
        assert!(Sampler::Ratio(1.0).sampled(&high, None));
        let p = Sampler::ParentBased(Root::Never);
        assert!(p.sampled(&high, Some(true)));
        assert!(!p.sampled(&high, None));
        // About a quarter of random ids at 0.25.
        let n = (0..4000)
            .filter(|_| Sampler::Ratio(0.25).sampled(&new_trace_id(), None))
            .count();
        assert!((700..1300).contains(&n), "{n}");
    }
}
