//! Shared by the sync tests: small firewall configurations to edit, and an audit log that
//! tests can read.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub mod fake_api;

use std::io::Write;
use std::sync::{Arc, Mutex};

use zonewall::sync::AuditLog;

/// One security rule: name, from zone, to zone, action.
pub type RuleSpec<'a> = (&'a str, &'a str, &'a str, &'a str);

/// A single-vsys firewall configuration with these zones and rules (any address, any
/// service), so tests can add and remove zones and rules.
pub fn firewall_config(zones: &[&str], rules: &[RuleSpec<'_>]) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<config version=\"10.2.0\">\n  <devices>\n    <entry name=\"localhost.localdomain\">\n      <vsys>\n        <entry name=\"vsys1\">\n          <zone>\n",
    );
    for zone in zones {
        xml.push_str(&format!(
            "            <entry name=\"{zone}\"><network><layer3/></network></entry>\n"
        ));
    }
    xml.push_str("          </zone>\n          <rulebase><security><rules>\n");
    for (index, (name, from, to, action)) in rules.iter().enumerate() {
        xml.push_str(&format!(
            "            <entry name=\"{name}\" uuid=\"00000000-0000-4000-8000-{index:012}\"><from><member>{from}</member></from><to><member>{to}</member></to><source><member>any</member></source><destination><member>any</member></destination><application><member>any</member></application><service><member>any</member></service><action>{action}</action></entry>\n"
        ));
    }
    xml.push_str("          </rules></security></rulebase>\n        </entry>\n      </vsys>\n    </entry>\n  </devices>\n</config>\n");
    xml
}

/// The first configuration of most tests: three zones, two rules.
pub fn config_v1() -> String {
    firewall_config(
        &["trust", "untrust", "dmz"],
        &[
            ("allow-web", "untrust", "dmz", "allow"),
            ("allow-out", "trust", "untrust", "allow"),
        ],
    )
}

/// A commit of `config_v1` with allow-web (untrust -> dmz) turned into a deny: the untrust
/// and dmz objects change, trust does not.
pub fn config_web_denied() -> String {
    firewall_config(
        &["trust", "untrust", "dmz"],
        &[
            ("allow-web", "untrust", "dmz", "deny"),
            ("allow-out", "trust", "untrust", "allow"),
        ],
    )
}

/// The next commit: zone dmz and its rule are gone.
pub fn config_v2() -> String {
    firewall_config(
        &["trust", "untrust"],
        &[("allow-out", "trust", "untrust", "allow")],
    )
}

/// Audit records written into memory, one JSON value per line.
#[derive(Clone, Default)]
pub struct AuditBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for AuditBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("audit buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditBuffer {
    pub fn log(&self) -> Arc<AuditLog> {
        Arc::new(AuditLog::new(Box::new(self.clone())))
    }

    pub fn records(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("audit buffer").clone();
        String::from_utf8(bytes)
            .expect("audit log is UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("each audit line is one JSON object"))
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("audit buffer").clone()).expect("UTF-8")
    }

    /// Records of one operation kind (`create`, `update`, `restore`, `delete-stale`, ...).
    pub fn of(&self, operation: &str) -> Vec<serde_json::Value> {
        self.records()
            .into_iter()
            .filter(|record| record["operation"] == operation)
            .collect()
    }
}

/// What `cargo xtask bench sync` hands the benchmark tests: the two configurations commits
/// alternate between, and how many commits to make. `None` (with a note) when a benchmark
/// test is run on its own.
pub fn bench_input() -> Option<([std::path::PathBuf; 2], usize)> {
    let (Some(a), Some(b)) = (
        std::env::var_os("ZONEWALL_BENCH_SYNC_A"),
        std::env::var_os("ZONEWALL_BENCH_SYNC_B"),
    ) else {
        eprintln!("skipped: ZONEWALL_BENCH_SYNC_A/B not set (run `cargo xtask bench sync`)");
        return None;
    };
    let rounds = std::env::var("ZONEWALL_BENCH_SYNC_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    Some(([a.into(), b.into()], rounds))
}

/// `min, median, p99, max` of durations in milliseconds.
pub fn describe(mut millis: Vec<f64>) -> String {
    millis.sort_by(f64::total_cmp);
    let quantile = |q: f64| millis[((millis.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "min {:.0} ms, median {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        millis[0],
        quantile(0.5),
        quantile(0.99),
        millis[millis.len() - 1]
    )
}

/// Waits (2 ms steps, 2 minutes at most) until the controller has applied another commit
/// after `before`; the milliseconds from `committed`.
pub async fn until_applied(
    stats: &zonewall::sync::SyncStats,
    before: u64,
    committed: std::time::Instant,
    round: usize,
) -> f64 {
    let applied = || zonewall::sync::SyncStats::get(&stats.commits_applied);
    while applied() == before {
        assert!(
            committed.elapsed() < std::time::Duration::from_secs(120),
            "commit {round} never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    committed.elapsed().as_secs_f64() * 1000.0
}
