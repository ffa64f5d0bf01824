//! Combining the parts of a derived table (one per fact table and transform) on the
//! grain.

use std::fmt::Write as _;

use super::{DerivedSpec, Part};

/// Combine the parts (per-fact aggregates, row counts) on the grain; each part provides
/// the columns listed with it.
///
/// Every part has at most one row per grain value, so two parts are stacked with
/// `UNION ALL` (each filling only its own columns) and grouped by the grain: this matches
/// NULL grain values as equal, as a `FULL JOIN ... IS NOT DISTINCT FROM` would, and runs on
/// every warehouse (PostgreSQL cannot hash such a FULL JOIN; MySQL has no FULL JOIN).
/// More parts are folded in one at a time, so that in every `UNION ALL` each column has a
/// typed value in one of its two branches (PostgreSQL types a column that is `NULL` in
/// both branches as text, which a third branch's numbers cannot match).
///
/// A part that is not primary (an earlier period's values) adds no period of its own:
/// the groups keep only periods some primary part has.
pub(super) fn join_parts(parts: &[Part], spec: &DerivedSpec<'_>) -> String {
    let grain: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("\"__g{i}\""))
        .collect();
    let presence = parts.iter().any(|p| !p.primary);
    let flag = |part: &Part| {
        if part.primary { "1" } else { "0" }
    };
    let Some((first, rest)) = parts.split_first() else {
        return String::new();
    };
    let mut sql = first.sql.clone();
    let mut columns: Vec<String> = first.provides.clone();
    if presence {
        sql = format!(
            "SELECT {}{}{} AS \"__kp_present\" FROM ({sql}) AS f",
            grain.iter().map(|g| format!("f.{g}, ")).collect::<String>(),
            columns
                .iter()
                .map(|c| format!("f.\"{c}\", "))
                .collect::<String>(),
            flag(first)
        );
    }
    for part in rest {
        let all: Vec<&String> = columns.iter().chain(&part.provides).collect();
        let branch = |alias: &str, sql: &str, provides: &[String], flag: Option<&str>| {
            let mut items: Vec<String> = grain.iter().map(|g| format!("{alias}.{g}")).collect();
            for column in &all {
                if provides.contains(column) {
                    items.push(format!("{alias}.\"{column}\""));
                } else {
                    items.push(format!("NULL AS \"{column}\""));
                }
            }
            if let Some(flag) = flag {
                let value = if flag == "carry" {
                    format!("{alias}.\"__kp_present\"")
                } else {
                    format!("{flag} AS \"__kp_present\"")
                };
                items.push(value);
            }
            format!("SELECT {} FROM ({sql}) AS {alias}", items.join(", "))
        };
        let left = branch("a", &sql, &columns, presence.then_some("carry"));
        let right = branch("b", &part.sql, &part.provides, presence.then(|| flag(part)));
        let mut items: Vec<String> = grain.iter().map(|g| format!("u.{g} AS {g}")).collect();
        for column in &all {
            items.push(format!("max(u.\"{column}\") AS \"{column}\""));
        }
        if presence {
            items.push("max(u.\"__kp_present\") AS \"__kp_present\"".to_string());
        }
        let mut combined = format!(
            "SELECT {} FROM ({left} UNION ALL {right}) AS u",
            items.join(", ")
        );
        if !grain.is_empty() {
            let keys: Vec<String> = grain.iter().map(|g| format!("u.{g}")).collect();
            let _ = write!(combined, " GROUP BY {}", keys.join(", "));
        }
        sql = combined;
        columns.extend(part.provides.iter().cloned());
    }
    if presence {
        let mut items: Vec<String> = grain.iter().map(|g| format!("p.{g}")).collect();
        items.extend(columns.iter().map(|c| format!("p.\"{c}\"")));
        sql = format!(
            "SELECT {} FROM ({sql}) AS p WHERE p.\"__kp_present\" = 1",
            items.join(", ")
        );
    }
    sql
}
