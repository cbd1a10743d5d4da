//! Issue 16, pattern 4: security operations at phase 4, and the host's
//! quota (`[quotas.NAME]`, `host/runtime/src/quota.rs`).
//!
//! - `examples/security-ops/run.sh` end to end: isolations inside
//!   soc.cedar's bounds run, the edge becomes a proposal to the SOC, a
//!   crown jewel is denied, the 4th isolation in an hour is over the quota
//!   (counted from the log: every finding runs in its own process) and
//!   becomes a proposal; an approved one executes; the EDR's ledger holds
//!   exactly what was allowed; the chain verifies, 0 unauthorized actions.
//! - A hostile plugin looping `isolate-host` (ignoring every refusal)
//!   cannot pass the quota, in one process or across processes, with the
//!   quota over = "deny" and over = "propose".

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{charter, charter_bin, fixture, root, text};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The EDR ledger's action keys (`action:isolate:HOST`, `action:block:IP`).
fn ledger(cfg: &str, cwd: &Path) -> Vec<String> {
    let out = charter(
        &["kv", "list", "edr", "action:", "--json", "--config", cfg],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    let keys = v["keys"].as_array().unwrap_or_else(|| panic!("{v}"));
    let mut keys: Vec<String> = keys
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn security_ops_acts_inside_bounds_proposes_at_the_edge_denies_crown_jewels_and_holds_the_quota() {
    for p in ["edr-connector", "soc-score", "soc-respond"] {
        fixture(p);
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = Command::new("bash")
        .arg(root().join("examples/security-ops/run.sh"))
        .env("CHARTER_BIN", charter_bin())
        .env("SEC_OPS_WORK", &work)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let cfg = work.join("charter.toml");
    let cfg = cfg.to_str().unwrap();
    let cwd = dir.path();

    // The EDR did exactly this: web-01, web-03, web-04 inside the bounds,
    // web-05 approved over the quota; web-02 waits, db-prod-01 never.
    assert_eq!(
        ledger(cfg, cwd),
        vec![
            "action:block:203.0.113.10",
            "action:block:203.0.113.40",
            "action:block:203.0.113.50",
            "action:block:203.0.113.60",
            "action:isolate:web-01",
            "action:isolate:web-03",
            "action:isolate:web-04",
            "action:isolate:web-05",
        ]
    );

    // Every decision on isolate-host, from the log.
    let out = charter(
        &[
            "audit",
            "show",
            "--plugin",
            "soc-respond",
            "--type",
            "call",
            "--json",
            "--config",
            cfg,
        ],
        cwd,
    );
    let v = json(&out);
    let isolations: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["function"].as_str().unwrap().ends_with("#isolate-host"))
        .collect();
    let host = |e: &Value| e["args"]["hostname"].as_str().unwrap().to_string();
    let decided: Vec<(String, String)> = isolations
        .iter()
        .map(|e| (host(e), e["decision"].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("web-01", "allow"),
        ("web-02", "propose"),
        ("db-prod-01", "deny"),
        ("web-03", "allow"),
        ("web-04", "allow"),
        ("web-05", "propose"),
        ("web-05", "allow"),
    ]
    .iter()
    .map(|(h, d)| (h.to_string(), d.to_string()))
    .collect();
    assert_eq!(decided, want, "{v}");
    let policies = |i: usize| -> Vec<String> {
        isolations[i]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    // Inside the bounds: the policy and the quota both named.
    assert!(
        policies(0).contains(&"edr-actions/isolate-inside-bounds".to_string()),
        "{:?}",
        policies(0)
    );
    assert!(
        policies(0).contains(&"quota:isolations".to_string()),
        "{:?}",
        policies(0)
    );
    // The edge: the SOC's policy, no quota place taken.
    assert_eq!(
        policies(1),
        vec!["edr-actions/isolate-at-the-edge-goes-to-soc"]
    );
    // The crown jewel: the forbid.
    assert!(
        policies(2).contains(&"edr-actions/crown-jewels-never-isolated".to_string()),
        "{:?}",
        policies(2)
    );
    // Over the quota: the quota's proposal, its reason in the record.
    assert_eq!(policies(5), vec!["quota:isolations"]);
    let reason = isolations[5]["reason"].as_str().unwrap();
    assert!(
        reason.contains("quota isolations: 3 of 3 calls of acme:edr/actions.isolate-host per 1h"),
        "{reason}"
    );
    // The approved one: people, not the quota.
    assert!(
        policies(6).iter().any(|p| p.starts_with("approved:")),
        "{:?}",
        policies(6)
    );

    let out = charter(&["proposals", "list", "--json", "--config", cfg], cwd);
    let v = json(&out);
    let pending: Vec<&Value> = v["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "pending")
        .collect();
    assert_eq!(pending.len(), 1, "{v}");
    assert_eq!(pending[0]["args"]["hostname"], "web-02");
    assert_eq!(pending[0]["approver_role"], "soc");

    let out = charter(&["audit", "verify", "--config", cfg], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = charter(&["kpi", "--json", "--config", cfg], cwd);
    let k = json(&out);
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
}

/// A deployment of the EDR connector and the hostile looper, the quota
/// `limit` per hour with `over`; no policy (the grant allows).
fn looper(dir: &Path, over: &str) -> String {
    let approval = if over == "propose" {
        "approval = \"soc\""
    } else {
        ""
    };
    looper_with(dir, over, approval, "approver_role = \"soc\"")
}

/// [`looper`] with the quota's `approval` line and the granting group's
/// approval settings as given.
fn looper_with(dir: &Path, over: &str, approval: &str, group: &str) -> String {
    let toml = format!(
        r#"
[deployment]
name = "quota"
phase = 4
data_dir = "data"

[quotas.isolations]
function = "acme:edr/actions.isolate-host"
limit = 3
per = "1h"
over = "{over}"
{approval}

[identities.sam]
roles = ["soc"]

[identities.lee]
roles = ["soc-leads"]

[identities.kim]
roles = ["soc-leads"]

[groups.edr-actions]
capabilities = ["acme:edr/actions.isolate-host"]
effect = "write"
{group}

[groups.edr-ledger]
capabilities = ["charter:host/kv.*", "charter:host/log.write"]
effect = "write"

[plugins.edr]
path = "{edr}"
provides = ["acme:edr/actions"]
groups = ["edr-ledger"]

[plugins.looper]
path = "{looper}"
groups = ["edr-actions"]
"#,
        edr = fixture("edr-connector").display(),
        looper = fixture("fx-edr-loop").display(),
    );
    std::fs::write(dir.join("charter.toml"), toml).unwrap();
    dir.join("charter.toml").to_str().unwrap().to_string()
}

fn isolations(cfg: &str, cwd: &Path) -> usize {
    ledger(cfg, cwd)
        .iter()
        .filter(|k| k.starts_with("action:isolate:"))
        .count()
}

/// SECURITY: a plugin that loops isolate-host, ignoring every refusal,
/// gets exactly `limit` isolations an hour: the first call over the
/// quota is denied and fails the step closed (its later calls never reach
/// the connector); a new process counts the earlier ones from the log.
#[test]
fn a_looping_plugin_cannot_pass_the_quota_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let cfg = looper(cwd, "deny");
    let out = charter(
        &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
        cwd,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused by governance: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("quota isolations: 3 of 3"),
        "{}",
        text(&out)
    );
    assert_eq!(isolations(&cfg, cwd), 3);

    // A new process (a restart): the quota is still full.
    for _ in 0..2 {
        let out = charter(
            &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
            cwd,
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert_eq!(isolations(&cfg, cwd), 3);
    }
    let out = charter(
        &[
            "audit", "show", "--type", "call", "--json", "--config", &cfg,
        ],
        cwd,
    );
    let v = json(&out);
    let calls: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "looper")
        .collect();
    let allowed = calls.iter().filter(|e| e["decision"] == "allow").count();
    let denied = calls.iter().filter(|e| e["decision"] == "deny").count();
    // One denial per process: the step stops at its first refused call.
    assert_eq!((allowed, denied), (3, 3), "{v}");
    let k = json(&charter(&["kpi", "--json", "--config", &cfg], cwd));
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
}

/// With over = "propose" the call over the quota becomes one proposal to
/// the quota's role and the step waits; nothing past it runs.
#[test]
fn over_the_quota_a_call_becomes_one_proposal_to_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let cfg = looper(cwd, "propose");
    let out = charter(
        &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
        cwd,
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "waiting for people: {}",
        text(&out)
    );
    assert_eq!(isolations(&cfg, cwd), 3);
    let v = json(&charter(
        &["proposals", "list", "--json", "--config", &cfg],
        cwd,
    ));
    let ps = v["proposals"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(ps[0]["approver_role"], "soc");
    assert_eq!(ps[0]["policies"], serde_json::json!(["quota:isolations"]));
    assert_eq!(ps[0]["args"]["hostname"], "loop-3");
}

/// SECURITY 23: with no `approval` on the quota, the proposal for a call
/// over it takes the granting group's settings, although no policy
/// decides the function (the grant alone allows it): the group's approver
/// role, its approvals and its expiry. (It went to any approver, needing
/// one approval, with the default 72h expiry.)
#[test]
fn an_over_quota_proposal_takes_the_granting_groups_approval_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let cfg = looper_with(
        cwd,
        "propose",
        "",
        "approver_role = \"soc-leads\"\napprovals = 2\nproposal_expiry_hours = 1",
    );
    let before = charter_audit::now_ms();
    let out = charter(
        &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
        cwd,
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(isolations(&cfg, cwd), 3);
    let v = json(&charter(
        &["proposals", "list", "--json", "--config", &cfg],
        cwd,
    ));
    let ps = v["proposals"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(ps[0]["policies"], serde_json::json!(["quota:isolations"]));
    assert_eq!(ps[0]["approver_role"], "soc-leads", "{v}");
    assert_eq!(ps[0]["approvals_needed"], 2, "{v}");
    let expires = ps[0]["expires_at_ms"].as_u64().unwrap();
    assert!(
        expires <= charter_audit::now_ms() + 3_600_000 && expires >= before + 3_600_000,
        "expires {expires}: the group's 1h, not the default 72h ({v})"
    );

    // A quota over = "propose" that names no role, over a group without
    // one, is refused before anything runs, naming the fix.
    let dir = tempfile::tempdir().unwrap();
    let cfg = looper_with(dir.path(), "propose", "", "");
    let out = charter(&["check", "--config", &cfg], dir.path());
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(
            "group edr-actions names no approver_role: set approval = \"ROLE\" on the quota"
        ),
        "{}",
        text(&out)
    );
}

/// SECURITY 23: a quota over a function the provider does not export (a
/// typo: `isolate-hots`) would never count anything; the provider is
/// refused at load and `charter check` fails, naming the function, the
/// export's real functions and the fix. Nothing runs.
#[test]
fn a_quota_over_a_function_the_provider_lacks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let cfg = looper(cwd, "deny");
    let toml = std::fs::read_to_string(&cfg).unwrap().replace(
        "function = \"acme:edr/actions.isolate-host\"",
        "function = \"acme:edr/actions.isolate-hots\"",
    );
    std::fs::write(&cfg, toml).unwrap();
    let out = charter(&["check", "--config", &cfg], cwd);
    // The provider refused (2), its importer cannot link (1): check fails.
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("refused  edr: [quotas.isolations]"), "{t}");
    assert!(
        t.contains(
            "[quotas.isolations] counts acme:edr/actions.isolate-hots, but acme:edr/actions@"
        ) && t.contains("exports no such function (its functions: ")
            && t.contains("isolate-host"),
        "{t}"
    );
    let out = charter(
        &["call", "looper", "--input", r#"{"n":5}"#, "--config", &cfg],
        cwd,
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(isolations(&cfg, cwd), 0, "{}", text(&out));
}

/// SECURITY 23: a Cedar policy named like the host's approval marker
/// (`@id("approved:x")`) does not make the calls it allows people's: its
/// id is recorded under its group (`edr-actions/approved:x`), so they
/// count, and the quota still holds at `limit`, across a restart too.
#[test]
fn a_policy_named_like_an_approval_does_not_escape_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let cfg = looper_with(
        cwd,
        "deny",
        "",
        "policies = '''\n@id(\"approved:P-1\")\npermit(principal, action, resource);\n'''",
    );
    for _ in 0..2 {
        let out = charter(
            &["call", "looper", "--input", r#"{"n":20}"#, "--config", &cfg],
            cwd,
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert_eq!(isolations(&cfg, cwd), 3);
    }
    let v = json(&charter(
        &[
            "audit", "show", "--type", "call", "--json", "--config", &cfg,
        ],
        cwd,
    ));
    let allowed: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "looper" && e["decision"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 3, "{v}");
    assert_eq!(
        allowed[0]["policies"],
        serde_json::json!(["edr-actions/approved:P-1", "quota:isolations"])
    );
}

/// SECURITY 23, outbound HTTP: a quota on `wasi:http/outgoing-handler.
/// handle` lets exactly `limit` requests out per window; the next is
/// denied before it leaves (the server never sees it), and a new host over
/// the same log (a restart) is still full.
#[test]
fn a_quota_on_outbound_http_holds_across_a_restart() {
    use std::sync::atomic::Ordering;
    let rt = crate::support::rt();
    let (port, hits) = rt.block_on(crate::http::server());
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[groups.http-a]\ncapabilities = [\"wasi:http/outgoing-handler.handle\"]\nallow_hosts = [\"127.0.0.1:{port}\"]\n[quotas.web]\nfunction = \"wasi:http/outgoing-handler.handle\"\nlimit = 2\nper = \"1h\"\nover = \"deny\"\n"
    );
    let d = crate::support::deployment(dir.path(), 4, &[("fetch", "fx-http", &["http-a"], &extra)]);
    let input = format!(r#"{{"url": "http://127.0.0.1:{port}/x"}}"#);
    {
        let (host, _) = crate::support::host(d.clone());
        for _ in 0..2 {
            let out = rt
                .block_on(host.call("fetch", &input))
                .expect("inside the quota");
            assert_eq!(out.output["status"], 200);
        }
        for _ in 0..3 {
            let err = rt.block_on(host.call("fetch", &input)).unwrap_err();
            assert!(
                matches!(err, charter_runtime::CallError::Denied { .. })
                    && err.to_string().contains(
                        "quota web: 2 of 2 calls of wasi:http/outgoing-handler.handle per 1h"
                    ),
                "{err}"
            );
        }
    }
    let (host, _) = crate::support::host(d);
    let err = rt.block_on(host.call("fetch", &input)).unwrap_err();
    assert!(err.to_string().contains("quota web: 2 of 2"), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "requests past the quota left the host"
    );
}

/// SECURITY 23, many steps racing in one host: four runs of the looping
/// plugin at once, all of them hammering isolate-host, get exactly
/// `limit` isolations between them (one lock over the window); every run
/// ends denied at its first call over the quota.
#[test]
fn concurrent_runs_racing_for_the_last_places_get_exactly_the_limit() {
    let rt = crate::support::rt();
    let dir = tempfile::tempdir().unwrap();
    let cfg = looper(dir.path(), "deny");
    let d =
        charter_config::Deployment::load(Path::new(&cfg), charter_runtime::host_catalog()).unwrap();
    {
        let (host, _) = crate::support::host(d);
        let host = std::sync::Arc::new(host);
        rt.block_on(host.load("looper")).unwrap();
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let h = host.clone();
                rt.spawn(async move { h.call("looper", r#"{"n":20}"#).await })
            })
            .collect();
        for r in runs {
            let err = rt.block_on(r).unwrap().unwrap_err();
            assert!(
                err.to_string().contains("quota isolations: 3 of 3"),
                "{err}"
            );
        }
    }
    let v = json(&charter(
        &[
            "audit", "show", "--type", "call", "--json", "--config", &cfg,
        ],
        dir.path(),
    ));
    let calls: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "looper")
        .collect();
    let allowed = calls.iter().filter(|e| e["decision"] == "allow").count();
    let denied = calls.iter().filter(|e| e["decision"] == "deny").count();
    assert_eq!((allowed, denied), (3, 4), "{v}");
}

/// SECURITY 23, an agent's tool call (MCP): a quota on the tool's function
/// bounds the agent's calls like a plugin's; over it the call is denied
/// (recorded, never run), and a restart does not reset it (tool calls
/// are counted from the log too).
#[test]
fn a_quota_on_an_agent_tool_holds_across_a_restart() {
    use charter_runtime::tools::{RateLimiter, ToolOutcome};
    let rt = crate::support::rt();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[deployment]
name = "tools"
phase = 5
data_dir = "{data}"

[agents.copilot]
roles = ["support"]

[plugins.orders]
path = "{orders}"
wit = "{wit}"
effects = {{ "acme:shop/orders.lookup-order" = "read" }}

[plugins.orders.tools."acme:shop/orders"]
roles = ["support"]

[quotas.lookups]
function = "acme:shop/orders.lookup-order"
limit = 2
per = "1h"
over = "deny"
"#,
        data = dir.path().join("data").display(),
        orders = crate::support::fixture("fx-orders-tool").display(),
        wit = crate::support::root()
            .join("plugins/rust/fx-orders-tool/wit")
            .display(),
    );
    let d = charter_config::Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap();
    let agent = d.agents["copilot"].clone();
    let args = serde_json::json!({"order-id": "A-1"});
    let call = |host: &charter_runtime::Host, n: usize| -> Vec<ToolOutcome> {
        rt.block_on(async {
            let catalog = host.tool_catalog().await.unwrap();
            let limiter = RateLimiter::default();
            let mut out = vec![];
            for _ in 0..n {
                out.push(
                    host.call_tool(&catalog, &limiter, &agent, "orders.lookup-order", &args)
                        .await,
                );
            }
            out
        })
    };
    {
        let (host, _) = crate::support::host(d.clone());
        let out = call(&host, 4);
        assert!(
            out[..2]
                .iter()
                .all(|o| matches!(o, ToolOutcome::Done { .. })),
            "{out:?}"
        );
        for o in &out[2..] {
            let ToolOutcome::Denied { policies, reason } = o else {
                panic!("{out:?}")
            };
            assert_eq!(policies, &vec!["quota:lookups".to_string()]);
            assert!(reason.contains("quota lookups: 2 of 2"), "{reason}");
        }
    }
    let (host, _) = crate::support::host(d);
    let out = call(&host, 1);
    assert!(matches!(out[0], ToolOutcome::Denied { .. }), "{out:?}");
}

/// A crafted finding: the crown jewel `db-prod-01` spelled `DB-PROD-01.`
/// with criticality "low". soc.cedar trusts the finding's criticality and
/// allows it (inside the bounds), and the quota has room; the EDR
/// connector normalises the hostname (case, spaces, the trailing dot) and
/// takes the criticality from its inventory, so it refuses: nothing is
/// isolated. (It keyed its inventory by the exact string and isolated.)
#[test]
fn a_crafted_finding_cannot_isolate_a_crown_jewel_by_its_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::copy(
        root().join("examples/security-ops/soc.cedar"),
        cwd.join("soc.cedar"),
    )
    .unwrap();
    let cfg = looper_with(cwd, "deny", "", "policy_file = \"soc.cedar\"");
    let mut toml = std::fs::read_to_string(&cfg).unwrap();
    toml.push_str(&format!(
        "\n[groups.edr-block]\ncapabilities = [\"acme:edr/actions.block-ip\"]\neffect = \"write\"\n[plugins.respond]\npath = \"{}\"\ngroups = [\"edr-actions\", \"edr-block\", \"edr-ledger\"]\n",
        fixture("soc-respond").display()
    ));
    std::fs::write(&cfg, toml).unwrap();
    let out = charter(
        &[
            "kv",
            "set",
            "edr",
            "asset:db-prod-01",
            "crown-jewel",
            "--config",
            &cfg,
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let finding = |host: &str| {
        serde_json::json!({"hostname": host, "criticality": "low", "severity_id": 5, "risk": 90, "title": "crafted"})
            .to_string()
    };
    for spelling in ["DB-PROD-01.", " Db-Prod-01 "] {
        let out = charter(
            &[
                "call",
                "respond",
                "--input",
                &finding(spelling),
                "--config",
                &cfg,
            ],
            cwd,
        );
        assert_ne!(out.status.code(), Some(0), "{spelling}: {}", text(&out));
        assert!(
            text(&out).contains("db-prod-01 is a crown-jewel asset in the EDR's inventory"),
            "{spelling}: {}",
            text(&out)
        );
    }
    // Policy allowed each (the finding said "low"); the connector refused.
    let v = json(&charter(
        &[
            "audit", "show", "--type", "call", "--json", "--config", &cfg,
        ],
        cwd,
    ));
    let allowed = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "respond" && e["decision"] == "allow")
        .count();
    assert_eq!(allowed, 2, "{v}");
    // A host the inventory does not know is isolated, under its normal
    // name (the third and last place in the quota).
    let out = charter(
        &[
            "call",
            "respond",
            "--input",
            &finding(" Web-09. "),
            "--config",
            &cfg,
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(ledger(&cfg, cwd), vec!["action:isolate:web-09"]);
}
