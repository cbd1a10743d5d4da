//! JSON Schema (2020-12) of WIT types, for MCP tools' `inputSchema` and
//! `outputSchema`. The shapes are those of [`crate::values::to_json`]
//! (records are objects, variants `{"tag", "value"}`, results `{"ok"}` /
//! `{"err"}`, options `null` or the value), so what policy sees, what the
//! audit log records and what an agent sends are one form.
//!
//! Integers carry their width's bounds, `required` lists only non-option
//! fields, enums are `enum`, variants `oneOf` with a `const` tag, and WIT
//! doc comments (from the component's `package-docs` section, walked in
//! step with the wasmtime type) become `description`s.

use serde_json::{Map, Value, json};
use wasmtime::component::types::Type;

/// The WIT side of a type, for its docs: the resolve and the type there.
#[derive(Clone, Copy)]
pub(crate) struct Wit<'a> {
    pub resolve: &'a wit_parser::Resolve,
    pub ty: &'a wit_parser::Type,
}

impl<'a> Wit<'a> {
    /// The type definition behind aliases, if the type is a named or
    /// anonymous definition.
    fn def(self) -> Option<&'a wit_parser::TypeDef> {
        let mut ty = self.ty;
        loop {
            let wit_parser::Type::Id(id) = ty else {
                return None;
            };
            let def = &self.resolve.types[*id];
            match &def.kind {
                wit_parser::TypeDefKind::Type(t) => ty = t,
                _ => return Some(def),
            }
        }
    }

    fn at(self, ty: &'a wit_parser::Type) -> Wit<'a> {
        Wit {
            resolve: self.resolve,
            ty,
        }
    }

    fn docs(self) -> Option<&'a str> {
        self.def().and_then(|d| d.docs.contents.as_deref())
    }
}

/// Whether the schema is of what an agent sends (floats are numbers) or
/// of what a tool returns (a float may also be `"NaN"`, `"inf"`, `"-inf"`,
/// which JSON numbers cannot hold).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Input,
    Output,
}

fn with_doc(mut s: Value, doc: Option<&str>) -> Value {
    if let (Some(d), Some(o)) = (
        doc.map(str::trim).filter(|d| !d.is_empty()),
        s.as_object_mut(),
    ) {
        o.entry("description").or_insert_with(|| json!(d));
    }
    s
}

fn int(min: i128, max: i128) -> Value {
    json!({"type": "integer", "minimum": num(min), "maximum": num(max)})
}

fn num(n: i128) -> Value {
    if n < 0 {
        json!(n as i64)
    } else {
        json!(n as u64)
    }
}

/// The schema of `ty`; `Err` names a type no tool can carry (resources,
/// maps, async types).
/// Long on purpose: one arm per WIT type kind, as in `values::from_json`.
pub(crate) fn schema(ty: &Type, wit: Option<Wit<'_>>, dir: Dir) -> Result<Value, String> {
    let doc = wit.and_then(Wit::docs);
    let def = wit.and_then(Wit::def).map(|d| &d.kind);
    let s = match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::U8 => int(0, u8::MAX.into()),
        Type::U16 => int(0, u16::MAX.into()),
        Type::U32 => int(0, u32::MAX.into()),
        Type::U64 => int(0, u64::MAX.into()),
        Type::S8 => int(i8::MIN.into(), i8::MAX.into()),
        Type::S16 => int(i16::MIN.into(), i16::MAX.into()),
        Type::S32 => int(i32::MIN.into(), i32::MAX.into()),
        Type::S64 => int(i64::MIN.into(), i64::MAX.into()),
        Type::Float32 | Type::Float64 => match dir {
            Dir::Input if matches!(ty, Type::Float32) => {
                json!({"type": "number", "minimum": f32::MIN, "maximum": f32::MAX})
            }
            Dir::Input => json!({"type": "number"}),
            Dir::Output => {
                json!({"anyOf": [{"type": "number"}, {"enum": ["NaN", "inf", "-inf"]}]})
            }
        },
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::List(l) => {
            let inner = match def {
                Some(wit_parser::TypeDefKind::List(t)) => wit.map(|w| w.at(t)),
                _ => None,
            };
            json!({"type": "array", "items": schema(&l.ty(), inner, dir)?})
        }
        Type::Record(r) => {
            let fields = match def {
                Some(wit_parser::TypeDefKind::Record(r)) => Some(&r.fields),
                _ => None,
            };
            let (mut props, mut required) = (Map::new(), Vec::new());
            for f in r.fields() {
                let wf = fields.and_then(|fs| fs.iter().find(|x| x.name == f.name));
                let fs = schema(&f.ty, wf.and(wit).zip(wf).map(|(w, x)| w.at(&x.ty)), dir)?;
                let fs = with_doc(fs, wf.and_then(|x| x.docs.contents.as_deref()));
                if !matches!(f.ty, Type::Option(_)) {
                    required.push(json!(f.name));
                }
                props.insert(f.name.to_string(), fs);
            }
            json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
        }
        Type::Tuple(t) => {
            let wts = match def {
                Some(wit_parser::TypeDefKind::Tuple(t)) => Some(&t.types),
                _ => None,
            };
            let items = t
                .types()
                .enumerate()
                .map(|(i, x)| {
                    schema(
                        &x,
                        wts.and(wit)
                            .zip(wts.and_then(|w| w.get(i)))
                            .map(|(w, t)| w.at(t)),
                        dir,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let n = items.len();
            json!({"type": "array", "prefixItems": items, "items": false, "minItems": n, "maxItems": n})
        }
        Type::Variant(v) => {
            let cases = match def {
                Some(wit_parser::TypeDefKind::Variant(v)) => Some(&v.cases),
                _ => None,
            };
            let mut one = Vec::new();
            for c in v.cases() {
                let wc = cases.and_then(|cs| cs.iter().find(|x| x.name == c.name));
                let mut props = Map::new();
                props.insert("tag".into(), json!({"const": c.name}));
                let mut required = vec![json!("tag")];
                match &c.ty {
                    Some(t) => {
                        let wt = wc.and_then(|x| x.ty.as_ref());
                        props.insert(
                            "value".into(),
                            schema(t, wt.and(wit).zip(wt).map(|(w, t)| w.at(t)), dir)?,
                        );
                        required.push(json!("value"));
                    }
                    None => {
                        props.insert("value".into(), json!({"type": "null"}));
                    }
                }
                one.push(with_doc(
                    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false}),
                    wc.and_then(|x| x.docs.contents.as_deref()),
                ));
            }
            json!({"oneOf": one})
        }
        Type::Enum(e) => {
            let names: Vec<&str> = e.names().collect();
            let mut s = json!({"type": "string", "enum": names});
            if let Some(wit_parser::TypeDefKind::Enum(we)) = def {
                let described: Vec<String> = we
                    .cases
                    .iter()
                    .filter_map(|c| {
                        Some(format!(
                            "{}: {}",
                            c.name,
                            c.docs.contents.as_deref()?.trim()
                        ))
                    })
                    .collect();
                if !described.is_empty() {
                    let head = doc.map(|d| format!("{}\n", d.trim())).unwrap_or_default();
                    s["description"] = json!(format!("{head}{}", described.join("\n")));
                }
            }
            s
        }
        Type::Option(o) => {
            let inner = match def {
                Some(wit_parser::TypeDefKind::Option(t)) => wit.map(|w| w.at(t)),
                _ => None,
            };
            json!({"anyOf": [schema(&o.ty(), inner, dir)?, {"type": "null"}]})
        }
        Type::Result(r) => {
            let (wok, werr) = match def {
                Some(wit_parser::TypeDefKind::Result(r)) => (r.ok.as_ref(), r.err.as_ref()),
                _ => (None, None),
            };
            let arm = |key: &str,
                       t: Option<Type>,
                       w: Option<&wit_parser::Type>|
             -> Result<Value, String> {
                let s = match t {
                    Some(t) => schema(&t, w.and(wit).zip(w).map(|(x, t)| x.at(t)), dir)?,
                    None => json!({"type": "null"}),
                };
                Ok(
                    json!({"type": "object", "properties": {key: s}, "required": [key], "additionalProperties": false}),
                )
            };
            json!({"oneOf": [arm("ok", r.ok(), wok)?, arm("err", r.err(), werr)?]})
        }
        Type::Flags(f) => {
            let names: Vec<&str> = f.names().collect();
            json!({"type": "array", "items": {"enum": names}, "uniqueItems": true})
        }
        other => {
            return Err(format!(
                "a {} cannot be a tool's argument or result",
                crate::values::type_name(other)
            ));
        }
    };
    Ok(with_doc(s, doc))
}
