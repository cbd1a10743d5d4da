//! Hostile nesting: an argument nested thousands of levels deep gets a
//! clear denial, never a crash, on any stack a decision may run on (a
//! guest's wasmtime fiber leaves a host call far less than a thread's).
//! Before the depth bound, 500 nested lists in an argument overflowed the
//! 1 MiB stack Cedar was given and killed the host.

use charter_policy::{MAX_ARG_DEPTH, PolicyEngine, Verdict};
use serde_json::{Map, Value, json};

const REFUNDS: &str = include_str!("../../../examples/refunds/refunds.cedar");
const REFUND: &str = "acme:payments/refunds.issue-refund";

/// `depth` nested lists (`objects`: records) around a string.
fn nested(depth: usize, objects: bool) -> Value {
    let mut v = Value::String("bottom".into());
    for _ in 0..depth {
        v = if objects {
            Value::Object(Map::from_iter([("a".to_string(), v)]))
        } else {
            Value::Array(vec![v])
        };
    }
    v
}

/// Dismantle a deep value without recursing (dropping it recurses).
fn flatten(v: Value) {
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        match v {
            Value::Array(a) => todo.extend(a),
            Value::Object(m) => todo.extend(m.into_iter().map(|(_, x)| x)),
            _ => {}
        }
    }
}

fn refund_args(reason: Value) -> Value {
    let mut m = Map::new();
    m.insert("order-id".into(), json!("A-1"));
    m.insert("amount-cents".into(), json!(5000));
    m.insert("reason".into(), reason);
    Value::Object(m)
}

fn decide(e: &PolicyEngine, args: &Value, by_cedar: bool) -> Option<Verdict> {
    let f = if by_cedar {
        PolicyEngine::decide_by_cedar
    } else {
        PolicyEngine::decide
    };
    f(
        e,
        &["refunds"],
        "refund-bot",
        "sha256:0",
        &["refunds".into()],
        REFUND,
        args,
    )
}

fn refused(v: &Option<Verdict>) -> bool {
    matches!(v, Some(Verdict::Deny { policies, reason })
        if policies.is_empty()
            && reason == &format!("argument reason is nested more than {MAX_ARG_DEPTH} levels deep: policy cannot judge it, and a call policy cannot judge is denied"))
}

/// Every depth and both shapes, through both paths, on a thread whose
/// stack is as small as `stack`.
fn check_on(stack: usize) {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(|| {
            let e = PolicyEngine::new("acme", &[("refunds".into(), REFUNDS.into())]).unwrap();
            for objects in [false, true] {
                for depth in [MAX_ARG_DEPTH + 1, 500, 5_000, 100_000] {
                    let args = refund_args(nested(depth, objects));
                    for by_cedar in [false, true] {
                        let v = decide(&e, &args, by_cedar);
                        assert!(refused(&v), "depth {depth}: {v:?}");
                    }
                    flatten(args);
                }
                // At the bound the call is judged as usual, by both paths
                // (the refund rules do not read the reason).
                let args = refund_args(nested(MAX_ARG_DEPTH - 1, objects));
                for by_cedar in [false, true] {
                    assert_eq!(
                        decide(&e, &args, by_cedar),
                        Some(Verdict::Allow {
                            policies: vec!["refunds/small-refunds-run".into()]
                        })
                    );
                }
            }
        })
        .unwrap()
        .join()
        .expect("no crash");
}

#[test]
fn deep_arguments_are_refused_on_a_thread_stack() {
    check_on(8 << 20);
}

#[test]
fn deep_arguments_are_refused_on_a_small_stack() {
    // Less than a wasmtime fiber leaves a host call (its 2 MiB async stack
    // minus the guest's 512 KiB).
    check_on(256 << 10);
}

/// A policy that compares the deep argument itself: Cedar judges a value
/// at the bound on its own stack segment, whatever stack the caller has.
#[test]
fn a_policy_reading_a_value_at_the_bound_is_judged_on_a_small_stack() {
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let e = PolicyEngine::new(
                "acme",
                &[(
                    "refunds".into(),
                    r#"@id("all") permit (principal, action, resource);
@id("same") forbid (principal, action, resource) when { context.reason == context.copy };"#
                        .into(),
                )],
            )
            .unwrap();
            let mut args = refund_args(nested(MAX_ARG_DEPTH - 1, false));
            args["copy"] = nested(MAX_ARG_DEPTH - 1, false);
            let v = decide(&e, &args, false);
            assert_eq!(
                v,
                Some(Verdict::Deny {
                    policies: vec!["refunds/same".into()],
                    reason: "forbidden by refunds/same".into()
                })
            );
        })
        .unwrap()
        .join()
        .expect("no crash");
}

/// Brackets inside a string are just a string: a refund reason of 10,000
/// nested `[` is judged like any other.
#[test]
fn nesting_inside_a_string_is_only_text() {
    let e = PolicyEngine::new(
        "acme",
        &[(
            "refunds".into(),
            format!(
                "{REFUNDS}\n@id(\"no-brackets\") forbid (principal, action, resource) when {{ context.reason like \"*[[[*\" }};"
            ),
        )],
    )
    .unwrap();
    let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let v = decide(&e, &refund_args(json!(text)), false);
    assert_eq!(
        v,
        Some(Verdict::Deny {
            policies: vec!["refunds/no-brackets".into()],
            reason: "forbidden by refunds/no-brackets".into()
        })
    );
    let v = decide(&e, &refund_args(json!("]".repeat(10_000))), false);
    assert!(matches!(v, Some(Verdict::Allow { .. })), "{v:?}");
}
