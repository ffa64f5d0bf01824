//! PostgreSQL's operator typing, as a DataFusion planner extension: quoted literals and
//! interval arithmetic.
//!
//! In PostgreSQL a quoted literal such as `'f'` or `'5'` has no type of its own ("unknown")
//! and takes the type of the expression it meets: `attnotnull = 'f'` compares booleans,
//! `'5' * interval '1 day'` multiplies an interval by a number. DataFusion types every
//! quoted literal as text, so it refuses `Boolean = Utf8` and compares `int_col < '10'` as
//! strings. [`UnknownLiteralPlanner`] is consulted for every binary operator while a
//! statement is planned (it sees the input schema, so it knows the other side's type) and
//! casts the literal to that type, as PostgreSQL's operator resolution does.
//!
//! It also plans `number * interval` and `interval / number`, which PostgreSQL has and
//! DataFusion's arithmetic lacks, as a call to [`IntervalTimes`].

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
};
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// Casts a quoted literal to the type of the other operand (see the module docs).
#[derive(Debug)]
pub struct UnknownLiteralPlanner {
    interval_times: Arc<ScalarUDF>,
}

impl Default for UnknownLiteralPlanner {
    fn default() -> Self {
        UnknownLiteralPlanner {
            interval_times: Arc::new(ScalarUDF::from(IntervalTimes::default())),
        }
    }
}

impl ExprPlanner for UnknownLiteralPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let RawBinaryExpr { op, left, right } = expr;
        let left_type = left.get_type(schema).ok();
        let right_type = right.get_type(schema).ok();
        // A cast literal has its target type; the other side keeps the type it had.
        let (left, right, left_type, right_type) = match (
            target(&op, &left, right_type.as_ref()),
            target(&op, &right, left_type.as_ref()),
        ) {
            (Some(to), None) => (cast(left, to.clone()), right, Some(to), right_type),
            (None, Some(to)) => (left, cast(right, to.clone()), left_type, Some(to)),
            _ => (left, right, left_type, right_type),
        };
        let is_interval = |t: &Option<DataType>| matches!(t, Some(DataType::Interval(_)));
        let numeric = |t: &Option<DataType>| t.as_ref().is_some_and(|t| t.is_numeric());
        let times = |interval: Expr, factor: Expr| {
            Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::clone(&self.interval_times),
                vec![interval, cast(factor, DataType::Float64)],
            ))
        };
        match op {
            BinaryOperator::Multiply if is_interval(&left_type) && numeric(&right_type) => {
                Ok(PlannerResult::Planned(times(left, right)))
            }
            BinaryOperator::Multiply if numeric(&left_type) && is_interval(&right_type) => {
                Ok(PlannerResult::Planned(times(right, left)))
            }
            BinaryOperator::Divide if is_interval(&left_type) && numeric(&right_type) => {
                let one = Expr::Literal(ScalarValue::Float64(Some(1.0)), None);
                let inverse = Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(one),
                    Operator::Divide,
                    Box::new(cast(right, DataType::Float64)),
                ));
                Ok(PlannerResult::Planned(times(left, inverse)))
            }
            BinaryOperator::Divide => {
                match left_type
                    .as_ref()
                    .zip(right_type.as_ref())
                    .and_then(|(l, r)| rounded_division(l, r))
                {
                    Some((widened, result)) => {
                        let quotient = Expr::BinaryExpr(BinaryExpr::new(
                            Box::new(cast(left, widened)),
                            Operator::Divide,
                            Box::new(right),
                        ));
                        Ok(PlannerResult::Planned(cast(quotient, result)))
                    }
                    None => Ok(PlannerResult::Original(RawBinaryExpr { op, left, right })),
                }
            }
            _ => Ok(PlannerResult::Original(RawBinaryExpr { op, left, right })),
        }
    }
}

/// The type `literal` takes next to an operand of type `other` under `op`, when it is a
/// quoted (or NULL) literal that PostgreSQL would type from its context.
fn target(op: &BinaryOperator, literal: &Expr, other: Option<&DataType>) -> Option<DataType> {
    let Expr::Literal(value, _) = literal else {
        return None;
    };
    let other = other?;
    let quoted = matches!(value, ScalarValue::Utf8(Some(_)));
    let null = value.is_null();
    match op {
        BinaryOperator::Multiply | BinaryOperator::Divide
            if matches!(other, DataType::Interval(_)) && (quoted || null) =>
        {
            Some(DataType::Float64)
        }
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq
            if quoted && typed_by_context(other) =>
        {
            Some(other.clone())
        }
        BinaryOperator::Plus
        | BinaryOperator::Minus
        | BinaryOperator::Multiply
        | BinaryOperator::Divide
        | BinaryOperator::Modulo
            if quoted && other.is_numeric() =>
        {
            Some(other.clone())
        }
        _ => None,
    }
}

/// A division whose result is a `numeric`, rounded as PostgreSQL rounds it: Arrow's
/// decimal division cuts the quotient after its last place (the dividend's scale + 4);
/// with the dividend widened by five places the quotient is cut five places further,
/// which never moves it across a half of its last place, and the cast back to the
/// division's own type rounds it, half away from zero. Returns the dividend's widened
/// type and the division's result type, when the dividend is a `numeric` (or an integer
/// over a `numeric`). A dividend already at precision 38 (a sum) gives five of its
/// integer digits to the places: one with more than 33 - scale integer digits fails the
/// cast (22003) rather than be divided without them.
fn rounded_division(left: &DataType, right: &DataType) -> Option<(DataType, DataType)> {
    use datafusion::arrow::datatypes::DECIMAL128_MAX_PRECISION;
    use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
    let result = BinaryTypeCoercer::new(left, &Operator::Divide, right)
        .get_result_type()
        .ok()?;
    let DataType::Decimal128(_, result_scale) = result else {
        return None;
    };
    let (precision, scale) = match left {
        DataType::Decimal128(p, s) => (*p, *s),
        DataType::Int8 | DataType::UInt8 => (3, 0),
        DataType::Int16 | DataType::UInt16 => (5, 0),
        DataType::Int32 | DataType::UInt32 => (10, 0),
        DataType::Int64 | DataType::UInt64 => (20, 0),
        _ => return None,
    };
    let places = i16::from(scale) + 5;
    if scale < 0 || places > i16::from(DECIMAL128_MAX_PRECISION) {
        return None;
    }
    let widened = DataType::Decimal128(
        (precision + 5).min(DECIMAL128_MAX_PRECISION),
        i8::try_from(places).ok()?,
    );
    let inner = BinaryTypeCoercer::new(&widened, &Operator::Divide, right)
        .get_result_type()
        .ok()?;
    match inner {
        DataType::Decimal128(_, s) if s > result_scale => Some((widened, result)),
        _ => None,
    }
}

/// Types a quoted literal converts to by a cast (not text, not nested types).
fn typed_by_context(other: &DataType) -> bool {
    other.is_numeric()
        || other.is_temporal()
        || matches!(other, DataType::Boolean | DataType::Interval(_))
}

fn cast(expr: Expr, to: DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(expr), to))
}

/// `interval * float8` as PostgreSQL computes it: fractional months spill into days
/// (30 to a month) and fractional days into time, rounded to microseconds.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IntervalTimes {
    signature: Signature,
}

impl Default for IntervalTimes {
    fn default() -> Self {
        IntervalTimes {
            signature: Signature::exact(
                vec![
                    DataType::Interval(IntervalUnit::MonthDayNano),
                    DataType::Float64,
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for IntervalTimes {
    fn name(&self) -> &str {
        "kp_interval_times"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(intervals), Some(factors)) = (arrays.first(), arrays.get(1)) else {
            return exec_err!("kp_interval_times takes an interval and a number");
        };
        let intervals = intervals.as_primitive::<IntervalMonthDayNanoType>();
        let factors = factors.as_primitive::<Float64Type>();
        let out: IntervalMonthDayNanoArray = intervals
            .iter()
            .zip(factors.iter())
            .map(|(i, f)| Some(interval_times(i?, f?)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

fn interval_times(i: IntervalMonthDayNano, f: f64) -> IntervalMonthDayNano {
    const NANOS_PER_DAY: f64 = 86_400e9;
    let months = f64::from(i.months) * f;
    let whole_months = months.trunc();
    let days = f64::from(i.days) * f + (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    let nanos = (i.nanoseconds as f64) * f + (days - whole_days) * NANOS_PER_DAY;
    let micros = (nanos / 1e3).round();
    // `as` saturates on overflow, as PostgreSQL's "interval out of range" would refuse.
    IntervalMonthDayNano::new(
        whole_months as i32,
        whole_days as i32,
        (micros as i64) * 1000,
    )
}

/// Integer `+`, `-` and `*` that fail on overflow, as PostgreSQL's do (22003 "integer out
/// of range"). DataFusion computes them with Arrow's wrapping kernels, so
/// `9223372036854775807 + 1` would answer a negative number: a wrong number, never
/// returned. [`CheckedIntegers`] turns each such operation into a call of one of these
/// functions (Arrow's checked kernels); a warehouse receives the plain operator and checks
/// its own overflow ([`Checked::sql_operator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checked {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
}

impl Checked {
    const ALL: [Checked; 3] = [Checked::Add, Checked::Sub, Checked::Mul];

    /// The function's name.
    pub fn name(self) -> &'static str {
        match self {
            Checked::Add => "kp_checked_add",
            Checked::Sub => "kp_checked_sub",
            Checked::Mul => "kp_checked_mul",
        }
    }

    fn of(op: Operator) -> Option<Checked> {
        match op {
            Operator::Plus => Some(Checked::Add),
            Operator::Minus => Some(Checked::Sub),
            Operator::Multiply => Some(Checked::Mul),
            _ => None,
        }
    }

    /// The SQL operator a source computes the function `name` with, if it is one of these.
    pub fn sql_operator(name: &str) -> Option<BinaryOperator> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .map(|c| match c {
                Checked::Add => BinaryOperator::Plus,
                Checked::Sub => BinaryOperator::Minus,
                Checked::Mul => BinaryOperator::Multiply,
            })
    }
}

/// One checked operation over two integers of the same type (see [`Checked`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedArithmetic {
    op: Checked,
    signature: Signature,
}

impl CheckedArithmetic {
    fn new(op: Checked) -> Self {
        CheckedArithmetic {
            op,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CheckedArithmetic {
    fn name(&self) -> &str {
        self.op.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [left, right] if left == right && left.is_integer() => Ok(left.clone()),
            _ => exec_err!("{} takes two integers of one type", self.op.name()),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::compute::kernels::numeric;
        let arrow_kernel = match self.op {
            Checked::Add => numeric::add,
            Checked::Sub => numeric::sub,
            Checked::Mul => numeric::mul,
        };
        // PostgreSQL's words: "bigint out of range", not the operands.
        let kernel = |l: &dyn datafusion::arrow::array::Datum,
                      r: &dyn datafusion::arrow::array::Datum| {
            arrow_kernel(l, r).map_err(|e| match e {
                ArrowError::ArithmeticOverflow(_) => ArrowError::ArithmeticOverflow(format!(
                    "{} out of range",
                    l.get().0.data_type()
                )),
                other => other,
            })
        };
        let [left, right] = args.args.as_slice() else {
            return exec_err!("{} takes two integers of one type", self.op.name());
        };
        Ok(match (left, right) {
            (ColumnarValue::Scalar(l), ColumnarValue::Scalar(r)) => {
                let one = kernel(&l.to_scalar()?, &r.to_scalar()?)?;
                ColumnarValue::Scalar(ScalarValue::try_from_array(&one, 0)?)
            }
            (ColumnarValue::Array(l), ColumnarValue::Scalar(r)) => {
                ColumnarValue::Array(kernel(l, &r.to_scalar()?)?)
            }
            (ColumnarValue::Scalar(l), ColumnarValue::Array(r)) => {
                ColumnarValue::Array(kernel(&l.to_scalar()?, r)?)
            }
            (ColumnarValue::Array(l), ColumnarValue::Array(r)) => {
                ColumnarValue::Array(kernel(l, r)?)
            }
        })
    }
}

/// The optimizer rule that checks integer arithmetic (see [`Checked`]). It runs first, so
/// that the simplifier's constant folding evaluates the checked functions too; federated
/// parts are left alone (their SQL spells the plain operators).
#[derive(Debug)]
pub struct CheckedIntegers {
    functions: [Arc<ScalarUDF>; 3],
}

impl Default for CheckedIntegers {
    fn default() -> Self {
        CheckedIntegers {
            functions: Checked::ALL.map(|op| Arc::new(ScalarUDF::from(CheckedArithmetic::new(op)))),
        }
    }
}

impl datafusion::optimizer::OptimizerRule for CheckedIntegers {
    fn name(&self) -> &str {
        "kp_checked_integers"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn apply_order(&self) -> Option<datafusion::optimizer::ApplyOrder> {
        Some(datafusion::optimizer::ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &dyn datafusion::optimizer::OptimizerConfig,
    ) -> Result<Transformed<datafusion::logical_expr::LogicalPlan>> {
        use datafusion::logical_expr::LogicalPlan;
        use datafusion::logical_expr::expr_rewriter::NamePreserver;
        if matches!(plan, LogicalPlan::Extension(_)) {
            return Ok(Transformed::no(plan));
        }
        let schema = input_schema(&plan);
        let names = NamePreserver::new(&plan);
        let mut rewrite = |expr: Expr| -> Result<Transformed<Expr>> {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| self.check(e, &schema))?;
            Ok(if rewritten.transformed {
                rewritten.update_data(|e| name.restore(e))
            } else {
                rewritten
            })
        };
        plan.map_expressions(|expr| {
            // Grouping sets keep their own aliases, as the simplifier does.
            if let Expr::GroupingSet(_) = &expr {
                expr.map_children(&mut rewrite)
            } else {
                rewrite(expr)
            }
        })
    }
}

impl CheckedIntegers {
    fn check(&self, expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        let Expr::BinaryExpr(binary) = expr else {
            return Ok(Transformed::no(expr));
        };
        let integers = match (binary.left.get_type(schema), binary.right.get_type(schema)) {
            (Ok(l), Ok(r)) => l == r && l.is_integer(),
            _ => false,
        };
        let Some(op) = Checked::of(binary.op).filter(|_| integers) else {
            return Ok(Transformed::no(Expr::BinaryExpr(binary)));
        };
        let function = match op {
            Checked::Add => &self.functions[0],
            Checked::Sub => &self.functions[1],
            Checked::Mul => &self.functions[2],
        };
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::clone(function), vec![*binary.left, *binary.right]),
        )))
    }
}

/// The columns a node's expressions may name: its inputs' (a scan's own, for its filters).
fn input_schema(plan: &datafusion::logical_expr::LogicalPlan) -> DFSchema {
    let inputs = plan.inputs();
    let Some((first, rest)) = inputs.split_first() else {
        return plan.schema().as_ref().clone();
    };
    rest.iter()
        .try_fold(first.schema().as_ref().clone(), |all, next| {
            all.join(next.schema())
        })
        .unwrap_or_else(|_| plan.schema().as_ref().clone())
}

/// Register the planner on a session context.
pub fn register(ctx: &datafusion::prelude::SessionContext) {
    use datafusion::execution::FunctionRegistry;
    let state = ctx.state_ref();
    let mut state = state.write();
    if let Err(e) = state.register_expr_planner(Arc::new(UnknownLiteralPlanner::default())) {
        tracing::warn!(error = %e, "could not register the literal typing planner");
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    async fn one_value(sql: &str) -> String {
        let ctx = SessionContext::new();
        crate::operators::register(&ctx);
        let batches = match ctx.sql(sql).await {
            Ok(frame) => frame.collect().await,
            Err(e) => Err(e),
        };
        match batches {
            Ok(batches) => datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .map(|t| t.to_string())
                .unwrap_or_else(|e| e.to_string()),
            Err(e) => format!("error: {e}"),
        }
    }

    #[tokio::test]
    async fn quoted_literals_take_the_other_operands_type() {
        let out = one_value("SELECT true = 't' AS a, false <> 'f' AS b, 9 < '10' AS c").await;
        assert!(out.contains("| true | false | true |"), "{out}");
        let out = one_value("SELECT '5' * interval '1 day' AS d").await;
        assert!(out.contains("5 days"), "{out}");
        let out = one_value("SELECT interval '1 month 1 day' * 1.5 AS d").await;
        assert!(out.contains("1 mons 16 days 12 hours"), "{out}");
        let out = one_value("SELECT interval '1 day' / 4 AS d").await;
        assert!(out.contains("6 hours"), "{out}");
        let out = one_value("SELECT 'x' = 'x' AS s").await;
        assert!(out.contains("| true |"), "{out}");
    }

    #[tokio::test]
    async fn integer_overflow_is_an_error_not_a_wrapped_number() {
        use datafusion::execution::SessionStateBuilder;
        use datafusion::optimizer::{Optimizer, OptimizerRule};
        use std::sync::Arc;
        let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> =
            vec![Arc::new(super::CheckedIntegers::default())];
        rules.extend(Optimizer::new().rules);
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let answer = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                match ctx.sql(sql).await {
                    Ok(frame) => frame.collect().await.map(|b| {
                        datafusion::arrow::util::pretty::pretty_format_batches(&b)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    }),
                    Err(e) => Err(e),
                }
            }
        };
        // Folded at planning time and computed over a column: both refused.
        for sql in [
            "SELECT CAST(9223372036854775807 AS BIGINT) + 1",
            "SELECT x * 2 FROM (VALUES (CAST(9223372036854775807 AS BIGINT))) t(x)",
            "SELECT x - CAST(1 AS INT) FROM (VALUES (CAST(-2147483648 AS INT))) t(x)",
        ] {
            match answer(sql).await {
                Err(e) => assert_eq!(crate::error::Error::from(e).sqlstate(), "22003", "{sql}"),
                Ok(out) => panic!("{sql} answered {out}"),
            }
        }
        let ok = answer("SELECT x + 1 AS y, x * 2 AS z FROM (VALUES (CAST(41 AS BIGINT))) t(x)")
            .await
            .map_err(|e| e.to_string());
        assert!(
            ok.as_ref().is_ok_and(|o| o.contains("| 42 | 82 |")),
            "{ok:?}"
        );
    }

    #[tokio::test]
    async fn numeric_division_is_rounded_half_away_from_zero() {
        // Arrow alone cuts: 0.666666, 0.001666, -0.666666, 0.6666.
        let out = one_value(
            "SELECT CAST(2.00 AS DECIMAL(10,2)) / 3 AS a, CAST(0.01 AS DECIMAL(10,2)) / 6 AS b, \
             CAST(-2.00 AS DECIMAL(10,2)) / 3 AS c, 2 / CAST(3.00 AS DECIMAL(10,2)) AS d, \
             arrow_typeof(CAST(2.00 AS DECIMAL(10,2)) / 3) AS t",
        )
        .await;
        assert!(
            out.contains("| 0.666667 | 0.001667 | -0.666667 | 0.6667 | Decimal128("),
            "{out}"
        );
        // A sum at precision 38 too.
        let out = one_value("SELECT CAST(2.00 AS DECIMAL(38,2)) / 3 AS a").await;
        assert!(out.contains("| 0.666667 |"), "{out}");
        // Integers and floats divide as before.
        let out = one_value("SELECT 7 / 2 AS i, 1.0 / 4.0 AS f").await;
        assert!(out.contains("| 3 | 0.25 |"), "{out}");
    }
}
