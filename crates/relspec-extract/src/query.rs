//! The extraction query: one memoized salsa query per source file (its
//! content hash in, its tables' Arrow batches out), backed by the fragment
//! store ([`crate::packs`]) in the cache.
//!
//! Architecture invariants: a file is parsed only when neither the query's
//! memo (same process) nor a stored fragment (any process) has its facts for
//! this content, language and extractor version; a fragment is keyed by the
//! hash of the bytes that were parsed (never by a stat that may be stale); an unreadable, binary or non-UTF-8 file yields a
//! `files` row saying why it was skipped and nothing else, never an error.

use crate::tables::{FileRow, code_batches};
use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use relspec_db::{DataFile, Db, RelspecDb};
use relspec_spec::workspace::SourceTable;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where sources are read from and fragments kept (set once per project).
#[salsa::input(debug)]
pub struct ExtractRoot {
    /// The workspace root source paths are relative to.
    #[returns(ref)]
    pub root: PathBuf,
    /// The fragment directory of the cache (`None`: keep nothing on disk).
    #[returns(ref)]
    pub fragments: Option<PathBuf>,
}

/// A language name (`python`, `rust`, or `scip` for an index).
#[salsa::interned(debug)]
pub struct LanguageName<'db> {
    /// The name.
    #[returns(ref)]
    pub name: String,
}

/// One file's extracted tables.
#[derive(Debug)]
pub struct FileFacts {
    /// Path relative to the root.
    pub path: String,
    /// Language it was parsed as.
    pub language: String,
    /// Its rows of each of the source's tables.
    pub tables: BTreeMap<SourceTable, RecordBatch>,
    /// Set when these facts were parsed (not read from the store): the
    /// fragment key to store them under.
    pub parsed_key: Option<String>,
}

impl FileFacts {
    /// Why the file was skipped, if it was.
    pub fn skipped(&self) -> Option<String> {
        let files = self.tables.get(&SourceTable::Files)?;
        let col = files.column_by_name("skipped")?.as_any().downcast_ref::<StringArray>()?;
        (col.len() == 1 && col.is_valid(0)).then(|| col.value(0).to_string())
    }

    /// Its syntax errors: (0-based line, 0-based column, message).
    pub fn syntax_errors(&self) -> Vec<(i64, i64, String)> {
        let Some(b) = self.tables.get(&SourceTable::Errors) else { return Vec::new() };
        let ints = |n: &str| {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>())
                .map(|a| a.values().to_vec())
                .unwrap_or_default()
        };
        let (lines, cols) = (ints("start_line"), ints("start_col"));
        let msgs = b.column_by_name("message").and_then(|c| c.as_any().downcast_ref::<StringArray>());
        (0..b.num_rows())
            .map(|i| (lines[i], cols[i], msgs.map(|m| m.value(i).to_string()).unwrap_or_default()))
            .collect()
    }
}

static PARSED: AtomicUsize = AtomicUsize::new(0);
static FRAGMENTS_READ: AtomicUsize = AtomicUsize::new(0);

/// Files parsed and fragments read by this process so far (a build reports
/// the difference across it).
pub fn counters() -> (usize, usize) {
    (PARSED.load(Ordering::Relaxed), FRAGMENTS_READ.load(Ordering::Relaxed))
}

/// The facts of one file (memoized per content hash and language).
#[salsa::tracked(returns(ref), no_eq)]
pub fn file_facts<'db>(
    db: &'db dyn Db,
    root: ExtractRoot,
    file: DataFile,
    language: LanguageName<'db>,
) -> Arc<FileFacts> {
    Arc::new(extract_file(
        root.root(db),
        root.fragments(db).as_deref(),
        file.path(db),
        file.hash(db),
        language.name(db),
    ))
}

/// The facts of every file, in order; files run in parallel (rayon), each on
/// its own handle of the database. `language` forces one; else each file's
/// extension decides (`scip` for an index).
pub fn collect(db: &RelspecDb, root: ExtractRoot, files: &[DataFile], language: Option<&str>) -> Vec<Arc<FileFacts>> {
    use rayon::prelude::*;
    // A database handle is Send but not Sync: one clone per chunk of files.
    let chunk = files.len().div_ceil(rayon::current_num_threads().max(1) * 8).max(1);
    let work: Vec<(RelspecDb, &[DataFile])> = files.chunks(chunk).map(|c| (db.clone(), c)).collect();
    let done: Vec<Vec<Arc<FileFacts>>> = work
        .into_par_iter()
        .map(|(db, chunk)| {
            chunk
                .iter()
                .map(|f| {
                    let lang = LanguageName::new(&db, language_for(f.path(&db), language).to_string());
                    file_facts(&db, root, *f, lang).clone()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // What was parsed goes to the store as one pack per run (a memo of an
    // earlier run's parse is stored already: `put` skips known keys).
    if let Some(dir) = root.fragments(db) {
        let fresh: Vec<(String, Arc<FileFacts>)> =
            done.iter().flatten().filter_map(|f| f.parsed_key.clone().map(|k| (k, f.clone()))).collect();
        crate::packs::put(dir, fresh);
    }
    done.into_iter().flatten().collect()
}

/// The language a file is parsed as (`scip` for an index; see
/// `relspec_spec::workspace::source_language`).
pub fn language_for(path: &str, forced: Option<&str>) -> &'static str {
    if forced.is_none() && path.ends_with(".scip") {
        return "scip";
    }
    relspec_spec::workspace::source_language(path, forced).unwrap_or("unknown")
}

/// The fragment keys of files as they are now (what `gc` keeps).
pub fn live_keys(db: &dyn Db, files: &[DataFile], language: Option<&str>) -> Vec<String> {
    files
        .iter()
        .map(|f| crate::packs::fragment_key(language_for(f.path(db), language), f.path(db), f.hash(db)))
        .collect()
}

/// The rows of `table` over every file, as batches in file order.
pub fn table_batches(facts: &[Arc<FileFacts>], table: SourceTable) -> Vec<RecordBatch> {
    facts.iter().filter_map(|f| f.tables.get(&table)).filter(|b| b.num_rows() > 0).cloned().collect()
}

fn tables_of(language: &str) -> &'static [SourceTable] {
    if language == "scip" { &SourceTable::SCIP } else { &SourceTable::CODE }
}

fn extract_file(root: &Path, fragments: Option<&Path>, path: &str, stat_hash: &str, language: &str) -> FileFacts {
    let done =
        |tables, parsed_key| FileFacts { path: path.to_string(), language: language.to_string(), tables, parsed_key };
    if let Some(dir) = fragments
        && let Some(t) =
            crate::packs::get(dir, &crate::packs::fragment_key(language, path, stat_hash), tables_of(language))
    {
        FRAGMENTS_READ.fetch_add(1, Ordering::Relaxed);
        return done(t, None);
    }
    match std::fs::read(root.join(path)) {
        Ok(bytes) => {
            // Keyed by the bytes parsed: a file changed since it was stat-ed never poisons a key.
            let hash = blake3::hash(&bytes).to_hex().to_string();
            PARSED.fetch_add(1, Ordering::Relaxed);
            let key = crate::packs::fragment_key(language, path, &hash);
            done(extract_bytes(path, language, &bytes, &hash), Some(key))
        }
        Err(e) => done(skipped(path, language, "", 0, &format!("unreadable: {e}")), None),
    }
}

fn skipped(path: &str, language: &str, hash: &str, size: usize, why: &str) -> BTreeMap<SourceTable, RecordBatch> {
    if language == "scip" {
        tracing::warn!(path, "SCIP index skipped: {why}");
        // An empty index: no rows in any table.
        return crate::scip::scip_batches(&[]).unwrap_or_default();
    }
    let row = FileRow { path, language, content_hash: hash, size, lines: 0, skipped: Some(why) };
    code_batches(&row, &crate::cst::Facts::default())
}

thread_local! {
    static PARSERS: RefCell<HashMap<&'static str, tree_sitter::Parser>> = RefCell::new(HashMap::new());
}

/// Extract one file's tables from its bytes.
pub fn extract_bytes(path: &str, language: &str, bytes: &[u8], hash: &str) -> BTreeMap<SourceTable, RecordBatch> {
    if language == "scip" {
        return match crate::scip::scip_batches(bytes) {
            Ok(t) => t,
            Err(e) => skipped(path, language, hash, bytes.len(), &e),
        };
    }
    let Some(grammar) = crate::grammar::grammar(language) else {
        return skipped(path, language, hash, bytes.len(), &format!("no grammar for language `{language}`"));
    };
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return skipped(path, language, hash, bytes.len(), "binary");
    }
    if std::str::from_utf8(bytes).is_err() {
        return skipped(path, language, hash, bytes.len(), "not UTF-8");
    }
    let tree = PARSERS.with(|p| {
        let mut p = p.borrow_mut();
        let parser = p.entry(grammar.name).or_insert_with(|| {
            let mut parser = tree_sitter::Parser::new();
            parser.set_language(&(grammar.language)()).expect("grammar matches the tree-sitter ABI");
            parser
        });
        parser.parse(bytes, None)
    });
    let Some(tree) = tree else {
        return skipped(path, language, hash, bytes.len(), "the parser gave up");
    };
    let facts = crate::cst::extract(grammar, path, bytes, &tree);
    let lines = bytes.iter().filter(|b| **b == b'\n').count() + usize::from(bytes.last().is_some_and(|b| *b != b'\n'));
    let row = FileRow { path, language, content_hash: hash, size: bytes.len(), lines, skipped: None };
    code_batches(&row, &facts)
}
