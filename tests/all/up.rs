//! `charter up` end to end (issue 13, first slice): a real process on a
//! loopback port, used through HTTP and the CLI at once. Every request is
//! authenticated; who acts is the token's identity, never a name in the
//! body; approvals through the API resume the run while the host drives
//! it; SIGTERM stops it cleanly and the log verifies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::refunds_deployment;
use crate::support::{charter, charter_bin, text};

pub(crate) struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: {t}\r\n"));
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
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

pub(crate) fn mint(name: &str, cwd: &Path) -> (String, String) {
    let out = charter(&["tokens", "create", name, "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        format!("Bearer {}", v["token"].as_str().unwrap()),
        v["hash"].as_str().unwrap().to_string(),
    )
}

/// Start `charter up` on a free loopback port; its address.
/// The address a `charter up` child prints on its first line of stdout.
pub(crate) fn served_address(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .rsplit_once("http://")
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .1
        .to_string()
}

pub(crate) fn up(cwd: &Path) -> (Child, String) {
    let mut child = Command::new(charter_bin())
        .args(["up", "--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = served_address(&mut child);
    (child, addr)
}

pub(crate) fn wait_for(addr: &str, token: &str, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let r = http(addr, "GET", &format!("/v1/runs/{run}"), Some(token), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "run stuck: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_serves_the_api_to_proven_callers_only() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);

    // Without any token the service refuses to start: nobody could prove
    // who they are to it.
    let out = charter(&["up", "--listen", "127.0.0.1:0"], cwd);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("declares no token"), "{}", text(&out));

    let (carol, carol_h) = mint("carol", cwd);
    let (bob, bob_h) = mint("bob", cwd);
    let (shop, shop_h) = mint("shop", cwd);
    let mut toml = std::fs::read_to_string(cwd.join("charter.toml")).unwrap();
    for (name, h) in [("carol", &carol_h), ("bob", &bob_h)] {
        let header = format!("[approvers.{name}]\n");
        toml = toml.replace(&header, &format!("{header}tokens = [\"{h}\"]\n"));
    }
    toml.push_str(&format!(
        "\n[identities.shop]\nkind = \"service\"\nroles = [\"refund-approver\"]\ntokens = [\"{shop_h}\"]\n"
    ));
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();

    let (mut child, addr) = up(cwd);
    let a = addr.as_str();

    // Health needs no token; everything else does.
    assert_eq!(http(a, "GET", "/healthz", None, None).status, 200);
    for token in [
        None,
        Some("Basic Ym9iOmJvYg=="),
        Some("Bearer cht_bob_0_00"),
        Some("Bearer "),
    ] {
        let r = http(a, "GET", "/v1/runs", token, None);
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{}",
            r.head
        );
        assert_eq!(r.json()["error"]["kind"], "unauthenticated", "{}", r.body);
    }
    let me = http(a, "GET", "/v1/whoami", Some(&carol), None).json();
    assert_eq!(me["identity"], "carol");

    // carol starts a refund that needs an approval; the host drives it.
    let input = json!({"order_id": "A-9", "amount_cents": 20_000, "reason": "lost"});
    let r = http(
        a,
        "POST",
        "/v1/runs",
        Some(&carol),
        Some(&json!({"workflow": "refund", "input": input})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let run = r.json()["run"].as_str().unwrap().to_string();
    let v = wait_for(a, &carol, &run, |v| v["status"] != "running");
    assert_eq!(v["status"], "waiting-approval", "{v}");
    assert_eq!(v["initiator"], "carol", "{v}");
    let proposal = v["proposal"].as_str().unwrap().to_string();
    let approve = format!("/v1/proposals/{proposal}/approve");

    // A body cannot name who acts.
    let r = http(
        a,
        "POST",
        &approve,
        Some(&carol),
        Some(&json!({"by": "bob"})),
    );
    assert!(
        (400..500).contains(&r.status) && r.status != 401,
        "{}: {}",
        r.status,
        r.body
    );
    // The initiator, and a service account, may not approve.
    let r = http(a, "POST", &approve, Some(&carol), None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("separation-of-duties") || r.body.contains("started"),
        "{}",
        r.body
    );
    let r = http(a, "POST", &approve, Some(&shop), None);
    assert_eq!(r.status, 403, "{}", r.body);

    // The CLI reads while the host runs; a second host is refused at once.
    let out = charter(&["runs", "list"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&run));
    let out = charter(&["up", "--listen", "127.0.0.1:0"], cwd);
    assert!(text(&out).contains("already serving"), "{}", text(&out));
    // A command the host does not serve (a direct step call) still needs
    // the data directory, and is told where the service is, at once, not
    // after the lock wait. (Those it serves act through it: tests/all/
    // service.rs.)
    let bob_token = bob.strip_prefix("Bearer ").unwrap();
    let t = Instant::now();
    let out = Command::new(charter_bin())
        .args(["call", "refund-bot"])
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .env("CHARTER_TOKEN", bob_token)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "charter up is serving this deployment at http://{addr}"
        )),
        "{}",
        text(&out)
    );
    assert!(t.elapsed() < Duration::from_secs(20), "waited for the lock");

    // bob approves through the API: the run goes on in the host.
    let r = http(
        a,
        "POST",
        &approve,
        Some(&bob),
        Some(&json!({"comment": "carrier confirmed"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = wait_for(a, &bob, &run, |v| {
        v["status"] == "completed" || v["status"] == "failed"
    });
    assert_eq!(v["status"], "completed", "{v}");
    let decisions = v["decisions"].as_array().unwrap();
    assert!(
        decisions
            .iter()
            .any(|d| d["by"] == "bob" && d["accepted"] == true),
        "{v}"
    );
    assert!(
        decisions.iter().filter(|d| d["accepted"] == false).count() >= 2,
        "the refused attempts are recorded: {v}"
    );
    let k = http(a, "GET", "/v1/kpi", Some(&bob), None).json();
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    let r = http(a, "GET", "/v1/nothing-here", Some(&bob), None);
    assert_eq!(r.status, 404);

    // SIGTERM: a clean stop, the endpoint file gone, the log intact.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!cwd.join("data").join("charter-up.json").exists());
    let out = charter(&["audit", "verify"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
