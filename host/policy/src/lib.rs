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
//! **Architecture invariant:** pure logic, no IO; it never sees a secret
//! value (the caller redacts).

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
    Long,
    Bool,
    /// Floats, resources and anything else Cedar cannot compare: passed as
    /// a string.
    Opaque,
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

/// The policies of every group of a deployment.
pub struct PolicyEngine {
    deployment: String,
    groups: BTreeMap<String, PolicySet>,
    cache: Mutex<HashMap<Vec<String>, Arc<PolicySet>>>,
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
            authorizer: Authorizer::new(),
        })
    }

    /// Does `group` carry policies?
    pub fn governs(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    fn set_for(&self, groups: &[&str]) -> Arc<PolicySet> {
        let mut key: Vec<String> = groups
            .iter()
            .filter(|g| self.governs(g))
            .map(|g| g.to_string())
            .collect();
        key.sort();
        key.dedup();
        let mut cache = self.cache.lock().unwrap();
        cache
            .entry(key.clone())
            .or_insert_with(|| {
                let mut set = PolicySet::new();
                for g in &key {
                    for p in self.groups[g].policies() {
                        let _ = set.add(p.clone());
                    }
                }
                Arc::new(set)
            })
            .clone()
    }

    /// Decide a call of `action` (`interface.function`) by `plugin` with
    /// `args` (a JSON object, snake_case keys), under the policies of
    /// `groups` (the plugin's groups that grant the function). `None` when
    /// none of those groups has policies: the grant alone decides.
    pub fn decide(
        &self,
        groups: &[&str],
        plugin: &str,
        digest: &str,
        plugin_groups: &[String],
        action: &str,
        args: &Value,
    ) -> Option<Verdict> {
        if !groups.iter().any(|g| self.governs(g)) {
            return None;
        }
        let set = self.set_for(groups);
        let deny = |reason: String| {
            Some(Verdict::Deny {
                policies: vec![],
                reason,
            })
        };
        let principal = match uid("Plugin", plugin) {
            Ok(u) => u,
            Err(e) => return deny(e),
        };
        let (Ok(action_uid), Ok(resource)) =
            (uid("Action", action), uid("Deployment", &self.deployment))
        else {
            return deny("bad action or deployment name".into());
        };
        let entities = Entities::from_json_value(
            json!([{
                "uid": {"type": "Plugin", "id": plugin},
                "attrs": {"name": plugin, "digest": digest, "groups": plugin_groups},
                "parents": []
            }]),
            None,
        );
        let entities = match entities {
            Ok(e) => e,
            Err(e) => return deny(format!("cannot build the principal entity: {e}")),
        };
        let context = match Context::from_json_value(cedar_json(args), None) {
            Ok(c) => c,
            Err(e) => return deny(format!("arguments do not convert to a Cedar context: {e}")),
        };
        let request = match Request::new(principal, action_uid, resource, context, None) {
            Ok(r) => r,
            Err(e) => return deny(format!("bad request: {e}")),
        };
        let resp = self.authorizer.is_authorized(&request, &set, &entities);
        let reasons: Vec<String> = resp.diagnostics().reason().map(|p| p.to_string()).collect();
        let errors: Vec<String> = resp.diagnostics().errors().map(|e| e.to_string()).collect();
        Some(match resp.decision() {
            cedar_policy::Decision::Deny => {
                let reason = if reasons.is_empty() {
                    let mut r = "no policy permits this call".to_string();
                    if !errors.is_empty() {
                        r.push_str(&format!(" (policy errors: {})", errors.join("; ")));
                    }
                    r
                } else {
                    format!("forbidden by {}", reasons.join(", "))
                };
                Verdict::Deny {
                    policies: reasons,
                    reason,
                }
            }
            cedar_policy::Decision::Allow => {
                let plain: Vec<String> = reasons
                    .iter()
                    .filter(|id| {
                        set.annotation(&PolicyId::new(id.as_str()), "approval")
                            .is_none()
                    })
                    .cloned()
                    .collect();
                if !plain.is_empty() {
                    Verdict::Allow { policies: plain }
                } else {
                    let role = reasons
                        .iter()
                        .find_map(|id| set.annotation(&PolicyId::new(id.as_str()), "approval"))
                        .filter(|r| !r.is_empty())
                        .map(str::to_string);
                    Verdict::Propose {
                        policies: reasons,
                        role,
                    }
                }
            }
        })
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
        }
        out
    }
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    EntityUid::from_json(json!({"type": ty, "id": id})).map_err(|e| format!("{ty}::{id:?}: {e}"))
}

/// Make JSON arguments fit Cedar: floats become strings, numbers out of
/// i64 range become strings, nulls (absent options) are dropped.
fn cedar_json(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_i64() => v.clone(),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(a) => {
            Value::Array(a.iter().filter(|x| !x.is_null()).map(cedar_json).collect())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (snake(k), cedar_json(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn type_json(t: &ParamType) -> Value {
    match t {
        ParamType::String | ParamType::Opaque => json!({"type": "String"}),
        ParamType::Long => json!({"type": "Long"}),
        ParamType::Bool => json!({"type": "Boolean"}),
        ParamType::Set(e) => json!({"type": "Set", "element": type_json(e)}),
        ParamType::Optional(inner) => type_json(inner),
        ParamType::Record(fields) => json!({"type": "Record", "attributes": attrs(fields)}),
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

/// The Cedar schema (JSON form) for a set of capability signatures.
pub fn schema_json(signatures: &[Signature]) -> Value {
    let mut actions = serde_json::Map::new();
    for s in signatures {
        actions.insert(
            s.action.clone(),
            json!({
                "appliesTo": {
                    "principalTypes": ["Plugin"],
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
}
