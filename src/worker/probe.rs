//! Readiness probes: the worker checks each of its services the way the
//! catalog says (HTTP path, gRPC health, or TCP connect) and reports
//! `loading` until the first pass, `ready` while it passes, and `failed`
//! once a ready service stops passing. Probes run on their own tasks, apart
//! from keepalives: a slow service never delays liveness.
//!
//! Each check goes where [`LocalServices`] says the service is (the
//! runtime's address when it put the service elsewhere, such as a
//! container on the worker's Docker network). A probe that has never passed
//! does not turn a runtime's `failed` (say, a missing image) into `loading`:
//! the runtime's reason stays visible until the service answers.

use super::ServiceReport;
use crate::proto::{readiness::Check, Readiness, ServiceState};
use crate::upstream::ServiceTls;
use crate::worker::tunnel::LocalServices;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One service to watch.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub url: String,
    pub check: Check,
}

impl ProbeSpec {
    pub fn new(url: &str, readiness: Option<&Readiness>) -> Self {
        let check = readiness.and_then(|r| r.check.clone()).unwrap_or(Check::Tcp(true));
        ProbeSpec {
            url: url.trim_end_matches('/').to_string(),
            check,
        }
    }
}

/// Runs one probe. `Ok` means ready; `Err` says why not. An `https://`
/// service is checked over TLS verified with `tls`, so a certificate the
/// tunnel would refuse keeps the service from being reported ready.
pub async fn check_once(spec: &ProbeSpec, tls: &ServiceTls, timeout: Duration) -> Result<(), String> {
    let fut = async {
        match &spec.check {
            Check::HttpPath(path) => http_check(&format!("{}{}", spec.url, path), tls).await,
            Check::GrpcService(svc) => grpc_check(&spec.url, svc, Some(tls)).await,
            Check::Tcp(_) => tcp_check(&spec.url, tls, timeout).await,
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", crate::duration::format_short(timeout))))
}

async fn http_check(url: &str, tls: &ServiceTls) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let http = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<bytes::Bytes>>(tls.connector(http, false));
    let resp = client
        .get(uri)
        .await
        .map_err(|e| format!("GET {url}: {}", crate::errors::chain(&e)))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("GET {url}: {}", resp.status()))
    }
}

async fn grpc_check(url: &str, service: &str, tls: Option<&ServiceTls>) -> Result<(), String> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(url.to_string()).map_err(|e| format!("bad URL {url}: {e}"))?;
    if let (Some(tls), Some(host)) = (tls, endpoint.uri().host().map(str::to_string)) {
        if crate::upstream::is_https(endpoint.uri()) {
            endpoint = endpoint
                .tls_config(tls.trust().tonic(&host))
                .map_err(|e| format!("TLS for {url}: {e}"))?;
        }
    }
    let ch = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {url}: {}", crate::errors::chain(&e)))?;
    let resp = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| format!("health check: {:?}: {}", s.code(), s.message()))?;
    match resp.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("health: {}", other.as_str_name())),
    }
}

/// One gRPC health check of `service` at `url` (`""`: the whole server),
/// for `edgeplane health`: `Ok` when SERVING.
pub async fn grpc_health(url: &str, service: &str, timeout: Duration) -> Result<(), String> {
    let tls = ServiceTls::default();
    tokio::time::timeout(timeout, grpc_check(url, service, Some(&tls)))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", crate::duration::format_short(timeout))))
}

/// A connect (and, to an `https://` service, a verified TLS handshake).
async fn tcp_check(url: &str, tls: &ServiceTls, timeout: Duration) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let authority = uri.authority().ok_or("URL without host")?;
    crate::upstream::connect(crate::upstream::is_https(&uri), authority, tls, timeout)
        .await
        .map(|_| ())
        .map_err(|e| e.detail())
}

/// The probe tasks of one agent, by service name.
#[derive(Default)]
pub struct Probes {
    running: BTreeMap<String, (ProbeSpec, JoinHandle<()>)>,
}

impl Probes {
    /// Makes the running probes match `wanted`: unchanged ones keep going.
    pub fn apply(
        &mut self,
        wanted: BTreeMap<String, ProbeSpec>,
        board: &watch::Sender<BTreeMap<String, ServiceReport>>,
        local: &LocalServices,
        tls: &ServiceTls,
        interval: Duration,
    ) {
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(n, (spec, _))| wanted.get(*n) != Some(spec))
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            if let Some((_, task)) = self.running.remove(&name) {
                task.abort();
            }
        }
        for (name, spec) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(probe_loop(
                name.clone(),
                spec.clone(),
                board.clone(),
                local.clone(),
                tls.clone(),
                interval,
            ));
            self.running.insert(name, (spec, task));
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// Consecutive failed checks before a ready service is reported failed:
/// one miss may be a blip under load; three in a row is not.
const FAILURE_THRESHOLD: u32 = 3;

async fn probe_loop(
    name: String,
    spec: ProbeSpec,
    board: watch::Sender<BTreeMap<String, ServiceReport>>,
    local: LocalServices,
    tls: ServiceTls,
    interval: Duration,
) {
    // A busy service answers slowly; that alone should not make it unready.
    let timeout = interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
    let mut was_ready = false;
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut at = spec.clone();
        if let Some(url) = local.url(&name) {
            at.url = url.trim_end_matches('/').to_string();
        }
        let report = match check_once(&at, &tls, timeout).await {
            Ok(()) => {
                was_ready = true;
                failures = 0;
                ServiceReport {
                    state: ServiceState::Ready,
                    message: String::new(),
                }
            }
            Err(_) if was_ready && failures + 1 < FAILURE_THRESHOLD => {
                failures += 1;
                continue;
            }
            Err(why) if was_ready => ServiceReport {
                state: ServiceState::Failed,
                message: format!("readiness check failing: {why}"),
            },
            Err(why) => ServiceReport {
                state: ServiceState::Loading,
                message: format!("not ready yet: {why}"),
            },
        };
        board.send_if_modified(|m| {
            let current = m.get(&name);
            if current == Some(&report) {
                return false;
            }
            if report.state == ServiceState::Loading && current.is_some_and(|c| c.state == ServiceState::Failed) {
                // The runtime's reason (or an earlier failure) says more than "not ready yet".
                return false;
            }
            m.insert(name.clone(), report);
            true
        });
    }
}
