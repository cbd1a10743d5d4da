//! The configuration in force ([`Config`]) and its live replacement
//! ([`Host::apply_config`]).
//!
//! A [`Config`] is the deployment (`charter.toml` and the workflow files
//! it names) with everything derived from it: the policy engine, each
//! workflow's definition digest, the text's digest. It is part of the
//! serving [`Generation`](super::Generation): an operation reads the
//! generation once and so sees one configuration with the plugins linked
//! under it (each loaded plugin's context holds the `Config` it was
//! checked and linked against: the linker's functions, the mediator's
//! policy and grants, and the proposal settings always agree).
//!
//! An apply reads the file once, parses it, and checks it in full before
//! anything changes: the deployment rules (`charter check`'s), the
//! policies against the schema of the functions they may name, the parts
//! only a restart can change, and every plugin of the new configuration
//! through the load-time check against the NEW grants (the version that
//! would serve: the last activated one, else the file it names). Only a
//! configuration that passes replaces the generation, with every plugin
//! re-linked under it; a refused one leaves the old one serving and says
//! why (`config-refused`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use charter_audit::Event;
use charter_config::{Deployment, Workflow};
use serde::Serialize;
use serde_json::json;

use super::Generation;
use crate::{Host, LoadedPlugin, digest};

/// The configuration in force and what is derived from it.
pub struct Config {
    /// Counts configurations since the host started (0: the one it
    /// started with).
    pub number: u64,
    pub deployment: Arc<Deployment>,
    pub policy: charter_policy::PolicyEngine,
    /// `sha256:` of the `charter.toml` text it was parsed from.
    pub digest: String,
    /// Workflow name → definition digest ([`crate::workflow::workflow_digest`]).
    pub workflows: BTreeMap<String, String>,
    /// Workflow name → its definition, shared by the runs that start on it.
    pub definitions: HashMap<String, Arc<Workflow>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("number", &self.number)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Derive what serves from `deployment` (parsed from text of digest
    /// `digest`).
    pub fn new(
        deployment: Deployment,
        digest: String,
        number: u64,
    ) -> Result<Config, charter_policy::PolicyError> {
        let policies: Vec<(String, String)> = deployment
            .groups
            .values()
            .filter_map(|g| g.policies.clone().map(|p| (g.name.clone(), p)))
            .collect();
        let policy = charter_policy::PolicyEngine::new(&deployment.name, &policies)?;
        let workflows = deployment
            .workflows
            .values()
            .map(|w| (w.name.clone(), crate::workflow::workflow_digest(w)))
            .collect();
        let definitions = deployment
            .workflows
            .values()
            .map(|w| (w.name.clone(), Arc::new(w.clone())))
            .collect();
        Ok(Config {
            number,
            deployment: Arc::new(deployment),
            policy,
            digest,
            workflows,
            definitions,
        })
    }

    /// The digest of the configuration `deployment` is: of the file it
    /// was read from as it is now (empty if unreadable), with the
    /// definition digest of each workflow read from a file of its own.
    pub fn file_digest(deployment: &Deployment) -> String {
        let text = std::fs::read(&deployment.source)
            .map(|b| digest(&b))
            .unwrap_or_default();
        config_digest(text, deployment)
    }
}

/// `text` (the digest of `charter.toml`'s text), or with workflows read
/// from files of their own or policies, the digest of it, of each such
/// workflow's definition and of each group's policies: a change to a
/// workflow or policy file is a change of configuration.
pub fn config_digest(text: String, deployment: &Deployment) -> String {
    let files: BTreeMap<&String, String> = deployment
        .workflows
        .values()
        .filter(|w| w.source != deployment.source)
        .map(|w| (&w.name, crate::workflow::workflow_digest(w)))
        .collect();
    // Policies may be read from files of their own (`policy_file`).
    let policies: BTreeMap<&String, String> = deployment
        .groups
        .values()
        .filter_map(|g| Some((&g.name, digest(g.policies.as_ref()?.as_bytes()))))
        .collect();
    if files.is_empty() && policies.is_empty() {
        return text;
    }
    charter_audit::json_digest(
        &json!({"charter.toml": text, "workflows": files, "policies": policies}),
    )
}

/// Where workflow definitions are kept by digest, beside the plugin store.
pub fn definitions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("workflows")
}

fn definition_path(data_dir: &Path, digest_: &str) -> Option<PathBuf> {
    let hex = digest_.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| definitions_dir(data_dir).join(format!("{hex}.json")))
}

/// Keep every workflow definition of `config` by its digest (written once,
/// whole or not at all), so a run still finds the definition it started
/// on after the configuration changed, or after a restart.
pub fn keep_definitions(data_dir: &Path, config: &Config) {
    for (name, d) in &config.workflows {
        let Some(path) = definition_path(data_dir, d) else {
            continue;
        };
        if path.exists() {
            continue;
        }
        let w = &config.deployment.workflows[name];
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(definitions_dir(data_dir))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec(w).map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(workflow = %name, "cannot keep definition {d}: {e}; a run of it cannot go on after its definition changes");
        }
    }
}

/// The definition of digest `digest_` from the definitions kept, verified:
/// a file whose content is not that digest (edited, replaced, a symlink
/// to something else) is no definition.
pub fn kept_definition(data_dir: &Path, digest_: &str) -> Option<Workflow> {
    let path = definition_path(data_dir, digest_)?;
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 16 << 20 {
        return None;
    }
    let w: Workflow = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    (crate::workflow::workflow_digest(&w) == digest_).then_some(w)
}

/// How an apply reached the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplySource {
    Api,
    Watch,
}

impl ApplySource {
    fn as_str(self) -> &'static str {
        match self {
            ApplySource::Api => "api",
            ApplySource::Watch => "watch",
        }
    }
}

/// An applied configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub digest: String,
    pub previous: String,
    pub generation: u64,
    /// What changed (see [`Event::ConfigApplied`]).
    pub changes: serde_json::Value,
    /// True when nothing changed (nothing was recorded or swapped).
    pub unchanged: bool,
}

/// A configuration refused; the serving one goes on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("charter.toml refused ({}); {serving} goes on serving", reasons.join("; "))]
pub struct Refused {
    pub digest: Option<String>,
    pub serving: String,
    pub reasons: Vec<String>,
}

/// Most reasons a `config-refused` event records.
const MAX_REASONS: usize = 50;

/// What changed between two deployments, by name.
fn changes(old: &Deployment, new: &Deployment) -> serde_json::Value {
    fn diff<T: Serialize>(
        a: &BTreeMap<String, T>,
        b: &BTreeMap<String, T>,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let added = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
        let removed = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
        let changed = a
            .iter()
            .filter(|(k, v)| {
                b.get(*k)
                    .is_some_and(|w| serde_json::to_value(v).ok() != serde_json::to_value(w).ok())
            })
            .map(|(k, _)| k.clone())
            .collect();
        (added, removed, changed)
    }
    fn entry(t: (Vec<String>, Vec<String>, Vec<String>)) -> serde_json::Value {
        json!({"added": t.0, "removed": t.1, "changed": t.2})
    }
    // A grant: plugin → its groups (who granted them, and why).
    let grants = |d: &Deployment| -> BTreeMap<String, serde_json::Value> {
        d.plugins
            .values()
            .flat_map(|p| {
                p.groups.iter().map(move |g| {
                    (
                        format!("{}:{g}", p.name),
                        json!([
                            p.granted_by,
                            p.reason,
                            d.groups.get(g).map(|g| &g.capabilities)
                        ]),
                    )
                })
            })
            .collect()
    };
    let policies = |d: &Deployment| -> BTreeMap<String, Option<String>> {
        d.groups
            .values()
            .filter(|g| g.policies.is_some())
            .map(|g| (g.name.clone(), g.policies.clone()))
            .collect()
    };
    let workflows = |d: &Deployment| -> BTreeMap<String, String> {
        d.workflows
            .values()
            .map(|w| (w.name.clone(), crate::workflow::workflow_digest(w)))
            .collect()
    };
    // Identities by name with kind, roles and how many tokens (never the
    // hashes themselves).
    let identities = |d: &Deployment| -> BTreeMap<String, serde_json::Value> {
        d.identities
            .values()
            .map(|i| {
                let tokens: Vec<String> = i.tokens.iter().map(|t| digest(&t.0)).collect();
                (
                    i.name.clone(),
                    json!([
                        i.kind,
                        i.roles,
                        digest(tokens.join(",").as_bytes()),
                        i.oidc_subjects
                    ]),
                )
            })
            .collect()
    };
    let plugins = |d: &Deployment| -> BTreeMap<String, serde_json::Value> {
        d.plugins
            .values()
            .map(|p| (p.name.clone(), json!([p.path, p.digest, p.limits])))
            .collect()
    };
    json!({
        "grants": entry(diff(&grants(old), &grants(new))),
        "policies": entry(diff(&policies(old), &policies(new))),
        "workflows": entry(diff(&workflows(old), &workflows(new))),
        "identities": entry(diff(&identities(old), &identities(new))),
        "plugins": entry(diff(&plugins(old), &plugins(new))),
    })
}

/// What only a restart changes, that `new` changes: named, so the
/// operator knows why it was refused.
fn restart_only(old: &Deployment, new: &Deployment) -> Vec<String> {
    let same = |a: &dyn erased::Ser, b: &dyn erased::Ser| a.value() == b.value();
    let mut out = vec![];
    let mut check = |what: &str, eq: bool| {
        if !eq {
            out.push(format!(
                "{what} changed: it applies only when the host starts (restart charter up)"
            ));
        }
    };
    check("[deployment] name", old.name == new.name);
    check("[deployment] data_dir", old.data_dir == new.data_dir);
    check("[deployment] backend", old.backend == new.backend);
    check(
        "[deployment] max_steps_in_flight",
        old.max_steps_in_flight == new.max_steps_in_flight,
    );
    check("[limits]", same(&old.limits, &new.limits));
    check("[llm]", same(&old.llm, &new.llm));
    check("[channels]", same(&old.channels, &new.channels));
    // The knowledge capability indexes its corpora when the host starts.
    check("[knowledge]", same(&old.knowledge, &new.knowledge));
    check("[oidc]", same(&old.oidc, &new.oidc));
    // Counted from the log when the host starts (`quota.rs`).
    check("[quotas]", old.quotas == new.quotas);
    // A connector is linked into its importers and is never swapped while
    // the host runs (as a push of one is refused).
    let connectors: BTreeSet<&String> = old
        .plugins
        .values()
        .chain(new.plugins.values())
        .filter(|p| !p.provides.is_empty())
        .map(|p| &p.name)
        .collect();
    // A connector reads secrets through the configuration it was loaded
    // under: with one in the deployment, a changed secret source would be
    // reported applied and not be (until a restart).
    check(
        "[secrets] (a connector reads them as loaded)",
        connectors.is_empty() || same(&old.secrets, &new.secrets),
    );
    for name in connectors {
        let (a, b) = (old.plugins.get(name), new.plugins.get(name));
        let groups = |d: &Deployment, p: Option<&charter_config::PluginSpec>| {
            p.map(|p| {
                p.groups
                    .iter()
                    .map(|g| serde_json::to_value(d.groups.get(g)).unwrap_or_default())
                    .collect::<Vec<_>>()
            })
        };
        check(
            &format!("connector {name} (its entry or its groups)"),
            same(&a, &b) && groups(old, a) == groups(new, b),
        );
    }
    // A plugin's memory is bounded by the engine built at start.
    for p in new.plugins.values() {
        let max = old
            .plugins
            .values()
            .map(|p| p.limits.memory_bytes)
            .chain([old.limits.memory_bytes])
            .max()
            .unwrap_or(0);
        if p.limits.memory_bytes > max {
            out.push(format!(
                "plugin {}: its memory limit is over what the host was started with ({max} bytes); restart charter up",
                p.name
            ));
        }
    }
    out
}

/// `serde_json::Value` of anything serializable, behind a trait object.
mod erased {
    pub trait Ser {
        fn value(&self) -> Option<serde_json::Value>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> Option<serde_json::Value> {
            serde_json::to_value(self).ok()
        }
    }
}

impl Host {
    /// The configuration in force (read it once per operation, with the
    /// generation: [`Host::generation`]).
    pub fn config(&self) -> Arc<Config> {
        self.generation().config.clone()
    }

    /// Read `charter.toml` (the file the host started with) again and, if
    /// it passes every check, make it serve: see the module docs. Recorded:
    /// `config-applied` or `config-refused`, by `by`. One apply (or push)
    /// at a time.
    pub async fn apply_config(&self, by: &str, source: ApplySource) -> Result<Applied, Refused> {
        let _one = self.pushes.lock().await;
        self.record_config().await;
        let current = self.config();
        let path = current.deployment.source.clone();
        let checked = self.check_new_config(&current, &path).await;
        let (config, plugins) = match checked {
            Ok(c) => c,
            Err((digest_, mut reasons)) => {
                reasons.truncate(MAX_REASONS);
                let reasons: Vec<String> = reasons.iter().map(|r| crate::record::text(r)).collect();
                let refused = Refused {
                    digest: digest_.clone(),
                    serving: current.digest.clone(),
                    reasons: reasons.clone(),
                };
                // The log keeps the line number, not the line: a refused
                // line may hold a secret-like value (a channel's webhook
                // URL), and every audit reader sees the log. The operator
                // who applied gets the whole reason in the answer.
                let logged = reasons.iter().map(|r| without_quoted_line(r)).collect();
                let ev = Event::ConfigRefused {
                    digest: digest_,
                    serving: current.digest.clone(),
                    reasons: logged,
                    by: by.to_string(),
                    auth: self.how_proven(by),
                    source: source.as_str().into(),
                };
                if let Err(e) = self.services.log.append(vec![ev]).await {
                    tracing::error!("event log: {e}");
                }
                tracing::warn!(config = %path.display(), "{refused}");
                return Err(refused);
            }
        };
        let changes = changes(&current.deployment, &config.deployment);
        let unchanged = config.digest == current.digest && config.workflows == current.workflows;
        if unchanged {
            return Ok(Applied {
                digest: config.digest.clone(),
                previous: current.digest.clone(),
                generation: self.generation().number,
                changes,
                unchanged: true,
            });
        }
        keep_definitions(&self.data_dir, &config);
        let d = &config.deployment;
        let mut events = vec![Event::ConfigLoaded {
            path: d.source.display().to_string(),
            digest: config.digest.clone(),
            phase: d.phase.get(),
            changed: true,
        }];
        events.extend(d.plugins.values().map(|p| Event::Grant {
            plugin: p.name.clone(),
            groups: p.groups.clone(),
            granted_by: p.granted_by.clone(),
            reason: p.reason.clone(),
        }));
        // A plugin whose bytes changed on disk (never pushed, no pin) is
        // relinked from its file: the version that will serve is named
        // before it does, as at a start.
        let serving = self.generation();
        let mut changed: Vec<_> = plugins
            .iter()
            .filter(|(name, p)| serving.plugin(name).is_none_or(|s| s.digest != p.digest))
            .collect();
        changed.sort_by(|a, b| a.0.cmp(b.0));
        events.extend(changed.into_iter().map(|(name, p)| {
            Event::PluginLoaded {
                plugin: name.clone(),
                digest: p.digest.clone(),
                groups: d
                    .plugins
                    .get(name)
                    .map(|s| s.groups.clone())
                    .unwrap_or_default(),
            }
        }));
        let number = serving.number + 1;
        drop(serving);
        events.push(Event::ConfigApplied {
            digest: config.digest.clone(),
            previous: current.digest.clone(),
            generation: number,
            changes: changes.clone(),
            by: by.to_string(),
            auth: self.how_proven(by),
            source: source.as_str().into(),
        });
        // Recorded before it serves, as an activation is.
        if let Err(e) = self.services.log.append(events).await {
            return Err(Refused {
                digest: Some(config.digest.clone()),
                serving: current.digest.clone(),
                reasons: vec![format!("event log: {e}")],
            });
        }
        let applied = Applied {
            digest: config.digest.clone(),
            previous: current.digest.clone(),
            generation: number,
            changes,
            unchanged: false,
        };
        // No decision straddles the swap: one that holds the lock decides
        // and acts under one configuration (`Host::decisions`).
        let _decisions = self.decisions.lock().await;
        self.install_config(config, plugins);
        tracing::info!(digest = %applied.digest, previous = %applied.previous, generation = number, "configuration applied");
        Ok(applied)
    }

    /// Replace the generation with one of `config` and `plugins` (each
    /// linked under it); versions kept for runs were linked under the old
    /// one and are dropped (loaded again under this one when needed).
    fn install_config(&self, config: Arc<Config>, plugins: HashMap<String, Arc<LoadedPlugin>>) {
        let mut slot = self
            .generation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let number = slot.number + 1;
        *slot = Arc::new(Generation {
            number,
            config,
            plugins,
        });
        drop(slot);
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Read and check `path` as the next configuration: the new config
    /// and its plugins (linked under it), or its digest (if it was read)
    /// and every reason it is refused.
    async fn check_new_config(
        &self,
        current: &Arc<Config>,
        path: &Path,
    ) -> Result<(Arc<Config>, HashMap<String, Arc<LoadedPlugin>>), (Option<String>, Vec<String>)>
    {
        let text = match crate::read_bounded(path, 16 << 20) {
            Ok(Ok(b)) => b,
            Ok(Err(size)) => {
                return Err((
                    None,
                    vec![format!("{}: {size} bytes is too large", path.display())],
                ));
            }
            Err(e) => return Err((None, vec![format!("{}: {e}", path.display())])),
        };
        let digest_ = digest(&text);
        let refuse = |reasons: Vec<String>| Err((Some(digest_.clone()), reasons));
        let Ok(text) = String::from_utf8(text) else {
            return refuse(vec![format!("{} is not UTF-8", path.display())]);
        };
        let deployment = match Deployment::parse(&text, path, crate::host_catalog()) {
            Ok(d) => d,
            Err(e) => return refuse(vec![e.to_string()]),
        };
        let mut problems: Vec<String> = deployment
            .violations()
            .iter()
            .map(|v| v.to_string())
            .collect();
        problems.extend(restart_only(&current.deployment, &deployment));
        if !problems.is_empty() {
            return refuse(problems);
        }
        let full = config_digest(digest_.clone(), &deployment);
        let config = match Config::new(deployment, full, current.number + 1) {
            Ok(c) => c,
            Err(e) => return refuse(vec![format!("policies: {e}")]),
        };
        // The policies against the functions they may name (the host's own
        // and the loaded connectors', which a config change never swaps).
        let sigs: Vec<_> = self
            .policy_signatures()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let problems = config.policy.validate(&sigs);
        if !problems.is_empty() {
            return refuse(problems);
        }
        let config = Arc::new(config);
        match self.relink(&config).await {
            Ok(plugins) => Ok((config, plugins)),
            Err(reasons) => refuse(reasons),
        }
    }

    /// Every plugin of the new `config` through the load-time check against
    /// its grants, the version that would serve after a restart (connectors,
    /// which cannot change here, are kept as they are). Nothing is
    /// installed: what passes serves only once all of it passed.
    async fn relink(
        &self,
        config: &Arc<Config>,
    ) -> Result<HashMap<String, Arc<LoadedPlugin>>, Vec<String>> {
        let serving = self.generation();
        let mut out = HashMap::new();
        let mut reasons = vec![];
        for (name, spec) in &config.deployment.plugins {
            if !spec.provides.is_empty() {
                if let Some(p) = serving.plugin(name) {
                    out.insert(name.clone(), p.clone());
                }
                continue;
            }
            match self.load_checked(config, spec, None).await {
                Ok(p) => {
                    out.insert(name.clone(), p);
                }
                Err((e, d)) => reasons.push(format!(
                    "plugin {name}{}: {e}",
                    d.map(|d| format!(" (version {d})")).unwrap_or_default()
                )),
            }
        }
        if reasons.is_empty() {
            Ok(out)
        } else {
            Err(reasons)
        }
    }
}

/// `reason` without the charter.toml line a parse error quotes
/// (`line 7: … (at \`webhook = "https://…"\`)` → `line 7: …`).
fn without_quoted_line(reason: &str) -> String {
    match reason.rfind(" (at `") {
        Some(i) if reason.ends_with("`)") => reason[..i].to_string(),
        _ => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::without_quoted_line;

    #[test]
    fn a_refused_line_is_not_quoted_in_the_log() {
        let r = "charter.toml: line 7: invalid type: integer, expected a string (at `webhook = \"https://hooks.example/T0/B0/s3cr3t\"`)";
        assert_eq!(
            without_quoted_line(r),
            "charter.toml: line 7: invalid type: integer, expected a string"
        );
        assert_eq!(
            without_quoted_line("policies: no such action"),
            "policies: no such action"
        );
    }
}
