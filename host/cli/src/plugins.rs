//! `charter plugins push|list|history|diff|pin|rollback`: hot loading,
//! through the running host (`remote.rs`) or, without one, on the data
//! directory directly.

use std::path::PathBuf;

use anyhow::Result;
use charter_api::{Activation, ApiError, PinReport, PluginDiff, PluginHistory, VersionsList};
use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use crate::ConfigArg;
use crate::commands::{fail_doc, print_json};
use crate::remote::{Remote, enc};

pub const HELP: &str = "\
Examples:
  charter plugins push target/wasm32-wasip2/release/refund_triage.wasm --plugin refund-triage
  charter plugins list
  charter plugins history refund-triage
  charter plugins diff refund-triage sha256:aaaa… sha256:bbbb…
  charter plugins pin refund-triage sha256:bbbb…     (--clear to unpin)
  charter plugins rollback refund-triage             (the version before the serving one)";

#[derive(Subcommand)]
pub enum PluginsOp {
    /// Send FILE as the next version of a plugin: checked (pin, component,
    /// imports against the grants in force), then it serves new runs.
    Push {
        /// The component file (.wasm).
        file: PathBuf,
        /// The plugin's name in the deployment.
        #[arg(long)]
        plugin: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Per plugin: the serving, activated and pinned digests.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// A plugin's loads, pushes, activations, refusals and pins.
    History {
        /// The plugin's name in the deployment.
        plugin: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The reviewer's view of version B against A: imports, granted
    /// functions, hosts and secrets added or removed (writes marked).
    Diff {
        /// The plugin's name in the deployment.
        plugin: String,
        /// The earlier version's digest (sha256:…).
        a: String,
        /// The later version's digest (sha256:…).
        b: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Accept only DIGEST for this plugin from now on (--clear: any).
    Pin {
        /// The plugin's name in the deployment.
        plugin: String,
        /// The only digest accepted from now on (sha256:…).
        #[arg(required_unless_present = "clear")]
        digest: Option<String>,
        /// Remove the pin: any version that passes the checks is accepted.
        #[arg(long, conflicts_with = "digest")]
        clear: bool,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Activate an earlier version again (DIGEST, or the one before the
    /// serving one), from the data directory's plugin store.
    Rollback {
        /// The plugin's name in the deployment.
        plugin: String,
        /// The version to serve again [default: the one before the
        /// serving one].
        digest: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

impl PluginsOp {
    pub fn config(&self) -> &ConfigArg {
        match self {
            PluginsOp::Push { config, .. }
            | PluginsOp::List { config, .. }
            | PluginsOp::History { config, .. }
            | PluginsOp::Diff { config, .. }
            | PluginsOp::Pin { config, .. }
            | PluginsOp::Rollback { config, .. } => config,
        }
    }

    /// Reads the local path answers beside a running host.
    pub fn reads(&self) -> bool {
        matches!(self, PluginsOp::List { .. } | PluginsOp::History { .. })
    }
}

fn show<T: serde::Serialize>(
    r: Result<T, ApiError>,
    json: bool,
    text: impl FnOnce(&T),
) -> Result<i32> {
    match r {
        Ok(doc) if json => print_json(&doc, true).map(|()| 0),
        Ok(doc) => {
            text(&doc);
            Ok(0)
        }
        Err(e) => fail_doc(&e, json),
    }
}

fn short(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}

fn activation_text(a: &Activation) {
    if a.unchanged {
        println!("{}: {} serves already", a.plugin, a.digest);
    } else {
        println!(
            "{}: now serving {} (was {}); swapped in {} ms, generation {}",
            a.plugin,
            a.digest,
            a.previous.as_deref().unwrap_or("-"),
            a.swap_ms,
            a.generation
        );
    }
}

fn list_text(l: &VersionsList) {
    for p in &l.plugins {
        println!(
            "{:<24} serving {:<20} activated {:<20} pinned {}",
            p.plugin,
            p.serving.as_deref().map(short).unwrap_or("-"),
            p.activated
                .as_deref()
                .map(short)
                .unwrap_or("(charter.toml)"),
            p.pinned
                .as_deref()
                .or(p.config_pin.as_deref())
                .map(short)
                .unwrap_or("-"),
        );
    }
}

fn history_text(h: &PluginHistory) {
    for e in &h.events {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_ms);
        println!(
            "#{:<6} {} {:<17} {:<20} {:<12} {}",
            e.seq,
            humantime::format_rfc3339_millis(t),
            e.kind,
            e.digest.as_deref().map(short).unwrap_or("-"),
            e.by.as_deref().unwrap_or("-"),
            e.detail
        );
    }
}

fn diff_text(d: &PluginDiff) {
    println!("{}: {} → {}", d.plugin, d.a, d.b);
    let mark = |w: bool| if w { "  (write)" } else { "" };
    for i in &d.imports_added {
        println!("+ import {}{}", i.function, mark(i.write));
    }
    for i in &d.imports_removed {
        println!("- import {}{}", i.function, mark(i.write));
    }
    for (sign, what, v) in [
        ("+", "grant", &d.grants_added),
        ("-", "grant", &d.grants_removed),
        ("+", "host", &d.hosts_added),
        ("-", "host", &d.hosts_removed),
        ("+", "secret", &d.secrets_added),
        ("-", "secret", &d.secrets_removed),
    ] {
        for x in v {
            println!("{sign} {what} {x}");
        }
    }
    for u in &d.b_ungranted {
        println!(
            "! {} imports {u}, which no grant covers: it would be refused",
            d.b
        );
    }
    if d.imports_added.is_empty() && d.imports_removed.is_empty() {
        println!("(same imports)");
    }
}

fn pin_text(p: &PinReport) {
    match &p.pinned {
        Some(d) => println!("{}: pinned to {d}", p.plugin),
        None => println!("{}: not pinned", p.plugin),
    }
}

fn read_component(file: &std::path::Path) -> Result<Vec<u8>> {
    // The host bounds it too; this only spares sending a wrong file whole.
    const MAX: u64 = 1 << 30;
    match charter_runtime::read_bounded(file, MAX)? {
        Ok(b) => Ok(b),
        Err(_) => anyhow::bail!("{} is over 1 GiB", file.display()),
    }
}

/// Through the running host.
pub async fn served(r: &Remote, op: PluginsOp) -> Result<i32> {
    match op {
        PluginsOp::Push {
            file, plugin, json, ..
        } => {
            let bytes = read_component(&file)?;
            let path = format!("/v1/plugins/{}", enc(&plugin));
            show(r.call_bytes(&path, bytes).await?, json, activation_text)
        }
        PluginsOp::List { json, .. } => show(
            r.call(Method::GET, "/v1/plugins/versions", None).await?,
            json,
            list_text,
        ),
        PluginsOp::History { plugin, json, .. } => {
            let path = format!("/v1/plugins/{}/history", enc(&plugin));
            show(r.call(Method::GET, &path, None).await?, json, history_text)
        }
        PluginsOp::Diff {
            plugin, a, b, json, ..
        } => {
            let path = format!(
                "/v1/plugins/{}/diff?a={}&b={}",
                enc(&plugin),
                enc(&a),
                enc(&b)
            );
            show(r.call(Method::GET, &path, None).await?, json, diff_text)
        }
        PluginsOp::Pin {
            plugin,
            digest,
            json,
            ..
        } => {
            let path = format!("/v1/plugins/{}/pin", enc(&plugin));
            let body = json!({ "digest": digest });
            show(
                r.call(Method::POST, &path, Some(&body)).await?,
                json,
                pin_text,
            )
        }
        PluginsOp::Rollback {
            plugin,
            digest,
            json,
            ..
        } => {
            let path = format!("/v1/plugins/{}/rollback", enc(&plugin));
            let body = json!({ "digest": digest });
            show(
                r.call(Method::POST, &path, Some(&body)).await?,
                json,
                activation_text,
            )
        }
    }
}

/// On the data directory (no host up): what is activated serves at the
/// next start.
pub async fn local(op: PluginsOp) -> Result<i32> {
    let c = charter_api::Control::new(op.config().load()?, charter_api::Access::Local);
    match op {
        PluginsOp::Push {
            file, plugin, json, ..
        } => {
            let bytes = read_component(&file)?;
            let r = match operator(&c, "push").await {
                Ok(by) => {
                    c.plugins_push(charter_api::PushRequest { plugin, bytes, by })
                        .await
                }
                Err(e) => Err(e),
            };
            show(r, json, activation_text)
        }
        PluginsOp::List { json, .. } => show(c.plugins_versions(), json, list_text),
        PluginsOp::History { plugin, json, .. } => {
            show(c.plugins_history(&plugin), json, history_text)
        }
        PluginsOp::Diff {
            plugin, a, b, json, ..
        } => show(c.plugins_diff(&plugin, &a, &b).await, json, diff_text),
        PluginsOp::Pin {
            plugin,
            digest,
            json,
            ..
        } => {
            let r = match operator(&c, "pin").await {
                Ok(by) => c.plugins_pin(&plugin, digest.as_deref(), &by).await,
                Err(e) => Err(e),
            };
            show(r, json, pin_text)
        }
        PluginsOp::Rollback {
            plugin,
            digest,
            json,
            ..
        } => {
            let r = match operator(&c, "rollback").await {
                Ok(by) => c.plugins_rollback(&plugin, digest.as_deref(), &by).await,
                Err(e) => Err(e),
            };
            show(r, json, activation_text)
        }
    }
}

/// Who pushes, pins or rolls back without a host: the identity
/// CHARTER_TOKEN proves (in a deployment without tokens, the one `$USER`
/// names), holding `operator` as the running host requires. A refusal is
/// recorded as the host records it (`auth-refused`, `missing-role`).
async fn operator(c: &charter_api::Control, what: &str) -> Result<String, ApiError> {
    use charter_api::Credential;
    let token = std::env::var("CHARTER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let user = crate::current_user();
    let p = match token.as_deref() {
        Some(t) => c.principal(Credential::Token(t))?,
        None => c.principal(Credential::Claim(&user))?,
    };
    let Err(e) = charter_api::require_operator(&p, "change plugin versions") else {
        return Ok(p.name);
    };
    let refused = charter_audit::Event::AuthRefused {
        route: format!("charter plugins {what}"),
        identity: Some(p.name.clone()),
        reason: "missing-role".into(),
    };
    if let Err(err) = c.record_auth_refusals(vec![refused]).await {
        tracing::warn!(error = %err, "cannot record the refusal");
    }
    Err(e)
}
