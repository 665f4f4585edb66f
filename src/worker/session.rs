//! One session of the worker agent: dial, Hello, Welcome, then keepalives
//! and status reports until the stream ends.
//!
//! Keepalives run on their own task with their own timer: a slow probe, a
//! model load or a stalled status report cannot delay them, because nothing
//! else runs on that task.

use super::credentials::Credentials;
use super::targets::Target;
use super::{AgentCtx, ServiceReport};
use crate::auth::bearer;
use crate::proto::{
    coordinator_message::Msg as In, worker_control_client::WorkerControlClient, worker_message::Msg as Out,
    DeclaredService, Hello, Keepalive, RenewCertificate, ServiceStatus, WorkerMessage,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub enum Ended {
    /// The agent was told to stop.
    Shutdown,
    /// The session ended or never started; `welcomed` says whether it got as far as a Welcome.
    Lost { reason: String, welcomed: bool },
}

fn lost(reason: impl Into<String>) -> Ended {
    Ended::Lost {
        reason: reason.into(),
        welcomed: false,
    }
}

fn wrap(m: Out) -> WorkerMessage {
    WorkerMessage { msg: Some(m) }
}

pub async fn run(ctx: &AgentCtx, target: &Target, token: &mut Option<String>, shutdown: &CancellationToken) -> Ended {
    tokio::select! {
        ended = session(ctx, target, token) => ended,
        _ = shutdown.cancelled() => Ended::Shutdown,
    }
}

async fn session(ctx: &AgentCtx, target: &Target, token: &mut Option<String>) -> Ended {
    let cfg = &ctx.config;
    let url = target.dial.clone();
    let dialer = super::dial::Dialer {
        target: target.clone(),
        ca_pem: ctx.ca_pem.clone(),
        credentials: ctx.credentials.clone(),
        config: ctx.config.clone(),
    };
    if dialer.needs_join() {
        if let Err(e) = dialer.join(&ctx.name, &ctx.instance_id).await {
            return lost(e);
        }
    }
    let endpoint = match dialer.endpoint() {
        Ok(e) => e,
        Err(e) => return lost(e),
    };
    let certified = dialer.tls() && ctx.credentials.usable(crate::tls::unix_now()).is_some();
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return lost(format!("cannot reach {url}: {}", crate::errors::chain(&e))),
    };
    let mut client = WorkerControlClient::new(channel).max_decoding_message_size(ctx.max_message_bytes);

    let (out_tx, out_rx) = mpsc::channel::<WorkerMessage>(64);
    let hello = Hello {
        name: ctx.name.clone(),
        instance_id: ctx.instance_id.clone(),
        capabilities: Some(ctx.capabilities.clone()),
        services: cfg
            .services
            .iter()
            .map(|(n, u)| DeclaredService {
                name: n.clone(),
                url: u.clone(),
            })
            .collect(),
        advertise_address: cfg.advertise.clone().unwrap_or_default(),
        resume_token: token.clone().unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        previous_worker_id: ctx.status.borrow().worker_id.clone().unwrap_or_default(),
        running: ctx.wanted.borrow().iter().flatten().map(|s| s.name.clone()).collect(),
        tunnel: cfg.uses_tunnel(),
    };
    out_tx
        .send(wrap(Out::Hello(hello)))
        .await
        .expect("receiver is held below");
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
    if let Some(t) = cfg.join_token.as_deref().filter(|t| !t.is_empty()) {
        match bearer(t).parse() {
            Ok(v) => {
                request.metadata_mut().insert("authorization", v);
            }
            Err(_) => return lost("join token has characters that cannot go in a header"),
        }
    }
    let mut inbound = match tokio::time::timeout(cfg.connect_timeout, client.connect(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            return lost(format!(
                "coordinator refused: {:?}: {}",
                status.code(),
                status.message()
            ))
        }
        Err(_) => return lost("no answer to Connect"),
    };
    let welcome = match tokio::time::timeout(cfg.connect_timeout, inbound.message()).await {
        Ok(Ok(Some(m))) => match m.msg {
            Some(In::Welcome(w)) => w,
            _ => return lost("coordinator's first message was not Welcome"),
        },
        Ok(Ok(None)) => return lost("stream ended before Welcome"),
        Ok(Err(status)) => {
            return lost(format!(
                "coordinator refused: {:?}: {}",
                status.code(),
                status.message()
            ))
        }
        Err(_) => return lost("no Welcome in time"),
    };

    *token = Some(welcome.resume_token.clone());
    let id = welcome.worker_id.clone();
    info!(worker = %ctx.name, worker_id = %id, resumed = welcome.resumed, coordinator = %target.url, "registered with the coordinator");
    ctx.status.send_modify(|s| {
        s.worker_id = Some(id.clone());
        s.connected = true;
        s.coordinator = Some(target.url.clone());
        s.sessions += 1;
        s.resumed = welcome.resumed;
        s.draining = false;
        s.last_error = None;
    });

    let mut tasks = JoinSet::new();
    let interval = Duration::from_millis(welcome.keepalive_interval_ms.max(10));
    tasks.spawn(keepalives(out_tx.clone(), interval, ctx.epoch, ctx.status.subscribe()));
    if certified {
        tasks.spawn(renewals(out_tx.clone(), ctx.credentials.clone(), ctx.name.clone()));
    }
    tasks.spawn(report_services(out_tx, ctx.services.clone()));
    if cfg.uses_tunnel() {
        let forwarder = crate::worker::tunnel::Forwarder::new(ctx.local.clone(), ctx.service_tls.clone());
        let join = cfg.join_token.clone();
        let (name, id, token) = (ctx.name.clone(), id.clone(), welcome.resume_token.clone());
        let backoff = super::Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
        // Its own connection, so tunnel traffic never queues ahead of keepalives.
        tasks.spawn(async move {
            keep_tunnel_open(backoff, || async {
                // Dialed afresh each time: with the certificate current now.
                let res = match dialer.endpoint() {
                    Err(e) => Err(e),
                    Ok(endpoint) => match endpoint.connect().await {
                        Ok(ch) => {
                            crate::worker::tunnel::serve(ch, &id, &token, join.as_deref(), forwarder.clone()).await
                        }
                        Err(e) => Err(format!("cannot reach the coordinator: {}", crate::errors::chain(&e))),
                    },
                };
                if let Err(e) = &res {
                    warn!(worker = %name, worker_id = %id, error = %e, "tunnel down; reopening");
                }
                res
            })
            .await
        });
    }

    let reason = loop {
        match inbound.message().await {
            Ok(Some(m)) => match m.msg {
                Some(In::KeepaliveAck(a)) => {
                    let now = ctx.epoch.elapsed().as_micros() as u64;
                    let rtt = Duration::from_micros(now.saturating_sub(a.seq));
                    ctx.status.send_modify(|s| {
                        s.last_rtt = Some(rtt);
                        s.keepalives_acked += 1;
                    });
                }
                Some(In::Drain(d)) => {
                    warn!(worker = %ctx.name, worker_id = %id, reason = %d.reason, "coordinator drained this worker");
                    ctx.status.send_modify(|s| s.draining = true);
                }
                Some(In::Goodbye(g)) => break format!("coordinator said goodbye: {}", g.reason),
                Some(In::Assignment(a)) => ctx.apply_assignment(&a),
                Some(In::Certificate(c)) => {
                    let stored = if c.error.is_empty() {
                        ctx.credentials.accept(&c.certificate_pem).map_err(|e| e.to_string())
                    } else {
                        Err(c.error)
                    };
                    match stored {
                        Ok(()) => info!(worker = %ctx.name, worker_id = %id, "certificate renewed"),
                        Err(e) => warn!(worker = %ctx.name, worker_id = %id, error = %e, "certificate not renewed"),
                    }
                }
                Some(In::Welcome(_)) | None => {}
            },
            Ok(None) => break "stream ended by coordinator".to_string(),
            Err(status) => break format!("stream broken: {:?}: {}", status.code(), status.message()),
        }
    };
    tasks.abort_all();
    Ended::Lost { reason, welcomed: true }
}

/// Opens the tunnel with `open` and, each time it closes or cannot be
/// opened, opens it again after the control stream's jittered backoff: a
/// fleet whose tunnels all dropped at once (a coordinator restart) does not
/// come back in lockstep, and a coordinator that keeps refusing is asked
/// less and less often. A tunnel that served a while before it closed
/// (an error-free end, or one after the grace below) starts over from the
/// shortest delay. Runs until its session aborts it.
async fn keep_tunnel_open<F, Fut>(mut backoff: super::Backoff, mut open: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    loop {
        let opened = tokio::time::Instant::now();
        let res = open().await;
        if res.is_ok() || opened.elapsed() >= TUNNEL_SETTLED {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// A tunnel that stayed open this long was working: its end is a new
/// failure, not the next of a series.
const TUNNEL_SETTLED: Duration = Duration::from_secs(10);

/// Asks for a new certificate about two thirds into the current one's
/// lifetime, over the control stream (the answer arrives on it as a
/// `Certificate`); asks again, with a new key, if no answer moved the
/// renewal time on within a tenth of the lifetime.
async fn renewals(out: mpsc::Sender<WorkerMessage>, credentials: Arc<Credentials>, name: String) {
    loop {
        let Some(at) = credentials.renew_at() else { return };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        tokio::time::sleep(Duration::from_millis((at * 1000 - now_ms).max(0) as u64)).await;
        if credentials.renew_at() != Some(at) {
            continue;
        }
        match credentials.request(&name) {
            Ok(csr_pem) => {
                let m = wrap(Out::RenewCertificate(RenewCertificate { csr_pem }));
                if out.send(m).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(worker = %name, error = %e, "could not make a certificate request"),
        }
        let retry = credentials
            .retry_after()
            .clamp(Duration::from_secs(1), Duration::from_secs(300));
        tokio::time::sleep(retry).await;
    }
}

/// Sends a keepalive every `interval`. The sequence number is the send time
/// (microseconds since the agent started), so the ack gives the round trip
/// without any bookkeeping. Each carries the last round trip measured, for
/// the coordinator's metrics.
async fn keepalives(
    out: mpsc::Sender<WorkerMessage>,
    interval: Duration,
    epoch: tokio::time::Instant,
    status: tokio::sync::watch::Receiver<super::AgentStatus>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let seq = epoch.elapsed().as_micros() as u64;
        let last_rtt_micros = status.borrow().last_rtt.map_or(0, |r| r.as_micros() as u64);
        if out
            .send(wrap(Out::Keepalive(Keepalive { seq, last_rtt_micros })))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends every service's state at session start, then each change.
async fn report_services(
    out: mpsc::Sender<WorkerMessage>,
    mut services: tokio::sync::watch::Receiver<BTreeMap<String, ServiceReport>>,
) {
    let mut sent: BTreeMap<String, ServiceReport> = BTreeMap::new();
    loop {
        let now = services.borrow_and_update().clone();
        for (name, report) in &now {
            if sent.get(name) != Some(report) {
                let s = ServiceStatus {
                    service: name.clone(),
                    state: report.state as i32,
                    message: report.message.clone(),
                };
                if out.send(wrap(Out::ServiceStatus(s))).await.is_err() {
                    return;
                }
            }
        }
        sent = now;
        if services.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A coordinator that keeps refusing the tunnel is asked again after
    /// growing, jittered delays (the control stream's backoff), not every
    /// 500 ms; once a tunnel has served a while, the delays start over.
    #[tokio::test(start_paused = true)]
    async fn the_tunnel_reopens_with_the_control_streams_backoff() {
        let calls: Arc<Mutex<Vec<tokio::time::Instant>>> = Default::default();
        let seen = calls.clone();
        let backoff = crate::worker::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let task = tokio::spawn(keep_tunnel_open(backoff, move || {
            let seen = seen.clone();
            async move {
                let n = {
                    let mut c = seen.lock().unwrap();
                    c.push(tokio::time::Instant::now());
                    c.len()
                };
                if n == 7 {
                    // The seventh tunnel opens and serves for a minute.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Err("coordinator refused the tunnel".to_string())
            }
        }));
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while calls.lock().unwrap().len() < 8 {
            tick.tick().await;
        }
        task.abort();
        let at = calls.lock().unwrap().clone();
        let gap = |i: usize| at[i + 1] - at[i];
        let ms = Duration::from_millis;
        let bounds = [(50, 100), (100, 200), (200, 400), (400, 800), (500, 1000), (500, 1000)];
        for (i, (lo, hi)) in bounds.into_iter().enumerate() {
            let g = gap(i);
            // The 10 ms poll above can only make a gap look longer.
            assert!(
                g >= ms(lo) && g <= ms(hi) + ms(10),
                "gap {i}: {g:?}, want {lo}..={hi} ms"
            );
        }
        // After a minute of service: back to the shortest delay.
        let after = gap(6) - Duration::from_secs(60);
        assert!(after <= ms(110), "{after:?}");
    }
}
