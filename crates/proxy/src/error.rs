//! The data plane's setup error: what stops a Snapshot from being applied or a gateway from
//! starting. Errors on the request path are [`crate::fault::ProxyError`].

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
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error (said in the message, so not also given as the source: a chain
        /// printed whole would say it twice).
        error: io::Error,
    },
    /// Another gateway's process on this machine listens on the port.
    #[error(
        "port {} is held by {holder}; this is {ours}: two gateways on one port would take turns answering each other's requests. Give this listener another port, or stop the other gateway",
        addr.port()
    )]
    PortHeld {
        /// The address.
        addr: SocketAddr,
        /// Who holds it.
        holder: String,
        /// Who asked.
        ours: String,
    },
    /// A worker thread or runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}
