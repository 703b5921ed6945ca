//! Run bundles: what each build did and everything a reviewer needs to
//! trust it, under `cache/runs/` and `cache/artifacts/`.
//!
//! An *artifact* (`artifacts/<output key>.json`) describes one materialized
//! output: signature, SQL, plans (with execution metrics), column lineage,
//! contract results, kernel lanes and the Substrait plan's path. It is
//! written when the output is built and shared by every later run that
//! reuses the output. A *run bundle* (`runs/<run id>.json`) records one
//! build: engine fingerprint and profile, the dataset registry (files and
//! fingerprints), and per rule its status, key and artifact. `relspec
//! explain` reads the latest bundle's artifact for a rule.
//!
//! Architecture invariant: bundles and artifacts are written after the
//! outputs they describe are stored; a build that executes nothing writes no
//! bundle (a no-op build leaves the cache byte-for-byte unchanged).

use crate::contracts::CheckResult;
use crate::engine::PlanSnapshots;
use crate::error::Result;
use crate::kernels::KernelUse;
use crate::lineage::RuleLineage;
use crate::status::Status;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Run bundles kept; older ones are removed when a new one is written.
pub const KEEP_RUNS: usize = 20;

/// Everything known about one materialized output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    /// Rule name.
    pub rule: String,
    /// Output key.
    pub key: String,
    /// Plan signature.
    pub signature: String,
    /// Logical, optimized and physical plans (with metrics) and unparsed SQL.
    pub plans: PlanSnapshots,
    /// Column lineage.
    pub lineage: RuleLineage,
    /// Data contract results.
    pub checks: Vec<CheckResult>,
    /// Kernel applications and lanes.
    pub kernels: Vec<KernelUse>,
    /// Substrait plan, relative to the cache dir (with the `substrait` feature).
    pub substrait: Option<String>,
    /// Why there is no Substrait plan, when the feature is on and the plan
    /// cannot be expressed (DataFusion's producer lacks e.g. `Unnest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substrait_unsupported: Option<String>,
    /// Output rows.
    pub rows: u64,
    /// Output bytes (Parquet).
    pub bytes: u64,
    /// Execution time, ms.
    pub elapsed_ms: f64,
    /// A `UNION ALL` of rules: its branches and the content hashes of the
    /// objects written (the next write starts from this output).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<(String, String)>,
    /// A `UNION ALL` of rules: the columns each branch's object was read
    /// with, so the next build need not read the unchanged ones' footers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_columns: Option<BranchColumns>,
    /// An incremental rule (`incremental = { by }`): its partitions, and
    /// what the next build needs to recompute only the changed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionState>,
}

/// The column lists of a union's branches: the distinct lists, and each
/// branch's index into them (in branch order, as `merged_from`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BranchColumns {
    /// Distinct column lists (name, Arrow type as displayed, nullable).
    pub lists: Vec<Vec<crate::store::ColumnInfo>>,
    /// Per branch: its list.
    pub of: Vec<u32>,
    /// Whether strings were read as view types (the lists hold the types
    /// as read; a session reading otherwise does not use them).
    #[serde(default)]
    pub views: bool,
}

impl BranchColumns {
    /// The lists of `columns` (one per branch, as read with `views`), each
    /// distinct list once.
    pub fn of(columns: Vec<Vec<crate::store::ColumnInfo>>, views: bool) -> BranchColumns {
        let mut out = BranchColumns { views, ..Default::default() };
        for c in columns {
            let i = match out.lists.iter().position(|l| *l == c) {
                Some(i) => i,
                None => {
                    out.lists.push(c);
                    out.lists.len() - 1
                }
            };
            out.of.push(i as u32);
        }
        out
    }
}

/// The partitions of an incremental rule's output, as one build left them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The partitioned input (`incremental = { by }`).
    pub by: String,
    /// The partition key columns (in the input and in the output).
    pub key: Vec<String>,
    /// When `by` is a dataset: each partition's fingerprint, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fingerprints: BTreeMap<String, String>,
    /// A partial build: the output it started from and the partitions
    /// whose rows differ from it (a downstream rule incremental by this one
    /// recomputes just these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// Partitions computed by this build (all of them when it ran whole).
    pub ran: Option<usize>,
    /// Partitions of `by` (known when it is a dataset).
    pub total: Option<usize>,
}

/// How a partially rebuilt output differs from the output it started from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Content hash of the previous output.
    pub from: String,
    /// Ids of the partitions whose rows changed (added, edited or removed).
    pub changed: Vec<String>,
}

/// One rule in a run. Reused rules carry only their key (their artifact is
/// `artifacts/<key>.json`), which keeps a bundle of thousands of rules small.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRule {
    /// What happened.
    pub status: Status,
    /// Output key.
    pub key: Option<String>,
    /// Content hash of the output (rules that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Output rows (rules that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Time in this run, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub elapsed_ms: f64,
    /// Why it was rebuilt, or the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Artifact path relative to the cache dir (rules that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Kernel applications and their lanes (rules that ran; a reused
    /// rule's are in its artifact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelUse>,
    /// Reused from the remote cache (downloaded by this run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
}

impl RunRule {
    /// The artifact path: recorded, or derived from the key of a reused output.
    pub fn artifact_path(&self) -> Option<String> {
        self.artifact.clone().or_else(|| match self.status {
            Status::Reused => self.key.as_deref().map(artifact_path),
            _ => None,
        })
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// One dataset as the run saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDataset {
    /// Location as declared.
    pub location: String,
    /// Format.
    pub format: String,
    /// Fingerprint.
    pub fingerprint: Option<String>,
    /// Files (relative paths) and content hashes; empty for a dataset of
    /// more than [`RUN_FILES_MAX`] files (its fingerprint covers them).
    pub files: Vec<(String, String)>,
    /// How many files the dataset had.
    #[serde(default)]
    pub file_count: usize,
}

/// Datasets with more files than this are recorded in a run bundle by
/// fingerprint and count only: a 10,000-file source listed in full made
/// every watch rebuild write megabytes of bundle.
pub const RUN_FILES_MAX: usize = 1000;

/// One build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunBundle {
    /// Sortable id: UTC time and process id.
    pub run_id: String,
    /// Engine fingerprint.
    pub engine_fingerprint: String,
    /// The runtime profile.
    pub profile: serde_json::Value,
    /// The dataset registry.
    pub datasets: BTreeMap<String, RunDataset>,
    /// Rules in this run.
    pub rules: BTreeMap<String, RunRule>,
    /// Total wall time, ms.
    pub elapsed_ms: f64,
}

/// Relative path of the artifact of output `key`.
pub fn artifact_path(key: &str) -> String {
    format!("{}/{key}.json", crate::store::layout::ARTIFACTS)
}

/// Write an artifact (idempotent: same key, same meaning); returns its
/// path in the store and its partition state, if it has one.
pub fn write_artifact(store: &Store, a: Artifact) -> Result<(String, Option<Arc<PartitionState>>)> {
    let rel = artifact_path(&a.key);
    store.write_json(&store.dir().join(&rel), &a)?;
    // Remembered as written (a partition map of every file of a large
    // source is not copied again).
    let state = a.partitions.map(Arc::new);
    if let Some(state) = &state {
        remember_partitions(store, &a.key, state.clone());
    }
    Ok((rel, state))
}

/// The partition states of the artifacts this process wrote or read last
/// (by cache dir and output key): an incremental rule's next partial build
/// compares against them without parsing the artifact again. An artifact
/// is immutable under its key, so an entry never goes stale.
#[allow(clippy::type_complexity)]
static PARTITIONS: std::sync::Mutex<Vec<((std::path::PathBuf, String), Arc<PartitionState>)>> =
    std::sync::Mutex::new(Vec::new());
/// Entries kept in [`PARTITIONS`] (two per incremental rule is plenty).
const PARTITIONS_KEPT: usize = 64;

fn remember_partitions(store: &Store, key: &str, state: Arc<PartitionState>) {
    let mut memo = PARTITIONS.lock().unwrap_or_else(|e| e.into_inner());
    let id = (store.dir().to_path_buf(), key.to_string());
    memo.retain(|(k, _)| *k != id);
    if memo.len() >= PARTITIONS_KEPT {
        memo.remove(0);
    }
    memo.push((id, state));
}

/// The partition state in the artifact of output `key` (remembered, else
/// read and remembered).
pub fn artifact_partitions(store: &Store, key: &str) -> Option<Arc<PartitionState>> {
    let id = (store.dir().to_path_buf(), key.to_string());
    {
        let memo = PARTITIONS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, state)) = memo.iter().rev().find(|(k, _)| *k == id) {
            return Some(state.clone());
        }
    }
    let state = Arc::new(read_artifact(store, &artifact_path(key))?.partitions?);
    remember_partitions(store, key, state.clone());
    Some(state)
}

/// Read an artifact by its relative path.
pub fn read_artifact(store: &Store, rel: &str) -> Option<Artifact> {
    std::fs::read(store.dir().join(rel)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// A new sortable run id.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:013}-{:07}", now.as_millis(), std::process::id())
}

/// Write a run bundle and prune old ones; returns its path.
pub fn write_run(store: &Store, run: &RunBundle) -> Result<std::path::PathBuf> {
    let dir = store.dir().join(crate::store::layout::RUNS);
    let path = dir.join(format!("{}.json", run.run_id));
    store.write_json(&path, run)?;
    let mut ids = run_files(store);
    if ids.len() > KEEP_RUNS {
        ids.truncate(ids.len() - KEEP_RUNS);
        for old in ids {
            let _ = std::fs::remove_file(dir.join(old));
        }
    }
    Ok(path)
}

fn run_files(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(store.dir().join(crate::store::layout::RUNS))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    ids.sort();
    ids
}

/// The most recent run bundle, if any.
pub fn latest_run(store: &Store) -> Option<RunBundle> {
    let last = run_files(store).pop()?;
    std::fs::read(store.dir().join(crate::store::layout::RUNS).join(last))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The latest artifact of `rule`: from the newest run bundle that mentions it.
pub fn latest_artifact(store: &Store, rule: &str) -> Option<Artifact> {
    for f in run_files(store).iter().rev() {
        let run: Option<RunBundle> = std::fs::read(store.dir().join(crate::store::layout::RUNS).join(f))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(a) = run.and_then(|r| r.rules.get(rule).and_then(RunRule::artifact_path)) {
            return read_artifact(store, &a);
        }
    }
    None
}
