//! The shared remote cache (`[cache.remote]`) against a real S3 API server:
//! `moto_server` (PyPI `moto[server]`, installed by `.ci/run`), started here
//! on a free port of 127.0.0.1 per test; and against a `file://` directory.
//!
//! Without `moto_server` on PATH (or `RELSPEC_MOTO_SERVER`) the S3 tests say
//! so and pass, unless `RELSPEC_REQUIRE_MOTO=1` (set by `.ci/run`).

mod common;

use common::moto::{self, Moto};
use common::*;
use std::net::TcpListener;
use std::path::Path;

const BUCKET: &str = moto::BUCKET;

/// The default workspace with `[cache.remote]` appended.
fn workspace(remote: &str) -> tempfile::TempDir {
    let dir = default_workspace();
    let manifest = dir.path().join("workspace.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!("\n[cache.remote]\n{remote}\n"));
    std::fs::write(&manifest, text).unwrap();
    dir
}

/// The relspec process with the S3 environment of `endpoint` (moto's test
/// credentials), no daemon and no remote switches from the caller.
fn s3_process(root: &Path, endpoint: &str) -> std::process::Command {
    let mut c = relspec_process(root);
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("RELSPEC_DAEMON", "0")
        .env_remove("RELSPEC_REMOTE")
        .env_remove("RELSPEC_REMOTE_WRITE");
    c
}

/// `relspec build --json` with the S3 environment of `endpoint`, and more
/// variables; (exit code, report, stderr).
fn build(root: &Path, endpoint: &str, env: &[(&str, &str)]) -> (i32, serde_json::Value, String) {
    let mut c = s3_process(root, endpoint);
    c.args(["build", "--json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("not a report ({e}):\n{stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn ok_build(root: &Path, endpoint: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let (code, report, stderr) = build(root, endpoint, env);
    assert_eq!(code, 0, "build failed:\n{report}\n{stderr}");
    report
}

fn statuses(report: &serde_json::Value, status: &str) -> Vec<String> {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect()
}

fn remote_reused(report: &serde_json::Value) -> usize {
    report["rules"].as_array().unwrap().iter().filter(|r| r["remote"] == true).count()
}

/// Published outputs (`out/`) of a workspace, by path.
fn published(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree_bytes(&root.join("out"))
}

const S3: &str = "url = \"s3://relspec-cache/team/main\"";

#[test]
fn a_fresh_clone_reuses_everything_another_machine_uploaded() {
    let Some(moto) = Moto::start() else { return };
    let a = workspace(&format!("{S3}\nwrite = true"));
    let ra = ok_build(a.path(), &moto.endpoint(), &[]);
    assert_eq!(built_rules(&ra).len(), DEFAULT_RULES, "{ra}");
    assert_eq!(ra["remote"]["uploaded"], DEFAULT_RULES, "{ra}");
    // Small outputs travel inside their entry: one object per output key.
    assert_eq!(moto.keys("team/main/entries/").len(), DEFAULT_RULES);
    assert!(moto.keys("team/main/objects/").is_empty());
    // And the whole build's pack: every entry again, for one request.
    assert_eq!(ra["remote"]["pack_uploaded"], true, "{ra}");
    assert_eq!(moto.keys("team/main/packs/").len(), 1);

    // Machine B: the same sources, an empty local cache, read-only.
    let b = copy_sources(a.path());
    let manifest = std::fs::read_to_string(b.path().join("workspace.toml")).unwrap();
    std::fs::write(b.path().join("workspace.toml"), manifest.replace("write = true", "write = false")).unwrap();
    let rb = ok_build(b.path(), &moto.endpoint(), &[]);
    assert!(built_rules(&rb).is_empty(), "B executed rules: {rb}");
    assert_eq!(remote_reused(&rb), DEFAULT_RULES, "{rb}");
    assert_eq!(rb["remote"]["hits"], DEFAULT_RULES);
    assert_eq!(rb["remote"]["packed"], DEFAULT_RULES, "every output came in the pack: {rb}");
    assert_eq!(rb["remote"]["misses"], 0, "no rule was looked up on its own: {rb}");
    assert_eq!(published(a.path()), published(b.path()), "B publishes A's bytes");
    // The run bundle records the remote hits.
    let runs = std::fs::read_dir(b.path().join("cache/runs")).unwrap().count();
    assert_eq!(runs, 1);
    let run = std::fs::read_dir(b.path().join("cache/runs")).unwrap().next().unwrap().unwrap().path();
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(run).unwrap()).unwrap();
    let hits = bundle["rules"].as_object().unwrap().values().filter(|r| r["remote"] == true).count();
    assert_eq!(hits, DEFAULT_RULES, "{bundle}");
    // `explain` works on a downloaded output (its artifact came along).
    let rule = statuses(&rb, "reused")[0].clone();
    let explained = ok(b.path(), &["explain", &rule]);
    assert!(explained.contains("physical plan with metrics (last run)"), "{explained}");

    // A warm no-op makes no request: with the server gone it says nothing
    // about the remote (the full path, not the snapshot, to be sure).
    drop(moto);
    let again = ok_build(b.path(), "http://127.0.0.1:9", &[("RELSPEC_SNAPSHOT", "0")]);
    assert_eq!(statuses(&again, "reused").len(), DEFAULT_RULES);
    assert!(again.get("remote").is_none(), "a warm no-op touched the remote: {again}");
}

/// A writer uploads with objects up to `inline_max` bytes inside their
/// entries; one object (in its entry or on its own) is corrupted.
fn corrupted_object_case(inline_max: &str) {
    let Some(moto) = Moto::start() else { return };
    let env = [("RELSPEC_REMOTE_INLINE_MAX", inline_max)];
    let a = workspace(&format!("{S3}\nwrite = true"));
    ok_build(a.path(), &moto.endpoint(), &env);
    // Flip one byte of an object (same size: only the hashes can tell).
    let objects = moto.keys("team/main/objects/");
    let inline = objects.is_empty();
    assert_eq!(inline, inline_max != "0", "objects: {objects:?}");
    let victim = if inline { moto.keys("team/main/entries/")[0].clone() } else { objects[0].clone() };
    let (status, mut bytes) = moto.http("GET", &format!("/{BUCKET}/{victim}"), b"");
    assert_eq!(status, 200);
    let original = bytes.clone();
    let at = bytes.len() - 200; // inside the object, before its footer's magic
    bytes[at] = bytes[at].wrapping_add(1);
    assert_eq!(moto.http("PUT", &format!("/{BUCKET}/{victim}"), &bytes).0, 200);
    // The build's pack holds the same entry (objects inside entries only):
    // its copy is corrupted the same way.
    let packs = moto.keys("team/main/packs/");
    assert_eq!(packs.len(), usize::from(inline), "packs: {packs:?}");
    if let Some(pack) = packs.first() {
        let (_, mut bytes) = moto.http("GET", &format!("/{BUCKET}/{pack}"), b"");
        let start = bytes.windows(original.len()).position(|w| w == original).expect("the entry is in the pack");
        bytes[start + at] = bytes[start + at].wrapping_add(1);
        assert_eq!(moto.http("PUT", &format!("/{BUCKET}/{pack}"), &bytes).0, 200);
    }

    // B (a writer) rejects it, rebuilds that rule locally and publishes the
    // right bytes.
    let b = copy_sources(a.path());
    let (code, rb, stderr) = build(b.path(), &moto.endpoint(), &env);
    assert_eq!(code, 0, "{rb}\n{stderr}");
    assert!(rb["remote"]["rejected"].as_u64().unwrap() >= 1, "{rb}");
    assert!(stderr.contains("rejected"), "{stderr}");
    assert_eq!(stderr.contains("entry of remote cache pack"), inline, "the pack's copy is rejected too: {stderr}");
    assert!(!built_rules(&rb).is_empty());
    assert_eq!(published(a.path()), published(b.path()), "no bad bytes published");
    // The writer repaired the entry (and replaced the pack): a third machine
    // reuses everything, with nothing to warn about.
    let c = copy_sources(a.path());
    let rc = ok_build(c.path(), &moto.endpoint(), &[("RELSPEC_REMOTE_WRITE", "0")]);
    assert!(built_rules(&rc).is_empty(), "{rc}");
    assert_eq!(rc["remote"]["rejected"].as_u64().unwrap_or(0), 0, "{rc}");
    assert!(rc["remote"].get("warnings").is_none(), "{rc}");
    if inline {
        assert_eq!(rc["remote"]["packed"], DEFAULT_RULES, "{rc}");
    }
    assert_eq!(published(a.path()), published(c.path()));
}

#[test]
fn a_corrupted_object_inside_its_entry_is_detected_rebuilt_and_repaired() {
    corrupted_object_case("1048576");
}

#[test]
fn a_corrupted_object_stored_on_its_own_is_detected_rebuilt_and_repaired() {
    corrupted_object_case("0");
}

#[test]
fn a_pack_of_another_workspace_state_is_not_used_and_rules_are_looked_up_one_by_one() {
    let Some(moto) = Moto::start() else { return };
    let a = workspace(&format!("{S3}\nwrite = true"));
    ok_build(a.path(), &moto.endpoint(), &[]);
    // B declares one rule more: its build is not A's, so A's pack is not
    // fetched under B's pack key; every rule of A's is still found by its own key.
    let b = copy_sources(a.path());
    let manifest = b.path().join("workspace.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("write = true", "write = false");
    std::fs::write(&manifest, format!("{text}\n[rules.extra]\nsql = \"SELECT 1 AS x\"\n")).unwrap();
    let rb = ok_build(b.path(), &moto.endpoint(), &[]);
    assert!(rb["remote"].get("packed").is_none(), "{rb}");
    assert_eq!(rb["remote"]["hits"], DEFAULT_RULES, "{rb}");
    assert_eq!(built_rules(&rb), vec!["extra".to_string()], "{rb}");
    assert_eq!(moto.keys("team/main/packs/").len(), 1, "a reader uploads no pack");
}

#[test]
fn two_concurrent_writers_of_the_same_keys_leave_one_valid_entry_each() {
    let Some(moto) = Moto::start() else { return };
    let a = workspace(&format!("{S3}\nwrite = true"));
    let b = copy_sources(a.path());
    let endpoint = moto.endpoint();
    let (ea, eb) = (endpoint.clone(), endpoint.clone());
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
    let ta = std::thread::spawn(move || ok_build(&pa, &ea, &[]));
    let tb = std::thread::spawn(move || ok_build(&pb, &eb, &[]));
    let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
    for r in [&ra, &rb] {
        assert!(r["remote"]["warnings"].as_array().is_none_or(|w| w.is_empty()), "{r}");
    }
    assert_eq!(moto.keys("team/main/entries/").len(), DEFAULT_RULES);
    let c = copy_sources(a.path());
    let rc = ok_build(c.path(), &endpoint, &[("RELSPEC_REMOTE_WRITE", "0")]);
    assert!(built_rules(&rc).is_empty(), "{rc}");
    assert_eq!(rc["remote"]["hits"], DEFAULT_RULES, "{rc}");
    assert_eq!(published(a.path()), published(c.path()));
    assert_eq!(published(b.path()), published(c.path()));
}

#[test]
fn a_stopped_or_silent_server_degrades_to_local_building_with_one_warning() {
    let Some(mut moto) = Moto::start() else { return };
    let a = workspace(&format!("{S3}\nwrite = true\ntimeout = \"500ms\"\nconnect_timeout = \"500ms\""));
    ok_build(a.path(), &moto.endpoint(), &[]);
    let b = copy_sources(a.path());
    ok_build(b.path(), &moto.endpoint(), &[]);
    // Mid-session the server stops; a new rule misses locally.
    moto.stop();
    let manifest = b.path().join("workspace.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}\n[rules.extra]\nsql = \"SELECT 1 AS x\"\n")).unwrap();
    let (code, rb, stderr) = build(b.path(), &moto.endpoint(), &[]);
    assert_eq!(code, 0, "{rb}\n{stderr}");
    assert_eq!(stderr.matches("unavailable").count(), 1, "one warning:\n{stderr}");
    assert_eq!(built_rules(&rb), vec!["extra".to_string()], "{rb}");

    // A server that accepts and never answers: the timeout ends each wait.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let c = copy_sources(a.path());
    let (code, rc, stderr) = build(c.path(), &endpoint, &[]);
    assert_eq!(code, 0, "{rc}\n{stderr}");
    assert_eq!(built_rules(&rc).len(), DEFAULT_RULES, "{rc}");
    assert_eq!(stderr.matches("unavailable").count(), 1, "{stderr}");
    assert_eq!(published(a.path()), published(c.path()));
}

#[test]
fn read_only_machines_upload_nothing() {
    let Some(moto) = Moto::start() else { return };
    let a = workspace(S3);
    let ra = ok_build(a.path(), &moto.endpoint(), &[]);
    assert_eq!(built_rules(&ra).len(), DEFAULT_RULES);
    assert_eq!(ra["remote"]["misses"], DEFAULT_RULES, "{ra}");
    assert!(ra["remote"].get("uploaded").is_none(), "{ra}");
    assert!(moto.keys("team/main/").is_empty(), "a reader uploaded: {:?}", moto.keys(""));
    // RELSPEC_REMOTE_WRITE=1 turns a reader into a writer (as CI does).
    let b = copy_sources(a.path());
    let rb = ok_build(b.path(), &moto.endpoint(), &[("RELSPEC_REMOTE_WRITE", "1")]);
    assert_eq!(rb["remote"]["uploaded"], DEFAULT_RULES, "{rb}");
    // RELSPEC_REMOTE=0 ignores the remote altogether.
    let c = copy_sources(a.path());
    let rc = ok_build(c.path(), &moto.endpoint(), &[("RELSPEC_REMOTE", "0")]);
    assert_eq!(built_rules(&rc).len(), DEFAULT_RULES);
    assert!(rc.get("remote").is_none(), "{rc}");
}

#[test]
fn a_file_url_remote_is_shared_the_same_way() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("url = \"file://{}\"\nwrite = true", shared.path().join("remote").display());
    let a = workspace(&url);
    let ra = ok_build(a.path(), "", &[]);
    assert_eq!(ra["remote"]["uploaded"], DEFAULT_RULES, "{ra}");
    let b = copy_sources(a.path());
    let rb = ok_build(b.path(), "", &[]);
    assert!(built_rules(&rb).is_empty(), "{rb}");
    assert_eq!(published(a.path()), published(b.path()));
    // Human output names the remote reuse.
    let c = copy_sources(a.path());
    let text = ok(c.path(), &["build"]);
    assert!(text.contains("(remote)"), "{text}");
    assert!(text.contains(&format!("{DEFAULT_RULES} reused")), "{text}");
}

#[test]
fn a_bad_remote_configuration_is_an_error_with_its_location() {
    let a = workspace("url = \"https://example.com/cache\"");
    let err = fails(a.path(), &["build"]);
    assert!(err.contains("[cache.remote] url `https://example.com/cache` is not an object store URL"), "{err}");
    assert!(err.contains("workspace.toml"), "{err}");
    let b = workspace("url = \"s3://b/p\"\ntimeout = \"soon\"");
    let err = fails(b.path(), &["build"]);
    assert!(err.contains("[cache.remote] timeout: invalid duration `soon`"), "{err}");
    let c = workspace("url = \"s3://b/p\"\ntoken = \"secret\"");
    let err = fails(c.path(), &["build"]);
    assert!(err.contains("token"), "credentials are not accepted in the manifest: {err}");
}

/// `relspec` with the S3 environment of `endpoint`: (exit code, stdout, stderr).
fn run_s3(root: &Path, endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = s3_process(root, endpoint).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_dataset_on_object_storage_is_listed_fingerprinted_and_read() {
    let Some(moto) = Moto::start() else { return };
    let put = |key: &str, text: &str| assert_eq!(moto.http("PUT", &format!("/{BUCKET}/{key}"), text.as_bytes()).0, 200);
    put("lake/events/part-0.csv", "id,kind\n1,a\n2,b\n");
    put("lake/events/part-1.csv", "id,kind\n3,a\n");
    put("lake/events/_SUCCESS", "");
    put("lake/events/notes.txt", "not data");
    let manifest = format!(
        r#"[datasets.events]
path = "s3://{BUCKET}/lake/events/"
format = "csv"

[datasets.first]
path = "s3://{BUCKET}/lake/events/part-0.csv"

[rules.by_kind]
sql = "SELECT kind, COUNT(*) AS n FROM events GROUP BY kind"

[rules.first_ids]
sql = "SELECT id FROM first"
"#
    );
    let ws = workspace_with(&[("workspace.toml", &manifest)]);
    let root = ws.path();
    let ep = moto.endpoint();
    let (code, _, err) = run_s3(root, &ep, &["build"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_rows(&out(root, "by_kind")), vec![vec!["a", "2"], vec!["b", "1"]]);
    assert_eq!(read_rows(&out(root, "first_ids")), vec![vec!["1"], vec!["2"]]);
    // The registry shows the objects it listed (hidden names and other
    // extensions left out) and a fingerprint from their ETags.
    let (_, listed, _) = run_s3(root, &ep, &["datasets", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let text = listed.to_string();
    assert!(text.contains(&format!("s3://{BUCKET}/lake/events/part-1.csv")), "{text}");
    assert!(!text.contains("_SUCCESS") && !text.contains("notes.txt"), "{text}");

    // Nothing changed: reused (listed again, no snapshot stands for it).
    let (code, stdout, err) = run_s3(root, &ep, &["build", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(built_rules(&report).is_empty(), "{report}");
    assert!(report.get("snapshot").is_none(), "{report}");

    // An object rewritten: its ETag changes, the readers of its dataset rebuild.
    put("lake/events/part-1.csv", "id,kind\n3,b\n4,c\n");
    let (code, stdout, err) = run_s3(root, &ep, &["build", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(built_rules(&report), vec!["by_kind".to_string()], "{report}");
    assert_eq!(read_rows(&out(root, "by_kind")), vec![vec!["a", "1"], vec!["b", "2"], vec!["c", "1"]]);

    // A prefix with no data is an error naming the dataset and its line.
    let bad = manifest.replace("lake/events/part-0.csv", "lake/nothing/here.csv");
    std::fs::write(root.join("workspace.toml"), bad).unwrap();
    let (code, stdout, err) = run_s3(root, &ep, &["build"]);
    assert_eq!(code, 1, "{stdout}{err}");
    assert!(err.contains("first") && err.contains("workspace.toml:5"), "{err}");
    // The last good outputs stay.
    assert_eq!(read_rows(&out(root, "first_ids")), vec![vec!["1"], vec!["2"]]);
}

#[test]
fn a_dataset_url_of_an_unknown_scheme_or_a_remote_source_is_an_error() {
    let ws = workspace_with(&[("workspace.toml", "[datasets.e]\npath = \"ftp://host/e.csv\"\n")]);
    let err = fails(ws.path(), &["build"]);
    assert!(err.contains("dataset `e`: `ftp://host/e.csv` is not a path or an object store URL"), "{err}");
    let ws = workspace_with(&[("workspace.toml", "[sources.code]\npath = \"s3://b/src/\"\n")]);
    let err = fails(ws.path(), &["build"]);
    assert!(err.contains("sources are read from local files"), "{err}");
}

#[test]
fn push_seeds_a_remote_from_an_existing_cache() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("url = \"file://{}\"", shared.path().join("remote").display());
    // A read-only machine builds: nothing uploaded.
    let a = workspace(&url);
    let ra = ok_build(a.path(), "", &[]);
    assert!(ra["remote"].get("uploaded").is_none(), "{ra}");
    // `relspec push` uploads every current output, whatever `write` says.
    let text = ok(a.path(), &["push"]);
    assert!(text.contains(&format!("uploaded {DEFAULT_RULES} outputs")), "{text}");
    assert!(text.contains("uploaded the pack of the whole build"), "{text}");
    let again = ok(a.path(), &["push"]);
    assert!(
        again.contains("uploaded 0 outputs") && again.contains(&format!("{DEFAULT_RULES} already there")),
        "{again}"
    );
    let b = copy_sources(a.path());
    let rb = ok_build(b.path(), "", &[]);
    assert!(built_rules(&rb).is_empty(), "{rb}");
    assert_eq!(rb["remote"]["packed"], DEFAULT_RULES, "{rb}");
    assert_eq!(published(a.path()), published(b.path()));
    // Without a remote, push says so.
    let c = default_workspace();
    let err = fails(c.path(), &["push"]);
    assert!(err.contains("no [cache.remote] in workspace.toml"), "{err}");
}
