//! Published outputs: streamed, deterministic Parquet with provenance in the
//! footer and a sidecar next to each file.

mod common;
use common::*;
use relspec_core::datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use std::collections::BTreeMap;
use std::path::Path;

/// Key-value metadata of a Parquet file's footer.
fn footer(path: &Path) -> BTreeMap<String, String> {
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    r.metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| kv.iter().map(|k| (k.key.clone(), k.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default()
}

#[test]
fn footer_and_sidecar_say_where_an_output_came_from() {
    let ws = default_workspace();
    let root = ws.path();
    let report: serde_json::Value = serde_json::from_str(&ok(root, &["build", "--json"])).unwrap();
    for r in report["rules"].as_array().unwrap() {
        let rule = r["rule"].as_str().unwrap();
        let f = footer(&out(root, rule));
        let s = sidecar(root, rule);
        assert_eq!(f["relspec.key"], r["key"].as_str().unwrap(), "{rule}");
        assert_eq!(s["key"], r["key"], "{rule}");
        assert_eq!(f["relspec.rule"], rule);
        assert_eq!(s["signature"].as_str().unwrap(), f["relspec.signature"]);
        assert_eq!(s["engine"].as_str().unwrap(), f["relspec.engine"]);
        assert_eq!(f["relspec.version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(s["relspec_version"], env!("CARGO_PKG_VERSION"));
        let inputs: serde_json::Value = serde_json::from_str(&f["relspec.inputs"]).unwrap();
        assert_eq!(inputs, s["inputs"], "{rule}");
        assert_eq!(s["rows"].as_u64().unwrap() as usize, read_rows(&out(root, rule)).len(), "{rule}");
        let names: Vec<&str> = s["schema"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, column_names(&out(root, rule)));
        let bytes = std::fs::read(out(root, rule)).unwrap();
        assert_eq!(s["content_hash"], blake3::hash(&bytes).to_hex().to_string());
    }
    // Inputs: datasets by fingerprint, upstream rules by the data hash of their outputs.
    let calls = sidecar(root, "calls");
    let ups = calls["inputs"]["upstream"].as_object().unwrap();
    assert_eq!(ups.keys().collect::<Vec<_>>(), ["callsite_candidates", "scip_candidates"]);
    assert_eq!(ups["scip_candidates"], sidecar(root, "scip_candidates")["data_hash"]);
    let scip = sidecar(root, "scip_candidates");
    let ds = scip["inputs"]["datasets"].as_object().unwrap();
    assert_eq!(ds.keys().collect::<Vec<_>>(), ["cst_callsites", "scip_occurrences"]);
    let cands = sidecar(root, "callsite_candidates");
    assert_eq!(cands["params"]["langs"], "list:[str:\"python\",str:\"rust\"]");
    assert_eq!(cands["params"]["min_file"], "int:1");
    // A sidecar of a reused output is written from its record, the same bytes.
    let before = std::fs::read(root.join("out/calls.parquet.json")).unwrap();
    std::fs::remove_file(root.join("out/calls.parquet")).unwrap();
    std::fs::remove_file(root.join("out/calls.parquet.json")).unwrap();
    ok(root, &["build"]);
    assert_eq!(std::fs::read(root.join("out/calls.parquet.json")).unwrap(), before);
}

/// Two rules with the same plan do not share an output: each file's footer
/// and sidecar name its own rule, whatever order the build took them in
/// (before, the second reused the first's object, footer and all, when the
/// first happened to finish before the second was decided).
#[test]
fn rules_with_the_same_plan_each_get_their_own_output() {
    let sql = "SELECT kind, count(*) AS n FROM events GROUP BY kind";
    let ws = workspace_with(&[
        ("workspace.toml", "[workspace]\nname = \"twins\"\n\n[datasets.events]\npath = \"data/events.csv\"\n"),
        ("data/events.csv", "id,kind\n1,a\n2,b\n3,a\n"),
    ]);
    let root = ws.path();
    let mut manifest = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    for r in ["a", "b", "c"] {
        manifest.push_str(&format!("\n[rules.{r}]\nsql = \"{sql}\"\n"));
    }
    write(root, "workspace.toml", &manifest);
    for jobs in ["1", "3"] {
        let _ = std::fs::remove_dir_all(root.join("cache"));
        let _ = std::fs::remove_dir_all(root.join("out"));
        let report: serde_json::Value = serde_json::from_str(&ok(root, &["build", "--json", "-j", jobs])).unwrap();
        let keys: std::collections::BTreeSet<&str> =
            report["rules"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert_eq!(keys.len(), 3, "one key per rule: {report}");
        for r in ["a", "b", "c"] {
            assert_eq!(footer(&out(root, r))["relspec.rule"], r);
            assert_eq!(sidecar(root, r)["rule"], r);
            assert_eq!(read_rows(&out(root, r)), read_rows(&out(root, "a")), "the same rows");
        }
    }
}

#[test]
fn sidecar_records_contract_results() {
    let ws = workspace_with(&[
        ("data/t.csv", "id,kind\n1,a\n2,b\n3,a\n"),
        (
            "workspace.toml",
            r#"[workspace]
name = "t"
[datasets.t]
path = "data/t.csv"
[contracts.c]
columns = { id = "bigint" }
unique = ["id"]
accepted_values = { kind = ["a", "b"] }
[rules.r]
sql = "SELECT id, kind FROM t"
produces = "c"
"#,
        ),
    ]);
    let root = ws.path();
    ok(root, &["build"]);
    let s = sidecar(root, "r");
    let checks = s["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{s}");
    assert!(checks.iter().all(|c| c["passed"] == true && c["contract"] == "c"), "{s}");
    assert!(checks.iter().any(|c| c["check"] == "unique(id)"), "{s}");
    // A failing check over the written object: nothing is stored or published.
    let before = std::fs::read(out(root, "r")).unwrap();
    write(root, "data/t.csv", "id,kind\n1,a\n1,b\n3,c\n");
    let msg = fails(root, &["build"]);
    assert!(msg.contains("unique(id): 1 offending row(s)"), "{msg}");
    assert!(msg.contains("accepted_values(kind in ['a', 'b']): 1 offending row(s)"), "{msg}");
    assert_eq!(std::fs::read(out(root, "r")).unwrap(), before, "the last good output stays");
    let tmp: Vec<_> = std::fs::read_dir(root.join("cache/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "the rejected object is removed: {tmp:?}");
}

/// A rule with enough rows for many write chunks and row groups, and a
/// result order unrelated to the generation order.
fn big_workspace(profile: &str) -> tempfile::TempDir {
    workspace_with(&[(
        "workspace.toml",
        &format!(
            r#"[workspace]
name = "big"
[profile]
{profile}
[rules.big]
sql = """
SELECT (value * 7919) % 150000 AS id, value % 7 AS grp,
       concat('label-', CAST((value * 104729) % 1000003 AS VARCHAR)) AS label
FROM range(0, 150000)
"""
"#
        ),
    )])
}

#[test]
fn streamed_outputs_are_byte_identical_across_partitions_batches_and_limits() {
    let profiles = [
        "target_partitions = 1",
        "target_partitions = 2\nbatch_size = 1000",
        "target_partitions = 4\nbatch_size = 777",
        // Under a small limit the sort spills and runs in one partition.
        "target_partitions = 4\nmemory_limit = \"8MiB\"",
        "target_partitions = 2\nbatch_size = 4096",
    ];
    let mut outputs = Vec::new();
    for p in profiles {
        let ws = big_workspace(p);
        ok(ws.path(), &["build"]);
        outputs.push((p, std::fs::read(out(ws.path(), "big")).unwrap()));
        if outputs.len() == 1 {
            let rows = read_rows(&out(ws.path(), "big"));
            assert_eq!(rows.len(), 150_000);
            let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted by id, every id once");
            let r = SerializedFileReader::new(std::fs::File::open(out(ws.path(), "big")).unwrap()).unwrap();
            assert!(r.metadata().num_row_groups() >= 2, "several row groups");
        }
    }
    for (p, bytes) in &outputs[1..] {
        assert!(bytes == &outputs[0].1, "bytes differ under `{p}`");
    }
}

#[test]
fn partition_by_publishes_a_hive_directory() {
    let ws = workspace_with(&[
        ("data/t.csv", "id,lang,path\n1,python,a/b\n2,rust,c\n3,python,d\n4,,e\n5,c++,f\n"),
        (
            "workspace.toml",
            r#"[workspace]
name = "t"
[datasets.t]
path = "data/t.csv"
[rules.whole]
sql = "SELECT id, lang, path FROM t"
[rules.split]
sql = "SELECT id, lang, path FROM t"
partition_by = ["lang"]
"#,
        ),
    ]);
    let root = ws.path();
    ok(root, &["build"]);
    let dir = root.join("out/split");
    let mut parts: Vec<String> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        [
            "_relspec.json",
            "lang=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
            "lang=c%2B%2B/part-0.parquet",
            "lang=python/part-0.parquet",
            "lang=rust/part-0.parquet",
        ]
    );
    assert!(!root.join("out/split.parquet").exists());
    // Files hold the other columns, sorted; their rows are the whole output's rows of that value.
    assert_eq!(column_names(&dir.join("lang=python/part-0.parquet")), ["id", "path"]);
    assert_eq!(read_rows(&dir.join("lang=python/part-0.parquet")), [["1", "a/b"], ["3", "d"]]);
    let whole = read_rows(&out(root, "whole"));
    let rust: Vec<Vec<String>> =
        whole.iter().filter(|r| r[1] == "rust").map(|r| vec![r[0].clone(), r[2].clone()]).collect();
    assert_eq!(read_rows(&dir.join("lang=rust/part-0.parquet")), rust);
    let f = footer(&dir.join("lang=rust/part-0.parquet"));
    assert_eq!(f["relspec.partition"], "lang=rust");
    assert_eq!(f["relspec.rule"], "split");
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("_relspec.json")).unwrap()).unwrap();
    assert_eq!(side["partition_by"], serde_json::json!(["lang"]));
    assert_eq!(side["partitions"].as_array().unwrap().len(), 4);
    // Read back as a hive-partitioned dataset: the same rows as the unpartitioned output.
    let t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    let back = "[datasets.back]\npath = \"out/split\"\nformat = \"parquet\"\n\
                [datasets.back.scan]\npartition_cols = { lang = \"string\" }\n\
                [rules.reread]\nsql = \"SELECT id, lang, path FROM back\"\n";
    write(root, "workspace.toml", &format!("{t}{back}"));
    ok(root, &["build"]);
    // (A null partition value is hive's `__HIVE_DEFAULT_PARTITION__`, which Spark and Hive read
    // as null and DataFusion 55 reads as that string.)
    let hive: Vec<Vec<String>> = whole
        .iter()
        .map(|r| {
            let lang = if r[1].is_empty() { "__HIVE_DEFAULT_PARTITION__".to_string() } else { r[1].clone() };
            vec![r[0].clone(), lang, r[2].clone()]
        })
        .collect();
    assert_eq!(read_rows(&out(root, "reread")), hive);
    write(root, "workspace.toml", &t);
    // A second build republishes nothing: the directory is untouched.
    let before = tree_bytes(&dir);
    ok(root, &["build"]);
    assert_eq!(tree_bytes(&dir), before);
    // A value that disappears takes its directory with it.
    write(root, "data/t.csv", "id,lang,path\n1,python,a/b\n3,python,d\n");
    ok(root, &["build"]);
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["_relspec.json", "lang=python"]);
    // partition_by off: one file again, the directory gone; a bad column is an error naming the rule.
    let t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    write(root, "workspace.toml", &t.replace("partition_by = [\"lang\"]\n", ""));
    ok(root, &["build"]);
    assert!(out(root, "split").is_file());
    assert!(!dir.exists());
    write(root, "workspace.toml", &t.replace("partition_by = [\"lang\"]", "partition_by = [\"langg\"]"));
    let msg = fails(root, &["build"]);
    assert!(msg.contains("rule `split`"), "{msg}");
    assert!(msg.contains("partition_by names `langg`, which the output does not have (did you mean `lang`?)"), "{msg}");
    assert!(out(root, "split").is_file(), "the last good output stays");
}

#[test]
fn rules_of_one_build_share_a_dataset_decode() {
    let ws = default_workspace();
    let root = ws.path();
    let run = relspec(root).args(["build", "--jobs", "1"]).env("RELSPEC_LOG", "relspec_exec=debug").output().unwrap();
    assert!(run.status.success());
    let log = String::from_utf8_lossy(&run.stderr);
    // cst_callsites is read by four rules: decoded into memory at the second one.
    let shared: Vec<&str> = log.lines().filter(|l| l.contains("shared scan")).collect();
    assert!(shared.iter().any(|l| l.contains("dataset=\"cst_callsites\"") && l.contains("bytes=")), "{log}");
    // scip_occurrences is read by one rule only: it keeps its file scan (pushdown, pruning).
    assert!(!shared.iter().any(|l| l.contains("scip_occurrences")), "{log}");
    // Same bytes as a build in which every rule scans the files itself (a single-rule selection).
    let whole = std::fs::read(out(root, "scip_candidates")).unwrap();
    ok(root, &["clean"]);
    ok(root, &["build", "--select", "scip_candidates"]);
    assert_eq!(std::fs::read(out(root, "scip_candidates")).unwrap(), whole);
}
