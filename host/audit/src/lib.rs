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
//! from 1. A single writer thread does group commit: every batch queued
//! while it was writing shares one `fdatasync`, and no append is
//! acknowledged before its frames are on disk.
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
use std::sync::mpsc;

use sha2::{Digest, Sha256};

pub use event::{Decision, Event, Record, json_digest, now_ms};

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

/// Called with committed records, in log order, on the writer thread.
pub type OnCommit = Box<dyn FnMut(&[Record]) + Send>;

/// The append side: a handle to the group-commit writer thread.
#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::Sender<(Vec<Event>, Reply)>,
    path: PathBuf,
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
        EventLog::open_with(path, 0, Box::new(|_| {}))
    }

    /// Open the log and hand `on_commit` every record after `applied` now,
    /// and every later batch in log order once it is on disk and before it
    /// is acknowledged: the derived indexes are kept by this callback.
    pub fn open_with(
        path: &Path,
        applied: u64,
        mut on_commit: OnCommit,
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
        let (tx, rx) = mpsc::channel::<(Vec<Event>, Reply)>();
        let p = path.to_owned();
        std::thread::Builder::new()
            .name("charter-eventlog".into())
            .spawn(move || writer(file, p, tail.seq, tail.hash, rx, on_commit))
            .map_err(io)?;
        Ok(EventLog {
            tx,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `events` and wait until they are on disk; returns the seq of
    /// the last one.
    pub async fn append(&self, events: Vec<Event>) -> Result<u64, LogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((events, tx))
            .map_err(|_| LogError::WriterGone)?;
        rx.await
            .map_err(|_| LogError::WriterGone)?
            .map_err(|e| LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })
    }

    /// [`append`](Self::append) from synchronous code (not on an async
    /// worker thread).
    pub fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((events, tx))
            .map_err(|_| LogError::WriterGone)?;
        rx.blocking_recv()
            .map_err(|_| LogError::WriterGone)?
            .map_err(|e| LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })
    }
}

fn writer(
    file: File,
    path: PathBuf,
    mut seq: u64,
    mut prev: [u8; 32],
    rx: mpsc::Receiver<(Vec<Event>, Reply)>,
    mut on_commit: OnCommit,
) {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut stats = CommitStats::default();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let mut failed: Option<String> = None;
        for (events, reply) in batch {
            for event in events {
                let record = Record {
                    seq: seq + 1,
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
                committed.push(record);
                let mut body = Vec::with_capacity(40 + payload.len());
                body.extend_from_slice(&(seq + 1).to_le_bytes());
                body.extend_from_slice(&prev);
                body.extend_from_slice(&payload);
                let h = hash(&body);
                let w = out
                    .write_all(&(body.len() as u32).to_le_bytes())
                    .and_then(|_| out.write_all(&body))
                    .and_then(|_| out.write_all(&h));
                if let Err(e) = w {
                    failed = Some(e.to_string());
                }
                seq += 1;
                prev = h;
                stats.events += 1;
            }
            acks.push((seq, reply));
        }
        let synced = out.flush().and_then(|_| out.get_ref().sync_data());
        stats.batches += 1;
        let err = failed.or(synced.err().map(|e| e.to_string()));
        if let Some(e) = &err {
            // Nothing of this batch is acknowledged; later appends would
            // chain onto frames that may not exist, so stop here.
            tracing::error!(path = %path.display(), "event log write failed: {e}");
            for (_, reply) in acks {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        on_commit(&committed);
        for (s, reply) in acks {
            let _ = reply.send(Ok(s));
        }
    }
    tracing::debug!(
        batches = stats.batches,
        events = stats.events,
        "event log writer done"
    );
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
