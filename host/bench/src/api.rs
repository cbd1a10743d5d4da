//! `charter up`'s API round trip: an in-process `charter_server::serve` on
//! loopback over the refunds example (log fdatasynced, as deployed), asked
//! over HTTP/1.1 the way the CLI asks it (a fresh connection per request,
//! a bearer token checked on each): `GET /v1/runs/{id}` (`runs show`), and
//! `POST /v1/proposals/{id}/approve` (an approval: the decision recorded,
//! the approved call executed, the run driven to its end, then the answer).
//! Besides, the same `runs show` as an in-process `Control` call, so the
//! figure says what HTTP and authentication add.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use charter_api::{Access, Control};
use serde_json::{Value, json};

use crate::{Stats, print, root};

/// One request on a fresh connection: status and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n"
    );
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
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

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let n = v.len();
    let total: Duration = v.iter().sum();
    Stats {
        median: v[n / 2],
        mean: total / n as u32,
        p99: v[(n * 99 / 100).min(n - 1)],
    }
}

/// The refunds example with tokens for carol (who starts runs) and bob
/// (who approves), data in `dir`.
fn deployment(dir: &std::path::Path) -> Result<(String, String, String)> {
    let src = root().join("examples/refunds");
    let carol = charter_auth::mint("carol", None).map_err(anyhow::Error::msg)?;
    let bob = charter_auth::mint("bob", None).map_err(anyhow::Error::msg)?;
    let toml = std::fs::read_to_string(src.join("charter.toml"))?
        .replace("../../target/charter-data/refunds", "data")
        .replace(
            "../../target/wasm32-wasip2/release/",
            &format!("{}/", root().join("target/wasm32-wasip2/release").display()),
        )
        .replace(
            "[approvers.bob]\n",
            &format!("[approvers.bob]\ntokens = [\"{}\"]\n", bob.hash),
        )
        .replace(
            "[approvers.carol]\n",
            &format!("[approvers.carol]\ntokens = [\"{}\"]\n", carol.hash),
        )
        + "\n[workflows.refund]\n[[workflows.refund.steps]]\nid = \"refund\"\nplugin = \"refund-bot\"\n";
    std::fs::write(dir.join("charter.toml"), &toml)?;
    std::fs::copy(src.join("refunds.cedar"), dir.join("refunds.cedar"))?;
    Ok((toml, carol.token, bob.token))
}

/// Wait until run `id` is no longer running; its document.
fn settled(addr: &str, token: &str, id: &str) -> Result<Value> {
    let t = Instant::now();
    loop {
        let (status, body) = http(addr, "GET", &format!("/v1/runs/{id}"), token, None)?;
        anyhow::ensure!(status == 200, "runs show: {status} {body}");
        let v: Value = serde_json::from_str(&body)?;
        if v["status"] != "running" {
            return Ok(v);
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("run {id} stuck: {v}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The `api round trip` lines.
pub fn report(iters: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (toml, carol, bob) = deployment(dir.path())?;
    let (rt, host) = crate::served_host(&toml, dir.path())?;
    let _guard = rt.enter();
    let control = Arc::new(Control::with_host(host, Access::Remote));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(charter_server::serve(control.clone(), listener, async {
        let _ = stopped.await;
    }));

    // Runs that each wait for one approval.
    let n = (iters / 10).clamp(20, 200);
    let mut waiting = Vec::with_capacity(n);
    for i in 0..n {
        let input = json!({"order_id": format!("B-{i}"), "amount_cents": 20_000, "reason": "lost"});
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/runs",
            &carol,
            Some(&json!({"workflow": "refund", "input": input})),
        )?;
        anyhow::ensure!(status == 202, "start: {status} {body}");
        let id = serde_json::from_str::<Value>(&body)?["run"]
            .as_str()
            .context("run id")?
            .to_string();
        let v = settled(&addr, &carol, &id)?;
        let p = v["proposal"].as_str().context("a proposal")?.to_string();
        waiting.push((id, p));
    }
    let show_path = format!("/v1/runs/{}", waiting[0].0);
    let mut shows = Vec::with_capacity(iters);
    for i in 0..iters + iters / 10 {
        let t = Instant::now();
        let (status, _) = http(&addr, "GET", &show_path, &bob, None)?;
        let e = t.elapsed();
        anyhow::ensure!(status == 200);
        if i >= iters / 10 {
            shows.push(e);
        }
    }
    let req = charter_api::RunId {
        id: waiting[0].0.clone(),
    };
    let mut direct = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        control.runs_show(&req)?;
        direct.push(t.elapsed());
    }
    let mut approvals = Vec::with_capacity(n);
    for (_, p) in &waiting {
        let t = Instant::now();
        let (status, body) = http(
            &addr,
            "POST",
            &format!("/v1/proposals/{p}/approve"),
            &bob,
            Some(&json!({"comment": "bench"})),
        )?;
        approvals.push(t.elapsed());
        anyhow::ensure!(status == 200, "approve: {status} {body}");
    }
    let (show, direct, approve) = (stats(shows), stats(direct), stats(approvals));
    print("api round trip: runs show (HTTP, token)", &show);
    print("api: runs show in process (Control)", &direct);
    print(
        &format!("api round trip: approval ({n}, run driven)"),
        &approve,
    );
    println!(
        "{:<44} {:>8.2}x median",
        "api runs show: HTTP / in process",
        show.median.as_secs_f64() / direct.median.as_secs_f64().max(1e-9)
    );
    let _ = stop.send(());
    rt.block_on(server)??;
    Ok(())
}
