//! The kernel bridge: operations that are awkward relationally. Each kernel
//! has a [`KernelSpec`] (inputs, output contract, volatility, ordering, and
//! the lanes it can run in, in preference order); the compiler takes the
//! first lane available for the rule's input types (or the lane a step
//! forces), and every application records a [`KernelUse`].
//!
//! Lanes, in order of preference: a DataFusion built-in, a native Rust UDF /
//! UDTF (Arrow arrays in and out), an Arrow-kernel fallback over the
//! materialized batches of the step before (see [`fallback`]).
//!
//! Architecture invariants: every lane of a kernel gives the same rows and
//! schema (tests compare the published bytes); winner selection and
//! interval alignment order totally (the user's keys, then every other column
//! ascending), so results never depend on partitioning or batch boundaries.

pub mod explode;
pub mod fallback;
pub mod interval;
pub mod path;

pub use path::{NormalizePath, normalize_path};

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, ExprFunctionExt, LogicalPlan, ScalarUDF, SortExpr, Volatility, col, lit};
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

impl Lane {
    /// The lane named in a rule (`lane = "arrow_fallback"`).
    pub fn parse(name: &str) -> Option<Lane> {
        [Lane::Builtin, Lane::NativeUdf, Lane::ArrowFallback].into_iter().find(|l| {
            use relspec_spec::key::StableName;
            l.stable_name() == name
        })
    }
}

/// One kernel application in a rule: which kernel, the lane it took and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KernelUse {
    /// Kernel name.
    pub kernel: String,
    /// The lane chosen.
    pub lane: Lane,
    /// The function or operator that realizes it in that lane.
    #[serde(default)]
    pub function: String,
    /// Volatility (as DataFusion classifies functions).
    #[serde(default)]
    pub volatility: String,
    /// The ordering it used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    /// The kernel's version.
    #[serde(default)]
    pub version: u32,
    /// Why this lane, and what it applied to.
    pub detail: String,
}

impl KernelUse {
    /// A use of `spec` in `lane`.
    pub fn of(spec: &KernelSpec, lane: Lane, function: &str, ordering: Option<String>, detail: String) -> KernelUse {
        KernelUse {
            kernel: spec.name.to_string(),
            lane,
            function: function.to_string(),
            volatility: volatility_name(spec.volatility).to_string(),
            ordering,
            version: spec.version,
            detail,
        }
    }
}

/// A kernel's registry entry.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// Name as used in rules (step or function name).
    pub name: &'static str,
    /// Implementation version; part of the engine fingerprint, so a change
    /// rebuilds every rule.
    pub version: u32,
    /// The input types it accepts.
    pub inputs: &'static str,
    /// The output schema it guarantees.
    pub output: &'static str,
    /// Volatility, as DataFusion uses it.
    pub volatility: Volatility,
    /// The ordering it requires or imposes.
    pub ordering: &'static str,
    /// The lanes it can run in, in preference order.
    pub lanes: &'static [Lane],
    /// What it does.
    pub doc: &'static str,
}

/// The capability registry.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "stable_dedupe",
        version: 1,
        inputs: "any table; partition keys and order keys are expressions over it",
        output: "the input schema, one row per partition",
        volatility: Volatility::Immutable,
        ordering: "the given order keys, then every other column ascending (a total order)",
        lanes: &[Lane::Builtin],
        doc: "winner selection: per partition, the first row under a total order (step `stable_dedupe`, or `winner`)",
    },
    KernelSpec {
        name: "explode",
        version: 1,
        inputs: "a table with a list column (List, LargeList; builtin also FixedSizeList)",
        output: "the input schema with the list column replaced by its element type (nullable)",
        volatility: Volatility::Immutable,
        ordering: "none (rows are unordered; the rule's output is sorted totally)",
        lanes: &[Lane::Builtin, Lane::ArrowFallback],
        doc: "one row per list element, the parent row's other columns repeated; null and empty lists give no rows",
    },
    KernelSpec {
        name: "interval_align",
        version: 1,
        inputs: "two tables; [start, end] of each as numeric expressions; an optional join condition",
        output: "the left schema, then the right schema (all nullable: rows with no enclosing span keep nulls)",
        volatility: Volatility::Immutable,
        ordering: "per left row: right span width ascending, then every right column ascending",
        lanes: &[Lane::Builtin],
        doc: "for each span of the left, the innermost enclosing span of the right (CST/SCIP span matching)",
    },
    KernelSpec {
        name: "normalize_path",
        version: 1,
        inputs: "text (Utf8, Utf8View, LargeUtf8)",
        output: "text (Utf8)",
        volatility: Volatility::Immutable,
        ordering: "none (row by row)",
        lanes: &[Lane::NativeUdf],
        doc: "lexically normalize a slash path: drop `.`, fold `..`, collapse `//`",
    },
];

/// The registry entry of `name`.
pub fn spec(name: &str) -> &'static KernelSpec {
    KERNELS.iter().find(|k| k.name == name).expect("a registered kernel")
}

/// DataFusion's name for a volatility.
pub fn volatility_name(v: Volatility) -> &'static str {
    match v {
        Volatility::Immutable => "immutable",
        Volatility::Stable => "stable",
        Volatility::Volatile => "volatile",
    }
}

/// Choose the lane of one application: the forced one (if it is one of the
/// kernel's lanes and available), else the first available in preference
/// order. `available` says why a lane cannot run these inputs.
pub fn choose_lane(
    spec: &KernelSpec,
    forced: Option<&str>,
    available: impl Fn(Lane) -> std::result::Result<(), String>,
) -> Result<(Lane, String)> {
    use relspec_spec::key::StableName;
    if let Some(name) = forced {
        let lane = Lane::parse(name).filter(|l| spec.lanes.contains(l)).ok_or_else(|| {
            let names: Vec<&str> = spec.lanes.iter().map(|l| l.stable_name()).collect();
            DataFusionError::Plan(format!("{} has no lane `{name}`; its lanes are {}", spec.name, names.join(", ")))
        })?;
        available(lane).map_err(|why| DataFusionError::Plan(format!("{} lane `{name}`: {why}", spec.name)))?;
        return Ok((lane, "forced by the rule".into()));
    }
    let mut skipped = Vec::new();
    for &lane in spec.lanes {
        match available(lane) {
            Ok(()) if skipped.is_empty() => return Ok((lane, "first lane".into())),
            Ok(()) => return Ok((lane, format!("first available lane ({})", skipped.join("; ")))),
            Err(why) => skipped.push(format!("{} unavailable: {why}", lane.stable_name())),
        }
    }
    Err(DataFusionError::Plan(format!("no lane of {} can run these inputs: {}", spec.name, skipped.join("; "))))
}

/// Hash of the registry (names, versions, lanes, volatility) for the engine fingerprint.
pub fn registry_fingerprint() -> String {
    let mut h = relspec_spec::key::KeyHasher::new("relspec/kernels/v2");
    h.u64("kernels", KERNELS.len() as u64);
    for k in KERNELS {
        h.field("name", k.name).field("version", &k.version.to_string());
        h.field("volatility", volatility_name(k.volatility));
        h.u64("lanes", k.lanes.len() as u64);
        for l in k.lanes {
            h.name("lane", l);
        }
    }
    h.finish()
}

/// The kernel applications found in a plan, in one walk (subqueries
/// included): native-UDF calls (one use per kernel) and `explode(...)`
/// table-function calls (one use per call).
pub fn plan_uses(plan: &LogicalPlan) -> Vec<KernelUse> {
    let mut udfs = std::collections::BTreeSet::new();
    let mut calls = 0;
    let _ = plan.apply_with_subqueries(|node| {
        if explode::is_table_function_call(node) {
            calls += 1;
        }
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::ScalarFunction(f) = x
                    && KERNELS.iter().any(|k| k.name == f.name() && k.lanes.contains(&Lane::NativeUdf))
                {
                    udfs.insert(f.name().to_string());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    let udf = |name: String| {
        let detail = "called in the rule's expressions".to_string();
        KernelUse::of(spec(&name), Lane::NativeUdf, &format!("{name}() scalar UDF"), None, detail)
    };
    (0..calls).map(|_| explode::table_function_use()).chain(udfs.into_iter().map(udf)).collect()
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

/// Register the native UDF / UDTF kernels in a session.
pub fn register(ctx: &SessionContext) {
    for f in scalar_functions() {
        ctx.register_udf(f);
    }
    ctx.register_udtf("explode", Arc::new(explode::ExplodeFunction::new(ctx)));
}

/// An expression calling every function of [`scalar_functions`] on a text
/// column `x` (how a cluster is asked whether it knows them).
pub const PROBE: &str = "normalize_path(x)";

/// relspec's own scalar functions (what a plan may call by name, and what a
/// cluster must know to run it).
pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(NormalizePath::new())]
}

/// Winner selection (`stable_dedupe`): keep the first row of each partition
/// under a total order.
pub fn winner(df: DataFrame, partition_by: Vec<Expr>, order_by: Vec<SortExpr>) -> Result<(DataFrame, KernelUse)> {
    let spec = spec("stable_dedupe");
    let (lane, why) = choose_lane(spec, None, |_| Ok(()))?;
    let described: Vec<String> = order_by.iter().map(|s| s.to_string()).collect();
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
    let ordering = format!("{}, then every other column ascending", described.join(", "));
    let use_ = KernelUse::of(spec, lane, "row_number() window, rank = 1", Some(ordering), why);
    Ok((df, use_))
}
