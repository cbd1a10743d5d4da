//! `charter:host/kv`: a key-value namespace private to the calling plugin
//! (the namespace is the plugin's name, chosen by the host). A write is an
//! event of the step: it is recorded, seen by the step's own later reads
//! (the step's overlay), and applied to the store by the index once the
//! step commits; a failed step's writes never happen.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use wasmtime::component::LinkerInstance;

use super::{
    Builtin, Capability, Cx, Exec, FnId, Function, HostFunction, Interface, Param, Refusal, arg,
    call_ready, over, shape,
};
use crate::mediator::{Dispatch, GuestResult};
use crate::state::HostState;
use charter_audit::Event;

/// Longest kv key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest kv value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;

const KEY: &[(&str, Param)] = &[("key", Param::String)];

pub(super) const INTERFACE: Interface = Interface {
    name: "charter:host/kv",
    since: Some("0.1.0"),
    functions: &[
        Function::read("get", KEY),
        Function::write("set", &[("key", Param::String), ("value", Param::String)]),
        Function::write("delete", KEY),
        Function::read("list-keys", &[("prefix", Param::String)]),
    ],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |_, _| Ok(Arc::new(Kv)),
};

struct Kv;

/// The step's own writes, seen by its later reads (a per-step state).
#[derive(Default)]
struct Overlay(BTreeMap<String, Option<String>>);

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("kv key must be 1 to {MAX_KEY} bytes"));
    }
    Ok(())
}

impl Capability for Kv {
    fn check(
        &self,
        f: &Function,
        args: &Value,
        _: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<(), Refusal> {
        match f.name {
            "list-keys" => over("kv prefix", arg(args, "prefix").len(), MAX_KEY),
            "set" => over("kv key", arg(args, "key").len(), MAX_KEY)
                .and_then(|()| over("kv value", arg(args, "value").len(), MAX_VALUE)),
            _ => over("kv key", arg(args, "key").len(), MAX_KEY),
        }
    }

    fn link(
        &self,
        inst: &mut LinkerInstance<'_, HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        let name = f.name();
        match name {
            "get" => inst.func_wrap(name, move |store: Cx<'_>, (key,): (String,)| {
                let r = call_ready(store, id, json!({"key": key}))?;
                Ok((match r {
                    Ok(Value::Null) => Ok(None),
                    Ok(v) => Ok(Some(shape(v.as_str().map(str::to_string))?)),
                    Err(e) => Err(e),
                },))
            }),
            "set" => inst.func_wrap(
                name,
                move |store: Cx<'_>, (key, value): (String, String)| {
                    let r = call_ready(store, id, json!({"key": key, "value": value}))?;
                    Ok((r.map(|_| ()),))
                },
            ),
            "delete" => inst.func_wrap(name, move |store: Cx<'_>, (key,): (String,)| {
                let r = call_ready(store, id, json!({"key": key}))?;
                Ok((match r {
                    Ok(v) => Ok(shape(v.as_bool())?),
                    Err(e) => Err(e),
                },))
            }),
            "list-keys" => inst.func_wrap(name, move |store: Cx<'_>, (prefix,): (String,)| {
                let r = call_ready(store, id, json!({"prefix": prefix}))?;
                Ok((match r {
                    Ok(v) => Ok(shape(serde_json::from_value::<Vec<String>>(v).ok())?),
                    Err(e) => Err(e),
                },))
            }),
            other => Err(wasmtime::Error::msg(format!("kv has no function {other}"))),
        }
    }

    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch {
        let Exec { m, f, .. } = x;
        let services = m.services.clone();
        let (store, ns) = (&*services.store, m.ctx.name.clone());
        let r: GuestResult = match f.name() {
            "get" => {
                let key = arg(args, "key");
                match m.step_state::<Overlay>().0.get(key) {
                    Some(v) => Ok(json!(v)),
                    None => check_key(key)
                        .and_then(|()| store.get(&ns, key).map_err(|e| e.to_string()))
                        .map(|v| json!(v)),
                }
            }
            "set" => {
                let (key, value) = (arg(args, "key"), arg(args, "value"));
                let r = check_key(key)
                    .and_then(|()| record(m, key.to_string(), Some(value.to_string())));
                if r.is_ok() {
                    m.step_state::<Overlay>()
                        .0
                        .insert(key.to_string(), Some(value.to_string()));
                }
                r.map(|()| Value::Null)
            }
            "delete" => {
                let key = arg(args, "key");
                let existed = match m.step_state::<Overlay>().0.get(key) {
                    Some(v) => Ok(v.is_some()),
                    None => check_key(key).and_then(|()| {
                        store
                            .get(&ns, key)
                            .map(|v| v.is_some())
                            .map_err(|e| e.to_string())
                    }),
                };
                let existed = existed.and_then(|e| record(m, key.to_string(), None).map(|()| e));
                if existed.is_ok() {
                    m.step_state::<Overlay>().0.insert(key.to_string(), None);
                }
                existed.map(Value::Bool)
            }
            _ => {
                let prefix = arg(args, "prefix");
                store
                    .list(&ns, prefix)
                    .map_err(|e| e.to_string())
                    .map(|mut keys| {
                        let overlay = &m.step_state::<Overlay>().0;
                        for (k, v) in overlay
                            .range(prefix.to_string()..)
                            .take_while(|(k, _)| k.starts_with(prefix))
                        {
                            match v {
                                Some(_) if !keys.contains(k) => keys.push(k.clone()),
                                None => keys.retain(|x| x != k),
                                _ => {}
                            }
                        }
                        keys.sort();
                        json!(keys)
                    })
            }
        };
        Dispatch::Ready(r)
    }
}

/// Record a kv write of the step (committed with it). A key or value
/// holding a revealed secret is recorded with `[secret:NAME]` in its place
/// and the names listed; the index restores the value from the secret's
/// source when it applies the event, so the store holds what the plugin
/// wrote and the log never holds the secret.
fn record(
    m: &mut crate::mediator::Mediator,
    key: String,
    value: Option<String>,
) -> Result<(), String> {
    let mut secrets = m.secret_names_in(&key);
    if let Some(v) = &value {
        secrets.extend(m.secret_names_in(v));
        secrets.sort();
        secrets.dedup();
    }
    let (key, value) = if secrets.is_empty() {
        (key, value)
    } else {
        (m.redact(&key), value.as_deref().map(|v| m.redact(v)))
    };
    let overlay = (key.len() + value.as_ref().map_or(0, String::len)) as u64;
    m.push(Event::KvWrite {
        auth: None,
        plugin: m.ctx.name.clone(),
        key,
        value,
        by: None,
        secrets,
    })
    .and_then(|()| m.spend(overlay))
    .map_err(|e| e.to_string())
}
