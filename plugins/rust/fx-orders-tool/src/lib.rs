//! Fixture: a tool plugin. Exports `acme:shop/orders` (records, variants,
//! enums, options, lists, results and every scalar kind) with WIT doc
//! comments; Charter serves its functions to agents as MCP tools.

wit_bindgen::generate!({
    path: "wit",
    world: "acme:shop/tool@0.1.0",
});

use exports::acme::shop::orders::{Guest, Labels, Line, Order, Query, Scalars, Status};

struct Orders;

fn order(id: &str) -> Order {
    let n: u64 = id.bytes().map(u64::from).sum();
    Order {
        id: id.to_string(),
        status: if id.ends_with('2') {
            Status::Shipped
        } else {
            Status::Pending
        },
        lines: vec![Line {
            sku: format!("SKU-{}", n % 100),
            quantity: 2,
            unit_price: 12.5,
        }],
        note: None,
        total_cents: n * 100,
        express: false,
    }
}

impl Guest for Orders {
    fn lookup_order(order_id: String) -> Result<Order, String> {
        if order_id.is_empty() || order_id.starts_with("NONE") {
            return Err(format!("no order {order_id:?}"));
        }
        Ok(order(&order_id))
    }

    fn find_orders(query: Query, limit: Option<u8>) -> Vec<Order> {
        let ids: Vec<String> = match query {
            Query::ById(id) => vec![id],
            Query::ByCustomer(c) => (0..3).map(|i| format!("C{c}-{i}")).collect(),
            Query::Recent => (0..20).map(|i| format!("A-{}", 1000 + i)).collect(),
        };
        ids.iter()
            .take(usize::from(limit.unwrap_or(10)))
            .map(|id| order(id))
            .collect()
    }

    fn cancel_order(order_id: String, reason: String, refund_cents: u64) -> Result<String, String> {
        if reason.is_empty() {
            return Err("a cancellation needs a reason".into());
        }
        Ok(format!("X-{order_id}-{refund_cents}"))
    }

    fn label_order(
        order_id: String,
        labels: Labels,
        initial: char,
        size: (u32, u32),
    ) -> Result<(), String> {
        if (labels & Labels::FRAGILE) == Labels::FRAGILE && size.0 == 0 {
            return Err(format!("{order_id}: a fragile parcel needs a size ({initial})"));
        }
        Ok(())
    }

    fn echo_scalars(values: Scalars) -> Scalars {
        values
    }
}

export!(Orders);
