//! Catalog queries whose select list has a subquery the engine cannot plan, answered
//! row by row, as PostgreSQL runs a correlated subquery (a SubPlan per outer row).
//!
//! DataFusion plans correlated subqueries by decorrelating them into joins, and cannot
//! when a subquery calls a table function with the outer row's values
//! (`generate_series(array_lower(con.conkey, 1), ...)`, a LATERAL call). For a statement
//! that reads only catalog relations (small, in memory), such select items are evaluated
//! per outer row instead: the outer query runs with the columns those items read, then
//! each item runs as its own statement with that row's values in place, its table
//! function arguments folded to constants first. The answer is computed while planning
//! and planned as an in-memory table. Never used for a statement that reads a view.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, SelectItem, SetExpr, Statement, TableFactor, Value,
    Visit, VisitMut, Visitor, VisitorMut,
};
use futures::StreamExt;

use super::{QueryPlan, plan_statement};
use crate::error::{Error, Result};
use crate::rewrite::{RewriteContext, RewriteReport};

/// Most outer rows answered row by row (each costs a few small statements).
const MAX_ROWS: usize = 10_000;

/// Whether `error` is the engine refusing a correlated form this module can answer.
pub fn applies_to(error: &Error) -> bool {
    matches!(error, Error::Correlated { .. })
}

/// Whether `statement` reads a view (then it is never answered row by row).
pub fn reads_view(statement: &Statement, cx: &RewriteContext<'_>) -> bool {
    struct V<'a, 'b> {
        cx: &'a RewriteContext<'b>,
        found: bool,
    }
    impl Visitor for V<'_, '_> {
        type Break = ();
        fn pre_visit_relation(
            &mut self,
            name: &datafusion::sql::sqlparser::ast::ObjectName,
        ) -> ControlFlow<()> {
            if self
                .cx
                .semantics
                .view(&crate::sql::last_name(name))
                .is_some()
            {
                self.found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V { cx, found: false };
    let _ = statement.visit(&mut v);
    v.found
}

use crate::sql::subquery::has_subquery;

/// Columns `alias.column` of the outer FROM that `expr` reads.
fn outer_references(expr: &Expr, outer: &[String], found: &mut Vec<Expr>) {
    struct V<'a> {
        outer: &'a [String],
        found: &'a mut Vec<Expr>,
    }
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = expr
                && let [qualifier, _] = parts.as_slice()
                && self.outer.contains(&qualifier.value.to_lowercase())
                && !self.found.contains(expr)
            {
                self.found.push(expr.clone());
            }
            ControlFlow::Continue(())
        }
    }
    let _ = expr.visit(&mut V { outer, found });
}

/// A SQL literal for `value`; None for a type without one here.
fn literal(value: &ScalarValue) -> Option<Expr> {
    if value.is_null() {
        return Some(Expr::Value(Value::Null.into()));
    }
    let number = |n: String| Some(Expr::Value(Value::Number(n, false).into()));
    match value {
        ScalarValue::Boolean(Some(b)) => Some(Expr::Value(Value::Boolean(*b).into())),
        ScalarValue::Int8(Some(_))
        | ScalarValue::Int16(Some(_))
        | ScalarValue::Int32(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::UInt8(Some(_))
        | ScalarValue::UInt16(Some(_))
        | ScalarValue::UInt32(Some(_))
        | ScalarValue::UInt64(Some(_))
        | ScalarValue::Float32(Some(_))
        | ScalarValue::Float64(Some(_))
        | ScalarValue::Decimal128(Some(_), _, _) => number(value.to_string()),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => {
            Some(Expr::Value(Value::SingleQuotedString(s.clone()).into()))
        }
        ScalarValue::List(list) => {
            let values = list.value(0);
            let items = (0..values.len())
                .map(|i| {
                    ScalarValue::try_from_array(&values, i)
                        .ok()
                        .and_then(|v| literal(&v))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Expr::Function(crate::sql::call("make_array", items)))
        }
        _ => None,
    }
}

/// The outer row's values in place of its columns.
struct Substitute<'a>(&'a [(Expr, Expr)]);
impl VisitorMut for Substitute<'_> {
    type Break = ();
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some((_, value)) = self.0.iter().find(|(column, _)| column == expr) {
            *expr = value.clone();
        }
        ControlFlow::Continue(())
    }
}

/// Every row of a planned statement.
async fn rows(ctx: &SessionContext, plan: &QueryPlan) -> Result<Vec<RecordBatch>> {
    let frame = ctx.execute_logical_plan(plan.plan.clone()).await?;
    let mut stream = frame.execute_stream().await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        out.push(batch?);
    }
    Ok(out)
}

/// The single value `SELECT <expr>` gives.
async fn value_of(
    ctx: &SessionContext,
    expr: Expr,
    cx: &RewriteContext<'_>,
) -> Result<ScalarValue> {
    let mut statement = select_of(vec![SelectItem::UnnamedExpr(expr)])?;
    fold_table_function_arguments(ctx, &mut statement, cx).await?;
    let plan = Box::pin(plan_statement(ctx, statement, cx)).await?;
    let batches = rows(ctx, &plan).await?;
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(batch) => Ok(ScalarValue::try_from_array(batch.column(0), 0)?),
        None => Ok(ScalarValue::Null),
    }
}

fn select_of(items: Vec<SelectItem>) -> Result<Statement> {
    let mut statement = crate::sql::parse("SELECT 1")?
        .pop()
        .ok_or_else(|| Error::Internal("empty statement".into()))?;
    if let Statement::Query(q) = &mut statement
        && let SetExpr::Select(select) = q.body.as_mut()
    {
        select.projection = items;
    }
    Ok(statement)
}

/// Table function arguments that are constant expressions (`array_lower(make_array(1, 2), 1)`)
/// become their values: the engine takes literals only.
async fn fold_table_function_arguments(
    ctx: &SessionContext,
    statement: &mut Statement,
    cx: &RewriteContext<'_>,
) -> Result<()> {
    struct Collect(Vec<Expr>);
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                args: Some(args), ..
            } = factor
            {
                for arg in &args.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg
                        && !matches!(e, Expr::Value(_))
                        && !crate::sql::has_column_refs(e)
                    {
                        self.0.push(e.clone());
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = Visit::visit(&*statement, &mut collect);
    let mut folded = Vec::new();
    for e in collect.0 {
        let value = Box::pin(value_of(ctx, e.clone(), cx)).await?;
        let value = literal(&value).ok_or_else(|| {
            Error::unsupported(
                "a table function argument of this type is not supported",
                None,
            )
        })?;
        folded.push((e, value));
    }
    struct Fold<'a>(&'a [(Expr, Expr)]);
    impl VisitorMut for Fold<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                args: Some(args), ..
            } = factor
            {
                for arg in &mut args.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg
                        && let Some((_, value)) = self.0.iter().find(|(from, _)| from == e)
                    {
                        *e = value.clone();
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(statement, &mut Fold(&folded));
    Ok(())
}

/// Answer `statement` row by row (see the module docs).
pub async fn plan(
    ctx: &SessionContext,
    statement: &Statement,
    cx: &RewriteContext<'_>,
) -> Result<QueryPlan> {
    let Statement::Query(query) = statement else {
        return Err(Error::Internal("not a query".into()));
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(Error::unsupported(
            "row-by-row answers need one SELECT",
            None,
        ));
    };
    if query.with.is_some() {
        return Err(Error::unsupported(
            "row-by-row answers do not take WITH",
            None,
        ));
    }
    let outer = crate::sql::subquery::from_aliases(select);
    // Each select item: its output name, and either its position in the outer query or
    // the index of a deferred (per-row) item.
    enum Source {
        Outer(usize),
        Deferred(usize),
    }
    let mut outer_items = Vec::new();
    let mut deferred = Vec::new();
    let mut columns = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }
                if has_subquery(e) =>
            {
                let name = match item {
                    SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                    _ => "?column?".to_string(),
                };
                columns.push((name, Source::Deferred(deferred.len())));
                deferred.push(e.clone());
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                return Err(Error::unsupported("row-by-row answers do not take *", None));
            }
            other => {
                let name = match other {
                    SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                    SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.clone(),
                    SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                        p.last().map(|i| i.value.clone()).unwrap_or_default()
                    }
                    _ => "?column?".to_string(),
                };
                columns.push((name, Source::Outer(outer_items.len())));
                outer_items.push(other.clone());
            }
        }
    }
    let mut references = Vec::new();
    for e in &deferred {
        outer_references(e, &outer, &mut references);
    }
    let first_reference = outer_items.len();
    for (n, r) in references.iter().enumerate() {
        outer_items.push(SelectItem::ExprWithAlias {
            expr: r.clone(),
            alias: Ident::new(format!("kp_ref{n}")),
        });
    }
    let mut outer_query = query.as_ref().clone();
    if let SetExpr::Select(s) = outer_query.body.as_mut() {
        s.projection = outer_items;
    }
    let outer_plan = Box::pin(plan_statement(
        ctx,
        Statement::Query(Box::new(outer_query)),
        cx,
    ))
    .await?;
    let batches = rows(ctx, &outer_plan).await?;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total > MAX_ROWS {
        return Err(Error::unsupported(
            format!("this query needs a subquery evaluated for each of {total} rows"),
            Some("add a condition that selects fewer rows".into()),
        ));
    }

    let mut values: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(total); deferred.len()];
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let mut substitutions = Vec::new();
            for (n, r) in references.iter().enumerate() {
                let value = ScalarValue::try_from_array(batch.column(first_reference + n), row)?;
                let lit = literal(&value).ok_or_else(|| {
                    Error::unsupported(
                        format!("an outer value of type {} in a subquery", value.data_type()),
                        None,
                    )
                })?;
                substitutions.push((r.clone(), lit));
            }
            for (k, e) in deferred.iter().enumerate() {
                let mut e = e.clone();
                let _ = VisitMut::visit(&mut e, &mut Substitute(&substitutions));
                values[k].push(value_of(ctx, e, cx).await?);
            }
        }
    }

    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, source) in &columns {
        let array = match source {
            Source::Outer(i) => {
                let parts: Vec<ArrayRef> = batches.iter().map(|b| b.column(*i).clone()).collect();
                let data_type = outer_plan.plan.schema().field(*i).data_type().clone();
                concat(&parts, &data_type)?
            }
            Source::Deferred(k) => {
                let data_type = values[*k]
                    .iter()
                    .find(|v| !v.is_null())
                    .map(ScalarValue::data_type)
                    .unwrap_or(DataType::Utf8);
                if values[*k].is_empty() {
                    new_null_array(&data_type, 0)
                } else {
                    let typed = values[*k]
                        .iter()
                        .map(|v| {
                            if v.is_null() {
                                ScalarValue::try_from(&data_type)
                            } else {
                                Ok(v.clone())
                            }
                        })
                        .collect::<datafusion::common::Result<Vec<_>>>()?;
                    ScalarValue::iter_to_array(typed)?
                }
            }
        };
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::Engine(e.to_string()))?;
    let table = MemTable::try_new(schema, vec![vec![batch]])?;
    let plan =
        LogicalPlanBuilder::scan("kp_row_by_row", provider_as_source(Arc::new(table)), None)?
            .build()?;
    Ok(QueryPlan {
        plan,
        rewritten_sql: format!("{statement}\n-- answered row by row: {total} outer rows"),
        report: RewriteReport::default(),
        param_types: Vec::new(),
        generation: 0,
        statement: None,
        origins: Vec::new(),
        session_reads: Vec::new(),
        uncacheable: Some("answered row by row while planning"),
        // A scan of rows computed once: nothing in it depends on the time of execution.
        optimizes_once: true,
        optimized: Arc::default(),
    })
}

fn concat(parts: &[ArrayRef], data_type: &DataType) -> Result<ArrayRef> {
    if parts.is_empty() {
        return Ok(new_null_array(data_type, 0));
    }
    let refs: Vec<&dyn datafusion::arrow::array::Array> =
        parts.iter().map(|a| a.as_ref()).collect();
    datafusion::arrow::compute::concat(&refs).map_err(|e| Error::Engine(e.to_string()))
}
