//! Rows a warehouse returns as text, turned into Arrow batches of the schema the engine
//! expects.
//!
//! Both warehouse protocols can send every value as text (PostgreSQL's simple query
//! protocol, MySQL's text protocol), and text is what both spell the same way for the
//! types kpitables serves: integers, decimals at full precision, dates, timestamps and
//! booleans. Each column is collected as strings and converted with Arrow's own casts,
//! which fail loudly on a value that does not fit instead of guessing.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::util::display::FormatOptions;

/// Rows per batch sent on to the engine.
pub const BATCH_ROWS: usize = 8192;

/// Collects text rows and converts them to batches of `schema`.
#[derive(Debug)]
pub struct TextRows {
    schema: SchemaRef,
    columns: Vec<StringBuilder>,
    rows: usize,
}

impl TextRows {
    /// An empty collector for rows of `schema`.
    pub fn new(schema: SchemaRef) -> TextRows {
        let columns = schema
            .fields()
            .iter()
            .map(|_| StringBuilder::new())
            .collect();
        TextRows {
            schema,
            columns,
            rows: 0,
        }
    }

    /// Rows collected since the last batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row is waiting.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Append one row; `values` yields one text value (None for NULL) per column.
    pub fn push<'a>(
        &mut self,
        values: impl IntoIterator<Item = Option<&'a str>>,
    ) -> Result<(), String> {
        let mut count = 0;
        for (column, value) in self.columns.iter_mut().zip(values) {
            column.append_option(value);
            count += 1;
        }
        if count != self.columns.len() {
            return Err(format!(
                "the source returned {count} columns, {} expected",
                self.columns.len()
            ));
        }
        self.rows += 1;
        Ok(())
    }

    /// Convert the waiting rows to a batch and start over.
    pub fn finish(&mut self) -> Result<RecordBatch, String> {
        let options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (column, field) in self.columns.iter_mut().zip(self.schema.fields()) {
            let text: ArrayRef = Arc::new(column.finish());
            let text = normalize_text(&text, field.data_type())?;
            let array = cast_with_options(&text, field.data_type(), &options).map_err(|e| {
                format!(
                    "column \"{}\": a value does not convert to {}: {e}",
                    field.name(),
                    field.data_type()
                )
            })?;
            arrays.push(array);
        }
        let rows = std::mem::take(&mut self.rows);
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| e.to_string())
    }
}

/// Spellings Arrow's casts do not read as such: PostgreSQL's `+00` time-zone offsets
/// (Arrow wants `+00:00`) and MySQL's zero dates (NULL, as MySQL clients read them).
fn normalize_text(text: &ArrayRef, target: &DataType) -> Result<ArrayRef, String> {
    use datafusion::arrow::array::{Array, AsArray};
    let needs = matches!(
        target,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    );
    if !needs {
        return Ok(Arc::clone(text));
    }
    let strings = text.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(strings.len(), strings.value_data().len() + 8);
    for value in strings.iter() {
        match value {
            None => out.append_null(),
            Some(v) if v.starts_with("0000-00-00") => out.append_null(),
            Some(v) if matches!(target, DataType::Timestamp(_, _)) => {
                out.append_value(with_full_offset(v))
            }
            Some(v) => out.append_value(v),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `2024-01-01 10:00:00+08` → `2024-01-01 10:00:00+08:00`.
fn with_full_offset(v: &str) -> String {
    let bytes = v.as_bytes();
    let n = bytes.len();
    let short_offset = n >= 3
        && (bytes[n - 3] == b'+' || bytes[n - 3] == b'-')
        && bytes[n - 2..].iter().all(u8::is_ascii_digit)
        && v[..n - 3].contains(':');
    if short_offset {
        format!("{v}:00")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    #[test]
    fn converts_each_postgres_text_form() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("d", DataType::Decimal128(20, 2), true),
            Field::new("day", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("b", DataType::Boolean, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let mut rows = TextRows::new(schema);
        rows.push([
            Some("-12"),
            Some("12345678901234567.25"),
            Some("2024-02-29"),
            Some("2024-02-29 23:59:59.5"),
            Some("2024-01-01 08:00:00+08"),
            Some("t"),
            Some("上海"),
        ])
        .unwrap();
        rows.push([None, None, None, None, None, Some("f"), None])
            .unwrap();
        let batch = rows.finish().unwrap();
        let text = pretty_format_batches(&[batch]).unwrap().to_string();
        assert!(text.contains("12345678901234567.25"), "{text}");
        assert!(text.contains("2024-02-29T23:59:59.500"), "{text}");
        assert!(text.contains("2024-01-01T00:00:00Z"), "{text}");
        assert!(text.contains("上海"), "{text}");
        assert!(rows.is_empty());
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_error_naming_the_column() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let mut rows = TextRows::new(schema);
        rows.push([Some("not a number")]).unwrap();
        let err = rows.finish().unwrap_err();
        assert!(err.contains("column \"n\""), "{err}");
    }

    #[test]
    fn mysql_zero_dates_are_null() {
        let schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)]));
        let mut rows = TextRows::new(schema);
        rows.push([Some("0000-00-00")]).unwrap();
        let batch = rows.finish().unwrap();
        assert_eq!(batch.column(0).null_count(), 1);
    }
}
