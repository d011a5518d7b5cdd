//! Sink configuration: the `FORMAT+TRANSPORT://ADDRESS[?options]` contract of the
//! `--sink` flag (DESIGN section 3), parsed into a typed [`SinkConfig`].
//!
//! Grammar (whitespace is not allowed anywhere):
//!
//! ```text
//! sink      = format "+" transport [ "://" address ] [ "?" options ]
//! format    = "cef" | "rfc5424" | "leef" | "json"
//! transport = "udp" | "tcp" | "tls" | "file" | "stdout"
//! address   = host [ ":" port ]          ; udp, tcp, tls (IPv6 literals in brackets)
//!           | absolute-path              ; file (`json+file:///var/log/x.jsonl`)
//!           | ""                         ; stdout
//! options   = name "=" value *( "&" name "=" value )   ; values are percent-decoded
//! ```
//!
//! Default ports: udp 514, tcp 601, tls 6514 (RFC 5426, the IANA syslog-conn port, RFC 5425).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

/// Default bounded queue length per sink, in records.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// Default largest UDP message. RFC 5426 section 3.2: receivers should accept 2048 bytes;
/// larger datagrams risk IP fragmentation and silent loss on the way to the SIEM.
pub const DEFAULT_UDP_MAX_MESSAGE: usize = 2048;
/// Largest payload of a single UDP datagram over IPv4 (65535 - 20 IP - 8 UDP).
pub const UDP_MAX_MESSAGE_LIMIT: usize = 65_507;
/// Default largest record for stream, file and stdout sinks.
pub const DEFAULT_STREAM_MAX_MESSAGE: usize = 64 * 1024;
/// Default size at which the file sink rotates (100 MiB).
pub const DEFAULT_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Default number of rotated files kept next to the active one.
pub const DEFAULT_FILE_KEEP: usize = 5;

const MAX_QUEUE_CAPACITY: usize = 1 << 24;

/// The record format is the formatter module's; the sink carries it so the agent can pick
/// the formatter for each sink.
pub use crate::flows::format::Format;

const FORMAT_NAMES: &str = "cef, rfc5424 (or syslog), leef, json (or jsonl, ecs)";

/// A network peer: host name or IP literal (without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Certificates for the TLS transport (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle the server certificate is verified against.
    pub ca: PathBuf,
    /// Client certificate chain and key, for mutual TLS.
    pub client_identity: Option<ClientIdentity>,
    /// Name to verify the server certificate against and send as SNI; defaults to the host.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Size-based rotation of the file sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write would take the active file past this size; 0 disables rotation.
    pub max_bytes: u64,
    /// Rotated files kept (`NAME.1` newest .. `NAME.keep` oldest); 0 means truncate in place.
    pub keep: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportConfig {
    Udp(Endpoint),
    Tcp(Endpoint),
    Tls(Endpoint, TlsFiles),
    File(PathBuf, Rotation),
    Stdout,
}

impl TransportConfig {
    pub fn name(&self) -> &'static str {
        match self {
            TransportConfig::Udp(_) => "udp",
            TransportConfig::Tcp(_) => "tcp",
            TransportConfig::Tls(..) => "tls",
            TransportConfig::File(..) => "file",
            TransportConfig::Stdout => "stdout",
        }
    }
}

/// Which flow records a sink receives. Evaluated by the caller before formatting, so a
/// filtered-out record is never queued and never counted by the sink.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Filter {
    /// Flows whose source and destination zones differ (the default).
    #[default]
    CrossZone,
    /// Every flow record.
    All,
    /// Denied attempts only (deny, drop and reset actions).
    Denies,
    /// Flows that leave or enter any of these zones.
    Zones(BTreeSet<String>),
}

impl Filter {
    pub const SYNTAX: &'static str = "cross-zone, all, denies, or zones:ZONE[,ZONE...]";

    /// Whether a record with these zones and verdict goes to the sink.
    pub fn accepts(&self, source_zone: &str, destination_zone: &str, denied: bool) -> bool {
        match self {
            Filter::CrossZone => source_zone != destination_zone,
            Filter::All => true,
            Filter::Denies => denied,
            Filter::Zones(zones) => zones.contains(source_zone) || zones.contains(destination_zone),
        }
    }
}

impl Filter {
    /// Whether an audit record about an object of `zone` goes to the sink. Only `all` and
    /// `zones:` are accepted for audit sinks ([`SinkConfig::parse_for`] refuses the others).
    pub fn accepts_audit(&self, zone: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Zones(zones) => zones.contains(zone),
            Filter::CrossZone | Filter::Denies => false,
        }
    }
}

/// What a sink carries, which decides the filters that make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// Flow records (`zonewall agent`): every filter, `cross-zone` by default.
    Flows,
    /// Audit records of the sync controller (`zonewall sync`): `all` (the default) or
    /// `zones:` (the zone of the changed object); `cross-zone` and `denies` describe flows
    /// and are refused rather than silently matching nothing.
    Audit,
}

impl FromStr for Filter {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "cross-zone" => Ok(Filter::CrossZone),
            "all" => Ok(Filter::All),
            "denies" => Ok(Filter::Denies),
            _ => {
                let Some(list) = value.strip_prefix("zones:") else {
                    return Err(format!("unknown filter `{value}`"));
                };
                let mut zones = BTreeSet::new();
                for zone in list.split(',') {
                    if zone.is_empty() {
                        return Err(format!("empty zone name in `{value}`"));
                    }
                    zones.insert(zone.to_owned());
                }
                Ok(Filter::Zones(zones))
            }
        }
    }
}

/// What happens to a record longer than `max_message` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OversizePolicy {
    /// Dropped whole and counted with reason `oversized` (the default: a cut record could
    /// lose its trailing fields without the SIEM noticing).
    #[default]
    Drop,
    /// Cut at the last UTF-8 character boundary that fits, delivered, and counted in
    /// `truncated`.
    Truncate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    pub format: Format,
    pub transport: TransportConfig,
    pub filter: Filter,
    /// Bounded queue length in records.
    pub queue_capacity: usize,
    /// Largest record in bytes (without framing or newline).
    pub max_message: usize,
    pub oversize: OversizePolicy,
}

/// Why a `--sink` value was refused. Each message names the offending part and what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "sink `{input}`: expected FORMAT+TRANSPORT://ADDRESS[?options], for example cef+tls://siem.example:6514?ca=/etc/zonewall/ca.pem"
    )]
    Shape { input: String },
    #[error(
        "sink `{input}`: unknown format `{format}`; valid formats: {}",
        FORMAT_NAMES
    )]
    Format { input: String, format: String },
    #[error(
        "sink `{input}`: unknown transport `{transport}`; valid transports: udp, tcp, tls, file, stdout"
    )]
    Transport { input: String, transport: String },
    #[error("sink `{input}`: invalid address `{address}`: {reason}")]
    Address {
        input: String,
        address: String,
        reason: String,
    },
    #[error("sink `{input}`: unknown option `{option}` for {transport}; valid options: {valid}")]
    UnknownOption {
        input: String,
        option: String,
        transport: &'static str,
        valid: &'static str,
    },
    #[error("sink `{input}`: option `{option}` given twice")]
    DuplicateOption { input: String, option: String },
    #[error("sink `{input}`: invalid value `{value}` for option `{option}`: {reason}")]
    OptionValue {
        input: String,
        option: String,
        value: String,
        reason: String,
    },
    #[error("sink `{input}`: {reason}")]
    Missing { input: String, reason: String },
}

/// The filters an audit sink accepts.
const AUDIT_FILTER_SYNTAX: &str = "all (the default) or zones:ZONE[,ZONE...]";

const COMMON_OPTIONS: &str = "queue, filter, max_message, oversize";
const NETWORK_OPTIONS: &str = "queue, filter, max_message, oversize";
const TLS_OPTIONS: &str = "ca, cert, key, server_name, queue, filter, max_message, oversize";
const FILE_OPTIONS: &str = "max_bytes, keep, queue, filter, max_message, oversize";

impl FromStr for SinkConfig {
    type Err = ConfigError;

    /// A sink of flow records.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        SinkConfig::parse_for(input, Records::Flows)
    }
}

impl SinkConfig {
    /// Parses a `--sink` value for the records it will carry.
    pub fn parse_for(input: &str, records: Records) -> Result<Self, ConfigError> {
        let shape = || ConfigError::Shape {
            input: input.to_owned(),
        };
        let (scheme, rest) = match input.split_once("://") {
            Some((scheme, rest)) => (scheme, Some(rest)),
            None => (input, None),
        };
        // `cef+stdout?filter=all` has options but no `://`.
        let (scheme, scheme_query) = match (rest, scheme.split_once('?')) {
            (None, Some((scheme, query))) => (scheme, Some(query)),
            _ => (scheme, None),
        };
        let (format_name, transport_name) = scheme.split_once('+').ok_or_else(shape)?;
        let format = format_name
            .parse::<Format>()
            .map_err(|_| ConfigError::Format {
                input: input.to_owned(),
                format: format_name.to_owned(),
            })?;
        let (address, query) = match rest {
            Some(rest) => match rest.split_once('?') {
                Some((address, query)) => (address, Some(query)),
                None => (rest, None),
            },
            None => ("", scheme_query),
        };
        let mut options = Options::parse(input, query.unwrap_or(""))?;

        let address_error = |reason: &str| ConfigError::Address {
            input: input.to_owned(),
            address: address.to_owned(),
            reason: reason.to_owned(),
        };
        let transport = match transport_name {
            "udp" => TransportConfig::Udp(parse_endpoint(address, 514).map_err(address_error)?),
            "tcp" => TransportConfig::Tcp(parse_endpoint(address, 601).map_err(address_error)?),
            "tls" => {
                let endpoint = parse_endpoint(address, 6514).map_err(address_error)?;
                let ca = options.take("ca").ok_or_else(|| ConfigError::Missing {
                    input: input.to_owned(),
                    reason:
                        "tls needs `ca=PATH`, the CA bundle (PEM) that signs the SIEM's certificate"
                            .to_owned(),
                })?;
                let client_identity = match (options.take("cert"), options.take("key")) {
                    (Some(cert), Some(key)) => Some(ClientIdentity {
                        cert: PathBuf::from(cert),
                        key: PathBuf::from(key),
                    }),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::Missing {
                            input: input.to_owned(),
                            reason: "mutual TLS needs both `cert=PATH` and `key=PATH`".to_owned(),
                        });
                    }
                };
                let server_name = options.take("server_name");
                TransportConfig::Tls(
                    endpoint,
                    TlsFiles {
                        ca: PathBuf::from(ca),
                        client_identity,
                        server_name,
                    },
                )
            }
            "file" => {
                if !address.starts_with('/') {
                    return Err(address_error(
                        "the file transport needs an absolute path, as in json+file:///var/log/zonewall/flows.jsonl",
                    ));
                }
                if address.ends_with('/') {
                    return Err(address_error("the path names a directory, not a file"));
                }
                let path = percent_decode_str(address).decode_utf8().map_err(|_| {
                    address_error("the path is not valid UTF-8 once percent-decoded")
                })?;
                let max_bytes = options
                    .take_parsed("max_bytes", "a size in bytes, 0 disables rotation")?
                    .unwrap_or(DEFAULT_FILE_MAX_BYTES);
                let keep = options
                    .take_parsed("keep", "a count of rotated files to keep")?
                    .unwrap_or(DEFAULT_FILE_KEEP);
                TransportConfig::File(PathBuf::from(path.as_ref()), Rotation { max_bytes, keep })
            }
            "stdout" => {
                if !address.is_empty() {
                    return Err(address_error("stdout takes no address: write `cef+stdout`"));
                }
                TransportConfig::Stdout
            }
            other => {
                return Err(ConfigError::Transport {
                    input: input.to_owned(),
                    transport: other.to_owned(),
                });
            }
        };

        let queue_capacity = options
            .take_parsed("queue", "a queue length in records, 1 or more")?
            .unwrap_or(DEFAULT_QUEUE_CAPACITY);
        if queue_capacity == 0 || queue_capacity > MAX_QUEUE_CAPACITY {
            return Err(options.value_error(
                "queue",
                &queue_capacity.to_string(),
                &format!("must be between 1 and {MAX_QUEUE_CAPACITY}"),
            ));
        }
        let filter = match options.take("filter") {
            Some(value) => {
                let filter = value.parse::<Filter>().map_err(|reason| {
                    let valid = match records {
                        Records::Flows => Filter::SYNTAX,
                        Records::Audit => AUDIT_FILTER_SYNTAX,
                    };
                    options.value_error("filter", &value, &format!("{reason}; valid: {valid}"))
                })?;
                if records == Records::Audit && matches!(filter, Filter::CrossZone | Filter::Denies)
                {
                    return Err(options.value_error(
                        "filter",
                        &value,
                        &format!(
                            "selects flow records; audit records of zonewall sync take {AUDIT_FILTER_SYNTAX}"
                        ),
                    ));
                }
                filter
            }
            None => match records {
                Records::Flows => Filter::default(),
                Records::Audit => Filter::All,
            },
        };
        let is_udp = matches!(transport, TransportConfig::Udp(_));
        let max_message = options
            .take_parsed("max_message", "a size in bytes")?
            .unwrap_or(if is_udp {
                DEFAULT_UDP_MAX_MESSAGE
            } else {
                DEFAULT_STREAM_MAX_MESSAGE
            });
        let limit = if is_udp {
            UDP_MAX_MESSAGE_LIMIT
        } else {
            // An octet-counting frame length is written in decimal; keep it sane.
            64 * 1024 * 1024
        };
        if max_message == 0 || max_message > limit {
            return Err(options.value_error(
                "max_message",
                &max_message.to_string(),
                &format!("must be between 1 and {limit} for {}", transport.name()),
            ));
        }
        let oversize = match options.take("oversize").as_deref() {
            None | Some("drop") => OversizePolicy::Drop,
            Some("truncate") => OversizePolicy::Truncate,
            Some(other) => {
                return Err(options.value_error("oversize", other, "valid: drop, truncate"));
            }
        };

        if let Some(option) = options.leftover() {
            return Err(ConfigError::UnknownOption {
                input: input.to_owned(),
                option,
                transport: transport.name(),
                valid: match transport {
                    TransportConfig::Udp(_) | TransportConfig::Tcp(_) => NETWORK_OPTIONS,
                    TransportConfig::Tls(..) => TLS_OPTIONS,
                    TransportConfig::File(..) => FILE_OPTIONS,
                    TransportConfig::Stdout => COMMON_OPTIONS,
                },
            });
        }
        Ok(SinkConfig {
            format,
            transport,
            filter,
            queue_capacity,
            max_message,
            oversize,
        })
    }
}

/// `host[:port]` or `[v6]:port`, with a default port.
fn parse_endpoint(address: &str, default_port: u16) -> Result<Endpoint, &'static str> {
    if address.is_empty() {
        return Err("a host is required, as in siem.example:6514 or [::1]:514");
    }
    let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 literal needs a closing `]`")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the text in brackets is not an IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("expected `:PORT` after `]`")?,
                ),
            ),
        }
    } else {
        match address.split_once(':') {
            Some((host, port)) => {
                if port.contains(':') {
                    return Err("an IPv6 address must be in brackets, as in [::1]:514");
                }
                (host, Some(port))
            }
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.contains('/') || host.contains('@') {
        return Err("expected host[:port] without a path or user");
    }
    let port = match port {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(0) | Err(_) => return Err("the port must be a number from 1 to 65535"),
            Ok(port) => port,
        },
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// The `?name=value&...` part, consumed option by option so leftovers can be reported.
struct Options<'a> {
    input: &'a str,
    values: Vec<(String, String)>,
}

impl<'a> Options<'a> {
    fn parse(input: &'a str, query: &str) -> Result<Self, ConfigError> {
        let mut values: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let Some((name, raw)) = pair.split_once('=') else {
                return Err(ConfigError::OptionValue {
                    input: input.to_owned(),
                    option: pair.to_owned(),
                    value: String::new(),
                    reason: "expected name=value".to_owned(),
                });
            };
            let value = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| ConfigError::OptionValue {
                    input: input.to_owned(),
                    option: name.to_owned(),
                    value: raw.to_owned(),
                    reason: "not valid UTF-8 once percent-decoded".to_owned(),
                })?
                .into_owned();
            if values.iter().any(|(seen, _)| seen == name) {
                return Err(ConfigError::DuplicateOption {
                    input: input.to_owned(),
                    option: name.to_owned(),
                });
            }
            values.push((name.to_owned(), value));
        }
        Ok(Options { input, values })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let index = self.values.iter().position(|(seen, _)| seen == name)?;
        Some(self.values.remove(index).1)
    }

    fn take_parsed<T: FromStr>(
        &mut self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.take(name) {
            None => Ok(None),
            Some(value) => match value.parse::<T>() {
                Ok(parsed) => Ok(Some(parsed)),
                Err(_) => Err(self.value_error(name, &value, &format!("expected {expected}"))),
            },
        }
    }

    fn value_error(&self, option: &str, value: &str, reason: &str) -> ConfigError {
        ConfigError::OptionValue {
            input: self.input.to_owned(),
            option: option.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn leftover(&self) -> Option<String> {
        self.values.first().map(|(name, _)| name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> SinkConfig {
        input
            .parse()
            .unwrap_or_else(|error| panic!("{input}: {error}"))
    }

    fn error(input: &str) -> String {
        input.parse::<SinkConfig>().unwrap_err().to_string()
    }

    #[test]
    fn parses_the_documented_examples() {
        let tls = parse("cef+tls://siem.example:6514?ca=/etc/zonewall/ca.pem");
        assert_eq!(tls.format, Format::Cef);
        assert_eq!(
            tls.transport,
            TransportConfig::Tls(
                Endpoint {
                    host: "siem.example".into(),
                    port: 6514
                },
                TlsFiles {
                    ca: "/etc/zonewall/ca.pem".into(),
                    client_identity: None,
                    server_name: None
                }
            )
        );
        assert_eq!(tls.filter, Filter::CrossZone);
        assert_eq!(tls.queue_capacity, DEFAULT_QUEUE_CAPACITY);

        let file = parse("json+file:///var/log/zonewall/flows.jsonl?max_bytes=104857600&keep=5");
        assert_eq!(
            file.transport,
            TransportConfig::File(
                "/var/log/zonewall/flows.jsonl".into(),
                Rotation {
                    max_bytes: 104_857_600,
                    keep: 5
                }
            )
        );
        assert_eq!(parse("cef+stdout").transport, TransportConfig::Stdout);
        assert_eq!(parse("cef+stdout://").transport, TransportConfig::Stdout);
        assert_eq!(
            parse("cef+stdout?filter=all").filter,
            Filter::All,
            "options without ://"
        );
        let udp = parse("rfc5424+udp://127.0.0.1:514");
        assert_eq!(udp.max_message, DEFAULT_UDP_MAX_MESSAGE);
        assert_eq!(
            udp.transport,
            TransportConfig::Udp(Endpoint {
                host: "127.0.0.1".into(),
                port: 514
            })
        );
        let tcp = parse("leef+tcp://[::1]:601");
        assert_eq!(tcp.format, Format::Leef);
        assert_eq!(
            tcp.transport,
            TransportConfig::Tcp(Endpoint {
                host: "::1".into(),
                port: 601
            })
        );
        assert_eq!(tcp.to_string_endpoint(), "[::1]:601");
    }

    impl SinkConfig {
        fn to_string_endpoint(&self) -> String {
            match &self.transport {
                TransportConfig::Udp(e) | TransportConfig::Tcp(e) | TransportConfig::Tls(e, _) => {
                    e.to_string()
                }
                _ => String::new(),
            }
        }
    }

    #[test]
    fn default_ports_and_options() {
        let TransportConfig::Tls(endpoint, files) = parse(
            "cef+tls://siem.example?ca=/ca.pem&cert=/c.pem&key=/k.pem&server_name=siem.internal&queue=10&filter=zones:dmz,trust&max_message=9000&oversize=truncate",
        )
        .transport
        else {
            panic!("not tls");
        };
        assert_eq!(endpoint.port, 6514);
        assert_eq!(
            files.client_identity,
            Some(ClientIdentity {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert_eq!(files.server_name.as_deref(), Some("siem.internal"));
        let full = parse(
            "cef+tls://siem.example?ca=/ca.pem&queue=10&filter=zones:dmz,trust&max_message=9000&oversize=truncate",
        );
        assert_eq!(full.queue_capacity, 10);
        assert_eq!(full.max_message, 9000);
        assert_eq!(full.oversize, OversizePolicy::Truncate);
        assert_eq!(
            full.filter,
            Filter::Zones(["dmz".to_owned(), "trust".to_owned()].into())
        );
        assert!(matches!(
            parse("cef+udp://h").transport,
            TransportConfig::Udp(Endpoint { port: 514, .. })
        ));
        assert!(matches!(
            parse("cef+tcp://h").transport,
            TransportConfig::Tcp(Endpoint { port: 601, .. })
        ));
        assert_eq!(
            parse("json+file:///a/b%20c.jsonl").transport,
            TransportConfig::File(
                "/a/b c.jsonl".into(),
                Rotation {
                    max_bytes: DEFAULT_FILE_MAX_BYTES,
                    keep: DEFAULT_FILE_KEEP
                }
            )
        );
        assert_eq!(parse("cef+udp://h?filter=denies").filter, Filter::Denies);
        let message = error("cef+stdout?ca=%2Fx");
        assert!(
            message.contains("unknown option `ca` for stdout"),
            "{message}"
        );
    }

    #[test]
    fn errors_name_the_part_and_the_valid_choices() {
        let message = error("xml+udp://h:514");
        assert!(
            message.contains("unknown format `xml`") && message.contains(FORMAT_NAMES),
            "{message}"
        );
        let message = error("cef+sctp://h:514");
        assert!(
            message.contains("unknown transport `sctp`")
                && message.contains("udp, tcp, tls, file, stdout"),
            "{message}"
        );
        let message = error("siem.example:514");
        assert!(message.contains("expected FORMAT+TRANSPORT"), "{message}");
        let message = error("cef+tls://siem:6514");
        assert!(message.contains("ca=PATH"), "{message}");
        let message = error("cef+tls://siem:6514?ca=/a&cert=/c");
        assert!(
            message.contains("both `cert=PATH` and `key=PATH`"),
            "{message}"
        );
        let message = error("cef+udp://h:70000");
        assert!(
            message.contains("`h:70000`") && message.contains("1 to 65535"),
            "{message}"
        );
        let message = error("cef+tcp://::1:601");
        assert!(message.contains("brackets"), "{message}");
        let message = error("cef+tcp://[::1");
        assert!(message.contains("closing `]`"), "{message}");
        let message = error("cef+tcp://[zz]:1");
        assert!(message.contains("not an IPv6"), "{message}");
        let message = error("cef+udp://:514");
        assert!(message.contains("host is empty"), "{message}");
        let message = error("cef+udp://h?keep=3");
        assert!(
            message.contains("unknown option `keep` for udp") && message.contains("max_message"),
            "{message}"
        );
        let message = error("cef+udp://h?queue=1&queue=2");
        assert!(message.contains("`queue` given twice"), "{message}");
        let message = error("cef+udp://h?queue=0");
        assert!(
            message.contains("option `queue`") && message.contains("between 1 and"),
            "{message}"
        );
        let message = error("cef+udp://h?queue=lots");
        assert!(
            message.contains("`lots`") && message.contains("queue length"),
            "{message}"
        );
        let message = error("cef+udp://h?filter=some");
        assert!(
            message.contains("unknown filter `some`") && message.contains("zones:ZONE"),
            "{message}"
        );
        let message = error("cef+udp://h?filter=zones:a,,b");
        assert!(message.contains("empty zone name"), "{message}");
        let message = error("cef+udp://h?max_message=70000");
        assert!(message.contains("between 1 and 65507 for udp"), "{message}");
        let message = error("cef+udp://h?oversize=split");
        assert!(message.contains("drop, truncate"), "{message}");
        let message = error("json+file://relative/x.jsonl");
        assert!(message.contains("absolute path"), "{message}");
        let message = error("json+file:///var/log/");
        assert!(message.contains("directory"), "{message}");
        let message = error("cef+stdout://somewhere");
        assert!(message.contains("stdout takes no address"), "{message}");
        let message = error("cef+stdout?novalue");
        assert!(message.contains("name=value"), "{message}");
        let message = error("cef+udp://user@h:514");
        assert!(message.contains("without a path or user"), "{message}");
    }

    #[test]
    fn filter_semantics() {
        assert!(Filter::CrossZone.accepts("dmz", "trust", false));
        assert!(!Filter::CrossZone.accepts("dmz", "dmz", true));
        assert!(Filter::All.accepts("dmz", "dmz", false));
        assert!(Filter::Denies.accepts("dmz", "dmz", true));
        assert!(!Filter::Denies.accepts("dmz", "trust", false));
        let zones: Filter = "zones:dmz".parse().unwrap();
        assert!(zones.accepts("trust", "dmz", false));
        assert!(zones.accepts("dmz", "untrust", false));
        assert!(!zones.accepts("trust", "untrust", true));
    }
}

/// Sinks from a file: one `FORMAT+TRANSPORT://ADDRESS[?options]` per line, `#` starts a
/// comment, blank lines are skipped. An error names the file and the line.
pub fn parse_sink_file(text: &str, origin: &str) -> Result<Vec<SinkConfig>, String> {
    parse_sink_file_for(text, origin, Records::Flows)
}

/// [`parse_sink_file`] for the records the sinks will carry.
pub fn parse_sink_file_for(
    text: &str,
    origin: &str,
    records: Records,
) -> Result<Vec<SinkConfig>, String> {
    let mut sinks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let sink = SinkConfig::parse_for(line, records)
            .map_err(|e| format!("{origin}:{}: {e}", index + 1))?;
        sinks.push(sink);
    }
    Ok(sinks)
}

/// The sinks of `--sink` values (empty ones skipped) and of a `--sink-file`, in that order.
/// Errors name the value, or the file and line, and what is valid.
pub fn load_sinks(
    flags: &[String],
    file: Option<&std::path::Path>,
    records: Records,
) -> Result<Vec<SinkConfig>, String> {
    let mut sinks = Vec::new();
    for text in flags.iter().filter(|text| !text.is_empty()) {
        sinks.push(SinkConfig::parse_for(text, records).map_err(|e| e.to_string())?);
    }
    if let Some(path) = file {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the sink file {origin}: {e}"))?;
        sinks.extend(parse_sink_file_for(&text, &origin, records)?);
    }
    Ok(sinks)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn sink_files_skip_comments_and_name_the_bad_line() {
        let sinks = parse_sink_file(
            "# the SIEM\ncef+tcp://127.0.0.1:6514\n\njson+stdout # local copy\n",
            "sinks.conf",
        )
        .expect("valid");
        assert_eq!(sinks.len(), 2);
        let error =
            parse_sink_file("cef+stdout\nxml+udp://x:1\n", "sinks.conf").expect_err("invalid");
        assert!(error.starts_with("sinks.conf:2: "), "{error}");
    }

    #[test]
    fn audit_sinks_take_all_or_zones_and_refuse_flow_filters() {
        let audit = |input: &str| SinkConfig::parse_for(input, Records::Audit);
        let default = audit("cef+tcp://127.0.0.1:6514").expect("valid");
        assert_eq!(default.filter, Filter::All, "audit sinks see every record");
        assert!(default.filter.accepts_audit("dmz"));
        let zones = audit("cef+stdout?filter=zones:dmz,trust").expect("valid");
        assert!(zones.filter.accepts_audit("dmz"));
        assert!(!zones.filter.accepts_audit("untrust"));
        for flow_only in ["cross-zone", "denies"] {
            let error = audit(&format!("cef+stdout?filter={flow_only}"))
                .expect_err("a flow filter")
                .to_string();
            assert!(
                error.contains("selects flow records") && error.contains("zones:ZONE"),
                "{error}"
            );
        }
        // The agent's sinks keep their default.
        let flows = SinkConfig::parse_for("cef+stdout", Records::Flows).expect("valid");
        assert_eq!(flows.filter, Filter::CrossZone);
    }

    #[test]
    fn load_sinks_reads_flags_then_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("sinks.conf");
        std::fs::write(&file, "# SIEM\njson+stdout\ncef+stdout?filter=denies\n").expect("write");
        let error = load_sinks(&["cef+stdout".into()], Some(&file), Records::Audit)
            .expect_err("denies is a flow filter");
        assert!(
            error.starts_with(&format!("{}:3: ", file.display())),
            "{error}"
        );
        std::fs::write(&file, "json+stdout\n").expect("write");
        let sinks = load_sinks(
            &["cef+tcp://127.0.0.1:601".into(), String::new()],
            Some(&file),
            Records::Audit,
        )
        .expect("valid");
        let formats: Vec<Format> = sinks.iter().map(|sink| sink.format).collect();
        assert_eq!(formats, [Format::Cef, Format::Json]);
        let missing = load_sinks(&[], Some(&dir.path().join("none")), Records::Audit)
            .expect_err("missing file");
        assert!(missing.contains("cannot read the sink file"), "{missing}");
    }
}
