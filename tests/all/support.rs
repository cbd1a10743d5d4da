//! Shared helpers: fixture paths, deployments from TOML text, the CLI.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use charter_config::Deployment;
use charter_runtime::{Host, HostOptions};
use charter_store::{MemStore, Store};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A guest fixture built by plugins/build.sh.
pub fn fixture(name: &str) -> PathBuf {
    let p = root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        p.exists(),
        "{} is missing: run plugins/build.sh first",
        p.display()
    );
    p
}

/// A language's build of fixture `name` ("rust", "python", "js", "c"):
/// plugins/build.sh makes them all.
pub fn language_build(lang: &str, name: &str) -> PathBuf {
    if lang == "rust" {
        return fixture(name);
    }
    let p = root()
        .join("target/plugins")
        .join(lang)
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run plugins/build.sh first (it builds plugins/{lang}/{name})",
        p.display()
    );
    p
}

/// Groups used by most tests.
pub const GROUPS: &str = r#"
[groups.logging]
capabilities = ["charter:host/log.write"]
[groups.kv-read]
capabilities = ["charter:host/kv.get", "charter:host/kv.list-keys"]
[groups.kv-write]
capabilities = ["charter:host/kv.set", "charter:host/kv.delete"]
effect = "write"
[groups.llm]
capabilities = ["charter:host/llm.*"]
"#;

/// A deployment with one plugin per (name, fixture, groups, extra TOML).
pub fn deployment(dir: &Path, phase: u8, plugins: &[(&str, &str, &[&str], &str)]) -> Deployment {
    let mut toml = format!(
        "[deployment]\nname = \"test\"\nphase = {phase}\ndata_dir = \"{}\"\n{GROUPS}\n",
        dir.join("data").display()
    );
    for (name, fx, groups, extra) in plugins {
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        toml.push_str(&format!(
            "[plugins.{name}]\npath = \"{}\"\ngroups = [{}]\n{extra}\n",
            fixture(fx).display(),
            groups.join(", ")
        ));
    }
    Deployment::parse(
        &toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// A host over an in-memory store, with the store handed back for checks.
pub fn host(d: Deployment) -> (Host, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let host = Host::new(
        d,
        HostOptions {
            store: Some(store.clone()),
            ..Default::default()
        },
    )
    .expect("host");
    (host, store)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `charter` binary of this build.
pub fn charter_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("charter");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p charter-cli` first",
        bin.display()
    );
    bin
}

pub fn charter(args: &[&str], cwd: &Path) -> Output {
    std::process::Command::new(charter_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("CHARTER_LOG")
        .output()
        .expect("run charter")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A raw MCP session with `charter mcp` over stdio (newline-delimited
/// JSON-RPC), for tests that need the exact messages rather than a client
/// library's view: started as the agent of `token`, initialized.
pub struct McpStdio {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl McpStdio {
    /// `charter mcp ARGS` in `cwd` with `CHARTER_TOKEN=token`, initialized.
    pub fn start(args: &[&str], cwd: &Path, token: &str) -> McpStdio {
        let mut child = std::process::Command::new(charter_bin())
            .arg("mcp")
            .args(args)
            .current_dir(cwd)
            .env("CHARTER_TOKEN", token)
            .env_remove("CHARTER_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start charter mcp");
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut s = McpStdio {
            child,
            stdin,
            stdout,
        };
        let init = s.ask(
            serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}),
        );
        assert!(init.get("result").is_some(), "initialize: {init}");
        s.ask(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    /// Send `msg`; its answer (`Null` for a notification, which has none).
    pub fn ask(&mut self, msg: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead, Write};
        let stdin = self.stdin.as_mut().expect("session open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        if msg.get("id").is_none() {
            return serde_json::Value::Null;
        }
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Close the client's side; whether `charter mcp` then exited cleanly.
    pub fn finish(mut self) -> bool {
        self.stdin.take();
        self.child.wait().unwrap().success()
    }
}
