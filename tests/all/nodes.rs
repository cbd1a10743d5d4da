//! Issue 17 with real processes: three `charter up` nodes drive one
//! deployment on one PostgreSQL database. Over a thousand runs of the
//! kill -9 workflow (`crash.rs`: 3 steps × 2 keyed POSTs to a local
//! receiver) are started through the API of every node; one node is
//! killed -9 in the middle of the load and restarted later; another is
//! paused (`SIGSTOP`) past its lease while the others take its runs, then
//! resumed, and its late writes are refused. Every run completes, every
//! effect happens exactly once, the chain verifies and the KPIs show no
//! unauthorized action.
//!
//! Needs PostgreSQL's server binaries: skipped loudly without them,
//! unless `CHARTER_REQUIRE_PG` is set (`tests/run.sh` sets it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::crash::{Server, effect_server, write_deployment};
use crate::pg::{cluster, json, run_cmd, url};
use crate::support::*;
use crate::up::http;

/// The lease a node's runs wait out when it dies (`[deployment]
/// run_lease`, its minimum): short, so the test is.
const LEASE: &str = "3s";

/// One `charter up --node NAME` process, its output in files in its
/// directory (a pipe nobody reads would stall a busy node).
struct Node {
    name: String,
    dir: PathBuf,
    child: Child,
    addr: String,
}

impl Node {
    fn start(dir: &Path, name: &str) -> Node {
        let open = |f: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(f))
                .unwrap()
        };
        let out = dir.join("stdout");
        let _ = std::fs::remove_file(&out);
        let child = Command::new(charter_bin())
            .args(["up", "--node", name, "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env_remove("CHARTER_LOG")
            .stdout(Stdio::from(open("stdout")))
            .stderr(Stdio::from(open("stderr")))
            .spawn()
            .unwrap();
        let start = Instant::now();
        let addr = loop {
            let first = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some((_, a)) = first.lines().next().and_then(|l| l.rsplit_once("http://")) {
                break a.trim().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node {name} did not start: {}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Node {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            child,
            addr,
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} node {}", self.name);
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// SIGTERM, and the clean exit it must bring.
    fn stop(mut self) {
        self.signal("-TERM");
        let st = self.child.wait().unwrap();
        assert!(st.success(), "node {}: {st}\n{}", self.name, self.stderr());
    }
}

/// The receiver's count of effects per run id (effect keys name their
/// run second: `...:RUN:...`).
fn effects_per_run(server: &Server) -> BTreeMap<String, usize> {
    let fx = server.effects.lock().unwrap();
    let mut per_run = BTreeMap::new();
    for key in fx.done.keys() {
        *per_run
            .entry(key.split(':').nth(1).unwrap().to_string())
            .or_default() += 1;
    }
    per_run
}

/// Start `n` runs through the API, spread over `nodes` in turn by four
/// client threads; each run's id and the node that started it.
fn start_runs(nodes: &[&Node], token: &str, n: usize, tag: &str) -> Vec<(String, String)> {
    let threads = 4;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            let node = nodes[i % nodes.len()];
                            let body = json!({"workflow": "effects", "input": {"order": format!("{tag}-{i}")}});
                            let r = http(&node.addr, "POST", "/v1/runs", Some(token), Some(&body));
                            assert_eq!(r.status, 202, "node {}: {}", node.name, r.body);
                            (r.json()["run"].as_str().unwrap().to_string(), node.name.clone())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Wait (up to `within`) until `done` holds of the receiver's counts.
fn wait_effects(
    server: &Server,
    within: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if done(&effects_per_run(server)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?} ({} effects)",
            server.effects.lock().unwrap().done.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long after `since` the first, then every run of `left` (run →
/// its effects when its node went away) made a new effect: moved on.
fn moving_on(
    server: &Server,
    since: Instant,
    left: &BTreeMap<String, usize>,
    what: &str,
) -> (Duration, Duration) {
    let went_on =
        |m: &BTreeMap<String, usize>, id: &String, n: &usize| m.get(id).copied().unwrap_or(0) > *n;
    let within = Duration::from_secs(60);
    wait_effects(
        server,
        within,
        &format!("{what}: the first moves on"),
        |m| left.iter().any(|(id, n)| went_on(m, id, n)),
    );
    let first = since.elapsed();
    wait_effects(
        server,
        within,
        &format!("{what}: every one moves on"),
        |m| left.iter().all(|(id, n)| went_on(m, id, n)),
    );
    (first, since.elapsed())
}

/// Every effect exactly once: six distinct keys for each of `runs`, none
/// unkeyed, none of another run; and the chain verifies. The effects and
/// the repeats the receiver absorbed.
fn each_effect_once_and_verified(
    server: &Server,
    runs: &[&String],
    config: &Path,
) -> (usize, usize) {
    let per_run = effects_per_run(server);
    assert_eq!(per_run.len(), runs.len());
    assert!(runs.iter().all(|id| per_run.get(*id) == Some(&6)));
    let verify = run_cmd(config, &["audit", "verify", "--json"]);
    assert_eq!(json(&verify)["ok"], true, "{}", text(&verify));
    let fx = server.effects.lock().unwrap();
    assert_eq!(fx.unkeyed, 0);
    (fx.done.len(), fx.repeats)
}

/// The runs of `of` (ids) still short of their six effects.
fn unfinished(per_run: &BTreeMap<String, usize>, of: &[&String]) -> BTreeMap<String, usize> {
    of.iter()
        .map(|id| ((*id).clone(), per_run.get(*id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n < 6)
        .collect()
}

/// A directory per node under `root`, each with the same deployment
/// file: `crash.rs`'s workflow (effects to `port`) on `backend` (a TOML
/// value; `extra` appended), a short lease, a step deadline longer than
/// any hold of the receiver, and olga's token `hash`. Each node has its
/// own data directory.
fn node_dirs(
    root: &Path,
    names: &[&str],
    backend: &str,
    extra: &str,
    port: u16,
    hash: &str,
) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let dir = root.join(n);
            std::fs::create_dir(&dir).unwrap();
            let path = write_deployment(&dir, port);
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replacen(
                    "data_dir = \"data\"\n",
                    &format!("data_dir = \"data\"\nbackend = {backend}\nrun_lease = \"{LEASE}\"\n"),
                    1,
                )
                .replacen(
                    "groups = [\"http\", \"kv\"]\n",
                    "groups = [\"http\", \"kv\"]\nlimits = { deadline_ms = 120000 }\n",
                    1,
                )
                .replacen(
                    "[approvers.olga]\n",
                    &format!("[approvers.olga]\ntokens = [\"{hash}\"]\n"),
                    1,
                );
            std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
            dir
        })
        .collect()
}

/// The runs whose lease node `node` holds now (read from the database),
/// and how long after `at` (ms since the epoch) the first and the last of
/// those leases expire.
fn leased_by(
    store: &dyn charter_store::Store,
    node: &str,
    at: u64,
) -> (Vec<String>, Duration, Duration) {
    let holder = format!("node {node} ");
    let mut runs = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0);
    for (run, lease) in store.scan("@leases").unwrap() {
        let v: serde_json::Value = serde_json::from_str(&lease).unwrap();
        if v["holder"].as_str().is_some_and(|h| h.starts_with(&holder)) {
            let expires = v["expires_ms"].as_u64().unwrap();
            first = first.min(expires);
            last = last.max(expires);
            runs.push(run);
        }
    }
    let after = |t: u64| Duration::from_millis(t.saturating_sub(at));
    (runs, after(first), after(last))
}

#[test]
fn three_nodes_lose_one_to_kill_9_and_one_to_a_pause_and_every_run_completes_once() {
    let Some(pg) = cluster() else { return };
    pg.create_db("nodes").unwrap();
    let rt = rt();
    let server = rt.block_on(effect_server());
    let db = url(pg.socket_dir(), "nodes");
    let root = tempfile::tempdir().unwrap();
    let (token, hash) = crate::up::mint("olga", root.path());
    let dirs = node_dirs(
        root.path(),
        &["a", "b", "c"],
        &format!("{db:?}"),
        "",
        server.port,
        &hash,
    );
    let store = charter_pg::PgStore::open(&pg.url("nodes"), "crash").unwrap();
    let began = Instant::now();
    let a = Node::start(&dirs[0], "a");
    let b = Node::start(&dirs[1], "b");
    let c = Node::start(&dirs[2], "c");

    // Act 1: 1,002 runs started through all three, every one of them in
    // flight at once (the receiver holds every effect until the last run
    // is started); node a is killed -9 once a third of their effects
    // happened.
    let n1 = 1_002;
    server.hold.store(true, Ordering::SeqCst);
    let runs1 = start_runs(&[&a, &b, &c], &token, n1, "load");
    let posted = began.elapsed();
    // `charter nodes` shows each node's load: the steps it holds.
    let config = dirs[2].join("charter.toml");
    let looked = Instant::now();
    let load = loop {
        let v = json(&run_cmd(&config, &["nodes", "--json"]));
        let load: Vec<u64> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["steps_in_flight"].as_u64().unwrap_or(0))
            .collect();
        if load.len() == 3 && load.iter().all(|&n| n > 0) {
            break load;
        }
        assert!(looked.elapsed() < Duration::from_secs(20), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    server.hold.store(false, Ordering::SeqCst);
    wait_effects(&server, Duration::from_secs(120), "a third of act 1", |m| {
        m.values().sum::<usize>() >= n1 * 6 / 3
    });
    let mut a = a;
    a.signal("-KILL");
    let killed = Instant::now();
    let killed_ms = charter_audit::now_ms();
    a.child.wait().unwrap();
    // What the dead node left: its runs short of their effects, once the
    // requests it had sent have landed.
    std::thread::sleep(Duration::from_millis(200));
    // (A run started through a's API may be driven by another node, whose
    // scan found it before a claimed it: what a leaves is what it held.)
    let (of_a, a_first, a_last) = leased_by(&store, "a", killed_ms);
    let stranded = unfinished(&effects_per_run(&server), &of_a.iter().collect::<Vec<_>>());
    assert!(
        stranded.len() >= 100,
        "node a left only {} runs unfinished: the kill came too late to test anything",
        stranded.len()
    );
    let (moved_on, all_moved) = moving_on(&server, killed, &stranded, "a dead node's runs");
    // Restarted later, under its own name: it clears its own leases and
    // takes part again.
    let a = Node::start(&dirs[0], "a");
    let stranded_ids: Vec<&String> = stranded.keys().collect();
    let all_done = killed.elapsed()
        + wait_effects(
            &server,
            Duration::from_secs(120),
            "a dead node's runs complete",
            |m| unfinished(m, &stranded_ids).is_empty(),
        );
    wait_effects(&server, Duration::from_secs(180), "act 1 completes", |m| {
        runs1.iter().all(|(id, _)| m.get(id) == Some(&6))
    });

    // Act 2: 150 runs through node b only. Once each has sent its first
    // effect (held by the receiver), b is paused (SIGSTOP) and the effects
    // land: b cannot record them. a and c take its runs once its leases
    // expire (the effects repeat, absorbed by their keys); b is resumed
    // after twice its lease, and its late writes are refused.
    let n2 = 150;
    server.hold.store(true, Ordering::SeqCst);
    let runs2 = start_runs(&[&b], &token, n2, "pause");
    let waiting = Instant::now();
    while server.held.load(Ordering::SeqCst) < n2 {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "b sent {} of its {n2} first effects",
            server.held.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    b.signal("-STOP");
    let paused = Instant::now();
    let paused_ms = charter_audit::now_ms();
    std::thread::sleep(Duration::from_millis(100));
    server.hold.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    let (of_b, b_first, b_last) = leased_by(&store, "b", paused_ms);
    let held = unfinished(&effects_per_run(&server), &of_b.iter().collect::<Vec<_>>());
    assert!(
        held.len() >= n2 - 10,
        "only {} of b's runs held",
        held.len()
    );
    let (taken, all_taken) = moving_on(&server, paused, &held, "a paused node's runs");
    let pause = Duration::from_millis(6_000);
    std::thread::sleep(pause.saturating_sub(paused.elapsed()));
    b.signal("-CONT");
    // Resumed, b finishes the steps it was in: their commits are refused,
    // and it says so.
    let resumed = Instant::now();
    let refusals = |b: &Node| {
        b.stderr()
            .matches("a late commit of a run whose lease was taken over was refused")
            .count()
    };
    while refusals(&b) == 0 {
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "node b wrote nothing about refused late writes:\n{}",
            b.stderr()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_effects(&server, Duration::from_secs(120), "act 2 completes", |m| {
        runs2.iter().all(|(id, _)| m.get(id) == Some(&6))
    });

    // Every run completed, read from the database; one `run-finished` per
    // run whoever drove it (a late commit would be a second).
    let all: Vec<&String> = runs1.iter().chain(&runs2).map(|(id, _)| id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let list = run_cmd(&config, &["runs", "list", "--json"]);
        let runs = json(&list)["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() == all.len() && runs.iter().all(|r| r["status"] == "completed") {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "runs not completed: {:?}",
            runs.iter()
                .filter(|r| r["status"] != "completed")
                .take(5)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(runs.len(), n1 + n2);
    let refused = refusals(&b);
    let lost = |n: &Node| {
        n.stderr()
            .matches("lease was taken by another driver")
            .count()
    };
    let lost_leases = [lost(&a), lost(&b), lost(&c)];
    for node in [a, b, c] {
        node.stop();
    }
    let records = charter_pg::read_records(&pg.url("nodes"), "crash").unwrap();
    let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        if r.event.kind() == "run-finished" {
            *finished.entry(r.event.run().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(finished.len(), all.len());
    assert!(finished.values().all(|&n| n == 1), "a run finished twice");
    // Every effect exactly once: six distinct keys per run, none unkeyed,
    // none of a run the API did not start.
    let (effects, repeats) = each_effect_once_and_verified(&server, &all, &config);
    let kpi = json(&run_cmd(&config, &["kpi", "--json"]));
    assert_eq!(kpi["unauthorized_actions_executed"], 0, "{kpi}");
    eprintln!(
        "3 nodes, {} runs ({n1} in flight at once {posted:?} after the start; steps per node then, by `charter nodes`: {load:?}), {effects} effects each once ({repeats} repeats absorbed by idempotency keys), {} events, {:?} in all. \
         kill -9 of node a: {} of its runs stranded; its leases ran out {a_first:?} to {a_last:?} after the kill; the first moved on {moved_on:?} after it, all {all_moved:?} after, all completed {all_done:?} after (run_lease {LEASE}; node a restarted once all had moved on). \
         SIGSTOP of node b: {} of its runs held, its leases out {b_first:?} to {b_last:?} after the pause; the first moved on {taken:?} after the pause, all {all_taken:?} after; resumed after {pause:?}, {refused} late commits refused. Leases lost by a, b, c: {lost_leases:?}",
        all.len(),
        records.len(),
        began.elapsed(),
        stranded.len(),
        held.len(),
    );
}

/// Issue 17, database failover: the nodes' database is a primary with a
/// synchronous streaming standby, and the deployment's backend names both
/// (`host=PRIMARY,STANDBY target_session_attrs=read-write`). With 300
/// runs in flight on two nodes, the primary is killed as a machine dies
/// and the standby promoted. Every append acknowledged before the kill is
/// on the promoted server, the nodes reconnect to it by themselves, and
/// every run completes with every effect once; the chain verifies.
#[test]
fn the_database_fails_over_to_its_standby_and_every_run_completes() {
    let Some(primary) = cluster() else { return };
    primary.create_db("failover").unwrap();
    let standby = primary.standby().unwrap();
    let conn = format!(
        "host={},{} user=postgres dbname=failover target_session_attrs=read-write",
        primary.socket_dir().display(),
        standby.socket_dir().display()
    );
    let rt = rt();
    let server = rt.block_on(effect_server());
    let root = tempfile::tempdir().unwrap();
    let (token, hash) = crate::up::mint("olga", root.path());
    let dirs = node_dirs(
        root.path(),
        &["a", "b"],
        "{ secret = \"pg\" }",
        "[secrets.pg]\nfile = \"pg-url\"\n",
        server.port,
        &hash,
    );
    for dir in &dirs {
        std::fs::write(dir.join("pg-url"), &conn).unwrap();
    }
    let a = Node::start(&dirs[0], "a");
    let b = Node::start(&dirs[1], "b");

    let n = 300;
    server.hold.store(true, Ordering::SeqCst);
    let runs = start_runs(&[&a, &b], &token, n, "failover");
    server.hold.store(false, Ordering::SeqCst);
    wait_effects(
        &server,
        Duration::from_secs(120),
        "a third of the effects",
        |m| m.values().sum::<usize>() >= n * 6 / 3,
    );
    // What the primary acknowledged, read from it; then it dies.
    let acknowledged = charter_pg::read_records(&conn, "crash").unwrap();
    primary.kill().unwrap();
    let killed = Instant::now();
    let effects_at_kill = server.effects.lock().unwrap().done.len();
    std::thread::sleep(Duration::from_millis(500));
    standby.promote().unwrap();
    let promoted = killed.elapsed();
    let resumed = killed.elapsed()
        + wait_effects(
            &server,
            Duration::from_secs(120),
            "effects after the promotion",
            |m| m.values().sum::<usize>() > effects_at_kill + 2,
        );
    let done = killed.elapsed()
        + wait_effects(
            &server,
            Duration::from_secs(180),
            "every run's effects",
            |m| runs.iter().all(|(id, _)| m.get(id) == Some(&6)),
        );
    let config = dirs[0].join("charter.toml");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = run_cmd(&config, &["runs", "list", "--json"]);
        let listed = json(&list)["runs"].as_array().cloned().unwrap_or_default();
        if listed.len() == n && listed.iter().all(|r| r["status"] == "completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs not completed after the failover: {} listed, {:?}",
            listed.len(),
            listed
                .iter()
                .filter(|r| r["status"] != "completed")
                .take(5)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.stop();
    b.stop();
    // Nothing acknowledged was lost: the promoted server's chain starts
    // with every record the primary had committed, byte for byte.
    let after = charter_pg::read_records(&conn, "crash").unwrap();
    assert!(after.len() > acknowledged.len());
    for (x, y) in acknowledged.iter().zip(&after) {
        assert_eq!(format!("{x:?}"), format!("{y:?}"), "a record changed");
    }
    let ids: Vec<&String> = runs.iter().map(|(id, _)| id).collect();
    let (effects, repeats) = each_effect_once_and_verified(&server, &ids, &config);
    eprintln!(
        "failover: {n} runs on 2 nodes; the primary killed with {} records acknowledged and {effects_at_kill} effects made; \
         the standby promoted {promoted:?} after, the first effect after it {resumed:?} after the kill, every run complete {done:?} after; \
         {effects} effects each once ({repeats} repeats absorbed), {} records",
        acknowledged.len(),
        after.len()
    );
}
