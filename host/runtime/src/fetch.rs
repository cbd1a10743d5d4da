//! One bounded HTTP request made by the host itself (not a plugin): an
//! OIDC issuer's keys (`[oidc] jwks_url`, [`get`]) and a `notify`
//! channel's webhook delivery ([`send`]). Bounded in time (connect, first
//! byte, whole answer) and in size; redirects are not followed.
//!
//! The connection is driven for as long as the body is read:
//! wasmtime-wasi-http hands back the response head and, apart, the
//! future that moves the connection's bytes. A body that arrives after
//! its head (a separate TCP segment, a slow issuer) only arrives while
//! that future is polled; left unpolled, the read waits out its timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

/// What a request got back: its status and up to `max_body` bytes of its
/// body (none when `max_body` is 0).
#[derive(Debug)]
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Vec<u8>,
}

/// Send one request, the whole exchange within `timeout`. Errors say
/// what went wrong without the URL (the caller names what was asked).
pub async fn send(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, String> {
    let exchange = async {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| "the URL does not parse".to_string())?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| "the URL has no host".to_string())?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", authority);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = Full::new(body)
            .map_err(|e: std::convert::Infallible| -> wasmtime_wasi_http::Error { match e {} });
        let req = req
            .body(body)
            .map_err(|_| "cannot build the request".to_string())?;
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: Some(timeout),
            first_byte_timeout: Some(timeout),
            between_bytes_timeout: Some(timeout),
        };
        let (resp, io) = wasmtime_wasi_http::default_send_request(req, Some(options))
            .await
            .map_err(|e| format!("failed: {e}"))?;
        // Aborted when this returns (or is dropped by the timeout above).
        let io = AbortOnDrop(tokio::spawn(io));
        let status = resp.status();
        let body = match max_body {
            0 => Vec::new(),
            max => Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| format!("the body is over {max} bytes or was cut off: {e}"))?
                .to_bytes()
                .to_vec(),
        };
        drop(io);
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), wasmtime_wasi_http::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GET `url`: its body, when the answer is 2xx and at most `max` bytes
/// arrive within `timeout`.
pub async fn get(url: &str, timeout: Duration, max: usize) -> Result<Vec<u8>, String> {
    let fail = |what: String| format!("GET {url}: {what}");
    let headers = [("accept", "application/json")];
    let answer = send(http::Method::GET, url, &headers, Bytes::new(), timeout, max)
        .await
        .map_err(fail)?;
    if !answer.status.is_success() {
        return Err(fail(format!("answered {}", answer.status)));
    }
    Ok(answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A loopback server that answers once: the head, a pause, the body
    /// (two TCP segments, as a slow or busy issuer sends them).
    fn split_answer(body: &'static str, pause: Duration) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let h = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(h.as_bytes()).unwrap();
            s.flush().unwrap();
            std::thread::sleep(pause);
            s.write_all(body.as_bytes()).unwrap();
        });
        url
    }

    /// The flake this fixed: the body came after the head and was never
    /// read, because nothing drove the connection; the read waited out
    /// its timeout and a host's first JWT found no keys.
    #[tokio::test]
    async fn a_body_sent_after_its_head_is_read() {
        let url = split_answer("{\"keys\": []}", Duration::from_millis(300));
        let got = get(&url, Duration::from_secs(3), 1024).await;
        assert_eq!(got.as_deref(), Ok(&b"{\"keys\": []}"[..]));
    }

    #[tokio::test]
    async fn an_answer_over_the_bound_is_refused() {
        let url = split_answer("0123456789", Duration::from_millis(10));
        let err = get(&url, Duration::from_secs(3), 4).await.unwrap_err();
        assert!(err.contains("over 4 bytes"), "{err}");
    }
}
