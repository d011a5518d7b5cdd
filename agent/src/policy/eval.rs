//! The ZonePolicy evaluator: the verdict a set of ZonePolicies gives a flow at one
//! observation point. Pure; the translated firewall tier must give exactly the firewall's
//! verdict at egress and at ingress (the property test in `tests/equivalence.rs` proves it).
//!
//! Evaluation at one direction (egress: the source zone governs; ingress: the destination
//! zone governs, the other zone is the peer):
//! 1. Tiers in order: firewall, platform, application.
//! 2. In a tier, the policies governing the zone, by `order`; when the zone has none, the
//!    tier's `zone: any` policies. In each, the direction's rules, first match.
//! 3. A matching `Pass` ends the tier; the next tier decides.
//! 4. A matching rule of an `Audit` policy is recorded as what would have happened, and
//!    evaluation goes on as if that policy had not matched (audit never changes traffic).
//! 5. When no rule of the tier matches: the firewall tier denies, as the firewall itself does
//!    after its last rule; other tiers pass to the next. A firewall tier that has policies
//!    but none for this zone and no `zone: any` policy denies too (a partly applied firewall
//!    tier must not open what the firewall closes). An empty tier has no say.
//! 6. After the last tier: allow.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::compile::{AddressCache, CompiledPolicy, CompiledRule, ValidationError, compile_with};
use super::resource::{Mode, Reset, RuleAction, RuleProvenance, RuleType, Tier, ZonePolicy};
use crate::model::{Action, Flow, LabelSource};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Egress,
    Ingress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

/// What happens to the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allow,
    Deny,
    Drop,
    ResetClient,
    ResetServer,
    ResetBoth,
}

impl Decision {
    /// The firewall's name for the same action.
    pub fn firewall_action(self) -> Action {
        match self {
            Decision::Allow => Action::Allow,
            Decision::Deny => Action::Deny,
            Decision::Drop => Action::Drop,
            Decision::ResetClient => Action::ResetClient,
            Decision::ResetServer => Action::ResetServer,
            Decision::ResetBoth => Action::ResetBoth,
        }
    }

    pub fn is_allow(self) -> bool {
        self == Decision::Allow
    }

    pub(crate) fn of(action: RuleAction, reset: Option<Reset>) -> Option<Decision> {
        Some(match (action, reset) {
            (RuleAction::Allow, _) => Decision::Allow,
            (RuleAction::Deny, _) => Decision::Deny,
            (RuleAction::Drop, _) => Decision::Drop,
            (RuleAction::Reject, Some(Reset::Client)) => Decision::ResetClient,
            (RuleAction::Reject, Some(Reset::Server)) => Decision::ResetServer,
            // Validation requires `reset` with Reject; resetting both is the safe reading.
            (RuleAction::Reject, Some(Reset::Both) | None) => Decision::ResetBoth,
            (RuleAction::Pass, _) => return None,
        })
    }
}

/// The rule that decided, with where it sits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    pub policy: String,
    pub tier: Tier,
    pub direction: Direction,
    /// 1-based position in the policy's list for the direction.
    pub index: usize,
    pub provenance: Option<RuleProvenance>,
    pub log_start: bool,
    pub log_end: bool,
}

/// Why the flow got its decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DecidedBy {
    Rule(RuleHit),
    /// The firewall tier's policies for the zone ran out of rules.
    EndOfTier {
        tier: Tier,
    },
    /// The firewall tier has policies, but none for this zone and no `zone: any` policy.
    NoZonePolicy {
        tier: Tier,
        zone: String,
    },
    /// No tier decided.
    DefaultAllow,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyVerdict {
    pub direction: Direction,
    /// The governed zone at this observation point.
    pub zone: String,
    pub decision: Decision,
    pub decided_by: DecidedBy,
    /// The first match of an `Audit` policy: what would have happened in enforce mode.
    pub audit: Option<(Decision, DecidedBy)>,
}

impl PolicyVerdict {
    pub fn rule(&self) -> Option<&RuleHit> {
        match &self.decided_by {
            DecidedBy::Rule(hit) => Some(hit),
            _ => None,
        }
    }

    /// Logging of the deciding rule; implicit decisions do not log.
    pub fn logging(&self) -> (bool, bool) {
        self.rule()
            .map_or((false, false), |r| (r.log_start, r.log_end))
    }

    /// "would deny": an audit policy would have blocked this flow.
    pub fn would_deny(&self) -> bool {
        self.audit.as_ref().is_some_and(|(d, _)| !d.is_allow())
    }
}

/// What [`PolicySet::walk`] found, without the strings a [`PolicyVerdict`] carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome<'a> {
    pub decision: Decision,
    pub decider: Decider<'a>,
    pub audit: Option<(Decision, Decider<'a>)>,
}

/// What decided, by reference into the [`PolicySet`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Decider<'a> {
    Rule {
        policy: &'a CompiledPolicy,
        rule: &'a CompiledRule,
    },
    EndOfTier(Tier),
    NoZonePolicy(Tier),
    DefaultAllow,
}

impl Decider<'_> {
    fn decided_by(self, direction: Direction, zone: &str) -> DecidedBy {
        match self {
            Decider::Rule { policy, rule } => DecidedBy::Rule(RuleHit {
                policy: policy.name.clone(),
                tier: policy.tier,
                direction,
                index: rule.index,
                provenance: rule.provenance.clone(),
                log_start: rule.log_start,
                log_end: rule.log_end,
            }),
            Decider::EndOfTier(tier) => DecidedBy::EndOfTier { tier },
            Decider::NoZonePolicy(tier) => DecidedBy::NoZonePolicy {
                tier,
                zone: zone.to_string(),
            },
            Decider::DefaultAllow => DecidedBy::DefaultAllow,
        }
    }
}

/// Problems that involve several objects, or one object's own problems.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicySetError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ValidationError>),
    #[error(
        "ZonePolicies '{first}' and '{second}' both have order {order} for zone '{zone}' in tier {}; give each policy of a zone its own order",
        tier.as_str()
    )]
    OrderOverlap {
        first: String,
        second: String,
        tier: Tier,
        zone: String,
        order: u32,
    },
    #[error(
        "zone '{zone}' in tier {}: {problem}; apply every part of a translated zone together",
        tier.as_str()
    )]
    IncompleteParts {
        tier: Tier,
        zone: String,
        problem: String,
    },
}

type ZoneKey = (Tier, Option<String>);

/// A validated set of ZonePolicies, ready to evaluate.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// (tier, zone or `None` for `any`) -> policies by order.
    by_zone: BTreeMap<ZoneKey, Vec<Arc<CompiledPolicy>>>,
}

impl PolicySet {
    /// Validates every object and the set as a whole: no two policies of one zone and tier
    /// share an order, and split zones have all their parts.
    pub fn new<P: Borrow<ZonePolicy>>(policies: &[P]) -> Result<PolicySet, PolicySetError> {
        let mut addresses = AddressCache::default();
        let compiled = policies
            .iter()
            .map(|policy| compile_with(policy.borrow(), &mut addresses).map(Arc::new));
        Self::assemble(compiled)
    }

    /// The set of objects compiled apart ([`compile_with`]), for a reader that keeps the
    /// compiled objects rather than the objects it read (both agent modes): checked as
    /// [`PolicySet::new`] checks. An object compiled once is shared by every set built from
    /// it, so an unchanged object costs no compilation.
    pub fn from_compiled(
        compiled: impl IntoIterator<Item = Result<Arc<CompiledPolicy>, Vec<ValidationError>>>,
    ) -> Result<PolicySet, PolicySetError> {
        Self::assemble(compiled.into_iter())
    }

    fn assemble(
        compiled: impl Iterator<Item = Result<Arc<CompiledPolicy>, Vec<ValidationError>>>,
    ) -> Result<PolicySet, PolicySetError> {
        let mut problems = Vec::new();
        let mut by_zone: BTreeMap<ZoneKey, Vec<Arc<CompiledPolicy>>> = BTreeMap::new();
        for result in compiled {
            match result {
                Ok(compiled) => by_zone
                    .entry((compiled.tier, compiled.zone.clone()))
                    .or_default()
                    .push(compiled),
                Err(mut list) => problems.append(&mut list),
            }
        }
        if !problems.is_empty() {
            return Err(PolicySetError::Invalid(problems));
        }
        for ((tier, zone), list) in &mut by_zone {
            list.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.name.cmp(&b.name)));
            let zone_name = zone.clone().unwrap_or_else(|| "any".to_string());
            if let Some(pair) = list.windows(2).find(|w| w[0].order == w[1].order) {
                return Err(PolicySetError::OrderOverlap {
                    first: pair[0].name.clone(),
                    second: pair[1].name.clone(),
                    tier: *tier,
                    zone: zone_name,
                    order: pair[0].order,
                });
            }
            check_parts(*tier, &zone_name, list)?;
        }
        Ok(PolicySet { by_zone })
    }

    pub fn is_empty(&self) -> bool {
        self.by_zone.is_empty()
    }

    /// The verdict at one observation point.
    pub fn evaluate(
        &self,
        flow: &Flow,
        direction: Direction,
        labels: &dyn LabelSource,
    ) -> PolicyVerdict {
        let (zone, peer) = match direction {
            Direction::Egress => (&flow.source_zone, &flow.destination_zone),
            Direction::Ingress => (&flow.destination_zone, &flow.source_zone),
        };
        let outcome = self.walk(direction, zone, &mut |rule| {
            rule_matches(rule, zone, peer, flow, labels)
        });
        PolicyVerdict {
            direction,
            zone: zone.clone(),
            decision: outcome.decision,
            decided_by: outcome.decider.decided_by(direction, zone),
            audit: outcome
                .audit
                .map(|(decision, decider)| (decision, decider.decided_by(direction, zone))),
        }
    }

    /// The tier walk of [`PolicySet::evaluate`] (steps 1-6 of the module comment) with the
    /// rule test supplied by the caller: the evaluator tests a concrete flow, the datapath
    /// compiler tests a class of flows. Sharing the walk keeps the two from drifting apart.
    pub(crate) fn walk<'a>(
        &'a self,
        direction: Direction,
        zone: &str,
        matches: &mut dyn FnMut(&CompiledRule) -> bool,
    ) -> Outcome<'a> {
        self.walk_over(
            zone,
            |policy| match direction {
                Direction::Egress => policy.egress.iter(),
                Direction::Ingress => policy.ingress.iter(),
            },
            matches,
        )
    }

    /// [`PolicySet::walk`] over the rules `rules` gives for each policy (those of the walk's
    /// direction), in their order: a
    /// caller that knows which rules can match at all (the datapath compiler) skips the rest
    /// of the tier instead of testing it. Same result as `walk` whenever every rule left out
    /// is one `matches` would refuse.
    pub(crate) fn walk_over<'a, I>(
        &'a self,
        zone: &str,
        mut rules: impl FnMut(&'a CompiledPolicy) -> I,
        matches: &mut dyn FnMut(&CompiledRule) -> bool,
    ) -> Outcome<'a>
    where
        I: Iterator<Item = &'a CompiledRule>,
    {
        let mut audit = None;
        let outcome = |decision, decider, audit| Outcome {
            decision,
            decider,
            audit,
        };
        for tier in Tier::ALL {
            let Some(policies) = self.governing(tier, zone) else {
                let tier_has_policies = self.by_zone.keys().any(|(t, _)| *t == tier);
                if tier == Tier::Firewall && tier_has_policies {
                    return outcome(Decision::Deny, Decider::NoZonePolicy(tier), audit);
                }
                continue;
            };
            let mut passed = false;
            let mut any_enforcing = false;
            'policies: for policy in policies {
                any_enforcing |= policy.mode == Mode::Enforce;
                for rule in rules(policy) {
                    if !matches(rule) {
                        continue;
                    }
                    let hit = Decider::Rule { policy, rule };
                    let decision = Decision::of(rule.action, rule.reset);
                    if policy.mode == Mode::Audit {
                        if audit.is_none()
                            && let Some(decision) = decision
                        {
                            audit = Some((decision, hit));
                        }
                        // The rest of an audited policy is shadowed by its first match.
                        continue 'policies;
                    }
                    match decision {
                        Some(decision) => return outcome(decision, hit, audit),
                        None => {
                            passed = true;
                            break 'policies;
                        }
                    }
                }
            }
            if !passed && tier == Tier::Firewall {
                if any_enforcing {
                    return outcome(Decision::Deny, Decider::EndOfTier(tier), audit);
                }
                if audit.is_none() {
                    audit = Some((Decision::Deny, Decider::EndOfTier(tier)));
                }
            }
        }
        outcome(Decision::Allow, Decider::DefaultAllow, audit)
    }

    /// The policies of `tier` that govern `zone`, by order: its own, else the tier's
    /// `zone: any` policies; `None` when the tier has neither.
    pub(crate) fn governing(&self, tier: Tier, zone: &str) -> Option<&[Arc<CompiledPolicy>]> {
        self.by_zone
            .get(&(tier, Some(zone.to_string())))
            .or_else(|| self.by_zone.get(&(tier, None)))
            .map(Vec::as_slice)
    }

    /// Every policy, in a fixed order: by tier, then governed zone (`any` first), then order.
    pub(crate) fn policies(&self) -> impl Iterator<Item = &CompiledPolicy> {
        self.shared_policies().map(|policy| &**policy)
    }

    /// [`PolicySet::policies`], shared.
    pub(crate) fn shared_policies(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.by_zone.values().flatten()
    }

    /// What the dataplane enforces: the egress verdict, and when it allows, the ingress one.
    pub fn evaluate_flow(
        &self,
        flow: &Flow,
        labels: &dyn LabelSource,
    ) -> (PolicyVerdict, PolicyVerdict) {
        (
            self.evaluate(flow, Direction::Egress, labels),
            self.evaluate(flow, Direction::Ingress, labels),
        )
    }
}

fn check_parts(tier: Tier, zone: &str, list: &[Arc<CompiledPolicy>]) -> Result<(), PolicySetError> {
    let parts: Vec<(u32, u32)> = list.iter().filter_map(|p| p.part).collect();
    let Some(&(_, count)) = parts.first() else {
        return Ok(());
    };
    let incomplete = |problem: String| PolicySetError::IncompleteParts {
        tier,
        zone: zone.to_string(),
        problem,
    };
    if parts.len() != list.len() || parts.iter().any(|(_, c)| *c != count) {
        return Err(incomplete(
            "its policies disagree on how many parts the zone was split into".to_string(),
        ));
    }
    let mut indexes: Vec<u32> = parts.iter().map(|(i, _)| *i).collect();
    indexes.sort_unstable();
    let expected: Vec<u32> = (1..=count).collect();
    if indexes != expected {
        let missing: Vec<String> = expected
            .iter()
            .filter(|i| !indexes.contains(i))
            .map(ToString::to_string)
            .collect();
        return Err(incomplete(format!(
            "part(s) {} of {count} missing (or duplicated)",
            if missing.is_empty() {
                "none".to_string()
            } else {
                missing.join(", ")
            }
        )));
    }
    // Parts must run in order, or first match would change.
    let in_order = list.iter().filter_map(|p| p.part).map(|(i, _)| i);
    if !in_order.eq(1..=count) {
        return Err(incomplete(
            "the order of its parts differs from their part numbers".to_string(),
        ));
    }
    Ok(())
}

fn rule_matches(
    rule: &CompiledRule,
    zone: &str,
    peer: &str,
    flow: &Flow,
    labels: &dyn LabelSource,
) -> bool {
    if !rule.active {
        return false;
    }
    if let Some(peers) = &rule.peers
        && !peers.contains(peer)
    {
        return false;
    }
    let type_holds = match rule.rule_type {
        RuleType::Universal => true,
        RuleType::Intrazone => zone == peer,
        RuleType::Interzone => zone != peer,
    };
    type_holds
        && rule.source.contains(flow.source, labels) != rule.negate_source
        && rule.destination.contains(flow.destination, labels) != rule.negate_destination
        && rule
            .service
            .match_reason(flow.protocol, flow.source_port, flow.destination_port)
            .is_some()
}
