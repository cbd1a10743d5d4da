//! Memory per step in flight (issue 12, item 6): host RSS with 128 and
//! 1,024 steps in flight at once, each held inside a host call (an LLM
//! call that waits on a gate) so that every one of them holds its
//! instance (linear memory, fiber stack, store) while RSS is read from
//! `/proc/self/status` (VmRSS, and VmHWM: the peak).
//!
//! The figure is `(VmRSS with N in flight - VmRSS before) / N`: what one
//! more step in flight costs the host. The pool is sized for the largest
//! N (`max_steps_in_flight`).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use charter_config::Deployment;
use charter_runtime::{Host, HostOptions, Llm};

const IN_FLIGHT: [usize; 2] = [128, 1024];

struct Gate {
    entered: AtomicUsize,
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

struct GateLlm(Arc<Gate>);

impl Llm for GateLlm {
    fn complete(&self, _prompt: String) -> Fut<Result<String, String>> {
        let g = self.0.clone();
        Box::pin(async move {
            g.entered.fetch_add(1, Ordering::SeqCst);
            let _ = g.open.acquire().await;
            Ok("done".to_string())
        })
    }
    fn classify(&self, _text: String, labels: Vec<String>) -> Fut<Result<(String, f32), String>> {
        let g = self.0.clone();
        Box::pin(async move {
            g.entered.fetch_add(1, Ordering::SeqCst);
            let _ = g.open.acquire().await;
            Ok((labels[0].clone(), 1.0))
        })
    }
}

/// (VmRSS, VmHWM) in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The deployment: one plugin that waits in an LLM call, a pool of `max`.
fn deployment(dir: &Path, fixture: &Path, max: usize) -> Result<Deployment> {
    let toml = format!(
        r#"
[deployment]
name = "memory"
phase = 4
data_dir = "{data}"
max_steps_in_flight = {max}
[channels.console]
inbox = true
[groups.everything]
capabilities = ["charter:host/log.*", "charter:host/kv.*", "charter:host/secrets.*", "charter:host/llm.*", "charter:host/explain.*", "charter:host/notify.*"]
channels = ["console"]
effect = "write"
[plugins.held]
path = "{wasm}"
groups = ["everything"]
limits = {{ deadline_ms = 120000 }}
"#,
        data = dir.display(),
        wasm = fixture.display(),
    );
    Ok(Deployment::parse(
        &toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )?)
}

pub fn report(fixture: &Path) -> Result<()> {
    let max = IN_FLIGHT[IN_FLIGHT.len() - 1];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for n in IN_FLIGHT {
        // A fresh host each time: a pool keeps what it touched resident.
        let dir = tempfile::tempdir()?;
        let gate = Arc::new(Gate::default());
        let host = Arc::new(Host::new(
            deployment(dir.path(), fixture, max)?,
            HostOptions {
                store: Some(Arc::new(charter_store::MemStore::default())),
                llm: Some(Arc::new(GateLlm(gate.clone()))),
                no_cache: true,
                unsynced_log: true,
                ..Default::default()
            },
        )?);
        let loaded = rt.block_on(host.load("held"))?;
        // One step through, so lazily built state is not counted.
        rt.block_on(host.call_loaded(&loaded, r#""log:warm-up""#))?;
        let (before, _) = rss();
        let steps: Vec<_> = (0..n)
            .map(|_| {
                let (h, p) = (host.clone(), loaded.clone());
                rt.spawn(async move { h.call_loaded(&p, r#""complete:x""#).await })
            })
            .collect();
        let t = Instant::now();
        while gate.entered.load(Ordering::SeqCst) < n {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(120),
                "only {} of {n} steps got in flight",
                gate.entered.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let (during, peak) = rss();
        gate.open.close();
        for s in steps {
            rt.block_on(s)??;
        }
        println!(
            "{:<44} {:>8.0} KiB per step in flight ({n} in flight: host RSS {:.1} MiB, {:.1} MiB before, peak {:.1} MiB)",
            "memory per step in flight",
            during.saturating_sub(before) as f64 / n as f64,
            during as f64 / 1024.0,
            before as f64 / 1024.0,
            peak as f64 / 1024.0,
        );
    }
    Ok(())
}
