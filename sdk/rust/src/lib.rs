//! Write a [Charter](https://example.invalid/charter) workflow step in Rust.
//!
//! A step is one function from JSON to JSON and one macro line:
//!
//! ```ignore
//! use charter_sdk::{StepError, log, kv};
//! use serde_json::{json, Value};
//!
//! fn run(input: Value) -> Result<Value, StepError> {
//!     let name = input["name"].as_str().ok_or(StepError::fatal("missing name"))?;
//!     log::info(&format!("greeting {name}"));
//!     let seen = kv::get(name)?.is_some();
//!     kv::set(name, "seen")?;
//!     Ok(json!({ "hello": name, "seen_before": seen }))
//! }
//!
//! charter_sdk::step!(run);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`. The component
//! imports only the host functions the step actually calls; the deployment's
//! action groups must grant each of them, or the host refuses to load it.
//!
//! The capability modules ([`log`], [`kv`], [`secrets`], [`llm`], [`notify`], [`knowledge`]) are thin
//! wrappers over the generated bindings in [`bindings`]; errors from the host
//! convert into [`StepError`] with `?` (as retryable failures).


#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/host@0.1.0", "../../wit/plugin@0.1.0"],
        world: "charter:plugin/guest@0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_step",
        default_bindings_module: "charter_sdk::bindings",
        generate_all,
    });
}

/// `charter:host@0.2.0`'s additions (notify), bound apart from the 0.1.0
/// guest world: a plugin that calls them imports them at 0.2.0, every other
/// function at 0.1.0, and a host serving both links each at its version.
#[doc(hidden)]
pub mod bindings_v0_2 {
    wit_bindgen::generate!({
        path: ["../../wit/host@0.2.0"],
        inline: "package charter:sdk-v0-2; world additions { import charter:host/notify@0.2.0; }",
        world: "charter:sdk-v0-2/additions",
        generate_all,
    });
}

/// `charter:host@0.3.0`'s additions (knowledge), bound apart in the same
/// way: a plugin that searches imports `knowledge` at 0.3.0 only.
#[doc(hidden)]
pub mod bindings_v0_3 {
    wit_bindgen::generate!({
        path: ["../../wit/host@0.3.0"],
        inline: "package charter:sdk-v0-3; world additions { import charter:host/knowledge@0.3.0; }",
        world: "charter:sdk-v0-3/additions",
        generate_all,
    });
}

pub use serde_json;
pub use serde_json::{Value, json};

/// Why a step failed: the workflow engine retries `Retryable` failures under
/// the step's retry policy and never retries `Fatal` ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    Retryable(String),
    Fatal(String),
}

impl StepError {
    pub fn retryable(msg: impl ToString) -> Self {
        StepError::Retryable(msg.to_string())
    }
    pub fn fatal(msg: impl ToString) -> Self {
        StepError::Fatal(msg.to_string())
    }
}

/// Host capability errors are transient by default (the host may be busy or
/// the provider unreachable): `?` turns them into retryable step failures.
impl From<HostError> for StepError {
    fn from(e: HostError) -> Self {
        StepError::Retryable(e.0)
    }
}

/// An error reported by a host capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl core::fmt::Display for HostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

#[doc(hidden)]
pub fn __run_json(
    input: &str,
    f: fn(Value) -> Result<Value, StepError>,
) -> Result<String, bindings::charter::plugin::types::StepError> {
    use bindings::charter::plugin::types::StepError as Wire;
    let value: Value = serde_json::from_str(input)
        .map_err(|e| Wire::Fatal(format!("input is not valid JSON: {e}")))?;
    match f(value) {
        Ok(out) => serde_json::to_string(&out).map_err(|e| Wire::Fatal(format!("output: {e}"))),
        Err(StepError::Retryable(m)) => Err(Wire::Retryable(m)),
        Err(StepError::Fatal(m)) => Err(Wire::Fatal(m)),
    }
}

/// Export `f: fn(serde_json::Value) -> Result<serde_json::Value, StepError>`
/// as the component's `run` function.
#[macro_export]
macro_rules! step {
    ($f:path) => {
        struct __CharterStep;
        impl $crate::bindings::Guest for __CharterStep {
            fn run(
                input: $crate::__String,
            ) -> ::core::result::Result<$crate::__String, $crate::bindings::charter::plugin::types::StepError>
            {
                $crate::__run_json(&input, $f)
            }
        }
        $crate::bindings::__export_step!(__CharterStep);
    };
}

#[doc(hidden)]
pub use std::string::String as __String;

/// Log lines, tagged by the host with the plugin's name.
pub mod log {
    use super::bindings::charter::host::log::{Level, write};
    pub fn trace(msg: &str) {
        write(Level::Trace, msg)
    }
    pub fn debug(msg: &str) {
        write(Level::Debug, msg)
    }
    pub fn info(msg: &str) {
        write(Level::Info, msg)
    }
    pub fn warn(msg: &str) {
        write(Level::Warn, msg)
    }
    pub fn error(msg: &str) {
        write(Level::Error, msg)
    }
}

/// The plugin's private key-value namespace.
pub mod kv {
    use super::*;
    use bindings::charter::host::kv as raw;
    pub fn get(key: &str) -> Result<Option<String>, HostError> {
        raw::get(key).map_err(HostError)
    }
    pub fn set(key: &str, value: &str) -> Result<(), HostError> {
        raw::set(key, value).map_err(HostError)
    }
    pub fn delete(key: &str) -> Result<bool, HostError> {
        raw::delete(key).map_err(HostError)
    }
    pub fn list(prefix: &str) -> Result<Vec<String>, HostError> {
        raw::list_keys(prefix).map_err(HostError)
    }
    /// `get` and parse the value as JSON.
    pub fn get_json(key: &str) -> Result<Option<Value>, HostError> {
        match get(key)? {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| HostError(format!("kv value under {key:?} is not JSON: {e}"))),
        }
    }
}

/// Secrets granted to this plugin.
pub mod secrets {
    use super::*;
    pub fn get(name: &str) -> Result<String, HostError> {
        bindings::charter::host::secrets::get(name).map_err(HostError)
    }
}

/// Language-model calls through the deployment's provider.
pub mod llm {
    use super::*;
    use bindings::charter::host::llm as raw;
    pub use raw::Classification;
    pub fn complete(prompt: &str) -> Result<String, HostError> {
        raw::complete(prompt).map_err(HostError)
    }
    pub fn classify(text: &str, labels: &[&str]) -> Result<Classification, HostError> {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        raw::classify(text, &labels).map_err(HostError)
    }
}

/// Notifications to channels the deployment declares and grants by name
/// (`charter:host/notify`, since `charter:host@0.2.0`).
pub mod notify {
    use super::*;
    /// Send `subject` and `body` to `channel`; the delivery's id. In a
    /// workflow run a sent notification is recorded: a re-run step gets
    /// the recorded id back and nothing is sent twice.
    pub fn send(channel: &str, subject: &str, body: &str) -> Result<String, HostError> {
        bindings_v0_2::charter::host::notify::send(channel, subject, body).map_err(HostError)
    }
}

/// Search over knowledge corpora the deployment declares and grants by
/// name (`charter:host/knowledge`, since `charter:host@0.3.0`).
pub mod knowledge {
    use super::*;
    pub use bindings_v0_3::charter::host::knowledge::Passage;
    /// The at most `k` passages of `corpus` that best match `query`, best
    /// first (the host caps `k`). `score` is BM25 by default; for a corpus
    /// the deployment declares with `embeddings = {...}` it is the cosine
    /// similarity (−1..=1), so a threshold depends on the corpus. In a
    /// workflow run the result is recorded: a re-run step gets the same
    /// passages back.
    pub fn search(corpus: &str, query: &str, k: u32) -> Result<Vec<Passage>, HostError> {
        bindings_v0_3::charter::host::knowledge::search(corpus, query, k).map_err(HostError)
    }
}

/// Explain the recommendation behind the calls that follow: attached to any
/// proposal this step creates, so the person deciding sees why.
pub fn explain(rationale: &str) {
    bindings::charter::host::explain::rationale(rationale)
}
