//! Fourth red-team pass, over capabilities as plug-ins (one mediator
//! pipeline, host 0.1.0 and 0.2.0 side by side), `charter:host/notify`,
//! and the control API's validation: each test is an attack that holds.

use charter_audit::read_records;
use charter_runtime::{CallError, LoadError};
use serde_json::json;

use crate::notify::{Answer, webhook};
use crate::support::*;

/// fx-notify granted `ops` (webhook on `port`) and `console` (inbox),
/// no policy; `other` is declared but not granted.
fn plain(dir: &std::path::Path, port: u16) -> charter_config::Deployment {
    let extra = format!(
        r#"
[channels.ops]
webhook = "http://127.0.0.1:{port}/hook"
[channels.other]
webhook = "http://127.0.0.1:{port}/other"
[channels.console]
inbox = true
[groups.notify]
capabilities = ["charter:host/notify.send"]
channels = ["ops", "console"]
[groups.no-secrets]
capabilities = ["charter:host/secrets.get"]
"#
    );
    deployment(
        dir,
        4,
        &[("notifier", "fx-notify", &["notify", "no-secrets"], &extra)],
    )
}

fn kpi_unauthorized(h: &charter_runtime::Host) -> u64 {
    let records = read_records(h.log().path()).unwrap();
    charter_runtime::kpi::compute(&records).unauthorized_actions_executed
}

/// Channel names that look like a granted one (NUL, spaces, full-width
/// and homoglyph letters, path forms, a `:` or `@` suffix, another
/// normalization) are denied (exit 2) and nothing is sent; the log
/// verifies and no unauthorized action executed.
#[test]
fn channel_look_alikes_are_denied_and_nothing_is_sent() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Status(200, 2)));
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(plain(dir.path(), port));
    for channel in [
        "ops\0",
        "\0ops",
        " ops",
        "ops ",
        "ｏｐｓ",
        "оps", // Cyrillic о
        "./ops",
        "ops/",
        "ops/.",
        "..",
        "/",
        "ops:",
        "ops@0.2.0",
        "console\u{200b}",
        "cons\u{0301}ole",
        "Console",
        "*",
        "other",
    ] {
        let input = json!({"channel": channel, "subject": "s", "body": "b"}).to_string();
        let err = rt.block_on(h.call("notifier", &input)).unwrap_err();
        assert!(
            matches!(err, CallError::Denied { .. }),
            "{channel:?}: {err}"
        );
        assert_eq!(err.exit_code(), 2, "{channel:?}");
        assert!(!err.to_string().contains('\0'), "escaped: {err}");
    }
    assert!(got.lock().unwrap().is_empty(), "nothing was sent");
    assert_eq!(kpi_unauthorized(&h), 0);
    charter_audit::verify(h.log().path()).expect("the log verifies");
}

/// A subject or body over its bound (1 KiB, 32 KiB) is refused as a limit
/// (exit 3) before it is decided, recorded by digest, and not sent.
#[test]
fn oversize_subject_or_body_is_refused_and_not_sent() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Status(200, 2)));
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(plain(dir.path(), port));
    let big_subject = "S".repeat(1025);
    let big_body = "B".repeat((32 << 10) + 1);
    for input in [
        json!({"channel": "ops", "subject": big_subject, "body": "b"}),
        json!({"channel": "ops", "subject": "s", "body": big_body}),
        json!({"channel": "console", "subject": "s", "body": "B".repeat(1 << 20)}),
    ] {
        let err = rt
            .block_on(h.call("notifier", &input.to_string()))
            .unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");
    }
    assert!(got.lock().unwrap().is_empty(), "nothing was sent");
    // Nothing of the refused text is in the log.
    let raw = std::fs::read(h.log().path()).unwrap();
    assert!(
        !raw.windows(2048).any(|w| w.iter().all(|b| *b == b'B')),
        "an oversize body was recorded"
    );
}

/// A webhook answering 500 with a 10 MiB body: the step gets an error
/// naming the channel and the status (not the URL), promptly, without the
/// host reading the body; one request was made.
#[test]
fn a_failing_webhook_with_a_huge_answer_is_one_error_naming_no_url() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Status(500, 10 << 20)));
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = host(plain(dir.path(), port));
    let started = std::time::Instant::now();
    let out = rt
        .block_on(h.call("notifier", r#"{"channel": "ops", "body": "x"}"#))
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let err = out.output["error"].as_str().unwrap_or_default();
    assert!(err.contains("500"), "{}", out.output);
    assert!(err.contains("\"ops\""), "{err}");
    assert!(
        !err.contains("127.0.0.1") && !err.contains("/hook"),
        "{err}"
    );
    assert_eq!(got.lock().unwrap().len(), 1);
    let raw = String::from_utf8_lossy(&std::fs::read(h.log().path()).unwrap()).to_string();
    assert!(
        !raw.contains("/hook"),
        "the log never names the webhook URL"
    );
}

/// A secret the step read, sent to an inbox channel (the message is the
/// log record) or put in an ungranted channel's name, is not in the log
/// or the error: the Call event's arguments and the denial pass the
/// redactor.
#[test]
fn a_secret_does_not_leave_through_an_inbox_or_a_channel_name() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token.txt");
    std::fs::write(&file, "s3cr3t-value-42").unwrap();
    let extra = format!(
        r#"
[channels.console]
inbox = true
[groups.notify]
capabilities = ["charter:host/notify.send"]
channels = ["console"]
[groups.token]
capabilities = ["charter:host/secrets.get"]
secrets = ["api-token"]
[secrets.api-token]
file = "{}"
"#,
        file.display()
    );
    let d = deployment(
        dir.path(),
        4,
        &[("notifier", "fx-notify", &["notify", "token"], &extra)],
    );
    let (h, _) = host(d);
    let out = rt
        .block_on(h.call(
            "notifier",
            r#"{"channel": "console", "subject": "s", "body": "hi", "secret": "api-token"}"#,
        ))
        .unwrap();
    assert!(out.output["sent"].is_string(), "{}", out.output);
    let raw = String::from_utf8_lossy(&std::fs::read(h.log().path()).unwrap()).to_string();
    assert!(
        !raw.contains("s3cr3t"),
        "the inbox message holds the secret"
    );
    assert!(raw.contains("[secret:api-token]"));
}

/// A `run` export answering `Ok("{}")`, the step world's one export.
const RUN_EXPORT: &str = r#"
  (core module $m
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
      (i32.store (i32.const 64) (i32.const 0))
      (i32.store (i32.const 68) (i32.const 16))
      (i32.store (i32.const 72) (i32.const 2))
      (i32.const 64))
  )
  (core instance $ci (instantiate $m))
  (type $e (variant (case "retryable" string) (case "fatal" string)))
  (export $et "step-error" (type $e))
  (func (export "run") (param "input" string) (result (result string (error $et)))
    (canon lift (core func $ci "run") (memory (core memory $ci "mem")) (realloc (core func $ci "realloc"))))
"#;

/// A component for `imports`: each `(instance, function)` imported as a
/// `func() -> string`-less nullary function, no code.
fn importing(imports: &[(&str, &str)]) -> Vec<u8> {
    let mut wat = String::from("(component\n");
    for (i, (inst, func)) in imports.iter().enumerate() {
        wat.push_str(&format!(
            "(import \"{inst}\" (instance $i{i} (export \"{func}\" (func (param \"key\" string) (result (result (option string) (error string)))))))\n"
        ));
    }
    wat.push_str(RUN_EXPORT);
    wat.push(')');
    wat::parse_str(&wat).unwrap()
}

fn load_with(groups: &str, wasm: &[u8]) -> Result<(), LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    std::fs::write(&path, wasm).unwrap();
    let toml = format!(
        "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"{}\"\n{groups}\n[plugins.p]\npath = \"{}\"\ngroups = [\"g\"]\n",
        dir.path().join("data").display(),
        path.display()
    );
    let d = charter_config::Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let (h, _) = host(d);
    rt().block_on(h.load("p")).map(|_| ())
}

/// A grant pinned to one `charter:host` version does not cover the same
/// function at another: a 0.2.0 import of what only 0.1.0 grants (and the
/// reverse) is refused at load; a version the host does not serve, or no
/// version, is refused even under a wildcard grant; a function the host
/// does not have under a granted wildcard never links.
#[test]
fn a_grant_at_one_version_does_not_cover_another() {
    let v1_only = "[groups.g]\ncapabilities = [\"charter:host/kv@0.1.0.get\"]\n";
    let v2_only = "[groups.g]\ncapabilities = [\"charter:host/kv@0.2.0.get\"]\n";
    let all = "[groups.g]\ncapabilities = [\"charter:host/kv.*\"]\n";
    let r = load_with(v1_only, &importing(&[("charter:host/kv@0.1.0", "get")]));
    assert!(r.is_ok(), "{:?}", r.err().map(|e| e.to_string()));
    assert!(load_with(v2_only, &importing(&[("charter:host/kv@0.2.0", "get")])).is_ok());
    for (groups, inst) in [
        (v1_only, "charter:host/kv@0.2.0"),
        (v2_only, "charter:host/kv@0.1.0"),
        // A version the host does not serve (0.3.0 is served since knowledge).
        (all, "charter:host/kv@0.9.0"),
        (all, "charter:host/kv@0.2.0-rc1"),
        (all, "charter:host/kv"),
    ] {
        let err = load_with(groups, &importing(&[(inst, "get")])).unwrap_err();
        assert!(
            matches!(err, LoadError::Ungranted(_)),
            "{inst} under {groups}: {err}"
        );
    }
    // Both versions at once, one granted: refused for the other.
    let err = load_with(
        v1_only,
        &importing(&[
            ("charter:host/kv@0.1.0", "get"),
            ("charter:host/kv@0.2.0", "get"),
        ]),
    )
    .unwrap_err();
    assert!(
        matches!(err, LoadError::Ungranted(ref u) if u.len() == 1),
        "{err}"
    );
    // A function kv never had, under kv.*: not linked, the load fails.
    assert!(load_with(all, &importing(&[("charter:host/kv@0.2.0", "bogus")])).is_err());
    assert!(load_with(all, &importing(&[("charter:host/kv@0.1.0", "list-keys2")])).is_err());
}

/// SECURITY: `charter:host/knowledge` is served from 0.3.0 on only: a
/// plugin importing it at 0.2.0 (or 0.1.0) is refused at load even under
/// a wildcard grant.
#[test]
fn knowledge_imported_at_0_2_0_is_refused_at_load() {
    let all = "[groups.g]\ncapabilities = [\"charter:host/knowledge.*\"]\n";
    for inst in [
        "charter:host/knowledge@0.2.0",
        "charter:host/knowledge@0.1.0",
    ] {
        let err = load_with(all, &importing(&[(inst, "search")])).unwrap_err();
        assert!(matches!(err, LoadError::Ungranted(_)), "{inst}: {err}");
        assert!(err.to_string().contains("knowledge"), "{err}");
    }
}

/// The control API, serving a remote caller, answers hostile ids (path
/// forms, `:`-length prefixes, control characters, over-long) as not
/// found or invalid, and never names a file for it.
#[test]
fn control_api_refuses_hostile_ids_and_paths() {
    use charter_api::{Access, Control, InspectRequest, ProposalId, RunId};
    let dir = tempfile::tempdir().unwrap();
    let d = plain(dir.path(), 9);
    let c = Control::new(d, Access::Remote);
    for id in [
        "../../etc/passwd",
        "a/b",
        "3:abc",
        "3:abc:5:defgh",
        "run\0",
        "r\nr",
        "",
        &"x".repeat(10_000),
        "ｒｕｎ",
    ] {
        let e = c.runs_show(&RunId { id: id.to_string() }).unwrap_err();
        assert_ne!(e.exit_code(), 0, "{id:?}");
        assert!(
            !e.to_string().contains('\0') && !e.to_string().contains('\n'),
            "{e}"
        );
        assert!(
            e.to_string().len() < 1000,
            "bounded: {}",
            e.to_string().len()
        );
        let e = c
            .proposals_show(&ProposalId { id: id.to_string() })
            .unwrap_err();
        assert_ne!(e.exit_code(), 0, "{id:?}");
    }
    let e = rt()
        .block_on(c.inspect(&InspectRequest {
            path: "/etc/passwd".into(),
        }))
        .unwrap_err();
    assert!(!e.to_string().contains("root:"), "{e}");
}

/// A workflow run's notify to `ops` waits for an operator; meanwhile the
/// operator takes `ops` out of the plugin's channel grant. The approval
/// resumes the run, whose re-run step asks again through the pipeline:
/// the channel grant is checked, the call denied, nothing sent.
#[test]
fn a_runs_approved_notify_is_checked_against_the_channel_grant_in_force() {
    let rt = rt();
    let (port, got) = rt.block_on(webhook(Answer::Status(200, 2)));
    let dir = tempfile::tempdir().unwrap();
    let config = |granted: &str| {
        let extra = format!(
            r#"{}
[workflows.alert]
[[workflows.alert.steps]]
id = "tell"
plugin = "notifier"
input = {{ channel = "ops", subject = "s", body = "b" }}
on_failure = "fail"
"#,
            crate::redteam5::governed(port, granted)
        );
        deployment(
            dir.path(),
            4,
            &[(
                "notifier",
                "fx-notify",
                &["governed-notify", "no-secrets"],
                &extra,
            )],
        )
    };
    let run = {
        let h =
            charter_runtime::Host::new(config("\"ops\", \"console\""), Default::default()).unwrap();
        let st = rt
            .block_on(h.run_workflow("alert", json!({}), None))
            .unwrap();
        assert_eq!(st.status.to_string(), "waiting-approval", "{st:?}");
        st.id
    };
    let h = charter_runtime::Host::new(config("\"console\""), Default::default()).unwrap();
    let id = h.proposals()[0].id.clone();
    let _ = rt.block_on(h.decide(&id, "olga", true, None));
    let st = h.run(&run).unwrap();
    assert_ne!(st.status.to_string(), "completed", "{st:?}");
    assert!(got.lock().unwrap().is_empty(), "nothing was sent");
    assert_eq!(kpi_unauthorized(&h), 0);
}
