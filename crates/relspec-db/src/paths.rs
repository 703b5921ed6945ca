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
