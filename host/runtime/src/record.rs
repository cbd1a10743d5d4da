//! Bounds on what a step may put in the event log.
//!
//! Every recorded value (arguments, results, errors, inputs, outputs) is
//! bounded before it is recorded, so no event can be larger or deeper than
//! the log's readers accept (a frame the reader refused would cut the log
//! or brick the deployment). Three kinds of bound:
//! - values a step *needs back* (inputs and outputs, which later steps and
//!   resumes read from the log) are refused above [`MAX_STEP_VALUE`] bytes
//!   or [`MAX_VALUE_DEPTH`] levels of nesting: the step fails with a limit;
//! - arguments are refused to the guest above [`MAX_CALL_ARGS`] bytes and
//!   recorded in full only up to [`MAX_RECORDED_ARGS`]; larger ones are
//!   recorded as their digest and size (the digest is what the journal and
//!   approvals compare, so nothing is lost for replay);
//! - texts (errors, reasons, summaries) are cut at [`MAX_TEXT`] bytes.
//!
//! A step's recorded bytes and the host memory held on its behalf (its
//! pending events, its kv overlay, buffered request bodies) count against
//! `limits.max_recorded_mib` ([`Budget`]).

use serde_json::{Value, json};

/// Deepest nesting of a recorded value (the record around it adds a few
/// levels; the log's reader accepts well over this).
pub use charter_audit::MAX_VALUE_DEPTH;
/// How deep a JSON value nests (a scalar is 0, `[]` is 1).
pub use charter_audit::json_depth;

/// Largest step input, step output or run input the host accepts,
/// whatever `limits.max_input_bytes` / `max_output_bytes` say: a
/// `step-attempt` event records both in full.
pub const MAX_STEP_VALUE: u64 = 4 << 20;
/// Largest arguments (canonical JSON) of one capability call.
pub const MAX_CALL_ARGS: usize = 2 << 20;
/// Arguments up to this size are recorded in full; larger ones by digest.
pub const MAX_RECORDED_ARGS: usize = 64 << 10;
/// Longest recorded text (an error, a reason, a summary), in bytes.
pub const MAX_TEXT: usize = 4096;
/// Largest journaled result of one call (replayed instead of executing).
pub const MAX_RESULT: usize = 1 << 20;

/// Bytes a JSON value takes when encoded (an upper estimate, without
/// encoding it: strings count their escapes).
pub fn json_size(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => string_size(s),
        Value::Array(a) => 2 + a.iter().map(|x| json_size(x) + 1).sum::<usize>(),
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| string_size(k) + 2 + json_size(x))
                .sum::<usize>()
        }
    }
}

fn string_size(s: &str) -> usize {
    // Control characters encode as \u00XX (6 bytes).
    2 + s.len()
        + s.bytes()
            .filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
            .count()
            * 5
}

/// How deep JSON text nests, by one pass over its bytes (brackets inside
/// strings do not count).
pub fn text_depth(text: &str) -> usize {
    charter_audit::nesting_depth(text.as_bytes())
}

/// Why JSON text a step hands over cannot be recorded, if it cannot.
pub fn check_step_text(what: &str, text: &str, max_bytes: u64) -> Result<(), String> {
    let max = max_bytes.min(MAX_STEP_VALUE);
    if text.len() as u64 > max {
        return Err(format!("{what} is {} bytes, over {max} bytes", text.len()));
    }
    let depth = text_depth(text);
    if depth > MAX_VALUE_DEPTH {
        return Err(format!(
            "{what} nests {depth} levels deep; the event log records at most {MAX_VALUE_DEPTH}"
        ));
    }
    Ok(())
}

/// Why a value a step needs back cannot be recorded, if it cannot.
pub fn check_step_value(what: &str, v: &Value, max_bytes: u64) -> Result<(), String> {
    let depth = json_depth(v);
    if depth > MAX_VALUE_DEPTH {
        return Err(format!(
            "{what} nests {depth} levels deep; the event log records at most {MAX_VALUE_DEPTH}"
        ));
    }
    let size = json_size(v) as u64;
    let max = max_bytes.min(MAX_STEP_VALUE);
    if size > max {
        return Err(format!("{what} is about {size} bytes, over {max} bytes"));
    }
    Ok(())
}

/// The recorded form of a value that is too large or too deep to record:
/// its digest and size.
pub fn elided(v: &Value, digest: Option<&str>) -> Value {
    let digest = digest.map_or_else(|| charter_audit::json_digest(v), str::to_string);
    json!({"$elided": {"digest": digest, "bytes": json_size(v), "depth": json_depth(v)}})
}

/// A value as recorded: itself when small and shallow enough, else its
/// digest and size.
pub fn bounded(v: Value, max_bytes: usize, digest: Option<&str>) -> Value {
    if json_depth(&v) > MAX_VALUE_DEPTH || json_size(&v) > max_bytes {
        elided(&v, digest)
    } else {
        v
    }
}

/// A text cut to [`MAX_TEXT`] bytes (at a character boundary).
pub fn text(s: &str) -> String {
    cut(s, MAX_TEXT)
}

/// `s` cut to at most `max` bytes, marked with `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..at], s.len())
}

/// What one step may record and hold, and what it has so far.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: u64,
    pub used: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget { limit, used: 0 }
    }

    /// Count `bytes`; `Err` with the detail once over the limit.
    pub fn spend(&mut self, bytes: u64) -> Result<(), String> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(format!(
                "the step recorded or held more than {} MiB (limits.max_recorded_mib)",
                self.limit >> 20
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_bound_the_encoding() {
        for v in [
            json!(null),
            json!({"a": [1, 2.5, "x\"y\\z\u{1}", {"b": true}], "é": u64::MAX, "n": i64::MIN}),
            json!("\u{0}\u{1f}".repeat(100)),
        ] {
            assert!(
                json_size(&v) >= serde_json::to_vec(&v).unwrap().len(),
                "{v}"
            );
        }
    }

    #[test]
    fn depth_and_elision() {
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!([v]);
        }
        assert_eq!(json_depth(&v), 200);
        assert!(check_step_value("output", &v, 1 << 20).is_err());
        let e = bounded(v, 1 << 20, None);
        assert_eq!(e["$elided"]["depth"], 200);
        assert_eq!(json_depth(&json!({"a": {"b": []}})), 3);
        assert_eq!(cut("héllo", 2), "h… (6 bytes in all)");
        let text = serde_json::to_string(&json!({"a": "[[[{\"", "b": [[{}]]})).unwrap();
        assert_eq!(text_depth(&text), 4);
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(check_step_text("output", &deep, 1 << 20).is_err());
        assert!(check_step_text("output", "[[1]]", 1 << 20).is_ok());
    }
}
