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
