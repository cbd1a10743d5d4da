//! `charter call` (one step under its grants) and `charter kv` (the
//! operator's view of a plugin's key-value namespace).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::Control;
use crate::error::ApiError;
use crate::validate;

/// `charter call PLUGIN`: run one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The plugin's name in the deployment.
    pub plugin: String,
    /// The step input, JSON text (at most 4 MiB).
    pub input: String,
    /// Who starts this work (recorded; may not approve what it proposes).
    pub initiator: String,
}

/// A plugin's log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// trace
    Trace,
    /// debug
    Debug,
    /// info
    Info,
    /// warn
    Warn,
    /// error
    Error,
}

/// One log line of the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its level.
    pub level: LogLevel,
    /// `log`, `stdout` or `stderr`.
    pub source: String,
    /// The message.
    pub message: String,
}

/// `charter call --json` on success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    /// Always true.
    pub ok: bool,
    /// The plugin.
    pub plugin: String,
    /// The digest of the component that ran.
    pub digest: String,
    /// The step's output.
    pub output: Value,
    /// What the step logged.
    pub logs: Vec<LogLine>,
    /// Capability calls it made.
    pub host_calls: u64,
    /// How long it ran, in microseconds.
    pub duration_us: u64,
}

/// The error of a failed call: its kind, message and exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallErrorDoc {
    /// `denied`, `limit`, `awaiting-approval`, `refused`, `load-error`, ...
    pub kind: String,
    /// The message.
    pub message: String,
    /// The exit code.
    pub exit_code: i32,
}

/// `charter call --json` on failure: `{ok: false, plugin, error}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFailure {
    /// Always false.
    pub ok: bool,
    /// The plugin.
    pub plugin: String,
    /// What failed.
    pub error: CallErrorDoc,
}

impl CallFailure {
    /// The document of `e`, a failed call of `plugin`.
    pub fn new(plugin: &str, e: &ApiError) -> CallFailure {
        CallFailure {
            ok: false,
            plugin: plugin.to_string(),
            error: CallErrorDoc {
                kind: e.kind.clone(),
                message: e.message.clone(),
                exit_code: e.exit_code(),
            },
        }
    }
}

/// `charter kv get PLUGIN KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvGetRequest {
    /// The plugin whose namespace it is.
    pub plugin: String,
    /// The key.
    pub key: String,
}

/// The value under a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvValue {
    /// The plugin.
    pub plugin: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// `charter kv set PLUGIN KEY VALUE`: an event in the log, attributed to
/// the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSetRequest {
    /// The plugin whose namespace it is.
    pub plugin: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The operator (recorded).
    pub by: String,
}

/// What a `kv set` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSetResponse {
    /// The plugin.
    pub plugin: String,
    /// The key.
    pub key: String,
    /// The sequence number of the `kv-write` event.
    pub seq: u64,
}

/// `charter kv list PLUGIN [PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvListRequest {
    /// The plugin whose namespace it is.
    pub plugin: String,
    /// Only keys starting with this ("" for all).
    pub prefix: String,
}

/// `charter kv list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvKeys {
    /// The plugin.
    pub plugin: String,
    /// Its keys, in order.
    pub keys: Vec<String>,
}

impl From<charter_runtime::LogLine> for LogLine {
    fn from(l: charter_runtime::LogLine) -> LogLine {
        use charter_runtime::mediator::LogLevel as L;
        let charter_runtime::LogLine {
            level,
            source,
            message,
        } = l;
        LogLine {
            level: match level {
                L::Trace => LogLevel::Trace,
                L::Debug => LogLevel::Debug,
                L::Info => LogLevel::Info,
                L::Warn => LogLevel::Warn,
                L::Error => LogLevel::Error,
            },
            source: source.to_string(),
            message,
        }
    }
}

impl Control {
    /// `charter call`: one step under its grants. The step's events are on
    /// disk before it answers, success or not.
    pub async fn call(&self, req: &CallRequest) -> Result<CallReport, ApiError> {
        validate::name("plugin", &req.plugin)?;
        validate::name("initiator", &req.initiator)?;
        validate::size("the input", req.input.len())?;
        let host = self.host()?;
        let res = async {
            let loaded = crate::control::load(&host, &req.plugin).await?;
            host.call_loaded_as(&loaded, &req.input, Some(&req.initiator))
                .await
                .map(|out| (loaded.digest.clone(), out))
        }
        .await;
        self.flush()?;
        let (digest, out) = res?;
        Ok(CallReport {
            ok: true,
            plugin: req.plugin.clone(),
            digest,
            output: out.output,
            logs: out.logs.into_iter().map(LogLine::from).collect(),
            host_calls: out.host_calls,
            duration_us: out.duration_us,
        })
    }

    /// A plugin of the deployment, or the error naming the ones there are.
    fn kv_plugin(&self, plugin: &str) -> Result<(), ApiError> {
        let d = self.deployment();
        if d.plugins.contains_key(plugin) {
            return Ok(());
        }
        Err(ApiError::not_found(format!(
            "plugin {plugin:?} is not in the deployment (plugins: {})",
            d.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
        )))
    }

    fn kv_key(key: &str) -> Result<(), ApiError> {
        let (max_key, _) = charter_runtime::mediator::kv_bounds();
        if key.len() > max_key {
            return Err(ApiError::limit(format!(
                "kv key must be 1 to {max_key} bytes"
            )));
        }
        Ok(())
    }

    /// `charter kv get`: the value under a key (not found: exit 1).
    pub fn kv_get(&self, req: &KvGetRequest) -> Result<KvValue, ApiError> {
        validate::name("plugin", &req.plugin)?;
        self.kv_plugin(&req.plugin)?;
        Self::kv_key(&req.key)?;
        let host = self.host()?;
        match host.store().get(&req.plugin, &req.key)? {
            Some(value) => Ok(KvValue {
                plugin: req.plugin.clone(),
                key: req.key.clone(),
                value,
            }),
            None => Err(ApiError::not_found(format!(
                "{}: no value under {:?}",
                req.plugin, req.key
            ))),
        }
    }

    /// `charter kv set`: an event in the log, then the index.
    pub async fn kv_set(&self, req: &KvSetRequest) -> Result<KvSetResponse, ApiError> {
        validate::name("plugin", &req.plugin)?;
        validate::name("operator", &req.by)?;
        self.kv_plugin(&req.plugin)?;
        let host = self.host()?;
        let seq = host
            .operator_kv_set(&req.plugin, &req.key, Some(&req.value), &req.by)
            .await?;
        self.flush()?;
        Ok(KvSetResponse {
            plugin: req.plugin.clone(),
            key: req.key.clone(),
            seq,
        })
    }

    /// `charter kv list`: keys starting with a prefix.
    pub fn kv_list(&self, req: &KvListRequest) -> Result<KvKeys, ApiError> {
        validate::name("plugin", &req.plugin)?;
        self.kv_plugin(&req.plugin)?;
        Self::kv_key(&req.prefix)?;
        let host = self.host()?;
        Ok(KvKeys {
            plugin: req.plugin.clone(),
            keys: host.store().list(&req.plugin, &req.prefix)?,
        })
    }
}
