//! `charter up --watch`: the plugin files `charter.toml` names, and the
//! file itself, polled. A plugin file whose size and modification time
//! held still for one interval and whose digest changed goes through the
//! same pipeline as a push ([`Host::push_plugin`], by `watch`): checked,
//! then swapped, or refused with the serving version going on. A changed
//! `charter.toml` is parsed and checked in full (every plugin's rules and
//! the policies): a bad one is a `check-failed` event and a log line
//! naming the problem, and never replaces the one serving; a good one is
//! said to apply at the next start (grants, policies and workflows are
//! fixed for a host's life).
//!
//! Polling, not inotify: editors and build tools replace files by rename,
//! and a poll of a few stats a second sees every such replacement without
//! watches to re-arm.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use charter_audit::Event;
use charter_config::Deployment;

use super::PushSource;
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
        for (name, spec) in &host.deployment.plugins {
            let w = Watched {
                seen: stat(&spec.path),
                pending: false,
                digest: std::fs::read(&spec.path).ok().map(|b| crate::digest(&b)),
            };
            plugins.insert(name.clone(), w);
        }
        let mut conf = Watched {
            seen: stat(&config),
            ..Default::default()
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if host.drain().stopping() {
                return;
            }
            for (name, spec) in &host.deployment.plugins {
                let w = plugins.entry(name.clone()).or_default();
                if w.settled(stat(&spec.path)) {
                    let who = (by.as_str(), how);
                    let limit = spec.limits.max_component_bytes;
                    plugin_changed(&host, name, &spec.path, limit, w, who).await;
                }
            }
            if conf.settled(stat(&config)) {
                config_changed(&host, &config).await;
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

async fn config_changed(host: &Host, config: &Path) {
    let problems = match Deployment::load(config, crate::host_catalog()) {
        Err(e) => vec![crate::record::text(&e.to_string())],
        Ok(d) => d
            .violations()
            .iter()
            .map(|v| crate::record::text(&v.to_string()))
            .collect(),
    };
    if problems.is_empty() {
        tracing::warn!(
            config = %config.display(),
            "charter.toml changed and is valid; the host keeps serving the configuration it started with: restart charter up to apply it"
        );
        return;
    }
    for p in &problems {
        tracing::error!(config = %config.display(), "charter.toml changed and is refused (the serving configuration goes on): {p}");
    }
    if let Err(e) = host
        .services
        .log
        .append(vec![Event::CheckFailed { problems }])
        .await
    {
        tracing::error!("event log: {e}");
    }
}
