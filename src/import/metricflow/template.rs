//! MetricFlow's filter templates: `{{ Dimension('customer__country') }}`,
//! `{{ TimeDimension('metric_time', 'month') }}`, `{{ Entity('customer') }}`, with
//! `entity_path=[...]` and the `.grain('month')` / `.date_part('year')` methods,
//! `{{ Metric('bookings', group_by=['listing']) }}`. A small
//! parser of exactly that call syntax (not Jinja): anything else is an error naming it.

/// What a template (or a saved query's `group_by` item) refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A dimension or time dimension: the entity path and the name, such as
    /// `["customer", "country"]` and `region`; `metric_time` has an empty path.
    Dimension {
        /// Entities from the metric's semantic model to the dimension's.
        path: Vec<String>,
        /// The dimension's own name.
        name: String,
        /// A time grain (`TimeDimension(.., 'month')` or `.grain('month')`).
        grain: Option<String>,
        /// A date part (`.date_part('year')`).
        date_part: Option<String>,
    },
    /// An entity: its path and name.
    Entity {
        /// Entities before it.
        path: Vec<String>,
        /// The entity.
        name: String,
    },
    /// A metric computed per entity (`Metric('bookings', group_by=['listing'])`), a
    /// value of each row of the entity's semantic model.
    Metric {
        /// The metric.
        name: String,
        /// The entities it is grouped by.
        group_by: Vec<String>,
    },
}

impl Reference {
    /// The MetricFlow name, `customer__country__region` (the grain left out).
    pub fn qualified(&self) -> String {
        let (path, name) = match self {
            Reference::Dimension { path, name, .. } | Reference::Entity { path, name } => {
                (path, name)
            }
            Reference::Metric { name, group_by } => (group_by, name),
        };
        path.iter()
            .map(String::as_str)
            .chain(std::iter::once(name.as_str()))
            .collect::<Vec<_>>()
            .join("__")
    }
}

/// Replace each `{{ ... }}` of `text` by what `render` makes of its reference.
pub fn render(
    text: &str,
    mut render: impl FnMut(&Reference) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed template in \"{}\"", text.trim()))?;
        let reference = parse(after[..end].trim())?;
        out.push_str(&render(&reference)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parse one call: `Dimension('a__b', entity_path=['x'])`, `TimeDimension('t', 'month')`,
/// `Entity('e')`, optionally followed by `.grain('..')` or `.date_part('..')`.
pub fn parse(call: &str) -> Result<Reference, String> {
    let mut p = Parser { text: call, at: 0 };
    let function = p.identifier()?;
    p.expect('(')?;
    let mut positional: Vec<String> = Vec::new();
    let mut entity_path: Vec<String> = Vec::new();
    let mut group_by: Vec<String> = Vec::new();
    let mut grain: Option<String> = None;
    let mut date_part: Option<String> = None;
    loop {
        p.skip_space();
        if p.eat(')') {
            break;
        }
        if p.peek_quote() {
            positional.push(p.string()?);
        } else if p.peek('[') {
            group_by = p.list()?;
        } else {
            let key = p.identifier()?;
            p.expect('=')?;
            match key.as_str() {
                "entity_path" => entity_path = p.list()?,
                "group_by" => group_by = p.list()?,
                "time_granularity_name" | "time_granularity" => grain = Some(p.string()?),
                "date_part_name" | "date_part" => date_part = Some(p.string()?),
                other => return Err(format!("{function}(): argument {other} is not supported")),
            }
        }
        p.skip_space();
        if !p.eat(',') {
            p.expect(')')?;
            break;
        }
    }
    while p.eat('.') {
        let method = p.identifier()?;
        p.expect('(')?;
        let value = p.string()?;
        p.expect(')')?;
        match method.as_str() {
            "grain" => grain = Some(value),
            "date_part" => date_part = Some(value),
            "descending" => {}
            other => return Err(format!("{function}(...).{other}() is not supported")),
        }
    }
    p.skip_space();
    if p.at < p.text.len() {
        return Err(format!("unexpected \"{}\" in \"{call}\"", &p.text[p.at..]));
    }
    let mut positional = positional.into_iter();
    let name = positional
        .next()
        .ok_or_else(|| format!("{function}() needs a name"))?;
    if function == "Metric" {
        if group_by.is_empty() {
            return Err(format!(
                "Metric('{name}') needs the entities it is grouped by"
            ));
        }
        return Ok(Reference::Metric { name, group_by });
    }
    let mut parts: Vec<String> = entity_path;
    parts.extend(name.split("__").map(str::to_string));
    let name = parts.pop().unwrap_or_default();
    match function.as_str() {
        "Dimension" | "TimeDimension" => {
            if let Some(g) = positional.next() {
                grain = Some(g);
            }
            Ok(Reference::Dimension {
                path: parts,
                name,
                grain: grain.map(|g| g.to_lowercase()),
                date_part: date_part.map(|d| d.to_lowercase()),
            })
        }
        "Entity" => Ok(Reference::Entity { path: parts, name }),
        other => Err(format!("unknown template function {other}()")),
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while let Some(c) = self.text[self.at..].chars().next() {
            if c.is_whitespace() {
                self.at += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.text[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected '{c}' at \"{}\" in \"{}\"",
                &self.text[self.at..],
                self.text
            ))
        }
    }

    fn peek(&mut self, c: char) -> bool {
        self.skip_space();
        self.text[self.at..].starts_with(c)
    }

    fn peek_quote(&mut self) -> bool {
        self.skip_space();
        self.text[self.at..].starts_with(['\'', '"'])
    }

    fn identifier(&mut self) -> Result<String, String> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return Err(format!(
                "expected a name at \"{rest}\" in \"{}\"",
                self.text
            ));
        }
        self.at += len;
        Ok(rest[..len].to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| format!("expected a quoted name at \"{rest}\" in \"{}\"", self.text))?;
        let body = &rest[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| format!("unclosed string in \"{}\"", self.text))?;
        self.at += end + 2;
        Ok(body[..end].to_string())
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        self.expect('[')?;
        let mut items = Vec::new();
        loop {
            if self.eat(']') {
                return Ok(items);
            }
            items.push(self.string()?);
            if !self.eat(',') {
                self.expect(']')?;
                return Ok(items);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(path: &[&str], name: &str, grain: Option<&str>) -> Reference {
        Reference::Dimension {
            path: path.iter().map(|s| s.to_string()).collect(),
            name: name.into(),
            grain: grain.map(str::to_string),
            date_part: None,
        }
    }

    #[test]
    fn calls_parse() {
        assert_eq!(
            parse("Dimension('customer__customer_country')").unwrap(),
            dim(&["customer"], "customer_country", None)
        );
        assert_eq!(
            parse("Dimension('country__region', entity_path=['customer'])").unwrap(),
            dim(&["customer", "country"], "region", None)
        );
        assert_eq!(
            parse("TimeDimension('metric_time', 'month')").unwrap(),
            dim(&[], "metric_time", Some("month"))
        );
        assert_eq!(
            parse("TimeDimension(\"metric_time\", time_granularity_name=\"WEEK\")").unwrap(),
            dim(&[], "metric_time", Some("week"))
        );
        assert_eq!(
            parse("Dimension('metric_time').grain('year')").unwrap(),
            dim(&[], "metric_time", Some("year"))
        );
        assert_eq!(
            parse("Entity('customer')").unwrap(),
            Reference::Entity {
                path: vec![],
                name: "customer".into()
            }
        );
        let per_customer = Reference::Metric {
            name: "revenue".into(),
            group_by: vec!["customer".into()],
        };
        assert_eq!(
            parse("Metric('revenue', group_by=['customer'])").unwrap(),
            per_customer
        );
        assert_eq!(
            parse("Metric('revenue', ['customer'])").unwrap(),
            per_customer
        );
        assert_eq!(per_customer.qualified(), "customer__revenue");
        assert!(parse("Metric('revenue')").is_err());
        assert!(parse("Dimension('x'").is_err());
        assert!(parse("Dimension('x') or 1").is_err());
    }

    #[test]
    fn templates_render() {
        let out = render(
            "{{ Dimension('customer__country') }} = 'MX' AND {{Entity('customer')}} <> 'c1'",
            |r| Ok(r.qualified()),
        )
        .unwrap();
        assert_eq!(out, "customer__country = 'MX' AND customer <> 'c1'");
        assert!(render("{{ Dimension('x') ", |r| Ok(r.qualified())).is_err());
    }
}
