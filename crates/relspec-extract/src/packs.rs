//! The fragment store: files' extracted tables in the cache, packed.
//!
//! A run writes the files it parsed as packs (`cache/fragments/pack-<h>.parquet`,
//! one per run that parsed something; each file's rows in turn, its fragment
//! key and row count in the footer). Writing one pack instead of one
//! file per source file is what keeps a cold index off the filesystem's inode
//! allocator (it dominated when every file had its own fragment), and a fresh
//! process reads a few packs instead of thousands of files.
//!
//! Architecture invariants: packs are immutable and named by the hash of
//! their contents' keys, written tmp + rename; a key's tables are the same in
//! every pack that holds it (the key covers language, path, content and the
//! extractor's version); a pack that cannot be read is skipped (its files are
//! parsed again), never an error.

use datafusion::arrow::array::RecordBatch;
use relspec_spec::workspace::SourceTable;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

type Tables = BTreeMap<SourceTable, RecordBatch>;

/// One pack: where it is and, once a lookup needed it, its files' tables.
struct Pack {
    path: PathBuf,
    loaded: OnceLock<HashMap<String, Tables>>,
}

/// The packs of one fragment directory, by fragment key.
#[derive(Default)]
struct DirIndex {
    keys: Mutex<HashMap<String, Arc<Pack>>>,
}

static DIRS: LazyLock<Mutex<HashMap<PathBuf, Arc<DirIndex>>>> = LazyLock::new(Default::default);

/// The key of (language, path, content) under this extractor.
pub fn fragment_key(language: &str, path: &str, content_hash: &str) -> String {
    let mut h = blake3::Hasher::new();
    for part in ["relspec/fragment/v2", crate::VERSION, language, path, content_hash] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    h.finalize().to_hex().to_string()
}

/// The index of `dir` (its packs' footers, read once per process).
fn index(dir: &Path) -> Arc<DirIndex> {
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = dirs.get(dir) {
        return i.clone();
    }
    let idx = DirIndex::default();
    {
        let mut keys = idx.keys.lock().unwrap_or_else(|e| e.into_inner());
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pack-")) {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else { continue };
            match crate::tables::pack_index(file) {
                Ok(entries) => {
                    let pack = Arc::new(Pack { path: path.clone(), loaded: OnceLock::new() });
                    for (k, _) in entries {
                        keys.insert(k, pack.clone());
                    }
                }
                Err(e) => tracing::warn!(pack = %path.display(), "unreadable fragment pack skipped: {e}"),
            }
        }
    }
    let idx = Arc::new(idx);
    dirs.insert(dir.to_path_buf(), idx.clone());
    idx
}

/// The tables of fragment `key`, if a pack in `dir` holds them (the pack is
/// decoded whole on its first lookup; later lookups are map reads).
pub fn get(dir: &Path, key: &str, tables: &[SourceTable]) -> Option<Tables> {
    let pack = index(dir).keys.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()?;
    let loaded = pack.loaded.get_or_init(|| {
        let read = std::fs::read(&pack.path)
            .map_err(|e| e.to_string())
            .and_then(|b| crate::tables::read_pack(bytes::Bytes::from(b), tables));
        match read {
            Ok(entries) => entries.into_iter().collect(),
            Err(e) => {
                tracing::warn!(pack = %pack.path.display(), "unreadable fragment pack, its files are parsed again: {e}");
                HashMap::new()
            }
        }
    });
    loaded.get(key).cloned()
}

/// Store freshly extracted files as one pack (those `dir` already holds are
/// left out). Failures are warnings: the facts are still used, and a later
/// run parses the files again.
pub fn put(dir: &Path, entries: Vec<(String, Arc<crate::FileFacts>)>) {
    // Under watch every build hands back what earlier builds parsed: one
    // look at the index for all of them.
    let entries: Vec<(String, Arc<crate::FileFacts>)> = {
        let idx = index(dir);
        let known = idx.keys.lock().unwrap_or_else(|e| e.into_inner());
        entries.into_iter().filter(|(k, _)| !known.contains_key(k)).collect()
    };
    if entries.is_empty() {
        return;
    }
    // A pack holds one kind of tables (code or SCIP).
    let mut kinds: BTreeMap<Vec<SourceTable>, Vec<(String, &Tables)>> = BTreeMap::new();
    for (k, f) in &entries {
        kinds.entry(f.tables.keys().copied().collect()).or_default().push((k.clone(), &f.tables));
    }
    for (_, group) in kinds {
        if let Err(e) = write(dir, &group) {
            tracing::warn!(dir = %dir.display(), "cannot store fragments: {e}");
        }
    }
}

/// Remove the packs of `dir` that hold no key of `live` (a pack with any live
/// key is kept whole). Returns (packs removed, bytes freed).
pub fn gc(dir: &Path, live: &std::collections::HashSet<String>) -> std::io::Result<(usize, u64)> {
    let (mut removed, mut bytes) = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let stale = if name.starts_with("pack-") {
            match std::fs::File::open(&path).map_err(|e| e.to_string()).and_then(crate::tables::pack_index) {
                Ok(keys) => !keys.iter().any(|(k, _)| live.contains(k)),
                Err(_) => true,
            }
        } else {
            // Leftover temporary files and anything else that is not a pack.
            true
        };
        if stale {
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    DIRS.lock().unwrap_or_else(|e| e.into_inner()).remove(dir);
    Ok((removed, bytes))
}

fn write(dir: &Path, group: &[(String, &Tables)]) -> Result<(), String> {
    let bytes = crate::tables::write_pack(group)?;
    let mut h = blake3::Hasher::new();
    for (k, _) in group {
        h.update(k.as_bytes());
    }
    let name = format!("pack-{}.parquet", &h.finalize().to_hex()[..32]);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let dest = dir.join(&name);
    if !dest.exists() {
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            e.to_string()
        })?;
    }
    let pack = Arc::new(Pack { path: dest, loaded: OnceLock::new() });
    let idx = index(dir);
    let mut keys = idx.keys.lock().unwrap_or_else(|e| e.into_inner());
    for (k, _) in group {
        keys.insert(k.clone(), pack.clone());
    }
    Ok(())
}
