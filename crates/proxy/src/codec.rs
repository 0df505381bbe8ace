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
                    let Some(i) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(invalid("chunk size line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let hex = buf[..i]
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or(b"")
                        .trim_ascii();
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .filter(|h| !h.is_empty() && h.len() <= 16)
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .ok_or_else(|| invalid("bad chunk size"))?;
                    buf.advance(i + 2);
                    *self = if size == 0 {
                        Decoder::Trailers
                    } else {
                        Decoder::ChunkData(size)
                    };
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
