//! The importer end to end: App Mesh JSON as the `aws appmesh` CLI prints or takes it, in,
//! Portico objects that validate and a report, out.

mod common;
mod errors;
mod grpc;
mod matches;
mod reference;
mod router;
mod scale;
mod shapes;
mod shop;
mod tls;
