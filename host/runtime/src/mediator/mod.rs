//! The mediator: the one path every capability call takes.
//!
//! A guest's import is linked (see `linker.rs`) to a thin closure that turns
//! the call into a [`HostCall`] and hands it to [`Mediator::dispatch`];
//! outbound HTTP reaches the mediator through its [`WasiHttpHooks`]
//! implementation. The capability implementations live in the private
//! `caps` module below and are reachable from nowhere else, so no capability
//! can be executed without passing the mediator's checks.
//!
//! Today the mediator: counts host calls against the step's cap, re-checks
//! that the function is granted (defense in depth behind linking), checks
//! argument-level grants (secret names, HTTP hosts), applies host-side
//! timeouts, and records the plugin's log lines. A denial or a limit is
//! recorded as the step's [`Fault`]: the step then fails closed whatever the
//! guest returns. Policy decisions on arguments, the audit record and the
//! journal slot in here (DESIGN.md, enforcement point 3).

mod caps;
pub mod llm;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use charter_config::{Effect, Limits, SecretSource};
use charter_store::Store;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use crate::error::LimitKind;

pub use llm::{Llm, OfflineLlm, OpenAiLlm};

/// The version of `charter:host` this host implements.
pub const HOST_VERSION: &str = "0.1.0";

/// Every host-native capability function, by interface and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostFn {
    LogWrite,
    KvGet,
    KvSet,
    KvDelete,
    KvListKeys,
    SecretsGet,
    LlmComplete,
    LlmClassify,
}

impl HostFn {
    pub const ALL: &'static [HostFn] = &[
        HostFn::LogWrite,
        HostFn::KvGet,
        HostFn::KvSet,
        HostFn::KvDelete,
        HostFn::KvListKeys,
        HostFn::SecretsGet,
        HostFn::LlmComplete,
        HostFn::LlmClassify,
    ];

    /// `charter:host/<interface>` without version.
    pub fn interface(self) -> &'static str {
        match self {
            HostFn::LogWrite => "charter:host/log",
            HostFn::KvGet | HostFn::KvSet | HostFn::KvDelete | HostFn::KvListKeys => {
                "charter:host/kv"
            }
            HostFn::SecretsGet => "charter:host/secrets",
            HostFn::LlmComplete | HostFn::LlmClassify => "charter:host/llm",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostFn::LogWrite => "write",
            HostFn::KvGet => "get",
            HostFn::KvSet => "set",
            HostFn::KvDelete => "delete",
            HostFn::KvListKeys => "list-keys",
            HostFn::SecretsGet => "get",
            HostFn::LlmComplete => "complete",
            HostFn::LlmClassify => "classify",
        }
    }

    /// Whether the function changes state outside the call.
    pub fn effect(self) -> Effect {
        match self {
            HostFn::KvSet | HostFn::KvDelete => Effect::Write,
            _ => Effect::Read,
        }
    }

    /// `charter:host/kv@0.1.0#get`, without allocating.
    pub fn display(self) -> &'static str {
        match self {
            HostFn::LogWrite => "charter:host/log@0.1.0#write",
            HostFn::KvGet => "charter:host/kv@0.1.0#get",
            HostFn::KvSet => "charter:host/kv@0.1.0#set",
            HostFn::KvDelete => "charter:host/kv@0.1.0#delete",
            HostFn::KvListKeys => "charter:host/kv@0.1.0#list-keys",
            HostFn::SecretsGet => "charter:host/secrets@0.1.0#get",
            HostFn::LlmComplete => "charter:host/llm@0.1.0#complete",
            HostFn::LlmClassify => "charter:host/llm@0.1.0#classify",
        }
    }

    pub fn function_name(self) -> charter_config::FunctionName {
        charter_config::FunctionName::new(
            &format!("{}@{HOST_VERSION}", self.interface()),
            self.name(),
        )
    }

    pub fn lookup(interface: &str, name: &str) -> Option<HostFn> {
        HostFn::ALL
            .iter()
            .copied()
            .find(|f| f.interface() == interface && f.name() == name)
    }
}

/// Log levels of `charter:host/log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// A capability call with its typed arguments, as the mediator sees it.
#[derive(Debug)]
pub(crate) enum HostCall {
    LogWrite { level: LogLevel, message: String },
    KvGet { key: String },
    KvSet { key: String, value: String },
    KvDelete { key: String },
    KvListKeys { prefix: String },
    SecretsGet { name: String },
    LlmComplete { prompt: String },
    LlmClassify { text: String, labels: Vec<String> },
}

impl HostCall {
    pub(crate) fn function(&self) -> HostFn {
        match self {
            HostCall::LogWrite { .. } => HostFn::LogWrite,
            HostCall::KvGet { .. } => HostFn::KvGet,
            HostCall::KvSet { .. } => HostFn::KvSet,
            HostCall::KvDelete { .. } => HostFn::KvDelete,
            HostCall::KvListKeys { .. } => HostFn::KvListKeys,
            HostCall::SecretsGet { .. } => HostFn::SecretsGet,
            HostCall::LlmComplete { .. } => HostFn::LlmComplete,
            HostCall::LlmClassify { .. } => HostFn::LlmClassify,
        }
    }
}

/// The result a capability hands back to the guest.
#[derive(Debug)]
pub(crate) enum Reply {
    Unit,
    Value(Option<String>),
    Existed(bool),
    Keys(Vec<String>),
    Text(String),
    Class(String, f32),
}

/// What the guest sees: a value, or an error message it may handle.
pub(crate) type GuestResult = Result<Reply, String>;

/// A reply that is ready now, or one that waits (LLM) and must be awaited
/// by an async host function under the host-side timeout.
pub(crate) enum Dispatch {
    Ready(GuestResult),
    Wait(Pin<Box<dyn Future<Output = GuestResult> + Send>>),
}

/// Why the step must fail closed, whatever the guest returns.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    Limit(LimitKind, String),
    Denied { function: String, reason: String },
}

/// One log line of a plugin: from `charter:host/log` or its stdout/stderr.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    /// `log`, `stdout` or `stderr`.
    pub source: &'static str,
    pub message: String,
}

/// Most log lines kept per call; later lines are counted, not kept.
pub const MAX_LOG_LINES: usize = 1000;
/// Longest log message kept, in bytes.
pub const MAX_LOG_MESSAGE: usize = 4096;

/// What the grant lets one plugin do, fixed when it is loaded.
#[derive(Debug)]
pub(crate) struct PluginContext {
    pub name: String,
    pub digest: String,
    pub granted: BTreeSet<HostFn>,
    pub secrets: BTreeSet<String>,
    pub hosts: BTreeSet<String>,
    pub limits: Limits,
}

/// Deployment-wide services behind the capabilities.
pub(crate) struct Services {
    pub store: Arc<dyn Store>,
    pub llm: Arc<dyn Llm>,
    pub secrets: std::collections::BTreeMap<String, SecretSource>,
}

/// Per-call mediator state; lives in the wasmtime `Store`.
pub(crate) struct Mediator {
    pub ctx: Arc<PluginContext>,
    services: Arc<Services>,
    pub calls: u64,
    pub fault: Option<Fault>,
    pub logs: Vec<LogLine>,
    pub dropped_logs: u64,
}

impl Mediator {
    pub fn new(ctx: Arc<PluginContext>, services: Arc<Services>) -> Mediator {
        Mediator {
            ctx,
            services,
            calls: 0,
            fault: None,
            logs: Vec::new(),
            dropped_logs: 0,
        }
    }

    /// Count the call against the cap and check the grant. An `Err` traps
    /// the guest; the fault stays recorded so the step fails closed.
    fn admit(&mut self, function: &str, granted: bool) -> wasmtime::Result<()> {
        if let Some(f) = &self.fault {
            // A faulted step gets nothing more.
            return Err(wasmtime::Error::msg(format!("step already failed: {f:?}")));
        }
        self.calls += 1;
        if self.calls > self.ctx.limits.max_host_calls {
            let detail = format!(
                "more than {} host calls in one step (limits.max_host_calls)",
                self.ctx.limits.max_host_calls
            );
            self.fault = Some(Fault::Limit(LimitKind::HostCalls, detail.clone()));
            return Err(wasmtime::Error::msg(detail));
        }
        if !granted {
            return Err(self.deny(function, "not granted to this plugin".into()));
        }
        Ok(())
    }

    fn deny(&mut self, function: &str, reason: String) -> wasmtime::Error {
        tracing::warn!(plugin = %self.ctx.name, digest = %self.ctx.digest, function, %reason, "capability call denied");
        let err = wasmtime::Error::msg(format!("{function} denied: {reason}"));
        self.fault = Some(Fault::Denied {
            function: function.to_string(),
            reason,
        });
        err
    }

    /// Decide and execute one host-native capability call.
    pub(crate) fn dispatch(&mut self, call: HostCall) -> wasmtime::Result<Dispatch> {
        let f = call.function();
        let fname = f.display();
        self.admit(fname, self.ctx.granted.contains(&f))?;
        tracing::trace!(plugin = %self.ctx.name, function = fname, "host call");
        let ns = &*self.ctx.name;
        let store = &*self.services.store;
        Ok(match call {
            HostCall::LogWrite { level, message } => {
                self.push_log(level, "log", message);
                Dispatch::Ready(Ok(Reply::Unit))
            }
            HostCall::KvGet { key } => Dispatch::Ready(caps::kv_get(store, ns, &key)),
            HostCall::KvSet { key, value } => {
                Dispatch::Ready(caps::kv_set(store, ns, &key, &value))
            }
            HostCall::KvDelete { key } => Dispatch::Ready(caps::kv_delete(store, ns, &key)),
            HostCall::KvListKeys { prefix } => Dispatch::Ready(caps::kv_list(store, ns, &prefix)),
            HostCall::SecretsGet { name } => {
                if !self.ctx.secrets.contains(&name) {
                    let granted: Vec<_> = self.ctx.secrets.iter().cloned().collect();
                    return Err(self.deny(
                        fname,
                        format!(
                            "secret {name:?} is not granted (granted secrets: [{}])",
                            granted.join(", ")
                        ),
                    ));
                }
                Dispatch::Ready(caps::secret_get(&self.services.secrets, &name))
            }
            HostCall::LlmComplete { prompt } => {
                let fut = self.services.llm.complete(prompt);
                Dispatch::Wait(Box::pin(async move { fut.await.map(Reply::Text) }))
            }
            HostCall::LlmClassify { text, labels } => {
                let fut = self.services.llm.classify(text, labels);
                Dispatch::Wait(Box::pin(async move {
                    fut.await.map(|(l, c)| Reply::Class(l, c))
                }))
            }
        })
    }

    /// Await a waiting reply under the host-side timeout.
    pub(crate) async fn wait(
        &mut self,
        fut: Pin<Box<dyn Future<Output = GuestResult> + Send>>,
    ) -> wasmtime::Result<GuestResult> {
        let timeout = Duration::from_millis(self.ctx.limits.host_call_timeout_ms);
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => Ok(r),
            Err(_) => {
                let detail = format!(
                    "a host call took longer than {} ms (limits.host_call_timeout_ms)",
                    timeout.as_millis()
                );
                self.fault = Some(Fault::Limit(LimitKind::HostCallTimeout, detail.clone()));
                Err(wasmtime::Error::msg(detail))
            }
        }
    }

    pub(crate) fn push_log(&mut self, level: LogLevel, source: &'static str, mut message: String) {
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &self.ctx.name;
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "charter::plugin", %plugin, source, "{message}")
            }
        }
        if self.logs.len() < MAX_LOG_LINES {
            self.logs.push(LogLine {
                level,
                source,
                message,
            });
        } else {
            self.dropped_logs += 1;
        }
    }
}

/// Outbound `wasi:http` passes here: counted, checked against the grant's
/// host allow-list, bounded by the host-side timeout.
impl WasiHttpHooks for Mediator {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        drop(fut);
        const FUNC: &str = "wasi:http/outgoing-handler#handle";
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let scheme_port = match request.uri().scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        // `host` alone in the allow-list means the scheme's default port.
        let allowed = self.ctx.hosts.contains(&authority)
            || (!authority.contains(':')
                && self
                    .ctx
                    .hosts
                    .contains(&format!("{authority}:{scheme_port}")))
            || authority
                .strip_suffix(&format!(":{scheme_port}"))
                .is_some_and(|h| self.ctx.hosts.contains(h));
        if let Err(e) = self.admit(FUNC, true) {
            tracing::warn!(plugin = %self.ctx.name, "{e}");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        if !allowed {
            let hosts: Vec<_> = self.ctx.hosts.iter().cloned().collect();
            self.deny(
                FUNC,
                format!(
                    "host {authority:?} is not in the grant's allow_hosts [{}]",
                    hosts.join(", ")
                ),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        tracing::debug!(plugin = %self.ctx.name, %authority, "outbound http");
        let t = Duration::from_millis(self.ctx.limits.host_call_timeout_ms);
        let mut options = options.unwrap_or_default();
        options.connect_timeout = Some(options.connect_timeout.map_or(t, |c| c.min(t)));
        options.first_byte_timeout = Some(options.first_byte_timeout.map_or(t, |c| c.min(t)));
        options.between_bytes_timeout = Some(options.between_bytes_timeout.map_or(t, |c| c.min(t)));
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Read a secret for the host's own use (the LLM provider's API key), never
/// for a plugin: plugins reach secrets only through [`Mediator::dispatch`].
pub fn read_secret(
    secrets: &std::collections::BTreeMap<String, SecretSource>,
    name: &str,
) -> Result<String, String> {
    match caps::secret_get(secrets, name)? {
        Reply::Text(t) => Ok(t),
        _ => Err(format!("secret {name:?}: unexpected reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_names_match_the_catalog() {
        for f in HostFn::ALL {
            assert_eq!(f.display(), f.function_name().to_string());
            assert_eq!(HostFn::lookup(f.interface(), f.name()), Some(*f));
        }
    }
}
