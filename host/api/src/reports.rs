//! The reviewer's reports: `inspect`, `check`, `grants`, `plugins`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use charter_config::{Deployment, FunctionName, Pattern};
use charter_runtime::error::{EXIT_ERROR, EXIT_OK, EXIT_REFUSED};
use charter_runtime::{Host, HostOptions, LoadError, LoadedPlugin};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::control::Control;
use crate::error::{ApiError, ErrorDoc};

/// `charter inspect PLUGIN.wasm`: inspect a component file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectRequest {
    /// The component file. A path of the machine [`Control`] runs on: only
    /// a local caller may name one ([`crate::Access::Local`]).
    pub path: PathBuf,
}

/// How the host treats an imported interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportClass {
    /// The inert WASI baseline: no files, environment, arguments or network.
    WasiBaseline,
    /// A capability: linked only when a group grants it.
    Capability,
    /// Only types: nothing to link.
    TypesOnly,
}

/// One imported interface of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    /// As the component names it, with version: `charter:host/kv@0.1.0`.
    pub interface: String,
    /// How the host treats it.
    pub class: ImportClass,
    /// The functions imported from it.
    pub functions: Vec<String>,
    /// The resource types imported from it.
    pub resources: Vec<String>,
    /// With a deployment, for capability imports only: per function, the
    /// groups that grant it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_by_groups: Option<BTreeMap<String, Vec<String>>>,
}

/// One export of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// Its name.
    pub name: String,
    /// `function` or `instance`.
    pub kind: String,
    /// An instance's functions; a function's own name.
    pub functions: Vec<String>,
}

/// `charter inspect --json`: a component's digest, world, imports and
/// exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectReport {
    /// The file inspected, as given.
    pub path: PathBuf,
    /// `sha256:` of its bytes.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// `charter:plugin/step@0.1.0` for a step; null otherwise.
    pub world: Option<String>,
    /// Imports per interface.
    pub imports: Vec<Import>,
    /// Exports.
    pub exports: Vec<Export>,
    /// The type of an exported `run` that is not a step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_type: Option<String>,
}

impl InspectReport {
    /// Why the component is not a step (`None` if it is one).
    pub fn step_problem(&self) -> Option<String> {
        use charter_runtime::inspect::{STEP_RUN_SIGNATURE, STEP_WORLD};
        if self.world.is_some() {
            return None;
        }
        Some(match &self.run_type {
            Some(ty) => format!(
                "it exports `run`, but as `run: {ty}`; a step exports `{STEP_RUN_SIGNATURE}` (world {STEP_WORLD})"
            ),
            None => format!(
                "no `run` export; a step exports `{STEP_RUN_SIGNATURE}` (world {STEP_WORLD})"
            ),
        })
    }
}

/// `charter inspect --json` when the file is not a component:
/// `{"path", "error": {message, exit_code}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectFailure {
    /// The file, as given.
    pub path: PathBuf,
    /// What is wrong with it.
    pub error: ErrorDoc,
}

/// A governance rule the deployment breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The plugin involved, if any.
    pub plugin: Option<String>,
    /// The rule: `phase-gate`, `analysis-only`, `workflow`, ...
    pub rule: String,
    /// What is wrong and what would fix it.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.plugin {
            Some(p) => write!(f, "{p}: {} [{}]", self.message, self.rule),
            None => write!(f, "{} [{}]", self.message, self.rule),
        }
    }
}

impl From<charter_config::Violation> for Violation {
    fn from(v: charter_config::Violation) -> Violation {
        Violation {
            plugin: v.plugin,
            rule: v.rule.to_string(),
            message: v.message,
        }
    }
}

/// `charter check`: no request fields (the deployment is the service's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {}

/// How one plugin fared in `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginStatus {
    /// Loaded: its imports are within its grants.
    Ok,
    /// Refused by governance (exit 2).
    Refused,
    /// Could not be loaded (exit 1 or 3).
    Error,
}

impl PluginStatus {
    /// `ok`, `refused`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginStatus::Ok => "ok",
            PluginStatus::Refused => "refused",
            PluginStatus::Error => "error",
        }
    }
}

/// One plugin of `check --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedPlugin {
    /// Its name in the deployment.
    pub name: String,
    /// How it fared.
    pub status: PluginStatus,
    /// Its digest, when it loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why it was refused or failed, one line each.
    pub errors: Vec<String>,
}

/// `charter check --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The deployment's name.
    pub deployment: String,
    /// The file it was read from.
    pub config: PathBuf,
    /// Cedar policies that do not validate.
    pub policy_problems: Vec<String>,
    /// Effect labels that understate what a connector's functions do.
    pub effect_problems: Vec<String>,
    /// Patterns over a connector's interface that match no function the
    /// loaded connector exports.
    pub grant_problems: Vec<String>,
    /// What does not change the outcome but deserves a look.
    pub warnings: Vec<String>,
    /// The deployment's phase, 1 to 5.
    pub phase: u8,
    /// Whether the check passed.
    pub ok: bool,
    /// 0 passed, 2 refused, 1 an error.
    pub exit_code: i32,
    /// The governance rules the deployment breaks (workflow problems
    /// included, rule `workflow`).
    pub violations: Vec<Violation>,
    /// Every plugin, in load order.
    pub plugins: Vec<CheckedPlugin>,
    /// The deployment's workflows.
    pub workflows: Vec<String>,
    /// Their webhooks and schedules (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<crate::TriggerInfo>,
}

/// What the text report of `check` says about a plugin that loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadInfo {
    /// Granted capability functions it imports.
    pub capability_imports: usize,
    /// How long its load took, in milliseconds.
    pub load_ms: u64,
}

/// The answer to a [`CheckRequest`]: the `--json` document and the load
/// details the text report adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResponse {
    /// `check --json`.
    pub report: CheckReport,
    /// Per plugin that loaded.
    pub loads: BTreeMap<String, LoadInfo>,
}

impl CheckResponse {
    /// The line of one plugin's problem in the text report (`refused  …`).
    pub fn problem_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for p in &self.report.plugins {
            for e in &p.errors {
                lines.push(format!("{:<8} {e}", p.status.as_str()));
            }
        }
        let r = &self.report;
        lines.extend(
            r.policy_problems
                .iter()
                .map(|p| format!("refused  policy: {p}")),
        );
        lines.extend(
            r.effect_problems
                .iter()
                .map(|p| format!("refused  effects: {p}")),
        );
        lines.extend(
            r.grant_problems
                .iter()
                .map(|p| format!("refused  grants: {p}")),
        );
        lines
    }
}

/// `charter grants`: no request fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsRequest {}

/// Whether a function reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Reads only.
    Read,
    /// Changes the world outside the plugin.
    Write,
}

impl From<charter_config::Effect> for Effect {
    fn from(e: charter_config::Effect) -> Effect {
        match e {
            charter_config::Effect::Read => Effect::Read,
            charter_config::Effect::Write => Effect::Write,
        }
    }
}

/// One function a plugin is granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedFunction {
    /// `charter:host/kv.get`, or a pattern as written.
    pub function: String,
    /// Its effect.
    pub effect: Effect,
    /// The group that grants it.
    pub group: String,
}

/// One plugin of the grants report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedPlugin {
    /// Its name.
    pub name: String,
    /// Its component file.
    pub path: PathBuf,
    /// `sha256:` of the file now, or `unreadable: …`.
    pub digest: String,
    /// Whether the deployment pins a digest.
    pub pinned: bool,
    /// Its groups.
    pub groups: Vec<String>,
    /// Who granted them.
    pub granted_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Who owns the plugin (may not approve its proposals).
    pub owner: Option<String>,
    /// `inert` or `none`.
    pub wasi: String,
    /// Every function granted, per group.
    pub functions: Vec<GrantedFunction>,
    /// Hosts it may reach over HTTP.
    pub allow_hosts: Vec<String>,
    /// Secrets it may read, by name.
    pub secrets: Vec<String>,
    /// Notification channels it may send to, by name (`notify.send`).
    pub channels: Vec<String>,
}

/// One capability of the grants report: who can call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityGrant {
    /// The function (or pattern).
    pub function: String,
    /// Its effect.
    pub effect: Effect,
    /// Whether it writes.
    pub write: bool,
    /// The plugins granted it.
    pub plugins: Vec<String>,
}

/// `charter grants --json`: the reviewer's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsReport {
    /// The deployment's name.
    pub deployment: String,
    /// Its phase.
    pub phase: u8,
    /// Per plugin.
    pub plugins: Vec<GrantedPlugin>,
    /// Per capability.
    pub capabilities: Vec<CapabilityGrant>,
    /// The governance rules the deployment breaks.
    pub violations: Vec<Violation>,
}

impl GrantsReport {
    /// 0 with no violation, 2 with any.
    pub fn exit_code(&self) -> i32 {
        if self.violations.is_empty() {
            EXIT_OK
        } else {
            EXIT_REFUSED
        }
    }
}

/// Inspect a component file outside any deployment (`charter inspect`
/// with no `charter.toml`): compiled with no cache. Local callers only:
/// there is no [`Control`] to say who asks.
pub async fn inspect_file(req: &InspectRequest) -> Result<InspectReport, ApiError> {
    inspect_with(req, None).await
}

async fn inspect_with(
    req: &InspectRequest,
    deployment: Option<&Deployment>,
) -> Result<InspectReport, ApiError> {
    let opts = charter_runtime::engine::EngineOptions {
        cache_dir: deployment.map(|d| charter_runtime::engine::cache_dir(&d.data_dir)),
        ..Default::default()
    };
    let engine = charter_runtime::engine::build_engine(&opts)
        .map_err(|e| ApiError::invalid(format!("engine: {e:#}")))?;
    let span = tracing::info_span!("load_plugin", plugin = %req.path.display(), digest = tracing::field::Empty);
    let insp = charter_runtime::inspect_file(&engine, &req.path)
        .instrument(span.clone())
        .await
        .map_err(|e| {
            // `charter inspect` says a load error plainly, whatever its kind.
            ApiError::new(
                crate::ErrorClass::from_exit_code(e.exit_code()),
                "load-error",
                e.to_string(),
            )
        })?;
    span.record("digest", insp.digest.as_str());
    let groups_for = |iface: &str, func: &str| -> Vec<String> {
        deployment
            .map(|d| {
                d.groups_granting(&FunctionName::new(iface, func))
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    // Every field named: what the runtime adds to an inspection must be
    // decided here, never dropped from the contract unseen.
    let charter_runtime::Inspection {
        digest,
        size,
        world,
        run_type,
        imports,
        exports,
    } = insp;
    let imports = imports
        .into_iter()
        .map(|i| {
            let charter_runtime::inspect::ImportedInterface {
                interface,
                class,
                functions,
                resources,
            } = i;
            let class = match class {
                charter_runtime::inspect::ImportClass::WasiBaseline => ImportClass::WasiBaseline,
                charter_runtime::inspect::ImportClass::Capability => ImportClass::Capability,
                charter_runtime::inspect::ImportClass::TypesOnly => ImportClass::TypesOnly,
            };
            let granted_by_groups = (deployment.is_some() && class == ImportClass::Capability)
                .then(|| {
                    functions
                        .iter()
                        .map(|f| (f.clone(), groups_for(&interface, f)))
                        .collect()
                });
            Import {
                interface,
                class,
                functions,
                resources,
                granted_by_groups,
            }
        })
        .collect();
    let exports = exports
        .into_iter()
        .map(|e| {
            let charter_runtime::inspect::Export {
                name,
                kind,
                functions,
            } = e;
            Export {
                name,
                kind: kind.to_string(),
                functions,
            }
        })
        .collect();
    Ok(InspectReport {
        path: req.path.clone(),
        digest,
        size,
        world,
        imports,
        exports,
        run_type,
    })
}

impl Control {
    /// `charter inspect FILE` with this deployment: each capability import
    /// also names the groups that grant it. Local callers only.
    pub async fn inspect(&self, req: &InspectRequest) -> Result<InspectReport, ApiError> {
        self.local_only("inspect")?;
        inspect_with(req, Some(&self.deployment())).await
    }

    /// `charter check`: validate the whole deployment (config, phase gates,
    /// pins, every plugin's imports against its grants, policies, effects,
    /// connector grant patterns, workflows). A failed check is recorded in
    /// the log. Runs no step: with no host yet, the check uses one with an
    /// in-memory state store (no lock on the store, only on the log).
    ///
    /// Long because it is one pass in the order the text report reads:
    /// deployment rules, then each plugin's load, then what only loaded
    /// plugins can tell (policies, effects, connector patterns), then the
    /// outcome and its record.
    pub async fn check(&self, _req: &CheckRequest) -> Result<CheckResponse, ApiError> {
        let d = self.deployment();
        let mut violations: Vec<charter_config::Violation> = d.violations();
        violations.extend(d.workflow_problems());
        let patterns: Vec<(String, Pattern)> = d
            .groups
            .values()
            .flat_map(|g| g.capabilities.iter().map(|p| (g.name.clone(), p.clone())))
            .collect();
        let host = match self.existing_host() {
            Some(h) => h,
            None => {
                // The index in memory (the log, and a shared backend's
                // log, are the deployment's own).
                let options = HostOptions {
                    store: Some(std::sync::Arc::new(charter_store::MemStore::default())),
                    ..crate::backend::host_options(&d)?
                };
                std::sync::Arc::new(Host::new((*d).clone(), options)?)
            }
        };
        let mut code = if violations.is_empty() {
            EXIT_OK
        } else {
            EXIT_REFUSED
        };
        let mut plugins = Vec::new();
        let mut loads = BTreeMap::new();
        let mut grant_problems = Vec::new();
        for name in d.plugins.keys().cloned() {
            match crate::control::load(&host, &name).await {
                Ok(p) => {
                    grant_problems.extend(connector_grant_problems(&p, &patterns));
                    let capability_imports = p
                        .inspection
                        .imports
                        .iter()
                        .filter(|i| i.class == charter_runtime::inspect::ImportClass::Capability)
                        .map(|i| i.functions.len())
                        .sum::<usize>();
                    loads.insert(
                        name.clone(),
                        LoadInfo {
                            capability_imports,
                            load_ms: p.load_time.as_millis() as u64,
                        },
                    );
                    plugins.push(CheckedPlugin {
                        name,
                        status: PluginStatus::Ok,
                        digest: Some(p.digest.clone()),
                        errors: vec![],
                    });
                }
                Err(e) => {
                    let refused = e.exit_code() == EXIT_REFUSED;
                    let errors: Vec<String> = match &e {
                        LoadError::Ungranted(v) => v.iter().map(|u| u.to_string()).collect(),
                        LoadError::Governance(v) => v.iter().map(|u| u.to_string()).collect(),
                        other => vec![other.to_string()],
                    };
                    code = match (code, refused) {
                        (EXIT_ERROR, _) => EXIT_ERROR,
                        (_, true) => EXIT_REFUSED,
                        _ => EXIT_ERROR,
                    };
                    plugins.push(CheckedPlugin {
                        name,
                        status: if refused {
                            PluginStatus::Refused
                        } else {
                            PluginStatus::Error
                        },
                        digest: None,
                        errors,
                    });
                }
            }
        }
        let policy_problems = host.policy_problems();
        let effect_problems = host.effect_problems();
        if !(policy_problems.is_empty() && effect_problems.is_empty() && grant_problems.is_empty())
            && code == EXIT_OK
        {
            code = EXIT_REFUSED;
        }
        let response = CheckResponse {
            report: CheckReport {
                deployment: d.name.clone(),
                config: d.source.clone(),
                policy_problems,
                effect_problems,
                grant_problems,
                // Warnings do not change the outcome.
                warnings: host.policy_warnings(),
                phase: d.phase.get(),
                ok: code == EXIT_OK,
                exit_code: code,
                violations: violations.into_iter().map(Violation::from).collect(),
                plugins,
                workflows: d.workflows.keys().cloned().collect(),
                triggers: crate::triggers::triggers_of(&d, charter_audit::now_ms()),
            },
            loads,
        };
        if code != EXIT_OK {
            let problems = response
                .problem_lines()
                .into_iter()
                .chain(response.report.violations.iter().map(|v| v.to_string()))
                .collect();
            host.record_check_failure(problems).await;
        }
        Ok(response)
    }

    /// `charter grants`: per plugin its digest, groups, grant authority and
    /// granted functions; per capability who can call it. Reads the
    /// plugins' files for their digests; loads nothing.
    pub fn grants(&self, _req: &GrantsRequest) -> Result<GrantsReport, ApiError> {
        let d = self.deployment();
        // function -> (effect, plugins)
        let mut caps: BTreeMap<String, (Effect, Vec<String>)> = BTreeMap::new();
        let mut plugins = Vec::new();
        for (pname, p) in &d.plugins {
            let digest = std::fs::read(&p.path)
                .map(|b| charter_runtime::digest(&b))
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            let mut functions = Vec::new();
            for g in d.granted_groups(p) {
                for pat in &g.capabilities {
                    for (f, eff) in expand(&d, g, pat) {
                        functions.push(GrantedFunction {
                            function: f.clone(),
                            effect: eff,
                            group: g.name.clone(),
                        });
                        let e = caps.entry(f).or_insert((eff, vec![]));
                        if eff == Effect::Write {
                            e.0 = Effect::Write;
                        }
                        if !e.1.contains(pname) {
                            e.1.push(pname.clone());
                        }
                    }
                }
            }
            plugins.push(GrantedPlugin {
                name: pname.clone(),
                path: p.path.clone(),
                digest,
                pinned: p.digest.is_some(),
                groups: p.groups.clone(),
                granted_by: p.granted_by.clone(),
                reason: p.reason.clone(),
                owner: p.owner.clone(),
                wasi: match p.wasi {
                    charter_config::WasiMode::Inert => "inert",
                    charter_config::WasiMode::None => "none",
                }
                .to_string(),
                functions,
                allow_hosts: d.allowed_hosts(p).into_iter().collect(),
                secrets: d.granted_secrets(p).into_iter().collect(),
                channels: d.granted_channels(p).into_iter().collect(),
            });
        }
        Ok(GrantsReport {
            deployment: d.name.clone(),
            phase: d.phase.get(),
            plugins,
            capabilities: caps
                .into_iter()
                .map(|(function, (effect, plugins))| CapabilityGrant {
                    function,
                    effect,
                    write: effect == Effect::Write,
                    plugins,
                })
                .collect(),
            violations: d.violations().into_iter().map(Violation::from).collect(),
        })
    }

    /// The deployment's plugins as configured: name, file, pin, groups,
    /// provided interfaces (no file is read, nothing is loaded).
    pub fn plugins(&self, _req: &PluginsRequest) -> Result<PluginsList, ApiError> {
        let d = self.deployment();
        Ok(PluginsList {
            deployment: d.name.clone(),
            plugins: d
                .plugins
                .values()
                .map(|p| PluginEntry {
                    name: p.name.clone(),
                    path: p.path.clone(),
                    digest: p.digest.clone(),
                    groups: p.groups.clone(),
                    provides: p.provides.clone(),
                    owner: p.owner.clone(),
                })
                .collect(),
        })
    }
}

/// A grant pattern's functions with their effects: patterns over the
/// host's own functions are expanded, per function (a group that holds
/// `kv.set` does not make its `kv.get` write); other patterns (connectors,
/// wasi:http) are listed as written.
fn expand(d: &Deployment, g: &charter_config::ActionGroup, pat: &Pattern) -> Vec<(String, Effect)> {
    if pat.interface.starts_with("charter:host/") {
        // Once per function, whatever versions serve it.
        let mut seen = std::collections::BTreeSet::new();
        return charter_runtime::catalog()
            .iter()
            .filter(|(_, f)| pat.matches(f.function_name()) && seen.insert(f.action()))
            .map(|(_, f)| {
                let eff = d.function_effect(f.function_name());
                (f.action().to_string(), eff.into())
            })
            .collect();
    }
    // A named function has its own effect (a connector's declaration, or
    // write); a wildcard, the group's label.
    let eff = match &pat.func {
        Some(func) => d.function_effect(&FunctionName::new(&pat.interface, func)),
        None => g.effect,
    };
    vec![(pat.to_string(), eff.into())]
}

/// Grant patterns over an interface `conn` provides that match none of the
/// functions it exports: the file alone cannot tell (any function of a
/// provided interface is accepted when it is read), the loaded connector
/// can.
fn connector_grant_problems(conn: &LoadedPlugin, patterns: &[(String, Pattern)]) -> Vec<String> {
    let mut out = Vec::new();
    for (iface, export) in &conn.provides {
        let functions: &[String] = conn
            .inspection
            .exports
            .iter()
            .find(|e| &e.name == export)
            .map_or(&[], |e| &e.functions);
        for (group, pat) in patterns.iter().filter(|(_, p)| p.interface == *iface) {
            if functions
                .iter()
                .any(|f| pat.matches(&FunctionName::new(export, f)))
            {
                continue;
            }
            let wanted = pat.unversioned();
            let closest = functions
                .iter()
                .map(|f| format!("{iface}.{f}"))
                .min_by_key(|k| charter_config::edit_distance(&wanted, k))
                .map(|k| format!("; did you mean {k}?"))
                .unwrap_or_default();
            out.push(format!(
                "group {group}: capability pattern \"{pat}\" matches no function that {} exports as {export} (its functions: {}){closest}",
                conn.name,
                functions.join(", ")
            ));
        }
    }
    out.sort();
    out
}

/// The deployment's plugins: no request fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginsRequest {}

/// One plugin as the deployment configures it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginEntry {
    /// Its name.
    pub name: String,
    /// Its component file.
    pub path: PathBuf,
    /// The pinned digest, if any.
    pub digest: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// Interfaces it provides (a connector).
    pub provides: Vec<String>,
    /// Its owner.
    pub owner: Option<String>,
}

/// The deployment's plugins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginsList {
    /// The deployment's name.
    pub deployment: String,
    /// Its plugins, by name.
    pub plugins: Vec<PluginEntry>,
}
