//! Does a rule's plan distribute over the partitions of one input? A rule
//! that declares `incremental = { by = "input" }` promises that its result
//! is the union of its results over each partition of `input` (a file, a
//! hive partition, a source file), so a changed partition recomputes only
//! its own share. This module proves that on the rule's DataFusion plan, or
//! says which construct breaks it.
//!
//! Accepted between the input's scan and the output: projections, filters,
//! aliases, unnest; a join with the input on one side (on the preserved side
//! of an outer join); aggregates, windows and `DISTINCT` whose keys include
//! the input's partition key; a sort without a limit (outputs are sorted by
//! every column anyway); a union whose every branch reads the input.
//! Rejected: the input on both sides of a join, a full join, an aggregate or
//! window without the partition key, a limit (global), a union branch that
//! does not read the input (it would repeat per partition), anything else.
//!
//! Architecture invariant: conservative. A plan is accepted only when every
//! node on the input's path is one the rules above cover; an unknown node
//! is a rejection, never a guess.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

/// Why a plan does not distribute over the input's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDistributive {
    /// The input is not read by the plan.
    NotRead,
    /// The input is read on both sides of a join (or twice in a subquery).
    BothSides,
    /// An outer join that keeps rows of the other side.
    OuterJoin(String),
    /// An aggregate (or `DISTINCT`) whose keys lack the partition key.
    AggregateWithoutKey(String),
    /// A window whose `PARTITION BY` lacks the partition key.
    WindowWithoutKey(String),
    /// A limit (a global `ORDER BY ... LIMIT`).
    Limit,
    /// A union branch that does not read the input.
    UnionBranch,
    /// A subquery that reads the input.
    Subquery,
    /// A plan node not known to distribute.
    Other(String),
}

impl std::fmt::Display for NotDistributive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotDistributive::NotRead => write!(f, "the rule does not read it"),
            NotDistributive::BothSides => write!(f, "it is read on both sides of a join"),
            NotDistributive::OuterJoin(j) => write!(f, "a {j} join keeps rows of the other side in every partition"),
            NotDistributive::AggregateWithoutKey(k) => {
                write!(f, "an aggregate groups by {k}, which does not include the partition key")
            }
            NotDistributive::WindowWithoutKey(k) => {
                write!(f, "a window partitions by {k}, which does not include the partition key")
            }
            NotDistributive::Limit => write!(f, "a LIMIT is global (it picks rows across partitions)"),
            NotDistributive::UnionBranch => {
                write!(f, "a UNION branch does not read it (it would repeat per partition)")
            }
            NotDistributive::Subquery => write!(f, "a subquery reads it"),
            NotDistributive::Other(n) => write!(f, "`{n}` is not known to distribute over partitions"),
        }
    }
}

/// Whether `plan` reads table `input`.
fn reads(plan: &LogicalPlan, input: &str) -> bool {
    let mut found = false;
    let _ = plan.apply(|p| {
        if let LogicalPlan::TableScan(s) = p
            && s.table_name.table() == input
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        // Subqueries in expressions are plans too.
        found = subquery_reads(p, input);
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// The plan of a subquery expression.
fn subquery(e: &Expr) -> Option<&LogicalPlan> {
    match e {
        Expr::ScalarSubquery(q) => Some(q.subquery.as_ref()),
        Expr::InSubquery(q) => Some(q.subquery.subquery.as_ref()),
        Expr::Exists(q) => Some(q.subquery.subquery.as_ref()),
        _ => None,
    }
}

/// Whether a subquery in one of `plan`'s own expressions reads `input`.
fn subquery_reads(plan: &LogicalPlan, input: &str) -> bool {
    let mut any = false;
    for e in plan.expressions() {
        let _ = e.apply(|x| {
            any |= subquery(x).is_some_and(|s| reads(s, input));
            Ok(if any { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        });
    }
    any
}

/// Whether an expression list names a column called one of `key` (the
/// partition key, by unqualified name, possibly aliased on the way).
fn has_key(exprs: &[Expr], key: &[String]) -> bool {
    !key.is_empty()
        && key.iter().all(|k| {
            exprs.iter().any(|e| {
                let mut hit = false;
                let _ = e.apply(|x| {
                    if let Expr::Column(c) = x
                        && &c.name == k
                    {
                        hit = true;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Ok(TreeNodeRecursion::Continue)
                });
                // Only a plain column (or an alias of one) keeps partitions apart.
                hit && matches!(e.clone().unalias(), Expr::Column(_))
            })
        })
}

fn names(exprs: &[Expr]) -> String {
    let v: Vec<String> = exprs.iter().map(|e| format!("`{}`", e.schema_name())).collect();
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}

/// Check that `plan` distributes over the partitions of `input`, whose
/// partition key columns are `key` (empty: a partition has no key column, so
/// no aggregate or window can be proven to distribute).
pub fn check(plan: &LogicalPlan, input: &str, key: &[String]) -> Result<(), NotDistributive> {
    if !reads(plan, input) {
        return Err(NotDistributive::NotRead);
    }
    walk(plan, input, key)
}

/// `plan` reads the input: check the node and recurse into the child that does.
fn walk(plan: &LogicalPlan, input: &str, key: &[String]) -> Result<(), NotDistributive> {
    // A subquery in an expression that reads the input is not covered.
    if subquery_reads(plan, input) {
        return Err(NotDistributive::Subquery);
    }
    match plan {
        LogicalPlan::TableScan(_) => Ok(()),
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Unnest(_)
        | LogicalPlan::Repartition(_) => walk_child(plan, input, key),
        LogicalPlan::Sort(s) => {
            if s.fetch.is_some() {
                return Err(NotDistributive::Limit);
            }
            walk_child(plan, input, key)
        }
        LogicalPlan::Limit(_) => Err(NotDistributive::Limit),
        LogicalPlan::Join(j) => {
            let (l, r) = (reads(&j.left, input), reads(&j.right, input));
            if l && r {
                return Err(NotDistributive::BothSides);
            }
            let preserved_ok = match j.join_type {
                JoinType::Inner => true,
                JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => l,
                JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => r,
                JoinType::Full => false,
            };
            if !preserved_ok {
                return Err(NotDistributive::OuterJoin(format!("{}", j.join_type).to_lowercase()));
            }
            walk(if l { &j.left } else { &j.right }, input, key)
        }
        LogicalPlan::Aggregate(a) => {
            if !has_key(&a.group_expr, key) {
                return Err(NotDistributive::AggregateWithoutKey(names(&a.group_expr)));
            }
            walk(&a.input, input, key)
        }
        LogicalPlan::Distinct(d) => {
            let schema = d.input().schema();
            let cols: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
            if !has_key(&cols, key) {
                return Err(NotDistributive::AggregateWithoutKey("every column (DISTINCT)".into()));
            }
            walk(d.input(), input, key)
        }
        LogicalPlan::Window(w) => {
            for e in &w.window_expr {
                let part = match e.clone().unalias() {
                    Expr::WindowFunction(f) => f.params.partition_by.clone(),
                    _ => vec![],
                };
                if !has_key(&part, key) {
                    return Err(NotDistributive::WindowWithoutKey(names(&part)));
                }
            }
            walk(&w.input, input, key)
        }
        LogicalPlan::Union(u) => {
            for branch in &u.inputs {
                if !reads(branch, input) {
                    return Err(NotDistributive::UnionBranch);
                }
                walk(branch, input, key)?;
            }
            Ok(())
        }
        other => Err(NotDistributive::Other(other.display().to_string())),
    }
}

fn walk_child(plan: &LogicalPlan, input: &str, key: &[String]) -> Result<(), NotDistributive> {
    let inputs = plan.inputs();
    let readers: Vec<&&LogicalPlan> = inputs.iter().filter(|c| reads(c, input)).collect();
    match readers.as_slice() {
        [one] => walk(one, input, key),
        [] => Err(NotDistributive::NotRead),
        _ => Err(NotDistributive::BothSides),
    }
}

/// The partition key of a dataset: `file` for a source's table (one
/// partition per source file), the hive columns of a dataset with
/// `partition_cols` (one partition per directory), none for a plain
/// dataset (it cannot be partitioned: no column names a file). `None` when
/// `input` is not a dataset.
pub fn partition_key(spec: &relspec_spec::workspace::WorkspaceSpec, input: &str) -> Option<Vec<String>> {
    let ds = spec.datasets.get(input)?;
    if ds.extract.is_some() {
        return Some(vec!["file".to_string()]);
    }
    Some(ds.scan.partition_cols.iter().map(|(c, _)| c.clone()).collect())
}

/// The partitioned input of a declaration, as the caller resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByInput {
    /// A dataset, with its partition key (empty: not partitioned).
    Dataset(Vec<String>),
    /// A rule that is itself incremental, with its partition key.
    Rule(Vec<String>),
    /// A rule that is not declared incremental.
    PlainRule,
}

/// Check a rule's `incremental = { by = "input" }` declaration against its
/// plan (`body`, before the total output sort); `reads` are the tables the
/// rule reads and `input` what `by` names. The error names the construct
/// that breaks distributivity. Besides distributing, the output must carry
/// the partition key as columns copied from `by` (that is how a partition's
/// rows are found in the previous output and replaced).
pub fn check_declaration(
    by: &str,
    body: &LogicalPlan,
    input: Option<ByInput>,
    reads: &[&str],
) -> Result<(), relspec_spec::error::Diag> {
    use relspec_spec::error::{Diag, ErrorKind};
    let decl = format!("the rule declares `incremental = {{ by = \"{by}\" }}`");
    let invalid = |m: String| Diag::new(ErrorKind::Invalid(format!("{decl}, but {m}")));
    if !reads.contains(&by) {
        let mut d = invalid(format!("it does not read `{by}`"));
        if let Some(s) = relspec_spec::suggest::suggest(by, reads) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        return Err(d);
    }
    let key = match input {
        Some(ByInput::Dataset(k) | ByInput::Rule(k)) if k.is_empty() => {
            return Err(invalid(format!("`{by}` has no partitions")).with_help(
                "partitions are a source's files or a dataset's hive directories (`[datasets.x.scan] partition_cols`)",
            ));
        }
        Some(ByInput::Dataset(k)) | Some(ByInput::Rule(k)) => k,
        Some(ByInput::PlainRule) | None => {
            return Err(invalid(format!("`{by}` is a rule that is not itself incremental")).with_help(
                "declare `incremental` on it too (its partitions are then this rule's), or read a dataset; a UNION ALL of rules is merged per branch without a declaration",
            ));
        }
    };
    let key_text = key.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    check(body, by, &key).map_err(|why| {
        invalid(format!("its plan does not distribute over the partitions of `{by}`: {why}")).with_help(format!(
            "the partition key of `{by}` is {key_text}; remove the declaration to recompute the rule as a whole"
        ))
    })?;
    let lineage = crate::lineage::of_plan(body);
    for k in &key {
        let copied = lineage.columns.iter().any(|c| {
            c.name == *k && matches!(c.sources.as_slice(), [s] if s.table == by && s.column == *k && s.how == crate::lineage::How::Copied)
        });
        if !copied {
            return Err(invalid(format!("its output has no column `{k}` copied from `{by}`")).with_help(format!(
                "select `{by}`'s partition key ({key_text}) unchanged under its own name: a partition's rows are found by it when the partition changes"
            )));
        }
    }
    Ok(())
}
