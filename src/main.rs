//! The `relspec` command line: argument parsing (`cli`), the commands
//! (`commands`, calls into relspec-core), rendering (`render`) and exit codes.
//! Holds no build, planning or comparison logic of its own.

mod cli;
mod commands;
mod daemon;
mod render;

use clap::Parser;
use cli::Cli;
use std::path::Path;
use std::process::ExitCode;

fn main() {
    let t0 = std::time::Instant::now();
    let cli = Cli::parse();
    // Long messages stay on one line so they can be grepped and matched by tools.
    let _ = miette::set_hook(Box::new(|_| Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())));
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELSPEC_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "started");
    // Deep plans (a UNION ALL of thousands of rules, deeply nested
    // expressions) recurse deeply in libraries that do not grow their stack on
    // the heap (sqlparser's visitors and printers, relspec's own plan walks).
    // Run on the process's main thread (a spawned thread's allocations go to a
    // second malloc arena, which cost 10-12% of a no-op build at 5,000 rules)
    // and let its stack grow further than the usual 8 MiB.
    deep_main_stack();
    // A running `relspec daemon` answers builds and status for its workspace.
    let status = match &cli.command {
        cli::Command::Build { .. } | cli::Command::Status { .. } | cli::Command::Check { .. } => {
            daemon::forward(&manifest_of(&cli))
        }
        _ => None,
    };
    let status = status.unwrap_or_else(|| run_cli(cli));
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "exiting");
    // Skip tearing down the database and caches: the process is done.
    // SAFETY: stdout and stderr are flushed by `run_cli`; nothing else needs to run at exit.
    unsafe { libc::_exit(status) }
}

/// The manifest a command line names.
fn manifest_of(cli: &Cli) -> std::path::PathBuf {
    if cli.workspace.is_dir() { cli.workspace.join("workspace.toml") } else { cli.workspace.clone() }
}

/// Run a parsed command line (here, or in a daemon for a client) and return
/// its exit status; stdout and stderr are flushed.
pub(crate) fn run_cli(cli: Cli) -> i32 {
    let manifest = manifest_of(&cli);
    let json = cli.command.json();
    let res = commands::run(cli.command, &manifest, &cli.params);
    let code = match res {
        Ok(code) => code,
        Err(errs) => {
            let root = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
            let src = render::Sources::Root(&root);
            if json {
                // Every error of a `--json` command is JSON on stdout.
                println!("{}", serde_json::json!({"ok": false, "errors": render::errors_json(src, &errs)}));
            } else {
                render::print_errors(src, &errs);
            }
            ExitCode::from(EXIT_ERROR)
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if code == ExitCode::SUCCESS {
        0
    } else if code == ExitCode::from(EXIT_BREAKING) {
        EXIT_BREAKING.into()
    } else {
        EXIT_ERROR.into()
    }
}

/// Raise the soft stack limit (up to the hard limit) so the main thread's
/// stack can grow to [`relspec_core::engine::DEEP_STACK_BYTES`]: Linux checks
/// the limit when the stack grows, and the address space below the main stack
/// is kept free for at least 128 MiB. Only touched pages are committed.
#[cfg(unix)]
fn deep_main_stack() {
    let want = relspec_core::engine::DEEP_STACK_BYTES as libc::rlim_t;
    // SAFETY: plain libc calls on a local, properly initialized struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_STACK, &mut lim) == 0
            && lim.rlim_cur != libc::RLIM_INFINITY
            && lim.rlim_cur < want
        {
            lim.rlim_cur = if lim.rlim_max == libc::RLIM_INFINITY { want } else { want.min(lim.rlim_max) };
            let _ = libc::setrlimit(libc::RLIMIT_STACK, &lim);
        }
    }
}
#[cfg(not(unix))]
fn deep_main_stack() {}

/// Exit status of a failed command: bad input, a failed rule, a stale
/// workspace under `build --check`. (2 is clap's usage error.)
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit status of `diff --fail-on-breaking` when a change is breaking.
pub(crate) const EXIT_BREAKING: u8 = 3;
