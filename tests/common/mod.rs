//! Shared test harness: the real coordinator and real worker agents,
//! in-process on 127.0.0.1:0, and a raw Connect client for speaking the
//! protocol by hand (to misbehave on purpose).

#![allow(dead_code)]

pub mod backend;
pub mod etcd;
pub mod faults;
pub mod http1;
pub mod impair;
pub mod netns;
pub mod tls;

use edgeplane::coordinator::{Coordinator, CoordinatorConfig};
use edgeplane::proto::{
    admin_client::AdminClient, coordinator_message::Msg as In, worker_control_client::WorkerControlClient,
    worker_message::Msg as Out, CoordinatorMessage, EventKind, Hello, WatchWorkersRequest, Welcome, WorkerEvent,
    WorkerMessage, WorkerStatus,
};
use edgeplane::registry::Registry;
use edgeplane::worker::{self, AgentHandle, WorkerConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

/// Generous bound on any wait in a test: reaching it means the behaviour is broken.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Timeouts scaled down from minutes to fractions of a second.
pub fn fast_config() -> CoordinatorConfig {
    CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        keepalive_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(400),
        worker_timeout: Duration::from_millis(1200),
        handshake_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_millis(500),
        ..CoordinatorConfig::default()
    }
}

/// `fast_config()` with the catalog `toml`, written into `dir`.
pub fn catalog_config(dir: &std::path::Path, toml: &str) -> CoordinatorConfig {
    let catalog = dir.join("catalog.toml");
    std::fs::write(&catalog, toml).expect("write the test catalog");
    CoordinatorConfig {
        catalog: Some(catalog),
        ..fast_config()
    }
}

/// The worker [`notes_routed_to`] starts.
pub const NOTES_WORKER: &str = "notes-worker";

/// A coordinator (with `config`) and one worker declaring `notes` (-> the
/// catalog's `notes-coa`) at `backend`, reached over `data_path` (`direct`
/// or `tunnel`); returns once the service is ready. The second value keeps
/// the worker running until dropped.
pub async fn notes_routed_to(
    backend: &str,
    config: CoordinatorConfig,
    data_path: &str,
) -> (TestCoordinator, impl Sized) {
    let c = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = c.worker_config(NOTES_WORKER, dir.path());
    cfg.services = vec![("notes".into(), backend.to_string())];
    cfg.data_path = data_path.parse().expect("`direct` or `tunnel`");
    cfg.probe_interval = Duration::from_millis(50);
    let (agent, stop) = start_agent(cfg).await;
    let mut watch = c.watch().await;
    watch
        .until_service(None, Some("notes-coa"), edgeplane::proto::ServiceState::Ready)
        .await;
    (c, (agent, stop.drop_guard(), dir))
}

/// A TCP port free right now, below the ephemeral range: the crate's one helper
/// ([`edgeplane::bench::child::free_port`], which the benches use too),
/// panicking instead of returning an error.
pub fn free_port() -> u16 {
    edgeplane::bench::child::free_port().expect("a free port")
}

pub struct TestCoordinator {
    pub addr: SocketAddr,
    pub url: String,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), edgeplane::coordinator::CoordinatorError>>,
}

impl TestCoordinator {
    pub async fn start(config: CoordinatorConfig) -> Self {
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
        Self::start_on(listener, config)
    }

    pub fn start_on(listener: tokio::net::TcpListener, config: CoordinatorConfig) -> Self {
        init_logs();
        let addr = listener.local_addr().unwrap();
        let c = Coordinator::new(config).expect("valid config");
        let registry = c.registry();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(c.serve(listener, shutdown.clone()));
        TestCoordinator {
            addr,
            url: format!("http://{addr}"),
            registry,
            shutdown,
            task,
        }
    }

    /// Graceful shutdown; returns once the port is free again.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("coordinator stops");
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    pub async fn watch(&self) -> Watcher {
        Watcher::over(self.channel().await).await
    }
}

impl Watcher {
    /// A watch over `channel`, its snapshot read before it returns.
    pub async fn over(channel: Channel) -> Watcher {
        let mut admin = AdminClient::new(channel);
        let stream = admin
            .watch_workers(WatchWorkersRequest {})
            .await
            .expect("watch")
            .into_inner();
        // Read the snapshot now, so the watch is live when this returns,
        // and replay it to the test before any later change.
        let mut w = Watcher {
            stream,
            pending: Default::default(),
        };
        loop {
            let e = within(w.stream.message())
                .await
                .expect("watch stream ok")
                .expect("watch stream open");
            let synced = e.kind == EventKind::Synced as i32;
            w.pending.push_back(e);
            if synced {
                return w;
            }
        }
    }
}

impl TestCoordinator {
    pub fn worker_config(&self, name: &str, state_dir: &std::path::Path) -> WorkerConfig {
        let mut c = WorkerConfig::new(self.url.clone());
        c.name = Some(name.to_string());
        c.state_dir = Some(state_dir.join(name));
        c.reconnect_min = Duration::from_millis(20);
        c.reconnect_max = Duration::from_millis(200);
        c.connect_timeout = Duration::from_secs(2);
        c
    }

    /// Starts an agent and waits for its Welcome.
    pub async fn worker(&self, name: &str, state_dir: &std::path::Path) -> (AgentHandle, CancellationToken) {
        start_agent(self.worker_config(name, state_dir)).await
    }

    pub async fn raw(&self) -> RawWorker {
        RawWorker::open(self.channel().await, None).await
    }
}

pub async fn start_agent(config: WorkerConfig) -> (AgentHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let h = worker::spawn(config, stop.clone()).expect("agent starts");
    within(h.wait_for(|s| s.connected)).await;
    (h, stop)
}

/// Logs to the test's output when `RUST_LOG` is set (shown for failing tests).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Fails the test if `f` takes longer than [`PATIENCE`].
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("timed out waiting for an event")
}

/// A WatchWorkers stream.
pub struct Watcher {
    pub stream: Streaming<WorkerEvent>,
    pending: std::collections::VecDeque<WorkerEvent>,
}

impl Watcher {
    /// An event already sent, if there is one (waiting at most 50 ms for
    /// one in flight): for checking what a watch saw, after the fact.
    pub async fn try_next(&mut self) -> Option<WorkerEvent> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        match tokio::time::timeout(Duration::from_millis(50), self.stream.message()).await {
            Ok(Ok(Some(e))) => Some(e),
            _ => None,
        }
    }

    pub async fn next(&mut self) -> WorkerEvent {
        if let Some(e) = self.pending.pop_front() {
            return e;
        }
        within(self.stream.message())
            .await
            .expect("watch stream ok")
            .expect("watch stream open")
    }

    /// Skips events until one matches.
    pub async fn until(&mut self, mut f: impl FnMut(&WorkerEvent) -> bool) -> WorkerEvent {
        loop {
            let e = self.next().await;
            if f(&e) {
                return e;
            }
        }
    }

    /// Skips events until a worker (`worker`, by name, or any) reports a
    /// service (`service`, by name, or any) in `state`.
    pub async fn until_service(
        &mut self,
        worker: Option<&str>,
        service: Option<&str>,
        state: edgeplane::proto::ServiceState,
    ) -> WorkerEvent {
        self.until(|e| {
            e.worker.as_ref().is_some_and(|w| {
                worker.is_none_or(|n| w.name == n)
                    && w.services
                        .iter()
                        .any(|s| service.is_none_or(|n| s.name == n) && s.state == state as i32)
            })
        })
        .await
    }

    /// Follows the stream until exactly `n` workers are known and all are in
    /// `status`; returns their ids. Panics on more than `n` (a duplicate).
    pub async fn until_fleet(&mut self, n: usize, status: WorkerStatus) -> std::collections::BTreeSet<String> {
        let mut fleet = std::collections::BTreeMap::new();
        loop {
            let e = self.next().await;
            if let Some(w) = e.worker {
                if e.kind == EventKind::Removed as i32 {
                    fleet.remove(&w.worker_id);
                } else {
                    fleet.insert(w.worker_id, w.status);
                }
            }
            assert!(fleet.len() <= n, "more workers than expected: {fleet:?}");
            if fleet.len() == n && fleet.values().all(|s| *s == status as i32) {
                return fleet.into_keys().collect();
            }
        }
    }

    /// Waits for worker `id` to be reported in `status`.
    pub async fn until_status(&mut self, id: &str, status: WorkerStatus) -> WorkerEvent {
        self.until(|e| {
            e.worker
                .as_ref()
                .is_some_and(|w| w.worker_id == id && w.status == status as i32)
        })
        .await
    }
}

/// A hand-driven Connect stream.
pub struct RawWorker {
    pub tx: mpsc::Sender<WorkerMessage>,
    pub rx: Streaming<CoordinatorMessage>,
}

pub fn hello(name: &str, instance_id: &str, resume_token: &str) -> Hello {
    Hello {
        name: name.into(),
        instance_id: instance_id.into(),
        resume_token: resume_token.into(),
        ..Default::default()
    }
}

impl RawWorker {
    /// Opens the stream (sending nothing yet); `token` is the join token.
    pub async fn open(channel: Channel, token: Option<&str>) -> RawWorker {
        Self::try_open(channel, token).await.expect("Connect accepted")
    }

    pub async fn try_open(channel: Channel, token: Option<&str>) -> Result<RawWorker, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let mut client = WorkerControlClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
        let rx = client.connect(req).await?.into_inner();
        Ok(RawWorker { tx, rx })
    }

    pub async fn send(&self, m: Out) {
        self.tx.send(WorkerMessage { msg: Some(m) }).await.expect("stream open");
    }

    /// The next message, or the status the stream ended with.
    pub async fn recv(&mut self) -> Result<Option<In>, tonic::Status> {
        within(self.rx.message()).await.map(|m| m.and_then(|m| m.msg))
    }

    /// Sends Hello and expects Welcome (then the Assignment that follows it).
    pub async fn hello(&mut self, h: Hello) -> Welcome {
        self.send(Out::Hello(h)).await;
        let welcome = match self.recv().await {
            Ok(Some(In::Welcome(w))) => w,
            other => panic!("expected Welcome, got {other:?}"),
        };
        // The coordinator follows every Welcome with the worker's Assignment.
        match self.recv().await {
            Ok(Some(In::Assignment(_))) => welcome,
            other => panic!("expected an Assignment after Welcome, got {other:?}"),
        }
    }

    /// Reads until the stream ends; returns the final status (Ok for a clean end).
    pub async fn end(&mut self) -> Result<(), tonic::Status> {
        loop {
            match self.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(s) => return Err(s),
            }
        }
    }
}
