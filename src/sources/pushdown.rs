//! Which part of a plan each warehouse runs.
//!
//! `datafusion-federation` cuts out the largest sub-plan whose tables all live on one
//! source, whatever its expressions. A source only gets what it computes the way the
//! embedded engine does: [`PushdownRule`] runs the federation rule, then splits every
//! federated sub-plan that holds an expression the source's dialect does not have (an
//! engine-only function such as `arrow_typeof` or kpitables' own functions, `to_char`
//! whose templates differ, `ILIKE` or integer division on MySQL, ...) so that node runs
//! in kpitables over federated inputs. The answer is the same either way; only how much
//! work the warehouse does changes.
//!
//! Invariant: a federated sub-plan never holds an expression outside its dialect's list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Extension, LogicalPlan, LogicalPlanBuilder, Operator,
};
use datafusion::optimizer::{Optimizer, OptimizerConfig, OptimizerRule};
use datafusion_federation::{FederatedPlanNode, FederationOptimizerRule};

use crate::model::SourceKind;

/// The engine's optimizer rules with [`PushdownRule`] where the federation rule goes
/// (after scalar subqueries become joins).
pub fn optimizer_rules(
    table_kinds: HashMap<String, SourceKind>,
) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    let position = rules
        .iter()
        .position(|r| r.name() == "scalar_subquery_to_join")
        .map_or(rules.len(), |p| p + 1);
    rules.insert(
        position,
        Arc::new(PushdownRule {
            federation: FederationOptimizerRule::new(),
            table_kinds,
        }),
    );
    rules
}

/// Federation, then a split of what a source's dialect cannot run.
#[derive(Debug)]
pub struct PushdownRule {
    federation: FederationOptimizerRule,
    /// The source kind of each warehouse table (model table name).
    table_kinds: HashMap<String, SourceKind>,
}

impl OptimizerRule for PushdownRule {
    fn name(&self) -> &str {
        "kp_pushdown"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let federated = self.federation.rewrite(plan, config)?;
        let changed = federated.transformed;
        let split = federated.data.transform_up_with_subqueries(|node| {
            let LogicalPlan::Extension(Extension { node: ext }) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some(federated) = ext.as_any().downcast_ref::<FederatedPlanNode>() else {
                return Ok(Transformed::no(node));
            };
            let Some(kind) = self.kind_of(&federated.plan) else {
                return Ok(Transformed::no(node));
            };
            if pushable(&federated.plan, kind)? {
                return Ok(Transformed::no(node));
            }
            let planner = Arc::clone(&federated.planner);
            split(&federated.plan, &planner, kind).map(Transformed::yes)
        })?;
        Ok(Transformed::new(
            split.data,
            changed || split.transformed,
            TreeNodeRecursion::Continue,
        ))
    }
}

impl PushdownRule {
    /// The kind of source a federated plan reads (all its tables share one source).
    fn kind_of(&self, plan: &LogicalPlan) -> Option<SourceKind> {
        let mut kind = None;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Some(k) = self.table_kinds.get(scan.table_name.table())
            {
                kind = Some(*k);
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        kind
    }
}

/// `plan` as federated sub-plans under the nodes that must run in kpitables.
fn split(
    plan: &LogicalPlan,
    planner: &Arc<dyn datafusion_federation::FederationPlanner>,
    kind: SourceKind,
) -> Result<LogicalPlan> {
    if pushable(plan, kind)? {
        return Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(FederatedPlanNode::new(plan.clone(), Arc::clone(planner))),
        }));
    }
    // A projection or aggregate that stays here needs only the columns it reads: ask the
    // source for those, not for every column of every table below. (Only over an input
    // the source runs whole: below one it does not, the narrowing would only be split
    // again, without end.)
    let needed: Option<HashSet<Column>> = match plan {
        LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) => Some(
            plan.expressions()
                .iter()
                .flat_map(|e| e.column_refs())
                .cloned()
                .collect(),
        ),
        _ => None,
    };
    let inputs = plan
        .inputs()
        .into_iter()
        .map(|input| match &needed {
            Some(columns)
                if columns.len() < input.schema().fields().len() && pushable(input, kind)? =>
            {
                let narrowed = LogicalPlanBuilder::from(input.clone())
                    .project(
                        input
                            .schema()
                            .columns()
                            .into_iter()
                            .filter(|c| columns.contains(c))
                            .map(Expr::Column),
                    )?
                    .build()?;
                split(&narrowed, planner, kind)
            }
            _ => split(input, planner, kind),
        })
        .collect::<Result<Vec<_>>>()?;
    plan.with_new_exprs(plan.expressions(), inputs)
}

/// Can the source run every expression of `plan` (subqueries included)?
fn pushable(plan: &LogicalPlan, kind: SourceKind) -> Result<bool> {
    let mut ok = true;
    plan.apply_with_subqueries(|node| {
        let schemas: Vec<&DFSchema> = node
            .inputs()
            .iter()
            .map(|i| i.schema().as_ref())
            .chain(std::iter::once(node.schema().as_ref()))
            .collect();
        for expr in node.expressions() {
            if !expression_pushable(&expr, kind, &schemas) {
                ok = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(ok)
}

fn expression_pushable(expr: &Expr, kind: SourceKind, schemas: &[&DFSchema]) -> bool {
    let mut ok = true;
    let _ = expr.apply(|e| {
        let fine = match e {
            Expr::ScalarFunction(f) => scalar_supported(kind, f.name()),
            Expr::AggregateFunction(f) => aggregate_supported(kind, f.func.name()),
            Expr::WindowFunction(w) => window_supported(kind, w.fun.name()),
            Expr::Like(like) => !(like.case_insensitive && kind == SourceKind::Mysql),
            Expr::SimilarTo(_) => false,
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::RegexMatch
                | Operator::RegexIMatch
                | Operator::RegexNotMatch
                | Operator::RegexNotIMatch => kind == SourceKind::Postgres,
                // MySQL's `/` of two integers is a decimal, not PostgreSQL's integer
                // division: such a division runs in kpitables.
                Operator::Divide if kind == SourceKind::Mysql => {
                    !(integer(left, schemas) && integer(right, schemas))
                }
                Operator::StringConcat => kind == SourceKind::Postgres,
                _ => true,
            },
            Expr::Placeholder(_) => false,
            _ => true,
        };
        if fine {
            Ok(TreeNodeRecursion::Continue)
        } else {
            ok = false;
            Ok(TreeNodeRecursion::Stop)
        }
    });
    ok
}

/// Is `expr` of an integer type (unknown counts as integer, to stay on the safe side)?
fn integer(expr: &Expr, schemas: &[&DFSchema]) -> bool {
    schemas
        .iter()
        .find_map(|s| expr.get_type(*s).ok())
        .is_none_or(|t| t.is_integer())
}

/// Scalar functions both the embedded engine and every source of the kind compute the
/// same way, under the name the unparser writes.
fn scalar_supported(kind: SourceKind, name: &str) -> bool {
    // The engine's checked integer operators are sent as the plain operators.
    if crate::operators::Checked::sql_operator(name).is_some() {
        return true;
    }
    const COMMON: &[&str] = &[
        "abs",
        "ceil",
        "floor",
        "round",
        "sqrt",
        "power",
        "exp",
        "ln",
        "sign",
        "coalesce",
        "nullif",
        "greatest",
        "least",
        "concat",
        "concat_ws",
        "lower",
        "upper",
        "character_length",
        "substr",
        "substring",
        "ltrim",
        "rtrim",
        "replace",
        "left",
        "right",
        "lpad",
        "rpad",
        "reverse",
        "repeat",
        "md5",
        "ascii",
        "date_trunc",
        "date_part",
        crate::time_zone::LOCAL_TIME,
        "now",
        "current_date",
        "pi",
        "degrees",
        "radians",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "atan2",
        "octet_length",
    ];
    const POSTGRES: &[&str] = &[
        "trunc",
        "log",
        "log10",
        "log2",
        "btrim",
        "strpos",
        "split_part",
        "starts_with",
        "initcap",
        "translate",
        "chr",
        "regexp_replace",
        "date_bin",
        "make_date",
        "cbrt",
        "gcd",
        "lcm",
        "factorial",
        "to_hex",
        "bit_length",
        "cot",
    ];
    const MYSQL: &[&str] = &["log10", "log2"];
    COMMON.contains(&name)
        || match kind {
            SourceKind::Postgres => POSTGRES.contains(&name),
            SourceKind::Mysql => MYSQL.contains(&name),
            SourceKind::Files => true,
        }
}

fn aggregate_supported(kind: SourceKind, name: &str) -> bool {
    // DataFusion's `stddev` is the sample deviation, MySQL's STDDEV the population one.
    const COMMON: &[&str] = &["sum", "count", "avg", "min", "max", "stddev_pop", "var_pop"];
    const POSTGRES: &[&str] = &[
        "stddev",
        "bool_and",
        "bool_or",
        "array_agg",
        "string_agg",
        "corr",
        // Ordered-set aggregates, computed as crate::percentiles computes them; MySQL and
        // MariaDB have them as window functions only.
        "percentile_cont",
        "percentile_disc",
    ];
    COMMON.contains(&name) || (kind == SourceKind::Postgres && POSTGRES.contains(&name))
}

fn window_supported(kind: SourceKind, name: &str) -> bool {
    // The ranking and offset functions, and those that read their frame.
    const FRAMED: &[&str] = &["first_value", "last_value", "nth_value"];
    // PostgreSQL: "OVER is not supported for ordered-set aggregate".
    const ORDERED_SET: &[&str] = &["percentile_cont", "percentile_disc"];
    super::dialect::FRAMELESS.contains(&name)
        || FRAMED.contains(&name)
        || (aggregate_supported(kind, name) && !ORDERED_SET.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_gets_only_what_it_computes_the_same_way() {
        assert!(scalar_supported(SourceKind::Postgres, "date_trunc"));
        assert!(scalar_supported(SourceKind::Mysql, "date_trunc"));
        assert!(scalar_supported(SourceKind::Postgres, "btrim"));
        assert!(!scalar_supported(SourceKind::Mysql, "btrim"));
        // DataFusion's log(x) is base 10; MySQL's LOG(x) is the natural logarithm.
        assert!(!scalar_supported(SourceKind::Mysql, "log"));
        // Engine-only and kpitables functions never leave.
        assert!(!scalar_supported(SourceKind::Postgres, "arrow_typeof"));
        assert!(!scalar_supported(SourceKind::Postgres, "to_char"));
        assert!(aggregate_supported(SourceKind::Mysql, "count"));
        assert!(!aggregate_supported(SourceKind::Mysql, "string_agg"));
        // Percentiles: PostgreSQL's aggregates; MariaDB's are window functions only, and
        // PostgreSQL has no window form.
        assert!(aggregate_supported(SourceKind::Postgres, "percentile_cont"));
        assert!(!aggregate_supported(SourceKind::Mysql, "percentile_disc"));
        assert!(!window_supported(SourceKind::Postgres, "percentile_cont"));
    }
}
