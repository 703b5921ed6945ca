//! Deterministic Parquet writing: every object relspec stores is written
//! here, streamed batch by batch from the plan (never collected whole).
//!
//! Architecture invariant: the bytes depend only on the rows (in their total
//! order), the schema and the footer metadata, never on the engine's batch
//! sizes or partition count: row groups end where the content-defined
//! layout says, each group's rows are encoded in fixed slices of
//! `WRITE_CHUNK` from its start, with fixed writer settings.

use crate::error::{Diag, ErrorKind, Result};
use crate::row_groups::{Chunker, FOOTER_ROW_GROUPS, Layout};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use futures::StreamExt;
use relspec_db::store::ColumnInfo;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// The `created_by` written into every Parquet footer (fixed, so output bytes
/// do not depend on the machine).
pub const PARQUET_CREATED_BY: &str = concat!("relspec ", env!("CARGO_PKG_VERSION"), " (parquet 59)");

/// Rows per Parquet write call; fixed so page boundaries never depend on the
/// engine's batch size.
const WRITE_CHUNK: usize = 8192;

fn io(what: &str, p: &Path, e: std::io::Error) -> Diag {
    Diag::new(ErrorKind::Store(format!("{what} {}: {e}", p.display())))
}

/// Deterministic Parquet writer settings, with `footer` as the file's
/// key-value metadata.
pub fn writer_properties(footer: &BTreeMap<String, String>) -> WriterProperties {
    let kv: Vec<KeyValue> = footer.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
    WriterProperties::builder()
        .set_created_by(PARQUET_CREATED_BY.to_string())
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_max_row_group_row_count(Some(crate::row_groups::GROUP_MAX))
        .set_key_value_metadata((!kv.is_empty()).then_some(kv))
        .build()
}

/// Why streaming an output into a Parquet file stopped.
#[derive(Debug)]
pub enum WriteError {
    /// The plan's stream failed (execution error, memory limit).
    Stream(DataFusionError),
    /// Writing the file failed.
    Write(Diag),
    /// The caller cancelled.
    Cancelled,
}

/// A Parquet file being written from a stream of batches: row groups end
/// where the content-defined layout says ([`crate::row_groups`]), and each
/// group's rows are encoded in fixed slices of `WRITE_CHUNK` from the
/// group's start, so a group's bytes depend only on its rows (and a group
/// copied from an earlier object with [`ChunkedWriter::copy_group`] is
/// exactly what encoding its rows would write). Holds at most one slice of
/// rows plus the open row group's encoders.
///
/// The columns of a slice are encoded in parallel (one task per column):
/// each column's encoder sees exactly the calls `ArrowWriter` would make
/// (the same slices, the same row-group boundaries), so the bytes are the
/// same as a sequential `ArrowWriter`'s (a unit test compares them).
pub struct ChunkedWriter {
    path: PathBuf,
    file: SerializedFileWriter<BufWriter<Hashing>>,
    factory: ArrowRowGroupWriterFactory,
    enc: Encoder,
    /// Each row group's first row (row-format bytes), for the footer.
    firsts: Vec<Vec<u8>>,
    rows: u64,
}

/// Rows cut into content-defined row groups and encoded: the open group's
/// column writers and the rows not encoded yet. Closed groups go to a
/// sink (the file).
struct Encoder {
    schema: SchemaRef,
    chunker: Chunker,
    /// The open row group's column writers (opened by its first slice).
    group: Option<Vec<ArrowColumnWriter>>,
    /// Rows of the current group not encoded yet (fewer than a slice).
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

type PqResult<T> = datafusion::parquet::errors::Result<T>;

impl Encoder {
    fn new(schema: SchemaRef) -> Encoder {
        Encoder { chunker: Chunker::new(&schema), schema, group: None, pending: vec![], pending_rows: 0 }
    }

    fn at_boundary(&self) -> bool {
        self.chunker.at_boundary() && self.pending_rows == 0 && self.group.is_none()
    }

    /// Add a batch; every group it closes is passed to `sink`. Returns the
    /// first rows of the groups that start in it.
    fn push(
        &mut self,
        factory: &ArrowRowGroupWriterFactory,
        batch: RecordBatch,
        sink: &mut dyn FnMut(Vec<ArrowColumnChunk>) -> PqResult<()>,
    ) -> PqResult<Vec<Vec<u8>>> {
        let crate::row_groups::Cuts { ends: cuts, firsts } =
            self.chunker.cuts(&batch).map_err(|e| datafusion::parquet::errors::ParquetError::General(e.to_string()))?;
        // Each cut closes the open group; the rows after the last cut stay open.
        let mut off = 0;
        for end in cuts.into_iter().chain(std::iter::once(batch.num_rows())) {
            let closes = end < batch.num_rows() || self.chunker.at_boundary();
            if end > off {
                self.pending_rows += end - off;
                self.pending.push(batch.slice(off, end - off));
            }
            self.drain(factory, closes)?;
            if closes {
                self.close_group(sink)?;
            }
            off = end;
        }
        Ok(firsts)
    }

    /// Encode every full slice held (and, when `all`, the remainder).
    fn drain(&mut self, factory: &ArrowRowGroupWriterFactory, all: bool) -> PqResult<()> {
        if self.pending_rows < WRITE_CHUNK && !(all && self.pending_rows > 0) {
            return Ok(());
        }
        let buf = concat_batches(&self.schema, &self.pending)?;
        self.pending.clear();
        let mut off = 0;
        while buf.num_rows() - off >= WRITE_CHUNK || (all && off < buf.num_rows()) {
            let len = WRITE_CHUNK.min(buf.num_rows() - off);
            self.write_slice(factory, &buf.slice(off, len))?;
            off += len;
        }
        self.pending_rows = buf.num_rows() - off;
        if self.pending_rows > 0 {
            self.pending.push(buf.slice(off, self.pending_rows));
        }
        Ok(())
    }

    /// Encode one slice into the open row group (opening it).
    fn write_slice(&mut self, factory: &ArrowRowGroupWriterFactory, batch: &RecordBatch) -> PqResult<()> {
        use rayon::prelude::*;
        if self.group.is_none() {
            // The index only matters for encryption, which relspec does not use.
            self.group = Some(factory.create_column_writers(0)?);
        }
        let Some(writers) = self.group.as_mut() else { unreachable!("opened above") };
        let mut leaves = Vec::with_capacity(writers.len());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field.as_ref(), column)?);
        }
        writers.par_iter_mut().zip(leaves.par_iter()).try_for_each(|(w, leaf)| w.write(leaf))
    }

    /// Close the open row group's columns (in parallel) and pass them on.
    fn close_group(&mut self, sink: &mut dyn FnMut(Vec<ArrowColumnChunk>) -> PqResult<()>) -> PqResult<()> {
        use rayon::prelude::*;
        let Some(writers) = self.group.take() else { return Ok(()) };
        let chunks: Vec<ArrowColumnChunk> = writers.into_par_iter().map(|w| w.close()).collect::<Result<_, _>>()?;
        sink(chunks)
    }

    /// Encode what is held and close the open group.
    fn finish(
        &mut self,
        factory: &ArrowRowGroupWriterFactory,
        sink: &mut dyn FnMut(Vec<ArrowColumnChunk>) -> PqResult<()>,
    ) -> PqResult<()> {
        self.drain(factory, true)?;
        self.close_group(sink)
    }
}

/// What a finished write produced.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Rows written.
    pub rows: u64,
    /// The object's content hash and the hash of its bytes before the
    /// footer (see `relspec_db::store::hash_parquet`), computed as it was
    /// written; `None` when the footer outgrew what was held back (then
    /// the file is read again to hash it).
    pub hashes: Option<relspec_db::store::ObjectHashes>,
}

/// The file sink: every byte written is also fed to the object's hasher.
struct Hashing {
    file: File,
    hasher: relspec_db::store::ObjectHasher,
}

impl std::io::Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A byte range of a file held in memory, read by file offsets (what
/// `append_column` reads a copied row group's column chunks from).
struct Window {
    start: u64,
    bytes: bytes::Bytes,
    file_len: u64,
}

impl Window {
    /// The bytes of every column chunk of row group `rg` of `file`.
    fn read(file: &File, rg: &datafusion::parquet::file::metadata::RowGroupMetaData) -> std::io::Result<Window> {
        use std::os::unix::fs::FileExt;
        let ranges = rg.columns().iter().map(|c| {
            let (start, len) = c.byte_range();
            (start, start + len)
        });
        let (start, end) = ranges.fold((u64::MAX, 0), |(a, b), (s, e)| (a.min(s), b.max(e)));
        let start = start.min(end);
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        Ok(Window { start, bytes: buf.into(), file_len: file.metadata()?.len() })
    }

    fn offset(&self, at: u64, len: usize) -> datafusion::parquet::errors::Result<usize> {
        let off = at.checked_sub(self.start).map(|o| o as usize);
        match off {
            Some(o) if o + len <= self.bytes.len() => Ok(o),
            _ => Err(datafusion::parquet::errors::ParquetError::General(format!(
                "bytes {at}..+{len} are outside the row group read ({}..{})",
                self.start,
                self.start + self.bytes.len() as u64
            ))),
        }
    }
}

impl datafusion::parquet::file::reader::Length for Window {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl datafusion::parquet::file::reader::ChunkReader for Window {
    type T = bytes::buf::Reader<bytes::Bytes>;

    fn get_read(&self, start: u64) -> datafusion::parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let off = self.offset(start, 0)?;
        Ok(self.bytes.slice(off..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<bytes::Bytes> {
        let off = self.offset(start, length)?;
        Ok(self.bytes.slice(off..off + length))
    }
}

impl ChunkedWriter {
    /// Create `path` and a writer with the deterministic settings.
    pub fn create(path: &Path, schema: SchemaRef, footer: &BTreeMap<String, String>) -> Result<ChunkedWriter> {
        let f = File::create(path).map_err(|e| io("cannot create", path, e))?;
        let props = writer_properties(footer);
        // `ArrowWriter` sets the file up (Parquet schema, the encoded Arrow
        // schema in the footer); its lower-level parts then write row groups.
        // Copied column chunks arrive in 8 KiB pieces: buffered, they are
        // written a MiB at a time, not a system call each.
        // The footer's start is found in the last MiB written.
        let sink = Hashing { file: f, hasher: relspec_db::store::ObjectHasher::new(1 << 20) };
        let (file, factory) =
            ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, sink), schema.clone(), Some(props))
                .and_then(|w| w.into_serialized_writer())
                .map_err(|e| write_err(path, e.to_string()))?;
        Ok(ChunkedWriter {
            path: path.to_path_buf(),
            enc: Encoder::new(schema),
            file,
            factory,
            firsts: vec![],
            rows: 0,
        })
    }

    /// Add a batch: its rows join the open row group, which is encoded a
    /// slice at a time and closed where the layout ends it.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let rows = batch.num_rows() as u64;
        let ChunkedWriter { path, file, factory, enc, firsts, .. } = self;
        let mut sink = |chunks| append_group(file, chunks);
        let started = enc.push(factory, batch, &mut sink).map_err(|e| write_err(path, e.to_string()))?;
        firsts.extend(started);
        self.rows += rows;
        Ok(())
    }

    /// Whether the rows written so far end exactly at a row-group boundary
    /// (so a copied group may follow).
    pub fn at_boundary(&self) -> bool {
        self.enc.at_boundary()
    }

    /// Whether this writer's groups are content-defined (else it never splices).
    pub fn content_defined(&self) -> bool {
        self.enc.chunker.content_defined()
    }

    /// Copy row group `index` of `layout`'s object (open as `source`) byte
    /// for byte: its column chunks, statistics and page index. Only at a
    /// boundary (see [`ChunkedWriter::at_boundary`]); the caller knows the
    /// group's rows are unchanged and a boundary follows them (they were a
    /// whole group under the same layout).
    pub fn copy_group(&mut self, source: &File, layout: &Layout, index: usize) -> Result<()> {
        use datafusion::parquet::column::writer::ColumnCloseResult;
        let path = self.path.clone();
        let werr = |e: String| write_err(&path, e);
        if !self.at_boundary() {
            return Err(werr("a row group can only be copied at a row-group boundary".into()));
        }
        let meta = &layout.meta;
        let rg = meta.row_group(index);
        // The group's column chunks, read with one call.
        let window = Window::read(source, rg).map_err(|e| werr(e.to_string()))?;
        let mut out = self.file.next_row_group().map_err(|e| werr(e.to_string()))?;
        for (c, column) in rg.columns().iter().enumerate() {
            let close = ColumnCloseResult {
                bytes_written: column.compressed_size() as u64,
                rows_written: rg.num_rows() as u64,
                metadata: as_written(column).map_err(|e| werr(e.to_string()))?,
                bloom_filter: None,
                column_index: meta.column_index().and_then(|ci| ci.get(index)).and_then(|r| r.get(c)).cloned(),
                offset_index: meta.offset_index().and_then(|oi| oi.get(index)).and_then(|r| r.get(c)).cloned(),
            };
            out.append_column(&window, close).map_err(|e| werr(e.to_string()))?;
        }
        out.close().map_err(|e| werr(e.to_string()))?;
        self.firsts.push(layout.firsts[index].clone());
        self.rows += rg.num_rows() as u64;
        Ok(())
    }

    /// Write the remainder and the footer (with the row groups' first rows),
    /// sync the file; returns the row count.
    pub fn finish(mut self) -> Result<Finished> {
        let path = self.path.clone();
        let ChunkedWriter { file, factory, enc, .. } = &mut self;
        let mut sink = |chunks| append_group(file, chunks);
        enc.finish(factory, &mut sink).map_err(|e| write_err(&path, e.to_string()))?;
        if self.enc.chunker.content_defined() {
            let list = crate::row_groups::encode_firsts(&self.firsts);
            self.file.append_key_value_metadata(KeyValue::new(FOOTER_ROW_GROUPS.to_string(), list));
        }
        let inner = self.file.into_inner().map_err(|e| write_err(&path, e.to_string()))?;
        let sink = inner.into_inner().map_err(|e| write_err(&path, e.to_string()))?;
        sink.file.sync_all().map_err(|e| io("cannot sync", &path, e))?;
        Ok(Finished { rows: self.rows, hashes: sink.hasher.finish() })
    }
}

/// Append one encoded row group to the file.
fn append_group(file: &mut SerializedFileWriter<BufWriter<Hashing>>, chunks: Vec<ArrowColumnChunk>) -> PqResult<()> {
    let mut rg = file.next_row_group()?;
    for chunk in chunks {
        chunk.append_to_row_group(&mut rg)?;
    }
    rg.close()?;
    Ok(())
}

/// A column chunk's metadata as the writer produced it, from the metadata
/// read back: the reader does not recover the flag that makes the writer
/// also store min/max in the deprecated statistics fields (set for signed
/// sort orders), so it is set again as the writer sets it.
fn as_written(
    column: &datafusion::parquet::file::metadata::ColumnChunkMetaData,
) -> datafusion::parquet::errors::Result<datafusion::parquet::file::metadata::ColumnChunkMetaData> {
    use datafusion::parquet::file::statistics::Statistics as S;
    let Some(stats) = column.statistics() else { return Ok(column.clone()) };
    let b = column.column_descr().sort_order().is_signed();
    let stats = match stats.clone() {
        S::Boolean(v) => S::Boolean(v.with_backwards_compatible_min_max(b)),
        S::Int32(v) => S::Int32(v.with_backwards_compatible_min_max(b)),
        S::Int64(v) => S::Int64(v.with_backwards_compatible_min_max(b)),
        S::Int96(v) => S::Int96(v.with_backwards_compatible_min_max(b)),
        S::Float(v) => S::Float(v.with_backwards_compatible_min_max(b)),
        S::Double(v) => S::Double(v.with_backwards_compatible_min_max(b)),
        S::ByteArray(v) => S::ByteArray(v.with_backwards_compatible_min_max(b)),
        S::FixedLenByteArray(v) => S::FixedLenByteArray(v.with_backwards_compatible_min_max(b)),
    };
    column.clone().into_builder().set_statistics(stats).build()
}

fn write_err(path: &Path, e: String) -> Diag {
    Diag::new(ErrorKind::Store(format!("cannot write {}: {e}", path.display())))
}

/// Stream `stream` into a Parquet file at `path` batch by batch; `cancelled`
/// is polled between batches. On any error the partial file is removed.
pub async fn write_stream(
    path: &Path,
    mut stream: SendableRecordBatchStream,
    footer: &BTreeMap<String, String>,
    cancelled: impl Fn() -> bool,
) -> std::result::Result<Finished, WriteError> {
    let run = async {
        let mut w = ChunkedWriter::create(path, stream.schema(), footer).map_err(WriteError::Write)?;
        while let Some(b) = stream.next().await {
            if cancelled() {
                return Err(WriteError::Cancelled);
            }
            w.push(b.map_err(WriteError::Stream)?).map_err(WriteError::Write)?;
        }
        w.finish().map_err(WriteError::Write)
    };
    let res = run.await;
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

/// The columns of an Arrow schema, as records and reports show them.
pub fn columns(schema: &SchemaRef) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
        .collect()
}

/// A partition directory name component: `col=value`, the value escaped as
/// hive does (`%XX` for bytes outside `[A-Za-z0-9._-]`), null as
/// `__HIVE_DEFAULT_PARTITION__`.
pub fn partition_segment(col: &str, value: Option<&str>) -> String {
    let v = match value {
        None => "__HIVE_DEFAULT_PARTITION__".to_string(),
        Some(v) => v
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
    };
    format!("{col}={v}")
}

/// Write the rows of the Parquet object at `object` as a hive-partitioned
/// directory under `dest` (`col=value/.../part-0.parquet`, partition columns
/// left out of the files), each file sorted by its remaining columns and
/// written deterministically with `footer` plus its `relspec.partition`.
/// Returns each partition's relative directory and row count, in order.
pub async fn write_partitioned(
    ctx: &datafusion::prelude::SessionContext,
    object: &Path,
    cols: &[String],
    dest: &Path,
    footer: &BTreeMap<String, String>,
) -> Result<Vec<(String, u64)>> {
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::common::ScalarValue;
    use datafusion::prelude::{Expr, ident, lit};
    let df_err = |e: DataFusionError| Diag::new(ErrorKind::Execution(e.strip_backtrace().to_string()));
    let df = ctx.read_parquet(object.to_string_lossy().as_ref(), Default::default()).await.map_err(df_err)?;
    let rest: Vec<String> =
        df.schema().fields().iter().map(|f| f.name().clone()).filter(|n| !cols.contains(n)).collect();
    let keys = df
        .clone()
        .select(cols.iter().map(ident).collect::<Vec<Expr>>())
        .and_then(|d| d.distinct())
        .and_then(|d| d.sort(cols.iter().map(|c| ident(c).sort(true, true)).collect()))
        .map_err(df_err)?
        .collect()
        .await
        .map_err(df_err)?;
    let mut out = Vec::new();
    for batch in &keys {
        for row in 0..batch.num_rows() {
            let mut pred: Option<Expr> = None;
            let mut dir = PathBuf::new();
            for (i, c) in cols.iter().enumerate() {
                let a = batch.column(i);
                let (p, seg) = if a.is_null(row) {
                    (ident(c).is_null(), partition_segment(c, None))
                } else {
                    let v = ScalarValue::try_from_array(a, row).map_err(df_err)?;
                    let text = array_value_to_string(a, row).map_err(|e| df_err(e.into()))?;
                    (ident(c).eq(lit(v)), partition_segment(c, Some(&text)))
                };
                pred = Some(match pred {
                    Some(q) => q.and(p),
                    None => p,
                });
                dir.push(seg);
            }
            let part = df
                .clone()
                .filter(pred.unwrap_or(lit(true)))
                .and_then(|d| d.select(rest.iter().map(ident).collect::<Vec<Expr>>()))
                .and_then(|d| d.sort(rest.iter().map(|c| ident(c).sort(true, true)).collect()))
                .map_err(df_err)?;
            let rel = dir.to_string_lossy().to_string();
            let target = dest.join(&dir);
            std::fs::create_dir_all(&target).map_err(|e| io("cannot create", &target, e))?;
            let mut meta = footer.clone();
            // A partition file is not the object's parts (a union's branches).
            meta.remove(crate::row_groups::FOOTER_PARTS);
            meta.insert("relspec.partition".into(), rel.clone());
            let stream = part.execute_stream().await.map_err(df_err)?;
            let written =
                write_stream(&target.join("part-0.parquet"), stream, &meta, || false).await.map_err(|e| match e {
                    WriteError::Stream(e) => df_err(e),
                    WriteError::Write(d) => d,
                    WriteError::Cancelled => Diag::new(ErrorKind::Execution("cancelled".into())),
                })?;
            out.push((rel, written.rows));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListArray, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    /// The column-parallel writer's bytes equal a sequential `ArrowWriter`
    /// fed the same chunks (row groups, pages, statistics, footer), over
    /// several row groups, a partial last chunk, nulls and nested columns.
    #[test]
    fn parallel_columns_write_the_same_bytes_as_arrow_writer() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("view", DataType::Utf8View, true),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), true),
        ]));
        let n = 300_123usize;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i * 7 % 1000))),
                Arc::new(StringArray::from_iter((0..n).map(|i| (i % 13 != 0).then(|| format!("name-{}", i % 977))))),
                Arc::new(StringViewArray::from_iter((0..n).map(|i| (i % 5 != 0).then(|| format!("v{}", i * 31))))),
                Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                    (0..n).map(|i| (i % 3 != 0).then(|| (0..(i % 4) as i64).map(Some).collect::<Vec<_>>())),
                )),
            ],
        )
        .unwrap();
        let footer = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        let mut w = ChunkedWriter::create(&a, schema.clone(), &footer).unwrap();
        // Odd batch sizes: re-chunked to WRITE_CHUNK either way.
        let mut off = 0;
        while off < n {
            let len = 5_000.min(n - off);
            w.push(batch.slice(off, len)).unwrap();
            off += len;
        }
        let finished = w.finish().unwrap();
        assert_eq!(finished.rows, n as u64);
        // The hashes computed while writing are the ones a read computes.
        let cols = columns(&schema);
        let (content, data) = relspec_db::store::hash_parquet(&a, &cols).unwrap();
        let hashes = finished.hashes.expect("a small footer is held back");
        assert_eq!(hashes.content, content);
        assert_eq!(relspec_db::store::data_hash_of(&cols, &hashes.pages), data);
        // The sequential writer is told where the layout ends groups.
        let mut chunker = Chunker::new(&schema);
        let crate::row_groups::Cuts { ends: cuts, firsts } = chunker.cuts(&batch).unwrap();
        assert!(cuts.len() >= 3, "several content-defined groups: {cuts:?}");
        assert!(cuts.windows(2).all(|w| w[1] - w[0] >= crate::row_groups::GROUP_MIN));
        let mut seq =
            ArrowWriter::try_new(File::create(&b).unwrap(), schema.clone(), Some(writer_properties(&footer))).unwrap();
        let mut start = 0;
        for end in cuts.iter().copied().chain(std::iter::once(n)) {
            let mut off = start;
            while off < end {
                let len = WRITE_CHUNK.min(end - off);
                seq.write(&batch.slice(off, len)).unwrap();
                off += len;
            }
            seq.flush().unwrap();
            start = end;
        }
        seq.append_key_value_metadata(KeyValue::new(
            FOOTER_ROW_GROUPS.to_string(),
            crate::row_groups::encode_firsts(&firsts),
        ));
        seq.close().unwrap();
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(x.len() > 100_000);
        assert!(x == y, "parallel {} bytes vs sequential {} bytes", x.len(), y.len());
    }
}
