//! relspec: an incremental dataflow build system.
//!
//! A workspace declares datasets, rules and contracts; rules compile to
//! RelPlan (relspec's IR), execute on Apache DataFusion, and materialize as
//! Parquet in a content-addressed cache. See `ARCHITECTURE.md` for the map.

pub mod build;
pub mod db;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod paths;
pub mod project;
pub mod registry;
pub mod relplan;
pub mod store;
pub mod synth;
pub mod watch;
pub mod workspace;

pub use datafusion;
