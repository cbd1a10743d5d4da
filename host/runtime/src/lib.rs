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
//! let deployment = Deployment::load("charter.toml".as_ref())?;
//! let host = Host::new(deployment, HostOptions::default())?;
//! let out = host.call("refund-triage", r#"{"order_id":"A-1001","request":"arrived broken"}"#).await?;
//! println!("{}", out.output);
//! # Ok(()) }
//! ```

pub mod engine;
pub mod error;
pub mod inspect;
mod linker;
pub mod mediator;
mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use charter_config::{Deployment, FunctionName, LlmProvider, PluginSpec, WasiMode};
use charter_store::{SledStore, Store};
use wasmtime::component::{Component, ComponentType, InstancePre, Lift, WasmStr};
use wasmtime::{Engine, Trap};

pub use error::{CallError, LimitKind, LoadError, UngrantedImport};
pub use inspect::{Inspection, binary_kind, digest, inspect};
pub use mediator::{HostFn, Llm, LogLine, OfflineLlm, OpenAiLlm};

use inspect::{BinaryKind, ImportClass};
use linker::GrantSet;
use mediator::{Fault, PluginContext, Services};
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
    /// LLM provider; default: from the deployment's `[llm]`.
    pub llm: Option<Arc<dyn Llm>>,
    /// Compile cache directory; default: `<data_dir>/cache`. Set
    /// `no_cache` to disable it.
    pub no_cache: bool,
}

/// A plugin that passed the load-time check and is ready to instantiate.
pub struct LoadedPlugin {
    pub name: String,
    pub digest: String,
    pub inspection: Inspection,
    /// The functions its grants link in, as patterns resolve them.
    pub linked: Vec<String>,
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
    deployment: Arc<Deployment>,
    services: Arc<Services>,
    loaded: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
    pres: Mutex<HashMap<(String, GrantSet), InstancePre<HostState>>>,
    _ticker: engine::EpochTicker,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("deployment", &self.deployment.name)
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
}

impl Host {
    pub fn new(deployment: Deployment, options: HostOptions) -> Result<Host, HostError> {
        let needs_dir = options.store.is_none() || !options.no_cache;
        if needs_dir {
            std::fs::create_dir_all(&deployment.data_dir).map_err(|source| HostError::DataDir {
                path: deployment.data_dir.clone(),
                source,
            })?;
        }
        let max_memory = deployment
            .plugins
            .values()
            .map(|p| p.limits.memory_bytes)
            .chain([deployment.limits.memory_bytes])
            .max()
            .unwrap_or(64 << 20);
        let engine = engine::build_engine(&engine::EngineOptions {
            max_memory_bytes: max_memory,
            cache_dir: (!options.no_cache).then(|| engine::cache_dir(&deployment.data_dir)),
            pooling: true,
        })
        .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let store: Arc<dyn Store> = match options.store {
            Some(s) => s,
            None => Arc::new(SledStore::open(&deployment.data_dir.join("state"))?),
        };
        let llm: Arc<dyn Llm> = match options.llm {
            Some(l) => l,
            None => match &deployment.llm {
                LlmProvider::Offline => Arc::new(OfflineLlm),
                LlmProvider::OpenAi {
                    base_url,
                    model,
                    api_key_secret,
                } => {
                    let key = match api_key_secret {
                        None => None,
                        Some(name) => match mediator::read_secret(&deployment.secrets, name) {
                            Ok(v) => Some(v),
                            Err(e) => return Err(HostError::Llm(e)),
                        },
                    };
                    Arc::new(OpenAiLlm::new(base_url.clone(), model.clone(), key))
                }
            },
        };
        let services = Arc::new(Services {
            store,
            llm,
            secrets: deployment.secrets.clone(),
        });
        Ok(Host {
            _ticker: engine::EpochTicker::start(&engine),
            engine,
            deployment: Arc::new(deployment),
            services,
            loaded: Mutex::new(HashMap::new()),
            pres: Mutex::new(HashMap::new()),
        })
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The state store (the plugins' kv namespaces).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.services.store
    }

    fn spec(&self, name: &str) -> Result<&PluginSpec, LoadError> {
        self.deployment
            .plugins
            .get(name)
            .ok_or_else(|| LoadError::UnknownPlugin {
                name: name.to_string(),
                known: self
                    .deployment
                    .plugins
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Load `name` (once; later calls reuse it) through the load-time check.
    pub async fn load(&self, name: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        if let Some(p) = self.loaded.lock().unwrap().get(name) {
            return Ok(p.clone());
        }
        let started = Instant::now();
        let spec = self.spec(name)?.clone();
        let span = tracing::info_span!("load", plugin = %name);
        let _g = span.enter();

        // Governance rules of the config itself come first: a plugin with a
        // phase-gated grant is refused before its bytes are even read.
        let violations: Vec<_> = self
            .deployment
            .violations()
            .into_iter()
            .filter(|v| v.plugin.as_deref() == Some(name))
            .collect();
        if !violations.is_empty() {
            return Err(LoadError::Governance(violations));
        }

        let (bytes, component) = self.read_and_compile(&spec).await?;
        let inspection = inspect::inspect(&self.engine, &component, &bytes);
        let digest = inspection.digest.clone();

        let ungranted = check_imports(&self.deployment, &spec, &inspection);
        if !ungranted.is_empty() {
            tracing::warn!(plugin = %name, count = ungranted.len(), "refused at load: ungranted imports");
            return Err(LoadError::Ungranted(ungranted));
        }
        if inspection.world.is_none() {
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

        let grants = grant_set(&self.deployment, &spec);
        let key = (digest.clone(), grants.clone());
        let cached = self.pres.lock().unwrap().get(&key).cloned();
        let pre = match cached {
            Some(p) => p,
            None => {
                let linker = linker::build(&self.engine, &grants).map_err(|e| LoadError::Link {
                    plugin: spec.name.clone(),
                    detail: format!("{e:#}"),
                })?;
                let pre = linker
                    .instantiate_pre(&component)
                    .map_err(|e| LoadError::Link {
                        plugin: spec.name.clone(),
                        detail: format!("{e:#}"),
                    })?;
                self.pres.lock().unwrap().insert(key, pre.clone());
                pre
            }
        };
        let linked = grants
            .host
            .iter()
            .map(|f| f.function_name().to_string())
            .collect();
        let ctx = Arc::new(PluginContext {
            name: spec.name.clone(),
            digest: digest.clone(),
            granted: grants.host.clone(),
            secrets: self.deployment.granted_secrets(&spec),
            hosts: self.deployment.allowed_hosts(&spec),
            limits: spec.limits,
        });
        let loaded = Arc::new(LoadedPlugin {
            name: spec.name.clone(),
            digest,
            inspection,
            linked,
            load_time: started.elapsed(),
            pre,
            ctx,
        });
        tracing::info!(plugin = %name, digest = %loaded.digest, ms = loaded.load_time.as_millis() as u64, "loaded");
        self.loaded
            .lock()
            .unwrap()
            .insert(name.to_string(), loaded.clone());
        Ok(loaded)
    }

    /// Read the file (bounded), check the pin and the preamble, and compile
    /// (bounded in time, off the async threads so other calls go on).
    async fn read_and_compile(
        &self,
        spec: &PluginSpec,
    ) -> Result<(Arc<Vec<u8>>, Component), LoadError> {
        let read_err = |source| LoadError::Read {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            source,
        };
        let size = std::fs::metadata(&spec.path).map_err(read_err)?.len();
        let limit = spec.limits.max_component_bytes;
        if size > limit {
            return Err(LoadError::TooLarge {
                plugin: spec.name.clone(),
                size,
                limit,
            });
        }
        let bytes = std::fs::read(&spec.path).map_err(read_err)?;
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

    /// Load every plugin; one result per plugin, in name order.
    pub async fn load_all(&self) -> Vec<(String, Result<Arc<LoadedPlugin>, LoadError>)> {
        let mut out = Vec::new();
        for name in self.deployment.plugins.keys() {
            out.push((name.clone(), self.load(name).await));
        }
        out
    }

    /// Run one step of `plugin` on `input` (JSON text).
    pub async fn call(&self, plugin: &str, input: &str) -> Result<CallOutcome, CallError> {
        let loaded = self.load(plugin).await?;
        self.call_loaded(&loaded, input).await
    }

    /// Run one step of an already loaded plugin.
    pub async fn call_loaded(
        &self,
        loaded: &LoadedPlugin,
        input: &str,
    ) -> Result<CallOutcome, CallError> {
        let started = Instant::now();
        let plugin = loaded.name.clone();
        let limits = loaded.ctx.limits;
        let span = tracing::info_span!("step", plugin = %plugin, digest = %loaded.digest);
        let _g = span.enter();
        if input.len() as u64 > limits.max_input_bytes {
            return Err(CallError::Limit {
                plugin,
                kind: LimitKind::InputSize,
                detail: format!(
                    "input is {} bytes, over limits.max_input_bytes = {}",
                    input.len(),
                    limits.max_input_bytes
                ),
            });
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(input) {
            return Err(CallError::Invalid {
                plugin,
                message: format!("input is not valid JSON: {e}"),
            });
        }

        let mut store = wasmtime::Store::new(
            &self.engine,
            HostState::new(loaded.ctx.clone(), self.services.clone()),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(engine::deadline_ticks(limits.deadline_ms));
        store.epoch_deadline_trap();

        let result = async {
            let instance = loaded.pre.instantiate_async(&mut store).await?;
            let run = instance
                .get_typed_func::<(&str,), (Result<WasmStr, WireStepError>,)>(&mut store, "run")?;
            let (r,) = run.call_async(&mut store, (input,)).await?;
            Ok::<_, wasmtime::Error>(match r {
                Ok(s) => {
                    let s = s.to_str(&store)?;
                    if s.len() as u64 > limits.max_output_bytes {
                        Err(CallError::Limit {
                            plugin: plugin.clone(),
                            kind: LimitKind::OutputSize,
                            detail: format!(
                                "output is {} bytes, over limits.max_output_bytes = {}",
                                s.len(),
                                limits.max_output_bytes
                            ),
                        })
                    } else {
                        Ok(s.into_owned())
                    }
                }
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
        }
        .await;

        let state = store.data_mut();
        state.drain_stdio();
        // A denial or a limit fails the step closed, whatever the guest did
        // with the error it was handed.
        if let Some(fault) = state.mediator.fault.clone() {
            return Err(fault_error(&plugin, fault));
        }
        let output = match result {
            Ok(Ok(out)) => out,
            Ok(Err(step)) => return Err(step),
            Err(e) => return Err(classify_trap(&plugin, state, &limits, e)),
        };
        let output = serde_json::from_str(&output).map_err(|e| CallError::Invalid {
            plugin: plugin.clone(),
            message: format!("output is not valid JSON: {e}"),
        })?;
        let state = store.into_data();
        Ok(CallOutcome {
            output,
            host_calls: state.mediator.calls,
            logs: state.mediator.logs,
            duration_us: started.elapsed().as_micros() as u64,
        })
    }
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
    };
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        plugin: spec.name.clone(),
        path: path.to_owned(),
        source,
    })?;
    let (bytes, component) = compile(engine, &spec, bytes, Duration::from_secs(300)).await?;
    Ok(inspect::inspect(engine, &component, &bytes))
}

fn fault_error(plugin: &str, fault: Fault) -> CallError {
    match fault {
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
            format!(
                "still running after {} ms (limits.deadline_ms)",
                limits.deadline_ms
            ),
        ),
        Some(Trap::StackOverflow) => limit(LimitKind::Stack, "call stack exhausted".into()),
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

/// The load-time check (enforcement point 1): one entry per imported
/// function that neither a grant nor the inert WASI baseline covers.
pub fn check_imports(
    dep: &Deployment,
    spec: &PluginSpec,
    insp: &Inspection,
) -> Vec<UngrantedImport> {
    let groups: Vec<_> = dep.granted_groups(spec).collect();
    let http = grants_http(dep, spec);
    let mut out = Vec::new();
    // An interface imported for its resource types alone still needs linking.
    let resource_only = insp
        .imports
        .iter()
        .filter(|i| i.functions.is_empty() && !i.resources.is_empty())
        .flat_map(|i| i.resources.iter().map(move |r| (i, r.as_str())));
    for (iface, func) in insp.imported_functions().chain(resource_only) {
        let f = FunctionName::new(&iface.interface, func);
        let mut hint = None;
        let covered = match iface.class {
            ImportClass::TypesOnly => true,
            ImportClass::WasiBaseline => {
                hint = Some("the plugin is set to wasi = \"none\"; remove that to link the inert WASI baseline".into());
                spec.wasi == WasiMode::Inert
            }
            ImportClass::Capability if f.interface == "wasi:http/types" => {
                hint = Some(
                    "wasi:http/types comes with a grant of wasi:http/outgoing-handler.handle"
                        .into(),
                );
                http
            }
            ImportClass::Capability => groups.iter().any(|g| g.grants(&f)),
        };
        if !covered {
            out.push(UngrantedImport {
                plugin: spec.name.clone(),
                function: f.to_string(),
                granted_groups: spec.groups.clone(),
                groups_that_grant: dep
                    .groups_granting(&f)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                hint: if matches!(iface.class, ImportClass::Capability)
                    && f.interface != "wasi:http/types"
                {
                    None
                } else {
                    hint
                },
            });
        }
    }
    out
}

fn grants_http(dep: &Deployment, spec: &PluginSpec) -> bool {
    let handle = FunctionName::new("wasi:http/outgoing-handler", "handle");
    dep.granted_groups(spec).any(|g| g.grants(&handle))
}

/// The functions a plugin is linked with.
fn grant_set(dep: &Deployment, spec: &PluginSpec) -> GrantSet {
    let host: BTreeSet<HostFn> = HostFn::ALL
        .iter()
        .copied()
        .filter(|f| {
            dep.granted_groups(spec)
                .any(|g| g.grants(&f.function_name()))
        })
        .collect();
    GrantSet {
        wasi: spec.wasi,
        host,
        http: grants_http(dep, spec),
    }
}
