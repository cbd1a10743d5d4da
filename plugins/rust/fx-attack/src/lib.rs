//! Hostile fixture for the attack review, one mode per input
//! (`{"mode": ...}`): each mode is one way a plugin tries to break a
//! promise of SECURITY.md. The host must hold whatever it does.
use charter_sdk::{StepError, Value, json, kv, log, secrets};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

fn n(input: &Value, key: &str, default: u64) -> u64 {
    input[key].as_u64().unwrap_or(default)
}

fn secret(input: &Value) -> Result<String, StepError> {
    let name = input["secret"].as_str().unwrap_or("api");
    secrets::get(name).map_err(|e| StepError::fatal(format!("secret: {}", e.0)))
}

/// One request to `url` (scheme://authority/path?query) with `body`.
fn send(url: &str, method: Method, body: Option<&[u8]>) -> Result<u16, StepError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| StepError::fatal("url must be scheme://authority/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&method)
        .map_err(|_| StepError::fatal("method"))?;
    req.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }))
    .map_err(|_| StepError::fatal("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|_| StepError::fatal("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|_| StepError::fatal("path"))?;
    let out = req.body().map_err(|_| StepError::fatal("body"))?;
    let fut = outgoing_handler::handle(req, None)
        .map_err(|e| StepError::fatal(format!("request refused: {e:?}")))?;
    {
        let stream = out.write().map_err(|_| StepError::fatal("body stream"))?;
        if let Some(b) = body {
            for chunk in b.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| StepError::fatal(format!("body write: {e:?}")))?;
            }
        }
    }
    OutgoingBody::finish(out, None).map_err(|e| StepError::fatal(format!("finish: {e:?}")))?;
    fut.subscribe().block();
    let resp = fut
        .get()
        .ok_or_else(|| StepError::retryable("no response"))?
        .map_err(|_| StepError::retryable("response already taken"))?
        .map_err(|e| StepError::fatal(format!("request failed: {e:?}")))?;
    Ok(resp.status())
}

fn run(input: Value) -> Result<Value, StepError> {
    match input["mode"].as_str().unwrap_or("") {
        // Item 7: a host-side wait past the deadline.
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(n(&input, "ms", 20_000)));
            Ok(json!({"slept": true}))
        }
        // Item 5: arguments far over what the function accepts, in a loop.
        "kv-get-big" => {
            let key = "k".repeat(n(&input, "size", 1 << 20) as usize);
            for _ in 0..n(&input, "times", 100) {
                let _ = kv::get(&key);
            }
            Ok(json!({"done": true}))
        }
        // Item 5: valid but large writes until the step's budget ends.
        "kv-set-big" => {
            let value = "v".repeat(n(&input, "size", 1 << 20) as usize);
            for i in 0..n(&input, "times", 100) {
                kv::set(&format!("big-{i}"), &value).map_err(|e| StepError::fatal(e.0))?;
            }
            Ok(json!({"done": true}))
        }
        // Item 6: a granted secret stored in kv.
        "secret-to-kv" => {
            let s = secret(&input)?;
            kv::set("token", &format!("Bearer {s}")).map_err(|e| StepError::fatal(e.0))?;
            Ok(json!({"stored": true}))
        }
        // Item 6: the step fails with the secret as its error.
        "secret-error" => {
            let s = secret(&input)?;
            Err(StepError::fatal(format!("upstream said: {s}")))
        }
        // Item 6: the secret used as a secret's name.
        "secret-as-name" => {
            let s = secret(&input)?;
            let r = secrets::get(&s);
            Ok(json!({"second": r.is_ok()}))
        }
        // Item 6: the secret (in any case) as an HTTP authority.
        "secret-as-host" => {
            let s = secret(&input)?;
            let host = if input["upper"].as_bool() == Some(true) {
                s.to_uppercase()
            } else {
                s
            };
            let r = send(&format!("http://{host}.example/"), Method::Get, None);
            Ok(json!({"sent": r.is_ok()}))
        }
        // Item 6 (cost): many reads of a secret, then one huge log line.
        "log-big" => {
            let mut s = String::new();
            for _ in 0..n(&input, "reads", 2000) {
                s = secret(&input)?;
            }
            let mut line = "a".repeat(n(&input, "size", 32 << 20) as usize);
            line.push_str(&s);
            log::info(&line);
            Ok(json!({"logged": true}))
        }
        // Item 4: an output nested deeper than the log's reader accepts.
        "deep-output" => {
            let depth = n(&input, "depth", 127) as usize;
            let mut v = json!(1);
            for _ in 0..depth {
                v = json!([v]);
            }
            Ok(json!({"deep": v, "text_depth": depth}))
        }
        // Item 3: an unbounded step error.
        "big-error" => Err(StepError::fatal(
            "e".repeat(n(&input, "size", 8 << 20) as usize),
        )),
        // Item 9: a POST whose body and query come from the input.
        "post" => {
            let mut url = input["url"]
                .as_str()
                .ok_or_else(|| StepError::fatal("url"))?
                .to_string();
            if !input["query"].is_null() {
                let q = match &input["query"] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                url.push_str(&format!("?q={q}"));
            }
            let body = input["body"].to_string();
            let status = send(&url, Method::Post, Some(body.as_bytes()))?;
            if input["fail_after"].as_bool() == Some(true) {
                return Err(StepError::retryable(format!(
                    "posted ({status}), failing on purpose"
                )));
            }
            Ok(json!({"status": status}))
        }
        other => Err(StepError::fatal(format!("unknown mode {other:?}"))),
    }
}

charter_sdk::step!(run);
