//! A loaded workspace: the salsa database, its inputs, the store and the
//! engine, plus the operations that plan without executing (check, explain,
//! datasets).

use crate::db::{self, Db, Dep, Graph, KeyParts, Loader, RelspecDb, RuleName, Workspace};
use crate::engine::{Engine, PlanSnapshots, render_physical};
use crate::error::{Diag, ErrorKind, Result};
use crate::kernels::KernelUse;
use crate::relplan::RelPlan;
use crate::store::{StatCache, Store};
use crate::workspace::{RuleDecl, WorkspaceSpec};
use datafusion::prelude::SessionContext;
use relspec_exec::lower::{self, LowerError};
use relspec_exec::planner::{Planner, Upstream};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What planning a rule without executing it yields: plans, kernel lanes, lineage.
pub type Planned = (PlanSnapshots, Vec<KernelUse>, crate::lineage::RuleLineage);

/// A workspace opened for building.
pub struct Project {
    /// Workspace root directory.
    pub root: PathBuf,
    /// The salsa database.
    pub db: RelspecDb,
    /// Path -> input side table.
    pub loader: Loader,
    /// The workspace input.
    pub ws: Workspace,
    /// Input file hashes.
    pub stat: StatCache,
    store: Option<Store>,
    engine: Option<Arc<Engine>>,
    /// Where sources are read from and their fragments kept (set on first use).
    extract_root: Option<relspec_extract::ExtractRoot>,
    /// Inputs were synced by `open` and nothing has used them since.
    fresh: bool,
    /// The manifest's path, as opened.
    pub manifest: PathBuf,
    /// The `--param` overrides it was opened with.
    pub params: Vec<(String, String)>,
    /// When the last sync of every input began (ns since the epoch); `None`
    /// after a sync of some paths only (file events, editor buffers).
    pub synced_at_ns: Option<u128>,
    /// A partial workspace's seed (see [`Project::open_partial`]): the
    /// outputs of the rules it does not load that its rules read, and its
    /// rules' cache state.
    pub(crate) seed: Option<crate::build::state::Seed>,
    partial: bool,
    /// Per dataset, its one-file partitions' fingerprints (see
    /// [`relspec_db::datasets::PartitionMemo`]).
    partition_memos: std::sync::Mutex<HashMap<String, relspec_db::datasets::PartitionMemo>>,
    /// Per source, its facts as of the last [`Project::source_facts`].
    source_memos: HashMap<String, SourceMemo>,
}

/// A source's extracted facts, per file in listing order, and what its
/// files' extraction warned about (skipped files, syntax errors).
pub struct SourceFacts {
    /// Each file's facts.
    pub facts: Vec<Arc<relspec_extract::FileFacts>>,
    /// One line per warning, with the file's path.
    pub warnings: Vec<String>,
}

/// A source's facts and warnings from the last call, with the file inputs
/// and content hashes they were computed for.
struct SourceMemo {
    files: Vec<(relspec_db::DataFile, String)>,
    fragments: Option<PathBuf>,
    language: Option<String>,
    facts: Vec<Arc<relspec_extract::FileFacts>>,
    warnings: Vec<Vec<String>>,
}

/// What extracting one file warns about.
fn file_warnings(f: &relspec_extract::FileFacts) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = f.skipped() {
        out.push(format!("{}: skipped ({why})", f.path));
    }
    for (line, col, msg) in f.syntax_errors() {
        out.push(format!("{}:{}:{}: {msg}", f.path, line + 1, col + 1));
    }
    out
}

/// Everything a rule needs to be planned or executed, detached from salsa.
#[derive(Debug, Clone)]
pub struct RuleJob {
    /// Rule name.
    pub name: String,
    /// Reads, params and signature.
    pub summary: Arc<db::RuleSummary>,
    /// What it reads.
    pub deps: Vec<Dep>,
    /// Static key parts.
    pub parts: Arc<KeyParts>,
    /// Declaration (for diagnostics).
    pub decl: Arc<RuleDecl>,
}

impl Project {
    /// Open the workspace whose manifest is at `manifest` and load its inputs.
    pub fn open(manifest: &Path) -> Result<Project> {
        Self::open_with(manifest, RelspecDb::default())
    }

    /// Open with `--param name=value` overrides applied over `[params]`.
    pub fn open_with_params(manifest: &Path, params: &[(String, String)]) -> Result<Project> {
        Self::open_opts(manifest, RelspecDb::default(), params)
    }

    /// Open with a given (for example, logging) database.
    pub fn open_with(manifest: &Path, db: RelspecDb) -> Result<Project> {
        Self::open_opts(manifest, db, &[])
    }

    /// Open part of the workspace: only the rule files `files` (relative,
    /// sorted), knowing the rules `frozen` of the other files by name (their
    /// outputs are the caller's to provide, see [`crate::snapshot`]).
    pub fn open_partial(
        manifest: &Path,
        params: &[(String, String)],
        files: Vec<String>,
        frozen: std::collections::BTreeSet<String>,
    ) -> Result<Project> {
        Self::open_loader(manifest, RelspecDb::default(), params, Some((files, frozen)))
    }

    fn open_opts(manifest: &Path, db: RelspecDb, params: &[(String, String)]) -> Result<Project> {
        Self::open_loader(manifest, db, params, None)
    }

    fn open_loader(
        manifest: &Path,
        db: RelspecDb,
        params: &[(String, String)],
        partial: Option<(Vec<String>, std::collections::BTreeSet<String>)>,
    ) -> Result<Project> {
        tracing::debug!("opening the workspace");
        if !manifest.is_file() {
            return Err(Diag::new(ErrorKind::Io(format!("{}: no such file", manifest.display())))
                .with_help("run relspec in a directory with a workspace.toml, pass --workspace PATH, or create one with `relspec init DIR`"));
        }
        let mut loader =
            Loader::new(manifest, crate::engine::info()).with_param_overrides(params.to_vec()).with_remote_lister(
                crate::db::datasets::RemoteLister(std::sync::Arc::new(|ds: &crate::workspace::DatasetSpec| {
                    let ext = if ds.path.ends_with('/') { ds.format.extension() } else { "" };
                    relspec_exec::object_stores::list_files(&ds.path, ext, relspec_exec::object_stores::DATASETS)
                })),
            );
        let partial = match partial {
            Some((files, frozen)) => {
                loader = loader.with_rule_files(files, frozen);
                true
            }
            None => false,
        };
        let root = loader.root().to_path_buf();
        let mut db = db;
        let stat = StatCache::default();
        let t0 = std::time::Instant::now();
        let ws = loader.sync_manifest(&mut db)?;
        let mut p = Project {
            root,
            db,
            loader,
            ws,
            stat,
            store: None,
            engine: None,
            extract_root: None,
            fresh: false,
            manifest: manifest.to_path_buf(),
            params: params.to_vec(),
            synced_at_ns: None,
            seed: None,
            partial,
            partition_memos: Default::default(),
            source_memos: HashMap::new(),
        };
        if let Ok(spec) = p.spec() {
            let store = Store::open(&spec.cache_path(&p.root))?;
            // Reload with the persistent stat cache so unchanged files are not hashed.
            p.stat = StatCache::load(&store);
            p.db.summaries().replace(if partial {
                db::SummaryCache::unloaded()
            } else {
                db::SummaryCache::load(&store.dir().join(db::SUMMARIES_FILE))
            });
            p.store = Some(store);
            tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "caches loaded");
        }
        p.synced_at_ns = Some(crate::store::now_ns());
        p.ws = p.loader.sync(&mut p.db, &mut p.stat)?;
        p.fresh = true;
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "inputs synced");
        Ok(p)
    }

    /// Whether only some rule files are loaded (see [`Project::open_partial`]).
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Re-read sources and re-stat data files; set only inputs that changed.
    pub fn refresh(&mut self) -> Result<()> {
        if std::mem::take(&mut self.fresh) {
            return Ok(());
        }
        self.synced_at_ns = Some(crate::store::now_ns());
        self.ws = self.loader.sync(&mut self.db, &mut self.stat)?;
        if self.store.is_none()
            && let Ok(spec) = self.spec()
        {
            self.store = Some(Store::open(&spec.cache_path(&self.root))?);
        }
        Ok(())
    }

    /// Sync only the inputs that `changed` paths (from file events) can
    /// affect; the next `build` will not sync again. A change of the manifest
    /// syncs everything.
    pub fn sync_paths(&mut self, changed: &[PathBuf]) -> Result<()> {
        self.synced_at_ns = None;
        self.ws = self.loader.sync_paths(&mut self.db, &mut self.stat, changed)?;
        if self.store.is_none()
            && let Ok(spec) = self.spec()
        {
            self.store = Some(Store::open(&spec.cache_path(&self.root))?);
        }
        self.fresh = true;
        Ok(())
    }

    /// Read workspace file `path` (absolute or relative to the root) from an
    /// editor's unsaved `text`, or from the disk again (`None`), and sync what
    /// it affects.
    pub fn set_buffer(&mut self, path: &Path, text: Option<String>) -> Result<()> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path).to_path_buf();
        self.loader.set_overlay(&rel, text);
        self.sync_paths(&[rel])
    }

    /// Sync inputs now; the next `build` will not sync again.
    pub fn sync_now(&mut self) -> Result<()> {
        self.fresh = false;
        self.refresh()?;
        self.fresh = true;
        Ok(())
    }

    /// The parsed manifest.
    pub fn spec(&self) -> Result<Arc<WorkspaceSpec>> {
        db::manifest_spec(&self.db, self.ws).clone()
    }

    /// The store (after a successful parse of the manifest).
    pub fn store(&self) -> Result<&Store> {
        self.store.as_ref().ok_or_else(|| Diag::new(ErrorKind::Store("the workspace could not be loaded".into())))
    }

    /// The rule DAG and every static error.
    pub fn graph(&self) -> &Graph {
        db::graph(&self.db, self.ws)
    }

    /// The engine, created on first use.
    pub fn engine(&mut self) -> Result<Arc<Engine>> {
        if let Some(e) = &self.engine {
            return Ok(e.clone());
        }
        let spec = self.spec()?;
        let e = Arc::new(Engine::new(&spec.profile, &self.root)?);
        self.engine = Some(e.clone());
        Ok(e)
    }

    /// The facts of every file of source `source` (see `relspec_extract`):
    /// memoized per file, read from the cache's fragments, parsed (in
    /// parallel) only where neither has them.
    pub fn source_facts(&mut self, source: &str) -> Result<SourceFacts> {
        let spec = self.spec()?;
        let Some(ds) = spec.datasets.values().find(|d| d.extract.as_ref().is_some_and(|x| x.source == source)) else {
            return Err(Diag::new(ErrorKind::Internal(format!("no source `{source}`"))));
        };
        let files = match self.ws.datasets(&self.db).get(&ds.name) {
            Some(Ok(files)) => files.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(Diag::new(ErrorKind::Internal(format!("source `{source}` is not loaded")))),
        };
        let fragments = self.store().ok().map(|s| s.dir().join(crate::store::layout::FRAGMENTS));
        let root = match self.extract_root {
            Some(r) => {
                use salsa::Setter;
                if r.fragments(&self.db) != &fragments {
                    r.set_fragments(&mut self.db).to(fragments.clone());
                }
                r
            }
            None => {
                let r = relspec_extract::ExtractRoot::new(&self.db, self.root.clone(), fragments.clone());
                self.extract_root = Some(r);
                r
            }
        };
        let language = ds.extract.as_ref().and_then(|x| x.language.clone());
        // The same files as last time (a resident process): only those whose
        // content changed are asked for again, not every file's memo.
        let memo = self.source_memos.remove(source).filter(|m| {
            m.fragments == fragments
                && m.language == language
                && m.files.len() == files.len()
                && m.files.iter().zip(&files).all(|((a, _), b)| a == b)
        });
        let memo = match memo {
            Some(mut m) => {
                let changed: Vec<usize> =
                    (0..files.len()).filter(|&i| &m.files[i].1 != files[i].hash(&self.db)).collect();
                if !changed.is_empty() {
                    let subset: Vec<relspec_db::DataFile> = changed.iter().map(|&i| files[i]).collect();
                    let fresh = relspec_extract::collect(&self.db, root, &subset, language.as_deref());
                    for (f, &i) in fresh.into_iter().zip(&changed) {
                        m.warnings[i] = file_warnings(&f);
                        m.facts[i] = f;
                        m.files[i].1 = files[i].hash(&self.db).clone();
                    }
                }
                m
            }
            None => {
                let facts = relspec_extract::collect(&self.db, root, &files, language.as_deref());
                SourceMemo {
                    files: files.iter().map(|f| (*f, f.hash(&self.db).clone())).collect(),
                    fragments,
                    language,
                    warnings: facts.iter().map(|f| file_warnings(f)).collect(),
                    facts,
                }
            }
        };
        let out =
            SourceFacts { facts: memo.facts.clone(), warnings: memo.warnings.iter().flatten().cloned().collect() };
        self.source_memos.insert(source.to_string(), memo);
        Ok(out)
    }

    /// Drop the engine (after a profile change).
    pub fn reset_engine(&mut self) {
        self.engine = None;
    }

    /// Static errors (parse, names, cycles, missing data), in a stable order.
    pub fn static_errors(&self) -> Vec<Diag> {
        let mut errs = self.graph().errors.clone();
        if let Err(e) = self.spec()
            && !errs.contains(&e)
        {
            errs.insert(0, e);
        }
        errs
    }

    /// The declaration of a rule.
    pub fn decl(&self, name: &str) -> Option<&Arc<RuleDecl>> {
        db::rule_index(&self.db, self.ws).decls.get(name)
    }

    /// A detached job for `name`: everything needed to plan or execute it.
    /// Fails with the reason when the rule cannot be keyed (unknown rule, a
    /// compile error, an unknown contract or param, an unlistable dataset).
    pub fn job(&self, name: &str) -> Result<RuleJob> {
        let decl =
            self.decl(name).ok_or_else(|| Diag::new(ErrorKind::Usage(format!("no rule named `{name}`"))))?.clone();
        let rn = RuleName::new(&self.db, name.to_string());
        let summary = db::rule_summary(&self.db, self.ws, rn).as_ref().map_err(|e| e.diag.clone())?.clone();
        let parts = db::static_key(&self.db, self.ws, rn).map_err(|e| e.in_rule(name.to_string()))?;
        Ok(RuleJob {
            name: name.to_string(),
            summary,
            deps: self.graph().deps.get(name).cloned().unwrap_or_default(),
            parts,
            decl,
        })
    }

    /// Jobs for `names`, in order; the errors of those that have none.
    pub fn jobs(&self, names: &[String]) -> (Vec<RuleJob>, Vec<Diag>) {
        let mut jobs = Vec::with_capacity(names.len());
        let mut errors = Vec::new();
        for n in names {
            match self.job(n) {
                Ok(j) => jobs.push(j),
                Err(e) => errors.push(e),
            }
        }
        (jobs, errors)
    }

    /// The compiled RelPlan of a rule (parses its SQL if not done in this process).
    pub fn plan(&self, name: &str) -> Result<Arc<RelPlan>> {
        let rn = RuleName::new(&self.db, name.to_string());
        match db::compile_rule(&self.db, self.ws, rn) {
            Ok(c) => Ok(Arc::new(c.0.clone())),
            Err(e) => Err(e.diag.clone()),
        }
    }

    /// Give a lowering error its file location inside the rule.
    pub fn locate_error(&self, job: &RuleJob, e: LowerError) -> Diag {
        let len = match &e.diag.kind {
            ErrorKind::UnknownTable { name } => name.len(),
            // "column 'x' not found", "column 'x' is ambiguous": underline the name.
            ErrorKind::Plan(m) if m.starts_with("column '") => {
                m["column '".len()..].find('\'').map(|end| end.max(1)).unwrap_or(1)
            }
            _ => 1,
        };
        db::diag_in_rule(&self.db, self.ws, &job.decl, e.diag, e.pos, len)
    }

    /// Source text of a workspace file (for rendering diagnostics).
    pub fn file_text(&self, path: &Path) -> Option<String> {
        db::file_text(&self.db, self.ws, path).map(str::to_string)
    }

    /// Rule names selected by `select` (dbt-style: `name`, `name+`, `+name`,
    /// `tag:x`); all rules when empty. Errors name unknown selectors.
    pub fn select(&self, select: &[String]) -> Result<Vec<String>> {
        let g = self.graph();
        if select.is_empty() {
            return Ok(g.order.clone());
        }
        let idx = db::rule_index(&self.db, self.ws);
        let mut chosen = HashSet::new();
        for s in select.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let (up, rest) = match s.strip_prefix('+') {
                Some(r) => (true, r),
                None => (false, s),
            };
            let (down, base) = match rest.strip_suffix('+') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let roots: Vec<String> = if let Some(tag) = base.strip_prefix("tag:") {
                idx.decls.values().filter(|d| d.def.tags.iter().any(|t| t == tag)).map(|d| d.name.clone()).collect()
            } else if idx.decls.contains_key(base) {
                vec![base.to_string()]
            } else {
                let mut d = Diag::new(ErrorKind::Usage(format!("--select: no rule named `{base}`")));
                if let Some(s) = lower::suggest(base, idx.decls.keys()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                return Err(d);
            };
            if roots.is_empty() {
                return Err(Diag::new(ErrorKind::Usage(format!("--select: no rule has tag `{}`", &base[4..]))));
            }
            for r in roots {
                chosen.insert(r.clone());
                if up {
                    chosen.extend(self.upstream(&r));
                }
                if down {
                    chosen.extend(self.downstream(&r));
                }
            }
        }
        Ok(g.order.iter().filter(|r| chosen.contains(*r)).cloned().collect())
    }

    /// Every rule `name` reads, transitively.
    pub fn upstream(&self, name: &str) -> HashSet<String> {
        let g = self.graph();
        let mut out = HashSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(r) = stack.pop() {
            for d in g.deps.get(&r).into_iter().flatten() {
                if let Dep::Rule(u) = d
                    && out.insert(u.clone())
                {
                    stack.push(u.clone());
                }
            }
        }
        out
    }

    /// `targets` and every rule they read, transitively, in dependency order.
    pub fn with_upstream(&self, targets: &[String]) -> Vec<String> {
        let g = self.graph();
        let mut need: HashSet<String> = targets.iter().cloned().collect();
        // When every rule is a target (a plain `build`) there is nothing to add.
        if !g.order.iter().all(|r| need.contains(r)) {
            for t in targets {
                need.extend(self.upstream(t));
            }
        }
        g.order.iter().filter(|r| need.contains(*r)).cloned().collect()
    }

    /// Every rule that reads `name`, transitively.
    pub fn downstream(&self, name: &str) -> HashSet<String> {
        let g = self.graph();
        let mut out = HashSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(r) = stack.pop() {
            for (u, ds) in &g.deps {
                if ds.contains(&Dep::Rule(r.clone())) && out.insert(u.clone()) {
                    stack.push(u.clone());
                }
            }
        }
        out
    }

    /// One rule through the Planner, as `check` and `explain` plan it:
    /// register what it reads (`upstream` says how rules are seen), then
    /// prepare it (lower + contract checks). Errors are located in the rule.
    pub fn prepare_job(
        &self,
        planner: &mut Planner,
        job: &RuleJob,
        upstream: impl FnMut(&str) -> Result<Upstream>,
    ) -> Result<relspec_exec::lower::Lowered> {
        let engine = planner.engine().clone();
        engine.block_on(planner.register_inputs(&job.deps, upstream)).map_err(|e| e.in_rule(job.name.clone()))?;
        let plan = self.plan(&job.name)?;
        let contract = planner.contract_of(job.decl.def.produces.as_ref());
        let lowered =
            engine.block_on(planner.prepare(&plan, contract.as_ref())).map_err(|e| self.locate_error(job, e))?;
        let have: Vec<&str> = lowered.df.schema().fields().iter().map(|f| f.name().as_str()).collect();
        lower::check_partition_by(&have, &job.decl.def.partition_by)
            .map_err(|d| self.locate_error(job, LowerError { diag: d, pos: None }))?;
        if let Some(by) = &job.decl.def.incremental {
            let reads: Vec<&str> = job.deps.iter().map(Dep::name).collect();
            relspec_exec::distributive::check_declaration(by, &lowered.body, self.by_input(by), &reads)
                .map_err(|d| self.locate_error(job, LowerError { diag: d, pos: None }))?;
        }
        Ok(lowered)
    }

    /// What an `incremental = { by }` declaration names: a dataset and its
    /// partition key, or a rule and (if it is incremental itself) the key it
    /// inherits from its own `by`.
    pub fn by_input(&self, by: &str) -> Option<relspec_exec::distributive::ByInput> {
        use relspec_exec::distributive::{ByInput, partition_key};
        let spec = self.spec().ok()?;
        let mut name = by.to_string();
        // Follow rules' declarations down to a dataset (bounded: a cycle is a static error).
        for depth in 0..64 {
            if let Some(key) = partition_key(&spec, &name) {
                return Some(if depth == 0 { ByInput::Dataset(key) } else { ByInput::Rule(key) });
            }
            match self.decl(&name)?.def.incremental.clone() {
                Some(next) => name = next,
                None => return Some(ByInput::PlainRule),
            }
        }
        None
    }

    /// Each partition of dataset `name` (see `relspec_db::datasets::partitions`).
    pub fn dataset_partitions(&self, name: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let spec = self.spec()?;
        let ds =
            spec.datasets.get(name).ok_or_else(|| Diag::new(ErrorKind::Internal(format!("no dataset `{name}`"))))?;
        match self.ws.datasets(&self.db).get(name) {
            Some(Ok(files)) => {
                let mut memos = self.partition_memos.lock().unwrap_or_else(|e| e.into_inner());
                let memo = memos.entry(name.to_string()).or_default();
                let pairs = files.iter().map(|f| (f.path(&self.db).as_str(), f.hash(&self.db).as_str()));
                Ok(relspec_db::datasets::partitions_memo(ds, pairs, memo))
            }
            Some(Err(e)) => Err(e.clone()),
            None => Err(Diag::new(ErrorKind::Internal(format!("dataset `{name}` is not loaded")))),
        }
    }

    /// A planner on a fresh session of the engine.
    pub fn planner(&mut self) -> Result<Planner> {
        let engine = self.engine()?;
        Planner::new(engine, self.spec()?, &self.root)
    }

    /// Plan every rule in `rules` (and what they read) without executing:
    /// upstream rules are registered as views. Returns each rule's snapshots
    /// and kernel uses, and every error found (planning continues past errors;
    /// rules downstream of a failed rule are skipped).
    pub fn plan_all(&mut self, rules: &[String]) -> Result<(BTreeMap<String, Planned>, Vec<Diag>)> {
        let errs = self.static_errors();
        if !errs.is_empty() {
            return Ok((BTreeMap::new(), errs));
        }
        let mut need: HashSet<String> = rules.iter().cloned().collect();
        for r in rules {
            need.extend(self.upstream(r));
        }
        let order: Vec<String> = self.graph().order.iter().filter(|r| need.contains(*r)).cloned().collect();
        let (jobs, errors) = self.jobs(&order);
        if !errors.is_empty() {
            return Ok((BTreeMap::new(), errors));
        }
        let mut planner = match self.planner() {
            Ok(x) => x,
            Err(e) => return Ok((BTreeMap::new(), vec![e])),
        };
        let engine = planner.engine().clone();
        let mut out = BTreeMap::new();
        let mut errors = Vec::new();
        let mut failed: HashSet<String> = HashSet::new();
        // Upstream rules are views over their plans (registered as each is planned).
        let mut views: BTreeMap<String, datafusion::dataframe::DataFrame> = BTreeMap::new();
        for job in jobs {
            if job.deps.iter().any(|d| matches!(d, Dep::Rule(u) if failed.contains(u))) {
                failed.insert(job.name.clone());
                continue;
            }
            let prepared = self.prepare_job(&mut planner, &job, |u| {
                views
                    .get(u)
                    .cloned()
                    .map(Upstream::View)
                    .ok_or_else(|| Diag::new(ErrorKind::Internal(format!("`{u}` was not planned"))))
            });
            let ctx = planner.ctx().clone();
            let res = prepared.and_then(|l| {
                let snaps = engine
                    .block_on(snapshots(&ctx, &l.df))
                    .map_err(|e| self.locate_error(&job, lower::df_error(e, ErrorKind::Plan)))?;
                Ok((l.df.clone(), (snaps, l.kernels, crate::lineage::of_plan(&l.body))))
            });
            match res {
                Ok((df, v)) => {
                    views.insert(job.name.clone(), df);
                    out.insert(job.name.clone(), v);
                }
                Err(e) => {
                    errors.push(e);
                    failed.insert(job.name.clone());
                }
            }
        }
        Ok((out, errors))
    }
}

/// Logical, optimized and physical plans and SQL of a DataFrame (no execution).
pub async fn snapshots(
    ctx: &SessionContext,
    df: &datafusion::dataframe::DataFrame,
) -> datafusion::error::Result<PlanSnapshots> {
    Ok(plan_with_snapshots(ctx, df).await?.0)
}

/// The physical plan of `df` and its snapshots, optimizing once (the plan
/// that is shown is the plan that runs).
pub async fn plan_with_snapshots(
    ctx: &SessionContext,
    df: &datafusion::dataframe::DataFrame,
) -> datafusion::error::Result<(PlanSnapshots, std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>)> {
    let state = ctx.state();
    let logical = df.logical_plan().clone();
    let optimized = state.optimize(&logical)?;
    let physical = state.query_planner().create_physical_plan(&optimized, &state).await?;
    let sql = datafusion::sql::unparser::plan_to_sql(&logical).ok().map(|s| s.to_string());
    let snaps = PlanSnapshots {
        logical: logical.display_indent().to_string(),
        optimized: optimized.display_indent().to_string(),
        physical: render_physical(physical.as_ref(), false),
        physical_metrics: None,
        sql,
    };
    Ok((snaps, physical))
}

/// One dataset as the registry sees it (for `relspec datasets`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatasetInfo {
    /// Logical name.
    pub name: String,
    /// Location as declared.
    pub location: String,
    /// `file`, `dir` or `glob`.
    pub kind: String,
    /// Format.
    pub format: String,
    /// Scan options.
    pub options: crate::workspace::ScanOptions,
    /// Files (relative paths) with content hashes.
    pub files: Vec<(String, String)>,
    /// Schema as registered (partition columns included).
    pub schema: Vec<crate::store::ColumnInfo>,
    /// Fingerprint.
    pub fingerprint: String,
}

/// Describe every dataset: location, options, files, schema, fingerprint.
pub fn dataset_infos(p: &mut Project) -> std::result::Result<Vec<DatasetInfo>, Vec<Diag>> {
    let (infos, errors) = dataset_infos_partial(p).map_err(|e| vec![e])?;
    if errors.is_empty() { Ok(infos) } else { Err(errors) }
}

/// Describe every dataset that can be described, and why the others cannot.
pub fn dataset_infos_partial(p: &mut Project) -> Result<(Vec<DatasetInfo>, Vec<Diag>)> {
    let spec = p.spec()?;
    let fps = db::dataset_fingerprints(&p.db, p.ws).clone();
    let mut errors = Vec::new();
    let mut infos = Vec::new();
    let planner = p.planner()?;
    let (engine, ctx) = (planner.engine().clone(), planner.ctx().clone());
    for (name, ds) in &spec.datasets {
        let files: Vec<(String, String)> = match p.ws.datasets(&p.db).get(name) {
            Some(Ok(fs)) => fs.iter().map(|f| (f.path(&p.db).clone(), f.hash(&p.db).clone())).collect(),
            Some(Err(e)) => {
                errors.push(e.clone());
                continue;
            }
            None => continue,
        };
        let schema = match engine.block_on(crate::registry::register(&ctx, &p.root, ds)) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        infos.push(DatasetInfo {
            name: name.clone(),
            location: ds.path.clone(),
            kind: format!("{:?}", crate::registry::location_kind(&p.root, &ds.path)).to_lowercase(),
            format: format!("{:?}", ds.format).to_lowercase(),
            options: ds.scan.clone(),
            files,
            schema: schema
                .fields()
                .iter()
                .map(|f| crate::store::ColumnInfo {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
            fingerprint: fps.get(name).and_then(|f| f.as_ref().ok()).cloned().unwrap_or_default(),
        });
    }
    Ok((infos, errors))
}
