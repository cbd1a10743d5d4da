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

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use charter_audit::backend::{self, Frame};
use charter_audit::{Event, Filter, Guard, Log, LogError, OnCommit, Record};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

pub use cluster::Cluster;
pub use read::{check_url, read_records, scrub, verify};
pub use store::{PgStore, TxStore};

/// The schema, in order; each applied once, recorded in `charter_schema`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_events.sql")),
    (2, include_str!("../migrations/0002_kv.sql")),
    (3, include_str!("../migrations/0003_events_time.sql")),
];

/// The advisory-lock class of a log's writer lock (`hashtext(log)`):
/// taken exclusively by a single writer ([`PgLog::open_with`]), shared by
/// the nodes of a shared log ([`PgLog::open_shared`]), so the two kinds
/// never write one log at once.
const WRITER_LOCK: i32 = 0x4348_4c47;
/// The advisory-lock class of a node's name (`hashtext(log, node)`): one
/// process per node name.
const NODE_LOCK: i32 = 0x4348_4e44;
/// The advisory-lock class an append holds for its transaction: appends
/// to one log, from any node, take turns, so the chain stays one line.
const APPEND_LOCK: i32 = 0x4348_4150;
/// The advisory-lock key that serialises migrations.
const MIGRATION_LOCK: i64 = 0x4348_4d49_4752;

/// Most appends committed in one transaction (group commit).
const MAX_GROUP: usize = 256;

/// The channel every append notifies (payload `LOG\nLAST_SEQ`), sent
/// when its transaction commits.
const APPENDS_CHANNEL: &str = "charter_appends";

/// How long the server lets a session sit idle inside a transaction
/// before it ends the session (see [`connect`]).
const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a shared writer keeps trying to reach the database again
/// before an append fails (it tries again at the next one).
const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The index kept inside the append's transaction
/// ([`PgLog::open_shared`]): called with the store as that transaction
/// sees it (every earlier append's index rows, this batch's frames), the
/// records and their seqs. An `Err` or a panic rolls the append back.
pub type TxApply =
    Box<dyn FnMut(&dyn charter_store::Store, &[Record], &[u64]) -> Result<(), String> + Send>;

/// Who writes a shared log: the deployment's store (its index and its
/// run leases, in `charter_kv`) and this process's node name (one process
/// per name at a time).
#[derive(Clone, Debug)]
pub struct Node {
    pub store: String,
    pub name: String,
}

/// One waiting append: its events, guard and answer.
type Appender = (Vec<Event>, Option<Guard>, Reply);

type Reply = tokio::sync::oneshot::Sender<Result<u64, LogError>>;

/// What an append of a single-writer log answers once the connection is
/// lost: the writer lock (a session advisory lock) went with the session,
/// so this writer stops for good rather than reconnect into a log another
/// may now write. (A shared log's nodes reconnect instead.)
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
        reply: Reply,
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

/// How a writer keeps the index.
enum Apply {
    /// One writer: the callback after each commit, as the file log's.
    After(OnCommit),
    /// A node of a shared log: the index in the append's transaction.
    /// `None` only while the callback runs on the blocking pool.
    InTx { node: Node, apply: Option<TxApply> },
}

impl PgLog {
    /// Open (creating the schema if needed) the log named `log` in the
    /// database at `url` (a `postgres://` URL or `key=value` connection
    /// string) as its one writer, as
    /// [`EventLog::open_with`](charter_audit::EventLog::open_with):
    /// `on_commit` gets every record after `applied` now, then every
    /// committed batch. A second opener, single or shared, is refused
    /// while this one is open.
    pub fn open_with(
        url: &str,
        log: &str,
        applied: u64,
        on_commit: OnCommit,
    ) -> Result<PgLog, LogError> {
        PgLog::open_as(url, log, applied, Apply::After(on_commit))
    }

    /// Open the log named `log` as node `node` of a deployment that
    /// several processes write (see the crate docs): the index is kept by
    /// `apply` inside each append's transaction (first, in one
    /// transaction, for the records after `applied`), appends from every
    /// node take turns on one chain, a guard's [`charter_audit::Fence`]
    /// is checked in that transaction, and a lost connection is
    /// reconnected. Refused while a single writer has the log open, or
    /// while another process runs as `node`.
    pub fn open_shared(
        url: &str,
        log: &str,
        node: Node,
        applied: u64,
        apply: TxApply,
    ) -> Result<PgLog, LogError> {
        PgLog::open_as(
            url,
            log,
            applied,
            Apply::InTx {
                node,
                apply: Some(apply),
            },
        )
    }

    fn open_as(url: &str, log: &str, applied: u64, apply: Apply) -> Result<PgLog, LogError> {
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
                    let w = Worker::start(url_t, log_t, applied, apply, tail_t).await;
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

/// Why a transaction did not commit.
enum Failed {
    /// A statement failed; the connection may be gone with it.
    Db(tokio_postgres::Error),
    /// The index could not be applied: the transaction was rolled back.
    Index(String),
}

impl Failed {
    fn text(&self) -> String {
        match self {
            Failed::Db(e) => e.to_string(),
            Failed::Index(e) => e.clone(),
        }
    }
}

/// Whether the connection is gone (after `e`, if a statement failed):
/// closed, or the server shutting down or restarting (57P01..57P05).
fn lost(client: &Client, e: Option<&tokio_postgres::Error>) -> bool {
    let shutdown = e
        .and_then(|e| e.code())
        .is_some_and(|c| c.code().starts_with("57P"));
    client.is_closed() || e.is_some_and(|e| e.is_closed()) || shutdown
}

/// The connection's side: owns the client, the chain's tail and the
/// index callback; serves one job at a time, so this process's appends
/// and their index applications are serialised as the file log's writer
/// serialises them (and, on a shared log, every node's appends take turns
/// under [`APPEND_LOCK`]).
struct Worker {
    client: Arc<Client>,
    url: String,
    log: String,
    /// The last committed frame's (seq, hash) as this writer knows it;
    /// `None` after an append whose outcome is unknown. A shared log reads
    /// it again in every append's transaction (another node may have
    /// appended since).
    last: Option<(u64, [u8; 32])>,
    apply: Apply,
    /// This writer's server session (`pg_backend_pid`), whose locks a
    /// reconnect may find still held: a session the client lost but the
    /// server kept (a network fault) is ended before the locks are taken
    /// again.
    backend_pid: Option<i32>,
    /// Set when this writer stops for good (a single writer's lost lock,
    /// a failed callback, a node name taken by another process).
    failed: Option<String>,
    tail: tokio::sync::watch::Sender<u64>,
}

impl Worker {
    async fn start(
        url: String,
        log: String,
        applied: u64,
        apply: Apply,
        tail: tokio::sync::watch::Sender<u64>,
    ) -> Result<Worker, LogError> {
        let client = Worker::connect_as(&url, &log, &apply, &tail)
            .await
            .map_err(|e| io(&log, e))?;
        let mut w = Worker {
            client: Arc::new(client),
            url,
            log,
            last: None,
            apply,
            backend_pid: None,
            failed: None,
            tail,
        };
        w.take_locks().await?;
        let (seq, _) = w.tail_now().await?;
        w.tail.send_replace(seq);
        if applied < seq {
            w.catch_up(applied).await?;
        }
        Ok(w)
    }

    fn shared(&self) -> bool {
        matches!(self.apply, Apply::InTx { .. })
    }

    /// Connect; a node also listens for every node's appends
    /// ([`APPENDS_CHANNEL`]), so its tail (`last_seq`, `subscribe`) is the
    /// deployment's, not only its own.
    async fn connect_as(
        url: &str,
        log: &str,
        apply: &Apply,
        tail: &tokio::sync::watch::Sender<u64>,
    ) -> Result<Client, String> {
        if !matches!(apply, Apply::InTx { .. }) {
            return connect(url).await;
        }
        let (log_n, tail_n) = (log.to_string(), tail.clone());
        let note: OnNote = Box::new(move |channel, payload| {
            if channel != APPENDS_CHANNEL {
                return;
            }
            let Some((l, seq)) = payload.rsplit_once('\n') else {
                return;
            };
            if let (true, Ok(seq)) = (l == log_n, seq.parse::<u64>()) {
                tail_n.send_if_modified(|t| {
                    let newer = *t < seq;
                    *t = (*t).max(seq);
                    newer
                });
            }
        });
        let client = connect_noting(url, Some(note)).await?;
        client
            .batch_execute(&format!("LISTEN {APPENDS_CHANNEL}"))
            .await
            .map_err(|e| format!("cannot listen for appends: {e}"))?;
        Ok(client)
    }

    /// The session locks: the writer lock (exclusive for one writer,
    /// shared for a node) and, for a node, its name's.
    async fn take_locks(&mut self) -> Result<(), LogError> {
        let c = self.client.clone();
        let held = |r: Result<tokio_postgres::Row, tokio_postgres::Error>| {
            r.map(|row| row.get::<_, bool>(0))
                .map_err(|e| io(&self.log, e))
        };
        match &self.apply {
            Apply::After(_) => {
                let r = c
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        &[&WRITER_LOCK, &self.log],
                    )
                    .await;
                if !held(r)? {
                    return Err(io(&self.log, IN_USE));
                }
            }
            Apply::InTx { node, .. } => {
                let r = c
                    .query_one(
                        "SELECT pg_try_advisory_lock_shared($1, hashtext($2))",
                        &[&WRITER_LOCK, &self.log],
                    )
                    .await;
                if !held(r)? {
                    return Err(io(
                        &self.log,
                        "the event log is open in a charter process that writes it alone (an older version, or a single-writer tool); stop it before starting nodes",
                    ));
                }
                let r = c
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, hashtext($2 || chr(10) || $3))",
                        &[&NODE_LOCK, &self.log, &node.name],
                    )
                    .await;
                if !held(r)? {
                    return Err(io(
                        &self.log,
                        format!(
                            "node `{}` of this deployment is running in another process; give each process its own node name (`charter up --node NAME`)",
                            node.name
                        ),
                    ));
                }
            }
        }
        self.backend_pid = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ok()
            .map(|r| r.get(0));
        Ok(())
    }

    /// End this writer's old server session if it still holds a node
    /// lock (the client lost it, the server did not): its locks and any
    /// transaction it had open go with it.
    async fn end_old_session(&self) {
        let Some(old) = self.backend_pid else { return };
        let r = self
            .client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_locks \
                 WHERE pid = $1 AND locktype = 'advisory' AND classid::bigint = $2 LIMIT 1",
                &[&old, &i64::from(NODE_LOCK)],
            )
            .await;
        if let Ok(rows) = r
            && !rows.is_empty()
        {
            tracing::warn!(log = %self.log, pid = old, "ended this node's old session, which the server still held");
        }
    }

    /// Apply the records after `applied` (an index behind the log: a crash
    /// between a single writer's commit and its callback, or an index
    /// being rebuilt).
    async fn catch_up(&mut self, applied: u64) -> Result<(), LogError> {
        if self.shared() {
            // Under the append lock, in one transaction with what it
            // writes, so a node starting beside others applies each record
            // once.
            let c = self.client.clone();
            // A long replay works between its statements for as long as
            // it needs: no idle limit in this one transaction.
            c.batch_execute("BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0")
                .await
                .map_err(|e| io(&self.log, e))?;
            let r = async {
                c.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    &[&APPEND_LOCK, &self.log],
                )
                .await
                .map_err(Failed::Db)?;
                let replay = self
                    .select(applied + 1, &Filter::all())
                    .await
                    .map_err(|e| Failed::Index(e.to_string()))?;
                if replay.is_empty() {
                    return Ok(());
                }
                let at: Vec<u64> = replay.iter().map(|r| r.seq).collect();
                self.apply_in_tx(replay, at).await?;
                Ok::<(), Failed>(())
            }
            .await;
            return match r {
                Ok(()) => c
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| io(&self.log, e)),
                Err(f) => {
                    let _ = c.batch_execute("ROLLBACK").await;
                    Err(io(&self.log, f.text()))
                }
            };
        }
        let replay = self.select(applied + 1, &Filter::all()).await?;
        let at: Vec<u64> = replay.iter().map(|r| r.seq).collect();
        if let Apply::After(on_commit) = &mut self.apply {
            on_commit(&replay, &at).map_err(|e| io(&self.log, e))?;
        }
        Ok(())
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
            if self.shared() && self.failed.is_none() && self.client.is_closed() {
                // Reads and appends alike need the connection back; an
                // error here is every job's answer until it comes back.
                let _ = self.reconnect().await;
            }
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
        // Release the session locks before the connection closes: the
        // server ends a session asynchronously, and a reopen right after
        // this drop must not find them held.
        let _ = self
            .client
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .await;
    }

    /// Connect again (a shared log's node, after its connection was lost),
    /// trying for [`RECONNECT_FOR`], and take the session locks again. A
    /// node name taken meanwhile by another process stops this writer for
    /// good.
    async fn reconnect(&mut self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(50);
        loop {
            match Worker::connect_as(&self.url, &self.log, &self.apply, &self.tail).await {
                Ok(c) => {
                    self.client = Arc::new(c);
                    self.last = None;
                    self.end_old_session().await;
                    // The old session ends asynchronously: its locks may
                    // take a moment to go.
                    let locking = std::time::Instant::now();
                    loop {
                        match self.take_locks().await {
                            Ok(()) => break,
                            Err(_) if locking.elapsed() < std::time::Duration::from_secs(5) => {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                            Err(e) => {
                                let e = format!("after reconnecting to PostgreSQL: {e}");
                                tracing::error!(log = %self.log, "{e}");
                                self.failed = Some(e.clone());
                                return Err(e);
                            }
                        }
                    }
                    tracing::info!(log = %self.log, "reconnected to PostgreSQL");
                    return Ok(());
                }
                Err(e) if started.elapsed() < RECONNECT_FOR => {
                    tracing::warn!(log = %self.log, "cannot reach PostgreSQL ({e}); retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(format!(
                        "cannot reach PostgreSQL for {}s ({e}); the append was not written, and the next one tries again",
                        RECONNECT_FOR.as_secs()
                    ));
                }
            }
        }
    }

    /// After a failed statement of a single writer: if the connection is
    /// gone, stop the writer ([`CONNECTION_LOST`]).
    fn note_lost(&mut self, e: Option<&tokio_postgres::Error>) {
        if self.shared() {
            return;
        }
        if lost(&self.client, e) && self.failed.is_none() {
            tracing::error!(log = %self.log, "{CONNECTION_LOST}");
            self.failed = Some(CONNECTION_LOST.into());
        }
    }

    /// The last committed frame's seq and hash (0 and zeros when empty):
    /// this writer's own for a single writer, read from the table for a
    /// node (inside the append lock, it is the chain's).
    async fn tail_now(&mut self) -> Result<(u64, [u8; 32]), LogError> {
        if let Some(t) = self.last
            && !self.shared()
        {
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
                let (r, _, hash) = self.decode(&row)?;
                (r.seq, hash)
            }
        };
        self.last = Some(t);
        Ok(t)
    }

    /// Commit a group of appends in one transaction. Each batch is
    /// checked alone (its guard, its fence, its bounds): a refused batch
    /// is answered and left out, the others go on. Each accepted appender
    /// gets its own last seq once the transaction committed.
    async fn append_group(&mut self, group: Vec<Appender>) {
        if let Some(e) = &self.failed {
            for (_, _, reply) in group {
                let _ = reply.send(Err(io(&self.log, e)));
            }
            return;
        }
        // The guards' own checks first (they read the store on its own
        // connection): on a shared log the fence in the transaction below
        // is what decides; these refuse early and keep the file log's
        // behaviour for a single writer.
        let mut pending = Vec::with_capacity(group.len());
        for (events, guard, reply) in group {
            let fence = guard.as_ref().and_then(|g| g.fence().cloned());
            if let Some(Err(e)) = guard.map(backend::check_guard) {
                let _ = reply.send(Err(LogError::Refused(e)));
                continue;
            }
            pending.push((events, fence, reply));
        }
        if pending.is_empty() {
            return;
        }
        if self.shared()
            && self.client.is_closed()
            && let Err(e) = self.reconnect().await
        {
            for (_, _, reply) in pending {
                let _ = reply.send(Err(io(&self.log, &e)));
            }
            return;
        }
        let mut accepted: Vec<(u64, Reply)> = Vec::with_capacity(pending.len());
        let mut written: Option<Frame> = None;
        let c = self.client.clone();
        let result = match c.batch_execute("BEGIN").await {
            Err(e) => Err(Failed::Db(e)),
            Ok(()) => {
                let r = self
                    .write_in_tx(&c, &mut pending, &mut accepted, &mut written)
                    .await;
                match r {
                    Ok(Some(records)) => match c.batch_execute("COMMIT").await {
                        Ok(()) => Ok(Some(records)),
                        Err(e) => Err(Failed::Db(e)),
                    },
                    other => {
                        let _ = c.batch_execute("ROLLBACK").await;
                        other
                    }
                }
            }
        };
        let outcome = match result {
            Ok(Some(records)) => self.committed_batch(records, written.as_ref()),
            Ok(None) => Ok(()),
            Err(Failed::Index(e)) => {
                self.last = None;
                Err(e)
            }
            Err(Failed::Db(e)) if self.shared() && lost(&self.client, Some(&e)) => {
                // The commit's answer may have gone with the connection:
                // once connected again, ask the database whether the
                // batch is in.
                self.last = None;
                match (self.reconnect().await, &written) {
                    (_, None) => Err(e.to_string()),
                    (Err(r), Some(_)) => Err(format!(
                        "{e}; whether the batch committed is unknown until the database is back: {r}"
                    )),
                    (Ok(()), Some(frame)) => match self.committed(frame).await {
                        Ok(true) => {
                            let seq = frame.record.seq;
                            self.tail.send_if_modified(|t| {
                                let newer = *t < seq;
                                *t = (*t).max(seq);
                                newer
                            });
                            Ok(())
                        }
                        Ok(false) => Err(format!(
                            "{e}: the connection was lost before the commit; nothing of the batch was written"
                        )),
                        Err(e2) => {
                            Err(format!("{e}; whether the batch committed is unknown: {e2}"))
                        }
                    },
                }
            }
            Err(Failed::Db(e)) => {
                self.last = None;
                self.note_lost(Some(&e));
                Err(match &self.failed {
                    Some(f) => format!("{e}: {f}"),
                    None => e.to_string(),
                })
            }
        };
        for (last, reply) in accepted {
            let _ = reply.send(match &outcome {
                Ok(()) => Ok(last),
                Err(e) => Err(io(&self.log, e)),
            });
        }
        // Appenders the transaction failed before reaching (nothing of
        // theirs was written).
        for (_, _, reply) in pending {
            let _ = reply.send(Err(io(
                &self.log,
                outcome.as_ref().err().map_or("not written", String::as_str),
            )));
        }
    }

    /// What follows a commit: the tail moves on; a single writer's
    /// callback gets the records.
    fn committed_batch(
        &mut self,
        records: Vec<Record>,
        last: Option<&Frame>,
    ) -> Result<(), String> {
        let Some(last) = last else { return Ok(()) };
        self.last = Some((last.record.seq, last.hash));
        // Never back: another node's later append may have been heard of
        // (notified) before this commit's answer came.
        let seq = last.record.seq;
        self.tail.send_if_modified(|t| {
            let newer = *t < seq;
            *t = (*t).max(seq);
            newer
        });
        let Apply::After(on_commit) = &mut self.apply else {
            return Ok(());
        };
        let at: Vec<u64> = records.iter().map(|r| r.seq).collect();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_commit(&records, &at))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.failed = Some(e.clone());
                Err(e)
            }
            Err(_) => {
                tracing::error!(
                    "postgres log: the commit callback panicked on seq ..={}",
                    last.record.seq
                );
                Ok(())
            }
        }
    }

    /// Whether `frame` is in the log as written (after a lost commit
    /// answer): under the append lock, so the old session's transaction
    /// has ended either way.
    async fn committed(&mut self, frame: &Frame) -> Result<bool, tokio_postgres::Error> {
        let c = self.client.clone();
        c.batch_execute("BEGIN").await?;
        let r = async {
            c.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&APPEND_LOCK, &self.log],
            )
            .await?;
            c.query_opt(
                "SELECT frame FROM charter_events WHERE log = $1 AND seq = $2",
                &[&self.log, &(frame.record.seq as i64)],
            )
            .await
        }
        .await;
        let _ = c.batch_execute("ROLLBACK").await;
        Ok(r?.is_some_and(|row| row.get::<_, &[u8]>(0) == frame.bytes.as_slice()))
    }

    /// The statements of an append's transaction (opened by the caller):
    /// the append lock, the tail, the fences, the frames, the index. The
    /// accepted appenders and the last frame written are left in
    /// `accepted` and `written`; `Ok(None)`: nothing to write.
    async fn write_in_tx(
        &mut self,
        c: &Client,
        pending: &mut Vec<(Vec<Event>, Option<charter_audit::Fence>, Reply)>,
        accepted: &mut Vec<(u64, Reply)>,
        written: &mut Option<Frame>,
    ) -> Result<Option<Vec<Record>>, Failed> {
        c.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&APPEND_LOCK, &self.log],
        )
        .await
        .map_err(Failed::Db)?;
        let (mut seq, mut hash) = self
            .tail_now()
            .await
            .map_err(|e| Failed::Index(e.to_string()))?;
        let tokens = self.fence_tokens(c, pending).await?;
        let mut frames: Vec<Frame> = Vec::new();
        // Nothing fails from here to the insert: each appender is answered
        // now (refused) or moves to `accepted`.
        for (events, fence, reply) in pending.drain(..) {
            if let Some(f) = &fence
                && let Some(tokens) = &tokens
                && tokens.get(&(f.ns.clone(), f.key.clone())) != Some(&Some(f.token.clone()))
            {
                let _ = reply.send(Err(LogError::Refused(format!(
                    "the lease {}/{} this append requires is no longer this writer's (another node took it over); none of its events were appended",
                    f.ns, f.key
                ))));
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
        if frames.is_empty() {
            return Ok(None);
        }
        self.insert(c, &frames).await.map_err(Failed::Db)?;
        let last = frames.pop().expect("not empty");
        let mut records: Vec<Record> = frames.into_iter().map(|f| f.record).collect();
        records.push(last.record.clone());
        *written = Some(last);
        if self.shared() {
            let at: Vec<u64> = records.iter().map(|r| r.seq).collect();
            records = self.apply_in_tx(records, at).await?;
        }
        Ok(Some(records))
    }

    /// The `token` of each fenced lease, read in the transaction and
    /// locked (`FOR SHARE`) until it ends: a claim by another node waits
    /// for this commit. `None` for a single writer (it has no store name;
    /// its guards' checks are exact under its one-writer lock).
    async fn fence_tokens(
        &self,
        c: &Client,
        pending: &[(Vec<Event>, Option<charter_audit::Fence>, Reply)],
    ) -> Result<Option<HashMap<(String, String), Option<String>>>, Failed> {
        let Apply::InTx { node, .. } = &self.apply else {
            return Ok(None);
        };
        let mut by_ns: HashMap<&str, Vec<Vec<u8>>> = HashMap::new();
        for f in pending.iter().filter_map(|p| p.1.as_ref()) {
            by_ns
                .entry(f.ns.as_str())
                .or_default()
                .push(f.key.as_bytes().to_vec());
        }
        let mut tokens = HashMap::new();
        for (ns, keys) in by_ns {
            let rows = c
                .query(
                    // In key order, as every multi-row lock here is taken
                    // (the lease renewer's), so two never wait on each other.
                    "SELECT key, value FROM charter_kv WHERE store = $1 AND ns = $2 AND key = ANY($3) ORDER BY key FOR SHARE",
                    &[&node.store, &ns.as_bytes(), &keys],
                )
                .await
                .map_err(Failed::Db)?;
            for key in &keys {
                tokens.insert(
                    (ns.to_string(), String::from_utf8_lossy(key).into_owned()),
                    None,
                );
            }
            for row in rows {
                let key: Vec<u8> = row.get(0);
                let value: Vec<u8> = row.get(1);
                let token = serde_json::from_slice::<serde_json::Value>(&value)
                    .ok()
                    .and_then(|v| v.get("token")?.as_str().map(str::to_string));
                tokens.insert(
                    (ns.to_string(), String::from_utf8_lossy(&key).into_owned()),
                    token,
                );
            }
        }
        Ok(Some(tokens))
    }

    /// Run the index callback on the blocking pool with a [`TxStore`] whose
    /// statements this thread runs on the open transaction, until it
    /// returns. Gives the records back.
    async fn apply_in_tx(
        &mut self,
        records: Vec<Record>,
        at: Vec<u64>,
    ) -> Result<Vec<Record>, Failed> {
        let Apply::InTx { node, apply } = &mut self.apply else {
            return Ok(records);
        };
        let Some(mut f) = apply.take() else {
            return Err(Failed::Index("the index callback was lost".into()));
        };
        let (jobs_tx, mut jobs) = tokio::sync::mpsc::unbounded_channel();
        let statement_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = TxStore::new(&node.store, jobs_tx, statement_failed.clone());
        let mut handle = tokio::task::spawn_blocking(move || {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&store, &records, &at)));
            drop(store);
            (f, records, r)
        });
        let c = self.client.clone();
        let done = loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => job(c.clone()).await,
                    None => break (&mut handle).await,
                },
                done = &mut handle => break done,
            }
        };
        let (f, records, r) =
            done.map_err(|e| Failed::Index(format!("the index callback ended: {e}")))?;
        *apply = Some(f);
        match r {
            // A statement that failed aborted the transaction (its COMMIT
            // would roll back without an error): refused even if the
            // callback went on.
            Ok(Ok(())) if statement_failed.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(Failed::Index(
                    "a statement of the index failed inside the append's transaction; nothing of the batch was written".into(),
                ))
            }
            Ok(Ok(())) => Ok(records),
            Ok(Err(e)) => Err(Failed::Index(e)),
            Err(_) => Err(Failed::Index(format!(
                "applying seq ..={} to the index panicked; nothing of the batch was written",
                records.last().map_or(0, |r| r.seq)
            ))),
        }
    }

    /// The frames of one append's transaction, in one statement.
    async fn insert(&self, c: &Client, frames: &[Frame]) -> Result<(), tokio_postgres::Error> {
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
        let params: [&(dyn ToSql + Sync); 7] =
            [&self.log, &seqs, &times, &kinds, &runs, &plugins, &bytes];
        // The notification goes out with the commit, to every node
        // listening (one statement: no round trip more).
        c.execute(
            "WITH ins AS (INSERT INTO charter_events (log, seq, time_ms, kind, run, plugin, frame) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bytea[]) \
             RETURNING seq) \
             SELECT pg_notify('charter_appends', $1 || chr(10) || max(seq)::text) FROM ins",
            &params,
        )
        .await
        .map(|_| ())
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
    connect_noting(url, None).await
}

/// What a connection does with a notification (channel, payload).
type OnNote = Box<dyn Fn(&str, &str) + Send>;

/// [`connect`], handing the connection's notifications (`LISTEN`) to
/// `on_note`.
async fn connect_noting(url: &str, on_note: Option<OnNote>) -> Result<Client, String> {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    // Drive the connection, reading its asynchronous messages (which is
    // what makes it progress).
    tokio::spawn(std::future::poll_fn(move |cx| {
        loop {
            match conn.poll_message(cx) {
                std::task::Poll::Ready(Some(Ok(tokio_postgres::AsyncMessage::Notification(n)))) => {
                    if let Some(f) = &on_note {
                        f(n.channel(), n.payload());
                    }
                }
                std::task::Poll::Ready(Some(Ok(_))) => {}
                std::task::Poll::Ready(Some(Err(e))) => {
                    tracing::warn!("postgres connection ended: {e}");
                    return std::task::Poll::Ready(());
                }
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(()),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    }));
    // A process that stops inside a transaction (SIGSTOP, a debugger, a
    // frozen VM) would hold the append lock, and every other node's
    // appends, for as long as its connection lives: the server ends such
    // a session instead, rolling its transaction back. Every transaction
    // here sends its statements back to back (the longest pause is the
    // index callback's work between two of them).
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = '{}ms'",
            IDLE_IN_TRANSACTION.as_millis()
        ))
        .await
        .map_err(|e| format!("cannot configure the session: {e}"))?;
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
