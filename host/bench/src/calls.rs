//! Instruction-count mode (`CHARTER_BENCH_CALLS=N`): a small, repeatable
//! driver for `valgrind --tool=callgrind`, where wall-clock figures are
//! noise. It runs, after one warm-up step each, governed steps whose guest
//! (`fx_call_flood`) calls `log.write` or `kv.get` (decided by the grant,
//! audited) until the host-call cap stops it: once with a cap of
//! [`SMALL`] calls and once with `SMALL + N`. Each step runs inside its own
//! `#[inline(never)]` function, so
//!
//! ```text
//! CHARTER_BENCH_CALLS=2000 valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     ./target/debug/charter-bench
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
    let host = crate::bench_host(
        &toml,
        dir.path(),
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

/// `instructions.sh` runs under valgrind: instances allocated on demand
/// (valgrind cannot map the pooling allocator's reservation), in the raw
/// engine as in Charter's, so both sides of a ratio allocate alike.
pub fn on_demand() -> bool {
    std::env::var_os("CHARTER_BENCH_VARIANT").is_some()
}

/// The compile cache `instructions.sh` shares between its runs
/// (`CHARTER_BENCH_CACHE`): compiling under valgrind would take most of
/// each run (its count cancels out, its time does not).
pub fn cache_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("CHARTER_BENCH_CACHE")
        .filter(|_| on_demand())
        .map(Into::into)
}

/// One variant, `CHARTER_BENCH_N` units of it after one warm-up, then
/// exit (`CHARTER_BENCH_VARIANT=<name>`): `instructions.sh` counts a
/// whole process's instructions at two values of N, and the difference
/// over the difference in N is the cost of one unit with every fixed cost
/// (start-up, compilation, set-up, warm-up) cancelled out.
///
/// | variant | one unit |
/// | --- | --- |
/// | `raw-cold` | a raw wasmtime cold step of fx-echo (concurrency off) |
/// | `governed-cold` | a governed cold step of fx-echo, its events appended (not fsynced) |
/// | `raw-call` | one `log.write` from fx-call-flood, raw wasmtime |
/// | `log-call` | one mediated `log.write` (the plugin's voice: not audited) |
/// | `kv-call` | one `kv.get` decided by its grant, audited |
/// | `cedar-call` | one `kv.get` decided by a Cedar rule, audited |
/// | `durable-step` | a durable audited step (128 in flight, group commit with fdatasync) |
/// | `workflow-step` | one step of 3-step workflow runs (128 in flight, sled state) |
pub fn variant(name: &str, echo: &Path, flood_wasm: &Path) -> Result<()> {
    let n: u64 = std::env::var("CHARTER_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    match name {
        "raw-cold" | "raw-call" => {
            let engine = crate::raw_engine(false)?;
            if name == "raw-cold" {
                let pre = crate::raw_pre(&engine, echo)?;
                crate::raw_step(&engine, &pre, crate::INPUT)?;
                for _ in 0..n {
                    crate::raw_step(&engine, &pre, crate::INPUT)?;
                }
            } else {
                let pre = crate::raw_pre(&engine, flood_wasm)?;
                let r = crate::raw_step_capped(&engine, &pre, LOG, SMALL);
                anyhow::ensure!(r.is_err(), "flood should stop at the cap");
                let r = crate::raw_step_capped(&engine, &pre, LOG, n);
                anyhow::ensure!(r.is_err(), "flood should stop at the cap");
            }
        }
        "governed-cold" | "log-call" | "kv-call" | "cedar-call" => {
            governed(name, n, echo, flood_wasm)?;
        }
        "durable-step" => {
            let d = crate::durable_steps(echo, n as usize, true)?;
            println!(
                "{:.0} steps/s, {:.1} steps per fdatasync",
                d.steps_per_s, d.steps_per_sync
            );
        }
        "workflow-step" => {
            let w = crate::durable_workflows(echo, (n / 3) as usize, 128)?;
            println!(
                "{:.0} steps/s, {:.1} steps per fdatasync, p50 {:.2} ms",
                w.steps_per_s, w.steps_per_sync, w.p50_ms
            );
        }
        other => anyhow::bail!("unknown CHARTER_BENCH_VARIANT {other}"),
    }
    println!("variant {name}: {n} done");
    Ok(())
}

/// The governed variants: one host, the flood plugins capped at `n` calls.
fn governed(name: &str, n: u64, echo: &Path, flood_wasm: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cap = n.max(1);
    let toml = format!(
        "[deployment]\nname = \"calls\"\nphase = 4\ndata_dir = \"{data}\"\n\
         [groups.kv]\ncapabilities = [\"charter:host/kv.get\", \"charter:host/kv.set\"]\neffect = \"write\"\n\
         [groups.logging]\ncapabilities = [\"charter:host/log.write\"]\n\
         [groups.kv-read]\ncapabilities = [\"charter:host/kv.get\"]\n\
         [groups.kv-read-cedar]\ncapabilities = [\"charter:host/kv.get\"]\n\
         policies = 'permit (principal, action == Action::\"charter:host/kv.get\", resource) when {{ context.key like \"key-*\" }};'\n\
         [plugins.echo]\npath = \"{echo}\"\ngroups = [\"kv\", \"logging\"]\n\
         [plugins.flood]\npath = \"{flood}\"\ngroups = [\"logging\", \"kv-read\"]\nlimits = {{ max_host_calls = {cap} }}\n\
         [plugins.flood-cedar]\npath = \"{flood}\"\ngroups = [\"logging\", \"kv-read-cedar\"]\nlimits = {{ max_host_calls = {cap} }}\n",
        data = dir.path().display(),
        echo = echo.display(),
        flood = flood_wasm.display(),
    );
    let host = crate::bench_host(
        &toml,
        dir.path(),
        HostOptions {
            store: Some(Arc::new(charter_store::MemStore::default())),
            no_cache: cache_dir().is_none(),
            cache_dir: cache_dir(),
            unsynced_log: true,
            on_demand_instances: true,
            ..Default::default()
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if name == "governed-cold" {
        let p = rt.block_on(host.load("echo"))?;
        for _ in 0..=n {
            rt.block_on(host.call_loaded(&p, crate::INPUT))?;
        }
        return Ok(());
    }
    let (plugin, input) = match name {
        "log-call" => ("flood", LOG),
        "kv-call" => ("flood", KV),
        _ => ("flood-cedar", KV),
    };
    let p = rt.block_on(host.load(plugin))?;
    // The one step makes `n` calls (its cap): the warm-up is start-up.
    flood(&rt, &host, &p, input)
}
