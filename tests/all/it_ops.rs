//! Issue 16, pattern 1: IT-ops auto-remediation at phase 1, end to end.
//! `examples/it-ops/run.sh` runs as a user runs it (this build's binary,
//! its own work directory), then the stand-ins' records are read back:
//!
//! - a phase 1 deployment granting `llm.classify` is refused at load, even
//!   with the group claiming phase 1;
//! - checkout: one diagnosis, the restart retried under the same
//!   idempotency key after the orchestrator's 503, a healthy verification,
//!   nobody paged;
//! - payments: verification retried to its limit, then exactly one page to
//!   on-call, and the run escalated to the on-call role;
//! - a crafted alert naming the orchestrator as the service's instance
//!   reaches nothing (the health check's grant names the services' host
//!   only): denied and escalated;
//! - the audit chain verifies and no action executed without an allow.

use std::process::Command;

use serde_json::Value;

use crate::support::{charter, charter_bin, fixture, root, text};

fn records(work: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(work.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn it_ops_remediates_escalates_and_refuses_ai_at_phase_1() {
    for p in ["ops-probe", "ops-restart", "ops-page", "refund-triage"] {
        fixture(p);
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = Command::new("bash")
        .arg(root().join("examples/it-ops/run.sh"))
        .env("CHARTER_BIN", charter_bin())
        .env("IT_OPS_WORK", &work)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");

    // Phase 1: the llm grant is refused, by the rule that reads the
    // interface (the group says phase = 1).
    assert!(
        all.contains("group triage-llm grants charter:host/llm.classify, but phase 1 (deterministic) permits no AI"),
        "{all}"
    );

    let recs = records(&work);
    let of = |path: &str| -> Vec<&Value> { recs.iter().filter(|r| r["path"] == path).collect() };

    // Scenario 1: checkout recovers after the restart.
    let health = of("/checkout/healthz");
    let statuses: Vec<_> = health
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![503, 200], "diagnose then verify: {recs:?}");
    let restarts = of("/v1/services/checkout/restart");
    assert_eq!(restarts.len(), 2, "503 once, then the retry: {recs:?}");
    assert_eq!(restarts[0]["status"], 503);
    assert_eq!(restarts[1]["status"], 202);
    let key = restarts[0]["idempotency_key"].as_str().unwrap();
    assert!(
        key.starts_with("charter:R-") && key.ends_with(":remediate:1"),
        "{key}"
    );
    assert_eq!(
        restarts[1]["idempotency_key"], key,
        "a retry carries the same key"
    );
    assert_eq!(restarts[0]["body"], restarts[1]["body"]);
    assert_eq!(restarts[0]["method"], "POST");

    // Scenario 2: payments stays down; verify tried 4 times, then one page.
    let health = of("/payments/healthz");
    assert_eq!(health.len(), 5, "diagnose + 4 verifications: {recs:?}");
    assert!(health.iter().all(|r| r["status"] == 503));
    assert_eq!(of("/v1/services/payments/restart").len(), 2);
    let pages = of("/oncall");
    assert_eq!(pages.len(), 1, "paged once, for payments only: {recs:?}");
    let page = pages[0]["body"]["text"].as_str().unwrap();
    assert!(page.contains("[on-call] payments is down"), "{page}");
    assert!(
        page.contains("9c04e1b2d3a7f815"),
        "the alert's fingerprint: {page}"
    );
    assert!(pages[0]["idempotency_key"].as_str().is_some());

    // Scenario 3: the crafted alert reached nothing at all.
    assert!(
        recs.iter()
            .all(|r| !r["path"].as_str().unwrap().contains("inventory")),
        "{recs:?}"
    );
    assert!(
        recs.iter()
            .all(|r| r["listener"] != "orchestrator" || r["method"] == "POST")
    );
    assert_eq!(recs.len(), 4 + 5 + 2 + 1, "{recs:?}");

    // The record in the log: escalations to on-call, chain, KPIs.
    let cfg = work.join("charter.toml");
    let cfg = cfg.to_str().unwrap();
    let out = charter(
        &["escalations", "list", "--config", cfg, "--json"],
        dir.path(),
    );
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let esc = v["escalations"].as_array().unwrap();
    assert_eq!(esc.len(), 2, "{v}");
    assert!(esc.iter().all(|e| e["role"] == "on-call"), "{v}");
    let steps: Vec<_> = esc.iter().map(|e| e["step"].as_str().unwrap()).collect();
    assert!(
        steps.contains(&"page-oncall") && steps.contains(&"diagnose"),
        "{steps:?}"
    );

    let out = charter(&["audit", "verify", "--config", cfg], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("chain intact"), "{}", text(&out));
    let out = charter(&["kpi", "--json", "--config", cfg], dir.path());
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    assert_eq!(
        k["calls"]["ops-probe"]["wasi:http/outgoing-handler#handle"]["denied"], 1,
        "{k}"
    );
    let w = &k["workflows"]["remediate"];
    assert_eq!(
        (w["runs"].as_u64(), w["completed"].as_u64()),
        (Some(3), Some(1)),
        "{k}"
    );
    assert_eq!(w["escalations"], 2, "{k}");
    assert!(w["retries"].as_u64().unwrap() >= 5, "{k}");
}
