//! The sync controller against kube's `Client` over a mock service (tower-test) that plays
//! a small API server: paginated lists, streaming watches, server-side apply, deletes with
//! preconditions, the status subresource and Events.

mod sync_common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use serde_json::{Value, json};
use sync_common::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zonewall::policy::resource::Mode;
use zonewall::sync::kube::KubeTarget;
use zonewall::sync::{Controller, Options, Source, Target};

type ResponseBody = BoxBody<Bytes, Infallible>;

const COLLECTION: &str = "/apis/zonewall.io/v1alpha1/zonepolicies";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// One request as the API server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
}

#[derive(Default)]
struct ApiState {
    objects: BTreeMap<String, Value>,
    version: u64,
    uids: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    requests: Vec<Seen>,
    events: Vec<Value>,
    /// Continuation pages of lists are held while set (the first page is served).
    hold_pages: bool,
}

#[derive(Clone, Default)]
struct FakeApi {
    state: Arc<Mutex<ApiState>>,
}

fn full(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BoxBody::new(Full::new(Bytes::from(body.to_string()))))
        .expect("response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<ResponseBody> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": code.as_u16(), "reason": reason, "message": message}),
    )
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

impl FakeApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().expect("fake API state")
    }

    /// kube's Client talking to this fake.
    fn client(&self) -> kube::Client {
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
    fn user_write(&self, mut object: Value) {
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

    fn object(&self, name: &str) -> Option<Value> {
        self.lock().objects.get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    fn requests(&self) -> Vec<Seen> {
        self.lock().requests.clone()
    }

    fn writes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|seen| {
                seen.path.starts_with(COLLECTION)
                    && (seen.method == Method::PATCH || seen.method == Method::DELETE)
            })
            .count()
    }

    fn deletes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|seen| seen.method == Method::DELETE)
            .map(|seen| seen.path.rsplit('/').next().unwrap_or_default().to_string())
            .collect()
    }

    /// Ends every watch with 410 Gone, as an API server does when its history is compacted:
    /// the client must list again.
    fn expire_watches(&self) {
        let mut state = self.lock();
        let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "code": 410, "reason": "Expired", "message": "too old resource version"});
        Self::broadcast(&mut state, "ERROR", &gone);
        state.watchers.clear();
    }

    fn hold_pages(&self, hold: bool) {
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

fn controller(config: &Path, api: &FakeApi, audit: &AuditBuffer) -> Controller {
    Controller::new(
        Source::file(config.to_path_buf()),
        Target::Kubernetes(Box::new(KubeTarget::new(api.client()))),
        Options {
            device_group: None,
            mode: Mode::Enforce,
        },
        audit.log(),
    )
}

const INTERVAL: Duration = Duration::from_millis(200);

/// Polls `condition` until it holds or `limit` passes.
async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the controller loop; returns its cancellation token.
fn start(config: &Path, api: &FakeApi, audit: &AuditBuffer) -> CancellationToken {
    let cancel = CancellationToken::new();
    let sync = controller(config, api, audit);
    tokio::spawn(sync.run(INTERVAL, cancel.clone()));
    cancel
}

fn hand_written(name: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "zonewall.io/v1alpha1",
        "kind": "ZonePolicy",
        "metadata": {"name": name},
        "spec": {"tier": "firewall", "order": 1, "mode": "Enforce", "zone": zone,
                 "egress": [{"action": "Allow", "ruleType": "Universal", "peerZones": ["any"],
                             "source": {"any": true}, "destination": {"any": true},
                             "service": {"any": true}, "log": {"start": false, "end": false}}],
                 "ingress": []}
    })
}

const DESIRED_V1: [&str; 4] = ["any", "dmz", "trust", "untrust"];

fn zones_in(api: &FakeApi) -> Vec<String> {
    let mut zones: Vec<String> = api
        .lock()
        .objects
        .values()
        .map(|object| {
            object["spec"]["zone"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    zones.sort();
    zones
}

#[tokio::test]
async fn a_commit_is_applied_with_ownership_and_then_a_rule_deletion() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    std::fs::write(&config, config_v1()).expect("write config");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    let cancel = start(&config, &api, &audit);

    eventually(Duration::from_secs(10), "four objects with status", || {
        zones_in(&api) == DESIRED_V1
            && api
                .lock()
                .objects
                .values()
                .all(|object| object.get("status").is_some())
    })
    .await;
    let applies: Vec<Seen> = api
        .requests()
        .into_iter()
        .filter(|seen| seen.method == Method::PATCH)
        .collect();
    assert!(applies.iter().all(|seen| {
        query_param(&seen.query, "fieldManager").as_deref() == Some("zonewall-sync")
            && query_param(&seen.query, "force").as_deref() == Some("true")
    }));
    assert!(applies.iter().any(|seen| seen.path.ends_with("/status")));
    for name in api.names() {
        let object = api.object(&name).expect("object");
        assert_eq!(
            object["metadata"]["labels"]["zonewall.io/owner"],
            "zonewall-sync"
        );
        assert_eq!(object["metadata"]["labels"]["zonewall.io/tier"], "firewall");
        assert!(
            object["metadata"]["annotations"]["zonewall.io/spec-hash"]
                .as_str()
                .is_some_and(|hash| hash.starts_with("sha256:")),
            "{object}"
        );
        assert!(
            object["status"]["egressRules"].is_number(),
            "status applied: {object}"
        );
    }
    eventually(Duration::from_secs(5), "four create events", || {
        api.lock().events.len() >= 4
    })
    .await;
    assert_eq!(audit.of("create").len(), 4);

    // Steady state: the same desired state produces no write, interval after interval.
    let writes = api.writes();
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(
        api.writes(),
        writes,
        "an unchanged tier must cause no write"
    );

    // The commit that removes zone dmz and its rule.
    std::fs::write(&config, config_v2()).expect("write config");
    eventually(Duration::from_secs(10), "dmz removed", || {
        zones_in(&api) == ["any", "trust", "untrust"]
    })
    .await;
    let deleted = audit.of("delete-stale");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["zone"], "dmz");
    assert!(deleted[0]["rules"].to_string().contains("allow-web"));
    let updated: Vec<Value> = audit.of("update");
    assert!(
        updated.iter().any(|record| record["zone"] == "untrust"
            && record["rules"].to_string().contains("allow-web")),
        "{updated:?}"
    );
    // Only objects whose rules changed are written: the `any` object holds only the default
    // rules, which this commit did not touch; every update names the rules it changes.
    assert!(
        updated.iter().all(|record| record["zone"] != "any"),
        "{updated:?}"
    );
    assert!(
        updated
            .iter()
            .all(|record| record["rules_total"].as_u64() > Some(0))
    );
    cancel.cancel();
}

#[tokio::test]
async fn hand_written_objects_are_removed_and_edits_restored() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    std::fs::write(&config, config_v1()).expect("write config");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    // Present before the controller starts, and at runtime.
    api.user_write(hand_written("backdoor-early", "dmz"));
    let cancel = start(&config, &api, &audit);
    eventually(
        Duration::from_secs(10),
        "desired objects, backdoor gone",
        || zones_in(&api) == DESIRED_V1,
    )
    .await;

    api.user_write(hand_written("backdoor", "trust"));
    eventually(
        Duration::from_secs(2),
        "backdoor removed within an interval",
        || api.object("backdoor").is_none(),
    )
    .await;
    let removed = audit.of("delete-foreign");
    let names: Vec<&str> = removed
        .iter()
        .filter_map(|r| r["object"].as_str())
        .collect();
    assert_eq!(names, ["backdoor-early", "backdoor"]);
    assert!(removed.iter().all(|r| r["remediation"] == true));
    assert!(
        removed[1]["changed_by"]
            .to_string()
            .contains("kubectl-edit")
    );

    // Someone edits the controller's object: widened to allow everything, hash left as is.
    let trust = api
        .names()
        .into_iter()
        .find(|name| name.starts_with("firewall-trust"))
        .expect("trust object");
    let original = api.object(&trust).expect("object");
    let mut edited = original.clone();
    edited["spec"]["egress"] = hand_written("x", "trust")["spec"]["egress"].clone();
    api.user_write(edited);
    eventually(Duration::from_secs(2), "edit restored", || {
        api.object(&trust)
            .is_some_and(|object| object["spec"] == original["spec"])
    })
    .await;
    let restored = audit.of("restore");
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["object"], trust.as_str());
    assert_ne!(restored[0]["previous_hash"], restored[0]["new_hash"]);
    eventually(Duration::from_secs(2), "warning events", || {
        api.lock()
            .events
            .iter()
            .any(|event| event["reason"] == "DriftRestored" && event["type"] == "Warning")
    })
    .await;
    assert!(
        api.lock()
            .events
            .iter()
            .any(|event| event["reason"] == "DriftRemoved"
                && event["regarding"]["name"] == "backdoor")
    );
    cancel.cancel();
}

#[tokio::test]
async fn nothing_is_done_from_a_partial_list_and_a_watch_reset_deletes_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    std::fs::write(&config, config_v1()).expect("write config");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    api.user_write(hand_written("a-hand-written", "dmz"));
    api.user_write(hand_written("b-hand-written", "dmz"));

    // The initial list stops after its first page: the controller must wait.
    api.hold_pages(true);
    let cancel = start(&config, &api, &audit);
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(api.writes(), 0, "no write before the list is complete");
    api.hold_pages(false);
    eventually(Duration::from_secs(10), "desired state", || {
        zones_in(&api) == DESIRED_V1
    })
    .await;
    let names_before = api.names();
    let deletes_before = api.deletes();
    tokio::time::sleep(INTERVAL * 2).await;
    let writes_before = api.writes();
    assert_eq!(deletes_before, ["a-hand-written", "b-hand-written"]);

    // The watch expires; the re-list delivers one object per page and stalls after the
    // first. Several intervals pass with a partial view.
    api.hold_pages(true);
    api.expire_watches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.deletes(),
        deletes_before,
        "a partial re-list must delete nothing"
    );
    assert_eq!(
        api.writes(),
        writes_before,
        "nothing is done from a partial view"
    );
    api.hold_pages(false);
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(api.names(), names_before);
    assert_eq!(
        api.deletes(),
        deletes_before,
        "a watch reset deleted an object"
    );
    let relists = api
        .requests()
        .iter()
        .filter(|seen| {
            seen.method == Method::GET
                && query_param(&seen.query, "continue").is_none()
                && query_param(&seen.query, "watch").is_none()
        })
        .count();
    assert!(
        relists >= 2,
        "the controller listed again after the reset ({relists})"
    );
    cancel.cancel();
}

#[tokio::test]
async fn an_unreachable_or_invalid_source_keeps_the_cluster_as_it_is() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    api.user_write(hand_written("firewall-left-by-a-previous-run", "dmz"));

    // Source unreadable from the start: nothing is known to be desired, so nothing changes.
    let cancel = start(&config, &api, &audit);
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(api.writes(), 0);

    std::fs::write(&config, config_v1()).expect("write config");
    eventually(Duration::from_secs(10), "applied", || {
        zones_in(&api) == DESIRED_V1
    })
    .await;
    let names = api.names();
    let writes = api.writes();

    // Gone again, then truncated: the cluster keeps the last good policy.
    std::fs::remove_file(&config).expect("remove config");
    tokio::time::sleep(INTERVAL * 4).await;
    let v2 = config_v2();
    std::fs::write(&config, &v2[..v2.len() / 3]).expect("write truncated config");
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(api.names(), names);
    assert_eq!(api.writes(), writes);
    cancel.cancel();
}
