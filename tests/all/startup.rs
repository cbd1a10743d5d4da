//! Start-up checks the event log from the last frame an earlier start-up
//! verified (the verified mark, signed with the deployment's key and kept
//! in the state index), not from the first frame: what it detects, what
//! it leaves to `charter audit verify`, and why an edited index cannot
//! make it skip damage.

use std::path::Path;

use charter_audit::checkpoint::{SigningKey, sign_mark};
use charter_audit::{EventLog, FRAME_HEADER_LEN, LOG_FILE, LOG_MAGIC, Verified, verify};
use charter_config::Deployment;
use charter_runtime::{Host, HostOptions, index};
use charter_store::{SledStore, Store};

use crate::support::*;

fn dep(dir: &Path) -> Deployment {
    deployment(
        dir,
        1,
        &[("echo", "fx-echo", &["kv-read", "kv-write", "logging"], "")],
    )
}

/// One host session: start, `n` kv writes, stop.
fn session(d: &Deployment, n: usize) {
    let host = Host::new(d.clone(), HostOptions::default()).expect("host");
    let rt = rt();
    for i in 0..n {
        let input = format!(r#"{{"kv_set": ["k{i}", "v"]}}"#);
        rt.block_on(host.call("echo", &input)).expect("call");
    }
}

/// Where each frame starts, and the file's bytes.
fn frames(log: &Path) -> (Vec<usize>, Vec<u8>) {
    let b = std::fs::read(log).unwrap();
    let mut at = vec![LOG_MAGIC.len()];
    while *at.last().unwrap() < b.len() {
        let a = *at.last().unwrap();
        let len = u32::from_le_bytes(b[a..a + 4].try_into().unwrap()) as usize;
        at.push(a + FRAME_HEADER_LEN + len + 32);
    }
    at.pop();
    (at, b)
}

/// Flip one payload byte of frame `i` (0-based), as an editor or a bad
/// sector would, without recomputing any hash.
fn flip(log: &Path, clean: &[u8], starts: &[usize], i: usize) {
    let mut b = clean.to_vec();
    b[starts[i] + FRAME_HEADER_LEN + 40 + 3] ^= 0x01;
    std::fs::write(log, b).unwrap();
}

fn mark_in(data: &Path) -> String {
    let s = SledStore::open(&data.join("state")).unwrap();
    s.get(index::META, index::VERIFIED_MARK).unwrap().unwrap()
}

fn start(d: &Deployment) -> Result<Host, String> {
    Host::new(d.clone(), HostOptions::default()).map_err(|e| e.to_string())
}

/// The error a start-up that must refuse gives.
fn refused(d: &Deployment, why: &str) -> String {
    match start(d) {
        Ok(_) => panic!("start-up went ahead: {why}"),
        Err(e) => e,
    }
}

/// Three sessions: the second start walks the whole chain and records
/// a mark; the third start checks from it and moves it to the end of
/// the second session. Returns the mark's seq.
fn history(d: &Deployment) -> u64 {
    session(d, 4);
    session(d, 4);
    session(d, 4);
    mark_in(&d.data_dir)
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn start_up_refuses_damage_after_the_mark_and_audit_verify_finds_damage_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dep(dir.path());
    let marked = history(&d);
    let log = d.data_dir.join(LOG_FILE);
    let (starts, clean) = frames(&log);
    let last = starts.len();
    assert!(marked > 4 && (marked as usize) < last, "{marked} of {last}");

    // Damage in the tail after the mark: start-up refuses, naming it.
    flip(&log, &clean, &starts, last - 2);
    let e = refused(&d, "start-up refuses a damaged tail");
    assert!(
        e.contains("chain damaged") && e.contains(&format!("seq {}", last - 1)),
        "{e}"
    );

    // Damage before the mark: start-up does not read it (its cost would
    // be the whole log's) ...
    flip(&log, &clean, &starts, 1);
    drop(start(&d).expect("start-up checks only the tail"));
    // ... `charter audit verify` (this walk) does.
    let v = verify(&log).unwrap();
    assert!(!v.ok() && v.findings[0].seq == Some(2), "{:?}", v.findings);
}

#[test]
fn an_edited_mark_never_makes_start_up_skip_a_damaged_tail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dep(dir.path());
    let marked = history(&d);
    let log = d.data_dir.join(LOG_FILE);
    let (starts, clean) = frames(&log);
    let last = starts.len() as u64;
    // The attacker damages the tail and moves the mark past the damage,
    // to the last frame (its true position and hash).
    flip(&log, &clean, &starts, marked as usize + 1);
    let forward = Verified {
        seq: last,
        at: *starts.last().unwrap() as u64,
        hash: clean[clean.len() - 32..].try_into().unwrap(),
    };
    let genuine = mark_in(&d.data_dir);
    let sig = genuine.rsplit(' ').next().unwrap();
    let forged = [
        // Signed with a key of the attacker's own.
        sign_mark(&SigningKey::from_bytes(&[1; 32]), &forward),
        // The genuine signature on the moved mark.
        format!(
            "v1 {} {} {} {sig}",
            forward.seq,
            forward.at,
            forward
                .hash
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        // Garbage.
        "v1 not a mark".to_string(),
    ];
    for text in forged {
        SledStore::open(&d.data_dir.join("state"))
            .unwrap()
            .set(index::META, index::VERIFIED_MARK, &text)
            .unwrap();
        let e = refused(&d, "an untrusted mark is ignored: full check");
        assert!(e.contains("chain damaged"), "{text}: {e}");
    }
    // An older genuine mark only makes start-up check more.
    std::fs::write(&log, &clean).unwrap();
    SledStore::open(&d.data_dir.join("state"))
        .unwrap()
        .set(index::META, index::VERIFIED_MARK, &genuine)
        .unwrap();
    drop(start(&d).expect("clean log"));
}

#[test]
fn a_rewritten_or_truncated_history_fails_the_signed_mark_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dep(dir.path());
    let marked = history(&d);
    let log = d.data_dir.join(LOG_FILE);
    let (starts, clean) = frames(&log);
    // A different history with every hash recomputed: a valid chain that
    // a full verify (without a checkpoint) cannot tell from the real one.
    let forged = dir.path().join("forged.log");
    let f = EventLog::open(&forged).unwrap();
    for i in 0..starts.len() {
        let key = format!("forged{i}");
        f.append_blocking(vec![charter_audit::Event::KvWrite {
            auth: None,
            plugin: "echo".into(),
            key,
            value: Some("v".into()),
            by: None,
            secrets: vec![],
        }])
        .unwrap();
    }
    drop(f);
    std::fs::copy(&forged, &log).unwrap();
    assert!(verify(&log).unwrap().ok());
    let e = refused(&d, "the signed mark catches the rewrite");
    assert!(
        e.contains(&format!("no longer holds entry {marked}")) && e.contains("rewritten"),
        "{e}"
    );
    // Truncated (at a frame boundary) to before the mark.
    std::fs::write(&log, &clean[..starts[marked as usize - 2]]).unwrap();
    assert!(verify(&log).unwrap().ok());
    let e = refused(&d, "the signed mark catches the truncation");
    assert!(
        e.contains(&format!("no longer holds entry {marked}")),
        "{e}"
    );
    // The documented way on, to keep this log: move the state aside.
    std::fs::rename(d.data_dir.join("state"), dir.path().join("state.old")).unwrap();
    drop(start(&d).expect("rebuilt from the log, verified in full"));
    drop(start(&d).expect("and from its new mark"));
}

/// A decision on a run's proposal reads the log from the proposal's own
/// record on (found through the per-run index, then checked against the
/// log), and folds exactly what the whole log folds; an index pointing
/// elsewhere is never believed. `runs list` and `escalations list`
/// through the index show what the whole log shows.
#[test]
fn a_decision_reads_the_log_from_its_proposal_on_and_lists_read_the_index() {
    use charter_runtime::index::{
        ProposalState, proposal_records, repoint_run_entry, run_positions,
    };
    use charter_runtime::workflow::state::from_records;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let d = crate::workflow::refunds_deployment(dir.path());
    let data = d.data_dir.clone();
    let big = |o: &str| json!({"order_id": o, "amount_cents": 200_000, "reason": "lost"});
    let small = json!({"order_id": "S-1", "amount_cents": 700, "reason": "late"});
    let (st, p) = {
        let h = Host::new(d.clone(), HostOptions::default()).unwrap();
        let st = rt
            .block_on(h.run_workflow("refund", big("D-1"), Some("carol")))
            .unwrap();
        rt.block_on(h.run_workflow("refund", small, Some("dan")))
            .unwrap();
        let p = st.proposal.clone().expect("waits on a proposal");
        let all = charter_audit::read_records(h.log().path()).unwrap();
        let from = proposal_records(&**h.store(), h.log(), &p).expect("through the index");
        assert!(from.len() < all.len() && from[0].seq > 1);
        let a = ProposalState::from_log(&all, &p).unwrap();
        assert!(ProposalState::from_log(&from, &p).unwrap().agrees_with(&a));
        // An index entry moved to another of the run's frames: not used.
        let store = h.store().clone();
        let pos = run_positions(&*store, &st.id).unwrap();
        let (seq, _) = pos
            .iter()
            .copied()
            .find(|(s, _)| all[*s as usize - 1].event.kind() == "proposal")
            .unwrap();
        let other = pos.iter().find(|(s, _)| *s != seq).unwrap().1;
        let real = repoint_run_entry(&*store, &st.id, seq, other)
            .unwrap()
            .unwrap();
        assert!(proposal_records(&*store, h.log(), &p).is_none());
        repoint_run_entry(&*store, &st.id, seq, real).unwrap();
        let done = rt.block_on(h.decide(&p, "bob", true, None)).unwrap();
        assert_eq!(done.run.unwrap().status, "completed");
        // Decided: a second approval is refused on the log's record.
        let again = rt.block_on(h.decide(&p, "erin", true, None));
        assert!(again.is_err(), "{again:?}");
        (st, p)
    };
    let all = charter_audit::read_records(&data.join(LOG_FILE)).unwrap();
    let (runs, escs) = index::runs_offline(&data).expect("index usable");
    let (want_runs, want_escs) = from_records(&all);
    assert_eq!(
        serde_json::to_value(&runs).unwrap(),
        serde_json::to_value(&want_runs).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&escs).unwrap(),
        serde_json::to_value(&want_escs).unwrap()
    );
    assert_eq!(runs.len(), 2);
    let decided = runs.iter().find(|r| r.id == st.id).unwrap();
    assert_eq!(decided.status, "completed", "{p}: {decided:?}");
}

/// `charter audit verify --since-checkpoint F` walks only what follows the
/// checkpoint's entry: damage after it is found, damage before it is left
/// to the full `audit verify`, and a checkpoint the log no longer holds
/// fails.
#[test]
fn audit_verify_since_a_checkpoint_walks_only_what_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[deployment]\nname = \"t\"\nphase = 4\ndata_dir = \"data\"\n{GROUPS}\n\
         [plugins.echo]\npath = \"{}\"\ngroups = [\"kv-read\", \"kv-write\", \"logging\"]\n",
        fixture("fx-echo").display(),
    );
    std::fs::write(dir.path().join("charter.toml"), toml).unwrap();
    let cwd = dir.path();
    let call = |i: usize| {
        let input = format!(r#"{{"kv_set": ["k{i}", "v"]}}"#);
        let o = charter(&["call", "echo", "--input", &input], cwd);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    (0..3).for_each(call);
    let o = charter(&["audit", "checkpoint", "--out", "cp.json"], cwd);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("cp.json")).unwrap()).unwrap();
    let seq = cp["seq"].as_u64().unwrap();
    assert!(cp["position"].as_u64().is_some(), "{cp}");
    (3..5).for_each(call);
    let log = cwd.join("data").join(LOG_FILE);
    let (starts, clean) = frames(&log);
    let since = |args: &[&str]| {
        let o = charter(&[&["audit", "verify"][..], args, &["--json"]].concat(), cwd);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code(), v)
    };
    let (code, v) = since(&["--since-checkpoint", "cp.json"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["since_seq"], seq);
    assert_eq!(v["entries"], starts.len() as u64 - seq + 1, "{v}");
    assert_eq!(v["last_seq"], starts.len() as u64);
    let (_, full) = since(&[]);
    assert_eq!(
        (full["last_hash"].clone(), full.get("since_seq")),
        (v["last_hash"].clone(), None)
    );
    // After the checkpoint: found.
    flip(&log, &clean, &starts, starts.len() - 1);
    let (code, v) = since(&["--since-checkpoint", "cp.json"]);
    assert_eq!(code, Some(1), "{v}");
    // Before it: left to the full walk.
    flip(&log, &clean, &starts, 0);
    assert_eq!(since(&["--since-checkpoint", "cp.json"]).0, Some(0));
    assert_eq!(since(&[]).0, Some(1));
    // Truncated into it: the checkpoint fails.
    std::fs::write(&log, &clean[..starts[seq as usize - 2]]).unwrap();
    let (code, v) = since(&["--since-checkpoint", "cp.json"]);
    assert_eq!(code, Some(1), "{v}");
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap()
            .contains("no longer holds entry"),
        "{v}"
    );
    // Both flags at once is a usage error.
    let o = charter(
        &[
            "audit",
            "verify",
            "--checkpoint",
            "cp.json",
            "--since-checkpoint",
            "cp.json",
        ],
        cwd,
    );
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("cannot be used with"), "{}", text(&o));
}
