//! The command line's shape (clap).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "relspec",
    version,
    about = "Incremental dataflow builds: declarative rules over datasets, executed by DataFusion, materialized as Parquet."
)]
pub(crate) struct Cli {
    /// Path to workspace.toml (or its directory).
    #[arg(short, long, global = true, default_value = "workspace.toml")]
    pub(crate) workspace: PathBuf,
    /// Override a parameter of [params]: `NAME=VALUE`; a list parameter takes
    /// comma-separated values (`langs=python,rust`; `langs=` is empty). Repeatable.
    #[arg(short = 'P', long = "param", global = true, value_name = "NAME=VALUE", value_parser = parse_param)]
    pub(crate) params: Vec<(String, String)>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// Quiet window that ends a batch of changes while a file may still
        /// be being written, ms.
        #[arg(long, default_value_t = 30)]
        debounce_ms: u64,
        /// Quiet window once every changed file is closed after writing,
        /// renamed into place or removed (a complete save), ms.
        #[arg(long, default_value_t = 5)]
        settle_ms: u64,
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
    /// Serve the workspace to an editor: a Language Server over stdio
    /// (diagnostics, hover, go to definition, references, completion, fixes).
    Lsp,
    /// Generate a static docs site: the lineage DAG (search, focus, columns),
    /// a page per rule and per dataset; opens from file://.
    Docs {
        /// Directory to write (default: `site/` in the workspace).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Then serve it on 127.0.0.1 (until interrupted).
        #[arg(long)]
        serve: bool,
        /// Port for --serve (0 = any free port).
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
    /// Create a small working workspace in DIR.
    Init {
        /// Directory to create (must be empty or absent).
        dir: PathBuf,
    },
    /// Remove cached objects no current rule output uses.
    Gc,
    /// Upload the current outputs that the shared remote cache
    /// (`[cache.remote]`) lacks, e.g. to seed it from an existing cache.
    Push,
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
    /// Run a Ballista 55 scheduler or executor that knows relspec's functions
    /// (for `[profile] executor = "ballista"`; needs the `ballista` feature).
    Cluster {
        #[command(subcommand)]
        role: ClusterRole,
    },
    /// Serve `build`, `status` and `check` for this workspace from one resident
    /// process (the CLI forwards them while it runs; `RELSPEC_DAEMON=0` opts out).
    Daemon,
}

/// A process of a Ballista cluster.
#[derive(Subcommand)]
pub(crate) enum ClusterRole {
    /// The scheduler: accepts plans from relspec, hands tasks to executors.
    Scheduler {
        /// Address to listen on (`ip:port`).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: String,
        /// Host name executors and clients reach it by (default: the bind address).
        #[arg(long)]
        external_host: Option<String>,
        /// Leave relspec's functions out, as a stock Ballista scheduler does
        /// (to try how rules fall back).
        #[arg(long, hide = true)]
        stock: bool,
    },
    /// An executor: registers with the scheduler and runs tasks.
    Executor(ExecutorArgs),
}

/// `relspec cluster executor`'s options.
#[derive(clap::Args)]
pub(crate) struct ExecutorArgs {
    /// The scheduler (`df://host:port`).
    #[arg(long, default_value = "df://127.0.0.1:50050")]
    pub(crate) scheduler: String,
    /// Address its services listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind_host: String,
    /// Port of its Flight service (shuffle data).
    #[arg(long, default_value_t = 50051)]
    pub(crate) port: u16,
    /// Port of its gRPC service (task launches).
    #[arg(long, default_value_t = 50052)]
    pub(crate) grpc_port: u16,
    /// Host name the scheduler and other executors reach it by.
    #[arg(long)]
    pub(crate) external_host: Option<String>,
    /// Tasks run at once (0: every core).
    #[arg(long, default_value_t = 0)]
    pub(crate) concurrency: usize,
    /// Directory for shuffle files (default: a fresh one under the system's temp dir).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// Leave relspec's functions out, as a stock Ballista executor does.
    #[arg(long, hide = true)]
    pub(crate) stock: bool,
}

impl Command {
    /// Whether the command prints JSON (so its errors must be JSON too).
    pub(crate) fn json(&self) -> bool {
        match self {
            Command::Build { json, .. }
            | Command::Status { json, .. }
            | Command::Check { json }
            | Command::Explain { json, .. }
            | Command::Datasets { json }
            | Command::Watch { json, .. }
            | Command::Lineage { json, .. }
            | Command::Diff { json, .. } => *json,
            Command::Graph { .. }
            | Command::Init { .. }
            | Command::Gc
            | Command::Push
            | Command::Synth { .. }
            | Command::Clean
            | Command::Daemon
            | Command::Cluster { .. }
            | Command::Lsp
            | Command::Docs { .. } => false,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Mermaid,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE (e.g. `--param langs=python,rust`)")),
    }
}
