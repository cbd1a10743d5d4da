//! Refused authentications as audit events, bounded: at most
//! [`PER_WINDOW`] events per reason per [`WINDOW_MS`] are recorded one by
//! one; the rest of that window is counted and recorded once, as an
//! `auth-refusals-suppressed` event with the count, when the window is
//! over (at the next refusal of that reason, the next tick of
//! [`Refusals::due`], or when the host stops). An anonymous flood so adds
//! at most `PER_WINDOW + 1` events per reason per minute to the log, and
//! costs no disk write past them; `charter kpi` still counts every refusal.

use std::collections::HashMap;
use std::sync::Mutex;

use charter_audit::Event;

/// Refusals of one reason recorded one by one in a window.
pub const PER_WINDOW: u64 = 20;

/// The window: one minute.
pub const WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    from_ms: u64,
    recorded: u64,
    suppressed: u64,
    last_ms: u64,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq)]
pub struct Admit {
    /// Record this refusal's own event.
    pub record: bool,
    /// The summary of an earlier window of the same reason, to record first.
    pub summary: Option<Event>,
}

/// The windows of every reason (a handful: the reasons are a fixed set).
#[derive(Debug, Default)]
pub struct Refusals {
    windows: Mutex<HashMap<&'static str, Window>>,
}

fn summary(reason: &str, w: &Window) -> Option<Event> {
    (w.suppressed > 0).then(|| Event::AuthRefusalsSuppressed {
        reason: reason.to_string(),
        count: w.suppressed,
        from_ms: w.from_ms,
        to_ms: w.last_ms,
    })
}

impl Refusals {
    /// A refusal of `reason` at `now_ms`.
    pub fn admit(&self, reason: &'static str, now_ms: u64) -> Admit {
        let mut all = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = Window {
            from_ms: now_ms,
            recorded: 0,
            suppressed: 0,
            last_ms: now_ms,
        };
        let w = all.entry(reason).or_insert(fresh);
        let mut out = Admit {
            record: false,
            summary: None,
        };
        if now_ms.saturating_sub(w.from_ms) >= WINDOW_MS {
            out.summary = summary(reason, w);
            *w = fresh;
        }
        w.last_ms = w.last_ms.max(now_ms);
        if w.recorded < PER_WINDOW {
            w.recorded += 1;
            out.record = true;
        } else {
            w.suppressed += 1;
        }
        out
    }

    /// The summaries of windows over at `now_ms` (every window with a
    /// count when `all`: the host is stopping), each window then closed.
    pub fn due(&self, now_ms: u64, all: bool) -> Vec<Event> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        windows.retain(|reason, w| {
            let over = now_ms.saturating_sub(w.from_ms) >= WINDOW_MS;
            if !(over || all) {
                return true;
            }
            out.extend(summary(reason, w));
            // A window still open keeps its place (its recorded count
            // holds), its suppressed count now recorded.
            w.suppressed = 0;
            !over
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(e: &Event) -> u64 {
        match e {
            Event::AuthRefusalsSuppressed { count, .. } => *count,
            _ => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_flood_records_a_bounded_number_and_counts_the_rest() {
        let r = Refusals::default();
        let mut recorded = 0;
        for i in 0..1_000 {
            let a = r.admit("no-token", 1_000 + i);
            assert!(a.summary.is_none());
            recorded += a.record as u64;
        }
        assert_eq!(recorded, PER_WINDOW);
        // Another reason has its own window.
        assert!(r.admit("unknown-token", 2_000).record);
        // Nothing is due before the minute is over...
        assert!(r.due(30_000, false).is_empty());
        // ...then the summary holds every refusal not recorded.
        let due = r.due(1_000 + WINDOW_MS, false);
        assert_eq!(due.len(), 1);
        assert_eq!(count(&due[0]), 1_000 - PER_WINDOW);
        // The next refusal opens a new window and is recorded.
        let a = r.admit("no-token", 2_000 + WINDOW_MS);
        assert!(a.record && a.summary.is_none(), "{a:?}");
    }

    #[test]
    fn the_next_refusal_after_the_window_carries_its_summary() {
        let r = Refusals::default();
        for i in 0..25 {
            r.admit("expired-token", i);
        }
        let a = r.admit("expired-token", WINDOW_MS + 5);
        assert!(a.record);
        assert_eq!(count(a.summary.as_ref().unwrap()), 5);
        // Stopping records what an open window counted, once.
        for i in 0..30 {
            r.admit("expired-token", WINDOW_MS + 10 + i);
        }
        let due = r.due(WINDOW_MS + 100, true);
        assert_eq!(due.len(), 1);
        assert_eq!(count(&due[0]), 30 - (PER_WINDOW - 1));
        assert!(r.due(WINDOW_MS + 100, true).is_empty(), "said once");
        // Time going backwards (a clock step) does not underflow.
        assert!(r.admit("expired-token", 0).summary.is_none());
    }
}
