//! Regressions from the second red-team pass (issue 9): each test
//! reproduced a hole in the code it was written against, and now holds.

use charter_runtime::workflow::status;
use charter_runtime::{Host, HostOptions};
use serde_json::json;

use crate::support::*;
use crate::workflow::wf_deployment;

/// A step output of JSON `null` (here an escalation skipped with output
/// `null`) is recorded as `"output": null`, which the log's reader folds
/// as *no* output (`Option<Value>` reads `null` as `None`). The live run
/// sees `steps.call = null`; the same run resumed from state rebuilt from
/// the log (after a crash that lost the index's unsynced tail, or after
/// the documented repair of moving `<data_dir>/state` aside) finds that
/// `$/steps/call` names nothing and fails.
#[test]
fn a_null_step_output_survives_a_rebuild_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let wf = r#"
[workflows.nul]
escalate_to = "operator"
[[workflows.nul.steps]]
id = "call"
plugin = "work"
input = { mode = "flaky", fail_until = 100, class = "fatal", attempt = "$/run/attempt" }
on_failure = "escalate"
[[workflows.nul.steps]]
id = "after"
plugin = "work"
input = { mode = "flaky", fail_until = 2, attempt = "$/run/attempt", prev = "$/steps/call" }
retry = { max_attempts = 3, initial_backoff_ms = 1500, max_backoff_ms = 1500 }
"#;
    let rt = rt();
    let id = {
        let h = Host::new(wf_deployment(dir.path(), wf), HostOptions::default()).unwrap();
        let st = rt
            .block_on(h.run_workflow("nul", json!({"orig": 1}), None))
            .unwrap();
        assert_eq!(st.status, status::ESCALATED, "{st:?}");
        let esc = h
            .escalations()
            .into_iter()
            .find(|e| e.run == st.id)
            .unwrap();
        // Skip with output null; `after` then fails once and waits 1.5 s
        // to retry: stop the host during that wait.
        let r = rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_millis(700),
                h.resolve_escalation(&esc.id, "olga", "skip", Some(json!(null)), None),
            )
            .await
        });
        assert!(r.is_err(), "expected the run to wait for its retry: {r:?}");
        let st = h.run(&st.id).unwrap();
        assert_eq!(st.status, status::RETRY_WAIT, "{st:?}");
        assert_eq!(st.outputs.get("call"), Some(&json!(null)));
        h.store().flush().unwrap();
        st.id
    };
    // The state index is derived: rebuilt from the log on the next start.
    // (With the index left in place the same run completes.)
    std::fs::rename(
        dir.path().join("data/state"),
        dir.path().join("state-aside"),
    )
    .unwrap();
    let h = Host::new(wf_deployment(dir.path(), wf), HostOptions::default()).unwrap();
    let rebuilt = h.run(&id).unwrap().outputs.get("call").cloned();
    let st = rt.block_on(h.drive(&id)).unwrap();
    assert_eq!(
        st.status,
        status::COMPLETED,
        "the run resumed from state rebuilt from the log failed: {:?}",
        st.error
    );
    assert_eq!(
        rebuilt,
        Some(json!(null)),
        "the state rebuilt from the log lost the skipped step's output"
    );
}

/// `charter kpi`, `charter audit show` and `charter audit export` read the
/// log with `read_records`, which stops at the first damaged frame and
/// reports nothing: on a log damaged at its second entry they exit 0 and
/// present the intact prefix as the whole record (an `export` taken for
/// off-site review is silently short; the KPIs, unauthorized actions
/// included, cover only what precedes the damage).
#[test]
fn reports_over_a_damaged_log_say_it_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"data\"\n{GROUPS}\n\
         [plugins.echo]\npath = \"{}\"\ngroups = [\"kv-read\", \"kv-write\", \"logging\"]\n",
        fixture("fx-echo").display(),
    );
    std::fs::write(dir.path().join("charter.toml"), toml).unwrap();
    let cwd = dir.path();
    for i in 0..3 {
        let input = format!(r#"{{"kv_set": ["k{i}", "v"]}}"#);
        let o = charter(&["call", "echo", "--input", &input], cwd);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let path = cwd.join("data").join(charter_audit::LOG_FILE);
    let before = charter_audit::read_records(&path).unwrap().len();
    assert!(before >= 6, "{before}");
    // Flip one payload byte of entry 2 (as a bad sector or an editor would).
    let mut b = std::fs::read(&path).unwrap();
    let m = charter_audit::LOG_MAGIC.len();
    let len1 = u32::from_le_bytes(b[m..m + 4].try_into().unwrap()) as usize;
    let f2 = m + charter_audit::FRAME_HEADER_LEN + len1 + 32;
    let p = f2 + charter_audit::FRAME_HEADER_LEN + 40 + 3;
    b[p] ^= 0x01;
    std::fs::write(&path, &b).unwrap();
    let v = charter(&["audit", "verify"], cwd);
    assert_ne!(v.status.code(), Some(0), "verify sees it: {}", text(&v));
    for args in [
        &["kpi"][..],
        &["kpi", "--json"][..],
        &["audit", "show"][..],
        &["audit", "export"][..],
    ] {
        let o = charter(args, cwd);
        let t = text(&o);
        assert!(
            o.status.code() != Some(0) || t.to_lowercase().contains("damage"),
            "`charter {}` over a log damaged at entry 2 (of {before}) exits 0 and does not say so:\n{t}",
            args.join(" ")
        );
    }
}
