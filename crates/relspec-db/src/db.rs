//! The salsa database: inputs (source texts, data file hashes) and the tracked
//! queries from text to output keys.
//!
//! Inputs follow ruff_db's `Files`: a side table ([`Loader`]) maps paths to
//! salsa inputs; a sync re-reads or re-stats files and sets an input only when
//! its value really changed (salsa setters always bump the revision).
//!
//! Architecture invariant: every tracked query here is cheap and schema-free:
//! text -> spec -> RelPlan -> signature -> static output key. DataFusion
//! planning and execution happen in `build`, keyed by the output keys computed
//! here, so a no-op build never plans.

use crate::error::{Diag, ErrorKind, line_col, offset_of};
use crate::relplan::{self, CompileError, ReadSite, RelPlan, SourcePos};
use crate::store::StatCache;
use crate::workspace::{self, RuleDecl, RuleDef, RuleOrigin, WorkspaceSpec};
use relspec_spec::key::KeyHasher;
use relspec_spec::suggest::suggest;
use salsa::Setter;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A source file (workspace.toml or an included rule file) and its text.
#[salsa::input(debug)]
pub struct SourceFile {
    /// Path relative to the workspace root.
    #[returns(ref)]
    pub path: PathBuf,
    /// Full text.
    #[returns(ref)]
    pub text: String,
}

/// A data file and its content hash (hashed outside salsa via the stat cache).
#[salsa::input(debug)]
pub struct DataFile {
    /// Path relative to the workspace root.
    #[returns(ref)]
    pub path: String,
    /// blake3 of its bytes.
    #[returns(ref)]
    pub hash: String,
}

/// The files of one dataset, or why they could not be listed.
pub type DatasetFiles = Result<Vec<DataFile>, Diag>;

/// The workspace: its manifest, included rule files and dataset file lists.
#[salsa::input(debug)]
pub struct Workspace {
    /// The execution layer's versions (see [`EngineInfo`]); set once.
    #[returns(ref)]
    pub engine: EngineInfo,
    /// `workspace.toml`.
    pub manifest: SourceFile,
    /// Included rule files, sorted by path.
    #[returns(ref)]
    pub rule_files: Vec<SourceFile>,
    /// Dataset name -> its files.
    #[returns(ref)]
    pub datasets: BTreeMap<String, DatasetFiles>,
    /// `--param name=value` overrides, applied over `[params]`; set once.
    #[returns(ref)]
    pub param_overrides: Vec<(String, String)>,
    /// Rules declared in files this workspace did not load (a partial
    /// workspace, see [`Loader::with_rule_files`]): reading one is reading a
    /// rule whose output is known; they are not part of the order. Set once.
    #[returns(ref)]
    pub frozen: BTreeSet<String>,
}

/// What the engine contributes to every output key: a digest of the versions
/// of the execution layer (relspec, DataFusion, the Parquet writer, every
/// kernel and its lane). The exec layer computes it; the database only hashes
/// it together with the profile's semantic fields, so this crate needs no
/// DataFusion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EngineInfo {
    /// Digest of the engine's versions.
    pub versions: String,
}

/// The engine fingerprint of a profile under an engine: its versions, the
/// RelPlan version and the semantic profile fields. Tuning fields
/// (target_partitions, batch_size, memory limit and pool, spill dir) are left
/// out: they cannot change results.
pub fn engine_fingerprint_of(engine: &EngineInfo, profile: &workspace::Profile) -> String {
    KeyHasher::new("relspec/engine/v1")
        .field("versions", &engine.versions)
        .field("relplan", relplan::RELPLAN_VERSION)
        .field("catalog", &profile.catalog)
        .field("schema", &profile.schema)
        .bool("information_schema", profile.information_schema)
        .opt("time_zone", profile.time_zone.as_deref())
        .finish()
}

/// A rule name, interned.
#[salsa::interned(debug)]
pub struct RuleName<'db> {
    /// The name.
    #[returns(ref)]
    pub text: String,
}

/// The relspec database.
#[salsa::db]
#[derive(Clone)]
pub struct RelspecDb {
    storage: salsa::Storage<Self>,
    log: Option<Arc<Mutex<Vec<String>>>>,
    summaries: Arc<SummaryCache>,
}

impl Default for RelspecDb {
    fn default() -> Self {
        RelspecDb { storage: salsa::Storage::new(None), log: None, summaries: Arc::default() }
    }
}

impl RelspecDb {
    /// A database that records the name of every query it executes (for tests).
    pub fn with_log() -> (Self, Arc<Mutex<Vec<String>>>) {
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = log.clone();
        let storage = salsa::Storage::new(Some(Box::new(move |event: salsa::Event| {
            if let salsa::EventKind::WillExecute { database_key } = event.kind {
                l.lock().unwrap().push(format!("{database_key:?}"));
            }
        })));
        (RelspecDb { storage, log: Some(log.clone()), summaries: Arc::default() }, log)
    }

    /// Executed-query log, if enabled.
    pub fn log(&self) -> Option<&Arc<Mutex<Vec<String>>>> {
        self.log.as_ref()
    }
}

#[salsa::db]
impl salsa::Database for RelspecDb {}

/// The database as tracked queries see it.
#[salsa::db]
pub trait Db: salsa::Database {
    /// The persistent memo of rule summaries (text hash -> reads, params, signature).
    fn summaries(&self) -> &SummaryCache;
}

#[salsa::db]
impl Db for RelspecDb {
    fn summaries(&self) -> &SummaryCache {
        &self.summaries
    }
}

/// What the build needs of a compiled rule, without the IR itself: the table
/// names it reads, the params it binds and its signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleSummary {
    /// Tables read, sorted.
    pub reads: Vec<String>,
    /// Params bound, sorted.
    pub params: Vec<String>,
    /// Plan signature.
    pub signature: String,
    /// Where each read first appears.
    pub sites: Vec<ReadSite>,
}

/// A memo of [`RuleSummary`] by the hash of the rule's definition, persisted
/// in the store so a fresh process parses no unchanged rule. It memoizes a
/// pure function of the definition, so reading it inside tracked queries is safe.
#[derive(Debug, Default)]
pub struct SummaryCache {
    map: Mutex<HashMap<String, Arc<RuleSummary>>>,
    added: Mutex<Vec<String>>,
    lines: std::sync::atomic::AtomicUsize,
    /// The file holds lines of other code (not loaded; rewritten at the next save).
    foreign: std::sync::atomic::AtomicBool,
    /// The file was not loaded: saving only appends.
    unloaded: std::sync::atomic::AtomicBool,
}

/// One line of `rule-summaries.jsonl`: the memo version of the code that
/// wrote it ([`memo_version`]), the key ([`summary_key`]) and the summary.
#[derive(serde::Serialize, serde::Deserialize)]
struct SummaryLine {
    #[serde(default)]
    m: String,
    k: String,
    v: RuleSummary,
}

impl SummaryCache {
    /// Load from a JSON-lines file (empty if absent; unreadable lines are skipped).
    pub fn load(path: &Path) -> Self {
        let (entries, lines) = crate::store::load_jsonl::<SummaryLine>(path);
        let version = memo_version();
        let mut foreign = false;
        let map = entries
            .into_iter()
            .filter(|e| {
                let ours = e.m == version;
                foreign |= !ours;
                ours
            })
            .map(|e| (e.k, Arc::new(e.v)))
            .collect();
        SummaryCache {
            map: Mutex::new(map),
            added: Mutex::default(),
            lines: lines.into(),
            foreign: foreign.into(),
            unloaded: false.into(),
        }
    }

    /// A memo whose file is not read (a partial workspace compiles a few
    /// rules): saving appends what was added and never rewrites the file.
    pub fn unloaded() -> Self {
        SummaryCache { unloaded: true.into(), ..Default::default() }
    }
    /// Replace the contents with another cache's.
    pub fn replace(&self, other: SummaryCache) {
        *self.map.lock().unwrap() = other.map.into_inner().unwrap();
        self.lines.store(other.lines.into_inner(), std::sync::atomic::Ordering::Relaxed);
        self.foreign.store(other.foreign.into_inner(), std::sync::atomic::Ordering::Relaxed);
        self.unloaded.store(other.unloaded.into_inner(), std::sync::atomic::Ordering::Relaxed);
    }
    /// Append what was added since loading (see [`crate::store::Store::save_jsonl`]).
    pub fn save(&self, store: &crate::store::Store) -> Result<(), Diag> {
        let added = std::mem::take(&mut *self.added.lock().unwrap());
        if added.is_empty() {
            return Ok(());
        }
        let map = self.map.lock().unwrap();
        let m = memo_version();
        let line = |k: &String| map.get(k).map(|v| SummaryLine { m: m.to_string(), k: k.clone(), v: (**v).clone() });
        let added: Vec<SummaryLine> = added.iter().filter_map(line).collect();
        let all = || {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            keys.into_iter().filter_map(line).collect()
        };
        if self.unloaded.load(std::sync::atomic::Ordering::Relaxed) {
            return store.append_jsonl(&store.dir().join(SUMMARIES_FILE), &added);
        }
        let lines = self.lines.load(std::sync::atomic::Ordering::Relaxed);
        let foreign = self.foreign.swap(false, std::sync::atomic::Ordering::Relaxed);
        let n = store.save_jsonl(&store.dir().join(SUMMARIES_FILE), lines, foreign, map.len(), &added, all)?;
        self.lines.store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn get(&self, k: &str) -> Option<Arc<RuleSummary>> {
        self.map.lock().unwrap().get(k).cloned()
    }
    fn insert(&self, k: String, v: Arc<RuleSummary>) {
        self.map.lock().unwrap().insert(k.clone(), v);
        self.added.lock().unwrap().push(k);
    }
}

/// File name of the summary memo under the cache dir.
pub const SUMMARIES_FILE: &str = crate::store::layout::SUMMARIES;

/// The parsed manifest.
#[salsa::tracked(returns(ref))]
pub fn manifest_spec(db: &dyn Db, ws: Workspace) -> Result<Arc<WorkspaceSpec>, Diag> {
    let f = ws.manifest(db);
    let mut spec = workspace::parse_manifest(f.path(db), f.text(db))?;
    workspace::apply_param_overrides(&mut spec, ws.param_overrides(db))?;
    Ok(Arc::new(spec))
}

/// The rules declared in one included file.
#[salsa::tracked(returns(ref))]
pub fn rule_file_decls(db: &dyn Db, file: SourceFile) -> Result<Vec<Arc<RuleDecl>>, Diag> {
    Ok(workspace::parse_rule_file(file.path(db), file.text(db))?.into_iter().map(Arc::new).collect())
}

/// All rules by name, and the errors found collecting them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleIndex {
    /// Rule name -> declaration (shared: jobs and diagnostics hold them).
    pub decls: BTreeMap<String, Arc<RuleDecl>>,
    /// Parse errors and duplicate names.
    pub errors: Vec<Diag>,
}

/// Every rule of the workspace (inline and included).
#[salsa::tracked(returns(ref))]
pub fn rule_index(db: &dyn Db, ws: Workspace) -> RuleIndex {
    let mut idx = RuleIndex::default();
    let mut all: Vec<Arc<RuleDecl>> = Vec::new();
    match manifest_spec(db, ws) {
        Ok(spec) => all.extend(spec.rules.iter().cloned().map(Arc::new)),
        Err(e) => idx.errors.push(e.clone()),
    }
    for f in ws.rule_files(db) {
        match rule_file_decls(db, *f) {
            Ok(d) => all.extend(d.iter().cloned()),
            Err(e) => idx.errors.push(e.clone()),
        }
    }
    let datasets: BTreeSet<String> = match manifest_spec(db, ws) {
        Ok(spec) => spec.datasets.keys().cloned().collect(),
        Err(_) => BTreeSet::new(),
    };
    for d in all {
        if let Some(prev) = idx.decls.get(&d.name) {
            idx.errors.push(
                Diag::new(ErrorKind::Invalid(format!(
                    "rule `{}` is defined twice (also in {})",
                    d.name,
                    prev.origin.file.display()
                )))
                .at(&d.origin.file, d.origin.span)
                .in_rule(d.name.clone()),
            );
            continue;
        }
        if datasets.contains(&d.name) {
            idx.errors.push(
                Diag::new(ErrorKind::Invalid(format!("`{}` is both a dataset and a rule", d.name)))
                    .at(&d.origin.file, d.origin.span)
                    .in_rule(d.name.clone())
                    .with_help("rename the rule: a rule's name is the name of its output table"),
            );
            continue;
        }
        idx.decls.insert(d.name.clone(), d);
    }
    idx
}

/// One rule's definition without source positions (so moving a rule within
/// its file does not recompile it).
#[salsa::tracked]
pub fn rule_def<'db>(db: &'db dyn Db, ws: Workspace, name: RuleName<'db>) -> Option<RuleDef> {
    rule_index(db, ws).decls.get(name.text(db)).map(|d| d.def.clone())
}

/// A compiled rule (RelPlan plus where each read appears).
pub type Compiled = Result<Arc<(RelPlan, Vec<ReadSite>)>, CompileError>;

/// Compile one rule to RelPlan. Depends only on the rule's definition.
#[salsa::tracked(returns(ref))]
pub fn compile_rule<'db>(db: &'db dyn Db, ws: Workspace, name: RuleName<'db>) -> Compiled {
    match rule_def(db, ws, name) {
        Some(def) => relplan::compile(def).map(Arc::new),
        None => Err(CompileError {
            diag: Diag::new(ErrorKind::Usage(format!("no rule named `{}`", name.text(db)))),
            pos: None,
        }),
    }
}

/// A rule's reads, params and signature, from the summary memo when its
/// definition was compiled before (by any process), else by compiling it.
#[salsa::tracked(returns(ref))]
pub fn rule_summary<'db>(
    db: &'db dyn Db,
    ws: Workspace,
    name: RuleName<'db>,
) -> Result<Arc<RuleSummary>, CompileError> {
    // Straight from the index, not through `rule_def`: a memo hit costs one
    // hash of the definition, less than a query per rule; the summary is
    // backdated when equal, so an edit elsewhere changes nothing downstream.
    let Some(def) = rule_index(db, ws).decls.get(name.text(db)).map(|d| &d.def) else {
        return Err(CompileError {
            diag: Diag::new(ErrorKind::Usage(format!("no rule named `{}`", name.text(db)))),
            pos: None,
        });
    };
    let key = summary_key(def);
    if let Some(s) = db.summaries().get(&key) {
        return Ok(s);
    }
    let c = compile_rule(db, ws, name).clone()?;
    let s = RuleSummary {
        reads: c.0.reads.clone(),
        params: c.0.params.clone(),
        signature: relplan::signature(&c.0),
        sites: c.1.clone(),
    };
    let s = Arc::new(s);
    db.summaries().insert(key, s.clone());
    Ok(s)
}

/// The summary memo's key for a definition: the RelPlan version and the
/// rule's body (SQL text, or the parsed pipeline). Only a cache key: a change
/// in how a body prints is a miss, never a wrong hit. Lines of the memo carry
/// the [`memo_version`] of the code that wrote them; others are not loaded.
pub fn summary_key(def: &RuleDef) -> String {
    let mut h = KeyHasher::new("relspec/rule-summary/v1");
    h.field("relplan", relplan::RELPLAN_VERSION);
    match &def.body {
        workspace::RuleBody::Sql(sql) => h.field("sql", sql),
        other => h.field("pipeline", &format!("{other:?}")),
    };
    h.finish()
}

/// Fingerprints of every dataset (or why it has none).
#[salsa::tracked(returns(ref))]
pub fn dataset_fingerprints(db: &dyn Db, ws: Workspace) -> BTreeMap<String, Result<String, Diag>> {
    let Ok(spec) = manifest_spec(db, ws) else { return BTreeMap::new() };
    let files = ws.datasets(db);
    // A source's tables list the same files: each file's fields are read
    // (a tracked read each) once per distinct list, not once per table.
    type Pairs<'a> = Vec<(&'a str, &'a str)>;
    let mut lists: Vec<(&[DataFile], Pairs)> = Vec::new();
    spec.datasets
        .iter()
        .map(|(name, ds)| {
            let fp = match files.get(name) {
                Some(Ok(fs)) => {
                    let i = match lists.iter().position(|(l, _)| *l == fs.as_slice()) {
                        Some(i) => i,
                        None => {
                            let pairs = fs.iter().map(|f| (f.path(db).as_str(), f.hash(db).as_str())).collect();
                            lists.push((fs.as_slice(), pairs));
                            lists.len() - 1
                        }
                    };
                    Ok(crate::datasets::fingerprint_of(ds, lists[i].1.iter().copied()))
                }
                Some(Err(e)) => Err(e.clone()),
                None => Err(Diag::new(ErrorKind::MissingData { dataset: name.clone(), location: ds.path.clone() })),
            };
            (name.clone(), fp)
        })
        .collect()
}

/// The engine fingerprint of the workspace's profile.
#[salsa::tracked(returns(ref))]
pub fn engine_fingerprint(db: &dyn Db, ws: Workspace) -> String {
    match manifest_spec(db, ws) {
        Ok(spec) => engine_fingerprint_of(ws.engine(db), &spec.profile),
        Err(_) => String::new(),
    }
}

/// What a rule reads: a dataset or another rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dep {
    /// A dataset by name.
    Dataset(String),
    /// A rule by name.
    Rule(String),
}

impl Dep {
    /// The dataset's or rule's name.
    pub fn name(&self) -> &str {
        match self {
            Dep::Dataset(n) | Dep::Rule(n) => n,
        }
    }
}

/// The rule DAG with its diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Graph {
    /// Rules in dependency order (producers first); empty if there is a cycle.
    pub order: Vec<String>,
    /// Rule -> what it reads.
    pub deps: BTreeMap<String, Vec<Dep>>,
    /// All errors: parse, compile, unknown names, cycles, unknown contracts.
    pub errors: Vec<Diag>,
    /// Rules with an error of their own (compile error, unknown table, param
    /// or contract, part of a cycle). Other rules can still be planned.
    pub broken: BTreeSet<String>,
}

/// Byte span in the rule's file for a position inside the rule.
pub fn locate(
    origin: &RuleOrigin,
    text: &str,
    sql: Option<&str>,
    pos: Option<SourcePos>,
    len: usize,
) -> Option<(usize, usize)> {
    match pos {
        Some(SourcePos::Sql { line, col }) => {
            let base = origin.sql_offset?;
            let sql = sql?;
            let off = base + offset_of(sql, line, col);
            let off = off.min(text.len());
            Some((off, len.max(1)))
        }
        Some(SourcePos::Step(i)) => origin.step_spans.get(i).copied().or(origin.span),
        None => origin.span,
    }
}

/// The source text of a workspace file by relative path.
pub fn file_text<'a>(db: &'a dyn Db, ws: Workspace, path: &Path) -> Option<&'a str> {
    let m = ws.manifest(db);
    if m.path(db) == path {
        return Some(m.text(db));
    }
    ws.rule_files(db).iter().find(|f| f.path(db) == path).map(|f| f.text(db).as_str())
}

/// Attach a rule-relative position to a diagnostic.
pub fn diag_in_rule(
    db: &dyn Db,
    ws: Workspace,
    decl: &RuleDecl,
    mut d: Diag,
    pos: Option<SourcePos>,
    len: usize,
) -> Diag {
    let text = file_text(db, ws, &decl.origin.file).unwrap_or_default();
    let sql = match &decl.def.body {
        workspace::RuleBody::Sql(s) => Some(s.as_str()),
        _ => None,
    };
    if d.location.is_none() {
        d = d.at(&decl.origin.file, locate(&decl.origin, text, sql, pos, len));
    }
    if d.rule.is_none() {
        d = d.in_rule(decl.name.clone());
    }
    d
}

/// If a diagnostic covers a whole rule or step (not an exact position),
/// narrow it to the first occurrence of `needle` in the rule's steps or its
/// table (case-insensitively), for an exact caret.
fn narrow_to(db: &dyn Db, ws: Workspace, decl: &RuleDecl, mut d: Diag, needle: &str) -> Diag {
    let Some(loc) = d.location.as_mut() else { return d };
    if loc.file != decl.origin.file || loc.span.is_some_and(|(_, len)| len <= needle.len()) {
        return d;
    }
    let Some(text) = file_text(db, ws, &loc.file) else { return d };
    let regions = decl.origin.step_spans.iter().chain(loc.span.iter()).chain(decl.origin.span.iter());
    for &(start, len) in regions {
        let Some(region) = text.get(start..(start + len).min(text.len())) else { continue };
        if let Some(i) = region.to_lowercase().find(&needle.to_lowercase()) {
            loc.span = Some((start + i, needle.len()));
            break;
        }
    }
    d
}

/// Resolve every rule's reads, report unknown names and cycles, order the DAG.
#[salsa::tracked(returns(ref))]
pub fn graph(db: &dyn Db, ws: Workspace) -> Graph {
    let mut g = Graph::default();
    let idx = rule_index(db, ws);
    g.errors.extend(idx.errors.iter().cloned());
    let spec = match manifest_spec(db, ws) {
        Ok(s) => s.clone(),
        Err(_) => return g,
    };
    // A declared dataset that cannot be listed is an error even if no rule reads it yet.
    for ds in ws.datasets(db).values() {
        if let Err(e) = ds {
            g.errors.push(e.clone());
        }
    }
    let frozen = ws.frozen(db);
    let is_rule = |r: &str| idx.decls.contains_key(r) || frozen.contains(r);
    let known: Vec<&str> = spec
        .datasets
        .keys()
        .map(String::as_str)
        .chain(idx.decls.keys().map(String::as_str))
        .chain(frozen.iter().map(String::as_str))
        .collect();
    for (name, decl) in &idx.decls {
        let rn = RuleName::new(db, name.clone());
        let (plan, sites) = match rule_summary(db, ws, rn) {
            Ok(c) => (&**c, &c.sites),
            Err(e) => {
                g.errors.push(diag_in_rule(db, ws, decl, e.diag.clone(), e.pos, 1));
                g.broken.insert(name.clone());
                continue;
            }
        };
        let errors_before = g.errors.len();
        let mut deps = Vec::new();
        for r in &plan.reads {
            if spec.datasets.contains_key(r) {
                deps.push(Dep::Dataset(r.clone()));
            } else if is_rule(r) {
                deps.push(Dep::Rule(r.clone()));
            } else {
                let site = sites.iter().find(|s| &s.name == r).and_then(|s| s.pos);
                let mut d = Diag::new(ErrorKind::UnknownTable { name: r.clone() });
                d = d.with_help(match suggest(r, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("declare a dataset `[datasets.{r}]` or a rule named `{r}`"),
                });
                let d = diag_in_rule(db, ws, decl, d, site, r.len());
                g.errors.push(narrow_to(db, ws, decl, d, r));
            }
        }
        for p in &plan.params {
            if !spec.params.contains_key(p) {
                let mut d = Diag::new(ErrorKind::UnknownParam(p.clone()));
                d = d.with_help(match suggest(p, spec.params.keys()) {
                    Some(s) => format!("did you mean `${s}`?"),
                    None => format!("declare it under [params], e.g. `{p} = 1`"),
                });
                let site = sites.iter().find(|s| s.name == format!("${p}")).and_then(|s| s.pos);
                let d = diag_in_rule(db, ws, decl, d, site, p.len() + 1);
                g.errors.push(narrow_to(db, ws, decl, d, &format!("${p}")));
            }
        }
        if let Some(c) = &decl.def.produces {
            match spec.contracts.get(c) {
                None => {
                    let mut d = Diag::new(ErrorKind::Invalid(format!("unknown contract `{c}`")));
                    if let Some(s) = suggest(c, spec.contracts.keys()) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    g.errors.push(diag_in_rule(db, ws, decl, d, None, 1));
                }
                Some(contract) => {
                    // A `references` check reads its target table: a dependency.
                    for t in contract_tables(contract) {
                        let dep = if spec.datasets.contains_key(t) {
                            Dep::Dataset(t.to_string())
                        } else if is_rule(t) {
                            Dep::Rule(t.to_string())
                        } else {
                            let mut d =
                                Diag::new(ErrorKind::Invalid(format!("contract `{c}` references unknown table `{t}`")))
                                    .at(&contract.file, contract.span)
                                    .in_rule(name.clone());
                            if let Some(s) = suggest(t, known.iter().copied()) {
                                d = d.with_help(format!("did you mean `{s}`?"));
                            }
                            g.errors.push(d);
                            continue;
                        };
                        if !deps.contains(&dep) {
                            deps.push(dep);
                        }
                    }
                }
            }
        }
        if g.errors.len() > errors_before {
            g.broken.insert(name.clone());
        }
        g.deps.insert(name.clone(), deps);
    }
    // Topological order (Kahn, by name for stability), then cycle report.
    let mut indeg: BTreeMap<&str, usize> = g.deps.keys().map(|k| (k.as_str(), 0)).collect();
    let mut users: HashMap<&str, Vec<&str>> = HashMap::new();
    for (r, ds) in &g.deps {
        for d in ds {
            if let Dep::Rule(u) = d
                && indeg.contains_key(u.as_str())
            {
                *indeg.get_mut(r.as_str()).unwrap() += 1;
                users.entry(u.as_str()).or_default().push(r.as_str());
            }
        }
    }
    let mut ready: BTreeSet<&str> = indeg.iter().filter(|(_, n)| **n == 0).map(|(k, _)| *k).collect();
    let mut order = Vec::new();
    while let Some(r) = ready.pop_first() {
        order.push(r.to_string());
        for u in users.get(r).into_iter().flatten() {
            let n = indeg.get_mut(u).unwrap();
            *n -= 1;
            if *n == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() < g.deps.len() {
        let stuck: BTreeSet<&str> = indeg.iter().filter(|(_, n)| **n > 0).map(|(k, _)| *k).collect();
        let cycle = find_cycle(&g.deps, &stuck);
        let first = cycle.first().cloned().unwrap_or_default();
        let decl = &idx.decls[&first];
        let d = Diag::new(ErrorKind::Cycle(cycle.join(" -> ")))
            .with_help("a rule cannot read its own output, directly or through other rules");
        g.errors.push(diag_in_rule(db, ws, decl, d, None, 1));
        g.broken.extend(stuck.iter().map(|s| s.to_string()));
    }
    // With a cycle, `order` holds the rules outside it (and not downstream of
    // it), so `check` still plans them; `build` refuses any static error.
    g.order = order;
    g
}

fn find_cycle(deps: &BTreeMap<String, Vec<Dep>>, stuck: &BTreeSet<&str>) -> Vec<String> {
    let start = match stuck.iter().next() {
        Some(s) => *s,
        None => return vec![],
    };
    let mut path = vec![start.to_string()];
    let mut cur = start;
    loop {
        let next = deps[cur].iter().find_map(|d| match d {
            Dep::Rule(u) if stuck.contains(u.as_str()) => Some(u.as_str()),
            _ => None,
        });
        let Some(n) = next else { return path };
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return c;
        }
        path.push(n.to_string());
        cur = n;
    }
}

/// Domain (kind and version) of output keys. v3: the one key hasher; v4:
/// the rule's name is a part.
pub const OUTPUT_KEY_DOMAIN: &str = "relspec/output-key/v4";

/// Version of the persisted memos' format; with the relspec version it keys
/// every memo entry, so new code never trusts an entry old code computed.
pub const MEMO_SCHEMA: &str = "memo/v1";

/// The version persisted memo entries carry: a short digest of relspec's
/// version, the memo schema and a fingerprint of the rule compiler's source
/// code, so an entry is never read by other code than the code that wrote it.
/// Short, because every memo line carries it and a fresh process parses them.
pub fn memo_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let h = KeyHasher::new("relspec/memo-version/v1")
            .field("relspec", env!("CARGO_PKG_VERSION"))
            .field("schema", MEMO_SCHEMA)
            .field("spec", relspec_spec::SOURCES)
            .finish();
        h[..16].to_string()
    })
}

/// The parts of a rule's output key that do not depend on upstream outputs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct KeyParts {
    /// The rule. Its output's footer and record name it, so two rules with
    /// the same plan have outputs that differ in those bytes and must not
    /// share a key (which of the two built a shared object would depend on
    /// the build's order).
    #[serde(default)]
    pub rule: String,
    /// Plan signature.
    pub signature: String,
    /// Engine fingerprint.
    pub engine: String,
    /// Dataset name -> fingerprint, for datasets read.
    pub datasets: BTreeMap<String, String>,
    /// Param name -> canonical value, for params bound.
    pub params: BTreeMap<String, String>,
    /// Hash of the contract checked, if any.
    pub contract: Option<String>,
    /// Upstream rule name -> content hash of its output (filled in by `build`).
    pub upstream: BTreeMap<String, String>,
}

impl KeyParts {
    /// The output key: blake3 of every part, each field and map entry
    /// length-prefixed in a fixed order (maps are sorted).
    pub fn key(&self) -> String {
        self.key_with(self.upstream.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The key these parts would have with `upstream` (name -> content hash,
    /// sorted by name) in place of `self.upstream`, without building them.
    pub fn key_with<'a>(&self, upstream: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> String {
        fn pairs(m: &BTreeMap<String, String>) -> impl ExactSizeIterator<Item = (&str, &str)> {
            m.iter().map(|(k, v)| (k.as_str(), v.as_str()))
        }
        KeyHasher::new(OUTPUT_KEY_DOMAIN)
            .field("rule", &self.rule)
            .field("signature", &self.signature)
            .field("engine", &self.engine)
            .map("datasets", pairs(&self.datasets))
            .map("params", pairs(&self.params))
            .opt("contract", self.contract.as_deref())
            .map("upstream", upstream)
            .finish()
    }

    /// Why `self` differs from `prev`: a list of human-readable reasons.
    pub fn diff(&self, prev: &KeyParts) -> Vec<String> {
        let mut why = Vec::new();
        if self.rule != prev.rule {
            why.push("rule renamed".to_string());
        }
        if self.signature != prev.signature {
            why.push("rule definition changed".to_string());
        }
        if self.engine != prev.engine {
            why.push("engine fingerprint changed (profile or versions)".to_string());
        }
        diff_map(&mut why, "dataset", &self.datasets, &prev.datasets);
        diff_map(&mut why, "param", &self.params, &prev.params);
        diff_map(&mut why, "upstream rule", &self.upstream, &prev.upstream);
        if self.contract != prev.contract {
            why.push("contract changed".to_string());
        }
        why
    }
}

fn diff_map(why: &mut Vec<String>, what: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    for (k, v) in a {
        match b.get(k) {
            Some(pv) if pv == v => {}
            Some(_) => why.push(format!("{what} `{k}` changed")),
            None => why.push(format!("now reads {what} `{k}`")),
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            why.push(format!("no longer reads {what} `{k}`"));
        }
    }
}

/// The static key parts of a rule (everything but upstream content hashes).
/// Not a tracked query: it only copies memoized values together, and a memo
/// per rule cost more than the copying (one less query per rule per process).
pub fn static_key<'db>(db: &'db dyn Db, ws: Workspace, name: RuleName<'db>) -> Result<Arc<KeyParts>, Diag> {
    let spec = manifest_spec(db, ws).as_ref().map_err(Clone::clone)?;
    let plan = rule_summary(db, ws, name).as_ref().map_err(|e| e.diag.clone())?;
    let fps = dataset_fingerprints(db, ws);
    let rule = name.text(db);
    let mut parts = KeyParts {
        rule: rule.to_string(),
        signature: plan.signature.clone(),
        engine: engine_fingerprint(db, ws).clone(),
        ..Default::default()
    };
    let def = &rule_index(db, ws)
        .decls
        .get(rule)
        .ok_or_else(|| Diag::new(ErrorKind::Usage(format!("no rule named `{rule}`"))))?
        .def;
    let contract = match &def.produces {
        Some(cn) => Some(
            spec.contracts.get(cn).ok_or_else(|| Diag::new(ErrorKind::Invalid(format!("unknown contract `{cn}`"))))?,
        ),
        None => None,
    };
    for r in plan.reads.iter().map(String::as_str).chain(contract.into_iter().flat_map(contract_tables)) {
        if let Some(fp) = fps.get(r) {
            parts.datasets.insert(r.to_string(), fp.as_ref().map_err(Clone::clone)?.clone());
        }
    }
    for p in &plan.params {
        let v = spec.params.get(p).ok_or_else(|| Diag::new(ErrorKind::UnknownParam(p.clone())))?;
        parts.params.insert(p.clone(), v.canonical());
    }
    if let Some(c) = contract {
        parts.contract = Some(contract_hash(c));
    }
    Ok(Arc::new(parts))
}

/// The hash of a contract's definition (name, columns, checks), as it enters
/// the keys of the rules that produce it.
pub fn contract_hash(c: &workspace::ContractSpec) -> String {
    let mut h = KeyHasher::new("relspec/contract/v1");
    h.field("name", &c.name);
    h.u64("columns", c.columns.len() as u64);
    for col in &c.columns {
        h.field("column", &col.name)
            .field("type", &col.data_type)
            .opt("nullable", col.nullable.map(|n| if n { "true" } else { "false" }));
    }
    let checks: Vec<String> = c.checks.iter().map(|k| k.describe()).collect();
    h.list("checks", checks.iter().map(String::as_str));
    h.finish()
}

/// Tables a contract's `references` checks read.
pub fn contract_tables(c: &workspace::ContractSpec) -> impl Iterator<Item = &str> {
    c.checks.iter().filter_map(|k| match k {
        workspace::DataCheck::References { table, .. } => Some(table.as_str()),
        _ => None,
    })
}

/// Maps workspace paths to salsa inputs and keeps them in sync with the disk.
#[derive(Debug)]
pub struct Loader {
    root: PathBuf,
    manifest: PathBuf,
    sources: HashMap<PathBuf, SourceFile>,
    data: HashMap<String, DataFile>,
    ws: Option<Workspace>,
    engine: EngineInfo,
    overrides: Vec<(String, String)>,
    /// Unsaved editor buffers: relative path -> text, read instead of the disk.
    overlays: HashMap<PathBuf, String>,
    files_read: usize,
    files_stated: usize,
    /// A partial workspace: only these rule files, and these rules of others.
    only_rule_files: Option<Vec<String>>,
    frozen: BTreeSet<String>,
    /// Lists datasets on object storage (set by the caller that can reach it).
    remote_lister: Option<crate::datasets::RemoteLister>,
}

impl Loader {
    /// A loader for the workspace whose manifest is `manifest` (absolute),
    /// under the engine described by `engine`.
    pub fn new(manifest: &Path, engine: EngineInfo) -> Self {
        let root = manifest.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let root = if root.as_os_str().is_empty() { PathBuf::from(".") } else { root };
        Loader {
            manifest: PathBuf::from(manifest.file_name().unwrap_or_default()),
            root,
            sources: HashMap::new(),
            data: HashMap::new(),
            ws: None,
            engine,
            overrides: Vec::new(),
            overlays: HashMap::new(),
            files_read: 0,
            files_stated: 0,
            only_rule_files: None,
            frozen: BTreeSet::new(),
            remote_lister: None,
        }
    }

    /// How datasets on object storage are listed (without one, such a
    /// dataset is an error).
    pub fn with_remote_lister(mut self, lister: crate::datasets::RemoteLister) -> Self {
        self.remote_lister = Some(lister);
        self
    }

    /// Load only the rule files `paths` (relative, sorted) instead of the
    /// include globs' listing, and know the rules `frozen` (declared in the
    /// other files, their outputs known to the caller) by name only. Before
    /// the first sync.
    pub fn with_rule_files(mut self, paths: Vec<String>, frozen: BTreeSet<String>) -> Self {
        self.only_rule_files = Some(paths);
        self.frozen = frozen;
        self
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn source(&mut self, db: &mut RelspecDb, rel: &Path) -> Result<SourceFile, Diag> {
        let text = self
            .read_source(rel)
            .map_err(|e| Diag::new(ErrorKind::Io(format!("{}: {e}", self.root.join(rel).display()))))?;
        Ok(self.source_text(db, rel, text))
    }

    /// The text of workspace file `rel`: its unsaved buffer, else the disk.
    fn read_source(&self, rel: &Path) -> std::io::Result<String> {
        match self.overlays.get(rel) {
            Some(t) => Ok(t.clone()),
            None => std::fs::read_to_string(self.root.join(rel)),
        }
    }

    /// Read workspace file `rel` (relative to the root) from `text` instead of
    /// the disk (an editor's unsaved buffer), or from the disk again (`None`).
    /// Takes effect at the next sync that covers the path.
    pub fn set_overlay(&mut self, rel: &Path, text: Option<String>) {
        match text {
            Some(t) => self.overlays.insert(rel.to_path_buf(), t),
            None => self.overlays.remove(rel),
        };
    }

    /// The input for `rel`, set to `text` if that differs from what it holds.
    fn source_text(&mut self, db: &mut RelspecDb, rel: &Path, text: String) -> SourceFile {
        match self.sources.get(rel) {
            Some(f) => {
                if f.text(db) != &text {
                    f.set_text(db).to(text);
                }
                *f
            }
            None => {
                let f = SourceFile::new(db, rel.to_path_buf(), text);
                self.sources.insert(rel.to_path_buf(), f);
                f
            }
        }
    }

    /// Re-read only `workspace.toml` (enough to know the cache dir).
    pub fn sync_manifest(&mut self, db: &mut RelspecDb) -> Result<Workspace, Diag> {
        let manifest_rel = self.manifest.clone();
        let manifest = self.source(db, &manifest_rel)?;
        Ok(match self.ws {
            Some(ws) => ws,
            None => {
                let ws = Workspace::new(
                    db,
                    self.engine.clone(),
                    manifest,
                    Vec::new(),
                    BTreeMap::new(),
                    self.overrides.clone(),
                    self.frozen.clone(),
                );
                self.ws = Some(ws);
                ws
            }
        })
    }

    /// Apply `--param name=value` overrides over `[params]` (before the first sync).
    pub fn with_param_overrides(mut self, overrides: Vec<(String, String)>) -> Self {
        self.overrides = overrides;
        self
    }

    /// Bring every input up to date with the disk. Returns the workspace input.
    /// Fails only if `workspace.toml` itself cannot be read.
    pub fn sync(&mut self, db: &mut RelspecDb, stat: &mut StatCache) -> Result<Workspace, Diag> {
        let ws = self.sync_manifest(db)?;
        let Ok(spec) = manifest_spec(db, ws).clone() else { return Ok(ws) };
        let rule_paths = self.rule_paths(&spec)?;
        self.sync_rule_files(db, ws, rule_paths, None)?;
        let mut datasets = BTreeMap::new();
        let mut listed = HashMap::new();
        for (name, ds) in &spec.datasets {
            datasets.insert(name.clone(), self.dataset_files(db, stat, name, ds, None, &mut listed));
        }
        if ws.datasets(db) != &datasets {
            ws.set_datasets(db).to(datasets);
        }
        Ok(ws)
    }

    /// Bring the inputs that `changed` paths (absolute or relative to the root,
    /// as a file watcher names them) can affect up to date: the manifest (then
    /// everything), the rule files among them (and the include listing when
    /// one was added or removed), and the datasets whose location covers them
    /// (re-listed; only their changed files are re-hashed). Nothing else is
    /// read or stat-ed, as ruff_db's `Files` syncs only what an event names.
    pub fn sync_paths(
        &mut self,
        db: &mut RelspecDb,
        stat: &mut StatCache,
        changed: &[PathBuf],
    ) -> Result<Workspace, Diag> {
        let rels: BTreeSet<String> = changed
            .iter()
            .map(|p| crate::paths::rel_path(&self.root, p.strip_prefix(&self.root).unwrap_or(p)))
            .collect();
        let manifest_rel = crate::paths::rel_path(Path::new(""), &self.manifest);
        if self.ws.is_none() || rels.contains(&manifest_rel) {
            return self.sync(db, stat);
        }
        let ws = self.sync_manifest(db)?;
        let Ok(spec) = manifest_spec(db, ws).clone() else { return Ok(ws) };
        // Rule files: re-read those a changed path covers (the file itself, or
        // a directory above it that was moved or replaced); re-list the
        // includes when a covered or changed path is not a known rule file.
        let known: BTreeSet<String> =
            ws.rule_files(db).iter().map(|f| crate::paths::rel_path(Path::new(""), f.path(db))).collect();
        let rule_like = |r: &String| r.ends_with(".toml") || r.ends_with(".sql");
        let dir_event = |r: &String| self.root.join(r).is_dir() || known.iter().any(|k| covers(r, k));
        let touched: Vec<&String> = rels.iter().filter(|r| rule_like(r) || dir_event(r)).collect();
        if !touched.is_empty() {
            let relist = touched.iter().any(|r| !known.contains(*r) || !self.root.join(r).is_file());
            let paths = if relist { self.rule_paths(&spec)? } else { known.into_iter().collect() };
            let reread: Vec<bool> = paths.iter().map(|p| touched.iter().any(|r| covers(r, p))).collect();
            self.sync_rule_files(db, ws, paths, Some(&reread))?;
        }
        let mut datasets = ws.datasets(db).clone();
        let mut listed = HashMap::new();
        for (name, ds) in &spec.datasets {
            let prefix = crate::datasets::DatasetLocation::new(&ds.path).literal_prefix();
            // A path under the location, or a directory above it (moved or removed).
            // Paths outside the root (absolute, as the watcher names them) hit
            // every dataset that lives outside it.
            let outside = |x: &str| x.starts_with('/') || x.starts_with("..");
            let hit: BTreeSet<String> = rels
                .iter()
                .filter(|r| {
                    prefix.is_empty()
                        || r.starts_with(prefix)
                        || prefix.starts_with(r.as_str())
                        || (outside(r) && outside(prefix))
                })
                .cloned()
                .collect();
            if !hit.is_empty() || !datasets.contains_key(name) {
                let only = if hit.iter().any(|r| outside(r)) { None } else { Some(&hit) };
                // Files of the listing edited in place: the listing stands,
                // only they are hashed again (no walk of the tree).
                if let (Some(only), Some(Ok(current))) = (only, datasets.get(name))
                    && !crate::datasets::is_remote(&ds.path)
                    && self.rehash_listed(db, stat, current, only)
                {
                    continue;
                }
                datasets.insert(name.clone(), self.dataset_files(db, stat, name, ds, only, &mut listed));
            }
        }
        if ws.datasets(db) != &datasets {
            ws.set_datasets(db).to(datasets);
        }
        Ok(ws)
    }

    /// Rule files matched by the manifest's include globs, sorted.
    fn rule_paths(&self, spec: &WorkspaceSpec) -> Result<Vec<String>, Diag> {
        if let Some(only) = &self.only_rule_files {
            return Ok(only.clone());
        }
        let manifest_rel = self.manifest.clone();
        let mut rule_paths = BTreeSet::new();
        for pattern in &spec.include {
            match crate::paths::glob_files(&self.root, pattern) {
                Ok(fs) => rule_paths.extend(fs),
                Err(e) => {
                    return Err(Diag::new(ErrorKind::Invalid(format!("include pattern `{pattern}`: {e}")))
                        .at(&manifest_rel, None));
                }
            }
        }
        Ok(rule_paths
            .into_iter()
            .filter(|p| (p.ends_with(".toml") || p.ends_with(".sql")) && Path::new(p) != manifest_rel)
            .collect())
    }

    /// Set the rule file list to `paths`, reading the files `reread` marks
    /// (all when `None`, and always those not loaded before).
    fn sync_rule_files(
        &mut self,
        db: &mut RelspecDb,
        ws: Workspace,
        paths: Vec<String>,
        reread: Option<&[bool]>,
    ) -> Result<(), Diag> {
        let loaded: Vec<Option<SourceFile>> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| match reread {
                Some(r) if !r[i] => self.sources.get(Path::new(p)).copied(),
                _ => None,
            })
            .collect();
        // Read in parallel (one open/read/close per file adds up at thousands of rules).
        use rayon::prelude::*;
        let texts: Vec<Option<std::io::Result<String>>> =
            paths.par_iter().zip(&loaded).map(|(p, f)| f.is_none().then(|| self.read_source(Path::new(p)))).collect();
        let mut rule_files = Vec::with_capacity(paths.len());
        for ((p, text), f) in paths.iter().zip(texts).zip(loaded) {
            rule_files.push(match (text, f) {
                (Some(text), _) => {
                    self.files_read += 1;
                    let text =
                        text.map_err(|e| Diag::new(ErrorKind::Io(format!("{}: {e}", self.root.join(p).display()))))?;
                    self.source_text(db, Path::new(p), text)
                }
                (None, Some(f)) => f,
                (None, None) => unreachable!("read when not loaded"),
            });
        }
        if ws.rule_files(db) != &rule_files {
            ws.set_rule_files(db).to(rule_files);
        }
        Ok(())
    }

    /// Re-list one dataset and update its file inputs; files not in `changed`
    /// (all when `None`) keep the hash their input holds when already loaded.
    /// The tables of one source share one listing (`listed`, per sync).
    fn dataset_files(
        &mut self,
        db: &mut RelspecDb,
        stat: &mut StatCache,
        name: &str,
        ds: &workspace::DatasetSpec,
        changed: Option<&BTreeSet<String>>,
        listed: &mut HashMap<String, DatasetFiles>,
    ) -> DatasetFiles {
        let shared = ds.extract.as_ref().map(|x| format!("{:?}\0{}\0{:?}", ds.format, ds.path, x.language));
        if let Some(done) = shared.as_ref().and_then(|k| listed.get(k)) {
            return done.clone();
        }
        let files = self.list_dataset_files(db, stat, name, ds, changed);
        if let Some(k) = shared {
            listed.insert(k, files.clone());
        }
        files
    }

    /// When every path in `changed` is a file of the listing `current` that
    /// is still a file (or a path that is neither listed nor there, such as
    /// an editor's temporary file), hash those files again and return true
    /// (the listing is unchanged); false (nothing done) when any path is
    /// new, a listed file gone or not a file: the caller lists the dataset
    /// again.
    fn rehash_listed(
        &mut self,
        db: &mut RelspecDb,
        stat: &mut StatCache,
        current: &[DataFile],
        changed: &BTreeSet<String>,
    ) -> bool {
        let mut hashes = Vec::with_capacity(changed.len());
        let mut gone = Vec::new();
        for r in changed {
            let abs = self.root.join(r);
            match self.data.get(r).filter(|f| current.contains(f)) {
                Some(_) if abs.is_file() => match stat.hash(r, &abs) {
                    Ok(hash) => hashes.push((r.clone(), hash)),
                    Err(_) => return false,
                },
                Some(_) => return false,
                // Not a listed file and not there now (an editor's temporary
                // file, come and gone): the listing stands unless it was a
                // directory holding listed files.
                None if std::fs::symlink_metadata(&abs).is_err() => gone.push(r),
                None => return false,
            }
        }
        if !gone.is_empty() && current.iter().any(|f| gone.iter().any(|r| covers(r, f.path(db)))) {
            return false;
        }
        for (r, hash) in hashes {
            self.files_stated += 1;
            self.data_file(db, r, hash);
        }
        true
    }

    /// A dataset on object storage: its listing's files, each hashed by its
    /// version tag (ETag and size), listed again on every sync.
    fn list_remote_dataset(&mut self, db: &mut RelspecDb, name: &str, ds: &workspace::DatasetSpec) -> DatasetFiles {
        let err = |message: String| {
            Diag::new(ErrorKind::DatasetRead { dataset: name.to_string(), message }).at(&ds.file, ds.span)
        };
        let Some(lister) = self.remote_lister.clone() else {
            return Err(err(format!("`{}` is on object storage, which this command cannot reach", ds.path)));
        };
        let listed = (lister.0)(ds).map_err(err)?;
        if listed.is_empty() {
            return Err(Diag::new(ErrorKind::MissingData { dataset: ds.name.clone(), location: ds.path.clone() })
                .at(&ds.file, ds.span)
                .with_help("check `path` and the bucket (an object, or a prefix ending in `/`)"));
        }
        let mut out = Vec::with_capacity(listed.len());
        for (url, tag) in listed {
            self.files_stated += 1;
            out.push(self.data_file(db, url, tag));
        }
        Ok(out)
    }

    /// The input of data file `path`, its hash set to `hash` (set only when
    /// it changed), created when new.
    fn data_file(&mut self, db: &mut RelspecDb, path: String, hash: String) -> DataFile {
        match self.data.get(&path) {
            Some(f) => {
                if f.hash(db) != &hash {
                    f.set_hash(db).to(hash);
                }
                *f
            }
            None => {
                let f = DataFile::new(db, path.clone(), hash);
                self.data.insert(path, f);
                f
            }
        }
    }

    fn list_dataset_files(
        &mut self,
        db: &mut RelspecDb,
        stat: &mut StatCache,
        name: &str,
        ds: &workspace::DatasetSpec,
        changed: Option<&BTreeSet<String>>,
    ) -> DatasetFiles {
        if crate::datasets::is_remote(&ds.path) {
            return self.list_remote_dataset(db, name, ds);
        }
        crate::datasets::resolve_files(&self.root, ds).and_then(|paths| {
            let mut out = Vec::with_capacity(paths.len());
            for p in paths {
                if let (Some(c), Some(f)) = (changed, self.data.get(&p))
                    && !c.iter().any(|r| covers(r, &p))
                {
                    out.push(*f);
                    continue;
                }
                let hash = stat.hash(&p, &self.root.join(&p)).map_err(|e| {
                    Diag::new(ErrorKind::DatasetRead { dataset: name.to_string(), message: format!("{p}: {e}") })
                })?;
                self.files_stated += 1;
                out.push(self.data_file(db, p, hash));
            }
            Ok(out)
        })
    }

    /// Files read and data files stat-ed by syncs since the loader was made
    /// (what a sync costs; tests check that a targeted sync reads one file).
    pub fn io_counts(&self) -> (usize, usize) {
        (self.files_read, self.files_stated)
    }
}

/// Whether a changed path `r` (relative, with `/`) covers the file `p`: it is
/// the file, or a directory above it (a directory moved, replaced or removed).
fn covers(r: &str, p: &str) -> bool {
    p.strip_prefix(r).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Render a diagnostic's location as `file:line:col` given the database.
pub fn location_string(db: &dyn Db, ws: Workspace, d: &Diag) -> Option<String> {
    let loc = d.location.as_ref()?;
    let text = file_text(db, ws, &loc.file)?;
    let (l, c) = line_col(text, loc.span?.0);
    Some(format!("{}:{l}:{c}", loc.file.display()))
}
