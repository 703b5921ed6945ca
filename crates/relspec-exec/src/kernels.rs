//! The kernel bridge: operations that are awkward relationally, each with a
//! capability registry entry that says which lane runs it.
//!
//! Lanes, in order of preference: a DataFusion built-in, a native Rust UDF
//! registered with explicit volatility, an Arrow-kernel fallback over
//! materialized batches. Every application records the lane it took.
//!
//! Architecture invariant: winner selection always orders totally (the user's
//! keys, then every other column ascending), so its result never depends on
//! partitioning or batch boundaries.

use datafusion::arrow::array::{Array, ArrayRef, LargeStringArray, StringArray, StringViewArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprFunctionExt, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, SortExpr,
    TypeSignature, Volatility, col, lit,
};
use datafusion::prelude::SessionContext;
use std::collections::HashSet;
use std::sync::Arc;

/// Which implementation lane a kernel application used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// A DataFusion built-in operator or function.
    Builtin,
    /// A native Rust UDF/UDTF registered by relspec.
    NativeUdf,
    /// An Arrow-kernel fallback over materialized batches.
    ArrowFallback,
}

/// One kernel application in a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KernelUse {
    /// Kernel name.
    pub kernel: String,
    /// The lane chosen.
    pub lane: Lane,
    /// How it was realized.
    pub detail: String,
}

/// A registry entry: a kernel, its lane and its implementation version.
#[derive(Debug, Clone, Copy)]
pub struct KernelInfo {
    /// Name as used in rules.
    pub name: &'static str,
    /// Lane it runs in.
    pub lane: Lane,
    /// Version; part of the engine fingerprint.
    pub version: u32,
    /// What it does.
    pub doc: &'static str,
}

/// The capability registry.
pub const KERNELS: &[KernelInfo] = &[
    KernelInfo {
        name: "winner",
        lane: Lane::Builtin,
        version: 1,
        doc: "one row per partition: row_number() over a total order, keep rank 1",
    },
    KernelInfo { name: "unnest", lane: Lane::Builtin, version: 1, doc: "explode a list column (SQL `unnest`)" },
    KernelInfo {
        name: "normalize_path",
        lane: Lane::NativeUdf,
        version: 1,
        doc: "lexically normalize a slash path: drop `.`, fold `..`, collapse `//`",
    },
];

/// Hash of the registry (names, lanes, versions) for the engine fingerprint.
pub fn registry_fingerprint() -> String {
    let mut h = relspec_spec::key::KeyHasher::new("relspec/kernels/v1");
    h.u64("kernels", KERNELS.len() as u64);
    for k in KERNELS {
        h.field("name", k.name).name("lane", &k.lane).field("version", &k.version.to_string());
    }
    h.finish()
}

impl relspec_spec::key::StableName for Lane {
    fn stable_name(&self) -> &'static str {
        match self {
            Lane::Builtin => "builtin",
            Lane::NativeUdf => "native_udf",
            Lane::ArrowFallback => "arrow_fallback",
        }
    }
}

/// Append every column not already ordered on, ascending, so the order is total.
pub fn total_order(mut keys: Vec<SortExpr>, schema: &DFSchema) -> Vec<SortExpr> {
    let present: HashSet<Expr> = keys.iter().map(|k| k.expr.clone()).collect();
    for c in schema.columns() {
        let e = Expr::Column(c);
        if !present.contains(&e) {
            keys.push(e.sort(true, true));
        }
    }
    keys
}

/// Register the native UDF kernels in a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(NormalizePath::new()));
}

/// Winner selection: keep the first row of each partition under a total order.
pub fn winner(df: DataFrame, partition_by: Vec<Expr>, order_by: Vec<SortExpr>) -> Result<(DataFrame, KernelUse)> {
    const RANK: &str = "__relspec_rank";
    let schema = df.schema().clone();
    let order = total_order(order_by, &schema);
    let cols: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    let rank = datafusion::functions_window::expr_fn::row_number()
        .partition_by(partition_by)
        .order_by(order)
        .build()?
        .alias(RANK);
    let df = df.window(vec![rank])?.filter(col(RANK).eq(lit(1u64)))?.select(cols)?;
    let use_ = KernelUse {
        kernel: "winner".into(),
        lane: Lane::Builtin,
        detail: "row_number() window over a total order, rank = 1".into(),
    };
    Ok((df, use_))
}

/// `normalize_path(text) -> text`: lexical path normalization (native UDF, immutable).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NormalizePath {
    signature: Signature,
}

impl NormalizePath {
    /// A new instance.
    pub fn new() -> Self {
        NormalizePath {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8View]),
                    TypeSignature::Exact(vec![DataType::LargeUtf8]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl Default for NormalizePath {
    fn default() -> Self {
        Self::new()
    }
}

/// Lexically normalize a `/`-separated path.
pub fn normalize_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

impl ScalarUDFImpl for NormalizePath {
    fn name(&self) -> &str {
        "normalize_path"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(s) => {
                let v = match s {
                    ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => {
                        v.as_deref().map(normalize_path)
                    }
                    other => return Err(DataFusionError::Plan(format!("normalize_path expects text, got {other:?}"))),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(v)))
            }
            ColumnarValue::Array(a) => {
                let out: StringArray = if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
                    s.iter().map(|v| v.map(normalize_path)).collect()
                } else if let Some(s) = a.as_any().downcast_ref::<StringViewArray>() {
                    s.iter().map(|v| v.map(normalize_path)).collect()
                } else if let Some(s) = a.as_any().downcast_ref::<LargeStringArray>() {
                    s.iter().map(|v| v.map(normalize_path)).collect()
                } else {
                    return Err(DataFusionError::Plan(format!("normalize_path expects text, got {}", a.data_type())));
                };
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_path("./a//b/../c"), "a/c");
        assert_eq!(normalize_path("/x/../../y"), "/y");
        assert_eq!(normalize_path("../a"), "../a");
        assert_eq!(normalize_path("a/.."), ".");
    }
}
