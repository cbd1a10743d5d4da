//! Opening the log from a verified mark: the chain is checked from a
//! frame an earlier opening verified (its seq, position and hash) to the
//! end of the file, instead of from the first frame, so opening costs what
//! was appended since, not the size of the log.
//!
//! What opening from a mark checks:
//! - the file header;
//! - the marked frame itself: an intact frame at that position (header
//!   check, its body's hash), holding that seq, with exactly that hash, and
//!   ending a batch. Since each frame's hash covers the previous one's, a
//!   history before the mark that was rewritten with recomputed hashes, or
//!   a log truncated into it, fails here;
//! - every frame after it, exactly as a full opening does (chain, seq,
//!   torn tail cut, any other damage refused).
//!
//! What it leaves to [`verify`](crate::verify) (`charter audit verify`):
//! a frame before the mark modified *without* recomputing the chain (its
//! successors still hold the old hashes, so the marked frame still
//! matches). The caller decides which marks to trust: the runtime keeps
//! the mark signed with the deployment's key in its (untrusted) index and
//! opens in full when the signature does not verify
//! ([`crate::checkpoint::sign_mark`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::frame::{BODY_PREFIX, End, FRAME_HEADER_LEN, LOG_MAGIC, Tail, hash, header_check};
use crate::{EventLog, LogError, MAX_FRAME, OnCommit, Positions, Record, walk};

/// A frame known to be intact and chained from the first frame of the log:
/// its seq, the byte offset where it starts and its hash. Seq 0 is the
/// empty log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub seq: u64,
    pub at: u64,
    pub hash: [u8; 32],
}

/// What opening checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The log's last frame, now verified (from the first frame, or from
    /// the mark): the mark for the next opening.
    pub verified: Verified,
    /// Frames whose hash and chain were checked (the marked one included).
    pub checked: u64,
    /// Whether the check started from the mark given (false: from the
    /// first frame).
    pub from_mark: bool,
}

impl EventLog {
    /// [`open_with`](Self::open_with), checking the chain only from
    /// `mark` on when it can (see the module docs): when `mark` is given
    /// and the index has applied at least up to it (`applied >=
    /// mark.seq`); otherwise the whole chain is walked (the tail before
    /// the mark must be read anyway) and the marked frame is still
    /// checked in it. A mark the log does not hold — the marked frame is
    /// missing, elsewhere, or has another hash — refuses to open: its
    /// history was rewritten or truncated after it was verified.
    ///
    /// The file's data is made durable (`fdatasync`) before this returns,
    /// so [`Opened::verified`] never names a frame a power cut could
    /// still take away.
    pub fn open_verified(
        path: &Path,
        mark: Option<Verified>,
        applied: u64,
        on_commit: OnCommit,
        sync: bool,
    ) -> Result<(EventLog, Opened), LogError> {
        let fault = crate::fault::Fault::from_env().map_err(|e| LogError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        let (log, opened) = EventLog::open_from(path, mark, applied, on_commit, sync, fault)?;
        crate::lock(&log.shared.writer)
            .out
            .file()
            .sync_data()
            .map_err(|source| LogError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok((log, opened))
    }
}

/// The outcome of [`scan`].
pub(crate) struct Scan {
    pub tail: Tail,
    pub end: End,
    pub checked: u64,
    /// The mark the check started from, if it did.
    pub mark: Option<Verified>,
    /// Bytes read.
    pub bytes: usize,
}

fn mismatch(path: &Path, m: &Verified, problem: &str) -> LogError {
    LogError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(format!(
            "the log no longer holds entry {} as this data directory last verified it (hash {} at byte {}): {problem}. Its history was rewritten or truncated since; `charter audit verify` shows the damage. Restore events.log from a backup; or, to keep this log as it is, move the state directory aside (the index is rebuilt from the log, which is then verified in full)",
            m.seq,
            hex::encode(m.hash),
            m.at
        )),
    }
}

/// Read and check the log file `file` (at its start): from the frame
/// `mark` names when `applied >= mark.seq`, else from the first frame.
/// `f` sees every record of the whole batches checked, in order (not the
/// marked one), with its offset and hash; `positions` notes them.
pub(crate) fn scan(
    file: &mut File,
    path: &Path,
    mark: Option<Verified>,
    applied: u64,
    positions: &mut Positions,
    mut f: impl FnMut(Record, u64, &[u8; 32]),
) -> Result<Scan, LogError> {
    let io = |source| LogError::Io {
        path: path.to_owned(),
        source,
    };
    let mark = mark.filter(|m| m.seq > 0);
    if let Some(m) = mark.filter(|m| m.seq <= applied) {
        let mut magic = [0u8; LOG_MAGIC.len()];
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        if file.read_exact(&mut magic).is_err() || magic != LOG_MAGIC {
            return Err(mismatch(path, &m, "the file header is not a log's"));
        }
        let len = file.metadata().map_err(io)?.len();
        if m.at < LOG_MAGIC.len() as u64 || m.at >= len {
            return Err(mismatch(path, &m, "the file ends before it"));
        }
        file.seek(SeekFrom::Start(m.at)).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let n = marked_frame(&bytes, &m).map_err(|p| mismatch(path, &m, &p))?;
        positions.start_after(m);
        let after = Tail {
            seq: m.seq,
            hash: m.hash,
            len: m.at + n as u64,
        };
        let mut checked = 1;
        let (tail, end) = crate::frame::walk_from(&bytes[n..], after, |r, at, h| {
            checked += 1;
            positions.note(r.seq, at);
            f(r, at, h)
        });
        return Ok(Scan {
            tail,
            end,
            checked,
            mark: Some(m),
            bytes: bytes.len(),
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let mut checked = 0;
    let mut found = None;
    let (tail, end) = walk(&bytes, |r, at, h| {
        checked += 1;
        if mark.is_some_and(|m| m.seq == r.seq) {
            found = Some((at, *h, r.end));
        }
        positions.note(r.seq, at);
        f(r, at, h)
    });
    // Damage is reported as damage (the caller refuses to open with it).
    if let Some(m) = mark
        && !matches!(end, End::Damaged(_) | End::Foreign(_))
    {
        match found {
            None => return Err(mismatch(path, &m, "the log has no such entry")),
            Some((at, h, end_mark)) if at != m.at || h != m.hash || !end_mark => {
                return Err(mismatch(path, &m, "the entry there differs"));
            }
            Some(_) => {}
        }
    }
    Ok(Scan {
        tail,
        end,
        checked,
        mark: None,
        bytes: bytes.len(),
    })
}

/// Check that `bytes` starts with the frame `m` names, intact and ending a
/// batch; its length in bytes.
pub(crate) fn marked_frame(bytes: &[u8], m: &Verified) -> Result<usize, String> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err("the file ends inside it".into());
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let check = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if check != header_check(len) {
        return Err("no frame starts there".into());
    }
    let len = len as usize;
    if !(BODY_PREFIX..=MAX_FRAME).contains(&len) {
        return Err("no frame starts there".into());
    }
    let n = FRAME_HEADER_LEN + len + 32;
    if bytes.len() < n {
        return Err("the file ends inside it".into());
    }
    let body = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    let stored = &bytes[FRAME_HEADER_LEN + len..n];
    if hash(body)[..] != stored[..] {
        return Err("the frame there is damaged".into());
    }
    if stored != m.hash {
        return Err("the entry there has another hash (rewritten history)".into());
    }
    let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    match serde_json::from_slice::<Record>(&body[BODY_PREFIX..]) {
        Ok(r) if r.seq == seq && seq == m.seq && r.end => Ok(n),
        Ok(_) => Err("the entry there is another one".into()),
        Err(_) => Err("the frame there is damaged".into()),
    }
}

#[cfg(test)]
mod tests {
    //! Opening from a verified mark and `verify --since-checkpoint`: what
    //! each checks, and what each leaves to a full `verify`.

    use super::*;
    use crate::checkpoint::{self, SigningKey};
    use crate::{Event, Filter, LOG_FILE, Log, hash_at, verify};

    fn ev(i: u64, tag: &str) -> Event {
        Event::KvWrite {
            auth: None,
            plugin: "p".into(),
            key: format!("k{i}"),
            value: Some(tag.into()),
            by: None,
            secrets: vec![],
        }
    }

    /// `batches` appends of 3 events; the log's frame starts.
    fn fill(path: &Path, from: u64, batches: u64, tag: &str) -> Vec<u64> {
        let log = EventLog::open(path).unwrap();
        for b in 0..batches {
            let i = from + 3 * b;
            log.append_blocking(vec![ev(i, tag), ev(i + 1, tag), ev(i + 2, tag)])
                .unwrap();
        }
        drop(log);
        starts(&std::fs::read(path).unwrap())
    }

    fn starts(bytes: &[u8]) -> Vec<u64> {
        let mut at = vec![];
        crate::frame::walk(bytes, |_, a, _| at.push(a));
        at
    }

    fn open(path: &Path, mark: Option<Verified>) -> Result<(EventLog, Opened), LogError> {
        EventLog::open_verified(path, mark, u64::MAX, Box::new(|_, _| Ok(())), false)
    }

    /// Flip one payload byte of the frame starting at `at`.
    fn flip(path: &Path, at: u64) {
        let mut b = std::fs::read(path).unwrap();
        b[at as usize + FRAME_HEADER_LEN + BODY_PREFIX + 2] ^= 0x01;
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn opening_from_a_mark_checks_the_tail_and_leaves_the_rest_to_verify() {
        let _g = crate::log_tests::no_spawning();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        fill(&path, 0, 40, "a");
        let (log, first) = open(&path, None).unwrap();
        assert!(!first.from_mark);
        assert_eq!((first.checked, first.verified.seq), (120, 120));
        drop(log);
        let mark = first.verified;
        let at = fill(&path, 1000, 5, "b");
        let clean = std::fs::read(&path).unwrap();

        // From the mark: the marked frame and the 15 after it.
        let (log, o) = open(&path, Some(mark)).unwrap();
        assert!(o.from_mark);
        assert_eq!((o.checked, o.verified.seq), (16, 135));
        // Reads before, at and after the mark go through the positions
        // it knows (or the file's start) and agree with the walk.
        assert_eq!(Log::read(&log, 1, &Filter::all()).unwrap().len(), 135);
        assert_eq!(Log::read(&log, 119, &Filter::all()).unwrap().len(), 17);
        assert_eq!(Log::read(&log, 130, &Filter::all()).unwrap().len(), 6);
        for seq in [1, 64, 65, 119, 120, 121, 128, 129, 135] {
            assert_eq!(log.hash_at(seq).unwrap(), hash_at(&path, seq).unwrap());
        }
        drop(log);

        // Damage in the tail: refused, naming it.
        flip(&path, at[125]);
        let e = open(&path, Some(mark)).unwrap_err().to_string();
        assert!(
            e.contains("chain damaged") && e.contains("(seq 126)"),
            "{e}"
        );
        std::fs::write(&path, &clean).unwrap();

        // Damage before the mark: start-up does not read it; verify does.
        flip(&path, at[10]);
        let (log, o) = open(&path, Some(mark)).unwrap();
        assert_eq!(o.checked, 16);
        drop(log);
        let v = verify(&path).unwrap();
        assert!(!v.ok() && v.findings[0].seq == Some(11), "{:?}", v.findings);
        // Without the mark (an untrusted one is dropped by the caller),
        // opening walks everything and refuses.
        assert!(open(&path, None).is_err());
    }

    #[test]
    fn a_rewritten_or_truncated_history_fails_the_mark() {
        let _g = crate::log_tests::no_spawning();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let at = fill(&path, 0, 10, "a");
        let (log, o) = open(&path, None).unwrap();
        drop(log);
        let mark = o.verified;
        let clean = std::fs::read(&path).unwrap();
        // The same events with one value changed and every hash
        // recomputed: a valid chain that a full verify cannot tell apart.
        let forged = dir.path().join("forged.log");
        let f = EventLog::open(&forged).unwrap();
        f.append_blocking(vec![ev(0, "A"), ev(1, "a"), ev(2, "a")])
            .unwrap();
        for b in 1..10 {
            f.append_blocking(vec![ev(3 * b, "a"), ev(3 * b + 1, "a"), ev(3 * b + 2, "a")])
                .unwrap();
        }
        drop(f);
        std::fs::copy(&forged, &path).unwrap();
        assert!(verify(&path).unwrap().ok());
        let e = open(&path, Some(mark)).unwrap_err().to_string();
        assert!(e.contains("no longer holds entry 30"), "{e}");
        // The same through the full walk (an index behind the mark).
        let e = EventLog::open_verified(&path, Some(mark), 3, Box::new(|_, _| Ok(())), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no longer holds entry 30"), "{e}");
        // Truncated at a frame boundary before the mark.
        std::fs::write(&path, &clean[..at[27] as usize]).unwrap();
        assert!(verify(&path).unwrap().ok());
        let e = open(&path, Some(mark)).unwrap_err().to_string();
        assert!(e.contains("no longer holds entry 30"), "{e}");
        // A mark pointing into the middle of a frame, or at another
        // frame, or at a frame that does not end its batch.
        std::fs::write(&path, &clean).unwrap();
        for m in [
            Verified {
                at: mark.at + 1,
                ..mark
            },
            Verified { at: at[28], ..mark },
            Verified {
                seq: 29,
                at: at[28],
                hash: hex::decode(hash_at(&path, 29).unwrap().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            },
            Verified {
                at: u64::MAX,
                ..mark
            },
            Verified { at: 0, ..mark },
        ] {
            let e = open(&path, Some(m)).unwrap_err().to_string();
            assert!(e.contains("no longer holds entry"), "{m:?}: {e}");
        }
        assert!(open(&path, Some(mark)).is_ok());
    }

    #[test]
    fn a_mark_is_only_read_back_under_its_signature() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let m = Verified {
            seq: 42,
            at: 1234,
            hash: [9; 32],
        };
        let text = checkpoint::sign_mark(&key, &m);
        assert_eq!(checkpoint::read_mark(&key.verifying_key(), &text), Some(m));
        assert_eq!(checkpoint::read_mark(&other.verifying_key(), &text), None);
        // Moving the mark forward (or anywhere) breaks the signature.
        for edited in [
            text.replacen(" 42 ", " 4200 ", 1),
            text.replacen(" 1234 ", " 99999 ", 1),
            text.replacen(&hex::encode([9u8; 32]), &hex::encode([1u8; 32]), 1),
            format!("{text} x"),
            text.replacen("v1", "v2", 1),
            String::new(),
            "v1 1 2 3 4".into(),
        ] {
            assert_eq!(
                checkpoint::read_mark(&key.verifying_key(), &edited),
                None,
                "{edited}"
            );
        }
        // A forged mark signed by another key is not this deployment's.
        let forged = checkpoint::sign_mark(&other, &Verified { seq: 9999, ..m });
        assert_eq!(checkpoint::read_mark(&key.verifying_key(), &forged), None);
    }

    #[test]
    fn verify_since_a_checkpoint_checks_only_what_follows_it() {
        let _g = crate::log_tests::no_spawning();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        fill(&path, 0, 20, "a");
        let cp = checkpoint::create(dir.path(), "dep", &path).unwrap();
        assert_eq!(cp.seq, 60);
        let at = fill(&path, 1000, 4, "b");
        let clean = std::fs::read(&path).unwrap();
        let (v, p) = checkpoint::verify_since(&cp, &path).unwrap();
        assert_eq!(p, None);
        assert!(v.ok());
        assert_eq!((v.frames, v.last_seq), (13, 72));
        assert_eq!(v.last_hash, verify(&path).unwrap().last_hash);

        // After the checkpoint: found.
        flip(&path, at[65]);
        let (v, p) = checkpoint::verify_since(&cp, &path).unwrap();
        assert_eq!(p, None);
        assert_eq!(v.findings[0].seq, Some(66), "{:?}", v.findings);
        std::fs::write(&path, &clean).unwrap();

        // Before it: not read here, found by a full verify.
        flip(&path, at[3]);
        let (v, p) = checkpoint::verify_since(&cp, &path).unwrap();
        assert!(v.ok() && p.is_none());
        assert!(!verify(&path).unwrap().ok());
        std::fs::write(&path, &clean).unwrap();

        // A truncation into it, a wrong position hint, a forged signature.
        std::fs::write(&path, &clean[..at[50] as usize]).unwrap();
        let (_, p) = checkpoint::verify_since(&cp, &path).unwrap();
        assert!(p.unwrap().contains("no longer holds entry 60"));
        std::fs::write(&path, &clean).unwrap();
        let moved = checkpoint::Checkpoint {
            position: Some(at[58]),
            ..cp.clone()
        };
        let (_, p) = checkpoint::verify_since(&moved, &path).unwrap();
        assert!(p.unwrap().contains("no longer holds entry 60"));
        let forged = checkpoint::Checkpoint {
            seq: 61,
            position: Some(at[60]),
            ..cp.clone()
        };
        let (_, p) = checkpoint::verify_since(&forged, &path).unwrap();
        assert!(p.unwrap().contains("signature"));
        // An older checkpoint without a position: the whole chain.
        let old = checkpoint::Checkpoint {
            position: None,
            ..cp.clone()
        };
        let (v, p) = checkpoint::verify_since(&old, &path).unwrap();
        assert!(p.is_none() && v.frames == 72);
    }
}
