//! What starts a workflow's runs besides a person or a program asking:
//! a webhook and a schedule, declared per workflow.
//!
//! ```toml
//! [workflows.refund.triggers.webhook]
//! name = "stripe-refund"          # POST /hooks/stripe-refund (default: the workflow's name)
//! secret = "stripe-hook-key"      # a [secrets.NAME]: HMAC-SHA256 over the raw body
//! identities = ["ci-bot"]         # and/or a bearer token of one of these identities
//! delivery_header = "X-GitHub-Delivery"   # the delivery id that deduplicates (default X-Delivery-Id)
//! max_body_kib = 256              # default 1024, at most 4096
//! require = ["/data/object/id"]   # JSON pointers the body must hold (not null)
//! equals = { "/type" = "charge.refunded" }   # and values it must hold there
//!
//! [workflows.nightly.triggers.schedule]
//! cron = "0 30 2 * * *"           # seconds minutes hours day month weekday (seconds optional)
//! timezone = "Europe/Berlin"      # an IANA zone, default UTC
//! missed = "run-once"             # or "skip" (default): ticks missed while the host was down
//! input = { report = "daily" }    # the run's input (default {})
//! ```
//!
//! A hook's signature is GitHub's: `X-Hub-Signature-256: sha256=<hex of
//! HMAC-SHA256(secret, body)>`. A schedule's tick is identified by its time;
//! a delivery by its id: each starts at most one run, ever.
//!
//! Trigger settings are not part of the workflow's digest: changing a
//! schedule or a hook's secret does not strand the runs in flight.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default delivery-id header.
pub const DEFAULT_DELIVERY_HEADER: &str = "X-Delivery-Id";
/// The default and largest body a hook accepts, in KiB.
pub const DEFAULT_HOOK_BODY_KIB: u32 = 1024;
pub const MAX_HOOK_BODY_KIB: u32 = 4096;

/// A workflow's triggers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Triggers {
    pub webhook: Option<Webhook>,
    pub schedule: Option<Schedule>,
}

impl Triggers {
    pub fn is_empty(&self) -> bool {
        self.webhook.is_none() && self.schedule.is_none()
    }
}

/// `[workflows.NAME.triggers.webhook]`.
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    /// The hook's name: `POST /hooks/<name>`.
    pub name: String,
    /// The `[secrets.NAME]` whose value keys the body's HMAC.
    pub secret: Option<String>,
    /// Identities whose bearer token may deliver.
    pub identities: Vec<String>,
    /// The header carrying the delivery id (compared case-insensitively).
    pub delivery_header: String,
    /// The largest body accepted, in bytes.
    pub max_body: usize,
    /// JSON pointers a delivery's body must hold (present, not null).
    pub require: Vec<String>,
    /// JSON pointers and the values a delivery's body must hold there.
    pub equals: Vec<(String, Value)>,
}

/// The most pointers a hook's `require` and `equals` may name together.
pub const MAX_SHAPE_RULES: usize = 64;

impl Webhook {
    /// Whether `body` has the shape the hook takes (`require`, `equals`):
    /// `Err` names the first pointer that does not hold, and why.
    pub fn check_shape(&self, body: &Value) -> Result<(), String> {
        // What the body is (its event type) before what it holds.
        for (p, want) in &self.equals {
            match body.pointer(p) {
                Some(got) if got == want => {}
                Some(_) => return Err(format!("{p} is not {want}")),
                None => return Err(format!("{p} is missing (want {want})")),
            }
        }
        for p in &self.require {
            if body.pointer(p).is_none_or(Value::is_null) {
                return Err(format!("{p} is missing"));
            }
        }
        Ok(())
    }
}

/// A JSON pointer as `require` and `equals` take it: `/a/b`, at most 256
/// bytes.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.len() > 256 {
        return Err(format!(
            "{p:?} is not a JSON pointer (\"/call/transcript\": '/' then the keys, at most 256 bytes)"
        ));
    }
    Ok(())
}

/// What a schedule does about ticks that passed while no host ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Nothing: the next run is the next tick.
    Skip,
    /// One run, for the latest missed tick, however many were missed.
    RunOnce,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::RunOnce => "run-once",
        }
    }
}

/// `[workflows.NAME.triggers.schedule]`.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub cron: String,
    pub timezone: String,
    pub missed: Missed,
    pub input: Value,
    #[serde(skip)]
    parsed: Option<(croner::Cron, chrono_tz::Tz)>,
}

impl Schedule {
    /// A schedule, its expression and zone checked.
    pub fn new(
        cron: &str,
        timezone: &str,
        missed: Missed,
        input: Value,
    ) -> Result<Schedule, String> {
        let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
            format!("timezone {timezone:?} is not an IANA time zone name (e.g. \"UTC\", \"Europe/Berlin\")")
        })?;
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(cron)
            .map_err(|e| format!("cron {cron:?}: {e}"))?;
        let s = Schedule {
            cron: cron.to_string(),
            timezone: timezone.to_string(),
            missed,
            input,
            parsed: Some((parsed, tz)),
        };
        // An expression that never fires (30 February) is a mistake.
        if s.next_after_ms(0).is_none() {
            return Err(format!("cron {cron:?} never fires"));
        }
        Ok(s)
    }

    /// The first tick strictly after `ms` (Unix milliseconds), in Unix
    /// milliseconds; `None` if there is none.
    pub fn next_after_ms(&self, ms: u64) -> Option<u64> {
        use chrono::TimeZone;
        let (cron, tz) = self.parsed.as_ref()?;
        let secs = i64::try_from(ms / 1000).ok()?;
        let at = tz.timestamp_opt(secs, 0).single()?;
        // `find_next_occurrence(.., false)` is strictly after `at`; `at`
        // is `ms` rounded down to its second, and every tick is a whole
        // second, so strictly after `at` is strictly after `ms` too.
        let next = cron.find_next_occurrence(&at, false).ok()?;
        u64::try_from(next.timestamp()).ok()?.checked_mul(1000)
    }

    /// `ms` (Unix milliseconds) as RFC 3339 in the schedule's zone.
    pub fn local_time(&self, ms: u64) -> Option<String> {
        use chrono::TimeZone;
        let (_, tz) = self.parsed.as_ref()?;
        let t = tz.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
        Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    /// The latest tick in `(after_ms, until_ms]`, if any: what `run-once`
    /// fires for after a gap.
    pub fn last_in(&self, after_ms: u64, until_ms: u64) -> Option<u64> {
        use chrono::TimeZone;
        let (cron, tz) = self.parsed.as_ref()?;
        let secs = i64::try_from(until_ms / 1000).ok()?;
        let at = tz.timestamp_opt(secs, 0).single()?;
        // Inclusive: `until_ms` rounded down to its second may be a tick.
        let prev = cron.find_previous_occurrence(&at, true).ok()?;
        let ms = u64::try_from(prev.timestamp()).ok()?.checked_mul(1000)?;
        (ms > after_ms && ms <= until_ms).then_some(ms)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggersFile {
    #[serde(default)]
    webhook: Option<WebhookFile>,
    #[serde(default)]
    schedule: Option<ScheduleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default)]
    delivery_header: Option<String>,
    #[serde(default)]
    max_body_kib: Option<u32>,
    #[serde(default)]
    require: Vec<String>,
    #[serde(default)]
    equals: std::collections::BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    missed: Option<Missed>,
    #[serde(default)]
    input: Option<Value>,
}

impl TriggersFile {
    /// The triggers of workflow `workflow`, each checked on its own (what
    /// they name elsewhere in the file is checked by
    /// `Deployment::workflow_problems`).
    pub(crate) fn into_triggers(self, workflow: &str) -> Result<Triggers, String> {
        let at = format!("workflow {workflow}: triggers");
        let webhook = match self.webhook {
            None => None,
            Some(w) => {
                let name = w.name.unwrap_or_else(|| workflow.to_string());
                crate::check_name("hook", &name).map_err(|e| format!("{at}.webhook: {e}"))?;
                if w.secret.is_none() && w.identities.is_empty() {
                    return Err(format!(
                        "{at}.webhook: give `secret = \"NAME\"` (an HMAC key from [secrets]) or `identities = [...]` (bearer tokens), or both; an unauthenticated hook is refused"
                    ));
                }
                let delivery_header = w
                    .delivery_header
                    .unwrap_or_else(|| DEFAULT_DELIVERY_HEADER.to_string());
                let header_ok = !delivery_header.is_empty()
                    && delivery_header.len() <= 64
                    && delivery_header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !header_ok {
                    return Err(format!(
                        "{at}.webhook: delivery_header {delivery_header:?} is not an HTTP header name"
                    ));
                }
                let kib = w.max_body_kib.unwrap_or(DEFAULT_HOOK_BODY_KIB);
                if kib == 0 || kib > MAX_HOOK_BODY_KIB {
                    return Err(format!(
                        "{at}.webhook: max_body_kib must be 1..={MAX_HOOK_BODY_KIB}"
                    ));
                }
                if w.require.len() + w.equals.len() > MAX_SHAPE_RULES {
                    return Err(format!(
                        "{at}.webhook: require and equals name at most {MAX_SHAPE_RULES} pointers"
                    ));
                }
                for p in w.require.iter().chain(w.equals.keys()) {
                    check_pointer(p).map_err(|e| format!("{at}.webhook: {e}"))?;
                }
                Some(Webhook {
                    name,
                    secret: w.secret,
                    identities: w.identities,
                    delivery_header,
                    max_body: kib as usize * 1024,
                    require: w.require,
                    equals: w.equals.into_iter().collect(),
                })
            }
        };
        let schedule = match self.schedule {
            None => None,
            Some(s) => {
                let input = s.input.unwrap_or_else(|| Value::Object(Default::default()));
                if !input.is_object() {
                    return Err(format!("{at}.schedule: input must be a table"));
                }
                Some(
                    Schedule::new(
                        &s.cron,
                        s.timezone.as_deref().unwrap_or("UTC"),
                        s.missed.unwrap_or(Missed::Skip),
                        input,
                    )
                    .map_err(|e| format!("{at}.schedule: {e}"))?,
                )
            }
        };
        Ok(Triggers { webhook, schedule })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis() as u64
    }

    #[test]
    fn ticks_follow_the_zone_and_seconds() {
        let s = Schedule::new("*/2 * * * * *", "UTC", Missed::Skip, Value::Null).unwrap();
        let t = at("2026-01-01T00:00:00.500Z");
        assert_eq!(s.next_after_ms(t), Some(at("2026-01-01T00:00:02Z")));
        // Strictly after: a tick is never its own successor.
        assert_eq!(
            s.next_after_ms(at("2026-01-01T00:00:02Z")),
            Some(at("2026-01-01T00:00:04Z"))
        );
        // 02:30 in Berlin (winter, UTC+1) is 01:30 UTC.
        let b = Schedule::new("0 30 2 * * *", "Europe/Berlin", Missed::Skip, Value::Null).unwrap();
        assert_eq!(
            b.next_after_ms(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T01:30:00Z"))
        );
        // Five fields: minutes first, second 0.
        let m = Schedule::new("*/15 * * * *", "UTC", Missed::Skip, Value::Null).unwrap();
        assert_eq!(
            m.next_after_ms(at("2026-01-01T00:01:00Z")),
            Some(at("2026-01-01T00:15:00Z"))
        );
        assert_eq!(
            s.last_in(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:09Z")),
            Some(at("2026-01-01T00:00:08Z"))
        );
        assert_eq!(
            s.last_in(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:01Z")),
            None
        );
        // A second-granular schedule over a year's gap still answers.
        let every = Schedule::new("* * * * * *", "UTC", Missed::Skip, Value::Null).unwrap();
        assert_eq!(
            every.last_in(at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_hook_checks_the_shape_it_declares() {
        let file: TriggersFile = toml::from_str(
            r#"
            [webhook]
            secret = "k"
            require = ["/call/call_id", "/call/transcript"]
            equals = { "/event" = "call_analyzed" }
            "#,
        )
        .unwrap();
        let hook = file.into_triggers("post-call").unwrap().webhook.unwrap();
        let ok = serde_json::json!({"event": "call_analyzed", "call": {"call_id": "c", "transcript": "t"}});
        assert_eq!(hook.check_shape(&ok), Ok(()));
        let started = serde_json::json!({"event": "call_started", "call": {"call_id": "c"}});
        assert_eq!(
            hook.check_shape(&started).unwrap_err(),
            "/event is not \"call_analyzed\""
        );
        let null = serde_json::json!({"event": "call_analyzed", "call": {"call_id": "c", "transcript": null}});
        assert_eq!(
            hook.check_shape(&null).unwrap_err(),
            "/call/transcript is missing"
        );
        for body in [
            serde_json::json!([1, 2]),
            serde_json::json!("x"),
            Value::Null,
        ] {
            assert!(hook.check_shape(&body).is_err(), "{body}");
        }
        // A pointer must be one.
        let bad: TriggersFile =
            toml::from_str("[webhook]\nsecret = \"k\"\nrequire = [\"call.id\"]\n").unwrap();
        let e = bad.into_triggers("w").unwrap_err();
        assert!(e.contains("not a JSON pointer"), "{e}");
    }

    #[test]
    fn bad_expressions_and_zones_are_refused() {
        for (cron, tz) in [
            ("not cron", "UTC"),
            ("* * * * * * * *", "UTC"),
            ("61 * * * * *", "UTC"),
            ("* * * * *", "Mars/Olympus"),
            ("0 0 0 30 2 *", "UTC"),
        ] {
            assert!(
                Schedule::new(cron, tz, Missed::Skip, Value::Null).is_err(),
                "{cron} {tz}"
            );
        }
    }
}
