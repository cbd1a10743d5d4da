//! The operator console (issue 14): a static page and a small vanilla
//! script, compiled into the binary (`include_str!`: no CDN, no build
//! step), that use the same JSON API as the CLI with the same bearer
//! tokens and the same checks. The page holds no data of its own: it
//! renders what the API answers its signed-in user.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` · `/console/app.js` · `/console/app.css` (no token: they hold no data) | the page |
//! | `GET /v1/approvers` | the people who may decide, with their roles ("who may decide"): for declared approvers and operators only |
//! | `GET /v1/events` (`text/event-stream`) | `log` events: the last committed sequence number, after commits |
//!
//! **Why it is safe to open** (SECURITY.md promise 20):
//! - The token is typed into the page and kept in the tab's
//!   `sessionStorage`; every request sends it as `Authorization: Bearer`
//!   (the live feed too: the page reads it with `fetch`, not
//!   `EventSource`, which could only carry it in the URL). No cookie
//!   exists, so nothing rides along on a request another site makes: a
//!   cross-site request carries no credential, and CSRF has nothing to
//!   use. No token is ever in a URL.
//! - Every value the page shows (arguments, rationales, plugin names,
//!   comments, errors) is put in the page as text (`textContent`, DOM
//!   nodes), never parsed as HTML: the script assigns no HTML anywhere,
//!   and the policy below makes the browser refuse it if it ever did
//!   (`require-trusted-types-for 'script'` with no policy allowed), run
//!   no inline or foreign script, and never show the page in a frame.
//! - What the page offers is what the API allows: approve and reject only
//!   to a person holding the proposal's role, resolve only to a person
//!   holding the escalation's role; and the API decides regardless (the
//!   page is a convenience, not a check).
//! - Who may decide (`GET /v1/approvers`: the approvers' names and
//!   roles, a map of whom to press) is for those who decide or run the
//!   deployment: a declared approver or an identity holding `operator`.
//!   Anyone else gets a 403 and an `auth-refused` event (`missing-role`),
//!   and the page, which knows from `/v1/whoami` (`approver`), does not
//!   ask.
//! - The live feed says only that the log moved (a sequence number any
//!   reader could learn from `audit show`), to authenticated callers; at
//!   most [`MAX_STREAMS`] at once, each for at most [`STREAM_LIFETIME`]
//!   (then the page reconnects, authenticating again: a removed token
//!   stops receiving), and each ends when the host starts to stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use charter_api::{ApiError, OPERATOR_ROLE};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::{App, Caller, HttpError, refuse};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The page's Content-Security-Policy: its own script and style only, no
/// inline script, no HTML from strings (Trusted Types with no policy), no
/// frames, no plugins, no form posts, requests to this origin only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// Live feeds open at once; one more is refused with 429.
pub const MAX_STREAMS: usize = 32;

/// How long one live feed lasts before the page must reconnect (and so
/// authenticate again).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(600);

/// At most one `log` event per this interval: a burst of commits is one
/// event (the page re-reads what it shows, not every event).
const COALESCE: Duration = Duration::from_millis(200);

/// The live feeds' admission.
#[derive(Debug)]
pub struct Streams(Arc<Semaphore>);

impl Default for Streams {
    fn default() -> Streams {
        Streams(Arc::new(Semaphore::new(MAX_STREAMS)))
    }
}

/// The console's routes (grouped here; merged into the API's router).
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { page("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/v1/approvers", get(approvers))
        .route("/v1/events", get(events))
}

/// A console asset with the headers that make it safe to open.
fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /v1/approvers`: one declared person.
#[derive(Debug, Serialize)]
pub struct ApproverEntry {
    pub name: String,
    pub roles: Vec<String>,
}

/// `GET /v1/approvers`.
#[derive(Debug, Serialize)]
pub struct Approvers {
    pub approvers: Vec<ApproverEntry>,
}

async fn approvers(
    State(app): State<App>,
    route: MatchedPath,
    Caller(p): Caller,
) -> Result<Json<Approvers>, HttpError> {
    let declared = app.control.deployment().approvers.contains_key(&p.name);
    if !declared && !p.has_role(OPERATOR_ROLE) {
        let e = ApiError::refused(format!(
            "{} may not list who may decide: only a declared approver or an identity holding `{OPERATOR_ROLE}` may",
            p.name
        ));
        return Err(refuse(
            &app,
            format!("GET {}", route.as_str()),
            "missing-role",
            Some(p.name.clone()),
            HttpError(e),
        )
        .await);
    }
    let approvers = app
        .control
        .deployment()
        .approvers
        .iter()
        .map(|(name, a)| ApproverEntry {
            name: name.clone(),
            roles: a.roles.clone(),
        })
        .collect();
    Ok(Json(Approvers { approvers }))
}

/// One live feed's state.
struct Feed {
    rx: watch::Receiver<u64>,
    app: App,
    /// The last sequence number sent (`None` before the first event).
    sent: Option<u64>,
    until: tokio::time::Instant,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    /// The next event: the current sequence number at once, then after
    /// each change (coalesced); `None` ends the feed (its lifetime is
    /// over, the host stops, or the log is gone).
    async fn next(&mut self) -> Option<u64> {
        if self.sent.is_none() {
            let seq = *self.rx.borrow_and_update();
            self.sent = Some(seq);
            return Some(seq);
        }
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        loop {
            if self.app.service.draining() {
                return None;
            }
            tokio::select! {
                changed = self.rx.changed() => changed.ok()?,
                _ = tokio::time::sleep_until(self.until) => return None,
                _ = poll.tick() => continue,
            }
            tokio::time::sleep(COALESCE).await;
            let seq = *self.rx.borrow_and_update();
            if Some(seq) != self.sent {
                self.sent = Some(seq);
                return Some(seq);
            }
        }
    }
}

/// `GET /v1/events`: `event: log`, `data: {"seq": N}` now and after the
/// log moves.
async fn events(State(app): State<App>, _: Caller) -> Result<Response, HttpError> {
    let Ok(permit) = app.service.streams.0.clone().try_acquire_owned() else {
        let mut r = HttpError(ApiError::new(
            charter_api::ErrorClass::Limit,
            "too-many-streams",
            format!("{MAX_STREAMS} live feeds are open already; retry later"),
        ))
        .into_response();
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return Ok(r);
    };
    let c = app.control.clone();
    let rx = tokio::task::spawn_blocking(move || c.log_watch())
        .await
        .map_err(|e| HttpError(ApiError::internal(&e)))??;
    let feed = Feed {
        rx,
        app,
        sent: None,
        until: tokio::time::Instant::now() + STREAM_LIFETIME,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        let seq = f.next().await?;
        let event = Event::default()
            .event("log")
            .data(serde_json::json!({ "seq": seq }).to_string());
        Some((Ok::<_, Infallible>(event), f))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
