//! Compiled decisions: the common shapes of policy, evaluated without
//! Cedar's evaluator.
//!
//! Why: Cedar's evaluator guards its recursion with
//! `stacker::remaining_stack()`, which measures against the OS thread's
//! stack. Guest calls (and so every policy decision) run on a wasmtime
//! fiber stack, where that measurement is meaningless, so each decision
//! used to run on a fresh 1 MiB stack segment (mmap, page faults, munmap)
//! and then paid for building Cedar's entities and context from JSON:
//! 65-90 µs a call, more than a whole step. A policy made only of the
//! shapes below (scope constraints on principal, action and resource;
//! `when`/`unless` over `context` with attribute access, `has`, `&&`, `||`,
//! `!`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `like`, `.contains` and literal
//! booleans, integers and strings) is compiled once, at load, from Cedar's
//! own parse (its JSON form), and evaluated here in a few hundred
//! nanoseconds on the caller's stack.
//!
//! The stack is bounded by construction, not measured: an expression
//! nested deeper than [`MAX_EXPR_DEPTH`] is not compiled (Cedar decides
//! it), and arguments nested deeper than [`crate::MAX_ARG_DEPTH`] are
//! refused before anything recurses into them; evaluation never recurses
//! into an argument's value.
//!
//! Same results as Cedar, by construction and by test (`tests/compiled.rs`
//! compares the two on every shape): evaluation follows Cedar's semantics
//! (short-circuit `&&`/`||`, scope before conditions, conditions in
//! order, `==` across types is false, `like` over characters with `*`).
//! Wherever Cedar would report an error (a missing attribute, a type
//! mismatch), or a value is not one of these simple shapes (records or
//! sets compared with `==`, an `__entity`/`__extn` escape in an argument),
//! the compiled evaluation gives up and Cedar decides the call, so its
//! errors (and so the denial's wording) are exactly Cedar's.

use serde_json::{Map, Value};

/// Deepest expression compiled; a deeper one is left to Cedar.
pub(crate) const MAX_EXPR_DEPTH: usize = 48;

/// One policy, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub id: String,
    pub forbid: bool,
    /// `None`: any principal; else the `Plugin` ids it names.
    principal: Option<Vec<String>>,
    /// `None`: any action; else the `Action` ids it names.
    actions: Option<Vec<String>>,
    /// The resource constraint holds (the resource is always this
    /// deployment, so this is known at load).
    resource: bool,
    /// `(is a when, body)`, in order.
    conditions: Vec<(bool, Expr)>,
}

#[derive(Debug, Clone)]
enum Expr {
    Bool(bool),
    Long(i64),
    Str(String),
    Context,
    Attr(Box<Expr>, String),
    Has(Box<Expr>, String),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    Like(Box<Expr>, Vec<Pat>),
    Contains(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    Char(char),
    Any,
}

/// Compile `policy` (of a deployment named `deployment`); `None` when it
/// uses anything this module does not evaluate.
pub(crate) fn compile(policy: &cedar_policy::Policy, deployment: &str) -> Option<Compiled> {
    let est = policy.to_json().ok()?;
    let forbid = match est.get("effect")?.as_str()? {
        "permit" => false,
        "forbid" => true,
        _ => return None,
    };
    let principal = scope(est.get("principal")?, "Plugin")?;
    let actions = scope(est.get("action")?, "Action")?;
    let resource = scope(est.get("resource")?, "Deployment")?
        .is_none_or(|ids| ids.iter().any(|id| id == deployment));
    let mut conditions = Vec::new();
    for c in est.get("conditions")?.as_array()? {
        let when = match c.get("kind")?.as_str()? {
            "when" => true,
            "unless" => false,
            _ => return None,
        };
        conditions.push((when, expr(c.get("body")?, 0)?));
    }
    Some(Compiled {
        id: policy.id().to_string(),
        forbid,
        principal,
        actions,
        resource,
        conditions,
    })
}

/// A scope constraint: `Some(None)` for any, `Some(Some(ids))` for an
/// entity of type `ty` among `ids` (an entity of another type: no ids).
/// Membership (`in`) is equality: Charter's entities have no parents.
fn scope(c: &Value, ty: &str) -> Option<Option<Vec<String>>> {
    let one = |e: &Value| -> Option<Option<String>> {
        let (t, id) = (e.get("type")?.as_str()?, e.get("id")?.as_str()?);
        if e.as_object()?.len() != 2 {
            return None;
        }
        Some((t == ty).then(|| id.to_string()))
    };
    match (c.get("op")?.as_str()?, c.as_object()?.len()) {
        ("All", 1) => Some(None),
        ("==" | "in", 2) => {
            let ids: Vec<Option<String>> = if let Some(e) = c.get("entity") {
                vec![one(e)?]
            } else {
                c.get("entities")?
                    .as_array()?
                    .iter()
                    .map(one)
                    .collect::<Option<_>>()?
            };
            Some(Some(ids.into_iter().flatten().collect()))
        }
        _ => None,
    }
}

fn bin(b: &Value, depth: usize) -> Option<(Box<Expr>, Box<Expr>)> {
    let m = b.as_object()?;
    if m.len() != 2 {
        return None;
    }
    Some((
        Box::new(expr(m.get("left")?, depth + 1)?),
        Box::new(expr(m.get("right")?, depth + 1)?),
    ))
}

fn left_attr(b: &Value, depth: usize) -> Option<(Box<Expr>, String)> {
    let m = b.as_object()?;
    if m.len() != 2 {
        return None;
    }
    // `has a.b` is written as a list of attributes: not compiled.
    let attr = m.get("attr")?.as_str()?.to_string();
    Some((Box::new(expr(m.get("left")?, depth + 1)?), attr))
}

/// One node of Cedar's JSON policy form.
fn expr(v: &Value, depth: usize) -> Option<Expr> {
    if depth > MAX_EXPR_DEPTH {
        return None;
    }
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let (op, b) = m.iter().next()?;
    Some(match op.as_str() {
        "Value" => match b {
            Value::Bool(x) => Expr::Bool(*x),
            Value::Number(n) => Expr::Long(n.as_i64()?),
            Value::String(s) => Expr::Str(s.clone()),
            _ => return None,
        },
        "Var" if b.as_str() == Some("context") => Expr::Context,
        "." => {
            let (l, a) = left_attr(b, depth)?;
            Expr::Attr(l, a)
        }
        "has" => {
            let (l, a) = left_attr(b, depth)?;
            Expr::Has(l, a)
        }
        "!" => {
            let m = b.as_object()?;
            if m.len() != 1 {
                return None;
            }
            Expr::Not(Box::new(expr(m.get("arg")?, depth + 1)?))
        }
        "&&" | "||" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "contains" => {
            let (l, r) = bin(b, depth)?;
            match op.as_str() {
                "&&" => Expr::And(l, r),
                "||" => Expr::Or(l, r),
                "==" => Expr::Eq(l, r),
                "!=" => Expr::Ne(l, r),
                "<" => Expr::Cmp(Cmp::Lt, l, r),
                "<=" => Expr::Cmp(Cmp::Le, l, r),
                ">" => Expr::Cmp(Cmp::Gt, l, r),
                ">=" => Expr::Cmp(Cmp::Ge, l, r),
                _ => Expr::Contains(l, r),
            }
        }
        "like" => {
            let m = b.as_object()?;
            if m.len() != 2 {
                return None;
            }
            let mut pat = Vec::new();
            for p in m.get("pattern")?.as_array()? {
                match p {
                    Value::String(w) if w == "Wildcard" => pat.push(Pat::Any),
                    Value::Object(l) if l.len() == 1 => {
                        pat.extend(l.get("Literal")?.as_str()?.chars().map(Pat::Char))
                    }
                    _ => return None,
                }
            }
            Expr::Like(Box::new(expr(m.get("left")?, depth + 1)?), pat)
        }
        _ => return None,
    })
}

/// A value during evaluation.
#[derive(Clone, Copy)]
enum V<'a> {
    Bool(bool),
    Long(i64),
    Str(&'a str),
    Rec(&'a Map<String, Value>),
    Set(&'a [Value]),
}

/// An argument value as Cedar sees it (after `cedar_json`: integers fit
/// a Long, no nulls, no floats).
fn val(v: &Value) -> Option<V<'_>> {
    Some(match v {
        Value::Bool(b) => V::Bool(*b),
        Value::Number(n) => V::Long(n.as_i64()?),
        Value::String(s) => V::Str(s),
        Value::Array(a) => V::Set(a),
        Value::Object(m) => V::Rec(m),
        Value::Null => return None,
    })
}

/// Cedar's `==` where it is simple: primitives of different types are
/// unequal; a record or set is left to Cedar.
fn eq(a: V<'_>, b: V<'_>) -> Option<bool> {
    Some(match (a, b) {
        (V::Rec(_) | V::Set(_), _) | (_, V::Rec(_) | V::Set(_)) => return None,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Long(x), V::Long(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        _ => false,
    })
}

fn boolean(v: Option<V<'_>>) -> Option<bool> {
    match v? {
        V::Bool(b) => Some(b),
        _ => None,
    }
}

/// Evaluate; `None` where Cedar would report an error or the value is not
/// simple (the caller then lets Cedar decide).
fn eval<'a>(e: &'a Expr, ctx: &'a Map<String, Value>) -> Option<V<'a>> {
    Some(match e {
        Expr::Bool(b) => V::Bool(*b),
        Expr::Long(n) => V::Long(*n),
        Expr::Str(s) => V::Str(s),
        Expr::Context => V::Rec(ctx),
        Expr::Attr(l, a) => match eval(l, ctx)? {
            V::Rec(m) => val(m.get(a)?)?,
            _ => return None,
        },
        Expr::Has(l, a) => match eval(l, ctx)? {
            V::Rec(m) => V::Bool(m.contains_key(a)),
            _ => return None,
        },
        Expr::And(l, r) => V::Bool(boolean(eval(l, ctx))? && boolean(eval(r, ctx))?),
        Expr::Or(l, r) => V::Bool(boolean(eval(l, ctx))? || boolean(eval(r, ctx))?),
        Expr::Not(x) => V::Bool(!boolean(eval(x, ctx))?),
        Expr::Eq(l, r) => V::Bool(eq(eval(l, ctx)?, eval(r, ctx)?)?),
        Expr::Ne(l, r) => V::Bool(!eq(eval(l, ctx)?, eval(r, ctx)?)?),
        Expr::Cmp(op, l, r) => match (eval(l, ctx)?, eval(r, ctx)?) {
            (V::Long(x), V::Long(y)) => V::Bool(match op {
                Cmp::Lt => x < y,
                Cmp::Le => x <= y,
                Cmp::Gt => x > y,
                Cmp::Ge => x >= y,
            }),
            _ => return None,
        },
        Expr::Like(l, pat) => match eval(l, ctx)? {
            V::Str(s) => V::Bool(like(s, pat)),
            _ => return None,
        },
        Expr::Contains(l, r) => match (eval(l, ctx)?, eval(r, ctx)?) {
            (V::Set(items), x) => {
                let mut found = false;
                for i in items {
                    // A record or set element is unequal to a primitive.
                    if eq(val(i)?, x).unwrap_or(false) {
                        found = true;
                        break;
                    }
                }
                // A record or set needle is left to Cedar.
                eq(x, V::Bool(false))?;
                V::Bool(found)
            }
            _ => return None,
        },
    })
}

/// Cedar's `like`: `*` matches any run of characters (greedy with
/// backtracking to the last star, as Cedar does: no recursion, and no
/// copy of the string, which may be megabytes).
fn like(s: &str, pat: &[Pat]) -> bool {
    let next = |i: usize| s[i..].chars().next();
    let (mut i, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(c) = next(i) {
        match pat.get(p) {
            Some(Pat::Any) => {
                star = Some((p, i));
                p += 1;
            }
            Some(Pat::Char(x)) if *x == c => {
                i += c.len_utf8();
                p += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    // The star takes one more character.
                    let si = si + next(si).map_or(1, char::len_utf8);
                    p = sp + 1;
                    i = si;
                    star = Some((sp, si));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|x| *x == Pat::Any)
}

/// Does `c` apply to this request? `None`: Cedar must decide.
pub(crate) fn satisfied(
    c: &Compiled,
    plugin: &str,
    action: &str,
    ctx: &Map<String, Value>,
) -> Option<bool> {
    if !c.resource
        || c.principal
            .as_ref()
            .is_some_and(|ids| !ids.iter().any(|i| i == plugin))
        || c.actions
            .as_ref()
            .is_some_and(|ids| !ids.iter().any(|i| i == action))
    {
        return Some(false);
    }
    for (when, body) in &c.conditions {
        if boolean(eval(body, ctx))? != *when {
            return Some(false);
        }
    }
    Some(true)
}
