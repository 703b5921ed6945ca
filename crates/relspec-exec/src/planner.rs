//! The Planner: one session, the tables registered in it, and `prepare(rule)`
//! (lower to DataFusion, then check the contract). `build`, `check` and
//! `explain` all plan through it, so they cannot drift apart: the same
//! registration, the same lowering, the same contract checks (columns, types
//! and `references` targets).
//!
//! Architecture invariant: how an upstream rule is seen is the caller's choice
//! ([`Upstream`]): its stored object (build), an empty table of its recorded
//! schema (check) or a view over its plan (explain); everything else is here.

use crate::engine::Engine;
use crate::error::{Diag, ErrorKind, Result};
use crate::lower::{self, LowerError, Lowered};
use crate::relplan::RelPlan;
use crate::workspace::{ContractSpec, DataCheck, WorkspaceSpec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use relspec_db::Dep;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a rule being planned sees one of the rules it reads.
pub enum Upstream {
    /// Its materialized output: a Parquet object in the store.
    Object(PathBuf),
    /// An empty table of its output schema (planning without data).
    Schema(SchemaRef),
    /// A view over its (unexecuted) plan.
    View(DataFrame),
}

/// A session with the workspace's kernels and the tables rules read.
pub struct Planner {
    engine: Arc<Engine>,
    ctx: SessionContext,
    root: PathBuf,
    spec: Arc<WorkspaceSpec>,
    datasets: HashSet<String>,
    /// Upstream rules registered from objects (skip re-registering the same one).
    objects: HashMap<String, PathBuf>,
    /// Bytes of decoded datasets a build may still keep in memory (shared scans).
    shared_scans: Option<usize>,
    /// How many registrations asked for each dataset.
    uses: HashMap<String, usize>,
    /// Datasets never shared: rules read a few of their partitions.
    unshared: HashSet<String>,
    /// Extracted rows of source tables, registered on first use.
    sources: HashMap<String, crate::registry::SourceRows>,
}

impl Planner {
    /// A planner on a fresh session of `engine` (kernels registered).
    pub fn new(engine: Arc<Engine>, spec: Arc<WorkspaceSpec>, root: &Path) -> Result<Planner> {
        let ctx = engine.session()?;
        crate::kernels::register(&ctx);
        Ok(Planner {
            engine,
            ctx,
            root: root.to_path_buf(),
            spec,
            datasets: HashSet::new(),
            objects: HashMap::new(),
            shared_scans: None,
            uses: HashMap::new(),
            unshared: HashSet::new(),
            sources: HashMap::new(),
        })
    }

    /// Share dataset scans across the rules planned here: each dataset is
    /// decoded once into memory while the total stays under `budget` bytes
    /// (the rest stay file-backed). For builds, where many rules read the
    /// same inputs.
    pub fn share_scans(&mut self, budget: usize) {
        self.shared_scans = Some(budget);
    }

    /// Keep dataset `name` file-backed for the rest of this build: a rule
    /// reads only some of its partitions (a shared decode reads them all).
    pub fn keep_unshared(&mut self, name: &str) {
        self.unshared.insert(name.to_string());
    }

    /// Hand over how to get a source table's extracted rows (before the
    /// first rule that reads it is registered; without them it is
    /// registered empty, enough to plan and check). They are gathered on
    /// the table's first scan.
    pub fn provide_source(&mut self, name: &str, rows: crate::registry::SourceRows) {
        self.sources.insert(name.to_string(), rows);
    }

    /// Whether a dataset is registered in this planner's session.
    pub fn has_dataset(&self, name: &str) -> bool {
        self.datasets.contains(name)
    }

    /// The engine (its runtime runs the planner's futures).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The session.
    pub fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// The workspace spec planned against.
    pub fn spec(&self) -> &Arc<WorkspaceSpec> {
        &self.spec
    }

    /// Register a dataset (once per planner); returns its schema when it was
    /// registered by this call.
    pub async fn register_dataset(&mut self, name: &str) -> Result<Option<SchemaRef>> {
        if self.datasets.contains(name) {
            // The second rule that reads it: share one decode from now on (a
            // single reader keeps the file scan, with its pushdown and pruning).
            let uses = self.uses.entry(name.to_string()).or_insert(1);
            *uses += 1;
            let extracted = self.spec.datasets.get(name).is_some_and(|d| d.extract.is_some());
            if *uses == 2
                && !extracted
                && !self.unshared.contains(name)
                && let Some(left) = self.shared_scans.filter(|b| *b > 0)
            {
                let shared = crate::registry::share_scan(&self.ctx, name, left).await?;
                tracing::debug!(dataset = name, bytes = shared, "shared scan");
                self.shared_scans = Some(left - shared.unwrap_or(0));
            }
            return Ok(None);
        }
        let ds = self
            .spec
            .datasets
            .get(name)
            .ok_or_else(|| Diag::new(ErrorKind::Internal(format!("no dataset `{name}` to register"))))?;
        let schema = match (ds.extract.is_some(), self.sources.remove(name)) {
            (true, Some(rows)) => crate::registry::register_extracted(&self.ctx, ds, rows)?,
            _ => crate::registry::register(&self.ctx, &self.root, ds).await?,
        };
        self.datasets.insert(name.to_string());
        Ok(Some(schema))
    }

    /// Register an upstream rule under its name (replacing what was there).
    pub async fn register_upstream(&mut self, name: &str, how: Upstream) -> Result<()> {
        let internal = |e: datafusion::error::DataFusionError| Diag::new(ErrorKind::Internal(e.to_string()));
        if let Upstream::Object(path) = &how
            && self.objects.get(name) == Some(path)
        {
            return Ok(());
        }
        self.objects.remove(name);
        match how {
            Upstream::Object(path) => {
                crate::registry::register_output(&self.ctx, name, &path).await?;
                self.objects.insert(name.to_string(), path);
                Ok(())
            }
            Upstream::Schema(schema) => {
                let table = MemTable::try_new(schema, vec![vec![]]).map_err(internal)?;
                let _ = self.ctx.deregister_table(name);
                self.ctx.register_table(name, Arc::new(table)).map_err(internal)?;
                Ok(())
            }
            Upstream::View(df) => {
                let _ = self.ctx.deregister_table(name);
                self.ctx.register_table(name, df.into_view()).map_err(internal)?;
                Ok(())
            }
        }
    }

    /// Register everything a rule reads: its datasets (once) and its upstream
    /// rules as `upstream` says. The first failure is returned.
    pub async fn register_inputs(
        &mut self,
        deps: &[Dep],
        mut upstream: impl FnMut(&str) -> Result<Upstream>,
    ) -> Result<()> {
        for d in deps {
            match d {
                Dep::Dataset(ds) => {
                    self.register_dataset(ds).await?;
                }
                Dep::Rule(u) => {
                    let how = upstream(u)?;
                    self.register_upstream(u, how).await?;
                }
            }
        }
        Ok(())
    }

    /// The contract a rule declares it produces, if any.
    pub fn contract_of(&self, produces: Option<&String>) -> Option<ContractSpec> {
        produces.and_then(|c| self.spec.contracts.get(c)).cloned()
    }

    /// Lower a rule over the registered tables and check its contract.
    pub async fn prepare(&self, plan: &RelPlan, contract: Option<&ContractSpec>) -> Result<Lowered, LowerError> {
        prepare(&self.ctx, &self.spec, plan, contract).await
    }
}

/// [`Planner::prepare`] on a bare session (for tasks that hold a clone of it).
pub async fn prepare(
    ctx: &SessionContext,
    spec: &WorkspaceSpec,
    plan: &RelPlan,
    contract: Option<&ContractSpec>,
) -> Result<Lowered, LowerError> {
    let l = lower::lower(ctx, plan, &spec.params).await?;
    if let Some(c) = contract {
        lower::check_contract(l.df.schema(), c).map_err(|diag| LowerError { diag, pos: None })?;
        check_references(ctx, c).await?;
    }
    Ok(l)
}

/// Every `references` check names a column its target table has.
async fn check_references(ctx: &SessionContext, c: &ContractSpec) -> Result<(), LowerError> {
    for k in &c.checks {
        let DataCheck::References { table, target_column, .. } = k else { continue };
        let t = ctx.table(table.as_str()).await.map_err(|e| lower::df_error(e, ErrorKind::Plan))?;
        let cols: Vec<String> = t.schema().fields().iter().map(|f| f.name().clone()).collect();
        if !cols.contains(target_column) {
            let hint = relspec_spec::suggest::suggest(target_column, &cols)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let diag = Diag::new(ErrorKind::Contract {
                contract: c.name.clone(),
                message: format!("{}: `{table}` has no column `{target_column}`{hint}", k.describe()),
            })
            .at(&c.file, c.span);
            return Err(LowerError { diag, pos: None });
        }
    }
    Ok(())
}
