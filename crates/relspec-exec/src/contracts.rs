//! Data contracts: checks on a rule's materialized result (unique key, not
//! null, accepted values, references), evaluated as DataFusion queries over
//! the written object before it is stored or published.
//!
//! Architecture invariant: a failed check fails the rule; the build then
//! stores and publishes nothing for it, and the last good output stays.

use crate::lower::scalar;
use crate::workspace::{ContractSpec, DataCheck};
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, JoinType, SortExpr};
use datafusion::prelude::{SessionContext, col, ident, lit};
use serde::{Deserialize, Serialize};

/// Rows shown for a failed check.
const SAMPLE_ROWS: usize = 5;

/// The outcome of one data check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Contract name.
    pub contract: String,
    /// The check, e.g. `unique(src, dst)`.
    pub check: String,
    /// Whether it held.
    pub passed: bool,
    /// Offending rows (for `unique`: duplicated keys).
    pub violations: u64,
    /// Up to five offending rows, as a table.
    pub sample: Option<String>,
}

/// Evaluate every data check of `contract` on `result` (the written object:
/// each check is a streaming query over it, so a result larger than memory
/// is checked within the memory limit). Column and table names are used as
/// written (quoted identifiers), values are bound as literals.
pub async fn evaluate(ctx: &SessionContext, contract: &ContractSpec, result: DataFrame) -> Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    for check in &contract.checks {
        let offending: DataFrame = match check {
            DataCheck::NotNull(c) => result.clone().filter(ident(c).is_null())?,
            DataCheck::AcceptedValues { column, values } => {
                let list: Vec<Expr> = values.iter().map(|v| lit(scalar(v))).collect();
                result.clone().filter(ident(column).is_not_null().and(ident(column).in_list(list, true)))?
            }
            DataCheck::Unique(cols) => {
                let keys: Vec<Expr> = cols.iter().map(ident).collect();
                result
                    .clone()
                    .aggregate(keys, vec![count(lit(1)).alias("duplicates")])?
                    .filter(col("duplicates").gt(lit(1i64)))?
            }
            DataCheck::References { column, table, target_column } => {
                let target = ctx.table(table.as_str()).await?.select(vec![ident(target_column).alias("__ref")])?;
                result.clone().filter(ident(column).is_not_null())?.join_on(
                    target,
                    JoinType::LeftAnti,
                    [ident(column).eq(col("__ref"))],
                )?
            }
        };
        let n = offending.clone().count().await? as u64;
        let sample = if n > 0 {
            let order: Vec<SortExpr> =
                offending.schema().columns().into_iter().map(|c| Expr::Column(c).sort(true, true)).collect();
            let rows = offending.sort(order)?.limit(0, Some(SAMPLE_ROWS))?.collect().await?;
            Some(datafusion::arrow::util::pretty::pretty_format_batches(&rows)?.to_string())
        } else {
            None
        };
        out.push(CheckResult {
            contract: contract.name.clone(),
            check: check.describe(),
            passed: n == 0,
            violations: n,
            sample,
        });
    }
    Ok(out)
}
