//! The part of a semi-additive metric (a balance or a stock): per group of the grain,
//! only the rows of one day are aggregated, or each day's value is averaged.
//!
//! The day is the last (or first) value of the metric's time dimension among the group's
//! rows that share the grain's time columns (the period) and the `per` columns (an
//! account, a store); other grain columns (a region) do not choose the day, as in
//! MetricFlow's `non_additive_dimension`. With `per`, each account's own last day counts.
//!
//! ```sql
//! -- last / first
//! SELECT "__g0", .., sum("__v") AS "__m<j>" FROM (
//!   SELECT <grain> AS "__g0", .., <value> AS "__v", <time> AS "__t",
//!          max(<time>) OVER (PARTITION BY <grain on time>, <per>) AS "__at"
//!   FROM <fact and joins> WHERE <filters>) AS "__r"
//! WHERE "__t" = "__at" GROUP BY "__g0", ..
//! -- average: each day's sum per group and `per` value, averaged over the days, summed
//! SELECT "__g0", .., sum("__d") FROM (
//!   SELECT "__g0", .., avg("__d") AS "__d" FROM (
//!     SELECT <grain> AS "__g0", .., <per> AS "__p0", .., sum(<value>) AS "__d"
//!     FROM .. WHERE .. GROUP BY <grain>, <per>, <time>) AS "__r"
//!   GROUP BY "__g0", .., "__p0", ..) AS "__s"
//! GROUP BY "__g0", ..
//! ```

use std::fmt::Write as _;

use super::{InnerExpr, write_filters};
use crate::bind::{AggregateDef, BoundView, ColumnKind, SemiAdditiveDef};
use crate::model::{Snapshot, dimension_of_column};

/// The SQL of the part computing metric column `__m<j>` from `from` (the fact and its
/// joins) at `grain` under `filters`.
pub(super) fn part_sql(
    j: usize,
    def: &AggregateDef,
    semi: &SemiAdditiveDef,
    view: &BoundView,
    from: &str,
    grain: &[InnerExpr],
    filters: &[InnerExpr],
) -> String {
    let outer_keys: Vec<String> = (0..grain.len()).map(|i| format!("\"__g{i}\"")).collect();
    let group_by = |keys: &[String]| {
        if keys.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", keys.join(", "))
        }
    };
    let mut items: Vec<String> = grain
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{} AS \"__g{i}\"", g.expr))
        .collect();
    let value = match def.value_sql() {
        star if star == "*" => "1".to_string(),
        v => v,
    };
    match semi.at {
        Snapshot::Last | Snapshot::First => {
            let mut partition: Vec<String> = grain
                .iter()
                .filter(|g| reads_time(g, view, &semi.dimension))
                .map(|g| g.expr.to_string())
                .collect();
            partition.extend(semi.per.iter().map(|p| p.to_string()));
            let over = if partition.is_empty() {
                String::new()
            } else {
                format!("PARTITION BY {}", partition.join(", "))
            };
            let pick = if semi.at == Snapshot::Last {
                "max"
            } else {
                "min"
            };
            // The day is chosen among the metric's own rows (its filter applies first,
            // as MetricFlow's WHERE before its window), and only they are that day's
            // rows: a row its filter leaves out makes no group.
            let time = match &def.filter {
                Some(f) => format!("CASE WHEN {f} THEN {} END", semi.time),
                None => semi.time.to_string(),
            };
            items.push(format!("{value} AS \"__v\""));
            items.push(format!("{time} AS \"__t\""));
            items.push(format!("{pick}({time}) OVER ({over}) AS \"__at\""));
            let mut rows = format!("SELECT {} FROM {from}", items.join(", "));
            write_filters(&mut rows, filters);
            let mut selected = outer_keys.clone();
            selected.push(format!("{} AS \"__m{j}\"", def.sql_of("\"__v\"")));
            format!(
                "SELECT {} FROM ({rows}) AS \"__r\" WHERE \"__t\" = \"__at\"{}",
                selected.join(", "),
                group_by(&outer_keys)
            )
        }
        Snapshot::Average => {
            let per_keys: Vec<String> =
                (0..semi.per.len()).map(|i| format!("\"__p{i}\"")).collect();
            items.extend(
                semi.per
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("{p} AS \"__p{i}\"")),
            );
            items.push(format!("{} AS \"__d\"", def.sql_of(&value)));
            let mut rows = format!("SELECT {} FROM {from}", items.join(", "));
            write_filters(&mut rows, filters);
            let mut keys: Vec<String> = grain.iter().map(|g| g.expr.to_string()).collect();
            keys.extend(semi.per.iter().map(|p| p.to_string()));
            keys.push(semi.time.to_string());
            let _ = write!(rows, " GROUP BY {}", keys.join(", "));
            let mut middle_keys = outer_keys.clone();
            middle_keys.extend(per_keys);
            let mut middle = outer_keys.clone();
            middle.push("avg(\"__d\") AS \"__d\"".to_string());
            let days = format!(
                "SELECT {} FROM ({rows}) AS \"__r\"{}",
                middle.join(", "),
                group_by(&middle_keys)
            );
            let mut selected = outer_keys.clone();
            selected.push(format!("sum(\"__d\") AS \"__m{j}\""));
            format!(
                "SELECT {} FROM ({days}) AS \"__s\"{}",
                selected.join(", "),
                group_by(&outer_keys)
            )
        }
    }
}

/// Does the grain expression read the time dimension `time` (at any grain)?
fn reads_time(g: &InnerExpr, view: &BoundView, time: &str) -> bool {
    g.dimensions
        .iter()
        .any(|column| match view.column(column).map(|c| &c.kind) {
            Some(ColumnKind::Dimension(d) | ColumnKind::TimeGrain(d, _)) => d == time,
            _ => dimension_of_column(column) == time,
        })
}
