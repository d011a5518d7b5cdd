//! A small Kubernetes API server behind kube's `Client`, over a tower-test mock service:
//! paginated lists (one object per page, so acting on a partial list is caught), streaming
//! watches, server-side apply, deletes with preconditions, the status subresource and Events
//! for ZonePolicies; lists and watches of other collections (Pods, Namespaces) written only
//! by the test; and an outage switch.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub type ResponseBody = BoxBody<Bytes, Infallible>;

pub const COLLECTION: &str = "/apis/zonewall.io/v1alpha1/zonepolicies";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// One request as the API server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
}

#[derive(Default)]
pub struct ApiState {
    pub objects: BTreeMap<String, Value>,
    pub version: u64,
    pub uids: u64,
    pub watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    pub requests: Vec<Seen>,
    pub events: Vec<Value>,
    /// Continuation pages of lists are held while set (the first page is served).
    pub hold_pages: bool,
    /// Other collections by path (`/api/v1/pods`): objects by name, and their watchers.
    pub others: BTreeMap<String, Collection>,
    /// Every request fails with 503 while set.
    pub unavailable: bool,
}

#[derive(Default)]
pub struct Collection {
    pub objects: BTreeMap<String, Value>,
    pub watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    pub state: Arc<Mutex<ApiState>>,
}

pub fn full(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BoxBody::new(Full::new(Bytes::from(body.to_string()))))
        .expect("response")
}

pub fn status(code: StatusCode, reason: &str, message: &str) -> Response<ResponseBody> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": code.as_u16(), "reason": reason, "message": message}),
    )
}

pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

impl FakeApi {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().expect("fake API state")
    }

    /// kube's Client talking to this fake.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<ResponseBody>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let api = api.clone();
                tokio::spawn(async move { send.send_response(api.handle(request).await) });
            }
        });
        kube::Client::new(service, "default")
    }

    fn broadcast(state: &mut ApiState, kind: &str, object: &Value) {
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        let bytes = Bytes::from(line);
        state
            .watchers
            .retain(|watcher| watcher.send(bytes.clone()).is_ok());
    }

    fn bump(state: &mut ApiState, object: &mut Value) {
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
    }

    /// Stores an object as if written by someone else (kubectl), and tells the watchers.
    pub fn user_write(&self, mut object: Value) {
        let mut state = self.lock();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let existed = state.objects.get(&name).cloned();
        object["metadata"]["uid"] = match &existed {
            Some(old) => old["metadata"]["uid"].clone(),
            None => {
                state.uids += 1;
                json!(format!("uid-{}", state.uids))
            }
        };
        object["metadata"]["managedFields"] =
            json!([{"manager": "kubectl-edit", "operation": "Update"}]);
        Self::bump(&mut state, &mut object);
        state.objects.insert(name, object.clone());
        let kind = if existed.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        Self::broadcast(&mut state, kind, &object);
    }

    pub fn object(&self, name: &str) -> Option<Value> {
        self.lock().objects.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.lock().requests.clone()
    }

    pub fn writes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|seen| {
                seen.path.starts_with(COLLECTION)
                    && (seen.method == Method::PATCH || seen.method == Method::DELETE)
            })
            .count()
    }

    pub fn deletes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|seen| seen.method == Method::DELETE)
            .map(|seen| seen.path.rsplit('/').next().unwrap_or_default().to_string())
            .collect()
    }

    /// Ends every watch with 410 Gone, as an API server does when its history is compacted:
    /// the client must list again.
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "code": 410, "reason": "Expired", "message": "too old resource version"});
        Self::broadcast(&mut state, "ERROR", &gone);
        state.watchers.clear();
        let line = Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": gone})));
        for collection in state.others.values_mut() {
            for watcher in collection.watchers.drain(..) {
                let _ = watcher.send(line.clone());
            }
        }
    }

    /// Makes every request fail (503) while `down`; ends the open watches when going down.
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
        if down {
            let mut state = self.lock();
            state.watchers.clear();
            for collection in state.others.values_mut() {
                collection.watchers.clear();
            }
        }
    }

    /// Stores an object of another collection (`/api/v1/pods`) and tells its watchers.
    pub fn put(&self, collection: &str, mut object: Value) {
        let mut state = self.lock();
        Self::bump(&mut state, &mut object);
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let entry = state.others.entry(collection.to_string()).or_default();
        let kind = if entry.objects.insert(name, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
        entry.watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    /// Removes an object of another collection and tells its watchers.
    pub fn remove(&self, collection: &str, name: &str) {
        let mut state = self.lock();
        let version = state.version + 1;
        state.version = version;
        let entry = state.others.entry(collection.to_string()).or_default();
        if let Some(mut object) = entry.objects.remove(name) {
            object["metadata"]["resourceVersion"] = json!(version.to_string());
            let line = Bytes::from(format!(
                "{}\n",
                json!({"type": "DELETED", "object": object})
            ));
            entry.watchers.retain(|w| w.send(line.clone()).is_ok());
        }
    }

    /// Lists and watches of the other collections, one object per page like ZonePolicies.
    async fn other(&self, collection: &str, query: &str) -> Response<ResponseBody> {
        if query_param(query, "watch").as_deref() == Some("true") {
            let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
            self.lock()
                .others
                .entry(collection.to_string())
                .or_default()
                .watchers
                .push(sender);
            return Self::stream(receiver);
        }
        let start: usize = query_param(query, "continue")
            .and_then(|token| token.parse().ok())
            .unwrap_or(0);
        if start > 0 {
            while self.lock().hold_pages {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut state = self.lock();
        let version = state.version.to_string();
        let entry = state.others.entry(collection.to_string()).or_default();
        let items: Vec<Value> = entry.objects.values().cloned().collect();
        let page: Vec<Value> = items.iter().skip(start).take(1).cloned().collect();
        let mut metadata = json!({"resourceVersion": version});
        if start + 1 < items.len() {
            metadata["continue"] = json!((start + 1).to_string());
        }
        full(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": page}),
        )
    }

    fn stream(receiver: mpsc::UnboundedReceiver<Bytes>) -> Response<ResponseBody> {
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let bytes = receiver.recv().await?;
            Some((Ok::<_, Infallible>(http_body::Frame::data(bytes)), receiver))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BoxBody::new(StreamBody::new(stream)))
            .expect("response")
    }

    pub fn hold_pages(&self, hold: bool) {
        self.lock().hold_pages = hold;
    }

    async fn handle(&self, request: Request<kube::client::Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        self.lock().requests.push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
        });
        if self.lock().unavailable {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the API server is down",
            );
        }
        if parts.method == Method::GET
            && ["/api/v1/pods", "/api/v1/namespaces", "/api/v1/nodes"].contains(&path.as_str())
        {
            return self.other(&path, &query).await;
        }
        if path.starts_with(EVENTS) {
            let mut event = body;
            self.lock().events.push(event.clone());
            event["metadata"]["resourceVersion"] = json!("1");
            return full(StatusCode::CREATED, &event);
        }
        let Some(rest) = path.strip_prefix(COLLECTION) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "unknown path");
        };
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        match (parts.method.clone(), segments.as_slice()) {
            (Method::GET, []) if query_param(&query, "watch").as_deref() == Some("true") => {
                self.watch()
            }
            (Method::GET, []) => self.list(&query).await,
            (Method::PATCH, [name]) => self.apply(name, &query, body, false),
            (Method::PATCH, [name, "status"]) => self.apply(name, &query, body, true),
            (Method::DELETE, [name]) => self.delete(name, &body),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "unsupported",
            ),
        }
    }

    /// One object per page, so a list arrives in pieces and a controller that acted on a
    /// partial list would be caught.
    async fn list(&self, query: &str) -> Response<ResponseBody> {
        let start: usize = query_param(query, "continue")
            .and_then(|token| token.parse().ok())
            .unwrap_or(0);
        if start > 0 {
            while self.lock().hold_pages {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let state = self.lock();
        let items: Vec<Value> = state.objects.values().cloned().collect();
        let page: Vec<Value> = items.iter().skip(start).take(1).cloned().collect();
        let mut metadata = json!({"resourceVersion": state.version.to_string()});
        if start + 1 < items.len() {
            metadata["continue"] = json!((start + 1).to_string());
        }
        full(
            StatusCode::OK,
            &json!({"apiVersion": "zonewall.io/v1alpha1", "kind": "ZonePolicyList",
                    "metadata": metadata, "items": page}),
        )
    }

    fn watch(&self) -> Response<ResponseBody> {
        let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
        self.lock().watchers.push(sender);
        Self::stream(receiver)
    }

    fn apply(
        &self,
        name: &str,
        query: &str,
        body: Value,
        status_only: bool,
    ) -> Response<ResponseBody> {
        let manager = query_param(query, "fieldManager").unwrap_or_default();
        if query_param(query, "force").as_deref() != Some("true") {
            return status(StatusCode::CONFLICT, "Conflict", "apply without force");
        }
        let mut state = self.lock();
        let existed = state.objects.get(name).cloned();
        let mut object = match (&existed, status_only) {
            (None, true) => return status(StatusCode::NOT_FOUND, "NotFound", name),
            (Some(old), true) => {
                let mut object = old.clone();
                object["status"] = body["status"].clone();
                object
            }
            (old, false) => {
                let mut object = body.clone();
                object.as_object_mut().expect("object").remove("status");
                if let Some(old) = old {
                    object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                    if let Some(status) = old.get("status") {
                        object["status"] = status.clone();
                    }
                } else {
                    state.uids += 1;
                    object["metadata"]["uid"] = json!(format!("uid-{}", state.uids));
                }
                object
            }
        };
        object["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply"}]);
        Self::bump(&mut state, &mut object);
        state.objects.insert(name.to_string(), object.clone());
        let kind = if existed.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        Self::broadcast(&mut state, kind, &object);
        full(
            if existed.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            &object,
        )
    }

    fn delete(&self, name: &str, body: &Value) -> Response<ResponseBody> {
        let mut state = self.lock();
        let Some(mut object) = state.objects.get(name).cloned() else {
            return status(StatusCode::NOT_FOUND, "NotFound", name);
        };
        let preconditions = &body["preconditions"];
        for (field, value) in [
            ("uid", &object["metadata"]["uid"]),
            ("resourceVersion", &object["metadata"]["resourceVersion"]),
        ] {
            if let Some(expected) = preconditions.get(field)
                && expected != value
            {
                return status(StatusCode::CONFLICT, "Conflict", "precondition failed");
            }
        }
        state.objects.remove(name);
        Self::bump(&mut state, &mut object);
        Self::broadcast(&mut state, "DELETED", &object);
        full(StatusCode::OK, &object)
    }
}
