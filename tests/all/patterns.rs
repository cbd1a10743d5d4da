//! The framework's deployment patterns as runnable examples (issue 16):
//! `examples/service-desk` (phase 2) and `examples/refunds` (phase 5) end
//! to end, asserting on what their local stand-ins for the outside APIs
//! received. (IT-ops, phase 1, is in `it_ops`; the policy assistant, phase
//! 3, in `knowledge`; security operations, phase 4, in `security_ops`.)

use serde_json::Value;

use crate::support::*;

/// `bash examples/service-desk/run.sh`: three post-call webhooks (Retell's
/// shape, signed) into `charter up` → three cases, and a fourth of another
/// shape refused (422, recorded, no run); only the confident, calm call gets an automated
/// text (form-encoded To/From/Body to Twilio's Messages path, with Basic
/// authentication); the angry and the unclear call are handed to a person.
#[test]
fn service_desk_texts_the_confident_call_and_hands_off_the_others() {
    fixture("service-desk");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let record = work.join("standins.jsonl");
    let out = std::process::Command::new("bash")
        .arg(root().join("examples/service-desk/run.sh"))
        .env("CHARTER_BIN", charter_bin())
        .env("SERVICE_DESK_WORK", &work)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN")
        .env_remove("CHARTER_SERVER")
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let got: Vec<Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tickets: Vec<&Value> = got.iter().filter(|e| e["service"] == "ticketing").collect();
    let sms: Vec<&Value> = got.iter().filter(|e| e["service"] == "sms").collect();
    assert_eq!(tickets.len(), 3, "{got:?}");
    let tags = |i: usize| tickets[i]["ticket"]["tags"].clone();
    assert_eq!(
        tags(0),
        serde_json::json!(["password-reset", "positive", "route-automated"])
    );
    assert_eq!(
        tags(1),
        serde_json::json!(["double-charge", "negative", "route-human"])
    );
    assert_eq!(tickets[1]["ticket"]["priority"], "high");
    assert_eq!(tags(2)[2], "route-human", "{:?}", tickets[2]);
    assert_eq!(tickets[0]["ticket"]["external_id"], "call_7f3a9c2e11");
    assert_eq!(tickets[0]["ticket"]["requester"]["phone"], "+15550142211");
    // One text, to the first caller, as Twilio's endpoint takes it.
    assert_eq!(sms.len(), 1, "{got:?}");
    let m = sms[0];
    assert_eq!(
        m["path"],
        "/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json"
    );
    assert_eq!(m["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(m["authorized"], true);
    assert_eq!(m["form"]["To"], "+15550142211");
    assert_eq!(m["form"]["From"], "+15550100000");
    let body = m["form"]["Body"].as_str().unwrap();
    assert!(
        body.contains("case 1001") && body.contains("password reset"),
        "{body}"
    );
    // The two handoffs wait for a service agent; the token never shows.
    assert!(t.contains("handed to a person"), "{t}");
    assert!(t.contains("service-agent"), "{t}");
    assert!(!t.contains("test-auth-token"), "{t}");
    // The calls arrived as webhooks into `charter up`; the call_started
    // event (another shape) was refused with a 422 naming the pointer,
    // recorded, and started no run (three runs in all, below).
    assert!(t.contains("POST /hooks/retell -> 202"), "{t}");
    assert!(
        t.contains("POST /hooks/retell -> 422")
            && t.contains("the shape hook retell takes: /event is not"),
        "{t}"
    );
    let cfg = work.join("charter.toml");
    let out = charter(
        &[
            "audit",
            "show",
            "--type",
            "hook-refused",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        std::path::Path::new("/"),
    );
    let r: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let refused = r["events"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{r}");
    assert_eq!(
        (refused[0]["hook"].as_str(), refused[0]["reason"].as_str()),
        (Some("retell"), Some("shape")),
        "{r}"
    );
    let out = charter(
        &["runs", "list", "--json", "--config", cfg.to_str().unwrap()],
        std::path::Path::new("/"),
    );
    let runs: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let runs = runs["runs"].as_array().unwrap_or_else(|| panic!("{runs}"));
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(
        runs.iter().all(|r| r["initiator"] == "hook:retell"),
        "{runs:?}"
    );
    // The framework's table: the pattern's customer figures.
    assert!(t.contains("resolution confidence"), "{t}");
    let out = charter(
        &[
            "kpi",
            "--framework",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        std::path::Path::new("/"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    let desk = &k["patterns"]["service-desk"];
    assert_eq!(desk["efficiency"]["runs"], 3, "{k}");
    let handoff = desk["customer"]["handoff_rate"].as_f64().unwrap();
    assert!((handoff - 2.0 / 3.0).abs() < 1e-9, "{k}");
    let confidence = desk["customer"]["resolution_confidence"].as_f64().unwrap();
    assert!(confidence > 0.0 && confidence < 1.0, "{k}");
    assert_eq!(desk["risk"]["unauthorized_actions"], 0);
    assert_eq!(k["overall"], *desk, "one pattern: overall is its figures");
}

fn jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `bash examples/refunds/run.sh`, phase 5: support-copilot asks over MCP
/// for two refunds, one of them a single cent, and both are proposals;
/// the payments API's stand-in has received nothing when they are made.
/// sam (no refund-approver role) and the agent's own token cannot approve
/// (refused, recorded); bob approves one, which reaches the payments API
/// exactly once, and rejects the other, which never does.
#[test]
fn refunds_copilot_pays_only_what_a_person_approved() {
    fixture("payments-api");
    fixture("fx-orders-tool");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = std::process::Command::new("bash")
        .arg(root().join("examples/refunds/run.sh"))
        .env("CHARTER_BIN", charter_bin())
        .env("REFUNDS_WORK", &work)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN")
        .env_remove("CHARTER_SERVER")
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");

    // The agent's session: both refunds pending, however small; the test
    // order and the unpermitted function denied.
    let seen: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("session.json")).unwrap()).unwrap();
    let pending = |k: &str| -> String {
        seen[k]["structured"]["pending_approval"]["proposal"]
            .as_str()
            .unwrap_or_else(|| panic!("{k} is not a proposal: {}", seen[k]))
            .to_string()
    };
    let (refund, cent) = (pending("refund"), pending("one-cent"));
    assert_eq!(seen["lookup"]["error"], false, "{seen}");
    assert_eq!(seen["test-order"]["error"], true, "{seen}");
    assert!(
        seen["test-order"]["text"]
            .as_str()
            .unwrap()
            .contains("no-refunds-on-test-orders"),
        "{seen}"
    );
    assert_eq!(seen["void-all"]["error"], true, "{seen}");

    // Nothing reached the payments API before a person approved.
    assert_eq!(
        jsonl(&work.join("records-before-approval.jsonl")),
        Vec::<Value>::new()
    );
    // After: exactly the approved refund, once, with the API key.
    let recs = jsonl(&work.join("records.jsonl"));
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(
        (r["method"].as_str(), r["path"].as_str()),
        (Some("POST"), Some("/v1/refunds"))
    );
    assert_eq!(r["form"]["order"], "A-1001", "{r}");
    assert_eq!(r["form"]["amount"], "4200", "{r}");
    // The agent's reason tried to add a form field: it arrives whole, as
    // the reason.
    assert_eq!(r["form"]["reason"], "late delivery&amount=990000", "{r}");
    assert_eq!(r["authorized"], true, "{r}");
    assert_eq!(r["status"], 200, "{r}");
    assert!(
        recs.iter()
            .all(|r| r["form"]["order"] != "A-1002" && r["form"]["order"] != "TEST-9"),
        "{recs:?}"
    );

    // The record: sam's approval refused for the role, bob's decisions
    // accepted, the rejected proposal never executed.
    let cfg = work.join("charter.toml");
    let cfg = cfg.to_str().unwrap();
    let out = charter(
        &[
            "audit",
            "show",
            "--type",
            "approval-decision",
            "--json",
            "--config",
            cfg,
        ],
        dir.path(),
    );
    let a: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let decisions = a["events"].as_array().unwrap();
    let sams: Vec<&Value> = decisions.iter().filter(|d| d["by"] == "sam").collect();
    assert_eq!(sams.len(), 1, "{a}");
    assert_eq!(sams[0]["accepted"], false);
    assert_eq!(sams[0]["proposal"], refund.as_str());
    assert!(
        sams[0]["reason"]
            .as_str()
            .unwrap()
            .contains("refund-approver"),
        "{a}"
    );
    let bobs: Vec<(&str, bool)> = decisions
        .iter()
        .filter(|d| d["by"] == "bob" && d["accepted"] == true)
        .map(|d| {
            (
                d["proposal"].as_str().unwrap(),
                d["approve"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        bobs,
        [(refund.as_str(), true), (cent.as_str(), false)],
        "{a}"
    );
    let out = charter(
        &[
            "audit",
            "show",
            "--type",
            "auth-refused",
            "--json",
            "--config",
            cfg,
        ],
        dir.path(),
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "agent-token"),
        "the agent's approval is refused and recorded: {r}"
    );
    let out = charter(&["audit", "verify", "--config", cfg], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = charter(&["kpi", "--json", "--config", cfg], dir.path());
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    let p = &k["proposals"];
    assert_eq!(
        (
            p["created"].as_u64(),
            p["executed"].as_u64(),
            p["rejected"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{k}"
    );
    assert_eq!(k["blocked_by_kind"]["approval_refused"], 1, "{k}");
    let out = charter(
        &["kpi", "--framework", "--json", "--config", cfg],
        dir.path(),
    );
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The table the running host served (`--server`, GET
    // /v1/kpi/framework) before it stopped is the one the log gives.
    let served: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("framework-served.json")).unwrap())
            .unwrap();
    assert_eq!(served, f);
    let refunds = &f["patterns"]["refunds"];
    assert_eq!(refunds["adoption"]["proposal_acceptance_rate"], 0.5, "{f}");
    assert_eq!(refunds["risk"]["unauthorized_actions"], 0, "{f}");
    assert_eq!(refunds["decision_quality"]["policy_adherence"], 1.0, "{f}");
    // The approved execution carries out bob's decision: no input got two
    // different answers.
    assert_eq!(
        refunds["decision_quality"]["exception_consistency"],
        Value::Null,
        "{f}"
    );
}

/// `charter kpi --framework` with `--config` repeated folds the deployments'
/// logs: one column per pattern each declares (an empty log too), the
/// deployments named; elsewhere a second `--config` is a usage error, the
/// same deployment twice is refused, and `--server` (one host's table)
/// does not mix with several.
#[test]
fn kpi_framework_folds_the_deployments_named_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfgs = Vec::new();
    for n in ["a", "b"] {
        let d = dir.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        let cfg = d.join("charter.toml");
        std::fs::write(
            &cfg,
            format!("[deployment]\nname = \"dep-{n}\"\nphase = 1\npattern = \"p-{n}\"\ndata_dir = \"data\"\n"),
        )
        .unwrap();
        cfgs.push(cfg.to_str().unwrap().to_string());
    }
    let (a, b) = (cfgs[0].as_str(), cfgs[1].as_str());
    let out = charter(
        &["kpi", "--framework", "--json", "--config", a, "--config", b],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        f["deployments"],
        serde_json::json!(["dep-a", "dep-b"]),
        "{f}"
    );
    assert_eq!(f["patterns"]["p-a"]["efficiency"]["runs"], 0, "{f}");
    assert_eq!(
        f["patterns"]["p-b"]["risk"]["unauthorized_actions"], 0,
        "{f}"
    );
    let out = charter(
        &["kpi", "--framework", "--config", a, "--config", b],
        dir.path(),
    );
    assert!(
        text(&out).contains("deployments folded: dep-a, dep-b"),
        "{}",
        text(&out)
    );
    // One deployment: its table, no `deployments`.
    let out = charter(&["kpi", "--framework", "--json", "--config", a], dir.path());
    let one: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(one.get("deployments").is_none(), "{one}");
    assert!(one["patterns"].get("p-a").is_some(), "{one}");

    let out = charter(&["kpi", "--config", a, "--config", b], dir.path());
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        text(&out).contains("--config is given 2 times"),
        "{}",
        text(&out)
    );
    let out = charter(
        &["kpi", "--framework", "--config", a, "--config", a],
        dir.path(),
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("names deployment \"dep-a\" again"),
        "{}",
        text(&out)
    );
    let out = charter(
        &[
            "kpi",
            "--framework",
            "--server",
            "http://127.0.0.1:9",
            "--config",
            a,
            "--config",
            b,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("leave out --server"), "{}", text(&out));
    // The report folds the same way.
    let html = dir.path().join("r.html");
    let out = charter(
        &[
            "report",
            "--out",
            html.to_str().unwrap(),
            "--config",
            a,
            "--config",
            b,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("KPIs of 2 deployments") && page.contains("dep-a, dep-b"),
        "{page}"
    );
}
