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
/// A cell of the framework's table, from one pattern's dimensions.
type Cell = fn(&charter_runtime::kpi::framework::Dimensions) -> String;
/// A ratio of the framework's table (0..=1), for a bar chart.
type Ratio = fn(&charter_runtime::kpi::framework::Dimensions) -> Option<f64>;

/// The framework's rows: dimension, measure, the cell's text.
fn framework_rows() -> [(&'static str, &'static str, Cell); 10] {
    fn pct(v: Option<f64>) -> String {
        v.map_or("—".to_string(), |v| format!("{:.0}%", v * 100.0))
    }
    fn dec(v: Option<f64>) -> String {
        v.map_or("—".to_string(), |v| format!("{v:.2}"))
    }
    [
        ("efficiency", "runs", |d| d.efficiency.runs.to_string()),
        ("", "cycle time p50", |d| {
            d.efficiency
                .cycle_time_ms_p50
                .map_or("—".to_string(), |v| format!("{v} ms"))
        }),
        ("", "retries", |d| d.efficiency.retries.to_string()),
        ("", "escalations avoided", |d| {
            d.efficiency.escalations_avoided.to_string()
        }),
        ("customer", "resolution confidence", |d| {
            dec(d.customer.resolution_confidence)
        }),
        ("", "handoff rate", |d| pct(d.customer.handoff_rate)),
        ("decision quality", "exception consistency", |d| {
            pct(d.decision_quality.exception_consistency)
        }),
        ("", "policy adherence", |d| {
            pct(d.decision_quality.policy_adherence)
        }),
        ("adoption", "proposal acceptance", |d| {
            pct(d.adoption.proposal_acceptance_rate)
        }),
        ("risk", "unauthorized actions", |d| {
            format!("{} (target 0)", d.risk.unauthorized_actions)
        }),
    ]
}

/// The framework's ratios, charted in the HTML report.
fn framework_ratios() -> [(&'static str, Ratio); 4] {
    [
        ("handoff rate", |d| d.customer.handoff_rate),
        ("exception consistency", |d| {
            d.decision_quality.exception_consistency
        }),
        ("policy adherence", |d| d.decision_quality.policy_adherence),
        ("proposal acceptance", |d| {
            d.adoption.proposal_acceptance_rate
        }),
    ]
}

fn framework_cols(
    t: &charter_api::FrameworkKpi,
) -> Vec<(&str, &charter_runtime::kpi::framework::Dimensions)> {
    let mut cols: Vec<_> = t.patterns.iter().map(|(p, d)| (p.as_str(), d)).collect();
    cols.push(("overall", &t.overall));
    cols
}

/// `charter kpi --framework`: one row per measure, one column per pattern
/// and overall.
pub fn kpi_framework_text(t: &charter_api::FrameworkKpi) {
    if !t.deployments.is_empty() {
        println!("deployments folded: {}", t.deployments.join(", "));
    }
    let rows = framework_rows();
    let cols = framework_cols(t);
    // Each column as wide as its name or its widest cell, and two spaces.
    let widths: Vec<usize> = cols
        .iter()
        .map(|(p, d)| {
            rows.iter()
                .map(|(_, _, f)| f(d).chars().count())
                .chain([p.chars().count()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let mut line = format!("{:<18}{:<24}", "dimension", "measure");
    for ((p, _), w) in cols.iter().zip(&widths) {
        line.push_str(&format!("{p:<w$}"));
    }
    println!("{}", line.trim_end());
    for (dim, measure, f) in &rows {
        let mut line = format!("{dim:<18}{measure:<24}");
        for ((_, d), w) in cols.iter().zip(&widths) {
            line.push_str(&format!("{:<w$}", f(d)));
        }
        println!("{}", line.trim_end());
    }
}

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

/// `s` escaped for HTML text and attributes.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `charter report`: the framework's table as one self-contained HTML page
/// (inline CSS, inline SVG bar charts of its ratios; no external
/// reference, so it opens offline and leaks nothing when opened).
pub fn kpi_framework_html(deployment: &str, t: &charter_api::FrameworkKpi) -> String {
    use std::fmt::Write;
    let cols = framework_cols(t);
    let mut h = String::new();
    let name = html_escape(deployment);
    let folded = if t.deployments.len() > 1 {
        format!(
            "<p>Folded from {} deployments' logs: {}.</p>\n",
            t.deployments.len(),
            html_escape(&t.deployments.join(", "))
        )
    } else {
        String::new()
    };
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Charter KPIs: {name}</title>\n<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}th{{background:#f4f4f4}}svg text{{font:12px system-ui,sans-serif}}</style></head><body>\n<h1>KPIs of {name}</h1>\n{folded}<table><tr><th>dimension</th><th>measure</th>"
    );
    for (p, _) in &cols {
        let _ = write!(h, "<th>{}</th>", html_escape(p));
    }
    h.push_str("</tr>\n");
    for (dim, measure, f) in framework_rows() {
        let _ = write!(h, "<tr><td>{dim}</td><td>{measure}</td>");
        for (_, d) in &cols {
            let _ = write!(h, "<td>{}</td>", html_escape(&f(d)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    let (bar, label) = (300.0, 160);
    for (measure, f) in framework_ratios() {
        let height = 22 * cols.len() + 10;
        let _ = write!(
            h,
            "<h2>{measure}</h2>\n<svg width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"{measure}\">",
            label + 360
        );
        for (i, (p, d)) in cols.iter().enumerate() {
            let y = 5 + 22 * i;
            let v = f(d);
            let w = v.map_or(0.0, |v| v.clamp(0.0, 1.0) * bar);
            let shown = v.map_or("—".to_string(), |v| format!("{:.0}%", v * 100.0));
            let _ = write!(
                h,
                "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{label}\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"#4a7bd0\"/><text x=\"{:.1}\" y=\"{}\">{shown}</text>",
                y + 13,
                html_escape(p),
                label as f64 + w + 5.0,
                y + 13
            );
        }
        h.push_str("</svg>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTML report holds every figure of the table, per pattern and
    /// overall, escapes a hostile pattern name, and references nothing
    /// outside itself.
    #[test]
    fn the_html_report_holds_the_figures_and_no_external_reference() {
        let mut t = charter_api::FrameworkKpi::default();
        let mut d = charter_runtime::kpi::framework::Dimensions::default();
        d.efficiency.runs = 17;
        d.efficiency.retries = 3;
        d.decision_quality.policy_adherence = Some(0.93);
        d.customer.handoff_rate = Some(0.25);
        d.risk.unauthorized_actions = 0;
        t.patterns.insert("policy-assistant".into(), d.clone());
        t.patterns
            .insert("<script>x</script>".into(), Default::default());
        d.efficiency.runs = 42;
        t.overall = d;
        let h = kpi_framework_html("acme & co", &t);
        for want in [
            "<th>policy-assistant</th>",
            "<th>overall</th>",
            "<td>17</td>",
            "<td>42</td>",
            "<td>3</td>",
            "<td>93%</td>",
            "<td>25%</td>",
            "0 (target 0)",
            "acme &amp; co",
            "&lt;script&gt;",
            "<svg",
            "policy adherence",
        ] {
            assert!(h.contains(want), "{want} missing:\n{h}");
        }
        assert!(!h.contains("<script>"), "{h}");
        let lower = h.to_lowercase();
        assert!(
            !lower.contains("http://") && !lower.contains("https://"),
            "{h}"
        );
        assert!(!lower.contains("src=") && !lower.contains("href="), "{h}");
        // A 93% bar is 93% of the 300-pixel scale.
        assert!(h.contains("width=\"279.0\""), "{h}");
    }
}
