//! The real `relspec watch` on temp workspaces: editor-style writes, only the
//! affected rules rebuild, bad edits keep the last good outputs, outputs match
//! a clean build.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Watcher {
    child: Child,
    rx: mpsc::Receiver<serde_json::Value>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watcher {
    /// Start `relspec watch --json` and wait until it watches (after its first build).
    fn start(root: &Path) -> Watcher {
        let mut w = Watcher::spawn(root);
        w.until(|e| e["event"] == "watching");
        w
    }

    /// Start `relspec watch --json` without waiting for anything.
    fn spawn(root: &Path) -> Watcher {
        let mut child = relspec_process(root)
            .args(["watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Watcher { child, rx }
    }

    /// Events up to and including the first one matching `pred`.
    fn until(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        loop {
            let e = self
                .rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("timed out; events so far: {seen:#?}"));
            let stop = pred(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
    }

    /// Events of the next completed build.
    fn next_build(&mut self) -> Vec<serde_json::Value> {
        self.until(|e| e["event"] == "build_done")
    }
}

fn built(events: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "rule" && e["status"] == "built")
        .map(|e| e["rule"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn done(events: &[serde_json::Value]) -> &serde_json::Value {
    events.last().unwrap()
}

/// Write like an editor that saves via a temp file and rename.
fn save_by_rename(root: &Path, rel: &str, text: &str) {
    let tmp = root.join(format!("{rel}.tmp~"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, root.join(rel)).unwrap();
}

fn clean_outputs(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dir = copy_sources(root);
    ok(dir.path(), &["build"]);
    tree_bytes(&dir.path().join("out"))
}

#[test]
fn watch_rebuilds_only_what_changes_invalidate() {
    let ws = default_workspace();
    let root = ws.path();
    let mut w = Watcher::start(root);
    assert!(out(root, "edges").is_file(), "initial build published");

    // In-place write of one rule file: only that rule rebuilds.
    let stats = std::fs::read_to_string(root.join("rules/stats.toml")).unwrap();
    std::fs::write(root.join("rules/stats.toml"), stats.replace("count(*) AS calls", "count(*) * 10 AS calls"))
        .unwrap();
    let ev = w.next_build();
    assert_eq!(built(&ev), ["callee_counts"], "{ev:#?}");
    assert_eq!(done(&ev)["ok"], true);
    assert!(done(&ev)["latency_ms"].as_f64().unwrap() > 0.0);

    // Save by temp file + rename.
    let edges = std::fs::read_to_string(root.join("rules/edges.sql")).unwrap();
    save_by_rename(root, "rules/edges.sql", &edges.replace("'CALLS' AS kind", "'CALL' AS kind"));
    let ev = w.next_build();
    assert_eq!(built(&ev), ["edges"], "{ev:#?}");

    // A bad edit: the diagnostic is reported, the last good output stays.
    let good_edges = std::fs::read(out(root, "edges")).unwrap();
    save_by_rename(root, "rules/edges.sql", "SELECT FROM WHERE");
    let ev = w.next_build();
    assert_eq!(done(&ev)["ok"], false);
    let err = ev.iter().find(|e| e["event"] == "error").expect("an error event");
    assert_eq!(err["diagnostic"]["file"], "rules/edges.sql");
    assert_eq!(good_edges, std::fs::read(out(root, "edges")).unwrap());

    // Fixing it recovers.
    save_by_rename(root, "rules/edges.sql", &edges);
    let ev = w.next_build();
    assert_eq!(done(&ev)["ok"], true, "{ev:#?}");
    assert_eq!(built(&ev), Vec::<String>::new(), "the original edges output is still cached: {ev:#?}");

    // A new file in a partitioned dataset directory.
    write(root, "data/cst/callsites/lang=go/part-0.csv", "callsite_id,file_id,callee,line\n300,4,run,7\n");
    let ev = w.next_build();
    let b = built(&ev);
    assert!(b.contains(&"callsite_candidates".to_string()) && b.contains(&"edges".to_string()), "{ev:#?}");

    // Deleting a dataset file a rule needs is reported; outputs stay.
    let files_csv = std::fs::read_to_string(root.join("data/files.csv")).unwrap();
    let before = tree_bytes(&root.join("out"));
    std::fs::remove_file(root.join("data/files.csv")).unwrap();
    let ev = w.next_build();
    assert_eq!(done(&ev)["ok"], false);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "error" && e["diagnostic"]["message"].as_str().unwrap().contains("dataset `files`")),
        "{ev:#?}"
    );
    assert_eq!(before, tree_bytes(&root.join("out")));
    std::fs::write(root.join("data/files.csv"), files_csv).unwrap();
    let ev = w.next_build();
    assert_eq!(done(&ev)["ok"], true);

    // The watched outputs equal a clean build of the same sources.
    let published: std::collections::BTreeMap<_, _> = tree_bytes(&root.join("out")).into_iter().collect();
    assert_eq!(published, clean_outputs(root));
}

#[test]
fn watch_once_exits_after_the_first_build() {
    let ws = default_workspace();
    let root = ws.path();
    let out_text = ok(root, &["watch", "--once", "--json"]);
    let events: Vec<serde_json::Value> = out_text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.last().unwrap()["event"], "build_done");
    assert_eq!(events.iter().filter(|e| e["event"] == "rule" && e["status"] == "built").count(), DEFAULT_RULES);
}

#[test]
fn a_change_during_a_build_cancels_it_and_the_next_build_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    relspec_core::synth::write_workspace(root, 60, 100_000).unwrap();
    let mut w = Watcher::start(root);
    // Start a long build, and change the data again as soon as it is under way.
    std::fs::write(root.join("data/events/part-0.csv"), relspec_core::synth::events_csv(0, 100_000, 1)).unwrap();
    w.until(|e| e["event"] == "rule" && e["status"] == "built");
    std::fs::write(root.join("data/events/part-0.csv"), relspec_core::synth::events_csv(0, 100_000, 2)).unwrap();
    let events = w.until(|e| e["event"] == "build_done" && e["ok"] == true);
    assert!(events.iter().any(|e| e["event"] == "cancelled"), "the first build was cancelled: {events:#?}");
    let published: std::collections::BTreeMap<_, _> = tree_bytes(&root.join("out")).into_iter().collect();
    assert_eq!(published, clean_outputs(root));
}

/// The watcher is registered before the first build: an edit made while the
/// first build runs is picked up (that build is cancelled or finishes, and the
/// next one includes the edit), never missed.
#[test]
fn an_edit_during_the_first_build_is_not_missed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    relspec_core::synth::write_workspace(root, 60, 100_000).unwrap();
    let mut w = Watcher::spawn(root);
    // The first build is under way (a rule finished, most have not).
    let first = w.until(|e| e["event"] == "rule");
    assert!(!first.iter().any(|e| e["event"] == "watching"), "{first:#?}");
    save_by_rename(root, "rules/r00059.sql", &relspec_core::synth::rule_sql(59, 1));
    // The edit arrives in a later build, whatever the first one did.
    let events = w.until(|e| {
        e["event"] == "build_done" && e["ok"] == true && e["latency_ms"].is_number() // a batch's build
    });
    assert!(
        events.iter().any(|e| e["event"] == "change" && e["paths"].to_string().contains("r00059.sql")),
        "the edit was seen: {events:#?}"
    );
    let published: std::collections::BTreeMap<_, _> = tree_bytes(&root.join("out")).into_iter().collect();
    assert_eq!(published, clean_outputs(root), "outputs equal a clean build of the edited workspace");
}

/// The default workspace under watch: editing a source file re-parses that
/// file only and republishes the call graph over it.
#[test]
fn watch_reparses_an_edited_source_file_and_updates_the_call_graph() {
    let ws = default_workspace();
    let root = ws.path();
    let mut w = Watcher::start(root);
    let before = read_rows(&out(root, "code_edges"));
    // A new function in the sample crate, and a call to it.
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let lib = lib.replace(
        "fn helper(n: usize) -> usize {",
        "fn twice(n: usize) -> usize {\n    n * 2\n}\n\nfn helper(n: usize) -> usize {\n    let _ = twice(n);",
    );
    std::fs::write(root.join("src/lib.rs"), lib).unwrap();
    let events = w.until(|e| e["event"] == "build_done");
    let done = events.last().unwrap();
    assert_eq!(done["ok"], true, "{events:?}");
    assert_eq!(done["parsed"], 1, "one source file re-parsed: {done}");
    let after = read_rows(&out(root, "code_edges"));
    assert_ne!(before, after);
    assert!(after.iter().any(|r| r[1] == "helper" && r[2] == "twice"), "{after:?}");
}

/// A build that fails (here on one partition's bad value; a build
/// cancelled by a newer change takes the same path) keeps each rule's last
/// good output as the base of the next build: once the input is mended, the
/// incremental rule recomputes that one partition, not all of them.
#[test]
fn after_a_failed_build_the_next_one_recomputes_only_the_changed_partition() {
    let csv = |seed: u64| {
        let mut s = String::from("id,v\n");
        for i in 0..5 {
            s.push_str(&format!("{},{}\n", seed * 100 + i, (seed + i) % 7));
        }
        s
    };
    let mut files = vec![(
        "workspace.toml".to_string(),
        r#"
[workspace]
name = "w"

[datasets.events]
path = "data/events"
format = "csv"
[datasets.events.scan]
partition_cols = { day = "string" }

[rules.by_day]
sql = "SELECT day, count(*) AS n, sum(60 / (v + 1)) AS total FROM events GROUP BY day"
incremental = { by = "events" }
"#
        .to_string(),
    )];
    for d in 0..12 {
        files.push((format!("data/events/day={d:02}/part.csv"), csv(d)));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let ws = workspace_with(&files);
    let root = ws.path();
    let mut w = Watcher::start(root);
    let published = std::fs::read(out(root, "by_day")).unwrap();
    // Division by zero when the rule executes.
    save_by_rename(root, "data/events/day=04/part.csv", "id,v\n1,2\n3,-1\n");
    let events = w.next_build();
    assert_eq!(done(&events)["ok"], false, "{events:#?}");
    assert_eq!(std::fs::read(out(root, "by_day")).unwrap(), published, "the last good output stays");
    save_by_rename(root, "data/events/day=04/part.csv", &csv(40));
    let events = w.next_build();
    assert_eq!(done(&events)["ok"], true, "{events:#?}");
    let rule = events.iter().find(|e| e["event"] == "rule" && e["rule"] == "by_day").unwrap();
    assert!(
        rule["reasons"].to_string().contains("recomputed 1 of 12 partitions of `events`"),
        "the mended partition alone: {rule}"
    );
    assert_eq!(tree_bytes(&root.join("out")), clean_outputs(root));
}
