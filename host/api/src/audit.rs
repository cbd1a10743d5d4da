//! `charter audit …` and `charter kpi`: the event log as the audit trail,
//! and the framework's KPIs from it. Read from the log file alone.

use std::collections::HashSet;
use std::path::PathBuf;

use charter_audit::checkpoint::{self, Checkpoint};
use charter_audit::{Event, Record};
use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::error::ApiError;
use crate::validate;

/// A checkpoint to verify the log against: its contents (a remote caller
/// sends them; no path of the server is ever read for it) and how to name
/// it in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointArg {
    /// How the report names it (the file it came from).
    pub label: PathBuf,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// `charter audit verify [--checkpoint F | --since-checkpoint F]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// A checkpoint exported earlier.
    #[serde(default)]
    pub checkpoint: Option<CheckpointArg>,
    /// Verify only from the checkpoint's entry on (`--since-checkpoint`):
    /// the checkpoint proves what precedes it as it was when signed; the
    /// chain after it is walked. Needs `checkpoint`.
    #[serde(default)]
    pub since_checkpoint: bool,
}

/// A torn final frame: a crash mid-append, never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    /// Where it starts.
    pub offset: u64,
    /// What is torn.
    pub problem: String,
}

/// `charter audit verify --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The log file.
    pub log: PathBuf,
    /// Whether the chain (and the checkpoint) hold.
    pub ok: bool,
    /// Intact entries.
    pub entries: u64,
    /// The last entry's sequence number.
    pub last_seq: u64,
    /// The last entry's hash.
    pub last_hash: String,
    /// The checkpoint verified against, as named.
    pub checkpoint: Option<PathBuf>,
    /// With `--since-checkpoint`: the checkpoint's entry, from which on
    /// the chain was walked (`entries` counts it and those after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<u64>,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
    /// A torn tail (a note, not a problem).
    pub torn_tail: Option<TornTail>,
}

impl VerifyReport {
    /// 0 intact, 1 anything wrong.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            charter_runtime::error::EXIT_OK
        } else {
            charter_runtime::error::EXIT_ERROR
        }
    }
}

/// `charter audit show`: which events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowRequest {
    /// Only events about this plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Only events newer than this: `30s`, `10m`, `2h`, `7d`.
    #[serde(default)]
    pub since: Option<String>,
    /// Only events of this type (one of [`Event::KINDS`]).
    #[serde(default)]
    pub kind: Option<String>,
    /// Only events about this proposal.
    #[serde(default)]
    pub proposal: Option<String>,
    /// Only the last N events.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only events at or after this time ([`validate::time`]).
    #[serde(default)]
    pub from: Option<String>,
    /// Only events at or before this time.
    #[serde(default)]
    pub to: Option<String>,
}

/// `GET /v1/kpi/series?bucket=&from=&to=`: the KPIs per hour or day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KpiSeriesRequest {
    /// `hour` (the default) or `day`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// The window's start ([`validate::time`]); default: 24 hours or 30
    /// days (the bucket holding `to` and those before it). Rounded down
    /// to a bucket's start.
    #[serde(default)]
    pub from: Option<String>,
    /// The window's end; default: now.
    #[serde(default)]
    pub to: Option<String>,
}

/// `charter audit show --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvents {
    /// The deployment's name.
    pub deployment: String,
    /// The events, oldest first, as the log holds them.
    pub events: Vec<Record>,
}

/// `charter audit export`: every event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditExport {
    /// Every record, oldest first (the CLI prints one per line).
    pub records: Vec<Record>,
}

/// `10m`, `2h`, `3d`, `45s` → milliseconds.
fn parse_since(s: &str) -> Result<u64, ApiError> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|e| ApiError::invalid(format!("--since {s:?}: expected e.g. 30m, 2h, 7d: {e}")))?;
    let ms = match unit {
        "s" => 1_000,
        "m" | "" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(ApiError::invalid(format!(
                "--since {s:?}: unit must be s, m, h or d"
            )));
        }
    };
    Ok(n.saturating_mul(ms))
}

/// The calls a proposal is about: the call that proposed it and the
/// approved execution (the call whose result names the proposal).
fn proposal_calls<'a>(records: &'a [Record], id: &str) -> HashSet<&'a str> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Proposal { id: p, call, .. } if p == id => Some(call.as_str()),
            Event::CallResult {
                call,
                proposal: Some(p),
                ..
            } if p == id => Some(call.as_str()),
            _ => None,
        })
        .collect()
}

fn mentions_proposal(e: &Event, id: &str, calls: &HashSet<&str>) -> bool {
    match e {
        Event::Proposal { id: p, .. } => p == id,
        Event::ApprovalDecision { proposal, .. } | Event::ProposalResolved { proposal, .. } => {
            proposal == id
        }
        Event::CallResult { proposal, call, .. } => {
            proposal.as_deref() == Some(id) || calls.contains(call.as_str())
        }
        Event::Call { call, .. } => calls.contains(call.as_str()),
        _ => false,
    }
}

impl Control {
    /// `charter audit verify`: walk the hash chain; with a checkpoint, also
    /// prove the log still holds the checkpointed entry.
    pub fn audit_verify(&self, req: &VerifyRequest) -> Result<VerifyReport, ApiError> {
        if self.shared_backend() {
            return self.audit_verify_shared(req);
        }
        let path = self.log_path();
        let since = match (&req.checkpoint, req.since_checkpoint) {
            (Some(cp), true) => Some(checkpoint::verify_since(&cp.checkpoint, &path)?),
            (None, true) => {
                return Err(ApiError::usage(
                    "--since-checkpoint needs the checkpoint to start from".to_string(),
                ));
            }
            (_, false) => None,
        };
        let (v, since_problem) = match since {
            Some((v, p)) => (v, Some(p)),
            None => (charter_audit::verify(&path)?, None),
        };
        let mut problems: Vec<String> = v
            .findings
            .iter()
            .map(|f| match f.seq {
                Some(s) => format!("byte {} (entry {s}): {}", f.offset, f.problem),
                None => format!("byte {}: {}", f.offset, f.problem),
            })
            .collect();
        if let Some(cp) = &req.checkpoint {
            let c = &cp.checkpoint;
            let name = &self.deployment().name;
            if &c.deployment != name {
                problems.push(format!(
                    "checkpoint is for deployment {:?}, not {name:?}",
                    c.deployment
                ));
            }
            let problem = match since_problem {
                Some(p) => p,
                None => checkpoint::check(c, &path)?,
            };
            if let Some(p) = problem {
                problems.push(format!("checkpoint (entry {}): {p}", c.seq));
            }
        }
        Ok(VerifyReport {
            log: path,
            ok: problems.is_empty(),
            entries: v.frames,
            last_seq: v.last_seq,
            last_hash: v.last_hash,
            checkpoint: req.checkpoint.as_ref().map(|c| c.label.clone()),
            since_seq: req
                .since_checkpoint
                .then(|| req.checkpoint.as_ref().map(|c| c.checkpoint.seq))
                .flatten(),
            problems,
            torn_tail: v.torn.map(|t| TornTail {
                offset: t.offset,
                problem: t.problem,
            }),
        })
    }

    /// `charter audit verify` on PostgreSQL: the chain walked over the
    /// rows, read without the writer's lock. Checkpoints are the file
    /// log's for now.
    fn audit_verify_shared(&self, req: &VerifyRequest) -> Result<VerifyReport, ApiError> {
        if req.checkpoint.is_some() || req.since_checkpoint {
            return Err(ApiError::usage(
                "checkpoints are not kept for a log on PostgreSQL yet: `charter audit verify` without one walks the whole chain in the database".to_string(),
            ));
        }
        let (v, shown) = crate::backend::shared_verify(&self.deployment())?;
        Ok(VerifyReport {
            log: shown.into(),
            ok: v.ok(),
            entries: v.frames,
            last_seq: v.last_seq,
            last_hash: v.last_hash,
            checkpoint: None,
            since_seq: None,
            problems: v
                .findings
                .iter()
                .map(|f| format!("entry {}: {}", f.seq.unwrap_or(0), f.problem))
                .collect(),
            torn_tail: None,
        })
    }

    /// `charter audit show`: the events that pass every filter, oldest
    /// first. An unknown event type is a usage error listing the types.
    pub fn audit_show(&self, req: &ShowRequest) -> Result<AuditEvents, ApiError> {
        if let Some(k) = &req.kind
            && !Event::KINDS.contains(&k.as_str())
        {
            return Err(ApiError::usage(format!(
                "--type {} is not an event type; the types are: {} (see `charter audit show --help`)",
                validate::shown(k),
                Event::KINDS.join(", ")
            )));
        }
        for (what, v) in [("plugin", &req.plugin), ("proposal", &req.proposal)] {
            if let Some(v) = v {
                validate::name(what, v)?;
            }
        }
        if let Some(s) = &req.since {
            validate::filter("--since", s)?;
        }
        let (from, to) = validate::time_range(req.from.as_deref(), req.to.as_deref())?;
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(u64::MAX));
        let records = self.records()?;
        let calls = req
            .proposal
            .as_ref()
            .map(|p| proposal_calls(&records, p))
            .unwrap_or_default();
        let cutoff = match &req.since {
            Some(s) => charter_audit::now_ms().saturating_sub(parse_since(s)?),
            None => 0,
        };
        let mut selected: Vec<&Record> = records
            .iter()
            .filter(|r| r.time_ms >= cutoff && (from..=to).contains(&r.time_ms))
            .filter(|r| {
                req.plugin
                    .as_ref()
                    .is_none_or(|p| r.event.plugin() == Some(p.as_str()))
            })
            .filter(|r| req.kind.as_ref().is_none_or(|k| r.event.kind() == k))
            .filter(|r| {
                req.proposal
                    .as_ref()
                    .is_none_or(|p| mentions_proposal(&r.event, p, &calls))
            })
            .collect();
        if let Some(n) = req.limit {
            let skip = selected.len().saturating_sub(n);
            selected.drain(..skip);
        }
        let events = selected.into_iter().cloned().collect();
        Ok(AuditEvents {
            deployment: self.deployment().name.clone(),
            events,
        })
    }

    /// `charter audit export`: every event.
    pub fn audit_export(&self) -> Result<AuditExport, ApiError> {
        Ok(AuditExport {
            records: self.records()?,
        })
    }

    /// The log's records from the frame at `position` (a frame's start,
    /// as an earlier answer gave it) to its end, each with its position:
    /// through this process's host's open log when it has one (only what
    /// was acknowledged), else the file's whole batches. What `/metrics`
    /// reads between two scrapes.
    pub fn audit_tail(&self, position: u64) -> Result<Vec<(Record, u64)>, ApiError> {
        let all = charter_audit::Filter::all();
        Ok(match self.existing_host() {
            Some(h) => h.log().read_from_at(position, &all)?,
            None if self.shared_backend() => self
                .records()?
                .into_iter()
                .filter(|r| r.seq >= position)
                .map(|r| {
                    let s = r.seq;
                    (r, s)
                })
                .collect(),
            None => charter_audit::read_from_position(
                &self.log_path(),
                position.max(charter_audit::LOG_MAGIC.len() as u64),
                &all,
            )?,
        })
    }

    /// `charter audit checkpoint`: sign the log's last entry with the
    /// deployment's ed25519 key.
    pub fn audit_checkpoint(&self) -> Result<Checkpoint, ApiError> {
        let d = self.deployment();
        if self.shared_backend() {
            return Err(ApiError::refused(
                "checkpoints are not kept for a log on PostgreSQL yet (an auditor exports the rows and verifies them: README)".to_string(),
            ));
        }
        Ok(checkpoint::create(&d.data_dir, &d.name, &self.log_path())?)
    }

    /// The KPIs per hour or day over a window: the request checked (a
    /// usage error names the parameter; a window of more than
    /// [`MAX_BUCKETS`] buckets is refused before the log is read), then
    /// one pass over the log, as `charter kpi`.
    pub fn kpi_series(&self, req: &KpiSeriesRequest) -> Result<KpiSeries, ApiError> {
        let (bucket, bucket_ms, default_count) = match req.bucket.as_deref() {
            None | Some("hour") => ("hour", 3_600_000u64, 24u64),
            Some("day") => ("day", 86_400_000, 30),
            Some(b) => {
                return Err(ApiError::usage(format!(
                    "bucket {} must be hour or day",
                    validate::shown(b)
                )));
            }
        };
        let (from, to) = validate::time_range(req.from.as_deref(), req.to.as_deref())?;
        let to = to.unwrap_or_else(charter_audit::now_ms);
        // By default the bucket holding `to` and the ones before it.
        let from = from.unwrap_or_else(|| to.saturating_sub(bucket_ms * (default_count - 1)));
        if from > to {
            return Err(ApiError::usage(format!(
                "from {} is after to (now, when to is not given)",
                validate::shown(req.from.as_deref().unwrap_or_default())
            )));
        }
        let start = from - from % bucket_ms;
        let count = (to - start) / bucket_ms + 1;
        if count > MAX_BUCKETS {
            return Err(ApiError::usage(format!(
                "from {} to {} spans {count} buckets (one per {bucket}); at most {MAX_BUCKETS}: narrow the window{}",
                validate::shown(req.from.as_deref().unwrap_or("(24 buckets before to)")),
                validate::shown(req.to.as_deref().unwrap_or("now")),
                if bucket == "hour" {
                    " or ask for bucket=day"
                } else {
                    ""
                }
            )));
        }
        let records = self.records()?;
        Ok(charter_runtime::kpi::series::series(
            &records, bucket, start, bucket_ms, count,
        ))
    }

    /// `charter kpi`: the framework's KPIs from the event log alone.
    pub fn kpi(&self) -> Result<Kpi, ApiError> {
        let records = self.records()?;
        Ok(charter_runtime::kpi::compute(&records))
    }

    /// `charter kpi --framework`: the five dimensions per pattern and
    /// overall (`charter_runtime::kpi::framework`), from the log alone.
    pub fn kpi_framework(&self) -> Result<FrameworkKpi, ApiError> {
        let records = self.records()?;
        let patterns = charter_runtime::kpi::framework::Patterns::of(&self.deployment());
        Ok(charter_runtime::kpi::framework::framework(
            &records, &patterns,
        ))
    }

    /// Add this deployment's log to a table folding several deployments
    /// (`charter kpi --framework --config A --config B`).
    pub fn kpi_framework_into(
        &self,
        fold: &mut charter_runtime::kpi::framework::FrameworkFold,
    ) -> Result<(), ApiError> {
        let records = charter_audit::read_records(&self.log_path())?;
        let dep = self.deployment();
        let patterns = charter_runtime::kpi::framework::Patterns::of(&dep);
        fold.add_deployment(&dep.name, &records, &patterns);
        Ok(())
    }
}

// The KPI documents are the runtime's own types (one definition; README's
// `charter kpi --json` is checked against them like every other document).
pub use charter_runtime::kpi::framework::FrameworkKpi;
pub use charter_runtime::kpi::{
    BlockedByKind, Bucket, CallCounts, Kpi, KpiSeries, MAX_BUCKETS, ProposalCounts, WorkflowKpi,
};
