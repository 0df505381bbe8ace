//! The importer's errors: input that cannot be read, is not valid App Mesh, or defines one
//! object twice in different ways; and gateway files that cannot be made.

use std::path::PathBuf;

/// Why an import (or a gateway file) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is not JSON.
    #[error("{file}:{line}:{column}: not valid JSON: {message}")]
    Json {
        /// The file.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A spec App Mesh itself would refuse (or a shape no `aws appmesh` command prints).
    #[error("{file} {path}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// JSON path of the field inside the file, e.g. `$.spec.listeners[0].portMapping.port`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Two places define the same object (same mesh, kind and name) differently.
    #[error(
        "{kind} {name} is defined twice, differently: in {first} and in {second}; keep one (identical copies are fine)"
    )]
    Conflict {
        /// `virtual gateway`, `gateway route`, ...
        kind: String,
        /// The object's name (with its mesh and parent).
        name: String,
        /// File and JSON path of the first definition.
        first: String,
        /// File and JSON path of the second definition.
        second: String,
    },
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A directory holds no `*.json` file.
    #[error("{}: no *.json file in this directory", path.display())]
    NoFiles {
        /// The directory.
        path: PathBuf,
    },
    /// `gateway_file` was asked for a virtual gateway the import does not hold.
    #[error("no virtual gateway is named `{name}` (imported: {known})")]
    UnknownGateway {
        /// The name asked for.
        name: String,
        /// The imported gateways, comma-separated.
        known: String,
    },
    /// A gateway file cannot stand alone for this gateway (it needs something only a
    /// control plane or an operator can give).
    #[error("gateway {gateway} cannot be written as a standalone gateway file: {message}")]
    Incomplete {
        /// The Portico gateway.
        gateway: String,
        /// What is missing and what to do.
        message: String,
    },
    /// The objects could not be written in the asked format.
    #[error("cannot write the objects: {message}")]
    Serialize {
        /// The serializer's message.
        message: String,
    },
}
