//! The programs under real traffic: a workload namespace joined by a veth pair to a node
//! namespace (both created here, removed on drop), zonewall's programs on the host-side end,
//! the empty program on the same hooks before them. Two kinds of traffic from the workload:
//! an iperf3 TCP stream to a listener on the node side (almost every packet a tracked flow's),
//! then UDP datagrams to blocklisted addresses (every packet a new flow, denied): to one
//! address, each to the next port; to the next of thousands of addresses, one port; and to
//! the next of those addresses and the next port, so that neither the peer's identity nor
//! the verdict is in a per-CPU cache. The kernel's own BPF statistics (run time and run
//! count per program, switched on with `BPF_ENABLE_STATS` only while measuring) give the
//! cost per run of each program on the same packets.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use zonewall::datapath::{Counters, Datapath, Dataplane, DesiredTables, endpoint_key};
use zonewall_common::{EndpointValue, counter, program_names};

use super::generate::ALLOWED_PORT;
use super::median;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Seconds of iperf3 traffic.
pub const SECONDS: u32 = 5;
/// iperf3 runs of `SECONDS` each: one alone moved the figures by tens of nanoseconds from
/// run to run, the median of five much less.
pub const WINDOWS: usize = 5;
/// Windows of new flows, of `NEW_FLOW_SECONDS` each.
pub const NEW_FLOW_WINDOWS: usize = 3;
pub const NEW_FLOW_SECONDS: u64 = 2;
/// The host-side interface of the workload, in the node namespace.
const HOST_INTERFACE: &str = "zwb-host";

/// The `link_create` member of `union bpf_attr` for a tcx attachment (Linux 6.18 uapi).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    tcx_relative_fd: u32,
    _pad: u32,
    tcx_expected_revision: u64,
}
const _: () = assert!(std::mem::size_of::<LinkCreateAttr>() == 32);

/// The `info` member of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
const _: () = assert!(std::mem::size_of::<InfoAttr>() == 16);

/// `struct bpf_prog_info` up to `run_cnt` (the kernel fills as much as we ask for; every
/// pointer field stays zero, so it writes nothing else).
#[repr(C)]
struct ProgramInfoHead {
    _type: u32,
    id: u32,
    _between: [u8; 184],
    run_time_ns: u64,
    run_cnt: u64,
}
const _: () = {
    assert!(std::mem::offset_of!(ProgramInfoHead, id) == 4);
    assert!(std::mem::offset_of!(ProgramInfoHead, run_time_ns) == 192);
    assert!(std::mem::offset_of!(ProgramInfoHead, run_cnt) == 200);
};

fn bpf<T>(command: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a fully initialised attribute block of the size passed, laid out as
    // the command's member of `union bpf_attr`; any pointers in it are valid for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(result)
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a new file descriptor the kernel just returned to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// (id, run time ns, run count) of a loaded program.
fn statistics(program: BorrowedFd<'_>) -> anyhow::Result<(u32, u64, u64)> {
    let mut info = ProgramInfoHead {
        _type: 0,
        id: 0,
        _between: [0; 184],
        run_time_ns: 0,
        run_cnt: 0,
    };
    let mut attr = InfoAttr {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgramInfoHead>() as u32,
        info: &mut info as *mut ProgramInfoHead as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
    Ok((info.id, info.run_time_ns, info.run_cnt))
}

/// Attaches `program` with tcx to `ifindex` (in the calling thread's namespace), after the
/// programs already there. Closing the returned link detaches it.
fn tcx_attach(program: BorrowedFd<'_>, ifindex: u32, attach_type: u32) -> anyhow::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        ..LinkCreateAttr::default()
    };
    Ok(owned(
        bpf(BPF_LINK_CREATE, &mut attr).context("BPF_LINK_CREATE (tcx)")?,
    ))
}

/// Namespaces created for the measurement; dropping this removes them (and the veth pair).
pub(super) struct Namespaces(pub(super) Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            let status = Command::new("ip").args(["netns", "del", name]).status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("cleanup: `ip netns del {name}` failed");
            }
        }
    }
}

pub(super) fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip`")?;
    ensure!(
        output.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Runs `f` on a thread that joined the network namespace `name`.
pub(super) fn in_netns<T: Send>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let path = format!("/run/netns/{name}");
                let file = File::open(&path).with_context(|| format!("open {path}"))?;
                // SAFETY: a network namespace file; only this thread changes namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                ensure!(
                    rc == 0,
                    "setns({path}): {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// One program over the traffic windows.
pub struct ProgramLoad {
    pub name: &'static str,
    /// Runs over all windows.
    pub runs: u64,
    /// Medians over the windows: time per run, and its difference to the empty program's
    /// in the same window; then that difference's lowest and highest value.
    pub nanoseconds_per_run: f64,
    pub over_empty: f64,
    pub over_empty_range: (f64, f64),
}

pub struct Traffic {
    /// The median over the windows.
    pub gigabits_per_second: f64,
    /// Empty program first, then from_workload and to_workload.
    pub programs: Vec<ProgramLoad>,
    pub counters: Counters,
    /// Packet counters over every kind of new flow.
    pub new_flow_counters: Counters,
    /// Denied new flows to one blocklisted address, each datagram to the next port.
    pub same_peer: NewFlows,
    /// Denied new flows, each datagram to the next of `peers` blocklisted addresses (one
    /// service: the peers' identity is not cached, the verdict for it is).
    pub new_peers: NewFlows,
    /// As `new_peers`, each datagram to the next port as well: nothing cached.
    pub new_peers_and_ports: NewFlows,
    pub peers: usize,
}

/// Denied new flows: `zw_from_workload` decides them (the empty program's figures are the
/// ones its hook ran on the same packets).
pub struct NewFlows {
    /// Datagrams sent per second, median over the windows.
    pub packets_per_second: f64,
    pub from_workload: ProgramLoad,
}

/// Whether this measurement can run here; the reason to skip when not.
pub fn available() -> Result<(), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < (6, 6) {
        return Err(format!(
            "the empty program is attached with tcx, which Linux {} lacks (6.6 or later)",
            release.trim()
        ));
    }
    match Command::new("iperf3").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err("iperf3 is not installed (`cargo xtask setup` installs it)".to_string()),
    }
}

/// Measures with the tables already applied to `datapath`; `client` (a workload allowed to
/// open tcp/`ALLOWED_PORT` to `server`, denied everything to `blocked` and `blocked_hosts`)
/// gets the workload namespace.
pub fn measure(
    datapath: &mut Datapath,
    desired: &mut DesiredTables,
    client: Ipv4Addr,
    server: Ipv4Addr,
    blocked: Ipv4Addr,
    blocked_hosts: &[Ipv4Addr],
) -> anyhow::Result<Traffic> {
    ensure!(
        !blocked_hosts.is_empty(),
        "the generated policy has no blocklisted hosts to send new flows to"
    );
    let prefix = format!("zwb{}", std::process::id());
    let node = format!("{prefix}-node");
    let workload = format!("{prefix}-pod");
    let mut namespaces = Namespaces(Vec::new());
    for name in [&node, &workload] {
        ip(&["netns", "add", name])?;
        namespaces.0.push(name.clone());
    }
    let client_cidr = format!("{client}/16");
    let server_cidr = format!("{server}/16");
    for (netns, args) in [
        (&node, vec!["link", "set", "lo", "up"]),
        (&workload, vec!["link", "set", "lo", "up"]),
        (
            &node,
            vec![
                "link",
                "add",
                HOST_INTERFACE,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                workload.as_str(),
            ],
        ),
        (
            &node,
            vec!["addr", "add", &server_cidr, "dev", HOST_INTERFACE],
        ),
        (&workload, vec!["addr", "add", &client_cidr, "dev", "eth0"]),
        (&node, vec!["link", "set", HOST_INTERFACE, "up"]),
        (&workload, vec!["link", "set", "eth0", "up"]),
    ] {
        let mut full = vec!["-n", netns.as_str()];
        full.extend(args);
        ip(&full)?;
    }

    // Tables first (the workload may send from its address on this interface), then attach.
    let ifindex = in_netns(&node, || {
        zonewall::datapath::interface_index(HOST_INTERFACE).map_err(anyhow::Error::from)
    })?;
    desired.endpoints.insert(
        endpoint_key(ifindex, IpAddr::V4(client)),
        EndpointValue::default(),
    );
    datapath.apply(desired)?;
    let mut links = Vec::new();
    {
        let empty = datapath.program_fd(program_names::EMPTY)?;
        let empty_links = in_netns(&node, || {
            Ok([
                tcx_attach(empty, ifindex, BPF_TCX_INGRESS)?,
                tcx_attach(empty, ifindex, BPF_TCX_EGRESS)?,
            ])
        })?;
        links.extend(empty_links);
    }
    in_netns(&node, || {
        datapath.attach(HOST_INTERFACE).map_err(anyhow::Error::from)
    })?;

    // The workload's new flows go to blocklisted addresses, routed via the node.
    let via = server.to_string();
    ip(&["-n", &workload, "route", "add", "default", "via", &via])?;

    let mut enable = BPF_STATS_RUN_TIME;
    let stats = owned(bpf(BPF_ENABLE_STATS, &mut enable).context("BPF_ENABLE_STATS")?);
    let counters_before = datapath.counters()?;
    let streams = (0..WINDOWS)
        .map(|_| window(datapath, || iperf3(&node, &workload, client, server)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let counters_between = datapath.counters()?;
    let mut port = 0u16;
    let same_peer = new_flow_windows(datapath, &workload, client, || {
        port = port.checked_add(1).unwrap_or(1);
        (blocked, port)
    })?;
    let mut next = 0;
    let new_peers = new_flow_windows(datapath, &workload, client, || {
        next = (next + 1) % blocked_hosts.len();
        (blocked_hosts[next], 443)
    })?;
    let mut port = 0u16;
    let new_peers_and_ports = new_flow_windows(datapath, &workload, client, || {
        next = (next + 1) % blocked_hosts.len();
        port = port.checked_add(1).unwrap_or(1);
        (blocked_hosts[next], port)
    })?;
    let counters_after = datapath.counters()?;
    drop(stats);
    drop(links);
    drop(namespaces);

    let counters = counters_between.since(&counters_before);
    let drops: u64 = (counter::DROP_POLICY..=counter::DROP_NO_POLICY)
        .map(|i| counters.get(i))
        .sum();
    ensure!(
        drops == 0 && counters.get(counter::PASS_ESTABLISHED) > 0,
        "the iperf3 flow did not take the conntrack-hit path: {counters}"
    );
    let new_flow_counters = counters_after.since(&counters_between);
    let from_runs = same_peer.from_workload.runs
        + new_peers.from_workload.runs
        + new_peers_and_ports.from_workload.runs;
    // Besides the datagrams, the hook sees at most the workload's few ARP packets.
    ensure!(
        new_flow_counters.get(counter::DROP_POLICY) as f64 >= 0.99 * from_runs as f64
            && new_flow_counters.get(counter::PASS_NEW) == 0,
        "the datagrams to blocklisted addresses did not take the denied new-flow path ({from_runs} runs of {}): {new_flow_counters}",
        MEASURED[FROM]
    );
    let programs = MEASURED
        .iter()
        .enumerate()
        .map(|(i, name)| load(name, i, &streams))
        .collect();
    Ok(Traffic {
        gigabits_per_second: median(streams.iter().map(|(gbit, _)| *gbit).collect())
            .unwrap_or(f64::NAN),
        programs,
        counters,
        new_flow_counters,
        same_peer,
        new_peers,
        new_peers_and_ports,
        peers: blocked_hosts.len(),
    })
}

/// The programs whose statistics are read: the empty program first.
const MEASURED: [&str; 3] = [
    program_names::EMPTY,
    program_names::FROM_WORKLOAD,
    program_names::TO_WORKLOAD,
];
/// `zw_from_workload` in `MEASURED`: the hook that decides the workload's new flows.
const FROM: usize = 1;

/// One window: what `traffic` sent (its own unit), and per program of `MEASURED` its runs
/// and time per run meanwhile.
fn window(
    datapath: &mut Datapath,
    traffic: impl FnOnce() -> anyhow::Result<f64>,
) -> anyhow::Result<(f64, Vec<(u64, f64)>)> {
    let read = |datapath: &mut Datapath| -> anyhow::Result<Vec<(u64, u64)>> {
        MEASURED
            .iter()
            .map(|name| {
                let (_, time, count) = statistics(datapath.program_fd(name)?)?;
                Ok((time, count))
            })
            .collect()
    };
    let before = read(datapath)?;
    let sent = traffic()?;
    let after = read(datapath)?;
    let runs = before
        .iter()
        .zip(&after)
        .map(|((time_0, count_0), (time_1, count_1))| {
            let runs = count_1 - count_0;
            (runs, (time_1 - time_0) as f64 / runs.max(1) as f64)
        })
        .collect();
    Ok((sent, runs))
}

/// Program `index` of `MEASURED` over the windows: (what was sent, per program
/// (runs, ns per run)).
fn load(name: &'static str, index: usize, windows: &[(f64, Vec<(u64, f64)>)]) -> ProgramLoad {
    let over_empty: Vec<f64> = windows.iter().map(|(_, w)| w[index].1 - w[0].1).collect();
    ProgramLoad {
        name,
        runs: windows.iter().map(|(_, w)| w[index].0).sum(),
        nanoseconds_per_run: median(windows.iter().map(|(_, w)| w[index].1).collect())
            .unwrap_or(f64::NAN),
        over_empty: median(over_empty.clone()).unwrap_or(f64::NAN),
        over_empty_range: over_empty
            .iter()
            .fold((f64::MAX, f64::MIN), |(low, high), &x| {
                (low.min(x), high.max(x))
            }),
    }
}

/// `NEW_FLOW_WINDOWS` windows of denied new flows: UDP datagrams from the workload, each to
/// the (address, port) `next` gives.
fn new_flow_windows(
    datapath: &mut Datapath,
    workload: &str,
    client: Ipv4Addr,
    mut next: impl FnMut() -> (Ipv4Addr, u16) + Send,
) -> anyhow::Result<NewFlows> {
    let windows = (0..NEW_FLOW_WINDOWS)
        .map(|_| window(datapath, || send_datagrams(workload, client, &mut next)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(NewFlows {
        packets_per_second: median(windows.iter().map(|(sent, _)| *sent).collect())
            .unwrap_or(f64::NAN),
        from_workload: load(MEASURED[FROM], FROM, &windows),
    })
}

/// Sends UDP datagrams from the workload to what `next` gives for `NEW_FLOW_SECONDS`;
/// returns datagrams per second.
fn send_datagrams(
    workload: &str,
    client: Ipv4Addr,
    next: &mut (impl FnMut() -> (Ipv4Addr, u16) + Send),
) -> anyhow::Result<f64> {
    in_netns(workload, || {
        let socket = UdpSocket::bind((client, 0)).context("bind a UDP socket in the workload")?;
        let payload = [0u8; 32];
        let started = Instant::now();
        let duration = Duration::from_secs(NEW_FLOW_SECONDS);
        let mut sent = 0u64;
        while started.elapsed() < duration {
            for _ in 0..1024 {
                socket
                    .send_to(&payload, next())
                    .context("send a datagram to a blocklisted address")?;
                sent += 1;
            }
        }
        Ok(sent as f64 / started.elapsed().as_secs_f64())
    })
}

/// One iperf3 TCP run from the workload to the node side; the receiver's throughput.
fn iperf3(node: &str, workload: &str, client: Ipv4Addr, server: Ipv4Addr) -> anyhow::Result<f64> {
    let port = ALLOWED_PORT.to_string();
    let (client, server) = (client.to_string(), server.to_string());
    let mut listener = Command::new("ip")
        .args(["netns", "exec", node, "iperf3", "--server", "--one-off"])
        .args(["--port", &port, "--bind", &server])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the iperf3 server")?;
    iperf3_gbits(
        || {
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", workload, "iperf3", "--client", &server])
                .args(["--port", &port, "--bind", &client, "--format", "g"])
                .args(["--time", &SECONDS.to_string()]);
            command
        },
        &mut listener,
    )
}

/// Runs the iperf3 client that `client` builds (again while the server's listener is not up
/// yet, for up to 5 s), stops `listener`, and returns the receiver's Gbit/s.
pub(super) fn iperf3_gbits(
    client: impl Fn() -> Command,
    listener: &mut std::process::Child,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let output = loop {
        let output = client().output().context("run the iperf3 client")?;
        if output.status.success() || Instant::now() > deadline {
            break output;
        }
        // The listener may not be up yet.
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = listener.kill();
    let _ = listener.wait();
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "iperf3 failed: {}{}",
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // "[  5]   0.00-5.00   sec  10.2 GBytes  17.5 Gbits/sec                  receiver"
    text.lines()
        .filter(|line| line.trim_end().ends_with("receiver"))
        .find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let unit = words.iter().position(|w| *w == "Gbits/sec")?;
            words.get(unit.checked_sub(1)?)?.parse().ok()
        })
        .with_context(|| format!("no receiver throughput in the iperf3 output:\n{text}"))
}
