//! A stand-in for the Kubernetes API server on loopback, for measuring the agent's
//! Kubernetes mode as a process: it serves the collections the agent watches (lists paged by
//! `limit` and `continue`, as the API server pages them) and keeps every watch open, sending
//! the events it is given. Plain HTTP/1.1, one thread per connection; nothing else is
//! implemented (no selectors, no resource versions beyond a constant).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

/// One collection: every object's JSON, and the open watches' channels.
pub struct Collection {
    /// `{"apiVersion": ..., "kind": ...List}` of its list responses.
    api_version: &'static str,
    list_kind: &'static str,
    items: Vec<Vec<u8>>,
    watches: Mutex<Vec<Sender<Vec<u8>>>>,
}

impl Collection {
    pub fn new(api_version: &'static str, list_kind: &'static str, items: Vec<Vec<u8>>) -> Self {
        Collection {
            api_version,
            list_kind,
            items,
            watches: Mutex::new(Vec::new()),
        }
    }

    /// Bytes of all its objects' JSON.
    pub fn bytes(&self) -> usize {
        self.items.iter().map(Vec::len).sum()
    }

    /// Sends `{"type": kind, "object": object}` on every open watch; how many got it.
    pub fn send(&self, kind: &str, object: &[u8]) -> usize {
        let mut event = format!("{{\"type\":\"{kind}\",\"object\":").into_bytes();
        event.extend_from_slice(object);
        event.extend_from_slice(b"}\n");
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|watch| watch.send(event.clone()).is_ok());
        watches.len()
    }

    fn page(&self, limit: Option<usize>, from: usize) -> Vec<u8> {
        let end = limit.map_or(self.items.len(), |l| (from + l).min(self.items.len()));
        let next = if end < self.items.len() {
            format!(",\"continue\":\"{end}\"")
        } else {
            String::new()
        };
        let mut body = format!(
            "{{\"apiVersion\":\"{}\",\"kind\":\"{}\",\"metadata\":{{\"resourceVersion\":\"1\"{next}}},\"items\":[",
            self.api_version, self.list_kind
        )
        .into_bytes();
        for (k, item) in self.items[from.min(end)..end].iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(b"]}");
        body
    }
}

/// Collections by URL path (`/api/v1/pods`).
pub type Collections = BTreeMap<&'static str, Arc<Collection>>;

/// Serves `collections` on `listener` until the process ends (the threads are detached; a
/// benchmark run is one process).
pub fn serve(listener: TcpListener, collections: Collections) {
    let collections = Arc::new(collections);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let collections = collections.clone();
            std::thread::spawn(move || {
                let _ = connection(stream, &collections);
            });
        }
    });
}

/// Requests on one connection, until it closes or becomes a watch.
fn connection(stream: TcpStream, collections: &Collections) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        // Headers (a GET carries no body).
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
        let target = request.split_whitespace().nth(1).unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let params: BTreeMap<&str, &str> =
            query.split('&').filter_map(|p| p.split_once('=')).collect();
        let Some(collection) = collections.get(path) else {
            let body = format!(
                "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"reason\":\"NotFound\",\"code\":404,\"message\":\"{path} is not served by the stand-in\"}}"
            );
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        };
        if params
            .get("watch")
            .is_some_and(|w| *w == "true" || *w == "1")
        {
            let (send, receive) = channel();
            collection
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(send);
            return watch(out, &receive);
        }
        let limit = params.get("limit").and_then(|l| l.parse().ok());
        let from = params
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = collection.page(limit, from);
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        out.write_all(&body)?;
    }
}

/// A watch: a chunked response that stays open, one chunk per event.
fn watch(mut out: TcpStream, events: &Receiver<Vec<u8>>) -> anyhow::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    out.flush()?;
    loop {
        match events.recv_timeout(Duration::from_secs(1)) {
            Ok(event) => {
                write!(out, "{:x}\r\n", event.len())?;
                out.write_all(&event)?;
                out.write_all(b"\r\n")?;
                out.flush()?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// A kubeconfig for a client of the stand-in at `127.0.0.1:port` (plain HTTP, no user).
pub fn kubeconfig(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\ncurrent-context: standin\nusers:\n- name: standin\n  user: {{}}\n"
    )
}

/// Binds the stand-in's listener in network namespace `netns` (the socket stays there
/// whichever thread serves it); returns it and its port.
pub fn listen_in(netns: &str) -> anyhow::Result<(TcpListener, u16)> {
    super::traffic::in_netns(netns, || {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the API stand-in")?;
        let port = listener.local_addr()?.port();
        Ok((listener, port))
    })
}
