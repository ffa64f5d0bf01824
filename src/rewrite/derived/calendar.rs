//! The aligned relation of a calendar comparison: the calendar's days joined to the rows
//! of the days they count (its column of aligned days, or a shift by periods of one of
//! its grains).

use datafusion::arrow::datatypes::DataType;

use super::{CalendarShift, quote};
use crate::bind::Semantics;
use crate::error::{Error, Result};
use crate::sources::BASE_SCHEMA;

/// ` JOIN <calendar> AS <aligned relation> ON <relation>.<aligned> = <time of fact>`:
/// each row of `fact` once for every day whose aligned day its day is (none for a day
/// no day is aligned with). Under a calendar shift the relation is the calendar's days
/// with the day each counts the rows of ([`shifted_calendar`]).
pub(super) fn aligned_join(
    time: &str,
    fact: &str,
    shift: Option<&CalendarShift>,
    semantics: &Semantics,
) -> Result<String> {
    let dim = semantics.dimension(time)?;
    let calendar = dim
        .calendar
        .as_ref()
        .ok_or_else(|| Error::Internal(format!("dimension {time} has no calendar")))?;
    if dim.data_type != DataType::Date32 && dim.data_type != DataType::Null {
        return Err(Error::unsupported(
            format!(
                "\"{time}\" is compared on the aligned days of its calendar, and its values are not dates"
            ),
            Some("give the calendar to a time dimension of dates".into()),
        ));
    }
    let own = semantics
        .table_dimensions
        .get(fact)
        .and_then(|c| c.get(time))
        .unwrap_or(&dim.expr);
    let relation = quote(&crate::model::aligned_relation(time));
    if let Some(shift) = shift {
        return Ok(format!(
            " JOIN ({}) AS {relation} ON {relation}.\"__kp_from\" = ({})",
            shifted_calendar(calendar, shift, semantics)?,
            own.expr
        ));
    }
    let aligned = calendar
        .aligned
        .as_ref()
        .ok_or_else(|| Error::Internal(format!("the calendar of {time} has no aligned days")))?;
    Ok(format!(
        " JOIN {}.{} AS {relation} ON {relation}.{} = ({})",
        quote(BASE_SCHEMA),
        quote(&calendar.table),
        quote(aligned),
        own.expr
    ))
}

/// The calendar's rows of the days a shift by periods of one of its grains counts rows
/// for, each with the day whose rows it counts (`__kp_from`): the day at the same
/// position (the n-th day) in the period `periods` later, or that period's first day
/// (`whole`). Periods are ordered by their first days.
/// ```sql
/// SELECT t.*, s.<day> AS __kp_from
/// FROM (<calendar>, <grain> AS __kp_p, <position in its period> AS __kp_n) AS s
/// JOIN (SELECT __kp_p, lead(__kp_p, <periods>) OVER (ORDER BY first day) AS __kp_to ...) AS m
///   ON m.__kp_p = s.__kp_p
/// JOIN (<calendar>, <grain> AS __kp_p, <position> AS __kp_n) AS t
///   ON t.__kp_p = m.__kp_to AND t.__kp_n = s.__kp_n   -- or t.__kp_n = 1 (whole)
/// ```
fn shifted_calendar(
    calendar: &crate::bind::BoundCalendar,
    shift: &CalendarShift,
    semantics: &Semantics,
) -> Result<String> {
    let grain = semantics.dimension(&shift.grain)?;
    let table = quote(&calendar.table);
    let day = format!("{table}.{}", quote(&calendar.day));
    let numbered = format!(
        "SELECT {table}.*, {g} AS \"__kp_p\", row_number() OVER (PARTITION BY {g} ORDER BY {day}) AS \"__kp_n\" FROM {}.{table} AS {table}",
        quote(BASE_SCHEMA),
        g = grain.expr.expr,
    );
    let periods = format!(
        "SELECT p.\"__kp_p\", lead(p.\"__kp_p\", {}) OVER (ORDER BY p.\"__kp_first\") AS \"__kp_to\" FROM (SELECT {} AS \"__kp_p\", min({day}) AS \"__kp_first\" FROM {}.{table} AS {table} GROUP BY {}) AS p",
        shift.periods,
        grain.expr.expr,
        quote(BASE_SCHEMA),
        grain.expr.expr,
    );
    let position = if shift.whole {
        "t.\"__kp_n\" = 1".to_string()
    } else {
        "t.\"__kp_n\" = s.\"__kp_n\"".to_string()
    };
    Ok(format!(
        "SELECT t.*, s.{} AS \"__kp_from\" FROM ({numbered}) AS s JOIN ({periods}) AS m ON m.\"__kp_p\" = s.\"__kp_p\" JOIN ({numbered}) AS t ON t.\"__kp_p\" = m.\"__kp_to\" AND {position}",
        quote(&calendar.day)
    ))
}
