//! Outbound HTTP exists only as granted `wasi:http`, checked against the
//! grant's host allow-list on every request.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use charter_runtime::{CallError, LoadError};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::*;

/// A local test server counting the requests it receives.
pub(crate) async fn server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            "hello from the test server",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, hits)
}

#[test]
fn http_grant_reaches_allowed_host_and_refuses_others() {
    let rt = rt();
    let ((allowed, allowed_hits), (other, other_hits)) =
        rt.block_on(async { (server().await, server().await) });
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[groups.http-a]\ncapabilities = [\"wasi:http/outgoing-handler.handle\"]\nallow_hosts = [\"127.0.0.1:{allowed}\"]\n"
    );
    let d = deployment(
        dir.path(),
        4,
        &[
            ("fetch", "fx-http", &["http-a"], &extra),
            ("echo", "fx-echo", &["kv-read", "kv-write", "logging"], ""),
        ],
    );
    let (host, _) = host(d);

    let out = rt
        .block_on(host.call(
            "fetch",
            &format!(r#"{{"url": "http://127.0.0.1:{allowed}/x"}}"#),
        ))
        .expect("allowed host");
    assert_eq!(out.output["status"], 200);
    assert_eq!(out.output["body"], "hello from the test server");
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);

    for url in [
        format!("http://127.0.0.1:{other}/"),
        format!("http://localhost:{allowed}/"),
        "http://example.invalid/".to_string(),
    ] {
        let err = rt
            .block_on(host.call("fetch", &format!(r#"{{"url": "{url}"}}"#)))
            .unwrap_err();
        assert!(matches!(err, CallError::Denied { .. }), "{url}: {err}");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("is not in the grant's allow_hosts"),
            "{err}"
        );
    }
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "a refused host was reached"
    );
    assert_eq!(
        allowed_hits.load(Ordering::SeqCst),
        1,
        "a refused request reached the server"
    );
    rt.block_on(host.call("echo", "{}")).unwrap();
}

#[test]
fn http_import_without_grant_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(dir.path(), 4, &[("fetch", "fx-http", &["logging"], "")]);
    let (host, _) = host(d);
    let err = rt().block_on(host.load("fetch")).unwrap_err();
    let LoadError::Ungranted(lines) = &err else {
        panic!("{err}")
    };
    assert!(
        lines
            .iter()
            .any(|l| l.function.starts_with("wasi:http/outgoing-handler@")
                && l.function.ends_with("#handle")),
        "{err}"
    );
}
