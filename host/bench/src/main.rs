//! Benchmark: the same step component run through plain wasmtime (no
//! governance) and through Charter (grant-linked, limits on, kv and log
//! calls through the mediator).
//!
//! Run: `cargo run -p charter-bench` after `plugins/build.sh`. The last line
//! is `governed/raw cold step: X.XX`.
//!
//! A "cold step" is what a workflow step costs: a fresh instance from a
//! pre-linked `InstancePre`, one `run` call with three host calls (log.write,
//! kv.set, kv.get), and the store dropped. The host-call figure comes from a
//! guest that calls `log.write` in a loop until a cap of 10,000 stops it.

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

fn raw_engine(concurrency: bool) -> Result<Engine> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.concurrency_support(concurrency);
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

fn raw_pre(engine: &Engine, wasm: &Path) -> Result<InstancePre<Raw>> {
    let component = Component::from_file(engine, wasm)?;
    let mut linker = Linker::<Raw>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.instance("charter:host/log@0.1.0")?.func_wrap(
        "write",
        |mut s, (_l, _m): (Level, String)| {
            let d: &mut Raw = s.data_mut();
            d.calls += 1;
            if d.calls >= FLOOD_CAP {
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

fn raw_step(engine: &Engine, pre: &InstancePre<Raw>, input: &str) -> Result<()> {
    let mut store = Store::new(
        engine,
        Raw {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            kv: HashMap::new(),
            calls: 0,
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

fn main() -> Result<()> {
    let iters: usize = std::env::var("CHARTER_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let echo = fixture("fx_echo.wasm")?;
    let flood = fixture("fx_call_flood.wasm")?;
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
[plugins.flood]
path = "{flood}"
groups = ["logging"]
limits = {{ max_host_calls = {cap} }}
"#,
        data = dir.path().display(),
        echo = echo.display(),
        flood = flood.display(),
        cap = FLOOD_CAP - 1,
    );
    let deployment = Deployment::parse(&toml, &dir.path().join("charter.toml"))?;
    let host = Host::new(
        deployment,
        HostOptions {
            store: Some(Arc::new(charter_store_mem())),
            no_cache: true,
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
    print("charter governed (grants, limits, mediator)", &governed);
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

fn charter_store_mem() -> charter_store::MemStore {
    charter_store::MemStore::default()
}
