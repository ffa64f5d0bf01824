//! Who is running what: `pg_stat_activity` from kpitables' own sessions, and
//! `pg_cancel_backend(pid)` / `pg_terminate_backend(pid)`. As in PostgreSQL, a user sees
//! and signals its own sessions; an administrator (`admin = true` in the server
//! configuration) sees and signals every session. Cancelling a statement also cancels
//! what it runs in a warehouse (its stream is dropped).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use crate::bind::Semantics;
use crate::catalog::live::{Live, LiveSource, LiveTable, Reader};
use crate::catalog::pg_relations;
use crate::catalog::{CatalogTable, DATABASE_OID, Identity, OWNER_OID};
use crate::error::Error;
use crate::server::activity::{Connections, Ending};

/// `pg_stat_activity` and the backend functions over the server's sessions.
pub struct Sessions(pub Arc<Connections>);

impl LiveSource for Sessions {
    fn tables(
        &self,
        _: &Semantics,
        reader: &Reader,
        identity: &Identity,
    ) -> crate::error::Result<Vec<Live>> {
        let table = activity_table(Arc::clone(&self.0), reader.clone(), identity)?;
        Ok(vec![("pg_catalog", "pg_stat_activity", table)])
    }

    fn register_functions(&self, ctx: &SessionContext, reader: &Reader) {
        register_functions(ctx, &self.0, reader);
    }
}

fn at(time: &chrono::DateTime<chrono::Utc>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(time.timestamp_micros()), Some("UTC".into()))
}

fn text(v: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(v.into()))
}

/// `pg_catalog.pg_stat_activity` as `reader` may see it (its own sessions, or every one).
fn activity_table(
    connections: Arc<Connections>,
    reader: Reader,
    identity: &Identity,
) -> crate::error::Result<Arc<dyn TableProvider>> {
    let shape = pg_relations::shape("pg_catalog", "pg_stat_activity")?;
    let columns = shape.columns.clone();
    let empty = CatalogTable::new("pg_catalog", "pg_stat_activity", columns);
    let database = identity.database.clone();
    let roles = identity.roles.clone();
    let table = LiveTable::new(empty, move |table| {
        let mut rows = CatalogTable::new(
            "pg_catalog",
            "pg_stat_activity",
            vec![
                ("datid", DataType::Int64),
                ("datname", DataType::Utf8),
                ("pid", DataType::Int32),
                ("usesysid", DataType::Int64),
                ("usename", DataType::Utf8),
                ("application_name", DataType::Utf8),
                ("client_addr", DataType::Utf8),
                ("client_port", DataType::Int32),
                ("backend_start", DataType::Utf8),
                ("xact_start", DataType::Utf8),
                ("query_start", DataType::Utf8),
                ("state_change", DataType::Utf8),
                ("wait_event_type", DataType::Utf8),
                ("wait_event", DataType::Utf8),
                ("state", DataType::Utf8),
                ("query", DataType::Utf8),
                ("backend_type", DataType::Utf8),
            ],
        );
        for connection in connections.list() {
            let a = connection.activity();
            let logged_in = !a.user.is_empty();
            if !reader.admin && a.user != reader.user {
                continue;
            }
            let role_oid = roles
                .iter()
                .position(|r| *r == a.user)
                .map_or(OWNER_OID, |i| 16_400 + i64::try_from(i).unwrap_or(0));
            rows.rows.push(vec![
                ScalarValue::Int64(Some(DATABASE_OID)),
                text(database.clone()),
                ScalarValue::Int32(Some(a.pid)),
                ScalarValue::Int64(logged_in.then_some(role_oid)),
                if logged_in {
                    text(a.user.clone())
                } else {
                    ScalarValue::Utf8(None)
                },
                text(a.application.clone()),
                text(a.client.ip().to_string()),
                ScalarValue::Int32(Some(i32::from(a.client.port()))),
                at(&a.backend_start),
                a.xact_start.as_ref().map_or(ScalarValue::Null, at),
                a.query_start.as_ref().map_or(ScalarValue::Null, at),
                at(&a.state_change),
                a.wait
                    .map_or(ScalarValue::Utf8(None), |w| text(w.event_type())),
                a.wait.map_or(ScalarValue::Utf8(None), |w| text(w.event())),
                text(a.state.name()),
                text(a.query.clone()),
                text("client backend"),
            ]);
        }
        // Typed as PostgreSQL's relation (timestamps as timestamptz, OIDs as oid).
        let typed: Vec<(&'static str, DataType)> = rows
            .columns
            .iter()
            .map(|(n, t)| {
                let shape_type = table
                    .columns
                    .iter()
                    .find(|(c, _)| c == n)
                    .map_or(t.clone(), |(_, t)| t.clone());
                (*n, shape_type)
            })
            .collect();
        for row in &rows.rows {
            let mut out = Vec::with_capacity(table.columns.len());
            for (column, data_type) in &table.columns {
                let value = typed
                    .iter()
                    .position(|(n, _)| n == column)
                    .and_then(|i| row.get(i))
                    .map(|v| {
                        if v.is_null() {
                            ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null)
                        } else {
                            v.cast_to(data_type).unwrap_or(ScalarValue::Null)
                        }
                    })
                    .unwrap_or_else(|| {
                        ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null)
                    });
                out.push(value);
            }
            table.rows.push(out);
        }
    })?;
    Ok(Arc::new(table))
}

/// Which signal a backend function sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Signal {
    Cancel,
    Terminate,
}

#[derive(Debug)]
struct Backend {
    name: &'static str,
    signal: Signal,
    signature: Signature,
    connections: Arc<Connections>,
    reader: Reader,
}

impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.reader.user == other.reader.user
    }
}
impl Eq for Backend {}
impl Hash for Backend {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.reader.user.hash(state);
    }
}

impl Backend {
    fn signal(&self, pid: i64) -> DfResult<bool> {
        let Some(connection) = i32::try_from(pid)
            .ok()
            .and_then(|p| self.connections.by_pid(p))
        else {
            tracing::warn!(pid, "PID is not a kpitables session");
            return Ok(false);
        };
        let owner = connection.activity().user;
        if !self.reader.admin && owner != self.reader.user {
            let what = match self.signal {
                Signal::Cancel => "cancel query",
                Signal::Terminate => "terminate process",
            };
            return Err(DataFusionError::External(Box::new(Error::Denied {
                kind: crate::error::DenialKind::Permission,
                message: format!("permission denied to {what}"),
                hint: format!(
                    "only its own user ({owner}) or an administrator (admin = true in the server configuration) may signal this session"
                ),
            })));
        }
        tracing::info!(pid, by = %self.reader.user, signal = ?self.signal, "signalling a session");
        Ok(match self.signal {
            Signal::Cancel => connection.cancel(),
            Signal::Terminate => {
                connection.end(Ending::Administrator);
                true
            }
        })
    }
}

impl ScalarUDFImpl for Backend {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(pids) = args.args.first() else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
        };
        let pids = pids.to_array(args.number_rows)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let pid = match ScalarValue::try_from_array(&pids, row)?.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(p)) => Some(p),
                _ => None,
            };
            out.push(match pid {
                Some(p) => Some(self.signal(p)?),
                None => None,
            });
        }
        Ok(ColumnarValue::Array(Arc::new(
            datafusion::arrow::array::BooleanArray::from(out),
        )))
    }
}

/// Register `pg_cancel_backend(pid)` and `pg_terminate_backend(pid [, timeout])` in `ctx`
/// for `reader`.
fn register_functions(ctx: &SessionContext, connections: &Arc<Connections>, reader: &Reader) {
    let integer = |n: usize| {
        let one = [DataType::Int32, DataType::Int64];
        let mut shapes = Vec::new();
        for t in one {
            let mut args = vec![t.clone()];
            if n == 2 {
                args.push(DataType::Int64);
            }
            shapes.push(TypeSignature::Exact(args));
        }
        shapes
    };
    for (name, signal, arities) in [
        ("pg_cancel_backend", Signal::Cancel, vec![1]),
        ("pg_terminate_backend", Signal::Terminate, vec![1, 2]),
    ] {
        let signature = Signature::one_of(
            arities.into_iter().flat_map(integer).collect(),
            Volatility::Volatile,
        );
        ctx.register_udf(ScalarUDF::from(Backend {
            name,
            signal,
            signature,
            connections: Arc::clone(connections),
            reader: reader.clone(),
        }));
    }
}
