//! `charter audit`, `charter proposals`, `charter kpi` as text.

use std::path::Path;

use anyhow::{Context, Result};
use charter_api::{
    AuditEvents, Checkpoint, DecideReport, Kpi, ProposalDetail, ProposalsList, Record, VerifyReport,
};
use charter_audit::Event;
use charter_runtime::error::EXIT_OK;

pub fn verify_text(r: &VerifyReport) {
    if r.ok {
        if let Some(t) = &r.torn_tail {
            // A crash mid-append: never acknowledged, cut when the log is
            // next opened for writing.
            eprintln!(
                "note: a torn final frame at byte {} ({}) was never acknowledged; the next charter command that writes cuts it",
                t.offset, t.problem
            );
        }
        let since = r
            .since_seq
            .map(|s| format!(" from the checkpoint's entry {s} on"))
            .unwrap_or_default();
        println!(
            "ok: {}{since}, chain intact, last entry {} hash {}{}",
            crate::count(r.entries, "entry", "entries"),
            r.last_seq,
            r.last_hash,
            if r.checkpoint.is_some() {
                ", checkpoint matches"
            } else {
                ""
            }
        );
    } else {
        println!("TAMPERED or damaged: {}", r.log.display());
        for p in &r.problems {
            println!("  {p}");
        }
        println!(
            "{} before the first problem",
            crate::count(r.entries, "intact entry", "intact entries")
        );
    }
}

/// One line per event for `audit show`: one arm per event type, so as
/// long as the list of types.
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
        Event::ConfigApplied {
            digest,
            previous,
            generation,
            by,
            source,
            ..
        } => format!(
            "config {digest} applied by {by} ({source}; was {previous}, generation {generation})"
        ),
        Event::ConfigRefused {
            digest,
            serving,
            reasons,
            by,
            ..
        } => format!(
            "config {} REFUSED (by {by}; {serving} serves on): {}",
            digest.as_deref().unwrap_or("(unread)"),
            reasons.join(" | ")
        ),
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
            trigger,
            ..
        } => format!(
            "run {run} of {workflow} started{}{}",
            initiator
                .as_ref()
                .map(|i| format!(" by {i}"))
                .unwrap_or_default(),
            trigger
                .as_ref()
                .map(|t| format!(" ({} {} {}, {})", t.kind, t.name, t.key, t.auth))
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
        Event::AuthRefused {
            route,
            identity,
            reason,
        } => format!(
            "REFUSED {route}: {reason}{}",
            identity
                .as_ref()
                .map(|i| format!(" (token shows {i})"))
                .unwrap_or_default()
        ),
        Event::AuthRefusalsSuppressed { reason, count, .. } => {
            format!(
                "REFUSED {count} more requests ({reason}) in that minute, not recorded one by one"
            )
        }
        Event::HookRefused {
            hook,
            reason,
            count,
            detail,
        } => format!("hook {hook} refused {count} delivery(ies): {reason}: {detail}"),
        Event::ToolRefused {
            agent,
            tool,
            tools,
            rule,
            count,
            detail,
        } => {
            let tools = if tools.len() > 1 {
                format!(" (tools {})", tools.join(", "))
            } else {
                String::new()
            };
            format!("agent {agent}: {count} call(s) of {tool}{tools} refused [{rule}]: {detail}")
        }
        Event::PluginPushed {
            digest, by, source, ..
        } => format!("{source} of {digest} by {by}"),
        Event::PluginActivated {
            digest, previous, ..
        } => format!(
            "now serving {digest} (was {})",
            previous.as_deref().unwrap_or("-")
        ),
        Event::PluginPinned { digest, by, .. } => match digest {
            Some(d) => format!("pinned to {d} by {by}"),
            None => format!("unpinned by {by}"),
        },
    }
}

pub fn show_text(events: &AuditEvents) {
    for r in &events.events {
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

/// Every record as JSON Lines, to `out` or standard output.
pub fn export(records: &[Record], out: Option<&Path>) -> Result<i32> {
    use std::io::Write;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    for r in records {
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

/// The checkpoint, to `out` or standard output.
pub fn write_checkpoint(cp: &Checkpoint, out: Option<&Path>) -> Result<i32> {
    let text = serde_json::to_string_pretty(cp)?;
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

/// The KPIs over time as text: one line per bucket.
pub fn kpi_series_text(s: &charter_api::KpiSeries) {
    let time = |ms: u64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    let ms = |v: Option<u64>| v.map_or("—".to_string(), |v| format!("{v} ms"));
    println!(
        "{} buckets, one per {}, {} to {}",
        s.buckets.len(),
        s.bucket,
        time(s.from_ms),
        time(s.to_ms)
    );
    println!(
        "{:<20}  {:>7} {:>8} {:>6}  {:>7} {:>12}  {:>7} {:>6} {:>12}  {:>7}  {:>12}",
        "bucket",
        "allowed",
        "proposed",
        "denied",
        "decided",
        "latency p50",
        "started",
        "ended",
        "cycle p50",
        "handoff",
        "unauthorized"
    );
    for b in &s.buckets {
        println!(
            "{:<20}  {:>7} {:>8} {:>6}  {:>7} {:>12}  {:>7} {:>6} {:>12}  {:>7}  {:>12}",
            time(b.start_ms),
            b.calls_allowed,
            b.calls_proposed,
            b.calls_denied,
            b.proposals_resolved,
            ms(b.decision_latency_ms_p50),
            b.runs_started,
            b.runs_finished,
            ms(b.cycle_time_ms_p50),
            b.handoff_rate
                .map_or("—".to_string(), |r| format!("{:.0} %", r * 100.0)),
            b.unauthorized_actions_executed
        );
    }
}

/// The KPIs of deployment `name` as text, each count with what it counts:
/// one section after another (risk, proposals, workflows, calls), in the
/// order an operator reads them.
pub fn kpi_text(name: &str, k: &Kpi) {
    println!(
        "deployment {} — {}, {}",
        name,
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
        (
            b.authentication_refused,
            "authentication refused",
            "a request to charter up with no token, or an unknown or expired one",
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
    // Per AI agent: its own section (`charter_runtime::kpi::agents`).
    let agents = charter_runtime::kpi::agents::text(&k.agents);
    if !agents.is_empty() {
        print!("\n{agents}");
    }
}

pub fn proposal_text(d: &ProposalDetail) {
    let p = &d.proposal;
    let executed = d
        .execution
        .as_ref()
        .map(|e| (e.seq, e.ok, e.summary.clone()));
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

pub fn proposals_text(list: &ProposalsList, all: bool) {
    let ps = &list.proposals;
    if ps.is_empty() {
        println!("no {}proposals", if all { "" } else { "pending " });
        return;
    }
    for p in ps {
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

pub fn decision_text(id: &str, r: &DecideReport) {
    let dec = &r.decision;
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
