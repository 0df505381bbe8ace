//! What a browser command, wait or step fails with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::error::CmdError;

/// A failed browser command, wait or step.
pub enum Error {
    /// chromedriver refused or failed a command.
    WebDriver {
        /// What the harness was doing, e.g. "click `#save`".
        what: String,
        /// chromedriver's answer.
        source: CmdError,
    },
    /// Something awaited did not happen in time.
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// The last thing seen instead (an error or a text), for the message.
        last: String,
    },
    /// A file could not be written.
    Io {
        /// The file and what was done.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A [`Browser::step`] failed; its screenshot was taken.
    Step {
        /// The step's name.
        step: String,
        /// Where the screenshot is, or why there is none.
        screenshot: Result<PathBuf, String>,
        /// The failure inside the step.
        source: Box<Error>,
    },
}

impl Error {
    /// The screenshot of a failed step.
    pub fn screenshot(&self) -> Option<&Path> {
        match self {
            Self::Step {
                screenshot: Ok(p), ..
            } => Some(p),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WebDriver { what, source } => write!(f, "{what}: {source}"),
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Timeout { what, waited, last } => {
                write!(f, "{what}: not there after {waited:.1?} (last: {last})")
            }
            Self::Step {
                step,
                screenshot,
                source,
            } => {
                write!(f, "step `{step}` failed: {source} (screenshot: ")?;
                match screenshot {
                    Ok(p) => write!(f, "{})", p.display()),
                    Err(e) => write!(f, "none, {e})"),
                }
            }
        }
    }
}

/// Debug is the message, so that `unwrap` and a test's `Err` print it readably.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::WebDriver { source, .. } => Some(source),
            Self::Io { source, .. } => Some(source),
            Self::Step { source, .. } => Some(source.as_ref()),
            Self::Timeout { .. } => None,
        }
    }
}

pub(super) fn wd(what: impl Into<String>, source: CmdError) -> Error {
    Error::WebDriver {
        what: what.into(),
        source,
    }
}
