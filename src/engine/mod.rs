//! The pipeline in one place: model → bound semantics → catalog; and per statement,
//! compat → semantic rewrite → plan → execute.
//!
//! ```text
//! SQL text ─ sql::parse ─ sql::classify ─┬─ Query ─ sql::compat ─ rewrite ─ DataFusion plan ─ execute ─ Arrow batches
//!                                        └─ SET/SHOW/BEGIN/... (answered by the wire layer from the session)
//! ```
//!
//! Invariant: the engine is shared by all connections and holds no per-connection state;
//! every per-session fact arrives as an argument.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    SchemaProvider,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_federation::FederatedQueryPlanner;

mod column_types;
mod execute;
pub mod plan_cache;
mod row_by_row;
mod statement_errors;

use column_types::infer_types;
pub use execute::pushed_down;
use statement_errors::{denied_metric, outer_view_alias, outer_view_column, with_argument_types};

use crate::access;
use crate::bind::{self, Semantics};
use crate::catalog::live::{LiveSource, Reader};
use crate::catalog::{self, Identity};
use crate::config::User;
use crate::error::{Error, Result};
use crate::model;
use crate::rewrite::{self, RewriteContext, RewriteReport};
use crate::sources;
use crate::sql::compat;
use crate::sql::session_values::{SessionFacts, SessionRead};
use plan_cache::{CacheUse, PlanCache};

/// A statement planned and ready to execute (possibly many times, with parameters).
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// The engine's logical plan, with `$n` placeholders.
    pub plan: LogicalPlan,
    /// The statement after the semantic rewrite, as SQL (for EXPLAIN and tracing).
    pub rewritten_sql: String,
    /// Views and metrics used.
    pub report: RewriteReport,
    /// Inferred type of each parameter `$1..$n` (None when unknown).
    pub param_types: Vec<Option<DataType>>,
    /// For each result column read straight from a view: the view's OID and the column's
    /// number (sent in RowDescription, as PostgreSQL does for a table column).
    pub origins: Vec<Option<rewrite::ColumnOrigin>>,
    /// The engine generation that planned it (see [`Engine::current_plan`]).
    pub generation: u64,
    /// The statement as the client sent it, to plan again on a reloaded model.
    pub statement: Option<Box<Statement>>,
    /// The session facts the compatibility rules wrote into the statement (a cached plan
    /// serves another session only when they hold for it).
    pub session_reads: Vec<SessionRead>,
    /// Why the plan may not be cached, when it may not.
    pub uncacheable: Option<&'static str>,
    /// Whether optimizing the plan again gives the same plan (no function whose value
    /// depends on the time of execution), decided once when it is planned.
    optimizes_once: bool,
    /// The optimized plan, once executed without parameters, when `optimizes_once`.
    /// Shared by every copy of the plan (and so by every hit of the plan cache).
    optimized: Arc<std::sync::OnceLock<LogicalPlan>>,
}

/// Field metadata key for the OID of the view a result column comes from.
pub const TABLE_OID_KEY: &str = "kpitables.table_oid";
/// Field metadata key for the column number of a result column in its view.
pub const COLUMN_NUMBER_KEY: &str = "kpitables.column_number";

impl QueryPlan {
    /// The number of result columns (without building [`QueryPlan::schema`]).
    pub fn column_count(&self) -> usize {
        self.plan.schema().fields().len()
    }

    /// Result columns.
    pub fn schema(&self) -> SchemaRef {
        let schema = self.plan.schema().as_arrow();
        let fields = schema.fields().iter().enumerate().map(|(i, f)| {
            let name = crate::sql::naming::output_column_name(f.name());
            let origin = self.origins.get(i).copied().flatten();
            if name == f.name() && origin.is_none() {
                return f.clone();
            }
            let mut field = f.as_ref().clone().with_name(name);
            if let Some(origin) = origin {
                let mut metadata = field.metadata().clone();
                metadata.insert(TABLE_OID_KEY.into(), origin.table_oid.to_string());
                metadata.insert(COLUMN_NUMBER_KEY.into(), origin.column_number.to_string());
                field = field.with_metadata(metadata);
            }
            Arc::new(field)
        });
        Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
            fields.collect::<Vec<_>>(),
            schema.metadata().clone(),
        ))
    }
}

/// The shared query engine over one model.
pub struct Engine {
    ctx: SessionContext,
    semantics: Arc<Semantics>,
    catalog_tables: HashSet<(String, String)>,
    database: String,
    has_warehouse: bool,
    identity: Identity,
    /// What each configured user sees (see [`crate::access`]).
    scopes: HashMap<String, Arc<Scope>>,
    /// What a user without a scope sees: the model for no roles.
    default_scope: Arc<Scope>,
    /// The server's state shown as live catalog tables in every scope.
    live: Vec<Arc<dyn LiveSource>>,
    /// Distinguishes engines opened by one process (each reload opens a new one).
    generation: u64,
    /// The warehouse sources (readiness, pool metrics).
    warehouses: Vec<Arc<dyn sources::Probe>>,
    /// Memory one query may use (embedded execution).
    query_memory: Option<usize>,
    /// Plans of this engine's statements (see [`plan_cache`]).
    plans: PlanCache,
}

/// The generation of the next engine opened.
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The model as one user may see it, and a session context whose catalogs (and catalog
/// functions) are built from it; tables and functions are the engine's.
struct Scope {
    semantics: Arc<Semantics>,
    ctx: SessionContext,
}

impl Scope {
    fn new(
        engine_ctx: &SessionContext,
        semantics: &Semantics,
        user: &User,
        identity: &Identity,
        live: &[Arc<dyn LiveSource>],
    ) -> Result<Scope> {
        let restricted = access::restrict(semantics, user);
        let schemas = catalog::schemas(&restricted, identity)?;
        let reader = Reader {
            user: user.name.clone(),
            admin: user.admin,
        };
        for source in live {
            for (schema, name, table) in source.tables(&restricted, &reader, identity)? {
                let provider = if schema == "pg_catalog" {
                    &schemas.pg_catalog
                } else {
                    &schemas.kp
                };
                provider.deregister_table(name)?;
                provider.register_table(name.to_string(), table)?;
            }
        }
        let default = engine_ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        let ctx = with_schemas(
            engine_ctx,
            vec![
                (
                    default.clone(),
                    "pg_catalog".into(),
                    schemas.pg_catalog as _,
                ),
                (
                    default.clone(),
                    "information_schema".into(),
                    schemas.information_schema as _,
                ),
                (default, catalog::kp::SCHEMA.into(), schemas.kp as _),
            ],
        )?;
        catalog::functions::register(&ctx, &restricted);
        catalog::register_sleep(&ctx);
        for source in live {
            source.register_functions(&ctx, &reader);
        }
        Ok(Scope {
            semantics: Arc::new(restricted),
            ctx,
        })
    }
}

/// A session context over `base`'s state whose catalogs are copies of `base`'s, with
/// each `(catalog, schema, provider)` of `schemas` put in place (or added). `base` is
/// never changed.
fn with_schemas(
    base: &SessionContext,
    schemas: Vec<(String, String, Arc<dyn SchemaProvider>)>,
) -> Result<SessionContext> {
    let shared = base.state();
    let catalogs = Arc::new(MemoryCatalogProviderList::new());
    for name in shared.catalog_list().catalog_names() {
        let Some(catalog) = shared.catalog_list().catalog(&name) else {
            continue;
        };
        let copy = Arc::new(MemoryCatalogProvider::new());
        for schema in catalog.schema_names() {
            if let Some(provider) = catalog.schema(&schema) {
                copy.register_schema(&schema, provider)?;
            }
        }
        for (c, schema, provider) in &schemas {
            if *c == name {
                copy.register_schema(schema, Arc::clone(provider))?;
            }
        }
        catalogs.register_catalog(name, copy);
    }
    let state = SessionStateBuilder::new_from_existing(shared)
        .with_catalog_list(catalogs)
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// A user with no roles (what a user not configured sees).
fn nobody() -> User {
    User {
        name: String::new(),
        password: String::new(),
        roles: Vec::new(),
        attributes: Default::default(),
        admin: false,
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("database", &self.database)
            .finish()
    }
}

impl Engine {
    /// Load, validate and bind the model in `model_dir` (its `*.toml` files), and build
    /// its catalogs.
    pub async fn open(model_dir: &Path, identity: Identity) -> Result<Engine> {
        let model = model::load::load_dir(model_dir)?;
        Engine::open_model(model, model_dir, identity).await
    }

    /// Validate and bind the model of `texts` (the files of `model_dir`, which file
    /// sources' paths are relative to), and build its catalogs.
    pub async fn open_texts(
        texts: model::load::SourceTexts,
        model_dir: &Path,
        identity: Identity,
    ) -> Result<Engine> {
        let model = model::load::load_dir_texts(model_dir, texts)?;
        Engine::open_model(model, model_dir, identity).await
    }

    async fn open_model(
        model: model::Model,
        model_dir: &Path,
        identity: Identity,
    ) -> Result<Engine> {
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema("kpitables", "public");
        // Warehouse tables are federated: the federation rule cuts out the part of a plan
        // each source can run and the federated planner sends it there as SQL. With files
        // only, the rule finds nothing to do.
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_optimizer_rules({
                // Integer arithmetic checked first, so that constant folding is too.
                let mut rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
                    vec![Arc::new(crate::operators::CheckedIntegers::default())];
                rules.extend(sources::pushdown::optimizer_rules(
                    sources::warehouse_tables(&model),
                ));
                rules
            })
            .with_query_planner(Arc::new(FederatedQueryPlanner::new()))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(
            crate::time_zone::LocalTime::default(),
        ));
        // PostgreSQL's operators and aggregates before anything is planned: the views'
        // column types are inferred with them.
        crate::operators::register(&ctx);
        crate::aggregates::register(&ctx);
        crate::percentiles::register(&ctx);
        let has_warehouse = model.sources.iter().any(|s| s.kind.is_warehouse());
        let registered = sources::register_tables(&ctx, &model, model_dir).await?;
        let mut semantics = bind::bind(model, &registered.schemas)?;
        let empty = HashSet::new();
        infer_types(&ctx, &mut semantics, &empty, &identity.database).await?;
        let mut catalog_tables = catalog::register(&ctx, &semantics, &identity)?;
        // Live `kp` tables, registered per user scope (see `Scope::new`).
        for table in catalog::kp::LIVE_TABLES {
            catalog_tables.insert((catalog::kp::SCHEMA.to_string(), table.to_string()));
        }
        catalog::functions::register(&ctx, &semantics);
        let default_scope = Arc::new(Scope::new(&ctx, &semantics, &nobody(), &identity, &[])?);
        Ok(Engine {
            ctx,
            semantics: Arc::new(semantics),
            catalog_tables,
            database: identity.database.clone(),
            has_warehouse,
            identity,
            scopes: HashMap::new(),
            default_scope,
            live: Vec::new(),
            generation: NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            warehouses: registered.warehouses,
            query_memory: None,
            plans: PlanCache::new(plan_cache::DEFAULT_ENTRIES),
        })
    }

    /// Keep up to `entries` plans (0: plan every statement anew).
    pub fn with_plan_cache(mut self, entries: usize) -> Engine {
        self.plans = PlanCache::new(entries);
        self
    }

    /// Plans kept in the plan cache.
    pub fn cached_plans(&self) -> usize {
        self.plans.len()
    }

    /// Show `source`'s live tables (and functions) in the scopes prepared after this
    /// call.
    pub fn with_live(mut self, source: Arc<dyn LiveSource>) -> Engine {
        self.live.push(source);
        self
    }

    /// Whether `user` is a configured user (has a scope of its own).
    pub fn has_user(&self, user: &str) -> bool {
        self.scopes.contains_key(user)
    }

    /// Prepare what each of `users` sees (the model restricted by the access rules for
    /// their roles and attributes). A user not given here sees the model for no roles.
    pub fn with_users(mut self, users: &[User]) -> Result<Engine> {
        self.default_scope = Arc::new(Scope::new(
            &self.ctx,
            &self.semantics,
            &nobody(),
            &self.identity,
            &self.live,
        )?);
        for user in users {
            let scope = Scope::new(&self.ctx, &self.semantics, user, &self.identity, &self.live)?;
            self.scopes.insert(user.name.clone(), Arc::new(scope));
        }
        Ok(self)
    }

    fn scope(&self, user: &str) -> &Arc<Scope> {
        self.scopes.get(user).unwrap_or(&self.default_scope)
    }

    /// The model as `user` may see it.
    pub fn semantics_for(&self, user: &str) -> &Semantics {
        &self.scope(user).semantics
    }

    /// The bound model.
    pub fn semantics(&self) -> &Semantics {
        &self.semantics
    }

    /// The database name served.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The warehouse sources of the model.
    pub fn warehouses(&self) -> &[Arc<dyn sources::Probe>] {
        &self.warehouses
    }

    /// Limit each query to `bytes` of memory on the embedded engine (53200 beyond).
    pub fn with_query_memory(mut self, bytes: Option<usize>) -> Engine {
        self.query_memory = bytes;
        self
    }

    /// `plan` itself when this engine planned it; else (the model was reloaded since the
    /// statement was prepared) the same statement planned on this engine, which must
    /// give the same result columns, as PostgreSQL requires of a cached plan.
    pub async fn current_plan(
        &self,
        plan: &Arc<QueryPlan>,
        facts: &SessionFacts<'_>,
    ) -> Result<Arc<QueryPlan>> {
        let Some(statement) = plan
            .statement
            .as_ref()
            .filter(|_| plan.generation != self.generation)
        else {
            return Ok(Arc::clone(plan));
        };
        let fresh = self.plan((**statement).clone(), facts).await?;
        let columns = |p: &QueryPlan| -> Vec<(String, DataType)> {
            p.schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect()
        };
        if columns(&fresh) != columns(plan) || fresh.param_types.len() != plan.param_types.len() {
            return Err(Error::Unsupported {
                message: "cached plan must not change result type".into(),
                hint: Some(
                    "the model was reloaded since the statement was prepared; prepare it again"
                        .into(),
                ),
            });
        }
        Ok(fresh)
    }

    /// Compat rules, semantic rewrite and planning of one query statement, or the plan
    /// the plan cache kept for it.
    pub async fn plan(
        &self,
        statement: Statement,
        facts: &SessionFacts<'_>,
    ) -> Result<Arc<QueryPlan>> {
        Ok(self.plan_and_tell(statement, facts).await?.0)
    }

    /// [`Engine::plan`], also telling what the plan cache did.
    pub async fn plan_and_tell(
        &self,
        statement: Statement,
        facts: &SessionFacts<'_>,
    ) -> Result<(Arc<QueryPlan>, CacheUse)> {
        let telemetry = crate::telemetry::global();
        let over_temp_tables = facts.temp_tables.is_some();
        if !over_temp_tables && let Some(plan) = self.plans.get(facts.session, &statement) {
            telemetry.plan_cache(CacheUse::Hit.outcome());
            return Ok((plan, CacheUse::Hit));
        }
        let plan = Arc::new(self.plan_uncached(statement, facts).await?);
        let cache_use = match plan.uncacheable {
            Some(why) => CacheUse::Uncacheable(why),
            None if over_temp_tables => CacheUse::Uncacheable("the session has temporary tables"),
            None if !self.plans.enabled() => CacheUse::Uncacheable("plan_cache_entries = 0"),
            None if plan.rewritten_sql.len() > plan_cache::MAX_STATEMENT_BYTES => {
                CacheUse::Uncacheable("the statement is over 64 kB")
            }
            None => {
                if let Some(statement) = &plan.statement {
                    self.plans.put(facts.session, statement, Arc::clone(&plan));
                }
                CacheUse::Miss
            }
        };
        telemetry.plan_cache(cache_use.outcome());
        Ok((plan, cache_use))
    }

    /// Compat rules, semantic rewrite and planning of one query statement, without the
    /// plan cache (what a miss costs).
    pub async fn plan_uncached(
        &self,
        statement: Statement,
        facts: &SessionFacts<'_>,
    ) -> Result<QueryPlan> {
        let original = Box::new(statement.clone());
        let started = std::time::Instant::now();
        let planned = self.plan_statement(statement, facts).await;
        crate::telemetry::global().planned(started.elapsed());
        let mut plan = planned?;
        plan.generation = self.generation;
        plan.statement = Some(original);
        Ok(plan)
    }

    async fn plan_statement(
        &self,
        mut statement: Statement,
        facts: &SessionFacts<'_>,
    ) -> Result<QueryPlan> {
        let session_reads = compat::apply(&mut statement, facts);
        compat::check_supported(&statement)?;
        let temp_names: HashSet<String> = facts
            .temp_tables
            .as_ref()
            .map(|t| t.table_names().into_iter().collect())
            .unwrap_or_default();
        let scope = self.scope(&facts.session.user);
        let cx = RewriteContext {
            semantics: &scope.semantics,
            catalog_tables: &self.catalog_tables,
            database: &self.database,
            temp_tables: &temp_names,
            time_zone: facts.session.time_zone(),
        };
        let overlay;
        let ctx = match &facts.temp_tables {
            None => &scope.ctx,
            Some(temp) => {
                // This statement only: the user's catalogs plus the session's temporary
                // tables. The shared catalog is never changed.
                overlay = with_schemas(
                    &scope.ctx,
                    vec![(
                        "kpitables".to_string(),
                        crate::temp::TEMP_SCHEMA.to_string(),
                        Arc::clone(temp),
                    )],
                )?;
                &overlay
            }
        };
        let mut plan = match plan_statement(ctx, statement.clone(), &cx).await {
            Err(e) if row_by_row::applies_to(&e) && !row_by_row::reads_view(&statement, &cx) => {
                let mut plan =
                    row_by_row::plan(ctx, &statement, &cx)
                        .await
                        .map_err(|fallback| {
                            tracing::debug!(error = %fallback, "row-by-row answer failed");
                            e
                        })?;
                plan.uncacheable = Some("answered row by row while planning");
                plan
            }
            other => other?,
        };
        plan.session_reads = session_reads;
        Ok(plan)
    }
}

async fn plan_statement(
    ctx: &SessionContext,
    mut statement: Statement,
    cx: &RewriteContext<'_>,
) -> Result<QueryPlan> {
    let mut report = RewriteReport::default();
    let as_written = statement.clone();
    let origins = match &mut statement {
        Statement::Query(query) => {
            let origins = rewrite::column_origins(query, cx.semantics);
            rewrite::rewrite_query(query, cx, &mut report)
                .map_err(|e| denied_metric(e, cx))
                .map_err(|e| outer_view_alias(e, &as_written, cx))?;
            origins
        }
        _ => return Err(Error::Internal("only queries are planned".into())),
    };
    let rewritten_sql = statement.to_string();
    let state = ctx.state();
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await
        .map_err(|e| denied_metric(Error::from(e), cx))
        .map_err(|e| outer_view_column(e, &report, cx))
        .map_err(|e| outer_view_alias(e, &as_written, cx))
        .map_err(|e| with_argument_types(e, &as_written, cx))?;
    // The analyzer settles types the SQL planner leaves open (a UNION's columns take the
    // type of all branches, not of the first one's NULL), so the result columns sent in
    // RowDescription are the types the rows will have.
    let plan = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(|e| outer_view_column(Error::from(e), &report, cx))?;
    // Backstop for the read-only invariant: nothing but a query reaches the shared engine
    // (`SELECT INTO` would otherwise create a table every session sees).
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|_| Error::ReadOnly(plan.display().to_string()))?;
    let types = plan.get_parameter_types()?;
    let mut param_types = vec![None; types.len()];
    for (name, data_type) in types {
        let index: usize = name.trim_start_matches('$').parse().unwrap_or(0);
        if index >= 1 {
            if index > param_types.len() {
                param_types.resize(index, None);
            }
            param_types[index - 1] = data_type;
        }
    }
    let optimizes_once = execute::reoptimizes_the_same(&plan);
    Ok(QueryPlan {
        plan,
        rewritten_sql,
        report,
        param_types,
        origins,
        generation: 0,
        statement: None,
        session_reads: Vec::new(),
        uncacheable: None,
        optimizes_once,
        optimized: Arc::default(),
    })
}
