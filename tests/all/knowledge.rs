//! `charter:host/knowledge`: corpora declared in `charter.toml`, granted
//! by name, confined to the deployment's directory; hostile queries and
//! `k`; the result replayed on a re-run; and the policy-assistant example
//! end to end, its citations checked against the corpus.

use std::path::Path;

use charter_audit::{Event, read_records};
use charter_runtime::CallError;
use serde_json::{Value, json};

use crate::support::*;

/// A corpus of `n` files under `dir/docs`, each with a passage about
/// receipts and one of its own.
fn write_corpus(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("docs/sub")).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("docs/sub/f{i:03}.md")),
            format!("# Receipts {i}\nKeep every receipt for claim {i}.\n\n# Topic {i}\nUnique word zeta{i}.\n"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("docs/hotels.md"),
        "# Hotels\nHotel stays are reimbursed up to 150 EUR per night.\n",
    )
    .unwrap();
}

const KNOWLEDGE: &str = r#"
[knowledge.docs]
dir = "docs"
[knowledge.other]
dir = "docs/sub"
[groups.search]
capabilities = ["charter:host/knowledge.search"]
knowledge = ["docs"]
"#;

fn knowledge_host(dir: &Path) -> charter_runtime::Host {
    write_corpus(dir, 40);
    let (h, _) = host(deployment(
        dir,
        3,
        &[("searcher", "fx-knowledge", &["search"], KNOWLEDGE)],
    ));
    h
}

fn events(h: &charter_runtime::Host) -> Vec<Event> {
    read_records(h.log().path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

#[test]
fn a_granted_corpus_is_searched_and_the_call_recorded() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let h = knowledge_host(dir.path());
    let input = json!({"corpus": "docs", "query": "hotel per night", "k": 2}).to_string();
    let out = rt.block_on(h.call("searcher", &input)).unwrap();
    let ps = out.output["passages"].as_array().unwrap();
    assert_eq!(ps[0]["source"], "hotels.md#Hotels", "{}", out.output);
    assert_eq!(
        ps[0]["text"],
        "Hotel stays are reimbursed up to 150 EUR per night."
    );
    assert!(ps[0]["score"].as_f64().unwrap() > 0.0);
    let evs = events(&h);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Call { function, args, .. }
        if function == "charter:host/knowledge@0.3.0#search"
            && args["corpus"] == "docs" && args["k"] == 2))
    );
}

/// SECURITY: hostile arguments — an ungranted corpus is denied, an
/// over-long query refused as a limit, `k` = 0 returns nothing and a huge
/// `k` is capped.
#[test]
fn hostile_searches_are_denied_refused_or_bounded() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let h = knowledge_host(dir.path());
    // Declared but not granted, undeclared, odd names: denied.
    for corpus in ["other", "nowhere", "docs/../other", "DOCS", ""] {
        let input = json!({"corpus": corpus, "query": "receipt"}).to_string();
        let err = rt.block_on(h.call("searcher", &input)).unwrap_err();
        assert!(matches!(err, CallError::Denied { .. }), "{corpus:?}: {err}");
        assert!(err.to_string().contains("is not granted"), "{err}");
    }
    // A 40 KiB query: a limit (exit 3), recorded by digest.
    let input = json!({"corpus": "docs", "query": "receipt ", "repeat": 5000}).to_string();
    let err = rt.block_on(h.call("searcher", &input)).unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("query"), "{err}");
    // k = 0: no passage.
    let input = json!({"corpus": "docs", "query": "receipt", "k": 0}).to_string();
    let out = rt.block_on(h.call("searcher", &input)).unwrap();
    assert_eq!(out.output["passages"], json!([]));
    // k = u32::MAX over 40 matching passages: capped at 32.
    let input = json!({"corpus": "docs", "query": "receipt", "k": u32::MAX}).to_string();
    let out = rt.block_on(h.call("searcher", &input)).unwrap();
    assert_eq!(out.output["passages"].as_array().unwrap().len(), 32);
}

/// SECURITY: a corpus must stay inside the deployment's directory: `..`
/// or an absolute `dir` is refused when the file is read, a `dir` that is
/// a link out of it stops the host's start; a symbolic link out of it
/// *inside* the corpus makes only that corpus unavailable (the host
/// starts, and a search of it returns the error naming the link).
#[cfg(unix)]
#[test]
fn a_corpus_escaping_the_deployment_directory_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.md"), "# S\nthe root password").unwrap();
    for bad in ["../x", "/etc"] {
        let toml = format!("[deployment]\nname = \"t\"\nphase = 3\n[knowledge.k]\ndir = {bad:?}\n");
        let err = charter_config::Deployment::parse(
            &toml,
            &dir.path().join("charter.toml"),
            charter_runtime::host_catalog(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("escapes the deployment directory"), "{err}");
    }
    std::fs::create_dir_all(dir.path().join("docs/sub")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.md"),
        dir.path().join("docs/leak.md"),
    )
    .unwrap();
    let d = deployment(
        dir.path(),
        3,
        &[("searcher", "fx-knowledge", &["search"], KNOWLEDGE)],
    );
    let (h, _) = host(d);
    let rt = rt();
    let input = json!({"corpus": "docs", "query": "password"}).to_string();
    let out = rt.block_on(h.call("searcher", &input)).unwrap();
    let err = out.output["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("unavailable") && err.contains("leak.md") && err.contains("outside"),
        "{}",
        out.output
    );
    assert!(!out.output.to_string().contains("root password"));
    drop(h);
    // `dir` itself a link out of the deployment: the host does not start.
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
    let d = deployment(
        dir.path(),
        3,
        &[(
            "searcher",
            "fx-knowledge",
            &["search"],
            &KNOWLEDGE.replace("dir = \"docs\"\n", "dir = \"out\"\n"),
        )],
    );
    let Err(err) = charter_runtime::Host::new(d, Default::default()) else {
        panic!("refused")
    };
    let err = err.to_string();
    assert!(
        err.contains("knowledge") && err.contains("escapes the deployment directory"),
        "{err}"
    );
}

/// SECURITY: a bad file in one corpus (here a FIFO named `x.md`, which
/// used to block the start forever, and a non-UTF-8 file) costs only that
/// corpus: the host starts, the other corpus is searched, and a search of
/// the bad one returns an error naming the file and the rule.
#[cfg(unix)]
#[test]
fn a_bad_corpus_file_costs_only_its_corpus() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path(), 3);
    std::fs::create_dir_all(dir.path().join("bad")).unwrap();
    let fifo = dir.path().join("bad/x.md");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let toml = r#"
[knowledge.docs]
dir = "docs"
[knowledge.bad]
dir = "bad"
[groups.search]
capabilities = ["charter:host/knowledge.search"]
knowledge = ["docs", "bad"]
"#;
    let (h, _) = host(deployment(
        dir.path(),
        3,
        &[("searcher", "fx-knowledge", &["search"], toml)],
    ));
    let search = |corpus: &str| {
        let input = json!({"corpus": corpus, "query": "hotel"}).to_string();
        rt.block_on(h.call("searcher", &input)).unwrap().output
    };
    assert_eq!(search("docs")["passages"][0]["source"], "hotels.md#Hotels");
    let out = search("bad");
    let err = out["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("x.md") && err.contains("regular file"),
        "{out}"
    );
    drop(h);
    // A non-UTF-8 file instead: the same, naming the rule.
    std::fs::remove_file(&fifo).unwrap();
    std::fs::write(&fifo, [0xff, 0xfe, 0x00]).unwrap();
    let (h, _) = host(deployment(
        dir.path(),
        3,
        &[("searcher", "fx-knowledge", &["search"], toml)],
    ));
    let input = json!({"corpus": "bad", "query": "hotel"}).to_string();
    let out = rt.block_on(h.call("searcher", &input)).unwrap().output;
    let err = out["error"].as_str().unwrap_or_default();
    assert!(err.contains("x.md") && err.contains("UTF-8"), "{out}");
}

#[test]
fn a_re_run_step_gets_the_recorded_passages() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path(), 3);
    let extra = format!(
        r#"{KNOWLEDGE}
[approvers.olga]
roles = ["operator"]
[workflows.ask]
[[workflows.ask.steps]]
id = "search"
plugin = "searcher"
input = {{ corpus = "docs", query = "hotel", then_fail = true }}
retry = {{ max_attempts = 3, initial_backoff_ms = 10 }}
on_failure = "fail"
"#
    );
    let (h, _) = host(deployment(
        dir.path(),
        3,
        &[("searcher", "fx-knowledge", &["search"], &extra)],
    ));
    let st = rt.block_on(h.run_workflow("ask", json!({}), None)).unwrap();
    assert_eq!(st.history.len(), 3, "{st:?}");
    let results: Vec<Value> = events(&h)
        .into_iter()
        .filter_map(|e| match e {
            Event::CallResult {
                function, result, ..
            } if function.contains("knowledge") => result,
            _ => None,
        })
        .collect();
    assert_eq!(
        results.len(),
        1,
        "searched once, replayed twice: {results:?}"
    );
    assert_eq!(results[0][0]["source"], "hotels.md#Hotels");
}

// ---- examples/policy-assistant ---------------------------------------------

fn example() -> std::path::PathBuf {
    root().join("examples/policy-assistant")
}

/// Whitespace collapsed: a passage joins its paragraph's lines.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Each citation of the answer is a real passage of the shipped corpus:
/// its file exists there, its heading is one of that file's, its text is
/// in that file under that heading, and the answer cites it.
#[test]
fn policy_assistant_cites_real_passages_of_its_corpus() {
    fixture("policy-assistant");
    let data = tempfile::tempdir().unwrap();
    // The example's own file, with its data directory moved to a temp one.
    let cfg = example().join("charter.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "data_dir = \"../../target/charter-data/policy-assistant\"",
        &format!("data_dir = {:?}", data.path().display().to_string()),
    );
    let cfg = example().join(format!(".test-{}.toml", std::process::id()));
    std::fs::write(&cfg, text).unwrap();
    let _cleanup = Remove(cfg.clone());
    let cases = [
        (
            "How much can I spend on a hotel per night in Paris?",
            "travel/hotels.md",
        ),
        (
            "How many weeks of parental leave do I get?",
            "leave/parental-leave.md",
        ),
        (
            "Do I need three quotes for a 20,000 EUR purchase?",
            "procurement/quotes.md",
        ),
        (
            "What should I do if I clicked a phishing link?",
            "security/",
        ),
    ];
    for (question, expected) in cases {
        let input = json!({ "question": question }).to_string();
        let out = charter(
            &[
                "call",
                "policy-assistant",
                "--json",
                "--input",
                &input,
                "--config",
                cfg.to_str().unwrap(),
            ],
            Path::new("/"),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let o = &v["output"];
        assert_eq!(o["grounded"], true, "{o}");
        let cites = o["citations"].as_array().unwrap();
        assert!(!cites.is_empty(), "{o}");
        assert!(
            cites[0]["source"].as_str().unwrap().starts_with(expected),
            "{question}: {o}"
        );
        for (i, c) in cites.iter().enumerate() {
            let source = c["source"].as_str().unwrap();
            let (file, heading) = source.split_once('#').unwrap();
            let body = std::fs::read_to_string(example().join("corpus").join(file))
                .unwrap_or_else(|e| panic!("{source}: {e}"));
            let section = body
                .split("\n#")
                .find(|s| s.trim_start_matches('#').trim_start().starts_with(heading))
                .unwrap_or_else(|| panic!("{source}: no heading {heading:?}"));
            let passage = c["text"].as_str().unwrap();
            assert!(
                squash(section).contains(passage),
                "{source}: {passage:?} is not in the corpus"
            );
            let answer = o["answer"].as_str().unwrap();
            assert!(
                answer.contains(&format!("{passage} [{}]", i + 1)),
                "{answer}"
            );
        }
    }
    // A question the corpus does not cover (one common word, "office",
    // matches weakly): no citation, not grounded.
    let input = json!({ "question": "Can I bring my dog to the office?" }).to_string();
    let out = charter(
        &[
            "call",
            "policy-assistant",
            "--json",
            "--input",
            &input,
            "--config",
            cfg.to_str().unwrap(),
        ],
        Path::new("/"),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"]["grounded"], false, "{v}");
    assert_eq!(v["output"]["citations"], json!([]));
}

/// The first object under `v` that has `key`.
fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) if m.contains_key(key) => Some(v),
        Value::Object(m) => m.values().find_map(|x| find_key(x, key)),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// The policy assistant served to an agent as the MCP tool `ask-policy`
/// (`charter mcp`, stdio, the agent's own token): listed read-only, and
/// its typed answer cites the same passages the step cites for the same
/// question; a question the corpus does not cover is not grounded.
#[test]
fn policy_assistant_answers_an_agent_over_mcp_as_the_step_does() {
    fixture("policy-assistant");
    fixture("policy-assistant-tool");
    let data = tempfile::tempdir().unwrap();
    let out = charter(
        &["tokens", "create", "staff-copilot", "--json"],
        data.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    let minted: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Tokens declared: every command proves who runs it, the step too.
    let out = charter(&["tokens", "create", "ann", "--json"], data.path());
    let ann: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(example().join("charter.toml"))
        .unwrap()
        .replace(
            "data_dir = \"../../target/charter-data/policy-assistant\"",
            &format!("data_dir = {:?}", data.path().display().to_string()),
        )
        .replace(
            "[agents.staff-copilot]\nroles = [\"staff\"]\ntokens = []",
            &format!(
                "[agents.staff-copilot]\nroles = [\"staff\"]\ntokens = [{:?}]",
                minted["hash"].as_str().unwrap()
            ),
        )
        + &format!(
            "\n[identities.ann]\ntokens = [{:?}]\n",
            ann["hash"].as_str().unwrap()
        );
    let cfg = example().join(format!(".test-mcp-{}.toml", std::process::id()));
    std::fs::write(&cfg, text).unwrap();
    let _cleanup = Remove(cfg.clone());
    let question = "How much can I spend on a hotel per night in Paris?";
    let input = json!({ "question": question }).to_string();
    let cfg_s = cfg.to_str().unwrap();
    let out = std::process::Command::new(charter_bin())
        .args(["call", "policy-assistant", "--json", "--input", &input])
        .args(["--config", cfg_s])
        .env("CHARTER_TOKEN", ann["token"].as_str().unwrap())
        .env_remove("CHARTER_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    let step: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut mcp = McpStdio::start(
        &["--config", cfg_s, "--agent", "staff-copilot"],
        Path::new("/"),
        minted["token"].as_str().unwrap(),
    );
    let list = mcp.ask(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let tools = list["result"]["tools"].as_array().unwrap();
    let tool = tools
        .iter()
        .find(|t| t["name"].as_str().unwrap().ends_with("ask-policy"))
        .unwrap_or_else(|| panic!("no ask-policy tool: {list}"));
    assert_eq!(tool["annotations"]["readOnlyHint"], true, "{tool}");
    let name = tool["name"].as_str().unwrap().to_string();
    let call = |id: u64, q: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": {"question": q}}})
    };
    let answered = mcp.ask(call(2, question));
    let uncovered = mcp.ask(call(3, "Can I bring my dog to the office?"));
    assert!(mcp.finish());

    assert_ne!(answered["result"]["isError"], true, "{answered}");
    let got = find_key(&answered["result"]["structuredContent"], "citations")
        .unwrap_or_else(|| panic!("no citations: {answered}"));
    assert_eq!(got["grounded"], true, "{got}");
    let cited = |v: &Value| -> Vec<(String, String)> {
        v["citations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["source"].as_str().unwrap().into(),
                    c["text"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert!(!cited(got).is_empty());
    assert_eq!(
        cited(got),
        cited(&step["output"]),
        "the step and the tool cite alike"
    );
    assert_eq!(got["answer"], step["output"]["answer"]);
    let none = find_key(&uncovered["result"]["structuredContent"], "citations")
        .unwrap_or_else(|| panic!("no answer: {uncovered}"));
    assert_eq!(none["grounded"], false, "{none}");
}

/// `bash examples/policy-assistant/run.sh` end to end: answers with
/// citations, and phase 3's refusal of a write group shown.
#[test]
fn policy_assistant_run_sh_passes_and_shows_the_phase_3_refusal() {
    fixture("policy-assistant");
    let out = std::process::Command::new("bash")
        .arg(example().join("run.sh"))
        .env("CHARTER_BIN", charter_bin())
        .env_remove("CHARTER_LOG")
        .output()
        .unwrap();
    let t = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("travel/hotels.md#Hotels"), "{t}");
    assert!(t.contains("220 EUR per night"), "{t}");
    assert!(t.contains("analysis-only"), "{t}");
    assert!(t.contains("answer-cache"), "{t}");
    assert!(t.contains("(exit code 2: refused by governance)"), "{t}");
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}

/// Removes a file when dropped.
struct Remove(std::path::PathBuf);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
