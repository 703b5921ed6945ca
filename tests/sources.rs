//! Source datasets: relspec extracts files, defs, call sites, imports and
//! syntax errors from real code (tree-sitter) and reads real SCIP indexes.
//! Python extraction is checked against CPython's own `ast` module run over
//! the same files; Rust against a hand-checked fixture; SCIP against an
//! index made by `@sourcegraph/scip-python` (data/pyproj).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A file or directory the repository ships under `data/`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

/// A workspace over a copy of the Python fixture and its SCIP index.
fn python_workspace(rules: &str) -> tempfile::TempDir {
    let dir = workspace_with(&[(
        "workspace.toml",
        &format!(
            r#"[workspace]
name = "py"

[sources.py]
path = "pyproj/**/*.py"

[sources.scip]
path = "pyproj/index.scip"

{rules}"#
        ),
    )]);
    copy_tree(&fixture("pyproj"), &dir.path().join("pyproj"), |_| false);
    dir
}

fn build_json(root: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(root, &["build", "--json"])).unwrap()
}

fn source<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["sources"].as_array().unwrap().iter().find(|s| s["source"] == name).unwrap_or_else(|| panic!("{report}"))
}

/// Rows of a rule's output as tuples of display strings, sorted.
fn rows(root: &Path, rule: &str) -> Vec<Vec<String>> {
    let mut r = read_rows(&out(root, rule));
    r.sort();
    r
}

/// CPython's `ast` over the fixture: defs as (file, qualified name, kind,
/// 0-based line, col) and calls as (file, callee, 0-based line, col of the
/// called name).
fn python_oracle(root: &Path) -> (BTreeSet<Vec<String>>, BTreeSet<Vec<String>>) {
    let script = r#"
import ast, os, sys, json
root = sys.argv[1]
defs, calls = [], []
for dirpath, _, files in os.walk(os.path.join(root, "pyproj")):
    for f in files:
        if not f.endswith(".py"):
            continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)
        tree = ast.parse(open(path, encoding="utf-8").read())
        def walk(node, scope, in_class):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    q = ".".join(scope + [child.name])
                    kind = "class" if isinstance(child, ast.ClassDef) else ("method" if in_class else "function")
                    defs.append([rel, q, kind, str(child.lineno - 1), str(child.col_offset)])
                    walk(child, scope + [child.name], isinstance(child, ast.ClassDef))
                else:
                    if isinstance(child, ast.Call):
                        fn = child.func
                        if isinstance(fn, ast.Name):
                            calls.append([rel, fn.id, str(fn.lineno - 1), str(fn.col_offset)])
                        elif isinstance(fn, ast.Attribute):
                            calls.append([rel, fn.attr, str(fn.end_lineno - 1), str(fn.end_col_offset - len(fn.attr))])
                    walk(child, scope, False if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else in_class)
        walk(tree, [], False)
print(json.dumps([defs, calls]))
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(root).output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: (Vec<Vec<String>>, Vec<Vec<String>>) = serde_json::from_slice(&out.stdout).unwrap();
    (v.0.into_iter().collect(), v.1.into_iter().collect())
}

#[test]
fn python_defs_and_calls_match_cpython_ast() {
    let dir = python_workspace(
        r#"
[rules.defs]
sql = "SELECT file, qualified_name, kind, start_line, start_col FROM py_defs"

[rules.calls]
sql = "SELECT file, callee, start_line, start_col FROM py_callsites WHERE kind <> 'macro'"
"#,
    );
    let root = dir.path();
    let report = build_json(root);
    let py = source(&report, "py");
    assert_eq!(py["files"], 4);
    assert_eq!(py["parsed"], 4, "a cold build parses every file");
    let (defs, calls) = python_oracle(root);
    assert!(defs.len() >= 13 && calls.len() >= 30, "the oracle saw the fixture: {defs:?}");
    let got_defs: BTreeSet<Vec<String>> = rows(root, "defs").into_iter().collect();
    let got_calls: BTreeSet<Vec<String>> = rows(root, "calls").into_iter().collect();
    assert_eq!(got_defs, defs);
    assert_eq!(got_calls, calls);
}

#[test]
fn python_imports_and_files() {
    let dir = python_workspace(
        r#"
[rules.imports]
sql = "SELECT file, module, name, alias FROM py_imports"

[rules.files]
sql = "SELECT path, language, size, lines, parse_errors FROM py_files"
"#,
    );
    let root = dir.path();
    build_json(root);
    let imports: Vec<String> = rows(root, "imports").into_iter().map(|r| r.join("|")).collect();
    assert_eq!(
        imports,
        [
            "pyproj/main.py|shapes|Point|",
            "pyproj/main.py|shapes|Reg|",
            "pyproj/shapes/__init__.py|shapes.geometry|Point|",
            "pyproj/shapes/__init__.py|shapes.geometry|distance|",
            "pyproj/shapes/__init__.py|shapes.registry|Registry|Reg",
            "pyproj/shapes/geometry.py|dataclasses|dataclass|",
            "pyproj/shapes/geometry.py|math||",
            "pyproj/shapes/registry.py|collections|OrderedDict|ODict",
            "pyproj/shapes/registry.py|os.path||",
            "pyproj/shapes/registry.py|shapes.geometry|Point|",
            "pyproj/shapes/registry.py|shapes.geometry|centroid|",
            "pyproj/shapes/registry.py|shapes.geometry|distance|",
        ]
    );
    for r in rows(root, "files") {
        let bytes = std::fs::read(root.join(&r[0])).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(r[1], "python");
        assert_eq!(r[2], bytes.len().to_string());
        assert_eq!(r[3], text.lines().count().to_string());
        assert_eq!(r[4], "0");
    }
}

#[test]
fn rust_fixture_is_extracted_as_hand_checked() {
    let dir = workspace_with(&[(
        "workspace.toml",
        r#"[sources.rs]
path = "src"
language = "rust"

[rules.defs]
sql = "SELECT qualified_name, kind, start_line FROM rs_defs"

[rules.calls]
sql = "SELECT callee, receiver, kind, start_line FROM rs_callsites"

[rules.imports]
sql = "SELECT module, name, alias FROM rs_imports"
"#,
    )]);
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::copy(fixture("sample_lib.rs"), root.join("src/lib.rs")).unwrap();
    build_json(root);
    let join = |rule: &str| -> Vec<String> {
        let mut v: Vec<String> = rows(root, rule).into_iter().map(|r| r.join("|")).collect();
        v.sort();
        v
    };
    let mut want_defs = vec![
        "Graph|struct|3",
        "Walk|trait|7",
        "Walk::visit|method|8",
        "impl Graph|impl|11",
        "Graph::new|method|12",
        "Graph::add|method|16",
        "impl Walk for Graph|impl|21",
        "Graph::visit|method|22",
        "impl fmt::Display for Graph|impl|28",
        "Graph::fmt|method|29",
        "helper|function|34",
        "inner|module|39",
        "inner::LIMIT|const|40",
        "inner::outer_call|function|42",
    ];
    want_defs.sort();
    assert_eq!(join("defs"), want_defs);
    let mut want_calls = vec![
        "new|Map|call|13",
        "entry|self.edges|method|17",
        "or_default|self.edges.entry(a)|method|17",
        "push|self.edges.entry(a).or_default()|method|17",
        "get|self.edges|method|23",
        "map|self.edges.get(&node)|method|23",
        "unwrap_or|self.edges.get(&node).map(Vec::len)|method|23",
        "helper||call|24",
        "write||macro|30",
        "new|BTreeMap|call|35",
        "len|sorted|method|36",
        "helper|super|call|43",
    ];
    want_calls.sort();
    assert_eq!(join("calls"), want_calls);
    assert_eq!(join("imports"), ["std::collections|BTreeMap|", "std::collections|HashMap|Map", "std|fmt|"]);
}

#[test]
fn syntax_errors_are_reported_and_the_rest_is_extracted() {
    let dir = workspace_with(&[
        (
            "workspace.toml",
            r#"[sources.py]
path = "code"

[rules.defs]
sql = "SELECT file, qualified_name FROM py_defs"

[rules.errors]
sql = "SELECT file, message, start_line, start_col FROM py_errors"
"#,
        ),
        ("code/ok.py", "def fine():\n    return 1\n"),
        ("code/bad.py", "def ok():\n    return 1\n\ndef broken(:\n    pass\n\ndef after():\n    ok()\n"),
        ("code/__init__.py", ""),
    ]);
    let root = dir.path();
    std::fs::write(root.join("code/latin1.py"), b"x = '\xe9t\xe9'\n").unwrap();
    std::fs::write(root.join("code/blob.py"), b"\x00\x01\x02binary").unwrap();
    let (code, stdout, stderr) = run(root, &["build"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("code/bad.py:4:"), "{stderr}");
    assert!(stderr.contains("code/latin1.py: skipped (not UTF-8)"), "{stderr}");
    assert!(stderr.contains("code/blob.py: skipped (binary)"), "{stderr}");
    let defs: Vec<String> = rows(root, "defs").into_iter().map(|r| r.join("|")).collect();
    assert!(defs.contains(&"code/bad.py|after".to_string()), "nodes after the error survive: {defs:?}");
    assert!(defs.contains(&"code/bad.py|ok".to_string()));
    assert!(defs.contains(&"code/ok.py|fine".to_string()));
    let errors = rows(root, "errors");
    assert!(!errors.is_empty() && errors.iter().all(|r| r[0] == "code/bad.py" && r[2] == "3"), "{errors:?}");
}

#[test]
fn an_edit_reparses_one_file_and_keeps_other_ids() {
    let mut files = vec![(
        "workspace.toml".to_string(),
        r#"[sources.py]
path = "code/**/*.py"

[rules.defs]
sql = "SELECT file, qualified_name, def_id FROM py_defs"
"#
        .to_string(),
    )];
    for i in 0..20 {
        files.push((
            format!("code/m{i:02}.py"),
            format!("def f{i}(x):\n    return x + {i}\n\ndef g{i}():\n    return f{i}(1)\n"),
        ));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = workspace_with(&refs);
    let root = dir.path();
    let r = build_json(root);
    assert_eq!(source(&r, "py")["parsed"], 20);
    let before = rows(root, "defs");
    // A body edit: one file re-parsed, every id unchanged.
    write(root, "code/m07.py", "def f7(x):\n    y = x * 2\n    return y + 7\n\ndef g7():\n    return f7(1)\n");
    let r = build_json(root);
    assert_eq!((source(&r, "py")["parsed"].as_u64(), source(&r, "py")["from_fragments"].as_u64()), (Some(1), Some(19)));
    assert_eq!(rows(root, "defs"), before, "ids come from path and qualified name, not offsets");
    // A new file: one parse, its defs added.
    write(root, "code/new.py", "def h():\n    pass\n");
    let r = build_json(root);
    assert_eq!(source(&r, "py")["parsed"], 1);
    assert_eq!(rows(root, "defs").len(), before.len() + 1);
    // A deleted file: nothing parsed, its rows gone.
    std::fs::remove_file(root.join("code/m03.py")).unwrap();
    let r = build_json(root);
    assert_eq!(source(&r, "py")["parsed"], 0);
    let after = rows(root, "defs");
    assert_eq!(after.len(), before.len() + 1 - 2);
    assert!(!after.iter().any(|r| r[0] == "code/m03.py"));
    // No change: nothing extracted at all, nothing rebuilt.
    let r = build_json(root);
    assert!(r["sources"].as_array().unwrap().is_empty(), "{r}");
}

#[test]
fn scip_index_is_ingested_and_matches_cst_callsites_by_span() {
    let dir = python_workspace(
        r#"
[rules.docs]
sql = "SELECT document, language, occurrences FROM scip_documents"

[rules.classes]
sql = "SELECT symbol FROM scip_symbols WHERE symbol LIKE '%#' AND document IS NOT NULL"

[rules.matched]
sql = """
SELECT c.file, c.callee, c.start_line, c.start_col, o.symbol
FROM py_callsites c
LEFT JOIN scip_occurrences o
  ON concat('pyproj/', o.document) = c.file
 AND o.start_line = c.start_line AND o.start_col = c.start_col AND NOT o.is_definition
"""
"#,
    );
    let root = dir.path();
    build_json(root);
    let docs: Vec<String> = rows(root, "docs").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(docs, ["main.py", "shapes/__init__.py", "shapes/geometry.py", "shapes/registry.py"]);
    // scip-python leaves `language` empty; every document has occurrences.
    assert!(rows(root, "docs").iter().all(|r| r[2].parse::<u64>().unwrap() > 0));
    // Types are the symbols whose descriptor ends with `#` (scip-python leaves `kind` unset).
    let classes: Vec<String> = rows(root, "classes").into_iter().map(|r| r[0].clone()).collect();
    for c in ["`shapes.geometry`/Point#", "`shapes.registry`/Registry#"] {
        assert!(classes.iter().any(|s| s.ends_with(c)), "{c} in {classes:?}");
    }
    let matched = rows(root, "matched");
    assert!(matched.len() > 30);
    let unmatched: Vec<&Vec<String>> = matched.iter().filter(|r| r[4].is_empty()).collect();
    assert!(unmatched.is_empty(), "every CST call site has a SCIP reference at its span: {unmatched:?}");
    let distance: Vec<&Vec<String>> = matched.iter().filter(|r| r[1] == "distance").collect();
    assert!(distance.iter().all(|r| r[4].contains("`shapes.geometry`/distance().")), "{distance:?}");
}

#[test]
fn a_fresh_process_reads_fragments_instead_of_parsing() {
    let dir = python_workspace("[rules.defs]\nsql = \"SELECT * FROM py_defs\"\n");
    let root = dir.path();
    build_json(root);
    // Another rule reading the same source: the new process parses nothing.
    let toml = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    std::fs::write(root.join("workspace.toml"), toml + "\n[rules.calls]\nsql = \"SELECT * FROM py_callsites\"\n")
        .unwrap();
    let r = build_json(root);
    assert_eq!((source(&r, "py")["parsed"].as_u64(), source(&r, "py")["from_fragments"].as_u64()), (Some(0), Some(4)));
}

#[test]
fn bad_source_declarations_are_clear_errors() {
    let dir = workspace_with(&[("workspace.toml", "[sources.code]\npath = \"src\"\nlanguage = \"pyton\"\n")]);
    let err = fails(dir.path(), &["check"]);
    assert!(err.contains("unknown language `pyton`") && err.contains("did you mean `python`"), "{err}");
    assert!(err.contains("workspace.toml"), "{err}");
    let dir = workspace_with(&[("workspace.toml", "[datasets.idx]\npath = \"index.scip\"\nformat = \"scip\"\n")]);
    let err = fails(dir.path(), &["check"]);
    assert!(err.contains("[sources.idx]"), "{err}");
    let dir = workspace_with(&[(
        "workspace.toml",
        "[datasets.code_defs]\npath = \"d.csv\"\n\n[sources.code]\npath = \"src\"\n",
    )]);
    let err = fails(dir.path(), &["check"]);
    assert!(err.contains("yields table `code_defs`"), "{err}");
}

#[test]
fn a_corrupt_fragment_pack_means_parsing_again_not_an_error() {
    let dir = python_workspace("[rules.defs]\nsql = \"SELECT * FROM py_defs\"\n");
    let root = dir.path();
    build_json(root);
    let before = std::fs::read(out(root, "defs")).unwrap();
    let packs: Vec<PathBuf> = std::fs::read_dir(root.join("cache/fragments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("pack-"))
        .collect();
    assert!(!packs.is_empty());
    for p in &packs {
        std::fs::write(p, b"not parquet").unwrap();
    }
    let toml = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
    std::fs::write(root.join("workspace.toml"), toml + "\n[rules.calls]\nsql = \"SELECT * FROM py_callsites\"\n")
        .unwrap();
    let r = build_json(root);
    assert_eq!(source(&r, "py")["parsed"], 4, "{r}");
    assert_eq!(std::fs::read(out(root, "defs")).unwrap(), before);
}

#[test]
fn gitignored_and_hidden_files_are_not_indexed() {
    let dir = workspace_with(&[
        ("workspace.toml", "[sources.py]\npath = \"code\"\n\n[rules.files]\nsql = \"SELECT path FROM py_files\"\n"),
        ("code/.gitignore", "generated/\nscratch.py\n"),
        ("code/kept.py", "def a():\n    pass\n"),
        ("code/scratch.py", "def b():\n    pass\n"),
        ("code/generated/big.py", "def c():\n    pass\n"),
        ("code/.hidden/x.py", "def d():\n    pass\n"),
        ("code/notes.txt", "not code"),
    ]);
    let root = dir.path();
    build_json(root);
    assert_eq!(rows(root, "files"), [["code/kept.py"]]);
}

#[test]
fn gc_drops_fragment_packs_of_old_contents_and_clean_removes_them_all() {
    let dir = workspace_with(&[
        ("workspace.toml", "[sources.py]\npath = \"code\"\n\n[rules.defs]\nsql = \"SELECT * FROM py_defs\"\n"),
        ("code/a.py", "def a():\n    pass\n"),
        ("code/b.py", "def b():\n    pass\n"),
    ]);
    let root = dir.path();
    let packs = || -> usize { std::fs::read_dir(root.join("cache/fragments")).map(|d| d.count()).unwrap_or(0) };
    build_json(root);
    write(root, "code/a.py", "def a2():\n    pass\n");
    build_json(root);
    write(root, "code/a.py", "def a3():\n    pass\n");
    build_json(root);
    assert_eq!(packs(), 3, "one pack per run that parsed something");
    let out = ok(root, &["gc"]);
    assert!(out.contains("1 fragment packs"), "{out}");
    assert_eq!(packs(), 2, "the pack of a2 holds no current file; the first still holds b.py");
    // Nothing live was lost: a fresh process parses nothing.
    write(
        root,
        "workspace.toml",
        "[sources.py]\npath = \"code\"\n\n[rules.defs]\nsql = \"SELECT name FROM py_defs\"\n",
    );
    let r = build_json(root);
    assert_eq!(source(&r, "py")["parsed"], 0, "{r}");
    ok(root, &["clean"]);
    assert!(!root.join("cache/fragments").exists());
}
