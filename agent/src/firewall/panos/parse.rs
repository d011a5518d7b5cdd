//! PAN-OS XML -> [`PanosConfig`]. Reads a Panorama running configuration, a firewall
//! configuration, or either wrapped in an XML API `<response status="success"><result>`.
//!
//! Paths read (relative to `<config>`):
//! - `shared/...` objects, `shared/pre-rulebase`, `shared/post-rulebase` (Panorama);
//! - `devices/entry/device-group/entry[@name]/...` objects and rulebases, inline `parent-dg`;
//! - `readonly/devices/entry/device-group/entry[@name]/parent-dg` (and the older
//!   `readonly/dg-meta-data/dg-info/entry[@name]/parent-dg`): the hierarchy Panorama records;
//! - `devices/entry/template|template-stack/entry/config/devices/entry/vsys/entry/zone/entry`;
//! - `devices/entry/vsys/entry[@name]/...` (firewall), with `rulebase/security/rules` and
//!   `rulebase/default-security-rules/rules`.

use std::collections::{BTreeMap, BTreeSet};

use roxmltree::Node;

use super::config::{
    AddressGroup, AddressGroupKind, AddressObject, AddressValue, ConfigKind, ConfigNote,
    DefaultRuleOverride, DeviceGroup, PanosConfig, Scope, SecurityRule, ServiceGroup,
    ServiceObject, ServiceProtocol, Vsys,
};
use super::error::PanosError;
use super::xml::{
    Limits, child, child_text, children, entries, members, parse_document, path, text_of,
};
use crate::model::RuleTarget;

struct Ctx<'d> {
    origin: &'d str,
    /// Byte offsets of every newline, so a node's line is a binary search (roxmltree's own
    /// position lookup rescans the text from the start on every call).
    newlines: Vec<usize>,
    /// Line of the text's first byte (1, unless the text is a part of a file).
    first_line: u32,
    notes: Vec<ConfigNote>,
    /// The scope being read, and where each of its security rules is written.
    scope: ScopeKey,
    spans: Vec<RuleSpan>,
}

impl<'d> Ctx<'d> {
    fn new(origin: &'d str, text: &str, first_line: u32) -> Self {
        Ctx {
            origin,
            newlines: memchr::memchr_iter(b'\n', text.as_bytes()).collect(),
            first_line,
            notes: Vec::new(),
            scope: ScopeKey::Shared,
            spans: Vec::new(),
        }
    }

    fn line(&self, node: Node<'_, '_>) -> u32 {
        let offset = node.range().start;
        u32::try_from(self.newlines.partition_point(|&n| n < offset))
            .unwrap_or(u32::MAX)
            .saturating_add(self.first_line)
    }

    fn structure(&self, node: Node<'_, '_>, problem: String) -> PanosError {
        PanosError::Structure {
            origin: self.origin.to_string(),
            line: self.line(node),
            problem,
        }
    }

    fn name(&self, entry: Node<'_, '_>, what: &str) -> Result<String, PanosError> {
        match entry.attribute("name") {
            Some(name) if !name.trim().is_empty() => Ok(name.to_string()),
            _ => Err(self.structure(
                entry,
                format!("{what} <entry> has no name attribute; every PAN-OS entry is named"),
            )),
        }
    }

    fn yes_no(&self, node: Node<'_, '_>, field: &str) -> Result<Option<bool>, PanosError> {
        let Some(element) = child(node, field) else {
            return Ok(None);
        };
        match text_of(element).as_str() {
            "yes" => Ok(Some(true)),
            "no" => Ok(Some(false)),
            other => Err(self.structure(
                element,
                format!("<{field}> must be yes or no, found {other:?}"),
            )),
        }
    }

    fn note(&mut self, node: Option<Node<'_, '_>>, message: String) {
        let line = node.map(|n| self.line(n));
        self.notes.push(ConfigNote { line, message });
    }
}

/// The parts of a document that hold configuration, wherever the wrapper put them.
struct Roots<'a, 'input> {
    shared: Option<Node<'a, 'input>>,
    device_entries: Vec<Node<'a, 'input>>,
    readonly: Option<Node<'a, 'input>>,
}

fn roots_of<'a, 'input>(config: Node<'a, 'input>) -> Roots<'a, 'input> {
    Roots {
        shared: child(config, "shared"),
        device_entries: entries(config, &["devices"]),
        readonly: child(config, "readonly"),
    }
}

fn find_roots<'a, 'input>(
    ctx: &Ctx<'_>,
    root: Node<'a, 'input>,
) -> Result<Roots<'a, 'input>, PanosError> {
    match root.tag_name().name() {
        "config" => Ok(roots_of(root)),
        "response" => {
            let status = root.attribute("status").unwrap_or("").to_string();
            if status != "success" {
                let message = child(root, "msg")
                    .or_else(|| path(root, &["result", "msg"]))
                    .map(|m| {
                        m.descendants()
                            .filter(|n| n.is_text())
                            .filter_map(|n| n.text())
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_else(|| "no message".to_string());
                return Err(PanosError::ApiError {
                    origin: ctx.origin.to_string(),
                    status,
                    code: root.attribute("code").map(str::to_string),
                    message,
                });
            }
            let result = child(root, "result").ok_or_else(|| {
                ctx.structure(root, "XML API response has no <result>".to_string())
            })?;
            if let Some(config) = child(result, "config") {
                return Ok(roots_of(config));
            }
            if ["shared", "devices", "readonly"]
                .iter()
                .any(|n| child(result, n).is_some())
            {
                return Ok(roots_of(result));
            }
            // xpath=/config/devices/entry returns the device entries directly.
            let device_entries: Vec<_> = children(result, "entry").collect();
            if device_entries.is_empty() {
                return Err(ctx.structure(
                    result,
                    "XML API result holds no configuration; read xpath /config (or /config/devices/entry)"
                        .to_string(),
                ));
            }
            Ok(Roots {
                shared: None,
                device_entries,
                readonly: None,
            })
        }
        other => Err(PanosError::NotAConfig {
            origin: ctx.origin.to_string(),
            line: ctx.line(root),
            root: other.to_string(),
        }),
    }
}

/// Parses a configuration document. `origin` names the file or API in every message.
pub fn parse_config(text: &str, origin: &str, limits: Limits) -> Result<PanosConfig, PanosError> {
    parse_written(text, origin, limits).map(|written| written.config)
}

/// A configuration and where its security rules are written in the text.
struct Written {
    config: PanosConfig,
    spans: Vec<RuleSpan>,
    /// Nodes of the whole document (what [`Limits::max_nodes`] bounds).
    nodes: usize,
}

fn parse_written(text: &str, origin: &str, limits: Limits) -> Result<Written, PanosError> {
    let doc = parse_document(text, origin, limits)?;
    let mut ctx = Ctx::new(origin, text, 1);
    let roots = find_roots(&ctx, doc.root_element())?;

    let is_panorama = roots.device_entries.iter().any(|d| {
        child(*d, "device-group").is_some()
            || child(*d, "template").is_some()
            || child(*d, "template-stack").is_some()
    }) || (roots
        .device_entries
        .iter()
        .all(|d| child(*d, "vsys").is_none())
        && roots.shared.is_some_and(|s| {
            child(s, "pre-rulebase").is_some() || child(s, "post-rulebase").is_some()
        }));

    let shared = match roots.shared {
        Some(node) => {
            ctx.scope = ScopeKey::Shared;
            parse_scope(&mut ctx, node, "shared")?
        }
        None => Scope::default(),
    };

    let mut config = PanosConfig {
        origin: origin.to_string(),
        kind: if is_panorama {
            ConfigKind::Panorama
        } else {
            ConfigKind::Firewall
        },
        shared,
        device_groups: BTreeMap::new(),
        vsys: BTreeMap::new(),
        template_zones: BTreeSet::new(),
        notes: Vec::new(),
    };

    for device in &roots.device_entries {
        for dg in entries(*device, &["device-group"]) {
            let name = ctx.name(dg, "device-group")?;
            let parent = child_text(dg, "parent-dg").filter(|p| !p.is_empty());
            ctx.scope = ScopeKey::DeviceGroup(name.clone());
            let scope = parse_scope(&mut ctx, dg, &format!("device group '{name}'"))?;
            if config.device_groups.contains_key(&name) {
                ctx.note(
                    Some(dg),
                    format!("device group '{name}' is defined twice; the first one is used"),
                );
                continue;
            }
            let line = ctx.line(dg);
            config.device_groups.insert(
                name.clone(),
                DeviceGroup {
                    name,
                    parent,
                    scope,
                    line,
                },
            );
        }
        for template in entries(*device, &["template"])
            .into_iter()
            .chain(entries(*device, &["template-stack"]))
        {
            for inner in entries(template, &["config", "devices"]) {
                for vsys in entries(inner, &["vsys"]) {
                    for zone in entries(vsys, &["zone"]) {
                        config.template_zones.insert(ctx.name(zone, "zone")?);
                    }
                }
            }
        }
        if !is_panorama {
            for vsys in entries(*device, &["vsys"]) {
                let name = ctx.name(vsys, "vsys")?;
                let zones = entries(vsys, &["zone"])
                    .into_iter()
                    .map(|z| ctx.name(z, "zone"))
                    .collect::<Result<BTreeSet<_>, _>>()?;
                ctx.scope = ScopeKey::Vsys(name.clone());
                let scope = parse_scope(&mut ctx, vsys, &format!("vsys '{name}'"))?;
                let line = ctx.line(vsys);
                config.vsys.insert(
                    name.clone(),
                    Vsys {
                        name,
                        zones,
                        scope,
                        line,
                    },
                );
            }
        }
    }

    if let Some(readonly) = roots.readonly {
        apply_readonly_parents(&mut ctx, readonly, &mut config);
    }
    check_hierarchy(&ctx, &config)?;
    config.notes = ctx.notes;
    Ok(Written {
        config,
        spans: ctx.spans,
        nodes: doc.descendants().len(),
    })
}

/// Panorama's own record of the hierarchy wins over an inline `parent-dg`.
fn apply_readonly_parents(ctx: &mut Ctx<'_>, readonly: Node<'_, '_>, config: &mut PanosConfig) {
    let mut records = Vec::new();
    for device in entries(readonly, &["devices"]) {
        records.extend(entries(device, &["device-group"]));
    }
    records.extend(entries(readonly, &["dg-meta-data", "dg-info"]));
    for record in records {
        let Some(name) = record.attribute("name") else {
            continue;
        };
        let parent = child_text(record, "parent-dg").filter(|p| !p.is_empty());
        let Some(dg) = config.device_groups.get_mut(name) else {
            continue;
        };
        if dg.parent.is_some() && dg.parent != parent {
            let message = format!(
                "device group '{name}': inline parent-dg {:?} differs from Panorama's record {:?}; using Panorama's record",
                dg.parent, parent
            );
            ctx.note(Some(record), message);
        }
        dg.parent = parent;
    }
}

fn check_hierarchy(ctx: &Ctx<'_>, config: &PanosConfig) -> Result<(), PanosError> {
    for dg in config.device_groups.values() {
        let mut seen = vec![dg.name.as_str()];
        let mut current = dg;
        while let Some(parent) = current.parent.as_deref() {
            if parent == "shared" {
                break;
            }
            let Some(next) = config.device_groups.get(parent) else {
                return Err(PanosError::Structure {
                    origin: ctx.origin.to_string(),
                    line: current.line,
                    problem: format!(
                        "device group '{}' names parent '{parent}', which is not a device group; fix parent-dg",
                        current.name
                    ),
                });
            };
            if seen.contains(&parent) {
                seen.push(parent);
                return Err(PanosError::Structure {
                    origin: ctx.origin.to_string(),
                    line: dg.line,
                    problem: format!("device group hierarchy has a cycle: {}", seen.join(" -> ")),
                });
            }
            seen.push(parent);
            current = next;
        }
    }
    Ok(())
}

fn insert_unique<T>(
    ctx: &mut Ctx<'_>,
    map: &mut BTreeMap<String, T>,
    node: Node<'_, '_>,
    name: String,
    value: T,
    what: &str,
    scope: &str,
) {
    match map.entry(name) {
        std::collections::btree_map::Entry::Occupied(existing) => {
            let message = format!(
                "{what} '{}' is defined twice in {scope}; the first definition is used",
                existing.key()
            );
            ctx.note(Some(node), message);
        }
        std::collections::btree_map::Entry::Vacant(slot) => {
            slot.insert(value);
        }
    }
}

fn parse_scope(
    ctx: &mut Ctx<'_>,
    node: Node<'_, '_>,
    scope_name: &str,
) -> Result<Scope, PanosError> {
    let mut scope = Scope::default();
    for tag in entries(node, &["tag"]) {
        scope.tags.insert(ctx.name(tag, "tag")?);
    }
    for entry in entries(node, &["address"]) {
        let name = ctx.name(entry, "address")?;
        let value = if let Some(v) = child_text(entry, "ip-netmask") {
            AddressValue::IpNetmask(v)
        } else if let Some(v) = child_text(entry, "ip-range") {
            AddressValue::IpRange(v)
        } else if let Some(v) = child_text(entry, "ip-wildcard") {
            AddressValue::IpWildcard(v)
        } else if let Some(v) = child_text(entry, "fqdn") {
            AddressValue::Fqdn(v)
        } else {
            AddressValue::Missing
        };
        let object = AddressObject {
            name: name.clone(),
            value,
            tags: members(entry, "tag"),
            line: ctx.line(entry),
        };
        insert_unique(
            ctx,
            &mut scope.addresses,
            entry,
            name,
            object,
            "address",
            scope_name,
        );
    }
    for entry in entries(node, &["address-group"]) {
        let name = ctx.name(entry, "address-group")?;
        let kind = if child(entry, "static").is_some() {
            AddressGroupKind::Static(members(entry, "static"))
        } else if let Some(dynamic) = child(entry, "dynamic") {
            AddressGroupKind::Dynamic(child_text(dynamic, "filter").unwrap_or_default())
        } else {
            AddressGroupKind::Empty
        };
        let group = AddressGroup {
            name: name.clone(),
            kind,
            tags: members(entry, "tag"),
            line: ctx.line(entry),
        };
        insert_unique(
            ctx,
            &mut scope.address_groups,
            entry,
            name,
            group,
            "address-group",
            scope_name,
        );
    }
    for entry in entries(node, &["service"]) {
        let name = ctx.name(entry, "service")?;
        let protocols = child(entry, "protocol")
            .map(|p| {
                p.children()
                    .filter(|c| c.is_element())
                    .map(|c| ServiceProtocol {
                        protocol: c.tag_name().name().to_string(),
                        port: child_text(c, "port"),
                        source_port: child_text(c, "source-port").filter(|s| !s.is_empty()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let object = ServiceObject {
            name: name.clone(),
            protocols,
            line: ctx.line(entry),
        };
        insert_unique(
            ctx,
            &mut scope.services,
            entry,
            name,
            object,
            "service",
            scope_name,
        );
    }
    for entry in entries(node, &["service-group"]) {
        let name = ctx.name(entry, "service-group")?;
        let group = ServiceGroup {
            name: name.clone(),
            members: members(entry, "members"),
            line: ctx.line(entry),
        };
        insert_unique(
            ctx,
            &mut scope.service_groups,
            entry,
            name,
            group,
            "service-group",
            scope_name,
        );
    }
    for entry in entries(node, &["application"])
        .into_iter()
        .chain(entries(node, &["application-group"]))
    {
        scope.applications.insert(ctx.name(entry, "application")?);
    }
    for (list, steps, rules) in [
        (RuleList::Pre, "pre-rulebase", &mut scope.pre_rules),
        (RuleList::Post, "post-rulebase", &mut scope.post_rules),
        (RuleList::Local, "rulebase", &mut scope.local_rules),
    ] {
        for entry in entries(node, &[steps, "security", "rules"]) {
            let rule = parse_rule(ctx, entry)?;
            ctx.spans.push(RuleSpan {
                range: entry.range(),
                line: rule.line,
                depth: entry.ancestors().filter(Node::is_element).count(),
                nodes: entry.descendants().count(),
                scope: ctx.scope.clone(),
                list,
                index: rules.len(),
            });
            rules.push(rule);
        }
    }
    for steps in [
        ["post-rulebase", "default-security-rules", "rules"],
        ["rulebase", "default-security-rules", "rules"],
    ] {
        for entry in entries(node, &steps) {
            scope.default_rules.push(DefaultRuleOverride {
                name: ctx.name(entry, "default security rule")?,
                action: child_text(entry, "action"),
                log_start: ctx.yes_no(entry, "log-start")?,
                log_end: ctx.yes_no(entry, "log-end")?,
                log_setting: child_text(entry, "log-setting").filter(|s| !s.is_empty()),
                line: ctx.line(entry),
            });
        }
    }
    Ok(scope)
}

fn parse_rule(ctx: &mut Ctx<'_>, entry: Node<'_, '_>) -> Result<SecurityRule, PanosError> {
    let name = ctx.name(entry, "security rule")?;
    let mut other_criteria = Vec::new();
    for field in ["source-user", "category", "source-hip", "destination-hip"] {
        let values = members(entry, field);
        if !values.is_empty() && values.iter().any(|v| v != "any") {
            other_criteria.push((field.to_string(), values));
        }
    }
    let target = match child(entry, "target") {
        Some(t) => RuleTarget {
            devices: entries(t, &["devices"])
                .into_iter()
                .filter_map(|d| d.attribute("name").map(str::to_string))
                .collect(),
            tags: members(t, "tags"),
            negate: ctx.yes_no(t, "negate")?.unwrap_or(false),
        },
        None => RuleTarget::default(),
    };
    Ok(SecurityRule {
        uuid: entry.attribute("uuid").map(str::to_string),
        line: ctx.line(entry),
        from: members(entry, "from"),
        to: members(entry, "to"),
        source: members(entry, "source"),
        destination: members(entry, "destination"),
        negate_source: ctx.yes_no(entry, "negate-source")?.unwrap_or(false),
        negate_destination: ctx.yes_no(entry, "negate-destination")?.unwrap_or(false),
        service: members(entry, "service"),
        application: members(entry, "application"),
        other_criteria,
        action: child_text(entry, "action"),
        rule_type: child_text(entry, "rule-type"),
        disabled: ctx.yes_no(entry, "disabled")?.unwrap_or(false),
        description: child_text(entry, "description").filter(|s| !s.is_empty()),
        tags: members(entry, "tag"),
        log_start: ctx.yes_no(entry, "log-start")?,
        log_end: ctx.yes_no(entry, "log-end")?,
        log_setting: child_text(entry, "log-setting").filter(|s| !s.is_empty()),
        target,
        name,
    })
}

/// The scope a security rule belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeKey {
    Shared,
    DeviceGroup(String),
    Vsys(String),
}

/// The rule list of a scope a security rule is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleList {
    Pre,
    Post,
    Local,
}

/// Where one security rule is written.
#[derive(Clone, Debug)]
pub struct RuleSpan {
    /// Bytes of its `<entry>` element.
    range: std::ops::Range<usize>,
    line: u32,
    /// Elements from the root down to the `<entry>`, itself included.
    depth: usize,
    /// Nodes of the element, itself included.
    nodes: usize,
    pub scope: ScopeKey,
    pub list: RuleList,
    /// Position in its list, from 0.
    pub index: usize,
}

/// One security rule read again: where it is, and what it now says.
#[derive(Debug)]
pub struct RuleEdit {
    pub span: RuleSpan,
    pub rule: SecurityRule,
}

/// The last text parsed in full or edited, with where its security rules are written: a
/// commit that changes one rule changes one place of a configuration of megabytes, and
/// [`ParseMemo::edited_rule`] reads that rule alone instead of the whole text.
#[derive(Default)]
pub struct ParseMemo {
    text: String,
    origin: String,
    spans: Vec<RuleSpan>,
    nodes: usize,
}

/// Bytes two texts share at their start.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const CHUNK: usize = 4096;
    let mut at = 0;
    let len = a.len().min(b.len());
    while at + CHUNK <= len && a[at..at + CHUNK] == b[at..at + CHUNK] {
        at += CHUNK;
    }
    at + a[at..len]
        .iter()
        .zip(&b[at..len])
        .take_while(|(x, y)| x == y)
        .count()
}

/// Bytes two texts share at their end, at most `limit`.
fn common_suffix(a: &[u8], b: &[u8], limit: usize) -> usize {
    const CHUNK: usize = 4096;
    let mut at = 0;
    while at + CHUNK <= limit
        && a[a.len() - at - CHUNK..a.len() - at] == b[b.len() - at - CHUNK..b.len() - at]
    {
        at += CHUNK;
    }
    at + a[..a.len() - at]
        .iter()
        .rev()
        .zip(b[..b.len() - at].iter().rev())
        .take(limit - at)
        .take_while(|(x, y)| x == y)
        .count()
}

impl ParseMemo {
    /// Parses `text` in full and remembers it.
    pub fn parse(
        &mut self,
        text: &str,
        origin: &str,
        limits: Limits,
    ) -> Result<PanosConfig, PanosError> {
        let written = parse_written(text, origin, limits)?;
        // A configuration with notes (duplicates, hierarchy disagreements) is always read in
        // full: its notes could depend on any part of it.
        if written.config.notes.is_empty() {
            self.text = text.to_string();
            self.origin = origin.to_string();
            self.spans = written.spans;
            // Scopes and rulebases are read in a fixed order, not necessarily the text's.
            self.spans.sort_by_key(|span| span.range.start);
            self.nodes = written.nodes;
        } else {
            *self = ParseMemo::default();
        }
        Ok(written.config)
    }

    /// When `text` differs from the remembered text only inside one security rule, without
    /// adding or removing a line, that rule parsed from `text` (within the same limits as the
    /// whole text): the configuration is the remembered one with this rule in its place.
    /// `None` when the text must be parsed in full (including every case where reading the
    /// rule alone fails, so that the full parse reports the problem with its context).
    pub fn edited_rule(&self, text: &str, origin: &str, limits: Limits) -> Option<RuleEdit> {
        let (old, new) = (self.text.as_bytes(), text.as_bytes());
        if self.spans.is_empty() || origin != self.origin || new.len() > limits.max_bytes {
            return None;
        }
        let prefix = common_prefix(old, new);
        if prefix == old.len() && prefix == new.len() {
            return None;
        }
        let suffix = common_suffix(old, new, old.len().min(new.len()) - prefix);
        let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
        // The rule whose element strictly holds the changed bytes: its `<entry` and its
        // closing `>` are unchanged.
        let at = self.spans.partition_point(|s| s.range.start < prefix);
        let span = self.spans[..at].last()?;
        if old_end >= span.range.end {
            return None;
        }
        let newlines = |bytes: &[u8]| memchr::memchr_iter(b'\n', bytes).count();
        if newlines(&old[prefix..old_end]) != newlines(&new[prefix..new_end]) {
            return None;
        }
        let end = (span.range.end + new_end).checked_sub(old_end)?;
        let fragment = text.get(span.range.start..end)?;
        let doc = parse_document(fragment, origin, limits).ok()?;
        let entry = doc.root_element();
        let nodes = entry.descendants().count();
        // Conservative against the whole-document limits: refused here is parsed in full.
        let total = u32::try_from(self.nodes - span.nodes + nodes).unwrap_or(u32::MAX);
        if entry.tag_name().name() != "entry"
            || total >= limits.max_nodes
            || depth(&doc) + span.depth - 1 > limits.max_depth
        {
            return None;
        }
        let mut ctx = Ctx::new(origin, fragment, span.line);
        let rule = parse_rule(&mut ctx, entry).ok()?;
        if !ctx.notes.is_empty() {
            return None;
        }
        let mut span = span.clone();
        span.range = span.range.start..end;
        span.nodes = nodes;
        Some(RuleEdit { span, rule })
    }

    /// Remembers `text` as the configuration with the edit of the rule now at `span`.
    pub fn edited(&mut self, text: &str, span: &RuleSpan) {
        let start = span.range.start;
        let at = self.spans.partition_point(|s| s.range.start < start);
        let old_end = self.spans[at].range.end;
        let new_end = span.range.end;
        self.nodes = self.nodes - self.spans[at].nodes + span.nodes;
        self.spans[at] = span.clone();
        // Every later rule moved by the difference in length.
        for span in &mut self.spans[at + 1..] {
            span.range =
                (span.range.start + new_end - old_end)..(span.range.end + new_end - old_end);
        }
        self.text.clear();
        self.text.push_str(text);
    }
}

/// Deepest element nesting of a document (the root element is 1).
fn depth(doc: &roxmltree::Document<'_>) -> usize {
    doc.descendants()
        .filter(|n| n.is_element())
        .map(|n| n.ancestors().filter(Node::is_element).count())
        .max()
        .unwrap_or(0)
}
