//! RelPlan: relspec's engine-independent relational IR, and the rule compiler
//! front end (rule definition -> RelPlan -> canonical signature).
//!
//! Architecture invariant: compiling a rule to RelPlan needs no schema and no
//! DataFusion session: it is a pure function of the rule's definition, so a
//! signature costs microseconds and a no-op build plans nothing.

use crate::error::{Diag, ErrorKind};
use crate::key::StableName;
use crate::workspace::{JoinHow, RuleBody, RuleDef, Step};
use sqlparser::ast::{
    Expr as SqlExpr, ExprWithAlias, FunctionArg, FunctionArgExpr, Ident, ObjectNamePart, OrderByExpr, Query, Statement,
    TableFactor, Value, Visit, VisitMut, Visitor, VisitorMut,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Version of the canonical serialization; bump when it changes.
pub const RELPLAN_VERSION: &str = "relplan/v2";

/// A compiled rule: the IR plus what it reads and which parameters it binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelPlan {
    /// The relational tree.
    pub root: RelNode,
    /// Logical table names read (datasets or rules), sorted, CTE names excluded.
    pub reads: Vec<String>,
    /// Parameter names referenced (`$name`), sorted.
    pub params: Vec<String>,
    /// Canonical serialization (see [`RELPLAN_VERSION`]).
    pub canonical: String,
}

/// The body of a RelPlan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RelNode {
    /// A SQL query (parsed).
    Sql(Box<Statement>),
    /// A pipeline of relational steps.
    Pipeline {
        /// First table.
        from: String,
        /// Steps in order.
        steps: Vec<PStep>,
    },
}

/// A parsed pipeline step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PStep {
    /// Join.
    Join {
        /// Table read.
        table: String,
        /// Alias.
        alias: Option<String>,
        /// Condition.
        on: SqlExpr,
        /// Kind.
        how: JoinHow,
    },
    /// Filter.
    Filter(SqlExpr),
    /// Projection.
    Select(Vec<ExprWithAlias>),
    /// Aggregation.
    Aggregate {
        /// Group keys.
        group_by: Vec<ExprWithAlias>,
        /// Aggregates.
        measures: Vec<ExprWithAlias>,
    },
    /// Union with another table.
    Union {
        /// Table read.
        table: String,
        /// Distinct.
        distinct: bool,
    },
    /// Sort (made total at lowering).
    Sort(Vec<OrderByExpr>),
    /// Limit/offset.
    Limit {
        /// Rows.
        n: u64,
        /// Skip.
        offset: u64,
    },
    /// Winner selection kernel (`stable_dedupe`).
    Winner {
        /// Partition keys.
        partition_by: Vec<SqlExpr>,
        /// Ordering (ties broken by every other column, ascending).
        order_by: Vec<OrderByExpr>,
    },
    /// The `explode` kernel.
    Explode {
        /// The list column (normalized name).
        column: String,
        /// Name of the element column.
        alias: Option<String>,
        /// A forced lane, if any.
        lane: Option<String>,
    },
    /// The `interval_align` kernel.
    IntervalAlign {
        /// Table of enclosing spans.
        table: String,
        /// Its alias.
        alias: Option<String>,
        /// Extra join condition.
        on: Option<SqlExpr>,
        /// The row's span.
        left: Box<[SqlExpr; 2]>,
        /// The enclosing span.
        right: Box<[SqlExpr; 2]>,
    },
}

/// Where in the rule's source a compile error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourcePos {
    /// 1-based line/column inside the SQL text.
    Sql {
        /// Line (1-based) within the SQL text.
        line: usize,
        /// Column (1-based).
        col: usize,
    },
    /// Index of the pipeline step.
    Step(usize),
}

/// A compile error plus where it happened inside the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// The diagnostic (no file location yet).
    pub diag: Diag,
    /// Position inside the rule.
    pub pos: Option<SourcePos>,
}

fn dialect() -> GenericDialect {
    GenericDialect {}
}

/// Extract `Line: X, Column: Y` from a sqlparser error.
fn parser_error(e: ParserError) -> CompileError {
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "recursion limit exceeded".into(),
    };
    let pos = msg.rfind("Line: ").and_then(|i| {
        let rest = &msg[i + 6..];
        let (line, rest) = rest.split_once(',')?;
        let col = rest.trim().strip_prefix("Column: ")?;
        let col: String = col.chars().take_while(|c| c.is_ascii_digit()).collect();
        Some(SourcePos::Sql { line: line.trim().parse().ok()?, col: col.parse().ok()? })
    });
    let clean = match msg.rfind(" at Line: ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    CompileError { diag: Diag::new(ErrorKind::SqlSyntax(clean)), pos }
}

/// How deeply SQL may nest (expressions, subqueries, set operations).
/// sqlparser's default (50) rejects a `UNION ALL` of 50 rules; its
/// `recursive-protection` feature grows the stack on the heap as it goes, so a
/// high limit is safe, and deeper input still gets a diagnostic, not an abort.
pub const SQL_RECURSION_LIMIT: usize = 10_000;

/// `x IN $list` is not SQL syntax; read it as `x IN ($list)` (parentheses
/// inserted around a placeholder that follows `IN`).
fn paren_in_params(sql: &str) -> std::borrow::Cow<'_, str> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::Tokenizer;
    let Ok(tokens) = Tokenizer::new(&dialect(), sql).tokenize_with_location() else { return sql.into() };
    let significant: Vec<_> = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
    let mut at = Vec::new();
    for w in significant.windows(2) {
        if let (Token::Word(kw), Token::Placeholder(p)) = (&w[0].token, &w[1].token)
            && kw.keyword == Keyword::IN
        {
            let start = w[1].span.start;
            at.push((start.line as usize, start.column as usize, p.chars().count()));
        }
    }
    if at.is_empty() {
        return sql.into();
    }
    let lines: Vec<usize> =
        std::iter::once(0).chain(sql.char_indices().filter(|(_, c)| *c == '\n').map(|(i, _)| i + 1)).collect();
    let byte_at = |line: usize, col: usize| {
        let start = lines.get(line.saturating_sub(1)).copied().unwrap_or(sql.len());
        sql[start..].char_indices().nth(col.saturating_sub(1)).map(|(i, _)| start + i).unwrap_or(sql.len())
    };
    let mut out = sql.to_string();
    for (line, col, len) in at.into_iter().rev() {
        let b = byte_at(line, col);
        let e = out[b..].char_indices().nth(len).map(|(i, _)| b + i).unwrap_or(out.len());
        out.insert(e, ')');
        out.insert(b, '(');
    }
    out.into()
}

/// `x = ANY($list)` and `x <> ALL($list)` are `x IN ($list)` and `x NOT IN
/// ($list)` (one form for lowering and for signatures).
struct AnyToIn;
impl VisitorMut for AnyToIn {
    type Break = ();
    fn post_visit_expr(&mut self, e: &mut SqlExpr) -> ControlFlow<()> {
        use sqlparser::ast::BinaryOperator as Op;
        let placeholder = |x: &SqlExpr| matches!(x, SqlExpr::Value(v) if matches!(v.value, Value::Placeholder(_)));
        let rewrite = match e {
            SqlExpr::AnyOp { left, compare_op: Op::Eq, right, .. } if placeholder(right) => Some((left, right, false)),
            SqlExpr::AllOp { left, compare_op: Op::NotEq, right } if placeholder(right) => Some((left, right, true)),
            _ => None,
        };
        if let Some((left, right, negated)) = rewrite {
            let (left, right) = (std::mem::replace(left.as_mut(), SqlExpr::value(Value::Null)), (**right).clone());
            *e = SqlExpr::InList { expr: Box::new(left), list: vec![right], negated };
        }
        ControlFlow::Continue(())
    }
}

fn parse_query(sql: &str) -> std::result::Result<Statement, CompileError> {
    let d = dialect();
    let sql = paren_in_params(sql);
    let mut stmts = Parser::new(&d)
        .with_recursion_limit(SQL_RECURSION_LIMIT)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(parser_error)?;
    for s in stmts.iter_mut() {
        let _ = s.visit(&mut AnyToIn);
    }
    match stmts.len() {
        0 => Err(CompileError { diag: Diag::new(ErrorKind::SqlSyntax("the rule has no SQL query".into())), pos: None }),
        1 => {
            let s = stmts.pop().unwrap();
            match s {
                Statement::Query(_) => Ok(s),
                other => Err(CompileError {
                    diag: Diag::new(ErrorKind::SqlSyntax(format!(
                        "a rule is one query (SELECT/WITH/VALUES), not `{}`",
                        other.to_string().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                    ))),
                    pos: Some(SourcePos::Sql { line: 1, col: 1 }),
                }),
            }
        }
        n => Err(CompileError {
            diag: Diag::new(ErrorKind::SqlSyntax(format!("a rule is one query, found {n} statements")))
                .with_help("split the statements into separate rules"),
            pos: None,
        }),
    }
}

fn parse_with<T: VisitMut>(
    text: &str,
    f: impl FnOnce(&mut Parser) -> std::result::Result<T, ParserError>,
) -> std::result::Result<T, String> {
    let d = dialect();
    let sql = paren_in_params(text);
    let mut p =
        Parser::new(&d).with_recursion_limit(SQL_RECURSION_LIMIT).try_with_sql(&sql).map_err(|e| e.to_string())?;
    let mut v = f(&mut p).map_err(|e| e.to_string())?;
    let _ = v.visit(&mut AnyToIn);
    if p.peek_token().token != Token::EOF {
        return Err(format!("unexpected `{}` after the expression in `{text}`", p.peek_token().token));
    }
    Ok(v)
}

/// Parse `expr [AS alias]`.
pub fn parse_expr_alias(text: &str) -> std::result::Result<ExprWithAlias, String> {
    parse_with(text, |p| p.parse_expr_with_alias())
}
/// Parse a bare expression.
pub fn parse_expr(text: &str) -> std::result::Result<SqlExpr, String> {
    parse_with(text, |p| p.parse_expr())
}
/// Parse `expr [ASC|DESC] [NULLS FIRST|LAST]`.
pub fn parse_order(text: &str) -> std::result::Result<OrderByExpr, String> {
    parse_with(text, |p| p.parse_order_by_expr())
}

/// Table functions whose first argument names a table they read.
pub const TABLE_KERNELS: &[&str] = &["explode"];

/// Collects table reads (CTE-scoped) and parameter names.
#[derive(Default)]
struct ReadCollector {
    cte_scopes: Vec<Vec<String>>,
    reads: BTreeSet<String>,
    first_spans: Vec<(String, usize, usize)>,
    params: BTreeSet<String>,
    param_spans: Vec<(String, usize, usize)>,
}

impl Visitor for ReadCollector {
    type Break = ();
    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let names = q
            .with
            .as_ref()
            .map(|w| w.cte_tables.iter().map(|c| normalize_ident(&c.alias.name)).collect())
            .unwrap_or_default();
        self.cte_scopes.push(names);
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.cte_scopes.pop();
        ControlFlow::Continue(())
    }
    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args: None, .. } = t
            && let Some(ObjectNamePart::Identifier(last)) = name.0.last()
        {
            let n = normalize_ident(last);
            let shadowed = name.0.len() == 1 && self.cte_scopes.iter().any(|s| s.contains(&n));
            if !shadowed && self.reads.insert(n.clone()) {
                let s = last.span.start;
                self.first_spans.push((n, s.line as usize, s.column as usize));
            }
        }
        // A table-valued kernel reads the table its first argument names:
        // `explode('tags_table', 'tags')`.
        if let TableFactor::Table { name, args: Some(args), .. } = t
            && let Some(ObjectNamePart::Identifier(f)) = name.0.last()
            && TABLE_KERNELS.contains(&normalize_ident(f).as_str())
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))) = args.args.first()
            && let Value::SingleQuotedString(table) = &v.value
        {
            let n = table.to_lowercase();
            let shadowed = self.cte_scopes.iter().any(|s| s.contains(&n));
            if !shadowed && self.reads.insert(n.clone()) {
                let s = v.span.start;
                self.first_spans.push((n, s.line as usize, s.column as usize));
            }
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_expr(&mut self, e: &SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
        {
            let name = p.trim_start_matches(['$', ':', '@']).to_string();
            if self.params.insert(name.clone()) {
                let s = v.span.start;
                self.param_spans.push((name, s.line as usize, s.column as usize));
            }
        }
        ControlFlow::Continue(())
    }
}

/// Lowercases unquoted identifiers (DataFusion treats them case-insensitively).
struct IdentNormalizer;
impl VisitorMut for IdentNormalizer {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &mut SqlExpr) -> ControlFlow<()> {
        match e {
            SqlExpr::Identifier(i) => lower_ident(i),
            SqlExpr::CompoundIdentifier(is) => is.iter_mut().for_each(lower_ident),
            _ => {}
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_relation(&mut self, r: &mut sqlparser::ast::ObjectName) -> ControlFlow<()> {
        for p in r.0.iter_mut() {
            if let ObjectNamePart::Identifier(i) = p {
                lower_ident(i)
            }
        }
        ControlFlow::Continue(())
    }
}

fn lower_ident(i: &mut Ident) {
    if i.quote_style.is_none() {
        i.value = i.value.to_lowercase();
    }
}

/// The name an identifier refers to (unquoted names are case-insensitive).
pub fn normalize_ident(i: &Ident) -> String {
    if i.quote_style.is_none() { i.value.to_lowercase() } else { i.value.clone() }
}

fn canonical_sql<T: VisitMut + Clone + std::fmt::Display>(node: &T) -> String {
    let mut n = node.clone();
    let _ = n.visit(&mut IdentNormalizer);
    lower_unquoted_words(&n.to_string())
}

/// Lowercase every unquoted word (keywords, aliases, function names):
/// DataFusion resolves them case-insensitively. Quoted identifiers and string
/// literals keep their case.
fn lower_unquoted_words(sql: &str) -> String {
    use sqlparser::tokenizer::{Token, Tokenizer};
    match Tokenizer::new(&dialect(), sql).tokenize() {
        Ok(tokens) => tokens
            .into_iter()
            .map(|t| match t {
                Token::Word(mut w) if w.quote_style.is_none() => {
                    w.value = w.value.to_lowercase();
                    Token::Word(w).to_string()
                }
                t => t.to_string(),
            })
            .collect(),
        Err(_) => sql.to_string(),
    }
}

/// Where a read table is first mentioned (for "unknown table" diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadSite {
    /// Table name.
    pub name: String,
    /// Position in the rule.
    pub pos: Option<SourcePos>,
}

/// Compile a rule definition to RelPlan. Pure: needs no schema or session.
pub fn compile(def: &RuleDef) -> std::result::Result<(RelPlan, Vec<ReadSite>), CompileError> {
    let mut reads = ReadCollector::default();
    let mut sites = Vec::new();
    let mut canon = vec![RELPLAN_VERSION.to_string()];
    let root = match &def.body {
        RuleBody::Sql(sql) => {
            let stmt = parse_query(sql)?;
            let _ = stmt.visit(&mut reads);
            for (n, line, col) in &reads.first_spans {
                sites.push(ReadSite { name: n.clone(), pos: Some(SourcePos::Sql { line: *line, col: *col }) });
            }
            for (n, line, col) in &reads.param_spans {
                let pos = (*line > 0).then_some(SourcePos::Sql { line: *line, col: *col });
                sites.push(ReadSite { name: format!("${n}"), pos });
            }
            canon.push(format!("sql {}", canonical_sql(&stmt)));
            RelNode::Sql(Box::new(stmt))
        }
        RuleBody::Pipeline { from, steps } => {
            let from_n = from.to_lowercase();
            reads.reads.insert(from_n.clone());
            sites.push(ReadSite { name: from_n.clone(), pos: None });
            canon.push(format!("from {from_n}"));
            let mut psteps = Vec::new();
            for (i, s) in steps.iter().enumerate() {
                let err = |m: String| CompileError {
                    diag: Diag::new(ErrorKind::SqlSyntax(m)),
                    pos: Some(SourcePos::Step(i)),
                };
                let exprs = |v: &[String]| -> std::result::Result<Vec<ExprWithAlias>, CompileError> {
                    v.iter().map(|t| parse_expr_alias(t).map_err(err)).collect()
                };
                let orders = |v: &[String]| -> std::result::Result<Vec<OrderByExpr>, CompileError> {
                    v.iter().map(|t| parse_order(t).map_err(err)).collect()
                };
                let ps = match s {
                    Step::Join { table, alias, on, how } => {
                        let t = table.to_lowercase();
                        if reads.reads.insert(t.clone()) {
                            sites.push(ReadSite { name: t.clone(), pos: Some(SourcePos::Step(i)) });
                        }
                        PStep::Join { table: t, alias: alias.clone(), on: parse_expr(on).map_err(err)?, how: *how }
                    }
                    Step::Filter(f) => PStep::Filter(parse_expr(f).map_err(err)?),
                    Step::Select(v) => PStep::Select(exprs(v)?),
                    Step::Aggregate { group_by, measures } => {
                        PStep::Aggregate { group_by: exprs(group_by)?, measures: exprs(measures)? }
                    }
                    Step::Union { table, distinct } => {
                        let t = table.to_lowercase();
                        if reads.reads.insert(t.clone()) {
                            sites.push(ReadSite { name: t.clone(), pos: Some(SourcePos::Step(i)) });
                        }
                        PStep::Union { table: t, distinct: *distinct }
                    }
                    Step::Sort(v) => PStep::Sort(orders(v)?),
                    Step::Limit { n, offset } => PStep::Limit { n: *n, offset: *offset },
                    Step::Winner { partition_by, order_by } => PStep::Winner {
                        partition_by: partition_by
                            .iter()
                            .map(|t| parse_expr(t).map_err(err))
                            .collect::<std::result::Result<_, _>>()?,
                        order_by: orders(order_by)?,
                    },
                    Step::Explode { column, alias, lane } => PStep::Explode {
                        column: column_name(column).map_err(err)?,
                        alias: alias.clone(),
                        lane: lane.clone(),
                    },
                    Step::IntervalAlign { table, alias, on, left, right } => {
                        let t = table.to_lowercase();
                        if reads.reads.insert(t.clone()) {
                            sites.push(ReadSite { name: t.clone(), pos: Some(SourcePos::Step(i)) });
                        }
                        let e = |x: &String| parse_expr(x).map_err(err);
                        PStep::IntervalAlign {
                            table: t,
                            alias: alias.clone(),
                            on: on.as_ref().map(e).transpose()?,
                            left: Box::new([e(&left[0])?, e(&left[1])?]),
                            right: Box::new([e(&right[0])?, e(&right[1])?]),
                        }
                    }
                };
                canon.push(canonical_step(&ps));
                psteps.push(ps);
            }
            for ps in &psteps {
                visit_step(ps, &mut reads);
            }
            RelNode::Pipeline { from: from_n, steps: psteps }
        }
    };
    let plan = RelPlan {
        root,
        reads: reads.reads.into_iter().collect(),
        params: reads.params.into_iter().collect(),
        canonical: canon.join("\n"),
    };
    Ok((plan, sites))
}

fn visit_step(s: &PStep, v: &mut ReadCollector) {
    let mut e = |x: &SqlExpr| {
        let _ = x.visit(v);
    };
    match s {
        PStep::Join { on, .. } => e(on),
        PStep::Filter(f) => e(f),
        PStep::Select(xs) => xs.iter().for_each(|x| e(&x.expr)),
        PStep::Aggregate { group_by, measures } => group_by.iter().chain(measures).for_each(|x| e(&x.expr)),
        PStep::Sort(os) => os.iter().for_each(|o| e(&o.expr)),
        PStep::Winner { partition_by, order_by } => {
            partition_by.iter().for_each(&mut e);
            order_by.iter().for_each(|o| e(&o.expr));
        }
        PStep::IntervalAlign { on, left, right, .. } => {
            on.iter().chain(left.iter()).chain(right.iter()).for_each(&mut e);
        }
        PStep::Union { .. } | PStep::Limit { .. } | PStep::Explode { .. } => {}
    }
}

/// A column named in a step: an identifier (quoted or not), normalized.
fn column_name(text: &str) -> std::result::Result<String, String> {
    match parse_expr(text)? {
        SqlExpr::Identifier(i) => Ok(normalize_ident(&i)),
        SqlExpr::CompoundIdentifier(is) if !is.is_empty() => Ok(normalize_ident(is.last().unwrap())),
        other => Err(format!("`{other}` is not a column name")),
    }
}

fn canonical_step(s: &PStep) -> String {
    let list = |xs: &[ExprWithAlias]| xs.iter().map(canonical_sql).collect::<Vec<_>>().join(", ");
    let orders = |os: &[OrderByExpr]| os.iter().map(canonical_sql).collect::<Vec<_>>().join(", ");
    match s {
        PStep::Join { table, alias, on, how } => {
            let how = how.stable_name();
            format!("join {how} {table} as {} on {}", alias.as_deref().unwrap_or(table), canonical_sql(on))
        }
        PStep::Filter(f) => format!("filter {}", canonical_sql(f)),
        PStep::Select(xs) => format!("select {}", list(xs)),
        PStep::Aggregate { group_by, measures } => {
            format!("aggregate by [{}] measures [{}]", list(group_by), list(measures))
        }
        PStep::Union { table, distinct } => format!("union {table} distinct={distinct}"),
        PStep::Sort(os) => format!("sort {}", orders(os)),
        PStep::Limit { n, offset } => format!("limit {n} offset {offset}"),
        PStep::Winner { partition_by, order_by } => format!(
            "winner partition [{}] order [{}]",
            partition_by.iter().map(canonical_sql).collect::<Vec<_>>().join(", "),
            orders(order_by)
        ),
        PStep::Explode { column, alias, lane } => format!(
            "explode {} as {} lane {}",
            serde_json::Value::from(column.as_str()),
            serde_json::Value::from(alias.as_deref().unwrap_or(column)),
            lane.as_deref().unwrap_or("auto")
        ),
        PStep::IntervalAlign { table, alias, on, left, right } => format!(
            "interval_align {table} as {} on {} left [{}, {}] right [{}, {}]",
            alias.as_deref().unwrap_or(table),
            on.as_ref().map(canonical_sql).unwrap_or_else(|| "true".into()),
            canonical_sql(&left[0]),
            canonical_sql(&left[1]),
            canonical_sql(&right[0]),
            canonical_sql(&right[1])
        ),
    }
}

/// blake3 of the canonical serialization: the plan signature.
pub fn signature(plan: &RelPlan) -> String {
    crate::key::KeyHasher::new(RELPLAN_VERSION).str(&plan.canonical).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> RuleDef {
        RuleDef {
            body: RuleBody::Sql(s.into()),
            produces: None,
            tags: vec![],
            description: None,
            partition_by: vec![],
            incremental: None,
        }
    }

    #[test]
    fn reads_respect_cte_scope() {
        let (p, _) = compile(&sql("WITH a AS (SELECT * FROM b) SELECT * FROM a JOIN c AS b ON true")).unwrap();
        assert_eq!(p.reads, vec!["b".to_string(), "c".to_string()]);
        let (p, _) = compile(&sql("SELECT * FROM x WHERE id IN (SELECT id FROM y) AND v > $min")).unwrap();
        assert_eq!(p.reads, vec!["x".to_string(), "y".to_string()]);
        assert_eq!(p.params, vec!["min".to_string()]);
    }

    #[test]
    fn signature_ignores_format_and_keyword_case() {
        let a = compile(&sql("select  A, b from T -- c\n where x>1")).unwrap().0;
        let b = compile(&sql("SELECT a,\n  b\nFROM t WHERE x > 1")).unwrap().0;
        assert_eq!(signature(&a), signature(&b));
        let c = compile(&sql("SELECT a, b FROM t WHERE x > 2")).unwrap().0;
        assert_ne!(signature(&a), signature(&c));
    }

    #[test]
    fn list_params_in_and_any_are_one_form() {
        let a = compile(&sql("SELECT * FROM t WHERE lang IN $langs")).unwrap().0;
        let b = compile(&sql("SELECT * FROM t WHERE lang = ANY($langs)")).unwrap().0;
        let c = compile(&sql("SELECT * FROM t WHERE lang IN ($langs)")).unwrap().0;
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(a.canonical, c.canonical);
        assert!(a.canonical.contains("lang in ($langs)"), "{}", a.canonical);
        assert_eq!(a.params, vec!["langs".to_string()]);
        let n = compile(&sql("SELECT * FROM t WHERE lang <> ALL($langs)")).unwrap().0;
        assert!(n.canonical.contains("lang not in ($langs)"), "{}", n.canonical);
        // A string that looks like one is left alone.
        let s = compile(&sql("SELECT 'x IN $langs' AS q FROM t")).unwrap().0;
        assert!(s.params.is_empty());
        assert_eq!(parse_expr("x IN $a").unwrap().to_string(), "x IN ($a)");
    }

    #[test]
    fn syntax_error_has_position() {
        let e = compile(&sql("SELECT a\nFROM t WHERE )")).unwrap_err();
        assert!(matches!(e.pos, Some(SourcePos::Sql { line: 2, .. })), "{e:?}");
    }
}
