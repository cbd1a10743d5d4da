//! The governed component host.
//!
//! A [`Host`] loads a deployment's plugins and runs their steps. Loading is
//! enforcement point 1: the component's imports, read from its type per
//! function, must be covered by its grants or the inert WASI baseline, or
//! it is refused and nothing of it runs. Linking is point 2 (`linker.rs`):
//! its linker holds only what is granted. Every capability call passes the
//! mediator (`mediator/`), the seam of point 3. Limits are point 4: an epoch
//! deadline, a memory cap, a host-call cap, bounded input, output,
//! component size and compile time.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use charter_config::Deployment;
//! use charter_runtime::{Host, HostOptions};
//! let deployment = Deployment::load("charter.toml".as_ref(), charter_runtime::host_catalog())?;
//! let host = Host::new(deployment, HostOptions::default())?;
//! let out = host.call("refund-triage", r#"{"order_id":"A-1001","request":"arrived broken"}"#).await?;
//! println!("{}", out.output);
//! # Ok(()) }
//! ```

pub mod capabilities;
pub mod drain;
pub mod error;
pub mod fetch;
pub mod hot;

tokio::task_local! {
    /// The person a front end authenticated for the call [`proven`]
    /// scopes, and how.
    static PROVEN: (String, &'static str);
}

/// Run `f` (a call a front end makes for `name`) with `name` proven by
/// `how` (`token`, `oidc`, `claimed`): the events it records for `name`
/// say so ([`Host::how_proven`]).
pub async fn proven<F: std::future::Future>(name: &str, how: &'static str, f: F) -> F::Output {
    PROVEN.scope((name.to_string(), how), f).await
}
pub mod index;
pub mod kpi;
pub mod mediator;
mod policy_warnings;
pub mod proposals;
mod quota;
pub mod record;
pub mod sandbox;
mod state;
pub mod tools;
pub mod values;
pub mod workflow;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use charter_audit::{AnyLog, Event, EventLog};
use charter_config::{Deployment, FunctionName, PluginSpec, WasiMode};
use charter_store::{SledStore, Store};
use wasmtime::component::{Component, ComponentType, InstancePre, Lift};
use wasmtime::{Engine, Trap};

pub use capabilities::{Catalog, FnId, HostFunction, catalog, host_catalog};
pub use error::{CallError, LimitKind, LoadError, UngrantedImport};
pub use inspect::{Inspection, binary_kind, digest, inspect};
pub use mediator::{Llm, LogLine, OfflineLlm, OpenAiLlm};
pub use sandbox::load_check::check_imports;
pub use sandbox::{engine, inspect};

use inspect::{BinaryKind, ImportClass};
use mediator::{Fault, PluginContext, Services};
use sandbox::linker::{self, GrantSet};
use sandbox::load_check::grant_set;
use state::HostState;

#[derive(ComponentType, Lift, Debug)]
#[component(variant)]
enum WireStepError {
    #[component(name = "retryable")]
    Retryable(String),
    #[component(name = "fatal")]
    Fatal(String),
}

/// How to build a [`Host`] beyond what the deployment says.
#[derive(Default)]
pub struct HostOptions {
    /// State backend; default: sled in `<data_dir>/state`.
    pub store: Option<Arc<dyn Store>>,
    /// The event log on a shared backend, opened by the caller with the
    /// index's applied seq and the commit callback (see [`LogOpener`]);
    /// default: the file log `<data_dir>/events.log`. A deployment whose
    /// `[deployment] backend` is not the file log must be given one (and
    /// its `store`): `charter_api::host_options` opens both.
    pub log: Option<LogOpener>,
    /// This process's node name on a shared backend (one process per
    /// name; run leases name it). Default: `default`.
    pub node: Option<String>,
    /// LLM provider; default: from the deployment's `[llm]`.
    pub llm: Option<Arc<dyn Llm>>,
    /// Compile cache directory; default: `<data_dir>/cache`. Tests share
    /// one across hosts so a large component compiles once per suite.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Disable the compile cache (wins over `cache_dir`).
    pub no_cache: bool,
    /// Benchmarks only: write the event log without `fdatasync`, to measure
    /// everything but the disk. A deployment never sets this.
    pub unsynced_log: bool,
    /// Profiling only: allocate instances on demand instead of from the
    /// pooling allocator, whose terabytes of reserved address space
    /// valgrind cannot map (`charter-bench`'s instruction-count mode).
    pub on_demand_instances: bool,
}

/// Opens a shared event log: called once by [`Host::new`] with the
/// index's applied seq, this process's node name and the function that applies records to the index
/// in a given store. A shared log calls it inside each append's
/// transaction with the store as that transaction sees it, so an append
/// and its index rows commit together (`charter_pg::PgLog::open_shared`).
/// The front end's composition root builds it (PostgreSQL: `charter-pg`),
/// so this crate links no database client.
pub type LogOpener = Box<
    dyn FnOnce(
            u64,
            &str,
            IndexApply,
        ) -> Result<Arc<dyn charter_audit::DynLog>, charter_audit::LogError>
        + Send,
>;

/// Applies committed records (with their positions) to the index kept in
/// the store it is given ([`index::apply_cached`]).
pub type IndexApply =
    Box<dyn FnMut(&dyn Store, &[charter_audit::Record], &[u64]) -> Result<(), String> + Send>;

/// Removes a node's record (`charter nodes`) when its host closes
/// cleanly, if the record is still this process's; a process that dies
/// leaves it to show as gone.
struct NodeRecordGuard {
    store: Arc<dyn Store>,
    /// The record as this host wrote it first (its `seen_ms` aside, it
    /// names this process: pid and start time, so a process of another
    /// container with the same pid is not taken for this one).
    record: index::NodeRecord,
}

impl NodeRecordGuard {
    /// Whether `text` is this process's record.
    fn is_mine(&self, text: &str) -> bool {
        serde_json::from_str::<index::NodeRecord>(text).is_ok_and(|r| {
            r.pid == self.record.pid
                && r.started_ms == self.record.started_ms
                && r.hostname == self.record.hostname
        })
    }
}

impl Drop for NodeRecordGuard {
    fn drop(&mut self) {
        let Ok(Some(text)) = self.store.get(index::NODES, &self.record.node) else {
            return;
        };
        if self.is_mine(&text) {
            let _ = self
                .store
                .compare_and_swap(index::NODES, &self.record.node, Some(&text), None);
        }
    }
}

/// This machine's name, for the node records (`unknown` where it cannot
/// be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The node name a shared backend's process goes by when none is given.
pub const DEFAULT_NODE: &str = "default";

/// Check a node name: 1 to 64 of `A-Z a-z 0-9 . _ -` (it is written into
/// leases and shown by `charter nodes`).
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// A plugin that passed the load-time check and is ready to instantiate.
pub struct LoadedPlugin {
    pub name: String,
    pub digest: String,
    pub inspection: Inspection,
    /// For a connector: provided interface (no version) → export name.
    pub provides: HashMap<String, String>,
    pub load_time: Duration,
    pre: InstancePre<HostState>,
    ctx: Arc<PluginContext>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The result of one successful step call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallOutcome {
    /// The step's output, a JSON document.
    pub output: serde_json::Value,
    pub logs: Vec<LogLine>,
    pub host_calls: u64,
    pub duration_us: u64,
}

/// Runs a deployment's plugins under their grants.
pub struct Host {
    engine: Engine,
    /// The data directory (fixed for the host's life).
    data_dir: std::path::PathBuf,
    services: Arc<Services>,
    /// What serves: the configuration in force and the loaded version of
    /// each plugin, linked under it; an immutable generation replaced as a
    /// whole (`hot/`); each operation reads it once. Shared with the
    /// index's secret resolver, which reads the secrets in force.
    generation: Arc<std::sync::RwLock<Arc<hot::Generation>>>,
    /// Versions other than the serving one that runs recorded at their
    /// start and still use (bounded, `hot::MAX_KEPT_VERSIONS`).
    versions: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
    /// One push (or rollback) at a time: each checks against, and
    /// replaces, the generation the previous one left.
    pushes: tokio::sync::Mutex<()>,
    /// Per plugin, a version another node activated that this node could
    /// not serve, and when it last tried (`Host::follow_activations`).
    follow_failed: Mutex<HashMap<String, (String, u64)>>,
    /// Per plugin, the seq of the latest `plugin-activated` record this
    /// node has read from a shared log or appended: the next read starts
    /// there, and a log that no longer holds it (rows deleted) is refused
    /// (`Host::last_activation`).
    activations_seen: Mutex<HashMap<String, u64>>,
    pres: Mutex<HashMap<(String, GrantSet), InstancePre<HostState>>>,
    config_recorded: tokio::sync::OnceCell<()>,
    /// Held while a person's decision is checked against the log and
    /// recorded (approvals, escalation resolutions, cancellations): two
    /// decisions on one proposal or run never both act on the same state.
    /// (One process holds the data directory; see [`lock_data_dir`].)
    decisions: tokio::sync::Mutex<()>,
    /// The run timers of a long-running host (`workflow/timers.rs`), once
    /// started: every drive then reports where its run waits, and a
    /// retry's wait returns instead of sleeping in the drive.
    timers: std::sync::OnceLock<Arc<workflow::timers::Queue>>,
    /// Triggered starts in progress, by dedup key (`workflow/triggers.rs`).
    trigger_locks: workflow::triggers::Locks,
    /// Who this host is when it holds a run's lease (process and instance).
    holder: String,
    /// Its node name (a shared backend's; `default` otherwise).
    node: String,
    /// Removes this node's record when the host closes (a shared backend).
    _node_record: Option<NodeRecordGuard>,
    /// Stopping (SIGTERM): no new step attempt, drivers counted.
    drain: drain::Drain,
    _ticker: engine::EpochTicker,
    /// The data directory's lock, released last (see [`lock_data_dir`]).
    _lock: std::fs::File,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("deployment", &self.config().deployment.name)
            .finish_non_exhaustive()
    }
}

/// Errors creating a host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] charter_store::StoreError),
    #[error("engine: {0}")]
    Engine(String),
    #[error("llm: {0}")]
    Llm(String),
    /// A capability could not be set up from the deployment.
    #[error("{0}")]
    Capability(String),
    #[error(transparent)]
    Log(#[from] charter_audit::LogError),
    #[error("{0}")]
    Index(String),
    #[error(transparent)]
    Policy(#[from] charter_policy::PolicyError),
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The deployment's backend cannot be used as configured.
    #[error("{0}")]
    Backend(String),
    #[error(
        "the data directory {} is in use by another charter process (waited {waited_ms} ms for it); one process per data directory at a time: wait for it to finish (a detached run's driver finishes with its run), or set CHARTER_LOCK_WAIT_MS to wait longer",
        dir.display()
    )]
    Busy {
        dir: std::path::PathBuf,
        waited_ms: u64,
    },
    #[error(
        "charter up is serving this deployment at {url} and owns its data directory {}: act through its API with your token (README: \"Run Charter as a service\"); reading commands (runs, proposals list, audit, kpi) work beside it",
        dir.display()
    )]
    Served {
        dir: std::path::PathBuf,
        url: String,
    },
}

/// The file in the data directory where a running `charter up` says
/// where it listens (`{"url", "pid"}`).
pub const SERVICE_FILE: &str = "charter-up.json";

/// The URL of the `charter up` serving the deployment of `dir`, if its
/// process still runs.
///
/// The CLI sends its token to that URL, so the file is trusted only as far
/// as `charter up` itself could have written it: owned by this user and
/// writable by no one else, naming a live process of this user, and a
/// loopback (or unspecified, i.e. this machine's) address. A file checked
/// into a repository or planted in a shared directory is ignored: name a
/// remote host with `--server` instead.
pub fn service_url(dir: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    let path = dir.join(SERVICE_FILE);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = v["pid"].as_u64()?;
    let alive = pid != u64::from(std::process::id())
        && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me);
    let url = v["url"].as_str()?;
    (alive && is_local_url(url)).then(|| url.to_string())
}

/// `http://HOST:PORT` whose host is this machine: a loopback or the
/// unspecified address, or `localhost`.
fn is_local_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => return false,
    };
    if host == "localhost" {
        return true;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// How long past a step's deadline the host waits before it cuts the step's
/// host-side waits itself: long enough for a waiting call that honours the
/// deadline (an HTTP request, whose timeouts are cut to it) to end first
/// and record its own result; every other wait (WASI poll and sleep) ends
/// here.
pub const HOST_WAIT_GRACE: Duration = Duration::from_millis(25);

/// Open the state store. The store only holds what the event log already
/// says: if a crash left its files corrupt, they are moved aside
/// (`state.corrupt-<ms>`) and the store is rebuilt from the log as the host
/// opens it, instead of refusing to start.
fn open_state(dir: &std::path::Path) -> Result<SledStore, HostError> {
    match SledStore::open(dir) {
        Err(e) if e.is_corruption() => {
            let aside = dir.with_file_name(format!("state.corrupt-{}", charter_audit::now_ms()));
            tracing::warn!(
                store = %dir.display(),
                aside = %aside.display(),
                "the state store is corrupt ({e}); it is derived from the event log: moved aside and rebuilt"
            );
            std::fs::rename(dir, &aside).map_err(|source| HostError::DataDir {
                path: dir.to_owned(),
                source,
            })?;
            Ok(SledStore::open(dir)?)
        }
        r => Ok(r?),
    }
}

/// The deployment's signing key (created on first use), which signs the
/// start-up's verified mark; `None` (with a warning) if it cannot be read,
/// and the log is then verified in full at every start.
fn signing_key(dir: &std::path::Path) -> Option<charter_audit::checkpoint::SigningKey> {
    charter_audit::checkpoint::signing_key(dir)
        .inspect_err(|e| {
            tracing::warn!(
                "cannot read the deployment's signing key ({e}); the whole event log is verified at every start"
            )
        })
        .ok()
}

/// Take the data directory's lock if nobody holds it, without waiting
/// (read-only commands that would rather read the whole log than wait).
pub fn try_lock_data_dir(dir: &std::path::Path) -> Option<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("charter.lock"))
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

/// Numbers the hosts of this process (lease holders).
static HOST_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Most reasons a `plugin-refused` event records.
const MAX_REFUSAL_LINES: usize = 100;

/// How long a process waits for another to release a data directory,
/// unless `CHARTER_LOCK_WAIT_MS` says otherwise.
pub const LOCK_WAIT_MS: u64 = 30_000;

/// Take the data directory's lock (`<data_dir>/charter.lock`), waiting up to
/// `CHARTER_LOCK_WAIT_MS` (default [`LOCK_WAIT_MS`]) for another process to
/// release it: concurrent commands on one deployment take turns instead of
/// failing at once, and fail clearly when the wait is over. Taken before
/// the state store and the event log are opened, so neither's own lock
/// error is ever what a user sees.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, HostError> {
    let path = dir.join("charter.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| HostError::DataDir {
            path: path.clone(),
            source,
        })?;
    let wait = std::env::var("CHARTER_LOCK_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LOCK_WAIT_MS);
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(HostError::DataDir { path, source });
            }
        }
        // A running service holds it for good: say so at once.
        if let Some(url) = service_url(dir) {
            return Err(HostError::Served {
                dir: dir.to_owned(),
                url,
            });
        }
        let waited = started.elapsed();
        if waited >= Duration::from_millis(wait) {
            return Err(HostError::Busy {
                dir: dir.to_owned(),
                waited_ms: waited.as_millis() as u64,
            });
        }
        if !told && waited >= Duration::from_millis(500) {
            told = true;
            tracing::warn!(
                dir = %dir.display(),
                "waiting for another charter process to release the data directory (up to {wait} ms)"
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Host {
    /// The composition root: lock the data dir, open the log and the index
    /// (re-applying what the index missed), build the engine, the policy
    /// engine and the capability registry. Long because it wires every part
    /// once, in order; each part is built by its own module.
    pub fn new(deployment: Deployment, options: HostOptions) -> Result<Host, HostError> {
        // Before anything is written: a deployment on a shared backend
        // never falls back to a file log of its own.
        if deployment.backend.is_postgres() && options.log.is_none() {
            return Err(HostError::Backend(format!(
                "deployment {:?} keeps its event log on {} ([deployment] backend), which this host was not given: open it through charter_api::host_options (the charter command does)",
                deployment.name,
                deployment.backend.shown()
            )));
        }
        std::fs::create_dir_all(&deployment.data_dir).map_err(|source| HostError::DataDir {
            path: deployment.data_dir.clone(),
            source,
        })?;
        let lock = lock_data_dir(&deployment.data_dir)?;
        let max_memory = deployment
            .plugins
            .values()
            .map(|p| p.limits.memory_bytes)
            .chain([deployment.limits.memory_bytes])
            .max()
            .unwrap_or(64 << 20);
        let engine = engine::build_engine(&engine::EngineOptions {
            max_memory_bytes: max_memory,
            cache_dir: (!options.no_cache).then(|| {
                options
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| engine::cache_dir(&deployment.data_dir))
            }),
            pooling: !options.on_demand_instances,
            max_instances: deployment.max_steps_in_flight,
        })
        .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let store: Arc<dyn Store> = match options.store {
            Some(s) => s,
            None => {
                let own = open_state(&deployment.data_dir.join("state"))?;
                // This store is the data directory's own and its lock is
                // ours: any run lease in it is a dead process's.
                index::clear_leases(&own).map_err(|e| HostError::Index(e.to_string()))?;
                Arc::new(own)
            }
        };
        let capabilities =
            capabilities::Registry::new(&deployment, capabilities::Setup { llm: options.llm })
                .map_err(HostError::Capability)?;
        // The event log is the system of record; the store's indexes are
        // derived from it, re-applied from the last sequence they saw.
        let index_store = store.clone();
        let config_digest = hot::config::Config::file_digest(&deployment);
        let max_steps_in_flight = deployment.max_steps_in_flight;
        let config = Arc::new(hot::config::Config::new(deployment, config_digest, 0)?);
        hot::config::keep_definitions(&config.deployment.data_dir, &config);
        let generation = Arc::new(std::sync::RwLock::new(Arc::new(hot::Generation::new(
            config.clone(),
        ))));
        // The secrets (and their grants) in force when a record is applied.
        let in_force = generation.clone();
        let resolve = move |plugin: &str, name: &str| {
            let g = in_force
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let d = &g.config.deployment;
            d.plugins
                .get(plugin)
                .is_some_and(|p| d.granted_secrets(p).contains(name))
                .then(|| mediator::read_secret(&d.secrets, name).ok())
                .flatten()
        };
        let deployment = &*config.deployment;
        // An index that cannot apply stops a file log (and so the host)
        // with an error naming the data directory and the fix; on a
        // shared log it refuses the one append.
        let data_dir = deployment.data_dir.clone();
        let applied = index::prepare(&*store)
            .map_err(|e| HostError::Index(e.stop_message(&deployment.data_dir)))?;
        let key = signing_key(&deployment.data_dir);
        let mark = key
            .as_ref()
            .and_then(|k| index::verified_mark(&*store, &k.verifying_key()));
        let shared = options.log.is_some();
        let mut apply: IndexApply = {
            let mut runs = index::RunCache::default();
            Box::new(move |store, records, at| {
                // A node of a shared log may find records applied by
                // another node (see `apply_cached_skipping_applied`).
                let apply = if shared {
                    index::apply_cached_skipping_applied
                } else {
                    index::apply_cached
                };
                apply(store, records, at, &resolve, &mut runs).map_err(|e| {
                    if shared {
                        // Applied in the append's transaction (or, catching
                        // up, to what is committed): the append is refused
                        // with nothing of it written, or the catch-up
                        // fails; the log goes on either way.
                        format!("{e} (the index of a shared log commits with each append: an append whose index fails is refused, nothing of it written)")
                    } else {
                        e.stop_message(&data_dir)
                    }
                })
            })
        };
        let node = options.node.unwrap_or_else(|| DEFAULT_NODE.to_string());
        let mut node_record: Option<NodeRecordGuard> = None;
        check_node_name(&node).map_err(HostError::Index)?;
        let log = match options.log {
            None => {
                let on_commit: charter_audit::OnCommit =
                    Box::new(move |records, at| apply(&*index_store, records, at));
                let (log, opened) = EventLog::open_verified(
                    &deployment.data_dir.join(charter_audit::LOG_FILE),
                    mark,
                    applied,
                    on_commit,
                    !options.unsynced_log,
                )?;
                tracing::debug!(
                    frames = opened.checked,
                    from_mark = opened.from_mark,
                    "event log verified"
                );
                // The next start verifies from here (the file is synced up to it).
                if let Some(k) = &key
                    && opened.verified.seq > 0
                    && mark != Some(opened.verified)
                {
                    index::record_verified_mark(&*store, k, &opened.verified)
                        .map_err(|e| HostError::Index(e.stop_message(&deployment.data_dir)))?;
                }
                AnyLog::File(log)
            }
            Some(open) => {
                let log = open(applied, &node, apply)?;
                // Opening took this node's name (one process per name): a
                // run lease this node's name holds is a dead process's.
                // Other nodes' leases are theirs until they expire.
                index::clear_leases_of_node(&*store, &node)
                    .map_err(|e| HostError::Index(e.to_string()))?;
                let now = charter_audit::now_ms();
                let record = index::NodeRecord {
                    node: node.clone(),
                    hostname: hostname(),
                    pid: std::process::id(),
                    started_ms: now,
                    seen_ms: now,
                    steps_in_flight: 0,
                    steps_capacity: max_steps_in_flight,
                };
                index::record_node(&*store, &record)
                    .map_err(|e| HostError::Index(e.to_string()))?;
                node_record = Some(NodeRecordGuard {
                    store: store.clone(),
                    record,
                });
                AnyLog::Shared(log)
            }
        };
        // Quotas count from the log: a restart does not reset them.
        let quotas = quota::Quotas::from_log(deployment, &log, charter_audit::now_ms())?;
        // A quota bounds the deployment: on a log several nodes share,
        // its window is the store's, not this process's.
        let quotas = match &log {
            AnyLog::Shared(_) => quotas.shared_in(deployment.quotas.values(), store.clone()),
            AnyLog::File(_) => quotas,
        };
        let services = Arc::new(Services {
            quotas,
            store,
            capabilities,
            log,
            max_steps_in_flight,
            engine: engine.clone(),
            connectors: Default::default(),
            slots: engine::Slots::new(max_steps_in_flight),
        });
        Ok(Host {
            _ticker: engine::EpochTicker::start(&engine),
            engine,
            data_dir: deployment.data_dir.clone(),
            services,
            generation,
            versions: Mutex::default(),
            pushes: tokio::sync::Mutex::new(()),
            follow_failed: Mutex::default(),
            activations_seen: Mutex::default(),
            pres: Mutex::new(HashMap::new()),
            config_recorded: tokio::sync::OnceCell::new(),
            decisions: tokio::sync::Mutex::new(()),
            timers: std::sync::OnceLock::new(),
            trigger_locks: Default::default(),
            _node_record: node_record,
            node: node.clone(),
            holder: format!(
                "{} pid {} host {}",
                index::node_holder_prefix(&node),
                std::process::id(),
                HOST_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            drain: drain::Drain::default(),
            _lock: lock,
        })
    }

    /// The deployment in force now (it changes when a configuration is
    /// applied: an operation that needs it more than once reads
    /// [`Host::generation`] once instead).
    pub fn deployment(&self) -> Arc<Deployment> {
        self.config().deployment.clone()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Stopping the host: drivers start no new step attempt once
    /// [`drain::Drain::stop`] is called; [`drain::Drain::idle`] waits for
    /// those inside a step.
    pub fn drain(&self) -> &drain::Drain {
        &self.drain
    }

    /// Whether the log is one several nodes share (PostgreSQL): what
    /// one process orders alone (decisions, quotas, the timers' runs) is
    /// then ordered through the store.
    pub fn shared_log(&self) -> bool {
        matches!(self.services.log, AnyLog::Shared(_))
    }

    /// Refresh this node's record (a shared deployment: `charter nodes`
    /// shows it alive while this goes on).
    pub(crate) fn note_alive(&self) {
        if !self.shared_log() {
            return;
        }
        let Some(guard) = &self._node_record else {
            return;
        };
        // Written back if it is this process's, or gone (removed by a
        // process that no longer runs); another's is left alone.
        let stored = guard.store.get(index::NODES, &self.node);
        let write = match &stored {
            Ok(Some(text)) => guard.is_mine(text),
            Ok(None) => true,
            Err(_) => false,
        };
        if !write {
            return;
        }
        let mut rec = guard.record.clone();
        rec.seen_ms = charter_audit::now_ms();
        rec.steps_in_flight = self.services.slots.in_use();
        rec.steps_capacity = self.services.slots.capacity();
        if let Err(e) = index::record_node(&*guard.store, &rec) {
            tracing::warn!(node = %self.node, "cannot refresh the node's record ({e})");
        }
    }

    /// On a log several nodes share, claim `key` (a lease in the store:
    /// `@proposal/ID`, `@trigger/KEY`) for one act that a single process
    /// orders with its own locks, waiting up to `wait` while another node
    /// holds it. `None` on the file log (one process: its locks suffice).
    /// The error says nothing was recorded.
    pub(crate) async fn claim_shared(
        &self,
        key: &str,
        wait: std::time::Duration,
    ) -> Result<Option<Arc<index::RunLease>>, String> {
        if !self.shared_log() {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        loop {
            match self.claim_run(key) {
                Ok(Some(lease)) => return Ok(Some(Arc::new(lease))),
                Ok(None) if started.elapsed() < wait => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Ok(None) => {
                    return Err(format!(
                        "another node has held {key} for {}s; nothing was recorded, try again",
                        wait.as_secs()
                    ));
                }
                Err(e) => return Err(format!("cannot claim {key} ({e}); nothing was recorded")),
            }
        }
    }

    /// Claim run `id` for this host to drive ([`index::claim_run`]):
    /// `None` while another driver (of this process or another sharing
    /// the store) holds it. Released when the guard is dropped.
    pub fn claim_run(&self, id: &str) -> Result<Option<index::RunLease>, index::IndexError> {
        let ttl = self.config().deployment.run_lease_ms;
        index::claim_run(&self.services.store, id, &self.holder, ttl)
    }

    /// Run `id`'s records (its events, its journaled calls' results, the
    /// decisions on its proposals), read through the per-run index: the
    /// cost follows the run, not the log.
    pub fn records_of_run(
        &self,
        id: &str,
    ) -> Result<Vec<charter_audit::Record>, index::IndexError> {
        index::run_records(&*self.services.store, &self.services.log, id)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The state store (the plugins' kv namespaces).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.services.store
    }

    /// `name`'s entry in the configuration in force.
    fn spec(&self, name: &str) -> Result<PluginSpec, LoadError> {
        spec_in(&self.config(), name)
    }

    /// The event log (the file log, or a shared backend's).
    pub fn log(&self) -> &AnyLog {
        &self.services.log
    }

    /// How `name`, a person an event records (initiator, approver,
    /// resolver, canceller, operator), was proven, by the rule every front
    /// end enforces (SECURITY.md promise 15): in a deployment that declares
    /// tokens, a declared identity reaches the host only through its token
    /// (`token`); in one that declares none, any name is a claim
    /// (`claimed`). `None` for a name that is no identity of a deployment
    /// with tokens (not a person: a trigger, the host itself).
    ///
    /// Inside [`proven`] for `name`, what the front end proved it with
    /// (`token`, `oidc`); outside, for an identity that declares no token
    /// but OIDC subjects, `oidc`.
    pub fn how_proven(&self, name: &str) -> Option<String> {
        if let Ok(Some(how)) = PROVEN.try_with(|(n, how)| (n == name).then(|| how.to_string())) {
            return Some(how);
        }
        let d = self.deployment();
        let tokens = d.oidc.is_some() || d.identities.values().any(|i| !i.tokens.is_empty());
        match (tokens, d.identities.get(name)) {
            (true, Some(i)) if i.tokens.is_empty() && !i.oidc_subjects.is_empty() => {
                Some("oidc".into())
            }
            (true, Some(_)) => Some("token".into()),
            (true, None) => None,
            (false, _) => Some("claimed".into()),
        }
    }

    /// Set `auth` on the events of `events` that record `by` as the person
    /// who acted (and say nothing yet of how).
    pub(crate) fn stamp_auth(&self, events: &mut [Event], by: &str) {
        let how = self.how_proven(by);
        for e in events {
            match e {
                Event::RunStarted {
                    initiator: Some(p),
                    auth,
                    ..
                }
                | Event::ApprovalDecision { by: p, auth, .. }
                | Event::EscalationResolved { by: p, auth, .. }
                | Event::RunFinished {
                    by: Some(p), auth, ..
                }
                | Event::KvWrite {
                    by: Some(p), auth, ..
                } if p == by && auth.is_none() => *auth = how.clone(),
                _ => {}
            }
        }
    }

    /// An operator writes a plugin's kv (e.g. to seed data): an event like
    /// any other, attributed to `by`.
    pub async fn operator_kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Option<&str>,
        by: &str,
    ) -> Result<u64, HostError> {
        self.spec(plugin)
            .map_err(|e| HostError::Engine(e.to_string()))?;
        let (max_key, max_value) = mediator::kv_bounds();
        if key.is_empty() || key.len() > max_key || value.is_some_and(|v| v.len() > max_value) {
            return Err(HostError::Engine(format!(
                "kv key must be 1 to {max_key} bytes and a value at most {max_value} bytes"
            )));
        }
        Ok(self
            .services
            .log
            .append(vec![Event::KvWrite {
                plugin: plugin.to_string(),
                key: key.to_string(),
                value: value.map(str::to_string),
                by: Some(by.to_string()),
                auth: self.how_proven(by),
                secrets: vec![],
            }])
            .await?)
    }

    /// Load `name` (once; later calls reuse it) through the load-time check.
    /// Every load and refusal is an event in the log.
    pub async fn load(&self, name: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        if let Some(p) = self.generation().plugin(name) {
            return Ok(p.clone());
        }
        Box::pin(self.load_uncached(name)).await
    }

    /// Record the configuration in force and its grants (an authority
    /// record: who granted what, and why) when it differs from the last one
    /// recorded: the log holds each configuration once, not once per
    /// command. Checked once per host.
    pub async fn record_config(&self) {
        self.config_recorded
            .get_or_init(|| async {
                let config = self.config();
                let d = &config.deployment;
                let digest = config.digest.clone();
                let last = self
                    .services
                    .store
                    .get(index::META, "config_digest")
                    .ok()
                    .flatten();
                // The index keeps the digest of the last `config-loaded`
                // in the log: the same configuration is not recorded again.
                if last.as_deref() == Some(digest.as_str()) {
                    return;
                }
                let mut events = vec![Event::ConfigLoaded {
                    path: d.source.display().to_string(),
                    digest: digest.clone(),
                    phase: d.phase.get(),
                    changed: last.is_some(),
                }];
                events.extend(d.plugins.values().map(|p| Event::Grant {
                    plugin: p.name.clone(),
                    groups: p.groups.clone(),
                    granted_by: p.granted_by.clone(),
                    reason: p.reason.clone(),
                }));
                if let Err(e) = self.services.log.append(events).await {
                    tracing::error!("event log: {e}");
                }
            })
            .await;
    }

    /// Record that `charter check` refused or failed the deployment.
    pub async fn record_check_failure(&self, problems: Vec<String>) {
        if let Err(e) = self
            .services
            .log
            .append(vec![Event::CheckFailed { problems }])
            .await
        {
            tracing::error!("event log: {e}");
        }
    }

    async fn load_uncached(&self, name: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        self.record_config().await;
        let config = self.config();
        let spec = spec_in(&config, name)?;
        match self.load_checked(&config, &spec, None).await {
            Ok(loaded) => {
                let ev = Event::PluginLoaded {
                    plugin: loaded.name.clone(),
                    digest: loaded.digest.clone(),
                    groups: spec.groups.clone(),
                };
                if let Err(e) = self.services.log.append(vec![ev]).await {
                    tracing::error!("event log: {e}");
                }
                // A concurrent first load of the same plugin, or a push,
                // may have installed one already: the installed one wins.
                Ok(self.install_if_absent(loaded))
            }
            Err((e, digest)) => self.refused(name, e, digest).await,
        }
    }

    /// Record a refused load (`plugin-refused`, its reasons bounded) and
    /// return the error.
    async fn refused<T>(
        &self,
        name: &str,
        e: LoadError,
        digest: Option<String>,
    ) -> Result<T, LoadError> {
        let mut reasons: Vec<String> = match &e {
            LoadError::Ungranted(v) => v.iter().map(|u| u.to_string()).collect(),
            LoadError::Governance(v) => v.iter().map(|u| u.to_string()).collect(),
            other => vec![other.to_string()],
        };
        // A component chooses how many imports it has: the record of
        // its refusal is bounded all the same.
        if reasons.len() > MAX_REFUSAL_LINES {
            let more = reasons.len() - MAX_REFUSAL_LINES;
            reasons.truncate(MAX_REFUSAL_LINES);
            reasons.push(format!("… and {more} more"));
        }
        let reasons = reasons.iter().map(|r| record::text(r)).collect();
        let rule = match &e {
            LoadError::Ungranted(_) => "ungranted-import",
            LoadError::Governance(_) => "governance",
            LoadError::DigestMismatch { .. } => "digest-pin",
            LoadError::Tampered { .. }
            | LoadError::IndexDisagrees { .. }
            | LoadError::ActivationGone { .. } => "tampered",
            LoadError::TooLarge { .. } => "too-large",
            LoadError::CoreModule { .. }
            | LoadError::Malformed { .. }
            | LoadError::NotAStep { .. } => "not-a-component",
            _ => "load-error",
        };
        let ev = Event::PluginRefused {
            plugin: name.to_string(),
            digest,
            rule: rule.into(),
            reasons,
        };
        if let Err(le) = self.services.log.append(vec![ev]).await {
            tracing::error!("event log: {le}");
        }
        Err(e)
    }

    /// [`load_in_span`](Self::load_in_span) inside a `load` span (attached
    /// to the future: an entered guard must not be held across `.await`).
    /// `bytes`: a version sent to the host (a push, a rollback, a run's
    /// recorded version); `None`: the version that serves (the last one
    /// activated, else the file the configuration names).
    /// Checked and linked against `config` (the one in force, or one being
    /// applied), whose entry for the plugin is `spec`.
    pub(crate) async fn load_checked(
        &self,
        config: &Arc<hot::config::Config>,
        spec: &PluginSpec,
        bytes: Option<Vec<u8>>,
    ) -> Result<Arc<LoadedPlugin>, (LoadError, Option<String>)> {
        use tracing::Instrument;
        let span = tracing::info_span!("load", plugin = %spec.name);
        self.load_in_span(config, spec, bytes)
            .instrument(span)
            .await
    }

    async fn load_in_span(
        &self,
        config: &Arc<hot::config::Config>,
        spec: &PluginSpec,
        bytes: Option<Vec<u8>>,
    ) -> Result<Arc<LoadedPlugin>, (LoadError, Option<String>)> {
        let started = Instant::now();
        let name = spec.name.as_str();
        let deployment = &*config.deployment;

        // Governance rules of the config itself come first: a plugin with a
        // phase-gated grant is refused before its bytes are even read.
        let violations: Vec<_> = deployment
            .violations()
            .into_iter()
            .filter(|v| v.plugin.as_deref() == Some(name))
            .collect();
        if !violations.is_empty() {
            return Err((LoadError::Governance(violations), None));
        }

        let bytes = match bytes {
            Some(b) => b,
            None => self.serving_bytes(spec).map_err(|e| (e, None))?,
        };
        let (bytes, component) = self
            .check_and_compile(spec, bytes)
            .await
            .map_err(|e| (e, None))?;
        let inspection = inspect::inspect(&self.engine, &component, &bytes);
        let digest = inspection.digest.clone();
        let fail = |e: LoadError| (e, Some(digest.clone()));

        let ungranted = check_imports(deployment, spec, &inspection);
        if !ungranted.is_empty() {
            tracing::info!(plugin = %name, count = ungranted.len(), "refused at load: ungranted imports");
            return Err(fail(LoadError::Ungranted(ungranted)));
        }

        let provides = exports_provided(spec, &inspection).map_err(fail)?;
        let unknown = unknown_quota_functions(deployment, spec, &inspection, &provides);
        if !unknown.is_empty() {
            return Err(fail(LoadError::Governance(unknown)));
        }
        let routes = self
            .connector_routes(deployment, spec, &component, &inspection)
            .await
            .map_err(fail)?;

        let mut grants = grant_set(deployment, spec);
        grants.connectors = routes;
        let pre = self
            .instance_pre(spec, &digest, &grants, &component)
            .map_err(fail)?;
        let ctx = Arc::new(self.plugin_context(config, spec, &digest, &grants));
        // Kept by content, so a run that records this version runs these
        // bytes after a push or a restart.
        if let Err(e) = hot::store::put(&self.data_dir, &digest, &bytes) {
            tracing::warn!(plugin = %name, "cannot keep version {digest} in the plugin store: {e}; a run that records it cannot resume after a restart");
        }
        if let Err(e) = self.share_version(&digest, &bytes) {
            tracing::warn!(plugin = %name, "cannot keep version {digest} in the deployment's backend: {e}; another node that lacks it cannot resume a run that records it");
        }
        let loaded = Arc::new(LoadedPlugin {
            name: spec.name.clone(),
            digest,
            inspection,
            provides,
            load_time: started.elapsed(),
            pre,
            ctx,
        });
        if !loaded.provides.is_empty() {
            let mut c = self
                .services
                .connectors
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for iface in loaded.provides.keys() {
                c.insert(iface.clone(), loaded.clone());
            }
        }
        tracing::info!(plugin = %name, digest = %loaded.digest, ms = loaded.load_time.as_millis() as u64, "loaded");
        Ok(loaded)
    }

    /// The component linked with exactly its grants, ready to instantiate;
    /// cached per (digest, grants), so a reload of the same bytes under the
    /// same grants links once.
    fn instance_pre(
        &self,
        spec: &PluginSpec,
        digest: &str,
        grants: &GrantSet,
        component: &Component,
    ) -> Result<InstancePre<HostState>, LoadError> {
        let key = (digest.to_string(), grants.clone());
        let pres = || {
            self.pres
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(p) = pres().get(&key) {
            return Ok(p.clone());
        }
        let link_error = |e: wasmtime::Error| LoadError::Link {
            plugin: spec.name.clone(),
            detail: format!("{e:#}"),
        };
        let linker =
            linker::build(&self.engine, &self.services.capabilities, grants).map_err(link_error)?;
        let pre = linker.instantiate_pre(component).map_err(link_error)?;
        pres().insert(key, pre.clone());
        Ok(pre)
    }

    /// What the mediator knows of a loaded plugin: its grants, the host
    /// functions a policy governs, its argument grants, hosts and limits.
    fn plugin_context(
        &self,
        config: &Arc<hot::config::Config>,
        spec: &PluginSpec,
        digest: &str,
        grants: &GrantSet,
    ) -> PluginContext {
        let deployment = &*config.deployment;
        PluginContext {
            config: config.clone(),
            name: spec.name.clone(),
            digest: digest.to_string(),
            groups: spec.groups.clone(),
            owner: spec.owner.clone(),
            governed: grants
                .host
                .iter()
                .copied()
                .filter(|f| {
                    let f = catalog().get(*f);
                    deployment
                        .granted_groups(spec)
                        .any(|g| g.policies.is_some() && g.names_action(f.function_name()))
                })
                .collect(),
            granted: grants.host.clone(),
            grants: self.services.capabilities.argument_grants(deployment, spec),
            limits: spec.limits,
        }
    }

    /// Imports provided by connectors: the connector must be in the
    /// deployment, load, and export every imported function with the same
    /// parameters. The (interface, function) routes the linker binds.
    async fn connector_routes(
        &self,
        deployment: &Deployment,
        spec: &PluginSpec,
        component: &Component,
        inspection: &inspect::Inspection,
    ) -> Result<BTreeSet<(String, String)>, LoadError> {
        let mut routes = BTreeSet::new();
        for iface in inspection
            .imports
            .iter()
            .filter(|i| i.class == ImportClass::Capability)
        {
            let bare = iface
                .interface
                .split('@')
                .next()
                .unwrap_or(&iface.interface);
            if catalog().owns_package(bare) {
                continue;
            }
            let Some(provider) = deployment.provider(bare) else {
                return Err(LoadError::Link {
                    plugin: spec.name.clone(),
                    detail: format!(
                        "imports {} but no plugin provides it; add `provides = [\"{bare}\"]` to the connector's entry",
                        iface.interface
                    ),
                });
            };
            if provider.name == spec.name {
                return Err(LoadError::Link {
                    plugin: spec.name.clone(),
                    detail: format!("a connector cannot import the interface it provides ({bare})"),
                });
            }
            let conn = Box::pin(self.load(&provider.name))
                .await
                .map_err(|e| LoadError::Link {
                    plugin: spec.name.clone(),
                    detail: format!("its connector {} cannot load: {e}", provider.name),
                })?;
            routes.extend(capabilities::connector::routes(
                &self.engine,
                &spec.name,
                component,
                iface,
                bare,
                &conn,
            )?);
        }
        Ok(routes)
    }

    /// The bytes of the version that serves: the last one activated
    /// (`plugin-activated`, from the plugin store), else the file the
    /// configuration names; bounded either way.
    fn serving_bytes(&self, spec: &PluginSpec) -> Result<Vec<u8>, LoadError> {
        let limit = spec.limits.max_component_bytes;
        if let Some(d) = self.activated_in_log(&spec.name)? {
            return self.stored_version(&spec.name, &d, limit);
        }
        let read_err = |source| LoadError::Read {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            source,
        };
        read_bounded(&spec.path, limit)
            .map_err(read_err)?
            .map_err(|size| LoadError::TooLarge {
                plugin: spec.name.clone(),
                size,
                limit,
            })
    }

    /// Check the size, the configuration's pin and the preamble, and
    /// compile (bounded in time, off the async threads so other calls go
    /// on).
    async fn check_and_compile(
        &self,
        spec: &PluginSpec,
        bytes: Vec<u8>,
    ) -> Result<(Arc<Vec<u8>>, Component), LoadError> {
        let limit = spec.limits.max_component_bytes;
        if bytes.len() as u64 > limit {
            return Err(LoadError::TooLarge {
                plugin: spec.name.clone(),
                size: bytes.len() as u64,
                limit,
            });
        }
        let actual = digest(&bytes);
        if let Some(pinned) = &spec.digest
            && *pinned != actual
        {
            return Err(LoadError::DigestMismatch {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                pinned: pinned.clone(),
                actual,
            });
        }
        compile(
            &self.engine,
            spec,
            bytes,
            Duration::from_secs(spec.limits.max_compile_seconds),
        )
        .await
    }

    /// Every function policy can name, with its signature: the host's own
    /// (outbound HTTP among them) and every loaded connector's; one per
    /// action.
    pub(crate) fn policy_signatures(&self) -> Vec<(FunctionName, charter_policy::Signature)> {
        use charter_policy::Signature;
        let mut sigs: Vec<(FunctionName, Signature)> = catalog()
            .actions()
            .map(|f| {
                let sig = Signature {
                    action: f.action().to_string(),
                    params: f.params(),
                };
                (f.function_name().clone(), sig)
            })
            .collect();
        let connectors: Vec<_> = self
            .services
            .connectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for conn in &connectors {
            for (iface, export) in &conn.provides {
                for (fname, f) in
                    capabilities::connector::connector_functions(&self.engine, conn, iface)
                {
                    let sig = Signature {
                        action: format!("{iface}.{fname}"),
                        params: f
                            .params()
                            .map(|(n, t)| (n.to_string(), values::param_type(&t)))
                            .collect(),
                    };
                    sigs.push((FunctionName::new(export, &fname), sig));
                }
            }
        }
        sigs.sort_by(|a, b| a.1.action.cmp(&b.1.action));
        sigs.dedup_by(|a, b| a.1.action == b.1.action);
        sigs
    }

    /// Check every group's Cedar policies against a schema generated from
    /// the WIT types of the functions they may name: the host's own and
    /// those of every loaded connector. One message per problem.
    pub fn policy_problems(&self) -> Vec<String> {
        let sigs: Vec<_> = self
            .policy_signatures()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        self.config().policy.validate(&sigs)
    }

    /// Load every plugin; one result per plugin, in name order.
    pub async fn load_all(&self) -> Vec<(String, Result<Arc<LoadedPlugin>, LoadError>)> {
        let mut out = Vec::new();
        for name in self.deployment().plugins.keys() {
            out.push((name.clone(), self.load(name).await));
        }
        out
    }

    /// Run one step of `plugin` on `input` (JSON text).
    pub async fn call(&self, plugin: &str, input: &str) -> Result<CallOutcome, CallError> {
        self.call_as(plugin, input, None).await
    }

    /// Run one step on behalf of `initiator` (who started the work: they may
    /// not approve what the step proposes).
    pub async fn call_as(
        &self,
        plugin: &str,
        input: &str,
        initiator: Option<&str>,
    ) -> Result<CallOutcome, CallError> {
        let loaded = self.load(plugin).await?;
        self.call_loaded_as(&loaded, input, initiator).await
    }

    /// Run one step of an already loaded plugin.
    pub async fn call_loaded(
        &self,
        loaded: &LoadedPlugin,
        input: &str,
    ) -> Result<CallOutcome, CallError> {
        self.call_loaded_as(loaded, input, None).await
    }

    /// Run one step of an already loaded plugin on behalf of `initiator`.
    /// Its events (calls, decisions, kv writes, the step itself) are on
    /// disk before this returns, success or not.
    pub async fn call_loaded_as(
        &self,
        loaded: &LoadedPlugin,
        input: &str,
        initiator: Option<&str>,
    ) -> Result<CallOutcome, CallError> {
        let attempt = self
            .attempt(
                loaded,
                input,
                StepOptions {
                    initiator: initiator.map(str::to_string),
                    ..Default::default()
                },
            )
            .await;
        self.services
            .log
            .append(attempt.events)
            .await
            .map_err(|e| CallError::Invalid {
                plugin: loaded.name.clone(),
                message: format!("event log: {e}; the step's effects were not committed"),
            })?;
        attempt.result
    }

    /// Run one step and return its result with the events to commit; the
    /// caller appends them (with its own) in one write.
    pub(crate) async fn attempt(
        &self,
        loaded: &LoadedPlugin,
        input: &str,
        opts: StepOptions,
    ) -> Attempted {
        // A slot in the instance pool (`engine::Slots`): a workflow attempt
        // waits for one before its clock starts; any other step is refused
        // (below, recorded like any refusal) when none is free.
        let slot = match opts.journal {
            Some(_) => Some(self.services.slots.take().await),
            None => self.services.slots.try_take(),
        };
        let started = Instant::now();
        let mut store = new_store(&self.services, &loaded.ctx, opts.initiator);
        if let Some(ms) = opts.deadline_ms {
            store.set_epoch_deadline(engine::deadline_ticks(
                ms.min(loaded.ctx.limits.deadline_ms),
            ));
            let m = &mut store.data_mut().mediator;
            m.step_timeout = Some((started + Duration::from_millis(ms), ms));
            // Host-side waits (WASI poll and sleep, HTTP, LLM, connectors)
            // stop at the step's timeout too.
            m.deadline = m.deadline.min(started + Duration::from_millis(ms));
        }
        if let Some(j) = opts.journal {
            store.data_mut().mediator.set_journal(j);
        }
        let result = match &slot {
            Some(_) => run_step(loaded, &mut store, input).await,
            None => Err(CallError::Limit {
                plugin: loaded.name.clone(),
                kind: LimitKind::HostCapacity,
                detail: self.services.slots.full_detail(),
            }),
        };
        let state = store.data_mut();
        state.drain_stdio();
        // A fault found by a call that finished outside the store (an HTTP
        // request that diverged from the journal, or over budget).
        let late = state.mediator.take_late();
        state.mediator.pending.extend(late);
        let result = match (state.mediator.fault.clone(), result) {
            // A denial, a proposal or a limit fails the step closed, whatever
            // the guest did with the error it was handed.
            (Some(fault), _) => Err(fault_error(&loaded.name, fault)),
            (None, Err(e)) => Err(e),
            (None, Ok(Err(trap))) => {
                Err(classify_trap(&loaded.name, state, &loaded.ctx.limits, trap))
            }
            (None, Ok(Ok(out))) => Ok(out),
        };
        // The error leaves the step: through the one redaction point, and
        // bounded (it is recorded, printed and served).
        let result = result.map_err(|e| {
            let m = &state.mediator;
            e.map_text(|t| m.redact_text(t, record::MAX_TEXT))
        });
        let duration_us = started.elapsed().as_micros() as u64;
        let summary = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        let events = step_events(&mut state.mediator, summary, duration_us, vec![]);
        let replayed = state.mediator.replayed;
        let state = store.into_data();
        Attempted {
            duration_us,
            result: result.map(|output| CallOutcome {
                output,
                host_calls: state.mediator.calls,
                logs: state.mediator.logs,
                duration_us,
            }),
            events,
            replayed,
        }
    }
}

/// How to run one step beyond its plugin's grants and limits.
#[derive(Default)]
pub(crate) struct StepOptions {
    pub initiator: Option<String>,
    /// Inside a workflow run: the step's journal.
    pub journal: Option<Arc<workflow::journal::Journal>>,
    /// A tighter deadline than the plugin's (a workflow step's timeout).
    pub deadline_ms: Option<u64>,
}

/// One executed step, its events not yet committed.
pub(crate) struct Attempted {
    pub result: Result<CallOutcome, CallError>,
    pub events: Vec<Event>,
    /// Calls answered from the journal.
    pub replayed: u64,
    pub duration_us: u64,
}

/// `name`'s entry in `config`.
fn spec_in(config: &hot::config::Config, name: &str) -> Result<PluginSpec, LoadError> {
    let d = &config.deployment;
    d.plugins
        .get(name)
        .cloned()
        .ok_or_else(|| LoadError::UnknownPlugin {
            name: name.to_string(),
            known: d.plugins.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}

/// A store for one call of `ctx`'s plugin, with its limits set.
/// The interfaces a connector claims to provide, each with the export that
/// provides it; a component that is neither a step nor a connector is
/// refused.
/// The `[quotas]` over a function of an interface this plugin provides
/// that its export does not have (a typo the quota would never count):
/// one violation each, refusing the plugin (and `charter check`).
fn unknown_quota_functions(
    deployment: &Deployment,
    spec: &PluginSpec,
    inspection: &inspect::Inspection,
    provides: &HashMap<String, String>,
) -> Vec<charter_config::Violation> {
    let mut out = Vec::new();
    for q in deployment.quotas.values() {
        let Some(export) = provides.get(&q.interface) else {
            continue;
        };
        let funcs: Vec<&str> = inspection
            .exports
            .iter()
            .filter(|e| &e.name == export)
            .flat_map(|e| e.functions.iter().map(String::as_str))
            .collect();
        if !funcs.contains(&q.function.as_str()) {
            out.push(charter_config::Violation {
                plugin: Some(spec.name.clone()),
                rule: "unknown-quota-function",
                message: format!(
                    "[quotas.{}] counts {}.{}, but {} exports no such function (its functions: {}); name one of them",
                    q.name,
                    q.interface,
                    q.function,
                    export,
                    funcs.join(", ")
                ),
            });
        }
    }
    out
}

fn exports_provided(
    spec: &PluginSpec,
    inspection: &inspect::Inspection,
) -> Result<HashMap<String, String>, LoadError> {
    let mut provides = HashMap::new();
    for iface in &spec.provides {
        let export = inspection
            .exports
            .iter()
            .find(|e| e.kind == "instance" && e.name.split('@').next() == Some(iface.as_str()));
        match export {
            Some(e) => {
                provides.insert(iface.clone(), e.name.clone());
            }
            None => {
                return Err(LoadError::Link {
                    plugin: spec.name.clone(),
                    detail: format!(
                        "`provides` names {iface} but the component exports no such interface"
                    ),
                });
            }
        }
    }
    if inspection.world.is_none() && provides.is_empty() {
        return Err(LoadError::NotAStep {
            plugin: spec.name.clone(),
            detail: format!(
                "exports: [{}]",
                inspection
                    .exports
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(provides)
}

fn new_store(
    services: &Arc<Services>,
    ctx: &Arc<PluginContext>,
    initiator: Option<String>,
) -> wasmtime::Store<HostState> {
    let mut store = wasmtime::Store::new(
        &services.engine,
        HostState::new(ctx.clone(), services.clone(), initiator),
    );
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(engine::deadline_ticks(ctx.limits.deadline_ms));
    store.epoch_deadline_trap();
    store
}

/// Instantiate and run the step inside a `step` span (plugin, digest),
/// attached to the future: its host calls' spans nest under it.
async fn run_step(
    loaded: &LoadedPlugin,
    store: &mut wasmtime::Store<HostState>,
    input: &str,
) -> Result<Result<serde_json::Value, wasmtime::Error>, CallError> {
    use tracing::Instrument;
    let span = tracing::info_span!("step", plugin = %loaded.name, digest = %loaded.digest);
    run_step_in_span(loaded, store, input)
        .instrument(span)
        .await
}

/// Instantiate and run the step; the inner `Err` is the guest's trap.
async fn run_step_in_span(
    loaded: &LoadedPlugin,
    store: &mut wasmtime::Store<HostState>,
    input: &str,
) -> Result<Result<serde_json::Value, wasmtime::Error>, CallError> {
    let plugin = loaded.name.clone();
    let limits = loaded.ctx.limits;
    let deadline = store.data().mediator.deadline;
    check_input(&plugin, &limits, input)?;
    let result = async {
        let instance = loaded.pre.instantiate_async(&mut *store).await?;
        // The output is lifted as an owned `String`: wasmtime runs the
        // guest's post-return (which frees the string) before `call_async`
        // returns, so a `WasmStr` would read freed memory (runtimes with a
        // moving or compacting heap, such as Python's, reuse it at once).
        let run = instance
            .get_typed_func::<(&str,), (Result<String, WireStepError>,)>(&mut *store, "run")?;
        let (r,) = run.call_async(&mut *store, (input,)).await?;
        Ok::<_, wasmtime::Error>(match r {
            Ok(s) => step_output(&plugin, &limits, &s),
            Err(WireStepError::Retryable(message)) => Err(CallError::Step {
                plugin: plugin.clone(),
                retryable: true,
                message,
            }),
            Err(WireStepError::Fatal(message)) => Err(CallError::Step {
                plugin: plugin.clone(),
                retryable: false,
                message,
            }),
        })
    };
    // The epoch deadline stops guest code; this stops host-side waits (WASI
    // poll and sleep, HTTP, LLM, connector calls) at the same deadline.
    let timed = tokio::time::timeout_at((deadline + HOST_WAIT_GRACE).into(), result).await;
    let result = match timed {
        Ok(r) => r,
        Err(_) => return Err(deadline_passed(store, &plugin)),
    };
    match result {
        Ok(Ok(v)) => Ok(Ok(v)),
        Ok(Err(e)) => Err(e),
        Err(trap) => Ok(Err(trap)),
    }
}

/// A step's input within its limits and valid JSON, before any guest code runs.
fn check_input(
    plugin: &str,
    limits: &charter_config::Limits,
    input: &str,
) -> Result<(), CallError> {
    if input.len() as u64 > limits.max_input_bytes {
        return Err(CallError::Limit {
            plugin: plugin.to_string(),
            kind: LimitKind::InputSize,
            detail: format!(
                "input is {} bytes, over limits.max_input_bytes = {}",
                input.len(),
                limits.max_input_bytes
            ),
        });
    }
    if let Err(detail) = record::check_step_text("input", input, limits.max_input_bytes) {
        return Err(CallError::Limit {
            plugin: plugin.to_string(),
            kind: LimitKind::InputSize,
            detail,
        });
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(input) {
        return Err(CallError::Invalid {
            plugin: plugin.to_string(),
            message: format!("input is not valid JSON: {e}"),
        });
    }
    Ok(())
}

/// A step's output: within its limits (as returned and as it would be
/// recorded) and valid JSON.
fn step_output(
    plugin: &str,
    limits: &charter_config::Limits,
    s: &str,
) -> Result<serde_json::Value, CallError> {
    if s.len() as u64 > limits.max_output_bytes {
        Err(CallError::Limit {
            plugin: plugin.to_string(),
            kind: LimitKind::OutputSize,
            detail: format!(
                "output is {} bytes, over limits.max_output_bytes = {}",
                s.len(),
                limits.max_output_bytes
            ),
        })
    } else if let Err(detail) = record::check_step_text("output", s, limits.max_output_bytes) {
        // What is accepted must be readable back from the log.
        Err(CallError::Limit {
            plugin: plugin.to_string(),
            kind: LimitKind::OutputSize,
            detail,
        })
    } else {
        charter_audit::parse_json(s)
            .map_err(|e| CallError::Invalid {
                plugin: plugin.to_string(),
                message: format!("output is not valid JSON: {e}"),
            })
            .and_then(|v| {
                // Re-encoding can grow it (`1e15` is written out
                // in full): the recorded form is what is bounded.
                record::check_step_value("output", &v, limits.max_output_bytes)
                    .map(|()| v)
                    .map_err(|detail| CallError::Limit {
                        plugin: plugin.to_string(),
                        kind: LimitKind::OutputSize,
                        detail,
                    })
            })
    }
}

/// The step's deadline passed while it waited on the host: a limit,
/// recorded as the step's fault.
fn deadline_passed(store: &mut wasmtime::Store<HostState>, plugin: &str) -> CallError {
    let m = &mut store.data_mut().mediator;
    let detail = m.deadline_detail("the step was");
    if m.fault.is_none() {
        m.fault = Some(Fault::Limit(LimitKind::Deadline, detail.clone()));
    }
    CallError::Limit {
        plugin: plugin.to_string(),
        kind: LimitKind::Deadline,
        detail,
    }
}

/// Commit a finished step's events: its calls and decisions always; its kv
/// writes only if it succeeded (a failed step's writes never happen).
async fn commit_step(
    services: &Services,
    m: &mut mediator::Mediator,
    outcome: Result<(), String>,
    duration_us: u64,
    extra: Vec<Event>,
) -> Result<u64, charter_audit::LogError> {
    let events = step_events(m, outcome, duration_us, extra);
    services.log.append(events).await
}

/// A finished step's events: its calls and decisions always; its kv writes
/// only if it succeeded (a failed step's writes never happen); then the
/// step itself and `extra`.
fn step_events(
    m: &mut mediator::Mediator,
    outcome: Result<(), String>,
    duration_us: u64,
    extra: Vec<Event>,
) -> Vec<Event> {
    let mut events = std::mem::take(&mut m.pending);
    events.extend(m.take_late());
    if outcome.is_err() {
        events.retain(|e| !matches!(e, Event::KvWrite { .. }));
    }
    let (label, error) = match (&outcome, &m.fault) {
        (Ok(()), _) => ("ok", None),
        (Err(e), Some(mediator::Fault::Proposed { .. })) => ("awaiting-approval", Some(e.clone())),
        (Err(e), Some(mediator::Fault::Denied { .. })) => ("denied", Some(e.clone())),
        (Err(e), Some(mediator::Fault::Limit(..))) => ("limit", Some(e.clone())),
        (Err(e), Some(mediator::Fault::Rejected { .. })) => ("rejected", Some(e.clone())),
        (Err(e), Some(mediator::Fault::NonDeterministic(..))) => {
            ("nondeterministic", Some(e.clone()))
        }
        (Err(e), None) => ("failed", Some(e.clone())),
    };
    events.push(Event::Step {
        plugin: m.ctx.name.clone(),
        digest: m.ctx.digest.clone(),
        initiator: m.initiator.clone(),
        outcome: label.to_string(),
        error: error.map(|e| m.redact(&e)),
        host_calls: m.calls,
        duration_us,
    });
    events.extend(extra);
    events
}

async fn compile(
    engine: &Engine,
    spec: &PluginSpec,
    bytes: Vec<u8>,
    timeout: Duration,
) -> Result<(Arc<Vec<u8>>, Component), LoadError> {
    match binary_kind(&bytes) {
        BinaryKind::Component => {}
        BinaryKind::CoreModule => {
            return Err(LoadError::CoreModule {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
            });
        }
        BinaryKind::NotWasm => {
            return Err(LoadError::Malformed {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                detail: "the file does not start with the WebAssembly component preamble".into(),
            });
        }
    }
    let bytes = Arc::new(bytes);
    tracing::info!(target: "charter::progress", plugin = %spec.name, bytes = bytes.len(), "compiling");
    let (e, b) = (engine.clone(), bytes.clone());
    let job = tokio::task::spawn_blocking(move || Component::new(&e, &*b));
    let component = match tokio::time::timeout(timeout, job).await {
        Err(_) => {
            return Err(LoadError::CompileTimeout {
                plugin: spec.name.clone(),
                seconds: timeout.as_secs(),
            });
        }
        Ok(Err(join)) => {
            return Err(LoadError::Malformed {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                detail: format!("compiler task failed: {join}"),
            });
        }
        Ok(Ok(r)) => r.map_err(|e| LoadError::Malformed {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            detail: format!("{e:#}"),
        })?,
    };
    tracing::info!(target: "charter::progress", plugin = %spec.name, "compiled");
    Ok((bytes, component))
}

/// Compile and inspect a component file outside any deployment.
pub async fn inspect_file(
    engine: &Engine,
    path: &std::path::Path,
) -> Result<Inspection, LoadError> {
    let spec = PluginSpec {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_owned(),
        digest: None,
        groups: vec![],
        limits: Default::default(),
        wasi: WasiMode::Inert,
        granted_by: None,
        reason: None,
        owner: None,
        provides: vec![],
        tools: Default::default(),
        wit: None,
    };
    let limit = spec.limits.max_component_bytes;
    let bytes = read_bounded(path, limit)
        .map_err(|source| LoadError::ReadFile {
            path: path.to_owned(),
            source,
        })?
        .map_err(|size| LoadError::TooLarge {
            plugin: spec.name.clone(),
            size,
            limit,
        })?;
    let (bytes, component) = compile(engine, &spec, bytes, Duration::from_secs(300)).await?;
    Ok(inspect::inspect(engine, &component, &bytes))
}

/// Read at most `limit` bytes of a file: `Ok(Err(n))` when it holds more
/// (`n`: what was read, at least `limit + 1`). The bound holds whatever the
/// file is (a FIFO, a device, a file growing while it is read): its
/// metadata is not trusted.
pub fn read_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<Result<Vec<u8>, u64>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
}

fn fault_error(plugin: &str, fault: Fault) -> CallError {
    match fault {
        Fault::Proposed { id, function } => CallError::AwaitingApproval {
            plugin: plugin.to_string(),
            proposal: id,
            function,
        },
        Fault::Limit(kind, detail) => CallError::Limit {
            plugin: plugin.to_string(),
            kind,
            detail,
        },
        Fault::Denied { function, reason } => CallError::Denied {
            plugin: plugin.to_string(),
            function,
            reason,
        },
        Fault::Rejected {
            function,
            proposal,
            status,
        } => CallError::Rejected {
            plugin: plugin.to_string(),
            function,
            proposal,
            status,
        },
        Fault::NonDeterministic(detail) => CallError::NonDeterministic {
            plugin: plugin.to_string(),
            detail,
        },
    }
}

fn classify_trap(
    plugin: &str,
    state: &HostState,
    limits: &charter_config::Limits,
    e: wasmtime::Error,
) -> CallError {
    let limit = |kind, detail: String| CallError::Limit {
        plugin: plugin.to_string(),
        kind,
        detail,
    };
    if let Some((have, want)) = state.limiter.refused {
        return limit(
            LimitKind::Memory,
            format!(
                "memory growth from {} KiB to {} KiB refused (limits.memory_mib = {})",
                have >> 10,
                want >> 10,
                limits.memory_bytes >> 20
            ),
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => limit(
            LimitKind::Deadline,
            match state.mediator.step_timeout {
                // A workflow step's timeout is the deadline that fired.
                Some((_, ms)) if ms < limits.deadline_ms => {
                    format!("still running after {ms} ms (the step's timeout_ms)")
                }
                _ => format!(
                    "still running after {} ms (limits.deadline_ms)",
                    limits.deadline_ms
                ),
            },
        ),
        Some(Trap::StackOverflow) => limit(LimitKind::Stack, "call stack exhausted".into()),
        _ if e
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some() =>
        {
            let n = state.mediator.services.max_steps_in_flight;
            limit(
                LimitKind::HostCapacity,
                format!(
                    "{e}: the host's instance pool is full (it holds [deployment] max_steps_in_flight = {n} steps, each with one connector call in progress); retry when steps finish, or raise max_steps_in_flight in charter.toml"
                ),
            )
        }
        _ => {
            let message = format!("{e:#}");
            let first = message.lines().next().unwrap_or("").to_string();
            CallError::Trap {
                plugin: plugin.to_string(),
                message: first,
            }
        }
    }
}

#[cfg(test)]
mod service_file_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &std::path::Path, url: &str, pid: u32, mode: u32) {
        let p = dir.join(SERVICE_FILE);
        std::fs::write(&p, serde_json::json!({"url": url, "pid": pid}).to_string()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_planted_service_file_is_not_trusted_with_the_token() {
        let dir = tempfile::tempdir().unwrap();
        // A live process of this user: the test's parent (cargo's runner).
        let pid = std::os::unix::process::parent_id();
        write(dir.path(), "http://127.0.0.1:7878", pid, 0o600);
        assert_eq!(
            service_url(dir.path()).as_deref(),
            Some("http://127.0.0.1:7878")
        );
        for url in [
            "http://evil.example:80",
            "http://10.0.0.5:7878",
            "http://127.0.0.1@evil.example:80",
            "https://127.0.0.1:7878",
            "http://127.0.0.1",
        ] {
            write(dir.path(), url, pid, 0o600);
            assert_eq!(service_url(dir.path()), None, "{url}");
        }
        write(dir.path(), "http://[::1]:7878", pid, 0o600);
        assert!(service_url(dir.path()).is_some());
        // Writable by others: anyone could have planted it.
        write(dir.path(), "http://127.0.0.1:7878", pid, 0o666);
        assert_eq!(service_url(dir.path()), None);
        // pid 1 is alive but not this user's (unless the tests run as root).
        let me = std::fs::metadata("/proc/self").unwrap();
        let init = std::fs::metadata("/proc/1").unwrap();
        use std::os::unix::fs::MetadataExt;
        if me.uid() != init.uid() {
            write(dir.path(), "http://127.0.0.1:7878", 1, 0o600);
            assert_eq!(service_url(dir.path()), None);
        }
    }
}
