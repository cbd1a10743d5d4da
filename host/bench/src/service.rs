//! `charter up` under load (issue 13's benchmark lines): an in-process
//! `charter_server::serve_with` on loopback over a deployment whose
//! 3-step workflow of trivial steps (the in-process workflow benchmark's
//! `three`, fx-echo) also declares a webhook, with the host's run timers
//! started as `charter up` starts them (runs are driven by the host, at
//! most `max_steps_in_flight` at once) and the log fdatasynced, as
//! deployed.
//!
//! - **Webhook-started runs per second**: `POST /hooks/bench` deliveries,
//!   each with its own delivery id and an HMAC-SHA256 signature over its
//!   body (`X-Hub-Signature-256`, GitHub's scheme), sent by `SENDERS`
//!   threads on a fresh connection each; the rate at which deliveries are
//!   accepted (202: the run recorded, its dedup key indexed) and the rate
//!   at which the runs they started complete.
//! - **Runs driven with the host up**: runs started through the API
//!   (`POST /v1/runs` with a bearer token), driven by the host to their
//!   end; steps per second, beside the in-process benchmark's
//!   (`durable_workflows`: the same workflow, 128 runs in flight, each
//!   task calling `run_workflow`), as a ratio.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use charter_api::{Access, Control};
use charter_runtime::Host;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Client threads sending requests at once.
const SENDERS: usize = 8;
/// The webhook's HMAC key (read from a `[secrets]` file).
const HOOK_KEY: &str = "bench-hook-key-0123456789abcdef";

/// One request on a fresh connection: status and body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_KEY.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `n` requests made by `SENDERS` threads, `make(i)` giving the i-th's
/// path, headers and body; the run id each answer names.
fn send_all(
    addr: &str,
    n: usize,
    make: impl Fn(usize) -> (String, Vec<(String, String)>, String) + Sync,
) -> Result<Vec<String>> {
    let ids = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for t in 0..SENDERS {
            let (make, ids) = (&make, &ids);
            workers.push(s.spawn(move || -> Result<()> {
                for i in (t..n).step_by(SENDERS) {
                    let (path, headers, body) = make(i);
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let (status, answer) = request(addr, "POST", &path, &h, &body)?;
                    anyhow::ensure!(status == 202, "{path}: {status} {answer}");
                    let v: Value = serde_json::from_str(&answer)?;
                    let id = v["run"].as_str().context("a run id")?.to_string();
                    ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                }
                Ok(())
            }));
        }
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ids.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Wait until every run of `ids` has completed (any other end is an error).
fn completed(host: &Host, ids: &[String]) -> Result<()> {
    let t = Instant::now();
    let mut left: Vec<&String> = ids.iter().collect();
    while !left.is_empty() {
        let mut still = Vec::new();
        for id in left {
            match host.run(id).map(|st| st.status) {
                Some(s) if s == "completed" => {}
                Some(s) if s != "running" => bail!("run {id} ended {s}"),
                _ => still.push(id),
            }
        }
        left = still;
        if t.elapsed() > Duration::from_secs(600) {
            bail!("{} runs did not complete", left.len());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The service lines; `in_process` is the in-process workflow benchmark's
/// steps per second from the same run (measured here when `None`).
pub fn report(echo: &Path, runs: usize, in_process: Option<f64>) -> Result<()> {
    let dir = tempfile::tempdir_in(crate::root().join("target"))?;
    let minted = charter_auth::mint("bench", None).map_err(anyhow::Error::msg)?;
    std::fs::write(dir.path().join("hook.key"), HOOK_KEY)?;
    let step = |id: &str| {
        format!(
            "[[workflows.three.steps]]\nid = \"{id}\"\nplugin = \"echo\"\ninput = {{ n = \"$/input/n\" }}\n"
        )
    };
    let toml = format!(
        "[deployment]\nname = \"service\"\nphase = 1\ndata_dir = \"data\"\n\
         [identities.bench]\nkind = \"service\"\ntokens = [\"{hash}\"]\n\
         [secrets.hook-key]\nfile = \"hook.key\"\n\
         [groups.kv]\ncapabilities = [\"charter:host/kv.*\", \"charter:host/log.write\"]\neffect = \"write\"\n\
         [plugins.echo]\npath = \"{echo}\"\ngroups = [\"kv\"]\n\
         [workflows.three]\n{a}{b}{c}\
         [workflows.three.triggers.webhook]\nname = \"bench\"\nsecret = \"hook-key\"\n",
        hash = minted.hash,
        echo = echo.display(),
        a = step("a"),
        b = step("b"),
        c = step("c"),
    );
    let (rt, host) = crate::served_host(&toml, dir.path())?;
    let _guard = rt.enter();
    rt.block_on(host.load("echo"))?;
    host.start_timers().context("timers")?;
    let control = Arc::new(Control::with_host(host.clone(), Access::Remote));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = charter_server::Service::new();
    service.set_ready();
    let server = rt.spawn(charter_server::serve_with(
        control,
        service,
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    // Webhook deliveries, each signed, each with its own delivery id.
    let started = Instant::now();
    let hooked = send_all(&addr, runs, |i| {
        let body = json!({"n": i}).to_string();
        let headers = vec![
            ("X-Hub-Signature-256".to_string(), sign(&body)),
            ("X-Delivery-Id".to_string(), format!("bench-{i}")),
        ];
        ("/hooks/bench".to_string(), headers, body)
    })?;
    let accepted = started.elapsed();
    completed(&host, &hooked)?;
    let hook_done = started.elapsed();
    let unique: std::collections::HashSet<&String> = hooked.iter().collect();
    anyhow::ensure!(unique.len() == runs, "a delivery started no run of its own");

    // Runs started through the API and driven by the host.
    let bearer = format!("Bearer {}", minted.token);
    let started = Instant::now();
    let api = send_all(&addr, runs, |i| {
        let body = json!({"workflow": "three", "input": {"n": i}}).to_string();
        let headers = vec![("Authorization".to_string(), bearer.clone())];
        ("/v1/runs".to_string(), headers, body)
    })?;
    completed(&host, &api)?;
    let api_done = started.elapsed();
    let _ = stop.send(());
    rt.block_on(server)??;
    drop(_guard);
    drop(rt);
    drop(host);

    let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "{:<44} {:>8.0} runs/s accepted, {:.0} runs/s completed ({runs} deliveries, HMAC-signed, unique ids, {SENDERS} senders; 3-step runs driven by the host)",
        "webhook-started runs (charter up, loopback)",
        per_s(runs, accepted),
        per_s(runs, hook_done),
    );
    let up = per_s(runs * 3, api_done);
    let inproc = match in_process {
        Some(v) => v,
        None => crate::durable_workflows(echo, runs, 128)?.steps_per_s,
    };
    println!(
        "{:<44} {:>8.0} steps/s ({runs} runs of 3 steps started through the API by {SENDERS} senders, driven by the host's timers)",
        "workflow steps with the host up (charter up)", up
    );
    println!(
        "{:<44} {:>8.2}x ({up:.0} vs {inproc:.0} steps/s in process, same workflow)",
        "host up / in-process workflow throughput",
        up / inproc.max(1e-9)
    );
    Ok(())
}
