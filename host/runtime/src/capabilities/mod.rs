//! Capabilities as plug-ins: one module per `charter:host` interface.
//!
//! A capability owns everything about its interface (the shape of Spin's
//! factors): the [`Interface`] it declares (its functions, their parameters
//! and what policy sees of their types, their effect, whether a recorded
//! result may stand in on replay, the first `charter:host` version that
//! serves it), what it reads from `charter.toml` (argument grants such as
//! secret or channel names), how a granted function is linked (typed
//! closures into the one pipeline) and its implementation.
//!
//! The mediator knows no capability by name: it runs one pipeline over
//! [`HostFunction`]s (count → grant re-check → argument checks → journal →
//! policy → record → execute, see `Mediator::dispatch`), and the linker
//! asks the registry to link each granted function. `charter-config`
//! validates a deployment against [`host_catalog`], built here from the
//! modules' interfaces. Adding a capability is one module here, one line
//! in [`BUILTINS`], its WIT (a new `wit/host@VERSION` folder, added to
//! [`SERVED`]), its SDK helpers, and any new section of `charter.toml` it
//! reads (parsed by `charter-config`). See ARCHITECTURE.md, "Adding a
//! capability".
//!
//! Outbound HTTP (`http`: `wasi:http` linked whole, its stages run in the
//! store's `WasiHttpHooks` for a streamed body) and connector functions
//! (`connector`: an interface another plugin provides, with dynamic
//! trampolines; not in the catalog) are modules of the same kind.
//!
//! The host serves every version in [`SERVED`] side by side: a function is
//! linked at each served version from its interface's `since` on, so a
//! plugin built against `charter:host@0.1.0` and one built against `0.2.0`
//! run in one deployment, each linked to the version it imports.
//!
//! **Invariant:** a capability executes only through
//! [`Capability::execute`], which takes an [`Exec`] that only the mediator's
//! pipeline can make (after every check has passed).

pub(crate) mod connector;
mod embeddings;
mod explain;
mod http;
mod knowledge;
mod kv;
mod llm;
pub mod llm_provider;
mod log;
mod notify;
mod secrets;
#[cfg(test)]
mod wit_check;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use charter_config::{Deployment, Effect, FunctionName, PluginSpec};
use serde_json::Value;
use wasmtime::StoreContextMut;
use wasmtime::component::LinkerInstance;

use crate::mediator::{Dispatch, GuestResult, Mediator, Sealed};
use crate::state::HostState;

pub use kv::{MAX_KEY, MAX_VALUE};
pub use llm_provider::{Llm, OfflineLlm, OpenAiLlm};
pub use secrets::read_secret;

/// The `charter:host` versions this host serves, oldest first. A released
/// version's WIT folder (`wit/host@VERSION`) is never edited.
pub const SERVED: &[&str] = &["0.1.0", "0.2.0", "0.3.0"];

/// What policy can see of a parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    String,
    StringList,
    /// A WIT `u32`: Cedar's `Long`.
    U32,
}

impl Param {
    fn policy_type(self) -> charter_policy::ParamType {
        use charter_policy::ParamType;
        match self {
            Param::String => ParamType::String,
            Param::StringList => ParamType::Set(Box::new(ParamType::String)),
            Param::U32 => ParamType::Long,
        }
    }
}

/// One function of a capability interface.
#[derive(Debug)]
pub struct Function {
    pub name: &'static str,
    /// Parameter names (as in WIT) and what policy sees of their types.
    pub params: &'static [(&'static str, Param)],
    /// Whether the function changes state outside the call.
    pub effect: Effect,
    /// Whether a journaled result stands in for the call on replay.
    /// Other calls execute again on replay, checked against the journal.
    pub replay: bool,
    /// The plugin's own voice (a log line, a rationale): not an audited
    /// call; where a group's policies govern it they decide all the same,
    /// and it cannot wait for people.
    pub voice: bool,
    /// Its effect leaves the host: the call's decision is on disk before it
    /// executes, and its result is appended as soon as it is known.
    pub leaves_host: bool,
    /// Whether an approved proposal's result summary may show the result
    /// (not a secret's value or a model's text).
    pub result_shown: bool,
}

impl Function {
    /// A read function with the usual flags.
    pub const fn read(name: &'static str, params: &'static [(&'static str, Param)]) -> Function {
        Function {
            name,
            params,
            effect: Effect::Read,
            replay: false,
            voice: false,
            leaves_host: false,
            result_shown: true,
        }
    }

    /// A write function with the usual flags.
    pub const fn write(name: &'static str, params: &'static [(&'static str, Param)]) -> Function {
        Function {
            effect: Effect::Write,
            ..Function::read(name, params)
        }
    }
}

/// A capability's interface: its name without version, the first version
/// that serves it, its functions.
#[derive(Debug)]
pub struct Interface {
    /// `charter:host/kv`
    pub name: &'static str,
    /// The first `charter:host` version holding this interface; `None`
    /// for an interface of another package that the capability links
    /// whole at whatever version the plugin imports (`wasi:http`): one
    /// catalog entry, named without a version.
    pub since: Option<&'static str>,
    pub functions: &'static [Function],
}

/// One function at one served version: what the linker, the mediator, the
/// journal and policy name.
#[derive(Debug)]
pub struct HostFunction {
    pub interface: &'static Interface,
    pub function: &'static Function,
    /// The `charter:host` version it is linked at.
    pub version: &'static str,
    /// Index of its capability in [`BUILTINS`].
    cap: usize,
    /// `charter:host/kv@0.1.0#get`
    display: String,
    /// `charter:host/kv.get`: the Cedar action.
    action: String,
    fname: FunctionName,
}

impl HostFunction {
    /// `charter:host/kv@0.1.0#get`, as events and errors name it.
    pub fn display(&self) -> &str {
        &self.display
    }
    /// `interface.function` without version: the Cedar action name.
    pub fn action(&self) -> &str {
        &self.action
    }
    pub fn function_name(&self) -> &FunctionName {
        &self.fname
    }
    /// `charter:host/kv@0.1.0`: the instance it is linked in.
    pub fn instance(&self) -> String {
        if self.version.is_empty() {
            return self.interface.name.to_string();
        }
        format!("{}@{}", self.interface.name, self.version)
    }
    pub fn name(&self) -> &'static str {
        self.function.name
    }
    pub fn effect(&self) -> Effect {
        self.function.effect
    }
    /// Parameter names and what policy can see of their types.
    pub fn params(&self) -> Vec<(String, charter_policy::ParamType)> {
        self.function
            .params
            .iter()
            .map(|(n, t)| (n.to_string(), t.policy_type()))
            .collect()
    }
}

/// A host function's index in the [`catalog`]; the same for every host of
/// one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FnId(u16);

/// Every host function at every served version.
#[derive(Debug)]
pub struct Catalog {
    entries: Vec<HostFunction>,
    /// (interface, function, effect) once per function, any version: what
    /// `charter-config` validates a deployment against.
    effects: Vec<(&'static str, &'static str, Effect)>,
}

/// The catalog as `charter-config` sees it: the host's own functions and
/// their effects, declared by the capabilities alone.
impl charter_config::HostCatalog for Catalog {
    fn host_functions(&self) -> &[(&'static str, &'static str, Effect)] {
        &self.effects
    }
    fn host_voice(&self, f: &FunctionName) -> bool {
        self.entries
            .iter()
            .any(|e| e.function.voice && e.interface.name == f.interface && e.name() == f.func)
    }
}

impl Catalog {
    pub fn get(&self, id: FnId) -> &HostFunction {
        &self.entries[id.0 as usize]
    }
    pub fn iter(&self) -> impl Iterator<Item = (FnId, &HostFunction)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, f)| (FnId(i as u16), f))
    }
    /// The function `name` of `instance` (`charter:host/kv@0.1.0`), if the
    /// host serves it at that version.
    pub fn lookup(&self, instance: &str, name: &str) -> Option<FnId> {
        let (iface, version) = instance.split_once('@').unwrap_or((instance, ""));
        self.iter()
            .find(|(_, f)| f.interface.name == iface && f.version == version && f.name() == name)
            .map(|(id, _)| id)
    }
    /// Whether `interface` (no version) is of a package the host's
    /// capabilities own (`charter:host`, `wasi:http`): never a connector's.
    pub fn owns_package(&self, interface: &str) -> bool {
        let package = |i: &str| i.split('/').next().unwrap_or(i).to_string();
        let wanted = package(interface);
        self.entries
            .iter()
            .any(|f| package(f.interface.name) == wanted)
    }

    /// The functions of the interface (no version), one per function at
    /// its newest served version (for policy and reports).
    pub fn actions(&self) -> impl Iterator<Item = &HostFunction> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<&HostFunction> = self.entries.iter().rev().collect();
        out.retain(|f| seen.insert(f.action.clone()));
        out.reverse();
        out.into_iter()
    }
    /// Why `interface@version` does not serve `name`, if it does not:
    /// `None` for a function the host serves, and for interfaces it does
    /// not own.
    pub fn unserved(&self, instance: &str, name: &str) -> Option<String> {
        let (iface, version) = instance.split_once('@').unwrap_or((instance, ""));
        let known: Vec<&HostFunction> = self
            .entries
            .iter()
            .filter(|f| f.interface.name == iface && f.name() == name)
            .collect();
        let first = known.first()?;
        if known.iter().any(|f| f.version == version) {
            return None;
        }
        Some(format!(
            "the host serves {iface}.{name} at charter:host {} (from {} on), not at {version:?}; build the plugin against wit/host@{}",
            known
                .iter()
                .map(|f| f.version)
                .collect::<Vec<_>>()
                .join(", "),
            first.interface.since.unwrap_or_default(),
            SERVED.last().copied().unwrap_or_default(),
        ))
    }
}

/// Semver order of two `x.y.z` versions.
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The catalog of this build's host functions.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut entries = Vec::new();
        let mut add = |cap: usize, iface: &'static Interface, version: &'static str| {
            for function in iface.functions {
                let instance = match version {
                    "" => iface.name.to_string(),
                    v => format!("{}@{v}", iface.name),
                };
                entries.push(HostFunction {
                    interface: iface,
                    function,
                    version,
                    cap,
                    display: format!("{instance}#{}", function.name),
                    action: format!("{}.{}", iface.name, function.name),
                    fname: FunctionName::new(&instance, function.name),
                });
            }
        };
        for version in SERVED {
            for (cap, b) in BUILTINS.iter().enumerate() {
                match b.interface.since {
                    Some(since) if version_key(version) >= version_key(since) => {
                        add(cap, b.interface, version)
                    }
                    _ => {}
                }
            }
        }
        for (cap, b) in BUILTINS.iter().enumerate() {
            if b.interface.since.is_none() {
                add(cap, b.interface, "");
            }
        }
        let effects = BUILTINS
            .iter()
            .flat_map(|b| {
                b.interface
                    .functions
                    .iter()
                    .map(|f| (b.interface.name, f.name, f.effect))
            })
            .collect();
        Catalog { entries, effects }
    })
}

/// The host's catalog as `charter-config` takes it
/// ([`Deployment::parse`](charter_config::Deployment::parse)).
pub fn host_catalog() -> &'static dyn charter_config::HostCatalog {
    catalog()
}

/// Why a call's arguments are refused before anything is decided.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Out of bounds: recorded by digest and size, a limit (exit 3).
    Oversize(String),
    /// An argument the grant does not cover (a secret or channel name):
    /// denied (exit 2).
    Ungranted(String),
}

/// The capability's view of an allowed call: only the mediator's pipeline
/// makes one, after every check has passed.
pub(crate) struct Exec<'a> {
    pub m: &'a mut Mediator,
    pub f: &'static HostFunction,
    pub(crate) _sealed: Sealed,
}

/// One capability: its interface, its grants, its linking and its
/// implementation.
pub(crate) trait Capability: Send + Sync {
    /// The names this plugin's groups grant as arguments (secret names,
    /// channel names), read from `charter.toml`; `None` when the
    /// capability has no argument grants.
    fn argument_grants(&self, _dep: &Deployment, _spec: &PluginSpec) -> Option<BTreeSet<String>> {
        None
    }

    /// Bounds and argument grants, checked before the call is decided or
    /// recorded. `granted` is what [`argument_grants`](Self::argument_grants)
    /// returned for the calling plugin.
    fn check(
        &self,
        _f: &Function,
        _args: &Value,
        _granted: Option<&BTreeSet<String>>,
    ) -> Result<(), Refusal> {
        Ok(())
    }

    /// Define `f` (granted) in its instance: a typed closure that turns the
    /// call into JSON arguments for the pipeline and its reply back.
    fn link(
        &self,
        _inst: &mut LinkerInstance<'_, HostState>,
        _id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg(format!(
            "internal: {} has no linking",
            f.display()
        )))
    }

    /// Define `f` (granted) in `linker`: in its instance by
    /// [`link`](Self::link), unless the capability links its interface
    /// whole (`wasi:http`).
    fn link_into(
        &self,
        linker: &mut wasmtime::component::Linker<HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        let mut inst = linker.instance(&f.instance())?;
        self.link(&mut inst, id, f)
    }

    /// Execute an allowed call.
    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch;
}

/// What building a capability may take from the host's options.
#[derive(Default)]
pub(crate) struct Setup {
    pub llm: Option<Arc<dyn Llm>>,
}

/// How a host builds a capability from its deployment (the error is a
/// whole message, prefixed with the capability's name).
pub(crate) type Build = fn(&Deployment, &mut Setup) -> Result<Arc<dyn Capability>, String>;

/// A built-in capability: its interface and how a host builds it.
pub(crate) struct Builtin {
    pub interface: &'static Interface,
    pub build: Build,
}

/// The capabilities this host is built with, in catalog order.
const BUILTINS: &[Builtin] = &[
    log::BUILTIN,
    kv::BUILTIN,
    secrets::BUILTIN,
    llm::BUILTIN,
    explain::BUILTIN,
    notify::BUILTIN,
    knowledge::BUILTIN,
    http::BUILTIN,
];

/// A host's capabilities, built from its deployment.
pub(crate) struct Registry {
    caps: Vec<Arc<dyn Capability>>,
}

impl Registry {
    pub fn new(dep: &Deployment, mut setup: Setup) -> Result<Registry, String> {
        let caps = BUILTINS
            .iter()
            .map(|b| (b.build)(dep, &mut setup))
            .collect::<Result<_, _>>()?;
        Ok(Registry { caps })
    }

    pub fn capability(&self, f: &HostFunction) -> &Arc<dyn Capability> {
        &self.caps[f.cap]
    }

    /// Argument grants of `spec`, by interface.
    pub fn argument_grants(
        &self,
        dep: &Deployment,
        spec: &PluginSpec,
    ) -> BTreeMap<&'static str, BTreeSet<String>> {
        BUILTINS
            .iter()
            .zip(&self.caps)
            .filter_map(|(b, c)| Some((b.interface.name, c.argument_grants(dep, spec)?)))
            .collect()
    }

    /// Define the granted function `id` in `linker`.
    pub fn link(
        &self,
        linker: &mut wasmtime::component::Linker<HostState>,
        id: FnId,
    ) -> wasmtime::Result<()> {
        let f = catalog().get(id);
        self.capability(f).link_into(linker, id, f)
    }

    /// Define the connector-provided function `func` of `instance` (as
    /// imported) in `linker`: its importer's pipeline, then the connector
    /// (see [`connector`]).
    pub fn link_provided(
        &self,
        linker: &mut wasmtime::component::Linker<HostState>,
        instance: &str,
        func: &str,
    ) -> wasmtime::Result<()> {
        connector::link(linker, instance, func)
    }
}

// ---- helpers for the capabilities' linking closures -------------------------

pub(crate) type Cx<'a> = StoreContextMut<'a, HostState>;

/// Run a call that is always ready (no waiting) through the pipeline.
pub(crate) fn call_ready(
    mut store: Cx<'_>,
    id: FnId,
    args: Value,
) -> wasmtime::Result<GuestResult> {
    let m = &mut store.data_mut().mediator;
    let span = m.call_span(catalog().get(id).display());
    span.in_scope(|| match m.dispatch(id, args)? {
        Dispatch::Ready(r) => Ok(r),
        Dispatch::Wait(_) => Err(wasmtime::Error::msg(
            "internal: synchronous capability returned a pending reply",
        )),
    })
}

/// Run a call of a voice function (a log line) through its pipeline
/// ([`Mediator::dispatch_voice`]): `args` builds its JSON arguments only
/// if policy reads them, `run` executes it once allowed.
pub(crate) fn call_voice(
    mut store: Cx<'_>,
    id: FnId,
    args: impl FnOnce() -> Value,
    run: impl FnOnce(Exec<'_>) -> Dispatch,
) -> wasmtime::Result<GuestResult> {
    let m = &mut store.data_mut().mediator;
    let span = m.call_span(catalog().get(id).display());
    span.in_scope(|| match m.dispatch_voice(id, args, run)? {
        Dispatch::Ready(r) => Ok(r),
        Dispatch::Wait(_) => Err(wasmtime::Error::msg(
            "internal: synchronous capability returned a pending reply",
        )),
    })
}

/// Run a call that may wait (LLM, a webhook) through the pipeline, under
/// the host-call timeout; its result is journaled.
pub(crate) async fn call_waiting(
    store: &mut Cx<'_>,
    id: FnId,
    args: Value,
) -> wasmtime::Result<GuestResult> {
    use tracing::Instrument;
    let m = &mut store.data_mut().mediator;
    let span = m.call_span(catalog().get(id).display());
    async move {
        let r = match m.dispatch(id, args)? {
            Dispatch::Ready(r) => r,
            Dispatch::Wait(fut) => m.wait(fut).await?,
        };
        m.record_result(&r);
        Ok(r)
    }
    .instrument(span)
    .await
}

/// A reply of the expected shape, or a trap.
pub(crate) fn shape<T>(v: Option<T>) -> wasmtime::Result<T> {
    v.ok_or_else(|| wasmtime::Error::msg("internal: capability reply of the wrong shape"))
}

/// A string argument, or an empty one (checked shapes come from typed
/// closures and stored proposals alike).
pub(crate) fn arg<'a>(args: &'a Value, name: &str) -> &'a str {
    // A scan of the few arguments (at most 8, a test checks) instead of
    // a hashed lookup: cheaper on every call; keys are unique, so the
    // same value.
    args.as_object()
        .and_then(|m| m.iter().find(|(k, _)| *k == name))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// `Err` unless `name` is one of the `granted` names of its kind (`kind`:
/// "secret", "channel"), naming it and what is granted.
pub(crate) fn granted_name(
    kind: &str,
    name: &str,
    granted: Option<&BTreeSet<String>>,
) -> Result<(), Refusal> {
    if granted.is_some_and(|g| g.contains(name)) {
        return Ok(());
    }
    let granted: Vec<&str> = granted.into_iter().flatten().map(String::as_str).collect();
    Err(Refusal::Ungranted(format!(
        "{kind} {name:?} is not granted (granted {kind}s: [{}])",
        granted.join(", ")
    )))
}

/// `Err` when `len` is over `max`, naming `what`.
pub(crate) fn over(what: &str, len: usize, max: usize) -> Result<(), Refusal> {
    if len > max {
        Err(Refusal::Oversize(format!(
            "{what} is {len} bytes, over the {max}-byte limit"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_consistent() {
        for (id, f) in catalog().iter() {
            assert_eq!(f.display(), f.function_name().to_string());
            assert_eq!(catalog().lookup(&f.instance(), f.name()), Some(id));
            assert!(f.function.params.len() <= 8);
        }
        assert!(catalog().unserved("charter:host/kv@0.1.0", "get").is_none());
        assert!(catalog().unserved("charter:host/kv@9.0.0", "get").is_some());
        // notify is served from 0.2.0 on, kv at both versions.
        assert!(
            catalog()
                .lookup("charter:host/notify@0.1.0", "send")
                .is_none()
        );
        assert!(
            catalog()
                .lookup("charter:host/notify@0.2.0", "send")
                .is_some()
        );
        assert!(catalog().lookup("charter:host/kv@0.2.0", "get").is_some());
        let why = catalog()
            .unserved("charter:host/notify@0.1.0", "send")
            .unwrap();
        assert!(why.contains("from 0.2.0 on"), "{why}");
        // wasi:http is one unversioned entry, linked whole.
        let http = catalog()
            .lookup("wasi:http/outgoing-handler", "handle")
            .unwrap();
        assert_eq!(
            catalog().get(http).display(),
            "wasi:http/outgoing-handler#handle"
        );
        assert!(catalog().owns_package("wasi:http/types"));
        assert!(catalog().owns_package("charter:host/anything"));
        assert!(!catalog().owns_package("acme:payments/refunds"));
    }

    /// What `charter-config` validates deployments against is what the
    /// capabilities declare: every function once, with its effect, and
    /// the effects the configuration's documentation promises.
    #[test]
    fn config_sees_the_capabilities_catalog() {
        let seen = host_catalog().host_functions();
        assert_eq!(seen.len(), catalog().actions().count());
        for f in catalog().actions() {
            assert_eq!(
                host_catalog().host_function_effect(f.function_name()),
                Some(f.effect()),
                "{}",
                f.action()
            );
        }
        let writes: BTreeSet<String> = seen
            .iter()
            .filter(|(_, _, e)| *e == Effect::Write)
            .map(|(i, n, _)| format!("{i}.{n}"))
            .collect();
        let documented: BTreeSet<String> = [
            "charter:host/kv.set",
            "charter:host/kv.delete",
            "charter:host/notify.send",
            "wasi:http/outgoing-handler.handle",
        ]
        .map(String::from)
        .into();
        assert_eq!(writes, documented);
    }
}
