//! Everything that talks to the kernel's BPF subsystem: loading the embedded object,
//! attaching the programs to workload interfaces, writing maps and reading counters.
//! Nothing else in the crate calls aya.

use aya::{
    Ebpf, EbpfError,
    maps::{HashMap, MapError, PerCpuArray},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use zonewall_common::{BlockKey, BlockValue, counter, map_names, program_names};

/// The eBPF object built from `ebpf/` by `build.rs`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zonewall-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "loading the eBPF object into the kernel failed: {source}; the agent needs root or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON, and a kernel with BPF and BTF"
    )]
    Load {
        #[source]
        source: Box<EbpfError>,
    },
    #[error(
        "the embedded eBPF object has no {kind} named {name}; the agent and its eBPF object are from different builds"
    )]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("{op} of program {program} failed: {source}")]
    Program {
        op: &'static str,
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error(
        "attaching {program} to interface {interface} ({direction}) failed: {source}; check that the interface exists in this network namespace"
    )]
    Attach {
        program: &'static str,
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("adding the clsact qdisc to interface {interface} failed: {source}")]
    Clsact {
        interface: String,
        #[source]
        source: Box<tc::TcError>,
    },
    #[error("{op} on map {map} failed: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

/// Packet outcome counters summed over all CPUs, indexed like `zonewall_common::counter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    /// Per-counter difference `self - earlier` (counters only grow).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut delta = Counters::default();
        for (i, slot) in delta.0.iter_mut().enumerate() {
            *slot = self.0[i].saturating_sub(earlier.0[i]);
        }
        delta
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, value)) in counter::NAMES.iter().zip(self.0).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

/// The loaded programs and maps. Attachments live as long as this value: dropping it detaches
/// the programs (pinning, so enforcement outlives the process, comes with the agent runtime).
pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads the embedded object and verifies every program, so a verifier rejection is
    /// reported at start, not at the first attach.
    pub fn load() -> Result<Self, DatapathError> {
        let ebpf = Ebpf::load(EBPF_OBJECT).map_err(|source| DatapathError::Load {
            source: Box::new(source),
        })?;
        let mut datapath = Self { ebpf };
        for name in program_names::ALL {
            datapath
                .classifier(name)?
                .load()
                .map_err(|source| program_error("load", name, source))?;
        }
        for name in map_names::ALL {
            datapath
                .ebpf
                .map(name)
                .ok_or(DatapathError::Missing { kind: "map", name })?;
        }
        Ok(datapath)
    }

    fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier, DatapathError> {
        self.ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing {
                kind: "program",
                name,
            })?
            .try_into()
            .map_err(|source| program_error("type check", name, source))
    }

    /// Attaches both programs to a workload's host-side interface: ingress sees what the
    /// workload sends, egress what it receives. Uses tcx links where the kernel has them
    /// (>= 6.6) and a clsact qdisc otherwise. The interface name resolves in the calling
    /// thread's network namespace.
    pub fn attach(&mut self, interface: &str) -> Result<(), DatapathError> {
        // Same test aya applies when it chooses between tcx and netlink in `attach`.
        let has_tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if !has_tcx {
            match tc::qdisc_add_clsact(interface) {
                Ok(()) => {}
                Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(DatapathError::Clsact {
                        interface: interface.to_owned(),
                        source: Box::new(source),
                    });
                }
            }
        }
        for (name, attach_type, direction) in [
            (
                program_names::FROM_WORKLOAD,
                TcAttachType::Ingress,
                "ingress",
            ),
            (program_names::TO_WORKLOAD, TcAttachType::Egress, "egress"),
        ] {
            self.classifier(name)?
                .attach(interface, attach_type)
                .map_err(|source| DatapathError::Attach {
                    program: name,
                    interface: interface.to_owned(),
                    direction,
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    fn block_map(
        &mut self,
    ) -> Result<HashMap<&mut aya::maps::MapData, BlockKey, BlockValue>, DatapathError> {
        let name = map_names::BLOCK;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing { kind: "map", name })?;
        HashMap::try_from(map).map_err(|source| map_error("open", name, source))
    }

    /// Drops every packet whose (source, destination, protocol, port) equals `key`.
    pub fn block(&mut self, key: &BlockKey) -> Result<(), DatapathError> {
        self.block_map()?
            .insert(key, BlockValue::default(), 0)
            .map_err(|source| map_error("insert", map_names::BLOCK, source))
    }

    /// Removes a block entry; removing an absent entry is not an error.
    pub fn unblock(&mut self, key: &BlockKey) -> Result<(), DatapathError> {
        match self.block_map()?.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_error("remove", map_names::BLOCK, source)),
        }
    }

    /// Reads the per-CPU packet counters and sums them.
    pub fn counters(&self) -> Result<Counters, DatapathError> {
        let name = map_names::COUNTERS;
        let map = self
            .ebpf
            .map(name)
            .ok_or(DatapathError::Missing { kind: "map", name })?;
        let array = PerCpuArray::<_, u64>::try_from(map)
            .map_err(|source| map_error("open", name, source))?;
        let mut counters = Counters::default();
        for (index, slot) in (0..counter::COUNT).zip(counters.0.iter_mut()) {
            let per_cpu = array
                .get(&index, 0)
                .map_err(|source| map_error("lookup", name, source))?;
            *slot = per_cpu.iter().sum();
        }
        Ok(counters)
    }
}

fn program_error(op: &'static str, program: &'static str, source: ProgramError) -> DatapathError {
    DatapathError::Program {
        op,
        program,
        source: Box::new(source),
    }
}

fn map_error(op: &'static str, map: &'static str, source: MapError) -> DatapathError {
    DatapathError::Map {
        op,
        map,
        source: Box::new(source),
    }
}

/// Builds a `ZW_BLOCK` key from addresses, an IP protocol number and a destination port (for
/// ICMP and ICMPv6: the message type).
pub fn block_key(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    protocol: u8,
    port: u16,
) -> BlockKey {
    use std::net::IpAddr;
    let mut key = BlockKey {
        protocol,
        ..BlockKey::default()
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            key.family = zonewall_common::FAMILY_V4;
            key.src_addr_be[..4].copy_from_slice(&s.octets());
            key.dst_addr_be[..4].copy_from_slice(&d.octets());
        }
        _ => {
            key.family = zonewall_common::FAMILY_V6;
            key.src_addr_be = to_v6(src).octets();
            key.dst_addr_be = to_v6(dst).octets();
        }
    }
    key.dport_be = match protocol {
        1 | 58 => u16::from_ne_bytes([port as u8, 0]),
        _ => port.to_be(),
    };
    key
}

fn to_v6(addr: std::net::IpAddr) -> std::net::Ipv6Addr {
    match addr {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the agent looks up must exist in the object it embeds; a rename on one side
    /// only would otherwise surface as a load failure on a node.
    #[test]
    fn embedded_object_defines_every_named_map_and_program() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("parse embedded eBPF object");
        for name in map_names::ALL {
            assert!(
                object.maps.contains_key(name),
                "map {name} missing; object has {:?}",
                object.maps.keys()
            );
            assert!(
                name.len() <= 15,
                "map name {name} longer than the kernel keeps"
            );
        }
        for name in program_names::ALL {
            assert!(
                object.programs.contains_key(name),
                "program {name} missing; object has {:?}",
                object.programs.keys()
            );
        }
    }

    #[test]
    fn block_keys_use_network_order_and_icmp_types() {
        let v4 = block_key(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            17,
            8080,
        );
        assert_eq!(v4.family, zonewall_common::FAMILY_V4);
        assert_eq!(&v4.src_addr_be[..4], &[10, 0, 0, 1]);
        assert_eq!(&v4.src_addr_be[4..], &[0; 12]);
        assert_eq!(v4.dport_be.to_ne_bytes(), [0x1f, 0x90]);
        let icmp6 = block_key(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            58,
            128,
        );
        assert_eq!(icmp6.family, zonewall_common::FAMILY_V6);
        assert_eq!(icmp6.dport_be.to_ne_bytes(), [128, 0]);
    }

    #[test]
    fn counter_deltas_subtract_per_counter() {
        let mut before = Counters::default();
        before.0[counter::PASS_IP as usize] = 5;
        let mut after = before;
        after.0[counter::PASS_IP as usize] = 9;
        after.0[counter::DROP_BLOCKED as usize] = 2;
        let delta = after.since(&before);
        assert_eq!(delta.get(counter::PASS_IP), 4);
        assert_eq!(delta.get(counter::DROP_BLOCKED), 2);
        assert!(delta.to_string().contains("drop_blocked=2"));
    }
}
