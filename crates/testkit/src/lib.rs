//! Test support for Portico: real servers on port 0 that record what they saw, clients, and
//! process launchers. Nothing here is mocked: every server speaks real HTTP over real sockets.
//!
//! - [`upstream`]: a programmable HTTP/1.1 + h2c upstream that records requests
//! - [`canned`]: an upstream that answers fixed bytes, for answers libraries will not make
//! - [`grpc`]: a tonic gRPC service and client with unary and streaming calls
//! - [`websocket`]: a WebSocket echo server and client
//! - [`client`]: HTTP/1.1 and h2c clients, raw TCP
//! - [`process`]: launching the `portico` binary and reading its logs
//! - [`browser`]: headless Chromium through chromedriver, with screenshots of failed steps

pub mod browser;
pub mod canned;
pub mod client;
pub mod grpc;
pub mod otlp;
pub mod process;
pub mod upstream;
pub mod websocket;

pub use browser::Browser;
pub use canned::Canned;
pub use client::{Client, Resp};
pub use upstream::{Recorded, Reply, Upstream};
