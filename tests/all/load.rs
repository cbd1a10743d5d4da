//! Enforcement points 1 and 2: a plugin runs only with what is granted.

use charter_runtime::{CallError, LoadError};
use charter_store::{SledStore, Store};

use crate::support::*;

#[test]
fn refused_plugin_runs_no_guest_code() {
    let dir = tempfile::tempdir().unwrap();
    // fx-ungranted's first action is kv.set("ran", "yes"). Granted only
    // kv-read, it must be refused at load and the key must never exist.
    let d = deployment(
        dir.path(),
        4,
        &[("sneaky", "fx-ungranted", &["kv-read"], "")],
    );
    let state = dir.path().join("state");
    let store = std::sync::Arc::new(SledStore::open(&state).unwrap());
    let host = charter_runtime::Host::new(
        d,
        charter_runtime::HostOptions {
            store: Some(store.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let err = rt().block_on(host.call("sneaky", "{}")).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 2, "{msg}");
    assert!(
        msg.contains("sneaky: import charter:host/kv@0.1.0#set is not granted (granted groups: kv-read; groups that grant it: kv-write)"),
        "{msg}"
    );
    store.flush().unwrap();
    drop(host);
    drop(store);
    let reopened = SledStore::open(&state).unwrap();
    assert_eq!(
        reopened.get("sneaky", "ran").unwrap(),
        None,
        "guest code ran"
    );

    // Control: granted kv-write, the same component does write the key, so
    // the absence above is the refusal's doing.
    let d = deployment(
        dir.path(),
        4,
        &[("sneaky", "fx-ungranted", &["kv-write"], "")],
    );
    let (host, store) = crate::support::host(d);
    rt().block_on(host.call("sneaky", "{}")).unwrap();
    assert_eq!(store.get("sneaky", "ran").unwrap().as_deref(), Some("yes"));
}

#[test]
fn every_ungranted_import_gets_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(dir.path(), 4, &[("triage", "refund-triage", &[], "")]);
    let (host, _) = crate::support::host(d);
    let err = rt().block_on(host.load("triage")).unwrap_err();
    let LoadError::Ungranted(lines) = &err else {
        panic!("{err}")
    };
    let fns: Vec<_> = lines.iter().map(|l| l.function.as_str()).collect();
    assert_eq!(
        fns,
        [
            "charter:host/kv@0.1.0#get",
            "charter:host/llm@0.1.0#classify",
            "charter:host/log@0.1.0#write"
        ]
    );
    assert_eq!(err.to_string().lines().count(), 3);
}

#[test]
fn granted_plugin_runs_and_is_isolated_per_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[
            ("a", "fx-echo", &["kv-read", "kv-write", "logging"], ""),
            ("b", "fx-echo", &["kv-read", "kv-write", "logging"], ""),
        ],
    );
    let (host, store) = crate::support::host(d);
    let rt = rt();
    let out = rt
        .block_on(host.call("a", r#"{"kv_set": ["k", "from-a"], "log": "hello"}"#))
        .unwrap();
    assert_eq!(out.output["echo"]["log"], "hello");
    assert_eq!(out.logs.len(), 1);
    assert_eq!(out.logs[0].message, "hello");
    assert_eq!(out.host_calls, 2);
    let out = rt.block_on(host.call("b", r#"{"kv_get": "k"}"#)).unwrap();
    assert_eq!(
        out.output["kv"],
        serde_json::Value::Null,
        "b must not see a's key"
    );
    assert_eq!(store.get("a", "k").unwrap().as_deref(), Some("from-a"));
}

#[test]
fn step_errors_map_to_retryable_and_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[("e", "fx-echo", &["kv-read", "kv-write", "logging"], "")],
    );
    let (host, _) = crate::support::host(d);
    let rt = rt();
    match rt.block_on(host.call("e", r#"{"fail": "retryable"}"#)) {
        Err(CallError::Step {
            retryable: true, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match rt.block_on(host.call("e", r#"{"fail": "fatal"}"#)) {
        Err(CallError::Step {
            retryable: false, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let e = rt.block_on(host.call("e", "not json")).unwrap_err();
    assert!(e.to_string().contains("input is not valid JSON"), "{e}");
}

#[test]
fn digest_pin_mismatch_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let pin = format!("digest = \"sha256:{}\"", "0".repeat(64));
    let d = deployment(
        dir.path(),
        4,
        &[("p", "fx-echo", &["kv-read", "kv-write", "logging"], &pin)],
    );
    let (host, _) = crate::support::host(d);
    let err = rt().block_on(host.call("p", "{}")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("digest pin mismatch"), "{err}");
    // One host per data directory at a time (the event log is locked).
    drop(host);

    // The right pin loads.
    let real = charter_runtime::digest(&std::fs::read(fixture("fx-echo")).unwrap());
    let pin = format!("digest = \"{real}\"");
    let d = deployment(
        dir.path(),
        4,
        &[("p", "fx-echo", &["kv-read", "kv-write", "logging"], &pin)],
    );
    let (host, _) = crate::support::host(d);
    rt().block_on(host.call("p", "{}")).unwrap();
}

#[test]
fn wasi_none_refuses_wasi_imports() {
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(
        dir.path(),
        4,
        &[(
            "p",
            "fx-echo",
            &["kv-read", "kv-write", "logging"],
            "wasi = \"none\"",
        )],
    );
    let (host, _) = crate::support::host(d);
    let err = rt().block_on(host.load("p")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("import wasi:cli/environment@"), "{msg}");
    assert!(msg.contains("wasi = \"none\""), "{msg}");
}

#[test]
fn phase_gates_refuse_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // Phase 3 is analysis only: no write group may be granted.
    let d = deployment(
        dir.path(),
        3,
        &[("p", "fx-echo", &["kv-read", "kv-write", "logging"], "")],
    );
    let (host, _) = crate::support::host(d);
    let err = rt().block_on(host.call("p", "{}")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .contains("phase 3 (analysis only) permits no writes"),
        "{err}"
    );
}
