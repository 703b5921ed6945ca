//! The workspace format: `workspace.toml`, included rule files, and the
//! validated spec they parse into.
//!
//! Architecture invariant: nothing here touches DataFusion or the disk except
//! reading text handed in by the caller; parsing is a pure function of text,
//! so salsa can memoize it.

pub mod manifest;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use manifest::{parse_manifest, parse_rule_file};

/// Format version of `workspace.toml` this build understands.
pub const FORMAT_VERSION: u32 = 1;

/// The parsed `workspace.toml` (rules from included files are separate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceSpec {
    /// Workspace name.
    pub name: String,
    /// Output directory, relative to the workspace root.
    pub output_dir: String,
    /// Cache directory, relative to the workspace root.
    pub cache_dir: String,
    /// Globs of included rule files (`.toml` or `.sql`), relative to the root.
    pub include: Vec<String>,
    /// The runtime profile.
    pub profile: Profile,
    /// Named parameters, bound into rules as values.
    pub params: BTreeMap<String, ParamValue>,
    /// Datasets by name.
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// Contracts by name.
    pub contracts: BTreeMap<String, ContractSpec>,
    /// Rules declared inline in `workspace.toml`.
    pub rules: Vec<RuleDecl>,
    /// The shared remote cache (`[cache.remote]`), if configured.
    pub remote_cache: Option<RemoteCacheSpec>,
}

/// URL schemes `[cache.remote]` accepts: S3, Google Cloud Storage, Azure
/// Blob Storage and a local directory.
pub const REMOTE_SCHEMES: &[&str] = &["s3", "gs", "az", "abfs", "abfss", "file"];

/// URL schemes a dataset's `path` may use: object storage, listed and read
/// through the backend's `object_store`.
pub const DATASET_SCHEMES: &[&str] = &["s3", "gs", "az", "abfs", "abfss"];

/// A shared cache on object storage (`[cache.remote]`): where, and whether
/// this machine reads and writes it. Credentials come from each backend's
/// standard environment variables, never from the manifest. Tuning only: no
/// part of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteCacheSpec {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or `file:///path`.
    pub url: String,
    /// Look outputs up in the remote after the local cache (default true).
    pub read: bool,
    /// Upload outputs this machine builds (default false; CI turns it on).
    pub write: bool,
    /// Timeout of one request, ms (default 30 s).
    pub timeout_ms: u64,
    /// Timeout of connecting, ms (default 5 s).
    pub connect_timeout_ms: u64,
}

/// The typed runtime profile (`[profile]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Parallelism of plans; tuning only (not in cache keys).
    pub target_partitions: Option<usize>,
    /// Record batch size; tuning only.
    pub batch_size: Option<usize>,
    /// Memory limit in bytes for the memory pool; tuning only.
    pub memory_limit: Option<u64>,
    /// Memory pool kind; tuning only.
    pub memory_pool: MemoryPoolKind,
    /// Directory for spill files, relative to the root; tuning only.
    pub spill_dir: Option<String>,
    /// Catalog datasets and rules are registered in (semantic).
    pub catalog: String,
    /// Schema datasets and rules are registered in (semantic).
    pub schema: String,
    /// Whether `information_schema` tables are available to rules (semantic).
    pub information_schema: bool,
    /// Session time zone, if set (semantic).
    pub time_zone: Option<String>,
    /// Where rules' plans execute; tuning only (results are byte-identical).
    pub executor: Executor,
}

/// Where rules' plans execute (`[profile] executor`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Executor {
    /// In this process (DataFusion).
    #[default]
    Local,
    /// On a Ballista cluster: `scheduler` is `df://host:port`, or
    /// `standalone` for a scheduler and executor started in this process.
    Ballista {
        /// The scheduler's URL, or `standalone`.
        scheduler: String,
    },
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            target_partitions: None,
            batch_size: None,
            memory_limit: None,
            memory_pool: MemoryPoolKind::Fair,
            spill_dir: None,
            catalog: "relspec".into(),
            schema: "public".into(),
            information_schema: false,
            time_zone: None,
            executor: Executor::Local,
        }
    }
}

/// Which DataFusion memory pool to use under a memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryPoolKind {
    /// First come, first served.
    Greedy,
    /// Fair share among spilling operators.
    Fair,
}

/// A parameter value from `[params]` (or a `--param` override).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParamValue {
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float, stored as its bits so the type is `Eq`.
    Float(u64),
    /// Boolean.
    Bool(bool),
    /// String.
    Str(String),
    /// A list of scalars of one kind (`langs = ["python", "rust"]`), used as
    /// `x IN $langs` or `x = ANY($langs)`; set semantics (order and
    /// duplicates do not matter). May be empty.
    List(Vec<ParamValue>),
}

impl ParamValue {
    /// The value as an SQL literal (`'text'`, `42`, `1.5`, `true`, `(1, 2)`), for messages.
    pub fn sql_literal(&self) -> String {
        match self {
            ParamValue::Int(i) => i.to_string(),
            ParamValue::Float(b) => f64::from_bits(*b).to_string(),
            ParamValue::Bool(b) => b.to_string(),
            ParamValue::Str(s) => format!("'{}'", s.replace('\'', "''")),
            ParamValue::List(vs) => {
                format!("({})", vs.iter().map(ParamValue::sql_literal).collect::<Vec<_>>().join(", "))
            }
        }
    }

    /// Canonical text used in signatures and keys. A list is canonical as a
    /// set: its elements sorted and deduplicated.
    pub fn canonical(&self) -> String {
        match self {
            ParamValue::Int(i) => format!("int:{i}"),
            ParamValue::Float(b) => format!("float:{}", f64::from_bits(*b)),
            ParamValue::Bool(b) => format!("bool:{b}"),
            ParamValue::Str(s) => format!("str:{}", serde_json::Value::from(s.as_str())),
            ParamValue::List(vs) => {
                let set: std::collections::BTreeSet<String> = vs.iter().map(ParamValue::canonical).collect();
                format!("list:[{}]", set.into_iter().collect::<Vec<_>>().join(","))
            }
        }
    }

    /// The kind's name, as messages say it.
    pub fn kind(&self) -> &'static str {
        match self {
            ParamValue::Int(_) => "integer",
            ParamValue::Float(_) => "float",
            ParamValue::Bool(_) => "boolean",
            ParamValue::Str(_) => "string",
            ParamValue::List(_) => "list",
        }
    }

    /// The kind of a list's elements (`None` for a scalar or an empty list).
    pub fn element_kind(&self) -> Option<&'static str> {
        match self {
            ParamValue::List(vs) => vs.first().map(ParamValue::kind),
            _ => None,
        }
    }

    /// Parse `text` as a value of the same kind as `self` (a `--param`
    /// override of a declared parameter). A list is comma-separated; an empty
    /// text is an empty list; the elements of an empty declared list are strings.
    pub fn parse_like(&self, text: &str) -> std::result::Result<ParamValue, String> {
        fn scalar(kind: &str, t: &str) -> std::result::Result<ParamValue, String> {
            match kind {
                "integer" => t.trim().parse().map(ParamValue::Int).map_err(|_| format!("`{t}` is not an integer")),
                "float" => t
                    .trim()
                    .parse::<f64>()
                    .map(|f| ParamValue::Float(f.to_bits()))
                    .map_err(|_| format!("`{t}` is not a number")),
                "boolean" => match t.trim() {
                    "true" => Ok(ParamValue::Bool(true)),
                    "false" => Ok(ParamValue::Bool(false)),
                    _ => Err(format!("`{t}` is not `true` or `false`")),
                },
                _ => Ok(ParamValue::Str(t.to_string())),
            }
        }
        match self {
            ParamValue::List(_) => {
                if text.trim().is_empty() {
                    return Ok(ParamValue::List(vec![]));
                }
                let kind = self.element_kind().unwrap_or("string");
                text.split(',')
                    .map(|t| scalar(kind, t))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map(ParamValue::List)
            }
            other => scalar(other.kind(), text),
        }
    }
}

/// Apply `--param name=value` overrides to a parsed spec: each must name a
/// declared parameter and parse as its kind.
pub fn apply_param_overrides(
    spec: &mut WorkspaceSpec,
    overrides: &[(String, String)],
) -> std::result::Result<(), crate::error::Diag> {
    use crate::error::{Diag, ErrorKind};
    for (name, text) in overrides {
        let Some(declared) = spec.params.get(name) else {
            let mut d = Diag::new(ErrorKind::Usage(format!(
                "--param {name}={text}: no parameter `{name}` is declared in [params]"
            )));
            if let Some(s) = crate::suggest::suggest(name, spec.params.keys()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            return Err(d);
        };
        let v = declared.parse_like(text).map_err(|m| {
            let kind = match declared {
                ParamValue::List(_) => format!("a list of {}s", declared.element_kind().unwrap_or("string")),
                ParamValue::Int(_) => "an integer".to_string(),
                other => format!("a {}", other.kind()),
            };
            Diag::new(ErrorKind::Usage(format!("--param {name}={text}: `{name}` is {kind}; {m}")))
        })?;
        spec.params.insert(name.clone(), v);
    }
    Ok(())
}

/// Storage format of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma (or other delimiter) separated values.
    Csv,
    /// Newline-delimited JSON.
    Json,
    /// Source code that relspec parses itself (tree-sitter): a table of a
    /// `[sources.NAME]`.
    Code,
    /// A SCIP index (`index.scip`, protobuf): a table of a `[sources.NAME]`
    /// with `format = "scip"`.
    Scip,
}

impl DataFormat {
    /// The file extension listing tables filter on (empty for source code:
    /// its languages decide, see [`language_of`]).
    pub fn extension(self) -> &'static str {
        match self {
            DataFormat::Parquet => ".parquet",
            DataFormat::Csv => ".csv",
            DataFormat::Json => ".json",
            DataFormat::Code => "",
            DataFormat::Scip => ".scip",
        }
    }
}

/// The version of what relspec extracts from sources (tables, columns,
/// rules of the grammar table): part of a source table's fingerprint and of
/// every fragment key. Bump it whenever extraction changes its output.
pub const EXTRACTOR_VERSION: &str = "relspec-extract/v1";

/// The languages relspec parses, with their file extensions. Adding a
/// grammar is one entry here and one in the extractor's grammar table.
pub const LANGUAGES: &[(&str, &[&str])] = &[("python", &[".py", ".pyi"]), ("rust", &[".rs"])];

/// The language a file's extension names, if relspec parses it.
pub fn language_of(path: &str) -> Option<&'static str> {
    LANGUAGES.iter().find(|(_, exts)| exts.iter().any(|e| path.ends_with(e))).map(|(l, _)| *l)
}

/// The language a file of a source is parsed as: with the source's
/// `language`, that one if the file has one of its extensions; without, its
/// extension's. `None`: the source does not take the file.
pub fn source_language(path: &str, language: Option<&str>) -> Option<&'static str> {
    match language {
        None => language_of(path),
        Some(l) => {
            LANGUAGES.iter().find(|(name, exts)| *name == l && exts.iter().any(|e| path.ends_with(e))).map(|(l, _)| *l)
        }
    }
}

/// One logical table of a source (`[sources.NAME]` yields `NAME_<table>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceTable {
    /// One row per source file.
    Files,
    /// Definitions (functions, methods, classes, structs, ...).
    Defs,
    /// Call sites.
    Callsites,
    /// Imports (`import`, `from .. import`, `use`).
    Imports,
    /// Syntax errors (the file's other nodes are still extracted).
    Errors,
    /// SCIP occurrences.
    Occurrences,
    /// SCIP symbols.
    Symbols,
    /// SCIP documents.
    Documents,
}

impl SourceTable {
    /// The tables a tree-sitter source yields.
    pub const CODE: [SourceTable; 5] =
        [SourceTable::Files, SourceTable::Defs, SourceTable::Callsites, SourceTable::Imports, SourceTable::Errors];
    /// The tables a SCIP source yields.
    pub const SCIP: [SourceTable; 3] = [SourceTable::Occurrences, SourceTable::Symbols, SourceTable::Documents];

    /// The table's name suffix (`NAME_<suffix>`).
    pub fn suffix(self) -> &'static str {
        match self {
            SourceTable::Files => "files",
            SourceTable::Defs => "defs",
            SourceTable::Callsites => "callsites",
            SourceTable::Imports => "imports",
            SourceTable::Errors => "errors",
            SourceTable::Occurrences => "occurrences",
            SourceTable::Symbols => "symbols",
            SourceTable::Documents => "documents",
        }
    }
}

/// What a dataset extracted by relspec (a source's table) is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Extract {
    /// The `[sources.NAME]` it belongs to.
    pub source: String,
    /// Which of the source's tables.
    pub table: SourceTable,
    /// The language every file is parsed as (else inferred per file from its extension).
    pub language: Option<String>,
}

/// A declared dataset (`[datasets.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatasetSpec {
    /// Logical name.
    pub name: String,
    /// Location as written: a file, a directory or a glob, relative to the root.
    pub path: String,
    /// File format.
    pub format: DataFormat,
    /// Typed scan options.
    pub scan: ScanOptions,
    /// Optional schema hint: ordered (column, type name).
    pub schema: Option<Vec<(String, String)>>,
    /// Set for a source's table: relspec extracts its rows from the files.
    pub extract: Option<Extract>,
    /// Where it is declared.
    pub file: PathBuf,
    /// Byte span of its table in `file`.
    pub span: Option<(usize, usize)>,
}

/// Typed scan options (`[datasets.NAME.scan]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct ScanOptions {
    /// Hive-style partition columns (`dir/col=value/`) with their types.
    pub partition_cols: Vec<(String, String)>,
    /// Declared sort order of every file, as SQL order items (`"a ASC"`).
    pub file_sort_order: Vec<String>,
    /// Parquet: prune row groups with statistics (default true).
    pub parquet_pruning: Option<bool>,
    /// Parquet: skip embedded metadata when inferring schema (default true).
    pub skip_metadata: Option<bool>,
    /// CSV: first line is a header (default true).
    pub has_header: Option<bool>,
    /// CSV: field delimiter (default `,`).
    pub delimiter: Option<char>,
}

/// A schema contract (`[contracts.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContractSpec {
    /// Contract name.
    pub name: String,
    /// Required columns (checked when the rule is planned).
    pub columns: Vec<ContractColumn>,
    /// Data checks (evaluated on the materialized output before publishing).
    pub checks: Vec<DataCheck>,
    /// Where it is declared.
    pub file: PathBuf,
    /// Byte span of its table.
    pub span: Option<(usize, usize)>,
}

/// A data check of a contract, evaluated as a DataFusion query on the result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataCheck {
    /// No two rows share these columns' values.
    Unique(Vec<String>),
    /// The column holds no null.
    NotNull(String),
    /// Every non-null value of the column is one of these.
    AcceptedValues {
        /// Column checked.
        column: String,
        /// Allowed values.
        values: Vec<ParamValue>,
    },
    /// Every non-null value of the column exists in `table.target_column`.
    References {
        /// Column checked.
        column: String,
        /// Dataset or rule referenced.
        table: String,
        /// Column of `table`.
        target_column: String,
    },
}

impl DataCheck {
    /// Short description, e.g. `unique(src, dst)`.
    pub fn describe(&self) -> String {
        match self {
            DataCheck::Unique(cols) => format!("unique({})", cols.join(", ")),
            DataCheck::NotNull(c) => format!("not_null({c})"),
            DataCheck::AcceptedValues { column, values } => {
                let vs: Vec<String> = values.iter().map(ParamValue::sql_literal).collect();
                format!("accepted_values({column} in [{}])", vs.join(", "))
            }
            DataCheck::References { column, table, target_column } => {
                format!("references({column} -> {table}.{target_column})")
            }
        }
    }
}

/// One required column of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContractColumn {
    /// Column name.
    pub name: String,
    /// Required type name (see [`types::parse_type`]).
    pub data_type: String,
    /// If `Some(false)`, the column must be non-nullable.
    pub nullable: Option<bool>,
}

/// A rule as declared, with where it was declared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleDecl {
    /// Rule name (also the name of its output table).
    pub name: String,
    /// What the rule computes; the only part that reaches the compiler.
    pub def: RuleDef,
    /// Where it is declared.
    pub origin: RuleOrigin,
}

/// Where a rule lives in the sources; used only for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RuleOrigin {
    /// File that declares the rule.
    pub file: PathBuf,
    /// Byte span of the rule's table (or the whole `.sql` file).
    pub span: Option<(usize, usize)>,
    /// Byte offset in `file` where the SQL text starts (SQL rules).
    pub sql_offset: Option<usize>,
    /// Byte spans of each pipeline step.
    pub step_spans: Vec<(usize, usize)>,
}

impl RuleOrigin {
    /// The rule's whole byte range (offset, length) in its file's `text`:
    /// its span, and for a `[rules.x]` table (whose span is the header)
    /// everything up to the next table header or the end of the file (less
    /// the comments and blank lines right before that header).
    pub fn extent(&self, text: &str) -> (usize, usize) {
        let (s, l) = self.span.unwrap_or((0, text.len()));
        let s = s.min(text.len());
        let mut end = (s + l).min(text.len());
        if text[s..end].trim_start().starts_with('[') {
            end = text[end..].find("\n[").map(|i| end + i + 1).unwrap_or(text.len());
            // Comments and blank lines before the next table belong to it.
            let mut lines: Vec<&str> = text[s..end].split_inclusive('\n').collect();
            while lines.len() > 1
                && lines.last().is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                end -= lines.pop().map_or(0, str::len);
            }
        }
        (s, end - s)
    }
}

/// The meaning of a rule, free of source positions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleDef {
    /// The body.
    pub body: RuleBody,
    /// Contract the output must satisfy.
    pub produces: Option<String>,
    /// Tags for selection.
    pub tags: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// Publish the output as a hive directory partitioned by these columns
    /// (`out/<rule>/<col>=<value>/part-0.parquet`); empty: one file.
    pub partition_by: Vec<String>,
    /// `incremental = { by = "input" }`: the rule distributes over the
    /// partitions of this input (checked on its plan; see
    /// `relspec_exec::distributive`).
    pub incremental: Option<String>,
}

/// A rule body: SQL text or a pipeline of steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleBody {
    /// One SQL query over logical names.
    Sql(String),
    /// A pipeline starting from a table.
    Pipeline {
        /// First table.
        from: String,
        /// Steps in order.
        steps: Vec<Step>,
    },
}

/// Join kind of a pipeline join step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinHow {
    /// Inner join.
    Inner,
    /// Left outer join.
    Left,
    /// Right outer join.
    Right,
    /// Full outer join.
    Full,
    /// Left semi join (rows of the left with a match).
    Semi,
    /// Left anti join (rows of the left without a match).
    Anti,
}

impl crate::key::StableName for JoinHow {
    fn stable_name(&self) -> &'static str {
        // Part of the canonical RelPlan (relplan/v2): never change these.
        match self {
            JoinHow::Inner => "Inner",
            JoinHow::Left => "Left",
            JoinHow::Right => "Right",
            JoinHow::Full => "Full",
            JoinHow::Semi => "Semi",
            JoinHow::Anti => "Anti",
        }
    }
}

/// One pipeline step. Expressions are SQL expression text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Join another table.
    Join {
        /// Table name.
        table: String,
        /// Optional alias for the joined table.
        alias: Option<String>,
        /// Join condition.
        on: String,
        /// Join kind.
        how: JoinHow,
    },
    /// Keep rows where the predicate holds.
    Filter(String),
    /// Project expressions (`expr [AS name]`).
    Select(Vec<String>),
    /// Group and aggregate.
    Aggregate {
        /// Grouping expressions.
        group_by: Vec<String>,
        /// Aggregate expressions (`count(*) AS n`).
        measures: Vec<String>,
    },
    /// Append the rows of another table (by position).
    Union {
        /// Table name.
        table: String,
        /// Remove duplicate rows.
        distinct: bool,
    },
    /// Order rows (`expr [ASC|DESC] [NULLS FIRST|LAST]`).
    Sort(Vec<String>),
    /// Keep at most `n` rows after skipping `offset`.
    Limit {
        /// Row count.
        n: u64,
        /// Rows to skip.
        offset: u64,
    },
    /// Keep one row per partition: the first by `order_by` (the
    /// `stable_dedupe` kernel; `winner` is its older step name).
    Winner {
        /// Partition keys.
        partition_by: Vec<String>,
        /// Ordering; ties are broken by all remaining columns ascending.
        order_by: Vec<String>,
    },
    /// One row per element of a list column (the `explode` kernel): the other
    /// columns (the parent's key) are repeated; null and empty lists give no rows.
    Explode {
        /// The list column.
        column: String,
        /// Name of the element column (default: the list column's name).
        alias: Option<String>,
        /// Force a lane (`builtin`, `arrow_fallback`); default: the first available.
        lane: Option<String>,
    },
    /// For each row, the innermost enclosing span of another table (the
    /// `interval_align` kernel): a left join to the row of `table` (matching
    /// `on`) whose `[start, end]` contains the row's `[start, end]` with the
    /// smallest width; ties are broken by every column of `table` ascending.
    IntervalAlign {
        /// The table of enclosing spans.
        table: String,
        /// Alias of that table (needed to align a table with itself).
        alias: Option<String>,
        /// Extra join condition (e.g. same file).
        on: Option<String>,
        /// The row's span: start and end expressions.
        left: [String; 2],
        /// The enclosing span: start and end expressions over `table`.
        right: [String; 2],
    },
}

/// Lane names a rule may force (`lane = "..."`).
pub const LANE_NAMES: &[&str] = &["builtin", "native_udf", "arrow_fallback"];

impl WorkspaceSpec {
    /// Absolute path of the output directory.
    pub fn output_path(&self, root: &std::path::Path) -> PathBuf {
        root.join(&self.output_dir)
    }
    /// Absolute path of the cache directory.
    pub fn cache_path(&self, root: &std::path::Path) -> PathBuf {
        root.join(&self.cache_dir)
    }
}
