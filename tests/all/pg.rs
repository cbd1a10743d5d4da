//! A deployment on PostgreSQL (`[deployment] backend = "postgres://…"`),
//! driven through the real `charter` binary: the kill -9 workflow of
//! `crash.rs` runs, is killed mid-run and resumed by a restarted process
//! (every effect once), and the read-only commands (`runs list`, `audit
//! verify`, `kpi`) read the database — nothing goes to `events.log`.
//! Plus what a shared backend adds: one process per node name (another
//! node of the same deployment runs beside it), an
//! unreachable server refused at start with nothing written, and the
//! URL's password shown nowhere.
//!
//! Needs PostgreSQL's server binaries: skipped loudly without them,
//! unless `CHARTER_REQUIRE_PG` is set (`tests/run.sh` sets it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use charter_pg::Cluster;

use crate::crash::{effect_server, spawn, write_deployment};
use crate::support::*;

/// In the URL of every deployment here: it must show up in no output.
const PASSWORD: &str = "pw-Zq8vT3-never-shown";

pub(crate) fn cluster() -> Option<Cluster> {
    Cluster::for_tests()
}

/// A `postgresql://` URL to database `db` over the socket in `dir` (the
/// path percent-encoded as the host), with [`PASSWORD`] (the test
/// cluster trusts local connections, so any password is accepted).
pub(crate) fn url(dir: &Path, db: &str) -> String {
    let host = dir.display().to_string().replace('/', "%2F");
    format!("postgresql://postgres:{PASSWORD}@{host}/{db}")
}

/// `crash.rs`'s deployment (3 steps × 2 keyed POSTs) in `dir`, on
/// `backend` (a TOML value), with `extra` appended.
fn on_backend(dir: &Path, port: u16, backend: &str, extra: &str) -> PathBuf {
    let path = write_deployment(dir, port);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "data_dir = \"data\"\n",
        &format!("data_dir = \"data\"\nbackend = {backend}\n"),
        1,
    );
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

pub(crate) fn run_cmd(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(charter_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CHARTER_LOG")
        .output()
        .expect("run charter")
}

pub(crate) fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Long because it is one story over one database: runs, kills and
/// restarts, then every reader, then the hostile neighbours.
#[test]
fn a_deployment_on_postgres_survives_kill_9_and_is_read_from_the_database() {
    let Some(pg) = cluster() else { return };
    pg.create_db("charter").unwrap();
    let rt = rt();
    let server = rt.block_on(effect_server());
    let dir = tempfile::tempdir().unwrap();
    let pg_url = url(pg.socket_dir(), "charter");
    let config = on_backend(dir.path(), server.port, &format!("{pg_url:?}"), "");
    let mut outputs = String::new();
    let warm = run_cmd(&config, &["check"]);
    outputs += &text(&warm);
    assert!(warm.status.success(), "{}", text(&warm));

    // A control run, then runs killed -9 mid-run, each resumed by a new
    // process: half killed between an effect and its event (by the effect
    // server), half after a delay.
    let control = run_cmd(
        &config,
        &["run", "effects", "--input", "{\"order\": \"control\"}"],
    );
    outputs += &text(&control);
    assert!(control.status.success(), "{}", text(&control));
    let (mut effect_kills, mut timer_kills) = (0, 0);
    let rounds = 8;
    for round in 1..=rounds {
        let input = format!("{{\"order\": \"order-{round}\"}}");
        let mut child = spawn(&config, &["run", "effects", "--input", &input]);
        server.pid.store(child.id(), Ordering::SeqCst);
        if round % 2 == 0 {
            let before = server.effects.lock().unwrap().done.len();
            server
                .kill_after
                .store(before + 1 + (round * 5) % 6, Ordering::SeqCst);
            if child.wait().unwrap().code().is_none() {
                effect_kills += 1;
            }
            server.kill_after.store(0, Ordering::SeqCst);
        } else {
            std::thread::sleep(Duration::from_millis(40 * round as u64));
            let _ = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status();
            if child.wait().unwrap().code().is_none() {
                timer_kills += 1;
            }
        }
        let resumed = run_cmd(&config, &["runs", "resume"]);
        outputs += &text(&resumed);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "round {round}: the restarted process did not complete every run: {}",
            text(&resumed)
        );
    }
    assert!(
        effect_kills >= rounds / 2 - 1,
        "only {effect_kills} kills between an effect and its event"
    );

    // Every run completed, read from the database by `charter runs list`.
    let list = run_cmd(&config, &["runs", "list", "--json"]);
    outputs += &text(&list);
    let runs = json(&list)["runs"].as_array().cloned().unwrap_or_default();
    // A timed kill during start-up may come before its run is recorded
    // (no run, no effect); every killed-between-effects round has one.
    assert!(runs.len() > rounds / 2 + 1, "{}", text(&list));
    for r in &runs {
        assert_eq!(r["status"], "completed", "{r}");
    }
    // Every effect exactly once: 6 distinct keys per run, none unkeyed,
    // none of a run the database does not hold.
    {
        let fx = server.effects.lock().unwrap();
        let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
        for key in fx.done.keys() {
            *per_run
                .entry(key.split(':').nth(1).unwrap().to_string())
                .or_default() += 1;
        }
        let ids: Vec<String> = runs
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            per_run.keys().cloned().collect::<Vec<_>>(),
            {
                let mut sorted = ids.clone();
                sorted.sort();
                sorted
            },
            "the runs that made effects are the runs the database holds"
        );
        assert!(per_run.values().all(|&n| n == 6), "{per_run:?}");
        assert_eq!(fx.unkeyed, 0);
        eprintln!(
            "postgres backend: {} runs completed through {effect_kills} kills between an effect and its event and {timer_kills} timed kills; {} effects each once, {} repeats absorbed by idempotency keys",
            runs.len(),
            fx.done.len(),
            fx.repeats
        );
    }
    // The chain, walked in the database; the KPIs from its rows.
    let verify = run_cmd(&config, &["audit", "verify", "--json"]);
    outputs += &text(&verify);
    let v = json(&verify);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["entries"].as_u64().unwrap() > 50, "{v}");
    let kpi = run_cmd(&config, &["kpi", "--json"]);
    outputs += &text(&kpi);
    let k = json(&kpi);
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    // Nothing of the log or the index in the data directory.
    let data = dir.path().join("data");
    assert!(!data.join("events.log").exists(), "the log went to a file");
    assert!(!data.join("state").exists(), "the index went to sled");
    let grants = run_cmd(&config, &["grants", "--json"]);
    outputs += &text(&grants);

    // The same deployment through a secret (a `key=value` string in a
    // file), from another directory: another reader of the same rows.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("pg-url"), pg.url("charter")).unwrap();
    let by_secret = on_backend(
        other.path(),
        server.port,
        "{ secret = \"pg\" }",
        "[secrets.pg]\nfile = \"pg-url\"\n",
    );
    let list2 = run_cmd(&by_secret, &["runs", "list", "--json"]);
    assert_eq!(
        json(&list2)["runs"].as_array().map(Vec::len),
        Some(runs.len()),
        "{}",
        text(&list2)
    );

    // One process per node name: while a host holds node `default`, a
    // `charter` process of another data directory under the same name is
    // refused and makes no effect; under a name of its own it is another
    // node of the deployment, and its run goes on the same chain.
    let d = charter_config::Deployment::load(&config, charter_runtime::host_catalog()).unwrap();
    let options = charter_api::host_options(&d).unwrap();
    let holder = charter_runtime::Host::new(d, options).unwrap();
    let effects_before = server.effects.lock().unwrap().done.len();
    let second = run_cmd(
        &by_secret,
        &["run", "effects", "--input", "{\"order\": \"second\"}"],
    );
    outputs += &text(&second);
    assert!(!second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("node `default` of this deployment is running in another process"),
        "{}",
        text(&second)
    );
    assert_eq!(server.effects.lock().unwrap().done.len(), effects_before);
    let other_node = Command::new(charter_bin())
        .args([
            "run",
            "effects",
            "--input",
            "{\"order\": \"other-node\"}",
            "--config",
        ])
        .arg(&by_secret)
        .env_remove("CHARTER_LOG")
        .env("CHARTER_NODE", "n2")
        .output()
        .unwrap();
    outputs += &text(&other_node);
    assert!(other_node.status.success(), "{}", text(&other_node));
    assert_eq!(
        server.effects.lock().unwrap().done.len(),
        effects_before + 6,
        "the other node's run made its effects"
    );
    // `charter nodes`: the node this test's host holds, alive, with this
    // process's id; the other node's process ended cleanly and took its
    // record with it. Read from the database: it takes no node name.
    let nodes = run_cmd(&config, &["nodes", "--json"]);
    outputs += &text(&nodes);
    assert!(nodes.status.success(), "{}", text(&nodes));
    let v = json(&nodes);
    let list = v["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["node"], "default", "{v}");
    assert_eq!(list[0]["alive"], true, "{v}");
    assert_eq!(list[0]["pid"], std::process::id(), "{v}");
    assert_eq!(list[0]["steps_capacity"], 500, "{v}");
    assert_eq!(list[0]["steps_in_flight"], 0, "{v}");
    let table = run_cmd(&config, &["nodes"]);
    outputs += &text(&table);
    assert!(
        text(&table).contains("default") && text(&table).contains("alive"),
        "{}",
        text(&table)
    );
    drop(holder);
    let none = json(&run_cmd(&config, &["nodes", "--json"]));
    assert_eq!(none["nodes"], serde_json::json!([]), "{none}");
    let verify2 = run_cmd(&config, &["audit", "verify", "--json"]);
    assert!(verify2.status.success(), "{}", text(&verify2));

    // An unreachable server: refused at start naming the setting and the
    // fix; nothing written (not even the data directory).
    let gone = tempfile::tempdir().unwrap();
    let nowhere = url(&gone.path().join("no-server-here"), "charter");
    let bad = on_backend(gone.path(), server.port, &format!("{nowhere:?}"), "");
    let refused = run_cmd(&bad, &["run", "effects", "--input", "{\"order\": \"x\"}"]);
    outputs += &text(&refused);
    assert!(!refused.status.success());
    let msg = text(&refused);
    assert!(msg.contains("[deployment] backend"), "{msg}");
    assert!(msg.contains("nothing was written"), "{msg}");
    assert!(
        !gone.path().join("data").exists(),
        "wrote the data directory"
    );

    // A deployment whose log is a file has no nodes, and says why.
    let file = on_backend(gone.path(), server.port, "\"file\"", "");
    let refused = run_cmd(&file, &["nodes"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("which one process writes"),
        "{}",
        text(&refused)
    );

    assert!(
        !outputs.contains(PASSWORD),
        "the backend's password was printed:\n{outputs}"
    );
}

/// A host given no opener for a deployment on PostgreSQL refuses before
/// it writes anything: it never falls back to a file log of its own, and
/// its error shows the URL without the password. Needs no server.
#[test]
fn a_host_without_the_backend_refuses_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[deployment]\nname = \"t\"\nphase = 1\ndata_dir = \"data\"\nbackend = \"postgresql://charter:{PASSWORD}@db.invalid/charter\"\n"
    );
    let d = charter_config::Deployment::parse(
        &text,
        &dir.path().join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap();
    let Err(err) = charter_runtime::Host::new(d, charter_runtime::HostOptions::default()) else {
        panic!("a host without its backend started");
    };
    let err = err.to_string();
    assert!(err.contains("[deployment] backend"), "{err}");
    assert!(err.contains("postgresql://…@db.invalid/charter"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "wrote the data directory"
    );
}

/// Node `name` of `crash.rs`'s deployment (effects on `port`) on the
/// PostgreSQL database at `db`, its data directory in `dir`.
fn crash_node(dir: &Path, port: u16, db: &str, name: &str) -> charter_runtime::Host {
    let config = on_backend(dir, port, &format!("{db:?}"), "");
    let d = charter_config::Deployment::load(&config, charter_runtime::host_catalog()).unwrap();
    let mut options = charter_api::host_options(&d).unwrap();
    options.node = Some(name.to_string());
    charter_runtime::Host::new(d, options).unwrap()
}

/// Host `node` of the refunds example on PostgreSQL database `url`, its
/// data directory in `dir` (each node has its own).
fn refunds_node(dir: &Path, url: &str, node: &str, extra: &str) -> charter_runtime::Host {
    let mut d = crate::governance::refunds(dir, extra);
    d.backend = charter_config::Backend::Postgres(url.to_string());
    let mut options = charter_api::host_options(&d).unwrap();
    options.node = Some(node.to_string());
    charter_runtime::Host::new(d, options).unwrap()
}

/// Issue 17: two approvers on two nodes decide one pending proposal at
/// the same moment. The nodes take turns on it (a claim in the database),
/// so it executes once: one decision executes it, the other finds it
/// decided and is refused; the refund happens once.
#[test]
fn two_nodes_deciding_one_proposal_execute_it_once() {
    let Some(pg) = cluster() else { return };
    pg.create_db("decide").unwrap();
    let url = pg.url("decide");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = refunds_node(da.path(), &url, "a", "");
    let b = refunds_node(db.path(), &url, "b", "");
    let rt = rt();
    for i in 0..4 {
        let order = format!("N-{i}");
        let args = serde_json::json!({"order_id": order, "amount_cents": 200_000, "reason": "damaged in transit"});
        let err = rt
            .block_on(a.call_as("refund-bot", &args.to_string(), Some("alice")))
            .unwrap_err();
        let id = match err {
            charter_runtime::CallError::AwaitingApproval { proposal, .. } => proposal,
            other => panic!("expected a proposal, got {other}"),
        };
        let go = std::sync::Barrier::new(2);
        let decide = |h: &charter_runtime::Host, by: &str| {
            go.wait();
            rt.block_on(h.decide(&id, by, true, None))
        };
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| decide(&a, "bob"));
            let tb = s.spawn(|| decide(&b, "carol"));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let executed = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Ok(d) if d.outcome == "executed"))
            .count();
        assert_eq!(executed, 1, "{ra:?}\n{rb:?}");
        let other = if ra.is_ok() { &rb } else { &ra };
        assert!(
            matches!(
                other,
                Err(charter_runtime::proposals::ProposalError::Refused {
                    rule: "not-pending",
                    ..
                })
            ),
            "{other:?}"
        );
        // Both nodes read the one outcome.
        assert_eq!(b.proposal(&id).unwrap().status, "executed");
        assert_eq!(a.proposal(&id).unwrap().status, "executed");
    }
    let records = charter_pg::read_records(&url, "acme-refunds").unwrap();
    let executions = records
        .iter()
        .filter(|r| {
            matches!(&r.event, charter_audit::Event::ProposalResolved { status, .. } if status == "executed")
        })
        .count();
    assert_eq!(executions, 4, "each proposal executed once");
}

/// Issue 17, SECURITY 23 on several nodes: a quota bounds the
/// deployment, not each node. Calls alternate between two nodes; exactly
/// `limit` requests leave between them (the window is the database's),
/// and every call after is denied on either node before it leaves.
#[test]
fn a_quota_bounds_every_node_together() {
    use std::sync::atomic::Ordering;
    let Some(pg) = cluster() else { return };
    pg.create_db("quota").unwrap();
    let url = pg.url("quota");
    let rt = rt();
    let (port, hits) = rt.block_on(crate::http::server());
    let extra = format!(
        "[groups.http-a]\ncapabilities = [\"wasi:http/outgoing-handler.handle\"]\nallow_hosts = [\"127.0.0.1:{port}\"]\n[quotas.web]\nfunction = \"wasi:http/outgoing-handler.handle\"\nlimit = 3\nper = \"1h\"\nover = \"deny\"\n"
    );
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes: Vec<_> = dirs
        .iter()
        .zip(["a", "b"])
        .map(|(dir, name)| {
            let mut d = crate::support::deployment(
                dir.path(),
                4,
                &[("fetch", "fx-http", &["http-a"], &extra)],
            );
            d.backend = charter_config::Backend::Postgres(url.clone());
            let mut options = charter_api::host_options(&d).unwrap();
            options.node = Some(name.to_string());
            charter_runtime::Host::new(d, options).unwrap()
        })
        .collect();
    let input = format!(r#"{{"url": "http://127.0.0.1:{port}/x"}}"#);
    let mut allowed = 0;
    for i in 0..8 {
        match rt.block_on(nodes[i % 2].call("fetch", &input)) {
            Ok(out) => {
                assert_eq!(out.output["status"], 200);
                allowed += 1;
            }
            Err(e) => assert!(e.to_string().contains("quota web: 3 of 3"), "{e}"),
        }
    }
    assert_eq!(allowed, 3, "calls allowed across the nodes");
    assert_eq!(hits.load(Ordering::SeqCst), 3, "requests that left");
}

/// Issue 17, a node dies: the runs it held move on on another node once
/// its leases expire. Node b runs its timers from the start; node a then
/// records five runs of the kill -9 workflow and dies holding their
/// leases (left as a killed process leaves them: unexpired, never
/// renewed). Node b finds the runs (its queue never had them), waits out
/// the leases and completes every run; each effect happens once.
#[test]
fn a_dead_nodes_runs_move_on_on_another_node() {
    let Some(pg) = cluster() else { return };
    pg.create_db("adopt").unwrap();
    let db = url(pg.socket_dir(), "adopt");
    let rt = rt();
    let server = rt.block_on(effect_server());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let node = |dir: &Path, name: &str| crash_node(dir, server.port, &db, name);
    let b = std::sync::Arc::new(node(dirs[1].path(), "b"));
    let _timers = {
        let _in = rt.enter();
        b.start_timers().unwrap()
    };
    let a = node(dirs[0].path(), "a");
    let lease_ms = 1_500;
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let input = serde_json::json!({ "order": format!("adopt-{i}") });
            rt.block_on(a.start_run("effects", input, None)).unwrap().id
        })
        .collect();
    let died = std::time::Instant::now();
    let expires = charter_audit::now_ms() + lease_ms;
    for id in &ids {
        let lease = serde_json::json!({"holder": "node a pid 1 host 0", "token": "a#dead", "expires_ms": expires});
        assert!(
            a.store()
                .compare_and_swap("@leases", id, None, Some(&lease.to_string()))
                .unwrap()
        );
    }
    drop(a);
    let completed = |id: &str| b.run(id).is_some_and(|st| st.status.is_terminal());
    while !ids.iter().all(|id| completed(id)) {
        assert!(
            died.elapsed() < Duration::from_secs(30),
            "runs stuck: {:?}",
            ids.iter()
                .map(|id| b.run(id).map(|s| s.status))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let moved_on = died.elapsed();
    assert!(
        moved_on >= Duration::from_millis(lease_ms - 100),
        "driven before the dead node's lease expired: {moved_on:?}"
    );
    for id in &ids {
        let st = b.run(id).unwrap();
        assert_eq!(
            st.status,
            charter_runtime::workflow::RunStatus::Completed,
            "{st:?}"
        );
    }
    let fx = server.effects.lock().unwrap();
    assert_eq!(fx.done.len(), 30, "each run's six effects, once");
    assert_eq!(fx.unkeyed, 0);
    eprintln!(
        "a dead node's 5 runs completed on another node {moved_on:?} after it died (its leases ran {lease_ms} ms; adoption scans every {:?})",
        charter_runtime::workflow::timers::ADOPT_EVERY
    );
}

/// Issue 17: one webhook delivery (or one schedule tick) reaching two
/// nodes at once starts one run: the starts of one dedup key take turns
/// across nodes, and the second finds the first's run in the index.
#[test]
fn one_delivery_on_two_nodes_starts_one_run() {
    let Some(pg) = cluster() else { return };
    pg.create_db("trigger").unwrap();
    let db = url(pg.socket_dir(), "trigger");
    let rt = rt();
    let server = rt.block_on(effect_server());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes: Vec<_> = dirs
        .iter()
        .zip(["a", "b"])
        .map(|(dir, name)| crash_node(dir.path(), server.port, &db, name))
        .collect();
    for i in 0..6 {
        let t = charter_audit::TriggerRef {
            kind: "webhook".into(),
            name: "orders".into(),
            key: format!("delivery-{i}"),
            auth: "hmac-sha256".into(),
            sender: None,
        };
        let go = std::sync::Barrier::new(2);
        let start = |h: &charter_runtime::Host| {
            go.wait();
            let input = serde_json::json!({ "order": format!("t-{i}") });
            rt.block_on(h.start_triggered_run("effects", input, "hook:orders", t.clone()))
                .unwrap()
        };
        let (x, y) = std::thread::scope(|s| {
            let a = s.spawn(|| start(&nodes[0]));
            let b = s.spawn(|| start(&nodes[1]));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(x.run, y.run, "one run for the delivery");
        assert!(x.duplicate != y.duplicate, "{x:?} {y:?}");
    }
    let started = charter_pg::read_records(&db, "crash")
        .unwrap()
        .iter()
        .filter(|r| r.event.kind() == "run-started")
        .count();
    assert_eq!(started, 6);
}

/// Node `name` of the hot-loading deployment (`hot.rs`: plugin `stepper`
/// at fx-hot-v1) on PostgreSQL database `url`, its data directory in
/// `dir`, with its timers running (they follow other nodes' activations).
fn hot_node(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    url: &str,
    name: &str,
) -> (
    std::sync::Arc<charter_runtime::Host>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let text = format!(
        "[deployment]\nname = \"hot\"\nphase = 1\ndata_dir = \"data\"\n\n[groups.kv-read]\ncapabilities = [\"charter:host/kv.get\"]\n\n[plugins.stepper]\npath = {:?}\ngroups = [\"kv-read\"]\n",
        fixture("fx-hot-v1").display().to_string()
    );
    let mut d = charter_config::Deployment::parse(
        &text,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap();
    d.backend = charter_config::Backend::Postgres(url.to_string());
    let mut options = charter_api::host_options(&d).unwrap();
    options.node = Some(name.to_string());
    let host = std::sync::Arc::new(charter_runtime::Host::new(d, options).unwrap());
    let timers = {
        let _in = rt.enter();
        host.start_timers()
    };
    (host, timers)
}

/// Issue 17, plugins for every node: a version pushed to one node is kept
/// in the database by its digest, and every other node serves it within
/// one pass of its timers, loading the bytes from the database (verified)
/// into its own plugin store. A row edited in the database (other bytes
/// under the digest) is refused by a node that needs it, and never runs.
#[test]
fn a_version_pushed_to_one_node_serves_on_every_node() {
    let Some(pg) = cluster() else { return };
    pg.create_db("hotnodes").unwrap();
    let url = pg.url("hotnodes");
    let rt = rt();
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let (a, _ta) = hot_node(&rt, dirs[0].path(), &url, "a");
    let (b, _tb) = hot_node(&rt, dirs[1].path(), &url, "b");
    let v1 = crate::hot::digest_of("fx-hot-v1");
    let v2 = crate::hot::digest_of("fx-hot-v2");
    let serving =
        |h: &charter_runtime::Host| rt.block_on(h.load("stepper")).map(|p| p.digest.clone());
    assert_eq!(serving(&a).unwrap(), v1);
    assert_eq!(serving(&b).unwrap(), v1);
    let bytes = std::fs::read(fixture("fx-hot-v2")).unwrap();
    let pushed = rt
        .block_on(a.push_plugin(
            "stepper",
            bytes,
            "ops",
            charter_runtime::hot::PushSource::Push,
        ))
        .unwrap();
    assert_eq!(pushed.digest, v2);
    assert_eq!(serving(&a).unwrap(), v2);
    // b was sent nothing: it follows the recorded activation.
    let start = std::time::Instant::now();
    while serving(&b).unwrap() != v2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node b still serves {:?}",
            serving(&b)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let followed = start.elapsed();
    let kept = charter_runtime::hot::store::path(&dirs[1].path().join("data"), &v2).unwrap();
    assert!(kept.exists(), "b kept the version in its own plugin store");
    // A node started later serves the activated version from the start.
    let (c, _tc) = hot_node(&rt, dirs[2].path(), &url, "c");
    assert_eq!(serving(&c).unwrap(), v2);
    drop(c);

    // Set back. v1 then v2 are activated again (v2, which the
    // configuration does not name, last); the index is then made to name
    // v1's activation. A shared log is asked for the last activation
    // itself, so neither the nodes that serve nor one started now go back
    // (b has v1's genuine bytes in its own store: nothing else would stop
    // it).
    let store = charter_pg::PgStore::open(&url, "hot").unwrap();
    let meta = charter_runtime::index::META;
    let push = |version: &str| {
        let bytes = std::fs::read(fixture(version)).unwrap();
        rt.block_on(a.push_plugin(
            "stepper",
            bytes,
            "ops",
            charter_runtime::hot::PushSource::Push,
        ))
        .unwrap();
    };
    let b_serves = |want: &str| {
        let start = std::time::Instant::now();
        while serving(&b).unwrap() != want {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "b never followed {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    push("fx-hot-v1");
    b_serves(&v1);
    let v1_at = charter_store::Store::get(&store, meta, "active-at:stepper")
        .unwrap()
        .expect("the index has v1's activation");
    push("fx-hot-v2");
    b_serves(&v2);
    charter_store::Store::set(&store, meta, "active:stepper", &v1).unwrap();
    charter_store::Store::set(&store, meta, "active-at:stepper", &v1_at).unwrap();
    // A node started now serves `want`.
    let started_serves = |node: &str, want: &str, why: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (n, _t) = hot_node(&rt, dir.path(), &url, node);
        assert_eq!(serving(&n).unwrap(), want, "{why}");
    };
    // After three follow passes (one every 2 s, each after its own work),
    // a and b still serve v2.
    let both_stay_on_v2 = |why: &str| {
        std::thread::sleep(Duration::from_millis(6500));
        assert_eq!(serving(&a).unwrap(), v2, "a went back to v1 {why}");
        assert_eq!(serving(&b).unwrap(), v2, "b went back to v1 {why}");
    };
    started_serves("e", &v2, "a node started after the index was set back");
    both_stay_on_v2("by the index");
    // The log itself set back: its last activation (v2's) deleted. The
    // nodes that read it keep serving v2; a node started now reads v1's
    // as the last (SECURITY 25's "not yet"), and the chain's walk names
    // the gap.
    pg.sql(
        "hotnodes",
        "DELETE FROM charter_events WHERE log = 'hot' AND seq = \
         (SELECT max(seq) FROM charter_events WHERE log = 'hot' AND kind = 'plugin-activated')",
    )
    .unwrap();
    started_serves("f", &v1, "the delete removed v2's activation");
    both_stay_on_v2("by a deleted row");
    let walked = charter_pg::verify(&url, "hot").unwrap();
    assert!(
        walked
            .findings
            .iter()
            .any(|f| f.problem.contains("rows deleted")),
        "{walked:?}"
    );
    // v2 activated again, so it is the last activation for what follows.
    push("fx-hot-v2");

    // Forged: other bytes (v1's) under v2's digest in the database. A new
    // node without v2 of its own refuses it, naming the tampering, and
    // runs nothing of it.
    use base64::Engine;
    let forged = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(fixture("fx-hot-v1")).unwrap());
    charter_store::Store::set(&store, charter_runtime::hot::store::SHARED, &v2, &forged).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let (d, _td) = hot_node(&rt, fresh.path(), &url, "d");
    let refused = rt.block_on(d.load("stepper")).unwrap_err().to_string();
    assert!(refused.contains(&v2), "{refused}");
    assert!(
        refused.contains("tamper") || refused.contains("changed"),
        "{refused}"
    );
    assert!(
        !charter_runtime::hot::store::path(&fresh.path().join("data"), &v2)
            .unwrap()
            .exists()
    );
    eprintln!("a push on node a served on node b {followed:?} later");
}
