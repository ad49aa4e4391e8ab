//! The HTTP side of `pinlock serve` (axum): the versioned JSON API under
//! `/v1`, the probes `/livez` and `/readyz`, `/metrics`, and the dashboard's
//! routes (see [`super::dashboard`]). Errors are JSON
//! `{"error":{"code","message"}}` with a stable `code`. Every route but the
//! probes needs `Authorization: Bearer <token>` when tokens are configured
//! (the dashboard's pages also take the token from the cookie its sign-in
//! form sets); tokens are compared in constant time and never logged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Service;
use crate::queue::{NewJob, output_value};
use crate::runtime::JobError;

/// Longest a synchronous run may be waited for.
const MAX_RUN_WAIT: Duration = Duration::from_secs(300);
/// Most jobs one list returns.
const MAX_LIST: i64 = 500;

/// The routes, with auth on everything but the probes.
pub(crate) fn router(service: Arc<Service>) -> Router {
    let api = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/run", post(run))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/workers", get(workers))
        .route("/v1/locks", get(locks))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(service.clone(), auth));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .merge(super::dashboard::router(service.clone()))
        .merge(api)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(service)
}

/// An API error: its status, a stable code and a message.
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn database(e: crate::db::DbError) -> Self {
        tracing::warn!(error = %e, "API request failed on the database");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

async fn auth(State(service): State<Arc<Service>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let tokens = &service.config.server.tokens;
    if tokens.is_empty() || token_accepted(tokens, bearer(&headers)) {
        return next.run(request).await;
    }
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid `Authorization: Bearer <token>` is required")
        .into_response()
}

/// The request's bearer token ("" when it has none).
pub(crate) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Whether `presented` is one of `tokens` (compared in constant time).
pub(crate) fn token_accepted(tokens: &[String], presented: &str) -> bool {
    tokens.iter().any(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()))
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Reads a JSON body of at most the configured size.
async fn json_body<T: serde::de::DeserializeOwned>(service: &Service, body: Body) -> Result<T, ApiError> {
    let limit = service.config.server.max_input_bytes + 64 * 1024;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than {} bytes", service.config.server.max_input_bytes),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("bad_json", format!("invalid request body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    worker: String,
    #[serde(default)]
    input: Value,
    max_attempts: Option<i32>,
    unique_key: Option<String>,
    run_at: Option<String>,
}

impl SubmitRequest {
    fn check(self, service: &Service) -> Result<NewJob, ApiError> {
        if service.workers.get(&self.worker).is_none() {
            return Err(unknown_worker(&self.worker, service));
        }
        let size = serde_json::to_vec(&self.input).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > service.config.server.max_input_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("input is {size} bytes; at most {} are accepted", service.config.server.max_input_bytes),
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or(service.config.queue.max_attempts);
        if !(1..=100).contains(&max_attempts) {
            return Err(ApiError::bad_request("bad_request", "max_attempts must be between 1 and 100"));
        }
        if self.unique_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 256) {
            return Err(ApiError::bad_request("bad_request", "unique_key must be 1 to 256 bytes"));
        }
        Ok(NewJob {
            worker: self.worker,
            input: self.input,
            run_at: self.run_at,
            max_attempts,
            unique_key: self.unique_key,
        })
    }
}

fn unknown_worker(name: &str, service: &Service) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_worker",
        format!("no worker named {name:?}; this host serves: {}", service.workers.names().join(", ")),
    )
}

/// `POST /v1/jobs`: enqueue; answers 202 with the job's id.
async fn submit(State(service): State<Arc<Service>>, body: Body) -> Result<Response, ApiError> {
    let request: SubmitRequest = json_body(&service, body).await?;
    let job = request.check(&service)?;
    let enqueued = service.queue.enqueue(std::slice::from_ref(&job)).await.map_err(|e| {
        if e.to_string().contains("22007") || e.to_string().contains("22008") {
            ApiError::bad_request("bad_request", "run_at is not an RFC 3339 timestamp")
        } else {
            ApiError::database(e)
        }
    })?;
    let Some(&(id, duplicate)) = enqueued.first() else {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the queue returned no id"));
    };
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "duplicate": duplicate, "state": "queued" }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    worker: String,
    #[serde(default)]
    input: Value,
    timeout_ms: Option<u64>,
}

/// `POST /v1/jobs/run`: runs a job on this host now and waits for its
/// result (up to `timeout_ms`). A full host answers 429 with `Retry-After`.
async fn run(State(service): State<Arc<Service>>, body: Body) -> Result<Response, ApiError> {
    let request: RunRequest = json_body(&service, body).await?;
    let RunRequest { worker: name, input, timeout_ms } = request;
    let job =
        SubmitRequest { worker: name, input, max_attempts: None, unique_key: None, run_at: None }.check(&service)?;
    if service.draining.load(Ordering::Acquire) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "this host is draining"));
    }
    let Some(worker) = service.workers.get(&job.worker) else {
        return Err(unknown_worker(&job.worker, &service));
    };
    let full = || ApiError {
        retry_after: Some(1),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", "this host is running as many jobs as it may")
    };
    let Ok(permit) = worker.slots.clone().try_acquire_owned() else {
        return Err(full());
    };
    let Some(slot) = service.scheduler.try_slot() else {
        return Err(full());
    };
    let lease = Duration::from_secs(service.config.queue.lease_secs);
    let Some(id) = service.queue.insert_running(&job.worker, &job.input, lease).await.map_err(ApiError::database)?
    else {
        return Err(unknown_worker(&job.worker, &service));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Ok(mut waiters) = service.waiters.lock() {
        waiters.insert(id, tx);
    }
    service.start_job(slot, permit, worker, id, 1, &job.input);
    let wait = timeout_ms.map_or(Duration::from_secs(30), Duration::from_millis).min(MAX_RUN_WAIT);
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(outcome)) => {
            let (state, output, error) = match &outcome.result {
                Ok(bytes) => ("succeeded", Some(output_value(bytes)), None),
                // Cancelled on request, or stopped by this host (drain) and given
                // back to the queue: the job's record says which.
                Err(JobError::Cancelled) => ("stopped", None, Some(format!("stopped on this host; see /v1/jobs/{id}"))),
                Err(e) => ("failed", None, Some(e.to_string())),
            };
            Ok(Json(json!({ "id": id, "state": state, "output": output, "error": error })).into_response())
        }
        _ => {
            if let Ok(mut waiters) = service.waiters.lock() {
                waiters.remove(&id);
            }
            Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "state": "running" }))).into_response())
        }
    }
}

/// `GET /v1/jobs/{id}`.
async fn get_job(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match service.queue.get(id).await.map_err(ApiError::database)? {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_job", format!("no job {id}"))),
    }
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::bad_request("bad_request", format!("{id:?} is not a job id")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    worker: Option<String>,
    state: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

const STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// `GET /v1/jobs?worker=&state=&before=&limit=`: newest first.
async fn list(
    State(service): State<Arc<Service>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    if let Some(state) = &query.state
        && !STATES.contains(&state.as_str())
    {
        return Err(ApiError::bad_request("bad_request", format!("state must be one of {}", STATES.join(", "))));
    }
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIST);
    let jobs = service
        .queue
        .list(query.worker.as_deref(), query.state.as_deref(), query.before, limit)
        .await
        .map_err(ApiError::database)?;
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

/// `POST /v1/jobs/{id}/cancel`: a queued job is cancelled at once; a running
/// one is stopped by its host (its locks released).
async fn cancel(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match service.queue.cancel(id).await.map_err(ApiError::database)? {
        Some(state) => {
            // Running here: stop it now rather than when the notice arrives.
            if state == "cancelling" {
                service.scheduler.cancel(id);
            }
            Ok(Json(json!({ "id": id, "state": state })).into_response())
        }
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_job", format!("no job {id}"))),
    }
}

/// `GET /v1/workers`.
async fn workers(State(service): State<Arc<Service>>) -> Json<Value> {
    let workers: Vec<Value> = service
        .workers
        .iter()
        .map(|w| {
            json!({
                "name": &*w.name,
                "component": w.section.component,
                "time_limit_ms": w.section.time_limit_ms,
                "memory_limit_mib": w.section.memory_limit_mib,
                "max_locks_per_job": w.section.max_locks_per_job,
                "concurrency": w.section.concurrency,
                "running": w.section.concurrency - w.slots.available_permits(),
                "capabilities": w.section.capabilities,
                "buckets": w.section.buckets,
            })
        })
        .collect();
    Json(json!({ "workers": workers }))
}

/// `GET /v1/locks`: every advisory lock held or awaited in the database
/// (every host's), as `pinlock locks` prints it.
async fn locks(State(service): State<Arc<Service>>) -> Result<Response, ApiError> {
    let locks = crate::db::list_advisory_locks(&service.db_config).await.map_err(ApiError::database)?;
    Ok(Json(json!({ "locks": locks })).into_response())
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    let depth = tokio::time::timeout(Duration::from_secs(2), service.queue.depth()).await.ok().and_then(Result::ok);
    let text = service.metrics.encode(
        &service.db.stats(),
        depth.as_deref(),
        service.scheduler.in_flight(),
        service.draining.load(Ordering::Acquire),
    );
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// Alive as long as it answers.
async fn livez() -> &'static str {
    "ok"
}

/// Ready: not draining, the database answers, and its schema is current.
async fn readyz(State(service): State<Arc<Service>>) -> Response {
    if service.draining.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let wanted = crate::db::schema_version();
    match tokio::time::timeout(Duration::from_secs(2), service.queue.schema_version()).await {
        Ok(Ok(version)) if version >= wanted => "ok".into_response(),
        Ok(Ok(version)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("schema version {version}, this host needs {wanted}"))
                .into_response()
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database: no answer within 2 s").into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}
