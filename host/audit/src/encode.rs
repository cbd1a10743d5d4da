//! A hand-written JSON encoder for the events every step writes (`call`,
//! `call-result`, `kv-write`, `step`, `step-attempt`): byte for byte what
//! serde_json writes for them (field order, `skip_serializing_if`, string
//! escapes), without serde's per-field machinery, and with strings that
//! need no escape (nearly all of them) copied whole after one branch-free
//! scan instead of serde_json's byte-by-byte table walk. Every other event
//! goes through serde. `encoded_records_are_serdes_bytes` (event.rs) holds
//! the two to the same bytes, hostile strings and values included.

use serde_json::Value;

use crate::event::{Decision, Event, JournalRef};

/// Write `event`'s JSON object without its opening brace (the record's head
/// has written it); `false` if this event is left to serde.
pub(crate) fn event_body(event: &Event, out: &mut Vec<u8>) -> bool {
    match event {
        Event::Call {
            call,
            plugin,
            digest,
            function,
            args_digest,
            args,
            decision,
            policies,
            reason,
            initiator,
            journal,
            request,
        } => {
            out.extend_from_slice(b"\"type\":\"call\"");
            field_str(out, "call", call);
            field_str(out, "plugin", plugin);
            field_str(out, "digest", digest);
            field_str(out, "function", function);
            field_str(out, "args_digest", args_digest);
            key(out, "args");
            value(out, args);
            key(out, "decision");
            out.extend_from_slice(match decision {
                Decision::Allow => b"\"allow\"".as_slice(),
                Decision::Propose => b"\"propose\"",
                Decision::Deny => b"\"deny\"",
            });
            field_strs(out, "policies", policies);
            field_opt(out, "reason", reason.as_deref());
            field_opt(out, "initiator", initiator.as_deref());
            if let Some(j) = journal {
                key(out, "journal");
                journal_ref(out, j);
            }
            if let Some(r) = request {
                field_str(out, "request", r);
            }
        }
        Event::CallResult {
            call,
            plugin,
            function,
            ok,
            summary,
            duration_us,
            proposal,
            result,
        } => {
            out.extend_from_slice(b"\"type\":\"call-result\"");
            field_str(out, "call", call);
            field_str(out, "plugin", plugin);
            field_str(out, "function", function);
            field_bool(out, "ok", *ok);
            field_str(out, "summary", summary);
            field_u64(out, "duration_us", *duration_us);
            field_opt(out, "proposal", proposal.as_deref());
            if let Some(v) = result {
                key(out, "result");
                value(out, v);
            }
        }
        Event::KvWrite {
            plugin,
            key: k,
            value: v,
            by,
            auth,
            secrets,
        } => {
            out.extend_from_slice(b"\"type\":\"kv-write\"");
            field_str(out, "plugin", plugin);
            field_str(out, "key", k);
            field_opt(out, "value", v.as_deref());
            if let Some(by) = by {
                field_str(out, "by", by);
            }
            if let Some(auth) = auth {
                field_str(out, "auth", auth);
            }
            if !secrets.is_empty() {
                field_strs(out, "secrets", secrets);
            }
        }
        Event::Step {
            plugin,
            digest,
            initiator,
            outcome,
            error,
            host_calls,
            duration_us,
        } => {
            out.extend_from_slice(b"\"type\":\"step\"");
            field_str(out, "plugin", plugin);
            field_str(out, "digest", digest);
            field_opt(out, "initiator", initiator.as_deref());
            field_str(out, "outcome", outcome);
            field_opt(out, "error", error.as_deref());
            field_u64(out, "host_calls", *host_calls);
            field_u64(out, "duration_us", *duration_us);
        }
        Event::StepAttempt { .. } => step_attempt(event, out),
        _ => return false,
    }
    out.push(b'}');
    true
}

/// The `step-attempt` event's fields (split out: the match above is long
/// enough).
fn step_attempt(event: &Event, out: &mut Vec<u8>) {
    let Event::StepAttempt {
        run,
        step,
        attempt,
        plugin,
        input,
        outcome,
        output,
        error,
        failure,
        retry_at_ms,
        proposal,
        replayed,
        duration_us,
        next,
    } = event
    else {
        return;
    };
    out.extend_from_slice(b"\"type\":\"step-attempt\"");
    field_str(out, "run", run);
    field_str(out, "step", step);
    field_u64(out, "attempt", u64::from(*attempt));
    field_str(out, "plugin", plugin);
    key(out, "input");
    value(out, input);
    field_str(out, "outcome", outcome);
    if let Some(v) = output {
        key(out, "output");
        value(out, v);
    }
    for (name, v) in [("error", error), ("failure", failure)] {
        if let Some(v) = v {
            field_str(out, name, v);
        }
    }
    if let Some(t) = retry_at_ms {
        field_u64(out, "retry_at_ms", *t);
    }
    if let Some(p) = proposal {
        field_str(out, "proposal", p);
    }
    field_u64(out, "replayed", *replayed);
    field_u64(out, "duration_us", *duration_us);
    if let Some(n) = next {
        field_str(out, "next", n);
    }
}

/// `,"name":` (every field but `type` follows another).
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn field_str(out: &mut Vec<u8>, name: &str, s: &str) {
    key(out, name);
    string(out, s);
}

fn field_opt(out: &mut Vec<u8>, name: &str, s: Option<&str>) {
    key(out, name);
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn field_u64(out: &mut Vec<u8>, name: &str, n: u64) {
    key(out, name);
    u64_text(out, n);
}

fn field_bool(out: &mut Vec<u8>, name: &str, b: bool) {
    key(out, name);
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn field_strs(out: &mut Vec<u8>, name: &str, v: &[String]) {
    key(out, name);
    out.push(b'[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

fn journal_ref(out: &mut Vec<u8>, j: &JournalRef) {
    out.extend_from_slice(b"{\"run\":");
    string(out, &j.run);
    field_str(out, "step", &j.step);
    field_u64(out, "attempt", u64::from(j.attempt));
    field_u64(out, "seq", j.seq);
    out.push(b'}');
}

pub(crate) fn u64_text(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Whether any byte of `s` must be escaped in JSON (`"`, `\`, or a control
/// character below 0x20): branch-free over 16-byte chunks, so the compiler
/// vectorises it.
fn needs_escape(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(16);
    let hit = |acc: u8, &b: &u8| acc | u8::from(b < 0x20 || b == b'"' || b == b'\\');
    for c in &mut chunks {
        if c.iter().fold(0u8, hit) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().fold(0u8, hit) != 0
}

/// A JSON string as serde_json writes it.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing a string to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A JSON value as serde_json writes it. Recursive like serde_json's own
/// writer: the runtime bounds every recorded value's depth
/// ([`MAX_VALUE_DEPTH`](crate::MAX_VALUE_DEPTH)) before it is recorded,
/// and anything deeper than that is handed to serde_json.
fn value(out: &mut Vec<u8>, v: &Value) {
    value_at(out, v, 0);
}

fn value_at(out: &mut Vec<u8>, v: &Value, depth: usize) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::String(s) => string(out, s),
        Value::Number(n) => match n.as_u64() {
            Some(u) => u64_text(out, u),
            None => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        },
        _ if depth >= crate::MAX_VALUE_DEPTH => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value_at(out, x, depth + 1);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k);
                out.push(b':');
                value_at(out, x, depth + 1);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_values_are_serdes_bytes() {
        let mut strings: Vec<String> = ["", "plain", "q\"u\\o", "tab\there", "é漢🦀", "\u{7f}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Every byte below 0x80 at every position of a 17-byte string
        // (across the 16-byte chunk boundary).
        for b in 0u8..0x80 {
            for at in [0, 15, 16] {
                let mut s = vec![b'a'; 17];
                s[at] = b;
                strings.push(String::from_utf8(s).unwrap());
            }
        }
        for s in &strings {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        let values = [
            serde_json::json!({"a": [1, -1, 2.5, 1e300, u64::MAX, i64::MIN, null, true, false],
                "\u{1}k": {"": "\n"}, "z": [[[]]], "o": {}}),
            serde_json::json!(0),
            serde_json::json!(-0.0),
        ];
        for v in values {
            let mut out = Vec::new();
            value(&mut out, &v);
            assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v}");
        }
        // Deeper than MAX_VALUE_DEPTH: serde's bytes still.
        let mut deep = serde_json::json!("x");
        for _ in 0..crate::MAX_VALUE_DEPTH + 5 {
            deep = serde_json::json!([deep, {"k": 1}]);
        }
        let mut out = Vec::new();
        value(&mut out, &deep);
        assert_eq!(out, serde_json::to_vec(&deep).unwrap());
    }

    #[test]
    fn numbers_are_serdes_bytes() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::MAX / 10,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            u64_text(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
