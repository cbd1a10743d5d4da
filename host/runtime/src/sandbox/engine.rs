//! The wasmtime engine Charter runs every plugin on, and its epoch ticker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

/// One epoch tick. Deadlines are enforced to within one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine settings that depend on the deployment.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Largest linear memory any plugin may have (the pool's slot size).
    pub max_memory_bytes: u64,
    /// Directory for compiled artifacts, keyed by wasmtime on the component
    /// bytes and the engine configuration. `None` disables the cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Use the pooling instance allocator (fast instantiation).
    pub pooling: bool,
    /// Steps in flight the pool holds (`[deployment] max_steps_in_flight`),
    /// each with a connector call in progress.
    pub max_instances: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_memory_bytes: 64 << 20,
            cache_dir: None,
            pooling: true,
            max_instances: charter_config::DEFAULT_MAX_STEPS_IN_FLIGHT,
        }
    }
}

/// Build the engine: component model, epoch interruption, pooling
/// allocator, no component-model concurrency (cheaper calls), optional
/// on-disk compile cache.
pub fn build_engine(opts: &EngineOptions) -> wasmtime::Result<Engine> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    // Charter's WIT uses no component-model async; turning the machinery
    // off made guest->host calls 2-3x cheaper (see the benchmark).
    cfg.concurrency_support(false);
    if opts.pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.max_memory_size(opts.max_memory_bytes.max(64 << 20) as usize);
        // The pool's capacity, stated (ARCHITECTURE.md, "Limits of one
        // host"): `max_instances` steps in flight ([`Slots`] admits no
        // more), each with room for one connector call in progress: 2
        // component instances and fiber stacks per step, 4 core instances
        // and 2 memories and tables on average. The pool reserves address space for all of them up front
        // (a slot per memory: the plugin's largest memory plus guard) and
        // commits memory only as instances touch it. One more instance than
        // it holds fails to instantiate with wasmtime's
        // `PoolConcurrencyLimitError`: a host-capacity error for that step
        // (`classify_trap`), the host and every other step unaffected.
        let n = opts.max_instances.max(1);
        pool.total_component_instances(n.saturating_mul(2));
        pool.total_stacks(n.saturating_mul(2));
        pool.total_core_instances(n.saturating_mul(4));
        pool.total_memories(n.saturating_mul(2));
        pool.total_tables(n.saturating_mul(2));
        pool.max_core_instances_per_component(64);
        pool.max_memories_per_component(16);
        pool.max_tables_per_component(32);
        pool.table_elements(100_000);
        pool.max_core_instance_size(1 << 20);
        pool.max_component_instance_size(1 << 20);
        // Reset small instances by memset instead of madvise: no page-table
        // churn (and no cross-core TLB shootdowns) per step.
        pool.linear_memory_keep_resident(2 << 20);
        pool.table_keep_resident(64 << 10);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    if let Some(dir) = &opts.cache_dir {
        // Whether the cache holds a component cannot be told before
        // compiling it: wasmtime keys entries on the bytes and the engine's
        // private compile settings. A hit loads in well under a second, a
        // miss of a large component takes many (the CLI announces a compile
        // only once it has run for a second: `charter::progress`).
        let mut cc = CacheConfig::new();
        cc.with_directory(dir);
        cfg.cache(Some(Cache::new(cc)?));
    }
    Engine::new(&cfg)
}

/// Admission to the instance pool: at most `max_steps_in_flight` steps
/// hold an instance at once. A workflow step attempt waits for a slot
/// before its clock starts (a full host delays a run, never fails it); any
/// other step takes a slot at once or is refused with a host-capacity
/// error that names the setting. Without it, the step one past the pool
/// would fail inside wasmtime with an error that names neither.
#[derive(Debug)]
pub struct Slots {
    free: Arc<tokio::sync::Semaphore>,
    capacity: u32,
}

/// A step's slot, given back when dropped.
pub type Slot = tokio::sync::OwnedSemaphorePermit;

impl Slots {
    pub fn new(capacity: u32) -> Slots {
        Slots {
            free: Arc::new(tokio::sync::Semaphore::new(capacity.max(1) as usize)),
            capacity: capacity.max(1),
        }
    }

    /// A slot now, or `None` when all are taken.
    pub fn try_take(&self) -> Option<Slot> {
        self.free.clone().try_acquire_owned().ok()
    }

    /// A slot, once one is free.
    pub async fn take(&self) -> Slot {
        self.free
            .clone()
            .acquire_owned()
            .await
            .expect("the slots' semaphore is never closed")
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Steps holding a slot now.
    pub fn in_use(&self) -> u32 {
        self.capacity - self.free.available_permits() as u32
    }

    /// Why a step found no slot.
    pub fn full_detail(&self) -> String {
        format!(
            "all {n} step slots of this host are in use ([deployment] max_steps_in_flight = {n}); retry when steps finish, or raise max_steps_in_flight in charter.toml",
            n = self.capacity
        )
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EpochTicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochTicker").finish_non_exhaustive()
    }
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("charter-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawn epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deadline in epoch ticks, rounded up.
pub fn deadline_ticks(deadline_ms: u64) -> u64 {
    let tick = EPOCH_TICK.as_millis() as u64;
    deadline_ms.div_ceil(tick).max(1)
}

/// The default cache directory of a deployment.
pub fn cache_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("cache")
}
