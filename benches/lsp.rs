//! `relspec lsp` keystroke latency: a rule file is open in the "editor"
//! (a client speaking the real stdio protocol to the real binary); each
//! keystroke's didChange alternately breaks a column name and fixes it, and
//! the time from sending the change to receiving that file's
//! publishDiagnostics is measured. Generated workspaces of N rules.
//! See benches/README.md.

mod common;
use common::{median, sizes};
use relspec_ide::client::{Client, uri};
use serde_json::json;
use std::time::{Duration, Instant};

fn main() {
    let sizes = sizes(&[100, 1000]);
    println!("| rules | first analysis (cold cache) | keystroke -> diagnostics, median of 20 | max of 20 |");
    println!("|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        relspec_core::synth::write_workspace(root, n, 2000).unwrap();
        let target = n / 2 + 5; // a chain link in the middle of the workspace
        let rel = format!("rules/{}.sql", relspec_core::synth::rule_name(target));
        let file_uri = uri(&root.join(&rel));
        let good = std::fs::read_to_string(root.join(&rel)).unwrap();
        let bad = good.replace("total + $bias", "totl + $bias");
        assert_ne!(good, bad);

        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"));
        cmd.arg("lsp");
        let t0 = Instant::now();
        let mut c = Client::start(cmd, root).unwrap();
        c.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": file_uri, "languageId": "sql", "version": 1, "text": good}}),
        )
        .unwrap();
        // The first answer waits for the first analysis (every rule planned).
        c.request(
            "textDocument/hover",
            json!({"textDocument": {"uri": file_uri}, "position": {"line": 1, "character": 8}}),
        )
        .unwrap();
        let first = t0.elapsed().as_secs_f64() * 1e3;
        let mut lat = Vec::new();
        for k in 0..20 {
            let text = if k % 2 == 0 { &bad } else { &good };
            let t = Instant::now();
            c.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": file_uri, "version": k + 2}, "contentChanges": [{"text": text}]}),
            )
            .unwrap();
            let d = c.diagnostics_for(&file_uri, Duration::from_secs(60)).unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(d.len(), usize::from(k % 2 == 0), "{d:?}");
        }
        let max = lat.iter().cloned().fold(0.0, f64::max);
        println!("| {n} | {first:.0} ms | {:.1} ms | {max:.1} ms |", median(lat));
        assert!(c.shutdown().unwrap().success());
    }
}
