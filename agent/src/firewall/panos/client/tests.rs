//! Adapter tests: the client against the in-process HTTPS stand-in serving PAN-OS XML API
//! response shapes (success, empty result, error, 403, unauth, 5xx, truncated, slow).

use std::time::{Duration, Instant};

use super::stand_in::{Recorded, Reply, StandIn, TempPem, unrelated_ca_file};
use super::*;

const KEY: &str = "LUFRPT1zonewallTESTkey0123456789abcdef==";
const PASSWORD: &str = "hunter2-Panorama-PW";
const DG_XPATH: &str =
    "/config/devices/entry[@name='localhost.localdomain']/device-group/entry[@name='shop']";

const RUNNING_RULES: &str = r#"<response status="success"><result><pre-rulebase><security><rules><entry name="web-to-db" uuid="1f6c3a52-0f3e-4a56-9f5e-3d0e7d2a9b11"><from><member>dmz</member></from><to><member>trusted</member></to><action>allow</action></entry></rules></security></pre-rulebase></result></response>"#;
const CANDIDATE_RULES: &str = r#"<response status="success" code="19"><result total-count="1" count="1"><pre-rulebase admin="alice" dirtyId="3" time="2024/03/06 09:10:11"><security><rules/></security></pre-rulebase></result></response>"#;
const EMPTY_GET: &str = r#"<response status="success" code="7"><result/></response>"#;
const NO_SUCH_NODE: &str =
    r#"<response status="error"><msg><line>No such node</line></msg></response>"#;
const BAD_XPATH: &str = r#"<response status="error" code="6"><msg><line><![CDATA[ Invalid xpath: /config/devices/entry[@name= ]]></line></msg></response>"#;
const INVALID_CREDENTIAL: &str = "<response status = 'error' code = '403'><result><msg>Invalid Credential</msg></result></response>";
const UNAUTH: &str = r#"<response status="unauth" code="16"><msg><line>Unauthorized request</line></msg></response>"#;
const INTERNAL_ERROR: &str =
    r#"<response status="error" code="21"><msg><line>Internal error</line></msg></response>"#;
const KEYGEN_OK: &str =
    r#"<response status="success"><result><key>LUFRPT1generatedKEY==</key></result></response>"#;
const KEYGEN_REJECTED: &str = r#"<response status="error" code="403"><result><msg>Invalid Credentials.</msg></result></response>"#;
const AUDIT_INFO: &str = r#"<response status="success"><result>
  <entry name="118"><date>2024/03/05 10:12:44</date><admin>alice</admin><description>open dmz web</description></entry>
  <entry name="120"><date>2024/03/06 08:00:21</date><admin>bob</admin><description>ticket SEC-42</description></entry>
  <entry name="119"><date>2024/03/05 17:30:02</date><admin>alice</admin></entry>
</result></response>"#;
const JOBS_ALL: &str = r#"<response status="success"><result>
  <job><tenq>2024/03/06 08:00:02</tenq><tdeq>08:00:02</tdeq><id>311</id><user>bob</user><type>Commit</type><status>FIN</status><queued>NO</queued><stoppable>no</stoppable><result>OK</result><tfin>2024/03/06 08:00:21</tfin><description>ticket SEC-42</description><positionInQ>0</positionInQ><progress>100</progress><details><line>Configuration committed successfully</line></details><warnings/></job>
  <job><tenq>2024/03/06 08:05:00</tenq><id>312</id><user>Auto update agent</user><type>WildFire</type><status>FIN</status><result>OK</result><tfin>2024/03/06 08:05:09</tfin><description/></job>
  <job><tenq>2024/03/06 09:00:00</tenq><id>313</id><user>alice</user><type>Commit</type><status>ACT</status><result>PEND</result><tfin>Still Active</tfin><progress>40</progress></job>
  <job><tenq>2024/03/05 10:12:30</tenq><id>305</id><user>alice</user><type>Commit</type><status>FIN</status><result>OK</result><tfin>2024/03/05 10:12:44</tfin><description/></job>
</result></response>"#;

/// Settings for the stand-in: its CA, short timeouts and fast retries.
fn config_for(stand_in: &StandIn) -> ClientConfig {
    let mut config = ClientConfig::new(
        stand_in.url(),
        TlsVerification::CaBundle(stand_in.ca_file()),
    );
    config.connect_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    // Tests talk only to 127.0.0.1, never through a proxy from the environment.
    config.use_env_proxy = false;
    config
}

fn client_for(stand_in: &StandIn) -> PanoramaClient {
    PanoramaClient::new(&config_for(stand_in), ApiKey::new(KEY)).expect("client")
}

/// The key reached the stand-in only in the X-PAN-KEY header.
fn assert_key_only_in_header(request: &Recorded) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("x-pan-key"), Some(KEY), "{request:?}");
    assert_eq!(request.target, "/api/", "no query string expected");
    assert!(!request.target.contains("key="), "{}", request.target);
    assert!(!request.body.contains(KEY), "key in body: {}", request.body);
    assert!(request.form("key").is_none());
}

/// Neither the error's message nor its Debug form holds a secret.
fn assert_no_secret(error: &ClientError) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(KEY), "key leaked: {text}");
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        assert!(
            !text.contains("generatedKEY"),
            "generated key leaked: {text}"
        );
    }
}

#[tokio::test]
async fn running_config_returns_result_content_and_sends_key_only_in_header() {
    let stand_in = StandIn::always(Reply::xml(200, RUNNING_RULES)).await;
    let client = client_for(&stand_in);

    let xml = client
        .running_config(&format!("{DG_XPATH}/pre-rulebase"))
        .await
        .expect("running config")
        .expect("present");
    assert!(xml.starts_with("<pre-rulebase><security>"), "{xml}");
    assert!(xml.ends_with("</pre-rulebase>"), "{xml}");

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1);
    assert_key_only_in_header(&requests[0]);
    assert_eq!(requests[0].form("type").as_deref(), Some("config"));
    assert_eq!(requests[0].form("action").as_deref(), Some("show"));
    assert_eq!(
        requests[0].form("xpath"),
        Some(format!("{DG_XPATH}/pre-rulebase"))
    );
}

#[tokio::test]
async fn candidate_config_uses_action_get() {
    let stand_in = StandIn::always(Reply::xml(200, CANDIDATE_RULES)).await;
    let client = client_for(&stand_in);
    let xml = client
        .candidate_config(&format!("{DG_XPATH}/pre-rulebase"))
        .await
        .expect("candidate config")
        .expect("present");
    assert!(xml.contains(r#"dirtyId="3""#), "{xml}");
    let requests = stand_in.requests();
    assert_eq!(requests[0].form("action").as_deref(), Some("get"));
    assert_key_only_in_header(&requests[0]);
}

#[tokio::test]
async fn unknown_xpath_reads_as_absent() {
    for (source, body) in [
        (ConfigSource::Candidate, EMPTY_GET),
        (ConfigSource::Running, NO_SUCH_NODE),
        (
            ConfigSource::Running,
            r#"<response status="error" code="7"><msg><line>Object not present</line></msg></response>"#,
        ),
    ] {
        let stand_in = StandIn::always(Reply::xml(200, body)).await;
        let client = client_for(&stand_in);
        let read = client
            .read_config(source, &format!("{DG_XPATH}/post-rulebase"))
            .await
            .expect("absent is not an error");
        assert_eq!(read, None, "{body}");
        assert_eq!(stand_in.requests().len(), 1, "not retried: {body}");
    }
}

#[tokio::test]
async fn panos_error_names_code_message_and_operation() {
    let stand_in = StandIn::always(Reply::xml(200, BAD_XPATH)).await;
    let client = client_for(&stand_in);
    let error = client
        .running_config("/config/devices/entry[@name=")
        .await
        .expect_err("bad xpath");
    assert!(matches!(error, ClientError::Api { .. }), "{error:?}");
    assert_eq!(error.http_status(), Some(200));
    assert_eq!(error.panos_code(), Some("6"));
    assert_eq!(
        error.panos_message(),
        Some("Invalid xpath: /config/devices/entry[@name=")
    );
    let text = error.to_string();
    assert!(text.contains("PAN-OS code 6"), "{text}");
    assert!(text.contains("config show of /config/devices"), "{text}");
    assert!(text.contains("/api/"), "{text}");
    assert!(text.contains("--device-group"), "{text}");
    assert_eq!(
        stand_in.requests().len(),
        1,
        "PAN-OS errors are not retried"
    );
    assert_no_secret(&error);
}

#[tokio::test]
async fn bad_key_is_an_authentication_error_and_never_retried() {
    let stand_in = StandIn::always(Reply::xml(403, INVALID_CREDENTIAL)).await;
    let client = client_for(&stand_in);
    let error = client.commit_jobs().await.expect_err("bad key");
    assert!(
        matches!(error, ClientError::Authentication { .. }),
        "{error:?}"
    );
    assert!(error.is_auth());
    assert_eq!(error.http_status(), Some(403));
    assert_eq!(error.panos_code(), Some("403"));
    assert_eq!(error.panos_message(), Some("Invalid Credential"));
    let text = error.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(
        text.contains("PAN-OS code 403: Invalid Credential"),
        "{text}"
    );
    assert!(text.contains("--api-key-file"), "{text}");
    assert_eq!(stand_in.requests().len(), 1, "403 must not be retried");
    assert_no_secret(&error);
}

#[tokio::test]
async fn code_403_inside_http_200_is_still_an_authentication_error() {
    let stand_in = StandIn::always(Reply::xml(200, INVALID_CREDENTIAL)).await;
    let error = client_for(&stand_in)
        .running_config(DG_XPATH)
        .await
        .expect_err("bad key");
    assert!(
        matches!(error, ClientError::Authentication { status: 200, .. }),
        "{error:?}"
    );
    assert_eq!(stand_in.requests().len(), 1);
}

#[tokio::test]
async fn unauthorized_role_is_reported_and_not_retried() {
    let stand_in = StandIn::always(Reply::xml(200, UNAUTH)).await;
    let error = client_for(&stand_in)
        .config_audit_versions()
        .await
        .expect_err("unauth");
    assert!(
        matches!(error, ClientError::Unauthorized { .. }),
        "{error:?}"
    );
    assert_eq!(error.panos_code(), Some("16"));
    assert!(
        error.to_string().contains("Unauthorized request"),
        "{error}"
    );
    assert_eq!(stand_in.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let stand_in = StandIn::start(|_, index| {
        if index < 2 {
            Reply::xml(503, "<html><body>Service Unavailable</body></html>")
        } else {
            Reply::xml(200, RUNNING_RULES)
        }
    })
    .await;
    let xml = client_for(&stand_in)
        .running_config(DG_XPATH)
        .await
        .expect("third attempt succeeds");
    assert!(xml.is_some());
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_key_only_in_header(request);
    }
}

#[tokio::test]
async fn server_error_retries_are_bounded_and_reported() {
    let stand_in = StandIn::always(Reply::xml(500, INTERNAL_ERROR)).await;
    let error = client_for(&stand_in)
        .running_config(DG_XPATH)
        .await
        .expect_err("always 500");
    match &error {
        ClientError::HttpStatus {
            status, attempts, ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(*attempts, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(error.panos_code(), Some("21"));
    let text = error.to_string();
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(text.contains("PAN-OS code 21: Internal error"), "{text}");
    assert!(text.contains("after 3 attempt(s)"), "{text}");
    assert_eq!(
        stand_in.requests().len(),
        3,
        "max_attempts bounds the retries"
    );
    assert_no_secret(&error);
}

#[tokio::test]
async fn rate_limiting_is_retried() {
    let stand_in = StandIn::start(|_, index| {
        if index == 0 {
            Reply::Xml {
                status: 429,
                body: String::new(),
                headers: vec![("Retry-After".into(), "0".into())],
            }
        } else {
            Reply::xml(200, JOBS_ALL)
        }
    })
    .await;
    let commits = client_for(&stand_in).commit_jobs().await.expect("commits");
    assert_eq!(commits.len(), 2);
    assert_eq!(stand_in.requests().len(), 2);
}

#[tokio::test]
async fn other_http_status_is_not_retried_and_names_the_status() {
    let stand_in = StandIn::always(Reply::xml(404, "<html>Not Found</html>")).await;
    let error = client_for(&stand_in)
        .running_config(DG_XPATH)
        .await
        .expect_err("404");
    assert_eq!(error.http_status(), Some(404));
    let text = error.to_string();
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(text.contains("no PAN-OS code"), "{text}");
    assert!(text.contains("--panorama-url"), "{text}");
    assert_eq!(stand_in.requests().len(), 1);
}

#[tokio::test]
async fn connection_dropped_mid_body_is_retried_then_reported_as_truncated() {
    let stand_in = StandIn::always(Reply::Truncated {
        body: RUNNING_RULES[..60].to_owned(),
        declared_len: RUNNING_RULES.len(),
    })
    .await;
    let error = client_for(&stand_in)
        .running_config(DG_XPATH)
        .await
        .expect_err("truncated");
    assert!(
        matches!(error, ClientError::Transport { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("truncated"), "{error}");
    assert_eq!(stand_in.requests().len(), 3);
    assert_no_secret(&error);
}

#[tokio::test]
async fn truncated_or_non_xml_body_is_a_clear_error() {
    let truncated_xml = &RUNNING_RULES[..RUNNING_RULES.len() - 30];
    for (body, expected) in [
        (truncated_xml, "truncated"),
        ("<html><body>Please log in</body></html>", "<html>"),
        ("", "empty"),
        ("Invalid request", "invalid XML"),
    ] {
        let stand_in = StandIn::always(Reply::xml(200, body)).await;
        let error = client_for(&stand_in)
            .running_config(DG_XPATH)
            .await
            .expect_err("malformed");
        assert!(
            matches!(error, ClientError::MalformedResponse { .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains(expected), "{expected:?} missing from: {text}");
        assert!(text.contains("not a PAN-OS XML API response"), "{text}");
        assert_eq!(stand_in.requests().len(), 1, "not retried: {body}");
    }
}

#[tokio::test]
async fn dtd_in_a_response_is_refused() {
    let body = r#"<?xml version="1.0"?><!DOCTYPE response [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><response status="success"><result>&b;</result></response>"#;
    let stand_in = StandIn::always(Reply::xml(200, body)).await;
    let error = client_for(&stand_in)
        .running_config(DG_XPATH)
        .await
        .expect_err("DTD");
    assert!(error.to_string().contains("DTD"), "{error}");
}

#[tokio::test]
async fn slow_server_times_out_with_bounded_retries() {
    let stand_in = StandIn::always(Reply::Slow {
        delay: Duration::from_secs(30),
        then: Box::new(Reply::xml(200, RUNNING_RULES)),
    })
    .await;
    let mut config = config_for(&stand_in);
    config.request_timeout = Duration::from_millis(300);
    config.retry.max_attempts = 2;
    let client = PanoramaClient::new(&config, ApiKey::new(KEY)).expect("client");

    let started = Instant::now();
    let error = client.running_config(DG_XPATH).await.expect_err("timeout");
    let elapsed = started.elapsed();
    assert!(
        matches!(error, ClientError::Transport { attempts: 2, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("timed out"), "{error}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(600), "took {elapsed:?}");
    assert_eq!(stand_in.requests().len(), 2);
}

#[tokio::test]
async fn wrong_ca_fails_verification_without_retrying() {
    let stand_in = StandIn::always(Reply::xml(200, RUNNING_RULES)).await;
    let unrelated_ca = unrelated_ca_file();
    let mut config = config_for(&stand_in);
    config.tls = TlsVerification::CaBundle(unrelated_ca.path());
    let client = PanoramaClient::new(&config, ApiKey::new(KEY)).expect("client");
    let error = client
        .running_config(DG_XPATH)
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("--ca-file"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(stand_in.requests().is_empty(), "no request may pass TLS");
    assert_no_secret(&error);
}

#[tokio::test]
async fn system_roots_do_not_trust_the_test_ca() {
    let stand_in = StandIn::always(Reply::xml(200, RUNNING_RULES)).await;
    let mut config = config_for(&stand_in);
    config.tls = TlsVerification::SystemRoots;
    let error = PanoramaClient::new(&config, ApiKey::new(KEY))
        .expect("client")
        .running_config(DG_XPATH)
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
    assert!(stand_in.requests().is_empty());
}

#[tokio::test]
async fn insecure_skip_verify_connects_to_an_untrusted_server() {
    let stand_in = StandIn::always(Reply::xml(200, RUNNING_RULES)).await;
    let mut config = config_for(&stand_in);
    config.tls = TlsVerification::InsecureSkipVerify;
    let xml = PanoramaClient::new(&config, ApiKey::new(KEY))
        .expect("client")
        .running_config(DG_XPATH)
        .await
        .expect("insecure mode connects");
    assert!(xml.is_some());
}

#[tokio::test]
async fn keygen_posts_credentials_in_the_body_and_uses_the_new_key() {
    let stand_in = StandIn::start(|request, _| {
        if request.form("type").as_deref() == Some("keygen") {
            Reply::xml(200, KEYGEN_OK)
        } else {
            Reply::xml(200, RUNNING_RULES)
        }
    })
    .await;
    let client = PanoramaClient::with_keygen(
        &config_for(&stand_in),
        &Secret::new("zonewall-sync"),
        &Secret::new(PASSWORD),
    )
    .await
    .expect("keygen");
    assert_eq!(client.api_key().expose(), "LUFRPT1generatedKEY==");
    let debug = format!("{client:?}");
    assert!(!debug.contains("generatedKEY"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");

    client.running_config(DG_XPATH).await.expect("read");
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 2);
    let keygen = &requests[0];
    assert_eq!(keygen.method, "POST");
    assert_eq!(keygen.target, "/api/");
    assert_eq!(keygen.header("x-pan-key"), None);
    assert_eq!(
        keygen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(keygen.form("user").as_deref(), Some("zonewall-sync"));
    assert_eq!(keygen.form("password").as_deref(), Some(PASSWORD));
    assert_eq!(
        requests[1].header("x-pan-key"),
        Some("LUFRPT1generatedKEY==")
    );
    assert!(!requests[1].body.contains("generatedKEY"));
}

#[tokio::test]
async fn keygen_with_bad_credentials_is_rejected_without_leaking_them() {
    let stand_in = StandIn::always(Reply::xml(403, KEYGEN_REJECTED)).await;
    let error = PanoramaClient::with_keygen(
        &config_for(&stand_in),
        &Secret::new("zonewall-sync"),
        &Secret::new(PASSWORD),
    )
    .await
    .expect_err("rejected");
    assert!(
        matches!(error, ClientError::KeygenRejected { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("Invalid Credentials."),
        "{error}"
    );
    assert_eq!(stand_in.requests().len(), 1);
    assert_no_secret(&error);
}

#[tokio::test]
async fn config_audit_versions_newest_first() {
    let stand_in = StandIn::always(Reply::xml(200, AUDIT_INFO)).await;
    let versions = client_for(&stand_in)
        .config_audit_versions()
        .await
        .expect("audit");
    let ids: Vec<u64> = versions.iter().map(|entry| entry.id).collect();
    assert_eq!(ids, [120, 119, 118]);
    assert_eq!(versions[0].admin.as_deref(), Some("bob"));
    assert_eq!(versions[0].time.as_deref(), Some("2024/03/06 08:00:21"));
    assert_eq!(versions[0].description.as_deref(), Some("ticket SEC-42"));
    let request = &stand_in.requests()[0];
    assert_eq!(request.form("type").as_deref(), Some("op"));
    assert_eq!(request.form("cmd").as_deref(), Some(CONFIG_AUDIT_INFO_CMD));
    assert_key_only_in_header(request);
}

#[tokio::test]
async fn commit_jobs_newest_first() {
    let stand_in = StandIn::always(Reply::xml(200, JOBS_ALL)).await;
    let commits = client_for(&stand_in).commit_jobs().await.expect("jobs");
    assert_eq!(
        commits,
        vec![
            CommitEntry {
                id: 311,
                admin: Some("bob".into()),
                time: Some("2024/03/06 08:00:21".into()),
                description: Some("ticket SEC-42".into()),
            },
            CommitEntry {
                id: 305,
                admin: Some("alice".into()),
                time: Some("2024/03/05 10:12:44".into()),
                description: None,
            },
        ]
    );
    assert_eq!(
        stand_in.requests()[0].form("cmd").as_deref(),
        Some(SHOW_JOBS_ALL_CMD)
    );
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let stand_in = StandIn::always(Reply::xml(200, RUNNING_RULES)).await;
    let mut config = config_for(&stand_in);
    config.max_response_bytes = 100;
    let error = PanoramaClient::new(&config, ApiKey::new(KEY))
        .expect("client")
        .running_config(DG_XPATH)
        .await
        .expect_err("too large");
    assert!(
        matches!(
            error,
            ClientError::ResponseTooLarge {
                limit_bytes: 100,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(stand_in.requests().len(), 1);
}

#[test]
fn configuration_is_validated_before_any_request() {
    let tls = TlsVerification::SystemRoots;
    let endpoint = ClientConfig::new("https://panorama.example.com", tls.clone())
        .validate()
        .expect("valid");
    assert_eq!(endpoint.as_str(), "https://panorama.example.com/api/");
    let endpoint = ClientConfig::new("https://panorama.example.com:8443/pano/api/", tls.clone())
        .validate()
        .expect("valid");
    assert_eq!(
        endpoint.as_str(),
        "https://panorama.example.com:8443/pano/api/"
    );

    let plain = ClientConfig::new("http://panorama.example.com", tls.clone())
        .validate()
        .expect_err("http");
    assert!(plain.to_string().contains("only https"), "{plain}");

    let with_credentials = ClientConfig::new(
        format!("https://admin:{PASSWORD}@panorama.example.com"),
        tls.clone(),
    )
    .validate()
    .expect_err("userinfo");
    let text = format!("{with_credentials} {with_credentials:?}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.contains("--api-key-file"), "{text}");

    let with_query = ClientConfig::new(
        format!("https://panorama.example.com/?key={KEY}"),
        tls.clone(),
    )
    .validate()
    .expect_err("query");
    assert!(!format!("{with_query} {with_query:?}").contains(KEY));

    let mut no_attempts = ClientConfig::new("https://panorama.example.com", tls);
    no_attempts.retry.max_attempts = 0;
    assert!(no_attempts.validate().is_err());
}

#[test]
fn missing_ca_file_names_the_file_and_the_flag() {
    let config = ClientConfig::new(
        "https://panorama.example.com",
        TlsVerification::CaBundle("/nonexistent/zonewall/ca.pem".into()),
    );
    let error = PanoramaClient::new(&config, ApiKey::new(KEY)).expect_err("missing CA");
    let text = error.to_string();
    assert!(text.contains("/nonexistent/zonewall/ca.pem"), "{text}");
    assert!(text.contains("--ca-file"), "{text}");

    let not_pem = TempPem::new("this is not a certificate\n");
    let config = ClientConfig::new(
        "https://panorama.example.com",
        TlsVerification::CaBundle(not_pem.path()),
    );
    let error = PanoramaClient::new(&config, ApiKey::new(KEY)).expect_err("no certificate");
    assert!(matches!(error, ClientError::CaBundle { .. }), "{error:?}");
}

#[test]
fn client_debug_redacts_the_key() {
    let config = ClientConfig::new("https://panorama.example.com", TlsVerification::SystemRoots);
    let client = PanoramaClient::new(&config, ApiKey::new(KEY)).expect("client");
    let debug = format!("{client:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_a_cap() {
    let policy = RetryPolicy {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(1_000),
    };
    assert_eq!(
        backoff_delay(&policy, 1, None, 1.0),
        Duration::from_millis(100)
    );
    assert_eq!(
        backoff_delay(&policy, 2, None, 1.0),
        Duration::from_millis(200)
    );
    assert_eq!(
        backoff_delay(&policy, 3, None, 1.0),
        Duration::from_millis(400)
    );
    assert_eq!(
        backoff_delay(&policy, 5, None, 1.0),
        Duration::from_millis(1_000)
    );
    assert_eq!(
        backoff_delay(&policy, 40, None, 1.0),
        Duration::from_millis(1_000)
    );
    assert_eq!(
        backoff_delay(&policy, 2, None, 0.0),
        Duration::from_millis(100)
    );
    // Retry-After is honoured, but never beyond the cap.
    assert_eq!(
        backoff_delay(&policy, 1, Some(Duration::from_millis(700)), 0.0),
        Duration::from_millis(700)
    );
    assert_eq!(
        backoff_delay(&policy, 1, Some(Duration::from_secs(3600)), 0.0),
        Duration::from_millis(1_000)
    );
    let samples: Vec<f64> = (0..64).map(|_| jitter_fraction()).collect();
    assert!(samples.iter().all(|sample| (0.0..1.0).contains(sample)));
    assert!(
        samples
            .iter()
            .any(|sample| (sample - samples[0]).abs() > f64::EPSILON),
        "jitter must vary"
    );
}
