//! Policy bypasses tried end to end: an argument Cedar cannot represent
//! (a `u64` beyond `i64::MAX`) must not slip past a `forbid` that cannot be
//! evaluated on it, and a group labelled "read" must not carry a write into
//! a phase-3 (analysis only) deployment.

use std::path::Path;

use charter_audit::{Event, read_records};
use charter_config::Deployment;
use charter_runtime::{CallError, Host, LoadError};
use serde_json::json;

use crate::support::*;

/// A blanket permit and a cap enforced by a forbid: the shape the attack
/// targets (an erroring forbid is skipped by Cedar, the permit allows).
const CAPPED: &str = r#"
@id("all")
permit (principal, action, resource);

@id("cap")
forbid (principal, action, resource) when { context.amount_cents > 1000 };
"#;

/// The refund bot calling the payments connector, its refunds decided by
/// [`CAPPED`].
fn capped_refunds(dir: &Path) -> Deployment {
    refunds_granted_as(dir, "acme:payments/refunds.issue-refund", CAPPED)
}

/// The refund bot calling the payments connector, issue-refund granted by
/// the one pattern `capability` through a group carrying `policies`.
pub(crate) fn refunds_granted_as(dir: &Path, capability: &str, policies: &str) -> Deployment {
    let toml = format!(
        r#"
[deployment]
name = "policy-attack"
phase = 4
data_dir = "{data}"

[groups.capped-refunds]
capabilities = ["{capability}"]
effect = "write"
phase = 4
policies = '''{policies}'''

[groups.explain]
capabilities = ["charter:host/explain.rationale"]

[groups.logging]
capabilities = ["charter:host/log.write"]

[groups.ledger]
capabilities = ["charter:host/kv.*"]
effect = "write"

[plugins.payments]
path = "{payments}"
provides = ["acme:payments/refunds"]
groups = ["ledger", "logging"]

[plugins.refund-bot]
path = "{bot}"
groups = ["capped-refunds", "explain", "logging"]
"#,
        data = dir.join("data").display(),
        payments = fixture("payments-connector").display(),
        bot = fixture("refund-bot").display(),
    );
    Deployment::parse(
        &toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

pub(crate) fn refund(order: &str, cents: u64) -> String {
    json!({"order_id": order, "amount_cents": cents, "reason": "damaged"}).to_string()
}

fn ledger(host: &Host, order: &str) -> Option<String> {
    host.store()
        .get("payments", &format!("refund:{order}"))
        .unwrap()
}

/// The decision recorded for refund-bot's call on `order`.
fn decision_for(host: &Host, order: &str) -> Vec<(String, Option<String>)> {
    read_records(host.log().path())
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Call {
                plugin,
                args,
                decision,
                reason,
                ..
            } if plugin == "refund-bot" && args["order-id"] == order => {
                Some((decision.to_string(), reason))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn integers_beyond_i64_do_not_slip_past_a_forbid() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = crate::support::host(capped_refunds(dir.path()));
    let rt = rt();

    // Under the cap: executes through the connector.
    let out = rt
        .block_on(host.call("refund-bot", &refund("A-500", 500)))
        .unwrap();
    assert_eq!(out.output["refund_id"], "R-A-500-500");
    assert_eq!(ledger(&host, "A-500").as_deref(), Some("R-A-500-500"));

    // Over the cap: forbidden.
    let err = rt
        .block_on(host.call("refund-bot", &refund("A-5000", 5000)))
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert!(
        err.to_string().contains("forbidden by capped-refunds/cap"),
        "{err}"
    );
    assert_eq!(ledger(&host, "A-5000"), None);

    // Beyond Cedar's Long: refused, never executed.
    for (order, cents) in [("A-HUGE", i64::MAX as u64 + 5), ("A-MAX", u64::MAX)] {
        assert_eq!(
            cents.to_string().len(),
            if order == "A-MAX" { 20 } else { 19 }
        );
        let err = rt
            .block_on(host.call("refund-bot", &refund(order, cents)))
            .unwrap_err();
        assert!(matches!(err, CallError::Denied { .. }), "{order}: {err}");
        assert_eq!(err.exit_code(), 2, "{err}");
        let want =
            format!("argument amount_cents = {cents} is outside Cedar's Long range (i64); refused");
        assert!(err.to_string().contains(&want), "{err}");
        assert_eq!(ledger(&host, order), None, "{order} reached the connector");
        let recorded = decision_for(&host, order);
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0].0, "deny");
        assert!(
            recorded[0].1.as_deref().is_some_and(|r| r.contains(&want)),
            "{recorded:?}"
        );
    }
    assert_eq!(decision_for(&host, "A-500")[0].0, "allow");
    assert_eq!(decision_for(&host, "A-5000")[0].0, "deny");

    let records = read_records(host.log().path()).unwrap();
    let k = charter_runtime::kpi::compute(&records);
    assert_eq!(
        k.unauthorized_actions_executed, 0,
        "{:?}",
        k.unauthorized_detail
    );
    let c = &k.calls["refund-bot"]["acme:payments/refunds@0.1.0#issue-refund"];
    assert_eq!((c.allowed, c.denied), (1, 3));

    // `charter check` warns about the u64 the cap compares.
    let warnings = host.policy_warnings();
    assert!(
        warnings.iter().any(|w| w
            .starts_with("acme:payments/refunds.issue-refund: argument amount_cents is a u64")
            && w.contains("capped-refunds/cap")),
        "{warnings:?}"
    );
    assert!(host.effect_problems().is_empty());
}

#[test]
fn a_group_labelled_read_cannot_carry_a_write_into_phase_3() {
    let notes = |label: &str| {
        format!(
            "[groups.notes]\ncapabilities = [\"charter:host/kv.set\", \"charter:host/kv.delete\"]\n{label}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        3,
        &[(
            "p",
            "fx-echo",
            &["kv-read", "notes", "logging"],
            &notes("effect = \"read\""),
        )],
    );
    assert_eq!(d.groups["notes"].effect, charter_config::Effect::Write);
    let (host, store) = crate::support::host(d);
    let err = rt()
        .block_on(host.call("p", r#"{"kv_set": ["k", "v"]}"#))
        .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(
        matches!(err, CallError::Load(LoadError::Governance(_))),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(
            "group notes is labelled effect \"read\" but grants charter:host/kv.set, charter:host/kv.delete"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("phase 3 (analysis only) permits no writes"),
        "{msg}"
    );
    assert_eq!(store.get("p", "k").unwrap(), None, "the write happened");

    // Without a label the effect is derived: still a write, still refused.
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        3,
        &[("p", "fx-echo", &["kv-read", "notes", "logging"], &notes(""))],
    );
    let (host, store) = crate::support::host(d);
    let err = rt()
        .block_on(host.call("p", r#"{"kv_set": ["k", "v"]}"#))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("(it grants charter:host/kv.set, charter:host/kv.delete), but phase 3"),
        "{err}"
    );
    assert_eq!(store.get("p", "k").unwrap(), None);

    // At phase 4 the derived write is simply a write: it runs.
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[("p", "fx-echo", &["kv-read", "notes", "logging"], &notes(""))],
    );
    let (host, store) = crate::support::host(d);
    rt().block_on(host.call("p", r#"{"kv_set": ["k", "v"]}"#))
        .unwrap();
    assert_eq!(store.get("p", "k").unwrap().as_deref(), Some("v"));
}
