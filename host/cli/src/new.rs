//! `charter new LANG NAME`: scaffold a step plugin in Rust, Python,
//! JavaScript or C that builds with one command (`bash build.sh`) and passes
//! `charter check` with the `charter.toml` written beside it.
//!
//! The templates are the SDKs' own (`sdk/<lang>/template/`), embedded at
//! build time; the scaffold builds against this repository's SDK and WIT
//! (found at `--sdk`, `$CHARTER_SDK`, or where this binary was built from).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

/// The languages `charter new` scaffolds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

const RUST_LIB: &str = include_str!("../../../sdk/rust/template/lib.rs");
const PYTHON_APP: &str = include_str!("../../../sdk/python/template/app.py");
const JS_STEP: &str = include_str!("../../../sdk/js/template/step.js");
const C_STEP: &str = include_str!("../../../sdk/c/template/step.c");

/// The repository holding `sdk/` and `wit/`.
fn sdk_root(explicit: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => std::env::var_os("CHARTER_SDK")
            .map(PathBuf::from)
            .into_iter()
            .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")])
            .collect(),
    };
    for c in &candidates {
        if c.join("sdk/build.sh").is_file() && c.join("wit/plugin@0.1.0").is_dir() {
            return c
                .canonicalize()
                .with_context(|| format!("resolving {}", c.display()));
        }
    }
    bail!(
        "cannot find Charter's SDK (a directory with sdk/build.sh and wit/; tried {}); pass --sdk PATH_TO_CHARTER_REPO or set CHARTER_SDK",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// clap's check of NAME: an invalid name is a usage error (exit 64).
pub fn parse_name(name: &str) -> Result<String, String> {
    if valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(
            "use lowercase letters, digits and '-', starting with a letter (e.g. refund-triage)"
                .into(),
        )
    }
}

/// The files of a scaffold: (relative path, contents).
fn files(lang: Lang, name: &str, sdk: &Path) -> Vec<(&'static str, String)> {
    let sdk_s = sdk.display().to_string();
    let wasm = format!("{name}.wasm");
    let (build, mut files) = match lang {
        Lang::Rust => {
            let krate = name.replace('-', "_");
            let cargo = format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 # Its own workspace, wherever it lives.\n[workspace]\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\ncharter-sdk = {{ path = \"{sdk_s}/sdk/rust\" }}\n\n\
                 [profile.release]\nopt-level = \"s\"\nstrip = true\n"
            );
            (
                format!(
                    "rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2\n\
                     cargo build --release --target wasm32-wasip2\n\
                     cp target/wasm32-wasip2/release/{krate}.wasm {wasm}\n"
                ),
                vec![("Cargo.toml", cargo), ("src/lib.rs", RUST_LIB.to_string())],
            )
        }
        Lang::Python => (
            format!("bash \"{sdk_s}/sdk/build.sh\" python . {wasm}\n"),
            vec![
                ("app.py", PYTHON_APP.to_string()),
                ("host-functions", "log.write\n".to_string()),
            ],
        ),
        Lang::Js => (
            format!("bash \"{sdk_s}/sdk/build.sh\" js . {wasm}\n"),
            vec![
                ("step.js", JS_STEP.to_string()),
                ("host-functions", "log.write\n".to_string()),
            ],
        ),
        Lang::C => (
            format!("bash \"{sdk_s}/sdk/build.sh\" c . {wasm}\n"),
            vec![
                ("step.c", C_STEP.to_string()),
                ("host-functions", "log.write\n".to_string()),
            ],
        ),
    };
    files.push((
        "build.sh",
        format!(
            "#!/usr/bin/env bash\n\
             # Build {wasm} (the first build installs the pinned toolchain).\n\
             set -euo pipefail\ncd \"$(dirname \"$0\")\"\n{build}"
        ),
    ));
    files.push((
        "charter.toml",
        format!(
            "# A deployment for trying the step: bash build.sh && charter check && \\\n\
             #   charter call {name} --input '{{\"name\": \"ada\"}}'\n\
             [deployment]\nname = \"{name}-dev\"\nphase = 1\ndata_dir = \".charter\"\n\n\
             [groups.logging]\ncapabilities = [\"charter:host/log.write\"]\nphase = 1\neffect = \"read\"\n\n\
             # Calling another host function (kv.get, llm.classify, ...): list it in\n\
             # host-functions (Python, JS, C), and grant it with a group here.\n\
             [plugins.{name}]\npath = \"{wasm}\"\ngroups = [\"logging\"]\n\
             owner = \"you\"\ngranted_by = \"you\"\nreason = \"scaffolded by charter new\"\n"
        ),
    ));
    files.push((
        ".gitignore",
        "*.wasm\n*.wasm.d/\ntarget/\n.charter/\n".to_string(),
    ));
    files
}

/// Write the scaffold into `dir` (default: ./NAME), which must not exist
/// or be empty.
pub fn new(lang: Lang, name: &str, dir: Option<&Path>, sdk: Option<&Path>) -> Result<i32> {
    if !valid_name(name) {
        bail!(
            "plugin name {name:?} is not valid: use lowercase letters, digits and '-', starting with a letter (e.g. refund-triage)"
        );
    }
    let sdk = sdk_root(sdk)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} already exists and is not empty; choose another NAME or --dir",
            dir.display()
        );
    }
    for (rel, text) in files(lang, name, &sdk) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let lang_name = format!("{lang:?}").to_lowercase();
    println!(
        "created {lang_name} step {name} in {}\n\n  cd {}\n  bash build.sh\n  charter check\n  charter call {name} --input '{{\"name\": \"ada\"}}'",
        dir.display(),
        dir.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("refund-triage"));
        assert!(valid_name("a1"));
        assert!(!valid_name("Refund"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("x-"));
        assert!(!valid_name("a_b"));
        assert!(!valid_name(""));
    }
}
