//! Agent tools: a plugin's exported functions served to AI agents (over
//! MCP, `charter mcp`), governed like every other call.
//!
//! - **Catalog** ([`Host::tool_catalog`]): for each `[plugins.NAME.tools]`
//!   interface of a loaded plugin, its functions as the component's type
//!   says (wasmtime `component::types`), each with a JSON Schema of its
//!   arguments and result ([`schema`]), its WIT docs, and annotations from
//!   its declared effect and the plugin's grants.
//! - **Visibility**: an agent sees a tool only when the tool's declaration
//!   names it or one of its roles; any other tool does not exist for it
//!   (listing omits it, a call is "unknown tool", recorded).
//! - **A call** ([`Host::call_tool`]): rate limit per agent, the arguments
//!   converted strictly by type ([`convert`]), then Cedar with principal
//!   `Agent::"name"` (in `Role::"r"` for its roles), action
//!   `Action::"iface.func"` and the typed arguments as context, under the
//!   policies of every group naming the function. Allow: the plugin's
//!   function runs in its own store under its own grants, limits and
//!   mediator (the connector path), decision on disk first. Deny: a
//!   refusal naming the rule. Propose: a durable proposal (the agent's
//!   `_reason` is its rationale) that a person decides; on approval the
//!   host executes it once ([`Host::execute_agent_proposal`]) and the agent
//!   reads the result with [`Host::agent_proposal_status`].
//! - Every call policy decides is a `call` event whose initiator is
//!   `agent:NAME` (arguments and their digest, decision, rules), and every
//!   executed one a `call-result` with the result's digest. A call refused
//!   before policy (unknown tool, schema, size, rate) ran nothing and is
//!   counted in an aggregated `tool-refused` event
//!   ([`RateLimiter::due_refusals`]), not as a policy denial.

pub(crate) mod convert;
pub(crate) mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use charter_audit::{Decision, Event, json_digest, now_ms};
use charter_config::{Agent, Deployment, Effect, FunctionName, ToolAccess};
use serde_json::{Value, json};
use wasmtime::component::Val;
use wasmtime::component::types::Type;

use crate::mediator::redact::Redactor;
use crate::mediator::{Mediator, Ruling};
use crate::{Host, LoadedPlugin, record, values};

/// The optional argument every tool accepts: why the agent calls it (the
/// rationale a person reads when the call needs approval).
pub const REASON_ARG: &str = "_reason";

/// The read-only tool every agent has: the state of its own proposals.
pub const STATUS_TOOL: &str = "charter_proposal_status";

/// The longest `_reason` kept (longer is cut).
const MAX_REASON: usize = 2000;

/// MCP's rule for tool names.
pub fn valid_tool_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// MCP's hints about a tool, from its declared effect and its plugin's
/// grants (hints: a client must not rely on them; Charter's policy holds
/// either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    pub read_only_hint: bool,
    pub destructive_hint: bool,
    /// Declared under the tool interface (`idempotent = [...]`).
    pub idempotent_hint: bool,
    pub open_world_hint: bool,
}

/// One function of a tool interface, ready to list and call.
#[derive(Debug, Clone)]
pub struct ToolDef {
    /// The MCP name: `<interface's last segment>.<function>`
    /// (`orders.lookup-order`), or the whole interface with `:` and `/`
    /// as `_` where two tool interfaces share a last segment.
    pub name: String,
    pub plugin: String,
    /// The interface, no version (`acme:shop/orders`).
    pub interface: String,
    /// The export as the component names it (`acme:shop/orders@0.1.0`).
    pub export: String,
    pub function: String,
    pub description: Option<String>,
    pub input_schema: Value,
    /// `{"result": …}` (`null` for a function without a result) or
    /// `{"pending_approval": {"proposal"}}`.
    pub output_schema: Value,
    pub annotations: Annotations,
    pub access: ToolAccess,
    params: Vec<(String, Type)>,
}

impl ToolDef {
    /// `interface.function`: Cedar's action.
    pub fn action(&self) -> String {
        format!("{}.{}", self.interface, self.function)
    }

    /// Whether `agent` may see and call it.
    pub fn visible_to(&self, agent: &Agent) -> bool {
        self.access.admits(&agent.name, &agent.roles)
    }
}

/// What one tool call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    /// It ran: its result (`{"result": …}`, `null` without one) and
    /// whether that result is a WIT `err`.
    Done { result: Value, is_error: bool },
    /// Policy denied it: the rules and why.
    Denied {
        policies: Vec<String>,
        reason: String,
    },
    /// A person decides: the proposal to poll.
    Pending { proposal: String },
    /// Refused before policy: no such tool for this agent, arguments that
    /// do not fit the schema, over size, or over the agent's rate.
    Refused { rule: &'static str, message: String },
    /// The function failed (trap, limit, its own failure).
    Failed(String),
}

/// Per-agent call rate: a fixed one-minute window per agent; and the
/// agents' refused calls, aggregated ([`Event::ToolRefused`]). One per
/// host, shared by every session of every transport.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
    refused: Mutex<HashMap<(String, &'static str), Refusals>>,
}

/// At most one `tool-refused` event per agent and rule per window.
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Refusals of one agent and rule not yet recorded.
#[derive(Debug, Default)]
struct Refusals {
    recorded: Option<Instant>,
    pending: u64,
    tool: String,
    /// Distinct tools of the pending refusals, at most [`REFUSED_TOOLS`].
    tools: Vec<String>,
    detail: String,
}

/// Distinct tool names one `tool-refused` event keeps.
pub const REFUSED_TOOLS: usize = 16;

impl Refusals {
    fn event(&mut self, agent: &str, rule: &str) -> Event {
        Event::ToolRefused {
            agent: agent.to_string(),
            tool: std::mem::take(&mut self.tool),
            tools: std::mem::take(&mut self.tools),
            rule: rule.to_string(),
            count: std::mem::take(&mut self.pending),
            detail: std::mem::take(&mut self.detail),
        }
    }
}

impl RateLimiter {
    /// Count one call of `agent`; `false` when over `per_minute`.
    pub fn admit(&self, agent: &str, per_minute: u32) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let e = w.entry(agent.to_string()).or_insert((now, 0));
        if now.duration_since(e.0).as_secs() >= 60 {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= per_minute
    }

    /// Count one refused call; the event to record now, if one is due
    /// (the first of a window, standing for those counted since the last).
    pub fn refuse(
        &self,
        agent: &str,
        rule: &'static str,
        tool: &str,
        detail: &str,
    ) -> Option<Event> {
        let mut all = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let b = all.entry((agent.to_string(), rule)).or_default();
        b.pending += 1;
        b.tool = record::cut(tool, 128);
        if b.tools.len() < REFUSED_TOOLS && !b.tools.contains(&b.tool) {
            b.tools.push(b.tool.clone());
        }
        b.detail = record::cut(detail, 300);
        let now = Instant::now();
        let due = b
            .recorded
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_WINDOW);
        due.then(|| {
            b.recorded = Some(now);
            b.event(agent, rule)
        })
    }

    /// The refusals counted and not yet recorded whose window is over
    /// (`all`: every one, when a session or the host stops).
    pub fn due_refusals(&self, all: bool) -> Vec<Event> {
        let mut map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut out = Vec::new();
        for ((agent, rule), b) in map.iter_mut() {
            let over = b
                .recorded
                .is_none_or(|t| now.duration_since(t) >= REFUSAL_WINDOW);
            if b.pending > 0 && (all || over) {
                b.recorded = Some(now);
                out.push(b.event(agent, rule));
            }
        }
        out
    }
}

/// The WIT docs of one exported interface, from the component's
/// `package-docs` section (absent: no descriptions, never an error).
struct Docs {
    resolve: wit_parser::Resolve,
    iface: Option<wit_parser::InterfaceId>,
}

impl Docs {
    fn read(bytes: &[u8], export: &str) -> Option<Docs> {
        let decoded = wit_parser::decoding::decode(bytes).ok()?;
        let (resolve, world) = match decoded {
            wit_parser::decoding::DecodedWasm::Component(r, w) => (r, w),
            wit_parser::decoding::DecodedWasm::WitPackage(..) => return None,
        };
        let iface = resolve.worlds[world].exports.iter().find_map(|(k, item)| {
            let wit_parser::WorldItem::Interface { id, .. } = item else {
                return None;
            };
            (resolve.name_world_key(k) == export).then_some(*id)
        });
        Some(Docs { resolve, iface })
    }

    /// The docs of interface `bare` (no version) from WIT source (the
    /// plugin's `wit`, a directory or a file).
    fn from_wit(path: &std::path::Path, bare: &str) -> Option<Docs> {
        let mut resolve = wit_parser::Resolve::new();
        resolve.push_path(path).ok()?;
        let iface = resolve.interfaces.iter().find_map(|(id, _)| {
            let name = resolve.id_of(id)?;
            (name.split('@').next() == Some(bare)).then_some(id)
        })?;
        Some(Docs {
            resolve,
            iface: Some(iface),
        })
    }

    /// Whether the interface carries any doc comment (a component without
    /// `package-docs` decodes to the same interface with none).
    fn any(&self) -> bool {
        let Some(id) = self.iface else { return false };
        let i = &self.resolve.interfaces[id];
        i.docs.contents.is_some()
            || i.functions.values().any(|f| f.docs.contents.is_some())
            || i.types
                .values()
                .any(|t| self.resolve.types[*t].docs.contents.is_some())
    }

    fn function(&self, name: &str) -> Option<&wit_parser::Function> {
        self.resolve.interfaces[self.iface?].functions.get(name)
    }
}

/// Whether `dep` (the configuration in force) still declares `def` and
/// admits `agent` to it: a catalog built under an older configuration
/// never lends a revoked tool.
pub fn admitted_now(dep: &Deployment, def: &ToolDef, agent: &Agent) -> bool {
    dep.plugins
        .get(&def.plugin)
        .and_then(|p| p.tools.get(&def.interface))
        .is_some_and(|a| a.admits(&agent.name, &agent.roles))
}

/// The MCP name of `function` of `interface`, short unless `long`.
fn tool_name(interface: &str, function: &str, long: bool) -> String {
    let base = if long {
        interface.replace([':', '/'], "_")
    } else {
        interface
            .rsplit(['/', ':'])
            .next()
            .unwrap_or(interface)
            .to_string()
    };
    format!("{base}.{function}")
}

impl Host {
    /// Every tool of the deployment, loading the plugins that serve them.
    /// A plugin that cannot load, or a function whose types no tool can
    /// carry, is an error naming it (`charter mcp` refuses to start).
    pub async fn tool_catalog(&self) -> Result<Vec<ToolDef>, String> {
        self.tool_catalog_of(self.deployment()).await
    }

    /// The tools `dep` declares (one configuration's snapshot: the access
    /// lists come from it alone, however long loading takes).
    pub async fn tool_catalog_of(&self, dep: Arc<Deployment>) -> Result<Vec<ToolDef>, String> {
        let mut out = Vec::new();
        for spec in dep.plugins.values().filter(|p| !p.tools.is_empty()) {
            let loaded = self
                .load(&spec.name)
                .await
                .map_err(|e| format!("tool plugin {}: {e}", spec.name))?;
            let bytes = std::fs::read(&spec.path).ok();
            let open_world = !dep.allowed_hosts(spec).is_empty();
            for (iface, access) in &spec.tools {
                let export = loaded.provides.get(iface).cloned().ok_or_else(|| {
                    format!("tool plugin {}: exports no interface {iface}", spec.name)
                })?;
                // The component's own `package-docs`, else the plugin's `wit`.
                let docs = bytes
                    .as_deref()
                    .filter(|b| crate::inspect::digest(b) == loaded.digest)
                    .and_then(|b| Docs::read(b, &export))
                    .filter(Docs::any)
                    .or_else(|| Docs::from_wit(spec.wit.as_deref()?, iface));
                let functions = crate::capabilities::connector::connector_functions(
                    &self.engine,
                    &loaded,
                    iface,
                );
                if let Some(bad) = access
                    .idempotent
                    .iter()
                    .find(|n| !functions.iter().any(|(f, _)| f == *n))
                {
                    return Err(format!(
                        "[plugins.{}.tools.\"{iface}\"] idempotent names {bad:?}, not a function of {iface} (its functions: {})",
                        spec.name,
                        functions
                            .iter()
                            .map(|(f, _)| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                for (fname, f) in functions {
                    let def = tool_def(
                        &dep,
                        &loaded,
                        iface,
                        &export,
                        &fname,
                        &f,
                        access,
                        docs.as_ref(),
                        open_world,
                    )
                    .map_err(|e| format!("tool {iface}.{fname} of plugin {}: {e}", spec.name))?;
                    out.push(def);
                }
            }
        }
        // Short names where they are unique; the whole interface where two
        // tool interfaces share a last segment.
        let mut count: HashMap<String, usize> = HashMap::new();
        for d in &out {
            *count.entry(d.name.clone()).or_default() += 1;
        }
        for d in &mut out {
            if count[&d.name] > 1 {
                d.name = tool_name(&d.interface, &d.function, true);
            }
            if !valid_tool_name(&d.name) || d.name == STATUS_TOOL {
                return Err(format!(
                    "tool {}.{}: its MCP name {:?} is not [A-Za-z0-9_.-]{{1,128}} (or is reserved)",
                    d.interface, d.function, d.name
                ));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Call `tool` (by MCP name) for `agent` with `args` (a JSON object,
    /// `_reason` optional). Every outcome is recorded before this returns.
    /// (Long: the gates in the one order they must run — rate, visibility,
    /// size, types, policy, record, run — each recorded when it refuses.)
    pub async fn call_tool(
        &self,
        catalog: &[ToolDef],
        limiter: &RateLimiter,
        agent: &Agent,
        tool: &str,
        args: &Value,
    ) -> ToolOutcome {
        let initiator = format!("agent:{}", agent.name);
        let def = catalog
            .iter()
            .find(|d| d.name == tool && d.visible_to(agent));
        // Refused before policy: nothing runs, and the record is aggregated
        // (a flood adds one event per agent and rule per window).
        let refuse = |rule: &'static str, message: String| async move {
            if let Some(ev) = limiter.refuse(&agent.name, rule, tool, &message)
                && let Err(e) = self.services.log.append(vec![ev]).await
            {
                return ToolOutcome::Failed(format!("event log: {e}; nothing was called"));
            }
            ToolOutcome::Refused { rule, message }
        };
        if !limiter.admit(&agent.name, agent.calls_per_minute) {
            return refuse(
                "rate-limit",
                format!(
                    "agent {} is over its {} tool calls per minute ([agents.{}] calls_per_minute); wait and retry",
                    agent.name, agent.calls_per_minute, agent.name
                ),
            )
            .await;
        }
        // The agent as the configuration in force declares it: the caller
        // proved it under an older one, whose roles may have been taken
        // away since (a configuration applied mid-call).
        let now = self.deployment();
        let Some(agent) = now.agents.get(&agent.name) else {
            return refuse(
                "unknown-agent",
                format!("agent {} is no longer declared", agent.name),
            )
            .await;
        };
        // A catalog may be older than the configuration in force: the
        // agent's access is checked again against the deployment now.
        let def = def.filter(|d| admitted_now(&now, d, agent));
        let Some(def) = def else {
            return refuse(
                "unknown-tool",
                format!("unknown tool {:?}", record::cut(tool, 128)),
            )
            .await;
        };
        let loaded = match self.load(&def.plugin).await {
            Ok(l) => l,
            Err(e) => return ToolOutcome::Failed(format!("tool plugin {}: {e}", def.plugin)),
        };
        let size = record::json_size(args) as u64;
        if size > loaded.ctx.limits.max_input_bytes {
            return refuse(
                "too-large",
                format!(
                    "arguments are about {size} bytes, over the tool plugin's limits.max_input_bytes ({})",
                    loaded.ctx.limits.max_input_bytes
                ),
            )
            .await;
        }
        let vals = match convert::params(&def.params, args, &[REASON_ARG]) {
            Ok(v) => v,
            Err(e) => {
                return refuse("schema", format!("arguments do not fit {}: {e}", def.name)).await;
            }
        };
        let reason = match args.get(REASON_ARG) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(record::cut(s, MAX_REASON)),
            Some(_) => return refuse("schema", format!("{REASON_ARG}: expected a string")).await,
        };
        let names: Vec<String> = def.params.iter().map(|(n, _)| n.clone()).collect();
        let typed = values::params_json(&names, &vals);
        // A fresh call: its quota applies (an approved one's does not).
        let ruling = crate::quota::limit(
            &self.config().deployment,
            &self.services.quotas,
            &FunctionName::new(&def.interface, &def.function),
            self.rule_agent(agent, def, &typed),
        );
        let mut m = Mediator::new(
            loaded.ctx.clone(),
            self.services.clone(),
            Some(initiator.clone()),
        );
        m.rationale = reason;
        let call = call_id();
        let function = format!("{}#{}", def.export, def.function);
        match ruling.decision {
            Decision::Deny => {
                let ev = m.call_event(&call, &function, &typed, &ruling);
                if let Err(e) = self.services.log.append(vec![ev]).await {
                    return ToolOutcome::Failed(format!("event log: {e}"));
                }
                ToolOutcome::Denied {
                    reason: ruling
                        .reason
                        .clone()
                        .unwrap_or_else(|| "denied by policy".into()),
                    policies: ruling.policies,
                }
            }
            Decision::Propose => {
                let (events, fault) = m.proposal(&call, &function, &typed, &ruling);
                if let Err(e) = self.services.log.append(events).await {
                    return ToolOutcome::Failed(format!("event log: {e}; nothing was proposed"));
                }
                match fault {
                    crate::mediator::Fault::Proposed { id, .. } => {
                        ToolOutcome::Pending { proposal: id }
                    }
                    other => ToolOutcome::Failed(format!("{other:?}")),
                }
            }
            Decision::Allow => {
                let ev = m.call_event(&call, &function, &typed, &ruling);
                // The decision is on disk before the effect.
                if let Err(e) = self.services.log.append(vec![ev]).await {
                    return ToolOutcome::Failed(format!("event log: {e}; not called"));
                }
                self.run_tool(def, &call, &vals, &initiator, None).await
            }
        }
    }

    /// Policy on an agent's call of `def`: every group naming the function
    /// decides, with the agent as principal; no group with policies: the
    /// tool's grant to the agent alone decides.
    fn rule_agent(&self, agent: &Agent, def: &ToolDef, typed: &Value) -> Ruling {
        let fname = FunctionName::new(&def.interface, &def.function);
        // One configuration for the whole decision (groups and policies).
        let config = self.config();
        let groups: Vec<String> = config
            .deployment
            .groups
            .values()
            .filter(|g| g.names_action(&fname))
            .map(|g| g.name.clone())
            .collect();
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        let verdict =
            config
                .policy
                .decide_agent(&refs, &agent.name, &agent.roles, &def.action(), typed);
        Ruling::of_verdict(verdict, "tool-grant", groups)
    }

    /// Run the tool's function in its plugin's own store (grants, limits,
    /// mediator) and record its result (digest and summary) with the
    /// plugin's own events.
    async fn run_tool(
        &self,
        def: &ToolDef,
        call: &str,
        vals: &[Val],
        initiator: &str,
        proposal: Option<String>,
    ) -> ToolOutcome {
        let started = Instant::now();
        let function = format!("{}#{}", def.export, def.function);
        let plugin = def.plugin.clone();
        // What leaves for the agent and the log passes the tool plugin's
        // own redaction point, as a step's output does (SECURITY 12): a
        // secret the tool read is never handed back or recorded.
        let mut shown: Option<Value> = None;
        let result_event = |out: &Result<Vec<Val>, String>, redactor: &Redactor| {
            let (ok, summary, result) = match out {
                Ok(v) => {
                    let raw = Value::Array(v.iter().map(values::to_json).collect());
                    let j = redactor.redact_value(&raw);
                    shown = Some(j.clone());
                    let text = record::cut(&j.to_string(), 300);
                    let keep = (record::json_size(&j) <= record::MAX_RESULT).then(|| j.clone());
                    (true, format!("result {}: {text}", json_digest(&j)), keep)
                }
                Err(e) => (false, record::text(&redactor.redact(e)), None),
            };
            vec![Event::CallResult {
                call: call.to_string(),
                plugin: plugin.clone(),
                function: function.clone(),
                ok,
                summary,
                duration_us: started.elapsed().as_micros() as u64,
                proposal: proposal.clone(),
                result,
            }]
        };
        // An approved proposal's execution: the tool's outbound calls carry
        // keys derived from the proposal (`charter:P-…:<n>`), the same at a
        // re-execution after a crash between the effect and its record.
        let approved = proposal.as_deref().map(|p| format!("charter:{p}"));
        let out = crate::capabilities::connector::invoke_connector(
            &self.services,
            &def.interface,
            &def.function,
            vals,
            Some(initiator.to_string()),
            None,
            approved.as_deref(),
            result_event,
        )
        .await;
        match out {
            Ok(v) => result_value(&v, shown.as_ref()),
            Err(e) => ToolOutcome::Failed(e),
        }
    }

    /// Execute an approved proposal an agent made: the agent and the tool
    /// must still be declared and visible to it, the policy in force is
    /// asked again (a deny now refuses), and the function runs once with
    /// exactly the approved arguments. Called by [`Host::decide`] on the
    /// last approval.
    pub(crate) async fn execute_agent_proposal(
        &self,
        p: &crate::index::ProposalState,
        agent: &str,
        approvers: &[String],
    ) -> Result<Value, String> {
        let agent = self
            .deployment()
            .agents
            .get(agent)
            .ok_or_else(|| format!("agent {agent} is no longer declared"))?
            .clone();
        let catalog = self.tool_catalog().await?;
        let (export, func) = p
            .function
            .split_once('#')
            .ok_or("malformed function name")?;
        let def = catalog
            .iter()
            .find(|d| d.export == export && d.function == func && d.plugin == p.plugin)
            .filter(|d| d.visible_to(&agent))
            .ok_or_else(|| format!("{} is no longer a tool of agent {}", p.function, agent.name))?;
        let loaded = self.load(&def.plugin).await.map_err(|e| e.to_string())?;
        if loaded.digest != p.digest {
            return Err(format!(
                "plugin {} changed since the proposal ({} → {}); propose again",
                p.plugin, p.digest, loaded.digest
            ));
        }
        let vals = def
            .params
            .iter()
            .map(|(n, t)| values::from_json(p.args.get(n).unwrap_or(&Value::Null), t))
            .collect::<Result<Vec<_>, _>>()?;
        let initiator = format!("agent:{}", agent.name);
        let m = Mediator::new(
            loaded.ctx.clone(),
            self.services.clone(),
            Some(initiator.clone()),
        );
        let ruling = self.rule_agent(&agent, def, &p.args);
        if ruling.decision == Decision::Deny {
            let ev = m.call_event(&p.call, &p.function, &p.args, &ruling);
            self.services
                .log
                .append(vec![ev])
                .await
                .map_err(|e| e.to_string())?;
            return Err(format!(
                "the policy in force now denies it: {}",
                ruling.reason.unwrap_or_default()
            ));
        }
        // Executed already (a crash between the run and the proposal's
        // resolution): its recorded outcome, never a second run.
        if let Some(done) = self.executed_before(p)? {
            return done;
        }
        let approved = ruling.approved_by(approvers);
        let ev = m.call_event(&p.call, &p.function, &p.args, &approved);
        self.services
            .log
            .append(vec![ev])
            .await
            .map_err(|e| e.to_string())?;
        match self
            .run_tool(def, &p.call, &vals, &initiator, Some(p.id.clone()))
            .await
        {
            ToolOutcome::Done { result, .. } => Ok(result),
            ToolOutcome::Failed(e) => Err(e),
            other => Err(format!("{other:?}")),
        }
    }

    /// The outcome of `p`'s call if an approved execution of it is in the
    /// log already: its recorded result, its failure, or (no result: the
    /// host stopped while it ran) a failure saying it is not run again.
    fn executed_before(
        &self,
        p: &crate::index::ProposalState,
    ) -> Result<Option<Result<Value, String>>, String> {
        let records = self
            .services
            .log
            .read_all()
            .map_err(|e| format!("event log: {e}"))?;
        let ran = records.iter().any(|r| {
            matches!(&r.event, Event::Call { call, policies, .. }
                if *call == p.call && policies.iter().any(|x| x.starts_with("approved-by:")))
        });
        if !ran {
            return Ok(None);
        }
        let outcome = records.iter().rev().find_map(|r| match &r.event {
            Event::CallResult {
                call,
                ok,
                summary,
                result,
                ..
            } if *call == p.call => Some(if *ok {
                let first = match result {
                    Some(Value::Array(v)) => v.first().cloned().unwrap_or(Value::Null),
                    _ => json!("<not recorded: too large>"),
                };
                Ok(json!({ "result": first }))
            } else {
                Err(summary.clone())
            }),
            _ => None,
        });
        Ok(Some(outcome.unwrap_or_else(|| {
            Err(format!(
                "call {} of proposal {} was started before the host stopped and its outcome is not recorded; it is not run again (check the system it acts on)",
                p.call, p.id
            ))
        })))
    }

    /// The state of proposal `id` as its agent may see it: only its own
    /// proposals exist for it. Executed: the recorded result of the call.
    pub fn agent_proposal_status(&self, agent: &Agent, id: &str) -> Result<Value, String> {
        let unknown = || {
            format!(
                "no proposal {:?} of agent {}",
                record::cut(id, 64),
                agent.name
            )
        };
        let p = self.proposal(id).ok_or_else(unknown)?;
        if p.initiator.as_deref() != Some(format!("agent:{}", agent.name).as_str()) {
            return Err(unknown());
        }
        let status = if p.status == "pending" && p.is_expired(now_ms()) {
            "expired".to_string()
        } else {
            p.status.clone()
        };
        let mut out = json!({
            "proposal": p.id,
            "status": status,
            "function": p.function,
            "approvals": p.approvals,
            "approvals_needed": p.approvals_needed,
        });
        if let Some(d) = &p.detail {
            out["detail"] = json!(d);
        }
        if status == "executed" {
            // The index keeps the executed result: a poll never reads the
            // log (an agent may poll as often as its rate allows).
            out["result"] = p.result.clone().unwrap_or(Value::Null);
        }
        Ok(out)
    }
}

/// A function's results as a tool result.
/// The agent's answer: the (redacted) JSON of the function's result.
fn result_value(vals: &[Val], shown: Option<&Value>) -> ToolOutcome {
    let first = shown.and_then(|j| j.get(0)).cloned().unwrap_or(Value::Null);
    ToolOutcome::Done {
        result: json!({ "result": first }),
        is_error: matches!(vals.first(), Some(Val::Result(Err(_)))),
    }
}

/// How every tool-level call's id begins (the calls a running tool makes
/// itself are `<step>/<n>`): the per-agent KPIs count only these.
pub const TOOL_CALL_PREFIX: &str = "agent-";

fn call_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{TOOL_CALL_PREFIX}{:x}-{}-{n:x}",
        now_ms(),
        std::process::id()
    )
}

/// One tool from one exported function. (Long: its argument schemas, its
/// one output shape and its annotations, each a few lines, in one place.)
#[allow(clippy::too_many_arguments)]
fn tool_def(
    dep: &charter_config::Deployment,
    loaded: &LoadedPlugin,
    iface: &str,
    export: &str,
    fname: &str,
    f: &wasmtime::component::types::ComponentFunc,
    access: &ToolAccess,
    docs: Option<&Docs>,
    open_world: bool,
) -> Result<ToolDef, String> {
    let wf = docs.and_then(|d| d.function(fname));
    fn wit<'a>(docs: Option<&'a Docs>, ty: &'a wit_parser::Type) -> Option<schema::Wit<'a>> {
        docs.map(|d| schema::Wit {
            resolve: &d.resolve,
            ty,
        })
    }
    let params: Vec<(String, Type)> = f.params().map(|(n, t)| (n.to_string(), t)).collect();
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    for (i, (n, t)) in params.iter().enumerate() {
        let wp = wf.and_then(|w| w.params.get(i)).filter(|p| p.name == *n);
        let s = schema::schema(t, wp.and_then(|p| wit(docs, &p.ty)), schema::Dir::Input)
            .map_err(|e| format!("argument {n}: {e}"))?;
        if !matches!(t, Type::Option(_)) {
            required.push(json!(n));
        }
        props.insert(n.clone(), s);
    }
    props.insert(
        REASON_ARG.into(),
        json!({"type": "string", "maxLength": MAX_REASON, "description": "Why you make this call: a person reads it if the call needs approval."}),
    );
    let input_schema = json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    // One shape for every outcome an agent can be handed without error:
    // the function's result, or the proposal a person decides.
    let result = match f.results().next() {
        None => json!({"type": "null"}),
        Some(t) => {
            let wr = wf.and_then(|w| w.result.as_ref());
            schema::schema(&t, wr.and_then(|r| wit(docs, r)), schema::Dir::Output)
                .map_err(|e| format!("result: {e}"))?
        }
    };
    let output_schema = json!({
        "type": "object",
        "properties": {
            "result": result,
            "pending_approval": {
                "type": "object",
                "description": "The call waits for a person: poll charter_proposal_status with this proposal id.",
                "properties": {"proposal": {"type": "string"}},
                "required": ["proposal"],
            },
        },
        "additionalProperties": false,
        "oneOf": [{"required": ["result"]}, {"required": ["pending_approval"]}],
    });
    let effect = dep.function_effect(&FunctionName::new(iface, fname));
    let annotations = Annotations {
        read_only_hint: effect == Effect::Read,
        destructive_hint: effect == Effect::Write,
        idempotent_hint: access.idempotent.iter().any(|n| n == fname),
        open_world_hint: open_world,
    };
    Ok(ToolDef {
        name: tool_name(iface, fname, false),
        plugin: loaded.name.clone(),
        interface: iface.to_string(),
        export: export.to_string(),
        function: fname.to_string(),
        description: wf
            .and_then(|w| w.docs.contents.clone())
            .map(|d| d.trim().to_string()),
        input_schema,
        output_schema,
        annotations,
        access: access.clone(),
        params,
    })
}

#[cfg(test)]
mod tests;
