//! `[profile] executor = "ballista"` on a standalone Ballista cluster (a
//! scheduler and an executor started in the relspec process): rules whose
//! plans can travel execute there, the others here, and every published
//! file equals a local build's byte for byte. Needs `--features ballista`.
#![cfg(feature = "ballista")]

mod common;

use common::*;

fn with_profile(dir: &std::path::Path, lines: &str) {
    let manifest = dir.join("workspace.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("[profile]"), "the default workspace has a [profile] table");
    std::fs::write(&manifest, text.replacen("[profile]", &format!("[profile]\n{lines}"), 1)).unwrap();
}

/// `build --json` in `root` (must succeed): each rule's name and where it
/// executed (its reason saying so, or "" for rules that never go to a
/// cluster), and the report.
fn build_where(root: &std::path::Path) -> (std::collections::BTreeMap<String, String>, serde_json::Value) {
    let out = relspec_process(root).args(["build", "--json"]).env("RELSPEC_DAEMON", "0").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let mut at = std::collections::BTreeMap::new();
    for r in report["rules"].as_array().unwrap() {
        let reasons = r["reasons"].as_array().cloned().unwrap_or_default();
        let on = reasons.iter().filter_map(|x| x.as_str()).find(|x| x.starts_with("executed ")).unwrap_or_default();
        at.insert(r["rule"].as_str().unwrap().to_string(), on.to_string());
    }
    (at, report)
}

const ON_CLUSTER: &str = "executed on the Ballista cluster";

#[test]
fn a_standalone_cluster_builds_the_same_bytes_as_local_execution() {
    let local = default_workspace();
    ok(local.path(), &["build"]);
    let cluster = copy_sources(local.path());
    with_profile(cluster.path(), "executor = \"ballista\"\nscheduler = \"standalone\"");
    let (at, report) = build_where(cluster.path());
    // Rules calling relspec's own function run there too (the standalone
    // cluster is started with the client's functions).
    for rule in ["edges", "path_segments", "calls"] {
        assert_eq!(at[rule], ON_CLUSTER, "{report}");
    }
    assert_eq!(built_rules(&report).len(), DEFAULT_RULES, "{report}");
    assert_eq!(tree_bytes(&local.path().join("out")), tree_bytes(&cluster.path().join("out")));
}

/// A `relspec cluster` process, killed when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A scheduler and one executor as separate `relspec cluster` processes on
/// free ports (`stock`: without relspec's functions, like Ballista's own
/// binaries): the scheduler's `df://` URL, and the processes.
fn start_cluster(work: &std::path::Path, stock: bool) -> (String, Vec<Process>) {
    let (port, flight, grpc) = (free_port(), free_port(), free_port());
    let spawn = |args: Vec<String>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"));
        c.args(&args).args(stock.then_some("--stock")).current_dir(work);
        c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        Process(c.spawn().unwrap())
    };
    let scheduler = spawn(vec!["cluster".into(), "scheduler".into(), "--bind".into(), format!("127.0.0.1:{port}")]);
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 60, "the scheduler did not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("df://127.0.0.1:{port}");
    let executor = spawn(vec![
        "cluster".into(),
        "executor".into(),
        "--scheduler".into(),
        url.clone(),
        "--port".into(),
        flight.to_string(),
        "--grpc-port".into(),
        grpc.to_string(),
        "--work-dir".into(),
        work.join("executor").to_string_lossy().into_owned(),
    ]);
    (url, vec![executor, scheduler])
}

#[test]
fn a_cluster_of_relspec_processes_runs_rules_calling_relspec_functions() {
    let local = default_workspace();
    ok(local.path(), &["build"]);
    let work = tempfile::tempdir().unwrap();
    let (url, _processes) = start_cluster(work.path(), false);
    let cluster = copy_sources(local.path());
    with_profile(cluster.path(), &format!("executor = \"ballista\"\nscheduler = \"{url}\""));
    let (at, report) = build_where(cluster.path());
    // `normalize_path` (edges, path_segments) and DataFusion's nested
    // functions (`string_to_array`, path_segments) decode in the scheduler
    // and the executor.
    for rule in ["edges", "path_segments", "calls", "callee_counts"] {
        assert_eq!(at[rule], ON_CLUSTER, "{report}");
    }
    assert_eq!(built_rules(&report).len(), DEFAULT_RULES, "{report}");
    assert_eq!(tree_bytes(&local.path().join("out")), tree_bytes(&cluster.path().join("out")));
}

#[test]
fn on_a_stock_cluster_the_rules_it_cannot_decode_run_here_and_say_why() {
    let local = default_workspace();
    // A rule calling a DataFusion function Ballista's own registry lacks.
    let manifest = local.path().join("workspace.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let extra =
        "[rules.dirs]\nsql = \"SELECT file_id, array_length(string_to_array(path, '/')) AS depth FROM files\"\n";
    std::fs::write(&manifest, format!("{text}\n{extra}")).unwrap();
    ok(local.path(), &["build"]);
    let work = tempfile::tempdir().unwrap();
    let (url, _processes) = start_cluster(work.path(), true);
    let cluster = copy_sources(local.path());
    with_profile(cluster.path(), &format!("executor = \"ballista\"\nscheduler = \"{url}\""));
    let (at, report) = build_where(cluster.path());
    for rule in ["edges", "path_segments"] {
        assert!(at[rule].starts_with("executed here: the cluster does not run relspec's functions"), "{report}");
        assert!(at[rule].contains("relspec cluster"), "{report}");
    }
    assert!(at["dirs"].starts_with("executed here: the cluster could not run it"), "{report}");
    assert_eq!(at["calls"], ON_CLUSTER, "{report}");
    assert!(report["errors"].as_array().is_none_or(|e| e.is_empty()), "{report}");
    assert_eq!(tree_bytes(&local.path().join("out")), tree_bytes(&cluster.path().join("out")));
}

#[test]
fn an_unreachable_scheduler_fails_the_build_with_its_address() {
    let ws = default_workspace();
    with_profile(ws.path(), "executor = \"ballista\"\nscheduler = \"df://127.0.0.1:9\"");
    let err = fails(ws.path(), &["build"]);
    assert!(err.contains("cannot reach the Ballista scheduler at df://127.0.0.1:9"), "{err}");
    assert!(err.contains("[profile] scheduler"), "{err}");
}

#[test]
fn cluster_processes_with_a_bad_address_say_which_before_starting() {
    let ws = default_workspace();
    let err = fails(ws.path(), &["cluster", "scheduler", "--bind", "nowhere"]);
    assert!(err.contains("`nowhere` is not an address to bind"), "{err}");
    assert!(!err.contains("Ctrl-C"), "nothing started: {err}");
    let err = fails(ws.path(), &["cluster", "executor", "--scheduler", "df://:x"]);
    assert!(err.contains("`df://:x` is not a scheduler address"), "{err}");
}
