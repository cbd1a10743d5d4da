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
