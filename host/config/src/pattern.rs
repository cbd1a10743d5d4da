//! Function names and the patterns action groups grant them with.
//!
//! A function is named by its interface and its name inside it:
//! `charter:host/kv@0.1.0#set`. A pattern leaves out the version (or pins
//! it) and may use `*` for every function of an interface:
//! `charter:host/kv.set`, `charter:host/kv.*`, `charter:host/kv@0.1.0.get`.

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "capability pattern {pattern:?}: {reason}; expected e.g. \"charter:host/kv.get\" or \"acme:payments/refunds.*\""
)]
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
        // Function names never contain '.', versions may: split at the last.
        let (iface, func) = text
            .rsplit_once('.')
            .ok_or(err("missing `.function` or `.*`"))?;
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

    /// Does the pattern name (any function of) `interface`?
    pub fn interface_is(&self, interface: &str) -> bool {
        self.interface == interface
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
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
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
