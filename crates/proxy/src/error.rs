//! The data plane's setup error: what stops a Snapshot from being applied or a gateway from
//! starting. Errors on the request path are [`crate::respond::ProxyError`].

use std::io;
use std::net::SocketAddr;

/// Why a Snapshot could not be applied or the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Snapshot breaks a rule.
    #[error(transparent)]
    Invalid(#[from] portico_model::Error),
    /// A route could not be compiled.
    #[error("cannot compile {0}")]
    Route(String),
    /// A listener's address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A worker thread or runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}
