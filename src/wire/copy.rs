//! COPY TO STDOUT on the wire: a query's DataRows rewritten as COPY data in PostgreSQL's
//! exact formats (text with backslash escapes, CSV with its quoting rules, binary
//! `PGCOPY`), sent as CopyOutResponse, one CopyData per row, CopyDone. The rows come from
//! the same query path as SELECT (rewrite, rules, audit, pushdown); text and CSV read the
//! rows' text form, binary their binary form, which are PostgreSQL's output and send
//! functions, as COPY uses.

use bytes::{BufMut, BytesMut};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::results::QueryResponse;
use pgwire::error::ErrorInfo;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::DataRow;

use crate::error::{Error, Result};
use crate::sql::{CopyFormat, CopyOptions};

/// The signature, flags and header extension length that start binary COPY data.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// How the COPY ended: rows written, or an error after the CopyOutResponse (sent as an
/// ErrorResponse, which ends copy-out mode in the client).
pub(super) enum Copied {
    Rows(usize),
    Failed(Box<ErrorInfo>),
}

/// Write `response`'s rows to `client` as COPY data.
pub(super) async fn send<C>(
    client: &mut C,
    options: &CopyOptions,
    response: QueryResponse,
) -> Result<Copied>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: std::fmt::Debug,
{
    let names: Vec<String> = response
        .row_schema()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let force: Vec<bool> = names.iter().map(|n| options.forces_quote(n)).collect();
    let columns = names.len();
    let binary = options.format == CopyFormat::Binary;
    let format = i8::from(binary);
    let gone = |e: C::Error| Error::Internal(format!("the client went away during COPY: {e:?}"));
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            format,
            i16::try_from(columns).unwrap_or(i16::MAX),
            vec![i16::from(binary); columns],
        )))
        .await
        .map_err(gone)?;
    let mut start = BytesMut::new();
    if binary {
        start.put_slice(BINARY_HEADER);
    } else if options.header {
        let values: Vec<Option<&[u8]>> = names.iter().map(|n| Some(n.as_bytes())).collect();
        write_line(&mut start, options, &values, &vec![false; columns]);
    }
    let mut rows = 0usize;
    let mut data_rows = response.data_rows;
    while let Some(row) = data_rows.next().await {
        let row = match row {
            Ok(row) => row,
            Err(pgwire::error::PgWireError::UserError(info)) => return Ok(Copied::Failed(info)),
            Err(other) => {
                return Ok(Copied::Failed(Box::new(super::error_info(
                    &Error::Internal(other.to_string()),
                ))));
            }
        };
        let mut out = std::mem::take(&mut start);
        encode_row(&mut out, options, &row, &force)?;
        rows += 1;
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(out.freeze())))
            .await
            .map_err(gone)?;
    }
    if binary {
        start.put_i16(-1);
    }
    if !start.is_empty() {
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(
                start.freeze(),
            )))
            .await
            .map_err(gone)?;
    }
    client
        .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await
        .map_err(gone)?;
    Ok(Copied::Rows(rows))
}

/// The fields of a DataRow: each value's bytes, None for NULL.
fn fields(row: &DataRow) -> Result<Vec<Option<&[u8]>>> {
    let mut data: &[u8] = &row.data;
    let count = usize::try_from(row.field_count).unwrap_or(0);
    let mut values = Vec::with_capacity(count);
    let bad = || Error::Internal("a malformed result row reached COPY".into());
    for _ in 0..count {
        let (len, rest) = data.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = i32::from_be_bytes(*len);
        data = rest;
        if len < 0 {
            values.push(None);
        } else {
            let len = usize::try_from(len).map_err(|_| bad())?;
            if data.len() < len {
                return Err(bad());
            }
            let (value, rest) = data.split_at(len);
            values.push(Some(value));
            data = rest;
        }
    }
    Ok(values)
}

fn encode_row(
    out: &mut BytesMut,
    options: &CopyOptions,
    row: &DataRow,
    force: &[bool],
) -> Result<()> {
    if options.format == CopyFormat::Binary {
        // A binary COPY tuple is a DataRow's body: the field count, then each field as a
        // length (-1 for NULL) and the value in binary form.
        out.put_i16(row.field_count);
        out.put_slice(&row.data);
        return Ok(());
    }
    write_line(out, options, &fields(row)?, force);
    Ok(())
}

/// One line of text or CSV COPY data.
fn write_line(out: &mut BytesMut, options: &CopyOptions, values: &[Option<&[u8]>], force: &[bool]) {
    let delimiter = options.delimiter as u8;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.put_u8(delimiter);
        }
        match value {
            None => out.put_slice(options.null.as_bytes()),
            Some(value) if options.format == CopyFormat::Csv => csv_value(
                out,
                options,
                value,
                force.get(i).copied().unwrap_or(false),
                values.len() == 1,
            ),
            Some(value) => text_value(out, delimiter, value),
        }
    }
    out.put_u8(b'\n');
}

/// A value in text format (PostgreSQL's `CopyAttributeOutText`): backslash, the
/// delimiter and the control characters with a backslash name are escaped.
fn text_value(out: &mut BytesMut, delimiter: u8, value: &[u8]) {
    for &c in value {
        let escaped = match c {
            b'\x08' => Some(b'b'),
            b'\x0c' => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            b'\x0b' => Some(b'v'),
            b'\\' => Some(b'\\'),
            c if c == delimiter => Some(c),
            _ => None,
        };
        match escaped {
            Some(e) => {
                out.put_u8(b'\\');
                out.put_u8(e);
            }
            None => out.put_u8(c),
        }
    }
}

/// A value in CSV format (PostgreSQL's `CopyAttributeOutCSV`): quoted when forced, when
/// it equals the NULL string, when it holds the delimiter, the quote, a newline or a
/// carriage return, or when it is `\.` alone on its line; inside quotes the quote and
/// the escape character are preceded by the escape character.
fn csv_value(out: &mut BytesMut, options: &CopyOptions, value: &[u8], force: bool, alone: bool) {
    let delimiter = options.delimiter as u8;
    let quote = options.quote as u8;
    let escape = options.escape as u8;
    let quoted = force
        || value == options.null.as_bytes()
        || (alone && value == b"\\.")
        || value
            .iter()
            .any(|&c| c == delimiter || c == quote || c == b'\n' || c == b'\r');
    if !quoted {
        out.put_slice(value);
        return;
    }
    out.put_u8(quote);
    for &c in value {
        if c == quote || c == escape {
            out.put_u8(escape);
        }
        out.put_u8(c);
    }
    out.put_u8(quote);
}

/// The COPY data as one buffer, for tests.
#[cfg(test)]
fn line(options: &CopyOptions, values: &[Option<&str>]) -> bytes::Bytes {
    let mut out = BytesMut::new();
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.map(str::as_bytes)).collect();
    write_line(&mut out, options, &values, &vec![false; values.len()]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::ForceQuote;
    use bytes::Bytes;

    fn options(format: CopyFormat) -> CopyOptions {
        let csv = format == CopyFormat::Csv;
        CopyOptions {
            format,
            header: false,
            delimiter: if csv { ',' } else { '\t' },
            null: if csv { String::new() } else { "\\N".into() },
            quote: '"',
            escape: '"',
            force_quote: ForceQuote::None,
        }
    }

    #[test]
    fn text_escapes_as_postgresql() {
        let o = options(CopyFormat::Text);
        assert_eq!(
            line(
                &o,
                &[Some("a\tb"), None, Some("back\\slash\nnew"), Some("")]
            ),
            Bytes::from_static(b"a\\tb\t\\N\tback\\\\slash\\nnew\t\n")
        );
    }

    #[test]
    fn csv_quotes_as_postgresql() {
        let o = options(CopyFormat::Csv);
        assert_eq!(
            line(
                &o,
                &[
                    Some("plain"),
                    Some(""),
                    None,
                    Some("a,b"),
                    Some("say \"hi\""),
                    Some("l1\nl2")
                ]
            ),
            Bytes::from_static(b"plain,\"\",,\"a,b\",\"say \"\"hi\"\"\",\"l1\nl2\"\n")
        );
        assert_eq!(line(&o, &[Some("\\.")]), Bytes::from_static(b"\"\\.\"\n"));
        let mut custom = o.clone();
        custom.null = "n/a".into();
        custom.escape = '\\';
        assert_eq!(
            line(&custom, &[Some("n/a"), None, Some("q\"\\")]),
            Bytes::from_static(b"\"n/a\",n/a,\"q\\\"\\\\\"\n")
        );
    }
}
