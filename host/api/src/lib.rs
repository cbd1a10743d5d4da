//! Charter's control API: one typed request and response per operation the
//! command line offers, and the one [`Control`] service that answers them.
//!
//! The `charter` binary is a front end: it parses its arguments into a
//! request, calls [`Control`], and renders the response as text or, with
//! `--json`, as the response serialized (the documents README.md
//! describes; `tests/all/cli.rs` compares them with these types). A
//! daemon, an HTTP API or an MCP server serves the same types, and maps
//! an [`ApiError`] to an exit code, a status or a tool error the same way:
//! by its [`ErrorClass`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use charter_api::{Access, Control, RunRequest, RunResponse};
//! let deployment = charter_config::Deployment::load("charter.toml".as_ref(), charter_runtime::host_catalog())?;
//! let control = Control::new(deployment, Access::Remote);
//! let req = RunRequest {
//!     workflow: "refund-request".into(),
//!     input: serde_json::json!({"order_id": "A-1001"}),
//!     initiator: "carol".into(),
//!     detach: false,
//! };
//! match control.run(&req).await {
//!     Ok(RunResponse::Driven(report)) => println!("{} exit {}", report.run.status, report.exit_code),
//!     Ok(RunResponse::Detached(d)) => println!("started {}", d.run),
//!     Err(e) => eprintln!("{}: {} (exit {})", e.class.label(), e.message, e.exit_code()),
//! }
//! # Ok(()) }
//! ```
//!
//! | operation | request | response |
//! | --- | --- | --- |
//! | `inspect` | [`InspectRequest`] | [`InspectReport`] (failure: [`InspectFailure`]) |
//! | `check` | [`CheckRequest`] | [`CheckResponse`] (`--json`: [`CheckReport`]) |
//! | `grants` | [`GrantsRequest`] | [`GrantsReport`] |
//! | `plugins` | [`PluginsRequest`] | [`PluginsList`] |
//! | `call` | [`CallRequest`] | [`CallReport`] (failure: [`CallFailure`]) |
//! | `kv get/set/list` | [`KvGetRequest`], [`KvSetRequest`], [`KvListRequest`] | [`KvValue`], [`KvSetResponse`], [`KvKeys`] |
//! | `run` | [`RunRequest`] | [`RunResponse`]: [`RunReport`] or [`Detached`] (failure: [`Failure`]) |
//! | `runs list/show/resume/cancel` | [`RunsListRequest`], [`RunId`], [`ResumeRequest`], [`CancelRequest`] | [`RunsList`], [`RunReport`], [`ResumeReport`], [`RunReport`] |
//! | `escalations list/resolve` | [`EscalationsListRequest`], [`ResolveRequest`] | [`EscalationsList`], [`RunReport`] |
//! | `proposals list/show/approve/reject` | [`ProposalsListRequest`], [`ProposalId`], [`DecideRequest`] | [`ProposalsList`], [`ProposalDetail`] (`--json`: [`Proposal`]), [`DecideReport`] |
//! | `audit verify/show/export/checkpoint` | [`VerifyRequest`], [`ShowRequest`], —, — | [`VerifyReport`], [`AuditEvents`], [`AuditExport`], [`Checkpoint`] |
//! | `kpi` | — | [`Kpi`] |
//!
//! **What a remote caller may send** is checked here, not only by clap
//! (`validate`): ids are 1 to 128 letters, digits and `-_.:`; names and
//! people at most 256 bytes with no control characters; comments at most
//! 64 KiB; inputs, outputs and values at most 4 MiB (what the log
//! records); filters at most 64 bytes. No request names a path of the
//! server unless [`Access::Local`] says the caller is the machine's own
//! user: a checkpoint is sent as its contents, an export and a checkpoint
//! come back as data, and `inspect` of a file is local only. Who acts
//! (`by`, `initiator`) is the [`Principal`] a front end obtained from
//! [`Control::principal`]: a bearer token checked against the hashes the
//! deployment declares (`[identities.NAME] tokens`), or, only in a
//! deployment that declares no token, a name given with `--as` (or
//! `$USER`). A front end never passes on a name the caller sent.

mod audit;
mod auth;
mod backend;
mod calls;
mod control;
mod error;
pub mod hot;
mod proposals;
mod reports;
mod runs;
pub mod triggers;
pub mod validate;

pub use audit::{
    AuditEvents, AuditExport, BlockedByKind, Bucket, CallCounts, CheckpointArg, FrameworkKpi, Kpi,
    KpiSeries, KpiSeriesRequest, MAX_BUCKETS, ProposalCounts, ShowRequest, TornTail, VerifyReport,
    VerifyRequest, WorkflowKpi,
};
pub use auth::Credential;
pub use backend::{NODE_ENV, NodesReport, host_options};
pub use calls::{
    CallErrorDoc, CallFailure, CallReport, CallRequest, KvGetRequest, KvKeys, KvListRequest,
    KvSetRequest, KvSetResponse, KvValue, LogLevel, LogLine,
};
pub use charter_audit::Record;
pub use charter_audit::checkpoint::Checkpoint;
pub use charter_auth::{AuthMethod, Principal};
pub use control::{Access, Control};
pub use error::{ApiError, ErrorClass, ErrorDoc, Failure, Refusal, describe};
pub use hot::{
    Activation, ConfigApplyReport, HistoryEntry, OPERATOR_ROLE, PinReport, PluginDiff,
    PluginHistory, PluginVersion, PushRequest, VersionsList, require_operator,
};
pub use proposals::{
    DecideReport, DecideRequest, Decision, Execution, Proposal, ProposalDetail, ProposalId,
    ProposalsList, ProposalsListRequest,
};
pub use reports::{
    CapabilityGrant, CheckReport, CheckRequest, CheckResponse, CheckedPlugin, Effect, Export,
    GrantedFunction, GrantedPlugin, GrantsReport, GrantsRequest, Import, ImportClass,
    InspectFailure, InspectReport, InspectRequest, LoadInfo, PluginEntry, PluginStatus,
    PluginsList, PluginsRequest, Violation, inspect_file,
};
pub use runs::{
    Attempt, AttemptJournal, CancelRequest, Detached, Escalation, EscalationsList,
    EscalationsListRequest, JournalCall, ResolveAction, ResolveRequest, ResumeReport,
    ResumeRequest, Resumed, Run, RunDecision, RunId, RunReport, RunRequest, RunResponse, RunsList,
    RunsListRequest, worst,
};
pub use triggers::{HookStarted, TriggerInfo};
