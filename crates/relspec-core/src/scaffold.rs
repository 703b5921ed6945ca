//! `relspec init`: write a small working workspace (the default code-graph
//! pipeline this repository ships) into a new directory.

use crate::error::{Diag, ErrorKind, Result};
use std::path::Path;

/// Files of the scaffold: (relative path, contents).
pub const FILES: &[(&str, &str)] = &[
    ("workspace.toml", include_str!("../../../workspace.toml")),
    ("rules/edges.sql", include_str!("../../../rules/edges.sql")),
    ("rules/stats.toml", include_str!("../../../rules/stats.toml")),
    ("data/files.csv", include_str!("../../../data/files.csv")),
    ("data/cst/defs.csv", include_str!("../../../data/cst/defs.csv")),
    ("data/cst/callsites/lang=python/part-0.csv", include_str!("../../../data/cst/callsites/lang=python/part-0.csv")),
    ("data/cst/callsites/lang=rust/part-0.csv", include_str!("../../../data/cst/callsites/lang=rust/part-0.csv")),
    ("data/scip/occurrences.json", include_str!("../../../data/scip/occurrences.json")),
    (".gitignore", "/out/\n/cache/*\n!/cache/.keep\n"),
    ("cache/.keep", ""),
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
