//! relspec-db: the salsa database and everything it keeps on disk.
//!
//! Inputs (source texts, data file hashes, dataset file lists, the engine's
//! versions), the cheap schema-free tracked queries from text to static output
//! keys, the [`Loader`] (path -> input side table), dataset file listing, the
//! content-addressed store, the stat cache and the JSON-lines memos.
//!
//! Architecture invariant: no DataFusion. What the database needs of the
//! engine (its fingerprint: library and kernel versions) is an input that the
//! exec layer sets ([`EngineInfo`]).

pub mod datasets;
// salsa's macros generate undocumented accessors.
#[allow(missing_docs)]
mod db;
pub mod paths;
pub mod store;

pub use db::*;
use relspec_spec::{error, relplan, workspace};
