//! The zone policy enforced in the kernel on real traffic: pods in four zones on one node, an
//! external network with a database, the policy translated from `fixtures/zones.xml`. Every
//! test checks the counters the kernel keeps, read back through the agent's datapath.

use std::time::Duration;

use zonewall::policy::resource::Mode;
use zonewall_common::counter;
use zonewall_integration_tests::{
    enforced::{Connect, Enforced, ping, tcp_connect, tcp_talks, udp_delivered, udp_refused},
    packet, privileged,
};

const PODS: [(&str, &str); 5] = [
    ("web", "dmz"),
    ("app", "trusted"),
    ("app-2", "trusted"),
    ("vault", "restricted"),
    ("web-2", "dmz"),
];
const WEB: usize = 0;
const APP: usize = 1;
const APP_2: usize = 2;
const VAULT: usize = 3;

const SHORT: Duration = Duration::from_millis(400);

#[test]
fn zones_decide_tcp_udp_and_icmp_in_both_families() {
    if !privileged("zones_decide_tcp_udp_and_icmp_in_both_families") {
        return;
    }
    let node = Enforced::new(&PODS, Mode::Enforce);
    let (web, app, app2, vault) = (
        node.pod(WEB),
        node.pod(APP),
        node.pod(APP_2),
        node.pod(VAULT),
    );
    let (internet, database) = (node.internet(), node.database());
    let before = node.counters();
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        // Intra-zone: allowed (the firewall's intrazone default), replies included.
        assert!(
            tcp_talks(&app, &app2, v6, 7000),
            "{family}: trusted -> trusted"
        );
        // dmz -> trusted: exactly tcp/8080 and udp/5353.
        assert!(
            tcp_talks(&web, &app, v6, 8080),
            "{family}: dmz -> trusted tcp/8080"
        );
        assert_eq!(
            tcp_connect(&web, &app, v6, 8081, SHORT),
            Connect::TimedOut,
            "{family}: dmz -> trusted tcp/8081"
        );
        assert_eq!(
            udp_delivered(&web, &app, v6, 5353, 3),
            3,
            "{family}: udp/5353"
        );
        assert_eq!(
            udp_delivered(&web, &app, v6, 5354, 3),
            0,
            "{family}: udp/5354"
        );
        assert!(
            !tcp_talks(&app, &web, v6, 8080),
            "{family}: trusted -> dmz denied"
        );
        // The database outside the cluster: from trusted only.
        assert!(
            tcp_talks(&app, &database, v6, 5432),
            "{family}: trusted -> database"
        );
        assert!(
            ping(&app, database.ip(v6)),
            "{family}: trusted pings the database"
        );
        assert_eq!(
            tcp_connect(&web, &database, v6, 5432, SHORT),
            Connect::TimedOut,
            "{family}: dmz -> database"
        );
        assert!(
            !ping(&web, database.ip(v6)),
            "{family}: dmz cannot ping the database"
        );
        // The internet reaches the web tier on tcp/80 only; replies pass.
        assert!(
            tcp_talks(&internet, &web, v6, 80),
            "{family}: internet -> dmz tcp/80"
        );
        assert!(
            !tcp_talks(&internet, &app, v6, 80),
            "{family}: internet -> trusted"
        );
        // Restricted reaches nothing outside (no exfiltration), not even by ICMP.
        assert!(
            !tcp_talks(&vault, &internet, v6, 443),
            "{family}: restricted -> untrust"
        );
        assert!(
            !ping(&vault, internet.ip(v6)),
            "{family}: restricted pings untrust"
        );
    }
    let delta = node.counters().since(&before);
    assert!(delta.get(counter::PASS_NEW) >= 10, "{delta}");
    assert!(delta.get(counter::PASS_ESTABLISHED) >= 20, "{delta}");
    assert!(delta.get(counter::DROP_POLICY) >= 12, "{delta}");
    for index in [
        counter::DROP_NO_VERDICT,
        counter::DROP_NO_POLICY,
        counter::DROP_SPOOFED,
        counter::DROP_MALFORMED,
        counter::RESET_FAILED,
    ] {
        assert_eq!(
            delta.get(index),
            0,
            "{}: {delta}",
            counter::NAMES[index as usize]
        );
    }
    for rule in [
        "dmz-to-app",
        "trusted-to-database",
        "internet-to-web",
        "no-exfiltration",
    ] {
        assert!(node.rule_packets(rule) > 0, "rule {rule} has no hits");
    }
    node.check_rule_stats_reads();
}

#[test]
fn reset_client_refuses_at_once_while_drop_times_out() {
    if !privileged("reset_client_refuses_at_once_while_drop_times_out") {
        return;
    }
    let node = Enforced::new(&PODS, Mode::Enforce);
    let (web, vault) = (node.pod(WEB), node.pod(VAULT));
    for v6 in [false, true] {
        let before = node.counters();
        match tcp_connect(&web, &vault, v6, 9000, Duration::from_secs(2)) {
            Connect::Refused(elapsed) => assert!(
                elapsed < Duration::from_millis(50),
                "refused after {elapsed:?}, not at once"
            ),
            other => panic!("dmz -> restricted (reset-client), v6={v6}: {other:?}"),
        }
        node.assert_counter_delta(&before, counter::RESET_SENT, 1);
        // UDP gets a port unreachable, so a connected socket sees ECONNREFUSED.
        let before = node.counters();
        assert!(udp_refused(&web, &vault, v6, 9001), "UDP reset, v6={v6}");
        node.assert_counter_delta(&before, counter::RESET_SENT, 1);
        // A drop rule stays silent: the client waits for its timeout.
        let before = node.counters();
        assert_eq!(
            tcp_connect(&vault, &node.internet(), v6, 443, SHORT),
            Connect::TimedOut
        );
        assert!(node.counters().since(&before).get(counter::DROP_POLICY) >= 1);
        assert_eq!(node.counters().since(&before).get(counter::RESET_SENT), 0);
    }
    assert_eq!(node.counters().get(counter::RESET_FAILED), 0);
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    if !privileged("spoofed_sources_are_dropped_and_counted") {
        return;
    }
    let node = Enforced::new(&PODS, Mode::Enforce);
    let web = &node.topology.pods[WEB];
    let app = &node.topology.pods[APP];
    let before = node.counters();
    // From web's interface with app's address: dropped as spoofed, whatever the policy says.
    let spoofed = packet::ipv4_udp(app.ipv4, web.ipv4, 5353, 0, 0);
    let spoofed_v6 = packet::ipv6_udp(app.ipv6, web.ipv6, 5353, 0);
    packet::send_frames(&web.netns, "eth0", &[spoofed, spoofed_v6]);
    node.assert_counter_delta(&before, counter::DROP_SPOOFED, 2);
    // The same datagram with web's own address is not spoofed (and is allowed to app).
    let before = node.counters();
    let own = packet::ipv4_udp(web.ipv4, app.ipv4, 5353, 0, 0);
    packet::send_frames(&web.netns, "eth0", &[own]);
    node.assert_counter_delta(&before, counter::PASS_NEW, 1);
    assert_eq!(node.counters().since(&before).get(counter::DROP_SPOOFED), 0);
}

#[test]
fn spoofed_packets_of_a_tracked_flow_are_dropped_from_either_side() {
    if !privileged("spoofed_packets_of_a_tracked_flow_are_dropped_from_either_side") {
        return;
    }
    // A tracked packet skips the anti-spoofing lookup only on the interface that passed it
    // for its side of the flow: another workload replaying either side is still dropped.
    let node = Enforced::new(&PODS, Mode::Enforce);
    let web = &node.topology.pods[WEB];
    let app = &node.topology.pods[APP];
    let app_2 = &node.topology.pods[APP_2];
    // udp 40000 -> 40000 within trusted, both families; the reply has the same ports.
    let forward = [
        packet::ipv4_udp(app.ipv4, app_2.ipv4, 40000, 0, 0),
        packet::ipv6_udp(app.ipv6, app_2.ipv6, 40000, 0),
    ];
    let reply = [
        packet::ipv4_udp(app_2.ipv4, app.ipv4, 40000, 0, 0),
        packet::ipv6_udp(app_2.ipv6, app.ipv6, 40000, 0),
    ];
    let before = node.counters();
    packet::send_frames(&app.netns, "eth0", &forward);
    node.assert_counter_delta(&before, counter::PASS_NEW, 2);
    let before = node.counters();
    packet::send_frames(&app_2.netns, "eth0", &reply);
    packet::send_frames(&app.netns, "eth0", &forward);
    // Hand-built frames stop at the host side of the sender's interface.
    node.assert_counter_delta(&before, counter::PASS_ESTABLISHED, 4);
    // The same frames out of web's interface: both sides of the flow are somebody else's.
    let before = node.counters();
    packet::send_frames(&web.netns, "eth0", &forward);
    packet::send_frames(&web.netns, "eth0", &reply);
    node.assert_counter_delta(&before, counter::DROP_SPOOFED, 4);
    assert_eq!(
        node.counters()
            .since(&before)
            .get(counter::PASS_ESTABLISHED),
        0
    );
}

#[test]
fn ip_options_and_extension_headers_are_walked_and_broken_headers_dropped() {
    if !privileged("ip_options_and_extension_headers_are_walked_and_broken_headers_dropped") {
        return;
    }
    // The programs read the common headers in place; these shapes take the general parser,
    // which must find the same ports behind IPv4 options and IPv6 extension headers.
    let node = Enforced::new(&PODS, Mode::Enforce);
    let web = &node.topology.pods[WEB];
    let app = &node.topology.pods[APP];
    let before = node.counters();
    // dmz -> trusted allows udp/5353 only.
    let frames = [
        packet::ipv4_udp(web.ipv4, app.ipv4, 5353, 2, 0),
        packet::ipv4_udp(web.ipv4, app.ipv4, 9, 2, 0),
        packet::ipv6_udp(web.ipv6, app.ipv6, 5353, 2),
        packet::ipv6_udp(web.ipv6, app.ipv6, 9, 2),
        packet::ipv6_udp(web.ipv6, app.ipv6, 5353, 8),
        packet::ipv4_bad_ihl(web.ipv4, app.ipv4),
    ];
    packet::send_frames(&web.netns, "eth0", &frames);
    node.assert_counter_delta(&before, counter::PASS_NEW, 2);
    node.assert_counter_delta(&before, counter::DROP_POLICY, 2);
    node.assert_counter_delta(&before, counter::DROP_EXT_HEADERS, 1);
    node.assert_counter_delta(&before, counter::DROP_MALFORMED, 1);
}

#[test]
fn non_first_fragments_never_match_a_port_rule() {
    if !privileged("non_first_fragments_never_match_a_port_rule") {
        return;
    }
    let node = Enforced::new(&PODS, Mode::Enforce);
    let web = &node.topology.pods[WEB];
    let app = &node.topology.pods[APP];
    let app_2 = &node.topology.pods[APP_2];
    // dmz -> trusted allows udp/5353 only: a fragment without its port header is denied.
    let before = node.counters();
    let fragment = packet::ipv4_udp(web.ipv4, app.ipv4, 5353, 0, 100);
    packet::send_frames(&web.netns, "eth0", &[fragment]);
    node.assert_counter_delta(&before, counter::DROP_POLICY, 1);
    assert_eq!(
        node.counters().since(&before).get(counter::PASS_FRAGMENT),
        0
    );
    // Within a zone every protocol is allowed, so a fragment passes there.
    let before = node.counters();
    let fragment = packet::ipv4_udp(app.ipv4, app_2.ipv4, 5353, 0, 100);
    packet::send_frames(&app.netns, "eth0", &[fragment]);
    node.assert_counter_delta(&before, counter::PASS_FRAGMENT, 1);
}

#[test]
fn audit_mode_passes_and_counts_what_it_would_deny() {
    if !privileged("audit_mode_passes_and_counts_what_it_would_deny") {
        return;
    }
    let node = Enforced::new(&PODS, Mode::Audit);
    let (web, app) = (node.pod(WEB), node.pod(APP));
    let before = node.counters();
    assert!(
        tcp_talks(&web, &app, false, 8081),
        "audit mode drops nothing"
    );
    node.assert_counter_delta(&before, counter::AUDIT_WOULD_DENY, 1);
    assert_eq!(node.counters().since(&before).get(counter::DROP_POLICY), 0);
    // An allowed flow is not "would deny".
    let before = node.counters();
    assert!(tcp_talks(&web, &app, false, 8080));
    assert_eq!(
        node.counters()
            .since(&before)
            .get(counter::AUDIT_WOULD_DENY),
        0
    );
}

#[test]
fn applying_the_same_input_twice_writes_nothing_and_changes_are_incremental() {
    if !privileged("applying_the_same_input_twice_writes_nothing_and_changes_are_incremental") {
        return;
    }
    let mut node = Enforced::new(&PODS, Mode::Enforce);
    let first = node.last_report;
    eprintln!("first apply: {first:?}");
    assert!(first.written > 0 && first.generation == 1, "{first:?}");
    assert!(
        first.batched > 0,
        "the kernel here offers batch updates for hash maps at least: {first:?}"
    );
    let again = node.reapply(&PODS);
    assert_eq!((again.written, again.removed), (0, 0), "{again:?}");
    assert_eq!(
        again.generation, first.generation,
        "nothing changed, same generation"
    );
    // One workload fewer: only its entries go, and the generation moves on.
    let fewer = node.reapply(&PODS[..4]);
    assert!(fewer.removed > 0 && fewer.removed < 20, "{fewer:?}");
    assert!(fewer.written < 20, "{fewer:?}");
    assert_eq!(fewer.generation, first.generation + 1);
    // A restarted agent knows nothing of what it wrote: it reads the slots back from the
    // kernel (every table, the IPv4 block arrays and long-prefix hashes included) and still
    // writes nothing for the same input, and only the difference for a change.
    let layout = zonewall::datapath::PinLayout::new(node.topology.pin_root.join("zonewall"));
    node.datapath = zonewall::datapath::Datapath::load(&layout).expect("adopt the pins");
    let adopted = node.reapply(&PODS[..4]);
    assert_eq!((adopted.written, adopted.removed), (0, 0), "{adopted:?}");
    assert_eq!(adopted.generation, fewer.generation);
    let back = node.reapply(&PODS);
    assert!(back.written > 0 && back.written < 20, "{back:?}");
    assert_eq!(back.removed, 0, "{back:?}");
    assert_eq!(back.generation, fewer.generation + 1);
}

#[test]
fn idle_flows_are_reported_and_removed_when_their_timeout_passes() {
    if !privileged("idle_flows_are_reported_and_removed_when_their_timeout_passes") {
        return;
    }
    use zonewall::datapath::Dataplane as _;
    use zonewall::flows::{events::monotonic_now_ns, record::EndReason};
    let mut node = Enforced::new(&PODS, Mode::Enforce);
    let (web, app) = (node.pod(WEB), node.pod(APP));
    assert_eq!(udp_delivered(&web, &app, false, 5353, 3), 3);
    let tracked = || node.datapath.conntrack_entries().expect("conntrack").len();
    assert_eq!(tracked(), 1, "one UDP flow tracked");
    // Not idle yet: nothing to report, nothing removed.
    let now = monotonic_now_ns();
    assert!(
        node.datapath
            .sweep_conntrack(now)
            .expect("sweep")
            .is_empty()
    );
    // A minute and a second later (the UDP idle timeout is a minute).
    let later = now + zonewall_common::timeout::UDP_NS + 1_000_000_000;
    let events = node.datapath.sweep_conntrack(later).expect("sweep");
    assert_eq!(events.len(), 1, "{events:?}");
    let record = node.enricher().record(&events[0]);
    assert_eq!(record.end_reason, Some(EndReason::IdleTimeout));
    assert_eq!(
        (
            record.source_zone.as_str(),
            record.destination_zone.as_str()
        ),
        ("dmz", "trusted")
    );
    assert_eq!(record.rule.name, "dmz-to-app");
    assert_eq!(record.counters.packets_from_source, 3);
    assert_eq!(
        record.tuple.source,
        std::net::IpAddr::V4(web.v4),
        "the initiator is the source"
    );
    let after = node.datapath.conntrack_entries().expect("conntrack").len();
    assert_eq!(after, 0, "the idle entry is removed");
}

#[test]
fn packets_that_pass_on_the_flow_cache_are_each_counted_once() {
    if !privileged("packets_that_pass_on_the_flow_cache_are_each_counted_once") {
        return;
    }
    use zonewall::datapath::Dataplane as _;
    use zonewall::flows::events::monotonic_now_ns;
    let mut node = Enforced::new(&PODS, Mode::Enforce);
    let (web, app) = (node.pod(WEB), node.pod(APP));
    // Bursts of one UDP flow each (a new source port per burst): within a clock tick, all
    // but a flow's first packet on a CPU pass on its flow cache slot. The packets of the
    // last tick are still waiting there after a burst.
    const BURST: usize = 50;
    let before = node.datapath.counters().expect("counters");
    let mut sent = 0;
    let mut waiting = Vec::new();
    while waiting.is_empty() && sent < 20 * BURST {
        assert_eq!(udp_delivered(&web, &app, false, 5353, BURST), BURST);
        sent += BURST;
        waiting = node.datapath.waiting_in_flow_cache().expect("flow cache");
    }
    assert!(
        !waiting.is_empty(),
        "no packet of {sent} passed on the flow cache"
    );
    // Each program run is counted once: every packet passes the sender's and the
    // receiver's interface, the first of each flow as new at the first.
    let passed = node.datapath.counters().expect("counters").since(&before);
    assert_eq!(
        passed.get(counter::PASS_NEW) + passed.get(counter::PASS_ESTABLISHED),
        2 * sent as u64,
        "{passed}"
    );
    // Each packet is counted once: in its flow's entry, or waiting in a slot.
    let mut entries = node.datapath.conntrack_entries().expect("conntrack");
    assert_eq!(entries.len(), sent / BURST, "one flow per burst");
    for (key, entry) in &mut entries {
        for (index, slot) in waiting.iter().filter(|(_, slot)| slot.key == *key) {
            slot.add_to(*index, entry);
        }
    }
    let counted: u64 = entries.iter().map(|(_, entry)| entry.packets_forward).sum();
    assert_eq!(counted, sent as u64);
    // And once for each of its flow's rules (the egress and the ingress rule).
    let stats = node.datapath.rule_stats().expect("rule statistics");
    let (_, entry) = entries[0];
    for rule in [entry.egress_rule_id, entry.ingress_rule_id] {
        assert_eq!(stats[&rule].packets, sent as u64, "rule {rule}");
    }
    // The idle sweep reports every packet, including the waiting ones.
    let later = monotonic_now_ns() + zonewall_common::timeout::UDP_NS + 1_000_000_000;
    let events = node.datapath.sweep_conntrack(later).expect("sweep");
    assert_eq!(events.len(), sent / BURST, "{events:?}");
    let reported: u64 = events
        .iter()
        .map(|event| node.enricher().record(event).counters.packets_from_source)
        .sum();
    assert_eq!(reported, sent as u64);
    // The rule counters keep the waiting packets after their flows are gone.
    let stats = node.datapath.rule_stats().expect("rule statistics");
    for rule in [entry.egress_rule_id, entry.ingress_rule_id] {
        assert_eq!(
            stats[&rule].packets, sent as u64,
            "rule {rule} after the sweep"
        );
    }
}
