//! The per-CPU flow cache in front of `ZW_CT` (`FlowCacheSlot` says when a packet may pass
//! on a slot and why that is safe). Under load the conntrack lookup and the per-rule
//! counters are most of a tracked packet's cost: chains of dependent loads through tables
//! that the traffic between two packets has pushed out of the caches. A slot stands in for
//! both for the rest of the clock tick.

use zonewall_common::{
    CT_END_REPORTED, CtKey, CtValue, FlowCache, FlowCacheSlot, RULE_ID_NONE, counter,
};

use crate::{CONNTRACK, Meta, count_flow_rules, count_n};

#[inline(always)]
fn same_key(a: &CtKey, b: &CtKey) -> bool {
    let (a, b) = (a.words(), b.words());
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
}

/// Whether the packet of flow `key` may pass on `slot` (the slot its hook and side map to).
#[inline(always)]
pub fn hit(slot: &FlowCacheSlot, key: &CtKey, meta: &Meta) -> bool {
    slot.tick == meta.tick
        && slot.generation == meta.generation
        && slot.ifindex == meta.ifindex
        && same_key(&slot.key, key)
}

/// Adds what waits in slot `index` to the pass counter, its rules' counters and the flow's
/// `entry` (when there still is one), and empties it.
#[inline(always)]
fn settle(slot: &mut FlowCacheSlot, index: usize, entry: Option<&mut CtValue>, late: &mut u64) {
    if slot.packets == 0 {
        return;
    }
    let (packets, bytes) = (u64::from(slot.packets), slot.bytes);
    count_n(counter::PASS_ESTABLISHED, packets);
    if slot.egress_rule_id != RULE_ID_NONE {
        count_flow_rules(slot.egress_rule_id, slot.ingress_rule_id, packets, bytes);
    }
    if let Some(entry) = entry
        && slot.add_to(index, entry)
        && entry.flags & CT_END_REPORTED != 0
    {
        *late += packets;
    }
    slot.packets = 0;
    slot.bytes = 0;
}

/// Settles slot `index` before the conntrack path goes on with the flow's `entry`: the
/// flow's own waiting packets go to `entry`, another flow's to its entry (looked up). An
/// entry that is gone takes no packets: the agent's idle sweep reported them with it, or the
/// policy removed the flow.
#[inline(always)]
pub fn settle_slot(
    cache: &mut FlowCache,
    index: usize,
    key: &CtKey,
    meta: &Meta,
    entry: &mut CtValue,
) {
    let Some(slot) = cache.slots.get_mut(index) else {
        return;
    };
    if slot.packets == 0 {
        return;
    }
    let mut late = 0;
    if slot.ifindex == meta.ifindex && same_key(&slot.key, key) {
        settle(slot, index, Some(entry), &mut late);
    } else {
        // SAFETY: pointer from a successful lookup, valid while the program runs.
        let other = CONNTRACK
            .get_ptr_mut(&slot.key)
            .map(|other| unsafe { &mut *other });
        settle(slot, index, other, &mut late);
    }
    cache.late_packets += late;
}

/// Settles and empties every slot of this CPU that holds the flow: its state is changing
/// (FIN, RST, first reply), which only the conntrack path records.
#[inline(always)]
pub fn forget(cache: &mut FlowCache, key: &CtKey, entry: &mut CtValue) {
    let mut late = 0;
    for (index, slot) in cache.slots.iter_mut().enumerate() {
        if slot.generation != 0 && same_key(&slot.key, key) {
            settle(slot, index, Some(&mut *entry), &mut late);
            slot.generation = 0;
        }
    }
    cache.late_packets += late;
}

/// Makes slot `index` (settled) stand for the flow's packet that just passed the conntrack
/// path; `rules` are the flow's egress and ingress rules when this hook counts the flow.
#[inline(always)]
pub fn fill(
    cache: &mut FlowCache,
    index: usize,
    key: &CtKey,
    meta: &Meta,
    rules: Option<(u32, u32)>,
) {
    if let Some(slot) = cache.slots.get_mut(index) {
        let (egress, ingress) = rules.unwrap_or((RULE_ID_NONE, RULE_ID_NONE));
        slot.key = *key;
        slot.tick = meta.tick;
        slot.generation = meta.generation;
        slot.ifindex = meta.ifindex;
        slot.egress_rule_id = egress;
        slot.ingress_rule_id = ingress;
    }
}
