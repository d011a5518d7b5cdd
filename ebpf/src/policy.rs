//! The policy lookup of a new flow. The precedence is the one written down in the compiler
//! (`zonewall::policy::datapath_compile`):
//! 1. source and destination address -> identity (longest prefix: IPv4 in `ZW_ID4_BLOCKS`
//!    and `ZW_ID4_LONG` as `IdentityBlockV4` says, IPv6 in `ZW_IDENT_V6`; or this CPU's
//!    `ZW_IDENT_CACHE` entry of the address in this generation);
//! 2. at egress the subject is the source, at ingress the destination; the other is the peer;
//! 3. key (direction, subject, peer, protocol, destination port) with every bit significant;
//!    a packet without a port the policy knows (ICMP, other protocols, non-first fragments)
//!    uses protocol `PROTOCOL_NO_PORT` and port 0;
//! 4. the longest matching `ZW_POLICY` entry is the final verdict of that direction (or
//!    this CPU's `ZW_POLICY_CACHE` entry of the key in this generation);
//! 5. (here) the flow passes only when egress and ingress both allow; the first direction
//!    that does not allow decides.
//!    A missed lookup means incomplete tables: the caller fails closed.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use zonewall_common::{
    ACTION_ALLOW, DIRECTION_EGRESS, DIRECTION_INGRESS, FAMILY_V4, IDENTITY_NONE,
    IDENTITY_V4_BLOCK_BITS, IDENTITY_V4_BLOCKS, IdentityBlockV4, IdentityCache, IdentityCacheEntry,
    IdentityKeyV4, IdentityValue, POLICY_FLAG_WOULD_DENY, POLICY_PREFIX_FULL, PROTOCOL_NO_PORT,
    PolicyCache, PolicyCacheEntry, PolicyValue, capacity,
};

use crate::parse::Packet;

// Two slots of each table (see `zonewall_common::map_names`); pinned, so a restarted agent
// finds them and enforcement never pauses.
#[map(name = "ZW_ID4_BLOCKS_0")]
static IDENTITY_V4_BLOCKS_0: Array<IdentityBlockV4> = Array::pinned(IDENTITY_V4_BLOCKS, 0);
#[map(name = "ZW_ID4_BLOCKS_1")]
static IDENTITY_V4_BLOCKS_1: Array<IdentityBlockV4> = Array::pinned(IDENTITY_V4_BLOCKS, 0);

/// `BPF_F_NO_PREALLOC`: memory follows the prefixes held, as the tries' does.
const NO_PREALLOC: u32 = 1;
#[map(name = "ZW_ID4_LONG_0")]
static IDENTITY_V4_LONG_0: HashMap<IdentityKeyV4, IdentityValue> =
    HashMap::pinned(capacity::IDENTITY_V4, NO_PREALLOC);
#[map(name = "ZW_ID4_LONG_1")]
static IDENTITY_V4_LONG_1: HashMap<IdentityKeyV4, IdentityValue> =
    HashMap::pinned(capacity::IDENTITY_V4, NO_PREALLOC);

#[map(name = "ZW_IDENT_V6_0")]
static IDENTITY_V6_0: LpmTrie<[u8; 16], IdentityValue> = LpmTrie::pinned(capacity::IDENTITY_V6, 0);
#[map(name = "ZW_IDENT_V6_1")]
static IDENTITY_V6_1: LpmTrie<[u8; 16], IdentityValue> = LpmTrie::pinned(capacity::IDENTITY_V6, 0);

/// Identities this CPU looked up, valid while their generation is live (`IdentityCacheEntry`).
#[map(name = "ZW_IDENT_CACHE")]
static IDENTITY_CACHE: PerCpuArray<IdentityCache> = PerCpuArray::pinned(1, 0);

/// Policy verdicts this CPU looked up, valid while their generation is live
/// (`PolicyCacheEntry`).
#[map(name = "ZW_POLICY_CACHE")]
static POLICY_CACHE: PerCpuArray<PolicyCache> = PerCpuArray::pinned(1, 0);

/// Key data: direction, subject identity, peer identity (big endian), protocol, port.
#[map(name = "ZW_POLICY_0")]
static POLICY_0: LpmTrie<[u8; 12], PolicyValue> = LpmTrie::pinned(capacity::POLICY, 0);
#[map(name = "ZW_POLICY_1")]
static POLICY_1: LpmTrie<[u8; 12], PolicyValue> = LpmTrie::pinned(capacity::POLICY, 0);

/// What the policy says about a new flow.
#[derive(Clone, Copy, Default)]
pub struct FlowVerdict {
    /// `ACTION_*` of the deciding direction.
    pub action: u8,
    /// The rule that decided (the first direction that does not allow, else egress).
    pub rule_id: u32,
    pub egress_rule_id: u32,
    pub ingress_rule_id: u32,
    pub audit_rule_id: u32,
    pub policy_flags: u8,
    pub src_zone: u32,
    pub dst_zone: u32,
}

/// The identity of `addr` (the flow's destination when `destination`) in the tables of
/// `generation`: from this CPU's identity `cache` when it holds the address for this
/// generation, else from the identity tables (and then cached).
#[inline(always)]
fn identity(
    cache: Option<&mut IdentityCache>,
    generation: u32,
    family: u8,
    addr: &[u8; 16],
    destination: bool,
) -> Option<IdentityValue> {
    let cached = cache.and_then(|cache| {
        cache
            .entries
            .get_mut(IdentityCacheEntry::index(family, addr, destination))
    });
    if let Some(entry) = cached.as_deref()
        && entry.generation == generation
        && entry.family == family
        && entry.addr_be == *addr
    {
        return Some(entry.value);
    }
    let value = lookup_identity(generation & 1, family, addr)?;
    if let Some(entry) = cached {
        entry.addr_be = *addr;
        entry.value = value;
        entry.generation = generation;
        entry.family = family;
    }
    Some(value)
}

/// The longest IPv4 prefix holding `addr` (host order): at most one array load and one
/// hash lookup per prefix length present in the address's /16 block, longest first.
#[inline(always)]
fn lookup_v4(
    blocks: &Array<IdentityBlockV4>,
    long: &HashMap<IdentityKeyV4, IdentityValue>,
    addr: u32,
) -> Option<IdentityValue> {
    let block = *blocks.get(addr >> IDENTITY_V4_BLOCK_BITS)?;
    if block.longer != 0 {
        let mut n = 32 - IDENTITY_V4_BLOCK_BITS;
        while n > 0 {
            n -= 1;
            if block.longer & (1 << n) != 0
                && let Some(value) = long.get_ptr(IdentityBlockV4::long_key(addr, n))
            {
                // SAFETY: a value of the map, copied out at once.
                return Some(unsafe { *value });
            }
        }
    }
    (block.value.identity != IDENTITY_NONE).then_some(block.value)
}

#[inline(always)]
fn lookup_identity(slot: u32, family: u8, addr: &[u8; 16]) -> Option<IdentityValue> {
    if family == FAMILY_V4 {
        let v4 = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
        if slot == 0 {
            lookup_v4(&IDENTITY_V4_BLOCKS_0, &IDENTITY_V4_LONG_0, v4)
        } else {
            lookup_v4(&IDENTITY_V4_BLOCKS_1, &IDENTITY_V4_LONG_1, v4)
        }
    } else {
        let key = Key::new(128, *addr);
        if slot == 0 {
            IDENTITY_V6_0.get(key).copied()
        } else {
            IDENTITY_V6_1.get(key).copied()
        }
    }
}

/// The verdict of one direction in the tables of `generation`: from this CPU's policy
/// `cache` when it holds the key for this generation, else from the policy trie (and then
/// cached).
#[inline(always)]
fn lookup(
    cache: Option<&mut PolicyCache>,
    generation: u32,
    direction: u8,
    subject: u32,
    peer: u32,
    protocol: u8,
    port_be: [u8; 2],
) -> Option<PolicyValue> {
    let subject = subject.to_be_bytes();
    let peer = peer.to_be_bytes();
    let data = [
        direction, subject[0], subject[1], subject[2], subject[3], peer[0], peer[1], peer[2],
        peer[3], protocol, port_be[0], port_be[1],
    ];
    let cached = cache.and_then(|cache| cache.entries.get_mut(PolicyCacheEntry::index(&data)));
    if let Some(entry) = cached.as_deref()
        && entry.generation == generation
        && entry.data == data
    {
        return Some(entry.value);
    }
    let key = Key::new(POLICY_PREFIX_FULL, data);
    let value = if generation & 1 == 0 {
        POLICY_0.get(key).copied()
    } else {
        POLICY_1.get(key).copied()
    }?;
    if let Some(entry) = cached {
        entry.data = data;
        entry.value = value;
        entry.generation = generation;
    }
    Some(value)
}

/// Both directions' verdicts for a flow from `packet.src` to `packet.dst`, written into
/// `out`, from the tables of `generation` (its parity is the slot), through this CPU's
/// identity and verdict caches when `caches`. `with_port` is false for a non-first
/// fragment. Returns false when a lookup missed (the caller fails closed). Not inlined: its
/// own stack frame; BPF-to-BPF calls cannot return values through the caller's stack.
#[inline(never)]
pub fn evaluate(
    packet: &Packet,
    generation: u32,
    caches: bool,
    with_port: bool,
    out: &mut FlowVerdict,
) -> bool {
    match lookups(packet, generation, caches, with_port) {
        Some(verdict) => {
            *out = verdict;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn lookups(packet: &Packet, generation: u32, caches: bool, with_port: bool) -> Option<FlowVerdict> {
    let mut cache = crate::this_cpu(&IDENTITY_CACHE).filter(|_| caches);
    let source = identity(
        cache.as_deref_mut(),
        generation,
        packet.family,
        &packet.src,
        false,
    )?;
    let destination = identity(cache, generation, packet.family, &packet.dst, true)?;
    let (protocol, port) = if with_port && packet.has_port {
        (packet.protocol, packet.dport_be)
    } else {
        (PROTOCOL_NO_PORT, [0, 0])
    };
    let mut policies = crate::this_cpu(&POLICY_CACHE).filter(|_| caches);
    let egress = lookup(
        policies.as_deref_mut(),
        generation,
        DIRECTION_EGRESS,
        source.identity,
        destination.identity,
        protocol,
        port,
    )?;
    let ingress = lookup(
        policies,
        generation,
        DIRECTION_INGRESS,
        destination.identity,
        source.identity,
        protocol,
        port,
    )?;
    let deciding = if egress.action != ACTION_ALLOW {
        egress
    } else {
        ingress
    };
    let audit_rule_id = if egress.flags & POLICY_FLAG_WOULD_DENY != 0 {
        egress.audit_rule_id
    } else {
        ingress.audit_rule_id
    };
    Some(FlowVerdict {
        action: deciding.action,
        rule_id: deciding.rule_id,
        egress_rule_id: egress.rule_id,
        ingress_rule_id: ingress.rule_id,
        audit_rule_id,
        policy_flags: egress.flags | ingress.flags,
        src_zone: source.zone,
        dst_zone: destination.zone,
    })
}
