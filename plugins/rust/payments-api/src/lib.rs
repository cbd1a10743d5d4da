//! The refunds copilot's payments connector: provides
//! `acme:payments/refunds` by calling the payments team's HTTP API,
//! `POST http://<endpoint>/v1/refunds` (form-encoded `order`, `amount`,
//! `reason`, as card processors' refund endpoints take them), with the API
//! key from the `payments-api-key` secret as a bearer token and an
//! `idempotency-key` of the order, so the API refunds an order once however
//! often it is asked. Where the host has a key of its own for the call (an
//! approved proposal's execution: `charter:P-…:N`, the same on a re-run),
//! the host's replaces it on the way out.
//!
//! It runs under its own grants (its kv, the one secret, the API's host
//! only); callers reach it only through the host's mediator, which has
//! already decided on each call: under copilot.cedar nothing reaches this
//! code before a refund-approver approved it. The endpoint (`host:port`)
//! is the operator's setting in the connector's kv under
//! `settings:endpoint` (`charter kv set payments-api settings:endpoint
//! HOST:PORT`); the grant's `allow_hosts` decides whether it is reachable.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.1.0", "../../../wit/plugin@0.1.0", "../../../examples/refunds/wit"],
    world: "acme:payments/api-connector@0.1.0",
    generate_all,
});

use charter::host::{kv, log, secrets};
use exports::acme::payments::refunds::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

struct Payments;

/// `application/x-www-form-urlencoded` escaping of one value.
fn form(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An order id the API can be asked about: what a shop's ids look like,
/// nothing that could change the request's shape.
fn plain_order(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// POST the refund; the API's status and body.
fn post(endpoint: &str, key: &str, order: &str, body: &str) -> Result<(u16, String), String> {
    let headers = Fields::new();
    let set = |k: &str, v: &[u8]| {
        headers
            .append(k, v)
            .map_err(|e| format!("header {k}: {e:?}"))
    };
    set("content-type", b"application/x-www-form-urlencoded")?;
    set("authorization", format!("Bearer {key}").as_bytes())?;
    set("idempotency-key", format!("refund-{order}").as_bytes())?;
    let req = OutgoingRequest::new(headers);
    let fail = |what: &str| format!("payments API request: {what}");
    req.set_method(&Method::Post).map_err(|_| fail("method"))?;
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|_| fail("scheme"))?;
    req.set_authority(Some(endpoint))
        .map_err(|_| fail("endpoint"))?;
    req.set_path_with_query(Some("/v1/refunds"))
        .map_err(|_| fail("path"))?;
    let out = req.body().map_err(|_| fail("body"))?;
    {
        let stream = out.write().map_err(|_| fail("body stream"))?;
        stream
            .blocking_write_and_flush(body.as_bytes())
            .map_err(|_| fail("body write"))?;
    }
    let fut = outgoing_handler::handle(req, None)
        .map_err(|e| format!("payments API request refused: {e:?}"))?;
    OutgoingBody::finish(out, None).map_err(|_| fail("body finish"))?;
    fut.subscribe().block();
    let resp = match fut.get() {
        Some(Ok(Ok(resp))) => resp,
        Some(Ok(Err(e))) => return Err(format!("payments API unreachable: {e:?}")),
        _ => return Err("no response from the payments API".into()),
    };
    let status = resp.status();
    let mut bytes = Vec::new();
    if let Ok(b) = resp.consume()
        && let Ok(stream) = b.stream()
    {
        while let Ok(chunk) = stream.blocking_read(16 * 1024) {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > 64 * 1024 {
                break;
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The `"id"` of the API's JSON answer (`{"id": "re_…", …}`), without a
/// JSON parser: an id is short and plain or it is not taken.
fn refund_id(answer: &str) -> Option<String> {
    let rest = &answer[answer.find("\"id\"")? + 4..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let id = &rest[..rest.find('"')?];
    (!id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then(|| id.to_string())
}

impl Guest for Payments {
    fn issue_refund(order_id: String, amount_cents: u64, reason: String) -> Result<String, String> {
        if !plain_order(&order_id) {
            return Err("order-id must be 1-64 letters, digits, - or _".into());
        }
        if amount_cents == 0 {
            return Err("amount-cents must be at least 1".into());
        }
        let ledger = format!("refund:{order_id}");
        // Idempotent per order: a repeated call returns the first refund.
        if let Some(existing) = kv::get(&ledger)? {
            return Ok(existing);
        }
        let endpoint = kv::get("settings:endpoint")?.ok_or_else(|| {
            "no payments API endpoint: set it with `charter kv set payments-api settings:endpoint HOST:PORT`"
                .to_string()
        })?;
        let key = secrets::get("payments-api-key")?;
        let reason: String = reason.chars().take(500).collect();
        let body = format!(
            "order={}&amount={amount_cents}&currency=eur&reason={}",
            form(&order_id),
            form(&reason)
        );
        let (status, answer) = post(&endpoint, &key, &order_id, &body)?;
        if !(200..300).contains(&status) {
            let answer: String = answer.chars().take(300).collect();
            return Err(format!(
                "the payments API refused the refund (HTTP {status}): {answer}"
            ));
        }
        let id = refund_id(&answer).ok_or_else(|| {
            format!("the payments API answered HTTP {status} without a refund id")
        })?;
        kv::set(&ledger, &id)?;
        log::write(
            log::Level::Info,
            &format!("refunded {amount_cents} cents on {order_id} as {id}"),
        );
        Ok(id)
    }

    fn void_all_refunds() -> Result<u32, String> {
        Err("the payments API connector does not void refunds".into())
    }
}

export!(Payments);
