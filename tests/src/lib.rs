//! Harness for zonewall's privileged integration tests.
//!
//! [`Topology`] builds a routed node in network namespaces the test owns: a "node" namespace,
//! any number of "pod" namespaces joined to it by veth pairs with host routes (the way Calico
//! routes pods), and an "external" namespace behind the node. Names are unique per topology,
//! each has its own bpffs pin root, and everything is removed on drop, panics included.
//! Traffic only ever flows between these namespaces.

pub mod agent;
pub mod enforced;
pub mod matrix;
pub mod netns;
pub mod packet;
pub mod privileges;
pub mod topology;

pub use netns::in_netns;
pub use privileges::privileged;
pub use topology::{Pod, Topology};
