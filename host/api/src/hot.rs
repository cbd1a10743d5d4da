//! Hot loading (`charter plugins push|list|history|diff|pin|rollback`):
//! new plugin versions in a running host (the runtime's `hot` module).
//! Push, pin and rollback act through the host that serves the
//! deployment; list and history read the event log (and the state index)
//! and also answer without one; diff compiles the two versions from the
//! plugin store.

use std::collections::BTreeSet;

use charter_audit::Event;
use charter_runtime::hot::{Activated, ImportLine, PushError, PushSource, import_lines};
use serde::{Deserialize, Serialize};

use crate::{ApiError, Control, ErrorClass, Refusal};

/// The role that may push, pin and roll back plugin versions.
pub const OPERATOR_ROLE: &str = "operator";

/// `p` may push, pin and roll back plugin versions (on a running host or,
/// without one, on the data directory): it holds [`OPERATOR_ROLE`].
/// `what` says what was refused ("change plugin versions").
pub fn require_operator(p: &crate::Principal, what: &str) -> Result<(), ApiError> {
    if p.has_role(OPERATOR_ROLE) {
        return Ok(());
    }
    Err(ApiError::refused(format!(
        "{} may not {what}: it needs the role `{OPERATOR_ROLE}` (declare it under [identities.{}] roles)",
        p.name, p.name
    )))
}

/// A version sent to the host: its bytes, who sends them.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub plugin: String,
    pub bytes: Vec<u8>,
    pub by: String,
}

/// An activated version (`push`, `rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub plugin: String,
    pub digest: String,
    pub previous: Option<String>,
    /// The host's generation number after the swap.
    pub generation: u64,
    /// Milliseconds from the bytes arriving to the swap (digest, compile,
    /// load-time check, link).
    pub swap_ms: u64,
    /// The version was serving already.
    pub unchanged: bool,
}

impl From<Activated> for Activation {
    fn from(a: Activated) -> Activation {
        Activation {
            plugin: a.plugin,
            digest: a.digest,
            previous: a.previous,
            generation: a.generation,
            swap_ms: a.swap_ms,
            unchanged: a.unchanged,
        }
    }
}

/// `plugins list`: per plugin, what serves and what is pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsList {
    pub plugins: Vec<PluginVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    pub plugin: String,
    /// The digest serving (loaded) in the host; `None` when not loaded
    /// yet, or read without a host.
    pub serving: Option<String>,
    /// The last activated digest (a push or rollback), which serves after
    /// a restart; `None`: the file `charter.toml` names serves.
    pub activated: Option<String>,
    /// `charter plugins pin`.
    pub pinned: Option<String>,
    /// The `digest` pin of `charter.toml`.
    pub config_pin: Option<String>,
}

/// `plugins history NAME`: the plugin's version events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginHistory {
    pub plugin: String,
    pub events: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub time_ms: u64,
    /// `plugin-loaded`, `plugin-pushed`, `plugin-activated`,
    /// `plugin-refused` or `plugin-pinned`.
    pub kind: String,
    pub digest: Option<String>,
    pub by: Option<String>,
    pub detail: String,
}

/// `plugins diff NAME A B`: what B can do that A could not, and the
/// reverse, under the grants in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDiff {
    pub plugin: String,
    pub a: String,
    pub b: String,
    /// Capability imports B has and A has not (writes marked).
    pub imports_added: Vec<ImportLine>,
    pub imports_removed: Vec<ImportLine>,
    /// Granted functions B can call and A could not (imports the grants
    /// cover); a version importing an ungranted one is refused at load.
    pub grants_added: Vec<String>,
    pub grants_removed: Vec<String>,
    /// Granted hosts reachable by B and not by A (B imports outbound HTTP).
    pub hosts_added: Vec<String>,
    pub hosts_removed: Vec<String>,
    /// Granted secrets readable by B and not by A.
    pub secrets_added: Vec<String>,
    pub secrets_removed: Vec<String>,
    /// Whether B's imports exceed the grants in force (it would be refused).
    pub b_ungranted: Vec<String>,
}

/// `plugins pin NAME DIGEST|--clear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinReport {
    pub plugin: String,
    pub pinned: Option<String>,
    pub serving: Option<String>,
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> ApiError {
        match e {
            PushError::UnknownPlugin { .. } => ApiError::not_found(e.to_string()),
            PushError::Invalid(m) => ApiError::invalid(m),
            PushError::Log(_) => ApiError::new(ErrorClass::Error, "internal", e.to_string()),
            PushError::Refused {
                plugin,
                digest,
                rule,
                error,
            } => {
                let class = match rule {
                    "too-large" => ErrorClass::Limit,
                    "not-a-component" | "load-error" => ErrorClass::Error,
                    _ => ErrorClass::Refused,
                };
                let kind = if class == ErrorClass::Error {
                    "invalid"
                } else {
                    "refused"
                };
                let mut out = ApiError::new(
                    class,
                    kind,
                    format!(
                        "{plugin}: version {digest} refused [{rule}], the serving version goes on: {error}"
                    ),
                );
                out.refusal = Some(Box::new(Refusal {
                    id: digest,
                    rule: rule.to_string(),
                    reason: crate::validate::shown(&error.to_string()),
                }));
                out
            }
        }
    }
}

fn plugin_known(c: &Control, name: &str) -> Result<(), ApiError> {
    if c.deployment().plugins.contains_key(name) {
        return Ok(());
    }
    Err(ApiError::not_found(format!(
        "plugin {} is not in the deployment (plugins: {})",
        crate::validate::shown(name),
        c.deployment()
            .plugins
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

impl Control {
    /// Check `bytes` as the next version of a plugin and activate it.
    pub async fn plugins_push(&self, req: PushRequest) -> Result<Activation, ApiError> {
        plugin_known(self, &req.plugin)?;
        let host = self.host()?;
        Ok(host
            .push_plugin(&req.plugin, req.bytes, &req.by, PushSource::Push)
            .await?
            .into())
    }

    /// Record a push refused before its bytes were all read (`too-large`):
    /// a `plugin-refused` event without a digest.
    pub async fn plugins_push_refused(&self, plugin: &str, rule: &str, reason: &str) {
        let Ok(host) = self.host() else { return };
        let ev = Event::PluginRefused {
            plugin: plugin.to_string(),
            digest: None,
            rule: rule.to_string(),
            reasons: vec![crate::validate::shown(reason)],
        };
        if let Err(e) = host.log().append(vec![ev]).await {
            tracing::error!("event log: {e}");
        }
    }

    /// Re-activate `digest` (default: the version before the serving one).
    pub async fn plugins_rollback(
        &self,
        plugin: &str,
        digest: Option<&str>,
        by: &str,
    ) -> Result<Activation, ApiError> {
        plugin_known(self, plugin)?;
        let history: Vec<Event> = self
            .records()?
            .into_iter()
            .filter(|r| r.event.plugin() == Some(plugin))
            .map(|r| r.event)
            .collect();
        let host = self.host()?;
        Ok(host
            .rollback_plugin(plugin, digest, by, &history)
            .await?
            .into())
    }

    /// Pin a plugin to `digest` (`None`: unpin).
    pub async fn plugins_pin(
        &self,
        plugin: &str,
        digest: Option<&str>,
        by: &str,
    ) -> Result<PinReport, ApiError> {
        plugin_known(self, plugin)?;
        let host = self.host()?;
        host.pin_plugin(plugin, digest, by).await?;
        Ok(PinReport {
            plugin: plugin.to_string(),
            pinned: host.pinned(plugin),
            serving: host.generation().plugin(plugin).map(|p| p.digest.clone()),
        })
    }

    /// Per plugin: serving, activated and pinned digests. Without a host,
    /// from the log alone.
    pub fn plugins_versions(&self) -> Result<VersionsList, ApiError> {
        let host = self.existing_host();
        let generation = host.as_ref().map(|h| h.generation());
        let (mut activated, mut pinned) = (
            std::collections::HashMap::new(),
            std::collections::HashMap::new(),
        );
        if host.is_none() {
            for r in self.records()? {
                match r.event {
                    Event::PluginActivated { plugin, digest, .. } => {
                        activated.insert(plugin, digest);
                    }
                    Event::PluginPinned { plugin, digest, .. } => {
                        pinned.insert(plugin, digest);
                    }
                    _ => {}
                }
            }
        }
        let plugins = self
            .deployment()
            .plugins
            .values()
            .map(|p| PluginVersion {
                plugin: p.name.clone(),
                serving: generation
                    .as_ref()
                    .and_then(|g| g.plugin(&p.name))
                    .map(|l| l.digest.clone()),
                activated: match &host {
                    Some(h) => h.activated(&p.name),
                    None => activated.get(&p.name).cloned(),
                },
                pinned: match &host {
                    Some(h) => h.pinned(&p.name),
                    None => pinned.get(&p.name).cloned().flatten(),
                },
                config_pin: p.digest.clone(),
            })
            .collect();
        Ok(VersionsList { plugins })
    }

    /// The plugin's version events, from the log.
    pub fn plugins_history(&self, plugin: &str) -> Result<PluginHistory, ApiError> {
        plugin_known(self, plugin)?;
        let events = self
            .records()?
            .into_iter()
            .filter(|r| r.event.plugin() == Some(plugin))
            .filter_map(|r| {
                let (digest, by, detail) = match &r.event {
                    Event::PluginLoaded { digest, .. } => {
                        (Some(digest.clone()), None, "loaded".to_string())
                    }
                    Event::PluginPushed {
                        digest, by, source, ..
                    } => (Some(digest.clone()), Some(by.clone()), source.clone()),
                    Event::PluginActivated {
                        digest,
                        previous,
                        by,
                        ..
                    } => (
                        Some(digest.clone()),
                        Some(by.clone()),
                        format!("was {}", previous.as_deref().unwrap_or("-")),
                    ),
                    Event::PluginRefused {
                        digest,
                        rule,
                        reasons,
                        ..
                    } => (
                        digest.clone(),
                        None,
                        format!(
                            "[{rule}] {}",
                            reasons.first().map(String::as_str).unwrap_or("")
                        ),
                    ),
                    Event::PluginPinned { digest, by, .. } => (
                        digest.clone(),
                        Some(by.clone()),
                        if digest.is_some() {
                            "pinned"
                        } else {
                            "unpinned"
                        }
                        .to_string(),
                    ),
                    _ => return None,
                };
                Some(HistoryEntry {
                    seq: r.seq,
                    time_ms: r.time_ms,
                    kind: r.event.kind().to_string(),
                    digest,
                    by,
                    detail,
                })
            })
            .collect();
        Ok(PluginHistory {
            plugin: plugin.to_string(),
            events,
        })
    }

    /// What version `b` of a plugin can do that `a` could not, and the
    /// reverse: imports (writes marked), granted functions, hosts, secrets.
    pub async fn plugins_diff(
        &self,
        plugin: &str,
        a: &str,
        b: &str,
    ) -> Result<PluginDiff, ApiError> {
        plugin_known(self, plugin)?;
        for d in [a, b] {
            if !charter_runtime::hot::store::valid_digest(d) {
                return Err(ApiError::usage(format!(
                    "{} is not a digest (sha256:<64 hex>); see `charter plugins history {plugin}`",
                    crate::validate::shown(d)
                )));
            }
        }
        let host = self.host()?;
        let (ia, ib) = (
            host.inspect_version(plugin, a).await?,
            host.inspect_version(plugin, b).await?,
        );
        let d = self.deployment();
        let spec = &d.plugins[plugin];
        let reach = |insp: &charter_runtime::Inspection| {
            let imports: BTreeSet<ImportLine> = import_lines(insp).into_iter().collect();
            // `charter:host/kv@0.1.0#set` as `charter:host/kv.set`.
            let ungranted: BTreeSet<String> = charter_runtime::check_imports(&d, spec, insp)
                .iter()
                .map(|u| match u.function.split_once('#') {
                    Some((iface, f)) => format!("{}.{f}", iface.split('@').next().unwrap_or(iface)),
                    None => u.function.clone(),
                })
                .collect();
            let granted: BTreeSet<String> = imports
                .iter()
                .map(|i| i.function.clone())
                .filter(|f| !ungranted.contains(f))
                .collect();
            let http = imports
                .iter()
                .any(|i| i.function.starts_with("wasi:http/outgoing-handler"));
            let secrets = imports
                .iter()
                .any(|i| i.function.starts_with("charter:host/secrets"));
            let hosts: BTreeSet<String> = if http {
                d.allowed_hosts(spec).into_iter().collect()
            } else {
                BTreeSet::new()
            };
            let secrets: BTreeSet<String> = if secrets {
                d.granted_secrets(spec).into_iter().collect()
            } else {
                BTreeSet::new()
            };
            (imports, granted, hosts, secrets, ungranted)
        };
        let (a_imp, a_gr, a_hosts, a_sec, _) = reach(&ia);
        let (b_imp, b_gr, b_hosts, b_sec, b_ungranted) = reach(&ib);
        fn minus<T: Ord + Clone>(x: &BTreeSet<T>, y: &BTreeSet<T>) -> Vec<T> {
            x.difference(y).cloned().collect()
        }
        Ok(PluginDiff {
            plugin: plugin.to_string(),
            a: a.to_string(),
            b: b.to_string(),
            imports_added: minus(&b_imp, &a_imp),
            imports_removed: minus(&a_imp, &b_imp),
            grants_added: minus(&b_gr, &a_gr),
            grants_removed: minus(&a_gr, &b_gr),
            hosts_added: minus(&b_hosts, &a_hosts),
            hosts_removed: minus(&a_hosts, &b_hosts),
            secrets_added: minus(&b_sec, &a_sec),
            secrets_removed: minus(&a_sec, &b_sec),
            b_ungranted: b_ungranted.into_iter().collect(),
        })
    }
}

/// `charter config apply` / `POST /v1/config/apply`: the running host
/// re-read the file it started with and applied it, or refused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigApplyReport {
    pub digest: String,
    pub previous: String,
    /// The host's generation number after the swap.
    pub generation: u64,
    /// Names added, removed or changed, by kind (grants, policies,
    /// workflows, identities, plugins).
    pub changes: serde_json::Value,
    /// The file is what serves already: nothing was recorded or swapped.
    pub unchanged: bool,
}

impl Control {
    /// Apply the deployment file again through the running host, as `by`
    /// (an operator): checked in full, then it serves; refused (exit 1,
    /// HTTP 422, `config-refused`) with the serving configuration going on.
    pub async fn config_apply(&self, by: &str) -> Result<ConfigApplyReport, ApiError> {
        let Some(host) = self.existing_host() else {
            return Err(ApiError::usage(
                "no host is serving this deployment: a configuration applies live only in `charter up`; without one, the next command reads charter.toml as it is",
            ));
        };
        match host
            .apply_config(by, charter_runtime::hot::config::ApplySource::Api)
            .await
        {
            Ok(a) => Ok(ConfigApplyReport {
                digest: a.digest,
                previous: a.previous,
                generation: a.generation,
                changes: a.changes,
                unchanged: a.unchanged,
            }),
            Err(e) => Err(ApiError::new(
                ErrorClass::Error,
                "config-refused",
                e.to_string(),
            )),
        }
    }
}
