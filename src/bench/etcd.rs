//! `edgeplane bench etcd`: the same fleet load against etcd, the store the
//! design plans to share state through, so that edgeplane's figures have a
//! peer measured on the same machine in the same way. Each client holds one
//! lease and renews it over its own `LeaseKeepAlive` stream on its own
//! connection, as an etcd-backed worker registry would (a lease per worker
//! session).

use super::args::EtcdArgs;
use super::child::{free_port, ChildServer};
use super::connector::source_address;
use super::error::BenchError;
use super::etcd_proto::{LeaseClient, LeaseKeepAliveRequest};
use super::histogram::Histogram;
use super::procfs::{self, Window};
use super::ramp::Ramp;
use super::report::EtcdReport;
use crate::parse::normalize_url;
use crate::worker::Backoff;
use rand::Rng;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

struct Shared {
    endpoint: Endpoint,
    keepalive: Duration,
    ttl_s: i64,
    paused: AtomicBool,
    recording: AtomicBool,
    rtt: Histogram,
    grant: Histogram,
    connected: tokio::sync::watch::Sender<usize>,
    unexpected_ends: AtomicU64,
    failed_attempts: AtomicU64,
    /// Why attempts failed and streams ended, for the report's notes.
    causes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    stop: CancellationToken,
}

async fn grant_ok(url: &str, ttl_s: i64) -> bool {
    let Ok(ep) = Endpoint::from_shared(url.to_string()) else {
        return false;
    };
    let Ok(ch) = ep.connect_timeout(Duration::from_millis(500)).connect().await else {
        return false;
    };
    let mut lease = LeaseClient::new(ch);
    let call = lease.grant(ttl_s);
    matches!(tokio::time::timeout(Duration::from_secs(2), call).await, Ok(Ok(r)) if r.id != 0)
}

fn etcd_version(bin: &Path) -> Option<String> {
    let out = std::process::Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn spawn_etcd(args: &EtcdArgs, port: u16, data: &Path) -> Result<ChildServer, BenchError> {
    let log = args
        .etcd_log
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("edgeplane-bench-etcd-{port}.log")));
    spawn_etcd_at(&args.etcd_bin, &log, port, data)
}

/// etcd on 127.0.0.1:`port` with its data in `data`, logging to `log`.
pub fn spawn_etcd_at(bin: &Path, log: &Path, port: u16, data: &Path) -> Result<ChildServer, BenchError> {
    let peer = free_port()?;
    let client = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let a = [
        "--name",
        "bench",
        "--data-dir",
        &data.display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &format!("bench={peer_url}"),
        "--initial-cluster-state",
        "new",
        "--logger",
        "zap",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ChildServer::spawn("etcd", bin, a, Vec::new(), log)
}

pub async fn run(args: &EtcdArgs) -> Result<EtcdReport, BenchError> {
    let l = &args.load;
    if l.workers == 0 || l.keepalive.is_zero() || l.sources == 0 || l.sources > 250 || l.ramp_rate <= 0.0 {
        return Err(BenchError::Settings(
            "--workers, --keepalive and --ramp-rate must be positive, --sources 1..=250".into(),
        ));
    }
    let ttl_s = args.ttl.as_secs().max(2) as i64;
    let fd_limit = super::fdlimit::raise_to_hard()?;
    let n = l.workers;
    let patience = l.patience;
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let mut notes = Vec::new();
    let mut data_dir: Option<PathBuf> = None;

    let (url, mut child, version) = match &args.endpoint {
        Some(u) => (normalize_url(u), None, None),
        None => {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let dir = std::env::temp_dir().join(format!("edgeplane-bench-etcd-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            data_dir = Some(dir.clone());
            let mut c = spawn_etcd(args, port, &dir)?;
            let u = url.clone();
            c.wait_ready(Duration::from_secs(30), || grant_ok(&u, ttl_s)).await?;
            (url, Some(c), etcd_version(&args.etcd_bin))
        }
    };
    let pid = child.as_ref().and_then(|c| c.pid()).or(args.etcd_pid);
    let baseline = pid.map(procfs::sample).transpose()?;
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| BenchError::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(10));
    let shared = Arc::new(Shared {
        endpoint,
        keepalive: l.keepalive,
        ttl_s,
        paused: AtomicBool::new(false),
        recording: AtomicBool::new(false),
        rtt: Histogram::new(),
        grant: Histogram::new(),
        connected: tokio::sync::watch::channel(0).0,
        unexpected_ends: AtomicU64::new(0),
        failed_attempts: AtomicU64::new(0),
        causes: Default::default(),
        stop: stop.clone(),
    });

    let ramp = Ramp {
        rate: l.ramp_rate,
        in_flight: l.ramp_in_flight,
    };
    let ramp_window = Window::start(pid);
    let t0 = Instant::now();
    let ramped = ramp.run(n, &stop, |i, permit| {
        let source = source_address(i, l.sources);
        tokio::spawn(client(source, shared.clone(), permit));
    });
    if tokio::time::timeout(ramp.bound(n, patience), ramped).await.is_err() {
        notes.push("the ramp did not finish within its bound".into());
    }
    let mut rx = shared.connected.subscribe();
    let all = tokio::time::timeout(patience, rx.wait_for(|c| *c >= n)).await.is_ok();
    let connect_all = all.then(|| t0.elapsed());
    let ramp_usage = ramp_window.finish();
    let connected = *shared.connected.borrow();
    if !all {
        notes.push(format!("only {connected} of {n} clients connected within {patience:?}"));
    }
    tokio::time::sleep(l.keepalive).await;

    let idle = if !l.idle.is_zero() && l.idle + 2 * l.keepalive < args.ttl {
        shared.paused.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let w = Window::start(pid);
        tokio::time::sleep(l.idle).await;
        let u = w.finish();
        shared.paused.store(false, Ordering::Relaxed);
        tokio::time::sleep(l.keepalive).await;
        Some(u)
    } else {
        None
    };

    shared.rtt.reset();
    shared.recording.store(true, Ordering::Relaxed);
    let w = Window::start(pid);
    tokio::time::sleep(l.duration).await;
    let keepalive_usage = w.finish();
    shared.recording.store(false, Ordering::Relaxed);

    let causes: Vec<(String, u64)> = shared
        .causes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .into_iter()
        .collect();
    for (cause, count) in causes {
        notes.push(format!("{count} x {cause}"));
    }
    // Read before stopping: stopping ends every stream.
    let unexpected_stream_ends = shared.unexpected_ends.load(Ordering::Relaxed);
    let failed_attempts = shared.failed_attempts.load(Ordering::Relaxed);
    stop.cancel();
    let log = child.as_ref().map(|c| c.log().display().to_string());
    if let Some(c) = child.take() {
        c.stop().await;
    }
    if let Some(d) = data_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    let per_client = |u: &procfs::WindowUsage| -> Option<f64> {
        Some((u.target?.rss_kib as f64 - baseline?.rss_kib as f64) / n as f64)
    };
    Ok(EtcdReport {
        endpoint: url,
        etcd_log: log,
        version,
        clients: n,
        keepalive_ms: l.keepalive.as_millis() as u64,
        ttl_s: ttl_s as u64,
        duration_s: l.duration.as_secs_f64(),
        fd_limit,
        connected,
        connect_all_s: connect_all.map(|d| d.as_secs_f64()),
        grant: shared.grant.summary(),
        failed_attempts,
        baseline_rss_kib: baseline.map(|b| b.rss_kib),
        ramp: ramp_usage,
        idle_per_client_kib: idle.as_ref().and_then(per_client),
        idle,
        keepalive_per_client_kib: per_client(&keepalive_usage),
        keepalive: keepalive_usage,
        rtt: shared.rtt.summary(),
        unexpected_stream_ends,
        notes,
    })
}

impl Shared {
    fn cause(&self, c: String) {
        *self
            .causes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(c)
            .or_insert(0) += 1;
    }
}

/// One lease holder, reconnecting with the agent's backoff if its stream ends.
async fn client(source: IpAddr, shared: Arc<Shared>, permit: OwnedSemaphorePermit) {
    let mut permit = Some(permit);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let welcomed = tokio::select! {
            w = session(source, &shared, &mut permit) => w,
            _ = shared.stop.cancelled() => return,
        };
        if welcomed {
            shared.unexpected_ends.fetch_add(1, Ordering::Relaxed);
            backoff.reset();
        } else {
            shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
        }
        permit.take();
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shared.stop.cancelled() => return,
        }
    }
}

/// Returns whether the lease was granted (then the stream ended).
async fn session(source: IpAddr, shared: &Shared, permit: &mut Option<OwnedSemaphorePermit>) -> bool {
    let (granted, cause) = attempt(source, shared, permit).await;
    shared.cause(cause);
    granted
}

async fn attempt(source: IpAddr, shared: &Shared, permit: &mut Option<OwnedSemaphorePermit>) -> (bool, String) {
    let start = Instant::now();
    // Plain tonic dialing from the client's own source address: etcd clients
    // are never killed, so they need no kill switch.
    let channel = match shared.endpoint.clone().local_address(Some(source)).connect().await {
        Ok(c) => c,
        Err(e) => return (false, format!("dial: {e}")),
    };
    let mut lease = LeaseClient::new(channel);
    let limit = Duration::from_secs(10);
    let id = match tokio::time::timeout(limit, lease.grant(shared.ttl_s)).await {
        Ok(Ok(r)) if r.id != 0 => r.id,
        Ok(Ok(r)) => return (false, format!("grant refused: {}", r.error)),
        Ok(Err(s)) => return (false, format!("grant: {:?}", s.code())),
        Err(_) => return (false, "grant: no answer in 10 s".into()),
    };
    // etcd (grpc-go) sends the response headers only with the first
    // response, so the first request must be queued before the call.
    let (tx, rx) = mpsc::channel(4);
    let _ = tx.try_send(LeaseKeepAliveRequest { id });
    let mut sent: VecDeque<Instant> = VecDeque::from([Instant::now()]);
    let mut responses = match tokio::time::timeout(limit, lease.keep_alive(ReceiverStream::new(rx))).await {
        Ok(Ok(r)) => r,
        Ok(Err(s)) => return (false, format!("keepalive stream: {:?}", s.code())),
        Err(_) => return (false, "keepalive stream: no answer in 10 s".into()),
    };
    shared.grant.record(start.elapsed());
    permit.take();
    shared.connected.send_modify(|c| *c += 1);
    let phase = rand::rng().random_range(0..shared.keepalive.as_micros().max(1) as u64);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_micros(phase),
        shared.keepalive,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Responses come back in order on one stream: `sent` queues send times.
    let ended = loop {
        tokio::select! {
            m = responses.message() => match m {
                Ok(Some(r)) => {
                    if r.ttl <= 0 {
                        break "lease expired (TTL 0 in a keepalive response)".to_string();
                    }
                    if let Some(t) = sent.pop_front() {
                        if shared.recording.load(Ordering::Relaxed) {
                            shared.rtt.record(t.elapsed());
                        }
                    }
                }
                Ok(None) => break "stream ended by etcd".to_string(),
                Err(s) => break format!("stream broken: {:?} {}", s.code(), s.message().chars().take(60).collect::<String>()),
            },
            _ = tick.tick() => {
                if !shared.paused.load(Ordering::Relaxed) && tx.try_send(LeaseKeepAliveRequest { id }).is_ok() {
                    sent.push_back(Instant::now());
                }
            }
        }
    };
    shared.connected.send_modify(|c| *c -= 1);
    (true, ended)
}
