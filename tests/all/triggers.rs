//! Triggers and timers of `charter up` (issue 13, items 3 and 4), end to
//! end: a real process on a loopback port, a real HTTP client.
//!
//! - a webhook delivery starts a run with its body as input, signed
//!   (HMAC-SHA256, GitHub's header) or by a declared identity's token;
//! - a bad or missing signature, an unknown hook, an oversize body are
//!   refused (401/404/413) and audited, aggregated so a flood adds a
//!   bounded number of events;
//! - a retried delivery answers the first run and starts none, also after
//!   a restart;
//! - a second-granular schedule starts runs while the host runs, one per
//!   tick, also across a restart, and `run-once` makes up for missed ticks;
//! - a retry due in 1 s and a proposal's expiry fire with no command.
//!
//! No timed assertion beyond "within a generous bound".

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::cli::refunds_deployment;
use crate::support::{charter, charter_bin, fixture, text};

const KEY: &str = "hook-secret-of-the-test";
const BOUND: Duration = Duration::from_secs(20);

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request with raw `body` and extra `headers`.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // The server may answer (413) before it read everything.
    let _ = s.write_all(&bytes);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        body: body.to_string(),
    }
}

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn mint(name: &str, cwd: &Path) -> (String, String) {
    let out = charter(&["tokens", "create", name, "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["token"].as_str().unwrap().to_string(),
        v["hash"].as_str().unwrap().to_string(),
    )
}

/// The refunds example (its `refund` workflow needs an approval above
/// 100 €) plus the `work` fixture, a hook, a flaky workflow and `extra`;
/// tokens for bob (approver), carol and the service account `ci`.
struct Service {
    dir: tempfile::TempDir,
    bob: String,
    carol: String,
    ci: String,
    ci2: String,
}

fn service(extra: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let (bob, bob_h) = mint("bob", cwd);
    let (carol, carol_h) = mint("carol", cwd);
    let (ci, ci_h) = mint("ci", cwd);
    let (ci2, ci2_h) = mint("ci2", cwd);
    let mut toml = std::fs::read_to_string(cwd.join("charter.toml")).unwrap();
    for (name, h) in [("carol", &carol_h), ("bob", &bob_h)] {
        let header = format!("[approvers.{name}]\n");
        toml = toml.replace(&header, &format!("{header}tokens = [\"{h}\"]\n"));
    }
    toml.push_str(&format!(
        r#"
[identities.ci]
kind = "service"
tokens = ["{ci_h}"]

[identities.ci2]
kind = "service"
tokens = ["{ci2_h}"]

[secrets.hook-key]
env = "CHARTER_TEST_HOOK_KEY"

[groups.wf-http]
capabilities = ["wasi:http/outgoing-handler.handle"]
allow_hosts = ["127.0.0.1:9"]

[plugins.work]
path = "{work}"
groups = ["ledger", "logging", "wf-http"]

[workflows.echo]
[[workflows.echo.steps]]
id = "s"
plugin = "work"
[workflows.echo.triggers.webhook]
name = "gh"
secret = "hook-key"
identities = ["ci", "ci2"]
delivery_header = "X-GitHub-Delivery"
max_body_kib = 4

[workflows.flaky]
[[workflows.flaky.steps]]
id = "call"
plugin = "work"
input = {{ mode = "flaky", fail_until = 2, attempt = "$/run/attempt" }}
retry = {{ max_attempts = 2, initial_backoff_ms = 1000, max_backoff_ms = 1000 }}
{extra}
"#,
        work = fixture("fx-workflow").display(),
    ));
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();
    Service {
        dir,
        bob: format!("Bearer {bob}"),
        carol: format!("Bearer {carol}"),
        ci: format!("Bearer {ci}"),
        ci2: format!("Bearer {ci2}"),
    }
}

/// Start `charter up` on a free loopback port; its address.
fn up(cwd: &Path) -> (Child, String) {
    let mut child = Command::new(charter_bin())
        .args(["up", "--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .env("CHARTER_TEST_HOOK_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = crate::up::served_address(&mut child);
    (child, addr)
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn get(addr: &str, token: &str, path: &str) -> Value {
    let r = http(addr, "GET", path, &[("Authorization", token)], b"");
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

/// Poll run `run` until `done` holds, within [`BOUND`].
fn wait_for(addr: &str, token: &str, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = get(addr, token, &format!("/v1/runs/{run}"));
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < BOUND,
            "run did not get there in time: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events(addr: &str, token: &str, kind: &str) -> Vec<Value> {
    get(addr, token, &format!("/v1/audit?type={kind}"))["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn deliver(addr: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    http(addr, "POST", "/hooks/gh", &h, body)
}

/// Webhooks: signed and token deliveries start runs with the body as
/// input; a retried delivery answers the first run and starts nothing,
/// also after a restart, or under a new id; refusals are 401/413 with the API's error
/// body and `hook-refused` audit events, a flood of them aggregated.
#[test]
fn webhook_deliveries_start_one_run_each_and_refusals_are_audited() {
    let s = service("");
    let cwd = s.dir.path();

    // `charter check` shows the hook.
    let out = charter(&["check"], cwd);
    assert!(
        text(&out).contains("workflow echo: webhook POST /hooks/gh"),
        "{}",
        text(&out)
    );

    let (child, addr) = up(cwd);
    let a = addr.as_str();

    // A signed delivery starts a run with the body as its input.
    let body = br#"{"action":"opened","number":7}"#;
    let sig = sign(KEY, body);
    let r = deliver(
        a,
        body,
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", "d-1")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let first = r.json()["run"].as_str().unwrap().to_string();
    assert_eq!(r.json()["status"], "started");
    let v = wait_for(a, &s.carol, &first, |v| v["status"] == "completed");
    assert_eq!(v["input"], json!({"action": "opened", "number": 7}), "{v}");
    assert_eq!(v["output"]["echo"]["number"], 7, "{v}");
    assert_eq!(v["initiator"], "hook:gh", "{v}");

    // The same delivery again: the same run, nothing started.
    let r = deliver(
        a,
        body,
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", "d-1")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["run"], first.as_str());
    assert_eq!(r.json()["status"], "duplicate");

    // Concurrent retries of one new delivery start one run between them.
    let body2 = br#"{"n":2}"#;
    let sig2 = sign(KEY, body2);
    let answers: Vec<Reply> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| {
                    deliver(
                        a,
                        body2,
                        &[("X-Hub-Signature-256", &sig2), ("X-GitHub-Delivery", "d-2")],
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let runs: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|r| {
            assert!(r.status == 200 || r.status == 202, "{}", r.body);
            r.json()["run"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(answers.iter().filter(|r| r.status == 202).count(), 1);

    // A declared identity's token: the run's initiator is that identity.
    let r = deliver(
        a,
        b"{}",
        &[("Authorization", &s.ci), ("X-GitHub-Delivery", "d-3")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let by_token = r.json()["run"].as_str().unwrap().to_string();
    let v = wait_for(a, &s.carol, &by_token, |v| v["status"] == "completed");
    assert_eq!(v["initiator"], "ci", "{v}");
    // Each sender numbers its own deliveries: another identity's d-3 is
    // another start (not a "duplicate" answered with ci's run, its input
    // dropped); ci's own d-3 again is the duplicate.
    let r = deliver(
        a,
        br#"{"from":"ci2"}"#,
        &[("Authorization", &s.ci2), ("X-GitHub-Delivery", "d-3")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let other = r.json()["run"].as_str().unwrap().to_string();
    assert_ne!(other, by_token);
    let v = wait_for(a, &s.carol, &other, |v| v["status"] == "completed");
    assert_eq!(v["initiator"], "ci2", "{v}");
    let r = deliver(
        a,
        b"{}",
        &[("Authorization", &s.ci), ("X-GitHub-Delivery", "d-3")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["run"], by_token.as_str(), "{}", r.body);

    // Refusals, each with the API's error document.
    let cases: Vec<(u16, &str, Reply)> = vec![
        // Signed with another key.
        (
            401,
            "bad-signature",
            deliver(
                a,
                body,
                &[
                    ("X-Hub-Signature-256", &sign("guess", body)),
                    ("X-GitHub-Delivery", "d-9"),
                ],
            ),
        ),
        // The right signature over another body.
        (
            401,
            "bad-signature",
            deliver(
                a,
                br#"{"number":8}"#,
                &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", "d-9")],
            ),
        ),
        // Nothing that proves anything.
        (
            401,
            "no-credential",
            deliver(a, body, &[("X-GitHub-Delivery", "d-9")]),
        ),
        // A token of an identity the hook does not name (carol).
        (
            401,
            "bad-token",
            deliver(
                a,
                body,
                &[("Authorization", &s.carol), ("X-GitHub-Delivery", "d-9")],
            ),
        ),
        // A token nobody holds.
        (
            401,
            "bad-token",
            deliver(
                a,
                body,
                &[
                    ("Authorization", "Bearer cht_ci_0_00"),
                    ("X-GitHub-Delivery", "d-9"),
                ],
            ),
        ),
        // An unknown hook: the same answer as a bad credential.
        (
            401,
            "unknown-hook",
            http(
                a,
                "POST",
                "/hooks/nope",
                &[("X-Hub-Signature-256", &sig)],
                body,
            ),
        ),
        // Over max_body_kib (4 KiB), signed or not.
        (413, "too-large", {
            let big = vec![b' '; 8 * 1024];
            deliver(
                a,
                &big,
                &[
                    ("X-Hub-Signature-256", &sign(KEY, &big)),
                    ("X-GitHub-Delivery", "d-9"),
                ],
            )
        }),
    ];
    for (status, reason, r) in &cases {
        assert_eq!(r.status, *status, "{reason}: {}", r.body);
        let e = r.json();
        assert_eq!(e["ok"], false, "{e}");
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    // An unknown hook and a known one with a bad or no credential cannot
    // be told apart: one status, one body.
    let unauthenticated: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter(|(status, _, _)| *status == 401)
        .map(|(_, _, r)| r.body.as_str())
        .collect();
    assert_eq!(unauthenticated.len(), 1, "{unauthenticated:?}");

    // The first delivery's signed body replayed under a new delivery id:
    // the first run, nothing started.
    let r = deliver(
        a,
        body,
        &[
            ("X-Hub-Signature-256", &sig),
            ("X-GitHub-Delivery", "d-replayed"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["run"], first.as_str(), "{}", r.body);
    assert_eq!(r.json()["status"], "duplicate");
    // An authenticated delivery without a delivery id, or with a body that
    // is not JSON, is the sender's mistake (400), not an audited refusal.
    let r = deliver(a, body, &[("X-Hub-Signature-256", &sig)]);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = deliver(
        a,
        b"not json",
        &[
            ("X-Hub-Signature-256", &sign(KEY, b"not json")),
            ("X-GitHub-Delivery", "d-8"),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // Every kind of refusal is in the log, under its hook (an unknown
    // hook's name is not trusted: `?`).
    let refused = events(a, &s.bob, "hook-refused");
    for (_, reason, _) in &cases {
        assert!(
            refused.iter().any(|e| e["reason"] == *reason),
            "{reason} not audited: {refused:?}"
        );
    }
    assert!(
        refused
            .iter()
            .any(|e| e["reason"] == "unknown-hook" && e["hook"] == "?")
    );

    // A flood of bad signatures adds no event within the window: the
    // log grows by a bounded amount, whatever the rate.
    let before = refused.len();
    for i in 0..200 {
        let r = deliver(
            a,
            body,
            &[
                ("X-Hub-Signature-256", "sha256=00"),
                ("X-GitHub-Delivery", &format!("f-{i}")),
            ],
        );
        assert_eq!(r.status, 401);
    }
    let after = events(a, &s.bob, "hook-refused").len();
    assert!(
        after <= before + 1,
        "{before} → {after} events for 200 refusals"
    );

    // Four deliveries (ci2's d-3 among them), four runs of `echo`.
    let echo_runs = |a: &str| -> Vec<String> {
        get(a, &s.bob, "/v1/runs")["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["workflow"] == "echo")
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(echo_runs(a).len(), 4);
    stop(child);

    // After a restart the retried delivery still answers its first run.
    let (child, addr) = up(cwd);
    let a = addr.as_str();
    let r = deliver(
        a,
        body,
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", "d-1")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["run"], first.as_str());
    assert_eq!(echo_runs(a).len(), 4);
    // ci2's d-3 after the restart is still its own run's duplicate.
    let r = deliver(
        a,
        b"{}",
        &[("Authorization", &s.ci2), ("X-GitHub-Delivery", "d-3")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo_runs(a).len(), 4);
    let k = get(a, &s.bob, "/v1/kpi");
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    stop(child);
    let out = charter(&["audit", "verify"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The ticks of schedule runs, from the log: `(tick ms, run)`.
fn ticks(addr: &str, token: &str) -> Vec<(u64, String)> {
    events(addr, token, "run-started")
        .iter()
        .filter(|e| e["trigger"]["kind"] == "schedule")
        .map(|e| {
            (
                e["trigger"]["key"].as_str().unwrap().parse().unwrap(),
                e["run"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Timers and schedules fire with no command: a schedule of one tick a
/// second starts runs while the host runs, one per tick also across a
/// restart, and one run for the ticks missed while it was down
/// (`run-once`); a retry due in 1 s runs; a proposal expires on time.
#[test]
fn schedules_retries_expiries_and_deadlines_fire_on_time() {
    let s = service(
        r#"
[workflows.stuck]
[[workflows.stuck.steps]]
id = "call"
plugin = "work"
input = { mode = "flaky", fail_until = 1000, attempt = "$/run/attempt" }
retry = { max_attempts = 1 }
on_failure = "escalate"
escalation_deadline_ms = 1000
[workflows.tick]
[[workflows.tick.steps]]
id = "s"
plugin = "work"
[workflows.tick.triggers.schedule]
cron = "* * * * * *"
timezone = "Europe/Berlin"
missed = "run-once"
input = { from = "schedule" }
"#,
    );
    let cwd = s.dir.path();
    // Proposals of the refunds group expire after 2 s.
    let toml = std::fs::read_to_string(cwd.join("charter.toml"))
        .unwrap()
        .replace("proposal_expiry_hours = 72", "proposal_expiry_seconds = 2");
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();
    let out = charter(&["check", "--json"], cwd);
    let check: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sched = check["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "schedule")
        .cloned()
        .unwrap_or_else(|| panic!("{check}"));
    assert_eq!(sched["workflow"], "tick");
    assert!(
        sched["next_fire"]
            .as_str()
            .is_some_and(|t| t.ends_with("+01:00") || t.ends_with("+02:00")),
        "{sched}"
    );

    let (child, addr) = up(cwd);
    let a = addr.as_str();

    // A retry due in 1 s runs without any command.
    let r = http(
        a,
        "POST",
        "/v1/runs",
        &[
            ("Authorization", &s.carol),
            ("Content-Type", "application/json"),
        ],
        json!({"workflow": "flaky", "input": {}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let flaky = r.json()["run"].as_str().unwrap().to_string();

    // A refund that needs an approval nobody gives: it expires on time.
    let input = json!({"order_id": "A-9", "amount_cents": 20_000, "reason": "lost"});
    let r = http(
        a,
        "POST",
        "/v1/runs",
        &[
            ("Authorization", &s.carol),
            ("Content-Type", "application/json"),
        ],
        json!({"workflow": "refund", "input": input})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let refund = r.json()["run"].as_str().unwrap().to_string();

    // A step that escalates with a 1 s deadline nobody meets: the run fails
    // on time, resolved by `deadline`, without any command.
    let r = http(
        a,
        "POST",
        "/v1/runs",
        &[
            ("Authorization", &s.carol),
            ("Content-Type", "application/json"),
        ],
        json!({"workflow": "stuck", "input": {}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let stuck = r.json()["run"].as_str().unwrap().to_string();

    let v = wait_for(a, &s.carol, &flaky, |v| v["status"] == "completed");
    let attempts: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(attempts, ["failed", "ok"], "{v}");

    let v = wait_for(a, &s.carol, &refund, |v| {
        v["status"] != "running" && v["status"] != "waiting-approval"
    });
    assert_eq!(v["status"], "failed", "{v}");
    let proposal = v["proposal"].as_str().map(str::to_string);
    let proposals = get(a, &s.bob, "/v1/proposals?all=true");
    let p = proposals["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["run"].as_str() == Some(refund.as_str())
                || Some(p["id"].as_str().unwrap().to_string()) == proposal
        })
        .cloned()
        .unwrap_or_else(|| panic!("{proposals}"));
    assert_eq!(p["status"], "expired", "{p}");
    // The timers recorded the expiry: one proposal-resolved event.
    let pid = p["id"].as_str().unwrap().to_string();
    let expiries = |a: &str| {
        events(a, &s.bob, "proposal-resolved")
            .iter()
            .filter(|e| e["proposal"] == pid.as_str() && e["status"] == "expired")
            .count()
    };
    assert_eq!(
        expiries(a),
        1,
        "{:?}",
        events(a, &s.bob, "proposal-resolved")
    );

    let v = wait_for(a, &s.carol, &stuck, |v| {
        v["status"] != "running" && v["status"] != "escalated"
    });
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("escalation_deadline_ms = 1000")),
        "{v}"
    );
    let deadlines = |a: &str| {
        events(a, &s.bob, "escalation-resolved")
            .iter()
            .filter(|e| e["run"] == stuck.as_str() && e["by"] == "deadline")
            .cloned()
            .collect::<Vec<Value>>()
    };
    let d = deadlines(a);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["action"], "fail", "{d:?}");
    assert_eq!(d[0]["accepted"], true, "{d:?}");

    // The schedule has been starting runs: one per tick, each completes.
    let start = Instant::now();
    while ticks(a, &s.bob).len() < 3 {
        assert!(start.elapsed() < BOUND, "{:?}", ticks(a, &s.bob));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, run) = ticks(a, &s.bob)[0].clone();
    let v = wait_for(a, &s.bob, &run, |v| v["status"] == "completed");
    assert_eq!(v["initiator"], "schedule:tick", "{v}");
    assert_eq!(v["input"], json!({"from": "schedule"}), "{v}");
    stop(child);

    // Down for 3 s: ticks are missed; run-once starts one run for the
    // latest of them, then the schedule goes on.
    let before = ticks_offline(cwd);
    let last_before = before.iter().map(|(t, _)| *t).max().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let restarted = charter_audit::now_ms();
    let (child, addr) = up(cwd);
    let a = addr.as_str();
    let start = Instant::now();
    while ticks(a, &s.bob)
        .iter()
        .filter(|(t, _)| *t > restarted)
        .count()
        < 2
    {
        assert!(start.elapsed() < BOUND, "{:?}", ticks(a, &s.bob));
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = ticks(a, &s.bob);
    // Still one expiry record after a restart, and one deadline.
    assert_eq!(expiries(a), 1);
    assert_eq!(deadlines(a).len(), 1);
    stop(child);
    // The ticks missed well before the restart were not made up one by
    // one (run-once starts at most one run, for the latest, which is
    // within the second before the host came up; `missed_tick`'s unit
    // test pins the policy itself).
    let backfilled: Vec<u64> = all
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t > last_before && *t + 1000 < restarted)
        .collect();
    assert!(
        backfilled.is_empty(),
        "missed ticks backfilled: {backfilled:?} in {all:?}"
    );
    // Never two runs for one tick.
    let distinct: std::collections::BTreeSet<u64> = all.iter().map(|(t, _)| *t).collect();
    assert_eq!(distinct.len(), all.len(), "{all:?}");
    let out = charter(&["audit", "verify"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Schedule ticks read from the log with the CLI (no host up).
fn ticks_offline(cwd: &Path) -> Vec<(u64, String)> {
    let out = charter(&["audit", "show", "--type", "run-started", "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["trigger"]["kind"] == "schedule")
        .map(|e| {
            (
                e["trigger"]["key"].as_str().unwrap().parse().unwrap(),
                e["run"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
