//! The EDR connector of the security-ops example: provides
//! `acme:edr/actions`. It runs under its own grants (kv, log); callers reach
//! it only through the host, which has already decided each call (Cedar's
//! bounds, the isolation quota). Its ledger (`action:<id>`) is the record
//! of what the EDR did; its inventory (`asset:<hostname>` = criticality)
//! is checked again here: a crown-jewel is never isolated, whatever the
//! caller claimed its criticality was.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.1.0", "../../../wit/plugin@0.1.0", "../../../examples/security-ops/wit"],
    world: "acme:edr/connector@0.1.0",
    generate_all,
});

use charter::host::{kv, log};
use exports::acme::edr::actions::Guest;

struct Edr;

fn act(id: String, what: String) -> Result<String, String> {
    // Idempotent: the same action again returns the first.
    let key = format!("action:{id}");
    if kv::get(&key)?.is_some() {
        return Ok(id);
    }
    kv::set(&key, &what)?;
    log::write(log::Level::Info, &what);
    Ok(id)
}

/// A hostname as the inventory keys it: DNS names are case-insensitive and
/// `db-prod-01.` (fully qualified) is `db-prod-01`, so `DB-PROD-01.` must
/// not slip past the inventory's `asset:db-prod-01`.
fn normal(hostname: &str) -> String {
    hostname.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl Guest for Edr {
    fn isolate_host(
        hostname: String,
        criticality: String,
        severity_id: u8,
        risk: u32,
        reason: String,
    ) -> Result<String, String> {
        let hostname = normal(&hostname);
        if hostname.is_empty() {
            return Err("no hostname: not isolated".into());
        }
        // The inventory's criticality, where it knows the asset, over the
        // caller's (the finding's, which a crafted finding can lower).
        let criticality = kv::get(&format!("asset:{hostname}"))?.unwrap_or(criticality);
        if criticality.trim().eq_ignore_ascii_case("crown-jewel") {
            return Err(format!(
                "{hostname} is a crown-jewel asset in the EDR's inventory: not isolated"
            ));
        }
        act(
            format!("isolate:{hostname}"),
            format!("isolated {hostname} (severity {severity_id}, risk {risk}): {reason}"),
        )
    }

    fn block_ip(ip: String, severity_id: u8, risk: u32, reason: String) -> Result<String, String> {
        act(
            format!("block:{ip}"),
            format!("blocked {ip} (severity {severity_id}, risk {risk}): {reason}"),
        )
    }
}

export!(Edr);
