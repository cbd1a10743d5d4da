//! `charter up` as a service (issue 13 items 1, 2, 6, 7): the CLI acts
//! through the running host with the same output as without it, every
//! refused authentication is an audit event (a flood is counted, not
//! recorded one by one), `/metrics` parses as Prometheus text and agrees
//! with `charter kpi`, and SIGTERM under load loses no run.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::cli::refunds_deployment;
use crate::support::{charter, charter_bin, fixture, rt, text};
use crate::up::{http, mint};

/// `charter up` on a free loopback port with `args`; its address. Its
/// stderr is drained into the returned buffer so it can never block.
fn start(cwd: &Path, args: &[&str]) -> (Child, String, Arc<std::sync::Mutex<String>>) {
    let mut child = Command::new(charter_bin())
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = crate::up::served_address(&mut child);
    let err = Arc::new(std::sync::Mutex::new(String::new()));
    let (e, mut stderr) = (err.clone(), child.stderr.take().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
            if n == 0 {
                break;
            }
            e.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // Ready once the log is open and the runs left running are handed on.
    let t = Instant::now();
    while http(&addr, "GET", "/readyz", None, None).status != 200 {
        assert!(t.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr, err)
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// `charter ARGS` with CHARTER_TOKEN (the bare token of `bearer`).
fn as_(bearer: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(charter_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_SERVER")
        .env("CHARTER_TOKEN", bearer.strip_prefix("Bearer ").unwrap())
        .output()
        .unwrap()
}

/// A well-kept operator never sees the lock message.
fn never_the_lock(o: &Output) {
    let t = text(o);
    assert!(
        !t.contains("in use by another charter process") && !t.contains("charter up is serving"),
        "{t}"
    );
}

fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Add `tokens = [hash]` to `[approvers.NAME]` for each, and extra TOML.
fn declare(cwd: &Path, people: &[(&str, &str)], extra: &str) {
    let mut toml = std::fs::read_to_string(cwd.join("charter.toml")).unwrap();
    for (name, h) in people {
        let header = format!("[approvers.{name}]\n");
        assert!(toml.contains(&header), "{name}");
        toml = toml.replace(&header, &format!("{header}tokens = [\"{h}\"]\n"));
    }
    toml.push_str(extra);
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();
}

/// The log's events of one type, through the local CLI (the host is down).
fn events(cwd: &Path, kind: &str) -> Vec<Value> {
    let out = charter(&["audit", "show", "--type", kind, "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stdout_json(&out)["events"].as_array().unwrap().clone()
}

#[test]
fn the_cli_acts_through_the_running_host_with_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let (carol, carol_h) = mint("carol", cwd);
    let (bob, bob_h) = mint("bob", cwd);
    declare(cwd, &[("carol", &carol_h), ("bob", &bob_h)], "");
    let (mut child, addr, _err) = start(cwd, &[]);
    let a = addr.as_str();

    // carol starts a refund through the host: the CLI follows it until it
    // waits for people, as the local `run` does (exit 4).
    let input = r#"{"order_id": "A-9", "amount_cents": 20000, "reason": "lost"}"#;
    let out = as_(&carol, &["run", "refund", "--input", input, "--json"], cwd);
    never_the_lock(&out);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = stdout_json(&out);
    assert_eq!(v["status"], "waiting-approval", "{v}");
    assert_eq!(v["initiator"], "carol", "{v}");
    let run = v["id"].as_str().unwrap().to_string();
    let proposal = v["proposal"].as_str().unwrap().to_string();

    // The same documents as the API's (and so as the local path's).
    for (args, route) in [
        (vec!["runs", "list", "--json"], "/v1/runs".to_string()),
        (
            vec!["runs", "show", &run, "--json"],
            format!("/v1/runs/{run}"),
        ),
        (vec!["proposals", "list", "--json"], "/v1/proposals".into()),
        (
            vec!["proposals", "show", &proposal, "--json"],
            format!("/v1/proposals/{proposal}"),
        ),
        (
            vec!["escalations", "list", "--json"],
            "/v1/escalations".into(),
        ),
    ] {
        let out = as_(&bob, &args, cwd);
        never_the_lock(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let api = http(a, "GET", &route, Some(&bob), None);
        assert_eq!(api.status, 200, "{}", api.body);
        assert_eq!(stdout_json(&out), api.json(), "{args:?}");
    }
    // Text renders as the local path renders it.
    let out = as_(&bob, &["runs", "list"], cwd);
    assert!(text(&out).contains(&run) && text(&out).contains("waiting-approval"));
    let out = as_(&bob, &["proposals", "show", &proposal], cwd);
    assert!(text(&out).contains("initiator  carol"), "{}", text(&out));

    // The initiator may not approve: refused (2), recorded, said as locally.
    let out = as_(&carol, &["proposals", "approve", &proposal], cwd);
    never_the_lock(&out);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("separation-of-duties"),
        "{}",
        text(&out)
    );
    // --as may only repeat who the token proves.
    let out = as_(
        &bob,
        &["proposals", "approve", &proposal, "--as", "carol"],
        cwd,
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    // bob approves through the host; the run goes on there.
    let out = as_(
        &bob,
        &[
            "proposals",
            "approve",
            &proposal,
            "--comment",
            "ok",
            "--json",
        ],
        cwd,
    );
    never_the_lock(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout_json(&out)["ok"], true);
    let t = Instant::now();
    loop {
        let out = as_(&bob, &["runs", "show", &run, "--json"], cwd);
        if stdout_json(&out)["status"] == "completed" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(50));
    }

    // kv through the host, recorded as bob's.
    let out = as_(&bob, &["kv", "set", "refund-bot", "note/1 x", "hello"], cwd);
    never_the_lock(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = as_(&bob, &["kv", "get", "refund-bot", "note/1 x"], cwd);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    let out = as_(&bob, &["kv", "list", "refund-bot", "note/"], cwd);
    assert!(text(&out).contains("note/1 x"), "{}", text(&out));

    // audit verify and kpi through the host.
    let out = as_(&bob, &["audit", "verify"], cwd);
    never_the_lock(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = as_(&bob, &["kpi", "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout_json(&out)["unauthorized_actions_executed"], 0);
    let out = as_(&bob, &["kpi"], cwd);
    assert!(
        text(&out).contains("refunds"),
        "names the deployment: {}",
        text(&out)
    );

    // Without a token the host refuses a write, and says so (not the
    // lock); reads stay beside it, as before.
    let out = Command::new(charter_bin())
        .args(["runs", "list"])
        .current_dir(cwd)
        .env_remove("CHARTER_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&run), "{}", text(&out));
    let out = Command::new(charter_bin())
        .args(["kv", "set", "refund-bot", "k", "v"])
        .current_dir(cwd)
        .env_remove("CHARTER_TOKEN")
        .output()
        .unwrap();
    never_the_lock(&out);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no token"), "{}", text(&out));
    // --server names a host explicitly; a dead one is an error that says so.
    let out = as_(
        &bob,
        &["runs", "list", "--server", &format!("http://{a}")],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = as_(&bob, &["runs", "list", "--server", "https://x:1"], cwd);
    assert!(text(&out).contains("only http://"), "{}", text(&out));

    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // A service file whose process is gone is stale: ignored, and said.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(
        cwd.join("data/charter-up.json"),
        json!({"url": "http://127.0.0.1:9", "pid": pid}).to_string(),
    )
    .unwrap();
    let out = as_(&bob, &["runs", "list"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("stale"), "{}", text(&out));
    assert!(text(&out).contains(&run), "{}", text(&out));
    // The decision records who decided, and how it was proven.
    let decided = events(cwd, "approval-decision");
    assert!(
        decided
            .iter()
            .any(|e| e["by"] == "bob" && e["accepted"] == true && e["auth"] == "token"),
        "{decided:?}"
    );
}

#[test]
fn refused_authentications_are_audited_and_a_flood_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let (bob, bob_h) = mint("bob", cwd);
    // A token that expires in a second, and one that was never declared.
    let out = charter(
        &["tokens", "create", "carol", "--expires-in", "1s", "--json"],
        cwd,
    );
    let expiring: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (undeclared, _) = mint("bob", cwd);
    declare(
        cwd,
        &[
            ("bob", &bob_h),
            ("carol", expiring["hash"].as_str().unwrap()),
        ],
        "",
    );
    let (mut child, addr, _err) = start(cwd, &[]);
    let a = addr.as_str();
    std::thread::sleep(Duration::from_millis(2_100));
    let expired = format!("Bearer {}", expiring["token"].as_str().unwrap());

    let cases: [(Option<&str>, &str, u16); 5] = [
        (None, "no-token", 401),
        (Some("Bearer not-a-token"), "malformed-token", 401),
        (Some(undeclared.as_str()), "unknown-token", 401),
        (Some(expired.as_str()), "expired-token", 401),
        (Some("Basic Ym9iOmJvYg=="), "bad-scheme", 401),
    ];
    for (token, reason, status) in cases {
        let r = http(a, "GET", "/v1/runs", token, None);
        assert_eq!(r.status, status, "{reason}: {}", r.body);
        let r = http(a, "GET", "/metrics", token, None);
        assert_eq!(r.status, status, "metrics {reason}: {}", r.body);
    }
    // A flood of anonymous requests: at most 20 recorded one by one.
    let flood = 150;
    for _ in 0..flood {
        assert_eq!(http(a, "POST", "/v1/runs", None, None).status, 401);
    }
    // Health and readiness need no token and record nothing.
    assert_eq!(http(a, "GET", "/healthz", None, None).status, 200);
    assert_eq!(http(a, "GET", "/readyz", None, None).status, 200);
    assert_eq!(http(a, "GET", "/v1/whoami", Some(&bob), None).status, 200);
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let refused = events(cwd, "auth-refused");
    let by_reason = |r: &str| refused.iter().filter(|e| e["reason"] == r).count();
    for (_, reason, _) in cases {
        assert!(by_reason(reason) >= 2, "{reason}: {refused:?}");
    }
    // The no-token refusals: 2 before the flood, then the flood.
    assert_eq!(by_reason("no-token"), 20, "{refused:?}");
    let summaries = events(cwd, "auth-refusals-suppressed");
    let counted: u64 = summaries
        .iter()
        .filter(|e| e["reason"] == "no-token")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted as usize + 20, 2 + flood, "{summaries:?}");
    // What each names: the route, the identity a known token shows, never
    // the token.
    let e = refused
        .iter()
        .find(|e| e["reason"] == "expired-token")
        .unwrap();
    assert_eq!(e["identity"], "carol", "{e}");
    assert_eq!(e["route"], "GET /v1/runs", "{e}");
    let raw = std::fs::read(cwd.join("data/audit.log")).unwrap_or_default();
    let raw = String::from_utf8_lossy(&raw);
    for secret in [&expired, &undeclared, &bob] {
        let t = secret.strip_prefix("Bearer ").unwrap();
        assert!(
            !raw.contains(&t[t.len() - 64..]),
            "a token's secret is in the log"
        );
    }
    // charter kpi counts every refusal, recorded or counted.
    let out = charter(&["kpi", "--json"], cwd);
    let k = stdout_json(&out);
    let cases_sent = 2 * cases.len() as u64;
    assert_eq!(
        k["blocked_by_kind"]["authentication_refused"],
        cases_sent + flood as u64,
        "{k}"
    );
    assert_eq!(k["unauthorized_actions_executed"], 0);
    let out = charter(&["audit", "verify"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A strict reader of the Prometheus text format (0.0.4 / OpenMetrics as
/// prometheus-client writes it): every line a comment (`# HELP`, `# TYPE`,
/// `# UNIT`, `# EOF` last) or `name{labels} value`; label values quoted
/// with escapes; every sample's family declared by a `# TYPE` before it.
fn parse_metrics(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "unknown comment {line:?}"
            );
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(
                    matches!(t, "counter" | "gauge" | "histogram" | "unknown"),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_string(), t.to_string()).is_none(),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line:?}");
                    let mut v = String::new();
                    loop {
                        match chars.next().unwrap_or_else(|| panic!("{line:?}")) {
                            '\\' => v.push(match chars.next() {
                                Some('n') => '\n',
                                Some(c) => c,
                                None => panic!("{line:?}"),
                            }),
                            '"' => break,
                            c => v.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key, v);
                }
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line:?}"
        );
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {name}");
        assert!(
            out.insert((name.to_string(), labels), value).is_none(),
            "duplicate {line:?}"
        );
    }
    out
}

fn sample(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    l: &[(&str, &str)],
) -> f64 {
    let labels = l
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    *m.get(&(name.to_string(), labels))
        .unwrap_or_else(|| panic!("no {name} {l:?}"))
}

fn sum(m: &BTreeMap<(String, BTreeMap<String, String>), f64>, name: &str) -> f64 {
    m.iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

/// Every counter of `/metrics` (`m`) is the one `charter kpi` reports (`k`).
fn assert_agree(m: &BTreeMap<(String, BTreeMap<String, String>), f64>, k: &Value) {
    assert_eq!(
        sample(m, "charter_log_events_total", &[]),
        k["events"].as_f64().unwrap()
    );
    for (plugin, fns) in k["calls"].as_object().unwrap() {
        for (function, c) in fns.as_object().unwrap() {
            for (d, field) in [
                ("allow", "allowed"),
                ("propose", "proposed"),
                ("deny", "denied"),
            ] {
                let labels = [
                    ("plugin", plugin.as_str()),
                    ("function", function.as_str()),
                    ("decision", d),
                ];
                assert_eq!(
                    sample(m, "charter_calls_total", &labels),
                    c[field].as_f64().unwrap(),
                    "{labels:?}"
                );
            }
        }
    }
    assert_eq!(
        sample(m, "charter_unauthorized_actions_executed_total", &[]),
        k["unauthorized_actions_executed"].as_f64().unwrap()
    );
    let p = &k["proposals"];
    assert_eq!(
        sample(m, "charter_proposals_pending", &[]),
        p["pending"].as_f64().unwrap()
    );
    for o in ["created", "executed", "rejected", "expired", "failed"] {
        assert_eq!(
            sample(m, "charter_proposals_total", &[("outcome", o)]),
            p[o].as_f64().unwrap(),
            "{o}"
        );
    }
    let resolved = p["executed"].as_f64().unwrap()
        + p["rejected"].as_f64().unwrap()
        + p["expired"].as_f64().unwrap()
        + p["failed"].as_f64().unwrap();
    assert_eq!(
        sample(m, "charter_proposal_decision_latency_seconds_count", &[]),
        resolved
    );
    let b = &k["blocked_by_kind"];
    for (kind, field) in [
        ("approval-refused", "approval_refused"),
        ("authentication-refused", "authentication_refused"),
        ("call-denied", "call_denied"),
    ] {
        assert_eq!(
            sample(m, "charter_blocked_attempts_total", &[("kind", kind)]),
            b[field].as_f64().unwrap(),
            "{kind}"
        );
    }
    assert_eq!(
        sum(m, "charter_step_duration_seconds_count"),
        k["steps"].as_f64().unwrap()
    );
    let w = &k["workflows"]["refund"];
    for (status, field) in [
        ("completed", "completed"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("in-progress", "in_progress"),
    ] {
        assert_eq!(
            sample(
                m,
                "charter_runs",
                &[("workflow", "refund"), ("status", status)]
            ),
            w[field].as_f64().unwrap(),
            "{status}"
        );
    }
    let ended = w["completed"].as_f64().unwrap()
        + w["failed"].as_f64().unwrap()
        + w["cancelled"].as_f64().unwrap();
    assert_eq!(
        sample(
            m,
            "charter_run_cycle_time_seconds_count",
            &[("workflow", "refund")]
        ),
        ended
    );
    for (name, field) in [
        ("charter_runs_started_total", "runs"),
        ("charter_escalations_total", "escalations"),
        ("charter_retries_total", "retries"),
        ("charter_step_attempts_total", "step_attempts"),
    ] {
        assert_eq!(
            sample(m, name, &[("workflow", "refund")]),
            w[field].as_f64().unwrap(),
            "{name}"
        );
    }
    // Histogram buckets are cumulative and end at the count.
    let inf = sample(
        m,
        "charter_run_cycle_time_seconds_bucket",
        &[("workflow", "refund"), ("le", "+Inf")],
    );
    assert_eq!(inf, ended);
    assert!(sum(m, "charter_calls_total") > 0.0);
}

#[test]
fn metrics_parse_and_agree_with_kpi() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let (carol, carol_h) = mint("carol", cwd);
    let (bob, bob_h) = mint("bob", cwd);
    declare(cwd, &[("carol", &carol_h), ("bob", &bob_h)], "");
    let (mut child, addr, _err) = start(cwd, &[]);
    let a = addr.as_str();
    // Work of every kind: small refunds that complete, one that waits,
    // is approved and completes, one rejected, a refused attempt.
    let mut runs = vec![];
    for (i, cents) in [1_500, 900, 20_000, 30_000].iter().enumerate() {
        let input = json!({"order_id": format!("M-{i}"), "amount_cents": cents, "reason": "x"});
        let r = http(
            a,
            "POST",
            "/v1/runs",
            Some(&carol),
            Some(&json!({"workflow": "refund", "input": input})),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        runs.push(r.json()["run"].as_str().unwrap().to_string());
    }
    // A first scrape once every run has stopped (completed or waiting):
    // /metrics folds the log so far and agrees with the KPIs.
    for run in &runs {
        crate::up::wait_for(a, &bob, run, |v| v["status"] != "running");
    }
    let k = http(a, "GET", "/v1/kpi", Some(&bob), None).json();
    let r = http(a, "GET", "/metrics", Some(&bob), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let early = parse_metrics(&r.body);
    assert_agree(&early, &k);
    let events_then = k["events"].as_f64().unwrap();
    let mut decided = 0;
    for run in &runs {
        let v = crate::up::wait_for(a, &bob, run, |v| v["status"] != "running");
        if let Some(p) = v["proposal"].as_str() {
            let verb = if decided == 0 { "approve" } else { "reject" };
            decided += 1;
            let r = http(
                a,
                "POST",
                &format!("/v1/proposals/{p}/approve"),
                Some(&carol),
                None,
            );
            assert_eq!(r.status, 403, "{}", r.body);
            let r = http(
                a,
                "POST",
                &format!("/v1/proposals/{p}/{verb}"),
                Some(&bob),
                None,
            );
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    for run in &runs {
        crate::up::wait_for(a, &bob, run, |v| {
            !matches!(v["status"].as_str(), Some("running" | "waiting-approval"))
        });
    }
    assert_eq!(http(a, "GET", "/v1/runs", None, None).status, 401);

    let k = http(a, "GET", "/v1/kpi", Some(&bob), None).json();
    let r = http(a, "GET", "/metrics", Some(&bob), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    let m = parse_metrics(&r.body);
    // The CLI's kpi is the API's.
    let out = as_(&bob, &["kpi", "--json"], cwd);
    assert_eq!(stdout_json(&out), k);

    // Decisions, refusals and the runs' ends arrived after the first
    // scrape: the second folds only those, and still agrees.
    assert!(k["events"].as_f64().unwrap() > events_then, "{k}");
    assert_agree(&m, &k);
    let p = &k["proposals"];
    assert_eq!(p["created"], 2, "{k}");
    let b = &k["blocked_by_kind"];
    assert!(b["approval_refused"].as_u64().unwrap() >= 2, "{k}");
    assert_eq!(b["authentication_refused"], 1, "{k}");
    let w = &k["workflows"]["refund"];
    let ended = w["completed"].as_f64().unwrap()
        + w["failed"].as_f64().unwrap()
        + w["cancelled"].as_f64().unwrap();
    assert!(ended >= 3.0, "{k}");
    // The process, read from /proc.
    assert!(sample(&m, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sample(&m, "process_open_fds", &[]) > 3.0);
    let started = sample(&m, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started > now - 600.0 && started <= now + 1.0,
        "{started} vs {now}"
    );
    assert!(sample(&m, "process_cpu_seconds_total", &[]) > 0.0);
    assert_eq!(sample(&m, "charter_ready", &[]), 1.0);
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A GET that says `None` when the connection fails or is cut.
fn try_get(addr: &str, path: &str, token: Option<&str>) -> Option<crate::up::Reply> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(crate::up::Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// An HTTP receiver that holds every request `hold` before answering.
fn slow_server(rt: &tokio::runtime::Runtime, hold: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        tokio::time::sleep(hold).await;
                        s.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, seen)
}

#[test]
fn sigterm_under_load_loses_no_run() {
    let rt = rt();
    // Each POST is held 700 ms: a stop lands in the middle of steps.
    let (port, _seen) = slow_server(&rt, Duration::from_millis(700));
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (olga, olga_h) = mint("olga", cwd);
    let url = format!("\"http://127.0.0.1:{port}/effect\"");
    let toml = format!(
        r#"
[deployment]
name = "drain"
phase = 4
data_dir = "data"

[approvers.olga]
roles = ["operator"]
tokens = ["{olga_h}"]

[groups.http]
capabilities = ["wasi:http/outgoing-handler.handle"]
allow_hosts = ["127.0.0.1:{port}"]
[groups.kv]
capabilities = ["charter:host/kv.*"]
effect = "write"

[plugins.work]
path = "{work}"
groups = ["http", "kv"]

[workflows.load]
[[workflows.load.steps]]
id = "post"
plugin = "work"
input = {{ mode = "post", body = "$/input/order", urls = [{url}, {url}] }}
[[workflows.load.steps]]
id = "flaky"
plugin = "work"
input = {{ mode = "flaky", fail_until = 2, attempt = "$/run/attempt" }}
retry = {{ max_attempts = 3, initial_backoff_ms = 50 }}

[workflows.retrying]
[[workflows.retrying.steps]]
id = "flaky"
plugin = "work"
input = {{ mode = "flaky", fail_until = 2, attempt = "$/run/attempt" }}
retry = {{ max_attempts = 3, initial_backoff_ms = 2000 }}
[[workflows.retrying.steps]]
id = "last"
plugin = "work"
"#,
        work = fixture("fx-workflow").display(),
    );
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();
    let warm = charter(&["check"], cwd);
    assert!(warm.status.success(), "{}", text(&warm));

    let (mut child, addr, err) = start(cwd, &["--drain-timeout", "20s"]);
    let a = addr.as_str();
    let n = 40;
    let mut runs = Vec::new();
    for i in 0..n {
        let workflow = if i % 2 == 0 { "load" } else { "retrying" };
        let body = json!({"workflow": workflow, "input": {"order": format!("o-{i}")}});
        let r = http(a, "POST", "/v1/runs", Some(&olga), Some(&body));
        assert_eq!(r.status, 202, "{}", r.body);
        runs.push(r.json()["run"].as_str().unwrap().to_string());
    }
    // Half the runs are inside their slow step now, half in a retry wait.
    std::thread::sleep(Duration::from_millis(500));
    let before: Value = http(a, "GET", "/v1/runs", Some(&olga), None).json();
    let unfinished = before["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "completed")
        .count();
    assert!(unfinished > 0, "the load ended before the stop: {before}");
    sigterm(&child);
    // Intake stops at once: new requests are 503, readiness too.
    let (mut saw_503, mut ready_503) = (false, false);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        // The host may close the connection at any point once it stops.
        let Some(r) = try_get(a, "/v1/runs", Some(&olga)) else {
            break;
        };
        if r.status == 503 {
            saw_503 = true;
            assert!(
                r.head.to_ascii_lowercase().contains("retry-after"),
                "{}",
                r.head
            );
            ready_503 |= try_get(a, "/readyz", None).is_none_or(|r| r.status == 503);
            break;
        }
        // Nothing but 503 or a closed connection after the signal landed.
        assert!(r.status == 200 || r.status == 0, "{}: {}", r.status, r.body);
        std::thread::sleep(Duration::from_millis(5));
    }
    let code = child.wait().unwrap().code();
    let stderr = err.lock().unwrap().clone();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        saw_503 && ready_503,
        "intake did not answer 503 while draining: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The steps in flight at the signal finished: every run of `load`
    // recorded its slow step (none was cut), and none started another.
    let out = charter(&["runs", "list", "--json"], cwd);
    let stopped = stdout_json(&out);
    for r in stopped["runs"].as_array().unwrap() {
        if r["workflow"] == "load" {
            let h = r["history"].as_array().unwrap();
            assert!(
                h.first()
                    .is_some_and(|a| a["step"] == "post" && a["outcome"] == "ok"),
                "{r}"
            );
        }
    }
    // The next start resumes what the stop left; every run completes.
    let (mut child, addr, err) = start(cwd, &[]);
    let a = addr.as_str();
    let t = Instant::now();
    loop {
        let v: Value = http(a, "GET", "/v1/runs", Some(&olga), None).json();
        let all = v["runs"].as_array().unwrap();
        let done = all.iter().filter(|r| r["status"] == "completed").count();
        let failed: Vec<_> = all.iter().filter(|r| r["status"] == "failed").collect();
        assert!(failed.is_empty(), "{failed:?}");
        let started = all.len();
        if done == started && started >= n {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{done} of {started} completed: {v}\n{}",
            err.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let out = charter(&["audit", "verify"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = charter(&["kpi", "--json"], cwd);
    let k = stdout_json(&out);
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    for wf in ["load", "retrying"] {
        let w = &k["workflows"][wf];
        assert_eq!(w["runs"], runs.len() as u64 / 2, "{k}");
        assert_eq!(w["completed"], w["runs"], "{k}");
    }
}
