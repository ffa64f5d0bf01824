//! PostgreSQL's aggregates where DataFusion's give another number.
//!
//! Each runs DataFusion's own accumulator over its input widened to a type that holds
//! the exact answer ([`Widened`]), then narrows that answer to the aggregate's type, where
//! a value out of the type's range is an error (22003), never a wrapped number:
//!
//! - `avg` of a `numeric(p, s)` ([`RoundedAvg`]): DataFusion answers `numeric(p + 4, s + 4)`
//!   with the quotient cut after the last place, PostgreSQL (and a warehouse kpitables
//!   pushes the aggregate to, whose answer Arrow rounds to that type) rounds it, half away
//!   from zero. Over the input widened by one place (exact) the quotient is cut after place
//!   s + 5, and Arrow's decimal cast rounds that to s + 4. Cutting after s + 5 never moves a
//!   value across the half-way point of place s + 4 (that point is itself a value of scale
//!   s + 5), so the rounded result is the exactly rounded quotient.
//! - `sum` of integers ([`CheckedSum`]): DataFusion adds `bigint`s with wrapping
//!   arithmetic, so a sum past 2^63 - 1 would answer a negative number; PostgreSQL refuses
//!   it ("bigint out of range"). Over the input widened to `numeric(20, 0)` the sum is
//!   exact (DataFusion sums it as `numeric(30, 0)`), and narrowing it back refuses what
//!   does not fit.
//!
//! Every other input (floats, intervals, `DISTINCT`, decimals of precision above 33) is
//! DataFusion's aggregate unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DECIMAL128_MAX_PRECISION, DataType, Field, FieldRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, SetMonotonicity, Signature,
};

/// One of DataFusion's aggregates with the input type it runs over instead of `input`,
/// when it needs one to be exact (see the module docs).
pub trait Widen: AggregateUDFImpl + Default + Eq + std::hash::Hash {
    /// The input type that holds the exact answer, if `input` is not one.
    fn widened(input: &DataType) -> Option<DataType>;
}

impl Widen for Avg {
    fn widened(input: &DataType) -> Option<DataType> {
        match input {
            // Room for the inner avg's numeric(p + 5, s + 5) without DataFusion capping it.
            DataType::Decimal128(precision, scale)
                if *precision + 5 <= DECIMAL128_MAX_PRECISION && *scale >= 0 =>
            {
                Some(DataType::Decimal128(precision + 1, scale + 1))
            }
            _ => None,
        }
    }
}

impl Widen for Sum {
    fn widened(input: &DataType) -> Option<DataType> {
        // Every 64-bit integer fits in 20 digits; DataFusion sums those in 30, so 10^10
        // rows of the largest bigint still add up exactly.
        input.is_integer().then_some(DataType::Decimal128(20, 0))
    }
}

/// DataFusion's aggregate `F` over a widened input, its answer narrowed back.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct Widened<F> {
    inner: F,
}

/// `avg`, rounded as PostgreSQL rounds it (see the module docs).
pub type RoundedAvg = Widened<Avg>;

/// `sum`, refusing an integer overflow as PostgreSQL does (see the module docs).
pub type CheckedSum = Widened<Sum>;

/// The arguments of the inner aggregate over the widened input, with its own return field.
struct WideArgs {
    input: DataType,
    expr_fields: Vec<FieldRef>,
    return_field: FieldRef,
}

impl<F: Widen> Widened<F> {
    fn widen(&self, fields: &[FieldRef], distinct: bool) -> Result<Option<WideArgs>> {
        let Some(first) = fields.first() else {
            return Ok(None);
        };
        let Some(input) = F::widened(first.data_type()).filter(|_| !distinct) else {
            return Ok(None);
        };
        let inner_return = self.inner.return_type(std::slice::from_ref(&input))?;
        let mut expr_fields = fields.to_vec();
        expr_fields[0] = Arc::new(first.as_ref().clone().with_data_type(input.clone()));
        Ok(Some(WideArgs {
            input,
            expr_fields,
            return_field: Arc::new(Field::new(self.inner.name(), inner_return, true)),
        }))
    }

    /// The accumulator `make` gives over the widened input, wrapped to narrow its answer;
    /// or, when the input is not widened, the one it gives over the input as it is.
    fn narrowing<A: ?Sized>(
        &self,
        args: AccumulatorArgs,
        make: impl Fn(AccumulatorArgs) -> Result<Box<A>>,
    ) -> Result<std::result::Result<Narrowing<A>, Box<A>>> {
        let Some(w) = self.widen(args.expr_fields, args.is_distinct)? else {
            return Ok(Err(make(args)?));
        };
        let output = args.return_field.data_type().clone();
        let inner = make(AccumulatorArgs {
            return_field: Arc::clone(&w.return_field),
            expr_fields: &w.expr_fields,
            ..args
        })?;
        Ok(Ok(Narrowing {
            inner,
            input: w.input,
            output,
        }))
    }
}

impl<F: Widen> AggregateUDFImpl for Widened<F> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(match self.narrowing(args, |a| self.inner.accumulator(a))? {
            Ok(narrowing) => Box::new(narrowing),
            Err(plain) => plain,
        })
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(
            match self.narrowing(args, |a| self.inner.create_sliding_accumulator(a))? {
                Ok(narrowing) => Box::new(narrowing),
                Err(plain) => plain,
            },
        )
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let Some(w) = self.widen(args.input_fields, args.is_distinct)? else {
            return self.inner.state_fields(args);
        };
        self.inner.state_fields(StateFieldsArgs {
            input_fields: &w.expr_fields,
            return_field: w.return_field,
            ..args
        })
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(
            match self.narrowing(args, |a| self.inner.create_groups_accumulator(a))? {
                Ok(narrowing) => Box::new(narrowing),
                Err(plain) => plain,
            },
        )
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.reverse_expr()
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// `values` cast to `output`, a value that does not fit being an error (22003).
fn narrowed(values: &ArrayRef, output: &DataType) -> Result<ArrayRef> {
    // Arrow's default cast makes a value out of range NULL: count them.
    let narrow = cast(values, output)?;
    if narrow.null_count() > values.null_count() {
        return Err(DataFusionError::ArrowError(
            Box::new(ArrowError::ArithmeticOverflow(format!(
                "{output} out of range"
            ))),
            None,
        ));
    }
    Ok(narrow)
}

/// DataFusion's accumulator over the widened input, its answer narrowed to the output.
struct Narrowing<A: ?Sized> {
    inner: Box<A>,
    input: DataType,
    output: DataType,
}

impl<A: ?Sized> Narrowing<A> {
    fn widen(&self, values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        let mut values = values.to_vec();
        if let Some(first) = values.first_mut() {
            *first = cast(first, &self.input)?;
        }
        Ok(values)
    }
}

impl<A: ?Sized> std::fmt::Debug for Narrowing<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Narrowing")
            .field("input", &self.input)
            .field("output", &self.output)
            .finish()
    }
}

impl Accumulator for Narrowing<dyn Accumulator> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = self.widen(values)?;
        self.inner.update_batch(&values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let wide = self.inner.evaluate()?.to_array()?;
        ScalarValue::try_from_array(&narrowed(&wide, &self.output)?, 0)
    }

    fn size(&self) -> usize {
        self.inner.size() + size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = self.widen(values)?;
        self.inner.retract_batch(&values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

impl GroupsAccumulator for Narrowing<dyn GroupsAccumulator> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&datafusion::arrow::array::BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let values = self.widen(values)?;
        self.inner
            .update_batch(&values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        narrowed(&self.inner.evaluate(emit_to)?, &self.output)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&datafusion::arrow::array::BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = self.widen(values)?;
        self.inner.convert_to_state(&values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size() + size_of::<Self>()
    }
}

/// Put PostgreSQL's aggregates in place of DataFusion's where they differ.
pub fn register(ctx: &datafusion::prelude::SessionContext) {
    // DataFusion's are removed with their aliases first (`mean`): a state rebuilt from
    // this one registers every function again, and one left under an alias would take
    // back the name in whatever order the functions come.
    let ours = [
        AggregateUDF::new_from_impl(RoundedAvg::default()),
        AggregateUDF::new_from_impl(CheckedSum::default()),
    ];
    for aggregate in ours {
        ctx.deregister_udaf(aggregate.name());
        ctx.register_udaf(aggregate);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    async fn answer(sql: &str) -> Vec<String> {
        let ctx = SessionContext::new();
        super::register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        text.lines()
            .skip(3)
            .filter(|l| !l.starts_with('+'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                cells.join(" | ")
            })
            .collect()
    }

    async fn refusal(sql: &str) -> String {
        let ctx = SessionContext::new();
        super::register(&ctx);
        let answer = match ctx.sql(sql).await {
            Ok(frame) => frame.collect().await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(batches) => panic!("{sql} answered {batches:?}"),
            Err(e) => crate::error::Error::from(e).sqlstate().to_string(),
        }
    }

    #[tokio::test]
    async fn an_integer_sum_out_of_range_is_refused_not_wrapped() {
        const BIG: &str = "CAST(9223372036854775807 AS BIGINT)";
        let rows = format!("(1, {BIG}), (1, 1), (2, {BIG}), (2, -1), (3, -{BIG}), (3, -2)");
        // Grouped, plain and over a running window: DataFusion alone wraps each of them.
        for sql in [
            format!("SELECT g, sum(x) FROM (VALUES {rows}) t(g, x) GROUP BY g"),
            format!("SELECT sum(x) FROM (VALUES {rows}) t(g, x) WHERE g = 1"),
            format!(
                "SELECT sum(x) OVER (ORDER BY g ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM (VALUES {rows}) t(g, x)"
            ),
        ] {
            assert_eq!(refusal(&sql).await, "22003", "{sql}");
        }
        // What fits is the exact sum, of type bigint, and an integer sum's sliding window too.
        let rows = format!(
            "(1, {BIG}), (1, -1), (2, -5), (2, CAST(NULL AS BIGINT)), (3, CAST(NULL AS BIGINT))"
        );
        assert_eq!(
            answer(&format!(
                "SELECT g, sum(x), arrow_typeof(sum(x)) FROM (VALUES {rows}) t(g, x) GROUP BY g ORDER BY g"
            ))
            .await,
            ["1 | 9223372036854775806 | Int64", "2 | -5 | Int64", "3 |  | Int64"]
        );
        assert_eq!(
            answer(&format!(
                "SELECT sum(x) OVER (ORDER BY g, x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM (VALUES {rows}) t(g, x) ORDER BY g, x"
            ))
            .await,
            ["-1", "9223372036854775806", "9223372036854775802", "-5", ""]
        );
    }

    #[tokio::test]
    async fn numeric_average_is_rounded_half_away_from_zero() {
        // 2/3 = 0.6666666..., 1/6 = 0.1666666..., 1/8 = 0.125, -2/3.
        let rows = answer(
            "SELECT g, avg(x) AS a FROM (VALUES (1, CAST(1.00 AS DECIMAL(10,2))), \
             (1, CAST(0.00 AS DECIMAL(10,2))), (1, CAST(1.00 AS DECIMAL(10,2))), \
             (2, CAST(0.01 AS DECIMAL(10,2))), (2, CAST(0.00 AS DECIMAL(10,2))), \
             (2, CAST(0.00 AS DECIMAL(10,2))), (2, CAST(0.00 AS DECIMAL(10,2))), \
             (2, CAST(0.00 AS DECIMAL(10,2))), (2, CAST(0.00 AS DECIMAL(10,2))), \
             (3, CAST(-1.00 AS DECIMAL(10,2))), (3, CAST(-1.00 AS DECIMAL(10,2))), \
             (3, CAST(0.00 AS DECIMAL(10,2)))) t(g, x) GROUP BY g ORDER BY g",
        )
        .await;
        assert_eq!(rows, ["1 | 0.666667", "2 | 0.001667", "3 | -0.666667"]);
        // Without GROUP BY (the plain accumulator), and the type stays numeric(14, 6).
        let rows = answer(
            "SELECT avg(x), arrow_typeof(avg(x)) FROM (VALUES (CAST(1.00 AS DECIMAL(10,2))), \
             (CAST(0.00 AS DECIMAL(10,2))), (CAST(1.00 AS DECIMAL(10,2)))) t(x)",
        )
        .await;
        assert_eq!(rows, ["0.666667 | Decimal128(14, 6)"]);
        // Floats and integers are DataFusion's avg.
        assert_eq!(
            answer("SELECT avg(x) FROM (VALUES (1), (2)) t(x)").await,
            ["1.5"]
        );
    }
}
