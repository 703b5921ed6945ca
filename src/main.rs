//! The `relspec` command line: argument parsing, progress display, exit codes.
//! Holds no logic of its own; everything is in the library.

use clap::{Parser, Subcommand};
use relspec_core::build::{self, BuildOptions, BuildReport, Progress, RuleReport, Status};
use relspec_core::error::{Diag, ErrorKind};
use relspec_core::project::Project;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "relspec",
    version,
    about = "Incremental dataflow builds: declarative rules over datasets, executed by DataFusion, materialized as Parquet."
)]
struct Cli {
    /// Path to workspace.toml (or its directory).
    #[arg(short, long, global = true, default_value = "workspace.toml")]
    workspace: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every stale rule in dependency order and publish outputs.
    Build {
        /// Select rules: `name`, `name+` (and downstream), `+name` (and upstream), `tag:x`.
        #[arg(short, long)]
        select: Vec<String>,
        /// Rules executing at once (default: number of CPUs).
        #[arg(short, long, default_value_t = 0)]
        jobs: usize,
        /// Print the report as one JSON document.
        #[arg(long)]
        json: bool,
        /// Build nothing; exit 1 if anything is stale (a CI gate).
        #[arg(long)]
        check: bool,
    },
    /// List what is stale and why (a dry run).
    Status {
        /// Select rules as for `build`.
        #[arg(short, long)]
        select: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compile every rule and check contracts without executing.
    Check {
        /// Print diagnostics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a rule's plans, SQL, signature, key and kernel lanes.
    Explain {
        /// Rule name.
        rule: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dump the dataset registry: name, location, options, schema, fingerprint.
    Datasets {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Watch the workspace and rebuild what each change invalidates.
    Watch {
        /// Print one JSON event per line.
        #[arg(long)]
        json: bool,
        /// Exit after the first build.
        #[arg(long)]
        once: bool,
        /// Rules executing at once (default: number of CPUs).
        #[arg(short, long, default_value_t = 0)]
        jobs: usize,
        /// Quiet window that ends a batch of changes, ms.
        #[arg(long, default_value_t = 30)]
        debounce_ms: u64,
    },
    /// Where a rule's columns come from, or what derives from a column.
    Lineage {
        /// `RULE`, `RULE.COLUMN`, or `DATASET.COLUMN` (downstream).
        target: String,
        /// Walk all the way up to datasets (default for one column).
        #[arg(long)]
        upstream: bool,
        /// Walk down to every rule column that derives from it.
        #[arg(long, conflicts_with = "upstream")]
        downstream: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw the rule DAG (and, with --columns, column lineage).
    Graph {
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Draw columns and column-level edges.
        #[arg(long)]
        columns: bool,
    },
    /// Compare the workspace with another version of it (rules, columns, impact).
    Diff {
        /// Git revision of the base version (this workspace's directory at that revision).
        #[arg(long, conflicts_with = "base_dir", required_unless_present = "base_dir")]
        base: Option<String>,
        /// Directory (or workspace.toml) of the base version.
        #[arg(long)]
        base_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit with status 2 when a change is breaking (a CI gate).
        #[arg(long)]
        fail_on_breaking: bool,
    },
    /// Create a small working workspace in DIR.
    Init {
        /// Directory to create (must be empty or absent).
        dir: PathBuf,
    },
    /// Remove cached objects no current rule output uses.
    Gc,
    /// Write a synthetic workspace of N rules (for benchmarks).
    #[command(hide = true)]
    Synth {
        /// Directory to write.
        dir: PathBuf,
        /// Number of rules.
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        /// Rows of event data.
        #[arg(long, default_value_t = 2000)]
        rows: usize,
    },
    /// Remove the cache and the published outputs.
    Clean,
}

fn main() {
    let t0 = std::time::Instant::now();
    let cli = Cli::parse();
    // Long messages stay on one line so they can be grepped and matched by tools.
    let _ = miette::set_hook(Box::new(|_| Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())));
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELSPEC_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let manifest = if cli.workspace.is_dir() { cli.workspace.join("workspace.toml") } else { cli.workspace.clone() };
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "started");
    let json = cli.command.json();
    // Deep plans (a UNION ALL of 1,000 rules, deeply nested expressions) recurse
    // deeply in the SQL parser, the planner and relspec's own plan walks; run on
    // a thread whose stack is reserved (not committed) large enough for them.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(relspec_core::engine::DEEP_STACK_BYTES).build_global();
    let m2 = manifest.clone();
    let res = std::thread::Builder::new()
        .name("relspec-main".into())
        .stack_size(relspec_core::engine::DEEP_STACK_BYTES)
        .spawn(move || run(cli.command, &m2))
        .map_err(|e| vec![Diag::new(ErrorKind::Internal(format!("cannot start the main thread: {e}")))])
        .and_then(|h| {
            h.join().unwrap_or_else(|_| Err(vec![Diag::new(ErrorKind::Internal("relspec panicked".into()))]))
        });
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "finished");
    let code = match res {
        Ok(code) => code,
        Err(errs) => {
            if json {
                // Every error of a `--json` command is JSON on stdout.
                let root = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
                let errors: Vec<serde_json::Value> = errs
                    .iter()
                    .map(|e| {
                        let text = e.location.as_ref().and_then(|l| std::fs::read_to_string(root.join(&l.file)).ok());
                        e.to_json(text.as_deref())
                    })
                    .collect();
                println!("{}", serde_json::json!({"ok": false, "errors": errors}));
            } else {
                print_errors(None, &errs);
            }
            ExitCode::from(EXIT_ERROR)
        }
    };
    // Skip tearing down the database and caches: the process is done.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(if code == ExitCode::SUCCESS {
        0
    } else if code == ExitCode::from(EXIT_BREAKING) {
        EXIT_BREAKING.into()
    } else {
        EXIT_ERROR.into()
    })
}

/// Exit status of a failed command: bad input, a failed rule, a stale
/// workspace under `build --check`. (2 is clap's usage error.)
const EXIT_ERROR: u8 = 1;
/// Exit status of `diff --fail-on-breaking` when a change is breaking.
const EXIT_BREAKING: u8 = 3;

impl Command {
    /// Whether the command prints JSON (so its errors must be JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Build { json, .. }
            | Command::Status { json, .. }
            | Command::Check { json }
            | Command::Explain { json, .. }
            | Command::Datasets { json }
            | Command::Watch { json, .. }
            | Command::Lineage { json, .. }
            | Command::Diff { json, .. } => *json,
            Command::Graph { .. } | Command::Init { .. } | Command::Gc | Command::Synth { .. } | Command::Clean => {
                false
            }
        }
    }
}

type CliResult = Result<ExitCode, Vec<Diag>>;

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn open(manifest: &Path) -> Result<Project, Vec<Diag>> {
    Project::open(manifest).map_err(|e| vec![e])
}

fn print_errors(p: Option<&Project>, errs: &[Diag]) {
    for e in errs {
        let text = e.location.as_ref().and_then(|l| {
            p.and_then(|p| p.file_text(&l.file)).or_else(|| {
                let base = p.map(|p| p.root.clone()).unwrap_or_default();
                std::fs::read_to_string(base.join(&l.file)).ok()
            })
        });
        eprintln!("{:?}", e.to_report(text));
    }
    if errs.len() > 1 {
        eprintln!("error: {} problems found", errs.len());
    }
}

fn errors_json(p: &Project, errs: &[Diag]) -> serde_json::Value {
    serde_json::Value::Array(
        errs.iter().map(|e| e.to_json(e.location.as_ref().and_then(|l| p.file_text(&l.file)).as_deref())).collect(),
    )
}

fn run(cmd: Command, manifest: &Path) -> CliResult {
    match cmd {
        Command::Init { dir } => {
            relspec_core::scaffold::init(&dir).map_err(|e| vec![e])?;
            println!("created workspace in {}; run `relspec -w {} build`", dir.display(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { select, jobs, json, check } => {
            let mut p = open(manifest)?;
            let opts = BuildOptions { select, jobs, dry_run: check, cancel: None };
            let progress = Display::new(json);
            let report = match build::build(&mut p, &opts, &progress) {
                Ok(r) => r,
                Err(errs) => {
                    progress.clear();
                    if json {
                        println!("{}", serde_json::json!({"ok": false, "errors": errors_json(&p, &errs)}));
                    } else {
                        print_errors(Some(&p), &errs);
                    }
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
            };
            progress.clear();
            let stale = report.count(Status::Stale);
            if json {
                /// The report with its verdict and located errors.
                #[derive(serde::Serialize)]
                struct Out<'a> {
                    #[serde(flatten)]
                    report: &'a BuildReport,
                    ok: bool,
                    errors: serde_json::Value,
                }
                let out = Out {
                    report: &report,
                    ok: report.ok() && !(check && stale > 0),
                    errors: errors_json(&p, &report.errors),
                };
                use std::io::Write;
                let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                let _ = serde_json::to_writer_pretty(&mut w, &out);
                let _ = writeln!(w);
            } else {
                print_errors(Some(&p), &report.errors);
                summary(&report, check);
            }
            // The process exits next: skip tearing down the database (it costs
            // more than a no-op build).
            std::mem::forget(p);
            Ok(if !report.ok() || (check && stale > 0) { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS })
        }
        Command::Status { select, json } => {
            let mut p = open(manifest)?;
            let opts = BuildOptions { select, dry_run: true, ..Default::default() };
            let report = match build::build(&mut p, &opts, &build::NoProgress) {
                Ok(r) => r,
                Err(errs) => {
                    if json {
                        println!("{}", serde_json::json!({"ok": false, "errors": errors_json(&p, &errs)}));
                    } else {
                        print_errors(Some(&p), &errs);
                    }
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap());
            } else {
                for r in &report.rules {
                    match r.status {
                        Status::Stale => println!("stale  {}  ({})", r.rule, r.reasons.join("; ")),
                        _ => println!("fresh  {}", r.rule),
                    }
                }
                println!("{} stale, {} fresh", report.count(Status::Stale), report.count(Status::Reused));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { json } => {
            let mut p = open(manifest)?;
            p.refresh().map_err(|e| vec![e])?;
            let set = relspec_core::analysis::analyze(&mut p, &[]).map_err(|e| vec![e])?;
            let errs = &set.errors;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": errs.is_empty(), "rules_checked": set.rules.len(), "planned": set.planned,
                        "memoized": set.memoized, "errors": errors_json(&p, errs)})
                );
            } else if errs.is_empty() {
                println!(
                    "ok: {} rules checked ({} planned, {} unchanged), contracts satisfied",
                    set.rules.len(),
                    set.planned,
                    set.memoized
                );
            } else {
                print_errors(Some(&p), errs);
            }
            std::mem::forget(p);
            Ok(if errs.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
        }
        Command::Lineage { target, upstream, downstream, json } => {
            lineage_cmd(manifest, &target, upstream, downstream, json)
        }
        Command::Graph { format, columns } => {
            let mut p = open(manifest)?;
            p.refresh().map_err(|e| vec![e])?;
            let errs = p.static_errors();
            if !errs.is_empty() {
                print_errors(Some(&p), &errs);
                return Ok(ExitCode::from(EXIT_ERROR));
            }
            let lineages = if columns {
                let set = relspec_core::analysis::analyze(&mut p, &[]).map_err(|e| vec![e])?;
                if !set.errors.is_empty() {
                    print_errors(Some(&p), &set.errors);
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
                Some(set.rules.into_iter().map(|(k, a)| (k, a.lineage)).collect())
            } else {
                None
            };
            let fmt = match format {
                GraphFormat::Dot => relspec_core::graph::Format::Dot,
                GraphFormat::Mermaid => relspec_core::graph::Format::Mermaid,
            };
            print!("{}", relspec_core::graph::render(fmt, &p.graph().deps, lineages.as_ref()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { base, base_dir, json, fail_on_breaking } => {
            diff_cmd(manifest, base.as_deref(), base_dir.as_deref(), json, fail_on_breaking)
        }
        Command::Explain { rule, json } => {
            let mut p = open(manifest)?;
            let e = relspec_core::inspect::explain(&mut p, &rule)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
            } else {
                println!("rule: {rule}\nsignature: {}\nreads: {}", e.signature, e.reads.join(", "));
                if let Some(k) = &e.key {
                    println!("output key: {k}");
                }
                println!("plans from: {}\n", e.source);
                println!("== canonical RelPlan ==\n{}\n", e.canonical);
                println!("== logical plan ==\n{}\n", e.plans.logical);
                println!("== optimized logical plan ==\n{}\n", e.plans.optimized);
                println!("== physical plan ==\n{}", e.plans.physical);
                match &e.plans.physical_metrics {
                    Some(m) => println!("== physical plan with metrics (last run) ==\n{m}"),
                    None => println!("== physical plan with metrics ==\n(not built yet: run `relspec build`)\n"),
                }
                println!(
                    "== SQL (unparsed) ==\n{}\n",
                    e.plans.sql.clone().unwrap_or_else(|| "(the unparser cannot express this plan)".into())
                );
                println!("== column lineage ==");
                for c in &e.lineage.columns {
                    let srcs: Vec<String> = c
                        .sources
                        .iter()
                        .map(|s| format!("{}.{} ({})", s.table, s.column, relspec_core::graph::how_name(s.how)))
                        .collect();
                    println!(
                        "{}: {}  <- {}",
                        c.name,
                        c.data_type,
                        if srcs.is_empty() { "(constant)".into() } else { srcs.join(", ") }
                    );
                }
                if !e.lineage.keys.is_empty() {
                    let keys: Vec<String> = e
                        .lineage
                        .keys
                        .iter()
                        .map(|s| format!("{}.{} ({})", s.table, s.column, relspec_core::graph::how_name(s.how)))
                        .collect();
                    println!("rows decided by: {}", keys.join(", "));
                }
                println!();
                if !e.checks.is_empty() {
                    println!("== data contract checks (last run) ==");
                    for c in &e.checks {
                        println!("{} {}: {}", if c.passed { "pass" } else { "FAIL" }, c.contract, c.check);
                    }
                    println!();
                }
                if let Some(s) = &e.substrait {
                    println!("== substrait ==\n{s}\n");
                }
                if !e.kernels.is_empty() {
                    println!("== kernels ==");
                    for k in &e.kernels {
                        println!("{} -> {:?}: {}", k.kernel, k.lane, k.detail);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Datasets { json } => {
            let mut p = open(manifest)?;
            p.refresh().map_err(|e| vec![e])?;
            let infos = relspec_core::project::dataset_infos(&mut p)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&infos).unwrap());
            } else {
                for d in &infos {
                    println!(
                        "{}  {} ({})  {} file(s)  fingerprint {}",
                        d.name,
                        d.location,
                        d.format,
                        d.files.len(),
                        &d.fingerprint[..12]
                    );
                    for c in &d.schema {
                        println!("    {}: {}{}", c.name, c.data_type, if c.nullable { "" } else { " NOT NULL" });
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { json, once, jobs, debounce_ms } => {
            use relspec_core::watch::{WatchEvent, WatchOptions};
            use std::io::Write;
            let opts =
                WatchOptions { once, jobs, quiet: std::time::Duration::from_millis(debounce_ms), ..Default::default() };
            let sink = move |ev: WatchEvent| {
                let mut out = std::io::stdout().lock();
                if json {
                    let _ = writeln!(out, "{}", serde_json::to_string(&ev).unwrap());
                } else {
                    match &ev {
                        WatchEvent::Watching { roots } => {
                            let _ = writeln!(out, "watching {} (Ctrl-C to stop)", roots.join(", "));
                        }
                        WatchEvent::Change { paths, rescan } => {
                            let what = if *rescan { "rescan".to_string() } else { paths.join(", ") };
                            let _ = writeln!(out, "change: {what}");
                        }
                        WatchEvent::Rule(r) if r.status == Status::Built => {
                            let _ = writeln!(
                                out,
                                "built   {:<28} {:>8} rows {:>8.1} ms",
                                r.rule,
                                r.rows.unwrap_or(0),
                                r.elapsed_ms
                            );
                        }
                        WatchEvent::Rule(r) if r.status == Status::Failed => {
                            let _ = writeln!(out, "FAILED  {}", r.rule);
                        }
                        WatchEvent::Rule(_) => {}
                        WatchEvent::Error { rendered, .. } => {
                            let _ = writeln!(out, "{rendered}");
                        }
                        WatchEvent::BuildDone { ok, built, reused, failed, elapsed_ms, latency_ms } => {
                            let lat =
                                latency_ms.map(|l| format!(", {l:.1} ms from change to publish")).unwrap_or_default();
                            let status = if *ok { "ok" } else { "FAILED (last good outputs kept)" };
                            let _ = writeln!(
                                out,
                                "{status}: {built} built, {reused} reused, {failed} failed in {elapsed_ms:.1} ms{lat}"
                            );
                        }
                        WatchEvent::Cancelled => {
                            let _ = writeln!(out, "cancelled: a newer change arrived");
                        }
                    }
                }
                let _ = out.flush();
            };
            let ok = relspec_core::watch::watch(manifest, &opts, &sink).map_err(|e| vec![e])?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
        }
        Command::Synth { dir, rules, rows } => {
            relspec_core::synth::write_workspace(&dir, rules, rows)
                .map_err(|e| vec![Diag::new(ErrorKind::Io(format!("{}: {e}", dir.display())))])?;
            println!("wrote {rules} rules to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc => {
            let mut p = open(manifest)?;
            let g = relspec_core::maintenance::gc(&mut p)?;
            println!(
                "gc: removed {} records and {} objects ({} bytes); kept {} live outputs",
                g.records, g.objects, g.bytes, g.live
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean => {
            let p = open(manifest)?;
            let (cache, out) = relspec_core::maintenance::clean(&p).map_err(|e| vec![e])?;
            println!("removed the cache in {} and the outputs in {}", cache.display(), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn lineage_cmd(manifest: &Path, target: &str, upstream: bool, downstream: bool, json: bool) -> CliResult {
    use relspec_core::graph::render_tree;
    let mut p = open(manifest)?;
    let a = relspec_core::inspect::lineage(&mut p, target, upstream, downstream)?;
    let (down, table, trees, keys) = (a.direction == "downstream", &a.table, &a.columns, &a.row_keys);
    if json {
        println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
    } else {
        let mut out = String::new();
        for t in trees {
            render_tree(t, !down, &mut out);
        }
        if !keys.is_empty() {
            out.push_str(&format!("rows of {table} are decided by:\n"));
            for k in keys {
                out.push_str(&format!("    {}.{} ({})\n", k.table, k.column, relspec_core::graph::how_name(k.how)));
            }
        }
        print!("{out}");
    }
    std::mem::forget(p);
    Ok(ExitCode::SUCCESS)
}

fn diff_cmd(
    manifest: &Path,
    base: Option<&str>,
    base_dir: Option<&Path>,
    json: bool,
    fail_on_breaking: bool,
) -> CliResult {
    use relspec_core::diff::{Base, Change, CompareError, Detail, compare_versions};
    let base = match (base, base_dir) {
        (_, Some(d)) => Base::Dir(d.to_path_buf()),
        (Some(r), None) => Base::Git(r.to_string()),
        (None, None) => return Err(vec![Diag::new(ErrorKind::Usage("give --base GIT_REF or --base-dir PATH".into()))]),
    };
    let report = match compare_versions(manifest, &base) {
        Ok(r) => r,
        Err(CompareError::Failed(errs)) => return Err(errs),
        Err(CompareError::DoesNotCompile { which, errors }) => {
            if json {
                let errs: Vec<serde_json::Value> = errors.iter().map(|(e, t)| e.to_json(t.as_deref())).collect();
                println!("{}", serde_json::json!({"ok": false, "version": which, "errors": errs}));
            } else {
                eprintln!("error: the {which} version does not compile:");
                for (e, t) in errors {
                    eprintln!("{:?}", e.to_report(t));
                }
            }
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    } else if report.rules.is_empty() {
        println!("no changes");
    } else {
        for r in &report.rules {
            let what = match r.change {
                Change::Added => "added  ",
                Change::Removed => "removed",
                Change::Changed => "changed",
            };
            println!("{what} {}{}", r.rule, if r.breaking { "  (breaking)" } else { "" });
            for d in &r.details {
                let line = match d {
                    Detail::ColumnAdded { column, data_type } => format!("column `{column}` added ({data_type})"),
                    Detail::ColumnRemoved { column } => format!("column `{column}` removed"),
                    Detail::ColumnRenamed { from, to } => format!("column `{from}` renamed to `{to}`"),
                    Detail::ColumnRetyped { column, from, to } => format!("column `{column}` retyped: {from} -> {to}"),
                    Detail::ColumnChanged { column } => format!("column `{column}` computed differently"),
                    Detail::RowsChanged => "rows changed (a filter, join, grouping or limit)".to_string(),
                    Detail::Equivalent => "definition changed; same columns and rows".to_string(),
                };
                println!("    - {line}");
            }
        }
        if !report.affected.is_empty() {
            println!("affected downstream:");
            for a in &report.affected {
                println!(
                    "    {}: {}{} (via {})",
                    a.rule,
                    if a.rows { "rows, " } else { "" },
                    a.columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
                    a.because.join(", ")
                );
            }
        }
        println!(
            "{} rule(s) changed{}",
            report.rules.len(),
            if report.breaking { ", breaking" } else { ", none breaking" }
        );
    }

    Ok(if fail_on_breaking && report.breaking { ExitCode::from(EXIT_BREAKING) } else { ExitCode::SUCCESS })
}

fn summary(report: &BuildReport, check: bool) {
    let (built, reused, failed, stale) = (
        report.count(Status::Built),
        report.count(Status::Reused),
        report.count(Status::Failed),
        report.count(Status::Stale),
    );
    if check {
        println!("{stale} stale, {reused} fresh ({:.1} ms)", report.elapsed_ms);
    } else {
        println!(
            "{built} built, {reused} reused{}{} in {:.1} ms",
            if failed > 0 { format!(", {failed} failed") } else { String::new() },
            if report.count(Status::Skipped) > 0 {
                format!(", {} skipped", report.count(Status::Skipped))
            } else {
                String::new()
            },
            report.elapsed_ms
        );
    }
}

/// Progress: a spinner on a terminal, plain lines otherwise, nothing for --json.
struct Display {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    out: std::sync::Mutex<std::io::BufWriter<std::io::Stdout>>,
}

impl Display {
    fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        });
        Display { bar, quiet: json, out: std::sync::Mutex::new(std::io::BufWriter::new(std::io::stdout())) }
    }
    fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        use std::io::Write;
        let _ = self.out.lock().unwrap().flush();
    }
    fn line(&self, s: String) {
        use std::io::Write;
        match &self.bar {
            Some(b) => b.println(s),
            None => {
                let _ = writeln!(self.out.lock().unwrap(), "{s}");
            }
        }
    }
}

impl Progress for Display {
    fn started(&self, rule: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("running {rule}"));
        }
    }
    fn finished(&self, r: &RuleReport) {
        if self.quiet {
            return;
        }
        let rows = r.rows.map(|n| format!("{n} rows")).unwrap_or_default();
        let why = if r.reasons.is_empty() { String::new() } else { format!(" ({})", r.reasons.join("; ")) };
        let s = match r.status {
            Status::Built => format!("built   {:<28} {rows:>12}  {:>8.1} ms{why}", r.rule, r.elapsed_ms),
            Status::Reused => format!("reused  {:<28} {rows:>12}", r.rule),
            Status::Stale => format!("stale   {}{why}", r.rule),
            Status::Failed => format!("FAILED  {}{why}", r.rule),
            Status::Skipped => format!("skipped {}{why}", r.rule),
        };
        self.line(s);
    }
}
