//! `charter:host/secrets`: secrets granted to the calling plugin by name
//! (`secrets = [...]` of its groups, declared under `[secrets]`). A value
//! goes to the guest only: from then on the step's redactor replaces it in
//! everything that leaves the step, and its result is never journaled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use charter_config::{Deployment, PluginSpec, SecretSource};
use serde_json::{Value, json};
use wasmtime::component::LinkerInstance;

use super::{
    Builtin, Capability, Cx, Exec, FnId, Function, HostFunction, Interface, MAX_KEY, Param,
    Refusal, arg, call_ready, granted_name, over, shape,
};
use crate::mediator::Dispatch;
use crate::state::HostState;

pub(super) const INTERFACE: Interface = Interface {
    name: "charter:host/secrets",
    since: Some("0.1.0"),
    functions: &[Function {
        result_shown: false,
        ..Function::read("get", &[("name", Param::String)])
    }],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |_, _| Ok(Arc::new(Secrets)),
};

struct Secrets;

impl Capability for Secrets {
    fn argument_grants(&self, dep: &Deployment, spec: &PluginSpec) -> Option<BTreeSet<String>> {
        Some(dep.granted_secrets(spec))
    }

    fn check(
        &self,
        _: &Function,
        args: &Value,
        granted: Option<&BTreeSet<String>>,
    ) -> Result<(), Refusal> {
        let name = arg(args, "name");
        over("secret name", name.len(), MAX_KEY)?;
        granted_name("secret", name, granted)
    }

    fn link(
        &self,
        inst: &mut LinkerInstance<'_, HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        inst.func_wrap(f.name(), move |store: Cx<'_>, (name,): (String,)| {
            let r = call_ready(store, id, json!({"name": name}))?;
            Ok((match r {
                Ok(v) => Ok(shape(v.as_str().map(str::to_string))?),
                Err(e) => Err(e),
            },))
        })
    }

    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch {
        let name = arg(args, "name");
        let r = read_secret(&x.m.ctx.config.deployment.secrets, name);
        if let Ok(v) = &r {
            x.m.reveal(name, v);
        }
        Dispatch::Ready(r.map(Value::String))
    }
}

/// Read a secret's value from its source. Errors name the secret, never
/// its value. Plugins reach this only through the pipeline; the host uses
/// it for its own needs (the LLM provider's API key).
pub fn read_secret(secrets: &BTreeMap<String, SecretSource>, name: &str) -> Result<String, String> {
    let src = secrets
        .get(name)
        .ok_or_else(|| format!("secret {name:?} is not declared in the deployment"))?;
    match src {
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("secret {name:?}: environment variable {var} is not set")),
        SecretSource::File(p) => std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("secret {name:?}: cannot read {}: {e}", p.display())),
    }
}
