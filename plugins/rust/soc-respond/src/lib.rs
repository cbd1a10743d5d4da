//! The responder of the security-ops example: takes the score of a finding
//! and asks the EDR connector to isolate the host and block the source IP.
//! Whether each call runs, waits for the SOC or is denied is the host's
//! decision (soc.cedar's bounds, the isolation quota), not this code's.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.1.0", "../../../wit/plugin@0.1.0", "../../../examples/security-ops/wit"],
    world: "acme:edr/responder@0.1.0",
    generate_all,
});

use acme::edr::actions;
use charter::host::log;

struct Respond;

impl Guest for Respond {
    fn run(input: String) -> Result<String, StepError> {
        let v: serde_json::Value =
            serde_json::from_str(&input).map_err(|e| StepError::Fatal(format!("input: {e}")))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let severity = v["severity_id"].as_u64().unwrap_or(0).min(6) as u8;
        let risk = v["risk"].as_u64().unwrap_or(0).min(100) as u32;
        let (host, ip, why) = (s("hostname"), s("ip"), s("title"));
        if host.is_empty() {
            return Err(StepError::Fatal("the score names no host".into()));
        }
        let mut done = serde_json::Map::new();
        log::write(log::Level::Info, &format!("isolating {host} (risk {risk})"));
        let id = actions::isolate_host(&host, &s("criticality"), severity, risk, &why)
            .map_err(StepError::Fatal)?;
        done.insert("isolated".into(), id.into());
        if !ip.is_empty() {
            let id = actions::block_ip(&ip, severity, risk, &why).map_err(StepError::Fatal)?;
            done.insert("blocked".into(), id.into());
        }
        Ok(serde_json::Value::Object(done).to_string())
    }
}

export!(Respond);
