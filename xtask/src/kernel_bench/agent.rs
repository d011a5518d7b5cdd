//! `cargo xtask bench agent`: the agent's own footprint at scale: 10,000 endpoints and the
//! 10,000-rule / 100,000-prefix policy compiled and applied in this process, with its
//! resident memory (the kernel maps reported apart: they are kernel memory charged to the
//! process's cgroup, not its RSS), and the time from one pod changing zone to the new map
//! entries being live (compile of the whole state, diff, write, switch).

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, ensure};
use zonewall::{
    datapath::{Datapath, Dataplane, DesiredTables},
    inventory::{Endpoint, Inventory},
    node,
    policy::{PolicySet, ZonePolicy, resource::PortRange},
};

use super::generate::{self, Scale};
use super::heap;

const ENDPOINTS: usize = 10_000;
const POD_CHANGES: usize = 9;
const SCALE: Scale = Scale {
    rules: 10_000,
    prefixes: 100_000,
};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.trim_start_matches(':').trim();
                rest.trim_end_matches(" kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// Kernel memory of every BPF map this process holds (`memlock` of each map fd).
fn map_memory_bytes() -> u64 {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-map")
        })
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The generated workloads, plus copies of them (same labels and zone, new addresses in
/// 10.128.0.0/9, outside every generated prefix) up to `ENDPOINTS`.
fn endpoints(generated: &[Endpoint]) -> Vec<Endpoint> {
    let mut out = generated.to_vec();
    let mut n = 0u32;
    while out.len() < ENDPOINTS {
        let template = &generated[n as usize % generated.len()];
        let address = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + n;
        let mut copy = template.clone();
        copy.name = format!("copy-{n}");
        copy.ips = vec![IpAddr::V4(Ipv4Addr::from(address))];
        out.push(copy);
        n += 1;
    }
    out
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn run() -> anyhow::Result<()> {
    let rss_start = status_kib("VmRSS");
    let heap_start = heap::live();
    let generated = generate::generate(SCALE);
    let mut endpoints = endpoints(&generated.endpoints);
    // The ZonePolicy objects and endpoints as handed to the agent (the generator's own copy
    // of the firewall rules is not part of it).
    drop(generated.rules);
    // Shared objects, as the Kubernetes agent's watch cache holds them.
    let policies: Vec<Arc<ZonePolicy>> = generated.policies.into_iter().map(Arc::new).collect();
    let heap_input = heap::live() - heap_start;
    let inventory = |endpoints: &[Endpoint]| {
        Inventory::from_endpoints(generate::EXTERNAL_ZONE, endpoints.to_vec(), "bench")
    };
    let pins = super::measure::Pins::named("agent");
    let mut datapath = Datapath::load(&pins.0).context("loading the eBPF programs")?;
    heap::reset_peak();
    let before_policy = heap::live();
    let started = Instant::now();
    let set = PolicySet::new_shared(&policies, None)?;
    let compiled = node::compile_set(&inventory(&endpoints)?, &set, None)?;
    let compile_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let report = datapath.apply(&DesiredTables::new(&compiled, &[], false))?;
    let apply_seconds = started.elapsed().as_secs_f64();
    let sizes = compiled.sizes();
    // What stays while the policy is live: the compiled tables (the agent keeps them for
    // the next compile and for naming rules in flow records) and the datapath's record of
    // its table slots.
    let heap_state = heap::live() - before_policy;
    let heap_peak = heap::peak() - before_policy;
    let rss_live = status_kib("VmRSS");
    let maps = map_memory_bytes();

    // Pods change zone, one reconcile each: the policy objects are reused as compiled, the
    // tables compiled again with the live identity numbers, and only the difference is
    // written. Every change moves another dmz workload to restricted.
    let mut set = set;
    let mut compiled = compiled;
    let mut changes = Vec::new();
    for moved in endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.zone == "dmz")
        .map(|(i, _)| i)
        .step_by(97)
        .take(POD_CHANGES)
        .collect::<Vec<_>>()
    {
        endpoints[moved].zone = "restricted".to_owned();
        let started = Instant::now();
        set = PolicySet::new_shared(&policies, Some(&set))?;
        compiled = node::compile_set(&inventory(&endpoints)?, &set, Some(&compiled))?;
        let recompile = started.elapsed();
        let report = datapath.apply(&DesiredTables::new(&compiled, &[], false))?;
        let returned = started.elapsed();
        let live = report
            .switched_at
            .context("a pod that changes zone changes the tables")?
            .duration_since(started);
        changes.push((live, recompile, returned, report));
    }
    ensure!(
        changes.len() == POD_CHANGES,
        "not enough dmz workloads to move"
    );
    changes.sort_by_key(|(live, ..)| *live);
    let (change_total, recompile, returned, change) = changes[POD_CHANGES / 2];
    let slowest = changes[POD_CHANGES - 1].0;
    let rss_peak = status_kib("VmHWM");

    // One firewall rule changes (the app-0 -> app-1 allow rule gets a second port): the
    // two objects holding it arrive new, as a watch delivers them, the others stay shared.
    let mut rules = generate::generate(SCALE).rules;
    rules[2].service.entries[0].ports.push(PortRange {
        port: 50_001,
        end_port: None,
    });
    let changed: Vec<Arc<ZonePolicy>> =
        generate::as_watch_delivers(generate::zone_policies(&rules), &policies);
    drop(rules);
    let objects_changed = changed
        .iter()
        .zip(&policies)
        .filter(|(a, b)| !Arc::ptr_eq(a, b))
        .count();
    let started = Instant::now();
    let set = PolicySet::new_shared(&changed, Some(&set))?;
    let compiled = node::compile_set(&inventory(&endpoints)?, &set, Some(&compiled))?;
    let rule_recompile = started.elapsed();
    let rule_change = datapath.apply(&DesiredTables::new(&compiled, &[], false))?;
    let rule_live = rule_change
        .switched_at
        .context("a rule change changes the tables")?
        .duration_since(started);
    drop(datapath);
    drop(pins);

    println!();
    println!(
        "bench agent: {} endpoints, 10,000 rules, 100,000 prefixes -> {} identities, {} + {} identity entries, {} policy entries",
        endpoints.len(),
        sizes.identities,
        sizes.identity_entries_v4,
        sizes.identity_entries_v6,
        sizes.policy_entries
    );
    println!(
        "  compile {compile_seconds:.2} s, first apply {apply_seconds:.2} s ({} entries written)",
        report.written
    );
    println!(
        "  heap: the ZonePolicy objects and endpoints handed in {:.0} MiB; kept with the policy live (compiled tables, slot record) {:.0} MiB; peak while compiling and applying {:.0} MiB above the input",
        mib(heap_input),
        mib(heap_state),
        mib(heap_peak)
    );
    println!(
        "  resident memory: {:.0} MiB at start, {:.0} MiB with the policy live, {:.0} MiB peak (input included)",
        rss_start as f64 / 1024.0,
        rss_live as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    println!(
        "  kernel maps (memlock of the map fds, both table slots): {:.0} MiB",
        maps as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  one pod changes zone ({POD_CHANGES} changes, median): compile {:.0} ms, new generation live after {:.0} ms (slowest {:.0} ms), apply returned after {:.0} ms (the old slot brought up to date); {} entries written, {} removed",
        recompile.as_secs_f64() * 1000.0,
        change_total.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0,
        returned.as_secs_f64() * 1000.0,
        change.written,
        change.removed
    );
    println!(
        "  one firewall rule changes ({objects_changed} ZonePolicy objects new): compile {:.0} ms, new generation live after {:.0} ms; {} entries written, {} removed",
        rule_recompile.as_secs_f64() * 1000.0,
        rule_live.as_secs_f64() * 1000.0,
        rule_change.written,
        rule_change.removed
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "  targets: resident memory < 100 MiB: {} ({:.0} MiB); the agent's own state < 100 MiB: {} ({:.0} MiB kept, {:.0} MiB peak); one pod change live < 100 ms: {}",
        verdict(rss_peak < 100 * 1024),
        rss_peak as f64 / 1024.0,
        verdict(heap_state < 100 << 20 && heap_peak < 100 << 20),
        mib(heap_state),
        mib(heap_peak),
        verdict(change_total.as_millis() < 100)
    );
    Ok(())
}
