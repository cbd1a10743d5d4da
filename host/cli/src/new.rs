//! `charter new LANG NAME`: scaffold a step plugin in Rust, Python,
//! JavaScript or C that builds with one command (`bash build.sh`) and passes
//! `charter check` with the `charter.toml` written beside it.
//!
//! The templates are the SDKs' own (`sdk/<lang>/template/`), embedded at
//! build time; the scaffold builds against this repository's SDK and WIT
//! (found at `--sdk`, `$CHARTER_SDK`, or where this binary was built from).
//! A scaffold names no absolute path: its build.sh reaches the SDK through
//! `charter sdk build`, and a Rust scaffold's Cargo.toml names the SDK
//! crate relative to the scaffold (its build.sh says how to fix the path if
//! the folder moves).

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
pub fn sdk_root(explicit: Option<&Path>) -> Result<PathBuf> {
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

/// `to` relative to the directory `from` (both absolute and canonical).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// `charter sdk build LANG DIR OUT`: run `sdk/build.sh`, passing its
/// output through. Exit 0 built, 64 usage, 1 anything else.
pub fn build(lang: &str, dir: &Path, out: &Path) -> Result<i32> {
    let root = sdk_root(None)?;
    let status = std::process::Command::new("bash")
        .arg(root.join("sdk/build.sh"))
        .args([lang.as_ref(), dir.as_os_str(), out.as_os_str()])
        .status()
        .context("running bash sdk/build.sh")?;
    Ok(match status.code() {
        Some(0) => 0,
        Some(64) => 64,
        _ => 1,
    })
}

/// Refuse to build without `charter` on PATH, saying how to get it.
const NEED_CHARTER: &str = "command -v \"${CHARTER:-charter}\" >/dev/null || {\n  \
  echo \"build.sh: charter is not on PATH (in the Charter repository, after its build: export PATH=\\$PWD/target/debug:\\$PATH)\" >&2; exit 1; }\n";

/// The files of a scaffold in `dir` (absolute): (relative path, contents).
fn files(
    lang: Lang,
    name: &str,
    uses: &[Use],
    sdk: &Path,
    dir: &Path,
) -> Vec<(&'static str, String)> {
    let wasm = format!("{name}.wasm");
    let host_functions = format!(
        "# The host functions {name} calls (sdk/build.sh checks the source against\n\
         # this list): spaces, commas or newlines between names; '#' starts a comment.\n{}\n",
        uses.iter()
            .map(|u| u.short.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (build, mut files) = match lang {
        Lang::Rust => {
            let krate = name.replace('-', "_");
            let sdk_s = relative(dir, &sdk.join("sdk/rust")).display().to_string();
            let cargo = format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 # Its own workspace, wherever it lives.\n[workspace]\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n\
                 # The SDK crate, relative to this folder (`charter sdk path` prints\n\
                 # where it is).\n[dependencies]\ncharter-sdk = {{ path = \"{sdk_s}\" }}\n\n\
                 [profile.release]\nopt-level = \"s\"\nstrip = true\n"
            );
            (
                format!(
                    "sdk=$(sed -n 's/^charter-sdk = {{ path = \"\\(.*\\)\" }}$/\\1/p' Cargo.toml)\n\
                     [[ -f \"$sdk/Cargo.toml\" ]] || {{\n  \
                     echo \"build.sh: Cargo.toml's charter-sdk path ($sdk) does not exist from here (was the folder moved?); set it to $(charter sdk path 2>/dev/null || echo PATH_TO_CHARTER)/sdk/rust\" >&2; exit 1; }}\n\
                     rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2\n\
                     # A failed build leaves no {wasm}: never a stale one.\n\
                     rm -f {wasm}\n\
                     cargo build --release --target wasm32-wasip2\n\
                     cp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{krate}.wasm\" {wasm}\n\
                     echo \"built {wasm} ($(stat -c %s {wasm}) bytes)\" >&2\n"
                ),
                vec![("Cargo.toml", cargo), ("src/lib.rs", RUST_LIB.to_string())],
            )
        }
        Lang::Python => (
            format!("{NEED_CHARTER}\"${{CHARTER:-charter}}\" sdk build python . {wasm}\n"),
            vec![
                ("app.py", PYTHON_APP.to_string()),
                ("host-functions", host_functions.clone()),
            ],
        ),
        Lang::Js => (
            format!("{NEED_CHARTER}\"${{CHARTER:-charter}}\" sdk build js . {wasm}\n"),
            vec![
                ("step.js", JS_STEP.to_string()),
                ("host-functions", host_functions.clone()),
            ],
        ),
        Lang::C => (
            format!("{NEED_CHARTER}\"${{CHARTER:-charter}}\" sdk build c . {wasm}\n"),
            vec![
                ("step.c", C_STEP.to_string()),
                ("host-functions", host_functions.clone()),
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
    files.push(("charter.toml", deployment(name, &wasm, uses)));
    files.push((
        ".gitignore",
        "*.wasm\n*.wasm.d/\ntarget/\n.charter/\n".to_string(),
    ));
    files
}

/// A host function a scaffold calls: `kv.get` and its effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    short: String,
    write: bool,
}

/// The host functions `charter new --uses` names, with `log.write` (the
/// template calls it) first. Each must be one the host implements.
pub fn parse_uses(list: &[String]) -> Result<Vec<Use>> {
    let known: Vec<(String, bool)> = charter_runtime::host_catalog()
        .host_functions()
        .iter()
        .filter_map(|(iface, func, effect)| {
            let short = iface.strip_prefix("charter:host/")?;
            Some((
                format!("{short}.{func}"),
                *effect == charter_config::Effect::Write,
            ))
        })
        .collect();
    let mut out = vec![Use {
        short: "log.write".into(),
        write: false,
    }];
    for item in list
        .iter()
        .flat_map(|s| s.split([',', ' ']))
        .filter(|s| !s.is_empty())
    {
        let item = item.strip_prefix("charter:host/").unwrap_or(item);
        let Some((short, write)) = known.iter().find(|(k, _)| k == item) else {
            bail!(
                "--uses {item:?} is not a host function a plugin can call; known: {}",
                known
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        };
        if !out.iter().any(|u| &u.short == short) {
            out.push(Use {
                short: short.clone(),
                write: *write,
            });
        }
    }
    Ok(out)
}

/// The channel a scaffold calling `notify.send` declares and grants: an
/// inbox, which keeps the message in the event log and sends nothing out.
const CHANNEL: &str = "team";

/// The scaffold's charter.toml: one group for the functions that only
/// read, one for those that write (their effect is what the phase gate and
/// reviewers see), both granted to the plugin. With `notify.send` it
/// declares the inbox channel `team` and the writes group grants it by
/// name (notify sends only to channels a group grants).
fn deployment(name: &str, wasm: &str, uses: &[Use]) -> String {
    let notify = uses.iter().any(|u| u.short == "notify.send");
    let caps = |write: bool| {
        uses.iter()
            .filter(|u| u.write == write)
            .map(|u| format!("\"charter:host/{}\"", u.short))
            .collect::<Vec<_>>()
    };
    // Phase 1 (deterministic) permits no AI: a step that asks the model
    // is scaffolded at phase 2 (supervised).
    let phase = if uses.iter().any(|u| u.short.starts_with("llm.")) {
        2
    } else {
        1
    };
    let mut groups = Vec::new();
    let mut text = format!(
        "# A deployment for trying the step: bash build.sh && charter check && \\\n\
         #   charter call {name} --input '{{\"name\": \"ada\"}}'\n\
         [deployment]\nname = \"{name}-dev\"\nphase = {phase}\ndata_dir = \".charter\"\n\n"
    );
    for (group, write) in [("reads", false), ("writes", true)] {
        let caps = caps(write);
        if caps.is_empty() {
            continue;
        }
        let effect = if write { "write" } else { "read" };
        let channels = if write && notify {
            format!("channels = [\"{CHANNEL}\"]\n")
        } else {
            String::new()
        };
        text += &format!(
            "[groups.{group}]\ncapabilities = [{}]\n{channels}phase = {phase}\neffect = \"{effect}\"\n\n",
            caps.join(", ")
        );
        groups.push(format!("\"{group}\""));
    }
    if notify {
        text += &format!(
            "# Where notify.send may deliver: an inbox keeps messages in the event\n\
             # log (`charter audit show --type call`); `webhook = \"https://...\"`\n\
             # posts them instead.\n\
             [channels.{CHANNEL}]\ninbox = true\n\n"
        );
    }
    text += &format!(
        "# Calling another host function (kv.get, llm.classify, ...): list it in\n\
         # host-functions (Python, JS, C), and grant it with a group here.\n\
         [plugins.{name}]\npath = \"{wasm}\"\ngroups = [{}]\n\
         owner = \"you\"\ngranted_by = \"you\"\nreason = \"scaffolded by charter new\"\n",
        groups.join(", ")
    );
    text
}

/// Write the scaffold into `dir` (default: ./NAME), which must not exist
/// or be empty.
pub fn new(
    lang: Lang,
    name: &str,
    uses: &[String],
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<i32> {
    let uses = parse_uses(uses)?;
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
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let abs = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    for (rel, text) in files(lang, name, &uses, &sdk, &abs) {
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

    #[test]
    fn uses_are_host_functions_grouped_by_effect() {
        let uses = parse_uses(&["kv.get kv.set".into(), "charter:host/kv.get".into()]).unwrap();
        let toml = deployment("x", "x.wasm", &uses);
        assert!(toml.contains(
            "[groups.reads]\ncapabilities = [\"charter:host/log.write\", \"charter:host/kv.get\"]"
        ));
        assert!(toml.contains("[groups.writes]\ncapabilities = [\"charter:host/kv.set\"]"));
        assert!(toml.contains("groups = [\"reads\", \"writes\"]"));
        let err = parse_uses(&["kv.gett".into()]).unwrap_err().to_string();
        assert!(err.contains("kv.gett") && err.contains("kv.get"), "{err}");
    }

    /// Phase 1 permits no AI: a step that asks the model is scaffolded at
    /// phase 2, and its deployment breaks no rule; without llm, phase 1.
    #[test]
    fn an_llm_step_is_scaffolded_at_phase_2() {
        let parse = |toml: &str| {
            charter_config::Deployment::parse(
                toml,
                Path::new("/tmp/x/charter.toml"),
                charter_runtime::host_catalog(),
            )
            .unwrap()
        };
        let d = parse(&deployment(
            "x",
            "x.wasm",
            &parse_uses(&["llm.classify".into()]).unwrap(),
        ));
        assert_eq!(u8::from(d.phase), 2);
        assert!(d.violations().is_empty(), "{:?}", d.violations());
        let d = parse(&deployment(
            "x",
            "x.wasm",
            &parse_uses(&["kv.get".into()]).unwrap(),
        ));
        assert_eq!(u8::from(d.phase), 1);
    }

    #[test]
    fn notify_declares_and_grants_an_inbox_channel() {
        let uses = parse_uses(&["notify.send".into()]).unwrap();
        let toml = deployment("x", "x.wasm", &uses);
        assert!(toml.contains("[channels.team]\ninbox = true\n"), "{toml}");
        assert!(
            toml.contains(
                "[groups.writes]\ncapabilities = [\"charter:host/notify.send\"]\nchannels = [\"team\"]\n"
            ),
            "{toml}"
        );
        let d = charter_config::Deployment::parse(
            &toml,
            Path::new("/tmp/x/charter.toml"),
            charter_runtime::host_catalog(),
        )
        .unwrap();
        assert_eq!(
            d.granted_channels(&d.plugins["x"]),
            ["team".to_string()].into()
        );
        // Without notify, no channel.
        let toml = deployment("x", "x.wasm", &parse_uses(&["kv.set".into()]).unwrap());
        assert!(!toml.contains("channels"), "{toml}");
    }

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative(Path::new(a), Path::new(b));
        assert_eq!(r("/w/x/my-step", "/w/x/sdk/rust"), Path::new("../sdk/rust"));
        assert_eq!(
            r("/tmp/a/b", "/w/sdk/rust"),
            Path::new("../../../w/sdk/rust")
        );
        assert_eq!(r("/w/sdk", "/w/sdk/rust"), Path::new("rust"));
    }

    #[test]
    fn scaffolds_name_no_absolute_path() {
        let sdk = Path::new("/opt/charter-repo");
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            let uses = parse_uses(&["kv.get,kv.set".into()]).unwrap();
            for (file, text) in files(lang, "my-step", &uses, sdk, Path::new("/home/u/my-step")) {
                let absolute = ["\"/", " /", "=/", "'/"].iter().any(|p| {
                    text.contains(&format!("{p}opt")) || text.contains(&format!("{p}home"))
                });
                assert!(!absolute, "{lang:?} {file} names an absolute path:\n{text}");
            }
        }
    }
}
