//! Charter's PostgreSQL backend, for a deployment that outgrows one
//! machine (issue 17). This is its first part: [`PgLog`] implements
//! [`charter_audit::Log`] (the event log as rows of one table) and
//! [`PgStore`] implements [`charter_store::Store`] (the indexed state),
//! each passing the conformance suite the file/sled and in-memory
//! implementations pass. Not yet: a deployment on them
//! (`[deployment] backend`), one transaction for a batch and the index
//! rows it changes, several nodes.
//!
//! - **The chain is the file log's.** Each row holds one frame exactly as
//!   `events.log` would (header, seq, previous hash, JSON payload, SHA-256
//!   of the body): encoded by [`charter_audit::backend`], bounded by the
//!   same limits. One chain per log, its seq allocated by the writer inside
//!   the committing transaction (the primary key `(log, seq)` refuses a
//!   second frame at a seq). An auditor's own export verifies without
//!   Charter's reader:
//!   `psql -At -c "SELECT encode(frame, 'hex') FROM charter_events WHERE log = 'NAME' ORDER BY seq"`,
//!   the hex decoded and concatenated after the 8-byte log magic, is a
//!   file `charter audit verify` checks (test
//!   `charter_audit::backend::tests::exported_frames_verify_as_a_log_file`).
//! - **Acknowledged means committed**: an append returns after PostgreSQL
//!   reports the transaction committed (with the server's default
//!   `synchronous_commit = on`, the WAL is flushed; with a synchronous
//!   replica, on both).
//! - **One writer per log for now**: opening takes a session advisory lock
//!   on the log's name; a second opener is refused while the first holds
//!   it, as a second process is refused a data directory. Several nodes
//!   writing one deployment (leases with fencing) build on this later.
//! - Reads decode and check every frame they return (hash, seq) and, for a
//!   filtered read, that the decoded event matches the filter: a row whose
//!   copied columns were edited is not returned for a filter it no longer
//!   matches.
//!
//! The connection is one `tokio-postgres` client on a thread of its own
//! (its own current-thread runtime): [`Log`]'s synchronous reads then work
//! from any caller, in or out of an async runtime. No TLS yet: use a Unix
//! socket or loopback.

mod cluster;
mod read;
mod store;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use charter_audit::backend::{self, Frame};
use charter_audit::{Event, Filter, Guard, Log, LogError, OnCommit, Record};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

pub use cluster::Cluster;
pub use read::{check_url, read_records, scrub, verify};
pub use store::PgStore;

/// The schema, in order; each applied once, recorded in `charter_schema`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_events.sql")),
    (2, include_str!("../migrations/0002_kv.sql")),
    (3, include_str!("../migrations/0003_events_time.sql")),
];

/// The advisory-lock class of a log's writer lock (`pg_try_advisory_lock(class, hashtext(log))`).
const WRITER_LOCK: i32 = 0x4348_4c47;
/// The advisory-lock key that serialises migrations.
const MIGRATION_LOCK: i64 = 0x4348_4d49_4752;

/// Most appends committed in one transaction (group commit).
const MAX_GROUP: usize = 256;

/// One waiting append: its events, guard and answer.
type Appender = (
    Vec<Event>,
    Option<Guard>,
    tokio::sync::oneshot::Sender<Result<u64, LogError>>,
);

/// What an append answers once the connection is lost: the writer lock
/// (a session advisory lock) went with the session, so this writer stops
/// for good rather than reconnect into a log another may now write.
pub const CONNECTION_LOST: &str = "the connection to PostgreSQL was lost (the server restarted or the network failed), and this process's one-writer lock on the log with it: it appends nothing more. Restart charter: it resumes every run from what was committed (an append whose commit was not answered is either wholly in the log or not at all)";

/// The in-use message every backend gives a second writer.
const IN_USE: &str =
    "the event log is in use by another charter process; one host per data directory at a time";

fn io(url_or_log: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Io {
        path: format!("postgres log {url_or_log}").into(),
        source: std::io::Error::other(e.to_string()),
    }
}

enum Job {
    Append {
        events: Vec<Event>,
        guard: Option<Guard>,
        reply: tokio::sync::oneshot::Sender<Result<u64, LogError>>,
    },
    Read {
        from: u64,
        filter: Filter,
        reply: mpsc::SyncSender<Result<Vec<Record>, LogError>>,
    },
    ReadAt {
        positions: Vec<u64>,
        reply: mpsc::SyncSender<Result<Vec<Record>, LogError>>,
    },
    SeqBeforeTime {
        time_ms: u64,
        reply: mpsc::SyncSender<Result<u64, LogError>>,
    },
}

/// The event log in a PostgreSQL table (see the crate docs). Positions are
/// seqs.
pub struct PgLog {
    log: String,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    tail: tokio::sync::watch::Sender<u64>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PgLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog").field("log", &self.log).finish()
    }
}

impl Drop for PgLog {
    /// Stops the connection's thread, which releases the writer lock
    /// before it closes (so a reopen right after never finds it held).
    fn drop(&mut self) {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(w) = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = w.join();
        }
    }
}

impl PgLog {
    /// Open (creating the schema if needed) the log named `log` in the
    /// database at `url` (a `postgres://` URL or `key=value` connection
    /// string), as [`EventLog::open_with`](charter_audit::EventLog::open_with):
    /// `on_commit` gets every record after `applied` now, then every
    /// committed batch.
    pub fn open_with(
        url: &str,
        log: &str,
        applied: u64,
        on_commit: OnCommit,
    ) -> Result<PgLog, LogError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let tail = tokio::sync::watch::Sender::new(0);
        let (url_t, log_t, tail_t) = (url.to_string(), log.to_string(), tail.clone());
        let worker = std::thread::Builder::new()
            .name(format!("charter-pg {log}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io(&log_t, e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let w = Worker::start(&url_t, log_t, applied, on_commit, tail_t).await;
                    match w {
                        Ok(mut w) => {
                            let _ = ready_tx.send(Ok(()));
                            w.serve(jobs_rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| io(log, e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(PgLog {
                log: log.to_string(),
                jobs: Mutex::new(Some(jobs_tx)),
                tail,
                worker: Mutex::new(Some(worker)),
            }),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => {
                let _ = worker.join();
                Err(LogError::WriterGone)
            }
        }
    }

    /// [`PgLog::open_with`] with no callback.
    pub fn open(url: &str, log: &str) -> Result<PgLog, LogError> {
        PgLog::open_with(url, log, 0, Box::new(|_, _| Ok(())))
    }

    fn send(&self, job: Job) -> Result<(), LogError> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.as_ref()
            .ok_or(LogError::WriterGone)?
            .send(job)
            .map_err(|_| LogError::WriterGone)
    }

    fn enqueue(
        &self,
        events: Vec<Event>,
        guard: Option<Guard>,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, LogError>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        // A failed send drops `reply`: the receiver then reports the
        // writer gone.
        let _ = self.send(Job::Append {
            events,
            guard,
            reply,
        });
        rx
    }

    fn ask(
        &self,
        job: impl FnOnce(mpsc::SyncSender<Result<Vec<Record>, LogError>>) -> Job,
    ) -> Result<Vec<Record>, LogError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(job(tx))?;
        rx.recv().map_err(|_| LogError::WriterGone)?
    }
}

fn acked(
    r: Result<Result<u64, LogError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<u64, LogError> {
    r.map_err(|_| LogError::WriterGone)?
}

impl Log for PgLog {
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send {
        let rx = self.enqueue(events, None);
        async move { acked(rx.await) }
    }

    fn append_guarded(
        &self,
        events: Vec<Event>,
        guard: Guard,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send {
        let rx = self.enqueue(events, Some(guard));
        async move { acked(rx.await) }
    }

    fn append_blocking(&self, events: Vec<Event>) -> Result<u64, LogError> {
        acked(self.enqueue(events, None).blocking_recv())
    }

    fn read(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        let filter = filter.clone();
        self.ask(|reply| Job::Read {
            from,
            filter,
            reply,
        })
    }

    fn read_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        let positions = positions.to_vec();
        self.ask(|reply| Job::ReadAt { positions, reply })
    }

    fn last_seq(&self) -> u64 {
        *self.tail.borrow()
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tail.subscribe()
    }

    /// The least seq written at or after `time_ms` (one after the last
    /// when none is): exact, whatever order the writers' clocks kept
    /// (migration 3's index).
    fn seq_before_time(&self, time_ms: u64) -> Result<u64, LogError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::SeqBeforeTime { time_ms, reply: tx })?;
        rx.recv().map_err(|_| LogError::WriterGone)?
    }
}

/// The connection's side: owns the client, the chain's tail and the
/// callback; serves one job at a time, so appends and their callbacks are
/// serialised as the file log's writer serialises them.
struct Worker {
    client: Client,
    log: String,
    /// The last committed frame's (seq, hash); `None` after an append
    /// whose outcome is unknown (read again before the next one).
    last: Option<(u64, [u8; 32])>,
    on_commit: OnCommit,
    /// Set when the callback failed: the log refuses appends until it is
    /// reopened (the next opener re-applies what the callback missed).
    failed: Option<String>,
    tail: tokio::sync::watch::Sender<u64>,
}

impl Worker {
    async fn start(
        url: &str,
        log: String,
        applied: u64,
        mut on_commit: OnCommit,
        tail: tokio::sync::watch::Sender<u64>,
    ) -> Result<Worker, LogError> {
        let client = connect(url).await.map_err(|e| io(&log, e))?;
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&WRITER_LOCK, &log],
            )
            .await
            .map_err(|e| io(&log, e))?
            .get(0);
        if !locked {
            return Err(io(&log, IN_USE));
        }
        let mut w = Worker {
            client,
            log,
            last: None,
            on_commit: Box::new(|_, _| Ok(())),
            failed: None,
            tail,
        };
        let (seq, _) = w.tail_now().await?;
        w.tail.send_replace(seq);
        if applied < seq {
            let replay = w.select(applied + 1, &Filter::all()).await?;
            let at: Vec<u64> = replay.iter().map(|r| r.seq).collect();
            on_commit(&replay, &at).map_err(|e| io(&w.log, e))?;
        }
        w.on_commit = on_commit;
        Ok(w)
    }

    async fn serve(&mut self, jobs: mpsc::Receiver<Job>) {
        let jobs = Arc::new(Mutex::new(jobs));
        // A job taken while gathering a group, served next.
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(j) => j,
                None => {
                    let Some(job) = next_job(&jobs).await else {
                        break;
                    };
                    job
                }
            };
            match job {
                Job::Append {
                    events,
                    guard,
                    reply,
                } => {
                    // Group commit: every append already waiting joins
                    // this transaction (one commit, one WAL flush).
                    let mut group = vec![(events, guard, reply)];
                    held = gather(&jobs, &mut group);
                    self.append_group(group).await;
                }
                Job::Read {
                    from,
                    filter,
                    reply,
                } => {
                    let _ = reply.send(self.select(from.max(1), &filter).await);
                }
                Job::ReadAt { positions, reply } => {
                    let _ = reply.send(self.select_at(&positions).await);
                }
                Job::SeqBeforeTime { time_ms, reply } => {
                    let _ = reply.send(self.seq_at_or_after(time_ms).await);
                }
            }
        }
        // Release the writer lock before the connection closes: the
        // server ends a session asynchronously, and a reopen right after
        // this drop must not find the lock still held.
        let _ = self
            .client
            .execute(
                "SELECT pg_advisory_unlock($1, hashtext($2))",
                &[&WRITER_LOCK, &self.log],
            )
            .await;
    }

    /// After a failed statement: if the connection is gone, stop the
    /// writer ([`CONNECTION_LOST`]).
    fn note_lost(&mut self, e: Option<&tokio_postgres::Error>) {
        // 57P01..57P05: the server is shutting down or restarting.
        let shutdown = e
            .and_then(|e| e.code())
            .is_some_and(|c| c.code().starts_with("57P"));
        let gone = self.client.is_closed() || e.is_some_and(|e| e.is_closed()) || shutdown;
        if gone && self.failed.is_none() {
            tracing::error!(log = %self.log, "{CONNECTION_LOST}");
            self.failed = Some(CONNECTION_LOST.into());
        }
    }

    /// The last committed frame's seq and hash (0 and zeros when empty).
    async fn tail_now(&mut self) -> Result<(u64, [u8; 32]), LogError> {
        if let Some(t) = self.last {
            return Ok(t);
        }
        let row = self
            .client
            .query_opt(
                "SELECT seq, frame FROM charter_events WHERE log = $1 ORDER BY seq DESC LIMIT 1",
                &[&self.log],
            )
            .await
            .map_err(|e| io(&self.log, e))?;
        let t = match row {
            None => (0, [0; 32]),
            Some(row) => {
                let seq: i64 = row.get(0);
                let frame: &[u8] = row.get(1);
                let (r, _, hash) = backend::decode_frame(frame)
                    .map_err(|e| io(&self.log, format!("seq {seq}: {e}")))?;
                if r.seq != seq as u64 {
                    return Err(io(
                        &self.log,
                        format!("row seq {seq} holds frame {}", r.seq),
                    ));
                }
                (r.seq, hash)
            }
        };
        self.last = Some(t);
        Ok(t)
    }

    /// Commit a group of appends in one transaction. Each batch is
    /// checked alone (its guard, its bounds): a refused batch is answered
    /// and left out, the others go on. Each accepted appender gets its own
    /// last seq once the transaction committed.
    async fn append_group(&mut self, group: Vec<Appender>) {
        if let Some(e) = &self.failed {
            for (_, _, reply) in group {
                let _ = reply.send(Err(io(&self.log, e)));
            }
            return;
        }
        let (mut seq, mut hash) = match self.tail_now().await {
            Ok(t) => t,
            Err(e) => {
                self.note_lost(None);
                let msg = e.to_string();
                for (_, _, reply) in group {
                    let _ = reply.send(Err(io(&self.log, &msg)));
                }
                return;
            }
        };
        let mut frames: Vec<Frame> = Vec::new();
        let mut accepted = Vec::with_capacity(group.len());
        for (events, guard, reply) in group {
            if let Some(Err(e)) = guard.map(backend::check_guard) {
                let _ = reply.send(Err(LogError::Refused(e)));
                continue;
            }
            match backend::encode_batch(seq, hash, events) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(batch) => {
                    if let Some(f) = batch.last() {
                        (seq, hash) = (f.record.seq, f.hash);
                    }
                    frames.extend(batch);
                    accepted.push((seq, reply));
                }
            }
        }
        let result = self.commit(frames, (seq, hash)).await;
        for (last, reply) in accepted {
            let _ = reply.send(match &result {
                Ok(()) => Ok(last),
                Err(e) => Err(io(&self.log, e)),
            });
        }
    }

    /// Write `frames` (ending at `last`) in one transaction, then hand
    /// them to the callback. An `Err` is the appenders' answer.
    async fn commit(&mut self, frames: Vec<Frame>, last: (u64, [u8; 32])) -> Result<(), String> {
        if frames.is_empty() {
            return Ok(());
        }
        // Unknown until the commit answers: a lost connection mid-commit
        // leaves it so, and the next append reads the tail again.
        self.last = None;
        if let Err(e) = self.insert(&frames).await {
            self.note_lost(Some(&e));
            return Err(match &self.failed {
                Some(f) => format!("{e}: {f}"),
                None => e.to_string(),
            });
        }
        self.last = Some(last);
        self.tail.send_replace(last.0);
        let records: Vec<Record> = frames.into_iter().map(|f| f.record).collect();
        let at: Vec<u64> = records.iter().map(|r| r.seq).collect();
        let on_commit = &mut self.on_commit;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_commit(&records, &at))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.failed = Some(e.clone());
                Err(e)
            }
            Err(_) => {
                tracing::error!(
                    "postgres log: the commit callback panicked on seq ..={}",
                    last.0
                );
                Ok(())
            }
        }
    }

    /// One transaction: every frame of the batch or none.
    async fn insert(&mut self, frames: &[Frame]) -> Result<(), tokio_postgres::Error> {
        let mut seqs = Vec::with_capacity(frames.len());
        let mut times = Vec::with_capacity(frames.len());
        let mut kinds = Vec::with_capacity(frames.len());
        let mut runs: Vec<Option<&str>> = Vec::with_capacity(frames.len());
        let mut plugins: Vec<Option<&str>> = Vec::with_capacity(frames.len());
        let mut bytes: Vec<&[u8]> = Vec::with_capacity(frames.len());
        for f in frames {
            seqs.push(f.record.seq as i64);
            times.push(f.record.time_ms as i64);
            kinds.push(f.record.event.kind());
            // PostgreSQL text holds no NUL: such a value is left out of
            // the filter column (a filtered read for it scans instead).
            runs.push(f.record.event.run().filter(|x| !x.contains('\0')));
            plugins.push(f.record.event.plugin().filter(|x| !x.contains('\0')));
            bytes.push(&f.bytes);
        }
        let tx = self.client.transaction().await?;
        let params: [&(dyn ToSql + Sync); 7] =
            [&self.log, &seqs, &times, &kinds, &runs, &plugins, &bytes];
        tx.execute(
            "INSERT INTO charter_events (log, seq, time_ms, kind, run, plugin, frame) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bytea[])",
            &params,
        )
        .await?;
        tx.commit().await
    }

    /// The least seq of a row written at or after `time_ms`, or one after
    /// the last row when there is none.
    async fn seq_at_or_after(&self, time_ms: u64) -> Result<u64, LogError> {
        let time_ms = i64::try_from(time_ms).unwrap_or(i64::MAX);
        let row = self
            .client
            .query_one(
                "SELECT coalesce( \
                   (SELECT min(seq) FROM charter_events WHERE log = $1 AND time_ms >= $2), \
                   (SELECT coalesce(max(seq), 0) + 1 FROM charter_events WHERE log = $1))",
                &[&self.log, &time_ms],
            )
            .await
            .map_err(|e| io(&self.log, e))?;
        let seq: i64 = row.get(0);
        Ok(u64::try_from(seq).unwrap_or(1).max(1))
    }

    async fn select(&self, from: u64, filter: &Filter) -> Result<Vec<Record>, LogError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        // A filter value holding a NUL cannot be in a text column: the
        // SQL filter is left out and every row is checked below instead.
        let nul = |x: &Option<String>| x.as_deref().is_some_and(|x| x.contains('\0'));
        let sql_filter = if nul(&filter.run)
            || nul(&filter.plugin)
            || filter.kinds.iter().any(|k| k.contains('\0'))
        {
            Filter::all()
        } else {
            filter.clone()
        };
        let kinds: Vec<&str> = sql_filter.kinds.iter().map(String::as_str).collect();
        let rows = self
            .client
            .query(
                "SELECT seq, frame FROM charter_events WHERE log = $1 AND seq >= $2 \
                 AND ($3::text IS NULL OR run = $3) AND ($4::text IS NULL OR plugin = $4) \
                 AND (cardinality($5::text[]) = 0 OR kind = ANY($5)) ORDER BY seq",
                &[
                    &self.log,
                    &from,
                    &sql_filter.run,
                    &sql_filter.plugin,
                    &kinds,
                ],
            )
            .await
            .map_err(|e| io(&self.log, e))?;
        let contiguous = sql_filter == Filter::all();
        let mut out = Vec::with_capacity(rows.len());
        let mut prev: Option<[u8; 32]> = None;
        for row in rows {
            let (r, p, h) = self.decode(&row)?;
            if contiguous && prev.is_some_and(|x| x != p) {
                return Err(io(
                    &self.log,
                    format!("seq {}: chain broken: previous-hash mismatch", r.seq),
                ));
            }
            prev = Some(h);
            if filter.matches(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn select_at(&self, positions: &[u64]) -> Result<Vec<Record>, LogError> {
        let want: Vec<i64> = positions
            .iter()
            .map(|&p| i64::try_from(p).unwrap_or(-1))
            .collect();
        let rows = self
            .client
            .query(
                "SELECT seq, frame FROM charter_events WHERE log = $1 AND seq = ANY($2)",
                &[&self.log, &want],
            )
            .await
            .map_err(|e| io(&self.log, e))?;
        let mut by_seq = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let (r, _, _) = self.decode(&row)?;
            by_seq.insert(r.seq, r);
        }
        positions
            .iter()
            .map(|p| {
                by_seq
                    .get(p)
                    .cloned()
                    .ok_or_else(|| io(&self.log, format!("no record at position {p}")))
            })
            .collect()
    }

    fn decode(&self, row: &tokio_postgres::Row) -> Result<(Record, [u8; 32], [u8; 32]), LogError> {
        let seq: i64 = row.get(0);
        let frame: &[u8] = row.get(1);
        let (r, prev, hash) =
            backend::decode_frame(frame).map_err(|e| io(&self.log, format!("seq {seq}: {e}")))?;
        if r.seq != seq as u64 {
            return Err(io(
                &self.log,
                format!("row seq {seq} holds frame {}", r.seq),
            ));
        }
        Ok((r, prev, hash))
    }
}

/// Connect to `url`, drive the connection on this thread's runtime, and
/// bring the schema up to date (for [`PgLog`] and [`PgStore`] alike).
pub(crate) async fn connect(url: &str) -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("postgres connection ended: {e}");
        }
    });
    migrate(&client)
        .await
        .map_err(|e| format!("schema migration: {e}"))?;
    Ok(client)
}

/// The next job from a connection thread's queue, `None` once its owner
/// is dropped. The std receiver is polled from the runtime's blocking
/// pool so the connection task keeps running while the thread waits.
pub(crate) async fn next_job<J: Send + 'static>(jobs: &Arc<Mutex<mpsc::Receiver<J>>>) -> Option<J> {
    let j = jobs.clone();
    tokio::task::spawn_blocking(move || {
        j.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv()
            .ok()
    })
    .await
    .ok()
    .flatten()
}

/// Take every append already waiting into `group` (up to [`MAX_GROUP`]);
/// returns the first other job met, to serve next.
fn gather(jobs: &Mutex<mpsc::Receiver<Job>>, group: &mut Vec<Appender>) -> Option<Job> {
    let rx = jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(Job::Append {
                events,
                guard,
                reply,
            }) => group.push((events, guard, reply)),
            Ok(other) => return Some(other),
            Err(_) => return None,
        }
    }
    None
}

/// Apply every migration not yet applied, one transaction each, under a
/// lock so that two nodes starting together do not race.
pub(crate) async fn migrate(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS charter_schema (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .await
        .or_else(|e| {
            // Two first openers can both try to create it: the loser sees
            // a unique violation on the catalog, and the table exists.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    for (version, sql) in MIGRATIONS {
        let tx_client = client;
        tx_client.batch_execute("BEGIN").await?;
        let r = async {
            tx_client
                .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            let done = tx_client
                .query_opt(
                    "SELECT 1 FROM charter_schema WHERE version = $1",
                    &[version],
                )
                .await?
                .is_some();
            if !done {
                tx_client.batch_execute(sql).await?;
                tx_client
                    .execute(
                        "INSERT INTO charter_schema (version) VALUES ($1)",
                        &[version],
                    )
                    .await?;
            }
            Ok::<(), tokio_postgres::Error>(())
        }
        .await;
        match r {
            Ok(()) => tx_client.batch_execute("COMMIT").await?,
            Err(e) => {
                let _ = tx_client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    Ok(())
}
