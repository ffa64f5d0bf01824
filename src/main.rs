//! The `kpitables` binary: parse the command line, call the library, map errors to exit codes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kpitables::catalog::Identity;
use kpitables::cli::{Cli, Command};
use kpitables::config::Config;
use kpitables::engine::Engine;
use kpitables::error::{Error, Result};
use kpitables::{demo, model};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
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
        Command::Serve {
            listen,
            model,
            config,
            audit_file,
            history_file,
        } => {
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
            if demo_default {
                ensure_demo_data(Path::new("data/demo"))?;
            }
            serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
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

/// Print the version ids, every change from `base` to `dir`, and the lineage of every
/// changed metric (what a reviewer needs before a change goes live).
fn review(dir: &Path, base: &str) -> Result<ExitCode> {
    use model::load::{dir_texts, git, git_commit, git_texts, load_texts};
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

async fn serve(config: Config) -> Result<()> {
    let identity = Identity {
        database: config.database.clone(),
        roles: config.users.iter().map(|u| u.name.clone()).collect(),
    };
    let audit = Arc::new(kpitables::audit::Audit::open(
        config.audit_file.clone(),
        config.audit_max_bytes,
        config.audit_keep,
    )?);
    let served = Arc::new(
        kpitables::serving::Served::open(
            config.model.clone(),
            identity,
            config.users.clone(),
            audit,
            config.history_file.clone(),
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
    eprintln!(
        "kpitables serving model {} ({} views: {}) on {} database \"{}\"",
        config.model.display(),
        views.len(),
        views.join(", "),
        config.listen,
        config.database
    );
    drop(views);
    drop(engine);
    Arc::clone(&served).watch();
    tokio::select! {
        result = kpitables::wire::serve(listener, served, &config) => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("shutting down");
            Ok(())
        }
    }
}

async fn check(dir: &Path, with_data: bool) -> Result<ExitCode> {
    let outcome = if with_data {
        Engine::open(
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
        })
    } else {
        model::load::load_dir(dir).map(|m| (m.views.len(), m.metrics.len(), m.dimensions.len()))
    };
    match outcome {
        Ok((views, metrics, dimensions)) => {
            println!(
                "{}: ok ({views} views, {metrics} metrics, {dimensions} dimensions)",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Model(issues)) => {
            for issue in &issues {
                println!("{issue}");
            }
            println!("{}: {} problem(s)", dir.display(), issues.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e),
    }
}
