//! `charter proposals …`: calls that policy routed to people.

use charter_runtime::index::ProposalState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::Control;
use crate::error::ApiError;
use crate::runs::Run;
use crate::validate;

/// A proposal: a call held for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// `P-…`
    pub id: String,
    /// The call that proposed it.
    pub call: String,
    /// The plugin that made the call.
    pub plugin: String,
    /// Its digest (an approval executes for this digest only).
    pub digest: String,
    /// The function.
    pub function: String,
    /// The call's arguments (executed exactly as stored).
    pub args: Value,
    /// `sha256:` of the arguments.
    pub args_digest: String,
    /// What the plugin said it was for.
    pub rationale: Option<String>,
    /// The policies that held it.
    pub policies: Vec<String>,
    /// The role that may decide it.
    pub approver_role: Option<String>,
    /// N of the role's M holders.
    pub approvals_needed: u32,
    /// When it expires (expiry counts as rejection).
    pub expires_at_ms: u64,
    /// Who started the work (may not approve it).
    pub initiator: Option<String>,
    /// The plugin's owner (may not approve it).
    pub owner: Option<String>,
    /// When it was made.
    pub created_ms: u64,
    /// `pending`, `approved`, `executed`, `rejected`, `expired`, `failed`.
    pub status: String,
    /// Who approved so far.
    pub approvals: Vec<String>,
    /// What happened, in words.
    pub detail: Option<String>,
    /// The workflow run waiting on it.
    #[serde(default)]
    pub run: Option<String>,
}

impl From<ProposalState> for Proposal {
    fn from(p: ProposalState) -> Proposal {
        // Every field named: a field the runtime adds must be decided here.
        let ProposalState {
            id,
            call,
            plugin,
            digest,
            function,
            args,
            args_digest,
            rationale,
            policies,
            approver_role,
            approvals_needed,
            expires_at_ms,
            initiator,
            owner,
            created_ms,
            status,
            approvals,
            detail,
            run,
            // The executed result is its agent's (`charter_proposal_status`);
            // people's listing keeps its contract (the result is in the log).
            result: _,
            // Shown beside the proposal by `proposals show` (`execution`).
            execution: _,
        } = p;
        Proposal {
            id,
            call,
            plugin,
            digest,
            function,
            args,
            args_digest,
            rationale,
            policies,
            approver_role,
            approvals_needed,
            expires_at_ms,
            initiator,
            owner,
            created_ms,
            status,
            approvals,
            detail,
            run,
        }
    }
}

/// `charter proposals list [--all]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalsListRequest {
    /// Decided and expired ones too.
    #[serde(default)]
    pub all: bool,
}

/// `charter proposals list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalsList {
    /// Newest first.
    pub proposals: Vec<Proposal>,
}

/// `charter proposals show ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalId {
    /// The proposal.
    pub id: String,
}

/// The approved execution of a proposal, as the log recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// The sequence number of its `call-result`.
    pub seq: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it returned, in short.
    pub summary: String,
}

/// The answer to `proposals show`: the proposal (`--json` prints it
/// alone) and its approved execution, if the log holds one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalDetail {
    /// The proposal.
    pub proposal: Proposal,
    /// Its execution.
    pub execution: Option<Execution>,
}

/// `charter proposals approve|reject ID --as USER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecideRequest {
    /// The proposal.
    pub id: String,
    /// The approver (declared under `[approvers]` with the needed role).
    pub by: String,
    /// Approve (true) or reject (false).
    pub approve: bool,
    /// Recorded with the decision.
    #[serde(default)]
    pub comment: Option<String>,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The proposal after it.
    pub proposal: Proposal,
    /// `approved` (more approvals needed), `executed`, `rejected`, `failed`.
    pub outcome: String,
    /// The executed call's result.
    pub result: Option<Value>,
    /// For a run's proposal: the run after it resumed.
    pub run: Option<Run>,
}

/// `charter proposals approve|reject --json`: `{ok: true, decision}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecideReport {
    /// Always true.
    pub ok: bool,
    /// What it did.
    pub decision: Decision,
}

impl Control {
    /// `charter proposals list`: pending ones (all with `all`), newest
    /// first; pending ones past their expiry show as `expired`.
    pub fn proposals_list(&self, req: &ProposalsListRequest) -> Result<ProposalsList, ApiError> {
        let host = self.host()?;
        let proposals = host
            .proposals()
            .into_iter()
            .filter(|p| req.all || p.status == "pending")
            .map(Proposal::from)
            .collect();
        self.flush()?;
        Ok(ProposalsList { proposals })
    }

    /// `charter proposals show`: one proposal and, if the log holds one,
    /// its approved execution.
    pub fn proposals_show(&self, req: &ProposalId) -> Result<ProposalDetail, ApiError> {
        let unknown = || {
            ApiError::not_found(format!(
                "no proposal {} (see `charter proposals list --all`)",
                req.id
            ))
        };
        validate::id("proposal", &req.id).map_err(|_| unknown_bounded(&req.id))?;
        let host = self.host()?;
        let p = host.proposal(&req.id);
        self.flush()?;
        let p = p.ok_or_else(unknown)?;
        // From the proposal's index entry (the first `call-result` naming
        // it), not from the log.
        let execution = p.execution.as_ref().map(|e| Execution {
            seq: e.seq,
            ok: e.ok,
            summary: e.summary.clone(),
        });
        Ok(ProposalDetail {
            proposal: p.into(),
            execution,
        })
    }

    /// `charter proposals approve|reject`: on the last needed approval
    /// the call executes, re-checked against the policy in force.
    pub async fn proposals_decide(&self, req: &DecideRequest) -> Result<DecideReport, ApiError> {
        validate::id("proposal", &req.id)?;
        validate::name("approver", &req.by)?;
        validate::comment(req.comment.as_deref())?;
        let host = self.host()?;
        let res = host
            .decide(&req.id, &req.by, req.approve, req.comment.clone())
            .await;
        self.flush()?;
        let d = res?;
        Ok(DecideReport {
            ok: true,
            decision: Decision {
                proposal: d.proposal.into(),
                outcome: d.outcome,
                result: d.result,
                run: d.run.map(Run::from),
            },
        })
    }
}

/// The not-found answer to an id no proposal can have, shown bounded.
fn unknown_bounded(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no proposal {} (see `charter proposals list --all`)",
        validate::shown(id)
    ))
}
