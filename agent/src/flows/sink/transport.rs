//! The five transports behind one small interface the sink task drives: `connect` (or open)
//! and `write_batch`. Each write either hands every record of the batch to the operating
//! system or fails as a whole.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

use super::config::{Endpoint, Rotation};
use super::framing::encode_frame;
use super::tls::TlsClient;

/// How long one connection attempt (TCP connect plus TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to listen after a TLS handshake before the first write. With TLS 1.3 the client
/// finishes its handshake before the server has judged the client certificate; a server that
/// refuses it (or requires one we do not have) answers with an alert. Waiting briefly turns
/// that into a failed connection instead of records written into a doomed session.
const TLS_SETTLE_TIME: Duration = Duration::from_millis(300);

pub(crate) enum Transport {
    Udp(Endpoint),
    Tcp(Endpoint),
    Tls(Endpoint, TlsClient),
    File(PathBuf, Rotation),
    Stdout,
}

pub(crate) enum Connection {
    Udp(UdpSocket),
    Tcp(StreamConnection<TcpStream>),
    Tls(Box<StreamConnection<tokio_rustls::client::TlsStream<TcpStream>>>),
    File(FileConnection),
    Stdout(tokio::io::Stdout),
}

impl Transport {
    pub(crate) fn describe(&self) -> String {
        match self {
            Transport::Udp(endpoint) => format!("udp://{endpoint}"),
            Transport::Tcp(endpoint) => format!("tcp://{endpoint}"),
            Transport::Tls(endpoint, _) => format!("tls://{endpoint}"),
            Transport::File(path, _) => format!("file://{}", path.display()),
            Transport::Stdout => "stdout".to_owned(),
        }
    }

    pub(crate) async fn connect(&self) -> io::Result<Connection> {
        match self {
            Transport::Udp(endpoint) => {
                let peer = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                    .await?
                    .next()
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "host has no address")
                    })?;
                let local: std::net::SocketAddr = if peer.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(peer).await?;
                Ok(Connection::Udp(socket))
            }
            Transport::Tcp(endpoint) => {
                let stream = connect_tcp(endpoint).await?;
                Ok(Connection::Tcp(StreamConnection::new(stream)))
            }
            Transport::Tls(endpoint, client) => {
                let tcp = connect_tcp(endpoint).await?;
                let handshake = client.connector.connect(client.server_name.clone(), tcp);
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                let stream = settle_tls(stream).await?;
                Ok(Connection::Tls(Box::new(StreamConnection::new(stream))))
            }
            Transport::File(path, rotation) => Ok(Connection::File(
                FileConnection::open(path.clone(), *rotation).await?,
            )),
            Transport::Stdout => Ok(Connection::Stdout(tokio::io::stdout())),
        }
    }
}

async fn settle_tls(
    mut stream: tokio_rustls::client::TlsStream<TcpStream>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut probe = [0u8; 256];
    match tokio::time::timeout(TLS_SETTLE_TIME, stream.read(&mut probe)).await {
        // Silence (or only session tickets, which rustls consumes): the server accepted us.
        Err(_) | Ok(Ok(1..)) => Ok(stream),
        Ok(Ok(0)) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the TLS server closed the session right after the handshake; does it require a client certificate (cert=, key=)?",
        )),
        Ok(Err(error)) => Err(io::Error::new(
            error.kind(),
            format!(
                "the TLS server refused the session after the handshake (client certificate missing or not trusted?): {error}"
            ),
        )),
    }
}

async fn connect_tcp(endpoint: &Endpoint) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Connection {
    /// Whether the peer has closed or reset the connection. A syslog receiver never sends
    /// application data, so end-of-stream or an error here means a write would vanish into
    /// a dead socket; checking first lets the task reconnect before losing records.
    pub(crate) fn closed_by_peer(&mut self) -> bool {
        match self {
            Connection::Tcp(stream) => stream.closed_by_peer(),
            Connection::Tls(stream) => stream.closed_by_peer(),
            Connection::Udp(_) | Connection::File(_) | Connection::Stdout(_) => false,
        }
    }

    pub(crate) async fn write_batch(&mut self, records: &[String]) -> io::Result<()> {
        match self {
            Connection::Udp(socket) => {
                // RFC 5426: exactly one message per datagram, no framing, no newline.
                for record in records {
                    socket.send(record.as_bytes()).await?;
                }
                Ok(())
            }
            Connection::Tcp(stream) => stream.write_framed(records).await,
            Connection::Tls(stream) => stream.write_framed(records).await,
            Connection::File(file) => file.write_lines(records).await,
            Connection::Stdout(stdout) => {
                let mut buffer = Vec::new();
                for record in records {
                    buffer.extend_from_slice(record.as_bytes());
                    buffer.push(b'\n');
                }
                stdout.write_all(&buffer).await?;
                stdout.flush().await
            }
        }
    }

    /// Orderly end: TLS close_notify, TCP FIN, file fsync.
    pub(crate) async fn close(self) -> io::Result<()> {
        match self {
            Connection::Udp(_) => Ok(()),
            Connection::Tcp(mut stream) => stream.stream.shutdown().await,
            Connection::Tls(mut stream) => stream.stream.shutdown().await,
            Connection::File(file) => file.close().await,
            Connection::Stdout(mut stdout) => stdout.flush().await,
        }
    }
}

pub(crate) struct StreamConnection<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StreamConnection<S> {
    fn new(stream: S) -> Self {
        StreamConnection {
            stream,
            buffer: Vec::new(),
        }
    }

    fn closed_by_peer(&mut self) -> bool {
        // One non-blocking read attempt. Pending means nothing arrived: the connection is
        // open as far as we can tell. For TLS this goes through rustls, so session tickets
        // are processed normally and close_notify reads as end-of-stream.
        let mut context = Context::from_waker(Waker::noop());
        let mut scratch = [0u8; 512];
        loop {
            let mut read_buffer = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(&mut context, &mut read_buffer) {
                Poll::Pending => return false,
                Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(())) if read_buffer.filled().is_empty() => return true,
                // Unexpected bytes from the receiver: ignore them and look again.
                Poll::Ready(Ok(())) => continue,
            }
        }
    }

    async fn write_framed(&mut self, records: &[String]) -> io::Result<()> {
        self.buffer.clear();
        for record in records {
            encode_frame(record, &mut self.buffer);
        }
        self.stream.write_all(&self.buffer).await?;
        self.stream.flush().await
    }
}

/// Append-only log file with size-based rotation. Records are newline-terminated (JSON lines
/// convention; records never contain a newline because the formatters escape it).
///
/// Durability: every batch is written and flushed to the OS before it counts as delivered;
/// `fsync` happens when a file is rotated out and when the sink closes, not per batch, so a
/// machine crash (not an agent crash) can lose the last few seconds of the active file.
pub(crate) struct FileConnection {
    path: PathBuf,
    rotation: Rotation,
    file: tokio::fs::File,
    size: u64,
}

impl FileConnection {
    async fn open(path: PathBuf, rotation: Rotation) -> io::Result<Self> {
        let file = open_append(&path).await?;
        let size = file.metadata().await?.len();
        Ok(FileConnection {
            path,
            rotation,
            file,
            size,
        })
    }

    async fn write_lines(&mut self, records: &[String]) -> io::Result<()> {
        let mut buffer = Vec::new();
        for record in records {
            let line_length = record.len() as u64 + 1;
            if needs_rotation(
                self.size + buffer.len() as u64,
                line_length,
                self.rotation.max_bytes,
            ) {
                self.file.write_all(&buffer).await?;
                buffer.clear();
                self.rotate().await?;
            }
            buffer.extend_from_slice(record.as_bytes());
            buffer.push(b'\n');
        }
        self.file.write_all(&buffer).await?;
        // tokio's File finishes writes in the background; flush waits for them and reports
        // their errors, so "delivered" really means "in the OS".
        self.file.flush().await?;
        self.size += buffer.len() as u64;
        Ok(())
    }

    async fn rotate(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        for (from, to) in rotation_renames(&self.path, self.rotation.keep) {
            match tokio::fs::rename(&from, &to).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        if self.rotation.keep == 0 {
            self.file.set_len(0).await?;
        }
        self.file = open_append(&self.path).await?;
        self.size = self.file.metadata().await?.len();
        tracing::debug!(path = %self.path.display(), "rotated flow log");
        Ok(())
    }

    async fn close(mut self) -> io::Result<()> {
        self.file.flush().await?;
        self.file.sync_all().await
    }
}

async fn open_append(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Whether a line of `line_length` bytes must go to a fresh file. A line longer than the
/// limit still goes into an empty file rather than being lost.
pub(crate) fn needs_rotation(current_size: u64, line_length: u64, max_bytes: u64) -> bool {
    max_bytes > 0 && current_size > 0 && current_size + line_length > max_bytes
}

/// The renames that rotate `path`, oldest first so nothing is overwritten before it moved:
/// `NAME.(keep-1) -> NAME.keep`, ..., `NAME -> NAME.1`. The file at `NAME.keep` is replaced
/// (rename over it), which is how the oldest one is discarded.
pub(crate) fn rotation_renames(path: &Path, keep: usize) -> Vec<(PathBuf, PathBuf)> {
    let numbered = |index: usize| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    };
    let mut renames = Vec::new();
    if keep == 0 {
        return renames;
    }
    for index in (1..keep).rev() {
        renames.push((numbered(index), numbered(index + 1)));
    }
    renames.push((path.to_path_buf(), numbered(1)));
    renames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_renames_oldest_first() {
        let renames = rotation_renames(Path::new("/l/flows.jsonl"), 3);
        let as_text: Vec<(String, String)> = renames
            .iter()
            .map(|(a, b)| (a.display().to_string(), b.display().to_string()))
            .collect();
        assert_eq!(
            as_text,
            [
                ("/l/flows.jsonl.2".to_owned(), "/l/flows.jsonl.3".to_owned()),
                ("/l/flows.jsonl.1".to_owned(), "/l/flows.jsonl.2".to_owned()),
                ("/l/flows.jsonl".to_owned(), "/l/flows.jsonl.1".to_owned()),
            ]
        );
        assert_eq!(rotation_renames(Path::new("/x"), 1).len(), 1);
        assert!(rotation_renames(Path::new("/x"), 0).is_empty());
    }

    #[test]
    fn rotation_threshold() {
        assert!(!needs_rotation(0, 10, 100), "fresh file");
        assert!(!needs_rotation(90, 10, 100), "exactly full");
        assert!(needs_rotation(91, 10, 100));
        assert!(
            !needs_rotation(0, 500, 100),
            "oversized line goes into an empty file"
        );
        assert!(needs_rotation(1, 500, 100));
        assert!(!needs_rotation(10_000, 10, 0), "0 disables rotation");
    }
}
