//! Parse → [`Prepared`]: a statement classified and, when it is a query, planned by the
//! engine (once per Parse; planned again at execution if the model was reloaded since).

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use pgwire::api::ClientInfo;

use super::objects;

use super::objects::SessionObjects;
use crate::engine::plan_cache::CacheUse;
use crate::engine::{Engine, QueryPlan};
use crate::error::{Error, Result};
use crate::session::Session;
use crate::sql::session_values::SessionFacts;
use crate::sql::{Command, FetchCount};

/// A statement after Parse: planned once, executed on every Bind/Execute.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A query, planned.
    Query(Arc<QueryPlan>),
    /// EXPLAIN of a query.
    Explain {
        /// The query, planned.
        plan: Arc<QueryPlan>,
        /// What the plan cache did for it.
        cache: CacheUse,
    },
    /// DECLARE of a cursor over a planned query.
    Declare {
        /// Cursor name.
        name: String,
        /// The cursor's query.
        plan: Arc<QueryPlan>,
        /// WITH HOLD.
        hold: bool,
    },
    /// FETCH from an open cursor, whose row schema is known at Parse.
    Fetch {
        /// Cursor name.
        name: String,
        /// How many rows.
        count: FetchCount,
        /// The cursor's row schema.
        schema: SchemaRef,
    },
    /// CREATE TEMP TABLE AS / SELECT INTO TEMP / INSERT into a temporary table, with its
    /// source query planned (and run with the portal's parameters).
    TempWrite {
        /// The statement.
        command: Command,
        /// Its source query.
        plan: Arc<QueryPlan>,
    },
    /// COPY ... TO STDOUT of a planned query.
    CopyOut {
        /// The query whose rows are copied.
        plan: Arc<QueryPlan>,
        /// How they are written.
        options: crate::sql::CopyOptions,
    },
    /// Anything else.
    Command(Command),
}

/// `plan` as the current engine has it (planned again when the model was reloaded since
/// the statement was prepared).
pub(super) async fn current<C: ClientInfo>(
    engine: &Engine,
    client: &C,
    session: &Session,
    plan: &Arc<QueryPlan>,
) -> Result<Arc<QueryPlan>> {
    let objects = objects(client);
    let facts = SessionFacts {
        session,
        database: engine.database(),
        temp_tables: objects.temp.provider()?,
    };
    engine.current_plan(plan, &facts).await
}

pub(super) async fn prepare(
    engine: &Engine,
    session: &Session,
    objects: &SessionObjects,
    command: Command,
) -> Result<Prepared> {
    let facts = SessionFacts {
        session,
        database: engine.database(),
        temp_tables: objects.temp.provider()?,
    };
    Ok(match command {
        Command::Query(statement) => Prepared::Query(engine.plan(*statement, &facts).await?),
        Command::CopyOut(copy) => {
            let crate::sql::CopyOut { query, options } = *copy;
            let plan = engine.plan(*query, &facts).await?;
            if let crate::sql::ForceQuote::Columns(names) = &options.force_quote {
                let schema = plan.schema();
                if let Some(missing) = names
                    .iter()
                    .find(|n| schema.fields().iter().all(|f| f.name() != *n))
                {
                    return Err(Error::Syntax(format!(
                        "FORCE_QUOTE column \"{missing}\" not referenced by COPY"
                    )));
                }
            }
            Prepared::CopyOut { plan, options }
        }
        Command::Explain(statement) => {
            let (plan, cache) = engine.plan_and_tell(*statement, &facts).await?;
            Prepared::Explain { plan, cache }
        }
        Command::Declare { name, query, hold } => Prepared::Declare {
            name,
            plan: engine.plan(*query, &facts).await?,
            hold,
        },
        Command::Fetch {
            name,
            count,
            skip: false,
        } => Prepared::Fetch {
            schema: objects.cursor_schema(&name).await?,
            name,
            count,
        },
        Command::Execute { name, params } => {
            let statement = bind_parameters(objects.prepared(&name)?, &name, &params)?;
            Prepared::Query(engine.plan(statement, &facts).await?)
        }
        Command::Prepare { name, query } => {
            // Planned now so that a bad query fails at PREPARE, as in PostgreSQL;
            // EXECUTE plans it again with the values in place.
            engine.plan((*query).clone(), &facts).await?;
            Prepared::Command(Command::Prepare { name, query })
        }
        Command::Insert {
            ref name,
            ref source,
            ..
        } => {
            if !objects.temp.contains(name) {
                return Err(Error::ReadOnly("INSERT".into()));
            }
            let plan = engine.plan((**source).clone(), &facts).await?;
            Prepared::TempWrite { command, plan }
        }
        Command::CreateTemp {
            query: Some(ref query),
            ..
        } => {
            let plan = engine.plan((**query).clone(), &facts).await?;
            Prepared::TempWrite { command, plan }
        }
        other => Prepared::Command(other),
    })
}

/// `EXECUTE name (values)`: the prepared statement with its `$n` replaced by the values.
fn bind_parameters(
    mut statement: datafusion::sql::sqlparser::ast::Statement,
    name: &str,
    params: &[datafusion::sql::sqlparser::ast::Expr],
) -> Result<datafusion::sql::sqlparser::ast::Statement> {
    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
    use std::ops::ControlFlow;
    let mut wanted = 0usize;
    let outcome = visit_expressions_mut(&mut statement, |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &v.value
        {
            let Some(index) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                return ControlFlow::Break(Error::Syntax(format!("invalid parameter {p}")));
            };
            wanted = wanted.max(index);
            match index.checked_sub(1).and_then(|i| params.get(i)) {
                Some(value) => *expr = Expr::Nested(Box::new(value.clone())),
                None => {
                    return ControlFlow::Break(Error::Syntax(format!(
                        "wrong number of parameters for prepared statement \"{name}\": expected {index} or more, got {}",
                        params.len()
                    )));
                }
            }
        }
        ControlFlow::Continue(())
    });
    if let ControlFlow::Break(e) = outcome {
        return Err(e);
    }
    if params.len() > wanted {
        return Err(Error::Syntax(format!(
            "wrong number of parameters for prepared statement \"{name}\": expected {wanted}, got {}",
            params.len()
        )));
    }
    Ok(statement)
}
