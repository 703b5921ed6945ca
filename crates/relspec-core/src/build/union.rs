//! A `UNION ALL` of rules, built by merging: every output is sorted by all
//! its columns (ascending, nulls first: `lower`'s total output order), so
//! the union of branch outputs in that order is a k-way merge of the
//! branches' stored objects. No plan is built and nothing is re-sorted: the
//! cost is reading the branches and writing the result, and a union of
//! 1,000 rules plans nothing (DataFusion's planning of a 1,000-input union
//! took seconds). A branch that changed is a rule of its own; the union only
//! re-merges.
//!
//! Applies when the rule is exactly a union of rules (`SELECT * FROM a UNION
//! ALL SELECT * FROM b ...`, or `from = "a"` with only `{ union = "b" }`
//! steps) whose outputs have the same column types; otherwise the rule is
//! planned and executed by DataFusion as any other. `RELSPEC_UNION_LANE=
//! datafusion` forces the DataFusion lane (the tests compare both lanes'
//! bytes).
//!
//! Architecture invariant: the merged object is byte-identical to what the
//! DataFusion lane writes for the same rule (same schema, rows, order and
//! writer), so which lane built an output never changes a key or a byte.

use super::execute::{Executed, Target};
use crate::engine::PlanSnapshots;
use crate::error::{Diag, ErrorKind};
use crate::lineage::{ColumnLineage, How, RuleLineage, Source};
use crate::relplan::{PStep, RelNode, RelPlan};
use crate::workspace::ContractSpec;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::common::DFSchema;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use relspec_exec::lower::{self, LowerError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Rows per merged batch.
const BATCH: usize = 8192;

/// Whether the merge lane is enabled (`RELSPEC_UNION_LANE=datafusion` turns it off).
pub(crate) fn enabled() -> bool {
    std::env::var("RELSPEC_UNION_LANE").map(|v| v != "datafusion").unwrap_or(true)
}

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

/// The previous output of the union and how the branches changed since:
/// the new output is the previous one less the changed branches' old rows,
/// plus their new rows (a multiset difference and union, all sorted), which
/// reads three kinds of objects instead of every branch.
pub(crate) struct Previous {
    /// The previous union object.
    pub(crate) object: PathBuf,
    /// Old objects of the changed branches (their rows are removed).
    pub(crate) removed: Vec<PathBuf>,
    /// Indices (into the branches) of the changed branches (their rows are added).
    pub(crate) added: Vec<usize>,
}

/// Whether to merge from `previous` (the changed branches are few), given the
/// previous artifact's `merged_from` and the branches' current content hashes.
pub(crate) fn changed_branches(merged_from: &[(String, String)], now: &[(String, String)]) -> Option<Vec<usize>> {
    if merged_from.len() != now.len() || merged_from.iter().zip(now).any(|(a, b)| a.0 != b.0) {
        return None;
    }
    let changed: Vec<usize> = (0..now.len()).filter(|&i| merged_from[i].1 != now[i].1).collect();
    // Re-merging everything is cheaper when many branches changed.
    (!changed.is_empty() && changed.len() * 4 <= now.len()).then_some(changed)
}

/// Everything a merge needs (moved into its task).
pub(crate) struct UnionRun {
    pub(crate) ctx: SessionContext,
    /// Branch rule names and their stored objects, in union order.
    pub(crate) branches: Vec<(String, PathBuf)>,
    /// The objects' schemas and the union's (see [`union_schema`]).
    pub(crate) schemas: Vec<SchemaRef>,
    pub(crate) schema: SchemaRef,
    /// Branch content hashes, in union order (recorded in the artifact).
    pub(crate) hashes: Vec<String>,
    /// Start from the previous output instead of every branch.
    pub(crate) previous: Option<Previous>,
    pub(crate) contract: Option<ContractSpec>,
    pub(crate) partition_by: Vec<String>,
    pub(crate) to: Target,
}

pub(crate) fn fail(diag: Diag) -> LowerError {
    LowerError { diag, pos: None }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> LowerError {
    fail(Diag::new(ErrorKind::Execution(e.to_string())))
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

/// Each branch's schema as DataFusion reads its object: the Parquet
/// footer's Arrow schema, with strings and binaries as view types when the
/// session reads Parquet that way (`schema_force_view_types`).
pub(crate) fn object_schemas(paths: &[PathBuf], views: bool) -> std::io::Result<Vec<SchemaRef>> {
    paths
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p)?;
            let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(std::io::Error::other)?;
            Ok(if views { as_views(b.schema()) } else { b.schema().clone() })
        })
        .collect()
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

/// Where a merge source's batches come from.
pub(crate) enum Feed {
    /// A stored object.
    File(ParquetRecordBatchReader),
    /// Batches in memory (a partial run's rows).
    Batches(std::vec::IntoIter<RecordBatch>),
}

impl Feed {
    /// The next batch with rows, if any.
    pub(crate) fn next_non_empty(&mut self) -> Result<Option<RecordBatch>, LowerError> {
        match self {
            Feed::File(reader) => next_non_empty(reader),
            Feed::Batches(it) => Ok(it.find(|b| b.num_rows() > 0)),
        }
    }
}

/// Open stored objects as merge feeds with their first batches decoded (in parallel).
pub(crate) fn open_files(
    paths: &[PathBuf],
    schemas: &[SchemaRef],
) -> Result<Vec<(Feed, Option<RecordBatch>)>, LowerError> {
    use rayon::prelude::*;
    paths
        .par_iter()
        .zip(schemas)
        .map(|(p, branch_schema)| {
            let f = std::fs::File::open(p).map_err(internal)?;
            let opts = ArrowReaderOptions::new().with_schema(branch_schema.clone());
            let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(f, opts)
                .and_then(|b| b.with_batch_size(BATCH).build())
                .map_err(internal)?;
            let mut feed = Feed::File(reader);
            let first = feed.next_non_empty()?;
            Ok((feed, first))
        })
        .collect()
}

/// Rows of one source that a merge leaves out: those whose partition key
/// (columns `cols`, as text) is one of `ids`. What it leaves out is hashed
/// per partition, in order, to tell which partitions' rows changed.
#[derive(Clone)]
pub(crate) struct Retract {
    pub(crate) cols: Vec<usize>,
    pub(crate) ids: std::collections::HashSet<String>,
    pub(crate) hashes: std::collections::HashMap<String, blake3::Hasher>,
}

/// The partition id of each row: the key columns as text (nulls as empty),
/// joined by the id separator.
pub(crate) fn partition_ids(batch: &RecordBatch, cols: &[usize]) -> Result<Vec<String>, LowerError> {
    let texts = key_texts(batch, cols)?;
    let mut buf = String::new();
    Ok((0..batch.num_rows())
        .map(|r| {
            texts.id_into(r, &mut buf);
            buf.clone()
        })
        .collect())
}

/// The key columns of a batch as text.
struct KeyTexts(Vec<datafusion::arrow::array::StringArray>);

impl KeyTexts {
    fn value(a: &datafusion::arrow::array::StringArray, r: usize) -> &str {
        if a.is_null(r) { "" } else { a.value(r) }
    }

    /// Row `r`'s partition id, written into `buf`.
    fn id_into(&self, r: usize, buf: &mut String) {
        buf.clear();
        for (k, a) in self.0.iter().enumerate() {
            if k > 0 {
                buf.push(relspec_db::datasets::PARTITION_ID_SEP);
            }
            buf.push_str(Self::value(a, r));
        }
    }
}

fn key_texts(batch: &RecordBatch, cols: &[usize]) -> Result<KeyTexts, LowerError> {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::DataType;
    cols.iter()
        .map(|&c| {
            let a = datafusion::arrow::compute::cast(batch.column(c), &DataType::Utf8).map_err(internal)?;
            Ok::<StringArray, LowerError>(a.as_string::<i32>().clone())
        })
        .collect::<Result<_, _>>()
        .map(KeyTexts)
}

/// Which rows of `batch` belong to one of partitions `ids` (key columns
/// `cols` as text, as [`partition_ids`] joins them), without building an
/// id per row.
fn in_partitions(
    batch: &RecordBatch,
    cols: &[usize],
    ids: &std::collections::HashSet<String>,
) -> Result<Vec<bool>, LowerError> {
    let texts = key_texts(batch, cols)?;
    if let [one] = texts.0.as_slice() {
        return Ok((0..batch.num_rows()).map(|r| ids.contains(KeyTexts::value(one, r))).collect());
    }
    let mut buf = String::new();
    Ok((0..batch.num_rows())
        .map(|r| {
            texts.id_into(r, &mut buf);
            ids.contains(buf.as_str())
        })
        .collect())
}

/// Add `rows`' bytes to the hash of their partition.
pub(crate) fn hash_rows(hashes: &mut std::collections::HashMap<String, blake3::Hasher>, ids: &[String], rows: &Rows) {
    for (r, id) in ids.iter().enumerate() {
        let row = rows.row(r);
        let h = hashes.entry(id.clone()).or_default();
        h.update(&(row.as_ref().len() as u64).to_le_bytes());
        h.update(row.as_ref());
    }
}

/// One source's feed and its current batch.
struct Cursor {
    reader: Feed,
    /// Index of the current batch in `Merge::held`.
    slot: usize,
    rows: Rows,
    pos: usize,
}

/// The k-way merge as an iterator of output batches. Sources marked as
/// removals take one equal row out of the output per row of theirs (they
/// sort before additions of an equal row, so the removal is seen first).
pub(crate) struct Merge {
    /// Per source: its rows are removed from the output.
    removes: Vec<bool>,
    /// A source whose rows of some partitions are left out (its index).
    retract: Option<(usize, Retract)>,
    /// The row being removed and how many more copies of it to drop.
    dropping: Option<(Vec<u8>, usize)>,
    /// Removals that found no equal row (a splice then merges whole).
    lost: usize,
    schema: SchemaRef,
    conv: RowConverter,
    cursors: Vec<Option<Cursor>>,
    /// Batches the next output batch may take rows from.
    held: Vec<RecordBatch>,
    /// Branches with rows left, as a binary min-heap by their current row
    /// (ties by branch index, so the merge is deterministic).
    heap: Vec<usize>,
}

impl Merge {
    fn new(
        schema: SchemaRef,
        paths: &[PathBuf],
        schemas: &[SchemaRef],
        removes: Vec<bool>,
    ) -> Result<Merge, LowerError> {
        // Opening a reader parses the file's footer, and its first batch is
        // decoded right away: both in parallel.
        let opened = open_files(paths, schemas)?;
        Merge::of_feeds(schema, opened, removes, None)
    }

    /// A merge of `feeds` (each with its first batch), leaving out what `retract` says.
    pub(crate) fn of_feeds(
        schema: SchemaRef,
        feeds: Vec<(Feed, Option<RecordBatch>)>,
        removes: Vec<bool>,
        retract: Option<(usize, Retract)>,
    ) -> Result<Merge, LowerError> {
        let conv = row_converter(&schema)?;
        let mut m = Merge {
            removes,
            retract,
            dropping: None,
            lost: 0,
            schema,
            conv,
            cursors: Vec::new(),
            held: Vec::new(),
            heap: Vec::new(),
        };
        m.cursors.resize_with(feeds.len(), || None);
        for (i, (feed, first)) in feeds.into_iter().enumerate() {
            let Some(b) = first else { continue };
            // A source whose first batches are wholly retracted moves on.
            let has_rows = m.hold(i, feed, b)?
                || match m.cursors[i].take() {
                    Some(c) => m.load(i, c.reader)?,
                    None => false,
                };
            if has_rows {
                m.heap.push(i);
            }
        }
        for k in (0..m.heap.len() / 2).rev() {
            m.sift_down(k);
        }
        Ok(m)
    }

    /// How many removed rows found no equal row to take out (after the merge ran).
    pub(crate) fn lost_removals(&self) -> usize {
        self.lost + self.dropping.as_ref().map_or(0, |(_, n)| *n)
    }

    /// The retracted rows' hashes per partition (after the merge ran).
    pub(crate) fn retracted(&mut self) -> Option<Retract> {
        self.retract.take().map(|(_, r)| r)
    }

    /// The output batches, as an iterator.
    pub(crate) fn into_iter(mut self) -> impl Iterator<Item = datafusion::error::Result<RecordBatch>> {
        std::iter::from_fn(move || match self.next_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => Some(Err(datafusion::error::DataFusionError::Execution(e.diag.kind.to_string()))),
        })
    }

    /// Whether branch `a`'s current row sorts before branch `b`'s.
    fn less(&self, a: usize, b: usize) -> bool {
        let (Some(ca), Some(cb)) = (&self.cursors[a], &self.cursors[b]) else { return a < b };
        match ca.rows.row(ca.pos).cmp(&cb.rows.row(cb.pos)) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => (!self.removes[a], a) < (!self.removes[b], b),
        }
    }

    fn sift_down(&mut self, mut k: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * k + 1, 2 * k + 2);
            let mut m = k;
            if l < n && self.less(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < n && self.less(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == k {
                return;
            }
            self.heap.swap(k, m);
            k = m;
        }
    }

    /// Read source `i`'s next batch with rows left; false when the source is done.
    fn load(&mut self, i: usize, mut reader: Feed) -> Result<bool, LowerError> {
        loop {
            match reader.next_non_empty()? {
                None => {
                    self.cursors[i] = None;
                    return Ok(false);
                }
                Some(b) => {
                    if self.hold(i, reader, b)? {
                        return Ok(true);
                    }
                    let Some(c) = self.cursors[i].take() else { unreachable!("held") };
                    reader = c.reader;
                }
            }
        }
    }

    /// Make `b` source `i`'s current batch (less its retracted rows);
    /// false when nothing of it is left (the cursor holds the feed).
    fn hold(&mut self, i: usize, reader: Feed, b: RecordBatch) -> Result<bool, LowerError> {
        // The branch's own column names; the union's are the first branch's.
        let mut b = RecordBatch::try_new(self.schema.clone(), b.columns().to_vec()).map_err(internal)?;
        if let Some((src, r)) = self.retract.as_mut().filter(|(src, _)| *src == i) {
            let _ = src;
            let out = in_partitions(&b, &r.cols, &r.ids)?;
            if out.iter().any(|&o| o) {
                // Hash the retracted rows (few) apart; the kept ones are converted below.
                use datafusion::arrow::array::BooleanArray;
                use datafusion::arrow::compute::filter_record_batch;
                let gone = filter_record_batch(&b, &BooleanArray::from(out.clone())).map_err(internal)?;
                let rows = self.conv.convert_columns(gone.columns()).map_err(internal)?;
                hash_rows(&mut r.hashes, &partition_ids(&gone, &r.cols)?, &rows);
                let keep = BooleanArray::from(out.iter().map(|o| !o).collect::<Vec<_>>());
                b = filter_record_batch(&b, &keep).map_err(internal)?;
            }
        }
        let rows = self.conv.convert_columns(b.columns()).map_err(internal)?;
        let any = b.num_rows() > 0;
        self.held.push(b);
        self.cursors[i] = Some(Cursor { reader, slot: self.held.len() - 1, rows, pos: 0 });
        Ok(any)
    }

    /// Where a run of the top source `i` ends (exclusive; at most `room`
    /// rows): its rows strictly before the smallest current row of the
    /// other sources. `None` when no run of two or more rows applies.
    fn run_end(&self, i: usize, room: usize) -> Option<usize> {
        if self.removes[i] {
            return None;
        }
        let c = self.cursors[i].as_ref()?;
        if let Some((r, n)) = &self.dropping
            && *n > 0
            && r.as_slice() == c.rows.row(c.pos).as_ref()
        {
            return None;
        }
        // The heap's root is `i`; the smallest of the others is a child of it.
        let other = match (self.heap.get(1), self.heap.get(2)) {
            (Some(&a), Some(&b)) => Some(if self.less(a, b) { a } else { b }),
            (Some(&a), None) => Some(a),
            _ => None,
        };
        let limit = (c.pos + room).min(c.rows.num_rows());
        let end = match other.and_then(|o| self.cursors[o].as_ref()) {
            None => limit,
            Some(o) => {
                let bound = o.rows.row(o.pos);
                // First row in [pos, limit) that is not below the bound.
                let (mut lo, mut hi) = (c.pos, limit);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if c.rows.row(mid) < bound { lo = mid + 1 } else { hi = mid }
                }
                lo
            }
        };
        (end >= c.pos + 2).then_some(end)
    }

    /// After the top source `i` advanced: load its next batch when this one
    /// is used up, drop it from the heap when it is done, restore the heap.
    fn settle_top(&mut self, i: usize) -> Result<(), LowerError> {
        let used_up = self.cursors[i].as_ref().is_none_or(|c| c.pos >= c.rows.num_rows());
        let more = !used_up
            || match self.cursors[i].take() {
                Some(c) => self.load(i, c.reader)?,
                None => false,
            };
        if !more {
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
        }
        self.sift_down(0);
        Ok(())
    }

    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>, LowerError> {
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
        while picks.len() < BATCH {
            let Some(&i) = self.heap.first() else { break };
            // A run: the top source's rows that sort before every other
            // source's current row are taken at once (binary search), no
            // heap step per row. Not for a removal, nor while its row is
            // being dropped (those go row by row below).
            if let Some(end) = self.run_end(i, BATCH - picks.len()) {
                let Some(c) = self.cursors[i].as_mut() else { unreachable!("a branch in the heap has rows") };
                picks.extend((c.pos..end).map(|r| (c.slot, r)));
                c.pos = end;
                self.settle_top(i)?;
                continue;
            }
            let Some(c) = self.cursors[i].as_mut() else { unreachable!("a branch in the heap has rows") };
            if self.removes[i] {
                let row = c.rows.row(c.pos);
                match &mut self.dropping {
                    Some((r, n)) if r.as_slice() == row.as_ref() => *n += 1,
                    d => {
                        self.lost += d.as_ref().map_or(0, |(_, n)| *n);
                        *d = Some((row.as_ref().to_vec(), 1));
                    }
                }
            } else {
                let drop = match &mut self.dropping {
                    Some((r, n)) if *n > 0 && r.as_slice() == c.rows.row(c.pos).as_ref() => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                };
                if !drop {
                    picks.push((c.slot, c.pos));
                }
            }
            c.pos += 1;
            self.settle_top(i)?;
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = (0..self.schema.fields().len())
            .map(|k| {
                let arrays: Vec<&dyn Array> = self.held.iter().map(|b| b.column(k).as_ref()).collect();
                interleave(&arrays, &picks)
            })
            .collect::<Result<_, _>>()
            .map_err(internal)?;
        let out = RecordBatch::try_new(self.schema.clone(), columns).map_err(internal)?;
        // Keep only the batches the cursors still read from.
        let mut kept = Vec::new();
        for c in self.cursors.iter_mut().flatten() {
            kept.push(self.held[c.slot].clone());
            c.slot = kept.len() - 1;
        }
        self.held = kept;
        Ok(Some(out))
    }
}

/// A stream of `iter`'s batches, produced on a thread of their own a few
/// batches ahead: decoding and merging overlap the writer's encoding.
/// Dropping the stream stops the thread (its next send fails).
pub(crate) fn ahead(
    schema: SchemaRef,
    iter: impl Iterator<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
) -> datafusion::physical_plan::SendableRecordBatchStream {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    std::thread::spawn(move || {
        for b in iter {
            if tx.send(b).is_err() {
                break;
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(rx)))
}

/// The row encoding of the total output order (every column ascending, nulls first).
pub(crate) fn row_converter(schema: &SchemaRef) -> Result<RowConverter, LowerError> {
    relspec_exec::row_groups::order_converter(schema).map_err(internal)
}

/// The reader's next batch with rows, if any.
fn next_non_empty(reader: &mut ParquetRecordBatchReader) -> Result<Option<RecordBatch>, LowerError> {
    loop {
        match reader.next() {
            None => return Ok(None),
            Some(Err(e)) => return Err(internal(e)),
            Some(Ok(b)) if b.num_rows() == 0 => continue,
            Some(Ok(b)) => return Ok(Some(b)),
        }
    }
}

/// Merge the branches into an object, check the contract, store and record it.
pub(crate) async fn execute_union(run: UnionRun) -> Result<Executed, LowerError> {
    let UnionRun { ctx, branches, schemas, schema, hashes, previous, contract, partition_by, to } = run;
    let t = Instant::now();
    let all: Vec<PathBuf> = branches.iter().map(|(_, p)| p.clone()).collect();
    // Sources: every branch, or the previous output less the changed
    // branches' old rows plus their new rows.
    let (paths, source_schemas, removes, how) = match &previous {
        None => (all.clone(), schemas.clone(), vec![false; all.len()], "every branch".to_string()),
        Some(prev) => {
            let mut paths = vec![prev.object.clone()];
            let mut ss = vec![schema.clone()];
            let mut removes = vec![false];
            for (r, &i) in prev.removed.iter().zip(&prev.added) {
                paths.push(r.clone());
                ss.push(schemas[i].clone());
                removes.push(true);
            }
            for &i in &prev.added {
                paths.push(all[i].clone());
                ss.push(schemas[i].clone());
                removes.push(false);
            }
            let names: Vec<&str> = prev.added.iter().map(|&i| branches[i].0.as_str()).collect();
            (
                paths,
                ss,
                removes,
                format!("the previous output, {} changed branch(es): {}", names.len(), names.join(", ")),
            )
        }
    };
    let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    lower::check_partition_by(&have, &partition_by).map_err(fail)?;
    if let Some(c) = &contract {
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(internal)?;
        lower::check_contract(&df_schema, c).map_err(fail)?;
    }
    let spliced = match &previous {
        Some(prev) => splice_changed(&to, &schema, &schemas, prev, &all).await?,
        None => None,
    };
    let (written, how) = match spliced {
        Some((written, s)) => {
            let how = if s.segments > 1 {
                format!("{how}; every row group re-encoded ({}), in {} parallel segments", s.encoded, s.segments)
            } else {
                format!("{how}; spliced: {} row group(s) copied, {} re-encoded", s.copied, s.encoded)
            };
            (written, how)
        }
        None => {
            let merge = Merge::new(schema.clone(), &paths, &source_schemas, removes)?;
            tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, "union: readers open");
            let stream = ahead(schema.clone(), merge.into_iter());
            (to.write(stream).await?, how)
        }
    };
    let n_branches = branches.len();
    let rows = written.rows;
    tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, rows, "union: merged and written");
    let checks = super::execute::data_checks(&ctx, contract.as_ref(), &written.tmp).await?;
    let elapsed = t.elapsed().as_millis() as u64;
    let names: Vec<&str> = branches.iter().map(|(n, _)| n.as_str()).collect();
    let lineage = lineage_of(&schema, &schemas, &names);
    let merged = format!(
        "UnionMerge: k-way merge of {n_branches} sorted branch outputs (each sorted by every column), no re-sort\n  merged from: {how}\n  branches: {}",
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
        substrait_unsupported: cfg!(feature = "substrait").then(|| "a merged union has no DataFusion plan".to_string()),
        merged_from: branches.iter().map(|(n, _)| n.clone()).zip(hashes).collect(),
        partitions: None,
        started: t,
    })
    .await
}

/// Most rows a splice of a union loads (the changed branches' old and new
/// rows); beyond it the union is merged whole.
const SPLICE_MAX_ROWS: i64 = 1 << 20;

/// The union as its previous object less the changed branches' old rows
/// plus their new rows, copying the row groups those rows do not touch;
/// `None` when splicing does not apply.
async fn splice_changed(
    to: &Target,
    schema: &SchemaRef,
    schemas: &[SchemaRef],
    prev: &Previous,
    all: &[PathBuf],
) -> Result<Option<(super::execute::Written, super::splice::Spliced)>, LowerError> {
    let read = |path: &PathBuf, s: &SchemaRef| -> Result<(i64, Vec<RecordBatch>), LowerError> {
        let f = std::fs::File::open(path).map_err(internal)?;
        let opts = ArrowReaderOptions::new().with_schema(s.clone());
        let b = ParquetRecordBatchReaderBuilder::try_new_with_options(f, opts).map_err(internal)?;
        let rows = b.metadata().file_metadata().num_rows();
        if rows > SPLICE_MAX_ROWS {
            return Ok((rows, vec![]));
        }
        let batches = b.with_batch_size(BATCH).build().map_err(internal)?.collect::<Result<Vec<_>, _>>();
        Ok((rows, batches.map_err(internal)?))
    };
    let (mut removed, mut added, mut total) = (vec![], vec![], 0);
    for (old, &i) in prev.removed.iter().zip(&prev.added) {
        let (r, b) = read(old, &schemas[i])?;
        removed.extend(b);
        let (a, c) = read(&all[i], &schemas[i])?;
        added.extend(c);
        total += r + a;
    }
    if total > SPLICE_MAX_ROWS {
        return Ok(None);
    }
    // Each side sorted: a changed branch's rows are, the union of several is merged.
    let sorted = |batches: Vec<RecordBatch>, n: usize| -> Result<Vec<RecordBatch>, LowerError> {
        if n <= 1 {
            return Ok(batches);
        }
        let feeds = batches
            .into_iter()
            .map(|b| {
                let b = RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(internal)?;
                Ok((Feed::Batches(vec![].into_iter()), Some(b)))
            })
            .collect::<Result<Vec<_>, LowerError>>()?;
        let k = feeds.len();
        let m = Merge::of_feeds(schema.clone(), feeds, vec![false; k], None)?;
        m.into_iter().collect::<Result<Vec<_>, _>>().map_err(internal)
    };
    let n = prev.added.len();
    let change = super::splice::Change { retract: None, removed: sorted(removed, n)?, added: sorted(added, n)? };
    tracing::debug!("union: changed branches read");
    to.write_spliced(schema.clone(), prev.object.clone(), change).await
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
