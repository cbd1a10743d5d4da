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
    let rate = appenders(&[log], threads, each) * 4.0;
    (p50(lat), rate)
}

/// Steps per second of `threads` threads each appending `each` steps,
/// spread over `logs` in turn.
fn appenders<L: Log + 'static>(logs: &[Arc<L>], threads: usize, each: usize) -> f64 {
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|k| {
            let log = logs[k % logs.len()].clone();
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
    (threads * each) as f64 / t.elapsed().as_secs_f64()
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
    nodes(&pg, threads, each, f_rate / 4.0)
}

/// Several nodes on one database (issue 17): `threads` appenders spread
/// over 1, 2 and 3 nodes (`PgLog::open_shared`), each append a step's
/// four events with its index rows committed in the same transaction
/// (the index: read the applied seq, write a row per event and the new
/// applied seq — the shape of the host's). Appends from all nodes take
/// turns under one lock, so more nodes add contention, not throughput,
/// on one database; the line says how far. Round trips per step: the
/// transaction's fixed five (BEGIN, the append lock, the tail, the
/// insert, COMMIT) plus the index's two, over the steps a transaction
/// carries.
fn nodes(pg: &Cluster, threads: usize, each: usize, file_steps: f64) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut line = String::new();
    let mut one = 0.0;
    for n in 1..=3usize {
        let db = format!("nodes{n}");
        pg.create_db(&db).map_err(anyhow::Error::msg)?;
        let url = pg.url(&db);
        let txs = Arc::new(AtomicU64::new(0));
        let logs: Vec<Arc<PgLog>> = (0..n)
            .map(|k| {
                let txs = txs.clone();
                let apply: charter_pg::TxApply = Box::new(move |store, records, _| {
                    txs.fetch_add(1, Ordering::Relaxed);
                    // Read as the host's index reads its applied seq.
                    store.get("meta", "applied").map_err(|e| e.to_string())?;
                    let mut b = charter_store::Batch::default();
                    for r in records {
                        b.put("idx", &format!("{:012}", r.seq), r.event.kind());
                    }
                    let last = records.last().map_or(0, |r| r.seq);
                    b.put("meta", "applied", &last.to_string());
                    store.commit(&b).map_err(|e| e.to_string())
                });
                let node = charter_pg::Node {
                    store: "bench".into(),
                    name: format!("n{k}"),
                };
                Ok(Arc::new(PgLog::open_shared(&url, "bench", node, 0, apply)?))
            })
            .collect::<Result<_>>()?;
        let rate = appenders(&logs, threads, each);
        let steps = (threads * each) as f64;
        let per_tx = steps / txs.load(Ordering::Relaxed).max(1) as f64;
        if n == 1 {
            one = rate;
        }
        line.push_str(&format!(
            "{}{n} node{}: {rate:.0} ({:.2}x, {per_tx:.1} steps per transaction, {:.2} round trips per step)",
            if n == 1 { "" } else { "; " },
            if n == 1 { "" } else { "s" },
            rate / one,
            7.0 / per_tx
        ));
    }
    println!(
        "{:<44} {line}; the file log alone (no index) {file_steps:.0} ({threads} appenders, each step 4 events + its index rows in one transaction)",
        "postgres nodes durable steps/s"
    );
    Ok(())
}
