//! Partition-level incrementality: a rule that declares `incremental = {
//! by = "input" }` distributes over the partitions of `input` (proven on its
//! plan by `relspec_exec::distributive`), and its output carries the
//! partition key as columns copied from the input. So when only some
//! partitions of the input changed (and nothing else the rule reads), the
//! new output is the previous output less the rows of the changed
//! partitions, plus the rule's result over just those partitions: one
//! DataFusion run over the changed partitions, then a two-way merge of
//! sorted streams (outputs are sorted by every column), with no re-sort.
//!
//! The partitions of an input: a hive dataset's directories and a source's
//! files (each with a fingerprint of its files' content hashes, recorded in
//! the rule's artifact), or the partitions of an upstream incremental rule
//! (which records, per partial build, the partitions whose rows changed: a
//! partition whose recomputed rows equal its old rows stops there, early
//! cutoff per partition).
//!
//! Architecture invariant: a partial build's output is byte-identical to a
//! clean build's; it is attempted only when the rule's key parts other
//! than `by` equal the previous build's and the previous output is intact,
//! else the rule runs whole. The previous output is the store of the
//! partitions' rows (found by the key columns): no per-partition objects.

use super::execute::{Target, Written};
use super::merge::{Feed, Merge, Retract, internal, open_files, partition_ids, row_converter};
use super::state::{LastBuilt, last_parts};
use crate::bundle::{PartitionState, artifact_partitions};
use crate::db::KeyParts;
use crate::project::Project;
use crate::store::{Record, Store};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, cast, lit};
use datafusion::physical_plan::SendableRecordBatchStream;
use relspec_exec::distributive::ByInput;
use relspec_exec::lower::LowerError;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A partial build: which partitions to retract and recompute.
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    /// The previous output's object.
    pub(crate) previous: PathBuf,
    /// The previous output's data hash (what downstream keys saw).
    pub(crate) prev_data_hash: String,
    /// Partitions whose rows are taken out of the previous output.
    pub(crate) changed: BTreeSet<String>,
    /// Of those, the partitions that exist now (the rule runs over them).
    pub(crate) run: Vec<String>,
    /// Those partitions' rows, when at hand (a source's extracted facts):
    /// the rule then scans just them instead of filtering the whole table.
    pub(crate) rows: Option<Vec<RecordBatch>>,
}

/// What an incremental rule's run gets from the scheduler.
#[derive(Debug, Clone)]
pub(crate) struct Incremental {
    /// `incremental = { by }`.
    pub(crate) by: String,
    /// What `by` is (for the declaration's check).
    pub(crate) input: Option<ByInput>,
    /// The tables the rule reads.
    pub(crate) reads: Vec<String>,
    /// The state to record (partitions now; `delta`/`ran` filled by the run).
    pub(crate) state: PartitionState,
    /// Set when only some partitions are recomputed.
    pub(crate) partial: Option<Partial>,
}

/// Whether two keys' parts are equal except for input `by`.
fn same_but(a: &KeyParts, b: &KeyParts, by: &str) -> bool {
    let eq = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.iter().filter(|(k, _)| *k != by).eq(y.iter().filter(|(k, _)| *k != by))
    };
    a.rule == b.rule
        && a.signature == b.signature
        && a.engine == b.engine
        && a.params == b.params
        && a.contract == b.contract
        && eq(&a.datasets, &b.datasets)
        && eq(&a.upstream, &b.upstream)
}

/// Partitions that differ between two fingerprint maps (changed, added or
/// removed): one walk of both in key order.
pub(crate) fn changed_partitions(prev: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> BTreeSet<String> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let mut out = BTreeSet::new();
    let (mut a, mut b) = (prev.iter().peekable(), now.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((id, _)), None) => {
                out.insert((*id).clone());
                a.next();
            }
            (None, Some((id, _))) => {
                out.insert((*id).clone());
                b.next();
            }
            (Some((ia, fa)), Some((ib, fb))) => match ia.cmp(ib) {
                Less => {
                    out.insert((*ia).clone());
                    a.next();
                }
                Greater => {
                    out.insert((*ib).clone());
                    b.next();
                }
                Equal => {
                    if fa != fb {
                        out.insert((*ia).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    out
}

/// Decide how incremental rule `name` (reading `by`) runs: its partitions
/// now, and a partial build when the previous one allows it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan(
    p: &Project,
    store: &Store,
    last: &LastBuilt,
    records: &HashMap<String, Record>,
    name: &str,
    by: &str,
    reads: Vec<String>,
    parts: &KeyParts,
) -> Incremental {
    let input = p.by_input(by);
    let key = match &input {
        Some(ByInput::Dataset(k) | ByInput::Rule(k)) => k.clone(),
        _ => vec![],
    };
    let is_dataset = matches!(input, Some(ByInput::Dataset(_)));
    let t = std::time::Instant::now();
    let fingerprints = if is_dataset { p.dataset_partitions(by).unwrap_or_default() } else { BTreeMap::new() };
    tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, rule = name, "partition fingerprints");
    let total = is_dataset.then_some(fingerprints.len());
    let state = PartitionState { by: by.to_string(), key: key.clone(), fingerprints, delta: None, ran: total, total };
    let partial = (|| {
        if key.is_empty() {
            return None;
        }
        let le = last.rules.get(name)?;
        let previous = le.object(store)?;
        let prev_parts = last_parts(store, last, name)?;
        if !same_but(&prev_parts, parts, by) {
            return None;
        }
        let prev = artifact_partitions(store, &le.key)?;
        if prev.by != by || prev.key != key {
            return None;
        }
        let changed: BTreeSet<String> = if is_dataset {
            let changed = changed_partitions(&prev.fingerprints, &state.fingerprints);
            // Recomputing most partitions: the whole rule is cheaper.
            if changed.len() * 2 > state.fingerprints.len().max(1) {
                return None;
            }
            changed
        } else {
            let up = records.get(by)?;
            let up_state = artifact_partitions(store, &up.key)?;
            let delta = up_state.delta.as_ref()?;
            if prev_parts.upstream.get(by) != Some(&delta.from) {
                return None;
            }
            delta.changed.iter().cloned().collect()
        };
        let run = if is_dataset {
            changed.iter().filter(|id| state.fingerprints.contains_key(*id)).cloned().collect()
        } else {
            changed.iter().cloned().collect()
        };
        let prev_data_hash = if le.data_hash.is_empty() { le.content_hash.clone() } else { le.data_hash.clone() };
        Some(Partial { previous, prev_data_hash, changed, run, rows: None })
    })();
    Incremental { by: by.to_string(), input, reads, state, partial }
}

/// The rule's plan over only partitions `ids` of `by`: a filter on the key
/// columns above each scan of `by` (a hive dataset prunes the other
/// directories; a rule's object is filtered), and when `rows` holds just
/// those partitions' rows, the scan reads them instead of the whole table.
pub(crate) fn restrict(
    plan: LogicalPlan,
    by: &str,
    key: &[String],
    ids: &[String],
    rows: Option<&[RecordBatch]>,
) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let sep = relspec_db::datasets::PARTITION_ID_SEP;
    plan.transform_up(|node| {
        let LogicalPlan::TableScan(scan) = &node else { return Ok(Transformed::no(node)) };
        if scan.table_name.table() != by {
            return Ok(Transformed::no(node));
        }
        let text = |k: &str| cast(Expr::Column(Column::new(Some(scan.table_name.clone()), k)), DataType::Utf8);
        let node = match rows {
            Some(rows) => {
                let table = datafusion::datasource::MemTable::try_new(scan.source.schema(), vec![rows.to_vec()])?;
                let source = datafusion::datasource::provider_as_source(Arc::new(table));
                let mut scan = scan.clone();
                scan.source = source;
                LogicalPlan::TableScan(scan)
            }
            None => node.clone(),
        };
        let pred = if key.len() == 1 {
            text(&key[0]).in_list(ids.iter().map(|id| lit(id.as_str())).collect(), false)
        } else {
            ids.iter()
                .map(|id| {
                    let values: Vec<&str> = id.split(sep).collect();
                    key.iter().zip(values).map(|(k, v)| text(k).eq(lit(v))).reduce(Expr::and).unwrap_or(lit(true))
                })
                .reduce(Expr::or)
                .unwrap_or(lit(false))
        };
        let filter = datafusion::logical_expr::Filter::try_new(pred, Arc::new(node))?;
        Ok(Transformed::yes(LogicalPlan::Filter(filter)))
    })
    .map(|t| t.data)
}

/// Which retracted partitions' rows really changed, once the merge ran.
pub(crate) type Cutoff = Arc<Mutex<Option<BTreeSet<String>>>>;

/// Per partition, the hash of its rows in order (to tell which partitions'
/// rows changed).
type PartHashes = HashMap<String, blake3::Hasher>;

/// The partitions of `changed` whose retracted rows differ from their new rows.
fn differing(changed: &BTreeSet<String>, removed: &PartHashes, added: &PartHashes) -> BTreeSet<String> {
    let digest = |m: &PartHashes, id: &str| m.get(id).map(|h| h.finalize());
    changed.iter().filter(|id| digest(removed, id) != digest(added, id)).cloned().collect()
}

/// A partial build's output: the previous output (read as `schema`) less
/// the changed partitions' rows, merged with `fresh` (the rule's sorted
/// rows over the changed partitions). Spliced when the previous object's
/// layout allows it (the row groups the change does not touch are copied),
/// else merged whole. Returns the object, the partitions whose rows differ
/// from before and, when spliced, the row groups copied and re-encoded.
pub(crate) async fn write_partial(
    to: &Target,
    schema: SchemaRef,
    key: &[String],
    partial: &Partial,
    fresh: Vec<RecordBatch>,
) -> Result<(Written, BTreeSet<String>, Option<(usize, usize)>), LowerError> {
    let cols: Vec<usize> = key.iter().map(|k| schema.index_of(k).map_err(internal)).collect::<Result<_, _>>()?;
    let conv = row_converter(&schema)?;
    let mut added: PartHashes = HashMap::new();
    for b in &fresh {
        let rows = conv.convert_columns(b.columns()).map_err(internal)?;
        super::merge::hash_rows(&mut added, &partition_ids(b, &cols)?, &rows);
    }
    let plain = Arc::new(Schema::new(schema.fields().clone()));
    let ids: HashSet<String> = partial.changed.iter().cloned().collect();
    let retract = Retract { cols, ids, hashes: HashMap::new() };
    let change = super::splice::Change::Partitions { retract: retract.clone(), added: fresh.clone() };
    let t = std::time::Instant::now();
    if let Some((written, spliced)) =
        to.write_spliced(plain.clone(), partial.previous.clone(), change, Default::default()).await?
    {
        tracing::debug!(
            rule = to.rule.as_str(),
            ms = t.elapsed().as_secs_f64() * 1e3,
            copied = spliced.copied,
            encoded = spliced.encoded,
            "partial: spliced"
        );
        let removed = spliced.retract.map(|r| r.hashes).unwrap_or_default();
        let groups = Some((spliced.copied, spliced.encoded));
        return Ok((written, differing(&partial.changed, &removed, &added), groups));
    }
    let (stream, cutoff) = merge_stream(plain, retract, partial, fresh, added)?;
    let written = to.write(stream).await?;
    let changed = cutoff.lock().ok().and_then(|mut c| c.take()).unwrap_or_else(|| partial.changed.clone());
    Ok((written, changed, None))
}

/// The whole merge of a partial build as a stream (see [`write_partial`]).
/// When the stream ends, `Cutoff` holds the partitions whose rows differ.
fn merge_stream(
    plain: SchemaRef,
    retract: Retract,
    partial: &Partial,
    fresh: Vec<RecordBatch>,
    added: PartHashes,
) -> Result<(SendableRecordBatchStream, Cutoff), LowerError> {
    let mut feeds = open_files(std::slice::from_ref(&partial.previous), std::slice::from_ref(&plain))?;
    let mut fresh = Feed::Batches(fresh.into_iter());
    let first = fresh.next_non_empty()?;
    feeds.push((fresh, first));
    let mut merge = Merge::of_feeds(plain.clone(), feeds, Some((0, retract)))?;
    let cutoff: Cutoff = Arc::new(Mutex::new(None));
    let (out, changed) = (cutoff.clone(), partial.changed.clone());
    let mut done = false;
    let mut in_merge = std::time::Duration::ZERO;
    let iter = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let t = std::time::Instant::now();
        let next = merge.next_batch();
        in_merge += t.elapsed();
        match next {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => {
                done = true;
                tracing::debug!(ms = in_merge.as_secs_f64() * 1e3, "partial: time in the merge (reading included)");
                let removed = merge.retracted().map(|r| r.hashes).unwrap_or_default();
                *out.lock().expect("cutoff lock") = Some(differing(&changed, &removed, &added));
                None
            }
            Err(e) => Some(Err(datafusion::error::DataFusionError::Execution(e.diag.kind.to_string()))),
        }
    });
    let stream = super::merge::ahead(plain, iter);
    Ok((stream, cutoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_partitions_are_edits_additions_and_removals() {
        let m = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let prev = m(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let now = m(&[("a", "1"), ("b", "9"), ("d", "4")]);
        let got: Vec<String> = changed_partitions(&prev, &now).into_iter().collect();
        assert_eq!(got, ["b", "c", "d"]);
        assert!(changed_partitions(&now, &now).is_empty());
        // The walk agrees with a lookup per key on maps that interleave.
        let naive = |p: &BTreeMap<String, String>, n: &BTreeMap<String, String>| -> BTreeSet<String> {
            let mut out: BTreeSet<String> =
                n.iter().filter(|(id, fp)| p.get(*id) != Some(fp)).map(|(id, _)| id.clone()).collect();
            out.extend(p.keys().filter(|id| !n.contains_key(*id)).cloned());
            out
        };
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..200 {
            let mut map = || -> BTreeMap<String, String> {
                (0..next() % 30).map(|_| (format!("k{}", next() % 40), format!("{}", next() % 3))).collect()
            };
            let (p, n) = (map(), map());
            assert_eq!(changed_partitions(&p, &n), naive(&p, &n));
        }
    }

    #[test]
    fn only_the_partitioned_input_may_differ() {
        let parts = |ev: &str, users: &str, up: &str, sig: &str| KeyParts {
            rule: "x".into(),
            signature: sig.into(),
            engine: "e".into(),
            datasets: [("events".to_string(), ev.to_string()), ("users".to_string(), users.to_string())].into(),
            params: Default::default(),
            contract: None,
            upstream: [("r".to_string(), up.to_string())].into(),
        };
        let a = parts("e1", "u1", "h1", "s");
        assert!(same_but(&a, &parts("e2", "u1", "h1", "s"), "events"));
        assert!(!same_but(&a, &parts("e2", "u2", "h1", "s"), "events"), "another dataset changed");
        assert!(!same_but(&a, &parts("e1", "u1", "h2", "s"), "events"), "an upstream rule changed");
        assert!(!same_but(&a, &parts("e1", "u1", "h1", "t"), "events"), "the rule changed");
        assert!(same_but(&a, &parts("e1", "u1", "h2", "s"), "r"), "the partitioned input is a rule");
    }
}
