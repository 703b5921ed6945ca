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
use crate::relplan::lower::{self, LowerError};
use crate::workspace::DataCheck;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

/// Version of the analysis memo; bump when lineage or keys change meaning.
const ANALYSIS_VERSION: &str = "analysis/v1";

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
        let cols: Vec<String> =
            self.lineage.columns.iter().map(|c| format!("{}:{}:{}", c.name, c.data_type, c.nullable)).collect();
        blake3::hash(cols.join(",").as_bytes()).to_hex().to_string()
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
pub const MEMO_FILE: &str = "analysis.jsonl";

#[derive(Debug, Default)]
struct Memo {
    rules: BTreeMap<String, Analysis>,
    lines: usize,
}

impl Memo {
    fn load(path: &std::path::Path) -> Memo {
        let (entries, lines) = crate::store::load_jsonl::<MemoLine>(path);
        let rules = entries.into_iter().filter(|e| e.v == ANALYSIS_VERSION).map(|e| (e.rule, e.a)).collect();
        Memo { rules, lines }
    }

    /// Append `added` rules' entries, or rewrite with the `live` rules only
    /// (see [`crate::store::Store::save_jsonl`]).
    fn save(
        &self,
        store: &crate::store::Store,
        path: &std::path::Path,
        added: &[String],
        live: &HashSet<&String>,
    ) -> Result<()> {
        let line = |rule: &String| {
            self.rules.get(rule).map(|a| MemoLine { v: ANALYSIS_VERSION.into(), rule: rule.clone(), a: a.clone() })
        };
        let added: Vec<MemoLine> = added.iter().filter_map(line).collect();
        let all = || self.rules.keys().filter(|k| live.contains(k)).filter_map(line).collect();
        store.save_jsonl(path, self.lines, live.len(), &added, all).map(|_| ())
    }
}

/// Analyze `rules` (all rules when empty) and what they read.
pub fn analyze(p: &mut Project, rules: &[String]) -> Result<AnalysisSet> {
    let mut set = AnalysisSet { errors: p.static_errors(), ..Default::default() };
    // Without a parsed manifest there is nothing to plan; otherwise every rule
    // whose own definition and inputs are sound is planned, so one run reports
    // the errors of every rule, not only the static ones.
    let Ok(spec) = p.spec() else { return Ok(set) };
    let order = if rules.is_empty() { p.graph().order.clone() } else { p.with_upstream(rules) };
    // Rules with a static error of their own, or whose inputs cannot be keyed
    // (an unlistable dataset: already reported), are not planned; neither is
    // anything downstream of them.
    let mut failed: HashSet<String> = p.graph().broken.iter().cloned().collect();
    let mut jobs: Vec<RuleJob> = Vec::with_capacity(order.len());
    for r in &order {
        match p.job(r) {
            Some(j) if !failed.contains(r) => jobs.push(j),
            _ => {
                failed.insert(r.clone());
            }
        }
    }
    let store = p.store()?.clone();
    let memo_path = store.dir().join(MEMO_FILE);
    let mut memo = Memo::load(&memo_path);
    let mut added: Vec<String> = Vec::new();
    let mut session = None;
    let mut registered: HashSet<String> = HashSet::new();

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
        if session.is_none() {
            session = Some(p.session_with(&HashSet::new())?);
        }
        let (engine, ctx) = session.as_ref().unwrap();
        let mut reg_err = None;
        for d in &job.deps {
            match d {
                Dep::Dataset(ds) if !registered.contains(ds) => {
                    match engine.block_on(crate::registry::register(ctx, &p.root, &spec.datasets[ds])) {
                        Ok(_) => {
                            registered.insert(ds.clone());
                        }
                        Err(e) => reg_err = Some(e),
                    }
                }
                Dep::Rule(u) => {
                    let schema = Arc::new(set.rules[u].arrow_schema()?);
                    let table = MemTable::try_new(schema, vec![vec![]])
                        .map_err(|e| Diag::new(ErrorKind::Internal(e.to_string())))?;
                    let _ = ctx.deregister_table(u.as_str());
                    ctx.register_table(u.as_str(), Arc::new(table))
                        .map_err(|e| Diag::new(ErrorKind::Internal(e.to_string())))?;
                }
                _ => {}
            }
        }
        if let Some(e) = reg_err {
            set.errors.push(e.in_rule(job.name.clone()));
            failed.insert(job.name.clone());
            continue;
        }
        let plan = p.plan(&job.name)?;
        let contract = job.decl.def.produces.as_ref().and_then(|c| spec.contracts.get(c)).cloned();
        let res = engine.block_on(async {
            let l = lower::lower(ctx, &plan, &spec.params).await?;
            if let Some(c) = &contract {
                lower::check_contract(l.df.schema(), c).map_err(|diag| LowerError { diag, pos: None })?;
                for k in &c.checks {
                    let DataCheck::References { table, target_column, .. } = k else { continue };
                    let cols: Vec<String> = match set.rules.get(table) {
                        Some(a) => a.lineage.columns.iter().map(|c| c.name.clone()).collect(),
                        None => match ctx.table(table.as_str()).await {
                            Ok(t) => t.schema().fields().iter().map(|f| f.name().clone()).collect(),
                            Err(e) => return Err(lower::df_error(e, ErrorKind::Plan)),
                        },
                    };
                    if !cols.contains(target_column) {
                        let hint = lower::suggest(target_column, &cols)
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
            }
            Ok::<_, LowerError>(lineage::of_plan(&l.body))
        });
        set.planned += 1;
        match res {
            Ok(lin) => {
                let a = Analysis { check_key: key, lineage: lin };
                memo.rules.insert(job.name.clone(), a.clone());
                added.push(job.name.clone());
                set.rules.insert(job.name.clone(), a);
            }
            Err(e) => {
                set.errors.push(p.locate_error(&job, e));
                failed.insert(job.name.clone());
            }
        }
    }
    // Keep the parsed-rule memo too, so the next process parses no unchanged rule.
    p.db.summaries().save(&store)?;
    if !added.is_empty() {
        let live: HashSet<&String> = p.graph().deps.keys().collect();
        memo.save(&store, &memo_path, &added, &live)?;
    }
    Ok(set)
}

fn check_key(job: &RuleJob, done: &BTreeMap<String, Analysis>) -> String {
    let mut parts = vec![
        ANALYSIS_VERSION.to_string(),
        job.parts.signature.clone(),
        job.parts.engine.clone(),
        format!("{:?}", job.parts.params),
        job.parts.contract.clone().unwrap_or_default(),
    ];
    for d in &job.deps {
        match d {
            Dep::Dataset(n) => parts.push(format!("ds:{n}:{}", job.parts.datasets.get(n).cloned().unwrap_or_default())),
            Dep::Rule(u) => {
                parts.push(format!("rule:{u}:{}", done.get(u).map(Analysis::schema_hash).unwrap_or_default()))
            }
        }
    }
    blake3::hash(parts.join("\n").as_bytes()).to_hex().to_string()
}
