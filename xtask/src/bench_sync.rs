//! `cargo xtask bench sync`: from a commit appearing to its ZonePolicy objects written, on the
//! generated 10,000-rule configuration.
//!
//! A commit is simulated by atomically replacing the watched configuration file with a
//! version in which one rule's action flips; the time runs from that rename until
//! - the output directory's generation link names a new generation (a release
//!   `zonewall sync --output-dir` process), and
//! - the objects are applied to kube's mock API server (the release `sync_kube` test binary,
//!   `bench_commit_to_applied`), measured in-process;
//! - the same, with the commit appearing in the config audit op answer of the Panorama
//!   stand-in instead of the file (`sync_panorama`, `bench_commit_to_applied_through_panorama`).
//!
//! Both include the wait for the next poll (interval 2 s, jittered), as the target
//! (p99 under interval + 500 ms) does. A commit made right after the previous one was applied
//! would always land at the same point of the poll cycle (and measure about one interval
//! whatever the work takes), so commit `r` first waits `r / ROUNDS` of an interval: the
//! commits are spread over the whole cycle, the last ones just after a poll (the worst case).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use crate::bench::{LARGE, generate_panorama, release_binary};
use crate::{run_command, workspace_root};

const ROUNDS: usize = 20;
pub(crate) const INTERVAL: Duration = Duration::from_secs(2);

/// How long commit `round` waits before it is made: spread over one interval.
pub(crate) fn phase_delay(round: usize, rounds: usize) -> Duration {
    INTERVAL.mul_f64(round as f64 / rounds as f64)
}

/// The generated configuration and the same with the first allow rule turned into a deny.
fn configs(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let base = generate_panorama(&LARGE);
    let flipped = base.replacen("<action>allow</action>", "<action>deny</action>", 1);
    ensure!(
        flipped != base,
        "the generated configuration has no allow rule"
    );
    let a = dir.join("sync-commit-a.xml");
    let b = dir.join("sync-commit-b.xml");
    std::fs::write(&a, base).with_context(|| format!("write {}", a.display()))?;
    std::fs::write(&b, flipped).with_context(|| format!("write {}", b.display()))?;
    Ok((a, b))
}

/// Replaces `watched` with a copy of `from` in one rename, as a deploy tool would.
pub(crate) fn commit(from: &Path, watched: &Path) -> anyhow::Result<Instant> {
    let temporary = watched.with_extension("tmp");
    std::fs::copy(from, &temporary).context("copy the next commit")?;
    let started = Instant::now();
    std::fs::rename(&temporary, watched).context("replace the watched configuration")?;
    Ok(started)
}

fn summary(label: &str, mut millis: Vec<f64>) -> String {
    millis.sort_by(f64::total_cmp);
    let quantile = |q: f64| millis[((millis.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "bench sync ({label}): commit to applied over {} commits: min {:.0} ms, median {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        millis.len(),
        millis[0],
        quantile(0.5),
        quantile(0.99),
        millis[millis.len() - 1]
    )
}

pub(crate) fn generation(dir: &Path) -> Option<PathBuf> {
    std::fs::read_link(dir.join(".zonewall-current")).ok()
}

fn run_output_dir(binary: &Path, a: &Path, b: &Path, bench_dir: &Path) -> anyhow::Result<String> {
    let watched = bench_dir.join("sync-watched.xml");
    let output = bench_dir.join("sync-output");
    let _ = std::fs::remove_dir_all(&output);
    std::fs::copy(a, &watched).context("first commit")?;
    let mut child = Command::new(binary)
        .args(["sync", "--panos-config"])
        .arg(&watched)
        .args([
            "--device-group",
            "app-1",
            "--interval",
            "2s",
            "--audit-log",
            "/dev/null",
            "--output-dir",
        ])
        .arg(&output)
        .env("ZONEWALL_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("start zonewall sync")?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while generation(&output).is_none() {
            ensure!(
                Instant::now() < deadline,
                "the first commit was never written"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut millis = Vec::new();
        for round in 0..ROUNDS {
            let before = generation(&output);
            let next = if round % 2 == 0 { b } else { a };
            std::thread::sleep(phase_delay(round, ROUNDS));
            let started = commit(next, &watched)?;
            let deadline = started + Duration::from_secs(120);
            while generation(&output) == before {
                ensure!(
                    Instant::now() < deadline,
                    "commit {round} was never written"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(summary(
            "output directory, release zonewall sync process",
            millis,
        ))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let bench_dir = root.join("target/bench");
    std::fs::create_dir_all(&bench_dir).context("create target/bench")?;
    let (a, b) = configs(&bench_dir)?;
    let directory = run_output_dir(&release_binary()?, &a, &b, &bench_dir)?;
    println!("{directory}");
    // The mock API measurements run inside the test binaries, next to the mock server: one
    // from the watched file, one through the Panorama stand-in's config audit op.
    run_command(
        Command::new("cargo")
            .current_dir(&root)
            .args([
                "test",
                "--release",
                "--package",
                "zonewall",
                "--test",
                "sync_kube",
                "--test",
                "sync_panorama",
                "--",
                "--ignored",
                "--nocapture",
                "bench_commit_to_applied",
            ])
            .env("ZONEWALL_BENCH_SYNC_A", &a)
            .env("ZONEWALL_BENCH_SYNC_B", &b)
            .env("ZONEWALL_BENCH_SYNC_ROUNDS", ROUNDS.to_string()),
    )?;
    println!("{directory}");
    Ok(())
}
