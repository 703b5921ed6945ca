//! Incrementality across processes: reuse, early cutoff, relocation,
//! selection, CI gates, gc.

mod common;
use common::*;
use std::path::Path;

fn report(root: &Path, args: &[&str]) -> serde_json::Value {
    let (_, out, err) = run(root, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

fn status_of(v: &serde_json::Value, rule: &str) -> String {
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .map(|r| r["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn edit(root: &Path, rel: &str, from: &str, to: &str) {
    let p = root.join(rel);
    let t = std::fs::read_to_string(&p).unwrap();
    assert!(t.contains(from), "{from} not in {rel}");
    std::fs::write(p, t.replacen(from, to, 1)).unwrap();
}

/// Push every file's mtime 10 s into the past, so the stat cache trusts it.
fn age_files(root: &Path) {
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            std::fs::File::options().write(true).open(e.path()).unwrap().set_modified(past).unwrap();
        }
    }
}

#[test]
fn reformatting_a_rule_rebuilds_nothing() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    edit(root, "rules/edges.sql", "SELECT calls.src, calls.dst", "select   calls.src,\n       calls.dst");
    edit(root, "rules/edges.sql", "-- The edges table", "-- (comment edited) The edges table");
    edit(root, "workspace.toml", "tags = [\"graph\"]\n", "tags = [\"graph\"]   # a new comment\n");
    let v = report(root, &["build", "--json"]);
    assert!(built_rules(&v).is_empty(), "{v}");
}

#[test]
fn early_cutoff_stops_at_identical_output() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    // A change of meaning that yields the same rows.
    edit(
        root,
        "workspace.toml",
        "{ filter = \"cst_callsites.file_id >= $min_file\" }",
        "{ filter = \"cst_callsites.file_id >= $min_file AND cst_callsites.line > -1\" }",
    );
    let v = report(root, &["build", "--json"]);
    assert_eq!(built_rules(&v), ["callsite_candidates"], "{v}");
    assert_eq!(status_of(&v, "calls"), "reused");
    assert_eq!(status_of(&v, "edges"), "reused");
    // A change that alters the output propagates downstream.
    edit(root, "data/cst/defs.csv", "16,4,read,function,42,60", "16,4,read,function,42,61\n17,4,parse,function,70,80");
    let v = report(root, &["build", "--json"]);
    let b = built_rules(&v);
    assert!(
        b.contains(&"callsite_candidates".to_string())
            && b.contains(&"calls".to_string())
            && b.contains(&"edges".to_string()),
        "{v}"
    );
    assert_eq!(status_of(&v, "scip_candidates"), "reused");
    let cc = v["rules"].as_array().unwrap().iter().find(|r| r["rule"] == "callsite_candidates").unwrap();
    assert!(cc["reasons"].to_string().contains("dataset `cst_defs` changed"), "{cc}");
}

#[test]
fn relocated_cache_reruns_nothing() {
    let ws = default_workspace();
    let a = ws.path();
    ok(a, &["build"]);
    let other = tempfile::tempdir().unwrap();
    let b = other.path().join("moved");
    // Copy (fresh inodes and mtimes), as a CI cache restore does.
    for e in walkdir::WalkDir::new(a) {
        let e = e.unwrap();
        let dest = b.join(e.path().strip_prefix(a).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
    std::fs::remove_dir_all(b.join("out")).unwrap();
    age_files(&b);
    // The copies' inode change times are new, and a hash taken within the
    // racily-clean window (1 s) of them is not trusted later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let v = report(&b, &["build", "--json"]);
    assert!(built_rules(&v).is_empty(), "{v}");
    assert_eq!(v["files_hashed"], DEFAULT_INPUT_FILES, "each input file re-hashed once: {v}");
    assert!(out(&b, "edges").is_file(), "outputs republished from the cache");
    let v = report(&b, &["build", "--json"]);
    assert_eq!(v["files_hashed"], 0, "then nothing is hashed: {v}");
}

#[test]
fn select_builds_and_publishes_only_the_selection() {
    let ws = default_workspace();
    let root = ws.path();
    let v = report(root, &["build", "--json", "--select", "+calls"]);
    let names: Vec<&str> = v["rules"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(names, ["callsite_candidates", "scip_candidates", "calls"], "dependency order");
    assert!(out(root, "calls").is_file());
    assert!(!out(root, "edges").exists());
    let v = report(root, &["build", "--json", "--select", "calls+"]);
    let names: Vec<&str> = v["rules"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(names, ["calls", "callee_counts", "edges"]);
    assert_eq!(status_of(&v, "calls"), "reused");
    let v = report(root, &["build", "--json", "--select", "tag:stats"]);
    let names: Vec<&str> = v["rules"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(names, ["path_segments", "callee_counts"]);
    let msg = fails(root, &["build", "--select", "edgs"]);
    assert!(msg.contains("did you mean `edges`?"), "{msg}");
}

#[test]
fn check_flag_and_status_are_dry_runs() {
    let ws = default_workspace();
    let root = ws.path();
    let msg = fails(root, &["build", "--check"]);
    assert!(msg.contains(&format!("{DEFAULT_RULES} stale")), "{msg}");
    assert!(!root.join("out").exists(), "--check publishes nothing");
    ok(root, &["build"]);
    ok(root, &["build", "--check"]);
    edit(root, "rules/stats.toml", "\"count(*) AS calls\"", "\"count(*) AS calls\", \"max(calls.score) AS best\"");
    let s = ok(root, &["status"]);
    assert!(s.contains("stale  callee_counts  (rule definition changed)"), "{s}");
    assert!(s.contains("fresh  edges"), "{s}");
    fails(root, &["build", "--check"]);
}

#[test]
fn tuning_fields_reuse_the_cache() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    edit(root, "workspace.toml", "target_partitions = 2", "target_partitions = 3\nbatch_size = 5");
    let v = report(root, &["build", "--json", "--jobs", "1"]);
    assert!(built_rules(&v).is_empty(), "{v}");
    edit(root, "workspace.toml", "schema = \"public\"", "schema = \"graph\"");
    let v = report(root, &["build", "--json"]);
    assert_eq!(built_rules(&v).len(), DEFAULT_RULES, "a semantic profile field invalidates everything");
}

#[test]
fn gc_removes_unreferenced_objects_only() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let objects = |r: &Path| tree_bytes(&r.join("cache/objects")).len();
    let n0 = objects(root);
    edit(root, "rules/stats.toml", "count(*) AS calls", "count(*) * 2 AS calls");
    ok(root, &["build"]);
    assert_eq!(objects(root), n0 + 1);
    let g = ok(root, &["gc"]);
    assert!(g.contains("removed 1 records, 1 objects and 0 fragment packs"), "{g}");
    assert_eq!(objects(root), n0);
    let v = report(root, &["build", "--json"]);
    assert!(built_rules(&v).is_empty(), "live outputs survive gc: {v}");
    ok(root, &["clean"]);
    assert!(!root.join("out").exists());
    assert_eq!(objects(root), 0);
}

/// A rule-summary memo entry written by other code (another relspec version
/// or build of the compiler) is never served: the DAG comes from compiling the
/// rule. The control: the same poisoned entry under this code's own memo
/// version *is* served, so the test can tell the difference.
#[test]
fn summary_memo_entries_of_other_code_are_not_read() {
    let poisoned_graph = |version: &str| {
        let ws = default_workspace();
        let root = ws.path();
        let text = std::fs::read_to_string(root.join("rules/edges.sql")).unwrap();
        let decls = relspec_spec::workspace::parse_rule_file(std::path::Path::new("rules/edges.sql"), &text).unwrap();
        let key = relspec_db::summary_key(&decls[0].def);
        // Claims that `edges` reads only `files`.
        let summary = serde_json::json!({"reads": ["files"], "params": [], "signature": "bogus", "sites": []});
        let entry = serde_json::json!({"m": version, "k": key, "v": summary});
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::write(root.join("cache/rule-summaries.jsonl"), format!("{entry}\n")).unwrap();
        ok(root, &["graph"])
    };
    let served = poisoned_graph(relspec_db::memo_version());
    assert!(!served.contains("\"calls\" -> \"edges\""), "control: this code's entry is served:\n{served}");
    let other = poisoned_graph("0123456789abcdef");
    assert!(other.contains("\"calls\" -> \"edges\""), "edges still reads calls:\n{other}");
}

/// After an upgrade the memos hold lines of the old code: the first save
/// rewrites them, so a later process does not parse dead lines.
#[test]
fn memos_of_other_code_are_compacted_at_the_next_save() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["check"]);
    let memo = |name: &str| std::fs::read_to_string(root.join("cache").join(name)).unwrap();
    let fresh_summaries = memo("rule-summaries.jsonl");
    let fresh_analysis = memo("analysis.jsonl");
    // Pretend older code wrote them: every line of another version.
    let old = |text: &str, from: &str, to: &str| text.replace(from, to);
    let version = relspec_db::memo_version();
    std::fs::write(root.join("cache/rule-summaries.jsonl"), old(&fresh_summaries, version, "relspec 0.0.9 old"))
        .unwrap();
    std::fs::write(root.join("cache/analysis.jsonl"), old(&fresh_analysis, version, "relspec 0.0.9 old")).unwrap();
    assert!(!memo("analysis.jsonl").contains(version));
    ok(root, &["check"]);
    for (name, fresh) in [("rule-summaries.jsonl", &fresh_summaries), ("analysis.jsonl", &fresh_analysis)] {
        let now = memo(name);
        assert!(!now.contains("relspec 0.0.9 old"), "{name} still holds the old lines:\n{now}");
        assert_eq!(now.lines().count(), fresh.lines().count(), "{name}: one line per entry");
    }
}
