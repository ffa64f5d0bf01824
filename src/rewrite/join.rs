//! Views joined with other relations (a BI tool's relationship between `sales` and
//! `sales_targets` on month and region): each view is aggregated at the join's grain
//! before the join.
//!
//! Every view (or pass-through of one) joined in a block becomes a block of its own that
//! selects the columns the outer block uses and groups by the dimension columns among
//! them; conditions of the outer WHERE on one view's dimensions alone move into it (when
//! every join is inner). The outer block is then literal SQL over one row per group of
//! each view. When the outer block aggregates metrics of a view, that view's grouping
//! columns must be grouped by the outer block or be equi-join keys: then no row of it
//! meets more than one row of another view within a group, and the outer aggregates only
//! combine the groups of the join keys (sums of additive metrics; sums of the others are
//! refused by [`super::additivity`]). Anything else is refused with 0A000, as not well
//! defined. A view whose metrics are not read is its distinct rows of dimension values,
//! and joins of those are literal.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, JoinConstraint, JoinOperator, OrderBy, Select,
    SelectItem, SetExpr, TableAlias, TableFactor, TableWithJoins, Value,
};

use super::grain::{PassThrough, unknown_column, view_source};
use super::{RewriteContext, Scope, normalize};
use crate::error::{Error, Result};

/// One view joined in the block.
struct Side<'a> {
    /// Position of the factor: (FROM item, 0 for its relation or 1 + join index).
    at: (usize, usize),
    qualifier: String,
    source: PassThrough<'a>,
    /// Columns the outer block uses, outside the conditions moved into the side.
    used: BTreeSet<String>,
    /// Conditions moved into the side.
    conditions: Vec<Expr>,
}

/// Turn every view joined in `select` into a block grouped at the join's grain (see the
/// module docs). A block that reads a single relation is left alone.
pub fn aggregate_sides(
    select: &mut Select,
    order_by: Option<&OrderBy>,
    cx: &RewriteContext<'_>,
    scope: &Scope,
) -> Result<()> {
    let relations: usize = select.from.iter().map(|t| 1 + t.joins.len()).sum();
    if relations < 2 {
        return Ok(());
    }
    let mut sides = Vec::new();
    for (i, twj) in select.from.iter().enumerate() {
        let factors = std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation));
        for (k, factor) in factors.enumerate() {
            if let Some((source, qualifier)) = view_source(factor, cx, scope)? {
                sides.push(Side {
                    at: (i, k),
                    qualifier,
                    source,
                    used: BTreeSet::new(),
                    conditions: Vec::new(),
                });
            }
        }
    }
    if sides.is_empty() {
        return Ok(());
    }
    if let Some(twice) = sides
        .iter()
        .enumerate()
        .find(|(i, s)| sides[..*i].iter().any(|o| o.qualifier == s.qualifier))
    {
        return Err(Error::unsupported(
            format!(
                "table name \"{}\" specified more than once",
                twice.1.qualifier
            ),
            Some("give each view in the join an alias of its own".into()),
        ));
    }
    let inner_only = select.from.iter().all(|t| {
        t.joins.iter().all(|j| {
            matches!(
                j.join_operator,
                JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
            )
        })
    });

    // Conditions on one view's dimensions move into that view's block.
    let mut kept = Vec::new();
    if let Some(selection) = select.selection.take() {
        for conjunct in crate::sql::split_and(selection) {
            match inner_only.then(|| only_side(&conjunct, &sides)).flatten() {
                Some(i) => sides[i].conditions.push(conjunct),
                None => kept.push(conjunct),
            }
        }
    }
    select.selection = kept.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });

    // The columns the outer block uses.
    let mut uses = Uses {
        sides: &sides,
        semantics: cx.semantics,
        found: Vec::new(),
        error: None,
    };
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => {
                for (i, side) in sides.iter().enumerate() {
                    uses.found
                        .extend(side.source.columns.iter().map(|(c, _)| (i, c.clone())));
                }
            }
            SelectItem::QualifiedWildcard(name, _) => {
                let q = name.to_string();
                let q = q
                    .rsplit('.')
                    .next()
                    .unwrap_or(&q)
                    .trim_matches('"')
                    .to_lowercase();
                if let Some(i) = sides.iter().position(|s| s.qualifier == q) {
                    uses.found
                        .extend(sides[i].source.columns.iter().map(|(c, _)| (i, c.clone())));
                }
            }
            other => crate::sql::visit_block_exprs(other, |e| uses.note(e)),
        }
    }
    crate::sql::visit_block_exprs(&select.selection, |e| uses.note(e));
    crate::sql::visit_block_exprs(&select.group_by, |e| uses.note(e));
    crate::sql::visit_block_exprs(&select.having, |e| uses.note(e));
    crate::sql::visit_block_exprs(&select.qualify, |e| uses.note(e));
    crate::sql::visit_block_exprs(&select.named_window, |e| uses.note(e));
    if let Some(ob) = order_by {
        crate::sql::visit_block_exprs(ob, |e| uses.note(e));
    }
    let mut keys: Vec<(usize, String)> = Vec::new();
    for twj in &select.from {
        for join in &twj.joins {
            if let Some(constraint) = constraint(&join.join_operator) {
                match constraint {
                    JoinConstraint::On(on) => {
                        crate::sql::visit_block_exprs(on, |e| uses.note(e));
                        for conjunct in crate::sql::split_and(on.clone()) {
                            keys.extend(equi_key(&conjunct, &sides));
                        }
                    }
                    JoinConstraint::Using(names) => {
                        for name in names {
                            let column = name.to_string().trim_matches('"').to_lowercase();
                            for (i, side) in sides.iter().enumerate() {
                                if side.source.column(&column).is_some() {
                                    uses.found.push((i, column.clone()));
                                    keys.push((i, column.clone()));
                                }
                            }
                        }
                    }
                    JoinConstraint::Natural => {
                        return Err(Error::unsupported(
                            "NATURAL JOIN of views is not supported",
                            Some("join on the shared columns with ON or USING".into()),
                        ));
                    }
                    JoinConstraint::None => {}
                }
            }
        }
    }
    if let Some(selection) = &select.selection {
        for conjunct in crate::sql::split_and(selection.clone()) {
            keys.extend(equi_key(&conjunct, &sides));
        }
    }
    if let Some(e) = uses.error.take() {
        return Err(e);
    }
    let found = std::mem::take(&mut uses.found);
    for (i, column) in found {
        sides[i].used.insert(column);
    }
    // An aggregating block: each view's grouping columns are grouped or join keys.
    let aggregating = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
        || select.projection.iter().any(|i| match i {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                crate::sql::contains_aggregate(e)
            }
            _ => false,
        })
        || select.having.is_some();
    if aggregating {
        let grouped = grouped(select, &sides);
        for (i, side) in sides.iter().enumerate() {
            // A view whose metrics the block does not read is its distinct rows of
            // dimension values: any join of those is literal.
            if !side.used.iter().any(|c| side.source.is_metric(c)) {
                continue;
            }
            for column in &side.used {
                if side.source.is_metric(column) {
                    continue;
                }
                let key = (i, column.clone());
                if !grouped.contains(&key) && !keys.contains(&key) {
                    return Err(Error::unsupported(
                        format!(
                            "a join of views is answered with each view aggregated at the join's grain, and \"{}.{column}\" is neither grouped nor a join key",
                            side.qualifier
                        ),
                        Some(format!(
                            "group by \"{}.{column}\" or join on it; or aggregate each view in a subquery of its own and join those",
                            side.qualifier
                        )),
                    ));
                }
            }
        }
    }

    // Each view becomes its block.
    for side in sides {
        let (i, k) = side.at;
        let Some(twj) = select.from.get_mut(i) else {
            continue;
        };
        let slot = if k == 0 {
            &mut twj.relation
        } else {
            match twj.joins.get_mut(k - 1) {
                Some(j) => &mut j.relation,
                None => continue,
            }
        };
        let original = slot.clone();
        *slot = side_block(side, original);
    }
    Ok(())
}

fn constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c) => Some(c),
        _ => None,
    }
}

/// `SELECT q.c AS c, ... FROM <original> WHERE <moved conditions> GROUP BY <dimension
/// columns>` named `q`.
fn side_block(side: Side<'_>, original: TableFactor) -> TableFactor {
    let q = Ident::with_quote('"', &side.qualifier);
    let column = |c: &str| Expr::CompoundIdentifier(vec![q.clone(), Ident::with_quote('"', c)]);
    // In the side's column order, for a stable statement.
    let used: Vec<&String> = side
        .source
        .columns
        .iter()
        .map(|(c, _)| c)
        .filter(|c| side.used.contains(*c))
        .collect();
    let mut projection: Vec<SelectItem> = used
        .iter()
        .map(|c| SelectItem::ExprWithAlias {
            expr: column(c),
            alias: Ident::with_quote('"', c.as_str()),
        })
        .collect();
    if projection.is_empty() {
        projection.push(SelectItem::ExprWithAlias {
            expr: Expr::value(Value::Number("1".into(), false)),
            alias: Ident::with_quote('"', "__kp_one"),
        });
    }
    let grain: Vec<Expr> = used
        .iter()
        .filter(|c| !side.source.is_metric(c))
        .map(|c| column(c))
        .collect();
    let selection = side.conditions.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
    let block = Select {
        select_token:
            datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
        optimizer_hints: vec![],
        distinct: None,
        select_modifiers: None,
        top: None,
        top_before_distinct: false,
        projection,
        exclude: None,
        into: None,
        from: vec![TableWithJoins {
            relation: original,
            joins: vec![],
        }],
        lateral_views: vec![],
        prewhere: None,
        selection,
        connect_by: vec![],
        group_by: GroupByExpr::Expressions(grain, vec![]),
        cluster_by: vec![],
        distribute_by: vec![],
        sort_by: vec![],
        having: None,
        named_window: vec![],
        qualify: None,
        window_before_qualify: false,
        value_table_mode: None,
        flavor: datafusion::sql::sqlparser::ast::SelectFlavor::Standard,
    };
    TableFactor::Derived {
        lateral: false,
        subquery: Box::new(super::query_of(SetExpr::Select(Box::new(block)))),
        alias: Some(TableAlias {
            explicit: true,
            name: q,
            columns: vec![],
            at: None,
        }),
        sample: None,
    }
}

/// The side a column reference is of: `q.c` by its qualifier, `c` when exactly one side
/// has it.
fn side_of(expr: &Expr, sides: &[Side<'_>]) -> Option<(usize, String)> {
    match expr {
        Expr::Identifier(id) => {
            let name = normalize(id);
            let mut having = sides
                .iter()
                .enumerate()
                .filter(|(_, s)| s.source.column(&name).is_some());
            match (having.next(), having.next()) {
                (Some((i, _)), None) => Some((i, name)),
                _ => None,
            }
        }
        Expr::CompoundIdentifier(parts) => {
            let names: Vec<String> = parts.iter().map(normalize).collect();
            let [.., table, column] = names.as_slice() else {
                return None;
            };
            sides
                .iter()
                .position(|s| s.qualifier == *table)
                .map(|i| (i, column.clone()))
        }
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => side_of(inner, sides),
        _ => None,
    }
}

/// The one side `conjunct` reads, when it reads only that side's dimensions (and no
/// other relation, subquery or aggregate).
fn only_side(conjunct: &Expr, sides: &[Side<'_>]) -> Option<usize> {
    if crate::sql::contains_aggregate(conjunct) || crate::sql::subquery::has_subquery(conjunct) {
        return None;
    }
    let mut refs: Vec<Option<(usize, String)>> = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(conjunct, |e| {
        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            refs.push(side_of(e, sides));
        }
        ControlFlow::<()>::Continue(())
    });
    let mut side = None;
    for r in refs {
        let (i, column) = r?;
        if sides[i].source.is_metric(&column) || sides[i].source.column(&column).is_none() {
            return None;
        }
        match side {
            None => side = Some(i),
            Some(s) if s == i => {}
            Some(_) => return None,
        }
    }
    side
}

/// `a.x = b.y` (or `IS NOT DISTINCT FROM`) between two sides: both columns are keys.
fn equi_key(conjunct: &Expr, sides: &[Side<'_>]) -> Vec<(usize, String)> {
    let pair = |l: &Expr, r: &Expr| match (side_of(l, sides), side_of(r, sides)) {
        (Some(a), Some(b)) if a.0 != b.0 => vec![a, b],
        _ => vec![],
    };
    match conjunct {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => pair(left, right),
        Expr::IsNotDistinctFrom(left, right) => pair(left, right),
        Expr::Nested(inner) => equi_key(inner, sides),
        // Tableau: `(a.x = b.x) OR (a.x IS NULL AND b.x IS NULL)`.
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            ..
        } => equi_key(left, sides),
        _ => vec![],
    }
}

/// The `(side, column)` pairs the block groups by (positions and output names resolved;
/// the items of ROLLUP, CUBE and GROUPING SETS included).
fn grouped(select: &Select, sides: &[Side<'_>]) -> Vec<(usize, String)> {
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return Vec::new();
    };
    let item = |e: &Expr| -> Option<Expr> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<usize>().ok().and_then(|p| {
                    match select.projection.get(p.wrapping_sub(1)) {
                        Some(
                            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. },
                        ) => Some(e.clone()),
                        _ => None,
                    }
                }),
                _ => None,
            },
            Expr::Identifier(id) if side_of(e, sides).is_none() => {
                let name = normalize(id);
                select.projection.iter().find_map(|i| match i {
                    SelectItem::ExprWithAlias { expr, alias } if normalize(alias) == name => {
                        Some(expr.clone())
                    }
                    _ => None,
                })
            }
            other => Some(other.clone()),
        }
    };
    let mut all = Vec::new();
    for e in exprs {
        match e {
            Expr::Rollup(parts) | Expr::Cube(parts) | Expr::GroupingSets(parts) => {
                all.extend(parts.iter().flatten().cloned());
            }
            other => all.push(other.clone()),
        }
    }
    all.iter()
        .filter_map(item)
        .filter_map(|e| side_of(&e, sides))
        .collect()
}

/// Collects the side columns a block's expressions use (not inside its subqueries).
struct Uses<'s, 'a> {
    sides: &'s [Side<'a>],
    semantics: &'s crate::bind::Semantics,
    found: Vec<(usize, String)>,
    error: Option<Error>,
}

impl Uses<'_, '_> {
    /// Note the side column `expr` is, if it is one.
    fn note(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(id) => {
                let name = normalize(id);
                for (i, side) in self.sides.iter().enumerate() {
                    if side.source.column(&name).is_some() {
                        self.found.push((i, name.clone()));
                    }
                }
            }
            Expr::CompoundIdentifier(_) => {
                if let Some((i, column)) = side_of(expr, self.sides) {
                    if self.sides[i].source.column(&column).is_some() {
                        self.found.push((i, column));
                    } else if self.error.is_none() {
                        let side = &self.sides[i];
                        self.error = Some(unknown_column(
                            &format!("{}.{column}", side.qualifier),
                            &side.source,
                            self.semantics,
                        ));
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
