//! Agent tools over MCP (issue 15's benchmark line): one tool call's round
//! trip as an agent sees it, over stdio (`charter mcp`, the real binary, one
//! session) and over streamable HTTP (`/mcp` of an in-process
//! `charter_server::serve` on loopback, one session on one kept-alive
//! connection, as an MCP client holds it), beside the same lookup made in
//! process (`Host::call_tool`: what the transports add) and beside `charter
//! call` (a step through the CLI: a new process per call).
//!
//! The tool is the order lookup of the MCP tests' tool plugin
//! (`fx-orders-tool`, `lookup-order`): a fresh instance per call, the
//! arguments checked against the schema derived from WIT, decided by a
//! Cedar rule on the typed arguments with the agent as principal, recorded
//! in the fdatasynced log before it runs and after. `charter call` cannot
//! call a tool function (it runs a step's `run`), so its line runs the
//! cold-step component (`fx_echo`, three audited host calls) under the
//! same deployment: the same kind of unit — one governed, audited
//! instantiation — through the path a script uses without MCP.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use charter_api::{Access, Control};
use charter_runtime::Host;
use charter_runtime::tools::{RateLimiter, ToolOutcome};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::{INPUT, Stats, print, root};

const POLICY: &str = r#"
@id("lookups")
permit (principal in Role::"support", action == Action::"acme:shop/orders.lookup-order", resource)
when { context.order_id like "A-*" };
"#;

const AGENT: &str = "support-copilot";

/// The deployment in `dir`: the orders tool for `support-copilot` (its
/// lookups decided by a Cedar rule), fx_echo as a step for `charter
/// call`; the agent's token and the operator's.
fn deployment(dir: &Path, echo: &Path) -> Result<(String, String, String)> {
    let agent = charter_auth::mint(AGENT, None).map_err(anyhow::Error::msg)?;
    let ops = charter_auth::mint("ops", None).map_err(anyhow::Error::msg)?;
    let release = root().join("target/wasm32-wasip2/release");
    std::fs::write(dir.join("orders.cedar"), POLICY)?;
    let toml = format!(
        r#"[deployment]
name = "mcp-bench"
phase = 5
data_dir = "data"

[identities.ops]
kind = "service"
roles = ["operator"]
tokens = ["{ops}"]

[agents.{AGENT}]
roles = ["support"]
tokens = ["{agent}"]
calls_per_minute = 100000

[groups.order-tools]
capabilities = ["acme:shop/orders.*"]
effect = "write"
policy_file = "orders.cedar"

[groups.kv]
capabilities = ["charter:host/kv.*", "charter:host/log.write"]
effect = "write"

[plugins.orders]
path = "{orders}"
wit = "{wit}"
effects = {{ "acme:shop/orders.lookup-order" = "read" }}

[plugins.orders.tools."acme:shop/orders"]
roles = ["support"]

[plugins.echo]
path = "{echo}"
groups = ["kv"]
"#,
        ops = ops.hash,
        agent = agent.hash,
        orders = release.join("fx_orders_tool.wasm").display(),
        wit = root().join("plugins/rust/fx-orders-tool/wit").display(),
        echo = echo.display(),
    );
    std::fs::write(dir.join("charter.toml"), &toml)?;
    Ok((toml, agent.token, ops.token))
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let n = v.len();
    Stats {
        median: v[n / 2],
        mean: v.iter().sum::<Duration>() / n as u32,
        p99: v[(n * 99 / 100).min(n - 1)],
    }
}

fn charter_bin() -> std::path::PathBuf {
    // The charter binary of this build profile, beside this benchmark.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("charter")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| root().join("target/debug/charter"))
}

/// The arguments of call `i`: a different order each time (no cache can
/// answer for the host).
fn lookup(i: usize) -> Value {
    json!({ "order-id": format!("A-{}", 1000 + i) })
}

/// A tools/call result that is the looked-up order, or why not.
fn check_result(v: &Value) -> Result<()> {
    let r = &v["result"];
    if r["isError"] == true || r["structuredContent"].is_null() {
        bail!("the lookup did not succeed: {v}");
    }
    Ok(())
}

/// `charter mcp` over stdio: initialize, find the lookup tool's name, then
/// `n` calls, each timed from the request line written to the response
/// line read.
fn stdio(dir: &Path, token: &str, n: usize) -> Result<Stats> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = Command::new(charter_bin())
        .args(["mcp", "--config", "charter.toml", "--agent", AGENT])
        .current_dir(dir)
        .env("CHARTER_TOKEN", token)
        .env_remove("CHARTER_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start charter mcp")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    let mut ask = |msg: &Value, reply: bool| -> Result<Value> {
        writeln!(stdin, "{msg}")?;
        stdin.flush()?;
        if !reply {
            return Ok(Value::Null);
        }
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            bail!("charter mcp closed its output");
        }
        Ok(serde_json::from_str(&line)?)
    };
    ask(&initialize(0), true)?;
    ask(
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        false,
    )?;
    let list = ask(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        true,
    )?;
    let tool = lookup_tool(&list)?;
    let warm = n / 10 + 5;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + warm {
        let req = json!({"jsonrpc": "2.0", "id": 2 + i, "method": "tools/call",
            "params": {"name": tool, "arguments": lookup(i)}});
        let t = Instant::now();
        let v = ask(&req, true)?;
        let e = t.elapsed();
        check_result(&v)?;
        if i >= warm {
            times.push(e);
        }
    }
    drop(stdin);
    child.wait()?;
    Ok(stats(times))
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "charter-bench", "version": "0"}}})
}

/// The MCP name of the order lookup in a tools/list answer.
fn lookup_tool(list: &Value) -> Result<String> {
    list["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .find(|n| n.ends_with("lookup-order"))
        .map(str::to_string)
        .with_context(|| format!("no lookup-order tool listed: {list}"))
}

/// A connection as an HTTP client opens one: Nagle off, so a request's
/// head and body are not held back waiting for an acknowledgement.
async fn connect(addr: &str) -> Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One `/mcp` session on one kept-alive HTTP/1.1 connection.
struct Session {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: String,
    token: String,
    id: Option<String>,
    /// Connections opened after the first (the server closed one).
    reconnects: usize,
}

impl Session {
    async fn open(addr: &str, token: &str) -> Result<Session> {
        let io = hyper_util::rt::TokioIo::new(connect(addr).await?);
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Session {
            sender,
            addr: addr.to_string(),
            token: token.to_string(),
            id: None,
            reconnects: 0,
        })
    }

    /// POST one JSON-RPC message; the response's JSON-RPC message (from a
    /// JSON body or the event stream's `data:` line), `Null` for a 202.
    async fn post(&mut self, msg: &Value) -> Result<Value> {
        let mut req = hyper::Request::post("/mcp")
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(id) = &self.id {
            req = req
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-06-18");
        }
        if self.sender.ready().await.is_err() {
            // The server closed the connection (as it may after an event
            // stream ends): a client opens another, and so do we.
            self.reconnects += 1;
            let io = hyper_util::rt::TokioIo::new(connect(&self.addr).await?);
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            self.sender = sender;
        }
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::from(msg.to_string())))?)
            .await?;
        let status = resp.status();
        if let Some(id) = resp.headers().get("mcp-session-id") {
            self.id = Some(id.to_str()?.to_string());
        }
        let body = resp.into_body().collect().await?.to_bytes();
        let text = std::str::from_utf8(&body)?;
        if status == hyper::StatusCode::ACCEPTED {
            return Ok(Value::Null);
        }
        anyhow::ensure!(status.is_success(), "/mcp: {status} {text}");
        let json = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or(text);
        Ok(serde_json::from_str(json)?)
    }
}

/// `/mcp` over HTTP: a session, then `n` timed calls.
async fn http(addr: &str, token: &str, n: usize) -> Result<(Stats, usize)> {
    let mut s = Session::open(addr, token).await?;
    s.post(&initialize(0)).await?;
    s.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await?;
    let list = s
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await?;
    let tool = lookup_tool(&list)?;
    let warm = n / 10 + 5;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + warm {
        let req = json!({"jsonrpc": "2.0", "id": 2 + i, "method": "tools/call",
            "params": {"name": tool, "arguments": lookup(i)}});
        let t = Instant::now();
        let v = s.post(&req).await?;
        let e = t.elapsed();
        check_result(&v)?;
        if i >= warm {
            times.push(e);
        }
    }
    Ok((stats(times), s.reconnects))
}

/// The same lookup in process: `Host::call_tool` with the catalog and a
/// rate limiter, no transport, no session.
async fn direct(host: &Host, n: usize) -> Result<Stats> {
    let catalog = host.tool_catalog().await.map_err(anyhow::Error::msg)?;
    let agent = host.deployment().agents[AGENT].clone();
    let name = catalog
        .iter()
        .map(|d| d.name.clone())
        .find(|n| n.ends_with("lookup-order"))
        .context("no lookup-order tool")?;
    let limiter = RateLimiter::default();
    let mut times = Vec::with_capacity(n);
    for i in 0..n + n / 10 + 5 {
        let t = Instant::now();
        let out = host
            .call_tool(&catalog, &limiter, &agent, &name, &lookup(i))
            .await;
        let e = t.elapsed();
        match out {
            ToolOutcome::Done {
                is_error: false, ..
            } => {}
            other => bail!("the lookup did not succeed: {other:?}"),
        }
        if i >= n / 10 + 5 {
            times.push(e);
        }
    }
    Ok(stats(times))
}

/// `charter call echo` as a script runs it: a new process per call, timed
/// from spawn to exit (`charter call` always runs in its own process: it
/// is not one of the commands a running host serves).
fn cli_calls(dir: &Path, token: &str, n: usize) -> Result<Stats> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let mut cmd = Command::new(charter_bin());
        cmd.args(["call", "echo", "--config", "charter.toml", "--input", INPUT])
            .current_dir(dir)
            .env_remove("CHARTER_LOG")
            .env_remove("CHARTER_SERVER")
            .env("CHARTER_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let out = cmd.output()?;
        let e = t.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "charter call: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i >= 2 {
            times.push(e);
        }
    }
    Ok(stats(times))
}

/// The `mcp tool call` lines: `iters` calls per transport, fewer
/// processes for `charter call`.
pub fn report(echo: &Path, iters: usize) -> Result<()> {
    let dir = tempfile::tempdir_in(root().join("target"))?;
    let (toml, agent, ops) = deployment(dir.path(), echo)?;
    let calls = iters.clamp(100, 2000);
    let spawns = (iters / 30).clamp(10, 60);
    // Offline first: each holds the data directory while it runs.
    let cli = cli_calls(dir.path(), &ops, spawns)?;
    let over_stdio = stdio(dir.path(), &agent, calls)?;

    let (rt, host) = crate::served_host(&toml, dir.path())?;
    let _guard = rt.enter();
    let control = Arc::new(Control::with_host(host.clone(), Access::Remote));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(charter_server::serve(control, listener, async {
        let _ = stopped.await;
    }));
    let (over_http, reconnects) = rt.block_on(http(&addr, &agent, calls))?;
    let in_process = rt.block_on(direct(&host, calls))?;
    let _ = stop.send(());
    rt.block_on(server)??;

    print("mcp tool call round trip (stdio)", &over_stdio);
    print("mcp tool call round trip (HTTP /mcp)", &over_http);
    println!(
        "{:<44} {calls} calls per transport; HTTP: one session, {} connection(s)",
        "",
        1 + reconnects
    );
    print("tool call in process (Host::call_tool)", &in_process);
    print(&format!("charter call, new process ({spawns})"), &cli);
    let ratio = |a: &Stats, b: &Stats| a.median.as_secs_f64() / b.median.as_secs_f64().max(1e-9);
    println!(
        "{:<44} {:>8.2}x stdio, {:.2}x HTTP (median; what the transport adds)",
        "mcp / in process",
        ratio(&over_stdio, &in_process),
        ratio(&over_http, &in_process)
    );
    println!(
        "{:<44} {:>8.3}x stdio, {:.3}x HTTP (median; below 1: MCP is faster)",
        "mcp / charter call",
        ratio(&over_stdio, &cli),
        ratio(&over_http, &cli)
    );
    Ok(())
}
