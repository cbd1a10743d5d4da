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
