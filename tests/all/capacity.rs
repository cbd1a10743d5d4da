//! The host's instance pool at twice its capacity (`[deployment]
//! max_steps_in_flight`, made small here): every step past it gets a clear
//! host-capacity error that names the setting and how to raise it, the
//! host and the steps in flight are unaffected, the slots come back, and a
//! workflow run past it waits for a slot instead of failing: no crash, no
//! lost run.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use charter_runtime::workflow::status;
use charter_runtime::{CallError, Host, HostOptions, LimitKind, Llm};
use serde_json::json;

use crate::support::*;

const SLOTS: usize = 4;

/// An LLM that holds every call until the gate opens: steps stay in
/// flight (each holding its instance) as long as the test wants.
pub(crate) struct Gate {
    pub entered: AtomicUsize,
    open: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            entered: AtomicUsize::new(0),
            open: tokio::sync::Semaphore::new(0),
        }
    }
}

type Fut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Gate {
    pub(crate) fn open(&self) {
        self.open.close();
    }
    fn hold<T: Send + 'static>(self: Arc<Self>, v: T) -> Fut<Result<T, String>> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            // Closed: the gate is open.
            let _ = self.open.acquire().await;
            Ok(v)
        })
    }
}

pub(crate) struct GateLlm(pub Arc<Gate>);

impl Llm for GateLlm {
    fn complete(&self, _prompt: String) -> Fut<Result<String, String>> {
        self.0.clone().hold("done".to_string())
    }
    fn classify(&self, _text: String, labels: Vec<String>) -> Fut<Result<(String, f32), String>> {
        self.0.clone().hold((labels[0].clone(), 1.0))
    }
}

fn gated_host(dir: &std::path::Path, slots: usize, gate: &Arc<Gate>) -> Arc<Host> {
    let toml = format!(
        r#"
[deployment]
name = "capacity"
phase = 4
data_dir = "{data}"
max_steps_in_flight = {slots}

[channels.console]
inbox = true

[groups.everything]
capabilities = ["charter:host/log.*", "charter:host/kv.*", "charter:host/secrets.*", "charter:host/llm.*", "charter:host/explain.*", "charter:host/notify.*"]
channels = ["console"]
effect = "write"

[plugins.ask]
path = "{ask}"
groups = ["everything"]
limits = {{ deadline_ms = 60000 }}

[workflows.ask]
[[workflows.ask.steps]]
id = "ask"
plugin = "ask"
input = "complete:x"
"#,
        data = dir.join("data").display(),
        ask = fixture("fx-host-v2").display(),
    );
    let d = charter_config::Deployment::parse(
        &toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    Arc::new(
        Host::new(
            d,
            HostOptions {
                store: Some(Arc::new(charter_store::MemStore::default())),
                llm: Some(Arc::new(GateLlm(gate.clone()))),
                ..Default::default()
            },
        )
        .expect("host"),
    )
}

/// Wait (bounded) until `f` holds.
fn until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn twice_the_pool_gets_a_clear_capacity_error_and_the_host_keeps_serving() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let host = gated_host(dir.path(), SLOTS, &gate);
    rt.block_on(host.load("ask")).unwrap();
    let calls: Vec<_> = (0..2 * SLOTS)
        .map(|_| {
            let h = host.clone();
            rt.spawn(async move { h.call("ask", r#""complete:x""#).await })
        })
        .collect();
    // SLOTS steps are in flight, held in their LLM call; the rest are
    // refused at once.
    until("the pool fills and the rest are refused", || {
        gate.entered.load(Ordering::SeqCst) == SLOTS
            && calls.iter().filter(|c| c.is_finished()).count() == SLOTS
    });
    let (done, in_flight): (Vec<_>, Vec<_>) = calls.into_iter().partition(|c| c.is_finished());
    for c in done {
        let err = rt.block_on(c).unwrap().unwrap_err();
        let CallError::Limit { kind, detail, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*kind, LimitKind::HostCapacity, "{err}");
        assert!(
            detail.contains(&format!("max_steps_in_flight = {SLOTS}"))
                && detail.contains("raise max_steps_in_flight in charter.toml"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 3, "a limit: {err}");
    }
    // The steps in flight are unaffected.
    gate.open();
    for c in in_flight {
        let out = rt.block_on(c).unwrap().expect("a step in flight completes");
        assert_eq!(out.output, json!("done"));
    }
    // The slots came back: a full pool's worth runs again.
    let again: Vec<_> = (0..SLOTS)
        .map(|_| {
            let h = host.clone();
            rt.spawn(async move { h.call("ask", r#""complete:x""#).await })
        })
        .collect();
    for c in again {
        rt.block_on(c).unwrap().expect("the pool is free again");
    }
}

#[test]
fn twice_the_pool_of_workflow_runs_wait_for_slots_and_all_complete() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let host = gated_host(dir.path(), SLOTS, &gate);
    let runs: Vec<_> = (0..2 * SLOTS)
        .map(|_| {
            let h = host.clone();
            rt.spawn(async move { h.run_workflow("ask", json!(null), None).await })
        })
        .collect();
    until("the pool fills", || {
        gate.entered.load(Ordering::SeqCst) == SLOTS
    });
    // The runs past the pool wait: none fails, none takes an instance.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gate.entered.load(Ordering::SeqCst), SLOTS);
    assert!(runs.iter().all(|r| !r.is_finished()));
    gate.open();
    for r in runs {
        let st = rt.block_on(r).unwrap().expect("run");
        assert_eq!(st.status, status::COMPLETED, "{st:?}");
        assert_eq!(st.output, Some(json!("done")), "{st:?}");
    }
    assert_eq!(gate.entered.load(Ordering::SeqCst), 2 * SLOTS);
    assert_eq!(
        host.runs()
            .iter()
            .filter(|r| r.status == status::COMPLETED)
            .count(),
        2 * SLOTS
    );
}

#[test]
fn max_steps_in_flight_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "16385"] {
        let toml = format!("[deployment]\nname = \"c\"\nphase = 1\nmax_steps_in_flight = {bad}\n");
        let err = charter_config::Deployment::parse(
            &toml,
            &dir.path().join("charter.toml"),
            charter_runtime::host_catalog(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("deployment.max_steps_in_flight") && err.contains("must be 1 to 16384"),
            "{err}"
        );
    }
}
