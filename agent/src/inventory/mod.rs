//! The endpoint inventory file: which addresses belong to which zone, with labels that
//! dynamic address groups can match. It stands in for the Kubernetes API server in
//! standalone mode and for `zonewall explain --inventory`.
//!
//! ```yaml
//! external_zone: untrust          # zone of every address not listed below
//! endpoints:
//!   - name: web-1
//!     namespace: shop             # optional
//!     zone: dmz
//!     ips: [10.244.1.10, "fd00:244::10"]
//!     labels: {app: web}          # optional; dynamic address groups can match them
//!     interface: zw-web1          # optional host-side interface (used by the agent)
//! ```
//!
//! Only [`Inventory::load_file`] does I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Flow, LabelSource};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot {op} inventory {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{origin}{}: invalid inventory YAML: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Syntax {
        origin: String,
        location: Option<(usize, usize)>,
        message: String,
    },

    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },

    #[error("{origin}: endpoint #{index} '{name}': {problem}")]
    InvalidEndpoint {
        origin: String,
        /// 1-based position in `endpoints`.
        index: usize,
        name: String,
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInventory {
    external_zone: String,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    zone: String,
    ips: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    interface: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub namespace: Option<String>,
    pub zone: String,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub interface: Option<String>,
}

impl Endpoint {
    /// `namespace/name`, or `name` without a namespace.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub origin: String,
    pub external_zone: String,
    pub endpoints: Vec<Endpoint>,
    by_ip: HashMap<IpAddr, usize>,
}

/// Kubernetes-style name: lowercase alphanumerics and `-`, at most 253 characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// PAN-OS zone names: up to 31 characters, letters, digits, `-`, `_`, `.` and spaces.
fn valid_zone(zone: &str) -> bool {
    !zone.trim().is_empty()
        && zone.chars().count() <= 31
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
}

/// Linux interface names: 1-15 bytes, no `/`, whitespace or `:`.
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Kubernetes label key (`[prefix/]name`) and value rules, simplified to the character sets.
fn valid_label(key: &str, value: &str) -> bool {
    let name_ok = |s: &str, max: usize, allow_empty: bool| {
        (allow_empty || !s.is_empty())
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(|p| name_ok(p, 253, false))
        && name_ok(name, 63, false)
        && name_ok(value, 63, true)
}

impl Inventory {
    /// Parses and validates inventory YAML. `origin` names the file in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Inventory, InventoryError> {
        let raw: RawInventory =
            serde_yaml_ng::from_str(text).map_err(|e| InventoryError::Syntax {
                origin: origin.to_string(),
                location: e.location().map(|l| (l.line(), l.column())),
                message: e.to_string(),
            })?;
        Inventory::from_raw(raw, origin)
    }

    /// Validates endpoints however they were read (a file, or the cluster's pods).
    fn from_raw(raw: RawInventory, origin: &str) -> Result<Inventory, InventoryError> {
        if !valid_zone(&raw.external_zone) {
            return Err(InventoryError::Invalid {
                origin: origin.to_string(),
                problem: format!(
                    "external_zone {:?} is not a valid zone name (1-31 letters, digits, '-', '_', '.', spaces)",
                    raw.external_zone
                ),
            });
        }
        // Checked by reference, then moved: the names are not copied.
        let mut addresses: Vec<Vec<IpAddr>> = Vec::with_capacity(raw.endpoints.len());
        let mut by_ip: HashMap<IpAddr, usize> = HashMap::with_capacity(raw.endpoints.len());
        let mut names: HashMap<(Option<&str>, &str), usize> =
            HashMap::with_capacity(raw.endpoints.len());
        let mut interfaces: HashMap<&str, usize> = HashMap::new();
        for (index, e) in raw.endpoints.iter().enumerate() {
            let fail = |problem: String| InventoryError::InvalidEndpoint {
                origin: origin.to_string(),
                index: index + 1,
                name: e.name.clone(),
                problem,
            };
            if !valid_name(&e.name) {
                return Err(fail(
                    "name must be lowercase letters, digits, '-' or '.', as a Kubernetes name"
                        .to_string(),
                ));
            }
            if let Some(ns) = &e.namespace
                && !valid_name(ns)
            {
                return Err(fail(format!(
                    "namespace {ns:?} is not a valid Kubernetes name"
                )));
            }
            if let Some(previous) = names.insert((e.namespace.as_deref(), &e.name), index) {
                return Err(fail(format!(
                    "the same name is already used by endpoint #{}",
                    previous + 1
                )));
            }
            if !valid_zone(&e.zone) {
                return Err(fail(format!("zone {:?} is not a valid zone name", e.zone)));
            }
            if e.ips.is_empty() {
                return Err(fail("ips is empty; list at least one address".to_string()));
            }
            let mut ips = Vec::with_capacity(e.ips.len());
            for text in &e.ips {
                let ip: IpAddr = text.trim().parse().map_err(|_| {
                    fail(format!(
                        "{text:?} is not an IP address (write one address, without a prefix length)"
                    ))
                })?;
                if let Some(previous) = by_ip.insert(ip, index) {
                    return Err(fail(format!(
                        "address {ip} is already listed for endpoint #{}; an address belongs to one endpoint",
                        previous + 1
                    )));
                }
                ips.push(ip);
            }
            for (key, value) in &e.labels {
                if !valid_label(key, value) {
                    return Err(fail(format!(
                        "label {key}={value:?} is not a valid Kubernetes label"
                    )));
                }
            }
            if let Some(interface) = &e.interface {
                if !valid_interface(interface) {
                    return Err(fail(format!(
                        "interface {interface:?} is not a valid Linux interface name (1-15 bytes, no '/', ':' or spaces)"
                    )));
                }
                if let Some(previous) = interfaces.insert(interface, index) {
                    return Err(fail(format!(
                        "interface {interface} is already used by endpoint #{}",
                        previous + 1
                    )));
                }
            }
            addresses.push(ips);
        }
        let endpoints = raw
            .endpoints
            .into_iter()
            .zip(addresses)
            .map(|(e, ips)| Endpoint {
                name: e.name,
                namespace: e.namespace,
                zone: e.zone,
                ips,
                labels: e.labels,
                interface: e.interface,
            })
            .collect();
        Ok(Inventory {
            origin: origin.to_string(),
            external_zone: raw.external_zone,
            endpoints,
            by_ip,
        })
    }

    /// An inventory of endpoints built in code (benchmarks, generated inventories), validated
    /// like a file's.
    pub fn from_endpoints(
        external_zone: &str,
        endpoints: Vec<Endpoint>,
        origin: &str,
    ) -> Result<Inventory, InventoryError> {
        Inventory::from_raw(
            RawInventory {
                external_zone: external_zone.to_owned(),
                endpoints: endpoints
                    .into_iter()
                    .map(|e| RawEndpoint {
                        name: e.name,
                        namespace: e.namespace,
                        zone: e.zone,
                        ips: e.ips.iter().map(ToString::to_string).collect(),
                        labels: e.labels,
                        interface: e.interface,
                    })
                    .collect(),
            },
            origin,
        )
    }

    pub fn load_file(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        Inventory::from_yaml(&text, &path.display().to_string())
    }

    pub fn endpoint(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.by_ip.get(&ip).map(|&i| &self.endpoints[i])
    }

    /// The endpoint's zone, or the external zone for an address not listed.
    pub fn zone_of(&self, ip: IpAddr) -> &str {
        self.endpoint(ip)
            .map_or(self.external_zone.as_str(), |e| e.zone.as_str())
    }
}

impl Inventory {
    /// A flow whose zones come from the inventory (listed endpoints, else the external
    /// zone), as `zonewall explain --inventory` builds it.
    pub fn flow(
        &self,
        source: IpAddr,
        destination: IpAddr,
        protocol: u8,
        source_port: Option<u16>,
        destination_port: Option<u16>,
    ) -> Flow {
        Flow {
            source_zone: self.zone_of(source).to_string(),
            destination_zone: self.zone_of(destination).to_string(),
            source,
            destination,
            protocol,
            source_port,
            destination_port,
        }
    }
}

impl LabelSource for Inventory {
    fn labels(&self, ip: IpAddr) -> Option<&BTreeMap<String, String>> {
        self.endpoint(ip).map(|e| &e.labels)
    }
}

pub mod cluster;

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
external_zone: untrust          # zone of every address not listed below
endpoints:
  - name: web-1
    namespace: shop             # optional
    zone: dmz
    ips: [10.244.1.10, "fd00:244::10"]
    labels: {app: web}          # optional; dynamic address groups can match them
    interface: zw-web1          # optional host-side interface (used by the agent)
  - name: db-1
    zone: trust
    ips: [10.244.2.20]
"#;

    #[test]
    fn reads_the_documented_example() {
        let inv = Inventory::from_yaml(EXAMPLE, "inv.yaml").unwrap();
        assert_eq!(inv.endpoints.len(), 2);
        assert_eq!(inv.zone_of("10.244.1.10".parse().unwrap()), "dmz");
        assert_eq!(inv.zone_of("fd00:244::10".parse().unwrap()), "dmz");
        assert_eq!(inv.zone_of("10.244.2.20".parse().unwrap()), "trust");
        assert_eq!(inv.zone_of("8.8.8.8".parse().unwrap()), "untrust");
        let web = inv.endpoint("10.244.1.10".parse().unwrap()).unwrap();
        assert_eq!(web.qualified_name(), "shop/web-1");
        assert_eq!(web.interface.as_deref(), Some("zw-web1"));
        assert_eq!(
            inv.labels("10.244.1.10".parse().unwrap())
                .unwrap()
                .get("app"),
            Some(&"web".to_string())
        );
        assert!(inv.labels("8.8.8.8".parse().unwrap()).is_none());
        let flow = inv.flow(
            "8.8.8.8".parse().unwrap(),
            "10.244.1.10".parse().unwrap(),
            6,
            Some(40000),
            Some(443),
        );
        assert_eq!(
            (flow.source_zone.as_str(), flow.destination_zone.as_str()),
            ("untrust", "dmz")
        );
    }

    fn err(text: &str) -> String {
        Inventory::from_yaml(text, "inv.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_and_entry() {
        let e = err(
            "external_zone: untrust\nendpoints:\n  - name: a\n    zone: dmz\n    ips: [10.0.0.300]\n",
        );
        assert!(
            e.contains("inv.yaml: endpoint #1 'a'") && e.contains("10.0.0.300"),
            "{e}"
        );
        let e = err(
            "external_zone: untrust\nendpoints:\n  - {name: a, zone: dmz, ips: [10.0.0.1]}\n  - {name: b, zone: dmz, ips: [10.0.0.1]}\n",
        );
        assert!(
            e.contains("endpoint #2 'b'") && e.contains("endpoint #1"),
            "{e}"
        );
        let e = err("external_zone: untrust\nendpoints:\n  - {name: a, zone: dmz, ips: []}\n");
        assert!(e.contains("ips is empty"), "{e}");
        let e = err(
            "external_zone: untrust\nendpoints:\n  - {name: a, zone: dmz, ips: [10.0.0.1], interface: this-name-is-too-long}\n",
        );
        assert!(e.contains("interface"), "{e}");
        let e = err(
            "external_zone: untrust\nendpoints:\n  - {name: a, zone: dmz, ips: [10.0.0.1], colour: red}\n",
        );
        assert!(e.starts_with("inv.yaml:3:"), "{e}");
        assert!(e.contains("colour"), "{e}");
        let e = err("endpoints: []\n");
        assert!(e.contains("external_zone"), "{e}");
        let e = err(
            "external_zone: untrust\nendpoints:\n  - {name: Web, zone: dmz, ips: [10.0.0.1]}\n",
        );
        assert!(e.contains("endpoint #1 'Web'"), "{e}");
        let e = err(
            "external_zone: untrust\nendpoints:\n  - {name: a, zone: dmz, ips: [10.0.0.1], labels: {\"bad key\": x}}\n",
        );
        assert!(e.contains("label"), "{e}");
    }
}
