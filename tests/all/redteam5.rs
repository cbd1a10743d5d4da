//! Fifth red-team pass (the fourth's attacks that succeeded against the
//! #11 merge, now fixed): concurrent approvals of one proposal, concurrent
//! resolutions of one escalation, an approval after a channel grant was
//! revoked, and an approved notify re-sent after a crash under a new key.

use std::sync::Arc;

use charter_audit::{Event, read_records};
use charter_runtime::{CallError, Host, HostOptions};
use serde_json::json;

use crate::notify::{Answer, webhook};
use crate::support::*;

/// Channels `ops` (webhook) and `console` (inbox); `granted` lists what
/// the governed group grants. Sending to `ops` needs one operator.
pub(crate) fn governed(port: u16, granted: &str) -> String {
    format!(
        r#"
[channels.ops]
webhook = "http://127.0.0.1:{port}/hook"
[channels.console]
inbox = true
[groups.governed-notify]
capabilities = ["charter:host/notify.send"]
channels = [{granted}]
policies = '''
@id("ops-needs-a-person")
@approval("operator")
permit (principal, action == Action::"charter:host/notify.send", resource)
when {{ context.channel == "ops" }};
@id("console-is-fine")
permit (principal, action == Action::"charter:host/notify.send", resource)
when {{ context.channel == "console" }};
'''
[groups.no-secrets]
capabilities = ["charter:host/secrets.get"]
[approvers.olga]
roles = ["operator"]
[approvers.pavel]
roles = ["operator"]
"#
    )
}

fn governed_deployment(
    dir: &std::path::Path,
    port: u16,
    granted: &str,
) -> charter_config::Deployment {
    deployment(
        dir,
        4,
        &[(
            "notifier",
            "fx-notify",
            &["governed-notify", "no-secrets"],
            &governed(port, granted),
        )],
    )
}

fn kpi_unauthorized(h: &Host) -> u64 {
    let records = read_records(h.log().path()).unwrap();
    charter_runtime::kpi::compute(&records).unauthorized_actions_executed
}

/// Two approvers (each alone enough) approve one pending notify at the
/// same time, as a daemon serving the control API would let them: the
/// approved call must execute once.
#[test]
fn two_concurrent_approvals_execute_a_proposal_once() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Status(200, 2)));
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(governed_deployment(
        dir.path(),
        port,
        "\"ops\", \"console\"",
    ));
    let h = Arc::new(h);
    let mut twice = Vec::new();
    for round in 0..40 {
        let before = got.lock().unwrap().len();
        let err = rt
            .block_on(
                h.call(
                    "notifier",
                    &json!({"channel": "ops", "subject": "s", "body": format!("refund {round}")})
                        .to_string(),
                ),
            )
            .unwrap_err();
        assert_eq!(err.exit_code(), 4, "awaiting approval: {err}");
        let id = h
            .proposals()
            .into_iter()
            .find(|p| p.status == "pending")
            .unwrap()
            .id;
        let (a, b) = rt.block_on(async {
            let (h1, h2) = (h.clone(), h.clone());
            let (i1, i2) = (id.clone(), id.clone());
            let a = tokio::spawn(async move { h1.decide(&i1, "olga", true, None).await });
            let b = tokio::spawn(async move { h2.decide(&i2, "pavel", true, None).await });
            (a.await.unwrap(), b.await.unwrap())
        });
        let executed = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Ok(d) if d.outcome == "executed"))
            .count();
        let sent = got.lock().unwrap().len() - before;
        if executed != 1 || sent != 1 {
            twice.push((round, executed, sent, format!("{a:?} / {b:?}")));
        }
    }
    let results = read_records(h.log().path())
        .unwrap()
        .into_iter()
        .filter(|r| {
            matches!(
                &r.event,
                Event::CallResult {
                    proposal: Some(_),
                    ..
                }
            )
        })
        .count();
    let kpi = kpi_unauthorized(&h);
    assert!(
        twice.is_empty() && results == 40 && kpi == 0,
        "approvals executed more than once ({results} results for 40 proposals, KPI unauthorized = {kpi}, {} deliveries): {twice:#?}",
        got.lock().unwrap().len()
    );
}

/// A pending notify to `ops`, approved after the operator took `ops` out
/// of the plugin's channel grant (the plugin still loads: notify.send and
/// `console` stay granted). The channel is no longer granted, so the
/// approved call must not send.
#[test]
fn an_approval_after_the_channel_grant_is_revoked_sends_nothing() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Status(200, 2)));
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let h = Host::new(
            governed_deployment(dir.path(), port, "\"ops\", \"console\""),
            HostOptions::default(),
        )
        .unwrap();
        let err = rt
            .block_on(h.call(
                "notifier",
                &json!({"channel": "ops", "subject": "s", "body": "b"}).to_string(),
            ))
            .unwrap_err();
        assert_eq!(err.exit_code(), 4, "{err}");
        h.proposals()[0].id.clone()
    };
    // The operator revokes `ops` for this plugin.
    let d = governed_deployment(dir.path(), port, "\"console\"");
    assert!(d.violations().is_empty(), "{:?}", d.violations());
    let h = Host::new(d, HostOptions::default()).unwrap();
    // A fresh call to `ops` is denied by the argument grant...
    let err = rt
        .block_on(h.call(
            "notifier",
            &json!({"channel": "ops", "body": "x"}).to_string(),
        ))
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    // ...and so must the approval of the one proposed before.
    let r = rt.block_on(h.decide(&id, "olga", true, None));
    assert!(
        got.lock().unwrap().is_empty(),
        "the approval sent to a channel no longer granted: {r:?}"
    );
    assert_eq!(kpi_unauthorized(&h), 0);
}

/// An escalated run, resolved twice at once ("skip" with two outputs, as
/// two requests to a daemon would): one resolution is accepted, the other
/// refused as stale; the step after the escalated one still runs (a second
/// "skip" accepted on the moved cursor would skip it unseen).
#[test]
fn two_concurrent_resolutions_of_one_escalation_accept_one() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let d = crate::workflow::wf_deployment(
        dir.path(),
        r#"
[workflows.esc]
escalate_to = "operator"
[[workflows.esc.steps]]
id = "call"
plugin = "work"
input = { mode = "flaky", fail_until = 100, attempt = "$/run/attempt" }
retry = { max_attempts = 1, initial_backoff_ms = 10 }
on_failure = "escalate"
[[workflows.esc.steps]]
id = "after"
plugin = "echo"
[[workflows.esc.steps]]
id = "last"
plugin = "echo"
"#,
    );
    let h = Arc::new(Host::new(d, HostOptions::default()).unwrap());
    let mut bad = Vec::new();
    for round in 0..10 {
        let st = rt.block_on(h.run_workflow("esc", json!({}), None)).unwrap();
        assert_eq!(st.status.to_string(), "escalated", "{st:?}");
        let esc = h
            .escalations()
            .into_iter()
            .find(|e| e.run == st.id && e.status == "open")
            .unwrap();
        let (a, b) = rt.block_on(async {
            let (h1, h2) = (h.clone(), h.clone());
            let (e1, e2) = (esc.id.clone(), esc.id.clone());
            let a = tokio::spawn(async move {
                h1.resolve_escalation(&e1, "olga", "skip", Some(json!({"by": "a"})), None)
                    .await
            });
            let b = tokio::spawn(async move {
                h2.resolve_escalation(&e2, "olga", "skip", Some(json!({"by": "b"})), None)
                    .await
            });
            (a.await.unwrap(), b.await.unwrap())
        });
        let accepted = read_records(h.log().path())
            .unwrap()
            .into_iter()
            .filter(|r| {
                matches!(&r.event, Event::EscalationResolved { id, accepted: true, .. } if *id == esc.id)
            })
            .count();
        let run = h.run(&st.id).unwrap();
        let after_ran = run.history.iter().any(|a| a.step == "after");
        if accepted != 1 || !after_ran {
            bad.push((
                round,
                accepted,
                after_ran,
                format!("{a:?} / {b:?}"),
                format!("{run:?}"),
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// `charter proposals approve` of a notify proposal (outside a run),
/// aborted at each log I/O boundary; a second approver then approves the
/// still-pending proposal. The message must be delivered at most once, or
/// (after a crash between the delivery and its recorded result) re-sent
/// under the same idempotency key.
#[test]
fn an_approved_notify_is_not_re_sent_under_a_new_key_after_a_crash() {
    use std::process::{Command, Stdio};
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Status(200, 2)));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("charter.toml");
    std::fs::write(
        &config,
        format!(
            "[deployment]\nname = \"rt4\"\nphase = 4\ndata_dir = \"data\"\n{}\n[plugins.notifier]\npath = \"{}\"\ngroups = [\"governed-notify\", \"no-secrets\"]\n",
            governed(port, "\"ops\", \"console\""),
            fixture("fx-notify").display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let log = dir.path().join("data").join(charter_audit::LOG_FILE);
    let mut problems = Vec::new();
    for boundary in 1..=60 {
        let body = format!("b-{boundary}");
        let input = json!({"channel": "ops", "subject": "s", "body": body}).to_string();
        let c = charter(
            &["call", "notifier", "--input", &input, "--config", cfg],
            dir.path(),
        );
        assert_eq!(c.status.code(), Some(4), "{}", text(&c));
        let id = read_records(&log)
            .unwrap()
            .into_iter()
            .rev()
            .find_map(|r| match r.event {
                Event::Proposal { id, .. } => Some(id),
                _ => None,
            })
            .unwrap();
        let st = Command::new(charter_bin())
            .args(["proposals", "approve", &id, "--as", "olga", "--config", cfg])
            .current_dir(dir.path())
            .env_remove("CHARTER_LOG")
            .env("CHARTER_TEST_CRASH_AT", boundary.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let mut second = String::new();
        if st.code().is_none() {
            // Crashed: another approver takes it from the log's state.
            let o = charter(
                &[
                    "proposals",
                    "approve",
                    &id,
                    "--as",
                    "pavel",
                    "--config",
                    cfg,
                ],
                dir.path(),
            );
            second = text(&o);
        }
        let keys: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["text"].as_str().is_some_and(|t| t.ends_with(&body)))
            .map(|(k, _)| k.clone())
            .collect();
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        eprintln!("boundary {boundary}: {:?} {keys:?} {second}", st.code());
        if distinct.len() > 1 {
            problems.push((boundary, st.code(), keys));
        }
        if st.code().is_some() {
            break;
        }
    }
    assert!(
        problems.is_empty(),
        "one approved message delivered under several keys: {problems:#?}"
    );
}
