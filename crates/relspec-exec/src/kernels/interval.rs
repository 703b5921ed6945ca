//! `interval_align`: for each row's span, the innermost enclosing span of
//! another table (the seed's CST/SCIP span matching), in the builtin lane: a
//! left join on containment (plus the optional condition), then a
//! `row_number()` per left row over (width ascending, every right column
//! ascending) keeping rank 1.

use super::{KernelUse, choose_lane, spec};
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, ExprFunctionExt, JoinType, col, lit};

const LEFT_ID: &str = "__relspec_left_row";
const RANK: &str = "__relspec_align_rank";

/// Align `left` rows (span `l`) with the innermost enclosing `right` row (span `r`).
pub fn align(
    left: DataFrame,
    right: DataFrame,
    on: Option<Expr>,
    l: [Expr; 2],
    r: [Expr; 2],
) -> Result<(DataFrame, KernelUse)> {
    use datafusion::functions_window::expr_fn::row_number;
    let spec = spec("interval_align");
    let (lane, why) = choose_lane(spec, None, |_| Ok(()))?;
    let left_cols: Vec<Expr> = left.schema().columns().into_iter().map(Expr::Column).collect();
    let right_cols: Vec<Expr> = right.schema().columns().into_iter().map(Expr::Column).collect();
    // A row identity for the left side: which rows get numbers does not
    // matter, only that each left row (duplicates included) is its own group.
    let left = left.window(vec![row_number().alias(LEFT_ID)])?;
    let [l0, l1] = l;
    let [r0, r1] = r;
    let mut cond = r0.clone().lt_eq(l0).and(l1.lt_eq(r1.clone()));
    if let Some(on) = on {
        cond = on.and(cond);
    }
    let joined = left.join_on(right, JoinType::Left, [cond])?;
    let mut order = vec![(r1 - r0).sort(true, false)];
    order.extend(right_cols.iter().map(|c| c.clone().sort(true, true)));
    let rank = row_number().partition_by(vec![col(LEFT_ID)]).order_by(order).build()?.alias(RANK);
    let out: Vec<Expr> = left_cols.into_iter().chain(right_cols).collect();
    let df = joined.window(vec![rank])?.filter(col(RANK).eq(lit(1u64)))?.select(out)?;
    let use_ = KernelUse::of(
        spec,
        lane,
        "left join on containment + row_number() per left row, rank = 1",
        Some("right span width ascending, then every right column ascending".into()),
        why,
    );
    Ok((df, use_))
}
