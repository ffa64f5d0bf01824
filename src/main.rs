//! The `kpitables` binary: parse the command line, call the library, map errors to exit codes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kpitables::catalog::Identity;
use kpitables::cli::{
    AlertsAction, Cli, Command, ConfigAction, ImportWhat, LogFormatArg, MetricflowArgs,
    ReportFormat,
};
use kpitables::config::{Config, LogFormat};
use kpitables::engine::Engine;
use kpitables::error::{Error, Result};
use kpitables::import::metricflow::{Options as ImportOptions, Source};
use kpitables::server::activity::Connections;
use kpitables::{demo, model};

/// Log to stderr as text or JSON lines (one object per line, with its spans' fields).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs in the format of its configuration (read first); the rest as text.
    let serving = match &cli.command {
        Command::Serve {
            config, log_format, ..
        } => Some((config.clone(), *log_format)),
        _ => None,
    };
    let format = match serving {
        Some((_, Some(LogFormatArg::Json))) => LogFormat::Json,
        Some((_, Some(LogFormatArg::Text))) => LogFormat::Text,
        Some((config, None)) => Config::load(config.as_deref())
            .map(|c| c.log_format)
            .unwrap_or_default(),
        None => LogFormat::Text,
    };
    init_logging(format);
    kpitables::error::install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(64 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Config {
            action: ConfigAction::Print { config },
        } => {
            print!(
                "{}",
                kpitables::config::render(&Config::load(config.as_deref())?)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            listen,
            model,
            config,
            audit_file,
            history_file,
            http,
            log_format,
            alert_state_file,
            alerts_clock,
            metricflow,
        } => {
            let import = import_options(metricflow)?;
            let demo_default = model.is_none() && config.is_none();
            let mut config = Config::load(config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(model) = model {
                config.model = model;
            }
            if let Some(file) = audit_file {
                config.audit_file = Some(file);
            }
            if let Some(file) = history_file {
                config.history_file = Some(file);
            }
            if let Some(http) = http {
                config.http = Some(http);
            }
            if let Some(format) = log_format {
                config.log_format = match format {
                    LogFormatArg::Json => LogFormat::Json,
                    LogFormatArg::Text => LogFormat::Text,
                };
            }
            if let Some(file) = alert_state_file {
                config.alert_state_file = Some(file);
            }
            if demo_default {
                ensure_demo_data(Path::new("data/demo"))?;
            }
            serve(config, alerts_clock, import).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts {
            action:
                AlertsAction::Run {
                    model,
                    config,
                    at,
                    dry_run,
                    state,
                    format,
                },
        } => {
            let demo_default = model.is_none() && config.is_none();
            let mut config = Config::load(config.as_deref())?;
            if let Some(model) = model {
                config.model = model;
            }
            if demo_default {
                ensure_demo_data(Path::new("data/demo"))?;
            }
            let identity = Identity {
                database: config.database.clone(),
                roles: config.users.iter().map(|u| u.name.clone()).collect(),
            };
            let texts = kpitables::import::model_texts(&config.model, &ImportOptions::default())?;
            let engine = Arc::new(
                Engine::open_texts(texts, &config.model, identity)
                    .await?
                    .with_users(&config.users)?,
            );
            let at = match at {
                Some(text) => {
                    kpitables::server::alerts::period::parse_at(&text, engine.semantics().time_zone)
                        .map_err(Error::Config)?
                }
                None => chrono::Utc::now(),
            };
            let state = state.or(config.alert_state_file.clone());
            let alerts = kpitables::server::alerts::Alerts::open(state.as_deref(), None, at)?;
            let options = kpitables::server::alerts::RunOptions {
                dry_run,
                only_due: false,
            };
            let report = alerts.run(&engine, at, options).await;
            match format {
                ReportFormat::Text => print!("{}", report.to_text()),
                ReportFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| Error::Internal(e.to_string()))?
                ),
            }
            Ok(if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Import {
            what:
                ImportWhat::Metricflow {
                    dir,
                    out,
                    metricflow,
                },
        } => import_metricflow(&dir, &out, &import_options(metricflow)?),
        Command::Check {
            dir,
            with_data,
            base,
        } => {
            let code = check(&dir, with_data).await?;
            match base {
                Some(base) if code == ExitCode::SUCCESS => review(&dir, &base),
                _ => Ok(code),
            }
        }
        Command::Demo {
            out,
            into: Some(url),
            model_out: Some(model_out),
            ..
        } => {
            let target = demo::into_warehouse::Target::parse(&url)?;
            ensure_demo_data(&out)?;
            eprintln!("loading the demo into {} ...", target.url);
            demo::into_warehouse::load(&out, &target, &model_out, |line| eprintln!("  {line}"))
                .await?;
            if target.password.is_some() {
                eprintln!(
                    "the model reads the password from ${}: export it before serving",
                    demo::into_warehouse::PASSWORD_ENV
                );
            }
            println!("kpitables serve --model {}", model_out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            out, if_outdated, ..
        } => {
            if if_outdated && demo::is_complete(&out) {
                println!("demo data in {} is up to date", out.display());
                return Ok(ExitCode::SUCCESS);
            }
            let summary = generate(&out)?;
            println!(
                "demo data written to {}: {} orders, {} order lines",
                out.display(),
                summary.orders,
                summary.order_lines
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The import options of the `--source`, `--schema`, `--password-env` and
/// `--allow-partial` flags.
fn import_options(args: MetricflowArgs) -> Result<ImportOptions> {
    let source = args
        .source
        .map(|s| Source::parse(&s, args.schema))
        .transpose()
        .map_err(Error::Config)?;
    Ok(ImportOptions {
        source,
        password_env: args.password_env,
        allow_partial: args.allow_partial,
    })
}

/// `kpitables import metricflow`: write the model, print the report (what maps, notes,
/// what does not and why); exit 1 when something does not map, unless allowed.
fn import_metricflow(dir: &Path, out: &Path, options: &ImportOptions) -> Result<ExitCode> {
    let import = kpitables::import::metricflow::import(dir, out, options)?;
    print!("{}", import.report);
    let complete = import.report.unmapped.is_empty();
    if !complete && !options.allow_partial {
        eprintln!(
            "error: {} item(s) cannot be mapped; nothing written (--allow-partial writes the rest)",
            import.report.unmapped.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io(format!("cannot create {}", out.display()), e))?;
    if let Ok(entries) = std::fs::read_dir(out) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("cannot replace {}", path.display()), e))?;
            }
        }
    }
    for (name, text) in &import.files {
        let path = out.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    let report = out.join("metricflow-import.txt");
    std::fs::write(&report, import.report.to_string())
        .map_err(|e| Error::io(format!("cannot write {}", report.display()), e))?;
    // The written model must load: check it as `kpitables check` would.
    match kpitables::model::load::load_dir(out) {
        Ok(_) => {
            println!(
                "model written to {} (report in {})",
                out.display(),
                report.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: the generated model does not load:\n{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Print the version ids, every change from `base` to `dir`, and the lineage of every
/// changed metric (what a reviewer needs before a change goes live).
fn review(dir: &Path, base: &str) -> Result<ExitCode> {
    use model::load::{git, git_commit, git_texts, load_texts};
    let dir_texts = |d: &Path| kpitables::import::model_texts(d, &ImportOptions::default());
    let base_path = Path::new(base);
    let base_texts = if base_path.is_dir() {
        dir_texts(base_path)?
    } else {
        git_texts(dir, base)?
    };
    let describe = |version: String, commit: Option<String>| match commit {
        Some(c) => format!("version {version}, git {c}"),
        None => format!("version {version}"),
    };
    let after_texts = dir_texts(dir)?;
    let after_version = model::diff::version(&after_texts);
    let before_version = model::diff::version(&base_texts);
    let after_commit = git_commit(dir);
    let before_commit = if base_path.is_dir() {
        git_commit(base_path)
    } else {
        git(dir, &["rev-parse", base])
    };
    let before = match load_texts(base_texts) {
        Ok(m) => m,
        Err(Error::Model(issues)) => {
            println!("the base {base} is not a valid model:");
            for issue in &issues {
                println!("{issue}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    };
    let after = load_texts(after_texts)?;
    println!(
        "{} ({}) against {base} ({})",
        dir.display(),
        describe(after_version, after_commit),
        describe(before_version, before_commit)
    );
    let changes = model::diff::diff(&before, &after);
    if changes.is_empty() {
        println!("no changes");
    }
    for change in &changes {
        println!("{change}");
        if change.kind == "metric" {
            let model = if change.what == model::diff::What::Removed {
                &before
            } else {
                &after
            };
            let l = model::lineage::of(model, &change.name);
            let join = |s: &std::collections::BTreeSet<String>| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            };
            println!(
                "  lineage: from metrics {}; columns {}; tables {}; sources {}",
                join(&l.metrics),
                join(&l.columns),
                join(&l.tables),
                join(&l.sources)
            );
            println!(
                "  used by: metrics {}; views {}",
                join(&l.used_by),
                join(&l.views)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(out: &Path) -> Result<demo::DemoSummary> {
    let mut last = u32::MAX;
    demo::generate(out, |stage, percent| {
        if percent / 10 != last / 10 || percent == 100 {
            eprintln!(
                "generating demo data into {}: {stage} {percent}%",
                out.display()
            );
            last = percent;
        }
    })
}

fn ensure_demo_data(dir: &Path) -> Result<()> {
    if demo::is_complete(dir) {
        return Ok(());
    }
    eprintln!(
        "demo data not found in {}: generating it (about a minute) ...",
        dir.display()
    );
    generate(dir).map(|_| ())
}

async fn serve(config: Config, alerts_clock: Option<String>, import: ImportOptions) -> Result<()> {
    let identity = Identity {
        database: config.database.clone(),
        roles: config.users.iter().map(|u| u.name.clone()).collect(),
    };
    let audit = Arc::new(kpitables::server::audit::Audit::open(
        config.audit_file.clone(),
        config.audit_max_bytes,
        config.audit_keep,
    )?);
    let connections = Connections::new(config.limits.clone());
    kpitables::server::memory::release_when_idle(Arc::clone(&connections));
    let hub = kpitables::server::notify::Hub::new();
    // The alerts' clock: real time, or real time moved to start at --alerts-clock.
    let offset = match &alerts_clock {
        Some(text) => {
            let start = kpitables::server::alerts::period::parse_at(text, Default::default())
                .map_err(Error::Config)?;
            start.signed_duration_since(chrono::Utc::now())
        }
        None => chrono::Duration::zero(),
    };
    let clock = move || chrono::Utc::now() + offset;
    let alerts = Arc::new(kpitables::server::alerts::Alerts::open(
        config.alert_state_file.as_deref(),
        Some(Arc::clone(&hub)),
        clock(),
    )?);
    let served = Arc::new(
        kpitables::server::serving::Served::open(
            config.model.clone(),
            identity,
            config.users.clone(),
            audit,
            config.history_file.clone(),
            kpitables::server::serving::Options {
                connections: Some(Arc::clone(&connections)),
                query_memory: config.limits.query_memory_bytes,
                plan_cache_entries: Some(config.limits.plan_cache_entries),
                alerts: Some(Arc::clone(&alerts)),
                import,
            },
        )
        .await?,
    );
    let engine = served.engine();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", config.listen), e))?;
    let views: Vec<&str> = engine
        .semantics()
        .views
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    // Through the log, so a JSON log stays JSON from its first line.
    tracing::info!(
        "kpitables serving model {} ({} views: {}) on {} database \"{}\"{}",
        config.model.display(),
        views.len(),
        views.join(", "),
        config.listen,
        config.database,
        match config.tls.mode {
            kpitables::config::TlsMode::Off => "",
            kpitables::config::TlsMode::Allow => " (TLS allowed)",
            kpitables::config::TlsMode::Require => " (TLS required)",
        }
    );
    drop(views);
    drop(engine);
    Arc::clone(&served).watch();
    if config.alerts {
        let served = Arc::clone(&served);
        kpitables::server::alerts::schedule(Arc::clone(&alerts), move || served.engine(), clock);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(address) = &config.http {
        let http = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {address} (--http)"), e))?;
        tracing::info!("HTTP (/livez, /readyz, /metrics) on {address}");
        let shared = kpitables::http::Shared {
            served: Arc::clone(&served),
            connections: Arc::clone(&connections),
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = kpitables::http::serve(http, shared, shutdown).await {
                tracing::error!(error = %e, "the HTTP listener stopped");
            }
        });
    }
    let shutdown = async move {
        terminated().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    };
    kpitables::wire::serve(listener, served, &config, connections, hub, shutdown).await
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn check(dir: &Path, with_data: bool) -> Result<ExitCode> {
    let texts = kpitables::import::model_texts(dir, &ImportOptions::default());
    let outcome = match texts {
        Err(e) => Err(e),
        Ok(texts) if with_data => Engine::open_texts(
            texts,
            dir,
            Identity {
                database: "kpitables".into(),
                roles: vec![],
            },
        )
        .await
        .map(|e| {
            (
                e.semantics().views.len(),
                e.semantics().metrics.len(),
                e.semantics().dimensions.len(),
            )
        }),
        // Without the data, the model is bound as far as it can be: every rule but the
        // columns' existence and types (which --with-data checks).
        Ok(texts) => model::load::load_dir_texts(dir, texts).and_then(|m| {
            let counts = (m.views.len(), m.metrics.len(), m.dimensions.len());
            kpitables::bind::bind_structure(m).map(|_| counts)
        }),
    };
    match outcome {
        Ok((views, metrics, dimensions)) => {
            let unchecked = if with_data {
                ""
            } else {
                "; columns and their types are checked with --with-data"
            };
            println!(
                "{}: ok ({views} views, {metrics} metrics, {dimensions} dimensions{unchecked})",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Model(issues)) => {
            for issue in &issues {
                println!("{issue}");
            }
            let unchecked = if with_data {
                ""
            } else {
                " (columns and their types are checked with --with-data)"
            };
            println!("{}: {} problem(s){unchecked}", dir.display(), issues.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e),
    }
}
