//! Resolved address sets: exact IPv4/IPv6 prefix sets, wildcard masks, FQDNs and label
//! selectors from dynamic address groups.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv4Subnets, Ipv6Net, Ipv6Subnets};

use super::tagexpr::TagExpr;

/// Expands an inclusive address range into the minimal list of aligned prefixes that covers
/// exactly the addresses from `start` to `end`, in ascending order.
///
/// Returns `None` when the two ends are of different families or `start > end`.
pub fn range_to_prefixes(start: IpAddr, end: IpAddr) -> Option<Vec<IpNet>> {
    match (start, end) {
        (IpAddr::V4(start), IpAddr::V4(end)) if start <= end => {
            Some(Ipv4Subnets::new(start, end, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(start), IpAddr::V6(end)) if start <= end => {
            Some(Ipv6Subnets::new(start, end, 0).map(IpNet::V6).collect())
        }
        _ => None,
    }
}

/// An address plus a wildcard mask in PAN-OS `ip-wildcard` form: a `1` bit in `mask` means
/// "any value", a `0` bit means "must equal the bit in `address`".
///
/// Kept exact rather than expanded: a non-contiguous mask such as `0.0.255.0` covers addresses
/// that no single prefix covers, and expanding it can need up to 2^(number of don't-care bits
/// outside the trailing run) prefixes. A compiler that needs prefixes calls
/// [`Wildcard::to_prefixes`] with a budget. Contiguous masks are turned into prefixes when the
/// set is built, so a `Wildcard` in an [`AddressSet`] always has a non-contiguous mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wildcard {
    /// Address with the don't-care bits cleared.
    pub address: IpAddr,
    /// Wildcard mask (1 = don't care). Same family as `address`.
    pub mask: IpAddr,
}

fn to_bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn from_bits(bits: u128, width: u32) -> IpAddr {
    if width == 32 {
        // Truncation is intended: callers only pass 32-bit values for IPv4.
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// Parsed form of a wildcard: either exactly one prefix or a non-contiguous wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WildcardShape {
    Prefix(IpNet),
    Wildcard(Wildcard),
}

impl Wildcard {
    /// Parses an address + wildcard mask into a prefix (contiguous mask) or a wildcard;
    /// `None` when the families differ.
    pub fn classify(address: IpAddr, mask: IpAddr) -> Option<WildcardShape> {
        let (addr_bits, width) = to_bits(address);
        let (mask_bits, mask_width) = to_bits(mask);
        if width != mask_width {
            return None;
        }
        let cleared = addr_bits & !mask_bits;
        // Contiguous iff mask + 1 is a power of two (all ones in the low bits, or zero).
        let full = if width == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        let contiguous = mask_bits == full || (mask_bits & (mask_bits + 1)) == 0;
        if contiguous {
            let host_bits = if mask_bits == full {
                width
            } else {
                mask_bits.count_ones()
            };
            let prefix_len = (width - host_bits) as u8;
            let net = IpNet::new(from_bits(cleared, width), prefix_len).ok()?;
            return Some(WildcardShape::Prefix(net));
        }
        Some(WildcardShape::Wildcard(Wildcard {
            address: from_bits(cleared, width),
            mask,
        }))
    }

    /// `ip` with the bits of `mask` cleared: a wildcard with this mask contains `ip` exactly
    /// when this is its address. `None` when the families differ.
    pub fn base(ip: IpAddr, mask: IpAddr) -> Option<IpAddr> {
        let (ip_bits, width) = to_bits(ip);
        let (mask_bits, mask_width) = to_bits(mask);
        (width == mask_width).then(|| from_bits(ip_bits & !mask_bits, width))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Wildcard::base(ip, self.mask) == Some(self.address)
    }

    /// Number of don't-care bits outside the trailing contiguous run: the expansion has
    /// 2^this prefixes.
    pub fn expansion_exponent(&self) -> u32 {
        let (mask_bits, _) = to_bits(self.mask);
        let trailing = mask_bits.trailing_ones();
        mask_bits.count_ones() - trailing
    }

    /// Exact expansion into prefixes, or `None` when it would exceed `max_prefixes`.
    pub fn to_prefixes(&self, max_prefixes: usize) -> Option<Vec<IpNet>> {
        let exponent = self.expansion_exponent();
        if exponent >= 64 || (1u128 << exponent) > max_prefixes as u128 {
            return None;
        }
        let (addr_bits, width) = to_bits(self.address);
        let (mask_bits, _) = to_bits(self.mask);
        let trailing = mask_bits.trailing_ones();
        let prefix_len = (width - trailing) as u8;
        let high_mask = mask_bits & !((1u128 << trailing).wrapping_sub(1));
        let free_bits: Vec<u32> = (0..width).filter(|b| high_mask >> b & 1 == 1).collect();
        let mut out = Vec::with_capacity(1 << exponent);
        for combo in 0u128..(1u128 << exponent) {
            let mut bits = addr_bits;
            for (index, bit) in free_bits.iter().enumerate() {
                if combo >> index & 1 == 1 {
                    bits |= 1u128 << bit;
                }
            }
            out.push(IpNet::new(from_bits(bits, width), prefix_len).ok()?);
        }
        out.sort();
        Some(out)
    }
}

impl fmt::Display for Wildcard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.mask)
    }
}

/// A fully qualified domain name. Matches nothing until it has been resolved
/// ([`AddressSet::set_fqdn_addresses`]); resolution is done by the caller, periodically.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct Fqdn {
    pub name: String,
    pub resolved: Vec<IpAddr>,
}

/// A dynamic address group's filter, kept so that workloads whose Kubernetes labels satisfy
/// it match the group (address objects with matching tags are already in the prefixes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DynamicMatch {
    /// Name of the dynamic address group.
    pub group: String,
    pub filter: TagExpr,
}

/// A resolved set of addresses. `any` short-circuits everything else.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct AddressSet {
    pub any: bool,
    /// Aggregated, sorted, non-overlapping prefixes (IPv4 first, then IPv6).
    pub prefixes: Vec<IpNet>,
    /// Non-contiguous wildcards (contiguous ones are in `prefixes`).
    pub wildcards: Vec<Wildcard>,
    pub fqdns: Vec<Fqdn>,
    pub dynamic: Vec<DynamicMatch>,
}

/// Lookup of the labels of the workload owning an address (Kubernetes labels, or the
/// inventory file's `labels`). Dynamic address group filters are matched against them.
pub trait LabelSource {
    fn labels(&self, ip: IpAddr) -> Option<&BTreeMap<String, String>>;
}

/// No workload labels known: dynamic groups match only through tagged address objects.
pub struct NoLabels;

impl LabelSource for NoLabels {
    fn labels(&self, _ip: IpAddr) -> Option<&BTreeMap<String, String>> {
        None
    }
}

impl AddressSet {
    pub fn any() -> Self {
        AddressSet {
            any: true,
            ..AddressSet::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.any
            && self.prefixes.is_empty()
            && self.wildcards.is_empty()
            && self.fqdns.is_empty()
            && self.dynamic.is_empty()
    }

    /// Adds everything in `other` and re-normalizes.
    pub fn extend(&mut self, other: &AddressSet) {
        self.append(other);
        self.normalize();
    }

    /// Adds everything in `other` without normalizing; call [`AddressSet::normalize`] after
    /// a batch of appends.
    pub fn append(&mut self, other: &AddressSet) {
        self.any |= other.any;
        self.prefixes.extend(other.prefixes.iter().copied());
        self.wildcards.extend(other.wildcards.iter().copied());
        self.fqdns.extend(other.fqdns.iter().cloned());
        self.dynamic.extend(other.dynamic.iter().cloned());
    }

    /// Sorts and aggregates prefixes, removes duplicate wildcards, FQDNs and dynamic matches.
    pub fn normalize(&mut self) {
        let (mut v4, mut v6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = (Vec::new(), Vec::new());
        for net in &self.prefixes {
            match net {
                IpNet::V4(n) => v4.push(n.trunc()),
                IpNet::V6(n) => v6.push(n.trunc()),
            }
        }
        let mut prefixes: Vec<IpNet> = Ipv4Net::aggregate(&v4).into_iter().map(IpNet::V4).collect();
        prefixes.extend(Ipv6Net::aggregate(&v6).into_iter().map(IpNet::V6));
        self.prefixes = prefixes;
        self.wildcards.sort();
        self.wildcards.dedup();
        self.fqdns.sort_by(|a, b| a.name.cmp(&b.name));
        self.fqdns.dedup_by(|a, b| a.name == b.name);
        let mut seen = Vec::new();
        self.dynamic.retain(|d| {
            if seen.contains(&d.group) {
                false
            } else {
                seen.push(d.group.clone());
                true
            }
        });
    }

    /// Records the current DNS answer for an FQDN member. Returns whether the set holds it.
    pub fn set_fqdn_addresses(&mut self, name: &str, addresses: &[IpAddr]) -> bool {
        let mut found = false;
        for fqdn in self
            .fqdns
            .iter_mut()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
        {
            fqdn.resolved = addresses.to_vec();
            found = true;
        }
        found
    }

    /// Why `ip` is in this set, or `None` when it is not.
    pub fn match_reason(&self, ip: IpAddr, labels: &dyn LabelSource) -> Option<String> {
        if self.any {
            return Some("any".to_string());
        }
        if let Some(net) = self.prefixes.iter().find(|n| n.contains(&ip)) {
            return Some(format!("prefix {net}"));
        }
        if let Some(w) = self.wildcards.iter().find(|w| w.contains(ip)) {
            return Some(format!("wildcard {w}"));
        }
        if let Some(f) = self.fqdns.iter().find(|f| f.resolved.contains(&ip)) {
            return Some(format!("fqdn {} (resolved)", f.name));
        }
        if let Some(workload_labels) = labels.labels(ip)
            && let Some(d) = self
                .dynamic
                .iter()
                .find(|d| d.filter.matches_labels(workload_labels))
        {
            return Some(format!(
                "dynamic group {} (workload labels match filter {})",
                d.group, d.filter
            ));
        }
        None
    }

    pub fn contains(&self, ip: IpAddr, labels: &dyn LabelSource) -> bool {
        self.match_reason(ip, labels).is_some()
    }

    /// Whether a workload with `labels` is in the set through a dynamic group.
    pub fn holds_by_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.dynamic.iter().any(|d| d.filter.matches_labels(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn range_expansion_small_cases() {
        let got = range_to_prefixes(ip("10.0.0.1"), ip("10.0.0.6")).unwrap();
        let want: Vec<IpNet> = ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            range_to_prefixes(ip("0.0.0.0"), ip("255.255.255.255")).unwrap(),
            vec!["0.0.0.0/0".parse::<IpNet>().unwrap()]
        );
        assert!(range_to_prefixes(ip("10.0.0.5"), ip("10.0.0.1")).is_none());
        assert!(range_to_prefixes(ip("10.0.0.5"), ip("::1")).is_none());
    }

    #[test]
    fn contiguous_wildcard_becomes_prefix() {
        let shape = Wildcard::classify(ip("10.1.2.3"), ip("0.0.0.255")).unwrap();
        assert_eq!(shape, WildcardShape::Prefix("10.1.2.0/24".parse().unwrap()));
        let shape = Wildcard::classify(ip("10.1.2.3"), ip("0.0.0.0")).unwrap();
        assert_eq!(shape, WildcardShape::Prefix("10.1.2.3/32".parse().unwrap()));
    }

    #[test]
    fn non_contiguous_wildcard_matches_exactly() {
        // Third octet free, last octet must be 10: every x.y.*.10 in 10.20.
        let WildcardShape::Wildcard(w) =
            Wildcard::classify(ip("10.20.0.10"), ip("0.0.255.0")).unwrap()
        else {
            panic!("expected a non-contiguous wildcard");
        };
        assert!(w.contains(ip("10.20.7.10")));
        assert!(w.contains(ip("10.20.255.10")));
        assert!(!w.contains(ip("10.20.7.11")));
        assert!(!w.contains(ip("10.21.7.10")));
        let prefixes = w.to_prefixes(1000).unwrap();
        assert_eq!(prefixes.len(), 256);
        assert!(prefixes.iter().all(|p| p.prefix_len() == 32));
        assert!(w.to_prefixes(10).is_none());
    }

    #[test]
    fn ipv6_wildcard() {
        let WildcardShape::Wildcard(w) =
            Wildcard::classify(ip("fd00::1"), ip("0:0:0:ffff::")).unwrap()
        else {
            panic!("expected a non-contiguous wildcard");
        };
        assert!(w.contains(ip("fd00:0:0:1234::1")));
        assert!(!w.contains(ip("fd00:0:0:1234::2")));
        assert!(!w.contains(ip("10.0.0.1")));
    }

    #[test]
    fn fqdn_matches_only_after_resolution() {
        let mut set = AddressSet {
            fqdns: vec![Fqdn {
                name: "db.example.com".into(),
                resolved: vec![],
            }],
            ..AddressSet::default()
        };
        assert!(!set.contains(ip("192.0.2.7"), &NoLabels));
        assert!(set.set_fqdn_addresses("DB.example.com", &[ip("192.0.2.7")]));
        assert!(set.contains(ip("192.0.2.7"), &NoLabels));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Checks that `prefixes` tile exactly [start, end]: each prefix is aligned, they are
    /// contiguous and in order, the first starts at `start`, the last ends at `end`.
    fn assert_exact_tiling(prefixes: &[IpNet], start: u128, end: u128, width: u32) {
        assert!(!prefixes.is_empty());
        let mut next = start;
        for net in prefixes {
            let (network, _) = to_bits(net.network());
            let (broadcast, _) = to_bits(net.broadcast());
            let (addr, _) = to_bits(net.addr());
            assert_eq!(addr, network, "prefix {net} is not aligned");
            assert_eq!(network, next, "gap or overlap before {net}");
            let size_minus_one = if u32::from(net.prefix_len()) == 0 {
                if width == 32 {
                    u128::from(u32::MAX)
                } else {
                    u128::MAX
                }
            } else {
                (1u128 << (width - u32::from(net.prefix_len()))) - 1
            };
            assert_eq!(broadcast - network, size_minus_one);
            next = broadcast.wrapping_add(1);
        }
        let (last, _) = to_bits(prefixes.last().unwrap().broadcast());
        assert_eq!(last, end);
    }

    proptest! {
        #[test]
        fn ipv4_range_expansion_is_exact(a in any::<u32>(), b in any::<u32>()) {
            let (start, end) = (a.min(b), a.max(b));
            let prefixes = range_to_prefixes(
                IpAddr::V4(Ipv4Addr::from(start)),
                IpAddr::V4(Ipv4Addr::from(end)),
            ).unwrap();
            assert_exact_tiling(&prefixes, u128::from(start), u128::from(end), 32);
            // Minimal: at most 2 prefixes per prefix length.
            prop_assert!(prefixes.len() <= 62);
        }

        #[test]
        fn ipv6_range_expansion_is_exact(a in any::<u128>(), span in any::<u128>(), small in any::<bool>()) {
            // Mix short ranges (few prefixes, exercise alignment) and arbitrary ones.
            let end = if small { a.saturating_add(span % 4096) } else { a.max(span) };
            let start = if small { a } else { a.min(span) };
            let prefixes = range_to_prefixes(
                IpAddr::V6(Ipv6Addr::from(start)),
                IpAddr::V6(Ipv6Addr::from(end)),
            ).unwrap();
            assert_exact_tiling(&prefixes, start, end, 128);
            prop_assert!(prefixes.len() <= 254);
        }

        #[test]
        fn membership_matches_range(a in any::<u32>(), b in any::<u32>(), probe in any::<u32>()) {
            let (start, end) = (a.min(b), a.max(b));
            let mut set = AddressSet {
                prefixes: range_to_prefixes(
                    IpAddr::V4(Ipv4Addr::from(start)),
                    IpAddr::V4(Ipv4Addr::from(end)),
                ).unwrap(),
                ..AddressSet::default()
            };
            set.normalize();
            for candidate in [probe, start, end, start.wrapping_sub(1), end.wrapping_add(1)] {
                let inside = (start..=end).contains(&candidate);
                prop_assert_eq!(set.contains(IpAddr::V4(Ipv4Addr::from(candidate)), &NoLabels), inside);
            }
        }

        #[test]
        fn wildcard_expansion_agrees_with_contains(addr in any::<u32>(), mask in any::<u32>(), probe in any::<u32>()) {
            // Limit don't-care bits outside the trailing run to keep expansion small.
            let mask = mask & 0x0101_03ff;
            let shape = Wildcard::classify(IpAddr::V4(Ipv4Addr::from(addr)), IpAddr::V4(Ipv4Addr::from(mask))).unwrap();
            let probe_ip = IpAddr::V4(Ipv4Addr::from(probe));
            let expected = (probe & !mask) == (addr & !mask);
            match shape {
                WildcardShape::Prefix(net) => prop_assert_eq!(net.contains(&probe_ip), expected),
                WildcardShape::Wildcard(w) => {
                    prop_assert_eq!(w.contains(probe_ip), expected);
                    let prefixes = w.to_prefixes(1 << 12).unwrap();
                    prop_assert_eq!(prefixes.iter().any(|p| p.contains(&probe_ip)), expected);
                }
            }
        }
    }
}
