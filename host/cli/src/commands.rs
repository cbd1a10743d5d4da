//! Each command: its arguments become a `charter_api` request, the one
//! `Control` service answers it, and the answer is rendered as text
//! (`report.rs`, `govern.rs`, `runs.rs`) or, with `--json`, as the
//! response serialized. Exit codes come from the response or from the
//! `ApiError`'s class.

use std::path::Path;

use anyhow::{Context, Result};
use charter_api::{Access, ApiError, CallFailure, Control, Failure, InspectFailure, RunResponse};
use charter_config::DEFAULT_CONFIG;
use charter_runtime::error::EXIT_OK;
use serde::Serialize;

use crate::{
    AuditOp, Command, ConfigArg, ConfigsArg, EscalationsCmd, KvOp, ProposalCmd, RunsCmd, SdkOp,
    current_user, govern, new, read_input, report, runs, tokens,
};

/// Print one JSON document: indented, or on one line.
pub fn print_json<T: Serialize>(doc: &T, pretty: bool) -> Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(doc)?
    } else {
        serde_json::to_string(doc)?
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        // The reader left (`charter … --json | head`): nobody is there to
        // tell, and nothing more is worth writing. Quietly, as a pipe
        // expects (no panic, no message), with the code the shell's
        // SIGPIPE convention gives (128 + 13).
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        r => Ok(r?),
    }
}

/// An error a command cannot report in its own terms: the data directory
/// is busy, the log cannot be read. Said as `error: …` (exit 1), in
/// `--json` too, as every such failure always was.
fn infrastructure(e: &ApiError) -> bool {
    e.kind == "internal"
}

/// Say `e` on stderr as the text output does: `refused: ID: REASON [RULE]`
/// for a refused decision (its message already says "refused": said once),
/// else `LABEL: MESSAGE`. Returns its exit code.
pub fn fail(e: &ApiError) -> i32 {
    match &e.refusal {
        Some(r) => eprintln!("refused: {}: {} [{}]", r.id, r.reason, r.rule),
        None => eprintln!("{}: {}", e.class.label(), e.message),
    }
    e.exit_code()
}

/// A failure of `run`, `runs show|cancel`, `escalations resolve`,
/// `proposals approve|reject`: `{ok: false, error}` in `--json`.
pub fn fail_doc(e: &ApiError, json: bool) -> Result<i32> {
    if json && !infrastructure(e) {
        print_json(&Failure::from(e), false)?;
        return Ok(e.exit_code());
    }
    Ok(fail(e))
}

fn control(config: &ConfigArg) -> Result<Control> {
    Ok(Control::new(config.load()?, Access::Local))
}

/// The framework's table over every deployment `--config` names (one, or
/// several folded), and what to call it: the deployment's name, or how
/// many were folded (the table names them).
fn framework_table(configs: &ConfigsArg) -> Result<(String, charter_api::FrameworkKpi)> {
    let each = configs.each();
    if let [one] = each.as_slice() {
        let c = control(one)?;
        return Ok((c.deployment().name.clone(), c.kpi_framework()?));
    }
    let mut fold = charter_runtime::kpi::framework::FrameworkFold::default();
    let mut names = Vec::new();
    for config in &each {
        let c = control(config)?;
        let name = c.deployment().name.clone();
        if names.contains(&name) {
            anyhow::bail!(
                "{} names deployment {name:?} again: each deployment's log is folded once",
                config.path().display()
            );
        }
        c.kpi_framework_into(&mut fold)
            .with_context(|| format!("reading {}", config.path().display()))?;
        names.push(name);
    }
    Ok((format!("{} deployments", names.len()), fold.table()))
}

/// Who acts: the identity CHARTER_TOKEN proves (and `--as`, if given, must
/// name it), else, in a deployment that declares no token, `--as` or,
/// where `default` allows it, `$USER`. A deployment with tokens accepts
/// no unproven name, for initiators as for approvers.
pub(crate) fn who(c: &Control, as_user: Option<String>, default: bool) -> Result<String, ApiError> {
    use charter_api::Credential;
    let token = std::env::var("CHARTER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    if let Some(t) = token {
        let p = c.principal(Credential::Token(&t))?;
        return match as_user {
            Some(n) if n != p.name => Err(ApiError::usage(format!(
                "--as {n} but CHARTER_TOKEN proves {}: leave out --as, or use {n}'s token",
                p.name
            ))),
            _ => Ok(p.name),
        };
    }
    if c.authenticator().requires_tokens() {
        return Err(c.principal(Credential::Nothing).unwrap_err());
    }
    match as_user {
        Some(n) => Ok(n),
        None if default => Ok(current_user()),
        None => Err(ApiError::usage(
            "say who decides: --as NAME (a person declared under [approvers] or [identities])",
        )),
    }
}

/// One arm per command (the groups with subcommands have their own
/// function below): long, but each arm is request, call, render.
pub async fn run(command: Command, server: Option<&str>) -> Result<i32> {
    // While charter up serves the deployment, act through it.
    let command = match crate::remote::try_remote(command, server).await? {
        Ok(code) => return Ok(code),
        Err(local) => local,
    };
    match command {
        Command::Inspect {
            plugin,
            config,
            json,
        } => inspect(&plugin, &config, json).await,
        Command::Check { config, json } => {
            let resp = control(&config)?
                .check(&charter_api::CheckRequest {})
                .await
                .map_err(anyhow::Error::new)?;
            if json {
                print_json(&resp.report, true)?;
            } else {
                report::check_text(&resp);
            }
            Ok(resp.report.exit_code)
        }
        Command::Nodes { config, json } => match control(&config)?.nodes() {
            Ok(r) if json => print_json(&r, true).map(|()| EXIT_OK),
            Ok(r) => {
                nodes_text(&r);
                Ok(EXIT_OK)
            }
            Err(e) => fail_doc(&e, json),
        },
        Command::Grants { config, json } => {
            let r = control(&config)?.grants(&charter_api::GrantsRequest {})?;
            if json {
                print_json(&r, true)?;
            } else {
                report::grants_text(&r);
            }
            Ok(r.exit_code())
        }
        Command::Call {
            plugin,
            input,
            config,
            json,
            as_user,
        } => {
            let input = read_input(&input)?;
            let c = control(&config)?;
            let initiator = match who(&c, as_user, true) {
                Ok(w) => w,
                Err(e) => return Ok(fail(&e)),
            };
            let req = charter_api::CallRequest {
                plugin,
                input,
                initiator,
            };
            match c.call(&req).await {
                Ok(r) if json => print_json(&r, false).map(|()| EXIT_OK),
                Ok(r) => {
                    println!("{}", serde_json::to_string_pretty(&r.output)?);
                    Ok(EXIT_OK)
                }
                Err(e) if json && !infrastructure(&e) => {
                    print_json(&CallFailure::new(&req.plugin, &e), false)?;
                    Ok(e.exit_code())
                }
                Err(e) => Ok(fail(&e)),
            }
        }
        Command::Kv { op } => kv(op).await,
        Command::Plugins { op } => crate::plugins::local(op).await,
        Command::Config {
            op: crate::ConfigOp::Apply { json, .. },
        } => fail_doc(
            &charter_api::ApiError::usage(
                "no charter up is serving this deployment: a configuration applies live only in a running host (the next command reads charter.toml as it is)",
            ),
            json,
        ),
        Command::Run {
            workflow,
            input,
            detach,
            as_user,
            config,
            json,
        } => {
            let input = read_input(&input)?;
            let c = control(&config)?;
            let input = serde_json::from_str(&input)
                .map_err(|e| anyhow::anyhow!("--input is not valid JSON: {e}"))?;
            let initiator = match who(&c, as_user, true) {
                Ok(w) => w,
                Err(e) => return fail_doc(&e, json),
            };
            let req = charter_api::RunRequest {
                workflow,
                input,
                initiator,
                detach,
            };
            match c.run(&req).await {
                Ok(RunResponse::Driven(r)) => runs::report(&r, json),
                Ok(RunResponse::Detached(d)) => {
                    let source = c.deployment().source.clone();
                    // Release the log for the process that drives the run.
                    c.release();
                    drop(c);
                    runs::spawn_driver(&source, &d.run)?;
                    if json {
                        print_json(&d, false)?;
                    } else {
                        println!("{}", d.run);
                        eprintln!(
                            "run {} started in the background; follow it with `charter runs show {}`",
                            d.run, d.run
                        );
                    }
                    Ok(EXIT_OK)
                }
                Err(e) => fail_doc(&e, json),
            }
        }
        Command::Runs { op } => runs_cmd(op).await,
        Command::Escalations { op } => escalations(op).await,
        Command::New {
            lang,
            name,
            uses,
            dir,
            sdk,
        } => new::new(lang, &name, &uses, dir.as_deref(), sdk.as_deref()),
        Command::Sdk { op } => match op {
            SdkOp::Path => {
                println!("{}", new::sdk_root(None)?.display());
                Ok(EXIT_OK)
            }
            SdkOp::Build { lang, dir, out } => new::build(&lang, &dir, &out),
        },
        Command::Tokens { op } => tokens::run(op),
        Command::Mcp { config, agent } => crate::mcp::serve(&config, &agent).await,
        Command::Up {
            listen,
            config,
            drain_timeout,
            watch,
            node,
        } => crate::up::up(&config, &listen, drain_timeout, watch, node).await,
        Command::Kpi {
            config,
            series: Some(bucket),
            from,
            to,
            json,
            ..
        } => {
            let config = match config.one() {
                Ok(c) => c,
                Err(e) => return fail_doc(&ApiError::usage(e), json),
            };
            let req = charter_api::KpiSeriesRequest {
                bucket: Some(bucket),
                from,
                to,
            };
            match control(&config)?.kpi_series(&req) {
                Ok(s) if json => print_json(&s, true).map(|()| EXIT_OK),
                Ok(s) => {
                    govern::kpi_series_text(&s);
                    Ok(EXIT_OK)
                }
                Err(e) => fail_doc(&e, json),
            }
        }
        Command::Kpi {
            config,
            json,
            framework: true,
            ..
        } => {
            let (_, t) = framework_table(&config)?;
            if json {
                print_json(&t, true)?;
            } else {
                govern::kpi_framework_text(&t);
            }
            Ok(EXIT_OK)
        }
        Command::Report { config, out } => {
            let (title, t) = framework_table(&config)?;
            let html = govern::kpi_framework_html(&title, &t);
            std::fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(EXIT_OK)
        }
        Command::Kpi { config, json, .. } => {
            let config = match config.one() {
                Ok(c) => c,
                Err(e) => return fail_doc(&ApiError::usage(e), json),
            };
            let c = control(&config)?;
            let k = c.kpi()?;
            if json {
                print_json(&k, true)?;
            } else {
                govern::kpi_text(&c.deployment().name, &k);
            }
            Ok(EXIT_OK)
        }
        Command::Audit { op } => audit(op),
        Command::Proposals { op } => proposals(op).await,
    }
}

async fn inspect(plugin: &Path, config: &ConfigArg, json: bool) -> Result<i32> {
    let req = charter_api::InspectRequest {
        path: plugin.to_owned(),
    };
    let with_deployment = config.config.is_some() || Path::new(DEFAULT_CONFIG).exists();
    let res = if with_deployment {
        control(config)?.inspect(&req).await
    } else {
        charter_api::inspect_file(&req).await
    };
    match res {
        Ok(r) if json => print_json(&r, true).map(|()| EXIT_OK),
        Ok(r) => {
            report::inspect_text(&r);
            Ok(EXIT_OK)
        }
        Err(e) if e.kind == "load-error" => {
            if json {
                let doc = InspectFailure {
                    path: req.path,
                    error: (&e).into(),
                };
                print_json(&doc, false)?;
            } else {
                eprintln!("error: {}", e.message);
            }
            Ok(e.exit_code())
        }
        Err(e) => Err(e.into()),
    }
}

async fn kv(op: KvOp) -> Result<i32> {
    let config = match &op {
        KvOp::Get { config, .. } | KvOp::Set { config, .. } | KvOp::List { config, .. } => {
            config.clone()
        }
    };
    let c = control(&config)?;
    match op {
        KvOp::Get { plugin, key, .. } => {
            match c.kv_get(&charter_api::KvGetRequest { plugin, key }) {
                Ok(v) => println!("{}", v.value),
                Err(e) => return Ok(fail(&e)),
            }
        }
        KvOp::Set {
            plugin, key, value, ..
        } => {
            let value = read_input(&value)?;
            let by = match who(&c, None, true) {
                Ok(w) => w,
                Err(e) => return Ok(fail(&e)),
            };
            let req = charter_api::KvSetRequest {
                plugin,
                key,
                value,
                by,
            };
            if let Err(e) = c.kv_set(&req).await {
                return Ok(fail(&e));
            }
        }
        KvOp::List {
            plugin,
            prefix,
            json,
            ..
        } => {
            let keys = match c.kv_list(&charter_api::KvListRequest { plugin, prefix }) {
                Ok(k) => k,
                Err(e) => return Ok(fail(&e)),
            };
            if json {
                print_json(&keys, false)?;
            } else {
                for k in keys.keys {
                    println!("{k}");
                }
            }
        }
    }
    Ok(EXIT_OK)
}

async fn runs_cmd(op: RunsCmd) -> Result<i32> {
    match op {
        RunsCmd::List {
            status,
            config,
            json,
        } => {
            let list = control(&config)?.runs_list(&charter_api::RunsListRequest {
                status,
                ..Default::default()
            })?;
            if json {
                print_json(&list, true)?;
            } else {
                runs::list_text(&list);
            }
            Ok(EXIT_OK)
        }
        RunsCmd::Show { id, config, json } => {
            match control(&config)?.runs_show(&charter_api::RunId { id }) {
                Ok(r) => {
                    if json {
                        print_json(&r, true)?;
                    } else {
                        runs::show_text(&r);
                    }
                    Ok(EXIT_OK)
                }
                Err(e) => fail_doc(&e, json),
            }
        }
        RunsCmd::Resume {
            id,
            config,
            json,
            quiet,
        } => {
            let c = control(&config)?;
            let r = c.runs_resume(&charter_api::ResumeRequest { id }).await?;
            if json {
                print_json(&r, true)?;
            } else if !quiet {
                runs::resume_text(&r);
            }
            Ok(r.exit_code())
        }
        RunsCmd::Cancel {
            id,
            as_user,
            config,
            json,
        } => {
            let c = control(&config)?;
            let by = match who(&c, as_user, true) {
                Ok(w) => w,
                Err(e) => return fail_doc(&e, json),
            };
            let req = charter_api::CancelRequest { id, by };
            match c.runs_cancel(&req).await {
                Ok(r) => {
                    runs::report(&r, json)?;
                    Ok(EXIT_OK)
                }
                Err(e) => fail_doc(&e, json),
            }
        }
    }
}

async fn escalations(op: EscalationsCmd) -> Result<i32> {
    match op {
        EscalationsCmd::List { all, config, json } => {
            let list =
                control(&config)?.escalations_list(&charter_api::EscalationsListRequest { all })?;
            if json {
                print_json(&list, true)?;
            } else {
                runs::escalations_text(&list);
            }
            Ok(EXIT_OK)
        }
        EscalationsCmd::Resolve {
            id,
            as_user,
            action,
            output,
            comment,
            config,
            json,
        } => {
            let c = control(&config)?;
            let output = match output {
                Some(o) => Some(
                    serde_json::from_str(&o)
                        .map_err(|e| anyhow::anyhow!("--output is not valid JSON: {e}"))?,
                ),
                None => None,
            };
            let by = match who(&c, as_user, false) {
                Ok(w) => w,
                Err(e) => return fail_doc(&e, json),
            };
            let req = charter_api::ResolveRequest {
                id,
                by,
                action: action.parse()?,
                output,
                comment,
            };
            match c.escalations_resolve(&req).await {
                Ok(r) => runs::report(&r, json),
                Err(e) => fail_doc(&e, json),
            }
        }
    }
}

async fn proposals(op: ProposalCmd) -> Result<i32> {
    match op {
        ProposalCmd::List { config, all, json } => {
            let list =
                control(&config)?.proposals_list(&charter_api::ProposalsListRequest { all })?;
            if json {
                print_json(&list, true)?;
            } else {
                govern::proposals_text(&list, all);
            }
            Ok(EXIT_OK)
        }
        ProposalCmd::Show { id, config, json } => {
            match control(&config)?.proposals_show(&charter_api::ProposalId { id }) {
                Ok(p) if json => print_json(&p.proposal, true).map(|()| EXIT_OK),
                Ok(p) => {
                    govern::proposal_text(&p);
                    Ok(EXIT_OK)
                }
                Err(e) => Ok(fail(&e)),
            }
        }
        ProposalCmd::Approve(d) => decide(d, true).await,
        ProposalCmd::Reject(d) => decide(d, false).await,
    }
}

async fn decide(d: crate::DecideArgs, approve: bool) -> Result<i32> {
    let c = control(&d.config)?;
    let by = match who(&c, d.as_user, false) {
        Ok(w) => w,
        Err(e) => return fail_doc(&e, d.json),
    };
    let req = charter_api::DecideRequest {
        id: d.id,
        by,
        approve,
        comment: d.comment,
    };
    match c.proposals_decide(&req).await {
        Ok(r) if d.json => print_json(&r, true).map(|()| EXIT_OK),
        Ok(r) => {
            govern::decision_text(&req.id, &r);
            Ok(EXIT_OK)
        }
        Err(e) => fail_doc(&e, d.json),
    }
}

fn audit(op: AuditOp) -> Result<i32> {
    match op {
        AuditOp::Verify {
            config,
            checkpoint,
            since_checkpoint,
            json,
        } => {
            let c = control(&config)?;
            let since = since_checkpoint.is_some();
            let checkpoint = match checkpoint.or(since_checkpoint) {
                Some(path) => Some(read_checkpoint(&path)?),
                None => None,
            };
            let r = c.audit_verify(&charter_api::VerifyRequest {
                checkpoint,
                since_checkpoint: since,
            })?;
            if json {
                print_json(&r, true)?;
            } else {
                govern::verify_text(&r);
            }
            Ok(r.exit_code())
        }
        AuditOp::Show {
            config,
            plugin,
            since,
            kind,
            proposal,
            limit,
            from,
            to,
            json,
        } => {
            let req = charter_api::ShowRequest {
                plugin,
                since,
                kind,
                proposal,
                limit,
                from,
                to,
            };
            let events = match control(&config)?.audit_show(&req) {
                Ok(ev) => ev,
                Err(e) if e.class == charter_api::ErrorClass::Usage => return Ok(fail(&e)),
                Err(e) => return Err(e.into()),
            };
            if json {
                print_json(&events, true)?;
            } else {
                govern::show_text(&events);
            }
            Ok(EXIT_OK)
        }
        AuditOp::Export { config, out } => {
            let records = control(&config)?.audit_export()?.records;
            govern::export(&records, out.as_deref())
        }
        AuditOp::Checkpoint { config, out } => {
            let cp = control(&config)?.audit_checkpoint()?;
            govern::write_checkpoint(&cp, out.as_deref())
        }
    }
}

/// A checkpoint file, read here (the request carries its contents, never
/// the path) and named in the report as given.
fn read_checkpoint(path: &Path) -> Result<charter_api::CheckpointArg> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading checkpoint {}", path.display()))?;
    let checkpoint = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a checkpoint", path.display()))?;
    Ok(charter_api::CheckpointArg {
        label: path.to_owned(),
        checkpoint,
    })
}

/// `charter nodes` as a table.
fn nodes_text(r: &charter_api::NodesReport) {
    println!("deployment {} on {}", r.deployment, r.backend);
    if r.nodes.is_empty() {
        println!("no node has recorded itself yet (a node records itself when it opens the log)");
        return;
    }
    println!(
        "{:<20} {:<6} {:<24} {:>8} {:>10} {:>10} {:>6} {:>11}",
        "NODE", "STATE", "MACHINE", "PID", "STARTED", "SEEN", "LEASES", "STEPS"
    );
    let ago = |ms: u64| {
        let s = r.now_ms.saturating_sub(ms) / 1000;
        match s {
            s if s < 120 => format!("{s}s ago"),
            s if s < 7200 => format!("{}m ago", s / 60),
            s => format!("{}h ago", s / 3600),
        }
    };
    for n in &r.nodes {
        println!(
            "{:<20} {:<6} {:<24} {:>8} {:>10} {:>10} {:>6} {:>11}",
            n.record.node,
            if n.alive { "alive" } else { "gone" },
            n.record.hostname,
            n.record.pid,
            ago(n.record.started_ms),
            ago(n.record.seen_ms),
            n.leases,
            format!("{}/{}", n.record.steps_in_flight, n.record.steps_capacity)
        );
    }
}
