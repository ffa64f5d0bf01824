//! Executing a planned statement: the physical plan (from the optimized plan kept with
//! the statement, or optimized again), the task context with the per-query memory pool,
//! the constant fast path (`SELECT 1` without the optimizer), the statements sent to each
//! warehouse, `EXPLAIN`, and the guard that turns a panic in the result stream into an
//! error.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_federation::sql::VirtualExecutionPlan;

use super::plan_cache::CacheUse;
use super::{Engine, QueryPlan};
use crate::error::{Error, Result};

impl Engine {
    /// Execute a plan with parameter values for `$1..$n`.
    pub async fn execute(
        &self,
        plan: &QueryPlan,
        params: Vec<ScalarValue>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(self.execute_reporting(plan, params).await?.stream)
    }

    /// [`Engine::execute`], also reporting what the execution reads: the statement sent
    /// to each warehouse source, and whether the engine scans files itself. The stream
    /// has not been polled: nothing has run yet.
    pub async fn execute_reporting(
        &self,
        plan: &QueryPlan,
        params: Vec<ScalarValue>,
    ) -> Result<Execution> {
        if params.is_empty()
            && let Some(batch) = constant_row(&plan.plan)?
        {
            // `SELECT 1` and the like: no optimizer, no physical plan.
            let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                batch.schema(),
                futures::stream::iter([Ok(batch)]),
            );
            return Ok(Execution {
                stream: Box::pin(stream),
                pushed: Vec::new(),
                scans_files: false,
            });
        }
        // One copy of the session state (its function registries) per execution.
        let state = self.ctx.state();
        let physical = self.physical_plan_in(&state, plan, params).await?;
        let pushed = if self.has_warehouse {
            pushed_down(&physical)?
        } else {
            Vec::new()
        };
        let scans_files = scans_files(&physical);
        let stream =
            datafusion::physical_plan::execute_stream(physical, self.task_context(&state)?)?;
        Ok(Execution {
            stream: catch_panics(stream),
            pushed,
            scans_files,
        })
    }

    /// Run a statement the server itself wrote over the base tables (`__kp_base`),
    /// outside every user's scope: the data quality checks. Never client SQL. Warehouse
    /// tables are read through federation like any query (pushed down).
    pub async fn query_base(
        &self,
        sql: &str,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let frame = self.ctx.sql(sql).await?;
        Ok(frame.collect().await?)
    }

    /// The optimized logical plan of `plan` (what the optimizer does at each execution
    /// the plan cache cannot spare).
    pub fn optimize(&self, plan: &QueryPlan) -> Result<LogicalPlan> {
        Ok(self.ctx.state().optimize(&plan.plan)?)
    }

    /// The physical plan of `plan` with `params` in place: optimized once and kept with
    /// the plan when it has no parameters and optimizing again would give the same plan;
    /// optimized with the values in place otherwise (so they reach the warehouse
    /// statement and the file pruning).
    pub async fn physical_plan(
        &self,
        plan: &QueryPlan,
        params: Vec<ScalarValue>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.physical_plan_in(&self.ctx.state(), plan, params).await
    }

    async fn physical_plan_in(
        &self,
        state: &datafusion::execution::SessionState,
        plan: &QueryPlan,
        params: Vec<ScalarValue>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !(params.is_empty() && plan.placeholders_free()) {
            let logical = plan.plan.clone().with_param_values(params)?;
            return Ok(state.create_physical_plan(&logical).await?);
        }
        let optimized = match plan.optimized.get() {
            Some(optimized) => optimized.clone(),
            None => {
                let optimized = state.optimize(&plan.plan)?;
                if plan.optimizes_once {
                    let _ = plan.optimized.set(optimized.clone());
                }
                optimized
            }
        };
        Ok(state
            .query_planner()
            .create_physical_plan(&optimized, state)
            .await?)
    }

    /// The context a query runs in: with a memory pool of its own when the server limits
    /// each query's memory (spilling to disk where an operator can; 53200 where it
    /// cannot).
    fn task_context(
        &self,
        state: &datafusion::execution::SessionState,
    ) -> Result<Arc<datafusion::execution::TaskContext>> {
        let Some(limit) = self.query_memory else {
            return Ok(Arc::new(datafusion::execution::TaskContext::from(state)));
        };
        let shared = self.ctx.runtime_env();
        let mut builder = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(
                datafusion::execution::memory_pool::GreedyMemoryPool::new(limit),
            ));
        builder.disk_manager = Some(Arc::clone(&shared.disk_manager));
        builder.object_store_registry = Arc::clone(&shared.object_store_registry);
        let runtime = builder.build_arc()?;
        Ok(Arc::new(
            datafusion::execution::TaskContext::from(state).with_runtime(runtime),
        ))
    }

    /// The lines of `EXPLAIN`: the semantic rewrite, the optimized plan, and the exact
    /// SQL statement each warehouse source would receive.
    pub async fn explain(&self, plan: &QueryPlan, cache_use: CacheUse) -> Result<Vec<String>> {
        let mut lines = vec![cache_use.describe()];
        lines.push("Semantic rewrite (SQL over base tables):".to_string());
        lines.extend(plan.rewritten_sql.lines().map(|l| format!("  {l}")));
        let optimized = self.ctx.state().optimize(&plan.plan)?;
        lines.push("Optimized plan:".to_string());
        lines.extend(
            optimized
                .display_indent()
                .to_string()
                .lines()
                .map(|l| format!("  {l}")),
        );
        if self.has_warehouse {
            let physical = self.ctx.state().create_physical_plan(&plan.plan).await?;
            let pushed = pushed_down(&physical)?;
            if pushed.is_empty() {
                lines.push("Pushed down: nothing (the engine answers from its own tables)".into());
            }
            for (source, sql) in pushed {
                lines.push(format!("Sent to source \"{source}\":"));
                lines.extend(sql.lines().map(|l| format!("  {l}")));
            }
        }
        Ok(lines)
    }
}

/// A statement ready to run, and what it will read.
pub struct Execution {
    /// The result batches (nothing runs before the first poll).
    pub stream: SendableRecordBatchStream,
    /// The statement sent to each warehouse source, as `(source, SQL)`.
    pub pushed: Vec<(String, String)>,
    /// The engine scans Parquet or CSV files itself (embedded execution, which the
    /// server's execution slots bound); false for catalog tables and pushed-down work.
    pub scans_files: bool,
}

/// Whether `plan` scans files (a data source node over a file scan).
fn scans_files(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    if let Some(source) = plan.downcast_ref::<DataSourceExec>()
        && source
            .data_source()
            .downcast_ref::<FileScanConfig>()
            .is_some()
    {
        return true;
    }
    plan.children().into_iter().any(scans_files)
}

/// `stream` with a panic while it is polled (in the engine, in Arrow) turned into its last
/// item, an error: the statement fails, the session goes on.
fn catch_panics(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    use futures::StreamExt;
    let schema = stream.schema();
    let caught = std::panic::AssertUnwindSafe(stream)
        .catch_unwind()
        .map(|item| match item {
            Ok(batch) => batch,
            Err(payload) => Err(datafusion::error::DataFusionError::External(Box::new(
                Error::from_panic(payload.as_ref()),
            ))),
        });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, caught))
}

/// Each warehouse statement of a physical plan, as `(source, SQL)`, in plan order: the
/// text each source's executor receives ([`crate::sources::warehouse::statement_sent`]).
pub fn pushed_down(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(remote) = plan.downcast_ref::<VirtualExecutionPlan>() {
        let sql = crate::sources::warehouse::statement_sent(remote)?;
        out.push((remote.executor().name().to_string(), sql));
    }
    for child in plan.children() {
        out.extend(pushed_down(child)?);
    }
    Ok(out)
}

impl QueryPlan {
    /// Whether the plan has no `$n` placeholder.
    fn placeholders_free(&self) -> bool {
        self.param_types.is_empty()
    }
}

/// Whether optimizing `plan`'s analyzed form again would give the same plan: no function
/// whose value depends on when it runs (`now()`, `current_date`, `random()` are folded or
/// evaluated by the optimizer at each execution).
pub(super) fn reoptimizes_the_same(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, Volatility};
    let mut same = true;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    same = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if same {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    same
}

/// The one row of a plan that only projects constants over no table (`SELECT 1`,
/// `SELECT 'x' AS a, NULL`), computed without the optimizer and the physical planner.
fn constant_row(
    plan: &LogicalPlan,
) -> Result<Option<datafusion::arrow::record_batch::RecordBatch>> {
    use datafusion::logical_expr::{Expr, Projection};
    let LogicalPlan::Projection(Projection {
        expr,
        input,
        schema,
        ..
    }) = plan
    else {
        return Ok(None);
    };
    if !matches!(input.as_ref(), LogicalPlan::EmptyRelation(e) if e.produce_one_row) {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(expr.len());
    for (e, field) in expr.iter().zip(schema.fields()) {
        let e = match e {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        // A literal, or a cast of one (the compat rules type integer literals as
        // PostgreSQL does: `CAST(1 AS INTEGER)`); a cast that fails is left to the engine,
        // which reports it.
        let value = match e {
            Expr::Literal(value, _) => value.clone(),
            Expr::Cast(cast) => match cast.expr.as_ref() {
                Expr::Literal(value, _) => match value.cast_to(cast.field.data_type()) {
                    Ok(value) => value,
                    Err(_) => return Ok(None),
                },
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let array = value.to_array_of_size(1)?;
        if array.data_type() != field.data_type() {
            return Ok(None);
        }
        columns.push(array);
    }
    let schema = Arc::new(schema.as_arrow().clone());
    datafusion::arrow::record_batch::RecordBatch::try_new(schema, columns)
        .map(Some)
        .map_err(|e| Error::Engine(e.to_string()))
}
