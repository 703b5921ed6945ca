//! `relspec daemon`: builds and status forwarded by the CLI to one resident
//! process (descriptors passed over a Unix socket), answering exactly as a
//! fresh process would; a client it cannot answer runs the command itself.

mod common;
use common::*;
use relspec_core::synth;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A running daemon, killed when dropped; its log is a file beside the workspace.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn start(root: &Path, log_dir: &Path) -> Daemon {
        let log = log_dir.join(format!("daemon-{}.log", std::process::id()));
        let child = relspec_process(root)
            .arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        // Serving once it says so (a stale socket may already be there).
        let t = Instant::now();
        while !d.log().contains("serving") {
            assert!(t.elapsed() < Duration::from_secs(20), "the daemon did not start: {}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(root.join("cache/daemon.sock").exists());
        d
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn served(&self) -> usize {
        self.log().matches("served").count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A built 12-rule workspace served by a daemon (workspace, log dir, daemon).
fn served() -> (tempfile::TempDir, tempfile::TempDir, Daemon) {
    let (dir, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth::write_workspace(dir.path(), 12, 200).unwrap();
    ok(dir.path(), &["build"]);
    let d = Daemon::start(dir.path(), logs.path());
    (dir, logs, d)
}

/// Builds, status and check go through the daemon: its answers, on the client's
/// own stdout and exit status, are a fresh process's (outputs equal a clean
/// build's after an edit; a broken rule fails with its diagnostic).
#[test]
fn the_cli_forwards_builds_and_status_to_the_daemon() {
    let (dir, _logs, d) = served();
    let root = dir.path();
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["build", "--json"])).unwrap();
    assert_eq!(built_rules(&v), Vec::<String>::new());
    assert_eq!(d.served(), 1, "{}", d.log());
    // An edit: built by the daemon, the report on the client's stdout.
    std::fs::write(root.join("rules/r00007.sql"), synth::rule_sql(7, 1)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["build", "--json"])).unwrap();
    assert_eq!(built_rules(&v), ["r00007", "r00008", "r00009"]);
    assert_eq!(d.served(), 2);
    assert_equals_clean_build(root, &["r00007", "r00009", "r00011"]);
    let status = ok(root, &["status"]);
    assert!(status.contains("0 stale, 12 fresh"), "{status}");
    assert_eq!(d.served(), 3);
    let check: serde_json::Value = serde_json::from_str(&ok(root, &["check", "--json"])).unwrap();
    assert_eq!((check["ok"].as_bool(), check["rules_checked"].as_u64()), (Some(true), Some(12)), "{check}");
    assert_eq!(d.served(), 4);
    // A broken rule: the client exits non-zero with the located error.
    std::fs::write(root.join("rules/r00004.sql"), "SELECT kind FROM r0003\n").unwrap();
    let out = fails(root, &["build"]);
    assert!(out.contains("r0003") && out.contains("r00004.sql"), "{out}");
    assert_eq!(d.served(), 5, "{}", d.log());
}

/// A client whose binary or `RELSPEC_*` variables differ is refused and
/// builds itself; so does one whose daemon is gone (a stale socket), and a
/// new daemon replaces the stale socket.
#[test]
fn a_client_the_daemon_cannot_answer_runs_the_command_itself() {
    let (dir, logs, d) = served();
    let root = dir.path();
    let out = relspec(root).env("RELSPEC_SNAPSHOT", "0").args(["build", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert!(d.log().contains("refused"), "{}", d.log());
    assert_eq!(d.served(), 0);
    // Opting out does not even connect.
    let out = relspec(root).env("RELSPEC_DAEMON", "0").args(["build"]).output().unwrap();
    assert!(out.status.success());
    drop(d);
    assert!(root.join("cache/daemon.sock").exists(), "a killed daemon leaves its socket");
    ok(root, &["build"]);
    let d = Daemon::start(root, logs.path());
    ok(root, &["build"]);
    assert_eq!(d.served(), 1, "{}", d.log());
}
