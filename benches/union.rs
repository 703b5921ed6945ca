//! `UNION ALL` of N rules: each branch keeps one slice of a 200k-row Parquet
//! dataset (`id % N = i`: the branches' values interleave), one rule unions
//! all N. Measured as relspec writes a union of rules (its branches one
//! after another, no plan) and, for reference, the same union wrapped in a
//! subquery (`SELECT * FROM (... UNION ALL ...)`), which DataFusion plans
//! and executes as any rule: the cold build (process start included) and
//! the union rule's own time in it; then one branch edited so its output
//! changes (5 edits, medians): that branch's time, the union's, and the
//! build's wall time. See benches/README.md.

mod common;
use common::{median, sizes};
use relspec_core::datafusion::prelude::SessionContext;
use std::path::Path;

const ROWS: u64 = 200_000;

fn write_workspace(root: &Path, n: usize, data: &Path, planned: bool) {
    std::fs::create_dir_all(root.join("rules")).unwrap();
    std::fs::write(
        root.join("workspace.toml"),
        format!(
            "[workspace]\nname = \"unions\"\ninclude = [\"rules/*.sql\"]\n\n[profile]\ntarget_partitions = 2\n\n[datasets.events]\npath = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    for i in 0..n {
        std::fs::write(root.join(format!("rules/b{i:05}.sql")), branch_sql(i, n, 0)).unwrap();
    }
    let union: Vec<String> = (0..n).map(|i| format!("SELECT * FROM b{i:05}")).collect();
    let union = union.join("\nUNION ALL\n");
    let sql = if planned { format!("SELECT * FROM (\n{union}\n)") } else { union };
    std::fs::write(root.join("rules/all_events.sql"), sql).unwrap();
}

fn branch_sql(i: usize, n: usize, variant: usize) -> String {
    format!("SELECT id, file_id, name, value + {variant} AS value FROM events WHERE id % {n} = {i}\n")
}

/// (wall ms, the union's ms, the edited branch's ms) of one `build --json`.
fn build(root: &Path, branch: &str) -> (f64, f64, f64) {
    let t = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"))
        .current_dir(root)
        .args(["build", "--json"])
        .output()
        .unwrap();
    let wall = t.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ms = |rule: &str| {
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == rule)
            .map(|r| r["elapsed_ms"].as_f64().unwrap())
            .unwrap()
    };
    (wall, ms("all_events"), ms(branch))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let data = data_dir.path().join("events.parquet");
    rt.block_on(async {
        let ctx = SessionContext::new();
        let sql = format!(
            "SELECT value AS id, value % 2000 AS file_id, concat('f', CAST((value * 13) % 5000 AS VARCHAR)) AS name, \
             (value * 7) % 1000 AS value FROM range(0, {ROWS})"
        );
        ctx.sql(&sql).await.unwrap().write_parquet(data.to_str().unwrap(), Default::default(), None).await.unwrap();
    });
    println!("| branches | union | cold build | of which the union | one branch edited: branch | union | build wall |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for n in sizes(&[100, 1000]) {
        for planned in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            write_workspace(root, n, &data, planned);
            let target = n / 2;
            let branch = format!("b{target:05}");
            let (cold, cold_union, _) = build(root, &branch);
            let (mut b, mut u, mut w) = (Vec::new(), Vec::new(), Vec::new());
            for variant in 1..=5 {
                std::fs::write(root.join(format!("rules/{branch}.sql")), branch_sql(target, n, variant)).unwrap();
                let (wall, union, br) = build(root, &branch);
                w.push(wall);
                u.push(union);
                b.push(br);
            }
            println!(
                "| {n} | {} | {cold:.0} ms | {cold_union:.0} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                if planned { "planned by DataFusion (subquery)" } else { "branches in order (relspec)" },
                median(b),
                median(u),
                median(w)
            );
        }
    }
}
