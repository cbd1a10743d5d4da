//! The KPIs over time: the log folded once, as [`super::compute`] folds
//! it, with what each record adds counted in the bucket of its time.
//!
//! The fold runs over the whole log (whether an execution was authorized
//! depends on decisions recorded before the window), so the work is one
//! pass over the log, as `charter kpi`; what is kept per bucket is a few
//! counters and the latencies of that bucket, and the number of buckets is
//! bounded ([`MAX_BUCKETS`]) by whoever asks for a series.

use std::collections::HashMap;

use charter_audit::{Decision, Event, Record};
use serde::{Deserialize, Serialize};

use super::{KpiFold, pct};

/// The most buckets one series has (a week of hours is 168, a year of
/// days 366).
pub const MAX_BUCKETS: u64 = 1000;

/// What happened in one bucket `[start_ms, start_ms + bucket_ms)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Where the bucket starts (milliseconds since 1970, UTC).
    pub start_ms: u64,
    /// Calls allowed by policy.
    pub calls_allowed: u64,
    /// Calls routed to people.
    pub calls_proposed: u64,
    /// Calls denied.
    pub calls_denied: u64,
    /// Proposals resolved (executed, rejected, expired or failed).
    pub proposals_resolved: u64,
    /// From proposal to resolution, of those resolved here: median.
    pub decision_latency_ms_p50: Option<u64>,
    /// ... 95th percentile.
    pub decision_latency_ms_p95: Option<u64>,
    /// Workflow runs started.
    pub runs_started: u64,
    /// Workflow runs that ended (completed, failed or cancelled).
    pub runs_finished: u64,
    /// Start to end of the runs that ended here: median.
    pub cycle_time_ms_p50: Option<u64>,
    /// ... 95th percentile.
    pub cycle_time_ms_p95: Option<u64>,
    /// Of the runs started here, those handed to people (a proposal or an
    /// escalation), whenever that happened.
    pub runs_handed_off: u64,
    /// `runs_handed_off / runs_started`.
    pub handoff_rate: Option<f64>,
    /// Executions with no allow decision or approval behind them (target 0).
    pub unauthorized_actions_executed: u64,
    /// Blocked unauthorized attempts (denied calls, refused approvals,
    /// resolutions, loads and authentications).
    pub blocked_unauthorized_attempts: u64,
}

/// `GET /v1/kpi/series`: buckets of `bucket_ms` from `from_ms`, oldest
/// first, every bucket present (an empty one counts zeros).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KpiSeries {
    /// `hour` or `day`.
    pub bucket: String,
    /// A bucket's width.
    pub bucket_ms: u64,
    /// The first bucket's start.
    pub from_ms: u64,
    /// The last bucket's end (exclusive).
    pub to_ms: u64,
    /// The buckets.
    pub buckets: Vec<Bucket>,
}

fn blocked(f: &KpiFold) -> u64 {
    let b = &f.k.blocked_by_kind;
    b.plugin_refused_at_load
        + b.call_denied
        + b.approval_refused
        + b.escalation_resolution_refused
        + b.authentication_refused
}

/// The series of `records` (in log order): `count` buckets (at most
/// [`MAX_BUCKETS`]) of `bucket_ms` from `from_ms`, named `bucket`.
///
/// Long on purpose: one pass that reads the fold's state before and after
/// each record (what it added) and sorts that into the record's bucket.
pub fn series(
    records: &[Record],
    bucket: &str,
    from_ms: u64,
    bucket_ms: u64,
    count: u64,
) -> KpiSeries {
    let bucket_ms = bucket_ms.max(1);
    let count = count.clamp(1, MAX_BUCKETS);
    let to_ms = from_ms.saturating_add(bucket_ms.saturating_mul(count));
    let at = |t: u64| {
        (from_ms..to_ms)
            .contains(&t)
            .then(|| ((t - from_ms) / bucket_ms) as usize)
    };
    let mut out: Vec<Bucket> = (0..count)
        .map(|i| Bucket {
            start_ms: from_ms.saturating_add(i.saturating_mul(bucket_ms)),
            ..Bucket::default()
        })
        .collect();
    let mut latencies: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut cycles: HashMap<usize, Vec<u64>> = HashMap::new();
    // Runs started inside the window → their bucket.
    let mut started: HashMap<String, usize> = HashMap::new();
    let mut fold = KpiFold::default();
    for r in records {
        let i = at(r.time_ms);
        let (unauthorized, blocked_before) = (fold.k.unauthorized_actions_executed, blocked(&fold));
        let (latencies_before, handed_before) = (fold.latencies.len(), fold.handed.len());
        let run_start = match &r.event {
            Event::RunFinished { run, .. } => fold.run_wf.get(run.as_str()).map(|(_, t)| *t),
            _ => None,
        };
        fold.add(r);
        if fold.handed.len() > handed_before
            && let Some(b) = r.event.run().and_then(|run| started.get(run))
        {
            out[*b].runs_handed_off += 1;
        }
        let Some(i) = i else { continue };
        let b = &mut out[i];
        match &r.event {
            Event::Call { decision, .. } => match decision {
                Decision::Allow => b.calls_allowed += 1,
                Decision::Propose => b.calls_proposed += 1,
                Decision::Deny => b.calls_denied += 1,
            },
            Event::ProposalResolved { .. } => {
                b.proposals_resolved += 1;
                if fold.latencies.len() > latencies_before
                    && let Some(l) = fold.latencies.last()
                {
                    latencies.entry(i).or_default().push(*l);
                }
            }
            Event::RunStarted { run, .. } => {
                b.runs_started += 1;
                started.insert(run.clone(), i);
            }
            Event::RunFinished { .. } => {
                if let Some(t0) = run_start {
                    b.runs_finished += 1;
                    cycles
                        .entry(i)
                        .or_default()
                        .push(r.time_ms.saturating_sub(t0));
                }
            }
            _ => {}
        }
        b.unauthorized_actions_executed += fold.k.unauthorized_actions_executed - unauthorized;
        b.blocked_unauthorized_attempts += blocked(&fold) - blocked_before;
    }
    for (i, b) in out.iter_mut().enumerate() {
        if let Some(l) = latencies.get_mut(&i) {
            b.decision_latency_ms_p50 = pct(l, 50);
            b.decision_latency_ms_p95 = pct(l, 95);
        }
        if let Some(c) = cycles.get_mut(&i) {
            b.cycle_time_ms_p50 = pct(c, 50);
            b.cycle_time_ms_p95 = pct(c, 95);
        }
        b.handoff_rate =
            (b.runs_started > 0).then(|| b.runs_handed_off as f64 / b.runs_started as f64);
    }
    KpiSeries {
        bucket: bucket.to_string(),
        bucket_ms,
        from_ms,
        to_ms,
        buckets: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets that cover the whole history add up to what `charter kpi`
    /// computes; a window that cuts it counts only what falls inside, and
    /// a run's handoff counts in the bucket it started in.
    #[test]
    fn buckets_add_up_to_the_whole() {
        let records = super::super::tests::history();
        let whole = super::super::compute(&records);
        let s = series(&records, "test", 0, 5, 10);
        assert_eq!(s.buckets.len(), 10);
        assert_eq!((s.from_ms, s.to_ms), (0, 50));
        let sum = |f: fn(&Bucket) -> u64| s.buckets.iter().map(f).sum::<u64>();
        let calls: (u64, u64, u64) = whole
            .calls
            .values()
            .flat_map(|m| m.values())
            .fold((0, 0, 0), |a, c| {
                (a.0 + c.allowed, a.1 + c.proposed, a.2 + c.denied)
            });
        assert_eq!(
            (
                sum(|b| b.calls_allowed),
                sum(|b| b.calls_proposed),
                sum(|b| b.calls_denied)
            ),
            calls
        );
        assert_eq!(
            sum(|b| b.unauthorized_actions_executed),
            whole.unauthorized_actions_executed
        );
        assert_eq!(
            sum(|b| b.blocked_unauthorized_attempts),
            whole.blocked_unauthorized_attempts
        );
        let w = &whole.workflows["w"];
        assert_eq!(sum(|b| b.runs_started), w.runs);
        assert_eq!(
            sum(|b| b.runs_finished),
            w.completed + w.failed + w.cancelled
        );
        assert_eq!(sum(|b| b.runs_handed_off), w.handoffs);
        assert_eq!(sum(|b| b.proposals_resolved), 1);
        // Both runs start in the first bucket (seq 1 and 7 → times 1, 7:
        // buckets 0 and 1); r2 is handed off (a proposal, an escalation).
        assert_eq!(s.buckets[1].runs_handed_off, 1);
        assert_eq!(s.buckets[1].handoff_rate, Some(1.0));
        assert_eq!(s.buckets[0].handoff_rate, Some(0.0));
        assert_eq!(s.buckets[9].handoff_rate, None);

        // A window after the calls counts none of them, but still knows
        // (from the fold before it) that the second execution of c4 was
        // unauthorized.
        let late = series(&records, "test", 16, 1, 2);
        assert_eq!(late.buckets.iter().map(|b| b.calls_allowed).sum::<u64>(), 0);
        assert_eq!(
            late.buckets
                .iter()
                .map(|b| b.unauthorized_actions_executed)
                .sum::<u64>(),
            1
        );
    }

    /// However many buckets are asked for, at most MAX_BUCKETS are made.
    #[test]
    fn buckets_are_bounded() {
        let s = series(&[], "hour", 0, 1, u64::MAX);
        assert_eq!(s.buckets.len() as u64, MAX_BUCKETS);
        let s = series(&[], "hour", u64::MAX - 10, u64::MAX, 5);
        assert_eq!(s.to_ms, u64::MAX);
    }
}
