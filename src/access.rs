//! Access rules and lifecycle applied to one user: the model as that user may see it.
//!
//! [`restrict`] turns the bound model into the user's own [`Semantics`]: views and metrics
//! the user's roles do not grant are taken out of the views (so every catalog built from
//! it lacks them) and recorded as denied (so naming one is a clear 42501); metrics that
//! depend on a denied metric are denied too; draft metrics are only for modelers and their
//! owner; retired ones are recorded with their replacement; each view gets the user's row
//! filter (the rules' filters with the user's attributes filled in, ORed across roles);
//! masked dimensions get their masking expression in place of their own. The rewrite then
//! applies all of it to every query shape, because every view reference goes through it.
//!
//! A model without `[[access]]` rules is open: everyone sees every metric and view not
//! marked sensitive, and every row; masked dimensions stay masked.
//!
//! Invariant: a pure function of the model and the user; never weakens a rule to make a
//! query work (a view whose rows cannot be limited by the user's row filter is denied).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Value, VisitMut, VisitorMut};

use crate::bind::{self, BoundExpr, Definition, Semantics};
use crate::config::User;
use crate::error::{DenialKind, Error};
use crate::model::{AccessRule, Mask, Status};

pub use crate::bind::Denial;

impl Denial {
    /// The error for naming a denied view or metric (`kind` is "view" or "metric").
    pub fn error(&self, kind: &str, name: &str) -> Error {
        match self {
            Denial::Permission { roles } => Error::Denied {
                kind: DenialKind::Permission,
                message: format!("permission denied for {kind} \"{name}\""),
                hint: format!(
                    "the access rules of your roles ({}) do not grant it; information_schema.columns lists what you may query",
                    if roles.is_empty() {
                        "none".to_string()
                    } else {
                        roles.join(", ")
                    }
                ),
            },
            Denial::RowsNotLimitable { dimensions } => Error::Denied {
                kind: DenialKind::Permission,
                message: format!("permission denied for {kind} \"{name}\""),
                hint: format!(
                    "your rows are limited by {}, which this view's data cannot be filtered by",
                    dimensions.join(", ")
                ),
            },
            Denial::Draft => Error::Denied {
                kind: DenialKind::Unavailable,
                message: format!("{kind} \"{name}\" is a draft"),
                hint: "drafts are visible to their owner and to modelers until they are active"
                    .into(),
            },
            Denial::Retired { replacement } => Error::Denied {
                kind: DenialKind::Unavailable,
                message: format!("{kind} \"{name}\" is retired"),
                hint: match replacement {
                    Some(r) => format!("use \"{r}\" instead"),
                    None => "it no longer answers; ask its owner what replaced it".into(),
                },
            },
        }
    }
}

/// The rules that apply to `user`: those of its roles, or one open rule when the model
/// has none.
fn rules_of<'a>(semantics: &'a Semantics, user: &User) -> Vec<&'a AccessRule> {
    semantics
        .model
        .access
        .iter()
        .filter(|r| user.roles.iter().any(|role| role == r.role.get_ref()))
        .collect()
}

fn names(list: &[toml::Spanned<String>]) -> impl Iterator<Item = &str> {
    list.iter().map(|n| n.get_ref().as_str())
}

/// The model as `user` may see it (see the module docs).
pub fn restrict(semantics: &Semantics, user: &User) -> Semantics {
    let open = semantics.model.access.is_empty();
    let rules = rules_of(semantics, user);
    let grants = |list: fn(&AccessRule) -> &[toml::Spanned<String>],
                  name: &str,
                  sensitive: bool| {
        if open {
            return !sensitive;
        }
        rules.iter().any(|r| {
            names(list(r)).any(|n| n == name) || (!sensitive && names(list(r)).any(|n| n == "*"))
        })
    };
    let permission = || Denial::Permission {
        roles: user.roles.clone(),
    };

    // Metrics: granted, visible in their lifecycle, and every metric they use too.
    let mut denied: BTreeMap<String, Denial> = BTreeMap::new();
    for metric in &semantics.model.metrics {
        let name = metric.name.get_ref();
        let owner = !metric.owner.is_empty()
            && (metric.owner == user.name || user.attributes.values().any(|v| *v == metric.owner));
        let denial = if !grants(|r| r.metrics.as_slice(), name, metric.sensitive) {
            Some(permission())
        } else if metric.status == Status::Draft && !owner && !rules.iter().any(|r| r.drafts) {
            Some(Denial::Draft)
        } else if metric.status == Status::Retired {
            Some(Denial::Retired {
                replacement: metric.replaced_by.as_ref().map(|r| r.get_ref().clone()),
            })
        } else {
            None
        };
        if let Some(d) = denial {
            denied.insert(name.clone(), d);
        }
    }
    // A metric computed from a denied one is denied (a ratio would give the part away).
    loop {
        let newly: Vec<String> = semantics
            .metrics
            .keys()
            .filter(|m| !denied.contains_key(*m))
            .filter(|m| {
                dependencies(semantics, m)
                    .iter()
                    .any(|d| denied.contains_key(d))
            })
            .cloned()
            .collect();
        if newly.is_empty() {
            break;
        }
        for m in newly {
            denied.insert(m, permission());
        }
    }

    let row_filter = row_filter(&rules, user, open);
    let mut restricted = semantics.clone();
    restricted.access.denied_views = BTreeMap::new();
    restricted.views.clear();
    for view in &semantics.views {
        let model_view = semantics.model.view(&view.name);
        let sensitive = model_view.is_some_and(|v| v.sensitive);
        if !grants(|r| r.views.as_slice(), &view.name, sensitive) {
            restricted
                .access
                .denied_views
                .insert(view.name.clone(), permission());
            continue;
        }
        let mut view = view.clone();
        if let Some(filter) = &row_filter {
            let unreachable = unreachable_dimensions(semantics, &view, filter);
            if !unreachable.is_empty() {
                restricted.access.denied_views.insert(
                    view.name.clone(),
                    Denial::RowsNotLimitable {
                        dimensions: unreachable,
                    },
                );
                continue;
            }
            view.row_filter = Some(filter.clone());
        }
        view.columns.retain(|c| match &c.kind {
            bind::ColumnKind::Metric(m) => !denied.contains_key(m),
            // A metric as a dimension shows the metric's values.
            bind::ColumnKind::Dimension(d) => semantics
                .dimensions
                .get(d)
                .and_then(|d| d.metric.as_ref())
                .is_none_or(|m| !denied.contains_key(m)),
            _ => true,
        });
        restricted.views.push(view);
    }
    restricted.access.denied_metrics = denied;
    restricted.access.may_read_audit = open || rules.iter().any(|r| r.audit);

    // Masks, unless a rule of the user's roles unmasks the dimension.
    for dimension in &semantics.model.dimensions {
        let Some(mask) = dimension.mask else {
            continue;
        };
        let name = dimension.name.get_ref();
        let unmasked = rules
            .iter()
            .any(|r| names(&r.unmask).any(|n| n == name || n == "*"));
        if unmasked {
            continue;
        }
        restricted.access.masked_dimensions.insert(name.clone());
        if let Some(bound) = restricted.dimensions.get_mut(name) {
            bound.expr = masked(&bound.expr, mask);
        }
        for carried in restricted.table_dimensions.values_mut() {
            if let Some(expr) = carried.get_mut(name) {
                *expr = masked(expr, mask);
            }
        }
    }
    restricted
}

/// The metrics `name` is computed from (formula references and base metrics).
pub fn dependencies(semantics: &Semantics, name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(metric) = semantics.metrics.get(name) {
        match &metric.definition {
            Definition::Composite { refs, .. } => out.extend(refs.iter().cloned()),
            Definition::PeriodOverPeriod { base, .. } | Definition::Cumulative { base, .. } => {
                out.insert(base.clone());
            }
            Definition::Conversion(c) => {
                out.insert(c.base.clone());
                out.insert(c.conversion.clone());
            }
            Definition::Aggregate(def) => {
                // A metric dimension it reads (a filter on customer_orders): its metric.
                out.extend(def.tables.iter().filter_map(|t| {
                    t.strip_prefix(crate::model::METRIC_DIMENSION_PREFIX)
                        .and_then(|d| semantics.dimensions.get(d))
                        .and_then(|d| d.metric.clone())
                }));
            }
        }
    }
    if let Some(base) = semantics
        .model
        .metrics
        .iter()
        .find(|m| m.name.get_ref() == name)
        .and_then(|m| m.base.as_ref())
    {
        out.insert(base.get_ref().clone());
    }
    out.retain(|d| !d.starts_with(bind::TOTAL_PREFIX));
    out
}

/// The user's row filter: the rules' filters (attributes filled in) ORed; `None` when a
/// rule of the user's roles (or an open model) allows every row.
fn row_filter(rules: &[&AccessRule], user: &User, open: bool) -> Option<Expr> {
    if open || rules.iter().any(|r| r.row_filter.is_none()) {
        return None;
    }
    let mut parts = Vec::new();
    for rule in rules {
        let Some(text) = &rule.row_filter else {
            continue;
        };
        // Validation parsed it when the model was loaded; a failure here denies the rows.
        let Ok(mut expr) = bind::parse_expr(text.get_ref()) else {
            parts.push("FALSE".to_string());
            continue;
        };
        let mut fill = FillAttributes {
            user,
            missing: None,
        };
        let _ = expr.visit(&mut fill);
        match fill.missing {
            Some(attribute) => {
                tracing::warn!(
                    user = %user.name,
                    role = %rule.role.get_ref(),
                    attribute = %attribute,
                    "the role's row filter uses an attribute the user does not have: no rows"
                );
                parts.push("FALSE".to_string());
            }
            None => parts.push(format!("({expr})")),
        }
    }
    if parts.is_empty() {
        parts.push("FALSE".to_string());
    }
    bind::parse_expr(&parts.join(" OR "))
        .ok()
        .or_else(|| bind::parse_expr("FALSE").ok())
}

/// Replaces `user.<attribute>` with the attribute's value as a text literal.
struct FillAttributes<'a> {
    user: &'a User,
    missing: Option<String>,
}

impl VisitorMut for FillAttributes<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(attribute) = crate::model::user_attribute(expr) {
            match self.user.attributes.get(attribute) {
                Some(value) => *expr = Expr::value(Value::SingleQuotedString(value.clone())),
                None => self.missing = Some(attribute.to_string()),
            }
        }
        ControlFlow::Continue(())
    }
}

/// Dimensions of `filter` that some fact table of `view`'s metrics cannot reach by a
/// single many-to-one join path (nor carries itself).
fn unreachable_dimensions(
    semantics: &Semantics,
    view: &bind::BoundView,
    filter: &Expr,
) -> Vec<String> {
    let mut named = BTreeSet::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(filter, |e| {
        if let Expr::Identifier(i) = e {
            named.insert(i.value.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    let dimensions: Vec<&bind::BoundDimension> = named
        .iter()
        .filter_map(|d| semantics.dimensions.get(d))
        .collect();
    let mut facts = BTreeSet::new();
    for column in &view.columns {
        if let bind::ColumnKind::Metric(m) = &column.kind {
            bind::aggregate_tables(m, &semantics.metrics, &mut facts, 0);
        }
    }
    let empty = HashMap::new();
    let mut out = BTreeSet::new();
    for fact in &facts {
        let carried = semantics.table_dimensions.get(fact).unwrap_or(&empty);
        for dim in &dimensions {
            if carried.contains_key(&dim.name) {
                continue;
            }
            if dim.expr.tables.iter().any(|t| {
                semantics
                    .model
                    .join_path_count(fact, semantics.model.reach_table(t))
                    != 1
            }) {
                out.insert(dim.name.clone());
            }
        }
    }
    out.into_iter().collect()
}

/// The masking expression of `mask` over `expr` (NULL stays NULL).
fn masked(expr: &BoundExpr, mask: Mask) -> BoundExpr {
    let value = &expr.expr;
    let shown = match mask {
        Mask::Full => "'***'".to_string(),
        Mask::Partial => format!("concat(substr(CAST(({value}) AS VARCHAR), 1, 1), '***')"),
    };
    let sql = format!("CASE WHEN ({value}) IS NULL THEN NULL ELSE {shown} END");
    BoundExpr {
        expr: bind::parse_expr(&sql).unwrap_or_else(|_| Expr::value(Value::Null)),
        tables: expr.tables.clone(),
    }
}
