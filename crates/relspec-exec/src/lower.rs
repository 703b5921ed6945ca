//! Lowering RelPlan to a DataFusion plan (through the DataFrame API), and the
//! compile-time contract check on the resulting schema.
//!
//! Architecture invariant: lowering reads tables only by logical name through
//! the session's catalog; it never sees a file path (the registry decides that).

use crate::error::{Diag, ErrorKind};
pub use crate::kernels::total_order;
use crate::kernels::{self, KernelUse};
use crate::relplan::{PStep, RelNode, RelPlan, SourcePos};
use crate::workspace::{ContractSpec, JoinHow, ParamValue, types};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::InSubquery;
use datafusion::logical_expr::{Expr, JoinType, SortExpr};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, Subquery};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{ExprWithAlias, OrderByExpr};
pub use relspec_spec::suggest::suggest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// A lowering error with its position inside the rule.
#[derive(Debug, Clone)]
pub struct LowerError {
    /// The diagnostic.
    pub diag: Diag,
    /// Where in the rule.
    pub pos: Option<SourcePos>,
}

/// Turn a DataFusion error into a diagnostic, keeping its SQL span if it has one.
pub fn df_error(e: DataFusionError, kind: fn(String) -> ErrorKind) -> LowerError {
    let pos = e.diagnostic().and_then(|d| d.span).and_then(|s| {
        (s.start.line > 0).then_some(SourcePos::Sql { line: s.start.line as usize, col: s.start.column as usize })
    });
    let msg = match e.diagnostic() {
        Some(d) => d.message.clone(),
        None => e.strip_backtrace().to_string(),
    };
    let mut diag = Diag::new(kind(clean_df_message(&msg)));
    if let Some(d) = e.diagnostic() {
        // DataFusion notes candidates as "possible column t.c": suggest the closest.
        let candidates: Vec<&str> = d.notes.iter().filter_map(|n| n.message.strip_prefix("possible column ")).collect();
        let name = msg.split('\'').nth(1).unwrap_or_default();
        let best = suggest(name, candidates.iter().map(|c| c.rsplit('.').next().unwrap_or(c)))
            .and_then(|b| candidates.iter().find(|c| c.rsplit('.').next() == Some(b.as_str())).copied());
        if let Some(b) = best.or(candidates.first().copied()) {
            diag = diag.with_help(format!("did you mean `{b}`?"));
        } else if let Some(h) = d.helps.first() {
            diag = diag.with_help(h.message.clone());
        }
    }
    if diag.help.is_none()
        && let DataFusionError::SchemaError(inner, _) = e.find_root()
        && let datafusion::common::SchemaError::FieldNotFound { field, valid_fields } = inner.as_ref()
    {
        let best = suggest(field.name(), valid_fields.iter().map(|c| c.name()));
        if let Some(c) = best.and_then(|b| valid_fields.iter().find(|c| c.name() == b)) {
            diag = diag.with_help(format!("did you mean `{}`?", c.flat_name()));
        }
    }
    LowerError { diag, pos }
}

fn clean_df_message(m: &str) -> String {
    let m = m.trim();
    for p in ["Error during planning: ", "Schema error: ", "SQL error: ", "type_coercion\ncaused by\n"] {
        if let Some(r) = m.strip_prefix(p) {
            return clean_df_message(r);
        }
    }
    m.to_string()
}

fn plan_err(pos: Option<SourcePos>) -> impl Fn(DataFusionError) -> LowerError {
    move |e| {
        let mut l = df_error(e, ErrorKind::Plan);
        if l.pos.is_none() {
            l.pos = pos;
        }
        l
    }
}

/// Convert a parameter to a DataFusion scalar (a list becomes a list scalar;
/// rules see lists only through [`bind_list_params`]).
pub fn scalar(p: &ParamValue) -> ScalarValue {
    match p {
        ParamValue::Int(i) => ScalarValue::Int64(Some(*i)),
        ParamValue::Float(b) => ScalarValue::Float64(Some(f64::from_bits(*b))),
        ParamValue::Bool(b) => ScalarValue::Boolean(Some(*b)),
        ParamValue::Str(s) => ScalarValue::Utf8(Some(s.clone())),
        ParamValue::List(vs) => {
            let values: Vec<ScalarValue> = vs.iter().map(scalar).collect();
            let ty = values.first().map(ScalarValue::data_type).unwrap_or(DataType::Utf8);
            ScalarValue::List(ScalarValue::new_list_nullable(&values, &ty))
        }
    }
}

/// The in-memory table of a list parameter: one column `value`, one row per
/// distinct element (an empty list has a string column and no rows). It is
/// a `VALUES` relation of literals in the plan, so the plan stays
/// self-contained (Substrait encodes it as a virtual table).
pub fn list_table(values: &[ParamValue]) -> datafusion::error::Result<LogicalPlan> {
    let mut scalars: Vec<ScalarValue> = values.iter().map(scalar).collect();
    scalars.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    scalars.dedup();
    if scalars.is_empty() {
        let none = Expr::Literal(ScalarValue::Utf8(None), None).alias("value");
        return LogicalPlanBuilder::empty(false).project(vec![none])?.build();
    }
    let rows: Vec<Vec<Expr>> = scalars.into_iter().map(|v| vec![Expr::Literal(v, None)]).collect();
    LogicalPlanBuilder::values(rows)?.project(vec![datafusion::prelude::col("column1").alias("value")])?.build()
}

/// Bind list parameters: `x IN ($list)` becomes `x IN (SELECT value FROM
/// <in-memory table of the list>)`, which the optimizer plans as a semi join
/// (`NOT IN`: an anti join); the values are data, never SQL text. A list
/// parameter anywhere else is an error.
pub fn bind_list_params(plan: LogicalPlan, params: &BTreeMap<String, ParamValue>) -> Result<LogicalPlan, LowerError> {
    let list_of = |p: &Expr| match p {
        Expr::Placeholder(ph) => match params.get(ph.id.trim_start_matches(['$', ':', '@'])) {
            Some(ParamValue::List(vs)) => Some((ph.id.trim_start_matches(['$', ':', '@']).to_string(), vs.clone())),
            _ => None,
        },
        _ => None,
    };
    let bound = plan
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match &e {
                    Expr::InList(il) if il.list.len() == 1 && list_of(&il.list[0]).is_some() => {
                        let (_, values) = list_of(&il.list[0]).unwrap();
                        let sub = Subquery {
                            subquery: Arc::new(list_table(&values)?),
                            outer_ref_columns: vec![],
                            spans: Default::default(),
                        };
                        Ok(Transformed::yes(Expr::InSubquery(InSubquery::new(il.expr.clone(), sub, il.negated))))
                    }
                    _ => Ok(Transformed::no(e)),
                })
            })
        })
        .map_err(plan_err(None))?
        .data;
    let mut misused = None;
    let _ = bound.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Some((name, _)) = list_of(x) {
                    misused = Some(name);
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    if let Some(name) = misused {
        let diag = Diag::new(ErrorKind::Plan(format!(
            "`${name}` is a list parameter: it can only be matched against, as in `x IN ${name}`"
        )))
        .with_help(format!("write `x IN ${name}` or `x = ANY(${name})` (or `NOT IN` / `<> ALL`) in a filter or WHERE"));
        return Err(LowerError { diag, pos: None });
    }
    Ok(bound)
}

/// The lowered plan and the kernels it used.
pub struct Lowered {
    /// The DataFrame (unoptimized logical plan inside), output order made total.
    pub df: DataFrame,
    /// Kernel applications and the lane each one took.
    pub kernels: Vec<KernelUse>,
    /// The rule's own plan (params bound), before the total output sort.
    pub body: datafusion::logical_expr::LogicalPlan,
}

/// Lower a RelPlan into a DataFrame over the session's registered tables.
/// Parameters are bound as values; the result is sorted by every column so
/// its row order is deterministic.
pub async fn lower(
    ctx: &SessionContext,
    plan: &RelPlan,
    params: &BTreeMap<String, ParamValue>,
) -> Result<Lowered, LowerError> {
    let mut kernels_used = Vec::new();
    // A pipeline's plan after each step (to locate analyzer errors).
    let mut step_plans = Vec::new();
    let df = match &plan.root {
        RelNode::Sql(stmt) => {
            let state = ctx.state();
            let lp = state.statement_to_plan(DFStatement::Statement(stmt.clone())).await.map_err(plan_err(None))?;
            DataFrame::new(state, lp)
        }
        RelNode::Pipeline { from, steps } => {
            let mut df = ctx.table(from.as_str()).await.map_err(plan_err(None))?;
            for (i, step) in steps.iter().enumerate() {
                df = lower_step(ctx, df, step, &mut kernels_used).await.map_err(|mut e| {
                    e.pos = e.pos.or(Some(SourcePos::Step(i)));
                    e
                })?;
                step_plans.push(df.logical_plan().clone());
            }
            df
        }
    };
    let df = if plan.params.iter().any(|p| matches!(params.get(p), Some(ParamValue::List(_)))) {
        let (state, lp) = df.into_parts();
        DataFrame::new(state, bind_list_params(lp, params)?)
    } else {
        df
    };
    let mut missing = Vec::new();
    let mut map = HashMap::new();
    for name in &plan.params {
        match params.get(name) {
            Some(ParamValue::List(_)) => {}
            Some(v) => {
                map.insert(name.clone(), scalar(v).into());
            }
            None => missing.push(name.clone()),
        }
    }
    if let Some(name) = missing.first() {
        let mut d = Diag::new(ErrorKind::UnknownParam(name.clone()));
        d = d.with_help(match suggest(name, params.keys()) {
            Some(s) => format!("did you mean `${s}`? Parameters are declared in [params]"),
            None => format!("declare it in [params], e.g. `{name} = 1`"),
        });
        return Err(LowerError { diag: d, pos: None });
    }
    let df = if map.is_empty() { df } else { df.with_param_values(ParamValues::Map(map)).map_err(plan_err(None))? };
    // Type errors and other analyzer checks (what execution would reject), once
    // per rule; in a pipeline, point at the first step whose prefix fails.
    let state = ctx.state();
    let analyze = |p: &datafusion::logical_expr::LogicalPlan| {
        state.analyzer().execute_and_check(p.clone(), state.config_options(), |_, _| {})
    };
    if let Err(e) = analyze(df.logical_plan()) {
        let mut l = df_error(e, ErrorKind::Plan);
        if l.pos.is_none() {
            l.pos = step_plans.iter().position(|p| analyze(p).is_err()).map(SourcePos::Step);
        }
        return Err(l);
    }
    check_unique_names(&df)?;
    let body = df.logical_plan().clone();
    kernels_used.extend(kernels::plan_uses(&body));
    let order: Vec<SortExpr> = df.schema().columns().into_iter().map(|c| Expr::Column(c).sort(true, true)).collect();
    let df = df.sort(order).map_err(plan_err(None))?;
    Ok(Lowered { df, kernels: kernels_used, body })
}

fn check_unique_names(df: &DataFrame) -> Result<(), LowerError> {
    let mut seen = HashSet::new();
    for f in df.schema().fields() {
        if !seen.insert(f.name().clone()) {
            return Err(LowerError {
                diag: Diag::new(ErrorKind::Plan(format!("the output has two columns named `{}`", f.name()))).with_help(
                    "add a select step (or SELECT list) that names every output column once, e.g. `a.id AS a_id`",
                ),
                pos: None,
            });
        }
    }
    Ok(())
}

fn sql_expr(ctx: &SessionContext, e: &ExprWithAlias, schema: &DFSchema) -> datafusion::error::Result<Expr> {
    ctx.state().create_logical_expr_from_sql_expr(e.clone(), schema)
}

fn sort_exprs(ctx: &SessionContext, os: &[OrderByExpr], schema: &DFSchema) -> datafusion::error::Result<Vec<SortExpr>> {
    os.iter()
        .map(|o| {
            let e = sql_expr(ctx, &ExprWithAlias { expr: o.expr.clone(), alias: None }, schema)?;
            let asc = o.options.asc.unwrap_or(true);
            Ok(e.sort(asc, o.options.nulls_first.unwrap_or(!asc)))
        })
        .collect()
}

async fn lower_step(
    ctx: &SessionContext,
    df: DataFrame,
    step: &PStep,
    kernels_used: &mut Vec<KernelUse>,
) -> Result<DataFrame, LowerError> {
    let e = plan_err(None);
    let schema = df.schema().clone();
    let plain = |x: &datafusion::sql::sqlparser::ast::Expr| ExprWithAlias { expr: x.clone(), alias: None };
    Ok(match step {
        PStep::Join { table, alias, on, how } => {
            let mut right = ctx.table(table.as_str()).await.map_err(&e)?;
            if let Some(a) = alias {
                right = right.alias(a).map_err(&e)?;
            }
            let joined = schema.join(right.schema()).map_err(&e)?;
            let cond = sql_expr(ctx, &plain(on), &joined).map_err(&e)?;
            let jt = match how {
                JoinHow::Inner => JoinType::Inner,
                JoinHow::Left => JoinType::Left,
                JoinHow::Right => JoinType::Right,
                JoinHow::Full => JoinType::Full,
                JoinHow::Semi => JoinType::LeftSemi,
                JoinHow::Anti => JoinType::LeftAnti,
            };
            df.join_on(right, jt, [cond]).map_err(&e)?
        }
        PStep::Filter(f) => {
            let p = sql_expr(ctx, &plain(f), &schema).map_err(&e)?;
            df.filter(p).map_err(&e)?
        }
        PStep::Select(xs) => {
            let exprs = xs.iter().map(|x| sql_expr(ctx, x, &schema)).collect::<Result<Vec<_>, _>>().map_err(&e)?;
            df.select(exprs).map_err(&e)?
        }
        PStep::Aggregate { group_by, measures } => {
            let g = group_by.iter().map(|x| sql_expr(ctx, x, &schema)).collect::<Result<Vec<_>, _>>().map_err(&e)?;
            let m = measures.iter().map(|x| sql_expr(ctx, x, &schema)).collect::<Result<Vec<_>, _>>().map_err(&e)?;
            df.aggregate(g, m).map_err(&e)?
        }
        PStep::Union { table, distinct } => {
            let other = ctx.table(table.as_str()).await.map_err(&e)?;
            if *distinct { df.union_distinct(other).map_err(&e)? } else { df.union(other).map_err(&e)? }
        }
        PStep::Sort(os) => {
            let keys = sort_exprs(ctx, os, &schema).map_err(&e)?;
            df.sort(total_order(keys, &schema)).map_err(&e)?
        }
        PStep::Limit { n, offset } => df.limit(*offset as usize, Some(*n as usize)).map_err(&e)?,
        PStep::Winner { partition_by, order_by } => {
            let parts = partition_by
                .iter()
                .map(|x| sql_expr(ctx, &plain(x), &schema))
                .collect::<Result<Vec<_>, _>>()
                .map_err(&e)?;
            let keys = sort_exprs(ctx, order_by, &schema).map_err(&e)?;
            let (df, lane) = kernels::winner(df, parts, keys).map_err(&e)?;
            kernels_used.push(lane);
            df
        }
        PStep::Explode { column, alias, lane } => {
            let (df, used) =
                kernels::explode::explode(ctx, df, column, alias.as_deref(), lane.as_deref()).map_err(&e)?;
            kernels_used.push(used);
            df
        }
        PStep::IntervalAlign { table, alias, on, left, right } => {
            let mut other = ctx.table(table.as_str()).await.map_err(&e)?;
            if let Some(a) = alias {
                other = other.alias(a).map_err(&e)?;
            }
            let joined = schema.join(other.schema()).map_err(&e)?;
            let span = |xs: &[datafusion::sql::sqlparser::ast::Expr; 2], s: &DFSchema| {
                Ok::<_, LowerError>([
                    sql_expr(ctx, &plain(&xs[0]), s).map_err(&e)?,
                    sql_expr(ctx, &plain(&xs[1]), s).map_err(&e)?,
                ])
            };
            let l = span(left, &schema)?;
            let r = span(right, other.schema())?;
            let on = on.as_ref().map(|o| sql_expr(ctx, &plain(o), &joined)).transpose().map_err(&e)?;
            let (df, used) = kernels::interval::align(df, other, on, l, r).map_err(&e)?;
            kernels_used.push(used);
            df
        }
    })
}

/// Check that every `partition_by` column of a rule is one of its output
/// columns `have` (at planning, and when a reused output is published).
pub fn check_partition_by(have: &[&str], cols: &[String]) -> Result<(), Diag> {
    for c in cols {
        if !have.contains(&c.as_str()) {
            let hint = suggest(c, have.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(Diag::new(ErrorKind::Plan(format!(
                "partition_by names `{c}`, which the output does not have{hint}"
            ))));
        }
    }
    if cols.len() == have.len() && !cols.is_empty() {
        return Err(Diag::new(ErrorKind::Plan("partition_by names every output column; files would have none".into())));
    }
    Ok(())
}

/// Check a rule's output schema against its contract (names, types, nullability).
pub fn check_contract(schema: &DFSchema, contract: &ContractSpec) -> Result<(), Diag> {
    let mut problems = Vec::new();
    for col in &contract.columns {
        let want = types::parse_type(&col.data_type).map_err(|m| Diag::new(ErrorKind::Invalid(m)))?;
        match schema.fields().iter().find(|f| f.name() == &col.name) {
            None => {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let hint = suggest(&col.name, have.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                problems.push(format!("missing column `{}` of type {}{hint}", col.name, types::type_name(&want)));
            }
            Some(f) => {
                if types::type_family(f.data_type()) != types::type_family(&want) {
                    problems.push(format!(
                        "column `{}` has type {}, the contract requires {}",
                        col.name,
                        types::type_name(f.data_type()),
                        types::type_name(&want)
                    ));
                }
                if col.nullable == Some(false) && f.is_nullable() {
                    problems.push(format!("column `{}` is nullable, the contract requires NOT NULL", col.name));
                }
            }
        }
    }
    let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for check in &contract.checks {
        let cols: Vec<&str> = match check {
            crate::workspace::DataCheck::Unique(cs) => cs.iter().map(String::as_str).collect(),
            crate::workspace::DataCheck::NotNull(c) => vec![c.as_str()],
            crate::workspace::DataCheck::AcceptedValues { column, .. } => vec![column.as_str()],
            crate::workspace::DataCheck::References { column, .. } => vec![column.as_str()],
        };
        for c in cols {
            if !have.contains(&c) {
                let hint =
                    suggest(c, have.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                problems.push(format!("{} names column `{c}`, which the output does not have{hint}", check.describe()));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Diag::new(ErrorKind::Contract { contract: contract.name.clone(), message: problems.join("; ") })
            .with_help("change the rule's output (select/cast the columns) or the contract"))
    }
}
