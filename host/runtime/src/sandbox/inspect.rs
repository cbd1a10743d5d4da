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
    /// The type of an exported `run` function without the step signature
    /// (`func() -> string`); `None` when there is no `run` or it is a
    /// step's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_type: Option<String>,
    pub imports: Vec<ImportedInterface>,
    pub exports: Vec<Export>,
}

impl Inspection {
    /// Why the component is not a step (`None` if it is one): no `run`
    /// export, or a `run` of another type, with the type a step's must have.
    pub fn step_problem(&self) -> Option<String> {
        if self.world.is_some() {
            return None;
        }
        Some(match &self.run_type {
            Some(ty) => format!(
                "it exports `run`, but as `run: {ty}`; a step exports `{STEP_RUN_SIGNATURE}` (world {STEP_WORLD})"
            ),
            None => format!(
                "no `run` export; a step exports `{STEP_RUN_SIGNATURE}` (world {STEP_WORLD})"
            ),
        })
    }

    /// Every imported function as (instance, function).
    pub fn imported_functions(&self) -> impl Iterator<Item = (&ImportedInterface, &str)> {
        self.imports
            .iter()
            .flat_map(|i| i.functions.iter().map(move |f| (i, f.as_str())))
    }
}

pub const STEP_WORLD: &str = "charter:plugin/step@0.1.0";

/// The signature of a step's `run` export, in WIT.
pub const STEP_RUN_SIGNATURE: &str = "run: func(input: string) -> result<string, step-error>";

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
    let mut run_type = None;
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(f) => {
                if name == "run" {
                    if is_step_signature(&f) {
                        world = Some(STEP_WORLD.to_string());
                    } else {
                        run_type = Some(func_type(&f));
                    }
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
        run_type,
        imports,
        exports,
    }
}

/// A function type in WIT's words: `func(input: string) -> string`.
fn func_type(f: &wasmtime::component::types::ComponentFunc) -> String {
    let params: Vec<String> = f
        .params()
        .map(|(n, t)| format!("{n}: {}", wit_type(&t, 0)))
        .collect();
    let results: Vec<String> = f.results().map(|t| wit_type(&t, 0)).collect();
    let mut out = format!("func({})", params.join(", "));
    match results.as_slice() {
        [] => {}
        [one] => out.push_str(&format!(" -> {one}")),
        many => out.push_str(&format!(" -> ({})", many.join(", "))),
    }
    out
}

/// A value type in WIT's words; nested named types are shortened past a
/// few levels.
fn wit_type(t: &Type, depth: usize) -> String {
    if depth > 3 {
        return "…".into();
    }
    let inner = |t: &Type| wit_type(t, depth + 1);
    let opt = |t: Option<Type>| t.map_or("_".to_string(), |t| inner(&t));
    match t {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", inner(&l.ty())),
        Type::Option(o) => format!("option<{}>", inner(&o.ty())),
        Type::Result(r) => match (r.ok(), r.err()) {
            (None, None) => "result".into(),
            (ok, err) => format!("result<{}, {}>", opt(ok), opt(err)),
        },
        Type::Tuple(tu) => format!(
            "tuple<{}>",
            tu.types().map(|t| inner(&t)).collect::<Vec<_>>().join(", ")
        ),
        Type::Record(r) => format!(
            "record {{ {} }}",
            r.fields()
                .map(|f| format!("{}: {}", f.name, inner(&f.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Variant(v) => format!(
            "variant {{ {} }}",
            v.cases()
                .map(|c| match &c.ty {
                    Some(t) => format!("{}({})", c.name, inner(t)),
                    None => c.name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Flags(f) => format!("flags {{ {} }}", f.names().collect::<Vec<_>>().join(", ")),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Map(m) => format!("map<{}, {}>", inner(&m.key()), inner(&m.value())),
        Type::FixedLengthList(l) => format!("list<{}, {}>", inner(&l.ty()), l.len()),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

fn is_step_signature(f: &wasmtime::component::types::ComponentFunc) -> bool {
    let params: Vec<_> = f.params().map(|(_, t)| t).collect();
    let results: Vec<_> = f.results().collect();
    matches!(params.as_slice(), [Type::String])
        && matches!(results.as_slice(), [Type::Result(r)] if matches!(r.ok(), Some(Type::String)) && matches!(r.err(), Some(Type::Variant(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect_wat(wat: &str) -> Inspection {
        let engine = Engine::default();
        let component = Component::new(&engine, wat).expect("component");
        inspect(&engine, &component, wat.as_bytes())
    }

    /// A `run` of the wrong type is not "no `run` export": the reviewer is
    /// told the type it has and the one a step needs.
    #[test]
    fn a_run_export_of_the_wrong_type_is_named_with_both_types() {
        let i = inspect_wat(
            r#"(component
                 (core module $m (func (export "run") (param i32) (result i32) local.get 0))
                 (core instance $i (instantiate $m))
                 (func (export "run") (param "n" u32) (result u32) (canon lift (core func $i "run"))))"#,
        );
        assert_eq!(i.world, None);
        assert_eq!(i.run_type.as_deref(), Some("func(n: u32) -> u32"));
        let p = i.step_problem().unwrap();
        assert!(
            p.contains("it exports `run`, but as `run: func(n: u32) -> u32`; a step exports `run: func(input: string) -> result<string, step-error>`"),
            "{p}"
        );
        assert!(!p.contains("no `run` export"), "{p}");

        let none = inspect_wat(
            r#"(component
                 (core module $m (func (export "go")))
                 (core instance $i (instantiate $m))
                 (func (export "go") (canon lift (core func $i "go"))))"#,
        );
        assert_eq!(none.run_type, None);
        let p = none.step_problem().unwrap();
        assert!(p.starts_with("no `run` export; a step exports `run: func(input: string) -> result<string, step-error>`"), "{p}");
    }
}
