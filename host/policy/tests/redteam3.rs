//! Regressions from the third red-team pass, over policy, config and
//! grants (issue 9): each test reproduced a hole in the code it was
//! written against, and now holds.

use charter_policy::{ParamType, PolicyEngine, Signature, Verdict};
use serde_json::json;

fn refund_sig() -> Signature {
    Signature {
        action: "acme:payments/refunds.issue-refund".into(),
        params: vec![
            ("order-id".into(), ParamType::String),
            ("amount-cents".into(), ParamType::Long),
            ("reason".into(), ParamType::String),
        ],
    }
}

/// A forbid guarded by `has` on an attribute the function does not have
/// (a typo: `amount` for `amount_cents`) can never apply. Cedar's
/// validator says so (an "impossible policy" warning), but `validate`
/// reports only errors: `charter check` passes a cap that never caps, and
/// a 1,000,000-cent refund is allowed.
#[test]
fn a_forbid_that_can_never_apply_is_reported_by_validate() {
    let text = r#"
@id("all")
permit (principal, action == Action::"acme:payments/refunds.issue-refund", resource);
@id("cap")
forbid (principal, action == Action::"acme:payments/refunds.issue-refund", resource)
when { context has amount && context.amount > 1000 };
"#;
    let engine = PolicyEngine::new("d", &[("refunds".into(), text.into())]).unwrap();
    let v = engine.decide(
        &["refunds"],
        "bot",
        "sha256:0",
        &["refunds".into()],
        "acme:payments/refunds.issue-refund",
        &json!({"order-id": "A", "amount-cents": 1_000_000, "reason": "x"}),
    );
    assert!(matches!(v, Some(Verdict::Allow { .. })), "{v:?}");
    let problems = engine.validate(&[refund_sig()]);
    assert!(
        problems.iter().any(|p| p.contains("refunds/cap")),
        "validate accepts a forbid that can never apply: {problems:?}"
    );
}
