//! Hot loading (issue 13 item 5): a new version of a step pushed into a
//! running `charter up` while hundreds of runs are in flight. No run
//! fails; every run started before the push finishes on the version it
//! recorded at its start; runs started after use the new one; a version
//! whose imports exceed its grants is refused with the old one still
//! serving. Then the hostile cases: an unknown plugin, a body over the
//! limit, not a component, a pin, a caller without the role, a tampered
//! plugin store, concurrent pushes; and a push survives a restart.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{charter_bin, fixture, text};
use crate::up::{http, mint};

/// Runs in flight when v2 is pushed.
const IN_FLIGHT: usize = 200;

pub(crate) fn start(cwd: &Path) -> (Child, String) {
    start_with(cwd, &[])
}

fn start_with(cwd: &Path, args: &[&str]) -> (Child, String) {
    start_as(cwd, args, None)
}

/// [`start_with`], with `CHARTER_TOKEN` set to `token` (for `--watch`).
fn start_as(cwd: &Path, args: &[&str], token: Option<&str>) -> (Child, String) {
    let mut cmd = Command::new(charter_bin());
    cmd.args(["up", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN");
    if let Some(t) = token {
        cmd.env("CHARTER_TOKEN", t);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = crate::up::served_address(&mut child);
    let t = Instant::now();
    while http(&addr, "GET", "/readyz", None, None).status != 200 {
        assert!(t.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

pub(crate) fn stop(mut child: Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `charter ARGS` with CHARTER_TOKEN (the bare token of `bearer`).
pub(crate) fn as_(bearer: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(charter_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_SERVER")
        .env("CHARTER_TOKEN", bearer.strip_prefix("Bearer ").unwrap())
        .output()
        .unwrap()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

pub(crate) fn digest_of(name: &str) -> String {
    charter_runtime::digest(&std::fs::read(fixture(name)).unwrap())
}

pub(crate) struct Hot {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ops: String,
    pub(crate) viewer: String,
}

/// A deployment whose step `stepper` (fx-hot-v1) waits on kv key `go`,
/// retrying every 300 ms: its runs stay in flight until the test says.
pub(crate) fn deployment() -> Hot {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (ops, ops_h) = mint("ops", cwd);
    let (viewer, viewer_h) = mint("viewer", cwd);
    let toml = format!(
        r#"
[deployment]
name = "hot"
phase = 1
data_dir = "data"

[groups.kv-read]
capabilities = ["charter:host/kv.get"]

[plugins.stepper]
path = "{v1}"
groups = ["kv-read"]
limits = {{ max_component_mib = 1 }}

[identities.ops]
kind = "service"
roles = ["operator"]
tokens = ["{ops_h}"]

[identities.viewer]
kind = "service"
tokens = ["{viewer_h}"]

[workflows.hot]
[[workflows.hot.steps]]
id = "work"
plugin = "stepper"
input = {{ wait_for = "go" }}
retry = {{ max_attempts = 100000, initial_backoff_ms = 300, max_backoff_ms = 300, jitter = 0.0 }}
"#,
        v1 = fixture("fx-hot-v1").display(),
    );
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();
    Hot { dir, ops, viewer }
}

fn start_run(addr: &str, token: &str) -> String {
    let r = http(
        addr,
        "POST",
        "/v1/runs",
        Some(token),
        Some(&json!({"workflow": "hot"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()["run"].as_str().unwrap().to_string()
}

fn runs(addr: &str, token: &str) -> Vec<Value> {
    let r = http(addr, "GET", "/v1/runs", Some(token), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["runs"].as_array().unwrap().clone()
}

pub(crate) fn events(addr: &str, token: &str, kind: &str) -> Vec<Value> {
    let r = http(
        addr,
        "GET",
        &format!("/v1/audit?type={kind}"),
        Some(token),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"].as_array().unwrap().clone()
}

#[test]
fn a_step_pushed_under_load_fails_no_run_and_runs_keep_their_version() {
    let h = deployment();
    let cwd = h.dir.path();
    let (v1, v2) = (digest_of("fx-hot-v1"), digest_of("fx-hot-v2"));
    let (child, addr) = start(cwd);

    // Runs in flight: each has made an attempt and waits to retry.
    let before: Vec<String> = (0..IN_FLIGHT).map(|_| start_run(&addr, &h.ops)).collect();
    let t = Instant::now();
    loop {
        let all = runs(&addr, &h.ops);
        let waiting = all
            .iter()
            .filter(|r| r["status"] == "retry-wait" || r["attempt"].as_u64() > Some(0))
            .count();
        if waiting >= IN_FLIGHT {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{waiting} in flight"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Push v2 through the CLI (found through the data directory).
    let fx2 = fixture("fx-hot-v2");
    let out = as_(
        &h.ops,
        &[
            "plugins",
            "push",
            fx2.to_str().unwrap(),
            "--plugin",
            "stepper",
            "--json",
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pushed_at = Instant::now();
    let a = json_of(&out);
    assert_eq!(a["digest"], v2.as_str());
    assert_eq!(a["previous"], v1.as_str());
    println!(
        "hot swap of a Rust step with {IN_FLIGHT} runs in flight: {} ms (digest, compile, check, link)",
        a["swap_ms"]
    );

    // A version importing kv.set (ungranted) is refused; v2 goes on.
    let bad = fixture("fx-ungranted");
    let out = as_(
        &h.ops,
        &[
            "plugins",
            "push",
            bad.to_str().unwrap(),
            "--plugin",
            "stepper",
            "--json",
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ungranted-import"), "{}", text(&out));
    let refused = events(&addr, &h.ops, "plugin-refused");
    assert!(
        refused.iter().any(|e| e["rule"] == "ungranted-import"
            && e["digest"] == digest_of("fx-ungranted").as_str()),
        "{refused:?}"
    );

    // Runs started a second after the push.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(pushed_at.elapsed()));
    let after: Vec<String> = (0..20).map(|_| start_run(&addr, &h.ops)).collect();

    // Let every run through; all complete.
    let r = http(
        &addr,
        "PUT",
        "/v1/kv/stepper/go",
        Some(&h.ops),
        Some(&json!({"value": "1"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t = Instant::now();
    let all = loop {
        let all = runs(&addr, &h.ops);
        let failed: Vec<_> = all
            .iter()
            .filter(|r| {
                !matches!(
                    r["status"].as_str(),
                    Some("running" | "retry-wait" | "completed")
                )
            })
            .collect();
        assert!(failed.is_empty(), "runs failed: {failed:?}");
        if all.iter().all(|r| r["status"] == "completed") {
            break all;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "runs not done");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(all.len(), IN_FLIGHT + after.len());

    // From the log: each run's recorded version and the version that ran.
    let started: std::collections::HashMap<String, Value> = events(&addr, &h.ops, "run-started")
        .into_iter()
        .map(|e| (e["run"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    let by_id: std::collections::HashMap<&str, &Value> =
        all.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    for (ids, digest, version) in [(&before, &v1, "fx-hot-v1"), (&after, &v2, "fx-hot-v2")] {
        for id in ids {
            assert_eq!(started[id]["plugins"]["stepper"], digest.as_str(), "{id}");
            assert_eq!(by_id[id.as_str()]["output"]["version"], version, "{id}");
        }
    }
    // Attempts of the old runs made after the push ran v1's bytes.
    let steps = events(&addr, &h.ops, "step");
    let ok_v1 = steps
        .iter()
        .filter(|e| e["outcome"] == "ok" && e["digest"] == v1.as_str())
        .count();
    assert_eq!(ok_v1, IN_FLIGHT, "every old run completed on v1");
    stop(child);
    let out = crate::support::charter(&["audit", "verify"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn hostile_pushes_are_refused_and_the_serving_version_goes_on() {
    let h = deployment();
    let cwd = h.dir.path();
    let (v1, v2) = (digest_of("fx-hot-v1"), digest_of("fx-hot-v2"));
    let (child, addr) = start(cwd);
    let push = |who: &str, file: &Path, plugin: &str| {
        as_(
            who,
            &[
                "plugins",
                "push",
                file.to_str().unwrap(),
                "--plugin",
                plugin,
                "--json",
            ],
            cwd,
        )
    };
    let serving = || {
        let out = as_(&h.ops, &["plugins", "list", "--json"], cwd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        json_of(&out)["plugins"][0]["serving"].clone()
    };
    // Load v1 (a run) so it serves, and is kept in the plugin store.
    let id = start_run(&addr, &h.ops);
    crate::up::wait_for(&addr, &h.ops, &id, |v| v["attempt"].as_u64() > Some(0));
    assert_eq!(serving(), v1.as_str());

    // An unknown plugin: 404, nothing recorded for it.
    let out = push(&h.ops, &fixture("fx-hot-v2"), "nope");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not in the deployment"),
        "{}",
        text(&out)
    );

    // A caller without the operator role: 403 and an auth-refused event.
    let out = push(&h.viewer, &fixture("fx-hot-v2"), "stepper");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("operator"), "{}", text(&out));
    let refusals = events(&addr, &h.ops, "auth-refused");
    assert!(
        refusals
            .iter()
            .any(|e| e["reason"] == "missing-role" && e["identity"] == "viewer"),
        "{refusals:?}"
    );

    // A body over the plugin's limit (1 MiB): 413, refused, v1 serves.
    let huge = cwd.join("huge.wasm");
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.resize(3 << 20, 0);
    std::fs::write(&huge, &bytes).unwrap();
    let out = push(&h.ops, &huge, "stepper");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // Not a component (a core module's text, random bytes).
    let junk = cwd.join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let out = push(&h.ops, &junk, "stepper");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("not-a-component"), "{}", text(&out));
    let rules: Vec<String> = events(&addr, &h.ops, "plugin-refused")
        .iter()
        .map(|e| e["rule"].as_str().unwrap().to_string())
        .collect();
    assert!(
        rules.contains(&"too-large".into()) && rules.contains(&"not-a-component".into()),
        "{rules:?}"
    );
    assert_eq!(serving(), v1.as_str());

    // A pin: only v1 is accepted; v2 is refused until unpinned.
    let out = as_(&h.ops, &["plugins", "pin", "stepper", &v1, "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = push(&h.ops, &fixture("fx-hot-v2"), "stepper");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("digest-pin"), "{}", text(&out));
    assert_eq!(serving(), v1.as_str());
    let out = as_(&h.ops, &["plugins", "pin", "stepper", "not-a-digest"], cwd);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let out = as_(&h.ops, &["plugins", "pin", "stepper", "--clear"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Concurrent pushes: each is checked and swapped whole, one at a time;
    // the activations chain (each one's `previous` is the one before).
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (ops, cwd) = (h.ops.clone(), cwd.to_path_buf());
            std::thread::spawn(move || {
                let fx = fixture(if i % 2 == 0 { "fx-hot-v2" } else { "fx-hot-v1" });
                as_(
                    &ops,
                    &[
                        "plugins",
                        "push",
                        fx.to_str().unwrap(),
                        "--plugin",
                        "stepper",
                        "--json",
                    ],
                    &cwd,
                )
            })
        })
        .collect();
    for t in threads {
        let out = t.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let activations = events(&addr, &h.ops, "plugin-activated");
    assert_eq!(activations.len(), 6);
    for w in activations.windows(2) {
        assert_eq!(w[1]["previous"], w[0]["digest"]);
    }
    let last = activations.last().unwrap()["digest"].clone();
    assert_eq!(serving(), last);

    // The reviewer's diff of v1 and v2 (same imports) and the history.
    let out = as_(
        &h.ops,
        &["plugins", "diff", "stepper", &v1, &v2, "--json"],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = json_of(&out);
    assert_eq!(d["imports_added"], json!([]));
    assert_eq!(d["imports_removed"], json!([]));
    let out = as_(&h.ops, &["plugins", "history", "stepper", "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let kinds: Vec<String> = json_of(&out)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "plugin-loaded",
        "plugin-pushed",
        "plugin-activated",
        "plugin-refused",
        "plugin-pinned",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }

    // A tampered store file: a rollback to it is refused, never run.
    let other = if last == v1.as_str() { &v2 } else { &v1 };
    let stored = cwd
        .join("data/plugins")
        .join(format!("sha256-{}.wasm", &other[7..]));
    let mut b = std::fs::read(&stored).unwrap();
    let n = b.len() - 10;
    b[n] ^= 0xff;
    std::fs::write(&stored, &b).unwrap();
    let out = as_(
        &h.ops,
        &["plugins", "rollback", "stepper", other, "--json"],
        cwd,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("tampered"), "{}", text(&out));
    assert_eq!(serving(), last);
    // Repaired by pushing it again; rollback then works.
    let fx = fixture(if other == &v1 {
        "fx-hot-v1"
    } else {
        "fx-hot-v2"
    });
    assert_eq!(push(&h.ops, &fx, "stepper").status.code(), Some(0));
    let out = as_(&h.ops, &["plugins", "rollback", "stepper", "--json"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out)["digest"], last);

    // After a restart, the last activated version serves (not the file
    // charter.toml names, v1), and a new run uses it.
    stop(child);
    let (child, addr) = start(cwd);
    let id = start_run(&addr, &h.ops);
    let r = http(
        &addr,
        "PUT",
        "/v1/kv/stepper/go",
        Some(&h.ops),
        Some(&json!({"value": "1"})),
    );
    assert_eq!(r.status, 200);
    let v = crate::up::wait_for(&addr, &h.ops, &id, |v| v["status"] == "completed");
    assert_eq!(v["plugins"]["stepper"], last);
    let version = if last == v1.as_str() {
        "fx-hot-v1"
    } else {
        "fx-hot-v2"
    };
    assert_eq!(v["output"]["version"], version);
    stop(child);

    // An edited index cannot choose the code that serves: it names the
    // other stored version, the log records no such activation, so the
    // plugin is refused (never run) until the index is rebuilt.
    let state = charter_store::SledStore::open(&cwd.join("data/state")).unwrap();
    charter_store::Store::set(
        &state,
        charter_runtime::index::META,
        "active:stepper",
        other,
    )
    .unwrap();
    drop(state);
    let (child, addr) = start(cwd);
    let id = start_run(&addr, &h.ops);
    let v = crate::up::wait_for(&addr, &h.ops, &id, |v| v["status"] == "failed");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("records no such activation")),
        "{v}"
    );
    stop(child);
}

/// The swap time of the Python example (an 18 MB component) pushed as a
/// new version of a Rust step: printed, not asserted.
#[test]
fn python_example_swap_time() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (ops, ops_h) = mint("ops", cwd);
    let python = crate::support::root().join("target/plugins/python/refund-triage.wasm");
    if !python.exists() {
        eprintln!(
            "{} not built (plugins/build-langs.sh); skipped",
            python.display()
        );
        return;
    }
    let toml = format!(
        r#"
[deployment]
name = "hot-py"
phase = 3
data_dir = "data"
[llm]
provider = "offline"
[groups.all]
capabilities = ["charter:host/kv.get", "charter:host/kv.list-keys", "charter:host/llm.classify", "charter:host/log.write"]
[plugins.refund-triage]
path = "{rust}"
groups = ["all"]
[identities.ops]
kind = "service"
roles = ["operator"]
tokens = ["{ops_h}"]
"#,
        rust = fixture("refund-triage").display(),
    );
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();
    let (child, _addr) = start(cwd);
    let out = as_(
        &ops,
        &[
            "plugins",
            "push",
            python.to_str().unwrap(),
            "--plugin",
            "refund-triage",
            "--json",
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a = json_of(&out);
    println!(
        "hot swap of the Python example (18 MB component, first compile): {} ms",
        a["swap_ms"]
    );
    stop(child);
}

/// `charter up --watch`: a changed plugin file goes through the push
/// pipeline (a good version swapped in, an ungranted one refused with the
/// serving one going on), and a bad charter.toml is refused.
#[test]
fn watched_files_go_through_the_same_checks() {
    let h = deployment();
    let cwd = h.dir.path();
    let file = cwd.join("stepper.wasm");
    std::fs::copy(fixture("fx-hot-v1"), &file).unwrap();
    let toml = std::fs::read_to_string(cwd.join("charter.toml")).unwrap();
    let toml = toml.replace(&fixture("fx-hot-v1").display().to_string(), "stepper.wasm");
    std::fs::write(cwd.join("charter.toml"), &toml).unwrap();
    // A watch pushes code, so it needs an operator's token.
    for (token, why) in [(None, "CHARTER_TOKEN"), (Some(&h.viewer), "operator")] {
        let out = Command::new(charter_bin())
            .args(["up", "--listen", "127.0.0.1:0", "--watch"])
            .current_dir(cwd)
            .env_remove("CHARTER_TOKEN")
            .envs(token.map(|t| ("CHARTER_TOKEN", t.trim_start_matches("Bearer "))))
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains(why), "{}", text(&out));
    }
    let ops_token = h.ops.trim_start_matches("Bearer ").to_string();
    let (child, addr) = start_as(cwd, &["--watch"], Some(&ops_token));
    let serving = || {
        let r = http(&addr, "GET", "/v1/plugins/versions", Some(&h.ops), None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["plugins"][0]["activated"].clone()
    };
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !ok() {
            assert!(t.elapsed() < Duration::from_secs(60), "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Replaced by rename, as a build tool does.
    let replace = |from: &Path| {
        let tmp = cwd.join("stepper.wasm.tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    replace(&fixture("fx-hot-v2"));
    let v2 = digest_of("fx-hot-v2");
    until("v2 activated", &|| serving() == v2.as_str());
    replace(&fixture("fx-ungranted"));
    let bad = digest_of("fx-ungranted");
    until("ungranted refused", &|| {
        events(&addr, &h.ops, "plugin-refused")
            .iter()
            .any(|e| e["digest"] == bad.as_str() && e["rule"] == "ungranted-import")
    });
    assert_eq!(serving(), v2.as_str());
    let pushed = events(&addr, &h.ops, "plugin-pushed");
    assert!(
        pushed
            .iter()
            .all(|e| e["by"] == "ops" && e["auth"] == "token" && e["source"] == "watch"),
        "{pushed:?}"
    );
    // A bad charter.toml: refused, recorded; the host goes on.
    std::fs::write(
        cwd.join("charter.toml"),
        format!("{toml}\n[plugins.x]\npath = 7\n"),
    )
    .unwrap();
    until("bad config refused", &|| {
        events(&addr, &h.ops, "config-refused")
            .iter()
            .any(|e| e["by"] == "ops" && e["source"] == "watch")
    });
    // A good one applies live, as the watch's operator: the workflow it
    // adds starts a run at once.
    std::fs::write(
        cwd.join("charter.toml"),
        toml.clone()
            + "\n[workflows.hot2]\n[[workflows.hot2.steps]]\nid = \"work\"\nplugin = \"stepper\"\n",
    )
    .unwrap();
    until("good config applied", &|| {
        events(&addr, &h.ops, "config-applied")
            .iter()
            .any(|e| e["by"] == "ops" && e["source"] == "watch")
    });
    // (Recorded just before the swap, as an activation is.)
    until("hot2 starts", &|| {
        let r = http(
            &addr,
            "POST",
            "/v1/runs",
            Some(&h.ops),
            Some(&json!({"workflow": "hot2", "input": {}})),
        );
        assert!(matches!(r.status, 202 | 404), "{}", r.body);
        r.status == 202
    });
    assert_eq!(
        http(&addr, "GET", "/v1/plugins/versions", Some(&h.ops), None).status,
        200
    );
    stop(child);
}

/// Without a host up, push, pin and rollback act on the data directory
/// under the running host's rule: the identity CHARTER_TOKEN proves holds
/// `operator`. A refusal changes nothing and is recorded.
#[test]
fn without_a_host_only_an_operator_changes_plugin_versions() {
    let h = deployment();
    let cwd = h.dir.path();
    let v2 = fixture("fx-hot-v2");
    let v1 = digest_of("fx-hot-v1");
    let attempts: [Vec<&str>; 3] = [
        vec![
            "plugins",
            "push",
            v2.to_str().unwrap(),
            "--plugin",
            "stepper",
        ],
        vec!["plugins", "pin", "stepper", &v1],
        vec!["plugins", "rollback", "stepper"],
    ];
    for args in &attempts {
        let out = as_(&h.viewer, args, cwd);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("needs the role `operator`"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = as_(
        &h.ops,
        &["audit", "show", "--type", "auth-refused", "--json"],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let refused: Vec<Value> = json_of(&out)["events"].as_array().unwrap().clone();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for e in &refused {
        assert_eq!(e["identity"], "viewer");
        assert_eq!(e["reason"], "missing-role");
    }
    let out = as_(
        &h.ops,
        &["audit", "show", "--type", "plugin-pushed", "--json"],
        cwd,
    );
    assert_eq!(json_of(&out)["events"], json!([]), "nothing was pushed");

    // The operator's push goes through, and serves at the next start.
    let out = as_(&h.ops, &attempts[0], cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
