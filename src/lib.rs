//! relspec: an incremental dataflow build system.
//!
//! A workspace declares datasets, rules and contracts; rules compile to
//! RelPlan (relspec's IR), execute on Apache DataFusion, and materialize as
//! Parquet in a content-addressed cache. See `ARCHITECTURE.md` for the map.

pub mod analysis;
pub mod build;
pub mod bundle;
pub mod contracts;
pub mod db;
pub mod diff;
pub mod engine;
pub mod error;
pub mod graph;
pub mod kernels;
pub mod lineage;
pub mod paths;
pub mod project;
pub mod registry;
pub mod relplan;
pub mod store;
#[cfg(feature = "substrait")]
pub mod substrait;
pub mod synth;
pub mod watch;
pub mod workspace;

pub use datafusion;
