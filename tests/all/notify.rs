//! `charter:host/notify`: channels declared in `charter.toml` and granted
//! by name; webhooks on a loopback server started by each test; the inbox
//! in the event log; replay on re-run; `charter:host@0.2.0` beside 0.1.0.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use charter_audit::{Event, read_records};
use charter_runtime::{CallError, LoadError};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::support::*;

/// One request a webhook received: its idempotency-key header and body.
pub(crate) type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// How the test webhook answers.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    Ok,
    /// This status, with this many bytes of body.
    Status(u16, usize),
    /// 302 to another (counting) address.
    Redirect(u16),
    /// Accept the connection and the request, never answer.
    Hang,
}

/// A loopback webhook recording what it receives.
pub(crate) async fn webhook(answer: Answer) -> (u16, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Default::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let g = g.clone();
                    async move {
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        g.lock().unwrap().push((key, body));
                        let mut res = hyper::Response::new(Full::new(Bytes::from("ok")));
                        match answer {
                            Answer::Ok => {}
                            Answer::Status(status, echo) => {
                                *res.body_mut() = Full::new(Bytes::from(vec![b'x'; echo]));
                                *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            }
                            Answer::Redirect(to) => {
                                *res.status_mut() = hyper::StatusCode::FOUND;
                                res.headers_mut().insert(
                                    "location",
                                    format!("http://127.0.0.1:{to}/hook").parse().unwrap(),
                                );
                            }
                            Answer::Hang => {
                                tokio::time::sleep(std::time::Duration::from_secs(60)).await
                            }
                        }
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, got)
}

/// Channels `ops` (webhook on `port`), `other` (webhook, declared but not
/// granted) and `console` (inbox); the group `notify` grants `ops` and
/// `console`; `no-secrets` links `secrets.get` (the fixture imports it)
/// with no secret names.
fn channels(port: u16) -> String {
    format!(
        r#"
[channels.ops]
webhook = "http://127.0.0.1:{port}/hook"
[channels.other]
webhook = "http://127.0.0.1:{port}/other"
[channels.console]
inbox = true
[groups.notify]
capabilities = ["charter:host/notify.send"]
channels = ["ops", "console"]
[groups.no-secrets]
capabilities = ["charter:host/secrets.get"]
"#
    )
}

fn notify_deployment(dir: &std::path::Path, port: u16, extra: &str) -> charter_config::Deployment {
    // The plugin's own lines (`extra`) first, then the tables.
    let extra = format!("{extra}\n{}", channels(port));
    deployment(
        dir,
        4,
        &[("notifier", "fx-notify", &["notify", "no-secrets"], &extra)],
    )
}

fn events(h: &charter_runtime::Host) -> Vec<Event> {
    read_records(h.log().path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

#[test]
fn notify_delivers_to_a_granted_webhook_with_an_idempotency_key() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Ok));
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(notify_deployment(dir.path(), port, ""));
    let out = rt
        .block_on(h.call(
            "notifier",
            r#"{"channel": "ops", "subject": "refund", "body": "A-1 approved"}"#,
        ))
        .unwrap();
    let id = out.output["sent"].as_str().unwrap().to_string();
    assert!(id.starts_with("charter:"), "{}", out.output);
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, id, "the header carries the delivery id");
    assert_eq!(
        got[0].1["text"], "*refund*\nA-1 approved",
        "Slack-compatible"
    );
    assert_eq!(got[0].1["idempotency_key"], id.as_str());
    // The decision is recorded with the versioned function, and its result.
    let evs = events(&h);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Call { function, args, .. }
        if function == "charter:host/notify@0.2.0#send" && args["channel"] == "ops"))
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::CallResult { function, ok: true, .. }
        if function == "charter:host/notify@0.2.0#send"))
    );
}

#[test]
fn an_ungranted_or_odd_channel_is_denied_and_nothing_is_sent() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Ok));
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(notify_deployment(dir.path(), port, ""));
    for channel in ["other", "ops\n", "OPS", "ops/../other", "\u{202e}spo", ""] {
        let input = json!({"channel": channel, "body": "x"}).to_string();
        let err = rt.block_on(h.call("notifier", &input)).unwrap_err();
        assert!(
            matches!(err, CallError::Denied { .. }),
            "{channel:?}: {err}"
        );
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("is not granted"), "{err}");
        assert!(
            !err.to_string().contains('\u{202e}'),
            "names are escaped: {err}"
        );
    }
    // An over-long channel name is refused as a limit, recorded by digest.
    let input = json!({"channel": "o".repeat(10_000), "body": "x"}).to_string();
    let err = rt.block_on(h.call("notifier", &input)).unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(got.lock().unwrap().is_empty(), "nothing was sent");
}

#[test]
fn a_channel_grant_needs_a_declared_channel() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[(
            "notifier",
            "fx-notify",
            &["notify"],
            "[groups.notify]\ncapabilities = [\"charter:host/notify.send\"]\nchannels = [\"nowhere\"]\n",
        )],
    );
    let v = d.violations();
    assert!(
        v.iter()
            .any(|v| v.rule == "unknown-channel" && v.message.contains("\"nowhere\"")),
        "{v:?}"
    );
    // A webhook must be an http(s) URL without credentials.
    for bad in [
        "webhook = \"file:///etc/passwd\"",
        "webhook = \"http://user:pw@127.0.0.1/\"",
        "webhook = \"http://\"",
        "webhook = \"http://x/\"\ninbox = true",
    ] {
        let toml = format!("[deployment]\nname = \"t\"\nphase = 4\n[channels.c]\n{bad}\n");
        let e = charter_config::Deployment::parse(
            &toml,
            &dir.path().join("charter.toml"),
            charter_runtime::host_catalog(),
        );
        assert!(e.is_err(), "{bad}");
    }
}

#[test]
fn a_secret_does_not_leave_in_a_notification() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Ok));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token.txt");
    std::fs::write(&file, "s3cr3t-value").unwrap();
    let extra = format!(
        "[groups.token]\ncapabilities = [\"charter:host/secrets.get\"]\nsecrets = [\"api-token\"]\n[secrets.api-token]\nfile = \"{}\"\n{}",
        file.display(),
        channels(port)
    );
    let d = deployment(
        dir.path(),
        4,
        &[("notifier", "fx-notify", &["notify", "token"], &extra)],
    );
    let (h, _) = host(d);
    let out = rt
        .block_on(h.call(
            "notifier",
            r#"{"channel": "ops", "body": "hi", "secret": "api-token"}"#,
        ))
        .unwrap();
    assert!(out.output["sent"].is_string(), "{}", out.output);
    let got = got.lock().unwrap().clone();
    let text = got[0].1["text"].as_str().unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("[secret:api-token]"), "{text}");
}

#[test]
fn a_hanging_webhook_is_cut_at_the_host_call_timeout() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Hang));
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(notify_deployment(
        dir.path(),
        port,
        "limits = { host_call_timeout_ms = 300 }",
    ));
    let started = std::time::Instant::now();
    let out = rt.block_on(h.call("notifier", r#"{"channel": "ops", "body": "x"}"#));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let msg = match out {
        Ok(o) => o.output["error"].as_str().unwrap_or_default().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("no answer within") || msg.contains("timeout") || msg.contains("took longer"),
        "{msg}"
    );
    assert_eq!(
        got.lock().unwrap().len(),
        1,
        "the request was received once"
    );
    assert!(
        !msg.contains("/hook"),
        "errors never name the webhook URL: {msg}"
    );
}

#[test]
fn a_webhook_redirect_is_not_followed() {
    let rt = rt();
    let ((elsewhere, elsewhere_got), (port, got)) = rt.block_on(async {
        let e = webhook(Answer::Ok).await;
        let r = webhook(Answer::Redirect(e.0)).await;
        (e, r)
    });
    let _ = elsewhere;
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(notify_deployment(dir.path(), port, ""));
    let out = rt
        .block_on(h.call("notifier", r#"{"channel": "ops", "body": "x"}"#))
        .unwrap();
    let err = out.output["error"].as_str().unwrap();
    assert!(err.contains("redirects are not followed"), "{err}");
    assert_eq!(got.lock().unwrap().len(), 1);
    assert!(
        elsewhere_got.lock().unwrap().is_empty(),
        "the redirect was not followed"
    );
}

#[test]
fn an_inbox_channel_keeps_the_message_in_the_log() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(notify_deployment(dir.path(), 9, ""));
    let out = rt
        .block_on(h.call(
            "notifier",
            r#"{"channel": "console", "subject": "review", "body": "3 refunds waiting"}"#,
        ))
        .unwrap();
    assert!(out.output["sent"].is_string(), "{}", out.output);
    let evs = events(&h);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Call { function, args, .. }
        if function.starts_with("charter:host/notify@") && args["channel"] == "console"
            && args["body"] == "3 refunds waiting"))
    );
}

#[test]
fn a_re_run_step_never_notifies_twice() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Ok));
    let dir = tempfile::tempdir().unwrap();
    let mut extra = channels(port);
    extra.push_str(
        r#"
[approvers.olga]
roles = ["operator"]
[workflows.alert]
[[workflows.alert.steps]]
id = "tell"
plugin = "notifier"
input = { channel = "ops", subject = "s", body = "b", then_fail = true }
retry = { max_attempts = 3, initial_backoff_ms = 10 }
on_failure = "fail"
"#,
    );
    let d = deployment(
        dir.path(),
        4,
        &[("notifier", "fx-notify", &["notify", "no-secrets"], &extra)],
    );
    let (h, _) = host(d);
    let st = rt
        .block_on(h.run_workflow("alert", json!({}), None))
        .unwrap();
    assert_eq!(st.history.len(), 3, "{st:?}");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "three attempts, one notification: {got:?}");
    // Every attempt saw the same delivery id (the recorded result).
    let results: Vec<_> = events(&h)
        .into_iter()
        .filter_map(|e| match e {
            Event::CallResult {
                function, result, ..
            } if function.contains("notify") => result,
            _ => None,
        })
        .collect();
    assert_eq!(results, [json!(got[0].0)]);
}

#[test]
fn a_0_1_0_plugin_cannot_import_notify() {
    // A component importing notify at charter:host@0.1.0, which never had
    // it: refused at load even though a group grants notify.send.
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(
        r#"(component
            (import "charter:host/notify@0.1.0" (instance
                (export "send" (func (param "channel" string) (param "subject" string)
                    (param "body" string) (result (result string (error string)))))))
        )"#,
    )
    .unwrap();
    let path = dir.path().join("old.wasm");
    std::fs::write(&path, wasm).unwrap();
    let toml = format!(
        "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"{}\"\n{}\n[plugins.old]\npath = \"{}\"\ngroups = [\"notify\"]\n",
        dir.path().join("data").display(),
        channels(9),
        path.display()
    );
    let d = charter_config::Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap();
    let (h, _) = host(d);
    let err = rt().block_on(h.load("old")).unwrap_err();
    let LoadError::Ungranted(u) = &err else {
        panic!("{err}")
    };
    assert_eq!(u[0].function, "charter:host/notify@0.1.0#send");
    assert!(err.to_string().contains("from 0.2.0 on"), "{err}");
}

#[test]
fn a_0_2_0_plugin_runs_beside_a_0_1_0_plugin() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}[groups.everything]\ncapabilities = [\"charter:host/log.*\", \"charter:host/kv.*\", \"charter:host/secrets.*\", \"charter:host/llm.*\", \"charter:host/explain.*\", \"charter:host/notify.*\"]\nchannels = [\"console\"]\neffect = \"write\"\n",
        channels(9)
    );
    let d = deployment(
        dir.path(),
        4,
        &[
            ("v2", "fx-host-v2", &["everything"], &extra),
            ("v1", "fx-echo", &["kv-read", "kv-write", "logging"], ""),
        ],
    );
    let (h, _) = host(d);
    // Both load, each importing its own version.
    let v2 = rt.block_on(h.load("v2")).unwrap();
    let v1 = rt.block_on(h.load("v1")).unwrap();
    let versions = |p: &charter_runtime::LoadedPlugin| -> Vec<String> {
        p.inspection
            .imports
            .iter()
            .filter(|i| i.interface.starts_with("charter:host/"))
            .map(|i| i.interface.clone())
            .collect()
    };
    assert!(
        versions(&v2).iter().all(|i| i.ends_with("@0.2.0")),
        "{:?}",
        versions(&v2)
    );
    assert!(
        versions(&v2)
            .iter()
            .any(|i| i == "charter:host/notify@0.2.0")
    );
    assert!(
        versions(&v1).iter().all(|i| i.ends_with("@0.1.0")),
        "{:?}",
        versions(&v1)
    );
    // Every 0.2.0 function answers through the same capabilities.
    let call = |op: &str| rt.block_on(h.call("v2", &json!(op).to_string()));
    assert_eq!(call("kv-set:x").unwrap().output, Value::Null);
    assert_eq!(
        call("kv-get").unwrap().output,
        json!("x"),
        "the write committed with its step"
    );
    assert_eq!(call("kv-list").unwrap().output, json!(1));
    assert_eq!(call("kv-delete").unwrap().output, json!(true));
    assert_eq!(call("log:hello").unwrap().logs[0].message, "hello");
    assert!(call("complete:hi").unwrap().output.is_string());
    assert!(call("classify:a").unwrap().output.is_string());
    assert_eq!(call("explain:why").unwrap().output, Value::Null);
    assert!(call("notify:console").unwrap().output.is_string());
    let err = call("notify:ops").unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    // The 0.1.0 plugin next to it.
    let out = rt
        .block_on(h.call("v1", r#"{"kv_set": ["a", "b"], "kv_get": "a"}"#))
        .unwrap();
    assert_eq!(out.output["kv"], "b", "{}", out.output);
    // Events name the version each plugin called.
    let evs = events(&h);
    let called = |f: &str| {
        evs.iter()
            .any(|e| matches!(e, Event::Call { function, .. } if function == f))
    };
    assert!(called("charter:host/kv@0.2.0#set"));
    assert!(called("charter:host/kv@0.1.0#set"));
    assert!(called("charter:host/kv@0.1.0#get"));
}

/// The host's bindings equal `wit/`: the fixture built against
/// `wit/host@0.2.0` imports every 0.2.0 function; each is in the host's
/// catalog with the WIT's parameter names and types (loading it linked, so
/// wasmtime checked the typed closures against the same types); and every
/// 0.1.0 interface is 0.2.0's file but for its package line, with 0.2.0's
/// additions (notify) served from 0.2.0 on only (and 0.3.0's, knowledge,
/// from 0.3.0 on: `knowledge::a_granted_corpus_is_searched_and_the_call_recorded`
/// imports it).
#[test]
fn host_bindings_match_the_wit_of_every_served_version() {
    use charter_runtime::capabilities::{Param, SERVED};
    use wasmtime::component::types::{ComponentItem, Type};
    let engine = wasmtime::Engine::default();
    let component =
        wasmtime::component::Component::from_file(&engine, fixture("fx-host-v2")).unwrap();
    let catalog = charter_runtime::catalog();
    let mut seen = std::collections::BTreeSet::new();
    for (instance, item) in component.component_type().imports(&engine) {
        if !instance.starts_with("charter:host/") {
            continue;
        }
        let ComponentItem::ComponentInstance(inst) = item.ty else {
            panic!("{instance} is not an instance")
        };
        for (name, item) in inst.exports(&engine) {
            let ComponentItem::ComponentFunc(func) = item.ty else {
                continue;
            };
            let id = catalog
                .lookup(instance, name)
                .unwrap_or_else(|| panic!("{instance}#{name} is not served"));
            let spec = catalog.get(id);
            let wit: Vec<(String, Type)> = func.params().map(|(n, t)| (n.to_string(), t)).collect();
            assert_eq!(wit.len(), spec.function.params.len(), "{}", spec.display());
            for ((n, t), (sn, sp)) in wit.iter().zip(spec.function.params) {
                assert_eq!(n, sn, "{}", spec.display());
                let fits = match (sp, t) {
                    (Param::String, Type::String | Type::Enum(_)) => true,
                    (Param::StringList, Type::List(l)) => matches!(l.ty(), Type::String),
                    _ => false,
                };
                assert!(
                    fits,
                    "{}: {n} is {t:?} in WIT, {sp:?} in the host",
                    spec.display()
                );
            }
            seen.insert(spec.display().to_string());
        }
    }
    // The fixture is built against 0.2.0 and imports every function there.
    assert!(SERVED.contains(&"0.2.0"));
    let at_v2: std::collections::BTreeSet<String> = catalog
        .iter()
        .filter(|(_, f)| f.version == "0.2.0")
        .map(|(_, f)| f.display().to_string())
        .collect();
    assert_eq!(seen, at_v2, "the fixture imports every function");
    // Released folders: 0.2.0 is 0.1.0 plus notify, 0.3.0 is 0.2.0 plus
    // knowledge.
    let wit = root().join("wit");
    for (from, to) in [("0.1.0", "0.2.0"), ("0.2.0", "0.3.0")] {
        for entry in std::fs::read_dir(wit.join(format!("host@{from}"))).unwrap() {
            let name = entry.unwrap().file_name();
            let old =
                std::fs::read_to_string(wit.join(format!("host@{from}")).join(&name)).unwrap();
            let new = std::fs::read_to_string(wit.join(format!("host@{to}")).join(&name)).unwrap();
            assert_eq!(
                old.replace(
                    &format!("charter:host@{from}"),
                    &format!("charter:host@{to}")
                ),
                new,
                "{name:?}"
            );
        }
    }
    let functions_at = |v: &str| catalog.iter().filter(|(_, f)| f.version == v).count();
    assert_eq!(functions_at("0.1.0") + 1, functions_at("0.2.0"));
    assert_eq!(functions_at("0.2.0") + 1, functions_at("0.3.0"));
}

/// `charter run` of a workflow whose step notifies, aborted at its n-th log
/// I/O boundary (`CHARTER_TEST_CRASH_AT`) for every n until a run gets
/// through, then resumed: every run completes having delivered exactly one
/// notification (one idempotency key); a crash after the delivery's result
/// reached the log never sends again, and one between the delivery and its
/// result re-sends only under the same key.
#[test]
fn a_notify_is_not_repeated_after_a_crash() {
    use std::process::{Command, Stdio};
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Ok));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("charter.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[deployment]
name = "crash-notify"
phase = 4
data_dir = "data"
[approvers.olga]
roles = ["operator"]
{channels}
[plugins.notifier]
path = "{fx}"
groups = ["notify", "no-secrets"]
[workflows.alert]
[[workflows.alert.steps]]
id = "tell"
plugin = "notifier"
input = {{ channel = "ops", subject = "$/input/order", body = "b" }}
"#,
            channels = channels(port),
            fx = fixture("fx-notify").display(),
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let warm = charter(&["check", "--config", cfg], dir.path());
    assert!(warm.status.success(), "{}", text(&warm));
    let (mut crashes, mut boundary, mut finished) = (0, 0, 0);
    while finished < 2 && boundary < 200 {
        boundary += 1;
        let st = Command::new(charter_bin())
            .args(["run", "alert", "--input"])
            .arg(format!("{{\"order\": \"o-{boundary}\"}}"))
            .args(["--config", cfg])
            .env_remove("CHARTER_LOG")
            .env("CHARTER_TEST_CRASH_AT", boundary.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        match st.code() {
            None => crashes += 1,
            Some(0) => finished += 1,
            Some(c) => panic!("boundary {boundary}: charter run exited {c}"),
        }
        let r = charter(&["runs", "resume", "--config", cfg], dir.path());
        assert!(
            r.status.success(),
            "boundary {boundary}: resume: {}",
            text(&r)
        );
    }
    assert!(
        finished >= 2 && crashes >= 5,
        "{crashes} crashes, {finished} finished"
    );
    let d = charter_config::Deployment::load(&config, charter_runtime::host_catalog()).unwrap();
    let host = charter_runtime::Host::new(d, Default::default()).unwrap();
    let runs = host.runs();
    let got = got.lock().unwrap().clone();
    let mut resent = 0;
    for r in &runs {
        assert_eq!(
            r.status,
            charter_runtime::workflow::status::COMPLETED,
            "{r:?}"
        );
        let mine: Vec<&String> = got
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.split(':').nth(1) == Some(r.id.as_str()))
            .collect();
        let keys: std::collections::BTreeSet<_> = mine.iter().collect();
        assert_eq!(keys.len(), 1, "run {}: {mine:?}", r.id);
        resent += mine.len() - 1;
    }
    // Only a crash between a delivery and its recorded result sends again.
    assert!(resent <= 1, "{resent} re-sends over {crashes} crashes");
    let records = charter_audit::read_records(host.log().path()).unwrap();
    assert_eq!(
        charter_runtime::kpi::compute(&records).unauthorized_actions_executed,
        0
    );
    // The grants report names the channels a plugin may send to.
    let g = charter(&["grants", "--json", "--config", cfg], dir.path());
    let g: Value = serde_json::from_slice(&g.stdout).unwrap();
    assert_eq!(g["plugins"][0]["channels"], json!(["console", "ops"]));
    eprintln!(
        "notify crash points: {boundary} boundaries, {crashes} crashes, {} runs, {resent} re-sent under the same key",
        runs.len()
    );
}

/// Cedar decides on notify's typed arguments (channel, subject, body are
/// strings to policy): a forbid on the body denies, a channel routed to
/// people sends nothing until approved, and the approval sends exactly
/// the approved message once.
#[test]
fn policy_decides_notify_on_its_arguments() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Ok));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[channels.ops]
webhook = "http://127.0.0.1:{port}/hook"
[channels.console]
inbox = true
[groups.governed-notify]
capabilities = ["charter:host/notify.send"]
channels = ["ops", "console"]
policies = '''
@id("ops-needs-a-person")
@approval("operator")
permit (principal, action == Action::"charter:host/notify.send", resource)
when {{ context.channel == "ops" }};
@id("console-is-fine")
permit (principal, action == Action::"charter:host/notify.send", resource)
when {{ context.channel == "console" }};
@id("no-wire-talk")
forbid (principal, action == Action::"charter:host/notify.send", resource)
when {{ context.body like "*wire*" }};
'''
[groups.no-secrets]
capabilities = ["charter:host/secrets.get"]
[approvers.olga]
roles = ["operator"]
"#
    );
    let d = deployment(
        dir.path(),
        4,
        &[(
            "notifier",
            "fx-notify",
            &["governed-notify", "no-secrets"],
            &extra,
        )],
    );
    let (h, _) = host(d);
    rt.block_on(h.load("notifier")).unwrap();
    assert_eq!(h.policy_problems(), Vec::<String>::new());
    let call = |input: Value| rt.block_on(h.call("notifier", &input.to_string()));
    let out = call(json!({"channel": "console", "body": "hello"})).unwrap();
    assert!(out.output["sent"].is_string(), "{}", out.output);
    let err = call(json!({"channel": "console", "body": "send the wire now"})).unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("no-wire-talk"), "{err}");
    let err = call(json!({"channel": "ops", "subject": "s", "body": "refund A-1"})).unwrap_err();
    assert_eq!(err.exit_code(), 4, "awaiting approval: {err}");
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing sent before approval"
    );
    let proposals = h.proposals();
    assert_eq!(proposals.len(), 1);
    rt.block_on(h.decide(&proposals[0].id, "olga", true, None))
        .unwrap();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "the approval sent it once");
    assert_eq!(got[0].1["text"], "*s*\nrefund A-1");
}

/// The Python, JavaScript and C notify fixtures (plugins/<lang>/notify,
/// built by plugins/build.sh against a world importing notify at 0.2.0 and
/// log at 0.1.0) deliver to a granted inbox channel, and an ungranted
/// channel is refused by the host before anything is sent.
#[test]
fn every_language_notifies_a_granted_inbox_and_is_refused_an_ungranted_channel() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Ok));
    for lang in ["python", "js", "c"] {
        let wasm = language_build(lang, "notify");
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"{}\"\n{}\n[groups.logging]\ncapabilities = [\"charter:host/log.write\"]\n[plugins.notifier]\npath = \"{}\"\ngroups = [\"notify\", \"logging\"]\n",
            dir.path().join("data").display(),
            channels(port),
            wasm.display()
        );
        let d = charter_config::Deployment::parse(
            &toml,
            &dir.path().join("charter.toml"),
            charter_runtime::host_catalog(),
        )
        .unwrap_or_else(|e| panic!("{lang}: {e}"));
        let (h, _) = host(d);
        let p = rt.block_on(h.load("notifier")).unwrap();
        let mut imports: Vec<String> = p
            .inspection
            .imports
            .iter()
            .filter(|i| i.interface.starts_with("charter:host/"))
            .map(|i| i.interface.clone())
            .collect();
        imports.sort();
        assert_eq!(
            imports,
            ["charter:host/log@0.1.0", "charter:host/notify@0.2.0"],
            "{lang}"
        );
        let out = rt
            .block_on(h.call(
                "notifier",
                r#"{"channel": "console", "subject": "refund", "body": "A-1 approved"}"#,
            ))
            .unwrap_or_else(|e| panic!("{lang}: {e}"));
        let id = out.output["sent"].as_str().unwrap_or_default().to_string();
        assert!(id.starts_with("charter:"), "{lang}: {}", out.output);
        // The inbox entry is the call's record, with the versioned function.
        let evs = events(&h);
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::Call { function, args, .. }
                if function == "charter:host/notify@0.2.0#send"
                    && args["channel"] == "console" && args["body"] == "A-1 approved")),
            "{lang}"
        );
        assert!(
            evs.iter().any(
                |e| matches!(e, Event::CallResult { function, ok: true, result, .. }
                if function == "charter:host/notify@0.2.0#send" && *result == Some(json!(id)))
            ),
            "{lang}"
        );
        for channel in ["other", "ops/../other", "CONSOLE"] {
            let input = json!({"channel": channel, "body": "x"}).to_string();
            let err = rt.block_on(h.call("notifier", &input)).unwrap_err();
            assert!(
                matches!(err, CallError::Denied { .. }),
                "{lang} {channel:?}: {err}"
            );
            assert!(err.to_string().contains("is not granted"), "{lang}: {err}");
        }
    }
    assert!(
        got.lock().unwrap().is_empty(),
        "no webhook was sent to: {:?}",
        got.lock().unwrap()
    );
}
