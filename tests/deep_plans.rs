//! Deep plans build or fail with a diagnostic; they never abort the process.
//!
//! A `UNION ALL` of many rules (as dbt projects often have), a long chain of
//! nested expressions and a deep stack of CTEs recurse deeply in the SQL
//! parser, DataFusion's planner and optimizer and relspec's own walks.

mod common;
use common::*;
use std::fmt::Write as _;

/// A workspace of `n` one-row rules and a rule `all_rules` that unions them.
fn union_workspace(n: usize) -> tempfile::TempDir {
    let mut toml = String::from(
        "[workspace]\nname = \"deep\"\ninclude = [\"rules/*.sql\"]\n\n\
         [datasets.seed]\npath = \"data/seed.csv\"\nformat = \"csv\"\n\n",
    );
    for i in 0..n {
        let _ = writeln!(toml, "[rules.r{i}]\nsql = \"SELECT id + {i} AS id, {i} AS src FROM seed\"\n");
    }
    let union: Vec<String> = (0..n).map(|i| format!("SELECT id, src FROM r{i}")).collect();
    workspace_with(&[
        ("workspace.toml", &toml),
        ("data/seed.csv", "id\n1\n2\n"),
        ("rules/all_rules.sql", &union.join("\nUNION ALL\n")),
    ])
}

/// The union's rows, computed independently: rule i yields ids 1+i and 2+i.
fn expected_union(n: usize) -> Vec<Vec<String>> {
    let mut rows: Vec<(i64, i64)> = (0..n as i64).flat_map(|i| [(1 + i, i), (2 + i, i)]).collect();
    rows.sort();
    rows.into_iter().map(|(a, b)| vec![a.to_string(), b.to_string()]).collect()
}

#[test]
fn union_of_1000_rules_builds() {
    let n = 1000;
    let ws = union_workspace(n);
    let root = ws.path();
    ok(root, &["check"]);
    ok(root, &["build", "--select", "+all_rules"]);
    assert_eq!(read_rows(&out(root, "all_rules")), expected_union(n));
}

#[test]
fn union_of_100_rules_builds_and_explains() {
    let n = 100;
    let ws = union_workspace(n);
    let root = ws.path();
    ok(root, &["build"]);
    assert_eq!(read_rows(&out(root, "all_rules")), expected_union(n));
    let explained = ok(root, &["explain", "all_rules"]);
    assert!(explained.contains("Union"), "{explained}");
    ok(root, &["lineage", "all_rules.id"]);
}

#[test]
fn deeply_nested_expressions_and_ctes_build() {
    let depth = 1000;
    // 1 + (1 + (1 + ...)) as nested parentheses, and a chain of CTEs.
    let nested = format!("{}id{}", "(1 + ".repeat(depth), ")".repeat(depth));
    let mut ctes = String::from("WITH c0 AS (SELECT id FROM seed)");
    for i in 1..200 {
        let _ = write!(ctes, ", c{i} AS (SELECT id + 1 AS id FROM c{})", i - 1);
    }
    ctes.push_str(" SELECT id FROM c199");
    let ws = workspace_with(&[
        (
            "workspace.toml",
            "[workspace]\nname = \"deep\"\ninclude = [\"rules/*.sql\"]\n\n[datasets.seed]\npath = \"data/seed.csv\"\nformat = \"csv\"\n",
        ),
        ("data/seed.csv", "id\n1\n2\n"),
        ("rules/nested.sql", &format!("SELECT {nested} AS v FROM seed")),
        ("rules/ctes.sql", &ctes),
    ]);
    let root = ws.path();
    let (code, stdout, stderr) = run(root, &["build"]);
    assert!(!stderr.contains("overflowed its stack"), "{stderr}");
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v: Vec<String> = read_rows(&out(root, "nested")).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(v, vec![(1 + depth).to_string(), (2 + depth).to_string()]);
    let c: Vec<String> = read_rows(&out(root, "ctes")).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(c, vec!["200".to_string(), "201".to_string()]);
}

/// Past the parser's nesting limit, a rule fails with a diagnostic that
/// names it; the process does not abort and other rules still build.
#[test]
fn nesting_past_the_limit_is_a_diagnostic() {
    let depth = 20_000;
    let nested = format!("{}id{}", "(".repeat(depth), ")".repeat(depth));
    let ws = workspace_with(&[
        (
            "workspace.toml",
            "[workspace]\nname = \"deep\"\ninclude = [\"rules/*.sql\"]\n\n[datasets.seed]\npath = \"data/seed.csv\"\nformat = \"csv\"\n",
        ),
        ("data/seed.csv", "id\n1\n2\n"),
        ("rules/too_deep.sql", &format!("SELECT {nested} AS v FROM seed")),
    ]);
    let (code, stdout, stderr) = run(ws.path(), &["check"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("rule `too_deep`") && stderr.contains("recursion limit"), "{stderr}");
}
