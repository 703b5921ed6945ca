//! Column-level lineage, derived from a rule's DataFusion logical plan.
//!
//! For every output column: the upstream columns (of datasets or rules, by
//! logical table name) it derives from and how (copied, computed,
//! aggregated); for the rule as a whole: the upstream columns that decide
//! which rows appear (filter, join and ordering keys). Alongside, each column
//! gets a *value hash* and the rule a *rows hash*: hashes of how values and
//! rows are computed with column references replaced by their sources'
//! hashes, so aliases, formatting and column order do not matter. The
//! semantic diff compares them across versions.
//!
//! Architecture invariant: lineage is a pure function of the unoptimized
//! logical plan (before the total output sort `lower` appends); table names
//! are the logical names scans use, never paths.

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How a column is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// The value is passed through unchanged.
    Copied,
    /// The value is computed from it (an expression, a cast).
    Computed,
    /// The value aggregates it over a group or window.
    Aggregated,
    /// It decides which rows pass a filter.
    Filter,
    /// It is a join key or join condition.
    Join,
    /// It orders rows (sort, window order, winner selection partitions).
    Order,
}

impl How {
    /// Whether this use derives a value (as opposed to selecting rows).
    pub fn is_value(self) -> bool {
        matches!(self, How::Copied | How::Computed | How::Aggregated)
    }
}

/// An upstream column and how it is used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Source {
    /// Logical table (dataset or rule).
    pub table: String,
    /// Column of that table.
    pub column: String,
    /// How it is used.
    pub how: How,
}

/// Lineage of one output column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnLineage {
    /// Output column name.
    pub name: String,
    /// Arrow type, as DataFusion prints it.
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// The upstream columns its value derives from.
    pub sources: Vec<Source>,
    /// Hash of how the value is computed from its sources.
    pub value_hash: String,
}

/// Lineage of one rule's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RuleLineage {
    /// Output columns in order.
    pub columns: Vec<ColumnLineage>,
    /// Upstream columns used as filter, join or ordering keys.
    pub keys: Vec<Source>,
    /// Hash of how the set of rows is computed.
    pub rows_hash: String,
}

impl RuleLineage {
    /// The lineage of a column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnLineage> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Every upstream (table, column) this rule reads, for values or keys.
    pub fn reads(&self) -> BTreeSet<(String, String)> {
        self.columns
            .iter()
            .flat_map(|c| c.sources.iter())
            .chain(self.keys.iter())
            .map(|s| (s.table.clone(), s.column.clone()))
            .collect()
    }
}

/// Per output column of a plan node: sources and value hash.
#[derive(Debug, Clone, Default)]
struct Col {
    sources: BTreeMap<(String, String), How>,
    hash: String,
}

#[derive(Debug, Clone, Default)]
struct Node {
    cols: Vec<Col>,
    rows: String,
    /// Hash of the ordering in effect (for a following limit).
    order: Option<String>,
}

/// A value or rows hash: the one key hasher over the parts (shortened; these
/// hashes compare versions of one rule, they are not store keys).
fn h(parts: &[&str]) -> String {
    let mut hasher = relspec_spec::key::KeyHasher::new("relspec/lineage/v2");
    hasher.list("parts", parts.iter().copied());
    hasher.finish()[..32].to_string()
}

/// Compute the lineage of a plan (the plan `lower` built, before its final sort).
pub fn of_plan(plan: &LogicalPlan) -> RuleLineage {
    let mut keys = BTreeSet::new();
    let node = walk(plan, &mut keys);
    let schema = plan.schema();
    let columns = schema
        .fields()
        .iter()
        .zip(node.cols.iter().chain(std::iter::repeat(&Col::default())))
        .map(|(f, c)| ColumnLineage {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
            sources: c
                .sources
                .iter()
                .map(|((t, col), how)| Source { table: t.clone(), column: col.clone(), how: *how })
                .collect(),
            value_hash: c.hash.clone(),
        })
        .collect();
    RuleLineage { columns, keys: keys.into_iter().collect(), rows_hash: node.rows }
}

/// Resolve the columns an expression references against `schema` / `cols`.
struct Scope<'a> {
    schema: &'a DFSchema,
    cols: &'a [Col],
}

impl Scope<'_> {
    fn resolve(&self, c: &Column) -> Option<&Col> {
        self.schema.index_of_column(c).ok().and_then(|i| self.cols.get(i))
    }

    /// Sources of everything `e` references (including inside subqueries), with `how` applied.
    fn sources(&self, e: &Expr, how: How, keys: &mut BTreeSet<Source>) -> BTreeMap<(String, String), How> {
        let mut out: BTreeMap<(String, String), How> = BTreeMap::new();
        for c in e.column_refs() {
            if let Some(col) = self.resolve(c) {
                for (k, h0) in &col.sources {
                    let v = if how == How::Copied { *h0 } else { (*h0).max(how) };
                    let slot = out.entry(k.clone()).or_insert(v);
                    *slot = (*slot).max(v);
                }
            }
        }
        for sub in subqueries(e) {
            let n = walk(&sub, keys);
            for c in &n.cols {
                for k in c.sources.keys() {
                    keys.insert(Source { table: k.0.clone(), column: k.1.clone(), how: How::Filter });
                }
            }
        }
        out
    }

    /// Hash of `e` with column references replaced by their sources' hashes.
    fn hash(&self, e: &Expr, keys: &mut BTreeSet<Source>) -> String {
        let mut sub_hashes = Vec::new();
        for sub in subqueries(e) {
            let n = walk(&sub, keys);
            sub_hashes.push(n.rows.clone());
            sub_hashes.extend(n.cols.iter().map(|c| c.hash.clone()));
        }
        let replaced = e
            .clone()
            .transform_up(|x| match &x {
                Expr::Column(c) => {
                    let name = match self.resolve(c) {
                        Some(col) => format!("#{}", col.hash),
                        None => format!("#?{}", c.name),
                    };
                    Ok(Transformed::yes(Expr::Column(Column::new_unqualified(name))))
                }
                Expr::Alias(a) => Ok(Transformed::yes((*a.expr).clone())),
                _ => Ok(Transformed::no(x)),
            })
            .map(|t| t.data)
            .unwrap_or_else(|_| e.clone());
        let text = replaced.to_string();
        let mut parts = vec![text.as_str()];
        parts.extend(sub_hashes.iter().map(String::as_str));
        h(&parts)
    }

    fn add_keys(&self, e: &Expr, how: How, keys: &mut BTreeSet<Source>) {
        for ((t, c), _) in self.sources(e, how, keys) {
            keys.insert(Source { table: t, column: c, how });
        }
    }
}

fn subqueries(e: &Expr) -> Vec<LogicalPlan> {
    let mut out = Vec::new();
    let _ = e.apply(|x| {
        match x {
            Expr::ScalarSubquery(s) => out.push((*s.subquery).clone()),
            Expr::InSubquery(s) => out.push((*s.subquery.subquery).clone()),
            Expr::Exists(s) => out.push((*s.subquery.subquery).clone()),
            Expr::SetComparison(s) => out.push((*s.subquery.subquery).clone()),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

fn is_plain_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Alias(a) => is_plain_column(&a.expr),
        _ => false,
    }
}

fn walk(plan: &LogicalPlan, keys: &mut BTreeSet<Source>) -> Node {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.table().to_string();
            let cols = scan
                .projected_schema
                .fields()
                .iter()
                .map(|f| Col {
                    sources: BTreeMap::from([((table.clone(), f.name().clone()), How::Copied)]),
                    hash: h(&["scan", &table, f.name()]),
                })
                .collect();
            let mut rows = h(&["scan", &table]);
            if !scan.filters.is_empty() || scan.fetch.is_some() {
                let fs: Vec<String> = scan.filters.iter().map(|f| f.to_string()).collect();
                rows = h(&[&rows, &fs.join(","), &format!("{:?}", scan.fetch)]);
            }
            Node { cols, rows, order: None }
        }
        LogicalPlan::Projection(p) => {
            let input = walk(&p.input, keys);
            let scope = Scope { schema: p.input.schema(), cols: &input.cols };
            let cols = p
                .expr
                .iter()
                .map(|e| {
                    let how = if is_plain_column(e) { How::Copied } else { How::Computed };
                    Col { sources: scope.sources(e, how, keys), hash: scope.hash(e, keys) }
                })
                .collect();
            Node { cols, rows: input.rows, order: input.order }
        }
        LogicalPlan::Filter(f) => {
            let input = walk(&f.input, keys);
            let scope = Scope { schema: f.input.schema(), cols: &input.cols };
            scope.add_keys(&f.predicate, How::Filter, keys);
            let rows = h(&["filter", &input.rows, &scope.hash(&f.predicate, keys)]);
            Node { cols: input.cols, rows, order: input.order }
        }
        LogicalPlan::Join(j) => {
            let left = walk(&j.left, keys);
            let right = walk(&j.right, keys);
            let both_schema = j.left.schema().join(j.right.schema()).ok();
            let both: Vec<Col> = left.cols.iter().chain(right.cols.iter()).cloned().collect();
            let mut cond = Vec::new();
            if let Some(schema) = &both_schema {
                let scope = Scope { schema, cols: &both };
                for (l, r) in &j.on {
                    scope.add_keys(l, How::Join, keys);
                    scope.add_keys(r, How::Join, keys);
                    cond.push(format!("{}={}", scope.hash(l, keys), scope.hash(r, keys)));
                }
                if let Some(f) = &j.filter {
                    scope.add_keys(f, How::Join, keys);
                    cond.push(scope.hash(f, keys));
                }
            }
            let rows = h(&["join", &j.join_type.to_string(), &left.rows, &right.rows, &cond.join(",")]);
            let cols = match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => both,
                JoinType::LeftSemi | JoinType::LeftAnti => left.cols,
                JoinType::RightSemi | JoinType::RightAnti => right.cols,
                _ => fallback_cols(plan, &both, &rows),
            };
            Node { cols, rows, order: None }
        }
        LogicalPlan::Aggregate(a) => {
            let input = walk(&a.input, keys);
            let scope = Scope { schema: a.input.schema(), cols: &input.cols };
            let group_hashes: Vec<String> = a.group_expr.iter().map(|e| scope.hash(e, keys)).collect();
            let rows = h(&["aggregate", &input.rows, &group_hashes.join(",")]);
            let simple_groups = !a.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_)));
            let mut cols: Vec<Col> = Vec::new();
            if simple_groups {
                for (e, gh) in a.group_expr.iter().zip(&group_hashes) {
                    let how = if is_plain_column(e) { How::Copied } else { How::Computed };
                    cols.push(Col { sources: scope.sources(e, how, keys), hash: gh.clone() });
                }
                for e in &a.aggr_expr {
                    let hash = h(&["agg", &rows, &scope.hash(e, keys)]);
                    cols.push(Col { sources: scope.sources(e, How::Aggregated, keys), hash });
                }
            } else {
                cols = fallback_cols(plan, &input.cols, &rows);
            }
            Node { cols, rows, order: None }
        }
        LogicalPlan::Window(w) => {
            let input = walk(&w.input, keys);
            let scope = Scope { schema: w.input.schema(), cols: &input.cols };
            let mut cols = input.cols.clone();
            for e in &w.window_expr {
                let hash = h(&["window", &input.rows, &scope.hash(e, keys)]);
                cols.push(Col { sources: scope.sources(e, How::Aggregated, keys), hash });
                if let Expr::WindowFunction(wf) = strip_alias(e) {
                    for p in &wf.params.partition_by {
                        scope.add_keys(p, How::Order, keys);
                    }
                    for s in &wf.params.order_by {
                        scope.add_keys(&s.expr, How::Order, keys);
                    }
                }
            }
            Node { cols, rows: input.rows, order: None }
        }
        LogicalPlan::Sort(s) => {
            let input = walk(&s.input, keys);
            let scope = Scope { schema: s.input.schema(), cols: &input.cols };
            let mut parts = Vec::new();
            for e in &s.expr {
                scope.add_keys(&e.expr, How::Order, keys);
                parts.push(format!("{}:{}:{}", scope.hash(&e.expr, keys), e.asc, e.nulls_first));
            }
            let order = h(&["sort", &parts.join(",")]);
            match s.fetch {
                Some(n) => {
                    let rows = h(&["topk", &input.rows, &order, &n.to_string()]);
                    Node { cols: input.cols, rows, order: Some(order) }
                }
                None => Node { cols: input.cols, rows: input.rows, order: Some(order) },
            }
        }
        LogicalPlan::Limit(l) => {
            let input = walk(&l.input, keys);
            let skip = l.skip.as_ref().map(|e| e.to_string()).unwrap_or_default();
            let fetch = l.fetch.as_ref().map(|e| e.to_string()).unwrap_or_default();
            let rows = h(&["limit", &input.rows, input.order.as_deref().unwrap_or(""), &skip, &fetch]);
            Node { cols: input.cols, rows, order: input.order }
        }
        LogicalPlan::SubqueryAlias(a) => walk(&a.input, keys),
        LogicalPlan::Subquery(s) => walk(&s.subquery, keys),
        LogicalPlan::Repartition(r) => walk(&r.input, keys),
        LogicalPlan::Union(u) => {
            let inputs: Vec<Node> = u.inputs.iter().map(|i| walk(i, keys)).collect();
            let n = u.schema.fields().len();
            let cols = (0..n)
                .map(|i| {
                    let mut c = Col::default();
                    let mut hs = vec!["union".to_string()];
                    for inp in &inputs {
                        if let Some(ic) = inp.cols.get(i) {
                            for (k, v) in &ic.sources {
                                let slot = c.sources.entry(k.clone()).or_insert(*v);
                                *slot = (*slot).max(*v);
                            }
                            hs.push(ic.hash.clone());
                        }
                    }
                    c.hash = h(&hs.iter().map(String::as_str).collect::<Vec<_>>());
                    c
                })
                .collect();
            let mut rs = vec!["union".to_string()];
            rs.extend(inputs.iter().map(|i| i.rows.clone()));
            Node { cols, rows: h(&rs.iter().map(String::as_str).collect::<Vec<_>>()), order: None }
        }
        LogicalPlan::Distinct(Distinct::All(input)) => {
            let n = walk(input, keys);
            let hs: Vec<&str> = n.cols.iter().map(|c| c.hash.as_str()).collect();
            let rows = h(&["distinct", &n.rows, &hs.join(",")]);
            Node { cols: n.cols, rows, order: None }
        }
        LogicalPlan::Values(v) => {
            let n = v.schema.fields().len();
            let cols = (0..n)
                .map(|i| {
                    let vals: Vec<String> = v.values.iter().filter_map(|r| r.get(i)).map(|e| e.to_string()).collect();
                    Col { sources: BTreeMap::new(), hash: h(&["values", &vals.join(",")]) }
                })
                .collect();
            Node { cols, rows: h(&["values", &format!("{}", v.values.len())]), order: None }
        }
        LogicalPlan::EmptyRelation(e) => {
            let n = e.schema.fields().len();
            Node {
                cols: vec![Col { sources: BTreeMap::new(), hash: h(&["empty"]) }; n],
                rows: h(&["empty", &e.produce_one_row.to_string()]),
                order: None,
            }
        }
        other => {
            // Conservative: every output column derives from every input column.
            let inputs: Vec<Node> = other.inputs().into_iter().map(|i| walk(i, keys)).collect();
            let all: Vec<Col> = inputs.iter().flat_map(|n| n.cols.iter().cloned()).collect();
            let mut rs = vec![other.display().to_string()];
            rs.extend(inputs.iter().map(|i| i.rows.clone()));
            let rows = h(&rs.iter().map(String::as_str).collect::<Vec<_>>());
            Node { cols: fallback_cols(other, &all, &rows), rows, order: None }
        }
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        _ => e,
    }
}

/// Every output column of `plan` computed from all of `inputs`.
fn fallback_cols(plan: &LogicalPlan, inputs: &[Col], rows: &str) -> Vec<Col> {
    let mut sources = BTreeMap::new();
    for c in inputs {
        for k in c.sources.keys() {
            sources.insert(k.clone(), How::Computed);
        }
    }
    plan.schema()
        .fields()
        .iter()
        .map(|f| Col { sources: sources.clone(), hash: h(&["opaque", rows, f.name()]) })
        .collect()
}
