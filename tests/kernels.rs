//! The kernel bridge: each kernel in each of its lanes against an
//! independent oracle, lane choice and lane diagnostics.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

fn report(root: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(root, &["build", "--json"])).unwrap()
}

/// The bytes of a Parquet file before its footer: every data page.
fn pages(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let n = b.len();
    let footer = u32::from_le_bytes(b[n - 8..n - 4].try_into().unwrap()) as usize;
    b[..n - 8 - footer].to_vec()
}

const ITEMS: &str = r#"{"id": 1, "tags": ["b", "a"], "w": 10}
{"id": 2, "tags": [], "w": 20}
{"id": 3, "tags": null, "w": 30}
{"id": 4, "tags": ["c", null, "c"], "w": 40}
{"id": 5, "tags": ["d"], "w": 50}
{"id": 1, "tags": ["z"], "w": 60}
"#;

/// The oracle: (id, tag, w) per element of each non-null list, from the JSON.
fn explode_oracle() -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for l in ITEMS.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for t in v["tags"].as_array().into_iter().flatten() {
            let tag = t.as_str().map(str::to_string).unwrap_or_default();
            rows.push(vec![v["id"].to_string(), tag, v["w"].to_string()]);
        }
    }
    rows.sort();
    rows
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

#[test]
fn explode_lanes_agree_with_the_oracle_and_each_other() {
    let ws = workspace_with(&[
        ("data/items.json", ITEMS),
        (
            "workspace.toml",
            r#"[workspace]
name = "k"
[datasets.items]
path = "data/items.json"
[rules.ex_builtin]
from = "items"
steps = [{ explode = "tags" }, { select = ["id", "tags AS tag", "w"] }]
[rules.ex_fallback]
from = "items"
steps = [{ explode = { column = "tags", lane = "arrow_fallback" } }, { select = ["id", "tags AS tag", "w"] }]
[rules.ex_alias]
from = "items"
steps = [{ explode = { column = "tags", as = "tag" } }, { select = ["id", "tag", "w"] }]
[rules.ex_function]
sql = "SELECT id, tag, w FROM explode('items', 'tags', 'tag')"
"#,
        ),
    ]);
    let root = ws.path();
    let v = report(root);
    let oracle = explode_oracle();
    assert_eq!(oracle.len(), 7);
    for rule in ["ex_builtin", "ex_fallback", "ex_alias", "ex_function"] {
        assert_eq!(sorted(read_rows(&out(root, rule))), oracle, "{rule}");
        assert_eq!(column_names(&out(root, rule)), ["id", "tag", "w"], "{rule}");
    }
    // Both lanes write the same data pages and schema, byte for byte.
    assert_eq!(pages(&out(root, "ex_builtin")), pages(&out(root, "ex_fallback")));
    assert_eq!(sidecar(root, "ex_builtin")["data_hash"], sidecar(root, "ex_fallback")["data_hash"]);
    assert_eq!(sidecar(root, "ex_builtin")["schema"], sidecar(root, "ex_fallback")["schema"]);
    // Lane diagnostics.
    let lanes: BTreeMap<&str, &serde_json::Value> =
        v["rules"].as_array().unwrap().iter().map(|r| (r["rule"].as_str().unwrap(), &r["kernels"][0])).collect();
    assert_eq!(lanes["ex_builtin"]["kernel"], "explode");
    assert_eq!(lanes["ex_builtin"]["lane"], "builtin");
    assert_eq!(lanes["ex_fallback"]["lane"], "arrow_fallback");
    assert_eq!(
        lanes["ex_fallback"]["detail"].as_str().unwrap(),
        "forced by the rule; column `tags` of type List(Utf8)"
    );
    assert_eq!(lanes["ex_function"]["kernel"], "explode");
    let plan = ok(root, &["explain", "ex_fallback"]);
    assert!(plan.contains("RelspecArrowFallbackExec: kernel=explode"), "{plan}");
    assert!(plan.contains("explode v1: lane arrow_fallback"), "{plan}");
}

#[test]
fn a_lane_a_kernel_lacks_or_a_non_list_is_a_clear_error() {
    let ws = workspace_with(&[
        ("data/items.json", ITEMS),
        (
            "workspace.toml",
            r#"[workspace]
name = "k"
[datasets.items]
path = "data/items.json"
[rules.bad_lane]
from = "items"
steps = [{ explode = { column = "tags", lane = "native_udf" } }]
[rules.not_a_list]
from = "items"
steps = [{ explode = "w" }]
[rules.no_column]
from = "items"
steps = [{ explode = "tgas" }]
"#,
        ),
    ]);
    let msg = fails(ws.path(), &["check"]);
    assert!(msg.contains("rule `bad_lane`"), "{msg}");
    assert!(msg.contains("explode has no lane `native_udf`; its lanes are builtin, arrow_fallback"), "{msg}");
    assert!(msg.contains("rule `not_a_list`"), "{msg}");
    assert!(msg.contains("column type Int64 is not a list this lane explodes"), "{msg}");
    assert!(msg.contains("explode: no column `tgas` (did you mean `tags`?)"), "{msg}");
    let t = std::fs::read_to_string(ws.path().join("workspace.toml")).unwrap();
    write(ws.path(), "workspace.toml", &t.replace("lane = \"native_udf\"", "lane = \"gpu\""));
    let msg = fails(ws.path(), &["check"]);
    assert!(msg.contains("unknown lane `gpu`; lanes are builtin, native_udf, arrow_fallback"), "{msg}");
}

/// A small deterministic generator (no rand dependency in the oracle).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> i64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n) as i64
    }
}

#[test]
fn interval_align_finds_the_innermost_enclosing_span() {
    let mut g = Lcg(7);
    let mut spans = String::from("file,start,stop,name\n");
    let mut span_rows = Vec::new();
    for i in 0..150 {
        let file = g.next(3);
        let start = g.next(100);
        let stop = start + g.next(40);
        // Some exact duplicates of a span under another name: ties on width.
        let name = format!("s{i:03}");
        span_rows.push((file, start, stop, name.clone()));
        spans.push_str(&format!("{file},{start},{stop},{name}\n"));
        if i % 25 == 0 {
            let twin = format!("t{i:03}");
            span_rows.push((file, start, stop, twin.clone()));
            spans.push_str(&format!("{file},{start},{stop},{twin}\n"));
        }
    }
    let mut points = String::from("pid,file,lo,hi\n");
    let mut point_rows = Vec::new();
    for pid in 0..300 {
        let file = g.next(4); // file 3 has no spans: no match, nulls
        let lo = g.next(140);
        let hi = lo + g.next(5);
        point_rows.push((pid, file, lo, hi));
        points.push_str(&format!("{pid},{file},{lo},{hi}\n"));
    }
    // The oracle: per point, the enclosing span of smallest width, ties by
    // (file, start, stop, name) ascending.
    let mut expected: Vec<Vec<String>> = point_rows
        .iter()
        .map(|&(pid, file, lo, hi)| {
            let best = span_rows
                .iter()
                .filter(|s| s.0 == file && s.1 <= lo && hi <= s.2)
                .min_by(|a, b| (a.2 - a.1, a.0, a.1, a.2, &a.3).cmp(&(b.2 - b.1, b.0, b.1, b.2, &b.3)));
            vec![pid.to_string(), best.map(|s| s.3.clone()).unwrap_or_default()]
        })
        .collect();
    expected.sort();
    let ws = workspace_with(&[
        ("data/spans.csv", &spans),
        ("data/points.csv", &points),
        (
            "workspace.toml",
            r#"[workspace]
name = "k"
[datasets.spans]
path = "data/spans.csv"
[datasets.points]
path = "data/points.csv"
[rules.aligned]
from = "points"
steps = [
  { interval_align = { table = "spans", on = "spans.file = points.file", left = ["points.lo", "points.hi"], right = ["spans.start", "spans.stop"] } },
  { select = ["points.pid", "spans.name"] },
]
"#,
        ),
    ]);
    let root = ws.path();
    let v = report(root);
    assert_eq!(sorted(read_rows(&out(root, "aligned"))), expected);
    assert!(expected.iter().any(|r| r[1].is_empty()), "some points have no enclosing span");
    let k = &v["rules"][0]["kernels"][0];
    assert_eq!(k["kernel"], "interval_align");
    assert_eq!(k["lane"], "builtin");
    assert!(k["ordering"].as_str().unwrap().contains("width ascending"), "{k}");
}

#[test]
fn stable_dedupe_keeps_the_first_row_under_a_total_order() {
    let mut g = Lcg(11);
    let mut csv = String::from("k,score,v\n");
    let mut rows = Vec::new();
    for _ in 0..400 {
        let (k, score, v) = (g.next(40), g.next(5), g.next(1000));
        rows.push((k, score, v));
        csv.push_str(&format!("{k},{score},{v}\n"));
    }
    // Oracle: per k, highest score, then smallest v.
    let mut best: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for &(k, s, v) in &rows {
        let e = best.entry(k).or_insert((s, v));
        if (s, -v) > (e.0, -e.1) {
            *e = (s, v);
        }
    }
    let mut expected: Vec<Vec<String>> =
        best.iter().map(|(k, (s, v))| vec![k.to_string(), s.to_string(), v.to_string()]).collect();
    expected.sort();
    let ws = workspace_with(&[
        ("data/t.csv", &csv),
        (
            "workspace.toml",
            r#"[workspace]
name = "k"
[profile]
target_partitions = 3
[datasets.t]
path = "data/t.csv"
[rules.deduped]
from = "t"
steps = [{ stable_dedupe = { partition_by = ["k"], order_by = ["score DESC"] } }]
[rules.winner_alias]
from = "t"
steps = [{ winner = { partition_by = ["k"], order_by = ["score DESC"] } }]
"#,
        ),
    ]);
    let root = ws.path();
    let v = report(root);
    assert_eq!(sorted(read_rows(&out(root, "deduped"))), expected);
    assert_eq!(pages(&out(root, "deduped")), pages(&out(root, "winner_alias")));
    let k = &v["rules"][0]["kernels"][0];
    assert_eq!(k["kernel"], "stable_dedupe");
    assert_eq!(k["volatility"], "immutable");
    assert!(k["ordering"].as_str().unwrap().contains("score DESC"), "{k}");
}

/// An oracle for normalize_path through std's path components.
fn normalize_oracle(p: &str) -> String {
    use std::path::Component;
    let mut out: Vec<String> = Vec::new();
    let abs = p.starts_with('/');
    for c in Path::new(p).components() {
        match c {
            Component::ParentDir if out.last().is_some_and(|l| l != "..") => {
                out.pop();
            }
            Component::ParentDir if !abs => out.push("..".into()),
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    let j = out.join("/");
    if abs {
        format!("/{j}")
    } else if j.is_empty() {
        ".".into()
    } else {
        j
    }
}

#[test]
fn normalize_path_matches_the_oracle_in_sql() {
    let paths =
        ["./a//b/../c", "/x/../../y", "../a", "a/..", "a/./b/", "../../x/y/..", "/", "src/app/../lib//util.py", "a"];
    let mut csv = String::from("id,path\n");
    for (i, p) in paths.iter().enumerate() {
        csv.push_str(&format!("{i},{p}\n"));
    }
    let ws = workspace_with(&[
        ("data/p.csv", &csv),
        (
            "workspace.toml",
            "[workspace]\nname = \"k\"\n[datasets.p]\npath = \"data/p.csv\"\n\
             [rules.n]\nsql = \"SELECT id, normalize_path(path) AS norm FROM p\"\n",
        ),
    ]);
    let root = ws.path();
    let v = report(root);
    let got = read_rows(&out(root, "n"));
    for r in &got {
        let p = paths[r[0].parse::<usize>().unwrap()];
        assert_eq!(r[1], normalize_oracle(p), "{p}");
    }
    assert_eq!(got.len(), paths.len());
    assert_eq!(v["rules"][0]["kernels"][0]["kernel"], "normalize_path");
    assert_eq!(v["rules"][0]["kernels"][0]["lane"], "native_udf");
}

#[test]
fn every_kernel_use_in_the_default_workspace_has_lane_diagnostics() {
    let ws = default_workspace();
    let root = ws.path();
    let v = report(root);
    let uses = |rule: &str| -> Vec<(String, String)> {
        let r = v["rules"].as_array().unwrap().iter().find(|r| r["rule"] == rule).unwrap();
        r["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["kernel"].as_str().unwrap().to_string(), k["lane"].as_str().unwrap().to_string()))
            .collect()
    };
    let pair = |k: &str, l: &str| (k.to_string(), l.to_string());
    assert_eq!(uses("calls"), [pair("stable_dedupe", "builtin")]);
    assert_eq!(uses("edges"), [pair("normalize_path", "native_udf")]);
    assert_eq!(uses("path_segments"), [pair("explode", "builtin"), pair("normalize_path", "native_udf")]);
    assert_eq!(uses("callsite_scopes"), [pair("interval_align", "builtin")]);
    for r in v["rules"].as_array().unwrap() {
        // (A rule without kernels has no `kernels` field.)
        for k in r["kernels"].as_array().into_iter().flatten() {
            assert_eq!(k["volatility"], "immutable", "{k}");
            assert_eq!(k["version"], 1, "{k}");
            assert!(!k["function"].as_str().unwrap().is_empty(), "{k}");
        }
    }
    // The run bundle and the artifacts carry them too.
    let runs = root.join("cache/runs");
    let bundle = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    assert_eq!(b["rules"]["callsite_scopes"]["kernels"][0]["kernel"], "interval_align");
    let art = b["rules"]["edges"]["artifact"].as_str().unwrap();
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cache").join(art)).unwrap()).unwrap();
    assert_eq!(a["kernels"][0]["kernel"], "normalize_path");
    // And explain, for a rule that was reused.
    let e = ok(root, &["explain", "edges"]);
    assert!(e.contains("normalize_path v1: lane native_udf"), "{e}");
}

#[test]
fn interval_align_of_a_table_with_itself_finds_parents() {
    let mut g = Lcg(3);
    let mut csv = String::from("id,file,start,stop\n");
    let mut defs = Vec::new();
    for id in 0..120 {
        let file = g.next(2);
        let start = g.next(200);
        let stop = start + g.next(60);
        defs.push((id, file, start, stop));
        csv.push_str(&format!("{id},{file},{start},{stop}\n"));
    }
    // Oracle: the innermost other definition enclosing each one; ties by (id, file, start, stop).
    let mut expected: Vec<Vec<String>> = defs
        .iter()
        .map(|&(id, file, s, e)| {
            let parent = defs
                .iter()
                .filter(|o| o.0 != id && o.1 == file && o.2 <= s && e <= o.3)
                .min_by_key(|o| (o.3 - o.2, o.0, o.1, o.2, o.3));
            vec![id.to_string(), parent.map(|p| p.0.to_string()).unwrap_or_default()]
        })
        .collect();
    expected.sort();
    let ws = workspace_with(&[
        ("data/defs.csv", &csv),
        (
            "workspace.toml",
            r#"[workspace]
name = "k"
[datasets.defs]
path = "data/defs.csv"
[rules.parents]
from = "defs"
steps = [
  { interval_align = { table = "defs", as = "outer", on = "outer.file = defs.file AND outer.id <> defs.id", left = ["defs.start", "defs.stop"], right = ["outer.start", "outer.stop"] } },
  { select = ["defs.id", "outer.id AS parent"] },
]
"#,
        ),
    ]);
    ok(ws.path(), &["build"]);
    assert_eq!(sorted(read_rows(&out(ws.path(), "parents"))), expected);
    assert!(expected.iter().any(|r| !r[1].is_empty()) && expected.iter().any(|r| r[1].is_empty()));
}
