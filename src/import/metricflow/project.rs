//! Read a dbt project (or a bare directory of MetricFlow YAML): every YAML file under its
//! model paths, and the SQL of its models (to follow `select * from {{ ref('seed') }}`
//! to the table that holds the rows).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::yaml::{Document, Project as ProjectFile};
use crate::error::{Error, ModelIssue, Result};

/// The files of a project.
#[derive(Debug)]
pub struct Project {
    /// The project directory.
    pub root: PathBuf,
    /// `(path for messages, parsed YAML)` of every YAML file that parsed.
    pub documents: Vec<(String, Document)>,
    /// YAML files that did not parse: `(path, line, reason)`.
    pub broken: Vec<(String, u64, String)>,
    /// dbt model name → SQL text.
    pub sql: BTreeMap<String, String>,
    /// The seeds directory (the default source of rows).
    pub seeds: PathBuf,
}

/// Whether `dir` is a MetricFlow project: a `dbt_project.yml`, or no `*.toml` model file
/// and a YAML file that declares `semantic_models:`.
pub fn is_project(dir: &Path) -> bool {
    if dir.join("dbt_project.yml").is_file() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    if paths
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        return false;
    }
    let mut yaml = Vec::new();
    collect(dir, &mut yaml, &mut Vec::new(), 0);
    yaml.iter().any(|p| {
        std::fs::read_to_string(p)
            .is_ok_and(|t| t.lines().any(|l| l.starts_with("semantic_models:")))
    })
}

/// Read the project at `dir`.
pub fn read(dir: &Path) -> Result<Project> {
    let project_file = dir.join("dbt_project.yml");
    let settings: ProjectFile = if project_file.is_file() {
        let text = std::fs::read_to_string(&project_file)
            .map_err(|e| Error::io(format!("cannot read {}", project_file.display()), e))?;
        serde_saphyr::from_str(&text).map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
            Error::Model(vec![ModelIssue {
                file: project_file.display().to_string(),
                line,
                column,
                reason: first_line(&e.to_string()),
            }])
        })?
    } else {
        ProjectFile::default()
    };
    let model_dirs: Vec<PathBuf> = match &settings.model_paths {
        Some(paths) => paths.iter().map(|p| dir.join(p)).collect(),
        None if project_file.is_file() => vec![dir.join("models")],
        None => vec![dir.to_path_buf()],
    };
    let seeds = dir.join(
        settings
            .seed_paths
            .as_ref()
            .and_then(|p| p.first())
            .map_or("seeds", String::as_str),
    );
    let (mut yaml, mut sql_files) = (Vec::new(), Vec::new());
    for d in &model_dirs {
        collect(d, &mut yaml, &mut sql_files, 0);
    }
    yaml.sort();
    sql_files.sort();
    if yaml.is_empty() {
        return Err(Error::Model(vec![ModelIssue {
            file: dir.display().to_string(),
            line: 0,
            column: 0,
            reason: "no MetricFlow YAML files (semantic_models, metrics) in this directory".into(),
        }]));
    }
    let mut documents = Vec::new();
    let mut broken = Vec::new();
    for path in yaml {
        let shown = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if text.trim().is_empty() {
            continue;
        }
        match serde_saphyr::from_str::<Document>(&text) {
            Ok(doc) => documents.push((shown, doc)),
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line());
                broken.push((shown, line, first_line(&e.to_string())));
            }
        }
    }
    create_metrics(&mut documents);
    let mut sql = BTreeMap::new();
    for path in sql_files {
        if let (Some(stem), Ok(text)) = (
            path.file_stem().and_then(|s| s.to_str()),
            std::fs::read_to_string(&path),
        ) {
            sql.insert(stem.to_string(), text);
        }
    }
    Ok(Project {
        root: dir.to_path_buf(),
        documents,
        broken,
        sql,
        seeds,
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_string()
}

/// YAML and SQL files under `dir` (not following into `target/`, `dbt_packages/`,
/// `logs/`, hidden directories).
fn collect(dir: &Path, yaml: &mut Vec<PathBuf>, sql: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let skip = name.starts_with('.')
                || ["target", "dbt_packages", "logs", "seeds", "node_modules"]
                    .contains(&name.as_str());
            if !skip {
                collect(&path, yaml, sql, depth + 1);
            }
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            let project_level = [
                "dbt_project.yml",
                "profiles.yml",
                "packages.yml",
                "selectors.yml",
            ];
            if !project_level.contains(&name.as_str()) {
                yaml.push(path);
            }
        } else if name.ends_with(".sql") {
            sql.push(path);
        }
    }
}

/// The table a dbt model's rows come from: the model itself, or, for a model that only
/// selects everything from another (`select * from {{ ref('x') }}`), that one, followed
/// as far as it goes.
pub fn physical_name(project: &Project, model: &str) -> String {
    let mut name = model.to_string();
    for _ in 0..8 {
        match project.sql.get(&name).and_then(|sql| pass_through(sql)) {
            Some(next) if next != name => name = next,
            _ => break,
        }
    }
    name
}

/// `select * from {{ ref('x') }}` (any case and spacing, comments and a trailing `;`
/// allowed) → `x`.
fn pass_through(sql: &str) -> Option<String> {
    let text: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<String> = text
        .replace(['{', '}', ';'], " ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    match words.as_slice() {
        [select, star, from, reference] => {
            let ok = select.eq_ignore_ascii_case("select")
                && star == "*"
                && from.eq_ignore_ascii_case("from");
            ok.then(|| ref_name(reference)).flatten()
        }
        _ => None,
    }
}

/// `ref('x')`, `ref("x")`, `ref('package', 'x')` → `x`.
pub fn ref_name(text: &str) -> Option<String> {
    let inner = text
        .trim()
        .strip_prefix("ref(")?
        .strip_suffix(')')?
        .rsplit(',')
        .next()?
        .trim();
    let name = inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))?;
    Some(name.to_string())
}

/// A measure with `create_metric: true` is also a simple metric of the same name (unless
/// a metric has that name): added to its file's metrics, as dbt does.
fn create_metrics(documents: &mut [(String, super::yaml::Document)]) {
    use super::yaml::{MeasureInput, Metric, TypeParams};
    let named: std::collections::HashSet<String> = documents
        .iter()
        .flat_map(|(_, d)| d.metrics.iter().map(|m| m.name.value.clone()))
        .collect();
    for (_, doc) in documents.iter_mut() {
        let created: Vec<Metric> = doc
            .semantic_models
            .iter()
            .flat_map(|sm| &sm.measures)
            .filter(|m| m.create_metric && !named.contains(&m.name.value))
            .map(|m| Metric {
                name: m.name.clone(),
                kind: "simple".to_string(),
                type_params: TypeParams {
                    measure: Some(MeasureInput::Name(m.name.value.clone())),
                    ..TypeParams::default()
                },
                filter: None,
                label: m.label.clone(),
                description: m.description.clone(),
                config: None,
                meta: None,
            })
            .collect();
        doc.metrics.extend(created);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_pass_through_models() {
        assert_eq!(ref_name("ref('orders')").as_deref(), Some("orders"));
        assert_eq!(
            ref_name("ref(\"pkg\", \"orders\")").as_deref(),
            Some("orders")
        );
        assert_eq!(ref_name("source('a', 'b')"), None);
        assert_eq!(
            pass_through("select\n    *\nfrom {{ref('countries_seed')}}\n").as_deref(),
            Some("countries_seed")
        );
        assert_eq!(
            pass_through("SELECT * FROM {{ ref('x') }}; -- all").as_deref(),
            Some("x")
        );
        assert_eq!(pass_through("select id from {{ ref('x') }}"), None);
    }
}
