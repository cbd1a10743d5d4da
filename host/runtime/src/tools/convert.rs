//! An agent's JSON arguments to component values, strictly by WIT type:
//! a wrong kind, an integer out of its width, a float out of `f32`, an
//! unknown field or case, a missing required field, a tuple of the wrong
//! length: each refused with the path that is wrong (`order.lines[2].sku`).
//! The accepted shapes are exactly those [`super::schema`] describes.

use serde_json::Value;
use wasmtime::component::Val;
use wasmtime::component::types::Type;

/// What kind of JSON `v` is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(path: &str, want: &str, v: &Value) -> String {
    format!("{path}: expected {want}, got {}", kind(v))
}

fn signed(path: &str, v: &Value, min: i64, max: i64, name: &str) -> Result<i64, String> {
    match v.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "{path}: {n} is out of range for {name} ({min} to {max})"
        )),
        None if v.is_u64() => Err(format!(
            "{path}: {v} is out of range for {name} ({min} to {max})"
        )),
        None => Err(wrong(path, &format!("an integer ({name})"), v)),
    }
}

fn unsigned(path: &str, v: &Value, max: u64, name: &str) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        Some(n) => Err(format!(
            "{path}: {n} is out of range for {name} (0 to {max})"
        )),
        None if v.is_i64() => Err(format!(
            "{path}: {v} is out of range for {name} (0 to {max})"
        )),
        None => Err(wrong(path, &format!("an integer ({name})"), v)),
    }
}

/// The named parameters of a function from one JSON object: no unknown
/// names (except those in `ignored`), every non-option parameter present.
pub(crate) fn params(
    params: &[(String, Type)],
    args: &Value,
    ignored: &[&str],
) -> Result<Vec<Val>, String> {
    let Value::Object(o) = args else {
        return Err(wrong("arguments", "an object", args));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !ignored.contains(&k.as_str()) && !params.iter().any(|(n, _)| n == *k))
    {
        return Err(format!(
            "arguments: unknown argument {:?} (expected: {})",
            crate::record::cut(k, 64),
            params
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    params
        .iter()
        .map(|(n, t)| match o.get(n) {
            Some(v) => from_json(v, t, n),
            None if matches!(t, Type::Option(_)) => Ok(Val::Option(None)),
            None => Err(format!("{n}: missing (a required argument)")),
        })
        .collect()
}

/// One value of type `ty` at `path`.
/// Long on purpose: one arm per WIT type kind, each a few lines.
pub(crate) fn from_json(v: &Value, ty: &Type, path: &str) -> Result<Val, String> {
    Ok(match ty {
        Type::Bool => Val::Bool(v.as_bool().ok_or_else(|| wrong(path, "a boolean", v))?),
        Type::U8 => Val::U8(unsigned(path, v, u8::MAX.into(), "u8")? as u8),
        Type::U16 => Val::U16(unsigned(path, v, u16::MAX.into(), "u16")? as u16),
        Type::U32 => Val::U32(unsigned(path, v, u32::MAX.into(), "u32")? as u32),
        Type::U64 => Val::U64(unsigned(path, v, u64::MAX, "u64")?),
        Type::S8 => Val::S8(signed(path, v, i8::MIN.into(), i8::MAX.into(), "s8")? as i8),
        Type::S16 => Val::S16(signed(path, v, i16::MIN.into(), i16::MAX.into(), "s16")? as i16),
        Type::S32 => Val::S32(signed(path, v, i32::MIN.into(), i32::MAX.into(), "s32")? as i32),
        Type::S64 => Val::S64(signed(path, v, i64::MIN, i64::MAX, "s64")?),
        Type::Float32 => {
            let n = v.as_f64().ok_or_else(|| wrong(path, "a number (f32)", v))?;
            if n.abs() > f64::from(f32::MAX) {
                return Err(format!("{path}: {n} is out of range for f32"));
            }
            Val::Float32(n as f32)
        }
        Type::Float64 => Val::Float64(v.as_f64().ok_or_else(|| wrong(path, "a number (f64)", v))?),
        Type::Char => {
            let s = v
                .as_str()
                .ok_or_else(|| wrong(path, "a one-character string", v))?;
            let mut cs = s.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(format!("{path}: expected exactly one character")),
            }
        }
        Type::String => Val::String(
            v.as_str()
                .ok_or_else(|| wrong(path, "a string", v))?
                .to_string(),
        ),
        Type::List(l) => {
            let a = v.as_array().ok_or_else(|| wrong(path, "an array", v))?;
            let t = l.ty();
            Val::List(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| from_json(x, &t, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(r) => {
            let o = v.as_object().ok_or_else(|| wrong(path, "an object", v))?;
            if let Some(k) = o.keys().find(|k| !r.fields().any(|f| f.name == k.as_str())) {
                return Err(format!(
                    "{path}: unknown field {:?} (fields: {})",
                    crate::record::cut(k, 64),
                    r.fields().map(|f| f.name).collect::<Vec<_>>().join(", ")
                ));
            }
            Val::Record(
                r.fields()
                    .map(|f| {
                        let at = format!("{path}.{}", f.name);
                        let val = match o.get(f.name) {
                            Some(x) => from_json(x, &f.ty, &at)?,
                            None if matches!(f.ty, Type::Option(_)) => Val::Option(None),
                            None => return Err(format!("{at}: missing (a required field)")),
                        };
                        Ok((f.name.to_string(), val))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        Type::Tuple(t) => {
            let a = v
                .as_array()
                .ok_or_else(|| wrong(path, "an array (tuple)", v))?;
            if a.len() != t.types().len() {
                return Err(format!(
                    "{path}: expected a tuple of {} items, got {}",
                    t.types().len(),
                    a.len()
                ));
            }
            Val::Tuple(
                t.types()
                    .zip(a)
                    .enumerate()
                    .map(|(i, (t, x))| from_json(x, &t, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Variant(var) => {
            let o = v
                .as_object()
                .ok_or_else(|| wrong(path, "an object {\"tag\", \"value\"}", v))?;
            if let Some(k) = o.keys().find(|k| *k != "tag" && *k != "value") {
                return Err(format!(
                    "{path}: unknown key {:?} (a variant has tag and value)",
                    crate::record::cut(k, 64)
                ));
            }
            let tag = o
                .get("tag")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{path}.tag: missing (the case's name, a string)"))?;
            let case = var.cases().find(|c| c.name == tag).ok_or_else(|| {
                format!(
                    "{path}.tag: no case {:?} (cases: {})",
                    crate::record::cut(tag, 64),
                    var.cases().map(|c| c.name).collect::<Vec<_>>().join(", ")
                )
            })?;
            let payload = match (&case.ty, o.get("value")) {
                (Some(t), Some(x)) => Some(Box::new(from_json(x, t, &format!("{path}.value"))?)),
                (Some(_), None) => {
                    return Err(format!(
                        "{path}.value: missing (case {tag} carries a value)"
                    ));
                }
                (None, None | Some(Value::Null)) => None,
                (None, Some(_)) => {
                    return Err(format!("{path}.value: case {tag} carries no value"));
                }
            };
            Val::Variant(tag.to_string(), payload)
        }
        Type::Enum(e) => {
            let s = v
                .as_str()
                .ok_or_else(|| wrong(path, "a string (enum)", v))?;
            if !e.names().any(|n| n == s) {
                return Err(format!(
                    "{path}: {:?} is not one of {}",
                    crate::record::cut(s, 64),
                    e.names().collect::<Vec<_>>().join(", ")
                ));
            }
            Val::Enum(s.to_string())
        }
        Type::Option(o) => match v {
            Value::Null => Val::Option(None),
            x => Val::Option(Some(Box::new(from_json(x, &o.ty(), path)?))),
        },
        Type::Result(r) => {
            let o = v
                .as_object()
                .filter(|o| o.len() == 1)
                .ok_or_else(|| wrong(path, "an object with one key, \"ok\" or \"err\"", v))?;
            let (key, x) = o.iter().next().expect("one key");
            let t = match key.as_str() {
                "ok" => r.ok(),
                "err" => r.err(),
                k => {
                    return Err(format!(
                        "{path}: unknown key {:?} (\"ok\" or \"err\")",
                        crate::record::cut(k, 64)
                    ));
                }
            };
            let inner = match (t, x) {
                (Some(t), x) => Some(Box::new(from_json(x, &t, &format!("{path}.{key}"))?)),
                (None, Value::Null) => None,
                (None, _) => return Err(format!("{path}.{key}: carries no value (null)")),
            };
            Val::Result(if key == "ok" { Ok(inner) } else { Err(inner) })
        }
        Type::Flags(f) => {
            let a = v
                .as_array()
                .ok_or_else(|| wrong(path, "an array of flag names", v))?;
            let mut out: Vec<String> = Vec::new();
            for (i, x) in a.iter().enumerate() {
                let s = x
                    .as_str()
                    .ok_or_else(|| wrong(&format!("{path}[{i}]"), "a flag name", x))?;
                if !f.names().any(|n| n == s) {
                    return Err(format!(
                        "{path}[{i}]: no flag {:?}",
                        crate::record::cut(s, 64)
                    ));
                }
                if out.iter().any(|o| o == s) {
                    return Err(format!("{path}[{i}]: flag {s:?} given twice"));
                }
                out.push(s.to_string());
            }
            Val::Flags(out)
        }
        other => {
            return Err(format!(
                "{path}: a {} cannot be sent by an agent",
                crate::values::type_name(other)
            ));
        }
    })
}
