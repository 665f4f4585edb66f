//! `GET /api/admin/events`, read as a browser would: the fleet first (a
//! `snapshot`), then each change with an `id:`; a reconnect with
//! `Last-Event-ID` resumes with what it missed, and an id the coordinator
//! cannot serve from gets a fresh snapshot; behind the read token when one
//! is set; one stream per connection.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::BTreeSet;

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A response body read as server-sent events.
struct Events {
    body: std::pin::Pin<Box<dyn futures_core::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Events {
    fn new(r: reqwest::Response) -> Self {
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Events {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), within [`PATIENCE`].
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("event", v)) => event = v.trim_start().to_string(),
                        Some(("id", v)) => id = Some(v.trim_start().to_string()),
                        Some(("data", v)) => data.push_str(v.strip_prefix(' ').unwrap_or(v)),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data is JSON: {e}: {data}"));
                return Sse { event, id, data };
            }
            let chunk = within(self.body.next())
                .await
                .expect("the stream stays open")
                .expect("the stream reads");
            self.buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Reads a whole snapshot; returns its workers (name -> status) and its id.
    async fn snapshot(&mut self) -> (std::collections::BTreeMap<String, String>, String) {
        let mut workers = std::collections::BTreeMap::new();
        let first = self.next().await;
        assert_eq!(first.event, "snapshot", "the fleet comes first: {first:?}");
        assert_eq!(first.data["first"], true);
        let mut part = first;
        loop {
            for w in part.data["workers"].as_array().unwrap() {
                workers.insert(
                    w["worker"]["name"].as_str().unwrap().to_string(),
                    w["worker"]["status"].as_str().unwrap().to_string(),
                );
            }
            if part.data["last"] == true {
                let id = part.id.expect("the last part of a snapshot has an id");
                return (workers, id);
            }
            assert!(part.id.is_none(), "only the last part has an id");
            part = self.next().await;
            assert_eq!(part.event, "snapshot");
        }
    }

    /// Skips to the change that `f` matches.
    async fn until_change(&mut self, f: impl Fn(&Value) -> bool) -> Sse {
        loop {
            let e = self.next().await;
            assert_eq!(e.event, "change", "after the snapshot, only changes: {e:?}");
            assert!(e.id.is_some(), "every change has an id");
            if f(&e.data) {
                return e;
            }
        }
    }
}

async fn open(c: &TestCoordinator, last_event_id: Option<&str>) -> Events {
    let mut req = reqwest::Client::new().get(format!("{}/api/admin/events", c.url));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    Events::new(within(req.send()).await.expect("the stream opens"))
}

fn is(name: &'static str, status: &'static str) -> impl Fn(&Value) -> bool {
    move |d| d["worker"]["name"] == name && d["worker"]["status"] == status
}

fn seq(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

#[tokio::test]
async fn a_snapshot_then_every_change_then_resumption_from_last_event_id() {
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_alpha, _stop_alpha) = c.worker("alpha", dir.path()).await;

    let mut events = open(&c, None).await;
    let (fleet, snapshot_id) = events.snapshot().await;
    assert_eq!(fleet, [("alpha".to_string(), "healthy".to_string())].into());

    // A worker joins: one `added` change, the worker in the API's shape.
    let (_beta, stop_beta) = c.worker("beta", dir.path()).await;
    let added = events.until_change(is("beta", "healthy")).await;
    assert_eq!(added.data["kind"], "added");
    let added_id = added.id.clone().unwrap();
    assert!(
        seq(&added_id) > seq(&snapshot_id),
        "ids grow: {snapshot_id} then {added_id}"
    );
    let api: Value = reqwest::get(format!("{}/api/admin/workers/beta", c.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        keys(&added.data["worker"]),
        keys(&api),
        "the stream and /api/admin/workers show a worker alike"
    );
    assert_eq!(added.data["worker"]["worker_id"], api["worker_id"]);

    // The browser goes away; beta is killed meanwhile.
    drop(events);
    let mut watch = c.watch().await;
    stop_beta.cancel();
    let beta_id = api["worker_id"].as_str().unwrap();
    watch
        .until_status(beta_id, edgeplane::proto::WorkerStatus::Disconnected)
        .await;

    // Back with Last-Event-ID: no snapshot, just what it missed.
    let mut resumed = open(&c, Some(&added_id)).await;
    let first = resumed.next().await;
    assert_eq!(first.event, "change", "a resumed stream sends no snapshot: {first:?}");
    assert!(seq(first.id.as_deref().unwrap()) == seq(&added_id) + 1, "{first:?}");
    let gone = if is("beta", "disconnected")(&first.data) {
        first
    } else {
        resumed.until_change(is("beta", "disconnected")).await
    };
    assert!(
        !gone.data["reason"].as_str().unwrap().is_empty(),
        "a disconnected worker says why: {gone:?}"
    );

    // An id from another run (a restarted coordinator), or garbage: a fresh snapshot.
    for stale in ["00000000-1", "nonsense"] {
        let mut fresh = open(&c, Some(stale)).await;
        let (fleet, _) = fresh.snapshot().await;
        assert_eq!(fleet["alpha"], "healthy");
        assert_eq!(fleet["beta"], "disconnected");
    }
    c.stop().await;
}

#[tokio::test]
async fn the_stream_needs_the_read_token_when_one_is_set() {
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("admin-secret".into()),
        read_token: Some("read-secret".into()),
        ..fast_config()
    })
    .await;
    let url = format!("{}/api/admin/events", c.url);
    let client = reqwest::Client::new();
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    let r = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    for token in ["read-secret", "admin-secret"] {
        let r = within(client.get(&url).bearer_auth(token).send()).await.unwrap();
        let (fleet, _) = Events::new(r).snapshot().await;
        assert!(fleet.is_empty());
    }
    c.stop().await;
}

#[tokio::test]
async fn one_stream_per_connection() {
    let c = TestCoordinator::start(fast_config()).await;
    // HTTP/2 multiplexes requests on one connection: the second stream on
    // it is refused, and one on another connection is not.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = format!("{}/api/admin/events", c.url);
    let first = within(h2.get(&url).send()).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = within(h2.get(&url).send()).await.unwrap();
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"], "event_stream_open");
    let other = within(reqwest::Client::new().get(&url).send()).await.unwrap();
    assert_eq!(other.status(), 200);
    // Closing the first gives its connection's place back.
    drop(first);
    let mut again = None;
    for _ in 0..200 {
        let r = within(h2.get(&url).send()).await.unwrap();
        if r.status() == 200 {
            again = Some(r);
            break;
        }
        // The server learns of the reset stream asynchronously.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "a closed stream frees its connection's place");
    c.stop().await;
}

#[tokio::test]
async fn the_dashboard_page_is_served_without_a_token_under_a_strict_policy() {
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("admin-secret".into()),
        ..fast_config()
    })
    .await;
    for path in ["/", "/ui"] {
        let r = reqwest::get(format!("{}{path}", c.url)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("http"), "{csp}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains("data-auth=\"token\""),
            "the page knows to ask for a token"
        );
        assert!(!page.contains("admin-secret"));
    }
    c.stop().await;
    let open = TestCoordinator::start(fast_config()).await;
    let page = reqwest::get(format!("{}/", open.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-auth=\"none\""), "no token set: nothing to ask");
    open.stop().await;
}
