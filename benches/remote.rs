//! The shared remote cache against a local S3 API server (`moto_server`, see
//! tests/common/moto.rs): machine A builds a generated workspace of N rules
//! and uploads; machine B, a copy of its sources with an empty local cache,
//! builds from the warm remote (every rule must be reused, none executed;
//! A's whole build left a pack, so B's outputs come in one request);
//! then the warm no-op on B with the remote configured against the same
//! no-op with the remote turned off (`RELSPEC_REMOTE=0`), through the
//! snapshot and through the full path (`RELSPEC_SNAPSHOT=0`).
//!
//! `cargo bench --profile dev --bench remote` (sizes: `RELSPEC_BENCH_SIZES`,
//! default 100,1000). Figures in benches/README.md.

mod common;
#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;

use common::{median, sizes};

/// `relspec build --json` in `root` against `endpoint`: wall ms, report.
fn build(root: &std::path::Path, endpoint: &str, env: &[(&str, &str)]) -> (f64, serde_json::Value) {
    let t = std::time::Instant::now();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"));
    c.current_dir(root)
        .args(["build", "--json"])
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("RELSPEC_DAEMON", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run relspec");
    let wall = t.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (wall, serde_json::from_slice(&out.stdout).unwrap())
}

fn count(report: &serde_json::Value, f: impl Fn(&serde_json::Value) -> bool) -> usize {
    report["rules"].as_array().unwrap().iter().filter(|r| f(r)).count()
}

fn main() {
    let Some(server) = moto::Moto::start() else { return };
    let endpoint = server.endpoint();
    println!(
        "| rules | A: cold build + upload | B: empty local cache, warm remote (median of 3; min-max) | from the pack | downloaded | B no-op, remote on / off | B no-op without snapshot, remote on / off |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    // Every directory is removed at the end, not between sizes: on this
    // machine's file system, creating files is slow for minutes after many
    // deletions (benches/README.md), which B would measure instead.
    let mut keep = vec![];
    for n in sizes(&[100, 1000]) {
        let a = tempfile::tempdir().unwrap();
        relspec_core::synth::write_workspace(a.path(), n, 2000).unwrap();
        let manifest = a.path().join("workspace.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let url = format!("s3://{}/bench-{n}", moto::BUCKET);
        std::fs::write(&manifest, format!("{text}\n[cache.remote]\nurl = \"{url}\"\n")).unwrap();
        let (cold, ra) = build(a.path(), &endpoint, &[("RELSPEC_REMOTE_WRITE", "1")]);
        assert_eq!(ra["remote"]["uploaded"], n, "A uploads every output");

        // Three machines B, each a fresh copy of the sources: the median.
        let mut walls = vec![];
        let mut rb = serde_json::Value::Null;
        let mut bs = vec![];
        for _ in 0..3 {
            let b = tempfile::tempdir().unwrap();
            for rel in ["workspace.toml", "rules", "data"] {
                copy(&a.path().join(rel), &b.path().join(rel));
            }
            let (wall, report) = build(b.path(), &endpoint, &[]);
            assert_eq!(count(&report, |r| r["status"] == "built"), 0, "B executes nothing");
            assert_eq!(count(&report, |r| r["remote"] == true), n, "B reuses every rule from the remote");
            walls.push(wall);
            rb = report;
            bs.push(b);
        }
        let (warm, low, high) = (
            median(walls.clone()),
            walls.iter().copied().fold(f64::MAX, f64::min),
            walls.iter().copied().fold(0.0, f64::max),
        );
        let b = bs.pop().unwrap();
        keep.extend(bs);
        let mb = rb["remote"]["downloaded_bytes"].as_f64().unwrap() / 1e6;
        let packed = rb["remote"]["packed"].as_u64().unwrap_or(0);

        std::thread::sleep(std::time::Duration::from_millis(1100));
        build(b.path(), &endpoint, &[]);
        let noop = |env: &[(&str, &str)]| median((0..7).map(|_| build(b.path(), &endpoint, env).0).collect());
        let (on, off) = (noop(&[]), noop(&[("RELSPEC_REMOTE", "0")]));
        let full_on = noop(&[("RELSPEC_SNAPSHOT", "0")]);
        let full_off = noop(&[("RELSPEC_SNAPSHOT", "0"), ("RELSPEC_REMOTE", "0")]);
        println!(
            "| {n} | {cold:.0} ms | **{warm:.0} ms** ({low:.0}-{high:.0}) | {packed} | {mb:.1} MB | {on:.1} / {off:.1} ms | {full_on:.1} / {full_off:.1} ms |"
        );
        keep.extend([a, b]);
    }
}

fn copy(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}
