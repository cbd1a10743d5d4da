//! Hot loading: new plugin versions while the host runs.
//!
//! What serves is a [`Generation`]: the loaded version of each plugin,
//! immutable, replaced as a whole (`Host::generation`), so an operation
//! that reads it once sees one consistent set. A version sent to the host
//! ([`Host::push_plugin`], a rollback) goes through the same load-time
//! check as any load, against the grants in force; only a version that
//! passes replaces the serving one, and a refused one leaves it serving
//! (`plugin-refused` names why). Each step is an event: `plugin-pushed`,
//! then `plugin-activated` or `plugin-refused`; `plugin-pinned` makes one
//! digest the only acceptable one. The index keeps the last activation and
//! pin per plugin (`@meta active:NAME`, `pin:NAME`), so after a restart the
//! last activated version serves, not the file `charter.toml` names.
//!
//! A run records at its start the digest of every plugin its workflow
//! names (`run-started.plugins`) and every attempt of that run, after a
//! push or a restart too, runs those bytes, read from the plugin store
//! (`store.rs`) and re-verified. The grants are those in force now: a run
//! keeps its code, not authority that was revoked.
//!
//! The configuration (`charter.toml`: grants, policies, workflows,
//! identities) is part of the generation (`config.rs`): a changed file is
//! applied live ([`Host::apply_config`], `charter config apply`, `--watch`)
//! only after the checks `charter check` makes and every plugin's load
//! against the new grants; it replaces configuration and plugins in one
//! swap. A run keeps its workflow definition (kept by digest), not the
//! authority the new configuration revoked.

pub mod config;
pub mod store;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use charter_audit::{Event, Record};
use serde::Serialize;

use crate::error::LoadError;
use crate::inspect::{ImportClass, Inspection, digest};
use crate::{Host, LoadedPlugin, index};

/// Versions besides the serving ones kept loaded for runs that recorded
/// them; past this the oldest-used is dropped and loaded again if needed.
pub const MAX_KEPT_VERSIONS: usize = 32;

/// What serves: the configuration in force and one loaded version per
/// plugin, linked under it (plugins load on first use).
#[derive(Debug)]
pub struct Generation {
    /// Counts replacements since the host started.
    pub number: u64,
    pub config: Arc<config::Config>,
    plugins: HashMap<String, Arc<LoadedPlugin>>,
}

impl Generation {
    /// The first generation of a host: `config`, nothing loaded.
    pub(crate) fn new(config: Arc<config::Config>) -> Generation {
        Generation {
            number: 0,
            config,
            plugins: HashMap::new(),
        }
    }

    pub fn plugin(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }

    /// Plugin → serving digest, of those loaded.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.plugins
            .iter()
            .map(|(n, p)| (n.clone(), p.digest.clone()))
            .collect()
    }
}

/// Why a version sent to the host was not activated.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("plugin {name:?} is not in the deployment (plugins: {known})")]
    UnknownPlugin { name: String, known: String },
    /// Refused by the checks; recorded as `plugin-refused` with `rule`.
    #[error("{plugin}: version {digest} refused [{rule}]: {error}")]
    Refused {
        plugin: String,
        digest: String,
        rule: &'static str,
        error: LoadError,
    },
    /// A request that names nothing to act on (no earlier version, a
    /// digest that is no digest).
    #[error("{0}")]
    Invalid(String),
    #[error("event log: {0}")]
    Log(String),
}

/// An activated version.
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    pub plugin: String,
    pub digest: String,
    pub previous: Option<String>,
    /// Generation number after the swap.
    pub generation: u64,
    /// From the bytes arriving to the swap: digest, compile, check, link.
    pub swap_ms: u64,
    /// True when this digest was serving already (nothing changed).
    pub unchanged: bool,
}

/// How a version reached the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushSource {
    Push,
    Watch,
    Rollback,
}

impl PushSource {
    fn as_str(self) -> &'static str {
        match self {
            PushSource::Push => "push",
            PushSource::Watch => "watch",
            PushSource::Rollback => "rollback",
        }
    }
}

impl Host {
    /// The generation serving now (read it once per operation).
    pub fn generation(&self) -> Arc<Generation> {
        self.generation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replace the generation with one where `loaded` serves; the digest
    /// it replaced.
    fn install(&self, loaded: Arc<LoadedPlugin>) -> (Option<String>, u64) {
        let mut slot = self
            .generation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut plugins = slot.plugins.clone();
        let previous = plugins
            .insert(loaded.name.clone(), loaded)
            .map(|p| p.digest.clone());
        let number = slot.number + 1;
        *slot = Arc::new(Generation {
            number,
            config: slot.config.clone(),
            plugins,
        });
        (previous, number)
    }

    /// A first load: installed unless one serves already (a concurrent
    /// load or a push won); the one that serves. A version linked under a
    /// configuration that no longer serves (one was applied meanwhile) is
    /// not installed: the operation that loaded it uses it, as it read it.
    pub(crate) fn install_if_absent(&self, loaded: Arc<LoadedPlugin>) -> Arc<LoadedPlugin> {
        let mut slot = self
            .generation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = slot.plugins.get(&loaded.name) {
            return p.clone();
        }
        if !Arc::ptr_eq(&slot.config, &loaded.ctx.config) {
            return loaded;
        }
        let mut plugins = slot.plugins.clone();
        plugins.insert(loaded.name.clone(), loaded.clone());
        let number = slot.number + 1;
        *slot = Arc::new(Generation {
            number,
            config: slot.config.clone(),
            plugins,
        });
        loaded
    }

    /// Version `digest_` of `name`, bounded by `limit` and verified: from
    /// this data directory's plugin store, else (a deployment on a shared
    /// backend, where another node may have been sent it) from the
    /// backend's ([`store::fetch`]). A file changed on disk is refused
    /// here, not replaced from the backend.
    pub(crate) fn stored_version(
        &self,
        name: &str,
        digest_: &str,
        limit: u64,
    ) -> Result<Vec<u8>, LoadError> {
        match store::get(&self.data_dir, name, digest_, limit) {
            Err(LoadError::Read { .. }) if self.shared_log() => {
                store::fetch(&*self.services.store, &self.data_dir, name, digest_, limit)
            }
            other => other,
        }
    }

    /// Keep a loaded version's bytes where every node of a shared
    /// deployment finds them ([`store::share`]); a no-op on a file log.
    pub(crate) fn share_version(&self, digest_: &str, bytes: &[u8]) -> Result<(), String> {
        if !self.shared_log() {
            return Ok(());
        }
        store::share(&*self.services.store, digest_, bytes).map_err(|e| e.to_string())
    }

    /// A node of a shared deployment serves what another node activated
    /// (`charter plugins push`, `rollback`): for each plugin this node
    /// serves, the version the log records as last activated, if another
    /// one serves here. Loaded from the backend's store, verified, checked
    /// against the grants in force and recorded (`plugin-loaded`) as any
    /// version is; one that fails is refused (`plugin-refused`), one this
    /// plugin's pin refuses is left with a warning, the serving version
    /// goes on either way, and it is tried again after [`FOLLOW_RETRY_MS`]
    /// (a fault that passes heals; one that stays is recorded a few times
    /// an hour). Connectors are not
    /// swapped live. Run by the timers every
    /// [`crate::workflow::timers::ADOPT_EVERY`].
    pub(crate) async fn follow_activations(&self) {
        if !self.shared_log() {
            return;
        }
        let config = self.config();
        for (name, spec) in &config.deployment.plugins {
            if !spec.provides.is_empty() {
                continue;
            }
            // Not loaded here yet: its first load takes the activated one.
            let Some(serving) = self.generation().plugin(name).map(|p| p.digest.clone()) else {
                continue;
            };
            let active = match self.activated_in_log(name) {
                Ok(Some(active)) => active,
                Ok(None) => continue,
                Err(e) => {
                    // Said once per FOLLOW_RETRY_MS, not every pass.
                    let key = format!("{name}\0index");
                    let said = e.to_string();
                    if !self.follow_waits(&key, &said) {
                        tracing::warn!(plugin = %name, digest = %serving, "the serving version goes on: {said}");
                        self.follow_failed_at(&key, &said);
                    }
                    continue;
                }
            };
            if active == serving || self.follow_waits(name, &active) {
                continue;
            }
            let _one = self.pushes.lock().await;
            // Again under the lock: a push here, or another activation,
            // may have come meanwhile.
            if self.generation().plugin(name).map(|p| p.digest.clone()) != Some(serving.clone()) {
                continue;
            }
            let Ok(Some(active)) = self.activated_in_log(name) else {
                continue;
            };
            if active == serving {
                continue;
            }
            // A pin holds on every node: a version activated elsewhere
            // against it (a pin and a push crossing on two nodes) is not
            // served here.
            if let Some(pin) = self.pinned(name).filter(|p| *p != active) {
                tracing::warn!(plugin = %name, digest = %active, pinned = %pin, "another node activated a version this plugin's pin refuses; the serving version goes on");
                self.follow_failed_at(name, &active);
                continue;
            }
            match self.load_version(name, &active).await {
                Ok(p) => {
                    if let Some(old) = self.generation().plugin(name) {
                        self.keep(old.clone());
                    }
                    let (_, number) = self.install(p);
                    tracing::info!(plugin = %name, digest = %active, previous = %serving, generation = number, "activated on this node (another node activated it)");
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, digest = %active, "another node activated a version this node cannot serve; the serving version goes on (tried again in {} s): {e}", FOLLOW_RETRY_MS / 1000);
                    self.follow_failed_at(name, &active);
                }
            }
        }
    }

    /// Whether a version of `name` this node failed to follow waits for
    /// its next try ([`FOLLOW_RETRY_MS`]).
    fn follow_waits(&self, name: &str, digest_: &str) -> bool {
        self.follow_failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .is_some_and(|(d, at)| d == digest_ && charter_audit::now_ms() < at + FOLLOW_RETRY_MS)
    }

    fn follow_failed_at(&self, name: &str, digest_: &str) {
        self.follow_failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                name.to_string(),
                (digest_.to_string(), charter_audit::now_ms()),
            );
    }

    /// The digest last activated for `name` (from the index), if any.
    pub fn activated(&self, name: &str) -> Option<String> {
        self.services
            .store
            .get(index::META, &format!("active:{name}"))
            .ok()
            .flatten()
    }

    /// The version of `name` that serves after a restart, as the *log*
    /// recorded it: the index's `active:NAME` only says where to look (its
    /// `plugin-activated` record's position); the record there must be that
    /// activation, so an edited index cannot choose the code that runs. An
    /// index that cannot be read, or disagrees with the log, refuses the
    /// load (it is rebuilt from the log when moved aside).
    ///
    /// A shared log is asked directly for the plugin's last activation (an
    /// indexed query on PostgreSQL; see [`Host::last_activation`]):
    /// whoever can write the database cannot set the index back to an
    /// earlier genuine activation. (A file log's index is this host's own
    /// sled store, which nothing else opens while it runs.)
    pub(crate) fn activated_in_log(&self, name: &str) -> Result<Option<String>, LoadError> {
        let store = &self.services.store;
        let refuse = |detail: String| LoadError::IndexDisagrees {
            plugin: name.to_string(),
            detail,
            state: self.data_dir.join("state"),
        };
        if self.shared_log() {
            return self.last_activation(name);
        }
        let get = |key: String| {
            store
                .get(index::META, &key)
                .map_err(|e| refuse(format!("the state index cannot be read ({e})")))
        };
        let Some(digest) = get(format!("active:{name}"))? else {
            return Ok(None);
        };
        let recorded = match get(format!("active-at:{name}"))?.and_then(|p| p.parse().ok()) {
            Some(at) => self
                .services
                .log
                .read_at(&[at])
                .map_err(|e| refuse(format!("the event log cannot be read ({e})")))?,
            // Indexed before positions were kept: the log's last activation.
            None => self
                .services
                .log
                .read_with_positions(1, &charter_audit::Filter::all().kind("plugin-activated"))
                .map_err(|e| refuse(format!("the event log cannot be read ({e})")))?
                .into_iter()
                .map(|(r, _)| r)
                .rfind(|r| r.event.plugin() == Some(name))
                .into_iter()
                .collect(),
        };
        match recorded.first().map(|r| &r.event) {
            Some(Event::PluginActivated {
                plugin, digest: d, ..
            }) if plugin == name && *d == digest => Ok(Some(digest)),
            _ => Err(refuse(format!(
                "the state index says {digest} serves, but the event log records no such activation"
            ))),
        }
    }

    /// `name`'s last `plugin-activated` record in the (shared) log, read
    /// from the latest one this node has seen on, so a pass costs what
    /// came since. One seen before that the log no longer holds (rows
    /// deleted) is refused.
    fn last_activation(&self, name: &str) -> Result<Option<String>, LoadError> {
        let seen = self
            .activations_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied();
        let filter = charter_audit::Filter::all()
            .kind("plugin-activated")
            .plugin(name);
        let last = self
            .services
            .log
            .read_with_positions(seen.unwrap_or(1), &filter)
            .map_err(|e| LoadError::LogUnreadable {
                plugin: name.to_string(),
                detail: e.to_string(),
            })?
            .into_iter()
            .map(|(r, _)| r)
            .rfind(|r| r.event.plugin() == Some(name));
        match (last, seen) {
            (
                Some(Record {
                    seq,
                    event: Event::PluginActivated { digest, .. },
                    ..
                }),
                _,
            ) => {
                self.activation_seen(name, seq);
                Ok(Some(digest))
            }
            (_, Some(seq)) => Err(LoadError::ActivationGone {
                plugin: name.to_string(),
                seq,
            }),
            (_, None) => Ok(None),
        }
    }

    /// Note that `name`'s activation at `seq` was read or appended here
    /// (the latest one seen stays).
    pub(crate) fn activation_seen(&self, name: &str, seq: u64) {
        let mut seen = self
            .activations_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = seen.entry(name.to_string()).or_insert(seq);
        *s = (*s).max(seq);
    }

    /// The digest `name` is pinned to by `charter plugins pin`, if any.
    pub fn pinned(&self, name: &str) -> Option<String> {
        self.services
            .store
            .get(index::META, &format!("pin:{name}"))
            .ok()
            .flatten()
    }

    /// The serving digest of each plugin `names` lists (loading those not
    /// loaded yet); those that cannot load are left out (their step fails
    /// as it would have).
    pub(crate) async fn serving_digests(&self, names: Vec<String>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for name in names {
            if let Ok(p) = self.load(&name).await {
                out.insert(name, p.digest.clone());
            }
        }
        out
    }

    /// Version `digest` of `name` for a run that recorded it: the serving
    /// one if it is that, else a kept one, else loaded from the plugin
    /// store (verified) through the load-time check against the grants in
    /// force.
    pub(crate) async fn load_version(
        &self,
        name: &str,
        digest_: &str,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let serving = self.load(name).await;
        if let Ok(p) = &serving
            && p.digest == digest_
        {
            return Ok(p.clone());
        }
        let config = self.config();
        if let Some(p) = self.kept(digest_, name)
            && Arc::ptr_eq(&p.ctx.config, &config)
        {
            return Ok(p);
        }
        let spec = crate::spec_in(&config, name)?;
        let bytes = match self.stored_version(name, digest_, spec.limits.max_component_bytes) {
            Ok(b) => b,
            Err(e) => return self.refused(name, e, Some(digest_.to_string())).await,
        };
        match self.load_checked(&config, &spec, Some(bytes)).await {
            Ok(p) => {
                let ev = Event::PluginLoaded {
                    plugin: name.to_string(),
                    digest: p.digest.clone(),
                    groups: spec.groups.clone(),
                };
                if let Err(e) = self.services.log.append(vec![ev]).await {
                    tracing::error!("event log: {e}");
                }
                self.keep(p.clone());
                Ok(p)
            }
            Err((e, d)) => self.refused(name, e, d).await,
        }
    }

    fn kept(&self, digest_: &str, name: &str) -> Option<Arc<LoadedPlugin>> {
        let v = self
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.get(digest_).filter(|p| p.name == name).cloned()
    }

    fn keep(&self, p: Arc<LoadedPlugin>) {
        let mut v = self
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.len() >= MAX_KEPT_VERSIONS {
            // Any one: a run that needs it again loads it again.
            if let Some(k) = v.keys().next().cloned() {
                v.remove(&k);
            }
        }
        v.insert(p.digest.clone(), p);
    }

    /// Check `bytes` as the next version of `name` and, if it passes, make
    /// it serve new runs. Recorded: `plugin-pushed` (by `by`), then
    /// `plugin-activated` or `plugin-refused`. One push at a time. Long
    /// because it is the whole pipeline in order, each stage recorded.
    pub async fn push_plugin(
        &self,
        name: &str,
        bytes: Vec<u8>,
        by: &str,
        source: PushSource,
    ) -> Result<Activated, PushError> {
        let started = std::time::Instant::now();
        // One push (or config apply) at a time: the configuration read
        // here is the one the version is checked and installed under.
        let _one = self.pushes.lock().await;
        let config = self.config();
        let spec = crate::spec_in(&config, name).map_err(|_| PushError::UnknownPlugin {
            name: crate::record::text(name),
            known: config
                .deployment
                .plugins
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        self.record_config().await;
        let d = digest(&bytes);
        let pushed = Event::PluginPushed {
            plugin: name.to_string(),
            digest: d.clone(),
            by: by.to_string(),
            auth: self.how_proven(by),
            source: source.as_str().into(),
        };
        self.services
            .log
            .append(vec![pushed])
            .await
            .map_err(|e| PushError::Log(e.to_string()))?;
        let refuse = |rule: &'static str, error: LoadError| PushError::Refused {
            plugin: name.to_string(),
            digest: d.clone(),
            rule,
            error,
        };
        // What is checked before anything is compiled: a connector (its
        // routes are linked into its importers), the pin.
        let early = if !spec.provides.is_empty() {
            Some(LoadError::Link {
                plugin: name.to_string(),
                detail: "a connector is not swapped while the host runs (its importers are linked to it); change its file and restart".into(),
            })
        } else {
            // A pin that cannot be read refuses the push (never "no pin").
            match self.services.store.get(index::META, &format!("pin:{name}")) {
                Err(e) => Some(LoadError::IndexDisagrees {
                    plugin: name.to_string(),
                    detail: format!("its pin cannot be read from the state index ({e})"),
                    state: self.data_dir.join("state"),
                }),
                Ok(pin) => pin.filter(|p| *p != d).map(|p| LoadError::DigestMismatch {
                    plugin: name.to_string(),
                    path: store::dir(&self.data_dir),
                    pinned: p,
                    actual: d.clone(),
                }),
            }
        };
        if let Some(e) = early {
            let rule = match &e {
                LoadError::DigestMismatch { .. } => "digest-pin",
                LoadError::IndexDisagrees { .. } => "tampered",
                _ => "connector",
            };
            let Err(e) = self.refused::<()>(name, e, Some(d.clone())).await else {
                unreachable!("refused returns its error")
            };
            return Err(refuse(rule, e));
        }
        let serving = self.generation().plugin(name).map(|p| p.digest.clone());
        let loaded = match self.load_checked(&config, &spec, Some(bytes)).await {
            Ok(p) => p,
            Err((e, _)) => {
                let rule = rule_of(&e);
                let Err(e) = self.refused::<()>(name, e, Some(d.clone())).await else {
                    unreachable!("refused returns its error")
                };
                return Err(refuse(rule, e));
            }
        };
        // Activated only once kept: a version the store cannot give back
        // (disk full, permissions) could not serve after a restart, nor
        // resume the runs that record it; on a shared backend, kept there
        // too, or the other nodes could not serve it.
        let limit = spec.limits.max_component_bytes;
        let kept = self.stored_version(name, &d, limit).and_then(|b| {
            self.share_version(&d, &b).map_err(|e| LoadError::Read {
                plugin: name.to_string(),
                path: store::SHARED.into(),
                source: std::io::Error::other(format!(
                    "the deployment's backend cannot keep it for the other nodes: {e}"
                )),
            })
        });
        if let Err(e) = kept {
            let Err(e) = self.refused::<()>(name, e, Some(d.clone())).await else {
                unreachable!("refused returns its error")
            };
            return Err(refuse("not-stored", e));
        }
        let previous = serving.or_else(|| self.activated(name));
        let ev = Event::PluginActivated {
            plugin: name.to_string(),
            digest: d.clone(),
            previous: previous.clone(),
            by: by.to_string(),
        };
        let seq = self
            .services
            .log
            .append(vec![ev])
            .await
            .map_err(|e| PushError::Log(e.to_string()))?;
        self.activation_seen(name, seq);
        if let Some(old) = self.generation().plugin(name) {
            // Runs that recorded the version replaced keep running it.
            self.keep(old.clone());
        }
        let (_, number) = self.install(loaded);
        let swap_ms = started.elapsed().as_millis() as u64;
        tracing::info!(plugin = %name, digest = %d, previous = ?previous, swap_ms, "activated");
        Ok(Activated {
            plugin: name.to_string(),
            unchanged: previous.as_deref() == Some(d.as_str()),
            digest: d,
            previous,
            generation: number,
            swap_ms,
        })
    }

    /// Activate an earlier version of `name` again, from the plugin store:
    /// `digest`, or the one active before the serving one.
    pub async fn rollback_plugin(
        &self,
        name: &str,
        digest_: Option<&str>,
        by: &str,
        history: &[Event],
    ) -> Result<Activated, PushError> {
        let spec = self.spec(name).map_err(|_| PushError::UnknownPlugin {
            name: crate::record::text(name),
            known: String::new(),
        })?;
        let target = match digest_ {
            Some(d) => d.to_string(),
            None => {
                let serving = match self.load(name).await {
                    Ok(p) => Some(p.digest.clone()),
                    Err(_) => self.activated(name),
                };
                previous_version(history, name, serving.as_deref()).ok_or_else(|| {
                    PushError::Invalid(format!(
                        "{name}: no earlier version is recorded; name one (`charter plugins history {name}`)"
                    ))
                })?
            }
        };
        if !store::valid_digest(&target) {
            return Err(PushError::Invalid(format!(
                "{} is not a digest (sha256:<64 hex>)",
                crate::record::text(&target)
            )));
        }
        // Only a version this plugin had: the store is shared by digest, so
        // another plugin's version is there too.
        let known = history.iter().any(|e| match e {
            Event::PluginLoaded { plugin, digest, .. }
            | Event::PluginPushed { plugin, digest, .. }
            | Event::PluginActivated { plugin, digest, .. } => plugin == name && *digest == target,
            _ => false,
        });
        if !known {
            return Err(PushError::Invalid(format!(
                "{name}: {target} is not a version the log records for this plugin (`charter plugins history {name}`)"
            )));
        }
        let bytes = self
            .stored_version(name, &target, spec.limits.max_component_bytes)
            .map_err(|e| PushError::Refused {
                plugin: name.to_string(),
                digest: target.clone(),
                rule: rule_of(&e),
                error: e,
            })?;
        self.push_plugin(name, bytes, by, PushSource::Rollback)
            .await
    }

    /// Pin `name` to `digest` (`None`: unpin): from now on a push or a
    /// rollback of any other version is refused. Recorded as
    /// `plugin-pinned` by `by`.
    pub async fn pin_plugin(
        &self,
        name: &str,
        digest_: Option<&str>,
        by: &str,
    ) -> Result<(), PushError> {
        let d = self.deployment();
        if !d.plugins.contains_key(name) {
            return Err(PushError::UnknownPlugin {
                name: crate::record::text(name),
                known: d.plugins.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        if let Some(d) = digest_
            && !store::valid_digest(d)
        {
            return Err(PushError::Invalid(format!(
                "{} is not a digest (sha256:<64 hex>)",
                crate::record::text(d)
            )));
        }
        let _one = self.pushes.lock().await;
        let ev = Event::PluginPinned {
            plugin: name.to_string(),
            digest: digest_.map(str::to_string),
            by: by.to_string(),
            auth: self.how_proven(by),
        };
        self.services
            .log
            .append(vec![ev])
            .await
            .map_err(|e| PushError::Log(e.to_string()))?;
        Ok(())
    }

    /// Inspect version `digest` of `name` from the plugin store (verified,
    /// compiled, not linked or run): what `charter plugins diff` compares.
    pub async fn inspect_version(
        &self,
        name: &str,
        digest_: &str,
    ) -> Result<Inspection, LoadError> {
        let spec = self.spec(name)?;
        let bytes = self.stored_version(name, digest_, spec.limits.max_component_bytes)?;
        let (bytes, component) = self.check_and_compile(&spec, bytes).await?;
        Ok(crate::inspect::inspect(&self.engine, &component, &bytes))
    }
}

/// How long a node waits before it tries again to serve a version another
/// node activated that it could not (see `Host::follow_activations`).
pub const FOLLOW_RETRY_MS: u64 = 300_000;

/// The version active before `serving` in `history` (a plugin's events,
/// oldest first): the `previous` of the activation that made it serve, or
/// the first load recorded of another digest.
pub fn previous_version(history: &[Event], name: &str, serving: Option<&str>) -> Option<String> {
    let mut seen: Vec<&str> = vec![];
    for e in history {
        match e {
            Event::PluginActivated { plugin, digest, .. }
            | Event::PluginLoaded { plugin, digest, .. }
                if plugin == name =>
            {
                seen.retain(|d| *d != digest.as_str());
                seen.push(digest);
            }
            _ => {}
        }
    }
    seen.into_iter()
        .rev()
        .find(|d| Some(*d) != serving)
        .map(str::to_string)
}

fn rule_of(e: &LoadError) -> &'static str {
    match e {
        LoadError::Ungranted(_) => "ungranted-import",
        LoadError::Governance(_) => "governance",
        LoadError::DigestMismatch { .. } => "digest-pin",
        LoadError::Tampered { .. } | LoadError::IndexDisagrees { .. } => "tampered",
        LoadError::TooLarge { .. } => "too-large",
        LoadError::CoreModule { .. } | LoadError::Malformed { .. } | LoadError::NotAStep { .. } => {
            "not-a-component"
        }
        _ => "load-error",
    }
}

/// One import as a reviewer reads it: `interface.function`, whether it is
/// a write (its effect leaves the host), and what it makes reachable.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImportLine {
    pub function: String,
    pub write: bool,
}

/// The capability imports of a version, one line per function.
pub fn import_lines(insp: &Inspection) -> Vec<ImportLine> {
    let mut out: Vec<ImportLine> = insp
        .imports
        .iter()
        .filter(|i| i.class == ImportClass::Capability)
        .flat_map(|i| {
            let bare = i.interface.split('@').next().unwrap_or(&i.interface);
            i.functions.iter().map(move |f| {
                let write = crate::catalog()
                    .lookup(&i.interface, f)
                    .map(|id| crate::catalog().get(id).effect() == charter_config::Effect::Write)
                    // An outbound request, a connector's function: treated
                    // as a write (its effect may leave the host).
                    .unwrap_or(!bare.starts_with("charter:host/"));
                ImportLine {
                    function: format!("{bare}.{f}"),
                    write,
                }
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
