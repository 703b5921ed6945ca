//! `incremental = { by = "input" }`: the compiler proves on the rule's plan
//! that it distributes over the input's partitions, or rejects the
//! declaration naming what breaks it. One rule per class, in one workspace
//! (`check` reports every error), over the default workspace's datasets:
//! `cst_callsites` (hive, key `lang`), `cst_defs` (one file, no key) and the
//! `code_*` source tables (key `file`).

mod common;

use std::collections::BTreeMap;

const RULES: &str = r#"
[rules.ok_filter_join]
sql = "SELECT c.lang, c.callsite_id, d.def_id FROM cst_callsites AS c JOIN cst_defs AS d ON d.name = c.callee WHERE c.line > 0"
incremental = { by = "cst_callsites" }

[rules.ok_aggregate_by_key]
sql = "SELECT lang, count(*) AS n FROM cst_callsites GROUP BY lang"
incremental = { by = "cst_callsites" }

[rules.ok_window_by_file]
sql = "SELECT file, name, row_number() OVER (PARTITION BY file ORDER BY start_byte) AS k FROM code_defs"
incremental = { by = "code_defs" }

[rules.ok_pipeline]
from = "cst_callsites"
steps = [{ filter = "line > 1" }, { select = ["callsite_id", "lang"] }]
incremental = { by = "cst_callsites" }

[rules.ok_union_both_read]
sql = "SELECT lang, callsite_id AS id FROM cst_callsites WHERE line > 2 UNION ALL SELECT lang, callsite_id AS id FROM cst_callsites WHERE line < 2"
incremental = { by = "cst_callsites" }

[rules.ok_by_rule]
sql = "SELECT lang, count(*) AS n FROM ok_pipeline GROUP BY lang"
incremental = { by = "ok_pipeline" }

[rules.bad_key_not_in_output]
sql = "SELECT callsite_id FROM cst_callsites"
incremental = { by = "cst_callsites" }

[rules.bad_key_computed]
sql = "SELECT upper(lang) AS lang, callsite_id FROM cst_callsites"
incremental = { by = "cst_callsites" }

[rules.bad_aggregate]
sql = "SELECT callee, count(*) AS n FROM cst_callsites GROUP BY callee"
incremental = { by = "cst_callsites" }

[rules.bad_limit]
sql = "SELECT * FROM cst_callsites ORDER BY line LIMIT 5"
incremental = { by = "cst_callsites" }

[rules.bad_both_sides]
sql = "SELECT a.callsite_id FROM cst_callsites AS a JOIN cst_callsites AS b ON a.callee = b.callee"
incremental = { by = "cst_callsites" }

[rules.bad_outer_join]
sql = "SELECT d.def_id, c.callsite_id FROM cst_defs AS d LEFT JOIN cst_callsites AS c ON c.callee = d.name"
incremental = { by = "cst_callsites" }

[rules.bad_union_branch]
sql = "SELECT callee AS x FROM cst_callsites UNION ALL SELECT name AS x FROM cst_defs"
incremental = { by = "cst_callsites" }

[rules.bad_window]
sql = "SELECT callsite_id, row_number() OVER (ORDER BY line) AS k FROM cst_callsites"
incremental = { by = "cst_callsites" }

[rules.bad_no_key]
sql = "SELECT kind, count(*) AS n FROM cst_defs GROUP BY kind"
incremental = { by = "cst_defs" }

[rules.bad_not_read]
sql = "SELECT callsite_id FROM cst_callsites"
incremental = { by = "cst_callsite" }

[rules.bad_subquery]
sql = "SELECT def_id FROM cst_defs WHERE def_id IN (SELECT callsite_id FROM cst_callsites)"
incremental = { by = "cst_callsites" }

[rules.bad_by_rule]
sql = "SELECT src FROM calls"
incremental = { by = "calls" }
"#;

#[test]
fn each_class_is_accepted_or_rejected_with_its_reason() {
    let ws = common::default_workspace();
    let root = ws.path();
    common::write(root, "rules/partitions.toml", RULES);
    common::write(
        root,
        "rules/ok_sql_header.sql",
        "-- incremental_by: code_callsites\nSELECT file, callee FROM code_callsites WHERE callee IS NOT NULL\n",
    );
    let (code, stdout, _) = common::run(root, &["check", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let errors: BTreeMap<String, serde_json::Value> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["rule"].as_str().unwrap_or_default().to_string(), e.clone()))
        .collect();
    for ok in [
        "ok_filter_join",
        "ok_aggregate_by_key",
        "ok_window_by_file",
        "ok_pipeline",
        "ok_union_both_read",
        "ok_by_rule",
        "ok_sql_header",
    ] {
        assert!(!errors.contains_key(ok), "{ok} is distributive: {:?}", errors.get(ok));
    }
    let expect = [
        ("bad_aggregate", "an aggregate groups by `cst_callsites.callee`, which does not include the partition key"),
        ("bad_limit", "a LIMIT is global"),
        ("bad_both_sides", "it is read on both sides of a join"),
        ("bad_outer_join", "a left join keeps rows of the other side"),
        ("bad_union_branch", "a UNION branch does not read it"),
        ("bad_window", "a window partitions by nothing"),
        ("bad_no_key", "`cst_defs` has no partitions"),
        ("bad_key_not_in_output", "its output has no column `lang` copied from `cst_callsites`"),
        ("bad_key_computed", "its output has no column `lang` copied from `cst_callsites`"),
        ("bad_not_read", "but it does not read `cst_callsite`"),
        ("bad_by_rule", "`calls` is a rule that is not itself incremental"),
        ("bad_subquery", "a subquery reads it"),
    ];
    for (rule, why) in expect {
        let e = errors.get(rule).unwrap_or_else(|| panic!("{rule} must be rejected; errors: {errors:?}"));
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(why), "{rule}: {msg}");
        assert!(msg.contains("declares `incremental = { by = "), "{rule}: {msg}");
        assert_eq!(e["file"], "rules/partitions.toml", "{rule}");
        assert!(e["line"].as_u64().is_some(), "{rule}: located");
    }
    assert_eq!(errors["bad_not_read"]["help"], "did you mean `cst_callsites`?");
    assert!(errors["bad_no_key"]["help"].as_str().unwrap().contains("hive directories"));
    assert!(
        errors["bad_aggregate"]["help"].as_str().unwrap().contains("the partition key of `cst_callsites` is `lang`")
    );
    assert_eq!(errors.len(), expect.len(), "{errors:?}");
}

#[test]
fn build_rejects_a_non_distributive_declaration_and_keeps_the_rest() {
    let ws = common::default_workspace();
    let root = ws.path();
    common::ok(root, &["build"]);
    common::write(
        root,
        "rules/partitions.toml",
        "[rules.bad_limit]\nsql = \"SELECT * FROM cst_callsites ORDER BY line LIMIT 5\"\nincremental = { by = \"cst_callsites\" }\n",
    );
    let (code, _, stderr) = common::run(root, &["build"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("a LIMIT is global") && stderr.contains("rules/partitions.toml:"), "{stderr}");
    assert!(!common::out(root, "bad_limit").exists(), "nothing published for it");
    assert!(common::out(root, "calls").exists(), "other outputs kept");
}
