//! The dataset registry: logical names -> locations -> table providers.
//!
//! Architecture invariant: this is the only module that turns a dataset name
//! into file paths. Rules see tables by name only; the registry lists the
//! files (for fingerprints) and registers listing tables (for execution) from
//! the same declared location and options.

use crate::error::{Diag, ErrorKind, Result};
use crate::workspace::{DataFormat, DatasetSpec, types};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::logical_expr::{SortExpr, col};
use datafusion::prelude::SessionContext;
use std::path::Path;
use std::sync::Arc;

pub use relspec_db::datasets::{LocationKind, fingerprint, location_kind, resolve_files};

fn format_for(spec: &DatasetSpec) -> Arc<dyn FileFormat> {
    match spec.format {
        DataFormat::Parquet => Arc::new(
            ParquetFormat::default()
                .with_enable_pruning(spec.scan.parquet_pruning.unwrap_or(true))
                .with_skip_metadata(spec.scan.skip_metadata.unwrap_or(true)),
        ),
        DataFormat::Csv => Arc::new(
            CsvFormat::default()
                .with_has_header(spec.scan.has_header.unwrap_or(true))
                .with_delimiter(spec.scan.delimiter.unwrap_or(',') as u8),
        ),
        DataFormat::Json => Arc::new(JsonFormat::default()),
    }
}

fn read_err(spec: &DatasetSpec, e: impl std::fmt::Display) -> Diag {
    Diag::new(ErrorKind::DatasetRead { dataset: spec.name.clone(), message: e.to_string() }).at(&spec.file, spec.span)
}

/// The listing options a dataset is registered with.
pub fn listing_options(root: &Path, spec: &DatasetSpec) -> Result<ListingOptions> {
    let ext = match location_kind(root, &spec.path) {
        LocationKind::Dir => spec.format.extension(),
        LocationKind::File | LocationKind::Glob => "",
    };
    let mut parts = Vec::new();
    for (name, ty) in &spec.scan.partition_cols {
        parts.push((name.clone(), types::parse_type(ty).map_err(|e| read_err(spec, e))?));
    }
    let mut sort: Vec<SortExpr> = Vec::new();
    for item in &spec.scan.file_sort_order {
        let o =
            crate::relplan::parse_order(item).map_err(|e| read_err(spec, format!("file_sort_order `{item}`: {e}")))?;
        let name = match &o.expr {
            datafusion::sql::sqlparser::ast::Expr::Identifier(i) => crate::relplan::normalize_ident(i),
            _ => return Err(read_err(spec, format!("file_sort_order `{item}` must name a column"))),
        };
        let asc = o.options.asc.unwrap_or(true);
        sort.push(col(name).sort(asc, o.options.nulls_first.unwrap_or(!asc)));
    }
    let mut opts = ListingOptions::new(format_for(spec)).with_file_extension(ext).with_table_partition_cols(parts);
    if !sort.is_empty() {
        opts = opts.with_file_sort_order(vec![sort]);
    }
    Ok(opts)
}

/// The URL DataFusion lists for a dataset.
pub fn table_url(root: &Path, spec: &DatasetSpec) -> Result<ListingTableUrl> {
    let abs = root.join(spec.path.trim_start_matches("./"));
    let mut s = abs.to_string_lossy().to_string();
    if location_kind(root, &spec.path) == LocationKind::Dir && !s.ends_with('/') {
        s.push('/');
    }
    ListingTableUrl::parse(&s).map_err(|e| read_err(spec, e))
}

/// Resolve a dataset's schema: the hint if given, else inferred from its files.
pub async fn schema(ctx: &SessionContext, root: &Path, spec: &DatasetSpec) -> Result<SchemaRef> {
    if let Some(hint) = &spec.schema {
        let mut fields = Vec::new();
        for (name, ty) in hint {
            fields.push(Field::new(name, types::parse_type(ty).map_err(|e| read_err(spec, e))?, true));
        }
        return Ok(Arc::new(Schema::new(fields)));
    }
    let opts = listing_options(root, spec)?;
    let url = table_url(root, spec)?;
    let state = ctx.state();
    // A malformed file can make the Parquet reader panic; report it as a read error.
    let inferred = std::panic::AssertUnwindSafe(opts.infer_schema(&state, &url));
    match futures::FutureExt::catch_unwind(inferred).await {
        Ok(r) => r.map_err(|e| read_err(spec, e.strip_backtrace())),
        Err(_) => Err(read_err(spec, "a file is corrupt (the reader failed on it); check the dataset's files")),
    }
}

/// Register a dataset in the session's default catalog/schema as a listing table.
pub async fn register(ctx: &SessionContext, root: &Path, spec: &DatasetSpec) -> Result<SchemaRef> {
    let file_schema = schema(ctx, root, spec).await?;
    let config = ListingTableConfig::new(table_url(root, spec)?)
        .with_listing_options(listing_options(root, spec)?)
        .with_schema(file_schema);
    let table = ListingTable::try_new(config).map_err(|e| read_err(spec, e))?;
    let full = datafusion::catalog::TableProvider::schema(&table);
    ctx.register_table(spec.name.as_str(), Arc::new(table)).map_err(|e| read_err(spec, e))?;
    Ok(full)
}

/// Decode a registered dataset once into memory and re-register it as a
/// memory table, so every rule of a build that reads it shares the decode
/// (one partition per engine partition, same rows). Gives up, keeping the
/// file-backed table, once the decoded batches pass `budget` bytes. Returns
/// the decoded size when it was shared.
pub async fn share_scan(ctx: &SessionContext, name: &str, budget: usize) -> Result<Option<usize>> {
    use futures::StreamExt;
    let err = |e: datafusion::error::DataFusionError| {
        Diag::new(ErrorKind::Execution(format!("cannot read dataset `{name}`: {}", e.strip_backtrace())))
    };
    let df = ctx.table(name).await.map_err(err)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let streams = df.execute_stream_partitioned().await.map_err(err)?;
    let mut parts = Vec::with_capacity(streams.len());
    let mut size = 0usize;
    for mut s in streams {
        let mut batches = Vec::new();
        while let Some(b) = s.next().await {
            let b = b.map_err(err)?;
            size += b.get_array_memory_size();
            if size > budget {
                return Ok(None);
            }
            batches.push(b);
        }
        parts.push(batches);
    }
    let table = datafusion::datasource::MemTable::try_new(schema, parts).map_err(err)?;
    ctx.deregister_table(name).map_err(err)?;
    ctx.register_table(name, Arc::new(table)).map_err(err)?;
    Ok(Some(size))
}

/// Register a materialized rule output (a Parquet object in the store) under
/// the rule's name.
pub async fn register_output(ctx: &SessionContext, name: &str, object: &Path) -> Result<()> {
    let url =
        ListingTableUrl::parse(object.to_string_lossy()).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
    let opts = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let schema = opts.infer_schema(&ctx.state(), &url).await.map_err(|e| {
        Diag::new(ErrorKind::Store(format!("cached output of `{name}` is unreadable: {}", e.strip_backtrace())))
    })?;
    let table = ListingTable::try_new(ListingTableConfig::new(url).with_listing_options(opts).with_schema(schema))
        .map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
    ctx.deregister_table(name).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
    ctx.register_table(name, Arc::new(table)).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
    Ok(())
}
