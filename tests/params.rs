//! List parameters (`[params] langs = ["python", "rust"]`): `IN` / `ANY` in
//! SQL and pipeline filters, lowered to semi joins; `--param` overrides.

mod common;
use common::*;
use std::path::Path;

const WS: &str = r#"[workspace]
name = "p"
[params]
langs = ["python", "rust"]
ids = [1, 3]
min = 0
[datasets.files]
path = "data/files.csv"
[rules.by_sql]
sql = "SELECT id, lang FROM files WHERE lang IN $langs AND id > $min"
[rules.by_any]
sql = "SELECT id FROM files WHERE id = ANY($ids)"
[rules.not_in]
sql = "SELECT id FROM files WHERE lang NOT IN ($langs)"
[rules.by_pipeline]
from = "files"
steps = [{ filter = "files.lang IN $langs" }, { select = ["id"] }]
[rules.unrelated]
sql = "SELECT count(*) AS n FROM files"
"#;

const FILES: &str = "id,lang\n1,python\n2,rust\n3,go\n4,python\n5,\n";

fn ids(root: &Path, rule: &str) -> Vec<String> {
    read_rows(&out(root, rule)).into_iter().map(|r| r[0].clone()).collect()
}

/// The oracle: the ids of FILES whose lang is in `langs`.
fn expected(langs: &[&str]) -> Vec<String> {
    FILES
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .filter(|(_, lang)| langs.contains(lang))
        .map(|(id, _)| id.to_string())
        .collect()
}

fn built(root: &Path, args: &[&str]) -> Vec<String> {
    let mut a = vec!["build", "--json"];
    a.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&ok(root, &a)).unwrap();
    let mut b = built_rules(&v);
    b.sort();
    b
}

#[test]
fn list_params_in_sql_and_pipelines_with_overrides() {
    let ws = workspace_with(&[("workspace.toml", WS), ("data/files.csv", FILES)]);
    let root = ws.path();
    ok(root, &["build"]);
    assert_eq!(ids(root, "by_sql"), expected(&["python", "rust"]));
    assert_eq!(ids(root, "by_pipeline"), expected(&["python", "rust"]));
    assert_eq!(ids(root, "by_any"), ["1", "3"]);
    // NOT IN: SQL semantics (a null lang is neither in nor not in the list).
    assert_eq!(ids(root, "not_in"), ["3"]);
    // Lowered to a semi join over a VALUES relation of the list, never to SQL text.
    let plan = ok(root, &["explain", "by_sql"]);
    assert!(plan.contains("LeftSemi"), "{plan}");
    assert!(plan.contains("Values: (Utf8(\"python\")), (Utf8(\"rust\"))"), "{plan}");
    assert!(!plan.contains("'python'"), "{plan}");

    // An override changes the list; only the rules that read it rebuild.
    assert_eq!(built(root, &["--param", "langs=python"]), ["by_pipeline", "by_sql", "not_in"]);
    assert_eq!(ids(root, "by_sql"), expected(&["python"]));
    assert_eq!(ids(root, "by_pipeline"), expected(&["python"]));
    // A list is a set: order and duplicates do not change the key.
    assert_eq!(built(root, &["-P", "langs=python,python"]), Vec::<String>::new());
    // Back to the declared set (in another order): the first build's outputs, from the cache.
    assert_eq!(built(root, &["-P", "langs=rust,python"]), Vec::<String>::new());
    assert_eq!(ids(root, "by_sql"), expected(&["python", "rust"]));
    // An empty list is valid and matches nothing.
    built(root, &["--param", "langs="]);
    assert!(ids(root, "by_sql").is_empty());
    assert!(ids(root, "by_pipeline").is_empty());
    // Integers parse as the declared list's kind; scalars too.
    built(root, &["-P", "ids=2,4", "-P", "min=1"]);
    assert_eq!(ids(root, "by_any"), ["2", "4"]);
    // Editing the manifest's list rebuilds the same readers.
    let t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    write(root, "workspace.toml", &t.replace("langs = [\"python\", \"rust\"]", "langs = [\"go\"]"));
    assert_eq!(built(root, &[]), ["by_pipeline", "by_sql", "not_in"]);
    assert_eq!(ids(root, "by_sql"), expected(&["go"]));
}

#[test]
fn bad_params_are_clear_errors() {
    let ws = workspace_with(&[("workspace.toml", WS), ("data/files.csv", FILES)]);
    let root = ws.path();
    let msg = fails(root, &["build", "--param", "ids=1,x"]);
    assert!(msg.contains("--param ids=1,x: `ids` is a list of integers; `x` is not an integer"), "{msg}");
    let msg = fails(root, &["build", "--param", "min=abc"]);
    assert!(msg.contains("`min` is an integer; `abc` is not an integer"), "{msg}");
    let msg = fails(root, &["build", "--param", "lang=python"]);
    assert!(msg.contains("no parameter `lang` is declared"), "{msg}");
    assert!(msg.contains("did you mean `langs`?"), "{msg}");
    let msg = fails(root, &["build", "--param", "langs"]);
    assert!(msg.contains("is not NAME=VALUE"), "{msg}");
    // A list used as a scalar.
    let t = WS.replace("SELECT count(*) AS n FROM files", "SELECT $langs AS l FROM files");
    write(root, "workspace.toml", &t);
    let msg = fails(root, &["check"]);
    assert!(msg.contains("`$langs` is a list parameter"), "{msg}");
    assert!(msg.contains("rule `unrelated`"), "{msg}");
    // A list of mixed kinds.
    let t = WS.replace("ids = [1, 3]", "ids = [1, \"3\"]");
    write(root, "workspace.toml", &t);
    let msg = fails(root, &["check"]);
    assert!(msg.contains("workspace.toml:5:"), "{msg}");
    assert!(msg.contains("parameter `ids` mixes integer and string elements"), "{msg}");
}
