//! `charter up`: one process owns the deployment (its log, store and
//! plugins) and serves the control API over HTTP. Every route answers with
//! the JSON document the matching CLI command prints with `--json`
//! (`charter-api`'s types), and every failure with `{ok: false, error:
//! {message, exit_code, class, kind, refusal}}`.
//!
//! **Who asks.** Every request but `/healthz` carries `Authorization:
//! Bearer <token>`; [`Caller`] turns it into a [`Principal`] through
//! [`Control::principal`], and the handlers name that principal as the
//! initiator, approver or operator of what they ask. No request body can
//! name who acts: the body types below have no such field, and unknown
//! fields are refused.
//!
//! | route | CLI |
//! | --- | --- |
//! | `GET /healthz` · `GET /readyz` (no token) | — |
//! | `GET /metrics` | `kpi` (Prometheus text format, [`metrics`]) |
//! | `GET /v1/whoami` | — |
//! | `GET /v1/runs?status=&workflow=&initiator=&from=&to=` · `GET /v1/runs/{id}` | `runs list` · `runs show` |
//! | `POST /v1/runs` `{workflow, input}` | `run --detach` |
//! | `POST /v1/runs/{id}/cancel` | `runs cancel` |
//! | `GET /v1/proposals?all=` · `GET /v1/proposals/{id}` | `proposals list` · `show` |
//! | `POST /v1/proposals/{id}/approve` · `/reject` `{comment}` | `proposals approve` · `reject` |
//! | `GET /v1/escalations?all=` · `POST /v1/escalations/{id}/resolve` | `escalations list` · `resolve` |
//! | `GET /v1/audit?type=&plugin=&proposal=&since=&from=&to=&limit=` · `GET /v1/audit/verify` | `audit show` · `audit verify` |
//! | `GET /v1/audit/export` · `GET /v1/audit/checkpoint` (attachments: JSON lines, the signed checkpoint) | `audit export` · `audit checkpoint` |
//! | `GET /v1/kpi` · `GET /v1/kpi/framework` · `GET /v1/kpi/series?bucket=hour\|day&from=&to=` · `GET /v1/plugins` · `GET /v1/grants` | `kpi` · `kpi --framework` · — · `plugins` · `grants` |
//! | `GET /v1/kv/{plugin}?prefix=` · `GET`/`PUT /v1/kv/{plugin}/{key}` `{value}` | `kv list` · `kv get` · `kv set` |
//! | `POST /hooks/{name}` (a signature or token of its own, see [`hooks`]) | — |
//! | `/v1/plugins/versions`, `/v1/plugins/{name}[/history,/diff,/pin,/rollback]` (see [`plugins`]) | `plugins list\|push\|history\|diff\|pin\|rollback` |
//! | `GET /` (the operator console) · `GET /v1/approvers` · `GET /v1/events` (SSE), see [`console`] | — |
//! | `POST`/`GET`/`DELETE /mcp` (AI agents' tools over MCP, an agent's token only, see [`mcp`]) | `mcp` (stdio) |
//!
//! Status codes follow the error's class: usage 400, not found 404,
//! invalid 422, unauthenticated 401, refused by governance 403, a limit
//! 413, anything else 500; a run waiting for people is 202; while the host
//! starts or stops, 503 (`Retry-After`).
//!
//! **Who may do what.** Every route but `/healthz` and `/readyz` needs a
//! token of a declared identity (a refused one is a 401 and an
//! `auth-refused` event, [`refusals`] bounds how many); any authenticated
//! identity may read (runs, proposals, escalations, audit with its export
//! and a signed checkpoint, KPIs, `/metrics`), start and cancel runs and
//! set kv; `/v1/approvers` (who may decide) is for declared approvers and
//! operators (see [`console`]). Decisions are checked
//! where they act, on the log: approving or rejecting needs a person
//! declared as an approver holding the proposal's role who neither
//! started the work nor owns the plugin, resolving an escalation needs its
//! role; a refusal is a 403 and an `approval-decision` or
//! `escalation-resolved` event with `accepted: false` and the rule.
//!
//! **Lifecycle.** [`Service`] says whether the host is ready (`/readyz`
//! 200 once the log and index are open and the runs left running are
//! handed to their drivers) and whether it is draining: from SIGTERM on,
//! every route but `/healthz`, `/readyz` and `/metrics` answers 503 while
//! the steps in flight finish (see `charter up`).

pub mod console;
pub mod mcp;
pub mod metrics;
pub mod plugins;
pub mod refusals;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use charter_api::{ApiError, Control, Credential, ErrorClass, Failure, Principal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod hooks;
pub mod schedules;

/// The largest request body accepted: a step input or kv value (4 MiB,
/// what the log records) and its JSON framing.
pub const MAX_BODY: usize = 5 << 20;

/// The shared state of every handler.
#[derive(Debug, Clone)]
pub struct App {
    pub control: Arc<Control>,
    pub service: Arc<Service>,
}

/// What the service knows of itself: ready, draining, the refusals it
/// records and the metrics it last rendered.
#[derive(Debug, Default)]
pub struct Service {
    ready: AtomicBool,
    draining: AtomicBool,
    refusals: refusals::Refusals,
    metrics: metrics::Cache,
    /// The console's live feeds.
    streams: console::Streams,
    /// Whole-log downloads (export, checkpoint): one at a time.
    downloads: tokio::sync::Mutex<()>,
    /// Ends every `/mcp` session (their event streams would hold a
    /// graceful stop open) when the host drains.
    mcp_stop: tokio_util::sync::CancellationToken,
    /// What every `/mcp` session shares (the agents' rate and refusals).
    mcp: std::sync::OnceLock<Arc<mcp::Shared>>,
}

impl Service {
    /// Not ready yet (`/readyz` 503 until [`Service::set_ready`]).
    pub fn new() -> Arc<Service> {
        Arc::default()
    }

    /// The log and index are open and resumption is under way.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Stop intake: every route but health, readiness and metrics answers
    /// 503 from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.mcp_stop.cancel();
    }

    /// Ready and not draining.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    /// Whether intake is stopped.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Record the refusal summaries due now (`all`: every counted one,
    /// when the host stops).
    pub async fn record_due_refusals(&self, control: &Control, all: bool) {
        let due = self.refusals.due(charter_audit::now_ms(), all);
        if let Err(e) = control.record_auth_refusals(due).await {
            tracing::error!(error = %e, "cannot record refused authentications");
        }
        if let Some(tools) = self.mcp.get() {
            tools.record_due_refusals(all).await;
        }
    }
}

/// The API's routes over `control`, ready at once (tests and embedders
/// that start serving after the host is up).
pub fn router(control: Arc<Control>) -> Router {
    let service = Service::new();
    service.set_ready();
    router_with(control, service)
}

/// The API's routes over `control`, with `service`'s readiness and intake.
pub fn router_with(control: Arc<Control>, service: Arc<Service>) -> Router {
    let app = App { control, service };
    // Agent tools over MCP: an agent's token only, proven at every request.
    let shared = app
        .service
        .mcp
        .get_or_init(|| mcp::Shared::new(app.control.clone()))
        .clone();
    let tools = mcp::http_service(shared, app.service.mcp_stop.clone());
    let agents = Router::new().route_service("/mcp", tools).route_layer(
        axum::middleware::from_fn_with_state(app.clone(), mcp::agent_only),
    );
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/kv/{plugin}", get(kv_list))
        .route("/v1/kv/{plugin}/{key}", get(kv_get).put(kv_set))
        .route("/v1/whoami", get(whoami))
        .route("/v1/runs", get(runs_list).post(run_start))
        .route("/v1/runs/{id}", get(runs_show))
        .route("/v1/runs/{id}/cancel", post(runs_cancel))
        .route("/v1/proposals", get(proposals_list))
        .route("/v1/proposals/{id}", get(proposals_show))
        .route("/v1/proposals/{id}/approve", post(approve))
        .route("/v1/proposals/{id}/reject", post(reject))
        .route("/v1/escalations", get(escalations_list))
        .route("/v1/escalations/{id}/resolve", post(resolve))
        .route("/v1/audit", get(audit_show))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/v1/kpi", get(kpi))
        .route("/v1/kpi/series", get(kpi_series))
        .route("/v1/kpi/framework", get(kpi_framework))
        .route("/v1/plugins", get(plugins))
        .route("/v1/grants", get(grants))
        .merge(plugins::routes(Router::new()))
        .merge(hooks::routes(app.control.clone()))
        // The operator console: its page and its two routes of its own.
        .merge(console::routes())
        .merge(agents)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(app.clone(), intake))
        .with_state(app)
}

/// While draining, refuse new work with 503 (health, readiness and
/// metrics still answer, so an orchestrator sees the host stop).
async fn intake(State(app): State<App>, req: Request, next: Next) -> Response {
    let open = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    if app.service.draining() && !open {
        return unavailable(
            "charter up is stopping: it takes no new requests; retry against the next start",
        );
    }
    next.run(req).await
}

fn unavailable(message: &str) -> Response {
    let body = serde_json::json!({
        "ok": false,
        "error": {
            "message": message,
            "exit_code": 1,
            "class": "error",
            "kind": "unavailable",
        }
    });
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

/// `GET /readyz`: 200 once ready, 503 before and while stopping.
async fn readyz(State(app): State<App>) -> Response {
    if app.service.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if app.service.draining() {
        unavailable("stopping")
    } else {
        unavailable("starting: opening the log and index, resuming runs")
    }
}

/// `GET /metrics`: Prometheus text format (authenticated like the API).
async fn metrics_text(State(app): State<App>, _: Caller) -> Result<Response, HttpError> {
    let ready = app.service.ready();
    let a = app.clone();
    let text =
        tokio::task::spawn_blocking(move || metrics::render(&a.control, &a.service.metrics, ready))
            .await
            .map_err(|e| HttpError(ApiError::internal(&e)))??;
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    Ok(r)
}

/// Serve `router(control)` on `listener` until `shutdown` completes; then
/// stop taking requests and let those in flight finish.
pub async fn serve(
    control: Arc<Control>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = Service::new();
    service.set_ready();
    serve_with(control, service, listener, shutdown).await
}

/// [`serve`] with `service`'s readiness and intake; records the refusal
/// summaries due every minute, and all of them when it stops.
pub async fn serve_with(
    control: Arc<Control>,
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (c, s) = (control.clone(), service.clone());
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tick.tick().await;
            s.record_due_refusals(&c, false).await;
        }
    });
    // Nagle off on every accepted connection: a response written in pieces
    // (headers, then an event stream's chunks, then its end) would
    // otherwise wait for the client's delayed acknowledgement, 40 ms per
    // response on a kept-alive connection (an MCP client's `/mcp` session).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
        }
    });
    let served = axum::serve(listener, router_with(control.clone(), service.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    ticker.abort();
    service.record_due_refusals(&control, true).await;
    served
}

// ---- who asks ---------------------------------------------------------------

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<App> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Caller, HttpError> {
        let route = match parts.extensions.get::<MatchedPath>() {
            Some(m) => format!("{} {}", parts.method, m.as_str()),
            None => parts.method.to_string(),
        };
        let token = match bearer(&parts.headers) {
            Ok(t) => t,
            Err(e) => return Err(refuse(app, route, "bad-scheme", None, e).await),
        };
        let credential = match token {
            Some(t) => Credential::Token(t),
            None => Credential::Nothing,
        };
        match app.control.principal_refreshing(credential).await {
            Ok(p) => {
                tracing::debug!(identity = %p.name, "authenticated");
                Ok(Caller(p))
            }
            Err(e) => {
                let now = charter_audit::now_ms() / 1000;
                let auth = app.control.authenticator();
                let reason = match auth.authenticate(token, now) {
                    Err(a) => a.kind(),
                    // A valid token of an AI agent: the API is not for it
                    // (said as what it is, not as an unknown token).
                    Ok(p) if p.kind == charter_config::IdentityKind::Agent => "agent-token",
                    // Accepted a moment later (an expiry cannot come
                    // back): said as what the message says.
                    Ok(_) => "unknown-token",
                };
                let identity = token
                    .and_then(|t| auth.named_identity(t))
                    .map(str::to_string);
                Err(refuse(app, route, reason, identity, HttpError(e)).await)
            }
        }
    }
}

/// Record a refused authentication (within [`refusals`]' bound) and
/// answer with `e`. The record is on disk before the answer; a failure to
/// record it is logged, and the request refused all the same.
pub(crate) async fn refuse(
    app: &App,
    route: String,
    reason: &'static str,
    identity: Option<String>,
    e: HttpError,
) -> HttpError {
    let admit = app.service.refusals.admit(reason, charter_audit::now_ms());
    let mut events: Vec<charter_audit::Event> = admit.summary.into_iter().collect();
    if admit.record {
        events.push(charter_audit::Event::AuthRefused {
            route,
            identity,
            reason: reason.to_string(),
        });
    }
    tracing::info!(reason, "authentication refused");
    if let Err(err) = app.control.record_auth_refusals(events).await {
        tracing::error!(error = %err, "cannot record a refused authentication");
    }
    e
}

/// The token of an `Authorization: Bearer` header; a header of another
/// scheme is refused rather than ignored.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not text"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(unauthenticated(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

fn unauthenticated(message: &str) -> HttpError {
    HttpError(ApiError::new(
        ErrorClass::Refused,
        "unauthenticated",
        message,
    ))
}

// ---- answers ----------------------------------------------------------------

/// An [`ApiError`] as an HTTP answer: the status of its class, the body
/// `charter … --json` prints for a failure.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        HttpError(e)
    }
}

/// The status of an error.
pub fn status_of(e: &ApiError) -> StatusCode {
    match (e.class, e.kind.as_str()) {
        (_, "unauthenticated") => StatusCode::UNAUTHORIZED,
        (_, "not-found") => StatusCode::NOT_FOUND,
        (_, "invalid") => StatusCode::UNPROCESSABLE_ENTITY,
        (_, "internal") => StatusCode::INTERNAL_SERVER_ERROR,
        (_, "unavailable") => StatusCode::SERVICE_UNAVAILABLE,
        (ErrorClass::Usage, _) => StatusCode::BAD_REQUEST,
        (ErrorClass::Refused, _) => StatusCode::FORBIDDEN,
        (ErrorClass::Limit, _) => StatusCode::PAYLOAD_TOO_LARGE,
        (ErrorClass::Waiting, _) => StatusCode::ACCEPTED,
        (ErrorClass::Error, _) => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let e = &self.0;
        // The CLI's `{ok: false, error: {message, exit_code}}`, plus what
        // an HTTP client dispatches on: the class, the kind and, for a
        // refused decision, the rule.
        let body = serde_json::json!({
            "ok": false,
            "error": {
                "message": e.message,
                "exit_code": Failure::from(e).error.exit_code,
                "class": e.class,
                "kind": e.kind,
                "refusal": e.refusal,
            }
        });
        let mut r = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

type Answer<T> = Result<Json<T>, HttpError>;

/// Run `f`, a call made for the caller `p`: the events that record `p`
/// say how it was proven (a token, or an OIDC JWT).
async fn as_caller<F: Future>(p: &Principal, f: F) -> F::Output {
    charter_runtime::proven(&p.name, p.method.as_str(), f).await
}

/// Run a blocking `Control` read (it reads the log and the index) off the
/// async workers.
async fn blocking<T, F>(app: &App, f: F) -> Answer<T>
where
    T: Send + 'static,
    F: FnOnce(&Control) -> Result<T, ApiError> + Send + 'static,
{
    let control = app.control.clone();
    match tokio::task::spawn_blocking(move || f(&control)).await {
        Ok(r) => r.map(Json).map_err(HttpError),
        Err(e) => Err(HttpError(ApiError::internal(&e))),
    }
}

// ---- handlers ---------------------------------------------------------------

#[derive(Serialize)]
struct WhoAmI {
    identity: String,
    kind: &'static str,
    roles: Vec<String>,
    /// Declared under `[approvers]`: may decide what its roles cover.
    approver: bool,
    /// The deployment served (its `[deployment] name`).
    deployment: String,
}

async fn whoami(State(app): State<App>, Caller(p): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        approver: app.control.deployment().approvers.contains_key(&p.name),
        identity: p.name,
        kind: p.kind.as_str(),
        roles: p.roles,
        deployment: app.control.deployment().name.clone(),
    })
}

async fn runs_list(
    State(app): State<App>,
    _: Caller,
    Query(req): Query<charter_api::RunsListRequest>,
) -> Answer<charter_api::RunsList> {
    blocking(&app, move |c| c.runs_list(&req)).await
}

async fn runs_show(
    State(app): State<App>,
    _: Caller,
    Path(id): Path<String>,
) -> Answer<charter_api::RunReport> {
    blocking(&app, move |c| c.runs_show(&charter_api::RunId { id })).await
}

/// `POST /v1/runs`: what to run; who runs it is the caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub workflow: String,
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A run is recorded, then driven in the background: the answer names it
/// at once (202); follow it with `GET /v1/runs/{id}`.
async fn run_start(
    State(app): State<App>,
    Caller(p): Caller,
    Json(body): Json<RunBody>,
) -> Result<Response, HttpError> {
    let req = charter_api::RunRequest {
        workflow: body.workflow,
        input: body.input,
        initiator: p.name.clone(),
        detach: true,
    };
    let started = as_caller(&p, app.control.start_run(&req)).await?;
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

async fn runs_cancel(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Answer<charter_api::RunReport> {
    let req = charter_api::CancelRequest {
        id,
        by: p.name.clone(),
    };
    Ok(Json(as_caller(&p, app.control.runs_cancel(&req)).await?))
}

async fn proposals_list(
    State(app): State<App>,
    _: Caller,
    Query(req): Query<charter_api::ProposalsListRequest>,
) -> Answer<charter_api::ProposalsList> {
    blocking(&app, move |c| c.proposals_list(&req)).await
}

/// `GET /v1/proposals/{id}?detail=true`: the proposal and its execution
/// (what `proposals show` prints as text); without it, the proposal
/// (what `--json` prints).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    #[serde(default)]
    pub detail: bool,
}

async fn proposals_show(
    State(app): State<App>,
    _: Caller,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, HttpError> {
    let Json(d) = blocking(&app, move |c| {
        c.proposals_show(&charter_api::ProposalId { id })
    })
    .await?;
    Ok(if q.detail {
        Json(d).into_response()
    } else {
        Json(d.proposal).into_response()
    })
}

/// `POST /v1/proposals/{id}/approve|reject`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    #[serde(default)]
    pub comment: Option<String>,
}

async fn decide(
    app: App,
    p: Principal,
    id: String,
    body: Option<Json<DecideBody>>,
    approve: bool,
) -> Answer<charter_api::DecideReport> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let req = charter_api::DecideRequest {
        id,
        by: p.name.clone(),
        approve,
        comment: body.comment,
    };
    Ok(Json(
        as_caller(&p, app.control.proposals_decide(&req)).await?,
    ))
}

async fn approve(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Option<Json<DecideBody>>,
) -> Answer<charter_api::DecideReport> {
    decide(app, p, id, body, true).await
}

async fn reject(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Option<Json<DecideBody>>,
) -> Answer<charter_api::DecideReport> {
    decide(app, p, id, body, false).await
}

async fn escalations_list(
    State(app): State<App>,
    _: Caller,
    Query(req): Query<charter_api::EscalationsListRequest>,
) -> Answer<charter_api::EscalationsList> {
    blocking(&app, move |c| c.escalations_list(&req)).await
}

/// `POST /v1/escalations/{id}/resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    pub action: charter_api::ResolveAction,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub comment: Option<String>,
}

async fn resolve(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Json(body): Json<ResolveBody>,
) -> Answer<charter_api::RunReport> {
    let req = charter_api::ResolveRequest {
        id,
        by: p.name.clone(),
        action: body.action,
        output: body.output,
        comment: body.comment,
    };
    Ok(Json(
        as_caller(&p, app.control.escalations_resolve(&req)).await?,
    ))
}

/// `GET /v1/audit`: the query names what `charter audit show` takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    pub plugin: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub proposal: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

async fn audit_show(
    State(app): State<App>,
    _: Caller,
    Query(q): Query<AuditQuery>,
) -> Answer<charter_api::AuditEvents> {
    let req = charter_api::ShowRequest {
        plugin: q.plugin,
        since: q.since,
        kind: q.kind,
        proposal: q.proposal,
        limit: q.limit,
        from: q.from,
        to: q.to,
    };
    blocking(&app, move |c| c.audit_show(&req)).await
}

async fn audit_verify(State(app): State<App>, _: Caller) -> Answer<charter_api::VerifyReport> {
    blocking(&app, |c| {
        c.audit_verify(&charter_api::VerifyRequest::default())
    })
    .await
}

async fn kpi(State(app): State<App>, _: Caller) -> Answer<charter_api::Kpi> {
    blocking(&app, |c| c.kpi()).await
}

/// `GET /v1/kpi/framework`: the framework's table of this deployment
/// (`charter kpi --framework`), what the console's KPI page shows.
async fn kpi_framework(State(app): State<App>, _: Caller) -> Answer<charter_api::FrameworkKpi> {
    blocking(&app, |c| c.kpi_framework()).await
}

/// `GET /v1/kpi/series`: bad parameters are a 400 naming the parameter
/// (checked before the log is read), the window at most
/// [`charter_api::MAX_BUCKETS`] buckets.
async fn kpi_series(
    State(app): State<App>,
    _: Caller,
    Query(req): Query<charter_api::KpiSeriesRequest>,
) -> Answer<charter_api::KpiSeries> {
    blocking(&app, move |c| c.kpi_series(&req)).await
}

/// `name` as a file name: letters, digits, `.`, `-` and `_` only.
fn file_name(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `body` as a download named `name`.
fn attachment(body: String, content_type: &'static str, name: &str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /v1/audit/export`: every event, one JSON document a line, as
/// `charter audit export` writes them (one download at a time).
async fn audit_export(State(app): State<App>, _: Caller) -> Result<Response, HttpError> {
    let _one = app.service.downloads.lock().await;
    let Json(text) = blocking(&app, |c| {
        let mut out = String::new();
        for r in c.audit_export()?.records {
            out.push_str(&serde_json::to_string(&r).map_err(|e| ApiError::internal(&e))?);
            out.push('\n');
        }
        Ok(out)
    })
    .await?;
    let name = format!(
        "charter-audit-{}.jsonl",
        file_name(&app.control.deployment().name)
    );
    Ok(attachment(text, "application/x-ndjson", &name))
}

/// `GET /v1/audit/checkpoint`: the log's last entry signed with the
/// deployment's key, the document `charter audit checkpoint` writes (one
/// at a time: the first creates the key).
async fn audit_checkpoint(State(app): State<App>, _: Caller) -> Result<Response, HttpError> {
    let _one = app.service.downloads.lock().await;
    let Json(cp) = blocking(&app, |c| c.audit_checkpoint()).await?;
    let text = serde_json::to_string_pretty(&cp).map_err(|e| HttpError(ApiError::internal(&e)))?;
    let name = format!(
        "charter-checkpoint-{}-{}.json",
        file_name(&cp.deployment),
        cp.seq
    );
    Ok(attachment(text, "application/json", &name))
}

async fn plugins(State(app): State<App>, _: Caller) -> Answer<charter_api::PluginsList> {
    blocking(&app, |c| c.plugins(&charter_api::PluginsRequest {})).await
}

async fn grants(State(app): State<App>, _: Caller) -> Answer<charter_api::GrantsReport> {
    blocking(&app, |c| c.grants(&charter_api::GrantsRequest {})).await
}

/// `PUT /v1/kv/{plugin}/{key}`: the value; who writes it is the caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvBody {
    pub value: String,
}

async fn kv_set(
    State(app): State<App>,
    Caller(p): Caller,
    Path((plugin, key)): Path<(String, String)>,
    Json(body): Json<KvBody>,
) -> Answer<charter_api::KvSetResponse> {
    let req = charter_api::KvSetRequest {
        plugin,
        key,
        value: body.value,
        by: p.name.clone(),
    };
    Ok(Json(as_caller(&p, app.control.kv_set(&req)).await?))
}

async fn kv_get(
    State(app): State<App>,
    _: Caller,
    Path((plugin, key)): Path<(String, String)>,
) -> Answer<charter_api::KvValue> {
    blocking(&app, move |c| {
        c.kv_get(&charter_api::KvGetRequest { plugin, key })
    })
    .await
}

/// `GET /v1/kv/{plugin}?prefix=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvListQuery {
    #[serde(default)]
    pub prefix: String,
}

async fn kv_list(
    State(app): State<App>,
    _: Caller,
    Path(plugin): Path<String>,
    Query(q): Query<KvListQuery>,
) -> Answer<charter_api::KvKeys> {
    blocking(&app, move |c| {
        c.kv_list(&charter_api::KvListRequest {
            plugin,
            prefix: q.prefix,
        })
    })
    .await
}
