//! `pg_sleep(seconds)`, as PostgreSQL has it: an async function that waits without
//! holding a worker and stops when its statement is cancelled or times out.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

/// `pg_sleep(seconds)`: waits without holding a worker (an async function), and stops
/// when its statement is cancelled or times out.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Sleep {
    signature: Signature,
}

impl ScalarUDFImpl for Sleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Err(DataFusionError::Internal(
            "pg_sleep runs as an async function".into(),
        ))
    }
}

#[async_trait::async_trait]
impl datafusion::logical_expr::async_udf::AsyncScalarUDFImpl for Sleep {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        if let Some(seconds) = args.args.first() {
            let seconds = seconds.to_array(rows.max(1))?;
            for row in 0..rows.max(1).min(seconds.len()) {
                if let ScalarValue::Float64(Some(s)) =
                    ScalarValue::try_from_array(&seconds, row)?.cast_to(&DataType::Float64)?
                    && s.is_finite()
                    && s > 0.0
                {
                    tokio::time::sleep(std::time::Duration::from_secs_f64(s.min(86_400.0))).await;
                }
            }
        }
        Ok(ColumnarValue::Array(
            datafusion::arrow::array::new_null_array(&DataType::Utf8, rows),
        ))
    }
}

/// Register `pg_sleep(seconds)` in `ctx`.
pub fn register_sleep(ctx: &SessionContext) {
    let sleep = Sleep {
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Float64]),
                TypeSignature::Exact(vec![DataType::Int64]),
                TypeSignature::Exact(vec![DataType::Int32]),
            ],
            Volatility::Volatile,
        ),
    };
    ctx.register_udf(
        datafusion::logical_expr::async_udf::AsyncScalarUDF::new(Arc::new(sleep)).into_scalar_udf(),
    );
}
