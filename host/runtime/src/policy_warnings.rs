//! What `charter check` says beside policy problems: warnings where policy
//! cannot compare an argument exactly (a `u64` beyond Cedar's `Long`, a
//! float Cedar has no type for), and problems with the connectors' effect
//! declarations that only the loaded components can reveal.

use charter_config::FunctionName;
use charter_policy::Signature;

use crate::capabilities::connector::connector_functions;

impl crate::Host {
    /// Warnings for `charter check`: the arguments of policy-governed
    /// functions (the host's own and those of every loaded connector)
    /// whose WIT type Cedar cannot compare exactly and that a policy
    /// reads. They do not refuse the deployment: at call time a `u64`
    /// above `i64::MAX` is refused and a float compared as a number denies.
    pub fn policy_warnings(&self) -> Vec<String> {
        let config = self.config();
        let dep = &config.deployment;
        let governed = |f: &FunctionName| {
            dep.groups
                .values()
                .any(|g| g.policies.is_some() && g.names_action(f))
        };
        let sigs: Vec<Signature> = self
            .policy_signatures()
            .into_iter()
            .filter(|(f, _)| governed(f))
            .map(|(_, s)| s)
            .collect();
        config.policy.comparison_warnings(&sigs)
    }

    /// Problems with the providers' `effects` declarations that need the
    /// loaded connectors to see: a declared function the provider does not
    /// export. One message per problem; each refuses the deployment in
    /// `charter check`. (Declarations for interfaces a plugin does not
    /// provide are refused when the file is read.)
    pub fn effect_problems(&self) -> Vec<String> {
        let connectors = self.services.connectors.read().unwrap();
        let mut out = Vec::new();
        for key in self.deployment().connector_effects.keys() {
            let Some((iface, func)) = key.rsplit_once('.') else {
                continue;
            };
            if func == "*" {
                continue;
            }
            // A provider that did not load is reported on its own.
            let Some(conn) = connectors.get(iface) else {
                continue;
            };
            let mut funcs: Vec<String> = connector_functions(&self.engine, conn, iface)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            if !funcs.iter().any(|f| f == func) {
                funcs.sort();
                out.push(format!(
                    "plugin {}: effects: {key:?} is not a function of {iface} (its functions: {}); declare effects only for functions the plugin provides",
                    conn.name,
                    funcs.join(", ")
                ));
            }
        }
        out
    }
}
