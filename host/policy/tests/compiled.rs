//! Compiled decisions (`src/compiled.rs`) against Cedar itself: for every
//! policy shape the compiler accepts and for arguments of every kind
//! (missing, mistyped, nested, escaped, extreme), `decide` and
//! `decide_by_cedar` give the same verdict, word for word.

use charter_policy::{PolicyEngine, Verdict};
use serde_json::{Value, json};

const REFUNDS: &str = include_str!("../../../examples/refunds/refunds.cedar");

/// Shapes the compiler takes (each is checked to compile).
const COMPILED: &[&str] = &[
    REFUNDS,
    r#"@id("all") permit (principal, action, resource);
@id("cap") forbid (principal, action, resource) when { context.amount_cents > 1000 };"#,
    r#"permit (principal, action in [Action::"acme:payments/refunds.issue-refund", Action::"charter:host/kv.get"], resource)
when { context has x && context.x.y == "ab" || !(context.z != 3) } unless { context.w };"#,
    r#"@id("a") permit (principal, action, resource) when { context.s like "a\*b*\\c" };
@id("b") permit (principal, action, resource) when { context.s like "*" && context.s like "**x" || context.s like "" };
@id("c") forbid (principal, action, resource) when { context has s && context.s like "*é?*" };"#,
    r#"@id("vip") permit (principal, action, resource) when { context.tags.contains("vip") };
@id("five") forbid (principal, action, resource) when { context has nums && context.nums.contains(5) };"#,
    r#"@id("lt") permit (principal, action, resource) when { context.n < -5 };
@id("le") permit (principal, action, resource) when { context.n <= 9223372036854775807 && context.n >= -9223372036854775808 };
@id("gt") forbid (principal, action, resource) when { context.n > 100 };"#,
    r#"@id("bot") permit (principal == Plugin::"bot", action, resource);
@id("not-other") forbid (principal in Plugin::"other", action == Action::"charter:host/kv.get", resource);
@id("here") permit (principal, action, resource == Deployment::"acme") when { context has a };
@id("elsewhere") forbid (principal, action, resource in Deployment::"elsewhere");"#,
    r#"@id("ask-a") @approval("a-role") permit (principal, action, resource) when { context.b == 1 };
@id("ask-b") @approval("b-role") permit (principal, action, resource);
@id("ask-empty") @approval permit (principal, action, resource) when { context has e };"#,
    r#"@id("type") forbid (principal, action, resource) when { context.b && true };
@id("ok") permit (principal, action, resource) when { false && context.nope };
@id("rec") forbid (principal, action, resource) when { context has rec && context.rec == context.rec2 };
@id("neq") permit (principal, action, resource) when { context.b != "1" || context.nope };"#,
];

/// Shapes left to Cedar.
const NOT_COMPILED: &[&str] = &[
    r#"permit (principal, action, resource) when { if context.a then true else false };"#,
    r#"permit (principal, action, resource) when { context.rec == {"k": 1} };"#,
    r#"permit (principal is Plugin, action, resource) when { principal.name == "bot" };"#,
    r#"permit (principal, action, resource) when { context.n + 1 > 3 };"#,
];

fn args() -> Vec<Value> {
    let mut deep = json!("bottom");
    for _ in 0..31 {
        deep = json!({ "d": deep });
    }
    vec![
        json!({}),
        json!({"order-id": "A-1", "amount-cents": 5000, "reason": "late"}),
        json!({"order-id": "A-1", "amount-cents": 200000}),
        json!({"order-id": "A-1", "amount-cents": 1000000}),
        json!({"order-id": "TEST-9", "amount-cents": 5}),
        json!({"order-id": 7, "amount-cents": 5}),
        json!({"order-id": "A-1", "amount-cents": "5"}),
        json!({"order-id": "A-1", "amount-cents": 1.5}),
        json!({"order-id": "A-1", "amount-cents": u64::MAX}),
        json!({"amount_cents": i64::MAX, "n": i64::MIN}),
        json!({"n": -6}),
        json!({"n": -5}),
        json!({"n": 100}),
        json!({"order-id": "TEST-", "amount-cents": 10000, "n": -4}),
        json!({"order-id": "TEST", "amount-cents": 10001}),
        json!({"order-id": "test-1", "amount-cents": 500000}),
        json!({"order-id": "TEST-1", "amount-cents": 500001}),
        json!({"amount_cents": 1000}),
        json!({"amount_cents": 1001}),
        json!({"n": 101}),
        json!({"n": "101"}),
        json!({"x": {"y": "ab"}, "z": 4, "w": false}),
        json!({"x": {"y": "ab"}, "z": 4, "w": true}),
        json!({"x": {"y": "ab"}, "z": 3, "w": "no"}),
        json!({"x": 5, "z": 3, "w": false}),
        json!({"x": {"y": "ba"}, "z": 4, "w": false}),
        json!({"x": {"y": null}, "z": 3}),
        json!({"s": "a*bzz\\c"}),
        json!({"s": "a*b\\c"}),
        json!({"s": "ab\\c"}),
        json!({"s": ""}),
        json!({"s": "yyx"}),
        json!({"s": "éé?"}),
        json!({"s": 5}),
        json!({"tags": ["vip", "x"], "nums": [1, 5]}),
        json!({"tags": [], "nums": [1.5]}),
        json!({"tags": "vip"}),
        json!({"tags": [["vip"]], "nums": [[5]]}),
        json!({"tags": [{"a": 1}, "vip"]}),
        json!({"tags": ["vip"], "nums": [5, u64::MAX]}),
        json!({"tags": ["vip"], "nums": [null, 5]}),
        json!({"e": {"__entity": {"type": "Plugin", "id": "bot"}}, "tags": ["vip"]}),
        json!({"e": {"__extn": {"fn": "decimal", "arg": "1.0"}}, "b": 1}),
        json!({"a": true, "b": 1, "rec": {"k": 1}, "rec2": {"k": 1}}),
        json!({"a": 1, "b": 2, "rec": {"k": 1}, "rec2": [1]}),
        json!({"b": "1", "e": null}),
        json!({"b": true, "e": 1}),
        json!({"rate": "NaN", "note": null}),
        json!({"deep": deep, "tags": ["vip"], "b": 1}),
    ]
}

type Decide = fn(&PolicyEngine, &[&str], &str, &str, &[String], &str, &Value) -> Option<Verdict>;

#[test]
fn compiled_decisions_match_cedar_word_for_word() {
    let mut compared = 0;
    for (i, text) in COMPILED.iter().chain(NOT_COMPILED).enumerate() {
        let e = PolicyEngine::new("acme", &[("g".into(), text.to_string())])
            .unwrap_or_else(|err| panic!("{text}: {err}"));
        assert_eq!(e.is_compiled(&["g"]), i < COMPILED.len(), "{text}");
        for a in args() {
            for plugin in ["bot", "other"] {
                for action in ["acme:payments/refunds.issue-refund", "charter:host/kv.get"] {
                    let d = |f: Decide| {
                        f(
                            &e,
                            &["g"],
                            plugin,
                            "sha256:0",
                            &["g".to_string()],
                            action,
                            &a,
                        )
                    };
                    let fast = d(PolicyEngine::decide);
                    let cedar = d(PolicyEngine::decide_by_cedar);
                    assert_eq!(fast, cedar, "policies {text}\nargs {a}\n{plugin} {action}");
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(
        compared,
        (COMPILED.len() + NOT_COMPILED.len()) * args().len() * 4
    );
}

#[test]
fn the_refund_rules_compile() {
    let e = PolicyEngine::new("acme", &[("refunds".into(), REFUNDS.into())]).unwrap();
    assert!(e.is_compiled(&["refunds"]));
}
