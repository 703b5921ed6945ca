//! Source extraction: relspec reads code itself. A `[sources.NAME]` of
//! source files yields `NAME_files`, `NAME_defs`, `NAME_callsites`,
//! `NAME_imports` and `NAME_errors` (tree-sitter, see [`grammar`]); a SCIP
//! index yields `NAME_documents`, `NAME_occurrences` and `NAME_symbols`.
//! Each file is one memoized query ([`query::file_facts`]) and one Parquet
//! fragment in the cache, so an edit re-parses one file.

pub mod cst;
pub mod grammar;
pub mod packs;
// salsa's macros generate undocumented accessors.
#[allow(missing_docs)]
pub mod query;
pub mod scip;
pub mod tables;

/// The extractor's version: part of every fragment key and of every source
/// table's fingerprint, so a change to what is extracted rebuilds its readers.
pub const VERSION: &str = relspec_spec::workspace::EXTRACTOR_VERSION;

pub use query::{ExtractRoot, FileFacts, collect, counters, table_batches};
