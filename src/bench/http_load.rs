//! HTTP load through the coordinator's proxy (`/service/{name}/...`), and
//! the fast backend it reaches, for `bench overload` and `bench soak`.
//!
//! Each client holds one keep-alive HTTP/1.1 connection (hyper's client
//! connection, no pool) and sends GETs one after another, as fast as the
//! answers come or at a fixed interval; a failed request (an error, or a
//! status other than 2xx) is counted by cause and the client dials again.

use super::histogram::{Histogram, Summary};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Bound on one request, answer included.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// Counters every client of one load shares.
#[derive(Default)]
pub struct LoadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Request sent to its whole answer read (recorded only while `recording`).
    pub latency: Histogram,
    pub recording: AtomicBool,
    /// The same latencies over the whole run, never reset.
    pub all: Histogram,
    /// Failures by cause ("status 503", "connect: ...").
    pub causes: Mutex<BTreeMap<String, u64>>,
}

/// What a load did over a window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LoadFigures {
    pub clients: usize,
    pub path: String,
    pub requests: u64,
    pub failures: u64,
    pub req_per_s: f64,
    pub latency: Summary,
    /// Failures by cause, most frequent first (at most 5).
    pub causes: Vec<(String, u64)>,
}

/// Counts at one instant, to take differences over a window.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    at: Instant,
    ok: u64,
    failed: u64,
}

impl LoadStats {
    fn fail(&self, cause: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .causes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cause)
            .or_insert(0) += 1;
    }

    /// Starts a window: latencies from now on, counts from here.
    pub fn mark(&self) -> Mark {
        self.latency.reset();
        self.recording.store(true, Ordering::Relaxed);
        Mark {
            at: Instant::now(),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// The window since `m`.
    pub fn figures(&self, m: &Mark, clients: usize, path: &str) -> LoadFigures {
        let ok = self.ok.load(Ordering::Relaxed) - m.ok;
        let failures = self.failed.load(Ordering::Relaxed) - m.failed;
        let secs = m.at.elapsed().as_secs_f64().max(1e-9);
        let mut causes: Vec<(String, u64)> = self
            .causes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        causes.sort_by_key(|c| std::cmp::Reverse(c.1));
        causes.truncate(5);
        LoadFigures {
            clients,
            path: path.to_string(),
            requests: ok + failures,
            failures,
            req_per_s: (ok + failures) as f64 / secs,
            latency: self.latency.summary(),
            causes,
        }
    }
}

/// One load: `clients` connections to `target`, each sending `GET path`.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub path: String,
    pub clients: usize,
    /// Each client's gap between requests; `None`: back to back (saturating).
    pub interval: Option<Duration>,
}

/// Starts the clients; they run until `stop`.
pub fn start(spec: &LoadSpec, stats: Arc<LoadStats>, stop: CancellationToken) {
    for _ in 0..spec.clients {
        tokio::spawn(client(spec.clone(), stats.clone(), stop.clone()));
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn client(spec: LoadSpec, stats: Arc<LoadStats>, stop: CancellationToken) {
    // A random phase spreads paced clients over their interval.
    if let Some(i) = spec.interval {
        let phase = rand::random_range(0..i.as_micros().max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_micros(phase)) => {}
            _ = stop.cancelled() => return,
        }
    }
    let mut tick = spec.interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while !stop.is_cancelled() {
        let mut sender = match connect(spec.target).await {
            Ok(s) => s,
            Err(cause) => {
                stats.fail(format!("connect: {cause}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
        };
        loop {
            if let Some(t) = tick.as_mut() {
                tokio::select! {
                    _ = t.tick() => {}
                    _ = stop.cancelled() => return,
                }
            }
            let start = Instant::now();
            let answer = tokio::select! {
                r = tokio::time::timeout(REQUEST_LIMIT, get(&mut sender, &spec.path)) => r,
                _ = stop.cancelled() => return,
            };
            match answer {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    if stats.recording.load(Ordering::Relaxed) {
                        stats.latency.record(start.elapsed());
                        stats.all.record(start.elapsed());
                    }
                }
                Ok(Ok(status)) => stats.fail(format!("status {status}")),
                Ok(Err(cause)) => {
                    stats.fail(cause);
                    break;
                }
                Err(_) => {
                    stats.fail(format!("no answer in {REQUEST_LIMIT:?}"));
                    break;
                }
            }
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One keep-alive HTTP/1.1 connection to `target`.
async fn connect(target: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(target).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| innermost(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `GET path`, the answer's body read to its end; the status.
async fn get(sender: &mut Sender, path: &str) -> Result<u16, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {}", innermost(&e)))?;
    let req = http::Request::get(path)
        .header(http::header::HOST, "bench")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {}", innermost(&e)))?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {}", innermost(&e)))?;
    Ok(status)
}

/// One `GET path` to `target` on a connection of its own: the body, for a
/// 2xx answer (the soak's scrape of `/metrics`).
pub async fn fetch(target: SocketAddr, path: &str) -> Result<String, String> {
    let once = async {
        let stream = TcpStream::connect(target).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| innermost(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(path)
            .header(http::header::HOST, "bench")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| innermost(&e))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| innermost(&e))?.to_bytes();
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(REQUEST_LIMIT, once)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {REQUEST_LIMIT:?}")))
}

/// The fast backend every simulated replica's URL points at: `200 ok` to
/// any request, on keep-alive connections. Served until `stop`.
pub async fn backend(listener: tokio::net::TcpListener, stop: CancellationToken) {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
}

/// `edgeplane bench backend`: [`backend`] as a process of its own (for
/// `--backend-cpus`), until killed.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    #[arg(long)]
    pub listen: SocketAddr,
}

pub async fn run_backend(args: &BackendArgs) -> Result<(), super::error::BenchError> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    backend(listener, CancellationToken::new()).await;
    Ok(())
}

/// The value of the sample `name` (no labels) in a Prometheus text exposition.
pub fn gauge_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_unlabelled_gauge() {
        let text = "# HELP edgeplane_tokio_tasks Tasks\n# TYPE edgeplane_tokio_tasks gauge\n\
                    edgeplane_tokio_tasks_other 3\nedgeplane_tokio_tasks 1234\nedgeplane_workers{state=\"healthy\"} 5\n";
        assert_eq!(gauge_value(text, "edgeplane_tokio_tasks"), Some(1234.0));
        assert_eq!(gauge_value(text, "edgeplane_workers"), None);
        assert_eq!(gauge_value("", "x"), None);
    }

    #[tokio::test]
    async fn a_load_against_the_backend_counts_and_times_requests() {
        let stop = CancellationToken::new();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = l.local_addr().unwrap();
        tokio::spawn(backend(l, stop.clone()));
        let stats = Arc::new(LoadStats::default());
        let m = stats.mark();
        let spec = LoadSpec {
            target,
            path: "/x?y=1".into(),
            clients: 2,
            interval: Some(Duration::from_millis(10)),
        };
        start(&spec, stats.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let f = stats.figures(&m, 2, "/x?y=1");
        assert!(f.requests >= 10, "{f:?}");
        assert_eq!(f.failures, 0, "{f:?}");
        assert!(f.latency.count >= 10 && f.latency.p99_ms < 1000.0, "{f:?}");
        assert_eq!(fetch(target, "/metrics").await.unwrap(), "ok");
        stop.cancel();
    }
}
