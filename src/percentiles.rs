//! `percentile_cont` and `percentile_disc`, exact as PostgreSQL computes them.
//!
//! `percentile_cont(f) WITHIN GROUP (ORDER BY x)` is the value at row `f * (n - 1)` of the
//! ordered non-null values, interpolated linearly between the two rows around it, in
//! `double precision`; `percentile_disc(f)` is the first value whose row (counted from 1)
//! reaches `f * n`, of the input's own type. DataFusion's `percentile_cont` cuts the
//! interpolation weight to six places, so its answer can differ from PostgreSQL's (and a
//! warehouse's) in the seventh significant digit of the gap between two values, and it has
//! no `percentile_disc`: these replace and add them. Both keep every value of a group, as
//! any exact percentile must; `median(x)` is `percentile_cont(0.5)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_empty_array};
use datafusion::arrow::compute::{SortOptions, concat, sort, sort_to_indices};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Schema};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Signature, TypeSignature,
    Volatility,
};
use datafusion::physical_expr::PhysicalExpr;

/// Which percentile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Interpolated between the two values around the fraction, as `double precision`.
    Continuous,
    /// The first value at or past the fraction, of the input's type.
    Discrete,
}

impl Kind {
    /// The SQL function.
    pub fn function(self) -> &'static str {
        match self {
            Kind::Continuous => "percentile_cont",
            Kind::Discrete => "percentile_disc",
        }
    }
}

/// `percentile_cont` or `percentile_disc` (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Percentile {
    kind: Kind,
    signature: Signature,
}

impl Percentile {
    /// The aggregate of this kind.
    pub fn new(kind: Kind) -> Self {
        Percentile {
            kind,
            signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for Percentile {
    fn name(&self) -> &str {
        self.kind.function()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let Some(input) = arg_types.first() else {
            return exec_err!("{} takes a value and a fraction", self.name());
        };
        Ok(match self.kind {
            Kind::Continuous => DataType::Float64,
            Kind::Discrete if input.is_null() => DataType::Float64,
            Kind::Discrete => input.clone(),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let values = self.values_type(args.input_fields.first().map(|f| f.data_type()));
        Ok(vec![Arc::new(Field::new_list(
            format!("{}[values]", args.name),
            Field::new_list_field(values, true),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let [_, fraction] = args.exprs else {
            return plan_err!("{} takes one fraction", self.name());
        };
        let fraction = fraction_of(fraction, self.name())?;
        let descending = args
            .order_bys
            .first()
            .is_some_and(|sort| sort.options.descending);
        let values = self.values_type(args.expr_fields.first().map(|f| f.data_type()));
        Ok(Box::new(Values {
            kind: self.kind,
            fraction,
            descending,
            values_type: values.clone(),
            output: args.return_field.data_type().clone(),
            chunks: Vec::new(),
            bytes: 0,
        }))
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }
}

impl Percentile {
    /// The type the values are kept in: `double precision` for an interpolation.
    fn values_type(&self, input: Option<&DataType>) -> DataType {
        match (self.kind, input) {
            (Kind::Discrete, Some(t)) if !t.is_null() => t.clone(),
            _ => DataType::Float64,
        }
    }
}

/// The fraction, a constant between 0 and 1, as PostgreSQL requires it.
fn fraction_of(expr: &Arc<dyn PhysicalExpr>, name: &str) -> Result<f64> {
    let batch = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let ColumnarValue::Scalar(value) = expr.evaluate(&batch)? else {
        return plan_err!("the fraction of {name} must be a constant");
    };
    let f = match value.cast_to(&DataType::Float64)? {
        ScalarValue::Float64(Some(f)) => f,
        _ => return plan_err!("the fraction of {name} must not be NULL"),
    };
    if !(0.0..=1.0).contains(&f) {
        // PostgreSQL's words (22003).
        return Err(datafusion::common::DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::ArithmeticOverflow(
                format!("percentile value {f} is not between 0 and 1"),
            )),
            None,
        ));
    }
    Ok(f)
}

/// Every non-null value of a group, in the arrays they came in.
#[derive(Debug)]
struct Values {
    kind: Kind,
    fraction: f64,
    descending: bool,
    values_type: DataType,
    output: DataType,
    chunks: Vec<ArrayRef>,
    bytes: usize,
}

impl Values {
    fn keep(&mut self, values: &ArrayRef) -> Result<()> {
        let values = datafusion::arrow::compute::cast(values, &self.values_type)?;
        let values = match values.logical_nulls() {
            Some(nulls) if nulls.null_count() > 0 => datafusion::arrow::compute::filter(
                &values,
                &datafusion::arrow::array::BooleanArray::new(nulls.into_inner(), None),
            )?,
            _ => values,
        };
        if !values.is_empty() {
            self.bytes += values.get_array_memory_size();
            self.chunks.push(values);
        }
        Ok(())
    }

    fn all(&self) -> Result<ArrayRef> {
        match self.chunks.as_slice() {
            [] => Ok(new_empty_array(&self.values_type)),
            [one] => Ok(Arc::clone(one)),
            many => {
                let refs: Vec<&dyn Array> = many.iter().map(|a| a.as_ref()).collect();
                Ok(concat(&refs)?)
            }
        }
    }
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(v) => self.keep(v),
            None => Ok(()),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states.first() else {
            return Ok(());
        };
        for list in lists.as_list::<i32>().iter().flatten() {
            self.keep(&list)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let all = self.all()?;
        Ok(vec![
            SingleRowListArrayBuilder::new(all).build_list_scalar(),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let all = self.all()?;
        let n = all.len();
        if n == 0 {
            return ScalarValue::try_from(&self.output);
        }
        let options = SortOptions {
            descending: self.descending,
            nulls_first: false,
        };
        match self.kind {
            Kind::Continuous => {
                let sorted = sort(&all, Some(options))?;
                let sorted = sorted.as_primitive::<Float64Type>().values();
                // PostgreSQL's percentile_cont_final_common and float8_lerp.
                let row = self.fraction * (n - 1) as f64;
                let (first, second) = (row.floor(), row.ceil());
                let lo = sorted[first as usize];
                let value = if first == second {
                    lo
                } else {
                    let hi = sorted[second as usize];
                    lo + (hi - lo) * (row - first)
                };
                Ok(ScalarValue::Float64(Some(value)))
            }
            Kind::Discrete => {
                // PostgreSQL's percentile_disc_final: the row ceil(f * n), counted from 1.
                let row = ((self.fraction * n as f64).ceil() as usize).clamp(1, n);
                let order = sort_to_indices(&all, Some(options), None)?;
                let index = order.value(row - 1) as usize;
                ScalarValue::try_from_array(&all, index)
            }
        }
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.bytes + self.chunks.capacity() * size_of::<ArrayRef>()
    }
}

/// Put PostgreSQL's percentiles in place of DataFusion's. DataFusion's `percentile_cont`
/// is removed with its alias (`quantile_cont`) first: a state rebuilt from this one
/// registers every function again, and one left under an alias would take back the name
/// in whatever order the functions come.
pub fn register(ctx: &datafusion::prelude::SessionContext) {
    for kind in [Kind::Continuous, Kind::Discrete] {
        ctx.deregister_udaf(kind.function());
        ctx.register_udaf(AggregateUDF::new_from_impl(Percentile::new(kind)));
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

    #[tokio::test]
    async fn a_state_rebuilt_from_the_engine_keeps_these_percentiles() {
        // The engine plans each statement in a state built from the shared one; DataFusion's
        // percentile_cont, left under its alias, would win half of the time.
        let ctx = SessionContext::new();
        super::register(&ctx);
        // Each rebuilt state's functions come in another order (a new hash map's seed).
        let mut state = ctx.state();
        for _ in 0..32 {
            state = datafusion::execution::SessionStateBuilder::new_from_existing(state).build();
            let rebuilt = SessionContext::new_with_state(state.clone());
            let batches = rebuilt
                .sql("SELECT percentile_cont(0.123456789) WITHIN GROUP (ORDER BY x) FROM (VALUES (0.0), (1.0)) t(x)")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            // DataFusion's cuts the interpolation weight to 0.123456.
            assert!(text.contains("| 0.123456789 "), "{text}");
        }
    }

    #[tokio::test]
    async fn percentiles_are_postgres_answers() {
        // PostgreSQL 16 over the same rows: 1, 2, 4, 7, 100 and a NULL, in groups 1 and 2.
        let rows = "(1, 1.0), (1, 2.0), (1, 4.0), (1, 7.0), (1, 100.0), (1, NULL), \
                    (2, 0.1), (2, 0.2), (2, 0.3), (3, NULL)";
        let sql = format!(
            "SELECT g, percentile_cont(0.9) WITHIN GROUP (ORDER BY x), \
             percentile_cont(0.3) WITHIN GROUP (ORDER BY x DESC), \
             percentile_disc(0.5) WITHIN GROUP (ORDER BY x), \
             percentile_disc(0.61) WITHIN GROUP (ORDER BY x DESC) \
             FROM (VALUES {rows}) t(g, x) GROUP BY g ORDER BY g"
        );
        // 0.9 of 5 values: row 3.6, 7 + 93 * 0.6 = 62.8; descending 0.3: row 1.2 of
        // 100, 7, 4, 2, 1 = 7 - 3 * 0.2 = 6.4; disc 0.5: row ceil(2.5) = 3 = 4;
        // descending disc 0.61: row ceil(3.05) = 4 = 2. Group 2: 0.2 + 0.1 * 0.8 = 0.28;
        // 0.3 - 0.1 * 0.6 = 0.24; disc 0.5 and descending 0.61: row 2. In double precision,
        // as PostgreSQL's lerp computes them.
        assert_eq!(
            answer(&sql).await,
            [
                format!(
                    "1 | {} | {} | 4.0 | 2.0",
                    7.0 + 93.0 * (0.9 * 4.0 - 3.0),
                    7.0 + (4.0 - 7.0) * (0.3 * 4.0 - 1.0)
                ),
                format!(
                    "2 | {} | {} | 0.2 | 0.2",
                    0.2 + (0.3 - 0.2) * (0.9 * 2.0 - 1.0),
                    0.3 + (0.2 - 0.3) * (0.3 * 2.0)
                ),
                "3 |  |  |  | ".to_string(),
            ]
        );
    }
}
