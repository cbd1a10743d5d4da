//! GETs `input.url` with wasi:http and returns the status and body.
use charter_sdk::{StepError, Value, json};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

fn run(input: Value) -> Result<Value, StepError> {
    let url = input["url"].as_str().ok_or_else(|| StepError::fatal("input.url is required"))?;
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| StepError::fatal("url must be scheme://authority/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http }))
        .map_err(|_| StepError::fatal("scheme"))?;
    req.set_authority(Some(authority)).map_err(|_| StepError::fatal("authority"))?;
    req.set_path_with_query(Some(path)).map_err(|_| StepError::fatal("path"))?;
    let fut = outgoing_handler::handle(req, None)
        .map_err(|e| StepError::fatal(format!("request refused: {e:?}")))?;
    fut.subscribe().block();
    let resp = fut
        .get()
        .ok_or_else(|| StepError::retryable("no response"))?
        .map_err(|_| StepError::retryable("response already taken"))?
        .map_err(|e| StepError::fatal(format!("request failed: {e:?}")))?;
    let status = resp.status();
    let body = resp.consume().map_err(|_| StepError::fatal("body"))?;
    let stream = body.stream().map_err(|_| StepError::fatal("stream"))?;
    let mut bytes = Vec::new();
    // Until the stream ends (or fails: what arrived is the body).
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok(json!({"status": status, "body": String::from_utf8_lossy(&bytes)}))
}

charter_sdk::step!(run);
