//! The part of a derived table that computes the conversions of a conversion metric:
//! each conversion event is credited to the latest base event of the same entity at or
//! before it (within the window), and the conversion metric is aggregated over the
//! credited events in the groups of their base events.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::translate::{is_zoned, local_time_sql};
use super::{DerivedSpec, InnerExpr, Part, from_clause, interval, quote, write_filters};
use crate::bind::{AggregateDef, BoundExpr, Semantics};
use crate::error::{Error, Result};
use crate::model::TimeGrain;

/// One conversion column `__m<j>` of the derived table.
pub(super) struct Conversion<'a> {
    /// The column's index.
    pub j: usize,
    /// The metric of the conversion events.
    pub conversion: &'a AggregateDef,
    /// The metric of the base events.
    pub base: &'a str,
    /// The dimension both events share.
    pub entity: &'a str,
    /// The time dimension of the base events.
    pub time: &'a str,
    /// The time dimension of the conversion events.
    pub conversion_time: &'a str,
    /// How long after a base event a conversion counts.
    pub window: Option<(u32, TimeGrain)>,
    /// Dimensions both events share: (on the base events, on the conversions).
    pub constant: &'a [(String, String)],
}

impl Conversion<'_> {
    /// ```sql
    /// SELECT x.__g.., <aggregate of x.__v> AS __m<j>
    /// FROM (SELECT b.__g.., c.__v,
    ///              ROW_NUMBER() OVER (PARTITION BY c.__id ORDER BY b.__t DESC, b.__k DESC) AS __rn
    ///       FROM (SELECT <grain>, <entity> AS __e, <time> AS __t, <key> AS __k, <property> AS __p..
    ///             FROM <base fact> .. WHERE <filters> AND <base metric's filter>) AS b
    ///       JOIN (SELECT ROW_NUMBER() OVER () AS __id, <entity> AS __e, <time> AS __t,
    ///                    <conversion value> AS __v, <property> AS __p..
    ///             FROM <conversion fact> .. WHERE <conversion metric's filter>) AS c
    ///         ON b.__e = c.__e AND b.__p.. = c.__p.. AND b.__t <= c.__t
    ///            AND b.__t > c.__t - <window>) AS x
    /// WHERE x.__rn = 1 GROUP BY x.__g..
    /// ```
    /// The grain and the query's filters apply to the base events (as MetricFlow does);
    /// ties between base events at the same time go to the greatest primary key.
    pub(super) fn part(&self, spec: &DerivedSpec<'_>, semantics: &Semantics) -> Result<Part> {
        let j = self.j;
        let base = semantics
            .metrics
            .get(self.base)
            .and_then(|m| m.aggregate())
            .ok_or_else(|| Error::Internal(format!("metric {} is not an aggregate", self.base)))?;
        let zoned = |name: &str| semantics.dimension(name).map(is_zoned);

        // b: the base events, with their groups.
        let fact = base.table.as_str();
        let translated;
        let (grain, filters) = if semantics.table_dimensions.contains_key(fact) {
            translated = spec.translate_for(semantics, None, fact)?;
            (&translated.0, &translated.1)
        } else {
            (&spec.grain, &spec.filters)
        };
        let entity = self.on(semantics, fact, self.entity)?;
        let time = self.on(semantics, fact, self.time)?;
        let table = semantics
            .model
            .table(fact)
            .ok_or_else(|| Error::Internal(format!("table {fact} is not in the model")))?;
        let mut needed: BTreeSet<String> = grain
            .iter()
            .chain(filters)
            .flat_map(|e| e.tables.iter().cloned())
            .collect();
        needed.extend(base.tables.iter().cloned());
        needed.extend(entity.tables.iter().cloned());
        needed.extend(time.tables.iter().cloned());
        let properties = self
            .constant
            .iter()
            .map(|(on_base, _)| self.on(semantics, fact, on_base))
            .collect::<Result<Vec<_>>>()?;
        needed.extend(properties.iter().flat_map(|p| p.tables.iter().cloned()));
        let names = [self.base];
        let from = from_clause(fact, &needed, spec, &names, semantics)?;
        let mut items: Vec<String> = grain
            .iter()
            .enumerate()
            .map(|(i, g)| format!("{} AS \"__g{i}\"", g.expr))
            .collect();
        items.push(format!("{} AS \"__e\"", entity.expr));
        items.push(format!(
            "{} AS \"__t\"",
            time_sql(time, zoned(self.time)?, spec)
        ));
        items.push(format!(
            "{}.{} AS \"__k\"",
            quote(fact),
            quote(table.primary_key.get_ref())
        ));
        items.extend(
            properties
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{} AS \"__p{i}\"", p.expr)),
        );
        let mut base_sql = format!("SELECT {} FROM {from}", items.join(", "));
        let mut base_filters: Vec<InnerExpr> = filters.to_vec();
        if let Some(f) = &base.filter {
            base_filters.push(InnerExpr {
                expr: f.clone(),
                tables: base.tables.clone(),
                dimensions: BTreeSet::new(),
            });
        }
        write_filters(&mut base_sql, &base_filters);

        // c: the conversion events, each with a row number of its own.
        let fact = self.conversion.table.as_str();
        let entity = self.on(semantics, fact, self.entity)?;
        let time = self.on(semantics, fact, self.conversion_time)?;
        let mut needed = self.conversion.tables.clone();
        needed.extend(entity.tables.iter().cloned());
        needed.extend(time.tables.iter().cloned());
        let properties = self
            .constant
            .iter()
            .map(|(_, on_conversion)| self.on(semantics, fact, on_conversion))
            .collect::<Result<Vec<_>>>()?;
        needed.extend(properties.iter().flat_map(|p| p.tables.iter().cloned()));
        let from = from_clause(fact, &needed, spec, &names, semantics)?;
        let value = self
            .conversion
            .expr
            .as_ref()
            .map_or_else(|| "1".to_string(), |e| e.to_string());
        let shared: String = properties
            .iter()
            .enumerate()
            .map(|(i, p)| format!(", {} AS \"__p{i}\"", p.expr))
            .collect();
        let mut conversion_sql = format!(
            "SELECT ROW_NUMBER() OVER () AS \"__id\", {} AS \"__e\", {} AS \"__t\", {value} AS \"__v\"{shared} FROM {from}",
            entity.expr,
            time_sql(time, zoned(self.conversion_time)?, spec),
        );
        if let Some(f) = &self.conversion.filter {
            let _ = write!(conversion_sql, " WHERE {f}");
        }

        // Each conversion credited to its latest base event.
        let mut on = vec!["b.\"__e\" = c.\"__e\"".to_string()];
        on.extend((0..self.constant.len()).map(|i| format!("b.\"__p{i}\" = c.\"__p{i}\"")));
        on.push("b.\"__t\" <= c.\"__t\"".to_string());
        if let Some((n, unit)) = self.window {
            on.push(format!(
                "b.\"__t\" > c.\"__t\" - INTERVAL '{}'",
                interval(n, unit)
            ));
        }
        let groups: Vec<String> = (0..grain.len()).map(|i| format!("\"__g{i}\"")).collect();
        let mut credited: Vec<String> = groups.iter().map(|g| format!("b.{g}")).collect();
        credited.push("c.\"__v\"".to_string());
        credited.push(
            "ROW_NUMBER() OVER (PARTITION BY c.\"__id\" ORDER BY b.\"__t\" DESC, b.\"__k\" DESC) AS \"__rn\""
                .to_string(),
        );
        let aggregate = self.conversion.sql_of("x.\"__v\"");
        let mut outer: Vec<String> = groups.iter().map(|g| format!("x.{g} AS {g}")).collect();
        outer.push(format!("{aggregate} AS \"__m{j}\""));
        let mut sql = format!(
            "SELECT {} FROM (SELECT {} FROM ({base_sql}) AS b JOIN ({conversion_sql}) AS c ON {}) AS x WHERE x.\"__rn\" = 1",
            outer.join(", "),
            credited.join(", "),
            on.join(" AND "),
        );
        if !groups.is_empty() {
            let keys: Vec<String> = groups.iter().map(|g| format!("x.{g}")).collect();
            let _ = write!(sql, " GROUP BY {}", keys.join(", "));
        }
        Ok(Part {
            sql,
            provides: vec![format!("__m{j}")],
            // The base metric's part gives the groups; no credited event adds one.
            primary: false,
            total: false,
        })
    }

    /// Dimension `name` on the rows of table `fact`: a column it carries, or the
    /// dimension's expression over the tables its joins reach.
    fn on<'s>(&self, semantics: &'s Semantics, fact: &str, name: &str) -> Result<&'s BoundExpr> {
        if let Some(carried) = semantics
            .table_dimensions
            .get(fact)
            .and_then(|c| c.get(name))
        {
            return Ok(carried);
        }
        let dim = semantics.dimension(name)?;
        if dim.table != fact && semantics.model.join_path(fact, &dim.table).is_none() {
            return Err(Error::unsupported(
                format!(
                    "conversion metric over \"{}\" events needs dimension \"{name}\" on table \"{fact}\", which has no many-to-one join path to \"{}\"",
                    self.base, dim.table
                ),
                Some(format!(
                    "carry \"{name}\" in a column of \"{fact}\" (`dimensions` of the table) or join it to \"{}\"",
                    dim.table
                )),
            ));
        }
        Ok(&dim.expr)
    }
}

fn time_sql(time: &BoundExpr, zoned: bool, spec: &DerivedSpec<'_>) -> String {
    let sql = time.expr.to_string();
    if zoned {
        local_time_sql(&sql, spec.time_zone)
    } else {
        sql
    }
}
