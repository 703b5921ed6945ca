//! The shared remote cache (`[cache.remote]`): outputs on object storage that
//! every machine reads and trusted machines (CI) write.
//!
//! Remote layout under the URL's prefix: `entries/<k[..2]>/<k>`, one per
//! output key (the record, the artifact and, for objects up to 1 MiB, the
//! object itself: one request per hit), and `objects/<h[..2]>/<h>.parquet`
//! for larger objects, by content hash.
//!
//! Architecture invariants:
//! - Consulted only after a local miss, so a build the local cache answers
//!   (a no-op) makes no request; the client is opened on the first miss.
//! - A fetched object is verified (size, content hash, data hash) against
//!   its record before it enters the local store; a mismatch is a warning
//!   and a local rebuild, never a publish of the bad bytes.
//! - Uploads put a large object first, then the entry, each create-only: an
//!   entry is visible only with its object, two writers never overwrite each
//!   other's entry (the loser's identical entry is dropped), and a put is
//!   atomic on every backend (a half-written upload is never visible). Only
//!   a writer that found an entry corrupt overwrites it.
//! - Any transport failure (server down, timeout, refused credentials) marks
//!   the remote unavailable for the rest of the build with one warning: the
//!   build goes on locally, it never fails because of the remote.

use crate::store::{Record, Store, hash_parquet};
use crate::workspace::RemoteCacheSpec;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use relspec_exec::object_stores::{self, OpenedStore, Patience};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Downloads in flight at once.
const FETCHES: usize = 32;
/// Uploads in flight at once.
const UPLOADS: usize = 8;
/// Objects up to this size are stored inside their entry (override:
/// `RELSPEC_REMOTE_INLINE_MAX`, bytes).
const INLINE_MAX: u64 = 1 << 20;
/// Objects at least this large are uploaded in parts.
const MULTIPART_BYTES: u64 = 64 << 20;

/// What one build did with the remote cache (in `build --json` and the run bundle).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteReport {
    /// The remote's URL.
    pub url: String,
    /// Whether this machine writes to it.
    pub write: bool,
    /// Outputs found there (and downloaded, verified, stored locally).
    pub hits: usize,
    /// Outputs looked up and not found.
    pub misses: usize,
    /// Outputs found there that failed verification (rebuilt locally).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rejected: usize,
    /// Outputs uploaded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uploaded: usize,
    /// Outputs installed from the build's pack (one request for all of them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub packed: usize,
    /// Whether this build uploaded the pack of its outputs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pack_uploaded: bool,
    /// Bytes downloaded.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub downloaded_bytes: u64,
    /// Warnings (the remote unavailable, a corrupt entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The answer of one remote lookup.
#[derive(Debug)]
pub enum Fetched {
    /// Found, verified and installed in the local store.
    Hit(Box<Record>),
    /// Not there (or the remote is unavailable): build locally.
    Miss,
    /// There but wrong (reason): build locally, and a writer repairs it.
    Rejected(String),
}

/// An open remote cache for one build.
pub struct Remote {
    url: String,
    at: OpenedStore,
    read: bool,
    write: bool,
    runtime: tokio::runtime::Runtime,
    /// Objects up to this size travel inside their entry (one request per hit).
    inline_max: u64,
    /// Held while a download is installed in the local store.
    install: Arc<Mutex<()>>,
    down: AtomicBool,
    /// Set when the remote refused an upload.
    no_writes: AtomicBool,
    fetch_slots: Arc<tokio::sync::Semaphore>,
    upload_slots: Arc<tokio::sync::Semaphore>,
    hits: AtomicUsize,
    misses: AtomicUsize,
    rejected: AtomicUsize,
    uploaded: AtomicUsize,
    /// Outputs installed from a pack.
    packed: AtomicUsize,
    /// Whether this build uploaded a pack.
    pack_uploaded: AtomicBool,
    /// Whether the pack fetched was corrupt (a writer replaces it).
    pack_bad: AtomicBool,
    downloaded: std::sync::atomic::AtomicU64,
    warnings: Mutex<Vec<String>>,
    uploads: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).field("read", &self.read).field("write", &self.write).finish()
    }
}

/// Whether the environment turns the remote off (`RELSPEC_REMOTE=0`) and
/// whether it overrides writing (`RELSPEC_REMOTE_WRITE=1|0`).
fn env_flag(name: &str) -> Option<bool> {
    match std::env::var(name).ok()?.trim() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl Remote {
    /// Open the configured remote for a build, or `None` when there is none,
    /// the environment turns it off, or it neither reads nor writes. Makes no
    /// request. An unusable configuration (a URL the backend refuses) is a
    /// warning in the returned error and the build goes on locally.
    pub fn open(spec: &RemoteCacheSpec) -> Result<Option<Arc<Remote>>, String> {
        if env_flag("RELSPEC_REMOTE") == Some(false) {
            return Ok(None);
        }
        let write = env_flag("RELSPEC_REMOTE_WRITE").unwrap_or(spec.write);
        if !spec.read && !write {
            return Ok(None);
        }
        Self::open_with(spec, write).map(Some)
    }

    /// Open `spec`'s remote, writing or not as `write` says (no environment
    /// consulted). Makes no request.
    pub fn open_with(spec: &RemoteCacheSpec, write: bool) -> Result<Arc<Remote>, String> {
        let patience = Patience {
            timeout: Duration::from_millis(spec.timeout_ms),
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
            retries: 2,
        };
        let at = object_stores::open(&spec.url, patience)
            .map_err(|e| format!("remote cache unavailable ({e}); building locally"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("relspec-remote")
            .enable_all()
            .build()
            .map_err(|e| format!("remote cache unavailable (cannot start its runtime: {e}); building locally"))?;
        Ok(Arc::new(Remote {
            url: spec.url.clone(),
            at,
            read: spec.read,
            write,
            runtime,
            inline_max: std::env::var("RELSPEC_REMOTE_INLINE_MAX")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(INLINE_MAX),
            install: Arc::new(Mutex::new(())),
            down: AtomicBool::new(false),
            no_writes: AtomicBool::new(false),
            fetch_slots: Arc::new(tokio::sync::Semaphore::new(FETCHES)),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(UPLOADS)),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
            uploaded: AtomicUsize::new(0),
            packed: AtomicUsize::new(0),
            pack_uploaded: AtomicBool::new(false),
            pack_bad: AtomicBool::new(false),
            downloaded: Default::default(),
            warnings: Mutex::new(vec![]),
            uploads: Mutex::new(vec![]),
        }))
    }

    /// Whether lookups go to the remote.
    pub fn reads(&self) -> bool {
        self.read && !self.down.load(Ordering::Relaxed)
    }

    /// Whether built outputs are uploaded.
    pub fn writes(&self) -> bool {
        self.write
    }

    /// The runtime its requests run on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// Run a future to completion on the remote's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn warn(&self, msg: String) {
        tracing::debug!("{msg}");
        self.warnings.lock().unwrap().push(msg);
    }

    /// A transport failure: the remote is unavailable for the rest of the build.
    fn went_down(&self, e: &object_store::Error) {
        if !self.down.swap(true, Ordering::Relaxed) {
            self.warn(format!("remote cache {} unavailable ({}); building locally", self.url, short(e)));
        }
    }

    /// An upload failed: refused credentials stop uploads (lookups go on),
    /// anything else is a transport failure.
    fn upload_failed(&self, e: &object_store::Error) {
        match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                if !self.no_writes.swap(true, Ordering::Relaxed) {
                    self.warn(format!("remote cache {} refuses uploads ({}); not uploading", self.url, short(e)));
                }
            }
            _ => self.went_down(e),
        }
    }

    /// Look `key` up in the remote: download its object and artifact, verify
    /// the object against the record, install both in `store`.
    pub async fn fetch(self: Arc<Self>, store: Store, rule: String, key: String) -> Fetched {
        if !self.reads() {
            return Fetched::Miss;
        }
        let _slot = self.fetch_slots.clone().acquire_owned().await;
        match self.fetch_inner(&store, &key).await {
            Ok(Some(rec)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Fetched::Hit(Box::new(rec))
            }
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Fetched::Miss
            }
            Err(FetchError::Down(e)) => {
                self.went_down(&e);
                Fetched::Miss
            }
            Err(FetchError::Bad(why)) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "remote cache entry of rule `{rule}` (key {}) rejected: {why}; rebuilding locally",
                    short_key(&key)
                );
                self.warn(msg.clone());
                Fetched::Rejected(msg)
            }
        }
    }

    async fn fetch_inner(&self, store: &Store, key: &str) -> Result<Option<Record>, FetchError> {
        if self.down.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let bytes = match self.at.store.get(&self.at.path(&entry_rel(key))).await {
            Ok(r) => r.bytes().await.map_err(FetchError::Down)?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(FetchError::Down(e)),
        };
        let (head, inline) = Head::decode(&bytes).map_err(FetchError::Bad)?;
        let rec = head.record;
        if rec.key != key {
            return Err(FetchError::Bad(format!("its record names key {}", rec.key)));
        }
        if rec.content_hash.len() < 2 {
            return Err(FetchError::Bad("its record names no object".into()));
        }
        // The object: in the entry, or streamed from `objects/` to a staging file.
        // A large object is streamed from `objects/` to a staging file; an
        // inline one is written there by the installer below.
        let tmp = store.tmp_path(".parquet");
        let streamed = match inline {
            Some(_) => 0,
            None => match self.stream_object(&rec.content_hash, &tmp).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            },
        };
        self.downloaded.fetch_add(bytes.len() as u64 + streamed, Ordering::Relaxed);
        let object = inline.map(|o| bytes.len() - o.len()..bytes.len());
        let (store2, tmp2, rec2, artifact, lock) =
            (store.clone(), tmp.clone(), rec.clone(), head.artifact, self.install.clone());
        let installed = tokio::task::spawn_blocking(move || -> Result<(), String> {
            // One install at a time: concurrent creates and renames in the
            // cache's few directories contend on their locks in the kernel
            // (measured: most of a 1,000-hit build's time, as system time).
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            install(&store2, &tmp2, object.map(|r| &bytes[r]), &rec2, artifact)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match installed {
            Ok(()) => Ok(Some(rec)),
            Err(why) => {
                let _ = std::fs::remove_file(&tmp);
                Err(FetchError::Bad(why))
            }
        }
    }

    /// Stream the object `hash` from `objects/` into `tmp`: its size.
    async fn stream_object(&self, hash: &str, tmp: &std::path::Path) -> Result<u64, FetchError> {
        let res = match self.at.store.get(&self.at.path(&object_rel(hash))).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(FetchError::Bad("its object is missing".into())),
            Err(e) => return Err(FetchError::Down(e)),
        };
        let stage = |e: std::io::Error| FetchError::Bad(format!("cannot stage: {e}"));
        let mut file = std::fs::File::create(tmp).map_err(stage)?;
        let mut stream = res.into_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(FetchError::Down)?;
            n += chunk.len() as u64;
            file.write_all(&chunk).map_err(stage)?;
        }
        Ok(n)
    }

    /// Upload a built output in the background (object, artifact, record);
    /// `repair` overwrites an entry found corrupt. [`Remote::finish`] waits.
    pub fn upload(self: &Arc<Self>, store: Store, rec: Record, repair: bool) {
        self.in_background(move |me| async move {
            let _slot = me.upload_slots.clone().acquire_owned().await;
            match me.upload_inner(&store, &rec, repair).await {
                Ok(()) => {
                    me.uploaded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => me.upload_failed(&e),
            }
        });
    }

    /// Run an upload in the background on a writing remote, unless uploads
    /// stopped (the remote down or refusing writes); [`Remote::finish`] waits.
    fn in_background<F, Fut>(self: &Arc<Self>, work: F)
    where
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if !self.write {
            return;
        }
        let me = self.clone();
        let h = self.runtime.spawn(async move {
            if me.down.load(Ordering::Relaxed) || me.no_writes.load(Ordering::Relaxed) {
                return;
            }
            work(me).await
        });
        self.uploads.lock().unwrap().push(h);
    }

    async fn upload_inner(&self, store: &Store, rec: &Record, repair: bool) -> Result<(), object_store::Error> {
        let mode = if repair { PutMode::Overwrite } else { PutMode::Create };
        let object = store.object_path(&rec.content_hash);
        let (head, inline) = self.entry_of(store, rec)?;
        if inline.is_none() {
            let at = self.at.path(&object_rel(&rec.content_hash));
            if rec.bytes >= MULTIPART_BYTES {
                // Parts become visible only when the upload completes; the object
                // is content-addressed, so another writer's copy is the same bytes.
                if repair || !exists(&*self.at.store, &at).await? {
                    let mut w = object_store::WriteMultipart::new(self.at.store.put_multipart(&at).await?);
                    let mut f = std::fs::File::open(&object).map_err(|e| local(&object, e))?;
                    let mut buf = vec![0u8; 8 << 20];
                    loop {
                        let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| local(&object, e))?;
                        if n == 0 {
                            break;
                        }
                        w.write(&buf[..n]);
                    }
                    w.finish().await?;
                }
            } else {
                let bytes = std::fs::read(&object).map_err(|e| local(&object, e))?;
                put(&*self.at.store, &at, bytes, mode.clone()).await?;
            }
        }
        let entry = head.encode(inline.as_deref());
        put(&*self.at.store, &self.at.path(&entry_rel(&rec.key)), entry, mode).await
    }

    /// The entry of a stored output: its head and, up to the inline limit,
    /// its object's bytes.
    fn entry_of(&self, store: &Store, rec: &Record) -> Result<(Head, Option<Vec<u8>>), object_store::Error> {
        let object = store.object_path(&rec.content_hash);
        let artifact = std::fs::read(store.dir().join(crate::bundle::artifact_path(&rec.key)))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let head =
            Head { format: ENTRY_FORMAT.into(), record: rec.clone(), artifact, inline: rec.bytes <= self.inline_max };
        let inline = if head.inline { Some(std::fs::read(&object).map_err(|e| local(&object, e))?) } else { None };
        Ok((head, inline))
    }

    /// Fetch the pack `key` (one request) and install each of its entries
    /// the local store lacks, verified as a lookup's are: the output keys
    /// installed. A missing pack installs nothing; a bad entry is left out
    /// with one warning (its rule is then looked up on its own).
    pub fn fetch_pack(&self, store: &Store, key: &str) -> HashSet<String> {
        let mut installed = HashSet::new();
        if !self.reads() {
            return installed;
        }
        let t = Instant::now();
        let at = self.at.path(&pack_rel(key));
        let got = self.runtime.block_on(async {
            match self.at.store.get(&at).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let bytes = match got {
            Ok(Some(b)) => b,
            Ok(None) => return installed,
            Err(e) => {
                self.went_down(&e);
                return installed;
            }
        };
        self.downloaded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let entries = match split_pack(&bytes) {
            Ok(entries) => entries,
            Err(why) => {
                self.pack_bad.store(true, Ordering::Relaxed);
                self.warn(format!("remote cache pack {} rejected: {why}; looking rules up one by one", short_key(key)));
                return installed;
            }
        };
        let mut bad: Vec<String> = vec![];
        for entry in entries {
            let (head, inline) = match Head::decode(entry) {
                Ok((head, Some(inline))) => (head, inline),
                Ok((head, None)) => {
                    bad.push(format!("the entry of rule `{}` has no object", head.record.rule));
                    continue;
                }
                Err(why) => {
                    bad.push(why);
                    continue;
                }
            };
            let rec = head.record;
            if rec.content_hash.len() < 2 || rec.key.len() < 2 {
                bad.push(format!("the entry of rule `{}` names no object", rec.rule));
                continue;
            }
            if store.lookup(&rec.key).is_some() {
                continue;
            }
            let tmp = store.tmp_path(".parquet");
            match install(store, &tmp, Some(inline), &rec, head.artifact) {
                Ok(()) => {
                    installed.insert(rec.key);
                }
                Err(why) => {
                    let _ = std::fs::remove_file(&tmp);
                    bad.push(format!("rule `{}`: {why}", rec.rule));
                }
            }
        }
        if let Some(first) = bad.first() {
            self.pack_bad.store(true, Ordering::Relaxed);
            self.warn(format!(
                "{} entr{} of remote cache pack {} rejected (first: {first}); looking those rules up one by one",
                bad.len(),
                if bad.len() == 1 { "y" } else { "ies" },
                short_key(key)
            ));
        }
        self.packed.fetch_add(installed.len(), Ordering::Relaxed);
        tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, entries = installed.len(), "pack installed");
        installed
    }

    /// Upload the pack `key` of `records` in the background unless the
    /// remote has it ([`Remote::finish`] waits): each output's entry with
    /// its object inline, in the order given; outputs over the inline limit,
    /// and any past [`PACK_MAX`] bytes, are left to their own entries.
    pub fn upload_pack(self: &Arc<Self>, store: Store, key: String, records: Vec<Record>) {
        self.in_background(move |me| async move {
            match me.upload_pack_inner(&store, &key, &records).await {
                Ok(uploaded) => me.pack_uploaded.store(uploaded, Ordering::Relaxed),
                Err(e) => me.upload_failed(&e),
            }
        });
    }

    async fn upload_pack_inner(
        &self,
        store: &Store,
        key: &str,
        records: &[Record],
    ) -> Result<bool, object_store::Error> {
        let at = self.at.path(&pack_rel(key));
        // A pack this build found corrupt is replaced; any other is kept.
        let repair = self.pack_bad.load(Ordering::Relaxed);
        if !repair && exists(&*self.at.store, &at).await? {
            return Ok(false);
        }
        let mut pack = PACK_MAGIC.to_vec();
        for rec in records.iter().filter(|r| r.bytes <= self.inline_max) {
            // An output that cannot be read here is left to its own entry.
            let Ok((head, Some(object))) = self.entry_of(store, rec) else { continue };
            let entry = head.encode(Some(&object));
            if pack.len() + 8 + entry.len() > PACK_MAX {
                break;
            }
            pack.extend_from_slice(&(entry.len() as u64).to_le_bytes());
            pack.extend_from_slice(&entry);
        }
        if pack.len() == PACK_MAGIC.len() {
            return Ok(false);
        }
        let mode = if repair { PutMode::Overwrite } else { PutMode::Create };
        put(&*self.at.store, &at, pack, mode).await.map(|()| true)
    }

    /// Upload each of `records` whose entry the remote lacks (a `HEAD`
    /// each, up to 8 at once): how many were uploaded and already there.
    /// Stops at the first failure.
    fn push_records(&self, store: &Store, records: Vec<Record>) -> Result<(usize, usize), String> {
        self.runtime.block_on(async {
            let results = futures::stream::iter(records)
                .map(|rec| async move {
                    match exists(&*self.at.store, &self.at.path(&entry_rel(&rec.key))).await {
                        Ok(true) => Ok(false),
                        Ok(false) => self.upload_inner(store, &rec, false).await.map(|()| true),
                        Err(e) => Err(e),
                    }
                })
                .buffer_unordered(UPLOADS)
                .collect::<Vec<_>>()
                .await;
            let (mut uploaded, mut present) = (0, 0);
            for r in results {
                match r {
                    Ok(true) => uploaded += 1,
                    Ok(false) => present += 1,
                    Err(e) => return Err(format!("cannot upload to {}: {}", self.url, short(&e))),
                }
            }
            Ok((uploaded, present))
        })
    }

    /// Count `n` outputs reused from a pack as hits.
    pub fn add_hits(&self, n: usize) {
        self.hits.fetch_add(n, Ordering::Relaxed);
    }

    /// Wait for the uploads and say what the build did with the remote.
    pub fn finish(&self) -> RemoteReport {
        let uploads = std::mem::take(&mut *self.uploads.lock().unwrap());
        let t = Instant::now();
        self.runtime.block_on(async {
            for h in uploads {
                let _ = h.await;
            }
        });
        tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, "waited for uploads");
        RemoteReport {
            url: self.url.clone(),
            write: self.write,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            packed: self.packed.load(Ordering::Relaxed),
            pack_uploaded: self.pack_uploaded.load(Ordering::Relaxed),
            downloaded_bytes: self.downloaded.load(Ordering::Relaxed),
            warnings: self.warnings.lock().unwrap().clone(),
        }
    }
}

/// An error as one line of at most 300 characters (a server's XML body left out).
fn short(e: &object_store::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default().trim_end_matches(':').trim();
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

enum FetchError {
    /// The remote could not be reached or refused the request.
    Down(object_store::Error),
    /// The entry is there but wrong.
    Bad(String),
}

/// `packs/<k[..2]>/<k>`.
fn pack_rel(key: &str) -> String {
    format!("packs/{}/{key}", &key[..2.min(key.len())])
}

/// The first bytes of a pack: then, for each entry, its length (`u64`
/// little-endian) and the entry as `entries/` holds it, object inline.
const PACK_MAGIC: &[u8; 8] = b"RSPPACK1";
/// A pack holds at most this many bytes.
const PACK_MAX: usize = 256 << 20;

/// A pack's entries, or why it is not one.
fn split_pack(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut rest = bytes.strip_prefix(PACK_MAGIC.as_slice()).ok_or("it is not a relspec pack")?;
    let mut entries = vec![];
    while !rest.is_empty() {
        let len = rest.get(..8).ok_or("it is truncated")?;
        let len = usize::try_from(u64::from_le_bytes(len.try_into().unwrap())).map_err(|_| "it is corrupt")?;
        let entry = rest.get(8..8usize.saturating_add(len)).ok_or("it is truncated")?;
        entries.push(entry);
        rest = &rest[8 + len..];
    }
    Ok(entries)
}

/// A key's first 16 characters, to name it in a message.
fn short_key(key: &str) -> &str {
    &key[..16.min(key.len())]
}

/// `entries/<k[..2]>/<k>`.
fn entry_rel(key: &str) -> String {
    format!("entries/{}/{key}", &key[..2.min(key.len())])
}

/// Format tag of a remote entry.
const ENTRY_FORMAT: &str = "relspec-remote-entry/v1";

/// The head of a remote entry: the record, the artifact, whether the object follows.
#[derive(Serialize, Deserialize)]
struct Head {
    format: String,
    record: Record,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact: Option<serde_json::Value>,
    inline: bool,
}

/// A remote entry is a `u32` little-endian length of the JSON head, the
/// head, then the object's bytes when `inline`.
impl Head {
    fn decode(bytes: &[u8]) -> Result<(Head, Option<&[u8]>), String> {
        let bad = || "its entry is truncated".to_string();
        let len = u32::from_le_bytes(bytes.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let head = bytes.get(4..4 + len).ok_or_else(bad)?;
        let head: Head = serde_json::from_slice(head).map_err(|e| format!("its entry does not parse ({e})"))?;
        if head.format != ENTRY_FORMAT {
            return Err(format!("its entry is `{}`, not `{ENTRY_FORMAT}`", head.format));
        }
        let rest = head.inline.then(|| &bytes[4 + len..]);
        Ok((head, rest))
    }

    fn encode(&self, object: Option<&[u8]>) -> Vec<u8> {
        let head = serde_json::to_vec(self).expect("an entry head serializes");
        let mut out = Vec::with_capacity(4 + head.len() + object.map_or(0, <[u8]>::len));
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(object.unwrap_or_default());
        out
    }
}

/// `objects/<h[..2]>/<h>.parquet`.
fn object_rel(hash: &str) -> String {
    format!("{}/{}/{hash}.parquet", crate::store::layout::OBJECTS, &hash[..2.min(hash.len())])
}

/// A put; an existing entry under a create-only put is another writer's
/// identical one (keys and object names are content hashes): success.
async fn put(
    store: &dyn ObjectStore,
    at: &object_store::path::Path,
    bytes: Vec<u8>,
    mode: PutMode,
) -> Result<(), object_store::Error> {
    let opts = PutOptions { mode, ..Default::default() };
    match store.put_opts(at, PutPayload::from(bytes), opts).await {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn exists(store: &dyn ObjectStore, at: &object_store::path::Path) -> Result<bool, object_store::Error> {
    match store.head(at).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn local(p: &std::path::Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: "local cache", source: format!("{}: {e}", p.display()).into() }
}

/// Install a fetched entry in `store`: its object (staged at `tmp`, or
/// `inline` bytes written there) verified against `rec`, then its artifact
/// (when it names the same key) and its record.
fn install(
    store: &Store,
    tmp: &std::path::Path,
    inline: Option<&[u8]>,
    rec: &Record,
    artifact: Option<serde_json::Value>,
) -> Result<(), String> {
    if let Some(bytes) = inline {
        std::fs::write(tmp, bytes).map_err(|e| format!("cannot stage: {e}"))?;
    }
    verify(tmp, rec)?;
    if let Some(a) = artifact.filter(|a| a.get("key").and_then(|k| k.as_str()) == Some(rec.key.as_str())) {
        let rel = crate::bundle::artifact_path(&rec.key);
        let text = serde_json::to_vec_pretty(&a).map_err(|e| e.to_string())?;
        let _ = store.write_atomic(&store.dir().join(rel), &text, false);
    }
    store.put_fetched(rec, tmp).map_err(|e| format!("cannot store it locally: {e}"))
}

/// Check a downloaded object against its record: size, content hash and data hash.
fn verify(tmp: &std::path::Path, rec: &Record) -> Result<(), String> {
    let size = std::fs::metadata(tmp).map_err(|e| e.to_string())?.len();
    if size != rec.bytes {
        return Err(format!("its object has {size} bytes, its record says {}", rec.bytes));
    }
    let (content, data) = hash_parquet(tmp, &rec.schema).map_err(|e| format!("its object does not read ({e})"))?;
    if content != rec.content_hash {
        return Err(format!("its object's content hash is {content}, its record says {}", rec.content_hash));
    }
    if !rec.data_hash.is_empty() && data != rec.data_hash {
        return Err(format!("its object's data hash is {data}, its record says {}", rec.data_hash));
    }
    Ok(())
}

/// What `relspec push` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// The remote's URL.
    pub url: String,
    /// Outputs uploaded.
    pub uploaded: usize,
    /// Outputs the remote had already.
    pub present: usize,
    /// Rules with no current output locally (build them first).
    pub stale: usize,
    /// Whether the pack of the whole build was uploaded (every rule current,
    /// and the remote did not have it).
    pub pack: bool,
}

/// Upload every current output of the workspace (the keys a dry-run build
/// computes, found in the local cache) that the configured remote cache
/// lacks, whatever its `write` says: seeds a remote from an existing cache.
pub fn push(p: &mut crate::project::Project) -> Result<PushReport, Vec<crate::error::Diag>> {
    use crate::error::{Diag, ErrorKind};
    let usage = |m: String| vec![Diag::new(ErrorKind::Usage(m))];
    let spec = p.spec().map_err(|e| vec![e])?;
    let Some(remote_spec) = spec.remote_cache.clone() else {
        return Err(usage("no [cache.remote] in workspace.toml: nothing to push to".into()));
    };
    if env_flag("RELSPEC_REMOTE") == Some(false) {
        return Err(usage("RELSPEC_REMOTE=0 turns the remote cache off".into()));
    }
    let opts = crate::build::BuildOptions { dry_run: true, ..Default::default() };
    let report = crate::build::build(p, &opts, &crate::build::NoProgress)?;
    let store = p.store().map_err(|e| vec![e])?.clone();
    let mut records = Vec::new();
    let mut stale = 0;
    let mut rules = report.rules.iter().collect::<Vec<_>>();
    rules.sort_by(|a, b| a.rule.cmp(&b.rule));
    for r in rules {
        match r.key.as_deref().filter(|_| r.status == crate::build::Status::Reused).and_then(|k| store.lookup(k)) {
            Some(rec) => records.push(rec),
            None => stale += 1,
        }
    }
    // An explicit push writes, whatever `write` and RELSPEC_REMOTE_WRITE say.
    let remote = Remote::open_with(&remote_spec, true).map_err(usage)?;
    let pushed = records.clone();
    let (uploaded, present) = remote.push_records(&store, records).map_err(|e| vec![Diag::new(ErrorKind::Store(e))])?;
    // Every rule current: the pack of the whole build too.
    let mut pack = false;
    if stale == 0 && !pushed.is_empty() {
        let order = p.with_upstream(&p.select(&[]).map_err(|e| vec![e])?);
        let (jobs, _) = p.jobs(&order);
        remote.upload_pack(store, crate::build::pack_key(jobs.iter()), pushed);
        let report = remote.finish();
        if let Some(w) = report.warnings.first() {
            return Err(vec![Diag::new(ErrorKind::Store(w.clone()))]);
        }
        pack = report.pack_uploaded;
    }
    Ok(PushReport { url: remote_spec.url, uploaded, present, stale, pack })
}
