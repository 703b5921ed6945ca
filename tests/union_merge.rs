//! A `UNION ALL` of rules is built by a k-way merge of the branches' sorted
//! outputs; its published bytes equal DataFusion's lane (forced with
//! `RELSPEC_UNION_LANE=datafusion`), and a changed branch re-merges without
//! re-running the other branches.

mod common;

use std::path::Path;

const DATA: &str = "id,name,score,ratio\n1,a,10,0.5\n2,b,,1.5\n3,,30,-0.0\n4,d,40,\n5,e,50,2.5\n6,a,10,0.5\n";

fn workspace() -> tempfile::TempDir {
    let manifest = r#"
[workspace]
name = "unions"
include = ["rules/*.toml", "rules/*.sql"]

[datasets.t]
path = "t.csv"

[contracts.all_rows]
columns = { id = "bigint", name = "string" }
not_null = ["id"]

[rules.low]
sql = "SELECT id, name, score, ratio FROM t WHERE id <= 3"

[rules.high]
sql = "SELECT id AS ident, name, score, ratio FROM t WHERE id >= 3"

[rules.none]
sql = "SELECT id, name, score, ratio FROM t WHERE id > 100"

[rules.dup]
sql = "SELECT id, name, score, ratio FROM t WHERE name = 'a'"

# A pipeline union (with the contract), and the same as SQL.
[rules.all_rows]
from = "low"
steps = [{ union = "high" }, { union = "none" }, { union = "dup" }]
produces = "all_rows"

[rules.all_sql]
sql = "SELECT * FROM dup UNION ALL SELECT * FROM low UNION ALL SELECT * FROM high"

# Not a plain union of rules: DataFusion's lane.
[rules.filtered]
sql = "SELECT * FROM low UNION ALL SELECT * FROM high WHERE ident > 4"
"#;
    common::workspace_with(&[("workspace.toml", manifest), ("t.csv", DATA)])
}

fn bytes(root: &Path, rule: &str) -> Vec<u8> {
    std::fs::read(common::out(root, rule)).unwrap()
}

#[test]
fn merged_unions_are_byte_identical_to_datafusions() {
    let merged = workspace();
    let planned = workspace();
    common::ok(merged.path(), &["build"]);
    let out = common::relspec(planned.path()).env("RELSPEC_UNION_LANE", "datafusion").arg("build").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for rule in ["all_rows", "all_sql", "filtered"] {
        assert_eq!(bytes(merged.path(), rule), bytes(planned.path(), rule), "{rule}: the lanes differ");
    }
    // The rows themselves: every branch row, sorted by every column.
    let rows = common::read_rows(&common::out(merged.path(), "all_rows"));
    assert_eq!(rows.len(), 9, "low 3 + high 4 + none 0 + dup 2");
    assert_eq!(common::column_names(&common::out(merged.path(), "all_rows")), ["id", "name", "score", "ratio"]);
    // The merge lane says so in the artifact (explain), DataFusion's does not.
    let e = common::ok(merged.path(), &["explain", "all_rows"]);
    assert!(e.contains("UnionMerge: k-way merge of 4 sorted branch outputs"), "{e}");
    let e = common::ok(merged.path(), &["explain", "filtered"]);
    assert!(!e.contains("UnionMerge"), "{e}");
    let e = common::ok(planned.path(), &["explain", "all_rows"]);
    assert!(!e.contains("UnionMerge"), "{e}");
}

#[test]
fn a_changed_branch_re_merges_and_equals_a_clean_build() {
    let ws = workspace();
    let root = ws.path();
    common::ok(root, &["build"]);
    // Change one branch: only it and the unions that read it run.
    let m = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    std::fs::write(root.join("workspace.toml"), m.replace("WHERE id <= 3", "WHERE id <= 2")).unwrap();
    let out = common::ok(root, &["build", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut built = common::built_rules(&v);
    built.sort();
    assert_eq!(built, ["all_rows", "all_sql", "filtered", "low"], "{out}");
    // The unions started from their previous outputs.
    let e = common::ok(root, &["explain", "all_rows"]);
    assert!(e.contains("merged from: the previous output, 1 changed branch(es): low"), "{e}");
    // Equal to a clean build of the edited workspace.
    let clean = common::copy_sources(root);
    common::ok(clean.path(), &["build"]);
    for rule in ["all_rows", "all_sql", "filtered"] {
        assert_eq!(bytes(root, rule), bytes(clean.path(), rule), "{rule}");
    }
}

#[test]
fn a_union_whose_branch_types_differ_is_left_to_datafusion() {
    let manifest = r#"
[workspace]
name = "coerce"

[datasets.t]
path = "t.csv"

[rules.ints]
sql = "SELECT CAST(id AS INT) AS v FROM t"

[rules.bigs]
sql = "SELECT id * 10 AS v FROM t"

[rules.both]
sql = "SELECT * FROM ints UNION ALL SELECT * FROM bigs"
"#;
    let ws = common::workspace_with(&[("workspace.toml", manifest), ("t.csv", DATA)]);
    common::ok(ws.path(), &["build"]);
    assert_eq!(common::read_rows(&common::out(ws.path(), "both")).len(), 12);
    let e = common::ok(ws.path(), &["explain", "both"]);
    assert!(!e.contains("UnionMerge"), "coerced by DataFusion: {e}");
}

#[test]
fn incremental_merges_equal_clean_builds_step_by_step() {
    // 8 branches over one table; each step edits some of them (to empty,
    // to duplicates of other branches, to new rows) and every step's union
    // must equal a clean build's bytes.
    let n = 8;
    let branch = |i: usize, v: &str| format!("[rules.b{i}]\nsql = \"SELECT id, name, score FROM t WHERE {v}\"\n");
    let conds = |step: usize| -> Vec<String> {
        (0..n)
            .map(|i| match (i + step) % 5 {
                _ if step == 0 => format!("id % {n} = {i}"),
                0 => "id < 0".to_string(),
                1 => format!("id % 2 = {}", i % 2),
                2 => format!("id % {n} = {i} AND score > {step}"),
                _ => format!("id % {n} = {i}"),
            })
            .collect()
    };
    let mut data = String::from("id,name,score\n");
    for id in 0..200 {
        let name = if id % 7 == 0 { String::new() } else { format!("n{}", id % 13) };
        let score = if id % 11 == 0 { String::new() } else { (id % 17).to_string() };
        data.push_str(&format!("{id},{name},{score}\n"));
    }
    let manifest = |c: &[String]| {
        let mut m = String::from("[workspace]\nname = \"steps\"\n\n[datasets.t]\npath = \"t.csv\"\n\n");
        for (i, cond) in c.iter().enumerate() {
            m.push_str(&branch(i, cond));
        }
        let union: Vec<String> = (0..n).map(|i| format!("SELECT * FROM b{i}")).collect();
        m.push_str(&format!("[rules.u]\nsql = \"{}\"\n", union.join(" UNION ALL ")));
        m
    };
    let ws = common::workspace_with(&[("workspace.toml", &manifest(&conds(0))), ("t.csv", &data)]);
    let root = ws.path();
    common::ok(root, &["build"]);
    let mut incremental_steps = 0;
    for step in 1..=8 {
        // Change one or two branches per step (a few steps change many).
        let mut c = conds(0);
        let now = conds(step);
        for (i, cond) in now.into_iter().enumerate() {
            if step >= 6 || i % 4 == step % 4 {
                c[i] = cond;
            }
        }
        common::write(root, "workspace.toml", &manifest(&c));
        common::ok(root, &["build"]);
        if common::ok(root, &["explain", "u"]).contains("merged from: the previous output") {
            incremental_steps += 1;
        }
        let clean = common::copy_sources(root);
        common::ok(clean.path(), &["build"]);
        assert_eq!(bytes(root, "u"), bytes(clean.path(), "u"), "step {step}");
    }
    assert!(incremental_steps >= 3, "the previous output was the start of {incremental_steps} merges");
}

/// A union whose branches' rows are clustered (a leading `branch` column)
/// splices: editing one branch re-encodes the union's row groups holding
/// that branch's rows and copies the others; the bytes equal a clean build's.
/// Branches whose rows interleave touch most row groups: every group is
/// re-encoded, in parallel segments when the machine has several threads.
#[test]
fn a_changed_branch_splices_the_union_when_its_rows_are_clustered() {
    let n = 12;
    let manifest = |clustered: bool, edited: Option<(usize, u32)>| {
        let mut m = String::from("[workspace]\nname = \"splice\"\n\n[datasets.t]\npath = \"t.csv\"\n\n");
        for i in 0..n {
            let extra = match edited {
                Some((b, k)) if b == i => format!(" AND score <> {k}"),
                _ => String::new(),
            };
            let lead = if clustered { format!("'b{i:02}' AS branch, ") } else { String::new() };
            m.push_str(&format!(
                "[rules.b{i}]\nsql = \"SELECT {lead}id, name, score FROM t WHERE id % {n} = {i}{extra}\"\n\n"
            ));
        }
        let union: Vec<String> = (0..n).map(|i| format!("SELECT * FROM b{i}")).collect();
        m.push_str(&format!("[rules.u]\nsql = \"{}\"\n", union.join(" UNION ALL ")));
        m
    };
    let mut data = String::from("id,name,score\n");
    for id in 0..60_000 {
        data.push_str(&format!("{id},n{},{}\n", id % 97, id % 17));
    }
    for clustered in [true, false] {
        let ws = common::workspace_with(&[("workspace.toml", &manifest(clustered, None)), ("t.csv", &data)]);
        let root = ws.path();
        common::ok(root, &["build"]);
        for (step, edit) in [(3, 5), (3, 6), (0, 1), (11, 2)].into_iter().enumerate() {
            common::write(root, "workspace.toml", &manifest(clustered, Some(edit)));
            common::ok(root, &["build"]);
            let e = common::ok(root, &["explain", "u"]);
            // Each step edits one branch and restores the one edited before.
            let changed = if step == 0 || edit.0 == 3 && step == 1 { 1 } else { 2 };
            assert!(
                e.contains(&format!("merged from: the previous output, {changed} changed branch(es)")),
                "step {step}: {e}"
            );
            if clustered {
                let (copied, encoded) = common::spliced_groups(&e).unwrap_or_else(|| panic!("step {step}: {e}"));
                assert!(copied >= 2 && copied > encoded, "step {step}: {copied} copied, {encoded} re-encoded");
            } else {
                assert!(!e.contains("spliced: "), "interleaved branches touch most row groups: {e}");
                if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
                    assert!(e.contains("parallel segments"), "step {step}: {e}");
                }
            }
            let clean = common::copy_sources(root);
            common::ok(clean.path(), &["build"]);
            assert_eq!(bytes(root, "u"), bytes(clean.path(), "u"), "step {step} (clustered: {clustered})");
        }
    }
}
