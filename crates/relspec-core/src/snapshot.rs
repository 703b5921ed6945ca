//! The build snapshot: how a fresh process answers a build with nothing to
//! do without opening the workspace.
//!
//! A clean build (every rule built or reused, nothing selected, nothing
//! failed) records `cache/snapshot.bin`: a stamp (kind, size, mtime, ctime,
//! inode) of every path its result depends on, and each rule's report line.
//! The next `relspec build` re-stats those paths before anything else; when
//! every stamp matches, nothing the build reads has changed, and it prints the
//! recorded report (every rule reused) without reading a rule file, loading a
//! memo or creating the database. Any difference, or a snapshot that is
//! missing, corrupt or from another binary, falls back to the full build,
//! which records a new snapshot.
//!
//! What is stamped: the manifest; every rule file and every directory the
//! include globs walk (a file added or removed changes a directory's mtime);
//! every dataset file and the directories (and, for sources, ignore files)
//! its listing walks; the output directory; the cache's objects directories
//! and state files (`last-built.json`, `published.json`: any other command
//! that changes what is built or published moves them). The snapshot's
//! identity covers the binary (its own stamp and code version), the
//! workspace root, `--param` overrides and `RELSPEC_*` variables.
//!
//! Architecture invariant: a snapshot is recorded only when every input stamp
//! is older than the sync that read it by more than the racy window
//! ([`crate::store::racy_window_ns`], as the stat cache and git's index
//! assume): an input changed during (or just before) the build would
//! otherwise keep its stamp with content the build never read. A full build
//! removes the old snapshot first, so one that ends unclean leaves none. The output directory is stamped
//! (a published file deleted, renamed or added over is caught); a published
//! file rewritten in place by another program is not, unlike a full build's
//! per-file check (`RELSPEC_SNAPSHOT=0` turns the snapshot off).

use crate::build::{BuildReport, RuleReport, Status};
use crate::project::Project;
use crate::store::{layout, racy_window_ns};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RSPSNAP1";

/// What a path was when the snapshot was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// 0 missing, 1 file, 2 directory, 3 other.
    kind: u8,
    size: u64,
    mtime_ns: u64,
    ctime_ns: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        match std::fs::metadata(path) {
            Err(_) => Stamp { kind: 0, size: 0, mtime_ns: 0, ctime_ns: 0, ino: 0 },
            Ok(m) => {
                let ns = |s: i64, n: i64| (s as u64).saturating_mul(1_000_000_000).saturating_add(n as u64);
                Stamp {
                    kind: if m.is_file() {
                        1
                    } else if m.is_dir() {
                        2
                    } else {
                        3
                    },
                    // A directory's size moves with its entries on some file systems only: kept anyway.
                    size: m.size(),
                    mtime_ns: ns(m.mtime(), m.mtime_nsec()),
                    ctime_ns: ns(m.ctime(), m.ctime_nsec()),
                    ino: m.ino(),
                }
            }
        }
    }

    /// Whether the path may still change without moving its timestamps, as
    /// seen from a sync that began at `synced_at_ns`.
    fn racy(&self, synced_at_ns: u128, window_ns: u128) -> bool {
        self.kind != 0 && u128::from(self.mtime_ns.max(self.ctime_ns)) + window_ns >= synced_at_ns
    }
}

/// One rule's line of the recorded report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    rule: String,
    key: String,
    content_hash: String,
    rows: u64,
}

/// A recorded snapshot (see the module docs).
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    identity: [u8; 32],
    /// Paths relative to the workspace root (or absolute), and their stamps.
    stamps: Vec<(String, Stamp)>,
    lines: Vec<Line>,
}

/// Whether snapshots are used (`RELSPEC_SNAPSHOT=0` turns them off).
pub fn enabled() -> bool {
    std::env::var("RELSPEC_SNAPSHOT").map(|v| v != "0").unwrap_or(true)
}

/// The identity a snapshot must carry to be used by this process on the
/// workspace at `root` (manifest `manifest`, overrides `params`).
fn identity(root: &Path, manifest: &Path, params: &[(String, String)]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let mut field = |name: &str, v: &[u8]| {
        h.update(name.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    };
    field("domain", b"relspec/snapshot/v1");
    field("memo", relspec_db::memo_version().as_bytes());
    field("engine", crate::engine::info().versions.as_bytes());
    // A rebuilt binary may decide differently with the same version strings.
    let exe = std::env::current_exe().map(|e| Stamp::of(&e)).unwrap_or(Stamp::of(Path::new("")));
    field("exe", format!("{exe:?}").as_bytes());
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    field("root", root.as_os_str().as_encoded_bytes());
    field("manifest", manifest.file_name().unwrap_or_default().as_encoded_bytes());
    for (k, v) in params {
        field("param", format!("{k}={v}").as_bytes());
    }
    let mut vars: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k.starts_with("RELSPEC_") && k != "RELSPEC_LOG").collect();
    vars.sort();
    for (k, v) in vars {
        field("env", format!("{k}={v}").as_bytes());
    }
    *h.finalize().as_bytes()
}

/// The report of a build with nothing to do, when the workspace at
/// `manifest` has a snapshot whose every stamp still matches; `None` when a
/// full build must decide.
pub fn noop_report(manifest: &Path, params: &[(String, String)]) -> Option<BuildReport> {
    if !enabled() {
        return None;
    }
    let t0 = std::time::Instant::now();
    let root = root_of(manifest);
    let text = std::fs::read_to_string(manifest).ok()?;
    let spec = crate::workspace::parse_manifest(Path::new(manifest.file_name()?), &text).ok()?;
    let bytes = std::fs::read(spec.cache_path(&root).join(layout::SNAPSHOT)).ok()?;
    let snap = decode(&bytes)?;
    if snap.identity != identity(&root, manifest, params) {
        tracing::debug!("snapshot: another binary, root or parameters");
        return None;
    }
    let changed = first_changed(&root, &snap.stamps);
    if let Some(path) = changed {
        tracing::debug!(path, ms = t0.elapsed().as_secs_f64() * 1e3, "snapshot: changed");
        return None;
    }
    tracing::debug!(stamps = snap.stamps.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "snapshot: nothing changed");
    let rules = snap
        .lines
        .into_iter()
        .map(|l| RuleReport {
            rule: l.rule,
            status: Status::Reused,
            reasons: vec![],
            rows: Some(l.rows),
            elapsed_ms: 0.0,
            key: Some(l.key),
            content_hash: Some(l.content_hash),
            published: false,
            kernels: vec![],
            error: None,
            checks: vec![],
            partitions: None,
        })
        .collect();
    Some(BuildReport {
        rules,
        elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
        files_hashed: 0,
        sources: vec![],
        errors: vec![],
        from_snapshot: true,
    })
}

/// The workspace root of a manifest path (as the loader takes it).
fn root_of(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The first stamped path that differs now (stat-ed on two threads).
fn first_changed<'a>(root: &Path, stamps: &'a [(String, Stamp)]) -> Option<&'a str> {
    let check = |part: &'a [(String, Stamp)]| {
        part.iter().find(|(p, s)| Stamp::of(&root.join(p)) != *s).map(|(p, _)| p.as_str())
    };
    if stamps.len() < 512 {
        return check(stamps);
    }
    let (a, b) = stamps.split_at(stamps.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| check(b));
        check(a).or(other.join().ok().flatten())
    })
}

/// Remove the snapshot of the workspace `p` (a build that cannot record one).
pub(crate) fn remove(p: &Project) {
    if let Ok(store) = p.store() {
        let _ = std::fs::remove_file(store.dir().join(layout::SNAPSHOT));
    }
}

/// Record the snapshot of the clean build of `p` whose report lines are
/// `rules`, if every input is older than the sync that read it by more than
/// the racy window; otherwise remove the old one. Best effort: a snapshot is
/// only a shortcut, so failing to write one is not an error of the build.
pub(crate) fn record(p: &Project, rules: &[RuleReport]) {
    let t0 = std::time::Instant::now();
    let (Some(synced_at), Ok(spec), Ok(store)) = (p.synced_at_ns, p.spec(), p.store()) else {
        return remove(p);
    };
    if !enabled() {
        return remove(p);
    }
    let root = &p.root;
    let rel = |path: &Path| match path.strip_prefix(root) {
        Ok(r) => crate::db::paths::rel_path(Path::new(""), r),
        Err(_) => path.to_string_lossy().into_owned(),
    };
    // Inputs: read by the sync, so they must be older than it.
    let mut inputs: Vec<String> = vec![rel(&root.join(p.manifest.file_name().unwrap_or_default()))];
    inputs.extend(p.ws.rule_files(&p.db).iter().map(|f| rel(&root.join(f.path(&p.db)))));
    for pattern in &spec.include {
        inputs.extend(crate::db::paths::glob_dirs(root, pattern).iter().map(|d| rel(d)));
    }
    for (name, ds) in &spec.datasets {
        match p.ws.datasets(&p.db).get(name) {
            Some(Ok(files)) => inputs.extend(files.iter().map(|f| rel(&root.join(f.path(&p.db))))),
            _ => return remove(p),
        }
        inputs.extend(crate::db::datasets::listing_paths(root, ds).iter().map(|d| rel(d)));
    }
    inputs.sort();
    inputs.dedup();
    let mut stamps = Vec::with_capacity(inputs.len() + 300);
    for path in inputs {
        let s = Stamp::of(&root.join(&path));
        if s.racy(synced_at, racy_window_ns()) {
            tracing::debug!(path, "snapshot: not recorded, an input changed too recently");
            return remove(p);
        }
        stamps.push((path, s));
    }
    // What builds write (under the store lock, which this build holds).
    let mut own =
        vec![spec.output_path(root), store.dir().join(layout::LAST_BUILT), store.dir().join(layout::PUBLISHED)];
    let objects = store.dir().join(layout::OBJECTS);
    if let Ok(shards) = std::fs::read_dir(&objects) {
        own.extend(shards.flatten().map(|e| e.path()));
    }
    own.push(objects);
    for path in own {
        let s = Stamp::of(&path);
        stamps.push((rel(&path), s));
    }
    let lines = rules
        .iter()
        .map(|r| Line {
            rule: r.rule.clone(),
            key: r.key.clone().unwrap_or_default(),
            content_hash: r.content_hash.clone().unwrap_or_default(),
            rows: r.rows.unwrap_or_default(),
        })
        .collect();
    let snap = Snapshot { identity: identity(root, &p.manifest, &p.params), stamps, lines };
    let path = store.dir().join(layout::SNAPSHOT);
    let tmp = store.dir().join(layout::TMP).join(format!("snapshot-{}.bin", std::process::id()));
    let ok = std::fs::create_dir_all(store.dir().join(layout::TMP)).is_ok()
        && std::fs::write(&tmp, encode(&snap)).is_ok()
        && std::fs::rename(&tmp, &path).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        return remove(p);
    }
    tracing::debug!(stamps = snap.stamps.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "snapshot recorded");
}

fn encode(s: &Snapshot) -> Vec<u8> {
    let mut w = Vec::with_capacity(64 + s.stamps.len() * 64 + s.lines.len() * 160);
    let str = |w: &mut Vec<u8>, t: &str| {
        w.extend_from_slice(&(t.len() as u32).to_le_bytes());
        w.extend_from_slice(t.as_bytes());
    };
    w.extend_from_slice(&s.identity);
    w.extend_from_slice(&(s.stamps.len() as u64).to_le_bytes());
    for (p, st) in &s.stamps {
        str(&mut w, p);
        w.push(st.kind);
        for v in [st.size, st.mtime_ns, st.ctime_ns, st.ino] {
            w.extend_from_slice(&v.to_le_bytes());
        }
    }
    w.extend_from_slice(&(s.lines.len() as u64).to_le_bytes());
    for l in &s.lines {
        str(&mut w, &l.rule);
        str(&mut w, &l.key);
        str(&mut w, &l.content_hash);
        w.extend_from_slice(&l.rows.to_le_bytes());
    }
    let sum = blake3::hash(&w);
    let mut out = Vec::with_capacity(w.len() + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&w);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Decode a snapshot; `None` if it is not one, or torn, or corrupt.
fn decode(bytes: &[u8]) -> Option<Snapshot> {
    let body = bytes.strip_prefix(MAGIC)?;
    let (body, sum) = body.split_at(body.len().checked_sub(32)?);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut r = Reader { b: body };
    let mut s = Snapshot { identity: r.take(32)?.try_into().ok()?, ..Default::default() };
    let n = r.u64()? as usize;
    s.stamps.reserve(n.min(body.len()));
    for _ in 0..n {
        let p = r.str()?;
        let kind = r.take(1)?[0];
        let st = Stamp { kind, size: r.u64()?, mtime_ns: r.u64()?, ctime_ns: r.u64()?, ino: r.u64()? };
        s.stamps.push((p, st));
    }
    let n = r.u64()? as usize;
    s.lines.reserve(n.min(body.len()));
    for _ in 0..n {
        s.lines.push(Line { rule: r.str()?, key: r.str()?, content_hash: r.str()?, rows: r.u64()? });
    }
    r.b.is_empty().then_some(s)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        (self.b.len() >= n).then(|| {
            let (h, t) = self.b.split_at(n);
            self.b = t;
            h
        })
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoding round-trips; a torn, flipped or foreign file decodes to nothing.
    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let st = Stamp { kind: 1, size: 7, mtime_ns: 1, ctime_ns: 2, ino: 3 };
        let snap = Snapshot {
            identity: [7; 32],
            stamps: vec![("rules/a.sql".into(), st), ("/abs/dir".into(), Stamp { kind: 2, ..st })],
            lines: vec![Line { rule: "a".into(), key: "k".into(), content_hash: "h".into(), rows: 9 }],
        };
        let bytes = encode(&snap);
        assert_eq!(decode(&bytes), Some(snap));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(decode(&flipped), None);
        assert_eq!(decode(b"not a snapshot"), None);
        assert_eq!(decode(&[]), None);
    }

    /// A path is racy until its timestamps are older than the sync by more
    /// than the window; a missing path never is.
    #[test]
    fn racy_window() {
        let s = Stamp { kind: 1, size: 0, mtime_ns: 10 * 1_000_000_000, ctime_ns: 0, ino: 0 };
        let w = crate::store::RACY_WINDOW_NS;
        assert!(s.racy(10 * 1_000_000_000 + w, w));
        assert!(!s.racy(10 * 1_000_000_000 + w + 1, w));
        assert!(Stamp { ctime_ns: 12 * 1_000_000_000, ..s }.racy(12 * 1_000_000_000 + 1, w));
        assert!(!Stamp { kind: 0, ..s }.racy(0, w));
    }
}
