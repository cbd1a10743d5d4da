//! The PostgreSQL log beside the file log (issue 17): one appender at a
//! time (each append its own commit: the latency of one acknowledged
//! append) and many at once (group commit on both: appended events per
//! second), on a throwaway cluster on a Unix socket (`charter_pg::Cluster`).
//! Both acknowledge only durable appends: `fdatasync` for the file,
//! PostgreSQL's commit (WAL flushed, `synchronous_commit = on`).
//! `CHARTER_BENCH_PG_ONLY=1` prints only these lines; skipped, saying so,
//! where PostgreSQL is not installed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use charter_audit::{Event, EventLog, Log};
use charter_pg::{Cluster, PgLog};

fn step_events(i: usize) -> Vec<Event> {
    // A step's worth: two calls' kv writes and two more events of the
    // same size as a governed step appends.
    (0..4)
        .map(|j| Event::KvWrite {
            auth: None,
            plugin: "bench".into(),
            key: format!("key-{i}-{j}"),
            value: Some("a value of a few dozen bytes, as a step writes".into()),
            by: None,
            secrets: vec![],
        })
        .collect()
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (p50 µs of one append alone, events/s with `threads` appenders).
fn measure<L: Log + 'static>(log: Arc<L>, alone: usize, threads: usize, each: usize) -> (f64, f64) {
    let lat: Vec<f64> = (0..alone)
        .map(|i| {
            let t = Instant::now();
            log.append_blocking(step_events(i)).expect("append");
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|k| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..each {
                    log.append_blocking(step_events(k * each + i))
                        .expect("append");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("appender");
    }
    let rate = (threads * each * 4) as f64 / t.elapsed().as_secs_f64();
    (p50(lat), rate)
}

pub fn report(iters: usize) -> Result<()> {
    if !Cluster::available() {
        println!("postgres log: skipped (PostgreSQL is not installed: install postgresql-15)");
        return Ok(());
    }
    let pg = Cluster::start().map_err(anyhow::Error::msg)?;
    pg.create_db("bench").map_err(anyhow::Error::msg)?;
    let alone = (iters / 10).clamp(50, 500);
    let (threads, each) = (64, (iters / 30).clamp(10, 100));
    let pg_log = Arc::new(PgLog::open(&pg.url("bench"), "bench")?);
    let (pg_p50, pg_rate) = measure(pg_log, alone, threads, each);
    let dir = tempfile::tempdir()?;
    let file_log = Arc::new(EventLog::open(&dir.path().join("events.log"))?);
    let (f_p50, f_rate) = measure(file_log, alone, threads, each);
    println!(
        "{:<44} {pg_p50:>8.1} us p50 (one 4-event append alone); file log {f_p50:.1} us ({:.2}x)",
        "postgres log append latency",
        pg_p50 / f_p50
    );
    println!(
        "{:<44} {pg_rate:>8.0} events/s ({threads} appenders, group commit); file log {f_rate:.0} events/s ({:.2}x)",
        "postgres log appends",
        pg_rate / f_rate
    );
    Ok(())
}
