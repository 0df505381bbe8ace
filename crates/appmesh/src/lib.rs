//! AWS App Mesh to Portico: reads what the `aws appmesh` CLI prints or takes (virtual
//! gateways, gateway routes, virtual services, virtual routers, routes, virtual nodes) and
//! makes Portico gateways, services and routes, with a report of every part of the input:
//! carried over as it is, changed (and how), or not carried (and why). Pure: no network, no
//! async; reading files is the only I/O ([`read_path`]).
//!
//! ```no_run
//! let sources = portico_appmesh::read_path(std::path::Path::new("mesh/"))?;
//! let import = portico_appmesh::import(&sources)?;
//! print!("{}", import.report);
//! let apply_document = import.objects.to_toml()?;
//! # Ok::<(), portico_appmesh::Error>(())
//! ```
//!
//! - [`source`]: files, their JSON documents, the objects in them in any CLI shape
//! - `mesh` (private): App Mesh's objects, typed and checked against App Mesh's rules
//! - `translate` (private): App Mesh objects to Portico objects
//! - [`mod@import`]: the objects made, gateway files
//! - [`report`]: the report's items and how they print
//! - [`error`]: what can fail
//!
//! docs/appmesh.md has the mapping, the report format, and what is not carried and why.

pub mod error;
pub mod import;
mod json;
mod mesh;
mod read;
pub mod report;
pub mod source;
mod translate;

pub use error::Error;
pub use import::{Import, Objects};
pub use report::{Item, Outcome, Report};
pub use source::{Source, read_path};

/// Imports the App Mesh objects of `sources` (files as [`read_path`] gives them).
pub fn import(sources: &[Source]) -> Result<Import, Error> {
    let docs = source::documents(sources)?;
    let (input, notes) = read::read(&docs)?;
    Ok(translate::run(input, notes))
}
