//! Bootstrap of a fresh Debian 12 machine for building and testing zonewall.
//!
//! Every step checks first and acts only when something is missing, so a second run takes
//! seconds and prints "ok" lines only.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::run_command;

/// Debian packages: LLVM 22 for building bpf-linker (it must match rustc's LLVM major),
/// iproute2 for the test topology, the traffic tools the tests and benchmarks use, rsyslog, and
/// checkers of the metrics exposition.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "iputils-ping",
    "netcat-openbsd",
    "iperf3",
    // The dataplane benchmark's competitors.
    "iptables",
    "ipset",
    "nftables",
    // Real syslog receivers for the SIEM export tests (UDP, TCP and TLS).
    "rsyslog",
    "rsyslog-gnutls",
    // promtool and the Python client's OpenMetrics parser, for the tests that check the
    // /metrics expositions (Prometheus text and OpenMetrics).
    PROMETHEUS,
    "python3-prometheus-client",
];
/// Debian ships promtool only inside the Prometheus server package, whose service listens on
/// 9090, the agent's default metrics port; setup stops that service when it installs it.
const PROMETHEUS: &str = "prometheus";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS: &str = "/sys/fs/bpf";

pub fn run() -> anyhow::Result<()> {
    check_root()?;
    check_kernel()?;
    debian_packages()?;
    rust_components()?;
    bpf_linker()?;
    bpffs()?;
    eprintln!("setup: done");
    Ok(())
}

fn check_root() -> anyhow::Result<()> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .context("cannot run `id -u`")?;
    if String::from_utf8_lossy(&output.stdout).trim() != "0" {
        bail!(
            "setup must run as root: it installs Debian packages and mounts bpffs, and the tests create network namespaces and load BPF programs (try `sudo -E cargo xtask setup`)"
        );
    }
    Ok(())
}

fn check_kernel() -> anyhow::Result<()> {
    // The kernel only has this file when it was built with BPF syscall support.
    if !std::path::Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        bail!(
            "this kernel has no BPF syscall (CONFIG_BPF_SYSCALL); zonewall needs Linux >= 5.15 with BPF and BTF"
        );
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel exposes no BTF (/sys/kernel/btf/vmlinux missing; CONFIG_DEBUG_INFO_BTF); zonewall needs Linux >= 5.15 with BTF"
        );
    }
    eprintln!("setup: ok: kernel has BPF and BTF");
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|package| !dpkg_installed(package))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "setup: ok: Debian packages present ({})",
            PACKAGES.join(", ")
        );
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(", "));
    run_command(Command::new("apt-get").args(["update", "-q"]))?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if missing.contains(&PROMETHEUS) && std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("setup: stopping the Prometheus server that came with promtool (port 9090)");
        run_command(Command::new("systemctl").args(["disable", "--now", "prometheus.service"]))?;
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout) == "install ok installed")
}

fn rust_components() -> anyhow::Result<()> {
    // Stable builds and lints the host crates; nightly builds and lints the eBPF crate
    // (`-Z build-std=core` needs rust-src).
    for (toolchain, component) in [
        ("stable", "clippy"),
        ("stable", "rustfmt"),
        ("nightly", "clippy"),
        ("nightly", "rust-src"),
    ] {
        let installed = Command::new("rustup")
            .args(["component", "list", "--installed", "--toolchain", toolchain])
            .output()
            .with_context(|| format!("cannot list rustup components of {toolchain}; is the {toolchain} toolchain installed?"))?;
        let installed = String::from_utf8_lossy(&installed.stdout);
        if installed
            .lines()
            .any(|line| line.starts_with(&format!("{component}-")) || line == component)
        {
            eprintln!("setup: ok: {component} for {toolchain}");
            continue;
        }
        eprintln!("setup: adding {component} to the {toolchain} toolchain");
        run_command(Command::new("rustup").args([
            "component",
            "add",
            component,
            "--toolchain",
            toolchain,
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if let Ok(output) = version
        && output.status.success()
    {
        eprintln!(
            "setup: ok: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
        return Ok(());
    }
    // The default features want a newer LLVM than Debian ships; build against LLVM 22, the
    // major version of the nightly rustc's LLVM.
    eprintln!("setup: building bpf-linker against LLVM 22 (about a minute)");
    run_command(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker@0.13.0",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("read /proc/self/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    });
    if mounted {
        eprintln!("setup: ok: bpffs mounted at {BPFFS}");
        return Ok(());
    }
    eprintln!("setup: mounting bpffs at {BPFFS}");
    std::fs::create_dir_all(BPFFS).with_context(|| format!("create {BPFFS}"))?;
    run_command(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
}
