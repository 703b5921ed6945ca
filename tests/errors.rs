//! Bad input: each class gets a clear error naming file and line or rule, a
//! non-zero exit, and leaves published outputs and the cache untouched.

mod common;
use common::*;
use std::path::Path;

/// Build the default workspace, apply `edit`, build again: it must fail with
/// every `needles` in its output, leaving `out/` and cache records untouched.
fn breaks(edit: impl FnOnce(&Path), needles: &[&str]) -> String {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let out_before = tree_bytes(&root.join("out"));
    let records_before = tree_bytes(&root.join("cache/records"));
    let objects_before = tree_bytes(&root.join("cache/objects"));
    edit(root);
    let msg = fails(root, &["build"]);
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in:\n{msg}");
    }
    assert_eq!(out_before, tree_bytes(&root.join("out")), "published outputs changed");
    assert_eq!(records_before, tree_bytes(&root.join("cache/records")), "cache records changed");
    for (k, v) in &objects_before {
        assert_eq!(Some(v), tree_bytes(&root.join("cache/objects")).get(k), "cache object {k} changed");
    }
    msg
}

fn edit_file(root: &Path, rel: &str, from: &str, to: &str) {
    let p = root.join(rel);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{from} not in {rel}");
    std::fs::write(p, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn malformed_toml() {
    let msg = breaks(|r| edit_file(r, "workspace.toml", "[params]", "[params\n"), &["workspace.toml:", "invalid TOML"]);
    assert!(msg.contains("workspace.toml:19:8"), "{msg}");
}

#[test]
fn unknown_table_in_sql_rule() {
    breaks(
        |r| edit_file(r, "rules/edges.sql", "FROM cst_defs AS d", "FROM cst_deffs AS d"),
        &["rules/edges.sql:15:6", "rule `edges`", "unknown table `cst_deffs`", "did you mean `cst_defs`?"],
    );
}

#[test]
fn unknown_table_in_pipeline_rule() {
    breaks(
        |r| edit_file(r, "rules/stats.toml", "join = \"cst_defs\"", "join = \"cst_def\""),
        &["rules/stats.toml:5:", "rule `callee_counts`", "unknown table `cst_def`"],
    );
}

#[test]
fn cyclic_rules() {
    breaks(
        |r| {
            let mut t = std::fs::read_to_string(r.join("workspace.toml")).unwrap();
            t.push_str("\n[rules.a]\nsql = \"SELECT * FROM b\"\n\n[rules.b]\nsql = \"SELECT * FROM a\"\n");
            std::fs::write(r.join("workspace.toml"), t).unwrap();
        },
        &["rule dependency cycle: a -> b -> a", "workspace.toml:"],
    );
}

#[test]
fn sql_syntax_error() {
    breaks(
        |r| edit_file(r, "rules/edges.sql", "SELECT calls.src,", "SELECT calls.src,,"),
        &["rules/edges.sql:10:", "rule `edges`", "SQL syntax error"],
    );
}

#[test]
fn sql_syntax_error_inline_points_into_toml() {
    breaks(
        |r| edit_file(r, "workspace.toml", "JOIN scip_occurrences AS o", "JOIN JOIN scip_occurrences AS o"),
        &["workspace.toml:77:28", "rule `scip_candidates`", "SQL syntax error: Expected: end of statement, found: AS"],
    );
}

#[test]
fn unknown_column_is_a_plan_error_with_rule() {
    breaks(
        |r| edit_file(r, "rules/edges.sql", "calls.dst,", "calls.dest,"),
        &["rule `edges`", "rules/edges.sql:", "dest"],
    );
}

#[test]
fn missing_data_file() {
    breaks(
        |r| std::fs::remove_file(r.join("data/files.csv")).unwrap(),
        &["dataset `files`: no file matches `data/files.csv`", "workspace.toml:"],
    );
}

#[test]
fn contract_type_mismatch() {
    breaks(
        |r| edit_file(r, "workspace.toml", "columns = { src = \"bigint\"", "columns = { src = \"string\""),
        &["rule `edges`", "contract `edges` violated", "column `src` has type Int64, the contract requires Utf8"],
    );
}

#[test]
fn contract_missing_column() {
    breaks(
        |r| edit_file(r, "workspace.toml", "kind = \"string\", src_file", "knd = \"string\", src_file"),
        &["rule `edges`", "missing column `knd`", "did you mean `kind`?"],
    );
}

#[test]
fn unknown_param() {
    breaks(
        |r| edit_file(r, "workspace.toml", ">= $min_file", ">= $min_fil"),
        &["rule `callsite_candidates`", "unknown parameter `$min_fil`", "did you mean `$min_file`?"],
    );
}

#[test]
fn corrupt_parquet_input() {
    breaks(
        |r| {
            write(r, "data/symbols.parquet", "PAR1 this is not really parquet PAR1");
            let mut t = std::fs::read_to_string(r.join("workspace.toml")).unwrap();
            t.push_str("\n[datasets.symbols]\npath = \"data/symbols.parquet\"\n\n[rules.symbol_count]\nsql = \"SELECT count(*) AS n FROM symbols\"\n");
            std::fs::write(r.join("workspace.toml"), t).unwrap();
        },
        &["dataset `symbols`", "workspace.toml:"],
    );
}

#[test]
fn many_errors_are_all_reported() {
    let ws = default_workspace();
    let root = ws.path();
    let mut t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    let lines = t.lines().count() as u64;
    for i in 0..5 {
        t.push_str(&format!("\n[rules.bad{i}]\nsql = \"SELECT * FROM nope{i}\"\n"));
    }
    std::fs::write(root.join("workspace.toml"), t).unwrap();
    let (code, out, _) = run(root, &["check", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let errs = v["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 5, "{v}");
    for (i, e) in errs.iter().enumerate() {
        assert_eq!(e["rule"], format!("bad{i}"));
        assert_eq!(e["code"], "relspec::unknown_table");
        assert_eq!(e["file"], "workspace.toml");
        assert_eq!(e["line"].as_u64().unwrap(), lines + 3 + 3 * i as u64, "{e}");
    }
}

#[test]
fn failing_rule_keeps_last_good_output_and_others_still_publish() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let edges_before = std::fs::read(out(root, "edges")).unwrap();
    // A runtime failure in edges (cast error) while callee_counts changes and builds.
    edit_file(
        root,
        "rules/edges.sql",
        "'CALLS' AS kind",
        "CAST(CAST('x' AS VARCHAR) AS BIGINT) * 0 || 'CALLS' AS kind",
    );
    let counts_before = read_rows(&out(root, "callee_counts"));
    edit_file(root, "rules/stats.toml", "count(*) AS calls", "count(*) * 10 AS calls");
    let (code, stdout, stderr) = run(root, &["build", "--json"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(format!("{stdout}{stderr}").contains("rule `edges`"), "{stdout}{stderr}");
    assert_eq!(edges_before, std::fs::read(out(root, "edges")).unwrap());
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let status = |r: &str| {
        report["rules"].as_array().unwrap().iter().find(|x| x["rule"] == r).map(|x| x["status"].clone()).unwrap()
    };
    assert_eq!(status("edges"), "failed", "{report}");
    assert_eq!(status("callee_counts"), "built", "{report}");
    // callee_counts was published with its new definition: every count times ten.
    let expected: Vec<Vec<String>> =
        counts_before.iter().map(|r| vec![r[0].clone(), (r[1].parse::<i64>().unwrap() * 10).to_string()]).collect();
    let mut got = read_rows(&out(root, "callee_counts"));
    let mut want = expected;
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn duplicate_rule_names() {
    let msg = breaks(
        |r| write(r, "rules/calls.sql", "SELECT src, dst, score FROM callsite_candidates\n"),
        &["rule `calls` is defined twice", "rules/calls.sql"],
    );
    assert!(msg.contains("workspace.toml"), "names the other definition: {msg}");
}

#[test]
fn dataset_and_rule_with_one_name() {
    breaks(
        |r| write(r, "rules/files.sql", "SELECT 1 AS x\n"),
        &["`files` is both a dataset and a rule", "rules/files.sql", "rename the rule"],
    );
}

#[test]
fn unknown_contract() {
    breaks(
        |r| edit_file(r, "workspace.toml", "produces = \"calls\"", "produces = \"cals\""),
        &["unknown contract `cals`", "did you mean `calls`?", "rule `calls`", "workspace.toml:"],
    );
}

#[test]
fn unsupported_format_version() {
    let msg = breaks(
        |r| edit_file(r, "workspace.toml", "version = 1", "version = 7"),
        &["workspace format version 7 is not supported", "workspace.toml:"],
    );
    assert!(msg.contains("workspace.toml:7:"), "points at the version line: {msg}");
}

#[test]
fn bad_include_glob() {
    breaks(
        |r| {
            edit_file(
                r,
                "workspace.toml",
                "include = [\"rules/*.toml\", \"rules/*.sql\"]",
                "include = [\"rules/[*.toml\"]",
            )
        },
        &["include pattern `rules/[*.toml`", "workspace.toml"],
    );
}

#[test]
fn bad_memory_limit() {
    let msg = breaks(
        |r| edit_file(r, "workspace.toml", "memory_limit = \"1GiB\"", "memory_limit = \"lots\""),
        &["memory_limit", "workspace.toml:"],
    );
    assert!(msg.contains("lots"), "{msg}");
}

#[test]
fn multi_character_csv_delimiter() {
    breaks(
        |r| {
            edit_file(
                r,
                "workspace.toml",
                "partition_cols = { lang = \"string\" }",
                "partition_cols = { lang = \"string\" }\ndelimiter = \"||\"",
            )
        },
        &["dataset `cst_callsites`: delimiter `||` must be one ASCII character", "workspace.toml:"],
    );
}

#[test]
fn invalid_rule_file_name() {
    breaks(
        |r| write(r, "rules/my-rule.sql", "SELECT 1 AS x\n"),
        &["rule file name `my-rule` is not a valid rule name", "rules/my-rule.sql"],
    );
}

/// A `--json` command's errors are JSON on stdout, with a non-zero exit.
#[test]
fn json_errors_are_json() {
    let ws = default_workspace();
    let root = ws.path();
    edit_file(root, "rules/edges.sql", "FROM cst_defs AS d", "FROM cst_deffs AS d");
    for cmd in [&["build", "--json"][..], &["check", "--json"], &["status", "--json"]] {
        let (code, stdout, _) = run(root, cmd);
        assert_eq!(code, 1, "{cmd:?}: {stdout}");
        let v: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{cmd:?}: stdout is not JSON ({e}):\n{stdout}"));
        let errors = v["errors"].as_array().unwrap_or_else(|| panic!("{cmd:?}: no errors array: {v}"));
        assert!(errors.iter().any(|e| e["message"].as_str().unwrap_or("").contains("cst_deffs")), "{cmd:?}: {v}");
    }
    // An unreadable workspace too.
    std::fs::write(root.join("workspace.toml"), "[workspace\n").unwrap();
    let (code, stdout, _) = run(root, &["build", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(v["errors"][0]["file"].as_str().unwrap_or("").contains("workspace.toml"), "{v}");
}

#[test]
fn bad_executor_settings_name_the_profile_line() {
    let msg = breaks(
        |r| edit_file(r, "workspace.toml", "[profile]", "[profile]\nexecutor = \"ballista\""),
        &["workspace.toml:13", "executor = \"ballista\" needs a scheduler"],
    );
    assert!(msg.contains("standalone"), "the help names the in-process cluster: {msg}");
    breaks(
        |r| edit_file(r, "workspace.toml", "[profile]", "[profile]\nexecutor = \"spark\""),
        &["workspace.toml:13", "executor `spark` is not \"local\" or \"ballista\""],
    );
    breaks(
        |r| {
            edit_file(
                r,
                "workspace.toml",
                "[profile]",
                "[profile]\nexecutor = \"ballista\"\nscheduler = \"http://x:1\"",
            )
        },
        &["workspace.toml:14", "scheduler `http://x:1` is not `df://host:port` or `standalone`"],
    );
    breaks(
        |r| edit_file(r, "workspace.toml", "[profile]", "[profile]\nscheduler = \"df://x:1\""),
        &["workspace.toml:13", "scheduler is set, but executor is not \"ballista\""],
    );
}

/// (With the feature, tests/ballista.rs checks the processes' bad addresses.)
#[test]
#[cfg(not(feature = "ballista"))]
fn cluster_processes_without_the_ballista_feature_say_how_to_get_it() {
    let ws = default_workspace();
    let err = fails(ws.path(), &["cluster", "executor"]);
    assert!(err.contains("built without the `ballista` feature"), "{err}");
    assert!(err.contains("--features ballista"), "{err}");
}
