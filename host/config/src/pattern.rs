//! Function names and the patterns action groups grant them with.
//!
//! A function is named by its interface and its name inside it:
//! `charter:host/kv@0.1.0#set`. A pattern leaves out the version (or pins
//! it) and may use `*` for every function of an interface:
//! `charter:host/kv.set`, `charter:host/kv.*`, `charter:host/kv@0.1.0.get`.
//! The form Charter prints (`charter:host/kv@0.1.0#get`) is a pattern too,
//! with the same meaning as `charter:host/kv@0.1.0.get`. Whether a pattern
//! names a function anyone knows is the deployment's question
//! (`Deployment::parse`), not the syntax's.

use std::fmt;

/// One imported or exported function of a component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct FunctionName {
    /// `namespace:package/interface`, without version.
    pub interface: String,
    pub version: Option<String>,
    /// The function's name inside the interface (`[method]res.name` for
    /// resource methods).
    pub func: String,
}

impl FunctionName {
    /// From a component instance name (`charter:host/kv@0.1.0`) and a
    /// function name.
    pub fn new(instance: &str, func: &str) -> FunctionName {
        let (interface, version) = split_version(instance);
        FunctionName {
            interface: interface.to_string(),
            version: version.map(str::to_string),
            func: func.to_string(),
        }
    }

    /// The instance name as it appears in the component (`iface@version`).
    pub fn instance(&self) -> String {
        match &self.version {
            Some(v) => format!("{}@{}", self.interface, v),
            None => self.interface.clone(),
        }
    }

    /// The `namespace:package` part.
    pub fn package(&self) -> &str {
        self.interface.split('/').next().unwrap_or(&self.interface)
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.instance(), self.func)
    }
}

/// Split `ns:pkg/iface@1.2.3` into (`ns:pkg/iface`, Some("1.2.3")).
pub fn split_version(instance: &str) -> (&str, Option<&str>) {
    match instance.split_once('@') {
        Some((i, v)) => (i, Some(v)),
        None => (instance, None),
    }
}

/// The accepted pattern syntax, as errors explain it.
pub const PATTERN_SYNTAX: &str = "patterns are interface.function, interface.*, interface@version.function or interface@version#function, e.g. \"charter:host/kv.get\", \"acme:payments/refunds.*\", \"charter:host/kv@0.1.0#get\"";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capability pattern {pattern:?}: {reason}; {PATTERN_SYNTAX}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

/// A function-level grant pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    pub interface: String,
    pub version: Option<String>,
    /// `None` for `*`.
    pub func: Option<String>,
    text: String,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_string(),
            reason,
        };
        // `instance#function`, as Charter prints functions; otherwise
        // function names never contain '.', versions may: split at the last.
        let (iface, func) = match text.split_once('#') {
            Some(split) => split,
            None => text
                .rsplit_once('.')
                .ok_or(err("missing `.function` or `.*`"))?,
        };
        let (interface, version) = split_version(iface);
        let (pkg, name) = interface
            .split_once('/')
            .ok_or(err("missing `/interface`"))?;
        let (ns, pkgname) = pkg.split_once(':').ok_or(err("missing `namespace:`"))?;
        let ident = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !ident(ns) || !ident(pkgname) || !ident(name) {
            return Err(err("names must be lowercase kebab-case"));
        }
        if func.is_empty() {
            return Err(err("empty function name"));
        }
        if func.contains(['#', '@', '/', ':']) {
            return Err(err("a function name has no `#`, `@`, `/` or `:`"));
        }
        if version.is_some_and(str::is_empty) {
            return Err(err("empty version after `@`"));
        }
        Ok(Pattern {
            interface: interface.to_string(),
            version: version.map(str::to_string),
            func: (func != "*").then(|| func.to_string()),
            text: text.to_string(),
        })
    }

    pub fn matches(&self, f: &FunctionName) -> bool {
        self.interface == f.interface
            && self
                .version
                .as_ref()
                .is_none_or(|v| f.version.as_ref() == Some(v))
            && self.func.as_ref().is_none_or(|n| *n == f.func)
    }

    /// Does the pattern name function `func` (whatever its interface and
    /// version)?
    pub fn matches_function(&self, func: &str) -> bool {
        self.func.as_ref().is_none_or(|n| n == func)
    }

    /// Does the pattern name (any function of) `interface`?
    pub fn interface_is(&self, interface: &str) -> bool {
        self.interface == interface
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern without its version, in the `interface.function` (or
    /// `interface.*`) form: what a reviewer compares.
    pub fn unversioned(&self) -> String {
        format!("{}.{}", self.interface, self.func.as_deref().unwrap_or("*"))
    }
}

/// Levenshtein distance between two strings (in chars): how far a typo
/// is from what was meant.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_functions() {
        let set = FunctionName::new("charter:host/kv@0.1.0", "set");
        assert!(Pattern::parse("charter:host/kv.set").unwrap().matches(&set));
        assert!(Pattern::parse("charter:host/kv.*").unwrap().matches(&set));
        assert!(
            Pattern::parse("charter:host/kv@0.1.0.set")
                .unwrap()
                .matches(&set)
        );
        assert!(
            !Pattern::parse("charter:host/kv@0.2.0.set")
                .unwrap()
                .matches(&set)
        );
        assert!(!Pattern::parse("charter:host/kv.get").unwrap().matches(&set));
        assert!(!Pattern::parse("charter:host/log.*").unwrap().matches(&set));
        assert_eq!(set.to_string(), "charter:host/kv@0.1.0#set");
        let refund = FunctionName::new("acme:payments/refunds", "issue-refund");
        assert!(
            Pattern::parse("acme:payments/refunds.issue-refund")
                .unwrap()
                .matches(&refund)
        );
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "charter:host/kv",
            "kv.get",
            "charter/kv.get",
            "Charter:host/kv.get",
            "charter:host/kv.",
            "charter:host/kv@0.1.0#",
            "charter:host/kv@#get",
            "charter:host/kv#get#set",
        ] {
            let e = Pattern::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("interface@version#function"),
                "{bad}: the error shows the syntax: {e}"
            );
        }
    }

    /// The form Charter prints in its refusals ("import
    /// charter:host/kv@0.1.0#set is not granted") is a pattern with the
    /// same meaning as the dotted form.
    #[test]
    fn the_printed_form_is_a_pattern() {
        let set = FunctionName::new("charter:host/kv@0.1.0", "set");
        let printed = set.to_string();
        assert_eq!(printed, "charter:host/kv@0.1.0#set");
        let hash = Pattern::parse(&printed).unwrap();
        let dotted = Pattern::parse("charter:host/kv@0.1.0.set").unwrap();
        assert_eq!(
            (&hash.interface, &hash.version, &hash.func),
            (&dotted.interface, &dotted.version, &dotted.func)
        );
        assert!(hash.matches(&set));
        assert!(!hash.matches(&FunctionName::new("charter:host/kv@0.1.0", "get")));
        assert!(!hash.matches(&FunctionName::new("charter:host/kv@0.2.0", "set")));
        assert_eq!(hash.as_str(), "charter:host/kv@0.1.0#set");
        assert_eq!(hash.unversioned(), "charter:host/kv.set");
        let bare = Pattern::parse("acme:payments/refunds#issue-refund").unwrap();
        assert!(bare.matches(&FunctionName::new(
            "acme:payments/refunds@0.1.0",
            "issue-refund"
        )));
        assert_eq!(Pattern::parse("charter:host/kv#*").unwrap().func, None);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kv.sett", "kv.set"), 1);
        assert_eq!(edit_distance("kvv.set", "kv.set"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
