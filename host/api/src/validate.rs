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

/// A filter naming a workflow or a person: 1 to [`MAX_NAME`] bytes, no
/// control characters (a usage error naming `what` otherwise).
pub fn filter_name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > MAX_NAME || !printable(s) {
        return Err(ApiError::usage(format!(
            "{what} {} must be 1 to {MAX_NAME} bytes with no control characters",
            shown(s)
        )));
    }
    Ok(())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A point in time a filter names (`from`, `to`): milliseconds since 1970
/// (digits only), a UTC date `2026-11-30`, or a UTC time
/// `2026-11-30T14:05Z`, `2026-11-30T14:05:09.250Z` (the `Z` may be left
/// out: UTC all the same). Years 1970 to 9999. Anything else is a usage
/// error naming `what`.
pub fn time(what: &str, s: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::usage(format!(
            "{what} {}: expected a UTC time such as 2026-11-30, 2026-11-30T14:05Z or milliseconds since 1970",
            shown(s)
        ))
    };
    if s.is_empty() || s.len() > MAX_FILTER {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u64>() {
            Ok(ms) if ms <= 253_402_300_799_999 => Ok(ms),
            _ => Err(bad()),
        };
    }
    let s2 = s.strip_suffix(['Z', 'z']).unwrap_or(s);
    let (date, clock) = match s2.split_once(['T', 't', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (s2, None),
    };
    let num = |t: &str, len: usize| -> Option<i64> {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (Some(y), Some(m), Some(day), None) = (
        d.next().and_then(|t| num(t, 4)),
        d.next().and_then(|t| num(t, 2)),
        d.next().and_then(|t| num(t, 2)),
        d.next(),
    ) else {
        return Err(bad());
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=days_in[m as usize - 1]).contains(&day)
    {
        return Err(bad());
    }
    let mut ms = 0i64;
    if let Some(c) = clock {
        let (hms, frac) = match c.split_once('.') {
            Some((a, f)) => (a, Some(f)),
            None => (c, None),
        };
        let mut p = hms.split(':');
        let (Some(h), Some(mi), sec, None) = (
            p.next().and_then(|t| num(t, 2)),
            p.next().and_then(|t| num(t, 2)),
            p.next(),
            p.next(),
        ) else {
            return Err(bad());
        };
        let sec = match sec {
            Some(t) => num(t, 2).ok_or_else(bad)?,
            None if frac.is_some() => return Err(bad()),
            None => 0,
        };
        if h > 23 || mi > 59 || sec > 59 {
            return Err(bad());
        }
        let frac_ms = match frac {
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
                let f3: String = f.chars().chain(std::iter::repeat('0')).take(3).collect();
                f3.parse::<i64>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => 0,
        };
        ms = ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms;
    }
    Ok((days_from_civil(y, m, day) * 86_400_000 + ms) as u64)
}

/// A `from`–`to` pair of [`time`]s: each parsed, and `from` not after `to`.
pub fn time_range(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let from_ms = from.map(|s| time("from", s)).transpose()?;
    let to_ms = to.map(|s| time("to", s)).transpose()?;
    if let (Some(f), Some(t)) = (from_ms, to_ms)
        && f > t
    {
        return Err(ApiError::usage(format!(
            "from {} is after to {}",
            shown(from.unwrap_or_default()),
            shown(to.unwrap_or_default())
        )));
    }
    Ok((from_ms, to_ms))
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
    fn times_parse_or_name_the_parameter() {
        assert_eq!(time("from", "0").unwrap(), 0);
        assert_eq!(time("from", "1970-01-02").unwrap(), 86_400_000);
        assert_eq!(time("from", "2000-03-01T00:00Z").unwrap(), 951_868_800_000);
        assert_eq!(
            time("to", "2026-11-30T01:02:03.5Z").unwrap(),
            1_796_000_523_500
        );
        assert_eq!(
            time("to", "2024-02-29T23:59:59").unwrap(),
            1_709_251_199_000
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2023-02-29",
            "1969-12-31",
            "2026-11-30T24:00Z",
            "2026-11-30T12:60",
            "2026-11-30T12:00:00.Z",
            "2026-1-01",
            "+2026-11-30",
            "99999999999999999999",
            "253402300800000",
            "2026-11-30T12:00+01:00",
            "2026-11-30T12",
            "１２３",
        ] {
            let e = time("from", bad).unwrap_err();
            assert_eq!(e.class, crate::ErrorClass::Usage, "{bad:?}");
            assert!(e.message.starts_with("from "), "{bad:?}: {}", e.message);
        }
        let e = time_range(Some("2026-11-30"), Some("2026-11-29")).unwrap_err();
        assert!(e.message.starts_with("from "), "{}", e.message);
        assert!(time_range(Some("2026-11-30"), Some("2026-11-30")).is_ok());
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
