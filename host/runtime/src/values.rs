//! Component values as JSON (for policy context, audit records and stored
//! proposals) and back, guided by the WIT type.

use charter_policy::ParamType;
use serde_json::{Map, Value, json};
use wasmtime::component::Val;
use wasmtime::component::types::Type;

/// A component value as JSON. Records are objects (WIT field names),
/// variants `{"tag", "value"}`, results `{"ok"}` / `{"err"}`, options
/// `null` or the value, enums and chars strings.
pub fn to_json(v: &Val) -> Value {
    match v {
        Val::Bool(b) => json!(b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(n) => json!(n),
        Val::Float64(n) => json!(n),
        Val::Char(c) => json!(c.to_string()),
        Val::String(s) => json!(s),
        Val::List(l) | Val::Tuple(l) | Val::FixedLengthList(l) => {
            Value::Array(l.iter().map(to_json).collect())
        }
        Val::Map(m) => Value::Array(
            m.iter()
                .map(|(k, v)| json!([to_json(k), to_json(v)]))
                .collect(),
        ),
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Val::Variant(tag, payload) => json!({"tag": tag, "value": payload.as_deref().map(to_json)}),
        Val::Enum(name) => json!(name),
        Val::Option(o) => o.as_deref().map_or(Value::Null, to_json),
        Val::Result(Ok(v)) => json!({"ok": v.as_deref().map(to_json)}),
        Val::Result(Err(v)) => json!({"err": v.as_deref().map(to_json)}),
        Val::Flags(f) => json!(f),
        _ => json!("<resource>"),
    }
}

/// Named parameters as one JSON object.
pub fn params_json(names: &[String], vals: &[Val]) -> Value {
    Value::Object(
        names
            .iter()
            .zip(vals)
            .map(|(n, v)| (n.clone(), to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// JSON back to a value of type `ty`.
pub fn from_json(v: &Value, ty: &Type) -> Result<Val, String> {
    let bad = || format!("JSON {v} does not fit the WIT type {}", type_name(ty));
    let int = |v: &Value| v.as_i64().ok_or_else(bad);
    let uint = |v: &Value| v.as_u64().ok_or_else(bad);
    Ok(match ty {
        Type::Bool => Val::Bool(v.as_bool().ok_or_else(bad)?),
        Type::S8 => Val::S8(int(v)?.try_into().map_err(|_| bad())?),
        Type::U8 => Val::U8(uint(v)?.try_into().map_err(|_| bad())?),
        Type::S16 => Val::S16(int(v)?.try_into().map_err(|_| bad())?),
        Type::U16 => Val::U16(uint(v)?.try_into().map_err(|_| bad())?),
        Type::S32 => Val::S32(int(v)?.try_into().map_err(|_| bad())?),
        Type::U32 => Val::U32(uint(v)?.try_into().map_err(|_| bad())?),
        Type::S64 => Val::S64(int(v)?),
        Type::U64 => Val::U64(uint(v)?),
        Type::Float32 => Val::Float32(v.as_f64().ok_or_else(bad)? as f32),
        Type::Float64 => Val::Float64(v.as_f64().ok_or_else(bad)?),
        Type::Char => Val::Char(v.as_str().and_then(|s| s.chars().next()).ok_or_else(bad)?),
        Type::String => Val::String(v.as_str().ok_or_else(bad)?.to_string()),
        Type::List(l) => {
            let t = l.ty();
            Val::List(
                v.as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .map(|x| from_json(x, &t))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(r) => {
            let o = v.as_object().ok_or_else(bad)?;
            Val::Record(
                r.fields()
                    .map(|f| {
                        Ok((
                            f.name.to_string(),
                            from_json(o.get(f.name).unwrap_or(&Value::Null), &f.ty)?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        Type::Tuple(t) => {
            let a = v.as_array().ok_or_else(bad)?;
            Val::Tuple(
                t.types()
                    .zip(a)
                    .map(|(t, x)| from_json(x, &t))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Variant(var) => {
            let tag = v["tag"].as_str().ok_or_else(bad)?;
            let case = var.cases().find(|c| c.name == tag).ok_or_else(bad)?;
            let payload = match &case.ty {
                Some(t) => Some(Box::new(from_json(&v["value"], t)?)),
                None => None,
            };
            Val::Variant(tag.to_string(), payload)
        }
        Type::Enum(e) => {
            let s = v.as_str().ok_or_else(bad)?;
            e.names().find(|n| *n == s).ok_or_else(bad)?;
            Val::Enum(s.to_string())
        }
        Type::Option(o) => match v {
            Value::Null => Val::Option(None),
            x => Val::Option(Some(Box::new(from_json(x, &o.ty())?))),
        },
        Type::Result(r) => {
            let conv = |x: &Value, t: Option<Type>| -> Result<Option<Box<Val>>, String> {
                match t {
                    Some(t) => Ok(Some(Box::new(from_json(x, &t)?))),
                    None => Ok(None),
                }
            };
            if let Some(x) = v.get("ok") {
                Val::Result(Ok(conv(x, r.ok())?))
            } else if let Some(x) = v.get("err") {
                Val::Result(Err(conv(x, r.err())?))
            } else {
                return Err(bad());
            }
        }
        Type::Flags(_) => Val::Flags(
            v.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(format!(
                "the WIT type {} cannot cross a proposal",
                type_name(ty)
            ));
        }
    })
}

fn type_name(t: &Type) -> &'static str {
    match t {
        Type::Bool => "bool",
        Type::S8 | Type::S16 | Type::S32 | Type::S64 => "signed integer",
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => "unsigned integer",
        Type::Float32 | Type::Float64 => "float",
        Type::Char => "char",
        Type::String => "string",
        Type::List(_) => "list",
        Type::Record(_) => "record",
        Type::Tuple(_) => "tuple",
        Type::Variant(_) => "variant",
        Type::Enum(_) => "enum",
        Type::Option(_) => "option",
        Type::Result(_) => "result",
        Type::Flags(_) => "flags",
        _ => "resource or async type",
    }
}

/// What policy can see of a WIT type.
pub fn param_type(t: &Type) -> ParamType {
    match t {
        Type::Bool => ParamType::Bool,
        Type::S8
        | Type::S16
        | Type::S32
        | Type::S64
        | Type::U8
        | Type::U16
        | Type::U32
        | Type::U64 => ParamType::Long,
        Type::String | Type::Char | Type::Enum(_) => ParamType::String,
        Type::List(l) => ParamType::Set(Box::new(param_type(&l.ty()))),
        Type::Record(r) => ParamType::Record(
            r.fields()
                .map(|f| (f.name.to_string(), param_type(&f.ty)))
                .collect(),
        ),
        Type::Option(o) => ParamType::Optional(Box::new(param_type(&o.ty()))),
        _ => ParamType::Opaque,
    }
}
