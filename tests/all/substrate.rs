//! The durable substrate under a host: the index stops the host when it
//! cannot follow the log and catches up on restart, a run's records are
//! read through the per-run index, and a run's lease keeps a second
//! driver out.

use std::sync::{Arc, Mutex};

use charter_audit::{Event, read_records};
use charter_runtime::index;
use charter_runtime::workflow::state::from_records;
use charter_runtime::workflow::status;
use charter_runtime::{Host, HostOptions};
use charter_store::{Batch, MemStore, Store, StoreError};
use serde_json::json;

use crate::support::*;
use crate::workflow::refunds_deployment;

/// A store whose commits fail while `fail` is set (a full disk), and
/// whose compare-and-swaps writing a lease of holder `stall` fail (that
/// driver's process is stalled: its renewals do not reach the store).
#[derive(Default)]
struct Flaky {
    inner: MemStore,
    fail: Mutex<bool>,
    stall: Mutex<Option<String>>,
}

impl Store for Flaky {
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.get(ns, key)
    }
    fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set(ns, key, value)
    }
    fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(ns, key)
    }
    fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(ns, prefix)
    }
    fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.scan(ns)
    }
    fn scan_prefix(&self, ns: &str, p: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.scan_prefix(ns, p)
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if *self.fail.lock().unwrap() {
            return Err(StoreError::Refused(
                "no space left on device (injected)".into(),
            ));
        }
        self.inner.commit(batch)
    }
    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StoreError> {
        if let (Some(h), Some(new)) = (&*self.stall.lock().unwrap(), new)
            && new.contains(h.as_str())
        {
            return Err(StoreError::Refused("stalled (injected)".into()));
        }
        self.inner.compare_and_swap(ns, key, old, new)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

fn input(order: &str) -> serde_json::Value {
    json!({"order_id": order, "amount_cents": 700, "reason": "late"})
}

#[test]
fn a_failed_index_write_stops_the_host_and_a_restart_re_applies() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let store = Arc::new(Flaky::default());
    let open = || {
        Host::new(
            refunds_deployment(dir.path()),
            HostOptions {
                store: Some(store.clone()),
                ..Default::default()
            },
        )
        .expect("host")
    };
    let h = open();
    let st = rt
        .block_on(h.run_workflow("refund", input("A-1"), Some("carol")))
        .unwrap();
    assert_eq!(st.status, status::COMPLETED, "{st:?}");
    *store.fail.lock().unwrap() = true;
    let err = rt
        .block_on(h.run_workflow("refund", input("A-2"), Some("carol")))
        .unwrap_err()
        .to_string();
    let state = dir.path().join("data").join("state");
    for needle in [
        "no space left on device (injected)",
        "The host stops",
        &state.display().to_string(),
        "Restart the host",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    // Stopped: nothing more is taken, even once the disk is fine again.
    *store.fail.lock().unwrap() = false;
    let again = rt
        .block_on(h.run_workflow("refund", input("A-3"), Some("carol")))
        .unwrap_err()
        .to_string();
    assert!(again.contains("The host stops"), "{again}");
    let last = read_records(h.log().path()).unwrap().last().unwrap().seq;
    assert!(index::applied_seq(&*store) < last);
    drop(h);
    // The restart re-applies what the index missed: the second run exists.
    let h = open();
    assert_eq!(index::applied_seq(&*store), last);
    let runs = h.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = runs.iter().find(|r| r.input["order_id"] == "A-2").unwrap();
    assert_eq!(second.status, status::RUNNING);
    let done = rt.block_on(h.drive(&second.id)).unwrap();
    assert_eq!(done.status, status::COMPLETED, "{done:?}");
}

#[test]
fn a_run_leased_to_another_driver_is_not_driven() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let h = Host::new(refunds_deployment(dir.path()), HostOptions::default()).unwrap();
    let st = rt
        .block_on(h.start_run("refund", input("B-1"), Some("carol")))
        .unwrap();
    // Another driver (another host on a shared store) holds the run.
    let other = index::claim_run(h.store(), &st.id, "another host", 60_000)
        .unwrap()
        .expect("free");
    assert!(h.claim_run(&st.id).unwrap().is_none());
    let untouched = rt.block_on(h.drive(&st.id)).unwrap();
    assert_eq!(untouched.status, status::RUNNING);
    assert!(untouched.history.is_empty(), "{untouched:?}");
    assert!(
        rt.block_on(h.resume_runs())
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|s| s.history.is_empty()))
    );
    drop(other);
    let done = rt.block_on(h.drive(&st.id)).unwrap();
    assert_eq!(done.status, status::COMPLETED, "{done:?}");
    assert!(index::lease(&**h.store(), &st.id).is_none(), "released");
    // A lease left by a process that died (killed while driving) does not
    // outlive it: the data directory's lock proves no one else drives.
    let st = rt
        .block_on(h.start_run("refund", input("B-2"), Some("carol")))
        .unwrap();
    let dead = index::Lease {
        holder: "a killed process".into(),
        token: "t".into(),
        expires_ms: u64::MAX,
    };
    h.store()
        .set(
            index::LEASES,
            &st.id,
            &serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
    drop(h);
    let h = Host::new(refunds_deployment(dir.path()), HostOptions::default()).unwrap();
    let done = rt.block_on(h.drive(&st.id)).unwrap();
    assert_eq!(done.status, status::COMPLETED, "{done:?}");
}

#[test]
fn a_runs_records_through_the_index_are_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let data = dir.path().join("data");
    let (run, other) = {
        let h = Host::new(refunds_deployment(dir.path()), HostOptions::default()).unwrap();
        let big = json!({"order_id": "C-1", "amount_cents": 200_000, "reason": "lost"});
        let st = rt
            .block_on(h.run_workflow("refund", big, Some("carol")))
            .unwrap();
        assert_eq!(st.status, status::WAITING_APPROVAL, "{st:?}");
        let other = rt
            .block_on(h.run_workflow("refund", input("C-2"), Some("dan")))
            .unwrap();
        let p = st.proposal.clone().unwrap();
        let d = rt.block_on(h.decide(&p, "bob", true, None)).unwrap();
        assert_eq!(d.run.unwrap().status, status::COMPLETED);
        // While a host holds the deployment, readers fall back to the log.
        assert!(index::run_records_offline(&data, &st.id).is_none());
        let through_host: Vec<u64> = h
            .records_of_run(&st.id)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        (st.id, (other.id, through_host))
    };
    let (other, through_host) = other;
    let all = read_records(&data.join(charter_audit::LOG_FILE)).unwrap();
    let mine = index::run_records_offline(&data, &run).expect("index usable");
    assert_eq!(
        mine.iter().map(|r| r.seq).collect::<Vec<_>>(),
        through_host,
        "the host and a read-only command read the same records"
    );
    // The run folds the same from its own records as from the whole log,
    // decisions included, and nothing of the other run is among them.
    let fold = |records: &[charter_audit::Record]| {
        let st = from_records(records)
            .0
            .into_iter()
            .find(|r| r.id == run)
            .unwrap();
        serde_json::to_value(st).unwrap()
    };
    assert_eq!(fold(&mine), fold(&all));
    assert!(
        mine.iter()
            .any(|r| matches!(r.event, Event::ApprovalDecision { .. }))
    );
    assert!(
        mine.iter()
            .any(|r| matches!(r.event, Event::CallResult { .. }))
    );
    assert!(mine.iter().all(|r| r.event.run() != Some(other.as_str())));
    assert!(
        index::run_records_offline(&data, "no-such-run")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_driver_whose_lease_was_taken_over_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let store = Arc::new(Flaky::default());
    let h = Host::new(
        refunds_deployment(dir.path()),
        HostOptions {
            store: Some(store.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let st = rt
        .block_on(h.start_run("refund", input("D-1"), Some("carol")))
        .unwrap();
    let store_dyn: Arc<dyn Store> = store.clone();
    // Driver A claims the run, then stalls: its renewals never reach the
    // store, and its short lease expires.
    let a = index::claim_run(&store_dyn, &st.id, "driver-A", 150)
        .unwrap()
        .expect("free");
    *store.stall.lock().unwrap() = Some("driver-A".into());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Driver B takes the run over.
    let b = index::claim_run(&store_dyn, &st.id, "driver-B", 60_000)
        .unwrap()
        .expect("A's lease expired: B takes over");
    // A wakes up and commits its step: refused, and nothing is appended.
    *store.stall.lock().unwrap() = None;
    let before = h.log().last_seq();
    let err = rt
        .block_on(h.drive_claimed(h.run(&st.id).unwrap(), true, &a))
        .unwrap_err();
    assert!(
        matches!(err, charter_runtime::workflow::RunError::LeaseLost(_)),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("no longer holds the run's lease"), "{msg}");
    assert!(msg.contains(&st.id), "{msg}");
    assert_eq!(h.log().last_seq(), before, "nothing of A's step appended");
    assert!(!a.held());
    assert_eq!(index::lease(&*store, &st.id).unwrap().holder, "driver-B");
    assert!(
        read_records(h.log().path())
            .unwrap()
            .iter()
            .all(|r| !matches!(r.event, Event::StepAttempt { .. })),
        "no attempt of the run recorded"
    );
    // A's guard going away does not release B's lease.
    drop(a);
    assert_eq!(index::lease(&*store, &st.id).unwrap().holder, "driver-B");
    // Once B lets go, the run is driven to its end, once.
    drop(b);
    let done = rt.block_on(h.drive(&st.id)).unwrap();
    assert_eq!(done.status, status::COMPLETED, "{done:?}");
    let attempts = read_records(h.log().path())
        .unwrap()
        .iter()
        .filter(|r| matches!(r.event, Event::StepAttempt { .. }))
        .count();
    assert_eq!(attempts, done.history.len(), "{done:?}");
}
