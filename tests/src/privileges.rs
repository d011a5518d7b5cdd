//! Privileged tests skip with a printed reason when they cannot run, unless
//! `ZONEWALL_REQUIRE_PRIVILEGED=1` (CI) turns the skip into a failure.

/// Returns `true` when the test may run. Otherwise prints why it is skipped and returns
/// `false`, or panics when `ZONEWALL_REQUIRE_PRIVILEGED=1`.
pub fn privileged(test: &str) -> bool {
    let reason = if !is_root() {
        Some("needs root (network namespaces, BPF)".to_owned())
    } else if !std::path::Path::new("/sys/fs/bpf").is_dir() || !is_bpffs_mounted() {
        Some("bpffs is not mounted at /sys/fs/bpf; run `cargo xtask setup`".to_owned())
    } else {
        None
    };
    let Some(reason) = reason else {
        return true;
    };
    if std::env::var("ZONEWALL_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("{test}: cannot run: {reason}, and ZONEWALL_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    // Written straight to stdout: libtest captures `println!` of passing tests, and a skip
    // must be visible (`cargo xtask test` counts these lines).
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn is_bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            line.split_whitespace().nth(1) == Some("/sys/fs/bpf")
                && line.split_whitespace().nth(2) == Some("bpf")
        })
    })
}
