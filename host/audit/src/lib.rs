//! The event log: the system of record and the audit trail.
//!
//! One append-only file per deployment (`<data_dir>/events.log`): an
//! 8-byte file header, then length-prefixed, hash-chained frames:
//!
//! ```text
//! file   = magic: [u8; 8] | frame*          magic = 89 "CHARTR" 02 (format 2)
//! frame  = len: u32 LE | check: u32 LE | body | hash: [u8; 32]
//! check  = CRC-32C of len's 4 bytes
//! body   = seq: u64 LE | prev: [u8; 32] | payload (JSON of a Record)
//! hash   = sha256(body)
//! ```
//!
//! The record's JSON carries `"end": true` on the last event of each
//! append: an append is all-or-nothing, and frames after the last such
//! mark (an append a crash cut short, never acknowledged) are a torn tail.
//!
//! `len` is the body's length (at most [`MAX_FRAME`]), `prev` the previous
//! frame's hash (zeros for the first), `seq` counts from 1. The header's
//! `check` makes the length self-checking: a damaged length is never taken
//! for a torn write. The magic is written and synced when the file is
//! created; a file holding only part of it (a crash during creation) is
//! re-initialised, and a file that does not start with it (an older
//! charter's log, another program's file) is refused, never "repaired".
//!
//! Appends are group-committed (see [`EventLog`]): everything queued
//! during a round shares one `fdatasync`, and no append is acknowledged
//! before its frames are on disk. One process appends at a time (the file
//! is locked). Each batch is encoded completely before anything of its
//! round is written; an event that could not be read back — a payload over
//! [`MAX_FRAME`] or JSON nested deeper than [`MAX_RECORD_DEPTH`] — refuses
//! its whole batch ([`LogError::Refused`]) and nothing of it is written,
//! while the other batches of the round commit as usual.
//!
//! Opening cuts only a torn final frame — fewer than a header's bytes
//! after an intact frame, a valid header whose frame runs past the end of
//! the file, or a tail of zero bytes (data lost to a power cut) beginning
//! in the frame after the last intact one (at least 8 bytes of them when
//! they begin past its header) — since such a frame was never
//! acknowledged; `verify` reports such a tail apart from damage
//! ([`Verification::torn`]). Any other damage refuses to open, naming the
//! byte offset, so nothing is ever appended after it. A truncation that removes whole
//! frames leaves a shorter valid log, which only a checkpoint can tell
//! from a complete one.
//!
//! A plain hash chain catches accidental damage and naive edits; an editor
//! who recomputes every later hash is caught by signed checkpoints
//! (ed25519, key in the data directory, [`checkpoint`]) exported somewhere
//! the editor cannot reach. `verify` also catches a truncated tail against
//! such a checkpoint.
//!
//! # Test hook: `CHARTER_TEST_CRASH_AT`
//!
//! Crash tests set `CHARTER_TEST_CRASH_AT=<n>[:partial|:zeros]` (read once
//! when a log is opened). The log then counts its I/O boundaries — just
//! before and just after every write syscall to the log file and every
//! `fdatasync`, from the file's creation on, starting at 1 — and calls
//! `std::process::abort()` at the n-th. With `:partial`, a crash that falls
//! just before a write first writes the first half of that write's buffer
//! (a torn write); with `:zeros`, the first half and then zeros for the
//! rest (a power cut after the file grew). A malformed value refuses to
//! open the log. The hook can only kill the process, which whoever sets
//! its environment can do anyway.

mod any;
pub mod backend;
pub mod checkpoint;
pub mod conformance;
mod encode;
mod event;
mod fault;
mod frame;
#[cfg(test)]
mod log_tests;
mod mark;
mod mem;
mod read;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

pub use any::{AnyLog, BoxFuture, DynLog};
pub use event::{
    Decision, Event, JournalRef, Record, TriggerRef, json_digest, now_ms, parse_json, present,
};
pub use fault::CRASH_ENV;
pub use frame::{FRAME_HEADER_LEN, LOG_MAGIC, json_depth, nesting_depth};
pub use mark::{Opened, Verified};
pub use mem::{MemDisk, MemLog};
pub use read::{Filter, read_from_position, read_positions};

use fault::{Fault, LogFile};
use frame::{BODY_PREFIX, End, Tail, walk};

/// Largest frame body (`seq | prev | payload`) a frame may hold: the writer
/// refuses an event whose payload would need more, and a header declaring
/// more is damage to the reader.
pub const MAX_FRAME: usize = 16 << 20;
/// Largest encoded payload (JSON of a [`Record`]) of one event.
pub const MAX_PAYLOAD: usize = MAX_FRAME - BODY_PREFIX;
/// Deepest nesting of arrays and objects the writer accepts in a record's
/// JSON (the record's own object counts 1). serde_json's reader stops at
/// 128, so everything written can be read back.
pub const MAX_RECORD_DEPTH: usize = 100;
/// Deepest JSON value ([`json_depth`]) the runtime should put into an
/// event (step inputs and outputs, call arguments and results): far enough
/// below [`MAX_RECORD_DEPTH`] to leave room for the event's own structure.
pub const MAX_VALUE_DEPTH: usize = 64;
/// The log's file name inside the data directory.
pub const LOG_FILE: &str = "events.log";

/// Largest single write to the file; a round is written in chunks of this
/// size (what the old 1 MiB `BufWriter` did), so a large round reaches the
/// file in several writes.
const WRITE_CHUNK: usize = 1 << 20;
/// The shortest last write of a round (a short one is folded into the
/// write before it).
const MIN_LAST_WRITE: usize = 64;

/// How to repair a log that refuses to open.
const REPAIR: &str = "restore the data directory from a backup, or move events.log aside; \
                      `charter audit verify` shows the damage";

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
    /// The batch could not go into the log (see the crate docs); nothing of
    /// it was written and the log stays usable.
    #[error("event log: batch refused, nothing of it written: {0}")]
    Refused(String),
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
    /// A torn final frame (or zero-filled tail, or partly written file
    /// header) after the intact frames: a crash mid-append, never
    /// acknowledged, which opening the log cuts. Not damage, so not among
    /// the findings; a truncation is caught by checkpoints, not here.
    pub torn: Option<Finding>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verify a log file's chain from its first frame. A torn final frame is
/// not damage (it was never acknowledged; opening the log cuts it): it is
/// reported in [`Verification::torn`], not among the findings.
pub fn verify(path: &Path) -> Result<Verification, LogError> {
    let bytes = read_file(path)?;
    let mut frames = 0;
    let (tail, end) = walk(&bytes, |_, _, _| frames += 1);
    Ok(verification(frames, tail, end, bytes.is_empty()))
}

/// A walk's outcome as [`verify`] reports it.
pub(crate) fn verification(frames: u64, tail: Tail, end: End, empty: bool) -> Verification {
    let (findings, torn) = match end {
        End::Clean => (vec![], None),
        End::Uninitialised if empty => (vec![], None),
        End::Uninitialised => (
            vec![],
            Some(Finding {
                offset: 0,
                seq: None,
                problem: "incomplete file header (a crash while the log was created; opening the log re-initialises it)".into(),
            }),
        ),
        End::Foreign(problem) => (
            vec![Finding {
                offset: 0,
                seq: None,
                problem,
            }],
            None,
        ),
        End::Torn { at, seq, problem } => (
            vec![],
            Some(Finding {
                offset: at,
                seq: Some(seq),
                problem,
            }),
        ),
        End::Damaged(f) => (vec![f], None),
    };
    Verification {
        frames,
        last_seq: tail.seq,
        last_hash: hex::encode(tail.hash),
        findings,
        torn,
    }
}

/// Every record of the log's whole batches, in order. A torn final batch
/// (an append in progress, or a crash) is left out: it was never
/// acknowledged. Damage, or a file that is not an event log of this
/// format, is an error naming the offset: a report over a damaged log
/// must not look complete.
pub fn read_records(path: &Path) -> Result<Vec<Record>, LogError> {
    let bytes = read_file(path)?;
    let mut out = Vec::new();
    let (_, end) = walk(&bytes, |r, _, _| out.push(r));
    let problem = match end {
        End::Foreign(problem) => problem,
        End::Damaged(f) => {
            let seq = f.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
            format!(
                "chain damaged at byte {}{seq}: {}; `charter audit verify` shows the damage",
                f.offset, f.problem
            )
        }
        _ => return Ok(out),
    };
    Err(LogError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(problem),
    })
}

/// The hash of frame `seq`, if the intact part of the log holds it.
pub fn hash_at(path: &Path, seq: u64) -> Result<Option<String>, LogError> {
    let bytes = read_file(path)?;
    let mut found = None;
    walk(&bytes, |r, _, h| {
        if r.seq == seq {
            found = Some(hex::encode(h));
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

/// Why an append was not acknowledged.
enum Nack {
    /// The log failed (and stays failed).
    Io(String),
    /// This batch could not go into the log; nothing of it was written.
    Refused(String),
}

type Reply = tokio::sync::oneshot::Sender<Result<u64, Nack>>;

/// A precondition of one append ([`Log::append_guarded`]), run by the
/// writer just before the batch is encoded, while it holds the writer and
/// before anything of the batch is written: an `Err` refuses the batch
/// alone ([`LogError::Refused`] with this text), nothing of it written.
/// What a run's lease fences a stalled driver with: the check and the
/// write are one step of the one writer, so no other append of the log
/// comes between them.
///
/// A log that several processes write (PostgreSQL shared by nodes) also
/// checks the guard's [`Fence`], if it has one, inside the transaction
/// that writes the batch: there the check closure alone would race with
/// another node's claim.
pub struct Guard {
    check: Box<dyn FnOnce() -> Result<(), String> + Send>,
    fence: Option<Fence>,
}

impl Guard {
    /// A guard that runs `check`.
    pub fn new(check: impl FnOnce() -> Result<(), String> + Send + 'static) -> Guard {
        Guard {
            check: Box::new(check),
            fence: None,
        }
    }

    /// A guard that runs `check` and, on a log shared by several
    /// processes, also holds `fence` in the writing transaction.
    pub fn fenced(
        check: impl FnOnce() -> Result<(), String> + Send + 'static,
        fence: Fence,
    ) -> Guard {
        Guard {
            check: Box::new(check),
            fence: Some(fence),
        }
    }

    /// The stored lease this guard requires, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

/// A lease an append requires, as stored in the deployment's state: the
/// value at `ns`/`key` is a JSON object whose `token` field is `token`. A
/// shared log reads that row inside the transaction that writes the batch,
/// locked until the commit, and refuses the batch if it differs: a claim
/// by another node (which replaces the token) is either committed before
/// (the batch is refused) or waits for the batch's commit (and then sees
/// it). So a node that stalled past its lease is refused by the database,
/// whatever its own clock and checks said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub ns: String,
    pub key: String,
    pub token: String,
}

/// Run `guard`'s check, a panic in it being a refusal (it must not take
/// the round's other batches down with it).
pub(crate) fn run_guard(guard: Guard) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(guard.check))
        .unwrap_or_else(|_| Err("the append's precondition panicked".into()))
}

/// Called with committed records and their positions (byte offsets of
/// their frames, for [`read_positions`]), in log order, once they are on
/// disk and before they are acknowledged: the derived indexes are kept by
/// this callback. The file log calls it on the writing thread for a
/// round nobody waits behind, and under load on its own applying thread,
/// so that the next round is encoded, written and synced while this one
/// is applied. An `Err` stops the log: the records are on disk (and so
/// may be the next round's, written meanwhile and refused to its
/// appenders), but every append from then on fails with that error (the
/// index could no longer be trusted to follow the log); whoever opens the
/// log next hands the callback every record after the index's last
/// applied one again.
/// A panic in the callback is caught and logged; it stops nothing and
/// poisons no lock (the callback must notice the gap itself: the
/// runtime's index refuses records that do not follow its last one).
pub type OnCommit = Box<dyn FnMut(&[Record], &[u64]) -> Result<(), String> + Send>;

/// Lock a mutex whose guarded state is consistent at every point a panic
/// could unwind from (each is updated by plain assignments after the
/// fallible work): a panic elsewhere never turns into a dead log.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every this many records, the sparse index holds one frame's position.
const STRIDE: u64 = 64;

/// Where frames are, for reads that do not walk the whole file: the
/// position of every [`STRIDE`]-th record (seq 1, 1 + STRIDE, …) and the
/// committed length (frames below it are whole batches and never change).
///
/// A log opened from a verified mark ([`EventLog::open_verified`]) knows
/// positions only from the mark on: `first` is the stride of `sparse[0]`,
/// and a record before it is read from the marked frame (`floor`) or, if
/// older, from the first frame of the file.
#[derive(Debug, Default)]
struct Positions {
    sparse: Vec<u64>,
    first: u64,
    floor: Option<Verified>,
    last_seq: u64,
    end: u64,
}

impl Positions {
    fn note(&mut self, seq: u64, at: u64) {
        if (seq - 1).is_multiple_of(STRIDE)
            && self.first + self.sparse.len() as u64 == (seq - 1) / STRIDE
        {
            self.sparse.push(at);
        }
    }
    /// Positions are noted from the frame after `mark` on.
    fn start_after(&mut self, mark: Verified) {
        self.first = mark.seq.div_ceil(STRIDE);
        self.floor = Some(mark);
    }
    /// A position at or before record `seq`'s frame.
    fn before(&self, seq: u64) -> Option<u64> {
        let i = (seq.max(1) - 1) / STRIDE;
        if i < self.first {
            return Some(match self.floor {
                Some(m) if seq >= m.seq => m.at,
                _ => LOG_MAGIC.len() as u64,
            });
        }
        self.sparse.get((i - self.first) as usize).copied()
    }
}

/// The append side, with group commit. An appender that finds no commit
/// in progress leads one round itself: it writes everything queued, issues
/// one `fdatasync`, applies and acknowledges — an uncontended append costs
/// no thread hand-off. Appenders arriving meanwhile only queue (and wait
/// asynchronously); if anything is queued after the round, the leader hands
/// the lead to the committer thread, which runs rounds until the queue is
/// empty, so under load no caller's thread is held in `fdatasync` and each
/// round's one sync covers everything that arrived during the last. Under
/// load a written round goes to the applying thread, which hands it to
/// the commit callback and acknowledges it while the next round is
/// written: the disk's wait and the index's work overlap.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
    /// Hand-off flag and its condvar; the committer thread holds only this
    /// (and a weak reference to `shared`), so dropping the last handle
    /// closes the file at once (and the applying thread, which finishes
    /// what it was given, then drops the callback with its index).
    handoff: Arc<(Mutex<bool>, std::sync::Condvar)>,
    path: PathBuf,
    counters: Arc<Counters>,
}

struct Shared {
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
    positions: RwLock<Positions>,
    /// The commit callback's side, shared with the applying thread.
    applier: Arc<Applier>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<(Vec<Event>, Option<Guard>, Reply)>,
    /// A round is in progress or the committer thread has the lead.
    leading: bool,
}

struct Writer {
    out: LogFile,
    seq: u64,
    prev: [u8; 32],
    /// The file's length: where the next frame goes.
    end: u64,
    /// Rounds on disk, to the applying thread (`apply_rounds`), when
    /// other appenders wait: it applies and acknowledges them while the
    /// next round is written. A rendezvous channel: the writer hands
    /// over the next round only once the applier has finished this one
    /// (and has recorded a failure), so at most one round is on disk
    /// beyond the one being applied.
    to_applier: std::sync::mpsc::SyncSender<Written>,
    applier: Arc<Applier>,
    sync: bool,
    failed: Option<String>,
}

/// The commit callback and what goes with it: used by the writer itself
/// for a round nobody else waits behind (no thread hand-off), and by the
/// applying thread under load. Rounds reach it in log order either way:
/// the writer applies inline only when no round is in flight.
struct Applier {
    on_commit: Mutex<OnCommit>,
    /// Set when the callback failed: nothing more is written, and rounds
    /// written meanwhile are refused.
    failed: Mutex<Option<String>>,
    /// Rounds sent to the applying thread and not yet acknowledged.
    in_flight: AtomicU64,
    /// The last seq handed to the callback (applied, or refused by a
    /// callback that failed or panicked), for subscribers; the log's
    /// `last_seq` may be a round ahead of it.
    tail: tokio::sync::watch::Sender<u64>,
    path: PathBuf,
}

/// One round on disk, waiting for the commit callback.
struct Written {
    records: Vec<Record>,
    at: Vec<u64>,
    acks: Vec<(u64, Reply)>,
    seq: u64,
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
        EventLog::open_with(path, 0, Box::new(|_, _| Ok(())), true)
    }

    /// Open the log and hand `on_commit` every record after `applied` now,
    /// and every later batch in log order once it is on disk and before it
    /// is acknowledged: the derived indexes are kept by this callback.
    /// `sync = false` skips `fdatasync` (benchmarks of everything but the
    /// disk; never for a deployment).
    pub fn open_with(
        path: &Path,
        applied: u64,
        on_commit: OnCommit,
        sync: bool,
    ) -> Result<EventLog, LogError> {
        let fault = Fault::from_env().map_err(|e| LogError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        EventLog::open_inner(path, applied, on_commit, sync, fault)
    }

    /// [`open_with`](Self::open_with), with crash injection given directly
    /// (tests) instead of from the environment.
    pub(crate) fn open_inner(
        path: &Path,
        applied: u64,
        on_commit: OnCommit,
        sync: bool,
        fault: Option<Fault>,
    ) -> Result<EventLog, LogError> {
        Ok(EventLog::open_from(path, None, applied, on_commit, sync, fault)?.0)
    }

    /// Open the log checking the chain from the frame `from` names (see
    /// [`EventLog::open_verified`]), or from the start without one. Long
    /// because opening is one sequence over one file and its tail's marks
    /// (lock, scan, cut or refuse, replay, start the committer).
    pub(crate) fn open_from(
        path: &Path,
        from: Option<Verified>,
        applied: u64,
        mut on_commit: OnCommit,
        sync: bool,
        fault: Option<Fault>,
    ) -> Result<(EventLog, Opened), LogError> {
        let io = |source| LogError::Io {
            path: path.to_owned(),
            source,
        };
        let refuse = |msg: String| io(std::io::Error::other(msg));
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
        let mut replay = Vec::new();
        let mut replay_at = Vec::new();
        let mut positions = Positions::default();
        let mut last = None;
        let scan = mark::scan(
            &mut file,
            path,
            from,
            applied,
            &mut positions,
            |r, at, h| {
                last = Some(Verified {
                    seq: r.seq,
                    at,
                    hash: *h,
                });
                if r.seq > applied {
                    replay.push(r);
                    replay_at.push(at);
                }
            },
        )?;
        let (tail, end) = (scan.tail, scan.end);
        let mut out = LogFile::new(file, fault);
        match end {
            End::Clean => {}
            End::Uninitialised => {
                if scan.bytes > 0 {
                    tracing::warn!(
                        bytes = scan.bytes,
                        "event log: re-initialising a file holding only part of its header (a crash during creation)"
                    );
                    out.set_len(0).map_err(io)?;
                }
                out.write_all(&LOG_MAGIC)
                    .and_then(|_| out.sync_data())
                    .map_err(io)?;
                sync_dir(path);
            }
            End::Foreign(problem) => {
                return Err(refuse(format!("{problem}. Refusing to touch it: {REPAIR}")));
            }
            End::Torn { at, problem, .. } => {
                tracing::warn!(offset = at, "event log: cutting at byte {at}: {problem}");
                out.set_len(at).map_err(io)?;
                out.sync_data().map_err(io)?;
            }
            End::Damaged(f) => {
                let seq = f.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
                return Err(refuse(format!(
                    "chain damaged at byte {}{seq}: {}. Nothing is appended after damage: {REPAIR}",
                    f.offset, f.problem
                )));
            }
        }
        let tail = Tail {
            len: tail.len.max(LOG_MAGIC.len() as u64),
            ..tail
        };
        let pos = out.file().seek(SeekFrom::End(0)).map_err(io)?;
        debug_assert_eq!(pos, tail.len);
        if !replay.is_empty() {
            tracing::info!(
                from = applied + 1,
                count = replay.len(),
                "re-applying the event log tail to the indexes"
            );
            on_commit(&replay, &replay_at).map_err(refuse)?;
        }
        drop(replay);
        positions.last_seq = tail.seq;
        positions.end = tail.len;
        let applier = Arc::new(Applier {
            on_commit: Mutex::new(on_commit),
            failed: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            tail: tokio::sync::watch::Sender::new(tail.seq),
            path: path.to_owned(),
        });
        let (to_applier, written) = std::sync::mpsc::sync_channel(0);
        {
            let applier = applier.clone();
            std::thread::Builder::new()
                .name("charter-applier".into())
                .spawn(move || apply_rounds(written, &applier))
                .map_err(io)?;
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            writer: Mutex::new(Writer {
                out,
                seq: tail.seq,
                prev: tail.hash,
                end: tail.len,
                to_applier,
                applier: applier.clone(),
                sync,
                failed: None,
            }),
            positions: RwLock::new(positions),
            applier,
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
                        let mut f = lock(flag);
                        while !*f {
                            f = cv
                                .wait_timeout(f, std::time::Duration::from_millis(100))
                                .unwrap_or_else(PoisonError::into_inner)
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
        let opened = Opened {
            verified: last.or(scan.mark).unwrap_or(Verified {
                seq: 0,
                at: LOG_MAGIC.len() as u64,
                hash: [0; 32],
            }),
            checked: scan.checked,
            from_mark: scan.mark.is_some(),
        };
        Ok((log, opened))
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
    fn enqueue(
        &self,
        events: Vec<Event>,
        guard: Option<Guard>,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, Nack>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = lock(&self.shared.queue);
            q.pending.push((events, guard, tx));
            !std::mem::replace(&mut q.leading, true)
        };
        if lead && rounds(&self.shared, &self.path, &self.counters) {
            // More arrived during our round: the committer thread leads on.
            let (flag, cv) = &*self.handoff;
            *lock(flag) = true;
            cv.notify_one();
        }
        rx
    }

    fn ack(
        &self,
        r: Result<Result<u64, Nack>, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<u64, LogError> {
        match r.map_err(|_| LogError::WriterGone)? {
            Ok(seq) => Ok(seq),
            Err(Nack::Refused(e)) => Err(LogError::Refused(e)),
            Err(Nack::Io(e)) => Err(LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// Append `events` and wait until they are on disk; returns the seq of
    /// the last one. A batch holding an event the log cannot take (see
    /// [`LogError::Refused`]) is refused whole.
    pub async fn append(&self, events: Vec<Event>) -> Result<u64, LogError> {
        let rx = self.enqueue(events, None);
        self.ack(rx.await)
    }

    /// [`append`](Self::append) if `guard` passes when the writer takes
    /// the batch (see [`Guard`]); refused whole otherwise.
    pub async fn append_guarded(&self, events: Vec<Event>, guard: Guard) -> Result<u64, LogError> {
        let rx = self.enqueue(events, Some(guard));
        self.ack(rx.await)
    }

    /// [`append`](Self::append) from synchronous code (not on an async
    /// worker thread).
    pub fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        let rx = self.enqueue(events, None);
        self.ack(rx.blocking_recv())
    }
}

/// The durable event log, as every backend offers it: the file log
/// ([`EventLog`]) and the in-memory one ([`MemLog`]) pass one conformance
/// suite ([`conformance`]); a shared backend will be correct when it does.
///
/// - `append`: a batch, all-or-nothing, acknowledged only once durable;
///   returns the last seq. A batch holding an event a reader could not
///   take is refused whole ([`LogError::Refused`]).
/// - `read`: the records from a seq on that a [`Filter`] matches, without
///   reading what comes before where the backend can avoid it.
/// - `read_at`: the records at positions the commit callback reported
///   (a per-run index's entries), reading only those.
/// - `last_seq` / `subscribe`: the tail, and a watch of it.
///
/// The writer's exclusion is the backend's opening: a second writer of
/// the same log is refused while the first has it open.
pub trait Log: Send + Sync + std::fmt::Debug {
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send;
    /// `append`, refused whole unless `guard` passes at the moment the
    /// writer takes the batch, with no other append between the check and
    /// the write (see [`Guard`]).
    fn append_guarded(
        &self,
        events: Vec<Event>,
        guard: Guard,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send;
    fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError>;
    fn read(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError>;
    fn read_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError>;
    fn last_seq(&self) -> u64;
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// A seq from which a read holds every record written at or after
    /// `time_ms` (by the writer's clock, which a reader treats as roughly
    /// ordered: callers subtract a margin): where a reader of a recent
    /// window starts instead of at seq 1. The default, 1, is always right;
    /// a backend that can find the place without reading what comes
    /// before it says so.
    fn seq_before_time(&self, _time_ms: u64) -> Result<u64, LogError> {
        Ok(1)
    }
}

impl EventLog {
    /// The last committed seq.
    pub fn last_seq(&self) -> u64 {
        self.shared
            .positions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_seq
    }

    /// A watch of the last seq handed to the index (changes after each
    /// round's apply; [`EventLog::last_seq`] may be a round ahead).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.applier.tail.subscribe()
    }

    /// The records from `from` on that `filter` matches, with their
    /// positions: reads the file from the sparse index's nearest frame at
    /// or before `from`, not from its start.
    pub fn read_with_positions(
        &self,
        from: u64,
        filter: &Filter,
    ) -> Result<Vec<(Record, u64)>, LogError> {
        let (start, end, last) = {
            let p = self
                .shared
                .positions
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (p.before(from), p.end, p.last_seq)
        };
        match start {
            Some(at) if from <= last => read::read_committed(&self.path, at, end, from, filter),
            _ => Ok(vec![]),
        }
    }

    /// The records from the frame at `position` (a frame start the commit
    /// callback reported) to the end of the committed log that `filter`
    /// matches: reads only that part of the file, each frame checked on
    /// its own.
    pub fn read_from(&self, position: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        let end = self
            .shared
            .positions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .end;
        Ok(read::read_committed(&self.path, position, end, 0, filter)?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    /// [`EventLog::read_from`] with each record's position: where a reader
    /// that follows the log (`/metrics`) starts its next read.
    pub fn read_from_at(
        &self,
        position: u64,
        filter: &Filter,
    ) -> Result<Vec<(Record, u64)>, LogError> {
        let end = self
            .shared
            .positions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .end;
        read::read_committed(&self.path, position, end, 0, filter)
    }

    /// The hash of frame `seq` ([`hash_at`] for an open log): read from
    /// the sparse index's nearest frame at or before it, one stride of
    /// frames at most, each checked on its own (header, hash, seq), instead
    /// of walking the whole file.
    pub fn hash_at(&self, seq: u64) -> Result<Option<String>, LogError> {
        let (start, end, last) = {
            let p = self
                .shared
                .positions
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (p.before(seq), p.end, p.last_seq)
        };
        match start {
            Some(at) if (1..=last).contains(&seq) => {
                Ok(read::hash_from(&self.path, at, end, seq)?.map(hex::encode))
            }
            _ => Ok(None),
        }
    }

    /// The records at `positions`, reading only those frames (each must
    /// lie in the committed part of the log).
    pub fn read_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        let end = self
            .shared
            .positions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .end;
        read::read_positions_until(&self.path, positions, Some(end))
    }

    /// [`Log::seq_before_time`]: a binary search over the sparse index's
    /// frames (one frame read per step, about 14 at 10^6 events) for the
    /// last noted frame written before `time_ms`; 1 when none is (or the
    /// records before the index's first noted frame may matter).
    pub fn seq_before_time(&self, time_ms: u64) -> Result<u64, LogError> {
        let (sparse, first) = {
            let p = self
                .shared
                .positions
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (p.sparse.clone(), p.first)
        };
        let time_at = |i: usize| -> Result<u64, LogError> {
            Ok(self
                .read_at(&sparse[i..=i])?
                .first()
                .map_or(u64::MAX, |r| r.time_ms))
        };
        // Invariant: every noted frame before `lo` was written before
        // `time_ms`; none from `hi` on was.
        let (mut lo, mut hi) = (0, sparse.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if time_at(mid)? < time_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // `lo - 1` is the last frame written before `time_ms`.
        Ok(match lo {
            0 => 1,
            i => (first + i as u64 - 1) * STRIDE + 1,
        })
    }
}

impl Log for EventLog {
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send {
        EventLog::append(self, events)
    }
    fn append_guarded(
        &self,
        events: Vec<Event>,
        guard: Guard,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send {
        EventLog::append_guarded(self, events, guard)
    }
    fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        EventLog::append_blocking(self, events)
    }
    fn read(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        Ok(self
            .read_with_positions(from, filter)?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }
    fn read_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        EventLog::read_at(self, positions)
    }
    fn last_seq(&self) -> u64 {
        EventLog::last_seq(self)
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        EventLog::subscribe(self)
    }
    fn seq_before_time(&self, time_ms: u64) -> Result<u64, LogError> {
        EventLog::seq_before_time(self, time_ms)
    }
}

/// Make a newly created file's directory entry durable (best effort).
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), "event log: cannot sync the directory: {e}");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// One commit round by the current leader. Returns true if more is queued
/// (the lead is kept), false if the queue is empty (the lead is released).
fn rounds(shared: &Shared, path: &Path, counters: &Counters) -> bool {
    let batch = {
        let mut q = lock(&shared.queue);
        if q.pending.is_empty() {
            q.leading = false;
            return false;
        }
        std::mem::take(&mut q.pending)
    };
    lock(&shared.writer).commit(batch, path, counters, shared);
    let mut q = lock(&shared.queue);
    if q.pending.is_empty() {
        q.leading = false;
        false
    } else {
        true
    }
}

impl Writer {
    /// Encode every batch (refusing, alone, a batch the log cannot take),
    /// write the round, one `fdatasync`, then apply and acknowledge it here
    /// when nobody waits behind it, or else hand it to the applying
    /// thread, which does so while the next round is written. After a
    /// write failure, or a failure of the callback,
    /// nothing more is written (later frames would chain onto frames that
    /// may not exist; an index that failed no longer follows the log).
    ///
    /// Longer than most functions here because encoding, writing and
    /// acknowledging share the round's marks; split, they would pass them
    /// around in a struct that says no more than this does.
    fn commit(
        &mut self,
        batch: Vec<(Vec<Event>, Option<Guard>, Reply)>,
        path: &Path,
        counters: &Counters,
        shared: &Shared,
    ) {
        if self.failed.is_none() {
            self.failed = lock(&self.applier.failed).clone();
        }
        if let Some(e) = &self.failed {
            for (_, _, reply) in batch {
                let _ = reply.send(Err(Nack::Io(e.clone())));
            }
            return;
        }
        let mut round = Vec::new();
        let mut acks = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let mut at = Vec::new();
        let (mut seq, mut prev) = (self.seq, self.prev);
        let mut payload = Vec::with_capacity(1024);
        for (events, guard, reply) in batch {
            if let Some(Err(e)) = guard.map(run_guard) {
                tracing::warn!(path = %path.display(), "event log: an append's precondition refused it: {e}");
                let _ = reply.send(Err(Nack::Refused(e)));
                continue;
            }
            let mark = (round.len(), committed.len(), seq, prev);
            let mut refused = None;
            let n = events.len();
            for (i, event) in events.into_iter().enumerate() {
                let record = Record {
                    seq: seq + 1,
                    time_ms: now_ms(),
                    end: i + 1 == n,
                    event,
                };
                payload.clear();
                let problem = match event::encode_record(&record, &mut payload) {
                    Ok(()) => match frame::refusal(&payload) {
                        None => {
                            at.push(self.end + round.len() as u64);
                            prev = frame::encode_frame(&mut round, record.seq, &prev, &payload);
                            seq = record.seq;
                            committed.push(record);
                            continue;
                        }
                        Some(p) => p,
                    },
                    Err(e) => format!("it cannot be encoded: {e}"),
                };
                refused = Some(format!(
                    "event {} of the batch ({}) cannot go into the log: {problem}",
                    i + 1,
                    record.event.kind()
                ));
                break;
            }
            match refused {
                None => acks.push((seq, reply)),
                Some(e) => {
                    tracing::warn!(path = %path.display(), "event log: {e}");
                    round.truncate(mark.0);
                    committed.truncate(mark.1);
                    at.truncate(mark.1);
                    (seq, prev) = (mark.2, mark.3);
                    let _ = reply.send(Err(Nack::Refused(e)));
                }
            }
        }
        if acks.is_empty() {
            return;
        }
        let mut written = Ok(());
        let mut start = 0;
        while start < round.len() {
            // No write shorter than a frame header's worth of bytes at the
            // end of a round: a torn last write then always leaves either
            // a short header or a zero tail the reader recognises as torn.
            let mut stop = (start + WRITE_CHUNK).min(round.len());
            if round.len() - stop < MIN_LAST_WRITE {
                stop = round.len();
            }
            written = self.out.write_all(&round[start..stop]);
            if written.is_err() {
                break;
            }
            start = stop;
        }
        let sync = self.sync;
        let synced = written.and_then(|_| if sync { self.out.sync_data() } else { Ok(()) });
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .events
            .fetch_add(committed.len() as u64, Ordering::Relaxed);
        if let Err(e) = synced {
            let e = e.to_string();
            tracing::error!(path = %path.display(), "event log write failed: {e}");
            self.failed = Some(e.clone());
            for (_, reply) in acks {
                let _ = reply.send(Err(Nack::Io(e.clone())));
            }
            return;
        }
        (self.seq, self.prev) = (seq, prev);
        self.end += round.len() as u64;
        {
            let mut p = shared
                .positions
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (r, &a) in committed.iter().zip(&at) {
                p.note(r.seq, a);
            }
            (p.last_seq, p.end) = (seq, self.end);
        }
        let round = Written {
            records: committed,
            at,
            acks,
            seq,
        };
        // Nobody waits behind this round and nothing is in flight: apply
        // it here (the writer is held, so no round can overtake it).
        // Otherwise the applying thread takes it and the next round is
        // written meanwhile.
        let waiting = !lock(&shared.queue).pending.is_empty();
        if !waiting && self.applier.in_flight.load(Ordering::SeqCst) == 0 {
            self.applier.apply(round);
            return;
        }
        self.applier.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(std::sync::mpsc::SendError(round)) = self.to_applier.send(round) {
            // The applying thread is gone (it panicked outside the
            // callback): nothing can keep the index now.
            self.applier.in_flight.fetch_sub(1, Ordering::SeqCst);
            let e = "the event log's applying thread stopped".to_string();
            tracing::error!(path = %path.display(), "event log: {e}");
            self.failed = Some(e.clone());
            for (_, reply) in round.acks {
                let _ = reply.send(Err(Nack::Io(e.clone())));
            }
        }
    }
}

/// The applying thread: each round sent to it goes to the commit
/// callback, then its appenders are acknowledged, in log order. Runs
/// until the writer (and with it the sending side) is dropped.
fn apply_rounds(rounds: std::sync::mpsc::Receiver<Written>, applier: &Applier) {
    for round in rounds {
        applier.apply(round);
        applier.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Applier {
    /// Hand one round on disk to the commit callback, then acknowledge its
    /// appenders (or refuse them, the callback having failed).
    fn apply(&self, round: Written) {
        let Written {
            records,
            at,
            acks,
            seq,
        } = round;
        let path = self.path.display();
        if let Some(e) = lock(&self.failed).clone() {
            // Written after the callback failed on an earlier round: on
            // disk, never applied, refused (the next open re-applies it).
            for (_, reply) in acks {
                let _ = reply.send(Err(Nack::Io(e.clone())));
            }
            return;
        }
        let applied = {
            let mut on_commit = lock(&self.on_commit);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (*on_commit)(&records, &at)))
        };
        self.tail.send_replace(seq);
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(path = %path, "event log: the index could not apply seq ..={seq}: {e}");
                *lock(&self.failed) = Some(e.clone());
                for (_, reply) in acks {
                    let _ = reply.send(Err(Nack::Io(e.clone())));
                }
                return;
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(path = %path, "event log: the commit callback panicked on seq ..={seq} ({what}); the records are on disk and the log goes on");
            }
        }
        for (s, reply) in acks {
            let _ = reply.send(Ok(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_tests::ev;

    #[test]
    fn append_verify_reopen() {
        let _guard = crate::log_tests::no_spawning();
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
    fn hash_at_through_the_sparse_index_is_the_walks() {
        let _guard = crate::log_tests::no_spawning();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = EventLog::open(&path).unwrap();
        for i in 0..100 {
            log.append_blocking(vec![ev(2 * i), ev(2 * i + 1), ev(2 * i + 2)])
                .unwrap();
        }
        let check = |log: &EventLog| {
            for seq in [1, 2, 63, 64, 65, 66, 128, 129, 200, 299, 300] {
                let walked = hash_at(&path, seq).unwrap();
                assert!(walked.is_some(), "{seq}");
                assert_eq!(log.hash_at(seq).unwrap(), walked, "seq {seq}");
            }
            for seq in [0, 301, u64::MAX] {
                assert_eq!(log.hash_at(seq).unwrap(), None, "seq {seq}");
            }
        };
        check(&log);
        drop(log);
        check(&EventLog::open(&path).unwrap());
    }

    /// A reader of a recent window starts near it: at the last noted frame
    /// written before the time asked, so that every record from then on
    /// is read, and at 1 when nothing before it is known; the same after
    /// a reopen (the index is rebuilt from the file).
    #[test]
    fn seq_before_time_starts_a_window_read_near_its_start() {
        let _guard = crate::log_tests::no_spawning();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = EventLog::open(&path).unwrap();
        for i in 0..100 {
            log.append_blocking(vec![ev(2 * i), ev(2 * i + 1)]).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let later = now_ms();
        for i in 0..100 {
            log.append_blocking(vec![ev(2 * i), ev(2 * i + 1)]).unwrap();
        }
        let check = |log: &EventLog| {
            assert_eq!(log.seq_before_time(0).unwrap(), 1);
            let from = log.seq_before_time(later).unwrap();
            // Every record at or after `later` is at or after `from`, and
            // `from` is the last noted frame (every 64th) before them.
            let first_later = read_records(&path)
                .unwrap()
                .into_iter()
                .find(|r| r.time_ms >= later)
                .unwrap()
                .seq;
            assert!(from <= first_later, "{from} > {first_later}");
            assert!(
                first_later - from < STRIDE,
                "{from} is far from {first_later}"
            );
            assert_eq!((from - 1) % STRIDE, 0, "{from} is a noted frame");
            let end = log.seq_before_time(u64::MAX).unwrap();
            assert!(end <= 400 && 400 - end < STRIDE, "{end}");
        };
        check(&log);
        drop(log);
        check(&EventLog::open(&path).unwrap());
    }

    #[test]
    fn one_appender_per_log() {
        let _guard = crate::log_tests::no_spawning();
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
        let _guard = crate::log_tests::no_spawning();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = EventLog::open(&path).unwrap();
        log.append_blocking(vec![ev(1), ev(2)]).unwrap();
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        f.set_len(len - 10).unwrap();
        // The batch's last frame is torn: the whole batch goes (appends are
        // all-or-nothing; a torn batch was never acknowledged).
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.append_blocking(vec![ev(3)]).unwrap(), 1);
        assert!(verify(&path).unwrap().ok());
    }

    /// The writer runs one round ahead of the commit callback, and no
    /// more: a round is written and synced while the one before it is
    /// being applied, the next waits, and none is acknowledged before the
    /// callback has it. When that callback fails, the round written
    /// meanwhile is refused to its appender too, nothing more is written,
    /// and the next open re-applies both.
    #[test]
    fn the_next_round_is_written_while_one_is_applied() {
        let _guard = crate::log_tests::no_spawning();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let (entered_tx, entered) = std::sync::mpsc::channel::<u64>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let log = EventLog::open_with(
            &path,
            0,
            Box::new(move |records, _| {
                let _ = entered_tx.send(records[0].seq);
                if records[0].seq == 1 {
                    let _ = lock(&release_rx).recv();
                    return Err("index write failed (test)".into());
                }
                Ok(())
            }),
            true,
        )
        .unwrap();
        // Nothing here may hang on a regression: every wait has a deadline.
        let limit = std::time::Duration::from_secs(10);
        let wait_until = |what: &str, done: &dyn Fn() -> bool| {
            let started = std::time::Instant::now();
            while !done() {
                assert!(started.elapsed() < limit, "timed out: {what}");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        };
        // Round 1's precondition holds it until round 2's appender waits
        // in the queue: a round with others waiting behind it goes to the
        // applying thread (alone, the writer would apply it itself).
        let (in_guard_tx, in_guard) = std::sync::mpsc::channel::<()>();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let log = log.clone();
            std::thread::spawn(move || {
                let guard = Guard::new(move || {
                    let _ = in_guard_tx.send(());
                    let _ = go_rx.recv();
                    Ok(())
                });
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
                    .block_on(log.append_guarded(vec![ev(1)], guard))
            })
        };
        in_guard.recv_timeout(limit).unwrap();
        let append = |i: u64| {
            let log = log.clone();
            std::thread::spawn(move || log.append_blocking(vec![ev(i)]))
        };
        let second = append(2);
        wait_until("round 2 queued", &|| {
            !lock(&log.shared.queue).pending.is_empty()
        });
        go.send(()).unwrap();
        assert_eq!(
            entered.recv_timeout(limit).unwrap(),
            1,
            "round 1 reached the callback"
        );
        // Round 2 reaches the disk while round 1 is still being applied.
        wait_until("round 2 written while round 1 is applied", &|| {
            log.last_seq() >= 2
        });
        // But no further round: the writer waits for the applier before
        // it writes again, so a failing apply has at most one round more
        // on disk behind it.
        let third = append(3);
        wait_until("round 3 queued", &|| {
            !lock(&log.shared.queue).pending.is_empty()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            log.last_seq(),
            2,
            "a second round written ahead of the index"
        );
        assert!(
            !first.is_finished() && !second.is_finished() && !third.is_finished(),
            "acknowledged before applied"
        );
        release.send(()).unwrap();
        for append in [first, second, third] {
            wait_until("the appends answered", &|| append.is_finished());
            let err = append.join().unwrap().unwrap_err().to_string();
            assert!(err.contains("index write failed"), "{err}");
        }
        let err = log.append_blocking(vec![ev(4)]).unwrap_err().to_string();
        assert!(
            err.contains("index write failed"),
            "the log stays stopped: {err}"
        );
        drop(log);
        assert_eq!(
            read_records(&path)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![1, 2],
            "nothing written after the failure was noticed"
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let log = EventLog::open_with(
            &path,
            0,
            Box::new(move |records, _| {
                lock(&s).extend(records.iter().map(|r| r.seq));
                Ok(())
            }),
            true,
        )
        .unwrap();
        assert_eq!(*lock(&seen), vec![1, 2], "both rounds re-applied at open");
        assert_eq!(log.append_blocking(vec![ev(3)]).unwrap(), 3);
        assert_eq!(*lock(&seen), vec![1, 2, 3]);
    }
}
