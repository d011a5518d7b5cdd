//! The kernel tables the agent wants, built from a compiled policy and the local workloads,
//! and the difference to what the maps hold (so an unchanged input writes nothing).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use zonewall_common::{
    self as abi, CONFIG_FLAG_EVENTS, EndpointKey, EndpointValue, IdentityValue, PolicyValue,
};

use crate::policy::datapath_compile::Compiled;

/// The entries of one slot of the double-buffered policy maps, keyed as the LPM tries key
/// them: (prefix length, data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyMaps {
    pub identity_v4: BTreeMap<(u32, [u8; 4]), IdentityValue>,
    pub identity_v6: BTreeMap<(u32, [u8; 16]), IdentityValue>,
    /// Data: direction, subject identity, peer identity, protocol, port.
    pub policy: BTreeMap<(u32, [u8; 12]), PolicyValue>,
}

/// Every entry the maps should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredTables {
    /// Shared with the datapath's record of what each slot holds once written.
    pub maps: Arc<PolicyMaps>,
    pub endpoints: BTreeMap<EndpointKey, EndpointValue>,
    /// The highest rule id the policy uses (the rule statistics array must hold it).
    pub max_rule_id: Option<u32>,
    /// `CONFIG_FLAG_*`.
    pub config_flags: u32,
}

/// The anti-spoofing entry allowing interface `ifindex` to send from `ip`.
pub fn endpoint_key(ifindex: u32, ip: IpAddr) -> EndpointKey {
    let mut key = EndpointKey {
        ifindex,
        ..EndpointKey::default()
    };
    match ip {
        IpAddr::V4(v4) => {
            key.family = abi::FAMILY_V4;
            key.addr_be[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            key.family = abi::FAMILY_V6;
            key.addr_be = v6.octets();
        }
    }
    key
}

fn policy_data(key: &abi::PolicyKey) -> [u8; 12] {
    let s = key.subject_identity_be;
    let p = key.peer_identity_be;
    [
        key.direction,
        s[0],
        s[1],
        s[2],
        s[3],
        p[0],
        p[1],
        p[2],
        p[3],
        key.protocol,
        key.port_be[0],
        key.port_be[1],
    ]
}

impl DesiredTables {
    /// `local`: (interface index, address) of every address of every local workload.
    /// `events`: whether flow start events are wanted.
    pub fn new(compiled: &Compiled, local: &[(u32, IpAddr)], events: bool) -> DesiredTables {
        DesiredTables {
            maps: Arc::new(PolicyMaps {
                identity_v4: compiled
                    .identity_v4
                    .iter()
                    .map(|(k, v)| ((k.prefix_len, k.addr_be), *v))
                    .collect(),
                identity_v6: compiled
                    .identity_v6
                    .iter()
                    .map(|(k, v)| ((k.prefix_len, k.addr_be), *v))
                    .collect(),
                policy: compiled
                    .policy
                    .iter()
                    .map(|(k, v)| ((k.prefix_len, policy_data(k)), *v))
                    .collect(),
            }),
            endpoints: local
                .iter()
                .map(|&(ifindex, ip)| (endpoint_key(ifindex, ip), EndpointValue::default()))
                .collect(),
            max_rule_id: compiled.rules.keys().next_back().copied(),
            config_flags: if events { CONFIG_FLAG_EVENTS } else { 0 },
        }
    }
}

/// How many entries one map sync wrote and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableDiff {
    pub written: usize,
    pub removed: usize,
    /// Of those, how many went through batch system calls.
    pub batched: usize,
}

impl TableDiff {
    pub fn add(&mut self, other: TableDiff) {
        self.written += other.written;
        self.removed += other.removed;
        self.batched += other.batched;
    }
}

/// Keys to insert or overwrite (missing, or with another value) and keys to remove.
pub struct Diff<K> {
    pub upserts: Vec<K>,
    pub removals: Vec<K>,
}

impl<K> Diff<K> {
    pub fn summary(&self) -> TableDiff {
        TableDiff {
            written: self.upserts.len(),
            removed: self.removals.len(),
            batched: 0,
        }
    }
}

/// One pass over both maps in key order (a lookup per entry costs more than the writes of a
/// small change when the tables hold 150,000 entries).
pub fn diff<K: Ord + Clone, V: PartialEq>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Diff<K> {
    use std::cmp::Ordering;
    let mut out = Diff {
        upserts: Vec::new(),
        removals: Vec::new(),
    };
    let (mut have, mut want) = (current.iter().peekable(), desired.iter().peekable());
    loop {
        let order = match (have.peek(), want.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((h, _)), Some((w, _))) => h.cmp(w),
        };
        match order {
            Ordering::Less => {
                let (key, _) = have.next().expect("peeked");
                out.removals.push(key.clone());
            }
            Ordering::Greater => {
                let (key, _) = want.next().expect("peeked");
                out.upserts.push(key.clone());
            }
            Ordering::Equal => {
                let ((key, old), (_, new)) =
                    (have.next().expect("peeked"), want.next().expect("peeked"));
                if old != new {
                    out.upserts.push(key.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_writes_only_what_changed_and_removes_what_is_gone() {
        let current: BTreeMap<u32, u32> = [(1, 10), (2, 20), (3, 30)].into();
        let desired: BTreeMap<u32, u32> = [(1, 10), (2, 21), (4, 40)].into();
        let d = diff(&current, &desired);
        assert_eq!(d.upserts, vec![2, 4]);
        assert_eq!(d.removals, vec![3]);
        let same = diff(&desired, &desired);
        assert_eq!(same.summary(), TableDiff::default());
    }

    proptest::proptest! {
        /// The one-pass difference is the definition: write what is missing or different,
        /// remove what is not wanted.
        #[test]
        fn diff_is_what_differs(
            current in proptest::collection::btree_map(0u16..300, 0u8..3, 0..200),
            desired in proptest::collection::btree_map(0u16..300, 0u8..3, 0..200),
        ) {
            let d = diff(&current, &desired);
            let upserts: Vec<u16> = desired
                .iter()
                .filter(|(k, v)| current.get(*k) != Some(*v))
                .map(|(k, _)| *k)
                .collect();
            let removals: Vec<u16> =
                current.keys().filter(|k| !desired.contains_key(*k)).copied().collect();
            proptest::prop_assert_eq!(d.upserts, upserts);
            proptest::prop_assert_eq!(d.removals, removals);
        }
    }

    #[test]
    fn endpoint_keys_put_ipv4_in_the_first_bytes() {
        let key = endpoint_key(7, "10.0.0.1".parse().unwrap());
        assert_eq!(key.ifindex, 7);
        assert_eq!(key.family, abi::FAMILY_V4);
        assert_eq!(&key.addr_be[..4], &[10, 0, 0, 1]);
        assert_eq!(&key.addr_be[4..], &[0; 12]);
        let v6 = endpoint_key(7, "fd00::1".parse().unwrap());
        assert_eq!(v6.family, abi::FAMILY_V6);
        assert_eq!(v6.addr_be[15], 1);
    }
}
