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
use crate::error::{Diag, Result};
use crate::project::Project;
use crate::store::Record;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// What the scheduler produced (reports and errors are completed here).
pub(crate) struct Outcome<'a> {
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
) -> Result<()> {
    let (store, spec) = (p.store()?, p.spec()?);
    let Outcome { records, last, last_dirty, artifacts, reports, errors } = outcome;
    let Published { mut ledger, on_disk, staging } = now;
    let out_dir = spec.output_path(&p.root);
    for f in staging {
        let _ = std::fs::remove_file(f);
    }
    // Only the published files that no longer match what the ledger says was
    // published (content hash here, size and mtime in `prefetch`) are (re)written.
    let prefix = spec.output_dir.trim_end_matches('/');
    let stale: Vec<(&String, &Record)> = targets
        .iter()
        .filter_map(|t| records.get(t).map(|rec| (t, rec)))
        .filter(|(t, rec)| on_disk.get(*t) != Some(&rec.content_hash))
        .collect();
    let ledger_dirty = !stale.is_empty();
    for (t, rec) in &stale {
        let rel = format!("{prefix}/{t}.parquet");
        let dest = out_dir.join(format!("{t}.parquet"));
        // A record from the last-built fast path carries no provenance; the
        // sidecar is written from the full record in the store.
        let full = if rec.parts.is_none() { store.lookup(&rec.key) } else { None };
        match store.publish(full.as_ref().unwrap_or(rec), &dest, &mut ledger, &rel) {
            Ok(()) => {
                if let Some(r) = reports.get_mut(*t) {
                    r.published = true;
                }
            }
            Err(e) => errors.push(e.in_rule((*t).clone())),
        }
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "published");
    if ledger_dirty {
        store.save_published(&ledger)?;
    }
    p.db.summaries().save(store)?;
    if last_dirty {
        store.write_json(&store.dir().join(crate::store::layout::LAST_BUILT), last)?;
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "side caches saved");
    let ran = reports.values().any(|r| matches!(r.status, Status::Built | Status::Failed));
    if ran {
        let run = bundle_of::run_bundle(p, order, reports, artifacts, t0.elapsed().as_secs_f64() * 1000.0);
        crate::bundle::write_run(store, &run)?;
    }
    Ok(())
}
