//! The report: one item per thing the importer read and did not carry over exactly, plus a
//! summary item per object it created.

use std::fmt;

use serde::Serialize;

/// Everything the import has to say, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The items.
    pub items: Vec<Item>,
}

/// One thing the import did with one part of the input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Item {
    /// The file it came from, as it was given.
    pub file: String,
    /// JSON path inside the file, e.g. `$.spec.listeners[0].tls`.
    pub path: String,
    /// What it belongs to, e.g. `virtual gateway ingress-gw`.
    pub object: String,
    /// Whether it was carried over as it is, changed, or not carried.
    pub outcome: Outcome,
    /// What became of it and, where something is lost, what to do.
    pub message: String,
}

/// What became of one part of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Carried over with the same behaviour.
    Carried,
    /// Carried over, with a difference the message explains.
    Changed,
    /// Not carried over; the message says why and what to do.
    NotCarried,
}

impl Outcome {
    /// The words the report prints: `carried`, `changed`, `not carried`.
    pub fn words(self) -> &'static str {
        match self {
            Self::Carried => "carried",
            Self::Changed => "changed",
            Self::NotCarried => "not carried",
        }
    }
}

impl Report {
    /// The items with this outcome.
    pub fn with(&self, outcome: Outcome) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(move |i| i.outcome == outcome)
    }

    /// How many items have each outcome: (carried, changed, not carried).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |o| self.with(o).count();
        (
            n(Outcome::Carried),
            n(Outcome::Changed),
            n(Outcome::NotCarried),
        )
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<11}  {} {}  {}: {}",
            self.outcome.words(),
            self.file,
            self.path,
            self.object,
            self.message
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(f, "{item}")?;
        }
        Ok(())
    }
}
