//! Splicing: a new version of an output written from its previous object,
//! re-encoding only the row groups a change touches and copying the others
//! byte for byte. Objects' row groups are content-defined
//! (`relspec_exec::row_groups`): where a group ends depends only on its
//! rows, so after a change the groups away from it are the same groups,
//! and copying them writes exactly what a clean build would.
//!
//! The change is what a partial build or a union's re-merge already
//! computes: rows of some partitions retracted (found by the partition key,
//! which must be the output's leading columns), rows removed (a changed
//! union branch's old rows) and rows added (sorted). The footer's list of
//! each group's first row tells which groups those rows fall in; the groups
//! between them are copied while the writer is at a group boundary, and a
//! run of touched groups is merged (the same k-way merge as a whole merge)
//! and re-chunked, continuing into the next groups until the new
//! boundaries meet the old ones again. A union change whose rows fall in
//! most groups re-encodes every group, in one contiguous range of groups
//! per thread (see [`rewrite_parallel`]).
//!
//! Architecture invariant: a spliced object is byte-identical to the whole
//! merge's (the same rows through the same writer); whenever that cannot
//! be guaranteed (no layout in the previous object, a key that is not a
//! prefix of the columns, a removal that found no row) the caller merges
//! whole instead.

use super::union::{Feed, Merge, Retract, internal};
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::RowConverter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use relspec_exec::lower::LowerError;
use relspec_exec::parquet::ChunkedWriter;
use relspec_exec::row_groups::{Layout, order_converter};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Rows per decoded batch of a touched run.
const BATCH: usize = 8192;

/// What changes between the previous object and the new one.
pub(crate) struct Change {
    /// Rows of these partitions leave the previous object.
    pub(crate) retract: Option<Retract>,
    /// Rows taken out (one equal row each), sorted.
    pub(crate) removed: Vec<RecordBatch>,
    /// Rows added, sorted.
    pub(crate) added: Vec<RecordBatch>,
}

/// What a splice wrote.
pub(crate) struct Spliced {
    pub(crate) rows: u64,
    /// The object's hashes, computed as it was written.
    pub(crate) hashes: Option<crate::store::ObjectHashes>,
    /// The retraction, with the retracted rows' hashes per partition.
    pub(crate) retract: Option<Retract>,
    /// Row groups copied and re-encoded.
    pub(crate) copied: usize,
    pub(crate) encoded: usize,
    /// Parallel segments the groups were re-encoded in (1: in order).
    pub(crate) segments: usize,
}

/// Sorted rows with the group of the previous object each falls in.
struct Placed {
    batch: Option<RecordBatch>,
    /// Per row: its group (non-decreasing).
    group: Vec<usize>,
}

impl Placed {
    fn new(
        schema: &SchemaRef,
        batches: &[RecordBatch],
        conv: &RowConverter,
        layout: &Layout,
    ) -> Result<Placed, LowerError> {
        let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return Ok(Placed { batch: None, group: vec![] });
        }
        let columns = |b: &RecordBatch| RecordBatch::try_new(schema.clone(), b.columns().to_vec());
        let owned: Vec<RecordBatch> = batches.iter().map(|b| columns(b)).collect::<Result<_, _>>().map_err(internal)?;
        let batch = concat_batches(schema, &owned).map_err(internal)?;
        let rows = conv.convert_columns(batch.columns()).map_err(internal)?;
        let group: Vec<usize> = (0..rows.num_rows()).map(|r| layout.group_of(rows.row(r).as_ref())).collect();
        Ok(Placed { batch: Some(batch), group })
    }

    /// The rows falling in groups `[from, to)`, as a merge feed.
    fn feed(&self, from: usize, to: usize) -> Result<(Feed, Option<RecordBatch>), LowerError> {
        let (a, b) = (self.group.partition_point(|&g| g < from), self.group.partition_point(|&g| g < to));
        let slice = match &self.batch {
            Some(batch) if b > a => vec![batch.slice(a, b - a)],
            _ => vec![],
        };
        let mut feed = Feed::Batches(slice.into_iter());
        let first = feed.next_non_empty()?;
        Ok((feed, first))
    }
}

/// The groups holding rows of the retracted partitions, when the key
/// columns are the schema's leading columns; `None` otherwise.
fn retracted_groups(schema: &SchemaRef, retract: &Retract, layout: &Layout) -> Option<Vec<usize>> {
    let k = retract.cols.len();
    if retract.cols != (0..k).collect::<Vec<_>>() {
        return None;
    }
    let key_schema = Arc::new(Schema::new(schema.fields()[..k].to_vec()));
    let conv = order_converter(&key_schema).ok()?;
    let mut out = Vec::new();
    for id in &retract.ids {
        let parts: Vec<&str> =
            if k == 1 { vec![id.as_str()] } else { id.split(relspec_db::datasets::PARTITION_ID_SEP).collect() };
        if parts.len() != k {
            return None;
        }
        // Each part as its column's value; an empty part may also be a null
        // (ids write nulls as empty text).
        let mut variants: Vec<Vec<ArrayRef>> = vec![vec![]];
        for (part, field) in parts.iter().zip(key_schema.fields()) {
            let text: ArrayRef = Arc::new(StringArray::from(vec![*part]));
            let value = datafusion::arrow::compute::cast(&text, field.data_type()).ok()?;
            if value.is_null(0) && !part.is_empty() {
                return None;
            }
            let mut options = vec![value];
            if part.is_empty() {
                options.push(datafusion::arrow::array::new_null_array(field.data_type(), 1));
            }
            variants = variants
                .into_iter()
                .flat_map(|v| {
                    options.iter().map(move |o| {
                        let mut v = v.clone();
                        v.push(o.clone());
                        v
                    })
                })
                .collect();
        }
        for columns in variants {
            let rows = conv.convert_columns(&columns).ok()?;
            out.extend(layout.groups_with_prefix(rows.row(0).as_ref()));
        }
    }
    Some(out)
}

/// Write `tmp` as `previous` with `change` applied, copying the row groups
/// the change does not touch. `Ok(None)` when splicing does not apply here
/// (the caller merges whole; `tmp` is removed).
pub(crate) fn splice(
    schema: &SchemaRef,
    previous: &Path,
    change: Change,
    tmp: &Path,
    footer: &BTreeMap<String, String>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Spliced>, LowerError> {
    let Some(layout) = Layout::read(previous) else { return Ok(None) };
    let n = layout.firsts.len();
    if n < 2 {
        return Ok(None);
    }
    let conv = order_converter(schema).map_err(internal)?;
    let removed = Placed::new(schema, &change.removed, &conv, &layout)?;
    let added = Placed::new(schema, &change.added, &conv, &layout)?;
    let mut dirty = vec![false; n];
    for &g in removed.group.iter().chain(&added.group) {
        dirty[g] = true;
    }
    if let Some(r) = &change.retract {
        let Some(groups) = retracted_groups(schema, r, &layout) else { return Ok(None) };
        for g in groups {
            dirty[g] = true;
        }
    }
    // Touching most groups: every group is re-encoded, in parallel when
    // it can be (a union's re-merge), else by the whole merge (decoding
    // ahead of the encoder).
    if dirty.iter().filter(|&&d| d).count() * 2 > n {
        if change.retract.is_none() && rayon::current_num_threads() > 1 {
            return rewrite_parallel(schema, previous, &layout, &removed, &added, tmp, footer, cancelled);
        }
        return Ok(None);
    }
    let file = std::fs::File::open(previous).map_err(internal)?;
    let Some(mut w) = content_defined_writer(tmp, schema, footer)? else { return Ok(None) };
    let abandon = |w: ChunkedWriter| abandon(w, tmp);
    // The footer parsed once (by `Layout::read`) serves every touched run's reader.
    let read_meta = reader_metadata(schema, &layout)?;
    let mut retract = change.retract;
    let (mut g, mut copied, mut encoded) = (0, 0, 0);
    while g < n {
        if cancelled() {
            abandon(w);
            return Err(internal("cancelled"));
        }
        if !dirty[g] && w.at_boundary() {
            w.copy_group(&file, &layout, g).map_err(|diag| LowerError { diag, pos: None })?;
            copied += 1;
            g += 1;
            continue;
        }
        // A run of touched groups (or a clean group the new boundaries have
        // not met yet): merged and re-chunked.
        let mut end = g + 1;
        while end < n && dirty[end] {
            end += 1;
        }
        let range = file.try_clone().map_err(internal)?;
        let mut merge = merge_range(schema, range, &read_meta, (g, end), [&removed, &added], retract.take())?;
        while let Some(b) = merge.next_batch()? {
            w.push(b).map_err(|diag| LowerError { diag, pos: None })?;
        }
        if merge.lost_removals() > 0 {
            abandon(w);
            return Ok(None);
        }
        retract = merge.retracted();
        encoded += end - g;
        g = end;
    }
    let finished = w.finish().map_err(|diag| LowerError { diag, pos: None })?;
    Ok(Some(Spliced { rows: finished.rows, hashes: finished.hashes, retract, copied, encoded, segments: 1 }))
}

/// A writer of `tmp` whose row groups are content-defined (the schema's
/// types allow it); `None` (and no file) otherwise: nothing is spliced.
fn content_defined_writer(
    tmp: &Path,
    schema: &SchemaRef,
    footer: &BTreeMap<String, String>,
) -> Result<Option<ChunkedWriter>, LowerError> {
    let w = ChunkedWriter::create(tmp, schema.clone(), footer).map_err(|diag| LowerError { diag, pos: None })?;
    if w.content_defined() {
        return Ok(Some(w));
    }
    abandon(w, tmp);
    Ok(None)
}

/// Drop a writer and its partial file.
fn abandon(w: ChunkedWriter, tmp: &Path) {
    drop(w);
    let _ = std::fs::remove_file(tmp);
}

/// The previous object's parsed footer, as readers of `schema` use it.
fn reader_metadata(schema: &SchemaRef, layout: &Layout) -> Result<ArrowReaderMetadata, LowerError> {
    ArrowReaderMetadata::try_new(layout.meta.clone(), ArrowReaderOptions::new().with_schema(schema.clone()))
        .map_err(internal)
}

/// The merge of groups `from..to` of the previous object (read from
/// `file`) with the removed and the added rows that fall in them (`placed`,
/// in that order), retracting `retract`'s partitions from the old rows.
fn merge_range(
    schema: &SchemaRef,
    file: std::fs::File,
    read_meta: &ArrowReaderMetadata,
    (from, to): (usize, usize),
    [removed, added]: [&Placed; 2],
    retract: Option<Retract>,
) -> Result<Merge, LowerError> {
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, read_meta.clone())
        .with_row_groups((from..to).collect())
        .with_batch_size(BATCH)
        .build()
        .map_err(internal)?;
    let mut old = Feed::File(reader);
    let first = old.next_non_empty()?;
    let feeds = vec![(old, first), removed.feed(from, to)?, added.feed(from, to)?];
    Merge::of_feeds(schema.clone(), feeds, vec![false, true, false], retract.map(|r| (0, r)))
}

/// Most bytes of a previous object rewritten in parallel (the segments'
/// encoded groups are held in memory until appended in order).
const PARALLEL_MAX_BYTES: i64 = 256 << 20;

/// Every group of `previous` re-encoded with the removed and added rows,
/// in contiguous ranges of groups on parallel threads. Each range is
/// merged and chunked as if a group started at its first row, which holds
/// when the range before it ends exactly at a group boundary under the new
/// rows; the ranges are appended in order after checking that, and when it
/// does not hold (or a removal found no row in its range) the caller
/// merges whole instead. So the bytes are the whole merge's.
#[allow(clippy::too_many_arguments)]
fn rewrite_parallel(
    schema: &SchemaRef,
    previous: &Path,
    layout: &Layout,
    removed: &Placed,
    added: &Placed,
    tmp: &Path,
    footer: &BTreeMap<String, String>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Spliced>, LowerError> {
    use rayon::prelude::*;
    let t = std::time::Instant::now();
    let n = layout.firsts.len();
    let groups: Vec<i64> = (0..n).map(|g| layout.meta.row_group(g).num_rows()).collect();
    let bytes: i64 = (0..n).map(|g| layout.meta.row_group(g).compressed_size()).sum();
    if bytes > PARALLEL_MAX_BYTES {
        return Ok(None);
    }
    // Ranges of groups with about equal rows, one per thread.
    let k = rayon::current_num_threads().min(n);
    let total: i64 = groups.iter().sum();
    let mut bounds = vec![0];
    let mut acc = 0;
    for (g, rows) in groups.iter().enumerate() {
        acc += rows;
        if g + 1 < n && bounds.len() < k && acc * k as i64 >= total * bounds.len() as i64 {
            bounds.push(g + 1);
        }
    }
    bounds.push(n);
    let read_meta = reader_metadata(schema, layout)?;
    let Some(mut w) = content_defined_writer(tmp, schema, footer)? else { return Ok(None) };
    let abandon = |w: ChunkedWriter| abandon(w, tmp);
    let encoder = w.segments();
    let ranges: Vec<(usize, usize)> = bounds.windows(2).map(|r| (r[0], r[1])).collect();
    let segments: Vec<Result<(relspec_exec::parquet::Segment, usize), LowerError>> = ranges
        .par_iter()
        .map(|&(from, to)| {
            // A file of its own: a cloned descriptor would share the
            // offset the reader seeks with the other threads.
            let file = std::fs::File::open(previous).map_err(internal)?;
            let mut merge = merge_range(schema, file, &read_meta, (from, to), [removed, added], None)?;
            let batches = std::iter::from_fn(|| {
                if cancelled() {
                    return Some(Err(internal("cancelled").diag));
                }
                match merge.next_batch() {
                    Ok(b) => b.map(Ok),
                    Err(e) => Some(Err(e.diag)),
                }
            });
            let segment = encoder.encode(batches).map_err(|diag| LowerError { diag, pos: None })?;
            Ok((segment, merge.lost_removals()))
        })
        .collect();
    tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, "parallel rewrite: segments encoded");
    let count = segments.len();
    for (i, s) in segments.into_iter().enumerate() {
        let (segment, lost) = match s {
            Ok(s) => s,
            Err(e) => {
                abandon(w);
                return Err(e);
            }
        };
        if lost > 0 || (i + 1 < count && !segment.ends_at_boundary()) {
            tracing::debug!(segment = i, lost, "parallel rewrite: ranges do not meet at a boundary; merging whole");
            abandon(w);
            return Ok(None);
        }
        w.append_segment(segment).map_err(|diag| LowerError { diag, pos: None })?;
    }
    let finished = w.finish().map_err(|diag| LowerError { diag, pos: None })?;
    tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, "parallel rewrite: appended and synced");
    Ok(Some(Spliced {
        rows: finished.rows,
        hashes: finished.hashes,
        retract: None,
        copied: 0,
        encoded: n,
        segments: count,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field};
    use std::collections::{HashMap, HashSet};

    /// A small deterministic generator (the test needs no crate).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("file", DataType::Utf8, true),
            Field::new("line", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]))
    }

    /// Rows of file `f` in version `v` (a version changes some rows' text and count).
    fn file_rows(f: u64, v: u64) -> Vec<(Option<String>, i64, Option<String>)> {
        let n = 40 + (f * 7 + v * 13) % 90;
        let name = (f != 999).then(|| format!("src/m{f:04}.py"));
        (0..n as i64)
            .map(|l| (name.clone(), l, (l % 5 != 0).then(|| format!("v{v} line {l} {}", f as i64 * l))))
            .collect()
    }

    /// The rows sorted in the total output order, as one batch.
    fn sorted(rows: Vec<(Option<String>, i64, Option<String>)>) -> RecordBatch {
        let s = schema();
        let b = RecordBatch::try_new(
            s.clone(),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let conv = order_converter(&s).unwrap();
        let keys = conv.convert_columns(b.columns()).unwrap();
        let mut idx: Vec<u32> = (0..b.num_rows() as u32).collect();
        idx.sort_by(|&x, &y| keys.row(x as usize).cmp(&keys.row(y as usize)));
        let idx = UInt32Array::from(idx);
        datafusion::arrow::compute::take_record_batch(&b, &idx).unwrap()
    }

    fn write(path: &Path, batch: &RecordBatch) {
        let mut w = ChunkedWriter::create(path, schema(), &BTreeMap::new()).unwrap();
        for off in (0..batch.num_rows()).step_by(5000) {
            w.push(batch.slice(off, 5000.min(batch.num_rows() - off))).unwrap();
        }
        w.finish().unwrap();
    }

    /// Random edits of a file-partitioned output (files edited, added,
    /// deleted, a null key among them), and of a union (rows removed and
    /// added): the spliced object equals a clean write of the same rows,
    /// byte for byte, and copies most row groups.
    #[test]
    fn a_spliced_object_equals_a_clean_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(7);
        let mut copied = 0;
        for case in 0..24 {
            // The current version of each file (files 0..2000, 999 with a null key).
            let mut files: HashMap<u64, u64> = (0..2000).map(|f| (f, 0)).collect();
            files.insert(999, 0);
            let all = |files: &HashMap<u64, u64>| sorted(files.iter().flat_map(|(&f, &v)| file_rows(f, v)).collect());
            let before = all(&files);
            let prev = dir.path().join(format!("prev{case}.parquet"));
            write(&prev, &before);
            let union = case % 3 == 2;
            let mut ids = HashSet::new();
            let (mut removed, mut added) = (vec![], vec![]);
            for _ in 0..1 + rng.below(4) {
                let f = match rng.below(10) {
                    0 => 999,
                    1 => 2000 + rng.below(50),
                    _ => rng.below(2100),
                };
                if ids.contains(&f) {
                    continue;
                }
                let old = files.get(&f).copied();
                if let Some(v) = old {
                    removed.extend(file_rows(f, v));
                }
                match rng.below(4) {
                    0 => {
                        files.remove(&f);
                    }
                    _ => {
                        let v = old.map_or(0, |v| v + 1 + rng.below(3));
                        added.extend(file_rows(f, v));
                        files.insert(f, v);
                    }
                }
                ids.insert(f);
            }
            let after = all(&files);
            let clean = dir.path().join(format!("clean{case}.parquet"));
            write(&clean, &after);
            let change = if union {
                Change { retract: None, removed: vec![sorted(removed)], added: vec![sorted(added)] }
            } else {
                let ids: HashSet<String> =
                    ids.iter().map(|&f| if f == 999 { String::new() } else { format!("src/m{f:04}.py") }).collect();
                let retract = Retract { cols: vec![0], ids, hashes: HashMap::new() };
                Change { retract: Some(retract), removed: vec![], added: vec![sorted(added)] }
            };
            let out = dir.path().join(format!("out{case}.parquet"));
            let s = splice(&schema(), &prev, change, &out, &BTreeMap::new(), &|| false).unwrap().expect("spliced");
            assert_eq!(s.rows as usize, after.num_rows());
            let (a, b) = (std::fs::read(&out).unwrap(), std::fs::read(&clean).unwrap());
            assert!(a == b, "case {case}: spliced {} bytes vs clean {} bytes", a.len(), b.len());
            assert!(s.copied > s.encoded, "case {case}: {} copied, {} re-encoded", s.copied, s.encoded);
            copied += s.copied;
        }
        assert!(copied > 24 * 3);
    }

    /// A union change whose rows fall in every row group (a branch's rows
    /// interleaved with the others'): every group is re-encoded, in
    /// parallel segments on a pool of several threads, and the bytes equal
    /// a clean write's.
    #[test]
    fn a_change_in_every_group_is_rewritten_in_parallel_segments() {
        let dir = tempfile::tempdir().unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (case, every) in [7u64, 13, 50].into_iter().enumerate() {
            let version = |v: u64| -> Vec<(Option<String>, i64, Option<String>)> {
                (0..1500u64)
                    .flat_map(|f| file_rows(f, 0))
                    .enumerate()
                    .map(|(i, r)| {
                        let mine = i as u64 % every == 3;
                        (r.0, r.1, if mine { Some(format!("branch row {i} v{v}")) } else { r.2 })
                    })
                    .collect()
            };
            let (before, after) = (version(0), version(1));
            let changed = |rows: &[(Option<String>, i64, Option<String>)]| -> Vec<_> {
                rows.iter().enumerate().filter(|(i, _)| *i as u64 % every == 3).map(|(_, r)| r.clone()).collect()
            };
            let prev = dir.path().join(format!("prev{case}.parquet"));
            write(&prev, &sorted(before.clone()));
            let clean = dir.path().join(format!("clean{case}.parquet"));
            write(&clean, &sorted(after.clone()));
            let change =
                Change { retract: None, removed: vec![sorted(changed(&before))], added: vec![sorted(changed(&after))] };
            let out = dir.path().join(format!("out{case}.parquet"));
            let s = pool
                .install(|| splice(&schema(), &prev, change, &out, &BTreeMap::new(), &|| false))
                .unwrap()
                .expect("rewritten");
            assert_eq!(s.segments, 3, "case {case}");
            assert_eq!(s.copied, 0);
            let (a, b) = (std::fs::read(&out).unwrap(), std::fs::read(&clean).unwrap());
            assert!(a == b, "case {case}: rewritten {} bytes vs clean {} bytes", a.len(), b.len());
        }
    }

    /// A key that is not the leading column cannot locate its rows: no splice.
    #[test]
    fn a_key_after_the_leading_columns_does_not_splice() {
        let dir = tempfile::tempdir().unwrap();
        let before = sorted((0..300).flat_map(|f| file_rows(f, 0)).collect());
        let prev = dir.path().join("prev.parquet");
        write(&prev, &before);
        let retract = Retract { cols: vec![1], ids: HashSet::from(["3".to_string()]), hashes: HashMap::new() };
        let change = Change { retract: Some(retract), removed: vec![], added: vec![] };
        let out = dir.path().join("out.parquet");
        assert!(splice(&schema(), &prev, change, &out, &BTreeMap::new(), &|| false).unwrap().is_none());
        assert!(!out.exists());
    }
}
