//! Hot loading over HTTP (`charter plugins ...` through the host).
//!
//! | route | CLI |
//! | --- | --- |
//! | `GET /v1/plugins/versions` | `plugins list` |
//! | `POST /v1/plugins/{name}` (body: the component's bytes) | `plugins push FILE --plugin NAME` |
//! | `GET /v1/plugins/{name}/history` | `plugins history NAME` |
//! | `GET /v1/plugins/{name}/diff?a=&b=` | `plugins diff NAME A B` |
//! | `POST /v1/plugins/{name}/pin` `{digest}` (`null` unpins) | `plugins pin NAME DIGEST` |
//! | `POST /v1/plugins/{name}/rollback` `{digest}` (`null`: the previous) | `plugins rollback NAME [DIGEST]` |
//! | `POST /v1/config/apply` (no body: the file the host started with) | `config apply` |
//!
//! Push, pin, rollback and diff (it compiles both versions; one at a
//! time) need the `operator` role (a 403 and an `auth-refused` event with
//! reason `missing-role` otherwise); list and history need any identity. A push body is read only after the token and the role
//! are checked, bounded by the plugin's `max_component_mib` and in time;
//! one over it is a 413 and a `plugin-refused` event (`too-large`).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use charter_api::{ApiError, ErrorClass, Principal};
use serde::Deserialize;

use crate::{Answer, App, Caller, HttpError, as_caller, blocking, refuse};

/// How long a push body may take to arrive.
const READ_BODY: Duration = Duration::from_secs(120);

pub(crate) fn routes(r: axum::Router<App>) -> axum::Router<App> {
    r.route("/v1/plugins/versions", get(versions))
        .route("/v1/plugins/{name}", post(push))
        .route("/v1/plugins/{name}/history", get(history))
        .route("/v1/plugins/{name}/diff", get(diff))
        .route("/v1/plugins/{name}/pin", post(pin))
        .route("/v1/plugins/{name}/rollback", post(rollback))
        .route("/v1/config/apply", post(config_apply))
}

/// The caller holds `operator`, or the request is refused (403) and
/// recorded.
async fn operator(
    app: &App,
    route: &MatchedPath,
    method: &str,
    p: &Principal,
) -> Result<(), HttpError> {
    let what = match route.as_str() {
        "/v1/config/apply" => "apply a configuration",
        _ => "change plugin versions",
    };
    let Err(e) = charter_api::require_operator(p, what) else {
        return Ok(());
    };
    Err(refuse(
        app,
        format!("{method} {}", route.as_str()),
        "missing-role",
        Some(p.name.clone()),
        HttpError(e),
    )
    .await)
}

async fn versions(State(app): State<App>, _: Caller) -> Answer<charter_api::VersionsList> {
    blocking(&app, |c| c.plugins_versions()).await
}

async fn push(
    State(app): State<App>,
    Caller(p): Caller,
    route: MatchedPath,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, HttpError> {
    operator(&app, &route, "POST", &p).await?;
    let deployment = app.control.deployment();
    let Some(spec) = deployment.plugins.get(&name) else {
        return Err(HttpError(ApiError::not_found(format!(
            "plugin {} is not in the deployment",
            charter_api::validate::shown(&name)
        ))));
    };
    let limit = spec.limits.max_component_bytes as usize;
    let read = tokio::time::timeout(READ_BODY, axum::body::to_bytes(body, limit)).await;
    let Ok(Ok(bytes)) = read else {
        let e = ApiError::new(
            ErrorClass::Limit,
            "limit",
            format!(
                "{name}: the component is larger than its limit of {} MiB (limits.max_component_mib), or was cut off; the serving version goes on",
                limit >> 20
            ),
        );
        app.control
            .plugins_push_refused(&name, "too-large", &e.message)
            .await;
        return Err(HttpError(e));
    };
    let req = charter_api::PushRequest {
        plugin: name,
        bytes: bytes.to_vec(),
        by: p.name.clone(),
    };
    let a = as_caller(&p, app.control.plugins_push(req)).await?;
    Ok((StatusCode::OK, Json(a)).into_response())
}

async fn history(
    State(app): State<App>,
    _: Caller,
    Path(name): Path<String>,
) -> Answer<charter_api::PluginHistory> {
    blocking(&app, move |c| c.plugins_history(&name)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    pub a: String,
    pub b: String,
}

/// A diff compiles both versions: operators only (as push), and one diff
/// at a time, so no identity can fill the cores with compiles.
async fn diff(
    State(app): State<App>,
    Caller(p): Caller,
    route: MatchedPath,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Answer<charter_api::PluginDiff> {
    operator(&app, &route, "GET", &p).await?;
    static ONE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _one = ONE
        .acquire()
        .await
        .map_err(|e| HttpError(ApiError::internal(&e)))?;
    Ok(Json(app.control.plugins_diff(&name, &q.a, &q.b).await?))
}

/// `POST /v1/plugins/{name}/pin` and `/rollback`: which digest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestBody {
    #[serde(default)]
    pub digest: Option<String>,
}

async fn pin(
    State(app): State<App>,
    Caller(p): Caller,
    route: MatchedPath,
    Path(name): Path<String>,
    Json(body): Json<DigestBody>,
) -> Answer<charter_api::PinReport> {
    operator(&app, &route, "POST", &p).await?;
    Ok(Json(
        as_caller(
            &p,
            app.control
                .plugins_pin(&name, body.digest.as_deref(), &p.name),
        )
        .await?,
    ))
}

async fn rollback(
    State(app): State<App>,
    Caller(p): Caller,
    route: MatchedPath,
    Path(name): Path<String>,
    Json(body): Json<DigestBody>,
) -> Answer<charter_api::Activation> {
    operator(&app, &route, "POST", &p).await?;
    Ok(Json(
        as_caller(
            &p,
            app.control
                .plugins_rollback(&name, body.digest.as_deref(), &p.name),
        )
        .await?,
    ))
}

/// `POST /v1/config/apply`: re-read the deployment file the host started
/// with and apply it (operators only; one apply or push at a time).
async fn config_apply(
    State(app): State<App>,
    Caller(p): Caller,
    route: MatchedPath,
) -> Answer<charter_api::ConfigApplyReport> {
    operator(&app, &route, "POST", &p).await?;
    Ok(Json(
        as_caller(&p, app.control.config_apply(&p.name)).await?,
    ))
}
