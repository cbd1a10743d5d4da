//! Linking by grant (enforcement point 2).
//!
//! Each plugin gets its own [`Linker`] holding exactly: the host functions
//! its groups grant (each defined by its capability, `capabilities/`, at
//! its served version; `wasi:http` is one of them), the connector
//! functions it imports and its groups grant (defined by the connector
//! capability), and the inert WASI baseline unless the plugin is
//! `wasi = "none"`. This file names no capability; nothing else is defined.
//! **Invariant:** no import is ever defined as a trap stub: an import
//! that is not granted stays undefined and the component cannot instantiate.

use std::collections::BTreeSet;

use charter_config::WasiMode;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::capabilities::{FnId, Registry};
use crate::state::HostState;

/// What a plugin is linked with. Two plugins with equal grant sets (and
/// equal bytes) share one `InstancePre`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GrantSet {
    pub wasi: WasiMode,
    /// Granted host functions, each at one served version.
    pub host: BTreeSet<FnId>,
    /// Connector-provided functions: (instance as imported, function).
    pub connectors: BTreeSet<(String, String)>,
}

pub(crate) fn build(
    engine: &Engine,
    capabilities: &Registry,
    grants: &GrantSet,
) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    if grants.wasi == WasiMode::Inert {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    }
    for f in &grants.host {
        capabilities.link(&mut linker, *f)?;
    }
    for (instance, func) in &grants.connectors {
        capabilities.link_provided(&mut linker, instance, func)?;
    }
    Ok(linker)
}
