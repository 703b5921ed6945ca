//! Incrementality at the query level: which salsa queries re-execute after an
//! edit, read from the database's event log (`RelspecDb::with_log`), in one
//! long-lived project as `watch` keeps it.

mod common;
use common::*;
use relspec_core::build::{self, BuildOptions, NoProgress, Status};
use relspec_core::db::RelspecDb;
use relspec_core::project::Project;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A workspace of three independent SQL rules, each in its own file, and a
/// TOML file holding two pipeline rules.
fn workspace() -> tempfile::TempDir {
    workspace_with(&[
        (
            "workspace.toml",
            "[workspace]\nname = \"q\"\ninclude = [\"rules/*.sql\", \"rules/*.toml\"]\n\n\
             [datasets.seed]\npath = \"data/seed.csv\"\nformat = \"csv\"\n",
        ),
        ("data/seed.csv", "id,v\n1,10\n2,20\n3,30\n"),
        ("rules/a.sql", "SELECT id, v FROM seed\n"),
        ("rules/b.sql", "SELECT id, v * 2 AS w FROM seed\n"),
        ("rules/c.sql", "SELECT count(*) AS n FROM a\n"),
        (
            "rules/p.toml",
            "[rules.p1]\nfrom = \"seed\"\nsteps = [{ filter = \"id > 1\" }]\n\n\
             [rules.p2]\nfrom = \"p1\"\nsteps = [{ select = [\"id\"] }]\n",
        ),
    ])
}

fn build(p: &mut Project) -> build::BuildReport {
    let r = build::build(p, &BuildOptions::default(), &NoProgress).unwrap();
    assert!(r.ok(), "{:?}", r.errors);
    r
}

fn built(r: &build::BuildReport) -> Vec<String> {
    r.rules.iter().filter(|x| x.status == Status::Built).map(|x| x.rule.clone()).collect()
}

/// Queries executed since the last call, by query name (`compile_rule`, ...).
fn take(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
        .into_iter()
        .map(|k| k.split('(').next().unwrap_or_default().to_string())
        .collect()
}

fn count(log: &[String], query: &str) -> usize {
    log.iter().filter(|q| q.as_str() == query).count()
}

fn open(root: &Path) -> (Project, Arc<Mutex<Vec<String>>>) {
    let (db, log) = RelspecDb::with_log();
    let p = Project::open_with(&root.join("workspace.toml"), db).unwrap();
    (p, log)
}

#[test]
fn editing_one_rule_recompiles_that_rule_only() {
    let ws = workspace();
    let root = ws.path();
    let (mut p, log) = open(root);
    build(&mut p);
    let first = take(&log);
    assert_eq!(count(&first, "compile_rule"), 5, "a clean build compiles every rule: {first:?}");

    write(root, "rules/b.sql", "SELECT id, v * 3 AS w FROM seed\n");
    let r = build(&mut p);
    let log2 = take(&log);
    assert_eq!(built(&r), vec!["b".to_string()]);
    assert_eq!(count(&log2, "compile_rule"), 1, "only `b` is compiled again: {log2:?}");
    assert_eq!(count(&log2, "rule_file_decls"), 1, "only b.sql is parsed again: {log2:?}");
    assert_eq!(count(&log2, "dataset_fingerprints"), 0, "{log2:?}");
    assert_eq!(count(&log2, "manifest_spec"), 0, "{log2:?}");
}

#[test]
fn moving_a_rule_inside_its_file_reexecutes_nothing_downstream() {
    let ws = workspace();
    let root = ws.path();
    let (mut p, log) = open(root);
    build(&mut p);
    take(&log);

    // Swap the two rules of p.toml and add comments: every span moves,
    // no definition changes.
    write(
        root,
        "rules/p.toml",
        "# pipelines\n\n[rules.p2]\nfrom = \"p1\"\nsteps = [{ select = [\"id\"] }]\n\n\
         # the filter\n[rules.p1]\nfrom = \"seed\"\nsteps = [{ filter = \"id > 1\" }]\n",
    );
    let r = build(&mut p);
    let log2 = take(&log);
    assert!(built(&r).is_empty(), "{:?}", built(&r));
    assert_eq!(count(&log2, "rule_file_decls"), 1, "the moved file is parsed: {log2:?}");
    assert_eq!(count(&log2, "compile_rule"), 0, "nothing is compiled: {log2:?}");
    // What re-executes is the parse of the file, the index and graph (they
    // hold spans) and the per-rule summary lookups (a hash and a memo hit each,
    // backdated): nothing that depends on a definition.
    let mut kinds: Vec<&str> = log2.iter().map(String::as_str).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, vec!["graph", "rule_file_decls", "rule_index", "rule_summary"], "{log2:?}");
}

#[test]
fn touching_a_data_file_with_the_same_content_reexecutes_nothing() {
    let ws = workspace();
    let root = ws.path();
    let (mut p, log) = open(root);
    build(&mut p);
    take(&log);

    // Same bytes, new mtime (and ctime): the stat cache re-hashes it, the
    // input is not set, and no query runs.
    let path = root.join("data/seed.csv");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let r = build(&mut p);
    let log2 = take(&log);
    assert!(built(&r).is_empty());
    assert!(log2.is_empty(), "no query re-executes: {log2:?}");

    // A real change re-fingerprints the dataset and rebuilds its readers.
    std::fs::write(&path, "id,v\n1,10\n2,20\n3,31\n").unwrap();
    let r = build(&mut p);
    let log3 = take(&log);
    assert_eq!(count(&log3, "dataset_fingerprints"), 1, "{log3:?}");
    assert_eq!(count(&log3, "compile_rule"), 0, "no rule is recompiled for a data change: {log3:?}");
    let mut b = built(&r);
    b.sort();
    assert_eq!(b, vec!["a", "b", "c", "p1", "p2"]);
}

/// A watch batch that names one rule file reads that file only.
#[test]
fn syncing_named_paths_reads_only_them() {
    let ws = workspace();
    let root = ws.path();
    let (mut p, _log) = open(root);
    build(&mut p);
    let (read0, stated0) = p.loader.io_counts();

    write(root, "rules/a.sql", "SELECT id, v + 1 AS v FROM seed\n");
    p.sync_paths(&[std::path::PathBuf::from("rules/a.sql")]).unwrap();
    let (read1, stated1) = p.loader.io_counts();
    assert_eq!(read1 - read0, 1, "one rule file read");
    assert_eq!(stated1 - stated0, 0, "no data file stat-ed");
    let r = build(&mut p);
    let mut b = built(&r);
    b.sort();
    assert_eq!(b, vec!["a", "c"]);

    // A new rule file is found (the include listing is re-read), and a data
    // change re-hashes only the named file.
    write(root, "rules/d.sql", "SELECT id FROM b\n");
    std::fs::write(root.join("data/seed.csv"), "id,v\n1,10\n2,20\n3,30\n4,40\n").unwrap();
    p.sync_paths(&[root.join("rules/d.sql"), root.join("data/seed.csv")]).unwrap();
    let (read2, stated2) = p.loader.io_counts();
    assert_eq!(read2 - read1, 1, "only the new rule file read");
    assert_eq!(stated2 - stated1, 1, "only the named data file hashed");
    let r = build(&mut p);
    let mut b = built(&r);
    b.sort();
    assert_eq!(b, vec!["a", "b", "c", "d", "p1", "p2"]);

    // A deleted rule file disappears with its rule.
    std::fs::remove_file(root.join("rules/d.sql")).unwrap();
    p.sync_paths(&[std::path::PathBuf::from("rules/d.sql")]).unwrap();
    let r = build(&mut p);
    assert!(!r.rules.iter().any(|x| x.rule == "d"), "{:?}", r.rules);
}

/// A watcher may name only a directory when one is moved or replaced: the
/// files under it are re-read (rule files) or re-hashed (data files).
#[test]
fn syncing_a_replaced_directory_rereads_what_is_under_it() {
    let ws = workspace();
    let root = ws.path();
    let (mut p, _log) = open(root);
    build(&mut p);

    // Replace data/ by a directory holding other bytes at the same path.
    write(root, "data2/seed.csv", "id,v\n1,11\n2,20\n3,30\n");
    std::fs::rename(root.join("data"), root.join("data_old")).unwrap();
    std::fs::rename(root.join("data2"), root.join("data")).unwrap();
    let named: Vec<std::path::PathBuf> = ["data", "data2", "data_old"].iter().map(std::path::PathBuf::from).collect();
    p.sync_paths(&named).unwrap();
    let r = build(&mut p);
    let mut b = built(&r);
    b.sort();
    // Every reader of the replaced data rebuilt; p2 reads p1, whose rows (id > 1) did not change.
    assert_eq!(b, vec!["a", "b", "c", "p1"]);
    let rows = read_rows(&out(root, "a"));
    assert_eq!(rows[0], vec!["1".to_string(), "11".to_string()]);

    // Move rules/ away: its rules disappear; move it back with one edit: they return.
    std::fs::rename(root.join("rules"), root.join("rules_off")).unwrap();
    p.sync_paths(&[std::path::PathBuf::from("rules"), std::path::PathBuf::from("rules_off")]).unwrap();
    let r = build(&mut p);
    assert!(r.rules.is_empty(), "{:?}", r.rules);
    write(root, "rules_off/b.sql", "SELECT id, v * 4 AS w FROM seed\n");
    std::fs::rename(root.join("rules_off"), root.join("rules")).unwrap();
    p.sync_paths(&[std::path::PathBuf::from("rules"), std::path::PathBuf::from("rules_off")]).unwrap();
    let r = build(&mut p);
    assert_eq!(r.rules.len(), 5);
    let w: Vec<String> = read_rows(&out(root, "b")).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(w, vec!["44", "80", "120"], "the edited file was re-read");
}
