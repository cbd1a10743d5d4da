//! Durable workflows: sequencing, input templates, conditions, retries
//! with backoff, timeouts, every on-failure path, escalations, approvals
//! across a restart, and non-determinism detection.

use charter_audit::{Event, read_records};
use charter_config::Deployment;
use charter_runtime::workflow::{RunState, status};
use charter_runtime::{Host, HostOptions};
use serde_json::json;

use crate::support::*;

/// A deployment with the echo and workflow fixtures, approvers, and the
/// workflows in `workflows` (TOML).
pub(crate) fn wf_deployment(dir: &std::path::Path, workflows: &str) -> Deployment {
    wf_deployment_http(dir, workflows, 9)
}

/// The same, with outbound HTTP to 127.0.0.1:`port` granted to `work`.
pub(crate) fn wf_deployment_http(dir: &std::path::Path, workflows: &str, port: u16) -> Deployment {
    let toml = format!(
        r#"
[deployment]
name = "wf"
phase = 4
data_dir = "{data}"
{GROUPS}
[approvers.olga]
roles = ["operator"]
[approvers.rita]
roles = ["refund-approver"]

[plugins.echo]
path = "{echo}"
groups = ["kv-read", "kv-write", "logging"]

[groups.http]
capabilities = ["wasi:http/outgoing-handler.handle"]
allow_hosts = ["127.0.0.1:{port}"]

[plugins.work]
path = "{work}"
groups = ["kv-read", "kv-write", "logging", "http"]
limits = {{ deadline_ms = 5000 }}

{workflows}
"#,
        data = dir.join("data").display(),
        echo = fixture("fx-echo").display(),
        work = fixture("fx-workflow").display(),
    );
    Deployment::parse(
        &toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn host_on(d: Deployment) -> Host {
    Host::new(d, HostOptions::default()).expect("host")
}

fn events(h: &Host) -> Vec<Event> {
    read_records(h.log().path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

fn attempts(st: &RunState, step: &str) -> Vec<String> {
    st.history
        .iter()
        .filter(|a| a.step == step)
        .map(|a| a.outcome.clone())
        .collect()
}

#[test]
fn steps_run_in_order_with_templates_and_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment(
        dir.path(),
        r#"
[workflows.pipeline]
[[workflows.pipeline.steps]]
id = "first"
plugin = "echo"
input = { order = "$/input/order", literal = "$$not-a-pointer" }
[[workflows.pipeline.steps]]
id = "only-big"
plugin = "echo"
when = { path = "$/input/amount", in = [1000, 2000] }
[[workflows.pipeline.steps]]
id = "last"
plugin = "echo"
input = { from_first = "$/steps/first/echo/order", run = "$/run/workflow" }
"#,
    );
    assert!(
        d.workflow_problems().is_empty(),
        "{:?}",
        d.workflow_problems()
    );
    let h = host_on(d);
    let st = rt()
        .block_on(h.run_workflow("pipeline", json!({"order": "A-1", "amount": 5}), None))
        .unwrap();
    assert_eq!(st.status, status::COMPLETED, "{st:?}");
    assert_eq!(
        st.outputs["first"]["echo"],
        json!({"order": "A-1", "literal": "$not-a-pointer"})
    );
    assert_eq!(attempts(&st, "only-big"), ["skipped"]);
    assert!(!st.outputs.contains_key("only-big"));
    assert_eq!(
        st.output.as_ref().unwrap()["echo"],
        json!({"from_first": "A-1", "run": "pipeline"})
    );
    // The index and the log agree; the run's path is in the log.
    assert_eq!(h.run(&st.id).unwrap().status, status::COMPLETED);
    let evs = events(&h);
    let kinds: Vec<&str> = evs
        .iter()
        .filter(|e| e.run() == Some(st.id.as_str()))
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "run-started",
            "step-attempt",
            "step-attempt",
            "step-attempt",
            "run-finished"
        ]
    );
    // The run's end goes out with its last step, in one append, and
    // carries the last step's output (the driver folds the attempt into a
    // copy of the state without the run's input and history to decide).
    let recs = read_records(h.log().path()).unwrap();
    let mine: Vec<_> = recs
        .iter()
        .filter(|r| r.event.run() == Some(st.id.as_str()))
        .collect();
    let [.., last_step, finish] = mine.as_slice() else {
        panic!("too few records: {mine:?}")
    };
    assert!(
        !last_step.end && finish.end && finish.seq == last_step.seq + 1,
        "the last step and the run's end are one append: {last_step:?} {finish:?}"
    );
    match &finish.event {
        Event::RunFinished { output, status, .. } => {
            assert_eq!(status, status::COMPLETED);
            assert_eq!(output.as_ref(), st.output.as_ref());
            assert_eq!(output.as_ref().unwrap()["echo"]["from_first"], "A-1");
        }
        other => panic!("not a run-finished: {other:?}"),
    }
}

#[test]
fn retries_back_off_and_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment(
        dir.path(),
        r#"
[workflows.flaky]
[[workflows.flaky.steps]]
id = "call"
plugin = "work"
input = { mode = "flaky", fail_until = 3, attempt = "$/run/attempt" }
retry = { max_attempts = 4, initial_backoff_ms = 40, max_backoff_ms = 1000 }
"#,
    );
    let h = host_on(d);
    let st = rt()
        .block_on(h.run_workflow("flaky", json!({}), None))
        .unwrap();
    assert_eq!(st.status, status::COMPLETED, "{st:?}");
    assert_eq!(attempts(&st, "call"), ["failed", "failed", "ok"]);
    assert_eq!(st.output, Some(json!({"ok_on_attempt": 3})));
    assert_eq!(st.retries, 2);
    // Exponential backoff: each retry waited at least its delay (40, 80 ms),
    // as recorded in the attempts' retry_at.
    let recs = read_records(h.log().path()).unwrap();
    let tries: Vec<(u64, Option<u64>)> = recs
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepAttempt { retry_at_ms, .. } => Some((r.time_ms, *retry_at_ms)),
            _ => None,
        })
        .collect();
    // (Record times are commit times, after the attempt: compare each
    // retry time with what certainly happened before it.)
    let started = recs
        .iter()
        .find(|r| matches!(r.event, Event::RunStarted { .. }))
        .unwrap()
        .time_ms;
    assert!(tries[0].1.unwrap() >= started + 40);
    assert!(tries[1].1.unwrap() >= tries[0].1.unwrap() + 80);
    assert!(
        tries[1].0 >= tries[0].1.unwrap(),
        "attempt 2 started before its retry time"
    );
    assert!(
        tries[2].0 >= tries[1].1.unwrap(),
        "attempt 3 started before its retry time"
    );
    let k = charter_runtime::kpi::compute(&recs);
    let w = &k.workflows["flaky"];
    assert_eq!((w.retries, w.escalations_avoided, w.completed), (2, 1, 1));
}

#[test]
fn exhausted_retries_escalate_and_people_resolve_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment(
        dir.path(),
        r#"
[workflows.esc]
escalate_to = "operator"
[[workflows.esc.steps]]
id = "call"
plugin = "work"
input = { mode = "flaky", fail_until = 100, attempt = "$/run/attempt" }
retry = { max_attempts = 2, initial_backoff_ms = 10 }
on_failure = "escalate"
[[workflows.esc.steps]]
id = "after"
plugin = "echo"
"#,
    );
    let h = host_on(d);
    let rt = rt();
    let st = rt.block_on(h.run_workflow("esc", json!({}), None)).unwrap();
    assert_eq!(st.status, status::ESCALATED);
    assert_eq!(attempts(&st, "call"), ["failed", "failed"]);
    let escs = h.escalations();
    assert_eq!(escs.len(), 1);
    let e = &escs[0];
    assert_eq!(
        (e.run.as_str(), e.step.as_str(), e.role.as_str()),
        (st.id.as_str(), "call", "operator")
    );
    assert!(e.reason.contains("after 2 attempts"), "{}", e.reason);
    assert!(
        events(&h)
            .iter()
            .any(|ev| matches!(ev, Event::Escalated { id, .. } if *id == e.id))
    );

    // Someone without the role is refused, and the refusal is recorded.
    let err = rt
        .block_on(h.resolve_escalation(&e.id, "rita", "retry", None, None))
        .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(events(&h).iter().any(|ev| matches!(
        ev,
        Event::EscalationResolved {
            accepted: false,
            ..
        }
    )));

    // A retry by the operator fails again (two more attempts), escalating anew.
    let st = rt
        .block_on(h.resolve_escalation(&e.id, "olga", "retry", None, Some("try again".into())))
        .unwrap();
    assert_eq!(st.status, status::ESCALATED);
    assert_eq!(attempts(&st, "call").len(), 4);
    let open: Vec<_> = h
        .escalations()
        .into_iter()
        .filter(|e| e.status == "open")
        .collect();
    assert_eq!(open.len(), 1);

    // Skipping it with an output lets the run go on to the next step.
    let st = rt
        .block_on(h.resolve_escalation(
            &open[0].id,
            "olga",
            "skip",
            Some(json!({"manual": true})),
            None,
        ))
        .unwrap();
    assert_eq!(st.status, status::COMPLETED, "{st:?}");
    assert_eq!(st.outputs["call"], json!({"manual": true}));
    assert_eq!(st.output.as_ref().unwrap()["echo"], json!({"manual": true}));
    let k = charter_runtime::kpi::compute(&read_records(h.log().path()).unwrap());
    let w = &k.workflows["esc"];
    assert_eq!((w.escalations, w.handoffs, w.runs), (2, 1, 1));
    assert_eq!(w.handoff_rate, Some(1.0));
}

#[test]
fn step_timeout_stops_a_spinning_step_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment(
        dir.path(),
        r#"
[workflows.slow]
[[workflows.slow.steps]]
id = "spin"
plugin = "work"
input = { mode = "spin" }
timeout_ms = 150
on_failure = "fail"
"#,
    );
    let h = host_on(d);
    let st = rt()
        .block_on(h.run_workflow("slow", json!({}), None))
        .unwrap();
    assert_eq!(st.status, status::FAILED);
    let a = &st.history[0];
    assert_eq!(a.failure.as_deref(), Some("timeout"));
    assert!(a.error.as_deref().unwrap().contains("deadline"), "{a:?}");
    assert!(st.error.as_deref().unwrap().contains("step spin failed"));
}

#[test]
fn fatal_errors_are_not_retried_and_on_failure_runs_a_handler() {
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment(
        dir.path(),
        r#"
[workflows.handled]
[[workflows.handled.steps]]
id = "call"
plugin = "work"
input = { mode = "flaky", fail_until = 100, class = "fatal", attempt = "$/run/attempt" }
retry = { max_attempts = 5, initial_backoff_ms = 10 }
on_failure = { step = "cleanup" }
[[workflows.handled.steps]]
id = "skipped-by-failure"
plugin = "echo"
handler = true
[[workflows.handled.steps]]
id = "cleanup"
plugin = "echo"
handler = true
input = { cleaned = "$/run/id" }
"#,
    );
    let h = host_on(d);
    let st = rt()
        .block_on(h.run_workflow("handled", json!({}), None))
        .unwrap();
    assert_eq!(st.status, status::COMPLETED, "{st:?}");
    assert_eq!(
        attempts(&st, "call"),
        ["failed"],
        "fatal is never retried by default"
    );
    assert_eq!(st.history[0].failure.as_deref(), Some("fatal"));
    assert_eq!(attempts(&st, "cleanup"), ["ok"]);
    assert!(attempts(&st, "skipped-by-failure").is_empty());
    assert_eq!(st.output.as_ref().unwrap()["echo"]["cleaned"], json!(st.id));
}

#[test]
fn a_non_deterministic_step_is_detected_and_escalated() {
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment(
        dir.path(),
        r#"
[workflows.random]
[[workflows.random.steps]]
id = "pick"
plugin = "work"
input = { mode = "random", attempt = "$/run/attempt" }
retry = { max_attempts = 3, initial_backoff_ms = 10 }
"#,
    );
    let h = host_on(d);
    let st = rt()
        .block_on(h.run_workflow("random", json!({}), None))
        .unwrap();
    // Attempt 1 read a random key and failed; attempt 2 read another key at
    // the same journal position: detected, not re-executed, escalated.
    assert_eq!(st.status, status::ESCALATED, "{st:?}");
    let last = st.history.last().unwrap();
    assert_eq!(last.failure.as_deref(), Some("nondeterministic"));
    assert!(
        last.error
            .as_deref()
            .unwrap()
            .contains("non-deterministic step")
    );
    assert_eq!(st.history.len(), 2, "never retried past the divergence");
    let esc = &h.escalations()[0];
    assert_eq!(esc.role, "operator");
    assert!(esc.reason.contains("non-deterministic"));
}

#[test]
fn check_reports_workflow_problems() {
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment(
        dir.path(),
        r#"
[workflows.bad]
escalate_to = "nobody-has-this"
[[workflows.bad.steps]]
id = "a"
plugin = "missing"
input = { x = "$/steps/b/out", y = "$/nothing" }
on_failure = { step = "a" }
retry = { on = ["sometimes"] }
escalation_deadline_ms = 1000
[[workflows.bad.steps]]
id = "b"
plugin = "echo"
when = { path = "input/x", equals = 1 }
on_failure = "escalate"
escalation_deadline_ms = 0
[[workflows.bad.steps]]
id = "b"
plugin = "echo"
"#,
    );
    let problems: Vec<String> = d
        .workflow_problems()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let all = problems.join("\n");
    for needle in [
        "unknown plugin \"missing\"",
        "names step \"b\", which does not run before this one",
        "starts with \"nothing\"",
        "would be a cycle",
        "unknown failure class \"sometimes\"",
        "bad pointer \"input/x\"",
        "duplicate step id",
        "role \"nobody-has-this\", which no approver holds",
        "escalation_deadline_ms needs on_failure = \"escalate\"",
        "escalation_deadline_ms must be positive",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

/// The refunds example as a workflow: approval across a restart.
pub(crate) fn refunds_deployment(dir: &std::path::Path) -> Deployment {
    let src = root().join("examples/refunds/charter.toml");
    let text = std::fs::read_to_string(&src).unwrap();
    let text = text.replace(
        "data_dir = \"../../target/charter-data/refunds\"",
        &format!("data_dir = \"{}\"", dir.join("data").display()),
    );
    let text = format!(
        "{text}\n[workflows.refund]\nescalate_to = \"refund-approver\"\n[[workflows.refund.steps]]\nid = \"small\"\nplugin = \"refund-bot\"\ninput = {{ order_id = \"S-1\", amount_cents = 1500, reason = \"damaged\" }}\n[[workflows.refund.steps]]\nid = \"issue\"\nplugin = \"refund-bot\"\ninput = {{ refunds = [{{ order_id = \"S-2\", amount_cents = 900 }}, \"$/input\"] }}\non_failure = \"escalate\"\n"
    );
    Deployment::parse(&text, &src, charter_runtime::host_catalog()).unwrap()
}

fn ledger(h: &Host) -> Vec<(String, String)> {
    h.store()
        .scan("payments")
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("refund:"))
        .collect()
}

#[test]
fn approval_round_trip_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let input = json!({"order_id": "A-77", "amount_cents": 200_000, "reason": "never arrived"});
    let (run, proposal) = {
        let h = host_on(refunds_deployment(dir.path()));
        let st = rt
            .block_on(h.run_workflow("refund", input, Some("carol")))
            .unwrap();
        assert_eq!(st.status, status::WAITING_APPROVAL, "{st:?}");
        assert_eq!(attempts(&st, "small"), ["ok"]);
        // S-1 (step 1) and S-2 (first call of step 2) ran; A-77 waits.
        assert_eq!(ledger(&h).len(), 2, "the small refunds ran at once");
        (st.id.clone(), st.proposal.clone().unwrap())
    }; // the host goes away while the run waits
    let h = host_on(refunds_deployment(dir.path()));
    assert_eq!(h.run(&run).unwrap().status, status::WAITING_APPROVAL);
    // Resuming before anyone decides changes nothing.
    let resumed = rt.block_on(h.resume_runs());
    assert!(resumed.is_empty(), "{resumed:?}");
    // The initiator may not approve; bob may.
    assert!(
        rt.block_on(h.decide(&proposal, "carol", true, None))
            .is_err()
    );
    let d = rt
        .block_on(h.decide(
            &proposal,
            "bob",
            true,
            Some("checked with the customer".into()),
        ))
        .unwrap();
    let st = d.run.expect("the run resumed");
    assert_eq!(st.status, status::COMPLETED, "{st:?}");
    assert_eq!(attempts(&st, "issue"), ["awaiting-approval", "ok"]);
    assert_eq!(
        st.history.last().unwrap().replayed,
        1,
        "S-2 replayed from the journal"
    );
    assert_eq!(
        st.output.as_ref().unwrap()["refunds"][1]["refund_id"],
        json!("R-A-77-200000")
    );
    let l = ledger(&h);
    assert_eq!(l.len(), 3, "{l:?}");
    // The connector ran exactly once per refund: S-1, S-2 and A-77 (the
    // re-run after approval replayed S-2 instead of calling it again).
    let connector_steps = events(&h)
        .iter()
        .filter(|e| matches!(e, Event::Step { plugin, outcome, .. } if plugin == "payments" && outcome == "ok"))
        .count();
    assert_eq!(connector_steps, 3);
    let k = charter_runtime::kpi::compute(&read_records(h.log().path()).unwrap());
    assert_eq!(
        k.unauthorized_actions_executed, 0,
        "{:?}",
        k.unauthorized_detail
    );
    assert_eq!(k.workflows["refund"].handoffs, 1);
}

#[test]
fn a_rejected_proposal_fails_the_step_closed_and_escalates() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let h = host_on(refunds_deployment(dir.path()));
    let st = rt
        .block_on(h.run_workflow(
            "refund",
            json!({"order_id": "A-78", "amount_cents": 300_000}),
            None,
        ))
        .unwrap();
    let p = st.proposal.clone().unwrap();
    let d = rt.block_on(h.decide(&p, "bob", false, None)).unwrap();
    let st = d.run.unwrap();
    assert_eq!(st.status, status::ESCALATED, "{st:?}");
    assert_eq!(
        st.history.last().unwrap().failure.as_deref(),
        Some("rejected")
    );
    assert_eq!(ledger(&h).len(), 2, "only the small refunds");
    // Cancelling the escalated run closes its escalation too.
    let st = rt.block_on(h.cancel_run(&st.id, "rita")).unwrap();
    assert_eq!(st.status, status::CANCELLED);
    assert!(h.escalations().iter().all(|e| e.status == "resolved"));
}

#[test]
fn a_hanging_receiver_cannot_hold_a_step_past_its_timeout() {
    let rt = rt();
    // Accepts connections, never answers.
    let (port, _keep) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        (port, keep)
    });
    let dir = tempfile::tempdir().unwrap();
    let d = wf_deployment_http(
        dir.path(),
        &format!(
            r#"
[workflows.hang]
[[workflows.hang.steps]]
id = "post"
plugin = "work"
input = {{ mode = "post", body = "x", urls = ["http://127.0.0.1:{port}/"] }}
timeout_ms = 300
"#
        ),
        port,
    );
    let h = host_on(d);
    let st = rt
        .block_on(h.run_workflow("hang", json!({}), None))
        .unwrap();
    assert_eq!(st.status, status::FAILED, "{st:?}");
    // Whichever fires first — the request's own timeout or the step's
    // deadline — the step ends at its timeout, not the plugin's 5 s deadline.
    let a = &st.history[0];
    let e = a.error.as_deref().unwrap();
    assert!(
        e.contains("Timeout") || e.contains("after 300 ms (the step's timeout_ms)"),
        "{a:?}"
    );
    // The request's decision and its (failed) result are in the journal.
    let evs = events(&h);
    assert!(evs.iter().any(|e| matches!(e, Event::CallResult { ok: false, function, .. } if function.starts_with("wasi:http"))));
}

/// A run keeps the definition it started on: after its workflow changed
/// (and a restart), it resumes on the one it recorded, kept by digest in
/// the data directory; a kept definition whose content is not its digest
/// (edited, replaced) is no definition, and the run does not resume.
#[test]
fn a_changed_workflow_resumes_old_runs_on_their_definition() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let wf = |t: u64| {
        format!(
            "[workflows.w]\n[[workflows.w.steps]]\nid = \"s\"\nplugin = \"work\"\ninput = {{ mode = \"flaky\", fail_until = 2, attempt = \"$/run/attempt\" }}\ntimeout_ms = {t}\nretry = {{ max_attempts = 2, initial_backoff_ms = 60000 }}\n"
        )
    };
    let id = {
        let h = host_on(wf_deployment(dir.path(), &wf(1000)));
        let st = rt.block_on(h.start_run("w", json!({}), None)).unwrap();
        st.id
    };
    let h = host_on(wf_deployment(dir.path(), &wf(2000)));
    let st = h.run(&id).unwrap();
    let def = h.definition(&st).unwrap();
    assert_eq!(def.steps[0].timeout_ms, Some(1000), "{def:?}");
    assert_eq!(h.workflow("w").unwrap().steps[0].timeout_ms, Some(2000));
    // The kept definition replaced by another (valid) one: refused.
    let hex = st.workflow_digest.strip_prefix("sha256:").unwrap();
    let kept = h.data_dir().join("workflows").join(format!("{hex}.json"));
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(text.contains("1000"), "{text}");
    std::fs::write(&kept, text.replace("1000", "9999")).unwrap();
    let err = rt.block_on(h.drive(&id)).unwrap_err();
    assert!(
        err.to_string().contains("changed since the run started"),
        "{err}"
    );
    assert!(rt.block_on(h.cancel_run(&id, "olga")).is_ok());
    assert_eq!(h.run(&id).unwrap().status, status::CANCELLED);
}

#[test]
fn an_expired_proposal_fails_the_step_closed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let d = refunds_deployment(dir.path());
    let text = std::fs::read_to_string(&d.source)
        .unwrap()
        .replace(
            "data_dir = \"../../target/charter-data/refunds\"",
            &format!("data_dir = \"{}\"", dir.path().join("data").display()),
        )
        .replace("proposal_expiry_hours = 72", "proposal_expiry_hours = 0");
    let text = format!(
        "{text}\n[workflows.refund]\nescalate_to = \"refund-approver\"\n[[workflows.refund.steps]]\nid = \"issue\"\nplugin = \"refund-bot\"\ninput = \"$/input\"\non_failure = \"fail\"\n"
    );
    let d = Deployment::parse(&text, &d.source, charter_runtime::host_catalog()).unwrap();
    let h = host_on(d);
    let st = rt
        .block_on(h.run_workflow(
            "refund",
            json!({"order_id": "A-90", "amount_cents": 250_000}),
            None,
        ))
        .unwrap();
    // Expiry counts as rejection: the step fails closed as soon as the
    // engine sees the proposal expired (here at once: 0 hours).
    assert_eq!(st.status, status::FAILED, "{st:?}");
    assert_eq!(attempts(&st, "issue"), ["awaiting-approval", "failed"]);
    let last = st.history.last().unwrap();
    assert_eq!(last.failure.as_deref(), Some("rejected"));
    assert!(
        last.error.as_deref().unwrap().contains("expired"),
        "{last:?}"
    );
    assert!(ledger(&h).is_empty());
}
