//! Watch-mode latency benchmark: the real `relspec watch --json` on the default
//! workspace and on a generated 1000-rule workspace. For 20 edits of one rule
//! file: time from the save to the `build_done` event (its output published),
//! minus that rule's own execution time; then the watcher's idle CPU.

mod common;
use common::{Watch, median};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn bench(name: &str, root: &Path, rule_file: &str, edit: impl Fn(usize) -> String) {
    Command::new(env!("CARGO_BIN_EXE_relspec")).current_dir(root).arg("build").output().unwrap();
    let w = Watch::spawn(root);
    w.until(|v| v["event"] == "watching");
    let (mut lat, mut beyond) = (vec![], vec![]);
    for i in 1..=20 {
        std::thread::sleep(Duration::from_millis(150));
        let t = Instant::now();
        std::fs::write(root.join(rule_file), edit(i)).unwrap();
        let events = w.until(|v| v["event"] == "build_done");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let exec: f64 = events
            .iter()
            .filter(|e| e["event"] == "rule" && e["status"] == "built")
            .map(|e| e["elapsed_ms"].as_f64().unwrap())
            .sum();
        lat.push(ms);
        beyond.push(ms - exec);
    }
    let ticks_per_s = 100.0;
    let before = cpu_ticks(w.child.id());
    std::thread::sleep(Duration::from_secs(5));
    let idle = (cpu_ticks(w.child.id()) - before) as f64 / ticks_per_s / 5.0 * 100.0;
    println!("| {name} | {:.1} ms | {:.1} ms | {idle:.2} % |", median(lat), median(beyond));
}

fn main() {
    println!("| workspace | save -> published (median of 20) | beyond the rule's execution | idle CPU (5 s) |");
    println!("|---|---:|---:|---:|");
    let d = tempfile::tempdir().unwrap();
    relspec_core::scaffold::init(d.path()).unwrap();
    let stats = std::fs::read_to_string(d.path().join("rules/stats.toml")).unwrap();
    bench("default (11 rules)", d.path(), "rules/stats.toml", |i| {
        stats.replace("count(*) AS calls", &format!("count(*) + {i} AS calls"))
    });
    let g = tempfile::tempdir().unwrap();
    relspec_core::synth::write_workspace(g.path(), 1000, 2000).unwrap();
    bench("generated (1000 rules)", g.path(), "rules/r00999.sql", |i| relspec_core::synth::rule_sql(999, i));
}
