//! `kpitables demo --into URL --model-out DIR`: load the demo data into a PostgreSQL or
//! MariaDB/MySQL database and write a model directory whose source points at it, so that
//! `kpitables serve --model DIR` serves the same views from that warehouse.
//!
//! Each table is dropped if it exists, created with the types the demo files have
//! (`numeric(p,s)`, `date`, `timestamp`, `boolean`, ...), filled (PostgreSQL: `COPY`;
//! MySQL: multi-row `INSERT`), given its primary key and indexes on its foreign keys and
//! dates, and analyzed. Text columns on MySQL
//! use the binary collation, so comparisons are case-sensitive as in PostgreSQL.
//!
//! A password in URL is used to load, never written to the model: the model names the
//! environment variable [`PASSWORD_ENV`] instead.

use std::path::Path;

use bytes::Bytes;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use futures::{SinkExt, StreamExt};
use mysql_async::prelude::Queryable;

use crate::error::{Error, Result};
use crate::model::SourceKind;

/// The environment variable the written model reads the warehouse password from.
pub const PASSWORD_ENV: &str = "KPITABLES_WAREHOUSE_PASSWORD";

/// The demo tables: name, file in the demo data directory, primary key.
const TABLES: &[(&str, &str, &str)] = &[
    ("stores", "stores.parquet", "store_id"),
    ("products", "products.parquet", "product_id"),
    ("customers", "customers.csv", "customer_id"),
    ("orders", "orders.parquet", "order_id"),
    ("order_lines", "order_lines.parquet", "line_id"),
    ("revenue_targets", "targets.csv", "target_id"),
    ("stock_counts", "stock_counts.csv", "count_id"),
    ("calendar", "calendar.csv", "day"),
];

/// The demo model's files, written to the model directory (sources and tables adapted).
const MODEL_FILES: &[(&str, &str)] = &[
    (
        "dimensions.toml",
        include_str!("../../semantic/demo/dimensions.toml"),
    ),
    (
        "metrics.toml",
        include_str!("../../semantic/demo/metrics.toml"),
    ),
    (
        "segments.toml",
        include_str!("../../semantic/demo/segments.toml"),
    ),
    ("views.toml", include_str!("../../semantic/demo/views.toml")),
    ("model.toml", include_str!("../../semantic/demo/model.toml")),
    (
        "access.toml",
        include_str!("../../semantic/demo/access.toml"),
    ),
    (
        "alerts.toml",
        include_str!("../../semantic/demo/alerts.toml"),
    ),
];
const DEMO_TABLES: &str = include_str!("../../semantic/demo/tables.toml");

/// Where to load the demo: the kind of warehouse and its URL split from its password.
#[derive(Clone)]
pub struct Target {
    /// PostgreSQL or MySQL protocol.
    pub kind: SourceKind,
    /// The URL without a password.
    pub url: String,
    /// The password given in the URL, if any.
    pub password: Option<String>,
    full_url: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .finish()
    }
}

impl Target {
    /// Read `postgres://user[:password]@host[:port]/database` or the same with
    /// `mysql://` / `mariadb://`.
    pub fn parse(url: &str) -> Result<Target> {
        let invalid = || {
            Error::Config(
                "--into takes postgres://user@host:port/database or mysql://user@host:port/database"
                    .into(),
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let kind = match scheme {
            "postgres" | "postgresql" => SourceKind::Postgres,
            "mysql" | "mariadb" => SourceKind::Mysql,
            _ => return Err(invalid()),
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (url, password) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, password)) => (
                    format!("{scheme}://{user}@{host}{tail}"),
                    Some(password.to_string()),
                ),
                None => (url.to_string(), None),
            },
            None => (url.to_string(), None),
        };
        let full_url = match scheme {
            "mariadb" => format!("mysql://{rest}"),
            _ => url_with(&url, password.as_deref(), scheme),
        };
        Ok(Target {
            kind,
            url,
            password,
            full_url,
        })
    }
}

fn url_with(url: &str, password: Option<&str>, _scheme: &str) -> String {
    match password {
        None => url.to_string(),
        Some(p) => match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((user, host)) => format!("{scheme}://{user}:{p}@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
    }
}

/// Load the demo files of `data` into `target` and write the model to `model_out`.
/// `progress` receives one line per step.
pub async fn load(
    data: &Path,
    target: &Target,
    model_out: &Path,
    mut progress: impl FnMut(String),
) -> Result<()> {
    let ctx = SessionContext::new();
    for (name, file, _) in TABLES {
        let path = data.join(file);
        let path = path.to_string_lossy();
        let registered = if file.ends_with(".csv") {
            ctx.register_csv(*name, path.as_ref(), CsvReadOptions::new().has_header(true))
                .await
        } else {
            ctx.register_parquet(*name, path.as_ref(), ParquetReadOptions::default())
                .await
        };
        registered.map_err(Error::from)?;
    }
    match target.kind {
        SourceKind::Postgres => load_postgres(&ctx, target, &mut progress).await?,
        SourceKind::Mysql => load_mysql(&ctx, target, &mut progress).await?,
        SourceKind::Files => return Err(Error::Internal("not a warehouse".into())),
    }
    write_model(target, model_out)?;
    progress(format!("model written to {}", model_out.display()));
    Ok(())
}

fn source_error(target: &Target, e: impl std::fmt::Display) -> Error {
    Error::Source {
        source_name: target.url.clone(),
        failure: crate::error::SourceFailure::Connect(e.to_string()),
    }
}

async fn load_postgres(
    ctx: &SessionContext,
    target: &Target,
    progress: &mut impl FnMut(String),
) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(&target.full_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| source_error(target, e))?;
    tokio::spawn(connection);
    let failed = |e: tokio_postgres::Error| source_error(target, e);
    for (name, _, key) in TABLES {
        let frame = ctx.table(*name).await.map_err(Error::from)?;
        let schema: SchemaRef = frame.schema().as_arrow().clone().into();
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("\"{}\" {}", f.name(), postgres_type(f.data_type())))
            .collect();
        client
            .batch_execute(&format!(
                "SET client_min_messages = warning; DROP TABLE IF EXISTS \"{name}\"; CREATE TABLE \"{name}\" ({})",
                columns.join(", ")
            ))
            .await
            .map_err(failed)?;
        let sink = client
            .copy_in(&format!("COPY \"{name}\" FROM STDIN"))
            .await
            .map_err(failed)?;
        futures::pin_mut!(sink);
        let mut stream = frame.execute_stream().await.map_err(Error::from)?;
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Error::from)?;
            rows += batch.num_rows();
            sink.send(Bytes::from(copy_text(&batch)?))
                .await
                .map_err(failed)?;
        }
        sink.as_mut().finish().await.map_err(failed)?;
        let mut finish = format!("ALTER TABLE \"{name}\" ADD PRIMARY KEY (\"{key}\");");
        for column in indexed_columns(&schema, key) {
            finish.push_str(&format!(" CREATE INDEX ON \"{name}\" (\"{column}\");"));
        }
        finish.push_str(&format!(" ANALYZE \"{name}\""));
        client.batch_execute(&finish).await.map_err(failed)?;
        progress(format!("{name}: {rows} rows"));
    }
    Ok(())
}

async fn load_mysql(
    ctx: &SessionContext,
    target: &Target,
    progress: &mut impl FnMut(String),
) -> Result<()> {
    let opts =
        mysql_async::Opts::from_url(&target.full_url).map_err(|e| source_error(target, e))?;
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| source_error(target, e))?;
    let failed = |e: mysql_async::Error| source_error(target, e);
    conn.query_drop("SET time_zone = '+00:00'")
        .await
        .map_err(failed)?;
    for (name, _, key) in TABLES {
        let frame = ctx.table(*name).await.map_err(Error::from)?;
        let schema: SchemaRef = frame.schema().as_arrow().clone().into();
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("`{}` {}", f.name(), mysql_type(f.data_type())))
            .collect();
        conn.query_drop(format!("DROP TABLE IF EXISTS `{name}`"))
            .await
            .map_err(failed)?;
        conn.query_drop(format!(
            "CREATE TABLE `{name}` ({}, PRIMARY KEY (`{key}`)) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
            columns.join(", ")
        ))
        .await
        .map_err(failed)?;
        let mut stream = frame.execute_stream().await.map_err(Error::from)?;
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Error::from)?;
            rows += batch.num_rows();
            for chunk in insert_statements(name, &batch, 2000)? {
                conn.query_drop(chunk).await.map_err(failed)?;
            }
        }
        for column in indexed_columns(&schema, key) {
            conn.query_drop(format!(
                "CREATE INDEX `{name}_{column}` ON `{name}` (`{column}`)"
            ))
            .await
            .map_err(failed)?;
        }
        conn.query_drop(format!("ANALYZE TABLE `{name}`"))
            .await
            .map_err(failed)?;
        progress(format!("{name}: {rows} rows"));
    }
    conn.disconnect().await.map_err(failed)?;
    Ok(())
}

/// Columns a warehouse would index: foreign keys (`*_id` other than the primary key) and
/// dates.
fn indexed_columns<'a>(schema: &'a SchemaRef, key: &'a str) -> impl Iterator<Item = &'a str> {
    schema.fields().iter().filter_map(move |f| {
        let name = f.name().as_str();
        let wanted = (name.ends_with("_id") && name != key) || f.data_type() == &DataType::Date32;
        wanted.then_some(name)
    })
}

/// The PostgreSQL column type for an Arrow type of the demo files.
pub fn postgres_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        _ => "text".into(),
    }
}

/// The MySQL column type for an Arrow type of the demo files.
pub fn mysql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date32 => "DATE".into(),
        // An instant (kpitables' MySQL sessions run in UTC), read back as a timestamptz.
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP(6) NULL".into(),
        DataType::Timestamp(_, None) => "DATETIME(6)".into(),
        _ => "VARCHAR(255)".into(),
    }
}

fn formatters<'a>(
    batch: &'a RecordBatch,
    options: &'a FormatOptions<'a>,
) -> Result<Vec<ArrayFormatter<'a>>> {
    batch
        .columns()
        .iter()
        .map(|c| {
            ArrayFormatter::try_new(c.as_ref(), options).map_err(|e| Error::Engine(e.to_string()))
        })
        .collect()
}

/// How an instant is written for PostgreSQL (with its offset).
const INSTANT_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f%:z";
/// How an instant is written for MySQL: UTC wall-clock time (the loading session's zone).
const INSTANT_FORMAT_UTC: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// Rows of `batch` in PostgreSQL's COPY text format.
fn copy_text(batch: &RecordBatch) -> Result<Vec<u8>> {
    let options = FormatOptions::default().with_timestamp_tz_format(Some(INSTANT_FORMAT));
    let formatters = formatters(batch, &options)?;
    let mut out = String::with_capacity(batch.num_rows() * 64);
    for row in 0..batch.num_rows() {
        for (i, (column, format)) in batch.columns().iter().zip(&formatters).enumerate() {
            if i > 0 {
                out.push('\t');
            }
            if column.is_null(row) {
                out.push_str("\\N");
                continue;
            }
            for c in format.value(row).to_string().chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// Rows of `batch` as MySQL `INSERT` statements of at most `per_statement` rows.
fn insert_statements(
    table: &str,
    batch: &RecordBatch,
    per_statement: usize,
) -> Result<Vec<String>> {
    let options = FormatOptions::default().with_timestamp_tz_format(Some(INSTANT_FORMAT_UTC));
    let formatters = formatters(batch, &options)?;
    let mut statements = Vec::new();
    let mut start = 0;
    while start < batch.num_rows() {
        let end = (start + per_statement).min(batch.num_rows());
        let mut sql = format!("INSERT INTO `{table}` VALUES ");
        for row in start..end {
            if row > start {
                sql.push(',');
            }
            sql.push('(');
            for (i, (column, format)) in batch.columns().iter().zip(&formatters).enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                if column.is_null(row) {
                    sql.push_str("NULL");
                    continue;
                }
                let value = format.value(row).to_string();
                match column.data_type() {
                    DataType::Boolean => {
                        sql.push_str(if value == "true" { "TRUE" } else { "FALSE" })
                    }
                    t if t.is_numeric() => sql.push_str(&value),
                    _ => {
                        sql.push('\'');
                        for c in value.chars() {
                            match c {
                                '\'' => sql.push_str("''"),
                                '\\' => sql.push_str("\\\\"),
                                c => sql.push(c),
                            }
                        }
                        sql.push('\'');
                    }
                }
            }
            sql.push(')');
        }
        statements.push(sql);
        start = end;
    }
    Ok(statements)
}

/// The demo model with its tables on the warehouse.
fn write_model(target: &Target, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    };
    for (name, text) in MODEL_FILES {
        write(name, text)?;
    }
    let kind = match target.kind {
        SourceKind::Mysql => "mysql",
        _ => "postgres",
    };
    let password = if target.password.is_some() {
        format!("password_env = \"{PASSWORD_ENV}\"\n")
    } else {
        String::new()
    };
    write(
        "sources.toml",
        &format!(
            "# The demo data, loaded by `kpitables demo --into`.\n[[sources]]\nname = \"warehouse\"\nkind = \"{kind}\"\nurl = \"{}\"\n{password}description = \"Retail demo data in a {kind} warehouse\"\n",
            target.url
        ),
    )?;
    let tables: String = DEMO_TABLES
        .lines()
        .filter(|l| !l.trim_start().starts_with("file = "))
        .map(|l| {
            if l.trim_start().starts_with("source = ") {
                "source = \"warehouse\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write("tables.toml", &(tables + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_split_from_the_url() {
        let t = Target::parse("postgres://kp:s3cret@db.example:5432/shop").unwrap();
        assert_eq!(t.kind, SourceKind::Postgres);
        assert_eq!(t.url, "postgres://kp@db.example:5432/shop");
        assert_eq!(t.password.as_deref(), Some("s3cret"));
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = Target::parse("mariadb://root@127.0.0.1:3306/demo").unwrap();
        assert_eq!(t.kind, SourceKind::Mysql);
        assert!(t.password.is_none());
        assert!(Target::parse("oracle://x@y/z").is_err());
    }

    #[test]
    fn copy_text_escapes_and_marks_nulls() {
        use datafusion::arrow::array::StringArray;
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(vec![Some("a\tb\\c"), None])) as _,
        )])
        .unwrap();
        assert_eq!(
            String::from_utf8(copy_text(&batch).unwrap()).unwrap(),
            "a\\tb\\\\c\n\\N\n"
        );
        let sql = insert_statements("t", &batch, 10).unwrap();
        assert_eq!(
            sql,
            vec!["INSERT INTO `t` VALUES ('a\tb\\\\c'),(NULL)".to_string()]
        );
    }
}
