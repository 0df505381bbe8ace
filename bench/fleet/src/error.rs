//! The one error type of the tool.

use std::time::Duration;

/// Everything that can go wrong in a run, each saying what and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP connection to the control plane.
    #[error("cannot connect to the control plane at {addr}: {source}")]
    Connect {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange broke off.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built.
    #[error("cannot build a request: {0}")]
    Request(#[from] http::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer with a status the caller did not expect.
    #[error("{what}: the control plane answered {status}: {body}")]
    Status {
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A `Content-Encoding: gzip` body that does not inflate.
    #[error("the body does not inflate as gzip: {0}")]
    Gzip(std::io::Error),
    /// JSON that does not read as the expected type.
    #[error("unreadable JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// What a simulated node received failed the checks a real node makes.
    #[error("verification failed: {0}")]
    Verify(String),
    /// The control plane process or its `/proc` entries.
    #[error("the control plane process: {0}")]
    Server(String),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The run did not meet its conditions (clients that never got the change, ...).
    #[error("{0}")]
    Run(String),
}
