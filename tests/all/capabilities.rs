//! Host capabilities behind the mediator: secrets by name, the LLM providers.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use charter_runtime::CallError;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::*;

fn secret_deployment(
    dir: &std::path::Path,
    file_secret: &std::path::Path,
) -> charter_config::Deployment {
    let extra = format!(
        "[groups.token]\ncapabilities = [\"charter:host/secrets.get\"]\nsecrets = [\"api-token\", \"unset\"]\n\
         [secrets.api-token]\nfile = \"{}\"\n[secrets.unset]\nenv = \"CHARTER_TEST_SURELY_UNSET_VAR\"\n\
         [secrets.other-team]\nenv = \"HOME\"\n",
        file_secret.display()
    );
    deployment(
        dir,
        4,
        &[("reader", "fx-secret", &["token", "logging"], &extra)],
    )
}

#[test]
fn secrets_are_readable_only_by_name_granted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token.txt");
    std::fs::write(&file, "s3cr3t-value\n").unwrap();
    let (host, _) = host(secret_deployment(dir.path(), &file));
    let rt = rt();

    let out = rt
        .block_on(host.call("reader", r#"{"name": "api-token"}"#))
        .unwrap();
    assert_eq!(out.output["length"], 12, "trailing newline trimmed");

    // Declared and granted, but the variable is unset: an error the guest sees.
    let out = rt
        .block_on(host.call("reader", r#"{"name": "unset"}"#))
        .unwrap();
    assert!(
        out.output["error"]
            .as_str()
            .unwrap()
            .contains("CHARTER_TEST_SURELY_UNSET_VAR is not set")
    );

    // Declared in the deployment but not granted to this plugin: denied,
    // and the step fails closed even though the guest swallowed the error.
    let err = rt
        .block_on(host.call("reader", r#"{"name": "other-team"}"#))
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("secret \"other-team\" is not granted"),
        "{msg}"
    );
    assert!(
        !msg.contains("s3cr3t"),
        "secret value leaked into an error: {msg}"
    );
}

/// A fake OpenAI-compatible endpoint answering every chat completion with
/// `answer`, recording the request bodies.
async fn fake_openai(answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string());
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        s.lock().unwrap().push(format!(
                            "{path} {auth:?} {}",
                            String::from_utf8_lossy(&body)
                        ));
                        let reply = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": answer}}]});
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            reply.to_string(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, seen)
}

/// The triage step under `extra` TOML (its LLM provider), with order A-1 in
/// its kv.
fn triage_host(dir: &std::path::Path, extra: &str) -> charter_runtime::Host {
    let d = deployment(
        dir,
        4,
        &[(
            "triage",
            "refund-triage",
            &["kv-read", "llm", "logging"],
            extra,
        )],
    );
    let (host, store) = host(d);
    store
        .set("triage", "order:A-1", r#"{"amount_cents": 1200}"#)
        .unwrap();
    host
}

#[test]
fn openai_provider_is_used_when_configured() {
    let rt = rt();
    let (port, seen) = rt.block_on(fake_openai("not-delivered"));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-test").unwrap();
    let extra = format!(
        "[llm]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"tiny\"\napi_key_secret = \"llm-key\"\n\
         [secrets.llm-key]\nfile = \"{}\"\n",
        key.display()
    );
    let host = triage_host(dir.path(), &extra);
    let out = rt
        .block_on(host.call(
            "triage",
            r#"{"order_id": "A-1", "request": "the box was crushed"}"#,
        ))
        .unwrap();
    // The offline provider would say "damaged"; the fake endpoint says otherwise.
    assert_eq!(out.output["category"], "not-delivered");
    assert_eq!(out.output["recommendation"], "refund");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("/v1/chat/completions Some(\"Bearer sk-test\")"),
        "{}",
        seen[0]
    );
    assert!(seen[0].contains("the box was crushed"), "{}", seen[0]);
}

#[test]
fn offline_provider_is_the_deterministic_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[(
            "triage",
            "refund-triage",
            &["kv-read", "llm", "logging"],
            "",
        )],
    );
    let (host, store) = host(d);
    store
        .set("triage", "order:A-1", r#"{"amount_cents": 1200}"#)
        .unwrap();
    let rt = rt();
    let input = r#"{"order_id": "A-1", "request": "it arrived broken"}"#;
    let a = rt.block_on(host.call("triage", input)).unwrap();
    let b = rt.block_on(host.call("triage", input)).unwrap();
    assert_eq!(a.output, b.output);
    assert_eq!(a.output["category"], "damaged");
    assert_eq!(a.output["recommendation"], "refund");
    assert_eq!(a.logs[0].message, "order A-1: classified as damaged (0.75)");
}

/// A provider's answer is read with a bound: an endpoint that answers with
/// more than the host reads fails the call, and the host serves the next.
#[test]
fn an_oversized_provider_answer_is_refused() {
    let rt = rt();
    let huge: &'static str = Box::leak("x".repeat(5 << 20).into_boxed_str());
    let (port, _) = rt.block_on(fake_openai(huge));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[llm]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"tiny\"\n"
    );
    let host = triage_host(dir.path(), &extra);
    let err = rt
        .block_on(host.call(
            "triage",
            r#"{"order_id": "A-1", "request": "the box was crushed"}"#,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("response over"), "{err}");
    assert!(err.to_string().len() < 8 << 10, "the error is bounded");
}
