//! The framework's deployment patterns as runnable examples (issue 16):
//! `examples/service-desk` (phase 2) end to end, asserting on what its
//! local stand-ins for the ticketing and SMS APIs received. (The policy
//! assistant, phase 3, is in `knowledge`.)

use serde_json::Value;

use crate::support::*;

/// `bash examples/service-desk/run.sh`: three post-call webhooks (Retell's
/// shape) → three cases; only the confident, calm call gets an automated
/// text (form-encoded To/From/Body to Twilio's Messages path, with Basic
/// authentication); the angry and the unclear call are handed to a person.
#[test]
fn service_desk_texts_the_confident_call_and_hands_off_the_others() {
    fixture("service-desk");
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("standins.jsonl");
    let out = std::process::Command::new("bash")
        .arg(root().join("examples/service-desk/run.sh"))
        .env("CHARTER_BIN", charter_bin())
        .env("SERVICE_DESK_RECORD", &record)
        .env_remove("CHARTER_LOG")
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
    // The framework's table: the pattern's customer figures.
    assert!(t.contains("resolution confidence"), "{t}");
    let out = charter(
        &[
            "kpi",
            "--framework",
            "--json",
            "--config",
            root()
                .join("examples/service-desk/charter.toml")
                .to_str()
                .unwrap(),
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
