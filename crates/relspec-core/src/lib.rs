//! relspec-core: a loaded project and what can be done with it.
//!
//! [`project`] (the database, loader, store and engine of one workspace),
//! [`build`] (decide, schedule, publish), [`analysis`] (check: planning
//! without executing), [`graph`] (lineage across rules), [`diff`] (semantic
//! diff), [`bundle`] (run bundles and artifacts) and [`watch`].
//!
//! Architecture invariant: depends on the layers below (exec, db, spec) and
//! never the other way; front ends (the CLI) call it and render its results.

pub mod analysis;
pub mod build;
pub mod bundle;
pub mod diff;
pub mod graph;
pub mod inspect;
pub mod maintenance;
pub mod project;
pub mod remote;
pub mod scaffold;
pub mod snapshot;
pub mod status;
pub mod synth;
pub mod watch;

pub use relspec_db as db;
pub use relspec_db::store;
pub use relspec_exec::datafusion;
#[cfg(feature = "substrait")]
use relspec_exec::substrait;
pub use relspec_exec::{cluster, engine, lineage};
use relspec_exec::{contracts, kernels, registry};
pub use relspec_spec::{error, relplan, suggest, workspace};
