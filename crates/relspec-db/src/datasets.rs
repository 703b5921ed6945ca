//! Dataset file listing: the one place a dataset's declared location becomes
//! file paths (for fingerprints here, and for DataFusion's listing tables in
//! the exec layer, from the same [`location_kind`]).

use crate::paths::{hidden, rel_path};
use relspec_spec::error::{Diag, ErrorKind, Result};
use relspec_spec::key::KeyHasher;
use relspec_spec::workspace::DatasetSpec;
use std::path::Path;

/// Whether a dataset location is on object storage (`s3://`, `gs://`,
/// `az://`, `abfs[s]://`): listed through the workspace's [`RemoteLister`],
/// fingerprinted by the listing's ETags and sizes, read by DataFusion through
/// the same store.
pub fn is_remote(path: &str) -> bool {
    path.split_once("://").is_some_and(|(scheme, _)| relspec_spec::workspace::DATASET_SCHEMES.contains(&scheme))
}

/// Lists a dataset on object storage: `(URL of each file, its version tag)`,
/// sorted by URL; the tag (ETag and size) stands for the file's content hash.
#[derive(Clone)]
pub struct RemoteLister(pub std::sync::Arc<ListFn>);

/// The function behind a [`RemoteLister`].
pub type ListFn = dyn Fn(&DatasetSpec) -> std::result::Result<Vec<(String, String)>, String> + Send + Sync;

impl std::fmt::Debug for RemoteLister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteLister")
    }
}

/// How a dataset's location is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    /// One file.
    File,
    /// Every file with the format's extension under a directory (recursively).
    Dir,
    /// Every file matching a glob.
    Glob,
}

/// A dataset's location as declared: the one place that decides whether it
/// is a glob, a directory or a file, and which directory holds its files.
#[derive(Debug, Clone, Copy)]
pub struct DatasetLocation<'a> {
    path: &'a str,
}

impl<'a> DatasetLocation<'a> {
    /// The location `path` (relative to the workspace root, or absolute).
    pub fn new(path: &'a str) -> Self {
        DatasetLocation { path }
    }

    /// Whether it is a glob.
    pub fn is_glob(&self) -> bool {
        crate::paths::is_glob(self.path)
    }

    /// File, directory or glob (a directory is one that exists under `root`;
    /// on object storage, a location ending in `/`).
    pub fn kind(&self, root: &Path) -> LocationKind {
        if is_remote(self.path) {
            return if self.path.ends_with('/') { LocationKind::Dir } else { LocationKind::File };
        }
        if self.is_glob() {
            LocationKind::Glob
        } else if root.join(self.path).is_dir() {
            LocationKind::Dir
        } else {
            LocationKind::File
        }
    }

    /// The literal prefix before any glob character, with `/`: every file of
    /// the dataset is under it.
    pub fn literal_prefix(&self) -> &'a str {
        crate::paths::literal_prefix(self.path)
    }

    /// The directory to watch for it: the location if it is a directory,
    /// else the directory holding its literal prefix.
    pub fn watch_dir(&self, root: &Path) -> std::path::PathBuf {
        let abs = root.join(self.literal_prefix());
        if abs.is_dir() { abs } else { abs.parent().map(Path::to_path_buf).unwrap_or(abs) }
    }
}

/// Classify a location as written in `workspace.toml`.
pub fn location_kind(root: &Path, path: &str) -> LocationKind {
    DatasetLocation::new(path).kind(root)
}

/// What decides the listing of [`resolve_files`] for `spec`, besides its
/// files: the directories it walks (and, for a source, its ignore files).
pub fn listing_paths(root: &Path, spec: &DatasetSpec) -> Vec<std::path::PathBuf> {
    if is_remote(&spec.path) {
        return vec![];
    }
    if spec.extract.is_some() {
        return crate::paths::source_listing_paths(root, &spec.path);
    }
    match location_kind(root, &spec.path) {
        // The file itself is stamped with the others; its directory holds nothing else we read.
        LocationKind::File => vec![],
        LocationKind::Dir => crate::paths::walk_dirs(&root.join(&spec.path)),
        LocationKind::Glob => crate::paths::glob_dirs(root, &spec.path),
    }
}

/// List the files of a dataset, as sorted paths relative to `root` (with `/`).
pub fn resolve_files(root: &Path, spec: &DatasetSpec) -> Result<Vec<String>> {
    let missing = || {
        Diag::new(ErrorKind::MissingData { dataset: spec.name.clone(), location: spec.path.clone() })
            .at(&spec.file, spec.span)
            .with_help("check `path` (relative to the workspace root), or create the file")
    };
    let rel = |p: &Path| rel_path(root, p);
    let mut files = Vec::new();
    if let Some(x) = &spec.extract {
        let scip = spec.format == relspec_spec::workspace::DataFormat::Scip;
        let keep = |p: &str| {
            if scip {
                p.ends_with(".scip")
            } else {
                relspec_spec::workspace::source_language(p, x.language.as_deref()).is_some()
            }
        };
        files = crate::paths::source_files(root, &spec.path, keep).map_err(|e| {
            Diag::new(ErrorKind::Invalid(format!("source `{}`: bad location: {e}", x.source))).at(&spec.file, spec.span)
        })?;
        if files.is_empty() {
            return Err(missing());
        }
        return Ok(files);
    }
    match location_kind(root, &spec.path) {
        LocationKind::File => {
            let p = root.join(&spec.path);
            if !p.is_file() {
                return Err(missing());
            }
            files.push(rel(&p));
        }
        LocationKind::Dir => {
            let dir = root.join(&spec.path);
            let ext = spec.format.extension();
            for e in walkdir::WalkDir::new(&dir)
                .min_depth(1)
                .into_iter()
                .filter_entry(|e| !hidden(&e.file_name().to_string_lossy()))
            {
                let e = e.map_err(|e| Diag::new(ErrorKind::Io(e.to_string())))?;
                if e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(ext) {
                    files.push(rel(e.path()));
                }
            }
        }
        LocationKind::Glob => {
            files = crate::paths::glob_files(root, &spec.path).map_err(|e| {
                Diag::new(ErrorKind::Invalid(format!("dataset `{}`: bad glob: {e}", spec.name)))
                    .at(&spec.file, spec.span)
            })?;
        }
    }
    if files.is_empty() {
        return Err(missing());
    }
    files.sort();
    Ok(files)
}

/// A dataset's fingerprint: its files' relative paths and content hashes, its
/// format, scan options and schema hint.
///
/// Scan options and the schema hint enter as their serde JSON (the names
/// `workspace.toml` uses, fixed by serde attributes, in declaration order).
pub fn fingerprint(spec: &DatasetSpec, files: &[(String, String)]) -> String {
    fingerprint_of(spec, files.iter().map(|(p, c)| (p.as_str(), c.as_str())))
}

/// [`fingerprint`] over borrowed `(path, content hash)` pairs, in order.
pub fn fingerprint_of<'a>(spec: &DatasetSpec, files: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> String {
    let scan = serde_json::to_string(&spec.scan).unwrap_or_default();
    let schema = serde_json::to_string(&spec.schema).unwrap_or_default();
    let mut h = KeyHasher::new("relspec/dataset/v1");
    h.field("format", spec.format.extension()).field("scan", &scan).field("schema", &schema);
    if let Some(x) = &spec.extract {
        // A source's table: which table, how its files are parsed.
        h.field("extract", &serde_json::to_string(x).unwrap_or_default())
            .field("extractor", relspec_spec::workspace::EXTRACTOR_VERSION);
    }
    h.map("files", files).finish()
}

/// Separates the values of a multi-column partition id.
pub const PARTITION_ID_SEP: char = '\u{1f}';

/// The partition a dataset file belongs to: its path for a source's table,
/// the values of the hive columns in its path (`lang=python/...` ->
/// `python`; several columns joined by [`PARTITION_ID_SEP`]) for a hive
/// dataset, `None` for a plain dataset. The id equals the partition key
/// columns' values as text, which is how rows are matched to it.
pub fn partition_id(spec: &DatasetSpec, path: &str) -> Option<String> {
    if spec.extract.is_some() {
        return Some(path.to_string());
    }
    if spec.scan.partition_cols.is_empty() {
        return None;
    }
    let values: Vec<String> = spec
        .scan
        .partition_cols
        .iter()
        .map(|(col, _)| {
            let raw = path
                .split('/')
                .find_map(|seg| seg.strip_prefix(col.as_str()).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("");
            percent_decoded(raw)
        })
        .collect();
    Some(values.join(&PARTITION_ID_SEP.to_string()))
}

/// A hive directory value as DataFusion reads it: `%XX` escapes decoded
/// (`c%2B%2B` -> `c++`), the raw text when that is not UTF-8.
fn percent_decoded(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_string())
}

/// Each partition of a dataset and its fingerprint (the dataset's format,
/// scan options and schema, and its files' paths and content hashes), by
/// partition id. Empty for a plain dataset.
pub fn partitions(spec: &DatasetSpec, files: &[(String, String)]) -> std::collections::BTreeMap<String, String> {
    partitions_memo(spec, files.iter().map(|(p, c)| (p.as_str(), c.as_str())), &mut PartitionMemo::default())
}

/// Fingerprints of one-file partitions from earlier calls, by file path:
/// a dataset of many files recomputes only its changed files' (a resident
/// process keeps one per dataset).
#[derive(Debug, Default)]
pub struct PartitionMemo {
    base: String,
    files: std::collections::HashMap<String, (String, String)>,
    /// A source's last result (one file a partition, by path): updated in
    /// place for the files whose hashes moved.
    last: Option<std::collections::BTreeMap<String, String>>,
}

/// One partition's fingerprint: the dataset's base and its files.
fn partition_fingerprint(base: &str, files: &[(&str, &str)]) -> String {
    KeyHasher::new("relspec/partition/v1").field("dataset", base).map("files", files.iter().copied()).finish()
}

/// [`partitions`] over borrowed `(path, content hash)` pairs, reusing and
/// updating `memo`. For a source (a partition per file), a call after the
/// first looks each file up and rehashes only the changed ones; a removed
/// file means a full pass.
pub fn partitions_memo<'a>(
    spec: &DatasetSpec,
    files: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    memo: &mut PartitionMemo,
) -> std::collections::BTreeMap<String, String> {
    let base = fingerprint(spec, &[]);
    if memo.base != base {
        *memo = PartitionMemo { base: base.clone(), ..Default::default() };
    }
    if spec.extract.is_some()
        && let Some(last) = memo.last.as_mut()
    {
        let mut seen = 0;
        for (p, c) in files.clone() {
            seen += 1;
            match memo.files.get_mut(p) {
                Some((hash, _)) if hash == c => {}
                entry => {
                    let fp = partition_fingerprint(&base, &[(p, c)]);
                    match entry {
                        Some(e) => *e = (c.to_string(), fp.clone()),
                        None => drop(memo.files.insert(p.to_string(), (c.to_string(), fp.clone()))),
                    }
                    last.insert(p.to_string(), fp);
                }
            }
        }
        if seen == last.len() {
            return last.clone();
        }
    }
    let mut groups: std::collections::BTreeMap<String, Vec<(&str, &str)>> = Default::default();
    for (p, c) in files {
        if let Some(id) = partition_id(spec, p) {
            groups.entry(id).or_default().push((p, c));
        }
    }
    if memo.files.len() > 2 * groups.len() + 64 {
        *memo = PartitionMemo { base: base.clone(), ..Default::default() };
    }
    let compute = |fs: &[(&str, &str)]| partition_fingerprint(&base, fs);
    let out: std::collections::BTreeMap<String, String> = groups
        .into_iter()
        .map(|(id, fs)| {
            let fp = match fs.as_slice() {
                [(p, c)] => match memo.files.get(*p) {
                    Some((hash, fp)) if hash == c => fp.clone(),
                    _ => {
                        let fp = compute(&fs);
                        memo.files.insert(p.to_string(), (c.to_string(), fp.clone()));
                        fp
                    }
                },
                _ => compute(&fs),
            };
            (id, fp)
        })
        .collect();
    memo.last = spec.extract.is_some().then(|| out.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::percent_decoded;

    #[test]
    fn a_sources_partitions_updated_in_place_equal_a_fresh_computation() {
        use relspec_spec::workspace::{DataFormat, DatasetSpec, Extract, SourceTable};
        let spec = DatasetSpec {
            name: "code_defs".into(),
            path: "src/**/*.py".into(),
            format: DataFormat::Parquet,
            scan: Default::default(),
            schema: None,
            extract: Some(Extract { source: "code".into(), table: SourceTable::Defs, language: None }),
            file: "workspace.toml".into(),
            span: None,
        };
        let mut memo = super::PartitionMemo::default();
        let mut files: Vec<(String, String)> = (0..50).map(|i| (format!("src/m{i:02}.py"), format!("h{i}"))).collect();
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for step in 0..120 {
            match next() % 4 {
                0 | 1 => {
                    let i = next() % files.len();
                    files[i].1 = format!("h{i}-{step}");
                }
                2 => files.push((format!("src/n{step:03}.py"), format!("n{step}"))),
                _ if files.len() > 1 => drop(files.remove(next() % files.len())),
                _ => {}
            }
            files.sort();
            let pairs = files.iter().map(|(p, c)| (p.as_str(), c.as_str()));
            let got = super::partitions_memo(&spec, pairs, &mut memo);
            assert_eq!(got, super::partitions(&spec, &files), "step {step}");
        }
    }

    #[test]
    fn hive_values_are_percent_decoded_as_datafusion_reads_them() {
        assert_eq!(percent_decoded("c%2B%2B"), "c++");
        assert_eq!(percent_decoded("a b"), "a b");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("x%zz"), "x%zz");
        assert_eq!(percent_decoded("%C3%A9t%C3%A9"), "été");
        assert_eq!(percent_decoded("%FF"), "%FF", "not UTF-8: the raw text");
        assert_eq!(percent_decoded("__HIVE_DEFAULT_PARTITION__"), "__HIVE_DEFAULT_PARTITION__");
    }
}
