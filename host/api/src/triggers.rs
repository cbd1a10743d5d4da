//! Runs started by triggers (`charter up`'s webhooks and schedules), and
//! what `charter check` shows of each workflow's triggers.

use charter_audit::TriggerRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ApiError, Control, validate};

/// The answer to a webhook delivery: the run it started, or the run the
/// same delivery started before (`duplicate`, nothing started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStarted {
    pub ok: bool,
    pub run: String,
    /// `started`, or `duplicate` for a delivery seen before.
    pub status: String,
    pub duplicate: bool,
}

/// One trigger of a workflow, as `charter check` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerInfo {
    pub workflow: String,
    /// `webhook` or `schedule`.
    pub kind: String,
    /// A webhook's path: `/hooks/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How a delivery proves itself: `hmac-sha256 (secret NAME)`,
    /// `token (A, B)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<String>,
    /// The header whose value deduplicates deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `skip` or `run-once`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<String>,
    /// The next tick after now, RFC 3339 in the schedule's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<String>,
}

impl std::fmt::Display for TriggerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind.as_str() {
            "webhook" => write!(
                f,
                "workflow {}: webhook POST {} ({}; delivery id in {})",
                self.workflow,
                self.path.as_deref().unwrap_or("?"),
                self.auth.join(" or "),
                self.delivery_header.as_deref().unwrap_or("?"),
            ),
            _ => write!(
                f,
                "workflow {}: schedule {:?} in {} (missed ticks: {}), next {}",
                self.workflow,
                self.cron.as_deref().unwrap_or("?"),
                self.timezone.as_deref().unwrap_or("UTC"),
                self.missed.as_deref().unwrap_or("skip"),
                self.next_fire.as_deref().unwrap_or("never"),
            ),
        }
    }
}

/// Every trigger of `d`'s workflows, the next fire times counted from
/// `now_ms`.
pub fn triggers_of(d: &charter_config::Deployment, now_ms: u64) -> Vec<TriggerInfo> {
    let mut out = Vec::new();
    for w in d.workflows.values() {
        let base = TriggerInfo {
            workflow: w.name.clone(),
            kind: String::new(),
            path: None,
            auth: vec![],
            delivery_header: None,
            cron: None,
            timezone: None,
            missed: None,
            next_fire: None,
        };
        if let Some(h) = &w.triggers.webhook {
            let mut auth = Vec::new();
            if let Some(s) = &h.secret {
                auth.push(format!("hmac-sha256 (secret {s})"));
            }
            if !h.identities.is_empty() {
                auth.push(format!("token ({})", h.identities.join(", ")));
            }
            out.push(TriggerInfo {
                kind: "webhook".into(),
                path: Some(format!("/hooks/{}", h.name)),
                auth,
                delivery_header: Some(h.delivery_header.clone()),
                ..base.clone()
            });
        }
        if let Some(s) = &w.triggers.schedule {
            out.push(TriggerInfo {
                kind: "schedule".into(),
                cron: Some(s.cron.clone()),
                timezone: Some(s.timezone.clone()),
                missed: Some(s.missed.as_str().into()),
                next_fire: s.next_after_ms(now_ms).and_then(|t| s.local_time(t)),
                ..base
            });
        }
    }
    out
}

impl Control {
    /// Start a run of `workflow` for trigger `t` (a webhook delivery, a
    /// schedule's tick), once: a trigger that started a run before answers
    /// that run and starts nothing. `initiator` is who the run records as
    /// its initiator: the token's identity, or `hook:<name>` /
    /// `schedule:<workflow>`. The run is driven in the background.
    pub async fn start_triggered(
        &self,
        workflow: &str,
        input: Value,
        initiator: &str,
        t: TriggerRef,
    ) -> Result<HookStarted, ApiError> {
        validate::json_size("the input", &input)?;
        let host = self.host()?;
        // The start and the hand-off to a driver are one task of their
        // own: a sender that hangs up mid-request (its future dropped)
        // cannot leave a recorded run that nobody drives.
        let (workflow, initiator) = (workflow.to_string(), initiator.to_string());
        // An identity that delivered with its bearer credential is recorded
        // as proven by it (in this task: the caller's scope does not reach).
        let how: Option<&'static str> = match t.auth.as_str() {
            "token" => Some("token"),
            "oidc" => Some("oidc"),
            _ => None,
        };
        let started = tokio::spawn(async move {
            let start = host.start_triggered_run(&workflow, input, &initiator, t);
            let started = match how {
                Some(how) => charter_runtime::proven(&initiator, how, start).await,
                None => start.await,
            }?;
            // A duplicate of a run that has not ended is driven too: the
            // first delivery's drive may never have happened (a crash
            // between its record and its drive). A driver already on it
            // keeps it (the lease), and a run that waits for people
            // waits on.
            let ended = started.duplicate
                && host
                    .run(&started.run)
                    .is_some_and(|st| st.status.is_terminal());
            if !ended {
                host.drive_soon(&started.run);
            }
            Ok::<_, charter_runtime::workflow::RunError>(started)
        })
        .await
        .map_err(|e| ApiError::internal(&e))??;
        Ok(HookStarted {
            ok: true,
            status: if started.duplicate {
                "duplicate"
            } else {
                "started"
            }
            .into(),
            run: started.run,
            duplicate: started.duplicate,
        })
    }

    /// The last tick schedule `workflow` started a run for (Unix ms).
    pub fn last_tick(&self, workflow: &str) -> Result<Option<u64>, ApiError> {
        Ok(self.host()?.last_tick(workflow))
    }

    /// Record `count` refused deliveries of `hook` (`hook-refused`).
    pub async fn record_hook_refused(
        &self,
        hook: &str,
        reason: &str,
        count: u64,
        detail: &str,
    ) -> Result<(), ApiError> {
        let host = self.host()?;
        host.record_hook_refused(hook, reason, count, detail)
            .await?;
        Ok(())
    }
}
