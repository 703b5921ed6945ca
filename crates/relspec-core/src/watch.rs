//! Watch mode: file events -> input changes -> rebuild what is stale.
//!
//! One process keeps one [`Project`] (one salsa database) alive. Directories
//! are watched recursively (editors save by rename); events under the cache
//! and output dirs and editor temp files are ignored. Events are debounced: a
//! batch closes after a quiet window (30 ms while a file may still be being
//! written; 5 ms once every file is closed after writing, renamed into place
//! or removed) or at a latency cap. A batch re-syncs the
//! inputs (setting only what changed) and runs a build. An event that arrives
//! during a build cancels it (checked between record batches); the next batch
//! then starts a new build.
//!
//! Architecture invariant: the watcher never publishes anything itself; it
//! only calls `build`, so a bad edit or a cancelled build leaves the last
//! good outputs in place.

use crate::build::{self, BuildOptions, BuildReport, Progress, RuleReport, Status};
use crate::error::{Diag, ErrorKind, Result};
use crate::project::Project;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Options of `relspec watch`.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet window that closes a batch of events while a file of it may
    /// still be being written.
    pub quiet: Duration,
    /// Quiet window once every file of the batch is settled (closed after
    /// writing, renamed into place, or removed): a save is complete, only
    /// the rest of a multi-file save is waited for.
    pub settle: Duration,
    /// Longest time a batch stays open after its first event.
    pub max_latency: Duration,
    /// Exit after the first build.
    pub once: bool,
    /// Rules executing at once.
    pub jobs: usize,
    /// `--param name=value` overrides.
    pub params: Vec<(String, String)>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            quiet: Duration::from_millis(30),
            settle: Duration::from_millis(5),
            max_latency: Duration::from_millis(300),
            once: false,
            jobs: 0,
            params: vec![],
        }
    }
}

/// What the watcher reports.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// Watching started.
    Watching {
        /// Directories watched.
        roots: Vec<String>,
    },
    /// A batch of file changes was seen.
    Change {
        /// Paths changed (relative to the root when inside it).
        paths: Vec<String>,
        /// Whether notify asked for a full rescan.
        rescan: bool,
    },
    /// A rule finished (built, reused, failed, skipped).
    Rule(RuleReport),
    /// An error (with location).
    Error {
        /// The diagnostic as JSON.
        diagnostic: serde_json::Value,
        /// Rendered text.
        #[serde(skip)]
        rendered: String,
    },
    /// A build finished.
    BuildDone {
        /// Whether every rule succeeded.
        ok: bool,
        /// Rules executed.
        built: usize,
        /// Rules reused.
        reused: usize,
        /// Rules failed.
        failed: usize,
        /// Source files parsed (the rest of a source came from memos or fragments).
        parsed: usize,
        /// Build time, ms.
        elapsed_ms: f64,
        /// From the first event of the batch to the end of publishing, ms.
        latency_ms: Option<f64>,
    },
    /// A build was cancelled by a newer change.
    Cancelled,
}

struct Forward<'a> {
    sink: &'a (dyn Fn(WatchEvent) + Sync),
}

impl Progress for Forward<'_> {
    fn finished(&self, r: &RuleReport) {
        (self.sink)(WatchEvent::Rule(r.clone()));
    }
}

/// Whether a file event at `path` is noise for a watcher: under one of
/// `ignore_dirs` (the cache and output dirs) or an editor's temp file.
pub fn ignored(path: &Path, ignore_dirs: &[PathBuf]) -> bool {
    if ignore_dirs.iter().any(|d| path.starts_with(d)) {
        return true;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name.starts_with(".#")
        || name == "4913"
        || name.contains(".relspec-tmp-")
        || path.components().any(|c| c.as_os_str() == ".git" || c.as_os_str() == "target")
}

/// Run the watch loop on the workspace at `manifest`, reporting to `sink`.
/// Returns after the first build with `once`, else runs until the channel closes.
pub fn watch(manifest: &Path, opts: &WatchOptions, sink: &(dyn Fn(WatchEvent) + Sync)) -> Result<bool> {
    let mut p = Project::open_with_params(manifest, &opts.params)?;
    let root =
        std::fs::canonicalize(&p.root).map_err(|e| Diag::new(ErrorKind::Io(format!("{}: {e}", p.root.display()))))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let building = Arc::new(AtomicBool::new(false));
    if opts.once {
        return Ok(run_build(&mut p, opts, &cancel, None, sink));
    }
    // The watcher is registered before the first build, so an edit made while
    // it runs cancels it and is picked up by the next batch.
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let (c2, b2) = (cancel.clone(), building.clone());
    let ignore = ignore_dirs(&p, &root);
    let ignore2 = ignore.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(e) = &ev {
            let relevant = e.need_rescan() || e.paths.iter().any(|p| !ignored(p, &ignore2));
            if relevant && b2.load(Ordering::Relaxed) && !e.kind.is_access() {
                c2.store(true, Ordering::Relaxed);
            }
        }
        let _ = tx.send(ev);
    })
    .map_err(|e| Diag::new(ErrorKind::Io(format!("cannot start the file watcher: {e}"))))?;
    let mut roots = vec![root.clone()];
    for extra in dataset_dirs_outside(&p, &root) {
        roots.push(extra);
    }
    for r in &roots {
        watcher
            .watch(r, RecursiveMode::Recursive)
            .map_err(|e| Diag::new(ErrorKind::Io(format!("cannot watch {}: {e}", r.display()))))?;
    }
    building.store(true, Ordering::Relaxed);
    let mut ok = run_build(&mut p, opts, &cancel, None, sink);
    building.store(false, Ordering::Relaxed);
    sink(WatchEvent::Watching { roots: roots.iter().map(|r| r.display().to_string()).collect() });
    loop {
        // Wait for the first relevant event of a batch.
        let mut paths = std::collections::BTreeSet::new();
        let mut rescan = false;
        let mut writing = Writing::default();
        let first = loop {
            let Ok(ev) = rx.recv() else { return Ok(ok) };
            writing.see(&ev, &ignore);
            if take(ev, &ignore, &root, &mut paths, &mut rescan) {
                break Instant::now();
            }
        };
        // Debounce: close after a quiet window (short once every file
        // written is settled), or at the latency cap.
        loop {
            let left = opts.max_latency.saturating_sub(first.elapsed());
            if left.is_zero() {
                break;
            }
            let quiet = if writing.settled() { opts.settle } else { opts.quiet };
            match rx.recv_timeout(quiet.min(left)) {
                Ok(ev) => {
                    writing.see(&ev, &ignore);
                    take(ev, &ignore, &root, &mut paths, &mut rescan);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(ok),
            }
        }
        sink(WatchEvent::Change { paths: paths.iter().cloned().collect(), rescan });
        cancel.store(false, Ordering::Relaxed);
        building.store(true, Ordering::Relaxed);
        let spec_before = p.spec().ok().map(|s| s.profile.clone());
        // Sync what the events name; a rescan (overflow) re-reads everything.
        let _ = if rescan {
            p.sync_now()
        } else {
            let changed: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            p.sync_paths(&changed)
        };
        if p.spec().ok().map(|s| s.profile.clone()) != spec_before {
            p.reset_engine();
        }
        ok = run_build(&mut p, opts, &cancel, Some(first), sink);
        building.store(false, Ordering::Relaxed);
    }
}

/// Files of a batch whose writing may not be done: data written (or the
/// file created) and not closed, renamed into place or removed since. An
/// editor's save ends with a close or a rename, so a batch of saves is
/// settled as soon as its events are in; a copy still in progress is not.
#[derive(Default)]
struct Writing {
    open: std::collections::BTreeSet<PathBuf>,
    /// An event that names no file (an overflow, an error) settles nothing.
    unknown: bool,
}

impl Writing {
    fn see(&mut self, ev: &notify::Result<notify::Event>, ignore: &[PathBuf]) {
        use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
        let Ok(ev) = ev else {
            self.unknown = true;
            return;
        };
        if ev.need_rescan() {
            self.unknown = true;
        }
        let paths = ev.paths.iter().filter(|p| !ignored(p, ignore));
        match ev.kind {
            EventKind::Create(CreateKind::File | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => self.open.extend(paths.cloned()),
            EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Remove(_) => {
                paths.for_each(|p| _ = self.open.remove(p));
            }
            // A rename moves a whole file: its source and target are settled.
            EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::To | RenameMode::Both)) => {
                paths.for_each(|p| _ = self.open.remove(p));
            }
            _ => {}
        }
    }

    fn settled(&self) -> bool {
        self.open.is_empty() && !self.unknown
    }
}

/// Record one notify event into the batch; true if it is relevant.
fn take(
    ev: notify::Result<notify::Event>,
    ignore: &[PathBuf],
    root: &Path,
    paths: &mut std::collections::BTreeSet<String>,
    rescan: &mut bool,
) -> bool {
    let Ok(ev) = ev else {
        *rescan = true;
        return true;
    };
    if ev.kind.is_access() {
        return false;
    }
    if ev.need_rescan() {
        *rescan = true;
        return true;
    }
    let mut relevant = false;
    for p in &ev.paths {
        if !ignored(p, ignore) {
            relevant = true;
            paths.insert(p.strip_prefix(root).unwrap_or(p).display().to_string());
        }
    }
    relevant
}

fn ignore_dirs(p: &Project, root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(spec) = p.spec() {
        dirs.push(root.join(&spec.cache_dir));
        dirs.push(root.join(&spec.output_dir));
    } else {
        dirs.push(root.join("cache"));
        dirs.push(root.join("out"));
    }
    dirs
}

/// Dataset directories that live outside the workspace root (watched too).
fn dataset_dirs_outside(p: &Project, root: &Path) -> Vec<PathBuf> {
    let Ok(spec) = p.spec() else { return vec![] };
    let mut out = Vec::new();
    for ds in spec.datasets.values() {
        let dir = relspec_db::datasets::DatasetLocation::new(&ds.path).watch_dir(root);
        if let Ok(dir) = std::fs::canonicalize(&dir)
            && !dir.starts_with(root)
            && !out.contains(&dir)
        {
            out.push(dir);
        }
    }
    out
}

fn run_build(
    p: &mut Project,
    opts: &WatchOptions,
    cancel: &Arc<AtomicBool>,
    first: Option<Instant>,
    sink: &(dyn Fn(WatchEvent) + Sync),
) -> bool {
    let bopts = BuildOptions { jobs: opts.jobs, cancel: Some(cancel.clone()), ..Default::default() };
    let forward = Forward { sink };
    match build::build(p, &bopts, &forward) {
        Ok(report) => {
            if cancel.load(Ordering::Relaxed) {
                sink(WatchEvent::Cancelled);
                return false;
            }
            for e in &report.errors {
                emit_error(p, e, sink);
            }
            done(&report, first, sink);
            report.ok()
        }
        Err(errs) => {
            for e in &errs {
                emit_error(p, e, sink);
            }
            sink(WatchEvent::BuildDone {
                ok: false,
                built: 0,
                reused: 0,
                failed: errs.len(),
                parsed: 0,
                elapsed_ms: 0.0,
                latency_ms: first.map(|f| f.elapsed().as_secs_f64() * 1000.0),
            });
            false
        }
    }
}

fn emit_error(p: &Project, e: &Diag, sink: &(dyn Fn(WatchEvent) + Sync)) {
    let text = e.location.as_ref().and_then(|l| p.file_text(&l.file));
    sink(WatchEvent::Error { diagnostic: e.to_json(text.as_deref()), rendered: format!("{:?}", e.to_report(text)) });
}

fn done(r: &BuildReport, first: Option<Instant>, sink: &(dyn Fn(WatchEvent) + Sync)) {
    sink(WatchEvent::BuildDone {
        ok: r.ok(),
        built: r.count(Status::Built),
        reused: r.count(Status::Reused),
        failed: r.count(Status::Failed),
        parsed: r.sources.iter().map(|s| s.parsed).sum(),
        elapsed_ms: r.elapsed_ms,
        latency_ms: first.map(|f| f.elapsed().as_secs_f64() * 1000.0),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind, RenameMode,
    };
    use std::io::Write;

    fn ev(kind: EventKind, path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
    }

    #[test]
    fn a_batch_is_settled_once_its_files_are_closed_renamed_or_removed() {
        let ignore = vec![PathBuf::from("/w/cache")];
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let mut w = Writing::default();
        assert!(w.settled());
        w.see(&ev(EventKind::Create(CreateKind::File), "/w/a.csv"), &ignore);
        w.see(&ev(data, "/w/a.csv"), &ignore);
        w.see(&ev(data, "/w/b.csv"), &ignore);
        assert!(!w.settled(), "two files being written");
        w.see(&ev(closed, "/w/a.csv"), &ignore);
        assert!(!w.settled(), "b.csv is still open");
        w.see(&ev(EventKind::Remove(RemoveKind::File), "/w/b.csv"), &ignore);
        assert!(w.settled());
        // A save by rename: a new file written, then moved into place.
        w.see(&ev(data, "/w/a.csv.new"), &ignore);
        assert!(!w.settled());
        w.see(&ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/w/a.csv.new"), &ignore);
        w.see(&ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/w/a.csv"), &ignore);
        assert!(w.settled());
        // The cache and output dirs are written by relspec itself.
        w.see(&ev(data, "/w/cache/objects/x.parquet"), &ignore);
        assert!(w.settled(), "ignored paths do not hold a batch open");
        // An overflow or an error: nothing is known to be settled.
        w.see(&Err(notify::Error::generic("overflow")), &ignore);
        assert!(!w.settled());
    }

    /// Real inotify events: a file open for writing keeps its batch open;
    /// closing it settles the batch.
    #[test]
    fn a_file_settles_when_the_writer_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        watcher.watch(&root, RecursiveMode::Recursive).unwrap();
        let mut w = Writing::default();
        let drain = |w: &mut Writing| {
            while let Ok(e) = rx.recv_timeout(Duration::from_millis(300)) {
                w.see(&e, &[]);
            }
        };
        let mut f = std::fs::File::create(root.join("part.csv")).unwrap();
        f.write_all(b"id,v\n1,2\n").unwrap();
        f.flush().unwrap();
        drain(&mut w);
        assert!(!w.settled(), "still open: {:?}", w.open);
        drop(f);
        drain(&mut w);
        assert!(w.settled(), "closed: {:?}", w.open);
    }
}
