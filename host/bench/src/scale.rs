//! How the per-run operations scale with the size of a deployment's log:
//! a log of synthetic events (completed 3-step runs, each with journaled
//! calls) is generated through the log API with the index applied, with
//! probe runs waiting to retry placed in the middle, and a signed
//! checkpoint taken of it. Then, on each size: host start-up (the first
//! one walks the whole chain, as there is no verified mark yet; the next
//! checks only the tail after the mark the first recorded), resuming one
//! run (a re-attempt and two fresh steps, fsync'd), a re-attempt's journal
//! read, `runs show` of one run as the CLI reads it with no host running
//! (with the state store's open time it includes, the same through a
//! running host's open index, and the old whole-log read beside it),
//! `runs list` through the index, a checkpoint's frame hash through the
//! open log's sparse index (with the whole-file walk beside it), and `audit verify --since-checkpoint` (what the resumes appended
//! after the checkpoint; the full `audit verify` beside it).
//!
//! Sizes: 10,000 and 100,000 events by default; `CHARTER_BENCH_BIG=1` adds
//! 1,000,000 (a few minutes and ~1.5 GB of disk under `target/`, removed
//! afterwards). `CHARTER_BENCH_SCALE_ONLY=1` prints only these figures;
//! `CHARTER_BENCH_SIZES=10000,1000000` picks the sizes, and
//! `CHARTER_BENCH_KEEP=1` keeps each generated deployment (its path is
//! printed) for a profiler.
//! Ratios are against the 10,000-event log; the goal is 2x at most for
//! start-up, `runs show`, a resume, a journal read and `verify
//! --since-checkpoint`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use charter_audit::{Event, EventLog, JournalRef, Record};
use charter_config::Deployment;
use charter_runtime::index;
use charter_runtime::workflow::{state::from_records, workflow_digest};
use charter_runtime::{Host, HostOptions};
use charter_store::{SledStore, Store};
use serde_json::json;

/// Probe runs per size (each can be resumed once).
const PROBES: usize = 15;

pub struct Figures {
    pub events: u64,
    pub bytes: u64,
    pub generate: Duration,
    pub startup: Duration,
    pub resume: Duration,
    /// The fastest resume: resuming is a few fdatasyncs, which other
    /// work on the disk makes noisy; the minimum shows the floor.
    pub resume_min: Duration,
    pub journal: Duration,
    /// `runs show` as a running host answers it (`charter up`): the API's
    /// `Control::runs_show`, through the host's open index.
    pub show_host: Duration,
    pub show: Duration,
    pub show_whole_log: Duration,
    /// A checkpoint's frame hash read through the open log's sparse index
    /// (`EventLog::hash_at`), and by walking the file (`hash_at`).
    pub hash_at: Duration,
    pub hash_at_walk: Duration,
    /// The first start-up (no verified mark yet: the whole chain).
    pub startup_full: Duration,
    /// The state store's open time, part of `runs show`.
    pub store_open: Duration,
    /// `runs list` through the index (every run: grows with the runs).
    pub list: Duration,
    pub runs: usize,
    pub verify_since: Duration,
    pub verify_since_frames: u64,
    pub verify_full: Duration,
}

fn deployment(dir: &Path, echo: &Path) -> Result<Deployment> {
    let toml = format!(
        "[deployment]\nname = \"scale\"\nphase = 1\ndata_dir = \"{}\"\n\
         [groups.kv]\ncapabilities = [\"charter:host/kv.*\", \"charter:host/log.write\"]\neffect = \"write\"\n\
         [plugins.echo]\npath = \"{}\"\ngroups = [\"kv\"]\n\
         [workflows.three]\n\
         [[workflows.three.steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = {{ n = \"$/input/n\" }}\n\
         [[workflows.three.steps]]\nid = \"b\"\nplugin = \"echo\"\ninput = {{ n = \"$/input/n\" }}\n\
         [[workflows.three.steps]]\nid = \"c\"\nplugin = \"echo\"\ninput = {{ n = \"$/input/n\" }}\n",
        dir.join("data").display(),
        echo.display()
    );
    Ok(Deployment::parse(
        &toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )?)
}

fn attempt(run: &str, step: &str, next: Option<&str>, failed: bool) -> Event {
    Event::StepAttempt {
        run: run.into(),
        step: step.into(),
        attempt: 1,
        plugin: "echo".into(),
        input: json!({"n": 1}),
        outcome: if failed { "failed" } else { "ok" }.into(),
        output: (!failed).then(|| json!({"n": 1, "echo": "synthetic output of a step"})),
        error: failed.then(|| "synthetic failure".into()),
        failure: failed.then(|| "retryable".into()),
        retry_at_ms: failed.then_some(1),
        proposal: None,
        replayed: 0,
        duration_us: 40,
        next: next.map(str::to_string),
    }
}

/// One completed synthetic run: 11 events.
fn synthetic_run(run: &str, digest: &str) -> Vec<Event> {
    let mut out = vec![Event::RunStarted {
        auth: None,
        run: run.into(),
        workflow: "three".into(),
        workflow_digest: digest.into(),
        input: json!({"n": 1}),
        initiator: Some("bench".into()),
        trigger: None,
        first: Some("a".into()),
        plugins: Default::default(),
    }];
    for (step, next) in [("a", Some("b")), ("b", Some("c")), ("c", None)] {
        let call = format!("{run}-{step}");
        out.push(Event::Call {
            call: call.clone(),
            plugin: "echo".into(),
            digest: "sha256:bench".into(),
            function: "charter:host/kv.set".into(),
            args_digest: "sha256:args".into(),
            args: json!({"key": "k", "value": "v"}),
            decision: charter_audit::Decision::Allow,
            policies: vec![],
            reason: None,
            initiator: Some("bench".into()),
            journal: Some(JournalRef {
                run: run.into(),
                step: step.into(),
                attempt: 1,
                seq: 1,
            }),
            request: None,
        });
        out.push(Event::CallResult {
            call,
            plugin: "echo".into(),
            function: "charter:host/kv.set".into(),
            ok: true,
            summary: "ok".into(),
            duration_us: 3,
            proposal: None,
            result: Some(json!(null)),
        });
        out.push(attempt(run, step, next, false));
    }
    out.push(Event::RunFinished {
        auth: None,
        run: run.into(),
        status: "completed".into(),
        output: Some(json!({"n": 1})),
        error: None,
        by: None,
    });
    out
}

/// A run waiting to retry its first step (what `runs resume` picks up).
fn probe_run(run: &str, digest: &str) -> Vec<Event> {
    vec![
        Event::RunStarted {
            auth: None,
            run: run.into(),
            workflow: "three".into(),
            workflow_digest: digest.into(),
            input: json!({"n": 1}),
            initiator: Some("bench".into()),
            trigger: None,
            first: Some("a".into()),
            plugins: Default::default(),
        },
        attempt(run, "a", None, true),
    ]
}

/// Write `events` synthetic events into the deployment's log with its
/// sled index applied (no fdatasync: generation, not measurement); the
/// probe runs sit in the middle. Returns the probes' ids.
fn generate(d: &Deployment, events: u64) -> Result<Vec<String>> {
    let digest = workflow_digest(&d.workflows["three"]);
    let store = Arc::new(SledStore::open(&d.data_dir.join("state"))?);
    let applied = index::prepare(&*store)?;
    let s = store.clone();
    // One cache across applies, as the host keeps: ended runs move to the
    // store's archive as they would in a host that ran them.
    let mut cache = index::RunCache::default();
    let log = EventLog::open_with(
        &d.data_dir.join(charter_audit::LOG_FILE),
        applied,
        Box::new(move |r: &[Record], at: &[u64]| {
            index::apply_cached(&*s, r, at, &|_, _| None, &mut cache).map_err(|e| e.to_string())
        }),
        false,
    )?;
    let mut probes = Vec::new();
    let (mut written, mut n) = (0u64, 0u64);
    let mut batch = Vec::new();
    let per_batch = (events as usize / 20).clamp(11, 1000);
    while written + (batch.len() as u64) < events {
        if probes.is_empty() && written + batch.len() as u64 >= events / 2 {
            written += batch.len() as u64;
            log.append_blocking(std::mem::take(&mut batch))?;
            for i in 0..PROBES {
                let id = format!("P{i}");
                log.append_blocking(probe_run(&id, &digest))?;
                probes.push(id);
            }
        }
        batch.extend(synthetic_run(&format!("S{n}"), &digest));
        n += 1;
        if batch.len() >= per_batch {
            written += batch.len() as u64;
            log.append_blocking(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        log.append_blocking(batch)?;
    }
    drop(log);
    store.flush()?;
    Ok(probes)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn measure(echo: &Path, events: u64) -> Result<Figures> {
    let dir = tempfile::tempdir_in(crate::root().join("target"))?;
    let d = deployment(dir.path(), echo)?;
    let _dir = if std::env::var_os("CHARTER_BENCH_KEEP").is_some() {
        eprintln!("kept: {}", dir.path().display());
        let _ = dir.keep();
        None
    } else {
        Some(dir)
    };
    let t = Instant::now();
    let probes = generate(&d, events)?;
    let generate = t.elapsed();
    let log_path = d.data_dir.join(charter_audit::LOG_FILE);
    let bytes = std::fs::metadata(&log_path)?.len();
    let total = charter_audit::verify(&log_path)?.last_seq;
    let cp = charter_audit::checkpoint::create(&d.data_dir, &d.name, &log_path)?;
    let store_open = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let s = SledStore::open(&d.data_dir.join("state")).expect("store");
                let e = t.elapsed();
                drop(s);
                e
            })
            .collect(),
    );
    let mut runs = 0;
    let list = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let (r, _) = index::runs_offline(&d.data_dir).expect("index");
                runs = r.len();
                t.elapsed()
            })
            .collect(),
    );

    // `runs show` as the CLI does it, with no host running: through the
    // index, and (the old way) by reading the whole log.
    let show = median(
        (0..5)
            .map(|i| {
                let t = Instant::now();
                let r = index::run_records_offline(&d.data_dir, &probes[i]).expect("index");
                let st = from_records(&r).0;
                assert_eq!(st.len(), 1);
                t.elapsed()
            })
            .collect(),
    );
    let show_whole_log = median(
        (0..3)
            .map(|i| {
                let t = Instant::now();
                let r = charter_audit::read_records(&log_path).expect("log");
                let runs = from_records(&r).0;
                assert!(runs.iter().any(|r| r.id == probes[i]));
                t.elapsed()
            })
            .collect(),
    );

    let options = || HostOptions {
        no_cache: true,
        ..Default::default()
    };
    // The first start walks the whole chain and records the verified
    // mark; later ones check only what follows it.
    let t = Instant::now();
    drop(Host::new(d.clone(), options())?);
    let startup_full = t.elapsed();
    let startup = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let h = Host::new(d.clone(), options()).expect("host");
                let e = t.elapsed();
                drop(h);
                e
            })
            .collect(),
    );
    let host = Arc::new(Host::new(d.clone(), options())?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(host.load("echo"))?;
    let journal = median(
        probes
            .iter()
            .map(|p| {
                let t = Instant::now();
                let r = host.records_of_run(p).expect("records");
                assert_eq!(r.len(), 2);
                t.elapsed()
            })
            .collect(),
    );
    // `runs show` as `charter up` answers it: the API's own request
    // (`GET /v1/runs/{id}` calls it) with this process's host serving.
    let control = charter_api::Control::with_host(host.clone(), charter_api::Access::Remote);
    let show_host = median(
        probes
            .iter()
            .map(|p| {
                let t = Instant::now();
                let r = control
                    .runs_show(&charter_api::RunId { id: p.clone() })
                    .expect("runs show");
                assert_eq!(&r.run.id, p);
                t.elapsed()
            })
            .collect(),
    );
    drop(control);
    let mid = total / 2 + 1;
    let walked = charter_audit::hash_at(&log_path, mid)?;
    anyhow::ensure!(walked.is_some(), "no frame {mid}");
    let hash_at = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let h = host.log().hash_at(mid).expect("hash_at");
                assert_eq!(h, walked);
                t.elapsed()
            })
            .collect(),
    );
    let hash_at_walk = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let h = charter_audit::hash_at(&log_path, mid).expect("hash_at");
                assert_eq!(h, walked);
                t.elapsed()
            })
            .collect(),
    );
    let mut resumes = Vec::new();
    for p in &probes {
        let t = Instant::now();
        let st = rt.block_on(host.drive(p))?;
        resumes.push(t.elapsed());
        anyhow::ensure!(st.status == "completed", "probe {p} ended {}", st.status);
    }
    drop(host);
    let t = Instant::now();
    let (v, problem) = charter_audit::checkpoint::verify_since(&cp, &log_path)?;
    let verify_since = t.elapsed();
    anyhow::ensure!(v.ok() && problem.is_none(), "verify --since-checkpoint");
    let t = Instant::now();
    anyhow::ensure!(charter_audit::verify(&log_path)?.ok(), "verify");
    let verify_full = t.elapsed();
    Ok(Figures {
        startup_full,
        store_open,
        list,
        runs,
        verify_since,
        verify_since_frames: v.frames,
        verify_full,
        events: total,
        bytes,
        generate,
        startup,
        resume_min: resumes.iter().copied().min().unwrap_or_default(),
        resume: median(resumes),
        journal,
        show_host,
        show,
        show_whole_log,
        hash_at,
        hash_at_walk,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn report(echo: &Path) -> Result<()> {
    let mut sizes = vec![10_000, 100_000];
    if std::env::var_os("CHARTER_BENCH_BIG").is_some() {
        sizes.push(1_000_000);
    }
    if let Ok(v) = std::env::var("CHARTER_BENCH_SIZES") {
        sizes = v.split(',').filter_map(|s| s.parse().ok()).collect();
    }
    let mut all = Vec::new();
    for n in sizes {
        let f = measure(echo, n)?;
        println!(
            "log of {:>9} events ({:>6.1} MB, generated in {:.1} s): start-up {:.2} ms (first, whole chain: {:.1} ms), resume one run {:.2} ms (min {:.2}), journal read {:.3} ms, runs show {:.2} ms (store open {:.2} ms; through a running host {:.3} ms; whole-log read {:.1} ms), runs list {:.1} ms ({} runs), verify --since-checkpoint {:.2} ms ({} entries; full verify {:.1} ms), hash_at {:.3} ms (walk {:.1} ms)",
            f.events,
            f.bytes as f64 / 1e6,
            f.generate.as_secs_f64(),
            ms(f.startup),
            ms(f.startup_full),
            ms(f.resume),
            ms(f.resume_min),
            ms(f.journal),
            ms(f.show),
            ms(f.store_open),
            ms(f.show_host),
            ms(f.show_whole_log),
            ms(f.list),
            f.runs,
            ms(f.verify_since),
            f.verify_since_frames,
            ms(f.verify_full),
            ms(f.hash_at),
            ms(f.hash_at_walk),
        );
        all.push(f);
    }
    let r = |x: Duration, y: Duration| ms(y) / ms(x).max(1e-9);
    if let Some(a) = all.first() {
        for b in &all[1..] {
            println!(
                "{}/{} events: start-up {:.2}x (first, whole chain {:.1}x), runs show {:.2}x (store open {:.2}x; through a running host {:.2}x; whole-log read {:.1}x), resume one run {:.2}x (min {:.2}x), journal read {:.2}x, verify --since-checkpoint {:.2}x (full {:.1}x), runs list {:.1}x, hash_at {:.2}x; goal: start-up, runs show, resume, journal, verify --since-checkpoint within 2x",
                b.events,
                a.events,
                r(a.startup, b.startup),
                r(a.startup_full, b.startup_full),
                r(a.show, b.show),
                r(a.store_open, b.store_open),
                r(a.show_host, b.show_host),
                r(a.show_whole_log, b.show_whole_log),
                r(a.resume, b.resume),
                r(a.resume_min, b.resume_min),
                r(a.journal, b.journal),
                r(a.verify_since, b.verify_since),
                r(a.verify_full, b.verify_full),
                r(a.list, b.list),
                r(a.hash_at, b.hash_at),
            );
        }
    }
    Ok(())
}
