//! The health check of the IT-ops example, two modes of one check:
//!
//! - `diagnose`: input `{mode, alert}` with `alert` a Prometheus
//!   Alertmanager webhook payload (version "4"); takes its first firing
//!   alert, checks `http://<labels.instance>/<labels.service>/healthz` and
//!   reports what it found (an unhealthy service is a finding, not a
//!   failure);
//! - `verify`: input `{mode, target}` with `target` the diagnosis; the same
//!   check, and an unhealthy service is a retryable failure, so the
//!   workflow's retry policy waits and checks again.
//!
//! The alert is data from outside: the service name must be a plain name
//! (it becomes a path segment) and the host it names is only reached if the
//! deployment's `allow_hosts` lists it.
use charter_sdk::{StepError, Value, json, log};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

/// A service name fit for a path segment: `[a-z0-9-]`, 1 to 63 characters.
fn plain_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `host:port` and nothing else (no path, no user info).
fn plain_authority(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
}

/// GET `path` on `authority`: the status code, or why nothing came back.
fn get(authority: &str, path: &str) -> Result<u16, StepError> {
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Get)
        .map_err(|_| StepError::fatal("method"))?;
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|_| StepError::fatal("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|_| StepError::fatal("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|_| StepError::fatal("path"))?;
    let fut = outgoing_handler::handle(req, None)
        .map_err(|e| StepError::fatal(format!("health check of {authority} refused: {e:?}")))?;
    fut.subscribe().block();
    match fut.get() {
        Some(Ok(Ok(resp))) => Ok(resp.status()),
        // Connection refused, reset, timed out: the service is down.
        Some(Ok(Err(_))) => Ok(0),
        _ => Err(StepError::retryable("no response")),
    }
}

/// The first firing alert of an Alertmanager payload.
fn firing_alert(alert: &Value) -> Result<Option<&Value>, StepError> {
    if alert["version"] != "4" {
        return Err(StepError::fatal(format!(
            "not an Alertmanager webhook payload of version \"4\" (version {})",
            alert["version"]
        )));
    }
    let alerts = alert["alerts"]
        .as_array()
        .ok_or_else(|| StepError::fatal("the payload has no alerts[]"))?;
    Ok(alerts.iter().find(|a| a["status"] == "firing"))
}

fn label<'a>(a: &'a Value, name: &str) -> Result<&'a str, StepError> {
    a["labels"][name]
        .as_str()
        .ok_or_else(|| StepError::fatal(format!("the alert has no labels.{name}")))
}

fn diagnose(alert: &Value) -> Result<Value, StepError> {
    let Some(a) = firing_alert(alert)? else {
        log::info("no firing alert in the group: nothing to do");
        return Ok(json!({"healthy": true, "resolved": true}));
    };
    let service = label(a, "service")?;
    let instance = label(a, "instance")?;
    if !plain_name(service) || !plain_authority(instance) {
        return Err(StepError::fatal(format!(
            "labels.service must be [a-z0-9-]{{1,63}} and labels.instance host:port (got {service:?}, {instance:?})"
        )));
    }
    let status = get(instance, &format!("/{service}/healthz"))?;
    let healthy = (200..300).contains(&status);
    log::info(&format!("diagnose {service} at {instance}: HTTP {status}"));
    Ok(json!({
        "service": service,
        "instance": instance,
        "alertname": a["labels"]["alertname"],
        "fingerprint": a["fingerprint"],
        "summary": a["annotations"]["summary"],
        "status": status,
        "healthy": healthy,
    }))
}

fn verify(target: &Value) -> Result<Value, StepError> {
    let service = target["service"].as_str().unwrap_or_default();
    let instance = target["instance"].as_str().unwrap_or_default();
    if !plain_name(service) || !plain_authority(instance) {
        return Err(StepError::fatal(
            "target needs the diagnosis' service and instance",
        ));
    }
    let status = get(instance, &format!("/{service}/healthz"))?;
    if !(200..300).contains(&status) {
        return Err(StepError::retryable(format!(
            "{service} is still unhealthy after the restart (HTTP {status})"
        )));
    }
    Ok(json!({"service": service, "healthy": true, "status": status}))
}

fn run(input: Value) -> Result<Value, StepError> {
    match input["mode"].as_str() {
        Some("diagnose") => diagnose(&input["alert"]),
        Some("verify") => verify(&input["target"]),
        _ => Err(StepError::fatal(
            "input.mode must be \"diagnose\" or \"verify\"",
        )),
    }
}

charter_sdk::step!(run);
