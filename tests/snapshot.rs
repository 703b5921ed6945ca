//! The build snapshot (`cache/snapshot.bin`): a fresh `relspec build` with
//! nothing to do is answered from it, and any change it depends on sends
//! the build down the full path. Drives the real binary on temp workspaces.
//!
//! The racy window is shortened to 50 ms (`RELSPEC_RACY_WINDOW_MS`) so a
//! build a little after an edit records a snapshot; the default (1 s) is
//! tested on its own.

mod common;
use common::built_rules;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use relspec_core::synth;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const N: usize = 12;

fn cmd(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut c = common::relspec(root);
    c.env("RELSPEC_RACY_WINDOW_MS", "50").env_remove("RELSPEC_SNAPSHOT").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("{args:?}: {e}\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.code().unwrap_or(-1), v)
}

fn build(root: &Path) -> Value {
    let (code, v) = cmd(root, &["build", "--json"], &[]);
    assert_eq!(code, 0, "{v:#}");
    v
}

/// Answered from the snapshot without building anything.
fn from_snapshot(v: &Value) -> bool {
    v["snapshot"] == "unchanged"
}

/// Built in a partial workspace of the edited rule files.
fn partial(v: &Value) -> bool {
    v["snapshot"] == "partial"
}

/// Each rule's outcome as a user sees it (not timings).
fn outcomes(v: &Value) -> Vec<(String, String, String, String, u64, bool)> {
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap_or_default().to_string(),
                r["content_hash"].as_str().unwrap_or_default().to_string(),
                r["rows"].as_u64().unwrap_or_default(),
                r["published"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

/// Let the racy window pass, build (which records a snapshot), and check
/// that the next build is answered from it.
fn settle(root: &Path) -> Value {
    std::thread::sleep(Duration::from_millis(120));
    let recorded = build(root);
    let next = build(root);
    assert!(from_snapshot(&next), "a build after a settled one is answered from the snapshot");
    assert_eq!(
        outcomes(&next),
        outcomes(&recorded)
            .into_iter()
            .map(|mut o| {
                o.1 = "reused".into();
                o.5 = false;
                o
            })
            .collect::<Vec<_>>()
    );
    next
}

/// A built synthetic workspace whose next build is answered from its snapshot.
fn settled_workspace() -> tempfile::TempDir {
    let dir = synth_workspace();
    build(dir.path());
    settle(dir.path());
    dir
}

fn synth_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth::write_workspace(dir.path(), N, 200).unwrap();
    dir
}

/// A no-op build is answered from the snapshot with the report a full
/// build gives, for `build`, `build --check` and `status`; the full path
/// (`RELSPEC_SNAPSHOT=0`) agrees.
#[test]
fn a_noop_build_is_answered_from_the_snapshot() {
    let dir = synth_workspace();
    let root = dir.path();
    let cold = build(root);
    assert_eq!(built_rules(&cold).len(), N);
    let fast = settle(root);
    let (code, check) = cmd(root, &["build", "--check", "--json"], &[]);
    assert_eq!((code, from_snapshot(&check), check["ok"].as_bool()), (0, true, Some(true)));
    let (code, status) = cmd(root, &["status", "--json"], &[]);
    assert_eq!((code, from_snapshot(&status)), (0, true));
    // The text form says the same.
    let text = common::ok(root, &["build"]);
    assert!(text.contains(&format!("0 built, {N} reused")), "{text}");
    // The full path agrees (and, switched off, leaves no snapshot behind).
    let (_, full) = cmd(root, &["build", "--json"], &[("RELSPEC_SNAPSHOT", "0")]);
    assert!(!from_snapshot(&full));
    assert_eq!(outcomes(&fast), outcomes(&full));
    assert_eq!(outcomes(&status), outcomes(&full));
    assert!(!root.join("cache/snapshot.bin").exists());
}

/// Every kind of change the snapshot stands for is seen: a rule file edit is
/// built in a partial workspace, anything else by the full build; each does
/// the right thing and leaves a snapshot the next build is answered from.
#[test]
fn every_change_it_depends_on_is_seen() {
    let dir = settled_workspace();
    let root = dir.path();
    let rule = |i: usize| root.join("rules").join(format!("{}.sql", synth::rule_name(i)));
    // What a change rebuilds: exactly these rules, or (`None`) at least the
    // first; and whether the snapshot narrows the build (a rule file edit).
    type Change<'a> = (&'a str, Box<dyn Fn() + 'a>, Option<&'a [&'a str]>, bool);
    let changes: Vec<Change> = vec![
        (
            "a rule edited, same size",
            Box::new(|| std::fs::write(rule(5), synth::rule_sql(5, 1)).unwrap()),
            Some(&["r00005", "r00006", "r00007", "r00008", "r00009"]),
            true,
        ),
        (
            "a rule file touched, same text",
            Box::new(|| std::fs::write(rule(3), std::fs::read(rule(3)).unwrap()).unwrap()),
            Some(&[]),
            true,
        ),
        (
            "a rule added",
            Box::new(|| common::write(root, "rules/extra.sql", "SELECT kind FROM r00009\n")),
            Some(&["extra"]),
            false,
        ),
        ("a rule removed", Box::new(|| std::fs::remove_file(root.join("rules/extra.sql")).unwrap()), Some(&[]), false),
        (
            "a data file added in a new subdirectory",
            Box::new(|| common::write(root, "data/events/more/part-1.csv", &synth::events_csv(5000, 30, 1))),
            None,
            false,
        ),
        (
            "a data file rewritten in place, same size, mtime restored",
            Box::new(|| {
                let p = root.join("data/kinds.csv");
                let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
                let text = std::fs::read_to_string(&p).unwrap().replace("kind-3", "kind-X");
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                use std::io::Write;
                (&f).write_all(text.as_bytes()).unwrap();
                f.set_modified(mtime).unwrap();
            }),
            None,
            false,
        ),
        (
            "a parameter changed in the manifest",
            Box::new(|| {
                let t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
                std::fs::write(root.join("workspace.toml"), t.replace("bias = 1", "bias = 2")).unwrap();
            }),
            Some(&["r00001", "r00002", "r00003", "r00004", "r00005", "r00006", "r00007", "r00008", "r00009", "r00011"]),
            false,
        ),
        (
            "a published output deleted",
            Box::new(|| std::fs::remove_file(common::out(root, "r00004")).unwrap()),
            Some(&[]),
            false,
        ),
        (
            "a cached object deleted",
            Box::new(|| {
                let objects = root.join("cache/objects");
                let shard = std::fs::read_dir(&objects).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
                let obj = std::fs::read_dir(&shard).unwrap().flatten().next().unwrap().path();
                std::fs::remove_file(obj).unwrap();
            }),
            Some(&[]),
            false,
        ),
        (
            "the snapshot torn",
            Box::new(|| {
                let p = root.join("cache/snapshot.bin");
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }),
            Some(&[]),
            false,
        ),
    ];
    for (what, change, expect, narrowed) in changes {
        change();
        let v = build(root);
        assert!(!from_snapshot(&v), "{what}: answered from a stale snapshot");
        assert_eq!(partial(&v), narrowed, "{what}: {}", v["snapshot"]);
        let mut got = built_rules(&v);
        got.sort();
        match expect {
            // The rule whose object went (if a current one) is rebuilt, to the same bytes.
            _ if what == "a cached object deleted" => assert!(got.len() <= 1, "{what}: {got:?}"),
            Some(rules) => assert_eq!(got, rules.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{what}"),
            None => assert!(got.contains(&"r00000".to_string()), "{what}: {got:?}"),
        }
        assert!(common::out(root, "r00004").is_file(), "{what}: outputs are in place");
        common::assert_equals_clean_build(root, &["r00000", "r00004", "r00009", "r00011"]);
        settle(root);
    }
    // Another binary configuration, parameter or environment: the full path.
    let (_, v) = cmd(root, &["build", "--json", "--param", "bias=3"], &[]);
    assert!(!from_snapshot(&v));
    let (_, v) = cmd(root, &["build", "--json"], &[("RELSPEC_SOMETHING", "1")]);
    assert!(!from_snapshot(&v));
    // Selecting rules never uses (or records) it.
    let (_, v) = cmd(root, &["build", "--json", "-s", "r00001"], &[]);
    assert!(!from_snapshot(&v));
}

/// A rule file edit is built in a partial workspace: exactly the edited
/// rules and their downstream run, the report still covers every rule in
/// the full build's order, outputs equal a clean build's, and the next build
/// is answered from the updated snapshot at once. An edit that changes what
/// a rule reads, or breaks it, goes to the full build.
#[test]
fn a_rule_edit_builds_a_partial_workspace() {
    let dir = settled_workspace();
    let root = dir.path();
    let rule = |i: usize| root.join("rules").join(format!("{}.sql", synth::rule_name(i)));
    // Two edits at once, in two chains.
    std::fs::write(rule(5), synth::rule_sql(5, 2)).unwrap();
    std::fs::write(rule(11), synth::rule_sql(11, 2)).unwrap();
    let v = build(root);
    assert!(partial(&v), "{}", v["snapshot"]);
    assert_eq!(built_rules(&v), ["r00005", "r00006", "r00007", "r00008", "r00009", "r00011"]);
    let (_, full) = cmd(root, &["build", "--json"], &[("RELSPEC_SNAPSHOT", "0")]);
    let names = |v: &Value| outcomes(v).into_iter().map(|o| (o.0, o.2, o.3)).collect::<Vec<_>>();
    assert_eq!(names(&v), names(&full), "same rules, order, keys and outputs as a full build");
    common::assert_equals_clean_build(root, &["r00005", "r00009", "r00010", "r00011"]);
    settle(root);
    std::fs::write(rule(7), synth::rule_sql(7, 1)).unwrap();
    assert!(partial(&build(root)));
    assert!(root.join("cache/snapshot.delta").is_file(), "a partial build writes a delta, not the whole snapshot");
    // Even inside the racy window the edited file's text is known: answered at once.
    let again = build(root);
    assert!(from_snapshot(&again), "{}", again["snapshot"]);
    // Reading another rule now: the graph changed, the full build decides.
    let t = std::fs::read_to_string(rule(3)).unwrap().replace("FROM r00002", "FROM r00001");
    std::fs::write(rule(3), t).unwrap();
    let v = build(root);
    assert_eq!(v["snapshot"], Value::Null);
    assert_eq!(built_rules(&v), ["r00003", "r00004", "r00005", "r00006", "r00007", "r00008", "r00009"]);
    common::assert_equals_clean_build(root, &["r00003", "r00009"]);
    settle(root);
    // A broken rule: the full build reports it (file and line), publishes nothing for it.
    std::fs::write(rule(4), "-- chain link 4\nSELECT kind, nope FROM r00003\n").unwrap();
    let (code, v) = cmd(root, &["build", "--json"], &[]);
    assert_ne!(code, 0);
    let errors = v["errors"].to_string();
    assert!(errors.contains("r00004.sql") && errors.contains("nope"), "{errors}");
    assert!(!root.join("cache/snapshot.bin").exists());
    assert!(common::out(root, "r00004").is_file(), "the last good output stays");
}

/// A failed build removes the snapshot; a build right after an edit (inside
/// the default 1 s racy window) records none, so the next build decides in full.
#[test]
fn failed_and_racy_builds_record_nothing() {
    let dir = settled_workspace();
    let root = dir.path();
    let snap = root.join("cache/snapshot.bin");
    assert!(snap.is_file());
    let good = std::fs::read_to_string(root.join("rules/r00003.sql")).unwrap();
    common::write(root, "rules/r00003.sql", "SELECT nope FROM r00002\n");
    let (code, _) = cmd(root, &["build", "--json"], &[]);
    assert_ne!(code, 0);
    assert!(!snap.exists(), "a failed build leaves no snapshot");
    common::write(root, "rules/r00003.sql", &good);
    // The default window: the edit is too fresh to record.
    let mut c = common::relspec(root);
    c.env_remove("RELSPEC_RACY_WINDOW_MS").env_remove("RELSPEC_SNAPSHOT").args(["build", "--json"]);
    assert!(c.output().unwrap().status.success());
    assert!(!snap.exists(), "an input changed within the racy window: no snapshot");
    let v = build(root);
    assert!(!from_snapshot(&v));
}

// ---- property: the snapshot never changes what a build does ----------------

#[derive(Debug, Clone)]
enum Edit {
    ChangeRule(usize, usize),
    TouchRule(usize),
    AddRule,
    RemoveRule,
    RewriteData(usize),
    AddDataFile(bool),
    ChangeParam(i64),
    DeleteOutput(usize),
    /// Nothing at all.
    Nothing,
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..N, 0usize..3).prop_map(|(i, v)| Edit::ChangeRule(i, v)),
        (0..N).prop_map(Edit::TouchRule),
        Just(Edit::AddRule),
        Just(Edit::RemoveRule),
        (0usize..3).prop_map(Edit::RewriteData),
        any::<bool>().prop_map(Edit::AddDataFile),
        (0i64..3).prop_map(Edit::ChangeParam),
        (0..N).prop_map(Edit::DeleteOutput),
        Just(Edit::Nothing),
    ]
}

fn apply(root: &Path, e: &Edit, step: usize) {
    let rule = |i: usize| root.join("rules").join(format!("{}.sql", synth::rule_name(i)));
    match e {
        Edit::ChangeRule(i, v) => std::fs::write(rule(*i), synth::rule_sql(*i, *v)).unwrap(),
        Edit::TouchRule(i) => std::fs::write(rule(*i), std::fs::read(rule(*i)).unwrap()).unwrap(),
        Edit::AddRule => common::write(root, "rules/extra.sql", &format!("SELECT kind, {step} AS s FROM r00002\n")),
        Edit::RemoveRule => {
            let _ = std::fs::remove_file(root.join("rules/extra.sql"));
        }
        Edit::RewriteData(seed) => {
            std::fs::write(root.join("data/events/part-0.csv"), synth::events_csv(0, 200, *seed)).unwrap()
        }
        Edit::AddDataFile(nested) => {
            let rel = if *nested { format!("data/events/d{step}/p.csv") } else { format!("data/events/p{step}.csv") };
            common::write(root, &rel, &synth::events_csv(1000 + step * 10, 10, step));
        }
        Edit::ChangeParam(b) => {
            let t = std::fs::read_to_string(root.join("workspace.toml")).unwrap();
            let t: Vec<String> =
                t.lines().map(|l| if l.starts_with("bias = ") { format!("bias = {b}") } else { l.into() }).collect();
            std::fs::write(root.join("workspace.toml"), t.join("\n") + "\n").unwrap();
        }
        Edit::DeleteOutput(i) => {
            let _ = std::fs::remove_file(common::out(root, &synth::rule_name(*i)));
        }
        Edit::Nothing => {}
    }
}

/// Two copies of one workspace get the same edits; one builds with the
/// snapshot, one without. After every step their reports (status, key,
/// content hash, rows, published) and published bytes are equal. A settled
/// step lets the racy window pass before building (so that build records a
/// snapshot) and builds again: the first copy's second build must be
/// answered from the snapshot, still equal to the other's full build.
fn check_twins(steps: &[(Edit, bool)]) -> Result<(), TestCaseError> {
    let (a, b) = (synth_workspace(), synth_workspace());
    let full = |root: &Path| cmd(root, &["build", "--json"], &[("RELSPEC_SNAPSHOT", "0")]);
    let fast = |root: &Path| cmd(root, &["build", "--json"], &[]);
    fast(a.path());
    full(b.path());
    for (step, (e, settled)) in steps.iter().enumerate() {
        apply(a.path(), e, step);
        apply(b.path(), e, step);
        if *settled {
            std::thread::sleep(Duration::from_millis(80));
        }
        for round in 0..(1 + usize::from(*settled)) {
            let ((ca, va), (cb, vb)) = (fast(a.path()), full(b.path()));
            prop_assert_eq!(ca, cb, "exit codes after {:?}", e);
            prop_assert_eq!(outcomes(&va), outcomes(&vb), "reports after {:?} (step {}, round {})", e, step, round);
            if round == 1 {
                prop_assert!(from_snapshot(&va), "a settled no-op is answered from the snapshot");
            }
            prop_assert_eq!(
                common::tree_bytes(&a.path().join("out")),
                common::tree_bytes(&b.path().join("out")),
                "outputs after {:?}",
                e
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12),
        max_shrink_iters: 30,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_snapshot_never_changes_what_a_build_does(
        steps in prop::collection::vec((edit_strategy(), any::<bool>()), 1..10)
    ) {
        check_twins(&steps)?;
    }
}
