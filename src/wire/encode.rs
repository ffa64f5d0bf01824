//! Arrow results → PostgreSQL RowDescription and DataRows (text or binary per column, as
//! the client asked), and bound parameters → engine values.
//!
//! Invariant: the type a column is *described* with and the type it is *encoded* with
//! come from the same function ([`wire_type`]), so they never disagree.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt};
use pgwire::api::Type;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use rust_decimal::Decimal;

use super::numeric::Numeric;
use crate::engine::QueryPlan;
use crate::error::Error;
use crate::time_zone::{TimeZone, short_offset};
use crate::types::{self, pg_type_of};

/// The Arrow type a column is sent as.
pub fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Boolean => DataType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => DataType::Int16,
        DataType::Int32 | DataType::UInt16 => DataType::Int32,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 | DataType::Float32 => DataType::Float32,
        DataType::Float64 => DataType::Float64,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s)
            if *s >= 0 =>
        {
            DataType::Decimal128(*p, *s)
        }
        DataType::Date32 | DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::List(f) if is_text(f.data_type()) => {
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
        }
        _ => DataType::Utf8,
    }
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    )
}

/// RowDescription fields for a result schema.
pub fn fields(schema: &datafusion::arrow::datatypes::Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (pg, typmod) = pg_type_of(&wire_type(f.data_type()));
            let ty = Type::from_oid(pg.oid).unwrap_or(Type::TEXT);
            let metadata = |key: &str| f.metadata().get(key);
            FieldInfo::new(
                f.name().clone(),
                metadata(crate::engine::TABLE_OID_KEY).and_then(|v| v.parse().ok()),
                metadata(crate::engine::COLUMN_NUMBER_KEY).and_then(|v| v.parse().ok()),
                ty,
                format.format_for(i),
            )
            .with_type_size(pg.len)
            .with_type_modifier(typmod)
        })
        .collect()
}

enum Column {
    Bool(datafusion::arrow::array::BooleanArray),
    I16(datafusion::arrow::array::Int16Array),
    I32(datafusion::arrow::array::Int32Array),
    I64(datafusion::arrow::array::Int64Array),
    F32(datafusion::arrow::array::Float32Array),
    F64(datafusion::arrow::array::Float64Array),
    Dec(datafusion::arrow::array::Decimal128Array, u32),
    Date(datafusion::arrow::array::Date32Array),
    Ts(datafusion::arrow::array::TimestampMicrosecondArray),
    TsTz(datafusion::arrow::array::TimestampMicrosecondArray),
    Text(Vec<Option<String>>),
    /// `text[]` (pgwire writes both formats, quoting items in text as PostgreSQL does).
    TextList(Vec<Option<Vec<Option<String>>>>),
}

fn column(array: &ArrayRef) -> PgWireResult<Column> {
    let target = wire_type(array.data_type());
    if matches!(target, DataType::List(_)) {
        return Ok(Column::TextList(
            (0..array.len()).map(|i| text_list(array, i)).collect(),
        ));
    }
    if target == DataType::Utf8
        && !matches!(
            array.data_type(),
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        )
    {
        return Ok(Column::Text(
            (0..array.len()).map(|i| text_value(array, i)).collect(),
        ));
    }
    let array = if *array.data_type() == target {
        array.clone()
    } else {
        cast(array, &target).map_err(|e| engine_error(Error::Engine(e.to_string())))?
    };
    Ok(match &target {
        DataType::Boolean => Column::Bool(array.as_boolean().clone()),
        DataType::Int16 => Column::I16(array.as_primitive::<Int16Type>().clone()),
        DataType::Int32 => Column::I32(array.as_primitive::<Int32Type>().clone()),
        DataType::Int64 => Column::I64(array.as_primitive::<Int64Type>().clone()),
        DataType::Float32 => Column::F32(array.as_primitive::<Float32Type>().clone()),
        DataType::Float64 => Column::F64(array.as_primitive::<Float64Type>().clone()),
        DataType::Decimal128(_, s) => Column::Dec(
            array.as_primitive::<Decimal128Type>().clone(),
            u32::try_from(*s).unwrap_or(0),
        ),
        DataType::Date32 => Column::Date(array.as_primitive::<Date32Type>().clone()),
        DataType::Timestamp(_, None) => {
            Column::Ts(array.as_primitive::<TimestampMicrosecondType>().clone())
        }
        DataType::Timestamp(_, Some(_)) => {
            Column::TsTz(array.as_primitive::<TimestampMicrosecondType>().clone())
        }
        _ => Column::Text(
            array
                .as_string_opt::<i32>()
                .map(|s| s.iter().map(|v| v.map(str::to_string)).collect())
                .unwrap_or_else(|| (0..array.len()).map(|i| text_value(&array, i)).collect()),
        ),
    })
}

/// The items of a `text[]` value.
fn text_list(array: &ArrayRef, row: usize) -> Option<Vec<Option<String>>> {
    if array.is_null(row) {
        return None;
    }
    let Ok(ScalarValue::List(list)) = ScalarValue::try_from_array(array, row) else {
        return None;
    };
    let values = list.value(0);
    Some((0..values.len()).map(|i| text_value(&values, i)).collect())
}

/// A value in PostgreSQL text form, for types sent as text (arrays, intervals, ...).
fn text_value(array: &ArrayRef, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    match ScalarValue::try_from_array(array, row) {
        Ok(ScalarValue::List(list)) => {
            let values = list.value(0);
            let items: Vec<String> = (0..values.len())
                .map(|i| {
                    text_value(&values, i).map_or_else(|| "NULL".to_string(), |s| array_item(&s))
                })
                .collect();
            Some(format!("{{{}}}", items.join(",")))
        }
        Ok(ScalarValue::Utf8(s)) | Ok(ScalarValue::Utf8View(s)) | Ok(ScalarValue::LargeUtf8(s)) => {
            s
        }
        Ok(ScalarValue::IntervalMonthDayNano(Some(i))) => {
            Some(interval_text(i.months, i.days, i.nanoseconds / 1000))
        }
        Ok(ScalarValue::IntervalDayTime(Some(i))) => {
            Some(interval_text(0, i.days, i64::from(i.milliseconds) * 1000))
        }
        Ok(ScalarValue::IntervalYearMonth(Some(m))) => Some(interval_text(m, 0, 0)),
        Ok(other) => Some(other.to_string()),
        Err(_) => None,
    }
}

/// A timestamp as PostgreSQL writes it in text: fractional seconds only when there are
/// some, without trailing zeros (`2024-03-05 14:07:09.5`), then the zone (`+00`).
fn timestamp_text(t: &NaiveDateTime, zone: &str) -> String {
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let micros = t.and_utc().timestamp_subsec_micros();
    if micros != 0 {
        out.push('.');
        out.push_str(format!("{micros:06}").trim_end_matches('0'));
    }
    out.push_str(zone);
    out
}

/// An interval in PostgreSQL's default output style: `1 year 2 mons 3 days 04:05:06.5`.
fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let mut parts = Vec::new();
    let (years, months) = (months / 12, months % 12);
    let unit = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if years != 0 {
        parts.push(unit(i64::from(years), "year", "years"));
    }
    if months != 0 {
        parts.push(unit(i64::from(months), "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(i64::from(days), "day", "days"));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let micros = micros.unsigned_abs();
        let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
        let mut time = format!(
            "{sign}{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        if frac != 0 {
            let digits = format!("{frac:06}");
            time.push('.');
            time.push_str(digits.trim_end_matches('0'));
        }
        parts.push(time);
    }
    parts.join(" ")
}

fn array_item(s: &str) -> String {
    if s.is_empty() || s.contains([',', '{', '}', '"', '\\', ' ']) || s.eq_ignore_ascii_case("null")
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

fn engine_error(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(super::error_info(&e)))
}

fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    time_zone: TimeZone,
) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .map(column)
        .collect::<PgWireResult<Vec<_>>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut encoder = DataRowEncoder::new(fields.clone());
    let text: Vec<bool> = fields
        .iter()
        .map(|f| f.format() == pgwire::api::results::FieldFormat::Text)
        .collect();
    for row in 0..batch.num_rows() {
        for (i, c) in columns.iter().enumerate() {
            let text = text.get(i).copied().unwrap_or(false);
            match c {
                Column::Bool(a) => encoder.encode_field(&a.is_valid(row).then(|| a.value(row)))?,
                Column::I16(a) => encoder.encode_field(&a.is_valid(row).then(|| a.value(row)))?,
                Column::I32(a) => encoder.encode_field(&a.is_valid(row).then(|| a.value(row)))?,
                Column::I64(a) => encoder.encode_field(&a.is_valid(row).then(|| a.value(row)))?,
                Column::F32(a) => encoder.encode_field(&a.is_valid(row).then(|| a.value(row)))?,
                Column::F64(a) => encoder.encode_field(&a.is_valid(row).then(|| a.value(row)))?,
                Column::Dec(a, scale) => {
                    let v = a.is_valid(row).then(|| Numeric {
                        value: a.value(row),
                        scale: *scale,
                    });
                    encoder.encode_field(&v)?
                }
                Column::Date(a) => {
                    let v: Option<NaiveDate> =
                        a.is_valid(row).then(|| a.value_as_date(row)).flatten();
                    encoder.encode_field(&v)?
                }
                Column::Ts(a) => {
                    let v: Option<NaiveDateTime> =
                        a.is_valid(row).then(|| a.value_as_datetime(row)).flatten();
                    if text {
                        encoder.encode_field(&v.map(|t| timestamp_text(&t, "")))?
                    } else {
                        encoder.encode_field(&v)?
                    }
                }
                Column::TsTz(a) => {
                    let v: Option<DateTime<Utc>> = a
                        .is_valid(row)
                        .then(|| a.value_as_datetime(row))
                        .flatten()
                        .map(|n| n.and_utc());
                    if text {
                        // In the session's time zone, as PostgreSQL prints a timestamptz.
                        let local = v.map(|t| {
                            let offset = time_zone.offset_at(&t);
                            let wall = t.naive_utc() + chrono::Duration::seconds(offset.into());
                            timestamp_text(&wall, &short_offset(offset))
                        });
                        encoder.encode_field(&local)?
                    } else {
                        encoder.encode_field(&v)?
                    }
                }
                Column::Text(values) => {
                    encoder.encode_field(&values.get(row).cloned().flatten())?
                }
                Column::TextList(values) => {
                    encoder.encode_field(&values.get(row).and_then(Option::as_ref))?
                }
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// Turn a stream of record batches into a stream of DataRows (`timestamptz` text in
/// `time_zone`).
pub fn rows<S>(
    batches: S,
    fields: Arc<Vec<FieldInfo>>,
    time_zone: TimeZone,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static
where
    S: Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
{
    batches
        .map(move |batch| match batch {
            Ok(batch) => match encode_batch(&batch, &fields, time_zone) {
                Ok(rows) => futures::stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(e) => futures::stream::iter(vec![Err(e)]),
            },
            Err(e) => futures::stream::iter(vec![Err(engine_error(Error::from(e)))]),
        })
        .flatten()
}

/// The PostgreSQL type announced for parameter `$n` (from the client, else inferred).
pub fn parameter_type(plan: &QueryPlan, client_types: &[Option<Type>], index: usize) -> Type {
    if let Some(Some(t)) = client_types.get(index)
        && *t != Type::UNKNOWN
    {
        return t.clone();
    }
    match plan.param_types.get(index).cloned().flatten() {
        Some(dt) => Type::from_oid(pg_type_of(&wire_type(&dt)).0.oid).unwrap_or(Type::TEXT),
        None => Type::TEXT,
    }
}

/// Decode the bound parameters of `portal` into engine values.
pub fn parameters(
    portal: &Portal<super::Prepared>,
    plan: &QueryPlan,
) -> PgWireResult<Vec<ScalarValue>> {
    let mut values = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let ty = parameter_type(plan, &portal.statement.parameter_types, i);
        let value = match ty.oid() {
            o if o == types::BOOL.oid => ScalarValue::Boolean(portal.parameter::<bool>(i, &ty)?),
            o if o == types::INT2.oid => ScalarValue::Int16(portal.parameter::<i16>(i, &ty)?),
            o if o == types::INT4.oid => ScalarValue::Int32(portal.parameter::<i32>(i, &ty)?),
            o if o == types::INT8.oid => ScalarValue::Int64(portal.parameter::<i64>(i, &ty)?),
            o if o == types::FLOAT4.oid => ScalarValue::Float32(portal.parameter::<f32>(i, &ty)?),
            o if o == types::FLOAT8.oid => ScalarValue::Float64(portal.parameter::<f64>(i, &ty)?),
            o if o == types::NUMERIC.oid => match portal.parameter::<Decimal>(i, &ty)? {
                Some(d) => ScalarValue::Decimal128(
                    Some(d.mantissa()),
                    38,
                    i8::try_from(d.scale()).unwrap_or(0),
                ),
                None => ScalarValue::Decimal128(None, 38, 0),
            },
            o if o == types::DATE.oid => {
                let d = portal.parameter::<NaiveDate>(i, &ty)?;
                ScalarValue::Date32(d.map(|d| {
                    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                    i32::try_from((d - epoch).num_days()).unwrap_or(0)
                }))
            }
            o if o == types::TIMESTAMP.oid => {
                let t = portal.parameter::<NaiveDateTime>(i, &ty)?;
                ScalarValue::TimestampMicrosecond(t.map(|t| t.and_utc().timestamp_micros()), None)
            }
            o if o == types::TIMESTAMPTZ.oid => {
                let t = portal.parameter::<DateTime<chrono::FixedOffset>>(i, &ty)?;
                ScalarValue::TimestampMicrosecond(
                    t.map(|t| t.timestamp_micros()),
                    Some("+00:00".into()),
                )
            }
            _ => ScalarValue::Utf8(portal.parameter::<String>(i, &ty)?),
        };
        // Cast to the type the plan expects, so `region = $1` compares text with text.
        let value = match plan.param_types.get(i).cloned().flatten() {
            Some(expected) if expected != value.data_type() && !value.is_null() => {
                value.cast_to(&expected).map_err(|e| {
                    engine_error(Error::InvalidValue(format!("parameter ${}: {e}", i + 1)))
                })?
            }
            Some(expected) if value.is_null() => ScalarValue::try_from(&expected).unwrap_or(value),
            _ => value,
        };
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::interval_text;

    #[test]
    fn timestamps_read_as_postgresql_writes_them() {
        let t = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        assert_eq!(
            super::timestamp_text(&t("2024-03-05 14:07:09.0"), ""),
            "2024-03-05 14:07:09"
        );
        assert_eq!(
            super::timestamp_text(&t("2024-03-05 14:07:09.5"), ""),
            "2024-03-05 14:07:09.5"
        );
        assert_eq!(
            super::timestamp_text(&t("2024-03-05 14:07:09.000120"), "+00"),
            "2024-03-05 14:07:09.00012+00"
        );
    }

    #[test]
    fn intervals_read_as_postgresql_writes_them() {
        assert_eq!(interval_text(0, 5, 0), "5 days");
        assert_eq!(interval_text(14, 1, 0), "1 year 2 mons 1 day");
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        assert_eq!(interval_text(0, -1, 0), "-1 days");
        assert_eq!(interval_text(0, 0, 3_723_500_000), "01:02:03.5");
        assert_eq!(interval_text(0, 0, -60_000_000), "-00:01:00");
    }
}
