//! Firewall sources: where the security team's policy is read from.

pub mod panos;
