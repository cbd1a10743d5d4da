//! What a shared log backend (PostgreSQL: `charter-pg`) needs from the log
//! format so that its rows are this crate's frames, byte for byte: the
//! same bounds, the same encoding, the same hash chain. An auditor who
//! exports a backend's frames in seq order after [`LOG_MAGIC`](crate::LOG_MAGIC)
//! holds a file that `charter audit verify` checks like any `events.log`.

use crate::frame::{BODY_PREFIX, FRAME_HEADER_LEN, encode_frame, hash, header_check, refusal};
use crate::{Event, LogError, MAX_FRAME, Record, now_ms};

/// One encoded frame of a batch, ready to store.
#[derive(Debug, Clone)]
pub struct Frame {
    pub record: Record,
    /// The frame's bytes as the file log writes them (header, body, hash).
    pub bytes: Vec<u8>,
    /// The frame's hash: the next frame's `prev`.
    pub hash: [u8; 32],
}

/// Encode `events` as the frames that follow the frame `prev_seq` whose
/// hash is `prev_hash`: all of them, or a refusal naming the event that
/// cannot go into the log (the file log's bounds, so every backend refuses
/// the same batches).
pub fn encode_batch(
    prev_seq: u64,
    prev_hash: [u8; 32],
    events: Vec<Event>,
) -> Result<Vec<Frame>, LogError> {
    let n = events.len();
    let time_ms = now_ms();
    let mut out = Vec::with_capacity(n);
    let mut prev = prev_hash;
    for (i, event) in events.into_iter().enumerate() {
        let record = Record {
            seq: prev_seq + 1 + i as u64,
            time_ms,
            end: i + 1 == n,
            event,
        };
        let mut payload = Vec::with_capacity(256);
        crate::event::encode_record(&record, &mut payload)?;
        if let Some(p) = refusal(&payload) {
            return Err(LogError::Refused(format!(
                "event {} of the batch ({}) cannot go into the log: {p}",
                i + 1,
                record.event.kind()
            )));
        }
        let mut bytes = Vec::new();
        let h = encode_frame(&mut bytes, record.seq, &prev, &payload);
        prev = h;
        out.push(Frame {
            record,
            bytes,
            hash: h,
        });
    }
    Ok(out)
}

/// A frame read back from a backend, checked on its own: header, length,
/// hash, and the payload's seq against the frame's. Returns the record,
/// the frame's `prev` and its hash (the caller checks the chain across
/// frames it reads in order).
pub fn decode_frame(bytes: &[u8]) -> Result<(Record, [u8; 32], [u8; 32]), String> {
    if bytes.len() < FRAME_HEADER_LEN + BODY_PREFIX + 32 {
        return Err(format!("a {}-byte frame is too short", bytes.len()));
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let check = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    if check != header_check(len) {
        return Err("frame header fails its check (damaged length field)".into());
    }
    let len = len as usize;
    if !(BODY_PREFIX..=MAX_FRAME).contains(&len) || FRAME_HEADER_LEN + len + 32 != bytes.len() {
        return Err(format!(
            "frame header declares a {len}-byte body in a {}-byte frame",
            bytes.len()
        ));
    }
    let body = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    let stored: [u8; 32] = bytes[FRAME_HEADER_LEN + len..].try_into().unwrap();
    if hash(body) != stored {
        return Err("frame hash mismatch (modified entry)".into());
    }
    let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
    let prev: [u8; 32] = body[8..BODY_PREFIX].try_into().unwrap();
    match serde_json::from_slice::<Record>(&body[BODY_PREFIX..]) {
        Ok(r) if r.seq == seq => Ok((r, prev, stored)),
        Ok(_) => Err("payload's seq differs from its frame's".into()),
        Err(e) => Err(format!("payload is not a valid record ({e})")),
    }
}

/// Run a guarded append's precondition (a panic is a refusal).
pub fn check_guard(guard: crate::Guard) -> Result<(), String> {
    crate::run_guard(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_tests::ev as kv;

    /// A backend's frames, exported after the magic, are a log file that
    /// the file log's own verification accepts; a changed byte is found.
    #[test]
    fn exported_frames_verify_as_a_log_file() {
        let a = encode_batch(0, [0; 32], vec![kv(1), kv(2)]).unwrap();
        let b = encode_batch(2, a[1].hash, vec![kv(3)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.log");
        let mut file = crate::LOG_MAGIC.to_vec();
        for f in a.iter().chain(&b) {
            file.extend_from_slice(&f.bytes);
            let (r, _, h) = decode_frame(&f.bytes).unwrap();
            assert_eq!((r.seq, h), (f.record.seq, f.hash));
        }
        std::fs::write(&path, &file).unwrap();
        let v = crate::verify(&path).unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.last_seq, 3);
        let mut bad = b[0].bytes.clone();
        let n = bad.len();
        bad[n - 40] ^= 1;
        assert!(decode_frame(&bad).unwrap_err().contains("hash mismatch"));
        assert!(decode_frame(&bad[..10]).is_err());
    }
}
