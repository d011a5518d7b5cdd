//! `cargo xtask demo`: setup, build, then the demo driver (`tests/src/bin/zonewall-demo.rs`),
//! which builds the node in network namespaces, runs the real agent and cleans up. Ctrl-C goes
//! to the driver (and the agent); this process waits for their cleanup.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{display, workspace_root};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    let root = workspace_root();
    let mut build = Command::new("cargo");
    build.current_dir(&root).args([
        "build",
        "-p",
        "zonewall",
        "--bin",
        "zonewall",
        "-p",
        "zonewall-integration-tests",
        "--bin",
        "zonewall-demo",
    ]);
    eprintln!("+ {}", display(&build));
    let status = build.status().context("cannot start cargo build")?;
    if !status.success() {
        bail!("building the agent and the demo failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut demo = Command::new(target.join("debug/zonewall-demo"));
    demo.current_dir(&root);
    // Ctrl-C reaches the whole foreground process group: the driver and the agent stop and
    // clean up; this process only waits for them.
    // SAFETY: setting a signal disposition to "ignore" has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut child = demo.spawn().context("cannot start the demo driver")?;
    // The driver must not inherit "ignore": it installs its own handler at start, before
    // anything needs cleaning up.
    let status = child.wait().context("waiting for the demo")?;
    if status.code() == Some(130) {
        eprintln!("demo interrupted; everything it created was removed");
        std::process::exit(130);
    }
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}
