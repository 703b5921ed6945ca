//! The dataset registry: logical names -> locations -> table providers.
//!
//! Architecture invariant: this is the only module that turns a dataset name
//! into file paths. Rules see tables by name only; the registry lists the
//! files (for fingerprints) and registers listing tables (for execution) from
//! the same declared location and options.

use crate::error::{Diag, ErrorKind, Result};
use crate::workspace::{DataFormat, DatasetSpec, types};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::logical_expr::{Expr, SortExpr, TableProviderFilterPushDown, TableType, col};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use std::path::Path;
use std::sync::{Arc, RwLock};

pub use relspec_db::datasets::{LocationKind, fingerprint, location_kind, resolve_files};

fn format_for(spec: &DatasetSpec) -> Arc<dyn FileFormat> {
    match spec.format {
        // Source tables are registered from extracted batches (`register_extracted`).
        DataFormat::Code | DataFormat::Scip => Arc::new(ParquetFormat::default()),
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
    if relspec_db::datasets::is_remote(&spec.path) {
        return ListingTableUrl::parse(&spec.path).map_err(|e| read_err(spec, e));
    }
    let abs = root.join(spec.path.trim_start_matches("./"));
    let mut s = abs.to_string_lossy().to_string();
    if location_kind(root, &spec.path) == LocationKind::Dir && !s.ends_with('/') {
        s.push('/');
    }
    ListingTableUrl::parse(&s).map_err(|e| read_err(spec, e))
}

/// Give the session the object store a dataset on object storage lives in
/// (built from the backend's environment, as the listing was); local
/// datasets need none.
pub fn register_store(ctx: &SessionContext, spec: &DatasetSpec) -> Result<()> {
    if !relspec_db::datasets::is_remote(&spec.path) {
        return Ok(());
    }
    let url = crate::object_stores::store_url(&spec.path).map_err(|e| read_err(spec, e))?;
    let known = datafusion::execution::object_store::ObjectStoreUrl::parse(url.as_str())
        .is_ok_and(|u| ctx.runtime_env().object_store(&u).is_ok());
    if !known {
        let at =
            crate::object_stores::open(&spec.path, crate::object_stores::DATASETS).map_err(|e| read_err(spec, e))?;
        ctx.register_object_store(&url, at.store);
    }
    Ok(())
}

/// Resolve a dataset's schema: the hint if given, else inferred from its files
/// (a source table's schema is fixed).
pub async fn schema(ctx: &SessionContext, root: &Path, spec: &DatasetSpec) -> Result<SchemaRef> {
    if let Some(x) = &spec.extract {
        return Ok(relspec_extract::tables::schema(x.table));
    }
    if let Some(hint) = &spec.schema {
        let mut fields = Vec::new();
        for (name, ty) in hint {
            fields.push(Field::new(name, types::parse_type(ty).map_err(|e| read_err(spec, e))?, true));
        }
        return Ok(Arc::new(Schema::new(fields)));
    }
    register_store(ctx, spec)?;
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

/// Register a dataset in the session's default catalog/schema as a listing
/// table (a source's table: empty, with its fixed schema; see
/// [`register_extracted`] for its rows).
pub async fn register(ctx: &SessionContext, root: &Path, spec: &DatasetSpec) -> Result<SchemaRef> {
    if spec.extract.is_some() {
        return register_extracted(ctx, spec, Arc::new(Vec::new));
    }
    register_store(ctx, spec)?;
    let file_schema = schema(ctx, root, spec).await?;
    let config = ListingTableConfig::new(table_url(root, spec)?)
        .with_listing_options(listing_options(root, spec)?)
        .with_schema(file_schema);
    let table = ListingTable::try_new(config).map_err(|e| read_err(spec, e))?;
    let full = TableProvider::schema(&table);
    let cols = spec.scan.partition_cols.iter().map(|(c, _)| c.clone()).collect();
    ctx.register_table(spec.name.as_str(), Arc::new(DatasetTable::new(Arc::new(table)).with_partition_cols(cols)))
        .map_err(|e| read_err(spec, e))?;
    Ok(full)
}

/// Register a source's table from its extracted batches (in file order), in
/// memory: one partition per engine partition.
pub fn register_extracted(ctx: &SessionContext, spec: &DatasetSpec, rows: SourceRows) -> Result<SchemaRef> {
    let Some(x) = &spec.extract else {
        return Err(Diag::new(ErrorKind::Internal(format!("`{}` is not a source table", spec.name))));
    };
    let schema = relspec_extract::tables::schema(x.table);
    let n = ctx.state().config().target_partitions().max(1);
    let table = LazySource { schema: schema.clone(), rows, partitions: n, table: std::sync::OnceLock::new() };
    ctx.register_table(spec.name.as_str(), Arc::new(DatasetTable::new(Arc::new(table))))
        .map_err(|e| read_err(spec, e))?;
    Ok(schema)
}

/// A source table's rows, produced when a plan first scans the table.
pub type SourceRows = Arc<dyn Fn() -> Vec<RecordBatch> + Send + Sync>;

/// A source table whose rows (one batch per file) are gathered into a
/// memory table on its first scan: a partial build scans only the changed
/// files' rows instead, and never pays for gathering every file's.
struct LazySource {
    schema: SchemaRef,
    rows: SourceRows,
    partitions: usize,
    table: std::sync::OnceLock<datafusion::error::Result<Arc<datafusion::datasource::MemTable>>>,
}

impl std::fmt::Debug for LazySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySource").field("schema", &self.schema).finish()
    }
}

impl LazySource {
    fn table(&self) -> datafusion::error::Result<Arc<datafusion::datasource::MemTable>> {
        let made = self.table.get_or_init(|| {
            let batches = (self.rows)();
            let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); self.partitions];
            // Contiguous runs of files per partition keep file order within each.
            let per = batches.len().div_ceil(self.partitions).max(1);
            for (i, b) in batches.into_iter().enumerate() {
                parts[i / per].push(b);
            }
            datafusion::datasource::MemTable::try_new(self.schema.clone(), parts).map(Arc::new)
        });
        match made {
            Ok(t) => Ok(t.clone()),
            Err(e) => Err(datafusion::error::DataFusionError::Execution(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl TableProvider for LazySource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.table()?.scan(state, projection, filters, limit).await
    }
}

/// A registered dataset: a table provider whose source can be replaced in
/// one step (the file scan by a shared in-memory decode, same schema and
/// rows) while rules of the same build are planned concurrently on clones of
/// the session. A deregister/register pair would leave a window in which a
/// concurrent planner finds no table.
#[derive(Debug)]
pub struct DatasetTable {
    schema: SchemaRef,
    inner: RwLock<Arc<dyn TableProvider>>,
    /// Hive partition columns (see `supports_filters_pushdown`).
    partition_cols: Vec<String>,
}

impl DatasetTable {
    /// Wrap a dataset's provider.
    pub fn new(inner: Arc<dyn TableProvider>) -> DatasetTable {
        DatasetTable { schema: inner.schema(), inner: RwLock::new(inner), partition_cols: vec![] }
    }

    /// The same, for a hive dataset partitioned by `cols`.
    pub fn with_partition_cols(mut self, cols: Vec<String>) -> DatasetTable {
        self.partition_cols = cols;
        self
    }

    /// Whether `filter` compares a partition column with a text that a hive
    /// directory name must escape (`c++` is `c%2B%2B` on disk). DataFusion
    /// 55.2's partition pruning drops such directories under `lang = 'c++'`
    /// although the scan reads their value as `c++`; so such a filter is not
    /// pushed (the scan lists every directory, the filter runs above it).
    fn escapes_partition_value(&self, filter: &Expr) -> bool {
        use datafusion::common::ScalarValue;
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        if self.partition_cols.is_empty() {
            return false;
        }
        let (mut on_partition, mut escaped) = (false, false);
        let _ = filter.apply(|e| {
            match e {
                Expr::Column(c) if self.partition_cols.contains(&c.name) => on_partition = true,
                Expr::Literal(
                    ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v)) | ScalarValue::LargeUtf8(Some(v)),
                    _,
                ) if !v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) => escaped = true,
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        on_partition && escaped
    }

    /// The provider scans go to now.
    pub fn current(&self) -> Arc<dyn TableProvider> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the provider (it must have the same schema).
    fn replace(&self, next: Arc<dyn TableProvider>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

#[async_trait::async_trait]
impl TableProvider for DatasetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.current().scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> datafusion::error::Result<ScanResult> {
        self.current().scan_with_args(state, args).await
    }

    /// At most `Inexact`: the answer is given at planning time, but the scan
    /// may go to the swapped-in memory table, which applies no filter (an
    /// `Exact` hive-partition filter of the file scan would be lost). The
    /// filter stays above the scan; the file scan still prunes with it.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(self
            .current()
            .supports_filters_pushdown(filters)?
            .into_iter()
            .zip(filters)
            .map(|(p, f)| match p {
                _ if self.escapes_partition_value(f) => TableProviderFilterPushDown::Unsupported,
                TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                other => other,
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        self.current().statistics()
    }
}

/// Decode a registered dataset once into memory and swap its source for a
/// memory table, so every rule of a build that reads it shares the decode
/// (one partition per engine partition, same rows). Gives up, keeping the
/// file-backed table, once the decoded batches pass `budget` bytes. Returns
/// the decoded size when it was shared.
pub async fn share_scan(ctx: &SessionContext, name: &str, budget: usize) -> Result<Option<usize>> {
    use futures::StreamExt;
    let err = |e: datafusion::error::DataFusionError| {
        Diag::new(ErrorKind::Execution(format!("cannot read dataset `{name}`: {}", e.strip_backtrace())))
    };
    let provider = ctx.table_provider(name).await.map_err(err)?;
    let Some(dataset) = provider.downcast_ref::<DatasetTable>() else {
        return Err(Diag::new(ErrorKind::Internal(format!("`{name}` is not a registered dataset"))));
    };
    let source = dataset.current();
    let schema = source.schema();
    let df = ctx.read_table(source).map_err(err)?;
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
    dataset.replace(Arc::new(table));
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn csv_dataset(root: &Path) -> DatasetSpec {
        std::fs::write(root.join("t.csv"), "id,name\n1,a\n2,b\n3,c\n").unwrap();
        DatasetSpec {
            name: "t".into(),
            path: "t.csv".into(),
            format: DataFormat::Csv,
            scan: Default::default(),
            schema: None,
            extract: None,
            file: root.join("workspace.toml"),
            span: None,
        }
    }

    /// Sharing a scan swaps the source inside the registered table: the
    /// catalog entry is the same object before and after (a concurrent
    /// planner always finds the table), and the rows are unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_scan_keeps_the_catalog_entry() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        register(&ctx, dir.path(), &csv_dataset(dir.path())).await.unwrap();
        let before = ctx.table_provider("t").await.unwrap();
        let query = "SELECT id, name FROM t ORDER BY id";
        let rows =
            |b: Vec<datafusion::arrow::record_batch::RecordBatch>| pretty_format_batches(&b).unwrap().to_string();
        let expected = rows(ctx.sql(query).await.unwrap().collect().await.unwrap());

        // Plan on a clone of the session while the scan is shared.
        let clone = ctx.clone();
        let planner = tokio::spawn(async move {
            for _ in 0..200 {
                clone.sql(query).await.expect("the table is always registered");
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(share_scan(&ctx, "t", 1 << 20).await.unwrap().map(|n| n > 0), Some(true));
        planner.await.unwrap();

        let after = ctx.table_provider("t").await.unwrap();
        assert!(Arc::ptr_eq(&before, &after), "the dataset was re-registered");
        let t = after.downcast_ref::<DatasetTable>().unwrap();
        assert!(t.current().downcast_ref::<datafusion::datasource::MemTable>().is_some());
        assert_eq!(rows(ctx.sql(query).await.unwrap().collect().await.unwrap()), expected);
    }

    /// Over budget, nothing changes: the file scan stays.
    #[tokio::test]
    async fn shared_scan_over_budget_keeps_the_file_scan() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        register(&ctx, dir.path(), &csv_dataset(dir.path())).await.unwrap();
        assert_eq!(share_scan(&ctx, "t", 1).await.unwrap(), None);
        let t = ctx.table_provider("t").await.unwrap();
        let t = t.downcast_ref::<DatasetTable>().unwrap();
        assert!(t.current().downcast_ref::<ListingTable>().is_some());
    }
}
