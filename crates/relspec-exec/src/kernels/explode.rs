//! `explode`: one row per element of a list column, the parent row's other
//! columns repeated. Two lanes: DataFusion's `unnest` (builtin) and an Arrow
//! fallback (`take` over the list offsets). Also a table function,
//! `explode('table', 'column' [, 'alias'])`.
//!
//! Architecture invariant: both lanes produce the builtin lane's schema and
//! the same rows (null and empty lists give no rows; null elements are kept).

use super::fallback::{FallbackTable, Kernel};
use super::{KernelUse, Lane, choose_lane, spec};
use datafusion::arrow::array::{
    Array, ArrayRef, GenericListArray, OffsetSizeTrait, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProviderList, view::ViewTable};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Column, ScalarValue, UnnestOptions};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

fn options() -> UnnestOptions {
    UnnestOptions::new().with_preserve_nulls(false)
}

/// Why a lane cannot explode a column of type `t`.
fn lane_available(lane: Lane, t: &DataType) -> std::result::Result<(), String> {
    match (lane, t) {
        (Lane::Builtin, DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)) => Ok(()),
        (Lane::ArrowFallback, DataType::List(_) | DataType::LargeList(_)) => Ok(()),
        (Lane::NativeUdf, _) => Err("explode has no UDF lane".into()),
        (_, t) => Err(format!("column type {t} is not a list this lane explodes")),
    }
}

/// The `explode` pipeline step over `df`.
pub fn explode(
    ctx: &SessionContext,
    df: DataFrame,
    column: &str,
    alias: Option<&str>,
    lane: Option<&str>,
) -> Result<(DataFrame, KernelUse)> {
    let schema = df.schema().clone();
    let (qualifier, field) = schema.iter().find(|(_, f)| f.name() == column).ok_or_else(|| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let hint = relspec_spec::suggest::suggest(column, names.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        DataFusionError::Plan(format!("explode: no column `{column}`{hint}"))
    })?;
    let list_type = field.data_type().clone();
    let target = Column::new(qualifier.cloned(), column);
    let spec = spec("explode");
    let (lane, why) = choose_lane(spec, lane, |l| lane_available(l, &list_type))?;
    // The builtin plan: its schema is the contract every lane meets.
    let mut builtin = df.clone().unnest_columns_with_options(&[&target.flat_name()], options())?;
    if let Some(a) = alias.filter(|a| *a != column) {
        builtin = rename(builtin, &target, a)?;
    }
    let detail = format!("{why}; column `{column}` of type {list_type}");
    match lane {
        Lane::Builtin => Ok((builtin, KernelUse::of(spec, lane, "DataFusion unnest (UnnestExec)", None, detail))),
        _ => {
            let position = schema.index_of_column(&target)?;
            let output: SchemaRef = Arc::new(builtin.schema().as_arrow().clone());
            let kernel: Kernel = Arc::new(move |batches: Vec<RecordBatch>, out: &SchemaRef| {
                batches.iter().map(|b| explode_batch(b, position, out)).collect()
            });
            let table = FallbackTable::new(df.logical_plan().clone(), output, "explode", kernel);
            let df = ctx.read_table(Arc::new(table))?;
            Ok((df, KernelUse::of(spec, lane, "arrow take over list offsets", None, detail)))
        }
    }
}

/// Rename the element column (unnest leaves it under the list column's name,
/// with a qualifier that differs from the input's, so it is matched by name).
fn rename(df: DataFrame, target: &Column, alias: &str) -> Result<DataFrame> {
    let exprs: Vec<Expr> = df
        .schema()
        .columns()
        .into_iter()
        .map(|c| if c.name == target.name { Expr::Column(c).alias(alias) } else { Expr::Column(c) })
        .collect();
    df.select(exprs)
}

/// Explode column `position` of `batch` into `out` (the builtin lane's schema).
pub fn explode_batch(batch: &RecordBatch, position: usize, out: &SchemaRef) -> Result<RecordBatch> {
    let list = batch.column(position);
    let (parents, values) = match list.data_type() {
        DataType::List(_) => indices::<i32>(list.as_any().downcast_ref().unwrap()),
        DataType::LargeList(_) => indices::<i64>(list.as_any().downcast_ref().unwrap()),
        t => return Err(DataFusionError::Plan(format!("explode (arrow_fallback): {t} is not a list"))),
    }?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (i, c) in batch.columns().iter().enumerate() {
        let a = if i == position { values.clone() } else { take(c.as_ref(), &parents, None)? };
        let want = out.field(i).data_type();
        columns.push(if a.data_type() == want { a } else { cast(&a, want)? });
    }
    Ok(RecordBatch::try_new(out.clone(), columns)?)
}

/// Parent row of each element, and the elements, of a list array.
fn indices<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Result<(UInt32Array, ArrayRef)> {
    let mut parents = Vec::new();
    let mut elems = Vec::new();
    let offsets = list.value_offsets();
    for row in 0..list.len() {
        if list.is_null(row) {
            continue;
        }
        let (s, e) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
        for j in s..e {
            parents.push(row as u32);
            elems.push(j as u64);
        }
    }
    let values = take(list.values().as_ref(), &UInt64Array::from(elems), None)?;
    Ok((UInt32Array::from(parents), values))
}

/// `explode('table', 'column' [, 'alias'])`: the table function form (a view
/// over DataFusion's unnest of the named table).
#[derive(Debug)]
pub struct ExplodeFunction {
    catalogs: Arc<dyn CatalogProviderList>,
    catalog: String,
    schema: String,
}

impl ExplodeFunction {
    /// The function for tables registered in `ctx`'s default schema.
    pub fn new(ctx: &SessionContext) -> Self {
        let state = ctx.state();
        let opts = &state.config_options().catalog;
        ExplodeFunction {
            catalogs: state.catalog_list().clone(),
            catalog: opts.default_catalog.clone(),
            schema: opts.default_schema.clone(),
        }
    }
}

fn text_arg(args: &[Expr], i: usize, what: &str) -> Result<Option<String>> {
    match args.get(i) {
        None => Ok(None),
        Some(Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _)) => Ok(Some(s.clone())),
        Some(other) => Err(DataFusionError::Plan(format!(
            "explode(): the {what} is a quoted name, e.g. explode('tags_table', 'tags'); got {other}"
        ))),
    }
}

impl TableFunctionImpl for ExplodeFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let usage = || DataFusionError::Plan("usage: explode('table', 'list_column' [, 'alias'])".into());
        let table = text_arg(exprs, 0, "table")?.ok_or_else(usage)?;
        let column = text_arg(exprs, 1, "column")?.ok_or_else(usage)?;
        let alias = text_arg(exprs, 2, "alias")?;
        let schema = self
            .catalogs
            .catalog(&self.catalog)
            .and_then(|c| c.schema(&self.schema))
            .ok_or_else(|| DataFusionError::Plan("explode(): no default schema".into()))?;
        let provider = futures::executor::block_on(schema.table(&table))?
            .ok_or_else(|| DataFusionError::Plan(format!("explode(): table '{table}' not found")))?;
        let t = provider.schema();
        let field = t
            .field_with_name(&column)
            .map_err(|_| DataFusionError::Plan(format!("explode(): table '{table}' has no column `{column}`")))?;
        lane_available(Lane::Builtin, field.data_type())
            .map_err(|m| DataFusionError::Plan(format!("explode(): {m}")))?;
        let mut b = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider.clone()), None)?
            .unnest_column_with_options(Column::new(Some(table.as_str()), column.as_str()), options())?;
        if let Some(a) = alias {
            let exprs: Vec<Expr> = t
                .fields()
                .iter()
                .map(|f| {
                    if f.name() == &column {
                        col(Column::new_unqualified(f.name())).alias(&a)
                    } else {
                        col(Column::new_unqualified(f.name()))
                    }
                })
                .collect();
            b = b.project(exprs)?;
        }
        Ok(Arc::new(ViewTable::new(b.build()?, None)))
    }
}

/// Whether a plan node is an `explode(...)` table-function call.
pub fn is_table_function_call(node: &datafusion::logical_expr::LogicalPlan) -> bool {
    // The SQL planner inlines the function's view under an alias named after
    // the call (`explode()`), or scans it by that name.
    use datafusion::logical_expr::LogicalPlan;
    match node {
        LogicalPlan::SubqueryAlias(a) => {
            a.alias.table() == "explode()" && matches!(strip_projection(&a.input), LogicalPlan::Unnest(_))
        }
        LogicalPlan::TableScan(t) => {
            t.table_name.table() == "explode()"
                && datafusion::datasource::source_as_provider(&t.source).is_ok_and(|p| p.is::<ViewTable>())
        }
        _ => false,
    }
}

/// The use an `explode(...)` table-function call records.
pub fn table_function_use() -> KernelUse {
    KernelUse::of(
        spec("explode"),
        Lane::Builtin,
        "explode() table function: a view over DataFusion unnest",
        None,
        "first lane (table function form)".into(),
    )
}

fn strip_projection(p: &datafusion::logical_expr::LogicalPlan) -> &datafusion::logical_expr::LogicalPlan {
    match p {
        datafusion::logical_expr::LogicalPlan::Projection(x) => strip_projection(&x.input),
        other => other,
    }
}
