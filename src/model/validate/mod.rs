//! Whole-model validation: every rule runs and every problem is reported at once.
//!
//! Rules: names are valid identifiers and unique per kind (dimensions and metrics share
//! the view column namespace); every reference names an existing item (with a "did you
//! mean" for near misses); expressions parse as SQL; file sources have a path and a
//! known file format. Column existence is checked later, when sources are bound.

use std::collections::HashMap;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use toml::Spanned;

use super::load::SourceTexts;
use super::{DimensionKind, Model, SourceKind};
use crate::error::{ModelIssue, did_you_mean};

mod metric;
use metric::check_metric;

struct Checker<'a> {
    texts: &'a SourceTexts,
    issues: Vec<ModelIssue>,
}

impl Checker<'_> {
    fn at<T>(&mut self, file: usize, spanned: &Spanned<T>, reason: impl Into<String>) {
        let issue = self.texts.issue(file, Some(spanned.span().start), reason);
        self.issues.push(issue);
    }

    fn name(&mut self, file: usize, kind: &str, name: &Spanned<String>) {
        let n = name.get_ref();
        if !super::is_plain_identifier(n) {
            self.at(
                file,
                name,
                format!("{kind} name \"{n}\" must be lower-case letters, digits and _ (starting with a letter or _)"),
            );
        } else if n.contains("__")
            && (kind != "dimension" || super::time::grain_suffix(n).is_some())
        {
            let reason = if kind == "dimension" {
                format!(
                    "dimension name \"{n}\" must not end in a time grain (\"__day\", \"__month\", ...): those names are the grain columns of time dimensions"
                )
            } else {
                format!(
                    "{kind} name \"{n}\" must not contain \"__\": it is reserved for time grain columns such as order_date__month (only dimension names may use it, as MetricFlow's customer__country)"
                )
            };
            self.at(file, name, reason);
        }
    }

    fn reference<'n>(
        &mut self,
        file: usize,
        kind: &str,
        name: &Spanned<String>,
        known: impl Iterator<Item = &'n str> + Clone,
    ) -> bool {
        let n = name.get_ref().as_str();
        if known.clone().any(|k| k == n) {
            return true;
        }
        let hint = did_you_mean(n, known)
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        self.at(file, name, format!("unknown {kind} \"{n}\"{hint}"));
        false
    }

    fn expr(&mut self, file: usize, what: &str, text: &Spanned<String>) {
        let dialect = PostgreSqlDialect {};
        let parsed = Parser::new(&dialect)
            .try_with_sql(text.get_ref())
            .and_then(|mut p| {
                let e = p.parse_expr()?;
                p.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
                Ok(e)
            });
        if let Err(e) = parsed {
            self.at(
                file,
                text,
                format!("{what} is not a valid SQL expression: {e}"),
            );
        }
    }
}

/// Check a merged model; returns every issue found (empty when valid).
pub fn validate(model: &Model, texts: &SourceTexts) -> Vec<ModelIssue> {
    let mut c = Checker {
        texts,
        issues: Vec::new(),
    };
    duplicates(
        &mut c,
        "source",
        model.sources.iter().map(|s| (s.file, &s.name)),
    );
    duplicates(
        &mut c,
        "table",
        model.tables.iter().map(|t| (t.file_index, &t.name)),
    );
    duplicates(
        &mut c,
        "dimension, metric or segment",
        model
            .dimensions
            .iter()
            .map(|d| (d.file, &d.name))
            .chain(model.metrics.iter().map(|m| (m.file, &m.name)))
            .chain(model.segments.iter().map(|g| (g.file, &g.name))),
    );
    duplicates(
        &mut c,
        "view",
        model.views.iter().map(|v| (v.file, &v.name)),
    );
    duplicates(
        &mut c,
        "alert",
        model.alerts.iter().map(|a| (a.file, &a.name)),
    );
    duplicates(
        &mut c,
        "channel",
        model.channels.iter().map(|a| (a.file, &a.name)),
    );
    for rule in &model.alerts {
        c.name(rule.file, "alert", &rule.name);
        for (span, reason) in super::alerts::check(model, rule) {
            let issue = c.texts.issue(rule.file, Some(span.start), reason);
            c.issues.push(issue);
        }
    }
    for table in &model.tables {
        if let Some(quality) = &table.quality {
            for (span, reason) in quality.check() {
                let issue = c.texts.issue(table.file_index, Some(span.start), reason);
                c.issues.push(issue);
            }
        }
    }
    for channel in &model.channels {
        c.name(channel.file, "channel", &channel.name);
        for (span, reason) in super::alerts::check_channel(channel) {
            let issue = c.texts.issue(channel.file, Some(span.start), reason);
            c.issues.push(issue);
        }
    }

    let zones = model
        .settings
        .iter()
        .filter_map(|s| s.time_zone.as_ref().map(|z| (s, z)));
    for (i, (settings, zone)) in zones.enumerate() {
        if i > 0 {
            c.at(
                settings.file,
                zone,
                "the model's time_zone is set in more than one [model] section: keep one",
            );
        } else if crate::time_zone::TimeZone::parse(zone.get_ref()).is_none() {
            c.at(
                settings.file,
                zone,
                format!(
                    "unknown time zone \"{}\": use an IANA name such as \"Asia/Shanghai\" or \"UTC\"",
                    zone.get_ref()
                ),
            );
        }
    }

    let source_names = || model.sources.iter().map(|s| s.name.get_ref().as_str());
    let table_names = || model.tables.iter().map(|t| t.name.get_ref().as_str());
    let dimension_names = || model.dimensions.iter().map(|d| d.name.get_ref().as_str());
    let metric_names = || model.metrics.iter().map(|m| m.name.get_ref().as_str());

    for source in &model.sources {
        c.name(source.file, "source", &source.name);
        let name = source.name.get_ref();
        match source.kind {
            SourceKind::Files => {
                if source.path.is_none() {
                    c.at(
                        source.file,
                        &source.name,
                        format!("source \"{name}\" of kind files needs a path"),
                    );
                }
                if let Some(url) = &source.url {
                    c.at(
                        source.file,
                        url,
                        format!("source \"{name}\" of kind files takes a path, not a url"),
                    );
                }
            }
            kind => match &source.url {
                None => c.at(
                    source.file,
                    &source.name,
                    format!("source \"{name}\" needs a url"),
                ),
                Some(url) => {
                    if let Err(reason) = check_url(url.get_ref(), kind) {
                        c.at(source.file, url, format!("source \"{name}\": {reason}"));
                    }
                }
            },
        }
    }
    for table in &model.tables {
        let f = table.file_index;
        c.name(f, "table", &table.name);
        let source = if c.reference(f, "source", &table.source, source_names()) {
            model.source(table.source.get_ref())
        } else {
            None
        };
        if let Some(source) = source
            && source.kind == SourceKind::Files
        {
            match &table.file {
                None => c.at(
                    f,
                    &table.name,
                    format!(
                        "table \"{}\" reads a files source and needs a file",
                        table.name.get_ref()
                    ),
                ),
                Some(file) if table.format.is_none() => {
                    let ext = file.get_ref().rsplit('.').next().unwrap_or("");
                    if !matches!(ext, "parquet" | "csv") {
                        c.at(f, file, format!("cannot tell the format of \"{}\": name it *.parquet or *.csv, or set format", file.get_ref()));
                    }
                }
                Some(_) => {}
            }
            if let Some(t) = &table.table {
                c.at(
                    f,
                    t,
                    "`table` names a warehouse table; a files source takes `file`",
                );
            }
        }
        if let Some(source) = source
            && source.kind.is_warehouse()
            && let Some(file) = &table.file
        {
            c.at(
                f,
                file,
                format!(
                    "source \"{}\" is a warehouse: name the table with `table`, not `file`",
                    source.name.get_ref()
                ),
            );
        }
        for (dimension, expr) in &table.dimensions {
            let known = model
                .dimensions
                .iter()
                .any(|d| d.name.get_ref() == dimension);
            if !known {
                let hint = did_you_mean(
                    dimension,
                    model.dimensions.iter().map(|d| d.name.get_ref().as_str()),
                )
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
                c.at(
                    f,
                    expr,
                    format!(
                        "table \"{}\" maps unknown dimension \"{dimension}\"{hint}",
                        table.name.get_ref()
                    ),
                );
            }
            c.expr(f, "dimension expression", expr);
        }
        for join in &table.joins {
            if c.reference(f, "table", &join.to, table_names())
                && join.to.get_ref() == table.name.get_ref()
            {
                c.at(f, &join.to, "a table cannot join itself");
            }
        }
    }
    for dim in &model.dimensions {
        c.name(dim.file, "dimension", &dim.name);
        if let Some(month) = &dim.fiscal_year_start_month
            && !(1..=12).contains(month.get_ref())
        {
            c.at(
                dim.file,
                month,
                "fiscal_year_start_month is a month number, 1 to 12",
            );
        }
        if dim.kind != DimensionKind::Time
            && (dim.week_start.is_some() || dim.fiscal_year_start_month.is_some())
        {
            c.at(
                dim.file,
                &dim.name,
                format!(
                    "dimension \"{}\" is not a time dimension: week_start and fiscal_year_start_month need kind = \"time\"",
                    dim.name.get_ref()
                ),
            );
        }
        if let Some(granularity) = &dim.granularity {
            if dim.kind != DimensionKind::Time {
                c.at(
                    dim.file,
                    granularity,
                    format!(
                        "dimension \"{}\" is not a time dimension: granularity needs kind = \"time\"",
                        dim.name.get_ref()
                    ),
                );
            } else if !["day", "hour", "minute", "second"].contains(&granularity.get_ref().as_str())
            {
                c.at(
                    dim.file,
                    granularity,
                    format!(
                        "unknown granularity \"{}\": day, hour, minute or second",
                        granularity.get_ref()
                    ),
                );
            }
        }
        c.reference(dim.file, "table", &dim.table, table_names());
        if let Some(expr) = &dim.expr {
            c.expr(dim.file, "expr", expr);
        }
        if let Some(calendar) = &dim.calendar {
            c.reference(dim.file, "table", &calendar.table, table_names());
            if dim.kind != DimensionKind::Time {
                c.at(
                    dim.file,
                    &calendar.table,
                    format!(
                        "dimension \"{}\" is not a time dimension: a calendar needs kind = \"time\"",
                        dim.name.get_ref()
                    ),
                );
            }
        }
        if let Some(metric) = &dim.metric {
            c.reference(dim.file, "metric", metric, metric_names());
            if dim.expr.is_some() || dim.kind == DimensionKind::Time {
                c.at(
                    dim.file,
                    metric,
                    format!(
                        "dimension \"{}\" is a metric per row of \"{}\": it has no expr and is not a time dimension",
                        dim.name.get_ref(),
                        dim.table.get_ref()
                    ),
                );
            }
        }
    }
    for metric in &model.metrics {
        check_metric(&mut c, model, metric);
    }
    let segment_names = || model.segments.iter().map(|g| g.name.get_ref().as_str());
    for segment in &model.segments {
        c.name(segment.file, "segment", &segment.name);
        c.expr(segment.file, "filter", &segment.filter);
    }
    for view in &model.views {
        let f = view.file;
        c.name(f, "view", &view.name);
        if view.dimensions.is_empty() && view.metrics.is_empty() {
            c.at(
                f,
                &view.name,
                format!(
                    "view \"{}\" offers no dimensions and no metrics",
                    view.name.get_ref()
                ),
            );
        }
        for d in &view.dimensions {
            c.reference(f, "dimension", d, dimension_names());
        }
        for m in &view.metrics {
            c.reference(f, "metric", m, metric_names());
        }
        for g in view.segments.iter().chain(&view.apply_segments) {
            c.reference(f, "segment", g, segment_names());
        }
        duplicates(
            &mut c,
            "view column",
            view.dimensions
                .iter()
                .chain(&view.metrics)
                .chain(&view.segments)
                .map(|n| (f, n)),
        );
    }
    for metric in &model.metrics {
        if let Some(replacement) = &metric.replaced_by {
            c.reference(metric.file, "metric", replacement, metric_names());
        }
    }
    let view_names = || model.views.iter().map(|v| v.name.get_ref().as_str());
    for rule in &model.access {
        let f = rule.file;
        for m in rule.metrics.iter().filter(|m| m.get_ref() != "*") {
            c.reference(f, "metric", m, metric_names());
        }
        for v in rule.views.iter().filter(|v| v.get_ref() != "*") {
            c.reference(f, "view", v, view_names());
        }
        for d in rule.unmask.iter().filter(|d| d.get_ref() != "*") {
            c.reference(f, "dimension", d, dimension_names());
        }
        if let Some(filter) = &rule.row_filter {
            check_row_filter(&mut c, f, filter, dimension_names());
        }
    }
    c.issues
}

/// A row filter parses and names only dimensions and `user.<attribute>`.
fn check_row_filter<'n>(
    c: &mut Checker<'_>,
    file: usize,
    filter: &Spanned<String>,
    dimensions: impl Iterator<Item = &'n str> + Clone,
) {
    use datafusion::sql::sqlparser::ast::{Expr, Value, VisitMut, Visitor, VisitorMut};
    let Ok(mut expr) = super::parse_expr(filter.get_ref()) else {
        c.expr(file, "row_filter", filter);
        return;
    };
    // `user.<attribute>` is a value, not a column.
    struct Attributes;
    impl VisitorMut for Attributes {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> std::ops::ControlFlow<()> {
            if super::user_attribute(expr).is_some() {
                *expr = Expr::value(Value::SingleQuotedString(String::new()));
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(&mut expr, &mut Attributes);
    struct Names(Vec<String>, Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> std::ops::ControlFlow<()> {
            match expr {
                Expr::Identifier(i) => self.0.push(i.value.clone()),
                Expr::CompoundIdentifier(parts) => self.1.push(
                    parts
                        .iter()
                        .map(|p| p.value.as_str())
                        .collect::<Vec<_>>()
                        .join("."),
                ),
                _ => {}
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut names = Names(Vec::new(), Vec::new());
    let _ = datafusion::sql::sqlparser::ast::Visit::visit(&expr, &mut names);
    for name in names.0 {
        if !dimensions.clone().any(|d| d == name) {
            let hint = did_you_mean(&name, dimensions.clone())
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            c.at(
                file,
                filter,
                format!("row_filter names \"{name}\", which is not a dimension{hint}"),
            );
        }
    }
    for name in names.1 {
        c.at(
            file,
            filter,
            format!("row_filter names \"{name}\": use dimension names and user.<attribute>"),
        );
    }
}

fn duplicates<'a>(
    c: &mut Checker<'_>,
    kind: &str,
    names: impl Iterator<Item = (usize, &'a Spanned<String>)>,
) {
    let mut first: HashMap<&str, ()> = HashMap::new();
    for (file, name) in names {
        if first.insert(name.get_ref().as_str(), ()).is_some() {
            c.at(
                file,
                name,
                format!("duplicate {kind} name \"{}\"", name.get_ref()),
            );
        }
    }
}

/// A warehouse URL: the right scheme for the kind, a host, and no password (passwords
/// come from the environment variable named by `password_env`, never from model files).
fn check_url(url: &str, kind: SourceKind) -> std::result::Result<(), String> {
    let scheme = match kind {
        SourceKind::Postgres => &["postgres", "postgresql"][..],
        SourceKind::Mysql => &["mysql", "mariadb"][..],
        SourceKind::Files => return Ok(()),
    };
    let Some((given, rest)) = url.split_once("://") else {
        return Err(format!(
            "url must look like {}://user@host:port/database",
            scheme[0]
        ));
    };
    if !scheme.contains(&given) {
        return Err(format!(
            "url scheme \"{given}\" does not match the kind (expected {}://)",
            scheme[0]
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err("url contains a password: put it in an environment variable and name it with password_env".into());
    }
    Ok(())
}
