//! A Panorama XML API stand-in for tests: a minimal HTTP/1.1 responder over TLS on
//! 127.0.0.1 (random port), with a CA and server certificate generated for each test.
//! It records every request so tests can check where the key travelled.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub method: String,
    /// Path and query, exactly as sent.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// The decoded form parameter `name` of the body.
    pub fn form(&self, name: &str) -> Option<String> {
        self.body.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| percent_decode(value))
        })
    }
}

/// What the stand-in answers.
#[derive(Debug, Clone)]
pub(super) enum Reply {
    /// A complete answer with `Content-Type: application/xml`.
    Xml {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Announces `declared_len` bytes, sends `body` (shorter) and closes the connection.
    Truncated { body: String, declared_len: usize },
    /// Waits, then answers.
    Slow { delay: Duration, then: Box<Reply> },
}

impl Reply {
    pub fn xml(status: u16, body: &str) -> Self {
        Self::Xml {
            status,
            body: body.to_owned(),
            headers: Vec::new(),
        }
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

pub(super) struct StandIn {
    pub addr: SocketAddr,
    ca_file: TempPem,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A PEM file in the temp directory, removed on drop.
pub(super) struct TempPem(PathBuf);

impl TempPem {
    pub fn new(pem: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "zonewall-panos-test-{}-{}.pem",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, pem).expect("write PEM file");
        Self(path)
    }

    pub fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Drop for TempPem {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl StandIn {
    /// Starts a stand-in whose answers come from `handler(request, index)`, where `index`
    /// counts requests from 0.
    pub async fn start(
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let (ca_pem, acceptor) = test_pki("zonewall test Panorama CA");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    // A client that rejects the certificate ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Some(request) = read_request(&mut tls).await else {
                        return;
                    };
                    let index = counter.fetch_add(1, Ordering::SeqCst);
                    recorded.lock().expect("lock").push(request.clone());
                    let reply = handler(&request, index);
                    write_reply(&mut tls, reply).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            ca_file: TempPem::new(&ca_pem),
            requests,
            task,
        }
    }

    /// A stand-in that always gives the same answer.
    pub async fn always(reply: Reply) -> Self {
        Self::start(move |_, _| reply.clone()).await
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Path of a PEM file holding the stand-in's CA (removed when the stand-in is dropped).
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file.path()
    }
}

/// A CA file whose CA signed nothing the stand-in serves.
pub(super) fn unrelated_ca_file() -> TempPem {
    TempPem::new(&test_pki("unrelated test CA").0)
}

/// A fresh CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn test_pki(ca_name: &str) -> (String, TlsAcceptor) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    server_params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server_params
        .distinguished_name
        .push(DnType::CommonName, "panorama.test");
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");

    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server TLS config");
    (ca_cert.pem(), TlsAcceptor::from(Arc::new(config)))
}

async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > 64 * 1024 {
            return None;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(Recorded {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn write_reply<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, reply: Reply) {
    let mut reply = reply;
    while let Reply::Slow { delay, then } = reply {
        tokio::time::sleep(delay).await;
        reply = *then;
    }
    let bytes = match reply {
        Reply::Xml {
            status,
            body,
            headers,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/xml; charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason_phrase(status),
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            format!("{head}\r\n{body}")
        }
        Reply::Truncated { body, declared_len } => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {declared_len}\r\nConnection: close\r\n\r\n{body}"
        ),
        Reply::Slow { .. } => unreachable!("unwrapped above"),
    };
    let _ = stream.write_all(bytes.as_bytes()).await;
    let _ = stream.flush().await;
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
