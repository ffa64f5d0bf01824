//! PostgreSQL's aggregates where DataFusion's give another number.
//!
//! `avg` of a `numeric(p, s)`: DataFusion answers `numeric(p + 4, s + 4)` with the quotient
//! cut after the last place, PostgreSQL (and a warehouse kpitables pushes the aggregate to,
//! whose answer Arrow rounds to that type) rounds it, half away from zero. [`RoundedAvg`]
//! replaces `avg`: for a `Decimal128` input it runs DataFusion's own accumulator over the
//! input widened by one place (exact), which cuts after place s + 5, and rounds that to
//! s + 4 with Arrow's decimal cast. Cutting after s + 5 never moves a value across the
//! half-way point of place s + 4 (that point is itself a value of scale s + 5), so the
//! rounded result is the exactly rounded quotient. Every other input (floats, integers,
//! intervals, `DISTINCT`, decimals of precision above 33) is DataFusion's `avg` unchanged.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DECIMAL128_MAX_PRECISION, DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, Signature,
};

/// `avg`, rounded as PostgreSQL rounds it (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RoundedAvg {
    inner: datafusion::functions_aggregate::average::Avg,
}

impl Default for RoundedAvg {
    fn default() -> Self {
        RoundedAvg {
            inner: datafusion::functions_aggregate::average::Avg::new(),
        }
    }
}

/// The input type that carries one more place, when there is room for it.
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

/// The arguments of the inner `avg` over the widened input, with its own return field.
struct Widened {
    input: DataType,
    expr_fields: Vec<FieldRef>,
    return_field: FieldRef,
}

impl RoundedAvg {
    fn widen(&self, fields: &[FieldRef], distinct: bool) -> Result<Option<Widened>> {
        let Some(first) = fields.first() else {
            return Ok(None);
        };
        let Some(input) = widened(first.data_type()).filter(|_| !distinct) else {
            return Ok(None);
        };
        let inner_return = self.inner.return_type(std::slice::from_ref(&input))?;
        let mut expr_fields = fields.to_vec();
        expr_fields[0] = Arc::new(first.as_ref().clone().with_data_type(input.clone()));
        Ok(Some(Widened {
            input,
            expr_fields,
            return_field: Arc::new(Field::new("avg", inner_return, true)),
        }))
    }
}

impl RoundedAvg {
    /// The accumulator `make` gives over the widened input, wrapped to round its answer;
    /// or, when the input is not widened, the one it gives over the input as it is.
    fn rounding<A: ?Sized>(
        &self,
        args: AccumulatorArgs,
        make: impl Fn(AccumulatorArgs) -> Result<Box<A>>,
    ) -> Result<std::result::Result<Rounding<A>, Box<A>>> {
        let Some(w) = self.widen(args.expr_fields, args.is_distinct)? else {
            return Ok(Err(make(args)?));
        };
        let output = args.return_field.data_type().clone();
        let inner = make(AccumulatorArgs {
            return_field: Arc::clone(&w.return_field),
            expr_fields: &w.expr_fields,
            ..args
        })?;
        Ok(Ok(Rounding {
            inner,
            input: w.input,
            output,
        }))
    }
}

impl AggregateUDFImpl for RoundedAvg {
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

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(match self.rounding(args, |a| self.inner.accumulator(a))? {
            Ok(rounding) => Box::new(rounding),
            Err(plain) => plain,
        })
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
            match self.rounding(args, |a| self.inner.create_groups_accumulator(a))? {
                Ok(rounding) => Box::new(rounding),
                Err(plain) => plain,
            },
        )
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.reverse_expr()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// DataFusion's accumulator over the widened input, its answer rounded to the output.
struct Rounding<A: ?Sized> {
    inner: Box<A>,
    input: DataType,
    output: DataType,
}

impl<A: ?Sized> Rounding<A> {
    fn widen(&self, values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        let mut values = values.to_vec();
        if let Some(first) = values.first_mut() {
            *first = cast(first, &self.input)?;
        }
        Ok(values)
    }
}

impl<A: ?Sized> std::fmt::Debug for Rounding<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rounding")
            .field("input", &self.input)
            .field("output", &self.output)
            .finish()
    }
}

impl Accumulator for Rounding<dyn Accumulator> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = self.widen(values)?;
        self.inner.update_batch(&values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.inner.evaluate()?.cast_to(&self.output)
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

impl GroupsAccumulator for Rounding<dyn GroupsAccumulator> {
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
        Ok(cast(&self.inner.evaluate(emit_to)?, &self.output)?)
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
    ctx.register_udaf(AggregateUDF::new_from_impl(RoundedAvg::default()));
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
            .map(|l| l.trim_matches(|c| c == '|' || c == ' ').to_string())
            .collect()
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
