//! Host-enforced quotas (`[quotas.NAME]` in `charter.toml`): at most
//! `limit` calls of one function allowed without a person per sliding
//! window, per deployment.
//!
//! **Where.** At the decision point, after policy: a fresh call that policy
//! (or its grant) allows takes a place in the quota's window
//! ([`limit`], called by the mediator for host functions, outbound HTTP
//! and connector calls, and by agents' tool calls); with none left the
//! ruling becomes the quota's `over` (a proposal to its `approval` role,
//! or a denial). The plugin never sees the count and has no way around
//! it: looping the call makes the first call over the quota stop the step
//! (a proposal or a denial fails it closed). A call people approved does
//! not take a place (a person is the bound there), nor does a replayed one.
//!
//! **Counted from the log.** The host folds the quotas' windows from the
//! event log when it starts (the allowed `call` records of each quota's
//! function, not approved ones, inside the window), so a restart does not
//! reset them; while it runs, the in-memory window is the log's plus the
//! places taken since, under one lock, so two steps at once cannot both
//! take the last place. A place is taken at the decision, before the
//! call's record is committed: a call whose record never commits (a crash
//! first) was counted and never ran, the safe side. `[quotas]` changes
//! only with a restart (`hot/config.rs`), which folds them again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use charter_audit::{Decision, Event, Filter, Log, LogError};
use charter_config::{Deployment, FunctionName, OverQuota, Pattern, Quota};

use crate::mediator::Ruling;

/// The places taken in each quota's window: the times (ms) of the calls
/// it counted, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    taken: Mutex<BTreeMap<String, VecDeque<u64>>>,
}

/// Was this call allowed by people (an approved proposal)? Such calls are
/// not counted: `approved:ID` / `approved-by:NAME` lead their policies.
/// Only the host writes these markers: a Cedar policy's id is always
/// recorded as `GROUP/ID` (`charter-policy` prefixes it, and a group's
/// name has no `:` or `/`), so a deployment author naming a policy
/// `@id("approved:x")` gets `group/approved:x`, which is counted.
fn by_people(policies: &[String]) -> bool {
    policies.iter().any(|p| {
        let marker = p.starts_with("approved:") || p.starts_with("approved-by:");
        marker && !p.contains('/')
    })
}

/// How far the log's clock may have stepped back and a call still count
/// at start-up (records are read from this much before the widest window).
const CLOCK_MARGIN_MS: u64 = 15 * 60 * 1000;

impl Quotas {
    /// The windows as the log has them at `now_ms`: one read of its `call`
    /// records of the widest window (and [`CLOCK_MARGIN_MS`] before it),
    /// only for a deployment that declares quotas.
    pub(crate) fn from_log(
        dep: &Deployment,
        log: &impl Log,
        now_ms: u64,
    ) -> Result<Quotas, LogError> {
        let mut taken: BTreeMap<String, VecDeque<u64>> = BTreeMap::new();
        if dep.quotas.is_empty() {
            return Ok(Quotas::default());
        }
        // Only the widest window's records can count: read from there (a
        // margin before it, for a writer's clock that stepped back), not
        // from the log's start, so start-up does not grow with the log.
        let widest = dep.quotas.values().map(|q| q.per_ms).max().unwrap_or(0);
        let since = now_ms.saturating_sub(widest.saturating_add(CLOCK_MARGIN_MS));
        let from = log.seq_before_time(since)?;
        for r in log.read(from, &Filter::all().kind("call"))? {
            let Event::Call {
                function,
                decision: Decision::Allow,
                policies,
                ..
            } = &r.event
            else {
                continue;
            };
            if by_people(policies) {
                continue;
            }
            let Ok(Pattern {
                interface,
                func: Some(func),
                ..
            }) = Pattern::parse(function)
            else {
                continue;
            };
            let f = FunctionName::new(&interface, &func);
            for q in dep.quotas.values() {
                if q.covers(&f) && r.time_ms.saturating_add(q.per_ms) > now_ms {
                    taken
                        .entry(q.name.clone())
                        .or_default()
                        .push_back(r.time_ms);
                }
            }
        }
        Ok(Quotas {
            taken: Mutex::new(taken),
        })
    }

    /// Take a place in `q`'s window at `now_ms`: `Ok(places taken, this
    /// one included)`, or `Err(places taken)` when none is left.
    pub(crate) fn take(&self, q: &Quota, now_ms: u64) -> Result<u32, u32> {
        let mut all = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let w = all.entry(q.name.clone()).or_default();
        while w
            .front()
            .is_some_and(|t| t.saturating_add(q.per_ms) <= now_ms)
        {
            w.pop_front();
        }
        let used = u32::try_from(w.len()).unwrap_or(u32::MAX);
        if used >= q.limit {
            return Err(used);
        }
        w.push_back(now_ms);
        Ok(used + 1)
    }
}

/// `per_ms` as people write it.
fn window(ms: u64) -> String {
    match ms {
        m if m % 86_400_000 == 0 => format!("{}d", m / 86_400_000),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m => format!("{}s", m / 1_000),
    }
}

/// A fresh ruling on a call of `fname` with its quota applied: an allowed
/// call takes a place (its policies then name the quota too), or becomes
/// the quota's `over` when none is left. Anything else is left alone.
pub(crate) fn limit(
    dep: &Deployment,
    quotas: &Quotas,
    fname: &FunctionName,
    ruling: Ruling,
) -> Ruling {
    if ruling.decision != Decision::Allow {
        return ruling;
    }
    let Some(q) = dep.quotas.values().find(|q| q.covers(fname)) else {
        return ruling;
    };
    let name = format!("quota:{}", q.name);
    match quotas.take(q, charter_audit::now_ms()) {
        Ok(_) => Ruling {
            policies: ruling.policies.into_iter().chain([name]).collect(),
            ..ruling
        },
        Err(used) => {
            let reason = format!(
                "quota {}: {used} of {} calls of {}.{} per {} already allowed without a person",
                q.name,
                q.limit,
                q.interface,
                q.function,
                window(q.per_ms)
            );
            tracing::warn!(quota = %q.name, function = %fname, "{reason}");
            match q.over {
                OverQuota::Propose => Ruling {
                    decision: Decision::Propose,
                    policies: vec![name],
                    reason: Some(reason),
                    role: q.approval.clone(),
                    groups: ruling.groups,
                },
                OverQuota::Deny => Ruling {
                    groups: ruling.groups,
                    ..Ruling::deny(vec![name], &reason)
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u32, per_ms: u64) -> Quota {
        Quota {
            name: "q".into(),
            interface: "acme:edr/actions".into(),
            function: "isolate-host".into(),
            limit,
            per_ms,
            over: OverQuota::Propose,
            approval: None,
        }
    }

    /// The window slides: places come back as their calls age out, never
    /// before; a full window refuses every call, however many.
    #[test]
    fn the_window_slides_and_never_overfills() {
        let (qs, q) = (Quotas::default(), quota(3, 1_000));
        assert_eq!(qs.take(&q, 10), Ok(1));
        assert_eq!(qs.take(&q, 20), Ok(2));
        assert_eq!(qs.take(&q, 30), Ok(3));
        for t in 31..1_000 {
            assert_eq!(qs.take(&q, t), Err(3), "at {t}");
        }
        // The call at 10 leaves the window at 1010, not before.
        assert_eq!(qs.take(&q, 1_009), Err(3));
        assert_eq!(qs.take(&q, 1_010), Ok(3));
        assert_eq!(qs.take(&q, 1_011), Err(3));
    }

    /// Threads racing for the last places: exactly `limit` win.
    #[test]
    fn concurrent_takes_never_exceed_the_limit() {
        let (qs, q) = (Quotas::default(), quota(5, 3_600_000));
        let won: u32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|_| s.spawn(|| (0..50).filter(|_| qs.take(&q, 1).is_ok()).count() as u32))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 5);
    }

    #[test]
    fn approved_calls_are_not_counted() {
        assert!(by_people(&["approved:P-1".into(), "soc-bounds".into()]));
        assert!(by_people(&["approved-by:bob".into()]));
        assert!(!by_people(&["bounded-isolation".into(), "quota:q".into()]));
        // A Cedar policy named like the marker is recorded under its group.
        assert!(!by_people(&["edr-actions/approved:P-1".into()]));
        assert!(!by_people(&["edr-actions/approved-by:bob".into()]));
    }
}
