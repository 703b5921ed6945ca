//! Whole-process rebuild benchmark of the real `relspec` binary on generated
//! workspaces of N rules (see benches/README.md for the command and figures).
//!
//! For each N: cold build, no-op rebuild (median of 7), and rebuild after
//! editing one rule (median of 5 edits), reporting wall time and the
//! overhead beyond the edited rule's own execution time. Then the same
//! no-op and edits resident: called in this one process through
//! `relspec_core::snapshot::try_build` (what a daemon answering the CLI
//! would pay, minus the socket, with the same stats of every stamped path).

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
    let mut resident = Vec::new();
    let mut daemon = Vec::new();
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
        resident.push(resident_figures(root, target));
        daemon.push(daemon_figures(root, target));
    }
    println!("\nResident (the same work called in one process, no start or exit):\n");
    println!("| rules | no-op (median of 7) | one-rule edit: wall | beyond the rule |");
    println!("|---:|---:|---:|---:|");
    for (n, noop, w, beyond) in resident {
        println!("| {n} | {noop:.1} ms | {w:.1} ms | {beyond:.1} ms |");
    }
    println!("\nThrough `relspec daemon` (the same CLI commands, forwarded; process start included):\n");
    println!("| rules | no-op (median of 7) | one-rule edit: wall | beyond the rule |");
    println!("|---:|---:|---:|---:|");
    for (n, noop, w, beyond) in daemon {
        println!("| {n} | {noop:.1} ms | {w:.1} ms | {beyond:.1} ms |");
    }
}

/// No-op and one-rule edits as CLI processes answered by a `relspec daemon`.
fn daemon_figures(root: &std::path::Path, target: usize) -> (usize, f64, f64, f64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"))
        .current_dir(root)
        .arg("daemon")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Serving once it says so.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("serving"), "{line}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    relspec(root, &["build", "--json"]);
    let noop = median((0..7).map(|_| relspec(root, &["build", "--json"]).0).collect());
    let (mut walls, mut beyond) = (Vec::new(), Vec::new());
    for variant in 11..=15 {
        let path = root.join("rules").join(format!("{}.sql", relspec_core::synth::rule_name(target)));
        std::fs::write(&path, relspec_core::synth::rule_sql(target, variant)).unwrap();
        let (wall, report) = relspec(root, &["build", "--json"]);
        let (count, ms) = built_ms(&report);
        assert_eq!(count, 1, "exactly the edited rule rebuilds");
        walls.push(wall);
        beyond.push(wall - ms);
    }
    let _ = child.kill();
    let _ = child.wait();
    (target + 1, noop, median(walls), median(beyond))
}

/// No-op and one-rule edits through the snapshot, called in this process.
fn resident_figures(root: &std::path::Path, target: usize) -> (usize, f64, f64, f64) {
    use relspec_core::build::{BuildOptions, NoProgress, Status};
    use relspec_core::snapshot::{Fast, try_build};
    let manifest = root.join("workspace.toml");
    // A snapshot recorded by this process (its identity names the binary).
    let mut p = relspec_core::project::Project::open(&manifest).unwrap();
    let full = BuildOptions { snapshot: true, ..Default::default() };
    relspec_core::build::build(&mut p, &full, &NoProgress).unwrap();
    drop(p);
    let opts = BuildOptions::default();
    let run = || {
        let t = std::time::Instant::now();
        let report = match try_build(&manifest, &[], &opts, &NoProgress) {
            Fast::Noop(r) => r,
            Fast::Partial(r, p) => {
                std::mem::forget(p);
                r
            }
            Fast::Full => panic!("the snapshot stands for this build"),
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let exec: f64 = report.rules.iter().filter(|r| r.status == Status::Built).map(|r| r.elapsed_ms).sum();
        (ms, exec)
    };
    let noop = median((0..7).map(|_| run().0).collect());
    let (mut walls, mut beyond) = (Vec::new(), Vec::new());
    for variant in 6..=10 {
        let path = root.join("rules").join(format!("{}.sql", relspec_core::synth::rule_name(target)));
        std::fs::write(&path, relspec_core::synth::rule_sql(target, variant)).unwrap();
        let (w, e) = run();
        walls.push(w);
        beyond.push(w - e);
    }
    (target + 1, noop, median(walls), median(beyond))
}
