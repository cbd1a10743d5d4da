//! kill -9 at many points of durable runs: every run completes after
//! restarts, and every side effect happens exactly once.
//!
//! The side effects land on a local HTTP server that records each one by
//! its `idempotency-key` header and answers a repeated key with the first
//! answer. Two kinds of kill points:
//! - the server kills the `charter` process right after recording the k-th
//!   new effect and before answering: the effect happened, its event (the
//!   step's commit) never reached the log — the window idempotency keys
//!   close;
//! - a timer kills it after a random delay: during start-up, loading,
//!   between steps, in the middle of a log write.
//!
//! After every kill, `charter runs resume` (itself sometimes killed) brings
//! every run to completion.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use charter_runtime::workflow::status;
use charter_runtime::{Host, HostOptions};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::*;

/// What the effect server saw.
#[derive(Default)]
pub(crate) struct Effects {
    /// idempotency key → (effect number, answer)
    pub(crate) done: HashMap<String, (usize, String)>,
    /// Requests that came without a key (must stay zero).
    pub(crate) unkeyed: usize,
    /// Requests answered from `done` (replays the server absorbed).
    pub(crate) repeats: usize,
}

pub(crate) struct Server {
    pub(crate) port: u16,
    pub(crate) effects: Arc<Mutex<Effects>>,
    /// Kill the process `pid` right after recording the effect with this
    /// number (1-based count of new effects); 0 = never.
    pub(crate) kill_after: Arc<AtomicUsize>,
    pub(crate) pid: Arc<AtomicU32>,
    /// While set, every request waits before it is recorded or answered
    /// (runs pile up in flight); cleared, they go on.
    pub(crate) hold: Arc<AtomicBool>,
    /// How many requests are waiting on `hold` now.
    pub(crate) held: Arc<AtomicUsize>,
}

pub(crate) async fn effect_server() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let effects = Arc::new(Mutex::new(Effects::default()));
    let kill_after = Arc::new(AtomicUsize::new(0));
    let pid = Arc::new(AtomicU32::new(0));
    let hold = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let (e, k, p, h, w) = (
        effects.clone(),
        kill_after.clone(),
        pid.clone(),
        hold.clone(),
        held.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (e, k, p, h, w) = (e.clone(), k.clone(), p.clone(), h.clone(), w.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (e, k, p, h, w) = (e.clone(), k.clone(), p.clone(), h.clone(), w.clone());
                    async move {
                        if h.load(Ordering::SeqCst) {
                            w.fetch_add(1, Ordering::SeqCst);
                            while h.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            w.fetch_sub(1, Ordering::SeqCst);
                        }
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let _ = req.into_body().collect().await;
                        let (answer, kill) = {
                            let mut fx = e.lock().unwrap();
                            match key {
                                None => {
                                    fx.unkeyed += 1;
                                    ("no key".to_string(), false)
                                }
                                Some(key) => {
                                    if let Some((_, a)) = fx.done.get(&key) {
                                        let a = a.clone();
                                        fx.repeats += 1;
                                        (a, false)
                                    } else {
                                        let n = fx.done.len() + 1;
                                        let a = format!("effect-{n}");
                                        fx.done.insert(key, (n, a.clone()));
                                        let at = k.load(Ordering::SeqCst);
                                        (a, at != 0 && n >= at)
                                    }
                                }
                            }
                        };
                        if kill {
                            // The effect is recorded; the host dies before
                            // it hears the answer.
                            k.store(0, Ordering::SeqCst);
                            let pid = p.load(Ordering::SeqCst);
                            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server {
        port,
        effects,
        kill_after,
        pid,
        hold,
        held,
    }
}

/// A deployment file whose workflow makes 6 effects (3 steps × 2 POSTs).
pub(crate) fn write_deployment(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let url = |s: &str| format!("\"http://127.0.0.1:{port}/effect/{s}\"");
    let text = format!(
        r#"
[deployment]
name = "crash"
phase = 4
data_dir = "data"

[approvers.olga]
roles = ["operator"]

[groups.http]
capabilities = ["wasi:http/outgoing-handler.handle"]
allow_hosts = ["127.0.0.1:{port}"]
[groups.kv]
capabilities = ["charter:host/kv.*"]
effect = "write"

[plugins.work]
path = "{work}"
groups = ["http", "kv"]

[workflows.effects]
[[workflows.effects.steps]]
id = "one"
plugin = "work"
input = {{ mode = "post", body = "$/input/order", urls = [{a}, {b}] }}
retry = {{ max_attempts = 3, initial_backoff_ms = 20 }}
[[workflows.effects.steps]]
id = "two"
plugin = "work"
input = {{ mode = "post", body = "$/input/order", urls = [{c}, {d}] }}
retry = {{ max_attempts = 3, initial_backoff_ms = 20 }}
[[workflows.effects.steps]]
id = "three"
plugin = "work"
input = {{ mode = "post", body = "$/input/order", urls = [{e}, {f}] }}
retry = {{ max_attempts = 3, initial_backoff_ms = 20 }}
"#,
        work = fixture("fx-workflow").display(),
        a = url("1a"),
        b = url("1b"),
        c = url("2a"),
        d = url("2b"),
        e = url("3a"),
        f = url("3b"),
    );
    let path = dir.join("charter.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn spawn(config: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(charter_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CHARTER_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn charter")
}

/// A small deterministic generator (no dependency; reproducible figures).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_9_at_many_points_loses_no_run_and_repeats_no_effect() {
    let rt = rt();
    let server = rt.block_on(effect_server());
    let dir = tempfile::tempdir().unwrap();
    let config = write_deployment(dir.path(), server.port);
    // Warm the compile cache so kills land in the run, not in Cranelift.
    let warm = charter(&["check", "--config", config.to_str().unwrap()], dir.path());
    assert!(warm.status.success(), "{}", text(&warm));

    // One uninterrupted run: how long a whole run takes (kill delays are
    // drawn inside it), and a control that the workflow works at all.
    let t0 = std::time::Instant::now();
    let control = spawn(
        &config,
        &["run", "effects", "--input", "{\"order\": \"control\"}"],
    )
    .wait()
    .unwrap();
    assert_eq!(control.code(), Some(0));
    let run_ms = (t0.elapsed().as_millis() as u64).max(2);
    let mut rng = Lcg(0x5eed_c4a7);
    let (mut kills, mut effect_kills, mut timer_kills, mut resume_kills) = (0, 0, 0, 0);
    // At least 60 rounds; more (up to 150) while fewer than 60 kills have
    // landed (a timer kill misses when the run was quicker than the delay).
    let mut round = 0;
    while round < 60 || (kills < 60 && round < 150) {
        round += 1;
        let order = format!("\"order-{round}\"");
        let mut child = spawn(
            &config,
            &[
                "run",
                "effects",
                "--input",
                &format!("{{\"order\": {order}}}"),
            ],
        );
        server.pid.store(child.id(), Ordering::SeqCst);
        if round % 2 == 0 {
            // Between an effect and its event: the server kills on the
            // k-th new effect of this round.
            let before = server.effects.lock().unwrap().done.len();
            let k = 1 + rng.next(6) as usize;
            server.kill_after.store(before + k, Ordering::SeqCst);
            let st = child.wait().unwrap();
            if st.code().is_none() {
                kills += 1;
                effect_kills += 1;
            }
            server.kill_after.store(0, Ordering::SeqCst);
        } else {
            // Anywhere: after a random delay.
            std::thread::sleep(Duration::from_millis(rng.next(run_ms)));
            let _ = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status();
            let st = child.wait().unwrap();
            if st.code().is_none() {
                kills += 1;
                timer_kills += 1;
            }
        }
        // Restart; every third round the first resume is killed too.
        if round % 3 == 0 {
            let mut r = spawn(&config, &["runs", "resume"]);
            std::thread::sleep(Duration::from_millis(rng.next(run_ms)));
            let _ = Command::new("kill")
                .args(["-9", &r.id().to_string()])
                .status();
            if r.wait().unwrap().code().is_none() {
                kills += 1;
                resume_kills += 1;
            }
        }
        let out = Command::new(charter_bin())
            .args(["runs", "resume", "--config"])
            .arg(&config)
            .env_remove("CHARTER_LOG")
            .output()
            .expect("resume");
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: resume did not complete every run: {}",
            text(&out)
        );
    }

    // Every run that exists completed; every effect happened exactly once.
    let d = charter_config::Deployment::load(&config, charter_runtime::host_catalog()).unwrap();
    let host = Host::new(d, HostOptions::default()).unwrap();
    let runs = host.runs();
    let fx = server.effects.lock().unwrap();
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for key in fx.done.keys() {
        let run = key.split(':').nth(1).unwrap().to_string();
        *per_run.entry(run).or_default() += 1;
    }
    for r in &runs {
        assert_eq!(r.status, status::COMPLETED, "{r:?}");
        assert_eq!(
            per_run.get(&r.id).copied().unwrap_or(0),
            6,
            "run {} made {:?} distinct effects, not 6",
            r.id,
            per_run.get(&r.id)
        );
    }
    for run in per_run.keys() {
        assert!(
            runs.iter().any(|r| &r.id == run),
            "effects of unknown run {run}"
        );
    }
    assert_eq!(
        fx.unkeyed, 0,
        "a request went out without an idempotency key"
    );
    let records = charter_audit::read_records(host.log().path()).unwrap();
    let k = charter_runtime::kpi::compute(&records);
    assert_eq!(k.unauthorized_actions_executed, 0);
    assert!(charter_audit::verify(host.log().path()).unwrap().ok());
    eprintln!(
        "kill -9 (a whole run takes {run_ms} ms): {kills} kill points ({effect_kills} between an effect and its event, {timer_kills} at random times, {resume_kills} during resume); {} runs completed, {} effects each exactly once, {} repeated requests absorbed by idempotency keys",
        runs.len(),
        fx.done.len(),
        fx.repeats
    );
    assert!(kills >= 50, "only {kills} kill points");
    assert!(
        effect_kills >= 20,
        "only {effect_kills} kills between effect and event"
    );
}

/// The log's own write and `fdatasync` boundaries: a `charter run` is
/// aborted at its n-th I/O boundary (`CHARTER_TEST_CRASH_AT`, a test hook
/// of the log), for every n until a run gets through, once cleanly and
/// once with the write torn in half (`:partial`) or followed by zeros
/// (`:zeros`, a power cut after the file grew). After every crash the chain
/// verifies, the log reopens, and resuming completes every run with every
/// effect exactly once.
#[test]
fn a_crash_at_every_log_write_and_sync_keeps_the_chain_verifiable() {
    let rt = rt();
    let server = rt.block_on(effect_server());
    let dir = tempfile::tempdir().unwrap();
    let config = write_deployment(dir.path(), server.port);
    let warm = charter(&["check", "--config", config.to_str().unwrap()], dir.path());
    assert!(warm.status.success(), "{}", text(&warm));
    let log = dir.path().join("data").join(charter_audit::LOG_FILE);
    let (mut crashes, mut boundary, mut finished) = (0, 0, 0);
    while finished < 3 && boundary < 400 {
        boundary += 1;
        for mode in [
            "",
            if boundary % 2 == 0 {
                ":partial"
            } else {
                ":zeros"
            },
        ] {
            let st = Command::new(charter_bin())
                .args(["run", "effects", "--input"])
                .arg(format!("{{\"order\": \"io-{boundary}{mode}\"}}"))
                .arg("--config")
                .arg(&config)
                .env_remove("CHARTER_LOG")
                .env("CHARTER_TEST_CRASH_AT", format!("{boundary}{mode}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            match st.code() {
                None => crashes += 1,
                // Past the last boundary of a whole run: it completed.
                Some(0) => finished += 1,
                Some(c) => panic!("boundary {boundary}{mode}: charter run exited {c}"),
            }
            let v = charter(
                &["audit", "verify", "--config", config.to_str().unwrap()],
                dir.path(),
            );
            assert!(
                v.status.success(),
                "boundary {boundary}{mode}: audit verify after the crash: {}",
                text(&v)
            );
            let r = spawn(&config, &["runs", "resume"]).wait().unwrap();
            assert_eq!(r.code(), Some(0), "boundary {boundary}{mode}: resume");
        }
    }
    assert!(finished >= 3, "no run got past every boundary");
    let d = charter_config::Deployment::load(&config, charter_runtime::host_catalog()).unwrap();
    let host = Host::new(d, HostOptions::default()).unwrap();
    let runs = host.runs();
    let fx = server.effects.lock().unwrap();
    for r in &runs {
        assert_eq!(r.status, status::COMPLETED, "{r:?}");
        let n = fx
            .done
            .keys()
            .filter(|k| k.split(':').nth(1) == Some(r.id.as_str()))
            .count();
        assert_eq!(n, 6, "run {} made {n} distinct effects, not 6", r.id);
    }
    assert_eq!(fx.unkeyed, 0);
    let records = charter_audit::read_records(&log).unwrap();
    assert_eq!(
        charter_runtime::kpi::compute(&records).unauthorized_actions_executed,
        0
    );
    assert!(charter_audit::verify(&log).unwrap().ok());
    eprintln!(
        "log I/O crash points: {boundary} boundaries × 2 ways, {crashes} crashes, {} runs completed, {} effects each exactly once",
        runs.len(),
        fx.done.len()
    );
    assert!(crashes >= 40, "only {crashes} crashes");
}
