//! Sinks against in-process peers on loopback: a UDP socket, an octet-counting TCP
//! listener, a rustls TLS listener, the file system, and failure cases.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure is a broken test environment"
)]

#[path = "sink_common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Pki, fast_options, path_str, record, sequence_of, spawn, wait_until};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use zonewall::flows::sink::framing::FrameDecoder;
use zonewall::flows::sink::{DropReason, RuntimeOptions, Sink, SinkConfig};

type Received = Arc<Mutex<Vec<String>>>;

/// Reads octet-counted frames from every accepted connection into `received` until the
/// stream ends or `stop` is cancelled.
async fn read_frames<S: tokio::io::AsyncRead + Unpin>(mut stream: S, received: Received) {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        decoder.push(&buffer[..read]);
        while let Some(frame) = decoder.next_frame().expect("valid framing") {
            received
                .lock()
                .unwrap()
                .push(String::from_utf8(frame).expect("utf-8"));
        }
    }
}

fn spawn_tcp_peer(listener: TcpListener, stop: CancellationToken) -> Received {
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = accepted.unwrap();
            let sink = Arc::clone(&sink);
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = read_frames(stream, sink) => {}
                }
            });
        }
    });
    received
}

async fn finish(sink: Sink, token: CancellationToken) -> zonewall::flows::sink::CountersSnapshot {
    token.cancel();
    let counters = Arc::clone(sink.counters());
    sink.join().await;
    let snapshot = counters.snapshot();
    assert_eq!(
        snapshot.offered,
        snapshot.delivered + snapshot.dropped_total(),
        "every record delivered or counted: {snapshot:?}"
    );
    assert_eq!(snapshot.queue_depth, 0);
    snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sends_one_datagram_per_record_and_drops_oversized() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = peer.local_addr().unwrap().port();
    let (sink, token) = spawn(
        &format!("cef+udp://127.0.0.1:{port}?max_message=200&queue=1000"),
        fast_options(),
    );
    let handle = sink.handle();
    for sequence in 0..50 {
        handle.try_send(record(sequence)).unwrap();
    }
    assert_eq!(handle.try_send("x".repeat(201)), Err(DropReason::Oversized));
    let mut buffer = vec![0u8; 65_536];
    for sequence in 0..50 {
        let length = tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut buffer))
            .await
            .expect("datagram")
            .unwrap();
        let datagram = std::str::from_utf8(&buffer[..length]).unwrap();
        assert_eq!(
            datagram,
            record(sequence),
            "no framing, no newline, in order"
        );
    }
    let snapshot = finish(sink, token).await;
    assert_eq!(snapshot.delivered, 50);
    assert_eq!(snapshot.dropped(DropReason::Oversized), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_truncates_at_a_character_boundary_when_asked() {
    let peer = UdpSocket::bind("[::1]:0").await.unwrap();
    let port = peer.local_addr().unwrap().port();
    let (sink, token) = spawn(
        &format!("json+udp://[::1]:{port}?max_message=5&oversize=truncate"),
        fast_options(),
    );
    sink.handle().try_send("abcdé-tail".to_owned()).unwrap();
    let mut buffer = [0u8; 64];
    let length = tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buffer[..length], b"abcd", "é would not fit whole");
    let snapshot = finish(sink, token).await;
    assert_eq!((snapshot.delivered, snapshot.truncated), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_frames_with_octet_counting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let received = spawn_tcp_peer(listener, stop.clone());
    let (sink, token) = spawn(
        &format!("cef+tcp://127.0.0.1:{port}?queue=5000"),
        fast_options(),
    );
    let handle = sink.handle();
    // A record with an embedded newline stays one frame (octet counting, not LF framing).
    handle.try_send("line one\nline two".to_owned()).unwrap();
    for sequence in 0..2000 {
        handle.try_send(record(sequence)).unwrap();
    }
    wait_until("2001 frames", Duration::from_secs(10), || {
        received.lock().unwrap().len() == 2001
    })
    .await;
    let snapshot = finish(sink, token).await;
    stop.cancel();
    let received = received.lock().unwrap();
    assert_eq!(received[0], "line one\nline two");
    for (index, line) in received[1..].iter().enumerate() {
        assert_eq!(line, &record(index));
    }
    assert_eq!(snapshot.delivered, 2001);
    assert_eq!(snapshot.connects, 1);
}

fn tls_acceptor(pki: &Pki, require_client_cert: bool) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let config = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap()
    } else {
        builder
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS receiver; returns the frames received and how many handshakes failed.
async fn spawn_tls_peer(
    acceptor: tokio_rustls::TlsAcceptor,
    stop: CancellationToken,
) -> (u16, Received, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let failures = Arc::new(Mutex::new(0));
    let (sink, failed) = (Arc::clone(&received), Arc::clone(&failures));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, _) = accepted.unwrap();
            let (acceptor, sink, failed) =
                (acceptor.clone(), Arc::clone(&sink), Arc::clone(&failed));
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(stream) => read_frames(stream, sink).await,
                    Err(_) => *failed.lock().unwrap() += 1,
                }
            });
        }
    });
    (port, received, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_and_presents_a_client_certificate() {
    let pki = Pki::new();
    let stop = CancellationToken::new();
    let (port, received, _) = spawn_tls_peer(tls_acceptor(&pki, true), stop.clone()).await;
    let url = format!(
        "cef+tls://localhost:{port}?ca={}&cert={}&key={}",
        path_str(&pki.ca),
        path_str(&pki.client_cert),
        path_str(&pki.client_key)
    );
    let (sink, token) = spawn(&url, fast_options());
    for sequence in 0..500 {
        sink.handle().try_send(record(sequence)).unwrap();
    }
    wait_until("500 records over TLS", Duration::from_secs(10), || {
        received.lock().unwrap().len() == 500
    })
    .await;
    let snapshot = finish(sink, token).await;
    stop.cancel();
    assert_eq!(snapshot.delivered, 500);
    let received = received.lock().unwrap();
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, line)| *line == record(i))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_an_ip_address_checks_the_ip_san() {
    let pki = Pki::new();
    let stop = CancellationToken::new();
    let (port, received, _) = spawn_tls_peer(tls_acceptor(&pki, false), stop.clone()).await;
    let url = format!("leef+tls://127.0.0.1:{port}?ca={}", path_str(&pki.ca));
    let (sink, token) = spawn(&url, fast_options());
    sink.handle().try_send(record(7)).unwrap();
    wait_until("one record", Duration::from_secs(10), || {
        received.lock().unwrap().len() == 1
    })
    .await;
    finish(sink, token).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_server_signed_by_another_ca() {
    let pki = Pki::new();
    let stop = CancellationToken::new();
    let (port, received, failures) = spawn_tls_peer(tls_acceptor(&pki, false), stop.clone()).await;
    let url = format!("cef+tls://localhost:{port}?ca={}", path_str(&pki.other_ca));
    let (sink, token) = spawn(&url, fast_options());
    for sequence in 0..10 {
        sink.handle().try_send(record(sequence)).unwrap();
    }
    let counters = Arc::clone(sink.counters());
    wait_until("two failed handshakes", Duration::from_secs(10), || {
        counters.connect_failures() >= 2
    })
    .await;
    let snapshot = finish(sink, token).await;
    stop.cancel();
    assert!(
        received.lock().unwrap().is_empty(),
        "nothing sent in clear or to an unverified peer"
    );
    assert!(*failures.lock().unwrap() >= 2);
    assert_eq!(snapshot.delivered, 0);
    assert_eq!(snapshot.connects, 0);
    assert_eq!(snapshot.dropped(DropReason::Shutdown), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_certificate_is_refused_by_a_mutual_tls_peer() {
    let pki = Pki::new();
    let stop = CancellationToken::new();
    let (port, received, _) = spawn_tls_peer(tls_acceptor(&pki, true), stop.clone()).await;
    let url = format!("cef+tls://localhost:{port}?ca={}", path_str(&pki.ca));
    let (sink, token) = spawn(&url, fast_options());
    for sequence in 0..5 {
        sink.handle().try_send(record(sequence)).unwrap();
    }
    let counters = Arc::clone(sink.counters());
    wait_until("refused sessions", Duration::from_secs(10), || {
        counters.connect_failures() >= 2
    })
    .await;
    let snapshot = finish(sink, token).await;
    stop.cancel();
    assert!(received.lock().unwrap().is_empty());
    assert_eq!(snapshot.delivered, 0, "{snapshot:?}");
    assert_eq!(snapshot.dropped(DropReason::Shutdown), 5);
}

#[test]
fn tls_setup_errors_are_reported_at_start() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let pki = Pki::new();
    let spawn_error = |url: String| {
        let config: SinkConfig = url.parse().unwrap();
        Sink::spawn(&config, RuntimeOptions::default(), CancellationToken::new())
            .unwrap_err()
            .to_string()
    };
    let message = spawn_error("cef+tls://h:1?ca=/nonexistent/ca.pem".to_owned());
    assert!(
        message.contains("/nonexistent/ca.pem") && message.contains("CA certificates"),
        "{message}"
    );
    let message = spawn_error(format!("cef+tls://h:1?ca={}", path_str(&pki.server_key)));
    assert!(message.contains("holds no certificate"), "{message}");
    let message = spawn_error(format!(
        "cef+tls://h:1?ca={}&cert={}&key={}",
        path_str(&pki.ca),
        path_str(&pki.client_cert),
        path_str(&pki.server_key)
    ));
    assert!(message.contains("cannot be used together"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_rotates_under_load_and_keeps_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let url = format!(
        "json+file://{}?max_bytes=20000&keep=3&queue=20000",
        path_str(&path)
    );
    let (sink, token) = spawn(&url, fast_options());
    let handle = sink.handle();
    let total = 10_000;
    for sequence in 0..total {
        handle.try_send(record(sequence)).unwrap();
        if sequence % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let counters = Arc::clone(sink.counters());
    wait_until("all written", Duration::from_secs(20), || {
        counters.delivered() == total as u64
    })
    .await;
    let snapshot = finish(sink, token).await;
    assert_eq!(snapshot.delivered, total as u64);

    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "flows.jsonl",
            "flows.jsonl.1",
            "flows.jsonl.2",
            "flows.jsonl.3"
        ]
    );
    // Oldest to newest, the kept records are the newest ones, contiguous and in order.
    let mut lines = Vec::new();
    for name in [
        "flows.jsonl.3",
        "flows.jsonl.2",
        "flows.jsonl.1",
        "flows.jsonl",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.len() <= 20_000, "{name} is {} bytes", text.len());
        assert!(text.ends_with('\n'));
        lines.extend(text.lines().map(sequence_of));
    }
    assert_eq!(*lines.last().unwrap(), total - 1);
    let first = lines[0];
    assert_eq!(lines, (first..total).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_appends_to_an_existing_file_and_reopens_after_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("flows.jsonl");
    // The directory does not exist yet: the sink retries with backoff instead of failing.
    let url = format!("json+file://{}", path_str(&path));
    let (sink, token) = spawn(&url, fast_options());
    sink.handle().try_send(record(1)).unwrap();
    let counters = Arc::clone(sink.counters());
    wait_until("a failed open", Duration::from_secs(5), || {
        counters.connect_failures() >= 1
    })
    .await;
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    wait_until("delivery", Duration::from_secs(5), || {
        counters.delivered() == 1
    })
    .await;
    finish(sink, token).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", record(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_reconnects_after_the_peer_restarts_and_loses_nothing_uncounted() {
    const TOTAL: usize = 900;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let first_stop = CancellationToken::new();
    let first = spawn_tcp_peer(listener, first_stop.clone());
    // The queue holds 150 records: more than that arrive while the receiver is down.
    let (sink, token) = spawn(&format!("cef+tcp://{address}?queue=150"), fast_options());
    let handle = sink.handle();
    for sequence in 0..100 {
        handle.try_send(record(sequence)).unwrap();
    }
    wait_until("first 100", Duration::from_secs(10), || {
        first.lock().unwrap().len() == 100
    })
    .await;
    // The receiver goes away for 30 s: listener and connection closed.
    first_stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // More than the queue (150) and the batch the sink may have taken out of it meanwhile
    // (at most 512 records) can hold: some are refused, whatever the timing.
    let mut refused = 0;
    for sequence in 100..TOTAL {
        // Beyond the queue bound the record is refused and counted, never blocking.
        if handle.try_send(record(sequence)).is_err() {
            refused += 1;
        }
    }
    let counters = Arc::clone(sink.counters());
    wait_until("failed reconnects", Duration::from_secs(5), || {
        counters.connect_failures() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let listener = TcpListener::bind(address).await.unwrap();
    let second_stop = CancellationToken::new();
    let second = spawn_tcp_peer(listener, second_stop.clone());
    wait_until(
        "all records delivered or counted",
        Duration::from_secs(10),
        || {
            let snapshot = counters.snapshot();
            snapshot.delivered + snapshot.dropped_total() == TOTAL as u64
        },
    )
    .await;
    let snapshot = finish(sink, token).await;
    let first = first.lock().unwrap().clone();
    wait_until("second peer read all", Duration::from_secs(5), || {
        (first.len() + second.lock().unwrap().len()) as u64 == snapshot.delivered
    })
    .await;
    second_stop.cancel();
    let mut all: Vec<usize> = first.iter().map(|l| sequence_of(l)).collect();
    all.extend(second.lock().unwrap().iter().map(|l| sequence_of(l)));
    // In order, no duplicates; what the queue held while the peer was down is delivered,
    // the rest is counted as dropped for a full queue.
    assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "{all:?}");
    assert!(refused > 0, "800 records must overflow a queue of 150");
    assert_eq!(
        snapshot.dropped(zonewall::flows::sink::DropReason::QueueFull),
        refused,
        "{snapshot:?}"
    );
    assert_eq!(snapshot.delivered + refused, TOTAL as u64, "{snapshot:?}");
    assert!(snapshot.delivered >= 100 + 150, "{snapshot:?}");
    assert_eq!(all.len() as u64, snapshot.delivered);
    assert!(snapshot.connects >= 2);
}

#[test]
fn a_flood_fills_the_queue_and_every_record_is_counted() {
    // A current-thread runtime: the sink task cannot run while the flood is offered, so the
    // expected counts are exact.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Nothing listens on this port: the sink keeps reconnecting.
        let closed_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut options = fast_options();
        options.shutdown_deadline = Duration::from_millis(300);
        let (sink, token) = spawn(
            &format!("cef+tcp://127.0.0.1:{closed_port}?queue=100"),
            options,
        );
        let handle = sink.handle();
        let started = std::time::Instant::now();
        let mut refused = 0;
        for sequence in 0..100_000 {
            if handle.try_send(record(sequence)) == Err(DropReason::QueueFull) {
                refused += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "try_send never waits"
        );
        assert_eq!(refused, 99_900);
        assert_eq!(sink.counters().queue_depth(), 100);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snapshot = finish(sink, token).await;
        assert_eq!(snapshot.dropped(DropReason::QueueFull), 99_900);
        assert_eq!(snapshot.dropped(DropReason::Shutdown), 100);
        assert_eq!(snapshot.delivered, 0);
        // After shutdown, offers are refused and counted too.
        assert_eq!(handle.try_send(record(0)), Err(DropReason::Shutdown));
        assert_eq!(handle.counters().dropped(DropReason::Shutdown), 101);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_reads_does_not_block_the_flow_path() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold the connection without reading.
    let held = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    });
    let mut options = fast_options();
    options.write_timeout = Duration::from_millis(500);
    options.shutdown_deadline = Duration::from_millis(500);
    let (sink, token) = spawn(&format!("cef+tcp://127.0.0.1:{port}?queue=1000"), options);
    let handle = sink.handle();
    let big = "x".repeat(60_000);
    let started = std::time::Instant::now();
    for _ in 0..2000 {
        let _ = handle.try_send(big.clone());
        tokio::task::yield_now().await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let counters = Arc::clone(sink.counters());
    wait_until("a write timeout", Duration::from_secs(10), || {
        counters.dropped(DropReason::WriteError) > 0
    })
    .await;
    let snapshot = finish(sink, token).await;
    held.abort();
    assert!(snapshot.dropped(DropReason::QueueFull) > 0, "{snapshot:?}");
    assert!(snapshot.delivered < 2000);
}

#[tokio::test]
async fn stdout_sink_delivers() {
    let (sink, token) = spawn("cef+stdout?filter=all", fast_options());
    sink.handle()
        .try_send("zonewall stdout sink test line".to_owned())
        .unwrap();
    let counters = Arc::clone(sink.counters());
    wait_until("stdout write", Duration::from_secs(5), || {
        counters.delivered() == 1
    })
    .await;
    finish(sink, token).await;
}
