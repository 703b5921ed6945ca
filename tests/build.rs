//! End-to-end builds of the default workspace with the real binary.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The expected edges, computed here in plain Rust from the data files,
/// independently of relspec's rules.
fn expected_edges(root: &Path) -> Vec<Vec<String>> {
    let files: BTreeMap<i64, String> =
        csv(&root.join("data/files.csv")).into_iter().map(|r| (r[0].parse().unwrap(), r[1].clone())).collect();
    let defs: Vec<(i64, i64, String)> = csv(&root.join("data/cst/defs.csv"))
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap(), r[2].clone()))
        .collect();
    let mut callsites: Vec<(i64, i64, String, i64)> = Vec::new();
    for lang in ["python", "rust"] {
        for r in csv(&root.join(format!("data/cst/callsites/lang={lang}/part-0.csv"))) {
            callsites.push((r[0].parse().unwrap(), r[1].parse().unwrap(), r[2].clone(), r[3].parse().unwrap()));
        }
    }
    let occ: Vec<serde_json::Value> = std::fs::read_to_string(root.join("data/scip/occurrences.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Candidates (src, dst, score).
    let mut cands: Vec<(i64, i64, i64)> = Vec::new();
    for (cid, cfile, callee, _) in &callsites {
        if *cfile < 1 {
            continue;
        }
        for (did, dfile, name) in &defs {
            if name == callee {
                cands.push((*cid, *did, if dfile == cfile { 2 } else { 1 }));
            }
        }
    }
    for (cid, cfile, _, line) in &callsites {
        for o in &occ {
            if o["file_id"].as_i64() == Some(*cfile) && o["line"].as_i64() == Some(*line) && o["role"] == "reference" {
                cands.push((*cid, o["def_id"].as_i64().unwrap(), 3));
            }
        }
    }
    // Winner: max score, then min dst.
    let mut best: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (s, d, sc) in cands {
        let e = best.entry(s).or_insert((d, sc));
        if sc > e.1 || (sc == e.1 && d < e.0) {
            *e = (d, sc);
        }
    }
    let norm = |p: &str| relspec_exec::kernels::normalize_path(p);
    let mut rows = BTreeSet::new();
    for (src, (dst, _)) in &best {
        let cfile = callsites.iter().find(|c| c.0 == *src).unwrap().1;
        rows.insert((*src, *dst, "CALLS".to_string(), norm(&files[&cfile])));
    }
    for (did, dfile, _) in &defs {
        rows.insert((*did, *dfile, "DEFINED_IN".to_string(), norm(&files[dfile])));
    }
    rows.into_iter().map(|(a, b, c, d)| vec![a.to_string(), b.to_string(), c, d]).collect()
}

#[test]
fn default_workspace_builds_expected_edges() {
    let ws = default_workspace();
    let root = ws.path();
    let out_text = ok(root, &["build"]);
    assert!(out_text.contains("built"), "{out_text}");
    assert_eq!(column_names(&out(root, "edges")), ["src", "dst", "kind", "src_file"]);
    let mut got = read_rows(&out(root, "edges"));
    let expected = expected_edges(root);
    // The output is sorted by every column: compare as-is, then as sets.
    let sorted = {
        let mut g = got.clone();
        g.sort_by(|a, b| {
            let k = |r: &Vec<String>| {
                (r[0].parse::<i64>().unwrap(), r[1].parse::<i64>().unwrap(), r[2].clone(), r[3].clone())
            };
            k(a).cmp(&k(b))
        });
        g
    };
    assert_eq!(got, sorted, "published rows are in deterministic (sorted) order");
    got.sort();
    let mut exp = expected.clone();
    exp.sort();
    assert_eq!(got, exp);
    // Every rule is published.
    for r in ["callsite_candidates", "scip_candidates", "calls", "edges", "callee_counts"] {
        assert!(out(root, r).is_file(), "{r} published");
    }
    // A second build reuses everything and rewrites nothing.
    let before = tree_bytes(&root.join("out"));
    let second = ok(root, &["build"]);
    assert!(!second.contains("built "), "{second}");
    assert!(second.contains(&format!("0 built, {DEFAULT_RULES} reused")), "{second}");
    assert_eq!(before, tree_bytes(&root.join("out")));
}

#[test]
fn outputs_are_byte_identical_across_runs_and_partitions() {
    let mut outputs = Vec::new();
    for partitions in [1, 2, 4, 4] {
        let ws = default_workspace();
        let root = ws.path();
        let toml = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
        let toml = toml.replace(
            "target_partitions = 2",
            &format!("target_partitions = {partitions}\nbatch_size = {}", partitions * 3),
        );
        std::fs::write(root.join("workspace.toml"), toml).unwrap();
        ok(root, &["build"]);
        outputs.push(tree_bytes(&root.join("out")));
    }
    // A Parquet file and its sidecar per rule.
    assert_eq!(outputs[0].len(), 2 * DEFAULT_RULES);
    assert_eq!(outputs[0], outputs[1], "target_partitions 1 vs 2");
    assert_eq!(outputs[1], outputs[2], "target_partitions 2 vs 4");
    assert_eq!(outputs[2], outputs[3], "two runs");
}

#[test]
fn json_report_lists_every_rule() {
    let ws = default_workspace();
    let root = ws.path();
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["build", "--json"])).unwrap();
    assert_eq!(v["ok"], true);
    let rules = v["rules"].as_array().unwrap();
    assert_eq!(rules.len(), DEFAULT_RULES);
    let edges = rules.iter().find(|r| r["rule"] == "edges").unwrap();
    assert_eq!(edges["status"], "built");
    assert_eq!(edges["rows"], expected_edges(root).len());
    let calls = rules.iter().find(|r| r["rule"] == "calls").unwrap();
    assert_eq!(calls["kernels"][0]["kernel"], "stable_dedupe");
    assert_eq!(calls["kernels"][0]["lane"], "builtin");
    assert_eq!(calls["kernels"][0]["volatility"], "immutable");
}

#[test]
fn param_change_rebuilds_only_readers_and_reports_why() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let toml = std::fs::read_to_string(root.join("workspace.toml")).unwrap().replace("min_file = 1", "min_file = 2");
    std::fs::write(root.join("workspace.toml"), toml).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["build", "--json"])).unwrap();
    let status = |r: &str| v["rules"].as_array().unwrap().iter().find(|x| x["rule"] == r).unwrap().clone();
    assert_eq!(status("callsite_candidates")["status"], "built");
    assert!(status("callsite_candidates")["reasons"][0].as_str().unwrap().contains("param `min_file` changed"));
    assert_eq!(status("scip_candidates")["status"], "reused");
}

#[test]
fn init_scaffolds_a_working_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("proj");
    ok(dir.path(), &["init", target.to_str().unwrap()]);
    ok(&target, &["build"]);
    assert!(out(&target, "edges").is_file());
    let err = fails(dir.path(), &["init", target.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn explain_and_datasets_describe_the_workspace() {
    let ws = default_workspace();
    let root = ws.path();
    let text = ok(root, &["explain", "calls"]);
    for needle in [
        "signature:",
        "== logical plan ==",
        "== optimized logical plan ==",
        "== physical plan ==",
        "== SQL (unparsed) ==",
        "stable_dedupe v1: lane builtin, row_number() window, rank = 1 (immutable), ordering: score DESC",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["datasets", "--json"])).unwrap();
    let cs = v.as_array().unwrap().iter().find(|d| d["name"] == "cst_callsites").unwrap();
    assert_eq!(cs["kind"], "dir");
    assert_eq!(cs["files"].as_array().unwrap().len(), 2);
    let cols: Vec<&str> = cs["schema"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(cols.contains(&"lang"), "partition column registered: {cols:?}");
    assert_eq!(cs["fingerprint"].as_str().unwrap().len(), 64);
    ok(root, &["check"]);
}

#[test]
fn sql_rules_take_what_datafusion_sql_takes() {
    let ws = workspace_with(&[
        (
            "workspace.toml",
            r#"
[params]
since = "2024-01-01"

[datasets.events]
path = "events.csv"

[rules.features]
sql = """
WITH ranked AS (
    SELECT id, amount, day,
           rank() OVER (PARTITION BY id % 2 ORDER BY amount DESC) AS rnk
    FROM events
)
SELECT id,
       CAST(amount AS DECIMAL(10, 2)) AS amount_dec,
       CAST(day AS DATE) + INTERVAL '1 day' AS next_day,
       rnk
FROM ranked
WHERE id IN (SELECT id FROM events WHERE CAST(day AS DATE) >= CAST($since AS DATE))
"""
"#,
        ),
        ("events.csv", "id,amount,day\n1,10.5,2024-01-01\n2,3.25,2023-12-31\n3,7,2024-02-29\n4,7,2024-03-01\n"),
    ]);
    let root = ws.path();
    ok(root, &["build"]);
    let rows = read_rows(&out(root, "features"));
    assert_eq!(
        rows,
        [["1", "10.50", "2024-01-02", "1"], ["3", "7.00", "2024-03-01", "2"], ["4", "7.00", "2024-03-02", "1"],]
    );
}
