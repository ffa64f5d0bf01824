//! The derived table that answers a view block at its grain.
//!
//! For each fact table among the requested metrics:
//! ```sql
//! SELECT <grain> AS __g0.., <metric aggregates> AS __m<j>.., <aggregates> AS __a<k>..
//! FROM __kp_base.<fact> AS <fact> LEFT JOIN __kp_base.<dim table> AS <dim table> ON ...
//! WHERE <dimension filters>
//! GROUP BY <grain>
//! ```
//! Only the many-to-one joins the query needs are added, so rows never fan out. When the
//! metrics come from several fact tables, each is aggregated on its own and the results
//! are combined on the grain ([`combine`]), so nothing is counted twice. Cumulative
//! metrics are parts of their own ([`window`]), as are counts of the view's rows
//! ([`row_count`]). View expressions become expressions over base columns in
//! [`translate`]. The SQL text is assembled only from model identifiers and expressions
//! printed from their syntax trees, then parsed back.

mod bounds;
mod calendar;
mod combine;
mod conversion;
mod metric_dimension;
mod row_count;
mod shifted;
mod snapshot;
mod transform;
pub mod translate;
mod window;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use datafusion::sql::sqlparser::ast::{Expr, Query};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use calendar::aligned_join;
use combine::join_parts;
use row_count::{row_count_part, view_rows_arguments};
pub use transform::{Before, CalendarShift, Earlier, Period, Physical, Transform};
pub use translate::{InnerExpr, Moved, truncate_sql};
use window::window_part;

use crate::bind::{AggregateDef, BoundView, ColumnKind, Semantics};
use crate::error::{Error, Result};
use crate::model::{ALIGNED_PREFIX, TimeGrain, Window};
use crate::sources::BASE_SCHEMA;
use crate::time_zone::TimeZone;

/// The marker aggregate `kp_view_rows(d1, d2, ...)`: the number of distinct combinations
/// of its arguments in each group of the grain (the view's rows, for `COUNT(*)`). The
/// derived table computes it in a part of its own that groups by the grain and the
/// arguments, then counts the groups: a hash aggregation, never a per-group set.
pub const VIEW_ROWS: &str = "kp_view_rows";

/// Everything the derived table of one block needs.
#[derive(Debug, Clone)]
pub struct DerivedSpec<'a> {
    /// The view read.
    pub view: &'a BoundView,
    /// Grain expressions → `__g<i>`.
    pub grain: Vec<InnerExpr>,
    /// Metric computations → `__m<j>`.
    pub metrics: Vec<Physical>,
    /// Aggregates over dimensions → `__a<k>`.
    pub aggregates: Vec<InnerExpr>,
    /// Row filters (ANDed).
    pub filters: Vec<InnerExpr>,
    /// The grain as view expressions (re-translated for shifted parts).
    pub view_grain: Vec<Expr>,
    /// The row filters as view expressions.
    pub view_filters: Vec<Expr>,
    /// The session's time zone (local time of `timestamptz` grains).
    pub time_zone: TimeZone,
    /// The shift of the aligned relation's days (a part under `Transform::Aligned`
    /// with one).
    pub calendar_shift: Option<CalendarShift>,
}

impl DerivedSpec<'_> {
    /// The grain and the row filters translated again for the rows of table `fact`
    /// (dimensions it carries in its own columns), with the time dimension moved if
    /// `moved` says so.
    fn translate_for(
        &self,
        semantics: &Semantics,
        moved: Option<(&str, Moved<'_>)>,
        fact: &str,
    ) -> Result<(Vec<InnerExpr>, Vec<InnerExpr>)> {
        let translate = |e: &Expr| {
            InnerExpr::translate(e, self.view, semantics, self.time_zone, moved, Some(fact))
        };
        let grain = self
            .view_grain
            .iter()
            .map(translate)
            .collect::<Result<_>>()?;
        let filters = self
            .view_filters
            .iter()
            .map(translate)
            .collect::<Result<_>>()?;
        Ok((grain, filters))
    }
}

fn parse_expr(sql: &str) -> Result<Expr> {
    crate::bind::parse_expr(sql)
        .map_err(|e| Error::Internal(format!("generated expression {sql}: {e}")))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The value an aggregate reads from each row: its expression (or 1, or `*`) where its
/// filter holds, else NULL.
/// A part of the derived table: its SQL, the columns it provides, and whether its rows
/// are periods of the answer (a shifted part only brings values to existing periods).
struct Part {
    sql: String,
    provides: Vec<String>,
    primary: bool,
    /// One row without grain columns, joined to every row.
    total: bool,
}

/// Build the derived table for `spec`.
pub fn build_derived(spec: &DerivedSpec<'_>, semantics: &Semantics) -> Result<Query> {
    let defs: Vec<&AggregateDef> = spec
        .metrics
        .iter()
        .map(|p| {
            semantics
                .metrics
                .get(&p.metric)
                .and_then(|m| m.aggregate())
                .ok_or_else(|| Error::Internal(format!("metric {} is not an aggregate", p.metric)))
        })
        .collect::<Result<_>>()?;

    // Groups of metric columns computed together: per fact table and transform (each
    // windowed metric on its own), in order of first use.
    let mut groups: Vec<(String, Transform, Vec<usize>)> = Vec::new();
    for (j, (physical, def)) in spec.metrics.iter().zip(&defs).enumerate() {
        let shared = !matches!(
            physical.transform,
            Transform::Window { .. } | Transform::DayBefore { .. } | Transform::Conversion { .. }
        ) && def.semi_additive.is_none();
        match groups
            .iter_mut()
            .find(|(t, tr, _)| shared && *t == def.table && *tr == physical.transform)
        {
            Some((_, _, js)) => js.push(j),
            None => groups.push((def.table.clone(), physical.transform.clone(), vec![j])),
        }
    }
    let row_tables: BTreeSet<String> = spec
        .grain
        .iter()
        .chain(&spec.filters)
        .chain(&spec.aggregates)
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    // Aggregates that count view rows get parts of their own (below).
    let row_counts: Vec<(usize, Vec<String>)> = spec
        .aggregates
        .iter()
        .enumerate()
        .filter_map(|(k, a)| view_rows_arguments(&a.expr).map(|args| (k, args)))
        .collect();
    let plain_aggregates = spec.aggregates.len() - row_counts.len();
    let only_row_counts = groups.is_empty() && plain_aggregates == 0 && !row_counts.is_empty();
    let is_semi_additive = |js: &[usize]| js.iter().any(|&j| defs[j].semi_additive.is_some());
    let has_plain = groups.iter().any(|(fact, t, js)| {
        *t == Transform::Plain
            && !semantics.table_dimensions.contains_key(fact)
            && !is_semi_additive(js)
    });
    // Parts under a condition give values to groups, not groups: the groups come from
    // the rows the query selects, as a plain part's do.
    let only_conditional = !groups.is_empty()
        && groups
            .iter()
            .all(|(_, t, _)| matches!(t, Transform::Where { .. }));
    if groups.is_empty() || (plain_aggregates > 0 && !has_plain) || only_conditional {
        groups.insert(
            0,
            (
                base_table(spec, semantics, &row_tables)?,
                Transform::Plain,
                vec![],
            ),
        );
    }

    let mut parts: Vec<Part> = Vec::new();
    let mut aggregates_placed = false;
    for (fact, transform, js) in &groups {
        match transform {
            Transform::Plain if semantics.table_dimensions.contains_key(fact) => {
                // The fact carries dimensions in its own columns: translate for it.
                let (grain, filters) = spec.translate_for(semantics, None, fact)?;
                parts.push(grouped_part(
                    spec, semantics, fact, js, &defs, false, &grain, &filters,
                )?);
            }
            Transform::Plain => {
                // A balance's part reads one day's rows: dimension aggregates go elsewhere.
                let with_aggregates = !aggregates_placed && !is_semi_additive(js);
                aggregates_placed |= with_aggregates;
                parts.push(grouped_part(
                    spec,
                    semantics,
                    fact,
                    js,
                    &defs,
                    with_aggregates,
                    &spec.grain,
                    &spec.filters,
                )?);
            }
            Transform::Where { condition } => {
                let carried = semantics.table_dimensions.contains_key(fact);
                let (grain, mut filters) = if carried {
                    spec.translate_for(semantics, None, fact)?
                } else {
                    (spec.grain.clone(), spec.filters.clone())
                };
                filters.push(InnerExpr::translate(
                    condition,
                    spec.view,
                    semantics,
                    spec.time_zone,
                    None,
                    carried.then_some(fact.as_str()),
                )?);
                let mut part =
                    grouped_part(spec, semantics, fact, js, &defs, false, &grain, &filters)?;
                part.primary = false;
                parts.push(part);
            }
            Transform::Total => {
                let mut part =
                    grouped_part(spec, semantics, fact, js, &defs, false, &[], &spec.filters)?;
                part.total = true;
                parts.push(part);
            }
            Transform::Shift {
                time,
                interval,
                periods,
                whole,
            } => {
                let shift = Some((time.as_str(), Moved::Shift(interval.as_str())));
                let (grain, mut filters) = spec.translate_for(semantics, shift, fact)?;
                // An offset metric's period coarser than a day is the whole earlier
                // period: the range selects the periods it touches.
                let whole = periods.filter(|g| *whole && *g != TimeGrain::Day && !g.is_sub_daily());
                if let Some(period) = whole {
                    shifted::whole_periods(
                        spec,
                        semantics,
                        fact,
                        time,
                        interval,
                        period,
                        &mut filters,
                    )?;
                }
                // The exact condition is on the shifted time; this range on the column
                // itself lets the engine or the warehouse read only the earlier periods.
                filters.extend(
                    bounds::Bounds::of(&spec.view_filters, time)
                        .for_shift(semantics, fact, time, interval, whole)?,
                );
                // An offset metric's periods end with the data: a period after the last
                // row has no rows of its own to be an answer's period (MetricFlow's end
                // with its time spine).
                if let Some(period) = periods {
                    filters.push(shifted::within_data(
                        spec, semantics, fact, time, interval, *period,
                    )?);
                }
                let mut part =
                    grouped_part(spec, semantics, fact, js, &defs, false, &grain, &filters)?;
                part.primary = periods.is_some();
                parts.push(part);
            }
            Transform::Aligned {
                time,
                primary,
                shift,
            } => {
                let aligned = Some((time.as_str(), Moved::Aligned));
                let (grain, filters) = spec.translate_for(semantics, aligned, fact)?;
                let shifted = DerivedSpec {
                    calendar_shift: shift.clone(),
                    ..spec.clone()
                };
                let mut part = grouped_part(
                    &shifted, semantics, fact, js, &defs, false, &grain, &filters,
                )?;
                part.primary = *primary;
                parts.push(part);
            }
            Transform::Conversion {
                base,
                entity,
                time,
                conversion_time,
                window,
                constant,
            } => {
                for &j in js {
                    let spec_of = conversion::Conversion {
                        j,
                        conversion: defs[j],
                        base,
                        entity,
                        time,
                        conversion_time,
                        window: *window,
                        constant,
                    };
                    parts.push(spec_of.part(spec, semantics)?);
                }
            }
            Transform::DayBefore {
                time,
                interval,
                period,
                periods,
            } => {
                for &j in js {
                    let mut part = window_part(
                        spec,
                        semantics,
                        fact,
                        j,
                        defs[j],
                        time,
                        Window::Trailing(1, TimeGrain::Day),
                        period,
                        Some(&Before::Interval(interval.clone())),
                    )?;
                    part.primary = *periods;
                    parts.push(part);
                }
            }
            Transform::Window {
                time,
                window,
                period,
                earlier,
                primary,
            } => {
                for &j in js {
                    let mut part = window_part(
                        spec,
                        semantics,
                        fact,
                        j,
                        defs[j],
                        time,
                        *window,
                        period,
                        earlier.as_ref().map(|e| &e.before),
                    )?;
                    part.primary = *primary && earlier.as_ref().is_none_or(|e| e.periods);
                    parts.push(part);
                }
            }
        }
    }
    if only_row_counts {
        parts.clear();
    }
    for (k, arguments) in &row_counts {
        parts.push(Part {
            sql: row_count_part(spec, semantics, *k, arguments)?,
            provides: vec![format!("__a{k}")],
            primary: true,
            total: false,
        });
    }

    let (totals, mut parts): (Vec<Part>, Vec<Part>) = parts.into_iter().partition(|p| p.total);
    let provided: Vec<String> = parts.iter().flat_map(|p| p.provides.clone()).collect();
    let mut sql = if parts.len() == 1 {
        parts.remove(0).sql
    } else {
        join_parts(&parts, spec)
    };
    if !totals.is_empty() {
        // Each total is one row: joined to every row of the answer.
        let mut items: Vec<String> = (0..spec.grain.len())
            .map(|i| format!("p.\"__g{i}\""))
            .collect();
        items.extend(provided.iter().map(|c| format!("p.\"{c}\"")));
        let mut from = format!("({sql}) AS p");
        for (t, total) in totals.iter().enumerate() {
            items.extend(total.provides.iter().map(|c| format!("t{t}.\"{c}\"")));
            let _ = write!(from, " CROSS JOIN ({}) AS t{t}", total.sql);
        }
        sql = format!("SELECT {} FROM {from}", items.join(", "));
    }
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map(|q| *q)
        .map_err(|e| Error::Internal(format!("generated SQL does not parse: {e}: {sql}")))
}

/// `SELECT <grain>, <metrics js>, [<aggregates>] FROM <fact and joins> WHERE <filters>
/// GROUP BY <grain>`.
#[allow(clippy::too_many_arguments)]
fn grouped_part(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    js: &[usize],
    defs: &[&AggregateDef],
    with_aggregates: bool,
    grain: &[InnerExpr],
    filters: &[InnerExpr],
) -> Result<Part> {
    let mut needed: BTreeSet<String> = grain
        .iter()
        .chain(filters)
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    if with_aggregates {
        needed.extend(
            spec.aggregates
                .iter()
                .filter(|e| view_rows_arguments(&e.expr).is_none())
                .flat_map(|e| e.tables.iter().cloned()),
        );
    }
    for &j in js {
        needed.extend(defs[j].tables.iter().cloned());
    }
    let names: Vec<&str> = js
        .iter()
        .map(|&j| spec.metrics[j].metric.as_str())
        .collect();
    let from = from_clause(fact, &needed, spec, &names, semantics)?;
    if let [j] = js
        && let Some(semi) = &defs[*j].semi_additive
    {
        return Ok(Part {
            sql: snapshot::part_sql(*j, defs[*j], semi, spec.view, &from, grain, filters),
            provides: vec![format!("__m{j}")],
            primary: true,
            total: false,
        });
    }

    let mut items = Vec::new();
    let mut provides = Vec::new();
    for (i, g) in grain.iter().enumerate() {
        items.push(format!("{} AS \"__g{i}\"", g.expr));
    }
    for &j in js {
        items.push(format!("{} AS \"__m{j}\"", defs[j].sql()));
        provides.push(format!("__m{j}"));
    }
    if with_aggregates {
        for (k, a) in spec.aggregates.iter().enumerate() {
            if view_rows_arguments(&a.expr).is_none() {
                items.push(format!("{} AS \"__a{k}\"", a.expr));
                provides.push(format!("__a{k}"));
            }
        }
    }
    if items.is_empty() {
        items.push("count(*) AS \"__n\"".to_string());
    }
    let mut sql = format!("SELECT {} FROM {from}", items.join(", "));
    write_filters(&mut sql, filters);
    if !grain.is_empty() {
        let keys: Vec<String> = grain.iter().map(|g| g.expr.to_string()).collect();
        let _ = write!(sql, " GROUP BY {}", keys.join(", "));
        // Metrics that each have a filter of their own: a group none of whose rows
        // passes any of them is no group of theirs (the filter selects the metric's
        // rows, as MetricFlow's WHERE does), not a group with NULLs.
        let own: Vec<String> = js
            .iter()
            .map_while(|&j| defs[j].filter.as_ref())
            .map(|f| format!("count(CASE WHEN {f} THEN 1 END) > 0"))
            .collect();
        if !with_aggregates && !js.is_empty() && own.len() == js.len() {
            let _ = write!(sql, " HAVING {}", own.join(" OR "));
        }
    }
    Ok(Part {
        sql,
        provides,
        primary: true,
        total: false,
    })
}

/// SQL interval literal of `n` units of `grain`.
pub fn interval(n: u32, grain: TimeGrain) -> String {
    match grain {
        TimeGrain::Second => format!("{n} second"),
        TimeGrain::Minute => format!("{n} minute"),
        TimeGrain::Hour => format!("{n} hour"),
        TimeGrain::Day => format!("{n} day"),
        TimeGrain::Week => format!("{} day", n * 7),
        TimeGrain::Month => format!("{n} month"),
        TimeGrain::Quarter => format!("{} month", n * 3),
        TimeGrain::Year | TimeGrain::FiscalYear => format!("{n} year"),
        TimeGrain::FiscalQuarter => format!("{} month", n * 3),
    }
}

/// ` WHERE <row filters ANDed>`, when there are any.
fn write_filters(sql: &mut String, filters: &[InnerExpr]) {
    if !filters.is_empty() {
        let filters: Vec<String> = filters.iter().map(|f| format!("({})", f.expr)).collect();
        let _ = write!(sql, " WHERE {}", filters.join(" AND "));
    }
}

/// The table a block without metrics reads: the first of the requested dimensions'
/// tables, then the view's metric tables, from which every needed table is reachable.
fn base_table(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    needed: &BTreeSet<String>,
) -> Result<String> {
    let mut candidates: Vec<String> = Vec::new();
    for e in spec
        .grain
        .iter()
        .chain(&spec.filters)
        .chain(&spec.aggregates)
    {
        for d in &e.dimensions {
            if let Some(dim) = semantics
                .dimensions
                .get(crate::model::dimension_of_column(d))
            {
                candidates.push(dim.table.clone());
            }
        }
    }
    for c in &spec.view.columns {
        if let ColumnKind::Metric(m) = &c.kind
            && let Some(metric) = semantics.metrics.get(m).and_then(|m| m.aggregate())
        {
            candidates.push(metric.table.clone());
        }
    }
    for c in &spec.view.columns {
        if let ColumnKind::Dimension(d) = &c.kind
            && let Some(dim) = semantics.dimensions.get(d)
        {
            candidates.push(dim.table.clone());
        }
    }
    // A table that carries dimensions in its own columns (`metric_time`) needs only the
    // tables of the others.
    let reaches = |t: &String| {
        let own = semantics
            .table_dimensions
            .contains_key(t)
            .then(|| spec.translate_for(semantics, None, t).ok())
            .flatten()
            .map(|(grain, filters)| {
                grain
                    .iter()
                    .chain(&filters)
                    .chain(&spec.aggregates)
                    .flat_map(|e| e.tables.iter().cloned())
                    .collect::<BTreeSet<String>>()
            });
        own.as_ref().unwrap_or(needed).iter().all(|n| {
            semantics
                .model
                .join_path(t, semantics.model.reach_table(n))
                .is_some()
        })
    };
    // Each table is tried once (translating for it is not free).
    let mut tried = BTreeSet::new();
    candidates
        .into_iter()
        .filter(|t| tried.insert(t.clone()))
        .find(reaches)
        .ok_or_else(|| {
            Error::unsupported(
                format!(
                    "the dimensions asked together in view \"{}\" are not related: no table reaches all of {}",
                    spec.view.name,
                    needed.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some("ask for these dimensions in separate queries, or together with a metric that relates them".into()),
            )
        })
}

/// `FROM fact LEFT JOIN ...` with the joins needed to reach `needed`.
fn from_clause(
    fact: &str,
    needed: &BTreeSet<String>,
    spec: &DerivedSpec<'_>,
    metrics: &[&str],
    semantics: &Semantics,
) -> Result<String> {
    let metric_names: Vec<String> = metrics.iter().map(|m| format!("\"{m}\"")).collect();
    let mut joined: Vec<String> = vec![fact.to_string()];
    let mut sql = format!("{}.{} AS {}", quote(BASE_SCHEMA), quote(fact), quote(fact));
    // A metric dimension's relation is joined to its table, after the tables.
    let (relations, tables): (Vec<&String>, Vec<&String>) = needed.iter().partition(|t| {
        metric_dimension::dimension_of(t).is_some() || t.starts_with(ALIGNED_PREFIX)
    });
    let mut targets: BTreeSet<&str> = tables.iter().map(|t| t.as_str()).collect();
    targets.extend(relations.iter().map(|r| semantics.model.reach_table(r)));
    for &target in &targets {
        let Some(path) = semantics.model.join_path(fact, target) else {
            let dims: BTreeSet<String> = spec
                .grain
                .iter()
                .chain(&spec.filters)
                .chain(&spec.aggregates)
                .filter(|e| e.tables.contains(target))
                .flat_map(|e| e.dimensions.iter().cloned())
                .collect();
            let what = if metric_names.is_empty() {
                format!("table \"{fact}\"")
            } else {
                format!("metric {} (table \"{fact}\")", metric_names.join(", "))
            };
            let dims = dims
                .into_iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::unsupported(
                format!(
                    "{what} cannot be broken down or filtered by {dims} (table \"{target}\"): there is no many-to-one join path from \"{fact}\" to \"{target}\""
                ),
                Some(format!(
                    "query {dims} without these metrics, or use a view where they are related"
                )),
            ));
        };
        for (from, join) in path {
            let to = join.to.get_ref();
            if joined.iter().any(|j| j == to) {
                continue;
            }
            let Some(to_table) = semantics.model.table(to) else {
                return Err(Error::Internal(format!("table {to} is not in the model")));
            };
            let _ = write!(
                sql,
                " LEFT JOIN {}.{} AS {} ON {}.{} = {}.{}",
                quote(BASE_SCHEMA),
                quote(to),
                quote(to),
                quote(from.name.get_ref()),
                quote(join.foreign_key.get_ref()),
                quote(to),
                quote(join.key.as_ref().unwrap_or(&to_table.primary_key).get_ref()),
            );
            joined.push(to.clone());
        }
    }
    for relation in relations {
        if let Some(dimension) = metric_dimension::dimension_of(relation) {
            sql.push_str(&metric_dimension::join(dimension, spec, semantics)?);
        } else if let Some(time) = relation.strip_prefix(ALIGNED_PREFIX) {
            sql.push_str(&aligned_join(
                time,
                fact,
                spec.calendar_shift.as_ref(),
                semantics,
            )?);
        }
    }
    Ok(sql)
}
