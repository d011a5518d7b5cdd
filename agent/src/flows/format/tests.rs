//! Formatter tests: the specifications' own examples, golden lines for zonewall records,
//! log-injection attempts, and property tests that parse every line back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::rfc5424::{Facility, Severity, priority};
use super::*;
use crate::flows::record::*;

// ---------------------------------------------------------------------------------------
// Records

const SECOND: u64 = 1_000_000_000;
/// 2023-11-14T22:13:20.123456789Z
const T0: u64 = 1_700_000_000 * SECOND + 123_456_789;

fn options() -> FormatOptions {
    FormatOptions {
        product_version: "1.2.3".to_owned(),
        ..FormatOptions::default()
    }
}

/// An allowed IPv4 TCP flow between two workloads, ended by FIN.
fn tcp_end() -> FlowRecord {
    FlowRecord {
        class: EventClass::End,
        start: UnixNanos(T0),
        end: Some(UnixNanos(T0 + 5 * SECOND + 500_000_000)),
        tuple: FiveTuple {
            source: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            destination: IpAddr::V4(Ipv4Addr::new(10, 4, 5, 6)),
            protocol: 6,
            source_port: Some(40000),
            destination_port: Some(443),
            icmp: None,
        },
        source_zone: "trusted".to_owned(),
        destination_zone: "dmz".to_owned(),
        source_workload: Some(Workload {
            namespace: "shop".to_owned(),
            name: "web-7d9".to_owned(),
            node: Some("node-a".to_owned()),
            labels: Default::default(),
        }),
        destination_workload: Some(Workload {
            namespace: "payments".to_owned(),
            name: "api-0".to_owned(),
            node: Some("node-b".to_owned()),
            labels: Default::default(),
        }),
        rule: RuleRef {
            name: "allow-web".to_owned(),
            uuid: Some("9f1c2b3a-0000-4000-8000-000000000001".to_owned()),
            device_group: Some("k8s-prod".to_owned()),
            rulebase: Some(Rulebase::Pre),
        },
        policy: Some(PolicyRef {
            name: "zone-trusted".to_owned(),
            tier: "firewall".to_owned(),
        }),
        action: Action::Allow,
        counters: Counters {
            packets_from_source: 10,
            bytes_from_source: 1200,
            packets_from_destination: 8,
            bytes_from_destination: 6400,
        },
        end_reason: Some(EndReason::TcpFin),
        observation: ObservationPoint {
            node: "node-a".to_owned(),
            interface: "cali1234".to_owned(),
            direction: Direction::Egress,
        },
        repeat_count: 1,
        reporting_host: "node-a".to_owned(),
    }
}

/// Three aggregated ICMPv6 echo requests from an external peer, denied by the default rule.
fn icmpv6_deny() -> FlowRecord {
    FlowRecord {
        class: EventClass::Deny,
        start: UnixNanos(T0),
        end: Some(UnixNanos(T0 + 2 * SECOND)),
        tuple: FiveTuple {
            source: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            destination: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            protocol: 58,
            source_port: None,
            destination_port: None,
            icmp: Some(Icmp {
                icmp_type: 128,
                code: 0,
            }),
        },
        source_zone: "untrust".to_owned(),
        destination_zone: "restricted".to_owned(),
        source_workload: None,
        destination_workload: Some(Workload {
            namespace: "vault".to_owned(),
            name: "db-0".to_owned(),
            node: None,
            labels: Default::default(),
        }),
        rule: RuleRef {
            name: "interzone-default".to_owned(),
            uuid: None,
            device_group: None,
            rulebase: Some(Rulebase::Default),
        },
        policy: None,
        action: Action::Deny,
        counters: Counters::default(),
        end_reason: Some(EndReason::PolicyDeny),
        observation: ObservationPoint {
            node: "node-b".to_owned(),
            interface: "veth9".to_owned(),
            direction: Direction::Ingress,
        },
        repeat_count: 3,
        reporting_host: "node-b".to_owned(),
    }
}

/// Every string field of `record` set to `text`, and the product version too.
fn with_all_strings(text: &str) -> (FlowRecord, FormatOptions) {
    let mut record = tcp_end();
    let s = || text.to_owned();
    record.source_zone = s();
    record.destination_zone = s();
    record.source_workload = Some(Workload {
        namespace: s(),
        name: s(),
        node: Some(s()),
        labels: Default::default(),
    });
    record.destination_workload = Some(Workload {
        namespace: s(),
        name: s(),
        node: Some(s()),
        labels: Default::default(),
    });
    record.rule = RuleRef {
        name: s(),
        uuid: Some(s()),
        device_group: Some(s()),
        rulebase: Some(Rulebase::Post),
    };
    record.policy = Some(PolicyRef {
        name: s(),
        tier: s(),
    });
    record.observation.node = s();
    record.observation.interface = s();
    record.reporting_host = s();
    let options = FormatOptions {
        product_version: s(),
        ..FormatOptions::default()
    };
    (record, options)
}

// ---------------------------------------------------------------------------------------
// Parsers written for the tests, independent of the formatters.

/// Parsed key/value pairs, in line order.
type Pairs = Vec<(String, String)>;

/// Splits a CEF line into its 7 header fields (the first is the CEF version) and the
/// extension pairs, undoing the CEF escapes. Fails on anything CEF does not allow.
fn parse_cef(line: &str) -> Result<(Vec<String>, Pairs), String> {
    let rest = line.strip_prefix("CEF:").ok_or("no CEF: prefix")?;
    let chars: Vec<char> = rest.chars().collect();
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while fields.len() < 7 {
        let c = *chars.get(i).ok_or("header ended before 7 fields")?;
        match c {
            '\\' => {
                let next = *chars.get(i + 1).ok_or("dangling backslash in header")?;
                if next != '\\' && next != '|' {
                    return Err(format!("invalid header escape \\{next}"));
                }
                current.push(next);
                i += 2;
            }
            '|' => {
                fields.push(std::mem::take(&mut current));
                i += 1;
            }
            c => {
                current.push(c);
                i += 1;
            }
        }
    }
    let extension = &chars[i..];
    // Every unescaped '=' ends a key.
    let mut keys = Vec::new();
    let mut j = 0;
    while j < extension.len() {
        match extension[j] {
            '\\' => j += 2,
            '=' => {
                let mut start = j;
                while start > 0 && extension[start - 1].is_ascii_alphanumeric() {
                    start -= 1;
                }
                if start == j {
                    return Err(format!("'=' without a key at {j}"));
                }
                if start > 0 && extension[start - 1] != ' ' {
                    return Err(format!("key at {start} not preceded by a space"));
                }
                keys.push((start, j));
                j += 1;
            }
            _ => j += 1,
        }
    }
    if !extension.is_empty() && keys.first().map(|(start, _)| *start) != Some(0) {
        return Err("extension does not start with a key".to_owned());
    }
    let mut pairs = Vec::new();
    for (index, (start, equals)) in keys.iter().enumerate() {
        let end = keys
            .get(index + 1)
            .map(|(next, _)| next - 1)
            .unwrap_or(extension.len());
        let key: String = extension[*start..*equals].iter().collect();
        let mut value = String::new();
        let raw = &extension[equals + 1..end];
        let mut k = 0;
        while k < raw.len() {
            if raw[k] == '\\' {
                match raw.get(k + 1) {
                    Some('\\') => value.push('\\'),
                    Some('=') => value.push('='),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    other => return Err(format!("invalid extension escape {other:?}")),
                }
                k += 2;
            } else {
                value.push(raw[k]);
                k += 1;
            }
        }
        pairs.push((key, value));
    }
    Ok((fields, pairs))
}

#[derive(Debug, PartialEq)]
struct Syslog {
    header: Vec<String>,
    structured_data: Vec<(String, Vec<(String, String)>)>,
    msg: Option<String>,
}

/// Parses an RFC 5424 message: six header fields, SD-ELEMENTs with unescaped values,
/// optional MSG. Fails on an unescaped `]` inside a value or a malformed element.
fn parse_rfc5424(line: &str) -> Result<Syslog, String> {
    let mut parts = line.splitn(7, ' ');
    let header: Vec<String> = parts.by_ref().take(6).map(str::to_owned).collect();
    if header.len() != 6 {
        return Err("fewer than 6 header fields".to_owned());
    }
    let rest: Vec<char> = parts.next().ok_or("no structured data")?.chars().collect();
    let at = |i: usize| rest.get(i).copied().ok_or(format!("ended at {i}"));
    let mut structured_data = Vec::new();
    let mut i = 0;
    if at(0)? == '-' {
        i = 1;
    } else {
        while rest.get(i) == Some(&'[') {
            i += 1;
            let mut id = String::new();
            while !matches!(at(i)?, ' ' | ']') {
                id.push(at(i)?);
                i += 1;
            }
            let (name, enterprise) = id.split_once('@').unwrap_or((&id, "0"));
            if !rfc5424::is_sd_name(name) || enterprise.parse::<u32>().is_err() {
                return Err(format!("bad SD-ID {id:?}"));
            }
            let mut params = Vec::new();
            loop {
                match at(i)? {
                    ']' => {
                        i += 1;
                        break;
                    }
                    ' ' => i += 1,
                    other => return Err(format!("expected ' ' or ']', got {other:?}")),
                }
                let mut name = String::new();
                while at(i)? != '=' {
                    name.push(at(i)?);
                    i += 1;
                }
                if !rfc5424::is_sd_name(&name) {
                    return Err(format!("bad PARAM-NAME {name:?}"));
                }
                if at(i + 1)? != '"' {
                    return Err("PARAM-VALUE not quoted".to_owned());
                }
                i += 2;
                let mut value = String::new();
                loop {
                    match at(i)? {
                        '\\' => {
                            let next = at(i + 1)?;
                            if matches!(next, '"' | '\\' | ']') {
                                value.push(next);
                                i += 2;
                            } else {
                                // RFC 5424 6.3.3: any other backslash is a plain character.
                                value.push('\\');
                                i += 1;
                            }
                        }
                        '"' => {
                            i += 1;
                            break;
                        }
                        ']' => return Err("unescaped ']' in PARAM-VALUE".to_owned()),
                        c => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                params.push((name, value));
            }
            structured_data.push((id, params));
        }
        if structured_data.is_empty() {
            return Err("neither '-' nor an SD-ELEMENT".to_owned());
        }
    }
    let msg = match rest.get(i) {
        None => None,
        Some(' ') => Some(rest[i + 1..].iter().collect()),
        Some(other) => return Err(format!("junk {other:?} after structured data")),
    };
    Ok(Syslog {
        header,
        structured_data,
        msg,
    })
}

/// Splits a LEEF 2.0 line into the 5 header fields after `LEEF:2.0`, the delimiter and
/// the attribute pairs.
fn parse_leef(line: &str) -> Result<(Vec<String>, char, Pairs), String> {
    let parts: Vec<&str> = line.splitn(7, '|').collect();
    if parts.len() != 7 || parts[0] != "LEEF:2.0" {
        return Err(format!("not a LEEF 2.0 header: {parts:?}"));
    }
    let field = parts[5];
    let delimiter = if let Some(hex) = field.strip_prefix("0x").or(field.strip_prefix('x')) {
        u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or("bad hex delimiter")?
    } else {
        let mut chars = field.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => c,
            _ => return Err(format!("bad delimiter field {field:?}")),
        }
    };
    let mut pairs = Vec::new();
    if !parts[6].is_empty() {
        for attribute in parts[6].split(delimiter) {
            let (key, value) = attribute
                .split_once('=')
                .ok_or(format!("attribute without '=': {attribute:?}"))?;
            pairs.push((key.to_owned(), value.to_owned()));
        }
    }
    let header = parts[1..5].iter().map(|s| (*s).to_owned()).collect();
    Ok((header, delimiter, pairs))
}

fn owned(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect()
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

// ---------------------------------------------------------------------------------------
// Examples from the specifications

/// CEF specification (ArcSight "Implementing ArcSight CEF"), the introductory example of
/// a CEF message after the syslog prefix.
#[test]
fn cef_spec_basic_example() {
    let header = cef::Header {
        vendor: "Security",
        product: "threatmanager",
        version: "1.0",
        signature: "100",
        name: "worm successfully stopped",
        severity: 10,
    };
    let extension = [
        ("src", "10.0.0.1".to_owned()),
        ("dst", "2.1.2.2".to_owned()),
        ("spt", "1232".to_owned()),
    ];
    assert_eq!(
        cef::line(&header, &extension),
        "CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232"
    );
}

/// CEF specification, character encoding examples: a pipe and a backslash in the header,
/// a backslash and an equal sign in an extension value, a pipe in an extension value
/// left alone, and a multi-line extension value.
#[test]
fn cef_spec_escaping_examples() {
    let header = |name| cef::Header {
        vendor: "security",
        product: "threatmanager",
        version: "1.0",
        signature: "100",
        name,
        severity: 10,
    };
    let pairs = |act: &str| {
        [
            ("src", "10.0.0.1".to_owned()),
            ("act", act.to_owned()),
            ("dst", "1.1.1.1".to_owned()),
        ]
    };
    assert_eq!(
        cef::line(&header("detected a | in message"), &pairs("blocked a |")),
        "CEF:0|security|threatmanager|1.0|100|detected a \\| in message|10|src=10.0.0.1 act=blocked a | dst=1.1.1.1"
    );
    assert_eq!(
        cef::line(&header("detected a \\ in packet"), &pairs("blocked a \\")),
        "CEF:0|security|threatmanager|1.0|100|detected a \\\\ in packet|10|src=10.0.0.1 act=blocked a \\\\ dst=1.1.1.1"
    );
    assert_eq!(
        cef::line(&header("detected a = in message"), &pairs("blocked a =")),
        "CEF:0|security|threatmanager|1.0|100|detected a = in message|10|src=10.0.0.1 act=blocked a \\= dst=1.1.1.1"
    );
    let multi_line = [
        ("src", "10.0.0.1".to_owned()),
        ("msg", "Detected a threat.\n No action needed.".to_owned()),
    ];
    assert_eq!(
        cef::line(&header("Detected a threat. No action needed."), &multi_line),
        "CEF:0|security|threatmanager|1.0|100|Detected a threat. No action needed.|10|src=10.0.0.1 msg=Detected a threat.\\n No action needed."
    );
    assert_eq!(cef::escape_value("a\r\nb"), "a\\r\\nb");
}

fn spec_header<'a>(priority: u8, timestamp: &'a str, hostname: &'a str) -> rfc5424::Header<'a> {
    rfc5424::Header {
        priority,
        timestamp,
        hostname,
        app_name: "evntslog",
        procid: "-",
        msgid: "ID47",
    }
}

/// RFC 5424 section 6.5, examples 1 to 4 (the BOM written as U+FEFF), and the PRI
/// arithmetic of section 6.2.1 that produces their `<34>` and `<165>`.
#[test]
fn rfc5424_section_6_5_examples() {
    assert_eq!(priority(Facility::AUTH, Severity::Critical), 34);
    assert_eq!(priority(Facility::LOCAL4, Severity::Notice), 165);
    assert_eq!(priority(Facility::KERN, Severity::Emergency), 0);

    // Example 1: no structured data, a UTF-8 MSG with BOM.
    let header = rfc5424::Header {
        app_name: "su",
        msgid: "ID47",
        ..spec_header(34, "2003-10-11T22:14:15.003Z", "mymachine.example.com")
    };
    assert_eq!(
        rfc5424::message(
            &header,
            &[],
            Some("\u{FEFF}'su root' failed for lonvick on /dev/pts/8")
        ),
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{FEFF}'su root' failed for lonvick on /dev/pts/8"
    );

    // Example 2: nil MSGID, a PROCID, a time offset.
    let header = rfc5424::Header {
        app_name: "myproc",
        procid: "8710",
        msgid: "-",
        ..spec_header(165, "2003-08-24T05:14:15.000003-07:00", "192.0.2.1")
    };
    assert_eq!(
        rfc5424::message(&header, &[], Some("%% It's time to make the do-nuts.")),
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts."
    );

    // Example 3: one SD-ELEMENT and a MSG.
    let event = rfc5424::SdElement {
        id: "exampleSDID@32473".to_owned(),
        params: vec![
            ("iut", "3".to_owned()),
            ("eventSource", "Application".to_owned()),
            ("eventID", "1011".to_owned()),
        ],
    };
    let header = spec_header(165, "2003-10-11T22:14:15.003Z", "mymachine.example.com");
    assert_eq!(
        rfc5424::message(
            &header,
            std::slice::from_ref(&event),
            Some("\u{FEFF}An application event log entry...")
        ),
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] \u{FEFF}An application event log entry..."
    );

    // Example 4: two SD-ELEMENTs, no MSG.
    let priority_element = rfc5424::SdElement {
        id: "examplePriority@32473".to_owned(),
        params: vec![("class", "high".to_owned())],
    };
    let line = rfc5424::message(&header, &[event, priority_element], None);
    assert_eq!(
        line,
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]"
    );
    let parsed = parse_rfc5424(&line).expect("example 4 parses");
    assert_eq!(parsed.structured_data.len(), 2);
    assert_eq!(parsed.msg, None);
}

/// RFC 5424 section 6.3.3: `"`, `\` and `]` are escaped in PARAM-VALUE, nothing else.
#[test]
fn rfc5424_param_value_escaping() {
    assert_eq!(
        rfc5424::escape_param_value(r#"a"b\c]d[e=f"#),
        r#"a\"b\\c\]d[e=f"#
    );
    assert_eq!(
        rfc5424::escape_param_value("x\ny\0z"),
        "x\u{FFFD}y\u{FFFD}z"
    );
    assert!(rfc5424::is_sd_name("exampleSDID"));
    for bad in [
        "",
        "a b",
        "a=b",
        "a]b",
        "a\"b",
        "ä",
        "012345678901234567890123456789012",
    ] {
        assert!(!rfc5424::is_sd_name(bad), "{bad:?}");
    }
    assert_eq!(rfc5424::header_field("", 255), "-");
    assert_eq!(rfc5424::header_field("host name\n", 255), "host_name_");
    assert_eq!(rfc5424::header_field("abcdef", 4), "abcd");
}

/// IBM QRadar LEEF guide, "LEEF event components": the LEEF 2.0 example with `^` as the
/// delimiter.
#[test]
fn leef_spec_caret_example() {
    let header = leef::Header {
        vendor: "Lancope",
        product: "StealthWatch",
        version: "1.0",
        event_id: "41",
        delimiter: LeefDelimiter::new('^').expect("caret is a delimiter"),
    };
    let attributes = [
        ("src", "10.0.1.8".to_owned()),
        ("dst", "10.0.0.5".to_owned()),
        ("sev", "5".to_owned()),
        ("srcPort", "81".to_owned()),
        ("dstPort", "21".to_owned()),
    ];
    assert_eq!(
        leef::line(&header, &attributes),
        "LEEF:2.0|Lancope|StealthWatch|1.0|41|^|src=10.0.1.8^dst=10.0.0.5^sev=5^srcPort=81^dstPort=21"
    );
}

/// IBM QRadar LEEF guide: a delimiter may be given as a hex code (`x09`/`0x09`).
#[test]
fn leef_delimiter_field_and_validation() {
    assert_eq!(leef::delimiter_field(LeefDelimiter::default()), "x09");
    let pipe = LeefDelimiter::new('|').expect("pipe is a delimiter");
    assert_eq!(leef::delimiter_field(pipe), "x7C");
    for bad in ['=', 'a', '7', ' ', '\n', '\r', 'é'] {
        assert_eq!(
            LeefDelimiter::new(bad),
            Err(FormatError::InvalidLeefDelimiter { delimiter: bad })
        );
    }
    // A value can never contain the delimiter, a line break or a header pipe.
    let caret = LeefDelimiter::new('^').expect("caret");
    assert_eq!(
        leef::value("a^b\tc\nd=e|f", caret),
        "a\u{FFFD}b\u{FFFD}c\u{FFFD}d=e|f"
    );
    assert_eq!(leef::header_field("1|2\n"), "1\u{FFFD}2\u{FFFD}");
}

// ---------------------------------------------------------------------------------------
// Golden lines for zonewall records

#[test]
fn cef_tcp_end_golden() {
    assert_eq!(
        Format::Cef.format_with(&tcp_end(), &options()),
        "CEF:0|zonewall|zonewall|1.2.3|end|TRAFFIC|1|rt=1700000005623 dvchost=node-a \
         src=10.1.2.3 dst=10.4.5.6 cs1Label=Rule cs1=allow-web cs4Label=Source Zone \
         cs4=trusted cs5Label=Destination Zone cs5=dmz cs6Label=Rule UUID \
         cs6=9f1c2b3a-0000-4000-8000-000000000001 cnt=1 spt=40000 dpt=443 proto=tcp \
         act=allow flexNumber1Label=Total bytes flexNumber1=7600 in=1200 out=6400 \
         cn2Label=Packets cn2=18 start=1700000000123 end=1700000005623 \
         cn3Label=Elapsed time in seconds cn3=5 reason=tcp-fin deviceDirection=1 \
         ZonewallPacketsSent=10 ZonewallPacketsReceived=8 ZonewallDeviceGroup=k8s-prod \
         ZonewallRulebase=pre ZonewallPolicy=zone-trusted ZonewallTier=firewall \
         ZonewallSourceNamespace=shop ZonewallSourceWorkload=web-7d9 \
         ZonewallSourceNode=node-a ZonewallDestinationNamespace=payments \
         ZonewallDestinationWorkload=api-0 ZonewallDestinationNode=node-b \
         ZonewallObservationNode=node-a ZonewallObservationInterface=cali1234"
    );
}

#[test]
fn cef_ipv6_icmp_deny() {
    let line = Format::Cef.format_with(&icmpv6_deny(), &options());
    assert!(line.starts_with("CEF:0|zonewall|zonewall|1.2.3|deny|TRAFFIC|5|"));
    let (_, pairs) = parse_cef(&line).expect("parses");
    assert_eq!(lookup(&pairs, "c6a2Label"), Some("Source IPv6 Address"));
    assert_eq!(lookup(&pairs, "c6a2"), Some("2001:db8::1"));
    assert_eq!(
        lookup(&pairs, "c6a3Label"),
        Some("Destination IPv6 Address")
    );
    assert_eq!(lookup(&pairs, "c6a3"), Some("2001:db8::2"));
    for absent in [
        "src",
        "dst",
        "spt",
        "dpt",
        "cs6",
        "ZonewallSourceWorkload",
        "ZonewallPolicy",
    ] {
        assert_eq!(lookup(&pairs, absent), None, "{absent}");
    }
    assert_eq!(lookup(&pairs, "proto"), Some("ipv6-icmp"));
    assert_eq!(lookup(&pairs, "act"), Some("deny"));
    assert_eq!(lookup(&pairs, "cnt"), Some("3"));
    assert_eq!(lookup(&pairs, "ZonewallIcmpType"), Some("128"));
    assert_eq!(lookup(&pairs, "ZonewallIcmpCode"), Some("0"));
    assert_eq!(lookup(&pairs, "reason"), Some("policy-deny"));
    assert_eq!(lookup(&pairs, "deviceDirection"), Some("0"));
    assert_eq!(lookup(&pairs, "ZonewallDestinationWorkload"), Some("db-0"));
    assert_eq!(lookup(&pairs, "ZonewallDestinationNode"), None);
}

#[test]
fn rfc5424_tcp_end_golden() {
    assert_eq!(
        Format::Rfc5424.format_with(&tcp_end(), &options()),
        "<134>1 2023-11-14T22:13:25.623456Z node-a zonewall - end \
         [flow@32473 class=\"end\" action=\"allow\" proto=\"tcp\" src=\"10.1.2.3\" \
         spt=\"40000\" dst=\"10.4.5.6\" dpt=\"443\" srcZone=\"trusted\" dstZone=\"dmz\" \
         start=\"2023-11-14T22:13:20.123456Z\" end=\"2023-11-14T22:13:25.623456Z\" \
         packetsSent=\"10\" bytesSent=\"1200\" packetsReceived=\"8\" bytesReceived=\"6400\" \
         repeatCount=\"1\" endReason=\"tcp-fin\"]\
         [rule@32473 name=\"allow-web\" uuid=\"9f1c2b3a-0000-4000-8000-000000000001\" \
         deviceGroup=\"k8s-prod\" rulebase=\"pre\" policy=\"zone-trusted\" tier=\"firewall\"]\
         [source@32473 namespace=\"shop\" name=\"web-7d9\" node=\"node-a\"]\
         [destination@32473 namespace=\"payments\" name=\"api-0\" node=\"node-b\"]\
         [observer@32473 node=\"node-a\" interface=\"cali1234\" direction=\"egress\"] \
         end allow tcp 10.1.2.3:40000 -> 10.4.5.6:443 (trusted -> dmz)"
    );
}

#[test]
fn rfc5424_deny_severity_facility_and_enterprise_number() {
    let record = icmpv6_deny();
    let line = Format::Rfc5424.format(&record);
    // local0 (16) * 8 + warning (4)
    assert!(line.starts_with("<132>1 2023-11-14T22:13:22.123456Z node-b zonewall - deny ["));
    assert!(
        line.ends_with(" deny deny ipv6-icmp 2001:db8::1 -> 2001:db8::2 (untrust -> restricted)")
    );

    let mut custom = options();
    custom.syslog.facility = "local7".parse().expect("facility");
    custom.syslog.denied_severity = "err".parse().expect("severity");
    custom.syslog.enterprise_number = 99999;
    custom.syslog.procid = Some("4242".to_owned());
    let line = Format::Rfc5424.format_with(&record, &custom);
    assert!(line.starts_with("<187>1 "), "{line}");
    let parsed = parse_rfc5424(&line).expect("parses");
    assert_eq!(parsed.header[3], "zonewall");
    assert_eq!(parsed.header[4], "4242");
    let ids: Vec<&str> = parsed
        .structured_data
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "flow@99999",
            "rule@99999",
            "destination@99999",
            "observer@99999"
        ]
    );

    // Audit mode denials are warnings too; allowed flows are informational.
    let mut audit = tcp_end();
    audit.class = EventClass::WouldDeny;
    assert!(Format::Rfc5424.format(&audit).starts_with("<132>1 "));
    let mut start = tcp_end();
    start.class = EventClass::Start;
    start.end = None;
    start.end_reason = None;
    assert!(
        Format::Rfc5424
            .format(&start)
            .starts_with("<134>1 2023-11-14T22:13:20.123456Z ")
    );
}

#[test]
fn leef_tcp_end_golden() {
    let attributes = [
        "devTime=2023-11-14T22:13:25.623+0000",
        "devTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
        "cat=allow",
        "sev=1",
        "proto=tcp",
        "src=10.1.2.3",
        "dst=10.4.5.6",
        "srcPort=40000",
        "dstPort=443",
        "srcBytes=1200",
        "dstBytes=6400",
        "srcPackets=10",
        "dstPackets=8",
        "totalPackets=18",
        "policy=allow-web",
        "ruleUuid=9f1c2b3a-0000-4000-8000-000000000001",
        "deviceGroup=k8s-prod",
        "rulebase=pre",
        "zonePolicy=zone-trusted",
        "tier=firewall",
        "srcZone=trusted",
        "dstZone=dmz",
        "action=allow",
        "startTime=2023-11-14T22:13:20.123+0000",
        "endTime=2023-11-14T22:13:25.623+0000",
        "endReason=tcp-fin",
        "repeatCount=1",
        "srcNamespace=shop",
        "srcWorkload=web-7d9",
        "srcNode=node-a",
        "dstNamespace=payments",
        "dstWorkload=api-0",
        "dstNode=node-b",
        "observerNode=node-a",
        "observerInterface=cali1234",
        "observerDirection=egress",
        "reportingHost=node-a",
    ];
    assert_eq!(
        Format::Leef.format_with(&tcp_end(), &options()),
        format!(
            "LEEF:2.0|zonewall|zonewall|1.2.3|end|x09|{}",
            attributes.join("\t")
        )
    );
}

#[test]
fn leef_ipv6_deny_with_caret_delimiter() {
    let mut caret = options();
    caret.leef_delimiter = LeefDelimiter::new('^').expect("caret");
    let line = Format::Leef.format_with(&icmpv6_deny(), &caret);
    assert!(line.starts_with("LEEF:2.0|zonewall|zonewall|1.2.3|deny|^|devTime="));
    let (_, delimiter, pairs) = parse_leef(&line).expect("parses");
    assert_eq!(delimiter, '^');
    assert_eq!(lookup(&pairs, "src"), Some("2001:db8::1"));
    assert_eq!(lookup(&pairs, "sev"), Some("5"));
    assert_eq!(lookup(&pairs, "cat"), Some("deny"));
    assert_eq!(lookup(&pairs, "srcPort"), None);
    assert_eq!(lookup(&pairs, "icmpType"), Some("128"));
    assert_eq!(lookup(&pairs, "usrName"), None);
}

#[test]
fn json_tcp_end_golden() {
    let line = Format::Json.format_with(&tcp_end(), &options());
    assert!(!line.contains('\n') && !line.ends_with(' '));
    let expected = json!({
        "@timestamp": "2023-11-14T22:13:25.623456789Z",
        "ecs": { "version": "8.11.0" },
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "end", "allowed"],
            "action": "flow_terminated",
            "outcome": "success",
            "reason": "tcp-fin",
            "module": "zonewall",
            "dataset": "zonewall.flow",
            "start": "2023-11-14T22:13:20.123456789Z",
            "end": "2023-11-14T22:13:25.623456789Z",
            "duration": 5_500_000_000u64,
        },
        "source": { "ip": "10.1.2.3", "port": 40000, "bytes": 1200, "packets": 10 },
        "destination": { "ip": "10.4.5.6", "port": 443, "bytes": 6400, "packets": 8 },
        "network": {
            "transport": "tcp",
            "iana_number": "6",
            "type": "ipv4",
            "bytes": 7600,
            "packets": 18,
            "direction": "egress",
        },
        "observer": {
            "hostname": "node-a",
            "type": "firewall",
            "vendor": "zonewall",
            "product": "zonewall",
            "version": "1.2.3",
            "ingress": { "zone": "trusted" },
            "egress": { "zone": "dmz", "interface": { "name": "cali1234" } },
        },
        "rule": {
            "name": "allow-web",
            "uuid": "9f1c2b3a-0000-4000-8000-000000000001",
            "ruleset": "k8s-prod",
        },
        "orchestrator": { "type": "kubernetes", "namespace": "shop" },
        "zonewall": {
            "event_class": "end",
            "action": "allow",
            "repeat_count": 1,
            "rulebase": "pre",
            "policy": { "name": "zone-trusted", "tier": "firewall" },
            "observation": { "node": "node-a", "interface": "cali1234", "direction": "egress" },
            "source": { "kubernetes": {
                "namespace": "shop", "pod": { "name": "web-7d9" }, "node": { "name": "node-a" },
            } },
            "destination": { "kubernetes": {
                "namespace": "payments", "pod": { "name": "api-0" }, "node": { "name": "node-b" },
            } },
        },
    });
    let parsed: Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(parsed, expected);
}

#[test]
fn json_ipv6_deny() {
    let parsed: Value =
        serde_json::from_str(&Format::Json.format(&icmpv6_deny())).expect("valid JSON");
    assert_eq!(parsed["event"]["action"], "flow_denied");
    assert_eq!(parsed["event"]["outcome"], "failure");
    assert_eq!(parsed["event"]["type"], json!(["connection", "denied"]));
    assert_eq!(parsed["network"]["type"], "ipv6");
    assert_eq!(parsed["network"]["transport"], "ipv6-icmp");
    assert_eq!(parsed["network"]["iana_number"], "58");
    assert_eq!(parsed["source"].get("port"), None);
    assert_eq!(
        parsed["zonewall"]["icmp"],
        json!({ "type": 128, "code": 0 })
    );
    assert_eq!(parsed["zonewall"]["repeat_count"], 3);
    assert_eq!(parsed["zonewall"].get("source"), None);
    assert_eq!(parsed["orchestrator"]["namespace"], "vault");
    assert_eq!(parsed["observer"]["ingress"]["interface"]["name"], "veth9");
    assert_eq!(parsed["rule"].get("uuid"), None);
}

#[test]
fn format_names() {
    for format in Format::ALL {
        assert_eq!(format.as_str().parse::<Format>(), Ok(format));
        assert_eq!(format.to_string(), format.as_str());
    }
    assert_eq!("CEF".parse::<Format>(), Ok(Format::Cef));
    assert_eq!("syslog".parse::<Format>(), Ok(Format::Rfc5424));
    assert_eq!(
        "xml".parse::<Format>(),
        Err(FormatError::UnknownFormat {
            name: "xml".to_owned()
        })
    );
    assert_eq!("local0".parse::<Facility>(), Ok(Facility::LOCAL0));
    assert_eq!("23".parse::<Facility>(), Ok(Facility::LOCAL7));
    assert!("24".parse::<Facility>().is_err());
    assert!("local8".parse::<Facility>().is_err());
    assert_eq!("info".parse::<Severity>(), Ok(Severity::Informational));
    assert!("loud".parse::<Severity>().is_err());
}

// ---------------------------------------------------------------------------------------
// Log injection

const HOSTILE: &[&str] = &[
    "a|b",
    "a=b",
    "a\\b",
    "a]b",
    "a\"b",
    "line1\nline2",
    "cr\rlf",
    "crlf\r\n<134>1 2023-11-14T22:13:25Z forged zonewall - end -",
    "nul\0byte",
    "tab\tafter",
    "nel\u{85}after",
    "sep\u{2028}after",
    "del\u{7f}after",
    "ünïcødé 🚀 名前",
    "ends with backslash\\",
    "\\=",
    "CEF:0|forged|forged|1|end|TRAFFIC|10|act=allow",
    " cs1=forged act=allow",
    "x\ncs1=forged",
    "\"] [forged@32473 a=\"b",
    "x\tsrc=6.6.6.6",
    "x^src=6.6.6.6",
    "",
];

/// Checks one formatted record: one line, and everything parses back to exactly the
/// fields the formatter meant to write (so no field was added, lost or forged).
fn check_round_trip(record: &FlowRecord, options: &FormatOptions) {
    for format in Format::ALL {
        let line = format.format_with(record, options);
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "{format}: {line:?}"
        );
        let delimiter = options.leef_delimiter.as_char();
        assert!(
            !line
                .chars()
                .any(|c| is_unsafe_char(c) && !(format == Format::Leef && c == delimiter)),
            "{format} carries a control character: {line:?}"
        );
        assert!(!line.ends_with(' ') || format != Format::Json, "{line:?}");
    }

    // CEF: 7 header fields as written, extension pairs as written.
    let line = Format::Cef.format_with(record, options);
    let (header, pairs) = parse_cef(&line).unwrap_or_else(|e| panic!("CEF {e}: {line:?}"));
    let cef_clean = |value: &str| replace_unsafe(value, &['\n', '\r']);
    assert_eq!(
        header,
        [
            "0".to_owned(),
            cef::VENDOR.to_owned(),
            cef::PRODUCT.to_owned(),
            replace_unsafe(&options.product_version, &[]),
            record.class.as_str().to_owned(),
            cef::NAME.to_owned(),
            cef::severity(record.class).to_string(),
        ]
    );
    let expected: Vec<(String, String)> = cef::extension(record)
        .into_iter()
        .map(|(key, value)| (key.to_owned(), cef_clean(&value)))
        .collect();
    assert_eq!(pairs, expected, "CEF line {line:?}");
    assert_eq!(
        lookup(&pairs, "cs1"),
        Some(cef_clean(&record.rule.name).as_str())
    );
    assert_eq!(
        lookup(&pairs, "cs4"),
        Some(cef_clean(&record.source_zone).as_str())
    );
    assert_eq!(
        lookup(&pairs, "dvchost"),
        Some(cef_clean(&record.reporting_host).as_str())
    );

    // RFC 5424: header fields valid, structured data as written.
    let line = Format::Rfc5424.format_with(record, options);
    let parsed = parse_rfc5424(&line).unwrap_or_else(|e| panic!("RFC 5424 {e}: {line:?}"));
    assert_eq!(
        parsed.header[2],
        rfc5424::header_field(&record.reporting_host, 255)
    );
    for field in &parsed.header {
        assert!(field.chars().all(|c| c.is_ascii_graphic()), "{field:?}");
    }
    let expected: Vec<(String, Vec<(String, String)>)> =
        rfc5424::structured_data(record, options.syslog.enterprise_number)
            .into_iter()
            .map(|element| {
                let params = element
                    .params
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), replace_unsafe(value, &[])))
                    .collect();
                (element.id, params)
            })
            .collect();
    assert_eq!(parsed.structured_data, expected, "RFC 5424 line {line:?}");
    let rule = &parsed.structured_data[1].1;
    assert_eq!(
        lookup(rule, "name"),
        Some(replace_unsafe(&record.rule.name, &[]).as_str())
    );
    assert!(parsed.msg.is_some());

    // LEEF: header as written, attributes as written.
    let line = Format::Leef.format_with(record, options);
    let (header, delimiter, pairs) =
        parse_leef(&line).unwrap_or_else(|e| panic!("LEEF {e}: {line:?}"));
    assert_eq!(delimiter, options.leef_delimiter.as_char());
    assert_eq!(
        header,
        [
            leef::VENDOR.to_owned(),
            leef::PRODUCT.to_owned(),
            leef::header_field(&options.product_version),
            record.class.as_str().to_owned(),
        ]
    );
    let expected: Vec<(String, String)> = leef::attributes(record)
        .into_iter()
        .map(|(key, value)| (key.to_owned(), leef::value(&value, options.leef_delimiter)))
        .collect();
    assert_eq!(pairs, expected, "LEEF line {line:?}");
    assert_eq!(
        lookup(&pairs, "policy"),
        Some(leef::value(&record.rule.name, options.leef_delimiter).as_str())
    );

    // JSON: exactly the same strings come back.
    let line = Format::Json.format_with(record, options);
    let parsed: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("JSON {e}: {line:?}"));
    assert_eq!(parsed, json::to_value(record, options));
    assert_eq!(parsed["rule"]["name"], record.rule.name.as_str());
    assert_eq!(
        parsed["observer"]["ingress"]["zone"],
        record.source_zone.as_str()
    );
    assert_eq!(
        parsed["observer"]["hostname"],
        record.reporting_host.as_str()
    );
    if let Some(workload) = &record.source_workload {
        assert_eq!(
            parsed["zonewall"]["source"]["kubernetes"]["pod"]["name"],
            workload.name.as_str()
        );
    }
}

#[test]
fn hostile_strings_stay_inside_their_fields() {
    let delimiters = ['\t', '^', '|', '#'];
    for text in HOSTILE {
        for delimiter in delimiters {
            let (record, mut options) = with_all_strings(text);
            options.leef_delimiter = LeefDelimiter::new(delimiter).expect("delimiter");
            check_round_trip(&record, &options);
        }
    }
}

#[test]
fn hostile_rule_name_is_escaped_per_format() {
    let mut record = tcp_end();
    record.rule.name = "r|u=l\\e]\"\nx".to_owned();
    let cef = Format::Cef.format(&record);
    assert!(cef.contains(" cs1=r|u\\=l\\\\e]\"\\nx cs4Label="), "{cef}");
    let syslog = Format::Rfc5424.format(&record);
    assert!(
        syslog.contains("[rule@32473 name=\"r|u=l\\\\e\\]\\\"\u{FFFD}x\" "),
        "{syslog}"
    );
    let leef = Format::Leef.format(&record);
    assert!(leef.contains("\tpolicy=r|u=l\\e]\"\u{FFFD}x\t"), "{leef}");
    let json = Format::Json.format(&record);
    assert!(json.contains(r#""name":"r|u=l\\e]\"\nx""#), "{json}");
    // JSON escapes what serde_json leaves raw, and still parses back exactly.
    record.rule.name = "nel\u{85}ls\u{2028}del\u{7f}".to_owned();
    let json = Format::Json.format(&record);
    assert!(
        json.contains(r#""name":"nel\u0085ls\u2028del\u007f""#),
        "{json}"
    );
    let parsed: Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed["rule"]["name"], "nel\u{85}ls\u{2028}del\u{7f}");
}

#[test]
fn a_newline_never_becomes_a_second_cef_record() {
    let forged = "x\nCEF:0|evil|evil|1|1|1|10|act=allow";
    let (record, options) = with_all_strings(forged);
    let line = Format::Cef.format_with(&record, &options);
    assert!(!line.contains('\n'));
    assert!(
        line.starts_with("CEF:0|zonewall|zonewall|x\u{FFFD}CEF:0\\|evil\\|evil\\|1\\|1\\|1\\|10\\|act=allow|end|TRAFFIC|1|rt="),
        "{line}"
    );
    let (header, pairs) = parse_cef(&line).expect("parses");
    assert_eq!(header[4], "end");
    assert_eq!(lookup(&pairs, "cs1"), Some(forged));
    assert_eq!(lookup(&pairs, "act"), Some("allow"));
    assert_eq!(pairs.iter().filter(|(key, _)| key == "act").count(), 1);
}

// ---------------------------------------------------------------------------------------
// Property tests

fn hostile_string() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '|', '=', '\\', ']', '[', '"', '\n', '\r', '\0', '\t', '^', ' ', '#', '@', '\u{85}',
        '\u{2028}', '\u{7f}', 'é', '🚀', 'n', 'r',
    ]);
    prop::collection::vec(
        prop_oneof![3 => special, 1 => any::<char>(), 2 => prop::char::range('a', 'z')],
        0..16,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

prop_compose! {
    fn tuple()(
        source in address(),
        destination in address(),
        protocol in any::<u8>(),
        source_port in any::<Option<u16>>(),
        destination_port in any::<Option<u16>>(),
        icmp in any::<Option<(u8, u8)>>(),
    ) -> FiveTuple {
        FiveTuple {
            source,
            destination,
            protocol,
            source_port,
            destination_port,
            icmp: icmp.map(|(icmp_type, code)| Icmp { icmp_type, code }),
        }
    }
}

prop_compose! {
    fn record()(
        strings in prop::collection::vec(hostile_string(), 16),
        present in any::<[bool; 8]>(),
        tuple in tuple(),
        indices in (0..5usize, 0..6usize, 0..7usize, 0..3usize),
        start in 0..4_000_000_000u64 * SECOND,
        duration in 0..1_000_000u64 * SECOND,
        counters in any::<[u64; 4]>(),
        repeat_count in any::<u64>(),
    ) -> FlowRecord {
        let (class, action, reason, rulebase) = indices;
        let text = |index: usize| strings[index].clone();
        let workload = |offset: usize| Workload {
            namespace: text(offset),
            name: text(offset + 1),
            node: present[0].then(|| text(offset + 2)),
            labels: Default::default(),
        };
        FlowRecord {
            class: EventClass::ALL[class],
            start: UnixNanos(start),
            end: present[1].then_some(UnixNanos(start + duration)),
            tuple,
            source_zone: text(0),
            destination_zone: text(1),
            source_workload: present[2].then(|| workload(2)),
            destination_workload: present[3].then(|| workload(5)),
            rule: RuleRef {
                name: text(8),
                uuid: present[4].then(|| text(9)),
                device_group: present[5].then(|| text(10)),
                rulebase: present[6].then_some(Rulebase::ALL[rulebase]),
            },
            policy: present[7].then(|| PolicyRef { name: text(11), tier: text(12) }),
            action: Action::ALL[action],
            counters: Counters {
                packets_from_source: counters[0],
                bytes_from_source: counters[1],
                packets_from_destination: counters[2],
                bytes_from_destination: counters[3],
            },
            end_reason: present[1].then_some(EndReason::ALL[reason]),
            observation: ObservationPoint {
                node: text(13),
                interface: text(14),
                direction: if present[0] { Direction::Ingress } else { Direction::Egress },
            },
            repeat_count,
            reporting_host: text(15),
        }
    }
}

prop_compose! {
    fn format_options()(
        product_version in hostile_string(),
        delimiter in prop::sample::select(vec!['\t', '^', '|', '#', ';', '\\', '~']),
        enterprise_number in any::<u32>(),
        facility in 0..24u8,
    ) -> FormatOptions {
        let mut options = FormatOptions {
            product_version,
            leef_delimiter: LeefDelimiter::new(delimiter).expect("valid delimiter"),
            ..FormatOptions::default()
        };
        options.syslog.enterprise_number = enterprise_number;
        options.syslog.facility = Facility::new(facility).expect("facility code");
        options
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_record_formats_to_one_line_that_parses_back(
        record in record(),
        options in format_options(),
    ) {
        check_round_trip(&record, &options);
    }

    #[test]
    fn cef_value_escaping_round_trips(value in hostile_string()) {
        let line = cef::line(
            &cef::Header { vendor: "v", product: "p", version: &value, signature: "s", name: "n", severity: 0 },
            &[("a", value.clone()), ("b", value.clone())],
        );
        let (header, pairs) = parse_cef(&line).map_err(TestCaseError::fail)?;
        let clean = replace_unsafe(&value, &['\n', '\r']);
        prop_assert_eq!(&header[3], &replace_unsafe(&value, &[]));
        prop_assert_eq!(pairs, owned(&[("a", clean.clone()), ("b", clean)]));
    }
}

#[test]
fn json_carries_the_workloads_labels() {
    let mut record = tcp_end();
    if let Some(workload) = record.source_workload.as_mut() {
        workload.labels = [("app".to_owned(), "web".to_owned())].into();
    }
    let line = Format::Json.format_with(&record, &options());
    let parsed: Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(
        parsed["zonewall"]["source"]["kubernetes"]["pod"]["labels"]["app"], "web",
        "{line}"
    );
    assert!(
        parsed["zonewall"]["destination"]["kubernetes"]["pod"]
            .get("labels")
            .is_none(),
        "no labels, no field"
    );
}
