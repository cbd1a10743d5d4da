//! The PostgreSQL log against the conformance suite every log passes, and
//! what only a shared database adds: rows an intruder edits, and an
//! auditor's export through SQL alone.

use std::sync::atomic::{AtomicU32, Ordering};

use charter_audit::{Event, Filter, Log};
use charter_pg::{Cluster, PgLog};
use charter_store::Store;

fn cluster() -> Option<Cluster> {
    Cluster::for_tests()
}

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

#[test]
fn the_postgres_log_passes_the_log_conformance_suite() {
    let Some(pg) = cluster() else { return };
    pg.create_db("conformance").unwrap();
    let url = pg.url("conformance");
    let n = AtomicU32::new(0);
    charter_audit::conformance::suite(|| {
        // A fresh log name per check: a new, empty location.
        let name = format!("log{}", n.fetch_add(1, Ordering::SeqCst));
        let url = url.clone();
        move |applied, on_commit| PgLog::open_with(&url, &name, applied, on_commit)
    });
}

/// On PostgreSQL `seq_before_time` is exact: the least seq written at or
/// after the time (migration 3's index), not the safe but useless 1, so
/// a quota's start-up reads only its window.
#[test]
fn seq_before_time_is_the_first_seq_of_the_window() {
    let Some(pg) = cluster() else { return };
    pg.create_db("time_window").unwrap();
    let url = pg.url("time_window");
    let log = PgLog::open_with(&url, "w", 0, Box::new(|_, _| Ok(()))).unwrap();
    for i in 0..30 {
        log.append_blocking(vec![kv("p", i)]).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    for i in 30..60 {
        log.append_blocking(vec![kv("p", i)]).unwrap();
    }
    let all = log.read(1, &Filter::all()).unwrap();
    for r in &all {
        let want = all
            .iter()
            .filter(|x| x.time_ms >= r.time_ms)
            .map(|x| x.seq)
            .min()
            .unwrap();
        assert_eq!(
            log.seq_before_time(r.time_ms).unwrap(),
            want,
            "at {}",
            r.time_ms
        );
    }
    let later = all.last().unwrap().time_ms + 1;
    assert_eq!(
        log.seq_before_time(later).unwrap(),
        61,
        "none after: one past the last"
    );
    assert_eq!(log.seq_before_time(0).unwrap(), 1);
    assert_eq!(log.seq_before_time(u64::MAX).unwrap(), 61);
}

/// Run `sql` on the database at `url`.
fn sql(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let h = tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = h.await;
    });
}

fn frames(url: &str, log: &str) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let h = tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT frame FROM charter_events WHERE log = $1 ORDER BY seq",
                &[&log],
            )
            .await
            .unwrap();
        drop(client);
        let _ = h.await;
        rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect()
    })
}

#[test]
fn an_auditors_sql_export_verifies_and_edited_rows_are_caught() {
    let Some(pg) = cluster() else { return };
    pg.create_db("audit").unwrap();
    let url = pg.url("audit");
    let log = PgLog::open(&url, "acme").unwrap();
    for i in 0..20 {
        log.append_blocking(vec![kv("p", i), kv("q", i)]).unwrap();
    }
    // The export: the frames in seq order after the log magic are a log
    // file that the file log's verification accepts.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.log");
    let mut file = charter_audit::LOG_MAGIC.to_vec();
    for f in frames(&url, "acme") {
        file.extend_from_slice(&f);
    }
    std::fs::write(&path, &file).unwrap();
    let v = charter_audit::verify(&path).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.last_seq, 40);

    // An intruder with SQL access edits a payload byte: reads refuse the
    // row, naming it, and the export no longer verifies.
    sql(
        &url,
        "UPDATE charter_events SET frame = overlay(frame placing '\\x58'::bytea from 60 for 1) \
         WHERE log = 'acme' AND seq = 7",
    );
    let err = log.read(1, &Filter::all()).unwrap_err().to_string();
    assert!(
        err.contains("seq 7") && err.contains("hash mismatch"),
        "{err}"
    );
    let mut file = charter_audit::LOG_MAGIC.to_vec();
    for f in frames(&url, "acme") {
        file.extend_from_slice(&f);
    }
    std::fs::write(&path, &file).unwrap();
    assert!(!charter_audit::verify(&path).unwrap().ok());

    // Editing a filter column alone does not make a row match a filter its
    // frame does not: the decoded event is checked.
    sql(
        &url,
        "UPDATE charter_events SET plugin = 'q' WHERE log = 'acme' AND seq = 9",
    );
    let q = log.read(8, &Filter::all().plugin("q")).unwrap();
    assert!(q.iter().all(|r| r.event.plugin() == Some("q")));
    assert!(!q.iter().any(|r| r.seq == 9));

    // Deleting a row breaks the chain a contiguous read checks.
    sql(
        &url,
        "DELETE FROM charter_events WHERE log = 'acme' AND seq = 12",
    );
    let err = log.read(10, &Filter::all()).unwrap_err().to_string();
    assert!(err.contains("chain broken"), "{err}");
}

#[test]
fn a_second_writer_in_another_process_is_refused() {
    let Some(pg) = cluster() else { return };
    pg.create_db("writers").unwrap();
    let url = pg.url("writers");
    let first = PgLog::open(&url, "acme").unwrap();
    first.append_blocking(vec![kv("p", 1)]).unwrap();
    // Another log name in the same database is another deployment.
    let other = PgLog::open(&url, "globex").unwrap();
    assert_eq!(other.append_blocking(vec![kv("p", 1)]).unwrap(), 1);
    let err = PgLog::open(&url, "acme").unwrap_err().to_string();
    assert!(err.contains("in use by another charter process"), "{err}");
    assert_eq!(first.last_seq(), 1);
}

/// Appends from many threads at once are committed in groups (one
/// transaction for all that wait): every appender gets its own seq, the
/// chain is whole, and a refused batch in a group is refused alone.
#[test]
fn concurrent_appends_commit_in_groups_and_a_bad_batch_is_refused_alone() {
    let Some(pg) = cluster() else { return };
    pg.create_db("groups").unwrap();
    let url = pg.url("groups");
    let log = std::sync::Arc::new(PgLog::open(&url, "acme").unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut seqs = vec![];
                for i in 0..25 {
                    if t == 3 && i == 10 {
                        let big = Event::KvWrite {
                            auth: None,
                            plugin: "p".into(),
                            key: "big".into(),
                            value: Some("x".repeat(charter_audit::MAX_PAYLOAD)),
                            by: None,
                            secrets: vec![],
                        };
                        let err = log.append_blocking(vec![kv("p", 0), big]).unwrap_err();
                        assert!(matches!(err, charter_audit::LogError::Refused(_)), "{err}");
                    }
                    seqs.push(log.append_blocking(vec![kv("p", i), kv("q", i)]).unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=400).map(|i| i * 2).collect::<Vec<_>>(),
        "each batch of two got its own last seq"
    );
    let read = log.read(1, &Filter::all()).unwrap();
    assert_eq!(read.len(), 800);
    assert!(read.iter().all(|r| r.event.kind() == "kv-write"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.log");
    let mut file = charter_audit::LOG_MAGIC.to_vec();
    for f in frames(&url, "acme") {
        file.extend_from_slice(&f);
    }
    std::fs::write(&path, &file).unwrap();
    assert!(charter_audit::verify(&path).unwrap().ok());
}

#[test]
fn the_postgres_store_passes_the_store_conformance_suite() {
    let Some(pg) = cluster() else { return };
    pg.create_db("state").unwrap();
    let url = pg.url("state");
    let s = charter_pg::PgStore::open(&url, "acme").unwrap();
    charter_store::conformance(&s);
    // Another store in the same database is another deployment's.
    let other = charter_pg::PgStore::open(&url, "globex").unwrap();
    assert_eq!(other.get("a", "k1").unwrap(), None);
    assert_eq!(s.get("a", "k1").unwrap().as_deref(), Some("v1b"));
    // What was written is there for the next opener (another node).
    drop(s);
    let again = charter_pg::PgStore::open(&url, "acme").unwrap();
    assert_eq!(again.get("d", "k2").unwrap().as_deref(), Some("v2"));
    // Two nodes racing for one lease: exactly one wins.
    let nodes: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = charter_pg::PgStore::open(&url, "acme").unwrap();
                s.compare_and_swap("@leases", "run-1", None, Some(&format!("node-{i}")))
                    .unwrap()
            })
        })
        .collect();
    let won = nodes
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&won| won)
        .count();
    assert_eq!(won, 1, "one lease holder");
}

/// The database restarted under a writer (a crash: every session cut):
/// the next append fails with the error naming the fix, and so does
/// every append after it (the writer lock went with the session, so the
/// writer stops rather than reconnect into a log another may now write).
/// Nothing acknowledged is lost: the next opener finds every acknowledged
/// batch and appends after it; the reads of the dead writer fail instead
/// of answering from nothing.
#[test]
fn a_database_restart_stops_the_writer_and_loses_nothing_acknowledged() {
    let Some(pg) = cluster() else { return };
    pg.create_db("restart").unwrap();
    let url = pg.url("restart");
    let log = PgLog::open(&url, "acme").unwrap();
    for i in 0..5 {
        assert_eq!(log.append_blocking(vec![kv("p", i)]).unwrap(), i + 1);
    }
    pg.restart().expect("restart the server");
    let err = log
        .append_blocking(vec![kv("p", 99)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("connection to PostgreSQL was lost"), "{err}");
    assert!(err.contains("Restart charter"), "{err}");
    let again = log
        .append_blocking(vec![kv("p", 100)])
        .unwrap_err()
        .to_string();
    assert!(
        again.contains("connection to PostgreSQL was lost"),
        "{again}"
    );
    assert!(
        log.read(1, &Filter::all()).is_err(),
        "no answer from a dead session"
    );
    drop(log);
    let reopened = PgLog::open(&url, "acme").unwrap();
    let records = reopened.read(1, &Filter::all()).unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "every acknowledged append, nothing of the failed ones"
    );
    assert_eq!(reopened.append_blocking(vec![kv("p", 6)]).unwrap(), 6);
    let v = charter_pg::verify(&url, "acme").unwrap();
    assert!(v.ok() && v.last_seq == 6, "{v:?}");
}
