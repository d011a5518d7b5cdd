//! The committed CRD must be exactly what `zonewall crd` prints (generated artifacts are
//! committed, and CI fails when they drift from the code).

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::display;

/// Where the ZonePolicy CRD is committed, relative to the workspace root: the plain manifests
/// and the Helm chart's copy.
pub const CRD_PATHS: [&str; 2] = [
    "deploy/crds/zonepolicies.zonewall.io.yaml",
    "deploy/helm/zonewall/crds/zonepolicies.zonewall.io.yaml",
];

/// Writes the CRD files from `zonewall crd`.
pub fn write(root: &Path) -> anyhow::Result<()> {
    let generated = generate(root)?;
    for relative in CRD_PATHS {
        let path = root.join(relative);
        std::fs::write(&path, &generated)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {relative}");
    }
    Ok(())
}

pub fn check(root: &Path) -> anyhow::Result<()> {
    let generated = generate(root)?;
    for relative in CRD_PATHS {
        let path = root.join(relative);
        let committed = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(problem) = difference(&committed, &generated) {
            bail!(
                "{relative} differs from what `zonewall crd` prints ({problem}); regenerate it with `cargo xtask codegen` and commit it"
            );
        }
        eprintln!("CRD check: {relative} matches `zonewall crd`");
    }
    Ok(())
}

fn generate(root: &Path) -> anyhow::Result<String> {
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args(["run", "--quiet", "--package", "zonewall", "--", "crd"]);
    eprintln!("+ {}", display(&command));
    let output = command
        .output()
        .with_context(|| format!("cannot start `{}`", display(&command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(&command),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).context("`zonewall crd` printed non-UTF-8")
}

/// `None` when equal, else where the two first differ.
fn difference(committed: &str, generated: &str) -> Option<String> {
    if committed == generated {
        return None;
    }
    let mut committed_lines = committed.lines();
    let mut generated_lines = generated.lines();
    let mut line = 1;
    loop {
        match (committed_lines.next(), generated_lines.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (Some(a), Some(b)) => {
                return Some(format!("line {line}: committed {a:?}, generated {b:?}"));
            }
            (Some(_), None) => {
                return Some(format!("the committed file is longer, from line {line}"));
            }
            (None, Some(_)) => {
                return Some(format!("the generated CRD is longer, from line {line}"));
            }
            (None, None) => return Some("line endings or the final newline differ".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::difference;

    #[test]
    fn names_the_first_differing_line() {
        assert_eq!(difference("a\nb\n", "a\nb\n"), None);
        let problem = difference("a\nb\n", "a\nc\n").expect("files differ");
        assert!(problem.contains("line 2"), "{problem}");
        assert!(difference("a\n", "a\nb\n").is_some());
        assert!(difference("a\n", "a").is_some());
    }
}
