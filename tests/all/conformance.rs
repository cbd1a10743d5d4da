//! One contract, every language: the data-driven cases in
//! tests/conformance/*.json run against the Rust, Python, JavaScript and C
//! builds of the same plugins (`refund-triage`, `hostile`), plus what the
//! compile cache and `charter inspect` promise for large language runtimes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use charter_runtime::{CallError, Host, HostOptions};
use charter_store::{MemStore, Store};
use serde_json::Value;

use crate::support::*;

const LANGS: [&str; 4] = ["rust", "python", "js", "c"];

/// One compile cache for the whole suite: a Python or JavaScript component
/// compiles once, later hosts load the cached artifact.
fn shared_cache() -> PathBuf {
    root().join("target/charter-test-cache")
}

struct Case {
    name: String,
    spec: Value,
}

fn cases() -> Vec<Case> {
    let dir = root().join("tests/conformance");
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let spec: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", p.display()));
            Case {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                spec,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(cases.len() >= 10, "only {} conformance cases", cases.len());
    cases
}

/// JSON equality where numbers compare by value (`1` equals `1.0`: JSON
/// does not tell them apart, and JavaScript prints `1.0` as `1`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// A deployment with one plugin entry per case, all on `lang`'s builds.
fn deployment_for(lang: &str, cases: &[Case], dir: &Path) -> charter_config::Deployment {
    let mut toml = format!(
        "[deployment]\nname = \"conformance-{lang}\"\nphase = 4\ndata_dir = \"{}\"\n{GROUPS}\n",
        dir.join("data").display()
    );
    for case in cases {
        let s = &case.spec;
        let plugin = s["plugin"].as_str().expect("case.plugin");
        let groups: Vec<String> = s["groups"]
            .as_array()
            .map(|g| g.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default();
        let limits: Vec<String> = s["limits"]
            .as_object()
            .map(|l| l.iter().map(|(k, v)| format!("{k} = {v}")).collect())
            .unwrap_or_default();
        toml.push_str(&format!(
            "[plugins.{}]\npath = \"{}\"\ngroups = [{}]\nlimits = {{ {} }}\n",
            case.name,
            language_build(lang, plugin).display(),
            groups.join(", "),
            limits.join(", ")
        ));
    }
    charter_config::Deployment::parse(
        &toml,
        &dir.join("charter.toml"),
        charter_runtime::host_catalog(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// Check one case's result; the problems found, if any.
fn check(case: &Case, result: Result<charter_runtime::CallOutcome, CallError>) -> Vec<String> {
    let expect = &case.spec["expect"];
    let mut problems = Vec::new();
    match (result, expect.get("error")) {
        (Ok(out), None) => {
            if let Some(want) = expect.get("output")
                && !json_eq(&out.output, want)
            {
                problems.push(format!("output {} != expected {want}", out.output));
            }
            let logs: Vec<Value> = out
                .logs
                .iter()
                .map(|l| serde_json::to_value(l).unwrap())
                .collect();
            for want in expect["logs"].as_array().into_iter().flatten() {
                let found = logs.iter().any(|l| {
                    want.as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| l.get(k) == Some(v))
                });
                if !found {
                    problems.push(format!(
                        "log line {want} missing; logs: {}",
                        Value::Array(logs.clone())
                    ));
                }
            }
        }
        (Ok(out), Some(_)) => problems.push(format!("succeeded with {}", out.output)),
        (Err(e), None) => problems.push(format!("failed: {e}")),
        (Err(e), Some(want)) => {
            let msg = e.to_string();
            if let Some(kind) = want["kind"].as_str()
                && e.kind() != kind
            {
                problems.push(format!("kind {} != {kind}: {msg}", e.kind()));
            }
            if let Some(code) = want["exit_code"].as_i64()
                && i64::from(e.exit_code()) != code
            {
                problems.push(format!("exit code {} != {code}: {msg}", e.exit_code()));
            }
            if let Some(limit) = want["limit"].as_str() {
                let got = match &e {
                    CallError::Limit { kind, .. } => serde_json::to_value(kind).unwrap(),
                    _ => Value::Null,
                };
                if got != limit {
                    problems.push(format!("limit {got} != {limit}: {msg}"));
                }
            }
            if let Some(retryable) = want["retryable"].as_bool() {
                match &e {
                    CallError::Step { retryable: r, .. } if *r == retryable => {}
                    _ => problems.push(format!(
                        "not a step-error with retryable={retryable}: {msg}"
                    )),
                }
            }
            for s in want["contains"].as_array().into_iter().flatten() {
                let s = s.as_str().unwrap();
                if !msg.contains(s) {
                    problems.push(format!("message lacks {s:?}: {msg}"));
                }
            }
            if let Some(n) = want["lines"].as_u64()
                && msg.lines().count() as u64 != n
            {
                problems.push(format!(
                    "{} message lines, expected {n}: {msg}",
                    msg.lines().count()
                ));
            }
        }
    }
    problems
}

/// Run every case against `lang`'s builds; each case is its own plugin
/// entry (own grants and limits) in one deployment.
fn conformance(lang: &str) {
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let host = Host::new(
        deployment_for(lang, &cases, dir.path()),
        HostOptions {
            store: Some(store.clone()),
            cache_dir: Some(shared_cache()),
            ..Default::default()
        },
    )
    .expect("host");
    let rt = rt();
    let mut failures = BTreeMap::new();
    for case in &cases {
        let seeds = case.spec["kv"].as_object().cloned().unwrap_or_default();
        for (k, v) in seeds {
            rt.block_on(host.operator_kv_set(&case.name, &k, v.as_str(), "conformance"))
                .unwrap();
        }
        let input = case.spec["input"].to_string();
        let result = rt.block_on(host.call(&case.name, &input));
        let problems = check(case, result);
        eprintln!(
            "{lang:>6} {:<24} {}",
            case.name,
            if problems.is_empty() { "ok" } else { "FAILED" }
        );
        if !problems.is_empty() {
            failures.insert(case.name.clone(), problems);
        }
    }
    assert!(
        failures.is_empty(),
        "{lang}: {} of {} conformance cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .map(|(c, p)| format!(
                "  {c} ({}):\n    {}",
                case_about(&cases, c),
                p.join("\n    ")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn case_about(cases: &[Case], name: &str) -> String {
    cases
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.spec["about"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn conformance_rust() {
    conformance("rust");
}

#[test]
fn conformance_python() {
    conformance("python");
}

#[test]
fn conformance_js() {
    conformance("js");
}

#[test]
fn conformance_c() {
    conformance("c");
}

/// `charter inspect` tells real capabilities from the inert WASI baseline:
/// each build of the example asks for exactly kv.get, llm.classify and
/// log.write; whatever WASI its language runtime imports is baseline.
#[test]
fn inspect_separates_capabilities_from_the_wasi_baseline() {
    for lang in LANGS {
        let path = language_build(lang, "refund-triage");
        let out = charter(
            &["inspect", path.to_str().unwrap(), "--json"],
            Path::new("/"),
        );
        assert_eq!(out.status.code(), Some(0), "{lang}: {}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["world"], "charter:plugin/step@0.1.0", "{lang}: {v}");
        let mut capabilities = Vec::new();
        let mut baseline = 0;
        for import in v["imports"].as_array().unwrap() {
            let iface = import["interface"].as_str().unwrap();
            match import["class"].as_str().unwrap() {
                "capability" => {
                    assert!(iface.starts_with("charter:host/"), "{lang}: {import}");
                    for f in import["functions"].as_array().unwrap() {
                        let bare = iface.trim_start_matches("charter:host/");
                        let bare = bare.split('@').next().unwrap();
                        capabilities.push(format!("{bare}.{}", f.as_str().unwrap()));
                    }
                }
                "wasi-baseline" => {
                    assert!(iface.starts_with("wasi:"), "{lang}: {import}");
                    assert!(!iface.starts_with("wasi:http/"), "{lang}: {import}");
                    baseline += 1;
                }
                "types-only" => assert!(
                    import["functions"].as_array().unwrap().is_empty(),
                    "{lang}: {import}"
                ),
                other => panic!("{lang}: unknown class {other}: {import}"),
            }
        }
        capabilities.sort();
        assert_eq!(
            capabilities,
            ["kv.get", "llm.classify", "log.write"],
            "{lang}: {v}"
        );
        eprintln!(
            "{lang:>6}: {} bytes, capabilities {capabilities:?}, {baseline} wasi-baseline interfaces",
            v["size"]
        );
        if lang == "python" || lang == "js" {
            assert!(baseline > 0, "{lang}: a language runtime imports WASI: {v}");
        }
    }
}

/// Artifacts in a compile cache directory (wasmtime's, keyed by the
/// component's bytes and the engine configuration), with their
/// modification times; usage-statistics files left out.
fn artifacts(dir: &Path) -> BTreeMap<PathBuf, std::time::SystemTime> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".stats") {
                out.insert(p.clone(), p.metadata().unwrap().modified().unwrap());
            }
        }
    }
    out
}

/// A large Python component compiles once, off the async threads: on a
/// single-threaded runtime a small plugin keeps answering while the big one
/// compiles, and a restarted host loads the cached artifact instead of
/// compiling again.
#[test]
fn big_component_compiles_once_without_blocking_other_calls() {
    let cache = tempfile::tempdir().unwrap();
    let plugins = |dir: &Path| {
        let toml = format!(
            "[deployment]\nname = \"cache\"\nphase = 4\ndata_dir = \"{}\"\n{GROUPS}\n\
             [plugins.big]\npath = \"{}\"\ngroups = [\"kv-read\", \"llm\", \"logging\"]\n\
             [plugins.small]\npath = \"{}\"\ngroups = [\"kv-read\", \"kv-write\", \"logging\"]\n",
            dir.join("data").display(),
            language_build("python", "refund-triage").display(),
            fixture("fx-echo").display(),
        );
        charter_config::Deployment::parse(
            &toml,
            &dir.join("charter.toml"),
            charter_runtime::host_catalog(),
        )
        .unwrap()
    };
    let open = |dir: &Path| {
        Arc::new(
            Host::new(
                plugins(dir),
                HostOptions {
                    store: Some(Arc::new(MemStore::default())),
                    cache_dir: Some(cache.path().to_path_buf()),
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let input = r#"{"order_id": "A-1", "request": "arrived broken"}"#;

    let first = tempfile::tempdir().unwrap();
    let host = open(first.path());
    let (compile_time, answered) = rt.block_on(async {
        host.load("small").await.unwrap();
        let h = host.clone();
        let big = tokio::spawn(async move { h.load("big").await.map(|p| p.load_time) });
        let mut answered = 0u32;
        while !big.is_finished() {
            let out = host.call("small", r#"{"log": "ping"}"#).await.unwrap();
            assert_eq!(out.output["echo"]["log"], "ping");
            answered += 1;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (big.await.unwrap().unwrap(), answered)
    });
    let cold = rt.block_on(host.call("big", input)).unwrap();
    assert_eq!(cold.output["recommendation"], "escalate", "{}", cold.output);
    let compiled = artifacts(cache.path());
    eprintln!(
        "python refund-triage: first load {compile_time:?} (compile); {answered} calls to another plugin answered meanwhile; cold step {} us; {} cached artifacts",
        cold.duration_us,
        compiled.len()
    );
    assert!(
        answered >= 3,
        "only {answered} calls to `small` were answered while `big` compiled: compiling blocks the async threads"
    );
    assert!(
        !compiled.is_empty(),
        "nothing was written to the compile cache"
    );
    drop(host);

    // A restarted host (new data dir, same cache) reuses the artifact.
    let second = tempfile::tempdir().unwrap();
    let host = open(second.path());
    let cached = rt.block_on(host.load("big")).unwrap().load_time;
    let out = rt.block_on(host.call("big", input)).unwrap();
    assert_eq!(out.output, cold.output);
    eprintln!("python refund-triage: cached load {cached:?}");
    assert_eq!(
        artifacts(cache.path()),
        compiled,
        "the restarted host compiled again instead of loading the cached artifact"
    );
}

/// `charter new LANG NAME` scaffolds a step with a one-command build and a
/// charter.toml that `charter check` accepts. C and JavaScript are built and
/// called here (a second each); Python and Rust builds take longer (a Python
/// component compiles for ~10 s, a Rust scaffold fetches and builds its own
/// dependencies), so for them the test checks the scaffold and that the
/// deployment names the missing build.
#[test]
fn charter_new_scaffolds_build_and_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    for lang in LANGS {
        let name = format!("hello-{lang}");
        let out = charter(&["new", lang, &name], dir.path());
        assert_eq!(out.status.code(), Some(0), "{lang}: {}", text(&out));
        let plugin = dir.path().join(&name);
        for f in ["build.sh", "charter.toml", ".gitignore"] {
            assert!(plugin.join(f).is_file(), "{lang}: {f} missing");
        }
        if lang == "c" || lang == "js" {
            let build = std::process::Command::new("bash")
                .arg("build.sh")
                .current_dir(&plugin)
                .env("CHARTER", charter_bin())
                .output()
                .unwrap();
            assert!(build.status.success(), "{lang}: build: {}", text(&build));
            let check = charter(&["check"], &plugin);
            assert_eq!(check.status.code(), Some(0), "{lang}: {}", text(&check));
            let call = charter(
                &["call", &name, "--input", r#"{"name": "ada"}"#, "--json"],
                &plugin,
            );
            let v: Value = serde_json::from_slice(&call.stdout).unwrap();
            assert_eq!(v["output"]["hello"], "ada", "{lang}: {v}");
            assert_eq!(v["logs"][0]["message"], "greeting ada", "{lang}: {v}");
        } else {
            let check = charter(&["check"], &plugin);
            let t = text(&check);
            assert_eq!(check.status.code(), Some(1), "{lang}: {t}");
            assert!(
                t.contains(&format!("{name}.wasm")) && t.contains("build it first"),
                "{lang}: {t}"
            );
        }
    }
    // A second scaffold never overwrites the first.
    let again = charter(&["new", "c", "hello-c"], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    // A moved Rust scaffold says which path to fix, and to what, before
    // cargo runs; no scaffold names an absolute path of this machine.
    let moved = dir.path().join("elsewhere/deeper");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::rename(dir.path().join("hello-rust"), moved.join("hello-rust")).unwrap();
    let build = std::process::Command::new("bash")
        .arg("build.sh")
        .current_dir(moved.join("hello-rust"))
        .env("PATH", path_with_charter())
        .output()
        .unwrap();
    let t = text(&build);
    assert_eq!(build.status.code(), Some(1), "{t}");
    assert!(
        t.contains("charter-sdk path") && t.contains(&format!("{}/sdk/rust", root().display())),
        "{t}"
    );
    for lang in LANGS {
        for f in ["build.sh", "charter.toml", "Cargo.toml"] {
            let Ok(body) =
                std::fs::read_to_string(dir.path().join(format!("hello-{lang}")).join(f))
            else {
                continue;
            };
            assert!(
                !body.contains(&*root().display().to_string()),
                "{lang} {f}: {body}"
            );
        }
    }
}

/// `$PATH` with this build's `charter` first.
fn path_with_charter() -> std::ffi::OsString {
    let bin = charter_bin();
    let mut paths = vec![bin.parent().unwrap().to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// A Python, JavaScript or C plugin that calls a host function its
/// `host-functions` does not list fails to build with one line naming the
/// function, where it is called and the file to fix (not a backtrace), and
/// leaves no component behind: an older build at OUT is removed, so
/// `charter inspect` cannot show it as the new one. A name that is no host
/// function is refused with the closest one.
#[test]
fn a_plugin_build_names_the_host_function_its_list_misses() {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["python", "js", "c"] {
        let src = dir.path().join(lang);
        copy_dir(
            &root().join("plugins").join(lang).join("refund-triage"),
            &src,
        );
        std::fs::write(
            src.join("host-functions"),
            "# no kv\nllm.classify, log.write\n",
        )
        .unwrap();
        let out = dir.path().join(format!("{lang}.wasm"));
        std::fs::write(&out, b"an older build").unwrap();
        let build = sdk_build(lang, &src, &out);
        let stderr = String::from_utf8_lossy(&build.stderr).to_string();
        assert_eq!(build.status.code(), Some(1), "{lang}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{lang}: one line, not a backtrace: {stderr}"
        );
        let file = if lang == "python" {
            "app.py:"
        } else if lang == "js" {
            "step.js:"
        } else {
            "step.c"
        };
        assert!(
            lines[0].contains("kv.get")
                && lines[0].contains(file)
                && lines[0].contains(&*src.join("host-functions").display().to_string()),
            "{lang}: {stderr}"
        );
        assert!(
            !out.exists(),
            "{lang}: a failed build left {} behind",
            out.display()
        );

        std::fs::write(src.join("host-functions"), "kv.gett llm.classify log.write").unwrap();
        let build = sdk_build(lang, &src, &out);
        let t = text(&build);
        assert_eq!(build.status.code(), Some(1), "{lang}: {t}");
        assert!(
            t.contains("'kv.gett' is not a host function; did you mean kv.get?"),
            "{lang}: {t}"
        );
    }
    let usage = charter(&["sdk", "build", "go", ".", "x.wasm"], dir.path());
    assert_eq!(usage.status.code(), Some(64), "{}", text(&usage));
}

/// `charter sdk build LANG SRC OUT`.
fn sdk_build(lang: &str, src: &Path, out: &Path) -> std::process::Output {
    let (src, out) = (src.to_str().unwrap(), out.to_str().unwrap());
    charter(&["sdk", "build", lang, src, out], Path::new("."))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// `notify.send` is new in `charter:host@0.2.0`: a Python, JavaScript or C
/// plugin that calls it without listing it fails to build with one line
/// naming it, where it is called and the file to add it to; a JavaScript
/// or C import of notify at 0.1.0 (which never had it; the host would
/// refuse the component at load) is one line naming the version to import;
/// a listed name with path characters is no host function.
#[test]
fn a_notify_call_missing_from_host_functions_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["python", "js", "c"] {
        let src = dir.path().join(lang);
        copy_dir(&root().join("plugins").join(lang).join("notify"), &src);
        std::fs::write(src.join("host-functions"), "log.write\n").unwrap();
        let out = dir.path().join(format!("{lang}.wasm"));
        let build = sdk_build(lang, &src, &out);
        let stderr = String::from_utf8_lossy(&build.stderr).to_string();
        assert_eq!(build.status.code(), Some(1), "{lang}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{lang}: one line: {stderr}");
        let file = match lang {
            "python" => "app.py:",
            "js" => "step.js:",
            _ => "step.c",
        };
        assert!(
            lines[0].contains("calls notify.send")
                && lines[0].contains(file)
                && lines[0].contains("add `notify.send`")
                && lines[0].contains(&*src.join("host-functions").display().to_string()),
            "{lang}: {stderr}"
        );
        assert!(!out.exists(), "{lang}: a failed build left a component");

        for bad in ["../notify.send", "notify/../kv.get", "notify.send/x"] {
            std::fs::write(src.join("host-functions"), format!("log.write {bad}\n")).unwrap();
            let build = sdk_build(lang, &src, &out);
            let t = text(&build);
            assert_eq!(build.status.code(), Some(1), "{lang} {bad}: {t}");
            assert!(t.contains("is not a host function"), "{lang} {bad}: {t}");
            assert_eq!(t.lines().count(), 1, "{lang} {bad}: {t}");
        }
    }
    // Importing notify at 0.1.0 from JavaScript, or declaring it so in C.
    std::fs::write(
        dir.path().join("js/host-functions"),
        "log.write notify.send",
    )
    .unwrap();
    let step = std::fs::read_to_string(dir.path().join("js/step.js")).unwrap();
    std::fs::write(
        dir.path().join("js/step.js"),
        step.replace("notify@0.2.0", "notify@0.1.0"),
    )
    .unwrap();
    std::fs::write(dir.path().join("c/host-functions"), "log.write notify.send").unwrap();
    std::fs::write(
        dir.path().join("c/step.c"),
        "#include \"charter.h\"\n\
         CHARTER_IMPORT(\"charter:host/notify@0.1.0\", \"send\")\n\
         extern void old_send(const char *, size_t, const char *, size_t, const char *, size_t, void *);\n\
         static int run(const char *in, size_t len, charter_string *out) {\n\
         (void)in; (void)len; uint32_t ret[3]; old_send(\"a\", 1, \"b\", 1, \"c\", 1, ret);\n\
         return charter_set(out, \"{}\"); }\nCHARTER_STEP(run)\n",
    )
    .unwrap();
    for lang in ["js", "c"] {
        let out = dir.path().join(format!("{lang}.wasm"));
        let build = sdk_build(lang, &dir.path().join(lang), &out);
        let t = String::from_utf8_lossy(&build.stderr).to_string();
        assert_eq!(build.status.code(), Some(1), "{lang}: {t}");
        assert_eq!(t.lines().count(), 1, "{lang}: one line: {t}");
        assert!(
            t.contains("imports charter:host/notify@0.1.0")
                && t.contains("has no notify (it is served from 0.2.0 on)")
                && t.contains("import charter:host/notify@0.2.0"),
            "{lang}: {t}"
        );
        assert!(!out.exists(), "{lang}: a failed build left a component");
    }
}

/// `charter new LANG NAME --uses notify.send` lists it in host-functions
/// and writes a charter.toml declaring the inbox channel `team`, granted in
/// the `writes` group; `charter check` passes on the built scaffold (C and
/// JavaScript are built here, as in the test above).
#[test]
fn charter_new_uses_notify_declares_and_grants_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["python", "js", "c"] {
        let name = format!("tell-{lang}");
        let out = charter(&["new", lang, &name, "--uses", "notify.send"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{lang}: {}", text(&out));
        let plugin = dir.path().join(&name);
        let hf = std::fs::read_to_string(plugin.join("host-functions")).unwrap();
        assert!(hf.contains("log.write notify.send"), "{lang}: {hf}");
        let toml = std::fs::read_to_string(plugin.join("charter.toml")).unwrap();
        assert!(toml.contains("[channels.team]\ninbox = true"), "{toml}");
        assert!(
            toml.contains("capabilities = [\"charter:host/notify.send\"]\nchannels = [\"team\"]"),
            "{toml}"
        );
        if lang == "python" {
            continue;
        }
        let build = std::process::Command::new("bash")
            .arg("build.sh")
            .current_dir(&plugin)
            .env("CHARTER", charter_bin())
            .output()
            .unwrap();
        assert!(build.status.success(), "{lang}: build: {}", text(&build));
        let check = charter(&["check"], &plugin);
        assert_eq!(check.status.code(), Some(0), "{lang}: {}", text(&check));
        let g = charter(&["grants", "--json"], &plugin);
        let g: Value = serde_json::from_slice(&g.stdout).unwrap();
        assert_eq!(
            g["plugins"][0]["channels"],
            serde_json::json!(["team"]),
            "{g}"
        );
    }
}
