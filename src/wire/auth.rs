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
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, ServerParameterProvider,
    StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::{Config, TlsMode};
use crate::error::Error;
use crate::server::activity::Connections;
use crate::session::Session;
use crate::time_zone::TimeZone;

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
    super::user_error(Error::PasswordFailed(user.to_string()))
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
    Scram(Box<SASLAuthStartupHandler<Parameters>>),
    Plain(Box<CleartextPasswordAuthStartupHandler<PlainSource, Parameters>>),
}

/// The zone a session starts in unless the client names one: the served model's
/// default, read at each connection (a reload may change it).
pub type DefaultZone = Arc<dyn Fn() -> TimeZone + Send + Sync>;

/// The startup handler of every connection.
pub struct Startup {
    inner: Inner,
    database: String,
    time_zone: DefaultZone,
    connections: Arc<Connections>,
    tls: TlsMode,
    statement_timeout: Option<std::time::Duration>,
    max_statement_timeout: Option<std::time::Duration>,
}

/// The ParameterStatus values sent once the client is in: PostgreSQL's, with the
/// session's `TimeZone` (the client's startup `TimeZone` when it names a zone, else the
/// model's default).
struct Parameters {
    base: DefaultServerParameterProvider,
    time_zone: DefaultZone,
}

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut params = self.base.server_parameters(client)?;
        let time_zone = startup_settings(client.metadata())
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case("timezone"))
            .and_then(|(_, v)| TimeZone::parse(v))
            .unwrap_or_else(|| (self.time_zone)());
        params.insert("TimeZone".into(), time_zone.to_string());
        Some(params)
    }
}

fn parameters(time_zone: DefaultZone) -> Parameters {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = "15.0".into();
    p.date_style = "ISO, MDY".into();
    p.is_superuser = false;
    p.default_transaction_read_only = true;
    p.search_path = "\"$user\", public".into();
    Parameters { base: p, time_zone }
}

impl Startup {
    /// A startup handler for `config`, registering connections with `manager` (cancel);
    /// sessions start in `time_zone` (the model's default) unless the client names one.
    pub fn new(
        config: &Config,
        credentials: Arc<Credentials>,
        manager: Arc<ConnectionManager>,
        time_zone: DefaultZone,
        connections: Arc<Connections>,
    ) -> Startup {
        let inner = if config.allow_cleartext_passwords {
            Inner::Plain(Box::new(
                CleartextPasswordAuthStartupHandler::new(
                    PlainSource(credentials),
                    parameters(Arc::clone(&time_zone)),
                )
                .with_connection_manager(manager),
            ))
        } else {
            let mut scram = ScramAuth::new(Arc::new(ScramSource(credentials)));
            scram.set_iterations(SCRAM_ITERATIONS);
            Inner::Scram(Box::new(
                SASLAuthStartupHandler::new(Arc::new(parameters(Arc::clone(&time_zone))))
                    .with_scram(scram)
                    .with_connection_manager(manager),
            ))
        };
        Startup {
            inner,
            database: config.database.clone(),
            time_zone,
            connections,
            tls: config.tls.mode,
            statement_timeout: config.limits.statement_timeout,
            max_statement_timeout: config.limits.max_statement_timeout,
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
            if let Some(connection) = self.connections.by_peer(client.socket_addr()) {
                client
                    .session_extensions()
                    .insert(super::ConnectionRef(connection));
            }
            // Before any authentication work: a full server, a plaintext login where TLS
            // is required.
            self.connections.check_room().map_err(super::user_error)?;
            if self.tls == TlsMode::Require && !client.is_secure() {
                return Err(super::user_error(Error::TlsRequired { user, database }));
            }
            if database != self.database {
                return Err(super::user_error(Error::UnknownDatabase(database)));
            }
            startup_parameters = startup_settings(&startup.parameters);
        }
        if let (
            Inner::Scram(_),
            PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Raw(body)),
        ) = (&self.inner, &message)
            && client.session_extensions().get::<SaslStarted>().is_none()
        {
            // pgwire reads the first answer to AuthenticationSASL without checking its
            // length (and panics on a short one, such as a password sent in clear).
            sasl_initial_response(body)?;
            client.session_extensions().insert(SaslStarted);
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
            tracing::info!(user = %user, pid, tls = client.is_secure(), "authenticated");
            if let Some(connection) = client.session_extensions().get::<super::ConnectionRef>() {
                let application = params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_default();
                connection
                    .0
                    .logged_in(&user, pid, application, client.is_secure());
            }
            client.session_extensions().insert(
                Session::new(user, pid, (self.time_zone)(), &params)
                    .with_statement_timeouts(self.statement_timeout, self.max_statement_timeout),
            );
        }
        Ok(())
    }
}

/// The settings a startup message sets: its parameters other than the connection's
/// identity, then those of `options` (`-c name=value` or `--name=value`, as libpq's
/// `options` and `PGOPTIONS` send them), which PostgreSQL applies last.
fn startup_settings<'a>(
    parameters: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let mut options = None;
    let mut settings: Vec<(String, String)> = parameters
        .into_iter()
        .inspect(|(k, v)| {
            if k.as_str() == "options" {
                options = Some(v.to_string());
            }
        })
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "options" | "replication"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(options) = options {
        let mut words = options.split_whitespace();
        while let Some(word) = words.next() {
            let setting = match word {
                "-c" => words.next(),
                w => w.strip_prefix("-c").or_else(|| w.strip_prefix("--")),
            };
            if let Some((name, value)) = setting.and_then(|s| s.split_once('=')) {
                settings.push((name.replace('-', "_"), value.to_string()));
            }
        }
    }
    settings
}

/// Parameters the client sent in its startup message (application_name, ...).
struct StartupParameters(Vec<(String, String)>);

/// The client has sent its SASL initial response (the next password messages are the
/// rest of the SCRAM exchange).
struct SaslStarted;

/// Check a SASLInitialResponse as PostgreSQL does: the mechanism offered, then the length
/// of the data and the data (08P01 otherwise).
fn sasl_initial_response(body: &[u8]) -> PgWireResult<()> {
    let violation =
        |message: &str| super::user_error(Error::FatalProtocolViolation(message.into()));
    let Some(end) = body.iter().position(|b| *b == 0) else {
        return Err(violation("malformed SASL message"));
    };
    if &body[..end] != b"SCRAM-SHA-256" {
        return Err(violation(
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    let rest = &body[end + 1..];
    let Some(length) = rest.get(..4) else {
        return Err(violation("malformed SASL message"));
    };
    let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
    let fits = length == -1 || usize::try_from(length).is_ok_and(|l| l <= rest.len() - 4);
    if fits {
        Ok(())
    } else {
        Err(violation("malformed SASL message"))
    }
}
