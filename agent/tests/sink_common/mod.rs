//! Helpers shared by the sink integration tests: a throwaway PKI and sink set-up.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    reason = "test set-up: a failure here is a broken test environment, and the panic says where"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio_util::sync::CancellationToken;
use zonewall::flows::sink::{BackoffPolicy, RuntimeOptions, Sink, SinkConfig};

/// PEM files of a test CA, a server certificate for localhost/127.0.0.1/::1, a client
/// certificate, and an unrelated CA that signed nothing we use.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .subject_alt_names
        .push(SanType::IpAddress("::1".parse().unwrap()));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let authority = ca("zonewall test CA");
        let other = ca("some other CA");
        let (server_cert, server_key) =
            leaf(&authority, "siem.test", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(
            &authority,
            "zonewall-agent",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.pem", &authority.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            dir,
        }
    }
}

/// Short delays so reconnect tests run in seconds.
pub fn fast_options() -> RuntimeOptions {
    RuntimeOptions {
        backoff: BackoffPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        shutdown_deadline: Duration::from_secs(3),
        write_timeout: Duration::from_secs(5),
    }
}

pub fn spawn(url: &str, options: RuntimeOptions) -> (Sink, CancellationToken) {
    let config: SinkConfig = url.parse().unwrap_or_else(|error| panic!("{error}"));
    let token = CancellationToken::new();
    let sink = Sink::spawn(&config, options, token.clone()).unwrap();
    (sink, token)
}

/// A record shaped like a formatted CEF line, numbered so order can be checked.
pub fn record(sequence: usize) -> String {
    format!(
        "CEF:0|zonewall|zonewall|0.1|end|flow end|3|cs4=dmz cs5=trust cs1=allow-web src=10.0.0.{} dpt=443 seq={sequence} note=zoné\\=ok",
        sequence % 250
    )
}

pub fn sequence_of(line: &str) -> usize {
    line.split(' ')
        .find_map(|field| field.strip_prefix("seq="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {line:?}"))
}

pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}
