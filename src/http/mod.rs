//! The HTTP listener (`serve --http ADDR`, off unless set): the probes and metrics a
//! platform runs kpitables with. Later stages (alerts, the catalog portal, agent access)
//! add their routes to [`router`].
//!
//! - `GET /livez`: 200 while the process serves.
//! - `GET /readyz`: 200 when the model is loaded and every warehouse source answers a
//!   ping within its connect timeout; 503 with a JSON body naming what is not ready (or
//!   that the server is shutting down). The last reload's result is in the body: a failed
//!   reload keeps the previous model serving, so it does not make the server unready.
//! - `GET /metrics`: every metric of [`crate::telemetry`], in the Prometheus (OpenMetrics)
//!   text format.
//!
//! Built on axum: the tokio project's router over hyper, well kept and small, with the
//! routing and JSON the later endpoints need.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::{Error, Result};
use crate::server::activity::Connections;
use crate::server::serving::Served;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The served model.
    pub served: Arc<Served>,
    /// The live sessions.
    pub connections: Arc<Connections>,
}

/// Every route of the HTTP stage.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Serve [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("the HTTP listener failed", e))
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let engine = shared.served.engine();
    let mut sources = Vec::new();
    let mut ready = !shared.connections.closing();
    for warehouse in engine.warehouses() {
        let answered = warehouse.ping().await;
        ready &= answered.is_ok();
        sources.push(serde_json::json!({
            "source": warehouse.source_name(),
            "ready": answered.is_ok(),
            "error": answered.err().map(|e| e.to_string()),
        }));
    }
    let history = shared.served.history();
    let version = history.current().map(|v| v.id);
    let failed = history.failed();
    let last_reload = match &failed {
        Some(f) if Some(&f.version) != version.as_ref() => serde_json::json!({
            "ok": false,
            "version": f.version,
            "at": f.at.to_rfc3339(),
            "problems": f.issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        _ => serde_json::json!({ "ok": true }),
    };
    let body = serde_json::json!({
        "ready": ready,
        "shutting_down": shared.connections.closing(),
        "model": { "loaded": true, "version": version },
        "last_reload": last_reload,
        "sources": sources,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let telemetry = crate::telemetry::global();
    let mut by_state: Vec<(&str, i64)> = Vec::new();
    for c in shared.connections.list() {
        by_state.push((c.activity().state.name(), 1));
    }
    let sources: Vec<(String, usize, usize)> = shared
        .served
        .engine()
        .warehouses()
        .iter()
        .map(|w| {
            let (in_use, size) = w.pool();
            (w.source_name().to_string(), in_use, size)
        })
        .collect();
    telemetry.observe(&by_state, &sources);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        telemetry.render(),
    )
        .into_response()
}
