//! Rendering: diagnostics (miette or JSON), the build summary and progress.

use relspec_core::build::{BuildReport, Progress, RuleReport, Status};
use relspec_core::error::Diag;
use relspec_core::project::Project;
use std::io::IsTerminal;
use std::path::Path;

/// Where the text of a diagnostic's file comes from: a loaded project's
/// inputs, or the disk under the workspace root (when none could be loaded).
#[derive(Clone, Copy)]
pub(crate) enum Sources<'a> {
    /// The project's database (what was read, even if the file changed since).
    Project(&'a Project),
    /// Files under this root.
    Root(&'a Path),
}

impl<'a> From<&'a Project> for Sources<'a> {
    fn from(p: &'a Project) -> Self {
        Sources::Project(p)
    }
}

impl Sources<'_> {
    fn text(self, d: &Diag) -> Option<String> {
        let file = &d.location.as_ref()?.file;
        match self {
            Sources::Project(p) => p.file_text(file).or_else(|| std::fs::read_to_string(p.root.join(file)).ok()),
            Sources::Root(root) => std::fs::read_to_string(root.join(file)).ok(),
        }
    }
}

/// Diagnostics on stderr, rendered with their source lines.
pub(crate) fn print_errors<'a>(src: impl Into<Sources<'a>>, errs: &[Diag]) {
    let src = src.into();
    for e in errs {
        eprintln!("{:?}", e.to_report(src.text(e)));
    }
    if errs.len() > 1 {
        eprintln!("error: {} problems found", errs.len());
    }
}

/// Diagnostics as a JSON array (for `--json` commands).
pub(crate) fn errors_json<'a>(src: impl Into<Sources<'a>>, errs: &[Diag]) -> serde_json::Value {
    let src = src.into();
    serde_json::Value::Array(errs.iter().map(|e| e.to_json(src.text(e).as_deref())).collect())
}

/// Source extraction lines (one per source a build extracted) and their
/// warnings (syntax errors, skipped files) on stderr.
fn sources(report: &BuildReport) {
    const SHOWN: usize = 20;
    for s in &report.sources {
        let memo = s.files - s.parsed - s.from_fragments;
        println!(
            "source  {:<28} {} files: {} parsed, {} from cached fragments{} ({:.1} ms)",
            s.source,
            s.files,
            s.parsed,
            s.from_fragments,
            if memo > 0 { format!(", {memo} unchanged in memory") } else { String::new() },
            s.ms
        );
        for w in s.warnings.iter().take(SHOWN) {
            eprintln!("warning: source `{}`: {w}", s.source);
        }
        if s.warnings.len() > SHOWN {
            eprintln!("warning: source `{}`: {} more", s.source, s.warnings.len() - SHOWN);
        }
    }
}

pub(crate) fn summary(report: &BuildReport, check: bool) {
    sources(report);
    if let Some(r) = &report.remote
        && r.hits + r.misses + r.rejected + r.uploaded > 0
    {
        println!(
            "remote cache {}: {} reused ({:.1} MB), {} not there{}{}",
            r.url,
            r.hits,
            r.downloaded_bytes as f64 / 1e6,
            r.misses,
            if r.rejected > 0 { format!(", {} rejected", r.rejected) } else { String::new() },
            if r.write { format!(", {} uploaded", r.uploaded) } else { String::new() },
        );
    }
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
pub(crate) struct Display {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    out: std::sync::Mutex<std::io::BufWriter<std::io::Stdout>>,
}

impl Display {
    pub(crate) fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        });
        Display { bar, quiet: json, out: std::sync::Mutex::new(std::io::BufWriter::new(std::io::stdout())) }
    }
    pub(crate) fn clear(&self) {
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
    fn quiet(&self) -> bool {
        self.quiet
    }
    fn finished(&self, r: &RuleReport) {
        if self.quiet {
            return;
        }
        let rows = r.rows.map(|n| format!("{n} rows")).unwrap_or_default();
        let why = if r.reasons.is_empty() { String::new() } else { format!(" ({})", r.reasons.join("; ")) };
        let s = match r.status {
            Status::Built => format!("built   {:<28} {rows:>12}  {:>8.1} ms{why}", r.rule, r.elapsed_ms),
            Status::Reused if r.remote => format!("reused  {:<28} {rows:>12}  (remote)", r.rule),
            Status::Reused => format!("reused  {:<28} {rows:>12}", r.rule),
            Status::Stale => format!("stale   {}{why}", r.rule),
            Status::Failed => format!("FAILED  {}{why}", r.rule),
            Status::Skipped => format!("skipped {}{why}", r.rule),
        };
        self.line(s);
    }
}

/// `explain` as text.
pub(crate) fn explain(e: &relspec_core::inspect::Explained) {
    let rule = &e.rule;

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
            let lane =
                serde_json::to_value(k.lane).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            println!(
                "{} v{}: lane {lane}, {} ({}){}",
                k.kernel,
                k.version,
                k.function,
                k.volatility,
                match &k.ordering {
                    Some(o) => format!(", ordering: {o}"),
                    None => String::new(),
                }
            );
            println!("    {}", k.detail);
        }
    }
}

/// `diff` as text.
pub(crate) fn diff(report: &relspec_core::diff::DiffReport) {
    use relspec_core::diff::{Change, Detail};
    if report.rules.is_empty() {
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
}
