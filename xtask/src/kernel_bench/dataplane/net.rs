//! The pods and the traffic between them: a node namespace with a client and a server pod,
//! each on a routed veth pair (a /32 in the pod, a default route to a link-local gateway the
//! node answers by proxy ARP, a host route per pod on the node), all removed on drop; and the
//! measurements, run on threads that joined a pod's namespace and are pinned to one CPU.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use super::super::traffic::ip;

const POD_GATEWAY: &str = "169.254.1.1";
pub const CLIENT_CPU: usize = 0;
pub const SERVER_CPU: usize = 1;

/// The host-side interfaces, in the node namespace.
pub const CLIENT_HOST: &str = "zwdp-client";
pub const SERVER_HOST: &str = "zwdp-server";

pub struct Topology {
    pub node: String,
    pub client_ns: String,
    pub server_ns: String,
    pub client: Ipv4Addr,
    pub server: Ipv4Addr,
    created: Vec<String>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            let status = Command::new("ip").args(["netns", "del", name]).status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("cleanup: `ip netns del {name}` failed");
            }
        }
    }
}

/// Runs a command in namespace `netns`; fails with its stderr.
pub fn exec(netns: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}`"))?;
    ensure!(
        output.status.success(),
        "`{program} {}` in {netns} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command in `netns` with `input` on its standard input.
pub fn exec_with_input(
    netns: &str,
    program: &str,
    args: &[&str],
    input: &[u8],
) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{program}`"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let written = stdin.write_all(input);
    drop(stdin);
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "`{program} {}` in {netns} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    written.with_context(|| format!("write the input of `{program}`"))?;
    Ok(())
}

impl Topology {
    pub fn create(client: Ipv4Addr, server: Ipv4Addr) -> anyhow::Result<Topology> {
        let prefix = format!("zwdp{}", std::process::id());
        let mut topology = Topology {
            node: format!("{prefix}-node"),
            client_ns: format!("{prefix}-client"),
            server_ns: format!("{prefix}-server"),
            client,
            server,
            created: Vec::new(),
        };
        for name in [
            topology.node.clone(),
            topology.client_ns.clone(),
            topology.server_ns.clone(),
        ] {
            ip(&["netns", "add", &name])?;
            topology.created.push(name);
        }
        let node = topology.node.clone();
        ip(&["-n", &node, "link", "set", "lo", "up"])?;
        exec(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        // Proxy ARP answers for the gateway only when the node routes it elsewhere: an uplink
        // (a veth pair inside the node namespace) that nothing is sent to.
        ip(&[
            "-n",
            &node,
            "link",
            "add",
            "zwdp-uplink",
            "type",
            "veth",
            "peer",
            "name",
            "zwdp-uplink-end",
        ])?;
        ip(&["-n", &node, "link", "set", "zwdp-uplink", "up"])?;
        ip(&["-n", &node, "route", "add", "default", "dev", "zwdp-uplink"])?;
        for (pod, host, address) in [
            (&topology.client_ns, CLIENT_HOST, client),
            (&topology.server_ns, SERVER_HOST, server),
        ] {
            let address = address.to_string();
            ip(&[
                "-n", &node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns",
                pod,
            ])?;
            exec(
                &node,
                "sysctl",
                &[
                    "-qw",
                    &format!("net.ipv4.conf.{host}.proxy_arp=1"),
                    &format!("net.ipv4.neigh.{host}.proxy_delay=0"),
                ],
            )?;
            ip(&["-n", &node, "link", "set", host, "up"])?;
            ip(&[
                "-n",
                &node,
                "route",
                "add",
                &format!("{address}/32"),
                "dev",
                host,
            ])?;
            ip(&["-n", pod, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                pod,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", pod, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                pod,
                "route",
                "add",
                POD_GATEWAY,
                "dev",
                "eth0",
                "scope",
                "link",
            ])?;
            ip(&[
                "-n",
                pod,
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY,
                "dev",
                "eth0",
            ])?;
        }
        Ok(topology)
    }
}

fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (the machine has two).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set is valid for the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    ensure!(
        rc == 0,
        "sched_setaffinity(CPU {cpu}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn enter(netns: &str, cpu: usize) -> anyhow::Result<()> {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: a network namespace file; only this thread changes namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(
        rc == 0,
        "setns({path}): {}",
        std::io::Error::last_os_error()
    );
    pin_to(cpu)
}

/// Runs `f` on a thread in `netns`, pinned to `cpu`.
pub fn on_thread<T: Send + 'static>(
    netns: &str,
    cpu: usize,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        enter(&netns, cpu)?;
        f()
    })
}

pub fn join<T>(handle: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn set_linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a socket we own; the option value is valid for the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

/// The server pod's listeners: every connection is echoed until the client closes it, one at
/// a time (the clients here open one at a time too).
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub fn start(topology: &Topology, ports: &[u16]) -> anyhow::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = topology.server;
        let ports = ports.to_vec();
        let flag = stop.clone();
        let handle = on_thread(&topology.server_ns, SERVER_CPU, move || {
            let listeners: Vec<TcpListener> = ports
                .iter()
                .map(|&port| {
                    let listener = TcpListener::bind((server, port))?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .collect::<std::io::Result<_>>()
                .context("bind the server's listeners")?;
            let _ = ready_tx.send(());
            let mut buffer = [0u8; 256];
            while !flag.load(Ordering::Relaxed) {
                let mut polls: Vec<libc::pollfd> = listeners
                    .iter()
                    .map(|l| libc::pollfd {
                        fd: l.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: the array is valid for the call.
                unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 50) };
                for listener in &listeners {
                    let Ok((mut stream, _)) = listener.accept() else {
                        continue;
                    };
                    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux.
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            stop.store(true, Ordering::Relaxed);
            join(handle)?;
            bail!("the server did not start");
        }
        Ok(Server {
            stop,
            handle: Some(handle),
        })
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(handle) => join(handle),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Request/response latency: `round_trips` 64-byte exchanges on one connection, after a
/// warm-up; (p50, p99) in microseconds.
pub fn latency(topology: &Topology, port: u16, round_trips: usize) -> anyhow::Result<(f64, f64)> {
    let address = SocketAddr::from((topology.server, port));
    join(on_thread(&topology.client_ns, CLIENT_CPU, move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .context("connect for the latency measurement")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let request = [7u8; 64];
        let mut reply = [0u8; 64];
        let mut samples = Vec::with_capacity(round_trips);
        for i in 0..round_trips + round_trips / 10 {
            let started = Instant::now();
            stream.write_all(&request)?;
            stream
                .read_exact(&mut reply)
                .context("read the echoed request")?;
            if i >= round_trips / 10 {
                samples.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        set_linger_zero(stream.as_raw_fd());
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Ok((at(0.50), at(0.99)))
    }))
}

/// New connections per second: connect, one 64-byte request and its echo, then close (with a
/// reset, so no TIME_WAIT piles up), one after the other for `seconds`. Waiting for the echo
/// keeps the client from running ahead of the server's accept queue, whose overflow would
/// cost a one-second SYN retransmission and measure the queue instead of the path.
pub fn connections_per_second(topology: &Topology, port: u16, seconds: f64) -> anyhow::Result<f64> {
    let address = SocketAddr::from((topology.server, port));
    join(on_thread(&topology.client_ns, CLIENT_CPU, move || {
        let request = [7u8; 64];
        let mut reply = [0u8; 64];
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed().as_secs_f64() < seconds {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(3))
                .context("connect in the connection-rate loop")?;
            set_linger_zero(stream.as_raw_fd());
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            stream.write_all(&request)?;
            stream
                .read_exact(&mut reply)
                .context("read the echo in the connection-rate loop")?;
            drop(stream);
            count += 1;
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    }))
}

/// Opens a new connection to `port` every millisecond (each given 300 ms, less than the first
/// SYN retransmission) until one is accepted; returns when that one's SYN was sent.
fn probe_loop(server: Ipv4Addr, port: u16, give_up: Duration) -> anyhow::Result<Instant> {
    let started = Instant::now();
    let mut open: Vec<(Instant, OwnedFd)> = Vec::new();
    let mut last_sent: Option<Instant> = None;
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(server).to_be(),
        },
        sin_zero: [0; 8],
    };
    loop {
        let now = Instant::now();
        ensure!(
            now.duration_since(started) < give_up,
            "no connection to port {port} went through in {give_up:?}"
        );
        if last_sent.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(1)) {
            // SAFETY: plain socket creation; the descriptor is owned right away.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            };
            ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            // SAFETY: a new descriptor nothing else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            set_linger_zero(fd);
            let sent = Instant::now();
            // SAFETY: the address is a valid sockaddr_in of the size passed.
            let rc = unsafe {
                libc::connect(
                    fd,
                    &address as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            let error = std::io::Error::last_os_error();
            if rc == 0 {
                return Ok(sent);
            }
            ensure!(
                error.raw_os_error() == Some(libc::EINPROGRESS),
                "connect: {error}"
            );
            open.push((sent, owned));
            last_sent = Some(sent);
        }
        let mut polls: Vec<libc::pollfd> = open
            .iter()
            .map(|(_, fd)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: the array is valid for the call.
        unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 1) };
        let mut keep = Vec::with_capacity(open.len());
        let mut first: Option<Instant> = None;
        for ((sent, fd), poll) in open.into_iter().zip(&polls) {
            if poll.revents != 0 {
                let mut error: libc::c_int = 0;
                let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: a socket we own; the out-parameters are valid.
                unsafe {
                    libc::getsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        &mut error as *mut libc::c_int as *mut libc::c_void,
                        &mut length,
                    )
                };
                if error == 0 {
                    first = Some(first.map_or(sent, |f| f.min(sent)));
                }
                continue;
            }
            if sent.elapsed() < Duration::from_millis(300) {
                keep.push((sent, fd));
            }
        }
        if let Some(sent) = first {
            return Ok(sent);
        }
        open = keep;
    }
}

/// A probe running in the client pod: [`Probe::live_after`] waits for the first connection
/// to `port` that gets through.
pub struct Probe(std::thread::JoinHandle<anyhow::Result<Instant>>);

impl Probe {
    /// Starts probing and checks for 50 ms that nothing gets through yet.
    pub fn start(topology: &Topology, port: u16) -> anyhow::Result<Probe> {
        let server = topology.server;
        let handle = on_thread(&topology.client_ns, CLIENT_CPU, move || {
            probe_loop(server, port, Duration::from_secs(20))
        });
        std::thread::sleep(Duration::from_millis(50));
        if handle.is_finished() {
            join(handle)?;
            bail!("a probe to port {port} went through before the change was applied");
        }
        Ok(Probe(handle))
    }

    /// Whether a connection got through (or the probe gave up).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Time from `handed_over` to the send time of the first probe SYN that was let through.
    pub fn live_after(self, handed_over: Instant) -> anyhow::Result<Duration> {
        let sent = join(self.0)?;
        ensure!(
            sent >= handed_over,
            "a probe went through before the change was handed over"
        );
        Ok(sent.duration_since(handed_over))
    }
}

/// One iperf3 TCP run from the client pod to the server pod (client on CPU 0, server on
/// CPU 1); the receiver's throughput in Gbit/s.
pub fn iperf3(topology: &Topology, port: u16, seconds: u32) -> anyhow::Result<f64> {
    let (client, server) = (topology.client.to_string(), topology.server.to_string());
    let port = port.to_string();
    let (server_cpu, client_cpu) = (SERVER_CPU.to_string(), CLIENT_CPU.to_string());
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &topology.server_ns])
        .args([
            "taskset",
            "-c",
            &server_cpu,
            "iperf3",
            "--server",
            "--one-off",
        ])
        .args(["--port", &port, "--bind", &server])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the iperf3 server")?;
    super::super::traffic::iperf3_gbits(
        || {
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", &topology.client_ns])
                .args(["taskset", "-c", &client_cpu, "iperf3", "--client", &server])
                .args(["--port", &port, "--bind", &client, "--format", "g"])
                .args(["--time", &seconds.to_string()]);
            command
        },
        &mut listener,
    )
}
