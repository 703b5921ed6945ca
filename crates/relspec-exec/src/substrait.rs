//! Substrait plans of rules (the `substrait` cargo feature): each executed
//! rule's logical plan encoded as a Substrait protobuf, stored beside its
//! artifact as `artifacts/<output key>.substrait`.
//!
//! Architecture invariant: the encoding is a pure function of the plan, so
//! the same plan gives byte-identical files across runs.

use crate::error::{Diag, ErrorKind, Result};
use crate::store::Store;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use prost::Message;

/// Encode `plan` as Substrait bytes.
pub fn encode(ctx: &SessionContext, plan: &LogicalPlan) -> Result<Vec<u8>> {
    let mut proto = datafusion_substrait::logical_plan::producer::to_substrait_plan(plan, &ctx.state())
        .map_err(|e| Diag::new(ErrorKind::Plan(format!("cannot express the plan in Substrait: {e}"))))?;
    // The producer lists extension declarations in hash-map order; each carries
    // its anchor, so a sorted list means the same plan and gives stable bytes.
    proto.extensions.sort_by_cached_key(|e| e.encode_to_vec());
    proto.extension_urns.sort_by_cached_key(|e| e.encode_to_vec());
    Ok(proto.encode_to_vec())
}

/// Decode Substrait bytes into a logical plan over `ctx`'s tables and functions.
pub async fn decode(ctx: &SessionContext, bytes: &[u8]) -> Result<LogicalPlan> {
    let proto = datafusion_substrait::serializer::deserialize_bytes(bytes)
        .map_err(|e| Diag::new(ErrorKind::Plan(format!("invalid Substrait plan: {e}"))))?;
    datafusion_substrait::logical_plan::consumer::from_substrait_plan(&ctx.state(), &proto)
        .await
        .map_err(|e| Diag::new(ErrorKind::Plan(format!("cannot consume the Substrait plan: {e}"))))
}

/// Write the Substrait plan of output `key`; returns its path relative to the cache.
pub async fn write(ctx: &SessionContext, store: &Store, key: &str, plan: &LogicalPlan) -> Result<String> {
    let bytes = encode(ctx, plan)?;
    let rel = format!("{}/{key}.substrait", crate::store::layout::ARTIFACTS);
    let path = store.dir().join(&rel);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(rel);
    }
    store.write_atomic(&path, &bytes, false)?;
    Ok(rel)
}
