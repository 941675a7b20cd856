//! What an operator and a load balancer ask a server: `GET /metrics` (Prometheus text),
//! `GET /health` (200 if this server is a member of a cluster with a primary it hears
//! from), `GET /primary` and `GET /backup` (200 only in that role, so a load balancer can
//! send writes to the primary and reads to the backups). A refusal is 503 with the usual
//! error body, naming the role this server is in.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::metrics::Snapshot;
use crate::error::{Error, Result};
use crate::replication::RoleKind;

/// The content type of the OpenMetrics text format, which Prometheus reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(State(app): State<AppState>) -> Result<Response> {
    let mut snapshot = app.driver.snapshot().await?;
    let size = |name: &str| std::fs::metadata(app.data_dir.join(name)).map_or(0, |m| m.len());
    snapshot.store_bytes = size("store");
    snapshot.log_bytes = size("log");
    let text = app.metrics.render(&snapshot);
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}

/// What the health endpoints answer with 200.
#[derive(Serialize)]
pub struct Health {
    pub role: &'static str,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
}

impl Health {
    fn of(snapshot: &Snapshot) -> Health {
        Health {
            role: snapshot.role.map_or("unknown", RoleKind::as_str),
            term: snapshot.term,
            commit_index: snapshot.commit_index,
            applied_index: snapshot.applied_index,
        }
    }
}

/// `GET /health`: a member with a primary it hears from.
pub async fn health(State(app): State<AppState>) -> Result<axum::Json<Health>> {
    let snapshot = app.driver.snapshot().await?;
    if !snapshot.hears_primary {
        return Err(unhealthy(&snapshot, "no primary heard from"));
    }
    Ok(axum::Json(Health::of(&snapshot)))
}

/// `GET /primary`: this server is the primary.
pub async fn primary(State(app): State<AppState>) -> Result<axum::Json<Health>> {
    in_role(&app, RoleKind::Primary).await
}

/// `GET /backup`: this server is a backup that hears its primary.
pub async fn backup(State(app): State<AppState>) -> Result<axum::Json<Health>> {
    in_role(&app, RoleKind::Backup).await
}

async fn in_role(app: &AppState, role: RoleKind) -> Result<axum::Json<Health>> {
    let snapshot = app.driver.snapshot().await?;
    if snapshot.role != Some(role) || !snapshot.hears_primary {
        return Err(unhealthy(&snapshot, &format!("not a {}", role.as_str())));
    }
    Ok(axum::Json(Health::of(&snapshot)))
}

fn unhealthy(snapshot: &Snapshot, why: &str) -> Error {
    let role = snapshot.role.map_or("unknown", RoleKind::as_str);
    Error::Unavailable(format!(
        "{why} (this server is a {role} in term {})",
        snapshot.term
    ))
}
