//! A `UNION ALL` of rules is written without a plan, as its branches'
//! outputs one after another in branch order; a changed branch is spliced
//! into the previous output (copying the row groups away from its rows)
//! without re-running the other branches, and the bytes equal a clean build's.

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

/// Each of `rules`' published bytes equal a clean build's of a copy of the workspace.
fn equals_a_clean_build(root: &Path, rules: &[&str], what: &str) {
    let clean = common::copy_sources(root);
    common::ok(clean.path(), &["build"]);
    for rule in rules {
        assert_eq!(bytes(root, rule), bytes(clean.path(), rule), "{what}: {rule}");
    }
}

/// The `id` column (the first) of an output, in its published order.
fn ids(root: &Path, rule: &str) -> Vec<String> {
    common::read_rows(&common::out(root, rule)).into_iter().map(|r| r[0].clone()).collect()
}

#[test]
fn a_union_of_rules_is_its_branches_in_branch_order() {
    let ws = workspace();
    let root = ws.path();
    common::ok(root, &["build"]);
    // Each branch's rows in its own order (sorted by every column), the
    // branches in the order the rule names them.
    assert_eq!(
        ids(root, "all_rows"),
        ["1", "2", "3", "3", "4", "5", "6", "1", "6"],
        "low 1-3, high 3-6, none, dup 1 and 6"
    );
    assert_eq!(ids(root, "all_sql"), ["1", "6", "1", "2", "3", "3", "4", "5", "6"], "dup, low, high");
    assert_eq!(common::column_names(&common::out(root, "all_rows")), ["id", "name", "score", "ratio"]);
    // Not a plain union: planned by DataFusion and sorted by every column.
    assert_eq!(ids(root, "filtered"), ["1", "2", "3", "5", "6"]);
    // Explain says which.
    let e = common::ok(root, &["explain", "all_rows"]);
    assert!(e.contains("UnionConcat: the 4 branch outputs one after another, in branch order"), "{e}");
    assert!(e.contains("written from: every branch"), "{e}");
    let e = common::ok(root, &["explain", "filtered"]);
    assert!(!e.contains("UnionConcat"), "{e}");
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
    assert!(e.contains("written from: the previous output, 1 changed branch(es): low; spliced: "), "{e}");
    // Equal to a clean build of the edited workspace.
    equals_a_clean_build(root, &["all_rows", "all_sql", "filtered"], "one branch changed");
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
    assert!(!e.contains("UnionConcat"), "coerced by DataFusion: {e}");
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
        if common::ok(root, &["explain", "u"]).contains("written from: the previous output") {
            incremental_steps += 1;
        }
        equals_a_clean_build(root, &["u"], &format!("step {step}"));
    }
    assert!(incremental_steps >= 3, "the previous output was the start of {incremental_steps} merges");
}

/// A union of branches whose rows interleave in value (`id % n = i`):
/// editing one branch replaces its range of the union's rows, re-encoding
/// the row groups holding it and copying the others; the bytes equal a
/// clean build's after every edit.
#[test]
fn a_changed_branch_splices_the_union_copying_the_other_branches_groups() {
    let n = 12;
    let manifest = |edited: Option<(usize, u32)>| {
        let mut m = String::from("[workspace]\nname = \"splice\"\n\n[datasets.t]\npath = \"t.csv\"\n\n");
        for i in 0..n {
            let extra = match edited {
                Some((b, k)) if b == i => format!(" AND score <> {k}"),
                _ => String::new(),
            };
            m.push_str(&format!(
                "[rules.b{i}]\nsql = \"SELECT id, name, score FROM t WHERE id % {n} = {i}{extra}\"\n\n"
            ));
        }
        let union: Vec<String> = (0..n).map(|i| format!("SELECT * FROM b{i}")).collect();
        m.push_str(&format!("[rules.u]\nsql = \"{}\"\n", union.join(" UNION ALL ")));
        m
    };
    let mut data = String::from("id,name,score\n");
    for id in 0..120_000 {
        data.push_str(&format!("{id},n{},{}\n", id % 97, id % 17));
    }
    let ws = common::workspace_with(&[("workspace.toml", &manifest(None)), ("t.csv", &data)]);
    let root = ws.path();
    common::ok(root, &["build"]);
    // The first branch, one in the middle, the last.
    for (step, edit) in [(5, 5), (5, 6), (0, 1), (11, 2)].into_iter().enumerate() {
        common::write(root, "workspace.toml", &manifest(Some(edit)));
        common::ok(root, &["build"]);
        let e = common::ok(root, &["explain", "u"]);
        // Each step edits one branch and restores the one edited before.
        let changed = if step == 0 || edit.0 == 5 && step == 1 { 1 } else { 2 };
        assert!(
            e.contains(&format!("written from: the previous output, {changed} changed branch(es)")),
            "step {step}: {e}"
        );
        let (copied, encoded) = common::spliced_groups(&e).unwrap_or_else(|| panic!("step {step}: {e}"));
        assert!(copied >= 4 && copied > encoded, "step {step}: {copied} copied, {encoded} re-encoded");
        equals_a_clean_build(root, &["u"], &format!("step {step}"));
    }
}

/// A union's column types and nullability come from its branches' records
/// (branches built now), from the previous union's artifact, or from the
/// branches' footers (branches reused by an earlier build): the same
/// schema and bytes either way. Here the union is added after its
/// branches were built (footers), then a branch changes (its record, the
/// others from the artifact), each compared with a clean build (records);
/// the branches mix non-null and nullable columns, strings, a timestamp and
/// a decimal (a nested type is read from the footers always).
#[test]
fn a_union_reads_the_same_schema_from_records_artifacts_and_footers() {
    let branches = |k: u32| {
        format!(
            r#"
[workspace]
name = "schemas"

[datasets.t]
path = "t.csv"

[rules.a]
sql = "SELECT id, name, 1 AS one, CAST(score AS DECIMAL(10, 2)) AS d, to_timestamp_micros(id) AS at FROM t WHERE id <= {k}"

[rules.b]
sql = "SELECT id, name, 2 AS one, CAST(score AS DECIMAL(10, 2)) AS d, to_timestamp_micros(id * 2) AS at FROM t WHERE id > 3"
"#
        )
    };
    let with_union =
        |k: u32| format!("{}\n[rules.u]\nsql = \"SELECT * FROM a UNION ALL SELECT * FROM b\"\n", branches(k));
    let ws = common::workspace_with(&[("workspace.toml", &branches(3)), ("t.csv", DATA)]);
    let root = ws.path();
    common::ok(root, &["build"]);
    for (step, k) in [3, 2, 5].into_iter().enumerate() {
        common::write(root, "workspace.toml", &with_union(k));
        common::ok(root, &["build"]);
        let e = common::ok(root, &["explain", "u"]);
        assert!(e.contains("UnionConcat"), "step {step}: {e}");
        equals_a_clean_build(root, &["u"], &format!("step {step}"));
    }
}

/// Reordering a union's branches is a new definition: the union is
/// written again in the new order (its last branch list is not reused).
#[test]
fn reordered_branches_publish_the_new_order() {
    let ws = workspace();
    let root = ws.path();
    common::ok(root, &["build"]);
    let m = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    let swapped = m.replace(
        "SELECT * FROM dup UNION ALL SELECT * FROM low UNION ALL SELECT * FROM high",
        "SELECT * FROM high UNION ALL SELECT * FROM dup UNION ALL SELECT * FROM low",
    );
    assert_ne!(m, swapped);
    common::write(root, "workspace.toml", &swapped);
    common::ok(root, &["build"]);
    assert_eq!(ids(root, "all_sql"), ["3", "4", "5", "6", "1", "6", "1", "2", "3"], "high, dup, low");
    equals_a_clean_build(root, &["all_sql"], "reordered");
}
