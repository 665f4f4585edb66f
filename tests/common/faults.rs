//! What the fault tests run and watch: coordinators and workers as real
//! processes (so they can be stopped with `SIGSTOP`, killed, and put in a
//! network namespace), a recorder of everything a WatchWorkers client saw,
//! and a client sending requests through the proxy all along and counting
//! what came back. The tests judge by what these clients observed.

use super::netns::Netns;
use super::PATIENCE;
use edgeplane::bench::child::ChildServer;
use edgeplane::proto::{
    admin_client::AdminClient, EventKind, ServiceState, WatchWorkersRequest, WorkerEvent, WorkerStatus,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const EXE: &str = env!("CARGO_BIN_EXE_edgeplane");

/// A coordinator process listening on every address (workers in
/// namespaces reach it through their veth; the test through loopback).
pub struct Coordinator {
    pub port: u16,
    pub child: ChildServer,
    /// Where the test reaches it: loopback, or its namespace's address.
    pub addr: std::net::Ipv4Addr,
}

impl Coordinator {
    pub async fn start(dir: &Path, name: &'static str, args: &[&str]) -> Coordinator {
        Self::spawn(None, dir, name, args).await
    }

    /// A coordinator inside `ns`, reached at its address there.
    pub async fn start_in(ns: &Netns, dir: &Path, name: &'static str, args: &[&str]) -> Coordinator {
        Self::spawn(Some(ns), dir, name, args).await
    }

    async fn spawn(ns: Option<&Netns>, dir: &Path, name: &'static str, args: &[&str]) -> Coordinator {
        let port = super::free_port();
        let mut all: Vec<String> = vec!["coordinator".into(), "--listen".into(), format!("0.0.0.0:{port}")];
        // `{port}` in an argument: the port it listens on (for --advertise-peer).
        all.extend(args.iter().map(|s| s.replace("{port}", &port.to_string())));
        let log = dir.join(format!("{name}.log"));
        let (program, argv, addr) = match ns {
            Some(ns) => {
                let (p, a) = ns.argv(EXE, &all);
                (p, a, ns.addr)
            }
            None => (EXE.to_string(), all, std::net::Ipv4Addr::LOCALHOST),
        };
        let child = ChildServer::spawn(name, program.as_ref(), argv, Vec::new(), &log).expect("start the coordinator");
        let mut c = Coordinator { port, child, addr };
        c.wait_serving().await;
        c
    }

    /// The URL the test itself uses (and, for one in a namespace, every host).
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.addr, self.port)
    }

    /// The URL a worker in `ns` dials.
    pub fn url_from(&self, ns: &Netns) -> String {
        format!("http://{}:{}", ns.host, self.port)
    }

    pub async fn wait_serving(&mut self) -> Duration {
        let health = format!("{}/health", self.url());
        self.child
            .wait_ready(PATIENCE, || {
                let health = health.clone();
                async move { reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) }
            })
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(self.child.log()).unwrap_or_default();
                panic!("the coordinator does not serve: {e}\n{log}")
            })
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(&self.child, sig)
    }
}

pub fn signal(child: &ChildServer, sig: nix::sys::signal::Signal) {
    let pid = child.pid().expect("the process runs") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal the process");
}

/// A worker process inside `ns`, dialing `coordinator`, with `args` last.
pub fn worker_in(ns: &Netns, dir: &Path, name: &'static str, coordinator: &str, args: &[&str]) -> ChildServer {
    let all = worker_args(dir, name, coordinator, args);
    let (program, argv) = ns.argv(EXE, &all);
    let log = dir.join(format!("{name}.log"));
    ChildServer::spawn(name, program.as_ref(), argv, Vec::new(), &log).expect("start the worker")
}

/// A worker process in the test's own namespace.
pub fn worker(dir: &Path, name: &'static str, coordinator: &str, args: &[&str]) -> ChildServer {
    let all = worker_args(dir, name, coordinator, args);
    let log = dir.join(format!("{name}.log"));
    ChildServer::spawn(name, EXE.as_ref(), all, Vec::new(), &log).expect("start the worker")
}

fn worker_args(dir: &Path, name: &str, coordinator: &str, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = [
        "worker",
        "--coordinator",
        coordinator,
        "--name",
        name,
        "--state-dir",
        dir.join(name).to_str().unwrap(),
        "--reconnect-min",
        "100ms",
        "--reconnect-max",
        "1s",
        "--connect-timeout",
        "2s",
        "--probe-interval",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

/// A catalog of the one service the fault tests' workers declare
/// (`notes-coa`, alias `notes`), so that nothing else is placed on them.
pub fn notes_catalog(dir: &Path) -> String {
    let path = dir.join("catalog.toml");
    std::fs::write(
        &path,
        r#"
[[service]]
name = "notes-coa"
aliases = ["notes"]
requires = "cpu"
port = 8100
readiness = { http = "/health" }
"#,
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// `edgeplane sample-service` inside `ns` on 127.0.0.1:`port`, reporting `name`.
pub fn sample_in(ns: &Netns, dir: &Path, name: &'static str, port: u16) -> ChildServer {
    let args: Vec<String> = [
        "sample-service",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (program, argv) = ns.argv(EXE, &args);
    let log = dir.join(format!("{name}-{}.log", ns.name));
    ChildServer::spawn(name, program.as_ref(), argv, Vec::new(), &log).expect("start the sample service")
}

/// A series' value in a Prometheus text exposition (`name` with its labels,
/// as written), or 0 when it is absent.
pub async fn metric(url: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Resolves when `child` has exited, with the end of its log: for a test
/// to fail at once, saying why, rather than time out.
pub async fn exited(child: &mut ChildServer) -> String {
    while !child.has_exited() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(child.log()).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// One event as a watcher saw it, and when.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub kind: EventKind,
    pub worker_id: String,
    pub name: String,
    pub status: WorkerStatus,
    pub sessions: u64,
    pub reason: String,
    /// The worker's services and their states.
    pub services: Vec<(String, ServiceState)>,
    /// In a cluster: the coordinator holding its session.
    pub coordinator: String,
}

impl Seen {
    fn of(e: WorkerEvent) -> Option<Seen> {
        let w = e.worker?;
        Some(Seen {
            at: Instant::now(),
            kind: EventKind::try_from(e.kind).unwrap_or(EventKind::Unspecified),
            worker_id: w.worker_id,
            name: w.name,
            status: if e.kind == EventKind::Removed as i32 {
                WorkerStatus::Removed
            } else {
                WorkerStatus::try_from(w.status).unwrap_or(WorkerStatus::Unspecified)
            },
            sessions: w.sessions,
            reason: e.reason,
            coordinator: w.coordinator.clone(),
            services: w
                .services
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        ServiceState::try_from(s.state).unwrap_or(ServiceState::Unspecified),
                    )
                })
                .collect(),
        })
    }

    /// Whether the worker reports `service` ready.
    pub fn serves(&self, service: &str) -> bool {
        self.services
            .iter()
            .any(|(n, s)| n == service && *s == ServiceState::Ready)
    }
}

/// Everything one WatchWorkers stream delivered, with the time each
/// arrived; re-subscribes when the stream breaks (the coordinator was
/// killed), noting the gap.
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
}

impl Recorder {
    pub async fn start(url: String) -> Recorder {
        let r = Recorder {
            seen: Default::default(),
            changed: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
        };
        let synced = Arc::new(Notify::new());
        let (seen, changed, stop, first) = (r.seen.clone(), r.changed.clone(), r.stop.clone(), synced.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let channel = tonic::transport::Endpoint::from_shared(url.clone())
                    .unwrap()
                    .connect()
                    .await;
                if let Ok(mut admin) = channel.map(AdminClient::new) {
                    if let Ok(s) = admin.watch_workers(WatchWorkersRequest {}).await {
                        let mut s = s.into_inner();
                        loop {
                            let m = tokio::select! {
                                m = s.message() => m,
                                () = stop.cancelled() => return,
                            };
                            match m {
                                Ok(Some(e)) => {
                                    if e.kind == EventKind::Synced as i32 {
                                        first.notify_one();
                                    }
                                    if let Some(e) = Seen::of(e) {
                                        seen.lock().unwrap().push(e);
                                        changed.notify_waiters();
                                    }
                                }
                                _ => break,
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        tokio::time::timeout(PATIENCE, synced.notified())
            .await
            .expect("the watch syncs");
        r
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Events of worker `name` that arrived at or after `since`.
    pub fn of(&self, name: &str, since: Instant) -> Vec<Seen> {
        self.all()
            .into_iter()
            .filter(|s| s.name == name && s.at >= since)
            .collect()
    }

    /// Waits (at most `limit`) until an event after `since` matches; returns it.
    pub async fn until(&self, since: Instant, limit: Duration, f: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = self.all().into_iter().find(|s| s.at >= since && f(s)) {
                return s;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no matching event within {limit:?}; seen since: {:#?}",
                    self.all().into_iter().filter(|s| s.at >= since).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits until worker `name` is reported in `status`.
    pub async fn until_status(&self, name: &str, status: WorkerStatus, since: Instant, limit: Duration) -> Seen {
        self.until(since, limit, |s| s.name == name && s.status == status).await
    }

    /// The last status reported for worker `name`.
    pub fn last(&self, name: &str) -> Option<Seen> {
        self.all().into_iter().rev().find(|s| s.name == name)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Requests through the proxy, one after another on `clients` connections,
/// until stopped: how many were sent, how many failed, and when failures
/// happened.
pub struct Load {
    pub sent: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
    pub failures: Arc<Mutex<Vec<(Instant, String)>>>,
    answered: Arc<Notify>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, clients: usize, timeout: Duration) -> Load {
        let stop = CancellationToken::new();
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Notify::new());
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop, sent, failed, failures, answered) = (
                    url.clone(),
                    stop.clone(),
                    sent.clone(),
                    failed.clone(),
                    failures.clone(),
                    answered.clone(),
                );
                tokio::spawn(async move {
                    let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
                    while !stop.is_cancelled() {
                        let r = client.get(&url).send().await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        answered.notify_waiters();
                        let why = match r {
                            Ok(r) if r.status() == 200 => continue,
                            Ok(r) => format!("status {}", r.status()),
                            Err(e) => format!("{e}"),
                        };
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.lock().unwrap().push((Instant::now(), why));
                        // A refused request comes back at once: do not spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            sent,
            failed,
            failures,
            answered,
            stop,
            tasks,
        }
    }

    /// Waits until `n` more requests than now have been sent.
    pub async fn until_sent(&self, more: usize) {
        let target = self.sent.load(Ordering::Relaxed) + more;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if self.sent.load(Ordering::Relaxed) >= target {
                return;
            }
            let r = tokio::time::timeout_at(deadline, answered).await;
            assert!(r.is_ok(), "the load stalled");
        }
    }

    pub async fn stop(self) -> (usize, usize, Vec<(Instant, String)>) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}
