//! relspec-exec: everything that touches Apache DataFusion.
//!
//! The one session factory ([`engine`]), dataset registration ([`registry`]),
//! lowering RelPlan to DataFusion ([`lower`]), kernels, data contracts, column
//! lineage of a plan, deterministic Parquet writing and Substrait.
//!
//! Architecture invariant: the only crate that depends on DataFusion and the
//! only one that constructs a `SessionContext` ([`engine::Engine::session`]).
//! It reads tables by logical name; dataset paths come from
//! `relspec_db::datasets`, the same listing the fingerprints use.

pub mod cluster;
pub mod contracts;
pub mod distributive;
pub mod engine;
pub mod kernels;
pub mod lineage;
pub mod lower;
pub mod object_stores;
pub mod parquet;
pub mod planner;
pub mod registry;
pub mod row_groups;
#[cfg(feature = "substrait")]
pub mod substrait;

pub use datafusion;
#[cfg(feature = "substrait")]
use relspec_db::store;
use relspec_spec::{error, relplan, workspace};

/// A fingerprint of this crate's source code (computed at build time), part
/// of the keys of persisted memos this code computes.
pub const SOURCES: &str = env!("RELSPEC_SOURCES");
