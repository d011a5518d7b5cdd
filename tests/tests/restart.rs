//! Updates and restarts without a gap: policy flips under traffic, SIGKILLed agents, a
//! restart in the middle of a policy change, workloads that appear or change zone while the
//! agent is down, SIGTERM that leaves enforcement running, and `--cleanup`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use zonewall::{datapath::Dataplane, policy::resource::Mode};
use zonewall_common::counter;
use zonewall_integration_tests::{
    Topology,
    agent::{Agent, zonewall_binary},
    enforced::{
        Connect, Enforced, Host, prepared_node, tcp_connect, write_inventory, zones_fixture,
    },
    in_netns, privileged,
};

const PODS: [(&str, &str); 3] = [("web", "dmz"), ("app", "trusted"), ("web-2", "dmz")];

fn host(topology: &Topology, index: usize) -> Host {
    let pod = &topology.pods[index];
    Host {
        netns: pod.netns.clone(),
        v4: pod.ipv4,
        v6: pod.ipv6,
    }
}

/// The fixture with the UDP service's ports replaced.
fn fixture_with_udp_ports(ports: &str) -> String {
    let text = std::fs::read_to_string(zones_fixture()).expect("read the fixture");
    let from = "<udp><port>5353</port></udp>";
    assert!(text.contains(from));
    text.replace(from, &format!("<udp><port>{ports}</port></udp>"))
}

/// A TCP connection that echoes a message every 20 ms on its own thread; counts failures.
struct LongLived {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    exchanges: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LongLived {
    fn start(from: &Host, to: &Host, port: u16) -> LongLived {
        let destination = SocketAddr::new(to.ip(false), port);
        let listener = in_netns(&to.netns, || TcpListener::bind(destination)).expect("listen");
        let stop = Arc::new(AtomicBool::new(false));
        let server_stop = stop.clone();
        let server = std::thread::spawn(move || {
            let accepted = listener.accept();
            // Free the port for other tests' listeners; the connection stays.
            drop(listener);
            let Ok((mut stream, _)) = accepted else {
                return;
            };
            // A cut connection never delivers its FIN: stop on the flag, not on EOF.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buffer = [0u8; 64];
            while !server_stop.load(Ordering::SeqCst) {
                match stream.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        if stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        });
        let mut stream = in_netns(&from.netns, || {
            TcpStream::connect_timeout(&destination, Duration::from_secs(1))
        })
        .expect("the long-lived connection is allowed");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set read timeout");
        let failures = Arc::new(AtomicU64::new(0));
        let exchanges = Arc::new(AtomicU64::new(0));
        let (s, f, e) = (stop.clone(), failures.clone(), exchanges.clone());
        let client = std::thread::spawn(move || {
            let mut echo = [0u8; 5];
            while !s.load(Ordering::SeqCst) {
                let ok = stream.write_all(b"hello").is_ok()
                    && stream.read_exact(&mut echo).is_ok()
                    && &echo == b"hello";
                if ok {
                    e.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        LongLived {
            stop,
            failures,
            exchanges,
            threads: vec![server, client],
        }
    }

    /// Stops and returns (exchanges, failures).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.into_iter().rev() {
            // The server thread ends when the client's stream closes with the client thread.
            let _ = thread.join();
        }
        (
            self.exchanges.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

/// Tries denied connections every 50 ms on its own thread; counts any that get through.
struct DeniedProber {
    stop: Arc<AtomicBool>,
    passed: Arc<AtomicU64>,
    attempts: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
    _listener: TcpListener,
}

impl DeniedProber {
    fn start(from: &Host, to: &Host, port: u16) -> DeniedProber {
        let destination = SocketAddr::new(to.ip(false), port);
        let listener = in_netns(&to.netns, || TcpListener::bind(destination)).expect("listen");
        let stop = Arc::new(AtomicBool::new(false));
        let passed = Arc::new(AtomicU64::new(0));
        let attempts = Arc::new(AtomicU64::new(0));
        let (s, p, a) = (stop.clone(), passed.clone(), attempts.clone());
        let netns = from.netns.clone();
        let thread = std::thread::spawn(move || {
            in_netns(&netns, || {
                while !s.load(Ordering::SeqCst) {
                    a.fetch_add(1, Ordering::SeqCst);
                    if TcpStream::connect_timeout(&destination, Duration::from_millis(100)).is_ok()
                    {
                        p.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        });
        DeniedProber {
            stop,
            passed,
            attempts,
            thread,
            _listener: listener,
        }
    }

    /// Stops and returns (attempts, passed).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        (
            self.attempts.load(Ordering::SeqCst),
            self.passed.load(Ordering::SeqCst),
        )
    }
}

/// A small xorshift generator: random kill points without a dependency.
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Random(u64::from(nanos) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn agent_args(config: &Path) -> Vec<String> {
    vec![
        "--panos-config".to_owned(),
        config.display().to_string(),
        "--metrics-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
    ]
}

fn sigkill(agent: Agent) {
    agent.kill();
}

/// A node for the agent binary: the pods of `PODS`, their inventory, and a copy of the
/// firewall fixture the test may edit. Files are removed on drop.
struct Bed {
    binary: PathBuf,
    topology: Topology,
    inventory: PathBuf,
    config: PathBuf,
    web: Host,
    app: Host,
}

impl Bed {
    fn new() -> Bed {
        let binary = zonewall_binary();
        let (topology, inventory) = prepared_node(&PODS);
        let config = std::env::temp_dir().join(format!("{}-zones.xml", topology.node));
        std::fs::copy(zones_fixture(), &config).expect("copy the fixture");
        let (web, app) = (host(&topology, 0), host(&topology, 1));
        Bed {
            binary,
            topology,
            inventory,
            config,
            web,
            app,
        }
    }

    fn args(&self, extra: &[String]) -> Vec<String> {
        let mut args = agent_args(&self.config);
        args.extend_from_slice(extra);
        args
    }

    /// Starts the agent on the configuration copy and waits until its policy is live.
    fn start(&self, extra: &[String]) -> Agent {
        Agent::start(
            &self.binary,
            &self.topology.node,
            &self.topology.pin_root,
            &self.inventory,
            &self.args(extra),
        )
    }

    /// Starts the agent without waiting.
    fn spawn(&self) -> Agent {
        Agent::spawn(
            &self.binary,
            &self.topology.node,
            &self.topology.pin_root,
            &self.inventory,
            &self.args(&[]),
        )
    }

    fn edit_config(&self, edit: impl Fn(&str) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("read the configuration");
        // Written to a temporary name and renamed, as an editor or a sync would.
        let temporary = self.config.with_extension("tmp");
        std::fs::write(&temporary, edit(&text)).expect("write the configuration");
        std::fs::rename(&temporary, &self.config).expect("replace the configuration");
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.inventory);
        let _ = std::fs::remove_file(&self.config);
    }
}

#[test]
fn a_thousand_policy_flips_under_traffic_never_tear_a_verdict() {
    if !privileged("a_thousand_policy_flips_under_traffic_never_tear_a_verdict") {
        return;
    }
    let mut node = Enforced::new(&PODS, Mode::Enforce);
    // udp/5353 allowed by both, 5354 by A only, 5355 by B only, 5356 by neither.
    let policy_a = node.desired_for(&fixture_with_udp_ports("5353,5354"));
    let policy_b = node.desired_for(&fixture_with_udp_ports("5353,5355"));
    let (web, app) = (node.pod(0), node.pod(1));
    let ports = [5353u16, 5354, 5355, 5356];
    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for port in ports {
        let socket = in_netns(&app.netns, || {
            UdpSocket::bind(SocketAddr::new(app.ip(false), port))
        })
        .expect("bind receiver");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = stop.clone();
        receivers.push(std::thread::spawn(move || {
            let mut received = 0u64;
            let mut buffer = [0u8; 16];
            loop {
                match socket.recv(&mut buffer) {
                    Ok(_) => received += 1,
                    Err(_) if stop.load(Ordering::SeqCst) => return received,
                    Err(_) => {}
                }
            }
        }));
    }
    let sender_stop = stop.clone();
    let (web_ns, app_ip) = (web.netns.clone(), app.ip(false));
    let sender = std::thread::spawn(move || {
        in_netns(&web_ns, || {
            let mut sent = BTreeMap::<u16, u64>::new();
            while !sender_stop.load(Ordering::SeqCst) {
                for port in ports {
                    // A new socket, so a new source port: every datagram is a new flow and
                    // gets a fresh policy verdict.
                    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind sender");
                    if socket
                        .send_to(b"flip", SocketAddr::new(app_ip, port))
                        .is_ok()
                    {
                        *sent.entry(port).or_default() += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        })
    });
    let before = node.counters();
    let started = Instant::now();
    for flip in 0..1000 {
        let desired = if flip % 2 == 0 { &policy_a } else { &policy_b };
        let report = node.datapath.apply(desired).expect("apply");
        assert!(
            report.written > 0,
            "flip {flip} changed nothing: {report:?}"
        );
    }
    let flipping = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().expect("sender");
    std::thread::sleep(Duration::from_millis(200));
    let received: Vec<u64> = receivers
        .into_iter()
        .map(|r| r.join().expect("receiver"))
        .collect();
    let delta = node.counters().since(&before);
    eprintln!("1000 flips in {flipping:?}; sent {sent:?}; received {received:?}; {delta}");
    assert_eq!(
        received[0], sent[&5353],
        "udp/5353 is allowed by both: none may be lost"
    );
    assert_eq!(
        received[3], 0,
        "udp/5356 is allowed by neither: none may pass"
    );
    for (index, port) in [(1, 5354), (2, 5355)] {
        assert!(
            received[index] > 0 && received[index] < sent[&port],
            "udp/{port} flips between allowed and denied: {} of {}",
            received[index],
            sent[&port]
        );
    }
    assert_eq!(
        delta.get(counter::DROP_NO_VERDICT),
        0,
        "a lookup missed: {delta}"
    );
}

#[test]
fn sigkilled_agents_never_open_a_gap_and_the_last_one_converges() {
    if !privileged("sigkilled_agents_never_open_a_gap_and_the_last_one_converges") {
        return;
    }
    let bed = Bed::new();
    let mut agent = bed.start(&[]);
    let long_lived = LongLived::start(&bed.web, &bed.app, 8080);
    let prober = DeniedProber::start(&bed.web, &bed.app, 8081);
    let mut random = Random::seeded();
    for _ in 0..50 {
        sigkill(agent);
        agent = bed.spawn();
        // Somewhere in load, attach, map writes or the first sweep.
        std::thread::sleep(Duration::from_millis(random.below(400)));
    }
    agent.wait_live();
    let (exchanges, failures) = long_lived.finish();
    let (attempts, passed) = prober.finish();
    eprintln!(
        "{exchanges} echoes, {failures} failures; {attempts} denied attempts, {passed} passed"
    );
    assert_eq!(failures, 0, "the allowed long-lived connection broke");
    assert!(exchanges > 50, "the connection was exercised: {exchanges}");
    assert_eq!(
        passed, 0,
        "a denied connection got through during the restarts"
    );
    assert!(attempts > 20);
    // The last agent enforces the policy.
    assert_eq!(
        tcp_connect(&bed.web, &bed.app, false, 8081, Duration::from_millis(300)),
        Connect::TimedOut
    );
    assert_eq!(
        tcp_connect(&bed.web, &bed.app, false, 8080, Duration::from_secs(1)),
        Connect::Established
    );
    assert!(agent.stop().success());
}

#[test]
fn a_restart_during_a_policy_change_ends_in_the_new_policy() {
    if !privileged("a_restart_during_a_policy_change_ends_in_the_new_policy") {
        return;
    }
    let bed = Bed::new();
    let agent = bed.start(&[]);
    bed.edit_config(|text| {
        text.replace(
            "<tcp><port>8080</port></tcp>",
            "<tcp><port>8090</port></tcp>",
        )
    });
    sigkill(agent);
    let agent = bed.start(&[]);
    let outcome = (
        tcp_connect(&bed.web, &bed.app, false, 8090, Duration::from_secs(1)),
        tcp_connect(&bed.web, &bed.app, false, 8080, Duration::from_millis(300)),
    );
    assert!(agent.stop().success());
    assert_eq!(outcome, (Connect::Established, Connect::TimedOut));
}

/// The inventory of the bed's pods `index` with the given zones (named `pod-<index>`).
fn write_zones(bed: &Bed, pods: &[(usize, &str)]) {
    let names: Vec<String> = pods
        .iter()
        .map(|(index, _)| format!("pod-{index}"))
        .collect();
    let entries: Vec<(&str, &str, &zonewall_integration_tests::Pod)> = pods
        .iter()
        .zip(&names)
        .map(|((index, zone), name)| (name.as_str(), *zone, &bed.topology.pods[*index]))
        .collect();
    write_inventory(&bed.inventory, &entries);
}

#[test]
fn workloads_added_or_moved_while_the_agent_is_down_get_their_own_zone_verdicts() {
    if !privileged("workloads_added_or_moved_while_the_agent_is_down_get_their_own_zone_verdicts") {
        return;
    }
    let bed = Bed::new();
    let newcomer = host(&bed.topology, 2);
    write_zones(&bed, &[(0, "dmz"), (1, "trusted")]);
    let agent = bed.start(&[]);
    let long_lived = LongLived::start(&bed.web, &bed.app, 8080);
    sigkill(agent);
    // While the agent is down: a new workload in dmz, and web moves to restricted with the
    // same address.
    write_zones(&bed, &[(0, "restricted"), (1, "trusted"), (2, "dmz")]);
    // Unknown to the tables yet, the newcomer's address is external: not allowed into trusted.
    assert_eq!(
        tcp_connect(&newcomer, &bed.app, false, 8080, Duration::from_millis(300)),
        Connect::TimedOut
    );
    let agent = bed.start(&[]);
    // The newcomer is dmz now: exactly what dmz may do.
    assert_eq!(
        tcp_connect(&newcomer, &bed.app, false, 8080, Duration::from_secs(1)),
        Connect::Established
    );
    assert_eq!(
        tcp_connect(&newcomer, &bed.app, false, 22, Duration::from_millis(300)),
        Connect::TimedOut
    );
    // web's tracked connection was allowed for dmz; as restricted it is not, and conntrack
    // does not keep the old zone's verdict.
    std::thread::sleep(Duration::from_secs(3));
    let (_, failures) = long_lived.finish();
    assert_eq!(failures, 1, "the moved workload's old connection is cut");
    assert!(agent.stop().success());
}

#[test]
fn sigterm_leaves_enforcement_running_and_cleanup_removes_everything() {
    if !privileged("sigterm_leaves_enforcement_running_and_cleanup_removes_everything") {
        return;
    }
    let bed = Bed::new();
    let (web, app) = (&bed.web, &bed.app);
    assert!(bed.start(&[]).stop().success(), "SIGTERM is a clean exit");
    let root: PathBuf = bed.topology.pin_root.join("zonewall");
    assert!(
        root.join(format!("v{}/links", zonewall_common::MAP_ABI_VERSION))
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
            >= 6
    );
    assert_eq!(
        tcp_connect(web, app, false, 8081, Duration::from_millis(300)),
        Connect::TimedOut,
        "still enforced with no agent running"
    );
    assert_eq!(
        tcp_connect(web, app, false, 8080, Duration::from_secs(1)),
        Connect::Established
    );
    let cleanup = || {
        std::process::Command::new(&bed.binary)
            .args(["agent", "--cleanup", "--bpffs-root"])
            .arg(&root)
            .output()
            .expect("run zonewall agent --cleanup")
    };
    let output = cleanup();
    assert!(output.status.success(), "{output:?}");
    assert!(!root.exists(), "pins left behind: {}", root.display());
    assert_eq!(
        tcp_connect(web, app, false, 8081, Duration::from_secs(1)),
        Connect::Established,
        "after --cleanup zonewall no longer filters"
    );
    let again = cleanup();
    assert!(again.status.success(), "--cleanup is idempotent: {again:?}");
}

#[test]
fn a_policy_that_does_not_fit_leaves_the_previous_one_live() {
    if !privileged("a_policy_that_does_not_fit_leaves_the_previous_one_live") {
        return;
    }
    let bed = Bed::new();
    // A policy table exactly as large as the fixture needs.
    let needed = {
        let inventory =
            zonewall::inventory::Inventory::load_file(&bed.inventory).expect("inventory");
        let input = zonewall::node::PolicyInput::Panos {
            config: bed.config.clone(),
            device_group: None,
            mode: Mode::Enforce,
        };
        let policies = zonewall::node::load_policies(&input).expect("policies");
        zonewall::node::compile(&inventory, &policies, None)
            .expect("compile")
            .policy
            .len()
    };
    let agent = bed.start(&["--map-policy-entries".to_owned(), needed.to_string()]);
    // More services: more policy entries than the table holds.
    bed.edit_config(|_| fixture_with_udp_ports("5353,5360-5399,6000,7000,9000"));
    let reported = agent.wait_for_log("not applied", Duration::from_secs(15));
    let still_live = (
        tcp_connect(&bed.web, &bed.app, false, 8080, Duration::from_secs(1)),
        zonewall_integration_tests::enforced::udp_delivered(&bed.web, &bed.app, false, 5360, 2),
    );
    assert!(agent.stop().success());
    let line = reported.expect("the agent reports the policy that does not fit");
    assert!(
        line.contains("holds") && line.contains("previous policy stays live"),
        "{line}"
    );
    assert_eq!(
        still_live,
        (Connect::Established, 0),
        "the previous policy is enforced, the new one is not"
    );
}

#[test]
fn a_policy_edit_is_live_within_a_second_and_a_broken_file_changes_nothing() {
    if !privileged("a_policy_edit_is_live_within_a_second_and_a_broken_file_changes_nothing") {
        return;
    }
    let bed = Bed::new();
    let agent = bed.start(&[]);
    let edit = |text: &str| {
        text.replace(
            "<tcp><port>8080</port></tcp>",
            "<tcp><port>8090</port></tcp>",
        )
    };
    bed.edit_config(edit);
    let edited_at = Instant::now();
    // The agent says so once the new generation is switched in.
    let reloaded = agent.wait_for_log("policy reloaded", Duration::from_secs(10));
    let live_after = reloaded.map(|_| edited_at.elapsed());
    let now_allowed = tcp_connect(&bed.web, &bed.app, false, 8090, Duration::from_secs(1));
    // A truncated file: reported, and the edited policy stays.
    bed.edit_config(|text| text[..text.len() / 2].to_owned());
    let reported = agent.wait_for_log("not applied", Duration::from_secs(15));
    let after_broken = tcp_connect(&bed.web, &bed.app, false, 8090, Duration::from_secs(1));
    assert!(agent.stop().success());
    let live_after = live_after.expect("the edited policy went live");
    eprintln!("policy edit live after {live_after:?}");
    assert!(live_after < Duration::from_secs(1), "{live_after:?}");
    assert_eq!(now_allowed, Connect::Established, "the edit is enforced");
    let line = reported.expect("the broken file is reported");
    assert!(
        line.contains(&bed.config.display().to_string()),
        "names the file: {line}"
    );
    assert_eq!(
        after_broken,
        Connect::Established,
        "the last good policy stays"
    );
}

#[test]
fn a_pinned_layout_of_another_version_is_taken_over_without_a_gap() {
    if !privileged("a_pinned_layout_of_another_version_is_taken_over_without_a_gap") {
        return;
    }
    let bed = Bed::new();
    assert!(bed.start(&[]).stop().success());
    // What an agent of an older layout version would have left: its pins under another
    // version directory, its programs still attached through them.
    let root = bed.topology.pin_root.join("zonewall");
    let current = root.join(format!("v{}", zonewall_common::MAP_ABI_VERSION));
    let older = root.join("v0");
    std::fs::rename(&current, &older).expect("move the pins to an older layout version");
    let long_lived = LongLived::start(&bed.web, &bed.app, 8080);
    let prober = DeniedProber::start(&bed.web, &bed.app, 8081);
    std::thread::sleep(Duration::from_millis(300));
    let agent = bed.start(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let (exchanges, failures) = long_lived.finish();
    let (attempts, passed) = prober.finish();
    assert!(agent.stop().success());
    assert_eq!(failures, 0, "the allowed connection survived the takeover");
    assert!(exchanges > 10);
    assert_eq!(
        passed, 0,
        "no denied connection got through: {attempts} attempts"
    );
    assert!(!older.exists(), "the older layout's pins were retired");
    let links = std::fs::read_dir(current.join("links"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        links, 6,
        "both hooks of the three pods are pinned under the current layout"
    );
}

#[test]
fn pins_without_the_caches_are_adopted_and_get_them() {
    if !privileged("pins_without_the_caches_are_adopted_and_get_them") {
        return;
    }
    use zonewall::datapath::{Datapath, PinLayout};
    use zonewall_common::map_names::{FLOW_CACHE, IDENTITY_CACHE, POLICY_CACHE};
    // A layout pinned by a build before the per-CPU caches: the same maps, those missing.
    let topology = Topology::new(1);
    let layout = PinLayout::new(topology.pin_root.join("zonewall"));
    let first = Datapath::load(&layout).expect("load the programs");
    let caches = [FLOW_CACHE, IDENTITY_CACHE, POLICY_CACHE].map(|name| layout.maps().join(name));
    for cache in &caches {
        std::fs::remove_file(cache).expect("unpin a cache");
    }
    let adopted = Datapath::load(&layout).expect("adopt the older pins");
    for cache in &caches {
        assert!(
            cache.exists(),
            "the adopting agent pins {}",
            cache.display()
        );
    }
    drop((first, adopted));
    Datapath::cleanup(&layout).expect("cleanup");
}
