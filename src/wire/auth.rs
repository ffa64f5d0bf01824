//! Startup and authentication: SCRAM-SHA-256 (or cleartext, only when the config allows
//! it), the database-name check, and creating the [`Session`] once the client is in.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::Config;
use crate::session::Session;

const SCRAM_ITERATIONS: usize = 4096;

/// Users and their credentials, prepared once at start-up.
#[derive(Debug)]
pub struct Credentials {
    /// user → (salt, salted password) for SCRAM.
    scram: HashMap<String, (Vec<u8>, Vec<u8>)>,
    /// user → password, for cleartext.
    plain: HashMap<String, String>,
}

impl Credentials {
    /// Derive SCRAM secrets for every user of `config`.
    pub fn new(config: &Config) -> Credentials {
        let mut scram = HashMap::new();
        let mut plain = HashMap::new();
        for user in &config.users {
            let salt: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
            let salted = gen_salted_password(&user.password, &salt, SCRAM_ITERATIONS);
            scram.insert(user.name.clone(), (salt, salted));
            plain.insert(user.name.clone(), user.password.clone());
        }
        Credentials { scram, plain }
    }
}

fn auth_failed(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "28P01".into(),
        format!("password authentication failed for user \"{user}\""),
    )))
}

#[derive(Debug)]
struct ScramSource(Arc<Credentials>);

#[async_trait]
impl AuthSource for ScramSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.0.scram.get(user) {
            Some((salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            None => Err(auth_failed(user)),
        }
    }
}

#[derive(Debug)]
struct PlainSource(Arc<Credentials>);

#[async_trait]
impl AuthSource for PlainSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.0.plain.get(user) {
            Some(p) => Ok(Password::new(None, p.as_bytes().to_vec())),
            None => Err(auth_failed(user)),
        }
    }
}

enum Inner {
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
    Plain(Box<CleartextPasswordAuthStartupHandler<PlainSource, DefaultServerParameterProvider>>),
}

/// The startup handler of every connection.
pub struct Startup {
    inner: Inner,
    database: String,
}

fn parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = "15.0".into();
    p.date_style = "ISO, MDY".into();
    p.time_zone = "UTC".into();
    p.is_superuser = false;
    p.default_transaction_read_only = true;
    p.search_path = "\"$user\", public".into();
    p
}

impl Startup {
    /// A startup handler for `config`, registering connections with `manager` (cancel).
    pub fn new(
        config: &Config,
        credentials: Arc<Credentials>,
        manager: Arc<ConnectionManager>,
    ) -> Startup {
        let inner = if config.allow_cleartext_passwords {
            Inner::Plain(Box::new(
                CleartextPasswordAuthStartupHandler::new(PlainSource(credentials), parameters())
                    .with_connection_manager(manager),
            ))
        } else {
            let mut scram = ScramAuth::new(Arc::new(ScramSource(credentials)));
            scram.set_iterations(SCRAM_ITERATIONS);
            Inner::Scram(Box::new(
                SASLAuthStartupHandler::new(Arc::new(parameters()))
                    .with_scram(scram)
                    .with_connection_manager(manager),
            ))
        };
        Startup {
            inner,
            database: config.database.clone(),
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut startup_parameters = Vec::new();
        if let PgWireFrontendMessage::Startup(startup) = &message {
            let user = startup.parameters.get("user").cloned().unwrap_or_default();
            let database = startup
                .parameters
                .get("database")
                .cloned()
                .unwrap_or_else(|| user.clone());
            if database != self.database {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "3D000".into(),
                    format!("database \"{database}\" does not exist"),
                ))));
            }
            startup_parameters = startup
                .parameters
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "user" | "database" | "options" | "replication")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        let outcome = match &self.inner {
            Inner::Scram(h) => h.on_startup(client, message).await,
            Inner::Plain(h) => h.on_startup(client, message).await,
        };
        if let Err(e) = outcome {
            // Name the user, as PostgreSQL does (pgwire's message leaves it empty).
            if matches!(e, PgWireError::InvalidPassword(_)) {
                let user = client
                    .metadata()
                    .get(pgwire::api::METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                return Err(auth_failed(&user));
            }
            return Err(e);
        }
        if !startup_parameters.is_empty() {
            client
                .session_extensions()
                .insert(StartupParameters(startup_parameters));
        }
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery)
            && client.session_extensions().get::<Session>().is_none()
        {
            let user = client
                .metadata()
                .get(pgwire::api::METADATA_USER)
                .cloned()
                .unwrap_or_default();
            let (pid, _) = client.pid_and_secret_key();
            let params = client
                .session_extensions()
                .get::<StartupParameters>()
                .map(|p| p.0.clone())
                .unwrap_or_default();
            tracing::info!(user = %user, pid, "authenticated");
            client
                .session_extensions()
                .insert(Session::new(user, pid, &params));
        }
        Ok(())
    }
}

/// Parameters the client sent in its startup message (application_name, ...).
struct StartupParameters(Vec<(String, String)>);
