//! `charter run`, `charter runs …` and `charter escalations …` as text:
//! durable workflow runs, and failed steps handed to people.

use std::path::Path;

use anyhow::Result;
use charter_api::{
    Escalation, EscalationsList, ResumeReport, Resumed, Run, RunDecision, RunReport, RunsList,
};
use charter_runtime::workflow::status;

fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print_run(st: &Run) {
    println!("run {}  [{}]  workflow {}", st.id, st.status, st.workflow);
    println!(
        "  started    {}{}",
        time(st.started_ms),
        st.initiator
            .as_ref()
            .map(|i| format!(" by {i}"))
            .unwrap_or_default()
    );
    if let Some(f) = st.finished_ms {
        println!(
            "  finished   {} ({} ms)",
            time(f),
            f.saturating_sub(st.started_ms)
        );
    }
    println!("  input      {}", st.input);
    for a in &st.history {
        let mut line = format!(
            "  step {:<16} attempt {}  {:<18}",
            a.step, a.attempt, a.outcome
        );
        if let Some(f) = &a.failure {
            line.push_str(&format!(" [{f}]"));
        }
        if a.replayed > 0 {
            line.push_str(&format!(" ({} replayed)", a.replayed));
        }
        if let Some(e) = &a.error {
            let first = e.lines().next().unwrap_or_default();
            line.push_str(&format!(" {first}"));
        }
        println!("{line}");
    }
    if let Some(o) = &st.output {
        if st.status == status::COMPLETED {
            println!("  output     {o}");
        } else {
            println!("  last output {o}");
        }
    }
    if let Some(e) = &st.error
        && st.status != status::COMPLETED
    {
        println!("  error      {}", e.lines().next().unwrap_or_default());
    }
    if let Some(h) = st.next() {
        println!("  next       {h}");
    }
}

/// A run's report: the document in `--json`, the run as text otherwise.
/// Its exit code is the run's.
pub fn report(r: &RunReport, as_json: bool) -> Result<i32> {
    if as_json {
        crate::commands::print_json(r, true)?;
    } else {
        print_run(&r.run);
    }
    Ok(r.exit_code)
}

/// One decision as `runs show` prints it.
fn decision_line(d: &RunDecision) -> String {
    let what = match (&d.proposal, &d.escalation) {
        (Some(p), _) => format!("proposal {p}"),
        (None, e) => format!("escalation {}", e.as_deref().unwrap_or("-")),
    };
    if !d.accepted {
        let mut line = format!("{what}: REFUSED attempt by {} to {}", d.by, d.action);
        if let Some(r) = &d.reason {
            line.push_str(&format!(": {r}"));
        }
        return line;
    }
    let action = match d.action.as_str() {
        "approve" => "approved".to_string(),
        "reject" => "rejected".to_string(),
        a => format!("resolved ({a})"),
    };
    let mut line = format!("{what} {action} by {}", d.by);
    if let Some(c) = &d.comment {
        line.push_str(&format!(" ({c:?})"));
    }
    line
}

/// `runs show`: the run and who decided what on it.
pub fn show_text(r: &RunReport) {
    print_run(&r.run);
    for d in r.decisions.iter().flatten() {
        println!("  decision   {}", decision_line(d));
    }
}

/// A run's duration so far (or in all, once it ended).
fn duration(st: &Run) -> String {
    let end = st.finished_ms.unwrap_or_else(charter_audit::now_ms);
    let ms = end.saturating_sub(st.started_ms);
    let d = if ms < 1_000 {
        format!("{ms} ms")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1_000)).to_string()
    };
    if st.finished_ms.is_some() {
        d
    } else {
        format!("{d}+")
    }
}

pub fn list_text(list: &RunsList) {
    if list.runs.is_empty() {
        println!("no runs");
        return;
    }
    println!(
        "{:<16} {:<18} {:<18} {:<16} {:<12} {:<20} DURATION",
        "RUN", "WORKFLOW", "STATUS", "AT STEP", "INITIATOR", "STARTED"
    );
    for r in &list.runs {
        println!(
            "{:<16} {:<18} {:<18} {:<16} {:<12} {:<20} {}",
            r.id,
            r.workflow,
            r.status,
            r.cursor.as_deref().unwrap_or("-"),
            r.initiator.as_deref().unwrap_or("-"),
            time(r.started_ms),
            duration(r)
        );
    }
}

/// `runs resume`: each run as text, each failure on stderr.
pub fn resume_text(r: &ResumeReport) {
    for item in &r.runs {
        match item {
            Resumed::Run(st) => print_run(st),
            Resumed::Failed { id, error } => eprintln!("error: run {id}: {error}"),
        }
    }
    if r.runs.is_empty() {
        println!("no run to resume");
    }
}

/// Drive a run in a background process of this same binary.
pub fn spawn_driver(config: &Path, run: &str) -> Result<()> {
    let exe = std::env::current_exe()?;
    std::process::Command::new(exe)
        .args(["runs", "resume", run, "--quiet", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok(())
}

fn print_escalation(e: &Escalation) {
    println!(
        "{}  [{}]  run {} step {}  role {}  {}",
        e.id,
        e.status,
        e.run,
        e.step,
        e.role,
        time(e.created_ms)
    );
    println!("  reason  {}", e.reason.lines().next().unwrap_or_default());
    if let Some(by) = &e.resolved_by {
        println!(
            "  resolved by {by}: {}{}",
            e.action.as_deref().unwrap_or("-"),
            e.comment
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
}

pub fn escalations_text(list: &EscalationsList) {
    if list.escalations.is_empty() {
        println!("no open escalations");
        return;
    }
    for e in &list.escalations {
        print_escalation(e);
    }
}

#[cfg(test)]
mod tests {
    use charter_api::worst;
    use charter_runtime::error::{EXIT_ERROR, EXIT_LIMIT, EXIT_OK, EXIT_REFUSED, EXIT_WAITING};

    #[test]
    fn failures_outrank_waiting_and_waiting_outranks_success() {
        assert_eq!(worst(EXIT_OK, EXIT_WAITING), EXIT_WAITING);
        assert_eq!(worst(EXIT_WAITING, EXIT_OK), EXIT_WAITING);
        assert_eq!(worst(EXIT_WAITING, EXIT_ERROR), EXIT_ERROR);
        assert_eq!(worst(EXIT_ERROR, EXIT_WAITING), EXIT_ERROR);
        assert_eq!(worst(EXIT_ERROR, EXIT_REFUSED), EXIT_REFUSED);
        assert_eq!(worst(EXIT_LIMIT, EXIT_WAITING), EXIT_LIMIT);
    }
}
