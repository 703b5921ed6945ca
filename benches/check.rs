//! Whole-process `relspec check` benchmark (parse, plan, contracts; no
//! execution) on generated workspaces of N rules: cold (fresh cache), warm
//! with nothing changed, and warm after editing one rule. See benches/README.md.

mod common;
use common::{median, relspec, sizes};
use std::path::Path;

fn check(root: &Path) -> (f64, serde_json::Value) {
    relspec(root, &["check", "--json"])
}

fn main() {
    let sizes = sizes(&[1000, 10000]);
    println!(
        "| rules | cold check | warm check, nothing changed (median of 5) | warm check after a one-rule edit (median of 5) |"
    );
    println!("|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        relspec_core::synth::write_workspace(root, n, 2000).unwrap();
        let (cold, v) = check(root);
        assert_eq!(v["planned"].as_u64(), Some(n as u64));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        check(root);
        let warm = median((0..5).map(|_| check(root).0).collect());
        let target = n / 2 + 5; // a chain link in the middle of the workspace
        let mut edits = Vec::new();
        for variant in 1..=5 {
            let path = root.join("rules").join(format!("{}.sql", relspec_core::synth::rule_name(target)));
            std::fs::write(&path, relspec_core::synth::rule_sql(target, variant)).unwrap();
            let (wall, v) = check(root);
            assert_eq!(v["planned"].as_u64(), Some(1), "one rule re-planned");
            edits.push(wall);
        }
        println!("| {n} | {cold:.0} ms | {warm:.1} ms | {:.1} ms |", median(edits));
    }
}
