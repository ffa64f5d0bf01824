//! The shape of every PostgreSQL 15 catalog relation: each relation of `pg_catalog`
//! and `information_schema`, with its columns in PostgreSQL's order and types.
//!
//! `pg_relations.tsv` is generated from a real PostgreSQL 15 server by
//! `pg_relations.sql`. [`conform`] gives each relation kpitables fills (from the model)
//! exactly PostgreSQL's columns, and every other relation exists too, empty, so that a
//! client's catalog query never fails for a relation or column PostgreSQL has.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::common::ScalarValue;

use super::CatalogTable;
use crate::error::{Error, Result};

const RELATIONS: &str = include_str!("pg_relations.tsv");

/// One relation of PostgreSQL's catalogs.
#[derive(Debug)]
pub struct RelationShape {
    /// `pg_catalog` or `information_schema`.
    pub schema: &'static str,
    /// Relation name.
    pub name: &'static str,
    /// Column names and their Arrow types.
    pub columns: Vec<(&'static str, DataType)>,
}

/// Every catalog relation of PostgreSQL 15, in name order.
pub fn shapes() -> Result<Vec<RelationShape>> {
    let mut out = Vec::new();
    for (number, line) in RELATIONS.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let bad = || Error::Internal(format!("pg_relations.tsv line {}", number + 1));
        let (qualified, columns) = line.split_once('\t').ok_or_else(bad)?;
        let (schema, name) = qualified.split_once('.').ok_or_else(bad)?;
        let columns = columns
            .split(' ')
            .map(|c| {
                let (column, type_name) = c.split_once(':').ok_or_else(bad)?;
                Ok((column, arrow_type(type_name)))
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(RelationShape {
            schema,
            name,
            columns,
        });
    }
    Ok(out)
}

fn list_of(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(element, true)))
}

/// The Arrow type kpitables uses for a PostgreSQL catalog type (by `typname`).
/// OIDs are 64-bit integers; names, `"char"`, `regproc`, `regtype`, ACLs and node
/// trees are text; vectors and arrays are lists.
fn arrow_type(type_name: &str) -> DataType {
    match type_name {
        "bool" => DataType::Boolean,
        "int2" => DataType::Int16,
        "int4" | "cardinal_number" => DataType::Int32,
        "int8" | "oid" | "xid" => DataType::Int64,
        "float4" => DataType::Float32,
        "float8" | "numeric" => DataType::Float64,
        "bytea" => DataType::Binary,
        "timestamptz" | "time_stamp" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
        "interval" => DataType::Interval(IntervalUnit::MonthDayNano),
        "int2vector" => list_of(DataType::Int16),
        "oidvector" => list_of(DataType::Int64),
        array if array.starts_with('_') => list_of(arrow_type(&array[1..])),
        _ => DataType::Utf8,
    }
}

/// Give each filled table PostgreSQL's columns (values cast by column name, columns
/// kpitables does not fill are NULL) and add every other PostgreSQL relation, empty.
pub fn conform(filled: Vec<CatalogTable>) -> Result<Vec<CatalogTable>> {
    let mut filled: HashMap<(&str, &str), CatalogTable> = filled
        .into_iter()
        .map(|t| ((t.schema, t.name), t))
        .collect();
    let mut out = Vec::new();
    for shape in shapes()? {
        match filled.remove(&(shape.schema, shape.name)) {
            Some(ours) => out.push(conform_to(shape, &ours)?),
            None => out.push(CatalogTable::new(shape.schema, shape.name, shape.columns)),
        }
    }
    if let Some(((schema, name), _)) = filled.into_iter().next() {
        return Err(Error::Internal(format!(
            "catalog {schema}.{name} is not a PostgreSQL 15 relation"
        )));
    }
    Ok(out)
}

/// The shape of PostgreSQL's relation `schema.name`.
pub fn shape(schema: &str, name: &str) -> Result<RelationShape> {
    shapes()?
        .into_iter()
        .find(|s| s.schema == schema && s.name == name)
        .ok_or_else(|| Error::Internal(format!("{schema}.{name} is not a PostgreSQL relation")))
}

/// `ours` with exactly the columns of `shape` (values cast by column name; the columns
/// it does not fill are NULL).
pub fn conform_to(shape: RelationShape, ours: &CatalogTable) -> Result<CatalogTable> {
    let positions = shape
        .columns
        .iter()
        .map(|(name, _)| ours.columns.iter().position(|(n, _)| n == name))
        .collect::<Vec<_>>();
    if let Some((extra, _)) = ours
        .columns
        .iter()
        .find(|(n, _)| !shape.columns.iter().any(|(s, _)| s == n))
    {
        return Err(Error::Internal(format!(
            "catalog {}.{} has column {extra}, which PostgreSQL does not",
            shape.schema, shape.name
        )));
    }
    let mut rows = Vec::with_capacity(ours.rows.len());
    for row in &ours.rows {
        let mut values = Vec::with_capacity(shape.columns.len());
        for ((column, data_type), position) in shape.columns.iter().zip(&positions) {
            let value = match position.and_then(|p| row.get(p)) {
                None | Some(ScalarValue::Null) => ScalarValue::try_from(data_type)?,
                Some(v) if v.data_type() == *data_type => v.clone(),
                Some(v) => v.cast_to(data_type).map_err(|e| {
                    Error::Internal(format!(
                        "catalog {}.{}.{column}: {e}",
                        shape.schema, shape.name
                    ))
                })?,
            };
            values.push(value);
        }
        rows.push(values);
    }
    Ok(CatalogTable {
        schema: shape.schema,
        name: shape.name,
        columns: shape.columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regproc_columns_are_those_of_postgres() {
        let mut found: Vec<&str> = RELATIONS
            .split([' ', '\t', '\n'])
            .filter_map(|c| c.strip_suffix(":regproc"))
            .collect();
        found.sort_unstable();
        found.dedup();
        assert_eq!(found, crate::sql::compat::REGPROC_COLUMNS);
    }

    #[test]
    fn every_postgres_catalog_relation_is_described() {
        let shapes = shapes().unwrap();
        assert_eq!(shapes.len(), 208);
        let index = shapes
            .iter()
            .find(|s| s.schema == "pg_catalog" && s.name == "pg_index")
            .unwrap();
        let indoption = index.columns.iter().find(|(n, _)| *n == "indoption");
        assert_eq!(indoption.map(|(_, t)| t), Some(&list_of(DataType::Int16)));
    }
}
