//! Policy decisions (issue 12, item 1): a `kv.get` decided by Cedar rules
//! beside one decided by its grant, both audited, in the step's own call
//! path (the guest's fiber), and the decision alone for the refund
//! example's rules.
//!
//! Per call, from p50s: `(p50 of a step of SMALL + N calls - p50 of a step
//! of SMALL calls) / N`, so what a step costs besides its calls cancels
//! out. Instruction counts (repeatable on a noisy machine) come from the
//! same steps under callgrind:
//!
//! ```text
//! CHARTER_BENCH_CALLS=2000 valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     ./target/debug/charter-bench
//! callgrind_annotate --inclusive=yes cg.out | grep cg_policy_
//! ```
//!
//! gives instructions per call as `(cg_policy_cedar_large -
//! cg_policy_cedar_small) / N` (and `grant` likewise).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use charter_policy::{PolicyEngine, Verdict};
use charter_runtime::{CallError, Host, HostOptions, LimitKind, LoadedPlugin};

/// The calls of the small steps: what a step costs besides its calls.
const SMALL: u64 = 100;

/// Cedar rules on `kv.get`, of the refund example's shapes: a permit on
/// the argument's pattern, a forbid on another, an approval permit.
const KV_RULES: &str = r#"
@id("own-keys")
permit (principal, action == Action::"charter:host/kv.get", resource)
when { context.key like "key-*" };
@id("ask-for-others")
@approval("owner")
permit (principal, action == Action::"charter:host/kv.get", resource)
when { context.key like "*" };
@id("no-test-keys")
forbid (principal, action == Action::"charter:host/kv.get", resource)
when { context.key like "TEST-*" };
"#;

const REFUNDS: &str = include_str!("../../../examples/refunds/refunds.cedar");

struct Bench {
    rt: tokio::runtime::Runtime,
    host: Host,
    /// (grant small, grant large, cedar small, cedar large)
    plugins: [Arc<LoadedPlugin>; 4],
    _dir: tempfile::TempDir,
}

fn setup(flood_wasm: &Path, n: u64, on_demand_instances: bool) -> Result<Bench> {
    let dir = tempfile::tempdir()?;
    let plugin = |name: &str, group: &str, cap: u64| {
        format!(
            "[plugins.{name}]\npath = \"{}\"\ngroups = [\"{group}\", \"logging\"]\nlimits = {{ max_host_calls = {cap} }}\n",
            flood_wasm.display()
        )
    };
    let toml = format!(
        "[deployment]\nname = \"policy\"\nphase = 4\ndata_dir = \"{}\"\n\
         [groups.logging]\ncapabilities = [\"charter:host/log.write\"]\n\
         [groups.kv-read]\ncapabilities = [\"charter:host/kv.get\"]\n\
         [groups.kv-read-cedar]\ncapabilities = [\"charter:host/kv.get\"]\npolicies = '''{KV_RULES}'''\n\
         {}{}{}{}",
        dir.path().display(),
        plugin("grant-small", "kv-read", SMALL),
        plugin("grant-large", "kv-read", SMALL + n),
        plugin("cedar-small", "kv-read-cedar", SMALL),
        plugin("cedar-large", "kv-read-cedar", SMALL + n),
    );
    let host = crate::bench_host(
        &toml,
        dir.path(),
        HostOptions {
            store: Some(Arc::new(charter_store::MemStore::default())),
            no_cache: true,
            unsynced_log: true,
            on_demand_instances,
            ..Default::default()
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load = |name: &str| rt.block_on(host.load(name));
    let plugins = [
        load("grant-small")?,
        load("grant-large")?,
        load("cedar-small")?,
        load("cedar-large")?,
    ];
    // Warm-up: lazily built state (catalog, policy caches, pools).
    for p in &plugins {
        flood(&rt, &host, p)?;
    }
    Ok(Bench {
        rt,
        host,
        plugins,
        _dir: dir,
    })
}

fn flood(rt: &tokio::runtime::Runtime, host: &Host, p: &LoadedPlugin) -> Result<()> {
    match rt.block_on(host.call_loaded(p, r#"{"fn": "kv"}"#)) {
        Err(CallError::Limit {
            kind: LimitKind::HostCalls,
            ..
        }) => Ok(()),
        other => anyhow::bail!("flood should stop at the cap: {other:?}"),
    }
}

fn p50(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The timing lines (p50 per call, Cedar vs grant, and the decision
/// alone).
pub fn report(flood_wasm: &Path, iters: usize) -> Result<()> {
    let n = 1_000;
    let b = setup(flood_wasm, n, false)?;
    let steps = (iters / 20).max(20);
    // Interleaved, so a burst of load on the machine hits all four.
    let mut t: [Vec<Duration>; 4] = Default::default();
    for _ in 0..steps {
        for (i, p) in b.plugins.iter().enumerate() {
            let s = Instant::now();
            flood(&b.rt, &b.host, p)?;
            t[i].push(s.elapsed());
        }
    }
    let per_call = |small: usize, large: usize, t: &mut [Vec<Duration>; 4]| {
        let l = p50(&mut t[large]).as_secs_f64();
        let s = p50(&mut t[small]).as_secs_f64();
        (l - s).max(0.0) * 1e6 / n as f64
    };
    let grant = per_call(0, 1, &mut t);
    let cedar = per_call(2, 3, &mut t);
    println!(
        "{:<44} {grant:>8.3} us per call p50 (kv.get, decided by grant, audited)",
        "policy bench"
    );
    println!(
        "{:<44} {cedar:>8.3} us per call p50 (kv.get, decided by Cedar rules, audited; target <= 10)",
        "policy bench"
    );
    println!(
        "{:<44} {:>8.2} (Cedar-decided / grant-decided kv.get, p50 per call)",
        "policy bench ratio",
        cedar / grant
    );
    decision_alone()
}

/// One decision by the refund example's rules, without a step around it:
/// compiled (what a call pays) and by Cedar on its own stack segment (what
/// a call pays when a policy cannot be compiled or errors).
fn decision_alone() -> Result<()> {
    let e = PolicyEngine::new("acme", &[("refunds".into(), REFUNDS.into())])?;
    anyhow::ensure!(e.is_compiled(&["refunds"]), "the refund rules compile");
    let groups = vec!["refunds".to_string()];
    let args = serde_json::json!({"order-id": "A-1001", "amount-cents": 5000, "reason": "damaged"});
    type Decide = fn(
        &PolicyEngine,
        &[&str],
        &str,
        &str,
        &[String],
        &str,
        &serde_json::Value,
    ) -> Option<Verdict>;
    let time = |f: Decide| -> Result<f64> {
        let one = || {
            f(
                &e,
                &["refunds"],
                "refund-bot",
                "sha256:0",
                &groups,
                "acme:payments/refunds.issue-refund",
                &args,
            )
        };
        anyhow::ensure!(
            matches!(one(), Some(Verdict::Allow { .. })),
            "a small refund is allowed"
        );
        let mut v = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let s = Instant::now();
            std::hint::black_box(one());
            v.push(s.elapsed());
        }
        Ok(p50(&mut v).as_secs_f64() * 1e6)
    };
    let compiled = time(PolicyEngine::decide)?;
    let cedar = time(PolicyEngine::decide_by_cedar)?;
    println!(
        "{:<44} {compiled:>8.3} us p50 compiled; {cedar:.3} us by Cedar on its own stack segment ({:.1}x)",
        "policy decision alone (refund rules)",
        cedar / compiled
    );
    Ok(())
}

/// The instruction-count driver (`CHARTER_BENCH_CALLS=N`, see the module
/// docs): one step of each kind, each in its own symbol.
pub fn calls(flood_wasm: &Path, n: u64) -> Result<()> {
    let b = setup(flood_wasm, n, true)?;
    let [gs, gl, cs, cl] = &b.plugins;
    let mut us = Vec::new();
    for (what, sf, lf, s, l) in [
        (
            "grant",
            cg_policy_grant_small as StepFn,
            cg_policy_grant_large as StepFn,
            gs,
            gl,
        ),
        (
            "Cedar rules",
            cg_policy_cedar_small,
            cg_policy_cedar_large,
            cs,
            cl,
        ),
    ] {
        let t = Instant::now();
        sf(&b.rt, &b.host, s)?;
        let st = t.elapsed();
        let t = Instant::now();
        lf(&b.rt, &b.host, l)?;
        let lt = t.elapsed();
        us.push((what, lt.saturating_sub(st).as_secs_f64() * 1e6 / n as f64));
    }
    for (what, u) in us {
        println!(
            "{:<44} {u:>8.3} us per call (one step each, noisy: use callgrind, cg_policy_*)",
            format!("policy kv.get decided by {what}")
        );
    }
    Ok(())
}

type StepFn = fn(&tokio::runtime::Runtime, &Host, &LoadedPlugin) -> Result<()>;

#[inline(never)]
fn cg_policy_grant_small(rt: &tokio::runtime::Runtime, h: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_policy_grant_small");
    flood(rt, h, p)
}

#[inline(never)]
fn cg_policy_grant_large(rt: &tokio::runtime::Runtime, h: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_policy_grant_large");
    flood(rt, h, p)
}

#[inline(never)]
fn cg_policy_cedar_small(rt: &tokio::runtime::Runtime, h: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_policy_cedar_small");
    flood(rt, h, p)
}

#[inline(never)]
fn cg_policy_cedar_large(rt: &tokio::runtime::Runtime, h: &Host, p: &LoadedPlugin) -> Result<()> {
    std::hint::black_box("cg_policy_cedar_large");
    flood(rt, h, p)
}
