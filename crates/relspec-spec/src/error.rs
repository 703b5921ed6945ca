//! Typed errors that carry where they happened (file, byte span, rule).
//!
//! Every layer reports a [`Diag`]: a typed [`ErrorKind`] plus an optional
//! [`Location`], rule name and help text. `Diag` is `Clone + Eq` so salsa
//! queries can memoize results that contain it. The CLI turns it into a
//! miette report with the source text and a caret (see [`Diag::to_report`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong. One variant per class of problem a user can cause.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ErrorKind {
    /// The workspace file or a rule file could not be read.
    #[error("cannot read {0}")]
    Io(String),
    /// TOML syntax or shape error.
    #[error("invalid TOML: {0}")]
    Toml(String),
    /// A value in the workspace is well-formed TOML but not valid for relspec.
    #[error("{0}")]
    Invalid(String),
    /// SQL text could not be parsed.
    #[error("SQL syntax error: {0}")]
    SqlSyntax(String),
    /// A rule reads a name that is neither a dataset nor a rule.
    #[error("unknown table `{name}`")]
    UnknownTable {
        /// The name as written.
        name: String,
    },
    /// Rules depend on each other in a cycle.
    #[error("rule dependency cycle: {0}")]
    Cycle(String),
    /// A dataset location matches no file.
    #[error("dataset `{dataset}`: no file matches `{location}`")]
    MissingData {
        /// Dataset name.
        dataset: String,
        /// Location as declared.
        location: String,
    },
    /// A dataset could not be read (corrupt file, bad schema, ...).
    #[error("dataset `{dataset}`: {message}")]
    DatasetRead {
        /// Dataset name.
        dataset: String,
        /// Engine message.
        message: String,
    },
    /// The engine could not plan a rule (unknown column, type error, ...).
    #[error("cannot plan rule: {0}")]
    Plan(String),
    /// The engine failed while executing a rule.
    #[error("execution failed: {0}")]
    Execution(String),
    /// A rule's output does not satisfy its contract.
    #[error("contract `{contract}` violated: {message}")]
    Contract {
        /// Contract name.
        contract: String,
        /// What is missing or mistyped.
        message: String,
    },
    /// A parameter is referenced but not declared in `[params]`.
    #[error("unknown parameter `${0}`")]
    UnknownParam(String),
    /// The cache store failed.
    #[error("cache: {0}")]
    Store(String),
    /// Anything else raised by the CLI (bad arguments, ...).
    #[error("{0}")]
    Usage(String),
    /// A bug or an unexpected engine state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A file and a byte range in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Path as shown to the user (relative to the workspace root when possible).
    pub file: PathBuf,
    /// Byte offset and length in the file's text.
    pub span: Option<(usize, usize)>,
}

/// A diagnostic: what went wrong, where, in which rule, and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diag {
    /// The class of problem.
    pub kind: ErrorKind,
    /// Where in the sources.
    pub location: Option<Location>,
    /// The rule (or dataset) the problem belongs to.
    pub rule: Option<String>,
    /// A hint for the fix.
    pub help: Option<String>,
}

/// Result alias used throughout relspec.
pub type Result<T, E = Diag> = std::result::Result<T, E>;

impl Diag {
    /// A diagnostic with no location yet.
    pub fn new(kind: ErrorKind) -> Self {
        Diag { kind, location: None, rule: None, help: None }
    }
    /// Attach a file and optional span.
    pub fn at(mut self, file: impl Into<PathBuf>, span: Option<(usize, usize)>) -> Self {
        self.location = Some(Location { file: file.into(), span });
        self
    }
    /// Attach a file and span unless a location is already set.
    pub fn at_if_unset(self, file: &Path, span: Option<(usize, usize)>) -> Self {
        if self.location.is_some() { self } else { self.at(file, span) }
    }
    /// Attach the rule name.
    pub fn in_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }
    /// Attach a help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// 1-based line and column of the span start, given the file's text.
    pub fn line_col(&self, text: &str) -> Option<(usize, usize)> {
        let (start, _) = self.location.as_ref()?.span?;
        Some(line_col(text, start))
    }

    /// Render as a miette report. `text` is the file's text, if known.
    pub fn to_report(&self, text: Option<String>) -> miette::Report {
        let mut message = String::new();
        if let Some(rule) = &self.rule {
            message.push_str(&format!("rule `{rule}`: "));
        }
        message.push_str(&self.kind.to_string());
        let mut labels = Vec::new();
        let mut src = None;
        if let Some(loc) = &self.location {
            let name = loc.file.display().to_string();
            match (&text, loc.span) {
                (Some(text), Some((start, len))) => {
                    let (line, col) = line_col(text, start);
                    message = format!("{name}:{line}:{col}: {message}");
                    labels.push(miette::LabeledSpan::at(start..start + len.max(1), "here"));
                    src = Some(miette::NamedSource::new(name, text.clone()));
                }
                _ => message = format!("{name}: {message}"),
            }
        }
        let diag = miette::MietteDiagnostic::new(message).with_labels(labels).with_code(self.code());
        let diag = match &self.help {
            Some(h) => diag.with_help(h.clone()),
            None => diag,
        };
        let report = miette::Report::new(diag);
        match src {
            Some(s) => report.with_source_code(s),
            None => report,
        }
    }

    /// Stable machine-readable code, e.g. `relspec::sql_syntax`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Io(_) => "relspec::io",
            ErrorKind::Toml(_) => "relspec::toml",
            ErrorKind::Invalid(_) => "relspec::invalid",
            ErrorKind::SqlSyntax(_) => "relspec::sql_syntax",
            ErrorKind::UnknownTable { .. } => "relspec::unknown_table",
            ErrorKind::Cycle(_) => "relspec::cycle",
            ErrorKind::MissingData { .. } => "relspec::missing_data",
            ErrorKind::DatasetRead { .. } => "relspec::dataset_read",
            ErrorKind::Plan(_) => "relspec::plan",
            ErrorKind::Execution(_) => "relspec::execution",
            ErrorKind::Contract { .. } => "relspec::contract",
            ErrorKind::UnknownParam(_) => "relspec::unknown_param",
            ErrorKind::Store(_) => "relspec::store",
            ErrorKind::Usage(_) => "relspec::usage",
            ErrorKind::Internal(_) => "relspec::internal",
        }
    }

    /// A JSON object describing this diagnostic (for `--json`).
    pub fn to_json(&self, text: Option<&str>) -> serde_json::Value {
        let (line, column) =
            text.and_then(|t| self.line_col(t)).map(|(l, c)| (Some(l), Some(c))).unwrap_or((None, None));
        serde_json::json!({
            "code": self.code(),
            "message": self.kind.to_string(),
            "rule": self.rule,
            "file": self.location.as_ref().map(|l| l.file.display().to_string()),
            "line": line,
            "column": column,
            "help": self.help,
        })
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{}: ", loc.file.display())?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "rule `{rule}`: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for Diag {}

impl From<ErrorKind> for Diag {
    fn from(kind: ErrorKind) -> Self {
        Diag::new(kind)
    }
}

/// 1-based (line, column) of a byte offset; columns count characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

/// Byte offset of a 1-based (line, column) position in `text`.
pub fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let col_bytes: usize = l.chars().take(col.saturating_sub(1)).map(char::len_utf8).sum();
            return offset + col_bytes;
        }
        offset += l.len();
    }
    text.len()
}
