//! [`Control`]: the one service every front end calls.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use charter_config::Deployment;
use charter_runtime::Host;

use crate::error::ApiError;

/// Who is asking, which decides whether a request may name files of the
/// machine [`Control`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The command line: its caller is the user whose files it reads
    /// anyway (`charter inspect FILE`).
    Local,
    /// A daemon, an HTTP API, an MCP server: a request never names a path
    /// of the server (it sends contents instead), and one that does is
    /// refused.
    Remote,
}

/// Answers the requests of [`crate`] for one deployment.
///
/// Commands that change state, or run plugins, go through a
/// [`charter_runtime::Host`], created on first use (and holding the data
/// directory's lock from then on); read-only reports (runs, escalations,
/// audit, KPIs) read the event log file without a host — runs and
/// escalations through the state index when no other process holds the
/// deployment — so they answer while another process drives it.
pub struct Control {
    /// The deployment it was created for; once a host runs, the host's
    /// configuration in force is the one served ([`Control::deployment`]).
    deployment: Arc<Deployment>,
    access: Access,
    host: Mutex<Option<Arc<Host>>>,
    /// The identities and tokens of the configuration numbered `.0`
    /// (rebuilt when a host's configuration is applied).
    auth: std::sync::RwLock<(u64, Arc<charter_auth::Authenticator>)>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("deployment", &self.deployment.name)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// A service for `deployment`; no host is created (and no lock taken)
    /// until a request needs one.
    pub fn new(deployment: Deployment, access: Access) -> Control {
        Control {
            auth: std::sync::RwLock::new((
                0,
                Arc::new(charter_auth::Authenticator::new(&deployment)),
            )),
            deployment: Arc::new(deployment),
            access,
            host: Mutex::new(None),
        }
    }

    /// A service over a host that already runs (a daemon's).
    pub fn with_host(host: Arc<Host>, access: Access) -> Control {
        Control {
            auth: std::sync::RwLock::new((
                host.config().number,
                Arc::new(charter_auth::Authenticator::new(&host.deployment())),
            )),
            deployment: host.deployment(),
            access,
            host: Mutex::new(Some(host)),
        }
    }

    /// The deployment it serves: the configuration in force of its host,
    /// if one runs (read it once per request).
    /// The nodes of a deployment on PostgreSQL (`charter nodes`), read
    /// from its store without a host.
    pub fn nodes(&self) -> Result<crate::backend::NodesReport, ApiError> {
        crate::backend::shared_nodes(&self.deployment)
    }

    pub fn deployment(&self) -> Arc<Deployment> {
        match self.existing_host() {
            Some(h) => h.deployment(),
            None => self.deployment.clone(),
        }
    }

    /// The identities and tokens of the configuration in force (rebuilt
    /// once after a configuration is applied: a revoked token or role
    /// stops working at the next request).
    pub fn authenticator(&self) -> Arc<charter_auth::Authenticator> {
        let slot = || self.auth.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(host) = self.existing_host() else {
            return slot().1;
        };
        let config = host.config();
        let (number, auth) = slot();
        if number == config.number {
            return auth;
        }
        let fresh = Arc::new(auth.with_identities_of(&config.deployment));
        let mut w = self.auth.write().unwrap_or_else(|p| p.into_inner());
        if w.0 < config.number {
            *w = (config.number, fresh.clone());
        }
        fresh
    }

    /// Who it serves.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The host that serves (created on first use): for front ends that
    /// serve its tools (`/mcp`, `charter mcp`).
    pub fn serving_host(&self) -> Result<Arc<Host>, ApiError> {
        self.host()
    }

    /// The host, created on first use.
    pub(crate) fn host(&self) -> Result<Arc<Host>, ApiError> {
        let mut slot = self.host.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let options = crate::backend::host_options(&self.deployment)?;
        let h = Arc::new(Host::new((*self.deployment).clone(), options)?);
        *slot = Some(h.clone());
        Ok(h)
    }

    /// A watch of the event log's last committed sequence number: it
    /// changes after every commit (the console's live updates, `charter
    /// up`'s `GET /v1/events`). Opens the host if none is open yet.
    pub fn log_watch(&self) -> Result<tokio::sync::watch::Receiver<u64>, ApiError> {
        Ok(self.host()?.log().subscribe())
    }

    /// The host if one was created already.
    pub(crate) fn existing_host(&self) -> Option<Arc<Host>> {
        self.host.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drop the host (and the data directory's lock with it, once no
    /// request still holds it): `charter run --detach` hands the run to
    /// another process this way.
    pub fn release(&self) {
        self.host.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Flush the state store of the host, if one was created: what a
    /// command changed is on disk before it answers.
    pub(crate) fn flush(&self) -> Result<(), ApiError> {
        if let Some(h) = self.existing_host() {
            h.store().flush()?;
        }
        Ok(())
    }

    /// The event log file.
    pub fn log_path(&self) -> PathBuf {
        self.deployment.data_dir.join(charter_audit::LOG_FILE)
    }

    /// Refuse a request that names a file of this machine unless the
    /// caller is local.
    pub(crate) fn local_only(&self, what: &str) -> Result<(), ApiError> {
        match self.access {
            Access::Local => Ok(()),
            Access::Remote => Err(ApiError::refused(format!(
                "{what} names a file of the server; a remote request sends the contents instead"
            ))),
        }
    }

    /// Whether the deployment's log is on a shared backend (PostgreSQL),
    /// not in [`Control::log_path`].
    pub(crate) fn shared_backend(&self) -> bool {
        self.deployment.backend.is_postgres()
    }

    /// The log's records (none before the first command wrote one): this
    /// process's host's log when it has one on a shared backend, else read
    /// without the writer's lock (the file, or the database's rows).
    pub(crate) fn records(&self) -> Result<Vec<charter_audit::Record>, ApiError> {
        if let Some(h) = self.existing_host()
            && h.log().file().is_none()
        {
            return Ok(h.log().read_all()?);
        }
        if let Some(r) = crate::backend::shared_records(&self.deployment)? {
            return Ok(r);
        }
        let path = self.log_path();
        if !path.exists() {
            return Ok(vec![]);
        }
        Ok(charter_audit::read_records(&path)?)
    }
}

/// Load `name` through the host's load-time check inside a `load_plugin`
/// span (target `charter_api`) naming the plugin and, once known, its
/// digest: what an operator's tracing (`--log-format json`) shows of every
/// load a front end makes. (The runtime's own `load` span, inside it,
/// names the plugin only.)
pub(crate) async fn load(
    host: &Host,
    name: &str,
) -> Result<Arc<charter_runtime::LoadedPlugin>, charter_runtime::LoadError> {
    use tracing::Instrument;
    let span = tracing::info_span!("load_plugin", plugin = %name, digest = tracing::field::Empty);
    let r = host.load(name).instrument(span.clone()).await;
    if let Ok(p) = &r {
        span.record("digest", p.digest.as_str());
        span.in_scope(|| tracing::debug!(ms = p.load_time.as_millis() as u64, "loaded"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorClass, InspectRequest, ProposalId, RunId, ShowRequest};

    fn control(access: Access) -> (tempfile::TempDir, Control) {
        let dir = tempfile::tempdir().unwrap();
        let text = "[deployment]\nname = \"t\"\nphase = 1\ndata_dir = \"data\"\n";
        let d = Deployment::parse(
            text,
            &dir.path().join("charter.toml"),
            charter_runtime::host_catalog(),
        )
        .unwrap();
        (dir, Control::new(d, access))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A remote caller never makes the server read a file it names.
    #[test]
    fn remote_callers_name_no_server_path() {
        let (_dir, c) = control(Access::Remote);
        let req = InspectRequest {
            path: "/etc/shadow".into(),
        };
        let e = block_on(c.inspect(&req)).unwrap_err();
        assert_eq!(e.class, ErrorClass::Refused, "{e:?}");
        assert!(c.existing_host().is_none(), "no host for a refused request");
    }

    /// Ids, filters and event types are checked before anything is read
    /// or locked, and errors quote a bounded, escaped copy of what was sent.
    #[test]
    fn requests_are_checked_before_the_host() {
        let (_dir, c) = control(Access::Remote);
        let long = format!("R-{}\nerror: forged", "a".repeat(10_000));
        let e = c.runs_show(&RunId { id: long.clone() }).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.message.len() < 300 && !e.message.contains('\n'), "{e}");
        let e = c.proposals_show(&ProposalId { id: long }).unwrap_err();
        assert!(e.message.len() < 300 && !e.message.contains('\n'), "{e}");
        let e = c
            .audit_show(&ShowRequest {
                kind: Some("bogus".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Usage);
        let e = c
            .audit_show(&ShowRequest {
                since: Some("99999999999999999999d".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
        // A window longer than time itself is all of time, not an overflow.
        let all = c.audit_show(&ShowRequest {
            since: Some("9999999999999999d".into()),
            ..Default::default()
        });
        assert!(all.is_ok_and(|a| a.events.is_empty()));
        assert!(c.existing_host().is_none());
    }
}
