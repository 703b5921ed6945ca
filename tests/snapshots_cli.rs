//! Snapshot tests of user-facing output: diagnostics and reports.

mod common;
use common::*;

/// Replace the temp dir path and timings so snapshots are stable.
fn scrub(s: &str, root: &std::path::Path) -> String {
    let s = s.replace(&root.display().to_string(), "[ROOT]");
    // A timing becomes `[T]` together with its padding (a right-aligned
    // column is one space wider below 10 ms than above).
    let re_ms = |line: &str| -> String {
        let mut out: Vec<&str> = Vec::new();
        for w in line.split(' ') {
            if w.parse::<f64>().is_ok() && w.contains('.') {
                while out.last() == Some(&"") {
                    out.pop();
                }
                out.push("[T]");
            } else {
                out.push(w);
            }
        }
        out.join(" ")
    };
    s.lines().map(re_ms).collect::<Vec<_>>().join("\n")
}

#[test]
fn diagnostics_snapshot() {
    let ws = default_workspace();
    let root = ws.path();
    let edges = std::fs::read_to_string(root.join("rules/edges.sql")).unwrap();
    std::fs::write(root.join("rules/edges.sql"), edges.replace("FROM cst_defs AS d", "FROM cst_deffs AS d")).unwrap();
    let mut t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    t.push_str("\n[rules.loop_a]\nsql = \"SELECT * FROM loop_b\"\n\n[rules.loop_b]\nsql = \"SELECT * FROM loop_a WHERE x > $treshold\"\n");
    std::fs::write(root.join("workspace.toml"), t).unwrap();
    let (code, _out, err) = run(root, &["check"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(scrub(&err, root));
}

#[test]
fn build_report_snapshot() {
    let ws = default_workspace();
    let root = ws.path();
    ok(root, &["build"]);
    let stats = std::fs::read_to_string(root.join("rules/stats.toml")).unwrap();
    std::fs::write(root.join("rules/stats.toml"), stats.replace("count(*) AS calls", "count(*) + 1 AS calls")).unwrap();
    let out = ok(root, &["build"]);
    insta::assert_snapshot!(scrub(&out, root));
}
