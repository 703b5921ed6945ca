//! Executing one rule: prepare it through the Planner, stream its batches
//! into the object file (checking for cancellation), evaluate its data
//! contracts over the written file, record it, and write the artifact.

use crate::engine::render_physical;
use crate::error::{Diag, ErrorKind};
use crate::kernels::KernelUse;
use crate::project::plan_with_snapshots;
use crate::store::{Record, Store};
use crate::workspace::{ContractSpec, WorkspaceSpec};
use datafusion::prelude::SessionContext;
use relspec_exec::lower::{self, LowerError};
use relspec_exec::parquet::WriteError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Result of executing one rule.
pub(crate) struct Executed {
    pub(crate) record: Record,
    pub(crate) kernels: Vec<KernelUse>,
    pub(crate) checks: Vec<crate::contracts::CheckResult>,
    pub(crate) artifact: String,
    /// An incremental rule's partitions (how many ran), as its artifact holds them.
    pub(crate) partitions: Option<Arc<crate::bundle::PartitionState>>,
    /// Where it executed, when not here (`Ballista at df://...`), or why
    /// not on the configured cluster.
    pub(crate) executed_on: Option<String>,
}

/// Where a rule's output goes: the store, under its key, with the
/// provenance its footer and record carry (shared by both lanes: a planned
/// rule and a merged union).
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) store: Store,
    pub(crate) rule: String,
    pub(crate) key: String,
    pub(crate) signature: String,
    pub(crate) parts: Option<serde_json::Value>,
    pub(crate) cancel: Option<Arc<AtomicBool>>,
}

/// An object file written for a [`Target`], not yet in the store.
pub(crate) struct Written {
    pub(crate) footer: std::collections::BTreeMap<String, String>,
    pub(crate) tmp: std::path::PathBuf,
    pub(crate) rows: u64,
    /// Its hashes, when the writer computed them (else the store reads it).
    pub(crate) hashes: Option<crate::store::ObjectHashes>,
}

impl Target {
    /// Stream `stream` into a new object file, batch by batch (nothing holds
    /// the whole result), with the provenance footer; stops when cancelled.
    pub(crate) async fn write(
        &self,
        stream: datafusion::physical_plan::SendableRecordBatchStream,
    ) -> std::result::Result<Written, LowerError> {
        self.write_with(stream, Default::default()).await
    }

    /// The provenance footer, with `extra` keys.
    fn footer(&self, extra: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let null = serde_json::Value::Null;
        let mut footer = crate::store::footer_metadata(&self.key, &self.rule, self.parts.as_ref().unwrap_or(&null));
        footer.extend(extra);
        footer
    }

    /// [`Target::write`] with `extra` footer keys (a union's part row counts).
    pub(crate) async fn write_with(
        &self,
        stream: datafusion::physical_plan::SendableRecordBatchStream,
        extra: BTreeMap<String, String>,
    ) -> std::result::Result<Written, LowerError> {
        let footer = self.footer(extra);
        let tmp = self.store.tmp_path(".parquet");
        let cancelled = || self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        let finished =
            relspec_exec::parquet::write_stream(&tmp, stream, &footer, cancelled).await.map_err(|e| match e {
                WriteError::Stream(e) => lower::df_error(e, ErrorKind::Execution),
                WriteError::Write(diag) => LowerError { diag, pos: None },
                WriteError::Cancelled => {
                    LowerError { diag: Diag::new(ErrorKind::Execution("cancelled".into())), pos: None }
                }
            })?;
        Ok(Written { footer, tmp, rows: finished.rows, hashes: finished.hashes })
    }

    /// Write the object as the object at `previous` with `change` applied,
    /// copying the row groups the change does not touch (see
    /// [`super::splice`]), with `extra` footer keys; `None` when splicing
    /// does not apply.
    pub(crate) async fn write_spliced(
        &self,
        schema: datafusion::arrow::datatypes::SchemaRef,
        previous: std::path::PathBuf,
        change: super::splice::Change,
        extra: BTreeMap<String, String>,
    ) -> std::result::Result<Option<(Written, super::splice::Spliced)>, LowerError> {
        let footer = self.footer(extra);
        let tmp = self.store.tmp_path(".parquet");
        let (cancel, path, meta) = (self.cancel.clone(), tmp.clone(), footer.clone());
        let res = tokio::task::spawn_blocking(move || {
            let cancelled = || cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
            super::splice::splice(&schema, &previous, change, &path, &meta, &cancelled)
        })
        .await
        .map_err(super::merge::internal)
        .and_then(|r| r);
        match res {
            Ok(Some(s)) => Ok(Some((Written { footer, tmp, rows: s.rows, hashes: s.hashes.clone() }, s))),
            Ok(None) => Ok(None),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// Everything one execution needs (moved into its task).
pub(crate) struct Run {
    pub(crate) ctx: SessionContext,
    pub(crate) to: Target,
    pub(crate) plan: Arc<crate::relplan::RelPlan>,
    pub(crate) spec: Arc<WorkspaceSpec>,
    pub(crate) contract: Option<ContractSpec>,
    pub(crate) partition_by: Vec<String>,
    /// `incremental = { by }`: its check, partitions and partial build.
    pub(crate) incremental: Option<super::partitions::Incremental>,
    /// A Ballista session holding the rule's inputs: the plan executes there
    /// when it can travel (see [`travels`]); contracts stay local.
    pub(crate) cluster: Option<Arc<relspec_exec::cluster::Cluster>>,
}

impl Run {
    /// The same run without the cluster (when it has one to drop).
    fn here(&self) -> Option<Run> {
        (self.cluster.is_some() && self.incremental.is_none()).then(|| Run {
            ctx: self.ctx.clone(),
            to: self.to.clone(),
            plan: self.plan.clone(),
            spec: self.spec.clone(),
            contract: self.contract.clone(),
            partition_by: self.partition_by.clone(),
            incremental: None,
            cluster: None,
        })
    }
}

/// Execute one rule and store its output; nothing is published here. A
/// plan the cluster's scheduler or executors cannot decode (a function or
/// operator a stock Ballista process lacks) runs again here.
pub(crate) async fn execute(run: Run) -> std::result::Result<Executed, LowerError> {
    let here = run.here();
    match (execute_once(run).await, here) {
        (Err(e), Some(here)) if cluster_refused(&e.diag.to_string()) => {
            let text = e.diag.to_string();
            tracing::debug!(rule = here.to.rule.as_str(), "the cluster refused the plan: {text}");
            let why = text.lines().next().unwrap_or_default().chars().take(240).collect::<String>();
            execute_once(here).await.map(|ex| Executed {
                executed_on: Some(format!("executed here: the cluster could not run it ({why})")),
                ..ex
            })
        }
        (result, _) => result,
    }
}

/// Whether a cluster's error says it could not take the plan (rather than
/// that the plan failed on the data).
fn cluster_refused(text: &str) -> bool {
    ["is not provided for scalar function", "rejected by executor", "Could not parse plan", "failed to decode"]
        .iter()
        .any(|p| text.contains(p))
}

async fn execute_once(run: Run) -> std::result::Result<Executed, LowerError> {
    let Run { ctx, to, plan, spec, contract, partition_by, incremental, cluster } = run;
    let (local, contract) = (&ctx, contract.as_ref());
    let t = Instant::now();
    // On the cluster when the rule's plan can travel there, else here.
    let mut executed_on = None;
    let mut on_cluster = None;
    if let Some(cluster) = cluster.as_ref().filter(|_| incremental.is_none()) {
        let cl = &cluster.ctx;
        match relspec_exec::planner::prepare(cl, &spec, &plan, contract).await {
            Ok(l) => {
                let mut can = travels(l.df.logical_plan());
                if can.is_ok() && relspec_exec::cluster::calls_relspec_functions(l.df.logical_plan()) {
                    can = cluster.knows_functions().await;
                }
                match can {
                    Ok(()) => on_cluster = Some((cl, l)),
                    Err(why) => executed_on = Some(format!("executed here: {why}")),
                }
            }
            Err(e) => executed_on = Some(format!("executed here: the cluster cannot plan it ({})", e.diag)),
        }
    }
    let (ctx, lowered) = match on_cluster {
        Some((cl, l)) => {
            executed_on = Some("executed on the Ballista cluster".to_string());
            (cl, l)
        }
        None => (local, relspec_exec::planner::prepare(local, &spec, &plan, contract).await?),
    };
    let have: Vec<&str> = lowered.df.schema().fields().iter().map(|f| f.name().as_str()).collect();
    lower::check_partition_by(&have, &partition_by).map_err(|diag| LowerError { diag, pos: None })?;
    let mut partitions = None;
    let mut partial = None;
    if let Some(inc) = incremental {
        let reads: Vec<&str> = inc.reads.iter().map(String::as_str).collect();
        relspec_exec::distributive::check_declaration(&inc.by, &lowered.body, inc.input.clone(), &reads)
            .map_err(|diag| LowerError { diag, pos: None })?;
        partial = inc.partial;
        partitions = Some(inc.state);
    }
    let df = match (&partial, &partitions) {
        (Some(pt), Some(state)) => {
            let plan = super::partitions::restrict(
                lowered.df.logical_plan().clone(),
                &state.by,
                &state.key,
                &pt.run,
                pt.rows.as_deref(),
            )
            .map_err(|e| lower::df_error(e, ErrorKind::Plan))?;
            datafusion::dataframe::DataFrame::new(ctx.state(), plan)
        }
        _ => lowered.df.clone(),
    };
    let (mut snaps, physical) = plan_with_snapshots(ctx, &df).await.map_err(|e| lower::df_error(e, ErrorKind::Plan))?;
    let schema = physical.schema();
    let written = match (&partial, partitions.as_mut()) {
        (Some(pt), Some(state)) => {
            // The rule over the changed partitions only (a partition's share is
            // small by design: held in memory), merged into the previous output.
            let fresh = if pt.run.is_empty() {
                vec![]
            } else {
                datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx())
                    .await
                    .map_err(|e| lower::df_error(e, ErrorKind::Execution))?
            };
            tracing::debug!(
                rule = to.rule.as_str(),
                ms = t.elapsed().as_secs_f64() * 1e3,
                "partial: changed partitions computed"
            );
            let (written, changed, groups) =
                super::partitions::write_partial(&to, schema.clone(), &state.key, pt, fresh).await?;
            tracing::debug!(
                rule = to.rule.as_str(),
                ms = t.elapsed().as_secs_f64() * 1e3,
                "partial: merged and written"
            );
            state.delta =
                Some(crate::bundle::Delta { from: pt.prev_data_hash.clone(), changed: changed.into_iter().collect() });
            state.ran = Some(pt.run.len());
            let spliced = groups.map_or(String::new(), |(c, e)| {
                format!("\n  spliced: {c} row group(s) copied from the previous output, {e} re-encoded")
            });
            snaps.physical = format!(
                "{}\nPartialMerge: previous output less {} partition(s) of `{}`, plus this plan's rows over {} of them{spliced}",
                snaps.physical,
                pt.changed.len(),
                state.by,
                pt.run.len()
            );
            written
        }
        _ => {
            let stream = datafusion::physical_plan::execute_stream(physical.clone(), ctx.task_ctx())
                .map_err(|e| lower::df_error(e, ErrorKind::Execution))?;
            // The sort spills through the memory pool while the result streams out.
            to.write(stream).await?
        }
    };
    snaps.physical_metrics = Some(render_physical(physical.as_ref(), true));
    let checks = data_checks(local, contract, &written.tmp).await?;
    tracing::debug!(rule = to.rule.as_str(), ms = t.elapsed().as_secs_f64() * 1e3, "written and checked");
    let lineage = crate::lineage::of_plan(&lowered.body);
    #[cfg(feature = "substrait")]
    let (substrait, substrait_unsupported) =
        match crate::substrait::write(ctx, &to.store, &to.key, lowered.df.logical_plan()).await {
            Ok(rel) => (Some(rel), None),
            Err(e) => {
                tracing::warn!(rule = to.rule.as_str(), "no Substrait plan: {e}");
                (None, Some(e.to_string()))
            }
        };
    #[cfg(not(feature = "substrait"))]
    let (substrait, substrait_unsupported): (Option<String>, Option<String>) = (None, None);
    store_output(Output {
        to,
        written,
        schema,
        checks,
        plans: snaps,
        lineage,
        kernels: lowered.kernels,
        substrait,
        substrait_unsupported,
        merged_from: vec![],
        branch_columns: None,
        partitions,
        started: t,
    })
    .await
    .map(|ex| Executed { executed_on, ..ex })
}

/// Whether a lowered plan can travel to a Ballista cluster: it reads only
/// listing tables (files) and has no extension nodes (kernels' own plans);
/// else why not.
pub(crate) fn travels(plan: &datafusion::logical_expr::LogicalPlan) -> std::result::Result<(), String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::listing::ListingTable;
    use datafusion::datasource::source_as_provider;
    use datafusion::logical_expr::LogicalPlan;
    let mut why = None;
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                let listing =
                    source_as_provider(&scan.source).is_ok_and(|p| p.downcast_ref::<ListingTable>().is_some());
                if !listing {
                    why = Some(format!("`{}` is not a file table", scan.table_name));
                }
            }
            LogicalPlan::Extension(e) => why = Some(format!("it uses `{}`", e.node.name())),
            _ => {}
        }
        Ok(if why.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    why.map_or(Ok(()), Err)
}

/// Evaluate the contract's data checks over the written file `tmp`; a
/// failed check removes it and fails the rule (nothing is published).
pub(crate) async fn data_checks(
    ctx: &SessionContext,
    contract: Option<&ContractSpec>,
    tmp: &std::path::Path,
) -> std::result::Result<Vec<crate::contracts::CheckResult>, LowerError> {
    let checks = match contract.filter(|c| !c.checks.is_empty()) {
        Some(c) => {
            let evaluated = async {
                let written = ctx.read_parquet(tmp.to_string_lossy().as_ref(), Default::default()).await?;
                crate::contracts::evaluate(ctx, c, written).await
            };
            match evaluated.await {
                Ok(checks) => checks,
                Err(e) => {
                    let _ = std::fs::remove_file(tmp);
                    return Err(lower::df_error(e, ErrorKind::Execution));
                }
            }
        }
        None => vec![],
    };
    if let Some(c) = contract.filter(|_| checks.iter().any(|k| !k.passed)) {
        let _ = std::fs::remove_file(tmp);
        let failed: Vec<String> = checks
            .iter()
            .filter(|k| !k.passed)
            .map(|k| {
                format!(
                    "{}: {} offending row(s){}",
                    k.check,
                    k.violations,
                    k.sample.as_deref().map(|s| format!(", e.g.\n{s}")).unwrap_or_default()
                )
            })
            .collect();
        let diag = Diag::new(ErrorKind::Contract { contract: c.name.clone(), message: failed.join("\n") })
            .at(&c.file, c.span)
            .with_help("nothing was published for this rule; its last good output is kept");
        return Err(LowerError { diag, pos: None });
    }
    Ok(checks)
}

/// A written object and what describes it, to be stored and recorded.
pub(crate) struct Output {
    pub(crate) to: Target,
    pub(crate) written: Written,
    pub(crate) schema: datafusion::arrow::datatypes::SchemaRef,
    pub(crate) checks: Vec<crate::contracts::CheckResult>,
    pub(crate) plans: crate::engine::PlanSnapshots,
    pub(crate) lineage: crate::lineage::RuleLineage,
    pub(crate) kernels: Vec<KernelUse>,
    pub(crate) substrait: Option<String>,
    pub(crate) substrait_unsupported: Option<String>,
    pub(crate) merged_from: Vec<(String, String)>,
    pub(crate) branch_columns: Option<crate::bundle::BranchColumns>,
    pub(crate) partitions: Option<crate::bundle::PartitionState>,
    pub(crate) started: Instant,
}

/// Put the object in the store, record it and write its artifact.
pub(crate) async fn store_output(o: Output) -> std::result::Result<Executed, LowerError> {
    let Output {
        to,
        written,
        schema,
        checks,
        plans,
        lineage,
        kernels,
        substrait,
        substrait_unsupported,
        merged_from,
        branch_columns,
        partitions,
        started,
    } = o;
    let (Target { store, rule, key, signature, parts, .. }, Written { footer, tmp, rows, hashes }) = (to, written);
    let elapsed = started.elapsed().as_millis() as u64;
    let (store2, key2) = (store.clone(), key.clone());
    let from = crate::store::Provenance {
        rule: rule.clone(),
        signature: signature.clone(),
        elapsed_ms: elapsed,
        parts,
        checks: Some(serde_json::to_value(&checks).unwrap_or_default()),
        footer,
    };
    let columns = relspec_exec::parquet::columns(&schema);
    let record = tokio::task::spawn_blocking(move || store2.put_file(&key2, &tmp, from, columns, rows, hashes))
        .await
        .map_err(|e| LowerError { diag: Diag::new(ErrorKind::Store(e.to_string())), pos: None })?
        .map_err(|diag| LowerError { diag, pos: None })?;
    let rule_name = rule.clone();
    let artifact = crate::bundle::Artifact {
        rule,
        key: record.key.clone(),
        signature,
        plans,
        lineage,
        checks: checks.clone(),
        kernels: kernels.clone(),
        substrait,
        substrait_unsupported,
        rows: record.rows,
        bytes: record.bytes,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        merged_from,
        branch_columns,
        partitions,
    };
    tracing::debug!(rule = artifact.rule.as_str(), ms = started.elapsed().as_secs_f64() * 1e3, "stored");
    let (artifact, partitions) =
        crate::bundle::write_artifact(&store, artifact).map_err(|diag| LowerError { diag, pos: None })?;
    tracing::debug!(rule = rule_name.as_str(), ms = started.elapsed().as_secs_f64() * 1e3, "artifact written");
    Ok(Executed { record, kernels, checks, artifact, partitions, executed_on: None })
}
