//! Hostile nesting in a governed call's argument, end to end: decided on
//! the guest's fiber stack (compiled policy) and on Cedar's own stack
//! segment (a policy that errors on the value), a kv value of 10,000
//! nested brackets gets a clear verdict, the host never crashes, and the
//! next call is served. (Arguments nested as values, which no host WIT
//! signature allows, are refused by depth: host/policy/tests/deep_args.rs.)

use charter_runtime::CallError;
use serde_json::json;

use crate::support::*;

/// `compiled` decides on the fiber; `cedar` carries a forbid that cannot
/// be evaluated on a string, so Cedar itself decides (and denies).
const POLICIES: &str = r#"
[groups.writes-compiled]
capabilities = ["charter:host/kv.set", "charter:host/kv.get"]
effect = "write"
policies = '''
@id("brackets") permit (principal, action == Action::"charter:host/kv.set", resource) when { context.value like "[*" };
@id("reads") permit (principal, action == Action::"charter:host/kv.get", resource);
@id("no-test") forbid (principal, action, resource) when { context has key && context.key like "TEST-*" };
'''
[groups.writes-cedar]
capabilities = ["charter:host/kv.set"]
effect = "write"
policies = '''
@id("all") permit (principal, action, resource);
@id("cap") forbid (principal, action, resource) when { context.value > 3 };
'''
"#;

fn deep_text(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn a_deeply_nested_argument_gets_a_clear_verdict_on_the_fiber_and_on_cedars_stack() {
    let dir = tempfile::tempdir().unwrap();
    let echo = fixture("fx-echo");
    let toml = format!(
        "[deployment]\nname = \"depth\"\nphase = 4\ndata_dir = \"{data}\"\n{GROUPS}\n{POLICIES}\n\
         [plugins.fast]\npath = \"{echo}\"\ngroups = [\"writes-compiled\", \"logging\"]\n\
         [plugins.slow]\npath = \"{echo}\"\ngroups = [\"writes-cedar\", \"kv-read\", \"logging\"]\n",
        data = dir.path().join("data").display(),
        echo = echo.display(),
    );
    let d = charter_config::Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let (host, store) = host(d);
    let rt = rt();
    let deep = deep_text(10_000);
    let input = |k: &str, v: &str| json!({"kv_set": [k, v], "kv_get": k}).to_string();

    // On the fiber: allowed by the compiled `like`, stored as text.
    let out = rt
        .block_on(host.call("fast", &input("doc", &deep)))
        .expect("allowed");
    assert_eq!(out.output["kv"], json!(deep));
    assert_eq!(store.get("fast", "doc").unwrap(), Some(deep.clone()));
    // Denied on the fiber: no permit matches, or a forbid does.
    for (k, v, why) in [
        ("doc", "]]]", "no policy permits this call"),
        (
            "TEST-1",
            deep.as_str(),
            "forbidden by writes-compiled/no-test",
        ),
    ] {
        let err = rt.block_on(host.call("fast", &input(k, v))).unwrap_err();
        assert!(
            matches!(&err, CallError::Denied { reason, .. } if reason.contains(why)),
            "{k}: {err}"
        );
    }

    // On Cedar's segment: the forbid cannot compare a string with 3, and
    // a call policy cannot judge is denied, naming the policy.
    let err = rt
        .block_on(host.call("slow", &input("doc", &deep)))
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Denied { reason, .. }
            if reason.contains("policy writes-cedar/cap could not be evaluated")),
        "{err}"
    );
    assert_eq!(store.get("slow", "doc").unwrap(), None);

    // The host keeps serving.
    rt.block_on(host.call("fast", &input("doc", "[ok]")))
        .expect("next call");
}
