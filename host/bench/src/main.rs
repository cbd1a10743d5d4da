//! Benchmark: the same step component run through plain wasmtime (no
//! governance) and through Charter (grant-linked, limits on, kv and log
//! calls through the mediator).
//!
//! Run: `cargo run -p charter-bench` after `plugins/build.sh`. The last line
//! is `governed/raw cold step: X.XX`. The log-size figures (`scale.rs`:
//! start-up, resume, a re-attempt's journal and `runs show` on logs of
//! 1,000 and 20,000 events, and 1,000,000 with `CHARTER_BENCH_BIG=1`) come
//! before it; `CHARTER_BENCH_SCALE_ONLY=1` prints only those.
//! `CHARTER_BENCH_CALLS=N` runs only the instruction-count driver of
//! `calls.rs` (for callgrind); `CHARTER_BENCH_API_ONLY=1` only `charter
//! up`'s API round trips (`api.rs`); `CHARTER_BENCH_SERVICE_ONLY=1` only
//! `charter up` under load (`service.rs`: webhook-started runs per second,
//! and runs driven with the host up against the in-process benchmark);
//! `CHARTER_BENCH_PG_ONLY=1` only the PostgreSQL log beside the file log
//! (`pg.rs`); `CHARTER_BENCH_MCP_ONLY=1` only agent tool calls over MCP,
//! stdio and HTTP, beside `charter call` (`mcp.rs`);
//! `CHARTER_BENCH_DURABLE_ONLY=1` only the durable lines (audited steps
//! with group commit, with and without `fdatasync`, and 3-step workflow
//! runs), for comparing two builds in one sitting.
//!
//! A "cold step" is what a workflow step costs: a fresh instance from a
//! pre-linked `InstancePre`, one `run` call with three host calls (log.write,
//! kv.set, kv.get), and the store dropped. The host-call figure comes from a
//! guest that calls `log.write` in a loop until a cap of 10,000 stops it.

mod api;
mod calls;
mod mcp;
mod memory;
mod pg;
mod policy;
mod scale;
mod service;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use charter_config::Deployment;
use charter_runtime::{CallError, Host, HostOptions, LimitKind};
use wasmtime::component::{Component, ComponentType, InstancePre, Lift, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const INPUT: &str = r#"{"log": "bench", "kv_set": ["k", "v"], "kv_get": "k"}"#;
const FLOOD_CAP: u64 = 10_000;
const CEDAR_CAP: u64 = 1_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Result<PathBuf> {
    let p = root().join("target/wasm32-wasip2/release").join(name);
    anyhow::ensure!(
        p.exists(),
        "{} is missing: run plugins/build.sh first",
        p.display()
    );
    Ok(p)
}

// ---- plain wasmtime ------------------------------------------------------

struct Raw {
    wasi: WasiCtx,
    table: ResourceTable,
    kv: HashMap<String, String>,
    calls: u64,
    /// The flood guest's `log.write` fails at this many calls.
    cap: u64,
}

impl WasiView for Raw {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[derive(ComponentType, Lift, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code, reason = "lifted from the guest")]
enum Level {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

#[derive(ComponentType, Lift)]
#[component(variant)]
#[allow(dead_code, reason = "lifted from the guest")]
enum StepError {
    #[component(name = "retryable")]
    Retryable(String),
    #[component(name = "fatal")]
    Fatal(String),
}

pub(crate) fn raw_engine(concurrency: bool) -> Result<Engine> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.concurrency_support(concurrency);
    if calls::on_demand() {
        // valgrind (instructions.sh) cannot map the pool's reservation.
        if let Some(dir) = calls::cache_dir() {
            let mut cc = wasmtime::CacheConfig::new();
            cc.with_directory(dir);
            cfg.cache(Some(wasmtime::Cache::new(cc)?));
        }
        return Ok(Engine::new(&cfg)?);
    }
    let mut pool = PoolingAllocationConfig::new();
    pool.max_memory_size(64 << 20);
    pool.total_memories(256);
    pool.total_core_instances(512);
    pool.total_component_instances(128);
    pool.total_tables(256);
    pool.max_memories_per_component(16);
    pool.max_tables_per_component(32);
    pool.max_core_instances_per_component(64);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&cfg)?)
}

pub(crate) fn raw_pre(engine: &Engine, wasm: &Path) -> Result<InstancePre<Raw>> {
    let component = Component::from_file(engine, wasm)?;
    let mut linker = Linker::<Raw>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.instance("charter:host/log@0.1.0")?.func_wrap(
        "write",
        |mut s, (_l, _m): (Level, String)| {
            let d: &mut Raw = s.data_mut();
            d.calls += 1;
            if d.calls >= d.cap {
                return Err(wasmtime::Error::msg("cap"));
            }
            Ok(())
        },
    )?;
    let mut kv = linker.instance("charter:host/kv@0.1.0")?;
    kv.func_wrap("get", |s, (k,): (String,)| {
        let d: &Raw = s.data();
        Ok((Ok::<_, String>(d.kv.get(&k).cloned()),))
    })?;
    kv.func_wrap("set", |mut s, (k, v): (String, String)| {
        s.data_mut().kv.insert(k, v);
        Ok((Ok::<(), String>(()),))
    })?;
    Ok(linker.instantiate_pre(&component)?)
}

pub(crate) fn raw_step(engine: &Engine, pre: &InstancePre<Raw>, input: &str) -> Result<()> {
    raw_step_capped(engine, pre, input, FLOOD_CAP)
}

pub(crate) fn raw_step_capped(
    engine: &Engine,
    pre: &InstancePre<Raw>,
    input: &str,
    cap: u64,
) -> Result<()> {
    let mut store = Store::new(
        engine,
        Raw {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            kv: HashMap::new(),
            calls: 0,
            cap,
        },
    );
    let inst = pre.instantiate(&mut store)?;
    let run = inst.get_typed_func::<(&str,), (Result<String, StepError>,)>(&mut store, "run")?;
    let (r,) = run.call(&mut store, (input,))?;
    anyhow::ensure!(r.is_ok(), "raw step failed");
    Ok(())
}

// ---- measurement -----------------------------------------------------------

struct Stats {
    median: Duration,
    mean: Duration,
    p99: Duration,
}

fn measure(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<Stats> {
    for _ in 0..iters / 10 {
        f()?;
    }
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed());
    }
    v.sort();
    let total: Duration = v.iter().sum();
    Ok(Stats {
        median: v[iters / 2],
        mean: total / iters as u32,
        p99: v[iters * 99 / 100],
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<44} median {:>8.2} us   mean {:>8.2} us   p99 {:>8.2} us",
        us(s.median),
        us(s.mean),
        us(s.p99)
    );
}

/// A 2-worker runtime and a host over `toml` (as if read from
/// `dir/charter.toml`, default options, log fdatasynced): what the
/// benchmarks that serve a host in process (`api.rs`, `service.rs`,
/// `mcp.rs`) start from.
pub(crate) fn served_host(toml: &str, dir: &Path) -> Result<(tokio::runtime::Runtime, Arc<Host>)> {
    let d = Deployment::parse(
        toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let host = {
        let _guard = rt.enter();
        Arc::new(Host::new(d, HostOptions::default())?)
    };
    Ok((rt, host))
}

/// A host over `toml`, parsed as if read from `dir/charter.toml` with the
/// host's own catalog: every variant builds its host this way.
pub(crate) fn bench_host(
    toml: &str,
    dir: &std::path::Path,
    options: HostOptions,
) -> anyhow::Result<Host> {
    let deployment = Deployment::parse(
        toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )?;
    Ok(Host::new(deployment, options)?)
}

/// The allocator the `charter` binary uses (see host/cli/src/main.rs):
/// both sides of every ratio here run on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let iters: usize = std::env::var("CHARTER_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let echo = fixture("fx_echo.wasm")?;
    if std::env::var_os("CHARTER_BENCH_SCALE_ONLY").is_some() {
        // Only the log-size figures (see `scale.rs`).
        return scale::report(&echo);
    }
    if std::env::var_os("CHARTER_BENCH_API_ONLY").is_some() {
        // Only charter up's API round trips (see `api.rs`).
        return api::report(iters.min(2000));
    }
    if std::env::var_os("CHARTER_BENCH_MCP_ONLY").is_some() {
        // Only agent tool calls over MCP (see `mcp.rs`).
        return mcp::report(&echo, iters);
    }
    if std::env::var_os("CHARTER_BENCH_PG_ONLY").is_some() {
        // Only the PostgreSQL log beside the file log (see `pg.rs`).
        return pg::report(iters);
    }
    if std::env::var_os("CHARTER_BENCH_DURABLE_ONLY").is_some() {
        // Only the durable lines: steps and workflow runs with group commit.
        return durable_report(&echo, iters).map(|_| ());
    }
    if std::env::var_os("CHARTER_BENCH_SERVICE_ONLY").is_some() {
        // Only charter up under load (see `service.rs`).
        return service::report(&echo, service_runs(iters), None);
    }
    let flood = fixture("fx_call_flood.wasm")?;
    if let Ok(v) = std::env::var("CHARTER_BENCH_VARIANT") {
        // One variant, for instructions.sh (see `calls.rs`).
        return calls::variant(&v, &echo, &flood);
    }
    if let Some(n) = std::env::var("CHARTER_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // Only the per-call driver for callgrind (see `calls.rs`).
        calls::report(&echo, &flood, n)?;
        return policy::calls(&flood, n);
    }
    println!(
        "charter-bench: {iters} cold steps per variant; component {}",
        echo.display()
    );

    // Plain wasmtime, with and without component-model concurrency support.
    let mut raw = HashMap::new();
    for concurrency in [true, false] {
        let engine = match raw_engine(concurrency) {
            Ok(e) => e,
            Err(e) => {
                println!("raw wasmtime, concurrency_support({concurrency}): skipped: {e}");
                continue;
            }
        };
        let pre = raw_pre(&engine, &echo)?;
        let s = measure(iters, || raw_step(&engine, &pre, INPUT))?;
        print(
            &format!("raw wasmtime, concurrency_support({concurrency})"),
            &s,
        );
        let fpre = raw_pre(&engine, &flood)?;
        let f = measure(iters / 30 + 10, || {
            let r = raw_step(&engine, &fpre, "{}");
            anyhow::ensure!(r.is_err(), "flood should stop at the cap");
            Ok(())
        })?;
        println!(
            "{:<44} {:>8.3} us per guest->host call (log.write, {FLOOD_CAP} per step)",
            format!("raw wasmtime, concurrency_support({concurrency})"),
            us(f.median) / FLOOD_CAP as f64
        );
        raw.insert(concurrency, s);
    }

    // Charter: grant-linked, limits on, calls through the mediator.
    let dir = tempfile::tempdir()?;
    let toml = format!(
        r#"
[deployment]
name = "bench"
phase = 4
data_dir = "{data}"
[groups.kv]
capabilities = ["charter:host/kv.get", "charter:host/kv.set"]
effect = "write"
[groups.logging]
capabilities = ["charter:host/log.write"]
[plugins.echo]
path = "{echo}"
groups = ["kv", "logging"]
[groups.kv-read]
capabilities = ["charter:host/kv.get"]
[groups.kv-read-cedar]
capabilities = ["charter:host/kv.get"]
policies = 'permit (principal, action == Action::"charter:host/kv.get", resource) when {{ context.key like "key-*" }};'
[plugins.flood]
path = "{flood}"
groups = ["logging", "kv-read"]
limits = {{ max_host_calls = {cap} }}
[plugins.flood-cedar]
path = "{flood}"
groups = ["logging", "kv-read-cedar"]
limits = {{ max_host_calls = {cedar_cap} }}
"#,
        cedar_cap = CEDAR_CAP - 1,
        data = dir.path().display(),
        echo = echo.display(),
        flood = flood.display(),
        cap = FLOOD_CAP - 1,
    );
    let deployment = Deployment::parse(
        &toml,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )?;
    // The cold-step comparison measures the runtime's governance (grants,
    // limits, mediator, audit records written), not the disk: no fdatasync
    // here. The durable figures below include it.
    let host = Host::new(
        deployment,
        HostOptions {
            store: Some(Arc::new(charter_store_mem())),
            no_cache: true,
            unsynced_log: true,
            ..Default::default()
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let loaded = rt.block_on(host.load("echo")).context("load echo")?;
    let governed = measure(iters, || {
        rt.block_on(host.call_loaded(&loaded, INPUT))?;
        Ok(())
    })?;
    print("charter governed (log written, not fsynced)", &governed);
    if std::env::var_os("CHARTER_BENCH_PROFILE").is_some() {
        // Profiling aid: `CHARTER_BENCH_PROFILE=1 perf record -g ...` spends
        // its time in governed cold steps only.
        for _ in 0..iters * 10 {
            rt.block_on(host.call_loaded(&loaded, INPUT))?;
        }
        return Ok(());
    }
    let floodp = rt.block_on(host.load("flood"))?;
    let gf = measure(iters / 30 + 10, || {
        match rt.block_on(host.call_loaded(&floodp, "{}")) {
            Err(CallError::Limit {
                kind: LimitKind::HostCalls,
                ..
            }) => Ok(()),
            other => anyhow::bail!("flood should stop at the cap: {other:?}"),
        }
    })?;
    println!(
        "{:<44} {:>8.3} us per guest->host call (log.write via mediator)",
        "charter governed",
        us(gf.median) / FLOOD_CAP as f64
    );

    // Per-call cost of mediated kv.get: audited (a call event per call),
    // without and with a Cedar rule on its argument.
    let per_call = |plugin: &str, cap: u64| -> Result<f64> {
        let p = rt.block_on(host.load(plugin))?;
        let s = measure(iters / 60 + 5, || {
            match rt.block_on(host.call_loaded(&p, r#"{"fn": "kv"}"#)) {
                Err(CallError::Limit {
                    kind: LimitKind::HostCalls,
                    ..
                }) => Ok(()),
                other => anyhow::bail!("flood should stop at the cap: {other:?}"),
            }
        })?;
        Ok(us(s.median) / cap as f64)
    };
    let kv_plain = per_call("flood", FLOOD_CAP)?;
    let kv_cedar = per_call("flood-cedar", CEDAR_CAP)?;
    println!(
        "{:<44} {kv_plain:>8.3} us per call (kv.get, decided by grant, audited)",
        "charter governed"
    );
    println!(
        "{:<44} {kv_cedar:>8.3} us per call (kv.get, decided by a Cedar rule, audited)",
        "charter governed"
    );
    policy::report(&flood, iters)?;
    memory::report(&fixture("fx_host_v2.wasm")?)?;
    api::report(iters.min(2000))?;
    mcp::report(&echo, iters)?;
    pg::report(iters)?;

    let wf = durable_report(&echo, iters)?;
    // The same workflow with the host up: webhook-started runs, and runs
    // started through the API and driven by the host.
    service::report(&echo, service_runs(iters), Some(wf))?;

    // How the per-run operations scale with the log (CHARTER_BENCH_BIG=1
    // adds a log of 1,000,000 events).
    scale::report(&echo)?;

    let off = &raw[&false];
    if let Some(on) = raw.get(&true) {
        println!(
            "concurrency_support(true)/(false) raw cold step: {:.2}",
            us(on.median) / us(off.median)
        );
    }
    println!(
        "governed/raw cold step: {:.2}",
        us(governed.median) / us(off.median)
    );
    Ok(())
}

/// Runs per `service.rs` line: 2,000 at the default 3,000 iterations
/// (as many as the in-process workflow line), 200 in the smoke run.
fn service_runs(iters: usize) -> usize {
    (iters * 2 / 3).clamp(200, 2000)
}

/// The durable lines: audited steps with group commit (and without
/// `fdatasync`, the CPU bound), then 3-step workflow runs. Returns the
/// workflow's steps per second.
fn durable_report(echo: &Path, iters: usize) -> Result<f64> {
    // Durable audited steps: many steps in flight, each step's events
    // (calls, kv write, the step) committed with group commit before the
    // step returns.
    let durable = durable_steps(echo, iters.max(2000) * 4, true)?;
    let nosync = durable_steps(echo, iters.max(2000) * 4, false)?;
    println!(
        "{:<44} {:>8.0} steps/s ({} steps, {} in flight, {:.1} events and {:.1} steps per fdatasync)",
        "durable audited steps (group commit)",
        durable.steps_per_s,
        durable.steps,
        durable.in_flight,
        durable.events_per_sync,
        durable.steps_per_sync
    );
    println!(
        "{:<44} {:>8.2} us median (one step at a time: one fdatasync each)",
        "durable audited step latency", durable.alone_us
    );
    println!(
        "{:<44} {:>8.0} steps/s (same load, log written without fdatasync: the CPU bound)",
        "audited steps, no fdatasync", nosync.steps_per_s
    );
    print_cpu("durable step CPU by thread", &durable.cpu_per_step);

    // Durable workflow runs: 3 trivial steps each, many runs in flight,
    // state in sled, every step's events group-committed before the run
    // moves on.
    let wf = durable_workflows(echo, (iters.max(2000) * 2) / 3, 128)?;
    println!(
        "{:<44} {:>8.0} steps/s ({} runs of 3 steps, {} in flight, {:.1} steps per fdatasync; target >= 10000)",
        "durable workflow steps (3-step runs)",
        wf.steps_per_s,
        wf.runs,
        wf.in_flight,
        wf.steps_per_sync
    );
    println!(
        "{:<44} p50 {:.2} ms, p99 {:.2} ms under that load; {:.2} ms alone",
        "workflow run latency (start to completed)", wf.p50_ms, wf.p99_ms, wf.alone_ms
    );
    print_cpu("workflow CPU by thread", &wf.cpu_per_step);
    Ok(wf.steps_per_s)
}

/// Where a load's CPU went, per step by thread (see [`cpu_split`]): on
/// this many cores, the sum is what bounds the throughput.
fn print_cpu(label: &str, per_step: &[(String, f64)]) {
    let total: f64 = per_step.iter().map(|(_, v)| v).sum();
    let split: Vec<String> = per_step
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{label:<44} {total:>8.1} us CPU per step ({}; {cores} cores: at most {:.0} steps/s)",
        split.join(", "),
        cores as f64 * 1e6 / total.max(1e-9)
    );
}

/// What [`durable_steps`] measured.
pub(crate) struct DurableFigures {
    pub steps_per_s: f64,
    steps: usize,
    in_flight: usize,
    events_per_sync: f64,
    pub steps_per_sync: f64,
    /// One step at a time: median microseconds, one `fdatasync` each.
    alone_us: f64,
    /// CPU microseconds per step by thread under the load.
    cpu_per_step: Vec<(String, f64)>,
}

/// `steps` durable audited steps of `echo` (its kv and log calls, its
/// events appended), 128 in flight, after 200 one at a time; with
/// `fdatasync` or (`sync = false`) without, for the CPU bound.
pub(crate) fn durable_steps(echo: &Path, steps: usize, sync: bool) -> Result<DurableFigures> {
    let dir = tempfile::tempdir_in(root().join("target"))?;
    let toml = format!(
        "[deployment]\nname = \"durable\"\nphase = 4\ndata_dir = \"{}\"\n\
         [groups.kv]\ncapabilities = [\"charter:host/kv.get\", \"charter:host/kv.set\", \"charter:host/log.write\"]\neffect = \"write\"\n\
         [plugins.echo]\npath = \"{}\"\ngroups = [\"kv\"]\n",
        dir.path().display(),
        echo.display()
    );
    let host = Arc::new(crate::bench_host(
        &toml,
        dir.path(),
        HostOptions {
            store: Some(Arc::new(charter_store_mem())),
            no_cache: calls::cache_dir().is_none(),
            cache_dir: calls::cache_dir(),
            unsynced_log: !sync,
            on_demand_instances: calls::on_demand(),
            ..Default::default()
        },
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let loaded = rt.block_on(host.load("echo"))?;
    // Sequential: every step waits for its own fdatasync.
    let seq = measure(200, || {
        rt.block_on(host.call_loaded(&loaded, INPUT))?;
        Ok(())
    })?;
    let in_flight = 128;
    let before = host.log().stats();
    let cpu_before = thread_cpu();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..in_flight {
            let (host, loaded) = (host.clone(), loaded.clone());
            let n = steps / in_flight + usize::from(t < steps % in_flight);
            tasks.push(tokio::spawn(async move {
                for _ in 0..n {
                    host.call_loaded(&loaded, INPUT).await?;
                }
                Ok::<_, CallError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = thread_cpu();
    let after = host.log().stats();
    let batches = (after.batches - before.batches).max(1) as f64;
    Ok(DurableFigures {
        steps_per_s: steps as f64 / secs,
        steps,
        in_flight,
        events_per_sync: (after.events - before.events) as f64 / batches,
        steps_per_sync: steps as f64 / batches,
        alone_us: us(seq.median),
        cpu_per_step: cpu_split(&cpu_before, &cpu_after, steps),
    })
}

struct WorkflowFigures {
    steps_per_s: f64,
    runs: usize,
    in_flight: usize,
    steps_per_sync: f64,
    p50_ms: f64,
    p99_ms: f64,
    alone_ms: f64,
    /// CPU microseconds per step by thread (name, digits dropped), under
    /// the load; threads that ended meanwhile count as `(ended)`.
    cpu_per_step: Vec<(String, f64)>,
}

/// CPU seconds so far of this process's threads, summed by thread name
/// (digits dropped: tokio's workers are one entry), with the whole
/// process's total under `*`. Linux only (`/proc`); empty elsewhere.
fn thread_cpu() -> HashMap<String, f64> {
    // clock ticks: USER_HZ is 100 on every Linux this runs on.
    let ticks = |stat: &str| -> f64 {
        // Fields after the `(comm)`, which may hold spaces: state is 3rd
        // overall, utime the 14th and stime the 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (n(11) + n(12)) / 100.0
    };
    let mut out = HashMap::new();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        out.insert("*".to_string(), ticks(&stat));
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("stat")),
        ) else {
            continue;
        };
        let name: String = comm
            .trim()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        *out.entry(name).or_insert(0.0) += ticks(&stat);
    }
    out
}

/// `after - before` of [`thread_cpu`], in microseconds per step, largest
/// first; what no live thread accounts for is `(ended)`.
fn cpu_split(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    steps: usize,
) -> Vec<(String, f64)> {
    let per = |v: f64| v * 1e6 / steps.max(1) as f64;
    let mut out: Vec<(String, f64)> = after
        .iter()
        .filter(|(k, _)| k.as_str() != "*")
        .map(|(k, v)| (k.clone(), per(v - before.get(k).copied().unwrap_or(0.0))))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let live: f64 = out.iter().map(|(_, v)| v).sum();
    let total =
        per(after.get("*").copied().unwrap_or(0.0) - before.get("*").copied().unwrap_or(0.0));
    if total > live {
        out.push(("(ended)".into(), total - live));
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// Runs of a 3-step workflow of trivial steps (fx-echo, no host calls)
/// with the durable log and sled indexes, `in_flight` runs at a time.
pub(crate) fn durable_workflows(
    echo: &Path,
    runs: usize,
    in_flight: usize,
) -> Result<WorkflowFigures> {
    let dir = tempfile::tempdir_in(root().join("target"))?;
    let toml = format!(
        "[deployment]\nname = \"workflows\"\nphase = 1\ndata_dir = \"{}\"\n\
         [approvers.olga]\nroles = [\"operator\"]\n\
         [groups.kv]\ncapabilities = [\"charter:host/kv.*\", \"charter:host/log.write\"]\neffect = \"write\"\n\
         [plugins.echo]\npath = \"{}\"\ngroups = [\"kv\"]\n\
         [workflows.three]\n\
         [[workflows.three.steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = {{ n = \"$/input/n\" }}\n\
         [[workflows.three.steps]]\nid = \"b\"\nplugin = \"echo\"\ninput = {{ n = \"$/input/n\" }}\n\
         [[workflows.three.steps]]\nid = \"c\"\nplugin = \"echo\"\ninput = {{ n = \"$/input/n\" }}\n",
        dir.path().display(),
        echo.display()
    );
    let host = Arc::new(crate::bench_host(
        &toml,
        dir.path(),
        HostOptions {
            no_cache: calls::cache_dir().is_none(),
            cache_dir: calls::cache_dir(),
            on_demand_instances: calls::on_demand(),
            ..Default::default()
        },
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(host.load("echo"))?;
    let run_one = |host: Arc<Host>, n: usize| async move {
        let t = Instant::now();
        let st = host
            .run_workflow("three", serde_json::json!({ "n": n }), None)
            .await?;
        anyhow::ensure!(
            st.status == "completed",
            "run {} ended {}",
            st.id,
            st.status
        );
        Ok::<_, anyhow::Error>(t.elapsed())
    };
    let alone = measure(100, || {
        rt.block_on(run_one(host.clone(), 0))?;
        Ok(())
    })?;
    let before = host.log().stats();
    let cpu_before = thread_cpu();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..in_flight {
            let host = host.clone();
            let n = runs / in_flight + usize::from(t < runs % in_flight);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    out.push(run_one(host.clone(), i).await?);
                }
                Ok::<_, anyhow::Error>(out)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = thread_cpu();
    let after = host.log().stats();
    latencies.sort();
    let pick = |p: usize| us(latencies[(latencies.len() * p).div_ceil(100).max(1) - 1]) / 1000.0;
    let steps = runs * 3;
    Ok(WorkflowFigures {
        steps_per_s: steps as f64 / secs,
        runs,
        in_flight,
        steps_per_sync: steps as f64 / (after.batches - before.batches).max(1) as f64,
        p50_ms: pick(50),
        p99_ms: pick(99),
        alone_ms: us(alone.median) / 1000.0,
        cpu_per_step: cpu_split(&cpu_before, &cpu_after, steps),
    })
}

fn charter_store_mem() -> charter_store::MemStore {
    charter_store::MemStore::default()
}
