//! The in-memory event log: the same contract as the file log (see
//! [`Log`]), for tests and benchmarks. A [`MemDisk`] stands for the file:
//! it outlives the logs opened on it, so a test can "restart" by opening
//! it again, and it admits one writer at a time.

use std::sync::{Arc, Mutex};

use crate::{Event, Filter, LogError, OnCommit, Record, frame, lock, now_ms};

/// What an in-memory log holds across "restarts".
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<DiskState>>,
}

#[derive(Debug, Default)]
struct DiskState {
    records: Vec<Record>,
    /// A log is open on it (the writer's lock).
    locked: bool,
}

/// An in-memory log on a [`MemDisk`]. Positions are seqs.
pub struct MemLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemLog").finish_non_exhaustive()
    }
}

struct Inner {
    disk: MemDisk,
    /// Serialises appends and their callback, as the file log's writer.
    writer: Mutex<Writer>,
    tail: tokio::sync::watch::Sender<u64>,
}

struct Writer {
    on_commit: OnCommit,
    failed: Option<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.disk.inner).locked = false;
    }
}

fn refused(msg: String) -> LogError {
    LogError::Io {
        path: "<memory>".into(),
        source: std::io::Error::other(msg),
    }
}

impl MemLog {
    pub fn open(disk: &MemDisk) -> Result<MemLog, LogError> {
        MemLog::open_with(disk, 0, Box::new(|_, _| Ok(())))
    }

    /// As [`EventLog::open_with`](crate::EventLog::open_with): hands
    /// `on_commit` every record after `applied` now and every later batch.
    pub fn open_with(
        disk: &MemDisk,
        applied: u64,
        mut on_commit: OnCommit,
    ) -> Result<MemLog, LogError> {
        let (replay, last) = {
            let mut d = lock(&disk.inner);
            if d.locked {
                return Err(refused(
                    "the event log is in use by another charter process; one host per data directory at a time".into(),
                ));
            }
            d.locked = true;
            let replay: Vec<Record> = d
                .records
                .iter()
                .filter(|r| r.seq > applied)
                .cloned()
                .collect();
            (replay, d.records.len() as u64)
        };
        let inner = Arc::new(Inner {
            disk: disk.clone(),
            writer: Mutex::new(Writer {
                on_commit: Box::new(|_, _| Ok(())),
                failed: None,
            }),
            tail: tokio::sync::watch::Sender::new(last),
        });
        if !replay.is_empty() {
            let at: Vec<u64> = replay.iter().map(|r| r.seq).collect();
            on_commit(&replay, &at).map_err(refused)?;
        }
        lock(&inner.writer).on_commit = on_commit;
        Ok(MemLog { inner })
    }

    fn append_now(&self, events: Vec<Event>, guard: Option<crate::Guard>) -> Result<u64, LogError> {
        let mut w = lock(&self.inner.writer);
        if let Some(e) = &w.failed {
            return Err(refused(e.clone()));
        }
        if let Some(Err(e)) = guard.map(crate::run_guard) {
            return Err(LogError::Refused(e));
        }
        let mut d = lock(&self.inner.disk.inner);
        let base = d.records.len() as u64;
        let n = events.len();
        let mut batch = Vec::with_capacity(n);
        for (i, event) in events.into_iter().enumerate() {
            let record = Record {
                seq: base + 1 + i as u64,
                time_ms: now_ms(),
                end: i + 1 == n,
                event,
            };
            // The file log's bound, so both refuse the same batches.
            let payload = serde_json::to_vec(&record)?;
            if let Some(p) = frame::refusal(&payload) {
                return Err(LogError::Refused(format!(
                    "event {} of the batch ({}) cannot go into the log: {p}",
                    i + 1,
                    record.event.kind()
                )));
            }
            batch.push(record);
        }
        let Some(last) = batch.last().map(|r| r.seq) else {
            return Ok(base);
        };
        d.records.extend(batch.iter().cloned());
        drop(d);
        self.inner.tail.send_replace(last);
        let at: Vec<u64> = batch.iter().map(|r| r.seq).collect();
        let applied =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (w.on_commit)(&batch, &at)));
        match applied {
            Ok(Ok(())) => Ok(last),
            Ok(Err(e)) => {
                w.failed = Some(e.clone());
                Err(refused(e))
            }
            Err(_) => {
                tracing::error!("memory log: the commit callback panicked on seq ..={last}");
                Ok(last)
            }
        }
    }
}

impl crate::Log for MemLog {
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send {
        let r = self.append_now(events, None);
        async move { r }
    }
    fn append_guarded(
        &self,
        events: Vec<Event>,
        guard: crate::Guard,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send {
        let r = self.append_now(events, Some(guard));
        async move { r }
    }
    fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        self.append_now(events, None)
    }
    fn read(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        let d = lock(&self.inner.disk.inner);
        let start = from.max(1) as usize - 1;
        Ok(d.records
            .get(start..)
            .unwrap_or_default()
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect())
    }
    fn read_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        let d = lock(&self.inner.disk.inner);
        positions
            .iter()
            .map(|&p| {
                (p >= 1)
                    .then(|| d.records.get(p as usize - 1))
                    .flatten()
                    .cloned()
                    .ok_or_else(|| refused(format!("no record at position {p}")))
            })
            .collect()
    }
    fn last_seq(&self) -> u64 {
        *self.inner.tail.borrow()
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.tail.subscribe()
    }
}
