//! One bounded HTTP GET made by the host itself (not a plugin): an OIDC
//! issuer's keys (`[oidc] jwks_url`). Bounded in time (connect, first
//! byte, whole body) and in size; redirects are not followed.

use std::time::Duration;

/// GET `url`: its body, when the answer is 2xx and at most `max` bytes
/// arrive within `timeout`.
pub async fn get(url: &str, timeout: Duration, max: usize) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, get_unbounded_in_time(url, timeout, max))
        .await
        .map_err(|_| {
            format!(
                "GET {url}: no whole answer within {} ms",
                timeout.as_millis()
            )
        })?
}

async fn get_unbounded_in_time(
    url: &str,
    timeout: Duration,
    max: usize,
) -> Result<Vec<u8>, String> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Limited};
    let fail = |what: String| format!("GET {url}: {what}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| fail("the URL does not parse".into()))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| fail("the URL has no host".into()))?;
    let body = Empty::<Bytes>::new()
        .map_err(|e: std::convert::Infallible| -> wasmtime_wasi_http::Error { match e {} });
    let req = http::Request::builder()
        .method("GET")
        .uri(uri)
        .header("host", authority)
        .header("accept", "application/json")
        .body(body)
        .map_err(|_| fail("cannot build the request".into()))?;
    let options = wasmtime_wasi_http::RequestOptions {
        connect_timeout: Some(timeout),
        first_byte_timeout: Some(timeout),
        between_bytes_timeout: Some(timeout),
    };
    let (resp, _io) = wasmtime_wasi_http::default_send_request(req, Some(options))
        .await
        .map_err(|e| fail(format!("failed: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!("answered {status}")));
    }
    let collected = Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map_err(|e| fail(format!("the body is over {max} bytes or was cut off: {e}")))?;
    Ok(collected.to_bytes().to_vec())
}
