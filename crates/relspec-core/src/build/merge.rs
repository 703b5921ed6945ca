//! The k-way merge of sorted sources: a partial build's previous output
//! (less the rows of the partitions it retracts) with the partitions it
//! recomputed, and the touched row groups of a splice. Every output is
//! sorted by all its columns (ascending, nulls first: `lower`'s total
//! output order), so merging sorted sources keeps that order without a
//! re-sort.

use crate::error::{Diag, ErrorKind};
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use relspec_exec::lower::LowerError;
use std::path::PathBuf;

/// Rows per merged batch.
pub(crate) const BATCH: usize = 8192;
pub(crate) fn fail(diag: Diag) -> LowerError {
    LowerError { diag, pos: None }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> LowerError {
    fail(Diag::new(ErrorKind::Execution(e.to_string())))
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

/// The k-way merge as an iterator of output batches (equal rows in source order).
pub(crate) struct Merge {
    /// A source whose rows of some partitions are left out (its index).
    retract: Option<(usize, Retract)>,
    schema: SchemaRef,
    conv: RowConverter,
    cursors: Vec<Option<Cursor>>,
    /// Batches the next output batch may take rows from.
    held: Vec<RecordBatch>,
    /// Sources with rows left, as a binary min-heap by their current row
    /// (ties by source index, so the merge is deterministic).
    heap: Vec<usize>,
}

impl Merge {
    /// A merge of `feeds` (each with its first batch), leaving out what `retract` says.
    pub(crate) fn of_feeds(
        schema: SchemaRef,
        feeds: Vec<(Feed, Option<RecordBatch>)>,
        retract: Option<(usize, Retract)>,
    ) -> Result<Merge, LowerError> {
        let conv = row_converter(&schema)?;
        let mut m = Merge { retract, schema, conv, cursors: Vec::new(), held: Vec::new(), heap: Vec::new() };
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

    /// The retracted rows' hashes per partition (after the merge ran).
    pub(crate) fn retracted(&mut self) -> Option<Retract> {
        self.retract.take().map(|(_, r)| r)
    }

    /// Whether source `a`'s current row sorts before source `b`'s.
    fn less(&self, a: usize, b: usize) -> bool {
        let (Some(ca), Some(cb)) = (&self.cursors[a], &self.cursors[b]) else { return a < b };
        match ca.rows.row(ca.pos).cmp(&cb.rows.row(cb.pos)) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => a < b,
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
        let c = self.cursors[i].as_ref()?;
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
            // heap step per row (ties go row by row below).
            if let Some(end) = self.run_end(i, BATCH - picks.len()) {
                let Some(c) = self.cursors[i].as_mut() else { unreachable!("a branch in the heap has rows") };
                picks.extend((c.pos..end).map(|r| (c.slot, r)));
                c.pos = end;
                self.settle_top(i)?;
                continue;
            }
            let Some(c) = self.cursors[i].as_mut() else { unreachable!("a branch in the heap has rows") };
            picks.push((c.slot, c.pos));
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
