//! A build killed with SIGKILL at arbitrary points never leaves a corrupt
//! cache entry or a half-written published output; the next build succeeds
//! and publishes what a clean build publishes. Concurrent builds of one
//! workspace are serialized by the store lock.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every record points at an intact object whose name is its content hash.
/// (A build killed early may not have created the store's directories yet.)
fn assert_store_consistent(root: &Path) {
    let records = root.join("cache/records");
    for e in walkdir::WalkDir::new(&records).into_iter().filter(|_| records.exists()) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).expect("record is complete JSON");
        let hash = rec["content_hash"].as_str().unwrap();
        let obj = root.join("cache/objects").join(&hash[..2]).join(format!("{hash}.parquet"));
        let bytes = std::fs::read(&obj).expect("object of a record exists");
        assert_eq!(bytes.len() as u64, rec["bytes"].as_u64().unwrap());
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash, "object bytes match its name");
    }
    let objects = root.join("cache/objects");
    for e in walkdir::WalkDir::new(&objects).into_iter().filter(|_| objects.exists()) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            let stem = e.path().file_stem().unwrap().to_string_lossy().to_string();
            assert_eq!(blake3::hash(&bytes).to_hex().as_str(), stem, "no partial object under objects/");
        }
    }
    // Published outputs are whole Parquet files.
    if root.join("out").exists() {
        for e in std::fs::read_dir(root.join("out")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "parquet") {
                read_batches(&p);
            }
        }
    }
}

/// A xorshift sequence seeded from the clock (the seed is printed per round).
struct Xorshift {
    seed: u64,
    x: u64,
}

impl Xorshift {
    fn from_clock() -> Xorshift {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
        Xorshift { seed, x: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }
}

/// Start `relspec build` in `root` and SIGKILL it after `delay` if it is
/// still running; whether it was killed.
fn build_killed_after(root: &Path, delay: Duration) -> bool {
    let mut child = relspec_process(root)
        .arg("build")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    killed
}

#[test]
fn killed_builds_leave_a_consistent_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    relspec_core::synth::write_workspace(root, 40, 60_000).unwrap();
    // Reference: a clean build elsewhere, and how long a full build takes.
    let ref_dir = tempfile::tempdir().unwrap();
    relspec_core::synth::write_workspace(ref_dir.path(), 40, 60_000).unwrap();
    let t = Instant::now();
    ok(ref_dir.path(), &["build"]);
    let full = t.elapsed();
    let expected = tree_bytes(&ref_dir.path().join("out"));

    let mut rng = Xorshift::from_clock();
    let mut kills = 0;
    for round in 0..6 {
        // A kill point anywhere within a full build's duration.
        let delay = Duration::from_millis(rng.next() % (full.as_millis() as u64).max(50));
        kills += usize::from(build_killed_after(root, delay));
        eprintln!("round {round}: killed after {delay:?} (seed {})", rng.seed);
        assert_store_consistent(root);
        if round % 2 == 1 {
            // Change the data so later rounds have work to do again.
            std::fs::write(root.join("data/events/part-0.csv"), relspec_core::synth::events_csv(0, 60_000, round))
                .unwrap();
            std::fs::write(
                ref_dir.path().join("data/events/part-0.csv"),
                relspec_core::synth::events_csv(0, 60_000, round),
            )
            .unwrap();
        }
    }
    assert!(kills > 0, "at least one build was killed mid-way");
    ok(root, &["build"]);
    assert_store_consistent(root);
    ok(ref_dir.path(), &["build"]);
    let expected_now = tree_bytes(&ref_dir.path().join("out"));
    let published = |root: &std::path::Path| -> std::collections::BTreeMap<_, _> {
        tree_bytes(&root.join("out")).into_iter().filter(|(k, _)| !k.starts_with('.')).collect()
    };
    assert_eq!(published(root), expected_now);
    // Back to the first data: objects written by rounds that may have been
    // killed are reused, and the result equals the first clean build.
    std::fs::write(root.join("data/events/part-0.csv"), relspec_core::synth::events_csv(0, 60_000, 0)).unwrap();
    ok(root, &["build"]);
    assert_store_consistent(root);
    assert_ne!(expected, expected_now, "the data edits changed the outputs");
    assert_eq!(published(root), expected);
}

/// A staging file left by a killed publish is removed by the next build that
/// publishes, but a build that fails on a static error writes (and removes) nothing.
#[test]
fn staging_leftovers_are_removed_only_by_a_build_that_proceeds() {
    let dir = default_workspace();
    let root = dir.path();
    ok(root, &["build"]);
    let leftover = root.join("out/.edges.parquet.relspec-tmp-4242");
    std::fs::write(&leftover, b"half a parquet file").unwrap();
    let rule = root.join("rules/edges.sql");
    let good = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(&rule, format!("{good}\nJOIN no_such_table USING (x)")).unwrap();
    let err = fails(root, &["build"]);
    assert!(err.contains("edges.sql"), "{err}");
    assert!(leftover.exists(), "a build stopped by a static error leaves the output dir alone");
    std::fs::write(&rule, good).unwrap();
    ok(root, &["build"]);
    assert!(!leftover.exists(), "the next build removes the staging leftover");
    assert!(root.join("out/edges.parquet").exists());
}

/// Four builds of one workspace started at once: the lock serializes them, so
/// every rule is built exactly once in all, the others reuse its output, and
/// the cache and outputs equal a clean build's.
#[test]
fn concurrent_builds_are_serialized_by_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    relspec_core::synth::write_workspace(root, 40, 60_000).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            relspec_process(root)
                .args(["build", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut built = 0;
    let mut waited = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rules = report["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 40);
        built += rules.iter().filter(|r| r["status"] == "built").count();
        assert!(rules.iter().all(|r| r["status"] == "built" || r["status"] == "reused"), "{report}");
        waited += String::from_utf8_lossy(&out.stderr).contains("waiting for another build") as usize;
    }
    assert_eq!(built, 40, "each rule is built once across the four builds");
    assert!(waited >= 1, "at least one build waited for the lock");
    assert_store_consistent(root);
    let reference = tempfile::tempdir().unwrap();
    relspec_core::synth::write_workspace(reference.path(), 40, 60_000).unwrap();
    ok(reference.path(), &["build"]);
    assert_eq!(tree_bytes(&root.join("out")), tree_bytes(&reference.path().join("out")));
}

/// The same over partial builds (`incremental = { by }`): builds killed
/// while they merge changed partitions into the previous output leave a
/// consistent cache, and the next build (partial again, from whatever the
/// last completed build left) publishes what a clean build publishes.
#[test]
fn killed_partial_builds_leave_a_consistent_cache() {
    let manifest = r#"
[workspace]
name = "kill-parts"

[datasets.events]
path = "data/events"
format = "csv"
[datasets.events.scan]
partition_cols = { day = "string" }

[rules.by_day]
sql = "SELECT day, user_id, sum(v) AS total, count(*) AS n FROM events GROUP BY day, user_id"
incremental = { by = "events" }

[rules.doubled]
sql = "SELECT day, user_id, total * 2 AS t2 FROM by_day"
incremental = { by = "by_day" }
"#;
    let day = |d: usize, seed: usize| {
        let mut s = String::from("id,user_id,v\n");
        for i in 0..2_000 {
            s.push_str(&format!("{},{},{}\n", d * 10_000 + i, (i * 7 + seed) % 1_500, (i + seed) % 97));
        }
        s
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "workspace.toml", manifest);
    for d in 0..150 {
        write(root, &format!("data/events/day={d:03}/part.csv"), &day(d, 0));
    }
    ok(root, &["build"]);
    // How long a partial build takes.
    write(root, "data/events/day=000/part.csv", &day(0, 1));
    let t = Instant::now();
    let report = ok(root, &["build"]);
    assert!(report.contains("recomputed 1 of 150 partitions"), "{report}");
    let partial = t.elapsed();

    let mut rng = Xorshift::from_clock();
    let mut kills = 0;
    for round in 0..8 {
        let x = rng.next();
        write(root, &format!("data/events/day={:03}/part.csv", x % 150), &day((x % 150) as usize, round + 2));
        let delay = Duration::from_millis(x % (partial.as_millis() as u64).max(20));
        kills += usize::from(build_killed_after(root, delay));
        eprintln!("round {round}: killed after {delay:?} (seed {})", rng.seed);
        assert_store_consistent(root);
    }
    assert!(kills > 0, "at least one build was killed mid-way");
    ok(root, &["build"]);
    assert_store_consistent(root);
    assert_equals_clean_build(root, &["by_day", "doubled"]);
}

/// A built 40-rule workspace (`rows` events) whose snapshot is recorded: a
/// build past the racy window records it.
fn snapshot_recorded(rows: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    relspec_core::synth::write_workspace(dir.path(), 40, rows).unwrap();
    ok(dir.path(), &["build"]);
    std::thread::sleep(Duration::from_millis(1100));
    ok(dir.path(), &["build"]);
    assert!(dir.path().join("cache/snapshot.bin").is_file());
    dir
}

/// Rule-file edits built through the snapshot (a partial workspace, state
/// written as appended changes and a snapshot delta): builds killed at any
/// point leave a consistent cache, and the next completed build (partial or
/// full, whichever the snapshot left allows) publishes what a clean build
/// publishes.
#[test]
fn killed_snapshot_builds_leave_a_consistent_cache() {
    let dir = snapshot_recorded(60_000);
    let root = dir.path();
    let rule = |i: usize| root.join("rules").join(format!("{}.sql", relspec_core::synth::rule_name(i)));
    // How long a partial build takes.
    std::fs::write(rule(12), relspec_core::synth::rule_sql(12, 1)).unwrap();
    let t = Instant::now();
    let out = ok(root, &["build", "--json"]);
    assert!(out.contains("\"snapshot\":\"partial\""), "{out}");
    let partial = t.elapsed();

    let mut rng = Xorshift::from_clock();
    let mut kills = 0;
    for round in 0..8 {
        let x = rng.next();
        let i = (x % 40) as usize;
        std::fs::write(rule(i), relspec_core::synth::rule_sql(i, 2 + round)).unwrap();
        let delay = Duration::from_millis(x % (partial.as_millis() as u64).max(20));
        kills += usize::from(build_killed_after(root, delay));
        eprintln!("round {round}: rule {i}, killed after {delay:?} (seed {})", rng.seed);
        assert_store_consistent(root);
    }
    assert!(kills > 0, "at least one build was killed mid-way");
    ok(root, &["build"]);
    assert_store_consistent(root);
    let rules: Vec<String> = (0..40).map(relspec_core::synth::rule_name).collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    assert_equals_clean_build(root, &rules);
    // And a build after that (answered from the snapshot, or not) changes nothing.
    let before = tree_bytes(&root.join("out"));
    ok(root, &["build"]);
    assert_eq!(tree_bytes(&root.join("out")), before);
}

/// Edits and builds that race: a build whose snapshot went stale while it
/// waited for the lock (another build ran) does not build from it (its
/// guard sends it to the full build), so every output ends equal to a clean
/// build's.
#[test]
fn racing_snapshot_builds_never_publish_stale_outputs() {
    let dir = snapshot_recorded(20_000);
    let root = dir.path();
    let rule = |i: usize| root.join("rules").join(format!("{}.sql", relspec_core::synth::rule_name(i)));
    let mut rng = Xorshift::from_clock();
    for round in 0..5 {
        // Two edits in one chain, each followed at once by a build.
        let chain = (rng.next() % 4) as usize * 10;
        let (a, b) = (chain + 1 + (rng.next() % 4) as usize, chain + 5 + (rng.next() % 4) as usize);
        let spawn =
            || relspec_process(root).args(["build", "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
        std::fs::write(rule(a), relspec_core::synth::rule_sql(a, 3 + round)).unwrap();
        let first = spawn();
        std::thread::sleep(Duration::from_millis(rng.next() % 30));
        std::fs::write(rule(b), relspec_core::synth::rule_sql(b, 3 + round)).unwrap();
        let second = spawn();
        for c in [first, second] {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round} (seed {})", rng.seed);
        }
        ok(root, &["build"]);
        let rules: Vec<String> = (chain..chain + 10).map(relspec_core::synth::rule_name).collect();
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        assert_equals_clean_build(root, &rules);
    }
}
