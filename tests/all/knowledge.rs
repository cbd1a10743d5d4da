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

// ---- embeddings -------------------------------------------------------------

/// How the stand-in embeddings endpoint answers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Embed {
    /// Meaning vectors for every input.
    Ok,
    /// One vector fewer than the inputs.
    WrongCount,
    /// The second vector one number longer.
    WrongDim,
    /// Python's `json.dumps` of a NaN: `NaN`, which is not JSON.
    NaN,
    /// A 3 MiB answer.
    Huge,
    /// Reads the request and never answers.
    Silent,
    /// 401, echoing the request's Authorization header.
    Denied,
    /// Answers the start's batches, fails every one-input request (a query).
    QueryFails,
}

/// What the stand-in saw: path, Authorization header, body.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>, Value)>>>;

/// The stand-in model's meanings: words of one meaning share a dimension,
/// any other word is hashed into the rest, so "newborn" is near
/// "parental" and "away" near "leave", which no word match can see.
const MEANINGS: &[&[&str]] = &[
    &["parent", "parents", "parental", "newborn", "baby", "child"],
    &["leave", "off", "away", "absence"],
    &[
        "hotel",
        "hotels",
        "lodging",
        "accommodation",
        "night",
        "stays",
    ],
    &["flight", "flights", "fly", "plane", "economy"],
    &["receipt", "receipts", "proof", "invoice"],
];

/// A deterministic bag-of-meanings vector of 16 numbers.
fn meaning_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 16];
    v[15] = 0.01;
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let w = w.to_lowercase();
        let i = MEANINGS
            .iter()
            .position(|m| m.contains(&w.as_str()))
            .unwrap_or_else(|| {
                let h = w.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x100000001b3)
                });
                MEANINGS.len() + (h % (15 - MEANINGS.len() as u64)) as usize
            });
        v[i] += 1.0;
    }
    v
}

/// A loopback OpenAI-compatible `/v1/embeddings` stand-in answering as
/// `mode`, on threads of its own (the host embeds at start on its own
/// thread, before any test runtime runs).
fn embeddings_server(mode: Embed) -> (u16, Seen) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Default::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut stream) = stream else { return };
            let s = s.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let auth = header("authorization");
                s.lock().unwrap().push((path, auth.clone(), body.clone()));
                let inputs: Vec<String> = body["input"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|i| i.as_str().unwrap_or("").to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let answer = |status: &str, text: String| {
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    )
                };
                let data = |vs: Vec<Vec<f32>>| {
                    json!({"object": "list", "data": vs.into_iter().enumerate()
                        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
                        .collect::<Vec<_>>()})
                    .to_string()
                };
                let vectors: Vec<Vec<f32>> = inputs.iter().map(|t| meaning_vector(t)).collect();
                let reply = match mode {
                    Embed::Ok => answer("200 OK", data(vectors)),
                    Embed::QueryFails if inputs.len() > 1 => answer("200 OK", data(vectors)),
                    Embed::QueryFails => answer(
                        "500 Internal Server Error",
                        "{\"error\": \"model overloaded\"}".into(),
                    ),
                    Embed::WrongCount => answer("200 OK", data(vectors[1..].to_vec())),
                    Embed::WrongDim => {
                        let mut vs = vectors;
                        vs[1].push(1.0);
                        answer("200 OK", data(vs))
                    }
                    Embed::NaN => {
                        let text = data(vectors);
                        assert!(text.contains("\"embedding\":["), "{text}");
                        let text = text.replacen("\"embedding\":[", "\"embedding\":[NaN,", 1);
                        answer("200 OK", text)
                    }
                    Embed::Huge => {
                        let big = format!(
                            "{{\"data\": [{{\"embedding\": [{}0]}}]}}",
                            "0.123456789,".repeat(300_000)
                        );
                        answer("200 OK", big)
                    }
                    Embed::Denied => answer(
                        "401 Unauthorized",
                        format!("{{\"error\": \"bad key: {}\"}}", auth.unwrap_or_default()),
                    ),
                    Embed::Silent => {
                        std::thread::sleep(std::time::Duration::from_secs(10));
                        return;
                    }
                };
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    (port, seen)
}

/// A corpus no word of "newborn baby time away" is in.
fn write_meaning_corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    for (file, text) in [
        (
            "hotels.md",
            "# Hotels\nHotel stays are reimbursed up to 150 EUR per night.\n",
        ),
        (
            "leave.md",
            "# Parental leave\nParents take sixteen weeks of paid leave.\n",
        ),
        (
            "flights.md",
            "# Flights\nFlights under six hours are booked in economy.\n",
        ),
        (
            "receipts.md",
            "# Receipts\nKeep every receipt for a claim.\n",
        ),
    ] {
        std::fs::write(dir.join("docs").join(file), text).unwrap();
    }
    std::fs::write(dir.join("embed-key"), "sk-stand-in-s3cr3t\n").unwrap();
}

/// Two corpora over one directory: `meaning` ranked by the stand-in's
/// embeddings (with an API key), `words` by BM25.
fn embeddings_toml(port: u16, timeout_ms: u64, extra: &str) -> String {
    format!(
        r#"
[secrets.embed-key]
file = "embed-key"
[knowledge.meaning]
dir = "docs"
embeddings = {{ base_url = "http://127.0.0.1:{port}/v1", model = "stand-in", api_key_secret = "embed-key", timeout_ms = {timeout_ms} }}
[knowledge.words]
dir = "docs"
[groups.search]
capabilities = ["charter:host/knowledge.search"]
knowledge = ["meaning", "words"]
{extra}"#
    )
}

fn embeddings_host(dir: &Path, port: u16, timeout_ms: u64, extra: &str) -> charter_runtime::Host {
    write_meaning_corpus(dir);
    let (h, _) = host(deployment(
        dir,
        3,
        &[(
            "searcher",
            "fx-knowledge",
            &["search"],
            &embeddings_toml(port, timeout_ms, extra),
        )],
    ));
    h
}

/// With `embeddings`, a corpus is ranked by meaning through the operator's
/// endpoint: the passages embedded at start in one batch (heading and
/// text, with the key as a bearer token), the query at search; a passage
/// sharing no word with the question is found, where BM25 over the same
/// files finds nothing. The result is journaled and stands in on replay
/// (the endpoint sees the query once over three attempts), and the key
/// is nowhere in the log.
#[test]
fn embeddings_rank_a_corpus_by_meaning_through_the_operators_endpoint() {
    let rt = rt();
    let (port, seen) = embeddings_server(Embed::Ok);
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[approvers.olga]
roles = ["operator"]
[workflows.ask]
[[workflows.ask.steps]]
id = "search"
plugin = "searcher"
input = { corpus = "meaning", query = "newborn baby time away", then_fail = true }
retry = { max_attempts = 3, initial_backoff_ms = 10 }
on_failure = "fail"
"#;
    let h = embeddings_host(dir.path(), port, 5_000, extra);
    let search = |corpus: &str, query: &str, k: u32| {
        let input = json!({"corpus": corpus, "query": query, "k": k}).to_string();
        rt.block_on(h.call("searcher", &input)).unwrap().output
    };
    let out = search("meaning", "newborn baby time away", 2);
    let ps = out["passages"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(ps.len(), 2, "{out}");
    assert_eq!(ps[0]["source"], "leave.md#Parental leave", "{out}");
    assert_eq!(ps[0]["text"], "Parents take sixteen weeks of paid leave.");
    let (s0, s1) = (
        ps[0]["score"].as_f64().unwrap(),
        ps[1]["score"].as_f64().unwrap(),
    );
    assert!(
        s0 > s1 && s0 <= 1.0 + 1e-6 && s1 >= -1.0,
        "cosine, best first: {out}"
    );
    // BM25 over the same files: no word in common, nothing found.
    assert_eq!(
        search("words", "newborn baby time away", 2)["passages"],
        json!([])
    );
    // Another question, by meaning too.
    let out = search("meaning", "lodging accommodation", 1);
    assert_eq!(out["passages"][0]["source"], "hotels.md#Hotels", "{out}");

    let requests = seen.lock().unwrap().clone();
    let (path, auth, start) = &requests[0];
    assert_eq!(path, "/v1/embeddings");
    assert_eq!(auth.as_deref(), Some("Bearer sk-stand-in-s3cr3t"));
    assert_eq!(start["model"], "stand-in");
    let inputs = start["input"].as_array().unwrap();
    assert_eq!(inputs.len(), 4, "every passage in one batch: {start}");
    assert!(
        inputs.contains(&json!(
            "Parental leave\nParents take sixteen weeks of paid leave."
        )),
        "{start}"
    );
    assert_eq!(requests[1].2["input"], json!(["newborn baby time away"]));
    assert_eq!(
        requests.len(),
        3,
        "one start batch, two queries (BM25 sends none)"
    );

    // A re-run step gets the recorded passages: searched once, replayed twice.
    let st = rt.block_on(h.run_workflow("ask", json!({}), None)).unwrap();
    assert_eq!(st.history.len(), 3, "{st:?}");
    assert_eq!(seen.lock().unwrap().len(), 4, "the query was sent once");
    let evs = events(&h);
    let results: Vec<Value> = evs
        .iter()
        .filter_map(|e| match e {
            Event::CallResult {
                function, result, ..
            } if function.contains("knowledge") => result.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        results.len(),
        1,
        "searched once, replayed twice: {results:?}"
    );
    assert_eq!(results[0][0]["source"], "leave.md#Parental leave");
    let log = std::fs::read(h.log().path()).unwrap();
    assert!(
        !log.windows(6).any(|w| w == b"s3cr3t"),
        "the API key is not in the log"
    );
}

/// SECURITY: an embeddings endpoint that is down, silent, or answers
/// wrongly (too few vectors, mixed dimensions, NaN, a huge body, 401
/// echoing the key) costs only its corpus: the host starts, a search of
/// that corpus returns an error naming the corpus, the endpoint, what was
/// wrong and the fix (never the key), and the BM25 corpus is searched.
#[test]
fn a_failing_embeddings_endpoint_costs_only_its_corpus() {
    let rt = rt();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (None, "failed"),
        // Cut by the connection's read timeout or the whole request's.
        (Some(Embed::Silent), "timeout"),
        (Some(Embed::WrongCount), "3 embeddings for 4 inputs"),
        (Some(Embed::WrongDim), "where the others have 16"),
        (Some(Embed::NaN), "not an embeddings list"),
        (Some(Embed::Huge), "over"),
        (Some(Embed::Denied), "401"),
    ];
    for (mode, says) in cases {
        let port = mode.map_or(down, |m| embeddings_server(m).0);
        let dir = tempfile::tempdir().unwrap();
        let h = embeddings_host(dir.path(), port, 300, "");
        let input = json!({"corpus": "meaning", "query": "newborn baby"}).to_string();
        let out = rt.block_on(h.call("searcher", &input)).unwrap().output;
        let err = out["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode:?}: {out}"));
        assert!(
            err.contains("knowledge corpus \"meaning\" is unavailable")
                && err.contains(&format!("http://127.0.0.1:{port}/v1/embeddings"))
                && err.contains(says)
                && err.contains("restart the host"),
            "{mode:?}: {err}"
        );
        assert!(!err.contains("s3cr3t"), "{mode:?}: the key leaked: {err}");
        let input = json!({"corpus": "words", "query": "hotel"}).to_string();
        let out = rt.block_on(h.call("searcher", &input)).unwrap().output;
        assert_eq!(
            out["passages"][0]["source"], "hotels.md#Hotels",
            "{mode:?}: {out}"
        );
    }
}

/// A query the endpoint fails to embed is a clear error to the step (no
/// panic, the host goes on); `k` = 0 and a blank query send nothing.
#[test]
fn a_query_the_endpoint_fails_is_an_error_to_the_step() {
    let rt = rt();
    let (port, seen) = embeddings_server(Embed::QueryFails);
    let dir = tempfile::tempdir().unwrap();
    let h = embeddings_host(dir.path(), port, 5_000, "");
    let search = |query: &str, k: u32| {
        let input = json!({"corpus": "meaning", "query": query, "k": k}).to_string();
        rt.block_on(h.call("searcher", &input)).unwrap().output
    };
    let out = search("newborn baby", 3);
    let err = out["error"].as_str().unwrap_or_else(|| panic!("{out}"));
    assert!(
        err.contains("knowledge corpus \"meaning\": embedding the query")
            && err.contains("500")
            && err.contains("model overloaded"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
    let sent = seen.lock().unwrap().len();
    assert_eq!(search("newborn baby", 0)["passages"], json!([]));
    assert_eq!(search("   ", 3)["passages"], json!([]));
    assert_eq!(
        seen.lock().unwrap().len(),
        sent,
        "nothing sent for k = 0 or a blank query"
    );
    // The host goes on: BM25 still answers.
    let input = json!({"corpus": "words", "query": "flights"}).to_string();
    let out = rt.block_on(h.call("searcher", &input)).unwrap().output;
    assert_eq!(out["passages"][0]["source"], "flights.md#Flights", "{out}");
}

// ---- the Python, JavaScript and C SDKs ---------------------------------------

/// The Python, JavaScript and C knowledge fixtures (plugins/<lang>/knowledge,
/// built by plugins/build.sh: knowledge imported at 0.3.0 and nothing
/// else) search a granted corpus and get the passages the Rust fixture
/// gets, in order with their scores; an unavailable corpus is the host's
/// error to the step; an ungranted corpus is denied.
#[test]
fn every_language_searches_a_granted_corpus() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path(), 3);
    std::fs::create_dir_all(dir.path().join("bad")).unwrap();
    std::fs::write(dir.path().join("bad/x.md"), [0xff, 0xfe]).unwrap();
    let toml = r#"
[knowledge.docs]
dir = "docs"
[knowledge.bad]
dir = "bad"
[knowledge.other]
dir = "docs/sub"
[groups.search]
capabilities = ["charter:host/knowledge.search"]
knowledge = ["docs", "bad"]
"#;
    let (rust, _) = host(deployment(
        dir.path(),
        3,
        &[("searcher", "fx-knowledge", &["search"], toml)],
    ));
    let query = json!({"corpus": "docs", "query": "receipt for claim 1 hotel", "k": 4}).to_string();
    let want = rt.block_on(rust.call("searcher", &query)).unwrap().output;
    assert_eq!(want["passages"].as_array().map(Vec::len), Some(4), "{want}");
    drop(rust);
    for lang in ["python", "js", "c"] {
        let wasm = language_build(lang, "knowledge");
        let data = tempfile::tempdir().unwrap();
        let text = format!(
            "[deployment]\nname = \"t\"\nphase = 3\ndata_dir = \"{}\"\n{toml}\n[plugins.searcher]\npath = \"{}\"\ngroups = [\"search\"]\n",
            data.path().display(),
            wasm.display()
        );
        let d = charter_config::Deployment::parse(
            &text,
            &dir.path().join("charter.toml"),
            charter_runtime::host_catalog(),
        )
        .unwrap_or_else(|e| panic!("{lang}: {e}"));
        let (h, _) = host(d);
        let p = rt.block_on(h.load("searcher")).unwrap();
        let imports: Vec<String> = p
            .inspection
            .imports
            .iter()
            .filter(|i| i.interface.starts_with("charter:host/"))
            .map(|i| i.interface.clone())
            .collect();
        assert_eq!(imports, ["charter:host/knowledge@0.3.0"], "{lang}");
        let got = rt
            .block_on(h.call("searcher", &query))
            .unwrap_or_else(|e| panic!("{lang}: {e}"))
            .output;
        let (got_ps, want_ps) = (got["passages"].as_array(), want["passages"].as_array());
        let (got_ps, want_ps) = (
            got_ps.unwrap_or_else(|| panic!("{lang}: {got}")),
            want_ps.unwrap(),
        );
        assert_eq!(got_ps.len(), want_ps.len(), "{lang}: {got}");
        for (g, w) in got_ps.iter().zip(want_ps) {
            assert_eq!(g["source"], w["source"], "{lang}: {got}");
            assert_eq!(g["text"], w["text"], "{lang}: {got}");
            let (gs, ws) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
            assert!(
                (gs - ws).abs() < 1e-4 * ws.abs().max(1.0),
                "{lang}: {gs} vs {ws}"
            );
        }
        // An unavailable corpus: the host's error, as the step's output.
        let input = json!({"corpus": "bad", "query": "x"}).to_string();
        let out = rt.block_on(h.call("searcher", &input)).unwrap().output;
        let err = out["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{lang}: {out}"));
        assert!(
            err.contains("unavailable") && err.contains("UTF-8"),
            "{lang}: {err}"
        );
        // k = 0: none.
        let input = json!({"corpus": "docs", "query": "receipt", "k": 0}).to_string();
        let out = rt.block_on(h.call("searcher", &input)).unwrap().output;
        assert_eq!(out["passages"], json!([]), "{lang}");
        // Declared but not granted: denied before the plugin sees anything.
        let input = json!({"corpus": "other", "query": "receipt"}).to_string();
        let err = rt.block_on(h.call("searcher", &input)).unwrap_err();
        assert!(matches!(err, CallError::Denied { .. }), "{lang}: {err}");
    }
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
