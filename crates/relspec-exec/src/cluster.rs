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

/// Connect a cluster session for `scheduler` (`df://host:port` or
/// `standalone`), configured like `local` (functions, options).
#[cfg(feature = "ballista")]
pub async fn connect(local: &SessionContext, scheduler: &str) -> Result<SessionContext> {
    use ballista::prelude::SessionContextExt;
    let state = local.state();
    if scheduler != "standalone" {
        reachable(scheduler)?;
    }
    if scheduler == "standalone" {
        SessionContext::standalone_with_state(state).await.map_err(err)
    } else {
        SessionContext::remote_with_state(scheduler, state).await.map_err(err)
    }
}

/// Whether the scheduler at `df://host:port` accepts connections (the
/// client connects lazily; an unreachable one is said at once, by name).
#[cfg(feature = "ballista")]
fn reachable(scheduler: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let unreachable = |why: String| {
        Diag::new(ErrorKind::Execution(format!("cannot reach the Ballista scheduler at {scheduler}: {why}")))
    };
    let hostport = scheduler.trim_start_matches("df://").trim_end_matches('/');
    let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:50050") };
    let addrs = hostport.to_socket_addrs().map_err(|e| unreachable(e.to_string()))?;
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
pub async fn connect(_local: &SessionContext, _scheduler: &str) -> Result<SessionContext> {
    Err(Diag::new(ErrorKind::Usage(
        "[profile] executor = \"ballista\": this relspec was built without the `ballista` feature".into(),
    ))
    .with_help("build it with `cargo build --features ballista`"))
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
