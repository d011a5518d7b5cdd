//! Scale of `translate` on a configuration the size of a large Panorama (10,000 rules,
//! 100,000 address objects). Ignored by default (it measures, it does not prove); run with
//! `cargo test --release -p zonewall --test translate_scale -- --ignored --nocapture`.

use std::fmt::Write as _;
use std::time::Instant;

use zonewall::firewall::panos::{self, ResolveOptions};
use zonewall::policy::PolicySet;
use zonewall::translate::{self, TranslateOptions};

const ZONES: [&str; 5] = ["trust", "dmz", "untrust", "mgmt", "lab"];

fn large_config(rules: usize, objects: usize) -> String {
    let mut xml = String::from("<config><shared><address>");
    for i in 0..objects {
        let _ = write!(
            xml,
            "<entry name=\"h{i}\"><ip-netmask>10.{}.{}.{}/32</ip-netmask></entry>",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        );
    }
    xml.push_str("</address><address-group>");
    for g in 0..objects / 50 {
        let _ = write!(xml, "<entry name=\"g{g}\"><static>");
        for m in 0..50 {
            let _ = write!(xml, "<member>h{}</member>", g * 50 + m);
        }
        xml.push_str("</static></entry>");
    }
    xml.push_str("</address-group><pre-rulebase><security><rules>");
    for r in 0..rules {
        let from = ZONES[r % 5];
        let to = if r % 7 == 0 {
            "any"
        } else {
            ZONES[(r / 5) % 5]
        };
        let action = if r % 3 == 0 { "deny" } else { "allow" };
        let _ = write!(
            xml,
            "<entry name=\"rule-{r}\"><from><member>{from}</member></from><to><member>{to}</member></to>\
             <source><member>g{}</member></source><destination><member>h{}</member><member>h{}</member></destination>\
             <service><member>any</member></service><application><member>any</member></application><action>{action}</action></entry>",
            r % (objects / 50),
            (r * 13) % objects,
            (r * 17) % objects
        );
    }
    let zones: String = ZONES
        .iter()
        .map(|z| format!("<entry name=\"{z}\"/>"))
        .collect();
    let _ = write!(
        xml,
        "</rules></security></pre-rulebase></shared><devices><entry name=\"localhost.localdomain\">\
         <template><entry name=\"t\"><config><devices><entry name=\"localhost.localdomain\"><vsys><entry name=\"vsys1\"><zone>{zones}</zone></entry></vsys></entry></devices></config></entry></template>\
         <device-group><entry name=\"dg\"/></device-group></entry></devices></config>"
    );
    xml
}

#[test]
#[ignore = "measures translation time; run explicitly with --ignored"]
fn translate_ten_thousand_rules() {
    let xml = large_config(10_000, 100_000);
    let started = Instant::now();
    let resolved = panos::load_policy(
        &xml,
        "large.xml",
        &ResolveOptions {
            device_group: Some("dg".into()),
            ..ResolveOptions::default()
        },
    )
    .expect("large configuration loads");
    let parsed = started.elapsed();
    let started = Instant::now();
    let translation =
        translate::translate(&resolved, &TranslateOptions::default()).expect("translates");
    let yaml = translate::to_yaml(&translation.policies).expect("yaml");
    let translated = started.elapsed();
    PolicySet::new(&translation.policies).expect("the translation is valid");
    eprintln!(
        "configuration {} bytes, {} rules: parse+resolve {:.2}s; translate+YAML {:.2}s -> {} ZonePolicy objects, {} bytes of YAML",
        xml.len(),
        resolved.policy.rules.len(),
        parsed.as_secs_f64(),
        translated.as_secs_f64(),
        translation.policies.len(),
        yaml.len()
    );
}
