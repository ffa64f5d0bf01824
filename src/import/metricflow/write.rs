//! The generated model's TOML text, item by item, in a stable order with the keys a
//! person would write by hand.

use std::fmt::Write as _;

/// One `[[section]]` item.
#[derive(Debug, Clone)]
pub struct Block {
    header: &'static str,
    comment: Option<String>,
    lines: Vec<String>,
}

impl Block {
    /// A `[[header]]` item.
    pub fn new(header: &'static str) -> Block {
        Block {
            header,
            comment: None,
            lines: Vec::new(),
        }
    }

    /// A `#` line above the item.
    pub fn comment(mut self, text: impl Into<String>) -> Block {
        self.comment = Some(text.into());
        self
    }

    /// `key = "value"`.
    pub fn str(mut self, key: &str, value: &str) -> Block {
        self.lines.push(format!("{key} = {}", quote(value)));
        self
    }

    /// `key = "value"` when there is a value (and it is not empty).
    pub fn opt(self, key: &str, value: Option<&str>) -> Block {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// `key = <raw TOML>`.
    pub fn raw(mut self, key: &str, value: impl Into<String>) -> Block {
        self.lines.push(format!("{key} = {}", value.into()));
        self
    }

    /// `key = ["a", "b"]`.
    pub fn list(self, key: &str, values: &[String]) -> Block {
        let items: Vec<String> = values.iter().map(|v| quote(v)).collect();
        self.raw(key, format!("[{}]", items.join(", ")))
    }

    /// `key = { a = "x", b = "y" }` (nothing when empty).
    pub fn inline(self, key: &str, pairs: &[(String, String)]) -> Block {
        if pairs.is_empty() {
            return self;
        }
        let items: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{} = {}", bare_or_quoted(k), quote(v)))
            .collect();
        self.raw(key, format!("{{ {} }}", items.join(", ")))
    }

    /// A list of inline tables, one per line.
    pub fn tables(self, key: &str, rows: &[Vec<(String, String)>]) -> Block {
        if rows.is_empty() {
            return self;
        }
        let items: Vec<String> = rows
            .iter()
            .map(|row| {
                let pairs: Vec<String> = row
                    .iter()
                    .map(|(k, v)| format!("{} = {}", bare_or_quoted(k), quote(v)))
                    .collect();
                format!("  {{ {} }},", pairs.join(", "))
            })
            .collect();
        self.raw(key, format!("[\n{}\n]", items.join("\n")))
    }
}

/// A TOML file made of blocks.
pub fn file(heading: &str, blocks: &[Block]) -> String {
    let mut out = String::new();
    for line in heading.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for block in blocks {
        out.push('\n');
        if let Some(c) = &block.comment {
            for line in c.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        let _ = writeln!(out, "[[{}]]", block.header);
        for line in &block.lines {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// A TOML basic string.
pub fn quote(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn bare_or_quoted(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        quote(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_valid_toml() {
        let text = file(
            "generated",
            &[Block::new("tables")
                .comment("from x.yml")
                .str("name", "orders")
                .str("description", "a \"quoted\"\nline")
                .list("tags", &["a".into()])
                .inline("dimensions", &[("metric_time".into(), "ds".into())])
                .tables(
                    "joins",
                    &[vec![
                        ("to".into(), "customers".into()),
                        ("foreign_key".into(), "id".into()),
                    ]],
                )],
        );
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let tables = parsed["tables"].as_array().unwrap();
        assert_eq!(
            tables[0]["description"].as_str(),
            Some("a \"quoted\"\nline")
        );
        assert_eq!(tables[0]["joins"][0]["to"].as_str(), Some("customers"));
    }
}
