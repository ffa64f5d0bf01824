//! The Arrow type of every dimension and view column, found when a model is opened by
//! planning a one-column query over each (planning only; no data is read).

use std::collections::HashSet;

use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;

use super::plan_statement;
use crate::bind::{self, Semantics};
use crate::error::{Error, Result};
use crate::rewrite::RewriteContext;

/// Fill in the Arrow type of every dimension and view column by planning a one-column
/// query for each (planning only; no data is read).
pub(super) async fn infer_types(
    ctx: &SessionContext,
    semantics: &mut Semantics,
    catalog_tables: &HashSet<(String, String)>,
    database: &str,
) -> Result<()> {
    // Dimensions first: time grain columns depend on their dimension's type.
    let mut dimension_types = Vec::new();
    for view in &semantics.views {
        for column in &view.columns {
            if let bind::ColumnKind::Dimension(d) = &column.kind {
                if dimension_types.iter().any(|(n, _)| n == d) {
                    continue;
                }
                let t = column_type(
                    ctx,
                    semantics,
                    catalog_tables,
                    database,
                    &view.name,
                    &column.name,
                )
                .await?;
                dimension_types.push((d.clone(), t));
            }
        }
    }
    for (name, data_type) in dimension_types {
        if let Some(d) = semantics.dimensions.get_mut(&name) {
            d.data_type = data_type;
        }
    }
    bind::add_day_grains(semantics);
    let mut column_types = Vec::new();
    for (vi, view) in semantics.views.iter().enumerate() {
        for (ci, column) in view.columns.iter().enumerate() {
            if let bind::ColumnKind::Dimension(d) = &column.kind
                && let Some(dim) = semantics.dimensions.get(d)
            {
                column_types.push((vi, ci, dim.data_type.clone()));
                continue;
            }
            let t = column_type(
                ctx,
                semantics,
                catalog_tables,
                database,
                &view.name,
                &column.name,
            )
            .await?;
            column_types.push((vi, ci, t));
        }
    }
    for (vi, ci, t) in column_types {
        if let Some(c) = semantics
            .views
            .get_mut(vi)
            .and_then(|v| v.columns.get_mut(ci))
        {
            c.data_type = t;
        }
    }
    Ok(())
}

async fn column_type(
    ctx: &SessionContext,
    semantics: &Semantics,
    catalog_tables: &HashSet<(String, String)>,
    database: &str,
    view: &str,
    column: &str,
) -> Result<DataType> {
    // A metric computed per period is probed at day grain of its time dimension.
    let time = semantics
        .view(view)
        .and_then(|v| v.column(column))
        .and_then(|c| match &c.kind {
            bind::ColumnKind::Metric(m) => semantics.metrics.get(m),
            _ => None,
        })
        .and_then(|m| m.time.clone());
    // A metric defined at some grains only (`grains`) is probed at the first that works.
    let probes: Vec<String> = match &time {
        Some(t) => std::iter::once(format!("\"{t}\""))
            .chain(
                ["week", "month", "quarter", "year"]
                    .iter()
                    .map(|g| format!("\"{t}__{g}\"")),
            )
            .map(|c| format!("SELECT {c}, \"{column}\" FROM \"{view}\""))
            .collect(),
        None => vec![format!("SELECT \"{column}\" FROM \"{view}\"")],
    };
    let no_temp_tables = HashSet::new();
    let cx = RewriteContext {
        semantics,
        catalog_tables,
        database,
        temp_tables: &no_temp_tables,
        time_zone: semantics.time_zone,
    };
    let mut first_error = None;
    let mut planned = None;
    for sql in &probes {
        let statement = crate::sql::parse(sql)?
            .pop()
            .ok_or_else(|| Error::Internal("empty type probe".into()))?;
        match plan_statement(ctx, statement, &cx).await {
            Ok(plan) => {
                planned = Some(plan);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let plan = match (planned, first_error) {
        (Some(plan), _) => plan,
        (None, e) => {
            let e = e.map_or_else(|| "no probe".to_string(), |e| e.to_string());
            return Err(Error::Model(vec![crate::error::ModelIssue {
                file: String::from("<model>"),
                line: 0,
                column: 0,
                reason: format!("view \"{view}\" column \"{column}\" cannot be computed: {e}"),
            }]));
        }
    };
    let schema = plan.schema();
    Ok(schema
        .fields()
        .get(usize::from(time.is_some()))
        .map(|f| f.data_type().clone())
        .unwrap_or(DataType::Null))
}
