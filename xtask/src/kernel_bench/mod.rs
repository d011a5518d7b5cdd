//! `cargo xtask bench kernel`: the in-kernel cost per packet of zonewall's TC programs,
//! measured with `BPF_PROG_TEST_RUN` on generated policies of 100 to 10,000 rules and 1,000
//! to 100,000 external prefixes, against the empty program.
//!
//! The measurement links the agent (compiler and datapath), so it runs in a release build of
//! xtask with the `kernel-bench` feature; plain `cargo xtask` starts that build.

#[cfg(feature = "kernel-bench")]
mod agent;
#[cfg(feature = "kernel-bench")]
mod api_standin;
#[cfg(feature = "kernel-bench")]
mod dataplane;
#[cfg(feature = "kernel-bench")]
mod end_to_end;
#[cfg(feature = "kernel-bench")]
mod flows;
#[cfg(feature = "kernel-bench")]
mod generate;
#[cfg(feature = "kernel-bench")]
pub mod heap;
#[cfg(feature = "kernel-bench")]
mod measure;
pub mod test_run;
#[cfg(feature = "kernel-bench")]
mod traffic;

/// The middle value (the upper one of an even count).
#[cfg(feature = "kernel-bench")]
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(feature = "kernel-bench")]
pub fn run(which: &str) -> anyhow::Result<()> {
    match which {
        "flows" => flows::run(),
        "agent" => agent::run(),
        "dataplane" => dataplane::run(),
        "e2e" => end_to_end::run(),
        _ => measure::run(),
    }
}

#[cfg(not(feature = "kernel-bench"))]
pub fn run(which: &str) -> anyhow::Result<()> {
    crate::run_command(
        std::process::Command::new("cargo")
            .current_dir(crate::workspace_root())
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "xtask",
                "--features",
                "kernel-bench",
                "--",
                "bench",
                which,
            ]),
    )
}
