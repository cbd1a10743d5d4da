//! Regressions from the third red-team pass, over policy, config and
//! grants (issue 9): each test reproduced a hole in the code it was
//! written against, and now holds.

use std::path::Path;

use charter_audit::{Event, read_records};
use charter_config::Deployment;
use charter_runtime::{CallError, Host};

use crate::policy_attack::refund;
use crate::support::*;

/// A forbid over a cap, and a permit, both scoped to issue-refund (so
/// `charter check` validates them without a problem).
const CAPPED: &str = r#"
@id("all")
permit (principal, action == Action::"acme:payments/refunds.issue-refund", resource);

@id("cap")
forbid (principal, action == Action::"acme:payments/refunds.issue-refund", resource)
when { context.amount_cents > 1000 };
"#;

/// refund-bot → payments connector; `capability` is the one pattern the
/// policy-carrying group grants issue-refund with.
fn refunds_granted_as(dir: &Path, capability: &str) -> Deployment {
    crate::policy_attack::refunds_granted_as(dir, capability, CAPPED)
}

/// (decision, policies) recorded for refund-bot's call on `order`.
fn decisions(host: &Host, order: &str) -> Vec<(String, Vec<String>)> {
    read_records(host.log().path())
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Call {
                plugin,
                args,
                decision,
                policies,
                ..
            } if plugin == "refund-bot" && args["order-id"] == order => {
                Some((decision.to_string(), policies))
            }
            _ => None,
        })
        .collect()
}

/// The form Charter prints (`iface@version#function`) is documented as a
/// pattern "with the same meaning" as `iface.function`. (Failed on
/// bc2404d: the connector trampoline decided on the version-less name, so
/// no versioned pattern's group took part and the call was allowed "by
/// grant". An uncommitted change in the working tree, `names_action`,
/// closed it while this pass ran; kept as the regression test.) Granting a
/// connector function with it must keep the group's policy in force: the
/// 5000-cent refund is over the cap and must be denied, never executed.
#[test]
fn a_versioned_connector_pattern_keeps_its_groups_policy() {
    for pattern in [
        "acme:payments/refunds@0.1.0#issue-refund",
        "acme:payments/refunds@0.1.0.issue-refund",
        "acme:payments/refunds@0.1.0.*",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = refunds_granted_as(dir.path(), pattern);
        assert!(d.violations().is_empty(), "{pattern}: {:?}", d.violations());
        let (host, store) = crate::support::host(d);
        let rt = rt();

        // What `charter check` looks at: every plugin loads, no policy or
        // effect problem, and the warnings say the cap reads amount_cents
        // of issue-refund (check believes the policy governs the call).
        for (name, r) in rt.block_on(host.load_all()) {
            assert!(r.is_ok(), "{pattern}: {name}: {:?}", r.err());
        }
        assert!(
            host.policy_problems().is_empty(),
            "{pattern}: {:?}",
            host.policy_problems()
        );
        assert!(host.effect_problems().is_empty(), "{pattern}");
        assert!(
            host.policy_warnings().iter().any(|w| w
                .starts_with("acme:payments/refunds.issue-refund: argument amount_cents")
                && w.contains("capped-refunds/cap")),
            "{pattern}: {:?}",
            host.policy_warnings()
        );

        let r = rt.block_on(host.call("refund-bot", &refund("B-5000", 5000)));
        let recorded = decisions(&host, "B-5000");
        let ledger = store.get("payments", "refund:B-5000").unwrap();
        assert!(
            matches!(r, Err(CallError::Denied { .. })),
            "{pattern}: a refund over the cap was not denied: {r:?}; recorded {recorded:?}; ledger {ledger:?}"
        );
        assert_eq!(ledger, None, "{pattern}: the forbidden refund executed");
    }
}

/// A connector exporting `acme:kinds/ops@0.1.0#act: func(kind: kind) ->
/// u32`, `kind` a WIT variant `{ single, bulk(u32) }`; it returns 7.
const KIND_CONNECTOR: &str = r#"(component
  (core module $m (func (export "act") (param i32 i32) (result i32) i32.const 7))
  (core instance $i (instantiate $m))
  (type $k (variant (case "single") (case "bulk" u32)))
  (export $kt "kind" (type $k))
  (func $act (param "kind" $kt) (result u32) (canon lift (core func $i "act")))
  (instance $ops (export "kind" (type $kt)) (export "act" (func $act)))
  (export "acme:kinds/ops@0.1.0" (instance $ops))
)"#;

/// A step that calls `act(bulk(5000))` and returns `{}`.
const KIND_BOT: &str = r#"(component
  (import "acme:kinds/ops@0.1.0" (instance $ops
    (type $k (variant (case "single") (case "bulk" u32)))
    (export "kind" (type $kt (eq $k)))
    (export "act" (func (param "kind" $kt) (result u32)))
  ))
  (alias export $ops "act" (func $act))
  (core func $act_lower (canon lower (func $act)))
  (core module $m
    (import "host" "act" (func $act (param i32 i32) (result i32)))
    (memory (export "mem") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $r i32)
      global.get $bump
      local.set $r
      global.get $bump
      local.get 3
      i32.add
      global.set $bump
      local.get $r)
    (data (i32.const 16) "{}")
    (func (export "run") (param i32 i32) (result i32)
      (drop (call $act (i32.const 1) (i32.const 5000)))
      (i32.store (i32.const 64) (i32.const 0))
      (i32.store (i32.const 68) (i32.const 16))
      (i32.store (i32.const 72) (i32.const 2))
      (i32.const 64))
  )
  (core instance $i (instantiate $m (with "host" (instance (export "act" (func $act_lower))))))
  (type $e (variant (case "retryable" string) (case "fatal" string)))
  (export $et "step-error" (type $e))
  (func (export "run") (param "input" string) (result (result string (error $et)))
    (canon lift (core func $i "run") (memory (core memory $i "mem")) (realloc (core func $i "realloc"))))
)"#;

/// A WIT variant argument reaches Cedar as a record `{tag, value}`, while
/// the schema `charter check` validates policies against types it as a
/// String. A forbid on the variant's case written the only way that
/// validates (`context.kind == "bulk"`) therefore never matches: check
/// passes, and the forbidden call executes.
#[test]
fn a_policy_comparing_a_variant_to_a_string_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let conn = dir.path().join("kinds.wasm");
    let bot = dir.path().join("kind-bot.wasm");
    std::fs::write(&conn, wat::parse_str(KIND_CONNECTOR).unwrap()).unwrap();
    std::fs::write(&bot, wat::parse_str(KIND_BOT).unwrap()).unwrap();
    let toml = format!(
        r#"
[deployment]
name = "redteam3"
phase = 4
data_dir = "{data}"

[groups.ops]
capabilities = ["acme:kinds/ops.act"]
effect = "write"
phase = 4
policies = '''
@id("all")
permit (principal, action == Action::"acme:kinds/ops.act", resource);
@id("no-bulk")
forbid (principal, action == Action::"acme:kinds/ops.act", resource)
when {{ context.kind == "bulk" }};
'''

[plugins.kinds]
path = "{conn}"
provides = ["acme:kinds/ops"]

[plugins.kind-bot]
path = "{bot}"
groups = ["ops"]
"#,
        data = dir.path().join("data").display(),
        conn = conn.display(),
        bot = bot.display(),
    );
    let d = Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert!(d.violations().is_empty(), "{:?}", d.violations());
    let (host, _) = crate::support::host(d);
    let rt = rt();
    for (name, r) in rt.block_on(host.load_all()) {
        assert!(r.is_ok(), "{name}: {:?}", r.err());
    }
    // `charter check` refuses the policy: a variant is `{tag, value}` to
    // policy, and comparing it to a string is a type error, not a silent
    // mismatch (`context.kind.tag == "bulk"` is what validates).
    let problems = host.policy_problems();
    assert!(
        problems.iter().any(|p| p.contains("ops/no-bulk")),
        "{problems:?}"
    );
}

/// A group carrying policies decides "every call of its functions"
/// (SECURITY.md point 8). A forbid on `charter:host/log.write` is never
/// consulted: the line is logged and the step succeeds, with no call
/// event recorded.
#[test]
fn a_forbid_on_log_write_is_decided() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[(
            "p",
            "fx-echo",
            &["kv-read", "kv-write", "quiet"],
            r#"
[groups.quiet]
capabilities = ["charter:host/log.write"]
policies = '''
@id("never")
forbid (principal, action == Action::"charter:host/log.write", resource);
'''
"#,
        )],
    );
    let (host, _) = crate::support::host(d);
    assert!(
        host.policy_problems().is_empty(),
        "{:?}",
        host.policy_problems()
    );
    let r = rt().block_on(host.call("p", r#"{"log": "forbidden line"}"#));
    let logged = r
        .as_ref()
        .map(|o| o.logs.iter().any(|l| l.message.contains("forbidden line")))
        .unwrap_or(false);
    assert!(
        matches!(r, Err(CallError::Denied { .. })) && !logged,
        "log.write ran past `forbid`: {r:?}"
    );
}

/// A hostile refund bot built against its own copy of the refunds WIT, with
/// the parameters renamed: `issue-refund(reason, amount-cents, order-id)`.
/// It calls `issue-refund(reason: "TEST-1", amount-cents: 500, order-id:
/// "damaged")`; the connector, which takes `(order-id, amount-cents,
/// reason)`, receives the values by position.
const SWAPPED_BOT: &str = r#"(component
  (import "acme:payments/refunds@0.1.0" (instance $r
    (export "issue-refund" (func (param "reason" string) (param "amount-cents" u64)
      (param "order-id" string) (result (result string (error string)))))
  ))
  (alias export $r "issue-refund" (func $ir))
  (core module $mem
    (memory (export "mem") 1)
    (global $bump (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      global.get $bump
      local.set $p
      global.get $bump
      local.get 3
      i32.add
      global.set $bump
      local.get $p))
  (core instance $mi (instantiate $mem))
  (core func $ir_lower (canon lower (func $ir)
    (memory (core memory $mi "mem")) (realloc (core func $mi "realloc"))))
  (core module $m
    (import "host" "ir" (func $ir (param i32 i32 i64 i32 i32 i32)))
    (import "mem" "mem" (memory 1))
    (data (i32.const 16) "TEST-1")
    (data (i32.const 32) "damaged")
    (data (i32.const 48) "{}")
    (func (export "run") (param i32 i32) (result i32)
      (call $ir (i32.const 16) (i32.const 6) (i64.const 500) (i32.const 32) (i32.const 7) (i32.const 128))
      (i32.store (i32.const 64) (i32.const 0))
      (i32.store (i32.const 68) (i32.const 48))
      (i32.store (i32.const 72) (i32.const 2))
      (i32.const 64))
  )
  (core instance $i (instantiate $m
    (with "host" (instance (export "ir" (func $ir_lower))))
    (with "mem" (instance $mi))))
  (type $e (variant (case "retryable" string) (case "fatal" string)))
  (export $et "step-error" (type $e))
  (func (export "run") (param "input" string) (result (result string (error $et)))
    (canon lift (core func $i "run") (memory (core memory $mi "mem"))
      (realloc (core func $mi "realloc"))))
)"#;

/// The refunds example's `no-refunds-on-test-orders` forbids
/// `context.order_id like "TEST-*"`. Policy sees the arguments under the
/// names the *importer's* component gives them, while the connector takes
/// them by position: a bot that renames its import's parameters has a
/// refund on TEST-1 decided as a refund on order "damaged", allowed, and
/// executed (and recorded under the false names).
#[test]
fn an_importer_cannot_rename_connector_parameters_past_policy() {
    let dir = tempfile::tempdir().unwrap();
    let bot = dir.path().join("swapped-bot.wasm");
    std::fs::write(&bot, wat::parse_str(SWAPPED_BOT).unwrap()).unwrap();
    let d = crate::governance::refunds(
        dir.path(),
        &format!(
            "\n[plugins.swapped-bot]\npath = \"{}\"\ngroups = [\"refunds\"]\nowner = \"mallory\"\n",
            bot.display()
        ),
    );
    assert!(d.violations().is_empty(), "{:?}", d.violations());
    let (host, store) = crate::support::host(d);
    let rt = rt();
    // Refused at load: its import names the connector's parameters in
    // another order than the connector does.
    let err = rt.block_on(host.load("swapped-bot")).unwrap_err();
    assert!(
        err.to_string()
            .contains("with parameters (reason, amount-cents, order-id)"),
        "{err}"
    );
    assert!(rt.block_on(host.call("swapped-bot", "{}")).is_err());
    assert!(store.get("payments", "refund:TEST-1").unwrap().is_none());
}

/// The refunds group asks for two distinct approvals of a proposed refund.
/// A second group that also grants issue-refund, with no policies and the
/// default `approvals = 1`, looks harmless (the refunds policy still
/// decides every call), but listed first among the bot's groups it sets
/// how many approvals the proposal needs: one approval executes a refund
/// the governing group requires two for.
#[test]
fn a_second_granting_group_does_not_lower_the_approvals_needed() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("examples/refunds/charter.toml");
    let text = std::fs::read_to_string(&src).unwrap();
    let text = text
        .replace(
            "policy_file = \"refunds.cedar\"\napprovals = 1",
            "policy_file = \"refunds.cedar\"\napprovals = 2",
        )
        .replace(
            "groups = [\"refunds\", \"explain\", \"logging\"]",
            "groups = [\"refunds-any\", \"refunds\", \"explain\", \"logging\"]",
        )
        + "\n[groups.refunds-any]\ncapabilities = [\"acme:payments/refunds.issue-refund\"]\neffect = \"write\"\nphase = 4\n";
    let mut d = Deployment::parse(&text, &src, charter_runtime::host_catalog())
        .unwrap_or_else(|e| panic!("{e}"));
    d.data_dir = dir.path().join("data");
    assert_eq!(d.groups["refunds"].approvals, 2);
    assert!(d.violations().is_empty(), "{:?}", d.violations());
    let (host, store) = crate::support::host(d);
    let rt = rt();
    let err = rt
        .block_on(host.call_as("refund-bot", &refund("N-1", 200_000), Some("alice")))
        .unwrap_err();
    let id = match &err {
        CallError::AwaitingApproval { proposal, .. } => proposal.clone(),
        other => panic!("expected a proposal (the refunds policy decides): {other}"),
    };
    let needed = host.proposal(&id).unwrap().approvals_needed;
    let one = rt.block_on(host.decide(&id, "bob", true, None));
    let ledger = store.get("payments", "refund:N-1").unwrap();
    assert!(
        needed == 2 && ledger.is_none(),
        "approvals needed {needed} (refunds asks 2); after bob alone: {:?}; ledger {ledger:?}",
        one.map(|d| d.outcome)
    );
}
