//! Builds the eBPF object (`zonewall-ebpf`, nightly toolchain, `bpfel-unknown-none`) so that
//! the agent embeds it. Missing `bpf-linker` or nightly `rust-src`? Run `cargo xtask setup`.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let workspace = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?;
    let ebpf_dir = workspace.join("ebpf");
    // aya-build watches the eBPF crate; the shared layouts live in `common/` and change the
    // object just as much.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("common").display()
    );
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "zonewall-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the eBPF object failed; `cargo xtask setup` installs bpf-linker and the nightly rust-src it needs")
}
