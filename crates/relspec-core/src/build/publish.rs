//! Publishing: copy each target's output from the store to `out/<rule>.parquet`
//! where the published file does not already hold it, then save the side
//! caches and, when something executed, the run bundle.
//!
//! Architecture invariant: only outputs whose object and record are in the
//! store are published (publishing reads the record); a failed rule has no
//! new record, so its last good file stays.

use super::state::LastBuilt;
use super::{RuleReport, Status, bundle_of};
use crate::db::Db;
use crate::error::{Diag, ErrorKind, Result};
use crate::project::Project;
use crate::store::Record;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// What the scheduler produced (reports and errors are completed here).
pub(crate) struct Outcome<'a> {
    /// Targets published as hive directories: rule -> partition columns.
    pub(crate) partitioned: &'a HashMap<String, Vec<String>>,
    /// The engine that splits them (when there are any).
    pub(crate) engine: Option<std::sync::Arc<crate::engine::Engine>>,
    pub(crate) records: &'a HashMap<String, Record>,
    pub(crate) last: &'a LastBuilt,
    pub(crate) last_dirty: bool,
    pub(crate) artifacts: &'a HashMap<String, String>,
    pub(crate) reports: &'a mut HashMap<String, RuleReport>,
    pub(crate) errors: &'a mut Vec<Diag>,
}

/// What is published now (from the build's prefetch).
pub(crate) struct Published<'a> {
    /// The publish ledger.
    pub(crate) ledger: crate::store::Published,
    /// Rule -> content hash of its published file, for files that still match the ledger.
    pub(crate) on_disk: &'a HashMap<String, String>,
    /// Staging files of a killed earlier publish.
    pub(crate) staging: &'a [PathBuf],
}

/// Publish the targets whose files are stale, save the side caches and write
/// the run bundle. Errors of single files are added to `outcome.errors` (the
/// rule's report says it was not published); an error saving the caches is
/// returned. `order` is every rule the build resolved, `targets` those it publishes.
pub(crate) fn publish(
    p: &Project,
    order: &[String],
    targets: &[String],
    outcome: Outcome<'_>,
    now: Published<'_>,
    t0: Instant,
) -> Result<crate::store::Published> {
    let (store, spec) = (p.store()?, p.spec()?);
    let Outcome { partitioned, engine, records, last, last_dirty, artifacts, reports, errors } = outcome;
    let Published { mut ledger, on_disk, staging } = now;
    let out_dir = spec.output_path(&p.root);
    for f in staging {
        let _ = if f.is_dir() { std::fs::remove_dir_all(f) } else { std::fs::remove_file(f) };
    }
    // Only the published files that no longer match what the ledger says was
    // published (content hash here, size and mtime in `prefetch`) are (re)written.
    let prefix = spec.output_dir.trim_end_matches('/');
    let stale: Vec<(&String, &Record)> = targets
        .iter()
        .filter_map(|t| records.get(t).map(|rec| (t, rec)))
        .filter(|(t, rec)| on_disk.get(*t) != Some(&published_as(rec, partitioned.get(*t))))
        .collect();
    let mut session = None;
    let ledger_dirty = !stale.is_empty();
    // A record from the last-built fast path carries no provenance; the
    // sidecar is written from the full record in the store.
    let full: Vec<Option<Record>> =
        stale.iter().map(|(_, rec)| if rec.parts.is_none() { store.lookup(&rec.key) } else { None }).collect();
    let stale: Vec<(&String, &Record)> =
        stale.iter().zip(&full).map(|((t, rec), f)| (*t, f.as_ref().unwrap_or(rec))).collect();
    // Outputs published as files: staged and synced together, then renamed in order.
    let files: Vec<(&Record, PathBuf, String)> = stale
        .iter()
        .filter(|(t, _)| !partitioned.contains_key(*t))
        .map(|(t, rec)| (*rec, out_dir.join(format!("{t}.parquet")), format!("{prefix}/{t}.parquet")))
        .collect();
    let mut as_files = store.publish_many(&files, &mut ledger).into_iter();
    for (t, rec) in &stale {
        let res = match partitioned.get(*t) {
            None => as_files
                .next()
                .unwrap_or_else(|| Err(Diag::new(ErrorKind::Internal("not staged".into()))))
                .and_then(|()| {
                    // Published as a file now: a hive directory of an earlier build goes.
                    remove_partitioned(&out_dir.join(t.as_str()), &mut ledger, &format!("{prefix}/{t}/"))
                }),
            Some(cols) => {
                let engine = engine.as_ref().ok_or_else(|| Diag::new(ErrorKind::Internal("no engine".into())))?;
                if session.is_none() {
                    session = Some(engine.session()?);
                }
                let ctx = session.as_ref().unwrap();
                publish_partitioned(store, engine, ctx, rec, cols, &out_dir, t).map(|bytes_mtime| {
                    ledger.entries.remove(&format!("{prefix}/{t}.parquet"));
                    ledger.entries.insert(
                        format!("{prefix}/{t}/"),
                        crate::store::PublishedEntry {
                            content_hash: published_as(rec, Some(cols)),
                            bytes: bytes_mtime.0,
                            mtime_ns: bytes_mtime.1,
                        },
                    );
                })
            }
        };
        match res {
            Ok(()) => {
                if let Some(r) = reports.get_mut(*t) {
                    r.published = true;
                }
            }
            Err(e) => errors.push(e.in_rule((*t).clone())),
        }
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "published");
    // A partial build appends what it changed; a full one writes the whole state.
    if ledger_dirty {
        super::state::save_published(store, &ledger, p.seed.as_ref().map(|s| &s.published))?;
    }
    p.db.summaries().save(store)?;
    if last_dirty {
        super::state::save_last(store, last, p.seed.as_ref().map(|s| &s.last))?;
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "side caches saved");
    // A run that executed, failed or downloaded something has a bundle.
    let ran = reports.values().any(|r| r.remote || matches!(r.status, Status::Built | Status::Failed));
    if ran {
        let run = bundle_of::run_bundle(p, order, reports, artifacts, t0.elapsed().as_secs_f64() * 1000.0);
        crate::bundle::write_run(store, &run)?;
    }
    Ok(ledger)
}

/// What the ledger records as published for `rec`: its content hash, plus
/// the partition columns when it is published as a hive directory.
fn published_as(rec: &Record, partition_by: Option<&Vec<String>>) -> String {
    match partition_by {
        Some(cols) => format!("{}#partition_by={}", rec.content_hash, cols.join(",")),
        None => rec.content_hash.clone(),
    }
}

/// The marker file of a published hive directory (its sidecar).
const PARTITIONED_SIDECAR: &str = "_relspec.json";

/// Publish `rec` as a hive directory `out/<rule>/`: written under a staging
/// directory, then swapped in (the old one renamed away first, then
/// removed); a file published for the rule before goes. Returns the
/// directory's size and mtime for the ledger.
fn publish_partitioned(
    store: &crate::store::Store,
    engine: &crate::engine::Engine,
    ctx: &datafusion::prelude::SessionContext,
    rec: &Record,
    cols: &[String],
    out_dir: &std::path::Path,
    rule: &str,
) -> Result<(u64, u128)> {
    let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
        Diag::new(ErrorKind::Store(format!("{what} {}: {e}", p.display())))
    };
    // A reused output is checked here (partition_by is not part of its key).
    let have: Vec<&str> = rec.schema.iter().map(|c| c.name.as_str()).collect();
    relspec_exec::lower::check_partition_by(&have, cols)
        .map_err(|d| d.with_help("nothing was published for this rule; its last good output is kept"))?;
    let pid = std::process::id();
    let stage = out_dir.join(format!(".{rule}.relspec-tmp-{pid}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).map_err(|e| io("cannot create", &stage, e))?;
    let object = store.object_path(&rec.content_hash);
    let parts = engine.block_on(relspec_exec::parquet::write_partitioned(ctx, &object, cols, &stage, &rec.footer))?;
    let mut sidecar = rec.sidecar();
    sidecar["partition_by"] = serde_json::json!(cols);
    sidecar["partitions"] = parts
        .iter()
        .map(|(dir, rows)| serde_json::json!({ "path": format!("{dir}/part-0.parquet"), "rows": rows }))
        .collect();
    let marker = stage.join(PARTITIONED_SIDECAR);
    let text = serde_json::to_vec_pretty(&sidecar).map_err(|e| Diag::new(ErrorKind::Store(e.to_string())))?;
    std::fs::write(&marker, text).map_err(|e| io("cannot write", &marker, e))?;
    let dest = out_dir.join(rule);
    let old = out_dir.join(format!(".{rule}.relspec-tmp-old-{pid}"));
    if dest.exists() {
        std::fs::rename(&dest, &old).map_err(|e| io("cannot move aside", &dest, e))?;
    }
    std::fs::rename(&stage, &dest).map_err(|e| io("cannot publish", &dest, e))?;
    let _ = std::fs::remove_dir_all(&old);
    let file = out_dir.join(format!("{rule}.parquet"));
    let _ = std::fs::remove_file(crate::store::sidecar_path(&file));
    let _ = std::fs::remove_file(&file);
    let meta = std::fs::metadata(&dest).map_err(|e| io("cannot stat", &dest, e))?;
    Ok((meta.len(), crate::store::mtime_ns(&meta)))
}

/// Remove a hive directory relspec published for a rule (only one holding
/// relspec's marker: never a directory of the user's).
fn remove_partitioned(dir: &std::path::Path, ledger: &mut crate::store::Published, rel: &str) -> Result<()> {
    if dir.join(PARTITIONED_SIDECAR).is_file() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| Diag::new(ErrorKind::Store(format!("cannot remove {}: {e}", dir.display()))))?;
    }
    ledger.entries.remove(rel);
    Ok(())
}
