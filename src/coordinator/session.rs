//! One worker's Connect stream, from Hello to close.
//!
//! The handshake is bounded (a permit from [`super::handshakes`], in total
//! and per address, and a deadline for the Hello); after it, every inbound
//! message stamps the session's heartbeat with one atomic store, and the
//! registry learns of the close at once.

use super::handshakes::Permit;
use super::shared::ControlShared;
use crate::proto::{
    coordinator_message::Msg as Out, worker_message::Msg as In, Certificate, CoordinatorMessage, Drain, Goodbye, Hello,
    KeepaliveAck, Welcome, WorkerMessage,
};
use crate::registry::{limits, Notice, RegisterError, SessionLink};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

pub type Outbox = mpsc::Sender<Result<CoordinatorMessage, Status>>;

/// How long a control message (Welcome, Drain, Goodbye) may wait for room
/// in a worker's outbox before the session is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

fn msg(m: Out) -> Result<CoordinatorMessage, Status> {
    Ok(CoordinatorMessage { msg: Some(m) })
}

async fn send(tx: &Outbox, m: Result<CoordinatorMessage, Status>) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, tx.send(m)).await, Ok(Ok(())))
}

/// Puts a service name a worker used into its catalog form: an alias
/// (`notes`) becomes the service's name (`notes-coa`), in declarations and
/// status reports alike, so the registry and every view built from it hold
/// one service, not the service and its alias side by side. Names the
/// catalog does not know stay as they are.
fn catalog_name(shared: &ControlShared, name: &mut String) {
    if let Some(e) = shared.catalog.resolve(name) {
        if e.name != *name {
            *name = e.name.clone();
        }
    }
}

/// The longest keepalive round trip a worker's report is counted as (a
/// minute): past it, the figure says nothing a smaller one would not.
const MAX_REPORTED_RTT_MICROS: u64 = 60_000_000;

/// Waits for the Hello. Errors are already sent to the worker.
async fn handshake(
    shared: &ControlShared,
    inbound: &mut Streaming<WorkerMessage>,
    tx: &Outbox,
    _permit: Permit,
) -> Option<Hello> {
    let deadline = shared.config.handshake_timeout;
    let refusal = match tokio::time::timeout(deadline, inbound.message()).await {
        Ok(Ok(Some(WorkerMessage {
            msg: Some(In::Hello(h)),
        }))) => match limits::validate_hello(&h) {
            Ok(()) => return Some(h),
            Err(e) => ("invalid_hello", Status::invalid_argument(format!("invalid Hello: {e}"))),
        },
        Ok(Ok(Some(_))) => (
            "not_hello",
            Status::failed_precondition("the first message on Connect must be Hello"),
        ),
        Ok(Ok(None)) => return None,
        // Decoding errors (an oversized message) go back to the peer as they are.
        Ok(Err(status)) => ("bad_message", status),
        Err(_) => (
            "handshake_timeout",
            Status::deadline_exceeded(format!("no Hello within {}", crate::duration::format_short(deadline))),
        ),
    };
    let (reason, refusal) = refusal;
    shared.metrics.refused(reason);
    debug!(code = ?refusal.code(), message = refusal.message(), "handshake refused");
    send(tx, Err(refusal)).await;
    None
}

/// `certified`: the worker id the stream's client certificate names; the
/// session is that worker's and no other's, and may renew its certificate.
pub async fn run(
    shared: Arc<ControlShared>,
    mut inbound: Streaming<WorkerMessage>,
    tx: Outbox,
    permit: Permit,
    certified: Option<String>,
) {
    let Some(mut hello) = handshake(&shared, &mut inbound, &tx, permit).await else {
        return;
    };
    // Declared services go by their catalog names (`notes` is `notes-coa`).
    for d in &mut hello.services {
        catalog_name(&shared, &mut d.name);
    }
    let registry = &shared.registry;
    let (link, mut notices) = SessionLink::new(registry.clock().now_ms());
    let link = Arc::new(link);
    // Services the worker still runs from a placement this coordinator does
    // not remember (it restarted): adopted, so nothing is restarted. Not
    // when the fleet already serves one to its maximum (the worker was
    // removed, partitioned, and its services re-placed meanwhile): the
    // worker is told to stop its copy rather than make a duplicate.
    let routes = registry.routes().borrow().clone();
    let running: std::collections::BTreeSet<String> = hello
        .running
        .iter()
        .filter_map(|n| shared.catalog.resolve(n))
        .filter(|e| routes.get(&e.name).map_or(0, |r| r.ready.len()) < e.max_replicas.max(1) as usize)
        .map(|e| e.name.clone())
        .collect();
    let urls = super::assignment::placed_urls(&shared.catalog, &running, &hello.advertise_address);
    // Without an address (tunnel workers) the URL stays empty: the tunnel needs none.
    let adopt: std::collections::BTreeMap<String, String> = running
        .iter()
        .map(|n| (n.clone(), urls.get(n).cloned().unwrap_or_default()))
        .collect();
    let reg = match registry.register(&hello, link.clone(), &adopt, certified.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            let (reason, status) = match e {
                RegisterError::Full(_) => ("full", Status::resource_exhausted(e.to_string())),
                RegisterError::InstanceLive(_) => ("instance_live", Status::already_exists(e.to_string())),
                RegisterError::NotYours { .. } => {
                    warn!(worker = %hello.name, error = %e, "refused a Hello that claims another worker");
                    ("not_yours", Status::permission_denied(e.to_string()))
                }
            };
            shared.metrics.refused(reason);
            send(&tx, Err(status)).await;
            return;
        }
    };
    let (id, name, generation) = (reg.worker_id.clone(), reg.name.clone(), reg.generation);
    let cfg = &shared.config;
    let welcome = Welcome {
        worker_id: reg.worker_id,
        resume_token: reg.resume_token,
        keepalive_interval_ms: cfg.keepalive_interval.as_millis() as u64,
        heartbeat_timeout_ms: cfg.heartbeat_timeout.as_millis() as u64,
        worker_timeout_ms: cfg.worker_timeout.as_millis() as u64,
        resumed: reg.resumed,
    };
    info!(worker = %name, worker_id = %id, resumed = reg.resumed, "session open");
    shared.metrics.session(reg.resumed);
    let declared: Vec<(String, String)> = hello.services.iter().map(|d| (d.name.clone(), d.url.clone())).collect();
    let assignment = super::assignment::build(&shared.catalog, reg.assignment_version, &reg.placed, &declared);
    let reason = if !send(&tx, msg(Out::Welcome(welcome))).await || !send(&tx, msg(Out::Assignment(assignment))).await {
        "could not send Welcome".to_string()
    } else {
        let session = Session {
            id: &id,
            name: &name,
            generation,
            certified: certified.is_some(),
        };
        serve(&shared, &session, &mut inbound, &tx, &link, &mut notices).await
    };
    info!(worker = %name, worker_id = %id, %reason, "session closed");
    registry.disconnect(&id, generation, &reason);
}

/// A new certificate for the session's worker, for the key in `csr_pem`.
fn renew(shared: &ControlShared, session: &Session<'_>, csr_pem: &str) -> Certificate {
    let refused = |error: String| Certificate {
        error,
        ..Default::default()
    };
    if !session.certified {
        return refused("this session has no client certificate to renew: join with a join token".into());
    }
    match shared.security.sign(csr_pem, session.id, session.name) {
        Ok((certificate_pem, not_after)) => {
            info!(worker = %session.name, worker_id = %session.id, "renewed the worker's certificate");
            Certificate {
                certificate_pem,
                not_after: Some(prost_types::Timestamp {
                    seconds: not_after,
                    nanos: 0,
                }),
                error: String::new(),
            }
        }
        Err(e) => refused(e),
    }
}

/// Who the steady state serves.
struct Session<'a> {
    id: &'a str,
    name: &'a str,
    generation: u64,
    /// The stream came with the worker's client certificate.
    certified: bool,
}

/// The steady state. Returns why the session ended.
async fn serve(
    shared: &ControlShared,
    session: &Session<'_>,
    inbound: &mut Streaming<WorkerMessage>,
    tx: &Outbox,
    link: &SessionLink,
    notices: &mut mpsc::UnboundedReceiver<Notice>,
) -> String {
    let registry = &shared.registry;
    let (id, generation) = (session.id, session.generation);
    loop {
        tokio::select! {
            biased;
            notice = notices.recv() => match notice {
                Some(Notice::Drain(reason)) => {
                    if !send(tx, msg(Out::Drain(Drain { reason }))).await {
                        return "worker not reading its stream".into();
                    }
                }
                Some(Notice::Assign(a)) => {
                    if !send(tx, msg(Out::Assignment(a))).await {
                        return "worker not reading its stream".into();
                    }
                }
                Some(Notice::Close(reason)) => {
                    send(tx, msg(Out::Goodbye(Goodbye { reason: reason.clone() }))).await;
                    return reason;
                }
                None => return "registry dropped the session".into(),
            },
            m = inbound.message() => match m {
                Ok(Some(m)) => {
                    shared.metrics.heartbeat();
                    if link.heard(registry.clock().now_ms()) {
                        registry.refresh(id);
                    }
                    match m.msg {
                        Some(In::Keepalive(k)) => {
                            if k.last_rtt_micros > 0 {
                                // A peer's figure: bounded before it is counted.
                                let rtt = k.last_rtt_micros.min(MAX_REPORTED_RTT_MICROS);
                                shared.metrics.keepalive_rtt(std::time::Duration::from_micros(rtt));
                            }
                            // Acks are informational; a worker that does not
                            // read them loses acks, never the session.
                            let _ = tx.try_send(msg(Out::KeepaliveAck(KeepaliveAck { seq: k.seq })));
                        }
                        Some(In::ServiceStatus(mut s)) => {
                            // Reported under the name the worker declared it by.
                            catalog_name(shared, &mut s.service);
                            let managed = shared.catalog.resolve(&s.service).is_some();
                            registry.service_status(id, generation, s, managed)
                        }
                        Some(In::RenewCertificate(r)) => {
                            let answer = renew(shared, session, &r.csr_pem);
                            if !send(tx, msg(Out::Certificate(answer))).await {
                                return "worker not reading its stream".into();
                            }
                        }
                        Some(In::Hello(_)) => {
                            let st = Status::failed_precondition("Hello may be sent only once per stream");
                            send(tx, Err(st)).await;
                            return "second Hello on one stream".into();
                        }
                        None => {}
                    }
                }
                Ok(None) => return "stream closed by worker".into(),
                Err(status) => {
                    if status.code() == tonic::Code::OutOfRange || status.code() == tonic::Code::ResourceExhausted {
                        warn!(worker_id = %id, message = status.message(), "refused an oversized message");
                        send(tx, Err(status.clone())).await;
                    }
                    return format!("stream broken: {}", status.message());
                }
            },
        }
    }
}
