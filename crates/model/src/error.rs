//! The model's error type: a config that cannot be read, or one that reads but is wrong.

use std::fmt;

/// One problem with a config, at a field path such as `routes[2].match.path.regex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is, as a path from the document root.
    pub path: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

/// Errors from reading or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not valid TOML or JSON, or a field has the wrong shape.
    #[error("{}{path}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Syntax {
        /// Path of the field that failed, `.` for the document.
        path: String,
        /// 1-based line, where the parser knows it.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// The config parses but breaks one or more rules.
    #[error("{}", ErrorList(.0))]
    Invalid(Vec<FieldError>),
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Error {
    /// Every problem as a field error (a syntax error is one).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Syntax {
                path,
                line,
                message,
            } => vec![FieldError::new(
                path.clone(),
                match line {
                    Some(l) => format!("{message} (line {l})"),
                    None => message.clone(),
                },
            )],
            Self::Invalid(errors) => errors.clone(),
        }
    }
}

struct ErrorList<'a>(&'a [FieldError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
