//! What changed between two versions of a model: metrics, dimensions, segments, views and
//! access rules added, removed or changed (field by field), and the version id of a
//! model's files. `kpitables check DIR --base ...` prints it for a reviewer.

use std::collections::BTreeMap;
use std::fmt;

use toml::Spanned;

use super::Model;
use super::load::SourceTexts;

/// One item added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `metric`, `dimension`, `segment`, `view` or `access rule`.
    pub kind: &'static str,
    /// The item's name (the role, for an access rule).
    pub name: String,
    /// What happened to it.
    pub what: What,
}

/// How an item changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// New in the later version.
    Added,
    /// Gone from the later version.
    Removed,
    /// Changed fields: `(field, before, after)`.
    Changed(Vec<(&'static str, String, String)>),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            What::Added => write!(f, "{} {}: added", self.kind, self.name),
            What::Removed => write!(f, "{} {}: removed", self.kind, self.name),
            What::Changed(fields) => {
                write!(f, "{} {}: changed", self.kind, self.name)?;
                for (field, before, after) in fields {
                    write!(f, "\n  {field}: {before} -> {after}")?;
                }
                Ok(())
            }
        }
    }
}

type Fields = Vec<(&'static str, String)>;

fn text(value: &Option<Spanned<String>>) -> String {
    value
        .as_ref()
        .map(|v| format!("{:?}", v.get_ref()))
        .unwrap_or_else(|| "(none)".into())
}

fn list(values: &[Spanned<String>]) -> String {
    let names: Vec<&str> = values.iter().map(|v| v.get_ref().as_str()).collect();
    format!("[{}]", names.join(", "))
}

fn debug<T: fmt::Debug>(value: &T) -> String {
    format!("{value:?}").to_lowercase()
}

fn metrics(model: &Model) -> BTreeMap<String, Fields> {
    model
        .metrics
        .iter()
        .map(|m| {
            let fields = vec![
                ("table", text(&m.table)),
                ("agg", debug(&m.agg)),
                ("expr", text(&m.expr)),
                ("filter", text(&m.filter)),
                ("base", text(&m.base)),
                ("formula", text(&m.formula)),
                ("time", text(&m.time)),
                ("compare", debug(&m.compare)),
                ("show", debug(&m.show)),
                ("window", text(&m.window)),
                ("label", format!("{:?}", m.label)),
                ("description", format!("{:?}", m.description)),
                ("owner", format!("{:?}", m.owner)),
                ("domain", format!("{:?}", m.domain)),
                ("status", m.status.as_str().to_string()),
                ("replaced_by", text(&m.replaced_by)),
                ("sensitive", m.sensitive.to_string()),
                ("tags", format!("{:?}", m.tags)),
                ("unit", format!("{:?}", m.unit)),
            ];
            (m.name.get_ref().clone(), fields)
        })
        .collect()
}

fn dimensions(model: &Model) -> BTreeMap<String, Fields> {
    model
        .dimensions
        .iter()
        .map(|d| {
            let fields = vec![
                ("table", format!("{:?}", d.table.get_ref())),
                ("expr", text(&d.expr)),
                ("kind", debug(&d.kind)),
                ("week_start", debug(&d.week_start)),
                (
                    "fiscal_year_start_month",
                    debug(&d.fiscal_year_start_month.as_ref().map(|m| *m.get_ref())),
                ),
                ("mask", debug(&d.mask)),
                ("label", format!("{:?}", d.label)),
                ("description", format!("{:?}", d.description)),
            ];
            (d.name.get_ref().clone(), fields)
        })
        .collect()
}

fn segments(model: &Model) -> BTreeMap<String, Fields> {
    model
        .segments
        .iter()
        .map(|g| {
            let fields = vec![
                ("filter", format!("{:?}", g.filter.get_ref())),
                ("label", format!("{:?}", g.label)),
                ("description", format!("{:?}", g.description)),
                ("owner", format!("{:?}", g.owner)),
            ];
            (g.name.get_ref().clone(), fields)
        })
        .collect()
}

fn views(model: &Model) -> BTreeMap<String, Fields> {
    model
        .views
        .iter()
        .map(|v| {
            let fields = vec![
                ("dimensions", list(&v.dimensions)),
                ("metrics", list(&v.metrics)),
                ("segments", list(&v.segments)),
                ("apply_segments", list(&v.apply_segments)),
                ("sensitive", v.sensitive.to_string()),
                ("label", format!("{:?}", v.label)),
                ("description", format!("{:?}", v.description)),
            ];
            (v.name.get_ref().clone(), fields)
        })
        .collect()
}

fn access(model: &Model) -> BTreeMap<String, Fields> {
    let mut out = BTreeMap::new();
    for rule in &model.access {
        let fields = vec![
            ("metrics", list(&rule.metrics)),
            ("views", list(&rule.views)),
            ("row_filter", text(&rule.row_filter)),
            ("unmask", list(&rule.unmask)),
            ("drafts", rule.drafts.to_string()),
        ];
        let mut key = rule.role.get_ref().clone();
        let mut n = 1;
        while out.contains_key(&key) {
            n += 1;
            key = format!("{} #{n}", rule.role.get_ref());
        }
        out.insert(key, fields);
    }
    out
}

fn compare(
    kind: &'static str,
    before: BTreeMap<String, Fields>,
    after: BTreeMap<String, Fields>,
    out: &mut Vec<Change>,
) {
    for (name, old) in &before {
        let what = match after.get(name) {
            None => What::Removed,
            Some(new) => {
                let changed: Vec<(&'static str, String, String)> = old
                    .iter()
                    .zip(new)
                    .filter(|((_, a), (_, b))| a != b)
                    .map(|((field, a), (_, b))| (*field, a.clone(), b.clone()))
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                What::Changed(changed)
            }
        };
        out.push(Change {
            kind,
            name: name.clone(),
            what,
        });
    }
    for name in after.keys().filter(|n| !before.contains_key(*n)) {
        out.push(Change {
            kind,
            name: name.clone(),
            what: What::Added,
        });
    }
}

/// Every change from `before` to `after`, by kind then name.
pub fn diff(before: &Model, after: &Model) -> Vec<Change> {
    let mut out = Vec::new();
    compare("metric", metrics(before), metrics(after), &mut out);
    compare("dimension", dimensions(before), dimensions(after), &mut out);
    compare("segment", segments(before), segments(after), &mut out);
    compare("view", views(before), views(after), &mut out);
    compare("access rule", access(before), access(after), &mut out);
    out
}

/// FNV-1a (64 bits) of `parts`, each followed by a zero byte (so `["ab", "c"]` and
/// `["a", "bc"]` differ): the content hash behind version ids.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The version id of a model's files: a hash of their names (without directories) and
/// contents, in name order (FNV-1a 64, hex).
pub fn version(texts: &SourceTexts) -> String {
    let mut files: Vec<(&str, &str)> = texts
        .files
        .iter()
        .map(|(path, text)| {
            let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
            (name, text.as_str())
        })
        .collect();
    files.sort();
    let hash = content_hash(files.iter().flat_map(|(name, text)| [*name, *text]));
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::load::load_texts;

    fn model(text: &str) -> Model {
        load_texts(SourceTexts {
            files: vec![("m.toml".into(), text.into())],
        })
        .unwrap()
    }

    const BASE: &str = r#"
[[sources]]
name = "files"
kind = "files"
path = "data"

[[tables]]
name = "orders"
source = "files"
file = "orders.csv"
primary_key = "id"

[[dimensions]]
name = "region"
table = "orders"

[[metrics]]
name = "revenue"
table = "orders"
agg = "sum"
expr = "amount"

[[views]]
name = "sales"
dimensions = ["region"]
metrics = ["revenue"]
"#;

    #[test]
    fn added_removed_and_changed_fields() {
        let before = model(BASE);
        let after = model(
            &(BASE
                .replace(
                    "expr = \"amount\"",
                    "expr = \"amount - discount\"\nstatus = \"deprecated\"",
                )
                .replace(
                    "metrics = [\"revenue\"]",
                    "metrics = [\"revenue\", \"orders\"]",
                )
                + "\n[[metrics]]\nname = \"orders\"\ntable = \"orders\"\nagg = \"count\"\n"),
        );
        let changes: Vec<String> = diff(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            vec![
                "metric revenue: changed\n  expr: \"amount\" -> \"amount - discount\"\n  status: active -> deprecated",
                "metric orders: added",
                "view sales: changed\n  metrics: [revenue] -> [revenue, orders]",
            ]
        );
        assert!(diff(&before, &before).is_empty());
        assert_eq!(
            diff(&after, &before)[0].to_string(),
            "metric orders: removed"
        );
    }
}
