//! The on-disk format (see the crate docs): the file header, frames, the
//! walk that reads them back, and the bounds that keep every frame the
//! writer produces readable.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Finding, MAX_FRAME, MAX_RECORD_DEPTH, Record};

/// The first 8 bytes of every log file: a non-ASCII byte (so a text file
/// or a length-prefixed file of another format never matches), `CHARTR`,
/// and the format version (2: self-checking frame headers).
pub const LOG_MAGIC: [u8; 8] = *b"\x89CHARTR\x02";

/// Bytes of a frame header: `len: u32 LE | check: u32 LE`.
pub const FRAME_HEADER_LEN: usize = 8;

/// Bytes of a frame body before the payload: `seq: u64 LE | prev: [u8; 32]`.
pub(crate) const BODY_PREFIX: usize = 40;

/// The hash chained from one frame to the next.
pub(crate) fn hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32C: [u32; 256] = crc32c_table();

/// CRC-32C (Castagnoli).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The check word of a frame header: CRC-32C of the length's 4 bytes. A
/// CRC detects every error burst of up to 32 bits in the 64-bit header, so
/// a flipped bit (or several adjacent ones) in either word never passes as
/// a valid header, and an all-zero header never does either.
pub(crate) fn header_check(len: u32) -> u32 {
    crc32c(&len.to_le_bytes())
}

/// Append one frame for `payload` to `out`; returns the frame's hash.
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; 32],
    payload: &[u8],
) -> [u8; 32] {
    let len = (BODY_PREFIX + payload.len()) as u32;
    out.reserve(FRAME_HEADER_LEN + len as usize + 32);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&header_check(len).to_le_bytes());
    let body = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(payload);
    let h = hash(&out[body..]);
    out.extend_from_slice(&h);
    h
}

/// The deepest nesting of arrays and objects in JSON text, by a byte scan
/// (brackets inside strings, escaped quotes included, do not count). This
/// is the depth serde_json's reader counts against its recursion limit.
pub fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_str, mut esc) = (false, false);
    for &b in json {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// How deeply a JSON value nests: 0 for a scalar, 1 for `[]`, `{}` or an
/// array/object of scalars, and so on. Iterative, so any depth is safe.
///
/// An event holding a value of depth `d` in one of its fields encodes to
/// a record of depth `d + 1`; the runtime refuses step inputs, outputs and
/// call arguments deeper than [`MAX_VALUE_DEPTH`](crate::MAX_VALUE_DEPTH),
/// well below what the log accepts ([`MAX_RECORD_DEPTH`]).
pub fn json_depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    max
}

/// How many `[` and `{` bytes `payload` holds. `b | 0x20 == b'{'` is true
/// for exactly those two bytes (0x5B and 0x7B); counted in wrapping u8
/// lanes over chunks of 255 (no lane can overflow), which the compiler
/// vectorises: an ordinary event costs a fraction of an instruction a byte
/// (`filter().count()` with overflow checks cost ~11).
fn opening_brackets(payload: &[u8]) -> usize {
    payload
        .chunks(255)
        .map(|c| {
            c.iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(b | 0x20 == b'{'))) as usize
        })
        .sum()
}

/// Why an encoded record cannot go into the log, if it cannot.
pub(crate) fn refusal(payload: &[u8]) -> Option<String> {
    if BODY_PREFIX + payload.len() > MAX_FRAME {
        return Some(format!(
            "it encodes to {} bytes, more than the {} a frame can hold",
            payload.len(),
            MAX_FRAME - BODY_PREFIX
        ));
    }
    // Depth needs an opening bracket per level: a payload with few of
    // them (every ordinary event) is not scanned further.
    if opening_brackets(payload) <= MAX_RECORD_DEPTH {
        return None;
    }
    let depth = nesting_depth(payload);
    if depth > MAX_RECORD_DEPTH {
        return Some(format!(
            "its JSON nests {depth} levels deep, more than the {MAX_RECORD_DEPTH} the log accepts"
        ));
    }
    None
}

/// Fewest zero bytes at the end of the file that make a frame which does
/// not verify, and in which they begin, a torn write rather than damage:
/// a hash that merely ends in zero bytes is then a 2^-64 chance, while a
/// power cut leaves whole zero sectors.
const MIN_ZERO_TAIL: usize = 8;

/// The last intact frame.
#[derive(Clone, Copy)]
pub(crate) struct Tail {
    pub seq: u64,
    pub hash: [u8; 32],
    /// Where the intact part of the file ends.
    pub len: u64,
}

/// How a walk ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Every byte belongs to the file header or an intact frame.
    Clean,
    /// Empty, or holding only part of the file header (then at most zero
    /// bytes): a crash while the log was created. It may be
    /// (re)initialised.
    Uninitialised,
    /// Not a log of this format.
    Foreign(String),
    /// A torn final frame or an all-zero tail, from `at` to the end of the
    /// file: a crash mid-append, never acknowledged. Opening cuts it.
    Torn { at: u64, seq: u64, problem: String },
    /// Anything else: opening refuses.
    Damaged(Finding),
}

/// Why a file that does not start with [`LOG_MAGIC`] is not read.
fn foreign(bytes: &[u8]) -> String {
    // The previous format had no file header: `len: u32 | body | hash`.
    let v1 = bytes.len() >= 4 && {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        (BODY_PREFIX..=MAX_FRAME).contains(&len)
            && bytes.len() >= 4 + len + 32
            && hash(&bytes[4..4 + len])[..] == bytes[4 + len..4 + len + 32]
    };
    let head = hex::encode(&bytes[..bytes.len().min(LOG_MAGIC.len())]);
    if v1 {
        "written by an older charter (frame format 1, without a file header); this version reads format 2 only and will not convert or append to it".into()
    } else {
        format!(
            "not a charter event log of format 2 (it starts with {head}, expected {}); an older charter's log or another program's file",
            hex::encode(LOG_MAGIC)
        )
    }
}

/// Walk the frames of a log file's bytes, calling `f` on each intact frame
/// in order (its record, byte offset and hash). Stops at the first frame it
/// cannot trust and says whether that is a torn tail (a crash) or damage.
///
/// A torn tail is only ever: fewer than a header's bytes left after an
/// intact frame; a header that passes its check but whose frame runs past
/// the end of the file; or a region of zero bytes reaching the end of the
/// file that begins at the start of the frame after the last intact one,
/// or inside its header, or (when at least [`MIN_ZERO_TAIL`] bytes long)
/// inside a frame that does not verify. Everything else — a header
/// failing its check with data after it, a hash mismatch, a broken chain,
/// an impossible length, an unreadable payload — is damage.
///
/// Appends are all-or-nothing: each batch's last frame is marked
/// ([`Record::end`]), and the frames after the last mark — a batch whose
/// last frame was never written, so never acknowledged — are a torn tail
/// too: `f` sees whole batches only.
pub(crate) fn walk(bytes: &[u8], f: impl FnMut(Record, u64, &[u8; 32])) -> (Tail, End) {
    walk_after(bytes, None, f)
}

/// [`walk`] over the part of a log file that follows an intact frame:
/// `bytes` is the file from byte `after.len` on, and the first frame in
/// it must chain onto `after` (seq `after.seq + 1`, previous hash
/// `after.hash`). Offsets and the tail are the file's. Used to check only
/// what follows a frame already known to be good (a start-up's verified
/// mark, a signed checkpoint); the file header is not looked at.
pub(crate) fn walk_from(
    bytes: &[u8],
    after: Tail,
    f: impl FnMut(Record, u64, &[u8; 32]),
) -> (Tail, End) {
    walk_after(bytes, Some(after), f)
}

fn walk_after(
    bytes: &[u8],
    after: Option<Tail>,
    mut f: impl FnMut(Record, u64, &[u8; 32]),
) -> (Tail, End) {
    let mut pending: Vec<(Record, u64, [u8; 32])> = Vec::new();
    let mut done = after.unwrap_or(Tail {
        seq: 0,
        hash: [0; 32],
        len: LOG_MAGIC.len() as u64,
    });
    let (tail, end) = walk_frames(bytes, after, |r, at, hash, frame_end| {
        let (last, seq) = (r.end, r.seq);
        pending.push((r, at, *hash));
        if last {
            for (r, at, h) in pending.drain(..) {
                f(r, at, &h);
            }
            done = Tail {
                seq,
                hash: *hash,
                len: frame_end,
            };
        }
    });
    if pending.is_empty() {
        return (tail, end);
    }
    match end {
        End::Clean | End::Torn { .. } => {
            let at = done.len;
            let seq = done.seq + 1;
            let problem = format!(
                "torn final batch: {} of its frames were written but not its last (a crash mid-append; never acknowledged; opening the log cuts it)",
                pending.len()
            );
            (done, End::Torn { at, seq, problem })
        }
        other => (done, other),
    }
}

/// Every intact frame, in order (its record, offset, hash and end offset).
/// With `after`, `bytes` starts at byte `after.len` of the file, just
/// past that intact frame (see [`walk_from`]).
fn walk_frames(
    bytes: &[u8],
    after: Option<Tail>,
    mut f: impl FnMut(Record, u64, &[u8; 32], u64),
) -> (Tail, End) {
    let mut tail = Tail {
        seq: 0,
        hash: [0; 32],
        len: 0,
    };
    // Everything from `zeros` on is zero bytes.
    let zeros = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    // Offsets in `bytes` are the file's minus `base`.
    let (base, mut off) = match after {
        Some(t) => {
            tail = t;
            (t.len, 0)
        }
        None => {
            let m = LOG_MAGIC.len();
            // The magic is synced before any frame is written: a file
            // holding less than all of it (then at most zeros) never held
            // an acknowledged frame.
            if zeros < m && LOG_MAGIC.starts_with(&bytes[..zeros]) {
                return (tail, End::Uninitialised);
            }
            if bytes.len() < m || bytes[..m] != LOG_MAGIC {
                return (tail, End::Foreign(foreign(bytes)));
            }
            tail.len = m as u64;
            (0, m)
        }
    };
    while off < bytes.len() {
        let at = base + off as u64;
        let expected = tail.seq + 1;
        let rest = bytes.len() - off;
        let torn = |problem: String| End::Torn {
            at,
            seq: expected,
            problem: format!(
                "torn final frame: {problem} (a crash mid-append; never acknowledged; opening the log cuts it)"
            ),
        };
        let damaged = |seq: u64, problem: String| {
            End::Damaged(Finding {
                offset: at,
                seq: Some(seq),
                problem,
            })
        };
        if zeros <= off {
            return (
                tail,
                torn(format!("{rest} zero bytes after the last frame")),
            );
        }
        if rest < FRAME_HEADER_LEN {
            return (tail, torn(format!("only {rest} bytes of its header")));
        }
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        let check = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
        if check != header_check(len) {
            if zeros < off + FRAME_HEADER_LEN {
                return (
                    tail,
                    torn("a partly written header, zeros to the end".into()),
                );
            }
            return (
                tail,
                damaged(
                    expected,
                    "frame header fails its check (damaged length field)".into(),
                ),
            );
        }
        let len = len as usize;
        if !(BODY_PREFIX..=MAX_FRAME).contains(&len) {
            return (
                tail,
                damaged(
                    expected,
                    format!(
                        "frame header declares a {len}-byte body, outside {BODY_PREFIX}..={MAX_FRAME}"
                    ),
                ),
            );
        }
        let end = off + FRAME_HEADER_LEN + len + 32;
        if end > bytes.len() {
            return (
                tail,
                torn(format!("{rest} of its {} bytes were written", end - off)),
            );
        }
        let body = &bytes[off + FRAME_HEADER_LEN..off + FRAME_HEADER_LEN + len];
        let stored: [u8; 32] = bytes[end - 32..end].try_into().unwrap();
        if hash(body) != stored {
            if zeros < end && bytes.len() - zeros >= MIN_ZERO_TAIL {
                return (
                    tail,
                    torn(format!(
                        "its last {} bytes are zeros (never written)",
                        end - zeros
                    )),
                );
            }
            return (
                tail,
                damaged(expected, "frame hash mismatch (modified entry)".into()),
            );
        }
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
        let prev: [u8; 32] = body[8..40].try_into().unwrap();
        if seq != expected {
            return (
                tail,
                damaged(
                    seq,
                    format!(
                        "sequence jumps from {} to {seq} (deleted, reordered or inserted entry)",
                        tail.seq
                    ),
                ),
            );
        }
        if prev != tail.hash {
            return (
                tail,
                damaged(seq, "chain broken: previous-hash mismatch".into()),
            );
        }
        match serde_json::from_slice::<Record>(&body[BODY_PREFIX..]) {
            Ok(r) if r.seq == seq => f(r, at, &stored, base + end as u64),
            Ok(_) => {
                return (
                    tail,
                    damaged(seq, "payload's seq differs from its frame's".into()),
                );
            }
            Err(e) => {
                return (
                    tail,
                    damaged(seq, format!("payload is not a valid record ({e})")),
                );
            }
        }
        off = end;
        tail = Tail {
            seq,
            hash: stored,
            len: base + off as u64,
        };
    }
    (tail, End::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_brackets_counts_exactly_brackets_and_braces() {
        // Every byte value, and runs longer than a 255-byte chunk of them.
        let every: Vec<u8> = (0..=255u8).collect();
        assert_eq!(opening_brackets(&every), 2);
        for n in [0, 1, 254, 255, 256, 511, 4096] {
            for b in [b'[', b'{', b'a', b'\x7b' ^ 0x20, 0xdb, 0xfb] {
                let v = vec![b; n];
                let naive = v.iter().filter(|&&x| x == b'[' || x == b'{').count();
                assert_eq!(opening_brackets(&v), naive, "{n} x {b:#x}");
            }
        }
        // Deeper than the log accepts only when nested, not when many.
        let flat = "[],".repeat(MAX_RECORD_DEPTH * 3);
        assert_eq!(refusal(format!("[{flat}0]").as_bytes()), None);
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_RECORD_DEPTH + 1),
            "]".repeat(MAX_RECORD_DEPTH + 1)
        );
        assert!(refusal(deep.as_bytes()).unwrap().contains("levels deep"));
    }
}
