//! `cargo xtask bench flows`: kernel flow events to CEF lines delivered over TCP. Denied
//! packets with distinct (source, destination port) are run through `zw_to_workload` with
//! `BPF_PROG_TEST_RUN` at a fixed rate, so every one produces a ring-buffer event (the first
//! attempt of a kind is reported at once); one thread reads the ring buffer, enriches, formats
//! CEF and hands the lines to the agent's TCP sink (octet counting) on the same thread; a
//! receiver on loopback counts the frames and measures event time to arrival. Reported: the
//! delivered rate, the pipeline thread's CPU time per second of wall time, the latency, and
//! every record lost (ring buffer full, sink queue full) by reason.

use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, ensure};
use tokio_util::sync::CancellationToken;
use zonewall::{
    datapath::{Datapath, Dataplane, DesiredTables},
    flows::{
        Format,
        sink::{RuntimeOptions, Sink, SinkConfig, framing::FrameDecoder},
    },
    inventory::Inventory,
    node::{self, PolicyInput},
    policy::resource::Mode,
};
use zonewall_common::{counter, program_names};

use super::test_run::{self, TCP_SYN, TcpPacket};

/// Records the kernel is asked to produce, and at what rate.
const RECORDS: usize = 300_000;
const RATE_PER_SECOND: usize = 120_000;
/// Packets per pacing step (every 10 ms).
const STEP: usize = RATE_PER_SECOND / 100;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 12);

fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; CLOCK_THREAD_CPUTIME_ID always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The `rt=` field (event time, ms since the epoch) of a CEF line: the first extension field,
/// right after the header's last `|`.
fn event_millis(line: &str) -> Option<u64> {
    let start = line.find("|rt=").or_else(|| line.find(" rt="))? + 4;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

struct Received {
    frames: usize,
    latencies_ms: Vec<u64>,
}

fn receive(listener: TcpListener, done: Arc<AtomicBool>) -> anyhow::Result<Received> {
    let (mut stream, _) = listener.accept().context("accept the sink's connection")?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut decoder = FrameDecoder::new(64 * 1024);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = Received {
        frames: 0,
        latencies_ms: Vec::with_capacity(RECORDS),
    };
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => decoder.push(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e).context("read from the sink"),
        }
        let arrived = unix_millis();
        while let Some(frame) = decoder.next_frame().context("octet-counted framing")? {
            received.frames += 1;
            if let Some(sent) = event_millis(&String::from_utf8_lossy(&frame)) {
                received.latencies_ms.push(arrived.saturating_sub(sent));
            }
        }
    }
    Ok(received)
}

pub fn run() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let inventory = Inventory::from_yaml(
        &format!(
            "external_zone: untrust\nendpoints:\n  - {{name: web, zone: dmz, ips: [{CLIENT}]}}\n  - {{name: app, zone: trusted, ips: [{SERVER}]}}\n"
        ),
        "bench inventory",
    )?;
    let policies = node::load_policies(&PolicyInput::Panos {
        config: root.join("tests/fixtures/zones.xml"),
        device_group: None,
        mode: Mode::Enforce,
    })?;
    let compiled = node::compile(&inventory, &policies, None)?;
    let pins = super::measure::Pins::named("flows");
    let mut datapath = Datapath::load(&pins.0).context("loading the eBPF programs")?;
    let desired = DesiredTables::new(&compiled, &[(1, IpAddr::V4(CLIENT))], true);
    datapath.apply(&desired)?;
    let mut reader = datapath.take_events()?;
    let enricher = node::enricher(
        &node::Snapshot {
            inventory,
            compiled,
            workloads: Vec::new(),
        },
        &Default::default(),
        "bench-node",
    );

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || receive(listener, done))
    };
    let config: SinkConfig = format!("cef+tcp://{address}?filter=all&queue=65536")
        .parse()
        .context("sink configuration")?;

    // The producer: distinct denied SYNs from the internet to app, paced.
    let produced = Arc::new(AtomicBool::new(false));
    let program = datapath
        .program_fd(program_names::TO_WORKLOAD)?
        .try_clone_to_owned()?;
    let before = datapath.counters()?;
    let started = Instant::now();
    let pipeline_done = produced.clone();
    let pipeline = std::thread::scope(|scope| -> anyhow::Result<_> {
        let consumer = scope.spawn(move || -> anyhow::Result<(usize, Duration, Duration, _)> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let cpu_before = thread_cpu();
                let wall = Instant::now();
                let token = CancellationToken::new();
                let sink = Sink::spawn(&config, RuntimeOptions::default(), token.clone())?;
                let handle = sink.handle();
                let mut events = Vec::new();
                let mut records = 0usize;
                let mut idle_since: Option<Instant> = None;
                loop {
                    reader.drain(&mut events);
                    if events.is_empty() {
                        if pipeline_done.load(Ordering::SeqCst) {
                            let since = *idle_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(500) {
                                break;
                            }
                        }
                    } else {
                        idle_since = None;
                    }
                    for event in events.drain(..) {
                        let record = enricher.record(&event);
                        let _ = handle.try_send(Format::Cef.format(&record));
                        records += 1;
                    }
                    // The agent reads the ring buffer every 100 ms; so does this loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                token.cancel();
                let counters = sink.counters().clone();
                sink.join().await;
                Ok((records, thread_cpu() - cpu_before, wall.elapsed(), counters))
            })
        });
        let mut sent = 0usize;
        let mut next = Instant::now();
        'produce: for port in 1000u16.. {
            for host in 1..=250u8 {
                if sent == RECORDS {
                    break 'produce;
                }
                let packet = TcpPacket {
                    source: Ipv4Addr::new(203, 0, 113, host),
                    destination: SERVER,
                    source_port: 40_000,
                    destination_port: port,
                    flags: TCP_SYN,
                };
                let run = test_run::run(std::os::fd::AsFd::as_fd(&program), &packet.frame(), 1)?;
                ensure!(
                    run.retval == 2,
                    "a denied SYN must be dropped, got {}",
                    run.retval
                );
                sent += 1;
                if sent.is_multiple_of(STEP) {
                    next += Duration::from_millis(10);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        }
        produced.store(true, Ordering::SeqCst);
        let produce_seconds = started.elapsed().as_secs_f64();
        let consumed = consumer
            .join()
            .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))??;
        Ok((sent, produce_seconds, consumed))
    })?;
    done.store(true, Ordering::SeqCst);
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    let (sent, produce_seconds, (records, cpu, wall, sink_counters)) = pipeline;
    let delta = datapath.counters()?.since(&before);
    let lost_in_kernel = delta.get(counter::EVENTS_LOST);
    let snapshot = sink_counters.snapshot();
    let mut latencies = received.latencies_ms.clone();
    latencies.sort_unstable();
    ensure!(
        latencies.len() == received.frames,
        "every delivered record must carry its event time: {} of {}",
        latencies.len(),
        received.frames
    );
    let percentile = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() - 1) as f64 * p) as usize]
    };
    let rate = received.frames as f64 / produce_seconds.max(f64::EPSILON);
    let cores = cpu.as_secs_f64() / wall.as_secs_f64();
    println!();
    println!("bench flows: kernel event -> CEF over TCP (octet counting) to a loopback receiver");
    println!(
        "  denied SYNs run through zw_to_workload: {sent} at {RATE_PER_SECOND}/s ({produce_seconds:.2} s)"
    );
    println!("  ring-buffer events read and formatted:  {records}");
    println!("  lost in the kernel (ring buffer full):  {lost_in_kernel}");
    println!(
        "  dropped by the sink: {} ({:?})",
        snapshot.dropped_total(),
        snapshot
    );
    println!(
        "  delivered to the receiver:              {}",
        received.frames
    );
    println!("  delivered rate:                         {rate:.0} records/s");
    println!(
        "  pipeline thread CPU:                    {:.2} s over {:.2} s = {cores:.2} of a core",
        cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  event to delivery (ms, the agent reads every 100 ms): p50 {} p99 {} max {}",
        percentile(0.5),
        percentile(0.99),
        percentile(1.0)
    );
    let accounted = received.frames as u64 + snapshot.dropped_total() + lost_in_kernel;
    println!(
        "  accounted for: {accounted} of {sent} ({})",
        if accounted == sent as u64 {
            "every record delivered or counted"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "  targets: >= 100,000 records/s: {}; <= 0.5 core: {}; p99 < 1 s: {}",
        if rate >= 100_000.0 { "met" } else { "NOT met" },
        if cores <= 0.5 { "met" } else { "NOT met" },
        if percentile(0.99) < 1000 {
            "met"
        } else {
            "NOT met"
        }
    );
    ensure!(
        accounted == sent as u64,
        "records unaccounted for: sent {sent}, delivered {}, dropped {}, lost {lost_in_kernel}",
        received.frames,
        snapshot.dropped_total()
    );
    drop(datapath);
    drop(pins);
    Ok(())
}
