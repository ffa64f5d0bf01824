//! Dimensions bound to their tables: an expression over the table's columns, a metric
//! per row of the table (a metric dimension, whose values a relation of the rewrite
//! holds), and a time dimension's calendar.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{Expr, Ident};
use toml::Spanned;

use super::{Binder, BoundCalendar, BoundDimension, BoundExpr, BoundMetric};
use crate::error::did_you_mean;

/// Every dimension of the model that binds (the others are reported).
pub(super) fn bind_dimensions(
    b: &mut Binder<'_>,
    model: &crate::model::Model,
) -> HashMap<String, BoundDimension> {
    let mut dimensions = HashMap::new();
    for dim in &model.dimensions {
        let default_expr;
        let text = match &dim.expr {
            Some(e) => e,
            None => {
                default_expr = Spanned::new(dim.name.span(), dim.name.get_ref().clone());
                &default_expr
            }
        };
        let bound = match &dim.metric {
            Some(_) => Some(metric_dimension_expr(dim)),
            None => b.bind(dim.file, text, dim.table.get_ref(), None),
        };
        if let Some(expr) = bound {
            let name = dim.name.get_ref().clone();
            dimensions.insert(
                name.clone(),
                BoundDimension {
                    name,
                    table: dim.table.get_ref().clone(),
                    expr,
                    kind: dim.kind,
                    metric: dim.metric.as_ref().map(|m| m.get_ref().clone()),
                    calendar: dim.calendar.as_ref().and_then(|c| bind_calendar(b, dim, c)),
                    week_start: dim.week_start.unwrap_or_default(),
                    fiscal_year_start_month: dim
                        .fiscal_year_start_month
                        .as_ref()
                        .map_or(1, |m| *m.get_ref()),
                    label: dim.label.clone(),
                    description: dim.description.clone(),
                    data_type: DataType::Null,
                },
            );
        }
    }
    dimensions
}

/// A calendar's table and columns (its aligned column checked against the data when it
/// is known).
fn bind_calendar(
    b: &mut Binder<'_>,
    dim: &crate::model::Dimension,
    calendar: &crate::model::Calendar,
) -> Option<BoundCalendar> {
    let table = b.model.table(calendar.table.get_ref())?;
    let mut grains = Vec::new();
    for grain in &calendar.grains {
        match b.model.dimension(grain.get_ref()) {
            Some(d)
                if d.table.get_ref() == table.name.get_ref()
                    && d.kind != crate::model::DimensionKind::Time =>
            {
                grains.push(grain.get_ref().clone());
            }
            _ => {
                b.issue(
                    dim.file,
                    grain,
                    format!(
                        "calendar grain \"{}\" is not a dimension of the calendar table \"{}\": a grain names a dimension whose values are the periods of the days",
                        grain.get_ref(),
                        table.name.get_ref()
                    ),
                );
                return None;
            }
        }
    }
    let Some(aligned) = calendar.aligned.as_ref().map(|a| a.get_ref()) else {
        return Some(BoundCalendar {
            table: table.name.get_ref().clone(),
            day: table.primary_key.get_ref().clone(),
            aligned: None,
            grains,
        });
    };
    if let Some(columns) = b.columns.get(table.name.get_ref())
        && !columns.contains(aligned)
    {
        let hint = did_you_mean(aligned, columns.iter().map(String::as_str))
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        b.issue(
            dim.file,
            calendar.aligned.as_ref()?,
            format!(
                "calendar table \"{}\" has no column \"{aligned}\"{hint}",
                table.name.get_ref()
            ),
        );
        return None;
    }
    Some(BoundCalendar {
        table: table.name.get_ref().clone(),
        day: table.primary_key.get_ref().clone(),
        aligned: Some(aligned.clone()),
        grains,
    })
}

/// A metric dimension's expression: the `value` column of its relation, which the
/// rewrite joins to the dimension's table.
fn metric_dimension_expr(dim: &crate::model::Dimension) -> BoundExpr {
    let relation = crate::model::metric_dimension_relation(dim.name.get_ref());
    BoundExpr {
        expr: Expr::CompoundIdentifier(vec![
            Ident::with_quote('"', relation.clone()),
            Ident::with_quote('"', METRIC_DIMENSION_VALUE),
        ]),
        tables: BTreeSet::from([dim.table.get_ref().clone(), relation]),
    }
}

/// The column of a metric dimension's relation that holds the metric's value (its key
/// column is [`METRIC_DIMENSION_KEY`]).
pub const METRIC_DIMENSION_VALUE: &str = "__value";
/// The column of a metric dimension's relation that holds the key of its table's row.
pub const METRIC_DIMENSION_KEY: &str = "__key";

/// A metric dimension's metric is an aggregate of one table (atomic or derived, not a
/// balance) whose rows reach the dimension's table by one join path, and whose filter
/// reads no metric dimension itself.
pub(super) fn check_metric_dimension(
    b: &mut Binder<'_>,
    dim: &crate::model::Dimension,
    metrics: &HashMap<String, BoundMetric>,
) {
    let Some(name) = &dim.metric else {
        return;
    };
    let Some(metric) = metrics.get(name.get_ref()) else {
        return; // reported where the metric failed
    };
    let table = dim.table.get_ref();
    let reason = match metric.aggregate() {
        None => Some(format!(
            "metric \"{}\" is a {} metric: a dimension may be an atomic or derived metric (an aggregate of one table's rows)",
            metric.name,
            metric.kind.as_str()
        )),
        Some(def) if def.semi_additive.is_some() => Some(format!(
            "metric \"{}\" is a balance (semi_additive): its value per row of \"{table}\" has no one day",
            metric.name
        )),
        Some(def)
            if def
                .tables
                .iter()
                .any(|t| t.starts_with(crate::model::METRIC_DIMENSION_PREFIX)) =>
        {
            Some(format!(
                "metric \"{}\" is filtered by a metric dimension itself: a metric dimension's metric filters by plain dimensions only",
                metric.name
            ))
        }
        Some(def) => match b.model.join_path_count(&def.table, table) {
            1 => None,
            0 => Some(format!(
                "metric \"{}\" (table \"{}\") does not reach table \"{table}\" through many-to-one joins: it has no value per row of \"{table}\"",
                metric.name, def.table
            )),
            n => Some(format!(
                "metric \"{}\" (table \"{}\") reaches table \"{table}\" by {n} join paths of the same length",
                metric.name, def.table
            )),
        },
    };
    if let Some(reason) = reason {
        b.issue(
            dim.file,
            name,
            format!("dimension \"{}\": {reason}", dim.name.get_ref()),
        );
    }
}
