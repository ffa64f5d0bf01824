//! Semantic rewrite: SQL over views → SQL over the model's base tables.
//!
//! A view is a relation *at the grain the query asks for*: every query block
//! (`SELECT ... FROM view ...`) is answered by a derived table that aggregates each metric
//! at the block's grain (its GROUP BY, or else its selected dimension expressions), so a
//! metric column always means the metric at that grain and aggregates written around a
//! metric collapse to the metric itself. See [`block`] for the rules, [`derived`] for the
//! SQL generated.
//!
//! This module walks whole statements: CTEs, set operations, derived tables and
//! subqueries are rewritten block by block; relations are resolved (a view, a CTE, a
//! catalog table, or an error with a "did you mean").
//!
//! Invariant: pure AST → AST. No I/O, no engine; the only way to reach a base table is
//! through a view, so clients can never read unmodelled data.

pub mod additivity;
pub mod block;
pub mod derived;
pub mod grain;
pub mod grouping_sets;
pub mod join;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use additivity::{Shape, Source};

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, OrderBy, OrderByKind, Query, Select, SelectItem,
    SetExpr, TableFactor, TableWithJoins, VisitMut, VisitorMut,
};

use crate::bind::{BoundView, Semantics};
use crate::error::{Error, Result, did_you_mean};
use crate::time_zone::TimeZone;

/// What the rewrite needs to know besides the model.
#[derive(Debug)]
pub struct RewriteContext<'a> {
    /// The bound model.
    pub semantics: &'a Semantics,
    /// Catalog relations clients may read, as `(schema, table)`.
    pub catalog_tables: &'a HashSet<(String, String)>,
    /// The database name served (for three-part names).
    pub database: &'a str,
    /// The session's temporary tables (searched first, as `pg_temp` is in PostgreSQL).
    pub temp_tables: &'a HashSet<String>,
    /// The session's `TimeZone`: `timestamptz` dimensions are bucketed in its local time.
    pub time_zone: TimeZone,
}

/// What a rewrite touched, for tracing and audit.
#[derive(Debug, Default, Clone)]
pub struct RewriteReport {
    /// Views read.
    pub views: BTreeSet<String>,
    /// Metrics computed.
    pub metrics: BTreeSet<String>,
    /// Dimensions grouped by.
    pub dimensions: BTreeSet<String>,
    /// The query's own row conditions on views, as written.
    pub filters: Vec<String>,
}

/// Where a result column comes from, when it is a view column selected as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnOrigin {
    /// The view's OID (as in `pg_class`).
    pub table_oid: i32,
    /// The column's number in the view (as `pg_attribute.attnum`), from 1.
    pub column_number: i16,
}

/// For a query that reads one view (`SELECT a, v.b, * FROM v ...`), the origin of each
/// result column that is a view column as is; empty for any other query shape.
pub fn column_origins(
    query: &Query,
    semantics: &crate::bind::Semantics,
) -> Vec<Option<ColumnOrigin>> {
    use datafusion::sql::sqlparser::ast::{Expr, SelectItem, TableFactor};
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Vec::new();
    };
    let [from] = select.from.as_slice() else {
        return Vec::new();
    };
    let TableFactor::Table { name, .. } = &from.relation else {
        return Vec::new();
    };
    if !from.joins.is_empty() || name.0.len() > 2 {
        return Vec::new();
    }
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(normalize))
        .collect();
    if parts.len() == 2 && parts[0] != "public" {
        return Vec::new();
    }
    let Some(view) = parts
        .last()
        .and_then(|n| semantics.views.iter().find(|v| &v.name == n))
    else {
        return Vec::new();
    };
    let table_oid = i32::try_from(crate::catalog::view_oid(&view.name)).unwrap_or(0);
    let origin = |column: &str| {
        view.columns
            .iter()
            .position(|c| c.name == column)
            .and_then(|i| i16::try_from(i + 1).ok())
            .map(|column_number| ColumnOrigin {
                table_oid,
                column_number,
            })
    };
    let mut origins = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                origins.extend(view.columns.iter().map(|c| origin(&c.name)));
            }
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                origins.push(match e {
                    Expr::Identifier(id) => origin(&normalize(id)),
                    Expr::CompoundIdentifier(ids) => {
                        ids.last().and_then(|id| origin(&normalize(id)))
                    }
                    _ => None,
                });
            }
            _ => origins.push(None),
        }
    }
    origins
}

/// Rewrite every query block of `query` that reads a view.
pub fn rewrite_query(
    query: &mut Query,
    cx: &RewriteContext<'_>,
    report: &mut RewriteReport,
) -> Result<()> {
    walk_query(query, cx, &Scope::default(), report).map(|_| ())
}

/// Lower-case unquoted identifiers, as PostgreSQL does.
pub fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The CTEs a query block can read.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    ctes: HashMap<String, Cte>,
}

/// A CTE in scope.
#[derive(Debug, Clone, Default)]
pub struct Cte {
    /// The body as written and the scope it was defined in, when blocks may read
    /// through it (it is a pass-through, see [`grain`]); such a body is rewritten only
    /// if some reference is left after the statement is walked.
    pub source: Option<Arc<(Query, Scope)>>,
    /// What the rewritten body holds.
    pub shape: Option<Shape>,
}

impl Scope {
    /// The CTE named `name`.
    pub fn cte(&self, name: &str) -> Option<&Cte> {
        self.ctes.get(name)
    }

    fn contains(&self, name: &str) -> bool {
        self.ctes.contains_key(name)
    }
}

fn walk_query(
    query: &mut Query,
    cx: &RewriteContext<'_>,
    outer: &Scope,
    report: &mut RewriteReport,
) -> Result<Option<Shape>> {
    let mut scope = outer.clone();
    // CTEs blocks read through: rewritten after the body, if still referenced.
    let mut deferred: Vec<(String, Scope)> = Vec::new();
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            let name = normalize(&cte.alias.name);
            if with.recursive {
                scope.ctes.insert(name.clone(), Cte::default());
                let shape = walk_query(&mut cte.query, cx, &scope, report)?;
                scope.ctes.insert(
                    name,
                    Cte {
                        source: None,
                        shape,
                    },
                );
                continue;
            }
            let defined_in = scope.clone();
            if grain::pass_through(&cte.query, cx, &defined_in)?.is_some() {
                let source = Arc::new(((*cte.query).clone(), defined_in.clone()));
                deferred.push((name.clone(), defined_in));
                scope.ctes.insert(
                    name,
                    Cte {
                        source: Some(source),
                        shape: None,
                    },
                );
            } else {
                let shape = walk_query(&mut cte.query, cx, &defined_in, report)?;
                scope.ctes.insert(
                    name,
                    Cte {
                        source: None,
                        shape,
                    },
                );
            }
        }
    }
    let Query { body, order_by, .. } = query;
    let shape = walk_set_expr(body, order_by.as_mut(), cx, &scope, report)?;
    // Latest first: a later CTE's rewrite may read an earlier one through.
    for (name, defined_in) in deferred.into_iter().rev() {
        let Some(with) = &mut query.with else { break };
        let Some(position) = with
            .cte_tables
            .iter()
            .position(|c| normalize(&c.alias.name) == name)
        else {
            continue;
        };
        let referenced = {
            let others = with
                .cte_tables
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != position)
                .any(|(_, c)| references_relation(c.query.as_ref(), &name));
            others || references_relation(query.body.as_ref(), &name)
        };
        let Some(with) = &mut query.with else { break };
        if referenced {
            walk_query(
                &mut with.cte_tables[position].query,
                cx,
                &defined_in,
                report,
            )?;
        } else {
            with.cte_tables.remove(position);
        }
    }
    if query.with.as_ref().is_some_and(|w| w.cte_tables.is_empty()) {
        query.with = None;
    }
    Ok(shape)
}

/// Does `node` read a relation named `name` (one unqualified part), anywhere?
fn references_relation<N: datafusion::sql::sqlparser::ast::Visit>(node: &N, name: &str) -> bool {
    use datafusion::sql::sqlparser::ast::Visitor;
    struct V<'a>(&'a str, bool);
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            if let [ObjectNamePart::Identifier(ident)] = relation.0.as_slice()
                && normalize(ident) == self.0
            {
                self.1 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(name, false);
    let _ = node.visit(&mut v);
    v.1
}

fn walk_set_expr(
    body: &mut SetExpr,
    order_by: Option<&mut OrderBy>,
    cx: &RewriteContext<'_>,
    scope: &Scope,
    report: &mut RewriteReport,
) -> Result<Option<Shape>> {
    let mut order_by = order_by;
    let expanded = match body {
        SetExpr::Select(select) => {
            // Grain flows down: a block over a pass-through reads the view itself.
            grain::read_through(select, order_by.as_deref_mut(), cx, scope)?;
            grouping_sets::expand(select, order_by.as_deref_mut(), cx, scope)?
        }
        _ => None,
    };
    if let Some(expanded) = expanded {
        *body = SetExpr::Query(Box::new(expanded));
    }
    match body {
        SetExpr::Select(select) => walk_select(select, order_by, cx, scope, report),
        SetExpr::Query(q) => walk_query(q, cx, scope, report),
        SetExpr::SetOperation { left, right, .. } => {
            let left = walk_set_expr(left, None, cx, scope, report)?;
            let right = walk_set_expr(right, None, cx, scope, report)?;
            Ok(Shape::union(left, right))
        }
        SetExpr::Values(_) => Ok(None),
        other => Err(Error::ReadOnly(statement_word(other))),
    }
}

fn statement_word(body: &SetExpr) -> String {
    match body {
        SetExpr::Insert(_) => "INSERT",
        SetExpr::Update(_) => "UPDATE",
        SetExpr::Delete(_) => "DELETE",
        SetExpr::Merge(_) => "MERGE",
        _ => "this statement",
    }
    .to_string()
}

/// A view referenced in FROM.
struct ViewRef<'a> {
    view: &'a BoundView,
    alias: Option<String>,
}

/// What the FROM clause of a block reads, collected while its relations are walked.
#[derive(Default)]
struct From<'a> {
    views: Vec<ViewRef<'a>>,
    relations: usize,
    /// Relations with a known shape (rewritten derived tables and CTEs), by name.
    sources: Vec<Source>,
}

fn walk_select(
    select: &mut Select,
    order_by: Option<&mut OrderBy>,
    cx: &RewriteContext<'_>,
    scope: &Scope,
    report: &mut RewriteReport,
) -> Result<Option<Shape>> {
    // Views joined with other relations: each is aggregated at the join's grain first.
    join::aggregate_sides(select, order_by.as_deref(), cx, scope)?;
    let mut from = From::default();
    for twj in &mut select.from {
        walk_table_with_joins(twj, cx, scope, report, &mut from)?;
    }

    // Subqueries in expressions are query blocks of their own: lift them out, rewrite
    // them, and put them back once this block is done.
    let mut lifted = Vec::new();
    let mut order_by = order_by;
    lift_subqueries(select, order_by.as_deref_mut(), &mut lifted);
    for q in &mut lifted {
        walk_query(q, cx, scope, report)?;
    }

    let From {
        mut views,
        relations,
        sources,
    } = from;
    let shape = match views.len() {
        0 => {
            additivity::check_sums(select, order_by.as_deref(), &sources)?;
            match sources.as_slice() {
                [source] if relations == 1 => additivity::projected(select, source),
                _ => None,
            }
        }
        1 if relations == 1 => {
            let ViewRef { view, alias } = views.remove(0);
            report.views.insert(view.name.clone());
            Some(block::rewrite_block(
                select,
                order_by.as_deref_mut(),
                view,
                alias.as_deref(),
                cx,
                report,
            )?)
        }
        _ => {
            return Err(Error::unsupported(
                "a SELECT that reads a view may not join it with other relations in this form",
                Some(
                    "a view already joins its tables; to combine views, join subqueries that each read one view"
                        .to_string(),
                ),
            ));
        }
    };

    put_back_subqueries(select, order_by, lifted);
    Ok(shape)
}

fn walk_table_with_joins<'a>(
    twj: &mut TableWithJoins,
    cx: &RewriteContext<'a>,
    scope: &Scope,
    report: &mut RewriteReport,
    from: &mut From<'a>,
) -> Result<()> {
    walk_factor(&mut twj.relation, cx, scope, report, from)?;
    for join in &mut twj.joins {
        walk_factor(&mut join.relation, cx, scope, report, from)?;
    }
    Ok(())
}

fn walk_factor<'a>(
    factor: &mut TableFactor,
    cx: &RewriteContext<'a>,
    scope: &Scope,
    report: &mut RewriteReport,
    from: &mut From<'a>,
) -> Result<()> {
    from.relations += 1;
    match factor {
        TableFactor::Table {
            name, alias, args, ..
        } => {
            if args.is_some() {
                return Ok(()); // a table function such as generate_series(...)
            }
            match resolve_relation(name, cx, scope)? {
                Relation::View(view) => from.views.push(ViewRef {
                    view,
                    alias: alias.as_ref().map(|a| normalize(&a.name)),
                }),
                Relation::Catalog(schema, table) => {
                    // Quoted: the names are exact (a temporary table may be "MixedCase").
                    *name = ObjectName::from(vec![
                        Ident::with_quote('"', schema),
                        Ident::with_quote('"', table),
                    ]);
                }
                Relation::Cte(cte) => {
                    if let Some(shape) = scope.cte(&cte).and_then(|c| c.shape.clone()) {
                        from.sources.push(Source {
                            name: alias.as_ref().map_or(cte, |a| normalize(&a.name)),
                            shape,
                        });
                    }
                }
            }
            Ok(())
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => {
            let shape = walk_query(subquery, cx, scope, report)?;
            if let (Some(shape), Some(alias)) = (shape, alias) {
                from.sources.push(Source {
                    name: normalize(&alias.name),
                    shape,
                });
            }
            Ok(())
        }
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => {
            from.relations -= 1;
            walk_table_with_joins(table_with_joins, cx, scope, report, from)
        }
        _ => Ok(()),
    }
}

/// What a relation name in FROM refers to.
pub enum Relation<'a> {
    /// A view of the model.
    View(&'a BoundView),
    /// A catalog relation or temporary table: `(schema, table)`.
    Catalog(String, String),
    /// A CTE in scope, by name.
    Cte(String),
}

/// What `name` refers to in `scope`: a CTE, a temporary table, a view, a catalog
/// relation; or 42P01 with a hint, or the denial of a view the user may not read.
pub fn resolve_relation<'a>(
    name: &ObjectName,
    cx: &RewriteContext<'a>,
    scope: &Scope,
) -> Result<Relation<'a>> {
    let mut parts = Vec::with_capacity(name.0.len());
    for part in &name.0 {
        match part {
            ObjectNamePart::Identifier(ident) => parts.push(normalize(ident)),
            ObjectNamePart::Function(_) => {
                return Err(Error::unsupported(
                    format!("relation name {name} is not supported"),
                    None,
                ));
            }
        }
    }
    let display = parts.join(".");
    if parts.len() == 3 {
        if parts[0] != cx.database {
            return Err(Error::unsupported(
                format!("cross-database references are not implemented: {display}"),
                Some(format!(
                    "this server holds one database, \"{}\"",
                    cx.database
                )),
            ));
        }
        parts.remove(0);
    }
    let (schema, table) = match parts.as_slice() {
        [table] => (None, table.as_str()),
        [schema, table] => (Some(schema.as_str()), table.as_str()),
        _ => {
            return Err(Error::UnknownRelation {
                name: display,
                hint: None,
            });
        }
    };
    if schema.is_none() && scope.contains(table) {
        return Ok(Relation::Cte(table.to_string()));
    }
    if matches!(schema, None | Some(crate::temp::TEMP_SCHEMA)) && cx.temp_tables.contains(table) {
        return Ok(Relation::Catalog(
            crate::temp::TEMP_SCHEMA.to_string(),
            table.to_string(),
        ));
    }
    if matches!(schema, None | Some("public"))
        && let Some(view) = cx.semantics.view(table)
    {
        return Ok(Relation::View(view));
    }
    if matches!(schema, None | Some("public"))
        && let Some(denial) = cx.semantics.access.denied_views.get(table)
    {
        return Err(denial.error("view", table));
    }
    if schema == Some(crate::catalog::kp::SCHEMA)
        && table == "audit"
        && !cx.semantics.access.may_read_audit
    {
        return Err(
            crate::access::Denial::Permission { roles: Vec::new() }.error("table", "kp.audit")
        );
    }
    let catalog_schema = schema.unwrap_or("pg_catalog");
    if cx
        .catalog_tables
        .contains(&(catalog_schema.to_string(), table.to_string()))
    {
        return Ok(Relation::Catalog(
            catalog_schema.to_string(),
            table.to_string(),
        ));
    }
    let candidates: Vec<&str> = cx.semantics.views.iter().map(|v| v.name.as_str()).collect();
    Err(Error::UnknownRelation {
        name: display,
        hint: did_you_mean(table, candidates.iter().copied())
            .or_else(|| Some(format!("the views are: {}", candidates.join(", ")))),
    })
}

// ---- lifting subqueries out of a block ------------------------------------------

const LIFTED_MARKER: &str = "__kp_lifted";

struct Lift<'a> {
    lifted: &'a mut Vec<Query>,
}

impl VisitorMut for Lift<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let slot = subquery_of(expr);
        if let Some(q) = slot {
            let marker = marker_query(self.lifted.len());
            self.lifted.push(*std::mem::replace(q, marker));
        }
        ControlFlow::Continue(())
    }
}

struct PutBack {
    lifted: Vec<Option<Query>>,
}

impl VisitorMut for PutBack {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let slot = subquery_of(expr);
        if let Some(q) = slot
            && let Some(index) = marker_index(q)
            && let Some(original) = self.lifted.get_mut(index).and_then(Option::take)
        {
            **q = original;
        }
        ControlFlow::Continue(())
    }
}

/// The subquery an expression holds, if it is a scalar, IN or EXISTS subquery.
fn subquery_of(expr: &mut Expr) -> Option<&mut Box<Query>> {
    match expr {
        Expr::Subquery(q) => Some(q),
        Expr::InSubquery { subquery, .. } => Some(subquery),
        Expr::Exists { subquery, .. } => Some(subquery),
        _ => None,
    }
}

fn marker_query(index: usize) -> Box<Query> {
    let sql = format!("SELECT {index} AS {LIFTED_MARKER}");
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    match datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
    {
        Ok(q) => q,
        // The marker text is fixed and always parses; an empty query is a safe fallback.
        Err(_) => Box::new(query_of(SetExpr::Values(
            datafusion::sql::sqlparser::ast::Values {
                explicit_row: false,
                value_keyword: false,
                rows: vec![],
            },
        ))),
    }
}

/// A query that is just `body` (no WITH, ORDER BY or LIMIT).
pub(crate) fn query_of(body: SetExpr) -> Query {
    Query {
        with: None,
        body: Box::new(body),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: vec![],
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: vec![],
    }
}

fn marker_index(query: &Query) -> Option<usize> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    match select.projection.as_slice() {
        [
            SelectItem::ExprWithAlias {
                expr: Expr::Value(v),
                alias,
            },
        ] if alias.value == LIFTED_MARKER => v.value.to_string().parse().ok(),
        _ => None,
    }
}

fn lift_subqueries(select: &mut Select, order_by: Option<&mut OrderBy>, lifted: &mut Vec<Query>) {
    let mut v = Lift { lifted };
    visit_block_exprs(select, order_by, &mut v);
}

fn put_back_subqueries(select: &mut Select, order_by: Option<&mut OrderBy>, lifted: Vec<Query>) {
    if lifted.is_empty() {
        return;
    }
    let mut v = PutBack {
        lifted: lifted.into_iter().map(Some).collect(),
    };
    // The whole SELECT, FROM included: the rewrite may have moved a lifted subquery into
    // the derived table (a dimension filter such as `region IN (SELECT ...)`).
    let _ = VisitMut::visit(select, &mut v);
    if let Some(order_by) = order_by {
        let _ = VisitMut::visit(order_by, &mut v);
    }
}

/// Visit the expressions a block owns (not those of its FROM clause).
fn visit_block_exprs<V: VisitorMut<Break = ()>>(
    select: &mut Select,
    order_by: Option<&mut OrderBy>,
    v: &mut V,
) {
    let _ = select.projection.visit(v);
    let _ = select.selection.visit(v);
    let _ = select.group_by.visit(v);
    let _ = select.having.visit(v);
    let _ = select.named_window.visit(v);
    let _ = select.qualify.visit(v);
    if let Some(order_by) = order_by
        && let OrderByKind::Expressions(exprs) = &mut order_by.kind
    {
        let _ = exprs.visit(v);
    }
}
