//! The IPv4 identity table as the kernel holds it: split at /16 (`IdentityBlockV4`), so
//! that the identity of an address not looked up lately costs one array load and a hash
//! lookup per prefix length present in its /16, instead of a walk down a trie of every
//! prefix whose nodes are rarely in a cache.
//!
//! Pure: a function of the table's entries. [`V4Split::lookup`] is the kernel's lookup
//! (`ebpf/src/policy.rs`, `lookup_v4`) replayed in userspace.

use std::sync::Arc;

use zonewall_common::{
    IDENTITY_NONE, IDENTITY_V4_BLOCK_BITS, IDENTITY_V4_BLOCKS, IdentityBlockV4, IdentityKeyV4,
    IdentityValue,
};

use super::{LpmEntries, LpmKey};

/// The contents of `ZW_ID4_BLOCKS` and `ZW_ID4_LONG` for one IPv4 identity table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V4Split {
    /// `IDENTITY_V4_BLOCKS` entries, indexed by an address's top 16 bits.
    pub blocks: Arc<Vec<IdentityBlockV4>>,
    /// The entries longer than 16 bits, in [`LpmKey::order`].
    pub long: LpmEntries<IdentityKeyV4, IdentityValue>,
}

impl Default for V4Split {
    /// Nothing has an identity: what a freshly created map holds.
    fn default() -> Self {
        V4Split {
            blocks: Arc::new(vec![
                IdentityBlockV4::default();
                IDENTITY_V4_BLOCKS as usize
            ]),
            long: Arc::default(),
        }
    }
}

impl V4Split {
    /// Splits `entries` (in [`LpmKey::order`], no key twice, no bit set past a prefix: the
    /// compiler's IPv4 identity table).
    pub fn new(entries: &[(IdentityKeyV4, IdentityValue)]) -> V4Split {
        let mut blocks = vec![IdentityBlockV4::default(); IDENTITY_V4_BLOCKS as usize];
        let mut short: Vec<&(IdentityKeyV4, IdentityValue)> = Vec::new();
        let mut long = Vec::new();
        for entry in entries {
            let (key, _) = entry;
            if key.prefix_len <= IDENTITY_V4_BLOCK_BITS {
                short.push(entry);
            } else {
                let block = u32::from_be_bytes(key.addr_be) >> IDENTITY_V4_BLOCK_BITS;
                blocks[block as usize].longer |= 1 << (key.prefix_len - IDENTITY_V4_BLOCK_BITS - 1);
                long.push(*entry);
            }
        }
        // Shortest first, so that a longer prefix overwrites the blocks it covers.
        short.sort_by_key(|(key, _)| key.prefix_len);
        for (key, value) in short {
            let first = u32::from_be_bytes(key.addr_be) >> IDENTITY_V4_BLOCK_BITS;
            let count = 1u32 << (IDENTITY_V4_BLOCK_BITS - key.prefix_len);
            for block in &mut blocks[first as usize..(first + count) as usize] {
                block.value = *value;
            }
        }
        V4Split {
            blocks: Arc::new(blocks),
            long: Arc::new(long),
        }
    }

    /// The identity of `addr` as the kernel finds it (`None`: the lookup misses).
    pub fn lookup(&self, addr: [u8; 4]) -> Option<IdentityValue> {
        let addr = u32::from_be_bytes(addr);
        let block = self.blocks[(addr >> IDENTITY_V4_BLOCK_BITS) as usize];
        for n in (0..32 - IDENTITY_V4_BLOCK_BITS).rev() {
            if block.longer & (1 << n) == 0 {
                continue;
            }
            let key = IdentityBlockV4::long_key(addr, n);
            if let Ok(at) = self
                .long
                .binary_search_by_key(&key.order(), |(k, _)| k.order())
            {
                return Some(self.long[at].1);
            }
        }
        (block.value.identity != IDENTITY_NONE).then_some(block.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: [u8; 4], prefix_len: u32, identity: u32) -> (IdentityKeyV4, IdentityValue) {
        let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
        (
            IdentityKeyV4 {
                prefix_len,
                addr_be: (u32::from_be_bytes(addr) & mask).to_be_bytes(),
            },
            IdentityValue { identity, zone: 0 },
        )
    }

    /// The longest prefix holding `addr`, by definition.
    fn longest(entries: &[(IdentityKeyV4, IdentityValue)], addr: u32) -> Option<IdentityValue> {
        entries
            .iter()
            .filter(|(k, _)| {
                let mask = u32::MAX.checked_shl(32 - k.prefix_len).unwrap_or(0);
                addr & mask == u32::from_be_bytes(k.addr_be)
            })
            .max_by_key(|(k, _)| k.prefix_len)
            .map(|(_, v)| *v)
    }

    fn table(
        mut entries: Vec<(IdentityKeyV4, IdentityValue)>,
    ) -> Vec<(IdentityKeyV4, IdentityValue)> {
        entries.sort_by_key(|(k, _)| k.order());
        entries.dedup_by_key(|(k, _)| k.order());
        entries
    }

    #[test]
    fn every_length_nested_in_one_block_finds_the_longest() {
        // 10.1.2.3 is inside a prefix of every length from /0 to /32.
        let addr = [10, 1, 2, 3];
        let entries = table((0..=32).map(|len| entry(addr, len, len + 1)).collect());
        let split = V4Split::new(&entries);
        assert_eq!(split.long.len(), 16);
        for len in 0..=32u32 {
            // In prefix `len` but not in `len + 1`: the address with bit `len` flipped.
            let addr = u32::from_be_bytes(addr);
            let probe = if len == 32 {
                addr
            } else {
                addr ^ (1 << (31 - len))
            };
            assert_eq!(
                split.lookup(probe.to_be_bytes()).map(|v| v.identity),
                Some(len + 1),
                "/{len}"
            );
        }
    }

    #[test]
    fn no_covering_prefix_misses() {
        let split = V4Split::new(&table(vec![
            entry([10, 0, 0, 0], 8, 1),
            entry([192, 168, 1, 0], 24, 2),
        ]));
        assert_eq!(split.lookup([10, 9, 9, 9]).map(|v| v.identity), Some(1));
        assert_eq!(split.lookup([192, 168, 1, 7]).map(|v| v.identity), Some(2));
        assert_eq!(
            split.lookup([192, 168, 2, 7]),
            None,
            "inside a block with longer prefixes"
        );
        assert_eq!(split.lookup([11, 0, 0, 1]), None);
        assert_eq!(V4Split::new(&[]), V4Split::default());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(300))]
        /// The split finds exactly the longest prefix, for nested and overlapping prefixes
        /// of every length packed into a few blocks.
        #[test]
        fn split_lookup_is_the_longest_prefix(
            prefixes in proptest::collection::vec((0u32..4, proptest::num::u32::ANY, 0u32..=32, 1u32..50), 0..60),
            probes in proptest::collection::vec((0u32..4, proptest::num::u32::ANY), 200),
        ) {
            // Four /8s' worth of blocks: 10, 11, 12, 13, so prefixes collide and nest.
            let place = |top: u32, low: u32| ((10 + top) << 24) | (low & 0x00ff_ffff);
            let entries = table(
                prefixes
                    .iter()
                    .map(|&(top, low, len, id)| entry(place(top, low).to_be_bytes(), len, id))
                    .collect(),
            );
            let split = V4Split::new(&entries);
            let inside = prefixes.iter().map(|&(t, l, _, _)| (t, l));
            for (top, low) in probes.iter().copied().chain(inside) {
                let addr = place(top, low);
                proptest::prop_assert_eq!(split.lookup(addr.to_be_bytes()), longest(&entries, addr));
            }
        }
    }
}
