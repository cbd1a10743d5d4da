//! Issue 16, pattern 4: security operations at phase 4, and the host's
//! quota (`[quotas.NAME]`, `host/runtime/src/quota.rs`).
//!
//! - `examples/security-ops/run.sh` end to end: isolations inside
//!   soc.cedar's bounds run, the edge becomes a proposal to the SOC, a
//!   crown jewel is denied, the 4th isolation in an hour is over the quota
//!   (counted from the log: every finding runs in its own process) and
//!   becomes a proposal; an approved one executes; the EDR's ledger holds
//!   exactly what was allowed; the chain verifies, 0 unauthorized actions.
//! - A hostile plugin looping `isolate-host` (ignoring every refusal)
//!   cannot pass the quota, in one process or across processes, with the
//!   quota over = "deny" and over = "propose".

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{charter, charter_bin, fixture, root, text};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The EDR ledger's action keys (`action:isolate:HOST`, `action:block:IP`).
fn ledger(cfg: &str, cwd: &Path) -> Vec<String> {
    let out = charter(
        &["kv", "list", "edr", "action:", "--json", "--config", cfg],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    let keys = v["keys"].as_array().unwrap_or_else(|| panic!("{v}"));
    let mut keys: Vec<String> = keys
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn security_ops_acts_inside_bounds_proposes_at_the_edge_denies_crown_jewels_and_holds_the_quota() {
    for p in ["edr-connector", "soc-score", "soc-respond"] {
        fixture(p);
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = Command::new("bash")
        .arg(root().join("examples/security-ops/run.sh"))
        .env("CHARTER_BIN", charter_bin())
        .env("SEC_OPS_WORK", &work)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let cfg = work.join("charter.toml");
    let cfg = cfg.to_str().unwrap();
    let cwd = dir.path();

    // The EDR did exactly this: web-01, web-03, web-04 inside the bounds,
    // web-05 approved over the quota; web-02 waits, db-prod-01 never.
    assert_eq!(
        ledger(cfg, cwd),
        vec![
            "action:block:203.0.113.10",
            "action:block:203.0.113.40",
            "action:block:203.0.113.50",
            "action:block:203.0.113.60",
            "action:isolate:web-01",
            "action:isolate:web-03",
            "action:isolate:web-04",
            "action:isolate:web-05",
        ]
    );

    // Every decision on isolate-host, from the log.
    let out = charter(
        &[
            "audit",
            "show",
            "--plugin",
            "soc-respond",
            "--type",
            "call",
            "--json",
            "--config",
            cfg,
        ],
        cwd,
    );
    let v = json(&out);
    let isolations: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["function"].as_str().unwrap().ends_with("#isolate-host"))
        .collect();
    let host = |e: &Value| e["args"]["hostname"].as_str().unwrap().to_string();
    let decided: Vec<(String, String)> = isolations
        .iter()
        .map(|e| (host(e), e["decision"].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("web-01", "allow"),
        ("web-02", "propose"),
        ("db-prod-01", "deny"),
        ("web-03", "allow"),
        ("web-04", "allow"),
        ("web-05", "propose"),
        ("web-05", "allow"),
    ]
    .iter()
    .map(|(h, d)| (h.to_string(), d.to_string()))
    .collect();
    assert_eq!(decided, want, "{v}");
    let policies = |i: usize| -> Vec<String> {
        isolations[i]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    // Inside the bounds: the policy and the quota both named.
    assert!(
        policies(0).contains(&"edr-actions/isolate-inside-bounds".to_string()),
        "{:?}",
        policies(0)
    );
    assert!(
        policies(0).contains(&"quota:isolations".to_string()),
        "{:?}",
        policies(0)
    );
    // The edge: the SOC's policy, no quota place taken.
    assert_eq!(
        policies(1),
        vec!["edr-actions/isolate-at-the-edge-goes-to-soc"]
    );
    // The crown jewel: the forbid.
    assert!(
        policies(2).contains(&"edr-actions/crown-jewels-never-isolated".to_string()),
        "{:?}",
        policies(2)
    );
    // Over the quota: the quota's proposal, its reason in the record.
    assert_eq!(policies(5), vec!["quota:isolations"]);
    let reason = isolations[5]["reason"].as_str().unwrap();
    assert!(
        reason.contains("quota isolations: 3 of 3 calls of acme:edr/actions.isolate-host per 1h"),
        "{reason}"
    );
    // The approved one: people, not the quota.
    assert!(
        policies(6).iter().any(|p| p.starts_with("approved:")),
        "{:?}",
        policies(6)
    );

    let out = charter(&["proposals", "list", "--json", "--config", cfg], cwd);
    let v = json(&out);
    let pending: Vec<&Value> = v["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "pending")
        .collect();
    assert_eq!(pending.len(), 1, "{v}");
    assert_eq!(pending[0]["args"]["hostname"], "web-02");
    assert_eq!(pending[0]["approver_role"], "soc");

    let out = charter(&["audit", "verify", "--config", cfg], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = charter(&["kpi", "--json", "--config", cfg], cwd);
    let k = json(&out);
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
}

/// A deployment of the EDR connector and the hostile looper, the quota
/// `limit` per hour with `over`; no policy (the grant allows).
fn looper(dir: &Path, over: &str) -> String {
    let toml = format!(
        r#"
[deployment]
name = "quota"
phase = 4
data_dir = "data"

[quotas.isolations]
function = "acme:edr/actions.isolate-host"
limit = 3
per = "1h"
over = "{over}"
{approval}

[identities.sam]
roles = ["soc"]

[groups.edr-actions]
capabilities = ["acme:edr/actions.isolate-host"]
effect = "write"
approver_role = "soc"

[groups.edr-ledger]
capabilities = ["charter:host/kv.*", "charter:host/log.write"]
effect = "write"

[plugins.edr]
path = "{edr}"
provides = ["acme:edr/actions"]
groups = ["edr-ledger"]

[plugins.looper]
path = "{looper}"
groups = ["edr-actions"]
"#,
        approval = if over == "propose" {
            "approval = \"soc\""
        } else {
            ""
        },
        edr = fixture("edr-connector").display(),
        looper = fixture("fx-edr-loop").display(),
    );
    std::fs::write(dir.join("charter.toml"), toml).unwrap();
    dir.join("charter.toml").to_str().unwrap().to_string()
}

fn isolations(cfg: &str, cwd: &Path) -> usize {
    ledger(cfg, cwd)
        .iter()
        .filter(|k| k.starts_with("action:isolate:"))
        .count()
}

/// SECURITY: a plugin that loops isolate-host, ignoring every refusal,
/// gets exactly `limit` isolations an hour: the first call over the
/// quota is denied and fails the step closed (its later calls never reach
/// the connector); a new process counts the earlier ones from the log.
#[test]
fn a_looping_plugin_cannot_pass_the_quota_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let cfg = looper(cwd, "deny");
    let out = charter(
        &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
        cwd,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused by governance: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("quota isolations: 3 of 3"),
        "{}",
        text(&out)
    );
    assert_eq!(isolations(&cfg, cwd), 3);

    // A new process (a restart): the quota is still full.
    for _ in 0..2 {
        let out = charter(
            &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
            cwd,
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert_eq!(isolations(&cfg, cwd), 3);
    }
    let out = charter(
        &[
            "audit", "show", "--type", "call", "--json", "--config", &cfg,
        ],
        cwd,
    );
    let v = json(&out);
    let calls: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "looper")
        .collect();
    let allowed = calls.iter().filter(|e| e["decision"] == "allow").count();
    let denied = calls.iter().filter(|e| e["decision"] == "deny").count();
    // One denial per process: the step stops at its first refused call.
    assert_eq!((allowed, denied), (3, 3), "{v}");
    let k = json(&charter(&["kpi", "--json", "--config", &cfg], cwd));
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
}

/// With over = "propose" the call over the quota becomes one proposal to
/// the quota's role and the step waits; nothing past it runs.
#[test]
fn over_the_quota_a_call_becomes_one_proposal_to_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let cfg = looper(cwd, "propose");
    let out = charter(
        &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
        cwd,
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "waiting for people: {}",
        text(&out)
    );
    assert_eq!(isolations(&cfg, cwd), 3);
    let v = json(&charter(
        &["proposals", "list", "--json", "--config", &cfg],
        cwd,
    ));
    let ps = v["proposals"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(ps[0]["approver_role"], "soc");
    assert_eq!(ps[0]["policies"], serde_json::json!(["quota:isolations"]));
    assert_eq!(ps[0]["args"]["hostname"], "loop-3");
}
