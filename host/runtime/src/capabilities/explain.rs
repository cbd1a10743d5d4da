//! `charter:host/explain`: a plugin explains its recommendation; the text
//! (redacted, cut) is attached to any proposal the step creates. Like a log
//! line it is the plugin's own voice, not an audited call.

use std::sync::Arc;

use serde_json::{Value, json};
use wasmtime::component::LinkerInstance;

use super::{
    Builtin, Capability, Cx, Exec, FnId, Function, HostFunction, Interface, Param, call_ready,
};
use crate::mediator::{Dispatch, MAX_RATIONALE};
use crate::state::HostState;

pub(super) const INTERFACE: Interface = Interface {
    name: "charter:host/explain",
    since: Some("0.1.0"),
    functions: &[Function {
        voice: true,
        ..Function::read("rationale", &[("text", Param::String)])
    }],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |_, _| Ok(Arc::new(Explain)),
};

struct Explain;

impl Capability for Explain {
    fn link(
        &self,
        inst: &mut LinkerInstance<'_, HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        inst.func_wrap(f.name(), move |store: Cx<'_>, (text,): (String,)| {
            call_ready(store, id, json!({"text": text}))?.map_err(wasmtime::Error::msg)?;
            Ok(())
        })
    }

    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch {
        x.m.rationale = Some(x.m.redact_text(super::arg(args, "text"), MAX_RATIONALE));
        Dispatch::Ready(Ok(Value::Null))
    }
}
