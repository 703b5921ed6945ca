//! Small path helpers shared by the loader and the registry.

use std::path::Path;

/// `p` relative to `root`, with `/` separators.
pub fn rel_path(root: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(root).unwrap_or(p);
    // Fast path: a plain UTF-8 path already uses `/` (Unix) and has no `.` parts.
    if std::path::MAIN_SEPARATOR == '/'
        && let Some(s) = rel.to_str()
        && !s.starts_with('/')
        && !s.starts_with("./")
        && !s.contains("/./")
        && !s.contains("//")
        && !s.ends_with('/')
    {
        return s.to_string();
    }
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The characters that make a path a glob (`*`, `?`, `[...]`, `{a,b}`).
pub const GLOB_CHARS: [char; 4] = ['*', '?', '[', '{'];

/// Whether `pattern` is a glob rather than a literal path.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(GLOB_CHARS)
}

/// The literal part of a pattern before its first glob character (all of it
/// when it is not a glob), without a leading `./`.
pub fn literal_prefix(pattern: &str) -> &str {
    let pattern = pattern.trim_start_matches("./");
    &pattern[..pattern.find(GLOB_CHARS).unwrap_or(pattern.len())]
}

/// Whether a file or directory name is hidden or private (`.x`, `_x`).
pub fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Files under `root` matching `pattern` (a glob relative to `root`; `*`
/// matches across `/`), as sorted relative paths. Hidden entries are skipped.
pub fn glob_files(root: &Path, pattern: &str) -> Result<Vec<String>, String> {
    let pattern = pattern.trim_start_matches("./");
    let (glob, base) = (glob_matcher(pattern)?, glob_base(root, pattern));
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(&base)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !hidden(&e.file_name().to_string_lossy()))
    {
        let Ok(e) = e else { continue };
        if e.file_type().is_file() {
            let r = rel_path(root, e.path());
            if glob.is_match(&r) {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A glob relative to the root (`*` matches across `/`).
fn glob_matcher(pattern: &str) -> Result<globset::GlobMatcher, String> {
    Ok(globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map_err(|e| e.to_string())?
        .compile_matcher())
}

/// The directory every match of `pattern` is under (its literal directory part).
fn glob_base(root: &Path, pattern: &str) -> std::path::PathBuf {
    match literal_prefix(pattern).rfind('/') {
        Some(i) => root.join(&pattern[..i]),
        None => root.to_path_buf(),
    }
}

/// Source files under `root` for a `[sources]` location (a glob, a
/// directory or a file), as sorted relative paths. `.gitignore` files are
/// honored (inside a git repository or not) and dot-entries skipped; `keep`
/// filters by path (the source's languages).
pub fn source_files(root: &Path, location: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
    let location = location.trim_start_matches("./");
    let glob = if is_glob(location) { Some(glob_matcher(location)?) } else { None };
    let base = if glob.is_some() { glob_base(root, location) } else { root.join(location) };
    if glob.is_none() && base.is_file() {
        return Ok(vec![rel_path(root, &base)]);
    }
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(&base).require_git(false).hidden(true).sort_by_file_path(Ord::cmp).build();
    for e in walker {
        let Ok(e) = e else { continue };
        if e.file_type().is_some_and(|t| t.is_file()) {
            let r = rel_path(root, e.path());
            if glob.as_ref().is_none_or(|g| g.is_match(&r)) && keep(&r) {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The directories whose listings decide what [`glob_files`] returns for
/// `pattern`: its base and every directory under it that is not hidden.
/// A file added or removed under the base changes one of their mtimes.
pub fn glob_dirs(root: &Path, pattern: &str) -> Vec<std::path::PathBuf> {
    walk_dirs(&glob_base(root, pattern.trim_start_matches("./")))
}

/// What decides the listing of [`source_files`] for `location`: the
/// directories it walks, and the ignore files that can hide entries (in
/// those directories and above them, and git's global excludes). Paths that
/// do not exist are included too: creating one changes the listing.
pub fn source_listing_paths(root: &Path, location: &str) -> Vec<std::path::PathBuf> {
    let location = location.trim_start_matches("./");
    let base = if is_glob(location) { glob_base(root, location) } else { root.join(location) };
    if base.is_file() {
        return vec![];
    }
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(&base).require_git(false).hidden(true).build();
    for e in walker.flatten() {
        if e.file_type().is_some_and(|t| t.is_dir()) {
            let d = e.path().to_path_buf();
            out.push(d.join(".gitignore"));
            out.push(d.join(".ignore"));
            out.push(d);
        }
    }
    let mut up = base.parent();
    while let Some(d) = up {
        for name in [".gitignore", ".ignore", ".git/info/exclude"] {
            out.push(d.join(name));
        }
        up = d.parent();
    }
    if let Some(home) = std::env::var_os("HOME").map(std::path::PathBuf::from) {
        out.push(home.join(".gitconfig"));
        let config = std::env::var_os("XDG_CONFIG_HOME").map(std::path::PathBuf::from).unwrap_or(home.join(".config"));
        out.push(config.join("git/ignore"));
    }
    out
}

/// `dir` and every directory under it that is not hidden (as the walks of
/// [`glob_files`] and directory datasets skip them).
pub fn walk_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !hidden(&e.file_name().to_string_lossy()))
        .flatten()
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::rel_path;
    use std::path::Path;

    /// The fast path agrees with component-wise joining.
    #[test]
    fn rel_path_normalizes_like_components() {
        let root = Path::new("/w");
        for (p, want) in [
            ("/w/rules/a.sql", "rules/a.sql"),
            ("/w/rules//a.sql", "rules/a.sql"),
            ("/w/./rules/./a.sql", "rules/a.sql"),
            ("/w/rules/", "rules"),
            ("/w", ""),
            ("rules/a.sql", "rules/a.sql"),
            ("./rules/a.sql", "./rules/a.sql"),
        ] {
            assert_eq!(rel_path(root, Path::new(p)), want, "{p}");
        }
    }
}
