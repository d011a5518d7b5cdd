//! Palo Alto Networks PAN-OS and Panorama.

pub mod client;
