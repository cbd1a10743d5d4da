//! Reading frames from a byte offset instead of walking the whole file:
//! one frame at a position (a per-run index's entry), or every whole batch
//! from a position on (a filter over the tail of the log).
//!
//! A frame read this way is checked on its own — header check, bounded
//! length, hash, the payload's seq against the frame's — but not chained
//! to its predecessor: only `verify` (and opening the log) walk the chain.
//! A position that does not start an intact frame is an error, never a
//! guess.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::frame::{BODY_PREFIX, FRAME_HEADER_LEN, hash, header_check};
use crate::{LogError, MAX_FRAME, Record};

/// Which records a read returns. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event kinds ([`Event::kind`](crate::Event::kind)); empty: any.
    pub kinds: Vec<String>,
    /// Only events of this workflow run ([`Event::run`](crate::Event::run)).
    pub run: Option<String>,
    /// Only events about this plugin ([`Event::plugin`](crate::Event::plugin)).
    pub plugin: Option<String>,
}

impl Filter {
    /// Everything.
    pub fn all() -> Filter {
        Filter::default()
    }
    pub fn kind(mut self, kind: &str) -> Filter {
        self.kinds.push(kind.to_string());
        self
    }
    pub fn run(mut self, run: &str) -> Filter {
        self.run = Some(run.to_string());
        self
    }
    pub fn plugin(mut self, plugin: &str) -> Filter {
        self.plugin = Some(plugin.to_string());
        self
    }
    pub fn matches(&self, r: &Record) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == r.event.kind()))
            && self.run.as_deref().is_none_or(|x| r.event.run() == Some(x))
            && self
                .plugin
                .as_deref()
                .is_none_or(|x| r.event.plugin() == Some(x))
    }
}

/// Frames read in order from a position, up to `end` (the committed
/// length; frames beyond it may be in the middle of being written).
pub(crate) struct FrameReader {
    file: BufReader<File>,
    path: std::path::PathBuf,
    pos: u64,
    end: u64,
    /// The hash of the frame `next` read last (checked against its body).
    pub last_hash: [u8; 32],
}

impl FrameReader {
    pub fn open(path: &Path, end: Option<u64>) -> Result<FrameReader, LogError> {
        let io = |source| LogError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let end = match end {
            Some(e) => e,
            None => file.metadata().map_err(io)?.len(),
        };
        Ok(FrameReader {
            file: BufReader::with_capacity(64 << 10, file),
            path: path.to_owned(),
            pos: 0,
            end,
            last_hash: [0; 32],
        })
    }

    fn bad(&self, at: u64, problem: String) -> LogError {
        LogError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!(
                "no intact frame at byte {at}: {problem}; `charter audit verify` shows the damage"
            )),
        }
    }

    pub fn seek(&mut self, pos: u64) -> Result<(), LogError> {
        if pos != self.pos {
            let delta = pos as i64 - self.pos as i64;
            // Stay inside the buffer when the jump is short.
            self.file
                .seek_relative(delta)
                .map_err(|e| self.bad(pos, e.to_string()))?;
            self.pos = pos;
        }
        Ok(())
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    /// The frame at the current position, checked on its own.
    pub fn next(&mut self) -> Result<(Record, u64), LogError> {
        let at = self.pos;
        if at + FRAME_HEADER_LEN as u64 > self.end {
            return Err(self.bad(at, "past the end of the committed log".into()));
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.file
            .read_exact(&mut header)
            .map_err(|e| self.bad(at, e.to_string()))?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let check = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if check != header_check(len) {
            return Err(self.bad(at, "frame header fails its check".into()));
        }
        let len = len as usize;
        if !(BODY_PREFIX..=MAX_FRAME).contains(&len) {
            return Err(self.bad(at, format!("impossible frame length {len}")));
        }
        let frame_end = at + (FRAME_HEADER_LEN + len + 32) as u64;
        if frame_end > self.end {
            return Err(self.bad(at, "the frame runs past the committed log".into()));
        }
        let mut body = vec![0u8; len + 32];
        self.file
            .read_exact(&mut body)
            .map_err(|e| self.bad(at, e.to_string()))?;
        self.pos = frame_end;
        let (body, stored) = body.split_at(len);
        if hash(body)[..] != stored[..] {
            return Err(self.bad(at, "frame hash mismatch".into()));
        }
        self.last_hash.copy_from_slice(stored);
        let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        match serde_json::from_slice::<Record>(&body[BODY_PREFIX..]) {
            Ok(r) if r.seq == seq => Ok((r, at)),
            Ok(_) => Err(self.bad(at, "payload's seq differs from its frame's".into())),
            Err(e) => Err(self.bad(at, format!("payload is not a valid record ({e})"))),
        }
    }
}

/// The records of the frames at `positions` (byte offsets of frame
/// starts, as the log's commit callback reported them), in the order
/// given. Reads only those frames.
pub fn read_positions(path: &Path, positions: &[u64]) -> Result<Vec<Record>, LogError> {
    read_positions_until(path, positions, None)
}

pub(crate) fn read_positions_until(
    path: &Path,
    positions: &[u64],
    end: Option<u64>,
) -> Result<Vec<Record>, LogError> {
    if positions.is_empty() {
        return Ok(vec![]);
    }
    let mut rd = FrameReader::open(path, end)?;
    let mut out = Vec::with_capacity(positions.len());
    for &p in positions {
        rd.seek(p)?;
        out.push(rd.next()?.0);
    }
    Ok(out)
}

/// Every record of the whole batches from the frame at `position` to the
/// end of the file that `filter` matches, with its position. Frames of a
/// final batch without its end mark are left out (never acknowledged);
/// a frame that does not read — damage, or a torn write a crash left
/// before the log was opened again — is an error: the caller falls back
/// to [`read_records`](crate::read_records), which tells the two apart.
pub fn read_from_position(
    path: &Path,
    position: u64,
    filter: &Filter,
) -> Result<Vec<(Record, u64)>, LogError> {
    let mut rd = FrameReader::open(path, None)?;
    rd.seek(position)?;
    let mut out = Vec::new();
    let mut batch = Vec::new();
    while !rd.at_end() {
        let (r, at) = rd.next()?;
        let end = r.end;
        batch.push((r, at));
        if end {
            out.extend(batch.drain(..).filter(|(r, _)| filter.matches(r)));
        }
    }
    Ok(out)
}

/// [`read_from_position`] bounded by the committed length `end`, whose
/// frames are all whole batches.
pub(crate) fn read_committed(
    path: &Path,
    position: u64,
    end: u64,
    from_seq: u64,
    filter: &Filter,
) -> Result<Vec<(Record, u64)>, LogError> {
    let mut rd = FrameReader::open(path, Some(end))?;
    rd.seek(position)?;
    let mut out = Vec::new();
    while !rd.at_end() {
        let (r, at) = rd.next()?;
        if r.seq >= from_seq && filter.matches(&r) {
            out.push((r, at));
        }
    }
    Ok(out)
}

/// The hash of frame `seq`, reading from `position` (a frame at or before
/// it) up to `end` (the committed length): at most one stride of frames,
/// each checked on its own. `None` if no committed frame holds `seq`.
pub(crate) fn hash_from(
    path: &Path,
    position: u64,
    end: u64,
    seq: u64,
) -> Result<Option<[u8; 32]>, LogError> {
    let mut rd = FrameReader::open(path, Some(end))?;
    rd.seek(position)?;
    while !rd.at_end() {
        let (r, _) = rd.next()?;
        if r.seq == seq {
            return Ok(Some(rd.last_hash));
        }
        if r.seq > seq {
            break;
        }
    }
    Ok(None)
}
