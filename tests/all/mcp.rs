//! Agent tools over MCP (issue 15), driven by a real MCP client nobody here
//! wrote: the official Python SDK (`mcp`, pinned in tests/mcp/
//! requirements.txt, installed into target/mcp-venv). Two agents see
//! different tool lists; an allowed call returns its typed result, a denied
//! one names the rule, a proposed one waits for a person (approved through
//! the CLI, the agent then polls the real result), a rejected one says so.
//! Hostile: an ungranted tool, a forged identity, schema-violating and huge
//! arguments, a flood — each refused and recorded, nothing executed.
//!
//! Skipped (with a message) only when python3 is missing and
//! CHARTER_REQUIRE_MCP is unset; tests/run.sh sets it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use charter_audit::{Decision, Event, read_records};
use serde_json::Value;

use crate::support::{charter_bin, fixture, root, text};

/// The venv with the pinned client: created when missing (or when the
/// requirements changed), as tests/run.sh does.
fn python() -> Option<PathBuf> {
    let venv = root().join("target/mcp-venv");
    let py = venv.join("bin/python");
    let reqs = root().join("tests/mcp/requirements.txt");
    let want = std::fs::read_to_string(&reqs).unwrap();
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) && py.exists() {
        return Some(py);
    }
    let has_python = Command::new("python3").arg("--version").output().is_ok();
    if !has_python {
        assert!(
            std::env::var_os("CHARTER_REQUIRE_MCP").is_none(),
            "CHARTER_REQUIRE_MCP is set but python3 is missing: install python3 (3.10 or later)"
        );
        eprintln!(
            "SKIPPED: the MCP tests need python3 (for the official MCP client); set CHARTER_REQUIRE_MCP=1 to make this a failure"
        );
        return None;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&reqs)
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "cannot install the pinned MCP client into {}",
        venv.display()
    );
    std::fs::write(&stamp, want).unwrap();
    Some(py)
}

fn charter_env(token: Option<&str>, args: &[&str], cwd: &Path) -> Output {
    let mut cmd = Command::new(charter_bin());
    cmd.args(args).current_dir(cwd).env_remove("CHARTER_LOG");
    match token {
        Some(t) => cmd.env("CHARTER_TOKEN", t),
        None => cmd.env_remove("CHARTER_TOKEN"),
    };
    cmd.output().expect("run charter")
}

fn mint(name: &str, cwd: &Path) -> (String, String) {
    let out = charter_env(None, &["tokens", "create", name, "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["token"].as_str().unwrap().to_string(),
        v["hash"].as_str().unwrap().to_string(),
    )
}

const POLICY: &str = r#"
@id("lookups")
permit (principal, action in [Action::"acme:shop/orders.lookup-order", Action::"acme:shop/orders.find-orders", Action::"acme:shop/orders.echo-scalars", Action::"acme:shop/orders.label-order"], resource);

@id("small-cancellations")
permit (principal in Role::"support", action == Action::"acme:shop/orders.cancel-order", resource)
when { context.refund_cents <= 5000 };

@id("large-cancellations-need-approval")
@approval("order-approver")
permit (principal in Role::"support", action == Action::"acme:shop/orders.cancel-order", resource)
when { context.refund_cents <= 100000 };

@id("no-locked-orders")
forbid (principal, action == Action::"acme:shop/orders.cancel-order", resource)
when { context.order_id like "LOCKED-*" };
"#;

/// The deployment: a tool plugin (orders) for the support role, the
/// payments connector for both agents, a person who approves, an operator
/// service (applies configurations). The tokens: copilot, bot, bob, ops.
fn deployment(dir: &Path) -> (String, String, String, String) {
    let (copilot, copilot_hash) = mint("support-copilot", dir);
    let (bot, bot_hash) = mint("reporting-bot", dir);
    let (bob, bob_hash) = mint("bob", dir);
    let (ops, ops_hash) = mint("ops", dir);
    std::fs::write(dir.join("orders.cedar"), POLICY).unwrap();
    let toml = format!(
        r#"[deployment]
name = "mcp-test"
phase = 5
data_dir = "data"

[identities.bob]
roles = ["order-approver"]
tokens = ["{bob_hash}"]

[identities.ops]
kind = "service"
roles = ["operator"]
tokens = ["{ops_hash}"]

[agents.support-copilot]
roles = ["support"]
tokens = ["{copilot_hash}"]

[agents.reporting-bot]
roles = ["reporting"]
tokens = ["{bot_hash}"]
calls_per_minute = 5

[groups.order-tools]
capabilities = ["acme:shop/orders.*"]
effect = "write"
policy_file = "orders.cedar"

[groups.ledger]
capabilities = ["charter:host/kv.*"]
effect = "write"

[groups.logging]
capabilities = ["charter:host/log.write"]

[plugins.orders]
path = "{orders}"
wit = "{wit}"
effects = {{ "acme:shop/orders.lookup-order" = "read", "acme:shop/orders.find-orders" = "read", "acme:shop/orders.echo-scalars" = "read" }}
owner = "shop-team"

[plugins.orders.tools."acme:shop/orders"]
roles = ["support"]
idempotent = ["label-order"]

[plugins.payments]
path = "{payments}"
provides = ["acme:payments/refunds"]
groups = ["ledger", "logging"]

[plugins.payments.tools."acme:payments/refunds"]
agents = ["support-copilot", "reporting-bot"]
"#,
        orders = fixture("fx-orders-tool").display(),
        wit = root().join("plugins/rust/fx-orders-tool/wit").display(),
        payments = fixture("payments-connector").display(),
    );
    std::fs::write(dir.join("charter.toml"), toml).unwrap();
    (copilot, bot, bob, ops)
}

/// The client's command for one scenario as `agent` with `token`: over
/// stdio, or over HTTP to `url` (`charter up`'s `/mcp`).
fn client_cmd(
    py: &Path,
    dir: &Path,
    url: Option<&str>,
    (token, agent): (&str, &str),
    scenario: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(py);
    cmd.arg(root().join("tests/mcp/client.py"))
        .args([
            scenario,
            charter_bin().to_str().unwrap(),
            "charter.toml",
            agent,
        ])
        .args(extra)
        .current_dir(dir)
        .env("CHARTER_TOKEN", token)
        .env_remove("CHARTER_LOG");
    match url {
        Some(u) => cmd.env("CHARTER_MCP_URL", u),
        None => cmd.env_remove("CHARTER_MCP_URL"),
    };
    cmd
}

/// Run one client scenario as `agent` with `token` over stdio; what it saw.
fn client(
    py: &Path,
    dir: &Path,
    token: &str,
    agent: &str,
    scenario: &str,
    extra: &[&str],
) -> Value {
    client_over(py, dir, None, token, agent, scenario, extra)
}

/// [`client`] over stdio (`url` none) or HTTP.
fn client_over(
    py: &Path,
    dir: &Path,
    url: Option<&str>,
    token: &str,
    agent: &str,
    scenario: &str,
    extra: &[&str],
) -> Value {
    let out = client_cmd(py, dir, url, (token, agent), scenario, extra)
        .output()
        .expect("run the MCP client");
    assert!(
        out.status.success(),
        "client {scenario} as {agent}: {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn pending_id(v: &Value) -> String {
    v["structured"]["pending_approval"]["proposal"]
        .as_str()
        .unwrap_or_else(|| panic!("not pending: {v}"))
        .to_string()
}

/// The whole slice through the real client. (Long: one deployment, its
/// sessions and the person's decisions in between, in order.)
#[test]
fn agents_see_only_their_tools_and_every_call_is_governed_and_recorded() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (copilot, bot, bob, _) = deployment(dir);

    // Two agents, two lists: support-copilot holds the support role.
    check_lists(
        &client(&py, dir, &copilot, "support-copilot", "list", &[]),
        &client(&py, dir, &bot, "reporting-bot", "list", &[]),
    );

    // Calls: allowed, denied (naming the rule), proposed twice, hostile.
    let calls = client(&py, dir, &copilot, "support-copilot", "calls", &[]);
    let (approve_me, reject_me) = check_calls(&calls);

    // Hostile agent: an ungranted tool does not exist for it, another
    // agent's proposal does not either, and a flood is cut at its rate.
    let hostile = client(&py, dir, &bot, "reporting-bot", "hostile", &[&approve_me]);
    assert!(
        hostile["ungranted"]["text"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{}",
        hostile["ungranted"]
    );
    assert!(
        hostile["status-of-other"]["text"]
            .as_str()
            .unwrap()
            .contains("no proposal")
    );
    let flood = hostile["flood"].as_array().unwrap();
    let limited = flood
        .iter()
        .filter(|c| c["text"].as_str().unwrap().contains("[rate-limit]"))
        .count();
    assert!(limited >= 9, "at most 5 calls a minute: {flood:?}");

    // Forged identity: another agent's token, or none, serves nothing.
    for (token, why) in [
        (Some(copilot.as_str()), "not agent reporting-bot"),
        (None, "no token"),
    ] {
        let out = charter_env(
            token,
            &[
                "mcp",
                "--config",
                "charter.toml",
                "--agent",
                "reporting-bot",
            ],
            dir,
        );
        assert_ne!(out.status.code(), Some(0));
        assert!(text(&out).contains(why), "{}", text(&out));
    }

    // A function the interface does not export cannot be declared
    // idempotent: the server does not start, naming it.
    let toml = std::fs::read_to_string(dir.join("charter.toml")).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        toml.replace("[\"label-order\"]", "[\"label-order\", \"drop-tables\"]"),
    )
    .unwrap();
    let out = charter_env(
        Some(&copilot),
        &["mcp", "--config", "bad.toml", "--agent", "support-copilot"],
        dir,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("\"drop-tables\""), "{}", text(&out));

    // A person decides: bob approves one, rejects the other.
    let out = charter_env(Some(&bob), &["proposals", "approve", &approve_me], dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = charter_env(Some(&bob), &["proposals", "reject", &reject_me], dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // An agent's token decides nothing.
    let out = charter_env(Some(&copilot), &["proposals", "approve", &reject_me], dir);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));

    let status = client(
        &py,
        dir,
        &copilot,
        "support-copilot",
        "status",
        &[&approve_me, &reject_me],
    );
    let done: Value = serde_json::from_str(status[&approve_me]["text"].as_str().unwrap()).unwrap();
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["result"]["ok"], "X-A-2002-20000");
    let rejected: Value =
        serde_json::from_str(status[&reject_me]["text"].as_str().unwrap()).unwrap();
    assert_eq!(rejected["status"], "rejected");

    // The record: every call, refused or not, with the agent as initiator;
    // the approved call executed once; nothing refused was executed.
    let records = read_records(&dir.join("data/events.log")).unwrap();
    let calls_of = |agent: &str| {
        records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Call {
                    initiator,
                    decision,
                    policies,
                    function,
                    call,
                    ..
                } if initiator.as_deref() == Some(agent) => {
                    Some((call.clone(), *decision, policies.clone(), function.clone()))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mine = calls_of("agent:support-copilot");
    let rules: Vec<String> = mine.iter().flat_map(|c| c.2.clone()).collect();
    for rule in [
        "order-tools/no-locked-orders",
        "order-tools/large-cancellations-need-approval",
        "approved-by:bob",
    ] {
        assert!(rules.iter().any(|r| r == rule), "no {rule} in {rules:?}");
    }
    // Refused before policy: counted in aggregated `tool-refused` events
    // (not policy denials): a flood of 12 adds at most two events.
    let refusals = |agent: &str, rule: &str| {
        let evs: Vec<u64> = records
            .iter()
            .filter_map(|r| match &r.event {
                Event::ToolRefused {
                    agent: a,
                    rule: why,
                    count,
                    ..
                } if a == agent && why == rule => Some(*count),
                _ => None,
            })
            .collect();
        (evs.len(), evs.iter().sum::<u64>())
    };
    assert_eq!(refusals("support-copilot", "schema").1, 3);
    assert_eq!(refusals("support-copilot", "too-large").1, 1);
    assert_eq!(refusals("reporting-bot", "unknown-tool").1, 1);
    let (events, flood) = refusals("reporting-bot", "rate-limit");
    assert!(flood >= 9 && events <= 2, "{events} events for {flood}");
    assert!(rules.iter().all(|r| r != "schema" && r != "rate-limit"));
    let theirs = calls_of("agent:reporting-bot");
    let executed: Vec<&String> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::CallResult { call, .. } => Some(call),
            _ => None,
        })
        .collect();
    let refused: Vec<&(String, Decision, Vec<String>, String)> = mine
        .iter()
        .chain(&theirs)
        .filter(|c| c.1 == Decision::Deny)
        .collect();
    assert!(!refused.is_empty());
    for c in refused {
        assert!(!executed.contains(&&c.0), "a refused call executed: {c:?}");
    }
    let approved_runs = records
        .iter()
        .filter(
            |r| matches!(&r.event, Event::CallResult { proposal: Some(p), .. } if *p == approve_me),
        )
        .count();
    assert_eq!(approved_runs, 1, "the approved call executed exactly once");
    assert!(records.iter().all(
        |r| !matches!(&r.event, Event::CallResult { proposal: Some(p), .. } if *p == reject_me)
    ));
    assert!(
        records
            .iter()
            .any(|r| matches!(&r.event, Event::AuthRefused { route, .. } if route == "mcp stdio"))
    );
}

/// Two agents, two lists (support-copilot's and reporting-bot's), with
/// their descriptions, annotations and schemas.
fn check_lists(listed: &Value, bots: &Value) {
    let mut names: Vec<&str> = listed["tools"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "charter_proposal_status",
            "orders.cancel-order",
            "orders.echo-scalars",
            "orders.find-orders",
            "orders.label-order",
            "orders.lookup-order",
            "refunds.issue-refund",
            "refunds.void-all-refunds",
        ]
    );
    let mut bot_names: Vec<&str> = bots["tools"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    bot_names.sort();
    assert_eq!(
        bot_names,
        [
            "charter_proposal_status",
            "refunds.issue-refund",
            "refunds.void-all-refunds"
        ]
    );
    let lookup = &listed["tools"]["orders.lookup-order"];
    assert_eq!(lookup["description"], "Look up one order by its id.");
    assert_eq!(lookup["annotations"]["readOnlyHint"], true);
    assert_eq!(
        listed["tools"]["orders.cancel-order"]["annotations"]["destructiveHint"],
        true
    );
    assert_eq!(lookup["input"]["required"], serde_json::json!(["order-id"]));
    // idempotentHint where declared, and only there.
    assert_eq!(
        listed["tools"]["orders.label-order"]["annotations"]["idempotentHint"],
        true
    );
    assert_eq!(
        listed["tools"]["orders.cancel-order"]["annotations"]["idempotentHint"],
        false
    );
}

/// What the `calls` scenario saw: allowed, scalars, denied naming the
/// rule, two proposals (their ids), four hostile argument sets refused.
fn check_calls(calls: &Value) -> (String, String) {
    assert_eq!(calls["allowed"]["error"], false, "{}", calls["allowed"]);
    assert_eq!(
        calls["allowed"]["structured"]["result"]["ok"]["id"],
        "A-1001"
    );
    // (Policy judges a u64 only up to i64::MAX, Cedar's Long: beyond, denied.)
    assert_eq!(
        calls["scalars"]["structured"]["result"]["d"],
        serde_json::json!(i64::MAX)
    );
    assert_eq!(calls["scalars"]["structured"]["result"]["text"], "ünï");
    assert_eq!(calls["denied"]["error"], true);
    assert!(
        calls["denied"]["text"]
            .as_str()
            .unwrap()
            .contains("no-locked-orders"),
        "{}",
        calls["denied"]
    );
    let approve_me = pending_id(&calls["proposed"]);
    let reject_me = pending_id(&calls["to-reject"]);
    for (case, says) in [
        ("wrong-kind", "order-id: expected a string"),
        ("out-of-range", "limit: 256 is out of range for u8"),
        ("extra", "unknown argument \"admin\""),
        ("huge", "[too-large]"),
    ] {
        assert_eq!(calls[case]["error"], true, "{case}: {}", calls[case]);
        let t = calls[case]["text"].as_str().unwrap();
        assert!(t.contains(says), "{case}: {t}");
    }

    (approve_me, reject_me)
}

/// Read the client's `WAIT <json>` line (an interactive scenario).
fn wait_line(out: &mut impl std::io::BufRead) -> Value {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the client ended");
        if let Some(j) = line.trim().strip_prefix("WAIT ") {
            return serde_json::from_str(j).unwrap();
        }
    }
}

/// The rest of an interactive client's output: its last line, parsed.
fn finish(mut child: std::process::Child, mut out: impl std::io::BufRead) -> Value {
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(child.wait().unwrap().success(), "client: {rest}\n{err}");
    let last = rest
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {err}"));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {rest}\n{err}"))
}

/// `/mcp` on `charter up`: the same scenario over streamable HTTP (the
/// SDK's own client, the agent's token as a bearer token), a person
/// deciding through the API while the agent's session stays open, a
/// listing that changes when a configuration is applied (the session is
/// told: `tools/list_changed`), and hostile callers: a person's or a
/// service's token, none, a bad one — each refused and recorded — and an
/// agent's token on the control API, recorded as what it is. (Long: one
/// running host and its sessions in order.)
#[test]
fn over_http_agents_are_served_while_people_decide_and_lists_follow_the_configuration() {
    use std::io::{BufReader, Write};
    use std::process::Stdio;

    use crate::up::http;
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (copilot, bot, bob, ops) = deployment(dir);
    let (up, addr) = crate::up::up(dir);
    let url = format!("http://{addr}/mcp");
    let over = |token: &str, agent: &str, scenario: &str| {
        client_over(&py, dir, Some(&url), token, agent, scenario, &[])
    };

    check_lists(
        &over(&copilot, "support-copilot", "list"),
        &over(&bot, "reporting-bot", "list"),
    );
    let (_, _) = check_calls(&over(&copilot, "support-copilot", "calls"));

    // A person decides while the agent's session is open; the agent then
    // reads the real result in that same session.
    let mut child = client_cmd(
        &py,
        dir,
        Some(&url),
        (&copilot, "support-copilot"),
        "open-session",
        &[],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let asked = wait_line(&mut out);
    let approve_me = pending_id(&asked["approve"]);
    let reject_me = pending_id(&asked["reject"]);
    let bob_bearer = format!("Bearer {bob}");
    for (id, verb) in [(&approve_me, "approve"), (&reject_me, "reject")] {
        let r = http(
            &addr,
            "POST",
            &format!("/v1/proposals/{id}/{verb}"),
            Some(&bob_bearer),
            None,
        );
        assert_eq!(r.status, 200, "{verb}: {}", r.body);
    }
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    let seen = finish(child, out);
    let done: Value =
        serde_json::from_str(seen["status"][&approve_me]["text"].as_str().unwrap()).unwrap();
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["result"]["ok"], "X-H-1-20000");
    let rejected: Value =
        serde_json::from_str(seen["status"][&reject_me]["text"].as_str().unwrap()).unwrap();
    assert_eq!(rejected["status"], "rejected");

    // A configuration applied while reporting-bot's session is open gives
    // it the support role, so the orders tools: it is told, and its next
    // listing has them. (A tool plugin's own entry is a connector's: it
    // changes only with a restart.)
    let mut child = client_cmd(
        &py,
        dir,
        Some(&url),
        (&bot, "reporting-bot"),
        "list-changed",
        &[],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let before = wait_line(&mut out);
    assert!(
        !before["listed"]
            .as_array()
            .unwrap()
            .contains(&Value::from("orders.lookup-order"))
    );
    let toml = std::fs::read_to_string(dir.join("charter.toml")).unwrap();
    let toml = toml.replace(
        "roles = [\"reporting\"]",
        "roles = [\"reporting\", \"support\"]",
    );
    std::fs::write(dir.join("charter.toml"), toml).unwrap();
    let r = http(
        &addr,
        "POST",
        "/v1/config/apply",
        Some(&format!("Bearer {ops}")),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    let seen = finish(child, out);
    assert_eq!(seen["notified"], true, "{seen}");
    assert!(
        seen["after"]
            .as_array()
            .unwrap()
            .contains(&Value::from("orders.lookup-order")),
        "{seen}"
    );

    // Hostile: a person's token and a service's are not an agent's (403),
    // none or a bad one proves nothing (401); an agent's token on the
    // control API is refused and recorded as an agent's.
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "hostile", "version": "0"}}});
    for (token, status) in [
        (Some(bob_bearer.clone()), 403),
        (Some(format!("Bearer {ops}")), 403),
        (None, 401),
        (Some("Bearer not-a-token".to_string()), 401),
        (Some(format!("Basic {copilot}")), 401),
    ] {
        let r = http(&addr, "POST", "/mcp", token.as_deref(), Some(&init));
        assert_eq!(r.status, status, "{token:?}: {}", r.body);
    }
    let r = http(
        &addr,
        "GET",
        "/v1/whoami",
        Some(&format!("Bearer {copilot}")),
        None,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    crate::hot::stop(up);

    // Per-agent KPIs: calls by decision, refusals apart from denials,
    // proposals and their acceptance, nothing unauthorized executed.
    let out = charter_env(Some(&bob), &["kpi", "--json"], dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &k["agents"]["support-copilot"];
    assert_eq!(c["calls"]["denied"], 1, "{c}");
    assert_eq!(c["refused"]["schema"], 3, "{c}");
    assert_eq!(c["refused"]["too-large"], 1, "{c}");
    assert_eq!(c["proposals"]["created"], 4, "{c}");
    assert_eq!(c["proposals"]["executed"], 1, "{c}");
    assert_eq!(c["proposals"]["rejected"], 1, "{c}");
    assert_eq!(c["proposals"]["acceptance_rate"], 0.5, "{c}");
    assert_eq!(c["unauthorized_actions_executed"], 0, "{c}");
    assert_eq!(k["unauthorized_actions_executed"], 0);
    let t = text(&charter_env(Some(&bob), &["kpi"], dir));
    assert!(t.contains("support-copilot: calls allowed"), "{t}");

    let records = read_records(&dir.join("data/events.log")).unwrap();
    let refused = |reason: &str, who: Option<&str>| {
        records.iter().any(|r| {
            matches!(&r.event, Event::AuthRefused { route, identity, reason: why }
                if route.contains("/mcp") == (reason != "agent-token")
                    && why == reason
                    && identity.as_deref() == who)
        })
    };
    assert!(refused("not-an-agent", Some("bob")));
    assert!(refused("not-an-agent", Some("ops")));
    assert!(refused("no-token", None), "{records:?}");
    assert!(refused("agent-token", Some("support-copilot")));
    // The approved call ran once, in the host that served the session.
    let runs = records
        .iter()
        .filter(
            |r| matches!(&r.event, Event::CallResult { proposal: Some(p), .. } if *p == approve_me),
        )
        .count();
    assert_eq!(runs, 1);
}

/// The example (examples/refunds/copilot.toml): support-copilot sees the
/// payments connector and the order-lookup tool, looks an order up on its
/// own, and every refund it asks for — 5.00 included — is a proposal; a
/// function the policy does not permit is denied. README shows the list.
#[test]
fn the_refunds_copilot_example_proposes_every_refund() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let src = root().join("examples/refunds");
    let (copilot, copilot_hash) = mint("support-copilot", dir);
    let (_, bob_hash) = mint("bob", dir);
    let release = format!("{}/", fixture("fx-orders-tool").parent().unwrap().display());
    let toml = std::fs::read_to_string(src.join("copilot.toml"))
        .unwrap()
        .replace("../../target/charter-data/refunds-copilot", "data")
        .replace("../../target/wasm32-wasip2/release/", &release)
        .replace("../../plugins/", &format!("{}/plugins/", root().display()))
        .replacen("tokens = []", &format!("tokens = [\"{bob_hash}\"]"), 1)
        .replacen("tokens = []", &format!("tokens = [\"{copilot_hash}\"]"), 1);
    std::fs::write(dir.join("charter.toml"), toml).unwrap();
    std::fs::copy(src.join("copilot.cedar"), dir.join("copilot.cedar")).unwrap();

    let seen = client(&py, dir, &copilot, "support-copilot", "copilot", &[]);
    let mut names: Vec<&str> = seen["tools"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "charter_proposal_status",
            "orders.cancel-order",
            "orders.echo-scalars",
            "orders.find-orders",
            "orders.label-order",
            "orders.lookup-order",
            "refunds.issue-refund",
            "refunds.void-all-refunds",
        ]
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for n in &names {
        assert!(readme.contains(n), "README's listing misses {n}");
    }
    assert_eq!(
        seen["tools"]["orders.lookup-order"]["annotations"]["idempotentHint"],
        true
    );
    assert_eq!(seen["lookup"]["error"], false, "{}", seen["lookup"]);
    pending_id(&seen["small-refund"]);
    assert_eq!(seen["cancel"]["error"], true, "{}", seen["cancel"]);
}

/// A crash after an approved agent proposal's tool ran and before the
/// proposal was resolved: the log holds the approved `call` and its result,
/// the proposal is still pending. Approving it again resolves it with the
/// recorded outcome; the tool does not run a second time.
#[test]
fn an_agent_proposal_executed_before_a_crash_is_not_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir);
    let d = charter_config::Deployment::load(
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap();
    let agent = d.agents["support-copilot"].clone();
    let host = charter_runtime::Host::new(d, charter_runtime::HostOptions::default()).unwrap();
    let rt = crate::support::rt();
    let limiter = charter_runtime::tools::RateLimiter::default();
    let catalog = rt.block_on(host.tool_catalog()).unwrap();
    let args =
        serde_json::json!({"order-id": "A-2002", "reason": "damaged", "refund-cents": 20000});
    let outcome =
        rt.block_on(host.call_tool(&catalog, &limiter, &agent, "orders.cancel-order", &args));
    let charter_runtime::tools::ToolOutcome::Pending { proposal } = outcome else {
        panic!("{outcome:?}")
    };
    let p = host.proposal(&proposal).expect("indexed");
    // The crash state: the execution recorded, the resolution not.
    let ran = |r: &Option<Value>| Event::CallResult {
        call: p.call.clone(),
        plugin: p.plugin.clone(),
        function: p.function.clone(),
        ok: true,
        summary: "ran before the crash".into(),
        duration_us: 1,
        proposal: Some(proposal.clone()),
        result: r.clone(),
    };
    rt.block_on(host.log().append(vec![
        Event::Call {
            call: p.call.clone(),
            plugin: p.plugin.clone(),
            digest: p.digest.clone(),
            function: p.function.clone(),
            args_digest: p.args_digest.clone(),
            args: p.args.clone(),
            decision: Decision::Allow,
            policies: vec!["approved-by:bob".into()],
            reason: None,
            initiator: Some("agent:support-copilot".into()),
            journal: None,
            request: None,
        },
        ran(&Some(serde_json::json!([{"ok": "from-before-the-crash"}]))),
    ]))
    .unwrap();
    let decided = rt
        .block_on(host.decide(&proposal, "bob", true, None))
        .unwrap();
    assert_eq!(decided.outcome, "executed", "{decided:?}");
    assert!(
        decided
            .result
            .as_ref()
            .is_some_and(|r| r.to_string().contains("from-before-the-crash")),
        "the recorded outcome, not a new run: {:?}",
        decided.result
    );
    let records = read_records(host.log().path()).unwrap();
    let runs = records
        .iter()
        .filter(|r| matches!(&r.event, Event::CallResult { call, .. } if *call == p.call))
        .count();
    assert_eq!(runs, 1, "the tool ran once, before the crash");
}

/// One raw `/mcp` request (HTTP/1.1, a fresh connection): status, head
/// and body (what arrived before the server closed, or 20 s).
fn mcp_raw(
    addr: &str,
    method: &str,
    token: &str,
    session: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {token}\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-03-26\r\n"
    );
    if let Some(id) = session {
        req.push_str(&format!("Mcp-Session-Id: {id}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        // An SSE answer to one request is whole once its data line is in.
        if String::from_utf8_lossy(&raw).contains("\"jsonrpc\"") {
            break;
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Open an `/mcp` session as the agent of `token`: its id.
fn mcp_open(addr: &str, token: &str) -> Result<String, (u16, String)> {
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let (status, head, body) = mcp_raw(addr, "POST", token, None, Some(&init));
    if status != 200 {
        return Err((status, body));
    }
    let id = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no session id: {head}"));
    let done = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (s, _, b) = mcp_raw(addr, "POST", token, Some(&id), Some(&done));
    assert_eq!(s, 202, "{b}");
    Ok(id)
}

/// Another agent's token with a session's id is refused on every method
/// (GET would replay the session's results, DELETE would end it), the
/// session stays alive; an agent's 9th open session is refused, also when
/// openings race — each refusal recorded.
#[test]
fn a_session_serves_only_its_agent_and_an_agent_holds_at_most_eight() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (copilot, bot, _, _) = deployment(dir);
    let (copilot, bot) = (format!("Bearer {copilot}"), format!("Bearer {bot}"));
    let (up, addr) = crate::up::up(dir);
    let a = mcp_open(&addr, &copilot).unwrap();
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    for (method, body) in [("GET", None), ("DELETE", None), ("POST", Some(&list))] {
        let (status, _, body) = mcp_raw(&addr, method, &bot, Some(&a), body);
        assert_eq!(status, 403, "{method}: {body}");
        assert!(body.contains("wrong-identity"), "{method}: {body}");
    }
    let (status, _, body) = mcp_raw(&addr, "POST", &copilot, Some(&a), Some(&list));
    assert_eq!(status, 200, "the owner's session is alive: {body}");
    assert!(body.contains("orders.cancel-order"), "{body}");

    for i in 0..8 {
        mcp_open(&addr, &bot).unwrap_or_else(|e| panic!("session {i}: {e:?}"));
    }
    let (status, body) = mcp_open(&addr, &bot).expect_err("a 9th session");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too-many-sessions"), "{body}");
    mcp_open(&addr, &copilot).expect("another agent has its own sessions");
    // Openings racing each other get exactly the places left (copilot
    // holds 2 of 8): each holds its place from the check to the answer.
    let opened = std::thread::scope(|scope| {
        let tries: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| mcp_open(&addr, &copilot)))
            .collect();
        tries
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|r| match r {
                Ok(_) => true,
                Err((status, body)) => {
                    assert_eq!(*status, 429, "{body}");
                    false
                }
            })
            .count()
    });
    assert_eq!(opened, 6, "racing openings got exactly the 6 places left");
    crate::hot::stop(up);

    let records = read_records(&dir.join("data/events.log")).unwrap();
    let refused = |why: &str| {
        records.iter().any(|r| {
            matches!(&r.event, Event::AuthRefused { reason, identity, .. }
                if reason == why && identity.as_deref() == Some("reporting-bot"))
        })
    };
    assert!(refused("wrong-identity"), "recorded");
    assert!(refused("too-many-sessions"), "recorded");
}

/// A hostile tool hands its agent the secret it read — in its result (as
/// read and upper-cased, inside a record) and in its error. The agent gets
/// `[secret:NAME]` in every place, and the log holds no form of the value
/// (SECURITY 12: a tool's result passes its plugin's redaction point).
#[test]
fn a_tool_never_hands_its_agent_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = "vault-key-7Gq2xPz9";
    std::fs::write(dir.join("vault.key"), secret).unwrap();
    let (agent, agent_hash) = mint("support-copilot", dir);
    std::fs::write(
        dir.join("charter.toml"),
        format!(
            r#"[deployment]
name = "secret-tool"
phase = 5
data_dir = "data"

[agents.support-copilot]
roles = ["support"]
tokens = ["{agent_hash}"]

[secrets.vault]
file = "vault.key"

[groups.vault]
capabilities = ["charter:host/secrets.get"]
secrets = ["vault"]

[groups.vault-tools]
capabilities = ["acme:vault/keys.*"]
effect = "read"

[plugins.vault]
path = "{wasm}"
wit = "{wit}"
groups = ["vault"]

[plugins.vault.tools."acme:vault/keys"]
agents = ["support-copilot"]
"#,
            wasm = fixture("fx-secret-tool").display(),
            wit = root().join("plugins/rust/fx-secret-tool/wit").display(),
        ),
    )
    .unwrap();
    let (up, addr) = crate::up::up(dir);
    let token = format!("Bearer {agent}");
    let session = mcp_open(&addr, &token).unwrap();
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (_, _, listed) = mcp_raw(&addr, "POST", &token, Some(&session), Some(&list));
    let name = |suffix: &str| {
        let at = listed
            .find(&format!("{suffix}\""))
            .unwrap_or_else(|| panic!("{suffix} not listed: {listed}"));
        let start = listed[..at].rfind('"').unwrap() + 1;
        listed[start..at + suffix.len()].to_string()
    };
    let mut answers = String::new();
    for (i, tool) in [name("keys.reveal"), name("keys.reveal-in-error")]
        .iter()
        .enumerate()
    {
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
            "params": {"name": tool, "arguments": {"name": "vault"}}});
        let (status, _, body) = mcp_raw(&addr, "POST", &token, Some(&session), Some(&call));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("[secret:vault]"), "{tool}: {body}");
        answers.push_str(&body);
    }
    crate::hot::stop(up);
    let upper = secret.to_uppercase();
    for form in [secret, upper.as_str()] {
        assert!(!answers.contains(form), "the agent got {form}: {answers}");
    }
    let raw = std::fs::read(dir.join("data/events.log")).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    for form in [secret, upper.as_str()] {
        assert!(!raw.contains(form), "the log holds {form}");
    }
    let records = read_records(&dir.join("data/events.log")).unwrap();
    assert!(
        records.iter().any(|r| matches!(&r.event,
            Event::CallResult { plugin, summary, .. }
                if plugin == "vault" && summary.contains("[secret:vault]"))),
        "the tool's results are recorded, redacted"
    );
}

/// An agent whose token expires while `charter mcp` serves it over stdio
/// (where every request is proven again) is refused on every call, and the
/// refusals are recorded bounded as every refused authentication is: a
/// client repeating the dead token 200 times adds at most 20 events and
/// one count to the log, not 200 events.
#[test]
fn refused_proofs_over_stdio_are_recorded_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir);
    let out = charter_env(
        None,
        &[
            "tokens",
            "create",
            "support-copilot",
            "--expires-in",
            "4s",
            "--json",
        ],
        dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let minted = std::time::Instant::now();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (token, hash) = (v["token"].as_str().unwrap(), v["hash"].as_str().unwrap());
    let toml = std::fs::read_to_string(dir.join("charter.toml")).unwrap();
    let toml = toml.replacen(
        "[agents.support-copilot]\nroles = [\"support\"]\ntokens = [\"",
        &format!("[agents.support-copilot]\nroles = [\"support\"]\ntokens = [\"{hash}\", \""),
        1,
    );
    std::fs::write(dir.join("charter.toml"), toml).unwrap();
    let mut mcp = crate::support::McpStdio::start(&["--agent", "support-copilot"], dir, token);
    let expired = std::time::Duration::from_millis(4_500);
    std::thread::sleep(expired.saturating_sub(minted.elapsed()));
    for i in 0..200 {
        let answer = mcp.ask(serde_json::json!({"jsonrpc": "2.0", "id": 1 + i,
            "method": "tools/call", "params": {"name": "orders.lookup-order",
            "arguments": {"order-id": "A-1"}}}));
        assert!(answer.to_string().contains("expired-token"), "{answer}");
    }
    assert!(mcp.finish());
    let records = read_records(&dir.join("data/events.log")).unwrap();
    let one_by_one = records
        .iter()
        .filter(|r| matches!(&r.event, Event::AuthRefused { route, .. } if route == "mcp stdio"))
        .count();
    let counted: u64 = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::AuthRefusalsSuppressed { count, .. } => Some(*count),
            _ => None,
        })
        .sum();
    assert!(
        one_by_one <= 20,
        "{one_by_one} refusals recorded one by one"
    );
    assert_eq!(one_by_one as u64 + counted, 200, "every refusal is counted");
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.event, Event::CallResult { .. })),
        "nothing ran"
    );
}
