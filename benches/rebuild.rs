//! Whole-process rebuild benchmark of the real `relspec` binary on generated
//! workspaces of N rules (see benches/README.md for the command and figures).
//!
//! For each N: cold build, no-op rebuild (median of 7), and rebuild after
//! editing one rule (median of 5 edits), reporting wall time and the
//! overhead beyond the edited rule's own execution time.

mod common;
use common::{median, relspec, sizes};

fn built_ms(report: &serde_json::Value) -> (usize, f64) {
    let rules = report["rules"].as_array().unwrap();
    let built: Vec<&serde_json::Value> = rules.iter().filter(|r| r["status"] == "built").collect();
    (built.len(), built.iter().map(|r| r["elapsed_ms"].as_f64().unwrap()).sum())
}

fn main() {
    let sizes = sizes(&[10, 100, 1000]);
    println!(
        "| rules | cold build | no-op rebuild (median of 7) | one-rule edit: wall | rule execution | overhead beyond the rule |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        relspec_core::synth::write_workspace(root, n, 2000).unwrap();
        let (cold, _) = relspec(root, &["build", "--json"]);
        // Let the racily-clean window pass so the stat cache is trusted, then warm once.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        relspec(root, &["build", "--json"]);
        let noop = median((0..7).map(|_| relspec(root, &["build", "--json"]).0).collect());
        // Edit the last rule of a chain (nothing reads it), five times.
        let target = n - 1;
        let mut walls = Vec::new();
        let mut execs = Vec::new();
        for variant in 1..=5 {
            let path = root.join("rules").join(format!("{}.sql", relspec_core::synth::rule_name(target)));
            std::fs::write(&path, relspec_core::synth::rule_sql(target, variant)).unwrap();
            let (wall, report) = relspec(root, &["build", "--json"]);
            let (count, ms) = built_ms(&report);
            assert_eq!(count, 1, "exactly the edited rule rebuilds");
            walls.push(wall);
            execs.push(ms);
        }
        let (w, e) = (median(walls.clone()), median(execs.clone()));
        let overhead = median(walls.iter().zip(&execs).map(|(w, e)| w - e).collect());
        println!("| {n} | {cold:.0} ms | {noop:.1} ms | {w:.1} ms | {e:.1} ms | {overhead:.1} ms |");
    }
}
