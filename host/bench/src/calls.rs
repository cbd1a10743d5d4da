//! Instruction-count mode (`CHARTER_BENCH_CALLS=N`): a small, repeatable
//! driver for `valgrind --tool=callgrind`, where wall-clock figures are
//! noise. It runs, after one warm-up step each, governed steps whose guest
//! (`fx_call_flood`) calls `log.write` or `kv.get` (decided by the grant,
//! audited) until the host-call cap stops it: once with a cap of
//! [`SMALL`] calls and once with `SMALL + N`. Each step runs inside its own
//! `#[inline(never)]` function, so
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     env CHARTER_BENCH_CALLS=2000 ./target/debug/charter-bench
//! callgrind_annotate --inclusive=yes cg.out | grep cg_
//! ```
//!
//! gives instructions per call as `(cg_log_large - cg_log_small) / N`
//! (everything a step costs that is not per call cancels out), and one cold
//! echo step's instructions as `cg_cold_step`. The same figures from wall
//! time are printed too, for a run outside valgrind.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use charter_config::Deployment;
use charter_runtime::{CallError, Host, HostOptions, LimitKind, LoadedPlugin};

/// The cap of the small steps: what a step costs besides its calls.
const SMALL: u64 = 100;

pub fn report(echo: &Path, flood_wasm: &Path, n: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plugin = |name: &str, groups: &str, cap: u64| {
        format!(
            "[plugins.{name}]\npath = \"{}\"\ngroups = [{groups}]\nlimits = {{ max_host_calls = {cap} }}\n",
            flood_wasm.display()
        )
    };
    let toml = format!(
        "[deployment]\nname = \"calls\"\nphase = 4\ndata_dir = \"{}\"\n\
         [groups.kv]\ncapabilities = [\"charter:host/kv.get\", \"charter:host/kv.set\"]\neffect = \"write\"\n\
         [groups.logging]\ncapabilities = [\"charter:host/log.write\"]\n\
         [groups.kv-read]\ncapabilities = [\"charter:host/kv.get\"]\n\
         [plugins.echo]\npath = \"{}\"\ngroups = [\"kv\", \"logging\"]\n{}{}",
        dir.path().display(),
        echo.display(),
        plugin("small", "\"logging\", \"kv-read\"", SMALL),
        plugin("large", "\"logging\", \"kv-read\"", SMALL + n),
    );
    let deployment = Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )?;
    let host = Host::new(
        deployment,
        HostOptions {
            store: Some(Arc::new(charter_store::MemStore::default())),
            no_cache: true,
            unsynced_log: true,
            // valgrind cannot map the pool's reservation; per-call figures
            // do not depend on how instances are allocated.
            on_demand_instances: true,
            ..Default::default()
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let echo_p = rt.block_on(host.load("echo"))?;
    let small = rt.block_on(host.load("small"))?;
    let large = rt.block_on(host.load("large"))?;
    // Warm-up: lazily built state (catalog, policy, pools) is not counted.
    rt.block_on(host.call_loaded(&echo_p, crate::INPUT))?;
    for p in [&small, &large] {
        flood(&rt, &host, p, LOG)?;
        flood(&rt, &host, p, KV)?;
    }
    let t = Instant::now();
    cg_cold_step(&rt, &host, &echo_p)?;
    let cold = t.elapsed();
    let mut figures = Vec::new();
    for (what, small_f, large_f) in [
        ("log.write", cg_log_small as StepFn, cg_log_large as StepFn),
        ("kv.get (grant)", cg_kv_small, cg_kv_large),
    ] {
        let t = Instant::now();
        small_f(&rt, &host, &small)?;
        let s = t.elapsed();
        let t = Instant::now();
        large_f(&rt, &host, &large)?;
        let l = t.elapsed();
        figures.push((what, (l.saturating_sub(s)).as_secs_f64() * 1e6 / n as f64));
    }
    println!(
        "calls mode: {n} extra calls per step; one cold echo step {:.2} us",
        cold.as_secs_f64() * 1e6
    );
    for (what, us) in figures {
        println!(
            "{:<44} {us:>8.3} us per call (one step each, noisy: use callgrind)",
            format!("governed {what}")
        );
    }
    Ok(())
}

type StepFn = fn(&tokio::runtime::Runtime, &Host, &LoadedPlugin) -> Result<()>;

const LOG: &str = "{}";
const KV: &str = r#"{"fn": "kv"}"#;

fn flood(rt: &tokio::runtime::Runtime, host: &Host, p: &LoadedPlugin, input: &str) -> Result<()> {
    match rt.block_on(host.call_loaded(p, input)) {
        Err(CallError::Limit {
            kind: LimitKind::HostCalls,
            ..
        }) => Ok(()),
        other => anyhow::bail!("flood should stop at the cap: {other:?}"),
    }
}

#[inline(never)]
fn cg_cold_step(rt: &tokio::runtime::Runtime, host: &Host, p: &LoadedPlugin) -> Result<()> {
    // Distinct bodies: identical functions would be merged into one symbol.
    std::hint::black_box("cg_cold_step");
    rt.block_on(host.call_loaded(p, crate::INPUT))?;
    Ok(())
}

#[inline(never)]
fn cg_log_small(rt: &tokio::runtime::Runtime, host: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_log_small");
    flood(rt, host, p, LOG)
}

#[inline(never)]
fn cg_log_large(rt: &tokio::runtime::Runtime, host: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_log_large");
    flood(rt, host, p, LOG)
}

#[inline(never)]
fn cg_kv_small(rt: &tokio::runtime::Runtime, host: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_kv_small");
    flood(rt, host, p, KV)
}

#[inline(never)]
fn cg_kv_large(rt: &tokio::runtime::Runtime, host: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_kv_large");
    flood(rt, host, p, KV)
}
