//! Schedules (`[workflows.NAME.triggers.schedule]`): one task per
//! scheduled workflow starts a run at each tick of its cron expression,
//! in its time zone, while `charter up` runs.
//!
//! **Once per tick.** A tick's run records the tick (`run-started`'s
//! trigger, key = the tick's Unix ms), and a tick that started a run
//! before starts none (`Control::start_triggered`), so a restart at the
//! worst moment never starts a tick's run twice.
//!
//! **Missed ticks.** At start, the ticks between the last one that started
//! a run (from the index) and now were missed while no host ran: `skip`
//! starts nothing for them, `run-once` starts one run, for the latest. A
//! schedule that never fired before has missed nothing. A host that wakes
//! from a stall (suspended, starved) more than [`LATE_MS`] after a tick
//! treats the ticks it slept through the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use charter_api::Control;
use charter_audit::{TriggerRef, now_ms};
use charter_config::{Missed, Schedule};

/// A tick found this late is a missed tick.
pub const LATE_MS: u64 = 60_000;

/// Start the schedule of every workflow that declares one, and follow the
/// configuration in force: a schedule an applied `charter.toml` adds,
/// changes or removes starts, restarts or stops within a second. The
/// tasks end with the runtime.
pub fn start(control: Arc<Control>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Per workflow: its schedule's key and the flag that stops its task
        // (checked before each tick fires: a task is never cut off in the
        // middle of starting a run).
        let mut running: HashMap<String, (String, Arc<AtomicBool>)> = HashMap::new();
        let mut first = true;
        loop {
            let wanted: HashMap<String, Schedule> = control
                .deployment()
                .workflows
                .values()
                .filter_map(|w| Some((w.name.clone(), w.triggers.schedule.clone()?)))
                .collect();
            running.retain(|name, (key, stop)| {
                let keep = wanted.get(name).is_some_and(|s| schedule_key(s) == *key);
                if !keep {
                    stop.store(true, Ordering::SeqCst);
                }
                keep
            });
            for (name, s) in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(name.clone())
                {
                    let key = schedule_key(&s);
                    let stop = Arc::new(AtomicBool::new(false));
                    tokio::spawn(run(control.clone(), name, s, first, stop.clone()));
                    slot.insert((key, stop));
                }
            }
            first = false;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// What makes two schedules the same.
fn schedule_key(s: &Schedule) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// One schedule's task; `catch_up`: at the host's start, the ticks missed
/// while no host ran follow the schedule's policy (a schedule an applied
/// configuration adds or changes starts from now).
async fn run(
    control: Arc<Control>,
    workflow: String,
    s: Schedule,
    catch_up: bool,
    stop: Arc<AtomicBool>,
) {
    let now = now_ms();
    let last = match control.last_tick(&workflow) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(workflow, error = %e, "the schedule cannot read its last tick; not started");
            return;
        }
    };
    if let Some(last) = last.filter(|_| catch_up) {
        missed(&control, &workflow, &s, last, now).await;
    }
    let mut after = now;
    loop {
        let Some(next) = s.next_after_ms(after) else {
            return;
        };
        // Sleep in bounded slices: the wall clock may move under us.
        loop {
            let now = now_ms();
            if now >= next {
                break;
            }
            tokio::time::sleep(Duration::from_millis((next - now).min(1_000))).await;
            if stop.load(Ordering::SeqCst) {
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let now = now_ms();
        if now > next + LATE_MS {
            missed(&control, &workflow, &s, after, now).await;
            after = now;
            continue;
        }
        fire(&control, &workflow, &s, next).await;
        after = next;
    }
}

/// The tick to start a run for, of the ticks in `(after, now]` that were
/// missed: the latest under `run-once`, none under `skip`.
pub fn missed_tick(s: &Schedule, after: u64, now: u64) -> Option<u64> {
    match s.missed {
        Missed::Skip => None,
        Missed::RunOnce => s.last_in(after, now),
    }
}

/// Apply the missed-tick policy to the ticks in `(after, now]`.
async fn missed(control: &Control, workflow: &str, s: &Schedule, after: u64, now: u64) {
    if s.last_in(after, now).is_none() {
        return;
    }
    match missed_tick(s, after, now) {
        None => tracing::info!(workflow, "schedule: missed ticks are skipped"),
        Some(t) => {
            tracing::info!(
                workflow,
                tick_ms = t,
                "schedule: one run for the missed ticks"
            );
            fire(control, workflow, s, t).await;
        }
    }
}

async fn fire(control: &Control, workflow: &str, s: &Schedule, tick: u64) {
    let trigger = TriggerRef {
        kind: "schedule".into(),
        name: workflow.to_string(),
        key: tick.to_string(),
        auth: "schedule".into(),
        sender: None,
    };
    let initiator = format!("schedule:{workflow}");
    match control
        .start_triggered(workflow, s.input.clone(), &initiator, trigger)
        .await
    {
        Ok(r) if r.duplicate => {
            tracing::debug!(workflow, tick_ms = tick, run = %r.run, "schedule: tick already started its run")
        }
        Ok(r) => tracing::info!(workflow, tick_ms = tick, run = %r.run, "schedule: run started"),
        Err(e) => {
            tracing::warn!(workflow, tick_ms = tick, error = %e, "schedule: starting the run failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_ticks_follow_the_policy() {
        let every = |m| Schedule::new("*/10 * * * * *", "UTC", m, serde_json::json!({})).unwrap();
        let (run_once, skip) = (every(Missed::RunOnce), every(Missed::Skip));
        // Down from 12:00:00 to 12:00:35: ticks :10, :20, :30 were missed.
        let base = 1_767_268_800_000; // 2026-01-01T12:00:00Z
        assert_eq!(
            missed_tick(&run_once, base, base + 35_000),
            Some(base + 30_000)
        );
        assert_eq!(missed_tick(&skip, base, base + 35_000), None);
        // Nothing missed: nothing to run.
        assert_eq!(missed_tick(&run_once, base, base + 9_000), None);
        // The last tick that ran is not missed again.
        assert_eq!(missed_tick(&run_once, base + 30_000, base + 35_000), None);
    }
}
