//! The build: decide, schedule, publish.
//!
//! [`build`] loads the graph and the cache's last state ([`state`]), then
//! runs a DAG scheduler ([`Scheduler`]) that asks [`decide`] what to do with
//! each rule whose inputs are known (skip, wait, reuse, run) and executes the
//! runs ([`execute`]) in parallel on the engine's runtime, then publishes
//! ([`publish`]) and writes the run bundle.
//!
//! Architecture invariant: an output is published only after its object and
//! record are in the store; a failed rule publishes nothing and leaves the
//! last good output in place (and its entry in the last-built state, the
//! base of the next partial build). The key of a rule includes the content hashes
//! of its upstream outputs, so an upstream rebuild that yields the same bytes
//! rebuilds nothing downstream (early cutoff). A dry run (`status`,
//! `build --check`) takes the same decisions and writes nothing.

mod bundle_of;
pub mod decide;
mod execute;
mod merge;
mod partitions;
mod publish;
mod splice;
pub(crate) mod state;
mod union;

use crate::db::Dep;
use crate::error::{Diag, ErrorKind};
use crate::kernels::KernelUse;
use crate::project::{Project, RuleJob};
use crate::store::{Record, Store};
use crate::workspace::WorkspaceSpec;
use decide::{Decision, StoreView, decide};
use execute::Executed;
use relspec_exec::lower::LowerError;
use relspec_exec::planner::{Planner, Upstream};
use serde::{Deserialize, Serialize};
use state::{LastBuilt, LastEntry, Prefetched, prefetch};
use std::collections::{HashMap, HashSet};
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
    /// Record the build's snapshot when it is clean (see [`crate::snapshot`]);
    /// the CLI's builds do, from a project it has just opened.
    pub snapshot: bool,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub published: bool,
    /// Kernel applications and lanes (executed rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelUse>,
    /// The error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Data contract checks evaluated on the result (executed rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::contracts::CheckResult>,
    /// An incremental rule that ran: how many partitions it computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionsRun>,
    /// Reused from the remote cache (downloaded in this build).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
}

/// How much of an incremental rule one build computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionsRun {
    /// The partitioned input.
    pub by: String,
    /// Partitions computed (`None`: all of them, the rule ran whole).
    pub ran: Option<usize>,
    /// Partitions of the input, when known (a dataset's).
    pub total: Option<usize>,
    /// Of the partitions computed, those whose rows changed.
    pub changed: Option<usize>,
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
    /// Sources extracted for the rules that ran (none when no reader ran).
    #[serde(default)]
    pub sources: Vec<SourceReport>,
    /// Errors (with locations) of failed rules.
    #[serde(skip)]
    pub errors: Vec<Diag>,
    /// How the last clean build's snapshot served this build, if it did
    /// (see [`crate::snapshot`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotUse>,
    /// What the build did with the remote cache, when one is configured
    /// and the local cache missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::RemoteReport>,
    /// A clean partial build's outputs, for its snapshot.
    #[serde(skip)]
    pub(crate) outputs: Vec<crate::snapshot::Output>,
}

/// How a build used the last clean build's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotUse {
    /// Nothing it depends on changed: answered without opening the workspace.
    Unchanged,
    /// Only rule files changed: their rules and those downstream were built
    /// in a partial workspace.
    Partial,
}

/// What extracting one source cost in a build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceReport {
    /// The `[sources.NAME]`.
    pub source: String,
    /// Its files.
    pub files: usize,
    /// Files parsed (new or changed content).
    pub parsed: usize,
    /// Files whose facts came from a cache fragment.
    pub from_fragments: usize,
    /// Wall time of extraction, ms.
    pub ms: f64,
    /// Syntax errors, as `file:line:col: message` (1-based), and skipped files.
    pub warnings: Vec<String>,
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
    /// Whether `finished` ignores its reports (a caller may skip making them).
    fn quiet(&self) -> bool {
        false
    }
}

/// Progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {
    fn quiet(&self) -> bool {
        true
    }
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
    // Whatever this build does, the last snapshot no longer stands for it (a
    // clean end records a new one).
    if opts.snapshot && !opts.dry_run {
        crate::snapshot::remove(p);
    }
    // Lock first, then read the cache's state on a second thread while this
    // one computes the graph and keys.
    let mut _lock = None;
    let mut pending = None;
    let mut seeded = None;
    if let (Ok(spec), Ok(store)) = (p.spec(), p.store()) {
        if !opts.dry_run {
            _lock = Some(store.lock().map_err(|e| vec![e])?);
        }
        let (store, out_dir) = (store.clone(), spec.output_path(&p.root));
        let prefix = spec.output_dir.trim_end_matches('/').to_string();
        match &p.seed {
            // A partial build is given its rules' state (a few stats, no file read).
            Some(seed) => {
                if seed.guard.as_ref().is_some_and(|still| !still()) {
                    let why = "another build changed the cache since the snapshot was read";
                    return Err(vec![Diag::new(ErrorKind::Store(why.into()))]);
                }
                seeded = Some(state::seeded(&store, &out_dir, &prefix, seed))
            }
            None => pending = Some(std::thread::spawn(move || prefetch(&store, &out_dir, &prefix))),
        }
    }
    let errs = p.static_errors();
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "graph and static errors");
    if !errs.is_empty() {
        return Err(errs);
    }
    let spec = p.spec().map_err(|e| vec![e])?;
    let targets = p.select(&opts.select).map_err(|e| vec![e])?;
    let order = p.with_upstream(&targets);
    let (jobs, job_errors) = p.jobs(&order);
    if !job_errors.is_empty() {
        return Err(job_errors);
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "static keys");
    let store = p.store().map_err(|e| vec![e])?.clone();
    let Some(Ok(state)) = seeded.map(Ok).or_else(|| pending.map(|h| h.join())) else {
        return Err(vec![Diag::new(ErrorKind::Store("reading the cache's state failed".into()))]);
    };
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "last build loaded, objects checked");
    let files_hashed = p.stat.hashed;
    if !opts.dry_run {
        p.stat.save(&store).map_err(|e| vec![e])?;
    }

    let Prefetched { last, intact, published, on_disk, staging } = state;
    let mut s = Scheduler::new(opts, store.clone(), spec.clone(), jobs, last);
    s.remote_spec = spec.remote_cache.clone();
    s.pack = opts.select.is_empty() && p.seed.is_none() && !opts.dry_run;
    // Rules a partial workspace did not load: their outputs are known.
    for (name, record) in p.seed.iter().flat_map(|seed| &seed.frozen) {
        let r = RuleReport {
            status: Status::Reused,
            rows: Some(record.rows),
            key: Some(record.key.clone()),
            content_hash: Some(record.content_hash.clone()),
            ..skipped(name, String::new())
        };
        s.reports.insert(name.clone(), r);
        s.records.insert(name.clone(), record.clone());
    }
    s.run(p, &order, &intact, progress, t0)?;
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "scheduled and executed");
    if !s.from_remote.is_empty() {
        // Downloads were installed without syncs: make them durable at once.
        let _ = crate::store::sync_file_system(store.dir());
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "downloads synced");
    }

    let mut ledger = None;
    if !opts.dry_run {
        // Targets published as hive directories, and an engine to split them.
        let partitioned: HashMap<String, Vec<String>> = targets
            .iter()
            .filter_map(|t| s.jobs.get(t).map(|j| (t, &j.decl.def.partition_by)))
            .filter(|(_, cols)| !cols.is_empty())
            .map(|(t, cols)| (t.clone(), cols.clone()))
            .collect();
        let engine = if partitioned.is_empty() { None } else { p.engine().ok() };
        let outcome = publish::Outcome {
            partitioned: &partitioned,
            engine,
            records: &s.records,
            last: &s.last,
            last_dirty: s.last_dirty,
            artifacts: &s.artifacts,
            reports: &mut s.reports,
            errors: &mut s.errors,
        };
        let now = publish::Published { ledger: published, on_disk: &on_disk, staging: &staging };
        ledger = Some(publish::publish(p, &order, &targets, outcome, now, t0).map_err(|e| vec![e])?);
    }
    // Uploads ran beside execution and publishing; wait for the rest.
    let remote = match (s.remote.clone(), s.remote_warning.take()) {
        (Some(r), _) => {
            r.add_hits(s.pack_hits);
            // A whole build that resolved every rule: its pack, for the
            // next machine to fetch in one request.
            if s.pack && r.writes() && s.errors.is_empty() && s.records.len() == s.jobs.len() {
                let mut names: Vec<&String> = s.records.keys().collect();
                names.sort();
                let records = names.into_iter().map(|n| s.records[n].clone()).collect();
                r.upload_pack(store.clone(), s.pack_key(), records);
            }
            Some(r.finish())
        }
        (None, Some(w)) => Some(crate::remote::RemoteReport {
            url: s.remote_spec.as_ref().map(|r| r.url.clone()).unwrap_or_default(),
            warnings: vec![w],
            ..Default::default()
        }),
        (None, None) => None,
    };
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "remote cache done");

    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "published and saved");
    let target_set: HashSet<&String> = targets.iter().collect();
    let rules: Vec<RuleReport> =
        order.iter().filter(|r| target_set.contains(r)).filter_map(|r| s.reports.remove(r)).collect();
    let errors = std::mem::take(&mut s.errors);
    let sources = std::mem::take(&mut s.source_reports);
    // What a snapshot records of a clean build (a partial build hands it back).
    let clean = opts.select.is_empty()
        && errors.is_empty()
        && rules.iter().all(|r: &RuleReport| matches!(r.status, Status::Built | Status::Reused));
    let mut outputs = vec![];
    if clean
        && (opts.snapshot || p.seed.is_some())
        && let Some(ledger) = &ledger
    {
        let prefix = spec.output_dir.trim_end_matches('/');
        outputs = rules
            .iter()
            .filter_map(|r| {
                let le = s.last.rules.get(&r.rule)?;
                let published = [format!("{prefix}/{}.parquet", r.rule), format!("{prefix}/{}/", r.rule)]
                    .into_iter()
                    .find_map(|k| ledger.entries.get(&k).map(|e| (k, e.clone())));
                Some(crate::snapshot::Output {
                    rule: r.rule.clone(),
                    key: le.key.clone(),
                    content_hash: le.content_hash.clone(),
                    data_hash: le.data_hash.clone(),
                    rows: le.rows,
                    bytes: le.bytes,
                    published,
                })
            })
            .collect::<Vec<_>>();
        if outputs.len() != rules.len() {
            outputs.clear();
        } else if opts.snapshot && p.seed.is_none() {
            crate::snapshot::record(p, std::mem::take(&mut outputs));
            tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "snapshot");
        }
    }
    // Freeing the per-rule maps costs ~2.5 µs a rule (13 ms at 5,000 rules):
    // hand them to a thread instead of the caller's critical path.
    let garbage = (s, intact, on_disk, order, targets);
    std::thread::spawn(move || drop(garbage));
    Ok(BuildReport {
        rules,
        elapsed_ms: t0.elapsed().as_secs_f64() * 1000.0,
        files_hashed,
        sources,
        errors,
        snapshot: None,
        remote,
        outputs,
    })
}

type Task = (String, Done);

/// What a task of the scheduler finished (one per rule, moved once: not boxed).
#[allow(clippy::large_enum_variant)]
enum Done {
    /// A rule's run.
    Ran(std::result::Result<Executed, LowerError>),
    /// A rule's remote lookup.
    Fetched(crate::remote::Fetched),
}

/// The key of a whole build's pack: every rule's static key parts (rule,
/// plan, engine, dataset fingerprints, params, contract, the names of the
/// rules it reads), so a machine knows it before resolving any rule. Only a
/// hint: each installed output is still found by its own output key.
pub(crate) fn pack_key<'a>(jobs: impl Iterator<Item = &'a RuleJob>) -> String {
    let mut keys: Vec<(&str, String)> = jobs
        .map(|j| {
            let ups = j.deps.iter().filter_map(|d| if let Dep::Rule(u) = d { Some((u.as_str(), "")) } else { None });
            let ups: std::collections::BTreeMap<&str, &str> = ups.collect();
            (j.name.as_str(), j.parts.key_with(ups.into_iter()))
        })
        .collect();
    keys.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"relspec-pack/v1\0");
    for (name, key) in keys {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(key.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The DAG scheduler's state: what each rule resolved to, what runs.
struct Scheduler {
    dry_run: bool,
    parallel: usize,
    cancel: Option<Arc<AtomicBool>>,
    store: Store,
    spec: Arc<WorkspaceSpec>,
    jobs: HashMap<String, RuleJob>,
    /// Each rule's report so far.
    reports: HashMap<String, RuleReport>,
    /// Outputs known so far (reused or built).
    records: HashMap<String, Record>,
    errors: Vec<Diag>,
    /// Artifact paths of executed rules.
    artifacts: HashMap<String, String>,
    last: LastBuilt,
    /// Whether `last` must be saved.
    last_dirty: bool,
    /// Created on the first run: a no-op build never starts DataFusion.
    planner: Option<Planner>,
    running: HashSet<String>,
    started_at: HashMap<String, Instant>,
    task_names: HashMap<tokio::task::Id, String>,
    tasks: tokio::task::JoinSet<Task>,
    /// Extracted facts per source (extracted once per build, on first reader).
    sources: HashMap<String, Arc<Vec<Arc<relspec_extract::FileFacts>>>>,
    source_reports: Vec<SourceReport>,
    /// `[cache.remote]`, opened on the first local miss.
    remote_spec: Option<crate::workspace::RemoteCacheSpec>,
    remote: Option<Arc<crate::remote::Remote>>,
    /// Whether opening the remote was tried (on the first local miss).
    remote_tried: bool,
    /// Why the configured remote could not be opened.
    remote_warning: Option<String>,
    /// Rules being looked up in the remote, with their decision to run.
    fetching: HashMap<String, Decision>,
    /// Rules reused from the remote.
    from_remote: HashSet<String>,
    /// Whether the build may use a pack (a whole, unselected build).
    pack: bool,
    /// Its pack key, computed on first use (fetch or upload).
    pack_key: Option<String>,
    /// Output keys installed from the remote's pack of this build.
    packed: HashSet<String>,
    /// Rules reused from the pack.
    pack_hits: usize,
    /// The Ballista session (`[profile] executor = "ballista"`), once connected.
    cluster: Option<Arc<relspec_exec::cluster::Cluster>>,
    /// Datasets registered in it.
    cluster_datasets: HashSet<String>,
    /// Keys whose remote entry failed verification (a writer repairs them).
    repair: HashSet<String>,
}

impl Scheduler {
    fn new(
        opts: &BuildOptions,
        store: Store,
        spec: Arc<WorkspaceSpec>,
        jobs: Vec<RuleJob>,
        last: LastBuilt,
    ) -> Scheduler {
        let parallel =
            if opts.jobs == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { opts.jobs };
        Scheduler {
            dry_run: opts.dry_run,
            parallel,
            cancel: opts.cancel.clone(),
            store,
            spec,
            jobs: jobs.into_iter().map(|j| (j.name.clone(), j)).collect(),
            reports: HashMap::new(),
            records: HashMap::new(),
            errors: Vec::new(),
            artifacts: HashMap::new(),
            last,
            last_dirty: false,
            planner: None,
            running: HashSet::new(),
            started_at: HashMap::new(),
            task_names: HashMap::new(),
            tasks: tokio::task::JoinSet::new(),
            sources: HashMap::new(),
            source_reports: Vec::new(),
            remote_spec: None,
            remote: None,
            remote_tried: false,
            remote_warning: None,
            fetching: HashMap::new(),
            from_remote: HashSet::new(),
            pack: false,
            pack_key: None,
            packed: HashSet::new(),
            pack_hits: 0,
            cluster: None,
            cluster_datasets: HashSet::new(),
            repair: HashSet::new(),
        }
    }

    /// Resolve every rule of `order`: decide what each whose inputs are known
    /// needs, start runs up to the parallelism, and collect finished runs.
    fn run(
        &mut self,
        p: &mut Project,
        order: &[String],
        intact: &HashSet<String>,
        progress: &dyn Progress,
        t0: Instant,
    ) -> std::result::Result<(), Vec<Diag>> {
        let mut remaining: Vec<String> = order.to_vec();
        let mut ready: HashMap<String, Decision> = HashMap::new();
        // Rules looked up in the remote already (a miss is not asked again).
        let mut asked: HashSet<String> = HashSet::new();
        loop {
            if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                for name in remaining.drain(..) {
                    let r = skipped(&name, "cancelled by a newer change".into());
                    self.reports.insert(name, r);
                }
            }
            let mut progressed = true;
            while progressed {
                progressed = false;
                let mut still = Vec::with_capacity(remaining.len());
                for name in std::mem::take(&mut remaining) {
                    // A rule decided to run that waits for a free slot keeps
                    // its decision (its inputs are known and fixed): deciding
                    // again looked its key up in the store on every pass.
                    let decision = match ready.remove(&name) {
                        Some(d) => d,
                        None => {
                            let view = StoreView { store: &self.store, last: &self.last, intact };
                            decide(&self.jobs[&name], &self.reports, &self.records, self.dry_run, &view)
                        }
                    };
                    match decision {
                        Decision::Wait => still.push(name),
                        Decision::Run { key, .. }
                            if !self.dry_run
                                && !asked.contains(&name)
                                && self.remote_reads()
                                && self.packed.contains(&key)
                                && let Some(record) = self.store.lookup(&key) =>
                        {
                            // Installed by the pack fetched on this first miss.
                            self.apply(p, &name, Decision::Reuse { key, record }, progress, t0)?;
                            progressed = true;
                        }
                        d @ Decision::Run { .. } if !self.dry_run && !asked.contains(&name) && self.remote_reads() => {
                            asked.insert(name.clone());
                            self.fetch(&name, d);
                        }
                        d @ Decision::Run { .. } if !self.dry_run && self.running.len() >= self.parallel => {
                            ready.insert(name.clone(), d);
                            still.push(name)
                        }
                        d => {
                            self.apply(p, &name, d, progress, t0)?;
                            progressed = true;
                        }
                    }
                }
                remaining = still;
            }
            if self.running.is_empty() && self.fetching.is_empty() {
                break;
            }
            let joined = match (self.planner.as_ref(), self.remote.as_ref()) {
                (Some(pl), _) => pl.engine().clone().block_on(self.tasks.join_next()),
                (None, Some(remote)) => remote.clone().block_on(self.tasks.join_next()),
                (None, None) => break,
            };
            let Some(joined) = joined else { break };
            let name = match &joined {
                Ok((name, _)) => name.clone(),
                Err(e) => self.task_names.get(&e.id()).cloned().unwrap_or_default(),
            };
            if let Some(decision) = self.fetching.remove(&name) {
                // A remote lookup: a hit is reused, anything else runs.
                let fetched = match joined {
                    Ok((_, Done::Fetched(f))) => f,
                    _ => crate::remote::Fetched::Miss,
                };
                match (fetched, decision) {
                    (crate::remote::Fetched::Hit(record), Decision::Run { key, .. }) => {
                        self.from_remote.insert(name.clone());
                        self.apply(p, &name, Decision::Reuse { key, record: *record }, progress, t0)?;
                    }
                    (f, d) => {
                        if let (crate::remote::Fetched::Rejected(_), Decision::Run { key, .. }) = (&f, &d) {
                            self.repair.insert(key.clone());
                        }
                        ready.insert(name.clone(), d);
                        remaining.push(name);
                    }
                }
                continue;
            }
            self.finish(p, joined, progress, t0);
        }
        Ok(())
    }

    /// Whether rules that miss locally are looked up in the remote cache
    /// (opening it on the first miss).
    fn remote_reads(&mut self) -> bool {
        self.open_remote();
        self.remote.as_ref().is_some_and(|r| r.reads())
    }

    /// Open the configured remote cache, once.
    fn open_remote(&mut self) {
        if std::mem::replace(&mut self.remote_tried, true) {
            return;
        }
        if let Some(spec) = &self.remote_spec {
            match crate::remote::Remote::open(spec) {
                Ok(r) => self.remote = r,
                Err(w) => self.remote_warning = Some(w),
            }
        }
        // One request for every output a writer's build of this same
        // workspace produced (see `crate::remote`, packs).
        if let Some(remote) = self.remote.clone().filter(|r| self.pack && r.reads()) {
            let key = self.pack_key();
            self.packed = remote.fetch_pack(&self.store, &key);
        }
    }

    /// The whole build's pack key (hashed once).
    fn pack_key(&mut self) -> String {
        let jobs = &self.jobs;
        self.pack_key.get_or_insert_with(|| pack_key(jobs.values())).clone()
    }

    /// Look a rule that missed locally up in the remote cache.
    fn fetch(&mut self, name: &str, decision: Decision) {
        let (Some(remote), Decision::Run { key, .. }) = (self.remote.clone(), &decision) else { return };
        let task = remote.clone().fetch(self.store.clone(), name.to_string(), key.clone());
        let rule = name.to_string();
        let handle = self.tasks.spawn_on(async move { (rule, Done::Fetched(task.await)) }, &remote.handle());
        self.task_names.insert(handle.id(), name.to_string());
        self.fetching.insert(name.to_string(), decision);
    }

    /// Act on a decision (other than waiting).
    fn apply(
        &mut self,
        p: &mut Project,
        name: &str,
        decision: Decision,
        progress: &dyn Progress,
        t0: Instant,
    ) -> std::result::Result<(), Vec<Diag>> {
        let report = match decision {
            Decision::Wait => return Ok(()),
            Decision::Skip(up) => skipped(name, format!("upstream `{up}` failed")),
            Decision::StaleUpstream(up) => RuleReport {
                status: Status::Stale,
                reasons: vec![format!("upstream `{up}` is stale")],
                ..skipped(name, String::new())
            },
            Decision::Reuse { key, record } => {
                if self.packed.contains(&key) && self.from_remote.insert(name.to_string()) {
                    self.pack_hits += 1;
                }
                if self.last.rules.get(name).is_none_or(|le| le.key != record.key) {
                    self.last.rules.insert(name.to_string(), LastEntry::new(&record));
                    self.last_dirty = true;
                }
                let r = RuleReport {
                    status: Status::Reused,
                    rows: Some(record.rows),
                    key: Some(key),
                    content_hash: Some(record.content_hash.clone()),
                    remote: self.from_remote.contains(name),
                    ..skipped(name, String::new())
                };
                self.records.insert(name.to_string(), record);
                r
            }
            Decision::Run { key, mut reasons, parts } if self.dry_run => {
                // An incremental rule: how much of it would run.
                if let Some(by) = self.jobs[name].decl.def.incremental.as_deref() {
                    let inc = partitions::plan(p, &self.store, &self.last, &self.records, name, by, vec![], &parts);
                    let ran = inc.partial.as_ref().map(|pt| pt.run.len());
                    reasons.push(partitions_reason(false, ran, inc.state.total, by));
                }
                RuleReport { status: Status::Stale, reasons, key: Some(key), ..skipped(name, String::new()) }
            }
            Decision::Run { key, parts, reasons } => match self.start(p, name, key.clone(), parts, t0) {
                Ok(()) => {
                    progress.started(name);
                    // The report is completed when the run finishes.
                    let r = RuleReport { status: Status::Stale, reasons, ..skipped(name, String::new()) };
                    self.reports.insert(name.to_string(), r);
                    return Ok(());
                }
                Err(StartError::Fatal(e)) => return Err(vec![e]),
                Err(StartError::Inputs(e)) => {
                    let r = RuleReport {
                        status: Status::Failed,
                        reasons,
                        error: Some(e.to_string()),
                        key: Some(key),
                        ..skipped(name, String::new())
                    };
                    self.errors.push(e.in_rule(name.to_string()));
                    r
                }
            },
        };
        progress.finished(&report);
        self.reports.insert(name.to_string(), report);
        Ok(())
    }

    /// Register a rule's inputs and spawn its execution.
    fn start(
        &mut self,
        p: &mut Project,
        name: &str,
        key: String,
        parts: crate::db::KeyParts,
        t0: Instant,
    ) -> std::result::Result<(), StartError> {
        if self.planner.is_none() {
            tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "creating session");
            let mut planner = p.planner().map_err(StartError::Fatal)?;
            planner.share_scans(shared_scan_budget(&self.spec.profile));
            self.planner = Some(planner);
            tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "session created");
        }
        if let Some(run) = self.union_run(p, name, &key, &parts).map_err(StartError::Fatal)? {
            self.spawn(name, async move {
                let rule = run.to.rule.clone();
                (rule, Done::Ran(union::execute_union(run).await))
            });
            return Ok(());
        }
        let job = &self.jobs[name];
        let Some(pl) = self.planner.as_mut() else { unreachable!("created above") };
        // Source tables: their rows are extracted (or loaded) before the
        // first rule that reads them is registered.
        for d in &job.deps {
            let Dep::Dataset(ds) = d else { continue };
            let Some(x) = self.spec.datasets.get(ds).and_then(|d| d.extract.as_ref()) else { continue };
            if pl.has_dataset(ds) {
                continue;
            }
            let facts = match self.sources.get(&x.source) {
                Some(f) => f.clone(),
                None => {
                    let (t, (parsed0, frag0)) = (Instant::now(), relspec_extract::counters());
                    let got = p.source_facts(&x.source).map_err(StartError::Inputs)?;
                    let facts = Arc::new(got.facts);
                    let (parsed1, frag1) = relspec_extract::counters();
                    self.source_reports.push(SourceReport {
                        source: x.source.clone(),
                        files: facts.len(),
                        parsed: parsed1 - parsed0,
                        from_fragments: frag1 - frag0,
                        ms: t.elapsed().as_secs_f64() * 1e3,
                        warnings: got.warnings,
                    });
                    self.sources.insert(x.source.clone(), facts.clone());
                    facts
                }
            };
            let table = x.table;
            pl.provide_source(ds, Arc::new(move || relspec_extract::table_batches(&facts, table)));
        }
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, rule = name, "sources provided");
        let mut incremental = job.decl.def.incremental.as_ref().map(|by| {
            let reads = job.deps.iter().map(|d| d.name().to_string()).collect();
            partitions::plan(p, &self.store, &self.last, &self.records, name, by, reads, &parts)
        });
        // A source's changed files' rows are at hand: the partial run scans only them.
        if let Some(inc) = incremental.as_mut()
            && let Some(pt) = inc.partial.as_mut()
            && let Some(x) = self.spec.datasets.get(&inc.by).and_then(|d| d.extract.as_ref())
            && let Some(facts) = self.sources.get(&x.source)
        {
            let ids: HashSet<&str> = pt.run.iter().map(String::as_str).collect();
            let subset: Vec<Arc<relspec_extract::FileFacts>> =
                facts.iter().filter(|f| ids.contains(f.path.as_str())).cloned().collect();
            pt.rows = Some(relspec_extract::table_batches(&subset, x.table));
        }
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, rule = name, "partitions decided");
        if let Some(inc) = incremental.as_ref().filter(|i| i.partial.is_some()) {
            pl.keep_unshared(&inc.by);
        }
        let engine = pl.engine().clone();
        // Upstream rules are read from their stored objects.
        let (records, store) = (&self.records, &self.store);
        engine
            .block_on(pl.register_inputs(&job.deps, |u| match records.get(u) {
                Some(r) => Ok(Upstream::Object(store.object_path(&r.content_hash))),
                None => Err(Diag::new(ErrorKind::Internal(format!("`{u}` has no output yet")))),
            }))
            .map_err(StartError::Inputs)?;
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "inputs registered");
        let plan = p.plan(name).map_err(StartError::Fatal)?;
        let contract = pl.contract_of(job.decl.def.produces.as_ref());
        let (partition_by, ctx) = (job.decl.def.partition_by.clone(), pl.ctx().clone());
        let cluster = self.cluster_inputs(p, name, incremental.is_some()).map_err(StartError::Fatal)?;
        let run = execute::Run {
            cluster,
            ctx,
            to: self.target(name, &key, &parts),
            plan,
            spec: self.spec.clone(),
            contract,
            partition_by,
            incremental,
        };
        self.spawn(name, async move {
            let rule = run.to.rule.clone();
            (rule, Done::Ran(execute::execute(run).await))
        });
        Ok(())
    }

    /// With `[profile] executor = "ballista"`: the cluster session (connected
    /// on first use) with `name`'s inputs registered, unless the rule reads a
    /// source's tables (rows in memory here) or runs per partition.
    fn cluster_inputs(
        &mut self,
        p: &Project,
        name: &str,
        incremental: bool,
    ) -> Result<Option<Arc<relspec_exec::cluster::Cluster>>, Diag> {
        let crate::workspace::Executor::Ballista { scheduler } = &self.spec.profile.executor else { return Ok(None) };
        let job = &self.jobs[name];
        let reads_source = job
            .deps
            .iter()
            .any(|d| matches!(d, Dep::Dataset(ds) if self.spec.datasets.get(ds).is_some_and(|d| d.extract.is_some())));
        if incremental || reads_source {
            return Ok(None);
        }
        let Some(pl) = self.planner.as_ref() else { return Ok(None) };
        let engine = pl.engine().clone();
        let cluster = match &self.cluster {
            Some(cluster) => cluster.clone(),
            None => {
                // A fresh session (the profile's options, no tables: the local
                // one's catalog must not be shared).
                let fresh = engine.session()?;
                let cluster = engine.block_on(relspec_exec::cluster::connect(&fresh, scheduler)).map_err(|e| {
                    e.with_help("check `[profile] scheduler` and that the Ballista scheduler is running")
                })?;
                let cluster = Arc::new(cluster);
                self.cluster = Some(cluster.clone());
                cluster
            }
        };
        for d in &job.deps {
            match d {
                Dep::Dataset(ds) if !self.cluster_datasets.contains(ds) => {
                    let Some(spec) = self.spec.datasets.get(ds) else { continue };
                    engine.block_on(relspec_exec::cluster::register_dataset(&cluster.ctx, &p.root, spec))?;
                    self.cluster_datasets.insert(ds.clone());
                }
                Dep::Dataset(_) => {}
                Dep::Rule(u) => {
                    let Some(r) = self.records.get(u) else { continue };
                    let object = self.store.object_path(&r.content_hash);
                    engine.block_on(relspec_exec::registry::register_output(&cluster.ctx, u, &object))?;
                }
            }
        }
        Ok(Some(cluster))
    }

    /// Run a rule's task on the engine's runtime.
    fn spawn(&mut self, name: &str, task: impl std::future::Future<Output = Task> + Send + 'static) {
        let Some(engine) = self.planner.as_ref().map(|pl| pl.engine().clone()) else {
            unreachable!("the planner exists before a rule starts")
        };
        let handle = self.tasks.spawn_on(task, &engine.handle());
        self.task_names.insert(handle.id(), name.to_string());
        self.started_at.insert(name.to_string(), Instant::now());
        self.running.insert(name.to_string());
    }

    /// The previous output of a union of rules, if it can be the start of
    /// this write: intact, of the same schema and branches, few branches
    /// changed. `last` is its object and artifact.
    fn previous_union(
        last: Option<(std::path::PathBuf, crate::bundle::Artifact)>,
        branches: &[(String, std::path::PathBuf)],
        hashes: &[String],
        schema: &datafusion::arrow::datatypes::SchemaRef,
        views: bool,
    ) -> Option<union::Previous> {
        let (object, artifact) = last?;
        let now: Vec<(String, String)> = branches.iter().map(|(n, _)| n.clone()).zip(hashes.iter().cloned()).collect();
        let changed = union::changed_branches(&artifact.merged_from, &now)?;
        let old = union::object_footers(std::slice::from_ref(&object), views).ok()?;
        (old.first()?.0.fields() == schema.fields()).then_some(union::Previous { object, changed })
    }

    /// The write of a rule that is exactly a `UNION ALL` of rules whose
    /// outputs have the same column types (see `union`), else `None`.
    fn union_run(
        &self,
        p: &mut Project,
        name: &str,
        key: &str,
        parts: &crate::db::KeyParts,
    ) -> Result<Option<union::UnionRun>, Diag> {
        let job = &self.jobs[name];
        if job.decl.def.incremental.is_some() {
            return Ok(None); // checked on its DataFusion plan
        }
        let started = Instant::now();
        // The last build's output and artifact: when it was this definition
        // (the same signature) written as a union, its branches are known
        // without compiling the rule (a 1,000-way union's SQL and every rule
        // it names: ~35 ms).
        let last = self.last.rules.get(name).and_then(|le| {
            let artifact = crate::bundle::read_artifact(&self.store, &crate::bundle::artifact_path(&le.key))?;
            Some((le.object(&self.store)?, artifact))
        });
        let names = match &last {
            Some((_, a)) if a.signature == parts.signature && !a.merged_from.is_empty() => {
                a.merged_from.iter().map(|(n, _)| n.clone()).collect()
            }
            _ => {
                let plan = p.plan(name)?;
                let Some(names) = union::branches(&plan) else { return Ok(None) };
                names
            }
        };
        let Some(pl) = self.planner.as_ref() else { return Ok(None) };
        let views = union::reads_views(pl.ctx());
        let mut branches = Vec::with_capacity(names.len());
        let mut hashes = Vec::with_capacity(names.len());
        // Each branch's schema from its record (a branch built or looked up
        // now), else from the previous union's artifact (the same object),
        // else from its object's footer; its row count from its record.
        // Each distinct list of the artifact is parsed once.
        let known: HashMap<&str, datafusion::arrow::datatypes::SchemaRef> = match &last {
            Some((_, a)) => match &a.branch_columns {
                Some(bc) if bc.views == views => {
                    let parsed: Vec<Option<datafusion::arrow::datatypes::SchemaRef>> =
                        bc.lists.iter().map(|l| union::columns_schema(l, false)).collect();
                    let of = |i: usize| parsed.get(*bc.of.get(i)? as usize)?.clone();
                    a.merged_from.iter().enumerate().filter_map(|(i, (_, h))| Some((h.as_str(), of(i)?))).collect()
                }
                _ => HashMap::new(),
            },
            None => HashMap::new(),
        };
        let mut schemas = Vec::with_capacity(names.len());
        let mut rows = Vec::with_capacity(names.len());
        for b in names {
            let is_rule = job.deps.iter().any(|d| matches!(d, Dep::Rule(r) if *r == b));
            let Some(rec) = self.records.get(&b).filter(|_| is_rule) else { return Ok(None) };
            let path = self.store.object_path(&rec.content_hash);
            schemas.push(
                union::columns_schema(&rec.schema, views).or_else(|| known.get(rec.content_hash.as_str()).cloned()),
            );
            rows.push(rec.rows);
            hashes.push(rec.content_hash.clone());
            branches.push((b, path));
        }
        let missing: Vec<usize> = (0..schemas.len()).filter(|&i| schemas[i].is_none()).collect();
        let paths: Vec<std::path::PathBuf> = missing.iter().map(|&i| branches[i].1.clone()).collect();
        let Ok(footers) = union::object_footers(&paths, views) else { return Ok(None) };
        for (i, (schema, n)) in missing.into_iter().zip(footers) {
            (schemas[i], rows[i]) = (Some(schema), n);
        }
        let schemas: Vec<_> = schemas.into_iter().flatten().collect();
        let Some(schema) = union::union_schema(&schemas) else { return Ok(None) };
        let previous = Self::previous_union(last, &branches, &hashes, &schema, views);
        tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "union: branches and previous output found");
        Ok(Some(union::UnionRun {
            ctx: pl.ctx().clone(),
            branches,
            schemas,
            schema,
            rows,
            hashes,
            previous,
            contract: pl.contract_of(job.decl.def.produces.as_ref()),
            partition_by: job.decl.def.partition_by.clone(),
            to: self.target(name, key, parts),
            started,
        }))
    }

    /// Where rule `name`'s output goes (store, key, provenance, cancellation).
    fn target(&self, name: &str, key: &str, parts: &crate::db::KeyParts) -> execute::Target {
        execute::Target {
            store: self.store.clone(),
            rule: name.to_string(),
            key: key.to_string(),
            signature: parts.signature.clone(),
            parts: serde_json::to_value(parts).ok(),
            cancel: self.cancel.clone(),
        }
    }

    /// Record a finished run.
    fn finish(
        &mut self,
        p: &mut Project,
        joined: std::result::Result<Task, tokio::task::JoinError>,
        progress: &dyn Progress,
        t0: Instant,
    ) {
        let (name, res) = match joined {
            Ok((name, Done::Ran(res))) => (name, res),
            Ok((name, Done::Fetched(_))) => {
                let diag = Diag::new(ErrorKind::Internal("a remote lookup finished as a run".into()));
                (name, Err(LowerError { diag, pos: None }))
            }
            Err(e) => {
                let name = self.task_names.get(&e.id()).cloned().unwrap_or_default();
                let diag = Diag::new(ErrorKind::Execution(format!("the engine failed on this rule: {e}")));
                (name, Err(LowerError { diag, pos: None }))
            }
        };
        self.running.remove(&name);
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, rule = name.as_str(), "rule finished");
        let elapsed = self.started_at.get(&name).map(|t| t.elapsed().as_secs_f64() * 1000.0).unwrap_or_default();
        let mut r = self.reports.remove(&name).unwrap_or_else(|| skipped(&name, String::new()));
        r.elapsed_ms = elapsed;
        match res {
            Ok(ex) => {
                r.status = Status::Built;
                r.rows = Some(ex.record.rows);
                r.key = Some(ex.record.key.clone());
                r.content_hash = Some(ex.record.content_hash.clone());
                r.kernels = ex.kernels;
                r.checks = ex.checks;
                if let Some(ps) = &ex.partitions {
                    let run = PartitionsRun {
                        by: ps.by.clone(),
                        ran: ps.delta.as_ref().and(ps.ran),
                        total: ps.total,
                        changed: ps.delta.as_ref().map(|d| d.changed.len()),
                    };
                    r.reasons.push(partitions_reason(true, run.ran, run.total, &run.by));
                    r.partitions = Some(run);
                }
                r.reasons.extend(ex.executed_on.clone());
                self.artifacts.insert(name.clone(), ex.artifact);
                self.open_remote();
                if let Some(remote) = self.remote.as_ref().filter(|r| r.writes()) {
                    let repair = self.repair.contains(&ex.record.key);
                    remote.upload(self.store.clone(), ex.record.clone(), repair);
                }
                self.last.rules.insert(name.clone(), LastEntry::new(&ex.record));
                self.last_dirty = true;
                self.records.insert(name.clone(), ex.record);
            }
            Err(e) => {
                let d = match self.jobs.get(&name) {
                    Some(job) => p.locate_error(job, e),
                    None => e.diag,
                };
                r.status = Status::Failed;
                r.error = Some(d.to_string());
                self.errors.push(d);
                // The last good output stays what the rule last resolved to:
                // it stays published, and the next build (after the input
                // is mended, or after a cancelled run in `watch`) splices
                // its changed partitions into it instead of recomputing all.
            }
        }
        progress.finished(&r);
        self.reports.insert(name, r);
    }
}

/// Why a rule could not be started.
enum StartError {
    /// Its inputs could not be registered: the rule fails, the build goes on.
    Inputs(Diag),
    /// The engine or the rule's plan is unavailable: the build stops.
    Fatal(Diag),
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
        partitions: None,
        remote: false,
    }
}

/// How much of an incremental rule ran (`done`) or would run, as a reason:
/// `recomputed 1 of 1000 partitions of `events`` (`ran`: partitions
/// recomputed; `None`: all of them).
fn partitions_reason(done: bool, ran: Option<usize>, total: Option<usize>, by: &str) -> String {
    let (re, all) = if done { ("recomputed", "computed") } else { ("would recompute", "would compute") };
    match (ran, total) {
        (Some(n), Some(t)) => format!("{re} {n} of {t} partitions of `{by}`"),
        (Some(n), None) => format!("{re} {n} changed partition(s) of `{by}`"),
        (None, _) => format!("{all} every partition of `{by}`"),
    }
}

/// How many decoded dataset bytes a build keeps in memory to share among
/// the rules that read them (all datasets together): a quarter of
/// `memory_limit`, else 1 GiB.
fn shared_scan_budget(profile: &crate::workspace::Profile) -> usize {
    profile.memory_limit.map(|l| (l / 4) as usize).unwrap_or(1 << 30)
}
