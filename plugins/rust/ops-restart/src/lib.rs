//! The remediation of the IT-ops example: restart a service through an
//! orchestrator API, `POST http://<orchestrator>/v1/services/<service>/restart`.
//!
//! The host adds an `idempotency-key` header, the same on every attempt of
//! the step, so an orchestrator that saw the first attempt's request can
//! answer a retry without restarting twice. A 5xx (or no answer) is
//! retryable, a 4xx fatal (the request itself is wrong).
use charter_sdk::{StepError, Value, json, log};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

fn plain_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn run(input: Value) -> Result<Value, StepError> {
    let service = input["service"].as_str().unwrap_or_default();
    let orchestrator = input["orchestrator"].as_str().unwrap_or_default();
    if !plain_name(service) || orchestrator.is_empty() || orchestrator.contains('/') {
        return Err(StepError::fatal(
            "input needs service ([a-z0-9-]{1,63}) and orchestrator (host:port)",
        ));
    }
    // The same body on every attempt: the host compares a retried request
    // with the one it recorded.
    let body = json!({
        "service": service,
        "reason": format!("alert {} ({})", input["alertname"], input["fingerprint"]),
    })
    .to_string();
    let headers = Fields::new();
    headers
        .append("content-type", b"application/json")
        .map_err(|_| StepError::fatal("header"))?;
    let req = OutgoingRequest::new(headers);
    req.set_method(&Method::Post)
        .map_err(|_| StepError::fatal("method"))?;
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|_| StepError::fatal("scheme"))?;
    req.set_authority(Some(orchestrator))
        .map_err(|_| StepError::fatal("authority"))?;
    req.set_path_with_query(Some(&format!("/v1/services/{service}/restart")))
        .map_err(|_| StepError::fatal("path"))?;
    let out = req.body().map_err(|_| StepError::fatal("body"))?;
    {
        let stream = out.write().map_err(|_| StepError::fatal("body stream"))?;
        stream
            .blocking_write_and_flush(body.as_bytes())
            .map_err(|_| StepError::fatal("body write"))?;
    }
    let fut = outgoing_handler::handle(req, None)
        .map_err(|e| StepError::fatal(format!("restart request refused: {e:?}")))?;
    OutgoingBody::finish(out, None).map_err(|_| StepError::fatal("body finish"))?;
    fut.subscribe().block();
    let status = match fut.get() {
        Some(Ok(Ok(resp))) => resp.status(),
        Some(Ok(Err(e))) => {
            return Err(StepError::retryable(format!(
                "orchestrator unreachable: {e:?}"
            )));
        }
        _ => return Err(StepError::retryable("no response from the orchestrator")),
    };
    log::info(&format!("restart {service}: HTTP {status}"));
    match status {
        200..=299 => Ok(json!({"service": service, "restarted": true, "status": status})),
        500..=599 => Err(StepError::retryable(format!(
            "the orchestrator could not restart {service} (HTTP {status})"
        ))),
        _ => Err(StepError::fatal(format!(
            "the orchestrator refused to restart {service} (HTTP {status})"
        ))),
    }
}

charter_sdk::step!(run);
