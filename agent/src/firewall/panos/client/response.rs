//! Pure parsing of PAN-OS XML API responses (no I/O), so every documented shape is unit-tested.
//!
//! Every answer is wrapped in `<response status="..." [code="..."]>`:
//! - success: `<response status="success" [code="19"]><result ...>...</result></response>`;
//! - error: `<response status="error" code="N"><msg><line>text</line>...</msg></response>`, or the
//!   message inside `<result><msg>text</msg></result>` (the shape of the 403 "Invalid credential"
//!   answer), or `<msg>text</msg>` without `<line>`;
//! - `status="unauth" code="16"` for a key whose admin role may not run the request.

use roxmltree::{Document, Node, ParsingOptions};

/// Upper bound on XML nodes in one response. A Panorama running config with 100,000 address
/// objects and 10,000 rules stays well below it; the byte limit on the body comes first anyway.
const MAX_XML_NODES: u32 = 50_000_000;

/// Longest PAN-OS message kept in an error, so a misbehaving server cannot flood logs.
const MAX_MESSAGE_CHARS: usize = 2_000;

/// The `<response>` envelope of one XML API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// The `status` attribute: `success`, `error`, `unauth`, ...
    pub status: String,
    /// The `code` attribute (see the PAN-OS XML API error code table), when present.
    pub code: Option<String>,
    /// The `<msg>` text, `<line>` elements joined with "; ".
    pub message: Option<String>,
    /// The raw XML between `<result ...>` and `</result>`, when the response has a `<result>`.
    pub result: Option<String>,
}

impl Envelope {
    pub fn is_success(&self) -> bool {
        self.status == "success"
    }

    /// True when the result holds no element (for example `<result/>` answering an xpath that
    /// selects nothing).
    pub fn result_is_empty(&self) -> bool {
        self.result
            .as_deref()
            .is_none_or(|inner| !inner.contains('<') && inner.trim().is_empty())
    }
}

/// Parses an XML document with DTDs refused and a node limit.
pub(crate) fn parse_document(text: &str) -> Result<Document<'_>, String> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, options).map_err(|error| match &error {
        roxmltree::Error::DtdDetected => {
            "the body contains a DTD, which zonewall refuses (entity expansion attacks)".to_owned()
        }
        roxmltree::Error::NodesLimitReached => {
            format!("the body has more than {MAX_XML_NODES} XML nodes")
        }
        roxmltree::Error::UnexpectedEndOfStream | roxmltree::Error::UnclosedRootNode => {
            format!("the XML document ends early (the body looks truncated): {error}")
        }
        other => format!("invalid XML: {other}"),
    })
}

/// Parses a response body into its envelope. The error says why the body is not a PAN-OS XML
/// API response (empty, truncated, HTML, wrong root element, ...).
pub(crate) fn parse_envelope(body: &str) -> Result<Envelope, String> {
    if body.trim().is_empty() {
        return Err("the body is empty".to_owned());
    }
    let document = parse_document(body)?;
    let root = document.root_element();
    if root.tag_name().name() != "response" {
        return Err(format!(
            "the root element is <{}>, not <response>",
            root.tag_name().name()
        ));
    }
    let status = root
        .attribute("status")
        .map(|status| status.trim().to_owned())
        .ok_or_else(|| "<response> has no status attribute".to_owned())?;
    let code = root
        .attribute("code")
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(str::to_owned);
    let result_node = child_element(root, "result");
    let message = child_element(root, "msg")
        .or_else(|| result_node.and_then(|result| child_element(result, "msg")))
        .and_then(message_text);
    let result = result_node.map(|node| inner_xml(body, node).to_owned());
    Ok(Envelope {
        status,
        code,
        message,
        result,
    })
}

fn child_element<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children()
        .find(|child| child.is_element() && child.tag_name().name() == name)
}

fn child_text(node: Node<'_, '_>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        child_element(node, name)
            .map(all_text)
            .filter(|text| !text.is_empty())
    })
}

/// The concatenated, trimmed text of a node and its descendants (CDATA included).
fn all_text(node: Node<'_, '_>) -> String {
    let text: String = node
        .descendants()
        .filter(Node::is_text)
        .filter_map(|text| text.text())
        .collect();
    text.trim().to_owned()
}

fn message_text(msg: Node<'_, '_>) -> Option<String> {
    let lines: Vec<String> = msg
        .children()
        .filter(|child| child.is_element() && child.tag_name().name() == "line")
        .map(all_text)
        .filter(|line| !line.is_empty())
        .collect();
    let text = if lines.is_empty() {
        all_text(msg)
    } else {
        lines.join("; ")
    };
    if text.is_empty() {
        return None;
    }
    Some(truncate_chars(&text, MAX_MESSAGE_CHARS))
}

fn truncate_chars(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The raw source text between an element's start and end tags.
fn inner_xml<'input>(source: &'input str, node: Node<'_, 'input>) -> &'input str {
    match (node.first_child(), node.last_child()) {
        (Some(first), Some(last)) => &source[first.range().start..last.range().end],
        _ => "",
    }
}

/// One committed configuration, as reported by the config audit list or the job list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEntry {
    /// The config version (config audit) or the commit job id (job list); grows with each commit.
    pub id: u64,
    /// The administrator who committed, when reported.
    pub admin: Option<String>,
    /// When the commit finished (or was queued, when PAN-OS reports only that), as PAN-OS
    /// prints it, for example `2024/03/05 10:12:44`.
    pub time: Option<String>,
    /// The commit description or comment, when reported.
    pub description: Option<String>,
}

/// Parses the `<result>` content of `<show><config><audit><info/></audit></config></show>`.
///
/// Each committed version is an `<entry name="VERSION">`; the field element names vary between
/// releases, so several spellings are accepted. Entries without a numeric version are skipped.
pub(crate) fn parse_config_audit(result_inner: &str) -> Result<Vec<CommitEntry>, String> {
    let wrapped = format!("<result>{result_inner}</result>");
    let document = parse_document(&wrapped)?;
    let mut entries: Vec<CommitEntry> = document
        .descendants()
        .filter(|node| node.is_element() && node.tag_name().name() == "entry")
        // Only the outermost entries are versions.
        .filter(|node| {
            !node
                .ancestors()
                .skip(1)
                .any(|ancestor| ancestor.tag_name().name() == "entry")
        })
        .filter_map(|entry| {
            let id = entry
                .attribute("name")
                .map(str::to_owned)
                .or_else(|| child_text(entry, &["version", "id"]))?
                .trim()
                .parse::<u64>()
                .ok()?;
            Some(CommitEntry {
                id,
                admin: child_text(entry, &["admin", "user", "username"]),
                time: child_text(entry, &["date", "time", "timestamp"]),
                description: child_text(entry, &["description", "comment", "comments"]),
            })
        })
        .collect();
    sort_newest_first(&mut entries);
    Ok(entries)
}

/// Parses the `<result>` content of `<show><jobs><all/></jobs></show>` and keeps the
/// successfully finished commits: `<job>` with `<type>Commit</type>`, `<status>FIN</status>`
/// and `<result>OK</result>`.
pub(crate) fn parse_commit_jobs(result_inner: &str) -> Result<Vec<CommitEntry>, String> {
    let wrapped = format!("<result>{result_inner}</result>");
    let document = parse_document(&wrapped)?;
    let mut entries: Vec<CommitEntry> = document
        .root_element()
        .children()
        .filter(|node| node.is_element() && node.tag_name().name() == "job")
        .filter(|job| {
            child_text(*job, &["type"]).as_deref() == Some("Commit")
                && child_text(*job, &["status"]).as_deref() == Some("FIN")
                && child_text(*job, &["result"]).as_deref() == Some("OK")
        })
        .filter_map(|job| {
            let id = child_text(job, &["id"])?.parse::<u64>().ok()?;
            // Older releases print only a clock time in <tfin>; <tenq> always carries the date.
            let finished = child_text(job, &["tfin"]).filter(|time| time.contains('/'));
            Some(CommitEntry {
                id,
                admin: child_text(job, &["user"]),
                time: finished.or_else(|| child_text(job, &["tenq"])),
                description: child_text(job, &["description"]),
            })
        })
        .collect();
    sort_newest_first(&mut entries);
    Ok(entries)
}

fn sort_newest_first(entries: &mut [CommitEntry]) {
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.id));
}

/// The `<key>` of a successful `type=keygen` answer.
pub(crate) fn parse_keygen_key(result_inner: &str) -> Result<String, String> {
    let wrapped = format!("<result>{result_inner}</result>");
    let document = parse_document(&wrapped)?;
    child_text(document.root_element(), &["key"])
        .ok_or_else(|| "the keygen result has no <key> element".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_with_result_content_kept_raw() {
        let body = r#"<response status="success" code="19"><result total-count="1" count="1">
  <security><rules><entry name="a&amp;b"/></rules></security>
</result></response>"#;
        let envelope = parse_envelope(body).unwrap();
        assert!(envelope.is_success());
        assert_eq!(envelope.code.as_deref(), Some("19"));
        let inner = envelope.result.as_deref().unwrap();
        assert_eq!(
            inner.trim(),
            r#"<security><rules><entry name="a&amp;b"/></rules></security>"#
        );
        assert!(!envelope.result_is_empty());
    }

    #[test]
    fn empty_result_for_missing_xpath() {
        let envelope =
            parse_envelope(r#"<response status="success" code="7"><result/></response>"#).unwrap();
        assert!(envelope.is_success());
        assert!(envelope.result_is_empty());
    }

    #[test]
    fn error_with_lines() {
        let body = r#"<response status="error" code="6"><msg><line><![CDATA[ bad xpath ]]></line><line>second</line></msg></response>"#;
        let envelope = parse_envelope(body).unwrap();
        assert_eq!(envelope.status, "error");
        assert_eq!(envelope.code.as_deref(), Some("6"));
        assert_eq!(envelope.message.as_deref(), Some("bad xpath; second"));
    }

    #[test]
    fn invalid_credential_shape_with_spaces_and_single_quotes() {
        let body = "<response status = 'error' code = '403'><result><msg>Invalid Credential</msg></result></response>";
        let envelope = parse_envelope(body).unwrap();
        assert_eq!(envelope.code.as_deref(), Some("403"));
        assert_eq!(envelope.message.as_deref(), Some("Invalid Credential"));
    }

    #[test]
    fn unauth_shape() {
        let body = r#"<response status="unauth" code="16"><msg><line>Unauthorized request</line></msg></response>"#;
        let envelope = parse_envelope(body).unwrap();
        assert_eq!(envelope.status, "unauth");
        assert_eq!(envelope.message.as_deref(), Some("Unauthorized request"));
    }

    #[test]
    fn malformed_bodies_are_explained() {
        assert!(parse_envelope("").unwrap_err().contains("empty"));
        let truncated =
            parse_envelope(r#"<response status="success"><result><config"#).unwrap_err();
        assert!(truncated.contains("truncated"), "{truncated}");
        let html = parse_envelope("<html><body>Login</body></html>").unwrap_err();
        assert!(html.contains("<html>"), "{html}");
        let dtd = parse_envelope(
            r#"<!DOCTYPE response [<!ENTITY x "y">]><response status="success">&x;</response>"#,
        )
        .unwrap_err();
        assert!(dtd.contains("DTD"), "{dtd}");
        assert!(
            parse_envelope("<response/>")
                .unwrap_err()
                .contains("no status")
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(5_000);
        let body = format!(r#"<response status="error"><msg>{long}</msg></response>"#);
        let message = parse_envelope(&body).unwrap().message.unwrap();
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 3);
    }

    #[test]
    fn config_audit_entries_sorted_newest_first() {
        let inner = r#"
          <entry name="41"><date>2024/03/04 09:00:00</date><admin>alice</admin><description>open dmz</description></entry>
          <entry name="43"><date>2024/03/05 10:12:44</date><user>bob</user><comment>tighten</comment></entry>
          <entry name="not-a-version"/>
          <entry name="42"/>"#;
        let entries = parse_config_audit(inner).unwrap();
        let ids: Vec<u64> = entries.iter().map(|entry| entry.id).collect();
        assert_eq!(ids, [43, 42, 41]);
        assert_eq!(entries[0].admin.as_deref(), Some("bob"));
        assert_eq!(entries[0].description.as_deref(), Some("tighten"));
        assert_eq!(entries[2].time.as_deref(), Some("2024/03/04 09:00:00"));
        assert_eq!(entries[1].admin, None);
    }

    #[test]
    fn commit_jobs_keep_only_finished_successful_commits() {
        let inner = r#"
          <job><tenq>2024/03/05 10:12:30</tenq><id>7</id><user>alice</user><type>Commit</type>
               <status>FIN</status><result>OK</result><tfin>10:12:44</tfin><description>v1</description></job>
          <job><tenq>2024/03/06 08:00:00</tenq><id>9</id><user>bob</user><type>Commit</type>
               <status>FIN</status><result>OK</result><tfin>2024/03/06 08:00:21</tfin><description/></job>
          <job><id>10</id><type>Commit</type><status>FIN</status><result>FAIL</result></job>
          <job><id>11</id><type>Commit</type><status>ACT</status><result>PEND</result><tfin>Still Active</tfin></job>
          <job><id>12</id><user>Auto update agent</user><type>WildFire</type><status>FIN</status><result>OK</result></job>"#;
        let entries = parse_commit_jobs(inner).unwrap();
        assert_eq!(
            entries,
            vec![
                CommitEntry {
                    id: 9,
                    admin: Some("bob".into()),
                    time: Some("2024/03/06 08:00:21".into()),
                    description: None,
                },
                CommitEntry {
                    id: 7,
                    admin: Some("alice".into()),
                    time: Some("2024/03/05 10:12:30".into()),
                    description: Some("v1".into()),
                },
            ]
        );
    }

    #[test]
    fn keygen_key() {
        assert_eq!(
            parse_keygen_key("<key>LUFRPT1abc==</key>").unwrap(),
            "LUFRPT1abc=="
        );
        assert!(parse_keygen_key("<nothing/>").is_err());
    }
}
