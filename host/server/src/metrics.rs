//! `GET /metrics`: the framework's KPIs and the process, in Prometheus
//! text format (prometheus-client).
//!
//! **One source.** The counters are `charter_runtime::kpi::KpiFold` over
//! the event log's records — the fold `charter kpi` computes with
//! (`kpi::compute`) — and the histograms fold the same records (a step's
//! recorded duration, a proposal's creation to its resolution, a run's
//! start to its end). So `/metrics` and `charter kpi --json` agree by
//! construction, and a restart, a crash or another writer's events can
//! never make them drift (an in-memory counter bumped where events are
//! made could).
//!
//! **Incremental.** The fold is kept between scrapes with the seq and
//! position of the last record it took; a scrape reads the log from that
//! frame on (through the host's open log: acknowledged records only),
//! checks the frame there is still that record, and folds only what
//! follows, so a scrape costs what arrived since the last one, not the
//! log (the first scrape reads it whole). A log that does not hold that
//! record there any more is folded again from its start. The rendered KPI
//! part is kept while nothing new arrived; the process metrics are read
//! from `/proc` on every scrape.

use std::collections::HashMap;
use std::sync::Mutex;

use charter_api::{ApiError, Control};
use charter_audit::{Event, Record};
use charter_runtime::kpi::{Kpi, KpiFold};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// What the scrapes have folded so far.
#[derive(Debug, Default)]
pub struct Cache {
    last: Mutex<Option<Folded>>,
}

/// The fold of the log up to one record, and its rendering.
#[derive(Debug, Default)]
struct Folded {
    kpi: KpiFold,
    hist: Histograms,
    /// The seq and position of the last record folded.
    last: Option<(u64, u64)>,
    /// The KPI part as last rendered (dropped when a record arrives).
    text: Option<String>,
}

impl Folded {
    /// Fold what the log holds past the last record folded; `false` if
    /// the log no longer holds that record where it was read.
    fn catch_up(&mut self, control: &Control) -> Result<bool, ApiError> {
        let from = self.last.map_or(0, |(_, at)| at);
        let tail = control.audit_tail(from)?;
        let new = match self.last {
            None => &tail[..],
            Some((seq, _)) => match tail.first() {
                Some((r, _)) if r.seq == seq => &tail[1..],
                _ => return Ok(false),
            },
        };
        for (r, at) in new {
            self.kpi.add(r);
            self.hist.add(r);
            self.last = Some((r.seq, *at));
            self.text = None;
        }
        Ok(true)
    }
}

/// The whole `/metrics` document.
pub fn render(control: &Control, cache: &Cache, ready: bool) -> Result<String, ApiError> {
    let mut slot = cache.last.lock().unwrap_or_else(|p| p.into_inner());
    let folded = slot.get_or_insert_with(Folded::default);
    if !folded.catch_up(control)? {
        tracing::warn!("the event log changed under /metrics; folding it again from its start");
        *folded = Folded::default();
        folded.catch_up(control)?;
    }
    let kpi_text = match &folded.text {
        Some(t) => t.clone(),
        None => {
            let text = kpi_metrics(&folded.kpi.counts(), &folded.hist)
                .map_err(|e| ApiError::internal(&e))?;
            folded.text = Some(text.clone());
            text
        }
    };
    drop(slot);
    let mut out = kpi_text;
    out.push_str(&process_metrics(ready).map_err(|e| ApiError::internal(&e))?);
    out.push_str("# EOF\n");
    Ok(out)
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

const LATENCY_BUCKETS: [f64; 11] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0, 604800.0,
];
const STEP_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
const CYCLE_BUCKETS: [f64; 11] = [
    0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, 86400.0, 604800.0,
];

/// The histograms, folded record by record from the same records as the
/// KPIs (a histogram's state is cumulative, so it is kept and fed, and
/// registered anew at each rendering).
#[derive(Debug)]
struct Histograms {
    /// Proposal → when it was made.
    proposed: HashMap<String, u64>,
    /// Run → its workflow and when it started.
    started: HashMap<String, (String, u64)>,
    /// Seconds from a proposal to its resolution.
    decision: Histogram,
    /// Seconds of each step (every plugin execution), by plugin.
    step: Family<Labels, Histogram>,
    /// Seconds from a run's start to its end, by workflow.
    cycle: Family<Labels, Histogram>,
}

impl Default for Histograms {
    fn default() -> Histograms {
        Histograms {
            proposed: HashMap::new(),
            started: HashMap::new(),
            decision: Histogram::new(LATENCY_BUCKETS),
            step: Family::new_with_constructor(|| Histogram::new(STEP_BUCKETS)),
            cycle: Family::new_with_constructor(|| Histogram::new(CYCLE_BUCKETS)),
        }
    }
}

impl Histograms {
    fn add(&mut self, r: &Record) {
        match &r.event {
            Event::Proposal { id, .. } => {
                self.proposed.insert(id.clone(), r.time_ms);
            }
            Event::ProposalResolved { proposal, .. } => {
                if let Some(t) = self.proposed.get(proposal.as_str()) {
                    self.decision
                        .observe(r.time_ms.saturating_sub(*t) as f64 / 1e3);
                }
            }
            Event::Step {
                plugin,
                duration_us,
                ..
            } => self
                .step
                .get_or_create(&labels([("plugin", plugin)]))
                .observe(*duration_us as f64 / 1e6),
            Event::RunStarted { run, workflow, .. } => {
                self.started
                    .insert(run.clone(), (workflow.clone(), r.time_ms));
            }
            Event::RunFinished { run, .. } => {
                if let Some((wf, t)) = self.started.get(run.as_str()) {
                    self.cycle
                        .get_or_create(&labels([("workflow", wf)]))
                        .observe(r.time_ms.saturating_sub(*t) as f64 / 1e3);
                }
            }
            _ => {}
        }
    }
}

/// The KPI counters and the histograms. Long because it declares every
/// family once, in the order the document lists them.
fn kpi_metrics(k: &Kpi, d: &Histograms) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("charter");

    reg.register(
        "log_events",
        "Entries in the event log, of every type",
        counter(k.events),
    );
    let calls = Family::<Labels, Counter>::default();
    for (plugin, fns) in &k.calls {
        for (function, c) in fns {
            for (decision, n) in [
                ("allow", c.allowed),
                ("propose", c.proposed),
                ("deny", c.denied),
            ] {
                calls
                    .get_or_create(&labels([
                        ("plugin", plugin),
                        ("function", function),
                        ("decision", decision),
                    ]))
                    .inc_by(n);
            }
        }
    }
    reg.register(
        "calls",
        "Capability calls by plugin, function and the mediator's decision",
        calls,
    );
    reg.register(
        "unauthorized_actions_executed",
        "Executions with no allow decision or approval behind them (target 0)",
        counter(k.unauthorized_actions_executed),
    );
    let blocked = Family::<Labels, Counter>::default();
    let b = &k.blocked_by_kind;
    for (kind, n) in [
        ("plugin-refused-at-load", b.plugin_refused_at_load),
        ("call-denied", b.call_denied),
        ("approval-refused", b.approval_refused),
        (
            "escalation-resolution-refused",
            b.escalation_resolution_refused,
        ),
        ("authentication-refused", b.authentication_refused),
    ] {
        blocked.get_or_create(&labels([("kind", kind)])).inc_by(n);
    }
    reg.register(
        "blocked_attempts",
        "Unauthorized attempts blocked, by what blocked them",
        blocked,
    );
    let proposals = Family::<Labels, Counter>::default();
    let p = &k.proposals;
    for (outcome, n) in [
        ("created", p.created),
        ("executed", p.executed),
        ("rejected", p.rejected),
        ("expired", p.expired),
        ("failed", p.failed),
    ] {
        proposals
            .get_or_create(&labels([("outcome", outcome)]))
            .inc_by(n);
    }
    reg.register("proposals", "Proposals, by what became of them", proposals);
    reg.register(
        "proposals_pending",
        "Proposals waiting for people",
        gauge(p.pending as i64),
    );
    reg.register_with_unit(
        "proposal_decision_latency",
        "From a proposal to its resolution (executed, rejected, expired, failed)",
        Unit::Seconds,
        d.decision.clone(),
    );
    reg.register_with_unit(
        "step_duration",
        "Plugin executions (standalone calls and workflow attempts), by plugin",
        Unit::Seconds,
        d.step.clone(),
    );
    reg.register_with_unit(
        "run_cycle_time",
        "From a workflow run's start to its end, by workflow",
        Unit::Seconds,
        d.cycle.clone(),
    );
    let runs = Family::<Labels, Gauge>::default();
    let started = Family::<Labels, Counter>::default();
    let escalations = Family::<Labels, Counter>::default();
    let retries = Family::<Labels, Counter>::default();
    let attempts = Family::<Labels, Counter>::default();
    for (wf, w) in &k.workflows {
        for (status, n) in [
            ("completed", w.completed),
            ("failed", w.failed),
            ("cancelled", w.cancelled),
            ("in-progress", w.in_progress),
        ] {
            runs.get_or_create(&labels([("workflow", wf), ("status", status)]))
                .set(n as i64);
        }
        let l = labels([("workflow", wf)]);
        started.get_or_create(&l).inc_by(w.runs);
        escalations.get_or_create(&l).inc_by(w.escalations);
        retries.get_or_create(&l).inc_by(w.retries);
        attempts.get_or_create(&l).inc_by(w.step_attempts);
    }
    reg.register("runs", "Workflow runs by workflow and status", runs);
    reg.register("runs_started", "Workflow runs started", started);
    reg.register("escalations", "Failed steps handed to people", escalations);
    reg.register(
        "retries",
        "Step attempts that failed and were retried",
        retries,
    );
    reg.register("step_attempts", "Workflow step attempts that ran", attempts);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    // `encode` ends the document; the process part follows.
    Ok(out.strip_suffix("# EOF\n").unwrap_or(&out).to_string())
}

/// What `/proc` says of this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub threads: u64,
    pub start_time_seconds: f64,
}

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`: 100 on every
/// Linux architecture Charter builds for).
const USER_HZ: f64 = 100.0;

/// Read from `/proc/self` (and `/proc/stat` for the boot time). `None`
/// off Linux.
pub fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    parse_process(&stat, &boot, &limits, &status, fds)
}

/// The fields of `/proc/self/stat` after the command (which may hold
/// spaces and parentheses: everything up to the last `)`).
fn parse_process(
    stat: &str,
    boot: &str,
    limits: &str,
    status: &str,
    fds: u64,
) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    // Resident size in kB from `status` (no page size to assume).
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds: (num(14)? + num(15)?) as f64 / USER_HZ,
        threads: num(20)?,
        start_time_seconds: btime as f64 + num(22)? as f64 / USER_HZ,
        virtual_bytes: num(23)?,
        resident_bytes: rss_kb * 1024,
        open_fds: fds,
        max_fds,
    })
}

/// Process metrics with their standard names, and whether the host is
/// ready.
fn process_metrics(ready: bool) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    reg.register(
        "charter_ready",
        "1 once the log and index are open and runs resumed, 0 before and while stopping",
        gauge(ready as i64),
    );
    if let Some(p) = process_stats() {
        let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        cpu.inc_by(p.cpu_seconds);
        reg.register_with_unit(
            "process_cpu",
            "User and system CPU time",
            Unit::Seconds,
            cpu,
        );
        reg.register_with_unit(
            "process_resident_memory",
            "Resident set size",
            Unit::Bytes,
            gauge(p.resident_bytes as i64),
        );
        reg.register_with_unit(
            "process_virtual_memory",
            "Virtual memory size (the instance pool reserves address space up front)",
            Unit::Bytes,
            gauge(p.virtual_bytes as i64),
        );
        reg.register(
            "process_open_fds",
            "Open file descriptors",
            gauge(p.open_fds as i64),
        );
        if let Some(m) = p.max_fds {
            reg.register(
                "process_max_fds",
                "The limit on open file descriptors",
                gauge(m as i64),
            );
        }
        reg.register("process_threads", "OS threads", gauge(p.threads as i64));
        let start = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start.set(p.start_time_seconds);
        reg.register_with_unit(
            "process_start_time",
            "Start time since the Unix epoch",
            Unit::Seconds,
            start,
        );
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out.strip_suffix("# EOF\n").unwrap_or(&out).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_with_a_hostile_command_name_parses() {
        // A command holding ") (" and spaces: the fields start after the
        // last parenthesis.
        let stat = "4242 (evil) 1 2 (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        let status = "Name:\tx\nVmRSS:\t   10240 kB\n";
        let p = parse_process(stat, boot, limits, status, 12).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.threads, 7);
        assert_eq!(p.start_time_seconds, 1_700_000_000.0 + 123.45);
        assert_eq!(p.virtual_bytes, 104_857_600);
        assert_eq!(p.resident_bytes, 10240 * 1024);
        assert_eq!(p.max_fds, Some(1024));
        assert_eq!(p.open_fds, 12);
        assert!(parse_process("garbage", boot, limits, status, 0).is_none());
        assert!(parse_process(stat, "no btime", limits, status, 0).is_none());
        // This process reads.
        let me = process_stats().unwrap();
        assert!(me.resident_bytes > 0 && me.open_fds > 0 && me.threads > 0);
    }
}
