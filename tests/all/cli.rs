//! The command line: exit codes, reports and their JSON shapes, and the
//! data-driven cases in tests/cases/.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

/// Each tests/cases/<case>/ holds a charter.toml and an `expect` file:
/// first line the command (`check` or `grants`), second the exit code, the
/// rest lines that must appear in the output.
#[test]
fn data_driven_cases() {
    let cases = root().join("tests/cases");
    let mut n = 0;
    for entry in std::fs::read_dir(&cases).unwrap() {
        let dir = entry.unwrap().path();
        let expect = std::fs::read_to_string(dir.join("expect")).unwrap();
        let mut lines = expect.lines();
        let args: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let code: i32 = lines.next().unwrap().trim().parse().unwrap();
        let mut full = args.clone();
        full.extend(["--config", "charter.toml"]);
        let out = charter(&full, &dir);
        let text = text(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "case {}: {text}",
            dir.display()
        );
        for want in lines.filter(|l| !l.trim().is_empty()) {
            assert!(
                text.contains(want),
                "case {}: missing {want:?} in:\n{text}",
                dir.display()
            );
        }
        n += 1;
    }
    assert!(n >= 5, "only {n} cases found");
}

fn example() -> std::path::PathBuf {
    root().join("examples/refund-triage/charter.toml")
}

#[test]
fn inspect_json_shape() {
    let out = charter(
        &[
            "inspect",
            fixture("refund-triage").to_str().unwrap(),
            "--json",
            "--config",
            example().to_str().unwrap(),
        ],
        Path::new("/"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["world"], "charter:plugin/step@0.1.0");
    let imports = v["imports"].as_array().unwrap();
    let kv = imports
        .iter()
        .find(|i| i["interface"] == "charter:host/kv@0.1.0")
        .unwrap();
    assert_eq!(kv["functions"], serde_json::json!(["get"]));
    assert_eq!(kv["class"], "capability");
    assert_eq!(
        kv["granted_by_groups"]["get"],
        serde_json::json!(["orders-read"])
    );
    assert!(imports.iter().any(|i| i["class"] == "wasi-baseline"));
    assert_eq!(v["exports"][0]["name"], "run");
}

#[test]
fn inspect_refuses_core_module() {
    let dir = tempfile::tempdir().unwrap();
    let wat = std::fs::read_to_string(root().join("plugins/core/not-a-component.wat")).unwrap();
    let p = dir.path().join("core.wasm");
    std::fs::write(&p, wat::parse_str(&wat).unwrap()).unwrap();
    let out = charter(&["inspect", p.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("core WebAssembly module, not a component"),
        "{}",
        text(&out)
    );
}

#[test]
fn grants_json_shape() {
    let out = charter(
        &["grants", "--json", "--config", example().to_str().unwrap()],
        Path::new("/"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["plugins"][0];
    assert_eq!(p["name"], "refund-triage");
    assert!(p["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        p["groups"],
        serde_json::json!(["orders-read", "triage-llm", "logging"])
    );
    let caps = v["capabilities"].as_array().unwrap();
    let get = caps
        .iter()
        .find(|c| c["function"] == "charter:host/kv.get")
        .unwrap();
    assert_eq!(get["plugins"], serde_json::json!(["refund-triage"]));
    assert_eq!(get["write"], false);
}

#[test]
fn call_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"data\"\n{GROUPS}\n\
         [plugins.spin]\npath = \"{}\"\nlimits = {{ deadline_ms = 200 }}\n\
         [plugins.bomb]\npath = \"{}\"\n\
         [plugins.sneaky]\npath = \"{}\"\ngroups = [\"kv-read\"]\n\
         [plugins.echo]\npath = \"{}\"\ngroups = [\"kv-read\", \"kv-write\", \"logging\"]\n",
        fixture("fx-infinite-loop").display(),
        fixture("fx-memory-bomb").display(),
        fixture("fx-ungranted").display(),
        fixture("fx-echo").display(),
    );
    std::fs::write(dir.path().join("charter.toml"), toml).unwrap();
    let cwd = dir.path();
    let ok = charter(&["call", "echo", "--input", r#"{"a": 1}"#], cwd);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["echo"]["a"], 1);

    let spin = charter(&["call", "spin"], cwd);
    assert_eq!(spin.status.code(), Some(3), "{}", text(&spin));
    assert!(
        text(&spin).contains("deadline limit exceeded"),
        "{}",
        text(&spin)
    );

    let bomb = charter(&["call", "bomb", "--json"], cwd);
    assert_eq!(bomb.status.code(), Some(3), "{}", text(&bomb));
    let v: Value = serde_json::from_slice(&bomb.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "limit");

    let sneaky = charter(&["call", "sneaky"], cwd);
    assert_eq!(sneaky.status.code(), Some(2), "{}", text(&sneaky));
    assert!(text(&sneaky).contains("import charter:host/kv@0.1.0#set is not granted"));

    let missing = charter(&["call", "nope"], cwd);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("plugin \"nope\" is not in the deployment"),
        "{}",
        text(&missing)
    );
}

#[test]
fn missing_config_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = charter(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("charter.toml"), "{}", text(&out));
    assert!(text(&out).contains("--config"), "{}", text(&out));
}

/// `charter run`, `runs` and `escalations` from the command line: exit
/// codes, JSON shapes, a resolution, a detached run.
#[test]
fn workflow_commands_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("charter.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[deployment]
name = "wf-cli"
phase = 4
data_dir = "data"
[approvers.olga]
roles = ["operator"]
[groups.kv]
capabilities = ["charter:host/kv.*", "charter:host/log.write"]
effect = "write"
[groups.http]
capabilities = ["wasi:http/outgoing-handler.handle"]
allow_hosts = ["127.0.0.1:9"]
[plugins.echo]
path = "{echo}"
groups = ["kv"]
[plugins.work]
path = "{work}"
groups = ["kv", "http"]
[workflows.hello]
[[workflows.hello.steps]]
id = "greet"
plugin = "echo"
input = {{ hello = "$/input/name" }}
[workflows.stuck]
[[workflows.stuck.steps]]
id = "try"
plugin = "work"
input = {{ mode = "flaky", fail_until = 99, attempt = "$/run/attempt" }}
retry = {{ max_attempts = 2, initial_backoff_ms = 5 }}
on_failure = "escalate"
[[workflows.stuck.steps]]
id = "after"
plugin = "echo"
"#,
            echo = fixture("fx-echo").display(),
            work = fixture("fx-workflow").display(),
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let json_of = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
    };

    let out = charter(
        &[
            "run",
            "hello",
            "--input",
            r#"{"name":"ada"}"#,
            "--json",
            "--config",
            c,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"]["echo"]["hello"], "ada");
    assert_eq!(v["exit_code"], 0);

    // Escalated: waiting for people (4), not failed (1).
    let out = charter(&["run", "stuck", "--json", "--config", c], dir.path());
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!(v["status"], "escalated");
    assert_eq!(v["exit_code"], 4);
    let run = v["id"].as_str().unwrap().to_string();
    assert!(
        v["next"]
            .as_str()
            .unwrap()
            .contains("charter escalations resolve")
    );

    let out = charter(
        &["escalations", "list", "--json", "--config", c],
        dir.path(),
    );
    let v = json_of(&out);
    let esc = v["escalations"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(v["escalations"][0]["run"], run.as_str());

    let out = charter(
        &[
            "escalations",
            "resolve",
            &esc,
            "--as",
            "olga",
            "--action",
            "skip",
            "--config",
            c,
        ],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "skip needs --output: {}",
        text(&out)
    );
    assert!(text(&out).contains("--output"), "{}", text(&out));
    let out = charter(
        &[
            "escalations",
            "resolve",
            &esc,
            "--as",
            "olga",
            "--action",
            "skip",
            "--output",
            r#"{"by":"hand"}"#,
            "--json",
            "--config",
            c,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out)["status"], "completed");

    let out = charter(&["runs", "show", &run, "--config", c], dir.path());
    let t = text(&out);
    assert!(
        t.contains("[completed]") && t.contains("step try") && t.contains("[retryable]"),
        "{t}"
    );

    // Detached: the id comes back at once; a background process drives it.
    let out = charter(
        &[
            "run",
            "hello",
            "--detach",
            "--input",
            r#"{"name":"bg"}"#,
            "--config",
            c,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut status = String::new();
    for _ in 0..100 {
        let out = charter(&["runs", "show", &id, "--json", "--config", c], dir.path());
        if out.status.success() {
            status = json_of(&out)["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if status == "completed" {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status, "completed");
    let out = charter(&["runs", "list", "--json", "--config", c], dir.path());
    assert_eq!(json_of(&out)["runs"].as_array().unwrap().len(), 3);
    let out = charter(&["runs", "show", "R-nope", "--config", c], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("charter runs list"));
}

/// Scripts tell a mistyped command line (64) from a governance refusal (2)
/// and from work waiting for people (4): a call awaiting approval, a run
/// waiting for one.
#[test]
fn usage_errors_and_waits_have_their_own_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let usage: [&[&str]; 5] = [
        &[],
        &["chek"],
        &["call"],
        &["new", "go", "x"],
        &["check", "--no-such-option"],
    ];
    for args in usage {
        let out = charter(args, cwd);
        assert_eq!(
            out.status.code(),
            Some(64),
            "charter {args:?}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("--help"),
            "charter {args:?} points to the help: {}",
            text(&out)
        );
    }
    assert!(!cwd.join("x").exists(), "charter new go x wrote nothing");
    for args in [
        &["--help"][..],
        &["--version"],
        &["call", "--help"],
        &["help", "run"],
    ] {
        let out = charter(args, cwd);
        assert_eq!(
            out.status.code(),
            Some(0),
            "charter {args:?}: {}",
            text(&out)
        );
        assert!(!out.stdout.is_empty(), "charter {args:?} prints to stdout");
    }
    let help = String::from_utf8_lossy(&charter(&["run", "--help"], cwd).stdout).to_string();
    assert!(help.contains("4   waiting for people"), "{help}");

    // The refunds deployment: 200 USD needs a refund-approver, 10,000 USD
    // is denied.
    refunds_deployment(cwd);
    let refund = |order: &str, cents: u64| {
        serde_json::json!({"order_id": order, "amount_cents": cents, "reason": "lost"}).to_string()
    };

    let waiting = charter(
        &[
            "call",
            "refund-bot",
            "--as",
            "alice",
            "--input",
            &refund("A-1", 20_000),
        ],
        cwd,
    );
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    assert!(
        text(&waiting).contains("awaiting approval"),
        "{}",
        text(&waiting)
    );
    let waiting = charter(
        &[
            "call",
            "refund-bot",
            "--as",
            "alice",
            "--json",
            "--input",
            &refund("A-2", 20_000),
        ],
        cwd,
    );
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    let v: Value = serde_json::from_slice(&waiting.stdout).unwrap();
    assert_eq!(
        (&v["error"]["kind"], &v["error"]["exit_code"]),
        (
            &serde_json::json!("awaiting-approval"),
            &serde_json::json!(4)
        )
    );

    let denied = charter(
        &[
            "call",
            "refund-bot",
            "--as",
            "alice",
            "--input",
            &refund("A-3", 1_000_000),
        ],
        cwd,
    );
    assert_eq!(denied.status.code(), Some(2), "{}", text(&denied));
    assert!(text(&denied).contains("denied"), "{}", text(&denied));

    let run = charter(
        &[
            "run",
            "refund",
            "--as",
            "carol",
            "--json",
            "--input",
            &refund("A-4", 20_000),
        ],
        cwd,
    );
    assert_eq!(run.status.code(), Some(4), "{}", text(&run));
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["status"], "waiting-approval");
    assert_eq!(v["exit_code"], 4);
    let id = v["id"].as_str().unwrap().to_string();
    // `runs resume` of a run still waiting says so too.
    let resume = charter(&["runs", "resume", &id], cwd);
    assert_eq!(resume.status.code(), Some(4), "{}", text(&resume));
}

/// The missing-config error says the OS error once, and the fix.
#[test]
fn missing_config_says_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = charter(
        &["check", "--config", "/nonexistent/charter.toml"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert_eq!(t.matches("No such file or directory").count(), 1, "{t}");
    assert!(t.contains("--config"), "{t}");
}

/// `inspect` of a component whose `run` export has another type says so,
/// with the type a step needs, instead of "no `run` export".
#[test]
fn inspect_names_a_run_export_of_the_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wrong-run.wasm");
    let wat = r#"(component
        (core module $m (func (export "run") (param i32) (result i32) local.get 0))
        (core instance $i (instantiate $m))
        (func (export "run") (param "n" u32) (result u32) (canon lift (core func $i "run"))))"#;
    std::fs::write(&p, wat::parse_str(wat).unwrap()).unwrap();
    let out = charter(&["inspect", p.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(!t.contains("no `run` export"), "{t}");
    assert!(
        t.contains("it exports `run`, but as `run: func(n: u32) -> u32`; a step exports `run: func(input: string) -> result<string, step-error>`"),
        "{t}"
    );
    let out = charter(&["inspect", p.to_str().unwrap(), "--json"], dir.path());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["world"], Value::Null);
    assert_eq!(v["run_type"], "func(n: u32) -> u32");
}

/// The refunds deployment in `dir`, with a one-step workflow `refund`.
pub(crate) fn refunds_deployment(dir: &Path) {
    let src = root().join("examples/refunds");
    let toml = std::fs::read_to_string(src.join("charter.toml"))
        .unwrap()
        .replace("../../target/charter-data/refunds", "data")
        .replace(
            "../../target/wasm32-wasip2/release/",
            &format!("{}/", fixture("refund-bot").parent().unwrap().display()),
        )
        + r#"
[workflows.refund]
escalate_to = "refund-approver"
[[workflows.refund.steps]]
id = "refund"
plugin = "refund-bot"
"#;
    std::fs::write(dir.join("charter.toml"), toml).unwrap();
    std::fs::copy(src.join("refunds.cedar"), dir.join("refunds.cedar")).unwrap();
}

/// The reports a reviewer and an operator read: the audit trail records
/// the configuration once (again only when it changes), tells a rule from
/// a person and shows who started a denied call, refuses an unknown
/// `--type`, and follows a proposal to its execution; the KPIs break the
/// blocked attempts down by kind; `runs` say who started a run, how long
/// it took and who approved it; `proposals show` of an executed proposal
/// no longer says it waits.
#[test]
fn reports_say_who_and_what_at_a_glance() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let json_of = |o: &std::process::Output| -> Value {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
    };
    let input = serde_json::json!({"order_id": "A-9", "amount_cents": 20_000, "reason": "lost"})
        .to_string();
    let out = charter(
        &[
            "run", "refund", "--as", "carol", "--json", "--input", &input,
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let run = json_of(&out)["id"].as_str().unwrap().to_string();
    let proposal = json_of(&out)["proposal"].as_str().unwrap().to_string();

    // Waiting: the proposal says so.
    let out = charter(&["proposals", "show", &proposal], cwd);
    assert!(
        text(&out).contains("waits for this decision"),
        "{}",
        text(&out)
    );

    let out = charter(&["proposals", "approve", &proposal, "--as", "carol"], cwd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = charter(
        &[
            "proposals",
            "approve",
            &proposal,
            "--as",
            "bob",
            "--comment",
            "carrier confirmed",
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let denied = serde_json::json!({"order_id": "A-10", "amount_cents": 1_000_000, "reason": "x"})
        .to_string();
    let out = charter(
        &["call", "refund-bot", "--as", "alice", "--input", &denied],
        cwd,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Approved and executed: no longer "waits".
    let out = charter(&["proposals", "show", &proposal], cwd);
    let t = text(&out);
    assert!(!t.contains("waits for this decision"), "{t}");
    assert!(t.contains("resumed and executed the call"), "{t}");
    assert!(t.contains("executed   #"), "{t}");

    // runs list: initiator and duration; runs show: who approved.
    let out = charter(&["runs", "list"], cwd);
    let t = text(&out);
    assert!(t.contains("INITIATOR") && t.contains("DURATION"), "{t}");
    let line = t.lines().find(|l| l.starts_with(&run)).unwrap();
    assert!(
        line.contains(" carol ") && !line.trim_end().ends_with('-'),
        "{t}"
    );
    let out = charter(&["runs", "show", &run], cwd);
    let t = text(&out);
    assert!(
        t.contains(&format!("proposal {proposal} approved by bob")),
        "{t}"
    );
    assert!(t.contains("REFUSED attempt by carol to approve"), "{t}");
    let v = json_of(&charter(&["runs", "show", &run, "--json"], cwd));
    let decisions = v["decisions"].as_array().unwrap();
    assert!(
        decisions
            .iter()
            .any(|d| d["by"] == "bob" && d["accepted"] == true && d["action"] == "approve"),
        "{v}"
    );

    // The configuration is recorded once over all these commands...
    let types = |v: &Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    let all = types(&json_of(&charter(&["audit", "show", "--json"], cwd)));
    let n = |ts: &[String], t: &str| ts.iter().filter(|x| *x == t).count();
    assert_eq!(n(&all, "config-loaded"), 1, "{all:?}");
    assert_eq!(n(&all, "grant"), 3, "{all:?}");
    // ... and again once it changes, marked as a change.
    let cfg = cwd.join("charter.toml");
    let mut toml = std::fs::read_to_string(&cfg).unwrap();
    toml.push_str("\n# a change\n");
    std::fs::write(&cfg, toml).unwrap();
    let out = charter(
        &["call", "refund-bot", "--as", "alice", "--input", &denied],
        cwd,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let v = json_of(&charter(
        &["audit", "show", "--type", "config-loaded", "--json"],
        cwd,
    ));
    let loaded = v["events"].as_array().unwrap();
    assert_eq!(loaded.len(), 2, "{v}");
    assert_eq!(
        (&loaded[0]["changed"], &loaded[1]["changed"]),
        (&Value::Bool(false), &Value::Bool(true))
    );

    // "by" is a rule or a person, never ambiguous; a denied call names
    // who started it.
    let out = charter(&["audit", "show", "--type", "call"], cwd);
    let t = text(&out);
    assert!(!t.contains(" by ["), "{t}");
    assert!(
        t.contains("by rule [refunds/large-refunds-need-approval]"),
        "{t}"
    );
    let deny = t.lines().find(|l| l.contains("deny ")).unwrap();
    assert!(deny.contains("initiator alice"), "{deny}");

    // An unknown type is a usage error that lists the types.
    let out = charter(&["audit", "show", "--type", "bogus"], cwd);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    for k in charter_audit::Event::KINDS {
        assert!(text(&out).contains(k), "{k}: {}", text(&out));
    }

    // A proposal's trail: the call that proposed it, the decisions, and
    // the approved execution.
    let v = json_of(&charter(
        &["audit", "show", "--proposal", &proposal, "--json"],
        cwd,
    ));
    let ev = v["events"].as_array().unwrap();
    let decisions: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "call")
        .map(|e| e["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["propose", "allow"], "{v}");
    assert!(
        ev.iter()
            .any(|e| e["type"] == "call-result" && e["proposal"] == proposal.as_str()),
        "{v}"
    );
    for t in ["proposal", "approval-decision", "proposal-resolved"] {
        assert!(ev.iter().any(|e| e["type"] == t), "{t}: {v}");
    }

    // KPIs: the blocked attempts by kind, adding up to the total; the text
    // says what each count counts.
    let v = json_of(&charter(&["kpi", "--json"], cwd));
    let b = &v["blocked_by_kind"];
    assert_eq!(b["call_denied"], 2, "{v}");
    assert_eq!(b["approval_refused"], 1, "{v}");
    assert_eq!(b["plugin_refused_at_load"], 0, "{v}");
    assert_eq!(b["escalation_resolution_refused"], 0, "{v}");
    assert_eq!(v["blocked_unauthorized_attempts"], 3, "{v}");
    assert_eq!(v["unauthorized_actions_executed"], 0, "{v}");
    let t = text(&charter(&["kpi"], cwd));
    for want in [
        "events: entries in the audit log",
        "steps: plugin executions",
        "call denied",
        "approval attempt refused",
        "plugin refused at load",
        "escalation resolution refused",
        "step attempts:",
    ] {
        assert!(t.contains(want), "{want}: {t}");
    }
}

/// README lists every event type `audit show --type` accepts.
#[test]
fn readme_lists_every_audit_event_type() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let list = readme
        .split("(types: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("README lists the audit event types as `(types: ...)`");
    for k in charter_audit::Event::KINDS {
        assert!(
            list.contains(&format!("`{k}`")),
            "README's audit show types miss {k}"
        );
    }
}

/// `grants` marks writes per function: a group holding `kv.set` does not
/// make its `kv.get` a write.
#[test]
fn grants_mark_writes_per_function() {
    let out = charter(
        &["grants", "--json", "--config", "charter.toml"],
        &root().join("tests/cases/grants-per-function"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let write = |f: &str| {
        v["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["function"] == f)
            .unwrap_or_else(|| panic!("{f}: {v}"))["write"]
            .clone()
    };
    assert_eq!(write("charter:host/kv.get"), false);
    assert_eq!(write("charter:host/kv.list-keys"), false);
    assert_eq!(write("charter:host/kv.set"), true);
    let fns = v["plugins"][0]["functions"].as_array().unwrap();
    let get = fns
        .iter()
        .find(|f| f["function"] == "charter:host/kv.get")
        .unwrap();
    assert_eq!(get["effect"], "read", "{v}");
}

/// A JSON shape as README writes it inline: `{a, b?: {c}, d: [{e}], f | g}`
/// (`?` and `|`: a key that may be absent). Values other than `{…}` and
/// `[…]` (`true`, `"ok"|"refused"`, `…fields of the event`) are skipped.
#[derive(Debug)]
enum Shape {
    Object(Vec<(String, bool, Option<Shape>)>),
    Array(Box<Shape>),
}

/// A recursive-descent reader of that notation: long only because each
/// of its four token kinds (`{`, `[`, a key, prose) has its arm.
fn parse_shape(text: &str) -> Shape {
    fn skip_ws(s: &[char], i: &mut usize) {
        while *i < s.len() && s[*i].is_whitespace() {
            *i += 1;
        }
    }
    fn value(s: &[char], i: &mut usize) -> Option<Shape> {
        skip_ws(s, i);
        match s.get(*i) {
            Some('{') => Some(object(s, i)),
            Some('[') => {
                *i += 1;
                let inner = value(s, i);
                skip_ws(s, i);
                assert_eq!(s.get(*i), Some(&']'), "README shape: ] expected");
                *i += 1;
                inner.map(|v| Shape::Array(Box::new(v)))
            }
            _ => {
                // A scalar (or prose): up to the next , or } at this depth.
                while *i < s.len() && !matches!(s[*i], ',' | '}' | ']') {
                    *i += 1;
                }
                None
            }
        }
    }
    fn object(s: &[char], i: &mut usize) -> Shape {
        assert_eq!(s[*i], '{');
        *i += 1;
        let mut keys: Vec<(String, bool, Option<Shape>)> = Vec::new();
        loop {
            skip_ws(s, i);
            match s.get(*i) {
                Some('}') => {
                    *i += 1;
                    return Shape::Object(keys);
                }
                Some(',') => *i += 1,
                Some('|') => {
                    // `a | b`: either key, so each may be absent.
                    *i += 1;
                    if let Some(last) = keys.last_mut() {
                        last.1 = true;
                    }
                    skip_ws(s, i);
                    let start = *i;
                    while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == '_') {
                        *i += 1;
                    }
                    keys.push((s[start..*i].iter().collect(), true, None));
                }
                Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                    let start = *i;
                    while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == '_') {
                        *i += 1;
                    }
                    let key: String = s[start..*i].iter().collect();
                    let optional = s.get(*i) == Some(&'?');
                    if optional {
                        *i += 1;
                    }
                    skip_ws(s, i);
                    let nested = if s.get(*i) == Some(&':') {
                        *i += 1;
                        value(s, i)
                    } else {
                        None
                    };
                    keys.push((key, optional, nested));
                }
                // Prose in place of keys (`…fields of the event`): the
                // object may hold keys README does not list.
                Some(_) => {
                    while *i < s.len() && !matches!(s[*i], ',' | '}') {
                        *i += 1;
                    }
                    keys.push((OPEN.to_string(), true, None));
                }
                None => panic!("README shape: unclosed {{"),
            }
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    skip_ws(&chars, &mut i);
    object(&chars, &mut i)
}

/// The key of an object README leaves open (`{seq, …fields of the event}`).
const OPEN: &str = "…";

/// Keys at which a document holds data (names chosen by the deployment or
/// the run), not a fixed set of fields: their contents are not compared.
const DATA_KEYS: &[&str] = &[
    "calls",
    "workflows",
    "agents",
    "outputs",
    "output",
    "input",
    "args",
    "granted_by_groups",
    "result",
    "plugins",
];

/// Compare README's shape with a document the CLI printed: the same keys
/// at every level README spells out (a key README marks optional may be
/// absent), for arrays each element README shows against some element.
fn compare_shape(path: &str, want: &Shape, got: &Value, problems: &mut Vec<String>) {
    match (want, got) {
        (Shape::Object(keys), Value::Object(obj)) => {
            for (k, optional, nested) in keys {
                match obj.get(k) {
                    None if *optional => {}
                    None => problems.push(format!("{path}.{k}: in README, not in the document")),
                    Some(v) => {
                        if let (Some(n), false) = (nested, DATA_KEYS.contains(&k.as_str())) {
                            compare_shape(&format!("{path}.{k}"), n, v, problems);
                        }
                    }
                }
            }
            let open = keys.iter().any(|(w, _, _)| w == OPEN);
            for k in obj.keys().filter(|_| !open) {
                if !keys.iter().any(|(w, _, _)| w == k) {
                    problems.push(format!("{path}.{k}: in the document, not in README"));
                }
            }
        }
        (Shape::Array(inner), Value::Array(items)) => {
            let mut best: Option<Vec<String>> = None;
            for item in items {
                let mut p = Vec::new();
                compare_shape(&format!("{path}[]"), inner, item, &mut p);
                if best.as_ref().is_none_or(|b| p.len() < b.len()) {
                    best = Some(p);
                }
            }
            problems.extend(best.unwrap_or_default());
        }
        (_, Value::Null) => {}
        (w, g) => problems.push(format!("{path}: README has {w:?}, the document {g}")),
    }
}

/// A README code block's JSON as a shape: `//` comments and `{…}` dropped,
/// every key of every object kept (keys named in `optional` may be
/// absent from the document: `output` before a run's first step ends).
fn block_shape(json: &str, optional: &[&str]) -> Shape {
    let text: String = json
        .lines()
        .map(|l| match l.find("  //") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{…}", "{}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    fn shape(v: &Value, optional: &[&str]) -> Option<Shape> {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<(String, bool, Option<Shape>)> = o
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            optional.contains(&k.as_str()),
                            shape(v, optional),
                        )
                    })
                    .collect();
                for k in optional {
                    if !o.contains_key(*k) {
                        keys.push((k.to_string(), true, None));
                    }
                }
                Some(Shape::Object(keys))
            }
            Value::Array(a) => a
                .first()
                .and_then(|x| shape(x, optional))
                .map(|s| Shape::Array(Box::new(s))),
            _ => None,
        }
    }
    shape(&v, optional).expect("README block is a JSON object")
}

/// The text of README between `after` and the next `until`.
fn readme_span<'a>(readme: &'a str, after: &str, until: &str) -> &'a str {
    let start = readme
        .find(after)
        .unwrap_or_else(|| panic!("README no longer says {after:?}"))
        + after.len();
    let len = readme[start..].find(until).expect("README span ends");
    &readme[start..start + len]
}

/// The document deserializes into its `charter_api` type and serializes
/// back to the same JSON: the type is the contract, field for field.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, v: &Value) {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{what}: not a {}: {e}\n{v}", std::any::type_name::<T>()));
    assert_eq!(
        &serde_json::to_value(&typed).unwrap(),
        v,
        "{what}: {} does not serialize back to the document",
        std::any::type_name::<T>()
    );
}

/// Every JSON document README describes is what the CLI prints (the same
/// keys at every level README spells out) and what `charter_api`'s
/// response type serializes to: a daemon or an MCP server serving those
/// types serves README's contract.
///
/// Long: one deployment walked through every documented document in turn
/// (a run waits, is refused, is approved), then each compared.
#[test]
fn readme_json_documents_are_the_api_types() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let doc = |args: &[&str], code: i32| -> Value {
        let out = charter(args, cwd);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
    };
    let input = |cents: u64| {
        serde_json::json!({"order_id": "A-9", "amount_cents": cents, "reason": "lost"}).to_string()
    };
    let triage = fixture("refund-triage");
    let inspect = doc(&["inspect", triage.to_str().unwrap(), "--json"], 0);
    let grants = doc(&["grants", "--json"], 0);
    let check = doc(&["check", "--json"], 0);
    let call_ok = doc(
        &["call", "refund-bot", "--json", "--input", &input(4999)],
        0,
    );
    let call_failed = doc(
        &[
            "call",
            "refund-bot",
            "--json",
            "--as",
            "alice",
            "--input",
            &input(1_000_000),
        ],
        2,
    );
    let run = doc(
        &[
            "run",
            "refund",
            "--as",
            "carol",
            "--json",
            "--input",
            &input(20_000),
        ],
        4,
    );
    let run_id = run["id"].as_str().unwrap().to_string();
    let proposal = run["proposal"].as_str().unwrap().to_string();
    let proposals = doc(&["proposals", "list", "--json"], 0);
    let refused = doc(
        &["proposals", "approve", &proposal, "--as", "carol", "--json"],
        2,
    );
    let approved = doc(
        &["proposals", "approve", &proposal, "--as", "bob", "--json"],
        0,
    );
    let show = doc(&["runs", "show", &run_id, "--json"], 0);
    let runs = doc(&["runs", "list", "--json"], 0);
    let escalations = doc(&["escalations", "list", "--all", "--json"], 0);
    let audit = doc(&["audit", "show", "--json", "--limit", "30"], 0);
    let verify = doc(&["audit", "verify", "--json"], 0);
    let kpi = doc(&["kpi", "--json"], 0);
    let decisions = serde_json::json!({"decisions": show["decisions"]});
    let journal = serde_json::json!({"journal": show["journal"]});

    // Each document is its response type, field for field.
    round_trips::<charter_api::InspectReport>("inspect", &inspect);
    round_trips::<charter_api::GrantsReport>("grants", &grants);
    round_trips::<charter_api::CheckReport>("check", &check);
    round_trips::<charter_api::CallReport>("call", &call_ok);
    round_trips::<charter_api::CallFailure>("call (failed)", &call_failed);
    round_trips::<charter_api::RunReport>("run", &run);
    round_trips::<charter_api::ProposalsList>("proposals list", &proposals);
    round_trips::<charter_api::Failure>("proposals approve (refused)", &refused);
    round_trips::<charter_api::DecideReport>("proposals approve", &approved);
    round_trips::<charter_api::RunReport>("runs show", &show);
    round_trips::<charter_api::RunsList>("runs list", &runs);
    round_trips::<charter_api::EscalationsList>("escalations list", &escalations);
    round_trips::<charter_api::AuditEvents>("audit show", &audit);
    round_trips::<charter_api::VerifyReport>("audit verify", &verify);
    round_trips::<charter_api::Kpi>("kpi", &kpi);

    // README's shapes, inline and in code blocks, against the documents.
    let inline = |after: &str| parse_shape(readme_span(&readme, after, "`"));
    let block = |after: &str, optional: &[&str]| {
        block_shape(
            readme_span(&readme, &format!("{after}\n\n```json\n"), "```"),
            optional,
        )
    };
    let cases: Vec<(&str, Shape, &Value)> = vec![
        (
            "inspect",
            block("### `charter inspect --json`", &["run_type"]),
            &inspect,
        ),
        ("grants", block("### `charter grants --json`", &[]), &grants),
        ("check", inline("`charter check --json` prints `"), &check),
        ("call", inline("`charter call --json` prints `"), &call_ok),
        ("call (failed)", inline("duration_us}` or `"), &call_failed),
        (
            "audit show",
            inline("`charter audit show --json` prints `"),
            &audit,
        ),
        (
            "audit verify",
            inline("`charter audit verify --json` prints `"),
            &verify,
        ),
        (
            "proposals list",
            inline("`charter proposals list\n--json` prints `"),
            &proposals,
        ),
        ("approve", inline("`reject --json` print `"), &approved),
        (
            "approve (refused)",
            inline("result, run}}`\nor `"),
            &refused,
        ),
        ("kpi", inline("`charter kpi --json` prints `"), &kpi),
        (
            "run",
            block(
                "who decided on the run (refused attempts included).",
                &["output"],
            ),
            &run,
        ),
        (
            "runs show decisions",
            Shape::Object(vec![(
                "decisions".into(),
                false,
                Some(
                    parse_shape(&format!(
                        "{{d: {}}}",
                        readme_span(&readme, "`decisions`: `", "`")
                    ))
                    .into_field("d"),
                ),
            )]),
            &decisions,
        ),
        (
            "runs show journal",
            Shape::Object(vec![(
                "journal".into(),
                false,
                Some(
                    parse_shape(&format!(
                        "{{j: {}}}",
                        readme_span(&readme, "`journal`: `", "`")
                    ))
                    .into_field("j"),
                ),
            )]),
            &journal,
        ),
    ];
    let mut problems = Vec::new();
    for (what, shape, got) in &cases {
        compare_shape(what, shape, got, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "README and the documents differ:\n{}",
        problems.join("\n")
    );
    // The comparison saw real documents: a decision by bob, events, runs.
    assert!(
        show["decisions"].as_array().is_some_and(|d| d.len() == 2),
        "{show}"
    );
}

impl Shape {
    /// The shape of field `name` of an object shape.
    fn into_field(self, name: &str) -> Shape {
        match self {
            Shape::Object(keys) => keys
                .into_iter()
                .find(|(k, _, _)| k == name)
                .and_then(|(_, _, s)| s)
                .expect("field with a shape"),
            Shape::Array(_) => panic!("not an object"),
        }
    }
}

/// `--log-format json` (or `CHARTER_LOG_FORMAT=json`) writes every log
/// line as a JSON object, a plugin load inside a `load_plugin` span naming
/// the plugin and its digest; without it, stderr stays plain and quiet.
#[test]
fn log_format_json_writes_json_lines_with_load_spans() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let input =
        serde_json::json!({"order_id": "A-1", "amount_cents": 4999, "reason": "x"}).to_string();
    let run = |env: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new(charter_bin());
        cmd.args(args)
            .current_dir(cwd)
            .env_remove("CHARTER_LOG")
            .env_remove("RUST_LOG")
            .env_remove("CHARTER_LOG_FORMAT");
        if let Some(v) = env {
            cmd.env("CHARTER_LOG", v);
        }
        cmd.output().unwrap()
    };
    // Default: plain lines, no JSON, no tracing.
    let out = run(None, &["call", "refund-bot", "--input", &input]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('{'), "{err}");
    // JSON lines, with the host's tracing asked for.
    for args in [
        vec![
            "--log-format",
            "json",
            "call",
            "refund-bot",
            "--input",
            &input,
        ],
        vec![
            "call",
            "refund-bot",
            "--log-format",
            "json",
            "--input",
            &input,
        ],
    ] {
        let out = run(Some("info"), &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<Value> = err
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert!(
            lines.iter().any(|l| l["spans"].as_array().is_some_and(|s| s
                .iter()
                .any(|s| s["name"] == "load_plugin" && s["plugin"] == "refund-bot"))),
            "{err}"
        );
    }
    // The environment variable says the same; the flag's values are checked.
    let mut cmd = std::process::Command::new(charter_bin());
    let out = cmd
        .args(["call", "refund-bot", "--input", &input])
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .env_remove("RUST_LOG")
        .env("CHARTER_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
    }
    let out = run(None, &["--log-format", "xml", "kpi"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}

/// `charter … --json | head`: the reader leaves before the document is
/// written. The command exits quietly (141, as a process the pipe's
/// SIGPIPE ended; no panic, nothing on stderr), not with Rust's "failed
/// printing to stdout: Broken pipe" panic (exit 101).
#[test]
fn json_into_a_closed_pipe_exits_quietly() {
    let mut child = std::process::Command::new(charter_bin())
        .args([
            "inspect",
            fixture("refund-triage").to_str().unwrap(),
            "--json",
            "--config",
            example().to_str().unwrap(),
        ])
        .current_dir("/")
        .env_remove("CHARTER_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command writes: its write fails EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");
}
