//! `charter`: the command line of the governed component host.
//!
//! Exit codes (DESIGN.md): 0 ok, 1 error, 2 refused by governance,
//! 3 resource limit, 4 waiting for people, 64 usage error (clap's errors:
//! an unknown command or option, a missing or invalid argument). Every
//! report takes `--json` and prints one document.

mod commands;
mod govern;
mod mcp;
mod new;
mod plugins;
mod remote;
mod report;
mod runs;
mod tokens;
mod up;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use charter_config::{DEFAULT_CONFIG, Deployment};
use charter_runtime::error::{EXIT_ERROR, EXIT_OK, EXIT_USAGE};
use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 error, 2 refused by governance (ungranted, denied, rejected, phase
gate, pin), 3 resource limit (deadline, memory, host-call cap, sizes), 4 waiting for
people (awaiting approval, escalated), 64 usage error (unknown command or option,
missing or invalid argument).

Start here (bash examples/demo.sh runs all of it):
  charter check --config examples/refunds/charter.toml
  charter kv set refund-triage order:A-1001 @examples/refunds/order-A-1001.json \\
      --config examples/refunds/charter.toml
  charter run refund-request --config examples/refunds/charter.toml \\
      --input '{\"order_id\":\"A-1001\",\"request\":\"arrived broken\"}'
  charter runs list --config examples/refunds/charter.toml

Logging goes to stderr: warnings, what plugins log, a run's progress and long compiles;
set CHARTER_LOG (or RUST_LOG), e.g. CHARTER_LOG=debug, for the host's full tracing.";

const CALL_HELP: &str = "\
Exit codes:
  0   the step succeeded; its output is printed
  1   error: bad input, unknown plugin, unreadable file, the step failed or trapped
  2   refused by governance: an ungranted import, a denied call, a rejected
      proposal, a phase gate, a digest pin
  3   resource limit: deadline, memory, host-call cap, sizes
  4   waiting for people: a call awaits approval (`charter proposals show ID`);
      the step did not complete, and nothing it proposed was executed
  64  usage error: unknown option, missing PLUGIN";

const RUN_HELP: &str = "\
Exit codes:
  0   the run completed; its output is printed
  1   the run failed or was cancelled, or an error (unknown workflow, bad input)
  2   refused by governance (e.g. the run's start was refused)
  4   waiting for people: a step awaits approval (`charter proposals list`) or
      the run was escalated (`charter escalations list`); it is stored durably
      and goes on when they decide
  64  usage error: unknown option, missing WORKFLOW
With --detach: 0 once the run is recorded (follow it with `charter runs show ID`).";

/// Charter runs WebAssembly components under the grants of their action
/// groups: a plugin can only do what its groups allow.
#[derive(Parser)]
#[command(name = "charter", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr are written: `plain` (for people) or `json`
    /// (one JSON object per line, with the spans it happened in, for log
    /// collectors) [default: $CHARTER_LOG_FORMAT, or plain]
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["plain", "json"])]
    log_format: Option<String>,
    /// A running `charter up` to act through (http://HOST:PORT), with
    /// CHARTER_TOKEN as the bearer token [default: $CHARTER_SERVER, or the
    /// one serving the deployment, named in its data directory]
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
}

/// `--log-format`, else `CHARTER_LOG_FORMAT`: whether log lines are JSON.
fn json_logs(flag: Option<&str>) -> bool {
    match flag {
        Some(f) => f == "json",
        None => match std::env::var("CHARTER_LOG_FORMAT") {
            Ok(v) if v == "json" => true,
            Ok(v) if v.is_empty() || v == "plain" => false,
            Ok(v) => {
                eprintln!("warning: CHARTER_LOG_FORMAT={v:?} is not plain or json; writing plain");
                false
            }
            Err(_) => false,
        },
    }
}

#[derive(Subcommand)]
enum ConfigOp {
    /// Apply the deployment file again in the running host.
    Apply {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// The deployment file [default: ./charter.toml]
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

/// `--config`, repeatable: the reports that fold several deployments'
/// logs into one table (`charter kpi --framework`, `charter report`).
#[derive(Args, Clone)]
struct ConfigsArg {
    /// The deployment file [default: ./charter.toml]; repeat it to fold
    /// several deployments into one table (with --framework)
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Vec<PathBuf>,
}

impl ConfigsArg {
    /// Each file named, or the default one.
    fn each(&self) -> Vec<ConfigArg> {
        if self.config.is_empty() {
            return vec![ConfigArg { config: None }];
        }
        self.config
            .iter()
            .map(|c| ConfigArg {
                config: Some(c.clone()),
            })
            .collect()
    }

    /// The one file a report of one deployment reads: a second
    /// `--config` is a usage error there.
    fn one(&self) -> Result<ConfigArg, String> {
        match self.config.as_slice() {
            [] | [_] => Ok(self.each().remove(0)),
            _ => Err(format!(
                "--config is given {} times: only `charter kpi --framework` and `charter report` fold several deployments",
                self.config.len()
            )),
        }
    }
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
    fn load(&self) -> Result<Deployment> {
        Ok(Deployment::load(
            &self.path(),
            charter_runtime::host_catalog(),
        )?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show a component's digest, world, imports per function and exports.
    ///
    /// With a deployment (--config, or ./charter.toml if present) each
    /// import also shows the groups that grant it. Imports are classed as
    /// `capability` (linked only if granted), `wasi-baseline` (the inert WASI
    /// baseline: no files, environment, arguments or network) or
    /// `types-only`.
    Inspect {
        /// The component file (.wasm).
        plugin: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Validate the whole deployment: the config, phase gates, digest pins
    /// and every plugin's imports against its grants.
    ///
    /// Exit 2 with one line per governance violation; exit 1 if a plugin
    /// cannot be read or is not a valid component.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The processes (nodes) driving a deployment on PostgreSQL: each
    /// node's name, machine, process id, when it started, when it was last
    /// seen (a node serving `charter up` records itself every 2 s; silent
    /// for 10 s it shows as gone) and the leases it holds (runs it drives,
    /// proposals it decides). Reads the database only: no node name is
    /// taken. A deployment whose log is a file has one process and no
    /// nodes (exit 1, saying so).
    Nodes {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The reviewer's report: per plugin its digest, groups and granted
    /// functions; per capability the plugins that can call it; writes marked.
    Grants {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Run one step of PLUGIN under its grants and print the output JSON.
    #[command(after_help = CALL_HELP)]
    Call {
        /// The plugin's name in the deployment.
        plugin: String,
        /// The step input: JSON text, or @FILE to read it from a file
        /// (@- for standard input).
        #[arg(long, short = 'i', default_value = "{}", value_name = "JSON|@FILE")]
        input: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document with output, logs and counters.
        #[arg(long)]
        json: bool,
        /// Who is starting this work (recorded; may not approve what it
        /// proposes) [default: $USER]
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
    },
    /// The audit log: verify its chain, show, export, checkpoint.
    Audit {
        #[command(subcommand)]
        op: AuditOp,
    },
    /// Serve the deployment's tools to one AI agent over MCP (stdio).
    ///
    /// The agent's token is read from CHARTER_TOKEN and must prove the
    /// agent named by --agent (an [agents.NAME] identity). It sees only the
    /// tools granted to it; each call is decided by policy (allow, deny, or
    /// a proposal a person decides) and recorded.
    Mcp {
        #[command(flatten)]
        config: ConfigArg,
        /// The agent, as declared under [agents.NAME].
        #[arg(long, value_name = "NAME")]
        agent: String,
    },
    /// Serve the deployment's control API over HTTP until SIGTERM.
    ///
    /// One process owns the deployment: runs started through the API are
    /// driven here, approvals act at once, and every request is
    /// authenticated by a bearer token (`charter tokens create`). Routes:
    /// /v1/runs, /v1/proposals, /v1/escalations, /v1/audit, /v1/kpi,
    /// /v1/plugins, /v1/grants, /v1/kv, /metrics (Prometheus), /healthz,
    /// /readyz. While it runs, the CLI's commands act through it. SIGTERM
    /// stops intake (503), lets the steps in flight finish (--drain-timeout)
    /// and exits 0; runs not finished go on at the next start.
    Up {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
        listen: String,
        /// On SIGTERM, how long the steps in flight may take to finish
        /// before the host exits anyway (a step cut short is re-run from its
        /// journal at the next start): e.g. 30s, 2m.
        #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
        drain_timeout: std::time::Duration,
        /// Watch the plugin files charter.toml names: a changed file is
        /// checked like `charter plugins push` and swapped in, or refused
        /// with the serving version going on. A changed charter.toml (or
        /// workflow file) is applied as `charter config apply` does:
        /// checked in full, then it serves; a bad one is refused
        /// (`config-refused`) and the serving one goes on. Needs
        /// CHARTER_TOKEN of an identity with the role "operator": the
        /// changes are recorded as theirs.
        #[arg(long)]
        watch: bool,
        /// This process's node name when the deployment is on PostgreSQL
        /// (`[deployment] backend`) and several `charter up` processes
        /// drive it: one process per name (a second is refused), and a
        /// restarted node takes back its own runs at once (others' after
        /// their leases expire). Default: CHARTER_NODE, else `default`.
        /// Letters, digits, '.', '_' and '-'.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The configuration of a running `charter up`.
    ///
    /// `charter config apply`: the host re-reads the deployment file it was
    /// started with (and the workflow files it names), checks it in full
    /// (as `charter check`, and every plugin against the new grants) and
    /// makes it serve; a refused one leaves the serving one in place
    /// (`config-refused`). Needs CHARTER_TOKEN of an operator.
    Config {
        #[command(subcommand)]
        op: ConfigOp,
    },
    /// Tokens that prove who is calling: mint one for an identity.
    ///
    /// A token is shown once; the deployment file keeps only its SHA-256
    /// (`tokens = ["sha256:…"]` under [identities.NAME]). Once any identity
    /// declares a token, every command that records a person (run, call,
    /// approve, reject, resolve, cancel, kv set) needs CHARTER_TOKEN.
    Tokens {
        #[command(subcommand)]
        op: TokensOp,
    },
    /// Calls held for people: list, show, approve, reject.
    Proposals {
        #[command(subcommand)]
        op: ProposalCmd,
    },
    /// The framework's KPIs from the event log: calls allowed / proposed /
    /// denied, proposal acceptance and latency, blocked attempts, and
    /// unauthorized actions executed (target zero).
    Kpi {
        #[command(flatten)]
        config: ConfigsArg,
        /// The KPIs over time instead, one line per `hour` or `day`
        /// (what the console charts; at most 1000 buckets).
        #[arg(long, value_name = "hour|day")]
        series: Option<String>,
        /// With --series: from this UTC time (2026-11-30,
        /// 2026-11-30T14:05Z or milliseconds since 1970; default 24
        /// hours or 30 days before --to).
        #[arg(long, requires = "series")]
        from: Option<String>,
        /// With --series: to this UTC time (default now).
        #[arg(long, requires = "series")]
        to: Option<String>,
        /// The framework's table instead: efficiency, customer, decision
        /// quality, adoption and risk, per pattern (`[deployment]
        /// pattern`) and overall, read from this deployment's log; with
        /// --config repeated, from each deployment's log, columns of the
        /// same pattern added up and overall over all of them.
        #[arg(long, conflicts_with = "series")]
        framework: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The framework's KPI table (as `charter kpi --framework`) as one
    /// self-contained HTML page: a table per pattern and overall, and bar
    /// charts of its ratios, inline CSS and SVG, no external reference.
    /// --config repeated folds several deployments, as for `charter kpi`.
    Report {
        #[command(flatten)]
        config: ConfigsArg,
        /// The HTML file to write.
        #[arg(long, value_name = "F.html")]
        out: PathBuf,
    },
    /// Run a workflow of the deployment: its steps in order, durably (the
    /// run survives crashes and restarts; see `charter runs resume`).
    ///
    /// Exit 0 when the run completes, 4 when it waits for people (an
    /// approval or an escalation), 1 when it failed.
    #[command(after_help = RUN_HELP)]
    Run {
        /// The workflow's name ([workflows.NAME] or workflows/NAME.toml).
        workflow: String,
        /// The run's input: JSON text, or @FILE (@- for standard input).
        #[arg(long, short = 'i', default_value = "{}", value_name = "JSON|@FILE")]
        input: String,
        /// Record the run and drive it in a background process; print its id.
        #[arg(long)]
        detach: bool,
        /// Who starts the run (recorded; may not approve what it proposes)
        /// [default: $USER]
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document (the run's state).
        #[arg(long)]
        json: bool,
    },
    /// Workflow runs: list, show, resume after a crash, cancel.
    Runs {
        #[command(subcommand)]
        op: RunsCmd,
    },
    /// Failed steps handed to people: list, resolve (retry, skip, fail).
    Escalations {
        #[command(subcommand)]
        op: EscalationsCmd,
    },
    /// Plugin versions (hot loading): push a new version into the running
    /// host, list what serves, a plugin's history, the reviewer's diff of
    /// two versions, pin one, roll back.
    ///
    /// Through the running `charter up` (CHARTER_TOKEN of an identity with
    /// the role `operator` for push, pin and rollback); without one, on
    /// the data directory directly (what is activated serves at the next
    /// start). A version is checked like any load (digest pin, component,
    /// imports against the grants in force) before it serves; a refused
    /// one leaves the serving version in place. Runs started before a
    /// push finish on the version they recorded.
    #[command(after_help = plugins::HELP)]
    Plugins {
        #[command(subcommand)]
        op: plugins::PluginsOp,
    },
    /// Read and write a plugin's key-value namespace (operator tool, e.g.
    /// to seed data a step reads).
    Kv {
        #[command(subcommand)]
        op: KvOp,
    },
    /// Scaffold a step plugin in LANG (rust, python, js, c) that builds
    /// with `bash build.sh` and passes `charter check` with its charter.toml.
    ///
    /// The scaffold holds the step's source, build.sh, a charter.toml that
    /// grants it logging and, for Python, JavaScript and C, a
    /// `host-functions` file: the host functions the plugin imports
    /// (`log.write kv.get llm.classify`: spaces, commas or newlines between
    /// names; `#` starts a comment). Those languages' runtimes import every
    /// function of their world, so the plugin's world is built from this
    /// list, and the build checks the source against it; to call another
    /// host function, add it there and grant it with a group in
    /// charter.toml. (A Rust plugin imports only what it calls.)
    ///
    /// Nothing in the scaffold names this machine's paths: build.sh finds
    /// the SDK through `charter sdk`, and a Rust scaffold's Cargo.toml
    /// refers to the SDK crate relative to itself.
    New {
        /// rust, python, js or c.
        lang: new::Lang,
        /// The plugin's name (lowercase letters, digits, '-', starting with
        /// a letter).
        #[arg(value_parser = new::parse_name)]
        name: String,
        /// Host functions the step will call besides log.write (e.g.
        /// `kv.get,llm.classify`): written to host-functions and granted in
        /// charter.toml (a `reads` group, and a `writes` group for kv.set
        /// and kv.delete).
        #[arg(long, value_name = "FUNCS")]
        uses: Vec<String>,
        /// Where to write it [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The Charter repository whose sdk/ and wit/ it builds against
        /// [default: $CHARTER_SDK, or the one this binary was built from].
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
    /// The plugin SDK this charter builds against: `charter sdk path`
    /// prints the repository holding sdk/ and wit/; `charter sdk build
    /// python|js|c DIR OUT.wasm` builds a plugin (what a scaffold's build.sh
    /// runs). The SDK is $CHARTER_SDK, or the repository this binary was
    /// built from.
    Sdk {
        #[command(subcommand)]
        op: SdkOp,
    },
}

#[derive(Subcommand)]
enum SdkOp {
    /// Print the directory holding sdk/ and wit/.
    Path,
    /// Build a Python, JavaScript or C plugin into a component (runs
    /// sdk/build.sh): checks the source against DIR/host-functions, and a
    /// failed build leaves no OUT behind. Exit 0 built, 1 failed, 64 usage.
    Build {
        /// python, js or c (a Rust plugin builds with cargo).
        #[arg(value_parser = ["python", "js", "c"])]
        lang: String,
        /// The plugin's directory (its source and host-functions).
        dir: PathBuf,
        /// Where to write the component.
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditOp {
    /// Walk the hash chain; with --checkpoint, also prove the log still
    /// holds the checkpointed entry (catches truncation and rewrites).
    /// Exit 1 if anything is wrong.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// A checkpoint exported earlier with `charter audit checkpoint`.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Verify only what follows this checkpoint's entry (which must
        /// still hold its signed hash): the cost of what was appended
        /// since, not of the whole log. A full `audit verify` also reads
        /// what precedes it.
        #[arg(long, value_name = "FILE", conflicts_with = "checkpoint")]
        since_checkpoint: Option<PathBuf>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Show events, oldest first.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Only events about this plugin.
        #[arg(long)]
        plugin: Option<String>,
        /// Only events newer than this (30s, 10m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only events of this type (call, call-result, step, proposal,
        /// approval-decision, plugin-refused, run-started, ...; another
        /// type is a usage error that lists them all).
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only events about this proposal.
        #[arg(long)]
        proposal: Option<String>,
        /// Only the last N events.
        #[arg(long)]
        limit: Option<usize>,
        /// Only events at or after this UTC time (2026-11-30,
        /// 2026-11-30T14:05Z, or milliseconds since 1970).
        #[arg(long)]
        from: Option<String>,
        /// Only events at or before this UTC time.
        #[arg(long)]
        to: Option<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Every event as JSON Lines.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sign the log's current last entry with the deployment's ed25519 key
    /// and print (or write) the checkpoint. Keep it outside the data
    /// directory.
    Checkpoint {
        #[command(flatten)]
        config: ConfigArg,
        /// Write the checkpoint to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ProposalCmd {
    /// Pending proposals (--all for every one).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Every proposal, decided and expired ones too.
        #[arg(long)]
        all: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One proposal: call, arguments, rationale, policy, approvals.
    Show {
        /// The proposal id (see `charter proposals list`).
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Approve; on the last needed approval the call executes (re-checked
    /// against the policy in force).
    Approve(DecideArgs),
    /// Reject: the call never executes.
    Reject(DecideArgs),
}

#[derive(Subcommand)]
enum TokensOp {
    /// Mint a token for NAME and print it with the line that declares its
    /// hash in charter.toml.
    Create {
        /// The identity ([identities.NAME] or [approvers.NAME]).
        name: String,
        /// How long it is valid: e.g. 12h, 30d, 1y, or `never`.
        #[arg(long, default_value = "90d", value_name = "DURATION")]
        expires_in: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document: identity, token, hash, expires.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct DecideArgs {
    /// The proposal id (see `charter proposals list`).
    id: String,
    /// The approver (a person declared under [identities] or [approvers]
    /// with the needed role). Where the deployment declares tokens, the
    /// approver is whoever CHARTER_TOKEN proves, and --as may only repeat it.
    #[arg(long = "as", value_name = "USER")]
    as_user: Option<String>,
    /// Recorded with the decision in the audit log.
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum RunsCmd {
    /// Every run, newest first.
    List {
        /// Only runs in this status (running, retry-wait, waiting-approval,
        /// escalated, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One run: status, every step attempt, output, what happens next.
    Show {
        /// The run id (see `charter runs list`).
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Drive a run on from its last recorded event (after a crash, a
    /// restart or a decision); without ID, every run that can go on.
    Resume {
        /// The run id; omit to resume every incomplete run.
        id: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
        /// Print nothing (for background drivers).
        #[arg(long, hide = true)]
        quiet: bool,
    },
    /// Cancel a run that has not ended (recorded with who cancelled it).
    Cancel {
        /// The run id (see `charter runs list`).
        id: String,
        /// Who cancels it (recorded) [default: $USER]
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EscalationsCmd {
    /// Open escalations (--all for resolved ones too).
    List {
        /// Resolved escalations too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Resolve an escalation as USER (an approver holding its role):
    /// `retry` the step, `skip` it with --output standing for its output,
    /// or `fail` the run. The run goes on at once.
    Resolve {
        /// The escalation id (see `charter escalations list`).
        id: String,
        /// Who resolves it: an approver holding the escalation's role
        /// (declared under [approvers]). Where the deployment declares
        /// tokens, whoever CHARTER_TOKEN proves.
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        /// retry, skip or fail.
        #[arg(long, value_parser = ["retry", "skip", "fail"])]
        action: String,
        /// For skip: the step's output, as JSON.
        #[arg(long, value_name = "JSON")]
        output: Option<String>,
        /// Recorded with the resolution in the audit log.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KvOp {
    /// Print the value under KEY.
    Get {
        /// The plugin whose namespace it is.
        plugin: String,
        /// The key.
        key: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Store VALUE (or @FILE) under KEY.
    Set {
        /// The plugin whose namespace it is.
        plugin: String,
        /// The key.
        key: String,
        /// The value: text, or @FILE to read it from a file (@- for
        /// standard input).
        #[arg(value_name = "VALUE|@FILE")]
        value: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List keys starting with PREFIX.
    List {
        /// The plugin whose namespace it is.
        plugin: String,
        /// Only keys starting with this (all keys if left out).
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// Logging on stderr. With `CHARTER_LOG` or `RUST_LOG` set (e.g. `debug`),
/// full tracing filtered by it: timestamps, levels, fields. Otherwise the
/// reports stay readable: warnings and errors as plain lines, unless `quiet`
/// the run's progress (`charter::run`) and what plugins log
/// (`charter::plugin`, as "PLUGIN: message"), and long work
/// (`charter::progress`: a compile the cache did not have).
///
/// With `json` (`--log-format json`), the same events (filtered the same
/// way) as JSON lines for a log collector: level, target, fields, and the
/// spans they happened in (a plugin load's `load{plugin, digest}`); long
/// compiles are events of their own (`compiling`, `compiled`) instead of
/// an announcement.
fn init_tracing(quiet: bool, cache: bool, json: bool) {
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::prelude::*;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let asked = ["CHARTER_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()));
    if let Some(spec) = asked {
        let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: log filter {spec:?}: {e}; showing warnings");
            EnvFilter::new("warn")
        });
        let fmt = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if json {
            fmt.json().with_span_list(true).init();
        } else {
            fmt.with_target(false).with_ansi(tty).compact().init();
        }
        return;
    }
    let mut plain = Targets::new().with_default(tracing::Level::WARN);
    if !quiet {
        plain = plain
            .with_target("charter::run", tracing::Level::INFO)
            .with_target(logging::PLUGIN, tracing::Level::INFO);
    }
    if json {
        // The same events, compiles announced as events, and the spans a
        // front end opens (`load_plugin{plugin, digest}`, no events of
        // their own at INFO) around them.
        let filter = plain
            .with_target(logging::PROGRESS, tracing::Level::INFO)
            .with_target("charter_api", tracing::Level::INFO);
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_span_list(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .event_format(logging::Plain)
                .with_filter(plain),
        )
        .with(
            logging::Progress::new(cache)
                .with_filter(Targets::new().with_target(logging::PROGRESS, tracing::Level::INFO)),
        )
        .init();
}

/// The default log lines: plain text for people, and long work announced
/// only when it is long.
mod logging {
    use std::collections::HashMap;
    use std::fmt;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::FmtContext;
    use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    /// The target of what plugins log (`log.write`, stdout, stderr).
    pub const PLUGIN: &str = "charter::plugin";

    /// The runtime's target for long work: `compiling` before a compile,
    /// `compiled` after it.
    pub const PROGRESS: &str = "charter::progress";

    /// A compile that takes longer than this is announced: wasmtime's
    /// cache cannot say beforehand whether it holds a component (its key
    /// hashes the engine's private compile settings), and a hit loads in
    /// well under this.
    const ANNOUNCE_AFTER: Duration = Duration::from_secs(1);

    /// One line per event, no timestamp: "warning: ...", "error: ...", or
    /// the message alone (the run's progress); a plugin's line as
    /// "PLUGIN: message" ("PLUGIN (stderr): ..." for its standard streams).
    pub struct Plain;

    impl<S, N> FormatEvent<S, N> for Plain
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut w: format::Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            match *event.metadata().level() {
                Level::ERROR => write!(w, "error: ")?,
                Level::WARN => write!(w, "warning: ")?,
                _ => {}
            }
            if event.metadata().target() == PLUGIN {
                let mut f = Fields::default();
                event.record(&mut f);
                return match f.source.as_str() {
                    "" | "log" => writeln!(w, "{}: {}", f.plugin, f.message),
                    source => writeln!(w, "{} ({source}): {}", f.plugin, f.message),
                };
            }
            ctx.field_format().format_fields(w.by_ref(), event)?;
            writeln!(w)
        }
    }

    #[derive(Default)]
    struct Fields {
        message: String,
        plugin: String,
        source: String,
        bytes: Option<u64>,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "source" => self.source = value.to_string(),
                _ => self.record_debug(field, &value),
            }
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "bytes" {
                self.bytes = Some(value);
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            match field.name() {
                "message" => self.message = format!("{value:?}"),
                "plugin" => self.plugin = format!("{value:?}"),
                _ => {}
            }
        }
    }

    struct Compile {
        started: Instant,
        announced: bool,
    }

    /// Announces a compile once it has taken [`ANNOUNCE_AFTER`] ("compiling
    /// refund-triage (18 MB), cached afterwards…") and then its time; a
    /// compile the cache answered says nothing.
    pub struct Progress {
        cache: bool,
        pending: Arc<Mutex<HashMap<String, Compile>>>,
    }

    impl Progress {
        /// `cache`: whether the engine keeps what it compiles.
        pub fn new(cache: bool) -> Progress {
            Progress {
                cache,
                pending: Arc::default(),
            }
        }
    }

    impl<S: Subscriber> Layer<S> for Progress {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut f = Fields::default();
            event.record(&mut f);
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match f.message.as_str() {
                "compiling" => {
                    let started = Instant::now();
                    pending.insert(
                        f.plugin.clone(),
                        Compile {
                            started,
                            announced: false,
                        },
                    );
                    let size = f.bytes.map(size).unwrap_or_default();
                    let then = if self.cache {
                        ", cached afterwards"
                    } else {
                        ""
                    };
                    let line = format!("compiling {}{size}{then}…", f.plugin);
                    let pending = self.pending.clone();
                    let announce = move || {
                        std::thread::sleep(ANNOUNCE_AFTER);
                        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(c) = pending.get_mut(&f.plugin)
                            && c.started == started
                        {
                            c.announced = true;
                            eprintln!("{line}");
                        }
                    };
                    let _ = std::thread::Builder::new()
                        .name("charter-progress".into())
                        .spawn(announce);
                }
                "compiled" => {
                    if let Some(c) = pending.remove(&f.plugin)
                        && c.announced
                    {
                        let secs = c.started.elapsed().as_secs_f64();
                        eprintln!("compiled {} in {secs:.1} s", f.plugin);
                    }
                }
                other => eprintln!("{other}"),
            }
        }
    }

    /// " (18 MB)", " (640 kB)".
    fn size(bytes: u64) -> String {
        match bytes {
            b if b >= 10_000_000 => format!(" ({} MB)", b / 1_000_000),
            b if b >= 1_000_000 => format!(" ({:.1} MB)", b as f64 / 1e6),
            b => format!(" ({} kB)", b.div_ceil(1000)),
        }
    }
}

/// mimalloc, not glibc's malloc: a governed step makes hundreds of small,
/// short-lived allocations (events, JSON values, index rows), and under
/// `bash host/bench/instructions.sh` glibc's malloc and free were about a
/// quarter of a workflow step's instructions. mimalloc serves them at a
/// fraction of that (issue 12's closing note has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_exit(&e) as u8),
    };
    let quiet = match &cli.command {
        Command::Inspect { json, .. }
        | Command::Check { json, .. }
        | Command::Grants { json, .. }
        | Command::Nodes { json, .. } => *json,
        Command::Call { json, .. } | Command::Kpi { json, .. } => *json,
        Command::Run { json, .. } => *json,
        Command::Kv { .. }
        | Command::Config { .. }
        | Command::Plugins { .. }
        | Command::Audit { .. }
        | Command::Proposals { .. }
        | Command::Runs { .. }
        | Command::Escalations { .. }
        | Command::Report { .. } => true,
        Command::New { .. } | Command::Sdk { .. } | Command::Tokens { .. } => true,
        Command::Up { .. } | Command::Mcp { .. } => false,
    };
    // `inspect` without a deployment compiles with no cache.
    let cache = match &cli.command {
        Command::Inspect { config, .. } => {
            config.config.is_some() || std::path::Path::new(DEFAULT_CONFIG).exists()
        }
        _ => true,
    };
    init_tracing(quiet, cache, json_logs(cli.log_format.as_deref()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(commands::run(cli.command, cli.server.as_deref())) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

/// Print clap's verdict on the command line and choose the exit code:
/// `--help` and `--version` print to stdout and succeed; anything else
/// (no command, an unknown command or option, a missing or invalid
/// argument) is a usage error, 64, never a governance refusal's 2.
fn usage_exit(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => EXIT_OK,
        _ => EXIT_USAGE,
    }
}

/// An error and its causes, each said once: a cause whose text the message
/// already carries (e.g. the OS error in "cannot read F: No such file or
/// directory") is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// `n` and the noun in the number it takes: "1 plugin", "2 plugins".
pub(crate) fn count<N>(n: N, one: &str, many: &str) -> String
where
    N: fmt::Display + PartialEq + From<u8>,
{
    if n == N::from(1) {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "operator".into())
}

/// A step or run input: JSON text, `@FILE` or `@-`. Read with a bound: no
/// input over [`charter_runtime::record::MAX_STEP_VALUE`] is accepted, so
/// `@/dev/zero` or an endless pipe fails at once instead of filling memory.
fn read_input(arg: &str) -> Result<String> {
    use std::io::Read;
    let max = charter_runtime::record::MAX_STEP_VALUE;
    let (from, reader): (String, Box<dyn Read>) = match arg.strip_prefix('@') {
        Some("-") => ("standard input".into(), Box::new(std::io::stdin())),
        Some(path) => (
            format!("input file {path}"),
            Box::new(
                std::fs::File::open(path).with_context(|| format!("reading input file {path}"))?,
            ),
        ),
        None => return Ok(arg.to_string()),
    };
    let mut bytes = Vec::new();
    reader
        .take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {from}"))?;
    if bytes.len() as u64 > max {
        anyhow::bail!("{from} is over {max} bytes, the largest input Charter records");
    }
    String::from_utf8(bytes).with_context(|| format!("{from} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command's `--help` says what it does, and every argument what
    /// it is: walks clap's whole command tree.
    #[test]
    fn every_command_and_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.clone().debug_assert();
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
            if about.trim().is_empty() {
                missing.push(format!("`{path} --help` has no description"));
            }
            for a in cmd.get_arguments() {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("`{path}`: argument {} has no help", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&cmd, "charter", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
        // The walk saw real commands, nested ones included.
        let kv_set = cmd
            .find_subcommand("kv")
            .and_then(|k| k.find_subcommand("set"))
            .expect("charter kv set");
        assert!(kv_set.get_arguments().any(|a| a.get_id() == "value"));
    }

    /// `call` and `run` document their exit codes, waiting (4) and usage
    /// (64) included; `new` says what `host-functions` is.
    #[test]
    fn help_documents_exit_codes_and_host_functions() {
        let cmd = Cli::command();
        for name in ["call", "run"] {
            let after = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_after_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            for code in ["  0 ", "  1 ", "  2 ", "  4 ", "  64 "] {
                assert!(
                    after.contains(code),
                    "charter {name} --help lacks {code:?}: {after}"
                );
            }
            assert!(after.contains("waiting for people"), "{after}");
        }
        let top = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            top.contains("4 waiting for") && top.contains("64 usage error"),
            "{top}"
        );
        let new = cmd
            .find_subcommand("new")
            .and_then(|c| c.get_long_about())
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(new.contains("host-functions"), "{new}");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1usize, "plugin", "plugins"), "1 plugin");
        assert_eq!(count(0usize, "plugin", "plugins"), "0 plugins");
        assert_eq!(count(2u64, "entry", "entries"), "2 entries");
    }

    #[test]
    fn causes_are_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(io).context("cannot read x: No such file or directory");
        assert_eq!(describe(&e), "cannot read x: No such file or directory");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io).context("reading input file f");
        assert_eq!(describe(&e), "reading input file f: gone");
    }
}
