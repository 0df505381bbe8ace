//! The byte streams of client connections, plain TCP or TLS, as the HTTP/1.1 server uses
//! them: split so a request body can be read while the response is written, joined again
//! for a tunnel after a 101.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

/// A client connection's byte stream, split so that a request body can be read while the
/// response is written, and joined again for a tunnel after a 101.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + Sized + 'static {
    /// The write half.
    type Wr: AsyncWrite + Send + Unpin;
    /// Splits the stream.
    fn split(self) -> (Reader, Self::Wr);
    /// Joins the halves again; `None` when they are not two halves of one stream.
    fn join(rd: Reader, wr: Self::Wr) -> Option<Self>;
}

/// The read half of a client connection. An enum rather than a type parameter: a request
/// body carries it through the pipeline, which serves both kinds of connection.
#[derive(Debug)]
pub enum Reader {
    /// Plain TCP: its own half, no lock between reader and writer.
    Tcp(OwnedReadHalf),
    /// TLS: one rustls session shared by both halves (tokio's split, which locks per poll).
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

impl Transport for TcpStream {
    type Wr = OwnedWriteHalf;

    fn split(self) -> (Reader, OwnedWriteHalf) {
        let (rd, wr) = self.into_split();
        (Reader::Tcp(rd), wr)
    }

    fn join(rd: Reader, wr: OwnedWriteHalf) -> Option<Self> {
        match rd {
            Reader::Tcp(rd) => rd.reunite(wr).ok(),
            Reader::Tls(_) => None,
        }
    }
}

impl Transport for TlsStream<TcpStream> {
    type Wr = WriteHalf<TlsStream<TcpStream>>;

    fn split(self) -> (Reader, Self::Wr) {
        let (rd, wr) = tokio::io::split(self);
        (Reader::Tls(rd), wr)
    }

    fn join(rd: Reader, wr: Self::Wr) -> Option<Self> {
        match rd {
            Reader::Tls(rd) if rd.is_pair_of(&wr) => Some(rd.unsplit(wr)),
            _ => None,
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Tcp(rd) => Pin::new(rd).poll_read(cx, buf),
            Reader::Tls(rd) => Pin::new(rd).poll_read(cx, buf),
        }
    }
}
