//! ZonePolicy: the custom resource, its validation and the evaluator (pure, no I/O).
//!
//! ```text
//! translate (model -> ZonePolicy) --> resource::ZonePolicy --compile--> eval::PolicySet
//!                                                                     --> verdict per direction
//!                     resource::ZonePolicy + endpoints --datapath_compile--> map entries
//! ```

pub mod compile;
pub mod datapath_compile;
pub mod directory;
pub mod eval;
pub mod load;
pub mod resource;

pub use compile::{ValidationError, valid_zone_name};
pub use eval::{DecidedBy, Decision, Direction, PolicySet, PolicySetError, PolicyVerdict, RuleHit};
pub use resource::{ANY_ZONE, ZonePolicy, ZonePolicySpec, ZonePolicyStatus};
