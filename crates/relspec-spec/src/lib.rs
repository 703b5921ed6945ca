//! relspec-spec: what a workspace *says*, as pure functions of text.
//!
//! The workspace format (`workspace.toml` and rule files, with byte spans),
//! the RelPlan rule compiler and canonical signatures, diagnostics, "did you
//! mean" suggestions and the one key hasher.
//!
//! Architecture invariant: no DataFusion, no disk, no clock. SQL is parsed with
//! the same `sqlparser` DataFusion uses, and types are Arrow's `DataType`, each
//! pinned to DataFusion's exact version.

pub mod error;
pub mod key;
pub mod relplan;
pub mod suggest;
pub mod workspace;

pub use sqlparser;

/// A fingerprint of this crate's source code (computed at build time), part
/// of the keys of persisted memos this code computes.
pub const SOURCES: &str = env!("RELSPEC_SOURCES");
