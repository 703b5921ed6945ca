//! The engine substrate: the one session factory, the engine fingerprint and
//! plan snapshots.
//!
//! Architecture invariant: this is the only module that constructs a DataFusion
//! `SessionContext`. Everything that executes goes through [`Engine::session`].

use crate::error::{Diag, ErrorKind, Result};
use crate::workspace::{MemoryPoolKind, Profile};
use datafusion::execution::memory_pool::{FairSpillPool, GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of relspec itself (part of the engine fingerprint).
pub const RELSPEC_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Stack reserved for threads that plan or execute (the runtime's workers, and
/// the CLI's main thread through its raised stack limit; rayon's workers only
/// read files and parse SQL, and sqlparser grows its own stack). Deep plans recurse deeply; DataFusion's
/// `recursive_protection` grows the stack on the heap where it knows to, and
/// this reserve covers relspec's own walks. Only touched pages are committed.
pub const DEEP_STACK_BYTES: usize = 256 << 20;

/// Builds sessions from a runtime profile and owns the async runtime.
pub struct Engine {
    profile: Profile,
    spill_dir: Option<PathBuf>,
    runtime: std::mem::ManuallyDrop<tokio::runtime::Runtime>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Do not wait for idle worker threads; nothing runs once the engine goes.
        // SAFETY: the runtime is taken exactly once, here, and never used again.
        let rt = unsafe { std::mem::ManuallyDrop::take(&mut self.runtime) };
        rt.shutdown_background();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("profile", &self.profile).finish()
    }
}

impl Engine {
    /// An engine for `profile`; relative spill dirs resolve against `root`.
    pub fn new(profile: &Profile, root: &Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(profile.target_partitions.unwrap_or_else(num_cpus).max(1))
            .thread_name("relspec-exec")
            .thread_stack_size(DEEP_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| Diag::new(ErrorKind::Execution(format!("cannot start the async runtime: {e}"))))?;
        Ok(Engine {
            profile: profile.clone(),
            spill_dir: profile.spill_dir.as_ref().map(|d| root.join(d)),
            runtime: std::mem::ManuallyDrop::new(runtime),
        })
    }

    /// The profile this engine was built from.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Run a future to completion on the engine's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// A handle to the engine's async runtime.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// The single session factory: a fresh `SessionContext` configured from the profile.
    pub fn session(&self) -> Result<SessionContext> {
        let p = &self.profile;
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(&p.catalog, &p.schema)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(p.information_schema)
            .with_target_partitions(p.target_partitions.unwrap_or_else(num_cpus).max(1));
        if let Some(b) = p.batch_size {
            config = config.with_batch_size(b.max(1));
        }
        // Source spans on columns, so planning errors point into the rule's SQL.
        config.options_mut().sql_parser.collect_spans = true;
        if let Some(tz) = &p.time_zone {
            config.options_mut().execution.time_zone = Some(tz.clone());
        }
        let mut rt = RuntimeEnvBuilder::new();
        if let Some(limit) = p.memory_limit {
            // Each sorting partition reserves this much up front for its merge
            // after a spill; DataFusion's 10 MB default starves small limits.
            let partitions = config.target_partitions().max(1) as u64;
            let reserve = (limit / (8 * partitions)).clamp(1 << 20, 10 << 20);
            config.options_mut().execution.sort_spill_reservation_bytes = reserve as usize;
            // Under a limit, sort each rule's result in one partition (one
            // spilling sorter with the whole pool) rather than per partition
            // followed by a merge, whose input reservations do not spill.
            config.options_mut().optimizer.repartition_sorts = false;
            return_freed_memory();
            let pool: Arc<dyn MemoryPool> = match p.memory_pool {
                MemoryPoolKind::Greedy => Arc::new(GreedyMemoryPool::new(limit as usize)),
                MemoryPoolKind::Fair => Arc::new(FairSpillPool::new(limit as usize)),
            };
            rt = rt.with_memory_pool(pool);
        }
        if let Some(dir) = &self.spill_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Diag::new(ErrorKind::Io(format!("spill dir {}: {e}", dir.display()))))?;
            rt = rt.with_temp_file_path(dir.clone());
        }
        let runtime = rt
            .build_arc()
            .map_err(|e| Diag::new(ErrorKind::Execution(format!("cannot build the runtime environment: {e}"))))?;
        Ok(SessionContext::new_with_config_rt(config, runtime))
    }
}

/// Under a memory limit, have glibc's malloc give freed memory back to the
/// system beyond 16 MiB of slack (its default threshold grows with the
/// largest block freed, so a spilling sort's buffers would stay resident):
/// peak RSS then tracks the memory pool. Costs ~25% of a spilling sort's time.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// How a rule that is exactly a `UNION ALL` of rules is published (core's
/// `build/union.rs`): its branches' outputs one after another, in branch
/// order. Part of every key: a union written under another order is never
/// reused or spliced.
pub const UNION_ORDER: &str = "relspec/union/branch-order/v1";

/// What this engine contributes to every output key: the versions of relspec,
/// DataFusion, the Parquet writer and every kernel (name, version, lanes).
/// The database combines it with the profile's semantic fields.
pub fn info() -> relspec_db::EngineInfo {
    let versions = relspec_spec::key::KeyHasher::new("relspec/engine-versions/v1")
        .field("relspec", RELSPEC_VERSION)
        .field("datafusion", datafusion::DATAFUSION_VERSION)
        .field("parquet_writer", crate::parquet::PARQUET_CREATED_BY)
        .field("row_groups", crate::row_groups::LAYOUT)
        .field("unions", UNION_ORDER)
        .field("kernels", &crate::kernels::registry_fingerprint())
        .finish();
    relspec_db::EngineInfo { versions }
}

/// The engine fingerprint of `profile` under this engine (see
/// [`relspec_db::engine_fingerprint_of`]). Tuning fields are left out.
pub fn fingerprint(profile: &Profile) -> String {
    relspec_db::engine_fingerprint_of(&info(), profile)
}

/// The whole profile (semantic and tuning fields) as JSON, for run bundles.
pub fn profile_json(profile: &Profile) -> serde_json::Value {
    serde_json::json!({
        "target_partitions": profile.target_partitions,
        "batch_size": profile.batch_size,
        "memory_limit": profile.memory_limit,
        "memory_pool": profile.memory_pool,
        "spill_dir": profile.spill_dir,
        "catalog": profile.catalog,
        "schema": profile.schema,
        "information_schema": profile.information_schema,
        "time_zone": profile.time_zone,
    })
}

/// The plans of one rule, as text: the artifacts `explain` shows.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PlanSnapshots {
    /// Logical plan as planned.
    pub logical: String,
    /// Logical plan after the optimizer.
    pub optimized: String,
    /// Physical plan.
    pub physical: String,
    /// Physical plan annotated with execution metrics (after a run).
    pub physical_metrics: Option<String>,
    /// SQL text from DataFusion's unparser.
    pub sql: Option<String>,
}

/// Render a physical plan, optionally with its execution metrics.
pub fn render_physical(plan: &dyn ExecutionPlan, metrics: bool) -> String {
    if metrics {
        datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan).indent(true).to_string()
    } else {
        displayable(plan).indent(true).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_fields_stay_out_of_the_fingerprint() {
        let a = Profile::default();
        let b = Profile {
            target_partitions: Some(1),
            batch_size: Some(7),
            memory_limit: Some(1 << 20),
            ..Profile::default()
        };
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let c = Profile { time_zone: Some("+02:00".into()), ..Profile::default() };
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
