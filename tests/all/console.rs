//! The operator console (issue 14), driven in Debian's Chromium (headless,
//! through chromedriver and fantoccini) against a real `charter up`:
//! sign in, a proposal arriving live, the initiator's refused approval
//! shown and recorded, another approver's approval completing the run, an
//! escalation resolved, the audit table filtered, a plugin's grants, the
//! KPIs; each test saves screenshots under `target/console/`. Hostile
//! values (a rationale, arguments and a comment made of markup) render as
//! text. Actions a user's roles do not allow are not offered by the page
//! and are refused by the API (tested both ways).
//!
//! Without `chromedriver` the browser tests say so and pass, unless
//! `CHARTER_REQUIRE_BROWSER` is set (tests/run.sh sets it, after
//! installing `chromium` and `chromium-driver`). One chromedriver serves
//! every test of the binary; each test has its own browser session.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::cli::refunds_deployment;
use crate::support::{charter, root, text};
use crate::up::{http, mint, up, wait_for};

// ---- the browser ------------------------------------------------------------

/// chromedriver, shared by the tests of this binary: started by the first
/// that needs it, stopped when the last lets go.
static DRIVER: Mutex<(usize, Option<(Child, u16)>)> = Mutex::new((0, None));

struct Driver {
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut d = DRIVER.lock().unwrap_or_else(|p| p.into_inner());
        d.0 -= 1;
        if d.0 == 0
            && let Some((mut child, _)) = d.1.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn chromedriver_path() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromedriver"))
            .find(|p| p.is_file())
    })
}

/// The shared chromedriver, or `None` (the test is skipped) when it is
/// not installed and the browser is not required.
fn driver() -> Option<Driver> {
    let Some(bin) = chromedriver_path() else {
        assert!(
            std::env::var_os("CHARTER_REQUIRE_BROWSER").is_none(),
            "CHARTER_REQUIRE_BROWSER is set but chromedriver is not installed \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED: chromedriver is not installed (apt-get install chromium chromium-driver); \
             set CHARTER_REQUIRE_BROWSER=1 to make this a failure"
        );
        return None;
    };
    let mut d = DRIVER.lock().unwrap_or_else(|p| p.into_inner());
    if d.1.is_none() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d.1 = Some((child, port));
    }
    d.0 += 1;
    Some(Driver {
        port: d.1.as_ref().unwrap().1,
    })
}

/// A headless Chromium session at 1280×800, or (`phone`) with a phone's
/// viewport: 390×844 CSS pixels, touch, a phone's user agent.
async fn browser(d: &Driver, phone: bool) -> Client {
    let mut caps = serde_json::Map::new();
    let mut options = json!({
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--window-size=1280,800",
                 "--no-first-run", "--disable-extensions"],
    });
    if phone {
        options["mobileEmulation"] = json!({
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 1.0, "touch": true},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36",
        });
    }
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a chromium session")
}

/// Run `body` with a browser session, closing the session whatever
/// happens (a failed assertion too), then failing as the body did.
fn with_browser<F, Fut>(body: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    with_session(false, body)
}

/// [`with_browser`] with a phone's viewport when `phone`.
fn with_session<F, Fut>(phone: bool, body: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(d) = driver() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = browser(&d, phone).await;
        let outcome = tokio::spawn(body(client.clone())).await;
        let _ = client.close().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}

async fn screenshot(c: &Client, name: &str) {
    let dir = root().join("target/console");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn css(c: &Client, sel: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(sel))
        .await
        .unwrap_or_else(|e| panic!("{sel}: {e}"))
}

/// Wait until the script `js` returns true.
async fn until(c: &Client, what: &str, js: &str) {
    let start = Instant::now();
    loop {
        let v = c.execute(js, vec![]).await.unwrap();
        if v == Value::Bool(true) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: still not true: {js}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, sel: &str) -> String {
    css(c, sel).await.text().await.unwrap()
}

async fn sign_in(c: &Client, addr: &str, token: &str) {
    c.goto(&format!("http://{addr}/#/inbox")).await.unwrap();
    if c.find(Locator::Id("signout")).await.is_ok() {
        c.execute(
            "if (!document.getElementById('top').hidden) document.getElementById('signout').click(); return true;",
            vec![],
        )
        .await
        .unwrap();
    }
    let input = css(c, "#token").await;
    input
        .send_keys(token.strip_prefix("Bearer ").unwrap())
        .await
        .unwrap();
    css(c, "#signin").await.click().await.unwrap();
    until(
        c,
        "signed in",
        "return !document.getElementById('top').hidden",
    )
    .await;
}

async fn sign_out(c: &Client) {
    css(c, "#signout").await.click().await.unwrap();
    css(c, "#token").await;
}

// ---- the deployment -----------------------------------------------------------

struct Served {
    _dir: tempfile::TempDir,
    cwd: PathBuf,
    child: Child,
    addr: String,
    /// carol and bob: refund approvers; dave: an auditor; shop: a service
    /// account holding the refund-approver role; ops: a service account
    /// holding `operator`.
    carol: String,
    bob: String,
    dave: String,
    shop: String,
    ops: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn served() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    refunds_deployment(&cwd);
    let (carol, carol_h) = mint("carol", &cwd);
    let (bob, bob_h) = mint("bob", &cwd);
    let (dave, dave_h) = mint("dave", &cwd);
    let (shop, shop_h) = mint("shop", &cwd);
    let (ops, ops_h) = mint("ops", &cwd);
    // A failed refund step goes to a refund-approver; the deployment is
    // the refunds pattern (the KPI page's framework table).
    let mut toml = std::fs::read_to_string(cwd.join("charter.toml"))
        .unwrap()
        .replacen(
            "name = \"acme-refunds\"\n",
            "name = \"acme-refunds\"\npattern = \"refunds\"\n",
            1,
        )
        .replace(
            "plugin = \"refund-bot\"\n",
            "plugin = \"refund-bot\"\non_failure = \"escalate\"\n",
        );
    for (name, h) in [("carol", &carol_h), ("bob", &bob_h), ("dave", &dave_h)] {
        let header = format!("[approvers.{name}]\n");
        toml = toml.replace(&header, &format!("{header}tokens = [\"{h}\"]\n"));
    }
    toml.push_str(&format!(
        "\n[identities.shop]\nkind = \"service\"\nroles = [\"refund-approver\"]\ntokens = [\"{shop_h}\"]\n\
         \n[identities.ops]\nkind = \"service\"\nroles = [\"operator\"]\ntokens = [\"{ops_h}\"]\n"
    ));
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();
    let (child, addr) = up(&cwd);
    Served {
        _dir: dir,
        cwd,
        child,
        addr,
        carol,
        bob,
        dave,
        shop,
        ops,
    }
}

fn start_run(s: &Served, token: &str, input: Value) -> String {
    let r = http(
        &s.addr,
        "POST",
        "/v1/runs",
        Some(token),
        Some(&json!({"workflow": "refund", "input": input})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()["run"].as_str().unwrap().to_string()
}

fn audit(s: &Served, query: &str) -> Vec<Value> {
    let r = http(
        &s.addr,
        "GET",
        &format!("/v1/audit?{query}"),
        Some(&s.bob),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"].as_array().unwrap().clone()
}

/// Markup a hostile plugin input carries into a rationale and arguments.
const HOSTILE: &str =
    "</blockquote><script>window.__pwned=1</script>\"><img src=x onerror=\"window.__pwned=1\">";

/// Sign in (a wrong token first); a proposal made by a run arrives live
/// and renders its hostile rationale and arguments as text; the initiator
/// approving is refused (message on the page, `approval-decision` with
/// `accepted: false` in the log); an auditor and a service account are
/// offered no decision and refused by the API; another approver approves
/// with a hostile comment, the run completes and its page shows it.
#[test]
fn console_inbox_live_proposal_refusals_and_approval() {
    let s = served();
    with_browser(move |c| async move {
        let a = s.addr.as_str();
        // A wrong token is refused on the page.
        c.goto(&format!("http://{a}/")).await.unwrap();
        css(&c, "#token")
            .await
            .send_keys("cht_nobody_0_00")
            .await
            .unwrap();
        css(&c, "#signin").await.click().await.unwrap();
        until(
            &c,
            "refusal shown",
            "return document.getElementById('signin-msg').textContent.length > 0",
        )
        .await;
        assert!(
            text_of(&c, "#signin-msg")
                .await
                .to_lowercase()
                .contains("token")
        );
        screenshot(&c, "signin").await;

        sign_in(&c, a, &s.carol).await;
        css(&c, "#proposals .empty").await;
        until(
            &c,
            "live feed",
            "return document.getElementById('live').textContent === 'live'",
        )
        .await;
        // The token is in no URL.
        let url = c.current_url().await.unwrap().to_string();
        assert!(
            !url.contains(s.carol.strip_prefix("Bearer ").unwrap()),
            "{url}"
        );

        // carol starts a large refund (through the API, as a script would):
        // the page shows the proposal without a reload.
        let order = format!("A-7{HOSTILE}");
        let run = start_run(
            &s,
            &s.carol,
            json!({"order_id": order, "amount_cents": 20_000, "reason": HOSTILE}),
        );
        let v = wait_for(a, &s.carol, &run, |v| v["status"] != "running");
        assert_eq!(v["status"], "waiting-approval", "{v}");
        let proposal = v["proposal"].as_str().unwrap().to_string();
        let card = format!("#proposals .proposal[data-id='{proposal}']");
        css(&c, &card).await;
        let rationale = text_of(&c, &format!("{card} .rationale")).await;
        assert!(
            rationale.contains("<script>window.__pwned=1</script>"),
            "{rationale}"
        );
        assert!(rationale.contains("<img src=x onerror="), "{rationale}");
        let args = text_of(&c, &format!("{card} .args")).await;
        assert!(args.contains(&order), "{args}");
        assert!(args.contains("20000 (200.00)"), "{args}");
        let markup = c
            .execute(
                "return [document.querySelectorAll('main img, main script').length, typeof window.__pwned];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            markup,
            json!([0, "undefined"]),
            "hostile markup became elements"
        );
        // Who may decide: bob (carol started it, alice owns the bot, dave
        // lacks the role).
        let deciders = c
            .execute(
                &format!("return [...document.querySelectorAll(\"{card} dt\")].find(d => d.textContent === 'who may decide').nextElementSibling.textContent;"),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(deciders, json!("bob"));

        // carol, the initiator, is offered the decision (she holds the
        // role) and refused: the reason on the page, the attempt in the log.
        css(&c, &format!("{card} .approve"))
            .await
            .click()
            .await
            .unwrap();
        until(
            &c,
            "refusal shown",
            &format!("const m = document.querySelector(\"{card} .message.error\"); return !!m && m.textContent.includes('started the work');"),
        )
        .await;
        screenshot(&c, "inbox").await;
        let refused = audit(&s, &format!("type=approval-decision&proposal={proposal}"));
        assert!(
            refused
                .iter()
                .any(|e| e["by"] == "carol" && e["accepted"] == false),
            "{refused:?}"
        );

        // dave (an auditor) and shop (a service account) are offered no
        // decision, and the API refuses them too.
        for who in [&s.dave, &s.shop] {
            sign_out(&c).await;
            sign_in(&c, a, who).await;
            css(&c, &format!("{card} .noaction")).await;
            assert!(
                c.find(Locator::Css(&format!("{card} .approve")))
                    .await
                    .is_err()
            );
            assert!(
                c.find(Locator::Css(&format!("{card} .reject")))
                    .await
                    .is_err()
            );
            for verb in ["approve", "reject"] {
                let r = http(
                    a,
                    "POST",
                    &format!("/v1/proposals/{proposal}/{verb}"),
                    Some(who),
                    None,
                );
                assert_eq!(r.status, 403, "{verb}: {}", r.body);
            }
        }
        screenshot(&c, "inbox-auditor").await;
        let refused = audit(&s, &format!("type=approval-decision&proposal={proposal}"));
        for who in ["dave", "shop"] {
            assert!(
                refused
                    .iter()
                    .any(|e| e["by"] == who && e["accepted"] == false),
                "{who}: {refused:?}"
            );
        }

        // bob approves, with a comment made of markup: the run completes.
        sign_out(&c).await;
        sign_in(&c, a, &s.bob).await;
        css(&c, &format!("{card} textarea.comment"))
            .await
            .send_keys(HOSTILE)
            .await
            .unwrap();
        css(&c, &format!("{card} .approve"))
            .await
            .click()
            .await
            .unwrap();
        until(
            &c,
            "approval shown",
            &format!("const m = document.querySelector(\"{card} .message.ok\"); return !m ? document.querySelectorAll(\"{card}\").length === 0 : m.textContent.includes('executed');"),
        )
        .await;
        until(
            &c,
            "card gone (live)",
            &format!("return document.querySelectorAll(\"{card}\").length === 0;"),
        )
        .await;
        let v = wait_for(a, &s.bob, &run, |v| {
            v["status"] != "waiting-approval" && v["status"] != "running"
        });
        assert_eq!(v["status"], "completed", "{v}");

        // The run's page: its timeline, the decisions (the comment as text).
        c.goto(&format!("http://{a}/#/runs/{run}")).await.unwrap();
        until(&c, "run completed", "const s = document.getElementById('run-status'); return !!s && s.textContent === 'completed';").await;
        let page = text_of(&c, "#run").await;
        assert!(page.contains("refund"), "{page}");
        assert!(page.contains("<img src=x onerror="), "{page}");
        assert!(
            page.contains("separation") || page.contains("started the work"),
            "{page}"
        );
        let n = c
            .execute(
                "return document.querySelectorAll('main img, main script').length;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(n, json!(0));
        // Each attempt's host calls: the proposing call, then the approved
        // execution (executed, not replayed).
        let journal = c
            .execute(
                "return [...document.querySelectorAll('#run ol.journal li.call')].map(li => \
                 [li.dataset.function.includes('issue-refund'), li.dataset.decision, li.classList.contains('replayed')]);",
                vec![],
            )
            .await
            .unwrap();
        let journal = journal.as_array().unwrap();
        assert!(
            journal.contains(&json!([true, "propose", false])),
            "{journal:?}"
        );
        assert!(
            journal.contains(&json!([true, "allow", false])),
            "{journal:?}"
        );
        screenshot(&c, "run").await;

        // The runs list, filtered.
        c.goto(&format!("http://{a}/#/runs")).await.unwrap();
        css(&c, "#f-status")
            .await
            .select_by_value("completed")
            .await
            .unwrap();
        css(&c, "#f-initiator")
            .await
            .send_keys("carol")
            .await
            .unwrap();
        css(&c, "form.filters button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        until(
            &c,
            "filtered runs",
            &format!(
                "const t = document.getElementById('runs').textContent; return t.includes('{run}');"
            ),
        )
        .await;
        // A time filter the API refuses: the reason, naming the parameter.
        css(&c, "#f-from")
            .await
            .send_keys("last tuesday")
            .await
            .unwrap();
        css(&c, "#f-apply").await.click().await.unwrap();
        until(
            &c,
            "bad time refused",
            "const e = document.getElementById('runs-error'); return !!e && e.textContent.startsWith('from ');",
        )
        .await;
        // A window after the run: nothing; one around it: the run.
        css(&c, "#f-from").await.clear().await.unwrap();
        css(&c, "#f-from")
            .await
            .send_keys("9999-01-01")
            .await
            .unwrap();
        css(&c, "#f-apply").await.click().await.unwrap();
        until(
            &c,
            "empty window",
            "const e = document.getElementById('runs-count'); return !!e && e.textContent === '0 runs';",
        )
        .await;
        css(&c, "#f-from").await.clear().await.unwrap();
        css(&c, "#f-from")
            .await
            .send_keys("2020-01-01")
            .await
            .unwrap();
        css(&c, "#f-to")
            .await
            .send_keys("9999-12-31T00:00Z")
            .await
            .unwrap();
        css(&c, "#f-apply").await.click().await.unwrap();
        until(
            &c,
            "window with the run",
            &format!(
                "const t = document.getElementById('runs').textContent; return t.includes('{run}') && document.getElementById('runs-count').textContent === '1 runs';"
            ),
        )
        .await;
        screenshot(&c, "runs").await;
        let k = http(a, "GET", "/v1/kpi", Some(&s.bob), None).json();
        assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    });
}

/// An escalation: an auditor is offered no resolution and refused by the
/// API; a refund approver skips the step with an output and the run
/// completes. Then the audit table filtered by type with the chain's
/// status, a plugin's grants (writes marked) and the KPIs.
#[test]
fn console_escalation_audit_grants_and_kpis() {
    let s = served();
    with_browser(move |c| async move {
        let a = s.addr.as_str();
        // A refund without an amount fails fatally: escalated to a person.
        let run = start_run(&s, &s.carol, json!({"order_id": "A-3"}));
        let v = wait_for(a, &s.carol, &run, |v| {
            v["status"] != "running" && v["status"] != "retry-wait"
        });
        assert_eq!(v["status"], "escalated", "{v}");
        let esc = v["escalation"].as_str().unwrap().to_string();
        let card = format!("#escalations .escalation[data-id='{esc}']");

        sign_in(&c, a, &s.dave).await;
        css(&c, &format!("{card} .noaction")).await;
        assert!(
            c.find(Locator::Css(&format!("{card} .retry")))
                .await
                .is_err()
        );
        let r = http(
            a,
            "POST",
            &format!("/v1/escalations/{esc}/resolve"),
            Some(&s.dave),
            Some(&json!({"action": "fail"})),
        );
        assert_eq!(r.status, 403, "{}", r.body);

        sign_out(&c).await;
        sign_in(&c, a, &s.bob).await;
        // Skip without an output is refused on the page, before any request.
        css(&c, &format!("{card} .skip"))
            .await
            .click()
            .await
            .unwrap();
        until(&c, "skip needs output", &format!("const m = document.querySelector(\"{card} .message.error\"); return !!m && m.textContent.includes('JSON');")).await;
        css(&c, &format!("{card} textarea.output"))
            .await
            .send_keys(r#"{"order_id": "A-3", "refund_id": "manual-1"}"#)
            .await
            .unwrap();
        screenshot(&c, "escalation").await;
        css(&c, &format!("{card} .skip"))
            .await
            .click()
            .await
            .unwrap();
        until(
            &c,
            "escalation gone (live)",
            &format!("return document.querySelectorAll(\"{card}\").length === 0;"),
        )
        .await;
        let v = wait_for(a, &s.bob, &run, |v| {
            v["status"] != "escalated" && v["status"] != "running"
        });
        assert_eq!(v["status"], "completed", "{v}");
        assert_eq!(v["output"]["refund_id"], "manual-1", "{v}");
        let resolved = audit(&s, "type=escalation-resolved");
        assert!(
            resolved
                .iter()
                .any(|e| e["by"] == "dave" && e["accepted"] == false),
            "{resolved:?}"
        );
        assert!(
            resolved
                .iter()
                .any(|e| e["by"] == "bob" && e["accepted"] == true),
            "{resolved:?}"
        );

        // Audit: filter by type; the chain verifies.
        c.goto(&format!("http://{a}/#/audit")).await.unwrap();
        until(&c, "chain status", "const s = document.getElementById('chain'); return !!s && s.textContent === 'chain intact';").await;
        let verify = text_of(&c, "#verify").await;
        assert!(!verify.contains("null"), "{verify}");
        css(&c, "#a-type")
            .await
            .select_by_value("escalation-resolved")
            .await
            .unwrap();
        css(&c, "#a-apply").await.click().await.unwrap();
        until(
            &c,
            "filtered audit",
            "const t = [...document.querySelectorAll('#audit td .type')].map(e => e.textContent); \
             return t.length === 2 && t.every(x => x === 'escalation-resolved');",
        )
        .await;
        screenshot(&c, "audit").await;
        // The same type from a time after everything: no event.
        css(&c, "#a-from")
            .await
            .send_keys("9999-01-01")
            .await
            .unwrap();
        css(&c, "#a-apply").await.click().await.unwrap();
        until(
            &c,
            "audit by time",
            "const e = document.getElementById('audit-count'); return !!e && e.textContent === '0 events';",
        )
        .await;
        css(&c, "#a-from").await.clear().await.unwrap();
        css(&c, "#a-from")
            .await
            .send_keys("not a date")
            .await
            .unwrap();
        css(&c, "#a-apply").await.click().await.unwrap();
        until(
            &c,
            "bad time refused",
            "const e = document.getElementById('audit-error'); return !!e && e.textContent.startsWith('from ');",
        )
        .await;
        // The checkpoint download: the page fetches it with the token.
        css(&c, "#a-checkpoint").await.click().await.unwrap();
        until(
            &c,
            "checkpoint downloaded",
            "const m = document.getElementById('a-download-msg'); return !!m && m.textContent.startsWith('Downloaded charter-checkpoint-acme-refunds-');",
        )
        .await;
        css(&c, "#a-export-all").await.click().await.unwrap();
        until(
            &c,
            "log downloaded",
            "const m = document.getElementById('a-download-msg'); return !!m && m.textContent.startsWith('Downloaded charter-audit-acme-refunds.jsonl');",
        )
        .await;
        // The same checkpoint through the API with bob's token verifies
        // with the CLI.
        let r = http(a, "GET", "/v1/audit/checkpoint", Some(&s.bob), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let file = s.cwd.join("console-checkpoint.json");
        std::fs::write(&file, &r.body).unwrap();
        let out = charter(
            &["audit", "verify", "--checkpoint", file.to_str().unwrap()],
            &s.cwd,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));

        // Grants: the list, then one plugin's.
        c.goto(&format!("http://{a}/#/grants")).await.unwrap();
        css(&c, "#grants a[href='#/grants/refund-bot']")
            .await
            .click()
            .await
            .unwrap();
        let g = text_of(&c, ".plugin-grants[data-plugin='refund-bot']").await;
        assert!(g.contains("sha256:"), "{g}");
        assert!(g.contains("WRITE"), "{g}");
        assert!(
            g.contains("acme:payments/refunds.issue-refund") || g.contains("issue-refund"),
            "{g}"
        );
        assert!(g.contains("erin@acme.example"), "{g}");
        screenshot(&c, "grants").await;

        // KPIs: no unauthorized action; the charts over time carry the
        // counts the API gives (read from their data attributes).
        c.goto(&format!("http://{a}/#/kpi")).await.unwrap();
        assert_eq!(text_of(&c, "#unauthorized").await, "0");
        // The framework's table: the deployment's pattern and overall,
        // five dimensions, the figures GET /v1/kpi/framework gives.
        let fw = http(a, "GET", "/v1/kpi/framework", Some(&s.bob), None).json();
        let table = text_of(&c, "#kpi-framework").await;
        for want in [
            "refunds",
            "overall",
            "efficiency",
            "customer",
            "decision quality",
            "adoption",
            "risk",
            "unauthorized actions",
            "0 (target 0)",
        ] {
            assert!(table.contains(want), "{want}: {table}");
        }
        let cells = c
            .execute(
                "const rows = [...document.querySelectorAll('#kpi-framework tbody tr')]; \
                 return [rows.length, rows[0].querySelectorAll('td')[1].textContent, rows[0].querySelectorAll('td')[2].textContent, \
                   [...document.querySelectorAll('#kpi-framework thead th')].map((t) => t.textContent)];",
                vec![],
            )
            .await
            .unwrap();
        let runs = fw["patterns"]["refunds"]["efficiency"]["runs"].to_string();
        assert_eq!(
            cells,
            json!([
                10,
                runs,
                fw["overall"]["efficiency"]["runs"].to_string(),
                ["dimension", "measure", "refunds", "overall"]
            ]),
            "{fw}"
        );
        c.execute(
            "document.getElementById('kpi-framework-card').scrollIntoView(); return true;",
            vec![],
        )
        .await
        .unwrap();
        screenshot(&c, "kpi-framework").await;
        css(&c, "svg.chart").await;
        css(&c, "#chart-calls").await;
        let series = http(a, "GET", "/v1/kpi/series?bucket=hour", Some(&s.bob), None).json();
        let sum = |f: &str| {
            series["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b[f].as_u64().unwrap())
                .sum::<u64>()
        };
        let shown = c
            .execute(
                "const g = (id, k) => Number(document.getElementById(id).getAttribute('data-total-' + k)); \
                 const bars = (id, k) => [...document.querySelectorAll('#' + id + ' rect.bar[data-part=' + k + ']')].reduce((s, r) => s + Number(r.dataset.value), 0); \
                 return [g('chart-calls', 'allowed'), g('chart-calls', 'proposed'), g('chart-calls', 'denied'), \
                   bars('chart-calls', 'allowed'), g('chart-unauthorized', 'executed'), \
                   Number(document.getElementById('chart-calls').dataset.buckets), \
                   !!document.getElementById('chart-latency'), !!document.getElementById('chart-cycle'), !!document.getElementById('chart-handoff')];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            shown,
            json!([
                sum("calls_allowed"),
                sum("calls_proposed"),
                sum("calls_denied"),
                sum("calls_allowed"),
                0,
                24,
                true,
                true,
                true
            ]),
            "{series}"
        );
        // The escalated run was handed to people: the rate of its hour is 1.
        let handoff = c
            .execute(
                "return Number(document.getElementById('chart-handoff').getAttribute('data-total-rate'));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(handoff, json!(1), "{series}");
        // Per day: 30 buckets; a window too wide is refused, naming it.
        css(&c, "#k-bucket")
            .await
            .select_by_value("day")
            .await
            .unwrap();
        css(&c, "#k-apply").await.click().await.unwrap();
        until(&c, "daily buckets", "const s = document.getElementById('chart-calls'); return !!s && s.dataset.buckets === '30';").await;
        css(&c, "#k-from")
            .await
            .send_keys("1970-01-01")
            .await
            .unwrap();
        css(&c, "#k-apply").await.click().await.unwrap();
        until(
            &c,
            "window refused",
            "const e = document.getElementById('kpi-series-error'); return !!e && e.textContent.startsWith('from ');",
        )
        .await;
        css(&c, "#k-from").await.clear().await.unwrap();
        css(&c, "#k-bucket")
            .await
            .select_by_value("hour")
            .await
            .unwrap();
        css(&c, "#k-apply").await.click().await.unwrap();
        until(&c, "hourly buckets", "const s = document.getElementById('chart-calls'); return !!s && s.dataset.buckets === '24';").await;
        c.execute(
            "document.getElementById('kpi').scrollIntoView(); return true;",
            vec![],
        )
        .await
        .unwrap();
        screenshot(&c, "kpi").await;
        c.execute(
            "document.getElementById('kpi-series-card').scrollIntoView(); return true;",
            vec![],
        )
        .await
        .unwrap();
        screenshot(&c, "kpi-series").await;
    });
}

/// On a phone (390 CSS pixels wide): bob signs in and approves a
/// proposal with the keyboard alone (Tab to the button, Enter), the
/// focused control visibly outlined; nothing is wider than the screen,
/// and every input has a label.
#[test]
fn console_phone_sign_in_and_approve_by_keyboard() {
    let s = served();
    let run = start_run(
        &s,
        &s.carol,
        json!({"order_id": "A-9", "amount_cents": 20_000, "reason": "damaged"}),
    );
    let v = wait_for(&s.addr, &s.carol, &run, |v| v["status"] != "running");
    assert_eq!(v["status"], "waiting-approval", "{v}");
    let proposal = v["proposal"].as_str().unwrap().to_string();
    with_session(true, move |c| async move {
        let a = s.addr.as_str();
        sign_in(&c, a, &s.bob).await;
        let width = c
            .execute("return window.innerWidth;", vec![])
            .await
            .unwrap();
        assert_eq!(width, json!(390), "a phone's viewport");
        let card = format!("#proposals .proposal[data-id='{proposal}']");
        css(&c, &card).await;
        // The live inbox is announced; no input lacks a label; nothing
        // scrolls sideways.
        let layout = c
            .execute(
                "return [document.getElementById('proposals').getAttribute('aria-live'), \
                 [...document.querySelectorAll('main input, main textarea, main select')].filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).length, \
                 document.documentElement.scrollWidth <= window.innerWidth];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(layout, json!(["polite", 0, true]));
        // Keyboard only: type the comment, Tab to Approve, Enter.
        css(&c, &format!("{card} textarea.comment"))
            .await
            .send_keys("checked the photos\u{E004}")
            .await
            .unwrap();
        let focused = c
            .execute(
                "const e = document.activeElement; const st = getComputedStyle(e); \
                 return [e.classList.contains('approve'), st.outlineStyle, parseFloat(st.outlineWidth) >= 2];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            focused,
            json!([true, "solid", true]),
            "Tab reaches Approve, outlined"
        );
        screenshot(&c, "phone-inbox").await;
        c.active_element()
            .await
            .unwrap()
            .send_keys("\u{E007}")
            .await
            .unwrap();
        until(
            &c,
            "approved (card gone)",
            &format!("return document.querySelectorAll(\"{card}\").length === 0;"),
        )
        .await;
        let v = wait_for(a, &s.bob, &run, |v| {
            v["status"] != "waiting-approval" && v["status"] != "running"
        });
        assert_eq!(v["status"], "completed", "{v}");
        let decided = audit(&s, &format!("type=approval-decision&proposal={proposal}"));
        assert!(
            decided.iter().any(|e| e["by"] == "bob"
                && e["accepted"] == true
                && e["comment"] == "checked the photos"),
            "{decided:?}"
        );
        // The run's page, on the phone.
        c.goto(&format!("http://{a}/#/runs/{run}")).await.unwrap();
        until(&c, "run completed", "const s = document.getElementById('run-status'); return !!s && s.textContent === 'completed';").await;
        let wide = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(wide, json!(true), "the run page scrolls sideways");
        screenshot(&c, "phone-run").await;
    });
}

/// A plugin's versions on its grants page: the history the log records
/// and, for an operator only, the reviewer's diff of two versions (a
/// reader is offered none, and the API refuses it the diff).
#[test]
fn console_plugin_versions_and_diff() {
    let h = crate::hot::deployment();
    let cwd = h.dir.path().to_path_buf();
    let (child, addr) = crate::hot::start(&cwd);
    for v in ["fx-hot-v1", "fx-hot-v2"] {
        let file = crate::support::fixture(v);
        let out = crate::hot::as_(
            &h.ops,
            &[
                "plugins",
                "push",
                file.to_str().unwrap(),
                "--plugin",
                "stepper",
            ],
            &cwd,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let (v1, v2) = (
        crate::hot::digest_of("fx-hot-v1"),
        crate::hot::digest_of("fx-hot-v2"),
    );
    with_browser(move |c| async move {
        let a = addr.as_str();
        let page = format!("http://{a}/#/grants/stepper");
        sign_in(&c, a, &h.viewer).await;
        c.goto(&page).await.unwrap();
        until(
            &c,
            "the history",
            "return [...document.querySelectorAll('#versions td .type')].filter(e => e.textContent === 'plugin-activated').length === 2;",
        )
        .await;
        assert!(
            c.find(Locator::Css("#v-run")).await.is_err(),
            "no diff offered to a reader"
        );
        let r = http(
            a,
            "GET",
            &format!("/v1/plugins/stepper/diff?a={v1}&b={v2}"),
            Some(&h.viewer),
            None,
        );
        assert_eq!(r.status, 403, "{}", r.body);

        sign_in(&c, a, &h.ops).await;
        c.goto(&page).await.unwrap();
        css(&c, "#v-run").await.click().await.unwrap();
        until(
            &c,
            "the diff",
            "return !!document.querySelector('#v-diff ul.diff, #v-diff p.empty');",
        )
        .await;
        let d = text_of(&c, "#v-diff").await;
        assert!(d.contains(&v1[..23]) && d.contains(&v2[..23]), "{d}");
        c.execute(
            "document.getElementById('v-diff').scrollIntoView(false); return true;",
            vec![],
        )
        .await
        .unwrap();
        screenshot(&c, "versions").await;
    });
    crate::hot::stop(child);
}

// ---- without a browser: the page's headers, its script, the live feed ------------

/// A `GET /v1/events` request, its answer read through the returned reader.
fn open_stream(addr: &str, token: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\n\r\n"
    )
    .unwrap();
    BufReader::new(s)
}

/// The answer's head (status line and headers).
fn head_of(r: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            return head;
        }
        head.push_str(&line);
    }
}

/// Body lines up to and including the first `data:` line.
fn first_event(r: &mut BufReader<TcpStream>) -> String {
    let mut out = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        out.push_str(&line);
        if line.starts_with("data:") {
            break;
        }
    }
    out
}

/// The page is served with a strict policy (own script only, no frames,
/// no HTML from strings), carries no inline script or handler, and its
/// script assigns no HTML; the live feed needs a token (a refusal is
/// recorded), sends the log's sequence number, is bounded in number, and
/// does not hold up a stop.
#[test]
fn console_page_policy_and_live_feed_bounds() {
    let s = served();
    let a = s.addr.as_str();
    let r = http(a, "GET", "/", None, None);
    assert_eq!(r.status, 200);
    let head = r.head.to_ascii_lowercase();
    for want in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(head.contains(want), "{want} missing: {head}");
    }
    // No inline script, no inline handler: every script has a src.
    assert!(!r.body.contains("<script>"), "{}", r.body);
    let lower = r.body.to_ascii_lowercase();
    assert!(
        !lower.match_indices(" on").any(|(i, _)| lower[i + 3..]
            .split('=')
            .next()
            .is_some_and(|w| { !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()) })),
        "an inline handler: {}",
        r.body
    );
    let js = http(a, "GET", "/console/app.js", None, None);
    assert_eq!(js.status, 200);
    assert!(
        js.head
            .to_ascii_lowercase()
            .contains("content-type: text/javascript")
    );
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
    ] {
        assert!(!js.body.contains(sink), "app.js uses {sink}");
    }

    // The feed needs a token, and a refused one is recorded.
    let r = http(a, "GET", "/v1/events", None, None);
    assert_eq!(r.status, 401, "{}", r.body);
    let refused = audit(&s, "type=auth-refused");
    assert!(
        refused.iter().any(|e| e["route"] == "GET /v1/events"),
        "{refused:?}"
    );

    // A feed sends the current sequence number at once.
    let mut first = open_stream(a, &s.dave);
    let head = head_of(&mut first);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    let chunk = first_event(&mut first);
    assert!(chunk.contains("event: log"), "{chunk}");
    assert!(chunk.contains("\"seq\":"), "{chunk}");

    // At most MAX_STREAMS at once: one more is refused with 429.
    let mut open = vec![first];
    for _ in 1..MAX_STREAMS {
        let mut st = open_stream(a, &s.dave);
        assert!(head_of(&mut st).starts_with("HTTP/1.1 200"));
        open.push(st);
    }
    let mut extra = open_stream(a, &s.dave);
    let head = head_of(&mut extra);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // Closing one admits another (the host notices when it next writes
    // to it: a refused request moves the log, which every feed reports).
    drop(open.pop());
    let start = Instant::now();
    loop {
        assert_eq!(
            http(a, "GET", "/v1/runs", Some("Bearer cht_x_0_00"), None).status,
            401
        );
        std::thread::sleep(Duration::from_millis(300));
        let mut st = open_stream(a, &s.dave);
        if head_of(&mut st).starts_with("HTTP/1.1 200") {
            open.push(st);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a closed feed was never released"
        );
    }

    // SIGTERM with every feed open: the host still stops, cleanly.
    let mut s = s;
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "open feeds held up the stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    drop(open);
    let out = charter(&["audit", "verify"], &s.cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `charter_server::console::MAX_STREAMS` (the tests do not link the
/// server crate).
const MAX_STREAMS: usize = 32;

// ---- the API the console's filters, charts and downloads use --------------------

fn get(s: &Served, path: &str, token: &str) -> crate::up::Reply {
    http(&s.addr, "GET", path, Some(token), None)
}

/// A 400 whose message names `param`.
fn bad_request(s: &Served, path: &str, param: &str) {
    let r = get(s, path, &s.dave);
    assert_eq!(r.status, 400, "{path}: {}", r.body);
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(m.starts_with(param), "{path}: {m}");
    assert!(m.len() < 400, "{path}: an unbounded message: {m}");
}

/// Runs filtered by the API (workflow, initiator, time), a run's journal
/// (each attempt's host calls, executed or replayed), the KPIs per hour
/// and per day adding up to the table, the audit log by time, the export
/// and a signed checkpoint as downloads (the checkpoint verifies with the
/// CLI; an altered one does not), and who may list the approvers. Every
/// hostile parameter (bad dates, a reversed or huge window, a bucket that
/// is not one, control characters) is a 400 naming the parameter, before
/// any log is read.
#[test]
fn console_api_filters_series_journal_and_downloads() {
    let s = served();
    let a = s.addr.as_str();
    // A small refund completes; a large one waits for people, then bob
    // approves it (carol started both).
    let small = start_run(
        &s,
        &s.carol,
        json!({"order_id": "A-1", "amount_cents": 500}),
    );
    let v = wait_for(a, &s.carol, &small, |v| v["status"] != "running");
    assert_eq!(v["status"], "completed", "{v}");
    let large = start_run(
        &s,
        &s.carol,
        json!({"order_id": "A-2", "amount_cents": 20_000}),
    );
    let v = wait_for(a, &s.carol, &large, |v| v["status"] != "running");
    assert_eq!(v["status"], "waiting-approval", "{v}");
    let proposal = v["proposal"].as_str().unwrap().to_string();
    let r = http(
        a,
        "POST",
        &format!("/v1/proposals/{proposal}/approve"),
        Some(&s.bob),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = wait_for(a, &s.bob, &large, |v| {
        v["status"] != "running" && v["status"] != "waiting-approval"
    });
    assert_eq!(v["status"], "completed", "{v}");

    // ---- runs, filtered by the API
    let ids = |q: &str| -> Vec<String> {
        let r = get(&s, &format!("/v1/runs{q}"), &s.dave);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let mut v: Vec<String> = r.json()["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let mut both = vec![small.clone(), large.clone()];
    both.sort();
    assert_eq!(ids("?initiator=carol&workflow=refund"), both);
    assert_eq!(ids("?initiator=bob"), Vec::<String>::new());
    assert_eq!(ids("?workflow=nope"), Vec::<String>::new());
    assert_eq!(ids("?from=2020-01-01&to=9999-12-31T23:59Z"), both);
    assert_eq!(ids("?to=2020-01-01"), Vec::<String>::new());
    assert_eq!(ids("?from=9999-12-31"), Vec::<String>::new());
    let started = v["started_ms"].as_u64().unwrap();
    assert_eq!(
        ids(&format!("?from={started}&to={started}")),
        vec![large.clone()]
    );
    for (q, param) in [
        ("from=yesterday", "from"),
        ("from=2026-02-30", "from"),
        ("to=2026-11-30T25:00Z", "to"),
        ("to=99999999999999999999999", "to"),
        ("from=2026-11-30&to=2026-11-29", "from"),
        ("initiator=bob%0Aforged", "initiator"),
        ("workflow=", "workflow"),
    ] {
        bad_request(&s, &format!("/v1/runs?{q}"), param);
    }
    bad_request(
        &s,
        &format!("/v1/runs?initiator={}", "x".repeat(300)),
        "initiator",
    );

    // ---- a run's journal: one entry per attempt, in the history's order
    let rep = get(&s, &format!("/v1/runs/{large}"), &s.dave).json();
    let history = rep["history"].as_array().unwrap();
    let journal = rep["journal"]
        .as_array()
        .expect("runs show carries the journal");
    assert_eq!(journal.len(), history.len(), "{rep}");
    for (h, j) in history.iter().zip(journal) {
        assert_eq!(
            (&h["step"], &h["attempt"]),
            (&j["step"], &j["attempt"]),
            "{rep}"
        );
    }
    let calls: Vec<&Value> = journal
        .iter()
        .flat_map(|j| j["calls"].as_array().unwrap())
        .collect();
    let refund = |decision: &str| {
        calls.iter().any(|c| {
            c["function"].as_str().unwrap().contains("issue-refund") && c["decision"] == decision
        })
    };
    assert!(refund("propose"), "the proposing call: {rep}");
    assert!(refund("allow"), "the approved execution: {rep}");
    let executed = calls
        .iter()
        .find(|c| {
            c["decision"] == "allow" && c["function"].as_str().unwrap().contains("issue-refund")
        })
        .unwrap();
    assert_eq!(executed["replayed"], false, "{rep}");
    assert_eq!(executed["ok"], true, "{rep}");
    assert_eq!(executed["proposal"], proposal.as_str(), "{rep}");

    // ---- KPIs over time
    let k = get(&s, "/v1/kpi", &s.dave).json();
    let mut allowed = 0;
    let mut proposed = 0;
    for fns in k["calls"].as_object().unwrap().values() {
        for c in fns.as_object().unwrap().values() {
            allowed += c["allowed"].as_u64().unwrap();
            proposed += c["proposed"].as_u64().unwrap();
        }
    }
    assert!(allowed > 0 && proposed == 1, "{k}");
    for bucket in ["hour", "day"] {
        let r = get(&s, &format!("/v1/kpi/series?bucket={bucket}"), &s.dave);
        assert_eq!(r.status, 200, "{}", r.body);
        let series = r.json();
        let b = series["buckets"].as_array().unwrap();
        assert_eq!(b.len(), if bucket == "hour" { 24 } else { 30 }, "{series}");
        let sum = |f: &str| b.iter().map(|x| x[f].as_u64().unwrap()).sum::<u64>();
        assert_eq!(sum("calls_allowed"), allowed, "{bucket}");
        assert_eq!(sum("calls_proposed"), proposed, "{bucket}");
        assert_eq!(sum("runs_started"), 2, "{bucket}");
        assert_eq!(sum("runs_finished"), 2, "{bucket}");
        assert_eq!(sum("runs_handed_off"), 1, "{bucket}");
        assert_eq!(sum("proposals_resolved"), 1, "{bucket}");
        assert_eq!(sum("unauthorized_actions_executed"), 0, "{bucket}");
        let last = b.last().unwrap();
        assert_eq!(last["handoff_rate"], 0.5, "{series}");
        assert!(last["decision_latency_ms_p50"].is_u64(), "{series}");
        assert!(last["cycle_time_ms_p50"].is_u64(), "{series}");
    }
    // A window before anything happened: every bucket empty.
    let old = get(
        &s,
        "/v1/kpi/series?bucket=day&from=2020-01-01&to=2020-01-31",
        &s.dave,
    )
    .json();
    assert_eq!(old["buckets"].as_array().unwrap().len(), 31);
    assert!(
        old["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["calls_allowed"] == 0)
    );
    for (q, param) in [
        ("bucket=minute", "bucket"),
        ("bucket=3600000", "bucket"),
        ("bucket=hour%00", "bucket"),
        ("from=1970-01-01", "from"),
        ("bucket=day&from=0&to=253402300799999", "from"),
        ("from=2026-01-01T00:00:00.1234567890Z", "from"),
        ("to=now", "to"),
        ("from=2030-01-02&to=2030-01-01", "from"),
        ("from=9999-12-31", "from"),
    ] {
        bad_request(&s, &format!("/v1/kpi/series?{q}"), param);
    }

    // The CLI prints the same series.
    let out = charter(&["kpi", "--series", "day", "--json"], &s.cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["buckets"].as_array().unwrap().len(), 30, "{cli}");
    let out = charter(&["kpi", "--series", "hour"], &s.cwd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("24 buckets, one per hour"),
        "{}",
        text(&out)
    );
    let out = charter(&["kpi", "--series", "week"], &s.cwd);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out).contains("bucket \"week\" must be hour or day"),
        "{}",
        text(&out)
    );

    // ---- the audit log by time, and with a proposal
    let r = get(&s, "/v1/audit?from=9999-01-01", &s.dave).json();
    assert_eq!(r["events"].as_array().unwrap().len(), 0);
    let all = get(&s, "/v1/audit?from=2020-01-01", &s.dave).json();
    assert!(all["events"].as_array().unwrap().len() > 10);
    let t = all["events"][5]["time_ms"].as_u64().unwrap();
    let to = get(&s, &format!("/v1/audit?to={t}"), &s.dave).json();
    assert!(
        to["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["time_ms"].as_u64().unwrap() <= t)
    );
    let p = get(
        &s,
        &format!("/v1/audit?proposal={proposal}&from=2020-01-01"),
        &s.dave,
    )
    .json();
    assert!(
        p["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "approval-decision"),
        "{p}"
    );
    bad_request(&s, "/v1/audit?from=last-tuesday", "from");
    bad_request(&s, "/v1/audit?from=2026-01-02&to=2026-01-01", "from");

    // ---- the export: every record, one a line, as `audit export` writes
    let r = get(&s, "/v1/audit/export", &s.dave);
    assert_eq!(r.status, 200, "{}", r.body);
    let head = r.head.to_ascii_lowercase();
    assert!(
        head.contains(
            "content-disposition: attachment; filename=\"charter-audit-acme-refunds.jsonl\""
        ),
        "{head}"
    );
    assert!(head.contains("application/x-ndjson"), "{head}");
    let body = r.body.clone();
    let seqs: Vec<u64> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

    // ---- a checkpoint: downloaded with a reader's token, verified by the
    // CLI; altered, it fails
    let r = get(&s, "/v1/audit/checkpoint", &s.dave);
    assert_eq!(r.status, 200, "{}", r.body);
    let head = r.head.to_ascii_lowercase();
    assert!(
        head.contains(
            "content-disposition: attachment; filename=\"charter-checkpoint-acme-refunds-"
        ),
        "{head}"
    );
    let cp_text = r.body.clone();
    let cp: Value = serde_json::from_str(&cp_text).unwrap();
    assert_eq!(cp["deployment"], "acme-refunds");
    assert!(cp["seq"].as_u64().unwrap() >= *seqs.last().unwrap());
    let file = s.cwd.join("checkpoint.json");
    std::fs::write(&file, &cp_text).unwrap();
    let out = charter(
        &["audit", "verify", "--checkpoint", file.to_str().unwrap()],
        &s.cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut forged = cp.clone();
    forged["seq"] = json!(cp["seq"].as_u64().unwrap() - 1);
    std::fs::write(&file, forged.to_string()).unwrap();
    let out = charter(
        &["audit", "verify", "--checkpoint", file.to_str().unwrap()],
        &s.cwd,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a forged checkpoint verified: {}",
        text(&out)
    );
    for path in ["/v1/audit/checkpoint", "/v1/audit/export", "/v1/kpi/series"] {
        assert_eq!(http(a, "GET", path, None, None).status, 401, "{path}");
    }

    // ---- who may list the approvers: approvers and operators
    for (who, name) in [(&s.dave, "dave"), (&s.bob, "bob"), (&s.ops, "ops")] {
        let r = get(&s, "/v1/approvers", who);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert!(r.body.contains("\"carol\""), "{}", r.body);
    }
    assert_eq!(get(&s, "/v1/whoami", &s.dave).json()["approver"], true);
    assert_eq!(get(&s, "/v1/whoami", &s.shop).json()["approver"], false);
    let r = get(&s, "/v1/approvers", &s.shop);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains("carol"), "{}", r.body);
    let refused = audit(&s, "type=auth-refused");
    assert!(
        refused.iter().any(|e| e["route"] == "GET /v1/approvers"
            && e["identity"] == "shop"
            && e["reason"] == "missing-role"),
        "{refused:?}"
    );
}

/// `bash examples/patterns.sh`: the five patterns' examples one after
/// another, then the framework's table over the five deployments (one
/// `--config` each): a column per pattern with its phase's figures, overall
/// the sums, no unauthorized action anywhere. `charter report`'s page of the
/// same table opens in Chromium from a file:// URL (self-contained: nothing
/// else to load) and is screenshot for README (`target/console/report.png`).
#[test]
fn the_five_patterns_table_and_its_report_page() {
    for p in [
        "ops-probe",
        "ops-restart",
        "ops-page",
        "refund-triage",
        "service-desk",
        "service-desk-cases",
        "service-desk-sms",
        "policy-assistant",
        "edr-connector",
        "soc-score",
        "soc-respond",
        "payments-api",
        "fx-orders-tool",
    ] {
        crate::support::fixture(p);
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("patterns");
    let out = Command::new("bash")
        .arg(root().join("examples/patterns.sh"))
        .env("CHARTER_BIN", crate::support::charter_bin())
        .env("PATTERNS_WORK", &work)
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_TOKEN")
        .env_remove("CHARTER_SERVER")
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("framework.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = f["patterns"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "it-ops",
            "policy-assistant",
            "refunds",
            "security-ops",
            "service-desk"
        ],
        "{f}"
    );
    assert_eq!(f["deployments"].as_array().unwrap().len(), 5, "{f}");
    let p = |name: &str| &f["patterns"][name];
    // Phase 1: three alerts, retried; phase 2: two of three handed off;
    // phase 5: one proposal of two accepted. No unauthorized action.
    assert_eq!(p("it-ops")["efficiency"]["runs"], 3, "{f}");
    assert!(
        p("it-ops")["efficiency"]["retries"].as_u64().unwrap() >= 5,
        "{f}"
    );
    assert_eq!(p("service-desk")["efficiency"]["runs"], 3, "{f}");
    let handoff = p("service-desk")["customer"]["handoff_rate"]
        .as_f64()
        .unwrap();
    assert!((handoff - 2.0 / 3.0).abs() < 1e-9, "{f}");
    assert_eq!(
        p("refunds")["adoption"]["proposal_acceptance_rate"],
        0.5,
        "{f}"
    );
    assert_eq!(p("security-ops")["efficiency"]["runs"], 6, "{f}");
    let total: u64 = f["patterns"]
        .as_object()
        .unwrap()
        .values()
        .map(|d| {
            assert_eq!(d["risk"]["unauthorized_actions"], 0, "{f}");
            d["efficiency"]["runs"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(f["overall"]["efficiency"]["runs"], total, "{f}");
    assert_eq!(f["overall"]["risk"]["unauthorized_actions"], 0, "{f}");
    // The text table printed the same columns.
    assert!(
        t.contains("deployments folded: acme-it-ops, acme-service-desk"),
        "{t}"
    );

    // The report page, in the browser.
    let page = work.join("patterns.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );
    let url = format!("file://{}", page.display());
    with_browser(move |c| async move {
        c.goto(&url).await.unwrap();
        let h1 = text_of(&c, "h1").await;
        assert_eq!(h1, "KPIs of 5 deployments");
        let head = c
            .execute(
                "return [...document.querySelectorAll('table tr:first-child th')].map((t) => t.textContent);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            head,
            json!([
                "dimension",
                "measure",
                "it-ops",
                "policy-assistant",
                "refunds",
                "security-ops",
                "service-desk",
                "overall"
            ])
        );
        let bars = c
            .execute(
                "return document.querySelectorAll('svg rect').length;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(bars, json!(4 * 6), "four charts, a bar per column");
        screenshot(&c, "report").await;
    });
}
