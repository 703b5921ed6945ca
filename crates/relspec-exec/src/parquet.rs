//! Deterministic Parquet writing: every object relspec stores is written here.

use crate::error::{Diag, ErrorKind, Result};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use relspec_db::store::{ColumnInfo, Provenance, Record, Store};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// The `created_by` written into every Parquet footer (fixed, so output bytes
/// do not depend on the machine).
pub const PARQUET_CREATED_BY: &str = concat!("relspec ", env!("CARGO_PKG_VERSION"), " (parquet 59)");

/// Rows per Parquet write call; fixed so page boundaries never depend on the
/// engine's batch size.
const WRITE_CHUNK: usize = 8192;

fn io(what: &str, p: &Path, e: std::io::Error) -> Diag {
    Diag::new(ErrorKind::Store(format!("{what} {}: {e}", p.display())))
}

/// Deterministic Parquet writer settings.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_created_by(PARQUET_CREATED_BY.to_string())
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

/// Write batches to `path` as Parquet, re-chunked to fixed-size slices so the
/// bytes do not depend on how the engine batched the rows. Returns the row count.
pub fn write_parquet(path: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<u64> {
    let err = |e: String| Diag::new(ErrorKind::Store(format!("cannot write {}: {e}", path.display())));
    let all = concat_batches(&schema, batches).map_err(|e| err(e.to_string()))?;
    let f = File::create(path).map_err(|e| io("cannot create", path, e))?;
    let mut w =
        ArrowWriter::try_new(BufWriter::new(f), schema, Some(writer_properties())).map_err(|e| err(e.to_string()))?;
    let mut off = 0;
    while off < all.num_rows() {
        let len = WRITE_CHUNK.min(all.num_rows() - off);
        w.write(&all.slice(off, len)).map_err(|e| err(e.to_string()))?;
        off += len;
    }
    let inner = w.into_inner().map_err(|e| err(e.to_string()))?;
    let f = inner.into_inner().map_err(|e| err(e.to_string()))?;
    f.sync_all().map_err(|e| io("cannot sync", path, e))?;
    Ok(all.num_rows() as u64)
}

/// The columns of an Arrow schema, as records and reports show them.
pub fn columns(schema: &SchemaRef) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
        .collect()
}

/// Write `batches` as a deterministic Parquet object and record it under `key`.
pub fn put(store: &Store, key: &str, schema: SchemaRef, batches: &[RecordBatch], from: Provenance) -> Result<Record> {
    let tmp = store.tmp_path(".parquet");
    let rows = write_parquet(&tmp, schema.clone(), batches)?;
    store.put_file(key, &tmp, from, columns(&schema), rows)
}
