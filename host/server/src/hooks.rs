//! `POST /hooks/<name>`: a webhook delivery starts a run of the workflow
//! that declares the hook (`[workflows.NAME.triggers.webhook]`), with the
//! JSON body as its input.
//!
//! **Who delivers.** A hook with a `secret` accepts `X-Hub-Signature-256:
//! sha256=<hex>`, the HMAC-SHA256 of the raw body keyed by the secret's
//! value (GitHub's scheme; the value is read from its source at each
//! delivery, so a rotated secret applies at once); the run's initiator is
//! `hook:<name>`. A hook with `identities` accepts `Authorization: Bearer`
//! of one of them; the run's initiator is that identity (so separation of
//! duties holds against it). Both are compared in constant time. The
//! run's `run-started` records the trigger: hook, delivery id and how the
//! delivery proved itself.
//!
//! **Once per delivery.** The delivery id (the hook's `delivery_header`,
//! `X-Delivery-Id` unless set) is required; a delivery whose id started a
//! run before answers that run (200, `"status": "duplicate"`) and starts
//! nothing, also after a restart (the id is in the log and the index).
//!
//! **Replays.** GitHub's signature covers the body only: a signed body
//! seen under another delivery id within [`REPLAY_WINDOW`] answers the run
//! it started (200, duplicate) and starts nothing ([`Replays`], in memory).
//!
//! **Answers.** 202 `{ok, run, status: "started", duplicate: false}`; 200
//! for a duplicate; 401 an unknown hook, or no or a bad signature or token,
//! all with one body ([`NOT_AUTHENTICATED`]: a hook name cannot be probed;
//! the audit event says which); 413 a body over the hook's `max_body_kib`;
//! 400 no delivery id or a body that is not JSON; 422 a body without the
//! shape the hook declares (`require`, `equals`: the pointer that does not
//! hold is named), counted like a 401; 503 when the trigger
//! index cannot be read (nothing started). Errors are the API's `{ok:
//! false, error: {...}}`.
//!
//! **Refusals are audit events, aggregated.** Each 401/413 counts
//! toward a `hook-refused` event per (hook, reason) — unknown names share
//! one bucket, `?` — recorded at most once per [`REFUSAL_WINDOW`] with the
//! number of refusals it stands for. An anonymous flood adds at most
//! (declared hooks + 1) × 5 events per window, whatever its rate; the
//! refusals counted after a bucket's last event are carried by its next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use charter_api::{ApiError, Control, Credential, ErrorClass};
use charter_audit::TriggerRef;
use charter_config::Webhook;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::HttpError;

/// At most one `hook-refused` event per (hook, reason) per window.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// The longest delivery id accepted.
pub const MAX_DELIVERY_ID: usize = 200;

/// The hooks' shared state.
#[derive(Debug, Clone)]
pub struct Hooks {
    control: Arc<Control>,
    refusals: Arc<Refusals>,
    replays: Arc<Replays>,
}

/// How long a signed body is remembered against a replay under a new
/// delivery id.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(3600);
/// The most bodies remembered (the oldest are forgotten first).
pub const MAX_REMEMBERED: usize = 100_000;

/// Signed bodies seen lately, by (hook, SHA-256 of the body): the run
/// each started. In memory: a restart forgets them (see SECURITY.md).
#[derive(Debug, Default)]
pub struct Replays(Mutex<HashMap<(String, [u8; 32]), Seen>>);

#[derive(Debug)]
struct Seen {
    /// `None` while the delivery that claimed the body is being started.
    run: Option<String>,
    delivery: String,
    at: Instant,
}

/// What [`Replays::claim`] found for a signed body.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First seen (or seen again under its own delivery id, which the
    /// trigger index answers): go on and start it.
    Start,
    /// Already started under another delivery id: that run.
    Started(String),
    /// Being started under another delivery id right now.
    InFlight,
}

impl Replays {
    /// Check and reserve, in one step, a signed body delivered as
    /// `delivery`: a body another delivery id claimed within the window is
    /// not started again, also while that one is still starting (two
    /// copies sent at once, or a sender that hung up mid-request).
    pub fn claim(&self, hook: &str, digest: [u8; 32], delivery: &str, now: Instant) -> Claim {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (hook.to_string(), digest);
        if let Some(s) = m.get(&key)
            && now.duration_since(s.at) < REPLAY_WINDOW
        {
            if s.delivery == delivery {
                return Claim::Start;
            }
            return match &s.run {
                Some(run) => Claim::Started(run.clone()),
                None => Claim::InFlight,
            };
        }
        if m.len() >= MAX_REMEMBERED {
            m.retain(|_, s| now.duration_since(s.at) < REPLAY_WINDOW);
        }
        if m.len() >= MAX_REMEMBERED {
            // Still full within the window: forget the older half.
            let mut times: Vec<Instant> = m.values().map(|s| s.at).collect();
            times.sort();
            let cut = times[times.len() / 2];
            m.retain(|_, s| s.at > cut);
        }
        m.insert(
            key,
            Seen {
                run: None,
                delivery: delivery.to_string(),
                at: now,
            },
        );
        Claim::Start
    }

    /// The claim of `delivery` on a body started `run` (or, with `None`,
    /// started nothing: the claim is dropped so a retry may start it).
    pub fn settle(&self, hook: &str, digest: [u8; 32], delivery: &str, run: Option<&str>) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (hook.to_string(), digest);
        match (m.get_mut(&key), run) {
            (Some(s), Some(run)) if s.delivery == delivery => s.run = Some(run.to_string()),
            (Some(s), None) if s.delivery == delivery && s.run.is_none() => {
                m.remove(&key);
            }
            _ => {}
        }
    }
}

/// Refusals counted per (hook, reason) since their last event.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<HashMap<(String, &'static str), Bucket>>);

#[derive(Debug, Default)]
struct Bucket {
    recorded: Option<Instant>,
    pending: u64,
}

impl Refusals {
    /// Count one refusal; `Some(n)` when an event standing for `n`
    /// refusals is to be recorded now.
    pub fn note(&self, hook: &str, reason: &'static str, now: Instant) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let b = m.entry((hook.to_string(), reason)).or_default();
        b.pending += 1;
        let due = b
            .recorded
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_WINDOW);
        if due {
            b.recorded = Some(now);
            Some(std::mem::take(&mut b.pending))
        } else {
            None
        }
    }
}

/// The shortest hook secret that verifies anything (bytes).
pub const MIN_SECRET_LEN: usize = 16;

/// How long a delivery's body may take to arrive.
const READ_BODY: std::time::Duration = std::time::Duration::from_secs(30);

/// The hook routes, over `control`.
pub fn routes<S: Clone + Send + Sync + 'static>(control: Arc<Control>) -> Router<S> {
    Router::new()
        .route("/hooks/{name}", post(deliver))
        .with_state(Hooks {
            control,
            refusals: Arc::default(),
            replays: Arc::default(),
        })
}

/// A refused delivery: its answer, and what the audit event says.
struct Refused {
    hook: String,
    reason: &'static str,
    error: Box<ApiError>,
    /// What the audit event says (the answer may say less).
    detail: String,
}

fn refused(hook: &str, reason: &'static str, error: ApiError) -> Refused {
    Refused {
        hook: hook.to_string(),
        reason,
        detail: error.message.clone(),
        error: Box::new(error),
    }
}

/// The one answer to every delivery that does not prove itself, whatever
/// the hook (declared or not) and whatever is wrong with the credential:
/// a sender cannot tell a hook name that exists from one that does not.
/// The audit event says which it was.
pub const NOT_AUTHENTICATED: &str =
    "the delivery is not authenticated: no such hook, or no valid signature or token for it";

fn unauthenticated(hook: &str, reason: &'static str, message: &str) -> Refused {
    Refused {
        hook: hook.to_string(),
        reason,
        error: Box::new(ApiError::new(
            ErrorClass::Refused,
            "unauthenticated",
            NOT_AUTHENTICATED,
        )),
        detail: message.to_string(),
    }
}

async fn deliver(
    State(h): State<Hooks>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&h, &name, &headers, body).await {
        Ok(r) => r,
        Err(Ok(usage)) => HttpError(usage).into_response(),
        Err(Err(r)) => {
            tracing::debug!(hook = %r.hook, reason = r.reason, "webhook delivery refused");
            if let Some(count) = h.refusals.note(&r.hook, r.reason, Instant::now()) {
                tracing::warn!(hook = %r.hook, reason = r.reason, count, "webhook deliveries refused");
                let recorded = h
                    .control
                    .record_hook_refused(&r.hook, r.reason, count, &r.detail)
                    .await;
                if let Err(e) = recorded {
                    tracing::error!(error = %e, "recording a refused webhook delivery failed");
                }
            }
            HttpError(*r.error).into_response()
        }
    }
}

/// Check and start one delivery. `Err(Ok(_))`: the sender proved itself
/// but the request is wrong (400, not an audit event); `Err(Err(_))`: a
/// refusal (401/413/422, counted toward a `hook-refused` event).
async fn accept(
    h: &Hooks,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Result<ApiError, Refused>> {
    let d = h.control.deployment();
    let Some((workflow, hook)) = d.workflows.values().find_map(|w| {
        w.triggers
            .webhook
            .as_ref()
            .filter(|k| k.name == name)
            .map(|k| (w.name.clone(), k.clone()))
    }) else {
        let detail = format!(
            "no hook {} (hooks are declared under [workflows.NAME.triggers.webhook])",
            charter_api::validate::shown(name)
        );
        return Err(Err(unauthenticated("?", "unknown-hook", &detail)));
    };
    // A delivery without the credential its hook takes, or with a token
    // (which does not depend on the body), is decided before the body is
    // read: an anonymous sender makes the host buffer nothing. Reading is
    // bounded in size and time.
    let signed = hook.secret.is_some() && headers.contains_key("x-hub-signature-256");
    let early = match signed {
        true => None,
        false => Some(authenticate(&h.control, &d, &hook, headers, &[]).map_err(Err)?),
    };
    let read = tokio::time::timeout(READ_BODY, axum::body::to_bytes(body, hook.max_body)).await;
    let Ok(Ok(bytes)) = read else {
        let e = ApiError::new(
            ErrorClass::Limit,
            "limit",
            format!(
                "the body is larger than hook {name}'s limit of {} KiB (max_body_kib), or was cut off",
                hook.max_body / 1024
            ),
        );
        return Err(Err(refused(name, "too-large", e)));
    };
    let (initiator, auth) = match early {
        Some(who) => who,
        None => authenticate(&h.control, &d, &hook, headers, &bytes).map_err(Err)?,
    };
    let delivery = delivery_id(&hook, headers).map_err(Ok)?;
    let input: Value = if bytes.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            Ok(ApiError::usage(format!(
                "the body is not JSON: {}",
                charter_api::validate::shown(&e.to_string())
            )))
        })?
    };
    // A body of another shape than the hook declares (`require`,
    // `equals`: another event type, a field missing) starts nothing: a 422
    // naming the pointer, counted toward a `hook-refused` event.
    if let Err(why) = hook.check_shape(&input) {
        let e = ApiError::new(
            ErrorClass::Usage,
            "invalid",
            // `why` holds the hook's own pointers and values, nothing of
            // the body's.
            format!("the body does not have the shape hook {name} takes: {why}"),
        );
        return Err(Err(refused(name, "shape", e)));
    }
    // A signed body seen under another delivery id within the replay
    // window answers the run it started: a captured delivery replayed
    // under a fresh id starts nothing (GitHub's signature does not cover
    // the id).
    let digest: [u8; 32] = match auth.as_str() {
        "hmac-sha256" => Sha256::digest(&bytes).into(),
        _ => [0; 32],
    };
    if digest != [0; 32] {
        let run = match h
            .replays
            .claim(&hook.name, digest, &delivery, Instant::now())
        {
            Claim::Start => None,
            Claim::Started(run) => Some(run),
            Claim::InFlight => {
                return Err(Ok(ApiError::new(
                    ErrorClass::Error,
                    "unavailable",
                    "this signed body is being started under another delivery id; retry later"
                        .to_string(),
                )));
            }
        };
        if let Some(run) = run {
            tracing::warn!(hook = %hook.name, %run, "a signed body replayed under a new delivery id");
            let dup = charter_api::HookStarted {
                ok: true,
                status: "duplicate".into(),
                run,
                duplicate: true,
            };
            return Ok((StatusCode::OK, Json(dup)).into_response());
        }
    }
    // A token's identity numbers its own deliveries: another sender's
    // delivery with the same id is another start.
    let sender = (auth != "hmac-sha256").then(|| initiator.clone());
    let trigger = TriggerRef {
        kind: "webhook".into(),
        name: hook.name.clone(),
        key: delivery.clone(),
        auth,
        sender,
    };
    // Started and settled in a task of its own: a sender that hangs up
    // mid-request leaves neither an undriven run nor a claim that never
    // names its run.
    let (control, replays, hook_name) = (h.control.clone(), h.replays.clone(), hook.name.clone());
    let task = tokio::spawn(async move {
        let started = control
            .start_triggered(&workflow, input, &initiator, trigger)
            .await;
        if digest != [0; 32] {
            let run = started.as_ref().ok().map(|s| s.run.as_str());
            replays.settle(&hook_name, digest, &delivery, run);
        }
        started
    });
    let started = task
        .await
        .map_err(|e| {
            Ok(ApiError::new(
                ErrorClass::Error,
                "internal",
                format!("starting the delivery's run failed: {e}"),
            ))
        })?
        .map_err(Ok)?;
    let status = if started.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(started)).into_response())
}

/// Who delivers: `(initiator, how)`, or the refusal. `d` is the
/// configuration the hook was found in: its secret is read from the same.
fn authenticate(
    control: &Control,
    d: &charter_config::Deployment,
    hook: &Webhook,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, String), Refused> {
    let name = hook.name.as_str();
    let signature = headers.get("x-hub-signature-256");
    if let (Some(secret), Some(sig)) = (&hook.secret, signature) {
        let key = charter_runtime::capabilities::read_secret(&d.secrets, secret).map_err(|e| {
            tracing::error!(hook = name, "the hook's secret cannot be read: {e}");
            // The shared 401, not a 500 naming the hook: a sender
            // cannot tell a declared hook from an unknown one by it
            // (the operator reads why in the log and the audit event).
            unauthenticated(
                name,
                "no-secret",
                "the hook's secret cannot be read on the server",
            )
        })?;
        if key.len() < MIN_SECRET_LEN {
            tracing::error!(
                hook = name,
                "the hook's secret is shorter than {MIN_SECRET_LEN} bytes: every delivery is refused"
            );
        }
        return match signature_matches(key.as_bytes(), body, sig.as_bytes()) {
            true => Ok((format!("hook:{name}"), "hmac-sha256".into())),
            false => Err(unauthenticated(
                name,
                "bad-signature",
                "the X-Hub-Signature-256 header is not sha256=<hex HMAC-SHA256 of the body> under this hook's secret",
            )),
        };
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if let (false, Some(token)) = (hook.identities.is_empty(), bearer) {
        let p = control
            .principal(Credential::Token(token))
            .map_err(|e| unauthenticated(name, "bad-token", &e.message))?;
        if !hook.identities.contains(&p.name) {
            return Err(unauthenticated(
                name,
                "bad-token",
                &format!("{} may not deliver to hook {name}", p.name),
            ));
        }
        return Ok((p.name, p.method.as_str().into()));
    }
    let wanted = match (&hook.secret, hook.identities.is_empty()) {
        (Some(_), true) => "an X-Hub-Signature-256 header",
        (None, _) => "an Authorization: Bearer token",
        (Some(_), false) => "an X-Hub-Signature-256 header or an Authorization: Bearer token",
    };
    Err(unauthenticated(
        name,
        "no-credential",
        &format!("hook {name} needs {wanted}"),
    ))
}

/// Whether `header` is `sha256=<hex>` of HMAC-SHA256(`key`, `body`),
/// compared in constant time.
/// An empty or short secret (an unset variable, an empty file) would let
/// anyone sign: such a key matches nothing.
pub fn signature_matches(key: &[u8], body: &[u8], header: &[u8]) -> bool {
    if key.len() < MIN_SECRET_LEN {
        return false;
    }
    let Some(hex_sig) = header.strip_prefix(b"sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    let want = mac.finalize().into_bytes();
    given.len() == want.len() && bool::from(want.as_slice().ct_eq(&given))
}

/// The delivery id: required, printable ASCII, bounded.
fn delivery_id(hook: &Webhook, headers: &HeaderMap) -> Result<String, ApiError> {
    let h = &hook.delivery_header;
    let v = headers
        .get(h.as_str())
        .ok_or_else(|| {
            ApiError::usage(format!(
                "hook {} needs a delivery id in the {h} header (it makes a retried delivery start no second run)",
                hook.name
            ))
        })?
        .as_bytes();
    let ok = !v.is_empty() && v.len() <= MAX_DELIVERY_ID && v.iter().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ApiError::usage(format!(
            "the {h} header must be 1 to {MAX_DELIVERY_ID} printable ASCII characters"
        )));
    }
    Ok(String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_exactly() {
        let key = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        // GitHub's documented example.
        let good = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_matches(key, body, good));
        assert!(!signature_matches(b"other", body, good));
        assert!(!signature_matches(key, b"Hello, World?", good));
        for bad in [
            &b"sha256="[..],
            b"sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e",
            b"sha256=zz",
            b"757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            assert!(!signature_matches(key, body, bad));
        }
        // A misprovisioned (empty or short) secret lets no one sign, even
        // with the right HMAC under that key.
        for weak in [&b""[..], b"short", b"fifteen bytes!!"] {
            let mut mac = Hmac::<Sha256>::new_from_slice(weak).unwrap();
            mac.update(body);
            let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert!(!signature_matches(weak, body, sig.as_bytes()), "{weak:?}");
        }
    }

    #[test]
    fn replayed_bodies_are_remembered_within_the_window() {
        let r = Replays::default();
        let t0 = Instant::now();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let later = |s| t0 + Duration::from_secs(s);
        assert_eq!(r.claim("gh", a, "d-1", t0), Claim::Start);
        // Claimed and still starting: a copy under another id starts
        // nothing (two copies at once, or a sender that hung up).
        assert_eq!(r.claim("gh", a, "d-2", t0), Claim::InFlight);
        r.settle("gh", a, "d-1", Some("R-1"));
        // The same body under a new delivery id: the first run.
        assert_eq!(
            r.claim("gh", a, "d-2", later(5)),
            Claim::Started("R-1".into())
        );
        // Under its own id it is a retry, the trigger index's to answer.
        assert_eq!(r.claim("gh", a, "d-1", later(5)), Claim::Start);
        // Another delivery cannot settle or rename the claim.
        r.settle("gh", a, "d-3", Some("R-2"));
        r.settle("gh", a, "d-3", None);
        assert_eq!(
            r.claim("gh", a, "d-4", later(7)),
            Claim::Started("R-1".into())
        );
        // A start that failed drops its claim: a retry may start it.
        assert_eq!(r.claim("gh", b, "d-5", t0), Claim::Start);
        r.settle("gh", b, "d-5", None);
        assert_eq!(r.claim("gh", b, "d-6", t0), Claim::Start);
        // Another hook is another entry; the window ends.
        assert_eq!(r.claim("other", a, "d-2", t0), Claim::Start);
        assert_eq!(r.claim("gh", a, "d-9", t0 + REPLAY_WINDOW), Claim::Start);
        // Bounded: a flood of distinct bodies keeps at most MAX_REMEMBERED.
        for i in 0..(MAX_REMEMBERED + 10) {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            r.claim("gh", d, "d", t0 + Duration::from_millis(i as u64));
        }
        assert!(r.0.lock().unwrap().len() <= MAX_REMEMBERED);
    }

    #[test]
    fn refusals_are_aggregated_per_window() {
        let r = Refusals::default();
        let t0 = Instant::now();
        assert_eq!(r.note("?", "unknown-hook", t0), Some(1));
        for i in 1..1000 {
            assert_eq!(
                r.note("?", "unknown-hook", t0 + Duration::from_millis(i)),
                None
            );
        }
        // Another reason is its own bucket.
        assert_eq!(r.note("gh", "bad-signature", t0), Some(1));
        // After the window: one event for the 999 held back and this one.
        assert_eq!(r.note("?", "unknown-hook", t0 + REFUSAL_WINDOW), Some(1000));
    }
}
