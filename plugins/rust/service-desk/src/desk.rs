//! The service desk's steps, shared by its three components (each built
//! with only the functions its grants cover: a component imports only the
//! host functions it calls).
#![allow(dead_code)]
use charter_sdk::{StepError, Value, json, llm, log, secrets, serde_json};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// What a caller wants (the offline model matches these words).
const INTENTS: &[&str] = &[
    "password-reset",
    "late-delivery",
    "double-charge",
    "cancel-subscription",
];
const SENTIMENTS: &[&str] = &["positive", "negative", "neutral"];

/// The text sent for each intent.
fn reply(intent: &str, case: &str) -> String {
    let what = match intent {
        "password-reset" => "A password reset link is on its way to your email.",
        "late-delivery" => "We are tracing your delivery and will update you within 24 hours.",
        "double-charge" => "We are reviewing the duplicate charge; any refund follows within 5 days.",
        "cancel-subscription" => "Your cancellation request is recorded.",
        _ => "We received your request.",
    };
    format!("Acme support, case {case}: {what} Reply STOP to opt out.")
}

pub fn classify(input: &Value) -> Result<Value, StepError> {
    let call = &input["call"];
    let transcript = call["transcript"]
        .as_str()
        .ok_or(StepError::fatal("call.transcript (a string) is required"))?;
    // Only what the caller said: the agent's lines carry no intent.
    let said: String = transcript
        .lines()
        .filter_map(|l| l.strip_prefix("User:"))
        .collect::<Vec<_>>()
        .join(" ");
    let said = if said.is_empty() { transcript.to_string() } else { said };
    let intent = llm::classify(&said, INTENTS)?;
    let sentiment = llm::classify(&said, SENTIMENTS)?;
    let min = input["min_confidence"].as_f64().unwrap_or(0.6) as f32;
    let reason = if intent.confidence < min {
        Some(format!(
            "intent {} at confidence {:.2}, under {min:.2}",
            intent.label, intent.confidence
        ))
    } else if sentiment.label == "negative" {
        Some("the caller is upset (negative sentiment)".to_string())
    } else {
        None
    };
    log::info(&format!(
        "call {}: {} ({:.2}), {}",
        call["call_id"].as_str().unwrap_or("?"),
        intent.label,
        intent.confidence,
        sentiment.label
    ));
    Ok(json!({
        "call_id": call["call_id"],
        "from_number": call["from_number"],
        "intent": intent.label,
        "intent_confidence": (intent.confidence * 100.0).round() / 100.0,
        "sentiment": sentiment.label,
        "sentiment_confidence": (sentiment.confidence * 100.0).round() / 100.0,
        "route": if reason.is_some() { "human" } else { "automated" },
        "reason": reason,
    }))
}

pub fn open_case(input: &Value) -> Result<Value, StepError> {
    let base = input["ticketing"].as_str().ok_or(StepError::fatal("input.ticketing is required"))?;
    let c = &input["classification"];
    let body = json!({"ticket": {
        "subject": format!("Call {}: {}", c["call_id"].as_str().unwrap_or("?"), c["intent"].as_str().unwrap_or("?")),
        "comment": {"body": input["transcript"].as_str().unwrap_or("")},
        "requester": {"phone": c["from_number"]},
        "tags": [c["intent"], c["sentiment"], format!("route-{}", c["route"].as_str().unwrap_or("?"))],
        "priority": if c["route"] == "human" { "high" } else { "normal" },
        "external_id": c["call_id"],
    }})
    .to_string();
    let (status, text) = post(
        &format!("{base}/api/v2/tickets"),
        &[("content-type", "application/json")],
        &body,
    )?;
    if status >= 500 {
        return Err(StepError::retryable(format!("ticketing: HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        return Err(StepError::fatal(format!("ticketing: HTTP {status}: {text}")));
    }
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let id = v["ticket"]["id"].clone();
    if id.is_null() {
        return Err(StepError::fatal(format!("ticketing: no ticket id in {text}")));
    }
    Ok(json!({"case": id.to_string()}))
}

pub fn reply_sms(input: &Value) -> Result<Value, StepError> {
    let base = input["sms"].as_str().ok_or(StepError::fatal("input.sms is required"))?;
    let account = input["account"].as_str().ok_or(StepError::fatal("input.account is required"))?;
    let c = &input["classification"];
    let to = c["from_number"].as_str().ok_or(StepError::fatal("no caller number"))?;
    let from = input["from"].as_str().unwrap_or("+15550100000");
    let case = input["case"].as_str().unwrap_or("?");
    let text = reply(c["intent"].as_str().unwrap_or(""), case);
    let token = secrets::get("sms-auth-token")?;
    let form = format!("To={}&From={}&Body={}", form_encode(to), form_encode(from), form_encode(&text));
    let auth = format!("Basic {}", base64(format!("{account}:{token}").as_bytes()));
    let (status, answer) = post(
        &format!("{base}/2010-04-01/Accounts/{account}/Messages.json"),
        &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &auth)],
        &form,
    )?;
    if status >= 500 {
        return Err(StepError::retryable(format!("sms: HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        return Err(StepError::fatal(format!("sms: HTTP {status}: {answer}")));
    }
    let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
    Ok(json!({"message": v["sid"], "to": to, "body": text}))
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Result<(u16, String), StepError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| StepError::fatal("url must be scheme://authority/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&list).map_err(|e| StepError::fatal(format!("headers: {e:?}")))?;
    let req = OutgoingRequest::new(fields);
    req.set_method(&Method::Post).map_err(|_| StepError::fatal("method"))?;
    req.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http }))
        .map_err(|_| StepError::fatal("scheme"))?;
    req.set_authority(Some(authority)).map_err(|_| StepError::fatal("authority"))?;
    req.set_path_with_query(Some(path)).map_err(|_| StepError::fatal("path"))?;
    let ob = req.body().map_err(|_| StepError::fatal("body"))?;
    {
        let w = ob.write().map_err(|_| StepError::fatal("body stream"))?;
        for piece in body.as_bytes().chunks(4096) {
            w.blocking_write_and_flush(piece)
                .map_err(|e| StepError::retryable(format!("write: {e:?}")))?;
        }
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

