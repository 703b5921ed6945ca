//! The build snapshot: how a fresh process answers a build with nothing to
//! do without opening the workspace, and narrows a build after rule-file
//! edits to the edited rules and their downstream.
//!
//! A clean build (every rule built or reused, nothing selected, nothing
//! failed) records `cache/snapshot.bin`: a stamp (kind, size, mtime, ctime,
//! inode) of every path its result depends on, and each rule's line (its
//! output, the file declaring it, the rules it reads, its published file).
//! The next `relspec build` re-stats those paths before anything else:
//!
//! - every stamp matches: nothing the build reads changed; it prints the
//!   recorded report (every rule reused) without reading a rule file,
//!   loading a memo or creating the database;
//! - only rule files changed: it opens a partial workspace of the rules
//!   those files declare and every rule downstream of them, knowing the other
//!   rules by their recorded outputs ([`Project::open_partial`]), checks
//!   that it is the same graph (the same rules, reading the same rules), and
//!   builds it; the build's state is written as changes (the logs of
//!   `last-built.json` and `published.json`, `snapshot.delta`), never whole;
//! - anything else changed, or the snapshot is missing, corrupt or from
//!   another binary: the full build decides, and records a new snapshot.
//!
//! What is stamped: the manifest; every rule file and every directory the
//! include globs walk (a file added or removed changes a directory's mtime);
//! every dataset file and the directories (and, for sources, ignore files)
//! its listing walks; the output directory; the cache's objects directories
//! and state files (any other command that changes what is built or
//! published moves them). The snapshot's identity covers the binary (its
//! own stamp and code version), the workspace root, `--param` overrides and
//! `RELSPEC_*` variables.
//!
//! Architecture invariant: an input is stamped only if its stamp is older
//! than the read that used it by more than the racy window
//! ([`crate::store::racy_window_ns`], as the stat cache and git's index
//! assume), or, for the manifest and rule files, with the hash of the text
//! the build read, checked on every use until the window has passed: an
//! input changed during (or just after) the read would otherwise keep its
//! stamp with content the build never read. A full build removes the old
//! snapshot first, so one that ends unclean leaves none. The output
//! directory is stamped (a published file deleted, renamed or added over is
//! caught); a published file rewritten in place by another program is not,
//! unlike a full build's per-file check (`RELSPEC_SNAPSHOT=0` turns the
//! snapshot off).

use crate::build::state::{LastEntry, Seed};
use crate::build::{self, BuildOptions, BuildReport, Progress, RuleReport, SnapshotUse, Status};
use crate::db::Dep;
use crate::project::Project;
use crate::store::{PublishedEntry, Record, layout, racy_window_ns};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RSPSNAP3";
const DELTA_MAGIC: &[u8; 8] = b"RSPSDLT3";

/// What a path was when the snapshot was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Stamp {
    /// 0 missing, 1 file, 2 directory, 3 other.
    kind: u8,
    size: u64,
    mtime_ns: u64,
    ctime_ns: u64,
    ino: u64,
}

fn ns(s: i64, n: i64) -> u64 {
    (s as u64).saturating_mul(1_000_000_000).saturating_add(n as u64)
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        match std::fs::metadata(path) {
            Err(_) => Stamp::default(),
            Ok(m) => Stamp {
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
            },
        }
    }

    /// The stamp of `path` relative to the directory `dir` (an open
    /// descriptor; absolute paths ignore it): one `fstatat`, no allocation.
    fn at(dir: libc::c_int, path: &CStr) -> Stamp {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `path` is NUL-terminated and `st` is written by the call before it is read.
        if unsafe { libc::fstatat(dir, path.as_ptr(), st.as_mut_ptr(), 0) } != 0 {
            return Stamp::default();
        }
        // SAFETY: fstatat returned 0, so it filled `st`.
        let st = unsafe { st.assume_init() };
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => 1,
            libc::S_IFDIR => 2,
            _ => 3,
        };
        Stamp {
            kind,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
            ino: st.st_ino,
        }
    }

    /// Whether the path may still change without moving its timestamps, as
    /// seen from a read that began at `read_at_ns`.
    fn racy(&self, read_at_ns: u128, window_ns: u128) -> bool {
        self.kind != 0 && u128::from(self.mtime_ns.max(self.ctime_ns)) + window_ns >= read_at_ns
    }
}

/// One stamped path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<'a> {
    /// Relative to the workspace root (`.` for the root), or absolute.
    path: Cow<'a, CStr>,
    stamp: Stamp,
    /// Written by builds (the output and cache directories, the cache's
    /// state files), not read: re-stamped after a partial build. Own
    /// entries come after every input entry.
    own: bool,
    /// A rule file (its edits can be built partially).
    rule_file: bool,
    /// For a file stamped within the racy window of the read that used it:
    /// the blake3 of the text used, checked on every use until it settles.
    hash: Option<[u8; 32]>,
}

impl Entry<'_> {
    fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }
    fn into_owned(self) -> Entry<'static> {
        Entry { path: Cow::Owned(self.path.into_owned()), ..self }
    }
}

/// One rule's line of the recorded report, and what a partial build needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line<'a> {
    rule: Cow<'a, str>,
    key: Cow<'a, str>,
    content_hash: Cow<'a, str>,
    data_hash: Cow<'a, str>,
    rows: u64,
    bytes: u64,
    /// The rule file declaring it (an entry path).
    file: Cow<'a, str>,
    /// The rules it reads (contract references included), sorted.
    deps: Vec<Cow<'a, str>>,
    /// Its publish-ledger entry: path relative to the root, and entry.
    published: Option<(Cow<'a, str>, PublishedEntry)>,
}

impl Line<'static> {
    /// The line of a rule a build resolved to `o`, declared in `file` and
    /// reading the rules `deps` (sorted).
    fn from_output(o: Output, file: Cow<'static, str>, deps: Vec<Cow<'static, str>>) -> Self {
        Line {
            rule: o.rule.into(),
            key: o.key.into(),
            content_hash: o.content_hash.into(),
            data_hash: o.data_hash.into(),
            rows: o.rows,
            bytes: o.bytes,
            file,
            deps,
            published: o.published.map(|(k, e)| (k.into(), e)),
        }
    }
}

impl Line<'_> {
    fn into_owned(self) -> Line<'static> {
        let o = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Line {
            rule: o(self.rule),
            key: o(self.key),
            content_hash: o(self.content_hash),
            data_hash: o(self.data_hash),
            rows: self.rows,
            bytes: self.bytes,
            file: o(self.file),
            deps: self.deps.into_iter().map(o).collect(),
            published: self.published.map(|(k, e)| (o(k), e)),
        }
    }
}

/// A recorded snapshot (see the module docs), with its delta applied.
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot<'a> {
    identity: [u8; 32],
    /// Input entries, then own entries.
    entries: Vec<Entry<'a>>,
    /// In the build's order.
    lines: Vec<Line<'a>>,
}

/// Changes to a written snapshot (`snapshot.delta`): entries and lines by
/// index, and the own entries anew. Tied to its base by the base's checksum.
#[derive(Debug, Default, PartialEq, Eq)]
struct Delta {
    base: [u8; 32],
    entries: BTreeMap<u64, Entry<'static>>,
    own: Vec<Entry<'static>>,
    lines: BTreeMap<u64, Line<'static>>,
}

/// What a build resolved one rule to, for [`record`].
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub(crate) rule: String,
    pub(crate) key: String,
    pub(crate) content_hash: String,
    pub(crate) data_hash: String,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// Its publish-ledger entry (path relative to the root, entry).
    pub(crate) published: Option<(String, PublishedEntry)>,
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
    field("domain", b"relspec/snapshot/v3");
    field("memo", relspec_db::memo_version().as_bytes());
    field("engine", crate::engine::info().versions.as_bytes());
    // A rebuilt binary may decide differently with the same version strings.
    let exe = std::env::current_exe().map(|e| Stamp::of(&e)).unwrap_or_default();
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

/// What the snapshot lets a build skip.
pub enum Fast {
    /// Nothing changed: every rule is reused, nothing was opened.
    Noop(BuildReport),
    /// Only rule files changed: the rules they declare and their downstream
    /// rules were built in a partial workspace (returned, for diagnostics);
    /// the report covers every rule.
    Partial(BuildReport, Box<Project>),
    /// A full build must decide.
    Full,
}

/// Build the workspace at `manifest` through its snapshot where one stands
/// for it (see the module docs): [`Fast::Full`] when the caller must run a
/// full build. Only plain builds (`select` empty) use snapshots; a dry run
/// uses one only when nothing changed.
pub fn try_build(manifest: &Path, params: &[(String, String)], opts: &BuildOptions, progress: &dyn Progress) -> Fast {
    if !enabled() || !opts.select.is_empty() {
        return Fast::Full;
    }
    let t0 = std::time::Instant::now();
    let root = root_of(manifest);
    let Some(cache_dir) = cache_dir(manifest, &root) else { return Fast::Full };
    let Some(base) = map(&cache_dir.join(layout::SNAPSHOT)) else { return Fast::Full };
    // The stamps are checked on two threads while this one decodes the
    // lines and verifies the checksum (nothing is trusted before it is).
    let Some((snap, mut delta, changed)) = decode_and_check(&base, &root, &cache_dir) else { return Fast::Full };
    if snap.identity != identity(&root, manifest, params) {
        tracing::debug!("snapshot: another binary, root or parameters");
        return Fast::Full;
    }
    tracing::debug!(
        entries = snap.entries.len(),
        changed = changed.len(),
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "snapshot: stamps checked"
    );
    if changed.is_empty() {
        settle(&cache_dir, &snap, &mut delta);
        let rules: Vec<RuleReport> = snap.lines.iter().map(reused).collect();
        if !progress.quiet() {
            for r in &rules {
                progress.finished(r);
            }
        }
        return Fast::Noop(BuildReport {
            rules,
            elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
            files_hashed: 0,
            sources: vec![],
            errors: vec![],
            snapshot: Some(SnapshotUse::Unchanged),
            remote: None,
            outputs: vec![],
        });
    }
    if opts.dry_run {
        return Fast::Full;
    }
    let ctx = Ctx { manifest, params, root: &root, cache_dir: &cache_dir, t0 };
    partial(&ctx, snap, delta, changed, opts, progress).unwrap_or(Fast::Full)
}

/// The report line of a rule the snapshot knows and nothing changed for.
fn reused(l: &Line<'_>) -> RuleReport {
    RuleReport {
        rule: l.rule.to_string(),
        status: Status::Reused,
        reasons: vec![],
        rows: Some(l.rows),
        elapsed_ms: 0.0,
        key: Some(l.key.to_string()),
        content_hash: Some(l.content_hash.to_string()),
        published: false,
        kernels: vec![],
        error: None,
        checks: vec![],
        partitions: None,
        remote: false,
    }
}

/// The bytes of `path`, mapped and populated at once (no copy, no page
/// faults one by one). Snapshots are replaced by rename, never written in
/// place, so the mapping does not change under the reader.
fn map(path: &Path) -> Option<memmap2::Mmap> {
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: the file is only ever replaced by rename (see `write_file`), so
    // the mapped inode's bytes do not change while mapped.
    unsafe { memmap2::MmapOptions::new().populate().map(&f) }.ok()
}

/// The cache directory the manifest at `manifest` names.
pub fn cache_dir_of(manifest: &Path) -> Option<PathBuf> {
    cache_dir(manifest, &root_of(manifest))
}

fn cache_dir(manifest: &Path, root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let spec = crate::workspace::parse_manifest(Path::new(manifest.file_name()?), &text).ok()?;
    Some(spec.cache_path(root))
}

/// The workspace root of a manifest path (as the loader takes it).
fn root_of(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Decode the snapshot in `bytes`, apply its delta, and find the entries
/// that changed: the stamps are checked on two threads while this one
/// decodes the lines and verifies the checksum. `None` if the file is not an
/// intact snapshot.
#[allow(clippy::type_complexity)]
fn decode_and_check<'a>(
    bytes: &'a [u8],
    root: &Path,
    cache_dir: &Path,
) -> Option<(Snapshot<'a>, Delta, Vec<(usize, Stamp)>)> {
    let body = bytes.strip_prefix(MAGIC)?;
    let (body, sum) = body.split_at(body.len().checked_sub(32)?);
    let sum: [u8; 32] = sum.try_into().ok()?;
    let mut r = Reader { b: body };
    let mut s = r.head()?;
    let delta = read_delta(cache_dir, &sum);
    delta.apply_entries(&mut s.entries);
    let dir = std::fs::File::open(root).ok()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let entries = &s.entries;
    let (changed, lines) = std::thread::scope(|scope| {
        let stats = scope.spawn(|| claim_and_check(root, fd, entries, &next));
        let lines = r.lines().filter(|_| r.b.is_empty() && blake3::hash(body).as_bytes() == &sum);
        // Then this thread stats what is left.
        let mut changed = claim_and_check(root, fd, entries, &next);
        changed.extend(stats.join().ok()?);
        changed.sort_by_key(|(i, _)| *i);
        Some((changed, lines))
    })?;
    s.lines = lines?;
    delta.apply_lines(&mut s.lines);
    Some((s, delta, changed))
}

/// The delta of the snapshot whose checksum is `sum` (empty if there is
/// none, or one of another base).
fn read_delta(cache_dir: &Path, sum: &[u8; 32]) -> Delta {
    std::fs::read(cache_dir.join(layout::SNAPSHOT_DELTA))
        .ok()
        .and_then(|b| decode_delta(&b))
        .filter(|d| &d.base == sum)
        .unwrap_or_else(|| Delta { base: *sum, ..Default::default() })
}

impl Delta {
    /// Apply to the snapshot it was written for.
    fn apply(&self, snap: &mut Snapshot<'_>) {
        self.apply_entries(&mut snap.entries);
        self.apply_lines(&mut snap.lines);
    }
    fn apply_entries(&self, entries: &mut Vec<Entry<'_>>) {
        for (&i, e) in &self.entries {
            if let Some(slot) = entries.get_mut(i as usize).filter(|s| !s.own) {
                *slot = e.clone();
            }
        }
        if !self.own.is_empty() {
            entries.retain(|e| !e.own);
            entries.extend(self.own.iter().cloned());
        }
    }
    fn apply_lines(&self, lines: &mut [Line<'_>]) {
        for (&i, l) in &self.lines {
            if let Some(slot) = lines.get_mut(i as usize) {
                *slot = l.clone();
            }
        }
    }
}

/// Entries are stat-ed in chunks claimed from a shared counter, so a thread
/// that starts late (after decoding the lines) still takes its share.
const STAT_CHUNK: usize = 256;

/// Stamps the entries of the chunks this thread claims from `next`, and
/// returns those that differ now, with their stamps now (relative to the
/// root `dir`). An entry with a content hash differs when its text does.
fn claim_and_check(
    root: &Path,
    dir: libc::c_int,
    entries: &[Entry<'_>],
    next: &std::sync::atomic::AtomicUsize,
) -> Vec<(usize, Stamp)> {
    let mut out = Vec::new();
    loop {
        let start = next.fetch_add(STAT_CHUNK, std::sync::atomic::Ordering::Relaxed);
        if start >= entries.len() {
            return out;
        }
        for (i, e) in entries.iter().enumerate().skip(start).take(STAT_CHUNK) {
            let now = Stamp::at(dir, &e.path);
            let same = now == e.stamp
                && e.hash.is_none_or(|h| {
                    std::fs::read(root.join(e.path_str())).is_ok_and(|b| *blake3::hash(&b).as_bytes() == h)
                });
            if !same {
                out.push((i, now));
            }
        }
    }
}

/// After a use that found nothing changed: entries whose content hashes
/// were checked and are now past the racy window no longer need them
/// (a later change moves their stamps); write that down once.
fn settle(cache_dir: &Path, snap: &Snapshot<'_>, delta: &mut Delta) {
    let (now, window) = (crate::store::now_ns(), racy_window_ns());
    let mut settled = false;
    for (i, e) in snap.entries.iter().enumerate() {
        if e.hash.is_some() && !e.own && !e.stamp.racy(now, window) {
            delta.entries.insert(i as u64, Entry { hash: None, ..e.clone().into_owned() });
            settled = true;
        }
    }
    if settled {
        write_delta(cache_dir, delta);
    }
}

/// Remove the snapshot of the workspace `p`.
pub(crate) fn remove(p: &Project) {
    if let Ok(store) = p.store() {
        remove_in(store.dir());
    }
}

fn remove_in(cache_dir: &Path) {
    let _ = std::fs::remove_file(cache_dir.join(layout::SNAPSHOT));
    let _ = std::fs::remove_file(cache_dir.join(layout::SNAPSHOT_DELTA));
}

/// `path` as an entry path: relative to `root` inside it (`.` for the root
/// itself), else absolute.
fn rel_to(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(r) => match crate::db::paths::rel_path(Path::new(""), r) {
            r if r.is_empty() => ".".to_string(),
            r => r,
        },
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

fn c_path(path: &str) -> Cow<'static, CStr> {
    Cow::Owned(CString::new(path).unwrap_or_default())
}

/// Entries for what builds write: the output directory, the cache's state
/// files and its objects directories (an object removed moves one).
fn own_entries(root: &Path, out_dir: &Path, cache_dir: &Path) -> Vec<Entry<'static>> {
    let mut own = vec![out_dir.to_path_buf()];
    for f in [layout::LAST_BUILT, layout::LAST_BUILT_LOG, layout::PUBLISHED, layout::PUBLISHED_LOG] {
        own.push(cache_dir.join(f));
    }
    let objects = cache_dir.join(layout::OBJECTS);
    if let Ok(shards) = std::fs::read_dir(&objects) {
        own.extend(shards.flatten().map(|e| e.path()));
    }
    own.push(objects);
    own.into_iter()
        .map(|p| Entry {
            stamp: Stamp::of(&p),
            path: c_path(&rel_to(root, &p)),
            own: true,
            rule_file: false,
            hash: None,
        })
        .collect()
}

/// An input entry for `path`, read (by a sync that began at `read_at`) as
/// `text` when it is a manifest or rule file; `None` when it is too fresh to
/// trust and its text is not at hand.
fn input_entry(root: &Path, path: &str, text: Option<&str>, rule_file: bool, read_at: u128) -> Option<Entry<'static>> {
    let stamp = Stamp::of(&root.join(path));
    let hash = racy_hash(&stamp, read_at, text)?;
    Some(Entry { path: c_path(path), stamp, own: false, rule_file, hash })
}

/// The content hash an input stamped `stamp` needs, as read at `read_at`:
/// none past the racy window, else that of the text read; `None` when it
/// is racy and its text is not at hand (the input cannot be trusted).
fn racy_hash(stamp: &Stamp, read_at: u128, text: Option<&str>) -> Option<Option<[u8; 32]>> {
    if !stamp.racy(read_at, racy_window_ns()) {
        return Some(None);
    }
    Some(Some(*blake3::hash(text?.as_bytes()).as_bytes()))
}

/// The rules `rule` reads in `graph` (contract references included), sorted.
fn rule_deps<'g>(graph: &'g crate::db::Graph, rule: &str) -> Vec<&'g str> {
    let mut deps: Vec<&str> = graph
        .deps
        .get(rule)
        .into_iter()
        .flatten()
        .filter_map(|d| if let Dep::Rule(r) = d { Some(r.as_str()) } else { None })
        .collect();
    deps.sort();
    deps
}

/// Record the snapshot of the clean full build of `p` that resolved every
/// rule to `outputs` (in order). Best effort: a snapshot is only a
/// shortcut, so failing to write one is not an error of the build.
pub(crate) fn record(p: &Project, outputs: Vec<Output>) {
    let t0 = std::time::Instant::now();
    let (Some(read_at), Ok(spec), Ok(store)) = (p.synced_at_ns, p.spec(), p.store()) else { return };
    if !enabled() {
        return;
    }
    // A dataset on object storage has no stamp to re-stat: every build lists it.
    if spec.datasets.values().any(|ds| crate::db::datasets::is_remote(&ds.path)) {
        tracing::debug!("snapshot: not recorded, a dataset is on object storage");
        return;
    }
    let root = &p.root;
    // The manifest and rule files, with the texts the build read.
    let manifest = p.ws.manifest(&p.db);
    let mut texts: HashMap<String, (&str, bool)> = HashMap::new();
    texts.insert(rel_to(root, &root.join(manifest.path(&p.db))), (manifest.text(&p.db), false));
    for f in p.ws.rule_files(&p.db) {
        texts.insert(rel_to(root, &root.join(f.path(&p.db))), (f.text(&p.db), true));
    }
    let mut inputs: Vec<String> = texts.keys().cloned().collect();
    for pattern in &spec.include {
        inputs.extend(crate::db::paths::glob_dirs(root, pattern).iter().map(|d| rel_to(root, d)));
    }
    for (name, ds) in &spec.datasets {
        match p.ws.datasets(&p.db).get(name) {
            Some(Ok(files)) => inputs.extend(files.iter().map(|f| rel_to(root, &root.join(f.path(&p.db))))),
            _ => return,
        }
        inputs.extend(crate::db::datasets::listing_paths(root, ds).iter().map(|d| rel_to(root, d)));
    }
    inputs.sort();
    inputs.dedup();
    let mut entries = Vec::with_capacity(inputs.len() + 300);
    for path in inputs {
        let (text, rule_file) = texts.get(&path).map(|(t, r)| (Some(*t), *r)).unwrap_or((None, false));
        let Some(e) = input_entry(root, &path, text, rule_file, read_at) else {
            tracing::debug!(path, "snapshot: not recorded, an input changed too recently");
            return;
        };
        entries.push(e);
    }
    entries.extend(own_entries(root, &spec.output_path(root), store.dir()));
    let graph = p.graph();
    let lines = outputs
        .into_iter()
        .map(|o| {
            let file = p.decl(&o.rule).map(|d| rel_to(root, &root.join(&d.origin.file))).unwrap_or_default();
            let deps = rule_deps(graph, &o.rule).into_iter().map(|d| Cow::Owned(d.to_string())).collect();
            Line::from_output(o, file.into(), deps)
        })
        .collect();
    let snap = Snapshot { identity: identity(root, &p.manifest, &p.params), entries, lines };
    write_base(store.dir(), &snap);
    tracing::debug!(entries = snap.entries.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "snapshot recorded");
}

/// Write a file of the cache dir atomically (a temp file, then renamed).
fn write_file(cache_dir: &Path, name: &str, bytes: &[u8]) -> bool {
    let tmp = cache_dir.join(layout::TMP).join(format!("{name}-{}", std::process::id()));
    let ok = std::fs::create_dir_all(cache_dir.join(layout::TMP)).is_ok()
        && std::fs::write(&tmp, bytes).is_ok()
        && std::fs::rename(&tmp, cache_dir.join(name)).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
    }
    ok
}

/// Write `snap` whole into `cache_dir` (its delta goes: it belongs to the old base).
fn write_base(cache_dir: &Path, snap: &Snapshot<'_>) {
    let _ = std::fs::remove_file(cache_dir.join(layout::SNAPSHOT_DELTA));
    if !write_file(cache_dir, layout::SNAPSHOT, &encode(snap)) {
        remove_in(cache_dir);
    }
}

/// Write the delta of the current snapshot.
fn write_delta(cache_dir: &Path, delta: &Delta) {
    if !write_file(cache_dir, layout::SNAPSHOT_DELTA, &encode_delta(delta)) {
        remove_in(cache_dir);
    }
}

/// Where a partial build runs.
struct Ctx<'a> {
    manifest: &'a Path,
    params: &'a [(String, String)],
    root: &'a Path,
    cache_dir: &'a Path,
    t0: std::time::Instant,
}

/// The partial build of a snapshot whose `changed` entries are all rule
/// files: load the files of the rules they declare and of every rule
/// downstream, know the others by their recorded outputs, and build. `None`
/// (nothing written) when a full build must decide: another kind of path
/// changed, a file now declares other rules or reads other rules, or the
/// partial workspace has a static error (the full build reports it).
fn partial(
    ctx: &Ctx<'_>,
    mut snap: Snapshot<'_>,
    mut delta: Delta,
    changed: Vec<(usize, Stamp)>,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Option<Fast> {
    let mut files = Small::default();
    for (i, now) in &changed {
        let e = &snap.entries[*i];
        if !e.rule_file || e.stamp.kind != 1 || now.kind != 1 {
            tracing::debug!(path = e.path_str(), "snapshot: not a rule file edit, a full build decides");
            return None;
        }
        files.insert(e.path_str());
    }
    // The rules of the changed files, and everything downstream of them
    // (lines are in dependency order: one pass). The sets are usually tiny:
    // looked up linearly until they are not.
    let mut closure: Vec<usize> = Vec::new();
    let mut loaded = Small::default();
    for (i, l) in snap.lines.iter().enumerate() {
        if files.contains(&l.file) || l.deps.iter().any(|d| loaded.contains(d)) {
            closure.push(i);
            loaded.insert(&l.rule);
        }
    }
    let load_files: BTreeSet<&str> = closure.iter().map(|&i| snap.lines[i].file.as_ref()).collect();
    // Every rule of a loaded file is loaded, and the frozen rules read are known.
    let mut needed = Small::default();
    for &i in &closure {
        for d in snap.lines[i].deps.iter().filter(|d| !loaded.contains(d)) {
            needed.insert(d);
        }
    }
    let load_files_set = Small::of(load_files.iter().copied());
    let mut frozen: HashMap<String, Record> = HashMap::new();
    for l in &snap.lines {
        if load_files_set.contains(&l.file) && !loaded.contains(&l.rule) {
            return None;
        }
        if needed.contains(&l.rule) {
            frozen.insert(l.rule.to_string(), frozen_record(l));
        }
    }
    if frozen.len() != needed.len() {
        return None;
    }
    let loaded: HashSet<&str> = loaded.iter().collect();
    tracing::debug!(
        loaded = loaded.len(),
        frozen = frozen.len(),
        ms = ctx.t0.elapsed().as_secs_f64() * 1e3,
        "snapshot: partial build"
    );
    let mut p = Project::open_partial(
        ctx.manifest,
        ctx.params,
        load_files.iter().map(|f| f.to_string()).collect(),
        frozen.keys().cloned().collect(),
    )
    .ok()?;
    // The partial workspace must be the same graph: the same rules, reading the same rules.
    let names: HashSet<&str> = crate::db::rule_index(&p.db, p.ws).decls.keys().map(String::as_str).collect();
    if names != loaded || !p.static_errors().is_empty() {
        tracing::debug!("snapshot: the edited files declare other rules or have errors");
        return None;
    }
    let graph = p.graph();
    for &i in &closure {
        let l = &snap.lines[i];
        if rule_deps(graph, &l.rule).into_iter().ne(l.deps.iter().map(|d| d.as_ref())) {
            tracing::debug!(rule = l.rule.as_ref(), "snapshot: a rule reads other rules now");
            return None;
        }
    }
    let mut seed = Seed { frozen, ..Default::default() };
    for &i in &closure {
        let l = &snap.lines[i];
        let le = LastEntry {
            key: l.key.to_string(),
            content_hash: l.content_hash.to_string(),
            data_hash: l.data_hash.to_string(),
            rows: l.rows,
            bytes: l.bytes,
        };
        seed.last.insert(l.rule.to_string(), le);
        if let Some((k, e)) = &l.published {
            seed.published.insert(k.to_string(), e.clone());
        }
    }
    // Under the store lock, the build first checks that no other build ran
    // since the snapshot was read (it would have moved an own entry): then
    // the outputs known here are still the current ones.
    let own: Vec<(PathBuf, Stamp)> =
        snap.entries.iter().filter(|e| e.own).map(|e| (ctx.root.join(e.path_str()), e.stamp)).collect();
    seed.guard = Some(Box::new(move || own.iter().all(|(path, st)| Stamp::of(path) == *st)));
    p.seed = Some(seed);
    let read_at = p.synced_at_ns?;
    // The rules outside the partial workspace are reused, and reported first
    // (a full build decides them before any rule it runs).
    if !progress.quiet() {
        let mut next = closure.iter().peekable();
        for (i, l) in snap.lines.iter().enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
            } else {
                progress.finished(&reused(l));
            }
        }
    }
    let bopts = BuildOptions { jobs: opts.jobs, cancel: opts.cancel.clone(), ..Default::default() };
    let part = match build::build(&mut p, &bopts, progress) {
        Ok(r) => r,
        // Nothing was built (static errors, the lock): the full build decides and reports.
        Err(e) => {
            tracing::debug!(?e, "snapshot: the partial build did not start");
            return None;
        }
    };
    tracing::debug!(ms = ctx.t0.elapsed().as_secs_f64() * 1e3, "snapshot: partial build done");
    let mut built: HashMap<String, RuleReport> = part.rules.into_iter().map(|r| (r.rule.clone(), r)).collect();
    let clean = part.errors.is_empty() && built.values().all(|r| matches!(r.status, Status::Built | Status::Reused));
    if clean && let Ok(store) = p.store() {
        // The snapshot again: the loaded rules' outputs, the edited files' stamps, the cache's.
        let mut outputs: HashMap<String, Output> = part.outputs.into_iter().map(|o| (o.rule.clone(), o)).collect();
        let mut ok = outputs.len() == closure.len();
        for &i in &closure {
            let Some(o) = outputs.remove(snap.lines[i].rule.as_ref()) else {
                ok = false;
                break;
            };
            let old = &snap.lines[i];
            let deps = old.deps.iter().map(|d| Cow::Owned(d.to_string())).collect();
            delta.lines.insert(i as u64, Line::from_output(o, old.file.to_string().into(), deps));
        }
        for (i, now) in &changed {
            let e = &snap.entries[*i];
            let Some(hash) = racy_hash(now, read_at, p.file_text(Path::new(e.path_str())).as_deref()) else {
                ok = false;
                break;
            };
            delta.entries.insert(*i as u64, Entry { stamp: *now, hash, ..e.clone().into_owned() });
        }
        let spec = p.spec().ok()?;
        delta.own = own_entries(ctx.root, &spec.output_path(ctx.root), store.dir());
        if ok {
            // A delta that grew past an eighth of the lines is folded into a new base.
            if delta.lines.len() > 64.max(snap.lines.len() / 8) {
                delta.apply(&mut snap);
                write_base(ctx.cache_dir, &snap);
            } else {
                write_delta(ctx.cache_dir, &delta);
            }
            tracing::debug!(ms = ctx.t0.elapsed().as_secs_f64() * 1e3, "snapshot re-recorded");
        } else {
            remove_in(ctx.cache_dir);
        }
    } else {
        remove_in(ctx.cache_dir);
    }
    // The report of every rule, in the recorded order.
    let rules: Vec<RuleReport> =
        snap.lines.iter().map(|l| built.remove(l.rule.as_ref()).unwrap_or_else(|| reused(l))).collect();
    tracing::debug!(ms = ctx.t0.elapsed().as_secs_f64() * 1e3, "snapshot: report assembled");
    let report = BuildReport {
        rules,
        elapsed_ms: ctx.t0.elapsed().as_secs_f64() * 1e3,
        files_hashed: part.files_hashed,
        sources: part.sources,
        errors: part.errors,
        snapshot: Some(SnapshotUse::Partial),
        remote: part.remote,
        outputs: vec![],
    };
    Some(Fast::Partial(report, Box::new(p)))
}

/// A set of strings looked up linearly while small (a partial build's
/// changed files and rules), hashed once it grows.
#[derive(Default)]
struct Small<'a> {
    few: Vec<&'a str>,
    many: HashSet<&'a str>,
}

impl<'a> Small<'a> {
    fn of(items: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Small::default();
        for i in items {
            s.insert(i);
        }
        s
    }
    fn insert(&mut self, v: &'a str) {
        if self.contains(v) {
            return;
        }
        if self.few.len() < 8 && self.many.is_empty() {
            self.few.push(v);
        } else {
            self.many.extend(self.few.drain(..));
            self.many.insert(v);
        }
    }
    fn contains(&self, v: &str) -> bool {
        self.few.contains(&v) || (!self.many.is_empty() && self.many.contains(v))
    }
    fn len(&self) -> usize {
        self.few.len() + self.many.len()
    }
    fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.few.iter().copied().chain(self.many.iter().copied())
    }
}

/// The output of a rule outside a partial workspace, as its readers see it.
fn frozen_record(l: &Line<'_>) -> Record {
    Record {
        key: l.key.to_string(),
        content_hash: l.content_hash.to_string(),
        rule: l.rule.to_string(),
        signature: String::new(),
        schema: vec![],
        rows: l.rows,
        bytes: l.bytes,
        elapsed_ms: 0,
        parts: None,
        data_hash: l.data_hash.to_string(),
        checks: None,
        footer: Default::default(),
    }
}

// ---- encoding ------------------------------------------------------------

fn put_str(w: &mut Vec<u8>, t: &str) {
    w.extend_from_slice(&(t.len() as u32).to_le_bytes());
    w.extend_from_slice(t.as_bytes());
}

fn put_entry(w: &mut Vec<u8>, e: &Entry<'_>) {
    // The path with its NUL, so decoding borrows it as a C string.
    let p = e.path.to_bytes_with_nul();
    w.extend_from_slice(&(p.len() as u32).to_le_bytes());
    w.extend_from_slice(p);
    w.push(e.stamp.kind);
    for v in [e.stamp.size, e.stamp.mtime_ns, e.stamp.ctime_ns, e.stamp.ino] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.push(u8::from(e.own) | (u8::from(e.hash.is_some()) << 1) | (u8::from(e.rule_file) << 2));
    if let Some(h) = &e.hash {
        w.extend_from_slice(h);
    }
}

fn put_line(w: &mut Vec<u8>, l: &Line<'_>) {
    for t in [&l.rule, &l.key, &l.content_hash, &l.data_hash, &l.file] {
        put_str(w, t);
    }
    w.extend_from_slice(&l.rows.to_le_bytes());
    w.extend_from_slice(&l.bytes.to_le_bytes());
    w.extend_from_slice(&(l.deps.len() as u32).to_le_bytes());
    for d in &l.deps {
        put_str(w, d);
    }
    match &l.published {
        None => w.push(0),
        Some((k, e)) => {
            w.push(1);
            put_str(w, k);
            put_str(w, &e.content_hash);
            w.extend_from_slice(&e.bytes.to_le_bytes());
            w.extend_from_slice(&(e.mtime_ns as u64).to_le_bytes());
        }
    }
}

/// Frame a body: magic, body, blake3 of the body.
fn framed(magic: &[u8; 8], w: Vec<u8>) -> Vec<u8> {
    let sum = blake3::hash(&w);
    let mut out = Vec::with_capacity(w.len() + 40);
    out.extend_from_slice(magic);
    out.extend_from_slice(&w);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The body of a framed file and its checksum, if intact.
fn unframe<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Option<(&'a [u8], [u8; 32])> {
    let body = bytes.strip_prefix(magic)?;
    let (body, sum) = body.split_at(body.len().checked_sub(32)?);
    (blake3::hash(body).as_bytes() == sum).then(|| (body, sum.try_into().unwrap_or_default()))
}

fn encode(s: &Snapshot<'_>) -> Vec<u8> {
    let mut w = Vec::with_capacity(64 + s.entries.len() * 80 + s.lines.len() * 360);
    w.extend_from_slice(&s.identity);
    w.extend_from_slice(&(s.entries.len() as u64).to_le_bytes());
    for e in &s.entries {
        put_entry(&mut w, e);
    }
    w.extend_from_slice(&(s.lines.len() as u64).to_le_bytes());
    for l in &s.lines {
        put_line(&mut w, l);
    }
    framed(MAGIC, w)
}

fn encode_delta(d: &Delta) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(&d.base);
    w.extend_from_slice(&(d.entries.len() as u64).to_le_bytes());
    for (i, e) in &d.entries {
        w.extend_from_slice(&i.to_le_bytes());
        put_entry(&mut w, e);
    }
    w.extend_from_slice(&(d.own.len() as u64).to_le_bytes());
    for e in &d.own {
        put_entry(&mut w, e);
    }
    w.extend_from_slice(&(d.lines.len() as u64).to_le_bytes());
    for (i, l) in &d.lines {
        w.extend_from_slice(&i.to_le_bytes());
        put_line(&mut w, l);
    }
    framed(DELTA_MAGIC, w)
}

#[cfg(test)]
/// Decode a snapshot (borrowing from `bytes`) and its checksum; `None` if it
/// is not one, or torn, or corrupt.
fn decode(bytes: &[u8]) -> Option<(Snapshot<'_>, [u8; 32])> {
    let (body, sum) = unframe(MAGIC, bytes)?;
    let mut r = Reader { b: body };
    let mut s = r.head()?;
    s.lines = r.lines()?;
    r.b.is_empty().then_some((s, sum))
}

fn decode_delta(bytes: &[u8]) -> Option<Delta> {
    let (body, _) = unframe(DELTA_MAGIC, bytes)?;
    let mut r = Reader { b: body };
    let mut d = Delta { base: r.take(32)?.try_into().ok()?, ..Default::default() };
    for _ in 0..r.u64()? {
        let i = r.u64()?;
        d.entries.insert(i, r.entry()?.into_owned());
    }
    for _ in 0..r.u64()? {
        d.own.push(r.entry()?.into_owned());
    }
    for _ in 0..r.u64()? {
        let i = r.u64()?;
        d.lines.insert(i, r.line()?.into_owned());
    }
    r.b.is_empty().then_some(d)
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
    fn len(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn str(&mut self) -> Option<Cow<'a, str>> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok().map(Cow::Borrowed)
    }
    /// The identity and the entries (the lines follow).
    fn head(&mut self) -> Option<Snapshot<'a>> {
        let mut s = Snapshot { identity: self.take(32)?.try_into().ok()?, ..Default::default() };
        let n = self.u64()? as usize;
        s.entries.reserve(n.min(self.b.len()));
        for _ in 0..n {
            s.entries.push(self.entry()?);
        }
        Some(s)
    }
    /// The lines.
    fn lines(&mut self) -> Option<Vec<Line<'a>>> {
        let n = self.u64()? as usize;
        let mut lines = Vec::with_capacity(n.min(self.b.len()));
        for _ in 0..n {
            lines.push(self.line()?);
        }
        Some(lines)
    }
    fn entry(&mut self) -> Option<Entry<'a>> {
        let n = self.len()?;
        let path = CStr::from_bytes_with_nul(self.take(n)?).ok()?;
        let kind = self.take(1)?[0];
        let stamp = Stamp { kind, size: self.u64()?, mtime_ns: self.u64()?, ctime_ns: self.u64()?, ino: self.u64()? };
        let flags = self.take(1)?[0];
        let hash = if flags & 2 != 0 { Some(self.take(32)?.try_into().ok()?) } else { None };
        Some(Entry { path: Cow::Borrowed(path), stamp, own: flags & 1 != 0, rule_file: flags & 4 != 0, hash })
    }
    fn line(&mut self) -> Option<Line<'a>> {
        let (rule, key, content_hash, data_hash, file) =
            (self.str()?, self.str()?, self.str()?, self.str()?, self.str()?);
        let (rows, bytes) = (self.u64()?, self.u64()?);
        let deps = (0..self.len()?).map(|_| self.str()).collect::<Option<Vec<_>>>()?;
        let published = match self.take(1)?[0] {
            0 => None,
            _ => {
                let (k, content_hash) = (self.str()?, self.str()?.into_owned());
                let (bytes, mtime_ns) = (self.u64()?, u128::from(self.u64()?));
                Some((k, PublishedEntry { content_hash, bytes, mtime_ns }))
            }
        };
        Some(Line { rule, key, content_hash, data_hash, rows, bytes, file, deps, published })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot<'static> {
        let st = Stamp { kind: 1, size: 7, mtime_ns: 1, ctime_ns: 2, ino: 3 };
        let entry = |path: &str, stamp, own, hash| Entry { path: c_path(path), stamp, own, rule_file: !own, hash };
        Snapshot {
            identity: [7; 32],
            entries: vec![
                entry("rules/a.sql", st, false, Some([5; 32])),
                entry("/abs/dir", Stamp { kind: 2, ..st }, true, None),
            ],
            lines: vec![Line {
                rule: "a".into(),
                key: "k".into(),
                content_hash: "h".into(),
                data_hash: "d".into(),
                rows: 9,
                bytes: 10,
                file: "rules/a.sql".into(),
                deps: vec!["b".into(), "c".into()],
                published: Some((
                    "out/a.parquet".into(),
                    PublishedEntry { content_hash: "h".into(), bytes: 10, mtime_ns: 5 },
                )),
            }],
        }
    }

    /// Encoding round-trips; a torn, flipped or foreign file decodes to nothing.
    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let snap = sample();
        let bytes = encode(&snap);
        assert_eq!(decode(&bytes).map(|d| d.0), Some(sample()));
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(decode(&flipped).is_none());
        assert!(decode(b"not a snapshot").is_none());
        assert!(decode(&[]).is_none());
    }

    /// A delta replaces entries and lines by index and the own entries
    /// whole; it round-trips.
    #[test]
    fn deltas_apply_by_index() {
        let mut snap = sample();
        let mut d = Delta { base: [1; 32], ..Default::default() };
        let e0 = Entry { stamp: Stamp { size: 99, ..snap.entries[0].stamp }, ..snap.entries[0].clone() };
        d.entries.insert(0, e0.clone());
        d.own =
            vec![Entry { path: c_path("out"), stamp: Stamp::default(), own: true, rule_file: false, hash: None }; 2];
        d.lines.insert(0, Line { rows: 1, ..snap.lines[0].clone() });
        assert_eq!(decode_delta(&encode_delta(&d)), Some(Delta { ..d_clone(&d) }));
        d.apply(&mut snap);
        assert_eq!(snap.entries.len(), 3);
        assert_eq!(snap.entries[0], e0);
        assert!(snap.entries[1..].iter().all(|e| e.own && e.path_str() == "out"));
        assert_eq!(snap.lines[0].rows, 1);
    }

    fn d_clone(d: &Delta) -> Delta {
        Delta { base: d.base, entries: d.entries.clone(), own: d.own.clone(), lines: d.lines.clone() }
    }

    /// A path is racy until its timestamps are older than the read by more
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

    /// `fstatat` relative to the root sees what `metadata` sees.
    #[test]
    fn stamps_at_a_directory_match_metadata() {
        let dir = std::env::temp_dir().join(format!("relspec-stamp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        let fd = std::fs::File::open(&dir).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
        for name in ["f", ".", "missing"] {
            let c = CString::new(name).unwrap();
            assert_eq!(Stamp::at(fd, &c), Stamp::of(&dir.join(name)), "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
