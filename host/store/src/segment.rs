//! Immutable archive segments: sorted `(namespace, key) → value` files
//! that open in constant time and answer a lookup with a binary search of
//! a few `pread`s, whatever they hold.
//!
//! Why they exist: sled 0.34 reads its whole page table when it opens, so
//! a store that keeps every run ever started makes every open (host
//! start-up, `charter runs show` without a host) pay for the deployment's
//! whole history. Entries that no longer change (an ended run's state and
//! per-run event index) move here ([`crate::Store::archive`]); sled keeps
//! what is live. Segments are derived data like the rest of the store:
//! written once, fsync'd, renamed into place, never edited; a segment
//! that fails its checks is an error naming the file (the fix is the
//! store's: move it aside and it is rebuilt from the log).
//!
//! Layout (integers little-endian):
//!
//! ```text
//! MAGIC
//! entry*            u32 ns_len, u32 key_len, u32 val_len, u32 crc32(ns ‖ key ‖ val), ns, key, val
//!                   (sorted by (ns, key) bytes, each pair once)
//! names             u32 n, then n × (u32 len, bytes): the namespaces present
//! bloom             u64 bits, then bits/64 × u64: a Bloom filter of every (ns, key)
//!                   and every (ns, part of a key before a `/`)
//! offsets           count × u64: where each entry starts
//! footer            u64 count, u64 names_at, u64 bloom_at, u64 offsets_at,
//!                   u32 crc32(names ‖ bloom ‖ the four u64s), u32 0, MAGIC
//! ```
//!
//! The Bloom filter (10 bits and 7 probes per item: about 1% false
//! positives) lets a lookup of a key, or of a group of keys ([`Segment::scan_group`]:
//! a run's event index is its head key and the chunks under `head/`),
//! skip the segments that cannot hold it without reading them: a live
//! run's reads cost what they cost before anything was archived. It is
//! read at open: about 1.25 bytes per archived key.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

const MAGIC: &[u8; 8] = b"CHSEG01\n";
const FOOTER: u64 = 8 * 4 + 4 + 4 + 8;
const ENTRY_HEAD: u64 = 16;
/// Bytes read at an entry's start for a comparison: most keys fit, so a
/// binary-search step is usually two `pread`s.
const PEEK: usize = 256;

/// One open segment file.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    file: File,
    count: u64,
    names_at: u64,
    offsets_at: u64,
    names: Vec<String>,
    bloom: Bloom,
    bytes: u64,
}

/// A Bloom filter over `(ns, key)` pairs, with a hash of our own (FNV-1a,
/// then splitmix64 for the second probe stride): it is stored, so it must
/// not change with the standard library.
#[derive(Debug, Default)]
struct Bloom {
    words: Vec<u64>,
}

const BLOOM_PROBES: u64 = 7;
const BLOOM_BITS_PER_ITEM: usize = 10;

fn item_hash(ns: &[u8], key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.iter().chain([&0xff]).chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn stride(h: u64) -> u64 {
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

impl Bloom {
    fn with_items(hashes: &[u64]) -> Bloom {
        let words = (hashes.len() * BLOOM_BITS_PER_ITEM).div_ceil(64).max(1);
        let mut b = Bloom {
            words: vec![0; words],
        };
        for h in hashes {
            for bit in b.bits(*h) {
                b.words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        b
    }
    fn bits(&self, h: u64) -> impl Iterator<Item = u64> + use<> {
        let m = self.words.len() as u64 * 64;
        let step = stride(h);
        (0..BLOOM_PROBES).map(move |i| h.wrapping_add(i.wrapping_mul(step)) % m)
    }
    fn may_hold(&self, ns: &str, key: &str) -> bool {
        if self.words.is_empty() {
            return true;
        }
        self.bits(item_hash(ns.as_bytes(), key.as_bytes()))
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// The items a key puts in the filter: itself and each part before a `/`.
fn bloom_items(ns: &str, key: &str, out: &mut Vec<u64>) {
    out.push(item_hash(ns.as_bytes(), key.as_bytes()));
    for (i, _) in key.match_indices('/') {
        out.push(item_hash(ns.as_bytes(), &key.as_bytes()[..i]));
    }
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Archive {
        path: path.display().to_string(),
        detail: what.to_string(),
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    corrupt(path, e)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// An entry's place and the lengths of its parts.
struct Head {
    at: u64,
    ns: u64,
    key: u64,
    val: u64,
    crc: u32,
}

impl Segment {
    /// Open `path`, reading only its footer and namespace list.
    pub fn open(path: &Path) -> Result<Segment, StoreError> {
        let file = File::open(path).map_err(|e| io(path, e))?;
        let bytes = file.metadata().map_err(|e| io(path, e))?.len();
        if bytes < MAGIC.len() as u64 + FOOTER {
            return Err(corrupt(path, "shorter than a segment's header and footer"));
        }
        let mut foot = [0u8; FOOTER as usize];
        file.read_exact_at(&mut foot, bytes - FOOTER)
            .map_err(|e| io(path, e))?;
        if &foot[40..48] != MAGIC {
            return Err(corrupt(path, "not a Charter archive segment (bad footer)"));
        }
        let (count, names_at, bloom_at, offsets_at) = (
            u64_at(&foot, 0),
            u64_at(&foot, 8),
            u64_at(&foot, 16),
            u64_at(&foot, 24),
        );
        let fits = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(offsets_at))
            .is_some_and(|end| end == bytes - FOOTER);
        if !fits || names_at < MAGIC.len() as u64 || names_at > bloom_at || bloom_at > offsets_at {
            return Err(corrupt(path, "footer does not describe the file"));
        }
        let mut block = vec![0u8; (offsets_at - names_at) as usize];
        file.read_exact_at(&mut block, names_at)
            .map_err(|e| io(path, e))?;
        let mut h = crc32fast::Hasher::new();
        h.update(&block);
        h.update(&foot[..32]);
        if h.finalize() != u32_at(&foot, 32) {
            return Err(corrupt(path, "footer checksum mismatch"));
        }
        let (names_block, bloom_block) = block.split_at((bloom_at - names_at) as usize);
        let names =
            parse_names(names_block).ok_or_else(|| corrupt(path, "unreadable namespace list"))?;
        let bloom =
            parse_bloom(bloom_block).ok_or_else(|| corrupt(path, "unreadable Bloom filter"))?;
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0).map_err(|e| io(path, e))?;
        if &head != MAGIC {
            return Err(corrupt(path, "not a Charter archive segment (bad header)"));
        }
        Ok(Segment {
            path: path.to_path_buf(),
            file,
            count,
            names_at,
            offsets_at,
            names,
            bloom,
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether any entry is in namespace `ns`.
    pub fn has_ns(&self, ns: &str) -> bool {
        self.names.iter().any(|n| n == ns)
    }

    pub fn namespaces(&self) -> &[String] {
        &self.names
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), StoreError> {
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| io(&self.path, e))
    }

    fn offset(&self, i: u64) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.read_at(&mut b, self.offsets_at + 8 * i)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Entry `i`'s head and its `(ns, key)` bytes.
    fn entry_key(&self, i: u64) -> Result<(Head, Vec<u8>), StoreError> {
        let at = self.offset(i)?;
        let room = self.names_at.saturating_sub(at);
        if room < ENTRY_HEAD {
            return Err(corrupt(
                &self.path,
                format!("entry {i} starts past the entries"),
            ));
        }
        let mut buf = vec![0u8; (PEEK as u64).min(room) as usize];
        self.read_at(&mut buf, at)?;
        let head = Head {
            at,
            ns: u32_at(&buf, 0).into(),
            key: u32_at(&buf, 4).into(),
            val: u32_at(&buf, 8).into(),
            crc: u32_at(&buf, 12),
        };
        if ENTRY_HEAD + head.ns + head.key + head.val > room {
            return Err(corrupt(
                &self.path,
                format!("entry {i} runs past the entries"),
            ));
        }
        let want = (ENTRY_HEAD + head.ns + head.key) as usize;
        if buf.len() < want {
            buf.resize(want, 0);
            self.read_at(&mut buf[PEEK..], at + PEEK as u64)?;
        }
        buf.truncate(want);
        buf.drain(..ENTRY_HEAD as usize);
        Ok((head, buf))
    }

    /// The first entry not before `(ns, key)`, and whether it is that key.
    fn lower_bound(&self, ns: &str, key: &str) -> Result<(u64, bool), StoreError> {
        let (mut lo, mut hi) = (0, self.count);
        // Keys are unique and sorted: a probe that finds the key is where
        // the search ends.
        let mut exact = false;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (h, nk) = self.entry_key(mid)?;
            let (n, k) = nk.split_at(h.ns as usize);
            match (n, k).cmp(&(ns.as_bytes(), key.as_bytes())) {
                std::cmp::Ordering::Less => lo = mid + 1,
                o => {
                    exact |= o == std::cmp::Ordering::Equal;
                    hi = mid;
                }
            }
        }
        Ok((lo, exact))
    }

    /// The value of `(ns, key)`, if this segment holds it.
    pub fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        if !self.has_ns(ns) || self.count == 0 || !self.bloom.may_hold(ns, key) {
            return Ok(None);
        }
        let (i, exact) = self.lower_bound(ns, key)?;
        if !exact {
            return Ok(None);
        }
        let (h, nk) = self.entry_key(i)?;
        if nk.len() != ns.len() + key.len()
            || !nk.starts_with(ns.as_bytes())
            || !nk.ends_with(key.as_bytes())
        {
            return Err(corrupt(&self.path, "entries out of order"));
        }
        let mut val = vec![0u8; h.val as usize];
        self.read_at(&mut val, h.at + ENTRY_HEAD + h.ns + h.key)?;
        self.checked(&h, &nk, val).map(Some)
    }

    fn checked(&self, h: &Head, nk: &[u8], val: Vec<u8>) -> Result<String, StoreError> {
        let mut c = crc32fast::Hasher::new();
        c.update(nk);
        c.update(&val);
        if c.finalize() != h.crc {
            return Err(corrupt(
                &self.path,
                format!("entry at byte {} fails its checksum", h.at),
            ));
        }
        String::from_utf8(val)
            .map_err(|_| corrupt(&self.path, format!("entry at byte {} is not UTF-8", h.at)))
    }

    /// Every `(key, value)` of namespace `ns` whose key starts with
    /// `prefix`, in key order.
    pub fn scan_prefix(&self, ns: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        if !self.has_ns(ns) || self.count == 0 {
            return Ok(Vec::new());
        }
        let (i, _) = self.lower_bound(ns, prefix)?;
        if i == self.count {
            return Ok(Vec::new());
        }
        // Most scans find nothing here: look at the first entry before
        // reading on in bulk.
        let (h, nk) = self.entry_key(i)?;
        if nk.len() < ns.len() + prefix.len()
            || &nk[..h.ns as usize] != ns.as_bytes()
            || !nk[h.ns as usize..].starts_with(prefix.as_bytes())
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for e in self.entries_from(h.at) {
            let (n, k, v) = e?;
            if n != ns || !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// The group `group` of namespace `ns`: the key `group` and every key
    /// under `group/`, in key order. The Bloom filter answers most calls
    /// for a group this segment does not hold without a read.
    pub fn scan_group(&self, ns: &str, group: &str) -> Result<Vec<(String, String)>, StoreError> {
        if !self.has_ns(ns) || self.count == 0 || !self.bloom.may_hold(ns, group) {
            return Ok(Vec::new());
        }
        let mut out = self.scan_prefix(ns, group)?;
        out.retain(|(k, _)| in_group(k, group));
        Ok(out)
    }

    /// Every entry, in order.
    pub fn entries(&self) -> Entries<'_> {
        self.entries_from(MAGIC.len() as u64)
    }

    fn entries_from(&self, at: u64) -> Entries<'_> {
        // A prefix scan reads a few entries; a whole-segment read (a
        // merge, a namespace scan) refills this often enough.
        let mut f = BufReader::with_capacity(
            if at == MAGIC.len() as u64 {
                64 << 10
            } else {
                4 << 10
            },
            &self.file,
        );
        let sought = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at));
        Entries {
            seg: self,
            f,
            at,
            failed: sought.err().map(|e| io(&self.path, e)),
        }
    }
}

/// Whether `key` is `group` or under `group/`.
pub fn in_group(key: &str, group: &str) -> bool {
    key.strip_prefix(group)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn parse_bloom(b: &[u8]) -> Option<Bloom> {
    let bits = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
    let words = b.get(8..)?;
    if bits % 64 != 0 || words.len() as u64 * 8 != bits {
        return None;
    }
    Some(Bloom {
        words: words
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect(),
    })
}

fn parse_names(b: &[u8]) -> Option<Vec<String>> {
    let n = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let mut at = 4;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        out.push(String::from_utf8(b.get(at..at + len)?.to_vec()).ok()?);
        at += len;
    }
    (at == b.len()).then_some(out)
}

/// A segment's entries read in order from a position.
pub struct Entries<'a> {
    seg: &'a Segment,
    f: BufReader<&'a File>,
    at: u64,
    failed: Option<StoreError>,
}

impl Iterator for Entries<'_> {
    type Item = Result<(String, String, String), StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.at = self.seg.names_at;
            return Some(Err(e));
        }
        if self.at >= self.seg.names_at {
            return None;
        }
        Some(self.read_one().inspect_err(|_| self.at = self.seg.names_at))
    }
}

impl Entries<'_> {
    fn read_one(&mut self) -> Result<(String, String, String), StoreError> {
        let path = &self.seg.path;
        let mut b = [0u8; ENTRY_HEAD as usize];
        self.f.read_exact(&mut b).map_err(|e| io(path, e))?;
        let h = Head {
            at: self.at,
            ns: u32_at(&b, 0).into(),
            key: u32_at(&b, 4).into(),
            val: u32_at(&b, 8).into(),
            crc: u32_at(&b, 12),
        };
        let len = h.ns + h.key + h.val;
        if self.at + ENTRY_HEAD + len > self.seg.names_at {
            return Err(corrupt(
                path,
                format!("entry at byte {} runs past the entries", h.at),
            ));
        }
        let mut nk = vec![0u8; (h.ns + h.key) as usize];
        self.f.read_exact(&mut nk).map_err(|e| io(path, e))?;
        let mut val = vec![0u8; h.val as usize];
        self.f.read_exact(&mut val).map_err(|e| io(path, e))?;
        self.at += ENTRY_HEAD + len;
        let v = self.seg.checked(&h, &nk, val)?;
        let k = nk.split_off(h.ns as usize);
        let text = |b: Vec<u8>| {
            String::from_utf8(b)
                .map_err(|_| corrupt(path, format!("entry at byte {} is not UTF-8", h.at)))
        };
        Ok((text(nk)?, text(k)?, v))
    }
}

/// Write a segment of `entries` (sorted by `(ns, key)`, each once) at
/// `path`: written beside it, fsync'd, renamed into place, the directory
/// fsync'd. Returns the file's size.
pub fn write(
    path: &Path,
    entries: impl IntoIterator<Item = Result<(String, String, String), StoreError>>,
) -> Result<u64, StoreError> {
    let tmp = path.with_extension("tmp");
    let f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(256 << 10, f);
    let e = |e| io(&tmp, e);
    w.write_all(MAGIC).map_err(e)?;
    let mut at = MAGIC.len() as u64;
    let mut offsets: Vec<u64> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut last: Option<(String, String)> = None;
    let mut items: Vec<u64> = Vec::new();
    for entry in entries {
        let (ns, key, val) = entry?;
        let k = (ns, key);
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(corrupt(&tmp, "entries out of order (a bug in the writer)"));
        }
        let (ns, key) = k;
        if names.last() != Some(&ns) {
            names.push(ns.clone());
        }
        bloom_items(&ns, &key, &mut items);
        let mut c = crc32fast::Hasher::new();
        c.update(ns.as_bytes());
        c.update(key.as_bytes());
        c.update(val.as_bytes());
        offsets.push(at);
        for n in [ns.len(), key.len(), val.len()] {
            let n = u32::try_from(n).map_err(|_| corrupt(&tmp, "an entry over 4 GiB"))?;
            w.write_all(&n.to_le_bytes()).map_err(e)?;
        }
        w.write_all(&c.finalize().to_le_bytes()).map_err(e)?;
        for part in [&ns, &key, &val] {
            w.write_all(part.as_bytes()).map_err(e)?;
        }
        at += ENTRY_HEAD + (ns.len() + key.len() + val.len()) as u64;
        last = Some((ns, key));
    }
    let names_at = at;
    let mut block = Vec::new();
    block.extend_from_slice(&(names.len() as u32).to_le_bytes());
    for n in &names {
        block.extend_from_slice(&(n.len() as u32).to_le_bytes());
        block.extend_from_slice(n.as_bytes());
    }
    let bloom_at = names_at + block.len() as u64;
    let bloom = Bloom::with_items(&items);
    block.extend_from_slice(&(bloom.words.len() as u64 * 64).to_le_bytes());
    for w in &bloom.words {
        block.extend_from_slice(&w.to_le_bytes());
    }
    w.write_all(&block).map_err(e)?;
    let offsets_at = names_at + block.len() as u64;
    for o in &offsets {
        w.write_all(&o.to_le_bytes()).map_err(e)?;
    }
    let mut foot = Vec::with_capacity(FOOTER as usize);
    foot.extend_from_slice(&(offsets.len() as u64).to_le_bytes());
    foot.extend_from_slice(&names_at.to_le_bytes());
    foot.extend_from_slice(&bloom_at.to_le_bytes());
    foot.extend_from_slice(&offsets_at.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&block);
    c.update(&foot);
    foot.extend_from_slice(&c.finalize().to_le_bytes());
    foot.extend_from_slice(&0u32.to_le_bytes());
    foot.extend_from_slice(MAGIC);
    w.write_all(&foot).map_err(e)?;
    let f = w.into_inner().map_err(|err| io(&tmp, err.into_error()))?;
    f.sync_all().map_err(e)?;
    let bytes = f.metadata().map_err(e)?.len();
    drop(f);
    std::fs::rename(&tmp, path).map_err(|err| io(path, err))?;
    sync_dir(path)?;
    Ok(bytes)
}

/// fsync the directory holding `path` (a rename or removal in it lasts).
pub fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Merge segments, newest last: for a key in several, the newest's
/// value; `keep` filters entries out. Sorted as [`write()`] wants.
pub fn merged<'a>(
    segs: &'a [std::sync::Arc<Segment>],
    keep: &'a dyn Fn(&str, &str) -> bool,
) -> impl Iterator<Item = Result<(String, String, String), StoreError>> + 'a {
    let mut its: Vec<std::iter::Peekable<Entries<'a>>> =
        segs.iter().map(|s| s.entries().peekable()).collect();
    std::iter::from_fn(move || {
        loop {
            // The smallest key at the heads; among equals the newest wins.
            let mut best: Option<(usize, (String, String))> = None;
            for (i, it) in its.iter_mut().enumerate() {
                match it.peek() {
                    None => {}
                    Some(Err(_)) => return it.next(),
                    Some(Ok((n, k, _))) => {
                        let key = (n.clone(), k.clone());
                        if best.as_ref().is_none_or(|(_, b)| key <= *b) {
                            best = Some((i, key));
                        }
                    }
                }
            }
            let (winner, key) = best?;
            let mut out = None;
            for (i, it) in its.iter_mut().enumerate() {
                if matches!(it.peek(), Some(Ok((n, k, _))) if *n == key.0 && *k == key.1) {
                    let e = it.next().expect("peeked");
                    if i == winner {
                        out = Some(e);
                    }
                }
            }
            match out {
                Some(Ok((n, k, v))) if keep(&n, &k) => return Some(Ok((n, k, v))),
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entries(pairs: &[(&str, &str, &str)]) -> Vec<Result<(String, String, String), StoreError>> {
        pairs
            .iter()
            .map(|(n, k, v)| Ok((n.to_string(), k.to_string(), v.to_string())))
            .collect()
    }

    #[test]
    fn writes_and_finds_every_entry_by_binary_search() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.seg");
        let mut all = Vec::new();
        for i in 0..1000 {
            let long = "k".repeat(i % 400);
            all.push((
                "@runs".to_string(),
                format!("r{i:04}{long}"),
                format!("v{i}"),
            ));
        }
        all.push(("@z".to_string(), String::new(), "empty key".to_string()));
        all.sort();
        write(&p, all.clone().into_iter().map(Ok)).unwrap();
        let s = Segment::open(&p).unwrap();
        assert_eq!(s.namespaces(), ["@runs", "@z"]);
        for (n, k, v) in &all {
            assert_eq!(s.get(n, k).unwrap().as_deref(), Some(v.as_str()), "{k}");
        }
        assert_eq!(s.get("@runs", "r").unwrap(), None);
        assert_eq!(s.get("@runs", "zzz").unwrap(), None);
        assert_eq!(s.get("@other", "r0001").unwrap(), None);
        let p12 = s.scan_prefix("@runs", "r012").unwrap();
        assert_eq!(p12.len(), 10);
        assert!(p12.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(s.scan_prefix("@runs", "").unwrap().len(), 1000);
        assert_eq!(s.entries().count(), 1001);
    }

    /// A group is its head key and what is under `head/`, nothing that
    /// merely shares characters; keys and groups absent are answered by
    /// the filter almost always (at most a few percent read the file).
    #[test]
    fn groups_and_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.seg");
        let mut all = Vec::new();
        for i in 0..2000 {
            all.push((
                "@e".to_string(),
                format!("{}:r{i}", format!("r{i}").len()),
                "h".to_string(),
            ));
            all.push((
                "@e".to_string(),
                format!("{}:r{i}/{:020}", format!("r{i}").len(), 7),
                "c".to_string(),
            ));
        }
        all.push((
            "@e".to_string(),
            "4:r1/x".to_string(),
            "look-alike".to_string(),
        ));
        all.sort();
        write(&p, all.into_iter().map(Ok)).unwrap();
        let s = Segment::open(&p).unwrap();
        let g = s.scan_group("@e", "2:r1").unwrap();
        assert_eq!(
            g.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
            ["h", "c"]
        );
        assert_eq!(s.scan_group("@e", "4:r1/x").unwrap().len(), 1);
        assert!(s.scan_group("@e", "2:r").unwrap().is_empty());
        let hits = (2000..4000)
            .filter(|i| s.bloom.may_hold("@e", &format!("4:r{i}")))
            .count();
        assert!(hits < 100, "{hits} of 2000 absent groups pass the filter");
        assert!(
            !in_group("2:r10", "2:r1") && in_group("2:r1/5", "2:r1") && in_group("2:r1", "2:r1")
        );
    }

    #[test]
    fn an_empty_segment_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.seg");
        write(&p, std::iter::empty()).unwrap();
        let s = Segment::open(&p).unwrap();
        assert_eq!(s.get("a", "b").unwrap(), None);
        assert_eq!(s.entries().count(), 0);
    }

    #[test]
    fn out_of_order_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.seg");
        let e = write(&p, entries(&[("a", "2", "x"), ("a", "1", "y")])).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
        assert!(!p.exists());
    }

    /// Damage anywhere is an error naming the file, never a wrong answer
    /// or a panic.
    #[test]
    fn a_damaged_segment_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.seg");
        write(
            &p,
            entries(&[("a", "k1", "value one"), ("a", "k2", "value two")]),
        )
        .unwrap();
        let good = std::fs::read(&p).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x41;
            std::fs::write(&p, &bad).unwrap();
            let read = Segment::open(&p).and_then(|s| {
                let a = s.get("a", "k1")?;
                let b = s.get("a", "k2")?;
                let all: Result<Vec<_>, _> = s.entries().collect();
                Ok((a, b, all?.len()))
            });
            match read {
                Err(e) => assert!(e.to_string().contains("d.seg"), "{e}"),
                // A flipped byte the format does not read (the footer's
                // reserved word) changes nothing.
                Ok(r) => assert_eq!(
                    r,
                    (Some("value one".into()), Some("value two".into()), 2),
                    "byte {at} changed an answer"
                ),
            }
        }
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        assert!(Segment::open(&p).is_err());
    }

    #[test]
    fn merging_keeps_the_newest_value_and_drops_what_is_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("1.seg"), dir.path().join("2.seg"));
        write(
            &a,
            entries(&[("n", "a", "old"), ("n", "b", "keep"), ("n", "c", "gone")]),
        )
        .unwrap();
        write(&b, entries(&[("n", "a", "new"), ("n", "d", "added")])).unwrap();
        let segs = [
            Arc::new(Segment::open(&a).unwrap()),
            Arc::new(Segment::open(&b).unwrap()),
        ];
        let keep = |_: &str, k: &str| k != "c";
        let out: Vec<_> = merged(&segs, &keep).map(Result::unwrap).collect();
        let keys: Vec<_> = out
            .iter()
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(keys, [("a", "new"), ("b", "keep"), ("d", "added")]);
    }
}
