//! `charter up --watch`: the plugin files `charter.toml` names, and the
//! file itself, polled. A plugin file whose size and modification time
//! held still for one interval and whose digest changed goes through the
//! same pipeline as a push ([`Host::push_plugin`], by `watch`): checked,
//! then swapped, or refused with the serving version going on. A changed
//! `charter.toml`, or a workflow file it names, is applied as `charter
//! config apply` does ([`Host::apply_config`], by the watch's operator):
//! checked in full, then swapped in, or refused (`config-refused`) with
//! the serving configuration going on. Changes are debounced: files must
//! hold still for an interval, and one apply covers all that changed.
//!
//! Polling, not inotify: editors and build tools replace files by rename,
//! and a poll of a few stats a second sees every such replacement without
//! watches to re-arm.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::PushSource;
use super::config::ApplySource;
use crate::Host;

/// What a poll saw of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
}

fn stat(p: &Path) -> Option<Seen> {
    let m = std::fs::metadata(p).ok()?;
    Some(Seen {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// One watched file: its last stat, whether it changed since it was last
/// acted on, and the digest acted on.
#[derive(Default)]
struct Watched {
    seen: Option<Seen>,
    pending: bool,
    digest: Option<String>,
}

impl Watched {
    /// Whether the file changed and then held still for one interval.
    fn settled(&mut self, now: Option<Seen>) -> bool {
        if now != self.seen {
            self.seen = now;
            self.pending = true;
            return false;
        }
        std::mem::take(&mut self.pending)
    }
}

/// Watch `host`'s plugin files and `config` every `every` until the host
/// is dropped elsewhere and this task aborted.
pub fn start(
    host: Arc<Host>,
    config: PathBuf,
    every: Duration,
    by: String,
    how: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut plugins: HashMap<String, Watched> = HashMap::new();
        for (name, spec) in &host.deployment().plugins {
            let w = Watched {
                seen: stat(&spec.path),
                pending: false,
                digest: std::fs::read(&spec.path).ok().map(|b| crate::digest(&b)),
            };
            plugins.insert(name.clone(), w);
        }
        let mut conf: HashMap<PathBuf, Watched> = config_files(&host, &config)
            .into_iter()
            .map(|f| {
                let w = Watched {
                    seen: stat(&f),
                    ..Default::default()
                };
                (f, w)
            })
            .collect();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if host.drain().stopping() {
                return;
            }
            for (name, spec) in &host.deployment().plugins {
                let w = plugins.entry(name.clone()).or_default();
                if w.settled(stat(&spec.path)) {
                    let who = (by.as_str(), how);
                    let limit = spec.limits.max_component_bytes;
                    plugin_changed(&host, name, &spec.path, limit, w, who).await;
                }
            }
            // One apply for any number of changed files, once all of them
            // held still for an interval (an editor's save, a checkout).
            let files = config_files(&host, &config);
            conf.retain(|f, _| files.contains(f));
            let mut changed = false;
            let mut settling = false;
            for f in files {
                let w = conf.entry(f.clone()).or_default();
                changed |= w.settled(stat(&f));
                settling |= w.pending;
            }
            if changed && !settling {
                config_changed(&host, &config, (by.as_str(), how)).await;
            } else if changed {
                // Another file is still moving: act when all have settled.
                for w in conf.values_mut() {
                    w.pending |= w.seen.is_some();
                }
            }
        }
    })
}

/// `who`: the operator the watch pushes as, and how they were proven.
async fn plugin_changed(
    host: &Host,
    name: &str,
    path: &Path,
    limit: u64,
    w: &mut Watched,
    (by, how): (&str, &'static str),
) {
    let bytes = match crate::read_bounded(path, limit) {
        Ok(Ok(b)) => b,
        Ok(Err(size)) => {
            tracing::warn!(plugin = %name, size, "watched file is over max_component_mib; not loaded");
            return;
        }
        Err(e) => {
            tracing::warn!(plugin = %name, "watched file unreadable: {e}");
            return;
        }
    };
    let d = crate::digest(&bytes);
    if w.digest.as_deref() == Some(d.as_str()) {
        return;
    }
    w.digest = Some(d);
    if !still_operator(host, by).await {
        return;
    }
    let pushed = crate::proven(
        by,
        how,
        host.push_plugin(name, bytes, by, PushSource::Watch),
    );
    match pushed.await {
        Ok(a) => {
            tracing::info!(plugin = %name, digest = %a.digest, swap_ms = a.swap_ms, "watched file changed: activated")
        }
        Err(e) => tracing::warn!(plugin = %name, "watched file changed: {e}"),
    }
}

/// `charter.toml` (or a workflow file it names) changed and held still:
/// apply it as the watch's operator ([`Host::apply_config`]); a bad one is
/// refused (`config-refused`) and the serving configuration goes on.
async fn config_changed(host: &Host, config: &Path, (by, how): (&str, &'static str)) {
    if !still_operator(host, by).await {
        return;
    }
    let applied = crate::proven(by, how, host.apply_config(by, ApplySource::Watch)).await;
    match applied {
        Ok(a) if a.unchanged => {}
        Ok(a) => {
            tracing::info!(config = %config.display(), digest = %a.digest, generation = a.generation, "charter.toml changed: applied")
        }
        Err(e) => tracing::error!(config = %config.display(), "charter.toml changed: {e}"),
    }
}

/// The files a configuration is read from: `charter.toml` and each
/// workflow file it names.
fn config_files(host: &Host, config: &Path) -> Vec<PathBuf> {
    let mut files = vec![config.to_path_buf()];
    for w in host.deployment().workflows.values() {
        if !files.contains(&w.source) {
            files.push(w.source.clone());
        }
    }
    files
}

/// Whether `by`, who started the watch, still holds `operator` in the
/// configuration in force: once an applied configuration takes the role
/// (or the identity) away, the watch changes nothing more; each change it
/// would have made is refused and recorded (`auth-refused`).
async fn still_operator(host: &Host, by: &str) -> bool {
    let holds = host
        .deployment()
        .identities
        .get(by)
        .is_some_and(|i| i.roles.iter().any(|r| r == "operator"));
    if !holds {
        tracing::error!(
            by,
            "the watch's operator no longer holds `operator`: the change is not applied"
        );
        let ev = charter_audit::Event::AuthRefused {
            route: "charter up --watch".into(),
            identity: Some(by.to_string()),
            reason: "missing-role".into(),
        };
        if let Err(e) = host.log().append(vec![ev]).await {
            tracing::error!("event log: {e}");
        }
    }
    holds
}
