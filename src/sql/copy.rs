//! `COPY ... TO STDOUT`: a COPY statement classified into the query it reads and the
//! output format it asks for, with PostgreSQL's option rules and errors. Only COPY TO
//! STDOUT is answered (`COPY (query) TO STDOUT`, `COPY view [(columns)] TO STDOUT`); COPY
//! FROM is a write (25006), and COPY to a file or a program is refused as PostgreSQL
//! refuses it to a role without file privileges (42501), pointing at psql's `\copy`.

use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident, ObjectName,
    Statement,
};

use crate::error::{Error, Result};

/// The three COPY formats of PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated text with backslash escapes (the default).
    Text,
    /// Comma-separated values with quotes.
    Csv,
    /// PostgreSQL's binary COPY format (`PGCOPY`).
    Binary,
}

/// Which CSV columns are always quoted (`FORCE_QUOTE (columns)`; the SQL parser does
/// not read `FORCE_QUOTE *` yet, which is a syntax error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceQuote {
    /// None but those that need it.
    None,
    /// The named columns.
    Columns(Vec<String>),
}

/// How COPY TO writes rows: the format and its options, with PostgreSQL's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// Text, CSV or binary.
    pub format: CopyFormat,
    /// A first line with the column names (text and CSV).
    pub header: bool,
    /// The column separator: a tab in text, a comma in CSV.
    pub delimiter: char,
    /// How NULL is written: `\N` in text, an unquoted empty string in CSV.
    pub null: String,
    /// The CSV quote character.
    pub quote: char,
    /// The CSV character that escapes a quote inside quotes (the quote by default).
    pub escape: char,
    /// The CSV columns always quoted.
    pub force_quote: ForceQuote,
}

impl CopyOptions {
    /// Whether CSV column `name` is always quoted.
    pub fn forces_quote(&self, name: &str) -> bool {
        match &self.force_quote {
            ForceQuote::None => false,
            ForceQuote::Columns(names) => names.iter().any(|n| n == name),
        }
    }
}

/// What a `COPY` statement asks: the query whose rows are written, and how.
#[derive(Debug, Clone)]
pub struct CopyOut {
    /// `SELECT` of the COPY, or `SELECT columns FROM view` for the table form.
    pub query: Box<Statement>,
    /// The format.
    pub options: CopyOptions,
}

fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn file_privileges(what: &str) -> Error {
    Error::Denied {
        kind: crate::error::DenialKind::Permission,
        message: format!("must be superuser or have privileges of the {what}"),
        hint:
            "Anyone can COPY to stdout or from stdin. psql's \\copy command also works for anyone."
                .to_string(),
    }
}

fn conflict(message: impl Into<String>) -> Error {
    Error::unsupported(message, None)
}

/// Options as written, before their defaults depend on the format.
#[derive(Default)]
struct Written {
    format: Option<CopyFormat>,
    header: Option<bool>,
    delimiter: Option<char>,
    null: Option<String>,
    quote: Option<char>,
    escape: Option<char>,
    force_quote: Option<ForceQuote>,
}

impl Written {
    fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<()> {
        if slot.is_some() {
            return Err(Error::Syntax(format!(
                "conflicting or redundant options: {name}"
            )));
        }
        *slot = Some(value);
        Ok(())
    }

    fn option(&mut self, option: &CopyOption) -> Result<()> {
        match option {
            CopyOption::Format(name) => {
                let format = match name.value.to_lowercase().as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => CopyFormat::Binary,
                    other => {
                        return Err(Error::InvalidParameter(format!(
                            "COPY format \"{other}\" not recognized"
                        )));
                    }
                };
                Written::set(&mut self.format, format, "FORMAT")
            }
            CopyOption::Header(on) => Written::set(&mut self.header, *on, "HEADER"),
            CopyOption::Delimiter(c) => Written::set(&mut self.delimiter, *c, "DELIMITER"),
            CopyOption::Null(s) => Written::set(&mut self.null, s.clone(), "NULL"),
            CopyOption::Quote(c) => Written::set(&mut self.quote, *c, "QUOTE"),
            CopyOption::Escape(c) => Written::set(&mut self.escape, *c, "ESCAPE"),
            CopyOption::ForceQuote(columns) => {
                Written::set(&mut self.force_quote, force_quote(columns), "FORCE_QUOTE")
            }
            CopyOption::ForceNotNull(_) => {
                Err(conflict("COPY FORCE_NOT_NULL cannot be used with COPY TO"))
            }
            CopyOption::ForceNull(_) => {
                Err(conflict("COPY FORCE_NULL cannot be used with COPY TO"))
            }
            CopyOption::Freeze(_) => Err(conflict("COPY FREEZE cannot be used with COPY TO")),
            CopyOption::Encoding(e) => {
                let name = e.to_uppercase().replace(['-', '_'], "");
                if name == "UTF8" {
                    Ok(())
                } else {
                    Err(conflict(format!(
                        "COPY ENCODING \"{e}\" is not supported: kpitables writes UTF8"
                    )))
                }
            }
        }
    }

    fn legacy(&mut self, option: &CopyLegacyOption) -> Result<()> {
        match option {
            CopyLegacyOption::Binary => {
                Written::set(&mut self.format, CopyFormat::Binary, "BINARY")
            }
            CopyLegacyOption::Delimiter(c) => Written::set(&mut self.delimiter, *c, "DELIMITER"),
            CopyLegacyOption::Null(s) => Written::set(&mut self.null, s.clone(), "NULL"),
            CopyLegacyOption::Header => Written::set(&mut self.header, true, "HEADER"),
            CopyLegacyOption::Csv(options) => {
                Written::set(&mut self.format, CopyFormat::Csv, "CSV")?;
                for option in options {
                    match option {
                        CopyLegacyCsvOption::Header => {
                            Written::set(&mut self.header, true, "HEADER")?;
                        }
                        CopyLegacyCsvOption::Quote(c) => {
                            Written::set(&mut self.quote, *c, "QUOTE")?;
                        }
                        CopyLegacyCsvOption::Escape(c) => {
                            Written::set(&mut self.escape, *c, "ESCAPE")?;
                        }
                        CopyLegacyCsvOption::ForceQuote(columns) => Written::set(
                            &mut self.force_quote,
                            force_quote(columns),
                            "FORCE QUOTE",
                        )?,
                        CopyLegacyCsvOption::ForceNotNull(_) => {
                            return Err(conflict(
                                "COPY FORCE_NOT_NULL cannot be used with COPY TO",
                            ));
                        }
                    }
                }
                Ok(())
            }
            other => Err(Error::Syntax(format!(
                "COPY option {other} is not a PostgreSQL option"
            ))),
        }
    }

    /// The options with PostgreSQL's defaults and checks (`ProcessCopyOptions`).
    fn finish(self) -> Result<CopyOptions> {
        let format = self.format.unwrap_or(CopyFormat::Text);
        let csv = format == CopyFormat::Csv;
        if format == CopyFormat::Binary {
            for (given, name) in [
                (self.delimiter.is_some(), "DELIMITER"),
                (self.null.is_some(), "NULL"),
                (self.header == Some(true), "HEADER"),
            ] {
                if given {
                    return Err(Error::Syntax(format!(
                        "cannot specify {name} in BINARY mode"
                    )));
                }
            }
        }
        if !csv {
            for (given, what) in [
                (self.quote.is_some(), "quote"),
                (self.escape.is_some(), "escape"),
                (self.force_quote.is_some(), "force quote"),
            ] {
                if given {
                    return Err(conflict(format!("COPY {what} available only in CSV mode")));
                }
            }
        }
        let delimiter = self.delimiter.unwrap_or(if csv { ',' } else { '\t' });
        let null = self
            .null
            .unwrap_or_else(|| if csv { String::new() } else { "\\N".into() });
        let quote = self.quote.unwrap_or('"');
        let escape = self.escape.unwrap_or(quote);
        if !delimiter.is_ascii() {
            return Err(conflict(
                "COPY delimiter must be a single one-byte character",
            ));
        }
        if !quote.is_ascii() {
            return Err(conflict("COPY quote must be a single one-byte character"));
        }
        if !escape.is_ascii() {
            return Err(conflict("COPY escape must be a single one-byte character"));
        }
        if matches!(delimiter, '\n' | '\r') {
            return Err(Error::InvalidParameter(
                "COPY delimiter cannot be newline or carriage return".into(),
            ));
        }
        if null.contains(['\n', '\r']) {
            return Err(Error::InvalidParameter(
                "COPY null representation cannot use newline or carriage return".into(),
            ));
        }
        if !csv && "\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(delimiter) {
            return Err(Error::InvalidParameter(format!(
                "COPY delimiter cannot be \"{delimiter}\""
            )));
        }
        if csv && delimiter == quote {
            return Err(Error::InvalidParameter(
                "COPY delimiter and quote must be different".into(),
            ));
        }
        if format != CopyFormat::Binary && null.contains(delimiter) {
            return Err(Error::InvalidParameter(
                "COPY delimiter must not appear in the NULL specification".into(),
            ));
        }
        if csv && null.contains(quote) {
            return Err(Error::InvalidParameter(
                "CSV quote character must not appear in the NULL specification".into(),
            ));
        }
        Ok(CopyOptions {
            format,
            header: self.header.unwrap_or(false),
            delimiter,
            null,
            quote,
            escape,
            force_quote: self.force_quote.unwrap_or(ForceQuote::None),
        })
    }
}

fn force_quote(columns: &[Ident]) -> ForceQuote {
    ForceQuote::Columns(columns.iter().map(ident_name).collect())
}

/// Classify `COPY ...`.
pub fn classify(
    source: CopySource,
    to: bool,
    target: CopyTarget,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<CopyOut> {
    if !to {
        return Err(Error::ReadOnly("COPY FROM".into()));
    }
    match target {
        CopyTarget::Stdout => {}
        CopyTarget::File { .. } => {
            return Err(file_privileges(
                "pg_write_server_files role to COPY to a file",
            ));
        }
        CopyTarget::Program { .. } => {
            return Err(file_privileges(
                "pg_execute_server_program role to COPY to or from an external program",
            ));
        }
        CopyTarget::Stdin => return Err(Error::Syntax("COPY TO STDIN is not valid".into())),
    }
    let mut written = Written::default();
    for option in options {
        written.option(option)?;
    }
    for option in legacy {
        written.legacy(option)?;
    }
    let options = written.finish()?;
    let query = match source {
        CopySource::Query(query) => Statement::Query(query),
        CopySource::Table {
            table_name,
            columns,
        } => table_query(&table_name, &columns)?,
    };
    Ok(CopyOut {
        query: Box::new(query),
        options,
    })
}

/// `COPY view (a, b) TO STDOUT` reads `SELECT a, b FROM view`.
fn table_query(table: &ObjectName, columns: &[Ident]) -> Result<Statement> {
    let list = if columns.is_empty() {
        "*".to_string()
    } else {
        columns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parsed = super::parse(&format!("SELECT {list} FROM {table}"))?;
    match (parsed.pop(), parsed.is_empty()) {
        (Some(statement), true) => Ok(statement),
        _ => Err(Error::Syntax(format!("invalid COPY table name {table}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(sql: &str) -> Result<CopyOut> {
        let mut statements = super::super::parse(sql)?;
        match statements.pop() {
            Some(Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            }) => classify(source, to, target, &options, &legacy_options),
            other => panic!("not a COPY: {other:?}"),
        }
    }

    #[test]
    fn psql_copy_csv_header() {
        let c = copy("COPY (SELECT region, revenue FROM sales) TO STDOUT CSV HEADER").unwrap();
        assert_eq!(c.options.format, CopyFormat::Csv);
        assert!(c.options.header);
        assert_eq!((c.options.delimiter, c.options.null.as_str()), (',', ""));
        assert_eq!(c.query.to_string(), "SELECT region, revenue FROM sales");
    }

    #[test]
    fn with_options_and_the_table_form() {
        let c = copy(
            "COPY sales (region, \"Revenue\") TO STDOUT WITH (FORMAT csv, DELIMITER ';', NULL 'n/a', QUOTE '''', FORCE_QUOTE (region))",
        )
        .unwrap();
        assert_eq!(c.options.delimiter, ';');
        assert_eq!(c.options.null, "n/a");
        assert_eq!((c.options.quote, c.options.escape), ('\'', '\''));
        assert_eq!(
            c.options.force_quote,
            ForceQuote::Columns(vec!["region".into()])
        );
        assert_eq!(c.query.to_string(), "SELECT region, \"Revenue\" FROM sales");
        let b = copy("COPY (SELECT 1) TO STDOUT (FORMAT binary)").unwrap();
        assert_eq!(b.options.format, CopyFormat::Binary);
        let t = copy("COPY sales TO STDOUT").unwrap();
        assert_eq!(t.options.format, CopyFormat::Text);
        assert_eq!(
            (t.options.delimiter, t.options.null.as_str()),
            ('\t', "\\N")
        );
    }

    #[test]
    fn refusals_in_postgresql_words() {
        let code = |sql: &str| copy(sql).map(|_| ()).unwrap_err();
        assert_eq!(code("COPY sales FROM STDIN").sqlstate(), "25006");
        let file = code("COPY sales TO '/tmp/x.csv'");
        assert_eq!(file.sqlstate(), "42501");
        assert!(file.hint().unwrap_or_default().contains("\\copy"));
        assert_eq!(code("COPY sales TO PROGRAM 'cat'").sqlstate(), "42501");
        assert_eq!(
            code("COPY sales TO STDOUT (FORMAT xml)").sqlstate(),
            "22023"
        );
        assert_eq!(
            code("COPY sales TO STDOUT (FORMAT binary, HEADER)").sqlstate(),
            "42601"
        );
        assert_eq!(
            code("COPY sales TO STDOUT (QUOTE '\"')").sqlstate(),
            "0A000"
        );
        assert_eq!(
            code("COPY sales TO STDOUT (FORMAT csv, DELIMITER '\"')").sqlstate(),
            "22023"
        );
        assert_eq!(
            code("COPY sales TO STDOUT (DELIMITER 'a')").sqlstate(),
            "22023"
        );
        assert_eq!(
            code("COPY sales TO STDOUT (FORMAT csv, FORMAT text)").sqlstate(),
            "42601"
        );
    }
}
