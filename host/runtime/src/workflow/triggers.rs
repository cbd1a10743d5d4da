//! Runs started by a trigger (a webhook delivery, a schedule's tick): at
//! most one run per delivery id or tick, ever.
//!
//! The trigger is recorded in the run's `run-started` event
//! (`TriggerRef`), and the index maps its dedup key to that run
//! (`index::TRIGGERS`), so a retried delivery finds the first run after a
//! restart too: the index is rebuilt from the log. Within the process,
//! starts of one key are serialized (a lock per key), and the index is
//! read after the lock is taken: the second of two concurrent deliveries
//! sees the first's run, whose `run-started` was applied before its append
//! was acknowledged. On a log several nodes share, the starts of one key
//! are also serialized across nodes: a claim on `@trigger/KEY` in the
//! store (the index then holds the first node's run when the second reads
//! it: it commits with the append).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use charter_audit::{Event, TriggerRef, now_ms};
use serde_json::Value;

use super::{RunError, RunState};
use crate::{Host, index};

/// Locks of the triggered starts in progress, by dedup key.
#[derive(Debug, Default)]
pub struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A triggered start's answer.
#[derive(Debug, Clone)]
pub struct Triggered {
    /// The run: the new one, or the one this trigger started before.
    pub run: String,
    /// Whether the trigger had started it before (nothing was started).
    pub duplicate: bool,
}

impl Host {
    /// The run trigger `t` started, if it started one.
    pub fn triggered_run(&self, t: &TriggerRef) -> Option<String> {
        self.services
            .store
            .get(index::TRIGGERS, &t.dedup_key())
            .ok()
            .flatten()
    }

    /// The last tick schedule `name` started a run for (Unix ms).
    pub fn last_tick(&self, name: &str) -> Option<u64> {
        self.services
            .store
            .get(index::TRIGGERS, &format!("last:{name}"))
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
    }

    /// Start a run of `workflow` for trigger `t`, unless `t` started one
    /// already: then answer that run and start nothing. The run is
    /// recorded, not driven (see [`Host::drive_soon`]).
    pub async fn start_triggered_run(
        &self,
        workflow: &str,
        input: Value,
        initiator: &str,
        t: TriggerRef,
    ) -> Result<Triggered, RunError> {
        let key = t.dedup_key();
        let lock = {
            let mut m = self
                .trigger_locks
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            m.entry(key.clone()).or_default().clone()
        };
        let held = lock.lock().await;
        let r = match self
            .claim_shared(
                &format!("@trigger/{key}"),
                std::time::Duration::from_secs(20),
            )
            .await
        {
            Ok(claim) => {
                let r = self
                    .start_once(workflow, input, initiator, t, claim.as_deref())
                    .await;
                drop(claim);
                r
            }
            Err(e) => Err(RunError::Unavailable(format!("{e}: retry the delivery"))),
        };
        drop(held);
        {
            let mut m = self
                .trigger_locks
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Only the map and this guard hold it: nobody waits on it.
            if m.get(&key).is_some_and(|l| Arc::strong_count(l) == 2) {
                m.remove(&key);
            }
        }
        drop(lock);
        r
    }

    async fn start_once(
        &self,
        workflow: &str,
        input: Value,
        initiator: &str,
        t: TriggerRef,
        claim: Option<&index::RunLease>,
    ) -> Result<Triggered, RunError> {
        // Fail closed: a trigger index that cannot be read could hide the
        // run this delivery started, so nothing is started (the sender
        // retries).
        let seen = self
            .services
            .store
            .get(index::TRIGGERS, &t.dedup_key())
            .map_err(|e| {
                RunError::Unavailable(format!(
                    "the trigger index cannot be read ({e}); nothing was started: retry the delivery"
                ))
            })?;
        if let Some(run) = seen {
            return Ok(Triggered {
                run,
                duplicate: true,
            });
        }
        // Fenced by the claim: a node that stalled past it while another
        // started the run appends nothing.
        let st = self
            .start_run_event_fenced(
                workflow,
                input,
                Some(initiator),
                Some(t),
                claim.map(index::RunLease::fence),
            )
            .await?;
        Ok(Triggered {
            run: st.id,
            duplicate: false,
        })
    }

    /// [`Host::start_run`] with the trigger recorded in `run-started`.
    pub(crate) async fn start_run_event(
        &self,
        workflow: &str,
        input: Value,
        initiator: Option<&str>,
        trigger: Option<TriggerRef>,
    ) -> Result<RunState, RunError> {
        self.start_run_event_fenced(workflow, input, initiator, trigger, None)
            .await
    }

    /// [`Host::start_run_event`], the append guarded by `fence` if given.
    async fn start_run_event_fenced(
        &self,
        workflow: &str,
        input: Value,
        initiator: Option<&str>,
        trigger: Option<TriggerRef>,
        fence: Option<charter_audit::Guard>,
    ) -> Result<RunState, RunError> {
        self.record_config().await;
        // One read of the configuration: the definition and its digest.
        let config = self.config();
        let (def, digest) = super::workflow_in(&config, workflow)?;
        // The input is recorded and read back by every step: bounded.
        crate::record::check_step_value("the run's input", &input, crate::record::MAX_STEP_VALUE)
            .map_err(RunError::Invalid)?;
        let id = super::new_run_id(workflow, &config.deployment.name);
        let mut ev = super::engine::start_with_digest(&def, digest, &id, input, initiator);
        // The versions the run will run, whatever is pushed after.
        let pinned = self
            .serving_digests(def.steps.iter().map(|s| s.plugin.clone()).collect())
            .await;
        if let Event::RunStarted {
            trigger: slot,
            plugins,
            ..
        } = &mut ev
        {
            *slot = trigger;
            *plugins = pinned;
        }
        let mut ev = [ev];
        if let Some(who) = initiator {
            self.stamp_auth(&mut ev, who);
        }
        let [ev] = ev;
        let log = &self.services.log;
        let seq = match fence {
            Some(g) => log.append_guarded(vec![ev.clone()], g).await,
            None => log.append(vec![ev.clone()]).await,
        }
        .map_err(|e| RunError::Log(e.to_string()))?;
        Ok(RunState::start(&ev, seq, now_ms()).expect("run-started"))
    }
}

impl Host {
    /// Record refused webhook deliveries (`hook-refused`; the caller
    /// aggregates them, see `charter-server`'s hooks).
    pub async fn record_hook_refused(
        &self,
        hook: &str,
        reason: &str,
        count: u64,
        detail: &str,
    ) -> Result<(), RunError> {
        let ev = Event::HookRefused {
            hook: crate::record::text(hook),
            reason: reason.to_string(),
            count,
            detail: crate::record::text(detail),
        };
        self.services
            .log
            .append(vec![ev])
            .await
            .map(|_| ())
            .map_err(|e| RunError::Log(e.to_string()))
    }
}
