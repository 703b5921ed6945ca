//! A `UNION ALL` of rules, written without a plan: its output is its
//! branches' stored outputs one after another, in branch order, each in
//! its own published order (a branch's rows are one contiguous range). The
//! cost is reading the branches and writing the result; a union of 1,000
//! rules plans nothing (DataFusion's planning of a 1,000-input union took
//! seconds). A branch that changed is a rule of its own; the union then
//! replaces that branch's range of rows in its previous object, copying
//! every row group the range does not touch (`splice`): O(the branch).
//!
//! Applies when the rule is exactly a union of rules (`SELECT * FROM a UNION
//! ALL SELECT * FROM b ...`, or `from = "a"` with only `{ union = "b" }`
//! steps) whose outputs have the same column types; otherwise the rule is
//! planned and executed by DataFusion as any other (sorted by every column).
//!
//! Architecture invariant: the object's bytes depend only on the branches'
//! rows in branch order (the footer lists each branch's row count,
//! `FOOTER_PARTS`), so a spliced union equals a clean build's, byte for
//! byte (`tests/union_merge.rs`, `splice::tests`).

use super::execute::{Executed, Target};
use super::merge::{ahead, fail, internal};
use crate::engine::PlanSnapshots;
use crate::lineage::{ColumnLineage, How, RuleLineage, Source};
use crate::relplan::{PStep, RelNode, RelPlan};
use crate::workspace::ContractSpec;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use datafusion::prelude::SessionContext;
use relspec_exec::lower::{self, LowerError};
use relspec_exec::row_groups::{FOOTER_PARTS, encode_parts};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Rows per decoded batch.
const BATCH: usize = 8192;

/// The branches of a rule that is exactly a `UNION ALL` of tables, in order.
pub(crate) fn branches(plan: &RelPlan) -> Option<Vec<String>> {
    match &plan.root {
        RelNode::Pipeline { from, steps } => {
            let mut out = vec![from.clone()];
            for s in steps {
                match s {
                    PStep::Union { table, distinct: false } => out.push(table.clone()),
                    _ => return None,
                }
            }
            (out.len() > 1).then_some(out)
        }
        RelNode::Sql(stmt) => {
            use datafusion::sql::sqlparser::ast::{SetExpr, SetOperator, SetQuantifier, Statement};
            let Statement::Query(q) = stmt.as_ref() else { return None };
            if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
                return None;
            }
            fn leaves(e: &SetExpr, out: &mut Vec<String>) -> bool {
                match e {
                    SetExpr::SetOperation {
                        op: SetOperator::Union,
                        set_quantifier: SetQuantifier::All,
                        left,
                        right,
                    } => leaves(left, out) && leaves(right, out),
                    SetExpr::Select(s) => {
                        // Exactly `SELECT * FROM name`: compare the printed form.
                        let text = s.to_string();
                        let Some(name) = text.strip_prefix("SELECT * FROM ") else { return false };
                        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                            return false;
                        }
                        out.push(name.to_lowercase());
                        true
                    }
                    _ => false,
                }
            }
            let mut out = Vec::new();
            (leaves(&q.body, &mut out) && out.len() > 1).then_some(out)
        }
    }
}

/// The previous output of the union and which branches changed since:
/// the new output is the previous one with those branches' row ranges
/// replaced by their new rows.
pub(crate) struct Previous {
    /// The previous union object.
    pub(crate) object: PathBuf,
    /// Indices (into the branches) of the changed branches.
    pub(crate) changed: Vec<usize>,
}

/// Whether to start from `previous` (the changed branches are few), given the
/// previous artifact's `merged_from` and the branches' current content hashes.
pub(crate) fn changed_branches(merged_from: &[(String, String)], now: &[(String, String)]) -> Option<Vec<usize>> {
    if merged_from.len() != now.len() || merged_from.iter().zip(now).any(|(a, b)| a.0 != b.0) {
        return None;
    }
    let changed: Vec<usize> = (0..now.len()).filter(|&i| merged_from[i].1 != now[i].1).collect();
    // Writing everything is as cheap when many branches changed.
    (!changed.is_empty() && changed.len() * 4 <= now.len()).then_some(changed)
}

/// Everything a union's write needs (moved into its task).
pub(crate) struct UnionRun {
    pub(crate) ctx: SessionContext,
    /// Branch rule names and their stored objects, in union order.
    pub(crate) branches: Vec<(String, PathBuf)>,
    /// The objects' schemas and the union's (see [`union_schema`]).
    pub(crate) schemas: Vec<SchemaRef>,
    pub(crate) schema: SchemaRef,
    /// The objects' row counts (the footer's parts).
    pub(crate) rows: Vec<u64>,
    /// Branch content hashes, in union order (recorded in the artifact).
    pub(crate) hashes: Vec<String>,
    /// Start from the previous output instead of every branch.
    pub(crate) previous: Option<Previous>,
    pub(crate) contract: Option<ContractSpec>,
    pub(crate) partition_by: Vec<String>,
    pub(crate) to: Target,
    /// When the union's preparation began (its time includes finding the
    /// branches and the previous output).
    pub(crate) started: Instant,
}

/// The union's schema: the first branch's names, every branch's types (they
/// must be equal), nullable if any branch's column is. `None` when the
/// branches disagree (DataFusion would coerce: its lane handles that).
pub(crate) fn union_schema(schemas: &[SchemaRef]) -> Option<SchemaRef> {
    let first = schemas.first()?;
    let mut fields: Vec<Field> =
        first.fields().iter().map(|f| f.as_ref().clone().with_metadata(Default::default())).collect();
    for s in &schemas[1..] {
        if s.fields().len() != fields.len() {
            return None;
        }
        for (f, g) in fields.iter_mut().zip(s.fields()) {
            if f.data_type() != g.data_type() {
                return None;
            }
            if g.is_nullable() {
                *f = f.clone().with_nullable(true);
            }
        }
    }
    Some(Arc::new(Schema::new(fields)))
}

/// Each object's schema as DataFusion reads it (the Parquet footer's Arrow
/// schema, with strings and binaries as view types when the session reads
/// Parquet that way: `schema_force_view_types`) and its row count.
pub(crate) fn object_footers(paths: &[PathBuf], views: bool) -> std::io::Result<Vec<(SchemaRef, u64)>> {
    use rayon::prelude::*;
    paths
        .par_iter()
        .map(|p| {
            let f = std::fs::File::open(p)?;
            let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(std::io::Error::other)?;
            let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
            Ok((if views { as_views(b.schema()) } else { b.schema().clone() }, rows))
        })
        .collect()
}

/// A branch's schema as [`object_footers`] reads it, from the columns its
/// record lists (`views` maps strings as the session reads them) or the
/// previous union's artifact lists, instead of its object's footer (1,000
/// footers take ~15-20 ms): only when every column's type is flat and its
/// displayed name parses back to exactly that type; `None` otherwise (read
/// the footer).
pub(crate) fn columns_schema(columns: &[crate::store::ColumnInfo], views: bool) -> Option<SchemaRef> {
    use datafusion::arrow::datatypes::DataType;
    if columns.is_empty() {
        return None;
    }
    let fields = columns
        .iter()
        .map(|c| {
            let t: DataType = c.data_type.parse().ok()?;
            let flat = !t.is_nested() && !matches!(t, DataType::Dictionary(..) | DataType::RunEndEncoded(..));
            (flat && t.to_string() == c.data_type).then(|| Field::new(&c.name, t, c.nullable))
        })
        .collect::<Option<Vec<Field>>>()?;
    let schema = Arc::new(Schema::new(fields));
    Some(if views { as_views(&schema) } else { schema })
}

/// Top-level strings and binaries as view types (as DataFusion's Parquet
/// reader maps them).
fn as_views(schema: &SchemaRef) -> SchemaRef {
    use datafusion::arrow::datatypes::DataType;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            DataType::Binary | DataType::LargeBinary => f.as_ref().clone().with_data_type(DataType::BinaryView),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Whether `ctx` reads Parquet strings as view types.
pub(crate) fn reads_views(ctx: &SessionContext) -> bool {
    ctx.state().config_options().execution.parquet.schema_force_view_types
}

/// Write the branches one after another into an object (or splice the
/// changed ones into the previous object), check the contract, store and
/// record it.
pub(crate) async fn execute_union(run: UnionRun) -> Result<Executed, LowerError> {
    let UnionRun { ctx, branches, schemas, schema, rows, hashes, previous, contract, partition_by, to, started } = run;
    let t = started;
    let all: Vec<PathBuf> = branches.iter().map(|(_, p)| p.clone()).collect();
    let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    lower::check_partition_by(&have, &partition_by).map_err(fail)?;
    if let Some(c) = &contract {
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(internal)?;
        lower::check_contract(&df_schema, c).map_err(fail)?;
    }
    let footer = BTreeMap::from([(FOOTER_PARTS.to_string(), encode_parts(&rows))]);
    let spliced = match &previous {
        Some(prev) => splice_changed(&to, &schema, &schemas, &rows, prev, &all, footer.clone()).await?,
        None => None,
    };
    let (written, how) = match (spliced, &previous) {
        (Some((written, s)), Some(prev)) => {
            let names: Vec<&str> = prev.changed.iter().map(|&i| branches[i].0.as_str()).collect();
            let how = format!(
                "the previous output, {} changed branch(es): {}; spliced: {} row group(s) copied, {} re-encoded",
                names.len(),
                names.join(", "),
                s.copied,
                s.encoded
            );
            (written, how)
        }
        _ => {
            let stream = ahead(schema.clone(), concat(all.clone(), schemas.clone(), schema.clone()));
            (to.write_with(stream, footer).await?, "every branch".to_string())
        }
    };
    let n_branches = branches.len();
    let rows = written.rows;
    tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, rows, "union: written");
    let checks = super::execute::data_checks(&ctx, contract.as_ref(), &written.tmp).await?;
    let elapsed = t.elapsed().as_millis() as u64;
    let names: Vec<&str> = branches.iter().map(|(n, _)| n.as_str()).collect();
    let lineage = lineage_of(&schema, &schemas, &names);
    let merged = format!(
        "UnionConcat: the {n_branches} branch outputs one after another, in branch order, no plan\n  written from: {how}\n  branches: {}",
        names.join(", ")
    );
    let plans = PlanSnapshots {
        logical: merged.clone(),
        optimized: merged.clone(),
        physical: merged.clone(),
        physical_metrics: Some(format!("{merged}\n  output_rows={rows}, elapsed_ms={elapsed}")),
        sql: None,
    };
    super::execute::store_output(super::execute::Output {
        to,
        written,
        schema,
        checks,
        plans,
        lineage,
        kernels: vec![],
        substrait: None,
        substrait_unsupported: cfg!(feature = "substrait")
            .then(|| "a union of rules has no DataFusion plan".to_string()),
        merged_from: branches.iter().map(|(n, _)| n.clone()).zip(hashes).collect(),
        branch_columns: Some(crate::bundle::BranchColumns::of(
            schemas.iter().map(relspec_exec::parquet::columns).collect(),
            reads_views(&ctx),
        )),
        partitions: None,
        started: t,
    })
    .await
}

/// The branches' rows one after another, each branch's under the union's
/// column names, decoded on the caller's thread (see [`ahead`]).
fn concat(
    paths: Vec<PathBuf>,
    schemas: Vec<SchemaRef>,
    schema: SchemaRef,
) -> impl Iterator<Item = datafusion::error::Result<RecordBatch>> + Send + 'static {
    use datafusion::error::DataFusionError;
    let mut next = 0;
    let mut reader: Option<ParquetRecordBatchReader> = None;
    std::iter::from_fn(move || {
        loop {
            let Some(r) = reader.as_mut() else {
                if next == paths.len() {
                    return None;
                }
                let (path, branch_schema) = (&paths[next], &schemas[next]);
                next += 1;
                match open(path, branch_schema) {
                    Ok(r) => reader = Some(r),
                    Err(e) => {
                        next = paths.len();
                        return Some(Err(DataFusionError::Execution(format!("{}: {e}", path.display()))));
                    }
                }
                continue;
            };
            match r.next() {
                None => reader = None,
                Some(Err(e)) => {
                    (reader, next) = (None, paths.len());
                    return Some(Err(DataFusionError::ArrowError(Box::new(e), None)));
                }
                Some(Ok(b)) if b.num_rows() == 0 => {}
                Some(Ok(b)) => {
                    return Some(RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(Into::into));
                }
            }
        }
    })
}

/// A reader of a branch's object, as `schema` (its own types as the union reads them).
fn open(path: &PathBuf, schema: &SchemaRef) -> Result<ParquetRecordBatchReader, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let opts = ArrowReaderOptions::new().with_schema(schema.clone());
    ParquetRecordBatchReaderBuilder::try_new_with_options(f, opts)
        .and_then(|b| b.with_batch_size(BATCH).build())
        .map_err(|e| e.to_string())
}

/// Most rows of changed branches a splice loads; beyond it the union is
/// written whole.
const SPLICE_MAX_ROWS: u64 = 1 << 20;

/// The union as its previous object with the changed branches' row ranges
/// replaced by their new rows, copying the row groups those ranges do not
/// touch; `None` when splicing does not apply.
async fn splice_changed(
    to: &Target,
    schema: &SchemaRef,
    schemas: &[SchemaRef],
    rows: &[u64],
    prev: &Previous,
    all: &[PathBuf],
    footer: BTreeMap<String, String>,
) -> Result<Option<(super::execute::Written, super::splice::Spliced)>, LowerError> {
    if prev.changed.iter().map(|&i| rows[i]).sum::<u64>() > SPLICE_MAX_ROWS {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(prev.changed.len());
    for &i in &prev.changed {
        let batches = open(&all[i], &schemas[i]).map_err(internal)?.collect::<Result<Vec<_>, _>>();
        parts.push((i, batches.map_err(internal)?));
    }
    tracing::debug!("union: changed branches read");
    to.write_spliced(schema.clone(), prev.object.clone(), super::splice::Change::Parts(parts), footer).await
}

/// Each output column is copied from the same position of every branch.
fn lineage_of(schema: &SchemaRef, schemas: &[SchemaRef], names: &[&str]) -> RuleLineage {
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let sources: Vec<Source> = names
                .iter()
                .zip(schemas)
                .map(|(t, s)| Source { table: t.to_string(), column: s.field(k).name().clone(), how: How::Copied })
                .collect();
            let h =
                relspec_spec::key::KeyHasher::new("relspec/lineage/union-merge/v1").field("column", f.name()).finish();
            ColumnLineage {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
                sources,
                value_hash: h,
            }
        })
        .collect();
    RuleLineage { columns, keys: vec![], rows_hash: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, TimeUnit};

    /// A branch's schema from the columns its record lists equals the one
    /// its object's footer gives (both ways of reading strings), for the
    /// flat types; nested types are read from the footer.
    #[test]
    fn a_record_gives_the_schema_the_footer_gives() {
        let dir = tempfile::tempdir().unwrap();
        let types = [
            DataType::Int64,
            DataType::Int32,
            DataType::UInt8,
            DataType::Float64,
            DataType::Boolean,
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::Binary,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Decimal128(12, 3),
        ];
        let fields: Vec<Field> =
            types.iter().enumerate().map(|(i, t)| Field::new(format!("c{i}"), t.clone(), i % 2 == 0)).collect();
        let schema = Arc::new(Schema::new(fields));
        let path = dir.path().join("o.parquet");
        let mut w = relspec_exec::parquet::ChunkedWriter::create(&path, schema.clone(), &BTreeMap::new()).unwrap();
        w.push(RecordBatch::new_empty(schema.clone())).unwrap();
        w.finish().unwrap();
        let columns = relspec_exec::parquet::columns(&schema);
        let strip = |s: &SchemaRef| {
            s.fields().iter().map(|f| f.as_ref().clone().with_metadata(Default::default())).collect::<Vec<_>>()
        };
        for views in [false, true] {
            let footer = object_footers(std::slice::from_ref(&path), views).unwrap().remove(0).0;
            let record = columns_schema(&columns, views).expect("flat types");
            assert_eq!(strip(&record), strip(&footer), "views: {views}");
        }
        let nested =
            Arc::new(Schema::new(vec![Field::new_list("l", Field::new_list_field(DataType::Int64, true), true)]));
        assert!(columns_schema(&relspec_exec::parquet::columns(&nested), false).is_none());
        assert!(columns_schema(&[], false).is_none());
    }
}
