//! `cargo xtask bench`: measurements reported as figures, never asserted by tests.
//!
//! Both generate a Panorama configuration of the size the issue tracker names (10,000 rules,
//! 100,000 address objects, 5,000 address groups) and time a release `zonewall` command on it,
//! with its peak memory: `parse` runs `explain` (parse, resolve, evaluate one flow),
//! `translate` runs `translate -o DIR` (everything up to written ZonePolicy YAML).

use std::{fmt::Write as _, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, ensure};

use crate::{run_command, workspace_root};

pub struct Size {
    pub rules: usize,
    pub addresses: usize,
    pub groups: usize,
}

pub const LARGE: Size = Size {
    rules: 10_000,
    addresses: 100_000,
    groups: 5_000,
};

const ZONES: [&str; 6] = ["untrust", "dmz", "trusted", "restricted", "mgmt", "partner"];
const SERVICES: usize = 200;
/// Distinct `app-N` tags on address objects, selected by the dynamic groups.
const APPLICATIONS: usize = 100;

/// Writes the large generated configuration and builds the release binary; returns both paths.
fn prepare() -> anyhow::Result<(PathBuf, PathBuf)> {
    let root = workspace_root();
    let bench_dir = root.join("target/bench");
    std::fs::create_dir_all(&bench_dir).context("create target/bench")?;
    let config = bench_dir.join("panorama-large.xml");
    let started = Instant::now();
    let xml = generate_panorama(&LARGE);
    std::fs::write(&config, &xml).with_context(|| format!("write {}", config.display()))?;
    eprintln!(
        "bench: generated {} ({:.1} MiB, {} rules, {} address objects, {} groups) in {:.2?}",
        config.display(),
        xml.len() as f64 / (1024.0 * 1024.0),
        LARGE.rules,
        LARGE.addresses,
        LARGE.groups,
        started.elapsed()
    );
    Ok((release_binary()?, config))
}

/// Builds the release `zonewall` binary; returns its path.
pub fn release_binary() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    run_command(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "zonewall",
    ]))?;
    Ok(root.join("target/release/zonewall"))
}

const RUNS: usize = 5;
const SIZE_LABEL: &str = "10,000 rules / 100,000 addresses / 5,000 groups";

/// Runs the command `build` makes `RUNS` times; returns the sorted wall times and the largest
/// peak RSS.
fn measure(mut build: impl FnMut() -> Command) -> anyhow::Result<(Vec<f64>, f64)> {
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        samples.push(run_measured(&mut build())?);
    }
    let peak_rss_mib = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let mut seconds: Vec<f64> = samples.into_iter().map(|s| s.0).collect();
    seconds.sort_by(f64::total_cmp);
    Ok((seconds, peak_rss_mib))
}

pub fn run_parse() -> anyhow::Result<()> {
    let (binary, config) = prepare()?;
    let (seconds, rss) = measure(|| {
        let mut command = Command::new(&binary);
        command
            .arg("explain")
            .arg("--panos-config")
            .arg(&config)
            .args([
                "--device-group",
                "app-1",
                "--src-zone",
                "dmz",
                "--dst-zone",
                "trusted",
                "--src",
                "10.1.0.5",
                "--dst",
                "10.2.3.4",
                "--proto",
                "tcp",
                "--dport",
                "443",
                "--json",
            ]);
        command
    })?;
    println!(
        "bench parse: {SIZE_LABEL}: explain (read + parse + resolve + evaluate) min {:.3} s, median {:.3} s, max {:.3} s; peak RSS {rss:.0} MiB ({RUNS} runs)",
        seconds[0],
        seconds[RUNS / 2],
        seconds[RUNS - 1]
    );
    Ok(())
}

pub fn run_translate() -> anyhow::Result<()> {
    let (binary, config) = prepare()?;
    let output = workspace_root().join("target/bench/zonepolicies");
    let (seconds, rss) = measure(|| {
        // A fresh directory each run, so every run writes every object.
        let _ = std::fs::remove_dir_all(&output);
        let mut command = Command::new(&binary);
        command
            .arg("translate")
            .arg("--panos-config")
            .arg(&config)
            .args(["--device-group", "app-1", "--output"])
            .arg(&output);
        command
    })?;
    // The visible object files are symlinks into the current generation (see
    // zonewall::policy::directory): count those, by the size of the file they name, and not
    // the generation directory or its link.
    let mut objects = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(&output).context("read translate output")? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "yaml")
        {
            objects += 1;
            bytes += std::fs::metadata(&path)?.len();
        }
    }
    println!(
        "bench translate: {SIZE_LABEL}: translate (read + parse + resolve + translate + write YAML) min {:.3} s, median {:.3} s, max {:.3} s; peak RSS {rss:.0} MiB; {objects} ZonePolicy objects, {:.1} MiB of YAML ({RUNS} runs)",
        seconds[0],
        seconds[RUNS / 2],
        seconds[RUNS - 1],
        bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// One run of a release `zonewall` command: (wall seconds, peak RSS MiB).
fn run_measured(command: &mut Command) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let child = command
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", crate::display(command)))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child; the pointers are valid for the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(reaped == pid, "wait4: {}", std::io::Error::last_os_error());
    // Reaped through wait4 (for its rusage); dropping a Child neither waits nor kills.
    drop(child);
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "`{}` failed on the generated config (wait status {status})",
        crate::display(command)
    );
    // ru_maxrss is in KiB on Linux.
    Ok((elapsed, usage.ru_maxrss as f64 / 1024.0))
}

/// A Panorama running configuration: shared objects and rules, a two-level device-group
/// hierarchy (`app-root` -> `app-1`), a template with the zones, address objects of every
/// kind, static, nested and dynamic groups, service objects and groups, and pre/post rules
/// spread over shared and both device groups.
pub fn generate_panorama(size: &Size) -> String {
    let mut xml = String::with_capacity(size.addresses * 120 + size.rules * 700);
    xml.push_str("<config version=\"11.1.0\" urldb=\"paloaltonetworks\">\n<devices><entry name=\"localhost.localdomain\">\n");
    xml.push_str("<template><entry name=\"k8s\"><config><devices><entry name=\"localhost.localdomain\"><vsys><entry name=\"vsys1\"><zone>\n");
    for zone in ZONES {
        let _ = writeln!(
            xml,
            "<entry name=\"{zone}\"><network><layer3/></network></entry>"
        );
    }
    xml.push_str(
        "</zone></entry></vsys></entry></devices></config></entry></template>\n<device-group>\n",
    );
    // A third of the objects and rules live in each scope.
    let scopes = ["shared", "app-root", "app-1"];
    let mut per_scope = [String::new(), String::new(), String::new()];
    for (index, body) in per_scope.iter_mut().enumerate() {
        write_objects(body, size, index, scopes.len());
        write_rules(body, size, index, scopes.len());
    }
    for (index, name) in scopes.iter().enumerate().skip(1) {
        let _ = writeln!(xml, "<entry name=\"{name}\">{}</entry>", per_scope[index]);
    }
    xml.push_str("</device-group>\n</entry></devices>\n");
    let _ = writeln!(xml, "<shared>{}</shared>", per_scope[0]);
    xml.push_str("<readonly><devices><entry name=\"localhost.localdomain\"><device-group>");
    xml.push_str("<entry name=\"app-root\"><id>11</id></entry><entry name=\"app-1\"><id>12</id><parent-dg>app-root</parent-dg></entry>");
    xml.push_str("</device-group></entry></devices></readonly>\n</config>\n");
    xml
}

fn write_objects(xml: &mut String, size: &Size, scope: usize, scopes: usize) {
    xml.push_str("<tag><entry name=\"web\"/><entry name=\"db\"/><entry name=\"pci\"/>");
    for app in 0..APPLICATIONS {
        let _ = write!(xml, "<entry name=\"app-{app}\"/>");
    }
    xml.push_str("</tag>\n<address>\n");
    for i in (scope..size.addresses).step_by(scopes) {
        let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        let value = match i % 10 {
            0..=5 => format!("<ip-netmask>10.{a}.{b}.{c}/32</ip-netmask>"),
            6 => format!("<ip-netmask>10.{}.{b}.0/24</ip-netmask>", 100 + a),
            7 => format!("<ip-range>172.16.{b}.{c}-172.16.{b}.255</ip-range>"),
            8 => format!("<ip-netmask>fd00:{a:x}:{b:x}::{c:x}/128</ip-netmask>"),
            _ => format!(
                "<ip-wildcard>10.{a}.{b}.0/0.0.{}.255</ip-wildcard>",
                c & 0x0f
            ),
        };
        // `i` is congruent to the scope modulo `scopes`: divide it out before choosing tags.
        let role = ["web", "db", "pci"][(i / scopes) % 3];
        let app = (i / (scopes * 3)) % APPLICATIONS;
        let _ = writeln!(
            xml,
            "<entry name=\"addr-{i}\">{value}<tag><member>{role}</member><member>app-{app}</member></tag></entry>"
        );
    }
    xml.push_str("</address>\n<address-group>\n");
    for g in (scope..size.groups).step_by(scopes) {
        let _ = write!(xml, "<entry name=\"group-{g}\">");
        if g % 10 == 9 {
            // One application's web and db servers: a few hundred objects per group, the way
            // security teams tag workloads.
            let _ = write!(
                xml,
                "<dynamic><filter>'app-{}' and ('web' or 'db') and not 'pci'</filter></dynamic>",
                g % APPLICATIONS
            );
        } else {
            xml.push_str("<static>");
            for k in 0..20 {
                let member = in_scope(g * 20 + k, size.addresses, scope, scopes);
                let _ = write!(xml, "<member>addr-{member}</member>");
            }
            if g >= scopes && g % 7 == 0 {
                let _ = write!(xml, "<member>group-{}</member>", g - scopes);
            }
            xml.push_str("</static>");
        }
        xml.push_str("</entry>\n");
    }
    xml.push_str("</address-group>\n<service>\n");
    for s in (scope..SERVICES).step_by(scopes) {
        let protocol = if s % 4 == 3 { "udp" } else { "tcp" };
        let _ = writeln!(
            xml,
            "<entry name=\"svc-{s}\"><protocol><{protocol}><port>{},{}-{}</port></{protocol}></protocol></entry>",
            1000 + s,
            20000 + s * 10,
            20000 + s * 10 + 9
        );
    }
    xml.push_str("</service>\n<service-group>\n");
    let _ = writeln!(
        xml,
        "<entry name=\"svcgroup-{scope}\"><members><member>svc-{scope}</member><member>service-https</member></members></entry>"
    );
    xml.push_str("</service-group>\n");
}

fn write_rules(xml: &mut String, size: &Size, scope: usize, scopes: usize) {
    for rulebase in ["pre-rulebase", "post-rulebase"] {
        let _ = writeln!(xml, "<{rulebase}><security><rules>");
        for r in (scope..size.rules).step_by(scopes) {
            let in_pre = r % 2 == 0;
            if in_pre != (rulebase == "pre-rulebase") {
                continue;
            }
            let from = ZONES[r % ZONES.len()];
            let to = ZONES[(r / ZONES.len()) % ZONES.len()];
            let source = format!("group-{}", in_scope(r * 13, size.groups, scope, scopes));
            let destination = format!("addr-{}", in_scope(r * 7, size.addresses, scope, scopes));
            let service = match r % 5 {
                0 => "application-default".to_owned(),
                1 => "any".to_owned(),
                2 => format!("svcgroup-{scope}"),
                _ => format!("svc-{}", in_scope(r, SERVICES, scope, scopes)),
            };
            let action = ["allow", "deny", "drop", "reset-client", "allow", "allow"][r % 6];
            let negate = if r % 17 == 0 {
                "<negate-source>yes</negate-source>"
            } else {
                ""
            };
            let disabled = if r % 23 == 0 {
                "<disabled>yes</disabled>"
            } else {
                ""
            };
            let _ = writeln!(
                xml,
                "<entry name=\"rule-{r}\" uuid=\"00000000-0000-4000-8000-{r:012}\"><from><member>{from}</member></from><to><member>{to}</member></to><source><member>{source}</member></source><destination><member>{destination}</member></destination><source-user><member>any</member></source-user><category><member>any</member></category><application><member>any</member></application><service><member>{service}</member></service><action>{action}</action>{negate}{disabled}<log-end>yes</log-end><description>generated rule {r}</description></entry>"
            );
        }
        let _ = writeln!(xml, "</rules></security></{rulebase}>");
    }
}

/// An object index near `i` (mod `count`) that is defined in `scope`, so that every reference
/// resolves: objects are spread over the scopes by index modulo `scopes`.
fn in_scope(i: usize, count: usize, scope: usize, scopes: usize) -> usize {
    let candidate = i % count - i % count % scopes + scope;
    if candidate < count {
        candidate
    } else {
        candidate - scopes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_is_well_formed_and_sized() {
        let size = Size {
            rules: 60,
            addresses: 300,
            groups: 30,
        };
        let xml = generate_panorama(&size);
        assert_eq!(xml.matches("<entry name=\"rule-").count(), 60);
        assert_eq!(xml.matches("<entry name=\"addr-").count(), 300);
        assert_eq!(xml.matches("<entry name=\"group-").count(), 30);
        assert_eq!(
            xml.matches("<config").count(),
            xml.matches("</config>").count()
        );
    }
}
