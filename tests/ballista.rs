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

#[test]
fn a_standalone_cluster_builds_the_same_bytes_as_local_execution() {
    let local = default_workspace();
    ok(local.path(), &["build"]);
    let cluster = copy_sources(local.path());
    with_profile(cluster.path(), "executor = \"ballista\"\nscheduler = \"standalone\"");
    let out = relspec_process(cluster.path()).args(["build", "--json"]).env("RELSPEC_DAEMON", "0").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let reasons = |r: &serde_json::Value| r["reasons"].as_array().cloned().unwrap_or_default();
    let on_cluster: Vec<&str> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| reasons(r).iter().any(|x| x == "executed on the Ballista cluster"))
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(!on_cluster.is_empty(), "no rule ran on the cluster: {report}");
    assert_eq!(built_rules(&report).len(), DEFAULT_RULES, "{report}");
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
