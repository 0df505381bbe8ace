//! Portico's data plane: a gateway node that serves a [`portico_model::Snapshot`].
//!
//! A Snapshot is compiled into a [`runtime::Runtime`] (route tables, resolved services,
//! metric handles) before it is swapped in; each request loads its listener's runtime once.
//!
//! - [`gateway`]: the running node: workers, listener reconciliation, shutdown
//! - [`listener`]: sockets, accept loops, client connections
//! - [`pipeline`]: the request path as named phases, in order (drawn in its docs)
//! - [`router`]: route lookup and precedence
//! - [`rewrite`]: path normalization and rewrites
//! - [`headers`]: hop-by-hop, forwarding headers, edits
//! - [`upstream`]: services, endpoints, balancing, retries, ejection, pools
//! - [`node`]: sync with a control plane, the snapshot cache, the admin API on port 2020
//! - [`fault`]: the request path's one error type (source, retry flag) and its rendering
//! - [`body`], [`exchange`], [`access_log`], [`metrics`], [`internal`]: the rest

pub mod access_log;
pub mod apps;
pub mod auth;
pub mod body;
pub mod clock;
pub mod codec;
pub mod cors;
pub mod error;
pub mod exchange;
pub mod fault;
pub mod fuzz;
pub mod gateway;
pub mod headers;
pub mod internal;
pub mod ip;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod ocsp;
pub mod pipeline;
pub mod portlock;
pub mod rewrite;
pub mod router;
pub mod runtime;
pub mod throttle;
pub mod tls;
pub mod token_cache;
pub use portico_otlp::context as trace;
pub mod upstream;

pub use error::Error;
pub use gateway::Gateway;
pub use runtime::Runtime;
