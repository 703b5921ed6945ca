//! `relspec lsp` driven over its real stdio protocol: the binary is spawned,
//! JSON-RPC goes in, responses and published diagnostics are asserted.

mod common;

use relspec_ide::client::{Client, position, uri};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn start(root: &Path) -> Client {
    let mut cmd = common::relspec_process(root);
    cmd.arg("lsp");
    Client::start(cmd, root).unwrap()
}

fn doc(root: &Path, rel: &str) -> Value {
    json!({"uri": uri(&root.join(rel))})
}

fn at(root: &Path, rel: &str, text: &str, needle: &str, k: usize) -> Value {
    let off = text.find(needle).unwrap_or_else(|| panic!("`{needle}` not in {rel}")) + k;
    json!({"textDocument": doc(root, rel), "position": position(text, off)})
}

fn change(c: &mut Client, root: &Path, rel: &str, version: i64, text: &str) {
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri(&root.join(rel)), "version": version}, "contentChanges": [{"text": text}]}),
    )
    .unwrap();
}

fn hover_text(v: &Value) -> String {
    v["contents"]["value"].as_str().unwrap_or_default().to_string()
}

/// Apply one LSP text edit (single-line ranges) to `text`.
fn apply(text: &str, edit: &Value) -> String {
    let line = edit["range"]["start"]["line"].as_u64().unwrap() as usize;
    let (c0, c1) =
        (edit["range"]["start"]["character"].as_u64().unwrap(), edit["range"]["end"]["character"].as_u64().unwrap());
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let l = &lines[line];
    lines[line] = format!("{}{}{}", &l[..c0 as usize], edit["newText"].as_str().unwrap(), &l[c1 as usize..]);
    lines.join("\n")
}

#[test]
fn edits_with_an_error_introduced_and_fixed_publish_and_clear_diagnostics() {
    let ws = common::default_workspace();
    let root = ws.path();
    let mut c = start(root);
    let m_uri = uri(&root.join("workspace.toml"));
    let text = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": m_uri, "languageId": "toml", "version": 1, "text": text}}),
    )
    .unwrap();

    // 1. An unknown table, in the unsaved buffer only.
    let bad = text.replace("FROM cst_callsites AS c", "FROM cst_callsitez AS c");
    change(&mut c, root, "workspace.toml", 2, &bad);
    let d = c.diagnostics_for(&m_uri, WAIT).unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "relspec::unknown_table");
    assert!(d[0]["message"].as_str().unwrap().contains("did you mean `cst_callsites`?"), "{d:?}");
    let off = bad.find("cst_callsitez").unwrap();
    assert_eq!(d[0]["range"]["start"], position(&bad, off));
    assert_eq!(d[0]["range"]["end"], position(&bad, off + "cst_callsitez".len()));
    // The disk is untouched: `check` on it is clean.
    common::ok(root, &["check"]);

    // 2. The quick fix applies the suggestion; applying it clears the file.
    let actions = c
        .request(
            "textDocument/codeAction",
            json!({"textDocument": {"uri": m_uri}, "range": d[0]["range"], "context": {"diagnostics": d}}),
        )
        .unwrap();
    assert_eq!(actions.as_array().unwrap().len(), 1, "{actions}");
    assert_eq!(actions[0]["title"], "Replace `cst_callsitez` with `cst_callsites`");
    let edit = &actions[0]["edit"]["changes"][&m_uri][0];
    let fixed = apply(&bad, edit);
    assert_eq!(fixed, text);
    change(&mut c, root, "workspace.toml", 3, &fixed);
    assert_eq!(c.diagnostics_for(&m_uri, WAIT).unwrap(), Vec::<Value>::new());

    // 3. An unknown column: located on the column, with a fix to the right one.
    let bad = text.replace("SELECT c.callsite_id AS src, o.def_id", "SELECT c.callsite_idd AS src, o.def_id");
    change(&mut c, root, "workspace.toml", 4, &bad);
    let d = c.diagnostics_for(&m_uri, WAIT).unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "relspec::plan");
    assert_eq!(d[0]["range"]["start"], position(&bad, bad.find("c.callsite_idd").unwrap()));
    let actions = c
        .request(
            "textDocument/codeAction",
            json!({"textDocument": {"uri": m_uri}, "range": d[0]["range"], "context": {"diagnostics": d}}),
        )
        .unwrap();
    assert_eq!(apply(&bad, &actions[0]["edit"]["changes"][&m_uri][0]), text);

    // 4. A contract mismatch is reported too.
    let bad = text.replace(r#"{ name = "score", type = "bigint" }"#, r#"{ name = "score", type = "string" }"#);
    assert_ne!(bad, text);
    change(&mut c, root, "workspace.toml", 5, &bad);
    let d = c.diagnostics_for(&m_uri, WAIT).unwrap();
    assert!(
        d.iter().any(|d| d["code"] == "relspec::contract" && d["message"].as_str().unwrap().contains("score")),
        "{d:?}"
    );

    // 5. Closing the buffer goes back to the disk (clean).
    c.notify("textDocument/didClose", json!({"textDocument": {"uri": m_uri}})).unwrap();
    assert_eq!(c.diagnostics_for(&m_uri, WAIT).unwrap(), Vec::<Value>::new());
    assert!(c.shutdown().unwrap().success());
}

#[test]
fn diagnostics_match_check_and_follow_the_disk() {
    let ws = common::default_workspace();
    let root = ws.path();
    // A cycle and an unknown table in a rule file, on disk.
    common::write(
        root,
        "rules/broken.toml",
        "[rules.loop_a]\nfrom = \"loop_b\"\nsteps = []\n\n[rules.loop_b]\nfrom = \"loop_a\"\nsteps = []\n\n[rules.typo]\nsql = \"SELECT * FROM filez\"\n",
    );
    let (code, stdout, _) = common::run(root, &["check", "--json"]);
    assert_eq!(code, 1);
    let check: Value = serde_json::from_str(&stdout).unwrap();
    let mut want: Vec<(String, String, u64)> = check["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_string(),
                e["code"].as_str().unwrap().to_string(),
                e["line"].as_u64().unwrap(),
            )
        })
        .collect();
    want.sort();
    assert!(
        want.iter().any(|w| w.1 == "relspec::cycle") && want.iter().any(|w| w.1 == "relspec::unknown_table"),
        "{want:?}"
    );

    let mut c = start(root);
    let b_uri = uri(&root.join("rules/broken.toml"));
    let d = c.diagnostics_for(&b_uri, WAIT).unwrap();
    let mut got: Vec<(String, String, u64)> = d
        .iter()
        .map(|d| {
            (
                "rules/broken.toml".to_string(),
                d["code"].as_str().unwrap().to_string(),
                d["range"]["start"]["line"].as_u64().unwrap() + 1,
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "the server reports what `check` reports");

    // Fixed on disk (no buffer open): the watcher sees it and clears the file.
    common::write(root, "rules/broken.toml", "[rules.typo]\nsql = \"SELECT * FROM files\"\n");
    assert_eq!(c.diagnostics_for(&b_uri, WAIT).unwrap(), Vec::<Value>::new());
    assert!(c.shutdown().unwrap().success());
}

#[test]
fn hover_definition_references_and_completion() {
    let ws = common::default_workspace();
    let root = ws.path();
    common::ok(root, &["build", "--select", "+edges"]);
    let mut c = start(root);
    let manifest = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    let edges = std::fs::read_to_string(root.join("rules/edges.sql")).unwrap();

    // Hover on a dataset: schema and declaration.
    let h = c.request("textDocument/hover", at(root, "workspace.toml", &manifest, "join = \"cst_defs", 9)).unwrap();
    let h = hover_text(&h);
    assert!(h.contains("**dataset** `cst_defs`") && h.contains("| `def_id` | `Int64` |"), "{h}");
    assert!(h.contains("declared in `workspace.toml`:"), "{h}");

    // Hover on a rule: schema, what it reads, and the last build.
    let h = hover_text(&c.request("textDocument/hover", at(root, "rules/edges.sql", &edges, "FROM calls", 6)).unwrap());
    assert!(h.contains("**rule** `calls`") && h.contains("| `score` | `Int64`"), "{h}");
    assert!(h.contains("reads `callsite_candidates`, `scip_candidates`"), "{h}");
    let rows = common::read_rows(&common::out(root, "calls")).len();
    assert!(h.contains(&format!("last build: built, {rows} rows")), "{h}");

    // Hover on a column: its lineage, through the alias `cs`.
    let h = hover_text(&c.request("textDocument/hover", at(root, "rules/edges.sql", &edges, "calls.src", 7)).unwrap());
    assert!(h.contains("**column** `calls.src`: `Int64`") && h.contains("callsite_candidates.src"), "{h}");
    assert!(h.contains("cst_callsites.callsite_id (copied) [dataset]"), "{h}");
    let h =
        hover_text(&c.request("textDocument/hover", at(root, "rules/edges.sql", &edges, "cs.callsite_id", 4)).unwrap());
    assert!(h.contains("**column** `cst_callsites.callsite_id`: `Int64`"), "{h}");

    // Go to definition: rule `calls` is declared in workspace.toml.
    let d = c.request("textDocument/definition", at(root, "rules/edges.sql", &edges, "FROM calls", 6)).unwrap();
    assert_eq!(d["uri"], json!(uri(&root.join("workspace.toml"))));
    assert_eq!(d["range"]["start"], position(&manifest, manifest.find("[rules.calls]").unwrap()));

    // References: the rules that read `calls`, at the name.
    let r = c
        .request(
            "textDocument/references",
            json!({"textDocument": doc(root, "rules/edges.sql"), "position": position(&edges, edges.find("FROM calls").unwrap() + 6), "context": {"includeDeclaration": false}}),
        )
        .unwrap();
    let files: Vec<&str> = r.as_array().unwrap().iter().map(|l| l["uri"].as_str().unwrap()).collect();
    assert!(
        files.iter().any(|f| f.ends_with("rules/edges.sql")) && files.iter().any(|f| f.ends_with("rules/stats.toml")),
        "{r}"
    );
    assert!(!files.iter().any(|f| f.ends_with("workspace.toml")), "only readers: {r}");

    // Completion after an alias: the columns of its table; elsewhere, table names.
    let items = c.request("textDocument/completion", at(root, "rules/edges.sql", &edges, "cs.callsite_id", 3)).unwrap();
    let labels: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["callsite_id", "file_id", "callee", "line", "lang"]);
    let items = c.request("textDocument/completion", at(root, "rules/edges.sql", &edges, "FROM calls", 5)).unwrap();
    let labels: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"cst_defs") && labels.contains(&"calls") && labels.contains(&"callsite_id"), "{labels:?}");
    // Params after `$`.
    let items = c.request("textDocument/completion", at(root, "workspace.toml", &manifest, "$min_file", 1)).unwrap();
    let labels: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["langs", "min_file"]);
    assert!(c.shutdown().unwrap().success());
}
