//! Component values as JSON (for policy context, audit records and stored
//! proposals) and back, guided by the WIT type.

use charter_policy::ParamType;
use serde_json::{Map, Value, json};
use wasmtime::component::Val;
use wasmtime::component::types::Type;

/// A component value as JSON. Records are objects (WIT field names),
/// variants `{"tag", "value"}`, results `{"ok"}` / `{"err"}`, options
/// `null` or the value, enums and chars strings. Finite floats are numbers;
/// NaN and the infinities (which JSON cannot hold) are the strings `"NaN"`,
/// `"inf"` and `"-inf"` — never `null`, which would read as an absent
/// option and hide the argument from policy.
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
        Val::Float32(n) => float_json(f64::from(*n)),
        Val::Float64(n) => float_json(*n),
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

/// A float as JSON: a number when finite, else `"NaN"`, `"inf"`, `"-inf"`.
fn float_json(n: f64) -> Value {
    if n.is_nan() {
        json!("NaN")
    } else if n == f64::INFINITY {
        json!("inf")
    } else if n == f64::NEG_INFINITY {
        json!("-inf")
    } else {
        json!(n)
    }
}

/// A float back from JSON: a number, or one of the strings [`to_json`]
/// writes for NaN and the infinities.
fn float_from_json(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        other => other.as_f64(),
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
///
/// Long on purpose: one arm per WIT type kind, each a few lines, so the
/// whole mapping (and what it refuses) reads in one place.
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
        Type::Float32 => Val::Float32(float_from_json(v).ok_or_else(bad)? as f32),
        Type::Float64 => Val::Float64(float_from_json(v).ok_or_else(bad)?),
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

pub(crate) fn type_name(t: &Type) -> &'static str {
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
        Type::S8 | Type::S16 | Type::S32 | Type::S64 | Type::U8 | Type::U16 | Type::U32 => {
            ParamType::Long
        }
        // Cedar's Long is i64: values above i64::MAX are refused.
        Type::U64 => ParamType::U64,
        // Cedar has no floats: passed as strings.
        Type::Float32 | Type::Float64 => ParamType::Float,
        Type::String | Type::Char | Type::Enum(_) => ParamType::String,
        Type::List(l) => ParamType::Set(Box::new(param_type(&l.ty()))),
        Type::Record(r) => ParamType::Record(
            r.fields()
                .map(|f| (f.name.to_string(), param_type(&f.ty)))
                .collect(),
        ),
        Type::Option(o) => ParamType::Optional(Box::new(param_type(&o.ty()))),
        // `{"tag", "value"}` (see `to_json`): the case is what policy sees.
        Type::Variant(_) => ParamType::Variant,
        // A resource is the string "<resource>".
        Type::Own(_) | Type::Borrow(_) => ParamType::Opaque,
        // Objects or arrays whose shape policy cannot type: declared so that
        // comparing them is a validation error, not a silent mismatch.
        _ => ParamType::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_including_non_finite() {
        assert_eq!(to_json(&Val::Float64(1.5)), json!(1.5));
        assert_eq!(to_json(&Val::Float32(-2.0)), json!(-2.0));
        assert_eq!(to_json(&Val::Float64(f64::NAN)), json!("NaN"));
        assert_eq!(to_json(&Val::Float32(f32::NAN)), json!("NaN"));
        assert_eq!(to_json(&Val::Float64(f64::INFINITY)), json!("inf"));
        assert_eq!(to_json(&Val::Float32(f32::NEG_INFINITY)), json!("-inf"));
        let back64 = |v: Val| match from_json(&to_json(&v), &Type::Float64).unwrap() {
            Val::Float64(n) => n,
            other => panic!("{other:?}"),
        };
        let back32 = |v: Val| match from_json(&to_json(&v), &Type::Float32).unwrap() {
            Val::Float32(n) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(back64(Val::Float64(1.5)), 1.5);
        assert!(back64(Val::Float64(f64::NAN)).is_nan());
        assert_eq!(back64(Val::Float64(f64::INFINITY)), f64::INFINITY);
        assert_eq!(back64(Val::Float64(f64::NEG_INFINITY)), f64::NEG_INFINITY);
        assert!(back32(Val::Float32(f32::NAN)).is_nan());
        assert_eq!(back32(Val::Float32(f32::INFINITY)), f32::INFINITY);
        assert_eq!(back32(Val::Float32(0.25)), 0.25);
        assert!(from_json(&json!("1.5"), &Type::Float64).is_err());
        assert!(from_json(&json!(null), &Type::Float64).is_err());
        // An option holding NaN stays present.
        let some_nan = Val::Option(Some(Box::new(Val::Float64(f64::NAN))));
        assert_eq!(to_json(&some_nan), json!("NaN"));
    }

    #[test]
    fn integers_as_json() {
        assert_eq!(to_json(&Val::U64(u64::MAX)), json!(u64::MAX));
        assert_eq!(to_json(&Val::S64(i64::MIN)), json!(i64::MIN));
        assert!(matches!(
            from_json(&json!(u64::MAX), &Type::U64),
            Ok(Val::U64(u64::MAX))
        ));
    }

    #[test]
    fn what_policy_sees_of_scalar_types() {
        assert_eq!(param_type(&Type::U64), ParamType::U64);
        assert_eq!(param_type(&Type::S64), ParamType::Long);
        assert_eq!(param_type(&Type::U32), ParamType::Long);
        assert_eq!(param_type(&Type::Float32), ParamType::Float);
        assert_eq!(param_type(&Type::Float64), ParamType::Float);
        assert_eq!(param_type(&Type::Char), ParamType::String);
    }
}
