//! Entry points for the fuzz targets in `fuzz/` (outside the workspace) and for the property
//! tests that run the same inputs in the normal suite: the HTTP/1.1 request head parser and
//! the chunked body decoder, on arbitrary bytes. Each checks what must hold whatever the
//! input: no panic, nothing consumed beyond the input, and a refused input stays refused
//! however it is split.

use bytes::BytesMut;
use http_body::Frame;

use crate::codec::{Decoded, Decoder};
use crate::listener::h1::{HeadOutcome, probe_head};

/// The head limit the targets use (the listeners' default).
const MAX_HEADER: usize = 64 * 1024;

/// Parses `data` as a request head; panics when an invariant breaks.
pub fn h1_head(data: &[u8]) {
    match probe_head(data, MAX_HEADER) {
        HeadOutcome::Complete { consumed } => {
            assert!(consumed <= data.len(), "consumed past the input");
            assert!(consumed <= MAX_HEADER, "a head over the limit was taken");
            // The same head with more bytes after it parses to the same length.
            let mut longer = data[..consumed].to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
            match probe_head(&longer, MAX_HEADER) {
                HeadOutcome::Complete { consumed: again } => assert_eq!(again, consumed),
                _ => panic!("a complete head changed with what followed it"),
            }
        }
        HeadOutcome::Partial => {
            // Every prefix of an incomplete head is incomplete or refused, never complete.
            if let Some(cut) = data.len().checked_sub(1) {
                assert!(
                    !matches!(
                        probe_head(&data[..cut], MAX_HEADER),
                        HeadOutcome::Complete { .. }
                    ),
                    "a prefix of an incomplete head was complete"
                );
            }
        }
        HeadOutcome::Refused => {}
    }
}

/// Decodes `data` as a chunked body, whole and split in two at a point the input picks;
/// panics when an invariant breaks or the two disagree.
pub fn chunked(data: &[u8]) {
    let whole = decode(&[data]);
    let at = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let split = decode(&[&data[..at], &data[at..]]);
    assert_eq!(
        whole, split,
        "splitting the input changed what it decoded to"
    );
    if let Ok((bytes, _)) = &whole {
        assert!(*bytes <= data.len() as u64, "more body than input");
    }
}

/// Decodes the parts one after the other; answers the data bytes and whether the body ended,
/// or that it was refused.
fn decode(parts: &[&[u8]]) -> Result<(u64, bool), ()> {
    let mut d = Decoder::ChunkSize;
    let mut buf = BytesMut::new();
    let mut bytes = 0u64;
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match d.decode(&mut buf).map_err(|_| ())? {
                Decoded::Frame(f) => bytes += frame_len(&f),
                Decoded::NeedMore => break,
                Decoded::End => return Ok((bytes, true)),
            }
        }
    }
    Ok((bytes, false))
}

fn frame_len(f: &Frame<bytes::Bytes>) -> u64 {
    f.data_ref().map_or(0, |d| d.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seed corpora of the fuzz targets, run here as plain tests.
    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_seed_corpora_hold() {
        let heads = corpus("h1_head");
        assert!(heads.len() >= 10, "a seed corpus exists");
        for h in &heads {
            h1_head(h);
        }
        let bodies = corpus("chunked");
        assert!(bodies.len() >= 5, "a seed corpus exists");
        for b in &bodies {
            chunked(b);
        }
    }

    #[test]
    fn a_well_formed_chunked_body_decodes_whole_and_split() {
        let body = b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(decode(&[body]), Ok((7, true)));
        for at in 0..body.len() {
            assert_eq!(decode(&[&body[..at], &body[at..]]), Ok((7, true)), "{at}");
        }
    }

    fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
        // Requests made of real-looking pieces, mutated: more interesting than noise.
        let line = prop_oneof![
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"POST /x?y=1 HTTP/1.1\r\n".to_vec()),
            Just(b"Host: a\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"Content-Length: 5, 5\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Transfer-Encoding: gzip, chunked\r\n".to_vec()),
            Just(b" folded\r\n".to_vec()),
            Just(b"X: a\nY: b\n".to_vec()),
            Just(b"\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..16),
        ];
        prop::collection::vec(line, 0..10).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_head_bytes_hold_the_invariants(data in head_bytes()) {
            h1_head(&data);
        }

        #[test]
        fn any_chunked_bytes_hold_the_invariants(data in prop::collection::vec(
            prop_oneof![Just(b'0'), Just(b'5'), Just(b'a'), Just(b'\r'), Just(b'\n'), Just(b';'), any::<u8>()],
            0..64,
        )) {
            chunked(&data);
        }
    }
}
