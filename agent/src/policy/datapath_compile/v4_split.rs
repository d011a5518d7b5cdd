//! The IPv4 identity table as the kernel holds it: split at /16 (`IdentityBlockV4`), the
//! longer prefixes in a bucketed hash table of its own (`LongBucketV4`, two candidate
//! buckets of one cache line each), so that the identity of an address not looked up lately
//! costs one array load and one or two cache lines per prefix length present in its /16,
//! instead of a walk down a trie of every prefix whose nodes are rarely in a cache.
//!
//! Pure: a function of the table's entries. [`V4Split::lookup`] is the kernel's lookup
//! (`ebpf/src/policy.rs`, `lookup_v4`) replayed in userspace.

use std::sync::Arc;

use zonewall_common::{
    IDENTITY_NONE, IDENTITY_V4_BLOCK_BITS, IDENTITY_V4_BLOCKS, IDENTITY_V4_BUCKET_SLOTS,
    IDENTITY_V4_BUCKETS, IdentityBlockV4, IdentityKeyV4, IdentityValue, LongBucketV4, LongSlotV4,
};

use super::{LpmEntries, LpmKey};

/// The contents of `ZW_ID4_BLOCKS` and `ZW_ID4_LONG` for one IPv4 identity table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V4Split {
    /// `IDENTITY_V4_BLOCKS` entries, indexed by an address's top 16 bits.
    pub blocks: Arc<Vec<IdentityBlockV4>>,
    /// The entries longer than 16 bits, in [`LpmKey::order`].
    pub long: LpmEntries<IdentityKeyV4, IdentityValue>,
    /// `long` as `ZW_ID4_LONG` holds it: `IDENTITY_V4_BUCKETS` buckets.
    pub buckets: Arc<Vec<LongBucketV4>>,
}

/// The long prefixes do not fit the buckets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{prefixes} IPv4 prefixes longer than /16 do not fit the {buckets} buckets of the identity table"
)]
pub struct BucketsFull {
    pub prefixes: usize,
    pub buckets: u32,
}

/// Moves one insertion may make before the table counts as full.
const MAX_KICKS: usize = 1_000;

/// Places every entry of `long` in one of its two buckets (cuckoo hashing: a full pair of
/// buckets moves one of its entries to that entry's other bucket). Deterministic: the same
/// entries give the same buckets, so an unchanged table writes nothing.
pub fn place(
    long: &[(IdentityKeyV4, IdentityValue)],
    count: u32,
) -> Result<Vec<LongBucketV4>, BucketsFull> {
    assert!(count.is_power_of_two(), "{count} buckets");
    let mask = count - 1;
    let full = || BucketsFull {
        prefixes: long.len(),
        buckets: count,
    };
    let mut table = vec![LongBucketV4::default(); count as usize];
    // xorshift: which entry to move when both buckets are full.
    let mut state = 0x2545_f491u32;
    for &(key, value) in long {
        let mut item = LongSlotV4 { key, value };
        let mut placed = false;
        for _ in 0..MAX_KICKS {
            let buckets = item.key.buckets(mask);
            let free = buckets.iter().find_map(|&b| {
                table[b as usize]
                    .slots
                    .iter()
                    .position(|s| s.key.prefix_len == 0)
                    .map(|slot| (b, slot))
            });
            if let Some((bucket, slot)) = free {
                table[bucket as usize].slots[slot] = item;
                placed = true;
                break;
            }
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let bucket = buckets[(state & 1) as usize] as usize;
            let slot = (state >> 1) as usize % IDENTITY_V4_BUCKET_SLOTS;
            std::mem::swap(&mut table[bucket].slots[slot], &mut item);
        }
        if !placed {
            return Err(full());
        }
    }
    Ok(table)
}

/// The value of `key` in `buckets`, looked up as the kernel does.
pub fn find(buckets: &[LongBucketV4], key: &IdentityKeyV4) -> Option<IdentityValue> {
    let mask = buckets.len() as u32 - 1;
    key.buckets(mask).iter().find_map(|&b| {
        buckets[b as usize]
            .slots
            .iter()
            .find(|s| s.key == *key)
            .map(|s| s.value)
    })
}

/// The entries `buckets` hold, in [`LpmKey::order`].
pub fn entries(buckets: &[LongBucketV4]) -> Vec<(IdentityKeyV4, IdentityValue)> {
    let mut out: Vec<_> = buckets
        .iter()
        .flat_map(|b| b.slots.iter())
        .filter(|s| s.key.prefix_len != 0)
        .map(|s| (s.key, s.value))
        .collect();
    out.sort_unstable_by_key(|(k, _)| k.order());
    out
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
            buckets: Arc::new(vec![LongBucketV4::default(); IDENTITY_V4_BUCKETS as usize]),
        }
    }
}

impl V4Split {
    /// Splits `entries` (in [`LpmKey::order`], no key twice, no bit set past a prefix: the
    /// compiler's IPv4 identity table).
    pub fn new(entries: &[(IdentityKeyV4, IdentityValue)]) -> Result<V4Split, BucketsFull> {
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
        Ok(V4Split {
            blocks: Arc::new(blocks),
            buckets: Arc::new(place(&long, IDENTITY_V4_BUCKETS)?),
            long: Arc::new(long),
        })
    }

    /// The identity of `addr` as the kernel finds it (`None`: the lookup misses).
    pub fn lookup(&self, addr: [u8; 4]) -> Option<IdentityValue> {
        let addr = u32::from_be_bytes(addr);
        let block = self.blocks[(addr >> IDENTITY_V4_BLOCK_BITS) as usize];
        for n in (0..32 - IDENTITY_V4_BLOCK_BITS).rev() {
            if block.longer & (1 << n) == 0 {
                continue;
            }
            if let Some(value) = find(&self.buckets, &IdentityBlockV4::long_key(addr, n)) {
                return Some(value);
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
        let split = V4Split::new(&entries).unwrap();
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
        ]))
        .unwrap();
        assert_eq!(split.lookup([10, 9, 9, 9]).map(|v| v.identity), Some(1));
        assert_eq!(split.lookup([192, 168, 1, 7]).map(|v| v.identity), Some(2));
        assert_eq!(
            split.lookup([192, 168, 2, 7]),
            None,
            "inside a block with longer prefixes"
        );
        assert_eq!(split.lookup([11, 0, 0, 1]), None);
        assert_eq!(V4Split::new(&[]).unwrap(), V4Split::default());
    }

    #[test]
    fn three_quarters_of_the_slots_fill_and_a_table_too_full_is_an_error() {
        let hosts = |count: u32| {
            table(
                (0..count)
                    .map(|i| entry((0x0a00_0000 + i * 7).to_be_bytes(), 32, i % 50 + 1))
                    .collect(),
            )
        };
        let many = hosts(IDENTITY_V4_BUCKETS * 3);
        let buckets = place(&many, IDENTITY_V4_BUCKETS).expect("three quarters fit");
        assert!(many.iter().all(|(k, v)| find(&buckets, k) == Some(*v)));
        assert_eq!(entries(&buckets), many, "every entry placed once");
        // More prefixes than slots: an error, never a table without some of them.
        assert_eq!(
            place(&hosts(17), 4),
            Err(BucketsFull {
                prefixes: 17,
                buckets: 4
            })
        );
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
            let split = V4Split::new(&entries).unwrap();
            let inside = prefixes.iter().map(|&(t, l, _, _)| (t, l));
            for (top, low) in probes.iter().copied().chain(inside) {
                let addr = place(top, low);
                proptest::prop_assert_eq!(split.lookup(addr.to_be_bytes()), longest(&entries, addr));
            }
        }
    }
}
