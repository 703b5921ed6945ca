//! The rule compiler's artifacts: canonical signatures (a corpus of rule
//! pairs), column lineage, graphs, compile diagnostics with columns, the
//! analysis memo, data contracts, run bundles and the semantic diff.

mod common;
use common::*;
use relspec_core::workspace::{RuleBody, RuleDef, parse_rule_file};
use std::path::Path;

fn sql_sig(sql: &str) -> String {
    let def = RuleDef {
        body: RuleBody::Sql(sql.into()),
        produces: None,
        tags: vec![],
        description: None,
        partition_by: vec![],
        incremental: None,
    };
    relspec_core::relplan::signature(
        &relspec_core::relplan::compile(&def).unwrap_or_else(|e| panic!("{sql}: {:?}", e.diag)).0,
    )
}

fn toml_sig(text: &str) -> String {
    let decls = parse_rule_file(Path::new("r.toml"), text).unwrap();
    relspec_core::relplan::signature(&relspec_core::relplan::compile(&decls[0].def).unwrap().0)
}

/// Pairs that mean the same thing: equal signatures.
const SAME: &[(&str, &str)] = &[
    ("SELECT a, b FROM t WHERE a > 1", "select a,\n       b\n  from t\n where a>1"),
    ("SELECT a FROM t", "SELECT a -- the key\nFROM t /* block comment */"),
    ("SELECT a FROM t ORDER BY a", "Select A From T Order By A"),
    ("SELECT count(*) AS n FROM t GROUP BY k", "SELECT COUNT(*) AS N FROM T GROUP BY K"),
    ("WITH x AS (SELECT a FROM t) SELECT a FROM x", "with x as (\n  select a from t\n)\nselect a\nfrom x"),
    ("SELECT a FROM t WHERE b = $p", "SELECT a FROM t WHERE b=$p"),
    ("SELECT a FROM t WHERE s = 'x'", "SELECT a\nFROM t\nWHERE s = 'x' -- trailing comment"),
];

/// Pairs that differ in meaning: different signatures.
const DIFFERENT: &[(&str, &str)] = &[
    ("SELECT a FROM t WHERE a > 1", "SELECT a FROM t WHERE a > 2"),
    ("SELECT a, b FROM t", "SELECT b, a FROM t"),
    ("SELECT a FROM t JOIN u ON t.k = u.k", "SELECT a FROM t LEFT JOIN u ON t.k = u.k"),
    ("SELECT a FROM t WHERE s = 'x'", "SELECT a FROM t WHERE s = 'X'"),
    ("SELECT \"A\" FROM t", "SELECT a FROM t"),
    ("SELECT a FROM t WHERE b = $p", "SELECT a FROM t WHERE b = $q"),
    ("SELECT a FROM t LIMIT 10", "SELECT a FROM t LIMIT 11"),
    ("SELECT a FROM t UNION SELECT a FROM u", "SELECT a FROM t UNION ALL SELECT a FROM u"),
    ("SELECT a AS x FROM t", "SELECT a AS y FROM t"),
    ("SELECT sum(a) FROM t", "SELECT avg(a) FROM t"),
];

#[test]
fn signature_corpus_same_meaning_same_signature() {
    for (a, b) in SAME {
        assert_eq!(sql_sig(a), sql_sig(b), "should be equal:\n{a}\n---\n{b}");
    }
}

#[test]
fn signature_corpus_different_meaning_different_signature() {
    for (a, b) in DIFFERENT {
        assert_ne!(sql_sig(a), sql_sig(b), "should differ:\n{a}\n---\n{b}");
    }
}

#[test]
fn signature_of_pipelines_ignores_toml_layout_but_not_step_order() {
    let a = r#"
[rules.r]
from = "t"
steps = [
  { filter = "a > 1" },
  { select = ["a", "b AS c"] },
]
tags = ["x"]
"#;
    let b = r#"
# the same rule, keys reordered and reformatted
[rules.r]
tags = ["x"]
steps = [{ filter = "A>1" }, { select = [ "a",   "b as c" ] }]   # inline
from = "t"
"#;
    let swapped = r#"
[rules.r]
from = "t"
steps = [{ select = ["a", "b AS c"] }, { filter = "a > 1" }]
"#;
    assert_eq!(toml_sig(a), toml_sig(b));
    assert_ne!(toml_sig(a), toml_sig(swapped));
}

fn json(root: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(root, args)).unwrap()
}

/// `relspec check --json` on a broken workspace: exit 1 and the report.
fn failing_check(root: &Path) -> serde_json::Value {
    let (code, out, _) = run(root, &["check", "--json"]);
    assert_eq!(code, 1, "check should fail:\n{out}");
    serde_json::from_str(&out).unwrap()
}

fn find<'a>(nodes: &'a [serde_json::Value], table: &str, column: &str) -> Option<&'a serde_json::Value> {
    nodes.iter().find(|n| n["table"] == table && n["column"] == column)
}

#[test]
fn column_lineage_walks_upstream_across_rules() {
    let ws = default_workspace();
    let root = ws.path();
    let v = json(root, &["lineage", "edges.src", "--json"]);
    let tree = &v["columns"][0];
    assert_eq!(tree["table"], "edges");
    let kids = tree["children"].as_array().unwrap();
    // edges.src is calls.src (CALLS edges) and cst_defs.def_id (DEFINED_IN edges), copied.
    let calls = find(kids, "calls", "src").expect("calls.src");
    assert_eq!(calls["how"], "copied");
    let defs = find(kids, "cst_defs", "def_id").expect("cst_defs.def_id");
    assert_eq!(defs["kind"], "dataset");
    // calls.src <- callsite_candidates.src <- cst_callsites.callsite_id
    let cand = find(calls["children"].as_array().unwrap(), "callsite_candidates", "src").expect("candidates");
    let leaf = find(cand["children"].as_array().unwrap(), "cst_callsites", "callsite_id").expect("dataset column");
    assert_eq!(leaf["how"], "copied");
    // Row keys of edges include the join keys.
    let keys = v["row_keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["table"] == "files" && k["column"] == "file_id" && k["how"] == "join"), "{keys:?}");

    // Computed and aggregated columns.
    let v = json(root, &["lineage", "callsite_candidates.score", "--json"]);
    let kids = v["columns"][0]["children"].as_array().unwrap();
    assert_eq!(find(kids, "cst_defs", "file_id").unwrap()["how"], "computed");
    assert_eq!(find(kids, "cst_callsites", "file_id").unwrap()["how"], "computed");
    let v = json(root, &["lineage", "callee_counts", "--json"]);
    let cols = v["columns"].as_array().unwrap();
    let calls_col = cols.iter().find(|c| c["column"] == "calls").unwrap();
    assert!(calls_col["children"].as_array().unwrap().is_empty(), "count(*) reads no column: {calls_col}");
    let name = cols.iter().find(|c| c["column"] == "name").unwrap();
    assert_eq!(find(name["children"].as_array().unwrap(), "cst_defs", "name").unwrap()["how"], "copied");
}

#[test]
fn column_lineage_walks_downstream_and_reports_key_uses() {
    let ws = default_workspace();
    let root = ws.path();
    let v = json(root, &["lineage", "cst_defs.def_id", "--downstream", "--json"]);
    let kids = v["columns"][0]["children"].as_array().unwrap();
    let dst = find(kids, "callsite_candidates", "dst").expect("copied into callsite_candidates.dst");
    assert!(find(dst["children"].as_array().unwrap(), "calls", "dst").is_some(), "{dst}");
    // callee_counts joins on cst_defs.def_id: a row use, not a value.
    assert!(
        kids.iter().any(|k| k["table"] == "callee_counts" && k["column"].is_null() && k["how"] == "join"),
        "{kids:?}"
    );
    let text = ok(root, &["lineage", "cst_defs.def_id", "--downstream"]);
    assert!(text.contains("callee_counts (rows) (join)"), "{text}");
    // A misspelt column gets a suggestion.
    let msg = fails(root, &["lineage", "edges.srcc"]);
    assert!(msg.contains("did you mean `edges.src`?"), "{msg}");
}

#[test]
fn graph_renders_dot_and_mermaid() {
    let ws = default_workspace();
    let root = ws.path();
    let dot = ok(root, &["graph"]);
    insta::assert_snapshot!("graph_dot", dot);
    let mermaid = ok(root, &["graph", "--format", "mermaid"]);
    insta::assert_snapshot!("graph_mermaid", mermaid);
    let cols = ok(root, &["graph", "--columns"]);
    assert!(cols.contains("\"calls\" [shape=record, label=\"{calls|<c0> src|<c1> dst|<c2> score}\"];"), "{cols}");
    assert!(cols.contains("\"calls\":c0 -> \"edges\":c0 [label=\"copied\"];"), "{cols}");
    assert!(cols.contains("[style=dashed, label=\"join\"]"), "{cols}");
    let mc = ok(root, &["graph", "--columns", "--format", "mermaid"]);
    assert!(mc.contains("n_calls__n_src -->|copied| n_edges__n_src"), "{mc}");
}

#[test]
fn compile_errors_point_at_line_and_column() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let out_before = tree_bytes(&root.join("out"));
    let cache_before = tree_bytes(&root.join("cache/objects"));
    // An unknown column: the caret sits on the misspelt name in the .sql file.
    let sql = std::fs::read_to_string(root.join("rules/edges.sql")).unwrap();
    std::fs::write(root.join("rules/edges.sql"), sql.replacen("calls.dst,", "calls.dts,", 1)).unwrap();
    let v = failing_check(root);
    let e = &v["errors"][0];
    assert_eq!(e["file"], "rules/edges.sql");
    assert_eq!(e["rule"], "edges");
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(10), Some(19)), "{e}");
    assert!(e["message"].as_str().unwrap().contains("dts"), "{e}");
    assert!(e["help"].as_str().unwrap_or_default().contains("calls.dst"), "{e}");
    std::fs::write(root.join("rules/edges.sql"), &sql).unwrap();
    // A type error in a pipeline step points at the step.
    let t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    std::fs::write(
        root.join("workspace.toml"),
        t.replacen(
            "{ filter = \"cst_callsites.file_id >= $min_file\" }",
            "{ filter = \"cst_callsites.file_id + 'x'\" }",
            1,
        ),
    )
    .unwrap();
    let v = failing_check(root);
    let e = &v["errors"][0];
    assert_eq!(e["rule"], "callsite_candidates", "{v}");
    assert_eq!(e["line"].as_u64(), Some(t[..t.find("{ filter = \"cst_callsites").unwrap()].lines().count() as u64));
    std::fs::write(root.join("workspace.toml"), &t).unwrap();
    // An ambiguous column.
    write(root, "rules/amb.sql", "SELECT file_id FROM files JOIN cst_defs ON files.file_id = cst_defs.file_id\n");
    let v = failing_check(root);
    let e = &v["errors"][0];
    assert_eq!(e["rule"], "amb", "{v}");
    assert_eq!(e["file"], "rules/amb.sql");
    assert!(e["message"].as_str().unwrap().contains("ambiguous"), "{e}");
    assert_eq!(e["line"].as_u64(), Some(1), "{e}");
    // Nothing published or cached changed.
    assert_eq!(out_before, tree_bytes(&root.join("out")));
    assert_eq!(cache_before, tree_bytes(&root.join("cache/objects")));
}

#[test]
fn fifty_errors_are_reported_in_a_stable_order() {
    let ws = default_workspace();
    let root = ws.path();
    for i in 0..50 {
        write(
            root,
            &format!("rules/bad{i:02}.sql"),
            &format!("-- broken rule {i}\nSELECT name, missing_{i} FROM cst_defs\n"),
        );
    }
    let v = failing_check(root);
    let errs = v["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 50, "{v}");
    for (i, e) in errs.iter().enumerate() {
        assert_eq!(e["rule"], format!("bad{i:02}"));
        assert_eq!(e["file"], format!("rules/bad{i:02}.sql"));
        assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(2), Some(14)), "{e}");
    }
    let again = failing_check(root);
    assert_eq!(v["errors"], again["errors"], "same errors, same order");
}

#[test]
fn check_replans_only_what_an_edit_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    relspec_core::synth::write_workspace(root, 30, 100).unwrap();
    let v = json(root, &["check", "--json"]);
    assert_eq!((v["rules_checked"].as_u64(), v["planned"].as_u64()), (Some(30), Some(30)));
    let v = json(root, &["check", "--json"]);
    assert_eq!(v["planned"], 0, "warm check plans nothing");
    // Same output schema: only the edited rule is planned (schema-level cutoff).
    let rule = root.join("rules/r00003.sql");
    std::fs::write(&rule, relspec_core::synth::rule_sql(3, 7)).unwrap();
    let v = json(root, &["check", "--json"]);
    assert_eq!(v["planned"], 1, "{v}");
    // A new output column: its reader is planned again, and stops there
    // because the reader's own output schema is unchanged.
    std::fs::write(&rule, "SELECT kind, label, n, total, 1 AS extra FROM r00002\n").unwrap();
    let v = json(root, &["check", "--json"]);
    assert_eq!(v["planned"], 2, "r00003 and r00004: {v}");
}

const CONTRACT_WS: &str = r#"
[workspace]
name = "contracts"

[datasets.people]
path = "data/people.csv"

[datasets.teams]
path = "data/teams.csv"

[contracts.members]
columns = { id = "bigint", team = "bigint" }
unique = ["id"]
not_null = ["team"]
accepted_values = { role = ["dev", "ops"] }
references = { team = "teams.team_id" }

[rules.members]
sql = "SELECT id, team, role FROM people"
produces = "members"
"#;

#[test]
fn data_contracts_block_publishing_and_show_offending_rows() {
    let ws = workspace_with(&[
        ("workspace.toml", CONTRACT_WS),
        ("data/people.csv", "id,team,role\n1,10,dev\n2,20,ops\n3,10,dev\n"),
        ("data/teams.csv", "team_id,name\n10,core\n20,infra\n"),
    ]);
    let root = ws.path();
    let v = json(root, &["build", "--json"]);
    let checks = v["rules"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 4, "{v}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    let good = std::fs::read(out(root, "members")).unwrap();

    let cases: &[(&str, &[&str])] = &[
        ("id,team,role\n1,10,dev\n1,20,ops\n", &["unique(id): 1 offending row(s)", "| 1  | 2          |"]),
        ("id,team,role\n1,10,dev\n2,,ops\n", &["not_null(team): 1 offending row(s)", "| 2  |      | ops  |"]),
        ("id,team,role\n1,10,dev\n2,20,qa\n", &["accepted_values(role in ['dev', 'ops']): 1 offending row(s)", "| qa"]),
        ("id,team,role\n1,10,dev\n2,30,ops\n", &["references(team -> teams.team_id): 1 offending row(s)", "| 30"]),
    ];
    for (data, needles) in cases {
        write(root, "data/people.csv", data);
        let msg = fails(root, &["build"]);
        assert!(msg.contains("contract `members` violated"), "{msg}");
        assert!(msg.contains("workspace.toml:"), "{msg}");
        for n in *needles {
            assert!(msg.contains(n), "expected `{n}` in:\n{msg}");
        }
        assert_eq!(std::fs::read(out(root, "members")).unwrap(), good, "the last good output stays");
    }
    // The referenced dataset is an input: changing it reruns the check.
    write(root, "data/people.csv", "id,team,role\n1,10,dev\n2,30,ops\n");
    write(root, "data/teams.csv", "team_id,name\n10,core\n30,new\n");
    let v = json(root, &["build", "--json"]);
    assert_eq!(v["rules"][0]["status"], "built");
    // A check naming a column the output lacks fails at plan time.
    let t = CONTRACT_WS.replace("not_null = [\"team\"]", "not_null = [\"teem\"]");
    write(root, "workspace.toml", &t);
    let msg = fails(root, &["check"]);
    assert!(msg.contains("not_null(teem) names column `teem`") && msg.contains("did you mean `team`?"), "{msg}");
}

#[test]
fn builds_write_run_bundles_that_explain_reads() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let runs: Vec<_> = std::fs::read_dir(root.join("cache/runs")).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1);
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(runs[0].path()).unwrap()).unwrap();
    assert_eq!(run["engine_fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(run["profile"]["target_partitions"], 2);
    assert!(run["datasets"]["cst_callsites"]["files"].as_array().unwrap().len() == 2, "{run}");
    let edges = &run["rules"]["edges"];
    assert_eq!(edges["status"], "built");
    let art: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("cache").join(edges["artifact"].as_str().unwrap())).unwrap())
            .unwrap();
    assert!(art["plans"]["physical_metrics"].as_str().unwrap().contains("output_rows"), "{art}");
    assert!(art["plans"]["sql"].as_str().unwrap().contains("SELECT"));
    assert_eq!(art["lineage"]["columns"][0]["name"], "src");
    let checks_ok = art["checks"].as_array().unwrap().is_empty();
    assert!(checks_ok, "edges' contract has no data checks");
    let v = json(root, &["explain", "edges", "--json"]);
    assert_eq!(v["source"], "last build");
    assert_eq!(v["key"], edges["key"]);
    assert_eq!(v["lineage"], art["lineage"]);
    // A no-op build writes no bundle; an edit writes one where reused rules keep their artifacts.
    ok(root, &["build"]);
    assert_eq!(std::fs::read_dir(root.join("cache/runs")).unwrap().count(), 1);
    let sql = std::fs::read_to_string(root.join("rules/edges.sql")).unwrap();
    std::fs::write(root.join("rules/edges.sql"), sql.replace("'CALLS'", "'CALL'")).unwrap();
    let v = json(root, &["explain", "edges", "--json"]);
    assert_eq!(v["source"], "planned now (not built with this definition)");
    ok(root, &["build"]);
    let mut runs: Vec<_> = std::fs::read_dir(root.join("cache/runs")).unwrap().flatten().map(|e| e.path()).collect();
    runs.sort();
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&runs[1]).unwrap()).unwrap();
    assert_eq!(run["rules"]["calls"]["status"], "reused");
    let key = run["rules"]["calls"]["key"].as_str().unwrap();
    assert!(root.join("cache/artifacts").join(format!("{key}.json")).is_file(), "reused rules keep their artifact");
}

const DIFF_WS: &str = r#"
[workspace]
name = "diff"

[datasets.t]
path = "data/t.csv"

[rules.x]
sql = "SELECT a, b * 2 AS b2, c FROM t WHERE a > 0"

[rules.y]
sql = "SELECT a, c FROM x"

[rules.z]
sql = "SELECT a, b2 FROM x"
"#;

fn diff_ws() -> tempfile::TempDir {
    workspace_with(&[("workspace.toml", DIFF_WS), ("data/t.csv", "a,b,c\n1,2,3\n4,5,6\n")])
}

fn diff_json(head: &Path, base: &Path) -> serde_json::Value {
    json(head, &["diff", "--base-dir", base.to_str().unwrap(), "--json"])
}

#[test]
fn semantic_diff_classifies_changes_and_follows_column_lineage() {
    let base = diff_ws();
    let head = diff_ws();
    let h = head.path();
    // Reformatting and comments: no change at all.
    write(
        h,
        "workspace.toml",
        &DIFF_WS.replace("\"SELECT a, c FROM x\"", "\"\"\"\nselect a,\n  c -- keep\nfrom x\n\"\"\""),
    );
    let v = diff_json(h, base.path());
    assert!(v["rules"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(ok(h, &["diff", "--base-dir", base.path().to_str().unwrap()]).trim(), "no changes");

    // A column computed differently reaches z (reads b2) but not y.
    write(h, "workspace.toml", &DIFF_WS.replace("b * 2 AS b2", "b * 3 AS b2"));
    let v = diff_json(h, base.path());
    assert_eq!(v["rules"][0]["rule"], "x");
    assert_eq!(v["rules"][0]["details"][0], serde_json::json!({"kind": "column_changed", "column": "b2"}));
    assert_eq!(v["breaking"], true);
    let affected: Vec<&str> = v["affected"].as_array().unwrap().iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(affected, ["z"]);

    // A filter change reaches every consumer's rows.
    write(h, "workspace.toml", &DIFF_WS.replace("WHERE a > 0", "WHERE a > 1"));
    let v = diff_json(h, base.path());
    assert_eq!(v["rules"][0]["details"][0]["kind"], "rows_changed");
    let affected: Vec<&str> = v["affected"].as_array().unwrap().iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(affected, ["y", "z"]);

    // Added column: not breaking; renamed and retyped columns: breaking.
    write(h, "workspace.toml", &DIFF_WS.replace("b * 2 AS b2, c", "b * 2 AS b2, c, a + c AS d"));
    let v = diff_json(h, base.path());
    assert_eq!(v["rules"][0]["details"][0]["kind"], "column_added");
    assert_eq!(v["breaking"], false);
    assert!(v["affected"].as_array().unwrap().is_empty(), "{v}");
    write(
        h,
        "workspace.toml",
        &DIFF_WS
            .replace("b * 2 AS b2, c FROM t", "b * 2 AS b2, c AS cc FROM t")
            .replace("SELECT a, c FROM x", "SELECT a, cc FROM x"),
    );
    let v = diff_json(h, base.path());
    let details: Vec<String> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["details"].as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap().to_string()))
        .collect();
    assert!(details.contains(&"column_renamed".to_string()), "{v}");
    write(h, "workspace.toml", &DIFF_WS.replace("b * 2 AS b2", "CAST(b * 2 AS VARCHAR) AS b2"));
    let v = diff_json(h, base.path());
    assert_eq!(v["rules"][0]["details"][0]["kind"], "column_retyped", "{v}");
    let (code, out, _) = run(h, &["diff", "--base-dir", base.path().to_str().unwrap(), "--fail-on-breaking"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("changed x  (breaking)") && out.contains("z: `b2`"), "{out}");
}

#[test]
fn semantic_diff_against_a_git_revision() {
    let ws = diff_ws();
    let root = ws.path();
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .current_dir(root)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .unwrap();
        assert!(st.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&st.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "workspace.toml"]); // data stays untracked: linked from the checkout
    git(&["commit", "-q", "-m", "base"]);
    write(root, "workspace.toml", &DIFF_WS.replace("[rules.z]", "[rules.w]\nsql = \"SELECT a FROM y\"\n\n[rules.z]"));
    let v = json(root, &["diff", "--base", "HEAD", "--json"]);
    assert_eq!(v["rules"][0], serde_json::json!({"rule": "w", "change": "added", "breaking": false, "details": []}));
    assert!(
        !root.join("cache/tmp").read_dir().unwrap().any(|e| e.unwrap().path().is_dir()),
        "scratch checkout removed"
    );
    let msg = fails(root, &["diff", "--base", "no-such-rev"]);
    assert!(msg.contains("--base no-such-rev"), "{msg}");
}

/// 1-based line and column of the first `needle` in `text`.
fn pos_of(text: &str, needle: &str) -> (u64, u64) {
    let off = text.find(needle).unwrap_or_else(|| panic!("{needle} not found"));
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map(|i| i + 1).unwrap_or(0)..].chars().count() + 1;
    (line as u64, col as u64)
}

#[test]
fn every_compile_error_class_points_at_file_line_and_column() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let before = (
        tree_bytes(&root.join("out")),
        tree_bytes(&root.join("cache/objects")),
        tree_bytes(&root.join("cache/records")),
    );
    // (file, from, to, needle in the edited text, expected code)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "rules/edges.sql",
            "JOIN files AS f ON f.file_id = cs.file_id",
            "JOIN filez AS f ON f.file_id = cs.file_id",
            "filez",
            "relspec::unknown_table",
        ),
        ("workspace.toml", ">= $min_file", ">= $min_fil", "$min_fil", "relspec::unknown_param"),
        ("rules/edges.sql", "SELECT calls.src, calls.dst", "SELECT calls.src, calls.dsx", "calls.dsx", "relspec::plan"),
        ("rules/edges.sql", "'CALLS' AS kind", "'CALLS' AS kind kind", "kind kind", "relspec::sql_syntax"),
    ];
    for (file, from, to, needle, code) in cases {
        let path = root.join(file);
        let orig = std::fs::read_to_string(&path).unwrap();
        assert!(orig.contains(from), "{from}");
        let edited = orig.replacen(from, to, 1);
        std::fs::write(&path, &edited).unwrap();
        let v = failing_check(root);
        let e = &v["errors"][0];
        assert_eq!(e["code"], *code, "{v}");
        assert_eq!(e["file"], *file, "{e}");
        let (line, col) = pos_of(&edited, needle);
        assert_eq!(e["line"].as_u64(), Some(line), "{e}");
        if *code == "relspec::sql_syntax" {
            // The parser reports the token after the valid prefix: the second `kind`.
            assert_eq!(e["column"].as_u64(), Some(col + 5), "{e}");
        } else {
            assert_eq!(e["column"].as_u64(), Some(col), "{e}");
        }
        assert!(e["help"].is_string() || *code == "relspec::sql_syntax", "a hint: {e}");
        // The rendered diagnostic puts a caret under the text.
        let (_, _, err) = run(root, &["check"]);
        assert!(err.contains(&format!("{file}:{line}:")) && err.contains("here"), "{err}");
        std::fs::write(&path, orig).unwrap();
    }
    let after = (
        tree_bytes(&root.join("out")),
        tree_bytes(&root.join("cache/objects")),
        tree_bytes(&root.join("cache/records")),
    );
    assert!(before == after, "nothing published or cached changed");
}

/// Static errors in some rules do not stop `check` from planning the others:
/// an unknown table, a SQL syntax error and an unknown column in three
/// independent rules of three files are all reported in one run, and a
/// sound rule downstream of none of them is still checked.
#[test]
fn check_reports_static_and_planning_errors_together() {
    let ws = default_workspace();
    let root = ws.path();
    write(root, "rules/bad_table.sql", "SELECT def_id FROM cst_deff\n");
    write(root, "rules/bad_syntax.sql", "SELECT def_id FROM cst_defs WHERE\n");
    write(root, "rules/bad_column.sql", "SELECT def_idd FROM cst_defs\n");
    let v = failing_check(root);
    let errors = v["errors"].as_array().unwrap();
    let by_rule = |r: &str| errors.iter().find(|e| e["rule"] == r).unwrap_or_else(|| panic!("no error for {r}: {v}"));
    let t = by_rule("bad_table");
    assert_eq!(t["file"], "rules/bad_table.sql");
    assert!(t["message"].as_str().unwrap().contains("cst_deff"), "{t}");
    let s = by_rule("bad_syntax");
    assert_eq!(s["file"], "rules/bad_syntax.sql");
    assert_eq!(s["line"].as_u64(), Some(1), "{s}");
    let c = by_rule("bad_column");
    assert_eq!(c["file"], "rules/bad_column.sql");
    assert!(c["message"].as_str().unwrap().contains("def_idd"), "{c}");
    assert!(c["help"].as_str().unwrap_or_default().contains("def_id"), "{c}");
    assert_eq!((c["line"].as_u64(), c["column"].as_u64()), (Some(1), Some(8)), "{c}");
    assert_eq!(errors.len(), 3, "exactly the three errors: {v}");
}
