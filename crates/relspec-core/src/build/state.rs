//! The cache's state as a build reads it: what each rule last resolved to,
//! which objects are intact, what is published (loaded on a second thread
//! under the store lock while the graph is computed).

use crate::db::KeyParts;
use crate::store::{Published, Record, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What each rule last resolved to: its output key and output (a fast path
/// that skips reading the record). The key's parts live in the record.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LastBuilt {
    pub(crate) rules: BTreeMap<String, LastEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LastEntry {
    pub(crate) key: String,
    pub(crate) content_hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) data_hash: String,
    rows: u64,
    bytes: u64,
}

impl LastEntry {
    pub(crate) fn new(rec: &Record) -> Self {
        LastEntry {
            key: rec.key.clone(),
            content_hash: rec.content_hash.clone(),
            data_hash: rec.data_hash.clone(),
            rows: rec.rows,
            bytes: rec.bytes,
        }
    }
    /// The last output's object, if it is still intact.
    pub(crate) fn object(&self, store: &Store) -> Option<PathBuf> {
        store.object_intact(&self.content_hash, self.bytes).then(|| store.object_path(&self.content_hash))
    }

    pub(crate) fn record(&self, rule: &str, signature: &str) -> Record {
        Record {
            key: self.key.clone(),
            content_hash: self.content_hash.clone(),
            rule: rule.to_string(),
            signature: signature.to_string(),
            schema: vec![],
            rows: self.rows,
            bytes: self.bytes,
            elapsed_ms: 0,
            parts: None,
            data_hash: self.data_hash.clone(),
            checks: None,
            footer: Default::default(),
        }
    }
}

/// The key parts the last build of `rule` used (from its record), to explain a rebuild.
pub(crate) fn last_parts(store: &Store, last: &LastBuilt, rule: &str) -> Option<KeyParts> {
    let le = last.rules.get(rule)?;
    let text = std::fs::read(store.record_path(&le.key)).ok()?;
    let rec: Record = serde_json::from_slice(&text).ok()?;
    serde_json::from_value(rec.parts?).ok()
}

pub(crate) fn load_last(store: &Store) -> LastBuilt {
    std::fs::read(store.dir().join(crate::store::layout::LAST_BUILT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// What a build reads of the cache's last state, loaded on a second thread
/// while the first computes the rule graph and keys.
pub(crate) struct Prefetched {
    pub(crate) last: LastBuilt,
    /// Keys whose cached object exists with the recorded size.
    pub(crate) intact: HashSet<String>,
    pub(crate) published: Published,
    /// Rule -> content hash its output was published with, for published
    /// files that still have the recorded size and mtime.
    pub(crate) on_disk: HashMap<String, String>,
    /// Staging files left in the output dir by a killed publish.
    pub(crate) staging: Vec<PathBuf>,
}

/// Load the last build, check its objects and the published files (one stat
/// each). Run under the store lock, so nothing else changes them meanwhile.
pub(crate) fn prefetch(store: &Store, out_dir: &Path, prefix: &str) -> Prefetched {
    // Staging files of a killed earlier publish (removed when publishing).
    let staging = std::fs::read_dir(out_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".relspec-tmp-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    let last = load_last(store);
    let intact = last
        .rules
        .values()
        .filter(|le| store.object_intact(&le.content_hash, le.bytes))
        .map(|le| le.key.clone())
        .collect();
    let published = store.load_published();
    let on_disk = published
        .entries
        .iter()
        .filter_map(|(rel, prev)| {
            let file = rel.strip_prefix(prefix)?.strip_prefix('/')?;
            // `out/<rule>.parquet`, or a hive directory `out/<rule>/`.
            let rule = file.strip_suffix(".parquet").or_else(|| file.strip_suffix('/'))?;
            store
                .published_file_matches(prev, &out_dir.join(file))
                .then(|| (rule.to_string(), prev.content_hash.clone()))
        })
        .collect();
    Prefetched { last, intact, published, on_disk, staging }
}
