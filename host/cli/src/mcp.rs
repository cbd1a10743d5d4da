//! `charter mcp --agent NAME`: the deployment's tools served to one AI
//! agent over the Model Context Protocol on stdio (the official Rust SDK,
//! `rmcp`). The agent proves who it is with its token in `CHARTER_TOKEN`
//! (an identity of kind agent whose name is `--agent`); `--agent` alone
//! proves nothing. What it may see and call, and how each call is decided
//! and recorded, is `charter_runtime::tools`.

use std::sync::Arc;

use anyhow::{Result, bail};
use charter_audit::Event;
use charter_config::{Agent, IdentityKind};
use charter_runtime::tools::{RateLimiter, STATUS_TOOL, ToolDef, ToolOutcome};
use charter_runtime::{Host, HostOptions};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

/// One agent's session: the tools it may see, its rate, the host.
struct Session {
    host: Arc<Host>,
    agent: Agent,
    catalog: Vec<ToolDef>,
    limiter: RateLimiter,
    /// The token the session was proven with, proven again at every call:
    /// one that expires ends the agent's reach, not only the next session.
    auth: charter_auth::Authenticator,
    token: Option<String>,
}

pub async fn serve(config: &crate::ConfigArg, agent: &str) -> Result<i32> {
    let deployment = config.load()?;
    let Some(declared) = deployment.agents.get(agent).cloned() else {
        let known: Vec<&str> = deployment.agents.keys().map(String::as_str).collect();
        bail!(
            "no agent {agent:?} in {} (declared agents: {}); declare it under [agents.{agent}]",
            config.path().display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let auth = charter_auth::Authenticator::new(&deployment);
    let token = std::env::var("CHARTER_TOKEN").ok();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let proven = auth.authenticate(token.as_deref(), now);
    let host = Arc::new(Host::new(deployment, HostOptions::default())?);
    let refusal = match &proven {
        Err(e) => Some((e.kind().to_string(), e.to_string())),
        Ok(p) if p.kind != IdentityKind::Agent || p.name != agent => Some((
            "wrong-identity".to_string(),
            format!(
                "CHARTER_TOKEN proves {} ({}), not agent {agent}: an agent serves with its own token (`charter tokens create {agent}`, hash under [agents.{agent}] tokens)",
                p.name,
                p.kind.as_str()
            ),
        )),
        Ok(_) => None,
    };
    if let Some((reason, message)) = refusal {
        // Recorded like a refused API request: who was claimed, and why.
        let _ = host
            .log()
            .append(vec![Event::AuthRefused {
                route: "mcp stdio".into(),
                identity: Some(agent.to_string()),
                reason,
            }])
            .await;
        bail!("refused: {message}");
    }
    let catalog = host
        .tool_catalog()
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve tools: {e}"))?;
    let session = Session {
        host,
        agent: declared,
        catalog,
        limiter: RateLimiter::default(),
        auth,
        token,
    };
    tracing::info!(
        agent,
        tools = session.visible().count(),
        "serving MCP on stdio"
    );
    let running = session
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP: {e}"))?;
    let _ = running.waiting().await;
    Ok(charter_runtime::error::EXIT_OK)
}

impl Session {
    /// The session's token proves its agent now (it may have expired since
    /// the session began); else the call is refused and recorded.
    async fn still_proven(&self) -> Result<(), CallToolResult> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let Err(e) = self.auth.authenticate(self.token.as_deref(), now) else {
            return Ok(());
        };
        let _ = self
            .host
            .log()
            .append(vec![Event::AuthRefused {
                route: "mcp stdio".into(),
                identity: Some(self.agent.name.clone()),
                reason: e.kind().to_string(),
            }])
            .await;
        Err(result(
            &format!("refused: the agent's token no longer proves it ({e})"),
            None,
            true,
        ))
    }

    fn visible(&self) -> impl Iterator<Item = &ToolDef> {
        self.catalog.iter().filter(|d| d.visible_to(&self.agent))
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
            "annotations": {"readOnlyHint": true, "destructiveHint": false, "openWorldHint": false},
        })
    }

    async fn status(&self, args: &Value) -> CallToolResult {
        let id = args.get("proposal").and_then(Value::as_str);
        match id.map(|id| self.host.agent_proposal_status(&self.agent, id)) {
            Some(Ok(v)) => result(&v.to_string(), Some(v), false),
            Some(Err(e)) => result(&e, None, true),
            None => result("give {\"proposal\": \"P-…\"}", None, true),
        }
    }
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

impl ServerHandler for Session {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("charter", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Charter's governed tools: every call is decided by policy and recorded; a call that needs a person returns pending_approval with a proposal id to poll with charter_proposal_status.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools: Vec<Value> = self.visible().map(tool_json).collect();
        tools.push(Session::status_tool());
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
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        if let Err(refused) = self.still_proven().await {
            return Ok(refused.into());
        }
        let r = if request.name == STATUS_TOOL {
            // Read-only, but counted against the agent's rate like any call.
            if self
                .limiter
                .admit(&self.agent.name, self.agent.calls_per_minute)
            {
                self.status(&args).await
            } else {
                result(
                    "refused: over the agent's calls per minute [rate-limit]",
                    None,
                    true,
                )
            }
        } else {
            let outcome = self
                .host
                .call_tool(
                    &self.catalog,
                    &self.limiter,
                    &self.agent,
                    &request.name,
                    &args,
                )
                .await;
            outcome_result(outcome)
        };
        Ok(r.into())
    }
}
