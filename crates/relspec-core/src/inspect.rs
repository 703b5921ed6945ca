//! Answers about one rule or column, for `explain` and `lineage`: what to
//! show is decided here; the CLI only renders it.

use crate::analysis;
use crate::contracts::CheckResult;
use crate::engine::PlanSnapshots;
use crate::error::{Diag, ErrorKind};
use crate::graph::{LineageNode, Lineages};
use crate::kernels::KernelUse;
use crate::lineage::{RuleLineage, Source};
use crate::project::Project;
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything `explain` shows of a rule.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// Rule name.
    pub rule: String,
    /// Plan signature.
    pub signature: String,
    /// Output key of the build the plans come from (none when planned now).
    pub key: Option<String>,
    /// Where the plans come from: the last build or planning now.
    pub source: &'static str,
    /// Tables read.
    pub reads: Vec<String>,
    /// Params bound.
    pub params: Vec<String>,
    /// Canonical RelPlan.
    pub canonical: String,
    /// Logical, optimized, physical plans (with metrics after a build) and SQL.
    pub plans: PlanSnapshots,
    /// Kernel applications and their lanes.
    pub kernels: Vec<KernelUse>,
    /// Column lineage.
    pub lineage: RuleLineage,
    /// Data contract results of the build (empty when planned now).
    pub checks: Vec<CheckResult>,
    /// Substrait artifact path (feature `substrait`).
    pub substrait: Option<String>,
}

/// Where `explain`'s plans come from when the last build built this definition.
pub const FROM_LAST_BUILD: &str = "last build";
/// Where `explain`'s plans come from otherwise.
pub const PLANNED_NOW: &str = "planned now (not built with this definition)";

/// Explain `rule`: from the last build's artifact when it built this very
/// definition (same signature), else by planning it (and what it reads) now.
pub fn explain(p: &mut Project, rule: &str) -> Result<Explained, Vec<Diag>> {
    p.refresh().map_err(|e| vec![e])?;
    if p.decl(rule).is_none() {
        let mut d = Diag::new(ErrorKind::Usage(format!("no rule named `{rule}`")));
        if let Some(s) = crate::suggest::suggest(rule, p.graph().deps.keys()) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        return Err(vec![d]);
    }
    let plan = p.plan(rule).map_err(|e| vec![e])?;
    let signature = crate::relplan::signature(&plan);
    let artifact =
        p.store().ok().and_then(|s| crate::bundle::latest_artifact(s, rule)).filter(|a| a.signature == signature);
    let base = |plans, kernels, lineage, checks, key, substrait, source| Explained {
        rule: rule.to_string(),
        signature: signature.clone(),
        key,
        source,
        reads: plan.reads.clone(),
        params: plan.params.clone(),
        canonical: plan.canonical.clone(),
        plans,
        kernels,
        lineage,
        checks,
        substrait,
    };
    Ok(match artifact {
        Some(a) => base(a.plans, a.kernels, a.lineage, a.checks, Some(a.key), a.substrait, FROM_LAST_BUILD),
        None => {
            let (mut plans, errs) = p.plan_all(&[rule.to_string()]).map_err(|e| vec![e])?;
            if !errs.is_empty() {
                return Err(errs);
            }
            let (snaps, kernels, lineage) = plans
                .remove(rule)
                .ok_or_else(|| vec![Diag::new(ErrorKind::Internal(format!("`{rule}` was not planned")))])?;
            base(snaps, kernels, lineage, vec![], None, None, PLANNED_NOW)
        }
    })
}

/// The answer to `lineage TARGET`.
#[derive(Debug, Clone, Serialize)]
pub struct LineageAnswer {
    /// The target as given.
    pub target: String,
    /// The table part of the target.
    #[serde(skip)]
    pub table: String,
    /// `upstream` or `downstream`.
    pub direction: &'static str,
    /// One tree per column.
    pub columns: Vec<LineageNode>,
    /// The columns that decide which rows the rule has (upstream only).
    pub row_keys: Vec<Source>,
}

/// Column lineage of `target` (`RULE`, `RULE.COLUMN` or `DATASET.COLUMN`):
/// upstream to datasets for a rule's columns, downstream from a dataset's
/// column (or when `downstream`). Unknown names get "did you mean".
pub fn lineage(p: &mut Project, target: &str, upstream: bool, downstream: bool) -> Result<LineageAnswer, Vec<Diag>> {
    p.refresh().map_err(|e| vec![e])?;
    let set = analysis::analyze(p, &[]).map_err(|e| vec![e])?;
    if !set.errors.is_empty() {
        return Err(set.errors);
    }
    let spec = p.spec().map_err(|e| vec![e])?;
    let rules: BTreeMap<String, RuleLineage> = set.rules.into_iter().map(|(k, a)| (k, a.lineage)).collect();
    let (table, column) = match target.split_once('.') {
        Some((t, c)) => (t, Some(c)),
        None => (target, None),
    };
    let is_rule = rules.contains_key(table);
    if !is_rule && !spec.datasets.contains_key(table) {
        let mut d = Diag::new(ErrorKind::Usage(format!("no rule or dataset named `{table}`")));
        if let Some(s) = crate::suggest::suggest(table, rules.keys().chain(spec.datasets.keys())) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        return Err(vec![d]);
    }
    let columns: Vec<String> = match (column, rules.get(table)) {
        (Some(c), Some(l)) if l.column(c).is_none() => {
            let mut d = Diag::new(ErrorKind::Usage(format!("rule `{table}` has no output column `{c}`")));
            if let Some(s) = crate::suggest::suggest(c, l.columns.iter().map(|c| &c.name)) {
                d = d.with_help(format!("did you mean `{table}.{s}`?"));
            }
            return Err(vec![d]);
        }
        (Some(c), _) => vec![c.to_string()],
        (None, Some(l)) => l.columns.iter().map(|c| c.name.clone()).collect(),
        (None, None) => {
            let mut cs: Vec<String> =
                rules.values().flat_map(|l| l.reads()).filter(|(t, _)| t == table).map(|(_, c)| c).collect();
            cs.sort();
            cs.dedup();
            cs
        }
    };
    let down = downstream || !is_rule;
    let walk = Lineages { rules: &rules };
    let depth = if upstream || column.is_some() { 0 } else { 2 };
    let trees: Vec<LineageNode> = columns
        .iter()
        .map(|c| if down { walk.downstream(table, c, None) } else { walk.upstream(table, c, None, depth) })
        .collect();
    let row_keys = if down { vec![] } else { rules.get(table).map(|l| l.keys.clone()).unwrap_or_default() };
    Ok(LineageAnswer {
        target: target.to_string(),
        table: table.to_string(),
        direction: if down { "downstream" } else { "upstream" },
        columns: trees,
        row_keys,
    })
}
