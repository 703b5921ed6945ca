//! TOML -> [`WorkspaceSpec`] / [`RuleDecl`]s, with byte spans for diagnostics.

use super::*;
use crate::error::{Diag, ErrorKind, Result};
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ManifestToml {
    #[serde(default)]
    workspace: WorkspaceToml,
    #[serde(default)]
    profile: ProfileToml,
    #[serde(default)]
    params: IndexMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    datasets: IndexMap<String, Spanned<DatasetToml>>,
    #[serde(default)]
    sources: IndexMap<String, Spanned<SourceToml>>,
    #[serde(default)]
    contracts: IndexMap<String, Spanned<ContractToml>>,
    #[serde(default)]
    rules: IndexMap<String, Spanned<RuleToml>>,
    #[serde(default)]
    cache: CacheToml,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CacheToml {
    remote: Option<Spanned<RemoteToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteToml {
    url: Spanned<String>,
    read: Option<bool>,
    write: Option<bool>,
    timeout: Option<Spanned<toml::Value>>,
    connect_timeout: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkspaceToml {
    name: Option<String>,
    version: Option<Spanned<u32>>,
    output_dir: Option<String>,
    cache_dir: Option<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProfileToml {
    target_partitions: Option<usize>,
    batch_size: Option<usize>,
    memory_limit: Option<Spanned<toml::Value>>,
    memory_pool: Option<MemoryPoolKind>,
    spill_dir: Option<String>,
    catalog: Option<String>,
    schema: Option<String>,
    information_schema: Option<bool>,
    time_zone: Option<String>,
    executor: Option<Spanned<String>>,
    scheduler: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetToml {
    path: String,
    format: Option<DataFormat>,
    #[serde(default)]
    scan: ScanToml,
    schema: Option<IndexMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceToml {
    path: String,
    language: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScanToml {
    #[serde(default)]
    partition_cols: IndexMap<String, String>,
    #[serde(default)]
    file_sort_order: Vec<String>,
    parquet_pruning: Option<bool>,
    skip_metadata: Option<bool>,
    has_header: Option<bool>,
    delimiter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractToml {
    #[serde(default)]
    columns: Option<ContractColumnsToml>,
    unique: Option<UniqueToml>,
    #[serde(default)]
    not_null: Vec<String>,
    #[serde(default)]
    accepted_values: IndexMap<String, Vec<toml::Value>>,
    #[serde(default)]
    references: IndexMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum UniqueToml {
    One(Vec<String>),
    Many(Vec<Vec<String>>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContractColumnsToml {
    Map(IndexMap<String, String>),
    List(Vec<ContractColumnToml>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractColumnToml {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    nullable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    from: Option<String>,
    steps: Option<Vec<Spanned<StepToml>>>,
    sql: Option<Spanned<String>>,
    produces: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    description: Option<String>,
    #[serde(default)]
    partition_by: Vec<String>,
    incremental: Option<IncrementalToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementalToml {
    by: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepToml {
    join: Option<String>,
    #[serde(rename = "as")]
    alias: Option<String>,
    on: Option<String>,
    how: Option<JoinHow>,
    filter: Option<String>,
    select: Option<Vec<String>>,
    aggregate: Option<AggregateToml>,
    union: Option<String>,
    distinct: Option<bool>,
    sort: Option<Vec<String>>,
    limit: Option<u64>,
    offset: Option<u64>,
    winner: Option<WinnerToml>,
    stable_dedupe: Option<WinnerToml>,
    explode: Option<ExplodeToml>,
    interval_align: Option<IntervalToml>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ExplodeToml {
    Column(String),
    Full {
        column: String,
        #[serde(rename = "as")]
        alias: Option<String>,
        lane: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntervalToml {
    table: String,
    #[serde(rename = "as")]
    alias: Option<String>,
    on: Option<String>,
    left: Vec<String>,
    right: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateToml {
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default)]
    measures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WinnerToml {
    partition_by: Vec<String>,
    order_by: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFileToml {
    #[serde(default)]
    rules: IndexMap<String, Spanned<RuleToml>>,
}

fn span_of<T>(s: &Spanned<T>) -> Option<(usize, usize)> {
    let r = s.span();
    Some((r.start, r.end - r.start))
}

fn toml_error(file: &Path, e: toml::de::Error) -> Diag {
    let span = e.span().map(|r| (r.start, r.end.saturating_sub(r.start)));
    Diag::new(ErrorKind::Toml(e.message().trim().to_string())).at(file, span)
}

fn invalid(file: &Path, span: Option<(usize, usize)>, msg: impl Into<String>) -> Diag {
    Diag::new(ErrorKind::Invalid(msg.into())).at(file, span)
}

/// `"1.5 GiB"` -> `(1.5, "GiB")`: the leading number and the trimmed rest.
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parse a byte size: an integer, or a string like `"512MiB"`, `"2GB"`, `"1g"`.
pub fn parse_bytes(v: &toml::Value) -> std::result::Result<u64, String> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        toml::Value::String(s) => {
            let (num, unit) = number_and_unit(s).ok_or_else(|| format!("invalid size `{s}`"))?;
            let mult: f64 = match unit.to_ascii_lowercase().as_str() {
                "" | "b" => 1.0,
                "k" | "kb" => 1e3,
                "kib" => 1024.0,
                "m" | "mb" => 1e6,
                "mib" => 1024.0 * 1024.0,
                "g" | "gb" => 1e9,
                "gib" => 1024.0 * 1024.0 * 1024.0,
                other => return Err(format!("unknown size unit `{other}` in `{s}`")),
            };
            Ok((num * mult) as u64)
        }
        _ => Err("expected a byte count or a string like \"1GiB\"".into()),
    }
}

/// Parse a duration: whole milliseconds, or a string like `"500ms"`, `"5s"`, `"2m"`.
pub fn parse_duration_ms(v: &toml::Value) -> std::result::Result<u64, String> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        toml::Value::String(s) => {
            let (num, unit) = number_and_unit(s).ok_or_else(|| format!("invalid duration `{s}`"))?;
            let mult: f64 = match unit {
                "ms" => 1.0,
                "s" | "" => 1e3,
                "m" | "min" => 60e3,
                other => return Err(format!("unknown duration unit `{other}` in `{s}` (use ms, s or m)")),
            };
            Ok((num * mult) as u64)
        }
        _ => Err("expected milliseconds or a string like \"5s\"".into()),
    }
}

/// The `[cache.remote]` table, checked: a URL of a backend relspec can reach.
fn remote_cache(file: &Path, r: Spanned<RemoteToml>) -> Result<RemoteCacheSpec> {
    let r = r.into_inner();
    let url_span = span_of(&r.url);
    let url = r.url.into_inner();
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    if !REMOTE_SCHEMES.contains(&scheme) {
        return Err(invalid(
            file,
            url_span,
            format!(
                "[cache.remote] url `{url}` is not an object store URL (expected {})",
                REMOTE_SCHEMES.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if scheme == "file" && !rest.starts_with('/') {
        return Err(invalid(
            file,
            url_span,
            format!("[cache.remote] url `{url}`: a file URL needs an absolute path (file:///...)"),
        ));
    }
    if scheme != "file" && rest.split('/').next().unwrap_or_default().is_empty() {
        return Err(invalid(file, url_span, format!("[cache.remote] url `{url}` names no bucket or container")));
    }
    let ms = |v: Option<Spanned<toml::Value>>, what: &str, default: u64| -> Result<u64> {
        match v {
            None => Ok(default),
            Some(v) => match parse_duration_ms(v.get_ref()) {
                Ok(0) => Err(invalid(file, span_of(&v), format!("[cache.remote] {what} must be more than zero"))),
                Ok(ms) => Ok(ms),
                Err(e) => Err(invalid(file, span_of(&v), format!("[cache.remote] {what}: {e}"))),
            },
        }
    };
    let timeout_ms = ms(r.timeout, "timeout", 30_000)?;
    let connect_timeout_ms = ms(r.connect_timeout, "connect_timeout", 5_000)?;
    Ok(RemoteCacheSpec {
        url,
        read: r.read.unwrap_or(true),
        write: r.write.unwrap_or(false),
        timeout_ms,
        connect_timeout_ms,
    })
}

/// Parse `workspace.toml` text. `file` is the path shown in diagnostics.
pub fn parse_manifest(file: &Path, text: &str) -> Result<WorkspaceSpec> {
    let m: ManifestToml = toml::from_str(text).map_err(|e| toml_error(file, e))?;
    if let Some(v) = &m.workspace.version
        && *v.get_ref() != FORMAT_VERSION
    {
        return Err(invalid(
            file,
            span_of(v),
            format!(
                "workspace format version {} is not supported (this relspec reads version {FORMAT_VERSION})",
                v.get_ref()
            ),
        ));
    }
    let p = m.profile;
    let memory_limit = match &p.memory_limit {
        Some(v) => Some(parse_bytes(v.get_ref()).map_err(|e| invalid(file, span_of(v), e))?),
        None => None,
    };
    let executor = match (p.executor.as_ref().map(|e| e.get_ref().as_str()), &p.scheduler) {
        (None | Some("local"), None) => Executor::Local,
        (None | Some("local"), Some(sch)) => {
            return Err(invalid(file, span_of(sch), "[profile] scheduler is set, but executor is not \"ballista\""));
        }
        (Some("ballista"), Some(sch)) => {
            let url = sch.get_ref().trim();
            if url != "standalone" && !url.starts_with("df://") {
                return Err(invalid(
                    file,
                    span_of(sch),
                    format!("[profile] scheduler `{url}` is not `df://host:port` or `standalone`"),
                ));
            }
            Executor::Ballista { scheduler: url.to_string() }
        }
        (Some("ballista"), None) => {
            let e = p.executor.as_ref().unwrap();
            return Err(invalid(file, span_of(e), "[profile] executor = \"ballista\" needs a scheduler").with_help(
                "add `scheduler = \"df://host:50050\"`, or `scheduler = \"standalone\"` for an in-process cluster",
            ));
        }
        (Some(other), _) => {
            let e = p.executor.as_ref().unwrap();
            return Err(invalid(
                file,
                span_of(e),
                format!("[profile] executor `{other}` is not \"local\" or \"ballista\""),
            ));
        }
    };
    let defaults = Profile::default();
    let profile = Profile {
        target_partitions: p.target_partitions,
        batch_size: p.batch_size,
        memory_limit,
        memory_pool: p.memory_pool.unwrap_or(defaults.memory_pool),
        spill_dir: p.spill_dir,
        catalog: p.catalog.unwrap_or(defaults.catalog),
        schema: p.schema.unwrap_or(defaults.schema),
        information_schema: p.information_schema.unwrap_or(false),
        time_zone: p.time_zone,
        executor,
    };

    let mut params = BTreeMap::new();
    for (name, v) in m.params {
        let bad = |m: String| invalid(file, span_of(&v), format!("parameter `{name}` {m}"));
        let scalar = |x: &toml::Value| match x {
            toml::Value::Integer(i) => Some(ParamValue::Int(*i)),
            toml::Value::Float(f) => Some(ParamValue::Float(f.to_bits())),
            toml::Value::Boolean(b) => Some(ParamValue::Bool(*b)),
            toml::Value::String(s) => Some(ParamValue::Str(s.clone())),
            _ => None,
        };
        let pv = match v.get_ref() {
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for x in items {
                    let e = scalar(x).ok_or_else(|| {
                        bad("is a list; its elements must be integers, floats, booleans or strings".into())
                    })?;
                    if let Some(first) = out.first().map(ParamValue::kind)
                        && first != e.kind()
                    {
                        return Err(bad(format!("mixes {first} and {} elements; a list has one kind", e.kind())));
                    }
                    out.push(e);
                }
                ParamValue::List(out)
            }
            x => scalar(x).ok_or_else(|| bad("must be an integer, float, boolean, string or a list of them".into()))?,
        };
        params.insert(name, pv);
    }

    let mut datasets = BTreeMap::new();
    for (name, d) in m.datasets {
        let span = span_of(&d);
        let d = d.into_inner();
        if let Some((scheme, _)) = d.path.split_once("://")
            && !DATASET_SCHEMES.contains(&scheme)
        {
            return Err(invalid(
                file,
                span,
                format!("dataset `{name}`: `{}` is not a path or an object store URL", d.path),
            )
            .with_help("use a path relative to the workspace, or s3://, gs://, az:// (a prefix ends with `/`)"));
        }
        let format = match d.format {
            Some(f @ (DataFormat::Code | DataFormat::Scip)) => {
                return Err(invalid(
                    file,
                    span,
                    format!("dataset `{name}`: format `{f:?}` is for sources, not datasets"),
                )
                .with_help(format!(
                    "declare `[sources.{name}]` with `path = \"{}\"`: relspec extracts its tables itself",
                    d.path
                )));
            }
            Some(f) => f,
            None => infer_format(&d.path).ok_or_else(|| {
                invalid(file, span, format!("dataset `{name}`: cannot infer the format of `{}`", d.path))
                    .with_help("add `format = \"parquet\"` (or \"csv\", \"json\")")
            })?,
        };
        let delimiter = match d.scan.delimiter.as_deref() {
            None => None,
            Some(s) if s.chars().count() == 1 && s.is_ascii() => s.chars().next(),
            Some(s) => {
                return Err(invalid(
                    file,
                    span,
                    format!("dataset `{name}`: delimiter `{s}` must be one ASCII character"),
                ));
            }
        };
        for (col, ty) in d.scan.partition_cols.iter().chain(d.schema.iter().flatten()) {
            types::parse_type(ty).map_err(|e| invalid(file, span, format!("dataset `{name}`, column `{col}`: {e}")))?;
        }
        datasets.insert(
            name.clone(),
            DatasetSpec {
                name,
                path: d.path,
                format,
                scan: ScanOptions {
                    partition_cols: d.scan.partition_cols.into_iter().collect(),
                    file_sort_order: d.scan.file_sort_order,
                    parquet_pruning: d.scan.parquet_pruning,
                    skip_metadata: d.scan.skip_metadata,
                    has_header: d.scan.has_header,
                    delimiter,
                },
                schema: d.schema.map(|s| s.into_iter().collect()),
                extract: None,
                file: file.to_path_buf(),
                span,
            },
        );
    }

    for (name, src) in m.sources {
        let span = span_of(&src);
        let src = src.into_inner();
        if src.path.contains("://") {
            return Err(invalid(
                file,
                span,
                format!("source `{name}`: `{}`: sources are read from local files", src.path),
            )
            .with_help("check the code out (or fetch the SCIP index) into the workspace and point `path` at it"));
        }
        let format = match src.format.as_deref() {
            Some("scip") => DataFormat::Scip,
            Some("tree-sitter" | "code") => DataFormat::Code,
            None if src.path.trim_end_matches('/').ends_with(".scip") => DataFormat::Scip,
            None => DataFormat::Code,
            Some(other) => {
                return Err(invalid(file, span, format!("source `{name}`: unknown format `{other}`"))
                    .with_help("use `format = \"tree-sitter\"` (source code, the default) or `format = \"scip\"`"));
            }
        };
        if let Some(lang) = &src.language {
            if format == DataFormat::Scip {
                return Err(invalid(file, span, format!("source `{name}`: a SCIP index takes no `language`")));
            }
            if !LANGUAGES.iter().any(|(l, _)| l == lang) {
                let known: Vec<&str> = LANGUAGES.iter().map(|(l, _)| *l).collect();
                let hint = crate::suggest::suggest(lang, known.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(invalid(file, span, format!("source `{name}`: unknown language `{lang}`{hint}"))
                    .with_help(format!("relspec parses: {}", known.join(", "))));
            }
        }
        let tables: &[SourceTable] = if format == DataFormat::Scip { &SourceTable::SCIP } else { &SourceTable::CODE };
        for &table in tables {
            let table_name = format!("{name}_{}", table.suffix());
            if datasets.contains_key(&table_name) {
                return Err(invalid(
                    file,
                    span,
                    format!("source `{name}` yields table `{table_name}`, which a dataset already declares"),
                ));
            }
            datasets.insert(
                table_name.clone(),
                DatasetSpec {
                    name: table_name,
                    path: src.path.clone(),
                    format,
                    scan: ScanOptions::default(),
                    schema: None,
                    extract: Some(Extract { source: name.clone(), table, language: src.language.clone() }),
                    file: file.to_path_buf(),
                    span,
                },
            );
        }
    }

    let mut contracts = BTreeMap::new();
    for (name, c) in m.contracts {
        let span = span_of(&c);
        let c = c.into_inner();
        let columns: Vec<ContractColumn> = match c.columns {
            None => Vec::new(),
            Some(ContractColumnsToml::Map(m)) => {
                m.into_iter().map(|(name, data_type)| ContractColumn { name, data_type, nullable: None }).collect()
            }
            Some(ContractColumnsToml::List(l)) => l
                .into_iter()
                .map(|c| ContractColumn { name: c.name, data_type: c.data_type, nullable: c.nullable })
                .collect(),
        };
        let mut checks = Vec::new();
        match c.unique {
            Some(UniqueToml::One(k)) if !k.is_empty() => checks.push(DataCheck::Unique(k)),
            Some(UniqueToml::Many(ks)) => {
                checks.extend(ks.into_iter().filter(|k| !k.is_empty()).map(DataCheck::Unique))
            }
            _ => {}
        }
        checks.extend(c.not_null.into_iter().map(DataCheck::NotNull));
        for (column, vals) in c.accepted_values {
            let mut values = Vec::new();
            for v in vals {
                values.push(match v {
                    toml::Value::Integer(i) => ParamValue::Int(i),
                    toml::Value::Float(f) => ParamValue::Float(f.to_bits()),
                    toml::Value::Boolean(b) => ParamValue::Bool(b),
                    toml::Value::String(s) => ParamValue::Str(s),
                    other => {
                        return Err(invalid(
                            file,
                            span,
                            format!("contract `{name}`: accepted value {other} of `{column}` is not a string, number or boolean"),
                        ));
                    }
                });
            }
            checks.push(DataCheck::AcceptedValues { column, values });
        }
        for (column, target) in c.references {
            let Some((table, target_column)) = target.split_once('.') else {
                return Err(invalid(
                    file,
                    span,
                    format!("contract `{name}`: references of `{column}` must be `table.column`, not `{target}`"),
                ));
            };
            checks.push(DataCheck::References {
                column,
                table: table.to_string(),
                target_column: target_column.to_string(),
            });
        }
        if columns.is_empty() && checks.is_empty() {
            return Err(invalid(file, span, format!("contract `{name}` declares no columns and no checks")));
        }
        for col in &columns {
            types::parse_type(&col.data_type)
                .map_err(|e| invalid(file, span, format!("contract `{name}`, column `{}`: {e}", col.name)))?;
        }
        contracts.insert(name.clone(), ContractSpec { name, columns, checks, file: file.to_path_buf(), span });
    }

    let rules = convert_rules(file, text, m.rules)?;
    let remote_cache = m.cache.remote.map(|r| remote_cache(file, r)).transpose()?;
    Ok(WorkspaceSpec {
        name: m.workspace.name.unwrap_or_else(|| "workspace".into()),
        output_dir: m.workspace.output_dir.unwrap_or_else(|| "out".into()),
        cache_dir: m.workspace.cache_dir.unwrap_or_else(|| "cache".into()),
        include: m.workspace.include,
        profile,
        params,
        datasets,
        contracts,
        rules,
        remote_cache,
    })
}

fn infer_format(path: &str) -> Option<DataFormat> {
    let p = path.trim_end_matches('/');
    if p.ends_with(".parquet") {
        Some(DataFormat::Parquet)
    } else if p.ends_with(".csv") {
        Some(DataFormat::Csv)
    } else if p.ends_with(".json") || p.ends_with(".jsonl") || p.ends_with(".ndjson") {
        Some(DataFormat::Json)
    } else {
        None
    }
}

/// Parse an included rule file: a `.toml` file with `[rules.NAME]` tables,
/// or a `.sql` file holding one rule named by the file stem. Leading comment
/// lines `-- produces: NAME` and `-- tags: a, b` set the rule's contract and tags.
pub fn parse_rule_file(file: &Path, text: &str) -> Result<Vec<RuleDecl>> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("sql") => {
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            if !valid_name(&name) {
                return Err(invalid(
                    file,
                    None,
                    format!("rule file name `{name}` is not a valid rule name (letters, digits, `_`)"),
                ));
            }
            let mut produces = None;
            let mut tags = Vec::new();
            let mut description = None;
            let mut partition_by = Vec::new();
            let mut incremental = None;
            for line in text.lines() {
                let Some(c) = line.trim().strip_prefix("--") else {
                    if line.trim().is_empty() { continue } else { break }
                };
                let c = c.trim();
                if let Some(v) = c.strip_prefix("produces:") {
                    produces = Some(v.trim().to_string());
                } else if let Some(v) = c.strip_prefix("tags:") {
                    tags = v.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
                } else if let Some(v) = c.strip_prefix("description:") {
                    description = Some(v.trim().to_string());
                } else if let Some(v) = c.strip_prefix("partition_by:") {
                    partition_by = v.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
                } else if let Some(v) = c.strip_prefix("incremental_by:") {
                    incremental = Some(v.trim().to_string()).filter(|v| !v.is_empty());
                }
            }
            Ok(vec![RuleDecl {
                name,
                def: RuleDef {
                    body: RuleBody::Sql(text.to_string()),
                    produces,
                    tags,
                    description,
                    partition_by,
                    incremental,
                },
                origin: RuleOrigin {
                    file: file.to_path_buf(),
                    span: Some((0, text.len())),
                    sql_offset: Some(0),
                    step_spans: vec![],
                },
            }])
        }
        Some("toml") => {
            let m: RuleFileToml = toml::from_str(text).map_err(|e| toml_error(file, e))?;
            convert_rules(file, text, m.rules)
        }
        _ => Err(invalid(file, None, "included rule files must end in .toml or .sql")),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Offset where the content of a TOML string literal spanning `span` starts.
fn string_content_offset(text: &str, span: std::ops::Range<usize>) -> usize {
    let lit = &text[span.clone()];
    if lit.starts_with("\"\"\"") || lit.starts_with("'''") {
        let after = span.start + 3;
        if text[after..].starts_with("\r\n") {
            after + 2
        } else if text[after..].starts_with('\n') {
            after + 1
        } else {
            after
        }
    } else {
        span.start + 1
    }
}

fn convert_rules(file: &Path, text: &str, rules: IndexMap<String, Spanned<RuleToml>>) -> Result<Vec<RuleDecl>> {
    let mut out = Vec::new();
    for (name, r) in rules {
        let span = span_of(&r);
        if !valid_name(&name) {
            return Err(invalid(
                file,
                span,
                format!("`{name}` is not a valid rule name (letters, digits, `_`; not starting with a digit)"),
            ));
        }
        let r = r.into_inner();
        let err = |msg: String| invalid(file, span, msg).in_rule(name.clone());
        let mut origin = RuleOrigin { file: file.to_path_buf(), span, sql_offset: None, step_spans: vec![] };
        let body = match (r.sql, r.from, r.steps) {
            (Some(sql), None, None) => {
                origin.sql_offset = Some(string_content_offset(text, sql.span()));
                RuleBody::Sql(sql.into_inner())
            }
            (None, Some(from), steps) => {
                let mut out_steps = Vec::new();
                for s in steps.unwrap_or_default() {
                    let sspan = s.span();
                    origin.step_spans.push((sspan.start, sspan.end - sspan.start));
                    let step = convert_step(s.into_inner()).map_err(|m| {
                        invalid(file, Some((sspan.start, sspan.end - sspan.start)), m).in_rule(name.clone())
                    })?;
                    out_steps.push(step);
                }
                RuleBody::Pipeline { from, steps: out_steps }
            }
            (Some(_), _, _) => return Err(err("a rule has either `sql` or `from` + `steps`, not both".into())),
            (None, None, Some(_)) => return Err(err("a pipeline rule needs `from`".into())),
            (None, None, None) => {
                return Err(err("a rule needs `sql = \"...\"` or `from = \"table\"` with `steps`".into()));
            }
        };
        out.push(RuleDecl {
            name,
            def: RuleDef {
                body,
                produces: r.produces,
                tags: r.tags,
                description: r.description,
                partition_by: r.partition_by,
                incremental: r.incremental.map(|i| i.by),
            },
            origin,
        });
    }
    Ok(out)
}

fn convert_step(s: StepToml) -> std::result::Result<Step, String> {
    let ops = [
        s.join.is_some(),
        s.filter.is_some(),
        s.select.is_some(),
        s.aggregate.is_some(),
        s.union.is_some(),
        s.sort.is_some(),
        s.limit.is_some(),
        s.winner.is_some(),
        s.stable_dedupe.is_some(),
        s.explode.is_some(),
        s.interval_align.is_some(),
    ];
    if ops.iter().filter(|b| **b).count() != 1 {
        return Err("each step has exactly one of join, filter, select, aggregate, union, sort, limit, \
                    stable_dedupe (or winner), explode, interval_align"
            .into());
    }
    let step = if let Some(table) = s.join {
        let on = s.on.ok_or("a join step needs `on = \"...\"`")?;
        Step::Join { table, alias: s.alias, on, how: s.how.unwrap_or(JoinHow::Inner) }
    } else if let Some(f) = s.filter {
        Step::Filter(f)
    } else if let Some(sel) = s.select {
        if sel.is_empty() {
            return Err("a select step needs at least one expression".into());
        }
        Step::Select(sel)
    } else if let Some(a) = s.aggregate {
        if a.measures.is_empty() && a.group_by.is_empty() {
            return Err("an aggregate step needs `group_by` or `measures`".into());
        }
        Step::Aggregate { group_by: a.group_by, measures: a.measures }
    } else if let Some(table) = s.union {
        Step::Union { table, distinct: s.distinct.unwrap_or(false) }
    } else if let Some(keys) = s.sort {
        Step::Sort(keys)
    } else if let Some(n) = s.limit {
        Step::Limit { n, offset: s.offset.unwrap_or(0) }
    } else if let Some(w) = s.winner.or(s.stable_dedupe) {
        if w.partition_by.is_empty() || w.order_by.is_empty() {
            return Err("a stable_dedupe (winner) step needs non-empty `partition_by` and `order_by`".into());
        }
        Step::Winner { partition_by: w.partition_by, order_by: w.order_by }
    } else if let Some(e) = s.explode {
        let (column, alias, lane) = match e {
            ExplodeToml::Column(c) => (c, None, None),
            ExplodeToml::Full { column, alias, lane } => (column, alias, lane),
        };
        if column.trim().is_empty() {
            return Err("an explode step names its list column: `explode = \"tags\"`".into());
        }
        if let Some(l) = lane.as_deref().filter(|l| !super::LANE_NAMES.contains(l)) {
            return Err(format!("unknown lane `{l}`; lanes are {}", super::LANE_NAMES.join(", ")));
        }
        Step::Explode { column, alias: alias.or(s.alias), lane }
    } else if let Some(i) = s.interval_align {
        let pair = |v: Vec<String>, what: &str| -> std::result::Result<[String; 2], String> {
            <[String; 2]>::try_from(v).map_err(|_| format!("interval_align `{what}` is [start, end]: two expressions"))
        };
        Step::IntervalAlign {
            table: i.table,
            alias: i.alias,
            on: i.on,
            left: pair(i.left, "left")?,
            right: pair(i.right, "right")?,
        }
    } else {
        unreachable!()
    };
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_with_spans() {
        let text = r#"
[params]
min = 2

[datasets.a]
path = "data/a.csv"

[rules.r1]
sql = """
SELECT * FROM a"""

[rules.r2]
from = "r1"
steps = [ { filter = "x > $min" }, { limit = 3 } ]
"#;
        let ws = parse_manifest(Path::new("workspace.toml"), text).unwrap();
        assert_eq!(ws.datasets["a"].format, DataFormat::Csv);
        assert_eq!(ws.rules.len(), 2);
        let r1 = &ws.rules[0];
        let off = r1.origin.sql_offset.unwrap();
        assert!(text[off..].starts_with("SELECT"));
        assert_eq!(ws.rules[1].origin.step_spans.len(), 2);
        assert_eq!(ws.params["min"], ParamValue::Int(2));
    }

    #[test]
    fn reports_toml_errors_with_span() {
        let e = parse_manifest(Path::new("w.toml"), "[rules.x]\nsql = ").unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Toml(_)));
        assert!(e.location.unwrap().span.is_some());
    }

    #[test]
    fn step_needs_one_op() {
        let e = parse_manifest(Path::new("w.toml"), "[rules.x]\nfrom='a'\nsteps=[{filter='a', limit=1}]").unwrap_err();
        assert_eq!(e.rule.as_deref(), Some("x"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes(&toml::Value::String("1GiB".into())).unwrap(), 1 << 30);
        assert_eq!(parse_bytes(&toml::Value::Integer(10)).unwrap(), 10);
    }
}
