//! Helpers shared by the integration tests: temp workspaces, running the real
//! binary, reading Parquet outputs back.
#![allow(dead_code)]

pub mod moto;

use assert_cmd::Command;
use relspec_core::datafusion::arrow::array::RecordBatch;
use relspec_core::datafusion::arrow::util::display::array_value_to_string;
use relspec_core::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};

/// Rules of the default workspace (seven over the hand-made extracts, four
/// over the sources it indexes).
pub const DEFAULT_RULES: usize = 12;

/// Input files of the default workspace: five hand-made extracts, the
/// Python package's four files and its SCIP index, one sample Rust file.
pub const DEFAULT_INPUT_FILES: usize = 11;

/// A temp dir holding a copy of the default workspace.
pub fn default_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    relspec_core::scaffold::init(dir.path()).unwrap();
    dir
}

/// An empty temp workspace with the given files.
pub fn workspace_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        write(dir.path(), rel, text);
    }
    dir
}

/// Write a file, creating parent dirs.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The relspec binary, run in `root`.
pub fn relspec(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_relspec"));
    c.current_dir(root).env("NO_COLOR", "1").env_remove("RELSPEC_LOG");
    c
}

/// Run a subcommand; return (exit code, stdout, stderr).
pub fn run(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = relspec(root).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Run and require success.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(root, args);
    assert_eq!(code, 0, "relspec {args:?} failed\nstdout:\n{out}\nstderr:\n{err}");
    out
}

/// Run and require failure; returns stderr (+ stdout).
pub fn fails(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(root, args);
    assert_ne!(code, 0, "relspec {args:?} unexpectedly succeeded\nstdout:\n{out}");
    format!("{err}{out}")
}

/// The rules a `build --json` report says were built, in report order.
pub fn built_rules(report: &serde_json::Value) -> Vec<String> {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "built")
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect()
}

/// Read a Parquet file's batches.
pub fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

/// Read a Parquet file as rows of display strings, in file order.
pub fn read_rows(path: &Path) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for b in read_batches(path) {
        for i in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| array_value_to_string(c, i).unwrap()).collect());
        }
    }
    rows
}

/// Column names of a Parquet file.
pub fn column_names(path: &Path) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    b.schema().fields().iter().map(|f| f.name().clone()).collect()
}

/// Output path of a rule.
pub fn out(root: &Path, rule: &str) -> PathBuf {
    root.join("out").join(format!("{rule}.parquet"))
}

/// The sidecar published next to a rule's output (`out/<rule>.parquet.json`).
pub fn sidecar(root: &Path, rule: &str) -> serde_json::Value {
    let p = root.join("out").join(format!("{rule}.parquet.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// Parse a simple CSV (no quoting) into rows of fields, skipping the header.
pub fn csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path).unwrap().lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// Snapshot of every file's bytes under a directory (relative path -> bytes).
pub fn tree_bytes(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut m = std::collections::BTreeMap::new();
    if dir.exists() {
        for e in walkdir::WalkDir::new(dir) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                m.insert(e.path().strip_prefix(dir).unwrap().display().to_string(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    m
}

/// The relspec binary as a plain `std::process::Command` (for spawning).
pub fn relspec_process(root: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"));
    c.current_dir(root).env("NO_COLOR", "1").env_remove("RELSPEC_LOG");
    c
}

/// Copy a workspace's sources and data (not `cache/` or `out/`) to a new temp dir.
pub fn copy_sources(root: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(root, dir.path(), |rel| rel.starts_with("cache") || rel.starts_with("out"));
    dir
}

/// Copy the tree under `from` to `to`, leaving out the paths (relative to
/// `from`) that `skip` names.
pub fn copy_tree(from: &Path, to: &Path, skip: impl Fn(&Path) -> bool) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        if skip(rel) {
            continue;
        }
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Build a copy of `root`'s sources from scratch and require each of
/// `rules`' published files to equal `root`'s byte for byte (the rows of
/// both are shown when they differ).
pub fn assert_equals_clean_build(root: &Path, rules: &[&str]) {
    let clean = copy_sources(root);
    ok(clean.path(), &["build"]);
    for rule in rules {
        let (a, b) = (out(root, rule), out(clean.path(), rule));
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{rule} differs from a clean build:\n{:?}\nclean:\n{:?}",
            read_rows(&a),
            read_rows(&b)
        );
    }
}

/// A digest of a Parquet file's data alone (schema and rows, read back
/// through Arrow), not of its bytes: outputs with the same rows and schema but
/// different provenance in their footers have the same digest.
pub fn data_digest(bytes: &[u8]) -> String {
    let mut f = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let mut text = format!("{:?}\n", b.schema().fields());
    for batch in b.build().unwrap() {
        let batch = batch.unwrap();
        for i in 0..batch.num_rows() {
            let row: Vec<String> = batch.columns().iter().map(|c| array_value_to_string(c, i).unwrap()).collect();
            text.push_str(&row.join("\u{1f}"));
            text.push('\n');
        }
    }
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// The row groups a spliced build of a rule copied and re-encoded, from the
/// `spliced: N row group(s) copied ..., M re-encoded` line of its `explain`
/// text; `None` when it was not spliced.
pub fn spliced_groups(explain: &str) -> Option<(u64, u64)> {
    let line = explain.lines().find(|l| l.contains("spliced: "))?;
    let after = line.split("spliced: ").nth(1)?;
    let nums: Vec<u64> = after.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect();
    Some((*nums.first()?, *nums.get(1)?))
}
