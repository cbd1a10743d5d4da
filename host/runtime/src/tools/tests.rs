//! Schemas and strict conversion, on the fixture tool plugin's real
//! component types (`plugins/rust/fx-orders-tool`: every WIT type kind),
//! each schema checked by an independent JSON Schema validator: it must
//! accept what the converter accepts and refuse what it refuses.

use std::collections::HashMap;

use serde_json::{Value, json};
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};

use super::*;

const EXPORT: &str = "acme:shop/orders@0.1.0";

struct Fixture {
    funcs: HashMap<String, ComponentFunc>,
    docs: Option<Docs>,
}

fn fixture() -> Fixture {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/wasm32-wasip2/release/fx_orders_tool.wasm");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run plugins/build.sh)", path.display()));
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&cfg).unwrap();
    let component = wasmtime::component::Component::new(&engine, &bytes).unwrap();
    let mut funcs = HashMap::new();
    for (name, item) in component.component_type().exports(&engine) {
        if name != EXPORT {
            continue;
        }
        if let ComponentItem::ComponentInstance(inst) = item.ty {
            for (fname, f) in inst.exports(&engine) {
                if let ComponentItem::ComponentFunc(f) = f.ty {
                    funcs.insert(fname.to_string(), f);
                }
            }
        }
    }
    assert!(!funcs.is_empty(), "the fixture exports {EXPORT}");
    // A component built by wasm-component-ld carries no `package-docs`;
    // the plugin's `wit` is where its docs come from then.
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/rust/fx-orders-tool/wit");
    Fixture {
        funcs,
        docs: Docs::read(&bytes, EXPORT)
            .filter(Docs::any)
            .or_else(|| Docs::from_wit(&wit, "acme:shop/orders")),
    }
}

impl Fixture {
    fn params(&self, f: &str) -> Vec<(String, Type)> {
        self.funcs[f]
            .params()
            .map(|(n, t)| (n.to_string(), t))
            .collect()
    }

    /// The input schema of `f`, as the catalog builds it.
    fn input(&self, f: &str) -> Value {
        let wf = self.docs.as_ref().and_then(|d| d.function(f));
        let mut props = serde_json::Map::new();
        let mut required = vec![];
        for (i, (n, t)) in self.params(f).iter().enumerate() {
            let w = wf.map(|w| schema::Wit {
                resolve: &self.docs.as_ref().unwrap().resolve,
                ty: &w.params[i].ty,
            });
            props.insert(n.clone(), schema::schema(t, w, schema::Dir::Input).unwrap());
            if !matches!(t, Type::Option(_)) {
                required.push(json!(n));
            }
        }
        json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
    }

    fn output(&self, f: &str) -> Value {
        let t = self.funcs[f].results().next().unwrap();
        let d = self.docs.as_ref();
        let w = d
            .and_then(|d| d.function(f)?.result.as_ref())
            .map(|ty| schema::Wit {
                resolve: &d.unwrap().resolve,
                ty,
            });
        schema::schema(&t, w, schema::Dir::Output).unwrap()
    }
}

/// The schema and the converter agree on `args` for `f`: both accept
/// (`good`) or both refuse; the converter's refusal names `path`.
fn agree(fx: &Fixture, f: &str, args: Value, good: bool, path: &str) {
    let s = fx.input(f);
    let validator = jsonschema::draft202012::new(&s).expect("a valid JSON Schema");
    let by_schema = validator.is_valid(&args);
    let by_convert = convert::params(&fx.params(f), &args, &[]);
    assert_eq!(by_schema, good, "schema on {f}({args}): {s}");
    match (&by_convert, good) {
        (Ok(_), true) => {}
        (Err(e), false) => assert!(e.starts_with(path), "{f}({args}): {e:?} should name {path}"),
        (r, _) => panic!("converter on {f}({args}): {r:?}"),
    }
}

#[test]
fn integers_of_every_width_are_bounded() {
    let fx = fixture();
    let base = json!({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1, "x": 1.5, "y": 2.5, "flag": true, "text": "t"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        json!({"values": b})
    };
    agree(&fx, "echo-scalars", json!({"values": base}), true, "");
    let cases: [(&str, Value, Value); 8] = [
        ("a", json!(255), json!(256)),
        ("b", json!(65535), json!(65536)),
        ("c", json!(4294967295u64), json!(4294967296u64)),
        ("d", json!(u64::MAX), json!(-1)),
        ("e", json!(-128), json!(128)),
        ("f", json!(-32768), json!(32768)),
        ("g", json!(i32::MIN), json!(2147483648u64)),
        ("h", json!(i64::MIN), json!(u64::MAX)),
    ];
    for (k, ok, bad) in cases {
        agree(&fx, "echo-scalars", with(k, ok), true, "");
        agree(
            &fx,
            "echo-scalars",
            with(k, bad),
            false,
            &format!("values.{k}"),
        );
        // A fractional number or a string is not an integer.
        agree(
            &fx,
            "echo-scalars",
            with(k, json!(1.5)),
            false,
            &format!("values.{k}"),
        );
        agree(
            &fx,
            "echo-scalars",
            with(k, json!("1")),
            false,
            &format!("values.{k}"),
        );
    }
    let s = fx.input("echo-scalars");
    let props = &s["properties"]["values"]["properties"];
    assert_eq!(
        props["a"],
        json!({"type": "integer", "minimum": 0, "maximum": 255})
    );
    assert_eq!(props["h"]["minimum"], json!(i64::MIN));
    assert_eq!(props["d"]["maximum"], json!(u64::MAX));
}

#[test]
fn floats_bools_strings_and_chars() {
    let fx = fixture();
    let base = json!({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1, "x": 1.5, "y": 2.5, "flag": true, "text": "t"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        json!({"values": b})
    };
    agree(
        &fx,
        "echo-scalars",
        with("x", json!(1e39)),
        false,
        "values.x",
    );
    agree(&fx, "echo-scalars", with("y", json!(1e300)), true, "");
    agree(
        &fx,
        "echo-scalars",
        with("y", json!("NaN")),
        false,
        "values.y",
    );
    agree(
        &fx,
        "echo-scalars",
        with("flag", json!(1)),
        false,
        "values.flag",
    );
    agree(
        &fx,
        "echo-scalars",
        with("text", json!(7)),
        false,
        "values.text",
    );
    let label = |initial: Value| json!({"order-id": "A-1", "labels": ["gift"], "initial": initial, "size": [10, 20]});
    agree(&fx, "label-order", label(json!("é")), true, "");
    agree(&fx, "label-order", label(json!("ab")), false, "initial");
    agree(&fx, "label-order", label(json!("")), false, "initial");
}

#[test]
fn records_options_and_required_fields() {
    let fx = fixture();
    let s = fx.input("find-orders");
    // `limit` is an option: not required.
    assert_eq!(s["required"], json!(["query"]));
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "recent"}}),
        true,
        "",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "recent"}, "limit": null}),
        true,
        "",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "recent"}, "limit": 3}),
        true,
        "",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "recent"}, "limit": 300}),
        false,
        "limit",
    );
    agree(&fx, "find-orders", json!({"limit": 3}), false, "query");
    // An unknown argument, and an unknown field in a record.
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "recent"}, "sql": "x"}),
        false,
        "arguments",
    );
    let scalars = json!({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1, "x": 1.5, "y": 2.5, "flag": true, "text": "t", "extra": 1});
    agree(
        &fx,
        "echo-scalars",
        json!({"values": scalars}),
        false,
        "values",
    );
    let mut missing = scalars.clone();
    missing.as_object_mut().unwrap().remove("extra");
    missing.as_object_mut().unwrap().remove("text");
    agree(
        &fx,
        "echo-scalars",
        json!({"values": missing}),
        false,
        "values.text",
    );
    agree(
        &fx,
        "echo-scalars",
        json!({"values": [1, 2]}),
        false,
        "values",
    );
    agree(&fx, "lookup-order", json!([]), false, "arguments");
}

#[test]
fn variants_enums_lists_results_tuples_and_flags() {
    let fx = fixture();
    // Variants: a tag, and the value its case carries.
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "by-id", "value": "A-1"}}),
        true,
        "",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "by-customer", "value": 7}}),
        true,
        "",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "by-id"}}),
        false,
        "query.value",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "by-id", "value": 7}}),
        false,
        "query.value",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "everything"}}),
        false,
        "query.tag",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": {"tag": "recent", "value": 1}}),
        false,
        "query.value",
    );
    agree(
        &fx,
        "find-orders",
        json!({"query": "recent"}),
        false,
        "query",
    );
    // Flags: known names, each once; tuples: exactly their length.
    let label = |labels: Value, size: Value| json!({"order-id": "A-1", "labels": labels, "initial": "k", "size": size});
    agree(
        &fx,
        "label-order",
        label(json!([]), json!([1, 2])),
        true,
        "",
    );
    agree(
        &fx,
        "label-order",
        label(json!(["gift", "fragile"]), json!([1, 2])),
        true,
        "",
    );
    agree(
        &fx,
        "label-order",
        label(json!(["gift", "gift"]), json!([1, 2])),
        false,
        "labels[1]",
    );
    agree(
        &fx,
        "label-order",
        label(json!(["cheap"]), json!([1, 2])),
        false,
        "labels[0]",
    );
    agree(
        &fx,
        "label-order",
        label(json!([]), json!([1, 2, 3])),
        false,
        "size",
    );
    agree(
        &fx,
        "label-order",
        label(json!([]), json!([1, -2])),
        false,
        "size[1]",
    );
    // Enums and results, in the output schema (a list of records with an
    // enum, an option, a list, floats), checked on real values.
    let out = fx.output("find-orders");
    let v = jsonschema::draft202012::new(&out).unwrap();
    let order = json!({"id": "A-1", "status": "shipped", "lines": [{"sku": "S", "quantity": 2, "unit-price": 12.5}], "note": null, "total-cents": 100, "express": false});
    assert!(v.is_valid(&json!([order])));
    let mut bad = order.clone();
    bad["status"] = json!("lost");
    assert!(
        !v.is_valid(&json!([bad])),
        "an enum refuses an unknown case"
    );
    let r = jsonschema::draft202012::new(&fx.output("lookup-order")).unwrap();
    assert!(r.is_valid(&json!({"ok": order})));
    assert!(r.is_valid(&json!({"err": "no order"})));
    assert!(!r.is_valid(&json!({"ok": order, "err": "both"})));
    assert!(!r.is_valid(&json!({"maybe": 1})));
    let unit = jsonschema::draft202012::new(&fx.output("label-order")).unwrap();
    assert!(unit.is_valid(&json!({"ok": null})));
    // Results as arguments: exactly one of ok / err.
    let t = fx.funcs["lookup-order"].results().next().unwrap();
    assert!(convert::from_json(&json!({"err": "x"}), &t, "r").is_ok());
    assert!(convert::from_json(&json!({"ok": order, "err": "x"}), &t, "r").is_err());
}

#[test]
fn values_round_trip_through_the_output_schema() {
    let fx = fixture();
    let args = json!({"values": {"a": 255, "b": 1, "c": 2, "d": u64::MAX, "e": -128, "f": -1, "g": 3, "h": i64::MIN, "x": 1.5, "y": -2.25, "flag": true, "text": "ünï"}});
    let vals = convert::params(&fx.params("echo-scalars"), &args, &[]).unwrap();
    let back = crate::values::to_json(&vals[0]);
    assert_eq!(back, args["values"], "JSON → value → JSON is the identity");
    let v = jsonschema::draft202012::new(&fx.output("echo-scalars")).unwrap();
    assert!(v.is_valid(&back));
}

#[test]
fn wit_docs_become_descriptions() {
    let fx = fixture();
    assert!(fx.docs.is_some(), "the fixture's docs are found");
    let wf = fx.docs.as_ref().unwrap().function("lookup-order").unwrap();
    assert_eq!(
        wf.docs.contents.as_deref().map(str::trim),
        Some("Look up one order by its id.")
    );
    let s = fx.input("find-orders");
    assert_eq!(
        s["properties"]["query"]["description"],
        json!("How to find orders.")
    );
    let cases = s["properties"]["query"]["oneOf"].as_array().unwrap();
    assert_eq!(cases[0]["description"], json!("By order id."));
    let out = fx.output("find-orders");
    let order = &out["items"];
    assert_eq!(
        order["properties"]["id"]["description"],
        json!("The order id, e.g. A-1001.")
    );
    assert!(
        order["properties"]["status"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Where an order is")
    );
    // Not required: the option field.
    assert!(
        !order["required"]
            .as_array()
            .unwrap()
            .contains(&json!("note"))
    );
}

#[test]
fn tool_names_follow_mcp_rules() {
    assert_eq!(
        tool_name("acme:shop/orders", "lookup-order", false),
        "orders.lookup-order"
    );
    assert_eq!(
        tool_name("acme:shop/orders", "lookup-order", true),
        "acme_shop_orders.lookup-order"
    );
    assert!(valid_tool_name("orders.lookup-order"));
    for bad in ["", "a b", "a/b", "a:b", "ä", &"x".repeat(129)] {
        assert!(!valid_tool_name(bad), "{bad:?}");
    }
}

#[test]
fn the_rate_limit_counts_per_agent() {
    let l = RateLimiter::default();
    assert!((0..3).all(|_| l.admit("a", 3)));
    assert!(!l.admit("a", 3), "the fourth call in the minute is refused");
    assert!(l.admit("b", 3), "another agent has its own window");
}

#[test]
fn a_refusal_event_keeps_every_distinct_tool_up_to_a_bound() {
    let l = RateLimiter::default();
    // The first refusal is recorded at once; the rest wait for the window.
    let first = l.refuse("a", "unknown-tool", "t0", "d").expect("first");
    let Event::ToolRefused { tools, count, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!((tools, count), (vec!["t0".to_string()], 1));
    for i in 0..40 {
        assert!(
            l.refuse("a", "unknown-tool", &format!("t{}", i % 20), "d")
                .is_none()
        );
    }
    let due = l.due_refusals(true);
    let [
        Event::ToolRefused {
            tool, tools, count, ..
        },
    ] = &due[..]
    else {
        panic!("{due:?}")
    };
    assert_eq!(*count, 40);
    assert_eq!(tool, "t19", "the last one asked for");
    let want: Vec<String> = (0..REFUSED_TOOLS).map(|i| format!("t{i}")).collect();
    assert_eq!(
        *tools, want,
        "distinct, in order, bounded: not only the last"
    );
}

/// A catalog built under one configuration lends nothing the
/// configuration in force has revoked (the listing and every call check
/// the agent's access again against it).
#[test]
fn a_tool_revoked_by_the_configuration_in_force_is_not_admitted() {
    let dep = |agents: &str| {
        Arc::new(
            Deployment::parse(
                &format!(
                    "[deployment]\nname = \"t\"\nphase = 5\n[agents.a]\nroles = []\n[agents.b]\nroles = [\"support\"]\n[plugins.orders]\npath = \"o.wasm\"\nprovides = [\"acme:shop/orders\"]\n[plugins.orders.tools.\"acme:shop/orders\"]\nagents = [{agents}]\n"
                ),
                std::path::Path::new("/nonexistent/charter.toml"),
                crate::host_catalog(),
            )
            .unwrap(),
        )
    };
    let (old, now) = (dep("\"a\""), dep("\"b\""));
    let def = ToolDef {
        name: "orders.lookup-order".into(),
        plugin: "orders".into(),
        interface: "acme:shop/orders".into(),
        export: EXPORT.into(),
        function: "lookup-order".into(),
        description: None,
        input_schema: json!({}),
        output_schema: json!({}),
        annotations: Annotations {
            read_only_hint: true,
            destructive_hint: false,
            idempotent_hint: false,
            open_world_hint: false,
        },
        access: old.plugins["orders"].tools["acme:shop/orders"].clone(),
        params: vec![],
    };
    let a = old.agents["a"].clone();
    assert!(def.visible_to(&a), "the old catalog lists it for a");
    assert!(admitted_now(&old, &def, &a));
    assert!(!admitted_now(&now, &def, &a), "revoked: a no longer listed");
    assert!(
        admitted_now(&now, &def, &now.agents["b"]),
        "b is granted now"
    );
    // A plugin no longer declared serves no one.
    let mut gone = (*old).clone();
    gone.plugins.clear();
    assert!(!admitted_now(&gone, &def, &a));
}
