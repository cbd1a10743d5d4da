//! Signed checkpoints: `(deployment, seq, hash)` signed with the
//! deployment's ed25519 key (`<data_dir>/audit.key`). Exported and kept
//! where whoever can edit the log cannot, a checkpoint proves the log held
//! exactly that frame: a recomputed chain or a truncated tail fails it.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{LogError, hash_at, verify};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "audit.key";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub deployment: String,
    pub seq: u64,
    /// Hex sha256 of frame `seq`.
    pub hash: String,
    pub time_ms: u64,
    /// Hex ed25519 public key.
    pub public_key: String,
    /// Hex ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    fn message(deployment: &str, seq: u64, hash: &str, time_ms: u64) -> Vec<u8> {
        format!("charter-checkpoint-v1\n{deployment}\n{seq}\n{hash}\n{time_ms}").into_bytes()
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Load the deployment's signing key, creating it on first use.
pub fn signing_key(data_dir: &Path) -> Result<SigningKey, LogError> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(hexkey) => {
            let bytes: [u8; 32] = hex::decode(hexkey.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| io(&path)(std::io::Error::other("not a 32-byte hex key")))?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| io(&path)(std::io::Error::other(e.to_string())))?;
            std::fs::create_dir_all(data_dir).map_err(io(&path))?;
            write_private(&path, &hex::encode(seed)).map_err(io(&path))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Sign the log's current last frame.
pub fn create(data_dir: &Path, deployment: &str, log: &Path) -> Result<Checkpoint, LogError> {
    let v = verify(log)?;
    if !v.ok() {
        return Err(io(log)(std::io::Error::other(format!(
            "refusing to checkpoint a damaged log: {}",
            v.findings[0].problem
        ))));
    }
    let key = signing_key(data_dir)?;
    let time_ms = crate::now_ms();
    let sig = key.sign(&Checkpoint::message(
        deployment,
        v.last_seq,
        &v.last_hash,
        time_ms,
    ));
    Ok(Checkpoint {
        deployment: deployment.to_string(),
        seq: v.last_seq,
        hash: v.last_hash,
        time_ms,
        public_key: hex::encode(key.verifying_key().to_bytes()),
        signature: hex::encode(sig.to_bytes()),
    })
}

/// Check a checkpoint: its signature, and that the log still holds frame
/// `seq` with exactly that hash. Returns the problem, if any.
pub fn check(cp: &Checkpoint, log: &Path) -> Result<Option<String>, LogError> {
    check_with(cp, |seq| hash_at(log, seq))
}

/// [`check`] against an open log: the checkpointed frame is read through
/// the log's sparse index ([`crate::EventLog::hash_at`]), not by walking
/// the file.
pub fn check_log(cp: &Checkpoint, log: &crate::EventLog) -> Result<Option<String>, LogError> {
    check_with(cp, |seq| log.hash_at(seq))
}

fn check_with(
    cp: &Checkpoint,
    hash_at: impl FnOnce(u64) -> Result<Option<String>, LogError>,
) -> Result<Option<String>, LogError> {
    let key = hex::decode(&cp.public_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok());
    let sig = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b));
    let (Some(key), Some(sig)) = (key, sig) else {
        return Ok(Some("checkpoint key or signature is malformed".into()));
    };
    if key
        .verify(
            &Checkpoint::message(&cp.deployment, cp.seq, &cp.hash, cp.time_ms),
            &sig,
        )
        .is_err()
    {
        return Ok(Some("checkpoint signature does not verify".into()));
    }
    match hash_at(cp.seq)? {
        None => Ok(Some(format!(
            "the log no longer holds entry {} named by the checkpoint (truncated or damaged)",
            cp.seq
        ))),
        Some(h) if h != cp.hash => Ok(Some(format!(
            "entry {} differs from the checkpoint (rewritten history)",
            cp.seq
        ))),
        Some(_) => Ok(None),
    }
}
