//! How the per-run operations scale with the size of a deployment's log:
//! a log of synthetic events (completed 3-step runs, each with journaled
//! calls) is generated through the log API with the index applied, with
//! probe runs waiting to retry placed in the middle. Then, on each size:
//! host start-up, resuming one run (a re-attempt and two fresh steps,
//! fsync'd), a re-attempt's journal read, and `runs show` of one run as
//! the CLI reads it (with the old whole-log read beside it), and a
//! checkpoint's frame hash through the open log's sparse index (with the
//! whole-file walk beside it).
//!
//! Sizes: 1,000 and 20,000 events by default; `CHARTER_BENCH_BIG=1` adds
//! 1,000,000 (about 100 s and ~1.5 GB of disk under `target/`, removed
//! afterwards). `CHARTER_BENCH_SCALE_ONLY=1` prints only these figures.
//!
//! `runs show` through the index opens the sled store, whose open time
//! grows with the store; start-up walks and checks the whole chain (the
//! open-time damage check); both are printed, not asserted.

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
    pub show: Duration,
    pub show_whole_log: Duration,
    /// A checkpoint's frame hash read through the open log's sparse index
    /// (`EventLog::hash_at`), and by walking the file (`hash_at`).
    pub hash_at: Duration,
    pub hash_at_walk: Duration,
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
        run: run.into(),
        workflow: "three".into(),
        workflow_digest: digest.into(),
        input: json!({"n": 1}),
        initiator: Some("bench".into()),
        first: Some("a".into()),
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
            run: run.into(),
            workflow: "three".into(),
            workflow_digest: digest.into(),
            input: json!({"n": 1}),
            initiator: Some("bench".into()),
            first: Some("a".into()),
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
    let log = EventLog::open_with(
        &d.data_dir.join(charter_audit::LOG_FILE),
        applied,
        Box::new(move |r: &[Record], at: &[u64]| {
            index::apply(&*s, r, at).map_err(|e| e.to_string())
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
    let t = Instant::now();
    let probes = generate(&d, events)?;
    let generate = t.elapsed();
    let log_path = d.data_dir.join(charter_audit::LOG_FILE);
    let bytes = std::fs::metadata(&log_path)?.len();
    let total = charter_audit::verify(&log_path)?.last_seq;

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

    let t = Instant::now();
    let host = Host::new(
        d.clone(),
        HostOptions {
            no_cache: true,
            ..Default::default()
        },
    )?;
    let startup = t.elapsed();
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
    Ok(Figures {
        events: total,
        bytes,
        generate,
        startup,
        resume_min: resumes.iter().copied().min().unwrap_or_default(),
        resume: median(resumes),
        journal,
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
    let mut sizes = vec![1_000, 20_000];
    if std::env::var_os("CHARTER_BENCH_BIG").is_some() {
        sizes.push(1_000_000);
    }
    let mut all = Vec::new();
    for n in sizes {
        let f = measure(echo, n)?;
        println!(
            "log of {:>9} events ({:>6.1} MB, generated in {:.1} s): start-up {:.2} ms, resume one run {:.2} ms (min {:.2}), journal read {:.3} ms, runs show {:.2} ms (whole-log read {:.2} ms), hash_at {:.3} ms (walk {:.2} ms)",
            f.events,
            f.bytes as f64 / 1e6,
            f.generate.as_secs_f64(),
            ms(f.startup),
            ms(f.resume),
            ms(f.resume_min),
            ms(f.journal),
            ms(f.show),
            ms(f.show_whole_log),
            ms(f.hash_at),
            ms(f.hash_at_walk),
        );
        all.push(f);
    }
    if let (Some(a), Some(b)) = (all.first(), all.last())
        && all.len() > 1
    {
        let r = |x: Duration, y: Duration| ms(y) / ms(x).max(1e-9);
        println!(
            "{}/{} events: start-up {:.2}x, resume one run {:.2}x (min {:.2}x), journal read {:.2}x, runs show {:.2}x (whole-log read {:.1}x), hash_at {:.2}x (walk {:.1}x); goal: per-run operations within 2x",
            b.events,
            a.events,
            r(a.startup, b.startup),
            r(a.resume, b.resume),
            r(a.resume_min, b.resume_min),
            r(a.journal, b.journal),
            r(a.show, b.show),
            r(a.show_whole_log, b.show_whole_log),
            r(a.hash_at, b.hash_at),
            r(a.hash_at_walk, b.hash_at_walk),
        );
    }
    Ok(())
}
