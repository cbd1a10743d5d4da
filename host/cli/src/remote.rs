//! The CLI through a running host: when `charter up` serves the deployment
//! (its service file in the data directory names a live process), or
//! `--server URL` / `CHARTER_SERVER` names one, the commands below are
//! requests to its HTTP API with `CHARTER_TOKEN` as the bearer token. The
//! answers are the API's documents (`charter-api`'s types), deserialized
//! and rendered by the same functions as the local path, so the output —
//! text and `--json` — and the exit codes are the same. A service file
//! whose process is gone is stale: ignored, and said on stderr. Without a
//! token, the reports the local path reads beside a running host (runs,
//! proposals and escalations lists, audit, kpi) stay local.
//!
//! Served: `run` (started in the host; without `--detach`, followed until
//! it ends or waits for people), `runs list|show|cancel`,
//! `proposals list|show|approve|reject`, `escalations list|resolve`,
//! `audit verify|show`, `kpi`, `kv get|set|list`. Everything else runs
//! locally as before.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use charter_api::{ApiError, ErrorClass, Refusal};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::commands::{fail, fail_doc, print_json};
use crate::{
    AuditOp, Command, ConfigArg, EscalationsCmd, KvOp, ProposalCmd, RunsCmd, govern, read_input,
    runs,
};

/// The largest answer read (a long `audit show`).
const MAX_ANSWER: usize = 256 << 20;

/// How long one request may take (an approval drives its run on).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// A running host's API.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `host:port`.
    authority: String,
    /// The URL's path, without a trailing `/` (usually empty).
    base: String,
    token: Option<String>,
    /// How it was found, for messages.
    url: String,
}

impl Remote {
    /// `http://host:port[/base]`. Only plain HTTP: put a TLS-terminating
    /// proxy in front of a host reached over a network.
    pub fn parse(url: &str) -> Result<Remote> {
        let url = url.trim();
        let Some(rest) = url.strip_prefix("http://") else {
            bail!(
                "--server {url:?}: only http:// URLs are supported (reach a remote host through a TLS-terminating proxy on loopback)"
            );
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            bail!("--server {url:?} is not http://HOST:PORT");
        }
        let token = std::env::var("CHARTER_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Ok(Remote {
            authority: authority.to_string(),
            base: base.to_string(),
            token,
            url: url.to_string(),
        })
    }

    /// One request; the answer's status and body.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Bytes)> {
        let body = match body {
            Some(b) => Some((Bytes::from(serde_json::to_vec(b)?), "application/json")),
            None => None,
        };
        self.send_body(method, path, body).await
    }

    /// One request with a body of any type; the answer's status and body.
    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<(u16, Bytes)> {
        let go = async {
            let stream = tokio::net::TcpStream::connect(&self.authority).await?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.base))
                .header(header::HOST, &self.authority);
            if let Some(t) = &self.token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let bytes = match body {
                Some((b, kind)) => {
                    req = req.header(header::CONTENT_TYPE, kind);
                    b
                }
                None => Bytes::new(),
            };
            let resp = sender.send_request(req.body(Full::new(bytes))?).await?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer: {e}"))?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, go).await {
            Ok(r) => r.with_context(|| format!("cannot reach charter up at {}", self.url)),
            Err(_) => bail!(
                "charter up at {} did not answer within {} s",
                self.url,
                REQUEST_TIMEOUT.as_secs()
            ),
        }
    }

    /// A request with a binary body whose answer is `T`, or the API's error.
    pub(crate) async fn call_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<Result<T, ApiError>> {
        let body = Some((Bytes::from(bytes), "application/wasm"));
        let (status, bytes) = self.send_body(Method::POST, path, body).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map(Ok).with_context(|| {
                format!(
                    "charter up at {} answered {path} with a document this charter cannot read",
                    self.url
                )
            });
        }
        Ok(Err(api_error(status, &bytes)))
    }

    /// A request whose answer is `T`, or the API's error.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Result<T, ApiError>> {
        let (status, bytes) = self.send(method, path, body).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map(Ok).with_context(|| {
                format!(
                    "charter up at {} answered {path} with a document this charter cannot read (another version?)",
                    self.url
                )
            });
        }
        Ok(Err(api_error(status, &bytes)))
    }

    /// The identity the token proves (for `--as`, which may only repeat it).
    async fn whoami(&self) -> Result<Result<WhoAmI, ApiError>> {
        self.call(Method::GET, "/v1/whoami", None).await
    }
}

#[derive(Debug, serde::Deserialize)]
struct WhoAmI {
    identity: String,
    #[serde(default)]
    deployment: Option<String>,
}

/// The API's `{ok: false, error: {message, class, kind, refusal}}`, as the
/// [`ApiError`] the local path would have had.
fn api_error(status: u16, body: &[u8]) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Doc {
        error: ErrorDoc,
    }
    #[derive(serde::Deserialize)]
    struct ErrorDoc {
        message: String,
        class: ErrorClass,
        kind: String,
        #[serde(default)]
        refusal: Option<Box<Refusal>>,
    }
    match serde_json::from_slice::<Doc>(body) {
        Ok(d) => ApiError {
            class: d.error.class,
            kind: d.error.kind,
            message: d.error.message,
            refusal: d.error.refusal,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            let text = charter_api::validate::shown(&text);
            ApiError::new(
                ErrorClass::Error,
                "internal",
                format!("charter up answered HTTP {status}: {text}"),
            )
        }
    }
}

/// Percent-encode a path segment or query value (everything but RFC 3986's
/// unreserved characters).
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host serving `config`'s deployment: `--server`, else
/// `CHARTER_SERVER`, else the live service file in its data directory.
/// `None`: run locally.
pub fn find(server: Option<&str>, config: &ConfigArg) -> Result<Option<Remote>> {
    if let Some(url) = server {
        return Remote::parse(url).map(Some);
    }
    if let Ok(url) = std::env::var("CHARTER_SERVER")
        && !url.trim().is_empty()
    {
        return Remote::parse(&url).map(Some);
    }
    // Without a deployment file there is no data directory to look in:
    // the local path says what is missing.
    let Ok(deployment) = config.load() else {
        return Ok(None);
    };
    let dir = &deployment.data_dir;
    if let Some(url) = charter_runtime::service_url(dir) {
        return Remote::parse(&url).map(Some);
    }
    let file = dir.join(charter_runtime::SERVICE_FILE);
    if file.exists() {
        eprintln!(
            "warning: {} names a charter up whose process is gone (stale, ignored); working on the data directory directly",
            file.display()
        );
    }
    Ok(None)
}

/// The deployment file of a command the host can serve.
fn served_config(command: &Command) -> Option<ConfigArg> {
    let some = |c: &ConfigArg| Some(c.clone());
    match command {
        // Several deployments' tables are folded from their logs here: a
        // host serves its own deployment's.
        Command::Kpi { config, .. } => config.one().ok(),
        Command::Run { config, .. } => some(config),
        Command::Runs { op } => match op {
            RunsCmd::List { config, .. }
            | RunsCmd::Show { config, .. }
            | RunsCmd::Cancel { config, .. } => some(config),
            RunsCmd::Resume { .. } => None,
        },
        Command::Proposals { op } => match op {
            ProposalCmd::List { config, .. } | ProposalCmd::Show { config, .. } => some(config),
            ProposalCmd::Approve(d) | ProposalCmd::Reject(d) => some(&d.config),
        },
        Command::Escalations { op } => match op {
            EscalationsCmd::List { config, .. } | EscalationsCmd::Resolve { config, .. } => {
                some(config)
            }
        },
        Command::Audit {
            op:
                AuditOp::Verify {
                    config,
                    checkpoint: None,
                    since_checkpoint: None,
                    ..
                }
                | AuditOp::Show { config, .. },
        } => some(config),
        Command::Kv { op } => match op {
            KvOp::Get { config, .. } | KvOp::Set { config, .. } | KvOp::List { config, .. } => {
                some(config)
            }
        },
        Command::Plugins { op } => some(op.config()),
        Command::Config {
            op: crate::ConfigOp::Apply { config, .. },
        } => some(config),
        _ => None,
    }
}

/// Reports the local path reads from the log file and the state index
/// beside a running host (no lock taken): without a token they stay local
/// when the host was found through the data directory, as they did before
/// the CLI could act through it (whoever can read the data directory can
/// read these anyway). With a token, or a host named by `--server` /
/// `CHARTER_SERVER`, they go through the host like everything else.
fn reads_beside_the_host(command: &Command) -> bool {
    match command {
        Command::Kpi { .. } => true,
        Command::Runs { op } => matches!(op, RunsCmd::List { .. } | RunsCmd::Show { .. }),
        Command::Proposals { op } => {
            matches!(op, ProposalCmd::List { .. } | ProposalCmd::Show { .. })
        }
        Command::Escalations { op } => matches!(op, EscalationsCmd::List { .. }),
        Command::Audit { .. } => true,
        Command::Plugins { op } => op.reads(),
        _ => false,
    }
}

/// Run `command` through the host serving its deployment, if one does;
/// else hand it back to run locally.
pub async fn try_remote(command: Command, server: Option<&str>) -> Result<Result<i32, Command>> {
    let named =
        server.is_some() || std::env::var("CHARTER_SERVER").is_ok_and(|s| !s.trim().is_empty());
    if let Command::Kpi {
        config,
        framework: true,
        json,
        ..
    } = &command
        && config.config.len() > 1
        && server.is_some()
    {
        let e = ApiError::usage(
            "--server reads one host's table; several --config fold the deployments' logs here: leave out --server",
        );
        return fail_doc(&e, *json).map(Ok);
    }
    let Some(config) = served_config(&command) else {
        return Ok(Err(command));
    };
    match find(server, &config)? {
        Some(r) if r.token.is_none() && !named && reads_beside_the_host(&command) => {
            Ok(Err(command))
        }
        Some(r) => serve(&r, command).await.map(Ok),
        None => Ok(Err(command)),
    }
}

fn show<T: Serialize>(r: Result<T, ApiError>, json: bool, text: impl FnOnce(&T)) -> Result<i32> {
    match r {
        Ok(doc) if json => print_json(&doc, true).map(|()| 0),
        Ok(doc) => {
            text(&doc);
            Ok(0)
        }
        Err(e) => fail_doc(&e, json),
    }
}

fn config_text(a: &charter_api::ConfigApplyReport) {
    if a.unchanged {
        println!("configuration {} serves already; nothing changed", a.digest);
        return;
    }
    println!(
        "configuration {} applied (was {}; generation {})",
        a.digest, a.previous, a.generation
    );
    if let Some(kinds) = a.changes.as_object() {
        for (kind, c) in kinds {
            for how in ["added", "removed", "changed"] {
                let names: Vec<&str> = c[how]
                    .as_array()
                    .map(|v| v.iter().filter_map(|n| n.as_str()).collect())
                    .unwrap_or_default();
                if !names.is_empty() {
                    println!("  {kind} {how}: {}", names.join(", "));
                }
            }
        }
    }
}

/// `--as NAME` may only repeat who the token proves.
async fn check_as(r: &Remote, as_user: Option<&str>) -> Result<Result<(), ApiError>> {
    let Some(name) = as_user else {
        return Ok(Ok(()));
    };
    Ok(r.whoami().await?.and_then(|me| {
        if me.identity == name {
            Ok(())
        } else {
            Err(ApiError::usage(format!(
                "--as {name} but CHARTER_TOKEN proves {}: leave out --as, or use {name}'s token",
                me.identity
            )))
        }
    }))
}

/// One arm per served command: request, answer, the local renderer.
async fn serve(r: &Remote, command: Command) -> Result<i32> {
    match command {
        Command::Run {
            workflow,
            input,
            detach,
            as_user,
            json,
            ..
        } => {
            let input: Value = serde_json::from_str(&read_input(&input)?)
                .map_err(|e| anyhow!("--input is not valid JSON: {e}"))?;
            if let Err(e) = check_as(r, as_user.as_deref()).await? {
                return fail_doc(&e, json);
            }
            let body = json!({"workflow": workflow, "input": input});
            let started: charter_api::Detached =
                match r.call(Method::POST, "/v1/runs", Some(&body)).await? {
                    Ok(d) => d,
                    Err(e) => return fail_doc(&e, json),
                };
            if detach {
                if json {
                    print_json(&started, false)?;
                } else {
                    println!("{}", started.run);
                    eprintln!(
                        "run {} started in charter up at {}; follow it with `charter runs show {}`",
                        started.run, r.url, started.run
                    );
                }
                return Ok(0);
            }
            follow(r, &started.run, json).await
        }
        Command::Runs { op } => runs_cmd(r, op).await,
        Command::Proposals { op } => proposals(r, op).await,
        Command::Escalations { op } => escalations(r, op).await,
        Command::Audit { op } => audit(r, op).await,
        Command::Kpi {
            series: Some(bucket),
            from,
            to,
            json,
            ..
        } => {
            let mut q = vec![format!("bucket={}", enc(&bucket))];
            for (k, v) in [("from", from), ("to", to)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let path = format!("/v1/kpi/series?{}", q.join("&"));
            match r
                .call::<charter_api::KpiSeries>(Method::GET, &path, None)
                .await?
            {
                Ok(s) if json => print_json(&s, true).map(|()| 0),
                Ok(s) => {
                    govern::kpi_series_text(&s);
                    Ok(0)
                }
                Err(e) => fail_doc(&e, json),
            }
        }
        Command::Kpi {
            framework: true,
            json,
            ..
        } => {
            let t: Result<charter_api::FrameworkKpi, _> =
                r.call(Method::GET, "/v1/kpi/framework", None).await?;
            show(t, json, govern::kpi_framework_text)
        }
        Command::Kpi { json, .. } => {
            let k: Result<charter_api::Kpi, _> = r.call(Method::GET, "/v1/kpi", None).await?;
            let name = match (&k, json) {
                (Ok(_), false) => r.whoami().await?.ok().and_then(|w| w.deployment),
                _ => None,
            };
            show(k, json, |k| {
                govern::kpi_text(name.as_deref().unwrap_or("(served)"), k)
            })
        }
        Command::Kv { op } => kv(r, op).await,
        Command::Plugins { op } => crate::plugins::served(r, op).await,
        Command::Config {
            op: crate::ConfigOp::Apply { json, .. },
        } => show(
            r.call(Method::POST, "/v1/config/apply", None).await?,
            json,
            config_text,
        ),
        _ => unreachable!("served_config lists the served commands"),
    }
}

/// A run started in the host, followed as the local `run` drives it: until
/// it ends, waits for people or is escalated.
async fn follow(r: &Remote, run: &str, json: bool) -> Result<i32> {
    let path = format!("/v1/runs/{}", enc(run));
    let mut wait = Duration::from_millis(20);
    loop {
        let mut rep: charter_api::RunReport = match r.call(Method::GET, &path, None).await? {
            Ok(rep) => rep,
            Err(e) => return fail_doc(&e, json),
        };
        let going = matches!(rep.run.status.as_str(), "running" | "retry-wait");
        if !going {
            // The local `run` reports the run without its decisions.
            rep.decisions = None;
            return runs::report(&rep, json);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
    }
}

async fn runs_cmd(r: &Remote, op: RunsCmd) -> Result<i32> {
    match op {
        RunsCmd::List { status, json, .. } => {
            let path = match &status {
                Some(s) => format!("/v1/runs?status={}", enc(s)),
                None => "/v1/runs".into(),
            };
            let list: Result<charter_api::RunsList, _> = r.call(Method::GET, &path, None).await?;
            match list {
                Ok(l) if json => print_json(&l, true).map(|()| 0),
                Ok(l) => {
                    runs::list_text(&l);
                    Ok(0)
                }
                Err(e) => Ok(fail(&e)),
            }
        }
        RunsCmd::Show { id, json, .. } => {
            let rep = r
                .call(Method::GET, &format!("/v1/runs/{}", enc(&id)), None)
                .await?;
            show(rep, json, runs::show_text)
        }
        RunsCmd::Cancel {
            id, as_user, json, ..
        } => {
            if let Err(e) = check_as(r, as_user.as_deref()).await? {
                return fail_doc(&e, json);
            }
            let path = format!("/v1/runs/{}/cancel", enc(&id));
            match r
                .call::<charter_api::RunReport>(Method::POST, &path, None)
                .await?
            {
                Ok(rep) => {
                    runs::report(&rep, json)?;
                    Ok(0)
                }
                Err(e) => fail_doc(&e, json),
            }
        }
        RunsCmd::Resume { .. } => unreachable!("not served"),
    }
}

async fn proposals(r: &Remote, op: ProposalCmd) -> Result<i32> {
    match op {
        ProposalCmd::List { all, json, .. } => {
            let path = format!("/v1/proposals?all={all}");
            match r
                .call::<charter_api::ProposalsList>(Method::GET, &path, None)
                .await?
            {
                Ok(l) if json => print_json(&l, true).map(|()| 0),
                Ok(l) => {
                    govern::proposals_text(&l, all);
                    Ok(0)
                }
                Err(e) => Ok(fail(&e)),
            }
        }
        ProposalCmd::Show { id, json, .. } => {
            let path = format!("/v1/proposals/{}?detail=true", enc(&id));
            match r
                .call::<charter_api::ProposalDetail>(Method::GET, &path, None)
                .await?
            {
                Ok(d) if json => print_json(&d.proposal, true).map(|()| 0),
                Ok(d) => {
                    govern::proposal_text(&d);
                    Ok(0)
                }
                Err(e) => Ok(fail(&e)),
            }
        }
        ProposalCmd::Approve(d) => decide(r, d, true).await,
        ProposalCmd::Reject(d) => decide(r, d, false).await,
    }
}

async fn decide(r: &Remote, d: crate::DecideArgs, approve: bool) -> Result<i32> {
    if let Err(e) = check_as(r, d.as_user.as_deref()).await? {
        return fail_doc(&e, d.json);
    }
    let verb = if approve { "approve" } else { "reject" };
    let path = format!("/v1/proposals/{}/{verb}", enc(&d.id));
    let body = json!({"comment": d.comment});
    match r
        .call::<charter_api::DecideReport>(Method::POST, &path, Some(&body))
        .await?
    {
        Ok(rep) if d.json => print_json(&rep, true).map(|()| 0),
        Ok(rep) => {
            govern::decision_text(&d.id, &rep);
            Ok(0)
        }
        Err(e) => fail_doc(&e, d.json),
    }
}

async fn escalations(r: &Remote, op: EscalationsCmd) -> Result<i32> {
    match op {
        EscalationsCmd::List { all, json, .. } => {
            let path = format!("/v1/escalations?all={all}");
            match r
                .call::<charter_api::EscalationsList>(Method::GET, &path, None)
                .await?
            {
                Ok(l) if json => print_json(&l, true).map(|()| 0),
                Ok(l) => {
                    runs::escalations_text(&l);
                    Ok(0)
                }
                Err(e) => Ok(fail(&e)),
            }
        }
        EscalationsCmd::Resolve {
            id,
            as_user,
            action,
            output,
            comment,
            json,
            ..
        } => {
            let output: Option<Value> = match output {
                Some(o) => Some(
                    serde_json::from_str(&o)
                        .map_err(|e| anyhow!("--output is not valid JSON: {e}"))?,
                ),
                None => None,
            };
            if let Err(e) = check_as(r, as_user.as_deref()).await? {
                return fail_doc(&e, json);
            }
            let path = format!("/v1/escalations/{}/resolve", enc(&id));
            let body = json!({"action": action, "output": output, "comment": comment});
            match r
                .call::<charter_api::RunReport>(Method::POST, &path, Some(&body))
                .await?
            {
                Ok(rep) => runs::report(&rep, json),
                Err(e) => fail_doc(&e, json),
            }
        }
    }
}

async fn audit(r: &Remote, op: AuditOp) -> Result<i32> {
    match op {
        AuditOp::Verify { json, .. } => {
            match r
                .call::<charter_api::VerifyReport>(Method::GET, "/v1/audit/verify", None)
                .await?
            {
                Ok(v) => {
                    if json {
                        print_json(&v, true)?;
                    } else {
                        govern::verify_text(&v);
                    }
                    Ok(v.exit_code())
                }
                Err(e) => Err(e.into()),
            }
        }
        AuditOp::Show {
            plugin,
            since,
            kind,
            proposal,
            limit,
            from,
            to,
            json,
            ..
        } => {
            let mut q = Vec::new();
            for (k, v) in [
                ("plugin", plugin),
                ("since", since),
                ("type", kind),
                ("proposal", proposal),
                ("limit", limit.map(|l| l.to_string())),
                ("from", from),
                ("to", to),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let path = if q.is_empty() {
                "/v1/audit".to_string()
            } else {
                format!("/v1/audit?{}", q.join("&"))
            };
            match r
                .call::<charter_api::AuditEvents>(Method::GET, &path, None)
                .await?
            {
                Ok(ev) if json => print_json(&ev, true).map(|()| 0),
                Ok(ev) => {
                    govern::show_text(&ev);
                    Ok(0)
                }
                Err(e) if e.class == ErrorClass::Usage => Ok(fail(&e)),
                Err(e) => Err(e.into()),
            }
        }
        _ => unreachable!("not served"),
    }
}

async fn kv(r: &Remote, op: KvOp) -> Result<i32> {
    match op {
        KvOp::Get { plugin, key, .. } => {
            let path = format!("/v1/kv/{}/{}", enc(&plugin), enc(&key));
            match r
                .call::<charter_api::KvValue>(Method::GET, &path, None)
                .await?
            {
                Ok(v) => println!("{}", v.value),
                Err(e) => return Ok(fail(&e)),
            }
        }
        KvOp::Set {
            plugin, key, value, ..
        } => {
            let value = read_input(&value)?;
            let path = format!("/v1/kv/{}/{}", enc(&plugin), enc(&key));
            let body = json!({"value": value});
            if let Err(e) = r
                .call::<charter_api::KvSetResponse>(Method::PUT, &path, Some(&body))
                .await?
            {
                return Ok(fail(&e));
            }
        }
        KvOp::List {
            plugin,
            prefix,
            json,
            ..
        } => {
            let path = format!("/v1/kv/{}?prefix={}", enc(&plugin), enc(&prefix));
            match r
                .call::<charter_api::KvKeys>(Method::GET, &path, None)
                .await?
            {
                Ok(k) if json => print_json(&k, false)?,
                Ok(k) => {
                    for key in k.keys {
                        println!("{key}");
                    }
                }
                Err(e) => return Ok(fail(&e)),
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        let r = Remote::parse("http://127.0.0.1:7878/").unwrap();
        assert_eq!(
            (r.authority.as_str(), r.base.as_str()),
            ("127.0.0.1:7878", "")
        );
        let r = Remote::parse("http://h:1/charter/").unwrap();
        assert_eq!(r.base, "/charter");
        for bad in ["https://h:1", "h:1", "http://", "http://u@h:1", "ftp://x"] {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            enc("order:A-1/../x y?&#"),
            "order%3AA-1%2F..%2Fx%20y%3F%26%23"
        );
        assert_eq!(enc("é"), "%C3%A9");
    }

    #[test]
    fn an_error_body_reads_back_as_the_api_error() {
        let body = br#"{"ok":false,"error":{"message":"m","exit_code":2,"class":"refused","kind":"rejected","refusal":{"id":"P-1","rule":"role","reason":"r"}}}"#;
        let e = api_error(403, body);
        assert_eq!(e.class, ErrorClass::Refused);
        assert_eq!(e.refusal.unwrap().rule, "role");
        // Anything else is an error that quotes a bounded, escaped copy.
        let e = api_error(502, format!("<html>\n{}", "x".repeat(10_000)).as_bytes());
        assert_eq!(e.exit_code(), 1);
        assert!(e.message.len() < 400 && !e.message.contains('\n'), "{e}");
    }
}
