//! `charter tokens create`: mint a token, show it once, and say where its
//! hash goes.

use anyhow::{Result, bail};
use charter_runtime::error::{EXIT_OK, EXIT_USAGE};

use crate::TokensOp;
use crate::commands::print_json;

pub fn run(op: TokensOp) -> Result<i32> {
    match op {
        TokensOp::Create {
            name,
            expires_in,
            config,
            json,
        } => create(&name, &expires_in, &config, json),
    }
}

fn create(name: &str, expires_in: &str, config: &crate::ConfigArg, json: bool) -> Result<i32> {
    let expires = match expires_in {
        "never" => None,
        text => {
            let d = humantime::parse_duration(text).map_err(|e| {
                anyhow::anyhow!("--expires-in {text:?}: {e}; say e.g. 12h, 30d, 1y or never")
            })?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let at = now
                .checked_add(d)
                .map(|t| t.as_secs())
                .filter(|s| *s < u64::MAX / 2);
            match at {
                Some(at) if d.as_secs() > 0 => Some(at),
                _ => bail!("--expires-in {text:?} is not a usable lifetime; say e.g. 30d or never"),
            }
        }
    };
    // Say whether the deployment knows NAME; mint either way (the section
    // may be added with the hash).
    let declared = config
        .load()
        .ok()
        .map(|d| d.identities.get(name).map(|i| i.kind));
    let minted = match charter_auth::mint(name, expires) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    if json {
        print_json(&minted, true)?;
        return Ok(EXIT_OK);
    }
    let until = match expires {
        Some(at) => format!(
            "expires {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(at)
            )
        ),
        None => "never expires".to_string(),
    };
    println!(
        "token for {name} ({until}), shown once:\n\n  {}\n",
        minted.token
    );
    match declared {
        Some(Some(_)) => println!(
            "Add its hash to the `tokens` list of {name}'s section in {}:\n\n  tokens = [\"{}\"]\n",
            config.path().display(),
            minted.hash
        ),
        _ => println!(
            "{name} is not declared in {}; add:\n\n  [identities.{name}]\n  roles = []            # e.g. [\"finance\"]; kind = \"service\" for a service account\n  tokens = [\"{}\"]\n",
            config.path().display(),
            minted.hash
        ),
    }
    println!("Then give the token to {name}: commands read it from CHARTER_TOKEN.");
    Ok(EXIT_OK)
}
