//! Partition-level incrementality (`incremental = { by }`): after a change
//! to some partitions of the input, only those are recomputed, merged into
//! the previous output, and every published byte equals a clean build's.

mod common;

use std::path::Path;

const MANIFEST: &str = r#"
[workspace]
name = "parts"

[datasets.events]
path = "data/events"
format = "csv"
[datasets.events.scan]
partition_cols = { day = "string" }

[datasets.users]
path = "data/users.csv"

# Per partition: an aggregate whose keys include the partition key.
[rules.by_day]
sql = "SELECT day, user_id, sum(v) AS total, count(*) AS n FROM events GROUP BY day, user_id"
incremental = { by = "events" }

# Per partition: a join with another dataset.
[rules.named]
sql = """
SELECT e.day, e.id, u.name, e.v
FROM events AS e JOIN users AS u ON u.user_id = e.user_id
"""
incremental = { by = "events" }

# Per partition of an incremental rule.
[rules.doubled]
from = "by_day"
steps = [{ filter = "n > 0" }, { select = ["day", "user_id", "total * 2 AS t2"] }]
incremental = { by = "by_day" }

# A whole-rule reader downstream.
[rules.totals]
sql = "SELECT count(*) AS days, sum(t2) AS t FROM doubled"
"#;

fn events_csv(seed: u64, rows: u64) -> String {
    let mut s = String::from("id,user_id,v\n");
    for i in 0..rows {
        s.push_str(&format!("{},{},{}\n", seed * 1000 + i, (seed + i) % 5, (seed * 7 + i * 3) % 11));
    }
    s
}

fn workspace(days: u64) -> tempfile::TempDir {
    let ws = common::workspace_with(&[
        ("workspace.toml", MANIFEST),
        ("data/users.csv", "user_id,name\n0,ann\n1,bob\n2,cy\n3,dee\n4,eve\n"),
    ]);
    for d in 0..days {
        common::write(ws.path(), &format!("data/events/day={d:03}/part.csv"), &events_csv(d, 4 + d % 3));
    }
    ws
}

fn report(root: &Path) -> serde_json::Value {
    serde_json::from_str(&common::ok(root, &["build", "--json"])).unwrap()
}

/// Per rule: (status, partitions ran, partitions whose rows changed).
fn runs(v: &serde_json::Value) -> std::collections::BTreeMap<String, (String, Option<u64>, Option<u64>)> {
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let p = &r["partitions"];
            (
                r["rule"].as_str().unwrap().to_string(),
                (r["status"].as_str().unwrap().to_string(), p["ran"].as_u64(), p["changed"].as_u64()),
            )
        })
        .collect()
}

fn assert_equals_clean(root: &Path) {
    common::assert_equals_clean_build(root, &["by_day", "named", "doubled", "totals"]);
}

fn st(s: &str, ran: Option<u64>, changed: Option<u64>) -> (String, Option<u64>, Option<u64>) {
    (s.to_string(), ran, changed)
}

#[test]
fn one_changed_partition_is_recomputed_and_merged() {
    let ws = workspace(20);
    let root = ws.path();
    let first = runs(&report(root));
    assert_eq!(first["by_day"], st("built", None, None), "a first build computes everything");

    // Edit one partition: `status` says what a build would do, then it does it.
    common::write(root, "data/events/day=007/part.csv", &events_csv(99, 6));
    let status = common::ok(root, &["status"]);
    assert!(status.contains("would recompute 1 of 20 partitions of `events`"), "{status}");
    let v = report(root);
    let r = runs(&v);
    assert_eq!(r["by_day"], st("built", Some(1), Some(1)), "{v}");
    assert_eq!(r["named"], st("built", Some(1), Some(1)), "{v}");
    assert_eq!(r["doubled"], st("built", Some(1), Some(1)), "from by_day's delta: {v}");
    assert_eq!(r["totals"].0, "built");
    let reasons = v["rules"][0]["reasons"].to_string();
    assert!(reasons.contains("recomputed 1 of 20 partitions of `events`"), "{reasons}");
    let e = common::ok(root, &["explain", "by_day"]);
    assert!(e.contains("PartialMerge"), "{e}");
    assert_equals_clean(root);

    // A new partition, then a deleted one.
    common::write(root, "data/events/day=100/part.csv", &events_csv(100, 3));
    let r = runs(&report(root));
    assert_eq!(r["by_day"], st("built", Some(1), Some(1)));
    assert_equals_clean(root);
    std::fs::remove_dir_all(root.join("data/events/day=003")).unwrap();
    let r = runs(&report(root));
    assert_eq!(r["by_day"], st("built", Some(0), Some(1)), "a deleted partition is retracted");
    assert_eq!(r["doubled"], st("built", Some(1), Some(1)));
    assert_equals_clean(root);
}

#[test]
fn an_unchanged_partition_output_stops_propagation() {
    let ws = workspace(10);
    let root = ws.path();
    report(root);
    // Same rows in another order: the file changed, by_day's rows did not.
    let text = events_csv(4, 4 + 4 % 3);
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    common::write(root, "data/events/day=004/part.csv", &(lines.join("\n") + "\n"));
    let r = runs(&report(root));
    assert_eq!(r["by_day"], st("built", Some(1), Some(0)), "recomputed, no rows changed");
    assert_eq!(r["doubled"].0, "reused", "early cutoff: same data, same key");
    assert_eq!(r["totals"].0, "reused");
    assert_equals_clean(root);
}

#[test]
fn a_change_to_another_input_or_the_rule_recomputes_everything() {
    let ws = workspace(10);
    let root = ws.path();
    report(root);
    common::write(root, "data/users.csv", "user_id,name\n0,ann\n1,bob\n2,cy\n3,dee\n4,eva\n");
    let r = runs(&report(root));
    assert_eq!(r["named"], st("built", None, None), "users changed: every partition");
    assert_eq!(r["by_day"].0, "reused");
    assert_equals_clean(root);
    // The rule itself changed.
    let m = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    common::write(root, "workspace.toml", &m.replace("sum(v) AS total", "sum(v) + 1 AS total"));
    common::write(root, "data/events/day=002/part.csv", &events_csv(50, 5));
    let r = runs(&report(root));
    assert_eq!(r["by_day"], st("built", None, None));
    assert_eq!(r["named"], st("built", Some(1), Some(1)));
    assert_equals_clean(root);
}

/// A build that fails on one partition's bad input keeps the last good
/// output published and remains the base of the next build: once the input
/// is mended, only that partition is recomputed (not every partition, as if
/// the rule had never been built).
#[test]
fn a_failed_build_leaves_the_last_output_as_the_base_of_the_next() {
    let ws = workspace(10);
    let root = ws.path();
    // `v` is never -1 but in the bad input: division by zero, when executing.
    common::write(root, "workspace.toml", &MANIFEST.replace("sum(v) AS total", "sum(60 / (v + 1)) AS total"));
    report(root);
    let published = std::fs::read(common::out(root, "by_day")).unwrap();
    common::write(root, "data/events/day=005/part.csv", "id,user_id,v\n1,2,3\n4,0,-1\n");
    let err = common::fails(root, &["build"]);
    assert!(err.contains("rule `by_day`") && err.contains("Divide by zero"), "{err}");
    assert_eq!(std::fs::read(common::out(root, "by_day")).unwrap(), published, "the last good output stays");
    common::write(root, "data/events/day=005/part.csv", &events_csv(77, 5));
    let v = report(root);
    let r = runs(&v);
    assert_eq!(r["by_day"], st("built", Some(1), Some(1)), "one partition, spliced into the last good output: {v}");
    assert_equals_clean(root);
}

#[test]
fn many_steps_of_partition_edits_equal_clean_builds() {
    // Deterministic pseudo-random edits, additions and deletions.
    let ws = workspace(12);
    let root = ws.path();
    report(root);
    let mut partial = 0;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..6 {
        for _ in 0..(1 + next() % 2) {
            let d = next() % 16;
            let dir = root.join(format!("data/events/day={d:03}"));
            match next() % 3 {
                0 if dir.exists() => std::fs::remove_dir_all(&dir).unwrap(),
                1 => common::write(root, &format!("data/events/day={d:03}/part.csv"), "id,user_id,v\n"),
                _ => common::write(
                    root,
                    &format!("data/events/day={d:03}/part.csv"),
                    &events_csv(next() % 50, 1 + next() % 6),
                ),
            }
        }
        let r = runs(&report(root));
        partial += usize::from(r["by_day"].1.is_some());
        eprintln!("step {step}: {r:?}");
        assert_equals_clean(root);
    }
    assert!(partial >= 3, "most steps were partial builds ({partial} of 6)");
}

/// Hive directory values are matched to rows as DataFusion reads them
/// (percent-decoded; the default-partition name kept), so an edit of an
/// escaped partition replaces its rows.
#[test]
fn escaped_hive_values_are_partitions_too() {
    let manifest = r#"
[workspace]
name = "escaped"

[datasets.ev]
path = "ev"
format = "csv"
[datasets.ev.scan]
partition_cols = { lang = "string" }

[rules.per_lang]
sql = "SELECT lang, id, v FROM ev"
incremental = { by = "ev" }

# A filter on an escaped value reads the escaped directory.
[rules.cpp_only]
sql = "SELECT lang, id FROM ev WHERE lang = 'c++' OR lang IN ('a b', 'été')"
"#;
    let dirs = ["c%2B%2B", "a b", "__HIVE_DEFAULT_PARTITION__", "%C3%A9t%C3%A9", "py", "rs"];
    let ws = common::workspace_with(&[("workspace.toml", manifest)]);
    let root = ws.path();
    for (k, d) in dirs.iter().enumerate() {
        common::write(root, &format!("ev/lang={d}/p.csv"), &format!("id,v\n{k},{}\n", k * 10));
    }
    report(root);
    let langs: Vec<String> =
        common::read_rows(&common::out(root, "cpp_only")).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(langs, ["a b", "c++", "été"]);
    for (k, d) in dirs.iter().enumerate().take(4) {
        common::write(root, &format!("ev/lang={d}/p.csv"), &format!("id,v\n{k},{}\n{},1\n", k * 10 + 1, k + 100));
        let v = report(root);
        assert_eq!(runs(&v)["per_lang"], st("built", Some(1), Some(1)), "{d}: {v}");
        common::assert_equals_clean_build(root, &["per_lang", "cpp_only"]);
    }
}

/// Two partition columns (`year=/month=`): a partition is the pair, the
/// rule's plan runs over it alone, and its rows are found by both columns.
#[test]
fn two_partition_columns_make_one_partition_key() {
    let manifest = r#"
[workspace]
name = "two-cols"

[datasets.sales]
path = "sales"
format = "csv"
[datasets.sales.scan]
partition_cols = { year = "int", month = "string" }

[rules.monthly]
sql = "SELECT year, month, shop, sum(amount) AS total FROM sales GROUP BY year, month, shop"
incremental = { by = "sales" }

[rules.big]
from = "monthly"
steps = [{ filter = "total > 20" }]
incremental = { by = "monthly" }
"#;
    let ws = common::workspace_with(&[("workspace.toml", manifest)]);
    let root = ws.path();
    let csv = |seed: usize| {
        let mut s = String::from("shop,amount\n");
        for i in 0..5 {
            s.push_str(&format!("s{},{}\n", (seed + i) % 3, (seed * 7 + i * 5) % 17));
        }
        s
    };
    for y in [2024, 2025] {
        for m in ["01", "02", "03"] {
            common::write(root, &format!("sales/year={y}/month={m}/part.csv"), &csv(y + m.len()));
        }
    }
    report(root);
    // The same month of another year is another partition.
    common::write(root, "sales/year=2025/month=02/part.csv", &csv(99));
    let r = runs(&report(root));
    assert_eq!(r["monthly"], st("built", Some(1), Some(1)));
    assert_eq!(r["big"].0, "built");
    common::assert_equals_clean_build(root, &["monthly", "big"]);
    // A new partition and a deleted one in one build.
    common::write(root, "sales/year=2026/month=01/part.csv", &csv(5));
    std::fs::remove_dir_all(root.join("sales/year=2024/month=03")).unwrap();
    let r = runs(&report(root));
    assert_eq!(r["monthly"], st("built", Some(1), Some(2)));
    common::assert_equals_clean_build(root, &["monthly", "big"]);
}

/// An output of many row groups is spliced: after a partition edit, a new
/// partition, a deleted one and edits at both ends of the key order, only
/// the row groups around the change are re-encoded, the others are copied
/// byte for byte, and every published byte equals a clean build's.
#[test]
fn large_outputs_copy_the_row_groups_a_change_does_not_touch() {
    // The shared manifest: `named` leads with the partition key.
    let ws = common::workspace_with(&[
        ("workspace.toml", MANIFEST),
        ("data/users.csv", "user_id,name\n0,ann\n1,bob\n2,cy\n3,dee\n4,eve\n"),
    ]);
    let root = ws.path();
    for d in 0..240 {
        common::write(root, &format!("data/events/day={d:03}/part.csv"), &events_csv(d, 250));
    }
    report(root);
    type Step = (&'static str, Box<dyn Fn(&Path)>);
    let steps: Vec<Step> = vec![
        (
            "edit a middle partition",
            Box::new(|r| common::write(r, "data/events/day=120/part.csv", &events_csv(900, 240))),
        ),
        ("add a partition", Box::new(|r| common::write(r, "data/events/day=500/part.csv", &events_csv(500, 250)))),
        ("delete a partition", Box::new(|r| std::fs::remove_dir_all(r.join("data/events/day=010")).unwrap())),
        (
            "edit the first partition",
            Box::new(|r| common::write(r, "data/events/day=000/part.csv", &events_csv(901, 300))),
        ),
        (
            "edit the last partition",
            Box::new(|r| common::write(r, "data/events/day=500/part.csv", &events_csv(902, 10))),
        ),
    ];
    for (what, step) in steps {
        step(root);
        let r = runs(&report(root));
        assert_eq!(r["named"].0, "built", "{what}");
        assert_eq!(r["named"].1, Some(u64::from(what != "delete a partition")), "{what}: one partition ran");
        let e = common::ok(root, &["explain", "named"]);
        let (copied, encoded) = common::spliced_groups(&e).unwrap_or_else(|| panic!("{what}: not spliced: {e}"));
        assert!(copied >= 2 && copied > encoded, "{what}: {copied} row groups copied, {encoded} re-encoded");
        common::assert_equals_clean_build(root, &["named"]);
    }
}
