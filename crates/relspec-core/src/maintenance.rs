//! Cache maintenance: `gc` (drop what no current output uses) and `clean`
//! (remove the cache and the outputs).

use crate::build::{self, BuildOptions};
use crate::error::{Diag, ErrorKind, Result};
use crate::project::Project;
use std::collections::HashSet;
use std::path::PathBuf;

/// What `gc` removed and kept.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct GcReport {
    /// Records removed.
    pub records: usize,
    /// Objects removed.
    pub objects: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Live outputs kept.
    pub live: usize,
    /// Fragment packs removed (none of their source files is current).
    pub packs: usize,
}

/// Remove records and objects that no current rule's output key uses. The
/// live set is the keys a dry-run build computes, so it needs a workspace
/// without static errors.
pub fn gc(p: &mut Project) -> std::result::Result<GcReport, Vec<Diag>> {
    let report = build::build(p, &BuildOptions { dry_run: true, ..Default::default() }, &build::NoProgress)?;
    let live: HashSet<String> = report.rules.iter().filter_map(|r| r.key.clone()).collect();
    let store = p.store().map_err(|e| vec![e])?;
    let _lock = store.lock().map_err(|e| vec![e])?;
    let (records, objects, mut bytes) = store.gc(&live).map_err(|e| vec![e])?;
    // Fragment packs: keep those holding a current source file's facts.
    let spec = p.spec().map_err(|e| vec![e])?;
    let mut keys = HashSet::new();
    for (name, ds) in &spec.datasets {
        let Some(x) = &ds.extract else { continue };
        if let Some(Ok(files)) = p.ws.datasets(&p.db).get(name) {
            keys.extend(relspec_extract::query::live_keys(&p.db, files, x.language.as_deref()));
        }
    }
    let dir = store.dir().join(crate::store::layout::FRAGMENTS);
    let (packs, pack_bytes) = relspec_extract::packs::gc(&dir, &keys)
        .map_err(|e| vec![Diag::new(ErrorKind::Io(format!("{}: {e}", dir.display())))])?;
    bytes += pack_bytes;
    Ok(GcReport { records, objects, bytes, live: live.len(), packs })
}

/// Remove the cache (everything the store's layout names, under its lock)
/// and the output directory. Returns both paths.
pub fn clean(p: &Project) -> Result<(PathBuf, PathBuf)> {
    let spec = p.spec()?;
    let store = p.store()?;
    let lock = store.lock()?;
    store.clean()?;
    drop(lock);
    let out = spec.output_path(&p.root);
    if out.is_dir() {
        std::fs::remove_dir_all(&out).map_err(|e| Diag::new(ErrorKind::Io(format!("{}: {e}", out.display()))))?;
    }
    Ok((spec.cache_path(&p.root), out))
}
