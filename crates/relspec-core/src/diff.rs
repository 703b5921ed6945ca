//! Semantic diff of two versions of a workspace: rules added, removed or
//! changed (by signature), each change classified breaking or not from the
//! output schemas and column lineage, and the downstream rules and columns
//! the change reaches.
//!
//! Architecture invariant: a rule whose signature is unchanged is unchanged
//! (formatting, comments, key order and keyword case never show); impact is
//! propagated along the *head* version's column lineage, so a consumer that
//! reads none of the changed columns is not affected.

use crate::analysis::Analysis;
use crate::lineage::How;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What changed about one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    /// A new output column.
    ColumnAdded {
        /// Column.
        column: String,
        /// Its type.
        data_type: String,
    },
    /// An output column is gone.
    ColumnRemoved {
        /// Column.
        column: String,
    },
    /// An output column has a new name (same values).
    ColumnRenamed {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// An output column has a new type.
    ColumnRetyped {
        /// Column.
        column: String,
        /// Old type.
        from: String,
        /// New type.
        to: String,
    },
    /// An output column's values are computed differently.
    ColumnChanged {
        /// Column.
        column: String,
    },
    /// Which rows come out changed (a filter, join, grouping or limit).
    RowsChanged,
    /// The definition changed but no output column or row set did.
    Equivalent,
}

impl Detail {
    /// Whether this change can break a consumer.
    pub fn breaking(&self) -> bool {
        !matches!(self, Detail::ColumnAdded { .. } | Detail::Equivalent)
    }
}

/// Kind of change of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the head version.
    Added,
    /// Only in the base version.
    Removed,
    /// In both, with different signatures.
    Changed,
}

/// One changed rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleChange {
    /// Rule name.
    pub rule: String,
    /// Added, removed or changed.
    pub change: Change,
    /// Whether a consumer may break.
    pub breaking: bool,
    /// What changed.
    pub details: Vec<Detail>,
}

/// A rule reached by a change upstream of it.
#[derive(Debug, Clone, Serialize)]
pub struct Affected {
    /// Rule name.
    pub rule: String,
    /// Its affected output columns (all of them when its rows are affected).
    pub columns: Vec<String>,
    /// Whether its rows are affected (a key it filters, joins or orders by changed).
    pub rows: bool,
    /// Upstream `table.column`s (or `table` for its rows) it reads that changed.
    pub because: Vec<String>,
}

/// The diff of two versions.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Changed, added and removed rules, by name.
    pub rules: Vec<RuleChange>,
    /// Downstream rules the changes reach (not themselves changed), in dependency order.
    pub affected: Vec<Affected>,
    /// Whether any change is breaking.
    pub breaking: bool,
}

/// One version of a workspace, analyzed.
pub struct Version<'a> {
    /// Rule -> signature.
    pub signatures: &'a BTreeMap<String, String>,
    /// Rule -> analysis (rules that planned).
    pub analyses: &'a BTreeMap<String, Analysis>,
}

/// What changed in a table, for propagation.
#[derive(Debug, Clone, Default)]
struct Reach {
    rows: bool,
    columns: BTreeSet<String>,
}

/// Compare `base` with `head`; `order` is the head version's dependency order.
pub fn diff(base: &Version, head: &Version, order: &[String]) -> DiffReport {
    let mut rules = Vec::new();
    let mut reach: BTreeMap<String, Reach> = BTreeMap::new();
    let names: BTreeSet<&String> = base.signatures.keys().chain(head.signatures.keys()).collect();
    for name in names {
        match (base.signatures.get(name), head.signatures.get(name)) {
            (None, Some(_)) => {
                rules.push(RuleChange { rule: name.clone(), change: Change::Added, breaking: false, details: vec![] })
            }
            (Some(_), None) => {
                reach.insert(name.clone(), Reach { rows: true, ..Default::default() });
                rules.push(RuleChange { rule: name.clone(), change: Change::Removed, breaking: true, details: vec![] });
            }
            (Some(a), Some(b)) if a != b => {
                let details = match (base.analyses.get(name), head.analyses.get(name)) {
                    (Some(x), Some(y)) => compare(x, y),
                    _ => vec![Detail::RowsChanged],
                };
                let mut r = Reach::default();
                for d in &details {
                    match d {
                        Detail::RowsChanged => r.rows = true,
                        Detail::ColumnRemoved { column }
                        | Detail::ColumnRetyped { column, .. }
                        | Detail::ColumnChanged { column } => {
                            r.columns.insert(column.clone());
                        }
                        Detail::ColumnRenamed { from, .. } => {
                            r.columns.insert(from.clone());
                        }
                        _ => {}
                    }
                }
                if r.rows || !r.columns.is_empty() {
                    reach.insert(name.clone(), r);
                }
                rules.push(RuleChange {
                    rule: name.clone(),
                    change: Change::Changed,
                    breaking: details.iter().any(Detail::breaking),
                    details,
                });
            }
            _ => {}
        }
    }

    // Propagate along the head version's lineage.
    let changed: BTreeSet<String> = rules.iter().map(|r| r.rule.clone()).collect();
    let mut affected = Vec::new();
    for rule in order {
        let Some(a) = head.analyses.get(rule) else { continue };
        let hit = |t: &str, c: &str| reach.get(t).is_some_and(|r| r.rows || r.columns.contains(c));
        let mut because = BTreeSet::new();
        let mut rows = false;
        for k in &a.lineage.keys {
            if hit(&k.table, &k.column) {
                rows = true;
                because.insert(format!("{}.{} ({})", k.table, k.column, how(k.how)));
            }
        }
        let mut cols = BTreeSet::new();
        for c in &a.lineage.columns {
            for s in &c.sources {
                if hit(&s.table, &s.column) {
                    cols.insert(c.name.clone());
                    because.insert(format!("{}.{} ({})", s.table, s.column, how(s.how)));
                }
            }
        }
        if rows {
            cols = a.lineage.columns.iter().map(|c| c.name.clone()).collect();
        }
        if cols.is_empty() && !rows {
            continue;
        }
        let entry = reach.entry(rule.clone()).or_default();
        entry.rows |= rows;
        entry.columns.extend(cols.iter().cloned());
        if !changed.contains(rule) {
            affected.push(Affected {
                rule: rule.clone(),
                columns: cols.into_iter().collect(),
                rows,
                because: because.into_iter().collect(),
            });
        }
    }
    let breaking = rules.iter().any(|r| r.breaking);
    DiffReport { rules, affected, breaking }
}

fn how(h: How) -> &'static str {
    crate::graph::how_name(h)
}

/// Classify the change of one rule from its two analyses.
fn compare(base: &Analysis, head: &Analysis) -> Vec<Detail> {
    let (b, h) = (&base.lineage, &head.lineage);
    let mut details = Vec::new();
    if b.rows_hash != h.rows_hash {
        details.push(Detail::RowsChanged);
    }
    let removed: Vec<_> = b.columns.iter().filter(|c| h.column(&c.name).is_none()).collect();
    let added: Vec<_> = h.columns.iter().filter(|c| b.column(&c.name).is_none()).collect();
    let mut renamed_to = BTreeSet::new();
    for r in &removed {
        let twin = added
            .iter()
            .find(|a| a.value_hash == r.value_hash && a.data_type == r.data_type && !renamed_to.contains(&a.name));
        match twin {
            Some(a) => {
                renamed_to.insert(a.name.clone());
                details.push(Detail::ColumnRenamed { from: r.name.clone(), to: a.name.clone() });
            }
            None => details.push(Detail::ColumnRemoved { column: r.name.clone() }),
        }
    }
    for a in added.iter().filter(|a| !renamed_to.contains(&a.name)) {
        details.push(Detail::ColumnAdded { column: a.name.clone(), data_type: a.data_type.clone() });
    }
    for bc in &b.columns {
        if let Some(hc) = h.column(&bc.name) {
            if bc.data_type != hc.data_type {
                details.push(Detail::ColumnRetyped {
                    column: bc.name.clone(),
                    from: bc.data_type.clone(),
                    to: hc.data_type.clone(),
                });
            } else if bc.value_hash != hc.value_hash {
                details.push(Detail::ColumnChanged { column: bc.name.clone() });
            }
        }
    }
    if details.is_empty() {
        details.push(Detail::Equivalent);
    }
    details
}

/// Write the workspace as of git revision `git_ref` into `dest` (which must
/// not exist) and return its manifest path. `manifest` is the current
/// manifest; the base is taken from the same directory of the repository.
/// Dataset files the revision does not contain (untracked data) are linked
/// from the current checkout, so both versions plan against the same data.
pub fn checkout_git(
    manifest: &std::path::Path,
    git_ref: &str,
    dest: &std::path::Path,
) -> crate::error::Result<std::path::PathBuf> {
    use crate::error::{Diag, ErrorKind};
    use std::process::{Command, Stdio};
    let root = manifest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let fail = |m: String| Diag::new(ErrorKind::Usage(format!("--base {git_ref}: {m}")));
    let prefix = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--show-prefix"])
        .output()
        .map_err(|e| fail(format!("cannot run git: {e}")))?;
    if !prefix.status.success() {
        return Err(fail(String::from_utf8_lossy(&prefix.stderr).trim().to_string()));
    }
    let prefix = String::from_utf8_lossy(&prefix.stdout).trim().to_string();
    let treeish = if prefix.is_empty() { git_ref.to_string() } else { format!("{git_ref}:{prefix}") };
    std::fs::create_dir_all(dest).map_err(|e| fail(format!("{}: {e}", dest.display())))?;
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", &treeish])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run git: {e}")))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .stdin(archive.stdout.take().expect("piped"))
        .output()
        .map_err(|e| fail(format!("cannot run tar: {e}")))?;
    let arch = archive.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !arch.status.success() {
        return Err(fail(String::from_utf8_lossy(&arch.stderr).trim().to_string()));
    }
    if !tar.status.success() {
        return Err(fail(format!("tar: {}", String::from_utf8_lossy(&tar.stderr).trim())));
    }
    let name = manifest.file_name().unwrap_or_default();
    let base_manifest = dest.join(name);
    let text = std::fs::read_to_string(&base_manifest)
        .map_err(|_| fail(format!("the revision has no {}", std::path::Path::new(&prefix).join(name).display())))?;
    if let Ok(spec) = crate::workspace::parse_manifest(std::path::Path::new(name), &text) {
        for ds in spec.datasets.values() {
            let (here, there) = (root.join(&ds.path), dest.join(&ds.path));
            if here.exists() && !there.exists() && !relspec_db::datasets::DatasetLocation::new(&ds.path).is_glob() {
                if let Some(parent) = there.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let abs = here.canonicalize().unwrap_or(here);
                let _ = std::os::unix::fs::symlink(abs, &there);
            }
        }
    }
    Ok(base_manifest)
}

/// The base version a diff compares against.
#[derive(Debug, Clone)]
pub enum Base {
    /// A git revision of the head workspace's directory.
    Git(String),
    /// A directory (or `workspace.toml`) holding the base version.
    Dir(std::path::PathBuf),
}

/// Why a comparison could not be made.
#[derive(Debug)]
pub enum CompareError {
    /// A version could not be opened, checked out or analyzed.
    Failed(Vec<crate::error::Diag>),
    /// A version (`base` or `head`) does not compile: its errors, each with
    /// the text of its file (for rendering).
    DoesNotCompile {
        /// `base` or `head`.
        which: &'static str,
        /// The errors with their files' text.
        errors: Vec<(crate::error::Diag, Option<String>)>,
    },
}

/// Compare the workspace at `manifest` (the head) with `base`: open both,
/// analyze both, diff their signatures and lineage. A git base is checked out
/// under the cache's `tmp/` and removed afterwards.
pub fn compare_versions(manifest: &std::path::Path, base: &Base) -> Result<DiffReport, CompareError> {
    use crate::project::Project;
    let failed = |e: crate::error::Diag| CompareError::Failed(vec![e]);
    let mut head = Project::open(manifest).map_err(failed)?;
    head.refresh().map_err(failed)?;
    let (base_manifest, scratch) = match base {
        Base::Dir(d) => (if d.is_dir() { d.join("workspace.toml") } else { d.clone() }, None),
        Base::Git(r) => {
            let spec = head.spec().map_err(failed)?;
            let dest = spec
                .cache_path(&head.root)
                .join(crate::store::layout::TMP)
                .join(format!("diff-base-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dest);
            let m = checkout_git(manifest, r, &dest).map_err(failed)?;
            (m, Some(dest))
        }
    };
    let result = (|| {
        let mut basep = Project::open(&base_manifest).map_err(failed)?;
        let analyze = |p: &mut Project, which: &'static str| {
            let set = crate::analysis::analyze(p, &[]).map_err(failed)?;
            if !set.errors.is_empty() {
                let errors = set
                    .errors
                    .into_iter()
                    .map(|e| {
                        let text = e.location.as_ref().and_then(|l| p.file_text(&l.file));
                        (e, text)
                    })
                    .collect();
                return Err(CompareError::DoesNotCompile { which, errors });
            }
            let sigs: BTreeMap<String, String> = p
                .graph()
                .order
                .iter()
                .filter_map(|r| p.job(r).ok().map(|j| (r.clone(), j.parts.signature.clone())))
                .collect();
            Ok((sigs, set.rules))
        };
        let (bs, ba) = analyze(&mut basep, "base")?;
        let (hs, ha) = analyze(&mut head, "head")?;
        let order = head.graph().order.clone();
        let report =
            diff(&Version { signatures: &bs, analyses: &ba }, &Version { signatures: &hs, analyses: &ha }, &order);
        // The process is about to exit: skip tearing down the base database.
        std::mem::forget(basep);
        Ok(report)
    })();
    if let Some(d) = scratch {
        let _ = std::fs::remove_dir_all(d);
    }
    std::mem::forget(head);
    result
}
