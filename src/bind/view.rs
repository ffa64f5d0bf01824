//! A view's columns as clients see them: each dimension (and a time dimension's grain
//! columns), each metric (with its lifecycle status in the comment), each segment.

use std::collections::HashMap;

use datafusion::arrow::datatypes::DataType;

use super::{Binder, BoundDimension, BoundMetric, BoundSegment, BoundView, ColumnKind, ViewColumn};
use crate::model::{DimensionKind, Model, Status, TimeGrain};

/// The bound view of `view`: its columns in order; a metric computed per period of a
/// time dimension the view does not offer is reported and left out.
pub(super) fn lay_out(
    b: &mut Binder<'_>,
    view: &crate::model::View,
    dimensions: &HashMap<String, BoundDimension>,
    metrics: &HashMap<String, BoundMetric>,
    segments: &HashMap<String, BoundSegment>,
) -> BoundView {
    let mut columns = Vec::new();
    for d in &view.dimensions {
        let Some(dim) = dimensions.get(d.get_ref()) else {
            continue;
        };
        let comment = comment(&dim.label, &dim.description);
        columns.push(ViewColumn {
            name: dim.name.clone(),
            kind: ColumnKind::Dimension(dim.name.clone()),
            data_type: DataType::Null,
            comment: comment.clone(),
        });
        if dim.kind == DimensionKind::Time {
            let fiscal = [TimeGrain::FiscalQuarter, TimeGrain::FiscalYear];
            let fiscal = if dim.fiscal_year_start_month != 1 {
                &fiscal[..]
            } else {
                &[]
            };
            for &grain in TimeGrain::ALL[1..].iter().chain(fiscal) {
                columns.push(ViewColumn {
                    name: format!("{}__{}", dim.name, grain.name()),
                    kind: ColumnKind::TimeGrain(dim.name.clone(), grain),
                    data_type: DataType::Null,
                    comment: format!("{comment} (truncated to {})", grain.name()),
                });
            }
        }
    }
    for m in &view.metrics {
        let Some(metric) = metrics.get(m.get_ref()) else {
            continue;
        };
        if let Some(time) = &metric.time
            && !view.dimensions.iter().any(|d| d.get_ref() == time)
        {
            b.issue(
                view.file,
                m,
                format!(
                    "view \"{}\" offers metric \"{}\", which is computed per period of \"{time}\": add \"{time}\" to the view's dimensions",
                    view.name.get_ref(),
                    metric.name
                ),
            );
            continue;
        }
        columns.push(ViewColumn {
            name: metric.name.clone(),
            kind: ColumnKind::Metric(metric.name.clone()),
            data_type: DataType::Null,
            comment: status_note(&metric.name, b.model)
                + &comment(&metric.label, &metric.description),
        });
    }
    for g in &view.segments {
        let Some(segment) = segments.get(g.get_ref()) else {
            continue;
        };
        let described = comment(&segment.label, &segment.description);
        columns.push(ViewColumn {
            name: segment.name.clone(),
            kind: ColumnKind::Segment(segment.name.clone()),
            data_type: DataType::Boolean,
            comment: format!("segment {}: {described}", segment.filter),
        });
    }
    BoundView {
        name: view.name.get_ref().clone(),
        comment: comment(&view.label, &view.description),
        columns,
        apply_segments: view
            .apply_segments
            .iter()
            .map(|g| g.get_ref().clone())
            .collect(),
        row_filter: None,
    }
}

/// `[deprecated: use revenue] ` (or draft, retired) before a metric's comment, so the
/// catalog shows its lifecycle status; empty for an active metric.
fn status_note(name: &str, model: &Model) -> String {
    let Some(metric) = model.metrics.iter().find(|m| m.name.get_ref() == name) else {
        return String::new();
    };
    if metric.status == Status::Active {
        return String::new();
    }
    match &metric.replaced_by {
        Some(r) => format!("[{}: use {}] ", metric.status.as_str(), r.get_ref()),
        None => format!("[{}] ", metric.status.as_str()),
    }
}

fn comment(label: &str, description: &str) -> String {
    match (label.is_empty(), description.is_empty()) {
        (true, _) => description.to_string(),
        (false, true) => label.to_string(),
        (false, false) => format!("{label}: {description}"),
    }
}
