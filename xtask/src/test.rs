//! `cargo xtask test`: the whole suite, as CI runs it.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};

use crate::{crd, display, run_command, setup, workspace_root};

/// The privileged tests create network namespaces and pin roots with this prefix.
const TEST_PREFIX: &str = "zwt";

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    let root = workspace_root();
    let cargo = || {
        let mut command = Command::new("cargo");
        command.current_dir(&root);
        command
    };

    run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // --all-features: the kernel benchmark's code only builds with xtask's kernel-bench feature.
    run_command(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "zonewall-ebpf",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_command(cargo().args([
        "+nightly",
        "clippy",
        "--package",
        "zonewall-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;

    crd::check(&root)?;

    let mut totals = Totals::default();
    totals.add(cargo_test(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "zonewall-ebpf",
        "--exclude",
        "zonewall-integration-tests",
    ]))?);
    // Integration test targets only (`--test '*'`): the harness crate has no unit tests or
    // doctests worth a line of "0 passed".
    let privileged = cargo_test(cargo().args([
        "test",
        "--package",
        "zonewall-integration-tests",
        "--test",
        "*",
    ]))?;
    eprintln!(
        "privileged tests: {} passed, {} failed, {} skipped",
        privileged.passed, privileged.failed, privileged.skipped
    );
    totals.add(privileged);
    check_nothing_left_behind()?;

    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.skipped
    );
    ensure!(totals.failed == 0, "{} tests failed", totals.failed);
    Ok(())
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// Runs `cargo test`, passing its output through while counting results from libtest's
/// "test result:" lines and the harness's "SKIPPED" lines.
fn cargo_test(command: &mut Command) -> anyhow::Result<Totals> {
    eprintln!("+ {}", display(command));
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(command)))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += field(rest, "passed");
            totals.failed += field(rest, "failed");
        }
        if line.starts_with("SKIPPED ") {
            totals.skipped += 1;
        }
    }
    // libtest counts a skipped privileged test as passed; report it as what it is.
    totals.passed = totals.passed.saturating_sub(totals.skipped);
    let status = child.wait().context("wait for cargo test")?;
    if !status.success() && totals.failed == 0 {
        bail!(
            "`{}` failed ({status}) before reporting test results",
            display(command)
        );
    }
    Ok(totals)
}

/// Reads "N passed" out of "ok. N passed; M failed; ...".
fn field(summary: &str, name: &str) -> u64 {
    summary
        .split([';', '.'])
        .filter_map(|part| part.trim().strip_suffix(name))
        .find_map(|number| number.trim().parse().ok())
        .unwrap_or(0)
}

/// The privileged tests promise to clean up after themselves, panics included.
fn check_nothing_left_behind() -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("run `ip netns list`")?;
    let namespaces: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(TEST_PREFIX))
        .map(str::to_owned)
        .collect();
    let pins: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(TEST_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        namespaces.is_empty() && pins.is_empty(),
        "the privileged tests left things behind: network namespaces {namespaces:?}, bpffs entries {pins:?}"
    );
    eprintln!("cleanup check: no test namespaces or bpffs pin roots left behind");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_counts_from_libtest_summary() {
        let summary =
            "ok. 12 passed; 3 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(field(summary, "passed"), 12);
        assert_eq!(field(summary, "failed"), 3);
        assert_eq!(field(summary, "ignored"), 1);
    }
}
