//! The commands: each opens the workspace, calls relspec-core and hands the
//! result to `render`.

use crate::cli::{Command, GraphFormat};
use crate::render::{Display, errors_json, print_errors, summary};
use crate::{EXIT_BREAKING, EXIT_ERROR};
use relspec_core::build::{self, BuildOptions, BuildReport, Status};
use relspec_core::error::{Diag, ErrorKind};
use relspec_core::project::Project;
use relspec_core::snapshot;
use std::path::Path;
use std::process::ExitCode;

pub(crate) type CliResult = Result<ExitCode, Vec<Diag>>;

/// Print a build's report: one JSON document with its verdict and located
/// `errors`, or the summary line (errors are printed by the caller).
fn print_build(report: &BuildReport, json: bool, check: bool, errors: serde_json::Value) {
    let stale = report.count(Status::Stale);
    for w in report.remote.iter().flat_map(|r| &r.warnings) {
        eprintln!("warning: {w}");
    }
    if json {
        /// The report with its verdict and located errors.
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            report: &'a BuildReport,
            ok: bool,
            errors: serde_json::Value,
        }
        let out = Out { report, ok: report.ok() && !(check && stale > 0), errors };
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let _ = serde_json::to_writer(&mut w, &out);
        let _ = writeln!(w);
    } else {
        summary(report, check);
    }
}

/// Print what is stale and why (`relspec status`).
fn print_status(report: &BuildReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).unwrap());
    } else {
        for r in &report.rules {
            match r.status {
                Status::Stale => println!("stale  {}  ({})", r.rule, r.reasons.join("; ")),
                _ => println!("fresh  {}", r.rule),
            }
        }
        println!("{} stale, {} fresh", report.count(Status::Stale), report.count(Status::Reused));
    }
}

fn open(manifest: &Path, params: &[(String, String)]) -> Result<Project, Vec<Diag>> {
    Project::open_with_params(manifest, params).map_err(|e| vec![e])
}

pub(crate) fn run(cmd: Command, manifest: &Path, params: &[(String, String)]) -> CliResult {
    match cmd {
        Command::Daemon => {
            crate::daemon::serve(manifest).map_err(|e| vec![Diag::new(ErrorKind::Usage(e))])?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { dir } => {
            relspec_core::scaffold::init(&dir).map_err(|e| vec![e])?;
            println!("created workspace in {}; run `relspec -w {} build`", dir.display(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { select, jobs, json, check } => {
            let opts = BuildOptions { select, jobs, dry_run: check, cancel: None, snapshot: true };
            let progress = Display::new(json);
            // The last clean build's snapshot answers when nothing changed,
            // and narrows the build to the edited rule files when only they did.
            match relspec_core::snapshot::try_build(manifest, params, &opts, &progress) {
                snapshot::Fast::Noop(report) => {
                    progress.clear();
                    print_build(&report, json, check, serde_json::json!([]));
                    // The process exits next: skip freeing the report.
                    crate::daemon::done(report);
                    return Ok(ExitCode::SUCCESS);
                }
                snapshot::Fast::Partial(report, p) => {
                    progress.clear();
                    if !json {
                        print_errors(&*p, &report.errors);
                    }
                    print_build(&report, json, check, errors_json(&*p, &report.errors));
                    let code = if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) };
                    // The process exits next: skip tearing down the project and the report.
                    crate::daemon::done((p, report));
                    return Ok(code);
                }
                snapshot::Fast::Full => {}
            }
            let mut p = open(manifest, params)?;
            let report = match build::build(&mut p, &opts, &progress) {
                Ok(r) => r,
                Err(errs) => {
                    progress.clear();
                    if json {
                        println!("{}", serde_json::json!({"ok": false, "errors": errors_json(&p, &errs)}));
                    } else {
                        print_errors(&p, &errs);
                    }
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
            };
            progress.clear();
            let stale = report.count(Status::Stale);
            if !json {
                print_errors(&p, &report.errors);
            }
            print_build(&report, json, check, errors_json(&p, &report.errors));
            // The process exits next: skip tearing down the database (it costs
            // more than a no-op build).
            crate::daemon::done(p);
            Ok(if !report.ok() || (check && stale > 0) { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS })
        }
        Command::Status { select, json } => {
            let opts = BuildOptions { select, dry_run: true, ..Default::default() };
            if let snapshot::Fast::Noop(report) =
                relspec_core::snapshot::try_build(manifest, params, &opts, &build::NoProgress)
            {
                print_status(&report, json);
                return Ok(ExitCode::SUCCESS);
            }
            let mut p = open(manifest, params)?;
            let report = match build::build(&mut p, &opts, &build::NoProgress) {
                Ok(r) => r,
                Err(errs) => {
                    if json {
                        println!("{}", serde_json::json!({"ok": false, "errors": errors_json(&p, &errs)}));
                    } else {
                        print_errors(&p, &errs);
                    }
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
            };
            print_status(&report, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { json } => {
            let mut p = open(manifest, params)?;
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
                print_errors(&p, errs);
            }
            crate::daemon::done(p);
            Ok(if errs.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
        }
        Command::Lineage { target, upstream, downstream, json } => {
            lineage_cmd(manifest, params, &target, upstream, downstream, json)
        }
        Command::Graph { format, columns } => {
            let mut p = open(manifest, params)?;
            p.refresh().map_err(|e| vec![e])?;
            let errs = p.static_errors();
            if !errs.is_empty() {
                print_errors(&p, &errs);
                return Ok(ExitCode::from(EXIT_ERROR));
            }
            let lineages = if columns {
                let set = relspec_core::analysis::analyze(&mut p, &[]).map_err(|e| vec![e])?;
                if !set.errors.is_empty() {
                    print_errors(&p, &set.errors);
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
            let mut p = open(manifest, params)?;
            let e = relspec_core::inspect::explain(&mut p, &rule)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
            } else {
                crate::render::explain(&e);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Datasets { json } => {
            let mut p = open(manifest, params)?;
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
        Command::Watch { json, once, jobs, debounce_ms, settle_ms } => {
            use relspec_core::watch::{WatchEvent, WatchOptions};
            use std::io::Write;
            let opts = WatchOptions {
                once,
                jobs,
                quiet: std::time::Duration::from_millis(debounce_ms),
                settle: std::time::Duration::from_millis(settle_ms.min(debounce_ms)),
                params: params.to_vec(),
                ..Default::default()
            };
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
                        WatchEvent::BuildDone { ok, built, reused, failed, parsed, elapsed_ms, latency_ms } => {
                            let lat =
                                latency_ms.map(|l| format!(", {l:.1} ms from change to publish")).unwrap_or_default();
                            let status = if *ok { "ok" } else { "FAILED (last good outputs kept)" };
                            let parsed =
                                if *parsed > 0 { format!(", {parsed} source files parsed") } else { String::new() };
                            let _ = writeln!(
                                out,
                                "{status}: {built} built, {reused} reused, {failed} failed{parsed} in {elapsed_ms:.1} ms{lat}"
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
        Command::Docs { out, serve, port } => {
            let mut p = open(manifest, params)?;
            let out = out.unwrap_or_else(|| p.root.join("site"));
            let report = match relspec_site::generate(&mut p, &out) {
                Ok(r) => r,
                Err(errs) => {
                    print_errors(&p, &errs);
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
            };
            for e in &report.errors {
                eprintln!("warning: {e}");
            }
            println!(
                "docs: {} pages, {} nodes and {} edges in {}",
                report.pages,
                report.nodes,
                report.edges,
                out.join("index.html").display()
            );
            if serve {
                relspec_site::serve::serve(&out, port, |addr| {
                    println!("serving on http://{addr}/ (Ctrl-C to stop)");
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                })
                .map_err(|e| vec![Diag::new(ErrorKind::Io(format!("--serve: {e}")))])?;
            }
            Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
        }
        Command::Lsp => {
            relspec_ide::server::run_stdio(manifest, params)
                .map_err(|e| vec![Diag::new(ErrorKind::Io(format!("language server: {e}")))])?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Synth { dir, rules, rows } => {
            relspec_core::synth::write_workspace(&dir, rules, rows)
                .map_err(|e| vec![Diag::new(ErrorKind::Io(format!("{}: {e}", dir.display())))])?;
            println!("wrote {rules} rules to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc => {
            let mut p = open(manifest, params)?;
            let g = relspec_core::maintenance::gc(&mut p)?;
            println!(
                "gc: removed {} records, {} objects and {} fragment packs ({} bytes); kept {} live outputs",
                g.records, g.objects, g.packs, g.bytes, g.live
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Push => {
            let mut p = open(manifest, params)?;
            let r = relspec_core::remote::push(&mut p)?;
            let pack = if r.pack { "; uploaded the pack of the whole build" } else { "" };
            println!("push: uploaded {} outputs to {}; {} already there{pack}", r.uploaded, r.url, r.present);
            if r.stale > 0 {
                eprintln!("warning: {} rules have no current output (run `relspec build` first)", r.stale);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster { role } => {
            use crate::cli::ClusterRole;
            use relspec_core::cluster;
            match role {
                ClusterRole::Scheduler { bind, external_host, stock } => {
                    cluster::bind_address(&bind).map_err(|e| vec![e])?;
                    eprintln!("relspec cluster: Ballista scheduler on {bind} (Ctrl-C stops it)");
                    cluster::serve_scheduler(&bind, external_host.as_deref(), !stock).map_err(|e| vec![e])?;
                }
                ClusterRole::Executor(a) => {
                    let opts = cluster::ExecutorOptions {
                        work_dir: a.work_dir.unwrap_or_else(|| {
                            std::env::temp_dir().join(format!("relspec-executor-{}", std::process::id()))
                        }),
                        functions: !a.stock,
                        scheduler: a.scheduler,
                        bind_host: a.bind_host,
                        port: a.port,
                        grpc_port: a.grpc_port,
                        external_host: a.external_host,
                        concurrency: a.concurrency,
                    };
                    cluster::scheduler_address(&opts.scheduler).map_err(|e| vec![e])?;
                    eprintln!(
                        "relspec cluster: Ballista executor on {}:{} for {} (Ctrl-C stops it)",
                        opts.bind_host, opts.port, opts.scheduler
                    );
                    cluster::serve_executor(&opts).map_err(|e| vec![e])?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean => {
            let p = open(manifest, params)?;
            let (cache, out) = relspec_core::maintenance::clean(&p).map_err(|e| vec![e])?;
            println!("removed the cache in {} and the outputs in {}", cache.display(), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn lineage_cmd(
    manifest: &Path,
    params: &[(String, String)],
    target: &str,
    upstream: bool,
    downstream: bool,
    json: bool,
) -> CliResult {
    use relspec_core::graph::render_tree;
    let mut p = open(manifest, params)?;
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
    crate::daemon::done(p);
    Ok(ExitCode::SUCCESS)
}

fn diff_cmd(
    manifest: &Path,
    base: Option<&str>,
    base_dir: Option<&Path>,
    json: bool,
    fail_on_breaking: bool,
) -> CliResult {
    use relspec_core::diff::{Base, CompareError, compare_versions};
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
    } else {
        crate::render::diff(&report);
    }
    Ok(if fail_on_breaking && report.breaking { ExitCode::from(EXIT_BREAKING) } else { ExitCode::SUCCESS })
}
