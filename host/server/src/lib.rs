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
//! | `GET /healthz` (no token) | — |
//! | `GET /v1/whoami` | — |
//! | `GET /v1/runs?status=` · `GET /v1/runs/{id}` | `runs list` · `runs show` |
//! | `POST /v1/runs` `{workflow, input}` | `run --detach` |
//! | `POST /v1/runs/{id}/cancel` | `runs cancel` |
//! | `GET /v1/proposals?all=` · `GET /v1/proposals/{id}` | `proposals list` · `show` |
//! | `POST /v1/proposals/{id}/approve` · `/reject` `{comment}` | `proposals approve` · `reject` |
//! | `GET /v1/escalations?all=` · `POST /v1/escalations/{id}/resolve` | `escalations list` · `resolve` |
//! | `GET /v1/audit?type=&plugin=&proposal=&since=&limit=` · `GET /v1/audit/verify` | `audit show` · `audit verify` |
//! | `GET /v1/kpi` · `GET /v1/plugins` · `GET /v1/grants` | `kpi` · `plugins` · `grants` |
//! | `POST /hooks/{name}` (a signature or token of its own, see [`hooks`]) | — |
//!
//! Status codes follow the error's class: usage 400, not found 404,
//! invalid 422, unauthenticated 401, refused by governance 403, a limit
//! 413, anything else 500; a run waiting for people is 202.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
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
}

/// The API's routes over `control`.
pub fn router(control: Arc<Control>) -> Router {
    let app = App { control };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
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
        .route("/v1/kpi", get(kpi))
        .route("/v1/plugins", get(plugins))
        .route("/v1/grants", get(grants))
        .merge(hooks::routes(app.control.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serve `router(control)` on `listener` until `shutdown` completes; then
/// stop taking requests and let those in flight finish.
pub async fn serve(
    control: Arc<Control>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(control))
        .with_graceful_shutdown(shutdown)
        .await
}

// ---- who asks ---------------------------------------------------------------

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<App> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Caller, HttpError> {
        let token = bearer(&parts.headers)?;
        let credential = match token {
            Some(t) => Credential::Token(t),
            None => Credential::Nothing,
        };
        let p = app.control.principal(credential).map_err(HttpError)?;
        tracing::debug!(identity = %p.name, "authenticated");
        Ok(Caller(p))
    }
}

/// The token of an `Authorization: Bearer` header; a header of another
/// scheme is refused rather than ignored.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
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
}

async fn whoami(Caller(p): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        identity: p.name,
        kind: p.kind.as_str(),
        roles: p.roles,
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
        initiator: p.name,
        detach: true,
    };
    let started = app.control.start_run(&req).await?;
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

async fn runs_cancel(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Answer<charter_api::RunReport> {
    let req = charter_api::CancelRequest { id, by: p.name };
    Ok(Json(app.control.runs_cancel(&req).await?))
}

async fn proposals_list(
    State(app): State<App>,
    _: Caller,
    Query(req): Query<charter_api::ProposalsListRequest>,
) -> Answer<charter_api::ProposalsList> {
    blocking(&app, move |c| c.proposals_list(&req)).await
}

async fn proposals_show(
    State(app): State<App>,
    _: Caller,
    Path(id): Path<String>,
) -> Answer<charter_api::Proposal> {
    blocking(&app, move |c| {
        c.proposals_show(&charter_api::ProposalId { id })
            .map(|d| d.proposal)
    })
    .await
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
        by: p.name,
        approve,
        comment: body.comment,
    };
    Ok(Json(app.control.proposals_decide(&req).await?))
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
        by: p.name,
        action: body.action,
        output: body.output,
        comment: body.comment,
    };
    Ok(Json(app.control.escalations_resolve(&req).await?))
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

async fn plugins(State(app): State<App>, _: Caller) -> Answer<charter_api::PluginsList> {
    blocking(&app, |c| c.plugins(&charter_api::PluginsRequest {})).await
}

async fn grants(State(app): State<App>, _: Caller) -> Answer<charter_api::GrantsReport> {
    blocking(&app, |c| c.grants(&charter_api::GrantsRequest {})).await
}
