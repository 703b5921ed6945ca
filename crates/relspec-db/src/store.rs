//! The content-addressed cache on disk.
//!
//! Layout under the cache dir:
//! - `objects/<h[0..2]>/<h>.parquet`: materialized outputs, named by the blake3
//!   of their bytes (identical outputs share one object);
//! - `records/<k[0..2]>/<k>.json`: output key -> record (content hash, schema,
//!   rows, signature, timings);
//! - `stat-cache.json`: (path, size, mtime, inode) -> content hash of input files,
//!   and `stat-cache.log`, the entries changed since it was written;
//! - `published.json`: what was last published under the output dir;
//! - `last-built.json`: per rule, the key parts and output it last resolved to;
//! - `rule-summaries.jsonl`: rule definition hash -> reads, params, signature (append-only lines);
//! - `artifacts/<key>.json`: plans, lineage and contract results of each output (see `bundle`);
//! - `runs/<run id>.json`: the run bundles of recent builds;
//! - `analysis.jsonl`: the memo of schema-level analysis, append-only lines (see `analysis`);
//! - `tmp/`: staging for atomic writes; `lock`: guards concurrent builds.
//!
//! Architecture invariant: every file is written to `tmp/` and renamed into
//! place, object before record, so a killed build never leaves a record that
//! points at a missing or partial object. Nothing in a key or a record is an
//! absolute path or an mtime, so the cache is relocatable.

use crate::error::{Diag, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn io(what: &str, p: &Path, e: std::io::Error) -> Diag {
    Diag::new(ErrorKind::Store(format!("{what} {}: {e}", p.display())))
}

/// The cache directory's layout: every name the store and its users keep
/// under it. `clean` removes exactly these (and the legacy names), nothing else.
pub mod layout {
    /// Content-addressed Parquet objects, `objects/<h[..2]>/<h>.parquet`.
    pub const OBJECTS: &str = "objects";
    /// Records by output key, `records/<k[..2]>/<k>.json`.
    pub const RECORDS: &str = "records";
    /// Staging area for writes (renamed into place).
    pub const TMP: &str = "tmp";
    /// Per-output-key artifacts (plans, lineage, contract results).
    pub const ARTIFACTS: &str = "artifacts";
    /// Run bundles.
    pub const RUNS: &str = "runs";
    /// The lock file guarding concurrent builds.
    pub const LOCK: &str = "lock";
    /// Input file hashes by stat.
    pub const STAT_CACHE: &str = "stat-cache.json";
    /// Entries of the stat cache changed since `stat-cache.json` was written.
    pub const STAT_CACHE_LOG: &str = "stat-cache.log";
    /// The publish ledger.
    pub const PUBLISHED: &str = "published.json";
    /// Each rule's key and output at the last build.
    pub const LAST_BUILT: &str = "last-built.json";
    /// Changes to `last-built.json` since it was last written whole (JSON lines).
    pub const LAST_BUILT_LOG: &str = "last-built.log";
    /// Changes to `published.json` since it was last written whole (JSON lines).
    pub const PUBLISHED_LOG: &str = "published.log";
    /// The rule-summary memo (JSON lines).
    pub const SUMMARIES: &str = "rule-summaries.jsonl";
    /// The analysis (check) memo (JSON lines).
    pub const ANALYSIS: &str = "analysis.jsonl";
    /// Extracted source facts, packed (`fragments/pack-<h>.parquet`, see relspec-extract).
    pub const FRAGMENTS: &str = "fragments";
    /// The last clean build's snapshot: what a fresh no-op build re-stats.
    pub const SNAPSHOT: &str = "snapshot.bin";
    /// Changes to the snapshot since it was last written whole.
    pub const SNAPSHOT_DELTA: &str = "snapshot.delta";
    /// Everything above but the lock.
    pub const ALL: &[&str] = &[
        OBJECTS,
        RECORDS,
        TMP,
        ARTIFACTS,
        RUNS,
        STAT_CACHE,
        STAT_CACHE_LOG,
        PUBLISHED,
        LAST_BUILT,
        SUMMARIES,
        ANALYSIS,
        FRAGMENTS,
        LAST_BUILT_LOG,
        PUBLISHED_LOG,
        SNAPSHOT,
        SNAPSHOT_DELTA,
    ];
    /// Names older versions used (removed by `clean`).
    pub const LEGACY: &[&str] = &["plans", "analysis.json", "rule-summaries.json"];
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A column of a materialized output, for records and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Name.
    pub name: String,
    /// Arrow type, displayed.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Nullable.
    pub nullable: bool,
}

/// Where an object came from: the producer's part of its record.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// Rule that produced it.
    pub rule: String,
    /// Plan signature.
    pub signature: String,
    /// Execution time in milliseconds.
    pub elapsed_ms: u64,
    /// The key's parts (to explain why a later build differs).
    pub parts: Option<serde_json::Value>,
    /// The data checks' results (JSON), for the published sidecar.
    pub checks: Option<serde_json::Value>,
    /// The key-value metadata written into the Parquet footer.
    pub footer: BTreeMap<String, String>,
}

/// What the store knows about one materialized output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Output key (hash of signature, input fingerprints, engine fingerprint).
    pub key: String,
    /// blake3 of the Parquet bytes.
    pub content_hash: String,
    /// Rule that produced it.
    pub rule: String,
    /// Plan signature.
    pub signature: String,
    /// Output schema.
    pub schema: Vec<ColumnInfo>,
    /// Row count.
    pub rows: u64,
    /// Size of the Parquet file.
    pub bytes: u64,
    /// Execution time in milliseconds when it was built.
    pub elapsed_ms: u64,
    /// The key's parts (to explain why a later build differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<serde_json::Value>,
    /// Hash of the output's data alone (schema and Parquet pages, not the
    /// footer's provenance metadata): what downstream keys use, so an output
    /// whose rows did not change stops propagation even though its key did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_hash: String,
    /// The data checks' results, as the sidecar shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<serde_json::Value>,
    /// The key-value metadata in the object's Parquet footer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub footer: BTreeMap<String, String>,
}

impl Record {
    /// The hash downstream keys use: the data hash (the content hash for
    /// records written before data hashes existed).
    pub fn data_hash(&self) -> &str {
        if self.data_hash.is_empty() { &self.content_hash } else { &self.data_hash }
    }

    /// The sidecar published next to the output (`out/<rule>.parquet.json`):
    /// where the file came from, its schema, rows and contract results.
    /// Deterministic: the same output always has the same sidecar.
    pub fn sidecar(&self) -> serde_json::Value {
        let parts = self.parts.clone().unwrap_or(serde_json::Value::Null);
        let get = |k: &str| parts.get(k).cloned().unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "format": SIDECAR_FORMAT,
            "rule": self.rule,
            "key": self.key,
            "signature": self.signature,
            "engine": get("engine"),
            "relspec_version": self.footer.get(FOOTER_VERSION),
            "inputs": { "datasets": get("datasets"), "upstream": get("upstream") },
            "params": get("params"),
            "contract_hash": get("contract"),
            "content_hash": self.content_hash,
            "data_hash": self.data_hash(),
            "rows": self.rows,
            "bytes": self.bytes,
            "schema": self.schema,
            "checks": self.checks.clone().unwrap_or(serde_json::Value::Array(vec![])),
        })
    }
}

/// Format tag of the published sidecar.
pub const SIDECAR_FORMAT: &str = "relspec-output/v1";
/// Footer metadata key: the output key.
pub const FOOTER_KEY: &str = "relspec.key";
/// Footer metadata key: the rule.
pub const FOOTER_RULE: &str = "relspec.rule";
/// Footer metadata key: the rule's plan signature.
pub const FOOTER_SIGNATURE: &str = "relspec.signature";
/// Footer metadata key: the engine fingerprint.
pub const FOOTER_ENGINE: &str = "relspec.engine";
/// Footer metadata key: the relspec version that wrote the file.
pub const FOOTER_VERSION: &str = "relspec.version";
/// Footer metadata key: the inputs (JSON: dataset fingerprints, upstream data hashes).
pub const FOOTER_INPUTS: &str = "relspec.inputs";
/// Footer metadata key: the parameters bound (JSON: name -> canonical value).
pub const FOOTER_PARAMS: &str = "relspec.params";

/// The footer metadata of an output with these key parts.
pub fn footer_metadata(key: &str, rule: &str, parts: &serde_json::Value) -> BTreeMap<String, String> {
    let get = |k: &str| parts.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let mut m = BTreeMap::new();
    m.insert(FOOTER_KEY.to_string(), key.to_string());
    m.insert(FOOTER_RULE.to_string(), rule.to_string());
    m.insert(FOOTER_SIGNATURE.to_string(), get("signature").as_str().unwrap_or_default().to_string());
    m.insert(FOOTER_ENGINE.to_string(), get("engine").as_str().unwrap_or_default().to_string());
    m.insert(FOOTER_VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string());
    let inputs = serde_json::json!({ "datasets": get("datasets"), "upstream": get("upstream") });
    m.insert(FOOTER_INPUTS.to_string(), inputs.to_string());
    m.insert(FOOTER_PARAMS.to_string(), get("params").to_string());
    m
}

/// Publishing this many outputs at once syncs their file system once
/// instead of each file.
pub const SYNC_FS_BATCH: usize = 8;

/// Flush everything written to the file system holding `dir` (`syncfs`).
pub fn sync_file_system(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir)?;
    // SAFETY: `syncfs` takes an open descriptor, which `f` keeps open.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An exclusive lock on the store, released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// Open (creating directories as needed) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        for sub in ["objects", "records", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| io("cannot create", &p, e))?;
        }
        Ok(Store { dir: dir.to_path_buf() })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take the store's exclusive lock, waiting for another build to finish.
    pub fn lock(&self) -> Result<StoreLock> {
        let p = self.dir.join(layout::LOCK);
        let f =
            File::options().create(true).truncate(false).write(true).open(&p).map_err(|e| io("cannot open", &p, e))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                eprintln!("relspec: waiting for another build to release {}", p.display());
                f.lock().map_err(|e| io("cannot lock", &p, e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("cannot lock", &p, e)),
        }
        Ok(StoreLock { _file: f })
    }

    /// A fresh staging path under `tmp/`.
    pub fn tmp_path(&self, suffix: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir.join(layout::TMP).join(format!("{}-{n}{suffix}", std::process::id()))
    }

    /// Path of the record of `key`.
    pub fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(layout::RECORDS).join(&key[..2]).join(format!("{key}.json"))
    }

    /// Path of the object with this content hash.
    pub fn object_path(&self, content_hash: &str) -> PathBuf {
        self.dir.join(layout::OBJECTS).join(&content_hash[..2]).join(format!("{content_hash}.parquet"))
    }

    /// Whether the object with this content hash exists with this size.
    pub fn object_intact(&self, content_hash: &str, bytes: u64) -> bool {
        fs::metadata(self.object_path(content_hash)).is_ok_and(|m| m.len() == bytes)
    }

    /// The record for `key`, if present and its object is intact (size matches).
    pub fn lookup(&self, key: &str) -> Option<Record> {
        let text = fs::read(self.record_path(key)).ok()?;
        let rec: Record = serde_json::from_slice(&text).ok()?;
        let meta = fs::metadata(self.object_path(&rec.content_hash)).ok()?;
        (meta.len() == rec.bytes && rec.key == key).then_some(rec)
    }

    /// Move a finished object file (written under [`Store::tmp_path`]) into
    /// place by its content hash and record it under `key`: object first,
    /// then the record, so a record never points at a partial object.
    pub fn put_file(
        &self,
        key: &str,
        tmp: &Path,
        from: Provenance,
        schema: Vec<ColumnInfo>,
        rows: u64,
        hashes: Option<ObjectHashes>,
    ) -> Result<Record> {
        let Provenance { rule, signature, elapsed_ms, parts, checks, footer } = from;
        // The writer's hashes, else one read of the file.
        let (content_hash, data_hash) = match hashes {
            Some(h) => (h.content, data_hash_of(&schema, &h.pages)),
            None => hash_parquet(tmp, &schema).map_err(|e| io("cannot hash", tmp, e))?,
        };
        let bytes = fs::metadata(tmp).map_err(|e| io("cannot stat", tmp, e))?.len();
        let obj = self.object_path(&content_hash);
        if fs::metadata(&obj).map(|m| m.len() == bytes).unwrap_or(false) {
            let _ = fs::remove_file(tmp);
        } else {
            let parent = obj.parent().unwrap();
            fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
            fs::rename(tmp, &obj).map_err(|e| io("cannot move into place", &obj, e))?;
        }
        let rec = Record {
            key: key.to_string(),
            content_hash,
            rule,
            signature,
            schema,
            rows,
            bytes,
            elapsed_ms,
            parts,
            data_hash,
            checks,
            footer,
        };
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
        self.write_atomic(&self.record_path(key), &bytes, true)?;
        Ok(rec)
    }

    /// Install an output fetched from elsewhere (the remote cache): its
    /// object, downloaded to `tmp` and verified by the caller against `rec`,
    /// moved into place, then its record. Same order as [`Store::put_file`],
    /// but nothing is synced here: the caller syncs the file system once
    /// after a batch (a lost download costs a download again).
    pub fn put_fetched(&self, rec: &Record, tmp: &Path) -> Result<()> {
        let obj = self.object_path(&rec.content_hash);
        if self.object_intact(&rec.content_hash, rec.bytes) {
            let _ = fs::remove_file(tmp);
        } else {
            let parent = obj.parent().unwrap();
            fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
            fs::rename(tmp, &obj).map_err(|e| io("cannot move into place", &obj, e))?;
        }
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
        self.write_atomic(&self.record_path(&rec.key), &bytes, false)
    }

    /// Remove everything the store keeps (see [`layout`]) but the lock; the
    /// caller holds the lock.
    pub fn clean(&self) -> Result<()> {
        for name in layout::ALL.iter().chain(layout::LEGACY) {
            let path = self.dir.join(name);
            let res = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            match res {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("cannot remove", &path, e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Atomically write a side-cache JSON document at `path` (compact, not
    /// fsynced: losing it to a power cut only costs re-work). Skips the write
    /// when the file already holds exactly these bytes.
    pub fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
        if fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        self.write_atomic(path, &bytes, false)
    }

    /// Save an append-only JSON-lines memo holding `lines` lines: append the
    /// `added` entries, or, once the file would hold more than twice the `live`
    /// entries (+64) or when it holds `foreign` lines (written by other code,
    /// never read again), rewrite it with `all()` only. Returns the new line count.
    pub fn save_jsonl<T: Serialize>(
        &self,
        path: &Path,
        lines: usize,
        foreign: bool,
        live: usize,
        added: &[T],
        all: impl FnOnce() -> Vec<T>,
    ) -> Result<usize> {
        let text =
            |v: &[T]| -> String { v.iter().map(|e| serde_json::to_string(e).unwrap_or_default() + "\n").collect() };
        if foreign || lines + added.len() > 2 * live + 64 {
            let all = all();
            self.write_atomic(path, text(&all).as_bytes(), false)?;
            Ok(all.len())
        } else {
            let mut f =
                fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io("cannot open", path, e))?;
            f.write_all(text(added).as_bytes()).map_err(|e| io("cannot write", path, e))?;
            Ok(lines + added.len())
        }
    }

    /// Append `added` entries to a JSON-lines memo (see [`Store::save_jsonl`]).
    pub fn append_jsonl<T: Serialize>(&self, path: &Path, added: &[T]) -> Result<()> {
        let text: String = added.iter().map(|e| serde_json::to_string(e).unwrap_or_default() + "\n").collect();
        let mut f =
            fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io("cannot open", path, e))?;
        f.write_all(text.as_bytes()).map_err(|e| io("cannot write", path, e))
    }

    /// Atomically write bytes at `path`: a temp file in the store, then rename
    /// (fsynced first when `durable`).
    pub fn write_atomic(&self, path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
        let tmp = self.tmp_path(".tmp");
        {
            let mut f = File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
            f.write_all(bytes).map_err(|e| io("cannot write", &tmp, e))?;
            if durable {
                f.sync_all().map_err(|e| io("cannot sync", &tmp, e))?;
            }
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        }
        fs::rename(&tmp, path).map_err(|e| io("cannot move into place", path, e))
    }

    /// Publish outputs: each `(record, dest, path in the ledger)` has its
    /// object copied to a sibling temp file of `dest` and synced, and its
    /// sidecar staged (the slow part, on up to 16 threads at once: the file
    /// system commits concurrent syncs together); then each is renamed into
    /// place and entered in `published`, in order. One result per item.
    /// Callers skip outputs whose ledger entry has the same content hash and
    /// [`Store::published_file_matches`].
    pub fn publish_many(&self, items: &[(&Record, PathBuf, String)], published: &mut Published) -> Vec<Result<()>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let next = AtomicUsize::new(0);
        let batch = items.len() >= SYNC_FS_BATCH;
        type Staged = std::sync::Mutex<Option<Result<(PathBuf, PathBuf)>>>;
        let staged: Vec<Staged> = items.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..items.len().clamp(1, 16) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((rec, dest, _)) = items.get(i) else { return };
                        *staged[i].lock().unwrap() = Some(self.stage_publish(rec, dest, !batch));
                    }
                });
            }
        });
        // A batch is made durable at once: one `syncfs` of each destination's
        // file system instead of a sync per file (each of which commits the
        // file system's journal), before anything is renamed into place.
        if batch {
            let dirs: std::collections::BTreeSet<&Path> =
                items.iter().filter_map(|(_, dest, _)| dest.parent()).collect();
            for dir in dirs {
                if let Err(e) = sync_file_system(dir) {
                    return items.iter().map(|_| Err(io("cannot sync", dir, e.kind().into()))).collect();
                }
            }
        }
        items
            .iter()
            .zip(staged)
            .map(|((rec, dest, rel), st)| {
                let (tmp, stage) = st
                    .into_inner()
                    .unwrap()
                    .unwrap_or_else(|| Err(Diag::new(ErrorKind::Internal("an output was not staged".into()))))?;
                self.finish_publish(rec, dest, rel, &tmp, &stage, published)
            })
            .collect()
    }

    /// Copy `rec`'s object next to `dest` (and sync it when `sync`), and stage its sidecar.
    fn stage_publish(&self, rec: &Record, dest: &Path, sync: bool) -> Result<(PathBuf, PathBuf)> {
        let parent = dest.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        let tmp =
            parent.join(format!(".{}.relspec-tmp-{}", dest.file_name().unwrap().to_string_lossy(), std::process::id()));
        fs::copy(self.object_path(&rec.content_hash), &tmp).map_err(|e| io("cannot copy to", &tmp, e))?;
        if sync {
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io("cannot sync", &tmp, e))?;
        }
        // The sidecar, staged next to it too (the output dir may be on another
        // file system than the cache).
        let sidecar = sidecar_path(dest);
        let text = serde_json::to_vec_pretty(&rec.sidecar()).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
        let stage = parent.join(format!(
            ".{}.relspec-tmp-{}",
            sidecar.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        fs::write(&stage, text).map_err(|e| io("cannot write", &stage, e))?;
        Ok((tmp, stage))
    }

    /// Rename a staged output and its sidecar into place and enter it in the ledger.
    fn finish_publish(
        &self,
        rec: &Record,
        dest: &Path,
        rel: &str,
        tmp: &Path,
        stage: &Path,
        published: &mut Published,
    ) -> Result<()> {
        fs::rename(tmp, dest).map_err(|e| io("cannot publish", dest, e))?;
        let sidecar = sidecar_path(dest);
        fs::rename(stage, &sidecar).map_err(|e| io("cannot publish", &sidecar, e))?;
        let meta = fs::metadata(dest).map_err(|e| io("cannot stat", dest, e))?;
        published.entries.insert(
            rel.to_string(),
            PublishedEntry { content_hash: rec.content_hash.clone(), bytes: meta.len(), mtime_ns: mtime_ns(&meta) },
        );
        Ok(())
    }

    /// Whether the file at `dest` still has the size and mtime the ledger entry recorded.
    pub fn published_file_matches(&self, prev: &PublishedEntry, dest: &Path) -> bool {
        fs::metadata(dest).is_ok_and(|meta| prev.bytes == meta.len() && prev.mtime_ns == mtime_ns(&meta))
    }

    /// Load the record of what is published (the whole file, then its log).
    pub fn load_published(&self) -> Published {
        let mut p: Published = fs::read(self.dir.join(layout::PUBLISHED))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for (k, v) in self.read_log(layout::PUBLISHED_LOG) {
            match v {
                Some(v) => p.entries.insert(k, v),
                None => p.entries.remove(&k),
            };
        }
        p
    }

    /// Save the record of what is published, whole (and drop its log).
    pub fn save_published(&self, p: &Published) -> Result<()> {
        self.write_json(&self.dir.join(layout::PUBLISHED), p)?;
        self.clear_log(layout::PUBLISHED_LOG)
    }

    /// The changes of a JSON map's log `name` (see [`Store::append_log`]), in
    /// order: key, and its new value (`None`: removed). Lines that do not
    /// parse (a torn last line) are skipped.
    pub fn read_log<V: serde::de::DeserializeOwned + Send>(&self, name: &str) -> Vec<(String, Option<V>)> {
        let (lines, _) = load_jsonl::<LogLine<V>>(&self.dir.join(name));
        lines.into_iter().map(|l| (l.k, l.v)).collect()
    }

    /// Append changes to a JSON map's log `name`: a build that changed a
    /// few entries of a large map (`last-built.json`, `published.json`)
    /// appends them instead of rewriting it; loading applies them in order.
    pub fn append_log<V: Serialize>(&self, name: &str, changes: &[(String, Option<V>)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let text: String = changes
            .iter()
            .map(|(k, v)| serde_json::to_string(&LogLine { k: k.clone(), v: v.as_ref() }).unwrap_or_default() + "\n")
            .collect();
        let path = self.dir.join(name);
        let mut f =
            fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io("cannot open", &path, e))?;
        f.write_all(text.as_bytes()).map_err(|e| io("cannot write", &path, e))
    }

    /// Drop the log `name` (its map was just written whole).
    pub fn clear_log(&self, name: &str) -> Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("cannot remove", &self.dir.join(name), e)),
            _ => Ok(()),
        }
    }

    /// Every record in the store.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(self.dir.join(layout::RECORDS)).into_iter().flatten() {
            if e.file_type().is_file()
                && let Some(r) = fs::read(e.path()).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            {
                out.push(r);
            }
        }
        out
    }

    /// Remove records whose key is not in `live` and objects no live record uses.
    /// Returns (records removed, objects removed, bytes freed).
    pub fn gc(&self, live: &std::collections::HashSet<String>) -> Result<(usize, usize, u64)> {
        let mut keep_objects = std::collections::HashSet::new();
        let mut records_removed = 0;
        for r in self.records() {
            if live.contains(&r.key) {
                keep_objects.insert(r.content_hash.clone());
            } else {
                let _ = fs::remove_file(self.record_path(&r.key));
                records_removed += 1;
            }
        }
        let (mut objects_removed, mut freed) = (0, 0);
        for e in walkdir::WalkDir::new(self.dir.join(layout::OBJECTS)).into_iter().flatten() {
            if !e.file_type().is_file() {
                continue;
            }
            let stem = e.path().file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            if !keep_objects.contains(&stem) {
                freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(e.path());
                objects_removed += 1;
            }
        }
        // Artifacts (plans, lineage, Substrait) of outputs that are gone.
        for e in fs::read_dir(self.dir.join(layout::ARTIFACTS)).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let key = name.split('.').next().unwrap_or_default();
            if !live.contains(key) {
                freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(e.path());
            }
        }
        let tmp = self.dir.join(layout::TMP);
        for e in fs::read_dir(&tmp).map_err(|e| io("cannot list", &tmp, e))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        Ok((records_removed, objects_removed, freed))
    }
}

/// What relspec last published under the output dir (to skip re-copying).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Published {
    /// Path relative to the workspace root -> entry.
    pub entries: BTreeMap<String, PublishedEntry>,
}

/// One line of a map's log: a key and its new value (`null`: removed).
#[derive(Serialize, Deserialize)]
struct LogLine<V> {
    k: String,
    v: Option<V>,
}

/// One published file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEntry {
    /// Content hash of the object published.
    pub content_hash: String,
    /// Its size.
    pub bytes: u64,
    /// Its mtime after publishing (local only; never part of a key).
    pub mtime_ns: u128,
}

/// blake3 of a file's bytes (memory-mapped and multi-threaded for large files).
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let len = fs::metadata(path)?.len();
    let mut h = blake3::Hasher::new();
    if len > 1 << 20 {
        h.update_mmap_rayon(path)?;
    } else {
        h.update(&fs::read(path)?);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Where the sidecar of a published file goes: `<file>.json`.
pub fn sidecar_path(published: &Path) -> PathBuf {
    let mut name = published.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    published.with_file_name(name)
}

/// An object's hashes as its writer computed them: `content` (blake3 of
/// every byte) and `pages` (blake3 of the bytes before the footer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHashes {
    /// Hex blake3 of the whole file.
    pub content: String,
    /// Hex blake3 of the bytes before the footer.
    pub pages: String,
}

/// The data hash of an object with `schema` whose bytes before the footer
/// hash to `pages` (see [`hash_parquet`]).
pub fn data_hash_of(schema: &[ColumnInfo], pages: &str) -> String {
    let mut k = relspec_spec::key::KeyHasher::new("relspec/data/v1");
    k.u64("columns", schema.len() as u64);
    for c in schema {
        k.field("name", &c.name).field("type", &c.data_type).bool("nullable", c.nullable);
    }
    k.field("pages", pages).finish()
}

/// The two hashes of a Parquet object, from one read of it: `content` (blake3
/// of every byte: the object's address) and `data` (its column schema and
/// every byte before the footer, i.e. pages and indexes but not the footer's
/// key-value metadata). Two files with the same rows and schema written by
/// the same writer have the same data hash whatever provenance their footers
/// carry.
pub fn hash_parquet(path: &Path, schema: &[ColumnInfo]) -> std::io::Result<(String, String)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a Parquet file");
    if len < 12 {
        return Err(bad());
    }
    let mut tail = [0u8; 8];
    f.seek(SeekFrom::End(-8))?;
    f.read_exact(&mut tail)?;
    if &tail[4..] != b"PAR1" {
        return Err(bad());
    }
    // One pass, holding back exactly the footer and its length.
    let footer = u32::from_le_bytes(tail[..4].try_into().unwrap()) as u64;
    len.checked_sub(8 + footer).ok_or_else(bad)?;
    f.seek(SeekFrom::Start(0))?;
    let mut h = ObjectHasher::new(8 + footer as usize);
    let mut buf = vec![0u8; (len as usize).min(4 << 20)];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let hashes = h.finish().ok_or_else(bad)?;
    Ok((hashes.content, data_hash_of(schema, &hashes.pages)))
}

/// The two hashes of a Parquet object fed to it in order (by its writer as
/// it writes, or by [`hash_parquet`] as it reads): every byte is hashed as it
/// comes except the last `held_back`, kept until the end, where the footer's
/// length (the file's last 8 bytes) says where the pages end.
#[derive(Debug, Clone)]
pub struct ObjectHasher {
    hasher: blake3::Hasher,
    tail: Vec<u8>,
    held_back: usize,
}

impl ObjectHasher {
    /// A hasher that holds back `held_back` bytes (at least the footer and
    /// its 8-byte trailer, for [`ObjectHasher::finish`] to succeed).
    pub fn new(held_back: usize) -> ObjectHasher {
        ObjectHasher { hasher: blake3::Hasher::new(), tail: Vec::new(), held_back }
    }

    /// Feed the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * self.held_back.max(1 << 20) {
            let cut = self.tail.len() - self.held_back;
            self.hasher.update_rayon(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    /// The content hash and the pages' hash, or `None` when the bytes do
    /// not end in a Parquet trailer or the footer is longer than what was
    /// held back.
    pub fn finish(mut self) -> Option<ObjectHashes> {
        let n = self.tail.len();
        let trailer = self.tail.get(n.checked_sub(8)?..)?;
        if &trailer[4..] != b"PAR1" {
            return None;
        }
        let footer = u32::from_le_bytes(trailer[..4].try_into().ok()?) as usize;
        let data_end = n.checked_sub(8 + footer)?;
        self.hasher.update_rayon(&self.tail[..data_end]);
        let pages = self.hasher.clone().finalize().to_hex().to_string();
        self.hasher.update_rayon(&self.tail[data_end..]);
        Some(ObjectHashes { content: self.hasher.finalize().to_hex().to_string(), pages })
    }
}

/// Modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &fs::Metadata) -> u128 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The wall clock in nanoseconds since the epoch.
pub fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// One stat-cache entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct StatEntry {
    size: u64,
    mtime_ns: u128,
    /// Inode change time: a rewrite that restores size and mtime still moves it.
    #[serde(default)]
    ctime_ns: u128,
    ino: u64,
    hash: String,
    hashed_at_ns: u128,
}

/// Input file hashes keyed by (path, size, mtime, ctime, inode), so a no-op build
/// hashes nothing. Paths are relative to the workspace root.
///
/// Racily clean rule (as git's index): an entry is trusted only if the file's
/// mtime is older than the moment it was hashed by more than the mtime
/// granularity we assume (1 s); otherwise the file may have changed within the
/// same timestamp, and it is hashed again. The inode change time (ctime) is
/// compared too, as git's index does: a file rewritten in place with the same
/// size and its mtime restored (`touch -d`, `cp -p`, some sync tools) has a new
/// ctime, which no user-space call can set back.
///
/// Saved as a map and a log of the entries changed since (an edit in a large
/// tree appends a line instead of rewriting every entry); the map is
/// rewritten once the log holds a quarter as many lines.
#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<String, StatEntry>,
    /// Paths whose entries changed since the last save.
    changed: std::collections::HashSet<String>,
    /// Lines in the log on disk.
    logged: usize,
    /// Files hashed (not served from the cache) since load.
    pub hashed: usize,
}

/// The file timestamp granularity assumed (1 s): a file whose mtime or ctime
/// is this close to when it was read may change again without moving them.
pub const RACY_WINDOW_NS: u128 = 1_000_000_000;

/// The racy window in effect: [`RACY_WINDOW_NS`], or `RELSPEC_RACY_WINDOW_MS`
/// (a file system with coarser timestamps needs more; tests use less).
pub fn racy_window_ns() -> u128 {
    static W: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    *W.get_or_init(|| {
        std::env::var("RELSPEC_RACY_WINDOW_MS")
            .ok()
            .and_then(|v| v.parse::<u128>().ok())
            .map(|ms| ms * 1_000_000)
            .unwrap_or(RACY_WINDOW_NS)
    })
}

impl StatCache {
    /// Load from the store (empty if missing or unreadable).
    pub fn load(store: &Store) -> StatCache {
        let mut entries: HashMap<String, StatEntry> = fs::read(store.dir.join(layout::STAT_CACHE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let log = store.read_log::<StatEntry>(layout::STAT_CACHE_LOG);
        let logged = log.len();
        for (path, entry) in log {
            match entry {
                Some(e) => entries.insert(path, e),
                None => entries.remove(&path),
            };
        }
        StatCache { entries, changed: Default::default(), logged, hashed: 0 }
    }

    /// Save what changed: appended to the log, or the whole map (and the
    /// log dropped) once the log would hold a quarter of the entries.
    pub fn save(&mut self, store: &Store) -> Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let changed = std::mem::take(&mut self.changed);
        if self.logged + changed.len() <= self.entries.len() / 4 {
            let mut lines: Vec<(String, Option<&StatEntry>)> =
                changed.into_iter().map(|p| (p.clone(), self.entries.get(&p))).collect();
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            self.logged += lines.len();
            return store.append_log(layout::STAT_CACHE_LOG, &lines);
        }
        store.write_json(&store.dir.join(layout::STAT_CACHE), &self.entries)?;
        self.logged = 0;
        store.clear_log(layout::STAT_CACHE_LOG)
    }

    /// Content hash of `abs` (keyed by `rel`), from the cache when the stat matches.
    pub fn hash(&mut self, rel: &str, abs: &Path) -> std::io::Result<String> {
        let meta = fs::metadata(abs)?;
        let (size, mtime, ctime, ino) = (meta.len(), mtime_ns(&meta), ctime_ns(&meta), inode(&meta));
        if let Some(e) = self.entries.get(rel)
            && e.size == size
            && e.mtime_ns == mtime
            && e.ctime_ns == ctime
            && e.ino == ino
            && mtime.max(ctime) + racy_window_ns() < e.hashed_at_ns
        {
            return Ok(e.hash.clone());
        }
        let hashed_at_ns = now_ns();
        let hash = hash_file(abs)?;
        self.hashed += 1;
        let entry = StatEntry { size, mtime_ns: mtime, ctime_ns: ctime, ino, hash: hash.clone(), hashed_at_ns };
        if self.entries.get(rel) != Some(&entry) {
            self.entries.insert(rel.to_string(), entry);
            self.changed.insert(rel.to_string());
        }
        Ok(hash)
    }
}

/// Inode change time in nanoseconds since the epoch (0 where the platform has none).
#[cfg(unix)]
fn ctime_ns(meta: &fs::Metadata) -> u128 {
    use std::os::unix::fs::MetadataExt;
    (meta.ctime().max(0) as u128) * 1_000_000_000 + meta.ctime_nsec().max(0) as u128
}
#[cfg(not(unix))]
fn ctime_ns(_meta: &fs::Metadata) -> u128 {
    0
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}
#[cfg(not(unix))]
fn inode(_meta: &fs::Metadata) -> u64 {
    0
}

/// Load an append-only JSON-lines memo (see [`Store::save_jsonl`]), parsed on
/// every core: the entries that parse, in file order (so later lines win when
/// inserted in turn), and the file's line count. Absent file: nothing.
pub fn load_jsonl<T: serde::de::DeserializeOwned + Send>(path: &Path) -> (Vec<T>, usize) {
    use rayon::prelude::*;
    let Ok(text) = fs::read_to_string(path) else { return (Vec::new(), 0) };
    let parsed: Vec<Option<T>> = text.par_lines().map(|l| serde_json::from_str(l).ok()).collect();
    let lines = parsed.len();
    (parsed.into_iter().flatten().collect(), lines)
}

#[cfg(test)]
mod tests {

    /// A file shaped like Parquet: magic, data, a footer of `footer` bytes, its length, magic.
    fn parquet_like(dir: &Path, name: &str, data: &[u8], footer: &[u8]) -> PathBuf {
        let mut b = b"PAR1".to_vec();
        b.extend_from_slice(data);
        b.extend_from_slice(footer);
        b.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        b.extend_from_slice(b"PAR1");
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    }

    #[test]
    fn one_pass_hashes_split_at_the_footer() {
        let dir = tempfile::tempdir().unwrap();
        let cols = vec![ColumnInfo { name: "a".into(), data_type: "Int64".into(), nullable: true }];
        // Larger than one read buffer, with the footer straddling a buffer boundary.
        let data: Vec<u8> = (0..(4u32 << 20) + 100).map(|i| (i * 31 % 251) as u8).collect();
        for (d, footer_a, footer_b) in [(&data[..], &b"key=1"[..], &b"key=22"[..]), (&data[..10], b"x", b"yy")] {
            let a = parquet_like(dir.path(), "a", d, footer_a);
            let b = parquet_like(dir.path(), "b", d, footer_b);
            let (ca, da) = hash_parquet(&a, &cols).unwrap();
            let (cb, db) = hash_parquet(&b, &cols).unwrap();
            assert_eq!(ca, hash_file(&a).unwrap(), "content hash is the file's blake3");
            assert_eq!(cb, hash_file(&b).unwrap());
            assert_ne!(ca, cb);
            assert_eq!(da, db, "the footer does not enter the data hash");
            let other = parquet_like(dir.path(), "c", &d[1..], footer_a);
            assert_ne!(hash_parquet(&other, &cols).unwrap().1, da, "the data does");
            let renamed = vec![ColumnInfo { name: "b".into(), ..cols[0].clone() }];
            assert_ne!(hash_parquet(&a, &renamed).unwrap().1, da, "and the schema does");
        }
        std::fs::write(dir.path().join("bad"), b"not parquet at all").unwrap();
        assert!(hash_parquet(&dir.path().join("bad"), &cols).is_err());
    }

    use super::*;
    use std::time::Duration;

    /// A file rewritten in place with the same size and its mtime restored
    /// keeps size, mtime and inode; only its ctime moves. The stat cache must
    /// hash it again (git's index compares ctime for this reason).
    #[test]
    fn same_size_rewrite_with_restored_mtime_is_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        fs::write(&path, "id\n1\n").unwrap();
        // An old mtime, so the entry is past the racily-clean window and trusted.
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        // Past the racily-clean window of the file's inode change time too.
        std::thread::sleep(Duration::from_millis(1100));
        let before = fs::metadata(&path).unwrap();
        let mut cache = StatCache::default();
        let first = cache.hash("data.csv", &path).unwrap();
        assert_eq!(cache.hash("data.csv", &path).unwrap(), first);
        assert_eq!(cache.hashed, 1, "an unchanged file is served from the cache");

        // ctime has a granularity of the clock tick; make sure it can move.
        std::thread::sleep(Duration::from_millis(20));
        let f = fs::File::options().write(true).truncate(false).open(&path).unwrap();
        (&f).write_all(b"id\n2\n").unwrap();
        f.set_modified(old).unwrap();
        drop(f);
        let after = fs::metadata(&path).unwrap();
        assert_eq!(
            (after.len(), mtime_ns(&after), inode(&after)),
            (before.len(), mtime_ns(&before), inode(&before)),
            "the rewrite keeps size, mtime and inode"
        );
        let second = cache.hash("data.csv", &path).unwrap();
        assert_ne!(second, first, "the rewrite must be seen");
        assert_eq!(second, hash_file(&path).unwrap());
    }

    #[test]
    fn the_stat_cache_appends_changed_entries_and_rewrites_the_map_when_the_log_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let files: Vec<PathBuf> = (0..12)
            .map(|i| {
                let p = dir.path().join(format!("f{i}.txt"));
                std::fs::write(&p, format!("v0 {i}")).unwrap();
                p
            })
            .collect();
        let mut cache = StatCache::load(&store);
        for (i, p) in files.iter().enumerate() {
            cache.hash(&format!("f{i}.txt"), p).unwrap();
        }
        cache.save(&store).unwrap();
        let log = store.dir().join(layout::STAT_CACHE_LOG);
        assert!(store.dir().join(layout::STAT_CACHE).is_file() && !log.exists(), "the first save writes the map");
        // One file changes: one line in the log, the map untouched.
        let map_before = std::fs::read(store.dir().join(layout::STAT_CACHE)).unwrap();
        std::fs::write(&files[3], "v1 changed").unwrap();
        let mut cache = StatCache::load(&store);
        let h = cache.hash("f3.txt", &files[3]).unwrap();
        cache.save(&store).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
        assert_eq!(std::fs::read(store.dir().join(layout::STAT_CACHE)).unwrap(), map_before);
        // Loading applies the log: the changed entry, the others as they were.
        let loaded = StatCache::load(&store);
        assert_eq!(loaded.entries["f3.txt"].hash, h);
        assert_eq!(loaded.entries.len(), 12);
        assert_eq!(loaded.entries["f0.txt"].hash, hash_file(&files[0]).unwrap());
        // Past a quarter of the entries (3 of 12), the map is written whole.
        let mut cache = loaded;
        for i in [4, 5, 6] {
            std::fs::write(&files[i], format!("v2 {i}")).unwrap();
            cache.hash(&format!("f{i}.txt"), &files[i]).unwrap();
        }
        cache.save(&store).unwrap();
        assert!(!log.exists(), "the log is dropped once the map is rewritten");
        let reloaded = StatCache::load(&store);
        assert_eq!(reloaded.entries, cache.entries);
    }
}
