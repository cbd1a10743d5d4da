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
//!
//! **Several nodes** (a deployment on PostgreSQL): a quota bounds the
//! deployment, not one process, so each node's in-memory window would let
//! `limit` calls through per node. There the window lives in the
//! deployment's store instead (`@quotas/NAME`: the times of the places
//! taken, as JSON), seeded from the log by the first node to need it, and
//! a place is taken by compare-and-swap on that row: atomic across every
//! node, retried when another node took a place meanwhile. A store that
//! cannot be read or holds an unreadable window counts as full (the call
//! goes to people or is denied): the safe side.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use charter_store::Store;

use charter_audit::{Decision, Event, Filter, Log, LogError};
use charter_config::{Deployment, FunctionName, OverQuota, Pattern, Quota};

use crate::mediator::Ruling;

/// The places taken in each quota's window: the times (ms) of the calls
/// it counted, oldest first.
#[derive(Default)]
pub(crate) struct Quotas {
    taken: Mutex<BTreeMap<String, VecDeque<u64>>>,
    /// On a deployment several nodes share: the store that holds the
    /// windows (see the module docs); `taken` is then only the seed.
    shared: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

/// The store namespace of the shared windows.
const SHARED_NS: &str = "@quotas";

/// Most compare-and-swap attempts for one place before the window counts
/// as full (each failure means another node took a place meanwhile).
const SHARED_TRIES: usize = 64;

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
            shared: None,
        })
    }

    /// Keep the windows in `store`, shared by every node of the
    /// deployment: a quota's window not there yet is seeded with what
    /// this node folded from the log (a node that finds one keeps it: it
    /// holds every node's places since).
    pub(crate) fn shared_in<'a>(
        self,
        quotas: impl IntoIterator<Item = &'a Quota>,
        store: Arc<dyn Store>,
    ) -> Quotas {
        let seeds = self.taken.into_inner().unwrap_or_else(|p| p.into_inner());
        for q in quotas {
            let seed: Vec<u64> = seeds
                .get(&q.name)
                .map(|w| w.iter().copied().collect())
                .unwrap_or_default();
            let text = serde_json::to_string(&seed).unwrap_or_else(|_| "[]".into());
            if let Err(e) = store.compare_and_swap(SHARED_NS, &q.name, None, Some(&text)) {
                tracing::warn!(quota = %q.name, "cannot seed the shared quota window ({e}); the first call seeds it empty");
            }
        }
        Quotas {
            taken: Mutex::default(),
            shared: Some(store),
        }
    }

    /// [`Quotas::take`] on the shared window in `store`.
    fn take_shared(store: &dyn Store, q: &Quota, now_ms: u64) -> Result<u32, u32> {
        let full = |why: String| {
            tracing::error!(quota = %q.name, "{why}; the window counts as full");
            Err(q.limit)
        };
        for _ in 0..SHARED_TRIES {
            let cur = match store.get(SHARED_NS, &q.name) {
                Ok(c) => c,
                Err(e) => return full(format!("cannot read the shared quota window ({e})")),
            };
            let mut w: Vec<u64> = match cur.as_deref().map(serde_json::from_str) {
                None => vec![],
                Some(Ok(w)) => w,
                Some(Err(e)) => {
                    return full(format!("the shared quota window is unreadable ({e})"));
                }
            };
            w.retain(|t| t.saturating_add(q.per_ms) > now_ms);
            let used = u32::try_from(w.len()).unwrap_or(u32::MAX);
            if used >= q.limit {
                return Err(used);
            }
            w.push(now_ms);
            let next = serde_json::to_string(&w).unwrap_or_else(|_| "[]".into());
            match store.compare_and_swap(SHARED_NS, &q.name, cur.as_deref(), Some(&next)) {
                Ok(true) => return Ok(used + 1),
                Ok(false) => continue,
                Err(e) => {
                    return full(format!(
                        "cannot take a place in the shared quota window ({e})"
                    ));
                }
            }
        }
        full(format!(
            "{SHARED_TRIES} attempts to take a place in the shared quota window all raced with other nodes"
        ))
    }

    /// Take a place in `q`'s window at `now_ms`: `Ok(places taken, this
    /// one included)`, or `Err(places taken)` when none is left.
    pub(crate) fn take(&self, q: &Quota, now_ms: u64) -> Result<u32, u32> {
        if let Some(store) = &self.shared {
            return Quotas::take_shared(&**store, q, now_ms);
        }
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

    /// Several nodes over one store (the shared window): threads of two
    /// "nodes" racing for places get exactly `limit` between them, the
    /// window slides as in one process, and an unreadable window counts
    /// as full.
    #[test]
    fn nodes_sharing_a_window_get_exactly_the_limit_between_them() {
        let store: Arc<dyn Store> = Arc::new(charter_store::MemStore::default());
        let q = quota(5, 1_000);
        let nodes = [
            Quotas::default().shared_in([&q], store.clone()),
            Quotas::default().shared_in([&q], store.clone()),
        ];
        let won: u32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let n = &nodes[i % 2];
                    let q = &q;
                    s.spawn(move || (0..20).filter(|_| n.take(q, 10).is_ok()).count() as u32)
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 5);
        assert_eq!(nodes[0].take(&q, 1_009), Err(5));
        assert_eq!(nodes[1].take(&q, 1_010), Ok(1), "the places came back");
        // A node starting later keeps the window it finds.
        let late = Quotas::default().shared_in([&q], store.clone());
        assert_eq!(late.take(&q, 1_011), Ok(2));
        store.set(SHARED_NS, "q", "not json").unwrap();
        assert_eq!(nodes[0].take(&q, 1_012), Err(5), "unreadable: full");
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
