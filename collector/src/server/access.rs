//! Identity-based access control and the bounded `client` metric label.

use crate::config::{AccessConfig, AccessDefault};
use crate::signal::Signal;

/// Whether `identity` matches `pattern`: exactly, or by prefix when the
/// pattern ends in `*`.
pub fn matches(pattern: &str, identity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => identity.starts_with(prefix),
        None => pattern == identity,
    }
}

#[derive(Debug, Clone, Default)]
pub struct Access {
    config: AccessConfig,
}

impl Access {
    pub fn new(config: AccessConfig) -> Self {
        Self { config }
    }

    /// `Err` with a message naming the identity when it may not send `signal`.
    pub fn check(&self, identity: &str, signal: Signal) -> Result<(), String> {
        let rule = self.config.rules.iter().find(|r| r.identities.iter().any(|p| matches(p, identity)));
        let allowed = match rule {
            Some(rule) => rule.signals.contains(&signal),
            None => self.config.default == AccessDefault::Allow,
        };
        if allowed { Ok(()) } else { Err(format!("client `{identity}` may not send {signal}")) }
    }

    /// A label for metrics: the first configured pattern the identity matches
    /// (so cardinality is bounded by the configuration), else `other`.
    pub fn label<'a>(&'a self, identity: &str, extra: impl IntoIterator<Item = &'a String>) -> &'a str {
        self.config
            .rules
            .iter()
            .flat_map(|r| &r.identities)
            .chain(extra)
            .find(|p| matches(p, identity))
            .map_or("other", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AccessRule;

    fn access(default: AccessDefault) -> Access {
        Access::new(AccessConfig {
            default,
            rules: vec![
                AccessRule {
                    identities: vec!["spiffe://prod/ns/shop/*".into()],
                    signals: vec![Signal::Traces, Signal::Metrics],
                },
                AccessRule { identities: vec!["batch.example".into()], signals: vec![] },
            ],
        })
    }

    #[test]
    fn first_matching_rule_decides_then_the_default() {
        let a = access(AccessDefault::Deny);
        assert!(a.check("spiffe://prod/ns/shop/sa/checkout", Signal::Traces).is_ok());
        assert_eq!(
            a.check("spiffe://prod/ns/shop/sa/checkout", Signal::Logs),
            Err("client `spiffe://prod/ns/shop/sa/checkout` may not send logs".into())
        );
        assert!(a.check("batch.example", Signal::Metrics).is_err());
        assert!(a.check("ip:10.0.0.1", Signal::Traces).is_err());
        assert!(access(AccessDefault::Allow).check("ip:10.0.0.1", Signal::Traces).is_ok());
    }

    #[test]
    fn labels_are_patterns_not_identities() {
        let a = access(AccessDefault::Allow);
        assert_eq!(a.label("spiffe://prod/ns/shop/sa/x", []), "spiffe://prod/ns/shop/*");
        assert_eq!(a.label("ip:1.2.3.4", []), "other");
    }
}
