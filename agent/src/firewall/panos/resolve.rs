//! [`PanosConfig`] -> [`Policy`] for one device group (Panorama) or vsys (firewall).
//!
//! Object names resolve in the namespace the managed firewall ends up with after a push:
//! the target device group's objects first, then each ancestor's up to the root, then
//! shared. Every rule (shared, ancestor or target) and every group defined in a device group
//! resolves in that flattened namespace. A group defined in `shared` resolves its members in
//! shared only: on the firewall it lives in the shared location, which cannot see
//! device-group (vsys) objects, so a device group shadowing one of its members does not
//! change it.
//!
//! Fail-closed rules (DESIGN.md section 4): any problem in a rule (unknown zone, address,
//! group or service, group cycle, invalid value, unenforceable criterion) makes an allow match
//! nothing, and widens a deny-family rule's affected column to `any`. An allow is never
//! widened except under the operator's explicit [`ApplicationMapping::DefaultPorts`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashMap;
use ipnet::IpNet;

use super::config::{
    AddressGroup, AddressGroupKind, AddressObject, AddressValue, ConfigKind, DefaultRuleOverride,
    PanosConfig, Scope, SecurityRule, ServiceGroup, ServiceObject,
};
use super::error::PanosError;
use super::parse::{RuleEdit, RuleList, ScopeKey};
use super::warning::{Effect, RuleRef, Warning, WarningKind};
use crate::model::{
    Action, AddressSet, DynamicMatch, Fidelity, Fqdn, Policy, PortRange, Protocol, Provenance,
    Rule, RuleTarget, RuleType, Rulebase, ServiceEntry, ServiceSet, TagExpr, Wildcard,
    WildcardShape, ZoneSet, parse_port_list, range_to_prefixes,
};
use crate::retired::Retired;

/// How rules naming applications (other than `any`) are mapped to L4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApplicationMapping {
    /// An allow naming applications, or using `application-default`, matches nothing.
    /// Exact in the safe direction: zonewall never allows what the firewall would not.
    #[default]
    FailClosed,
    /// Opt-in: an allow naming applications is enforced on ports only. With
    /// `application-default`, the ports come from a built-in table of well-known
    /// applications' default ports (applications not in the table contribute nothing);
    /// with explicit services, the services as written. The application itself is not
    /// checked, so traffic of another application on those ports is allowed too.
    DefaultPorts,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Device group (Panorama) or vsys (firewall). Required when there are several.
    pub device_group: Option<String>,
    /// Serial number of the firewall the cluster stands for, to decide rule `target`s.
    pub device_serial: Option<String>,
    pub application_mapping: ApplicationMapping,
}

/// The resolved policy and everything that could not be represented exactly.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub policy: Policy,
    pub warnings: Vec<Warning>,
}

const MAX_GROUP_NESTING: usize = 32;
const SHARED: &str = "shared";

/// Default ports of well-known applications, for [`ApplicationMapping::DefaultPorts`].
fn application_default_ports(application: &str) -> Option<Vec<(Protocol, &'static str)>> {
    use Protocol::{Tcp, Udp};
    Some(match application {
        "web-browsing" => vec![(Tcp, "80")],
        "ssl" => vec![(Tcp, "443")],
        "dns" => vec![(Tcp, "53"), (Udp, "53")],
        "ssh" => vec![(Tcp, "22")],
        "ntp" => vec![(Udp, "123")],
        "smtp" => vec![(Tcp, "25")],
        "ldap" => vec![(Tcp, "389"), (Udp, "389")],
        "kerberos" => vec![(Tcp, "88"), (Udp, "88")],
        "ftp" => vec![(Tcp, "21")],
        "mysql" => vec![(Tcp, "3306")],
        "postgres" => vec![(Tcp, "5432")],
        "mssql-db" => vec![(Tcp, "1433")],
        "redis" => vec![(Tcp, "6379")],
        "ms-rdp" => vec![(Tcp, "3389")],
        "snmp" => vec![(Udp, "161")],
        "syslog" => vec![(Udp, "514")],
        _ => return None,
    })
}

/// Why a reference did not resolve. Only an unknown name needs the rule's column to become
/// a warning; everything else already is one.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Problem {
    Unknown {
        name: String,
        in_group: Option<String>,
    },
    Warning(WarningKind),
}

/// Refuses to descend into `group` when that would close a cycle or nest too deep.
fn enter_group(stack: &[String], group: &str) -> Result<(), Problem> {
    if let Some(start) = stack.iter().position(|g| g == group) {
        let mut cycle = stack[start..].to_vec();
        cycle.push(group.to_string());
        return Err(Problem::Warning(WarningKind::GroupCycle { cycle }));
    }
    if stack.len() >= MAX_GROUP_NESTING {
        return Err(Problem::Warning(WarningKind::GroupTooDeep {
            group: group.to_string(),
            limit: MAX_GROUP_NESTING,
        }));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum AddressEntity<'c> {
    Object(&'c AddressObject),
    Group(&'c AddressGroup),
}

#[derive(Clone, Copy)]
enum ServiceEntity<'c> {
    Object(&'c ServiceObject),
    Group(&'c ServiceGroup),
}

/// Which names a reference sees. Rules and device-group groups see the flattened
/// target namespace; groups defined in `shared` see shared objects only (on the firewall
/// they live in its shared location, which cannot see vsys objects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum View {
    Target,
    Shared,
}

impl View {
    fn slot(self) -> usize {
        match self {
            View::Target => 0,
            View::Shared => 1,
        }
    }
}

/// One name table: each entity with the view its own members resolve in.
#[derive(Default)]
struct Names<'c> {
    addresses: HashMap<&'c str, (AddressEntity<'c>, View)>,
    services: HashMap<&'c str, (ServiceEntity<'c>, View)>,
    /// Visible address objects that carry tags (candidates for dynamic groups).
    tagged: Vec<&'c AddressObject>,
    /// For each tag, the indices into `tagged` of the objects carrying it, ascending.
    tag_members: HashMap<&'c str, Vec<u32>>,
}

impl<'c> Names<'c> {
    /// `scopes` from least specific to most specific; the first one is `shared`.
    fn new(scopes: &[&'c Scope]) -> Self {
        let mut names = Names::default();
        for (index, scope) in scopes.iter().enumerate() {
            let view = if index == 0 {
                View::Shared
            } else {
                View::Target
            };
            // Within one scope PAN-OS keeps addresses and groups in one namespace; a name
            // used by both is invalid there, and the object wins here.
            for (name, group) in &scope.address_groups {
                names
                    .addresses
                    .insert(name.as_str(), (AddressEntity::Group(group), view));
            }
            for (name, object) in &scope.addresses {
                names
                    .addresses
                    .insert(name.as_str(), (AddressEntity::Object(object), view));
            }
            for (name, group) in &scope.service_groups {
                names
                    .services
                    .insert(name.as_str(), (ServiceEntity::Group(group), view));
            }
            for (name, object) in &scope.services {
                names
                    .services
                    .insert(name.as_str(), (ServiceEntity::Object(object), view));
            }
        }
        names.tagged = names
            .addresses
            .values()
            .filter_map(|(e, _)| match e {
                AddressEntity::Object(o) if !o.tags.is_empty() => Some(*o),
                _ => None,
            })
            .collect();
        names.tagged.sort_by(|a, b| a.name.cmp(&b.name));
        for (index, object) in names.tagged.iter().enumerate() {
            for tag in &object.tags {
                let members = names.tag_members.entry(tag.as_str()).or_default();
                // An object listing a tag twice must appear once.
                if members.last() != Some(&(index as u32)) {
                    members.push(index as u32);
                }
            }
        }
        names
    }
}

/// Names resolved in one namespace: valid as long as the objects they were resolved from are
/// the same, so [`ResolveMemo`] carries them from one configuration to the next.
#[derive(Default)]
struct NameCaches {
    /// One map per view (indexed by [`View::slot`]), looked up by `&str`.
    address: [HashMap<String, Result<Arc<AddressSet>, Problem>>; 2],
    service: [HashMap<String, Result<Arc<ServiceSet>, Problem>>; 2],
}

struct Namespace<'c> {
    /// From least specific (shared) to most specific (target).
    scopes: Vec<&'c Scope>,
    /// The name tables of the target and shared views, built on the first name not in
    /// `caches`: a configuration whose objects did not change may resolve without them.
    names: Option<Box<[Names<'c>; 2]>>,
    caches: NameCaches,
}

impl<'c> Namespace<'c> {
    fn new(scopes: Vec<&'c Scope>, caches: NameCaches) -> Self {
        Namespace {
            scopes,
            names: None,
            caches,
        }
    }

    fn names(&mut self, view: View) -> &Names<'c> {
        let scopes = &self.scopes;
        let names = self.names.get_or_insert_with(|| {
            Box::new([
                Names::new(scopes),
                Names::new(&scopes[..1.min(scopes.len())]),
            ])
        });
        &names[view.slot()]
    }

    fn address(
        &mut self,
        view: View,
        name: &str,
        stack: &mut Vec<String>,
    ) -> Result<Arc<AddressSet>, Problem> {
        if name == "any" {
            return Ok(Arc::new(AddressSet::any()));
        }
        if let Some(cached) = self.caches.address[view.slot()].get(name) {
            return cached.clone();
        }
        let result = match self.names(view).addresses.get(name).copied() {
            Some((AddressEntity::Object(object), _)) => address_value(object).map(Arc::new),
            Some((AddressEntity::Group(group), members_view)) => {
                self.address_group(members_view, group, stack).map(Arc::new)
            }
            None => literal_address(name)
                .map(Arc::new)
                .ok_or_else(|| Problem::Unknown {
                    name: name.to_string(),
                    in_group: stack.last().cloned(),
                }),
        };
        // A failure computed while a group cycle was open may depend on the open stack;
        // only cache results that are final for any caller.
        if stack.is_empty() || result.is_ok() {
            self.caches.address[view.slot()].insert(name.to_string(), result.clone());
        }
        result.map_err(|p| match p {
            Problem::Unknown { name, in_group } => Problem::Unknown {
                name,
                in_group: in_group.or_else(|| stack.last().cloned()),
            },
            other => other,
        })
    }

    fn address_group(
        &mut self,
        view: View,
        group: &AddressGroup,
        stack: &mut Vec<String>,
    ) -> Result<AddressSet, Problem> {
        enter_group(stack, &group.name)?;
        stack.push(group.name.clone());
        let result = self.address_group_members(view, group, stack);
        stack.pop();
        result
    }

    fn address_group_members(
        &mut self,
        view: View,
        group: &AddressGroup,
        stack: &mut Vec<String>,
    ) -> Result<AddressSet, Problem> {
        let mut set = AddressSet::default();
        match &group.kind {
            AddressGroupKind::Static(members) => {
                for member in members {
                    let resolved = self.address(view, member, stack).map_err(|p| match p {
                        Problem::Unknown { name, .. } if name == *member => Problem::Unknown {
                            name,
                            in_group: Some(group.name.clone()),
                        },
                        other => other,
                    })?;
                    set.append(&resolved);
                }
            }
            AddressGroupKind::Dynamic(filter) => {
                let expr = TagExpr::parse(filter).map_err(|e| {
                    Problem::Warning(WarningKind::InvalidFilter {
                        group: group.name.clone(),
                        problem: e.to_string(),
                    })
                })?;
                let names = self.names(view);
                let members = |tag: &str| names.tag_members.get(tag).map_or(&[][..], Vec::as_slice);
                for index in expr.select(names.tagged.len(), &members).iter() {
                    set.append(&address_value(names.tagged[index])?);
                }
                set.dynamic.push(DynamicMatch {
                    group: group.name.clone(),
                    filter: expr,
                });
            }
            AddressGroupKind::Empty => {}
        }
        set.normalize();
        Ok(set)
    }

    fn service(
        &mut self,
        view: View,
        name: &str,
        stack: &mut Vec<String>,
    ) -> Result<Arc<ServiceSet>, Problem> {
        if name == "any" {
            return Ok(Arc::new(ServiceSet::any()));
        }
        if let Some(cached) = self.caches.service[view.slot()].get(name) {
            return cached.clone();
        }
        let result = match self.names(view).services.get(name).copied() {
            Some((ServiceEntity::Object(object), _)) => service_value(object).map(Arc::new),
            Some((ServiceEntity::Group(group), members_view)) => {
                self.service_group(members_view, group, stack).map(Arc::new)
            }
            None => predefined_service(name)
                .map(Arc::new)
                .ok_or_else(|| Problem::Unknown {
                    name: name.to_string(),
                    in_group: None,
                }),
        };
        if stack.is_empty() || result.is_ok() {
            self.caches.service[view.slot()].insert(name.to_string(), result.clone());
        }
        result
    }

    fn service_group(
        &mut self,
        view: View,
        group: &ServiceGroup,
        stack: &mut Vec<String>,
    ) -> Result<ServiceSet, Problem> {
        enter_group(stack, &group.name)?;
        stack.push(group.name.clone());
        let mut set = ServiceSet::default();
        let mut outcome = Ok(());
        for member in &group.members {
            match self.service(view, member, stack) {
                Ok(resolved) => set.extend(&resolved),
                Err(Problem::Unknown { name, .. }) if name == *member => {
                    outcome = Err(Problem::Unknown {
                        name,
                        in_group: Some(group.name.clone()),
                    });
                    break;
                }
                Err(other) => {
                    outcome = Err(other);
                    break;
                }
            }
        }
        stack.pop();
        outcome.map(|()| set)
    }
}

/// `service-http` and `service-https`: predefined on every firewall, never in the config.
fn predefined_service(name: &str) -> Option<ServiceSet> {
    let ports = match name {
        "service-http" => vec![PortRange::single(80), PortRange::single(8080)],
        "service-https" => vec![PortRange::single(443)],
        _ => return None,
    };
    Some(ServiceSet {
        any: false,
        entries: vec![ServiceEntry {
            protocol: Protocol::Tcp,
            destination_ports: ports,
            source_ports: None,
        }],
    })
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// `10.0.0.0/8`, `10.1.1.1` or `fd00::/64`; host bits are allowed (PAN-OS accepts them) and
/// cleared.
fn parse_netmask(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    parse_ip(text).map(IpNet::from)
}

/// A rule member that is not an object name: a literal address, prefix or range.
fn literal_address(name: &str) -> Option<AddressSet> {
    let prefixes = if let Some(net) = parse_netmask(name) {
        vec![net]
    } else {
        let (start, end) = name.split_once('-')?;
        range_to_prefixes(parse_ip(start)?, parse_ip(end)?)?
    };
    let mut set = AddressSet {
        prefixes,
        ..AddressSet::default()
    };
    set.normalize();
    Some(set)
}

fn address_value(object: &AddressObject) -> Result<AddressSet, Problem> {
    let invalid = |value: &str, problem: &str| {
        Problem::Warning(WarningKind::InvalidAddress {
            object: object.name.clone(),
            value: value.to_string(),
            problem: problem.to_string(),
        })
    };
    let mut set = AddressSet::default();
    match &object.value {
        AddressValue::IpNetmask(v) => {
            let net = parse_netmask(v)
                .ok_or_else(|| invalid(v, "expected an address or address/prefix-length"))?;
            set.prefixes.push(net);
        }
        AddressValue::IpRange(v) => {
            let (start, end) = v
                .split_once('-')
                .and_then(|(a, b)| Some((parse_ip(a)?, parse_ip(b)?)))
                .ok_or_else(|| invalid(v, "expected first-last, two addresses of one family"))?;
            set.prefixes = range_to_prefixes(start, end)
                .ok_or_else(|| invalid(v, "the range runs backwards or mixes IPv4 and IPv6"))?;
        }
        AddressValue::IpWildcard(v) => {
            let shape = v
                .split_once('/')
                .and_then(|(a, m)| Wildcard::classify(parse_ip(a)?, parse_ip(m)?))
                .ok_or_else(|| invalid(v, "expected address/wildcard-mask of one family"))?;
            match shape {
                WildcardShape::Prefix(net) => set.prefixes.push(net),
                WildcardShape::Wildcard(w) => set.wildcards.push(w),
            }
        }
        AddressValue::Fqdn(v) => {
            if v.is_empty() || v.contains(char::is_whitespace) {
                return Err(invalid(v, "expected a domain name"));
            }
            set.fqdns.push(Fqdn {
                name: v.clone(),
                resolved: Vec::new(),
            });
        }
        AddressValue::Missing => {
            return Err(invalid("", "no ip-netmask, ip-range, ip-wildcard or fqdn"));
        }
    }
    set.normalize();
    Ok(set)
}

fn service_value(object: &ServiceObject) -> Result<ServiceSet, Problem> {
    let invalid = |problem: String| {
        Problem::Warning(WarningKind::InvalidService {
            object: object.name.clone(),
            problem,
        })
    };
    if object.protocols.is_empty() {
        return Err(invalid("no protocol (tcp, udp or sctp)".to_string()));
    }
    let mut set = ServiceSet::default();
    for p in &object.protocols {
        let protocol = match p.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => return Err(invalid(format!("unsupported protocol {other:?}"))),
        };
        let port = p
            .port
            .as_deref()
            .ok_or_else(|| invalid(format!("{} has no destination port", protocol.name())))?;
        let destination_ports = parse_port_list(port).map_err(|e| invalid(e.to_string()))?;
        let source_ports = p
            .source_port
            .as_deref()
            .map(parse_port_list)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        set.entries.push(ServiceEntry {
            protocol,
            destination_ports,
            source_ports,
        });
    }
    Ok(set)
}

fn problem_kind(problem: Problem, field: &'static str) -> WarningKind {
    match problem {
        Problem::Unknown { name, in_group } if field == "service" => {
            WarningKind::UnknownService { name, in_group }
        }
        Problem::Unknown { name, in_group } => WarningKind::UnknownAddress {
            name,
            field,
            in_group,
        },
        Problem::Warning(kind) => kind,
    }
}

/// The chosen enforcement target and the scopes that apply to it.
struct Target<'c> {
    name: String,
    /// Device groups from the root ancestor down to the target (empty for a firewall).
    chain: Vec<(&'c str, &'c Scope)>,
    /// Firewall vsys scope.
    vsys: Option<&'c Scope>,
    zones: BTreeSet<String>,
}

fn choose_target<'c>(
    config: &'c PanosConfig,
    wanted: Option<&str>,
) -> Result<Target<'c>, PanosError> {
    let origin = config.origin.clone();
    match config.kind {
        ConfigKind::Panorama => {
            let available: Vec<String> = config.device_groups.keys().cloned().collect();
            let name = match wanted {
                Some(name) => name.to_string(),
                None if available.len() == 1 => available[0].clone(),
                None if available.is_empty() => SHARED.to_string(),
                None => {
                    return Err(PanosError::TargetRequired {
                        origin,
                        kind: "device group",
                        available,
                    });
                }
            };
            let mut chain = Vec::new();
            if name != SHARED {
                let mut current = Some(name.as_str());
                while let Some(dg_name) = current.filter(|n| *n != SHARED) {
                    let dg = config.device_groups.get(dg_name).ok_or_else(|| {
                        PanosError::UnknownTarget {
                            origin: origin.clone(),
                            kind: "device group",
                            target: dg_name.to_string(),
                            available: available.clone(),
                        }
                    })?;
                    chain.push((dg.name.as_str(), &dg.scope));
                    current = dg.parent.as_deref();
                }
                chain.reverse();
            }
            Ok(Target {
                name,
                chain,
                vsys: None,
                zones: config.template_zones.clone(),
            })
        }
        ConfigKind::Firewall => {
            let available: Vec<String> = config.vsys.keys().cloned().collect();
            let name = match wanted {
                Some(name) => name.to_string(),
                None if available.len() == 1 => available[0].clone(),
                None => {
                    return Err(PanosError::TargetRequired {
                        origin,
                        kind: "vsys",
                        available,
                    });
                }
            };
            let vsys = config
                .vsys
                .get(&name)
                .ok_or_else(|| PanosError::UnknownTarget {
                    origin: origin.clone(),
                    kind: "vsys",
                    target: name.clone(),
                    available: available.clone(),
                })?;
            Ok(Target {
                name,
                chain: Vec::new(),
                vsys: Some(&vsys.scope),
                zones: vsys.zones.clone(),
            })
        }
    }
}

/// A rule's place in the configuration, for [`ResolveMemo`]: device group, rulebase, name.
type MemoKey = (String, Rulebase, String);

/// One rule's resolution, kept for the next configuration.
struct MemoRule {
    raw: SecurityRule,
    /// `None` when the rule is not pushed to this firewall.
    rule: Option<Rule>,
    warnings: Vec<Warning>,
}

impl MemoRule {
    /// The same rule found at another line or position (rules or objects added above it):
    /// only where it is changes.
    fn relocate(&mut self, line: u32, position: usize) {
        self.raw.line = line;
        if let Some(rule) = &mut self.rule {
            rule.provenance.line = Some(line);
            rule.provenance.position = position;
        }
        for warning in &mut self.warnings {
            warning.line = Some(line);
            if let Some(rule) = &mut warning.rule {
                rule.position = position;
            }
        }
    }
}

/// Whether two rules resolve alike, wherever they are written: every field but the line.
fn same_rule(a: &SecurityRule, b: &SecurityRule) -> bool {
    let SecurityRule {
        name,
        uuid,
        line: _,
        from,
        to,
        source,
        destination,
        negate_source,
        negate_destination,
        service,
        application,
        other_criteria,
        action,
        rule_type,
        disabled,
        description,
        tags,
        log_start,
        log_end,
        log_setting,
        target,
    } = a;
    *name == b.name
        && *uuid == b.uuid
        && *from == b.from
        && *to == b.to
        && *source == b.source
        && *destination == b.destination
        && *negate_source == b.negate_source
        && *negate_destination == b.negate_destination
        && *service == b.service
        && *application == b.application
        && *other_criteria == b.other_criteria
        && *action == b.action
        && *rule_type == b.rule_type
        && *disabled == b.disabled
        && *description == b.description
        && *tags == b.tags
        && *log_start == b.log_start
        && *log_end == b.log_end
        && *log_setting == b.log_setting
        && *target == b.target
}

fn same_entries<T>(
    a: &BTreeMap<String, T>,
    b: &BTreeMap<String, T>,
    same: impl Fn(&T, &T) -> bool,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((name_a, a), (name_b, b))| name_a == name_b && same(a, b))
}

/// Whether names resolve alike in two scopes: the same objects and groups, lines aside
/// (resolution never reports an object's line).
fn same_objects(a: &Scope, b: &Scope) -> bool {
    let Scope {
        tags: _,
        addresses,
        address_groups,
        services,
        service_groups,
        applications: _,
        pre_rules: _,
        post_rules: _,
        local_rules: _,
        default_rules: _,
    } = a;
    same_entries(addresses, &b.addresses, |a, b| {
        a.name == b.name && a.value == b.value && a.tags == b.tags
    }) && same_entries(address_groups, &b.address_groups, |a, b| {
        a.name == b.name && a.kind == b.kind && a.tags == b.tags
    }) && same_entries(services, &b.services, |a, b| {
        a.name == b.name && a.protocols == b.protocols
    }) && same_entries(service_groups, &b.service_groups, |a, b| {
        a.name == b.name && a.members == b.members
    })
}

/// Whether everything a rule's resolution depends on, besides the rule, is the same in both
/// configurations: origin, target, its zones, and the objects of every scope it sees.
fn same_namespace(previous: &PanosConfig, config: &PanosConfig, options: &ResolveOptions) -> bool {
    if previous.origin != config.origin || previous.kind != config.kind {
        return false;
    }
    let wanted = options.device_group.as_deref();
    let (Ok(a), Ok(b)) = (
        choose_target(previous, wanted),
        choose_target(config, wanted),
    ) else {
        return false;
    };
    a.name == b.name
        && a.zones == b.zones
        && a.chain.len() == b.chain.len()
        && a.chain
            .iter()
            .zip(&b.chain)
            .all(|((name_a, a), (name_b, b))| name_a == name_b && same_objects(a, b))
        && match (a.vsys, b.vsys) {
            (None, None) => true,
            (Some(a), Some(b)) => same_objects(a, b),
            _ => false,
        }
        && same_objects(&previous.shared, &config.shared)
}

/// What resolving one configuration leaves for the next: the sync controller resolves every
/// commit of a configuration in which most rules and objects did not change. While the
/// objects, zones, target and options stay the same, every name resolved before and every
/// rule written the same (wherever it moved) is taken over instead of resolved again; any
/// other difference drops everything. Results are equal to [`resolve`]'s either way.
#[derive(Default)]
pub struct ResolveMemo {
    previous: Option<(PanosConfig, ResolveOptions)>,
    caches: NameCaches,
    rules: HashMap<MemoKey, Box<MemoRule>>,
    /// Rules the last resolution took over.
    pub reused: usize,
    /// What the last resolution replaced, until [`ResolveMemo::free_retired`] (or the next
    /// resolution).
    retired: Retired,
}

impl ResolveMemo {
    /// Frees what the last resolution replaced: for when nothing waits.
    pub fn free_retired(&mut self) {
        self.retired.free();
    }

    /// [`resolve`], taking over what still holds from the previous configuration, which
    /// this one replaces.
    pub fn resolve(
        &mut self,
        config: PanosConfig,
        options: &ResolveOptions,
    ) -> Result<Resolved, PanosError> {
        self.retired.free();
        let previous = self.previous.take();
        let reusable = previous
            .as_ref()
            .is_some_and(|(previous, previous_options)| {
                previous_options == options && same_namespace(previous, &config, options)
            });
        let caches = std::mem::take(&mut self.caches);
        let rules = std::mem::take(&mut self.rules);
        let (caches, rules) = if reusable {
            (caches, rules)
        } else {
            self.retired.keep((caches, rules));
            Default::default()
        };
        self.retired.keep(previous);
        self.run(config, options, caches, rules)
    }

    /// [`ResolveMemo::resolve`] of the previous configuration with one security rule
    /// replaced: nothing but that rule changed, so the objects are not compared. `None` when
    /// there is no previous configuration (or it has no such rule) or the options differ.
    pub fn resolve_edit(
        &mut self,
        edit: RuleEdit,
        options: &ResolveOptions,
    ) -> Option<Result<Resolved, PanosError>> {
        self.retired.free();
        let (config, previous_options) = self.previous.as_mut()?;
        if previous_options != options {
            return None;
        }
        let scope = match &edit.span.scope {
            ScopeKey::Shared => &mut config.shared,
            ScopeKey::DeviceGroup(name) => &mut config.device_groups.get_mut(name)?.scope,
            ScopeKey::Vsys(name) => &mut config.vsys.get_mut(name)?.scope,
        };
        let rules = match edit.span.list {
            RuleList::Pre => &mut scope.pre_rules,
            RuleList::Post => &mut scope.post_rules,
            RuleList::Local => &mut scope.local_rules,
        };
        *rules.get_mut(edit.span.index)? = edit.rule;
        let (config, _) = self.previous.take()?;
        let caches = std::mem::take(&mut self.caches);
        let rules = std::mem::take(&mut self.rules);
        Some(self.run(config, options, caches, rules))
    }

    /// Resolves `config` with what is taken over, and keeps it all for the next one.
    fn run(
        &mut self,
        config: PanosConfig,
        options: &ResolveOptions,
        caches: NameCaches,
        rules: HashMap<MemoKey, Box<MemoRule>>,
    ) -> Result<Resolved, PanosError> {
        self.reused = 0;
        let run = resolve_with(&config, options, caches, rules)?;
        self.caches = run.caches;
        self.rules = run.kept;
        self.reused = run.reused;
        self.previous = Some((config, options.clone()));
        Ok(run.resolved)
    }
}

struct RuleResolver<'c, 'o> {
    origin: &'c str,
    namespace: Namespace<'c>,
    zones: &'c BTreeSet<String>,
    options: &'o ResolveOptions,
    warnings: Vec<Warning>,
    /// The previous configuration's rules, taken out as they are found again.
    previous: HashMap<MemoKey, Box<MemoRule>>,
    /// This configuration's rules, for the next one.
    kept: HashMap<MemoKey, Box<MemoRule>>,
    reused: usize,
}

/// Per-rule bookkeeping of what could not be represented.
struct Degradation {
    is_allow: bool,
    disabled: bool,
    never: Vec<String>,
    widened: Vec<String>,
    approximated: bool,
}

impl RuleResolver<'_, '_> {
    fn warn(
        &mut self,
        rule: &RuleRef,
        line: u32,
        degradation: &mut Degradation,
        kind: WarningKind,
        field: &'static str,
    ) {
        let effect = if degradation.is_allow {
            degradation.never.push(kind.to_string());
            Effect::RuleMatchesNothing
        } else {
            degradation.widened.push(format!("{field}: {kind}"));
            Effect::DenyWidened { field }
        };
        if !degradation.disabled {
            self.warnings.push(Warning {
                origin: self.origin.to_string(),
                line: Some(line),
                rule: Some(rule.clone()),
                kind,
                effect,
            });
        }
    }

    fn zones(
        &mut self,
        rule: &RuleRef,
        raw: &SecurityRule,
        members: &[String],
        field: &'static str,
        d: &mut Degradation,
    ) -> ZoneSet {
        if members.is_empty() {
            self.warn(
                rule,
                raw.line,
                d,
                WarningKind::MissingField { field },
                field,
            );
            return ZoneSet::Any;
        }
        if members.iter().any(|z| z == "any") {
            return ZoneSet::Any;
        }
        let mut failed = false;
        if !self.zones.is_empty() {
            for zone in members {
                if !self.zones.contains(zone) {
                    let kind = WarningKind::UnknownZone {
                        zone: zone.clone(),
                        field,
                    };
                    self.warn(rule, raw.line, d, kind, field);
                    failed = true;
                }
            }
        }
        if failed {
            ZoneSet::Any
        } else {
            ZoneSet::Only(members.iter().cloned().collect())
        }
    }

    fn addresses(
        &mut self,
        rule: &RuleRef,
        raw: &SecurityRule,
        members: &[String],
        field: &'static str,
        d: &mut Degradation,
    ) -> Option<AddressSet> {
        if members.is_empty() {
            self.warn(
                rule,
                raw.line,
                d,
                WarningKind::MissingField { field },
                field,
            );
            return None;
        }
        let mut set = AddressSet::default();
        let mut failed = false;
        for member in members {
            match self
                .namespace
                .address(View::Target, member, &mut Vec::new())
            {
                Ok(resolved) => set.append(&resolved),
                Err(problem) => {
                    self.warn(rule, raw.line, d, problem_kind(problem, field), field);
                    failed = true;
                }
            }
        }
        set.normalize();
        (!failed).then_some(set)
    }

    fn services(&mut self, rule: &RuleRef, raw: &SecurityRule, d: &mut Degradation) -> ServiceSet {
        let field = "service";
        let members = &raw.service;
        let applications: Vec<String> = if raw.application.is_empty() {
            vec!["any".to_string()]
        } else {
            raw.application.clone()
        };
        let names_applications = applications.iter().any(|a| a != "any");
        if members.is_empty() {
            self.warn(
                rule,
                raw.line,
                d,
                WarningKind::MissingField { field },
                field,
            );
            return ServiceSet::any();
        }
        let app_warning = WarningKind::Applications {
            applications: applications.clone(),
            service: members.clone(),
        };
        if members.iter().any(|m| m == "application-default") {
            if !d.is_allow {
                self.warn(rule, raw.line, d, app_warning, field);
                return ServiceSet::any();
            }
            if self.options.application_mapping == ApplicationMapping::DefaultPorts
                && names_applications
            {
                let mut set = ServiceSet::default();
                for application in &applications {
                    for (protocol, ports) in
                        application_default_ports(application).unwrap_or_default()
                    {
                        set.entries.push(ServiceEntry {
                            protocol,
                            destination_ports: parse_port_list(ports).unwrap_or_default(),
                            source_ports: None,
                        });
                    }
                }
                if set.entries.is_empty() {
                    self.warn(rule, raw.line, d, app_warning, field);
                } else {
                    self.approximate(rule, raw, d, app_warning);
                }
                return set;
            }
            self.warn(rule, raw.line, d, app_warning, field);
            return ServiceSet::default();
        }
        let mut set = ServiceSet::default();
        let mut failed = false;
        for member in members {
            match self
                .namespace
                .service(View::Target, member, &mut Vec::new())
            {
                Ok(resolved) => set.extend(&resolved),
                Err(problem) => {
                    self.warn(rule, raw.line, d, problem_kind(problem, field), field);
                    failed = true;
                }
            }
        }
        if failed {
            return ServiceSet::any();
        }
        if names_applications {
            if d.is_allow && self.options.application_mapping == ApplicationMapping::DefaultPorts {
                self.approximate(rule, raw, d, app_warning);
            } else {
                // Allow: fails closed. Deny: the application condition is dropped, which
                // widens it to every application on these services.
                self.warn(rule, raw.line, d, app_warning, "application");
            }
        }
        set
    }

    fn approximate(
        &mut self,
        rule: &RuleRef,
        raw: &SecurityRule,
        d: &mut Degradation,
        kind: WarningKind,
    ) {
        d.approximated = true;
        if !d.disabled {
            self.warnings.push(Warning {
                origin: self.origin.to_string(),
                line: Some(raw.line),
                rule: Some(rule.clone()),
                kind,
                effect: Effect::AllowApproximated,
            });
        }
    }

    /// False when the rule is not pushed to this cluster's firewall at all.
    fn target_applies(&mut self, rule: &RuleRef, raw: &SecurityRule, d: &mut Degradation) -> bool {
        let target = &raw.target;
        if target.is_all() {
            return true;
        }
        if let Some(serial) = &self.options.device_serial {
            let listed = target.devices.iter().any(|s| s == serial);
            if listed || target.tags.is_empty() {
                return listed != target.negate;
            }
        }
        let kind = WarningKind::Targeted {
            devices: target.devices.clone(),
            tags: target.tags.clone(),
            negate: target.negate,
        };
        self.warn(rule, raw.line, d, kind, "target");
        true
    }

    fn resolve_rule(
        &mut self,
        raw: &SecurityRule,
        device_group: &str,
        rulebase: Rulebase,
        position: usize,
    ) -> Option<Rule> {
        let rule_ref = RuleRef {
            name: raw.name.clone(),
            device_group: device_group.to_string(),
            rulebase,
            position,
        };
        let parsed_action = raw.action.as_deref().and_then(Action::parse);
        let mut d = Degradation {
            is_allow: parsed_action == Some(Action::Allow),
            disabled: raw.disabled,
            never: Vec::new(),
            widened: Vec::new(),
            approximated: false,
        };
        let action = match parsed_action {
            Some(a) => a,
            None => {
                // An unreadable action could have been a deny: treat it as one.
                let kind = WarningKind::InvalidAction {
                    action: raw.action.clone(),
                };
                self.warn(&rule_ref, raw.line, &mut d, kind, "action");
                Action::Deny
            }
        };
        if !self.target_applies(&rule_ref, raw, &mut d) {
            return None;
        }
        let rule_type = match raw.rule_type.as_deref() {
            None | Some("universal") => RuleType::Universal,
            Some("intrazone") => RuleType::Intrazone,
            Some("interzone") => RuleType::Interzone,
            Some(other) => {
                let kind = WarningKind::InvalidRuleType {
                    value: other.to_string(),
                };
                self.warn(&rule_ref, raw.line, &mut d, kind, "rule-type");
                RuleType::Universal
            }
        };
        let from = self.zones(&rule_ref, raw, &raw.from, "from", &mut d);
        let to = self.zones(&rule_ref, raw, &raw.to, "to", &mut d);
        let source = self.addresses(&rule_ref, raw, &raw.source, "source", &mut d);
        let destination = self.addresses(&rule_ref, raw, &raw.destination, "destination", &mut d);
        let service = self.services(&rule_ref, raw, &mut d);
        for (field, values) in &raw.other_criteria {
            let kind = WarningKind::UnsupportedCriterion {
                field: field.clone(),
                values: values.clone(),
            };
            self.warn(&rule_ref, raw.line, &mut d, kind, "user/category");
        }
        // A widened column matches everything, negated or not.
        let (source, negate_source) = match source {
            Some(set) => (set, raw.negate_source),
            None => (AddressSet::any(), false),
        };
        let (destination, negate_destination) = match destination {
            Some(set) => (set, raw.negate_destination),
            None => (AddressSet::any(), false),
        };
        let fidelity = if !d.never.is_empty() {
            Fidelity::NeverMatches { reasons: d.never }
        } else if !d.widened.is_empty() {
            Fidelity::Widened { reasons: d.widened }
        } else {
            Fidelity::Exact
        };
        Some(Rule {
            provenance: Provenance {
                rule_name: raw.name.clone(),
                uuid: raw.uuid.clone(),
                device_group: device_group.to_string(),
                rulebase,
                position,
                origin: self.origin.to_string(),
                line: Some(raw.line),
            },
            from,
            to,
            rule_type,
            source_names: raw.source.clone(),
            destination_names: raw.destination.clone(),
            service_names: raw.service.clone(),
            source,
            negate_source,
            destination,
            negate_destination,
            service,
            applications: if raw.application.is_empty() {
                vec!["any".to_string()]
            } else {
                raw.application.clone()
            },
            action,
            log_start: raw.log_start.unwrap_or(false),
            log_end: raw.log_end.unwrap_or(true),
            log_setting: raw.log_setting.clone(),
            disabled: raw.disabled,
            description: raw.description.clone(),
            tags: raw.tags.clone(),
            target: RuleTarget {
                devices: raw.target.devices.clone(),
                tags: raw.target.tags.clone(),
                negate: raw.target.negate,
            },
            fidelity,
        })
    }

    fn push_rules(
        &mut self,
        out: &mut Vec<Rule>,
        rules: &[SecurityRule],
        device_group: &str,
        rulebase: Rulebase,
    ) {
        for (index, raw) in rules.iter().enumerate() {
            let position = index + 1;
            let key = (device_group.to_string(), rulebase, raw.name.clone());
            let memo = match self.previous.remove(&key) {
                Some(mut memo) if same_rule(&memo.raw, raw) => {
                    memo.relocate(raw.line, position);
                    self.reused += 1;
                    self.warnings.extend_from_slice(&memo.warnings);
                    memo
                }
                _ => {
                    let first = self.warnings.len();
                    let rule = self.resolve_rule(raw, device_group, rulebase, position);
                    Box::new(MemoRule {
                        raw: raw.clone(),
                        rule,
                        warnings: self.warnings[first..].to_vec(),
                    })
                }
            };
            if let Some(rule) = &memo.rule {
                out.push(rule.clone());
            }
            self.kept.insert(key, memo);
        }
    }
}

/// Builds the predefined default rules with overrides applied field by field, from the least
/// specific scope to the most specific (shared, root device group, ..., target).
fn default_rules(
    origin: &str,
    target: &str,
    overrides: &[(&str, &[DefaultRuleOverride])],
    warnings: &mut Vec<Warning>,
) -> Vec<Rule> {
    let mut out = Vec::new();
    for (position, (name, action, rule_type)) in [
        ("intrazone-default", Action::Allow, RuleType::Intrazone),
        ("interzone-default", Action::Deny, RuleType::Interzone),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rule = Rule {
            provenance: Provenance {
                rule_name: name.to_string(),
                uuid: None,
                device_group: target.to_string(),
                rulebase: Rulebase::Default,
                position: position + 1,
                origin: origin.to_string(),
                line: None,
            },
            from: ZoneSet::Any,
            to: ZoneSet::Any,
            rule_type,
            source_names: vec!["any".into()],
            destination_names: vec!["any".into()],
            service_names: vec!["any".into()],
            source: AddressSet::any(),
            negate_source: false,
            destination: AddressSet::any(),
            negate_destination: false,
            service: ServiceSet::any(),
            applications: vec!["any".into()],
            action,
            // Predefined default rules do not log unless overridden.
            log_start: false,
            log_end: false,
            log_setting: None,
            disabled: false,
            description: None,
            tags: Vec::new(),
            target: RuleTarget::default(),
            fidelity: Fidelity::Exact,
        };
        for (scope_name, entries) in overrides {
            for entry in entries.iter().filter(|e| e.name == name) {
                rule.provenance.device_group = scope_name.to_string();
                rule.provenance.line = Some(entry.line);
                if let Some(text) = &entry.action {
                    match Action::parse(text) {
                        Some(a) => rule.action = a,
                        None => {
                            let rule_ref = RuleRef {
                                name: name.to_string(),
                                device_group: scope_name.to_string(),
                                rulebase: Rulebase::Default,
                                position: position + 1,
                            };
                            warnings.push(Warning {
                                origin: origin.to_string(),
                                line: Some(entry.line),
                                rule: Some(rule_ref),
                                kind: WarningKind::InvalidAction {
                                    action: Some(text.clone()),
                                },
                                effect: Effect::DenyWidened { field: "action" },
                            });
                            rule.action = Action::Deny;
                        }
                    }
                }
                if let Some(v) = entry.log_start {
                    rule.log_start = v;
                }
                if let Some(v) = entry.log_end {
                    rule.log_end = v;
                }
                if entry.log_setting.is_some() {
                    rule.log_setting = entry.log_setting.clone();
                }
            }
        }
        out.push(rule);
    }
    for (_, entries) in overrides {
        for entry in entries.iter() {
            if entry.name != "intrazone-default" && entry.name != "interzone-default" {
                warnings.push(Warning {
                    origin: origin.to_string(),
                    line: Some(entry.line),
                    rule: None,
                    kind: WarningKind::UnknownDefaultRule {
                        name: entry.name.clone(),
                    },
                    effect: Effect::Informational,
                });
            }
        }
    }
    out
}

/// Resolves the configuration into the ordered rule list for one device group or vsys.
pub fn resolve(config: &PanosConfig, options: &ResolveOptions) -> Result<Resolved, PanosError> {
    resolve_with(config, options, NameCaches::default(), HashMap::default()).map(|run| run.resolved)
}

/// One resolution and what it leaves for [`ResolveMemo`].
struct Run {
    resolved: Resolved,
    caches: NameCaches,
    kept: HashMap<MemoKey, Box<MemoRule>>,
    reused: usize,
}

fn resolve_with(
    config: &PanosConfig,
    options: &ResolveOptions,
    caches: NameCaches,
    previous: HashMap<MemoKey, Box<MemoRule>>,
) -> Result<Run, PanosError> {
    let target = choose_target(config, options.device_group.as_deref())?;
    let origin = config.origin.as_str();
    let mut warnings: Vec<Warning> = config
        .notes
        .iter()
        .map(|n| Warning {
            origin: origin.to_string(),
            line: n.line,
            rule: None,
            kind: WarningKind::Config {
                message: n.message.clone(),
            },
            effect: Effect::Informational,
        })
        .collect();
    if target.zones.is_empty() {
        warnings.push(Warning {
            origin: origin.to_string(),
            line: None,
            rule: None,
            kind: WarningKind::NoZonesDefined,
            effect: Effect::Informational,
        });
    }

    // Least specific first, for the flattened namespace and default-rule overrides.
    let mut scopes: Vec<&Scope> = vec![&config.shared];
    scopes.extend(target.chain.iter().map(|(_, s)| *s));
    scopes.extend(target.vsys);

    let previous_len = previous.len();
    let mut resolver = RuleResolver {
        origin,
        namespace: Namespace::new(scopes, caches),
        zones: &target.zones,
        options,
        warnings: Vec::new(),
        previous,
        // Filled with as many rules as before: no rehashing on the way.
        kept: HashMap::with_capacity_and_hasher(previous_len, Default::default()),
        reused: 0,
    };

    let mut rules = Vec::new();
    let mut overrides: Vec<(&str, &[DefaultRuleOverride])> = Vec::new();
    match target.vsys {
        None => {
            resolver.push_rules(&mut rules, &config.shared.pre_rules, SHARED, Rulebase::Pre);
            for (name, scope) in &target.chain {
                resolver.push_rules(&mut rules, &scope.pre_rules, name, Rulebase::Pre);
            }
            for (name, scope) in target.chain.iter().rev() {
                resolver.push_rules(&mut rules, &scope.post_rules, name, Rulebase::Post);
            }
            resolver.push_rules(
                &mut rules,
                &config.shared.post_rules,
                SHARED,
                Rulebase::Post,
            );
            overrides.push((SHARED, &config.shared.default_rules));
            for (name, scope) in &target.chain {
                overrides.push((name, &scope.default_rules));
            }
        }
        Some(vsys) => {
            let name = target.name.as_str();
            resolver.push_rules(&mut rules, &vsys.pre_rules, name, Rulebase::Pre);
            resolver.push_rules(&mut rules, &vsys.local_rules, name, Rulebase::Local);
            resolver.push_rules(&mut rules, &vsys.post_rules, name, Rulebase::Post);
            overrides.push((name, &vsys.default_rules));
        }
    }
    warnings.append(&mut resolver.warnings);
    let RuleResolver {
        namespace,
        kept,
        reused,
        ..
    } = resolver;
    let caches = namespace.caches;
    rules.extend(default_rules(
        origin,
        &target.name,
        &overrides,
        &mut warnings,
    ));

    Ok(Run {
        resolved: Resolved {
            policy: Policy {
                origin: origin.to_string(),
                target: target.name,
                zones: target.zones,
                rules,
            },
            warnings,
        },
        caches,
        kept,
        reused,
    })
}

/// All device groups (Panorama) or vsys (firewall) names, for a CLI listing.
pub fn targets(config: &PanosConfig) -> Vec<String> {
    match config.kind {
        ConfigKind::Panorama => config.device_groups.keys().cloned().collect(),
        ConfigKind::Firewall => config.vsys.keys().cloned().collect(),
    }
}

/// Convenience map used by tests and the CLI: rule name -> index in the policy.
pub fn rule_index(policy: &Policy) -> BTreeMap<String, usize> {
    policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.provenance.rule_name.clone(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::panos::{Limits, parse_config};

    const FIXTURE: &str = include_str!("../../../tests/fixtures/panorama.xml");
    const BLOCK_RULE: &str = r#"<entry name="block-bad-actors""#;

    fn parse(text: &str) -> PanosConfig {
        parse_config(text, "panorama.xml", Limits::default()).expect("fixture variant parses")
    }

    fn dg(name: &str) -> ResolveOptions {
        ResolveOptions {
            device_group: Some(name.into()),
            ..ResolveOptions::default()
        }
    }

    /// Each configuration after the fixture, resolved through one memo, gives exactly what a
    /// fresh resolution gives, and takes over the rules the change left alone.
    #[test]
    fn a_memo_resolves_each_change_as_a_fresh_resolution_does() {
        let inserted = r#"<entry name="added-first"><from><member>any</member></from><to><member>any</member></to><source><member>any</member></source><destination><member>any</member></destination><service><member>any</member></service><action>deny</action></entry>"#;
        // (what changed since the step before, text, options, rules resolved again; None:
        // everything)
        let steps: Vec<(&str, String, ResolveOptions, Option<usize>)> = vec![
            ("nothing", FIXTURE.to_string(), dg("dg-prod"), Some(0)),
            (
                "one action",
                FIXTURE.replacen("<action>allow</action>", "<action>deny</action>", 1),
                dg("dg-prod"),
                Some(1),
            ),
            (
                "the action back, a rule added above all others (every position moves)",
                FIXTURE.replacen(BLOCK_RULE, &format!("{inserted}\n{BLOCK_RULE}"), 1),
                dg("dg-prod"),
                Some(2),
            ),
            (
                "that rule removed, every line moves",
                FIXTURE.replacen("<devices>", "\n\n\n<devices>", 1),
                dg("dg-prod"),
                Some(0),
            ),
            (
                "an address object",
                FIXTURE.replace("10.0.53.0/28", "10.0.54.0/28"),
                dg("dg-prod"),
                None,
            ),
            (
                "the device group",
                FIXTURE.replace("10.0.53.0/28", "10.0.54.0/28"),
                dg("dg-root"),
                None,
            ),
            (
                "back to the start",
                FIXTURE.to_string(),
                dg("dg-prod"),
                None,
            ),
        ];
        let mut memo = ResolveMemo::default();
        memo.resolve(parse(FIXTURE), &dg("dg-prod"))
            .expect("fixture resolves");
        for (change, text, options, again) in steps {
            let config = parse(&text);
            let fresh = resolve(&config, &options).expect("variant resolves");
            let remembered = memo.resolve(config, &options).expect("variant resolves");
            assert_eq!(remembered.policy, fresh.policy, "{change}: policy");
            assert_eq!(remembered.warnings, fresh.warnings, "{change}: warnings");
            let written = fresh
                .policy
                .rules
                .iter()
                .filter(|r| r.provenance.rulebase != Rulebase::Default)
                .count();
            assert!(written > 5, "{change}: the fixture has rules");
            let expected = again.map_or(0, |again| written - again);
            assert_eq!(memo.reused, expected, "{change}: rules taken over");
        }
    }
}
