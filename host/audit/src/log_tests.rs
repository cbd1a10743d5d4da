//! Durability tests: damage versus torn writes, bounds on what is written,
//! and crashes at every I/O boundary.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Value, json};

use super::*;
use crate::fault::{Fault, Torn};
use crate::frame::{header_check, nesting_depth};

/// Serialises the test that spawns processes against the tests that open
/// logs: a child holds copies of the parent's descriptors between fork
/// and exec, and with them the lock of a log another test just closed.
static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Taken by every test that opens logs.
pub(crate) fn no_spawning() -> std::sync::RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Events are built from JSON so that fields others add (with defaults)
/// do not break these tests.
fn event(v: Value) -> Event {
    serde_json::from_value(v).unwrap()
}

/// A kv write of key `k{i}`: the event the log's own tests append.
pub(crate) fn ev(i: u64) -> Event {
    kv(&format!("k{i}"), "v".into())
}

fn kv(key: &str, value: String) -> Event {
    event(json!({"type": "kv-write", "plugin": "p", "key": key, "value": value}))
}

fn run_started(input: Value) -> Event {
    event(json!({
        "type": "run-started", "run": "r1", "workflow": "w",
        "workflow_digest": "sha256:00", "input": input, "first": "a",
    }))
}

/// A value of exactly `depth` (arrays and objects alternating).
fn deep(depth: usize) -> Value {
    let mut v = json!("leaf \"[{\\");
    for i in 0..depth {
        v = if i % 2 == 0 {
            json!([v, 1])
        } else {
            json!({"k": v, "[": "{"})
        };
    }
    assert_eq!(json_depth(&v), depth);
    v
}

fn open_plain(path: &Path, sync: bool) -> Result<EventLog, LogError> {
    EventLog::open_inner(path, 0, Box::new(|_, _| Ok(())), sync, None)
}

/// (start, end) of each frame of a well-formed log file.
fn frame_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
    assert_eq!(bytes[..8], LOG_MAGIC);
    let mut out = Vec::new();
    let mut at = LOG_MAGIC.len();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + FRAME_HEADER_LEN + len + 32;
        assert!(end <= bytes.len());
        out.push((at, end));
        at = end;
    }
    out
}

fn events(path: &Path) -> Vec<Event> {
    read_records(path)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

fn assert_verifies(path: &Path, frames: u64) {
    let v = verify(path).unwrap();
    assert!(v.ok(), "{:?}", v.findings);
    assert_eq!(v.frames, frames);
    assert_eq!(v.last_seq, frames);
}

#[test]
fn crc32c_and_header_check() {
    assert_eq!(crate::frame::crc32c(b"123456789"), 0xE306_9283);
    assert_ne!(header_check(0), 0, "an all-zero header must not pass");
    let mut rng = Rng(7);
    let mut lens = vec![
        0u32,
        40,
        41,
        100,
        255,
        256,
        65_536,
        MAX_FRAME as u32,
        u32::MAX,
    ];
    lens.extend((0..40).map(|_| rng.next() as u32 % (MAX_FRAME as u32 + 1)));
    for len in lens {
        let header = (len as u64) | ((header_check(len) as u64) << 32);
        let ok = |h: u64| header_check(h as u32) == (h >> 32) as u32;
        assert!(ok(header));
        for i in 0..64 {
            assert!(!ok(header ^ (1 << i)), "len {len}: bit {i}");
            for j in i + 1..64 {
                assert!(!ok(header ^ (1 << i) ^ (1 << j)), "len {len}: bits {i} {j}");
            }
        }
    }
}

#[test]
fn nesting_depth_scans_outside_strings() {
    assert_eq!(nesting_depth(b"1"), 0);
    assert_eq!(nesting_depth(br#"{"a":[1,{"b":"]]]}"}]}"#), 3);
    assert_eq!(nesting_depth(br#"["\"[[[", "\\", ["x"]]"#), 2);
    assert_eq!(nesting_depth(br#"{"\\\"{{":{}}"#), 2);
    for d in [0, 1, 2, 5, 63, 99, 100, 130] {
        let v = deep(d);
        assert_eq!(nesting_depth(&serde_json::to_vec(&v).unwrap()), d);
    }
}

/// Random JSON of exactly `depth`, its other branches shallow.
fn value(rng: &mut Rng, depth: usize) -> Value {
    if depth == 0 {
        return scalar(rng);
    }
    let spine = value(rng, depth - 1);
    let others: Vec<Value> = (0..rng.below(4))
        .map(|_| {
            let d = rng.below(depth.min(3));
            value(rng, d)
        })
        .collect();
    if rng.below(2) == 0 {
        let mut a = others;
        let at = rng.below(a.len() + 1);
        a.insert(at, spine);
        Value::Array(a)
    } else {
        let mut m = serde_json::Map::new();
        for o in others {
            m.insert(string(rng), o);
        }
        m.insert(format!("spine{}", string(rng)), spine);
        Value::Object(m)
    }
}

fn string(rng: &mut Rng) -> String {
    const POOL: &[char] = &[
        'a',
        'Z',
        '0',
        ' ',
        '"',
        '\\',
        '/',
        '\n',
        '\r',
        '\t',
        '\u{0}',
        '\u{1}',
        '\u{1f}',
        '\u{7f}',
        '[',
        ']',
        '{',
        '}',
        ':',
        ',',
        'é',
        'ß',
        '€',
        '日',
        '\u{2028}',
        '\u{feff}',
        '𝄞',
        '😀',
        '\u{10ffff}',
    ];
    (0..rng.below(24))
        .map(|_| POOL[rng.below(POOL.len())])
        .collect()
}

/// Whether the fuzz test uses floats of every precision. serde_json reads
/// a float back exactly only when its significand has at most 15 digits
/// and its exponent is small, unless its `float_roundtrip` feature is on,
/// which the workspace does not enable (yet): without it
/// `-1.4958701672603308e-186` reads back as `-1.495870167260331e-186`, so
/// a record read from the log can differ from the one appended. Until
/// then the fuzz test's floats are `m * 10^-k`, m < 10^15, k <= 15.
static FULL_PRECISION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn float(rng: &mut Rng) -> f64 {
    let sign = if rng.below(2) == 0 { "" } else { "-" };
    if !FULL_PRECISION.load(Ordering::Relaxed) {
        const SPECIAL: &[f64] = &[
            0.1,
            -0.0,
            1e308,
            -1e-308,
            1.5,
            123456.789,
            0.30000000000000004,
        ];
        if rng.below(4) == 0 {
            return SPECIAL[rng.below(SPECIAL.len())];
        }
        let (m, k) = (rng.next() % 1_000_000_000_000_000, rng.below(16));
        return format!("{sign}{m}e-{k}").parse().unwrap();
    }
    if rng.below(4) == 0 {
        const SPECIAL: &[f64] = &[
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -1.4958701672603308e-186,
        ];
        return SPECIAL[rng.below(SPECIAL.len())];
    }
    loop {
        let f = f64::from_bits(rng.next());
        if f.is_finite() {
            return f;
        }
    }
}

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(11) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => json!(u64::MAX),
        3 => json!(i64::MIN),
        4 => json!(rng.next()),
        5 => json!(-((rng.next() >> 1) as i64)),
        6 => json!(float(rng)),
        7 => json!((rng.next() % 1_000_000) as f64 / 1000.0),
        _ => Value::String(string(rng)),
    }
}

#[test]
fn random_values_round_trip() {
    values_round_trip(0x5EED_1234_ABCD_0001);
}

/// The same with floats of full precision: needs serde_json's
/// `float_roundtrip` feature (see [`FULL_PRECISION`]).
#[test]
fn random_full_precision_floats_round_trip() {
    FULL_PRECISION.store(true, Ordering::Relaxed);
    values_round_trip(0x5EED_1234_ABCD_0002);
}

fn values_round_trip(seed: u64) {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let log = open_plain(&path, false).unwrap();
    let mut rng = Rng(seed);
    let mut expected = Vec::new();
    while expected.len() < 300 {
        let batch: Vec<Event> = (0..1 + rng.below(5))
            .map(|_| {
                let d = rng.below(MAX_VALUE_DEPTH + 1);
                let v = value(&mut rng, d);
                assert_eq!(json_depth(&v), d);
                match rng.below(3) {
                    0 => run_started(v),
                    1 => event(json!({
                        "type": "call", "call": "c", "plugin": string(&mut rng),
                        "digest": "d", "function": "f", "args_digest": json_digest(&v),
                        "args": v, "decision": "allow", "policies": [string(&mut rng)],
                    })),
                    _ => event(json!({
                        "type": "call-result", "call": "c", "plugin": "p", "function": "f",
                        "ok": true, "summary": string(&mut rng), "duration_us": rng.next(),
                        "result": v,
                    })),
                }
            })
            .collect();
        let seq = log.append_blocking(batch.clone()).unwrap();
        expected.extend(batch);
        assert_eq!(seq, expected.len() as u64);
    }
    drop(log);
    let log = EventLog::open(&path).unwrap();
    drop(log);
    assert_verifies(&path, expected.len() as u64);
    let got = events(&path);
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "event {}", i + 1);
    }
}

/// A log of a few hundred frames of varied sizes, one over 1 MiB and one
/// as deep as the log accepts. Returns the file's bytes.
fn varied_log(path: &Path, frames: usize, seed: u64) -> Vec<u8> {
    let log = open_plain(path, false).unwrap();
    let mut rng = Rng(seed);
    let mut n = 0;
    while n < frames {
        let batch: Vec<Event> = (0..(1 + rng.below(4)).min(frames - n))
            .map(|_| {
                n += 1;
                if n == frames / 3 {
                    return kv("big", "b".repeat(1_200_000));
                }
                if n == frames / 2 {
                    return run_started(deep(MAX_RECORD_DEPTH - 1));
                }
                let size = match rng.below(10) {
                    0 => 5_000 + rng.below(30_000),
                    1..=3 => 200 + rng.below(2_000),
                    _ => rng.below(100),
                };
                kv(&format!("k{n}"), "v".repeat(size))
            })
            .collect();
        log.append_blocking(batch).unwrap();
    }
    drop(log);
    std::fs::read(path).unwrap()
}

#[test]
fn every_bit_flip_in_an_earlier_frame_refuses_open() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let clean = varied_log(&path, 300, 0xF1_1B5);
    let bounds = frame_bounds(&clean);
    let n = bounds.len();
    assert_eq!(n, 300);
    assert!(bounds.iter().any(|(s, e)| e - s > 1 << 20));
    assert_verifies(&path, n as u64);

    let mut rng = Rng(0xDEAD_BEEF_1234_5678);
    // Frames at the start, the middle (the deep one) and just before the
    // end are flipped in every header bit; these and random others in
    // random bits of every field.
    let exhaustive: Vec<usize> = vec![0, 1, 2, n / 3 - 1, n / 2 - 1, n / 2, n - 4, n - 3, n - 2];
    let mut chosen = exhaustive.clone();
    chosen.extend([3, 4, n / 2 + 1, n - 5, n - 6]);
    while chosen.len() < 70 {
        chosen.push(rng.below(n - 1));
    }
    let mut flips = 0;
    let mut fields = std::collections::BTreeMap::<&str, usize>::new();
    for &i in &chosen {
        assert!(i < n - 1, "only earlier frames");
        let (s, e) = bounds[i];
        let field_ranges = [
            ("len", s, s + 4),
            ("check", s + 4, s + 8),
            ("seq", s + 8, s + 16),
            ("prev", s + 16, s + 48),
            ("payload", s + 48, e - 32),
            ("hash", e - 32, e),
        ];
        for (field, a, b) in field_ranges {
            let bits: Vec<usize> = if exhaustive.contains(&i) && b - a <= 4 {
                (0..(b - a) * 8).collect()
            } else {
                (0..3).map(|_| rng.below((b - a) * 8)).collect()
            };
            for bit in bits {
                let mut m = clean.clone();
                m[a + bit / 8] ^= 1 << (bit % 8);
                std::fs::write(&path, &m).unwrap();
                let err = EventLog::open(&path)
                    .err()
                    .unwrap_or_else(|| panic!("frame {i} {field} bit {bit}: opened"))
                    .to_string();
                assert!(
                    err.contains(&format!("byte {s} (seq {})", i + 1)),
                    "frame {i} {field} bit {bit}: {err}"
                );
                assert!(err.contains("backup") && err.contains("aside"), "{err}");
                let v = verify(&path).unwrap();
                assert_eq!(v.findings.len(), 1, "frame {i} {field} bit {bit}");
                assert_eq!(v.findings[0].offset, s as u64);
                assert!(!v.findings[0].problem.contains("torn"), "{:?}", v.findings);
                // Frames of whole batches before the damage.
                assert!(v.frames <= i as u64);
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    m,
                    "a refused open changes nothing"
                );
                flips += 1;
                *fields.entry(field).or_default() += 1;
            }
        }
    }
    eprintln!("{flips} flips refused: {fields:?}");
    assert!(flips >= 500);
    std::fs::write(&path, &clean).unwrap();
    drop(EventLog::open(&path).unwrap());
    assert_verifies(&path, n as u64);
}

/// A log whose final frame is a few hundred bytes.
fn small_log(path: &Path, frames: u64) -> Vec<u8> {
    let log = open_plain(path, false).unwrap();
    for i in 1..frames {
        log.append_blocking(vec![ev(i)]).unwrap();
    }
    log.append_blocking(vec![kv("last", "x".repeat(300))])
        .unwrap();
    drop(log);
    std::fs::read(path).unwrap()
}

/// Open must succeed, leaving exactly `frames` intact frames; appending
/// then continues at the next seq.
fn assert_repaired(path: &Path, frames: u64, what: &str) {
    let log = EventLog::open(path).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_verifies(path, frames);
    assert_eq!(
        log.append_blocking(vec![ev(999)]).unwrap(),
        frames + 1,
        "{what}"
    );
    drop(log);
    assert_verifies(path, frames + 1);
}

#[test]
fn every_truncation_of_the_final_frame_is_cut() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let clean = small_log(&path, 30);
    let bounds = frame_bounds(&clean);
    let (s, e) = *bounds.last().unwrap();
    assert!(e - s > 300);
    for t in s..e {
        std::fs::write(&path, &clean[..t]).unwrap();
        let v = verify(&path).unwrap();
        assert!(v.ok(), "cut at {t}: {:?}", v.findings);
        assert_eq!(v.frames, 29);
        if t > s {
            let torn = v.torn.unwrap();
            assert!(torn.problem.contains("torn final frame"), "{torn:?}");
            assert_eq!((torn.offset, torn.seq), (s as u64, Some(30)));
        } else {
            assert!(v.torn.is_none());
        }
        assert_repaired(&path, 29, &format!("cut at {t}"));
    }
}

#[test]
fn a_zero_filled_tail_is_cut() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let clean = small_log(&path, 30);
    let (s, e) = *frame_bounds(&clean).last().unwrap();
    // Zeros after the last frame: nothing is lost.
    for k in [1, 3, 7, 8, 9, 100, 4096, 70_000] {
        let mut b = clean.clone();
        b.resize(b.len() + k, 0);
        std::fs::write(&path, &b).unwrap();
        let v = verify(&path).unwrap();
        assert!(v.ok() && v.torn.unwrap().offset == e as u64, "{k} zeros");
        assert_repaired(&path, 30, &format!("{k} zeros"));
    }
    // The final frame written only up to `t`, zeros after (to its end or
    // beyond): a power cut.
    for t in s..e {
        for extra in [0, 1000] {
            let mut b = clean.clone();
            b[t..].fill(0);
            b.resize(b.len() + extra, 0);
            std::fs::write(&path, &b).unwrap();
            let what = format!("zeros from {t} (+{extra})");
            let zeros = b.len() - b.iter().rposition(|&x| x != 0).unwrap() - 1;
            if b[..e] == clean[..] {
                assert_repaired(&path, 30, &what);
            } else if zeros >= 8 || t < s + FRAME_HEADER_LEN {
                assert_repaired(&path, 29, &what);
            } else {
                // Fewer than 8 zero bytes ending a frame that does not
                // verify: as likely a damaged hash as a torn write.
                let err = EventLog::open(&path).unwrap_err().to_string();
                assert!(err.contains(&format!("byte {s} (seq 30)")), "{what}: {err}");
            }
        }
    }
    // Zeros inside the final frame with data after them are damage.
    let mut b = clean.clone();
    b[s + 60..s + 70].fill(0);
    std::fs::write(&path, &b).unwrap();
    let err = EventLog::open(&path).unwrap_err().to_string();
    assert!(err.contains(&format!("byte {s} (seq 30)")), "{err}");
    // So is a zeroed earlier frame.
    let (s2, e2) = frame_bounds(&clean)[10];
    let mut b = clean.clone();
    b[s2..e2].fill(0);
    std::fs::write(&path, &b).unwrap();
    let err = EventLog::open(&path).unwrap_err().to_string();
    assert!(err.contains(&format!("byte {s2} (seq 11)")), "{err}");
}

/// A truncation that removes more than the final frame: open cuts the
/// frame it ends in (torn) and leaves a shorter valid log — from the file
/// alone that is a crash that lost an unacknowledged tail. Only a
/// checkpoint of a later frame tells the difference, and does.
#[test]
fn truncation_into_earlier_frames_leaves_a_shorter_valid_log() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let clean = small_log(&path, 30);
    let cp = checkpoint::create(dir.path(), "dep", &path).unwrap();
    assert_eq!(checkpoint::check(&cp, &path).unwrap(), None);
    {
        let log = EventLog::open(&path).unwrap();
        assert_eq!(checkpoint::check_log(&cp, &log).unwrap(), None);
    }
    let bounds = frame_bounds(&clean);
    for i in [0, 1, 15, 27, 28] {
        let (s, e) = bounds[i];
        for t in [s, s + 1, s + 7, s + 8, s + 20, e - 1] {
            std::fs::write(&path, &clean[..t]).unwrap();
            assert_repaired(&path, i as u64, &format!("cut at {t}"));
            assert!(checkpoint::check(&cp, &path).unwrap().is_some());
            let log = EventLog::open(&path).unwrap();
            assert!(checkpoint::check_log(&cp, &log).unwrap().is_some());
        }
    }
}

#[test]
fn file_header_partial_old_and_foreign() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    // Part of the magic (a crash during creation), possibly then zeros:
    // re-initialised.
    for k in 0..LOG_MAGIC.len() {
        for zeros in [0, 5, 100] {
            let mut b = LOG_MAGIC[..k].to_vec();
            b.resize(k + zeros, 0);
            std::fs::write(&path, &b).unwrap();
            let v = verify(&path).unwrap();
            assert!(v.ok(), "{v:?}");
            assert_eq!(v.torn.is_some(), !b.is_empty(), "{v:?}");
            assert_repaired(&path, 0, &format!("magic[..{k}] + {zeros} zeros"));
            assert_eq!(std::fs::read(&path).unwrap()[..8], LOG_MAGIC);
        }
    }
    // The previous format (no file header, `len | body | hash`).
    let record = Record {
        seq: 1,
        time_ms: 1,
        end: true,
        event: ev(1),
    };
    let mut body = 1u64.to_le_bytes().to_vec();
    body.extend([0; 32]);
    body.extend(serde_json::to_vec(&record).unwrap());
    let mut v1 = (body.len() as u32).to_le_bytes().to_vec();
    v1.extend(&body);
    v1.extend(frame::hash(&body));
    std::fs::write(&path, &v1).unwrap();
    let err = EventLog::open(&path).unwrap_err().to_string();
    assert!(err.contains("older charter (frame format 1"), "{err}");
    assert!(err.contains("move events.log aside"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), v1);
    assert_eq!(verify(&path).unwrap().findings[0].offset, 0);
    assert!(read_records(&path).is_err());
    // Another program's file.
    for foreign in [
        &b"hello, world\n"[..],
        &[0x89, b'C', b'H', 0, 0, 0, 0, 0, 1],
    ] {
        std::fs::write(&path, foreign).unwrap();
        let err = EventLog::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a charter event log"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), foreign);
        assert!(!verify(&path).unwrap().ok());
    }
    // A flipped bit in the magic of a real log.
    std::fs::remove_file(&path).unwrap();
    let clean = small_log(&path, 3);
    for bit in 0..64 {
        let mut b = clean.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &b).unwrap();
        assert!(EventLog::open(&path).is_err(), "magic bit {bit}");
        assert_eq!(verify(&path).unwrap().findings[0].offset, 0);
    }
}

/// The key/value overhead of a kv event's record, to size payloads exactly.
fn kv_overhead(seq: u64) -> usize {
    serde_json::to_vec(&Record {
        seq,
        time_ms: now_ms(),
        end: true,
        event: kv("big", String::new()),
    })
    .unwrap()
    .len()
}

#[test]
fn an_oversize_event_is_refused_alone() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let log = EventLog::open(&path).unwrap();
    assert_eq!(log.append_blocking(vec![ev(1)]).unwrap(), 1);
    let len = std::fs::metadata(&path).unwrap().len();
    let room = MAX_PAYLOAD - kv_overhead(2);
    let too_big = kv("big", "x".repeat(room + 1));
    // Inside a batch it is not the batch's last event, so its record has no
    // `"end":true` (11 bytes fewer): larger by that much to be over.
    let too_big_inside = kv("big", "x".repeat(room + 12));
    for batch in [vec![too_big], vec![ev(2), too_big_inside, ev(3)]] {
        let err = log.append_blocking(batch).unwrap_err();
        assert!(matches!(err, LogError::Refused(_)), "{err}");
        assert!(err.to_string().contains("more than the"), "{err}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "nothing written"
        );
    }
    assert_eq!(log.append_blocking(vec![ev(2)]).unwrap(), 2);
    // Exactly the largest payload: accepted, and read back.
    let largest = kv("big", "y".repeat(room));
    assert_eq!(log.append_blocking(vec![largest.clone()]).unwrap(), 3);
    assert_eq!(log.append_blocking(vec![ev(4)]).unwrap(), 4);
    drop(log);
    let bytes = std::fs::read(&path).unwrap();
    let b = frame_bounds(&bytes);
    assert_eq!(b[2].1 - b[2].0, FRAME_HEADER_LEN + MAX_FRAME + 32);
    drop(EventLog::open(&path).unwrap());
    assert_verifies(&path, 4);
    assert_eq!(events(&path), vec![ev(1), ev(2), largest, ev(4)]);
}

#[test]
fn a_too_deep_event_is_refused_alone() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let log = EventLog::open(&path).unwrap();
    assert_eq!(log.append_blocking(vec![ev(1)]).unwrap(), 1);
    let len = std::fs::metadata(&path).unwrap().len();
    // 127 deep was the attack: written, then unreadable (serde_json stops
    // at 128 including the record's own object).
    for d in [200, 127, MAX_RECORD_DEPTH] {
        for batch in [
            vec![run_started(deep(d))],
            vec![ev(2), run_started(deep(d))],
        ] {
            let err = log.append_blocking(batch).unwrap_err();
            assert!(matches!(err, LogError::Refused(_)), "{err}");
            assert!(err.to_string().contains("levels deep"), "{err}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                len,
                "nothing written"
            );
        }
    }
    let ok = [
        run_started(deep(60)),
        run_started(deep(MAX_VALUE_DEPTH)),
        run_started(deep(MAX_RECORD_DEPTH - 1)),
    ];
    assert_eq!(log.append_blocking(ok[..1].to_vec()).unwrap(), 2);
    assert_eq!(log.append_blocking(ok[1..].to_vec()).unwrap(), 4);
    drop(log);
    // The deepest accepted record reads back (the reader never fails on
    // depth for what the writer accepted).
    let bytes = std::fs::read(&path).unwrap();
    let (s, e) = frame_bounds(&bytes)[3];
    let payload = &bytes[s + FRAME_HEADER_LEN + 40..e - 32];
    assert_eq!(nesting_depth(payload), MAX_RECORD_DEPTH);
    drop(EventLog::open(&path).unwrap());
    assert_verifies(&path, 4);
    let mut want = vec![ev(1)];
    want.extend(ok);
    assert_eq!(events(&path), want);
}

#[test]
fn a_refused_batch_in_a_group_round_fails_only_itself() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let log = EventLog::open(&path).unwrap();
    let queued = |n: usize, leading: bool| {
        let start = std::time::Instant::now();
        loop {
            {
                let q = log.shared.queue.lock().unwrap();
                if q.pending.len() == n && q.leading == leading {
                    return;
                }
            }
            assert!(start.elapsed().as_secs() < 10, "queue never reached {n}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    let spawn = |events: Vec<Event>| {
        let log = log.clone();
        std::thread::spawn(move || log.append_blocking(events))
    };
    let held = log.shared.writer.lock().unwrap();
    let first = spawn(vec![ev(1)]);
    queued(0, true); // the first leads its round and waits for the writer
    let a = spawn(vec![ev(2)]);
    queued(1, true);
    let b = spawn(vec![ev(3), run_started(deep(150))]);
    queued(2, true);
    let c = spawn(vec![ev(4), ev(5)]);
    queued(3, true);
    drop(held);
    assert_eq!(first.join().unwrap().unwrap(), 1);
    assert_eq!(a.join().unwrap().unwrap(), 2);
    assert!(matches!(b.join().unwrap(), Err(LogError::Refused(_))));
    assert_eq!(c.join().unwrap().unwrap(), 4);
    assert_eq!(
        log.stats().batches,
        2,
        "the last three batches shared a round"
    );
    assert_eq!(log.append_blocking(vec![ev(6)]).unwrap(), 5);
    drop(log);
    assert_verifies(&path, 5);
    assert_eq!(events(&path), vec![ev(1), ev(2), ev(4), ev(5), ev(6)]);
}

/// The crash workload: batches (one refused, one a round over 1 MiB).
fn workload() -> Vec<Vec<Event>> {
    vec![
        vec![ev(1), ev(2), ev(3)],
        vec![run_started(deep(200))],
        vec![
            kv("a", "a".repeat(600_000)),
            ev(4),
            kv("b", "b".repeat(700_000)),
        ],
        (5..10).map(ev).collect(),
        vec![kv("c", "c".repeat(10_000))],
        vec![ev(10)],
    ]
}

/// Run the workload; returns how many events were acknowledged and panics
/// if an acknowledgement follows a failure.
fn run_workload(log: &EventLog, mut on_ack: impl FnMut(u64)) -> u64 {
    let mut acked = 0;
    let mut failed = false;
    for batch in workload() {
        let n = batch.len() as u64;
        match log.append_blocking(batch) {
            Ok(seq) => {
                assert!(!failed, "acknowledged after a failure");
                acked += n;
                assert_eq!(seq, acked);
                on_ack(seq);
            }
            Err(LogError::Refused(_)) => assert_eq!(n, 1),
            Err(_) => failed = true,
        }
    }
    acked
}

/// Where the accepted batches end, counted in events.
fn batch_ends() -> Vec<usize> {
    let mut n = 0;
    workload()
        .into_iter()
        .filter(|b| !matches!(b[0], Event::RunStarted { .. }))
        .map(|b| {
            n += b.len();
            n
        })
        .collect()
}

fn accepted() -> Vec<Event> {
    workload()
        .into_iter()
        .filter(|b| !matches!(b[0], Event::RunStarted { .. }))
        .flatten()
        .collect()
}

/// After a crash: open succeeds and cuts at most the one incomplete batch
/// (appends are all-or-nothing), the log verifies, every acknowledged
/// event is there, nothing but the workload's events in order, and
/// appending continues.
fn check_after_crash(path: &Path, acked: u64, reference: &[(usize, usize)], what: &str) {
    let crashed = std::fs::read(path).unwrap_or_default();
    // Before reopening, verify sees no damage (a torn tail is not damage).
    let v = verify(path).unwrap();
    assert!(v.ok(), "{what}: {:?}", v.findings);
    let log = open_plain(path, true).unwrap_or_else(|e| panic!("{what}: {e}"));
    let after = std::fs::read(path).unwrap();
    let got = events(path);
    let kept = got.len();
    assert!(
        kept as u64 >= acked,
        "{what}: {kept} events kept, {acked} acknowledged"
    );
    assert_eq!(got, accepted()[..kept], "{what}");
    let ends = batch_ends();
    assert!(
        kept == 0 || ends.contains(&kept),
        "{what}: {kept} events kept, not a whole number of batches"
    );
    assert_verifies(path, kept as u64);
    let intact = if kept == 0 { 8 } else { reference[kept - 1].1 };
    assert_eq!(after.len(), intact, "{what}");
    if crashed.len() >= 8 && crashed[..8] == LOG_MAGIC {
        assert!(
            crashed.starts_with(&after),
            "{what}: open changed kept bytes"
        );
        // What was cut never held the next batch complete.
        let nonzero = crashed.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if let Some(&next) = ends.iter().find(|&&e| e > kept) {
            let next_end = reference[next - 1].1;
            assert!(nonzero < next_end, "{what}: a complete batch was cut");
        } else {
            // Only zeros were cut. (Not `nonzero == after.len()`: the
            // kept log's last byte, a hash byte, is zero one time in 256.)
            assert!(nonzero <= after.len(), "{what}: non-zero bytes were cut");
        }
    }
    assert_eq!(
        log.append_blocking(vec![ev(77)]).unwrap(),
        kept as u64 + 1,
        "{what}"
    );
    drop(log);
    assert_verifies(path, kept as u64 + 1);
}

#[test]
fn a_crash_at_every_io_boundary_loses_only_unacknowledged_work() {
    let _guard = no_spawning();
    // The reference run counts the boundaries.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let count = Arc::new(AtomicU64::new(0));
    let counting = Fault {
        at: 0,
        torn: Torn::No,
        abort: false,
        count: count.clone(),
    };
    let log =
        EventLog::open_inner(&path, 0, Box::new(|_, _| Ok(())), true, Some(counting)).unwrap();
    let all = accepted().len() as u64;
    assert_eq!(run_workload(&log, |_| {}), all);
    drop(log);
    let total = count.load(Ordering::Relaxed);
    let reference_bytes = std::fs::read(&path).unwrap();
    let reference = frame_bounds(&reference_bytes);
    assert_eq!(reference.len() as u64, all);
    // creation (write + sync), then per round: its writes and one sync;
    // the round over 1 MiB takes two writes.
    assert_eq!(total, 4 + 4 + 6 + 4 + 4 + 4, "boundaries");

    let mut runs = 0;
    for at in 1..=total + 1 {
        for torn in [Torn::No, Torn::Half, Torn::HalfThenZeros] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(LOG_FILE);
            let fault = Fault {
                at,
                torn,
                abort: false,
                count: Arc::default(),
            };
            let mut acked = 0;
            if let Ok(log) =
                EventLog::open_inner(&path, 0, Box::new(|_, _| Ok(())), true, Some(fault))
            {
                acked = run_workload(&log, |_| {});
            }
            if at > total {
                assert_eq!(acked, all);
            }
            check_after_crash(
                &path,
                acked,
                &reference,
                &format!("crash at {at} ({torn:?})"),
            );
            runs += 1;
        }
    }
    eprintln!("{runs} crashes at {total} boundaries survived");
}

#[test]
fn crash_hook_syntax() {
    let f = Fault::parse("12").unwrap();
    assert_eq!((f.at, f.torn, f.abort), (12, Torn::No, true));
    assert_eq!(Fault::parse("3:partial").unwrap().torn, Torn::Half);
    assert_eq!(Fault::parse("3:zeros").unwrap().torn, Torn::HalfThenZeros);
    for bad in ["", "0", "x", "3:", "3:half", "-1", "3:partial:1"] {
        assert!(Fault::parse(bad).is_err(), "{bad:?}");
    }
}

const CHILD_ENV: &str = "CHARTER_AUDIT_CRASH_CHILD";

/// The child of `crash_hook_aborts_the_process`; does nothing otherwise.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let log = EventLog::open(&dir.join(LOG_FILE)).unwrap();
    run_workload(&log, |seq| {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("acked"))
            .unwrap();
        writeln!(f, "{seq}").unwrap();
    });
}

/// The environment hook really aborts the process, and the log survives.
#[cfg(unix)]
#[test]
fn crash_hook_aborts_the_process() {
    let _guard = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
    // Count the boundaries with an in-process reference run.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let log = open_plain(&path, true).unwrap();
    run_workload(&log, |_| {});
    drop(log);
    let reference = frame_bounds(&std::fs::read(&path).unwrap());
    let exe = std::env::current_exe().unwrap();
    for spec in ["2", "3:partial", "11", "13:partial", "14:zeros", "21"] {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", "ulimit -c 0; exec \"$0\" \"$@\""])
            .arg(&exe)
            .args([
                "log_tests::crash_child",
                "--exact",
                "--test-threads=1",
                "-q",
            ])
            .env(CRASH_ENV, spec)
            .env(CHILD_ENV, dir.path())
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{spec}: the child was not killed");
        let acked = std::fs::read_to_string(dir.path().join("acked"))
            .unwrap_or_default()
            .lines()
            .last()
            .map_or(0, |l| l.parse().unwrap());
        check_after_crash(
            &dir.path().join(LOG_FILE),
            acked,
            &reference,
            &format!("{CRASH_ENV}={spec}"),
        );
    }
}

// ---- the conformance suite, against both logs ---------------------------

#[test]
fn file_log_passes_the_conformance_suite() {
    let _guard = no_spawning();
    let dirs = std::cell::RefCell::new(Vec::new());
    crate::conformance::suite(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        dirs.borrow_mut().push(dir);
        move |applied, on_commit| EventLog::open_inner(&path, applied, on_commit, false, None)
    });
}

#[test]
fn memory_log_passes_the_conformance_suite() {
    crate::conformance::suite(|| {
        let disk = MemDisk::default();
        move |applied, on_commit| MemLog::open_with(&disk, applied, on_commit)
    });
}

/// After a torn tail is cut, reads by seq and by position see only the
/// whole batches, and appends continue the chain.
#[test]
fn reads_after_a_torn_tail_is_cut() {
    let _guard = no_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let seen: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    let log = EventLog::open_inner(
        &path,
        0,
        Box::new(move |_, at| {
            lock(&s).extend_from_slice(at);
            Ok(())
        }),
        true,
        None,
    )
    .unwrap();
    for i in 0..70 {
        log.append_blocking(vec![ev(i), ev(i + 1000)]).unwrap();
    }
    drop(log);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let log = open_plain(&path, true).unwrap();
    assert_eq!(log.last_seq(), 138);
    let tail = Log::read(&log, 120, &Filter::all()).unwrap();
    assert_eq!(tail.first().map(|r| r.seq), Some(120));
    assert_eq!(tail.last().map(|r| r.seq), Some(138));
    let at = lock(&seen).clone();
    assert!(log.read_at(&at[..138]).is_ok());
    assert!(log.read_at(&at[139..]).is_err(), "the cut frames are gone");
    assert_eq!(log.append_blocking(vec![ev(9)]).unwrap(), 139);
    assert!(verify(&path).unwrap().ok());
    assert_eq!(read_positions(&path, &at[..2]).unwrap()[1].seq, 2);
}
