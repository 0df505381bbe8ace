//! The OTLP protobuf body, written straight from [`SpanData`]: no message structs are
//! built on the way (each would be a handful of allocations per span, and the export
//! thread shares the gateway's cores). The result decodes as [`proto::ExportTraceServiceRequest`];
//! the tests check it against the same request built with prost's messages.

use std::fmt::Write as _;

use prost::encoding::encoded_len_varint;

#[cfg(test)]
use crate::proto;
use crate::{Kind, SpanData, Value};

/// A varint, the common one-byte case first.
#[inline]
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A length-delimited field written in place: two bytes are kept for the length while
/// `write` fills the content, then set (and the content moved one byte back when its
/// length fits in one, or forward in the rare case of three or more).
fn len_prefixed(buf: &mut Vec<u8>, tag: u64, write: impl FnOnce(&mut Vec<u8>)) {
    key(buf, tag, LEN);
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    write(buf);
    let n = buf.len() - at - 2;
    if n < 0x80 {
        buf[at] = n as u8;
        buf.copy_within(at + 2.., at + 1);
        buf.truncate(buf.len() - 1);
    } else if n < 0x4000 {
        buf[at] = (n as u8) | 0x80;
        buf[at + 1] = (n >> 7) as u8;
    } else {
        let mut v = Vec::with_capacity(10);
        encode_varint(n as u64, &mut v);
        buf.splice(at..at + 2, v);
    }
}

/// Room kept before the spans for the headers of the messages around them.
const HEAD_ROOM: usize = 128;

const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

fn key(buf: &mut Vec<u8>, tag: u64, wire: u64) {
    encode_varint((tag << 3) | wire, buf);
}

/// A length-delimited field's header (key and length).
fn len_header(buf: &mut Vec<u8>, tag: u64, len: usize) {
    key(buf, tag, LEN);
    encode_varint(len as u64, buf);
}

/// The size of a length-delimited field holding `len` bytes (tags below 16: one key byte).
fn len_field_size(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A bytes or string field; left out when empty (proto3's default).
fn bytes(buf: &mut Vec<u8>, tag: u64, b: &[u8]) {
    if !b.is_empty() {
        len_header(buf, tag, b.len());
        buf.extend_from_slice(b);
    }
}

fn fixed64(buf: &mut Vec<u8>, tag: u64, v: u64) {
    if v != 0 {
        key(buf, tag, I64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn varint(buf: &mut Vec<u8>, tag: u64, v: u64) {
    if v != 0 {
        key(buf, tag, VARINT);
        encode_varint(v, buf);
    }
}

/// A `KeyValue` field; `text` is scratch space for values written out as text.
fn key_value(buf: &mut Vec<u8>, tag: u64, k: &str, v: &Value, text: &mut String) {
    let s: Option<&str> = match v {
        Value::Str(s) => Some(s),
        Value::Shared(s) => Some(s),
        Value::Static(s) => Some(s),
        Value::Ip(ip) => {
            text.clear();
            let _ = write!(text, "{ip}");
            Some(text)
        }
        Value::Int(_) | Value::Bool(_) => None,
    };
    // AnyValue: its one field is always written (a oneof has no default to leave out).
    let any = match (s, v) {
        (Some(s), _) => len_field_size(s.len()),
        (None, Value::Int(i)) => 1 + encoded_len_varint(*i as u64),
        _ => 2,
    };
    let key_size = if k.is_empty() {
        0
    } else {
        len_field_size(k.len())
    };
    len_header(buf, tag, key_size + len_field_size(any));
    bytes(buf, 1, k.as_bytes());
    len_header(buf, 2, any);
    match (s, v) {
        (Some(s), _) => {
            len_header(buf, 1, s.len());
            buf.extend_from_slice(s.as_bytes());
        }
        (None, Value::Int(i)) => {
            key(buf, 3, VARINT);
            encode_varint(*i as u64, buf);
        }
        (None, Value::Bool(b)) => {
            key(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        _ => {}
    }
}

/// One span's fields (the message's content, without its own header).
#[allow(
    clippy::too_many_arguments,
    reason = "the fields of one message, written in order"
)]
fn span(
    buf: &mut Vec<u8>,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    trace_state: &str,
    parent: Option<&[u8; 8]>,
    name: &str,
    kind: Kind,
    (start, end): (u64, u64),
    rest: Option<&SpanData>,
    text: &mut String,
) {
    bytes(buf, 1, trace_id);
    bytes(buf, 2, span_id);
    bytes(buf, 3, trace_state.as_bytes());
    if let Some(p) = parent {
        bytes(buf, 4, p);
    }
    bytes(buf, 5, name.as_bytes());
    varint(buf, 6, kind as u64);
    fixed64(buf, 7, start);
    fixed64(buf, 8, end);
    let error = rest.and_then(|s| s.error.as_deref());
    if let Some(s) = rest {
        for (k, v) in &s.attributes {
            key_value(buf, 9, k, v, text);
        }
        for (name, at) in &s.events {
            let size = if *at == 0 { 0 } else { 9 }
                + if name.is_empty() {
                    0
                } else {
                    len_field_size(name.len())
                };
            len_header(buf, 11, size);
            fixed64(buf, 1, *at);
            bytes(buf, 2, name.as_bytes());
        }
        for (t, sp) in &s.links {
            len_header(buf, 13, len_field_size(16) + len_field_size(8));
            bytes(buf, 1, t);
            bytes(buf, 2, sp);
        }
    }
    // Status: always present; an error is code 2 with its message.
    let message = error.unwrap_or("");
    let code = if error.is_some() { 2 } else { 0 };
    let size = if message.is_empty() {
        0
    } else {
        len_field_size(message.len())
    } + if code == 0 { 0 } else { 2 };
    len_header(buf, 15, size);
    bytes(buf, 2, message.as_bytes());
    varint(buf, 3, code);
    // flags (tag 16: a two-byte key): sampled.
    key(buf, 16, I32);
    buf.extend_from_slice(&1u32.to_le_bytes());
}

/// The id of a span's `i`-th phase: made from the span's own, so that a batch is written
/// without drawing random numbers, and never zero.
pub(crate) fn phase_id(parent: &[u8; 8], i: usize) -> [u8; 8] {
    let mut z = u64::from_be_bytes(*parent) ^ ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 || z.to_be_bytes() == *parent {
        z = z.wrapping_add(1);
    }
    z.to_be_bytes()
}

/// The `ExportTraceServiceRequest` body for `spans` of `service_name`; each span's phases
/// become child spans of it. The spans are written once, in place; the messages around
/// them go in the room kept in front.
pub fn encode(service_name: &str, spans: Vec<SpanData>) -> bytes::Bytes {
    let mut text = String::new();
    let mut all = Vec::with_capacity(HEAD_ROOM + spans.len() * 768);
    all.resize(HEAD_ROOM, 0);
    for s in &spans {
        for (i, p) in s.phases.iter().enumerate() {
            len_prefixed(&mut all, 2, |b| {
                span(
                    b,
                    &s.trace_id,
                    &phase_id(&s.span_id, i),
                    "",
                    Some(&s.span_id),
                    p.name,
                    Kind::Internal,
                    (p.start, p.end.max(p.start)),
                    None,
                    &mut text,
                );
            });
        }
        len_prefixed(&mut all, 2, |b| {
            span(
                b,
                &s.trace_id,
                &s.span_id,
                &s.trace_state,
                s.parent_id.as_ref(),
                &s.name,
                s.kind,
                (s.start, s.end),
                Some(s),
                &mut text,
            );
        });
    }
    drop(spans);
    let spans_len = all.len() - HEAD_ROOM;
    // Resource { attributes: [service.name] }.
    let mut resource = Vec::new();
    key_value(
        &mut resource,
        1,
        "service.name",
        &Value::Str(service_name.to_owned()),
        &mut text,
    );
    // InstrumentationScope { name, version }.
    let mut scope = Vec::new();
    bytes(&mut scope, 1, b"portico");
    bytes(&mut scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
    let scope_spans = len_field_size(scope.len()) + spans_len;
    let resource_spans = len_field_size(resource.len()) + len_field_size(scope_spans);
    let mut head = Vec::with_capacity(HEAD_ROOM);
    len_header(&mut head, 1, resource_spans);
    len_header(&mut head, 1, resource.len());
    head.extend_from_slice(&resource);
    len_header(&mut head, 2, scope_spans);
    len_header(&mut head, 1, scope.len());
    head.extend_from_slice(&scope);
    if head.len() > HEAD_ROOM {
        // A service name longer than the room: the one case that copies the spans.
        head.extend_from_slice(&all[HEAD_ROOM..]);
        return head.into();
    }
    let start = HEAD_ROOM - head.len();
    all[start..HEAD_ROOM].copy_from_slice(&head);
    bytes::Bytes::from(all).slice(start..)
}

/// The same request built with prost's messages: what [`encode`] must decode to.
#[cfg(test)]
fn with_prost(service_name: &str, spans: Vec<SpanData>) -> proto::ExportTraceServiceRequest {
    use proto::any_value::Value as V;
    let kv = |key: &str, v: Value| proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue {
            value: Some(match v {
                Value::Str(s) => V::StringValue(s),
                Value::Shared(s) => V::StringValue(s.to_string()),
                Value::Static(s) => V::StringValue(s.to_owned()),
                Value::Ip(ip) => V::StringValue(ip.to_string()),
                Value::Int(i) => V::IntValue(i),
                Value::Bool(b) => V::BoolValue(b),
            }),
        }),
    };
    let mut out = Vec::new();
    for s in spans {
        for (i, p) in s.phases.iter().enumerate() {
            out.push(proto::Span {
                trace_id: s.trace_id.to_vec(),
                span_id: phase_id(&s.span_id, i).to_vec(),
                trace_state: String::new(),
                parent_span_id: s.span_id.to_vec(),
                name: p.name.to_owned(),
                kind: Kind::Internal as i32,
                start_time_unix_nano: p.start,
                end_time_unix_nano: p.end.max(p.start),
                attributes: Vec::new(),
                events: Vec::new(),
                links: Vec::new(),
                status: Some(proto::Status {
                    message: String::new(),
                    code: 0,
                }),
                flags: 1,
            });
        }
        out.push(proto::Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            trace_state: s.trace_state,
            parent_span_id: s.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: s.name,
            kind: s.kind as i32,
            start_time_unix_nano: s.start,
            end_time_unix_nano: s.end,
            attributes: s.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
            events: s
                .events
                .into_iter()
                .map(|(name, at)| proto::Event {
                    time_unix_nano: at,
                    name: name.to_owned(),
                    attributes: Vec::new(),
                })
                .collect(),
            links: s
                .links
                .into_iter()
                .map(|(t, sp)| proto::Link {
                    trace_id: t.to_vec(),
                    span_id: sp.to_vec(),
                })
                .collect(),
            status: Some(match s.error {
                Some(message) => proto::Status { message, code: 2 },
                None => proto::Status {
                    message: String::new(),
                    code: 0,
                },
            }),
            flags: 1,
        });
    }
    proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(proto::Resource {
                attributes: vec![kv("service.name", Value::Str(service_name.to_owned()))],
            }),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope {
                    name: "portico".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans: out,
            }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message as _;

    use super::*;
    use crate::Phase;

    fn spans() -> Vec<SpanData> {
        let mut out = Vec::new();
        for i in 0..40u8 {
            // Up to 273 bytes, and one span of more than 16 KiB (a three-byte length).
            let long = "x".repeat(if i == 39 { 20_000 } else { usize::from(i) * 7 });
            out.push(SpanData {
                trace_id: [i.wrapping_add(1); 16],
                span_id: [i ^ 0x5a; 8],
                parent_id: (i % 3 != 0).then_some([i; 8]),
                trace_state: if i % 4 == 0 {
                    format!("k=v{i}")
                } else {
                    String::new()
                },
                name: format!("GET route-{i}{long}"),
                kind: if i % 5 == 0 {
                    Kind::Consumer
                } else {
                    Kind::Server
                },
                start: 1_700_000_000_000_000_000 + u64::from(i),
                end: if i == 7 { 0 } else { 1_700_000_000_000_900_000 },
                attributes: vec![
                    ("http.request.method", Value::Static("GET")),
                    ("url.path", Value::Str(format!("/p/{i}{long}"))),
                    ("empty", Value::Str(String::new())),
                    ("portico.service", Value::Shared(Arc::from("svc"))),
                    ("client.address", Value::Ip([127, 0, 0, i].into())),
                    (
                        "client.v6",
                        Value::Ip("2001:db8::1".parse().unwrap_or_else(|_| unreachable!())),
                    ),
                    ("http.response.status_code", Value::Int(200 + i64::from(i))),
                    ("negative", Value::Int(-i64::from(i))),
                    ("zero", Value::Int(0)),
                    ("delta", Value::Bool(i % 2 == 0)),
                ],
                events: if i % 6 == 0 {
                    vec![("e", 5), ("", 0)]
                } else {
                    Vec::new()
                },
                links: if i % 2 == 1 {
                    vec![([3; 16], [4; 8])]
                } else {
                    Vec::new()
                },
                phases: (0..usize::from(i % 6))
                    .map(|p| Phase {
                        name: [
                            "route",
                            "authenticate",
                            "limit",
                            "upstream connect",
                            "upstream response",
                        ][p % 5],
                        start: 10 + p as u64,
                        end: if p == 2 { 0 } else { 20 + p as u64 },
                    })
                    .collect(),
                error: match i % 7 {
                    0 => Some("upstream_timeout".into()),
                    1 => Some(String::new()),
                    _ => None,
                },
                deferred: None,
            });
        }
        out
    }

    #[test]
    fn the_body_decodes_to_what_prost_would_have_written() {
        for service in ["edge-gateway", &"s".repeat(300)] {
            let body = encode(service, spans());
            let got = proto::ExportTraceServiceRequest::decode(body.as_ref())
                .unwrap_or_else(|e| panic!("{e}"));
            let want = with_prost(service, spans());
            assert_eq!(got, want);
            // And byte for byte, as prost writes it.
            assert_eq!(body.as_ref(), want.encode_to_vec().as_slice());
        }
    }

    #[test]
    fn phase_ids_differ_from_their_span_and_each_other() {
        let parent = [9; 8];
        let ids: std::collections::HashSet<[u8; 8]> =
            (0..6).map(|i| phase_id(&parent, i)).collect();
        assert_eq!(ids.len(), 6);
        assert!(!ids.contains(&parent) && !ids.contains(&[0; 8]));
    }
}
