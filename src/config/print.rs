//! `kpitables config print`: the effective configuration as TOML, secrets as `***`.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Config, LogFormat, TlsMode};

pub(super) fn tls_mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Off => "off",
        TlsMode::Allow => "allow",
        TlsMode::Require => "require",
    }
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn duration(d: Option<Duration>) -> String {
    match d {
        None => "0".into(),
        Some(d) if d.subsec_millis() != 0 || d.as_secs() == 0 => {
            quoted(&format!("{}ms", d.as_millis()))
        }
        Some(d) => quoted(&format!("{}s", d.as_secs())),
    }
}

/// The configuration as a TOML document that reads back to the same values (passwords
/// as `***`).
pub fn render(config: &Config) -> String {
    let mut out = String::new();
    let path = |p: &std::path::Path| quoted(&p.display().to_string());
    let _ = writeln!(out, "listen = {}", quoted(&config.listen));
    if let Some(http) = &config.http {
        let _ = writeln!(out, "http = {}", quoted(http));
    }
    let _ = writeln!(out, "database = {}", quoted(&config.database));
    let _ = writeln!(out, "model = {}", path(&config.model));
    let _ = writeln!(
        out,
        "allow_cleartext_passwords = {}",
        config.allow_cleartext_passwords
    );
    let format = match config.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let _ = writeln!(out, "log_format = {}", quoted(format));
    if let Some(f) = &config.audit_file {
        let _ = writeln!(out, "audit_file = {}", path(f));
    }
    let _ = writeln!(out, "audit_max_bytes = {}", config.audit_max_bytes);
    let _ = writeln!(out, "audit_keep = {}", config.audit_keep);
    let _ = writeln!(out, "alerts = {}", config.alerts);
    if let Some(f) = &config.alert_state_file {
        let _ = writeln!(out, "alert_state_file = {}", path(f));
    }
    if let Some(f) = &config.history_file {
        let _ = writeln!(out, "history_file = {}", path(f));
    }
    let _ = writeln!(
        out,
        "\n[tls]\nmode = {}",
        quoted(tls_mode_name(config.tls.mode))
    );
    if let Some(c) = &config.tls.cert {
        let _ = writeln!(out, "cert = {}", path(c));
    }
    if let Some(k) = &config.tls.key {
        let _ = writeln!(out, "key = {}", path(k));
    }
    let l = &config.limits;
    let _ = writeln!(out, "\n[limits]");
    let _ = writeln!(out, "max_connections = {}", l.max_connections);
    let _ = writeln!(
        out,
        "max_statements_per_user = {}",
        l.max_statements_per_user
    );
    let _ = writeln!(
        out,
        "max_executing_statements = {}",
        l.max_executing_statements
    );
    let _ = writeln!(out, "queue_timeout = {}", duration(l.queue_timeout));
    let _ = writeln!(out, "statement_timeout = {}", duration(l.statement_timeout));
    let _ = writeln!(
        out,
        "max_statement_timeout = {}",
        duration(l.max_statement_timeout)
    );
    let _ = writeln!(
        out,
        "idle_session_timeout = {}",
        duration(l.idle_session_timeout)
    );
    let _ = writeln!(
        out,
        "idle_in_transaction_session_timeout = {}",
        duration(l.idle_in_transaction_session_timeout)
    );
    let memory = l
        .query_memory_bytes
        .map_or_else(|| "0".to_string(), |b| quoted(&format!("{}MB", b >> 20)));
    let _ = writeln!(out, "query_memory = {memory}");
    let _ = writeln!(out, "shutdown_grace = {}", duration(Some(l.shutdown_grace)));
    let _ = writeln!(out, "plan_cache_entries = {}", l.plan_cache_entries);
    for user in &config.users {
        let _ = writeln!(
            out,
            "\n[[users]]\nname = {}\npassword = \"***\"",
            quoted(&user.name)
        );
        let roles: Vec<String> = user.roles.iter().map(|r| quoted(r)).collect();
        let _ = writeln!(out, "roles = [{}]", roles.join(", "));
        if user.admin {
            let _ = writeln!(out, "admin = true");
        }
        if !user.attributes.is_empty() {
            let attributes: Vec<String> = user
                .attributes
                .iter()
                .map(|(k, v)| format!("{k} = {}", quoted(v)))
                .collect();
            let _ = writeln!(out, "attributes = {{ {} }}", attributes.join(", "));
        }
    }
    out
}
