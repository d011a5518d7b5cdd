//! Vendor-neutral security policy: an ordered list of rules with resolved address and
//! service sets, and the reference evaluator that decides a flow the way the firewall does.

pub mod address;
pub mod eval;
pub mod rule;
pub mod service;
pub mod tagexpr;

pub use address::{
    AddressSet, DynamicMatch, Fqdn, LabelSource, NoLabels, Wildcard, WildcardShape,
    range_to_prefixes,
};
pub use eval::{ExplainJson, Flow, Verdict, parse_protocol, protocol_name, rule_match_reason};
pub use rule::{
    Action, Fidelity, Policy, Provenance, Rule, RuleTarget, RuleType, Rulebase, ZoneSet,
};
pub use service::{PortRange, Protocol, ServiceEntry, ServiceSet, has_ports, parse_port_list};
pub use tagexpr::{TagExpr, TagExprError};
