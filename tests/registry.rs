//! The dataset registry against real files: partition columns, parquet
//! pruning, globs, schema hints.

mod common;
use common::*;
use relspec_core::datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use relspec_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
use relspec_core::datafusion::parquet::arrow::ArrowWriter;
use relspec_core::datafusion::parquet::file::properties::WriterProperties;
use relspec_core::datafusion::physical_plan::metrics::MetricValue;
use relspec_core::datafusion::physical_plan::{ExecutionPlan, collect};
use relspec_core::engine::Engine;
use relspec_core::workspace::{DataFormat, DatasetSpec, Profile, ScanOptions};
use std::path::Path;
use std::sync::Arc;

/// Write `n` rows (id 0..n, name) as Parquet with `rows_per_group` rows per row group.
fn write_parquet(path: &Path, start: i64, n: i64, rows_per_group: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let ids: Vec<i64> = (start..start + n).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))])
            .unwrap();
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(rows_per_group)).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn spec(name: &str, path: &str, format: DataFormat, scan: ScanOptions) -> DatasetSpec {
    DatasetSpec {
        name: name.into(),
        path: path.into(),
        format,
        scan,
        schema: None,
        extract: None,
        file: "workspace.toml".into(),
        span: None,
    }
}

fn pruned_row_groups(plan: &Arc<dyn ExecutionPlan>) -> (usize, usize) {
    let (mut pruned, mut matched) = (0, 0);
    if let Some(m) = plan.metrics() {
        for metric in m.iter() {
            if let MetricValue::PruningMetrics { name, pruning_metrics } = metric.value()
                && name == "row_groups_pruned_statistics"
            {
                pruned += pruning_metrics.pruned();
                matched += pruning_metrics.matched();
            }
        }
    }
    for c in plan.children() {
        let (p, m) = pruned_row_groups(c);
        pruned += p;
        matched += m;
    }
    (pruned, matched)
}

fn query(
    engine: &Engine,
    ctx: &relspec_core::datafusion::prelude::SessionContext,
    sql: &str,
) -> (Vec<RecordBatch>, Arc<dyn ExecutionPlan>) {
    engine.block_on(async {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        (batches, plan)
    })
}

#[test]
fn parquet_pruning_skips_row_groups_and_partitions_appear() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_parquet(&root.join("data/occ/year=2024/part-0.parquet"), 0, 100, 10);
    write_parquet(&root.join("data/occ/year=2025/part-0.parquet"), 100, 100, 10);
    let engine = Engine::new(&Profile::default(), root).unwrap();

    for (pruning, expect_pruned) in [(true, true), (false, false)] {
        let ctx = engine.session().unwrap();
        let scan = ScanOptions {
            partition_cols: vec![("year".into(), "int".into())],
            parquet_pruning: Some(pruning),
            ..Default::default()
        };
        let ds = spec("occ", "data/occ", DataFormat::Parquet, scan);
        let schema = engine.block_on(relspec_exec::registry::register(&ctx, root, &ds)).unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "year"]);
        assert_eq!(schema.field_with_name("year").unwrap().data_type(), &DataType::Int32);

        let (batches, plan) = query(&engine, &ctx, "SELECT id, year FROM occ WHERE id >= 195");
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 5);
        let (pruned, matched) = pruned_row_groups(&plan);
        if expect_pruned {
            // The 2024 file is skipped whole by its statistics; in the 2025 file
            // 9 of 10 row groups are pruned.
            assert!(pruned >= 9, "pruned {pruned}, matched {matched}");
            assert_eq!(matched, 1);
        } else {
            assert_eq!(pruned, 0, "pruning disabled");
        }
        // The partition column filters whole directories.
        let (batches, _) = query(&engine, &ctx, "SELECT count(*) AS n FROM occ WHERE year = 2025");
        let n = batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
        assert_eq!(n, 100);
    }
}

#[test]
fn globs_and_fingerprints_follow_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "data/a/x.csv", "id\n1\n");
    write(root, "data/b/y.csv", "id\n2\n");
    write(root, "data/b/.hidden.csv", "id\n3\n");
    let ds = spec("t", "data/*/*.csv", DataFormat::Csv, ScanOptions::default());
    let files = relspec_exec::registry::resolve_files(root, &ds).unwrap();
    assert_eq!(files, ["data/a/x.csv", "data/b/y.csv"]);
    let fp1 = relspec_exec::registry::fingerprint(&ds, &[("data/a/x.csv".into(), "h1".into())]);
    let fp2 = relspec_exec::registry::fingerprint(&ds, &[("data/a/x.csv".into(), "h2".into())]);
    assert_ne!(fp1, fp2);
    let missing = spec("m", "data/nothing/*.csv", DataFormat::Csv, ScanOptions::default());
    let err = relspec_exec::registry::resolve_files(root, &missing).unwrap_err();
    assert!(err.to_string().contains("no file matches"), "{err}");
}
