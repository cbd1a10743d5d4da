//! `charter mcp --agent NAME`: the deployment's tools served to one AI
//! agent over the Model Context Protocol on stdio (the official Rust SDK,
//! `rmcp`). The agent proves who it is with its token in `CHARTER_TOKEN`
//! (an identity of kind agent whose name is `--agent`); `--agent` alone
//! proves nothing. The server itself (shared with `/mcp` on `charter up`)
//! is `charter_server::mcp`; what an agent may see and call, and how each
//! call is decided and recorded, is `charter_runtime::tools`.
//!
//! It serves the configuration it started with: the token is proven again
//! at every request (an expired one is refused at once), but an agent,
//! token or tool removed from `charter.toml` is gone at the next start
//! (`charter up`'s `/mcp` follows the configuration in force).
//! SECURITY.md promise 22 says so.

use std::sync::Arc;

use anyhow::{Result, bail};
use charter_audit::Event;
use charter_config::IdentityKind;
use charter_runtime::Host;
use charter_server::mcp::{Shared, Tools, serve_stdio};

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
    let options = charter_api::host_options(&deployment).map_err(|e| anyhow::anyhow!(e.message))?;
    let host = Arc::new(Host::new(deployment, options)?);
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
    // The catalog is built now: a tool plugin that cannot load, or a
    // function no tool can carry, stops the server before it serves.
    let tools = host
        .tool_catalog()
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve tools: {e}"))?;
    let visible = tools.iter().filter(|d| d.visible_to(&declared)).count();
    let control = Arc::new(charter_api::Control::with_host(
        host,
        charter_api::Access::Local,
    ));
    // The session's token is proven again at every request: one that
    // expires ends the agent's reach, not only the next session.
    let session = Tools::stdio(Shared::new(control), agent, token);
    tracing::info!(agent, tools = visible, "serving MCP on stdio");
    serve_stdio(session).await.map_err(|e| anyhow::anyhow!(e))?;
    Ok(charter_runtime::error::EXIT_OK)
}
