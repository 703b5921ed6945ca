//! Execution on a Ballista cluster (`[profile] executor = "ballista"`).
//!
//! A cluster session is a DataFusion `SessionContext` whose query planner
//! sends plans to a Ballista scheduler (`df://host:port`), or to a scheduler
//! and executor started in this process (`standalone`), built from a fresh
//! session of the engine (its options; DataFusion's functions). A rule's
//! inputs are registered in it as plain listing tables (the files of
//! its datasets, the stored objects of its upstream rules): Ballista ships
//! logical plans to the scheduler, and only such tables travel.
//!
//! `relspec cluster scheduler` / `relspec cluster executor` run Ballista's
//! own scheduler and executor processes with relspec's scalar functions in
//! their registries ([`serve_scheduler`], [`serve_executor`]): a cluster of
//! those runs the rules that call them; a stock Ballista cluster runs the
//! others.
//!
//! Architecture invariant: the cache, keys, contracts and publishing stay on
//! the client; the cluster only executes a lowered plan and streams its
//! sorted rows back, so its output bytes equal local execution's.

use crate::error::{Diag, ErrorKind, Result};
use datafusion::prelude::SessionContext;
use std::path::Path;

fn err(e: impl std::fmt::Display) -> Diag {
    Diag::new(ErrorKind::Execution(format!("ballista: {e}")))
}

/// Whether this build of relspec can execute on Ballista.
pub const AVAILABLE: bool = cfg!(feature = "ballista");

/// A connected cluster session, and whether the cluster knows relspec's
/// own functions (asked once, when a plan first calls one).
pub struct Cluster {
    /// The session whose query planner sends plans to the cluster.
    pub ctx: SessionContext,
    functions: tokio::sync::OnceCell<std::result::Result<(), String>>,
}

impl Cluster {
    /// Whether plans calling relspec's functions can run there: a cluster
    /// started by `relspec cluster` (or the standalone one) knows them, a
    /// stock Ballista cluster does not (why, then). One small job, once.
    pub async fn knows_functions(&self) -> std::result::Result<(), String> {
        self.functions.get_or_init(|| probe_functions(&self.ctx)).await.clone()
    }
}

/// Run one relspec function over a one-row relation on the cluster (a
/// literal argument would be folded on the client and never travel).
async fn probe_functions(ctx: &SessionContext) -> std::result::Result<(), String> {
    let sql = format!("SELECT {} FROM (VALUES ('a/./b')) AS t(x)", crate::kernels::PROBE);
    let ran = async { ctx.sql(&sql).await?.collect().await };
    match ran.await {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let names: Vec<String> =
                crate::kernels::scalar_functions().iter().map(|f| format!("`{}`", f.name())).collect();
            let why = if text.contains("is not provided for scalar function") || text.contains("not found") {
                "its scheduler and executors are not relspec's (start them with `relspec cluster`)".to_string()
            } else {
                text.lines().next().unwrap_or_default().chars().take(200).collect()
            };
            Err(format!("the cluster does not run relspec's functions ({}): {why}", names.join(", ")))
        }
    }
}

/// Whether `plan` calls one of relspec's own scalar functions.
pub fn calls_relspec_functions(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let names: Vec<String> = crate::kernels::scalar_functions().iter().map(|f| f.name().to_string()).collect();
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && names.iter().any(|n| n == f.name())
                {
                    found = true;
                }
                Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
            })
        })
    });
    found
}

/// Connect a cluster session for `scheduler` (`df://host:port` or
/// `standalone`), configured like `local` (options; relspec's functions are
/// added).
#[cfg(feature = "ballista")]
pub async fn connect(local: &SessionContext, scheduler: &str) -> Result<Cluster> {
    use ballista::prelude::SessionContextExt;
    // The standalone cluster's scheduler and executor take their functions
    // from this state.
    for f in crate::kernels::scalar_functions() {
        local.register_udf(f);
    }
    let mut state = local.state();
    // Ballista re-plans a stage's joins after its inputs ran (join selection
    // may swap a hash join's sides), which DataFusion refuses once a join's
    // dynamic filter exists: the job's status update fails in the scheduler
    // and the client waits forever. The filters are an optimization only.
    state.config_mut().options_mut().optimizer.enable_join_dynamic_filter_pushdown = false;
    if scheduler != "standalone" {
        reachable(scheduler)?;
    }
    let ctx = if scheduler == "standalone" {
        SessionContext::standalone_with_state(state).await.map_err(err)?
    } else {
        SessionContext::remote_with_state(scheduler, state).await.map_err(err)?
    };
    // Ballista's session upgrade replaces the scalar functions with its own
    // list: relspec's go back, so plans calling them can be sent.
    for f in crate::kernels::scalar_functions() {
        ctx.register_udf(f);
    }
    Ok(Cluster { ctx, functions: tokio::sync::OnceCell::new() })
}

/// Whether the scheduler at `df://host:port` accepts connections (the
/// client connects lazily; an unreachable one is said at once, by name).
#[cfg(feature = "ballista")]
fn reachable(scheduler: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let unreachable = |why: String| {
        Diag::new(ErrorKind::Execution(format!("cannot reach the Ballista scheduler at {scheduler}: {why}")))
    };
    let (host, port) = scheduler_address(scheduler)?;
    let addrs = (host.as_str(), port).to_socket_addrs().map_err(|e| unreachable(e.to_string()))?;
    let mut last = String::from("no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(unreachable(last))
}

/// Without the `ballista` feature: an error saying how to get it.
#[cfg(not(feature = "ballista"))]
pub async fn connect(_local: &SessionContext, _scheduler: &str) -> Result<Cluster> {
    Err(without_feature("[profile] executor = \"ballista\""))
}

/// Register a dataset in a cluster session as a plain listing table.
pub async fn register_dataset(ctx: &SessionContext, root: &Path, spec: &crate::workspace::DatasetSpec) -> Result<()> {
    use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
    crate::registry::register_store(ctx, spec)?;
    let schema = crate::registry::schema(ctx, root, spec).await?;
    let config = ListingTableConfig::new(crate::registry::table_url(root, spec)?)
        .with_listing_options(crate::registry::listing_options(root, spec)?)
        .with_schema(schema);
    let table = ListingTable::try_new(config).map_err(err)?;
    ctx.register_table(spec.name.as_str(), std::sync::Arc::new(table)).map_err(err)?;
    Ok(())
}

/// `host:port` of a `df://host[:port]` scheduler URL (port 50050 by default).
pub fn scheduler_address(scheduler: &str) -> Result<(String, u16)> {
    let bad = || Diag::new(ErrorKind::Usage(format!("`{scheduler}` is not a scheduler address (`df://host:port`)")));
    let hostport = scheduler.strip_prefix("df://").unwrap_or(scheduler).trim_end_matches('/');
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Ok((host.to_string(), port.parse().map_err(|_| bad())?)),
        None if !hostport.is_empty() => Ok((hostport.to_string(), 50050)),
        _ => Err(bad()),
    }
}

/// The socket address `bind` (`ip:port`) names.
pub fn bind_address(bind: &str) -> Result<std::net::SocketAddr> {
    bind.parse().map_err(|_| Diag::new(ErrorKind::Usage(format!("`{bind}` is not an address to bind (`ip:port`)"))))
}

/// What `relspec cluster executor` is told.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler to register with (`df://host:port`).
    pub scheduler: String,
    /// Address the executor's Flight service binds.
    pub bind_host: String,
    /// Port of the Flight service (shuffle data).
    pub port: u16,
    /// Port of the gRPC service (task launches).
    pub grpc_port: u16,
    /// Host name the scheduler and other executors reach this one by.
    pub external_host: Option<String>,
    /// Tasks run at once (0: the machine's cores).
    pub concurrency: usize,
    /// Directory for shuffle files.
    pub work_dir: std::path::PathBuf,
    /// Whether relspec's functions are registered (else it is a stock executor).
    pub functions: bool,
}

/// Run a Ballista scheduler on `bind` (`host:port`) whose sessions know
/// relspec's functions (unless `functions` is false), until interrupted.
#[cfg(feature = "ballista")]
pub fn serve_scheduler(bind: &str, external_host: Option<&str>, functions: bool) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    use datafusion::execution::registry::FunctionRegistry;
    let address = bind_address(bind)?;
    let mut config = SchedulerConfig::default()
        .with_hostname(external_host.unwrap_or(&address.ip().to_string()))
        .with_port(address.port());
    config.bind_host = address.ip().to_string();
    // A stock scheduler: Ballista's functions only.
    let extra = if functions { plan_functions() } else { vec![] };
    config.override_session_builder = Some(std::sync::Arc::new(move |c| {
        let mut state = ballista_core::utils::default_session_builder(c)?;
        for f in &extra {
            state.register_udf(f.clone())?;
        }
        Ok(state)
    }));
    runtime()?.block_on(async move {
        let cluster = BallistaCluster::new_from_config(&config).await.map_err(err)?;
        ballista_scheduler::scheduler_process::start_server(cluster, address, std::sync::Arc::new(config))
            .await
            .map_err(err)
    })
}

/// Run a Ballista executor registered with `opts.scheduler` whose function
/// registry knows relspec's functions, until interrupted.
#[cfg(feature = "ballista")]
pub fn serve_executor(opts: &ExecutorOptions) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let (scheduler_host, scheduler_port) = scheduler_address(&opts.scheduler)?;
    // A stock executor: Ballista's functions only.
    let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
    for f in plan_functions().into_iter().filter(|_| opts.functions) {
        registry.scalar_functions.insert(f.name().to_string(), f);
    }
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| err(format!("{}: {e}", opts.work_dir.display())))?;
    let config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.port,
        grpc_port: opts.grpc_port,
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrency,
        work_dir: Some(opts.work_dir.to_string_lossy().into_owned()),
        print_thread_info: false,
        override_function_registry: Some(std::sync::Arc::new(registry)),
        ..Default::default()
    };
    runtime()?.block_on(start_executor_process(std::sync::Arc::new(config))).map_err(err)
}

/// Every scalar function a relspec plan may call: a default DataFusion
/// session's (Ballista's own list lacks the nested ones, such as
/// `string_to_array`) and relspec's.
#[cfg(feature = "ballista")]
fn plan_functions() -> Vec<std::sync::Arc<datafusion::logical_expr::ScalarUDF>> {
    let state = datafusion::execution::SessionStateBuilder::new().with_default_features().build();
    let mut all: Vec<_> = state.scalar_functions().values().cloned().collect();
    all.extend(crate::kernels::scalar_functions().into_iter().map(std::sync::Arc::new));
    all
}

#[cfg(feature = "ballista")]
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(err)
}

/// Without the `ballista` feature: an error saying how to get it.
#[cfg(not(feature = "ballista"))]
pub fn serve_scheduler(_bind: &str, _external_host: Option<&str>, _functions: bool) -> Result<()> {
    Err(without_feature("`relspec cluster`"))
}

/// Without the `ballista` feature: an error saying how to get it.
#[cfg(not(feature = "ballista"))]
pub fn serve_executor(_opts: &ExecutorOptions) -> Result<()> {
    Err(without_feature("`relspec cluster`"))
}

/// `what` needs the `ballista` feature: how to get it.
#[cfg(not(feature = "ballista"))]
fn without_feature(what: &str) -> Diag {
    Diag::new(ErrorKind::Usage(format!("{what}: this relspec was built without the `ballista` feature")))
        .with_help("build it with `cargo build --features ballista`")
}
