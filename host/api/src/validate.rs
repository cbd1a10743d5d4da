//! Checks on what a caller sends, made here and not only in clap: a
//! daemon, an HTTP API or an MCP server passes requests straight to
//! [`crate::Control`], so every id, name, size and path is bounded in
//! this layer. A value that fails a check never reaches the runtime, the
//! event log or an error message unbounded.

use crate::error::ApiError;

/// Longest id (proposal, run, escalation) accepted. Ids the host makes are
/// far shorter (`P-` and 32 hex digits).
pub const MAX_ID: usize = 128;
/// Longest plugin, workflow or person name accepted.
pub const MAX_NAME: usize = 256;
/// Longest comment accepted (the log keeps at most 4 KiB of it).
pub const MAX_COMMENT: usize = 64 * 1024;
/// Longest filter value (a status, an event type, a `--since`).
pub const MAX_FILTER: usize = 64;
/// Largest step or run input, escalation output or kv value accepted:
/// what the runtime records at most.
pub const MAX_VALUE: u64 = charter_runtime::record::MAX_STEP_VALUE;

/// `s` as a caller may see it in an error: at most 80 characters, escaped.
pub fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// An id the host made: 1 to [`MAX_ID`] characters of letters, digits and
/// `-_.:`. Any other is one no record can hold, answered as not found.
pub fn id(what: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no {what} {} (an id is 1 to {MAX_ID} letters, digits, '-', '_', '.' or ':')",
            shown(s)
        )))
    }
}

/// A name (plugin, workflow, person): 1 to [`MAX_NAME`] bytes, no
/// control characters (they would forge lines in logs and reports).
pub fn name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > MAX_NAME || !printable(s) {
        return Err(ApiError::invalid(format!(
            "{what} {} must be 1 to {MAX_NAME} bytes with no control characters",
            shown(s)
        )));
    }
    Ok(())
}

/// A comment recorded with a decision: at most [`MAX_COMMENT`] bytes.
pub fn comment(c: Option<&str>) -> Result<(), ApiError> {
    match c {
        Some(c) if c.len() > MAX_COMMENT => Err(ApiError::limit(format!(
            "a comment is at most {MAX_COMMENT} bytes (this one is {})",
            c.len()
        ))),
        _ => Ok(()),
    }
}

/// A filter value: at most [`MAX_FILTER`] bytes, no control characters.
pub fn filter(what: &str, s: &str) -> Result<(), ApiError> {
    if s.len() > MAX_FILTER || !printable(s) {
        return Err(ApiError::usage(format!(
            "{what} {} must be at most {MAX_FILTER} bytes with no control characters",
            shown(s)
        )));
    }
    Ok(())
}

/// A value recorded in the log: at most [`MAX_VALUE`] bytes.
pub fn size(what: &str, len: usize) -> Result<(), ApiError> {
    if len as u64 > MAX_VALUE {
        return Err(ApiError::limit(format!(
            "{what} is over {MAX_VALUE} bytes, the largest input Charter records"
        )));
    }
    Ok(())
}

/// A JSON value's size as the log would record it, bounded by
/// [`MAX_VALUE`] (counted without holding a second copy of it).
pub fn json_size(what: &str, v: &serde_json::Value) -> Result<(), ApiError> {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            if self.0 > MAX_VALUE {
                return Err(std::io::Error::other("too large"));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => Ok(()),
        Err(_) => size(what, c.0 as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hold_only_what_the_host_makes() {
        assert!(id("run", "R-3fd19946ead4").is_ok());
        assert!(id("proposal", "P-0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "",
            "R 1",
            "R-1\n#2 forged",
            "../../etc",
            &"a".repeat(MAX_ID + 1),
        ] {
            let e = id("run", bad).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{bad:?}");
            assert!(e.message.len() < 200, "{}", e.message);
        }
    }

    #[test]
    fn names_and_sizes_are_bounded() {
        assert!(name("approver", "bob").is_ok());
        assert!(name("approver", "bob\nerror: forged").is_err());
        assert!(name("approver", &"b".repeat(MAX_NAME + 1)).is_err());
        assert_eq!(
            comment(Some(&"c".repeat(MAX_COMMENT + 1)))
                .unwrap_err()
                .exit_code(),
            3
        );
        assert_eq!(
            size("input", MAX_VALUE as usize + 1)
                .unwrap_err()
                .exit_code(),
            3
        );
        let big = serde_json::Value::String("x".repeat(MAX_VALUE as usize));
        assert_eq!(json_size("output", &big).unwrap_err().exit_code(), 3);
        assert!(json_size("output", &serde_json::json!({"a": 1})).is_ok());
        assert!(shown(&"x".repeat(1000)).len() < 100);
    }
}
