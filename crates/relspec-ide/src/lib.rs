//! relspec-ide: relspec where people edit rules.
//!
//! [`host`] keeps one live project (the salsa database `watch` uses) fed by
//! unsaved editor buffers and the disk, and the latest analysis of every rule;
//! [`features`] answers at a position (hover, definition, references,
//! completion, quick fixes); [`text`] converts byte offsets to LSP positions;
//! [`server`] speaks the Language Server Protocol over stdio (`relspec lsp`).
//!
//! Architecture invariant: depends on relspec-core only (never on the CLI);
//! nothing here builds, executes a plan or publishes an output.

pub mod client;
pub mod features;
pub mod host;
pub mod server;
pub mod text;

pub use host::{Checked, Ide};
