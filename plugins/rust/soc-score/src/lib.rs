//! The scoring step of the security-ops example: reads an OCSF Detection
//! Finding (class_uid 2004) and computes what the responder and the policy
//! act on. The model (`llm.classify`) names the kind of activity; fixed
//! rules do the rest, so the same finding always scores the same:
//!
//! - `severity_id`: the finding's (OCSF 1 informational .. 6 fatal), one
//!   step lower when the model calls the activity benign;
//! - `criticality`: the device's (`resources[]` of type "Device", or
//!   `device.criticality`), "high" when the finding does not say;
//! - `risk` (0-100): 15 per severity step, plus 10 for a high and 20 for
//!   a crown-jewel asset, plus 10 for malware; capped at 100.
//! - `act`: whether to respond (severity medium or more).
use charter_sdk::{StepError, Value, json, llm, log};

const LABELS: &[&str] = &["malware", "intrusion", "benign"];

fn run(f: Value) -> Result<Value, StepError> {
    if f["class_uid"] != 2004 {
        return Err(StepError::fatal(format!(
            "not an OCSF Detection Finding (class_uid {}, want 2004)",
            f["class_uid"]
        )));
    }
    let info = &f["finding_info"];
    let title = info["title"].as_str().unwrap_or_default();
    let text = format!("{title}. {}", info["desc"].as_str().unwrap_or_default());
    let c = llm::classify(&text, LABELS)?;
    let mut severity = f["severity_id"].as_u64().unwrap_or(0).min(6);
    if c.label == "benign" && severity > 1 {
        severity -= 1;
    }
    let device = f["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["type"] == "Device"))
        .unwrap_or(&f["device"]);
    let hostname = device["hostname"]
        .as_str()
        .or(device["name"].as_str())
        .unwrap_or_default();
    let criticality = device["criticality"].as_str().unwrap_or("high");
    let ip = f["src_endpoint"]["ip"].as_str().unwrap_or_default();
    let mut risk = 15 * severity;
    risk += match criticality {
        "crown-jewel" => 20,
        "high" => 10,
        _ => 0,
    };
    if c.label == "malware" {
        risk += 10;
    }
    let risk = risk.min(100);
    log::info(&format!(
        "{hostname}: {} (confidence {:.2}), severity {severity}, criticality {criticality}, risk {risk}",
        c.label, c.confidence
    ));
    Ok(json!({
        "hostname": hostname,
        "ip": ip,
        "criticality": criticality,
        "severity_id": severity,
        "risk": risk,
        "label": c.label,
        "title": title,
        "act": severity >= 3,
    }))
}

charter_sdk::step!(run);
