//! The attack review's classes, each tried as a hostile plugin, input or
//! operator would (issue 9): memory and log amplification (5), secrets
//! leaking outside log lines (6), host-side waits past the deadline (7),
//! approvals trusting the index (8), re-sent requests that differ (9), and
//! the smaller ones (10). Records and outputs are checked byte for byte:
//! a secret must not be in the log file at all.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use charter_audit::{Event, read_records};
use charter_runtime::{CallError, Host, HostOptions, LimitKind};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::support::*;

/// The secret every case here reads (mixed case, so case variants differ).
const SECRET: &str = "Tok3nSecretValue";

/// A deployment with the attack fixture under `limits`, a granted secret
/// `api`, kv, logging, the LLM and outbound HTTP to 127.0.0.1:`port`.
fn attack_deployment(dir: &std::path::Path, limits: &str, port: u16) -> charter_config::Deployment {
    attack_deployment_with(dir, limits, port, "")
}

/// The same, with `more` TOML (workflows, approvers) appended.
fn attack_deployment_with(
    dir: &std::path::Path,
    limits: &str,
    port: u16,
    more: &str,
) -> charter_config::Deployment {
    let secret_file = dir.join("api.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let extra = format!(
        "limits = {{ {limits} }}\n\
         [groups.token]\ncapabilities = [\"charter:host/secrets.get\"]\nsecrets = [\"api\"]\n\
         [groups.http]\ncapabilities = [\"wasi:http/outgoing-handler.handle\"]\nallow_hosts = [\"127.0.0.1:{port}\"]\n\
         [secrets.api]\nfile = \"{}\"\n{more}",
        secret_file.display()
    );
    deployment(
        dir,
        4,
        &[(
            "attack",
            "fx-attack",
            &["kv-read", "kv-write", "logging", "token", "http", "llm"],
            &extra,
        )],
    )
}

/// Every byte of the log file: no case variant of the secret may be in it.
fn assert_log_has_no_secret(host: &Host) {
    let bytes = std::fs::read(host.log().path()).unwrap();
    let text = String::from_utf8_lossy(&bytes).to_lowercase();
    assert!(
        !text.contains(&SECRET.to_lowercase()),
        "the secret (or a case variant of it) is in the event log"
    );
}

fn call(host: &Host, rt: &tokio::runtime::Runtime, input: Value) -> Result<Value, CallError> {
    rt.block_on(host.call("attack", &input.to_string()))
        .map(|o| o.output)
}

fn limit_kind(e: &CallError) -> Option<LimitKind> {
    match e {
        CallError::Limit { kind, .. } => Some(*kind),
        _ => None,
    }
}

fn events(host: &Host) -> Vec<Event> {
    read_records(host.log().path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

// ---- 5: host memory and log amplification -------------------------------

#[test]
fn oversize_arguments_are_refused_and_recorded_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = host(attack_deployment(dir.path(), "", 9));
    let rt = rt();
    // 100 kv.get calls with a 1 MiB key: the first is refused (exit 3), and
    // the record holds its digest and size, not the key.
    let err = call(
        &host,
        &rt,
        json!({"mode": "kv-get-big", "size": 1 << 20, "times": 100}),
    )
    .unwrap_err();
    assert_eq!(limit_kind(&err), Some(LimitKind::Arguments), "{err}");
    assert_eq!(err.exit_code(), 3);
    let calls: Vec<Value> = events(&host)
        .into_iter()
        .filter_map(|e| match e {
            Event::Call { function, args, .. } if function.contains("kv@") => Some(args),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "only the refused call is recorded");
    assert!(
        calls[0]["$elided"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(calls[0]["$elided"]["bytes"].as_u64().unwrap() > 1 << 20);
    let size = std::fs::metadata(host.log().path()).unwrap().len();
    assert!(size < 64 << 10, "the log grew by {size} bytes");
}

#[test]
fn a_steps_recorded_bytes_are_bounded_and_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = host(attack_deployment(
        dir.path(),
        "max_recorded_mib = 4, memory_mib = 128",
        9,
    ));
    let rt = rt();
    // Valid 1 MiB writes in a loop: the step stops at its budget.
    let err = call(
        &host,
        &rt,
        json!({"mode": "kv-set-big", "size": 1 << 20, "times": 100}),
    )
    .unwrap_err();
    assert_eq!(limit_kind(&err), Some(LimitKind::Recorded), "{err}");
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains("max_recorded_mib"), "{err}");
    let evs = events(&host);
    let sets = evs
        .iter()
        .filter(|e| matches!(e, Event::Call { function, .. } if function.ends_with("#set")))
        .count();
    assert!(sets <= 4, "{sets} writes were allowed under a 4 MiB budget");
    // The failed step's writes never happen, and the log holds no value.
    assert!(!evs.iter().any(|e| matches!(e, Event::KvWrite { .. })));
    let size = std::fs::metadata(host.log().path()).unwrap().len();
    assert!(size < 256 << 10, "the log grew by {size} bytes");
    // The host serves the next call.
    call(
        &host,
        &rt,
        json!({"mode": "kv-set-big", "size": 10, "times": 2}),
    )
    .unwrap();
}

// ---- 6: secrets outside the log lines ------------------------------------

#[test]
fn a_secret_stored_in_kv_is_stored_but_recorded_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let (host, store) = host(attack_deployment(dir.path(), "", 9));
    let rt = rt();
    call(&host, &rt, json!({"mode": "secret-to-kv"})).unwrap();
    assert_eq!(
        store.get("attack", "token").unwrap().as_deref(),
        Some(format!("Bearer {SECRET}").as_str()),
        "the plugin reads back what it wrote"
    );
    let write = events(&host)
        .into_iter()
        .find_map(|e| match e {
            Event::KvWrite { value, secrets, .. } => Some((value, secrets)),
            _ => None,
        })
        .unwrap();
    assert_eq!(write.0.as_deref(), Some("Bearer [secret:api]"));
    assert_eq!(write.1, ["api"]);
    assert_log_has_no_secret(&host);
}

#[test]
fn a_secret_in_errors_reasons_and_authorities_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = host(attack_deployment(dir.path(), "", 9));
    let rt = rt();
    let lower = SECRET.to_lowercase();
    for (input, kind) in [
        (json!({"mode": "secret-error"}), "step-error"),
        (json!({"mode": "secret-as-name"}), "denied"),
        (json!({"mode": "secret-as-host"}), "denied"),
        (json!({"mode": "secret-as-host", "upper": true}), "denied"),
    ] {
        let err = call(&host, &rt, input.clone()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), kind, "{input}: {text}");
        assert!(
            !text.to_lowercase().contains(&lower),
            "{input}: the error shows the secret: {text}"
        );
        assert!(text.contains("[secret:api]"), "{input}: {text}");
    }
    // Reasons of denied calls name the secret, never its value.
    let reasons: Vec<String> = events(&host)
        .into_iter()
        .filter_map(|e| match e {
            Event::Call {
                reason: Some(r), ..
            } => Some(r),
            _ => None,
        })
        .collect();
    assert!(reasons.len() >= 3, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("[secret:api]")),
        "{reasons:?}"
    );
    assert_log_has_no_secret(&host);
}

#[test]
fn a_secret_in_a_workflow_failure_is_redacted_in_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let wf = r#"
[workflows.leak]
[[workflows.leak.steps]]
id = "fail"
plugin = "attack"
input = { mode = "secret-error" }
"#;
    let (host, _) = host(attack_deployment_with(dir.path(), "", 9, wf));
    let st = rt()
        .block_on(host.run_workflow("leak", json!({}), None))
        .unwrap();
    assert_eq!(st.status, "failed", "{st:?}");
    let err = st.error.clone().unwrap_or_default();
    assert!(err.contains("[secret:api]"), "{err}");
    assert_log_has_no_secret(&host);
}

#[test]
fn redaction_of_many_reads_and_a_huge_line_stays_inside_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = host(attack_deployment(
        dir.path(),
        "deadline_ms = 2000, memory_mib = 256",
        9,
    ));
    let rt = rt();
    let t = Instant::now();
    let out = call(
        &host,
        &rt,
        json!({"mode": "log-big", "reads": 2000, "size": 32 << 20}),
    );
    let took = t.elapsed();
    eprintln!("2000 secret reads and a 32 MiB log line: {took:?}");
    out.expect("inside the 2 s deadline");
    assert_log_has_no_secret(&host);
}

// ---- 7: host-side waits end at the deadline -----------------------------

#[test]
fn a_guest_sleeping_past_its_deadline_is_stopped_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = host(attack_deployment(dir.path(), "deadline_ms = 1000", 9));
    let rt = rt();
    rt.block_on(host.load("attack")).unwrap();
    let t = Instant::now();
    let err = call(&host, &rt, json!({"mode": "sleep", "ms": 20_000})).unwrap_err();
    let took = t.elapsed();
    assert_eq!(limit_kind(&err), Some(LimitKind::Deadline), "{err}");
    assert_eq!(err.exit_code(), 3);
    // Bounded well below the 20 s sleep, with room for a loaded CI machine.
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    assert!(
        took >= Duration::from_millis(950),
        "stopped early: {took:?}"
    );
    let step = events(&host)
        .into_iter()
        .find_map(|e| match e {
            Event::Step { outcome, .. } => Some(outcome),
            _ => None,
        })
        .unwrap();
    assert_eq!(step, "limit");
}

#[test]
fn a_silent_http_server_cannot_hold_a_step_past_its_deadline() {
    let rt = rt();
    // Accepts connections and never answers.
    let (port, _held) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = held.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                h.lock().unwrap().push(s);
            }
        });
        (port, held)
    });
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = host(attack_deployment(dir.path(), "deadline_ms = 1000", port));
    rt.block_on(host.load("attack")).unwrap();
    let t = Instant::now();
    let err = call(
        &host,
        &rt,
        json!({"mode": "post", "url": format!("http://127.0.0.1:{port}/x"), "body": 1}),
    )
    .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(
            limit_kind(&err),
            Some(LimitKind::Deadline | LimitKind::HostCallTimeout)
        ),
        "{err}"
    );
    // Well below the 30 s host-call timeout it waited for before.
    assert!(took < Duration::from_secs(5), "held for {took:?}");
}

// ---- 9: a re-sent request must be the same request -----------------------

/// A receiver recording (idempotency key, path and query, body) of each
/// request.
pub(crate) type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

pub(crate) async fn recorder() -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let uri = req.uri().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        s.lock().unwrap().push((
                            key,
                            uri,
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
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

fn post_workflow(dir: &std::path::Path, port: u16, input: &str) -> Host {
    let wf = format!(
        r#"
[approvers.olga]
roles = ["operator"]
[workflows.post]
escalate_to = "operator"
[[workflows.post.steps]]
id = "post"
plugin = "attack"
input = {input}
retry = {{ max_attempts = 2, initial_backoff_ms = 10 }}
on_failure = "escalate"
"#
    );
    let d = attack_deployment_with(dir, "", port, &wf);
    Host::new(d, HostOptions::default()).unwrap()
}

#[test]
fn a_retried_request_with_another_body_or_query_is_not_sent() {
    let rt = rt();
    let (port, seen) = rt.block_on(recorder());
    let url = format!("http://127.0.0.1:{port}/pay");
    for (case, input) in [
        (
            "body",
            format!(
                r#"{{ mode = "post", url = "{url}", body = {{ n = "$/run/attempt" }}, fail_after = true }}"#
            ),
        ),
        (
            "query",
            format!(
                r#"{{ mode = "post", url = "{url}", query = "$/run/attempt", body = {{ n = 1 }}, fail_after = true }}"#
            ),
        ),
        (
            "same",
            format!(
                r#"{{ mode = "post", url = "{url}", query = "x", body = {{ n = 1 }}, fail_after = true }}"#
            ),
        ),
    ] {
        seen.lock().unwrap().clear();
        let dir = tempfile::tempdir().unwrap();
        let host = post_workflow(dir.path(), port, &input);
        let st = rt
            .block_on(host.run_workflow("post", json!({}), None))
            .unwrap();
        let sent = seen.lock().unwrap().clone();
        if case == "same" {
            // Same request both times: sent twice under one key (the
            // receiver's idempotency absorbs it), and the run escalates
            // only because the step keeps failing on purpose.
            assert_eq!(sent.len(), 2, "{case}: {sent:?}");
            assert_eq!(sent[0], sent[1], "{case}");
            continue;
        }
        assert_eq!(
            sent.len(),
            1,
            "{case}: a diverging request was sent: {sent:?}"
        );
        assert_eq!(st.status, "escalated", "{case}: {st:?}");
        let failures: Vec<String> = events(&host)
            .into_iter()
            .filter_map(|e| match e {
                Event::StepAttempt {
                    failure: Some(f), ..
                } => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(failures, ["retryable", "nondeterministic"], "{case}");
    }
}

// ---- 8: approvals act on the log, never on the index ---------------------

#[test]
fn an_approval_executes_only_what_the_log_recorded() {
    use charter_runtime::index::PROPOSALS;
    let dir = tempfile::tempdir().unwrap();
    let d = crate::governance::refunds(dir.path(), "");
    let (host, store) = host(d);
    let rt = rt();
    let err = rt
        .block_on(host.call_as(
            "refund-bot",
            r#"{"order_id": "A-7", "amount_cents": 200000}"#,
            Some("ivan"),
        ))
        .unwrap_err();
    let CallError::AwaitingApproval { proposal, .. } = err else {
        panic!("{err}")
    };
    // Proposal ids are random 128-bit values.
    assert!(
        proposal.starts_with("P-") && proposal.len() == 34,
        "{proposal}"
    );
    // Someone who can write the data directory rewrites the pending
    // proposal's arguments (and their digest) in the index.
    let mut forged: Value =
        serde_json::from_str(&store.get(PROPOSALS, &proposal).unwrap().unwrap()).unwrap();
    forged["args"]["amount-cents"] = json!(9_999_999);
    forged["args"]["order-id"] = json!("EVIL-1");
    forged["args_digest"] = json!(charter_audit::json_digest(&forged["args"]));
    store
        .set(PROPOSALS, &proposal, &forged.to_string())
        .unwrap();
    let err = rt
        .block_on(host.decide(&proposal, "bob", true, None))
        .unwrap_err();
    assert!(err.to_string().contains("index-mismatch"), "{err}");
    assert_eq!(err.exit_code(), 2);
    // Nothing of the forged call executed, and the KPI agrees.
    assert!(store.get("payments", "refund:EVIL-1").unwrap().is_none());
    let records = read_records(host.log().path()).unwrap();
    assert_eq!(
        charter_runtime::kpi::compute(&records).unauthorized_actions_executed,
        0
    );
}

#[test]
fn kpi_counts_an_execution_of_other_arguments_than_approved() {
    let dir = tempfile::tempdir().unwrap();
    let d = crate::governance::refunds(dir.path(), "");
    let (host, _) = host(d);
    let rt = rt();
    let err = rt
        .block_on(host.call_as(
            "refund-bot",
            r#"{"order_id": "A-8", "amount_cents": 200000}"#,
            Some("ivan"),
        ))
        .unwrap_err();
    let CallError::AwaitingApproval { proposal, .. } = err else {
        panic!("{err}")
    };
    rt.block_on(host.decide(&proposal, "bob", true, None))
        .unwrap();
    let mut records = read_records(host.log().path()).unwrap();
    assert_eq!(
        charter_runtime::kpi::compute(&records).unauthorized_actions_executed,
        0
    );
    // Forge the record of the execution: other arguments under the
    // approval. The KPI must count it.
    for r in &mut records {
        if let Event::Call {
            decision: charter_audit::Decision::Allow,
            args_digest,
            call,
            ..
        } = &mut r.event
            && records_proposal_call(call)
        {
            *args_digest = "sha256:forged".into();
        }
    }
    let k = charter_runtime::kpi::compute(&records);
    assert_eq!(
        k.unauthorized_actions_executed, 1,
        "{:?}",
        k.unauthorized_detail
    );
}

fn records_proposal_call(call: &str) -> bool {
    // The approved execution reuses the proposing call's id (`<step>/<n>`).
    call.contains('/')
}

// ---- 4 and 3: whatever is accepted is readable back ----------------------

#[test]
fn a_deep_output_or_run_input_is_refused_and_the_deployment_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = attack_deployment(dir.path(), "", 9);
    let data = d.data_dir.clone();
    let host = Host::new(d.clone(), HostOptions::default()).unwrap();
    let rt = rt();
    for depth in [65, 127, 200] {
        let err = call(&host, &rt, json!({"mode": "deep-output", "depth": depth})).unwrap_err();
        assert_eq!(
            limit_kind(&err),
            Some(LimitKind::OutputSize),
            "{depth}: {err}"
        );
        assert!(err.to_string().contains("nests"), "{err}");
    }
    let ok = call(&host, &rt, json!({"mode": "deep-output", "depth": 50})).unwrap();
    assert_eq!(ok["text_depth"], 50);
    // An 8 MiB step error is recorded bounded.
    let err = call(&host, &rt, json!({"mode": "big-error", "size": 8 << 20})).unwrap_err();
    assert!(
        err.to_string().len() < 8 << 10,
        "{} bytes",
        err.to_string().len()
    );
    drop(host);
    // Reopening reads every frame back; the chain verifies.
    let host = Host::new(d, HostOptions::default()).unwrap();
    let v = charter_audit::verify(&data.join(charter_audit::LOG_FILE)).unwrap();
    assert!(v.ok(), "{:?}", v.findings);
    call(&host, &rt, json!({"mode": "deep-output", "depth": 3})).unwrap();
}

/// Random accepted values (inputs echoed as outputs) always read back.
#[test]
fn fuzz_accepted_values_read_back_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[("echo", "fx-echo", &["kv-read", "kv-write", "logging"], "")],
    );
    let data = d.data_dir.clone();
    let host = Host::new(d.clone(), HostOptions::default()).unwrap();
    let rt = rt();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..60 {
        let depth = (rnd() % 100) as usize;
        let mut v = random_leaf(&mut rnd);
        for _ in 0..depth {
            v = if rnd() % 2 == 0 {
                json!([v, random_leaf(&mut rnd)])
            } else {
                json!({"k": v, "é\"\\\u{1}": random_leaf(&mut rnd)})
            };
        }
        match rt.block_on(host.call("echo", &v.to_string())) {
            Ok(out) => {
                accepted += 1;
                assert_eq!(out.output["echo"], v);
            }
            Err(e) => {
                refused += 1;
                assert!(matches!(e, CallError::Limit { .. }), "{e}");
            }
        }
    }
    drop(host);
    eprintln!("fuzz: {accepted} accepted, {refused} refused");
    assert!(accepted > 10 && refused > 10);
    let v = charter_audit::verify(&data.join(charter_audit::LOG_FILE)).unwrap();
    assert!(v.ok(), "{:?}", v.findings);
    let n = read_records(&data.join(charter_audit::LOG_FILE))
        .unwrap()
        .len() as u64;
    assert_eq!(n, v.frames, "every frame reads back as a record");
    Host::new(d, HostOptions::default()).expect("reopens");
}

fn random_leaf(rnd: &mut impl FnMut() -> u64) -> Value {
    match rnd() % 6 {
        0 => json!(rnd()),
        1 => json!(i64::MIN),
        // Quarters: exact in binary, so every parser reads them back equal.
        2 => json!((rnd() % 1000) as f64 / 4.0),
        3 => json!(format!("s\u{7f}\u{2028}\"{}", rnd())),
        4 => json!(u64::MAX),
        _ => json!(null),
    }
}

// ---- 10: the smaller ones -------------------------------------------------

#[test]
fn component_and_inspect_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "path = \"/dev/zero\"\nlimits = { max_component_mib = 1 }\n".to_string();
    let toml = format!(
        "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"{}\"\n[plugins.zero]\n{extra}",
        dir.path().join("data").display()
    );
    let d = charter_config::Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap();
    let (host, _) = host(d);
    let err = rt().block_on(host.load("zero")).unwrap_err();
    assert!(
        matches!(err, charter_runtime::LoadError::TooLarge { .. }),
        "{err}"
    );
    // `charter inspect` of an endless file stops at the bound.
    let out = charter(&["inspect", "/dev/zero"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("over the limit"), "{}", text(&out));
}

#[test]
fn concurrent_commands_on_one_deployment_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("charter.toml");
    std::fs::write(
        &config,
        format!(
            "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"{}\"\n{GROUPS}\n[plugins.echo]\npath = \"{}\"\ngroups = [\"kv-read\", \"kv-write\", \"logging\"]\n",
            dir.path().join("data").display(),
            fixture("fx-echo").display()
        ),
    )
    .unwrap();
    let warm = charter(&["check"], dir.path());
    assert!(warm.status.success(), "{}", text(&warm));
    let children: Vec<_> = (0..12)
        .map(|i| {
            std::process::Command::new(charter_bin())
                .args([
                    "call",
                    "echo",
                    "--input",
                    &format!("{{\"kv_set\": [\"k{i}\", \"v\"]}}"),
                ])
                .current_dir(dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    // A process that cannot get its turn in time says so plainly.
    let holder = Host::new(
        charter_config::Deployment::load(&config, charter_runtime::host_catalog()).unwrap(),
        HostOptions::default(),
    )
    .unwrap();
    let out = std::process::Command::new(charter_bin())
        .args(["call", "echo", "--input", "{}"])
        .current_dir(dir.path())
        .env("CHARTER_LOCK_WAIT_MS", "300")
        .output()
        .unwrap();
    drop(holder);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is in use by another charter process"),
        "{}",
        text(&out)
    );
}

/// `charter run --detach` hands the deployment to a background driver; a
/// command racing it waits its turn instead of failing on a store's lock.
#[test]
fn a_command_racing_a_detached_driver_waits_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("charter.toml"),
        format!(
            "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"{}\"\n{GROUPS}\n[plugins.echo]\npath = \"{}\"\ngroups = [\"kv-read\", \"kv-write\", \"logging\"]\n\
             [approvers.olga]\nroles = [\"operator\"]\n\
             [workflows.twice]\n[[workflows.twice.steps]]\nid = \"one\"\nplugin = \"echo\"\n[[workflows.twice.steps]]\nid = \"two\"\nplugin = \"echo\"\n",
            dir.path().join("data").display(),
            fixture("fx-echo").display()
        ),
    )
    .unwrap();
    let warm = charter(&["check"], dir.path());
    assert!(warm.status.success(), "{}", text(&warm));
    for i in 0..3 {
        let started = charter(&["run", "twice", "--detach", "--input", "{}"], dir.path());
        assert!(started.status.success(), "{}", text(&started));
        // At once, while the driver starts and holds the deployment.
        let out = charter(
            &[
                "call",
                "echo",
                "--input",
                &format!("{{\"kv_set\": [\"k{i}\", \"v\"]}}"),
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(!text(&out).contains("sled"), "{}", text(&out));
    }
    // The detached drivers took their turns too: every run completed.
    let resumed = charter(&["runs", "resume"], dir.path());
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let list = charter(&["runs", "list", "--json"], dir.path());
    let runs: Value = serde_json::from_slice(&list.stdout).unwrap();
    let runs = runs.as_array().or_else(|| runs["runs"].as_array()).unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "completed"), "{runs:?}");
}

/// sled's files can be left corrupt by a kill -9 at the wrong moment. The
/// store is derived from the event log: the host sets it aside and
/// rebuilds it instead of refusing to start, and nothing is lost.
#[test]
fn a_corrupt_state_store_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[("echo", "fx-echo", &["kv-read", "kv-write", "logging"], "")],
    );
    let rt = rt();
    let host = Host::new(d.clone(), HostOptions::default()).unwrap();
    rt.block_on(host.call("echo", r#"{"kv_set": ["k", "kept"]}"#))
        .unwrap();
    drop(host);
    // Garbage over every file of the store.
    let state = d.data_dir.join("state");
    let mut files = vec![state.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let len = std::fs::metadata(&p).unwrap().len().max(64) as usize;
            std::fs::write(&p, vec![0x5a; len]).unwrap();
        }
    }
    let host = Host::new(d, HostOptions::default()).expect("rebuilt, not refused");
    let out = rt
        .block_on(host.call("echo", r#"{"kv_get": "k"}"#))
        .unwrap();
    assert_eq!(out.output["kv"], "kept");
}
