//! Audit records in the SIEM formats of the flow sinks (pure, no I/O). The escaping, header
//! and framing rules are the flow formatters' own (`cef::line`, `rfc5424::message`,
//! `leef::line`, the JSON line-breaker escape); this module only decides the fields.
//!
//! A configuration change is a different event from a flow, and a SIEM rule must be able to
//! tell them apart without parsing the extension, so:
//! - the event class (CEF signature, LEEF event ID, syslog MSGID) is `config-apply` (create,
//!   update), `config-delete` (an object the firewall no longer produces) or
//!   `config-remediation` (drift: an edit restored, a foreign object deleted); the CEF name is
//!   `CONFIG`, as PAN-OS names its configuration logs (flows are `TRAFFIC`);
//! - severity (CEF/LEEF 0-10, syslog): 3 / notice for an apply or delete that succeeded, 6 /
//!   warning for a remediation (someone changed the enforced tier), 7 / err for a failed
//!   apply or delete, 8 / err for a failed remediation (the tampered tier may still be live).
//!
//! CEF keys: standard ones where they exist: `rt`, `dvchost`, `cat=config`, `act` (the
//! operation), `outcome` (`success`/`failure`), `reason` (the error), `suser` (the Panorama
//! admin of the commit), `msg` (a one-line summary), `deviceProcessName`; labelled custom
//! fields for the rest: `cs1` Rules (comma separated, at most
//! [`MAX_RULES_LISTED`](super::audit::MAX_RULES_LISTED)), `cn2` Rules Total, `cs2` ZonePolicy,
//! `cs4` Zone, `cs5` Device Group, `cn1` Commit Version, `cs6` Commit Time, `cs3` Commit
//! Description; and `Zonewall`-prefixed keys for the target, the source, the spec hashes and
//! the field managers that drifted the object.

use super::audit::{AuditRecord, Outcome};
use super::plan::ChangeKind;
use crate::flows::format::rfc5424::{self, SdElement, Severity};
use crate::flows::format::time::{Civil, JAVA_MILLIS_PATTERN};
use crate::flows::format::{FormatOptions, Render, cef, leef};
use crate::flows::record::UnixNanos;

/// The CEF name of every audit record.
pub const CEF_NAME: &str = "CONFIG";

/// The event class: CEF signature, LEEF event ID and syslog MSGID.
pub fn event_class(record: &AuditRecord) -> &'static str {
    match record.operation {
        ChangeKind::Create | ChangeKind::Update => "config-apply",
        ChangeKind::DeleteStale => "config-delete",
        ChangeKind::Restore | ChangeKind::DeleteForeign => "config-remediation",
    }
}

/// CEF and LEEF severity (0-10).
pub fn severity(record: &AuditRecord) -> u8 {
    match (record.outcome, record.remediation) {
        (Outcome::Success, false) => 3,
        (Outcome::Success, true) => 6,
        (Outcome::Failed, false) => 7,
        (Outcome::Failed, true) => 8,
    }
}

fn syslog_severity(record: &AuditRecord) -> Severity {
    match (record.outcome, record.remediation) {
        (Outcome::Success, false) => Severity::Notice,
        (Outcome::Success, true) => Severity::Warning,
        (Outcome::Failed, _) => Severity::Error,
    }
}

fn outcome(record: &AuditRecord) -> &'static str {
    match record.outcome {
        Outcome::Success => "success",
        Outcome::Failed => "failure",
    }
}

fn unix_nanos(time: jiff::Timestamp) -> UnixNanos {
    UnixNanos(u64::try_from(time.as_nanosecond()).unwrap_or(0))
}

/// `restored ZonePolicy firewall-trust (zone trust) edited by kubectl-edit; Panorama commit 7
/// by alice`, or `failed to ...: ERROR`.
pub fn summary(record: &AuditRecord) -> String {
    let failed = record.outcome == Outcome::Failed;
    let verb = match (record.operation, failed) {
        (ChangeKind::Create, false) => "created",
        (ChangeKind::Create, true) => "failed to create",
        (ChangeKind::Update, false) => "updated",
        (ChangeKind::Update, true) => "failed to update",
        (ChangeKind::Restore, false) => "restored",
        (ChangeKind::Restore, true) => "failed to restore",
        (ChangeKind::DeleteStale | ChangeKind::DeleteForeign, false) => "deleted",
        (ChangeKind::DeleteStale | ChangeKind::DeleteForeign, true) => "failed to delete",
    };
    let mut text = format!("{verb} ZonePolicy {} (zone {})", record.object, record.zone);
    match record.operation {
        ChangeKind::Restore => text.push_str(" after an edit outside zonewall sync"),
        ChangeKind::DeleteForeign => text.push_str(" written outside zonewall sync"),
        ChangeKind::DeleteStale => text.push_str(" no longer in the firewall configuration"),
        ChangeKind::Create | ChangeKind::Update => {}
    }
    if !record.changed_by.is_empty() {
        text.push_str(" by ");
        text.push_str(&record.changed_by.join(", "));
    }
    if let Some(commit) = &record.commit {
        match commit.id {
            Some(id) => text.push_str(&format!("; commit {id}")),
            None => text.push_str("; commit"),
        }
        if let Some(admin) = &commit.admin {
            text.push_str(" by ");
            text.push_str(admin);
        }
    }
    if let Some(error) = &record.error {
        text.push_str(": ");
        text.push_str(error);
    }
    text
}

fn rules_list(record: &AuditRecord) -> String {
    record.rules.join(",")
}

impl Render for AuditRecord {
    fn cef(&self, options: &FormatOptions) -> String {
        let header = cef::Header {
            vendor: cef::VENDOR,
            product: cef::PRODUCT,
            version: &options.product_version,
            signature: event_class(self),
            name: CEF_NAME,
            severity: severity(self),
        };
        cef::line(&header, &cef_extension(self))
    }

    fn rfc5424(&self, options: &FormatOptions) -> String {
        let syslog = &options.syslog;
        let timestamp = Civil::from_unix_nanos(unix_nanos(self.time)).rfc3339(6);
        let header = rfc5424::Header {
            priority: rfc5424::priority(syslog.facility, syslog_severity(self)),
            timestamp: &timestamp,
            hostname: &self.host,
            app_name: &syslog.app_name,
            procid: syslog.procid.as_deref().unwrap_or("-"),
            msgid: event_class(self),
        };
        rfc5424::message(
            &header,
            &structured_data(self, syslog.enterprise_number),
            Some(&summary(self)),
        )
    }

    fn leef(&self, options: &FormatOptions) -> String {
        let header = leef::Header {
            vendor: leef::VENDOR,
            product: leef::PRODUCT,
            version: &options.product_version,
            event_id: event_class(self),
            delimiter: options.leef_delimiter,
        };
        leef::line(&header, &leef_attributes(self))
    }

    /// The same object as the JSON audit line.
    fn json(&self, _options: &FormatOptions) -> String {
        self.to_json()
    }
}

/// The CEF extension, unescaped, in output order.
fn cef_extension(record: &AuditRecord) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&'static str, String)> = Vec::with_capacity(40);
    let millis = unix_nanos(record.time).0 / 1_000_000;
    pairs.push(("rt", millis.to_string()));
    pairs.push(("dvchost", record.host.clone()));
    pairs.push(("deviceProcessName", record.controller.clone()));
    pairs.push(("cat", "config".to_owned()));
    pairs.push(("act", record.operation.as_str().to_owned()));
    pairs.push(("outcome", outcome(record).to_owned()));
    if let Some(error) = &record.error {
        pairs.push(("reason", error.clone()));
    }
    let commit = record.commit.as_ref();
    if let Some(admin) = commit.and_then(|commit| commit.admin.as_ref()) {
        pairs.push(("suser", admin.clone()));
    }
    pairs.push(("msg", summary(record)));
    pairs.push(("cs2Label", "ZonePolicy".to_owned()));
    pairs.push(("cs2", record.object.clone()));
    pairs.push(("cs4Label", "Zone".to_owned()));
    pairs.push(("cs4", record.zone.clone()));
    if let Some(device_group) = &record.device_group {
        pairs.push(("cs5Label", "Device Group".to_owned()));
        pairs.push(("cs5", device_group.clone()));
    }
    if let Some(commit) = commit {
        if let Some(id) = commit.id {
            pairs.push(("cn1Label", "Commit Version".to_owned()));
            pairs.push(("cn1", id.to_string()));
        }
        if let Some(time) = &commit.time {
            pairs.push(("cs6Label", "Commit Time".to_owned()));
            pairs.push(("cs6", time.clone()));
        }
        if let Some(description) = &commit.description {
            pairs.push(("cs3Label", "Commit Description".to_owned()));
            pairs.push(("cs3", description.clone()));
        }
    }
    pairs.push(("cs1Label", "Rules".to_owned()));
    pairs.push(("cs1", rules_list(record)));
    pairs.push(("cn2Label", "Rules Total".to_owned()));
    pairs.push(("cn2", record.rules_total.to_string()));
    pairs.push(("ZonewallRemediation", record.remediation.to_string()));
    pairs.push(("ZonewallTarget", record.target.clone()));
    pairs.push(("ZonewallSource", record.source.clone()));
    if let Some(hash) = &record.previous_hash {
        pairs.push(("ZonewallPreviousSpecHash", hash.clone()));
    }
    if let Some(hash) = &record.new_hash {
        pairs.push(("ZonewallSpecHash", hash.clone()));
    }
    if !record.changed_by.is_empty() {
        pairs.push(("ZonewallChangedBy", record.changed_by.join(",")));
    }
    pairs
}

/// `config@PEN` (the operation), `commit@PEN` (when known) and `rules@PEN` (one `rule`
/// parameter per rule, as RFC 5424 allows a name to repeat).
fn structured_data(record: &AuditRecord, enterprise_number: u32) -> Vec<SdElement> {
    let id = |name: &str| format!("{name}@{enterprise_number}");
    let mut config: Vec<(&'static str, String)> = vec![
        ("operation", record.operation.as_str().to_owned()),
        ("remediation", record.remediation.to_string()),
        ("outcome", outcome(record).to_owned()),
        ("object", record.object.clone()),
        ("zone", record.zone.clone()),
        ("target", record.target.clone()),
        ("source", record.source.clone()),
    ];
    if let Some(device_group) = &record.device_group {
        config.push(("deviceGroup", device_group.clone()));
    }
    if let Some(error) = &record.error {
        config.push(("error", error.clone()));
    }
    if let Some(hash) = &record.previous_hash {
        config.push(("previousHash", hash.clone()));
    }
    if let Some(hash) = &record.new_hash {
        config.push(("newHash", hash.clone()));
    }
    for manager in &record.changed_by {
        config.push(("changedBy", manager.clone()));
    }
    config.push(("controller", record.controller.clone()));
    let mut elements = vec![SdElement {
        id: id("config"),
        params: config,
    }];
    if let Some(commit) = &record.commit {
        let mut params = Vec::new();
        if let Some(commit_id) = commit.id {
            params.push(("id", commit_id.to_string()));
        }
        if let Some(admin) = &commit.admin {
            params.push(("admin", admin.clone()));
        }
        if let Some(time) = &commit.time {
            params.push(("time", time.clone()));
        }
        if let Some(description) = &commit.description {
            params.push(("description", description.clone()));
        }
        if !params.is_empty() {
            elements.push(SdElement {
                id: id("commit"),
                params,
            });
        }
    }
    let mut rules = vec![("total", record.rules_total.to_string())];
    for rule in &record.rules {
        rules.push(("rule", rule.clone()));
    }
    elements.push(SdElement {
        id: id("rules"),
        params: rules,
    });
    elements
}

/// The LEEF attributes, unescaped, in output order. `usrName` is the predefined LEEF key for
/// the user behind the event: the Panorama admin of the commit.
fn leef_attributes(record: &AuditRecord) -> Vec<(&'static str, String)> {
    let time = Civil::from_unix_nanos(unix_nanos(record.time)).java_millis();
    let mut pairs: Vec<(&'static str, String)> = vec![
        ("devTime", time),
        ("devTimeFormat", JAVA_MILLIS_PATTERN.to_owned()),
        ("cat", "config".to_owned()),
        ("sev", severity(record).to_string()),
        ("action", record.operation.as_str().to_owned()),
        ("outcome", outcome(record).to_owned()),
        ("remediation", record.remediation.to_string()),
        ("object", record.object.clone()),
        ("zone", record.zone.clone()),
    ];
    if let Some(error) = &record.error {
        pairs.push(("error", error.clone()));
    }
    if let Some(commit) = &record.commit {
        if let Some(admin) = &commit.admin {
            pairs.push(("usrName", admin.clone()));
        }
        if let Some(id) = commit.id {
            pairs.push(("commitVersion", id.to_string()));
        }
        if let Some(time) = &commit.time {
            pairs.push(("commitTime", time.clone()));
        }
        if let Some(description) = &commit.description {
            pairs.push(("commitDescription", description.clone()));
        }
    }
    if let Some(device_group) = &record.device_group {
        pairs.push(("deviceGroup", device_group.clone()));
    }
    pairs.push(("rules", rules_list(record)));
    pairs.push(("rulesTotal", record.rules_total.to_string()));
    pairs.push(("target", record.target.clone()));
    pairs.push(("source", record.source.clone()));
    if let Some(hash) = &record.previous_hash {
        pairs.push(("previousHash", hash.clone()));
    }
    if let Some(hash) = &record.new_hash {
        pairs.push(("newHash", hash.clone()));
    }
    if !record.changed_by.is_empty() {
        pairs.push(("changedBy", record.changed_by.join(",")));
    }
    pairs.push(("controller", record.controller.clone()));
    pairs.push(("reportingHost", record.host.clone()));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::format::Format;
    use crate::sync::desired::CommitInfo;

    /// A remediation with hostile text wherever text comes from outside zonewall: the admin
    /// and description come from Panorama, the manager from the API server.
    fn hostile() -> AuditRecord {
        AuditRecord {
            time: "2026-11-28T04:10:10.123456789Z".parse().expect("time"),
            controller: "zonewall-sync".into(),
            host: "sync-7f9c".into(),
            operation: ChangeKind::Restore,
            remediation: true,
            target: "kubernetes".into(),
            object: "firewall-trust".into(),
            zone: "trust".into(),
            outcome: Outcome::Success,
            error: None,
            source: "https://panorama.example/".into(),
            device_group: Some("dg|prod".into()),
            commit: Some(CommitInfo {
                id: Some(42),
                admin: Some("ad|min=x\\y]\"z".into()),
                time: Some("2026/11/28 04:09:58".into()),
                description: Some("line1\nline2\r|a=b] \\ end\u{2028}x\ty".into()),
            }),
            rules: vec![
                "dg|prod/pre/allow web".into(),
                "dg|prod/post/deny=all".into(),
            ],
            rules_total: 2,
            previous_hash: Some("sha256:aa".into()),
            new_hash: Some("sha256:bb".into()),
            changed_by: vec!["kubectl-edit".into()],
        }
    }

    /// A plain apply that failed, without commit metadata (a watched file).
    fn failed_apply() -> AuditRecord {
        AuditRecord {
            operation: ChangeKind::Create,
            remediation: false,
            outcome: Outcome::Failed,
            error: Some("admission webhook \"x\" denied: no\nretry".into()),
            target: "directory:/var/lib/zonewall/policies".into(),
            source: "/etc/zonewall/panos.xml".into(),
            device_group: None,
            commit: None,
            rules: vec!["vsys1/local/allow-out".into()],
            rules_total: 1,
            previous_hash: None,
            new_hash: Some("sha256:cc".into()),
            changed_by: Vec::new(),
            ..hostile()
        }
    }

    fn render(format: Format, record: &AuditRecord) -> String {
        format.render(record, &FormatOptions::default())
    }

    #[test]
    fn cef_golden() {
        let version = crate::flows::format::ZONEWALL_VERSION;
        assert_eq!(
            render(Format::Cef, &hostile()),
            format!(
                "CEF:0|zonewall|zonewall|{version}|config-remediation|CONFIG|6|rt=1795839010123 dvchost=sync-7f9c deviceProcessName=zonewall-sync cat=config act=restore outcome=success suser=ad|min\\=x\\\\y]\"z msg=restored ZonePolicy firewall-trust (zone trust) after an edit outside zonewall sync by kubectl-edit; commit 42 by ad|min\\=x\\\\y]\"z cs2Label=ZonePolicy cs2=firewall-trust cs4Label=Zone cs4=trust cs5Label=Device Group cs5=dg|prod cn1Label=Commit Version cn1=42 cs6Label=Commit Time cs6=2026/11/28 04:09:58 cs3Label=Commit Description cs3=line1\\nline2\\r|a\\=b] \\\\ end\u{FFFD}x\u{FFFD}y cs1Label=Rules cs1=dg|prod/pre/allow web,dg|prod/post/deny\\=all cn2Label=Rules Total cn2=2 ZonewallRemediation=true ZonewallTarget=kubernetes ZonewallSource=https://panorama.example/ ZonewallPreviousSpecHash=sha256:aa ZonewallSpecHash=sha256:bb ZonewallChangedBy=kubectl-edit"
            )
        );
        assert_eq!(
            render(Format::Cef, &failed_apply()),
            format!(
                "CEF:0|zonewall|zonewall|{version}|config-apply|CONFIG|7|rt=1795839010123 dvchost=sync-7f9c deviceProcessName=zonewall-sync cat=config act=create outcome=failure reason=admission webhook \"x\" denied: no\\nretry msg=failed to create ZonePolicy firewall-trust (zone trust): admission webhook \"x\" denied: no\\nretry cs2Label=ZonePolicy cs2=firewall-trust cs4Label=Zone cs4=trust cs1Label=Rules cs1=vsys1/local/allow-out cn2Label=Rules Total cn2=1 ZonewallRemediation=false ZonewallTarget=directory:/var/lib/zonewall/policies ZonewallSource=/etc/zonewall/panos.xml ZonewallSpecHash=sha256:cc"
            )
        );
    }

    #[test]
    fn rfc5424_golden() {
        assert_eq!(
            render(Format::Rfc5424, &hostile()),
            "<132>1 2026-11-28T04:10:10.123456Z sync-7f9c zonewall - config-remediation [config@32473 operation=\"restore\" remediation=\"true\" outcome=\"success\" object=\"firewall-trust\" zone=\"trust\" target=\"kubernetes\" source=\"https://panorama.example/\" deviceGroup=\"dg|prod\" previousHash=\"sha256:aa\" newHash=\"sha256:bb\" changedBy=\"kubectl-edit\" controller=\"zonewall-sync\"][commit@32473 id=\"42\" admin=\"ad|min=x\\\\y\\]\\\"z\" time=\"2026/11/28 04:09:58\" description=\"line1\u{FFFD}line2\u{FFFD}|a=b\\] \\\\ end\u{FFFD}x\u{FFFD}y\"][rules@32473 total=\"2\" rule=\"dg|prod/pre/allow web\" rule=\"dg|prod/post/deny=all\"] restored ZonePolicy firewall-trust (zone trust) after an edit outside zonewall sync by kubectl-edit; commit 42 by ad|min=x\\y]\"z"
        );
        assert_eq!(
            render(Format::Rfc5424, &failed_apply()),
            "<131>1 2026-11-28T04:10:10.123456Z sync-7f9c zonewall - config-apply [config@32473 operation=\"create\" remediation=\"false\" outcome=\"failure\" object=\"firewall-trust\" zone=\"trust\" target=\"directory:/var/lib/zonewall/policies\" source=\"/etc/zonewall/panos.xml\" error=\"admission webhook \\\"x\\\" denied: no\u{FFFD}retry\" newHash=\"sha256:cc\" controller=\"zonewall-sync\"][rules@32473 total=\"1\" rule=\"vsys1/local/allow-out\"] failed to create ZonePolicy firewall-trust (zone trust): admission webhook \"x\" denied: no\u{FFFD}retry"
        );
    }

    #[test]
    fn leef_golden() {
        let version = crate::flows::format::ZONEWALL_VERSION;
        assert_eq!(
            render(Format::Leef, &hostile()),
            format!(
                "LEEF:2.0|zonewall|zonewall|{version}|config-remediation|x09|devTime=2026-11-28T04:10:10.123+0000\tdevTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ\tcat=config\tsev=6\taction=restore\toutcome=success\tremediation=true\tobject=firewall-trust\tzone=trust\tusrName=ad|min=x\\y]\"z\tcommitVersion=42\tcommitTime=2026/11/28 04:09:58\tcommitDescription=line1\u{FFFD}line2\u{FFFD}|a=b] \\ end\u{FFFD}x\u{FFFD}y\tdeviceGroup=dg|prod\trules=dg|prod/pre/allow web,dg|prod/post/deny=all\trulesTotal=2\ttarget=kubernetes\tsource=https://panorama.example/\tpreviousHash=sha256:aa\tnewHash=sha256:bb\tchangedBy=kubectl-edit\tcontroller=zonewall-sync\treportingHost=sync-7f9c"
            )
        );
    }

    #[test]
    fn json_is_the_audit_line() {
        let record = hostile();
        let rendered = render(Format::Json, &record);
        assert_eq!(format!("{rendered}\n"), record.to_json_line());
        assert!(!rendered.contains('\n') && !rendered.contains('\u{2028}'));
        let value: serde_json::Value = serde_json::from_str(&rendered).expect("JSON");
        assert_eq!(value["time"], "2026-11-28T04:10:10.123456789Z");
        assert_eq!(value["operation"], "restore");
        assert_eq!(value["commit"]["admin"], "ad|min=x\\y]\"z");
        assert_eq!(
            value["commit"]["description"], "line1\nline2\r|a=b] \\ end\u{2028}x\ty",
            "JSON escaping keeps the text exactly"
        );
    }

    #[test]
    fn every_format_is_one_line_and_classes_and_severities_follow_the_operation() {
        let cases = [
            (ChangeKind::Create, Outcome::Success, "config-apply", 3),
            (ChangeKind::Update, Outcome::Success, "config-apply", 3),
            (
                ChangeKind::DeleteStale,
                Outcome::Success,
                "config-delete",
                3,
            ),
            (
                ChangeKind::Restore,
                Outcome::Success,
                "config-remediation",
                6,
            ),
            (
                ChangeKind::DeleteForeign,
                Outcome::Success,
                "config-remediation",
                6,
            ),
            (ChangeKind::Update, Outcome::Failed, "config-apply", 7),
            (
                ChangeKind::DeleteForeign,
                Outcome::Failed,
                "config-remediation",
                8,
            ),
        ];
        for (operation, result, class, cef_severity) in cases {
            let record = AuditRecord {
                operation,
                remediation: operation.is_remediation(),
                outcome: result,
                ..hostile()
            };
            assert_eq!(event_class(&record), class);
            assert_eq!(severity(&record), cef_severity);
            for format in Format::ALL {
                let text = render(format, &record);
                assert!(
                    !text.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']),
                    "{format}: {text:?}"
                );
            }
            let cef = render(Format::Cef, &record);
            assert!(cef.starts_with("CEF:0|zonewall|zonewall|"), "{cef}");
            assert!(
                cef.contains(&format!("|{class}|CONFIG|{cef_severity}|")),
                "{cef}"
            );
        }
    }
}
