//! Resolved service sets: protocol + destination port intervals (+ optional source ports).

use std::fmt;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// Whether packets of this IP protocol carry ports a service can match (TCP, UDP, SCTP).
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
}

/// Transport protocols a service object can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
            Protocol::Sctp => PROTO_SCTP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Inclusive port interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Why a port list did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid port list {list:?}: {problem} (use ports 0-65535 as `80,443,8000-8080`)")]
pub struct PortListError {
    pub list: String,
    pub problem: String,
}

/// Parses a PAN-OS port list: `80`, `80,443`, `8000-8080`, or mixes. Port 0 is accepted
/// because PAN-OS accepts it in source-port lists. Intervals are sorted and merged.
pub fn parse_port_list(list: &str) -> Result<Vec<PortRange>, PortListError> {
    let err = |problem: String| PortListError {
        list: list.to_string(),
        problem,
    };
    let parse_port = |s: &str| -> Result<u16, PortListError> {
        s.trim()
            .parse::<u16>()
            .map_err(|_| err(format!("{:?} is not a port number", s.trim())))
    };
    let mut ranges = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(err("empty item".to_string()));
        }
        let range = match item.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (parse_port(a)?, parse_port(b)?);
                if first > last {
                    return Err(err(format!("range {item} runs backwards")));
                }
                PortRange { first, last }
            }
            None => PortRange::single(parse_port(item)?),
        };
        ranges.push(range);
    }
    Ok(merge_ranges(ranges))
}

/// Sorts and merges overlapping or adjacent intervals.
pub fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// One protocol with its destination ports and, optionally, the allowed source ports
/// (`None` = any source port).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceEntry {
    pub protocol: Protocol,
    pub destination_ports: Vec<PortRange>,
    pub source_ports: Option<Vec<PortRange>>,
}

impl ServiceEntry {
    pub fn matches(
        &self,
        protocol: u8,
        source_port: Option<u16>,
        destination_port: Option<u16>,
    ) -> bool {
        if protocol != self.protocol.number() {
            return false;
        }
        let Some(dport) = destination_port else {
            return false;
        };
        if !self.destination_ports.iter().any(|r| r.contains(dport)) {
            return false;
        }
        match (&self.source_ports, source_port) {
            (None, _) => true,
            (Some(ranges), Some(sport)) => ranges.iter().any(|r| r.contains(sport)),
            (Some(_), None) => false,
        }
    }
}

impl fmt::Display for ServiceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ranges: &[PortRange]| {
            ranges
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "{}/{}",
            self.protocol.name(),
            list(&self.destination_ports)
        )?;
        if let Some(src) = &self.source_ports {
            write!(f, " from source port {}", list(src))?;
        }
        Ok(())
    }
}

/// A resolved `service` column.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServiceSet {
    /// Any protocol, any port (including ICMP and other port-less protocols).
    pub any: bool,
    pub entries: Vec<ServiceEntry>,
}

impl ServiceSet {
    pub fn any() -> Self {
        ServiceSet {
            any: true,
            entries: Vec::new(),
        }
    }

    pub fn extend(&mut self, other: &ServiceSet) {
        self.any |= other.any;
        for e in &other.entries {
            if !self.entries.contains(e) {
                self.entries.push(e.clone());
            }
        }
    }

    /// The entry that matches, or `None`. Port-less protocols (ICMP, ...) only match `any`.
    pub fn match_reason(
        &self,
        protocol: u8,
        source_port: Option<u16>,
        destination_port: Option<u16>,
    ) -> Option<String> {
        if self.any {
            return Some("any".to_string());
        }
        self.entries
            .iter()
            .find(|e| e.matches(protocol, source_port, destination_port))
            .map(ToString::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        assert_eq!(
            parse_port_list("443, 80,8000-8080,8080-8090").unwrap(),
            vec![
                PortRange::single(80),
                PortRange::single(443),
                PortRange {
                    first: 8000,
                    last: 8090
                }
            ]
        );
        assert!(parse_port_list("80,").is_err());
        assert!(parse_port_list("70000").is_err());
        assert!(parse_port_list("90-80").is_err());
        assert!(parse_port_list("http").is_err());
    }

    #[test]
    fn entry_matching() {
        let e = ServiceEntry {
            protocol: Protocol::Udp,
            destination_ports: parse_port_list("53").unwrap(),
            source_ports: Some(parse_port_list("1024-65535").unwrap()),
        };
        assert!(e.matches(PROTO_UDP, Some(40000), Some(53)));
        assert!(!e.matches(PROTO_UDP, Some(53), Some(53)));
        assert!(!e.matches(PROTO_TCP, Some(40000), Some(53)));
        assert!(!e.matches(PROTO_ICMP, None, None));
    }
}
