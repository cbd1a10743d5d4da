//! The hand-declared host bindings equal `wit/` (tests only).
//!
//! For every served version, a component is made from the WIT files alone
//! (`wit/host@VERSION`: a world importing every interface, encoded around
//! a dummy core module), and linked against a linker holding every
//! catalog function at that version, each defined by its capability's
//! typed closure. Wasmtime checks each closure's parameter and result
//! types against the WIT's when it instantiates; the test also checks
//! that the WIT's functions are exactly the catalog's, with the
//! catalog's parameter names and policy types.

use std::collections::BTreeSet;
use std::path::PathBuf;

use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, Linker};
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};

use super::{Param, Registry, SERVED, Setup, catalog};
use crate::state::HostState;

fn wit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../wit")
}

/// A component importing every interface of `wit/host@version`, made
/// from the WIT alone.
fn component_of(engine: &wasmtime::Engine, version: &str) -> Component {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(wit_dir().join(format!("host@{version}")))
        .unwrap();
    let imports: String = resolve.packages[pkg]
        .interfaces
        .keys()
        .map(|name| format!("import charter:host/{name}@{version};\n"))
        .collect();
    let world_pkg = resolve
        .push_str(
            "all.wit",
            &format!("package test:all;\nworld all {{\n{imports}}}\n"),
        )
        .unwrap();
    let world = resolve.select_world(&[world_pkg], Some("all")).unwrap();
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).unwrap();
    let bytes = ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    Component::new(engine, &bytes).unwrap()
}

fn engine() -> wasmtime::Engine {
    crate::sandbox::engine::build_engine(&crate::sandbox::engine::EngineOptions {
        pooling: false,
        ..Default::default()
    })
    .unwrap()
}

fn registry() -> Registry {
    let dep = charter_config::Deployment::parse(
        "[deployment]\nname = \"t\"\nphase = 1\n",
        std::path::Path::new("/nonexistent/charter.toml"),
        super::host_catalog(),
    )
    .unwrap();
    Registry::new(&dep, Setup::default()).unwrap()
}

#[test]
fn host_bindings_equal_the_wit_files_of_every_served_version() {
    let engine = engine();
    let registry = registry();
    for version in SERVED {
        let component = component_of(&engine, version);
        // Every function the WIT declares, with its parameters.
        let mut wit = BTreeSet::new();
        for (instance, item) in component.component_type().imports(&engine) {
            let ComponentItem::ComponentInstance(inst) = item.ty else {
                continue;
            };
            for (name, item) in inst.exports(&engine) {
                let ComponentItem::ComponentFunc(func) = item.ty else {
                    continue;
                };
                let id = catalog()
                    .lookup(instance, name)
                    .unwrap_or_else(|| panic!("{instance}#{name} is in wit/ but not served"));
                let f = catalog().get(id);
                let params: Vec<(String, Type)> =
                    func.params().map(|(n, t)| (n.to_string(), t)).collect();
                assert_eq!(params.len(), f.function.params.len(), "{}", f.display());
                for ((n, t), (sn, sp)) in params.iter().zip(f.function.params) {
                    assert_eq!(n, sn, "{}", f.display());
                    let fits = match (sp, t) {
                        (Param::String, Type::String | Type::Enum(_)) => true,
                        (Param::StringList, Type::List(l)) => matches!(l.ty(), Type::String),
                        (Param::U32, Type::U32) => true,
                        _ => false,
                    };
                    assert!(fits, "{}: {n} is {t:?} in WIT, {sp:?} here", f.display());
                }
                wit.insert(f.display().to_string());
            }
        }
        let served: BTreeSet<String> = catalog()
            .iter()
            .filter(|(_, f)| f.version == *version)
            .map(|(_, f)| f.display().to_string())
            .collect();
        assert_eq!(wit, served, "charter:host@{version}: wit/ and the catalog");
        // Every typed closure, checked by wasmtime against the WIT's types
        // (parameters and results).
        let mut linker = Linker::<HostState>::new(&engine);
        for (id, _) in catalog().iter().filter(|(_, f)| f.version == *version) {
            registry.link(&mut linker, id).unwrap();
        }
        if let Err(e) = linker.instantiate_pre(&component) {
            panic!("charter:host@{version}: a host binding differs from wit/: {e:#}");
        }
    }
}

/// The check above can fail: a binding with another result type is
/// refused against the same WIT.
#[test]
fn a_binding_that_differs_from_the_wit_is_refused() {
    let engine = engine();
    let registry = registry();
    let component = component_of(&engine, SERVED[0]);
    let mut linker = Linker::<HostState>::new(&engine);
    for (id, f) in catalog().iter().filter(|(_, f)| f.version == SERVED[0]) {
        if f.action() == "charter:host/kv.delete" {
            // WIT: result<bool, string>; declared here: result<_, string>.
            linker
                .instance(&f.instance())
                .unwrap()
                .func_wrap(f.name(), |_, (_key,): (String,)| {
                    Ok((Ok::<(), String>(()),))
                })
                .unwrap();
            continue;
        }
        registry.link(&mut linker, id).unwrap();
    }
    let err = linker.instantiate_pre(&component).err().expect("refused");
    assert!(format!("{err:#}").contains("delete"), "{err:#}");
}
