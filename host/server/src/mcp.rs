//! Agent tools over the Model Context Protocol: one server type
//! ([`Tools`]), two transports — stdio (`charter mcp --agent NAME`, one
//! agent proven by `CHARTER_TOKEN`) and streamable HTTP at `/mcp` on
//! `charter up` ([`http_service`], every request proven by its bearer
//! token, [`agent_only`]). What an agent may see and call, and how each
//! call is decided and recorded, is `charter_runtime::tools`; this module
//! only proves who asks, keeps the catalog current and speaks MCP.
//!
//! **Who asks.** An agent's token, nothing else: over HTTP a person's or
//! a service's valid token is a 403 (`not-an-agent`), no or a bad token a
//! 401, both recorded (bounded as every refused authentication is). A
//! session serves the agent that first proved itself on it: another
//! agent's token on the same session is refused (`wrong-identity`), and
//! every request (HTTP) or call (stdio) proves the token again, so an
//! expired token ends the agent's reach at once, and so does a revoked one
//! on `charter up` (which follows the configuration in force; `charter
//! mcp` serves the configuration it started with until restarted). Refused
//! proofs are recorded bounded as every refused authentication is.
//!
//! **What it sees.** The catalog follows the serving generation: a plugin
//! activated or a configuration applied (a new tool, a grant taken away)
//! is what the next listing and call see; a session whose visible list
//! changed is sent `notifications/tools/list_changed`.
//!
//! **Rate.** One limiter per host for every session and transport: an
//! agent cannot reset its calls per minute by opening another session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use charter_api::{ApiError, Control, ErrorClass};
use charter_audit::Event;
use charter_config::{Agent, IdentityKind};
use charter_runtime::Host;
use charter_runtime::tools::{RateLimiter, STATUS_TOOL, ToolDef, ToolOutcome};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Extensions, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::App;

/// The agent an `/mcp` request proved (set by [`agent_only`], read by
/// [`Tools`] from the request's parts).
#[derive(Debug, Clone)]
pub struct AgentProof(pub String);

/// What serves every session of one host: the control surface, the
/// per-agent rate and the catalog of the generation in force.
#[derive(Debug)]
pub struct Shared {
    control: Arc<Control>,
    limiter: RateLimiter,
    catalog: tokio::sync::Mutex<Option<(CatalogKey, Arc<Vec<ToolDef>>)>>,
    /// `/mcp` session id → the agent that opened it: a request carrying a
    /// session id is served only for that agent (every method); and the
    /// session openings under way, counted against the caps.
    sessions: Mutex<Sessions>,
    /// Refused proofs inside a session (stdio proves every request again),
    /// recorded bounded like every refused authentication.
    refusals: crate::refusals::Refusals,
    /// rmcp's sessions (ended ones leave `sessions` at the next count).
    manager: Arc<LocalSessionManager>,
}

/// The sessions bound to agents, and the openings still being answered:
/// an opening holds its place from the check to the answer, so requests
/// racing to open sessions cannot together pass the caps.
#[derive(Debug, Default)]
struct Sessions {
    bound: HashMap<String, String>,
    /// Opening number → its agent.
    opening: HashMap<u64, String>,
    next: u64,
}

/// An opening's place under the caps, given back when the request ends
/// (answered, refused or dropped mid-way).
struct Opening<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut s = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.opening.remove(&self.id);
    }
}

/// `/mcp` sessions one agent may hold open at once (the next is refused).
pub const SESSIONS_PER_AGENT: usize = 8;
/// `/mcp` sessions open at once over every agent.
pub const SESSIONS_TOTAL: usize = 256;

/// What a catalog was built from: the configuration's number and the
/// digest of each tool plugin serving (none: not loaded yet).
type CatalogKey = (u64, Vec<(String, Option<String>)>);

fn catalog_key(host: &Host) -> CatalogKey {
    let g = host.generation();
    let plugins = g
        .config
        .deployment
        .plugins
        .values()
        .filter(|p| !p.tools.is_empty())
        .map(|p| (p.name.clone(), g.plugin(&p.name).map(|l| l.digest.clone())))
        .collect();
    (g.config.number, plugins)
}

impl Shared {
    pub fn new(control: Arc<Control>) -> Arc<Shared> {
        Arc::new(Shared {
            control,
            limiter: RateLimiter::default(),
            catalog: tokio::sync::Mutex::new(None),
            sessions: Mutex::new(Sessions::default()),
            refusals: crate::refusals::Refusals::default(),
            manager: Arc::new(LocalSessionManager::default()),
        })
    }

    fn host(&self) -> Result<Arc<Host>, String> {
        self.control.serving_host().map_err(|e| e.message)
    }

    /// Record the agents' refused calls counted and not yet recorded
    /// whose window is over (`all`: every one, at a stop).
    pub async fn record_due_refusals(&self, all: bool) {
        let mut due = self.limiter.due_refusals(all);
        due.extend(self.refusals.due(charter_audit::now_ms(), all));
        if due.is_empty() {
            return;
        }
        match self.host() {
            Ok(h) => {
                if let Err(e) = h.log().append(due).await {
                    tracing::error!(error = %e, "cannot record refused agent calls");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot record refused agent calls"),
        }
    }

    /// The tools of the generation in force (rebuilt once after a plugin
    /// is activated or a configuration applied).
    async fn catalog(&self) -> Result<Arc<Vec<ToolDef>>, String> {
        let host = self.host()?;
        let mut slot = self.catalog.lock().await;
        if let Some((key, defs)) = slot.as_ref()
            && *key == catalog_key(&host)
        {
            return Ok(defs.clone());
        }
        // One snapshot: the access lists come from configuration `number`,
        // and the catalog is cached only under that same number (an apply
        // landing during the build leaves it uncached, never mislabelled).
        let g = host.generation();
        let number = g.config.number;
        let defs = Arc::new(host.tool_catalog_of(g.config.deployment.clone()).await?);
        // The key after the build (building loads the tool plugins).
        let key = catalog_key(&host);
        if key.0 == number {
            *slot = Some((key, defs.clone()));
        }
        Ok(defs)
    }

    /// `agent`'s listing as the configuration in force declares it (its
    /// roles may have changed); empty for an agent no longer declared.
    async fn listing(&self, agent: &str) -> Result<Vec<Value>, String> {
        let host = self.host()?;
        let Some(a) = host.deployment().agents.get(agent).cloned() else {
            return Ok(vec![]);
        };
        let catalog = self.catalog().await?;
        let dep = host.deployment();
        let mut tools: Vec<Value> = catalog
            .iter()
            .filter(|d| d.visible_to(&a) && charter_runtime::tools::admitted_now(&dep, d, &a))
            .map(tool_json)
            .collect();
        tools.push(status_tool());
        Ok(tools)
    }
}

/// How a session's agent proves itself.
#[derive(Debug, Clone)]
pub enum Proof {
    /// stdio: the token the session started with, proven again at every
    /// request.
    Session(Option<String>),
    /// HTTP: each request's bearer token, proven by [`agent_only`].
    Bearer,
}

/// One MCP session: the agent it serves and the host's shared state.
#[derive(Debug)]
pub struct Tools {
    shared: Arc<Shared>,
    proof: Proof,
    route: &'static str,
    agent: OnceLock<String>,
    /// The task sending `tools/list_changed` to this session's client.
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Tools {
    fn drop(&mut self) {
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            w.abort();
        }
    }
}

impl Tools {
    /// A stdio session of `agent` (checked already at start), proven by
    /// `token` at every request.
    pub fn stdio(shared: Arc<Shared>, agent: &str, token: Option<String>) -> Tools {
        let t = Tools::new(shared, Proof::Session(token), "mcp stdio");
        let _ = t.agent.set(agent.to_string());
        t
    }

    /// An HTTP session: its agent is the first one proven on it.
    pub fn http(shared: Arc<Shared>) -> Tools {
        Tools::new(shared, Proof::Bearer, "POST /mcp")
    }

    fn new(shared: Arc<Shared>, proof: Proof, route: &'static str) -> Tools {
        Tools {
            shared,
            proof,
            route,
            agent: OnceLock::new(),
            watcher: Mutex::new(None),
        }
    }

    /// The agent this request proves, as the configuration in force
    /// declares it; else a refusal, recorded.
    async fn proven(&self, ext: &Extensions) -> Result<Agent, String> {
        let claimed = self.agent.get().cloned();
        let name = match &self.proof {
            Proof::Session(token) => {
                let now = charter_audit::now_ms() / 1000;
                match self
                    .shared
                    .control
                    .authenticator()
                    .authenticate(token.as_deref(), now)
                {
                    Ok(p) if p.kind == IdentityKind::Agent => p.name,
                    Ok(p) => {
                        return Err(self
                            .refuse(
                                "not-an-agent",
                                Some(p.name.clone()),
                                format!("{} is not an agent", p.name),
                            )
                            .await);
                    }
                    Err(e) => {
                        return Err(self
                            .refuse(
                                e.kind(),
                                claimed,
                                format!("the agent's token no longer proves it ({e})"),
                            )
                            .await);
                    }
                }
            }
            Proof::Bearer => match ext
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.extensions.get::<AgentProof>())
            {
                Some(a) => a.0.clone(),
                None => {
                    return Err(self
                        .refuse("no-token", claimed, "no agent token".into())
                        .await);
                }
            },
        };
        let bound = self.agent.get_or_init(|| name.clone());
        if *bound != name {
            return Err(self
                .refuse(
                    "wrong-identity",
                    Some(name.clone()),
                    format!("this session serves agent {bound}, not {name}"),
                )
                .await);
        }
        let host = self.shared.host()?;
        match host.deployment().agents.get(&name) {
            Some(a) => Ok(a.clone()),
            None => Err(self
                .refuse(
                    "unknown-agent",
                    Some(name.clone()),
                    format!("agent {name} is no longer declared"),
                )
                .await),
        }
    }

    /// Record a refused proof, bounded as every refused authentication is
    /// (a client repeating an expired token over stdio adds at most
    /// [`crate::refusals::PER_WINDOW`] events and a count per minute); the
    /// message for the client.
    async fn refuse(
        &self,
        reason: &'static str,
        identity: Option<String>,
        message: String,
    ) -> String {
        let admit = self.shared.refusals.admit(reason, charter_audit::now_ms());
        let mut events: Vec<Event> = admit.summary.into_iter().collect();
        if admit.record {
            events.push(Event::AuthRefused {
                route: self.route.into(),
                identity,
                reason: reason.to_string(),
            });
        }
        if !events.is_empty()
            && let Ok(host) = self.shared.host()
            && let Err(e) = host.log().append(events).await
        {
            tracing::error!(error = %e, "cannot record a refused agent proof");
        }
        format!("refused: {message} [{reason}]")
    }

    async fn status(&self, agent: &Agent, args: &Value) -> CallToolResult {
        let host = match self.shared.host() {
            Ok(h) => h,
            Err(e) => return result(&e, None, true),
        };
        let id = args.get("proposal").and_then(Value::as_str);
        match id.map(|id| host.agent_proposal_status(agent, id)) {
            Some(Ok(v)) => result(&v.to_string(), Some(v), false),
            Some(Err(e)) => result(&e, None, true),
            None => result("give {\"proposal\": \"P-…\"}", None, true),
        }
    }

    /// Send `tools/list_changed` to this session whenever its agent's
    /// listing changes (checked after every commit to the log: a plugin
    /// activated and a configuration applied are commits).
    fn watch_listing(&self, peer: rmcp::Peer<RoleServer>) {
        let Some(agent) = self.agent.get().cloned() else {
            return;
        };
        let Ok(host) = self.shared.host() else { return };
        let shared = self.shared.clone();
        let mut commits = host.log().subscribe();
        let task = tokio::spawn(async move {
            let mut seen = shared.listing(&agent).await.ok();
            let mut generation = shared.host().ok().map(|h| catalog_key(&h));
            while commits.changed().await.is_ok() {
                if peer.is_transport_closed() {
                    break;
                }
                // A listing changes only with the generation (a
                // configuration applied, a plugin activated): other
                // commits cost a comparison, not a rebuild.
                let g = shared.host().ok().map(|h| catalog_key(&h));
                if g == generation {
                    continue;
                }
                generation = g;
                let now = shared.listing(&agent).await.ok();
                if now.is_some() && now != seen {
                    seen = now;
                    if peer.notify_tool_list_changed().await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut slot = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(task.abort_handle()) {
            old.abort();
        }
    }
}

fn status_tool() -> Value {
    json!({
        "name": STATUS_TOOL,
        "description": "The state of a proposal one of your calls made (pending, executed with its result, rejected, expired, failed). Only your own proposals exist for you.",
        "inputSchema": {
            "type": "object",
            "properties": {"proposal": {"type": "string", "description": "The proposal id a pending_approval result named."}},
            "required": ["proposal"],
            "additionalProperties": false,
        },
        "annotations": {"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false},
    })
}

/// A tool result: text, optional structured content, error or not.
fn result(text: &str, structured: Option<Value>, is_error: bool) -> CallToolResult {
    let mut r = if is_error {
        CallToolResult::error(vec![rmcp::model::ContentBlock::text(text.to_string())])
    } else {
        CallToolResult::success(vec![rmcp::model::ContentBlock::text(text.to_string())])
    };
    r.structured_content = structured;
    r
}

fn tool_json(d: &ToolDef) -> Value {
    let mut t = json!({
        "name": d.name,
        "inputSchema": d.input_schema,
        "outputSchema": d.output_schema,
        "annotations": d.annotations,
    });
    if let Some(desc) = &d.description {
        t["description"] = json!(desc);
    }
    t
}

fn outcome_result(outcome: ToolOutcome) -> CallToolResult {
    match outcome {
        ToolOutcome::Done {
            result: v,
            is_error,
        } => result(&v.to_string(), Some(v), is_error),
        ToolOutcome::Pending { proposal } => {
            let v = json!({"pending_approval": {"proposal": proposal}});
            result(
                &format!(
                    "pending_approval: {proposal}: a person decides this call; poll {STATUS_TOOL} with {{\"proposal\": \"{proposal}\"}}"
                ),
                Some(v),
                false,
            )
        }
        ToolOutcome::Denied { policies, reason } => result(
            &format!("denied: {reason} [{}]", policies.join(", ")),
            None,
            true,
        ),
        ToolOutcome::Refused { rule, message } => {
            result(&format!("refused: {message} [{rule}]"), None, true)
        }
        ToolOutcome::Failed(e) => result(&format!("failed: {e}"), None, true),
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("charter", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Charter's governed tools: every call is decided by policy and recorded; a call that needs a person returns pending_approval with a proposal id to poll with charter_proposal_status.",
        )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Over HTTP the session's agent is the one this notification's
        // request proved.
        if self.proven(&context.extensions).await.is_ok() {
            self.watch_listing(context.peer.clone());
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let agent = self
            .proven(&context.extensions)
            .await
            .map_err(|e| McpError::invalid_request(e, None))?;
        let tools = self
            .shared
            .listing(&agent.name)
            .await
            .map_err(|e| McpError::internal_error(format!("tool listing: {e}"), None))?;
        let parsed: Vec<Tool> = tools
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()
            .map_err(|e| McpError::internal_error(format!("tool listing: {e}"), None))?;
        serde_json::from_value(json!({ "tools": parsed }))
            .map_err(|e| McpError::internal_error(format!("tool listing: {e}"), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let agent = match self.proven(&context.extensions).await {
            Ok(a) => a,
            Err(refused) => return Ok(result(&refused, None, true).into()),
        };
        let limiter = &self.shared.limiter;
        let r = if request.name == STATUS_TOOL {
            // Read-only, but counted against the agent's rate like any call.
            if limiter.admit(&agent.name, agent.calls_per_minute) {
                self.status(&agent, &args).await
            } else {
                let message = "over the agent's calls per minute";
                if let Some(ev) = limiter.refuse(&agent.name, "rate-limit", STATUS_TOOL, message)
                    && let Ok(h) = self.shared.host()
                {
                    let _ = h.log().append(vec![ev]).await;
                }
                result(&format!("refused: {message} [rate-limit]"), None, true)
            }
        } else {
            let (host, catalog) = match (self.shared.host(), self.shared.catalog().await) {
                (Ok(h), Ok(c)) => (h, c),
                (Err(e), _) | (_, Err(e)) => {
                    return Ok(result(&format!("failed: {e}"), None, true).into());
                }
            };
            let outcome = host
                .call_tool(&catalog, limiter, &agent, &request.name, &args)
                .await;
            outcome_result(outcome)
        };
        Ok(r.into())
    }
}

/// Serve `tools` on stdin/stdout until the client leaves; then record the
/// refused calls still counted.
pub async fn serve_stdio(tools: Tools) -> Result<(), String> {
    use rmcp::ServiceExt;
    let shared = tools.shared.clone();
    let running = tools
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP: {e}"))?;
    // Refusals counted are recorded every window, and all of them when the
    // client leaves (EOF) or the process is told to stop.
    let flusher = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(charter_runtime::tools::REFUSAL_WINDOW);
            tick.tick().await;
            loop {
                tick.tick().await;
                shared.record_due_refusals(false).await;
            }
        })
    };
    let stop = running.cancellation_token();
    tokio::select! {
        _ = running.waiting() => {}
        _ = stop_signal() => stop.cancel(),
    }
    flusher.abort();
    shared.record_due_refusals(true).await;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `/mcp`: streamable HTTP sessions over `shared`, ended by `stop` (the
/// host draining). Hosts are not checked (every request needs an agent's
/// token, which a page rebinding a name to this host cannot attach);
/// bodies are bounded by [`crate::MAX_BODY`].
pub fn http_service(
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
) -> StreamableHttpService<Tools, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(stop)
        .with_max_request_body_bytes(crate::MAX_BODY);
    let manager = shared.manager.clone();
    StreamableHttpService::new(move || Ok(Tools::http(shared.clone())), manager, config)
}

/// In front of `/mcp`: an agent's token, proven now, or a 401 (none or
/// not valid) or 403 (a person's or a service's token), recorded.
pub async fn agent_only(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = format!("{} /mcp", req.method());
    let token = match crate::bearer(req.headers()) {
        Ok(t) => t.map(str::to_string),
        Err(e) => {
            return crate::refuse(&app, route, "bad-scheme", None, e)
                .await
                .into_response();
        }
    };
    let now = charter_audit::now_ms() / 1000;
    let auth = app.control.authenticator();
    match auth.authenticate(token.as_deref(), now) {
        Ok(p) if p.kind == IdentityKind::Agent => {
            let Some(shared) = app.service.mcp.get().cloned() else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            serve_agent(&app, &shared, route, p.name, req, next).await
        }
        Ok(p) => {
            let e = crate::HttpError(ApiError::new(
                ErrorClass::Refused,
                "not-an-agent",
                format!(
                    "{} is a {}: /mcp serves AI agents only, each with its own token ([agents.NAME] tokens)",
                    p.name,
                    p.kind.as_str()
                ),
            ));
            let mut r = crate::refuse(&app, route, "not-an-agent", Some(p.name), e)
                .await
                .into_response();
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
        Err(a) => {
            let identity = token
                .as_deref()
                .and_then(|t| auth.named_identity(t))
                .map(str::to_string);
            let e = crate::HttpError(ApiError::new(
                ErrorClass::Refused,
                "unauthenticated",
                a.to_string(),
            ));
            crate::refuse(&app, route, a.kind(), identity, e)
                .await
                .into_response()
        }
    }
}

/// An agent's `/mcp` request: a session id must be one this agent opened
/// (GET replays and DELETE included: 403 `wrong-identity`, recorded); an
/// `initialize` is refused past [`SESSIONS_PER_AGENT`] or
/// [`SESSIONS_TOTAL`] (429 `too-many-sessions`, recorded); the session id
/// the server answers with is bound to the agent.
async fn serve_agent(
    app: &App,
    shared: &Shared,
    route: String,
    agent: String,
    mut req: Request,
    next: Next,
) -> Response {
    const SESSION: &str = "mcp-session-id";
    let sid = req
        .headers()
        .get(SESSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let refused = |status: StatusCode, reason: &'static str, message: String| {
        let e = crate::HttpError(ApiError::new(ErrorClass::Refused, reason, message));
        let agent = agent.clone();
        let route = route.clone();
        async move {
            let mut r = crate::refuse(app, route, reason, Some(agent), e)
                .await
                .into_response();
            *r.status_mut() = status;
            r
        }
    };
    if let Some(id) = &sid
        && shared
            .session_owner(id)
            .as_deref()
            .is_some_and(|o| o != agent)
    {
        return refused(
            StatusCode::FORBIDDEN,
            "wrong-identity",
            format!("agent {agent} may not use another agent's MCP session"),
        )
        .await;
    }
    // A POST without a session opens one: it holds its place until answered.
    let _opening = match &sid {
        None if req.method() == axum::http::Method::POST => {
            match shared.session_room(&agent).await {
                Ok(o) => Some(o),
                Err(message) => {
                    return refused(StatusCode::TOO_MANY_REQUESTS, "too-many-sessions", message)
                        .await;
                }
            }
        }
        _ => None,
    };
    let delete = req.method() == axum::http::Method::DELETE;
    req.extensions_mut().insert(AgentProof(agent.clone()));
    let resp = next.run(req).await;
    if sid.is_none()
        && let Some(new) = resp.headers().get(SESSION).and_then(|v| v.to_str().ok())
    {
        shared.bind_session(new, &agent);
    }
    if delete
        && resp.status().is_success()
        && let Some(id) = &sid
    {
        shared.unbind_session(id);
    }
    resp
}

impl Shared {
    fn session_owner(&self, id: &str) -> Option<String> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.bound.get(id).cloned()
    }

    /// A place for one more session of `agent`, or why not: the sessions
    /// bound and the openings under way both count.
    async fn session_room(&self, agent: &str) -> Result<Opening<'_>, String> {
        let live: std::collections::HashSet<String> = {
            let m = self.manager.sessions.read().await;
            m.keys().map(|k| k.to_string()).collect()
        };
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // Sessions rmcp ended (idle, closed) no longer count.
        s.bound.retain(|id, _| live.contains(id));
        if s.bound.len() + s.opening.len() >= SESSIONS_TOTAL {
            return Err(format!(
                "{SESSIONS_TOTAL} MCP sessions are open: close one (DELETE /mcp) and retry"
            ));
        }
        let mine = s.bound.values().chain(s.opening.values());
        let mine = mine.filter(|a| *a == agent).count();
        if mine >= SESSIONS_PER_AGENT {
            return Err(format!(
                "agent {agent} holds {mine} MCP sessions, the most one agent may: close one (DELETE /mcp) and retry"
            ));
        }
        let id = s.next;
        s.next += 1;
        s.opening.insert(id, agent.to_string());
        Ok(Opening { shared: self, id })
    }

    fn bind_session(&self, id: &str, agent: &str) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.bound.insert(id.to_string(), agent.to_string());
    }

    fn unbind_session(&self, id: &str) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.bound.remove(id);
    }
}
