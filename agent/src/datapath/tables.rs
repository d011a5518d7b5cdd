//! The kernel tables the agent wants, built from a compiled policy and the local workloads,
//! and the difference to what the maps hold (so an unchanged input writes nothing).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use zonewall_common::{
    self as abi, CONFIG_FLAG_EVENTS, EndpointKey, EndpointValue, IdentityBlockV4, IdentityKeyV6,
    IdentityValue, PolicyKey, PolicyValue,
};

use crate::policy::datapath_compile::v4_split::V4Split;
use crate::policy::datapath_compile::{Compiled, LpmEntries, LpmKey, in_key_order};

/// The entries of one slot of the double-buffered policy maps, each table in
/// [`LpmKey::order`] (shared with the compiled policy they came from).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyMaps {
    pub identity_v4: V4Split,
    pub identity_v6: LpmEntries<IdentityKeyV6, IdentityValue>,
    pub policy: LpmEntries<PolicyKey, PolicyValue>,
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

/// `entries` itself when it is in key order without a repeated key (the compiler makes it
/// so), else a sorted copy in which the last of equal keys wins.
fn sorted<K: LpmKey, V: Copy>(entries: &LpmEntries<K, V>) -> LpmEntries<K, V> {
    if in_key_order(entries) {
        return Arc::clone(entries);
    }
    let mut sorted = (**entries).clone();
    sorted.reverse();
    sorted.sort_by_key(|(k, _)| k.order());
    sorted.dedup_by_key(|(k, _)| k.order());
    Arc::new(sorted)
}

impl DesiredTables {
    /// `local`: (interface index, address) of every address of every local workload.
    /// `events`: whether flow start events are wanted.
    pub fn new(compiled: &Compiled, local: &[(u32, IpAddr)], events: bool) -> DesiredTables {
        DesiredTables {
            maps: Arc::new(PolicyMaps {
                identity_v4: compiled.identity_v4_split.clone(),
                identity_v6: sorted(&compiled.identity_v6),
                policy: sorted(&compiled.policy),
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

/// Entries to insert or overwrite (missing, or with another value) and keys to remove.
pub struct Diff<K, V> {
    pub upserts: Vec<(K, V)>,
    pub removals: Vec<K>,
}

impl<K, V> Diff<K, V> {
    pub fn summary(&self) -> TableDiff {
        TableDiff {
            written: self.upserts.len(),
            removed: self.removals.len(),
            batched: 0,
        }
    }
}

/// One pass over two tables sorted by `order` without repeated keys (a lookup per entry
/// costs more than the writes of a small change when the tables hold 370,000 entries).
pub fn diff<'a, K, V, O>(
    current: impl IntoIterator<Item = (&'a K, &'a V)>,
    desired: impl IntoIterator<Item = (&'a K, &'a V)>,
    order: impl Fn(&K) -> O,
) -> Diff<K, V>
where
    K: Copy + 'a,
    V: Copy + PartialEq + 'a,
    O: Ord,
{
    use std::cmp::Ordering;
    let mut out = Diff {
        upserts: Vec::new(),
        removals: Vec::new(),
    };
    let (mut have, mut want) = (
        current.into_iter().peekable(),
        desired.into_iter().peekable(),
    );
    loop {
        let step = match (have.peek(), want.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((h, _)), Some((w, _))) => order(h).cmp(&order(w)),
        };
        match step {
            Ordering::Less => {
                let (key, _) = have.next().expect("peeked");
                out.removals.push(*key);
            }
            Ordering::Greater => {
                let (key, value) = want.next().expect("peeked");
                out.upserts.push((*key, *value));
            }
            Ordering::Equal => {
                let ((key, old), (_, new)) =
                    (have.next().expect("peeked"), want.next().expect("peeked"));
                if old != new {
                    out.upserts.push((*key, *new));
                }
            }
        }
    }
}

/// [`diff`] of two LPM tables; nothing to compare when both are the same table.
pub fn diff_lpm<K: LpmKey, V: Copy + PartialEq>(
    current: &LpmEntries<K, V>,
    desired: &LpmEntries<K, V>,
) -> Diff<K, V> {
    if Arc::ptr_eq(current, desired) {
        return Diff {
            upserts: Vec::new(),
            removals: Vec::new(),
        };
    }
    diff(
        current.iter().map(|(k, v)| (k, v)),
        desired.iter().map(|(k, v)| (k, v)),
        LpmKey::order,
    )
}

/// The blocks of `desired` that `current` does not hold, by index (both hold every block).
pub fn diff_blocks(
    current: &Arc<Vec<IdentityBlockV4>>,
    desired: &Arc<Vec<IdentityBlockV4>>,
) -> Vec<(u32, IdentityBlockV4)> {
    if Arc::ptr_eq(current, desired) {
        return Vec::new();
    }
    (0u32..)
        .zip(current.iter().zip(desired.iter()))
        .filter(|(_, (old, new))| old != new)
        .map(|(index, (_, new))| (index, *new))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_writes_only_what_changed_and_removes_what_is_gone() {
        let current: BTreeMap<u32, u32> = [(1, 10), (2, 20), (3, 30)].into();
        let desired: BTreeMap<u32, u32> = [(1, 10), (2, 21), (4, 40)].into();
        let d = diff(&current, &desired, |k| *k);
        assert_eq!(d.upserts, vec![(2, 21), (4, 40)]);
        assert_eq!(d.removals, vec![3]);
        let same = diff(&desired, &desired, |k| *k);
        assert_eq!(same.summary(), TableDiff::default());
    }

    #[test]
    fn tables_out_of_key_order_are_sorted_and_the_last_of_a_key_wins() {
        let key = |len: u32, a: u8| abi::IdentityKeyV4 {
            prefix_len: len,
            addr_be: [10, a, 0, 0],
        };
        let value = |identity: u32| IdentityValue { identity, zone: 0 };
        let sorted: LpmEntries<_, _> =
            Arc::new(vec![(key(8, 0), value(1)), (key(16, 1), value(2))]);
        assert!(
            Arc::ptr_eq(&super::sorted(&sorted), &sorted),
            "shared, not copied"
        );
        let unsorted = Arc::new(vec![
            (key(16, 1), value(2)),
            (key(8, 0), value(1)),
            (key(16, 1), value(3)),
        ]);
        assert_eq!(
            *super::sorted(&unsorted),
            vec![(key(8, 0), value(1)), (key(16, 1), value(3))]
        );
        let d = diff_lpm(&sorted, &super::sorted(&unsorted));
        assert_eq!(d.upserts, vec![(key(16, 1), value(3))]);
        assert!(d.removals.is_empty());
    }

    #[test]
    fn block_diff_names_the_changed_blocks_only() {
        let blocks = V4Split::default().blocks;
        assert!(diff_blocks(&blocks, &blocks).is_empty());
        let mut changed = (*blocks).clone();
        changed[7].longer = 1;
        changed[65_535].value.identity = 3;
        let changed = Arc::new(changed);
        let d = diff_blocks(&blocks, &changed);
        assert_eq!(
            d.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![7, 65_535]
        );
        assert_eq!(d[1].1, changed[65_535]);
        assert!(diff_blocks(&changed, &Arc::new((*changed).clone())).is_empty());
    }

    proptest::proptest! {
        /// The one-pass difference is the definition: write what is missing or different,
        /// remove what is not wanted.
        #[test]
        fn diff_is_what_differs(
            current in proptest::collection::btree_map(0u16..300, 0u8..3, 0..200),
            desired in proptest::collection::btree_map(0u16..300, 0u8..3, 0..200),
        ) {
            let d = diff(&current, &desired, |k| *k);
            let upserts: Vec<(u16, u8)> = desired
                .iter()
                .filter(|(k, v)| current.get(*k) != Some(*v))
                .map(|(k, v)| (*k, *v))
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
