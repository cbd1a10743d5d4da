//! The payments connector: provides `acme:payments/refunds`. It runs under
//! its own grants (its ledger in kv, logging); callers reach it only through
//! the host's mediator, which has already decided on each call.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.1.0", "../../../wit/plugin@0.1.0", "../../../examples/refunds/wit"],
    world: "acme:payments/connector@0.1.0",
    generate_all,
});

use charter::host::{kv, log};
use exports::acme::payments::refunds::Guest;

struct Payments;

impl Guest for Payments {
    fn issue_refund(order_id: String, amount_cents: u64, reason: String) -> Result<String, String> {
        let key = format!("refund:{order_id}");
        // Idempotent per order: a repeated call returns the first refund.
        if let Some(existing) = kv::get(&key)? {
            return Ok(existing);
        }
        let id = format!("R-{order_id}-{amount_cents}");
        kv::set(&key, &id)?;
        log::write(
            log::Level::Info,
            &format!("refunded {amount_cents} cents on {order_id} ({reason}) as {id}"),
        );
        Ok(id)
    }

    fn void_all_refunds() -> Result<u32, String> {
        let keys = kv::list_keys("refund:")?;
        for k in &keys {
            kv::delete(k)?;
        }
        Ok(keys.len() as u32)
    }
}

export!(Payments);
