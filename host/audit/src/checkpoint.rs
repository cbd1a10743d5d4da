//! Signed checkpoints: `(deployment, seq, hash)` signed with the
//! deployment's ed25519 key (`<data_dir>/audit.key`). Exported and kept
//! where whoever can edit the log cannot, a checkpoint proves the log held
//! exactly that frame: a recomputed chain or a truncated tail fails it.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{LogError, Verification, Verified, hash_at, verify};

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
    /// Hex ed25519 signature over the UTF-8 text
    /// `charter-checkpoint-v1\n{deployment}\n{seq}\n{hash}\n{time_ms}`
    /// (the fields above, one per line).
    pub signature: String,
    /// Where frame `seq` starts in the log file: a hint that lets
    /// [`verify_since`] go straight to it. Not signed, and need not be:
    /// the frame found there must hold the signed seq and hash, or the
    /// check fails. Absent in checkpoints made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
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

/// Sign the log's current last frame (after verifying the whole chain).
pub fn create(data_dir: &Path, deployment: &str, log: &Path) -> Result<Checkpoint, LogError> {
    let bytes = match std::fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(io(log)(e)),
    };
    let (mut frames, mut position) = (0, None);
    let (tail, end) = crate::frame::walk(&bytes, |_, at, _| {
        frames += 1;
        position = Some(at);
    });
    let v = crate::verification(frames, tail, end, bytes.is_empty());
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
        position,
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

/// `charter audit verify --since-checkpoint`: check the checkpoint (its
/// signature, and that the log holds frame `seq` with exactly its hash,
/// where [`Checkpoint::position`] says) and then the chain from that frame
/// to the end of the log, reading only that part of the file. What
/// precedes the checkpointed frame is not read: it was verified when the
/// checkpoint was made, and its hash covers that history, so a rewritten
/// (recomputed) history or a truncation into it fails here; a frame edited
/// there without recomputing the chain is found by a full `audit verify`.
///
/// Returns the walk of what follows the checkpoint (`frames` counts the
/// checkpointed frame and those after it) and the checkpoint's problem,
/// if any. Without a position (an older checkpoint) the whole chain is
/// walked.
pub fn verify_since(
    cp: &Checkpoint,
    log: &Path,
) -> Result<(Verification, Option<String>), LogError> {
    use std::io::{Read, Seek, SeekFrom};
    let Some(at) = cp.position else {
        return Ok((verify(log)?, check(cp, log)?));
    };
    let not_held = |v: Verification| {
        let p = format!(
            "the log no longer holds entry {} named by the checkpoint at byte {at} (truncated, damaged or rewritten)",
            cp.seq
        );
        Ok((v, Some(p)))
    };
    let empty = Verification {
        frames: 0,
        last_seq: 0,
        last_hash: hex::encode([0u8; 32]),
        findings: vec![],
        torn: None,
    };
    let mut file = match std::fs::File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_held(empty),
        Err(e) => return Err(io(log)(e)),
    };
    let mut magic = [0u8; 8];
    let len = file.metadata().map_err(io(log))?.len();
    if file.read_exact(&mut magic).is_err() || magic != crate::LOG_MAGIC || at >= len || at < 8 {
        return not_held(empty);
    }
    file.seek(SeekFrom::Start(at)).map_err(io(log))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io(log))?;
    let hash: Option<[u8; 32]> = hex::decode(&cp.hash).ok().and_then(|h| h.try_into().ok());
    let mark = Verified {
        seq: cp.seq,
        at,
        hash: hash.unwrap_or([0; 32]),
    };
    // The signature first: a checkpoint that does not verify says nothing.
    if let Some(p) = check_with(cp, |_| Ok(Some(cp.hash.clone())))? {
        return Ok((empty, Some(p)));
    }
    let n = match crate::mark::marked_frame(&bytes, &mark) {
        Ok(n) if hash.is_some() => n,
        _ => return not_held(empty),
    };
    let mut frames = 1;
    let after = crate::frame::Tail {
        seq: mark.seq,
        hash: mark.hash,
        len: at + n as u64,
    };
    let (tail, end) = crate::frame::walk_from(&bytes[n..], after, |_, _, _| frames += 1);
    Ok((crate::verification(frames, tail, end, false), None))
}

/// The message a start-up's verified mark signs.
fn mark_message(m: &Verified) -> Vec<u8> {
    format!(
        "charter-verified-mark-v1\n{}\n{}\n{}",
        m.seq,
        m.at,
        hex::encode(m.hash)
    )
    .into_bytes()
}

/// A verified mark ([`crate::EventLog::open_verified`]) as the runtime
/// keeps it in its index: `v1 SEQ AT HASH SIGNATURE`, signed with the
/// deployment's key. The index is derived and anyone who can write the
/// data directory's state can edit it; the signature is what makes a
/// mark worth trusting.
pub fn sign_mark(key: &SigningKey, m: &Verified) -> String {
    let sig = key.sign(&mark_message(m));
    format!(
        "v1 {} {} {} {}",
        m.seq,
        m.at,
        hex::encode(m.hash),
        hex::encode(sig.to_bytes())
    )
}

/// The mark `text` holds if it is well formed and signed by `key`; `None`
/// otherwise (the caller then verifies the whole chain).
pub fn read_mark(key: &VerifyingKey, text: &str) -> Option<Verified> {
    let mut parts = text.split(' ');
    if parts.next()? != "v1" {
        return None;
    }
    let seq = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    let hash: [u8; 32] = hex::decode(parts.next()?).ok()?.try_into().ok()?;
    let sig: [u8; 64] = hex::decode(parts.next()?).ok()?.try_into().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let m = Verified { seq, at, hash };
    key.verify(&mark_message(&m), &Signature::from_bytes(&sig))
        .ok()
        .map(|_| m)
}
