//! `charter up`: serve the deployment's control API over HTTP until
//! SIGTERM or Ctrl-C.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use charter_api::{Access, Control};
use charter_runtime::Host;
use charter_runtime::error::EXIT_OK;

pub async fn up(
    config: &crate::ConfigArg,
    listen: &str,
    drain_timeout: Duration,
    watch: bool,
    node: Option<String>,
) -> Result<i32> {
    let deployment = config.load()?;
    let endpoint = deployment.data_dir.join(charter_runtime::SERVICE_FILE);
    if let Some(other) = charter_runtime::service_url(&deployment.data_dir) {
        bail!(
            "charter up is already serving {} at {other}; stop it (SIGTERM) before starting another",
            deployment.name
        );
    }
    if !charter_auth::Authenticator::new(&deployment).requires_tokens() {
        bail!(
            "{} declares no token and no [oidc] issuer, so nobody could prove who they are to the API: mint one with `charter tokens create NAME` and add its hash under [identities.NAME]",
            config.path().display()
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut options =
        charter_api::host_options(&deployment).map_err(|e| anyhow::anyhow!(e.message))?;
    if let Some(node) = node {
        charter_runtime::check_node_name(&node).map_err(|e| anyhow::anyhow!("--node: {e}"))?;
        options.node = Some(node);
    }
    let host = Arc::new(Host::new(deployment, options)?);
    let control = Arc::new(Control::with_host(host.clone(), Access::Remote));
    // An [oidc] jwks_url is fetched once now (bounded); later only when a
    // JWT names a kid the keys do not hold, at most once per interval.
    control.refresh_oidc_keys().await;
    // A watched file swaps code in as a push does, so it needs the same
    // proof: the operator who starts the watch, by CHARTER_TOKEN, and every
    // change it pushes is recorded as theirs.
    let watcher = match watch {
        false => None,
        true => Some(watch_operator(&control).await?),
    };
    write_endpoint(&endpoint, &format!("http://{addr}"))?;
    let service = charter_server::Service::new();
    // Runs a crash or a stop left running go on, retries and proposal
    // expiries fire on time (the timers drive each due run in its own
    // task); schedules start their runs.
    host.start_timers();
    charter_server::schedules::start(control.clone());
    if let Some((name, how)) = watcher {
        // Changed plugin files go through the push pipeline (`hot/watch.rs`).
        charter_runtime::hot::watch::start(
            host.clone(),
            config.path(),
            Duration::from_millis(500),
            name,
            how,
        );
    }
    service.set_ready();
    println!(
        "charter up: serving {} at http://{addr}",
        control.deployment().name
    );
    // SIGTERM: stop intake (503), let the steps in flight finish (bounded),
    // then stop serving.
    let (draining, stopping) = (service.clone(), host.clone());
    let drained = async move {
        stop_signal().await;
        draining.drain();
        stopping.drain().stop();
        eprintln!(
            "charter up: stopping; waiting up to {} s for the steps in flight",
            drain_timeout.as_secs()
        );
        let left = stopping.drain().idle(drain_timeout).await;
        if left > 0 {
            tracing::warn!(
                runs = left,
                "steps still running at the drain timeout: they are re-run from their journal at the next start"
            );
        }
    };
    let served = charter_server::serve_with(control, service, listener, drained).await;
    let _ = std::fs::remove_file(&endpoint);
    host.store().flush()?;
    served.context("serving the API")?;
    eprintln!("charter up: stopped");
    Ok(EXIT_OK)
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn write_endpoint(path: &Path, url: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Readable by this user only, and whole or absent: the CLI trusts it
    // with its token only when no one else could have written it.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let doc = serde_json::json!({"url": url, "pid": std::process::id()});
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(doc.to_string().as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The operator `--watch` pushes as: `CHARTER_TOKEN` must prove an
/// identity holding the role `operator` (as `charter plugins push` needs).
async fn watch_operator(control: &Control) -> Result<(String, &'static str)> {
    let Ok(token) = std::env::var("CHARTER_TOKEN") else {
        bail!(
            "--watch swaps in plugin code as `charter plugins push` does, so it needs the same proof: set CHARTER_TOKEN to the token of an identity with the role \"operator\"; every change it loads is recorded as theirs"
        );
    };
    let p = control
        .principal_refreshing(charter_api::Credential::Token(token.trim()))
        .await
        .map_err(|e| anyhow::anyhow!("--watch: CHARTER_TOKEN: {}", e.message))?;
    if !p.has_role("operator") {
        bail!(
            "--watch: {} does not hold the role \"operator\" that pushing plugin code needs",
            p.name
        );
    }
    Ok((p.name, p.method.as_str()))
}
