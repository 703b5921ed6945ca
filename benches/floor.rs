//! The engine floor: a generated code-intelligence workload (N rules, each
//! joining callsites, definitions and SCIP occurrences read from Parquet,
//! filtering one slice of files and ranking candidates with `row_number()`),
//! built cold by the real `relspec` binary and run rule by rule through
//! DataFusion directly (one session, the tables registered once, each rule's
//! SQL executed and written to Parquet in turn). See benches/README.md.
//!
//! `RELSPEC_BENCH_SIZES` (default 100) sets N; `RELSPEC_BENCH_SCALE` (default
//! 1.0) scales the input rows (200k callsites, 50k definitions, 300k occurrences);
//! `RELSPEC_BENCH_KEEP=DIR` keeps each generated workspace under `DIR/<N>`.

mod common;
use common::sizes;
use relspec_core::datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use std::path::Path;
use std::time::Instant;

fn scale() -> f64 {
    std::env::var("RELSPEC_BENCH_SCALE").ok().map(|v| v.parse().expect("a number")).unwrap_or(1.0)
}

/// The inputs, written by DataFusion itself.
async fn write_inputs(root: &Path) {
    let s = scale();
    let (calls, defs, occs) = ((200_000.0 * s) as u64, (50_000.0 * s) as u64, (300_000.0 * s) as u64);
    std::fs::create_dir_all(root.join("data")).unwrap();
    let ctx = SessionContext::new();
    let files = 2_000;
    for (name, sql) in [
        (
            "callsites",
            format!(
                "SELECT value AS callsite_id, value % {files} AS file_id, (value * 7) % 500 AS line, \
                 concat('f', CAST((value * 13) % 5000 AS VARCHAR)) AS callee FROM range(0, {calls})"
            ),
        ),
        (
            "defs",
            format!(
                "SELECT value AS def_id, value % {files} AS file_id, concat('f', CAST(value % 5000 AS VARCHAR)) AS name, \
                 (value * 11) % 500 AS start_line FROM range(0, {defs})"
            ),
        ),
        (
            "occurrences",
            format!(
                "SELECT value AS occ_id, value % {files} AS file_id, (value * 3) % 500 AS line, \
                 (value * 17) % {defs} AS symbol_def FROM range(0, {occs})"
            ),
        ),
    ] {
        let path = root.join(format!("data/{name}.parquet"));
        ctx.sql(&sql).await.unwrap().write_parquet(path.to_str().unwrap(), Default::default(), None).await.unwrap();
    }
}

fn rule_sql(i: usize, n: usize) -> String {
    format!(
        "SELECT c.callsite_id, d.def_id, o.occ_id, \
         row_number() OVER (PARTITION BY c.callsite_id ORDER BY d.def_id, o.occ_id) AS rank \
         FROM callsites AS c \
         JOIN defs AS d ON d.name = c.callee \
         JOIN occurrences AS o ON o.file_id = c.file_id AND o.line = c.line \
         WHERE c.file_id % {n} = {i}"
    )
}

fn write_workspace(root: &Path, n: usize) {
    let mut t = String::from(
        "[workspace]\nname = \"floor\"\n[profile]\ntarget_partitions = 2\n\
         [datasets.callsites]\npath = \"data/callsites.parquet\"\n\
         [datasets.defs]\npath = \"data/defs.parquet\"\n\
         [datasets.occurrences]\npath = \"data/occurrences.parquet\"\n",
    );
    for i in 0..n {
        t.push_str(&format!("[rules.r{i:05}]\nsql = \"\"\"\n{}\n\"\"\"\n", rule_sql(i, n)));
    }
    std::fs::write(root.join("workspace.toml"), t).unwrap();
}

/// Every rule through DataFusion directly, one after the other; with
/// `in_memory`, the inputs are decoded once into memory tables first (what a
/// shared scan would save).
async fn floor(root: &Path, n: usize, in_memory: bool) -> f64 {
    let t = Instant::now();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    for name in ["callsites", "defs", "occurrences"] {
        let p = root.join(format!("data/{name}.parquet"));
        if in_memory {
            let df = ctx.read_parquet(p.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
            let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
            let parts = df.collect_partitioned().await.unwrap();
            let table = relspec_core::datafusion::datasource::MemTable::try_new(schema, parts).unwrap();
            ctx.register_table(name, std::sync::Arc::new(table)).unwrap();
        } else {
            ctx.register_parquet(name, p.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        }
    }
    let out = root.join("floor-out");
    std::fs::create_dir_all(&out).unwrap();
    for i in 0..n {
        let p = out.join(format!("r{i:05}.parquet"));
        ctx.sql(&rule_sql(i, n))
            .await
            .unwrap()
            .write_parquet(p.to_str().unwrap(), Default::default(), None)
            .await
            .unwrap();
    }
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "| rules | relspec cold build | DataFusion floor (rule by rule) | relspec / floor | floor, inputs decoded once into memory |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n in sizes(&[100]) {
        let dir = tempfile::tempdir().unwrap();
        // RELSPEC_BENCH_KEEP=DIR keeps the workspace there (to profile it).
        let kept = std::env::var("RELSPEC_BENCH_KEEP").ok().map(|d| std::path::PathBuf::from(d).join(n.to_string()));
        let root = kept.as_deref().unwrap_or(dir.path());
        std::fs::create_dir_all(root).unwrap();
        rt.block_on(write_inputs(root));
        write_workspace(root, n);
        // Alternate, twice each; report the better of each (the machine drifts).
        let mut rel = Vec::new();
        let mut flo = Vec::new();
        let mut mem = Vec::new();
        for _ in 0..2 {
            let _ = std::fs::remove_dir_all(root.join("cache"));
            let _ = std::fs::remove_dir_all(root.join("out"));
            rel.push(common::relspec(root, &["build", "--json"]).0);
            let _ = std::fs::remove_dir_all(root.join("floor-out"));
            flo.push(rt.block_on(floor(root, n, false)));
            let _ = std::fs::remove_dir_all(root.join("floor-out"));
            mem.push(rt.block_on(floor(root, n, true)));
        }
        let best = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
        let (r, f, m) = (best(&rel), best(&flo), best(&mem));
        println!("| {n} | {r:.0} ms | {f:.0} ms | {:.2}x | {m:.0} ms |", r / f);
    }
}
