//! The HTTP endpoints: `/metrics` (OpenMetrics or Prometheus text), `/healthz` (the process
//! runs) and `/readyz` (the initial policy is live).
//!
//! hyper's HTTP/1 server directly, not a web framework: three fixed routes, GET and HEAD
//! only, and hyper is already in the build through reqwest and kube.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{ExpositionFormat, Metrics};

/// Where the agent serves its endpoints unless told otherwise; the deploy manifests' probes
/// and scrape annotations use this port.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9090";

/// `/readyz` body until [`Readiness::set_ready`] is called.
pub const NOT_READY_INITIAL: &str = "initial policy not live yet";

/// A scraper or a probe sends a few hundred bytes of headers; a client that has not sent
/// them in this time is dropped instead of holding a connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapers and probes keep one connection each; more than this is not a Prometheus.
const MAX_CONNECTIONS: usize = 64;
/// On shutdown, how long a response being written may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// The `--metrics-addr` flag, for the `agent` and `sync` subcommands to flatten into theirs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct MetricsArgs {
    /// Address for /metrics, /healthz and /readyz (HTTP).
    #[arg(
        long = "metrics-addr",
        env = "ZONEWALL_METRICS_ADDR",
        value_name = "ADDR",
        default_value = DEFAULT_METRICS_ADDR
    )]
    pub metrics_addr: SocketAddr,
}

/// Whether `/readyz` says 200. Starts not ready with [`NOT_READY_INITIAL`]; the agent calls
/// [`Readiness::set_ready`] once the initial policy is live. Clones share the state.
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<ReadinessState>,
}

#[derive(Debug)]
struct ReadinessState {
    ready: AtomicBool,
    reason: Mutex<String>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness {
            state: Arc::new(ReadinessState {
                ready: AtomicBool::new(false),
                reason: Mutex::new(NOT_READY_INITIAL.to_owned()),
            }),
        }
    }

    pub fn set_ready(&self) {
        self.state.ready.store(true, Ordering::Release);
    }

    /// `/readyz` answers 503 with `reason` (one short line) until the next `set_ready`.
    pub fn set_not_ready(&self, reason: &str) {
        let mut stored = self
            .state
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stored.clear();
        stored.push_str(reason.lines().next().unwrap_or_default());
        self.state.ready.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else why not.
    pub fn status(&self) -> Result<(), String> {
        if self.is_ready() {
            return Ok(());
        }
        Err(self
            .state
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot serve metrics on {addr}: {source}; {hint}")]
    Bind {
        addr: SocketAddr,
        hint: &'static str,
        source: io::Error,
    },
}

fn bind_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::AddrInUse => {
            "another process listens on that port (a second agent on this node?): stop it, or choose another address with --metrics-addr (ZONEWALL_METRICS_ADDR)"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need CAP_NET_BIND_SERVICE: choose a port above 1023 with --metrics-addr (ZONEWALL_METRICS_ADDR)"
        }
        io::ErrorKind::AddrNotAvailable => {
            "that address is not on this host: use 0.0.0.0:PORT, [::]:PORT or one of this node's addresses with --metrics-addr (ZONEWALL_METRICS_ADDR)"
        }
        _ => "choose another address with --metrics-addr (ZONEWALL_METRICS_ADDR)",
    }
}

/// A bound, not yet serving, endpoint server. Binding first lets the caller report a bad
/// address at start, before any other work, and learn the port when it asked for port 0.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

impl MetricsServer {
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        readiness: Readiness,
    ) -> Result<MetricsServer, ServerError> {
        let bind_error = |source: io::Error| ServerError::Bind {
            addr,
            hint: bind_hint(&source),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(MetricsServer {
            listener,
            local_addr,
            state: Arc::new(State { metrics, readiness }),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets responses in flight
    /// finish (up to a few seconds) and returns.
    pub async fn serve(self, shutdown: CancellationToken) {
        tracing::info!(address = %self.local_addr, "serving /metrics, /healthz and /readyz");
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if connections.len() >= MAX_CONNECTIONS {
                            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "metrics server: too many connections, closing this one");
                            continue;
                        }
                        connections.spawn(serve_connection(
                            stream,
                            Arc::clone(&self.state),
                            shutdown.clone(),
                        ));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "metrics server: accept failed");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(ACCEPT_RETRY) => {}
                        }
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self.listener);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "metrics server: connections still open after the shutdown grace period, closing them"
            );
            connections.shutdown().await;
        }
        tracing::info!(address = %self.local_addr, "metrics server stopped");
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>, shutdown: CancellationToken) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = respond(
            &state,
            request.method(),
            request.uri().path(),
            request
                .headers()
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok()),
        );
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(16 * 1024);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "metrics server: connection ended with an error");
    }
}

/// The whole routing and rendering, without I/O.
fn respond(
    state: &State,
    method: &Method,
    path: &str,
    accept: Option<&str>,
) -> Response<Full<Bytes>> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; this server serves /metrics, /healthz and /readyz\n".to_owned(),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".to_owned(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let format = ExpositionFormat::negotiate(accept);
            match state.metrics.encode(format) {
                Ok(body) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    response
                }
                Err(error) => {
                    tracing::error!(%error, "metrics server: encoding failed");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))
                }
            }
        }
        "/healthz" => plain(StatusCode::OK, "ok\n".to_owned()),
        _ => match state.readiness.status() {
            Ok(()) => plain(StatusCode::OK, "ready\n".to_owned()),
            Err(reason) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn state() -> State {
        State {
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::new(),
        }
    }

    fn body(response: Response<Full<Bytes>>) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = runtime
            .block_on(response.into_body().collect())
            .expect("infallible body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
    }

    #[test]
    fn readyz_follows_the_readiness_flag() {
        let state = state();
        let response = respond(&state, &Method::GET, "/readyz", None);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(response), format!("not ready: {NOT_READY_INITIAL}\n"));

        state.readiness.set_ready();
        let response = respond(&state, &Method::GET, "/readyz", None);
        assert_eq!(response.status(), StatusCode::OK);

        state
            .readiness
            .set_not_ready("API server unreachable\nsecond line dropped");
        let response = respond(&state, &Method::GET, "/readyz", None);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(response), "not ready: API server unreachable\n");
    }

    #[test]
    fn metrics_content_type_follows_accept() {
        let state = state();
        let openmetrics = respond(
            &state,
            &Method::GET,
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        );
        assert_eq!(
            openmetrics.headers()[header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(body(openmetrics).ends_with("# EOF\n"));

        let text = respond(&state, &Method::GET, "/metrics", Some("*/*"));
        assert_eq!(
            text.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = body(text);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("zonewall_build_info{version=\""), "{text}");
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        let state = state();
        assert_eq!(
            respond(&state, &Method::GET, "/", None).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&state, &Method::GET, "/metrics/", None).status(),
            StatusCode::NOT_FOUND
        );
        let post = respond(&state, &Method::POST, "/metrics", None);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(
            respond(&state, &Method::HEAD, "/healthz", None).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn bind_hints_name_the_flag() {
        for kind in [
            io::ErrorKind::AddrInUse,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::AddrNotAvailable,
            io::ErrorKind::Other,
        ] {
            assert!(bind_hint(&io::Error::from(kind)).contains("--metrics-addr"));
        }
    }

    #[test]
    fn metrics_addr_flag_defaults_and_parses() {
        use clap::Parser;

        #[derive(Debug, Parser)]
        struct Command {
            #[command(flatten)]
            metrics: MetricsArgs,
        }

        let parsed = Command::try_parse_from(["zonewall"]).expect("defaults");
        assert_eq!(
            parsed.metrics.metrics_addr,
            DEFAULT_METRICS_ADDR.parse::<SocketAddr>().expect("default")
        );
        let parsed = Command::try_parse_from(["zonewall", "--metrics-addr", "127.0.0.1:9100"])
            .expect("explicit address");
        assert_eq!(parsed.metrics.metrics_addr.port(), 9100);
        let error = Command::try_parse_from(["zonewall", "--metrics-addr", "localhost"])
            .expect_err("a host name is not a socket address");
        assert!(error.to_string().contains("--metrics-addr"), "{error}");
    }
}
