//! The one redaction point of a step: every string that leaves it (events,
//! errors, reasons, log lines, CLI and API output) passes [`Redactor`].
//!
//! Values a step has read through `charter:host/secrets` are replaced by
//! `[secret:NAME]`. Matching is one Aho–Corasick pass over the distinct
//! revealed values (reading a secret 2,000 times adds one pattern, not
//! 2,000), ASCII case-insensitive, with the value's Unicode lower- and
//! upper-case forms as extra patterns: a host that lowercases a value (an
//! HTTP authority) cannot defeat redaction. Encoded forms of a value
//! (base64, URL-encoding, split across strings) are not recognised:
//! SECURITY.md says so under "What is out of scope".

use std::borrow::Cow;
use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde_json::Value;

/// Values shorter than this are not redacted: a secret of one to three
/// bytes would redact every occurrence of those letters in every message.
pub const MIN_SECRET_LEN: usize = 4;

/// The secret values revealed to one step, and the matcher over them.
#[derive(Default, Clone)]
pub(crate) struct Redactor {
    /// Distinct pattern → the secret's name.
    patterns: BTreeMap<String, String>,
    matcher: Option<(AhoCorasick, Vec<String>)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the values themselves.
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Redactor {
    /// Remember a value handed to the step. Rebuilds the matcher only when
    /// the value is new.
    pub fn reveal(&mut self, name: &str, value: &str) {
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        let mut added = false;
        for form in [
            value.to_string(),
            value.to_lowercase(),
            value.to_uppercase(),
        ] {
            if form.len() >= MIN_SECRET_LEN && !self.patterns.contains_key(&form) {
                self.patterns.insert(form, name.to_string());
                added = true;
            }
        }
        if added {
            let (pats, names): (Vec<&String>, Vec<String>) = self
                .patterns
                .iter()
                .map(|(p, n)| (p, format!("[secret:{n}]")))
                .unzip();
            self.matcher = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(pats)
                .ok()
                .map(|m| (m, names));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Add every value `other` knows (a connector inherits what its
    /// importer revealed: the importer may hand it a secret as an argument).
    pub fn inherit(&mut self, other: &Redactor) {
        for (value, name) in &other.patterns {
            self.reveal(name, value);
        }
    }

    /// `text` with every revealed value replaced; borrowed when nothing
    /// matched.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some((m, names)) if m.is_match(text) => Cow::Owned(m.replace_all(text, names)),
            _ => Cow::Borrowed(text),
        }
    }

    /// Does `text` hold a revealed value?
    #[cfg(test)]
    pub fn holds(&self, text: &str) -> bool {
        self.matcher.as_ref().is_some_and(|(m, _)| m.is_match(text))
    }

    /// The names of the secrets whose values `text` holds.
    pub fn names_in(&self, text: &str) -> Vec<String> {
        let Some((m, _)) = &self.matcher else {
            return vec![];
        };
        let names: Vec<&String> = self.patterns.values().collect();
        let mut out: Vec<String> = m
            .find_iter(text)
            .map(|hit| names[hit.pattern().as_usize()].clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A JSON value with every string (and object key) redacted.
    pub fn redact_value(&self, v: &Value) -> Value {
        if self.matcher.is_none() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.redact(s).into_owned()),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redact_value(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (self.redact(k).into_owned(), self.redact_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_variants_and_dedup() {
        let mut r = Redactor::default();
        for _ in 0..2000 {
            r.reveal("api", "AbCdEf-Secret");
        }
        assert_eq!(r.patterns.len(), 3);
        assert_eq!(
            r.redact("x abcdef-secret y ABCDEF-SECRET z AbCdEf-Secret"),
            "x [secret:api] y [secret:api] z [secret:api]"
        );
        assert_eq!(r.redact("nothing here"), Cow::Borrowed("nothing here"));
        assert_eq!(r.names_in("a abcdef-secret"), vec!["api".to_string()]);
        let v = serde_json::json!({"k": ["AbCdEf-Secret"], "AbCdEf-Secret": 1});
        assert_eq!(
            r.redact_value(&v),
            serde_json::json!({"k": ["[secret:api]"], "[secret:api]": 1})
        );
    }

    #[test]
    fn redacting_then_cutting_leaves_no_part_of_a_value() {
        // Earlier values shrink to their placeholder: had the text been cut
        // first, the start of a value past the cut would slide inside it.
        let s = "0123456789abcdef";
        let mut r = Redactor::default();
        r.reveal("key", s);
        let text = format!("{}{}{s}tail", s.repeat(4), "x".repeat(4097 - 4 * s.len()));
        let out = crate::record::cut(&r.redact(&text), 4096);
        assert!(!out.contains(&s[..4]), "{out}");
    }

    #[test]
    fn short_values_are_not_patterns() {
        let mut r = Redactor::default();
        r.reveal("pin", "123");
        assert!(r.is_empty());
        assert_eq!(r.redact("123"), "123");
    }

    #[test]
    fn a_large_text_against_many_values_is_one_pass() {
        let mut r = Redactor::default();
        for i in 0..2000 {
            r.reveal(&format!("s{i}"), &format!("value-{i:08}-x"));
        }
        let text = "a".repeat(32 << 20);
        let t = std::time::Instant::now();
        assert!(!r.holds(&text));
        let took = t.elapsed();
        // Figures, not a timing assertion: printed for the record.
        eprintln!("32 MiB against 2000 values: {took:?}");
    }
}
