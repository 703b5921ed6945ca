//! Analysis without execution: every rule planned against its inputs'
//! *schemas*, yielding its output schema and column lineage, and every
//! planning error (unknown columns, type errors, contract mismatches).
//!
//! Results are memoized in `cache/analysis.jsonl` by a *check key*: the rule's
//! signature, engine fingerprint, params, contract, the fingerprints of the
//! datasets it reads and the output schemas of the rules it reads. A rule
//! whose key is unchanged is not planned again; a rule that must be planned
//! sees its upstream rules as empty tables of their recorded schema, so one
//! edited rule costs one planning, and an edit that keeps a rule's output
//! schema stops there (schema-level early cutoff).
//!
//! Architecture invariant: analysis never executes a plan and never writes
//! anything but its memo; failed rules are not memoized.

use crate::db::{Db, Dep};
use crate::error::{Diag, ErrorKind, Result};
use crate::lineage::{self, RuleLineage};
use crate::project::{Project, RuleJob};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use relspec_exec::planner::{Planner, Upstream};
use relspec_spec::key::KeyHasher;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

/// Version of the analysis memo; bump when lineage or keys change meaning.
const ANALYSIS_VERSION: &str = "relspec/analysis/v2";

/// The version a memo line must carry to be read: this relspec's version, the
/// analysis memo's format, and the sources of the rule compiler and of the
/// exec layer (lowering and lineage live there).
fn memo_line_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let h = KeyHasher::new(ANALYSIS_VERSION)
            .field("memo", relspec_db::memo_version())
            .field("exec", relspec_exec::SOURCES)
            .finish();
        h[..16].to_string()
    })
}

/// What planning one rule yields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Key the result is memoized under.
    pub check_key: String,
    /// Output schema (the columns) and lineage.
    pub lineage: RuleLineage,
}

impl Analysis {
    /// Hash of the output schema (names, types, nullability, in order).
    pub fn schema_hash(&self) -> String {
        let mut h = KeyHasher::new("relspec/schema/v1");
        h.u64("columns", self.lineage.columns.len() as u64);
        for c in &self.lineage.columns {
            h.field("name", &c.name).field("type", &c.data_type).bool("nullable", c.nullable);
        }
        h.finish()
    }

    /// The output schema as Arrow.
    pub fn arrow_schema(&self) -> Result<Schema> {
        let mut fields = Vec::new();
        for c in &self.lineage.columns {
            let t = DataType::from_str(&c.data_type)
                .map_err(|e| Diag::new(ErrorKind::Internal(format!("type `{}`: {e}", c.data_type))))?;
            fields.push(Field::new(&c.name, t, c.nullable));
        }
        Ok(Schema::new(fields))
    }
}

/// The analysis of a set of rules.
#[derive(Debug, Default)]
pub struct AnalysisSet {
    /// Rule -> analysis (rules that planned).
    pub rules: BTreeMap<String, Analysis>,
    /// Every error found, in dependency order.
    pub errors: Vec<Diag>,
    /// Rules planned in this run (memo misses).
    pub planned: usize,
    /// Rules served by the memo.
    pub memoized: usize,
}

/// One line of the memo file: a rule's latest analysis (later lines win).
#[derive(Debug, Serialize, Deserialize)]
struct MemoLine {
    v: String,
    rule: String,
    a: Analysis,
}

/// File name of the analysis memo under the cache dir (JSON lines, append-only).
pub const MEMO_FILE: &str = crate::store::layout::ANALYSIS;

#[derive(Debug, Default)]
struct Memo {
    rules: BTreeMap<String, Analysis>,
    lines: usize,
    /// The file holds lines of other code (dropped at load; rewritten at save).
    foreign: bool,
}

impl Memo {
    fn load(path: &std::path::Path) -> Memo {
        let (entries, lines) = crate::store::load_jsonl::<MemoLine>(path);
        let v = memo_line_version();
        let mut foreign = false;
        let rules = entries
            .into_iter()
            .filter(|e| {
                let ours = e.v == v;
                foreign |= !ours;
                ours
            })
            .map(|e| (e.rule, e.a))
            .collect();
        Memo { rules, lines, foreign }
    }

    /// Append `added` rules' entries, or rewrite with the `live` rules only
    /// (see [`crate::store::Store::save_jsonl`]).
    fn save(
        &self,
        store: &crate::store::Store,
        path: &std::path::Path,
        added: &[String],
        live: &HashSet<&String>,
    ) -> Result<usize> {
        let line = |rule: &String| {
            self.rules.get(rule).map(|a| MemoLine {
                v: memo_line_version().to_string(),
                rule: rule.clone(),
                a: a.clone(),
            })
        };
        let added: Vec<MemoLine> = added.iter().filter_map(line).collect();
        let all = || self.rules.keys().filter(|k| live.contains(k)).filter_map(line).collect();
        store.save_jsonl(path, self.lines, self.foreign, live.len(), &added, all)
    }
}

/// Analyze `rules` (all rules when empty) and what they read.
pub fn analyze(p: &mut Project, rules: &[String]) -> Result<AnalysisSet> {
    Analyzer::default().analyze(p, rules)
}

/// Analysis that keeps the memo in memory between runs (a long-lived
/// process: the language server), instead of reading the memo file each
/// time; new entries are still appended to the file.
#[derive(Debug, Default)]
pub struct Analyzer {
    memo: Option<(std::path::PathBuf, Memo)>,
}

impl Analyzer {
    /// Analyze `rules` (all rules when empty) and what they read.
    pub fn analyze(&mut self, p: &mut Project, rules: &[String]) -> Result<AnalysisSet> {
        analyze_with(p, rules, &mut self.memo)
    }
}

fn analyze_with(
    p: &mut Project,
    rules: &[String],
    kept: &mut Option<(std::path::PathBuf, Memo)>,
) -> Result<AnalysisSet> {
    let mut set = AnalysisSet { errors: p.static_errors(), ..Default::default() };
    // Without a parsed manifest there is nothing to plan; otherwise every rule
    // whose own definition and inputs are sound is planned, so one run reports
    // the errors of every rule, not only the static ones.
    if p.spec().is_err() {
        return Ok(set);
    }
    let order = if rules.is_empty() { p.graph().order.clone() } else { p.with_upstream(rules) };
    // Rules with a static error of their own, or whose inputs cannot be keyed
    // (an unlistable dataset: already reported), are not planned; neither is
    // anything downstream of them.
    let mut failed: HashSet<String> = p.graph().broken.iter().cloned().collect();
    let mut jobs: Vec<RuleJob> = Vec::with_capacity(order.len());
    for r in &order {
        match p.job(r) {
            Ok(j) if !failed.contains(r) => jobs.push(j),
            _ => {
                failed.insert(r.clone());
            }
        }
    }
    let store = p.store()?.clone();
    let memo_path = store.dir().join(MEMO_FILE);
    let mut memo = match kept.take() {
        Some((path, memo)) if path == memo_path => memo,
        _ => Memo::load(&memo_path),
    };
    let mut added: Vec<String> = Vec::new();
    let mut planner: Option<Planner> = None;

    for job in jobs {
        if job.deps.iter().any(|d| matches!(d, Dep::Rule(u) if failed.contains(u))) {
            failed.insert(job.name.clone());
            continue;
        }
        let key = check_key(&job, &set.rules);
        if let Some(a) = memo.rules.get(&job.name).filter(|a| a.check_key == key) {
            set.rules.insert(job.name.clone(), a.clone());
            set.memoized += 1;
            continue;
        }
        if planner.is_none() {
            planner = Some(p.planner()?);
        }
        let Some(pl) = planner.as_mut() else { unreachable!("created above") };
        // Upstream rules are seen as empty tables of their analyzed schemas.
        let done = &set.rules;
        let res = p
            .prepare_job(pl, &job, |u| {
                let a = done.get(u).ok_or_else(|| Diag::new(ErrorKind::Internal(format!("`{u}` was not analyzed"))))?;
                Ok(Upstream::Schema(Arc::new(a.arrow_schema()?)))
            })
            .map(|l| lineage::of_plan(&l.body));
        set.planned += 1;
        match res {
            Ok(lin) => {
                let a = Analysis { check_key: key, lineage: lin };
                memo.rules.insert(job.name.clone(), a.clone());
                added.push(job.name.clone());
                set.rules.insert(job.name.clone(), a);
            }
            Err(e) => {
                set.errors.push(e);
                failed.insert(job.name.clone());
            }
        }
    }
    // Keep the parsed-rule memo too, so the next process parses no unchanged rule.
    p.db.summaries().save(&store)?;
    if !added.is_empty() {
        let live: HashSet<&String> = p.graph().deps.keys().collect();
        memo.lines = memo.save(&store, &memo_path, &added, &live)?;
        memo.foreign = false;
    }
    *kept = Some((memo_path, memo));
    Ok(set)
}

fn check_key(job: &RuleJob, done: &BTreeMap<String, Analysis>) -> String {
    let mut h = KeyHasher::new(ANALYSIS_VERSION);
    // The code's version is not hashed here: memo lines of other code are
    // dropped when the memo is loaded (`memo_line_version`).
    h.field("signature", &job.parts.signature)
        .field("engine", &job.parts.engine)
        .map("params", job.parts.params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .opt("contract", job.parts.contract.as_deref());
    let mut datasets = Vec::new();
    let mut rules = Vec::new();
    for d in &job.deps {
        match d {
            Dep::Dataset(n) => datasets.push((n.as_str(), job.parts.datasets.get(n).map(String::as_str).unwrap_or(""))),
            Dep::Rule(u) => rules.push((u.as_str(), done.get(u).map(Analysis::schema_hash).unwrap_or_default())),
        }
    }
    h.map("datasets", datasets.into_iter());
    h.map("upstream_schemas", rules.iter().map(|(k, v)| (*k, v.as_str())));
    h.finish()
}
