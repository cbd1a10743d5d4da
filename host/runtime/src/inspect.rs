//! What a component is and what it asks for, read from its type.

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentItem, Type};

/// `sha256:<hex>` of the bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What the first eight bytes say the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    Component,
    CoreModule,
    NotWasm,
}

/// Classify bytes by the WebAssembly preamble, before any parser sees them.
pub fn binary_kind(bytes: &[u8]) -> BinaryKind {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => BinaryKind::CoreModule,
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => BinaryKind::Component,
        _ => BinaryKind::NotWasm,
    }
}

/// How the host treats an imported interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportClass {
    /// Part of the inert WASI baseline: linked with no files, environment,
    /// arguments or network (unless the plugin is `wasi = "none"`).
    WasiBaseline,
    /// A real capability: linked only when a group grants it.
    Capability,
    /// Only types, no functions: nothing to grant.
    TypesOnly,
}

/// The WASI interfaces that make up the inert baseline.
pub const WASI_BASELINE_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:filesystem",
    "wasi:sockets",
];

pub fn is_wasi_baseline(interface: &str) -> bool {
    let pkg = interface.split('/').next().unwrap_or("");
    WASI_BASELINE_PACKAGES.contains(&pkg)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportedInterface {
    /// As the component names it, with version: `charter:host/kv@0.1.0`.
    pub interface: String,
    pub class: ImportClass,
    /// Function names imported from it (resource methods as
    /// `[method]resource.name`).
    pub functions: Vec<String>,
    /// Resource types imported from it.
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Export {
    pub name: String,
    /// `function` or `instance`.
    pub kind: &'static str,
    /// For an instance, its functions; for a function, its own name.
    pub functions: Vec<String>,
}

/// The reviewer's view of one component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub digest: String,
    pub size: u64,
    /// `charter:plugin/step@0.1.0` when the component exports a `run` with
    /// the step signature.
    pub world: Option<String>,
    pub imports: Vec<ImportedInterface>,
    pub exports: Vec<Export>,
}

impl Inspection {
    /// Every imported function as (instance, function).
    pub fn imported_functions(&self) -> impl Iterator<Item = (&ImportedInterface, &str)> {
        self.imports
            .iter()
            .flat_map(|i| i.functions.iter().map(move |f| (i, f.as_str())))
    }
}

pub const STEP_WORLD: &str = "charter:plugin/step@0.1.0";

/// Read imports and exports from a compiled component's type.
pub fn inspect(engine: &Engine, component: &Component, bytes: &[u8]) -> Inspection {
    let ty = component.component_type();
    let mut imports = Vec::new();
    for (name, item) in ty.imports(engine) {
        let (functions, resources) = match &item.ty {
            ComponentItem::ComponentInstance(inst) => {
                let mut fs = Vec::new();
                let mut rs = Vec::new();
                for (n, it) in inst.exports(engine) {
                    match it.ty {
                        ComponentItem::ComponentFunc(_) => fs.push(n.to_string()),
                        ComponentItem::Resource(_) => rs.push(n.to_string()),
                        _ => {}
                    }
                }
                (fs, rs)
            }
            // A bare function import: named after itself.
            ComponentItem::ComponentFunc(_) => (vec![name.to_string()], vec![]),
            _ => (vec![], vec![]),
        };
        let class = if functions.is_empty() && resources.is_empty() {
            ImportClass::TypesOnly
        } else if is_wasi_baseline(name.split('@').next().unwrap_or(name)) {
            ImportClass::WasiBaseline
        } else {
            ImportClass::Capability
        };
        imports.push(ImportedInterface {
            interface: name.to_string(),
            class,
            functions,
            resources,
        });
    }
    imports.sort_by(|a, b| a.interface.cmp(&b.interface));

    let mut exports = Vec::new();
    let mut world = None;
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(f) => {
                if name == "run" && is_step_signature(&f) {
                    world = Some(STEP_WORLD.to_string());
                }
                exports.push(Export {
                    name: name.to_string(),
                    kind: "function",
                    functions: vec![name.to_string()],
                });
            }
            ComponentItem::ComponentInstance(inst) => {
                let functions = inst
                    .exports(engine)
                    .filter(|(_, it)| matches!(it.ty, ComponentItem::ComponentFunc(_)))
                    .map(|(n, _)| n.to_string())
                    .collect();
                exports.push(Export {
                    name: name.to_string(),
                    kind: "instance",
                    functions,
                });
            }
            _ => {}
        }
    }
    Inspection {
        digest: digest(bytes),
        size: bytes.len() as u64,
        world,
        imports,
        exports,
    }
}

fn is_step_signature(f: &wasmtime::component::types::ComponentFunc) -> bool {
    let params: Vec<_> = f.params().map(|(_, t)| t).collect();
    let results: Vec<_> = f.results().collect();
    matches!(params.as_slice(), [Type::String])
        && matches!(results.as_slice(), [Type::Result(r)] if matches!(r.ok(), Some(Type::String)) && matches!(r.err(), Some(Type::Variant(_))))
}
