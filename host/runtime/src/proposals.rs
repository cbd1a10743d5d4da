//! Proposals: calls that policy routes to people ("AI proposes, human
//! decides"), and their approval, rejection, expiry and execution.
//!
//! Rules: only a declared approver holding the proposal's role may decide;
//! the plugin's owner and whoever started the work may not (separation of
//! duties); each approver counts once toward N-of-M; an expired proposal
//! counts as rejected. On the last needed approval the host executes the
//! call through the mediator again, re-checked against the policy in force,
//! with exactly the stored arguments (their digest is the one approved).
//! Every attempt, refused or not, is an event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_audit::{Decision, Event, json_digest, now_ms};
use serde_json::Value;

use crate::index::{self, ProposalState};

use crate::capabilities::catalog;
use crate::mediator::{Dispatch, Mediator};
use crate::{Host, values};

#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    #[error("no proposal {0} (see `charter proposals list`)")]
    Unknown(String),
    /// The attempt was refused by governance (recorded in the audit log).
    #[error("{id}: refused: {reason} [{rule}]")]
    Refused {
        id: String,
        rule: &'static str,
        reason: String,
    },
    #[error("{id}: {message}")]
    Failed { id: String, message: String },
}

impl ProposalError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ProposalError::Refused { .. } => crate::error::EXIT_REFUSED,
            _ => crate::error::EXIT_ERROR,
        }
    }
}

tokio::task_local! {
    /// The claim on the proposal being decided, on a log several nodes
    /// share: the decision's own appends are fenced by it.
    static DECIDING: Option<Arc<index::RunLease>>;
}

/// How long a decision waits while another node decides the same
/// proposal.
const CLAIM_WAIT: Duration = Duration::from_secs(20);

/// The lease key that claims proposal `id` for one decision (`@` keeps it
/// apart from every run id).
fn claim_key(id: &str) -> String {
    format!("@proposal/{id}")
}

/// What a decision did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decided {
    pub proposal: ProposalState,
    /// `approved` (more approvals needed), `executed`, `rejected`, `failed`.
    pub outcome: String,
    /// The executed call's result, as JSON.
    pub result: Option<Value>,
    /// For a workflow run's proposal: the run after it resumed.
    pub run: Option<crate::workflow::RunState>,
}

impl Host {
    /// Every proposal the index knows, newest first; pending ones past
    /// their expiry show as `expired`.
    pub fn proposals(&self) -> Vec<ProposalState> {
        let now = now_ms();
        let mut all = index::proposals(&*self.services.store);
        for p in &mut all {
            if p.is_expired(now) {
                p.status = "expired".into();
            }
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.created_ms));
        all
    }

    pub fn proposal(&self, id: &str) -> Option<ProposalState> {
        index::proposal(&*self.services.store, id)
    }

    /// Record that pending proposal `id` expired, if its expiry has
    /// passed (the running host's timers, when a run waits on it):
    /// `true` when this call recorded it. Once: serialized with every
    /// decision (`Host::decisions`) and checked against the index, which
    /// holds the resolution from its append on, across restarts too.
    pub(crate) async fn expire_if_due(&self, id: &str) -> Result<bool, ProposalError> {
        let claim = self.claim_proposal(id).await?;
        DECIDING.scope(claim, self.expire_claimed(id)).await
    }

    /// On a log several nodes share (PostgreSQL), claim proposal `id` for
    /// one decision: a lease in the deployment's store, waited for while
    /// another node decides it ([`CLAIM_WAIT`]). The decisions lock below
    /// orders one process's decisions; this orders the nodes', so two
    /// approvers on two nodes never both act on the same pending state,
    /// and a node that stalled past the claim has its decision's appends
    /// refused by the database (they are fenced by it). `None` on the
    /// file log, which one process writes.
    async fn claim_proposal(
        &self,
        id: &str,
    ) -> Result<Option<Arc<index::RunLease>>, ProposalError> {
        self.claim_shared(&claim_key(id), CLAIM_WAIT)
            .await
            .map_err(|message| ProposalError::Failed {
                id: id.to_string(),
                message: format!("{message} (another node decides this proposal)"),
            })
    }

    async fn expire_claimed(&self, id: &str) -> Result<bool, ProposalError> {
        let _serial = self.decisions.lock().await;
        let Some(p) = index::proposal(&*self.services.store, id) else {
            return Ok(false);
        };
        if p.status != "pending" || !p.is_expired(now_ms()) {
            return Ok(false);
        }
        self.record(vec![Event::ProposalResolved {
            proposal: id.to_string(),
            status: "expired".into(),
            detail: Some("expired before enough approvals (recorded by the host's timers)".into()),
        }])
        .await?;
        tracing::info!(proposal = id, "proposal expired");
        Ok(true)
    }

    async fn record(&self, events: Vec<Event>) -> Result<(), ProposalError> {
        let fence = DECIDING
            .try_with(|c| c.as_ref().map(|lease| lease.fence()))
            .ok()
            .flatten();
        let log = &self.services.log;
        match fence {
            Some(guard) => log.append_guarded(events, guard).await,
            None => log.append(events).await,
        }
        .map(|_| ())
        .map_err(|e| ProposalError::Failed {
            id: String::new(),
            message: format!("event log: {e}"),
        })
    }

    /// `by` approves (or rejects) proposal `id`.
    /// (Long: read from the log, checked, recorded and carried out in the
    /// one order that must hold under the decisions lock.)
    pub async fn decide(
        &self,
        id: &str,
        by: &str,
        approve: bool,
        comment: Option<String>,
    ) -> Result<Decided, ProposalError> {
        let claim = self.claim_proposal(id).await?;
        DECIDING
            .scope(claim, self.decide_claimed(id, by, approve, comment))
            .await
    }

    async fn decide_claimed(
        &self,
        id: &str,
        by: &str,
        approve: bool,
        comment: Option<String>,
    ) -> Result<Decided, ProposalError> {
        // One decision at a time: a second approver must see the first's
        // decision (and its execution) in the log, never the same pending
        // proposal. Released before a run is driven on: the decision is
        // recorded by then, and the run's lease keeps its drive single.
        let serial = self.decisions.lock().await;
        let comment = comment.map(|c| crate::record::text(&c));
        // The log is the record of what was proposed: a decision acts on
        // the log's proposal, never on the index's copy (which anyone who
        // can write the data directory could rewrite). The index may only
        // say where in the log the proposal starts (a run's proposal).
        let records =
            match crate::index::proposal_records(&*self.services.store, &self.services.log, id) {
                Some(r) => r,
                None => self
                    .services
                    .log
                    .read_all()
                    .map_err(|e| ProposalError::Failed {
                        id: id.to_string(),
                        message: format!("event log: {e}"),
                    })?,
            };
        let p = ProposalState::from_log(&records, id)
            .ok_or_else(|| ProposalError::Unknown(id.to_string()))?;
        drop(records);
        let refuse = |rule: &'static str, reason: String| {
            self.refuse(id, by, approve, comment.clone(), rule, reason)
        };
        if let Some(indexed) = self.proposal(id)
            && !indexed.agrees_with(&p)
        {
            tracing::error!(
                proposal = id,
                "the index's copy of the proposal differs from the log's"
            );
            return refuse(
                "index-mismatch",
                format!(
                    "the state index's copy of {id} differs from the event log's (arguments {} in the index, {} in the log); nothing was executed. The index is derived: stop Charter, move {} aside and it is rebuilt from the log",
                    indexed.args_digest,
                    p.args_digest,
                    self.data_dir.join("state").display()
                ),
            )
            .await;
        }
        if p.status != "pending" {
            return refuse(
                "not-pending",
                format!("the proposal is already {}", p.status),
            )
            .await;
        }
        if p.is_expired(now_ms()) {
            self.record(vec![Event::ProposalResolved {
                proposal: id.to_string(),
                status: "expired".into(),
                detail: Some("expired before enough approvals".into()),
            }])
            .await?;
            if p.run.is_some() {
                drop(serial);
                self.resume_after_decision(&p).await;
            }
            return refuse(
                "expired",
                "the proposal has expired (expiry counts as rejection)".into(),
            )
            .await;
        }
        // Who may decide: the identities in force now (one read).
        let deployment = self.deployment();
        let Some(approver) = deployment.approvers.get(by) else {
            let known: Vec<_> = deployment.approvers.keys().cloned().collect();
            return refuse(
                "not-an-approver",
                format!(
                    "{by} is not a declared approver (approvers: {})",
                    known.join(", ")
                ),
            )
            .await;
        };
        if let Some(role) = &p.approver_role
            && !approver.roles.contains(role)
        {
            return refuse(
                "role",
                format!("{by} does not hold the role {role:?} this proposal needs"),
            )
            .await;
        }
        if p.owner.as_deref() == Some(by) {
            return refuse(
                "separation-of-duties",
                format!(
                    "{by} owns plugin {} and may not approve its proposals",
                    p.plugin
                ),
            )
            .await;
        }
        if p.initiator.as_deref() == Some(by) {
            return refuse(
                "separation-of-duties",
                format!("{by} started the work that made this proposal and may not approve it"),
            )
            .await;
        }
        if p.approvals.iter().any(|a| a == by) {
            return refuse(
                "duplicate",
                format!("{by} has already approved; N-of-M needs distinct people"),
            )
            .await;
        }
        self.record(vec![Event::ApprovalDecision {
            proposal: id.to_string(),
            by: by.to_string(),
            approve,
            comment: comment.clone(),
            accepted: true,
            reason: None,
            auth: self.how_proven(by),
        }])
        .await?;
        if !approve {
            self.record(vec![Event::ProposalResolved {
                proposal: id.to_string(),
                status: "rejected".into(),
                detail: Some(format!("rejected by {by}")),
            }])
            .await?;
            drop(serial);
            let run = self.resume_after_decision(&p).await;
            return Ok(Decided {
                proposal: self.proposal(id).unwrap_or(p),
                outcome: "rejected".into(),
                result: None,
                run,
            });
        }
        let have = p.approvals.len() as u32 + 1;
        if have < p.approvals_needed {
            return Ok(Decided {
                outcome: format!("approved ({have} of {} approvals)", p.approvals_needed),
                proposal: self.proposal(id).unwrap_or(p),
                result: None,
                run: None,
            });
        }
        if p.run.is_some() {
            // A run's call: the run re-runs its step, the journal replays
            // the earlier calls and this one executes with its real result.
            self.record(vec![Event::ProposalResolved {
                proposal: id.to_string(),
                status: "approved".into(),
                detail: None,
            }])
            .await?;
            drop(serial);
            let run = self.resume_after_decision(&p).await;
            return Ok(Decided {
                proposal: self.proposal(id).unwrap_or(p),
                outcome: "approved".into(),
                result: None,
                run,
            });
        }
        let mut approvers = p.approvals.clone();
        approvers.push(by.to_string());
        let (status, detail, result) = match self.execute(&p, &approvers).await {
            Ok(v) => ("executed", None, Some(v)),
            Err(e) => ("failed", Some(e), None),
        };
        self.record(vec![Event::ProposalResolved {
            proposal: id.to_string(),
            status: status.into(),
            detail: detail.clone(),
        }])
        .await?;
        let proposal = self.proposal(id).unwrap_or(p);
        match detail {
            Some(message) => Err(ProposalError::Failed {
                id: id.to_string(),
                message,
            }),
            None => Ok(Decided {
                proposal,
                outcome: "executed".into(),
                result,
                run: None,
            }),
        }
    }

    /// After a decision on a run's proposal, drive the run on (a failure
    /// to resume is logged; `charter runs resume` can retry it).
    async fn resume_after_decision(&self, p: &ProposalState) -> Option<crate::workflow::RunState> {
        let run = p.run.as_deref()?;
        match self.drive(run).await {
            Ok(st) => Some(st),
            Err(e) => {
                tracing::error!(run, "cannot resume the run: {e}");
                self.run(run)
            }
        }
    }

    async fn refuse(
        &self,
        id: &str,
        by: &str,
        approve: bool,
        comment: Option<String>,
        rule: &'static str,
        reason: String,
    ) -> Result<Decided, ProposalError> {
        self.record(vec![Event::ApprovalDecision {
            proposal: id.to_string(),
            by: by.to_string(),
            approve,
            comment,
            accepted: false,
            reason: Some(reason.clone()),
            auth: self.how_proven(by),
        }])
        .await?;
        tracing::info!(proposal = id, by, %reason, "approval attempt refused");
        Err(ProposalError::Refused {
            id: id.to_string(),
            rule,
            reason,
        })
    }

    /// Execute an approved proposal's call through the mediator, re-checked
    /// against the policy in force. (Long: the re-checks, the call and its
    /// recorded result in the order they must happen.)
    async fn execute(&self, p: &ProposalState, approvers: &[String]) -> Result<Value, String> {
        if json_digest(&p.args) != p.args_digest {
            return Err("stored arguments do not match their approved digest".into());
        }
        // An AI agent's tool call: re-decided with the agent as principal.
        if let Some(agent) = p
            .initiator
            .as_deref()
            .and_then(|i| i.strip_prefix("agent:"))
        {
            return self.execute_agent_proposal(p, agent, approvers).await;
        }
        let loaded = self
            .load(&p.plugin)
            .await
            .map_err(|e| format!("plugin cannot load: {e}"))?;
        if loaded.digest != p.digest {
            return Err(format!(
                "plugin {} changed since the proposal ({} → {}); propose again",
                p.plugin, p.digest, loaded.digest
            ));
        }
        let (instance, func) = p
            .function
            .split_once('#')
            .ok_or("malformed function name")?;
        let iface = instance.split('@').next().unwrap_or(instance);
        let fname = charter_config::FunctionName::new(instance, func);
        let mut m = Mediator::new(
            loaded.ctx.clone(),
            self.services.clone(),
            p.initiator.clone(),
        );
        m.approved_key = Some(format!("charter:{}", p.id));
        let mut ruling = m.rule(&fname, &format!("{iface}.{func}"), &p.args);
        // The grants in force now, as a fresh call would meet them.
        if let Some(id) = catalog().lookup(instance, func)
            && let Err(reason) = m.recheck_approved(id, &p.args)
        {
            ruling = crate::mediator::Ruling::deny(vec![], &reason);
        }
        if ruling.decision == Decision::Deny {
            let reason = ruling.reason.clone().unwrap_or_else(|| "denied".into());
            let ev = m.call_event(&p.call, &p.function, &p.args, &ruling);
            self.record(vec![ev]).await.map_err(|e| e.to_string())?;
            return Err(format!("the policy in force now denies it: {reason}"));
        }
        let approved = ruling.approved_by(approvers);
        let decided = m.call_event(&p.call, &p.function, &p.args, &approved);
        // The approval's decision is on disk before the effect.
        self.record(vec![decided])
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let result: Result<Value, String> = if let Some(id) = catalog().lookup(instance, func) {
            let r = match m.execute_approved(id, &p.args) {
                Dispatch::Ready(r) => r,
                // An approved waiting call (LLM, notify) is bounded like any other.
                Dispatch::Wait(fut) => match m.wait(fut).await {
                    Ok(r) => r,
                    Err(e) => Err(e.to_string()),
                },
            };
            // A secret's value or a model's text is not shown in the summary.
            let shown = catalog().get(id).function.result_shown;
            r.map(|v| {
                if shown {
                    v
                } else {
                    serde_json::json!("<text>")
                }
            })
        } else {
            self.execute_connector(iface, func, &p.args, p.initiator.clone())
                .await
        };
        let mut events = std::mem::take(&mut m.pending);
        events.push(Event::CallResult {
            call: p.call.clone(),
            plugin: p.plugin.clone(),
            function: p.function.clone(),
            ok: result.is_ok(),
            summary: match &result {
                Ok(v) => v.to_string(),
                Err(e) => e.clone(),
            },
            duration_us: started.elapsed().as_micros() as u64,
            proposal: Some(p.id.clone()),
            result: None,
        });
        self.record(events).await.map_err(|e| e.to_string())?;
        result
    }

    async fn execute_connector(
        &self,
        iface: &str,
        func: &str,
        args: &Value,
        initiator: Option<String>,
    ) -> Result<Value, String> {
        let conn = self.services.connector(iface)?;
        let params: Vec<(String, wasmtime::component::types::Type)> =
            crate::capabilities::connector::connector_functions(
                &self.services.engine,
                &conn,
                iface,
            )
            .into_iter()
            .find(|(n, _)| n == func)
            .map(|(_, f)| f.params().map(|(n, t)| (n.to_string(), t)).collect())
            .ok_or_else(|| format!("{iface}#{func} not found in connector {}", conn.name))?;
        let vals = params
            .iter()
            .map(|(n, t)| values::from_json(args.get(n).unwrap_or(&Value::Null), t))
            .collect::<Result<Vec<_>, _>>()?;
        let out = crate::capabilities::connector::invoke_connector(
            &self.services,
            iface,
            func,
            &vals,
            initiator,
            None,
            None,
            |_, _| vec![],
        )
        .await?;
        Ok(Value::Array(out.iter().map(values::to_json).collect()))
    }
}
