//! Run timers of a long-running host (`charter up`): due retries and
//! proposal expiries fire on time, with no command. An expiry is recorded
//! (`proposal-resolved`, status `expired`, once) before the run waiting
//! on it goes on.
//!
//! The queue holds, for each run that waits on the clock, the time it is
//! next due: a run waiting to retry at its `retry_at_ms`, a run waiting on
//! a pending proposal at the proposal's expiry, a run that can go on now
//! at once. Every drive of the host reports the state it left its run in
//! ([`Host::timers_note`], called when a drive ends, whoever drove it:
//! the API's start, an approval, an escalation's resolution, the timers
//! themselves), so the queue learns of every change and its task is woken
//! early when an earlier deadline arrives. At start every run that has not
//! ended is queued from the state index.
//!
//! Drives are concurrent and bounded: a due run is driven in its own task
//! holding one of `max_steps_in_flight` permits. With timers running a
//! drive does not sleep until a retry is due: it returns (releasing its
//! permit and the run's lease) and the run is queued at its retry time, so
//! a retry's wait holds no worker. A run another driver holds is skipped:
//! that driver reports it when it ends.
//!
//! An escalation is queued at its step's `escalation_deadline_ms`, if it
//! declares one; at that time the timers fail the run (by `deadline`)
//! unless people resolved it first (`Host::deadline_if_due`).
//!
//! **Several nodes** (a deployment on PostgreSQL): a node's queue holds
//! only what it started or drove, so every [`ADOPT_EVERY`] it also queues
//! each run that has not ended and that it does not have queued, and a
//! run another driver holds is queued again at that driver's lease
//! expiry instead of being left to it. So the runs of a node that died
//! move on once its leases expire (at most `[deployment] run_lease`
//! after its last renewal), on whichever node claims each first; a live
//! node's renewed lease just sends the others back to wait.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use charter_audit::now_ms;
use tracing::Instrument;

use super::engine::Env;
use super::{RunError, RunState, RunStatus};
use crate::{Host, index};

/// How often a node of a shared deployment looks for runs to adopt (see
/// the module docs).
pub const ADOPT_EVERY: Duration = Duration::from_secs(2);

/// How long a run whose drive failed on the log or the store (a database
/// that restarted or failed over, a full disk) waits before it is driven
/// again: long enough not to spin, short enough that a failover the log
/// rode out holds no run up for long.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// When a run that stopped in state `st` (told `env`) should be driven
/// again, if the clock is what it waits for: `None` for a run that ended,
/// is escalated without a deadline (people resolve it) or waits on a proposal without expiry.
pub fn next_deadline(st: &RunState, env: &Env) -> Option<u64> {
    match st.status {
        s if s.is_terminal() => None,
        RunStatus::Escalated => env.escalation_due_ms,
        RunStatus::RetryWait => Some(st.retry_at_ms.unwrap_or(env.now_ms)),
        RunStatus::WaitingApproval => match &env.proposal {
            _ if env.wait_is_over() => Some(env.now_ms),
            Some(p) => Some(p.expires_at_ms),
            None => Some(env.now_ms),
        },
        _ => Some(st.retry_at_ms.unwrap_or(env.now_ms)),
    }
}

/// The queue of due times, shared by the host (which reports into it) and
/// the timers' task (which drives from it).
#[derive(Debug, Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    by_time: BTreeSet<(u64, String)>,
    by_run: HashMap<String, u64>,
}

impl Queue {
    /// Queue `run` at `due` (replacing its earlier time), or take it off
    /// the queue (`None`); wake the task if the earliest time moved.
    pub fn set(&self, run: &str, due: Option<u64>) {
        let mut q = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let first = q.by_time.first().map(|(t, _)| *t);
        if let Some(old) = q.by_run.remove(run) {
            q.by_time.remove(&(old, run.to_string()));
        }
        if let Some(t) = due {
            q.by_run.insert(run.to_string(), t);
            q.by_time.insert((t, run.to_string()));
        }
        let now_first = q.by_time.first().map(|(t, _)| *t);
        drop(q);
        if now_first.is_some() && now_first != first {
            self.wake.notify_one();
        }
    }

    /// The runs due at `now`, taken off the queue, and the next time after.
    fn take_due(&self, now: u64) -> (Vec<String>, Option<u64>) {
        let mut q = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        while let Some((t, _)) = q.by_time.first()
            && *t <= now
        {
            let (_, run) = q.by_time.pop_first().expect("first");
            q.by_run.remove(&run);
            due.push(run);
        }
        (due, q.by_time.first().map(|(t, _)| *t))
    }

    /// Runs queued.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_run
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `run` is due, if queued.
    pub fn due(&self, run: &str) -> Option<u64> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_run
            .get(run)
            .copied()
    }
}

impl Host {
    /// Start this host's run timers (once; later calls return `None`):
    /// every run that has not ended is queued, and a task drives each when
    /// it is due, at most `max_steps_in_flight` at once. Needs a tokio
    /// runtime; the task ends when the runtime does.
    pub fn start_timers(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let queue = Arc::new(Queue::default());
        self.timers.set(queue.clone()).ok()?;
        for st in self.live_runs() {
            self.timers_note(&st);
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.services.max_steps_in_flight.max(1) as usize,
        ));
        if self.shared_log() {
            let host = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut following: Option<tokio::task::JoinHandle<()>> = None;
                loop {
                    tokio::time::sleep(ADOPT_EVERY).await;
                    let Some(h) = host.upgrade() else { return };
                    // A scan of the store: off the async workers.
                    let scan = h.clone();
                    let _ = tokio::task::spawn_blocking(move || scan.adopt_runs()).await;
                    // Versions other nodes activated serve here too: in a
                    // task of its own, so a compile or a push holding the
                    // push lock does not hold up the next adoption pass;
                    // one at a time (a slow one is not stacked on).
                    if following.as_ref().is_none_or(|f| f.is_finished()) {
                        following = Some(tokio::spawn(async move { h.follow_activations().await }));
                    }
                }
            });
        }
        let host = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                let (due, next) = queue.take_due(now_ms());
                for id in due {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let Some(h) = host.upgrade() else { return };
                    tokio::spawn(async move {
                        h.drive_due(&id).await;
                        drop(permit);
                    });
                }
                let sleep = match next {
                    Some(t) => Duration::from_millis(t.saturating_sub(now_ms()).max(1)),
                    None => Duration::from_secs(3600),
                };
                tokio::select! {
                    _ = queue.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
                if host.strong_count() == 0 {
                    return;
                }
            }
        }))
    }

    /// Queue every run that has not ended and is not queued here (a
    /// shared deployment: runs other nodes started, or drove and died
    /// with). Claiming decides who drives each.
    fn adopt_runs(&self) {
        let Some(q) = self.timers.get() else { return };
        if self.drain.stopping() {
            return;
        }
        self.note_alive();
        for st in self.live_runs() {
            if q.due(&st.id).is_none() {
                self.timers_note(&st);
            }
        }
    }

    /// The timers' queue, once started.
    pub fn timers(&self) -> Option<&Queue> {
        self.timers.get().map(|q| &**q)
    }

    /// Tell the timers (if running) where run `st` stands now.
    pub(crate) fn timers_note(&self, st: &RunState) {
        if let Some(q) = self.timers.get() {
            q.set(&st.id, next_deadline(st, &self.env(st)));
        }
    }

    /// Drive run `id` soon: through the timers when they run (bounded),
    /// in a task of its own otherwise.
    pub fn drive_soon(self: &Arc<Self>, id: &str) {
        match self.timers.get() {
            Some(q) => q.set(id, Some(now_ms())),
            None => {
                let (h, id) = (self.clone(), id.to_string());
                tokio::spawn(async move {
                    if let Err(e) = h.drive(&id).await {
                        tracing::warn!(run = %id, error = %e, "driving the run failed");
                    }
                });
            }
        }
    }

    /// Drive run `id` because it is due: claim it first, then read its
    /// state (so the state is the last holder's final one), drive it until
    /// it stops or waits, and queue it at its next deadline.
    async fn drive_due(&self, id: &str) {
        // A stopping host starts no drive (the run is resumed at the next
        // start, and is not queued again, so the timers do not spin), and
        // every drive it makes is counted, so SIGTERM waits for its step.
        if self.drain.stopping() {
            return;
        }
        let _driving = self.drain.enter();
        let lease = match self.claim_run(id) {
            Ok(Some(l)) => l,
            // Another driver has it and reports it when it ends; on a
            // shared deployment that driver may be a node that died, so
            // this node tries again when its lease would expire.
            Ok(None) => {
                if self.shared_log()
                    && let Some(q) = self.timers.get()
                {
                    let expires =
                        index::lease(&*self.services.store, id).map_or(0, |l| l.expires_ms);
                    let at = expires.max(now_ms()) + 50;
                    // An earlier time set meanwhile (the holder's drive
                    // ended and noted a retry) stays.
                    q.set(id, Some(q.due(id).map_or(at, |d| d.min(at))));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "the timers could not claim the run");
                self.retry_later(id);
                return;
            }
        };
        let Some(mut st) = self.run(id) else { return };
        // A proposal the run waits on that expired is recorded so, once,
        // before the run goes on as the engine decides for an expired one.
        if let (RunStatus::WaitingApproval, Some(p)) = (st.status, st.proposal.clone()) {
            match self.expire_if_due(&p).await {
                Ok(true) => st = self.run(id).unwrap_or(st),
                Ok(false) => {}
                Err(e) => tracing::warn!(proposal = %p, error = %e, "recording an expiry failed"),
            }
        }
        // An escalation open past its step's deadline fails the run, once.
        if st.status == RunStatus::Escalated {
            match self.deadline_if_due(id).await {
                Ok(true) => st = self.run(id).unwrap_or(st),
                Ok(false) => {}
                Err(e) => {
                    // Its due time has passed: queued again as is, it would
                    // be driven at once, over and over.
                    tracing::warn!(run = %id, error = %e, "recording an escalation deadline failed; retrying in 5-7.5 s");
                    self.retry_later(id);
                    return;
                }
            }
        }
        let span = tracing::info_span!("run", run = %st.id, workflow = %st.workflow);
        let r = self
            .drive_loop(st, false, &lease, false)
            .instrument(span)
            .await;
        drop(lease);
        match r {
            Ok(st) => self.timers_note(&st),
            Err(RunError::Log(e)) => {
                tracing::warn!(run = %id, error = %e, "driving the run failed; retrying in 5-7.5 s");
                self.retry_later(id);
            }
            Err(e) => {
                // A changed definition or a refused outcome: people act.
                tracing::warn!(run = %id, error = %e, "driving the run failed");
            }
        }
    }

    fn retry_later(&self, id: &str) {
        if let Some(q) = self.timers.get() {
            q.set(id, Some(retry_at(now_ms(), id)));
        }
    }
}

/// When a run whose drive failed at `now` is driven again: after
/// [`RETRY_AFTER_ERROR`] and up to half as long again, spread at random,
/// so the hundreds of runs a failover failed at once do not all retry in
/// the same instant (and fail together again on a database still
/// catching up).
fn retry_at(now: u64, id: &str) -> u64 {
    use std::hash::BuildHasher;
    let base = RETRY_AFTER_ERROR.as_millis() as u64;
    let spread = std::collections::hash_map::RandomState::new().hash_one(id) % (base / 2);
    now + base + spread
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs that failed together retry after 5-7.5 s, spread out rather
    /// than all at the same instant.
    #[test]
    fn failed_runs_retry_spread_over_half_the_wait_again() {
        let base = RETRY_AFTER_ERROR.as_millis() as u64;
        let at: Vec<u64> = (0..200)
            .map(|i| retry_at(1_000, &format!("r{i}")))
            .collect();
        assert!(
            at.iter()
                .all(|&t| t >= 1_000 + base && t < 1_000 + base + base / 2)
        );
        let mut tenths: Vec<u64> = at
            .iter()
            .map(|t| (t - 1_000 - base) / (base / 20))
            .collect();
        tenths.sort_unstable();
        tenths.dedup();
        assert!(
            tenths.len() >= 8,
            "200 retries fell into {} of 10 slots",
            tenths.len()
        );
    }
    use crate::workflow::ProposalStatus;
    use crate::workflow::engine::ProposalView;

    fn run(status: RunStatus, retry_at: Option<u64>) -> RunState {
        let mut st: RunState = serde_json::from_value(serde_json::json!({
            "id": "R-1", "workflow": "w", "workflow_digest": "d", "input": {},
            "initiator": null, "status": "running", "started_ms": 0, "started_seq": 1,
            "finished_ms": null, "cursor": "a", "attempt": 0, "retry_at_ms": null,
            "proposal": null, "escalation": null, "outputs": {}, "error": null,
            "history": [], "retries": 0, "escalations": 0
        }))
        .unwrap();
        st.status = status;
        st.retry_at_ms = retry_at;
        st
    }

    fn env(now: u64, proposal: Option<(ProposalStatus, u64)>) -> Env {
        Env {
            now_ms: now,
            proposal: proposal.map(|(status, expires_at_ms)| ProposalView {
                id: "P-1".into(),
                status,
                expires_at_ms,
            }),
            escalation_due_ms: None,
        }
    }

    #[test]
    fn deadlines_follow_what_the_run_waits_for() {
        let e = env(1_000, None);
        assert_eq!(
            next_deadline(&run(RunStatus::RetryWait, Some(5_000)), &e),
            Some(5_000)
        );
        assert_eq!(
            next_deadline(&run(RunStatus::Running, None), &e),
            Some(1_000)
        );
        assert_eq!(next_deadline(&run(RunStatus::Completed, None), &e), None);
        assert_eq!(next_deadline(&run(RunStatus::Escalated, None), &e), None);
        let waiting = run(RunStatus::WaitingApproval, None);
        let pending = env(1_000, Some((ProposalStatus::Pending, 9_000)));
        assert_eq!(next_deadline(&waiting, &pending), Some(9_000));
        // Decided, or expired already: now.
        let decided = env(1_000, Some((ProposalStatus::Approved, 9_000)));
        assert_eq!(next_deadline(&waiting, &decided), Some(1_000));
        let expired = env(9_500, Some((ProposalStatus::Pending, 9_000)));
        assert_eq!(next_deadline(&waiting, &expired), Some(9_500));
    }

    #[test]
    fn the_queue_keeps_one_time_per_run() {
        let q = Queue::default();
        q.set("a", Some(50));
        q.set("b", Some(10));
        q.set("a", Some(5));
        assert_eq!(q.len(), 2);
        let (due, next) = q.take_due(20);
        assert_eq!(due, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(next, None);
        q.set("c", Some(30));
        q.set("c", None);
        assert!(q.is_empty());
    }
}
