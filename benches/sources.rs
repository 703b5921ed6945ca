//! Source extraction benchmark: a generated Python tree of N files (about 110
//! lines each: classes, methods, calls, imports), indexed by a `[sources]`
//! table and read by three rules (defs, call sites, name-resolved call
//! edges). Prints the cold build (extraction on every core, then the rules),
//! a no-change build in a fresh process, and one-file body edits (each
//! re-parses one file; the rest come from the memo-less fresh process's
//! fragments), all as whole `relspec` processes; then the same edit under
//! `relspec watch`, where unchanged files' facts stay memoized.
//!
//! `RELSPEC_BENCH_SIZES` (default 1000,10000) sets the file counts.

mod common;
use common::{Watch, median, module, relspec, sizes};
use std::path::Path;

fn workspace(root: &Path, n: usize) -> usize {
    std::fs::write(
        root.join("workspace.toml"),
        r#"[workspace]
name = "sources-bench"

[profile]
target_partitions = 2

[sources.code]
path = "pkg/**/*.py"

[rules.defs]
sql = "SELECT def_id, file, qualified_name, kind, start_line FROM code_defs"

[rules.calls]
sql = "SELECT file, enclosing_def, callee, receiver, start_line, start_col FROM code_callsites"

[rules.edges]
sql = """
SELECT c.enclosing_def AS caller, d.def_id AS callee, c.file, c.start_line
FROM code_callsites c JOIN code_defs d ON d.name = c.callee
WHERE c.enclosing_def IS NOT NULL AND c.receiver IS NULL
"""
"#,
    )
    .unwrap();
    let dir = root.join("pkg");
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = 0;
    for i in 0..n {
        let text = module(i, n, 0);
        lines += text.lines().count();
        std::fs::write(dir.join(format!("m{i:05}.py")), text).unwrap();
    }
    lines
}

/// `relspec watch --json` on the workspace: for 5 body edits of one file,
/// save -> published latency and files parsed per build.
fn watch_edits(root: &Path, n: usize) -> (f64, Vec<u64>) {
    let w = Watch::spawn(root);
    w.until(|v| v["event"] == "watching");
    let (mut lat, mut parsed) = (Vec::new(), Vec::new());
    for k in 10..15 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::write(root.join("pkg/m00000.py"), module(0, n, k)).unwrap();
        let events = w.until(|v| v["event"] == "build_done");
        let done = events.last().unwrap();
        lat.push(done["latency_ms"].as_f64().unwrap_or(f64::NAN));
        parsed.push(done["parsed"].as_u64().unwrap_or(0));
    }
    (median(lat), parsed)
}

fn main() {
    println!(
        "| files | lines | cold build | of which extraction (files parsed) | no-change build | one-file body edit, fresh process: build (extraction, parsed) | same edit in `relspec watch`: save -> published (parsed) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes(&[1000, 10000]) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lines = workspace(root, n);
        let (cold, r) = relspec(root, &["build", "--json"]);
        let src = &r["sources"][0];
        let (extract_ms, parsed) = (src["ms"].as_f64().unwrap(), src["parsed"].as_u64().unwrap());
        let noop = median((0..5).map(|_| relspec(root, &["build", "--json"]).0).collect());
        let mut edit = Vec::new();
        let mut edit_extract = Vec::new();
        let mut edit_parsed = Vec::new();
        for k in 1..=5 {
            std::fs::write(root.join("pkg/m00000.py"), module(0, n, k)).unwrap();
            let (ms, r) = relspec(root, &["build", "--json"]);
            edit.push(ms);
            edit_extract.push(r["sources"][0]["ms"].as_f64().unwrap());
            edit_parsed.push(r["sources"][0]["parsed"].as_u64().unwrap());
        }
        let (watch, watch_parsed) = watch_edits(root, n);
        println!(
            "| {n} | {lines} | {cold:.0} ms | {extract_ms:.0} ms ({parsed}) | {noop:.0} ms | {:.0} ms ({:.0} ms, {:?}) | {watch:.0} ms ({watch_parsed:?}) |",
            median(edit),
            median(edit_extract),
            edit_parsed
        );
    }
}
