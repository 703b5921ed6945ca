//! Splicing: a new version of an output written from its previous object,
//! re-encoding only the row groups a change touches and copying the others
//! byte for byte. Objects' row groups are content-defined
//! (`relspec_exec::row_groups`): where a group ends depends only on its
//! rows, so after a change the groups away from it are the same groups,
//! and copying them writes exactly what a clean build would.
//!
//! Two kinds of change. A partial build's: rows of some partitions
//! retracted (found by the partition key, which must be the output's
//! leading columns) and sorted rows added; the footer's list of each
//! group's first row tells which groups they fall in, and a touched run of
//! groups is the k-way merge of its old rows and the added rows falling
//! there. A union's: the object is its branches' rows one after another
//! (the footer lists each part's row count, `FOOTER_PARTS`), and a changed
//! branch replaces the range of rows its part held; a touched run of groups
//! is its old rows with that range replaced. Either way the groups between
//! the touched ones are copied while the writer is at a group boundary, and
//! a touched run is re-chunked, continuing into the next groups until the
//! new boundaries meet the old ones again.
//!
//! Architecture invariant: a spliced object is byte-identical to a clean
//! write of the same rows (through the same writer); whenever that cannot
//! be guaranteed (no layout in the previous object, a key that is not a
//! prefix of the columns, part counts that do not add up) the caller
//! writes whole instead.

use super::merge::{Feed, Merge, Retract, internal};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::RowConverter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use relspec_exec::lower::LowerError;
use relspec_exec::parquet::ChunkedWriter;
use relspec_exec::row_groups::{Layout, order_converter};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

/// Rows per decoded batch of a touched run.
const BATCH: usize = 8192;

/// What changes between the previous object and the new one.
pub(crate) enum Change {
    /// A partial build: rows of these partitions leave the previous
    /// object, these rows (sorted) join it.
    Partitions { retract: Retract, added: Vec<RecordBatch> },
    /// A union: parts (by index) whose rows are replaced by these rows.
    Parts(Vec<(usize, Vec<RecordBatch>)>),
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
        let owned: Vec<RecordBatch> = batches.iter().map(|b| relabel(schema, b)).collect::<Result<_, _>>()?;
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

/// `b`'s columns under `schema`'s names (a branch's own names differ).
fn relabel(schema: &SchemaRef, b: &RecordBatch) -> Result<RecordBatch, LowerError> {
    RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(internal)
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
/// (the caller writes whole; `tmp` is removed).
pub(crate) fn splice(
    schema: &SchemaRef,
    previous: &Path,
    change: Change,
    tmp: &Path,
    footer: &BTreeMap<String, String>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Spliced>, LowerError> {
    let Some(layout) = Layout::read(previous) else { return Ok(None) };
    match change {
        Change::Partitions { retract, added } => {
            splice_partitions(schema, previous, &layout, retract, added, tmp, footer, cancelled)
        }
        Change::Parts(parts) => splice_parts(schema, previous, &layout, parts, tmp, footer, cancelled),
    }
}

#[allow(clippy::too_many_arguments)]
fn splice_partitions(
    schema: &SchemaRef,
    previous: &Path,
    layout: &Layout,
    retract: Retract,
    added: Vec<RecordBatch>,
    tmp: &Path,
    footer: &BTreeMap<String, String>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Spliced>, LowerError> {
    let n = layout.firsts.len();
    if n < 2 {
        return Ok(None);
    }
    let conv = order_converter(schema).map_err(internal)?;
    let added = Placed::new(schema, &added, &conv, layout)?;
    let mut dirty = vec![false; n];
    for &g in &added.group {
        dirty[g] = true;
    }
    let Some(groups) = retracted_groups(schema, &retract, layout) else { return Ok(None) };
    for g in groups {
        dirty[g] = true;
    }
    // Touching most groups: the whole merge (decoding ahead of the encoder) is as cheap.
    if dirty.iter().filter(|&&d| d).count() * 2 > n {
        return Ok(None);
    }
    let read_meta = reader_metadata(schema, layout)?;
    let mut retract = Some(retract);
    let mut run = |w: &mut ChunkedWriter, file: std::fs::File, range: (usize, usize)| {
        let mut merge = merge_range(schema, file, &read_meta, range, &added, retract.take())?;
        while let Some(b) = merge.next_batch()? {
            w.push(b).map_err(|diag| LowerError { diag, pos: None })?;
        }
        retract = merge.retracted();
        Ok(true)
    };
    let Some((finished, copied, encoded)) =
        rewrite(schema, previous, layout, &dirty, tmp, footer, cancelled, &mut run)?
    else {
        return Ok(None);
    };
    Ok(Some(Spliced { rows: finished.rows, hashes: finished.hashes, retract, copied, encoded }))
}

/// One replaced range of the previous object's rows: `len` rows from row
/// `at` give way to `rows`.
struct Edit {
    at: u64,
    len: u64,
    rows: Vec<RecordBatch>,
}

#[allow(clippy::too_many_arguments)]
fn splice_parts(
    schema: &SchemaRef,
    previous: &Path,
    layout: &Layout,
    replaced: Vec<(usize, Vec<RecordBatch>)>,
    tmp: &Path,
    footer: &BTreeMap<String, String>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Spliced>, LowerError> {
    let n = layout.firsts.len();
    let Some(parts) = &layout.parts else { return Ok(None) };
    if n == 0 {
        return Ok(None);
    }
    // Where each group and each part starts, in rows.
    let mut group_starts = Vec::with_capacity(n + 1);
    let mut acc = 0u64;
    for g in 0..n {
        group_starts.push(acc);
        acc += layout.meta.row_group(g).num_rows() as u64;
    }
    let total = acc;
    group_starts.push(total);
    let mut part_starts = Vec::with_capacity(parts.len());
    let mut acc = 0u64;
    for p in parts {
        part_starts.push(acc);
        acc += p;
    }
    let mut edits = Vec::with_capacity(replaced.len());
    for (i, rows) in replaced {
        if i >= parts.len() {
            return Ok(None);
        }
        let rows: Vec<RecordBatch> =
            rows.iter().filter(|b| b.num_rows() > 0).map(|b| relabel(schema, b)).collect::<Result<_, _>>()?;
        edits.push(Edit { at: part_starts[i], len: parts[i], rows });
    }
    // In row order; parts starting at the same row (empty ones) in part order.
    edits.sort_by_key(|e| e.at);
    edits.retain(|e| e.len > 0 || !e.rows.is_empty());
    // The groups a replaced range touches: those holding its rows; for an
    // insertion (an empty old part), the group holding the row it goes
    // before (the last group when it goes at the end, which no layout
    // boundary closed).
    let group_of = |row: u64| group_starts[..n].partition_point(|&s| s <= row).saturating_sub(1);
    let mut dirty = vec![false; n];
    for e in &edits {
        let first = group_of(e.at);
        dirty[first] = true;
        let mut g = first + 1;
        while g < n && group_starts[g] < e.at + e.len {
            dirty[g] = true;
            g += 1;
        }
    }
    let read_meta = reader_metadata(schema, layout)?;
    let mut edits = VecDeque::from(edits);
    let mut run = |w: &mut ChunkedWriter, file: std::fs::File, (from, to): (usize, usize)| {
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, read_meta.clone())
            .with_row_groups((from..to).collect())
            .with_batch_size(BATCH)
            .build()
            .map_err(internal)?;
        let old = reader.map(|b| b.map_err(internal));
        write_edited(w, old, (group_starts[from], group_starts[to]), to == n, &mut edits)
    };
    let Some((finished, copied, encoded)) =
        rewrite(schema, previous, layout, &dirty, tmp, footer, cancelled, &mut run)?
    else {
        return Ok(None);
    };
    if !edits.is_empty() {
        return Err(internal("a union splice left a replaced range unwritten"));
    }
    Ok(Some(Spliced { rows: finished.rows, hashes: finished.hashes, retract: None, copied, encoded }))
}

/// Write the old rows `old` (rows `start..end` of the previous object)
/// with the edits falling in them applied; edits at `end` too when the
/// run is the object's last. False when an edit does not fit the run
/// (the splice is abandoned).
fn write_edited(
    w: &mut ChunkedWriter,
    old: impl Iterator<Item = Result<RecordBatch, LowerError>>,
    (start, end): (u64, u64),
    last: bool,
    edits: &mut VecDeque<Edit>,
) -> Result<bool, LowerError> {
    let push = |w: &mut ChunkedWriter, b: RecordBatch| w.push(b).map_err(|diag| LowerError { diag, pos: None });
    let (mut pos, mut skip) = (start, 0u64);
    let apply = |w: &mut ChunkedWriter, edits: &mut VecDeque<Edit>, skip: &mut u64| -> Result<(), LowerError> {
        let Some(e) = edits.pop_front() else { unreachable!("an edit is due") };
        for b in e.rows {
            push(w, b)?;
        }
        *skip = e.len;
        Ok(())
    };
    for b in old {
        let b = b?;
        let len = b.num_rows() as u64;
        let mut off = 0u64;
        while off < len {
            if skip > 0 {
                let k = skip.min(len - off);
                (off, pos, skip) = (off + k, pos + k, skip - k);
                continue;
            }
            match edits.front() {
                Some(e) if e.at < pos => return Ok(false),
                Some(e) if e.at < pos + (len - off) => {
                    let k = e.at - pos;
                    if k > 0 {
                        push(w, b.slice(off as usize, k as usize))?;
                        (off, pos) = (off + k, pos + k);
                    }
                    apply(w, edits, &mut skip)?;
                }
                _ => {
                    push(w, b.slice(off as usize, (len - off) as usize))?;
                    (off, pos) = (len, pos + len - off);
                }
            }
        }
    }
    if pos != end || skip > 0 {
        return Ok(false);
    }
    while last && edits.front().is_some_and(|e| e.at == end && e.len == 0) {
        apply(w, edits, &mut skip)?;
    }
    // Every edit before the run's end was applied in it.
    Ok(edits.front().is_none_or(|e| e.at > end || (e.at == end && !last)))
}

/// Writes a touched run of groups `(from, to)` of the previous object
/// (open as the file) into the writer; false to abandon the splice.
type RunWriter<'a> = dyn FnMut(&mut ChunkedWriter, std::fs::File, (usize, usize)) -> Result<bool, LowerError> + 'a;

/// The loop both kinds of splice share: copy each group the change does
/// not touch while the writer is at a boundary; write each run of touched
/// groups (and each clean group the new boundaries have not met yet) with
/// `run`. `None` when `run` declines or the types do not allow a
/// content-defined layout (`tmp` removed).
#[allow(clippy::too_many_arguments)]
fn rewrite(
    schema: &SchemaRef,
    previous: &Path,
    layout: &Layout,
    dirty: &[bool],
    tmp: &Path,
    footer: &BTreeMap<String, String>,
    cancelled: &(dyn Fn() -> bool + Sync),
    run: &mut RunWriter<'_>,
) -> Result<Option<(relspec_exec::parquet::Finished, usize, usize)>, LowerError> {
    let n = dirty.len();
    let file = std::fs::File::open(previous).map_err(internal)?;
    let Some(mut w) = content_defined_writer(tmp, schema, footer)? else { return Ok(None) };
    let (mut g, mut copied, mut encoded) = (0, 0, 0);
    let (mut copying, mut writing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    while g < n {
        if cancelled() {
            abandon(w, tmp);
            return Err(internal("cancelled"));
        }
        if !dirty[g] && w.at_boundary() {
            let t = std::time::Instant::now();
            let res = w.copy_group(&file, layout, g);
            copying += t.elapsed();
            if let Err(diag) = res {
                abandon(w, tmp);
                return Err(LowerError { diag, pos: None });
            }
            copied += 1;
            g += 1;
            continue;
        }
        let mut end = g + 1;
        while end < n && dirty[end] {
            end += 1;
        }
        let range = file.try_clone().map_err(internal);
        let t = std::time::Instant::now();
        let res = range.and_then(|f| run(&mut w, f, (g, end)));
        writing += t.elapsed();
        match res {
            Ok(true) => {}
            Ok(false) => {
                abandon(w, tmp);
                return Ok(None);
            }
            Err(e) => {
                abandon(w, tmp);
                return Err(e);
            }
        }
        encoded += end - g;
        g = end;
    }
    let t = std::time::Instant::now();
    let finished = w.finish().map_err(|diag| LowerError { diag, pos: None })?;
    tracing::debug!(
        copy_ms = copying.as_secs_f64() * 1e3,
        rewrite_ms = writing.as_secs_f64() * 1e3,
        finish_ms = t.elapsed().as_secs_f64() * 1e3,
        copied,
        encoded,
        "splice: groups copied and re-encoded, file synced"
    );
    Ok(Some((finished, copied, encoded)))
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
/// `file`) with the added rows that fall in them, retracting `retract`'s
/// partitions from the old rows.
fn merge_range(
    schema: &SchemaRef,
    file: std::fs::File,
    read_meta: &ArrowReaderMetadata,
    (from, to): (usize, usize),
    added: &Placed,
    retract: Option<Retract>,
) -> Result<Merge, LowerError> {
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, read_meta.clone())
        .with_row_groups((from..to).collect())
        .with_batch_size(BATCH)
        .build()
        .map_err(internal)?;
    let mut old = Feed::File(reader);
    let first = old.next_non_empty()?;
    let feeds = vec![(old, first), added.feed(from, to)?];
    Merge::of_feeds(schema.clone(), feeds, retract.map(|r| (0, r)))
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
        write_with(path, batch, &BTreeMap::new());
    }

    fn write_with(path: &Path, batch: &RecordBatch, footer: &BTreeMap<String, String>) {
        let mut w = ChunkedWriter::create(path, schema(), footer).unwrap();
        for off in (0..batch.num_rows()).step_by(5000) {
            w.push(batch.slice(off, 5000.min(batch.num_rows() - off))).unwrap();
        }
        w.finish().unwrap();
    }

    /// Random edits of a file-partitioned output (files edited, added,
    /// deleted, a null key among them): the spliced object equals a clean
    /// write of the same rows, byte for byte, and copies most row groups.
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
            let mut ids = HashSet::new();
            let mut added = vec![];
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
            let ids: HashSet<String> =
                ids.iter().map(|&f| if f == 999 { String::new() } else { format!("src/m{f:04}.py") }).collect();
            let retract = Retract { cols: vec![0], ids, hashes: HashMap::new() };
            let change = Change::Partitions { retract, added: vec![sorted(added)] };
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

    /// An object written as parts (a union's branches, in order; some
    /// empty, some small, some spanning several row groups), and random
    /// replacements of parts (emptied, filled, grown, shrunk; the first and
    /// the last among them): the spliced object equals a clean write of
    /// the new parts, byte for byte, and copies the groups away from them.
    #[test]
    fn a_spliced_union_equals_a_clean_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(11);
        // Part `p` in version `v`: rows of a few files, sorted; empty for some versions.
        let part = |p: u64, v: u64| -> Vec<(Option<String>, i64, Option<String>)> {
            let files = match (p * 3 + v) % 7 {
                0 => 0,
                1 => 1,
                6 => 40,
                k => k * 3,
            };
            (0..files).flat_map(|f| file_rows(p * 100 + f, v)).collect()
        };
        let object = |versions: &[u64]| -> (RecordBatch, BTreeMap<String, String>) {
            let batches: Vec<RecordBatch> =
                versions.iter().enumerate().map(|(p, &v)| sorted(part(p as u64, v))).collect();
            let counts: Vec<u64> = batches.iter().map(|b| b.num_rows() as u64).collect();
            let footer = BTreeMap::from([(
                relspec_exec::row_groups::FOOTER_PARTS.to_string(),
                relspec_exec::row_groups::encode_parts(&counts),
            )]);
            (concat_batches(&schema(), &batches).unwrap(), footer)
        };
        let (mut copied, mut encoded) = (0, 0);
        for case in 0..20 {
            let n = 120;
            let mut versions: Vec<u64> = (0..n).map(|p| (p * 5 + case) % 4).collect();
            let (before, footer) = object(&versions);
            let prev = dir.path().join(format!("prev{case}.parquet"));
            write_with(&prev, &before, &footer);
            let mut changed: Vec<usize> = (0..1 + rng.below(3)).map(|_| rng.below(n) as usize).collect();
            if case % 5 == 0 {
                changed.push(0);
            }
            if case % 5 == 1 {
                changed.push(n as usize - 1);
            }
            changed.sort();
            changed.dedup();
            for &p in &changed {
                versions[p] += 1 + rng.below(5);
            }
            let (after, footer) = object(&versions);
            let clean = dir.path().join(format!("clean{case}.parquet"));
            write_with(&clean, &after, &footer);
            let parts = changed.iter().map(|&p| (p, vec![sorted(part(p as u64, versions[p]))])).collect();
            let out = dir.path().join(format!("out{case}.parquet"));
            let s = splice(&schema(), &prev, Change::Parts(parts), &out, &footer, &|| false).unwrap().expect("spliced");
            assert_eq!(s.rows as usize, after.num_rows());
            let (a, b) = (std::fs::read(&out).unwrap(), std::fs::read(&clean).unwrap());
            assert!(a == b, "case {case} (parts {changed:?}): spliced {} bytes vs clean {} bytes", a.len(), b.len());
            copied += s.copied;
            encoded += s.encoded;
        }
        assert!(copied > 2 * encoded, "{copied} copied, {encoded} re-encoded");
    }

    /// An object written without part counts (or with counts that do not
    /// add up) is not spliced as parts.
    #[test]
    fn parts_are_spliced_only_when_the_footer_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sorted((0..300).flat_map(|f| file_rows(f, 0)).collect());
        let replace = || Change::Parts(vec![(0, vec![sorted(file_rows(0, 1))])]);
        let plain = dir.path().join("plain.parquet");
        write(&plain, &rows);
        let out = dir.path().join("out.parquet");
        assert!(splice(&schema(), &plain, replace(), &out, &BTreeMap::new(), &|| false).unwrap().is_none());
        assert!(!out.exists());
        let wrong = BTreeMap::from([(relspec_exec::row_groups::FOOTER_PARTS.to_string(), "5,7".to_string())]);
        let miscounted = dir.path().join("miscounted.parquet");
        write_with(&miscounted, &rows, &wrong);
        assert!(splice(&schema(), &miscounted, replace(), &out, &wrong, &|| false).unwrap().is_none());
        assert!(!out.exists());
    }

    /// A key that is not the leading column cannot locate its rows: no splice.
    #[test]
    fn a_key_after_the_leading_columns_does_not_splice() {
        let dir = tempfile::tempdir().unwrap();
        let before = sorted((0..300).flat_map(|f| file_rows(f, 0)).collect());
        let prev = dir.path().join("prev.parquet");
        write(&prev, &before);
        let retract = Retract { cols: vec![1], ids: HashSet::from(["3".to_string()]), hashes: HashMap::new() };
        let change = Change::Partitions { retract, added: vec![] };
        let out = dir.path().join("out.parquet");
        assert!(splice(&schema(), &prev, change, &out, &BTreeMap::new(), &|| false).unwrap().is_none());
        assert!(!out.exists());
    }
}
