//! `charter up`: serve the deployment's control API over HTTP until
//! SIGTERM or Ctrl-C.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use charter_api::{Access, Control};
use charter_runtime::error::EXIT_OK;
use charter_runtime::{Host, HostOptions};

pub async fn up(config: &crate::ConfigArg, listen: &str) -> Result<i32> {
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
            "{} declares no token, so nobody could prove who they are to the API: mint one with `charter tokens create NAME` and add its hash under [identities.NAME]",
            config.path().display()
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let host = Arc::new(Host::new(deployment, HostOptions::default())?);
    let control = Arc::new(Control::with_host(host.clone(), Access::Remote));
    write_endpoint(&endpoint, &format!("http://{addr}"))?;
    // Runs a crash or a stop left running go on, retries and proposal
    // expiries fire on time; schedules start their runs.
    host.start_timers();
    charter_server::schedules::start(control.clone());
    println!(
        "charter up: serving {} at http://{addr}",
        control.deployment().name
    );
    let served = charter_server::serve(control, listener, stop_signal()).await;
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
    let doc = serde_json::json!({"url": url, "pid": std::process::id()});
    std::fs::write(path, doc.to_string()).with_context(|| format!("writing {}", path.display()))
}
