//! Workflow test steps, by `input.mode`:
//! - `flaky`: fails (`class`, default retryable) while `attempt` < `fail_until`;
//! - `spin`: loops until the host stops it;
//! - `post`: POSTs `body` to each URL in `urls` with wasi:http and returns
//!   the responses; a 5xx answer is a retryable failure;
//! - `random`: reads a kv key chosen at random, then fails retryably on
//!   attempt 1 (so the retry replays against a journal it cannot match);
//! - anything else: returns `{"echo": input}`.
use charter_sdk::{StepError, Value, json, kv};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

fn run(input: Value) -> Result<Value, StepError> {
    let attempt = input["attempt"].as_u64().unwrap_or(1);
    match input["mode"].as_str() {
        Some("flaky") => {
            let until = input["fail_until"].as_u64().unwrap_or(0);
            if attempt < until {
                let msg = format!("attempt {attempt} fails (until {until})");
                return Err(match input["class"].as_str() {
                    Some("fatal") => StepError::fatal(msg),
                    _ => StepError::retryable(msg),
                });
            }
            Ok(json!({"ok_on_attempt": attempt}))
        }
        Some("spin") => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
                if x == 0 {
                    return Ok(json!({}));
                }
            }
        }
        Some("post") => {
            let body = input["body"].as_str().unwrap_or("");
            let mut out = Vec::new();
            for url in input["urls"].as_array().cloned().unwrap_or_default() {
                let url = url.as_str().unwrap_or_default();
                let (status, text) = post(url, body)?;
                if status >= 500 {
                    return Err(StepError::retryable(format!("{url}: HTTP {status}")));
                }
                out.push(json!({"status": status, "body": text}));
            }
            Ok(json!({"responses": out}))
        }
        Some("random") => {
            let key = format!("k-{}", wasi::random::random::get_random_u64());
            kv::get(&key)?;
            if attempt == 1 {
                return Err(StepError::retryable("first attempt fails"));
            }
            Ok(json!({"read": key}))
        }
        _ => Ok(json!({"echo": input})),
    }
}

fn post(url: &str, body: &str) -> Result<(u16, String), StepError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| StepError::fatal("url must be scheme://authority/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Post).map_err(|_| StepError::fatal("method"))?;
    req.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http }))
        .map_err(|_| StepError::fatal("scheme"))?;
    req.set_authority(Some(authority)).map_err(|_| StepError::fatal("authority"))?;
    req.set_path_with_query(Some(path)).map_err(|_| StepError::fatal("path"))?;
    let ob = req.body().map_err(|_| StepError::fatal("body"))?;
    {
        let w = ob.write().map_err(|_| StepError::fatal("body stream"))?;
        w.blocking_write_and_flush(body.as_bytes())
            .map_err(|e| StepError::retryable(format!("write: {e:?}")))?;
    }
    let fut = outgoing_handler::handle(req, None)
        .map_err(|e| StepError::fatal(format!("request refused: {e:?}")))?;
    OutgoingBody::finish(ob, None).map_err(|e| StepError::retryable(format!("finish: {e:?}")))?;
    fut.subscribe().block();
    let resp = fut
        .get()
        .ok_or_else(|| StepError::retryable("no response"))?
        .map_err(|_| StepError::retryable("response already taken"))?
        .map_err(|e| StepError::retryable(format!("request failed: {e:?}")))?;
    let status = resp.status();
    let rb = resp.consume().map_err(|_| StepError::fatal("body"))?;
    let stream = rb.stream().map_err(|_| StepError::fatal("stream"))?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

charter_sdk::step!(run);
