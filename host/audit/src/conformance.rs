//! The conformance suite every [`Log`] implementation must pass (the
//! shape of Restate's loglet smoke tests): a backend is correct when
//! [`suite`] passes, not when it looks right. The file log and the
//! in-memory log run it in this crate's tests; what only a file can do
//! (torn tails, damage) is tested beside the file format.
//!
//! Each check panics with what broke.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::{Event, Filter, Guard, Log, LogError, OnCommit, Record};

/// Opens the log under test at one location (a fresh location per
/// [`suite`] check): `applied` and `on_commit` as
/// [`EventLog::open_with`](crate::EventLog::open_with).
pub type Open<'a, L> = &'a dyn Fn(u64, OnCommit) -> Result<L, LogError>;

fn kv(plugin: &str, i: u64) -> Event {
    Event::KvWrite {
        auth: None,
        plugin: plugin.into(),
        key: format!("k{i}"),
        value: Some("v".into()),
        by: None,
        secrets: vec![],
    }
}

fn started(run: &str) -> Event {
    Event::RunStarted {
        auth: None,
        run: run.into(),
        workflow: "w".into(),
        workflow_digest: "sha256:00".into(),
        input: json!({"n": 1}),
        initiator: None,
        first: Some("a".into()),
        trigger: None,
        plugins: Default::default(),
    }
}

fn finished(run: &str) -> Event {
    Event::RunFinished {
        auth: None,
        run: run.into(),
        status: "completed".into(),
        output: None,
        error: None,
        by: None,
    }
}

/// What a commit callback saw.
type Seen = Arc<Mutex<Vec<(Record, u64)>>>;

fn recorder(seen: &Seen) -> OnCommit {
    let seen = seen.clone();
    Box::new(move |records, at| {
        let mut s = crate::lock(&seen);
        s.extend(records.iter().cloned().zip(at.iter().copied()));
        Ok(())
    })
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

/// Run every check; `fresh()` gives an opener for a new, empty location.
pub fn suite<L: Log, F: Fn(u64, OnCommit) -> Result<L, LogError>>(fresh: impl Fn() -> F) {
    append_read_filter_tail(&fresh());
    positions_read_back(&fresh());
    a_second_writer_is_refused(&fresh());
    reopen_replays_after_applied_and_reads_positions(&fresh());
    hostile_batches_are_refused_whole(&fresh());
    a_failed_guard_refuses_its_batch_alone(&fresh());
    a_panicking_callback_does_not_stop_the_log(&fresh());
    a_failing_callback_stops_the_log_until_reopened(&fresh());
    an_acknowledged_append_is_applied(&fresh());
    a_read_from_seq_before_time_holds_every_later_record(&fresh());
}

pub fn append_read_filter_tail<L: Log>(open: Open<'_, L>) {
    let log = open(0, Box::new(|_, _| Ok(()))).unwrap();
    assert_eq!(log.last_seq(), 0);
    assert!(log.read(1, &Filter::all()).unwrap().is_empty());
    let mut tail = log.subscribe();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let last = rt
        .block_on(log.append(vec![started("r1"), kv("p", 1), kv("q", 2)]))
        .unwrap();
    assert_eq!(last, 3, "append returns the batch's last seq");
    assert!(tail.has_changed().unwrap(), "subscribers see the new tail");
    assert_eq!(*tail.borrow_and_update(), 3);
    assert_eq!(log.append_blocking(vec![finished("r1")]).unwrap(), 4);
    // Enough records to cross several strides of a sparse index.
    for i in 0..300 {
        log.append_blocking(vec![kv("p", i), kv("q", i)]).unwrap();
    }
    assert_eq!(log.last_seq(), 604);
    let all = log.read(1, &Filter::all()).unwrap();
    assert_eq!(seqs(&all), (1..=604).collect::<Vec<_>>());
    assert!(all[2].end && !all[1].end && all[3].end, "batch ends marked");
    for from in [2, 64, 65, 66, 129, 300, 604] {
        let tail = log.read(from, &Filter::all()).unwrap();
        assert_eq!(seqs(&tail), (from..=604).collect::<Vec<_>>(), "from {from}");
    }
    assert!(log.read(605, &Filter::all()).unwrap().is_empty());
    let runs = log.read(1, &Filter::all().run("r1")).unwrap();
    assert_eq!(seqs(&runs), vec![1, 4]);
    let finishes = log.read(1, &Filter::all().kind("run-finished")).unwrap();
    assert_eq!(seqs(&finishes), vec![4]);
    let q = log.read(500, &Filter::all().plugin("q")).unwrap();
    assert!(
        q.iter()
            .all(|r| r.seq >= 500 && r.event.plugin() == Some("q"))
    );
    assert_eq!(q.len(), 53);
    assert!(
        log.read(1, &Filter::all().run("r1\0")).unwrap().is_empty(),
        "a hostile run id matches nothing"
    );
}

pub fn positions_read_back<L: Log>(open: Open<'_, L>) {
    let seen = Seen::default();
    let log = open(0, recorder(&seen)).unwrap();
    for i in 0..100 {
        log.append_blocking(vec![kv("p", i), started(&format!("r{i}"))])
            .unwrap();
    }
    let seen = crate::lock(&seen).clone();
    assert_eq!(seen.len(), 200, "the callback sees every committed record");
    let pick: Vec<&(Record, u64)> = seen.iter().step_by(37).collect();
    let at: Vec<u64> = pick.iter().map(|(_, a)| *a).collect();
    let read = log.read_at(&at).unwrap();
    assert_eq!(
        seqs(&read),
        pick.iter().map(|(r, _)| r.seq).collect::<Vec<_>>()
    );
    assert_eq!(read[1].event, pick[1].0.event);
    assert!(log.read_at(&[u64::MAX]).is_err(), "no record there");
}

pub fn a_second_writer_is_refused<L: Log>(open: Open<'_, L>) {
    let first = open(0, Box::new(|_, _| Ok(()))).unwrap();
    first.append_blocking(vec![kv("p", 1)]).unwrap();
    let err = open(0, Box::new(|_, _| Ok(()))).unwrap_err().to_string();
    assert!(err.contains("in use by another charter process"), "{err}");
    drop(first);
    let again = open(0, Box::new(|_, _| Ok(()))).unwrap();
    assert_eq!(again.append_blocking(vec![kv("p", 2)]).unwrap(), 2);
}

pub fn reopen_replays_after_applied_and_reads_positions<L: Log>(open: Open<'_, L>) {
    let seen = Seen::default();
    let log = open(0, recorder(&seen)).unwrap();
    for i in 0..10 {
        log.append_blocking(vec![kv("p", i), kv("p", i + 100)])
            .unwrap();
    }
    drop(log);
    let before = crate::lock(&seen).clone();
    let replayed = Seen::default();
    let log = open(13, recorder(&replayed)).unwrap();
    let replayed = crate::lock(&replayed).clone();
    assert_eq!(
        replayed.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(),
        (14..=20).collect::<Vec<_>>(),
        "opening hands the callback every record after the applied seq"
    );
    assert_eq!(
        replayed.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        before[13..].iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        "positions survive a reopen"
    );
    let at: Vec<u64> = before.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        seqs(&log.read_at(&at).unwrap()),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(log.last_seq(), 20);
    assert_eq!(log.append_blocking(vec![kv("p", 0)]).unwrap(), 21);
    assert_eq!(
        seqs(&log.read(19, &Filter::all()).unwrap()),
        vec![19, 20, 21]
    );
}

pub fn hostile_batches_are_refused_whole<L: Log>(open: Open<'_, L>) {
    let log = open(0, Box::new(|_, _| Ok(()))).unwrap();
    log.append_blocking(vec![kv("p", 1)]).unwrap();
    let big = Event::KvWrite {
        auth: None,
        plugin: "p".into(),
        key: "big".into(),
        value: Some("x".repeat(crate::MAX_PAYLOAD)),
        by: None,
        secrets: vec![],
    };
    let err = log.append_blocking(vec![kv("p", 2), big]).unwrap_err();
    assert!(matches!(err, LogError::Refused(_)), "{err}");
    let mut deep = json!(1);
    for _ in 0..crate::MAX_RECORD_DEPTH {
        deep = json!([deep]);
    }
    let mut too_deep = started("r");
    if let Event::RunStarted { input, .. } = &mut too_deep {
        *input = deep;
    }
    let err = log.append_blocking(vec![too_deep]).unwrap_err();
    assert!(matches!(err, LogError::Refused(_)), "{err}");
    assert_eq!(
        log.append_blocking(vec![kv("p", 3)]).unwrap(),
        2,
        "nothing of a refused batch was written"
    );
    assert_eq!(log.read(1, &Filter::all()).unwrap().len(), 2);
}

/// A guarded append whose precondition fails writes nothing and leaves
/// the log usable; a passing one appends as usual; a panicking one is a
/// refusal.
pub fn a_failed_guard_refuses_its_batch_alone<L: Log>(open: Open<'_, L>) {
    let log = open(0, Box::new(|_, _| Ok(()))).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ok = rt.block_on(log.append_guarded(vec![kv("p", 1)], Guard::new(|| Ok(()))));
    assert_eq!(ok.unwrap(), 1);
    let no = rt.block_on(log.append_guarded(
        vec![kv("p", 2), kv("p", 3)],
        Guard::new(|| Err("the lease is gone".into())),
    ));
    match no {
        Err(LogError::Refused(e)) => assert!(e.contains("the lease is gone"), "{e}"),
        other => panic!("not refused: {other:?}"),
    }
    let boom = rt.block_on(log.append_guarded(vec![kv("p", 4)], Guard::new(|| panic!("guard"))));
    assert!(matches!(boom, Err(LogError::Refused(_))), "{boom:?}");
    assert_eq!(log.append_blocking(vec![kv("p", 5)]).unwrap(), 2);
    assert_eq!(seqs(&log.read(1, &Filter::all()).unwrap()), vec![1, 2]);
}

pub fn a_panicking_callback_does_not_stop_the_log<L: Log>(open: Open<'_, L>) {
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let log = open(
        0,
        Box::new(move |_, _| {
            let mut n = crate::lock(&c);
            *n += 1;
            if *n == 2 {
                drop(n);
                panic!("a callback bug (test)");
            }
            Ok(())
        }),
    )
    .unwrap();
    log.append_blocking(vec![kv("p", 1)]).unwrap();
    // The callback panics while the writer is held: the records are on
    // disk, the panic is caught, no lock is poisoned.
    assert_eq!(log.append_blocking(vec![kv("p", 2)]).unwrap(), 2);
    assert_eq!(log.append_blocking(vec![kv("p", 3)]).unwrap(), 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(log.append(vec![kv("p", 4)])).unwrap(), 4);
    assert_eq!(*crate::lock(&calls), 4);
    assert_eq!(log.read(1, &Filter::all()).unwrap().len(), 4);
}

pub fn a_failing_callback_stops_the_log_until_reopened<L: Log>(open: Open<'_, L>) {
    let log = open(
        0,
        Box::new(|records, _| {
            if records.iter().any(|r| r.seq == 2) {
                Err("index write failed (test)".into())
            } else {
                Ok(())
            }
        }),
    )
    .unwrap();
    log.append_blocking(vec![kv("p", 1)]).unwrap();
    let err = log.append_blocking(vec![kv("p", 2)]).unwrap_err();
    assert!(err.to_string().contains("index write failed"), "{err}");
    let err = log.append_blocking(vec![kv("p", 3)]).unwrap_err();
    assert!(
        err.to_string().contains("index write failed"),
        "the log stays stopped: {err}"
    );
    drop(log);
    // The failed batch is on disk; the next opener re-applies it.
    let seen = Seen::default();
    let log = open(1, recorder(&seen)).unwrap();
    assert_eq!(
        crate::lock(&seen)
            .iter()
            .map(|(r, _)| r.seq)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(log.append_blocking(vec![kv("p", 3)]).unwrap(), 3);
}

/// Whoever gets an append's seq back can read it through the index: the
/// callback has every record of that append before the acknowledgement,
/// with many appenders at once (the file log applies on its own thread,
/// one round behind the writer). And the callback gets every record once,
/// in order: each call begins where the last one ended.
pub fn an_acknowledged_append_is_applied<L: Log>(open: Open<'_, L>) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let applied = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicBool::new(false));
    let (a, o) = (applied.clone(), out_of_order.clone());
    let log = open(
        0,
        Box::new(move |records, _| {
            // Slow enough that rounds queue up behind it.
            std::thread::sleep(std::time::Duration::from_micros(200));
            // A panic here would be caught by the log: record the fault.
            let first = records.first().map_or(0, |r| r.seq);
            let in_order = records.windows(2).all(|w| w[1].seq == w[0].seq + 1);
            if first != a.load(Ordering::SeqCst) + 1 || !in_order {
                o.store(true, Ordering::SeqCst);
            }
            let last = records.last().map_or(0, |r| r.seq);
            a.store(last, Ordering::SeqCst);
            Ok(())
        }),
    )
    .unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (log, applied) = (&log, &applied);
            scope.spawn(move || {
                for i in 0..25 {
                    let seq = log.append_blocking(vec![kv("p", t * 100 + i)]).unwrap();
                    let seen = applied.load(Ordering::SeqCst);
                    assert!(seen >= seq, "seq {seq} acknowledged, only {seen} applied");
                }
            });
        }
    });
    assert_eq!(log.last_seq(), 200);
    assert_eq!(applied.load(Ordering::SeqCst), 200);
    assert!(
        !out_of_order.load(Ordering::SeqCst),
        "the callback got records twice, out of order or with a gap"
    );
}

/// [`Log::seq_before_time`] may start a window early (1 is always right)
/// but never late: a read from it holds every record written at or after
/// the time, for every time the log's records carry and beyond them.
pub fn a_read_from_seq_before_time_holds_every_later_record<L: Log>(open: Open<'_, L>) {
    let log = open(0, Box::new(|_, _| Ok(()))).unwrap();
    let empty = log.seq_before_time(crate::now_ms()).unwrap();
    assert_eq!(empty, 1, "an empty log starts at 1");
    for batch in 0..4 {
        for i in 0..40 {
            log.append_blocking(vec![kv("p", batch * 100 + i)]).unwrap();
        }
        // Distinct times between batches.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let all = log.read(1, &Filter::all()).unwrap();
    let last = log.last_seq();
    let mut times: Vec<u64> = all.iter().map(|r| r.time_ms).collect();
    times.extend([
        0,
        all[0].time_ms.saturating_sub(1),
        crate::now_ms() + 60_000,
        u64::MAX,
    ]);
    times.extend(all.iter().map(|r| r.time_ms + 1));
    times.sort_unstable();
    times.dedup();
    for t in times {
        let from = log.seq_before_time(t).unwrap();
        assert!(
            from >= 1 && from <= last + 1,
            "seq_before_time({t}) = {from}, last {last}"
        );
        if let Some(missed) = all.iter().find(|r| r.time_ms >= t && r.seq < from) {
            panic!(
                "seq_before_time({t}) = {from} skips seq {} written at {}",
                missed.seq, missed.time_ms
            );
        }
    }
}
