//! Workflow definitions: ordered steps, each a plugin call with its input
//! built from the run's input and earlier outputs, a retry policy, a
//! timeout, an on-failure path and an optional condition.
//!
//! ```toml
//! # workflows/refund.toml (beside charter.toml), or inline as [workflows.refund]
//! description = "Triage a refund request, refund small amounts"
//! escalate_to = "refund-approver"     # who handles escalations by default
//!
//! [[steps]]
//! id = "triage"
//! plugin = "refund-triage"
//! input = { order_id = "$/input/order_id", request = "$/input/request" }
//! timeout_ms = 2000
//! retry = { max_attempts = 3, initial_backoff_ms = 100, max_backoff_ms = 2000, jitter = 0.2 }
//! on_failure = "escalate"               # or "fail", or { step = "notify" }
//! escalation_deadline_ms = 14400000     # open 4 h without a resolution: the run fails
//!
//! [[steps]]
//! id = "refund"
//! plugin = "refund-bot"
//! when = { path = "$/steps/triage/recommendation", equals = "refund" }
//! input = "$/steps/triage"
//! ```
//!
//! **Input templates.** A step's `input` is any TOML value; every string in
//! it that starts with `$/` is replaced by the JSON value at that JSON
//! pointer (RFC 6901) in the run's context document
//! `{"input": <run input>, "steps": {<id>: <output>, ...}, "run": {"id", "workflow", "attempt"}}`
//! (`attempt` counts from 1).
//! A string starting with `$$` stands for itself without the first `$`.
//! Without `input`, a step gets the previous step's output (the run's
//! input for the first step). A pointer that names nothing fails the step
//! (fatal: a workflow bug, not a transient fault).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One workflow of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    /// Role escalations go to when a step names none (and for
    /// non-deterministic steps). Default `operator`.
    pub escalate_to: String,
    pub steps: Vec<StepSpec>,
    /// Where it was defined (the deployment file or `workflows/NAME.toml`).
    pub source: std::path::PathBuf,
    /// What starts its runs besides a request (`triggers.rs`); not part
    /// of the definition a run follows (nor of its digest).
    #[serde(skip, default)]
    pub triggers: crate::triggers::Triggers,
}

/// One step of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub id: String,
    pub plugin: String,
    /// Input template (see the module docs); `None`: the previous output.
    #[serde(default)]
    pub input: Option<Value>,
    /// Run the step only if this holds; otherwise it is skipped.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Wall-clock bound of one attempt (also caps the plugin's deadline).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// With `on_failure` escalating: how long the escalation may stay open
    /// before the running host's timers fail the run (recorded as resolved
    /// by `deadline`). `None`: it waits for people as long as it takes.
    #[serde(default)]
    pub escalation_deadline_ms: Option<u64>,
    /// A handler runs only as another step's `on_failure = { step = ... }`
    /// target, never in the normal sequence.
    #[serde(default)]
    pub handler: bool,
}

/// A condition on the run's context document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// `$/...` pointer into the context document.
    pub path: String,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub not_equals: Option<Value>,
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub exists: Option<bool>,
}

impl Condition {
    /// Whether the condition holds for `found` (the value at `path`).
    pub fn holds(&self, found: Option<&Value>) -> bool {
        if let Some(e) = self.exists
            && found.is_some() != e
        {
            return false;
        }
        if let Some(v) = &self.equals
            && found != Some(v)
        {
            return false;
        }
        if let Some(v) = &self.not_equals
            && found == Some(v)
        {
            return false;
        }
        if let Some(set) = &self.one_of
            && !found.is_some_and(|f| set.contains(f))
        {
            return false;
        }
        true
    }
}

/// Failure classes a retry policy can name.
pub const FAILURE_CLASSES: &[&str] = &[
    "retryable", // the step returned step-error::retryable
    "timeout",   // the attempt ran past its timeout or deadline
    "limit",     // memory, host-call or output limit
    "trap",      // the guest trapped (panic, bug)
    "fatal",     // step-error::fatal (retrying makes no sense, but allowed)
];

/// Failure classes that are never retried, whatever the policy says:
/// governance decisions and non-determinism.
pub const NEVER_RETRIED: &[&str] = &["denied", "rejected", "nondeterministic", "input", "load"];

/// Retries with exponential backoff.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, including the first. 1 = no retry.
    #[serde(default = "one")]
    pub max_attempts: u32,
    #[serde(default = "initial_backoff")]
    pub initial_backoff_ms: u64,
    #[serde(default = "max_backoff")]
    pub max_backoff_ms: u64,
    /// Fraction of the delay added or taken away at random (0.0..=1.0).
    #[serde(default)]
    pub jitter: f64,
    /// Which failure classes retry (see [`FAILURE_CLASSES`]).
    #[serde(default = "default_on")]
    pub on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: initial_backoff(),
            max_backoff_ms: max_backoff(),
            jitter: 0.0,
            on: default_on(),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, given a number in 0..1 for
    /// the jitter (the engine derives it from the run, step and attempt so
    /// that it is recorded and reproducible).
    pub fn backoff_ms(&self, attempt: u32, unit: f64) -> u64 {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms) as f64;
        let j = self.jitter.clamp(0.0, 1.0);
        (base * (1.0 - j + 2.0 * j * unit.clamp(0.0, 1.0))).round() as u64
    }

    pub fn retries(&self, class: &str) -> bool {
        !NEVER_RETRIED.contains(&class) && self.on.iter().any(|c| c == class)
    }
}

fn one() -> u32 {
    1
}
fn initial_backoff() -> u64 {
    200
}
fn max_backoff() -> u64 {
    30_000
}
fn default_on() -> Vec<String> {
    vec!["retryable".into(), "timeout".into()]
}

/// What happens when a step fails for good (retries exhausted or not
/// retryable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub enum OnFailure {
    /// The run fails.
    #[default]
    Fail,
    /// A recorded handoff to people holding `role` (`None`: the workflow's
    /// `escalate_to`); the run waits until someone resolves it.
    Escalate(Option<String>),
    /// Run the named step next (a handler or a later step).
    Step(String),
}

impl<'de> Deserialize<'de> for OnFailure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Table(BTreeMap<String, String>),
            /// As it serializes (`{"Escalate": null}`): a kept definition
            /// reads back (`charter_runtime::hot::config`).
            Serialized(BTreeMap<String, Option<String>>),
        }
        use serde::de::Error;
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "fail" || w == "Fail" => Ok(OnFailure::Fail),
            Raw::Word(w) if w == "escalate" => Ok(OnFailure::Escalate(None)),
            Raw::Serialized(t) if t.len() == 1 => match t.into_iter().next().unwrap() {
                (k, role) if k == "Escalate" => Ok(OnFailure::Escalate(role)),
                (k, Some(step)) if k == "Step" => Ok(OnFailure::Step(step)),
                (k, _) => Err(D::Error::custom(format!("on_failure: unknown key {k:?}"))),
            },
            Raw::Table(t)
                if t.len() == 1 && (t.contains_key("Escalate") || t.contains_key("Step")) =>
            {
                let (k, v) = t.into_iter().next().unwrap();
                Ok(if k == "Step" {
                    OnFailure::Step(v)
                } else {
                    OnFailure::Escalate(Some(v))
                })
            }
            Raw::Table(t) if t.len() == 1 => {
                let (k, v) = t.into_iter().next().unwrap();
                match k.as_str() {
                    "escalate" => Ok(OnFailure::Escalate(Some(v))),
                    "step" => Ok(OnFailure::Step(v)),
                    _ => Err(D::Error::custom(format!(
                        "on_failure: unknown key {k:?}; use \"fail\", \"escalate\", {{ escalate = \"role\" }} or {{ step = \"id\" }}"
                    ))),
                }
            }
            _ => Err(D::Error::custom(
                "on_failure must be \"fail\", \"escalate\", { escalate = \"role\" } or { step = \"id\" }",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkflowFile {
    description: Option<String>,
    escalate_to: Option<String>,
    steps: Vec<StepSpec>,
    #[serde(default)]
    triggers: crate::triggers::TriggersFile,
}

impl WorkflowFile {
    pub(crate) fn into_workflow(self, name: String, source: &Path) -> Result<Workflow, String> {
        let triggers = self.triggers.into_triggers(&name)?;
        Ok(Workflow {
            name,
            description: self.description,
            escalate_to: self.escalate_to.unwrap_or_else(|| "operator".into()),
            steps: self.steps,
            source: source.to_owned(),
            triggers,
        })
    }
}

/// Read every `*.toml` in `dir` as a workflow named by the file stem.
pub(crate) fn read_dir(
    dir: &Path,
) -> Result<Vec<(String, WorkflowFile, std::path::PathBuf)>, String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for p in paths {
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let wf: WorkflowFile = toml::from_str(&text)
            .map_err(|e| format!("{}: {}", p.display(), crate::describe_toml_error(&e, &text)))?;
        out.push((name, wf, p));
    }
    Ok(out)
}

/// Split `$/a/b` into JSON pointer tokens (`~1` and `~0` unescaped).
pub fn pointer_tokens(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('$')?;
    if rest.is_empty() {
        return Some(vec![]);
    }
    let rest = rest.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

impl Workflow {
    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// Every problem `charter check` reports for this workflow: unknown
    /// plugins, unknown or duplicate step ids, pointers that cannot name
    /// anything, cycles through `on_failure` targets, bad retry policies.
    pub fn problems(&self, plugins: &BTreeSet<&str>) -> Vec<String> {
        let mut out = Vec::new();
        let w = &self.name;
        if self.steps.is_empty() {
            out.push(format!("workflow {w}: no steps"));
        }
        let mut seen = BTreeSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            let at = format!("workflow {w}, step {}", s.id);
            if crate::check_name("step", &s.id).is_err() {
                out.push(format!(
                    "{at}: step id must be lowercase letters, digits, '-' or '_'"
                ));
            }
            if !seen.insert(s.id.as_str()) {
                out.push(format!("{at}: duplicate step id"));
            }
            if !plugins.contains(s.plugin.as_str()) {
                let known: Vec<_> = plugins.iter().copied().collect();
                out.push(format!(
                    "{at}: unknown plugin {:?} (plugins: {})",
                    s.plugin,
                    known.join(", ")
                ));
            }
            // Pointers may name the input, the run, or steps before this one.
            let earlier: BTreeSet<&str> = self.steps[..i].iter().map(|s| s.id.as_str()).collect();
            let mut pointers = Vec::new();
            if let Some(t) = &s.input {
                collect_pointers(t, &mut pointers);
            }
            if let Some(c) = &s.when {
                pointers.push(c.path.clone());
            }
            for p in pointers {
                if let Some(e) = pointer_problem(&p, &earlier) {
                    out.push(format!("{at}: {e}"));
                }
            }
            if s.retry.max_attempts == 0 {
                out.push(format!("{at}: retry.max_attempts must be at least 1"));
            }
            if !(0.0..=1.0).contains(&s.retry.jitter) {
                out.push(format!("{at}: retry.jitter must be between 0.0 and 1.0"));
            }
            for c in &s.retry.on {
                if !FAILURE_CLASSES.contains(&c.as_str()) {
                    out.push(format!(
                        "{at}: retry.on: unknown failure class {c:?} (classes: {}; governance refusals and non-determinism never retry)",
                        FAILURE_CLASSES.join(", ")
                    ));
                }
            }
            if let OnFailure::Step(t) = &s.on_failure {
                match self.index_of(t) {
                    None => out.push(format!("{at}: on_failure names unknown step {t:?}")),
                    Some(j) if j <= i => out.push(format!(
                        "{at}: on_failure step {t:?} is not after this step: that would be a cycle"
                    )),
                    _ => {}
                }
            }
            if s.timeout_ms == Some(0) {
                out.push(format!("{at}: timeout_ms must be positive"));
            }
            match (s.escalation_deadline_ms, &s.on_failure) {
                (Some(0), _) => out.push(format!("{at}: escalation_deadline_ms must be positive")),
                (Some(_), OnFailure::Escalate(_)) | (None, _) => {}
                (Some(_), _) => out.push(format!(
                    "{at}: escalation_deadline_ms needs on_failure = \"escalate\" (this step's failures never escalate)"
                )),
            }
        }
        if self.steps.iter().all(|s| s.handler) && !self.steps.is_empty() {
            out.push(format!(
                "workflow {w}: every step is a handler; nothing would run"
            ));
        }
        out
    }
}

fn collect_pointers(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with("$/") || s == "$" => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_pointers(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_pointers(x, out)),
        _ => {}
    }
}

fn pointer_problem(p: &str, earlier: &BTreeSet<&str>) -> Option<String> {
    let Some(tokens) = pointer_tokens(p) else {
        return Some(format!(
            "bad pointer {p:?}: write $/input/..., $/steps/<id>/... or $/run/..."
        ));
    };
    match tokens.first().map(String::as_str) {
        None => None,
        Some("input") | Some("run") => None,
        Some("steps") => match tokens.get(1) {
            None => None,
            Some(id) if earlier.contains(id.as_str()) => None,
            Some(id) => Some(format!(
                "pointer {p:?} names step {id:?}, which does not run before this one"
            )),
        },
        Some(other) => Some(format!(
            "pointer {p:?} starts with {other:?}; the context has only input, steps and run"
        )),
    }
}
