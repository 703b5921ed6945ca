//! `relspec init`: write a small working workspace (the default code-graph
//! pipeline this repository ships) into a new directory.

use crate::error::{Diag, ErrorKind, Result};
use std::path::Path;

/// Files of the scaffold: (relative path, contents). The repository's own
/// `src/` and `crates/` are what its `[sources.code]` indexes; a new workspace
/// gets one sample Rust file there instead.
pub const FILES: &[(&str, &[u8])] = &[
    ("workspace.toml", include_bytes!("../../../workspace.toml")),
    ("rules/edges.sql", include_bytes!("../../../rules/edges.sql")),
    ("rules/stats.toml", include_bytes!("../../../rules/stats.toml")),
    ("rules/code.toml", include_bytes!("../../../rules/code.toml")),
    ("data/files.csv", include_bytes!("../../../data/files.csv")),
    ("data/cst/defs.csv", include_bytes!("../../../data/cst/defs.csv")),
    ("data/cst/callsites/lang=python/part-0.csv", include_bytes!("../../../data/cst/callsites/lang=python/part-0.csv")),
    ("data/cst/callsites/lang=rust/part-0.csv", include_bytes!("../../../data/cst/callsites/lang=rust/part-0.csv")),
    ("data/scip/occurrences.json", include_bytes!("../../../data/scip/occurrences.json")),
    ("data/pyproj/main.py", include_bytes!("../../../data/pyproj/main.py")),
    ("data/pyproj/shapes/__init__.py", include_bytes!("../../../data/pyproj/shapes/__init__.py")),
    ("data/pyproj/shapes/geometry.py", include_bytes!("../../../data/pyproj/shapes/geometry.py")),
    ("data/pyproj/shapes/registry.py", include_bytes!("../../../data/pyproj/shapes/registry.py")),
    ("data/pyproj/index.scip", include_bytes!("../../../data/pyproj/index.scip")),
    ("data/pyproj/regenerate.sh", include_bytes!("../../../data/pyproj/regenerate.sh")),
    ("src/lib.rs", include_bytes!("../../../data/sample_lib.rs")),
    (".gitignore", b"/out/\n/cache/*\n!/cache/.keep\n"),
    ("cache/.keep", b""),
];

/// Create `dir` (absent or empty) and write the scaffold into it.
pub fn init(dir: &Path) -> Result<()> {
    let io = |e: std::io::Error, p: &Path| Diag::new(ErrorKind::Io(format!("{}: {e}", p.display())));
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| io(e, dir))?;
        if entries.next().is_some() {
            return Err(Diag::new(ErrorKind::Usage(format!("{} exists and is not empty", dir.display())))
                .with_help("choose a new directory name"));
        }
    }
    for (rel, text) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
        }
        std::fs::write(&p, text).map_err(|e| io(e, &p))?;
    }
    Ok(())
}
