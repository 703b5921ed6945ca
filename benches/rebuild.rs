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

/// What one way of building measured: median no-op, and per edit of the
/// target rule its wall time and the edited rule's execution time.
struct Figures {
    noop: f64,
    walls: Vec<f64>,
    execs: Vec<f64>,
}

impl Figures {
    /// Median edit wall time and median time beyond the rule's execution.
    fn edit(&self) -> (f64, f64) {
        (median(self.walls.clone()), median(self.walls.iter().zip(&self.execs).map(|(w, e)| w - e).collect()))
    }
}

/// A median of seven no-op builds, then five edits of the last rule of a
/// chain (nothing reads it) to `variants`, each built by `build` (which
/// returns the wall time, the rules built and their execution time).
fn measure(
    root: &std::path::Path,
    target: usize,
    variants: std::ops::RangeInclusive<usize>,
    mut build: impl FnMut() -> (f64, usize, f64),
) -> Figures {
    let noop = median((0..7).map(|_| build().0).collect());
    let (mut walls, mut execs) = (Vec::new(), Vec::new());
    for variant in variants {
        let path = root.join("rules").join(format!("{}.sql", relspec_core::synth::rule_name(target)));
        std::fs::write(&path, relspec_core::synth::rule_sql(target, variant)).unwrap();
        let (wall, count, ms) = build();
        assert_eq!(count, 1, "exactly the edited rule rebuilds");
        walls.push(wall);
        execs.push(ms);
    }
    Figures { noop, walls, execs }
}

/// A `relspec build --json` process: wall time, rules built, their execution time.
fn cli(root: &std::path::Path) -> (f64, usize, f64) {
    let (wall, report) = relspec(root, &["build", "--json"]);
    let (count, ms) = built_ms(&report);
    (wall, count, ms)
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
        let target = n - 1;
        let fresh = measure(root, target, 1..=5, || cli(root));
        let ((w, overhead), e) = (fresh.edit(), median(fresh.execs.clone()));
        println!("| {n} | {cold:.0} ms | {:.1} ms | {w:.1} ms | {e:.1} ms | {overhead:.1} ms |", fresh.noop);
        resident.push((n, resident_figures(root, target)));
        daemon.push((n, daemon_figures(root, target)));
    }
    for (title, rows) in [
        ("Resident (the same work called in one process, no start or exit)", resident),
        ("Through `relspec daemon` (the same CLI commands, forwarded; process start included)", daemon),
    ] {
        println!("\n{title}:\n");
        println!("| rules | no-op (median of 7) | one-rule edit: wall | beyond the rule |");
        println!("|---:|---:|---:|---:|");
        for (n, f) in rows {
            let (w, beyond) = f.edit();
            println!("| {n} | {:.1} ms | {w:.1} ms | {beyond:.1} ms |", f.noop);
        }
    }
}

/// No-op and one-rule edits as CLI processes answered by a `relspec daemon`.
fn daemon_figures(root: &std::path::Path, target: usize) -> Figures {
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
    let figures = measure(root, target, 11..=15, || cli(root));
    let _ = child.kill();
    let _ = child.wait();
    figures
}

/// No-op and one-rule edits through the snapshot, called in this process.
fn resident_figures(root: &std::path::Path, target: usize) -> Figures {
    use relspec_core::build::{BuildOptions, NoProgress, Status};
    use relspec_core::snapshot::{Fast, try_build};
    let manifest = root.join("workspace.toml");
    // A snapshot recorded by this process (its identity names the binary).
    let mut p = relspec_core::project::Project::open(&manifest).unwrap();
    let full = BuildOptions { snapshot: true, ..Default::default() };
    relspec_core::build::build(&mut p, &full, &NoProgress).unwrap();
    drop(p);
    let opts = BuildOptions::default();
    measure(root, target, 6..=10, || {
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
        let built: Vec<_> = report.rules.iter().filter(|r| r.status == Status::Built).collect();
        (ms, built.len(), built.iter().map(|r| r.elapsed_ms).sum())
    })
}
