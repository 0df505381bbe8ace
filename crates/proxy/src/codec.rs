//! HTTP/1.1 message bodies on the wire, shared by the client-facing server and the
//! upstream client: content-length, chunked (with trailers) and read-until-close decoding,
//! and chunked encoding.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

/// Longest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Largest trailer block accepted.
const MAX_TRAILERS: usize = 64 * 1024;

/// A message's transfer codings, gathered from its `Transfer-Encoding` lines in order (RFC
/// 9112 section 6.1). Requests and responses follow one rule: exactly one `chunked`, last.
#[derive(Debug, Default, Clone, Copy)]
pub struct Codings {
    present: bool,
    chunked: bool,
    after_chunked: bool,
    other: bool,
}

/// Why a message's transfer codings cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodingError {
    /// `chunked` is missing, repeated or not last: the length cannot be known (400).
    NotChunkedLast,
    /// A coding besides `chunked` (gzip, ...), which the gateway does not decode (501).
    Unsupported,
}

impl Codings {
    /// Adds one `Transfer-Encoding` line. Empty list elements are ignored (RFC 9110
    /// section 5.6.1).
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in value
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
        {
            if self.chunked {
                self.after_chunked = true;
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked = true;
            } else {
                self.other = true;
            }
        }
    }

    /// `Ok(true)` for a chunked body, `Ok(false)` when there was no `Transfer-Encoding`.
    pub fn chunked(&self) -> Result<bool, CodingError> {
        if self.after_chunked || (self.present && !self.chunked) {
            Err(CodingError::NotChunkedLast)
        } else if self.other {
            Err(CodingError::Unsupported)
        } else {
            Ok(self.chunked)
        }
    }
}

/// Where a body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// `content-length`: this many bytes left.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk: this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk.
    ChunkEnd,
    /// After the last chunk: trailers or the final CRLF.
    Trailers,
    /// Everything until the peer closes.
    UntilClose,
    /// The body is complete.
    Done,
}

/// What one decoding step produced.
#[derive(Debug)]
pub enum Decoded {
    /// A data or trailers frame.
    Frame(Frame<Bytes>),
    /// More bytes are needed.
    NeedMore,
    /// The body is complete.
    End,
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Decoder {
    /// A decoder for a body of `len` bytes (`Done` for 0).
    pub fn length(len: u64) -> Self {
        if len == 0 {
            Decoder::Done
        } else {
            Decoder::Length(len)
        }
    }

    /// True once the body is complete.
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Decodes what `buf` holds, consuming it. Call again after `NeedMore` with more bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, io::Error> {
        loop {
            match *self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let chunk = buf.split_to(n).freeze();
                    *self = Decoder::length(left - n as u64);
                    return Ok(Decoded::Frame(Frame::data(chunk)));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Frame(Frame::data(buf.split().freeze())));
                }
                Decoder::ChunkSize => {
                    // Leading zeros are allowed in any number (RFC 9112 section 7.1): drop
                    // them as they come so a long run never counts against the line limit.
                    while buf.len() >= 2 && buf[0] == b'0' && buf[1].is_ascii_hexdigit() {
                        buf.advance(1);
                    }
                    match chunk_line(buf)? {
                        Some((len, size)) => {
                            buf.advance(len);
                            *self = if size == 0 {
                                Decoder::Trailers
                            } else {
                                Decoder::ChunkData(size)
                            };
                        }
                        None if buf.len() > MAX_CHUNK_LINE => {
                            return Err(invalid("chunk size line too long"));
                        }
                        None => return Ok(Decoded::NeedMore),
                    }
                }
                Decoder::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let chunk = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Decoder::ChunkEnd
                    } else {
                        Decoder::ChunkData(left)
                    };
                    return Ok(Decoded::Frame(Frame::data(chunk)));
                }
                Decoder::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("missing CRLF after a chunk"));
                    }
                    buf.advance(2);
                    *self = Decoder::ChunkSize;
                }
                Decoder::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Decoder::Done;
                        return Ok(Decoded::End);
                    }
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    match httparse::parse_headers(buf, &mut headers) {
                        Ok(httparse::Status::Complete((len, hs))) => {
                            // httparse takes a bare LF as a line end; the chunked framing
                            // does not (the same bytes must not frame two ways).
                            if !crlf_only(&buf[..len]) {
                                return Err(invalid("a trailer line does not end in CRLF"));
                            }
                            let mut map = HeaderMap::new();
                            for h in hs {
                                if let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(h.name.as_bytes()),
                                    HeaderValue::from_bytes(h.value),
                                ) {
                                    map.append(n, v);
                                }
                            }
                            buf.advance(len);
                            *self = Decoder::Done;
                            return Ok(Decoded::Frame(Frame::trailers(map)));
                        }
                        Ok(httparse::Status::Partial) => {
                            if buf.len() > MAX_TRAILERS {
                                return Err(invalid("trailers too large"));
                            }
                            return Ok(Decoded::NeedMore);
                        }
                        Err(_) => return Err(invalid("malformed trailers")),
                    }
                }
            }
        }
    }
}

/// Parses a chunk-size line at the start of `buf` (RFC 9112 section 7.1, leading zeros
/// already dropped):
///
/// ```text
/// chunk-size [ chunk-ext ] CRLF
/// chunk-size = 1*HEXDIG
/// chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
/// ext-val    = token / quoted-string
/// ```
///
/// `Some((line length, size))`, `None` when the line is not complete yet. Anything else
/// (a sign, whitespace before the size, a bare CR or LF, control bytes) is an error: a
/// lenient parser reads a body differently from a strict one behind it.
fn chunk_line(buf: &[u8]) -> Result<Option<(usize, u64)>, io::Error> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return if buf.is_empty() {
            Ok(None)
        } else {
            Err(invalid("bad chunk size"))
        };
    }
    if digits > 16 {
        return Err(invalid("chunk size larger than 64 bits"));
    }
    let mut size = 0u64;
    for b in &buf[..digits] {
        size = size << 4 | u64::from(hex_value(*b));
    }
    let mut i = digits;
    loop {
        // Here: after the size or after a complete extension. Whitespace is allowed only
        // before a `;` (BWS), never before the CRLF.
        let j = skip_bws(buf, i);
        match buf.get(j) {
            None => return Ok(None),
            Some(b';') => {}
            Some(b'\r') if j == i => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((i + 2, size))),
                    Some(_) => Err(invalid("a chunk size line does not end in CRLF")),
                };
            }
            Some(_) => return Err(invalid("bad chunk size line")),
        }
        i = skip_bws(buf, j + 1);
        let name = token_len(&buf[i..]);
        if name == 0 {
            return if i == buf.len() {
                Ok(None)
            } else {
                Err(invalid("bad chunk extension name"))
            };
        }
        i += name;
        let eq = skip_bws(buf, i);
        match buf.get(eq) {
            None => return Ok(None),
            Some(b'=') => {}
            // No value: the next `;` or the CRLF is checked at the top.
            Some(_) => continue,
        }
        i = skip_bws(buf, eq + 1);
        match buf.get(i) {
            None => return Ok(None),
            Some(b'"') => match quoted_len(&buf[i..])? {
                Some(n) => i += n,
                None => return Ok(None),
            },
            Some(_) => {
                let n = token_len(&buf[i..]);
                if n == 0 {
                    return Err(invalid("bad chunk extension value"));
                }
                i += n;
            }
        }
    }
}

/// The index after the spaces and tabs from `i`.
fn skip_bws(buf: &[u8], mut i: usize) -> usize {
    while matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// Length of the token at the start of `b` (RFC 9110 section 5.6.2).
fn token_len(b: &[u8]) -> usize {
    b.iter().take_while(|c| is_tchar(**c)).count()
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Length of the quoted-string at the start of `b` (which starts with `"`), `None` when it
/// is not closed yet (RFC 9110 section 5.6.4).
fn quoted_len(b: &[u8]) -> Result<Option<usize>, io::Error> {
    let mut i = 1;
    loop {
        match b.get(i) {
            None => return Ok(None),
            Some(b'"') => return Ok(Some(i + 1)),
            Some(b'\\') => match b.get(i + 1) {
                None => return Ok(None),
                Some(&c) if c == b'\t' || c == b' ' || c.is_ascii_graphic() || c >= 0x80 => i += 2,
                Some(_) => return Err(invalid("bad quoted-pair in a chunk extension")),
            },
            // qdtext: HTAB, SP, VCHAR except `"` and `\`, obs-text.
            Some(&c) if c == b'\t' || c == b' ' || c.is_ascii_graphic() || c >= 0x80 => i += 1,
            Some(_) => return Err(invalid("control byte in a chunk extension")),
        }
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// True when every CR in `b` starts a CRLF and every LF ends one.
fn crlf_only(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| match c {
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && b[i - 1] == b'\r',
        _ => true,
    })
}

/// Appends the chunk header for `len` bytes (`{len:x}\r\n`).
pub fn chunk_header(out: &mut BytesMut, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk with `trailers` and the final CRLF.
pub fn last_chunk(out: &mut BytesMut, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (k, v) in trailers.into_iter().flatten() {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number.
pub fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        mut d: Decoder,
        input: &[u8],
    ) -> Result<(Vec<u8>, Option<HeaderMap>, Decoder), io::Error> {
        let mut buf = BytesMut::from(input);
        let mut data = Vec::new();
        let mut trailers = None;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Frame(f) => match f.into_data() {
                    Ok(b) => data.extend_from_slice(&b),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Decoded::NeedMore | Decoded::End => return Ok((data, trailers, d)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_trailers() {
        let (data, trailers, d) = decode_all(
            Decoder::ChunkSize,
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
        )
        .unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "42");
        assert!(d.is_done());
        let (data, trailers, d) = decode_all(Decoder::ChunkSize, b"3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"abc");
        assert!(trailers.is_none());
        assert!(d.is_done());
        // Split anywhere: the decoder waits for more.
        let (data, _, d) = decode_all(Decoder::ChunkSize, b"3\r\nab").unwrap();
        assert_eq!(data, b"ab");
        assert_eq!(d, Decoder::ChunkData(1));
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        assert!(decode_all(Decoder::ChunkSize, b"zz\r\n").is_err());
        assert!(decode_all(Decoder::ChunkSize, b"3\r\nabcXX").is_err());
        assert!(decode_all(Decoder::ChunkSize, &[b'1'; 2000]).is_err());
    }

    /// RFC 9112 section 7.1, byte for byte: what each chunked body decodes to, or `None`
    /// when it must be refused.
    #[test]
    fn chunk_size_lines_follow_rfc_9112() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (b"00000000000000005\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (
                b"0000000000000000000000000000000000000005\r\nhello\r\n000\r\n\r\n",
                Some(b"hello"),
            ),
            (b"5;a\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (
                b"5 ; a = b ;c=\"q \\\" ;\"\r\nhello\r\n0;z\r\n\r\n",
                Some(b"hello"),
            ),
            (b"5\t;\ta\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (b"A\r\n0123456789\r\n0\r\n\r\n", Some(b"0123456789")),
            (b"+5\r\nhello\r\n0\r\n\r\n", None),
            (b"-5\r\nhello\r\n0\r\n\r\n", None),
            (b"\n5\r\nhello\r\n0\r\n\r\n", None),
            (b" 5\r\nhello\r\n0\r\n\r\n", None),
            (b"5 \r\nhello\r\n0\r\n\r\n", None),
            (b"5\x0c\r\nhello\r\n0\r\n\r\n", None),
            (b"0x5\r\nhello\r\n0\r\n\r\n", None),
            (b"5\nhello\r\n0\r\n\r\n", None),
            (b"5\rhello\r\n0\r\n\r\n", None),
            (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", None),
            (b"5;a\rb\r\nhello\r\n0\r\n\r\n", None),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", None),
            (b"5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n", None),
            (b"5;\r\nhello\r\n0\r\n\r\n", None),
            (b"5;a=\r\nhello\r\n0\r\n\r\n", None),
            (b"5;a b\r\nhello\r\n0\r\n\r\n", None),
            (b"5;a=b c\r\nhello\r\n0\r\n\r\n", None),
            (b"10000000000000000\r\n", None),
            (b"5\r\nhello\n0\r\n\r\n", None),
            (b"5\r\nhello\r\n0\n\r\n", None),
            (b"5\r\nhello\r\n0\r\n\n", None),
            (b"5\r\nhello\r\n0\r\nx: 1\n\r\n", None),
        ];
        for (input, want) in cases {
            let shown = String::from_utf8_lossy(input);
            let got = decode_all(Decoder::ChunkSize, input);
            match (want, got) {
                (Some(want), Ok((data, _, d))) => {
                    assert_eq!(&data, want, "{shown:?}");
                    assert!(d.is_done(), "{shown:?} ends");
                }
                (Some(_), Err(e)) => panic!("{shown:?} refused: {e}"),
                (None, Ok((_, _, d))) => panic!("{shown:?} accepted (decoder at {d:?})"),
                (None, Err(_)) => {}
            }
            // Byte by byte, the same answer: a split never changes what a line means.
            let mut d = Decoder::ChunkSize;
            let mut buf = BytesMut::new();
            let mut data = Vec::new();
            let mut failed = false;
            'feed: for b in input.iter() {
                buf.extend_from_slice(&[*b]);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Decoded::Frame(f)) => {
                            if let Ok(b) = f.into_data() {
                                data.extend_from_slice(&b);
                            }
                        }
                        Ok(Decoded::NeedMore) => break,
                        Ok(Decoded::End) => break 'feed,
                        Err(_) => {
                            failed = true;
                            break 'feed;
                        }
                    }
                }
            }
            match want {
                Some(want) => assert!(!failed && d.is_done() && &data == want, "{shown:?} split"),
                None => assert!(failed, "{shown:?} split: accepted"),
            }
        }
    }

    #[test]
    fn trailers_end_in_crlf() {
        let (_, trailers, d) =
            decode_all(Decoder::ChunkSize, b"0\r\nx-a: 1\r\nx-b: 2\r\n\r\n").unwrap();
        assert!(d.is_done());
        let t = trailers.unwrap();
        assert_eq!(
            (t["x-a"].as_bytes(), t["x-b"].as_bytes()),
            (&b"1"[..], &b"2"[..])
        );
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut d = Decoder::length(3);
        let mut buf = BytesMut::from(&b"abcNEXT"[..]);
        let Decoded::Frame(f) = d.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(f.into_data().unwrap(), "abc");
        assert!(d.is_done());
        assert_eq!(&buf[..], b"NEXT", "the rest stays for the next message");
    }

    #[test]
    fn encoders() {
        let mut b = BytesMut::new();
        chunk_header(&mut b, 255);
        assert_eq!(&b[..], b"ff\r\n");
        let mut v = Vec::new();
        decimal(&mut v, 1_234_567);
        assert_eq!(v, b"1234567");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode_all(Decoder::ChunkSize, &bytes);
            let _ = decode_all(Decoder::Length(100), &bytes);
        }
    }
}
