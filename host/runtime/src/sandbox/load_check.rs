//! The load-time check (enforcement point 1) and what a plugin is linked
//! with: every imported function must be covered by a grant (at a version
//! the host serves) or by the inert WASI baseline, or the plugin is refused
//! before any of its code runs.

use std::collections::BTreeSet;

use charter_config::{Deployment, FunctionName, PluginSpec, WasiMode};

use crate::capabilities::{self, FnId, catalog};
use crate::error::UngrantedImport;
use crate::inspect::{ImportClass, Inspection};
use crate::sandbox::linker::GrantSet;

/// The load-time check (enforcement point 1): one entry per imported
/// function that neither a grant nor the inert WASI baseline covers.
pub fn check_imports(
    dep: &Deployment,
    spec: &PluginSpec,
    insp: &Inspection,
) -> Vec<UngrantedImport> {
    let groups: Vec<_> = dep.granted_groups(spec).collect();
    let http = grants_http(dep, spec);
    let mut out = Vec::new();
    // An interface imported for its resource types alone still needs linking.
    let resource_only = insp
        .imports
        .iter()
        .filter(|i| i.functions.is_empty() && !i.resources.is_empty())
        .flat_map(|i| i.resources.iter().map(move |r| (i, r.as_str())));
    for (iface, func) in insp.imported_functions().chain(resource_only) {
        let f = FunctionName::new(&iface.interface, func);
        let mut hint = None;
        let covered = match iface.class {
            ImportClass::TypesOnly => true,
            ImportClass::WasiBaseline => {
                hint = Some("the plugin is set to wasi = \"none\"; remove that to link the inert WASI baseline".into());
                spec.wasi == WasiMode::Inert
            }
            ImportClass::Capability if f.interface == "wasi:http/types" => {
                hint = Some(
                    "wasi:http/types comes with a grant of wasi:http/outgoing-handler.handle"
                        .into(),
                );
                http
            }
            // A host function must be served at the version imported (a
            // plugin built against 0.1.0 cannot import what 0.2.0 added).
            ImportClass::Capability if f.interface.starts_with("charter:host/") => {
                hint = capabilities::catalog().unserved(&iface.interface, func);
                hint.is_none() && groups.iter().any(|g| g.grants(&f))
            }
            ImportClass::Capability => groups.iter().any(|g| g.grants(&f)),
        };
        if !covered {
            out.push(UngrantedImport {
                plugin: spec.name.clone(),
                function: f.to_string(),
                granted_groups: spec.groups.clone(),
                groups_that_grant: dep
                    .groups_granting(&f)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                hint,
            });
        }
    }
    out
}

fn grants_http(dep: &Deployment, spec: &PluginSpec) -> bool {
    let handle = FunctionName::new("wasi:http/outgoing-handler", "handle");
    dep.granted_groups(spec).any(|g| g.grants(&handle))
}

/// The functions a plugin is linked with.
pub(crate) fn grant_set(dep: &Deployment, spec: &PluginSpec) -> GrantSet {
    // Each granted function at every version the host serves it: a plugin
    // imports one of them (the load check has refused any other).
    let host: BTreeSet<FnId> = catalog()
        .iter()
        .filter(|(_, f)| {
            dep.granted_groups(spec)
                .any(|g| g.grants(f.function_name()))
        })
        .map(|(id, _)| id)
        .collect();
    GrantSet {
        wasi: spec.wasi,
        host,
        connectors: BTreeSet::new(),
    }
}
