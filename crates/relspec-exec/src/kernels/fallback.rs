//! The Arrow fallback lane: a kernel runs as Arrow-rs compute over the
//! materialized batches of the step before, inside the same rule's plan.
//!
//! A [`FallbackTable`] wraps the logical plan of the steps before; scanning it
//! plans that input, and [`FallbackExec`] collects its batches (reserving
//! their memory in the session's pool, so an input larger than the limit is a
//! clear "resources exhausted" error, not an abort), applies the kernel and
//! streams the result. The steps after read it like any table; the rule's
//! contract is checked on the final schema as for any rule.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// A fallback kernel: all input batches in, output batches (of the given schema) out.
pub type Kernel = Arc<dyn Fn(Vec<RecordBatch>, &SchemaRef) -> Result<Vec<RecordBatch>> + Send + Sync>;

/// The result of a fallback kernel over a plan, as a table.
pub struct FallbackTable {
    input: LogicalPlan,
    schema: SchemaRef,
    name: &'static str,
    kernel: Kernel,
}

impl std::fmt::Debug for FallbackTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FallbackTable({})", self.name)
    }
}

impl FallbackTable {
    /// `kernel` (named `name`) over the rows of `input`, producing `schema`.
    pub fn new(input: LogicalPlan, schema: SchemaRef, name: &'static str, kernel: Kernel) -> Self {
        FallbackTable { input, schema, name, kernel }
    }
}

#[async_trait]
impl TableProvider for FallbackTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = state.create_physical_plan(&self.input).await?;
        Ok(Arc::new(FallbackExec::new(
            input,
            self.schema.clone(),
            projection.cloned(),
            self.name,
            self.kernel.clone(),
        )?))
    }
}

/// Executes a fallback kernel over its input's collected batches.
pub struct FallbackExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    name: &'static str,
    kernel: Kernel,
    properties: Arc<PlanProperties>,
}

impl std::fmt::Debug for FallbackExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FallbackExec({})", self.name)
    }
}

impl FallbackExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        name: &'static str,
        kernel: Kernel,
    ) -> Result<Self> {
        let out = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(out),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(FallbackExec { input, schema, projection, name, kernel, properties })
    }
}

impl DisplayAs for FallbackExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "RelspecArrowFallbackExec: kernel={}", self.name)
    }
}

#[allow(deprecated)]
impl ExecutionPlan for FallbackExec {
    fn name(&self) -> &'static str {
        "RelspecArrowFallbackExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("FallbackExec has one child".into()))?;
        Ok(Arc::new(FallbackExec::new(
            input,
            self.schema.clone(),
            self.projection.clone(),
            self.name,
            self.kernel.clone(),
        )?))
    }
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("FallbackExec has one partition, not {partition}")));
        }
        let (input, kernel, schema, projection, name) =
            (self.input.clone(), self.kernel.clone(), self.schema.clone(), self.projection.clone(), self.name);
        let out_schema = self.properties.eq_properties.schema().clone();
        let run = async move {
            let reservation =
                MemoryConsumer::new(format!("relspec {name} (arrow_fallback)")).register(ctx.memory_pool());
            let mut stream = datafusion::physical_plan::execute_stream(input, ctx)?;
            let mut batches = Vec::new();
            while let Some(b) = stream.next().await {
                let b = b?;
                reservation.try_grow(b.get_array_memory_size())?;
                batches.push(b);
            }
            let out = kernel(batches, &schema)?;
            let out: Vec<Result<RecordBatch>> = match projection {
                Some(p) => out.into_iter().map(|b| b.project(&p).map_err(DataFusionError::from)).collect(),
                None => out.into_iter().map(Ok).collect(),
            };
            drop(reservation);
            Ok::<_, DataFusionError>(futures::stream::iter(out))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, futures::stream::once(run).try_flatten())))
    }
}
