//! Capability implementations. Private to the mediator: nothing else in the
//! host can reach them, so every execution has passed `Mediator::dispatch`.

use std::collections::BTreeMap;

use charter_config::SecretSource;
use charter_store::Store;

use super::{GuestResult, Reply};

/// Longest kv key, in bytes.
pub(super) const MAX_KEY: usize = 1024;
/// Largest kv value, in bytes.
pub(super) const MAX_VALUE: usize = 1 << 20;

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("kv key must be 1 to {MAX_KEY} bytes"));
    }
    Ok(())
}

pub(super) fn kv_get(store: &dyn Store, ns: &str, key: &str) -> GuestResult {
    check_key(key)?;
    store
        .get(ns, key)
        .map(Reply::Value)
        .map_err(|e| e.to_string())
}

/// A kv write is an event: the step journals it and the index applies it
/// once the event log has it on disk. Here it is only checked.
pub(super) fn kv_check_set(key: &str, value: &str) -> Result<(), String> {
    check_key(key)?;
    if value.len() > MAX_VALUE {
        return Err(format!(
            "kv value is {} bytes, over the {MAX_VALUE}-byte limit",
            value.len()
        ));
    }
    Ok(())
}

pub(super) fn kv_list(store: &dyn Store, ns: &str, prefix: &str) -> GuestResult {
    store
        .list(ns, prefix)
        .map(Reply::Keys)
        .map_err(|e| e.to_string())
}

/// Read a granted secret. The value goes to the guest only; it is never
/// logged, and errors name the secret, not its value.
pub(super) fn secret_get(secrets: &BTreeMap<String, SecretSource>, name: &str) -> GuestResult {
    let src = secrets
        .get(name)
        .ok_or_else(|| format!("secret {name:?} is not declared in the deployment"))?;
    let value = match src {
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("secret {name:?}: environment variable {var} is not set"))?,
        SecretSource::File(p) => std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("secret {name:?}: cannot read {}: {e}", p.display()))?,
    };
    Ok(Reply::Text(value))
}
