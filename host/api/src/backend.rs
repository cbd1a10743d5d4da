//! The deployment's backend (`[deployment] backend`), opened here: this
//! is the front ends' composition root, so `charter-runtime` links no
//! database client. The file log + sled stay the default; a PostgreSQL
//! deployment gets its log ([`charter_pg::PgLog`]) and its indexes
//! ([`charter_pg::PgStore`]) through [`HostOptions`], and read-only
//! commands read its rows ([`charter_pg::read_records`]) instead of
//! `events.log`.
//!
//! Errors name the setting and the fix, never the URL's password: a URL
//! is shown only as [`charter_config::Backend::shown`] shows it, and a
//! database error's text is scrubbed of the password first.

use std::sync::Arc;

use charter_config::{Backend, Deployment};
use charter_runtime::HostOptions;

use crate::error::ApiError;

/// Where a deployment's log lives, resolved (a secret read).
pub(crate) enum Resolved {
    File,
    Postgres {
        url: String,
        /// What may be shown of it.
        shown: String,
    },
}

/// The deployment's backend with its URL read (from the file or its
/// secret). A secret that cannot be read, or a string that is no
/// connection string, is an error naming `[deployment] backend`.
pub(crate) fn resolve(d: &Deployment) -> Result<Resolved, ApiError> {
    let (url, shown) = match &d.backend {
        Backend::File => return Ok(Resolved::File),
        Backend::Postgres(url) => (url.clone(), d.backend.shown()),
        Backend::PostgresSecret(name) => {
            let url = charter_runtime::capabilities::read_secret(&d.secrets, name)
                .map_err(|e| {
                    ApiError::invalid(format!(
                        "[deployment] backend: {e}; set it to the PostgreSQL URL (postgres://USER:PASSWORD@HOST/DB)"
                    ))
                })?;
            (url, d.backend.shown())
        }
    };
    charter_pg::check_url(&url)
        .map_err(|e| ApiError::invalid(format!("[deployment] backend {shown}: {e}")))?;
    Ok(Resolved::Postgres { url, shown })
}

/// The error for a database that cannot be used: names the setting, the
/// server as shown, what failed (scrubbed) and the fix.
fn unreachable(shown: &str, url: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::invalid(format!(
        "[deployment] backend {shown}: {}. Check that the PostgreSQL server runs and accepts this user, and that the URL (or its secret) is right; nothing was written. Remove `backend` to use the data directory's own log instead",
        charter_pg::scrub(url, &e.to_string())
    ))
}

/// The environment variable that names this process's node on a shared
/// backend (`charter up --node NAME` sets [`HostOptions::node`] itself).
pub const NODE_ENV: &str = "CHARTER_NODE";

/// How to build a [`charter_runtime::Host`] for `d`: the default for the
/// file log; for PostgreSQL, its store (opened now: an unreachable server
/// fails here, before the host writes anything), its log's opener (a node
/// of the shared log, named by [`NODE_ENV`] or `default`).
pub fn host_options(d: &Deployment) -> Result<HostOptions, ApiError> {
    let (url, shown) = match resolve(d)? {
        Resolved::File => return Ok(HostOptions::default()),
        Resolved::Postgres { url, shown } => (url, shown),
    };
    let store =
        charter_pg::PgStore::open(&url, &d.name).map_err(|e| unreachable(&shown, &url, &e))?;
    let name = d.name.clone();
    Ok(HostOptions {
        store: Some(Arc::new(store)),
        node: std::env::var(NODE_ENV).ok().filter(|n| !n.is_empty()),
        log: Some(Box::new(move |applied, node, apply| {
            let node = charter_pg::Node {
                store: name.clone(),
                name: node.to_string(),
            };
            let log =
                charter_pg::PgLog::open_shared(&url, &name, node, applied, apply).map_err(|e| {
                    charter_audit::LogError::Io {
                        path: format!("[deployment] backend {shown}").into(),
                        source: std::io::Error::other(charter_pg::scrub(&url, &e.to_string())),
                    }
                })?;
            Ok(Arc::new(log) as Arc<dyn charter_audit::DynLog>)
        })),
        ..Default::default()
    })
}

/// The records of `d`'s log on PostgreSQL, read without the writer's
/// lock; `None` for the file log.
pub(crate) fn shared_records(
    d: &Deployment,
) -> Result<Option<Vec<charter_audit::Record>>, ApiError> {
    match resolve(d)? {
        Resolved::File => Ok(None),
        Resolved::Postgres { url, shown } => charter_pg::read_records(&url, &d.name)
            .map(Some)
            .map_err(|e| unreachable(&shown, &url, &e)),
    }
}

/// `d`'s log on PostgreSQL walked whole ([`charter_pg::verify`]), with
/// the server as shown.
pub(crate) fn shared_verify(
    d: &Deployment,
) -> Result<(charter_audit::Verification, String), ApiError> {
    match resolve(d)? {
        Resolved::File => Err(ApiError::invalid(
            "the deployment's log is a file, not on PostgreSQL".to_string(),
        )),
        Resolved::Postgres { url, shown } => charter_pg::verify(&url, &d.name)
            .map(|v| (v, shown.clone()))
            .map_err(|e| unreachable(&shown, &url, &e)),
    }
}

/// The nodes of `d`'s deployment on PostgreSQL as they recorded
/// themselves, with the leases each holds, read from the store without a
/// host (no node name taken, no row written; like every opener of the
/// store it creates Charter's tables in an empty database).
pub(crate) fn shared_nodes(d: &Deployment) -> Result<NodesReport, ApiError> {
    let (url, shown) = match resolve(d)? {
        Resolved::File => {
            return Err(ApiError::invalid(format!(
                "{}: nodes are the processes sharing a deployment on PostgreSQL; this one's log is a file in {}, which one process writes. Set [deployment] backend to a postgres:// URL to run several",
                d.name,
                d.data_dir.display()
            )));
        }
        Resolved::Postgres { url, shown } => (url, shown),
    };
    let store =
        charter_pg::PgStore::open(&url, &d.name).map_err(|e| unreachable(&shown, &url, &e))?;
    let now = charter_audit::now_ms();
    let mut nodes = charter_runtime::index::nodes(&store, now)
        .map_err(|e| ApiError::invalid(charter_pg::scrub(&url, &e.to_string())))?;
    nodes.sort_by(|a, b| a.record.node.cmp(&b.record.node));
    Ok(NodesReport {
        deployment: d.name.clone(),
        backend: shown,
        now_ms: now,
        nodes,
    })
}

/// `charter nodes`: the processes driving a shared deployment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodesReport {
    pub deployment: String,
    /// The backend as it may be shown (no password).
    pub backend: String,
    pub now_ms: u64,
    pub nodes: Vec<charter_runtime::index::NodeView>,
}
