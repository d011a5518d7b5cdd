//! The kernel's lookups replayed in userspace over the compiled entries: a real longest
//! prefix match on the keys' bytes (as `BPF_MAP_TYPE_LPM_TRIE` matches them), and the IPv4
//! identities through their split tables ([`V4Split::lookup`]), following the lookup
//! precedence of the module comment in [`super`]. It never calls the evaluator, so a
//! test can hold one against the other.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use zonewall_common as abi;

use super::v4_split::V4Split;
use super::{Compiled, LpmKey, direction_code};
use crate::policy::eval::Direction;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmulationError {
    #[error("{map}: entry with prefix length {prefix_len} has bits set beyond its prefix")]
    HostBits { map: &'static str, prefix_len: u32 },
    #[error("{map}: two entries with the same prefix {prefix_len}/{data:02x?}")]
    Duplicate {
        map: &'static str,
        prefix_len: u32,
        data: Vec<u8>,
    },
    #[error("{map}: prefix length {prefix_len} is longer than the key ({bits} bits)")]
    TooLong {
        map: &'static str,
        prefix_len: u32,
        bits: u32,
    },
}

/// One LPM trie: entries by (prefix length, key data with the bits past the prefix zero).
#[derive(Clone, Debug)]
struct Lpm<V> {
    lengths_longest_first: Vec<u32>,
    entries: HashMap<(u32, Vec<u8>), V>,
}

fn masked(data: &[u8], prefix_len: u32) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, byte)| {
            let start = (i as u32) * 8;
            if start + 8 <= prefix_len {
                *byte
            } else if start >= prefix_len {
                0
            } else {
                byte & (0xffu8 << (8 - (prefix_len - start)))
            }
        })
        .collect()
}

impl<V: Copy> Lpm<V> {
    fn new(
        map: &'static str,
        entries: impl Iterator<Item = (u32, Vec<u8>, V)>,
    ) -> Result<Self, EmulationError> {
        let mut lengths = BTreeSet::new();
        let mut out = HashMap::new();
        for (prefix_len, data, value) in entries {
            let bits = data.len() as u32 * 8;
            if prefix_len > bits {
                return Err(EmulationError::TooLong {
                    map,
                    prefix_len,
                    bits,
                });
            }
            if masked(&data, prefix_len) != data {
                return Err(EmulationError::HostBits { map, prefix_len });
            }
            if out.insert((prefix_len, data.clone()), value).is_some() {
                return Err(EmulationError::Duplicate {
                    map,
                    prefix_len,
                    data,
                });
            }
            lengths.insert(prefix_len);
        }
        Ok(Lpm {
            lengths_longest_first: lengths.into_iter().rev().collect(),
            entries: out,
        })
    }

    fn lookup(&self, data: &[u8]) -> Option<V> {
        self.lengths_longest_first
            .iter()
            .find_map(|&len| self.entries.get(&(len, masked(data, len))).copied())
    }
}

/// (prefix length, data, value) of every entry of a table.
fn parts<K: LpmKey, V: Copy>(table: &[(K, V)]) -> impl Iterator<Item = (u32, Vec<u8>, V)> {
    table
        .iter()
        .map(|(k, v)| (k.prefix_len(), k.data().as_ref().to_vec(), *v))
}

/// The compiled maps, as the kernel would hold them.
#[derive(Clone, Debug)]
pub struct Datapath {
    identity_v4: V4Split,
    identity_v6: Lpm<abi::IdentityValue>,
    policy: Lpm<abi::PolicyValue>,
}

/// What one direction's lookups found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub subject: abi::IdentityValue,
    pub peer: abi::IdentityValue,
    pub value: abi::PolicyValue,
}

impl Datapath {
    /// Loads the entries; fails on entries the kernel would reject or merge.
    pub fn new(compiled: &Compiled) -> Result<Datapath, EmulationError> {
        Ok(Datapath {
            identity_v4: {
                // The entries the split was made from are ones the split can hold.
                Lpm::new(abi::map_names::IDENTITY_V4, parts(&compiled.identity_v4))?;
                compiled.identity_v4_split.clone()
            },
            identity_v6: Lpm::new(abi::map_names::IDENTITY_V6, parts(&compiled.identity_v6))?,
            policy: Lpm::new(abi::map_names::POLICY, parts(&compiled.policy))?,
        })
    }

    /// Step 1: the identity of an address.
    pub fn identity(&self, ip: IpAddr) -> Option<abi::IdentityValue> {
        match ip {
            IpAddr::V4(v4) => self.identity_v4.lookup(v4.octets()),
            IpAddr::V6(v6) => self.identity_v6.lookup(&v6.octets()),
        }
    }

    /// Steps 1-5 for one direction. `destination_port` is `None` for packets without one
    /// (ICMP, other port-less protocols, non-first fragments). `None` as a result means a
    /// lookup missed: the kernel program fails closed.
    pub fn lookup(
        &self,
        direction: Direction,
        source: IpAddr,
        destination: IpAddr,
        protocol: u8,
        destination_port: Option<u16>,
    ) -> Option<Lookup> {
        let (subject_ip, peer_ip) = match direction {
            Direction::Egress => (source, destination),
            Direction::Ingress => (destination, source),
        };
        let subject = self.identity(subject_ip)?;
        let peer = self.identity(peer_ip)?;
        let (protocol, port) = match destination_port {
            Some(port) => (protocol, port),
            None => (abi::PROTOCOL_NO_PORT, 0),
        };
        let key = abi::PolicyKey {
            prefix_len: abi::POLICY_PREFIX_FULL,
            direction: direction_code(direction),
            subject_identity_be: subject.identity.to_be_bytes(),
            peer_identity_be: peer.identity.to_be_bytes(),
            protocol,
            port_be: port.to_be_bytes(),
        };
        let value = self.policy.lookup(&key.data())?;
        Some(Lookup {
            subject,
            peer,
            value,
        })
    }
}
