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

/// A filter column edited to hide a row from filtered reads (a plugin's
/// last activation from a node's look-up, say) is damage `verify` names at
/// the row's seq, though every frame and the chain are intact.
#[test]
fn a_filter_column_edited_to_hide_a_row_is_found_by_verify() {
    let Some(pg) = cluster() else { return };
    pg.create_db("columns").unwrap();
    let url = pg.url("columns");
    for name in ["kind", "plugin", "time"] {
        let log = PgLog::open(&url, name).unwrap();
        for i in 0..5 {
            log.append_blocking(vec![kv("p", i), kv("q", i)]).unwrap();
        }
        let v = charter_pg::verify(&url, name).unwrap();
        assert!(v.ok(), "{v:?}");
    }
    sql(
        &url,
        "UPDATE charter_events SET kind = 'hidden' WHERE log = 'kind' AND seq = 4",
    );
    sql(
        &url,
        "UPDATE charter_events SET plugin = NULL WHERE log = 'plugin' AND seq = 6",
    );
    sql(
        &url,
        "UPDATE charter_events SET time_ms = 1 WHERE log = 'time' AND seq = 3",
    );
    for (name, seq, column) in [
        ("kind", 4, "kind"),
        ("plugin", 6, "plugin"),
        ("time", 3, "time_ms"),
    ] {
        let v = charter_pg::verify(&url, name).unwrap();
        assert!(!v.ok(), "{name}: {v:?}");
        let f = &v.findings[0];
        assert_eq!(f.seq, Some(seq), "{name}: {f:?}");
        assert!(
            f.problem.contains(&format!("{column} column")),
            "{name}: {f:?}"
        );
    }
    // A frame edited before the column edit is the finding (the first
    // damage in seq order).
    sql(
        &url,
        "UPDATE charter_events SET frame = overlay(frame placing '\\x58'::bytea from 60 for 1) \
         WHERE log = 'kind' AND seq = 2",
    );
    let v = charter_pg::verify(&url, "kind").unwrap();
    assert_eq!(v.findings[0].seq, Some(2), "{v:?}");
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

/// A node's index: every record under `idx/<seq>`, the last applied seq
/// under `meta/applied`, refusing a gap (as the host's index does); an
/// event of plugin `poison` fails it.
fn counting_apply() -> charter_pg::TxApply {
    Box::new(|store, records, at| {
        let applied: u64 = store
            .get("meta", "applied")
            .map_err(|e| e.to_string())?
            .map_or(0, |v| v.parse().unwrap());
        if records[0].seq != applied + 1 {
            return Err(format!("gap: applied {applied}, got {}", records[0].seq));
        }
        assert_eq!(at, records.iter().map(|r| r.seq).collect::<Vec<_>>());
        if records.iter().any(|r| r.event.plugin() == Some("poison")) {
            return Err("the index refuses poison".into());
        }
        let mut b = charter_store::Batch::default();
        for r in records {
            b.put("idx", &format!("{:08}", r.seq), r.event.kind());
        }
        b.put("meta", "applied", &records.last().unwrap().seq.to_string());
        store.commit(&b).map_err(|e| e.to_string())
    })
}

fn node(name: &str) -> charter_pg::Node {
    charter_pg::Node {
        store: "acme".into(),
        name: name.into(),
    }
}

fn shared(url: &str, name: &str) -> PgLog {
    let applied = charter_pg::PgStore::open(url, "acme")
        .unwrap()
        .get("meta", "applied")
        .unwrap()
        .map_or(0, |v| v.parse().unwrap());
    PgLog::open_shared(url, "acme", node(name), applied, counting_apply()).unwrap()
}

/// Issue 17: three nodes append to one log at once. Their appends take
/// turns on one chain (it verifies whole), and each append's index rows
/// commit in its transaction: the index holds every seq exactly once,
/// with no gap, and its applied seq is the log's tail.
#[test]
fn nodes_append_to_one_chain_and_the_index_commits_with_each_append() {
    let Some(pg) = cluster() else { return };
    pg.create_db("nodes").unwrap();
    let url = pg.url("nodes");
    let nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| std::sync::Arc::new(shared(&url, n)))
        .collect();
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let log = nodes[t % 3].clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|i| log.append_blocking(vec![kv("p", i), kv("q", i)]).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=240).map(|i| i * 2).collect::<Vec<_>>());
    let v = charter_pg::verify(&url, "acme").unwrap();
    assert!(v.ok() && v.last_seq == 480, "{v:?}");
    let store = charter_pg::PgStore::open(&url, "acme").unwrap();
    assert_eq!(
        store.get("meta", "applied").unwrap().as_deref(),
        Some("480")
    );
    let idx = store.scan("idx").unwrap();
    assert_eq!(
        idx.iter()
            .map(|(k, _)| k.parse::<u64>().unwrap())
            .collect::<Vec<_>>(),
        (1..=480).collect::<Vec<_>>()
    );
    // Each node reads what the others wrote, and its tail follows theirs
    // (every append notifies the nodes listening).
    assert_eq!(nodes[1].read(1, &Filter::all()).unwrap().len(), 480);
    let started = std::time::Instant::now();
    while nodes.iter().any(|n| n.last_seq() != 480) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "tails: {:?}",
            nodes.iter().map(|n| n.last_seq()).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut watch = nodes[2].subscribe();
    nodes[0].append_blocking(vec![kv("p", 99)]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while *watch.borrow_and_update() < 481 {
                watch.changed().await.unwrap();
            }
        })
        .await
        .expect("node c saw node a's append")
    });
}

/// An index that fails refuses the append: the frames roll back with
/// it (nothing in the log the index has not seen), and the log goes on.
#[test]
fn a_failing_index_refuses_the_append_and_writes_nothing() {
    let Some(pg) = cluster() else { return };
    pg.create_db("poison").unwrap();
    let url = pg.url("poison");
    let log = shared(&url, "a");
    assert_eq!(log.append_blocking(vec![kv("p", 1)]).unwrap(), 1);
    let err = log
        .append_blocking(vec![kv("p", 2), kv("poison", 3)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("the index refuses poison"), "{err}");
    assert_eq!(log.append_blocking(vec![kv("p", 4)]).unwrap(), 2);
    let v = charter_pg::verify(&url, "acme").unwrap();
    assert!(v.ok() && v.last_seq == 2, "{v:?}");
    let store = charter_pg::PgStore::open(&url, "acme").unwrap();
    assert_eq!(store.get("meta", "applied").unwrap().as_deref(), Some("2"));
}

/// A node's name is one process's; a single writer and nodes exclude
/// each other.
#[test]
fn a_node_name_is_one_process_and_a_single_writer_excludes_nodes() {
    let Some(pg) = cluster() else { return };
    pg.create_db("names").unwrap();
    let url = pg.url("names");
    let a = shared(&url, "a");
    let err = PgLog::open_shared(&url, "acme", node("a"), 0, counting_apply())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node `a`") && err.contains("--node NAME"),
        "{err}"
    );
    let b = shared(&url, "b");
    let err = PgLog::open(&url, "acme").unwrap_err().to_string();
    assert!(err.contains("in use by another charter process"), "{err}");
    drop((a, b));
    let single = PgLog::open(&url, "acme").unwrap();
    let err = PgLog::open_shared(&url, "acme", node("c"), 0, counting_apply())
        .unwrap_err()
        .to_string();
    assert!(err.contains("writes it alone"), "{err}");
    drop(single);
    assert!(PgLog::open_shared(&url, "acme", node("a"), 0, counting_apply()).is_ok());
}

/// Issue 17's stale node: its own check of the lease passed (it read the
/// lease before it stalled), but another node claimed the run since. The
/// database refuses the append: the lease row is read and locked in the
/// transaction that would write it, and its token is no longer this
/// node's. Nothing is written.
#[test]
fn a_stale_nodes_append_is_refused_by_the_database() {
    let Some(pg) = cluster() else { return };
    pg.create_db("fence").unwrap();
    let url = pg.url("fence");
    let store = charter_pg::PgStore::open(&url, "acme").unwrap();
    let lease = |token: &str| {
        format!(r#"{{"holder":"node a pid 1 host 0","token":"{token}","expires_ms":1}}"#)
    };
    assert!(
        store
            .compare_and_swap("@leases", "run-1", None, Some(&lease("T1")))
            .unwrap()
    );
    let a = shared(&url, "a");
    let fence = |token: &str| charter_audit::Fence {
        ns: "@leases".into(),
        key: "run-1".into(),
        token: token.into(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ok = rt.block_on(a.append_guarded(
        vec![kv("p", 1)],
        charter_audit::Guard::fenced(|| Ok(()), fence("T1")),
    ));
    assert_eq!(ok.unwrap(), 1, "the holder appends");
    // Node b takes the run over (node a stalled past its lease).
    assert!(
        store
            .compare_and_swap("@leases", "run-1", Some(&lease("T1")), Some(&lease("T2")))
            .unwrap()
    );
    let stale = rt.block_on(a.append_guarded(
        vec![kv("p", 2), kv("p", 3)],
        charter_audit::Guard::fenced(|| Ok(()), fence("T1")),
    ));
    match stale {
        Err(charter_audit::LogError::Refused(e)) => {
            assert!(
                e.contains("@leases/run-1") && e.contains("another node"),
                "{e}"
            )
        }
        other => panic!("a stale node's append was not refused: {other:?}"),
    }
    // A released lease refuses as well; an unfenced append goes on.
    assert!(
        store
            .compare_and_swap("@leases", "run-1", Some(&lease("T2")), None)
            .unwrap()
    );
    let gone = rt.block_on(a.append_guarded(
        vec![kv("p", 4)],
        charter_audit::Guard::fenced(|| Ok(()), fence("T2")),
    ));
    assert!(
        matches!(gone, Err(charter_audit::LogError::Refused(_))),
        "{gone:?}"
    );
    assert_eq!(a.append_blocking(vec![kv("p", 5)]).unwrap(), 2);
    let v = charter_pg::verify(&url, "acme").unwrap();
    assert!(v.ok() && v.last_seq == 2, "{v:?}");
}

/// A node outlives a database restart: it connects again, takes its
/// locks again, and its next append goes on the same chain, with the
/// index still one with the log. (A single writer stops instead:
/// `a_database_restart_stops_the_writer_and_loses_nothing_acknowledged`.)
#[test]
fn a_node_reconnects_after_a_database_restart() {
    let Some(pg) = cluster() else { return };
    pg.create_db("reconnect").unwrap();
    let url = pg.url("reconnect");
    let log = shared(&url, "a");
    let store = charter_pg::PgStore::open(&url, "acme").unwrap();
    for i in 0..5 {
        assert_eq!(log.append_blocking(vec![kv("p", i)]).unwrap(), i + 1);
    }
    pg.restart().expect("restart the server");
    assert_eq!(log.append_blocking(vec![kv("p", 5)]).unwrap(), 6);
    // The store connects again too (the call that finds its connection
    // gone may fail; the next one goes through).
    let again = store
        .get("meta", "applied")
        .or_else(|_| store.get("meta", "applied"));
    assert_eq!(again.unwrap().as_deref(), Some("6"));
    assert_eq!(log.read(1, &Filter::all()).unwrap().len(), 6);
    // Its node name is still its own.
    let err = PgLog::open_shared(&url, "acme", node("a"), 0, counting_apply())
        .unwrap_err()
        .to_string();
    assert!(err.contains("node `a`"), "{err}");
    let v = charter_pg::verify(&url, "acme").unwrap();
    assert!(v.ok() && v.last_seq == 6, "{v:?}");
    let store = charter_pg::PgStore::open(&url, "acme").unwrap();
    assert_eq!(store.get("meta", "applied").unwrap().as_deref(), Some("6"));
}
