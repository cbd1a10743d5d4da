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

    let out = charter(&["run", "stuck", "--json", "--config", c], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!(v["status"], "escalated");
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
