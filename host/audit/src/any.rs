//! [`AnyLog`]: a deployment's event log, whichever backend holds it — the
//! file log ([`EventLog`], called directly: no boxing on the default
//! path) or a shared backend behind [`DynLog`] (PostgreSQL, from
//! `charter-pg`, which the host's composition root opens and hands in, so
//! the runtime never depends on a database client).
//!
//! Positions are backend-defined: byte offsets of frames in the file log,
//! seqs in a shared one. A caller only ever passes back positions the log
//! gave it, or 0 for "from the start".

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::{CommitStats, Event, EventLog, Filter, Guard, LOG_MAGIC, Log, LogError, Record};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Log`] as a trait object (its futures boxed). Every [`Log`] is one.
/// Named apart from [`Log`]'s methods so that a type implementing both is
/// never ambiguous to call.
pub trait DynLog: Send + Sync + std::fmt::Debug {
    fn append_dyn(&self, events: Vec<Event>) -> BoxFuture<'_, Result<u64, LogError>>;
    fn append_guarded_dyn(
        &self,
        events: Vec<Event>,
        guard: Guard,
    ) -> BoxFuture<'_, Result<u64, LogError>>;
    fn append_blocking_dyn(&self, events: Vec<Event>) -> Result<u64, LogError>;
    fn read_dyn(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError>;
    fn read_at_dyn(&self, positions: &[u64]) -> Result<Vec<Record>, LogError>;
    fn last_seq_dyn(&self) -> u64;
    fn subscribe_dyn(&self) -> tokio::sync::watch::Receiver<u64>;
    fn seq_before_time_dyn(&self, time_ms: u64) -> Result<u64, LogError>;
}

impl<L: Log> DynLog for L {
    fn append_dyn(&self, events: Vec<Event>) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(self.append(events))
    }
    fn append_guarded_dyn(
        &self,
        events: Vec<Event>,
        guard: Guard,
    ) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(self.append_guarded(events, guard))
    }
    fn append_blocking_dyn(&self, events: Vec<Event>) -> Result<u64, LogError> {
        self.append_blocking(events)
    }
    fn read_dyn(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        self.read(from, filter)
    }
    fn read_at_dyn(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        self.read_at(positions)
    }
    fn last_seq_dyn(&self) -> u64 {
        self.last_seq()
    }
    fn subscribe_dyn(&self) -> tokio::sync::watch::Receiver<u64> {
        self.subscribe()
    }
    fn seq_before_time_dyn(&self, time_ms: u64) -> Result<u64, LogError> {
        self.seq_before_time(time_ms)
    }
}

/// The event log of a deployment: the file log, or a shared backend.
#[derive(Clone, Debug)]
pub enum AnyLog {
    File(EventLog),
    Shared(Arc<dyn DynLog>),
}

impl AnyLog {
    /// See [`Log::append`].
    pub async fn append(&self, events: Vec<Event>) -> Result<u64, LogError> {
        match self {
            AnyLog::File(l) => l.append(events).await,
            AnyLog::Shared(l) => l.append_dyn(events).await,
        }
    }

    /// See [`Log::append_guarded`].
    pub async fn append_guarded(&self, events: Vec<Event>, guard: Guard) -> Result<u64, LogError> {
        match self {
            AnyLog::File(l) => l.append_guarded(events, guard).await,
            AnyLog::Shared(l) => l.append_guarded_dyn(events, guard).await,
        }
    }

    /// See [`Log::append_blocking`].
    pub fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        match self {
            AnyLog::File(l) => l.append_blocking(events),
            AnyLog::Shared(l) => l.append_blocking_dyn(events),
        }
    }

    /// See [`Log::read_at`]: positions the commit callback reported.
    pub fn read_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        match self {
            AnyLog::File(l) => l.read_at(positions),
            AnyLog::Shared(l) => l.read_at_dyn(positions),
        }
    }

    /// The last committed seq.
    pub fn last_seq(&self) -> u64 {
        match self {
            AnyLog::File(l) => l.last_seq(),
            AnyLog::Shared(l) => l.last_seq_dyn(),
        }
    }

    /// A watch of the last committed seq.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            AnyLog::File(l) => l.subscribe(),
            AnyLog::Shared(l) => l.subscribe_dyn(),
        }
    }

    /// The file log, if this is one (checkpoints, commit statistics and
    /// other file-only features).
    pub fn file(&self) -> Option<&EventLog> {
        match self {
            AnyLog::File(l) => Some(l),
            AnyLog::Shared(_) => None,
        }
    }

    /// The file log's path. For code (tests, benchmarks) that knows its
    /// deployment is on the file log; panics on a shared backend, whose
    /// records [`AnyLog::read_all`] reads.
    #[track_caller]
    pub fn path(&self) -> &Path {
        match self {
            AnyLog::File(l) => l.path(),
            AnyLog::Shared(l) => panic!(
                "the event log is on a shared backend ({l:?}), not in a file: read it with AnyLog::read_all"
            ),
        }
    }

    /// Every record of the log's whole batches, in order (the file log:
    /// [`crate::read_records`] of its file).
    pub fn read_all(&self) -> Result<Vec<Record>, LogError> {
        match self {
            AnyLog::File(l) => crate::read_records(l.path()),
            AnyLog::Shared(l) => l.read_dyn(1, &Filter::all()),
        }
    }

    /// The records from seq `from` on that `filter` matches, with their
    /// positions.
    pub fn read_with_positions(
        &self,
        from: u64,
        filter: &Filter,
    ) -> Result<Vec<(Record, u64)>, LogError> {
        match self {
            AnyLog::File(l) => l.read_with_positions(from, filter),
            AnyLog::Shared(l) => Ok(with_seqs(l.read_dyn(from, filter)?)),
        }
    }

    /// The records from the one at `position` on (0: from the start) that
    /// `filter` matches (see [`EventLog::read_from`]).
    pub fn read_from(&self, position: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        match self {
            AnyLog::File(l) => l.read_from(position.max(LOG_MAGIC.len() as u64), filter),
            AnyLog::Shared(l) => l.read_dyn(position.max(1), filter),
        }
    }

    /// [`AnyLog::read_from`] with each record's position.
    pub fn read_from_at(
        &self,
        position: u64,
        filter: &Filter,
    ) -> Result<Vec<(Record, u64)>, LogError> {
        match self {
            AnyLog::File(l) => l.read_from_at(position.max(LOG_MAGIC.len() as u64), filter),
            AnyLog::Shared(l) => Ok(with_seqs(l.read_dyn(position.max(1), filter)?)),
        }
    }

    /// The hash of frame `seq` (the file log only: `None` on a shared
    /// backend, whose auditors read the hash from the row's frame).
    pub fn hash_at(&self, seq: u64) -> Result<Option<String>, LogError> {
        match self {
            AnyLog::File(l) => l.hash_at(seq),
            AnyLog::Shared(_) => Ok(None),
        }
    }

    /// Group-commit counters (the file log's; zeros on a shared backend).
    pub fn stats(&self) -> CommitStats {
        match self {
            AnyLog::File(l) => l.stats(),
            AnyLog::Shared(_) => CommitStats::default(),
        }
    }
}

impl Log for AnyLog {
    fn append(&self, events: Vec<Event>) -> impl Future<Output = Result<u64, LogError>> + Send {
        AnyLog::append(self, events)
    }
    fn append_guarded(
        &self,
        events: Vec<Event>,
        guard: Guard,
    ) -> impl Future<Output = Result<u64, LogError>> + Send {
        AnyLog::append_guarded(self, events, guard)
    }
    fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        AnyLog::append_blocking(self, events)
    }
    fn read(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        match self {
            AnyLog::File(l) => Log::read(l, from, filter),
            AnyLog::Shared(l) => l.read_dyn(from, filter),
        }
    }
    fn read_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        AnyLog::read_at(self, positions)
    }
    fn last_seq(&self) -> u64 {
        AnyLog::last_seq(self)
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        AnyLog::subscribe(self)
    }
    fn seq_before_time(&self, time_ms: u64) -> Result<u64, LogError> {
        match self {
            AnyLog::File(l) => l.seq_before_time(time_ms),
            AnyLog::Shared(l) => l.seq_before_time_dyn(time_ms),
        }
    }
}

/// Records paired with their positions on a shared backend (their seqs).
fn with_seqs(records: Vec<Record>) -> Vec<(Record, u64)> {
    records
        .into_iter()
        .map(|r| {
            let s = r.seq;
            (r, s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemLog;
    use crate::log_tests::ev;

    /// A shared log behind `AnyLog` reads and appends as the file log
    /// does; positions are seqs, and 0 means the start.
    #[test]
    fn a_shared_log_behind_any_log() {
        let _guard = crate::log_tests::no_spawning();
        let mem = MemLog::open(&crate::MemDisk::default()).unwrap();
        let log = AnyLog::Shared(Arc::new(mem));
        assert_eq!(log.append_blocking(vec![ev(1), ev(2)]).unwrap(), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(log.append(vec![ev(3)])).unwrap(), 3);
        let refused = rt.block_on(log.append_guarded(vec![ev(4)], Guard::new(|| Err("no".into()))));
        assert!(matches!(refused, Err(LogError::Refused(_))), "{refused:?}");
        assert_eq!(log.last_seq(), 3);
        assert_eq!(log.read_all().unwrap().len(), 3);
        let from0: Vec<u64> = log
            .read_from_at(0, &Filter::all())
            .unwrap()
            .iter()
            .map(|(r, at)| {
                assert_eq!(r.seq, *at);
                *at
            })
            .collect();
        assert_eq!(from0, vec![1, 2, 3]);
        assert_eq!(log.read_from(2, &Filter::all()).unwrap().len(), 2);
        assert!(log.file().is_none());
        assert_eq!(log.hash_at(1).unwrap(), None);
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| log.path().to_owned()));
        assert!(panicked.is_err(), "a shared log has no file path");
    }
}
