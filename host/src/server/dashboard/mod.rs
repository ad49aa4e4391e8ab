//! The dashboard `pinlock serve` serves at `/` (docs/dashboard.md): **locks
//! now**, cluster-wide (every host publishes its jobs' holds and waits, see
//! [`publish`]; [`data`] reads every live host's), **jobs** (the shared
//! queue by worker, a page per job) and **over time** (this host's samples,
//! [`history`]). Pages are rendered on the server ([`page`]) and stay useful
//! without JavaScript; `assets/dashboard.js` refreshes their sections every
//! second or two and draws the charts with the vendored uPlot.
//!
//! Same auth as the API: with tokens configured, a request needs one, as a
//! bearer token or in the `HttpOnly` cookie the sign-in form at `/` sets
//! (browsers cannot send a bearer header when they navigate). The cookie is
//! accepted only by these read-only pages, never by the API.

mod data;
mod history;
mod page;
mod publish;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;

use super::Service;
use super::api::{bearer, token_accepted};
use super::config::DashboardSection;
use crate::db::{DbConfig, SharedClient};
use history::History;

/// The sign-in cookie: the token, hex-encoded.
const COOKIE: &str = "pinlock_token";
/// Longest search text kept.
const MAX_SEARCH: usize = 200;

/// The dashboard's share of a server.
pub(crate) struct Dashboard {
    /// Its own connection (publishing and reading never wait behind the queue's).
    client: SharedClient,
    history: History,
    slow: Duration,
    sample_every: Duration,
}

impl Dashboard {
    /// Does no I/O.
    pub(crate) fn new(section: &DashboardSection, db: DbConfig) -> Self {
        let sample_every = Duration::from_secs(section.sample_secs);
        Self {
            client: SharedClient::new(db, "SET statement_timeout = '5s'; SET lock_timeout = '1s'"),
            history: History::new(sample_every),
            slow: Duration::from_secs(section.slow_secs),
            sample_every,
        }
    }

    /// Records a job this host ran, `result` as the queue recorded it.
    pub(crate) fn job_finished(&self, id: i64, result: &str, locks: &crate::db::LockStats) {
        self.history.job_finished(id, result, locks);
    }
}

/// Starts publishing this host's locks and sampling its counters; the caller
/// aborts the tasks when it stops (then calls [`withdraw`]).
pub(crate) fn spawn(service: &Arc<Service>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![tokio::spawn(publish::run(service.clone())), tokio::spawn(sample(service.clone()))]
}

/// Removes this host's rows from "locks now" (it is stopping).
pub(crate) async fn withdraw(service: &Service) {
    publish::withdraw(service).await;
}

/// Takes a sample every `dashboard.sample_secs`.
async fn sample(service: Arc<Service>) {
    let every = service.dashboard.sample_every;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let depth = tokio::time::timeout(Duration::from_secs(2), service.queue.depth()).await.ok().and_then(Result::ok);
        let depth = depth.map(|d| d.iter().map(|w| w.queued).sum());
        let history = &service.dashboard.history;
        history.sample(SystemTime::now(), &service.db.stats(), depth, service.scheduler.in_flight());
    }
}

/// The dashboard's routes (the caller adds the state).
pub(crate) fn router(service: Arc<Service>) -> Router<Arc<Service>> {
    let pages = Router::new()
        .route("/", get(index))
        .route("/jobs/{id}", get(job_page))
        .route("/dashboard/locks", get(locks_fragment))
        .route("/dashboard/jobs", get(jobs_fragment))
        .route("/dashboard/job/{id}", get(job_fragment))
        .route("/dashboard/history", get(history_json))
        .route("/dashboard/history-table", get(history_fragment))
        .layer(axum::middleware::from_fn_with_state(service, auth));
    Router::new()
        .route("/login", post(login).layer(axum::extract::DefaultBodyLimit::max(4096)))
        .route("/dashboard/assets/{file}", get(asset))
        .merge(pages)
        .layer(axum::middleware::map_response(harden))
}

impl Service {
    fn page_context(&self) -> page::Context<'_> {
        page::Context {
            host: self.queue.host(),
            slow: self.dashboard.slow,
            sample_secs: self.dashboard.sample_every.as_secs(),
            retention_hours: self.config.queue.retention_hours,
        }
    }
}

/// A token as a bearer header or in the sign-in cookie, if tokens are set.
async fn auth(State(service): State<Arc<Service>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let tokens = &service.config.server.tokens;
    let cookie = cookie_token(&headers).unwrap_or_default();
    if tokens.is_empty() || token_accepted(tokens, bearer(&headers)) || token_accepted(tokens, &cookie) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if path == "/" || path.starts_with("/jobs/") {
        (StatusCode::UNAUTHORIZED, page::login(false)).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "sign in at / first").into_response()
    }
}

/// The sign-in cookie's token.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
    let bytes: Option<Vec<u8>> =
        (0..value.len()).step_by(2).map(|i| value.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /login`: a good token sets the cookie and goes to the dashboard.
async fn login(State(service): State<Arc<Service>>, form: Result<Form<SignIn>, FormRejection>) -> Response {
    let tokens = &service.config.server.tokens;
    if tokens.is_empty() {
        return Redirect::to("/").into_response();
    }
    match form {
        Ok(Form(SignIn { token })) if token_accepted(tokens, &token) => {
            let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
            let cookie = format!("{COOKIE}={hex}; Path=/; HttpOnly; SameSite=Strict");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        _ => (StatusCode::UNAUTHORIZED, page::login(true)).into_response(),
    }
}

/// Security headers on every dashboard answer; pages and data are never cached.
async fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
               connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The page's query: a search and a worker filter. Anything malformed is
/// ignored (the page shows everything), never an error page.
#[derive(Deserialize, Default)]
struct View {
    #[serde(default)]
    q: String,
    worker: Option<String>,
}

impl View {
    fn of(query: Result<Query<View>, QueryRejection>) -> Self {
        let mut view = query.map(|Query(v)| v).unwrap_or_default();
        view.q.truncate(view.q.floor_char_boundary(MAX_SEARCH));
        view.worker = view.worker.filter(|w| !w.is_empty() && w.len() <= 64);
        view
    }
}

async fn locks_markup(service: &Service, query: &str) -> Markup {
    let search = data::Search::new(query);
    match data::locks_now(&service.dashboard.client, search.as_ref()).await {
        Ok(now) => page::locks(&service.page_context(), &now, search.as_ref()),
        Err(e) => page::unavailable("the locks", &e.to_string()),
    }
}

async fn jobs_markup(service: &Service, worker: Option<&str>) -> Markup {
    match data::jobs_panel(&service.dashboard.client, worker).await {
        Ok(panel) => page::jobs(&panel, worker),
        Err(e) => page::unavailable("the jobs", &e.to_string()),
    }
}

/// `GET /`.
async fn index(State(service): State<Arc<Service>>, query: Result<Query<View>, QueryRejection>) -> Markup {
    let view = View::of(query);
    let worker = view.worker.as_deref();
    let (locks, jobs) = tokio::join!(locks_markup(&service, &view.q), jobs_markup(&service, worker));
    page::index(&service.page_context(), &view.q, worker, locks, jobs, &service.dashboard.history.samples())
}

async fn locks_fragment(State(service): State<Arc<Service>>, query: Result<Query<View>, QueryRejection>) -> Markup {
    locks_markup(&service, &View::of(query).q).await
}

async fn jobs_fragment(State(service): State<Arc<Service>>, query: Result<Query<View>, QueryRejection>) -> Markup {
    jobs_markup(&service, View::of(query).worker.as_deref()).await
}

async fn history_fragment(State(service): State<Arc<Service>>) -> Markup {
    page::history_table(&service.dashboard.history.samples())
}

/// `GET /dashboard/history`: the samples, oldest first.
async fn history_json(State(service): State<Arc<Service>>) -> Response {
    let samples = service.dashboard.history.samples();
    let body = json!({
        "host": service.queue.host(),
        "interval_secs": service.dashboard.sample_every.as_secs(),
        "samples": samples,
    });
    axum::Json(body).into_response()
}

/// Job `asked` (any text: an unknown or malformed id is an empty state).
async fn job_view(service: &Service, asked: &str) -> page::JobView {
    let asked: String = asked.chars().take(40).collect();
    let Ok(id) = asked.parse::<i64>() else {
        return page::JobView { asked, job: Ok(None), locks: Ok(Vec::new()), recorded: None };
    };
    let (job, locks) = tokio::join!(service.queue.get(id), data::job_locks(&service.dashboard.client, id));
    page::JobView {
        asked,
        job: job.map_err(|e| e.to_string()),
        locks: locks.map_err(|e| e.to_string()),
        recorded: service.dashboard.history.job_locks(id),
    }
}

fn asked(path: Result<Path<String>, PathRejection>) -> String {
    path.map(|Path(id)| id).unwrap_or_default()
}

/// `GET /jobs/{id}`.
async fn job_page(State(service): State<Arc<Service>>, path: Result<Path<String>, PathRejection>) -> Markup {
    let view = job_view(&service, &asked(path)).await;
    page::job_page(&service.page_context(), &view)
}

async fn job_fragment(State(service): State<Arc<Service>>, path: Result<Path<String>, PathRejection>) -> Markup {
    let view = job_view(&service, &asked(path)).await;
    page::job_body(&service.page_context(), &view)
}

/// `GET /dashboard/assets/{file}`: the embedded files (no data in them, so
/// no token needed; the sign-in page uses the stylesheet).
async fn asset(Path(file): Path<String>) -> Response {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    let (body, kind) = match file.as_str() {
        "dashboard.js" => (include_str!("../../../assets/dashboard.js"), JS),
        "dashboard.css" => (include_str!("../../../assets/dashboard.css"), CSS),
        "uPlot.iife.min.js" => (include_str!("../../../assets/uPlot.iife.min.js"), JS),
        "uPlot.min.css" => (include_str!("../../../assets/uPlot.min.css"), CSS),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_carries_the_token_hex_encoded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b; pinlock_token=7365637265742d31; c=d"));
        assert_eq!(cookie_token(&headers).as_deref(), Some("secret-1"));
        headers.insert(header::COOKIE, HeaderValue::from_static("pinlock_token=7g"));
        assert_eq!(cookie_token(&headers), None, "not hex");
        headers.insert(header::COOKIE, HeaderValue::from_static("pinlock_token_x=73"));
        assert_eq!(cookie_token(&headers), None, "another cookie");
    }
}
