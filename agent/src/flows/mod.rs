//! Flow records and their SIEM formats (DESIGN.md section 7). This part is pure: the
//! ring-buffer reader, flow table and sinks around it do the I/O.

pub mod events;
pub mod format;
pub mod record;
pub mod sink;

pub use format::{Format, FormatError, FormatOptions};
pub use record::FlowRecord;
