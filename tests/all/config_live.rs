//! A validated `charter.toml` applies live (issue 13 item 5): `charter up`
//! re-reads it on `POST /v1/config/apply` (and `charter config apply`, and
//! `--watch`), checks it in full, and swaps it in with the plugins re-linked
//! under it; a bad one is refused (`config-refused`) and the old one goes
//! on serving. Runs keep the workflow definition they started on, but meet
//! the grants, policies and identities in force now.

use std::path::Path;

use serde_json::{Value, json};

use crate::cli::refunds_deployment;
use crate::hot::{as_, events, start, stop};
use crate::support::text;
use crate::up::{http, mint, wait_for};

struct Live {
    dir: tempfile::TempDir,
    ops: String,
    bob: String,
    carol: String,
    toml: String,
    hashes: Vec<String>,
}

/// The refunds deployment with tokens: carol and bob approve, `ops` is an
/// operator service account.
fn deployment() -> Live {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let (carol, carol_h) = mint("carol", cwd);
    let (bob, bob_h) = mint("bob", cwd);
    let (ops, ops_h) = mint("ops", cwd);
    let mut toml = std::fs::read_to_string(cwd.join("charter.toml")).unwrap();
    for (name, h) in [("carol", &carol_h), ("bob", &bob_h)] {
        let header = format!("[approvers.{name}]\n");
        toml = toml.replace(&header, &format!("{header}tokens = [\"{h}\"]\n"));
    }
    toml.push_str(&format!(
        "\n[identities.ops]\nkind = \"service\"\nroles = [\"operator\"]\ntokens = [\"{ops_h}\"]\n"
    ));
    std::fs::write(cwd.join("charter.toml"), &toml).unwrap();
    Live {
        dir,
        ops,
        bob,
        carol,
        toml,
        hashes: vec![carol_h, bob_h, ops_h],
    }
}

fn apply(addr: &str, token: &str) -> (u16, Value) {
    let r = http(addr, "POST", "/v1/config/apply", Some(token), None);
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn start_refund(addr: &str, token: &str, workflow: &str, cents: u64) -> (u16, Value) {
    let input = json!({"order_id": "A-9", "amount_cents": cents, "reason": "lost"});
    let r = http(
        addr,
        "POST",
        "/v1/runs",
        Some(token),
        Some(&json!({"workflow": workflow, "input": input})),
    );
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

/// A run of `workflow` for `cents`, driven until it stops; its state.
fn refund(addr: &str, token: &str, workflow: &str, cents: u64) -> Value {
    let (status, v) = start_refund(addr, token, workflow, cents);
    assert_eq!(status, 202, "{v}");
    let run = v["run"].as_str().unwrap();
    wait_for(addr, token, run, |v| v["status"] != "running")
}

fn write(cwd: &Path, name: &str, text: &str) {
    // Replaced by rename, as an editor does.
    let tmp = cwd.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, cwd.join(name)).unwrap();
}

/// The whole story through the API: who may apply, a policy change that
/// refuses the next call, the three kinds of bad file refused with the old
/// configuration serving, a workflow added, a workflow changed under a
/// suspended run (which completes on its old definition), an identity's
/// role removed (its next approval refused), a workflow removed (its run
/// in flight finishes, new starts are refused), and a restart.
#[test]
fn a_config_applies_live_and_a_bad_one_never_replaces_it() {
    let h = deployment();
    let cwd = h.dir.path();
    let (child, addr) = start(cwd);
    let a = addr.as_str();

    // Before any change: a small refund runs.
    let v = refund(a, &h.carol, "refund", 5_000);
    assert_eq!(v["status"], "completed", "{v}");
    let first_digest = v["workflow_digest"].as_str().unwrap().to_string();

    // Only an operator applies; a refusal is an audit event.
    let (status, body) = apply(a, &h.bob);
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("apply a configuration"), "{body}");
    assert!(
        events(a, &h.ops, "auth-refused")
            .iter()
            .any(|e| e["reason"] == "missing-role" && e["identity"] == "bob"),
        "{:?}",
        events(a, &h.ops, "auth-refused")
    );
    // Nothing changed: nothing recorded.
    let (status, body) = apply(a, &h.ops);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unchanged"], true, "{body}");

    // A policy that forbids every refund, applied live: the next call is
    // refused, without a restart.
    let cedar = std::fs::read_to_string(cwd.join("refunds.cedar")).unwrap();
    write(
        cwd,
        "refunds.cedar",
        &format!(
            "{cedar}\n@id(\"freeze\")\nforbid (principal, action == Action::\"acme:payments/refunds.issue-refund\", resource);\n"
        ),
    );
    let (status, body) = apply(a, &h.ops);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unchanged"], false, "{body}");
    assert!(
        body["changes"]["policies"]["changed"]
            .as_array()
            .unwrap()
            .contains(&json!("refunds")),
        "{body}"
    );
    let applied = events(a, &h.ops, "config-applied");
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(applied[0]["by"], "ops");
    assert_eq!(applied[0]["auth"], "token");
    let v = refund(a, &h.carol, "refund", 5_000);
    assert_eq!(v["status"], "failed", "{v}");
    write(cwd, "refunds.cedar", &cedar);
    assert_eq!(apply(a, &h.ops).0, 200);
    assert_eq!(refund(a, &h.carol, "refund", 5_000)["status"], "completed");

    // Bad files, each refused with its reason; the old one serves on.
    let not_covering = h.toml.replace(
        "groups = [\"refunds\", \"explain\", \"logging\"]",
        "groups = [\"explain\", \"logging\"]",
    );
    assert_ne!(not_covering, h.toml);
    let bad_policy = "permit (principal, action, resource) when { context.no_such_field > 1 };";
    for (what, toml, cedar_text, needle) in [
        (
            "parse error",
            format!("{}\n[plugins.x]\npath = 7\n", h.toml),
            None,
            "path",
        ),
        ("policy", h.toml.clone(), Some(bad_policy), "no_such_field"),
        ("grants", not_covering, None, "refund-bot"),
    ] {
        write(cwd, "charter.toml", &toml);
        if let Some(c) = cedar_text {
            write(cwd, "refunds.cedar", c);
        }
        let (status, body) = apply(a, &h.ops);
        assert_eq!(status, 422, "{what}: {body}");
        assert!(body.to_string().contains(needle), "{what}: {body}");
        write(cwd, "refunds.cedar", &cedar);
        let v = refund(a, &h.carol, "refund", 5_000);
        assert_eq!(v["status"], "completed", "{what}: old config serves: {v}");
    }
    let refused = events(a, &h.ops, "config-refused");
    assert_eq!(refused.len(), 3, "{refused:?}");
    let serving = applied[0]["previous"].as_str().unwrap();
    assert!(
        refused.iter().all(|e| e["serving"] == serving),
        "{refused:?}"
    );
    // Nothing secret in them: no token hash appears.
    for kind in ["config-applied", "config-refused"] {
        let all = http(
            a,
            "GET",
            &format!("/v1/audit?type={kind}"),
            Some(&h.ops),
            None,
        )
        .body;
        for hash in &h.hashes {
            assert!(!all.contains(hash.as_str()), "{kind}: {all}");
        }
    }

    // A run suspended on approval, then the workflow changes and another
    // is added.
    let v = refund(a, &h.carol, "refund", 20_000);
    assert_eq!(v["status"], "waiting-approval", "{v}");
    let suspended = v["id"].as_str().unwrap().to_string();
    let proposal = v["proposal"].as_str().unwrap().to_string();
    let changed = h.toml.replace(
        "[workflows.refund]\n",
        "[workflows.refund]\ndescription = \"v2\"\n",
    ) + "\n[workflows.refund-again]\n[[workflows.refund-again.steps]]\nid = \"refund\"\nplugin = \"refund-bot\"\n";
    write(cwd, "charter.toml", &changed);
    let (status, body) = apply(a, &h.ops);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changes"]["workflows"]["added"],
        json!(["refund-again"])
    );
    assert_eq!(body["changes"]["workflows"]["changed"], json!(["refund"]));
    let v = refund(a, &h.carol, "refund-again", 5_000);
    assert_eq!(v["status"], "completed", "{v}");
    let v = refund(a, &h.carol, "refund", 5_000);
    assert_ne!(v["workflow_digest"], first_digest.as_str(), "{v}");
    let r = http(
        a,
        "POST",
        &format!("/v1/proposals/{proposal}/approve"),
        Some(&h.bob),
        Some(&json!({"comment": "ok"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = wait_for(a, &h.bob, &suspended, |v| {
        v["status"] == "completed" || v["status"] == "failed"
    });
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["workflow_digest"], first_digest.as_str(), "{v}");

    // bob loses the approver role: his next approval is refused.
    let v = refund(a, &h.carol, "refund", 20_000);
    let proposal = v["proposal"].as_str().unwrap().to_string();
    let suspended = v["id"].as_str().unwrap().to_string();
    let demoted = changed.replace(
        "[approvers.bob]\ntokens",
        "[approvers.bob]\nroles = []\ntokens",
    );
    let demoted = demoted.replacen(
        "roles = [\"refund-approver\"]\n\n[approvers.carol]",
        "\n[approvers.carol]",
        1,
    );
    write(cwd, "charter.toml", &demoted);
    let (status, body) = apply(a, &h.ops);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["changes"]["identities"]["changed"]
            .as_array()
            .unwrap()
            .contains(&json!("bob")),
        "{body}"
    );
    let r = http(
        a,
        "POST",
        &format!("/v1/proposals/{proposal}/approve"),
        Some(&h.bob),
        Some(&json!({"comment": "ok"})),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("refund-approver"), "{}", r.body);

    // The workflow is removed while that run waits: new starts are refused
    // clearly; the run in flight finishes on its definition.
    let removed = demoted.replace(
        "[workflows.refund]\ndescription = \"v2\"\nescalate_to = \"refund-approver\"\n[[workflows.refund.steps]]\nid = \"refund\"\nplugin = \"refund-bot\"\n",
        "",
    );
    assert_ne!(removed, demoted);
    write(cwd, "charter.toml", &removed);
    let (status, body) = apply(a, &h.ops);
    assert_eq!(status, 200, "{body}");
    let (status, body) = start_refund(a, &h.carol, "refund", 5_000);
    assert!((400..500).contains(&status), "{status}: {body}");
    assert!(body.to_string().contains("refund"), "{body}");
    // The CLI applies through the host too (nothing changed now).
    let out = as_(&h.ops, &["config", "apply", "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let carol = &h.carol;
    // carol may not approve her own run; restore bob's role to decide it.
    write(
        cwd,
        "charter.toml",
        &removed.replace(
            "[approvers.bob]\nroles = []",
            "[approvers.bob]\nroles = [\"refund-approver\"]",
        ),
    );
    assert_eq!(apply(a, &h.ops).0, 200);
    let r = http(
        a,
        "POST",
        &format!("/v1/proposals/{proposal}/approve"),
        Some(&h.bob),
        Some(&json!({"comment": "ok"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = wait_for(a, carol, &suspended, |v| {
        v["status"] == "completed" || v["status"] == "failed"
    });
    assert_eq!(v["status"], "completed", "{v}");
    stop(child);

    // A restart serves the file on disk; the applies are in the log.
    let (child, addr) = start(cwd);
    assert_eq!(events(&addr, &h.ops, "config-applied").len(), 6);
    let (status, _) = start_refund(&addr, &h.carol, "refund", 5_000);
    assert!((400..500).contains(&status));
    stop(child);
}
