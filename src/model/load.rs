//! Read a model directory: every `*.toml` file, merged into one [`Model`], then validated.
//!
//! Invariant: returns either a fully valid model or every problem found, each with file,
//! line, column and reason. A broken file never yields a partial model.

use std::path::{Path, PathBuf};

use super::{Model, ModelFile, validate};
use crate::error::{Error, ModelIssue, Result};

/// The text of each model file, kept to turn byte offsets into line and column.
#[derive(Debug, Clone, Default)]
pub struct SourceTexts {
    /// `(path, text)` per file, in [`Model::files`] order.
    pub files: Vec<(String, String)>,
}

impl SourceTexts {
    /// An issue at byte offset `offset` of file number `file`.
    pub fn issue(
        &self,
        file: usize,
        offset: Option<usize>,
        reason: impl Into<String>,
    ) -> ModelIssue {
        let (path, text) = match self.files.get(file) {
            Some((p, t)) => (p.clone(), t.as_str()),
            None => (String::from("<model>"), ""),
        };
        let (line, column) = match offset {
            Some(offset) => line_column(text, offset),
            None => (0, 0),
        };
        ModelIssue {
            file: path,
            line,
            column,
            reason: reason.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Load and validate every `*.toml` file of `dir` (sorted by name).
pub fn load_dir(dir: &Path) -> Result<Model> {
    load_dir_texts(dir, dir_texts(dir)?)
}

/// Load and validate the model files `texts` read from `dir`; none is an error.
pub fn load_dir_texts(dir: &Path, texts: SourceTexts) -> Result<Model> {
    if texts.files.is_empty() {
        return Err(Error::Model(vec![ModelIssue {
            file: dir.display().to_string(),
            line: 0,
            column: 0,
            reason: "no *.toml model files in this directory".into(),
        }]));
    }
    load_texts(texts)
}

/// Run `git` in `dir` and return its trimmed standard output, or `None` when git is
/// missing or the command fails (not a checkout, unknown reference).
pub fn git(dir: &Path, args: &[&str]) -> Option<String> {
    git_output(dir, args).map(|out| out.trim_end().to_string())
}

/// The git commit of the checkout holding `dir`, suffixed `-dirty` (as `git describe
/// --dirty` does) when the model files under `dir` differ from it; None outside a checkout.
pub fn git_commit(dir: &Path) -> Option<String> {
    let head = git(dir, &["rev-parse", "HEAD"])?;
    let changed = git(dir, &["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty());
    Some(if changed {
        format!("{head}-dirty")
    } else {
        head
    })
}

fn git_output(dir: &Path, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The model files of `dir` as they were at git commit or reference `reference` (`dir`
/// must be inside a git checkout).
pub fn git_texts(dir: &Path, reference: &str) -> Result<SourceTexts> {
    let not_found = |what: String| {
        Error::Model(vec![ModelIssue {
            file: dir.display().to_string(),
            line: 0,
            column: 0,
            reason: what,
        }])
    };
    let names = git(dir, &["ls-tree", "--name-only", reference, "."]).ok_or_else(|| {
        not_found(format!(
            "\"{reference}\" is neither a directory nor a git reference of this checkout"
        ))
    })?;
    let mut files = Vec::new();
    for name in names.lines().filter(|n| n.ends_with(".toml")) {
        let text = git_output(dir, &["show", &format!("{reference}:./{name}")])
            .ok_or_else(|| not_found(format!("cannot read {name} at {reference}")))?;
        files.push((format!("{reference}:{name}"), text));
    }
    if files.is_empty() {
        return Err(not_found(format!("no *.toml model files at {reference}")));
    }
    Ok(SourceTexts { files })
}

/// The text of every `*.toml` file of `dir` (sorted by name). (A dbt MetricFlow project
/// is read by `crate::import::model_texts`, which imports it first.)
pub fn dir_texts(dir: &Path) -> Result<SourceTexts> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read model directory {}", dir.display()), e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in &paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        files.push((path.display().to_string(), text));
    }
    Ok(SourceTexts { files })
}

/// Load and validate a model from in-memory files (`(path, text)` pairs).
pub fn load_texts(texts: SourceTexts) -> Result<Model> {
    let mut model = Model::default();
    let mut issues = Vec::new();
    for (index, (_path, text)) in texts.files.iter().enumerate() {
        match toml::from_str::<ModelFile>(text) {
            Ok(file) => merge(&mut model, file, index),
            Err(e) => {
                let reason = e.message().trim().to_string();
                issues.push(texts.issue(index, e.span().map(|s| s.start), reason));
            }
        }
    }
    issues.extend(validate::validate(&model, &texts));
    model.files = texts;
    if issues.is_empty() {
        Ok(model)
    } else {
        Err(Error::Model(issues))
    }
}

fn merge(model: &mut Model, file: ModelFile, index: usize) {
    model.sources.extend(file.sources.into_iter().map(|mut s| {
        s.file = index;
        s
    }));
    model.tables.extend(file.tables.into_iter().map(|mut t| {
        t.file_index = index;
        t
    }));
    model
        .dimensions
        .extend(file.dimensions.into_iter().map(|mut d| {
            d.file = index;
            d
        }));
    model.metrics.extend(file.metrics.into_iter().map(|mut m| {
        m.file = index;
        m
    }));
    model
        .segments
        .extend(file.segments.into_iter().map(|mut g| {
            g.file = index;
            g
        }));
    model.views.extend(file.views.into_iter().map(|mut v| {
        v.file = index;
        v
    }));
    model.access.extend(file.access.into_iter().map(|mut a| {
        a.file = index;
        a
    }));
    model.alerts.extend(file.alerts.into_iter().map(|mut a| {
        a.file = index;
        a
    }));
    model
        .channels
        .extend(file.channels.into_iter().map(|mut c| {
            c.file = index;
            c
        }));
    if let Some(mut settings) = file.model {
        settings.file = index;
        model.settings.push(settings);
    }
}
