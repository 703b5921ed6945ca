//! Partition-level incrementality (`incremental = { by }`), side by side in
//! one run with the same rules recomputed whole:
//!
//! 1. A hive dataset of N partitions (one CSV file each, 400 rows) read by an
//!    aggregate and a join: cold build, then one new partition (a new file)
//!    and one edited partition, each a fresh `relspec build` process.
//! 2. A generated Python tree of F files and the call-graph pattern of
//!    docs/workspace.md (a stable definition index, candidates per call
//!    site's file, one winner per call site, caller -> callee edges), all
//!    incremental by file: a one-file body edit under `relspec watch`, save
//!    -> published.
//!
//! `RELSPEC_BENCH_SIZES` (default 1000) sets N; `RELSPEC_BENCH_FILES`
//! (default 1000,10000) sets F.

mod common;
use common::{Watch, median, module, relspec, sizes};
use std::fmt::Write;
use std::path::Path;

fn events_csv(day: usize, rows: usize) -> String {
    let mut s = String::from("id,user_id,v\n");
    for i in 0..rows {
        writeln!(s, "{},{},{}", day * 100_000 + i, (day * 31 + i * 7) % 500, (day + i * 13) % 1000).unwrap();
    }
    s
}

fn hive_workspace(root: &Path, n: usize, declared: bool) {
    let inc = if declared { "incremental = { by = \"events\" }" } else { "" };
    let mut users = String::from("user_id,name\n");
    for u in 0..500 {
        writeln!(users, "{u},user{u}").unwrap();
    }
    std::fs::write(root.join("users.csv"), users).unwrap();
    std::fs::write(
        root.join("workspace.toml"),
        format!(
            r#"[workspace]
name = "hive-bench"

[profile]
target_partitions = 2

[datasets.events]
path = "events"
format = "csv"
[datasets.events.scan]
partition_cols = {{ day = "string" }}

[datasets.users]
path = "users.csv"

[rules.daily]
sql = "SELECT day, user_id, sum(v) AS total, count(*) AS n FROM events GROUP BY day, user_id"
{inc}

[rules.named]
sql = "SELECT e.day, e.id, u.name, e.v FROM events AS e JOIN users AS u ON u.user_id = e.user_id WHERE e.v > 100"
{inc}
"#
        ),
    )
    .unwrap();
    for d in 0..n {
        let dir = root.join(format!("events/day={d:05}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part.csv"), events_csv(d, 400)).unwrap();
    }
}

/// Per rule of a build report: "rule: ran/total (ms)".
fn rules_line(v: &serde_json::Value) -> String {
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let p = &r["partitions"];
            let ran = match (p["ran"].as_u64(), p["total"].as_u64()) {
                (Some(a), Some(t)) => format!("{a} of {t} partitions"),
                (Some(a), None) => format!("{a} partition(s)"),
                _ => "whole".to_string(),
            };
            format!("{} {ran}, {:.0} ms", r["rule"].as_str().unwrap(), r["elapsed_ms"].as_f64().unwrap_or(0.0))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn hive(n: usize) {
    for declared in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        hive_workspace(root, n, declared);
        let (cold, _) = relspec(root, &["build", "--json"]);
        let mut added = Vec::new();
        let mut edited = Vec::new();
        let mut last_add = serde_json::Value::Null;
        let mut last_edit = serde_json::Value::Null;
        for k in 0..3 {
            let d = root.join(format!("events/day={:05}", n + k));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("part.csv"), events_csv(n + k, 400)).unwrap();
            let (ms, v) = relspec(root, &["build", "--json"]);
            added.push(ms);
            last_add = v;
            std::fs::write(root.join(format!("events/day={:05}/part.csv", 7 + k)), events_csv(50_000 + k, 400))
                .unwrap();
            let (ms, v) = relspec(root, &["build", "--json"]);
            edited.push(ms);
            last_edit = v;
        }
        println!(
            "| {n} | {} | {cold:.0} ms | {:.0} ms ({}) | {:.0} ms ({}) |",
            if declared { "incremental by `events`" } else { "whole rules" },
            median(added),
            rules_line(&last_add),
            median(edited),
            rules_line(&last_edit),
        );
    }
}

fn code_workspace(root: &Path, n: usize, declared: bool) {
    let by = |x: &str| if declared { format!("incremental = {{ by = \"{x}\" }}") } else { String::new() };
    std::fs::write(
        root.join("workspace.toml"),
        format!(
            r#"[workspace]
name = "callgraph-bench"

[profile]
target_partitions = 2

[sources.code]
path = "pkg/**/*.py"

# The stable part of definitions: a body edit leaves it unchanged.
[rules.def_index]
sql = "SELECT file, def_id, name, qualified_name, kind FROM code_defs"
{}

[rules.candidates]
sql = """
SELECT c.file, c.start_byte, c.enclosing_def AS src, d.def_id AS dst,
       CASE WHEN d.file = c.file THEN 2 ELSE 1 END AS score
FROM code_callsites AS c JOIN def_index AS d ON d.name = c.callee
WHERE c.enclosing_def IS NOT NULL AND c.receiver IS NULL
"""
{}

[rules.calls]
from = "candidates"
steps = [{{ stable_dedupe = {{ partition_by = ["file", "start_byte"], order_by = ["score DESC", "dst ASC"] }} }}]
{}

[rules.edges]
sql = """
SELECT k.file, s.qualified_name AS caller, d.qualified_name AS callee, count(*) AS calls
FROM calls AS k
JOIN def_index AS s ON s.def_id = k.src
JOIN def_index AS d ON d.def_id = k.dst
GROUP BY k.file, s.qualified_name, d.qualified_name
"""
{}
"#,
            by("code_defs"),
            by("code_callsites"),
            by("candidates"),
            by("calls")
        ),
    )
    .unwrap();
    let dir = root.join("pkg");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("m{i:05}.py")), module(i, n, 0)).unwrap();
    }
}

fn callgraph(n: usize) {
    for declared in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        code_workspace(root, n, declared);
        let (cold, v) = relspec(root, &["build", "--json"]);
        let edges = v["rules"].as_array().unwrap().iter().find(|r| r["rule"] == "edges").unwrap()["rows"].clone();
        let w = Watch::spawn(root);
        w.until(|v| v["event"] == "watching");
        let mut lat = Vec::new();
        for k in 1..=7 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::fs::write(root.join("pkg/m00003.py"), module(3, n, k)).unwrap();
            let events = w.until(|v| v["event"] == "build_done");
            lat.push(events.last().unwrap()["latency_ms"].as_f64().unwrap_or(f64::NAN));
        }
        drop(w);
        // The same edit's report from a build process (per rule).
        std::fs::write(root.join("pkg/m00003.py"), module(3, n, 99)).unwrap();
        let (_, v) = relspec(root, &["build", "--json"]);
        println!(
            "| {n} | {} | {cold:.0} ms | {edges} | {:.0} ms (min {:.0}, max {:.0}) | {} |",
            if declared { "incremental by file" } else { "whole rules" },
            median(lat.clone()),
            lat.iter().cloned().fold(f64::INFINITY, f64::min),
            lat.iter().cloned().fold(0.0, f64::max),
            rules_line(&v)
        );
        if std::env::var_os("RELSPEC_BENCH_KEEP").is_some() {
            eprintln!("kept: {}", dir.keep().display());
        }
    }
}

fn main() {
    println!(
        "| hive partitions | rules | cold build | one new partition: build (per rule) | one edited partition: build (per rule) |"
    );
    println!("|---:|---|---:|---:|---:|");
    for n in sizes(&[1000]) {
        hive(n);
    }
    println!();
    println!(
        "| source files | rules | cold build | edges | one-file body edit in `relspec watch`: save -> published, median of 7 | the same edit, per rule (`build --json`) |"
    );
    println!("|---:|---|---:|---:|---:|---|");
    let files: Vec<usize> = std::env::var("RELSPEC_BENCH_FILES")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().parse().expect("RELSPEC_BENCH_FILES: numbers")).collect())
        .unwrap_or_else(|| vec![1000, 10000]);
    for n in files {
        callgraph(n);
    }
}
