//! Sinks against a real receiver: rsyslogd from Debian, started by each test in the
//! foreground on free loopback ports with its own configuration, and killed afterwards.
//! Skipped with a printed reason when rsyslogd (or its GnuTLS driver) is missing, unless
//! `ZONEWALL_REQUIRE_PRIVILEGED=1`, in which case a missing peer fails the test.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure is a broken test environment"
)]

#[path = "sink_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Pki, fast_options, path_str, record, spawn, wait_until};
use zonewall::flows::sink::CountersSnapshot;

const RECORDS: usize = 300;

/// Returns false (after printing why) when the test must be skipped.
fn rsyslog_available(need_tls: bool) -> bool {
    let require = std::env::var("ZONEWALL_REQUIRE_PRIVILEGED").is_ok_and(|value| value == "1");
    let mut missing = None;
    if Command::new("rsyslogd")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| !status.success())
        .unwrap_or(true)
    {
        missing = Some("rsyslogd is not installed (apt-get install -y rsyslog)");
    } else if need_tls && gtls_driver().is_none() {
        missing =
            Some("rsyslog's GnuTLS driver is not installed (apt-get install -y rsyslog-gnutls)");
    }
    match missing {
        None => true,
        Some(reason) if require => panic!("ZONEWALL_REQUIRE_PRIVILEGED=1 but {reason}"),
        Some(reason) => {
            // Straight to stdout: libtest captures `println!` of passing tests, and
            // `cargo xtask test` counts these lines as skips.
            let test = std::thread::current()
                .name()
                .unwrap_or("rsyslog test")
                .to_owned();
            let line = format!("SKIPPED {test}: {reason} (cargo xtask setup installs it)\n");
            let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
            false
        }
    }
}

fn gtls_driver() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/rsyslog",
        "/usr/lib/aarch64-linux-gnu/rsyslog",
        "/usr/lib/rsyslog",
    ]
    .iter()
    .map(|dir| Path::new(dir).join("lmnsd_gtls.so"))
    .find(|path| path.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running rsyslogd; killed and reaped on drop, even when the test panics.
struct Rsyslogd {
    child: Child,
    dir: tempfile::TempDir,
    output: PathBuf,
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rsyslogd {
    /// Starts rsyslogd with `inputs` (config text) and waits until `ready_port` accepts TCP.
    fn start(inputs: &str, ready_port: u16) -> Rsyslogd {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("received.log");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        // `%rawmsg%` is the message exactly as received (frame payload or datagram).
        let config = format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k")
{inputs}
template(name="zonewallRaw" type="string" string="%rawmsg%\n")
action(type="omfile" file="{output}" template="zonewallRaw")
"#,
            work = path_str(&work),
            output = path_str(&output),
        );
        let config_path = dir.path().join("rsyslog.conf");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("rsyslogd.log")).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        let mut daemon = Rsyslogd { child, dir, output };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", ready_port)).is_ok() {
                break;
            }
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("rsyslogd exited with {status}: {}", daemon.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd not ready: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The readiness probe above opened and closed one connection; give rsyslogd a moment
        // to have every input (UDP included) active.
        std::thread::sleep(Duration::from_millis(200));
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.log")).unwrap_or_default()
    }

    fn received(&self) -> Vec<String> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Syslog-framed records (RFC 5424 header + a CEF body) so rsyslog parses them as intended.
fn syslog_record(sequence: usize) -> String {
    format!(
        "<110>1 2026-05-20T10:00:00.000Z node-1 zonewall - flow - {}",
        record(sequence)
    )
}

async fn send_and_check(url: &str, daemon: &Rsyslogd) -> CountersSnapshot {
    let (sink, token) = spawn(url, fast_options());
    let handle = sink.handle();
    for sequence in 0..RECORDS {
        handle.try_send(syslog_record(sequence)).unwrap();
        if sequence % 50 == 0 {
            // Keep the UDP burst within what a receiver's socket buffer holds.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let counters = Arc::clone(sink.counters());
    wait_until("delivery", Duration::from_secs(15), || {
        counters.delivered() == RECORDS as u64
    })
    .await;
    token.cancel();
    sink.join().await;
    wait_until(
        "rsyslog wrote every record",
        Duration::from_secs(15),
        || daemon.received().len() >= RECORDS,
    )
    .await;
    let received = daemon.received();
    let expected: Vec<String> = (0..RECORDS).map(syslog_record).collect();
    assert_eq!(
        received,
        expected,
        "intact and in order; rsyslogd log: {}",
        daemon.log()
    );
    counters.snapshot()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_over_udp_and_tcp() {
    if !rsyslog_available(false) {
        return;
    }
    let (udp_port, tcp_port) = (free_port(), free_port());
    let udp_daemon = Rsyslogd::start(
        &format!(
            r#"module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")"#
        ),
        tcp_port,
    );
    let snapshot = send_and_check(
        &format!("cef+udp://127.0.0.1:{udp_port}?queue=1000"),
        &udp_daemon,
    )
    .await;
    assert_eq!(snapshot.dropped_total(), 0);
    drop(udp_daemon);

    let (tcp_port, spare_port) = (free_port(), free_port());
    let tcp_daemon = Rsyslogd::start(
        &format!(
            r#"module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
input(type="imtcp" address="127.0.0.1" port="{spare_port}")"#
        ),
        spare_port,
    );
    let snapshot = send_and_check(
        &format!("cef+tcp://127.0.0.1:{tcp_port}?queue=1000"),
        &tcp_daemon,
    )
    .await;
    assert_eq!((snapshot.dropped_total(), snapshot.connects), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_over_mutual_tls() {
    if !rsyslog_available(true) {
        return;
    }
    let pki = Pki::new();
    let (tls_port, ready_port) = (free_port(), free_port());
    let daemon = Rsyslogd::start(
        &format!(
            r#"global(defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
input(type="imtcp" address="127.0.0.1" port="{tls_port}")
input(type="imtcp" address="127.0.0.1" port="{ready_port}")"#,
            ca = path_str(&pki.ca),
            cert = path_str(&pki.server_cert),
            key = path_str(&pki.server_key),
        ),
        ready_port,
    );
    let url = format!(
        "cef+tls://localhost:{tls_port}?ca={}&cert={}&key={}",
        path_str(&pki.ca),
        path_str(&pki.client_cert),
        path_str(&pki.client_key)
    );
    let snapshot = send_and_check(&url, &daemon).await;
    assert_eq!((snapshot.dropped_total(), snapshot.connects), (0, 1));

    // The same receiver, verified against the wrong CA: nothing is sent.
    let before = daemon.received().len();
    let url = format!(
        "cef+tls://localhost:{tls_port}?ca={}",
        path_str(&pki.other_ca)
    );
    let (sink, token) = spawn(&url, fast_options());
    sink.handle().try_send(syslog_record(0)).unwrap();
    let counters = Arc::clone(sink.counters());
    wait_until("refused handshakes", Duration::from_secs(10), || {
        counters.connect_failures() >= 1
    })
    .await;
    token.cancel();
    sink.join().await;
    assert_eq!(counters.delivered(), 0);
    assert_eq!(daemon.received().len(), before);
}
