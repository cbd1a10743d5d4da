//! Stopping a long-running host without losing a run: [`Drain`] tells the
//! workflow drivers to start no new step attempt (and to stop waiting for a
//! retry time), and counts the drivers still inside a step, so `charter up`
//! can wait for them — bounded — before it exits. A run left between steps
//! keeps its recorded state (running, retry-wait, waiting-approval) and the
//! next start resumes it; a step cut short by the bound is re-run from its
//! journal, as after a crash.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Whether the host is stopping, and how many drivers are driving a run.
#[derive(Debug)]
pub struct Drain {
    stopping: AtomicBool,
    stop: watch::Sender<bool>,
    drivers: watch::Sender<usize>,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain {
            stopping: AtomicBool::new(false),
            stop: watch::Sender::new(false),
            drivers: watch::Sender::new(0),
        }
    }
}

/// One driver inside [`Drain`]'s count, left when dropped.
#[derive(Debug)]
pub struct Driving<'a>(&'a Drain);

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.0.drivers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Drain {
    /// Start no new step attempt from now on.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
    }

    /// Whether [`Drain::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once [`Drain::stop`] is called (at once if it was).
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Count a driver in until the guard is dropped.
    pub fn enter(&self) -> Driving<'_> {
        self.drivers.send_modify(|n| *n += 1);
        Driving(self)
    }

    /// Drivers now driving a run.
    pub fn drivers(&self) -> usize {
        *self.drivers.borrow()
    }

    /// Wait until no driver drives a run, at most `bound`; the drivers
    /// still driving when it ran out (0: all finished).
    pub async fn idle(&self, bound: Duration) -> usize {
        let mut rx = self.drivers.subscribe();
        let _ = tokio::time::timeout(bound, rx.wait_for(|n| *n == 0)).await;
        self.drivers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_driver_and_is_bounded() {
        let d = Drain::default();
        assert!(!d.stopping());
        assert_eq!(d.idle(Duration::from_millis(1)).await, 0);
        let g = d.enter();
        let h = d.enter();
        assert_eq!(d.idle(Duration::from_millis(20)).await, 2, "bounded");
        drop(g);
        d.stop();
        assert!(d.stopping());
        d.stopped().await;
        drop(h);
        assert_eq!(d.idle(Duration::from_secs(5)).await, 0);
    }
}
