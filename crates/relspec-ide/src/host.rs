//! The analysis host: one live [`Project`] (one salsa database, as `watch`
//! keeps), fed by the editor's unsaved buffers and by the disk, and the
//! latest analysis of every rule (what `relspec check` computes).
//!
//! Architecture invariant: the host never builds or publishes anything; it
//! plans against schemas only (`analysis::analyze`), so an editor session
//! cannot change `out/` or a cached output. Its only writes are the analysis
//! and parsed-rule memos that `check` writes too (keyed by content, so an
//! unsaved buffer's entry is never served for other text).

use relspec_core::analysis::{self, Analysis};
use relspec_core::error::{Diag, ErrorKind};
use relspec_core::lineage::RuleLineage;
use relspec_core::project::{self, DatasetInfo, Project};
use relspec_core::workspace::WorkspaceSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Diagnostics of one analysis, by file (relative to the root).
#[derive(Debug, Default)]
pub struct Checked {
    /// File -> its diagnostics (files without any are absent).
    pub files: BTreeMap<PathBuf, Vec<Diag>>,
    /// Rules planned in this analysis (the rest came from the memo).
    pub planned: usize,
    /// Rules served by the analysis memo.
    pub memoized: usize,
    /// Wall time of sync + analysis, ms.
    pub ms: f64,
}

/// A live workspace for an editor.
pub struct Ide {
    p: Project,
    manifest: PathBuf,
    /// Rule -> its latest successful analysis.
    pub(crate) rules: BTreeMap<String, Analysis>,
    /// Errors of the latest analysis.
    pub(crate) errors: Vec<Diag>,
    /// Dataset descriptions, valid for `datasets_key`.
    datasets: Option<Arc<BTreeMap<String, DatasetInfo>>>,
    datasets_key: BTreeMap<String, String>,
    /// Files held as unsaved buffers.
    buffers: BTreeSet<PathBuf>,
    /// The analysis memo, kept in memory between keystrokes.
    analyzer: analysis::Analyzer,
}

impl Ide {
    /// Open the workspace at `manifest` (a `workspace.toml`).
    pub fn open(manifest: &Path, params: &[(String, String)]) -> Result<Ide, Diag> {
        let manifest = std::path::absolute(manifest).unwrap_or_else(|_| manifest.to_path_buf());
        let p = Project::open_with_params(&manifest, params)?;
        Ok(Ide {
            p,
            manifest,
            rules: BTreeMap::new(),
            errors: Vec::new(),
            datasets: None,
            datasets_key: BTreeMap::new(),
            buffers: BTreeSet::new(),
            analyzer: analysis::Analyzer::default(),
        })
    }

    /// The workspace root (absolute).
    pub fn root(&self) -> &Path {
        &self.p.root
    }

    /// The manifest, relative to the root.
    pub fn manifest_rel(&self) -> PathBuf {
        PathBuf::from(self.manifest.file_name().unwrap_or_default())
    }

    /// The project (database, loader, store).
    pub fn project(&mut self) -> &mut Project {
        &mut self.p
    }

    /// The project, read-only.
    pub fn project_shared(&self) -> &Project {
        &self.p
    }

    /// `path` relative to the root, if it is inside it.
    pub fn rel(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.p.root).ok().map(Path::to_path_buf)
    }

    /// Read `rel` from an editor buffer (`Some`) or the disk again (`None`).
    pub fn set_buffer(&mut self, rel: &Path, text: Option<String>) -> Result<(), Diag> {
        match &text {
            Some(_) => self.buffers.insert(rel.to_path_buf()),
            None => self.buffers.remove(rel),
        };
        self.p.set_buffer(rel, text)
    }

    /// Whether `rel` is held as an unsaved buffer.
    pub fn has_buffer(&self, rel: &Path) -> bool {
        self.buffers.contains(rel)
    }

    /// Files changed on disk (absolute or relative paths): sync what they affect.
    pub fn sync_disk(&mut self, paths: &[PathBuf]) -> Result<(), Diag> {
        self.p.sync_paths(paths)
    }

    /// The text relspec holds for workspace file `rel` (buffer or disk).
    pub fn text(&self, rel: &Path) -> Option<String> {
        self.p.file_text(rel)
    }

    /// The parsed manifest, if it parses.
    pub fn spec(&self) -> Option<Arc<WorkspaceSpec>> {
        self.p.spec().ok()
    }

    /// Analyze every rule (memoized per rule by its check key, as `check`)
    /// and group the diagnostics by file.
    pub fn check(&mut self) -> Checked {
        let t0 = Instant::now();
        let set = match self.p.refresh().and_then(|_| self.analyzer.analyze(&mut self.p, &[])) {
            Ok(set) => set,
            Err(e) => analysis::AnalysisSet { errors: vec![e], ..Default::default() },
        };
        self.rules = set.rules;
        self.errors = set.errors.into_iter().map(|d| self.place(d)).collect();
        let mut files: BTreeMap<PathBuf, Vec<Diag>> = BTreeMap::new();
        for d in self.errors.iter().cloned() {
            let file = d.location.as_ref().map(|l| l.file.clone()).unwrap_or_else(|| self.manifest_rel());
            files.entry(file).or_default().push(d);
        }
        Checked { files, planned: set.planned, memoized: set.memoized, ms: t0.elapsed().as_secs_f64() * 1e3 }
    }

    /// Give a diagnostic without a location the place of its rule or dataset
    /// (or the manifest), with a path relative to the root.
    fn place(&self, mut d: Diag) -> Diag {
        if let Some(loc) = &mut d.location {
            if let Ok(rel) = loc.file.strip_prefix(&self.p.root) {
                loc.file = rel.to_path_buf();
            }
            // A span that ends inside a name (`c.callsite_idd` located by
            // its column's length) covers the whole name.
            if let (Some((s, l)), Some(text)) = (loc.span, self.text(&loc.file)) {
                let end = (s + l).min(text.len());
                let more: usize =
                    text[end..].chars().take_while(|c| crate::text::is_name_char(*c)).map(char::len_utf8).sum();
                let inside = text[..end].chars().next_back().is_some_and(crate::text::is_name_char);
                if inside && more > 0 {
                    loc.span = Some((s, end + more - s));
                }
            }
            return d;
        }
        let spec = self.spec();
        let dataset = match &d.kind {
            ErrorKind::MissingData { dataset, .. } | ErrorKind::DatasetRead { dataset, .. } => Some(dataset.clone()),
            _ => None,
        };
        if let Some(ds) = dataset.and_then(|n| spec.as_ref()?.datasets.get(&n).cloned()) {
            return d.at(&ds.file, ds.span.map(|(s, l)| (s, first_line_len(&self.text(&ds.file), s, l))));
        }
        if let Some(decl) = d.rule.as_deref().and_then(|r| self.p.decl(r)).cloned() {
            let o = &decl.origin;
            return d.at(&o.file, o.span.map(|(s, l)| (s, first_line_len(&self.text(&o.file), s, l))));
        }
        let m = self.manifest_rel();
        d.at(m, None)
    }

    /// Rule -> lineage of every analyzed rule.
    pub fn lineages(&self) -> BTreeMap<String, RuleLineage> {
        self.rules.iter().map(|(k, a)| (k.clone(), a.lineage.clone())).collect()
    }

    /// Every dataset's description (schema from the registry), recomputed
    /// only when a dataset's fingerprint changed.
    pub fn datasets(&mut self) -> Arc<BTreeMap<String, DatasetInfo>> {
        let key: BTreeMap<String, String> = relspec_core::db::dataset_fingerprints(&self.p.db, self.p.ws)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect();
        if let Some(d) = self.datasets.as_ref().filter(|_| self.datasets_key == key) {
            return d.clone();
        }
        let infos = match project::dataset_infos_partial(&mut self.p) {
            Ok((infos, _)) => infos.into_iter().map(|i| (i.name.clone(), i)).collect(),
            Err(_) => BTreeMap::new(),
        };
        let d = Arc::new(infos);
        self.datasets = Some(d.clone());
        self.datasets_key = key;
        d
    }

    /// Columns (name, type, nullable) of a dataset or an analyzed rule.
    pub fn columns_of(&mut self, table: &str) -> Option<Vec<(String, String, bool)>> {
        if let Some(a) = self.rules.get(table) {
            return Some(a.lineage.columns.iter().map(|c| (c.name.clone(), c.data_type.clone(), c.nullable)).collect());
        }
        let ds = self.datasets();
        ds.get(table).map(|d| d.schema.iter().map(|c| (c.name.clone(), c.data_type.clone(), c.nullable)).collect())
    }
}

/// Length of the first line of a span (a whole rule's span is many lines;
/// an editor underlines only its first).
fn first_line_len(text: &Option<String>, start: usize, len: usize) -> usize {
    let Some(t) = text else { return len };
    let end = (start + len).min(t.len());
    t.get(start..end).and_then(|s| s.find('\n')).unwrap_or(len).max(1)
}
