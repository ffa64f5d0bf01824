//! The data's range and the rows of a shifted part within it: an offset metric's periods
//! end with the data's last period (the time spine's end), a shift counted in the
//! query's grain reads whole earlier periods, and a window part's spine spans the
//! table's first to last day.

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{Expr, Ident};

use super::{DerivedSpec, InnerExpr, Moved, bounds, from_clause, parse_expr, truncate_sql};
use crate::bind::{BoundDimension, Semantics};
use crate::error::Result;
use crate::model::TimeGrain;

/// Time dimension `time` translated for the rows of `fact`, moved forward by `interval`
/// (`Some`) or as it is, with its bound dimension.
fn time_of<'s>(
    spec: &DerivedSpec<'_>,
    semantics: &'s Semantics,
    fact: &str,
    time: &str,
    interval: Option<&str>,
) -> Result<(&'s BoundDimension, InnerExpr)> {
    let dim = semantics.dimension(time)?;
    let translated = InnerExpr::translate(
        &Expr::Identifier(Ident::new(time)),
        spec.view,
        semantics,
        spec.time_zone,
        interval.map(|i| (time, Moved::Shift(i))),
        Some(fact),
    )?;
    Ok((dim, translated))
}

/// `<period of time moved forward by interval> <= <period of (SELECT max(<time>) FROM
/// <fact>)>`: the moved rows of `fact` whose period lies within the data's range (every
/// row of the table, whatever the query's filters: the range of the time spine). The
/// data's last period is whole: a year's offset by year reads the whole earlier year.
pub(super) fn within_data(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    time: &str,
    interval: &str,
    period: TimeGrain,
) -> Result<InnerExpr> {
    let (dim, moved) = time_of(spec, semantics, fact, time, Some(interval))?;
    let (_, own) = time_of(spec, semantics, fact, time, None)?;
    let last = over_all_rows(
        spec,
        semantics,
        fact,
        &own.tables,
        &format!("max({})", own.expr),
    )?;
    let condition = if period == TimeGrain::Day && dim.data_type == DataType::Date32 {
        format!("{} <= ({last})", moved.expr)
    } else {
        format!(
            "{} <= {}",
            truncate_sql(&moved.expr.to_string(), period, dim),
            truncate_sql(&last, period, dim)
        )
    };
    Ok(InnerExpr {
        expr: parse_expr(&condition)?,
        tables: moved.tables,
        dimensions: BTreeSet::from([time.to_string()]),
    })
}

/// Replace in `filters` (the view filters translated with `time` moved forward by
/// `interval`) each range on `time` by the same range on whole periods of `grain`.
pub(super) fn whole_periods(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    time: &str,
    interval: &str,
    grain: TimeGrain,
    filters: &mut [InnerExpr],
) -> Result<()> {
    let (dim, moved) = time_of(spec, semantics, fact, time, Some(interval))?;
    let period = truncate_sql(&moved.expr.to_string(), grain, dim);
    for (view_filter, filter) in spec.view_filters.iter().zip(filters.iter_mut()) {
        if let Some(sql) =
            bounds::whole_period(view_filter, time, &period, |v| truncate_sql(v, grain, dim))
        {
            filter.expr = parse_expr(&sql)?;
        }
    }
    Ok(())
}

/// `SELECT min(<time>) AS "__lo", max(<time>) AS "__hi" FROM <fact ..>`: the first and
/// last value of a time dimension (translated for `fact`) over all the table's rows.
pub(super) fn data_range(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    time: &Expr,
    tables: &BTreeSet<String>,
) -> Result<String> {
    over_all_rows(
        spec,
        semantics,
        fact,
        tables,
        &format!("min({time}) AS \"__lo\", max({time}) AS \"__hi\""),
    )
}

/// `SELECT <items> FROM <fact and the joins tables need>`, whatever the query's filters.
/// A time dimension of one other table (the order's date of an order line) is read
/// over that table alone: its values are the data's days, and it is far smaller than
/// the fact joined to it.
fn over_all_rows(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    tables: &BTreeSet<String>,
    items: &str,
) -> Result<String> {
    let read = match tables.iter().collect::<Vec<_>>().as_slice() {
        [only] => only.as_str(),
        _ => fact,
    };
    let from = from_clause(read, tables, spec, &[], semantics)?;
    Ok(format!("SELECT {items} FROM {from}"))
}
