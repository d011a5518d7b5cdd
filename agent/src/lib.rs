//! zonewall: zone-based firewall policy from the firewall manager, enforced in Kubernetes
//! with eBPF, with every cross-zone flow reported to the SIEM.
//!
//! Data flows one way: firewall source -> model -> translate -> ZonePolicy -> compile ->
//! maps -> programs -> events -> flow table -> format -> sink. This crate holds every
//! userspace part; `main.rs` only wires them together.

pub mod datapath;
pub mod explain;
pub mod firewall;
pub mod flows;
pub mod inventory;
pub mod metrics;
pub mod model;
pub mod node;
pub mod policy;
pub mod retired;
pub mod sync;
pub mod translate;
