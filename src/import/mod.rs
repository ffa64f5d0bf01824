//! Importers: models written for other semantic layers, turned into kpitables model text.
//!
//! An importer reads files and writes TOML that the model stage loads like any model; it
//! imports no stage of the query pipeline. [`model_texts`] reads a model directory of
//! either kind: kpitables' TOML, or a dbt MetricFlow project imported on the fly.

use std::path::Path;

use crate::error::{Error, ModelIssue, Result};
use crate::model::load::SourceTexts;

pub mod metricflow;

/// The model files of `dir`: its `*.toml` files, or, for a dbt MetricFlow project, the
/// files its import generates (with `options`); each item that cannot be mapped is a
/// model error at its YAML line, unless `options` allow a partial import.
pub fn model_texts(dir: &Path, options: &metricflow::Options) -> Result<SourceTexts> {
    if metricflow::is_project(dir) {
        metricflow_texts(dir, options)
    } else {
        crate::model::load::dir_texts(dir)
    }
}

fn metricflow_texts(dir: &Path, options: &metricflow::Options) -> Result<SourceTexts> {
    let import = metricflow::import(dir, dir, options)?;
    if !import.report.unmapped.is_empty() {
        if options.allow_partial {
            for item in &import.report.unmapped {
                tracing::warn!(%item, "MetricFlow item not mapped");
            }
        } else {
            return Err(Error::Model(
                import
                    .report
                    .unmapped
                    .iter()
                    .map(|item| ModelIssue {
                        file: dir.join(&item.file).display().to_string(),
                        line: item.line as usize,
                        column: 0,
                        reason: format!(
                            "{} {} cannot be mapped: {} (serve it with --allow-partial to leave it out)",
                            item.kind, item.name, item.detail
                        ),
                    })
                    .collect(),
            ));
        }
    }
    let files = import
        .files
        .into_iter()
        .map(|(name, text)| {
            (
                format!("{} (from MetricFlow)", dir.join(name).display()),
                text,
            )
        })
        .collect();
    Ok(SourceTexts { files })
}
