//! The join-graph check of the views: every metric a view offers must reach every
//! dimension it offers through exactly one shortest chain of many-to-one joins.

use std::collections::{BTreeSet, HashMap};

use super::{Binder, BoundDimension, BoundExpr, BoundMetric, Definition};

/// Every metric a view offers reaches every dimension it offers through exactly one
/// shortest chain of many-to-one joins; a missing or ambiguous path is reported at the
/// view's metric entry, naming both.
pub(super) fn check_join_graph(
    b: &mut Binder<'_>,
    view: &crate::model::View,
    dimensions: &HashMap<String, BoundDimension>,
    metrics: &HashMap<String, BoundMetric>,
    table_dimensions: &HashMap<String, HashMap<String, BoundExpr>>,
) {
    for m in &view.metrics {
        let mut facts = BTreeSet::new();
        aggregate_tables(m.get_ref(), metrics, &mut facts, 0);
        for d in &view.dimensions {
            let Some(dim) = dimensions.get(d.get_ref()) else {
                continue;
            };
            for fact in &facts {
                let carried = table_dimensions
                    .get(fact)
                    .is_some_and(|d| d.contains_key(&dim.name));
                if carried {
                    continue;
                }
                for target in &dim.expr.tables {
                    let target = b.model.reach_table(target);
                    let reason = match b.model.join_path_count(fact, target) {
                        1 => continue,
                        0 => format!(
                            "view \"{}\": metric \"{}\" (table \"{fact}\") cannot be broken down by dimension \"{}\" (table \"{target}\"): there is no many-to-one join path from \"{fact}\" to \"{target}\"",
                            view.name.get_ref(),
                            m.get_ref(),
                            dim.name
                        ),
                        n => format!(
                            "view \"{}\": metric \"{}\" (table \"{fact}\") reaches dimension \"{}\" (table \"{target}\") by {n} different join paths of the same length; the answer would depend on the path: remove a join or offer them in separate views",
                            view.name.get_ref(),
                            m.get_ref(),
                            dim.name
                        ),
                    };
                    b.issue(view.file, m, reason);
                }
            }
        }
    }
}

/// The fact tables of the aggregates metric `name` is computed from: the tables whose
/// rows are grouped by a view's dimensions and filtered by its filters.
pub(crate) fn aggregate_tables(
    name: &str,
    metrics: &HashMap<String, BoundMetric>,
    out: &mut BTreeSet<String>,
    depth: usize,
) {
    let Some(metric) = metrics.get(name) else {
        return;
    };
    if depth > metrics.len() {
        return; // cycles are reported by the binder
    }
    match &metric.definition {
        Definition::Aggregate(a) => {
            out.insert(a.table.clone());
        }
        Definition::Composite { refs, .. } => {
            for r in refs {
                aggregate_tables(r, metrics, out, depth + 1);
            }
        }
        Definition::PeriodOverPeriod { base, .. } | Definition::Cumulative { base, .. } => {
            aggregate_tables(base, metrics, out, depth + 1);
        }
        // Conversions are grouped and filtered on their base events.
        Definition::Conversion(c) => {
            aggregate_tables(&c.base, metrics, out, depth + 1);
        }
    }
}
