//! The event log: the system of record and the audit trail.
//!
//! One append-only file per deployment (`<data_dir>/events.log`) of
//! length-prefixed, hash-chained frames:
//!
//! ```text
//! frame = len: u32 LE | body | hash: [u8; 32]
//! body  = seq: u64 LE | prev: [u8; 32] | payload (JSON of a Record)
//! hash  = sha256(body)
//! ```
//!
//! `prev` is the previous frame's hash (zeros for the first), `seq` counts
//! from 1. Appends are group-committed (see [`EventLog`]): everything
//! queued during a round shares one `fdatasync`, and no append is
//! acknowledged before its frames are on disk. One process appends at a
//! time (the file is locked).
//!
//! A plain hash chain catches accidental damage and naive edits; an editor
//! who recomputes every later hash is caught by signed checkpoints
//! (ed25519, key in the data directory, [`checkpoint`]) exported somewhere
//! the editor cannot reach. `verify` also catches a truncated tail against
//! such a checkpoint.

pub mod checkpoint;
mod event;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

pub use event::{Decision, Event, JournalRef, Record, json_digest, now_ms};

/// Largest frame body accepted when reading.
pub const MAX_FRAME: usize = 16 << 20;
/// The log's file name inside the data directory.
pub const LOG_FILE: &str = "events.log";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event log: the writer has stopped")]
    WriterGone,
    #[error("event log: cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A problem `verify` found, at a byte offset and (where known) a seq.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub offset: u64,
    pub seq: Option<u64>,
    pub problem: String,
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub frames: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub findings: Vec<Finding>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

fn hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

struct Tail {
    seq: u64,
    hash: [u8; 32],
    len: u64,
}

/// Walk the frames of `bytes`, calling `f` on each intact frame in order.
/// Stops at the first frame it cannot trust and reports why.
fn walk(bytes: &[u8], mut f: impl FnMut(u64, &[u8], u64)) -> (Tail, Vec<Finding>) {
    let mut off = 0usize;
    let mut tail = Tail {
        seq: 0,
        hash: [0; 32],
        len: 0,
    };
    let mut findings = Vec::new();
    while off < bytes.len() {
        let at = off as u64;
        let fail = |problem: String, seq| Finding {
            offset: at,
            seq,
            problem,
        };
        if bytes.len() - off < 4 {
            findings.push(fail("truncated frame header".into(), None));
            break;
        }
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        if !(40..=MAX_FRAME).contains(&len) || bytes.len() - off - 4 < len + 32 {
            findings.push(fail(format!("bad or truncated frame (length {len})"), None));
            break;
        }
        let body = &bytes[off + 4..off + 4 + len];
        let stored: [u8; 32] = bytes[off + 4 + len..off + 4 + len + 32].try_into().unwrap();
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
        let prev: [u8; 32] = body[8..40].try_into().unwrap();
        if hash(body) != stored {
            findings.push(fail(
                "frame hash mismatch (modified entry)".into(),
                Some(seq),
            ));
            break;
        }
        if seq != tail.seq + 1 {
            findings.push(fail(
                format!(
                    "sequence jumps from {} to {seq} (deleted, reordered or inserted entry)",
                    tail.seq
                ),
                Some(seq),
            ));
            break;
        }
        if prev != tail.hash {
            findings.push(fail(
                "chain broken: previous-hash mismatch".into(),
                Some(seq),
            ));
            break;
        }
        if serde_json::from_slice::<Record>(&body[40..]).map_or(true, |r| r.seq != seq) {
            findings.push(fail(
                "payload is not a valid record for its frame".into(),
                Some(seq),
            ));
            break;
        }
        f(seq, &body[40..], at);
        off += 4 + len + 32;
        tail = Tail {
            seq,
            hash: stored,
            len: off as u64,
        };
    }
    (tail, findings)
}

/// Verify a log file's chain from its first frame.
pub fn verify(path: &Path) -> Result<Verification, LogError> {
    let bytes = read_file(path)?;
    let mut frames = 0;
    let (tail, findings) = walk(&bytes, |_, _, _| frames += 1);
    Ok(Verification {
        frames,
        last_seq: tail.seq,
        last_hash: hex::encode(tail.hash),
        findings,
    })
}

/// Every intact record, in order (reading stops at the first bad frame).
pub fn read_records(path: &Path) -> Result<Vec<Record>, LogError> {
    let bytes = read_file(path)?;
    let mut out = Vec::new();
    walk(&bytes, |_, payload, _| {
        if let Ok(r) = serde_json::from_slice::<Record>(payload) {
            out.push(r);
        }
    });
    Ok(out)
}

/// The hash of frame `seq`, if the intact part of the log holds it.
pub fn hash_at(path: &Path, seq: u64) -> Result<Option<String>, LogError> {
    let bytes = read_file(path)?;
    let mut found = None;
    walk(&bytes, |s, payload, at| {
        if s == seq {
            let end = at as usize + 4 + 40 + payload.len();
            found = Some(hex::encode(&bytes[end..end + 32]));
        }
    });
    Ok(found)
}

fn read_file(path: &Path) -> Result<Vec<u8>, LogError> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LogError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<u64, String>>;

/// Called with committed records, in log order, while the committing
/// thread holds the writer: the derived indexes are kept by this callback.
pub type OnCommit = Box<dyn FnMut(&[Record]) + Send>;

/// The append side, with group commit. An appender that finds no commit
/// in progress leads one round itself: it writes everything queued, issues
/// one `fdatasync` and acknowledges — an uncontended append costs no thread
/// hand-off. Appenders arriving meanwhile only queue (and wait
/// asynchronously); if anything is queued after the round, the leader hands
/// the lead to the committer thread, which runs rounds until the queue is
/// empty, so under load no caller's thread is held in `fdatasync` and each
/// round's one sync covers everything that arrived during the last.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
    /// Hand-off flag and its condvar; the committer thread holds only this
    /// (and a weak reference to `shared`), so dropping the last handle
    /// closes the file and releases the index store at once.
    handoff: Arc<(Mutex<bool>, std::sync::Condvar)>,
    path: PathBuf,
    counters: Arc<Counters>,
}

struct Shared {
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<(Vec<Event>, Reply)>,
    /// A round is in progress or the committer thread has the lead.
    leading: bool,
}

struct Writer {
    out: BufWriter<File>,
    seq: u64,
    prev: [u8; 32],
    on_commit: OnCommit,
    sync: bool,
    failed: Option<String>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish()
    }
}

/// Group-commit counters, for the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitStats {
    pub batches: u64,
    pub events: u64,
}

impl EventLog {
    /// Open (or create) the log, checking its chain. A torn last frame (a
    /// crash mid-append: never acknowledged) is cut off; any other damage
    /// refuses to open, naming the offset, so nothing is appended after it.
    pub fn open(path: &Path) -> Result<EventLog, LogError> {
        EventLog::open_with(path, 0, Box::new(|_| {}), true)
    }

    /// Open the log and hand `on_commit` every record after `applied` now,
    /// and every later batch in log order once it is on disk and before it
    /// is acknowledged: the derived indexes are kept by this callback.
    /// `sync = false` skips `fdatasync` (benchmarks of everything but the
    /// disk; never for a deployment).
    pub fn open_with(
        path: &Path,
        applied: u64,
        mut on_commit: OnCommit,
        sync: bool,
    ) -> Result<EventLog, LogError> {
        let io = |source| LogError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        // One appender per log: a second process appending would fork the
        // chain. The lock lives as long as this handle's file.
        file.try_lock().map_err(|e| {
            io(std::io::Error::other(format!(
                "the event log is in use by another charter process ({e}); one host per data directory at a time"
            )))
        })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut replay = Vec::new();
        let (tail, findings) = walk(&bytes, |seq, payload, _| {
            if seq > applied
                && let Ok(r) = serde_json::from_slice::<Record>(payload)
            {
                replay.push(r);
            }
        });
        if !replay.is_empty() {
            tracing::info!(
                from = applied + 1,
                count = replay.len(),
                "re-applying the event log tail to the indexes"
            );
            on_commit(&replay);
        }
        if let Some(f) = findings.first() {
            let torn =
                f.problem.starts_with("bad or truncated") || f.problem.starts_with("truncated");
            if torn && f.offset == tail.len {
                tracing::warn!(
                    offset = f.offset,
                    "event log: cutting a torn final frame (never acknowledged)"
                );
                file.set_len(tail.len).map_err(io)?;
                file.seek(SeekFrom::End(0)).map_err(io)?;
            } else {
                return Err(io(std::io::Error::other(format!(
                    "chain damaged at byte {} (seq {:?}): {}; run `charter audit verify`",
                    f.offset, f.seq, f.problem
                ))));
            }
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            writer: Mutex::new(Writer {
                out: BufWriter::with_capacity(1 << 20, file),
                seq: tail.seq,
                prev: tail.hash,
                on_commit,
                sync,
                failed: None,
            }),
        });
        let log = EventLog {
            shared,
            handoff: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
            path: path.to_owned(),
            counters: Arc::new(Counters::default()),
        };
        let weak = Arc::downgrade(&log.shared);
        let signal = log.handoff.clone();
        let (p, c) = (log.path.clone(), log.counters.clone());
        std::thread::Builder::new()
            .name("charter-committer".into())
            .spawn(move || {
                loop {
                    {
                        let (flag, cv) = &*signal;
                        let mut f = flag.lock().unwrap();
                        while !*f {
                            f = cv
                                .wait_timeout(f, std::time::Duration::from_millis(100))
                                .unwrap()
                                .0;
                            if !*f && weak.strong_count() == 0 {
                                return;
                            }
                        }
                        *f = false;
                    }
                    let Some(shared) = weak.upgrade() else { return };
                    while rounds(&shared, &p, &c) {}
                }
            })
            .map_err(io)?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Group commits (each one `fdatasync`) and events written so far.
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            events: self.counters.events.load(Ordering::Relaxed),
        }
    }

    /// Queue `events`; lead the commit if nobody is. Returns the receiver
    /// of the acknowledgement.
    fn enqueue(&self, events: Vec<Event>) -> tokio::sync::oneshot::Receiver<Result<u64, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = self.shared.queue.lock().unwrap();
            q.pending.push((events, tx));
            !std::mem::replace(&mut q.leading, true)
        };
        if lead && rounds(&self.shared, &self.path, &self.counters) {
            // More arrived during our round: the committer thread leads on.
            let (flag, cv) = &*self.handoff;
            *flag.lock().unwrap() = true;
            cv.notify_one();
        }
        rx
    }

    fn ack(
        &self,
        r: Result<Result<u64, String>, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<u64, LogError> {
        r.map_err(|_| LogError::WriterGone)?
            .map_err(|e| LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })
    }

    /// Append `events` and wait until they are on disk; returns the seq of
    /// the last one.
    pub async fn append(&self, events: Vec<Event>) -> Result<u64, LogError> {
        let rx = self.enqueue(events);
        self.ack(rx.await)
    }

    /// [`append`](Self::append) from synchronous code (not on an async
    /// worker thread).
    pub fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        let rx = self.enqueue(events);
        self.ack(rx.blocking_recv())
    }
}

/// One commit round by the current leader. Returns true if more is queued
/// (the lead is kept), false if the queue is empty (the lead is released).
fn rounds(shared: &Shared, path: &Path, counters: &Counters) -> bool {
    let batch = {
        let mut q = shared.queue.lock().unwrap();
        if q.pending.is_empty() {
            q.leading = false;
            return false;
        }
        std::mem::take(&mut q.pending)
    };
    shared.writer.lock().unwrap().commit(batch, path, counters);
    let mut q = shared.queue.lock().unwrap();
    if q.pending.is_empty() {
        q.leading = false;
        false
    } else {
        true
    }
}

impl Writer {
    /// Write every batch, one `fdatasync`, apply, acknowledge. After a
    /// failure nothing more is written (later frames would chain onto
    /// frames that may not exist).
    fn commit(&mut self, batch: Vec<(Vec<Event>, Reply)>, path: &Path, counters: &Counters) {
        if let Some(e) = &self.failed {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let mut failed: Option<String> = None;
        for (events, reply) in batch {
            for event in events {
                let record = Record {
                    seq: self.seq + 1,
                    time_ms: now_ms(),
                    event,
                };
                let payload = match serde_json::to_vec(&record) {
                    Ok(p) => p,
                    Err(e) => {
                        failed = Some(e.to_string());
                        continue;
                    }
                };
                let mut body = Vec::with_capacity(40 + payload.len());
                body.extend_from_slice(&record.seq.to_le_bytes());
                body.extend_from_slice(&self.prev);
                body.extend_from_slice(&payload);
                let h = hash(&body);
                let w = self
                    .out
                    .write_all(&(body.len() as u32).to_le_bytes())
                    .and_then(|_| self.out.write_all(&body))
                    .and_then(|_| self.out.write_all(&h));
                if let Err(e) = w {
                    failed = Some(e.to_string());
                }
                self.seq += 1;
                self.prev = h;
                committed.push(record);
            }
            acks.push((self.seq, reply));
        }
        let sync = self.sync;
        let synced = self.out.flush().and_then(|_| {
            if sync {
                self.out.get_ref().sync_data()
            } else {
                Ok(())
            }
        });
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .events
            .fetch_add(committed.len() as u64, Ordering::Relaxed);
        if let Some(e) = failed.or(synced.err().map(|e| e.to_string())) {
            tracing::error!(path = %path.display(), "event log write failed: {e}");
            self.failed = Some(e.clone());
            for (_, reply) in acks {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        (self.on_commit)(&committed);
        for (s, reply) in acks {
            let _ = reply.send(Ok(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> Event {
        Event::KvWrite {
            plugin: "p".into(),
            key: format!("k{i}"),
            value: Some("v".into()),
            by: None,
        }
    }

    #[test]
    fn append_verify_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.append_blocking(vec![ev(1), ev(2)]).unwrap(), 2);
        assert_eq!(log.append_blocking(vec![ev(3)]).unwrap(), 3);
        drop(log);
        let v = verify(&path).unwrap();
        assert!(v.ok(), "{:?}", v.findings);
        assert_eq!(v.frames, 3);
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.append_blocking(vec![ev(4)]).unwrap(), 4);
        let recs = read_records(&path).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(recs[3].event, ev(4));
    }

    #[test]
    fn one_appender_per_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = EventLog::open(&path).unwrap();
        let err = EventLog::open(&path).unwrap_err().to_string();
        assert!(err.contains("in use by another charter process"), "{err}");
        drop(log);
        EventLog::open(&path).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = EventLog::open(&path).unwrap();
        log.append_blocking(vec![ev(1), ev(2)]).unwrap();
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        f.set_len(len - 10).unwrap();
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.append_blocking(vec![ev(3)]).unwrap(), 2);
        assert!(verify(&path).unwrap().ok());
    }
}
