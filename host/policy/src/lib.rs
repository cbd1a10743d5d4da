//! Argument-level policy: Cedar policies attached to action groups.
//!
//! For a capability call, the request is
//! - principal `Plugin::"<name>"` with attributes `name`, `digest`, `groups`;
//! - action `Action::"<interface>.<function>"`, e.g.
//!   `Action::"acme:payments/refunds.issue-refund"`;
//! - resource `Deployment::"<deployment name>"`;
//! - context: the call's typed arguments, WIT names in snake_case
//!   (`amount-cents` → `context.amount_cents`).
//!
//! The decision: a `forbid` that matches denies; else a matching `permit`
//! without an `@approval` annotation allows; else a matching permit
//! annotated `@approval("role")` proposes (a person with that role
//! decides); no matching permit denies. A group without policies leaves its
//! functions to the grant alone.
//!
//! Policy never allows what it cannot judge: a call any of whose policies
//! errors on its arguments is denied (Cedar itself would skip an erroring
//! `forbid` and let a `permit` through), and so is a call carrying an
//! integer Cedar's `Long` cannot hold (a `u64` above `i64::MAX`). Floats,
//! which Cedar has no type for, are passed as strings (`"1.5"`, `"NaN"`,
//! `"inf"`): comparing one as a number errors, and the call is denied.
//!
//! **Architecture invariant:** pure logic, no IO; it never sees a secret
//! value (the caller redacts).
//!
//! **Speed and the stack.** A decision runs in the step's own call path,
//! on the wasmtime fiber stack of the guest that called. Policies of the
//! common shapes are compiled at load and decided here without Cedar's
//! evaluator (`compiled.rs`, which says why); anything else (and every
//! call on which a compiled policy would error) is decided by Cedar itself
//! on a stack segment of its own ([`POLICY_STACK`]), where Cedar's
//! stack-depth guard measures a real stack. Arguments nested deeper than
//! [`MAX_ARG_DEPTH`] are refused before either path looks into them.

mod compiled;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicyId, PolicySet, Request, Schema, ValidationMode,
    Validator,
};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("group {group}: policies do not parse: {message}")]
    Parse { group: String, message: String },
    #[error("group {group}: policy {id}: {message}")]
    Invalid {
        group: String,
        id: String,
        message: String,
    },
}

/// The outcome of policy on one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        policies: Vec<String>,
    },
    Propose {
        policies: Vec<String>,
        role: Option<String>,
    },
    Deny {
        policies: Vec<String>,
        reason: String,
    },
}

/// The type of one WIT parameter, as far as policy can see it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    String,
    /// Signed integers and unsigned ones up to 32 bits: Cedar's `Long`.
    Long,
    /// A WIT `u64`: a `Long` in the schema, but a value above `i64::MAX`
    /// cannot be represented, and the call carrying it is refused.
    U64,
    Bool,
    /// A WIT `f32` / `f64`: Cedar has no floats, so the value is passed as
    /// a string (`"1.5"`, `"NaN"`, `"inf"`, `"-inf"`) and cannot be
    /// compared as a number.
    Float,
    /// Resources and anything else Cedar cannot compare: passed as a
    /// string.
    Opaque,
    /// A WIT variant: policy sees `{tag: "case"}` (and the payload as
    /// `value`, which the schema leaves undeclared, so a policy cannot
    /// compare it: the case is what policy decides on).
    Variant,
    /// Results, tuples, flags and maps: passed as their JSON shape, which
    /// the schema declares as a record with no attributes, so a policy
    /// that compares one (say, to a string) fails validation instead of
    /// silently never matching.
    Unreadable,
    Set(Box<ParamType>),
    Record(Vec<(String, ParamType)>),
    Optional(Box<ParamType>),
}

/// A capability function's signature, for schema generation.
#[derive(Debug, Clone)]
pub struct Signature {
    /// `interface.function` without version, e.g. `charter:host/kv.set`.
    pub action: String,
    pub params: Vec<(String, ParamType)>,
}

/// WIT kebab-case to Cedar-friendly snake_case.
pub fn snake(name: &str) -> String {
    name.replace('-', "_")
}

/// Stack given to one Cedar evaluation (Cedar refuses to recurse with
/// less than 100 KiB left; arguments are at most [`MAX_ARG_DEPTH`] deep).
pub const POLICY_STACK: usize = 1 << 20;

/// Stack for compiling a group set's policies once (reserved address
/// space; only what the parser touches is ever mapped).
const COMPILE_STACK: usize = 64 << 20;

/// Deepest argument nesting policy judges (the call's argument record is
/// level 0, a list or record inside an argument one more). A deeper
/// argument is refused: Cedar's conversion of such a value recurses
/// without a guard (500 levels overflowed a 1 MiB stack and killed the
/// host), and no WIT signature a deployment uses comes near this.
pub const MAX_ARG_DEPTH: usize = 32;

/// The policies of a set of groups, ready to decide with.
struct Prepared {
    set: PolicySet,
    /// Every policy compiled (`compiled.rs`), or `None`: Cedar decides.
    compiled: Option<Vec<compiled::Compiled>>,
    /// Each policy's `@approval` annotation, if it has one.
    approvals: HashMap<String, String>,
}

/// A plugin's (name, digest, groups): what its principal entity holds.
type PrincipalKey = (String, String, Vec<String>);

/// The policies of every group of a deployment.
pub struct PolicyEngine {
    deployment: String,
    groups: BTreeMap<String, PolicySet>,
    cache: Mutex<HashMap<Vec<String>, Arc<Prepared>>>,
    /// The principal entity of each plugin (name, digest, groups), built
    /// once: Cedar builds it from JSON in tens of microseconds.
    entities: Mutex<HashMap<PrincipalKey, Arc<Entities>>>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("groups", &self.groups.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PolicyEngine {
    /// `groups`: (group name, Cedar policy text) for every group that has
    /// policies.
    pub fn new(deployment: &str, groups: &[(String, String)]) -> Result<PolicyEngine, PolicyError> {
        let mut out = BTreeMap::new();
        for (group, text) in groups {
            let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse {
                group: group.clone(),
                message: format!("{e}"),
            })?;
            let mut set = PolicySet::new();
            for p in parsed.policies() {
                let id = p
                    .annotation("id")
                    .map(str::to_string)
                    .unwrap_or_else(|| p.id().to_string());
                let full = format!("{group}/{id}");
                set.add(p.new_id(PolicyId::new(&full)))
                    .map_err(|e| PolicyError::Invalid {
                        group: group.clone(),
                        id,
                        message: format!("{e}"),
                    })?;
            }
            out.insert(group.clone(), set);
        }
        Ok(PolicyEngine {
            deployment: deployment.to_string(),
            groups: out,
            cache: Mutex::new(HashMap::new()),
            entities: Mutex::new(HashMap::new()),
            authorizer: Authorizer::new(),
        })
    }

    /// Are all the policies of `groups` compiled (decided without
    /// Cedar's evaluator where they can tell)? For tests and benchmarks.
    #[doc(hidden)]
    pub fn is_compiled(&self, groups: &[&str]) -> bool {
        self.set_for(groups).compiled.is_some()
    }

    /// Does `group` carry policies?
    pub fn governs(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    fn set_for(&self, groups: &[&str]) -> Arc<Prepared> {
        let mut key: Vec<String> = groups
            .iter()
            .filter(|g| self.governs(g))
            .map(|g| g.to_string())
            .collect();
        key.sort();
        key.dedup();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(key.clone())
            .or_insert_with(|| {
                // Compiling reads each policy back through Cedar's
                // recursive parser (`to_json`): on the caller's stack (a
                // wasmtime fiber's, with a few hundred KiB) a long or deeply
                // parenthesised policy would overflow it and abort the
                // host. Once per group set, on a segment as large as a
                // main thread's stack ever is.
                stacker::grow(COMPILE_STACK, || self.prepare(&key))
            })
            .clone()
    }

    /// The policy set of the groups `key`, compiled (see [`Self::set_for`]).
    fn prepare(&self, key: &[String]) -> Arc<Prepared> {
        let mut set = PolicySet::new();
        for g in key {
            for p in self.groups[g].policies() {
                let _ = set.add(p.clone());
            }
        }
        let compiled = set
            .policies()
            .map(|p| compiled::compile(p, &self.deployment))
            .collect();
        let approvals = set
            .policies()
            .filter_map(|p| Some((p.id().to_string(), p.annotation("approval")?.to_string())))
            .collect();
        Arc::new(Prepared {
            set,
            compiled,
            approvals,
        })
    }

    /// Decide a call of `action` (`interface.function`) by `plugin` with
    /// `args` (a JSON object, snake_case keys), under the policies of
    /// `groups` (the plugin's groups that grant the function). `None` when
    /// none of those groups has policies: the grant alone decides.
    ///
    /// Safe to call on any stack with a few KiB free (a wasmtime fiber
    /// included): what needs more runs on a segment of its own.
    pub fn decide(
        &self,
        groups: &[&str],
        plugin: &str,
        digest: &str,
        plugin_groups: &[String],
        action: &str,
        args: &Value,
    ) -> Option<Verdict> {
        self.decide_with(groups, plugin, digest, plugin_groups, action, args, true)
    }

    /// [`PolicyEngine::decide`] with every policy judged by Cedar itself:
    /// the tests hold the compiled decisions to it.
    #[doc(hidden)]
    pub fn decide_by_cedar(
        &self,
        groups: &[&str],
        plugin: &str,
        digest: &str,
        plugin_groups: &[String],
        action: &str,
        args: &Value,
    ) -> Option<Verdict> {
        self.decide_with(groups, plugin, digest, plugin_groups, action, args, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_with(
        &self,
        groups: &[&str],
        plugin: &str,
        digest: &str,
        plugin_groups: &[String],
        action: &str,
        args: &Value,
        use_compiled: bool,
    ) -> Option<Verdict> {
        if !groups.iter().any(|g| self.governs(g)) {
            return None;
        }
        let deny = |reason: String| {
            Some(Verdict::Deny {
                policies: vec![],
                reason,
            })
        };
        // Measured without recursion, before anything recurses into it.
        let shape = match shape(args) {
            Ok(s) => s,
            Err(reason) => return deny(reason),
        };
        let context = match cedar_json(args) {
            Ok(c) => c,
            Err(reason) => return deny(reason),
        };
        let prepared = self.set_for(groups);
        if let (Some(compiled), false, Value::Object(ctx), true) =
            (&prepared.compiled, shape.escapes, &context, use_compiled)
            && let Some(v) = decide_compiled(compiled, &prepared.approvals, plugin, action, ctx)
        {
            return Some(v);
        }
        // Cedar's evaluator guards its recursion by the thread's stack:
        // give it a segment whose bounds stacker records.
        Some(stacker::grow(POLICY_STACK, || {
            self.decide_cedar(&prepared, plugin, digest, plugin_groups, action, context)
        }))
    }

    /// Decide a tool call of `action` by the AI agent `agent` (holding
    /// `roles`) under the policies of `groups` (every group naming the
    /// action). The principal is `Agent::"name"`, a member of
    /// `Role::"role"` for each of its roles, with attributes `name`,
    /// `roles` (and `digest` "" and `groups` [], so a policy written for
    /// plugins reads the same attributes). Always Cedar's own evaluator
    /// (the compiled path knows plugin principals only). `None` when none
    /// of the groups has policies.
    pub fn decide_agent(
        &self,
        groups: &[&str],
        agent: &str,
        roles: &[String],
        action: &str,
        args: &Value,
    ) -> Option<Verdict> {
        if !groups.iter().any(|g| self.governs(g)) {
            return None;
        }
        let deny = |reason: String| {
            Some(Verdict::Deny {
                policies: vec![],
                reason,
            })
        };
        if let Err(reason) = shape(args) {
            return deny(reason);
        }
        let context = match cedar_json(args) {
            Ok(c) => c,
            Err(reason) => return deny(reason),
        };
        let prepared = self.set_for(groups);
        Some(stacker::grow(POLICY_STACK, || {
            let entities = agent_entities(agent, roles);
            self.decide_request(&prepared, ("Agent", agent), entities, action, context)
        }))
    }

    /// Decide with Cedar itself (on a stack it can measure: see `decide`).
    fn decide_cedar(
        &self,
        prepared: &Prepared,
        plugin: &str,
        digest: &str,
        plugin_groups: &[String],
        action: &str,
        context: Value,
    ) -> Verdict {
        let entities = self.entities_of(plugin, digest, plugin_groups);
        self.decide_request(prepared, ("Plugin", plugin), entities, action, context)
    }

    /// Decide one request of `principal` (type, id) whose entities are
    /// `entities`, with Cedar.
    fn decide_request(
        &self,
        prepared: &Prepared,
        principal: (&str, &str),
        entities: Result<Arc<Entities>, String>,
        action: &str,
        context: Value,
    ) -> Verdict {
        let deny = |reason: String| Verdict::Deny {
            policies: vec![],
            reason,
        };
        let principal = match uid(principal.0, principal.1) {
            Ok(u) => u,
            Err(e) => return deny(e),
        };
        let (Ok(action_uid), Ok(resource)) =
            (uid("Action", action), uid("Deployment", &self.deployment))
        else {
            return deny("bad action or deployment name".into());
        };
        let entities = match entities {
            Ok(e) => e,
            Err(e) => return deny(format!("cannot build the principal entity: {e}")),
        };
        let context = match Context::from_json_value(context, None) {
            Ok(c) => c,
            Err(e) => {
                return deny(format!("arguments do not convert to a Cedar context: {e}"));
            }
        };
        let request = match Request::new(principal, action_uid, resource, context, None) {
            Ok(r) => r,
            Err(e) => return deny(format!("bad request: {e}")),
        };
        let resp = self
            .authorizer
            .is_authorized(&request, &prepared.set, &entities);
        // Cedar reports reasons as a set: sorted, the verdict (and the
        // audit record) is the same on every run.
        let mut reasons: Vec<String> = resp.diagnostics().reason().map(|p| p.to_string()).collect();
        reasons.sort();
        // A policy that errors is skipped by Cedar: a `forbid` that cannot
        // be evaluated would then let a `permit` through. A call that any of
        // its policies cannot judge is denied.
        let mut errors: Vec<(String, String)> = resp
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                    (e.policy_id().to_string(), e.inner().to_string())
                }
            })
            .collect();
        errors.sort();
        if !errors.is_empty() {
            return unjudgeable(errors, resp.decision(), &reasons);
        }
        verdict(
            resp.decision() == cedar_policy::Decision::Allow,
            reasons,
            &prepared.approvals,
        )
    }

    /// The principal entity of a plugin, built once per (name, digest,
    /// groups).
    fn entities_of(
        &self,
        plugin: &str,
        digest: &str,
        plugin_groups: &[String],
    ) -> Result<Arc<Entities>, String> {
        let key = (
            plugin.to_string(),
            digest.to_string(),
            plugin_groups.to_vec(),
        );
        if let Some(e) = self
            .entities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(e.clone());
        }
        let e = Entities::from_json_value(
            json!([{
                "uid": {"type": "Plugin", "id": plugin},
                "attrs": {"name": plugin, "digest": digest, "groups": plugin_groups},
                "parents": []
            }]),
            None,
        )
        .map_err(|e| e.to_string())?;
        let e = Arc::new(e);
        self.entities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, e.clone());
        Ok(e)
    }

    /// Validate every group's policies against a schema generated from the
    /// signatures of the functions they may name. One message per problem.
    pub fn validate(&self, signatures: &[Signature]) -> Vec<String> {
        let schema = match Schema::from_json_value(schema_json(signatures)) {
            Ok(s) => s,
            Err(e) => return vec![format!("generated schema is invalid: {e}")],
        };
        let validator = Validator::new(schema);
        let mut out = Vec::new();
        for (group, set) in &self.groups {
            let r = validator.validate(set, ValidationMode::Strict);
            for e in r.validation_errors() {
                out.push(format!("group {group}: policy {}: {e}", e.policy_id()));
            }
            // A policy that can never apply is a mistake (a typo in an
            // attribute guarded by `has`): a forbid that never fires
            // forbids nothing. So is hidden bidirectional text.
            for w in r.validation_warnings() {
                use cedar_policy::ValidationWarning as W;
                if matches!(
                    w,
                    W::ImpossiblePolicy(_)
                        | W::InvalidActionApplication(_)
                        | W::BidiCharsInString(_)
                        | W::BidiCharsInIdentifier(_)
                ) {
                    out.push(format!(
                        "group {group}: policy {}: {w}; it can never apply as written",
                        w.policy_id()
                    ));
                }
            }
        }
        out
    }
}

/// Where a parameter's WIT type keeps Cedar from comparing its values
/// exactly: `(path inside the argument, why)`.
fn inexact(t: &ParamType, path: &str, out: &mut Vec<(String, &'static str)>) {
    match t {
        ParamType::U64 => out.push((
            path.to_string(),
            "is a u64, but Cedar compares 64-bit signed integers (Long): a call with a value above 9223372036854775807 is refused",
        )),
        ParamType::Float => out.push((
            path.to_string(),
            "is a float, which Cedar cannot represent: policies see it as a string (\"1.5\", \"NaN\", \"inf\"), and a call whose policy compares it as a number is denied",
        )),
        ParamType::Set(e) => inexact(e, &format!("{path}[]"), out),
        ParamType::Optional(e) => inexact(e, path, out),
        ParamType::Record(fields) => {
            for (name, t) in fields {
                inexact(t, &format!("{path}.{}", snake(name)), out);
            }
        }
        ParamType::String
        | ParamType::Long
        | ParamType::Bool
        | ParamType::Opaque
        | ParamType::Variant
        | ParamType::Unreadable => {}
    }
}

/// Does `policy` apply to `action` (by its action scope)?
fn applies_to(policy: &cedar_policy::Policy, action: &str) -> bool {
    match policy.action_constraint() {
        cedar_policy::ActionConstraint::Any => true,
        cedar_policy::ActionConstraint::Eq(a) => a.id().unescaped() == action,
        cedar_policy::ActionConstraint::In(list) => {
            list.iter().any(|a| a.id().unescaped() == action)
        }
    }
}

/// The top-level context attributes `policy` reads (`context.x`,
/// `context has x`); `None` when that cannot be told (then: any).
fn context_attrs(policy: &cedar_policy::Policy) -> Option<std::collections::BTreeSet<String>> {
    fn walk(v: &Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if (k == "." || k == "has") && x["left"] == json!({"Var": "context"}) {
                        match &x["attr"] {
                            Value::String(a) => {
                                out.insert(a.clone());
                            }
                            Value::Array(a) => {
                                if let Some(Value::String(a)) = a.first() {
                                    out.insert(a.clone());
                                }
                            }
                            _ => {}
                        }
                    }
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let est = policy.to_json().ok()?;
    let mut out = std::collections::BTreeSet::new();
    walk(&est, &mut out);
    Some(out)
}

impl PolicyEngine {
    /// Warnings for `charter check`: arguments whose WIT type Cedar cannot
    /// compare exactly (`u64`: values above `i64::MAX` are refused; floats:
    /// passed as strings), for every function in `signatures` and argument
    /// that some group's policy applies to and reads. Pure: one message per
    /// argument (path inside records and lists included).
    pub fn comparison_warnings(&self, signatures: &[Signature]) -> Vec<String> {
        let policies: Vec<(
            &cedar_policy::Policy,
            Option<std::collections::BTreeSet<String>>,
        )> = self
            .groups
            .values()
            .flat_map(|set| set.policies())
            .map(|p| (p, context_attrs(p)))
            .collect();
        let mut out = Vec::new();
        for sig in signatures {
            for (name, t) in &sig.params {
                let attr = snake(name);
                let mut spots = Vec::new();
                inexact(t, &attr, &mut spots);
                if spots.is_empty() {
                    continue;
                }
                let readers: Vec<String> = policies
                    .iter()
                    .filter(|(p, attrs)| {
                        applies_to(p, &sig.action)
                            && attrs.as_ref().is_none_or(|a| a.contains(&attr))
                    })
                    .map(|(p, _)| p.id().to_string())
                    .collect();
                if readers.is_empty() {
                    continue;
                }
                for (path, why) in spots {
                    out.push(format!(
                        "{}: argument {path} {why} (read by policy {})",
                        sig.action,
                        readers.join(", ")
                    ));
                }
            }
        }
        out
    }
}

/// What `decide` needs to know of the arguments before converting them.
struct Shape {
    /// Some record has a key Cedar reads as an escape (`__entity`,
    /// `__extn`, `__expr`): only Cedar knows what it makes of it.
    escapes: bool,
}

/// Walk `args` without recursion: refuse one nested deeper than
/// [`MAX_ARG_DEPTH`] (naming the argument), note escapes.
fn shape(args: &Value) -> Result<Shape, String> {
    let mut escapes = false;
    let mut todo: Vec<(&Value, usize, &str)> = vec![(args, 0, "")];
    while let Some((v, depth, top)) = todo.pop() {
        if depth > MAX_ARG_DEPTH {
            let name = if top.is_empty() {
                "value".to_string()
            } else {
                snake(top)
            };
            return Err(format!(
                "argument {name} is nested more than {MAX_ARG_DEPTH} levels deep: policy cannot judge it, and a call policy cannot judge is denied"
            ));
        }
        match v {
            Value::Array(a) => todo.extend(a.iter().map(|x| (x, depth + 1, top))),
            Value::Object(m) => {
                for (k, x) in m {
                    // Cedar sees the key snake-cased (`-` → `_`): `--entity`
                    // reaches it as `__entity`.
                    escapes |= k.len() >= 2 && k.bytes().take(2).all(|b| b == b'_' || b == b'-');
                    todo.push((x, depth + 1, if depth == 0 { k.as_str() } else { top }));
                }
            }
            _ => {}
        }
    }
    Ok(Shape { escapes })
}

/// Decide with compiled policies; `None` when one of them cannot tell
/// (Cedar would report an error, or a value is not simple): then Cedar
/// decides, and its errors word the denial.
fn decide_compiled(
    compiled: &[compiled::Compiled],
    approvals: &HashMap<String, String>,
    plugin: &str,
    action: &str,
    ctx: &serde_json::Map<String, Value>,
) -> Option<Verdict> {
    let (mut permits, mut forbids) = (Vec::new(), Vec::new());
    for c in compiled {
        if compiled::satisfied(c, plugin, action, ctx)? {
            if c.forbid {
                forbids.push(c.id.clone());
            } else {
                permits.push(c.id.clone());
            }
        }
    }
    // Cedar: a satisfied forbid denies (its reasons: the forbids); else a
    // satisfied permit allows (its reasons: the permits); else deny.
    let (allow, mut reasons) = if !forbids.is_empty() {
        (false, forbids)
    } else {
        (!permits.is_empty(), permits)
    };
    reasons.sort();
    Some(verdict(allow, reasons, approvals))
}

/// The verdict on a call every policy could judge: Cedar's decision and
/// reasons (sorted), with `@approval` permits turned into a proposal.
fn verdict(allow: bool, reasons: Vec<String>, approvals: &HashMap<String, String>) -> Verdict {
    if !allow {
        let reason = if reasons.is_empty() {
            "no policy permits this call".to_string()
        } else {
            format!("forbidden by {}", reasons.join(", "))
        };
        return Verdict::Deny {
            policies: reasons,
            reason,
        };
    }
    let plain: Vec<String> = reasons
        .iter()
        .filter(|id| !approvals.contains_key(id.as_str()))
        .cloned()
        .collect();
    if !plain.is_empty() {
        return Verdict::Allow { policies: plain };
    }
    let role = reasons
        .iter()
        .find_map(|id| approvals.get(id.as_str()))
        .filter(|r| !r.is_empty())
        .cloned();
    Verdict::Propose {
        policies: reasons,
        role,
    }
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    EntityUid::from_json(json!({"type": ty, "id": id})).map_err(|e| format!("{ty}::{id:?}: {e}"))
}

/// The verdict on a call some of whose policies could not be evaluated
/// (`errors`: policy id, error text): deny, naming them.
fn unjudgeable(
    errors: Vec<(String, String)>,
    decision: cedar_policy::Decision,
    reasons: &[String],
) -> Verdict {
    let mut policies: Vec<String> = errors.iter().map(|(id, _)| id.clone()).collect();
    policies.dedup();
    let detail = if errors.len() == 1 {
        errors[0].1.clone()
    } else {
        errors
            .iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut reason = format!(
        "{} {} could not be evaluated on these arguments: {detail}; a call policy cannot judge is denied",
        if policies.len() == 1 {
            "policy"
        } else {
            "policies"
        },
        policies.join(", "),
    );
    if decision == cedar_policy::Decision::Deny && !reasons.is_empty() {
        reason.push_str(&format!(" (also forbidden by {})", reasons.join(", ")));
        policies.extend(reasons.iter().cloned());
    }
    Verdict::Deny { policies, reason }
}

/// Make JSON arguments fit Cedar: floats become strings (Cedar has no
/// floats, so comparing one errors, and the call is denied), nulls (absent
/// options) are dropped, keys become snake_case. An integer Cedar cannot
/// represent (beyond i64, Cedar's `Long`) refuses the call: as a string it
/// would make comparisons error, and as anything else it would be a
/// different number. The error names the argument.
fn cedar_json(v: &Value) -> Result<Value, String> {
    cedar_value(v, "")
}

fn cedar_value(v: &Value, path: &str) -> Result<Value, String> {
    let key = |k: &str| {
        if path.is_empty() {
            snake(k)
        } else {
            format!("{path}.{}", snake(k))
        }
    };
    Ok(match v {
        Value::Number(n) if n.is_i64() => v.clone(),
        Value::Number(n) if n.is_u64() => {
            let path = if path.is_empty() { "value" } else { path };
            return Err(format!(
                "argument {path} = {n} is outside Cedar's Long range (i64); refused"
            ));
        }
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .filter(|(_, x)| !x.is_null())
                .map(|(i, x)| cedar_value(x, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| Ok((snake(k), cedar_value(x, &key(k))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn type_json(t: &ParamType) -> Value {
    match t {
        ParamType::String | ParamType::Float | ParamType::Opaque => json!({"type": "String"}),
        ParamType::Long | ParamType::U64 => json!({"type": "Long"}),
        ParamType::Bool => json!({"type": "Boolean"}),
        ParamType::Set(e) => json!({"type": "Set", "element": type_json(e)}),
        ParamType::Optional(inner) => type_json(inner),
        ParamType::Record(fields) => json!({"type": "Record", "attributes": attrs(fields)}),
        ParamType::Variant => {
            json!({"type": "Record", "attributes": {"tag": {"type": "String"}}})
        }
        ParamType::Unreadable => json!({"type": "Record", "attributes": {}}),
    }
}

fn attrs(fields: &[(String, ParamType)]) -> Value {
    let mut m = serde_json::Map::new();
    for (name, t) in fields {
        let mut tj = type_json(t);
        if matches!(t, ParamType::Optional(_)) {
            tj["required"] = json!(false);
        }
        m.insert(snake(name), tj);
    }
    Value::Object(m)
}

/// The entities of an agent principal: `Agent::"name"` in `Role::"r"` for
/// each of its roles.
fn agent_entities(agent: &str, roles: &[String]) -> Result<Arc<Entities>, String> {
    let mut list = vec![json!({
        "uid": {"type": "Agent", "id": agent},
        "attrs": {"name": agent, "digest": "", "groups": [], "roles": roles},
        "parents": roles.iter().map(|r| json!({"type": "Role", "id": r})).collect::<Vec<_>>()
    })];
    for r in roles {
        list.push(json!({"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []}));
    }
    Entities::from_json_value(Value::Array(list), None)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The Cedar schema (JSON form) for a set of capability signatures.
pub fn schema_json(signatures: &[Signature]) -> Value {
    let mut actions = serde_json::Map::new();
    for s in signatures {
        actions.insert(
            s.action.clone(),
            json!({
                "appliesTo": {
                    "principalTypes": ["Plugin", "Agent"],
                    "resourceTypes": ["Deployment"],
                    "context": {"type": "Record", "attributes": attrs(&s.params)}
                }
            }),
        );
    }
    json!({
        "": {
            "entityTypes": {
                "Plugin": {"shape": {"type": "Record", "attributes": {
                    "name": {"type": "String"},
                    "digest": {"type": "String"},
                    "groups": {"type": "Set", "element": {"type": "String"}}
                }}},
                "Agent": {"memberOfTypes": ["Role"], "shape": {"type": "Record", "attributes": {
                    "name": {"type": "String"},
                    "digest": {"type": "String"},
                    "groups": {"type": "Set", "element": {"type": "String"}},
                    "roles": {"type": "Set", "element": {"type": "String"}}
                }}},
                "Role": {},
                "Deployment": {}
            },
            "actions": actions
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUNDS: &str = r#"
@id("small-refunds")
permit (principal, action == Action::"acme:payments/refunds.issue-refund", resource)
when { context.amount_cents <= 10000 };

@id("large-refunds-need-approval")
@approval("refund-approver")
permit (principal, action == Action::"acme:payments/refunds.issue-refund", resource)
when { context.amount_cents <= 500000 };

@id("no-test-orders")
forbid (principal, action, resource)
when { context has order_id && context.order_id like "TEST-*" };
"#;

    fn engine() -> PolicyEngine {
        PolicyEngine::new("acme", &[("refunds".into(), REFUNDS.into())]).unwrap()
    }

    fn decide(e: &PolicyEngine, amount: i64, order: &str) -> Verdict {
        e.decide(
            &["refunds"],
            "refund-bot",
            "sha256:x",
            &["refunds".into()],
            "acme:payments/refunds.issue-refund",
            &json!({"order-id": order, "amount-cents": amount}),
        )
        .unwrap()
    }

    #[test]
    fn an_agent_is_a_principal_with_its_roles() {
        let text = r#"
@id("support-cancels")
permit (principal in Role::"support", action == Action::"acme:shop/orders.cancel-order", resource)
when { context.refund_cents <= 5000 };

@id("big-ones")
@approval("order-approver")
permit (principal is Agent, action == Action::"acme:shop/orders.cancel-order", resource)
when { principal.roles.contains("support") && context.refund_cents <= 100000 };

@id("not-mallory")
forbid (principal == Agent::"mallory", action, resource);
"#;
        let e = PolicyEngine::new("shop", &[("orders".into(), text.into())]).unwrap();
        let act = "acme:shop/orders.cancel-order";
        let call = |agent: &str, roles: &[&str], cents: i64| {
            let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            e.decide_agent(
                &["orders"],
                agent,
                &roles,
                act,
                &json!({"refund-cents": cents}),
            )
            .unwrap()
        };
        assert_eq!(
            call("copilot", &["support"], 100),
            Verdict::Allow {
                policies: vec!["orders/support-cancels".into()]
            }
        );
        assert!(
            matches!(call("copilot", &["support"], 20_000), Verdict::Propose { role: Some(r), .. } if r == "order-approver")
        );
        // Without the role, nothing permits it; a forbid names its rule.
        assert!(
            matches!(call("copilot", &["sales"], 100), Verdict::Deny { policies, .. } if policies.is_empty())
        );
        assert!(
            matches!(call("mallory", &["support"], 100), Verdict::Deny { policies, .. } if policies == ["orders/not-mallory"])
        );
        // No group with policies: the grant alone decides.
        assert_eq!(
            e.decide_agent(&["other"], "copilot", &[], act, &json!({})),
            None
        );
        // The schema knows agents and roles: these policies validate.
        let sig = Signature {
            action: act.into(),
            params: vec![("refund-cents".into(), ParamType::Long)],
        };
        assert_eq!(e.validate(&[sig]), Vec::<String>::new());
    }

    #[test]
    fn allow_propose_deny() {
        let e = engine();
        assert_eq!(
            decide(&e, 5_000, "A-1"),
            Verdict::Allow {
                policies: vec!["refunds/small-refunds".into()]
            }
        );
        assert_eq!(
            decide(&e, 200_000, "A-1"),
            Verdict::Propose {
                policies: vec!["refunds/large-refunds-need-approval".into()],
                role: Some("refund-approver".into())
            }
        );
        assert!(
            matches!(decide(&e, 1_000_000, "A-1"), Verdict::Deny { policies, .. } if policies.is_empty())
        );
        assert!(
            matches!(decide(&e, 5_000, "TEST-9"), Verdict::Deny { policies, .. } if policies == vec!["refunds/no-test-orders".to_string()])
        );
    }

    #[test]
    fn ungoverned_groups_leave_it_to_the_grant() {
        let e = engine();
        assert_eq!(
            e.decide(&["other"], "p", "d", &[], "charter:host/kv.get", &json!({})),
            None
        );
    }

    #[test]
    fn schema_validation_catches_a_wrong_attribute() {
        let e = PolicyEngine::new(
            "acme",
            &[(
                "refunds".into(),
                r#"permit (principal, action == Action::"acme:payments/refunds.issue-refund", resource) when { context.amount_dollars < 5 };"#.into(),
            )],
        )
        .unwrap();
        let sig = Signature {
            action: "acme:payments/refunds.issue-refund".into(),
            params: vec![
                ("order-id".into(), ParamType::String),
                ("amount-cents".into(), ParamType::Long),
            ],
        };
        let errs = e.validate(std::slice::from_ref(&sig));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("amount_dollars"), "{errs:?}");
        assert!(engine().validate(&[sig]).is_empty());
    }

    // ---- values Cedar cannot represent, and policies that cannot judge ----

    /// The attack: a cap enforced by a `forbid` beside a blanket `permit`.
    const CAP: &str = r#"
@id("all")
permit (principal, action, resource);

@id("cap")
forbid (principal, action, resource) when { context.amount_cents > 1000 };
"#;

    fn with(policies: &str) -> PolicyEngine {
        PolicyEngine::new("acme", &[("refunds".into(), policies.into())]).unwrap()
    }

    fn call(e: &PolicyEngine, args: Value) -> Verdict {
        e.decide(
            &["refunds"],
            "refund-bot",
            "sha256:x",
            &["refunds".into()],
            "acme:payments/refunds.issue-refund",
            &args,
        )
        .unwrap()
    }

    fn allowed(v: &Verdict) -> bool {
        matches!(v, Verdict::Allow { .. })
    }

    fn denied_because(v: &Verdict, needle: &str) -> bool {
        matches!(v, Verdict::Deny { reason, .. } if reason.contains(needle))
    }

    fn refused_range(v: &Verdict, path: &str, value: &str) -> bool {
        denied_because(
            v,
            &format!("argument {path} = {value} is outside Cedar's Long range (i64); refused"),
        )
    }

    fn unjudged(v: &Verdict, policy: &str) -> bool {
        matches!(v, Verdict::Deny { policies, reason }
            if policies.contains(&policy.to_string())
                && reason.contains("could not be evaluated on these arguments")
                && reason.contains("a call policy cannot judge is denied"))
    }

    #[test]
    fn attack_u64_beyond_i64_does_not_slip_past_a_forbid() {
        let e = with(CAP);
        assert_eq!(
            call(&e, json!({"amount-cents": 500u64})),
            Verdict::Allow {
                policies: vec!["refunds/all".into()]
            }
        );
        let v = call(&e, json!({"amount-cents": 5000u64}));
        assert!(denied_because(&v, "forbidden by refunds/cap"), "{v:?}");
        // i64::MAX + 5: beyond Cedar's Long.
        let v = call(&e, json!({"amount-cents": 9_223_372_036_854_775_813u64}));
        assert!(
            refused_range(&v, "amount_cents", "9223372036854775813"),
            "{v:?}"
        );
    }

    #[test]
    fn u64_extremes() {
        let e = with(CAP);
        // i64::MAX is still a Long: compared, and over the cap.
        let v = call(&e, json!({"amount-cents": i64::MAX as u64}));
        assert!(denied_because(&v, "forbidden by refunds/cap"), "{v:?}");
        let exact = with(
            r#"permit (principal, action, resource) when { context.amount_cents == 9223372036854775807 };"#,
        );
        assert!(allowed(&call(
            &exact,
            json!({"amount_cents": i64::MAX as u64})
        )));
        for n in [i64::MAX as u64 + 1, u64::MAX] {
            let v = call(&e, json!({"amount-cents": n}));
            assert!(refused_range(&v, "amount_cents", &n.to_string()), "{v:?}");
            // Refused whatever the policies say.
            let v = call(
                &with("permit (principal, action, resource);"),
                json!({"amount-cents": n}),
            );
            assert!(matches!(v, Verdict::Deny { .. }), "{v:?}");
        }
    }

    #[test]
    fn s64_extremes() {
        let e = with(CAP);
        assert!(allowed(&call(&e, json!({"amount_cents": i64::MIN}))));
        assert!(allowed(&call(&e, json!({"amount_cents": -1}))));
        let v = call(&e, json!({"amount_cents": i64::MAX}));
        assert!(denied_because(&v, "forbidden by refunds/cap"), "{v:?}");
        let min = with(
            r#"permit (principal, action, resource) when { context.amount_cents == -9223372036854775808 };"#,
        );
        assert!(allowed(&call(&min, json!({"amount_cents": i64::MIN}))));
        assert!(matches!(
            call(&min, json!({"amount_cents": i64::MIN + 1})),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn floats_are_strings_and_comparing_them_denies() {
        let e = with(CAP);
        for v in [
            json!(1.5),
            json!(1e300),
            json!(-0.0),
            json!("NaN"),
            json!("inf"),
            json!("-inf"),
        ] {
            let verdict = call(&e, json!({"amount_cents": v}));
            assert!(unjudged(&verdict, "refunds/cap"), "{v}: {verdict:?}");
        }
        // A float compared as a string works as a string.
        let s = with(
            r#"permit (principal, action, resource) when { context.rate == "1.5" };
forbid (principal, action, resource) when { context has rate && context.rate == "NaN" };"#,
        );
        assert!(allowed(&call(&s, json!({"rate": 1.5}))));
        let v = call(&s, json!({"rate": "NaN"}));
        assert!(matches!(v, Verdict::Deny { .. }), "{v:?}");
    }

    #[test]
    fn a_nan_guarded_by_has_is_present_and_denies() {
        // to_json turns a NaN into "NaN": `has` sees it; the comparison errors.
        let e = with(
            r#"permit (principal, action, resource);
@id("cap")
forbid (principal, action, resource) when { context has rate && context.rate > 3 };"#,
        );
        assert!(allowed(&call(&e, json!({}))));
        assert!(allowed(&call(&e, json!({"rate": null}))));
        let v = call(&e, json!({"rate": "NaN"}));
        assert!(unjudged(&v, "refunds/cap"), "{v:?}");
    }

    #[test]
    fn chars_and_enums_are_strings() {
        let e = with(
            r#"permit (principal, action, resource);
@id("no-errors")
forbid (principal, action, resource) when { context.level == "error" };
@id("no-x")
forbid (principal, action, resource) when { context.grade == "x" };"#,
        );
        assert!(allowed(&call(&e, json!({"level": "info", "grade": "a"}))));
        let v = call(&e, json!({"level": "error", "grade": "a"}));
        assert!(
            denied_because(&v, "forbidden by refunds/no-errors"),
            "{v:?}"
        );
        let v = call(&e, json!({"level": "info", "grade": "x"}));
        assert!(denied_because(&v, "forbidden by refunds/no-x"), "{v:?}");
    }

    #[test]
    fn huge_integer_inside_a_record_is_refused() {
        let e = with(
            r#"permit (principal, action, resource);
forbid (principal, action, resource) when { context.order.amount_cents > 1000 };"#,
        );
        assert!(allowed(&call(
            &e,
            json!({"order": {"id": "A-1", "amount-cents": 10}})
        )));
        let v = call(
            &e,
            json!({"order": {"id": "A-1", "amount-cents": u64::MAX}}),
        );
        assert!(
            refused_range(&v, "order.amount_cents", "18446744073709551615"),
            "{v:?}"
        );
        // Deeper still, and inside a variant payload.
        let v = call(
            &e,
            json!({"order": {"id": "A-1", "amount-cents": 1, "extra": {"tag": "big", "value": {"n": u64::MAX}}}}),
        );
        assert!(
            refused_range(&v, "order.extra.value.n", "18446744073709551615"),
            "{v:?}"
        );
    }

    #[test]
    fn huge_integer_inside_a_list_is_refused() {
        let e = with(
            r#"permit (principal, action, resource);
forbid (principal, action, resource) when { context.amounts.contains(5000) };"#,
        );
        assert!(allowed(&call(&e, json!({"amounts": [1, 2, 3]}))));
        let v = call(&e, json!({"amounts": [1, 5000]}));
        assert!(matches!(v, Verdict::Deny { .. }), "{v:?}");
        let v = call(&e, json!({"amounts": [1, u64::MAX]}));
        assert!(
            refused_range(&v, "amounts[1]", "18446744073709551615"),
            "{v:?}"
        );
        let v = call(&e, json!({"rows": [{"n": 1}, {"n": i64::MAX as u64 + 1}]}));
        assert!(
            refused_range(&v, "rows[1].n", "9223372036854775808"),
            "{v:?}"
        );
    }

    #[test]
    fn options_none_is_absent() {
        let e = with(
            r#"permit (principal, action, resource);
@id("no-notes")
forbid (principal, action, resource) when { context has note };"#,
        );
        assert!(allowed(&call(&e, json!({"note": null}))));
        assert!(allowed(&call(&e, json!({"notes": [null, null]}))));
        let v = call(&e, json!({"note": "hi"}));
        assert!(denied_because(&v, "forbidden by refunds/no-notes"), "{v:?}");
        // An absent option read without `has` errors: denied.
        let bare = with(
            r#"permit (principal, action, resource);
@id("bare")
forbid (principal, action, resource) when { context.note == "x" };"#,
        );
        let v = call(&bare, json!({"note": null}));
        assert!(unjudged(&v, "refunds/bare"), "{v:?}");
    }

    #[test]
    fn an_erroring_permit_beside_a_good_one_denies() {
        let e = with(
            r#"@id("ok")
permit (principal, action, resource);
@id("bad")
permit (principal, action, resource) when { context.amount_cents > 5 };"#,
        );
        assert!(allowed(&call(&e, json!({"amount_cents": 1}))));
        let v = call(&e, json!({"amount_cents": "five"}));
        assert!(unjudged(&v, "refunds/bad"), "{v:?}");
        let Verdict::Deny { policies, reason } = v else {
            unreachable!()
        };
        assert_eq!(policies, vec!["refunds/bad".to_string()]);
        assert!(
            reason.starts_with("policy refunds/bad could not be evaluated on these arguments: "),
            "{reason}"
        );
        // An erroring approval policy does not turn into a proposal either.
        let p = with(
            r#"@id("ask")
@approval("boss")
permit (principal, action, resource) when { context.amount_cents > 5 };"#,
        );
        assert!(unjudged(
            &call(&p, json!({"amount_cents": "five"})),
            "refunds/ask"
        ));
    }

    #[test]
    fn an_erroring_forbid_denies() {
        let e = with(CAP);
        let v = call(&e, json!({"amount_cents": "9223372036854775813"}));
        assert!(unjudged(&v, "refunds/cap"), "{v:?}");
        // Missing attribute (no `has`): the forbid errors, the call is denied.
        let v = call(&e, json!({}));
        assert!(unjudged(&v, "refunds/cap"), "{v:?}");
        // Two erroring policies are both named.
        let two = with(
            r#"permit (principal, action, resource);
@id("a")
forbid (principal, action, resource) when { context.x > 1 };
@id("b")
forbid (principal, action, resource) when { context.y > 1 };"#,
        );
        let v = call(&two, json!({"x": "s", "y": "t"}));
        assert!(
            unjudged(&v, "refunds/a") && unjudged(&v, "refunds/b"),
            "{v:?}"
        );
        assert!(denied_because(&v, "policies refunds/a, refunds/b"), "{v:?}");
    }

    #[test]
    fn u64_and_float_parameters_in_the_schema() {
        let sig = |t: ParamType| Signature {
            action: "acme:payments/refunds.issue-refund".into(),
            params: vec![("amount-cents".into(), t)],
        };
        assert!(with(CAP).validate(&[sig(ParamType::U64)]).is_empty());
        let errs = with(CAP).validate(&[sig(ParamType::Float)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn warnings_for_what_cedar_cannot_compare() {
        let sigs = [
            Signature {
                action: "acme:payments/refunds.issue-refund".into(),
                params: vec![
                    ("order-id".into(), ParamType::String),
                    ("amount-cents".into(), ParamType::U64),
                    ("rate".into(), ParamType::Float),
                    (
                        "lines".into(),
                        ParamType::Set(Box::new(ParamType::Record(vec![
                            ("qty".into(), ParamType::U64),
                            ("sku".into(), ParamType::String),
                        ]))),
                    ),
                    ("unread".into(), ParamType::U64),
                ],
            },
            Signature {
                action: "acme:payments/refunds.lookup".into(),
                params: vec![("amount-cents".into(), ParamType::U64)],
            },
        ];
        let e = with(
            r#"@id("cap")
forbid (principal, action == Action::"acme:payments/refunds.issue-refund", resource)
when { context.amount_cents > 1000 || context.rate == "1" || context has lines };"#,
        );
        let w = e.comparison_warnings(&sigs);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(
            w[0].starts_with("acme:payments/refunds.issue-refund: argument amount_cents is a u64"),
            "{w:#?}"
        );
        assert!(
            w[0].contains("above 9223372036854775807 is refused"),
            "{w:#?}"
        );
        assert!(w[0].contains("(read by policy refunds/cap)"), "{w:#?}");
        assert!(w[1].contains("argument rate is a float"), "{w:#?}");
        assert!(w[2].contains("argument lines[].qty is a u64"), "{w:#?}");
        // A policy over every action reads lookup's amount too.
        let any = with(CAP);
        let w = any.comparison_warnings(&sigs);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[1].starts_with("acme:payments/refunds.lookup: argument amount_cents"));
        // No policy reads them: no warnings.
        assert!(engine().comparison_warnings(&sigs[1..]).is_empty());
    }
}
