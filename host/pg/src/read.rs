//! Reading a deployment's log on PostgreSQL without being its writer:
//! what the read-only commands (`charter runs`, `audit verify`, `kpi`)
//! do while another process drives the deployment. No lock is taken and
//! nothing is written (not even the schema: a database without Charter's
//! tables holds an empty log).
//!
//! Every frame is checked as the file log's reader checks it: its own
//! header and hash, its seq (1, 2, 3, … with no gap), its `prev` against
//! the frame before, and the batch marks (a read ends at the last frame
//! that closes a batch).

use charter_audit::backend;
use charter_audit::{Finding, LogError, Record, Verification};

use crate::io;

/// Every record of `log`'s whole batches, in order; damage is an error
/// naming the seq (a report over a damaged log must not look complete).
pub fn read_records(url: &str, log: &str) -> Result<Vec<Record>, LogError> {
    let rows = frames(url, log)?;
    let mut out = Vec::with_capacity(rows.len());
    let mut batch = Vec::new();
    let walked = walk(&rows, |r| {
        let end = r.end;
        batch.push(r);
        if end {
            out.append(&mut batch);
        }
    });
    match walked.finding {
        None => Ok(out),
        Some(f) => Err(io(
            log,
            format!(
                "chain damaged at seq {}: {}; `charter audit verify` shows the damage",
                f.seq.unwrap_or(0),
                f.problem
            ),
        )),
    }
}

/// Walk `log`'s whole chain, as [`charter_audit::verify`] walks a file.
/// A finding's `offset` is 0 (rows have no byte offsets): its `seq` names
/// the row.
///
/// Each row's filter columns (`kind`, `run`, `plugin`, `time_ms`) must be
/// what its frame says: reads filter on them in SQL, so a column edited
/// to hide a row from a filtered read (a node's look-up of a plugin's last
/// activation, say) is damage too, found at its seq.
pub fn verify(url: &str, log: &str) -> Result<Verification, LogError> {
    let (rows, columns) = frames_and_columns(url, log)?;
    let mut at = 0;
    let mut edited = None;
    let mut w = walk(&rows, |r| {
        if edited.is_none()
            && let Some(c) = columns.get(at)
            && *c != Columns::of(&r)
        {
            edited = Some((r.seq, c.differs(&Columns::of(&r))));
        }
        at += 1;
    });
    if let Some((seq, what)) = edited
        && w.finding.as_ref().is_none_or(|f| f.seq.unwrap_or(0) > seq)
    {
        w.finding = Some(Finding {
            offset: 0,
            seq: Some(seq),
            problem: format!(
                "the row's {what} column does not match its frame (edited to hide it from filtered reads)"
            ),
        });
    }
    Ok(Verification {
        frames: w.frames,
        last_seq: w.last_seq,
        last_hash: hex(&w.last_hash),
        findings: w.finding.into_iter().collect(),
        torn: None,
    })
}

/// A row's filter columns, as stored or as its record says they must be
/// (`PgLog::insert` writes them from the record; a value with a NUL is
/// left out there, so here too).
#[derive(Debug, PartialEq)]
struct Columns {
    kind: String,
    run: Option<String>,
    plugin: Option<String>,
    time_ms: i64,
}

impl Columns {
    fn of(r: &Record) -> Columns {
        Columns {
            kind: r.event.kind().to_string(),
            run: r
                .event
                .run()
                .filter(|x| !x.contains('\0'))
                .map(str::to_string),
            plugin: r
                .event
                .plugin()
                .filter(|x| !x.contains('\0'))
                .map(str::to_string),
            time_ms: r.time_ms as i64,
        }
    }

    /// The first column of `self` that is not `want`'s.
    fn differs(&self, want: &Columns) -> &'static str {
        if self.kind != want.kind {
            "kind"
        } else if self.run != want.run {
            "run"
        } else if self.plugin != want.plugin {
            "plugin"
        } else {
            "time_ms"
        }
    }
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Walked {
    frames: u64,
    last_seq: u64,
    last_hash: [u8; 32],
    finding: Option<Finding>,
}

/// Check `rows` (seq, frame) in order; hand each good record to `each`;
/// stop at the first problem.
fn walk(rows: &[(i64, Vec<u8>)], mut each: impl FnMut(Record)) -> Walked {
    let mut w = Walked {
        frames: 0,
        last_seq: 0,
        last_hash: [0; 32],
        finding: None,
    };
    let mut open_batch = false;
    let found = |seq: u64, problem: String| {
        Some(Finding {
            offset: 0,
            seq: Some(seq),
            problem,
        })
    };
    for (seq, frame) in rows {
        let seq = *seq as u64;
        if seq != w.last_seq + 1 {
            w.finding = found(
                seq,
                format!("rows jump from seq {} to {seq} (rows deleted)", w.last_seq),
            );
            return w;
        }
        let (r, prev, hash) = match backend::decode_frame(frame) {
            Ok(x) => x,
            Err(e) => {
                w.finding = found(seq, e);
                return w;
            }
        };
        if r.seq != seq {
            w.finding = found(seq, format!("the row at seq {seq} holds frame {}", r.seq));
            return w;
        }
        if prev != w.last_hash {
            w.finding = found(seq, "chain broken: previous-hash mismatch".into());
            return w;
        }
        open_batch = !r.end;
        w.frames += 1;
        w.last_seq = seq;
        w.last_hash = hash;
        each(r);
    }
    if open_batch {
        // A batch commits in one transaction: an unclosed last batch is
        // rows deleted from its end, never a crash.
        w.finding = found(
            w.last_seq,
            "the last batch has no end mark (rows deleted from its end)".into(),
        );
    }
    w
}

/// Every (seq, frame) row of `log`, in seq order, read on a thread of its
/// own (callers may be inside an async runtime).
fn frames(url: &str, log: &str) -> Result<Vec<(i64, Vec<u8>)>, LogError> {
    Ok(frames_and_columns(url, log)?.0)
}

/// [`frames`], with each row's filter columns beside it.
#[allow(clippy::type_complexity)]
fn frames_and_columns(
    url: &str,
    log: &str,
) -> Result<(Vec<(i64, Vec<u8>)>, Vec<Columns>), LogError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| io(log, e))?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| io(log, scrub(url, &format!("cannot connect: {e}"))))?;
                let h = tokio::spawn(conn);
                let rows = client
                    .query(
                        "SELECT seq, frame, kind, run, plugin, time_ms FROM charter_events \
                         WHERE log = $1 ORDER BY seq",
                        &[&log],
                    )
                    .await;
                drop(client);
                let _ = h.await;
                match rows {
                    Ok(rows) => Ok((
                        rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
                        rows.iter()
                            .map(|r| Columns {
                                kind: r.get(2),
                                run: r.get(3),
                                plugin: r.get(4),
                                time_ms: r.get(5),
                            })
                            .collect(),
                    )),
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                    {
                        Ok((vec![], vec![]))
                    }
                    Err(e) => Err(io(log, e)),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err(io(log, "the reading thread panicked")))
    })
}

/// `text` with the password of `url` (a `postgres://` URL or `key=value`
/// string) replaced: for errors that might quote it.
pub fn scrub(url: &str, text: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return text.to_string();
    };
    match config.get_password() {
        Some(p) if !p.is_empty() => {
            let p = String::from_utf8_lossy(p);
            text.replace(&*p, "***")
        }
        _ => text.to_string(),
    }
}

/// Whether `url` parses as a connection string, and why not (without
/// quoting it).
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| {
            scrub(
                url,
                &format!("not a valid PostgreSQL connection string ({e})"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use charter_audit::Event;

    fn kv(i: u64) -> Event {
        Event::KvWrite {
            auth: None,
            plugin: "p".into(),
            key: format!("k{i}"),
            value: Some("v".into()),
            by: None,
            secrets: vec![],
        }
    }

    fn rows() -> Vec<(i64, Vec<u8>)> {
        let a = backend::encode_batch(0, [0; 32], vec![kv(1), kv(2)]).unwrap();
        let b = backend::encode_batch(2, a[1].hash, vec![kv(3), kv(4)]).unwrap();
        a.iter()
            .chain(&b)
            .map(|f| (f.record.seq as i64, f.bytes.clone()))
            .collect()
    }

    /// A whole chain walks; a deleted row, a reordered row, an edited
    /// byte and a cut batch are each found at the seq they break.
    #[test]
    fn the_walk_finds_what_an_editor_did() {
        let good = rows();
        let w = walk(&good, |_| {});
        assert!(w.finding.is_none() && w.frames == 4 && w.last_seq == 4);
        let mut gap = good.clone();
        gap.remove(1);
        assert!(walk(&gap, |_| {}).finding.unwrap().problem.contains("jump"));
        let mut edited = good.clone();
        let n = edited[2].1.len();
        edited[2].1[n - 40] ^= 1;
        let f = walk(&edited, |_| {}).finding.unwrap();
        assert_eq!(f.seq, Some(3), "{f:?}");
        let mut swapped = good.clone();
        swapped[2].0 = 4;
        swapped[3].0 = 3;
        swapped.swap(2, 3);
        assert!(walk(&swapped, |_| {}).finding.is_some());
        let cut = &good[..3];
        let f = walk(cut, |_| {}).finding.unwrap();
        assert!(f.problem.contains("no end mark"), "{f:?}");
    }

    #[test]
    fn passwords_are_scrubbed_and_bad_strings_not_quoted() {
        let url = "postgres://u:hunter2pw@localhost/db";
        assert_eq!(scrub(url, "failed for hunter2pw!"), "failed for ***!");
        let e = check_url("postgres://u:hunter2pw@localhost:notaport/db").unwrap_err();
        assert!(!e.contains("hunter2pw"), "{e}");
        check_url(url).unwrap();
    }
}
