//! `charter run`, `charter runs …` and `charter escalations …`: start,
//! watch, resume and cancel durable workflow runs, and hand failed steps
//! back from people.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use charter_audit::{Event, Record};
use charter_config::Deployment;
use charter_runtime::error::{EXIT_ERROR, EXIT_OK, EXIT_WAITING};
use charter_runtime::workflow::{EscalationState, RunError, RunState, status};
use charter_runtime::{Host, HostOptions};
use serde_json::{Value, json};

/// The exit code a run's state reads as: 0 completed, 4 waiting for
/// people (an approval, or an escalation), 1 failed or cancelled (or not
/// finished here: running, retry-wait).
pub fn exit_code(st: &RunState) -> i32 {
    match st.status.as_str() {
        status::COMPLETED => EXIT_OK,
        status::WAITING_APPROVAL | status::ESCALATED => EXIT_WAITING,
        _ => EXIT_ERROR,
    }
}

/// The exit code of several runs (`charter runs resume`): the worst one,
/// where any failure outranks waiting for people, and waiting outranks
/// success.
fn worst(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        EXIT_OK => 0,
        EXIT_WAITING => 1,
        c => 2 + c,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What a person or script should do next with a run.
fn next_hint(st: &RunState) -> Option<String> {
    match st.status.as_str() {
        status::WAITING_APPROVAL => st.proposal.as_ref().map(|p| {
            format!("waiting for approval of {p}: `charter proposals show {p}`, then approve or reject (the run resumes)")
        }),
        status::ESCALATED => st.escalation.as_ref().map(|e| {
            format!("escalated as {e}: `charter escalations resolve {e} --as USER --action retry|skip|fail`")
        }),
        status::RUNNING | status::RETRY_WAIT => Some(format!(
            "not finished here: `charter runs resume {}`",
            st.id
        )),
        _ => None,
    }
}

fn print_run(st: &RunState) {
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
    if let Some(h) = next_hint(st) {
        println!("  next       {h}");
    }
}

fn report(st: &RunState, as_json: bool) -> Result<i32> {
    if as_json {
        let mut v = serde_json::to_value(st)?;
        v["exit_code"] = json!(exit_code(st));
        v["next"] = json!(next_hint(st));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_run(st);
    }
    Ok(exit_code(st))
}

/// The decisions people made on a run, from the log: on the proposals
/// its steps waited on (approvals, rejections, refused attempts) and on
/// its escalations.
fn decisions(records: &[Record], run: &str) -> Vec<Value> {
    let proposals: HashSet<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepAttempt {
                run: of,
                proposal: Some(p),
                ..
            } if of == run => Some(p.as_str()),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ApprovalDecision {
                proposal,
                by,
                approve,
                comment,
                accepted,
                reason,
            } if proposals.contains(proposal.as_str()) => Some(json!({
                "proposal": proposal, "by": by,
                "action": if *approve { "approve" } else { "reject" },
                "accepted": accepted, "comment": comment, "reason": reason, "time_ms": r.time_ms,
            })),
            Event::EscalationResolved {
                id,
                run: of,
                by,
                action,
                comment,
                accepted,
                reason,
                ..
            } if of == run => Some(json!({
                "escalation": id, "by": by, "action": action,
                "accepted": accepted, "comment": comment, "reason": reason, "time_ms": r.time_ms,
            })),
            _ => None,
        })
        .collect()
}

/// One decision as `runs show` prints it.
fn decision_line(d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("-").to_string();
    let what = d["proposal"]
        .as_str()
        .map(|p| format!("proposal {p}"))
        .unwrap_or_else(|| format!("escalation {}", s("escalation")));
    if d["accepted"] != true {
        let mut line = format!("{what}: REFUSED attempt by {} to {}", s("by"), s("action"));
        if let Some(r) = d["reason"].as_str() {
            line.push_str(&format!(": {r}"));
        }
        return line;
    }
    let action = match s("action").as_str() {
        "approve" => "approved".to_string(),
        "reject" => "rejected".to_string(),
        a => format!("resolved ({a})"),
    };
    let mut line = format!("{what} {action} by {}", s("by"));
    if let Some(c) = d["comment"].as_str() {
        line.push_str(&format!(" ({c:?})"));
    }
    line
}

/// `runs show`: the run and who decided what on it.
fn report_show(st: &RunState, decisions: &[Value], as_json: bool) -> Result<i32> {
    if as_json {
        let mut v = serde_json::to_value(st)?;
        v["decisions"] = json!(decisions);
        v["exit_code"] = json!(exit_code(st));
        v["next"] = json!(next_hint(st));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_run(st);
        for d in decisions {
            println!("  decision   {}", decision_line(d));
        }
    }
    Ok(exit_code(st))
}

/// A run's duration so far (or in all, once it ended).
fn duration(st: &RunState) -> String {
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

fn run_error(e: RunError, as_json: bool) -> Result<i32> {
    let code = e.exit_code();
    if as_json {
        println!(
            "{}",
            json!({"ok": false, "error": {"message": e.to_string(), "exit_code": code}})
        );
    } else if let RunError::Refused { id, rule, reason } = &e {
        // Its Display already says "refused": said once here.
        eprintln!("refused: {id}: {reason} [{rule}]");
    } else {
        eprintln!("{}: {e}", crate::label(code));
    }
    Ok(code)
}

fn host(d: Deployment) -> Result<Host> {
    Ok(Host::new(d, HostOptions::default())?)
}

/// `charter run WORKFLOW`.
pub async fn run(
    d: Deployment,
    workflow: &str,
    input: &str,
    initiator: &str,
    detach: bool,
    as_json: bool,
) -> Result<i32> {
    let input: Value = serde_json::from_str(input)
        .map_err(|e| anyhow::anyhow!("--input is not valid JSON: {e}"))?;
    let config = d.source.clone();
    let h = host(d)?;
    if detach {
        let st = match h.start_run(workflow, input, Some(initiator)).await {
            Ok(st) => st,
            Err(e) => return run_error(e, as_json),
        };
        h.store().flush()?;
        drop(h); // release the log for the process that drives the run
        spawn_driver(&config, &st.id)?;
        if as_json {
            println!(
                "{}",
                json!({"run": st.id, "status": "started", "detached": true})
            );
        } else {
            println!("{}", st.id);
            eprintln!(
                "run {} started in the background; follow it with `charter runs show {}`",
                st.id, st.id
            );
        }
        return Ok(EXIT_OK);
    }
    let res = h.run_workflow(workflow, input, Some(initiator)).await;
    h.store().flush()?;
    match res {
        Ok(st) => report(&st, as_json),
        Err(e) => run_error(e, as_json),
    }
}

/// Drive a run in a background process of this same binary.
fn spawn_driver(config: &Path, run: &str) -> Result<()> {
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

pub enum RunsOp {
    List {
        status: Option<String>,
        json: bool,
    },
    Show {
        id: String,
        json: bool,
    },
    Resume {
        id: Option<String>,
        json: bool,
        quiet: bool,
    },
    Cancel {
        id: String,
        by: String,
        json: bool,
    },
}

/// Runs and escalations folded from the log file alone: read-only commands
/// work while another process (a detached run) holds the deployment.
fn from_log(d: &Deployment) -> Result<(Vec<RunState>, Vec<EscalationState>)> {
    Ok(charter_runtime::workflow::state::from_records(&records(d)?))
}

/// The log's records (none before the first command wrote one).
fn records(d: &Deployment) -> Result<Vec<Record>> {
    let path = crate::govern::log_path(d);
    if !path.exists() {
        return Ok(vec![]);
    }
    Ok(charter_audit::read_records(&path)?)
}

pub async fn runs(d: Deployment, op: RunsOp) -> Result<i32> {
    match op {
        RunsOp::List { status, json } => {
            let all: Vec<RunState> = from_log(&d)?
                .0
                .into_iter()
                .filter(|r| status.as_ref().is_none_or(|s| &r.status == s))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "runs": all }))?);
            } else if all.is_empty() {
                println!("no runs");
            } else {
                println!(
                    "{:<16} {:<18} {:<18} {:<16} {:<12} {:<20} DURATION",
                    "RUN", "WORKFLOW", "STATUS", "AT STEP", "INITIATOR", "STARTED"
                );
                for r in &all {
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
            Ok(EXIT_OK)
        }
        RunsOp::Show { id, json } => {
            // One run's records through the state index when no other
            // process holds the deployment; the whole log otherwise.
            let records = match charter_runtime::index::run_records_offline(&d.data_dir, &id) {
                Some(r) => r,
                None => records(&d)?,
            };
            let runs = charter_runtime::workflow::state::from_records(&records).0;
            match runs.into_iter().find(|r| r.id == id) {
                Some(st) => {
                    report_show(&st, &decisions(&records, &id), json)?;
                    Ok(EXIT_OK)
                }
                None => run_error(RunError::UnknownRun(id), json),
            }
        }
        op => drive(d, op).await,
    }
}

async fn drive(d: Deployment, op: RunsOp) -> Result<i32> {
    let h = host(d)?;
    let code = match op {
        RunsOp::List { .. } | RunsOp::Show { .. } => unreachable!("read from the log"),
        RunsOp::Resume { id, json, quiet } => {
            let results = match id {
                Some(id) => vec![(id.clone(), h.drive(&id).await)],
                None => h.resume_runs().await,
            };
            let mut code = EXIT_OK;
            let mut docs = Vec::new();
            for (id, r) in results {
                match r {
                    Ok(st) => {
                        code = worst(code, exit_code(&st));
                        if !quiet && !json {
                            print_run(&st);
                        }
                        docs.push(serde_json::to_value(&st)?);
                    }
                    Err(e) => {
                        code = worst(code, e.exit_code());
                        if !quiet && !json {
                            eprintln!("error: run {id}: {e}");
                        }
                        docs.push(json!({"id": id, "error": e.to_string()}));
                    }
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "runs": docs }))?
                );
            } else if docs.is_empty() && !quiet {
                println!("no run to resume");
            }
            code
        }
        RunsOp::Cancel { id, by, json } => match h.cancel_run(&id, &by).await {
            Ok(st) => {
                report(&st, json)?;
                EXIT_OK
            }
            Err(e) => run_error(e, json)?,
        },
    };
    h.store().flush()?;
    Ok(code)
}

pub enum EscalationsOp {
    List {
        all: bool,
        json: bool,
    },
    Resolve {
        id: String,
        by: String,
        action: String,
        output: Option<String>,
        comment: Option<String>,
        json: bool,
    },
}

fn print_escalation(e: &EscalationState) {
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

pub async fn escalations(d: Deployment, op: EscalationsOp) -> Result<i32> {
    if let EscalationsOp::List { all, json } = op {
        let list: Vec<EscalationState> = from_log(&d)?
            .1
            .into_iter()
            .filter(|e| all || e.status == "open")
            .collect();
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "escalations": list }))?
            );
        } else if list.is_empty() {
            println!("no open escalations");
        } else {
            for e in &list {
                print_escalation(e);
            }
        }
        return Ok(EXIT_OK);
    }
    let h = host(d)?;
    let code = match op {
        EscalationsOp::List { .. } => unreachable!("read from the log"),
        EscalationsOp::Resolve {
            id,
            by,
            action,
            output,
            comment,
            json,
        } => {
            let output = match output {
                Some(o) => Some(
                    serde_json::from_str(&o)
                        .map_err(|e| anyhow::anyhow!("--output is not valid JSON: {e}"))?,
                ),
                None => None,
            };
            match h
                .resolve_escalation(&id, &by, &action, output, comment)
                .await
            {
                Ok(st) => report(&st, json)?,
                Err(e) => run_error(e, json)?,
            }
        }
    };
    h.store().flush()?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use charter_runtime::error::{EXIT_LIMIT, EXIT_REFUSED};

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
