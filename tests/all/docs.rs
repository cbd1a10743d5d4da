//! The documents stay true: every test SECURITY.md names as the proof of a
//! promise exists.

use crate::support::root;

/// Every `fn NAME` in the repository's Rust sources.
fn functions() -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut dirs = vec![root().join("host"), root().join("tests")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("fn ") {
                    let name: String = text[i + 3..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn every_proof_security_md_names_exists() {
    let text = std::fs::read_to_string(root().join("SECURITY.md")).unwrap();
    let fns = functions();
    let mut named = 0;
    let mut missing = Vec::new();
    for para in text.split("*Proof:*").skip(1) {
        // A proof runs to the end of its paragraph.
        let para = para.split("\n\n").next().unwrap();
        for (i, chunk) in para.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            named += 1;
            if let Some(case) = chunk.strip_prefix("tests/cases/") {
                if !root().join("tests/cases").join(case).is_dir() {
                    missing.push(chunk.to_string());
                }
                continue;
            }
            if chunk.starts_with("charter-") {
                continue; // a crate name introducing unit tests
            }
            // `module::name`, or `module::name_{a,b}` for several.
            let last = chunk.rsplit("::").next().unwrap();
            let names: Vec<String> = match last.split_once('{') {
                Some((stem, rest)) => rest
                    .trim_end_matches('}')
                    .split(',')
                    .map(|s| format!("{stem}{s}"))
                    .collect(),
                None => vec![last.to_string()],
            };
            for n in names {
                if !fns.contains(&n) {
                    missing.push(chunk.to_string());
                }
            }
        }
    }
    assert!(named > 50, "only {named} proofs named");
    assert!(
        missing.is_empty(),
        "SECURITY.md names tests that do not exist: {missing:?}"
    );
}

/// A fenced block of README: its info string and its lines.
fn fenced_blocks(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<String> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .map(str::to_string)
                .collect();
            out.push((info.trim().to_string(), body));
        }
    }
    out
}

/// The file a block stands for, named by its first line (`// src/lib.rs`,
/// `# app.py`, `/* step.c */`, `# charter.toml (excerpt)`), and whether it
/// is an excerpt of a file that already exists.
fn block_file(first: &str) -> Option<(String, bool)> {
    let t = first
        .trim()
        .trim_start_matches("//")
        .trim_start_matches('#')
        .trim_start_matches("/*")
        .trim_end_matches("*/")
        .trim();
    let (name, excerpt) = match t.strip_suffix("(excerpt)") {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let ok =
        !name.is_empty() && !name.contains(' ') && (name.contains('.') || name == "host-functions");
    (ok && first.trim() != t).then(|| (name.to_string(), excerpt))
}

/// README's "Write a plugin" section, run as a new user would follow it:
/// every shell block exactly as written, in order, in one shell started
/// in the repository (the first block moves to a scratch directory); every
/// source block that names its file (first line `// src/lib.rs`, `# app.py`,
/// ...) written to that file first; an `(excerpt)` checked against the file
/// it quotes. Builds a Rust, Python, JavaScript and C plugin that call
/// `kv.get`, and calls each.
#[test]
fn readme_plugin_sections_run_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("\n## Write a plugin\n")
        .expect("README has `## Write a plugin`");
    let end = start + 1 + readme[start + 1..].find("\n## ").unwrap();
    let section = &readme[start..end];
    let mut script = String::from("set -euo pipefail\n");
    let (mut shell, mut files) = (0, 0);
    for (i, (info, body)) in fenced_blocks(section).into_iter().enumerate() {
        if info == "sh" {
            shell += 1;
            script += &format!("echo '--- README block {i}' >&2\n{}\n", body.join("\n"));
            continue;
        }
        let Some((file, excerpt)) = body.first().and_then(|f| block_file(f)) else {
            panic!("README block {i} ({info}) names no file on its first line: {body:?}");
        };
        files += 1;
        let text = body.join("\n") + "\n";
        let marker = format!("README_BLOCK_{i}");
        if excerpt {
            let quoted = body[1..].join("\n");
            script += &format!(
                "[[ \"$(cat {file})\" == *\"$(cat <<'{marker}'\n{quoted}\n{marker}\n)\"* ]] || \
                 {{ echo 'README block {i}: {file} does not hold this excerpt' >&2; exit 1; }}\n"
            );
        } else {
            script += &format!("cat > {file} <<'{marker}'\n{text}{marker}\n");
        }
    }
    assert!(
        shell >= 8 && files >= 5,
        "{shell} shell blocks, {files} files"
    );
    let scratch = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root())
        .env("TMPDIR", scratch.path())
        // The Rust scaffold's own dependencies (wit-bindgen, serde), built
        // once and kept between runs; everything else is as README says.
        .env("CARGO_TARGET_DIR", root().join("target/readme-plugins"))
        .env_remove("CHARTER_LOG")
        .env_remove("CHARTER_SDK")
        .output()
        .unwrap();
    let text = crate::support::text(&out);
    assert!(
        out.status.success(),
        "README's plugin section failed:\n{script}\n{text}"
    );
    // Each language answered; only the Rust deployment holds A-1.
    let answers: Vec<&str> = text.lines().filter(|l| l.contains("\"known\"")).collect();
    assert_eq!(
        answers,
        [
            "  \"known\": true",
            "  \"known\": false",
            "  \"known\": false",
            "  \"known\": false"
        ],
        "{text}"
    );
    for lang in ["lookup", "lookup-py", "lookup-js", "lookup-c"] {
        assert!(
            text.contains(&format!("{lang}: looking up")),
            "{lang}: {text}"
        );
    }
    // Python's first load compiles for seconds: it is announced, with its
    // size and that it is cached, and its time once done.
    assert!(
        text.contains("compiling lookup-py (") && text.contains("MB), cached afterwards…"),
        "no progress for the Python compile: {text}"
    );
    assert!(text.contains("compiled lookup-py in "), "{text}");
}

/// Every workspace crate names its own profile settings in Cargo.toml:
/// `[profile.dev]` holds the dependencies' (optimised, no checks), so a
/// crate missing there would silently build like a dependency, without
/// our debug assertions and overflow checks.
#[test]
fn every_workspace_crate_has_its_own_profile() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let members = doc["workspace"]["members"].as_array().unwrap();
    let named = doc["profile"]["dev"]["package"].as_table().unwrap();
    for m in members {
        let dir = root().join(m.as_str().unwrap());
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let name = manifest["package"]["name"].as_str().unwrap();
        let p = named.get(name).unwrap_or_else(|| {
            panic!(
                "Cargo.toml: add [profile.dev.package.{name}] (see the comment above [profile.dev])"
            )
        });
        assert_eq!(
            p.get("debug-assertions").and_then(|v| v.as_bool()),
            Some(true),
            "{name}"
        );
        assert_eq!(
            p.get("overflow-checks").and_then(|v| v.as_bool()),
            Some(true),
            "{name}"
        );
    }
}
