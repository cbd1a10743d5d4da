//! `charter audit`, `charter proposals`, `charter kpi`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use charter_audit::{Event, Record, checkpoint};
use charter_config::Deployment;
use charter_runtime::error::{EXIT_ERROR, EXIT_OK, EXIT_USAGE};
use charter_runtime::index::ProposalState;
use charter_runtime::proposals::ProposalError;
use charter_runtime::{Host, HostOptions};
use serde_json::json;

pub fn log_path(d: &Deployment) -> PathBuf {
    d.data_dir.join(charter_audit::LOG_FILE)
}

pub fn verify(d: &Deployment, cp: Option<&Path>, as_json: bool) -> Result<i32> {
    let path = log_path(d);
    let v = charter_audit::verify(&path)?;
    let mut problems: Vec<String> = v
        .findings
        .iter()
        .map(|f| match f.seq {
            Some(s) => format!("byte {} (entry {s}): {}", f.offset, f.problem),
            None => format!("byte {}: {}", f.offset, f.problem),
        })
        .collect();
    if let Some(cp_path) = cp {
        let text = std::fs::read_to_string(cp_path)
            .with_context(|| format!("reading checkpoint {}", cp_path.display()))?;
        let c: checkpoint::Checkpoint = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a checkpoint", cp_path.display()))?;
        if c.deployment != d.name {
            problems.push(format!(
                "checkpoint is for deployment {:?}, not {:?}",
                c.deployment, d.name
            ));
        }
        if let Some(p) = checkpoint::check(&c, &path)? {
            problems.push(format!("checkpoint (entry {}): {p}", c.seq));
        }
    }
    let ok = problems.is_empty();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "log": path, "ok": ok, "entries": v.frames, "last_seq": v.last_seq,
                "last_hash": v.last_hash, "checkpoint": cp, "problems": problems,
                "torn_tail": v.torn.as_ref().map(|t| json!({"offset": t.offset, "problem": t.problem})),
            }))?
        );
    } else if ok {
        if let Some(t) = &v.torn {
            // A crash mid-append: never acknowledged, cut when the log is
            // next opened for writing.
            eprintln!(
                "note: a torn final frame at byte {} ({}) was never acknowledged; the next charter command that writes cuts it",
                t.offset, t.problem
            );
        }
        println!(
            "ok: {}, chain intact, last entry {} hash {}{}",
            crate::count(v.frames, "entry", "entries"),
            v.last_seq,
            v.last_hash,
            if cp.is_some() {
                ", checkpoint matches"
            } else {
                ""
            }
        );
    } else {
        println!("TAMPERED or damaged: {}", path.display());
        for p in &problems {
            println!("  {p}");
        }
        println!(
            "{} before the first problem",
            crate::count(v.frames, "intact entry", "intact entries")
        );
    }
    Ok(if ok { EXIT_OK } else { EXIT_ERROR })
}

/// `10m`, `2h`, `3d`, `45s` → milliseconds.
fn parse_since(s: &str) -> Result<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .with_context(|| format!("--since {s:?}: expected e.g. 30m, 2h, 7d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" | "" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("--since {s:?}: unit must be s, m, h or d"),
    };
    Ok(n * ms)
}

pub struct ShowFilter {
    pub plugin: Option<String>,
    pub since: Option<String>,
    pub kind: Option<String>,
    pub proposal: Option<String>,
    pub limit: Option<usize>,
}

fn summary(e: &Event) -> String {
    match e {
        Event::ConfigLoaded {
            path,
            digest,
            phase,
            changed,
        } => format!(
            "config {path} {digest} phase {phase}{}",
            if *changed {
                " (CHANGED since the last load)"
            } else {
                ""
            }
        ),
        Event::Grant {
            groups,
            granted_by,
            reason,
            ..
        } => format!(
            "grant [{}] by {}{}",
            groups.join(", "),
            granted_by.as_deref().unwrap_or("(unrecorded)"),
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Event::CheckFailed { problems } => format!("check failed: {}", problems.join(" | ")),
        Event::PluginLoaded { digest, groups, .. } => {
            format!("loaded {digest} groups [{}]", groups.join(", "))
        }
        Event::PluginRefused { rule, reasons, .. } => {
            format!("REFUSED [{rule}] {}", reasons.join(" | "))
        }
        Event::Call {
            function,
            decision,
            policies,
            reason,
            args,
            initiator,
            ..
        } => {
            let mut s = format!("{decision:<7} {function} {args}");
            // Who started the work; "by rule" is what decided, never a person.
            if let Some(i) = initiator {
                s.push_str(&format!(" initiator {i}"));
            }
            if !policies.is_empty() {
                s.push_str(&format!(" by rule [{}]", policies.join(", ")));
            }
            if let Some(r) = reason {
                s.push_str(&format!(": {r}"));
            }
            s
        }
        Event::CallResult {
            function,
            ok,
            summary,
            proposal,
            ..
        } => format!(
            "{} {function} -> {summary}{}",
            if *ok { "executed" } else { "failed" },
            proposal
                .as_ref()
                .map(|p| format!(" (approved proposal {p})"))
                .unwrap_or_default()
        ),
        Event::KvWrite { key, value, by, .. } => format!(
            "kv {} {key:?}{}",
            if value.is_some() { "set" } else { "delete" },
            by.as_ref()
                .map(|b| format!(" by operator {b}"))
                .unwrap_or_default()
        ),
        Event::Step {
            outcome,
            error,
            host_calls,
            ..
        } => format!(
            "step {outcome} ({}){}",
            crate::count(*host_calls, "host call", "host calls"),
            error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ),
        Event::Proposal {
            id,
            function,
            args,
            approver_role,
            approvals_needed,
            ..
        } => format!(
            "proposal {id}: {function} {args} needs {approvals_needed} approval(s){}",
            approver_role
                .as_ref()
                .map(|r| format!(" by role {r}"))
                .unwrap_or_default()
        ),
        Event::ApprovalDecision {
            proposal,
            by,
            approve,
            accepted,
            reason,
            ..
        } => format!(
            "{} {} {proposal} by {by}{}",
            if *accepted {
                "decision"
            } else {
                "REFUSED attempt to"
            },
            if *approve { "approve" } else { "reject" },
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Event::ProposalResolved {
            proposal,
            status,
            detail,
        } => format!(
            "proposal {proposal} {status}{}",
            detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        Event::RunStarted {
            run,
            workflow,
            initiator,
            ..
        } => format!(
            "run {run} of {workflow} started{}",
            initiator
                .as_ref()
                .map(|i| format!(" by {i}"))
                .unwrap_or_default()
        ),
        Event::StepAttempt {
            run,
            step,
            attempt,
            outcome,
            error,
            retry_at_ms,
            proposal,
            replayed,
            next,
            ..
        } => {
            let mut s = format!("run {run} step {step} attempt {attempt}: {outcome}");
            if let Some(e) = error {
                s.push_str(&format!(": {e}"));
            }
            if let Some(p) = proposal {
                s.push_str(&format!(" (proposal {p})"));
            }
            if *replayed > 0 {
                s.push_str(&format!(" [{replayed} call(s) replayed]"));
            }
            if let Some(t) = retry_at_ms {
                s.push_str(&format!(" -> retry at {t}"));
            }
            if let Some(n) = next {
                s.push_str(&format!(" -> {n}"));
            }
            s
        }
        Event::Escalated {
            id,
            run,
            step,
            role,
            reason,
        } => format!("ESCALATED {id}: run {run} step {step} to role {role}: {reason}"),
        Event::EscalationResolved {
            id,
            by,
            action,
            accepted,
            reason,
            ..
        } => format!(
            "{} {id}: {action} by {by}{}",
            if *accepted {
                "escalation resolved"
            } else {
                "REFUSED attempt to resolve"
            },
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Event::RunFinished {
            run, status, error, ..
        } => format!(
            "run {run} {status}{}",
            error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ),
    }
}

/// The calls a proposal is about: the call that proposed it and the
/// approved execution (the call whose result names the proposal).
fn proposal_calls<'a>(records: &'a [Record], id: &str) -> std::collections::HashSet<&'a str> {
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

fn mentions_proposal(e: &Event, id: &str, calls: &std::collections::HashSet<&str>) -> bool {
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

pub fn show(d: &Deployment, f: &ShowFilter, as_json: bool) -> Result<i32> {
    if let Some(k) = &f.kind
        && !Event::KINDS.contains(&k.as_str())
    {
        eprintln!(
            "error: --type {k:?} is not an event type; the types are: {} (see `charter audit show --help`)",
            Event::KINDS.join(", ")
        );
        return Ok(EXIT_USAGE);
    }
    let records = charter_audit::read_records(&log_path(d))?;
    let calls = f
        .proposal
        .as_ref()
        .map(|p| proposal_calls(&records, p))
        .unwrap_or_default();
    let cutoff = match &f.since {
        Some(s) => charter_audit::now_ms().saturating_sub(parse_since(s)?),
        None => 0,
    };
    let mut selected: Vec<&Record> = records
        .iter()
        .filter(|r| r.time_ms >= cutoff)
        .filter(|r| {
            f.plugin
                .as_ref()
                .is_none_or(|p| r.event.plugin() == Some(p.as_str()))
        })
        .filter(|r| f.kind.as_ref().is_none_or(|k| r.event.kind() == k))
        .filter(|r| {
            f.proposal
                .as_ref()
                .is_none_or(|p| mentions_proposal(&r.event, p, &calls))
        })
        .collect();
    if let Some(n) = f.limit {
        let skip = selected.len().saturating_sub(n);
        selected.drain(..skip);
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"deployment": d.name, "events": selected}))?
        );
    } else {
        for r in selected {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.time_ms);
            println!(
                "#{:<6} {} {:<18} {:<16} {}",
                r.seq,
                humantime::format_rfc3339_millis(t),
                r.event.kind(),
                r.event.plugin().unwrap_or("-"),
                summary(&r.event)
            );
        }
    }
    Ok(EXIT_OK)
}

pub fn export(d: &Deployment, out: Option<&Path>) -> Result<i32> {
    use std::io::Write;
    let records = charter_audit::read_records(&log_path(d))?;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    for r in &records {
        writeln!(w, "{}", serde_json::to_string(r)?)?;
    }
    w.flush()?;
    if let Some(p) = out {
        eprintln!(
            "exported {} to {}",
            crate::count(records.len(), "event", "events"),
            p.display()
        );
    }
    Ok(EXIT_OK)
}

pub fn make_checkpoint(d: &Deployment, out: Option<&Path>) -> Result<i32> {
    let cp = checkpoint::create(&d.data_dir, &d.name, &log_path(d))?;
    let text = serde_json::to_string_pretty(&cp)?;
    match out {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "checkpoint of entry {} written to {}; keep it where the data directory's editors cannot reach",
                cp.seq,
                p.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(EXIT_OK)
}

pub fn kpi(d: &Deployment, as_json: bool) -> Result<i32> {
    let records = charter_audit::read_records(&log_path(d))?;
    let k = charter_runtime::kpi::compute(&records);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&k)?);
        return Ok(EXIT_OK);
    }
    println!(
        "deployment {} — {}, {}",
        d.name,
        crate::count(k.events, "event", "events"),
        crate::count(k.steps, "step", "steps")
    );
    println!("  events: entries in the audit log, of every type");
    println!(
        "  steps: plugin executions (`step` events) of every outcome: standalone calls and workflow attempts alike"
    );
    println!("\nrisk");
    println!(
        "  unauthorized actions executed   {}   (target 0)",
        k.unauthorized_actions_executed
    );
    println!("    executions with no allow decision or sufficient approval behind them");
    for u in &k.unauthorized_detail {
        println!("    {u}");
    }
    println!(
        "  blocked unauthorized attempts   {}",
        k.blocked_unauthorized_attempts
    );
    let b = &k.blocked_by_kind;
    for (n, what, means) in [
        (
            b.plugin_refused_at_load,
            "plugin refused at load",
            "an import not granted, a phase gate or a digest pin: often a developer fixing grants",
        ),
        (
            b.call_denied,
            "call denied",
            "a capability call denied by policy or by the grant check",
        ),
        (
            b.approval_refused,
            "approval attempt refused",
            "someone not allowed to decide a proposal tried to (self-approval, wrong role, expired)",
        ),
        (
            b.escalation_resolution_refused,
            "escalation resolution refused",
            "someone not allowed to resolve an escalation tried to",
        ),
    ] {
        println!("    {n:>4}  {what:<30} {means}");
    }
    let p = &k.proposals;
    println!("\nproposals");
    println!(
        "  created {}  executed {}  rejected {}  expired {}  failed {}  pending {}",
        p.created, p.executed, p.rejected, p.expired, p.failed, p.pending
    );
    if let Some(r) = p.acceptance_rate {
        println!("  acceptance rate {:.0}%", r * 100.0);
    }
    if let (Some(a), Some(b)) = (p.decision_latency_ms_p50, p.decision_latency_ms_p95) {
        println!("  decision latency p50 {a} ms, p95 {b} ms");
    }
    if !k.workflows.is_empty() {
        println!("\nworkflows (efficiency and customer)");
        for (name, w) in &k.workflows {
            let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
            println!(
                "  {name:<18} runs {}  completed {}  failed {}  cancelled {}  in progress {}",
                w.runs, w.completed, w.failed, w.cancelled, w.in_progress
            );
            println!(
                "  {:<18} cycle time p50 {}, p95 {}",
                "",
                ms(w.cycle_time_ms_p50),
                ms(w.cycle_time_ms_p95)
            );
            println!(
                "  {:<18} step attempts {}  retries {}  escalations {}  escalations avoided by retry {}",
                "", w.step_attempts, w.retries, w.escalations, w.escalations_avoided
            );
            println!(
                "  {:<18} (step attempts: this workflow's attempts that ran, skipped steps not counted)",
                ""
            );
            println!(
                "  {:<18} handoffs to people {}  handoff rate {}",
                "",
                w.handoffs,
                w.handoff_rate
                    .map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0))
            );
        }
    }
    println!("\ncalls (allowed / proposed / denied)");
    for (plugin, fns) in &k.calls {
        for (f, c) in fns {
            println!(
                "  {plugin:<18} {f:<48} {} / {} / {}",
                c.allowed, c.proposed, c.denied
            );
        }
    }
    Ok(EXIT_OK)
}

/// The execution of an approved proposal, if the log holds one:
/// its sequence number, whether it succeeded and what it returned.
fn approved_execution(d: &Deployment, id: &str) -> Option<(u64, bool, String)> {
    let records = charter_audit::read_records(&log_path(d)).ok()?;
    records.iter().find_map(|r| match &r.event {
        Event::CallResult {
            proposal: Some(p),
            ok,
            summary,
            ..
        } if p == id => Some((r.seq, *ok, summary.clone())),
        _ => None,
    })
}

fn print_proposal(p: &ProposalState, executed: Option<(u64, bool, String)>) {
    println!("{}  [{}]", p.id, p.status);
    println!("  plugin     {} ({})", p.plugin, p.digest);
    println!("  function   {}", p.function);
    println!("  arguments  {}  ({})", p.args, p.args_digest);
    if let Some(r) = &p.rationale {
        println!("  rationale  {r}");
    }
    println!("  policies   {}", p.policies.join(", "));
    println!(
        "  approvals  {} of {} needed{}",
        p.approvals.len(),
        p.approvals_needed,
        p.approver_role
            .as_ref()
            .map(|r| format!(" (role {r})"))
            .unwrap_or_default()
    );
    if !p.approvals.is_empty() {
        println!("  approved   {}", p.approvals.join(", "));
    }
    println!(
        "  initiator  {}   owner {}",
        p.initiator.as_deref().unwrap_or("-"),
        p.owner.as_deref().unwrap_or("-")
    );
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(p.expires_at_ms);
    println!("  expires    {}", humantime::format_rfc3339_seconds(t));
    if let Some(d) = &p.detail {
        println!("  detail     {d}");
    }
    if let Some((seq, ok, summary)) = &executed {
        println!(
            "  executed   #{seq} {}: {summary}",
            if *ok { "ok" } else { "failed" }
        );
    }
    if let Some(r) = &p.run {
        let what = match (p.status.as_str(), &executed) {
            ("pending", _) => "waits for this decision; approval resumes it".to_string(),
            (_, Some(_)) => "approved: the run resumed and executed the call".to_string(),
            ("approved", None) => format!(
                "approved: the run executes the call when it resumes (`charter runs resume {r}`)"
            ),
            ("rejected" | "expired", _) => "not approved: the step failed closed".to_string(),
            (s, None) => s.to_string(),
        };
        println!("  run        {r} ({what})");
    }
}

pub async fn proposals(d: Deployment, op: ProposalOp) -> Result<i32> {
    let host = Host::new(d, HostOptions::default())?;
    let code = match op {
        ProposalOp::List { all, json } => {
            let ps: Vec<_> = host
                .proposals()
                .into_iter()
                .filter(|p| all || p.status == "pending")
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"proposals": ps}))?
                );
            } else if ps.is_empty() {
                println!("no {}proposals", if all { "" } else { "pending " });
            } else {
                for p in &ps {
                    println!(
                        "{}  {:<9} {:<16} {} {}  ({}/{} approvals)",
                        p.id,
                        p.status,
                        p.plugin,
                        p.function,
                        p.args,
                        p.approvals.len(),
                        p.approvals_needed
                    );
                }
            }
            EXIT_OK
        }
        ProposalOp::Show { id, json } => match host.proposal(&id) {
            Some(p) if json => {
                println!("{}", serde_json::to_string_pretty(&p)?);
                EXIT_OK
            }
            Some(p) => {
                print_proposal(&p, approved_execution(host.deployment(), &id));
                EXIT_OK
            }
            None => {
                eprintln!("error: no proposal {id} (see `charter proposals list --all`)");
                EXIT_ERROR
            }
        },
        ProposalOp::Decide {
            id,
            by,
            approve,
            comment,
            json,
        } => match host.decide(&id, &by, approve, comment).await {
            Ok(dec) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({"ok": true, "decision": dec}))?
                    );
                } else {
                    println!("{}: {}", id, dec.outcome);
                    if let Some(r) = &dec.result {
                        println!("result: {r}");
                    }
                    if let Some(run) = &dec.run {
                        println!("run {} resumed: now {}", run.id, run.status);
                        if let Some(o) = &run.output {
                            println!("output: {o}");
                        }
                    }
                }
                EXIT_OK
            }
            Err(e) => {
                let code = e.exit_code();
                if json {
                    println!(
                        "{}",
                        json!({"ok": false, "error": {"message": e.to_string(), "exit_code": code}})
                    );
                } else if let ProposalError::Refused { id, rule, reason } = &e {
                    // Its Display already says "refused": said once here.
                    eprintln!("refused: {id}: {reason} [{rule}]");
                } else {
                    eprintln!("{}: {e}", crate::label(code));
                }
                code
            }
        },
    };
    host.store().flush()?;
    Ok(code)
}

pub enum ProposalOp {
    List {
        all: bool,
        json: bool,
    },
    Show {
        id: String,
        json: bool,
    },
    Decide {
        id: String,
        by: String,
        approve: bool,
        comment: Option<String>,
        json: bool,
    },
}
