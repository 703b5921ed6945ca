//! `relspec docs` loaded in a real browser: headless Chromium runs the
//! site's script from `file://` and the rendered DOM is asserted (nodes,
//! edges, focus, search, rule and dataset pages), plus a screenshot.
//!
//! Needs Chromium (`.ci/run` installs Debian's `chromium`). Without one the
//! tests say so and pass, unless `RELSPEC_REQUIRE_BROWSER=1` (set by
//! `.ci/run`), which makes a missing browser a failure.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    let from_env = std::env::var_os("RELSPEC_CHROMIUM").map(PathBuf::from);
    let found = from_env.or_else(|| {
        ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
            std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var("RELSPEC_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "RELSPEC_REQUIRE_BROWSER=1 but no chromium on PATH (or RELSPEC_CHROMIUM)"
        );
        eprintln!("SKIPPED: no chromium on PATH; install Debian's `chromium` to run the browser tests");
    }
    found
}

/// Headless Chromium as `.ci/run` and the probe start it (no background
/// networking: the machine's network is closed).
fn browser(bin: &Path, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM after the page's scripts ran. Chromium is launched a second time
/// if the first process exits unsuccessfully without a DOM (seen once on a
/// loaded 2-core CI machine, with nothing on stderr but crashpad's notes);
/// a page that does not render fails the assertions on the DOM either way.
fn dump_dom(bin: &Path, profile: &Path, url: &str) -> String {
    let mut failures = Vec::new();
    for _ in 0..2 {
        let out = browser(bin, profile).arg("--dump-dom").arg(url).output().unwrap();
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        failures.push(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    panic!("chromium failed twice:\n{}", failures.join("\n"));
}

fn url(path: &Path, hash: &str) -> String {
    format!("file://{}{hash}", path.display())
}

/// `data-name`s of the nodes with class `class` in a dumped DOM.
fn nodes_with(dom: &str, class: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in dom.split("<g class=\"").skip(1) {
        let (classes, rest) = part.split_once('"').unwrap();
        let mut cls = classes.split(' ');
        if cls.next() != Some("node") || !classes.split(' ').any(|c| c == class) {
            continue;
        }
        let name = rest.split("data-name=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        out.insert(name.to_string());
    }
    out
}

/// (from, to) of the drawn edges.
fn edges(dom: &str) -> BTreeSet<(String, String)> {
    let attr =
        |s: &str, a: &str| s.split(&format!("{a}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    dom.split("<path class=\"edge").skip(1).map(|p| (attr(p, "data-from"), attr(p, "data-to"))).collect()
}

/// The DAG as `relspec graph` (DOT) has it: rule and dataset names, edges.
fn dot_graph(root: &Path) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let dot = common::ok(root, &["graph"]);
    let mut names = BTreeSet::new();
    let mut es = BTreeSet::new();
    for line in dot.lines() {
        let q: Vec<&str> = line.split('"').collect();
        if line.contains("->") && q.len() >= 4 {
            es.insert((q[1].to_string(), q[3].to_string()));
        } else if q.len() >= 2 && line.contains("shape=") {
            names.insert(q[1].to_string());
        }
    }
    (names, es)
}

#[test]
fn the_site_renders_the_dag_focus_search_and_pages_in_chromium() {
    let Some(bin) = chromium() else { return };
    let ws = common::default_workspace();
    let root = ws.path();
    common::ok(root, &["build"]);
    let site = root.join("site");
    let out = common::ok(root, &["docs", "--out", site.to_str().unwrap()]);
    assert!(out.contains("docs:"), "{out}");
    let profile = tempfile::tempdir().unwrap();
    let index = site.join("index.html");

    // Every rule and every dataset is a node; every dependency an edge.
    let dom = dump_dom(&bin, profile.path(), &url(&index, ""));
    assert!(dom.contains("data-ready=\"true\""), "the script ran");
    let rules = nodes_with(&dom, "rule");
    let datasets = nodes_with(&dom, "dataset");
    assert_eq!(rules.len(), common::DEFAULT_RULES, "{rules:?}");
    assert!(datasets.contains("cst_callsites") && datasets.contains("code_defs"), "{datasets:?}");
    let (dot_names, dot_edges) = dot_graph(root);
    let drawn_edges = edges(&dom);
    assert_eq!(drawn_edges, dot_edges, "the drawn edges are the DAG's");
    assert!(dot_names.is_subset(&rules.union(&datasets).cloned().collect()), "{dot_names:?}");

    // Focus on `calls`: its upstream and downstream lit, the rest dimmed.
    let dom = dump_dom(&bin, profile.path(), &url(&index, "#focus=calls"));
    assert!(dom.contains("data-focus=\"calls\""));
    assert_eq!(nodes_with(&dom, "focus"), BTreeSet::from(["calls".to_string()]));
    let up = nodes_with(&dom, "up");
    for u in ["callsite_candidates", "scip_candidates", "cst_callsites", "cst_defs", "scip_occurrences"] {
        assert!(up.contains(u), "{u} is upstream of calls: {up:?}");
    }
    assert_eq!(nodes_with(&dom, "down"), BTreeSet::from(["callee_counts".to_string(), "edges".to_string()]));
    let dim = nodes_with(&dom, "dim");
    assert!(dim.contains("code_edges") && dim.contains("py_scip_agreement") && !dim.contains("calls"), "{dim:?}");
    assert!(dom.contains("id=\"page-link\" href=\"rules/calls.html\""), "the panel links the rule page");

    // Search by name.
    let dom = dump_dom(&bin, profile.path(), &url(&index, "#q=code_"));
    let matched = nodes_with(&dom, "match");
    assert!(
        matched.contains("code_edges") && matched.contains("code_defs") && !matched.contains("calls"),
        "{matched:?}"
    );

    // A rule page shows its schema, lineage, contract, last build and source.
    let page = dump_dom(&bin, profile.path(), &url(&site.join("rules/calls.html"), ""));
    for col in ["src", "dst", "score"] {
        assert!(page.contains(&format!("<tr><td><code>{col}</code></td><td><code>Int64")), "column {col}: {page}");
    }
    assert!(page.contains("callsite_candidates</a>.<code>src</code> (copied)"), "lineage");
    assert!(page.contains("id=\"contract\""), "contract");
    let rows = common::read_rows(&common::out(root, "calls")).len();
    assert!(page.contains(&format!("<tr><th>rows</th><td>{rows}</td></tr>")), "last build rows");
    assert!(page.contains("stable_dedupe"), "source");
    // A dataset page: location, schema, files, fingerprint.
    let page = dump_dom(&bin, profile.path(), &url(&site.join("datasets/cst_defs.html"), ""));
    assert!(page.contains("data/cst/defs.csv") && page.contains("<code>def_id</code>") && page.contains("fingerprint"));

    // A screenshot of the focused DAG (RELSPEC_SCREENSHOT=path keeps it).
    let shot =
        std::env::var_os("RELSPEC_SCREENSHOT").map(PathBuf::from).unwrap_or_else(|| profile.path().join("docs.png"));
    let st = browser(&bin, profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1400,900")
        .arg(url(&index, "#focus=calls"))
        .output()
        .unwrap();
    assert!(st.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real picture: {} bytes", png.len());

    // Regenerating replaces the site; a foreign directory is refused.
    common::ok(root, &["docs", "--out", site.to_str().unwrap()]);
    common::write(root, "elsewhere/notes.txt", "mine");
    let err = common::fails(root, &["docs", "--out", "elsewhere"]);
    assert!(err.contains("was not made by `relspec docs`"), "{err}");
    assert_eq!(std::fs::read_to_string(root.join("elsewhere/notes.txt")).unwrap(), "mine");
}

#[test]
fn docs_of_a_broken_workspace_show_the_errors_and_exit_non_zero() {
    let ws = common::default_workspace();
    let root = ws.path();
    common::write(root, "rules/typo.toml", "[rules.typo]\nsql = \"SELECT * FROM filez\"\n");
    let (code, _, stderr) = common::run(root, &["docs"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unknown table `filez`"), "{stderr}");
    let page = std::fs::read_to_string(root.join("site/rules/typo.html")).unwrap();
    assert!(page.contains("unknown table `filez`") && page.contains("not analyzed"), "{page}");
    let index = std::fs::read_to_string(root.join("site/index.html")).unwrap();
    assert!(index.contains("Problems"));
    let data = std::fs::read_to_string(root.join("site/assets/data.js")).unwrap();
    assert!(data.contains("\"name\":\"typo\"") && data.contains("\"error\":true"));
}

#[test]
fn serve_answers_the_site_over_http() {
    use std::io::{BufRead, BufReader, Read, Write};
    let ws = common::default_workspace();
    let root = ws.path();
    let mut child = common::relspec_process(root)
        .args(["docs", "--serve", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serving line").unwrap();
        if let Some(rest) = line.strip_prefix("serving on http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let index = get("/");
    assert!(index.starts_with("HTTP/1.1 200") && index.contains("assets/graph.js"), "{index}");
    assert!(get("/assets/data.js").contains("RELSPEC_GRAPH"));
    assert!(get("/../workspace.toml").starts_with("HTTP/1.1 404"));
    child.kill().unwrap();
    let _ = child.wait();
}
