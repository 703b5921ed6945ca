//! The cache's state as a build reads it: what each rule last resolved to,
//! which objects are intact, what is published (loaded on a second thread
//! under the store lock while the graph is computed).

use crate::db::KeyParts;
use crate::error::Result;
use crate::store::{Published, PublishedEntry, Record, Store, layout};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What each rule last resolved to: its output key and output (a fast path
/// that skips reading the record). The key's parts live in the record.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LastBuilt {
    pub(crate) rules: BTreeMap<String, LastEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LastEntry {
    pub(crate) key: String,
    pub(crate) content_hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) data_hash: String,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
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

/// The last build's state: `last-built.json`, then its log.
pub(crate) fn load_last(store: &Store) -> LastBuilt {
    let mut last: LastBuilt = std::fs::read(store.dir().join(layout::LAST_BUILT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for (k, v) in store.read_log::<LastEntry>(layout::LAST_BUILT_LOG) {
        match v {
            Some(v) => last.rules.insert(k, v),
            None => last.rules.remove(&k),
        };
    }
    last
}

/// Save the last build's state: whole, or (a partial build, which knows
/// only its rules' entries as they were, `seeded`) the entries it changed,
/// appended to the log.
pub(crate) fn save_last(store: &Store, last: &LastBuilt, seeded: Option<&BTreeMap<String, LastEntry>>) -> Result<()> {
    match seeded {
        None => {
            store.write_json(&store.dir().join(layout::LAST_BUILT), last)?;
            store.clear_log(layout::LAST_BUILT_LOG)
        }
        Some(before) => store.append_log(layout::LAST_BUILT_LOG, &changes(before, &last.rules)),
    }
}

/// Save the publish ledger: whole, or the entries a partial build changed.
pub(crate) fn save_published(
    store: &Store,
    ledger: &Published,
    seeded: Option<&BTreeMap<String, PublishedEntry>>,
) -> Result<()> {
    match seeded {
        None => store.save_published(ledger),
        Some(before) => store.append_log(layout::PUBLISHED_LOG, &changes(before, &ledger.entries)),
    }
}

/// The changes from `before` to `after`: new or changed entries, and
/// removed ones (`None`).
fn changes<V: Clone + PartialEq>(
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
) -> Vec<(String, Option<V>)> {
    let mut out: Vec<(String, Option<V>)> =
        after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
    out.extend(before.keys().filter(|k| !after.contains_key(*k)).map(|k| (k.clone(), None)));
    out
}

/// What a partial build (see [`crate::snapshot`]) is given instead of
/// reading the cache's whole state: the outputs of the rules it reads but
/// does not load, and its own rules' last entries and published entries.
#[derive(Default)]
pub(crate) struct Seed {
    pub(crate) frozen: HashMap<String, Record>,
    pub(crate) last: BTreeMap<String, LastEntry>,
    pub(crate) published: BTreeMap<String, PublishedEntry>,
    /// Checked under the store lock: whether the seed still describes the
    /// cache (no other build ran since it was made).
    #[allow(clippy::type_complexity)]
    pub(crate) guard: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

/// The state of a partial build from its seed (the same checks as
/// [`prefetch`], on its rules only).
pub(crate) fn seeded(store: &Store, out_dir: &Path, prefix: &str, seed: &Seed) -> Prefetched {
    let last = LastBuilt { rules: seed.last.clone() };
    let intact = intact(store, &last);
    let published = Published { entries: seed.published.clone() };
    let on_disk = on_disk(store, out_dir, prefix, &published);
    Prefetched { last, intact, published, on_disk, staging: vec![] }
}

/// Keys of the last build whose objects exist with the recorded size.
fn intact(store: &Store, last: &LastBuilt) -> HashSet<String> {
    last.rules.values().filter(|le| store.object_intact(&le.content_hash, le.bytes)).map(|le| le.key.clone()).collect()
}

/// Rule -> the content hash its published file holds, for the ledger's
/// files that still have the recorded size and mtime.
fn on_disk(store: &Store, out_dir: &Path, prefix: &str, published: &Published) -> HashMap<String, String> {
    published
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
        .collect()
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
    let intact = intact(store, &last);
    let published = store.load_published();
    let on_disk = on_disk(store, out_dir, prefix, &published);
    Prefetched { last, intact, published, on_disk, staging }
}
