//! The generated firewall rules rendered for iptables (with ipset) and nftables, IPv4 only:
//! every measured packet is IPv4, and a full rendering would put the IPv6 prefixes (one in
//! ten) into ip6tables or an `ip6` table that these packets never visit.
//!
//! Zones are not matched: every address set names workloads of one zone or external
//! prefixes, so the addresses decide the zone pair, except for `any`, which iptables renders
//! as no match at all (wider, never narrower, than the zone-bound rule). nftables dispatches
//! on the pair of interfaces to one chain per zone pair, the way zone firewalls built on
//! nftables do it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use zonewall::policy::resource::{AddressMatch, Protocol, RuleAction};

use super::super::generate::{self, FirewallRule};

/// One rendered line: a firewall rule becomes one line per (protocol, port range) of its
/// service; its source and destination are named sets (or no match for `any`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub from: Vec<&'static str>,
    pub to: Vec<&'static str>,
    pub source: Option<usize>,
    pub destination: Option<usize>,
    /// Protocol name and inclusive port range; `None` for any service.
    pub service: Option<(&'static str, u16, u16)>,
    pub action: RuleAction,
    /// Index of the firewall rule the line came from.
    pub rule: usize,
}

/// The address sets (IPv4 prefixes, deduplicated by content) and the lines in rule order.
pub struct Rendered {
    pub sets: Vec<Vec<String>>,
    pub lines: Vec<Line>,
}

/// IPv4 members of an address match; `None` for `any`. Selectors name `dag-app-N`, whose
/// members are that application's replicas.
fn members(address: &AddressMatch) -> Option<Vec<String>> {
    if address.any {
        return None;
    }
    let mut out: Vec<String> = address
        .prefixes
        .iter()
        .map(ToString::to_string)
        .filter(|p| !p.contains(':'))
        .collect();
    for selector in &address.selectors {
        let app: usize = selector
            .group
            .strip_prefix("dag-app-")
            .and_then(|n| n.parse().ok())
            .expect("the generator names selector groups dag-app-N");
        out.extend(
            (0..generate::REPLICAS_PER_APP)
                .map(|replica| format!("{}/32", generate::workload_v4(app, replica))),
        );
    }
    Some(out)
}

pub fn render(rules: &[FirewallRule]) -> Rendered {
    let mut index: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut set_of = |address: &AddressMatch| -> Result<Option<usize>, ()> {
        match members(address) {
            None => Ok(None),
            // IPv6 only: no IPv4 packet can match the rule.
            Some(list) if list.is_empty() => Err(()),
            Some(list) => Ok(Some(*index.entry(list.clone()).or_insert_with(|| {
                sets.push(list);
                sets.len() - 1
            }))),
        }
    };
    let mut lines = Vec::new();
    for (rule_index, rule) in rules.iter().enumerate() {
        let (Ok(source), Ok(destination)) = (set_of(&rule.source), set_of(&rule.destination))
        else {
            continue;
        };
        let services: Vec<Option<(&'static str, u16, u16)>> = if rule.service.any {
            vec![None]
        } else {
            rule.service
                .entries
                .iter()
                .flat_map(|entry| {
                    let protocol = match entry.protocol {
                        Protocol::Tcp => "tcp",
                        Protocol::Udp => "udp",
                        Protocol::Sctp => "sctp",
                    };
                    entry.ports.iter().map(move |range| {
                        Some((protocol, range.port, range.end_port.unwrap_or(range.port)))
                    })
                })
                .collect()
        };
        for service in services {
            lines.push(Line {
                from: rule.from.clone(),
                to: rule.to.clone(),
                source,
                destination,
                service,
                action: rule.action,
                rule: rule_index,
            });
        }
    }
    Rendered { sets, lines }
}

/// `ipset restore` input creating every set as `<prefix>N`.
pub fn ipset_restore(rendered: &Rendered, prefix: &str) -> String {
    let mut out = String::new();
    for (n, set) in rendered.sets.iter().enumerate() {
        let _ = writeln!(
            out,
            "create {prefix}{n} hash:net family inet maxelem {}",
            (set.len() * 2).max(1024)
        );
        for member in set {
            let _ = writeln!(out, "add {prefix}{n} {member}");
        }
    }
    out
}

/// Where iptables accepts the replies of accepted flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Established {
    /// First line: a packet of a tracked flow never reaches the rules.
    First,
    /// Last line, after every rule: each packet walks the list.
    Last,
}

const ESTABLISHED_LINE: &str = "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT";

/// One iptables rule (without `-A FORWARD`), optionally with another port.
pub fn iptables_rule(line: &Line, set_prefix: &str, port: Option<u16>) -> String {
    let mut out = String::new();
    if let Some((protocol, low, high)) = line.service {
        let (low, high) = port.map_or((low, high), |p| (p, p));
        // The cheap header and port matches first, the set lookups only when they pass.
        let _ = write!(out, "-p {protocol} -m {protocol} --dport ");
        if low == high {
            let _ = write!(out, "{low}");
        } else {
            let _ = write!(out, "{low}:{high}");
        }
    }
    if let Some(set) = line.source {
        let _ = write!(out, " -m set --match-set {set_prefix}{set} src");
    }
    if let Some(set) = line.destination {
        let _ = write!(out, " -m set --match-set {set_prefix}{set} dst");
    }
    let target = match line.action {
        RuleAction::Allow => "ACCEPT",
        RuleAction::Reject if matches!(line.service, Some(("tcp", _, _))) => {
            "REJECT --reject-with tcp-reset"
        }
        RuleAction::Reject => "REJECT",
        RuleAction::Deny | RuleAction::Drop | RuleAction::Pass => "DROP",
    };
    let _ = write!(out, " -j {target}");
    out.trim_start().to_string()
}

/// `iptables-restore` input: the filter table with FORWARD dropping by default.
pub fn iptables_restore(rendered: &Rendered, set_prefix: &str, established: Established) -> String {
    let mut out =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    if established == Established::First {
        let _ = writeln!(out, "{ESTABLISHED_LINE}");
    }
    for line in &rendered.lines {
        let _ = writeln!(out, "-A FORWARD {}", iptables_rule(line, set_prefix, None));
    }
    if established == Established::Last {
        let _ = writeln!(out, "{ESTABLISHED_LINE}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Position (1-based) in FORWARD of line `index`.
pub fn iptables_position(index: usize, established: Established) -> usize {
    index + 1 + usize::from(established == Established::First)
}

pub const NFT_TABLE: &str = "zwbench";

fn chain_name(from: &str, to: &str) -> String {
    format!("{from}_{to}")
}

/// One nftables rule of a zone-pair chain, optionally with another port; the probe rule
/// carries a comment so its handle can be found.
pub fn nft_rule(line: &Line, port: Option<u16>, comment: Option<&str>) -> String {
    let mut out = String::new();
    if let Some((protocol, low, high)) = line.service {
        let (low, high) = port.map_or((low, high), |p| (p, p));
        let _ = write!(out, "meta l4proto {protocol} th dport ");
        if low == high {
            let _ = write!(out, "{low} ");
        } else {
            let _ = write!(out, "{low}-{high} ");
        }
    }
    if let Some(set) = line.source {
        let _ = write!(out, "ip saddr @s{set} ");
    }
    if let Some(set) = line.destination {
        let _ = write!(out, "ip daddr @s{set} ");
    }
    out.push_str(match line.action {
        RuleAction::Allow => "accept",
        RuleAction::Reject if matches!(line.service, Some(("tcp", _, _))) => {
            "reject with tcp reset"
        }
        RuleAction::Reject => "reject",
        RuleAction::Deny | RuleAction::Drop | RuleAction::Pass => "drop",
    });
    if let Some(comment) = comment {
        let _ = write!(out, " comment \"{comment}\"");
    }
    out
}

/// `nft -f` input replacing the table in one transaction: interval sets, a forward chain that
/// accepts tracked flows and dispatches new ones by (input, output) interface to the chain of
/// their zone pair through a verdict map, and one chain per zone pair with its rules in order.
/// `interfaces`: (interface, zone) of the workloads' host-side interfaces.
pub fn nft_ruleset(rendered: &Rendered, interfaces: &[(&str, &str)], probe_line: usize) -> String {
    let mut out =
        format!("table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n");
    for (n, set) in rendered.sets.iter().enumerate() {
        let _ = writeln!(
            out,
            "  set s{n} {{ type ipv4_addr; flags interval; elements = {{ {} }} }}",
            set.join(", ")
        );
    }
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (index, line) in rendered.lines.iter().enumerate() {
        let comment = (index == probe_line).then_some("probe");
        for from in &line.from {
            for to in &line.to {
                chains
                    .entry(chain_name(from, to))
                    .or_default()
                    .push(nft_rule(line, None, comment));
            }
        }
    }
    out.push_str("  chain forward {\n    type filter hook forward priority filter; policy drop;\n    ct state established,related accept\n");
    let mut dispatch = Vec::new();
    for (input, from) in interfaces {
        for (output, to) in interfaces {
            let chain = chain_name(from, to);
            if input != output && chains.contains_key(&chain) {
                dispatch.push(format!("\"{input}\" . \"{output}\" : jump {chain}"));
            }
        }
    }
    if !dispatch.is_empty() {
        let _ = writeln!(
            out,
            "    iifname . oifname vmap {{ {} }}",
            dispatch.join(", ")
        );
    }
    out.push_str("  }\n");
    for (name, rules) in &chains {
        let _ = writeln!(out, "  chain {name} {{");
        for rule in rules {
            let _ = writeln!(out, "    {rule}");
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// The chain the probe line lives in, for the client's and the server's zones.
pub fn nft_chain(from: &str, to: &str) -> String {
    chain_name(from, to)
}

/// A table that drops everything forwarded: the state before the full policy is applied.
pub fn nft_closed() -> String {
    format!(
        "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n  chain forward {{\n    type filter hook forward priority filter; policy drop;\n  }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_bench::generate::{Scale, generate};

    #[test]
    fn every_rule_renders_with_shared_sets() {
        let generated = generate(Scale {
            rules: 200,
            prefixes: 2_000,
        });
        let rendered = render(&generated.rules);
        assert!(rendered.lines.len() >= 200, "one line per rule at least");
        // Feeds, 64 partner pairs at most, 24 applications: far fewer sets than lines.
        assert!(rendered.sets.len() < 100, "{} sets", rendered.sets.len());
        assert!(rendered.sets.iter().flatten().all(|p| !p.contains(':')));
        let restore = iptables_restore(&rendered, "zw", Established::Last);
        assert!(restore.ends_with(&format!("{ESTABLISHED_LINE}\nCOMMIT\n")));
        let probe = rendered
            .lines
            .iter()
            .position(|l| l.rule == 2)
            .expect("the allow rule renders");
        assert_eq!(
            iptables_rule(&rendered.lines[probe], "zw", Some(50_001)),
            format!(
                "-p tcp -m tcp --dport 50001 -m set --match-set zw{} src -m set --match-set zw{} dst -j ACCEPT",
                rendered.lines[probe].source.unwrap(),
                rendered.lines[probe].destination.unwrap()
            )
        );
        let nft = nft_ruleset(&rendered, &[("a", "dmz"), ("b", "trusted")], probe);
        assert!(nft.contains("\"a\" . \"b\" : jump dmz_trusted"));
        assert!(nft.contains("comment \"probe\""));
    }
}
