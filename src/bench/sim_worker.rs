//! One simulated worker: the real protocol (Hello, Welcome, Keepalive,
//! resume after a lost stream) on its own HTTP/2 connection, and nothing
//! else, so that ten thousand of them fit in one tokio runtime beside the
//! coordinator on a 2-core machine.
//!
//! Each keepalive carries its send time (microseconds since the bench
//! started) as its `seq`; the coordinator echoes it in the ack, so the
//! round trip is measured without any per-worker bookkeeping.

use super::connector::KillableConnector;
use super::histogram::Histogram;
use super::pki::WorkerCert;
use crate::proto::{
    coordinator_message::Msg as In, worker_control_client::WorkerControlClient, worker_message::Msg as Out,
    Capabilities, DeclaredService, Hello, Keepalive, ServiceState, ServiceStatus, WorkerMessage,
};
use crate::worker::Backoff;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// What the bench wants a worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep the stream open and send keepalives.
    Run,
    /// Keep the stream open but send nothing (a hung agent).
    Silent,
    /// Drop the connection abruptly and stay away until set back to `Run`.
    Dead,
    /// Drop the connection abruptly and end for good (a newcomer leaving).
    Leave,
}

/// State every simulated worker shares.
pub struct SimShared {
    /// The coordinators: each worker starts at its own (`SimWorker::at`)
    /// and moves to the next one after every lost session, as the agent
    /// does with a list of coordinators.
    pub targets: Vec<SocketAddr>,
    pub endpoint: Endpoint,
    pub keepalive: Duration,
    /// Reconnect backoff bounds (the agent's defaults unless told otherwise).
    pub reconnect: (Duration, Duration),
    /// The instant keepalive `seq`s count from.
    pub epoch: Instant,
    /// All keepalives paused (the idle window).
    pub paused: AtomicBool,
    /// Round trips are recorded only while this is set.
    pub recording: AtomicBool,
    pub rtt: Histogram,
    /// Dial to Welcome, first session of each worker.
    pub welcome: Histogram,
    /// Workers with an open, welcomed session.
    pub connected: watch::Sender<usize>,
    /// Sessions that ended while the bench wanted them open.
    pub unexpected_ends: AtomicU64,
    /// Dial or handshake attempts that failed (refused, timed out).
    pub failed_attempts: AtomicU64,
    /// Those failures by cause, for the report's notes.
    pub failures: Mutex<BTreeMap<String, u64>>,
    /// What the coordinator said in its last Welcome.
    pub welcome_heartbeat_timeout_ms: AtomicU64,
    pub welcome_keepalive_ms: AtomicU64,
    pub stop: CancellationToken,
    /// Distinguishes this run's instance ids from an earlier run's.
    pub run_tag: String,
}

/// The channel every simulated worker dials with, set as the agent's:
/// HTTP/2 pings every 20 s notice a dead path.
pub fn endpoint(url: &str) -> Result<Endpoint, super::error::BenchError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| super::error::BenchError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

impl SimShared {
    /// A fleet's shared state, every counter at zero and the epoch now.
    pub fn new(
        targets: Vec<SocketAddr>,
        endpoint: Endpoint,
        keepalive: Duration,
        reconnect: (Duration, Duration),
        stop: CancellationToken,
        run_tag: String,
    ) -> Self {
        SimShared {
            targets,
            endpoint,
            keepalive,
            reconnect,
            epoch: Instant::now(),
            paused: AtomicBool::new(false),
            recording: AtomicBool::new(false),
            rtt: Histogram::new(),
            welcome: Histogram::new(),
            connected: watch::channel(0).0,
            unexpected_ends: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            failures: Default::default(),
            welcome_heartbeat_timeout_ms: AtomicU64::new(0),
            welcome_keepalive_ms: AtomicU64::new(0),
            stop,
            run_tag,
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn failed(&self, cause: String) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        *self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cause)
            .or_insert(0) += 1;
    }

    /// Failed attempts by cause, most frequent first.
    pub fn failure_causes(&self) -> Vec<(String, u64)> {
        let m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u64)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }
}

/// One simulated worker as the orchestrator sees it.
pub struct SimWorker {
    pub index: usize,
    pub name: String,
    pub instance_id: String,
    pub source: IpAddr,
    pub mode: watch::Sender<Mode>,
    /// The id of the latest Welcome.
    pub worker_id: Mutex<Option<String>>,
    /// When the latest keepalive was sent (µs since the epoch).
    pub last_sent_us: AtomicU64,
    /// Welcomed sessions so far.
    pub sessions: AtomicU64,
    /// Welcomes that carried a different id than the one before.
    pub id_changes: AtomicU64,
    /// Which of `SimShared::targets` it dials now.
    pub at: std::sync::atomic::AtomicUsize,
    /// With mutual TLS (`bench fleet --tls`): its own certificate.
    pub tls: Option<WorkerCert>,
    /// Services its Hello declares (name, URL), routed without placement.
    pub services: Vec<DeclaredService>,
    /// The readiness it reports for them, sent after each Welcome and
    /// again whenever the bench changes it (`bench soak`'s flapping).
    pub readiness: watch::Sender<Vec<(String, ServiceState)>>,
}

impl SimWorker {
    pub fn new(index: usize, run_tag: &str, source: IpAddr) -> Self {
        SimWorker {
            index,
            name: format!("bench-{index}"),
            instance_id: format!("{run_tag}-{index}"),
            source,
            mode: watch::channel(Mode::Run).0,
            worker_id: Mutex::new(None),
            last_sent_us: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            id_changes: AtomicU64::new(0),
            at: std::sync::atomic::AtomicUsize::new(0),
            tls: None,
            services: Vec::new(),
            readiness: watch::channel(Vec::new()).0,
        }
    }

    /// The same, declaring `services` (name, URL), each reported `Ready`.
    pub fn with_services(mut self, services: &[(String, String)]) -> Self {
        self.services = services
            .iter()
            .map(|(name, url)| DeclaredService {
                name: name.clone(),
                url: url.clone(),
            })
            .collect();
        self.readiness
            .send_replace(services.iter().map(|(n, _)| (n.clone(), ServiceState::Ready)).collect());
        self
    }

    /// Reports `state` for its service `name` (sent at once when connected).
    pub fn set_readiness(&self, name: &str, state: ServiceState) {
        self.readiness.send_modify(|v| {
            for (n, s) in v.iter_mut() {
                if n == name {
                    *s = state;
                }
            }
        });
    }

    /// The same, dialing with its own client certificate: the coordinator
    /// gives it the id the certificate names.
    pub fn with_certificate(mut self, cert: WorkerCert) -> Self {
        self.tls = Some(cert);
        self
    }

    /// The id its Hello asks for: the one it has, else its certificate's,
    /// as the agent sends the id from its stored certificate.
    fn asks_for(&self) -> String {
        self.id()
            .or_else(|| self.tls.as_ref().map(|t| t.worker_id.clone()))
            .unwrap_or_default()
    }

    /// The same, starting at coordinator `at` of the list.
    pub fn starting_at(index: usize, run_tag: &str, source: IpAddr, at: usize) -> Self {
        let w = Self::new(index, run_tag, source);
        w.at.store(at, Ordering::Relaxed);
        w
    }

    pub fn id(&self) -> Option<String> {
        self.worker_id.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.send_replace(m);
    }
}

enum Ended {
    /// The bench killed it (Mode::Dead).
    Killed,
    /// The run is over.
    Stop,
    /// Lost or refused; `welcomed` says whether it got a Welcome.
    Lost { welcomed: bool },
}

/// The worker's whole life: sessions, and reconnects with the agent's
/// jittered backoff, until the run stops. `permit` is the ramp's slot,
/// released once the first attempt has finished.
pub async fn run(w: Arc<SimWorker>, shared: Arc<SimShared>, permit: OwnedSemaphorePermit) {
    let mut permit = Some(permit);
    let mut mode = w.mode.subscribe();
    let mut backoff = Backoff::new(shared.reconnect.0, shared.reconnect.1);
    let mut token = String::new();
    loop {
        if *mode.borrow_and_update() == Mode::Leave {
            return;
        }
        if *mode.borrow_and_update() == Mode::Dead {
            tokio::select! {
                r = mode.wait_for(|m| *m != Mode::Dead) => if r.is_err() { return },
                _ = shared.stop.cancelled() => return,
            }
            continue;
        }
        match session(&w, &shared, &mut mode, &mut token, &mut permit).await {
            Ended::Stop => return,
            Ended::Killed => {}
            Ended::Lost { welcomed } => {
                if welcomed {
                    backoff.reset();
                }
                // The next coordinator of the list, as the agent does.
                if shared.targets.len() > 1 {
                    w.at.fetch_add(1, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shared.stop.cancelled() => return,
                }
            }
        }
    }
}

/// A status as a short cause: its code, and its message cut to a line.
fn short(status: &tonic::Status) -> String {
    let m: String = status.message().chars().take(80).collect();
    format!("{:?} ({m})", status.code())
}

/// The innermost error: "Connection refused", not "transport error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn wrap(m: Out) -> WorkerMessage {
    WorkerMessage { msg: Some(m) }
}

async fn session(
    w: &SimWorker,
    shared: &SimShared,
    mode: &mut watch::Receiver<Mode>,
    token: &mut String,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Ended {
    let dial_start = Instant::now();
    let kill = CancellationToken::new();
    // Dropped on every return: the connection goes with it.
    let _kill_on_return = kill.clone().drop_guard();
    let target = shared.targets[w.at.load(Ordering::Relaxed) % shared.targets.len()];
    let connector = KillableConnector::new(target, Some(w.source), kill.clone());
    let lost = |permit: &mut Option<OwnedSemaphorePermit>, cause: String| {
        shared.failed(cause);
        permit.take();
        Ended::Lost { welcomed: false }
    };
    // Its own TLS when it has a certificate; over the same killable socket.
    let endpoint = w.tls.as_ref().map_or(&shared.endpoint, |t| &t.endpoint);
    let channel = tokio::select! {
        c = endpoint.connect_with_connector(connector) => match c {
            Ok(c) => c,
            Err(e) => return lost(permit, format!("dial: {}", root_cause(&e))),
        },
        _ = shared.stop.cancelled() => return Ended::Stop,
    };
    let mut client = WorkerControlClient::new(channel);
    let (tx, rx) = mpsc::channel::<WorkerMessage>(8);
    let hello = Hello {
        name: w.name.clone(),
        instance_id: w.instance_id.clone(),
        capabilities: Some(Capabilities {
            cpu_cores: 8,
            memory_bytes: 32 << 30,
            ..Default::default()
        }),
        resume_token: token.clone(),
        version: "bench".into(),
        previous_worker_id: w.asks_for(),
        services: w.services.clone(),
        ..Default::default()
    };
    let _ = tx.try_send(wrap(Out::Hello(hello)));
    let limit = Duration::from_secs(10);
    let opened = tokio::select! {
        r = tokio::time::timeout(limit, client.connect(ReceiverStream::new(rx))) => r,
        _ = shared.stop.cancelled() => return Ended::Stop,
    };
    let mut inbound = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return lost(permit, format!("Connect refused: {}", short(&status))),
        Err(_) => return lost(permit, "Connect: no answer in 10 s".into()),
    };
    let first = tokio::select! {
        r = tokio::time::timeout(limit, inbound.message()) => r,
        _ = shared.stop.cancelled() => return Ended::Stop,
    };
    let welcome = match first {
        Ok(Ok(Some(m))) => match m.msg {
            Some(In::Welcome(wl)) => wl,
            _ => return lost(permit, "first message was not Welcome".into()),
        },
        Ok(Ok(None)) => return lost(permit, "stream ended before Welcome".into()),
        Ok(Err(status)) => return lost(permit, format!("refused: {}", short(&status))),
        Err(_) => return lost(permit, "no Welcome in 10 s".into()),
    };
    if w.sessions.fetch_add(1, Ordering::Relaxed) == 0 {
        shared.welcome.record(dial_start.elapsed());
    }
    permit.take();
    {
        let mut id = w.worker_id.lock().unwrap_or_else(|e| e.into_inner());
        if id.as_deref().is_some_and(|old| old != welcome.worker_id) {
            w.id_changes.fetch_add(1, Ordering::Relaxed);
        }
        *id = Some(welcome.worker_id.clone());
    }
    *token = welcome.resume_token;
    shared
        .welcome_heartbeat_timeout_ms
        .store(welcome.heartbeat_timeout_ms, Ordering::Relaxed);
    shared
        .welcome_keepalive_ms
        .store(welcome.keepalive_interval_ms, Ordering::Relaxed);
    shared.connected.send_modify(|c| *c += 1);
    let ended = steady(w, shared, mode, &tx, &mut inbound, &kill).await;
    shared.connected.send_modify(|c| *c -= 1);
    if matches!(ended, Ended::Lost { .. }) {
        shared.unexpected_ends.fetch_add(1, Ordering::Relaxed);
    }
    ended
}

/// Keepalives out, acks in, until the stream ends or the bench says otherwise.
async fn steady(
    w: &SimWorker,
    shared: &SimShared,
    mode: &mut watch::Receiver<Mode>,
    tx: &mpsc::Sender<WorkerMessage>,
    inbound: &mut tonic::Streaming<crate::proto::CoordinatorMessage>,
    kill: &CancellationToken,
) -> Ended {
    // A random phase spreads the fleet's keepalives evenly over the interval.
    let phase = rand::rng().random_range(0..shared.keepalive.as_micros().max(1) as u64);
    let first = tokio::time::Instant::now() + Duration::from_micros(phase);
    let mut tick = tokio::time::interval_at(first, shared.keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut readiness = w.readiness.subscribe();
    readiness.mark_changed();
    loop {
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ended::Stop,
            changed = mode.changed() => {
                if changed.is_err() || matches!(*mode.borrow_and_update(), Mode::Dead | Mode::Leave) {
                    // Cut the socket before anything is dropped: dropping the
                    // request stream first would let HTTP/2 end it politely.
                    kill.cancel();
                    return Ended::Killed;
                }
            }
            m = inbound.message() => match m {
                Ok(Some(m)) => {
                    if let Some(In::KeepaliveAck(ack)) = m.msg {
                        if shared.recording.load(Ordering::Relaxed) {
                            let rtt = shared.now_us().saturating_sub(ack.seq);
                            shared.rtt.record(Duration::from_micros(rtt));
                        }
                    }
                    // Goodbye is followed by the end of the stream; Drain changes nothing here.
                }
                _ => return Ended::Lost { welcomed: true },
            },
            r = readiness.changed() => {
                if r.is_err() {
                    continue;
                }
                let report: Vec<(String, ServiceState)> = readiness.borrow_and_update().clone();
                for (service, state) in report {
                    let status = ServiceStatus { service, state: state as i32, message: String::new() };
                    if tx.send(wrap(Out::ServiceStatus(status))).await.is_err() {
                        return Ended::Lost { welcomed: true };
                    }
                }
            }
            _ = tick.tick() => {
                if !shared.paused.load(Ordering::Relaxed) && *mode.borrow() == Mode::Run {
                    let now = shared.now_us();
                    w.last_sent_us.store(now, Ordering::Relaxed);
                    // A full queue means the connection is stuck; skipping is what a real agent's timer would do.
                    let _ = tx.try_send(wrap(Out::Keepalive(Keepalive { seq: now, ..Default::default() })));
                }
            }
        }
    }
}
