//! Bounded-memory benchmark: one rule whose output is several times the
//! profile's `memory_limit`, built by the real binary; prints the output's
//! in-memory (Arrow) size, the Parquet size, the wall time and the process's
//! peak RSS. See benches/README.md for the command and the figures.
//!
//! `RELSPEC_BENCH_ROWS` (default 20,000,000) and `RELSPEC_BENCH_LIMIT_MIB`
//! (default 256) size it.

use std::process::Command;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map(|v| v.parse().expect("a number")).unwrap_or(default)
}

/// Peak RSS of the children waited for so far, in MiB.
fn children_peak_rss_mib() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

fn main() {
    let rows = env_or("RELSPEC_BENCH_ROWS", 20_000_000);
    let limit = env_or("RELSPEC_BENCH_LIMIT_MIB", 256);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Rows come out of `range` in one order and are stored in another (the
    // total sort by every column has to spill); the label makes a row ~80 bytes.
    let toml = format!(
        r#"[workspace]
name = "memory"
[profile]
target_partitions = 2
memory_limit = "{limit}MiB"
memory_pool = "fair"
spill_dir = "spill"
[contracts.big]
columns = {{ id = "bigint", grp = "bigint", label = "string" }}
unique = ["id"]
not_null = ["label"]
[rules.big]
produces = "big"
sql = """
SELECT (value * 7919) % {rows} AS id,
       value % 1000 AS grp,
       concat('row-', CAST((value * 104729) % 1000003 AS VARCHAR), '-padding-padding-padding-padding-padding-pad') AS label
FROM range(0, {rows})
"""
"#
    );
    std::fs::write(root.join("workspace.toml"), toml).unwrap();
    let t = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_relspec"))
        .current_dir(root)
        .args(["build", "--json"])
        .output()
        .expect("run relspec");
    let wall = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "build failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = children_peak_rss_mib();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule = &report["rules"][0];
    let parquet = std::fs::metadata(root.join("out/big.parquet")).unwrap().len() as f64 / (1 << 20) as f64;
    // The Arrow size of the result: 2 x 8-byte columns plus the label's bytes and offsets.
    let label_bytes: u64 = 4 + 7 + 44 + 4; // "row-" + up to 7 digits + padding + offset
    let arrow_mib = (rows * (16 + label_bytes)) as f64 / (1 << 20) as f64;
    println!(
        "| rows | memory_limit | result (Arrow, approx.) | result / limit | Parquet | wall | peak RSS | peak RSS / limit |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {rows} | {limit} MiB | {arrow_mib:.0} MiB | {:.1}x | {parquet:.0} MiB | {wall:.1} s | {peak:.0} MiB | {:.2}x |",
        arrow_mib / limit as f64,
        peak / limit as f64
    );
    assert_eq!(rule["rows"].as_u64(), Some(rows), "{report}");
}
