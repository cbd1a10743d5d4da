//! [`PgStore`]: the [`Store`] trait on PostgreSQL (table `charter_kv`).
//! Every write is a statement or a transaction that PostgreSQL commits
//! before the call returns (so `flush` has nothing left to do);
//! `compare_and_swap` is one conditional statement, atomic against every
//! other writer of the database, other nodes included.
//!
//! The same statements also run inside the log writer's open transaction
//! ([`TxStore`]): a shared log applies its index there, so an append and
//! the index rows it changes commit together.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use charter_store::{Batch, MAX_LIST, Store, StoreError};
use tokio_postgres::Client;

/// How long a [`PgStore`] call waits for the database's answer.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

pub type Job = Box<dyn FnOnce(Arc<Client>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Where a store's statements run.
pub trait Exec: Send + Sync {
    /// Hand `job` to the connection that runs it.
    fn send(&self, job: Job) -> Result<(), StoreError>;
    /// Whether the statements run inside a transaction already open (a
    /// batch then opens none of its own).
    fn in_tx(&self) -> bool;
    /// How long a caller waits for a job's answer (`None`: as long as it
    /// takes, for a transaction whose own statements are being served).
    fn answer_within(&self) -> Option<std::time::Duration> {
        None
    }
    /// A statement failed (inside a transaction, that aborts it).
    fn note_failed(&self) {}
}

/// The store's own connections ([`CONNECTIONS`]), served on a thread of
/// their own.
pub struct Conn {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Exec for Conn {
    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .ok_or_else(|| remote("the store is closed"))?
            .send(job)
            .map_err(|_| remote("the connection thread ended"))
    }
    fn in_tx(&self) -> bool {
        false
    }
    /// A database that stops answering (a network fault, a hung server)
    /// fails the call rather than hold the caller (a step's kv read, a
    /// lease renewal) for good.
    fn answer_within(&self) -> Option<std::time::Duration> {
        Some(ANSWER_WITHIN)
    }
}

/// The log writer's connection while it holds a transaction open: its
/// statements see the batch being written and commit (or roll back) with
/// it. Used only from a thread other than the writer's, which serves the
/// jobs until the user returns.
pub struct TxConn {
    pub(crate) jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    /// Set when a statement failed: the transaction is aborted.
    pub(crate) failed: Arc<std::sync::atomic::AtomicBool>,
}

impl Exec for TxConn {
    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .send(job)
            .map_err(|_| remote("the log's transaction ended"))
    }
    fn in_tx(&self) -> bool {
        true
    }
    fn note_failed(&self) {
        self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The [`Store`] statements of store `store` (a deployment), run by `E`.
pub struct Kv<E> {
    store: String,
    exec: E,
}

/// The indexed state of store `store` (a deployment) in a PostgreSQL
/// database. Its clients run on a thread of their own, as
/// [`crate::PgLog`]'s does.
pub type PgStore = Kv<Conn>;

/// The store as the log writer's open transaction sees it (see the
/// module docs).
pub type TxStore = Kv<TxConn>;

impl TxStore {
    pub(crate) fn new(
        store: &str,
        jobs: tokio::sync::mpsc::UnboundedSender<Job>,
        failed: Arc<std::sync::atomic::AtomicBool>,
    ) -> TxStore {
        Kv {
            store: store.to_string(),
            exec: TxConn { jobs, failed },
        }
    }
}

fn remote(e: impl std::fmt::Display) -> StoreError {
    StoreError::Remote(format!("postgres: {e}"))
}

/// The smallest byte string greater than every string starting with
/// `prefix`, if there is one (none for an empty or all-0xFF prefix).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

fn text(key: &[u8], v: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(v).map_err(|_| StoreError::NotUtf8 {
        key: String::from_utf8_lossy(key).into_owned(),
    })
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = w.join();
        }
    }
}

/// How many connections a [`PgStore`] serves its calls on. Each serves
/// one call at a time (a call's `BEGIN`..`COMMIT` holds its connection),
/// so one long scan (the timers' look for runs to adopt, `runs list`)
/// does not hold up a lease renewal or a step's read behind it. Calls of
/// one thread stay in order (each waits for its answer); a call that
/// timed out on the caller may still be served later.
const CONNECTIONS: usize = 4;

/// One of a [`PgStore`]'s connections: serve calls from `jobs` until the
/// store closes.
async fn serve(url: String, client: Client, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut client = Arc::new(client);
    while let Some(job) = crate::next_job(&jobs).await {
        // The server restarted or the network failed: the job that found
        // out failed; connect again for the next (this one too, if it
        // comes back at once).
        if client.is_closed() {
            match crate::connect(&url).await {
                Ok(c) => {
                    tracing::info!("the state store reconnected to PostgreSQL");
                    client = Arc::new(c);
                }
                Err(e) => tracing::warn!(
                    "the state store cannot reach PostgreSQL ({}); retrying at its next use",
                    crate::scrub(&url, &e)
                ),
            }
        }
        job(client.clone()).await;
    }
}

impl Kv<Conn> {
    /// Connect to `url` and open store `store` (creating the schema if
    /// needed).
    pub fn open(url: &str, store: &str) -> Result<PgStore, StoreError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let url = url.to_string();
        let worker = std::thread::Builder::new()
            .name(format!("charter-pg store {store}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(remote(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut clients = Vec::with_capacity(CONNECTIONS);
                    for _ in 0..CONNECTIONS {
                        match crate::connect(&url).await {
                            Ok(c) => clients.push(c),
                            Err(e) => {
                                let _ = ready_tx.send(Err(remote(e)));
                                return;
                            }
                        }
                    }
                    let _ = ready_tx.send(Ok(()));
                    let jobs = Arc::new(Mutex::new(jobs_rx));
                    let serving: Vec<_> = clients
                        .into_iter()
                        .map(|c| tokio::spawn(serve(url.clone(), c, jobs.clone())))
                        .collect();
                    for s in serving {
                        let _ = s.await;
                    }
                });
            })
            .map_err(remote)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Kv {
                store: store.to_string(),
                exec: Conn {
                    jobs: Mutex::new(Some(jobs_tx)),
                    worker: Mutex::new(Some(worker)),
                },
            }),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => {
                let _ = worker.join();
                Err(remote("the connection thread ended"))
            }
        }
    }
}

impl<E: Exec> Kv<E> {
    /// Run `f` on the connection and wait for its answer.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>, String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let store = self.store.clone();
        let job: Job = Box::new(move |c| {
            Box::pin(async move {
                let _ = tx.send(f(c, store).await);
            })
        });
        self.exec.send(job)?;
        let r = match self.exec.answer_within() {
            None => rx.recv().map_err(|_| remote("the connection thread ended")),
            Some(limit) => rx.recv_timeout(limit).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => remote(format!(
                    "PostgreSQL did not answer within {}s; check the server and the network",
                    limit.as_secs()
                )),
                mpsc::RecvTimeoutError::Disconnected => remote("the connection thread ended"),
            }),
        }
        .and_then(|r| r);
        if r.is_err() {
            self.exec.note_failed();
        }
        r
    }

    /// (key, value) pairs of `ns` from `prefix` on, in key order, at most
    /// `limit`.
    fn range(
        &self,
        ns: &str,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let ns = ns.as_bytes().to_vec();
        let lo = prefix.as_bytes().to_vec();
        let hi = successor(&lo);
        let limit = limit.map_or(i64::MAX, |l| l as i64);
        self.call(move |c, store| async move {
            let rows = c
                .query(
                    "SELECT key, value FROM charter_kv WHERE store = $1 AND ns = $2 \
                     AND key >= $3 AND ($4::bytea IS NULL OR key < $4) ORDER BY key LIMIT $5",
                    &[&store, &ns, &lo, &hi, &limit],
                )
                .await
                .map_err(remote)?;
            rows.into_iter()
                .map(|r| {
                    let k: Vec<u8> = r.get(0);
                    let v: Vec<u8> = r.get(1);
                    let v = text(&k, v)?;
                    Ok((text(&k, k.clone())?, v))
                })
                .collect()
        })
    }
}

async fn in_transaction<T>(
    c: &Client,
    body: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    // The connection serves one job at a time, so BEGIN..COMMIT on it
    // wraps exactly this job's statements.
    c.batch_execute("BEGIN").await.map_err(remote)?;
    match body.await {
        Ok(v) => {
            c.batch_execute("COMMIT").await.map_err(remote)?;
            Ok(v)
        }
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK").await;
            Err(StoreError::Refused(format!("postgres: {e}")))
        }
    }
}

impl<E: Exec> Store for Kv<E> {
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        let (ns, key) = (ns.as_bytes().to_vec(), key.as_bytes().to_vec());
        self.call(move |c, store| async move {
            let row = c
                .query_opt(
                    "SELECT value FROM charter_kv WHERE store = $1 AND ns = $2 AND key = $3",
                    &[&store, &ns, &key],
                )
                .await
                .map_err(remote)?;
            row.map(|r| text(&key, r.get(0))).transpose()
        })
    }

    fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.put(ns, key, value);
        self.commit(&b)
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        let (ns, key) = (ns.as_bytes().to_vec(), key.as_bytes().to_vec());
        self.call(move |c, store| async move {
            let n = c
                .execute(
                    "DELETE FROM charter_kv WHERE store = $1 AND ns = $2 AND key = $3",
                    &[&store, &ns, &key],
                )
                .await
                .map_err(remote)?;
            Ok(n > 0)
        })
    }

    fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .range(ns, prefix, Some(MAX_LIST))?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.range(ns, "", None)
    }

    fn scan_prefix(&self, ns: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.range(ns, prefix, None)
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (mut put_ns, mut put_k, mut put_v) = (vec![], vec![], vec![]);
        let (mut del_ns, mut del_k) = (vec![], vec![]);
        for (ns, key, value) in batch.iter() {
            match value {
                Some(v) => {
                    put_ns.push(ns.as_bytes().to_vec());
                    put_k.push(key.as_bytes().to_vec());
                    put_v.push(v.as_bytes().to_vec());
                }
                None => {
                    del_ns.push(ns.as_bytes().to_vec());
                    del_k.push(key.as_bytes().to_vec());
                }
            }
        }
        let in_tx = self.exec.in_tx();
        self.call(move |c, store| async move {
            let body = async {
                if !put_ns.is_empty() {
                    c.execute(
                        "INSERT INTO charter_kv (store, ns, key, value) \
                         SELECT $1, * FROM UNNEST($2::bytea[], $3::bytea[], $4::bytea[]) \
                         ON CONFLICT (store, ns, key) DO UPDATE SET value = EXCLUDED.value",
                        &[&store, &put_ns, &put_k, &put_v],
                    )
                    .await?;
                }
                if !del_ns.is_empty() {
                    c.execute(
                        "DELETE FROM charter_kv WHERE store = $1 AND (ns, key) IN \
                         (SELECT * FROM UNNEST($2::bytea[], $3::bytea[]))",
                        &[&store, &del_ns, &del_k],
                    )
                    .await?;
                }
                Ok(())
            };
            if in_tx {
                // Inside the writer's transaction: a failed statement
                // fails it whole.
                body.await.map_err(remote)
            } else {
                in_transaction(&c, body).await
            }
        })
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (ns, key) = (ns.as_bytes().to_vec(), key.as_bytes().to_vec());
        let old = old.map(|s| s.as_bytes().to_vec());
        let new = new.map(|s| s.as_bytes().to_vec());
        self.call(move |c, store| async move {
            // One statement each: atomic against every other writer.
            let n = match (old, new) {
                (None, Some(v)) => c
                    .execute(
                        "INSERT INTO charter_kv (store, ns, key, value) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (store, ns, key) DO NOTHING",
                        &[&store, &ns, &key, &v],
                    )
                    .await,
                (Some(o), Some(v)) => c
                    .execute(
                        "UPDATE charter_kv SET value = $4 WHERE store = $1 AND ns = $2 AND key = $3 AND value = $5",
                        &[&store, &ns, &key, &v, &o],
                    )
                    .await,
                (Some(o), None) => c
                    .execute(
                        "DELETE FROM charter_kv WHERE store = $1 AND ns = $2 AND key = $3 AND value = $4",
                        &[&store, &ns, &key, &o],
                    )
                    .await,
                (None, None) => {
                    let absent = c
                        .query_opt(
                            "SELECT 1 FROM charter_kv WHERE store = $1 AND ns = $2 AND key = $3",
                            &[&store, &ns, &key],
                        )
                        .await
                        .map_err(remote)?
                        .is_none();
                    return Ok(absent);
                }
            }
            .map_err(remote)?;
            Ok(n == 1)
        })
    }

    fn compare_and_swap_each(
        &self,
        ns: &str,
        swaps: &[(&str, &str, &str)],
    ) -> Result<Vec<bool>, StoreError> {
        if swaps.is_empty() {
            return Ok(Vec::new());
        }
        let ns = ns.as_bytes().to_vec();
        let (mut keys, mut olds, mut news) = (Vec::new(), Vec::new(), Vec::new());
        for (key, old, new) in swaps {
            keys.push(key.as_bytes().to_vec());
            olds.push(old.as_bytes().to_vec());
            news.push(new.as_bytes().to_vec());
        }
        let n = keys.len();
        let swapped = self.call(move |c, store| async move {
            // One statement: the rows locked in key order first (as the
            // log's fence check locks them: the two never deadlock), then
            // each swapped only if it holds its `old`. A key asked twice
            // swaps at most once, and says which (`i`).
            let rows = c
                .query(
                    "WITH v AS (SELECT * FROM unnest($3::bytea[], $4::bytea[], $5::bytea[]) \
                                WITH ORDINALITY AS v(key, old, new, i)), \
                     locked AS (SELECT k.key FROM charter_kv k \
                                WHERE k.store = $1 AND k.ns = $2 AND k.key = ANY($3) \
                                ORDER BY k.key FOR NO KEY UPDATE) \
                     UPDATE charter_kv k SET value = v.new FROM v \
                     WHERE k.store = $1 AND k.ns = $2 AND k.key = v.key AND k.value = v.old \
                       AND k.key IN (SELECT key FROM locked) \
                     RETURNING v.i",
                    &[&store, &ns, &keys, &olds, &news],
                )
                .await
                .map_err(remote)?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect::<std::collections::HashSet<_>>())
        })?;
        Ok((1..=n as i64).map(|i| swapped.contains(&i)).collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every write above returned after its commit.
        Ok(())
    }

    fn clear(&self, ns: &str) -> Result<(), StoreError> {
        let ns = ns.as_bytes().to_vec();
        self.call(move |c, store| async move {
            c.execute(
                "DELETE FROM charter_kv WHERE store = $1 AND ns = $2",
                &[&store, &ns],
            )
            .await
            .map_err(remote)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn successor_is_the_first_string_past_the_prefix() {
        assert_eq!(super::successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(super::successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(super::successor(b"\xff\xff"), None);
        assert_eq!(super::successor(b""), None);
    }
}
