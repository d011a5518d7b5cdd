//! Arbitrary bytes into the PAN-OS configuration parser and resolver: they must return a
//! configuration or an error, never panic, hang or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonewall::firewall::panos::{Limits, ResolveOptions, parse_config, resolve, targets};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse_config(text, "fuzz", Limits::default()) else {
        return;
    };
    // Resolve for every device group / vsys the input names, plus the default choice.
    let mut choices = vec![None];
    choices.extend(targets(&config).into_iter().map(Some));
    for device_group in choices {
        let options = ResolveOptions {
            device_group,
            ..ResolveOptions::default()
        };
        let _ = resolve(&config, &options);
    }
});
