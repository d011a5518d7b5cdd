//! Everything that talks to the kernel's BPF subsystem: loading the embedded object,
//! attaching the programs to workload interfaces, writing the compiled tables and reading
//! counters. Nothing else in the crate calls aya; the rest of the agent sees the
//! [`Dataplane`] trait, so its logic can be tested without a kernel.

mod interfaces;
pub mod sys;
mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
    },
    util::KernelVersion,
};
use zonewall_common::{
    self as abi, Config, EndpointKey, EndpointValue, IdentityBlockV4, RuleStats, counter,
    map_names, program_names,
};

pub use interfaces::{InterfaceError, discover_interface, interface_index};
pub use tables::{DesiredTables, PolicyMaps, TableDiff, endpoint_key};

use crate::policy::datapath_compile::v4_split::V4Split;
use crate::policy::datapath_compile::{LpmEntries, LpmKey};

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
    #[error(
        "the compiled policy needs {needed} entries in map {map}, which holds {capacity}; nothing was written and the previous policy stays live"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        capacity: u32,
    },
    #[error(transparent)]
    Interface(#[from] InterfaceError),
    #[error("the tcx link of interface {interface} ({direction}) cannot be used: {source}")]
    Link {
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("cannot {op} pin {path}: {source}; is bpffs mounted there and writable?")]
    Pin {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
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
        let mut first = true;
        for (name, value) in counter::NAMES.iter().zip(self.0) {
            if value == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        if first {
            f.write_str("(all zero)")?;
        }
        Ok(())
    }
}

/// What one [`Dataplane::apply`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries inserted or overwritten, over all maps.
    pub written: usize,
    /// Entries removed, over all maps.
    pub removed: usize,
    /// Of the written, removed and mirrored entries, how many went through batch system calls
    /// (the kernel may not offer them for every map type).
    pub batched: usize,
    /// Entries written or removed in the slot that was live before, after the switch, so
    /// both slots hold the same tables again.
    pub mirrored: usize,
    /// The live generation afterwards (unchanged when nothing differed).
    pub generation: u32,
    /// When the new generation went live (the switch; the old slot is brought up to date
    /// after it). `None` when nothing differed.
    pub switched_at: Option<Instant>,
}

/// The kernel side of the agent.
pub trait Dataplane {
    /// Attaches both programs to a workload's host-side interface (ingress sees what the
    /// workload sends, egress what it receives); returns the interface index.
    fn attach(&mut self, interface: &str) -> Result<u32, DatapathError>;
    /// Makes `desired` the enforced policy: writes what differs, removes what is no longer
    /// wanted, then moves the live generation on, so tracked flows are evaluated again.
    fn apply(&mut self, desired: &DesiredTables) -> Result<ApplyReport, DatapathError>;
    /// Packet outcome counters summed over all CPUs.
    fn counters(&self) -> Result<Counters, DatapathError>;
    /// Packets and bytes per rule id (summed over CPUs), rules with hits only.
    fn rule_stats(&self) -> Result<BTreeMap<u32, RuleStats>, DatapathError>;
    /// Removes conntrack entries that outlived their idle timeout at `now_ns` (kernel
    /// monotonic clock) and returns the end events of those that had not reported their end
    /// and whose rule logs at the end.
    fn sweep_conntrack(&mut self, now_ns: u64) -> Result<Vec<abi::FlowEvent>, DatapathError>;
    /// Closes deny aggregation windows older than the window length: returns an event for
    /// the attempts not reported yet, and removes the entry (so the next attempt is reported
    /// at once again).
    fn sweep_denies(&mut self, now_ns: u64) -> Result<Vec<abi::FlowEvent>, DatapathError>;
    /// The real size of map `name`, when the dataplane can tell.
    fn map_capacity(&self, name: &'static str) -> Option<u32>;
    /// Flows in the conntrack table now (`None` when the dataplane cannot tell cheaply).
    fn conntrack_count(&self) -> Option<u64> {
        None
    }
    /// Packets counted into their flow only after its end record went out (`None` when the
    /// dataplane has no flow cache).
    fn flow_packets_after_end(&self) -> Option<u64> {
        None
    }
    /// Removes the pins of other layout versions once none of their links is left (every
    /// interface moved to this version's programs); returns how many layouts went.
    fn retire_old_layouts(&mut self) -> Result<usize, DatapathError>;
}

/// Where the datapath pins its maps and links: `<root>/v<MAP_ABI_VERSION>/{maps,links}`. A
/// restarted agent finds them there and takes over without a gap; another layout version
/// is never reused, only replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    /// The default root, `/sys/fs/bpf/zonewall`.
    pub const DEFAULT_ROOT: &'static str = "/sys/fs/bpf/zonewall";

    pub fn new(root: impl Into<PathBuf>) -> PinLayout {
        PinLayout { root: root.into() }
    }

    fn version_dir(&self, version: u32) -> PathBuf {
        self.root.join(format!("v{version}"))
    }

    pub fn maps(&self) -> PathBuf {
        self.version_dir(abi::MAP_ABI_VERSION).join("maps")
    }

    pub fn links(&self) -> PathBuf {
        self.version_dir(abi::MAP_ABI_VERSION).join("links")
    }

    /// Layout versions other than this build's found under the root.
    fn other_versions(&self) -> Vec<PathBuf> {
        let current = format!("v{}", abi::MAP_ABI_VERSION);
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.starts_with('v') && name != current
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// bpffs refuses names with dots; interface names may have them but never a colon.
    fn link_file(links: &Path, interface: &str, direction: &str) -> PathBuf {
        links.join(format!("{direction}-{}", interface.replace('.', ":")))
    }
}

/// Map sizes (entries) chosen at load. A map already pinned keeps the size it was created
/// with (the kernel cannot resize a map); the agent reads the real sizes back and checks
/// every table against them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// The IPv4 long-prefix hash and the IPv6 identity trie, each, per slot.
    pub identity: u32,
    /// The policy trie, per slot.
    pub policy: u32,
    pub conntrack: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            identity: abi::capacity::IDENTITY_V4,
            policy: abi::capacity::POLICY,
            conntrack: abi::capacity::CONNTRACK,
        }
    }
}

impl Capacities {
    /// The largest size accepted for any map (the kernel's tries and hashes allocate per
    /// entry, but an absurd value is a typo).
    pub const MAX: u32 = 1 << 26;

    /// Refuses zero and absurd sizes, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (setting, value) in [
            ("--map-identity-entries", self.identity),
            ("--map-policy-entries", self.policy),
            ("--map-conntrack-entries", self.conntrack),
        ] {
            if value == 0 || value > Self::MAX {
                return Err(format!(
                    "{setting} {value} is out of range: give 1 to {}",
                    Self::MAX
                ));
            }
        }
        Ok(())
    }
}

/// How long a packet may still be reading the tables of the generation before the live one.
/// Programs run to completion within microseconds in softirq context; the margin is wide.
const GRACE: Duration = Duration::from_millis(10);

/// The live policy generation of a datapath pinned under a [`PinLayout`], read from its
/// pinned config map without loading anything: for observers of a running agent (the
/// benchmarks time a change to the generation it switches to).
pub struct PinnedGeneration(Array<MapData, Config>);

impl PinnedGeneration {
    pub fn open(layout: &PinLayout) -> Result<PinnedGeneration, DatapathError> {
        let name = map_names::CONFIG;
        let data =
            MapData::from_pin(layout.maps().join(name)).map_err(|e| map_error("open", name, e))?;
        let array =
            Array::try_from(aya::maps::Map::Array(data)).map_err(|e| map_error("open", name, e))?;
        Ok(PinnedGeneration(array))
    }

    pub fn read(&self) -> Result<u32, DatapathError> {
        let config = self
            .0
            .get(&0, 0)
            .map_err(|e| map_error("lookup", map_names::CONFIG, e))?;
        Ok(config.generation)
    }
}

/// The loaded programs and maps, pinned (see [`PinLayout`]): maps, links and so enforcement
/// outlive the process. [`Datapath::cleanup`] removes them.
pub struct Datapath {
    ebpf: Ebpf,
    layout: PinLayout,
    generation: u32,
    /// When the live generation was switched, for [`GRACE`].
    last_flip: Instant,
    /// Rule ids below this are used by the applied policy (`None` before the first apply).
    rule_slots: Option<u32>,
    /// What each table slot holds, as last written by this process (`None`: not known, read
    /// it from the kernel). Reading 150,000 entries back costs more than writing a small
    /// change, and this process is the maps' only writer while it runs.
    slots: [Option<Arc<PolicyMaps>>; 2],
}

impl Datapath {
    /// Loads the embedded object with its maps pinned under `layout` (existing pins of the
    /// same layout version are adopted, with their tables, conntrack and counters), and
    /// verifies every program, so a verifier rejection is reported at start, not at the first
    /// attach. Nothing attached changes here. On a fresh layout the programs drop every IP
    /// packet until the first [`Dataplane::apply`] (fail closed).
    pub fn load(layout: &PinLayout) -> Result<Self, DatapathError> {
        Self::load_with(layout, &Capacities::default())
    }

    /// [`Datapath::load`] with chosen map sizes (for maps not pinned yet).
    pub fn load_with(layout: &PinLayout, capacities: &Capacities) -> Result<Self, DatapathError> {
        let maps = layout.maps();
        for dir in [&maps, &layout.links()] {
            std::fs::create_dir_all(dir).map_err(|source| DatapathError::Pin {
                op: "create",
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&maps);
        for name in map_names::IDENTITY_V4_LONG_SLOTS
            .iter()
            .chain(&map_names::IDENTITY_V6_SLOTS)
        {
            loader.map_max_entries(name, capacities.identity);
        }
        for name in &map_names::POLICY_SLOTS {
            loader.map_max_entries(name, capacities.policy);
        }
        loader.map_max_entries(map_names::CONNTRACK, capacities.conntrack);
        let ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| DatapathError::Load {
                source: Box::new(source),
            })?;
        let mut datapath = Self {
            ebpf,
            layout: layout.clone(),
            generation: 0,
            last_flip: Instant::now(),
            rule_slots: None,
            slots: [None, None],
        };
        for name in program_names::ALL {
            datapath
                .classifier(name)?
                .load()
                .map_err(|source| program_error("load", name, source))?;
        }
        for name in map_names::ALL {
            datapath.map(name)?;
        }
        datapath.generation = datapath.config()?.generation;
        Ok(datapath)
    }

    /// The real size of map `name` (a pinned map keeps the size it was created with).
    pub fn capacity(&self, name: &'static str) -> Result<u32, DatapathError> {
        Ok(self
            .map_data(name)?
            .info()
            .map_err(|e| map_error("read the size of", name, e))?
            .max_entries())
    }

    /// The live policy generation (0: none yet).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Removes every pin under the root (all layout versions): the links go, so the programs
    /// detach, and the maps are freed once nothing uses them. Idempotent.
    pub fn cleanup(layout: &PinLayout) -> Result<usize, DatapathError> {
        let mut removed = 0;
        let remove = |path: &Path| {
            std::fs::remove_dir_all(path).map_err(|source| DatapathError::Pin {
                op: "remove",
                path: path.display().to_string(),
                source,
            })
        };
        let mut versions = layout.other_versions();
        versions.push(layout.version_dir(abi::MAP_ABI_VERSION));
        for dir in versions {
            // Detach first: removing a pin only drops one reference to the link.
            for entry in std::fs::read_dir(dir.join("links"))
                .into_iter()
                .flatten()
                .flatten()
            {
                use std::os::fd::AsRawFd as _;
                let pin_error = |op: &'static str, source: std::io::Error| DatapathError::Pin {
                    op,
                    path: entry.path().display().to_string(),
                    source,
                };
                let link = sys::obj_get(&entry.path()).map_err(|e| pin_error("open", e))?;
                sys::link_detach(link.as_raw_fd())
                    .map_err(|e| pin_error("detach the link of", e))?;
            }
            if dir.exists() {
                removed += count_files(&dir);
                remove(&dir)?;
            }
        }
        if layout.root.exists() && count_files(&layout.root) == 0 {
            remove(&layout.root)?;
        }
        Ok(removed)
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

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DatapathError> {
        self.ebpf
            .map(name)
            .ok_or(DatapathError::Missing { kind: "map", name })
    }

    /// The map's data, for the calls aya's typed wrappers do not offer.
    fn map_data(&self, name: &'static str) -> Result<&MapData, DatapathError> {
        use aya::maps::Map;
        match self.map(name)? {
            Map::LpmTrie(data)
            | Map::HashMap(data)
            | Map::LruHashMap(data)
            | Map::Array(data)
            | Map::PerCpuArray(data) => Ok(data),
            _ => Err(DatapathError::Missing {
                kind: "hash, LPM trie or array map",
                name,
            }),
        }
    }

    /// The map's file descriptor number, for the batch calls aya does not offer. Valid while
    /// `self` holds the map.
    fn map_fd(&self, name: &'static str) -> Result<std::os::fd::RawFd, DatapathError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        Ok(self.map_data(name)?.fd().as_fd().as_raw_fd())
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing { kind: "map", name })
    }

    /// Reads the conntrack entries (for tests and diagnostics).
    pub fn conntrack_entries(&self) -> Result<Vec<(abi::CtKey, abi::CtValue)>, DatapathError> {
        let name = map_names::CONNTRACK;
        let map: HashMap<&MapData, abi::CtKey, abi::CtValue> =
            HashMap::try_from(self.map(name)?).map_err(|e| map_error("open", name, e))?;
        map.iter()
            .map(|entry| entry.map_err(|e| map_error("iterate", name, e)))
            .collect()
    }

    /// The loaded program `name` (one of `program_names::ALL`), for the kernel benchmark's
    /// test runs.
    pub fn program_fd(
        &mut self,
        name: &'static str,
    ) -> Result<std::os::fd::BorrowedFd<'_>, DatapathError> {
        use std::os::fd::AsFd as _;
        let program = self.classifier(name)?;
        let fd = program
            .fd()
            .map_err(|source| program_error("get fd", name, source))?;
        Ok(fd.as_fd())
    }

    /// The reader of the flow event ring buffer (there is one; a second call fails).
    pub fn take_events(&mut self) -> Result<EventReader, DatapathError> {
        let name = map_names::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(DatapathError::Missing { kind: "map", name })?;
        let ring = aya::maps::RingBuf::try_from(map).map_err(|e| map_error("open", name, e))?;
        Ok(EventReader(ring))
    }

    /// Every entry of an LPM trie, in key order (as [`DesiredTables`] holds them).
    fn read_lpm<K: LpmKey, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<LpmEntries<K, V>, DatapathError>
    where
        K::Data: aya::Pod,
    {
        let trie: LpmTrie<&MapData, K::Data, V> =
            LpmTrie::try_from(self.map(name)?).map_err(|e| map_error("open", name, e))?;
        let mut current = Vec::new();
        for entry in trie.iter() {
            let (key, value) = entry.map_err(|e| map_error("iterate", name, e))?;
            current.push((K::from_parts(key.prefix_len(), key.data()), value));
        }
        current.sort_unstable_by_key(|(k, _)| k.order());
        Ok(Arc::new(current))
    }

    /// Makes the trie `name`, which holds `current`, hold `desired`: writes what differs and
    /// removes what is gone.
    fn write_lpm<K: LpmKey, V: aya::Pod + PartialEq>(
        &mut self,
        name: &'static str,
        current: &LpmEntries<K, V>,
        desired: &LpmEntries<K, V>,
    ) -> Result<TableDiff, DatapathError>
    where
        K::Data: aya::Pod,
    {
        let diff = tables::diff_lpm(current, desired);
        if diff.upserts.is_empty() && diff.removals.is_empty() {
            return Ok(TableDiff::default());
        }
        let fd = self.map_fd(name)?;
        let mut trie: LpmTrie<&mut MapData, K::Data, V> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(|e| map_error("open", name, e))?;
        let key = |k: &K| Key::new(k.prefix_len(), k.data());
        // In chunks, so that a full table needs buffers for one chunk only.
        let mut batched = 0;
        for chunk in diff.upserts.chunks(WRITE_CHUNK) {
            let keys: Vec<Key<K::Data>> = chunk.iter().map(|(k, _)| key(k)).collect();
            let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
            let done = batched_upserts(name, fd, &keys, &values)?;
            batched += done;
            for (key, value) in keys.iter().zip(&values).skip(done) {
                trie.insert(key, value, 0)
                    .map_err(|e| map_error("insert", name, e))?;
            }
        }
        for chunk in diff.removals.chunks(WRITE_CHUNK) {
            let stale: Vec<Key<K::Data>> = chunk.iter().map(key).collect();
            let done = batched_removals(name, fd, &stale)?;
            batched += done;
            for key in stale.iter().skip(done) {
                match trie.remove(key) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_error("remove", name, e)),
                }
            }
        }
        Ok(TableDiff {
            batched,
            ..diff.summary()
        })
    }

    /// Every CPU's flow cache.
    fn flow_cache(&self) -> Result<Vec<abi::FlowCache>, DatapathError> {
        let name = map_names::FLOW_CACHE;
        let array = PerCpuArray::<_, abi::FlowCache>::try_from(self.map(name)?)
            .map_err(|source| map_error("open", name, source))?;
        let per_cpu = array
            .get(&0, 0)
            .map_err(|source| map_error("lookup", name, source))?;
        Ok(per_cpu.iter().copied().collect())
    }

    /// The per-rule counters as the kernel holds them, summed over CPUs and indexed by rule
    /// id (without the packets still waiting in the flow cache, which
    /// [`Dataplane::rule_stats`] adds).
    pub fn rule_counters(&self) -> Result<Vec<RuleStats>, DatapathError> {
        let name = map_names::RULE_STATS;
        let array = PerCpuArray::<_, RuleStats>::try_from(self.map(name)?)
            .map_err(|source| map_error("open", name, source))?;
        // Only the ids the live policy uses: the array has a slot per possible rule id.
        let used = self
            .rule_slots
            .unwrap_or_else(|| array.len())
            .min(array.len());
        // In batches (a few system calls however many rules), then one index at a time from
        // where the batches stopped (all of them where the kernel has no batch lookup).
        let mut totals: Vec<RuleStats> = Vec::with_capacity(used as usize);
        if let Ok(cpus) = aya::util::nr_cpus() {
            let slot = sys::per_cpu_slot::<RuleStats>();
            match sys::lookup_array(self.map_fd(name)?, used, slot * cpus) {
                Ok(values) => totals.extend(
                    values
                        .chunks_exact(slot * cpus)
                        .map(|value| sum_per_cpu(value.chunks_exact(slot).map(sys::read_pod))),
                ),
                Err(e) => tracing::debug!(map = name, ?e, "no batch lookup; one call per rule"),
            }
        }
        for index in totals.len() as u32..used {
            let per_cpu = array
                .get(&index, 0)
                .map_err(|source| map_error("lookup", name, source))?;
            totals.push(sum_per_cpu(per_cpu.iter().copied()));
        }
        Ok(totals)
    }

    /// The flow cache slots (with their index) that hold packets not yet added to their
    /// flow's counters, over all CPUs (also for tests and diagnostics).
    pub fn waiting_in_flow_cache(&self) -> Result<Vec<(usize, abi::FlowCacheSlot)>, DatapathError> {
        Ok(self
            .flow_cache()?
            .iter()
            .flat_map(|cache| cache.slots.into_iter().enumerate())
            .filter(|(_, slot)| slot.packets > 0)
            .collect())
    }

    /// Removes and returns the entries of hash map `name` that `take` selects.
    fn take_where<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        take: impl Fn(&K, &V) -> bool,
    ) -> Result<Vec<(K, V)>, DatapathError> {
        let mut map: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(|e| map_error("open", name, e))?;
        let mut taken = Vec::new();
        for entry in map.iter() {
            let (key, value) = entry.map_err(|e| map_error("iterate", name, e))?;
            if take(&key, &value) {
                taken.push((key, value));
            }
        }
        for (key, _) in &taken {
            match map.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("remove", name, e)),
            }
        }
        Ok(taken)
    }

    /// The policy tables of one slot: what this process last wrote there, else read back.
    fn read_slot(&mut self, slot: usize) -> Result<Arc<PolicyMaps>, DatapathError> {
        if let Some(known) = &self.slots[slot] {
            return Ok(Arc::clone(known));
        }
        let tables = Arc::new(PolicyMaps {
            identity_v4: V4Split {
                blocks: self.read_blocks(map_names::IDENTITY_V4_BLOCKS_SLOTS[slot])?,
                long: self.read_long(map_names::IDENTITY_V4_LONG_SLOTS[slot])?,
            },
            identity_v6: self.read_lpm(map_names::IDENTITY_V6_SLOTS[slot])?,
            policy: self.read_lpm(map_names::POLICY_SLOTS[slot])?,
        });
        self.slots[slot] = Some(Arc::clone(&tables));
        Ok(tables)
    }

    /// Makes slot `slot` (holding `current`) hold `desired` (the tables of `target`), and
    /// records that it does. After a failure the slot's content is unknown and read back
    /// next time.
    fn write_slot(
        &mut self,
        slot: usize,
        current: &PolicyMaps,
        desired: &Arc<PolicyMaps>,
    ) -> Result<TableDiff, DatapathError> {
        self.slots[slot] = None;
        let written = self.write_slot_tables(slot, current, desired)?;
        self.slots[slot] = Some(Arc::clone(desired));
        Ok(written)
    }

    fn write_slot_tables(
        &mut self,
        slot: usize,
        current: &PolicyMaps,
        desired: &PolicyMaps,
    ) -> Result<TableDiff, DatapathError> {
        let mut total = TableDiff::default();
        total.add(self.write_blocks(
            map_names::IDENTITY_V4_BLOCKS_SLOTS[slot],
            &current.identity_v4.blocks,
            &desired.identity_v4.blocks,
        )?);
        let name = map_names::IDENTITY_V4_LONG_SLOTS[slot];
        let diff = tables::diff_lpm(&current.identity_v4.long, &desired.identity_v4.long);
        total.add(self.write_hash(name, diff)?);
        total.add(self.write_lpm(
            map_names::IDENTITY_V6_SLOTS[slot],
            &current.identity_v6,
            &desired.identity_v6,
        )?);
        total.add(self.write_lpm(
            map_names::POLICY_SLOTS[slot],
            &current.policy,
            &desired.policy,
        )?);
        Ok(total)
    }

    fn wait_grace(&self) {
        let elapsed = self.last_flip.elapsed();
        if elapsed < GRACE {
            std::thread::sleep(GRACE - elapsed);
        }
    }

    fn config(&self) -> Result<Config, DatapathError> {
        let name = map_names::CONFIG;
        let array: Array<&MapData, Config> =
            Array::try_from(self.map(name)?).map_err(|e| map_error("open", name, e))?;
        array.get(&0, 0).map_err(|e| map_error("lookup", name, e))
    }

    fn read_endpoints(&self) -> Result<BTreeMap<EndpointKey, EndpointValue>, DatapathError> {
        let name = map_names::ENDPOINTS;
        let map: HashMap<&MapData, EndpointKey, EndpointValue> =
            HashMap::try_from(self.map(name)?).map_err(|e| map_error("open", name, e))?;
        let mut current = BTreeMap::new();
        for entry in map.iter() {
            let (key, value) = entry.map_err(|e| map_error("iterate", name, e))?;
            current.insert(key, value);
        }
        Ok(current)
    }

    /// Brings the anti-spoofing entries to `desired`: new and changed ones first, then the
    /// removals.
    fn write_endpoints(
        &mut self,
        current: &BTreeMap<EndpointKey, EndpointValue>,
        desired: &BTreeMap<EndpointKey, EndpointValue>,
    ) -> Result<TableDiff, DatapathError> {
        let diff = tables::diff(current, desired, |k| *k);
        self.write_hash(map_names::ENDPOINTS, diff)
    }

    /// Applies `diff` to hash map `name`: new and changed entries first, then the removals,
    /// in batches where the kernel takes them.
    fn write_hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        diff: tables::Diff<K, V>,
    ) -> Result<TableDiff, DatapathError> {
        if diff.upserts.is_empty() && diff.removals.is_empty() {
            return Ok(TableDiff::default());
        }
        let fd = self.map_fd(name)?;
        let mut map: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(|e| map_error("open", name, e))?;
        let mut batched = 0;
        for chunk in diff.upserts.chunks(WRITE_CHUNK) {
            let (keys, values): (Vec<K>, Vec<V>) = chunk.iter().copied().unzip();
            let done = batched_upserts(name, fd, &keys, &values)?;
            batched += done;
            for (key, value) in keys.iter().zip(&values).skip(done) {
                map.insert(key, value, 0)
                    .map_err(|e| map_error("insert", name, e))?;
            }
        }
        for chunk in diff.removals.chunks(WRITE_CHUNK) {
            let done = batched_removals(name, fd, chunk)?;
            batched += done;
            for key in chunk.iter().skip(done) {
                match map.remove(key) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_error("remove", name, e)),
                }
            }
        }
        Ok(TableDiff {
            batched,
            ..diff.summary()
        })
    }

    /// Makes the block array `name`, which holds `current`, hold `desired`.
    fn write_blocks(
        &mut self,
        name: &'static str,
        current: &Arc<Vec<IdentityBlockV4>>,
        desired: &Arc<Vec<IdentityBlockV4>>,
    ) -> Result<TableDiff, DatapathError> {
        let changed = tables::diff_blocks(current, desired);
        if changed.is_empty() {
            return Ok(TableDiff::default());
        }
        let fd = self.map_fd(name)?;
        let mut array: Array<&mut MapData, IdentityBlockV4> =
            Array::try_from(self.map_mut(name)?).map_err(|e| map_error("open", name, e))?;
        let mut batched = 0;
        for chunk in changed.chunks(WRITE_CHUNK) {
            let (indexes, blocks): (Vec<u32>, Vec<IdentityBlockV4>) = chunk.iter().copied().unzip();
            let done = batched_upserts(name, fd, &indexes, &blocks)?;
            batched += done;
            for (index, block) in indexes.iter().zip(&blocks).skip(done) {
                array
                    .set(*index, block, 0)
                    .map_err(|e| map_error("write", name, e))?;
            }
        }
        Ok(TableDiff {
            written: changed.len(),
            removed: 0,
            batched,
        })
    }

    /// Every block of the array `name`, in index order.
    fn read_blocks(&self, name: &'static str) -> Result<Arc<Vec<IdentityBlockV4>>, DatapathError> {
        let size = std::mem::size_of::<IdentityBlockV4>();
        let mut blocks: Vec<IdentityBlockV4> =
            match sys::lookup_array(self.map_fd(name)?, abi::IDENTITY_V4_BLOCKS, size) {
                Ok(bytes) => bytes.chunks_exact(size).map(sys::read_pod).collect(),
                Err(e) => {
                    tracing::debug!(map = name, ?e, "no batch lookup; one call per block");
                    Vec::new()
                }
            };
        let array: Array<&MapData, IdentityBlockV4> =
            Array::try_from(self.map(name)?).map_err(|e| map_error("open", name, e))?;
        for index in blocks.len() as u32..abi::IDENTITY_V4_BLOCKS {
            blocks.push(
                array
                    .get(&index, 0)
                    .map_err(|e| map_error("lookup", name, e))?,
            );
        }
        Ok(Arc::new(blocks))
    }

    /// Every entry of the hash of long IPv4 prefixes `name`, in key order.
    fn read_long(
        &self,
        name: &'static str,
    ) -> Result<LpmEntries<abi::IdentityKeyV4, abi::IdentityValue>, DatapathError> {
        let map: HashMap<&MapData, abi::IdentityKeyV4, abi::IdentityValue> =
            HashMap::try_from(self.map(name)?).map_err(|e| map_error("open", name, e))?;
        let mut entries = Vec::new();
        for entry in map.iter() {
            entries.push(entry.map_err(|e| map_error("iterate", name, e))?);
        }
        entries.sort_unstable_by_key(|(k, _)| k.order());
        Ok(Arc::new(entries))
    }

    fn set_config(&mut self, config: Config) -> Result<(), DatapathError> {
        let name = map_names::CONFIG;
        let mut array: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut(name)?).map_err(|e| map_error("open", name, e))?;
        array
            .set(0, config, 0)
            .map_err(|e| map_error("update", name, e))
    }
}

/// Reads the kernel's flow events.
pub struct EventReader(aya::maps::RingBuf<MapData>);

impl EventReader {
    /// Appends every event waiting in the ring buffer to `out`; never blocks.
    pub fn drain(&mut self, out: &mut Vec<abi::FlowEvent>) {
        while let Some(item) = self.0.next() {
            if item.len() >= size_of::<abi::FlowEvent>() {
                // SAFETY: the kernel wrote a whole `FlowEvent` (checked length); `FlowEvent`
                // is plain old data, read unaligned from the ring's memory.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
            }
        }
    }
}

/// Entries of one table written per batch call.
const WRITE_CHUNK: usize = 16_384;

/// Writes what the kernel takes in batches; returns how many entries (from the start) are
/// written, so the caller writes the rest one by one.
fn batched_upserts<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    map: std::os::fd::RawFd,
    keys: &[K],
    values: &[V],
) -> Result<usize, DatapathError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let result = sys::update(
        map,
        &sys::bytes_of(keys),
        &sys::bytes_of(values),
        keys.len(),
    );
    batch_outcome(name, "batch update", keys.len(), result)
}

/// As [`batched_upserts`], for removals.
fn batched_removals<K: aya::Pod>(
    name: &'static str,
    map: std::os::fd::RawFd,
    keys: &[K],
) -> Result<usize, DatapathError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let result = sys::delete(map, &sys::bytes_of(keys), keys.len());
    batch_outcome(name, "batch delete", keys.len(), result)
}

fn batch_outcome(
    name: &'static str,
    op: &'static str,
    count: usize,
    result: Result<(), sys::BatchError>,
) -> Result<usize, DatapathError> {
    match result {
        Ok(()) => Ok(count),
        Err(sys::BatchError::Unsupported { done }) => {
            tracing::debug!(map = name, done, "no batch operations; one call per entry");
            Ok(done)
        }
        Err(sys::BatchError::Failed { done, source }) => {
            tracing::debug!(map = name, done, %source, "{op} failed; retrying one by one");
            // One call per entry from here reports the failing entry precisely.
            Ok(done)
        }
    }
}

fn check_capacity(map: &'static str, needed: usize, capacity: u32) -> Result<(), DatapathError> {
    if needed > capacity as usize {
        return Err(DatapathError::Capacity {
            map,
            needed,
            capacity,
        });
    }
    Ok(())
}

impl Dataplane for Datapath {
    /// Uses tcx links where the kernel has them (>= 6.6), pinned under the layout's `links`
    /// directory: an interface already attached by an earlier agent (of this or another
    /// layout version) gets the new program swapped into its link atomically, never a
    /// detach. Older kernels get a clsact qdisc (not pinnable: a restart re-attaches). The
    /// interface name resolves in the calling thread's network namespace.
    fn attach(&mut self, interface: &str) -> Result<u32, DatapathError> {
        let ifindex = interface_index(interface)?;
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
        let links = self.layout.links();
        let other_links: Vec<PathBuf> = self
            .layout
            .other_versions()
            .into_iter()
            .map(|dir| dir.join("links"))
            .collect();
        for (name, attach_type, direction) in [
            (
                program_names::FROM_WORKLOAD,
                TcAttachType::Ingress,
                "ingress",
            ),
            (program_names::TO_WORKLOAD, TcAttachType::Egress, "egress"),
        ] {
            let attach_error = |source: ProgramError| DatapathError::Attach {
                program: name,
                interface: interface.to_owned(),
                direction,
                source: Box::new(source),
            };
            let program = self.classifier(name)?;
            if !has_tcx {
                program
                    .attach(interface, attach_type)
                    .map_err(attach_error)?;
                continue;
            }
            let pin = PinLayout::link_file(&links, interface, direction);
            let existing = std::iter::once(pin.clone())
                .chain(
                    other_links
                        .iter()
                        .map(|dir| PinLayout::link_file(dir, interface, direction)),
                )
                .find(|path| path.exists());
            let link_id = match existing
                .and_then(|path| PinnedLink::from_pin(&path).ok().map(|l| (path, l)))
            {
                Some((path, pinned)) => {
                    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                        .map_err(|e| link_error(interface, direction, e))?;
                    let id = program.attach_to_link(link).map_err(attach_error)?;
                    if path != pin {
                        // Adopted from another layout version: pin it under ours.
                        let _ = std::fs::remove_file(&path);
                    }
                    id
                }
                None => program
                    .attach_with_options(
                        interface,
                        attach_type,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(attach_error)?,
            };
            let link = program.take_link(link_id).map_err(attach_error)?;
            let fd_link =
                FdLink::try_from(link).map_err(|e| link_error(interface, direction, e))?;
            if !pin.exists() {
                fd_link.pin(&pin).map_err(|e| DatapathError::Pin {
                    op: "create",
                    path: pin.display().to_string(),
                    source: match e {
                        aya::pin::PinError::SyscallError(error) => error.io_error,
                        other => std::io::Error::other(other.to_string()),
                    },
                })?;
            }
        }
        Ok(ifindex)
    }

    fn apply(&mut self, desired: &DesiredTables) -> Result<ApplyReport, DatapathError> {
        // Capacities first: a table that does not fit is refused before anything is written,
        // and the live generation stays as it is.
        for (slots, needed) in [
            (
                map_names::IDENTITY_V4_LONG_SLOTS,
                desired.maps.identity_v4.long.len(),
            ),
            (map_names::IDENTITY_V6_SLOTS, desired.maps.identity_v6.len()),
            (map_names::POLICY_SLOTS, desired.maps.policy.len()),
        ] {
            for name in slots {
                check_capacity(name, needed, self.capacity(name)?)?;
            }
        }
        check_capacity(
            map_names::ENDPOINTS,
            desired.endpoints.len(),
            self.capacity(map_names::ENDPOINTS)?,
        )?;
        if let Some(max) = desired.max_rule_id
            && max >= abi::capacity::RULES
        {
            return Err(DatapathError::Capacity {
                map: map_names::RULE_STATS,
                needed: max as usize + 1,
                capacity: abi::capacity::RULES,
            });
        }
        self.rule_slots = desired.max_rule_id.map(|max| max + 1);
        let live = self.generation;
        let (live_slot, next_slot) = ((live & 1) as usize, ((live + 1) & 1) as usize);
        let endpoints = self.read_endpoints()?;
        let live_tables = self.read_slot(live_slot)?;
        let flags = self.config()?.flags;
        if live != 0
            && *live_tables == *desired.maps
            && endpoints == desired.endpoints
            && flags == desired.config_flags
        {
            return Ok(ApplyReport {
                generation: live,
                ..ApplyReport::default()
            });
        }
        // The next slot was last read by the generation before `live`: give packets still
        // looking at it time to finish, then write it completely.
        self.wait_grace();
        let next_tables = self.read_slot(next_slot)?;
        let wanted = &desired.maps;
        let mut total = self.write_slot(next_slot, &next_tables, wanted)?;
        // The anti-spoofing entries change completely before the switch: the programs keep
        // the checks they made in a flow's conntrack entry for as long as its generation is
        // live.
        total.add(self.write_endpoints(&endpoints, &desired.endpoints)?);
        // One write of one 32-bit generation makes the whole new policy live.
        self.set_config(Config {
            generation: live + 1,
            flags: desired.config_flags,
        })?;
        self.generation = live + 1;
        self.last_flip = Instant::now();
        let switched_at = Some(self.last_flip);
        // Bring the old slot up to date too, once no packet reads it, so the next change
        // writes only what changes.
        self.wait_grace();
        let mirrored = self.write_slot(live_slot, &live_tables, wanted)?;
        Ok(ApplyReport {
            written: total.written,
            removed: total.removed,
            batched: total.batched + mirrored.batched,
            mirrored: mirrored.written + mirrored.removed,
            generation: self.generation,
            switched_at,
        })
    }

    fn counters(&self) -> Result<Counters, DatapathError> {
        let name = map_names::COUNTERS;
        let array = PerCpuArray::<_, u64>::try_from(self.map(name)?)
            .map_err(|source| map_error("open", name, source))?;
        let mut counters = Counters::default();
        for (index, slot) in (0..counter::COUNT).zip(counters.0.iter_mut()) {
            let per_cpu = array
                .get(&index, 0)
                .map_err(|source| map_error("lookup", name, source))?;
            *slot = per_cpu.iter().sum();
        }
        // Packets that passed on a flow cache slot are counted when the slot is settled;
        // until then they are read here.
        counters.0[counter::PASS_ESTABLISHED as usize] += self
            .waiting_in_flow_cache()?
            .iter()
            .map(|(_, slot)| u64::from(slot.packets))
            .sum::<u64>();
        Ok(counters)
    }

    fn map_capacity(&self, name: &'static str) -> Option<u32> {
        self.capacity(name).ok()
    }

    fn conntrack_count(&self) -> Option<u64> {
        let name = map_names::CONNTRACK;
        let fd = self.map_fd(name).ok()?;
        match sys::count(fd, size_of::<abi::CtKey>(), size_of::<abi::CtValue>()) {
            Ok(count) => Some(count),
            Err(sys::BatchError::Unsupported { .. }) => None,
            Err(sys::BatchError::Failed { source, .. }) => {
                tracing::warn!(map = name, %source, "cannot count the conntrack entries");
                None
            }
        }
    }

    fn retire_old_layouts(&mut self) -> Result<usize, DatapathError> {
        let mut retired = 0;
        for dir in self.layout.other_versions() {
            let links_left = std::fs::read_dir(dir.join("links"))
                .map(|entries| entries.count())
                .unwrap_or(0);
            if links_left > 0 {
                tracing::warn!(
                    layout = %dir.display(),
                    links_left,
                    "an older layout still has attached interfaces this agent does not enforce; left in place"
                );
                continue;
            }
            std::fs::remove_dir_all(&dir).map_err(|source| DatapathError::Pin {
                op: "remove",
                path: dir.display().to_string(),
                source,
            })?;
            tracing::info!(layout = %dir.display(), "retired an older pinned layout");
            retired += 1;
        }
        Ok(retired)
    }

    fn sweep_conntrack(&mut self, now_ns: u64) -> Result<Vec<abi::FlowEvent>, DatapathError> {
        let expired = self.take_where(
            map_names::CONNTRACK,
            |key: &abi::CtKey, value: &abi::CtValue| {
                now_ns.saturating_sub(value.last_seen_ns)
                    > abi::idle_timeout_ns(key.protocol, value.flags)
            },
        )?;
        let mut reported: Vec<_> = expired
            .into_iter()
            .filter(|(_, value)| {
                value.flags & abi::CT_END_REPORTED == 0
                    && value.policy_flags & abi::POLICY_FLAG_LOG_END != 0
            })
            .collect();
        if !reported.is_empty() {
            // The last packets of a flow may still wait in a CPU's flow cache: nothing on
            // that CPU looked the flow up again since.
            for (index, slot) in self.waiting_in_flow_cache()? {
                if let Some((_, value)) = reported.iter_mut().find(|(key, _)| *key == slot.key) {
                    slot.add_to(index, value);
                }
            }
        }
        Ok(reported
            .iter()
            .map(|(key, value)| crate::flows::events::idle_end_event(key, value, now_ns))
            .collect())
    }

    fn flow_packets_after_end(&self) -> Option<u64> {
        match self.flow_cache() {
            Ok(caches) => Some(caches.iter().map(|cache| cache.late_packets).sum()),
            Err(e) => {
                tracing::warn!("cannot read the flow cache: {e}");
                None
            }
        }
    }

    fn sweep_denies(&mut self, now_ns: u64) -> Result<Vec<abi::FlowEvent>, DatapathError> {
        let closed = self.take_where(
            map_names::DENIES,
            |_: &abi::DenyKey, value: &abi::DenyValue| {
                now_ns.saturating_sub(value.window_start_ns) >= abi::timeout::DENY_WINDOW_NS
            },
        )?;
        Ok(closed
            .iter()
            .filter(|(_, value)| value.unreported > 0)
            .map(|(key, value)| crate::flows::events::deny_rest_event(key, value, now_ns))
            .collect())
    }

    fn rule_stats(&self) -> Result<BTreeMap<u32, RuleStats>, DatapathError> {
        let mut totals = self.rule_counters()?;
        // Packets that passed on a flow cache slot reach the rule counters when the slot is
        // settled; until then they are read here, counted as the kernel will count them.
        for (_, slot) in self.waiting_in_flow_cache()? {
            if slot.egress_rule_id == abi::RULE_ID_NONE {
                continue;
            }
            let rules = abi::flow_rules(slot.egress_rule_id, slot.ingress_rule_id);
            for rule in rules.into_iter().flatten() {
                if let Some(total) = totals.get_mut(rule as usize) {
                    total.packets += u64::from(slot.packets);
                    total.bytes += slot.bytes;
                }
            }
        }
        Ok((0..)
            .zip(totals)
            .filter(|(_, total)| total.packets > 0)
            .collect())
    }
}

/// One rule's packets and bytes over all CPUs.
fn sum_per_cpu(per_cpu: impl Iterator<Item = RuleStats>) -> RuleStats {
    per_cpu.fold(RuleStats::default(), |total, stats| RuleStats {
        packets: total.packets + stats.packets,
        bytes: total.bytes + stats.bytes,
    })
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn link_error(
    interface: &str,
    direction: &'static str,
    source: aya::programs::links::LinkError,
) -> DatapathError {
    DatapathError::Link {
        interface: interface.to_owned(),
        direction,
        source: Box::new(source),
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
    fn counter_deltas_subtract_per_counter() {
        let mut before = Counters::default();
        before.0[counter::PASS_NEW as usize] = 5;
        let mut after = before;
        after.0[counter::PASS_NEW as usize] = 9;
        after.0[counter::DROP_POLICY as usize] = 2;
        let delta = after.since(&before);
        assert_eq!(delta.get(counter::PASS_NEW), 4);
        assert_eq!(delta.get(counter::DROP_POLICY), 2);
        assert_eq!(delta.to_string(), "pass_new=4 drop_policy=2");
    }
}
