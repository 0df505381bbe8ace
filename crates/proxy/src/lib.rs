//! Portico's data plane.

pub mod error;
pub mod rewrite;
pub mod router;

pub use error::Error;
