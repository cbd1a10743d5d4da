//! Regressions from the red-team review of the hardening (issue 9): each
//! test reproduces a hole that review found in the first fixes, and now
//! holds. Fixtures are the prebuilt ones (fx-attack, fx-secret).

use charter_audit::{Event, read_records};
use charter_runtime::{Host, HostOptions};
use serde_json::json;

use crate::attack::recorder;
use crate::support::*;

// ---- 1: an approved outbound request is bound only to method/authority/path

/// Outbound POSTs to /pay need a person (`@approval("operator")`); the
/// workflow's one step POSTs with a query and body that the hostile plugin
/// is free to vary between attempts (here: the attempt number).
fn http_approval_deployment(dir: &std::path::Path, port: u16) -> charter_config::Deployment {
    let secret_file = dir.join("api.secret");
    std::fs::write(&secret_file, "unused-secret").unwrap();
    let extra = format!(
        r#"
[groups.http]
capabilities = ["wasi:http/outgoing-handler.handle"]
allow_hosts = ["127.0.0.1:{port}"]
effect = "write"
policies = '''
@id("payments-need-a-person")
@approval("operator")
permit (principal, action == Action::"wasi:http/outgoing-handler.handle", resource)
when {{ context.path == "/pay" }};
'''

[groups.token]
capabilities = ["charter:host/secrets.get"]
secrets = ["api"]
[secrets.api]
file = "{secret}"

[approvers.olga]
roles = ["operator"]

[workflows.pay]
escalate_to = "operator"
[[workflows.pay.steps]]
id = "pay"
plugin = "attack"
input = {{ mode = "post", url = "http://127.0.0.1:{port}/pay", query = "$/run/attempt", body = {{ amount = "$/run/attempt" }} }}
"#,
        secret = secret_file.display()
    );
    deployment(
        dir,
        4,
        &[(
            "attack",
            "fx-attack",
            &["http", "kv-read", "kv-write", "logging", "token"],
            &extra,
        )],
    )
}

/// SECURITY.md 8/11: "an approval executes exactly the approved arguments
/// once"; "for outbound HTTP the whole request (method, URL with query, the
/// guest's headers, body) is compared by digest". At the proposal, the
/// host records only method/authority/path and no request digest (`hold`
/// runs before the body is read), so after approval the plugin sends any
/// query and body it likes under the approved path.
#[test]
fn an_approved_http_request_sends_only_the_request_that_was_proposed() {
    let rt = rt();
    let (port, seen) = rt.block_on(recorder());
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(
        http_approval_deployment(dir.path(), port),
        HostOptions::default(),
    )
    .unwrap();
    let st = rt
        .block_on(host.run_workflow("pay", json!({}), None))
        .unwrap();
    assert_eq!(st.status, "waiting-approval", "{st:?}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing leaves before approval"
    );
    let proposal = st.proposal.clone().unwrap();
    // What the approver is shown: method, authority, path. Nothing binds
    // the query or the body the plugin had built (q=1, amount=1).
    let shown = read_records(host.log().path())
        .unwrap()
        .into_iter()
        .find_map(|r| match r.event {
            Event::Proposal { id, args, .. } if id == proposal => Some(args),
            _ => None,
        })
        .unwrap();
    let request_digest_at_proposal = read_records(host.log().path())
        .unwrap()
        .into_iter()
        .find_map(|r| match r.event {
            Event::Call {
                request: Some(d), ..
            } => Some(d),
            _ => None,
        });
    rt.block_on(host.decide(&proposal, "olga", true, None))
        .unwrap();
    let sent = seen.lock().unwrap().clone();
    assert!(
        sent.iter()
            .all(|(_, uri, body)| uri.ends_with("/pay?q=1") && body == r#"{"amount":1}"#),
        "the approval of {shown} (request digest recorded at proposal: {request_digest_at_proposal:?}) \
         executed a request that was never proposed: {sent:?}"
    );
}

// ---- 2: kv restore hands a revoked plugin the rotated secret --------------

const OLD: &str = "Old-Secret-Value-1";
const NEW: &str = "Rotated-Secret-Value-2";

/// `attack` (granted `api` only when `granted`) and `holder`, which keeps
/// the secret granted (so it stays declared and in use).
fn secret_deployment(dir: &std::path::Path, granted: bool) -> charter_config::Deployment {
    let secret_file = dir.join("api.secret");
    let extra = format!(
        "[groups.token]\ncapabilities = [\"charter:host/secrets.get\"]\nsecrets = [\"api\"]\n\
         [groups.other-token]\ncapabilities = [\"charter:host/secrets.get\"]\nsecrets = [\"other\"]\n\
         [secrets.api]\nfile = \"{}\"\n\
         [secrets.other]\nfile = \"{}\"\n\
         [groups.http]\ncapabilities = [\"wasi:http/outgoing-handler.handle\"]\nallow_hosts = [\"127.0.0.1:9\"]\n",
        secret_file.display(),
        secret_file.display()
    );
    let attack_groups: &[&str] = if granted {
        &["kv-read", "kv-write", "logging", "http", "token"]
    } else {
        // Revoked: it keeps secrets.get for another secret only.
        &["kv-read", "kv-write", "logging", "http", "other-token"]
    };
    deployment(
        dir,
        4,
        &[
            ("attack", "fx-attack", attack_groups, ""),
            ("holder", "fx-secret", &["token"], &extra),
        ],
    )
}

/// SECURITY.md 4: "A secret is readable only if a granted group lists its
/// name." The operator's incident response to a suspected plugin — revoke
/// its grant of `api` and rotate `api` — is undone by the index: when the
/// kv write the plugin made earlier is (re)applied (state moved aside as
/// SECURITY.md recommends, or the store's unsynced tail lost in a crash),
/// `index::restore` substitutes the *current* value of `api` into the
/// plugin's kv, without asking whether the plugin is (still) granted it.
/// The plugin reads it back with kv.get.
#[test]
fn a_revoked_plugin_never_gets_a_secret_back_through_its_kv() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.secret"), OLD).unwrap();
    {
        let (host, store) = host(secret_deployment(dir.path(), true));
        let out = rt
            .block_on(host.call("attack", r#"{"mode": "secret-to-kv"}"#))
            .unwrap();
        assert_eq!(out.output["stored"], true);
        assert_eq!(
            store.get("attack", "token").unwrap().as_deref(),
            Some(format!("Bearer {OLD}").as_str())
        );
    }
    // Incident response: revoke attack's grant, rotate the secret.
    std::fs::write(dir.path().join("api.secret"), NEW).unwrap();
    // The index is rebuilt from the log (a fresh store: `<data_dir>/state`
    // moved aside, as SECURITY.md recommends after an index edit).
    let (host, store) = host(secret_deployment(dir.path(), false));
    // The plugin loads and is refused `api` directly...
    let err = rt
        .block_on(host.call("attack", r#"{"mode": "secret-error", "secret": "api"}"#))
        .unwrap_err();
    assert!(err.to_string().contains("not granted"), "{err}");
    // ...but its own kv namespace (granted kv-read) now holds the new value.
    let held = store.get("attack", "token").unwrap().unwrap_or_default();
    assert!(
        !held.contains(NEW),
        "plugin `attack`, no longer granted `api`, now holds its rotated value in kv: {held:?}"
    );
}
