//! Parse and validate a Charter deployment (`charter.toml`).
//!
//! **Architecture invariant:** this crate does no IO beyond reading the one
//! configuration file it is asked to load. It knows nothing about
//! WebAssembly; it turns text into a validated [`Deployment`] and reports
//! every governance rule the text breaks ([`Violation`]).
//!
//! ```toml
//! [deployment]
//! name = "acme-refunds"
//! phase = 4                      # 1..=5, the framework's maturity phase
//! data_dir = ".charter"          # relative to this file
//! max_steps_in_flight = 500      # the instance pool's size (default 500)
//! run_lease = "60s"              # how long a driver's claim on a run lasts unrenewed (3s to 10m)
//! backend = "file"              # or "postgres://USER@HOST/DB", or { secret = "NAME" }: see [`Backend`]
//!
//! [groups.orders-read]
//! capabilities = ["charter:host/kv.get", "charter:host/kv.list-keys"]
//! phase = 1
//! effect = "read"                # optional: derived when left out
//!
//! [plugins.refund-triage]
//! path = "plugins/refund_triage.wasm"
//! groups = ["orders-read"]
//! granted_by = "alice"
//! reason = "triage needs to read orders"
//!
//! [channels.ops]                 # for charter:host/notify; or inbox = true
//! webhook = "https://hooks.example.com/T0/B0/x"
//!
//! [knowledge.policies]           # for charter:host/knowledge: Markdown files
//! dir = "corpus/policies"        # inside this file's directory; a group
//!                                # grants it by name: knowledge = ["policies"]
//! # optional: rank by an OpenAI-compatible embeddings endpoint instead of
//! # BM25 (see [`KnowledgeEmbeddings`]); the default needs no network
//! # embeddings = { base_url = "http://127.0.0.1:8000/v1", model = "nomic-embed-text" }
//!
//! [plugins.payments]             # a connector
//! path = "plugins/payments.wasm"
//! provides = ["acme:payments/refunds"]
//! # The provider declares which of its functions only read; every other
//! # function it provides is a write. `INTERFACE.*` declares them all.
//! effects = { "acme:payments/refunds.lookup-order" = "read" }
//!
//! [identities.bob]               # a person ([approvers.bob] is the older form)
//! roles = ["finance"]
//! tokens = ["sha256:9f86d0…"]    # hashes only: `charter tokens create bob`
//!
//! [identities.shop-webhook]      # a service account: never decides a proposal
//! kind = "service"
//! tokens = ["sha256:60303a…"]
//!
//! [oidc]                         # optional: JWTs of one issuer (see [`Oidc`])
//! issuer = "https://idp.example.com"
//! audience = "charter"
//! jwks_url = "https://idp.example.com/.well-known/jwks.json"   # or jwks_file
//! # [identities.bob] oidc_subjects = ["00u1ab…"] maps a subject to bob
//! ```
//!
//! ## Effects
//!
//! A function's effect is what the host knows it to be, never what a group
//! says: the host's own functions are catalogued by the capabilities that
//! implement them (a [`HostCatalog`] the runtime supplies:
//! `charter:host/kv.set`, `kv.delete` and `notify.send` write, the rest read;
//! `wasi:http/outgoing-handler.handle` writes); a connector's functions are
//! read only where their provider declares them so in `effects`, write
//! otherwise (as is any function of an interface nobody provides). A
//! group's effect ([`ActionGroup::effect`]) is write if any function it
//! grants writes (a wildcard over a connector interface writes unless the
//! provider declares `INTERFACE.*` read). A group whose `effect = "read"`
//! label understates its functions is a violation (`mislabelled-effect`);
//! without a label the effect is derived. Phase gates use the derived
//! effect.
//!
//! ## Patterns
//!
//! A group's `capabilities` are [`Pattern`]s: `interface.function`,
//! `interface.*`, `interface@version.function` or, as Charter prints
//! functions, `interface@version#function`. Each must match a function
//! someone knows, or the file is refused naming the pattern, its line and
//! the closest known function: the host's catalog for `charter:host` and
//! `wasi:` interfaces, any function of an interface a plugin `provides`
//! (`charter check` then compares with what the loaded connector exports).

mod pattern;
pub mod triggers;
pub mod workflow;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use pattern::{FunctionName, PATTERN_SYNTAX, Pattern, PatternError, edit_distance};
pub use triggers::{Missed, Schedule, Triggers, Webhook};
pub use workflow::{Condition, OnFailure, RetryPolicy, StepSpec, Workflow};

/// The deployment file's default name, looked up in the working directory.
pub const DEFAULT_CONFIG: &str = "charter.toml";

/// Errors that stop a configuration from being read at all.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source} (pass --config FILE, or run where charter.toml is)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A maturity phase of the framework, 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Phase(u8);

impl Phase {
    pub const DETERMINISTIC: Phase = Phase(1);
    pub const SUPERVISED: Phase = Phase(2);
    pub const ANALYSIS_ONLY: Phase = Phase(3);
    pub const GOVERNED_AUTONOMY: Phase = Phase(4);
    pub const HUMAN_DECIDES: Phase = Phase(5);

    pub fn new(n: u8) -> Option<Phase> {
        (1..=5).contains(&n).then_some(Phase(n))
    }
    pub fn get(self) -> u8 {
        self.0
    }
    /// The framework's name for the phase.
    pub fn describe(self) -> &'static str {
        match self.0 {
            1 => "deterministic automation",
            2 => "supervised narrow interaction",
            3 => "analysis only",
            4 => "governed autonomy",
            _ => "AI proposes, human decides",
        }
    }
}

impl TryFrom<u8> for Phase {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        Phase::new(n).ok_or_else(|| format!("phase must be 1 to 5, got {n}"))
    }
}
impl From<Phase> for u8 {
    fn from(p: Phase) -> u8 {
        p.0
    }
}
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.describe())
    }
}

/// The functions the host itself implements, as its capabilities declare
/// them. This crate knows nothing of WebAssembly or of any capability: the
/// runtime supplies its catalog (`charter_runtime::host_catalog()`), built
/// from its capability modules, to [`Deployment::parse`] and
/// [`Deployment::load`]; adding a capability edits nothing here.
pub trait HostCatalog: Send + Sync + fmt::Debug {
    /// Every function the host implements, once each (any version):
    /// interface without version, function name, effect.
    fn host_functions(&self) -> &[(&'static str, &'static str, Effect)];

    /// The effect of a function the host implements (any version), or
    /// `None` for a function it does not (a connector's, or an unknown one).
    fn host_function_effect(&self, f: &FunctionName) -> Option<Effect> {
        self.host_functions()
            .iter()
            .find(|(i, n, _)| *i == f.interface && *n == f.func)
            .map(|(_, _, e)| *e)
    }

    /// Is `f` one of the host's voice functions (a log line, the
    /// rationale): the plugin's own voice, kept in its log, never an
    /// audited call (so no quota can count it)?
    fn host_voice(&self, _f: &FunctionName) -> bool {
        false
    }
}

/// Interfaces whose functions are AI: a phase 1 ("deterministic")
/// deployment grants none of them (rule `deterministic`), whatever a
/// group's own `phase` says.
pub const AI_INTERFACES: &[&str] = &["charter:host/llm"];

/// Is `interface` the host's own (so every function of it is catalogued)?
fn host_interface(interface: &str) -> bool {
    interface.starts_with("charter:host/") || interface.starts_with("wasi:http/")
}

/// Whether a group's capabilities change the world outside the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Read,
    Write,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Read => "read",
            Effect::Write => "write",
        })
    }
}

/// Which WASI a plugin is linked with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum WasiMode {
    /// The inert baseline: WASI interfaces linked with no files, no
    /// environment, no arguments, every socket denied; stdout/stderr become
    /// log lines.
    #[default]
    Inert,
    /// Not even the inert baseline: only granted capabilities are linked.
    None,
}

/// Resource limits for one step call. Every field is optional in the file;
/// deployment-wide `[limits]` override the built-in defaults and a plugin's
/// own `limits` override those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Wall-clock deadline for one call, enforced by epoch interruption.
    pub deadline_ms: u64,
    /// Linear memory over all the instance's memories.
    pub memory_bytes: u64,
    /// Host (capability) calls one step may make.
    pub max_host_calls: u64,
    pub max_input_bytes: u64,
    pub max_output_bytes: u64,
    /// Largest component file accepted.
    pub max_component_bytes: u64,
    /// Host-side timeout for one waiting host call (HTTP, LLM).
    pub host_call_timeout_ms: u64,
    /// Longest compile of a component before it is refused.
    pub max_compile_seconds: u64,
    /// Bytes one step may record in the event log and make the host hold
    /// on its behalf (pending events, kv writes, request bodies).
    pub max_recorded_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: 5_000,
            memory_bytes: 64 << 20,
            max_host_calls: 10_000,
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_component_bytes: 64 << 20,
            host_call_timeout_ms: 30_000,
            max_compile_seconds: 300,
            max_recorded_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    deadline_ms: Option<u64>,
    memory_mib: Option<u64>,
    max_host_calls: Option<u64>,
    max_input_bytes: Option<u64>,
    max_output_bytes: Option<u64>,
    max_component_mib: Option<u64>,
    host_call_timeout_ms: Option<u64>,
    max_compile_seconds: Option<u64>,
    max_recorded_mib: Option<u64>,
}

impl LimitsFile {
    fn apply(&self, base: Limits) -> Limits {
        Limits {
            deadline_ms: self.deadline_ms.unwrap_or(base.deadline_ms),
            memory_bytes: self
                .memory_mib
                .map(|m| m << 20)
                .unwrap_or(base.memory_bytes),
            max_host_calls: self.max_host_calls.unwrap_or(base.max_host_calls),
            max_input_bytes: self.max_input_bytes.unwrap_or(base.max_input_bytes),
            max_output_bytes: self.max_output_bytes.unwrap_or(base.max_output_bytes),
            max_component_bytes: self
                .max_component_mib
                .map(|m| m << 20)
                .unwrap_or(base.max_component_bytes),
            host_call_timeout_ms: self
                .host_call_timeout_ms
                .unwrap_or(base.host_call_timeout_ms),
            max_compile_seconds: self.max_compile_seconds.unwrap_or(base.max_compile_seconds),
            max_recorded_bytes: self
                .max_recorded_mib
                .map(|m| m.saturating_mul(1 << 20))
                .unwrap_or(base.max_recorded_bytes),
        }
    }
}

/// A named set of capabilities and the rules for granting it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionGroup {
    pub name: String,
    pub description: Option<String>,
    pub capabilities: Vec<Pattern>,
    /// Lowest deployment phase at which the group may be granted.
    pub phase: Phase,
    /// The group's effect: write if any function it grants writes (or if
    /// labelled write), whatever its label says. Phase gates use this.
    pub effect: Effect,
    /// The `effect` label as written in the file, if any.
    pub declared_effect: Option<Effect>,
    /// For `wasi:http`: the `host[:port]` authorities requests may go to.
    pub allow_hosts: Vec<String>,
    /// For `charter:host/secrets`: the secret names that may be read.
    pub secrets: Vec<String>,
    /// For `charter:host/notify`: the channel names that may be sent to.
    pub channels: Vec<String>,
    /// For `charter:host/knowledge`: the corpus names that may be searched.
    pub knowledge: Vec<String>,
    /// Cedar policies deciding calls of this group's functions on their
    /// arguments (inline text, or read from `policy_file`).
    pub policies: Option<String>,
    /// Role whose holders may approve proposals of this group (a policy's
    /// `@approval("role")` names it per policy).
    pub approver_role: Option<String>,
    /// Distinct approvals a proposal needs (N of the role's M holders).
    pub approvals: u32,
    /// Hours before an undecided proposal expires (expiry is a rejection).
    pub proposal_expiry_hours: u64,
    /// The same in milliseconds: `proposal_expiry_seconds` when given
    /// (short expiries for tests and fast loops), the hours otherwise.
    pub proposal_expiry_ms: u64,
}

impl ActionGroup {
    /// Does this group grant `func`?
    pub fn grants(&self, func: &FunctionName) -> bool {
        self.capabilities.iter().any(|p| p.matches(func))
    }

    /// Does the group name `func`'s action (`interface.function`) in any
    /// version? Policy is decided per action, so a group's policies apply
    /// to every version of a function its patterns name: a versioned
    /// pattern can never make a call skip them.
    pub fn names_action(&self, func: &FunctionName) -> bool {
        self.capabilities
            .iter()
            .any(|p| p.interface_is(&func.interface) && p.matches_function(&func.func))
    }
}

/// One plugin and its grant: the authority record of who granted what, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginSpec {
    pub name: String,
    /// Absolute path of the component file.
    pub path: PathBuf,
    /// `sha256:<hex>` pin; a component whose bytes differ is refused.
    pub digest: Option<String>,
    pub groups: Vec<String>,
    pub limits: Limits,
    pub wasi: WasiMode,
    /// Who granted the groups (an authority record, shown to reviewers).
    pub granted_by: Option<String>,
    /// Why the groups were granted.
    pub reason: Option<String>,
    /// The team or person that owns the plugin (may not approve its proposals).
    pub owner: Option<String>,
    /// Interfaces this plugin provides as a connector (`acme:payments/refunds`).
    pub provides: Vec<String>,
    /// Exported interfaces (no version) served to agents as tools, with who
    /// may see them (`[plugins.NAME.tools."INTERFACE"]`); each is also in
    /// `provides`.
    pub tools: BTreeMap<String, ToolAccess>,
    /// A directory (or file) of WIT whose doc comments describe its tools,
    /// for a component that carries no `package-docs` section (`wit`).
    pub wit: Option<PathBuf>,
}

/// Where a secret's value comes from. Values are read when a plugin asks.
#[derive(Debug, Clone, serde::Serialize)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Where a `charter:host/notify` channel delivers (`[channels.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// POST Slack-compatible JSON (`{"text": ...}`) to this `http(s)` URL,
    /// with an `idempotency-key` header. Redirects are not followed.
    Webhook(String),
    /// The deployment's inbox: the message is the notify call's record in
    /// the event log, for the operator console to show.
    Inbox,
}

/// A corpus `charter:host/knowledge` searches (`[knowledge.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KnowledgeCorpus {
    /// Absolute path of its directory of Markdown files: `dir` joined to
    /// the deployment file's directory. `dir` is relative, with no `..`
    /// (checked here); the runtime checks again, on the real paths, that
    /// no symbolic link leads outside the deployment's directory.
    pub dir: PathBuf,
    /// The deployment file's directory: what the corpus must stay inside.
    pub root: PathBuf,
    /// Rank by embeddings instead of BM25 (`embeddings = { ... }`); `None`,
    /// the default, is BM25, offline.
    pub embeddings: Option<KnowledgeEmbeddings>,
}

/// A corpus's embeddings endpoint (`[knowledge.NAME] embeddings = {
/// base_url, model, api_key_secret, timeout_ms }`): an OpenAI-compatible
/// `POST {base_url}/embeddings`, declared here by the operator only (a
/// plugin never names a URL). The passages are embedded when the host
/// starts, each query when it is searched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KnowledgeEmbeddings {
    /// `http://` or `https://`, with a host and no credentials in it; with
    /// an `api_key_secret`, `https://` or a literal loopback address (the
    /// key is not sent in clear over a network).
    pub base_url: String,
    pub model: String,
    /// Name of the secret (under `[secrets]`) holding the API key, sent as
    /// `Authorization: Bearer`; its value is never shown.
    pub api_key_secret: Option<String>,
    /// Each request's bound, start and search alike (a search is also
    /// bounded by the host-call timeout).
    pub timeout_ms: u64,
}

/// The default [`KnowledgeEmbeddings::timeout_ms`].
pub const DEFAULT_EMBEDDINGS_TIMEOUT_MS: u64 = 30_000;
/// The largest [`KnowledgeEmbeddings::timeout_ms`] accepted.
pub const MAX_EMBEDDINGS_TIMEOUT_MS: u64 = 300_000;

/// The LLM provider behind `charter:host/llm`.
#[derive(Debug, Clone, serde::Serialize)]
pub enum LlmProvider {
    /// Deterministic and offline: same input, same answer. The default.
    Offline,
    /// An OpenAI-compatible chat-completions endpoint.
    OpenAi {
        base_url: String,
        model: String,
        /// Name of the secret holding the API key, if the endpoint needs one.
        api_key_secret: Option<String>,
    },
}

/// A loaded, structurally valid deployment. Governance rules are checked
/// separately by [`Deployment::violations`] so that a reviewer sees all of
/// them at once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    pub name: String,
    pub phase: Phase,
    /// The framework's deployment pattern this deployment is
    /// (`[deployment] pattern = "service-desk"`): how `charter kpi
    /// --framework` groups its figures. `None` when undeclared.
    pub pattern: Option<String>,
    /// Absolute path of the data directory.
    pub data_dir: PathBuf,
    /// The file this was read from.
    pub source: PathBuf,
    /// Steps (and connector calls) the host runs at once: the size of its
    /// pre-reserved instance pool. One more fails with a host-capacity
    /// error naming this setting ([`DEFAULT_MAX_STEPS_IN_FLIGHT`] unless set).
    pub max_steps_in_flight: u32,
    /// How long a run's lease lasts unless its driver renews it (every
    /// third of it): on a deployment several nodes share, how long a dead
    /// node's runs wait before another node takes them
    /// ([`DEFAULT_RUN_LEASE_MS`] unless `run_lease` is set).
    pub run_lease_ms: u64,
    pub limits: Limits,
    pub groups: BTreeMap<String, ActionGroup>,
    pub plugins: BTreeMap<String, PluginSpec>,
    pub secrets: BTreeMap<String, SecretSource>,
    /// Notification channels by name (`[channels.NAME]`).
    pub channels: BTreeMap<String, Channel>,
    /// Knowledge corpora by name (`[knowledge.NAME]`).
    pub knowledge: BTreeMap<String, KnowledgeCorpus>,
    pub llm: LlmProvider,
    /// People who may decide proposals, and their roles: the identities
    /// of kind person (`[identities.NAME]`, or `[approvers.NAME]`, the
    /// older name for a person).
    pub approvers: BTreeMap<String, Approver>,
    /// Everyone who may act on the deployment through its API, people and
    /// service accounts, with the hashes of their tokens.
    pub identities: BTreeMap<String, Identity>,
    /// AI agents (`[agents.NAME]`); each is also an identity of kind agent
    /// (its tokens are checked there).
    pub agents: BTreeMap<String, Agent>,
    /// JWTs of one OIDC issuer also prove identities (`[oidc]`).
    pub oidc: Option<Oidc>,
    /// Workflows: inline `[workflows.NAME]` and `workflows/NAME.toml`
    /// beside the deployment file.
    pub workflows: BTreeMap<String, Workflow>,
    /// Connector functions' effects as their providers declare them
    /// (`effects` of `[plugins.NAME]`): `interface.function` or
    /// `interface.*` (no version) → effect. Undeclared functions write.
    pub connector_effects: BTreeMap<String, Effect>,
    /// Host-enforced quotas (`[quotas.NAME]`): at most `limit` autonomous
    /// executions of one function per window, counted by the host from
    /// the event log.
    pub quotas: BTreeMap<String, Quota>,
    /// Where the event log and the indexes live (`[deployment] backend`).
    pub backend: Backend,
    /// The host's own functions, as its capabilities declare them.
    #[serde(skip)]
    pub host: &'static dyn HostCatalog,
}

/// Where a deployment keeps its event log and its indexes
/// (`[deployment] backend`):
///
/// ```toml
/// [deployment]
/// backend = "file"                                  # the default: events.log + sled in data_dir
/// backend = "postgres://charter@db.internal/charter" # PostgreSQL (no password in the file, please)
/// backend = { secret = "pg-url" }                   # the URL is the value of secret pg-url
/// ```
///
/// The URL may hold a password: neither `Debug` nor the JSON form of a
/// deployment (`charter config`, `charter grants`) shows it — only
/// [`Backend::shown`], which leaves out the user information and the query.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// `events.log` and sled in the data directory.
    #[default]
    File,
    /// PostgreSQL at this URL (`postgres://` or `postgresql://`).
    Postgres(String),
    /// PostgreSQL at the URL (or `key=value` connection string) that this
    /// secret of `[secrets]` holds.
    PostgresSecret(String),
}

impl Backend {
    /// What may be shown of it: `file`, `postgres://…@HOST/DB` (no user,
    /// password or query), or `postgres (URL in secret NAME)`.
    pub fn shown(&self) -> String {
        match self {
            Backend::File => "file".into(),
            Backend::Postgres(url) => shown_url(url),
            Backend::PostgresSecret(name) => format!("postgres (URL in secret {name:?})"),
        }
    }

    /// Whether the deployment runs on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        !matches!(self, Backend::File)
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl serde::Serialize for Backend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

/// A PostgreSQL URL without what may be secret: the user information
/// (`user:password@`) and the query (`?password=…`) are left out.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (userinfo, host) = match rest.rfind('@') {
        Some(at) => (true, &rest[at + 1..]),
        None => (false, rest),
    };
    let host = host.split(['?', '#']).next().unwrap_or_default();
    let host: String = host.chars().filter(|c| !c.is_control()).take(200).collect();
    format!("{scheme}://{}{host}", if userinfo { "…@" } else { "" })
}

/// The longest backend URL accepted.
const MAX_BACKEND_URL: usize = 2048;

/// `[deployment] backend` checked: a `postgres://` URL or a declared
/// secret. Errors show the URL only as [`shown_url`] does.
fn backend(
    b: Option<BackendFile>,
    secrets: &BTreeMap<String, SecretSource>,
) -> Result<Backend, String> {
    const FORMS: &str = "give \"file\" (the default), a \"postgres://USER@HOST/DB\" URL, or { secret = \"NAME\" } naming a [secrets] entry that holds the URL (keep a password out of this file)";
    match b {
        None => Ok(Backend::File),
        Some(BackendFile::Url(u)) if u == "file" => Ok(Backend::File),
        Some(BackendFile::Url(u)) => {
            let scheme_ok = u.starts_with("postgres://") || u.starts_with("postgresql://");
            if !scheme_ok {
                return Err(format!(
                    "deployment.backend = {:?} is not a backend: {FORMS}",
                    if u.contains("://") {
                        shown_url(&u)
                    } else {
                        "(not shown)".into()
                    }
                ));
            }
            if u.len() > MAX_BACKEND_URL || u.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!(
                    "deployment.backend {}: the URL holds a space or control character, or is over {MAX_BACKEND_URL} bytes",
                    shown_url(&u)
                ));
            }
            Ok(Backend::Postgres(u))
        }
        Some(BackendFile::Secret { secret }) => {
            if !secrets.contains_key(&secret) {
                return Err(format!(
                    "deployment.backend: secret {secret:?} is not declared under [secrets] (declare it with env = \"VAR\" or file = \"path\")"
                ));
            }
            Ok(Backend::PostgresSecret(secret))
        }
    }
}

/// The most calls a quota's window may hold.
pub const MAX_QUOTA_LIMIT: u32 = 100_000;
/// The longest quota window: 31 days.
pub const MAX_QUOTA_WINDOW_MS: u64 = 31 * 24 * 3_600_000;

/// `[quotas.NAME]`: at most `limit` calls of `function` allowed without a
/// person, per sliding window of `per`, per deployment (every plugin and
/// every run together). The host counts and enforces it at the decision
/// point, after policy, from the event log: a plugin cannot exceed it by
/// looping, and a restart does not reset it.
///
/// ```toml
/// [quotas.isolations]
/// function = "acme:edr/actions.isolate-host"   # interface.function, no version, no *
/// limit = 3
/// per = "1h"                                   # s, m, h or d
/// over = "propose"                             # or "deny" (default: propose)
/// approval = "soc"                             # who decides a call over the quota
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quota {
    pub name: String,
    /// The function's interface, without version.
    pub interface: String,
    pub function: String,
    pub limit: u32,
    pub per_ms: u64,
    pub over: OverQuota,
    /// The role a proposal over the quota goes to (`None`: the approver
    /// role of the groups granting the function).
    pub approval: Option<String>,
}

impl Quota {
    /// Does this quota count calls of `f` (any version)?
    pub fn covers(&self, f: &FunctionName) -> bool {
        f.interface == self.interface && f.func == self.function
    }
}

/// What a call over its quota becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverQuota {
    /// A proposal: a person decides (and a decided call does not count).
    #[default]
    Propose,
    /// A denial: the step fails closed.
    Deny,
}

/// A quota window: a number and a unit (`s`, `m`, `h`, `d`), e.g. `1h`.
pub fn parse_window(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = n.parse().map_err(|_| {
        format!("{text:?} is not a window: a number and s, m, h or d (e.g. \"1h\")")
    })?;
    let unit = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?}: the unit must be s, m, h or d (e.g. \"1h\")"
            ));
        }
    };
    let ms = n.saturating_mul(unit);
    if ms == 0 || ms > MAX_QUOTA_WINDOW_MS {
        return Err(format!("{text:?}: a window is 1s to 31d"));
    }
    Ok(ms)
}

fn quota(name: &str, q: QuotaFile) -> Result<Quota, String> {
    check_name("quota", name)?;
    let pattern =
        Pattern::parse(&q.function).map_err(|e| format!("[quotas.{name}] function: {e}"))?;
    let Some(function) = pattern.func.clone() else {
        return Err(format!(
            "[quotas.{name}] function = {:?}: name one function (interface.function), not a wildcard",
            q.function
        ));
    };
    if !(1..=MAX_QUOTA_LIMIT).contains(&q.limit) {
        return Err(format!(
            "[quotas.{name}] limit = {}: must be 1 to {MAX_QUOTA_LIMIT}",
            q.limit
        ));
    }
    let per_ms = parse_window(&q.per).map_err(|e| format!("[quotas.{name}] per: {e}"))?;
    let over = q.over.unwrap_or_default();
    if over == OverQuota::Deny && q.approval.is_some() {
        return Err(format!(
            "[quotas.{name}] approval names who decides a proposal, but over = \"deny\" makes none"
        ));
    }
    Ok(Quota {
        name: name.to_string(),
        interface: pattern.interface.clone(),
        function,
        limit: q.limit,
        per_ms,
        over,
        approval: q.approval,
    })
}

/// A quota on a host function counts a function the host has, and one
/// that reaches the decision point (a voice function never does). A
/// provider's function is checked against its exports when it loads.
fn quota_function(
    q: &Quota,
    catalog: &dyn HostCatalog,
    plugins: &BTreeMap<String, PluginSpec>,
) -> Result<(), String> {
    if !host_interface(&q.interface) {
        if plugins.values().any(|p| p.provides.contains(&q.interface)) {
            return Ok(());
        }
        return Err(format!(
            "[quotas.{}] counts {}.{}, but no plugin provides {} and the host has no such interface; name a function the host or a provider has",
            q.name, q.interface, q.function, q.interface
        ));
    }
    let f = FunctionName::new(&q.interface, &q.function);
    if catalog.host_function_effect(&f).is_none() {
        let known: Vec<&str> = catalog
            .host_functions()
            .iter()
            .filter(|(i, _, _)| *i == q.interface)
            .map(|(_, n, _)| *n)
            .collect();
        let has = if known.is_empty() {
            "the host has no such interface".to_string()
        } else {
            format!("its functions: {}", known.join(", "))
        };
        return Err(format!(
            "[quotas.{}] function = \"{}.{}\": the host has no such function ({has}); name the function the quota counts",
            q.name, q.interface, q.function
        ));
    }
    if catalog.host_voice(&f) {
        return Err(format!(
            "[quotas.{}] function = \"{}.{}\": a voice function (the plugin's own log line) is never an audited call, so no quota can count it; remove the quota",
            q.name, q.interface, q.function
        ));
    }
    Ok(())
}

/// A quota whose calls over it become proposals names who decides them:
/// its own `approval` role, or else every group naming the function sets
/// an `approver_role` (without one a proposal would go to any approver).
fn quota_approval(q: &Quota, groups: &BTreeMap<String, ActionGroup>) -> Result<(), String> {
    if q.over != OverQuota::Propose || q.approval.is_some() {
        return Ok(());
    }
    let f = FunctionName::new(&q.interface, &q.function);
    let naming: Vec<&ActionGroup> = groups.values().filter(|g| g.names_action(&f)).collect();
    let roleless: Vec<&str> = naming
        .iter()
        .filter(|g| g.approver_role.is_none())
        .map(|g| g.name.as_str())
        .collect();
    if naming.is_empty() || !roleless.is_empty() {
        let which = if naming.is_empty() {
            "no group granting it names an approver_role".to_string()
        } else {
            format!("group {} names no approver_role", roleless.join(", "))
        };
        return Err(format!(
            "[quotas.{}] sends calls of {}.{} over it to people (over = \"propose\"), but {which}: set approval = \"ROLE\" on the quota (or approver_role on every group granting the function), or over = \"deny\"",
            q.name, q.interface, q.function
        ));
    }
    Ok(())
}

/// A person who may decide proposals.
pub type Approver = Identity;

/// Who may see (and call) the functions of one tool interface: the agents
/// named, and every agent holding one of the roles.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ToolAccess {
    pub agents: Vec<String>,
    pub roles: Vec<String>,
    /// Functions declared idempotent (`idempotent = ["func", ...]`): MCP's
    /// `idempotentHint`. Each must be a function of the interface (checked
    /// when the tools are listed: a name it does not export is an error).
    pub idempotent: Vec<String>,
}

impl ToolAccess {
    /// Whether `agent` (holding `roles`) may see the tool.
    pub fn admits(&self, agent: &str, roles: &[String]) -> bool {
        self.agents.iter().any(|a| a == agent) || self.roles.iter().any(|r| roles.contains(r))
    }
}

/// An AI agent (`[agents.NAME]`): an identity of kind agent that reaches
/// the deployment's tools over MCP, and nothing else.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Agent {
    pub name: String,
    pub roles: Vec<String>,
    /// Tool calls it may make per minute (refused beyond, recorded).
    pub calls_per_minute: u32,
}

/// Tool calls per minute of an agent that does not set `calls_per_minute`.
pub const DEFAULT_AGENT_CALLS_PER_MINUTE: u32 = 120;

/// Someone who may act on the deployment: a person (who may decide
/// proposals, "human decides") or a service account (which starts runs and
/// reads, and never decides a proposal).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Identity {
    pub name: String,
    pub kind: IdentityKind,
    pub roles: Vec<String>,
    /// SHA-256 hashes of the tokens it authenticates with; the tokens
    /// themselves never appear in the file (`charter tokens create NAME`).
    #[serde(skip)]
    pub tokens: Vec<TokenHash>,
    /// The OIDC subjects (the `[oidc] subject_claim` of a verified JWT)
    /// that prove this identity.
    pub oidc_subjects: Vec<String>,
}

/// `[oidc]`: JWTs signed by one issuer's keys prove identities. The
/// issuer proves *who* (a subject mapped by `oidc_subjects` to a declared
/// identity); what that identity may do (kind, roles) is this file's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Oidc {
    /// The `iss` every JWT must carry, exactly.
    pub issuer: String,
    /// An `aud` every JWT must carry (one of its audiences).
    pub audience: String,
    /// Where the issuer's public keys (a JWKS document) are.
    pub jwks: JwksSource,
    /// The claim naming the subject (`sub` unless set).
    pub subject_claim: String,
    /// The signature algorithms accepted: `RS256` and/or `ES256`.
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (at most 300).
    pub leeway_secs: u64,
    /// The shortest time between two fetches of `jwks_url` (an unknown
    /// `kid` asks for one), seconds.
    pub refresh_secs: u64,
}

/// Where an issuer's keys are read from.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

/// Whether an identity is a person or a service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    Person,
    Service,
    /// An AI agent (`[agents.NAME]`): calls tools over MCP, nothing else.
    Agent,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Person => "person",
            IdentityKind::Service => "service",
            IdentityKind::Agent => "agent",
        }
    }
}

/// The SHA-256 of a token, written `sha256:<64 hex digits>` in the file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Parse `sha256:<64 hex digits>`. Errors never repeat the text: it
    /// may be a token pasted where its hash belongs.
    pub fn parse(s: &str) -> Result<TokenHash, String> {
        const FORM: &str = "a token hash is \"sha256:<64 hex digits>\" as `charter tokens create` prints it (the file never holds a token itself)";
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("not a token hash: {FORM}"))?;
        let mut out = [0u8; 32];
        if hex.len() != 64 {
            return Err(format!(
                "{} hex digits after \"sha256:\": {FORM}",
                hex.len()
            ));
        }
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).unwrap_or("");
            out[i] =
                u8::from_str_radix(text, 16).map_err(|_| format!("a non-hex digit: {FORM}"))?;
        }
        Ok(TokenHash(out))
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

/// A governance rule that the deployment breaks. Each one alone refuses
/// the deployment (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The plugin involved, if any.
    pub plugin: Option<String>,
    /// Short rule id, e.g. `phase-gate`, `analysis-only`.
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.plugin {
            Some(p) => write!(f, "{p}: {} [{}]", self.message, self.rule),
            None => write!(f, "{} [{}]", self.message, self.rule),
        }
    }
}

// ---- the file format -------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    deployment: DeploymentFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    llm: Option<LlmFile>,
    #[serde(default)]
    groups: BTreeMap<String, GroupFile>,
    #[serde(default)]
    plugins: BTreeMap<String, PluginFile>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretFile>,
    #[serde(default)]
    channels: BTreeMap<String, ChannelFile>,
    #[serde(default)]
    knowledge: BTreeMap<String, KnowledgeFile>,
    #[serde(default)]
    approvers: BTreeMap<String, IdentityFile>,
    #[serde(default)]
    identities: BTreeMap<String, IdentityFile>,
    #[serde(default)]
    agents: BTreeMap<String, AgentFile>,
    #[serde(default)]
    oidc: Option<OidcFile>,
    #[serde(default)]
    workflows: BTreeMap<String, workflow::WorkflowFile>,
    #[serde(default)]
    quotas: BTreeMap<String, QuotaFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaFile {
    function: String,
    limit: u32,
    per: String,
    #[serde(default)]
    over: Option<OverQuota>,
    approval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    #[serde(default)]
    kind: Option<IdentityKind>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    oidc_subjects: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    tokens: Vec<String>,
    calls_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolFile {
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    idempotent: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcFile {
    issuer: String,
    audience: String,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    #[serde(default = "default_refresh")]
    jwks_refresh_seconds: u64,
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_leeway() -> u64 {
    30
}

fn default_refresh() -> u64 {
    60
}

/// Whether `u` is a plain-HTTP URL to a literal loopback address (a local
/// issuer or a test): anything else must be `https://`, or whoever is on
/// the path could answer the key fetch with keys of their own.
fn loopback_http(u: &str) -> bool {
    let Some(rest) = u.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The algorithms an `[oidc]` may accept: asymmetric only, so a public key
/// can never be used as an HMAC secret, and never `none`.
pub const OIDC_ALGORITHMS: [&str; 2] = ["RS256", "ES256"];

impl OidcFile {
    fn into_oidc(self, base: &Path) -> Result<Oidc, String> {
        let jwks = match (self.jwks_file, self.jwks_url) {
            (Some(f), None) => JwksSource::File(base.join(f)),
            (None, Some(u)) => {
                let ok = (u.starts_with("https://") || loopback_http(&u))
                    && u.len() <= MAX_WEBHOOK_URL
                    && !u
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '@');
                if !ok {
                    return Err(format!(
                        "oidc: jwks_url {u:?} is not an https:// URL (no credentials in it): the keys decide who may sign in, so they are fetched over TLS; plain http:// only to a literal loopback address (127.0.0.1, [::1])"
                    ));
                }
                JwksSource::Url(u)
            }
            _ => return Err("oidc: give exactly one of jwks_file or jwks_url".into()),
        };
        if self.issuer.is_empty() || self.audience.is_empty() || self.subject_claim.is_empty() {
            return Err("oidc: issuer, audience and subject_claim must not be empty".into());
        }
        if self.algorithms.is_empty() {
            return Err("oidc: algorithms must name at least one of RS256, ES256".into());
        }
        if let Some(a) = self
            .algorithms
            .iter()
            .find(|a| !OIDC_ALGORITHMS.contains(&a.as_str()))
        {
            return Err(format!(
                "oidc: algorithm {a:?} is not accepted: only RS256 and ES256 (never none, never an HMAC with a public key)"
            ));
        }
        if self.jwks_refresh_seconds == 0 {
            return Err("oidc: jwks_refresh_seconds must be at least 1 (it bounds how often an unknown kid makes the host re-read the keys)".into());
        }
        if self.leeway_seconds > 300 {
            return Err("oidc: leeway_seconds must be at most 300".into());
        }
        Ok(Oidc {
            issuer: self.issuer,
            audience: self.audience,
            jwks,
            subject_claim: self.subject_claim,
            algorithms: self.algorithms,
            leeway_secs: self.leeway_seconds,
            refresh_secs: self.jwks_refresh_seconds,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    name: String,
    phase: Phase,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    max_steps_in_flight: Option<u32>,
    run_lease: Option<String>,
    pattern: Option<String>,
    backend: Option<BackendFile>,
}

/// A run lease's default life (`[deployment] run_lease`).
pub const DEFAULT_RUN_LEASE_MS: u64 = 60_000;

/// The shortest and longest run lease a deployment may set: shorter
/// than 3 s a stalled disk or a GC-like pause loses runs to other nodes
/// for nothing; longer than 10 min a dead node's runs wait too long.
const RUN_LEASE_RANGE_MS: std::ops::RangeInclusive<u64> = 3_000..=600_000;

/// `[deployment] backend` as written: a string or `{ secret = "NAME" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BackendFile {
    Url(String),
    Secret { secret: String },
}

/// The instance pool's default size (`[deployment] max_steps_in_flight`).
pub const DEFAULT_MAX_STEPS_IN_FLIGHT: u32 = 500;

/// The largest pool a deployment may ask for: each slot reserves address
/// space for a plugin's largest memory and a fiber stack up front.
pub const MAX_STEPS_IN_FLIGHT: u32 = 16_384;

fn default_data_dir() -> PathBuf {
    PathBuf::from(".charter")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    description: Option<String>,
    capabilities: Vec<String>,
    #[serde(default = "default_phase")]
    phase: Phase,
    effect: Option<Effect>,
    #[serde(default)]
    allow_hosts: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    knowledge: Vec<String>,
    policies: Option<String>,
    policy_file: Option<PathBuf>,
    approver_role: Option<String>,
    #[serde(default = "one")]
    approvals: u32,
    #[serde(default = "default_expiry")]
    proposal_expiry_hours: u64,
    #[serde(default)]
    proposal_expiry_seconds: Option<u64>,
}

fn one() -> u32 {
    1
}

fn default_expiry() -> u64 {
    72
}

fn default_phase() -> Phase {
    Phase::DETERMINISTIC
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginFile {
    path: PathBuf,
    digest: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    wasi: WasiMode,
    granted_by: Option<String>,
    reason: Option<String>,
    owner: Option<String>,
    #[serde(default)]
    provides: Vec<String>,
    /// Effects of the provided functions (`"iface.func" = "read"`).
    #[serde(default)]
    effects: BTreeMap<String, Effect>,
    /// Exported interfaces served to agents as tools.
    #[serde(default)]
    tools: BTreeMap<String, ToolFile>,
    /// WIT describing the tools (doc comments become descriptions).
    wit: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    webhook: Option<String>,
    #[serde(default)]
    inbox: bool,
}

/// The longest webhook URL accepted.
const MAX_WEBHOOK_URL: usize = 2048;

impl ChannelFile {
    fn into_channel(self, name: &str) -> Result<Channel, String> {
        match (self.webhook, self.inbox) {
            (None, true) => Ok(Channel::Inbox),
            (Some(url), false) => {
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
                let ok = url.len() <= MAX_WEBHOOK_URL
                    && host.is_some_and(|h| !h.is_empty() && !h.contains('@'))
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control());
                if ok {
                    Ok(Channel::Webhook(url))
                } else {
                    Err(format!(
                        "channel {name}: webhook {url:?} is not an http:// or https:// URL with a host (no credentials in it, at most {MAX_WEBHOOK_URL} bytes)"
                    ))
                }
            }
            _ => Err(format!(
                "channel {name}: give exactly one of `webhook = \"https://...\"` or `inbox = true`"
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnowledgeFile {
    dir: PathBuf,
    embeddings: Option<EmbeddingsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsFile {
    base_url: String,
    model: String,
    api_key_secret: Option<String>,
    timeout_ms: Option<u64>,
}

impl EmbeddingsFile {
    /// Checked: an http(s) URL with a host and no credentials; a key only
    /// over TLS or to loopback; a declared secret; a bounded timeout.
    fn into_embeddings(
        self,
        name: &str,
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<KnowledgeEmbeddings, String> {
        let url = self.base_url;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
        let ok = url.len() <= MAX_WEBHOOK_URL
            && host.is_some_and(|h| !h.is_empty() && !h.contains('@'))
            && !url.contains(['?', '#'])
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(format!(
                "knowledge {name}: embeddings base_url is not an http:// or https:// URL with a host (no credentials, query or fragment in it; put a key in api_key_secret), e.g. \"http://127.0.0.1:8000/v1\" (the refused value is not shown: it may hold a credential)"
            ));
        }
        if self.model.trim().is_empty() || self.model.len() > 256 {
            return Err(format!(
                "knowledge {name}: embeddings needs `model`, the endpoint's model name (at most 256 bytes)"
            ));
        }
        if let Some(s) = &self.api_key_secret {
            if !secrets.contains_key(s) {
                return Err(format!(
                    "knowledge {name}: embeddings api_key_secret {s:?} is not declared under [secrets]"
                ));
            }
            if !url.starts_with("https://") && !loopback_http(&url) {
                return Err(format!(
                    "knowledge {name}: embeddings base_url {url:?} would send the API key in clear: use https://, or plain http:// only to a literal loopback address (127.0.0.1, [::1])"
                ));
            }
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_EMBEDDINGS_TIMEOUT_MS);
        if !(1..=MAX_EMBEDDINGS_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(format!(
                "knowledge {name}: embeddings timeout_ms {timeout_ms} is out of range (1 to {MAX_EMBEDDINGS_TIMEOUT_MS})"
            ));
        }
        Ok(KnowledgeEmbeddings {
            base_url: url.trim_end_matches('/').to_string(),
            model: self.model,
            api_key_secret: self.api_key_secret,
            timeout_ms,
        })
    }
}

impl KnowledgeFile {
    /// `dir`, if it names a place inside the deployment's directory:
    /// relative, no `..`, no root or prefix (checked on the text; the
    /// runtime checks the real path when it reads the corpus).
    fn confined_dir(&self, name: &str) -> Result<PathBuf, String> {
        use std::path::Component;
        let inside = !self.dir.as_os_str().is_empty()
            && self
                .dir
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if inside {
            Ok(self.dir.clone())
        } else {
            Err(format!(
                "knowledge {name}: dir {:?} escapes the deployment directory (give a relative path with no `..`, inside the directory of charter.toml)",
                self.dir
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    env: Option<String>,
    file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmFile {
    provider: String,
    base_url: Option<String>,
    model: Option<String>,
    api_key_secret: Option<String>,
}

impl Deployment {
    /// Read and parse `path`. Relative paths inside are resolved against the
    /// file's directory. `catalog` names the host's own functions.
    pub fn load(path: &Path, catalog: &'static dyn HostCatalog) -> Result<Deployment, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Deployment::parse(&text, &abs, catalog)
    }

    /// Parse `text` as if read from `source` (used to resolve relative paths
    /// and to name the file in errors).
    /// `catalog` names the functions the host implements and their effects.
    pub fn parse(
        text: &str,
        source: &Path,
        catalog: &'static dyn HostCatalog,
    ) -> Result<Deployment, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_owned(),
            message: describe_toml_error(&e, text),
        })?;
        let base = source.parent().unwrap_or(Path::new(".")).to_owned();
        let invalid = |message: String| ConfigError::Invalid {
            path: source.to_owned(),
            message,
        };

        let limits = file.limits.apply(Limits::default());
        let mut groups = BTreeMap::new();
        for (name, g) in file.groups {
            check_name("group", &name).map_err(&invalid)?;
            if g.capabilities.is_empty() {
                return Err(invalid(format!(
                    "group {name}: `capabilities` is empty; list function patterns such as \"charter:host/kv.get\""
                )));
            }
            let capabilities = g
                .capabilities
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("group {name}: {e}")))?;
            let grants_http = capabilities
                .iter()
                .any(|p| p.interface_is("wasi:http/outgoing-handler"));
            if !g.allow_hosts.is_empty() && !grants_http {
                return Err(invalid(format!(
                    "group {name}: `allow_hosts` only applies to a group granting wasi:http/outgoing-handler.handle"
                )));
            }
            if grants_http && g.allow_hosts.is_empty() {
                return Err(invalid(format!(
                    "group {name}: grants wasi:http but `allow_hosts` is empty; list the host[:port] authorities it may reach"
                )));
            }
            let policies = match (g.policies, g.policy_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "group {name}: give `policies` or `policy_file`, not both"
                    )));
                }
                (Some(text), None) => Some(text),
                (None, Some(file)) => {
                    let path = base.join(&file);
                    Some(std::fs::read_to_string(&path).map_err(|e| {
                        invalid(format!(
                            "group {name}: cannot read policy_file {}: {e}",
                            path.display()
                        ))
                    })?)
                }
                (None, None) => None,
            };
            if g.approvals == 0 {
                return Err(invalid(format!(
                    "group {name}: `approvals` must be at least 1"
                )));
            }
            groups.insert(
                name.clone(),
                ActionGroup {
                    policies,
                    approver_role: g.approver_role,
                    approvals: g.approvals,
                    proposal_expiry_hours: g.proposal_expiry_hours,
                    proposal_expiry_ms: g
                        .proposal_expiry_seconds
                        .map(|s| s.saturating_mul(1000))
                        .unwrap_or(g.proposal_expiry_hours.saturating_mul(3_600_000)),
                    name,
                    description: g.description,
                    capabilities,
                    phase: g.phase,
                    // Derived below, once the connectors' declarations are known.
                    effect: g.effect.unwrap_or_default(),
                    declared_effect: g.effect,
                    allow_hosts: g
                        .allow_hosts
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                    secrets: g.secrets,
                    channels: g.channels,
                    knowledge: g.knowledge,
                },
            );
        }

        let mut secrets = BTreeMap::new();
        for (name, s) in file.secrets {
            let src = match (s.env, s.file) {
                (Some(var), None) => SecretSource::Env(var),
                (None, Some(p)) => SecretSource::File(base.join(p)),
                _ => {
                    return Err(invalid(format!(
                        "secret {name}: give exactly one of `env = \"VAR\"` or `file = \"path\"`"
                    )));
                }
            };
            secrets.insert(name, src);
        }

        let mut channels = BTreeMap::new();
        for (name, c) in file.channels {
            check_name("channel", &name).map_err(&invalid)?;
            channels.insert(name.clone(), c.into_channel(&name).map_err(&invalid)?);
        }

        let mut knowledge = BTreeMap::new();
        for (name, k) in file.knowledge {
            check_name("knowledge corpus", &name).map_err(&invalid)?;
            let dir = k.confined_dir(&name).map_err(&invalid)?;
            let embeddings = k
                .embeddings
                .map(|e| e.into_embeddings(&name, &secrets))
                .transpose()
                .map_err(&invalid)?;
            knowledge.insert(
                name,
                KnowledgeCorpus {
                    dir: base.join(dir),
                    root: base.clone(),
                    embeddings,
                },
            );
        }

        let mut plugins = BTreeMap::new();
        let mut connector_effects: BTreeMap<String, Effect> = BTreeMap::new();
        for (name, mut p) in file.plugins {
            check_name("plugin", &name).map_err(&invalid)?;
            let tools = tool_access(&name, &p.tools, &file.agents).map_err(&invalid)?;
            for iface in tools.keys() {
                if !p.provides.contains(iface) {
                    p.provides.push(iface.clone());
                }
            }
            for (key, effect) in &p.effects {
                let f = Pattern::parse(key).map_err(|e| {
                    invalid(format!(
                        "plugin {name}: effects: {e}; declare \"INTERFACE.FUNCTION\" = \"read\" or \"write\""
                    ))
                })?;
                if f.version.is_some() {
                    return Err(invalid(format!(
                        "plugin {name}: effects: {key:?}: leave out the version (\"{}.{}\")",
                        f.interface,
                        f.func.as_deref().unwrap_or("*")
                    )));
                }
                if !p.provides.contains(&f.interface) {
                    return Err(invalid(format!(
                        "plugin {name}: effects: {key:?} is not a function of an interface it provides (provides: {}); only a provider declares its functions' effects",
                        if p.provides.is_empty() {
                            "nothing".to_string()
                        } else {
                            p.provides.join(", ")
                        }
                    )));
                }
                // Two providers of one interface are a violation anyway;
                // where their declarations differ, write wins.
                // Keyed as `interface.function` whichever form was written.
                let e = connector_effects.entry(f.unversioned()).or_insert(*effect);
                if *effect == Effect::Write {
                    *e = Effect::Write;
                }
            }
            if let Some(d) = &p.digest {
                let ok = d.strip_prefix("sha256:").is_some_and(|h| {
                    h.len() == 64
                        && h.bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                });
                if !ok {
                    return Err(invalid(format!(
                        "plugin {name}: digest {d:?} is not `sha256:` followed by 64 lowercase hex digits (see `charter inspect`)"
                    )));
                }
            }
            plugins.insert(
                name.clone(),
                PluginSpec {
                    path: base.join(&p.path),
                    digest: p.digest,
                    groups: p.groups,
                    limits: p.limits.apply(limits),
                    wasi: p.wasi,
                    granted_by: p.granted_by,
                    reason: p.reason,
                    owner: p.owner,
                    provides: p.provides,
                    tools,
                    wit: p.wit.map(|w| base.join(w)),
                    name,
                },
            );
        }

        // A pattern that matches no function anyone knows grants nothing:
        // a typo, refused here rather than found when a step is refused.
        let mut unknown = Vec::new();
        for g in groups.values() {
            for p in &g.capabilities {
                if let Some(m) = unknown_function(catalog, p, &plugins, text) {
                    unknown.push(format!("group {}: {m}", g.name));
                }
            }
        }
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "{}\n({PATTERN_SYNTAX})",
                unknown.join("\n")
            )));
        }

        let llm = match file.llm {
            None => LlmProvider::Offline,
            Some(l) => match l.provider.as_str() {
                "offline" => LlmProvider::Offline,
                "openai" => LlmProvider::OpenAi {
                    base_url: l.base_url.ok_or_else(|| {
                        invalid("llm: provider \"openai\" needs `base_url`, e.g. \"http://127.0.0.1:8000/v1\"".into())
                    })?,
                    model: l
                        .model
                        .ok_or_else(|| invalid("llm: provider \"openai\" needs `model`".into()))?,
                    api_key_secret: l.api_key_secret,
                },
                other => {
                    return Err(invalid(format!(
                        "llm: unknown provider {other:?}; use \"offline\" or \"openai\""
                    )));
                }
            },
        };
        if let LlmProvider::OpenAi {
            api_key_secret: Some(s),
            ..
        } = &llm
            && !secrets.contains_key(s)
        {
            return Err(invalid(format!(
                "llm: api_key_secret {s:?} is not declared under [secrets]"
            )));
        }

        let (identities, agents) =
            identities(file.approvers, file.identities, file.agents).map_err(&invalid)?;
        let oidc = file
            .oidc
            .map(|o| o.into_oidc(&base))
            .transpose()
            .map_err(&invalid)?;
        if oidc.is_none()
            && let Some(i) = identities.values().find(|i| !i.oidc_subjects.is_empty())
        {
            return Err(invalid(format!(
                "[identities.{}] oidc_subjects: no [oidc] issuer is declared",
                i.name
            )));
        }
        let approvers = identities
            .iter()
            .filter(|(_, i)| i.kind == IdentityKind::Person)
            .map(|(n, i)| (n.clone(), i.clone()))
            .collect();

        let mut workflows = BTreeMap::new();
        for (name, w) in file.workflows {
            check_name("workflow", &name).map_err(&invalid)?;
            let w = w.into_workflow(name.clone(), source).map_err(&invalid)?;
            workflows.insert(name, w);
        }
        for (name, w, path) in workflow::read_dir(&base.join("workflows")).map_err(&invalid)? {
            check_name("workflow", &name)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            if workflows.contains_key(&name) {
                return Err(invalid(format!(
                    "workflow {name} is defined both inline and in {}",
                    path.display()
                )));
            }
            let w = w
                .into_workflow(name.clone(), &path)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            workflows.insert(name, w);
        }
        let max_steps_in_flight = file
            .deployment
            .max_steps_in_flight
            .unwrap_or(DEFAULT_MAX_STEPS_IN_FLIGHT);
        if !(1..=MAX_STEPS_IN_FLIGHT).contains(&max_steps_in_flight) {
            return Err(invalid(format!(
                "deployment.max_steps_in_flight = {max_steps_in_flight}: must be 1 to {MAX_STEPS_IN_FLIGHT}"
            )));
        }

        let run_lease_ms = match &file.deployment.run_lease {
            None => DEFAULT_RUN_LEASE_MS,
            Some(t) => {
                let ms =
                    parse_window(t).map_err(|e| invalid(format!("deployment.run_lease: {e}")))?;
                if !RUN_LEASE_RANGE_MS.contains(&ms) {
                    return Err(invalid(format!(
                        "deployment.run_lease = {t:?}: must be 3s to 10m"
                    )));
                }
                ms
            }
        };

        let mut quotas = BTreeMap::new();
        for (name, q) in file.quotas {
            let q = quota(&name, q).map_err(&invalid)?;
            quota_function(&q, catalog, &plugins).map_err(&invalid)?;
            quota_approval(&q, &groups).map_err(&invalid)?;
            if let Some(other) = quotas
                .values()
                .find(|o: &&Quota| o.covers(&FunctionName::new(&q.interface, &q.function)))
            {
                return Err(invalid(format!(
                    "[quotas.{name}] and [quotas.{}] both count {}.{}: one quota per function",
                    other.name, q.interface, q.function
                )));
            }
            quotas.insert(name, q);
        }
        let backend = backend(file.deployment.backend, &secrets).map_err(&invalid)?;
        let mut d = Deployment {
            backend,
            quotas,
            connector_effects,
            host: catalog,
            workflows,
            approvers,
            identities,
            agents,
            oidc,
            name: file.deployment.name,
            phase: file.deployment.phase,
            pattern: file.deployment.pattern,
            data_dir: base.join(file.deployment.data_dir),
            max_steps_in_flight,
            run_lease_ms,
            source: source.to_owned(),
            limits,
            groups,
            plugins,
            secrets,
            channels,
            knowledge,
            llm,
        };
        let effects: Vec<(String, Effect)> = d
            .groups
            .values()
            .map(|g| {
                let derived = if d.writes_of(g).is_empty() {
                    Effect::Read
                } else {
                    Effect::Write
                };
                let effect = if g.declared_effect == Some(Effect::Write) {
                    Effect::Write
                } else {
                    derived
                };
                (g.name.clone(), effect)
            })
            .collect();
        for (name, effect) in effects {
            if let Some(g) = d.groups.get_mut(&name) {
                g.effect = effect;
            }
        }
        Ok(d)
    }

    /// The effect of `func` as the host knows it: the host's catalog for
    /// its own functions, else the provider's declaration for a connector
    /// function; anything undeclared (or unknown) writes.
    pub fn function_effect(&self, func: &FunctionName) -> Effect {
        if let Some(e) = self.host.host_function_effect(func) {
            return e;
        }
        if host_interface(&func.interface) {
            return Effect::Write;
        }
        self.connector_effect(&func.interface, Some(&func.func))
    }

    /// A connector function's declared effect (`None`: every function of
    /// the interface, as a wildcard grants them).
    fn connector_effect(&self, interface: &str, func: Option<&str>) -> Effect {
        let all = self
            .connector_effects
            .get(&format!("{interface}.*"))
            .copied();
        match func {
            Some(f) => self
                .connector_effects
                .get(&format!("{interface}.{f}"))
                .copied()
                .or(all)
                .unwrap_or(Effect::Write),
            // A wildcard reads only if the provider declares every function
            // read, and none of them write.
            None => {
                let prefix = format!("{interface}.");
                let some_write = self
                    .connector_effects
                    .iter()
                    .any(|(k, e)| k.starts_with(&prefix) && *e == Effect::Write);
                if all == Some(Effect::Read) && !some_write {
                    Effect::Read
                } else {
                    Effect::Write
                }
            }
        }
    }

    /// The functions (host functions expanded from patterns; connector
    /// patterns as written) that `group` grants and that write. Empty for
    /// a read-only group.
    pub fn writes_of(&self, group: &ActionGroup) -> Vec<String> {
        let mut out = Vec::new();
        for p in &group.capabilities {
            if host_interface(&p.interface) {
                let known: Vec<_> = self
                    .host
                    .host_functions()
                    .iter()
                    .filter(|(i, n, _)| {
                        *i == p.interface && p.func.as_deref().is_none_or(|f| f == *n)
                    })
                    .collect();
                // The host links nothing else of charter:host; the rest of
                // wasi:http is not known to be read-only.
                if known.is_empty() && !p.interface.starts_with("charter:host/") {
                    out.push(p.to_string());
                }
                for (i, n, e) in known {
                    if *e == Effect::Write {
                        out.push(format!("{i}.{n}"));
                    }
                }
            } else if self.connector_effect(&p.interface, p.func.as_deref()) == Effect::Write {
                out.push(p.to_string());
            }
        }
        out.dedup();
        out
    }

    /// The AI functions (`AI_INTERFACES`) a group grants, as written.
    pub fn ai_grants_of(group: &ActionGroup) -> Vec<String> {
        group
            .capabilities
            .iter()
            .filter(|p| AI_INTERFACES.contains(&p.interface.as_str()))
            .map(|p| p.to_string())
            .collect()
    }

    /// A group labelled `effect = "read"` that grants a function that
    /// writes: the message naming the group, the function and the fix.
    fn mislabel(&self, g: &ActionGroup) -> Option<String> {
        if g.declared_effect != Some(Effect::Read) || g.effect != Effect::Write {
            return None;
        }
        let writes = self.writes_of(g);
        Some(format!(
            "group {} is labelled effect \"read\" but grants {}, which {} (a function's effect is the host's or its provider's, not the group's); label the group effect = \"write\" (or leave `effect` out to derive it), or grant only read functions",
            g.name,
            writes.join(", "),
            if writes.len() == 1 { "writes" } else { "write" },
        ))
    }

    /// Every governance rule this deployment breaks, independent of the
    /// plugins' bytes: unknown groups, phase gates, groups labelled read
    /// that grant writes, undeclared secrets.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        // A mislabelled group nobody is granted is still wrong; a granted
        // one is reported per plugin (it refuses that plugin).
        for g in self.groups.values() {
            let granted = self.plugins.values().any(|p| p.groups.contains(&g.name));
            if !granted && let Some(message) = self.mislabel(g) {
                out.push(Violation {
                    plugin: None,
                    rule: "mislabelled-effect",
                    message,
                });
            }
        }
        if self.phase == Phase::DETERMINISTIC {
            for name in self.agents.keys() {
                out.push(Violation {
                    plugin: None,
                    rule: "deterministic",
                    message: format!(
                        "[agents.{name}] declares an AI agent, but phase 1 (deterministic) permits no AI: remove it, or raise [deployment].phase to 2 or more"
                    ),
                });
            }
            // An embeddings model ranks what a step reads: a model's
            // judgement, so AI, even though no `llm` function is granted.
            for (name, k) in &self.knowledge {
                if k.embeddings.is_some() {
                    out.push(Violation {
                        plugin: None,
                        rule: "deterministic",
                        message: format!(
                            "[knowledge.{name}] ranks its passages with an embeddings model, but phase 1 (deterministic) permits no AI: remove `embeddings` (the default BM25 ranking is deterministic), or raise [deployment].phase to 2 or more"
                        ),
                    });
                }
            }
        }
        let mut providers: BTreeMap<&str, &str> = BTreeMap::new();
        for (pname, p) in &self.plugins {
            for iface in &p.provides {
                if let Some(other) = providers.insert(iface, pname) {
                    out.push(Violation {
                        plugin: Some(pname.clone()),
                        rule: "one-provider",
                        message: format!(
                            "{iface} is already provided by {other}; one connector per interface"
                        ),
                    });
                }
            }
        }
        for (pname, p) in &self.plugins {
            let v = |rule, message| Violation {
                plugin: Some(pname.clone()),
                rule,
                message,
            };
            for gname in &p.groups {
                let Some(g) = self.groups.get(gname) else {
                    let known: Vec<_> = self.groups.keys().map(String::as_str).collect();
                    out.push(v(
                        "unknown-group",
                        format!(
                            "group {gname:?} is not defined (defined groups: {})",
                            known.join(", ")
                        ),
                    ));
                    continue;
                };
                if g.phase > self.phase {
                    out.push(v(
                        "phase-gate",
                        format!(
                            "group {gname} requires phase {} but the deployment is at phase {}; raise [deployment].phase or remove the grant",
                            g.phase, self.phase
                        ),
                    ));
                }
                if let Some(message) = self.mislabel(g) {
                    out.push(v("mislabelled-effect", message));
                }
                let ai = Self::ai_grants_of(g);
                if self.phase == Phase::DETERMINISTIC && !ai.is_empty() {
                    out.push(v(
                        "deterministic",
                        format!(
                            "group {gname} grants {}, but phase 1 (deterministic) permits no AI: remove the grant, or raise [deployment].phase to 2 or more",
                            ai.join(", ")
                        ),
                    ));
                }
                if self.phase == Phase::ANALYSIS_ONLY && g.effect == Effect::Write {
                    let why = match g.declared_effect {
                        Some(Effect::Write) => String::new(),
                        _ => format!(" (it grants {})", self.writes_of(g).join(", ")),
                    };
                    out.push(v(
                        "analysis-only",
                        format!(
                            "group {gname} has effect \"write\"{why}, but phase 3 (analysis only) permits no writes; grant a read-only group instead"
                        ),
                    ));
                }
                for s in &g.secrets {
                    if !self.secrets.contains_key(s) {
                        out.push(v(
                            "unknown-secret",
                            format!("group {gname} grants secret {s:?}, which is not declared under [secrets]"),
                        ));
                    }
                }
                for c in &g.channels {
                    if !self.channels.contains_key(c) {
                        out.push(v(
                            "unknown-channel",
                            format!("group {gname} grants channel {c:?}, which is not declared under [channels]"),
                        ));
                    }
                }
                for k in &g.knowledge {
                    if !self.knowledge.contains_key(k) {
                        out.push(v(
                            "unknown-knowledge",
                            format!("group {gname} grants knowledge corpus {k:?}, which is not declared under [knowledge]"),
                        ));
                    }
                }
            }
        }
        out
    }

    /// The groups granted to `plugin` (unknown names skipped).
    pub fn granted_groups<'a>(
        &'a self,
        plugin: &'a PluginSpec,
    ) -> impl Iterator<Item = &'a ActionGroup> + 'a {
        plugin.groups.iter().filter_map(|g| self.groups.get(g))
    }

    /// Every problem in the deployment's workflows (`charter check`).
    pub fn workflow_problems(&self) -> Vec<Violation> {
        let plugins: BTreeSet<&str> = self.plugins.keys().map(String::as_str).collect();
        let roles: BTreeSet<&str> = self
            .approvers
            .values()
            .flat_map(|a| a.roles.iter().map(String::as_str))
            .collect();
        let mut out = Vec::new();
        let mut hooks = BTreeMap::new();
        for w in self.workflows.values() {
            let mut problems = w.problems(&plugins);
            let mut wanted: Vec<&str> = vec![w.escalate_to.as_str()];
            for s in &w.steps {
                if let OnFailure::Escalate(Some(r)) = &s.on_failure {
                    wanted.push(r);
                }
            }
            problems.extend(self.trigger_problems(w, &mut hooks));
            for r in wanted {
                if !roles.contains(r) {
                    problems.push(format!(
                        "workflow {}: escalations go to role {r:?}, which no approver holds; add it to an [approvers.NAME] roles list",
                        w.name
                    ));
                }
            }
            out.extend(problems.into_iter().map(|message| Violation {
                plugin: None,
                rule: "workflow",
                message,
            }));
        }
        out
    }

    /// What a workflow's triggers name that the file does not declare: a
    /// hook's secret and identities, and one hook name for two workflows.
    fn trigger_problems<'a>(
        &self,
        w: &'a Workflow,
        hooks: &mut BTreeMap<&'a str, &'a str>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let Some(h) = &w.triggers.webhook else {
            return out;
        };
        let at = format!("workflow {}: triggers.webhook", w.name);
        if let Some(s) = &h.secret
            && !self.secrets.contains_key(s)
        {
            out.push(format!(
                "{at}: secret {s:?} is not declared under [secrets]"
            ));
        }
        for i in &h.identities {
            if !self.identities.contains_key(i) {
                out.push(format!(
                    "{at}: identity {i:?} is not declared under [identities]"
                ));
            }
        }
        if let Some(other) = hooks.insert(h.name.as_str(), w.name.as_str()) {
            out.push(format!(
                "{at}: hook name {:?} is also workflow {other}'s; give one a `name`",
                h.name
            ));
        }
        out
    }

    /// The groups (of all defined) that would grant `func`.
    pub fn groups_granting(&self, func: &FunctionName) -> Vec<&str> {
        self.groups
            .values()
            .filter(|g| g.grants(func))
            .map(|g| g.name.as_str())
            .collect()
    }

    /// The plugin providing `interface` (no version), if any.
    pub fn provider(&self, interface: &str) -> Option<&PluginSpec> {
        self.plugins
            .values()
            .find(|p| p.provides.iter().any(|i| i == interface))
    }

    /// Secrets the plugin's groups let it read.
    pub fn granted_secrets(&self, plugin: &PluginSpec) -> BTreeSet<String> {
        self.granted_groups(plugin)
            .flat_map(|g| g.secrets.iter().cloned())
            .collect()
    }

    /// Notification channels the plugin's groups let it send to.
    pub fn granted_channels(&self, plugin: &PluginSpec) -> BTreeSet<String> {
        self.granted_groups(plugin)
            .flat_map(|g| g.channels.iter().cloned())
            .collect()
    }

    /// Knowledge corpora the plugin's groups let it search.
    pub fn granted_knowledge(&self, plugin: &PluginSpec) -> BTreeSet<String> {
        self.granted_groups(plugin)
            .flat_map(|g| g.knowledge.iter().cloned())
            .collect()
    }

    /// HTTP authorities the plugin's groups let it reach.
    pub fn allowed_hosts(&self, plugin: &PluginSpec) -> BTreeSet<String> {
        self.granted_groups(plugin)
            .flat_map(|g| g.allow_hosts.iter().cloned())
            .collect()
    }
}

/// Why `p` matches no function anyone knows, or `None` if it matches one:
/// a function of the host's catalog (`catalog`, any
/// version) or any function of an interface a plugin `provides` (the
/// connector's component, not this file, knows its functions). The message
/// names the pattern (and its line in `text`) and the closest known
/// function; the caller adds the accepted syntax.
fn unknown_function(
    catalog: &dyn HostCatalog,
    p: &Pattern,
    plugins: &BTreeMap<String, PluginSpec>,
    text: &str,
) -> Option<String> {
    let provided: BTreeSet<&str> = plugins
        .values()
        .flat_map(|s| s.provides.iter().map(|i| pattern::split_version(i).0))
        .collect();
    let host = p.interface.starts_with("charter:host/") || p.interface.starts_with("wasi:");
    if host
        && catalog
            .host_functions()
            .iter()
            .any(|(i, n, _)| *i == p.interface && p.func.as_deref().is_none_or(|f| f == *n))
    {
        return None;
    }
    if !host && provided.contains(p.interface.as_str()) {
        return None;
    }
    // What it might have meant: same shape (a function, or `.*`).
    let mut known: Vec<String> = match &p.func {
        Some(_) => catalog
            .host_functions()
            .iter()
            .map(|(i, n, _)| format!("{i}.{n}"))
            .collect(),
        None => catalog
            .host_functions()
            .iter()
            .map(|(i, _, _)| format!("{i}.*"))
            .collect(),
    };
    known.extend(
        provided
            .iter()
            .map(|i| format!("{i}.{}", p.func.as_deref().unwrap_or("*"))),
    );
    known.dedup();
    let wanted = p.unversioned();
    // Nearest first within the same `namespace:package`, then anywhere.
    let package = |s: &str| s.split('/').next().unwrap_or_default().to_string();
    let closest = known
        .iter()
        .map(|k| {
            let d = edit_distance(&wanted, k);
            ((package(k) != package(&wanted), d), d, k)
        })
        .min()
        .map(|(_, d, k)| (d, k.clone()));
    let line = ['"', '\'']
        .iter()
        .find_map(|q| text.find(&format!("{q}{p}{q}")))
        .map(|at| format!(" (line {})", text[..at].matches('\n').count() + 1))
        .unwrap_or_default();
    let mut m = format!("capability pattern \"{p}\"{line} matches no known function");
    if host {
        if let Some((_, k)) = closest {
            m.push_str(&format!("; did you mean {k}?"));
        }
        if p.interface.starts_with("wasi:") && p.interface != "wasi:http/outgoing-handler" {
            m.push_str(" (groups grant only wasi:http/outgoing-handler.handle of WASI; the rest of wasi:http comes with it, and the inert WASI baseline is linked without a grant)");
        }
    } else {
        m.push_str(&format!(
            ": no plugin provides {}{}",
            p.interface,
            if provided.is_empty() {
                String::new()
            } else {
                format!(
                    " (provided: {})",
                    provided.iter().copied().collect::<Vec<_>>().join(", ")
                )
            }
        ));
        // Only a near miss is worth naming: any function is a known one.
        if let Some((d, k)) = closest
            && d <= wanted.chars().count() / 4
        {
            m.push_str(&format!("; did you mean {k}?"));
        }
        m.push_str(&format!(
            "; if a connector exports it, add provides = [\"{}\"] to the connector's [plugins.NAME] entry",
            p.interface
        ));
    }
    Some(m)
}

/// Every identity by name, and the agents among them.
type IdentitiesAndAgents = (BTreeMap<String, Identity>, BTreeMap<String, Agent>);

/// `[approvers.NAME]` (people, the older form) and `[identities.NAME]`
/// merged into one map; a name in both, a person declared a service in
/// `[approvers]`, or a malformed token hash refuses the file.
fn identities(
    approvers: BTreeMap<String, IdentityFile>,
    declared: BTreeMap<String, IdentityFile>,
    agent_files: BTreeMap<String, AgentFile>,
) -> Result<IdentitiesAndAgents, String> {
    let mut out = BTreeMap::new();
    let mut agents = BTreeMap::new();
    let mut declared = declared;
    for (name, f) in &declared {
        if f.kind == Some(IdentityKind::Agent) {
            return Err(format!(
                "[identities.{name}] declares kind \"agent\": declare agents under [agents.{name}] (roles, tokens, calls_per_minute)"
            ));
        }
    }
    for (name, a) in agent_files {
        check_name("agent", &name)?;
        if declared.contains_key(&name) || approvers.contains_key(&name) {
            return Err(format!(
                "{name} is declared both as an agent ([agents.{name}]) and as a person or service account; one name, one identity"
            ));
        }
        let calls_per_minute = a.calls_per_minute.unwrap_or(DEFAULT_AGENT_CALLS_PER_MINUTE);
        if !(1..=100_000).contains(&calls_per_minute) {
            return Err(format!(
                "[agents.{name}] calls_per_minute = {calls_per_minute}: must be 1 to 100000 (leave it out for {DEFAULT_AGENT_CALLS_PER_MINUTE})"
            ));
        }
        agents.insert(
            name.clone(),
            Agent {
                name: name.clone(),
                roles: a.roles.clone(),
                calls_per_minute,
            },
        );
        declared.insert(
            name,
            IdentityFile {
                kind: Some(IdentityKind::Agent),
                roles: a.roles,
                tokens: a.tokens,
                oidc_subjects: vec![],
            },
        );
    }
    let tables = [("approvers", approvers), ("identities", declared)];
    for (table, entries) in tables {
        for (name, f) in entries {
            let table = if f.kind == Some(IdentityKind::Agent) {
                "agents"
            } else {
                table
            };
            check_name("identity", &name)?;
            if out.contains_key(&name) {
                return Err(format!(
                    "{name} is declared in both [approvers.{name}] and [identities.{name}]; keep one"
                ));
            }
            let kind = f.kind.unwrap_or(IdentityKind::Person);
            if table == "approvers" && kind != IdentityKind::Person {
                return Err(format!(
                    "[approvers.{name}] declares kind {:?}: approvers are people; declare a service account under [identities.{name}]",
                    kind.as_str()
                ));
            }
            let tokens = f
                .tokens
                .iter()
                .map(|t| TokenHash::parse(t).map_err(|e| format!("[{table}.{name}] tokens: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let holder = |h: &TokenHash| {
                let mine = tokens.iter().filter(|t| *t == h).count() > 1;
                let other = out.values().find(|i: &&Identity| i.tokens.contains(h));
                mine.then(|| name.clone())
                    .or_else(|| other.map(|i| i.name.clone()))
            };
            if let Some(other) = tokens.iter().find_map(holder) {
                return Err(format!(
                    "[{table}.{name}] tokens: a hash is declared twice (also by {other}); one token proves one identity"
                ));
            }
            // One subject proves one identity, as one token does.
            for s in &f.oidc_subjects {
                let other = out
                    .values()
                    .find(|i: &&Identity| i.oidc_subjects.contains(s));
                if s.is_empty() || s.len() > 255 {
                    return Err(format!(
                        "[{table}.{name}] oidc_subjects: a subject is 1 to 255 bytes"
                    ));
                }
                let twice = f.oidc_subjects.iter().filter(|x| *x == s).count() > 1;
                if let Some(o) = other
                    .map(|i| i.name.clone())
                    .or(twice.then(|| name.clone()))
                {
                    return Err(format!(
                        "[{table}.{name}] oidc_subjects: {s:?} is declared twice (also by {o}); one subject proves one identity"
                    ));
                }
            }
            out.insert(
                name.clone(),
                Identity {
                    name,
                    kind,
                    roles: f.roles,
                    tokens,
                    oidc_subjects: f.oidc_subjects,
                },
            );
        }
    }
    Ok((out, agents))
}

/// `[plugins.NAME.tools."INTERFACE"]`: which agents (or roles) may see
/// the interface's functions as tools. Every agent named must be declared;
/// an entry no agent could ever see is a mistake.
fn tool_access(
    plugin: &str,
    tools: &BTreeMap<String, ToolFile>,
    agents: &BTreeMap<String, AgentFile>,
) -> Result<BTreeMap<String, ToolAccess>, String> {
    let mut out = BTreeMap::new();
    for (iface, t) in tools {
        let at = format!("[plugins.{plugin}.tools.\"{iface}\"]");
        let bare = pattern::split_version(iface).0;
        if bare != iface.as_str() || iface.is_empty() || iface.contains('#') || iface.contains('.')
        {
            return Err(format!(
                "{at}: name an exported interface without version or function, e.g. \"acme:shop/orders\""
            ));
        }
        if t.agents.is_empty() && t.roles.is_empty() {
            return Err(format!(
                "{at}: no agent may see these tools; give agents = [\"NAME\"] and/or roles = [\"ROLE\"] of [agents.NAME]"
            ));
        }
        for a in &t.agents {
            if !agents.contains_key(a) {
                let known: Vec<&str> = agents.keys().map(String::as_str).collect();
                return Err(format!(
                    "{at}: agent {a:?} is not declared; add [agents.{a}] (declared agents: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        out.insert(
            iface.clone(),
            ToolAccess {
                agents: t.agents.clone(),
                roles: t.roles.clone(),
                idempotent: t.idempotent.clone(),
            },
        );
    }
    Ok(out)
}

fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?} must be lowercase letters, digits, '-' or '_'"
        ))
    }
}

/// toml's messages already name the key; add `line N` in the form
/// reviewers grep for.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            // A backend URL may hold a password: its line is not quoted.
            if snippet.contains("://") && snippet.contains('@') {
                return format!(
                    "line {line}: {msg} (the line is not shown: it may hold a password)"
                );
            }
            format!("line {line}: {msg} (at `{snippet}`)")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Deployment, ConfigError> {
        Deployment::parse(s, Path::new("/x/charter.toml"), &TEST_CATALOG)
    }

    /// A host catalog for this crate's tests (the runtime supplies the
    /// real one, built from its capabilities; it is tested there against
    /// these rules).
    #[derive(Debug)]
    struct TestCatalog;
    static TEST_CATALOG: TestCatalog = TestCatalog;
    impl HostCatalog for TestCatalog {
        fn host_functions(&self) -> &[(&'static str, &'static str, Effect)] {
            &[
                ("charter:host/log", "write", Effect::Read),
                ("charter:host/kv", "get", Effect::Read),
                ("charter:host/kv", "set", Effect::Write),
                ("charter:host/kv", "delete", Effect::Write),
                ("charter:host/kv", "list-keys", Effect::Read),
                ("charter:host/secrets", "get", Effect::Read),
                ("charter:host/llm", "complete", Effect::Read),
                ("charter:host/llm", "classify", Effect::Read),
                ("charter:host/explain", "rationale", Effect::Read),
                ("charter:host/notify", "send", Effect::Write),
                ("wasi:http/outgoing-handler", "handle", Effect::Write),
            ]
        }
        fn host_voice(&self, f: &FunctionName) -> bool {
            matches!(
                (f.interface.as_str(), f.func.as_str()),
                ("charter:host/log", "write") | ("charter:host/explain", "rationale")
            )
        }
    }

    const BASE: &str = r#"
[deployment]
name = "t"
phase = 3

[groups.kv-write]
capabilities = ["charter:host/kv.set"]
effect = "write"

[groups.llm]
capabilities = ["charter:host/llm.*"]
phase = 4

[plugins.p]
path = "p.wasm"
groups = ["kv-write", "llm"]
"#;

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[deployment]\nname = \"x\"\nphase = 1\ncolour = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn phase_out_of_range_is_an_error() {
        let err = parse("[deployment]\nname = \"x\"\nphase = 6\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("phase must be 1 to 5"), "{err}");
    }

    /// Phase 1 is deterministic: an `llm` grant is refused whatever the
    /// group's own `phase` says (it defaults to 1), and so is an agent;
    /// from phase 2 on the same grant is fine.
    #[test]
    fn phase_1_refuses_any_ai() {
        let groups = "[groups.sneaky]\ncapabilities = [\"charter:host/log.write\", \"charter:host/llm.classify\"]\nphase = 1\n[groups.all]\ncapabilities = [\"charter:host/llm.*\"]\n[plugins.p]\npath = \"p.wasm\"\ngroups = [\"sneaky\", \"all\"]\n";
        let v = dep(1, groups).violations();
        let rules: Vec<_> = v.iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec!["deterministic", "deterministic"], "{v:?}");
        assert!(
            v[0].to_string().contains(
                "grants charter:host/llm.classify, but phase 1 (deterministic) permits no AI"
            ),
            "{}",
            v[0]
        );
        assert!(v[1].to_string().contains("charter:host/llm.*"), "{}", v[1]);
        assert!(dep(2, groups).violations().is_empty());
        // Defined but granted to nobody: nothing is granted, nothing refused.
        let unused = "[groups.all]\ncapabilities = [\"charter:host/llm.*\"]\n";
        assert!(dep(1, unused).violations().is_empty());
        let agent = "[agents.copilot]\nroles = [\"r\"]\n";
        let v = dep(1, agent).violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].to_string()
                .contains("[agents.copilot] declares an AI agent"),
            "{}",
            v[0]
        );
        assert!(dep(2, agent).violations().is_empty());
    }

    /// `[quotas.NAME]`: one function, a bounded limit and window, one
    /// quota per function; a quota over a function nobody provides is a
    /// violation.
    #[test]
    fn quotas_parse_and_refuse_nonsense() {
        let ok = "[plugins.edr]\npath = \"e.wasm\"\nprovides = [\"acme:edr/actions\"]\n[quotas.isolations]\nfunction = \"acme:edr/actions.isolate-host\"\nlimit = 3\nper = \"1h\"\napproval = \"soc\"\n";
        let d = dep(4, ok);
        let q = &d.quotas["isolations"];
        assert_eq!(
            (q.interface.as_str(), q.function.as_str()),
            ("acme:edr/actions", "isolate-host")
        );
        assert_eq!(
            (q.limit, q.per_ms, q.over),
            (3, 3_600_000, OverQuota::Propose)
        );
        assert_eq!(q.approval.as_deref(), Some("soc"));
        assert!(q.covers(&FunctionName::new("acme:edr/actions@0.2.0", "isolate-host")));
        assert!(!q.covers(&FunctionName::new("acme:edr/actions@0.2.0", "block-ip")));
        assert!(d.violations().is_empty(), "{:?}", d.violations());
        let bad = |q: &str| {
            parse(&format!("[deployment]\nname = \"t\"\nphase = 4\n[plugins.edr]\npath = \"e.wasm\"\nprovides = [\"acme:edr/actions\"]\n{q}"))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = bad("[quotas.q]\nfunction = \"acme:edr/actions.*\"\nlimit = 3\nper = \"1h\"\n");
        assert!(e.contains("name one function"), "{e}");
        let e = bad("[quotas.q]\nfunction = \"acme:edr/actions.x\"\nlimit = 0\nper = \"1h\"\n");
        assert!(e.contains("limit = 0: must be 1 to"), "{e}");
        for per in ["0h", "1w", "h", "32d", "-1h", "99999999999999999999d"] {
            let e = bad(&format!(
                "[quotas.q]\nfunction = \"acme:edr/actions.x\"\nlimit = 1\nper = \"{per}\"\n"
            ));
            assert!(e.contains("[quotas.q] per:"), "{per}: {e}");
        }
        let e = bad(
            "[quotas.q]\nfunction = \"acme:edr/actions.x\"\nlimit = 1\nper = \"1h\"\nover = \"deny\"\napproval = \"soc\"\n",
        );
        assert!(e.contains("over = \"deny\" makes none"), "{e}");
        let e = bad(
            "[quotas.a]\nfunction = \"acme:edr/actions.x\"\nlimit = 1\nper = \"1h\"\nover = \"deny\"\n[quotas.b]\nfunction = \"acme:edr/actions@1.0.0.x\"\nlimit = 2\nper = \"1h\"\nover = \"deny\"\n",
        );
        assert!(e.contains("one quota per function"), "{e}");
        let e = bad(
            "[quotas.q]\nfunction = \"acme:nobody/here.x\"\nlimit = 1\nper = \"1h\"\nover = \"deny\"\n",
        );
        assert!(e.contains("no plugin provides acme:nobody/here"), "{e}");
    }

    /// SECURITY 23: a quota must be able to match. A typo'd host function
    /// and a voice function (never an audited call) are refused when the
    /// file is read, naming the function and the fix; the host's real
    /// functions (outbound HTTP included) are accepted.
    #[test]
    fn a_quota_that_can_never_match_is_refused() {
        let q = |f: &str| {
            format!("[quotas.q]\nfunction = \"{f}\"\nlimit = 1\nper = \"1h\"\nover = \"deny\"\n")
        };
        let err = |f: &str| {
            parse(&format!("[deployment]\nname = \"t\"\nphase = 4\n{}", q(f)))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = err("charter:host/notify.sned");
        assert!(
            e.contains("function = \"charter:host/notify.sned\": the host has no such function (its functions: send)"),
            "{e}"
        );
        let e = err("charter:host/notfy.send");
        assert!(e.contains("the host has no such interface"), "{e}");
        for voice in ["charter:host/log.write", "charter:host/explain.rationale"] {
            let e = err(voice);
            assert!(
                e.contains("a voice function") && e.contains("remove the quota"),
                "{voice}: {e}"
            );
        }
        for ok in [
            "charter:host/notify.send",
            "wasi:http/outgoing-handler.handle",
        ] {
            assert_eq!(
                dep(4, &q(ok)).quotas["q"].function,
                ok.rsplit('.').next().unwrap()
            );
        }
    }

    /// SECURITY 23: a quota whose calls over it become proposals names who
    /// decides them: its `approval`, or an approver_role on every group
    /// naming the function. Otherwise the file is refused (a proposal
    /// without a role could be approved by anyone).
    #[test]
    fn a_proposing_quota_names_who_decides() {
        let provider = "[plugins.edr]\npath = \"e.wasm\"\nprovides = [\"acme:edr/actions\"]\n[plugins.r]\npath = \"r.wasm\"\ngroups = [\"a\"]\n";
        let quota =
            "[quotas.q]\nfunction = \"acme:edr/actions.isolate-host\"\nlimit = 1\nper = \"1h\"\n";
        let file = |groups: &str, extra: &str| {
            format!("[deployment]\nname = \"t\"\nphase = 4\n{provider}{groups}{quota}{extra}")
        };
        let roleless =
            "[groups.a]\ncapabilities = [\"acme:edr/actions.isolate-host\"]\neffect = \"write\"\n";
        let e = parse(&file(roleless, ""))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("group a names no approver_role: set approval = \"ROLE\" on the quota"),
            "{e}"
        );
        // A second group with a role does not cover the first.
        let two = format!(
            "{roleless}[groups.b]\ncapabilities = [\"acme:edr/actions.*\"]\neffect = \"write\"\napprover_role = \"soc\"\n"
        );
        let e = parse(&file(&two, "")).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("group a names no approver_role"), "{e}");
        // No group at all names it.
        let e = parse(&file("", "")).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("no group granting it names an approver_role"),
            "{e}"
        );
        // Fixed by the quota's approval, by the groups' roles, or by deny.
        assert!(parse(&file(roleless, "approval = \"soc\"\n")).is_ok());
        assert!(parse(&file(roleless, "over = \"deny\"\n")).is_ok());
        let with_role = "[groups.a]\ncapabilities = [\"acme:edr/actions.isolate-host\"]\neffect = \"write\"\napprover_role = \"soc\"\n";
        assert!(parse(&file(with_role, "")).is_ok());
    }

    #[test]
    fn phase_rules() {
        let d = parse(BASE).unwrap();
        let v = d.violations();
        let rules: Vec<_> = v.iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec!["analysis-only", "phase-gate"], "{v:?}");
        assert!(v[0].to_string().contains("phase 3 (analysis only)"));
        assert_eq!(d.plugins["p"].path, Path::new("/x/p.wasm"));
        assert_eq!(d.data_dir, Path::new("/x/.charter"));
    }

    #[test]
    fn http_group_needs_hosts() {
        let err = parse(
            "[deployment]\nname=\"x\"\nphase=1\n[groups.h]\ncapabilities=[\"wasi:http/outgoing-handler.handle\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("allow_hosts"), "{err}");
    }

    #[test]
    fn bad_digest_is_refused() {
        let err = parse(
            "[deployment]\nname=\"x\"\nphase=1\n[plugins.p]\npath=\"p.wasm\"\ndigest=\"md5:1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sha256"), "{err}");
    }

    // ---- effects: what the host knows, not what a group says ----------------

    fn dep(phase: u8, rest: &str) -> Deployment {
        parse(&format!(
            "[deployment]\nname = \"t\"\nphase = {phase}\n{rest}"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn rules(d: &Deployment) -> Vec<&'static str> {
        d.violations().iter().map(|v| v.rule).collect()
    }

    // ---- knowledge corpora ----------------------------------------------------

    #[test]
    fn knowledge_corpora_are_declared_confined_and_granted_by_name() {
        let d = dep(
            3,
            r#"
[knowledge.policies]
dir = "corpus/policies"
[groups.ask]
capabilities = ["charter:host/log.write"]
knowledge = ["policies", "hr"]
[plugins.p]
path = "p.wasm"
groups = ["ask"]
"#,
        );
        let k = &d.knowledge["policies"];
        assert_eq!(k.dir, Path::new("/x/corpus/policies"));
        assert_eq!(k.root, Path::new("/x"));
        let granted = d.granted_knowledge(&d.plugins["p"]);
        assert_eq!(granted, ["hr", "policies"].map(String::from).into());
        let v = d.violations();
        assert_eq!(rules(&d), vec!["unknown-knowledge"], "{v:?}");
        assert!(v[0].to_string().contains("\"hr\""), "{v:?}");
    }

    /// SECURITY: a corpus directory outside the deployment's directory
    /// (absolute, or with `..`) is refused when the file is read.
    #[test]
    fn a_knowledge_dir_escaping_the_deployment_is_refused() {
        for dir in ["/etc", "../outside", "corpus/../../x", ""] {
            let err = parse(&format!(
                "[deployment]\nname = \"t\"\nphase = 3\n[knowledge.k]\ndir = {dir:?}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("escapes the deployment directory"),
                "{dir}: {err}"
            );
        }
    }

    /// An embeddings model is AI: phase 1 refuses a corpus ranked by one
    /// (BM25, the default, is deterministic and stays allowed).
    #[test]
    fn phase_1_refuses_a_corpus_ranked_by_embeddings() {
        let emb = "[knowledge.k]\ndir = \"c\"\nembeddings = { base_url = \"http://127.0.0.1:8000/v1\", model = \"m\" }\n";
        let v = dep(1, emb).violations();
        assert_eq!(
            v.iter().map(|v| v.rule).collect::<Vec<_>>(),
            ["deterministic"],
            "{v:?}"
        );
        assert!(
            v[0].to_string()
                .contains("[knowledge.k] ranks its passages with an embeddings model"),
            "{}",
            v[0]
        );
        assert!(dep(2, emb).violations().is_empty());
        assert!(
            dep(1, "[knowledge.k]\ndir = \"c\"\n")
                .violations()
                .is_empty()
        );
    }

    /// SECURITY: an embeddings endpoint is the operator's: an http(s) URL
    /// with no credentials in it, a key only from a declared secret and
    /// never in clear over a network, a bounded timeout; BM25 (no
    /// network) when it is left out.
    #[test]
    fn knowledge_embeddings_are_checked_when_the_file_is_read() {
        let head = "[deployment]\nname = \"t\"\nphase = 3\n[secrets.ek]\nenv = \"EK\"\n[knowledge.k]\ndir = \"c\"\n";
        let d = parse(&format!(
            "{head}embeddings = {{ base_url = \"https://emb.example.com/v1/\", model = \"m\", api_key_secret = \"ek\" }}\n"
        ))
        .unwrap();
        assert_eq!(
            d.knowledge["k"].embeddings,
            Some(KnowledgeEmbeddings {
                base_url: "https://emb.example.com/v1".into(),
                model: "m".into(),
                api_key_secret: Some("ek".into()),
                timeout_ms: DEFAULT_EMBEDDINGS_TIMEOUT_MS,
            })
        );
        // The same as a table of its own; a key to loopback over http.
        let d = parse(&format!(
            "{head}[knowledge.k.embeddings]\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodel = \"m\"\napi_key_secret = \"ek\"\ntimeout_ms = 500\n"
        ))
        .unwrap();
        assert_eq!(
            d.knowledge["k"].embeddings.as_ref().unwrap().timeout_ms,
            500
        );
        assert_eq!(parse(head).unwrap().knowledge["k"].embeddings, None);
        for (bad, says) in [
            (r#"{ base_url = "ftp://h/v1", model = "m" }"#, "not an http"),
            (
                r#"{ base_url = "http://u:pw@h/v1", model = "m" }"#,
                "no credentials",
            ),
            (
                r#"{ base_url = "https://h/v1?key=s3cr3t", model = "m" }"#,
                "no credentials",
            ),
            (
                r#"{ base_url = "https:///v1", model = "m" }"#,
                "with a host",
            ),
            (r#"{ base_url = "https://h/v1", model = " " }"#, "model"),
            (r#"{ base_url = "https://h/v1" }"#, "model"),
            (
                r#"{ base_url = "https://h/v1", model = "m", api_key_secret = "nope" }"#,
                "not declared under [secrets]",
            ),
            (
                r#"{ base_url = "http://10.0.0.5/v1", model = "m", api_key_secret = "ek" }"#,
                "in clear",
            ),
            (
                r#"{ base_url = "http://localhost/v1", model = "m", api_key_secret = "ek" }"#,
                "in clear",
            ),
            (
                r#"{ base_url = "https://h/v1", model = "m", timeout_ms = 0 }"#,
                "timeout_ms",
            ),
            (
                r#"{ base_url = "https://h/v1", model = "m", timeout_ms = 300001 }"#,
                "timeout_ms",
            ),
            (
                r#"{ base_url = "https://h/v1", model = "m", url = "x" }"#,
                "unknown field",
            ),
        ] {
            let err = parse(&format!("{head}embeddings = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
            // A refused URL is not echoed: it may hold a credential.
            assert!(!err.contains("s3cr3t") && !err.contains("u:pw"), "{err}");
        }
    }

    const PAYMENTS: &str = r#"
[plugins.payments]
path = "payments.wasm"
provides = ["acme:payments/refunds"]
effects = { "acme:payments/refunds.lookup-order" = "read" }
"#;

    #[test]
    fn host_catalog() {
        let f = |i: &str, n: &str| TEST_CATALOG.host_function_effect(&FunctionName::new(i, n));
        assert_eq!(f("charter:host/kv@0.1.0", "set"), Some(Effect::Write));
        assert_eq!(f("charter:host/kv", "delete"), Some(Effect::Write));
        assert_eq!(f("charter:host/kv@0.1.0", "get"), Some(Effect::Read));
        assert_eq!(f("charter:host/log@0.1.0", "write"), Some(Effect::Read));
        assert_eq!(f("charter:host/secrets", "get"), Some(Effect::Read));
        assert_eq!(
            f("wasi:http/outgoing-handler@0.2.6", "handle"),
            Some(Effect::Write)
        );
        assert_eq!(f("acme:payments/refunds", "issue-refund"), None);
    }

    #[test]
    fn explicit_read_group_granting_kv_set_is_a_violation() {
        let d = dep(
            4,
            r#"
[groups.notes]
capabilities = ["charter:host/kv.get", "charter:host/kv.set"]
effect = "read"
[plugins.p]
path = "p.wasm"
groups = ["notes"]
"#,
        );
        assert_eq!(d.groups["notes"].effect, Effect::Write);
        assert_eq!(d.groups["notes"].declared_effect, Some(Effect::Read));
        let v = d.violations();
        assert_eq!(rules(&d), vec!["mislabelled-effect"], "{v:?}");
        let msg = v[0].to_string();
        assert!(msg.starts_with("p: group notes is labelled effect \"read\" but grants charter:host/kv.set, which writes"), "{msg}");
        assert!(msg.contains("effect = \"write\""), "{msg}");
    }

    #[test]
    fn mislabelled_group_at_phase_3_is_refused_twice_over() {
        let d = dep(
            3,
            r#"
[groups.notes]
capabilities = ["charter:host/kv.set"]
effect = "read"
[plugins.p]
path = "p.wasm"
groups = ["notes"]
"#,
        );
        assert_eq!(rules(&d), vec!["mislabelled-effect", "analysis-only"]);
    }

    #[test]
    fn mislabelled_group_granted_to_nobody_is_still_a_violation() {
        let d = dep(
            4,
            "[groups.notes]\ncapabilities = [\"charter:host/kv.delete\"]\neffect = \"read\"\n",
        );
        let v = d.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            (v[0].plugin.as_deref(), v[0].rule),
            (None, "mislabelled-effect")
        );
        assert!(v[0].message.contains("charter:host/kv.delete"), "{v:?}");
    }

    #[test]
    fn phase_3_with_a_derived_write_is_a_violation() {
        let d = dep(
            3,
            r#"
[groups.notes]
capabilities = ["charter:host/kv.set"]
[plugins.p]
path = "p.wasm"
groups = ["notes"]
"#,
        );
        assert_eq!(d.groups["notes"].effect, Effect::Write);
        let v = d.violations();
        assert_eq!(rules(&d), vec!["analysis-only"], "{v:?}");
        assert!(
            v[0].message
                .contains("has effect \"write\" (it grants charter:host/kv.set), but phase 3"),
            "{v:?}"
        );
    }

    #[test]
    fn omitted_effect_is_derived() {
        let d = dep(
            3,
            r#"
[groups.reads]
capabilities = ["charter:host/kv.get", "charter:host/log.*", "charter:host/llm.*", "charter:host/secrets.get", "charter:host/explain.rationale"]
[groups.writes]
capabilities = ["charter:host/kv.delete"]
[plugins.p]
path = "p.wasm"
groups = ["reads"]
"#,
        );
        assert_eq!(d.groups["reads"].effect, Effect::Read);
        assert_eq!(d.groups["reads"].declared_effect, None);
        assert!(d.writes_of(&d.groups["reads"]).is_empty());
        assert_eq!(d.groups["writes"].effect, Effect::Write);
        // Derived, not mislabelled: no error where no phase forbids it.
        assert!(d.violations().is_empty(), "{:?}", d.violations());
        // A write label on a read-only group stands (it is stricter).
        let d = dep(
            4,
            "[groups.g]\ncapabilities = [\"charter:host/kv.get\"]\neffect = \"write\"\n",
        );
        assert_eq!(d.groups["g"].effect, Effect::Write);
        assert!(d.violations().is_empty());
    }

    #[test]
    fn wasi_http_handle_is_write() {
        let d = dep(
            4,
            r#"
[groups.web]
capabilities = ["wasi:http/outgoing-handler.handle"]
allow_hosts = ["example.com"]
effect = "read"
[groups.web2]
capabilities = ["wasi:http/outgoing-handler.*"]
allow_hosts = ["example.com"]
[plugins.p]
path = "p.wasm"
groups = ["web", "web2"]
"#,
        );
        assert_eq!(d.groups["web"].effect, Effect::Write);
        assert_eq!(d.groups["web2"].effect, Effect::Write);
        let v = d.violations();
        assert_eq!(rules(&d), vec!["mislabelled-effect"], "{v:?}");
        assert!(
            v[0].message.contains(
                "group web is labelled effect \"read\" but grants wasi:http/outgoing-handler.handle"
            ),
            "{v:?}"
        );
        assert_eq!(
            d.function_effect(&FunctionName::new(
                "wasi:http/outgoing-handler@0.2.6",
                "handle"
            )),
            Effect::Write
        );
    }

    #[test]
    fn connector_functions_are_what_their_provider_declares() {
        let d = dep(
            4,
            &format!(
                r#"
[groups.lookup]
capabilities = ["acme:payments/refunds.lookup-order"]
effect = "read"
[groups.refund]
capabilities = ["acme:payments/refunds.issue-refund"]
effect = "read"
[groups.any]
capabilities = ["acme:payments/refunds.*"]
[plugins.bot]
path = "bot.wasm"
groups = ["lookup", "refund"]
{PAYMENTS}"#
            ),
        );
        let f = |n: &str| d.function_effect(&FunctionName::new("acme:payments/refunds@0.1.0", n));
        assert_eq!(f("lookup-order"), Effect::Read);
        assert_eq!(f("issue-refund"), Effect::Write);
        assert_eq!(d.groups["lookup"].effect, Effect::Read);
        assert_eq!(d.groups["refund"].effect, Effect::Write);
        // A wildcard over the interface writes: not every function is declared read.
        assert_eq!(d.groups["any"].effect, Effect::Write);
        // Nobody provides it: nothing says it only reads. (A group granting
        // it is an error: see patterns_that_match_no_known_function_are_errors.)
        assert_eq!(
            d.function_effect(&FunctionName::new("acme:crm/notes", "read-note")),
            Effect::Write
        );
        let v = d.violations();
        assert_eq!(rules(&d), vec!["mislabelled-effect"], "{v:?}");
        assert!(
            v[0].to_string().starts_with(
                "bot: group refund is labelled effect \"read\" but grants acme:payments/refunds.issue-refund"
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_provider_may_declare_its_whole_interface_read() {
        let d = dep(
            3,
            r#"
[groups.any]
capabilities = ["acme:crm/notes.*"]
effect = "read"
[plugins.bot]
path = "bot.wasm"
groups = ["any"]
[plugins.crm]
path = "crm.wasm"
provides = ["acme:crm/notes"]
effects = { "acme:crm/notes.*" = "read" }
"#,
        );
        assert_eq!(d.groups["any"].effect, Effect::Read);
        assert!(d.violations().is_empty(), "{:?}", d.violations());
        // One function declared write overrides the wildcard declaration.
        let d = dep(
            3,
            r#"
[groups.any]
capabilities = ["acme:crm/notes.*"]
[plugins.bot]
path = "bot.wasm"
groups = ["any"]
[plugins.crm]
path = "crm.wasm"
provides = ["acme:crm/notes"]
effects = { "acme:crm/notes.*" = "read", "acme:crm/notes.delete-note" = "write" }
"#,
        );
        assert_eq!(d.groups["any"].effect, Effect::Write);
        assert_eq!(rules(&d), vec!["analysis-only"]);
        let f = |n: &str| d.function_effect(&FunctionName::new("acme:crm/notes", n));
        assert_eq!(
            (f("read-note"), f("delete-note")),
            (Effect::Read, Effect::Write)
        );
    }

    #[test]
    fn kv_wildcard_labelled_read_is_a_violation() {
        let d = dep(
            4,
            r#"
[groups.kv]
capabilities = ["charter:host/kv.*"]
effect = "read"
[plugins.p]
path = "p.wasm"
groups = ["kv"]
"#,
        );
        let v = d.violations();
        assert_eq!(rules(&d), vec!["mislabelled-effect"], "{v:?}");
        assert!(
            v[0].message
                .contains("grants charter:host/kv.set, charter:host/kv.delete, which write"),
            "{v:?}"
        );
    }

    #[test]
    fn unknown_effect_declarations_are_errors() {
        let bad = |effects: &str, provides: &str| {
            parse(&format!(
                "[deployment]\nname = \"t\"\nphase = 1\n[plugins.c]\npath = \"c.wasm\"\nprovides = [{provides}]\neffects = {{ {effects} }}\n"
            ))
            .unwrap_err()
            .to_string()
        };
        let e = bad(
            r#""acme:crm/notes.read" = "read""#,
            r#""acme:payments/refunds""#,
        );
        assert!(e.contains("plugin c: effects: \"acme:crm/notes.read\" is not a function of an interface it provides (provides: acme:payments/refunds)"), "{e}");
        let e = bad(r#""acme:crm/notes.read" = "read""#, "");
        assert!(e.contains("provides: nothing"), "{e}");
        let e = bad(r#""lookup" = "read""#, r#""acme:payments/refunds""#);
        assert!(e.contains("plugin c: effects:"), "{e}");
        let e = bad(
            r#""acme:payments/refunds@0.1.0.lookup" = "read""#,
            r#""acme:payments/refunds""#,
        );
        assert!(e.contains("leave out the version"), "{e}");
        let e = bad(
            r#""acme:payments/refunds.lookup" = "readonly""#,
            r#""acme:payments/refunds""#,
        );
        assert!(e.contains("readonly"), "{e}");
    }

    // ---- patterns: every one names a function someone knows -----------------

    fn pattern_error(caps: &str, rest: &str) -> String {
        parse(&format!(
            "[deployment]\nname = \"t\"\nphase = 4\n[groups.g]\ncapabilities = [{caps}]\n{rest}"
        ))
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn patterns_that_match_no_known_function_are_errors() {
        let e = pattern_error(r#""charter:host/kv.sett""#, "");
        assert!(
            e.contains("group g: capability pattern \"charter:host/kv.sett\" (line 5) matches no known function; did you mean charter:host/kv.set?"),
            "{e}"
        );
        assert!(
            e.contains("interface.function, interface.*, interface@version.function or interface@version#function"),
            "{e}"
        );
        let e = pattern_error(r#""charter:host/kvv.set""#, "");
        assert!(e.contains("did you mean charter:host/kv.set?"), "{e}");
        let e = pattern_error(r#""charter:host/kvv.*""#, "");
        assert!(e.contains("did you mean charter:host/kv.*?"), "{e}");
        let e = pattern_error(r#""charter:host/kv@0.1.0#sett""#, "");
        assert!(e.contains("did you mean charter:host/kv.set?"), "{e}");
        let e = pattern_error(r#""charter:host/secret.get""#, "");
        assert!(e.contains("did you mean charter:host/secrets.get?"), "{e}");
        // WASI beyond outgoing-handler.handle is not granted by groups.
        let e = pattern_error(r#""wasi:http/types.*""#, "");
        assert!(
            e.contains("did you mean wasi:http/outgoing-handler.*?"),
            "{e}"
        );
        assert!(e.contains("inert WASI baseline"), "{e}");
        // An interface nobody provides: the fix is a `provides`.
        let e = pattern_error(r#""acme:payments/refunds.issue-refund""#, "");
        assert!(
            e.contains("no plugin provides acme:payments/refunds; if a connector exports it, add provides = [\"acme:payments/refunds\"] to the connector's [plugins.NAME] entry"),
            "{e}"
        );
        assert!(!e.contains("did you mean"), "no near miss: {e}");
        // A near miss of a provided interface is named.
        let e = pattern_error(r#""acme:payments/refundz.issue-refund""#, PAYMENTS);
        assert!(
            e.contains("no plugin provides acme:payments/refundz (provided: acme:payments/refunds); did you mean acme:payments/refunds.issue-refund?"),
            "{e}"
        );
        // Every bad pattern is reported, not only the first.
        let e = pattern_error(
            r#""charter:host/kv.get", "charter:host/kv.sett", "charter:host/lgo.write""#,
            "",
        );
        assert!(e.contains("kv.sett") && e.contains("lgo.write"), "{e}");
        assert!(e.contains("did you mean charter:host/log.write?"), "{e}");
        assert!(!e.contains("pattern \"charter:host/kv.get\""), "{e}");
    }

    #[test]
    fn known_patterns_in_every_form_are_accepted() {
        let d = dep(
            4,
            &format!(
                r#"
[groups.forms]
capabilities = ["charter:host/kv@0.1.0#get", "charter:host/kv.list-keys", "charter:host/log@0.1.0.write", "charter:host/llm.*"]
[groups.connector]
capabilities = ["acme:payments/refunds@0.1.0#issue-refund", "acme:payments/refunds.any-function-at-all"]
[groups.web]
capabilities = ["wasi:http/outgoing-handler@0.2.6#handle"]
allow_hosts = ["example.com"]
[plugins.bot]
path = "bot.wasm"
groups = ["forms", "connector", "web"]
{PAYMENTS}
[plugins.crm]
path = "crm.wasm"
provides = ["acme:crm/notes"]
effects = {{ "acme:crm/notes#read-note" = "read" }}
"#
            ),
        );
        let g = &d.groups["forms"];
        assert!(g.grants(&FunctionName::new("charter:host/kv@0.1.0", "get")));
        assert!(!g.grants(&FunctionName::new("charter:host/kv@0.2.0", "get")));
        assert!(!g.grants(&FunctionName::new("charter:host/kv@0.1.0", "set")));
        assert_eq!(g.effect, Effect::Read);
        assert!(d.groups["connector"].grants(&FunctionName::new(
            "acme:payments/refunds@0.1.0",
            "issue-refund"
        )));
        assert_eq!(d.groups["web"].effect, Effect::Write);
        // An effect declared in the `#` form is the same declaration.
        assert_eq!(
            d.function_effect(&FunctionName::new("acme:crm/notes@0.1.0", "read-note")),
            Effect::Read
        );
    }
    #[test]
    fn agents_are_identities_that_see_the_tools_declared_for_them() {
        let h = format!("sha256:{}", "cd".repeat(32));
        let tools = "[plugins.orders]\npath = \"o.wasm\"\n[plugins.orders.tools.\"acme:shop/orders\"]\nagents = [\"copilot\"]\nroles = [\"support\"]\n";
        let d = parse(&format!(
            "{BASE}\n[agents.copilot]\nroles = [\"support\"]\ntokens = [\"{h}\"]\n{tools}"
        ))
        .unwrap();
        assert_eq!(d.identities["copilot"].kind, IdentityKind::Agent);
        assert_eq!(
            d.agents["copilot"].calls_per_minute,
            DEFAULT_AGENT_CALLS_PER_MINUTE
        );
        assert!(d.approvers.is_empty(), "an agent decides nothing");
        let spec = &d.plugins["orders"];
        assert_eq!(
            spec.provides,
            ["acme:shop/orders"],
            "a tool interface is provided"
        );
        let access = &spec.tools["acme:shop/orders"];
        assert!(access.admits("copilot", &[]));
        assert!(access.admits("other", &["support".into()]));
        assert!(!access.admits("other", &["sales".into()]));
        for (extra, says) in [
            (
                "[identities.x]\nkind = \"agent\"\n".to_string(),
                "declare agents under [agents.x]",
            ),
            (
                "[agents.copilot]\n[identities.copilot]\n".to_string(),
                "declared both as an agent",
            ),
            (
                "[agents.a]\ncalls_per_minute = 0\n".to_string(),
                "calls_per_minute = 0: must be 1 to 100000",
            ),
            (
                "[plugins.o]\npath = \"o.wasm\"\n[plugins.o.tools.\"acme:shop/orders\"]\nagents = [\"ghost\"]\n".to_string(),
                "agent \"ghost\" is not declared; add [agents.ghost]",
            ),
            (
                "[plugins.o]\npath = \"o.wasm\"\n[plugins.o.tools.\"acme:shop/orders\"]\n".to_string(),
                "no agent may see these tools",
            ),
            (
                "[agents.a]\n[plugins.o]\npath = \"o.wasm\"\n[plugins.o.tools.\"acme:shop/orders@1.0.0\"]\nagents = [\"a\"]\n".to_string(),
                "without version",
            ),
        ] {
            let e = parse(&format!("{BASE}\n{extra}")).unwrap_err().to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
    }

    #[test]
    fn identities_merge_approvers_and_keep_only_token_hashes() {
        let h = format!("sha256:{}", "ab".repeat(32));
        let h2 = format!("sha256:{}", "ef".repeat(32));
        let d = parse(&format!(
            "{BASE}\n[approvers.alice]\nroles = [\"finance\"]\n\n[identities.bob]\nroles = [\"finance\"]\ntokens = [\"{h}\"]\n\n[identities.hook]\nkind = \"service\"\ntokens = [\"{h2}\"]\n"
        ))
        .unwrap();
        assert_eq!(d.identities.len(), 3);
        assert_eq!(d.identities["hook"].kind, IdentityKind::Service);
        assert_eq!(d.identities["bob"].tokens[0].to_string(), h);
        // Only people decide proposals: the service account is no approver.
        let approvers: Vec<_> = d.approvers.keys().cloned().collect();
        assert_eq!(approvers, ["alice", "bob"]);
        // The deployment's JSON (e.g. `charter check --json`) never carries
        // a token hash.
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains(&"ab".repeat(32)), "{json}");
    }

    #[test]
    fn identity_mistakes_are_refused_naming_the_fix() {
        let h = format!("sha256:{}", "cd".repeat(32));
        let cases: [(&str, &str); 7] = [
            (
                "[approvers.bob]\nroles = []\n[identities.bob]\nroles = []\n",
                "declared in both [approvers.bob] and [identities.bob]",
            ),
            (
                "[approvers.bot]\nkind = \"service\"\n",
                "approvers are people; declare a service account under [identities.bot]",
            ),
            (
                "[identities.bob]\ntokens = [\"s3cret-token\"]\n",
                "not a token hash: a token hash is \"sha256:<64 hex digits>\"",
            ),
            (
                "[identities.bob]\ntokens = [\"sha256:abcd\"]\n",
                "4 hex digits after",
            ),
            ("[identities.bob]\nkind = \"robot\"\n", "unknown variant"),
            ("[identities.Bob]\n", "identity name \"Bob\""),
            (
                &format!(
                    "[identities.a]\ntokens = [\"{h}\"]\n[identities.b]\ntokens = [\"{h}\"]\n"
                ),
                "[identities.b] tokens: a hash is declared twice (also by a)",
            ),
        ];
        for (extra, want) in cases {
            let err = parse(&format!("{BASE}\n{extra}")).unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
            assert!(!err.contains("s3cret"), "a pasted token is echoed: {err}");
        }
    }

    /// `[deployment] run_lease`: 60 s unless set; 3 s to 10 min; anything
    /// else refused, naming the setting.
    #[test]
    fn run_lease_is_bounded() {
        let d = |extra: &str| parse(&format!("[deployment]\nname = \"t\"\nphase = 1\n{extra}\n"));
        assert_eq!(d("").unwrap().run_lease_ms, DEFAULT_RUN_LEASE_MS);
        assert_eq!(d("run_lease = \"5s\"").unwrap().run_lease_ms, 5_000);
        assert_eq!(d("run_lease = \"10m\"").unwrap().run_lease_ms, 600_000);
        for bad in ["\"1s\"", "\"11m\"", "\"1d\"", "\"soon\"", "\"0s\"", "30"] {
            let err = d(&format!("run_lease = {bad}")).unwrap_err().to_string();
            assert!(err.contains("run_lease"), "{bad}: {err}");
        }
    }

    /// `[deployment] backend`: file by default, a postgres URL or a
    /// declared secret; anything else refused naming the setting. The
    /// password of a URL is never in an error, `Debug` or the JSON form.
    #[test]
    fn backend_forms_and_the_password_never_shown() {
        let d = |b: &str, extra: &str| {
            parse(&format!(
                "[deployment]\nname = \"t\"\nphase = 1\n{b}\n{extra}"
            ))
        };
        assert_eq!(d("", "").unwrap().backend, Backend::File);
        assert_eq!(d("backend = \"file\"", "").unwrap().backend, Backend::File);
        let url = "postgres://charter:hunter2pw@db.internal:5432/charter?password=hunter2pw&sslmode=disable";
        let pg = d(&format!("backend = {url:?}"), "").unwrap();
        assert_eq!(pg.backend, Backend::Postgres(url.into()));
        let json = serde_json::to_string(&pg).unwrap();
        for shown in [json, format!("{pg:?}"), pg.backend.shown()] {
            assert!(!shown.contains("hunter2"), "password shown: {shown}");
        }
        assert_eq!(pg.backend.shown(), "postgres://…@db.internal:5432/charter");
        let s = d(
            "backend = { secret = \"pg\" }",
            "[secrets.pg]\nenv = \"PG_URL\"\n",
        )
        .unwrap();
        assert_eq!(s.backend, Backend::PostgresSecret("pg".into()));
        for (b, want) in [
            ("backend = \"mysql://u:hunter2@h/d\"", "is not a backend"),
            ("backend = \"hunter2\"", "(not shown)"),
            (
                "backend = \"postgres://u:hunter2@h/d x\"",
                "space or control",
            ),
            (
                "backend = { secret = \"nope\" }",
                "not declared under [secrets]",
            ),
            (
                "backend = \"postgres://u:hunter2@h/d\" junk",
                "not shown: it may hold a password",
            ),
        ] {
            let err = d(b, "").unwrap_err().to_string();
            assert!(err.contains(want), "{b}: {err}");
            assert!(
                !err.contains("hunter2"),
                "{b}: password in the error: {err}"
            );
        }
    }
}
