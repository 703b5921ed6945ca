//! The scheduler: which outputs are stale, running them (in parallel where
//! independent), publishing results, and the run report.
//!
//! Architecture invariant: an output is published only after its object and
//! record are in the store; a failed rule publishes nothing and leaves the
//! last good output in place. The key of a rule includes the content hashes
//! of its upstream outputs, so an upstream rebuild that yields the same bytes
//! rebuilds nothing downstream (early cutoff).

use crate::db::{Db, Dep, KeyParts};
use crate::engine::render_physical;
use crate::error::{Diag, ErrorKind, Result};
use crate::kernels::KernelUse;
use crate::project::{Project, RuleJob, snapshots};
use crate::store::{Published, Record, Store};
use crate::workspace::{ContractSpec, WorkspaceSpec};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use relspec_exec::lower::{self, LowerError};
use relspec_exec::planner::{Planner, Upstream};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Options of one build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Selectors (`rule`, `rule+`, `+rule`, `tag:x`); empty = everything.
    pub select: Vec<String>,
    /// Maximum rules executing at once (0 = number of CPUs).
    pub jobs: usize,
    /// Only compute what is stale; execute and publish nothing.
    pub dry_run: bool,
    /// Set to cancel a running build (checked between record batches).
    pub cancel: Option<Arc<AtomicBool>>,
}

pub use crate::status::Status;

/// The report line of one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleReport {
    /// Rule name.
    pub rule: String,
    /// Outcome.
    pub status: Status,
    /// Why it was (or would be) rebuilt.
    pub reasons: Vec<String>,
    /// Output rows.
    pub rows: Option<u64>,
    /// Wall time spent on this rule in this build, ms.
    pub elapsed_ms: f64,
    /// Output key.
    pub key: Option<String>,
    /// Content hash of the output.
    pub content_hash: Option<String>,
    /// Whether the published file was (re)written.
    pub published: bool,
    /// Kernel applications and lanes (executed rules).
    pub kernels: Vec<KernelUse>,
    /// The error, if it failed.
    pub error: Option<String>,
    /// Data contract checks evaluated on the result (executed rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::contracts::CheckResult>,
}

/// The result of a build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    /// Rules in dependency order.
    pub rules: Vec<RuleReport>,
    /// Total wall time, ms.
    pub elapsed_ms: f64,
    /// Input files hashed (not served by the stat cache).
    pub files_hashed: usize,
    /// Errors (with locations) of failed rules.
    #[serde(skip)]
    pub errors: Vec<Diag>,
}

impl BuildReport {
    /// Count of rules with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.rules.iter().filter(|r| r.status == status).count()
    }
    /// Whether every rule succeeded.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Receives progress events (the CLI draws them).
pub trait Progress: Sync {
    /// A rule started executing.
    fn started(&self, _rule: &str) {}
    /// A rule finished (any status).
    fn finished(&self, _report: &RuleReport) {}
}

/// Progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What each rule last resolved to: its output key and output (a fast path
/// that skips reading the record). The key's parts live in the record.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LastBuilt {
    rules: BTreeMap<String, LastEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastEntry {
    key: String,
    content_hash: String,
    rows: u64,
    bytes: u64,
}

impl LastEntry {
    fn new(rec: &Record) -> Self {
        LastEntry { key: rec.key.clone(), content_hash: rec.content_hash.clone(), rows: rec.rows, bytes: rec.bytes }
    }
    fn record(&self, rule: &str, signature: &str) -> Record {
        Record {
            key: self.key.clone(),
            content_hash: self.content_hash.clone(),
            rule: rule.to_string(),
            signature: signature.to_string(),
            schema: vec![],
            rows: self.rows,
            bytes: self.bytes,
            elapsed_ms: 0,
            parts: None,
        }
    }
}

/// The key parts the last build of `rule` used (from its record), to explain a rebuild.
fn last_parts(store: &Store, last: &LastBuilt, rule: &str) -> Option<KeyParts> {
    let le = last.rules.get(rule)?;
    let text = std::fs::read(store.record_path(&le.key)).ok()?;
    let rec: Record = serde_json::from_slice(&text).ok()?;
    serde_json::from_value(rec.parts?).ok()
}

fn load_last(store: &Store) -> LastBuilt {
    std::fs::read(store.dir().join(crate::store::layout::LAST_BUILT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// What a build reads of the cache's last state, loaded on a second thread
/// while the first computes the rule graph and keys.
struct Prefetched {
    last: LastBuilt,
    /// Keys whose cached object exists with the recorded size.
    intact: HashSet<String>,
    published: Published,
    /// Rule -> content hash its output was published with, for published
    /// files that still have the recorded size and mtime.
    on_disk: HashMap<String, String>,
    /// Staging files left in the output dir by a killed publish.
    staging: Vec<PathBuf>,
}

/// Load the last build, check its objects and the published files (one stat
/// each). Run under the store lock, so nothing else changes them meanwhile.
fn prefetch(store: &Store, out_dir: &Path, prefix: &str) -> Prefetched {
    // Staging files of a killed earlier publish (removed when publishing).
    let staging = std::fs::read_dir(out_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".relspec-tmp-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    let last = load_last(store);
    let intact = last
        .rules
        .values()
        .filter(|le| store.object_intact(&le.content_hash, le.bytes))
        .map(|le| le.key.clone())
        .collect();
    let published = store.load_published();
    let on_disk = published
        .entries
        .iter()
        .filter_map(|(rel, prev)| {
            let file = rel.strip_prefix(prefix)?.strip_prefix('/')?;
            let rule = file.strip_suffix(".parquet")?;
            store
                .published_file_matches(prev, &out_dir.join(file))
                .then(|| (rule.to_string(), prev.content_hash.clone()))
        })
        .collect();
    Prefetched { last, intact, published, on_disk, staging }
}

/// Result of executing one rule.
struct Executed {
    record: Record,
    kernels: Vec<KernelUse>,
    checks: Vec<crate::contracts::CheckResult>,
    artifact: String,
}

/// Build the workspace: execute what is stale, reuse what is cached, publish.
/// Static errors (parse, names, cycles) fail before anything is touched.
pub fn build(
    p: &mut Project,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> std::result::Result<BuildReport, Vec<Diag>> {
    let t0 = Instant::now();
    p.refresh().map_err(|e| vec![e])?;
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "refreshed inputs");
    // Lock first, then read the cache's state on a second thread while this
    // one computes the graph and keys.
    let mut _lock = None;
    let mut pending = None;
    if let (Ok(spec), Ok(store)) = (p.spec(), p.store()) {
        if !opts.dry_run {
            _lock = Some(store.lock().map_err(|e| vec![e])?);
        }
        let (store, out_dir) = (store.clone(), spec.output_path(&p.root));
        let prefix = spec.output_dir.trim_end_matches('/').to_string();
        pending = Some(std::thread::spawn(move || prefetch(&store, &out_dir, &prefix)));
    }
    let errs = p.static_errors();
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "graph and static errors");
    if !errs.is_empty() {
        return Err(errs);
    }
    let spec = p.spec().map_err(|e| vec![e])?;
    let targets = p.select(&opts.select).map_err(|e| vec![e])?;
    let target_set: HashSet<String> = targets.iter().cloned().collect();
    let order = p.with_upstream(&targets);
    let (jobs, job_errors) = p.jobs(&order);
    if !job_errors.is_empty() {
        return Err(job_errors);
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "static keys");
    let store = p.store().map_err(|e| vec![e])?.clone();
    let Some(Ok(Prefetched { mut last, intact, mut published, on_disk, staging })) = pending.map(|h| h.join()) else {
        return Err(vec![Diag::new(ErrorKind::Store("reading the cache's state failed".into()))]);
    };
    // Whether `last` must be saved.
    let mut last_dirty = false;
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "last build loaded, objects checked");
    let files_hashed = p.stat.hashed;
    if !opts.dry_run {
        p.stat.save(&store).map_err(|e| vec![e])?;
    }

    let parallel =
        if opts.jobs == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { opts.jobs };
    let mut reports: HashMap<String, RuleReport> = HashMap::new();
    let mut records: HashMap<String, Record> = HashMap::new();
    let mut errors = Vec::new();
    let mut artifacts: HashMap<String, String> = HashMap::new();

    // Lazily created: a no-op build never starts DataFusion.
    let mut planner: Option<Planner> = None;

    let job_by_name: HashMap<String, RuleJob> = jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
    let mut remaining: Vec<String> = order.clone();
    let mut running: HashSet<String> = HashSet::new();
    let mut started_at: HashMap<String, Instant> = HashMap::new();
    let mut task_names: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut tasks: tokio::task::JoinSet<(String, std::result::Result<Executed, LowerError>)> =
        tokio::task::JoinSet::new();

    loop {
        if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            for name in remaining.drain(..) {
                let r = skipped(&name, "cancelled by a newer change".into());
                reports.insert(name, r);
            }
        }
        // Resolve everything whose inputs are known: reuse hits, mark skips, or start runs.
        let mut progressed = true;
        while progressed {
            progressed = false;
            let mut still = Vec::with_capacity(remaining.len());
            for name in std::mem::take(&mut remaining) {
                let job = &job_by_name[&name];
                let ups: Vec<&String> =
                    job.deps.iter().filter_map(|d| if let Dep::Rule(u) = d { Some(u) } else { None }).collect();
                if ups
                    .iter()
                    .any(|u| matches!(reports.get(*u).map(|r| r.status), Some(Status::Failed | Status::Skipped)))
                {
                    let failed_up =
                        ups.iter().find(|u| reports.contains_key(**u)).map(|u| u.to_string()).unwrap_or_default();
                    let r = skipped(&name, format!("upstream `{failed_up}` failed"));
                    progress.finished(&r);
                    reports.insert(name.clone(), r);
                    progressed = true;
                    continue;
                }
                if opts.dry_run && ups.iter().any(|u| matches!(reports.get(*u).map(|r| r.status), Some(Status::Stale)))
                {
                    let up =
                        ups.iter().find(|u| matches!(reports.get(**u).map(|r| r.status), Some(Status::Stale))).unwrap();
                    let r = RuleReport {
                        status: Status::Stale,
                        reasons: vec![format!("upstream `{up}` is stale")],
                        ..skipped(&name, String::new())
                    };
                    progress.finished(&r);
                    reports.insert(name.clone(), r);
                    progressed = true;
                    continue;
                }
                if !ups.iter().all(|u| records.contains_key(*u)) {
                    still.push(name);
                    continue;
                }
                let upstream: BTreeMap<&str, &str> =
                    ups.iter().map(|u| (u.as_str(), records[*u].content_hash.as_str())).collect();
                let key = job.parts.key_with(upstream.iter().map(|(k, v)| (*k, *v)));
                let fast = last
                    .rules
                    .get(&name)
                    .filter(|le| le.key == key && intact.contains(&key))
                    .map(|le| le.record(&name, &job.parts.signature));
                if let Some(rec) = fast.or_else(|| store.lookup(&key)) {
                    let r = RuleReport {
                        rule: name.clone(),
                        status: Status::Reused,
                        reasons: vec![],
                        rows: Some(rec.rows),
                        elapsed_ms: 0.0,
                        key: Some(key.clone()),
                        content_hash: Some(rec.content_hash.clone()),
                        published: false,
                        kernels: vec![],
                        error: None,
                        checks: vec![],
                    };
                    progress.finished(&r);
                    reports.insert(name.clone(), r);
                    if last.rules.get(&name).is_none_or(|le| le.key != rec.key) {
                        last.rules.insert(name.clone(), LastEntry::new(&rec));
                        last_dirty = true;
                    }
                    records.insert(name.clone(), rec);
                    progressed = true;
                    continue;
                }
                let mut parts = (*job.parts).clone();
                parts.upstream = upstream.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                let reasons = match last_parts(&store, &last, &name) {
                    Some(prev) if prev == parts => vec!["cached output missing".to_string()],
                    Some(prev) => {
                        let d = parts.diff(&prev);
                        if d.is_empty() { vec!["cached output missing".to_string()] } else { d }
                    }
                    None if last.rules.contains_key(&name) => vec!["cached output missing".to_string()],
                    None => vec!["not built before".to_string()],
                };
                if opts.dry_run {
                    let r =
                        RuleReport { status: Status::Stale, reasons, key: Some(key), ..skipped(&name, String::new()) };
                    progress.finished(&r);
                    reports.insert(name.clone(), r);
                    progressed = true;
                    continue;
                }
                if running.len() >= parallel {
                    still.push(name);
                    continue;
                }
                // Start execution.
                if planner.is_none() {
                    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "creating session");
                    planner = Some(p.planner().map_err(|e| vec![e])?);
                    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "session created");
                }
                let pl = planner.as_mut().expect("set above");
                let engine = pl.engine().clone();
                // Upstream rules are read from their stored objects.
                let reg = engine.block_on(pl.register_inputs(&job.deps, |u| match records.get(u) {
                    Some(r) => Ok(Upstream::Object(store.object_path(&r.content_hash))),
                    None => Err(Diag::new(ErrorKind::Internal(format!("`{u}` has no output yet")))),
                }));
                let reg_err = reg.err();
                if let Some(e) = reg_err {
                    let r = RuleReport {
                        status: Status::Failed,
                        reasons,
                        error: Some(e.to_string()),
                        key: Some(key),
                        ..skipped(&name, String::new())
                    };
                    progress.finished(&r);
                    reports.insert(name.clone(), r);
                    errors.push(e.in_rule(name.clone()));
                    progressed = true;
                    continue;
                }
                tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "inputs registered");
                let plan = match p.plan(&name) {
                    Ok(pl) => pl,
                    Err(e) => return Err(vec![e]),
                };
                progress.started(&name);
                started_at.insert(name.clone(), Instant::now());
                let contract = job.decl.def.produces.as_ref().and_then(|c| spec.contracts.get(c)).cloned();
                let (ctx2, spec2, store2, rule, cancel) =
                    (pl.ctx().clone(), spec.clone(), store.clone(), name.clone(), opts.cancel.clone());
                let sig = parts.signature.clone();
                let parts_json = serde_json::to_value(&parts).ok();
                let handle = tasks.spawn_on(
                    async move {
                        let res = execute(
                            &ctx2,
                            &rule,
                            &plan,
                            &spec2,
                            contract.as_ref(),
                            &store2,
                            &key,
                            &sig,
                            parts_json,
                            cancel,
                        )
                        .await;
                        (rule, res)
                    },
                    &engine.handle(),
                );
                task_names.insert(handle.id(), name.clone());
                // Remember the parts for the report of this rule.
                reports.insert(
                    name.clone(),
                    RuleReport { status: Status::Stale, reasons, ..skipped(&name, String::new()) },
                );
                running.insert(name.clone());
                progressed = true;
            }
            remaining = still;
        }
        if running.is_empty() {
            break;
        }
        let Some(engine) = planner.as_ref().map(|pl| pl.engine().clone()) else { break };
        let joined = engine.block_on(tasks.join_next());
        let Some(joined) = joined else { break };
        let (name, res) = match joined {
            Ok(v) => v,
            Err(e) => {
                let name = task_names.get(&e.id()).cloned().unwrap_or_default();
                let diag = Diag::new(ErrorKind::Execution(format!("the engine failed on this rule: {e}")));
                (name, Err(LowerError { diag, pos: None }))
            }
        };
        running.remove(&name);
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, rule = name.as_str(), "rule finished");
        let elapsed = started_at[&name].elapsed().as_secs_f64() * 1000.0;
        let mut r = reports.remove(&name).unwrap();
        r.elapsed_ms = elapsed;
        match res {
            Ok(ex) => {
                r.status = Status::Built;
                r.rows = Some(ex.record.rows);
                r.key = Some(ex.record.key.clone());
                r.content_hash = Some(ex.record.content_hash.clone());
                r.kernels = ex.kernels;
                r.checks = ex.checks;
                artifacts.insert(name.clone(), ex.artifact);
                last.rules.insert(name.clone(), LastEntry::new(&ex.record));
                last_dirty = true;
                records.insert(name.clone(), ex.record);
            }
            Err(e) => {
                let job = &job_by_name[&name];
                let d = p.locate_error(job, e);
                r.status = Status::Failed;
                r.error = Some(d.to_string());
                errors.push(d);
                last_dirty |= last.rules.remove(&name).is_some();
            }
        }
        progress.finished(&r);
        reports.insert(name, r);
    }

    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "scheduled and executed");
    if !opts.dry_run {
        let out_dir = spec.output_path(&p.root);
        for f in &staging {
            let _ = std::fs::remove_file(f);
        }
        // Only the published files that no longer match what the ledger says
        // was published (content hash here, size and mtime in `prefetch`) are
        // (re)written.
        let prefix = spec.output_dir.trim_end_matches('/');
        let stale: Vec<(&String, String, PathBuf)> = targets
            .iter()
            .filter(|t| records.get(*t).is_some_and(|rec| on_disk.get(*t) != Some(&rec.content_hash)))
            .map(|t| (t, format!("{prefix}/{t}.parquet"), out_dir.join(format!("{t}.parquet"))))
            .collect();
        let published_dirty = !stale.is_empty();
        for (t, rel, dest) in &stale {
            match store.publish(&records[*t], dest, &mut published, rel) {
                Ok(()) => {
                    if let Some(r) = reports.get_mut(*t) {
                        r.published = true;
                    }
                }
                Err(e) => errors.push(e.in_rule((*t).clone())),
            }
        }
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "published");
        let save = || -> Result<()> {
            if published_dirty {
                store.save_published(&published)?;
            }
            p.db.summaries().save(&store)?;
            if last_dirty {
                store.write_json(&store.dir().join(crate::store::layout::LAST_BUILT), &last)?;
            }
            Ok(())
        };
        save().map_err(|e| vec![e])?;
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "side caches saved");
        let ran = reports.values().any(|r| matches!(r.status, Status::Built | Status::Failed));
        if ran {
            let run = run_bundle(p, &order, &reports, &artifacts, t0.elapsed().as_secs_f64() * 1000.0);
            crate::bundle::write_run(&store, &run).map_err(|e| vec![e])?;
        }
    }

    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "published and saved");
    let rules = order.iter().filter(|r| target_set.contains(*r)).filter_map(|r| reports.remove(r)).collect();
    // Freeing the per-rule maps costs ~2.5 µs a rule (13 ms at 5,000 rules):
    // hand them to a thread instead of the caller's critical path.
    let garbage = (records, job_by_name, last, published, intact, on_disk, order, targets, target_set);
    let garbage2 = (planner, artifacts, reports, started_at, task_names);
    std::thread::spawn(move || drop((garbage, garbage2)));
    Ok(BuildReport { rules, elapsed_ms: t0.elapsed().as_secs_f64() * 1000.0, files_hashed, errors })
}

fn run_bundle(
    p: &Project,
    order: &[String],
    reports: &HashMap<String, RuleReport>,
    artifacts: &HashMap<String, String>,
    elapsed_ms: f64,
) -> crate::bundle::RunBundle {
    use crate::bundle::{RunBundle, RunDataset, RunRule};
    let spec = p.spec().ok();
    let fps = crate::db::dataset_fingerprints(&p.db, p.ws);
    let mut datasets = BTreeMap::new();
    if let Some(spec) = &spec {
        for (name, ds) in &spec.datasets {
            let files = match p.ws.datasets(&p.db).get(name) {
                Some(Ok(fs)) => fs.iter().map(|f| (f.path(&p.db).clone(), f.hash(&p.db).clone())).collect(),
                _ => vec![],
            };
            datasets.insert(
                name.clone(),
                RunDataset {
                    location: ds.path.clone(),
                    format: format!("{:?}", ds.format).to_lowercase(),
                    fingerprint: fps.get(name).and_then(|f| f.as_ref().ok()).cloned(),
                    files,
                },
            );
        }
    }
    let rules = order
        .iter()
        .filter_map(|name| {
            let r = reports.get(name)?;
            // A reused output's artifact was written when it was built (`artifacts/<key>.json`).
            let artifact = artifacts.get(name).cloned();
            let ran = r.status != Status::Reused;
            let mut reasons = r.reasons.clone();
            reasons.extend(r.error.clone());
            Some((
                name.clone(),
                RunRule {
                    status: r.status,
                    key: r.key.clone(),
                    content_hash: r.content_hash.clone().filter(|_| ran),
                    rows: r.rows.filter(|_| ran),
                    elapsed_ms: r.elapsed_ms,
                    reasons,
                    artifact,
                },
            ))
        })
        .collect();
    RunBundle {
        run_id: crate::bundle::new_run_id(),
        engine_fingerprint: crate::db::engine_fingerprint(&p.db, p.ws).clone(),
        profile: spec.map(|s| crate::engine::profile_json(&s.profile)).unwrap_or_default(),
        datasets,
        rules,
        elapsed_ms,
    }
}

fn skipped(name: &str, reason: String) -> RuleReport {
    RuleReport {
        rule: name.to_string(),
        status: Status::Skipped,
        reasons: if reason.is_empty() { vec![] } else { vec![reason] },
        rows: None,
        elapsed_ms: 0.0,
        key: None,
        content_hash: None,
        published: false,
        kernels: vec![],
        error: None,
        checks: vec![],
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    ctx: &SessionContext,
    rule: &str,
    plan: &crate::relplan::RelPlan,
    spec: &WorkspaceSpec,
    contract: Option<&ContractSpec>,
    store: &Store,
    key: &str,
    signature: &str,
    parts: Option<serde_json::Value>,
    cancel: Option<Arc<AtomicBool>>,
) -> std::result::Result<Executed, LowerError> {
    let t = Instant::now();
    let lowered = relspec_exec::planner::prepare(ctx, spec, plan, contract).await?;
    let mut snaps = snapshots(ctx, &lowered.df).await.map_err(|e| lower::df_error(e, ErrorKind::Plan))?;
    let physical = ctx
        .state()
        .create_physical_plan(lowered.df.logical_plan())
        .await
        .map_err(|e| lower::df_error(e, ErrorKind::Plan))?;
    let schema = physical.schema();
    let mut stream = datafusion::physical_plan::execute_stream(physical.clone(), ctx.task_ctx())
        .map_err(|e| lower::df_error(e, ErrorKind::Execution))?;
    let mut batches = Vec::new();
    while let Some(b) = stream.next().await {
        if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(LowerError { diag: Diag::new(ErrorKind::Execution("cancelled".into())), pos: None });
        }
        batches.push(b.map_err(|e| lower::df_error(e, ErrorKind::Execution))?);
    }
    snaps.physical_metrics = Some(render_physical(physical.as_ref(), true));
    let checks = match contract {
        Some(c) => crate::contracts::evaluate(ctx, c, schema.clone(), &batches)
            .await
            .map_err(|e| lower::df_error(e, ErrorKind::Execution))?,
        None => vec![],
    };
    if let Some(c) = contract.filter(|_| checks.iter().any(|k| !k.passed)) {
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
    let elapsed = t.elapsed().as_millis() as u64;
    let store = store.clone();
    let (key, rule_s, sig) = (key.to_string(), rule.to_string(), signature.to_string());
    let lineage = crate::lineage::of_plan(&lowered.body);
    #[cfg(feature = "substrait")]
    let substrait = match crate::substrait::write(ctx, &store, &key, lowered.df.logical_plan()).await {
        Ok(rel) => Some(rel),
        Err(e) => {
            tracing::warn!(rule, "no Substrait plan: {e}");
            None
        }
    };
    #[cfg(not(feature = "substrait"))]
    let substrait: Option<String> = None;
    let store2 = store.clone();
    let record = tokio::task::spawn_blocking(move || {
        relspec_exec::parquet::put(&store2, &key, &rule_s, &sig, schema, &batches, elapsed, parts)
    })
    .await
    .map_err(|e| LowerError { diag: Diag::new(ErrorKind::Store(e.to_string())), pos: None })?
    .map_err(|diag| LowerError { diag, pos: None })?;
    let artifact = crate::bundle::Artifact {
        rule: rule.to_string(),
        key: record.key.clone(),
        signature: signature.to_string(),
        plans: snaps,
        lineage,
        checks: checks.clone(),
        kernels: lowered.kernels.clone(),
        substrait,
        rows: record.rows,
        bytes: record.bytes,
        elapsed_ms: t.elapsed().as_secs_f64() * 1000.0,
    };
    let artifact = crate::bundle::write_artifact(&store, &artifact).map_err(|diag| LowerError { diag, pos: None })?;
    Ok(Executed { record, kernels: lowered.kernels, checks, artifact })
}
