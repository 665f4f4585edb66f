//! This coordinator as a member of its cluster: one etcd lease, renewed at
//! a third of its TTL, and a key for itself on it (`coordinators/{id}`).
//! The lease is the coordinator's liveness as the cluster sees it; what it
//! holds (its own key, later its workers' session keys) vanishes with it.
//!
//! Keepalives from workers never reach etcd: this lease is the only thing
//! renewed, once per TTL/3 per coordinator, whatever the fleet's size.
//!
//! When etcd cannot be reached the member says so (`link`) and keeps
//! trying; the coordinator goes on serving what it holds. If the lease
//! expired meanwhile, a new one is granted and the member's keys are
//! written again; `epoch` counts the leases, so that what else was on the
//! old one can be written again too.

use super::config::ClusterConfig;
use super::error::ClusterError;
use super::keys::Keys;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Bound on each etcd request: a member never waits longer than this to
/// learn that etcd is unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a starting coordinator waits for etcd before giving up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a coordinator key's value read from etcd.
const MAX_INFO_BYTES: usize = 4096;

/// What a coordinator's key says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorInfo {
    /// Where its peers reach it (`http://host:port`).
    pub peer: String,
    pub version: String,
    pub started_unix_ms: u64,
}

/// Whether this coordinator can reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The last lease renewal was answered.
    Up,
    /// It was not; since when (Unix ms), and why.
    Down { since_unix_ms: u64, error: String },
}

impl Link {
    pub fn is_up(&self) -> bool {
        matches!(self, Link::Up)
    }
}

/// Why renewals stopped.
enum Stopped {
    Shutdown,
    Failed(String),
    /// etcd answered: the lease is gone.
    Expired,
}

/// One coordinator's membership of its cluster.
pub struct Member {
    id: String,
    info: CoordinatorInfo,
    keys: Keys,
    endpoints: String,
    client: Client,
    /// The same endpoints without the per-request timeout: for the one call
    /// that waits as long as it must (the election campaign; a timed-out
    /// campaign withdraws the candidate and puts it back, two writes each).
    patient: Client,
    ttl: Duration,
    lease: AtomicI64,
    link: watch::Sender<Link>,
    /// Bumped each time a new lease replaces an expired one.
    epoch: watch::Sender<u64>,
    /// Every live coordinator of the cluster (this one included).
    peers: watch::Sender<Arc<BTreeMap<String, CoordinatorInfo>>>,
    /// Placement leader or follower ([`super::leader`] keeps it).
    role: watch::Sender<super::role::Role>,
    metrics: Arc<crate::metrics::ClusterMetrics>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Member {
    /// Connects to etcd, takes a lease and claims this coordinator's key.
    /// Fails, with a message naming the endpoints, when etcd does not
    /// answer within [`JOIN_TIMEOUT`], or when a live coordinator holds the
    /// id for longer than a lease TTL (a crashed one's key expires by then).
    /// `tls`: this coordinator's port speaks TLS, so peers dial it at `https://`.
    pub async fn join(
        config: &ClusterConfig,
        listen: SocketAddr,
        tls: bool,
        metrics: Arc<crate::metrics::ClusterMetrics>,
    ) -> Result<Arc<Member>, ClusterError> {
        let id = super::identity::coordinator_id(config)?;
        let peer = super::identity::advertise_peer(config, listen, tls)?;
        let etcd_tls = super::etcd_tls::options(config)?;
        let endpoints = config.etcd.join(",");
        if config.etcd_lease_ttl < Duration::from_secs(2) {
            return Err(ClusterError::Config("--etcd-lease-ttl must be at least 2s".into()));
        }
        let etcd = |source| ClusterError::Etcd {
            endpoints: endpoints.clone(),
            source,
        };
        let mut patient_options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), REQUEST_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = etcd_tls {
            patient_options = patient_options.with_tls(tls);
        }
        let options = patient_options.clone().with_timeout(REQUEST_TIMEOUT);
        let unreachable = || ClusterError::Unreachable {
            endpoints: endpoints.clone(),
            waited: JOIN_TIMEOUT,
        };
        let client = tokio::time::timeout(JOIN_TIMEOUT, Client::connect(&config.etcd, Some(options)))
            .await
            .map_err(|_| unreachable())?
            .map_err(etcd)?;
        let patient = tokio::time::timeout(JOIN_TIMEOUT, Client::connect(&config.etcd, Some(patient_options)))
            .await
            .map_err(|_| unreachable())?
            .map_err(etcd)?;
        let member = Member {
            keys: Keys::new(&config.cluster),
            info: CoordinatorInfo {
                peer,
                version: env!("CARGO_PKG_VERSION").into(),
                started_unix_ms: unix_ms(),
            },
            id,
            endpoints: endpoints.clone(),
            client,
            patient,
            ttl: config.etcd_lease_ttl,
            lease: AtomicI64::new(0),
            link: watch::channel(Link::Up).0,
            epoch: watch::channel(0).0,
            peers: watch::channel(Arc::new(BTreeMap::new())).0,
            role: watch::channel(super::role::Role::Follower).0,
            metrics,
        };
        // A restarted coordinator may find its previous run's key, on a
        // lease that expires within one TTL: wait that long, no longer.
        let deadline = tokio::time::Instant::now() + member.ttl + REQUEST_TIMEOUT;
        loop {
            let lease = tokio::time::timeout(JOIN_TIMEOUT, member.grant())
                .await
                .map_err(|_| unreachable())?
                .map_err(etcd)?;
            match member.claim(lease).await.map_err(etcd)? {
                true => break,
                false => {
                    member.revoke(lease).await;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ClusterError::IdTaken(member.id.clone()));
                    }
                    info!(coordinator = %member.id, "this id's key is still held (a previous run's lease?); waiting for it to expire");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        member.list_peers().await.map_err(etcd)?;
        info!(coordinator = %member.id, peer = %member.info.peer, etcd = %endpoints, cluster = %member.keys.root(), "joined the cluster");
        Ok(Arc::new(member))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn info(&self) -> &CoordinatorInfo {
        &self.info
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// An etcd client (cheap to clone: one shared channel).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client whose calls have no deadline, for the ones that wait.
    pub fn patient_client(&self) -> Client {
        self.patient.clone()
    }

    /// The current lease, for keys that must vanish with this coordinator.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }

    pub fn epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    pub fn peers(&self) -> watch::Receiver<Arc<BTreeMap<String, CoordinatorInfo>>> {
        self.peers.subscribe()
    }

    pub fn role(&self) -> watch::Receiver<super::role::Role> {
        self.role.subscribe()
    }

    /// Where the cluster's parts count etcd errors and leadership.
    pub fn metrics(&self) -> &crate::metrics::ClusterMetrics {
        &self.metrics
    }

    pub(super) fn role_sender(&self) -> &watch::Sender<super::role::Role> {
        &self.role
    }

    pub fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    async fn grant(&self) -> Result<i64, etcd_client::Error> {
        let ttl = self.ttl.as_secs().max(1) as i64;
        let lease = self.client.clone().lease_grant(ttl, None).await?.id();
        self.lease.store(lease, Ordering::Release);
        Ok(lease)
    }

    async fn revoke(&self, lease: i64) {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.client.clone().lease_revoke(lease)).await;
    }

    /// Puts this coordinator's key on `lease` unless another lease holds it.
    async fn claim(&self, lease: i64) -> Result<bool, etcd_client::Error> {
        let key = self.keys.coordinator(&self.id);
        let value = serde_json::to_vec(&self.info).expect("plain data serializes");
        let put = TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(lease)));
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([put.clone()])
            // Ours already (a renewal after etcd came back): write it again.
            .or_else([TxnOp::txn(
                Txn::new()
                    .when([Compare::lease(key, CompareOp::Equal, lease)])
                    .and_then([put]),
            )]);
        let r = self.client.clone().txn(txn).await?;
        if r.succeeded() {
            return Ok(true);
        }
        Ok(r.op_responses().into_iter().any(|op| match op {
            etcd_client::TxnOpResponse::Txn(t) => t.succeeded(),
            _ => false,
        }))
    }

    fn set_link(&self, link: Link) {
        self.link.send_if_modified(|l| {
            let changed = l.is_up() != link.is_up();
            if changed {
                match &link {
                    Link::Up => info!(coordinator = %self.id, "etcd reachable again"),
                    Link::Down { error, .. } => warn!(coordinator = %self.id, etcd = %self.endpoints, %error, "etcd unreachable; serving the workers this coordinator holds"),
                }
                *l = link;
            }
            changed
        });
    }

    /// Keeps the lease alive and the peer list current until `shutdown`,
    /// then gives the lease back (every key on it vanishes at once, rather
    /// than a TTL later).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let peers = tokio::spawn(self.clone().watch_peers(shutdown.clone()));
        self.keep_alive(&shutdown).await;
        peers.abort();
        self.revoke(self.lease()).await;
        info!(coordinator = %self.id, "left the cluster (lease revoked)");
    }

    async fn keep_alive(&self, shutdown: &CancellationToken) {
        let every = self.ttl / 3;
        let mut backoff = Duration::from_millis(200);
        loop {
            let error = match self.renew(every, shutdown).await {
                Stopped::Shutdown => return,
                Stopped::Expired => match self.replace_lease().await {
                    Ok(()) => {
                        backoff = Duration::from_millis(200);
                        continue;
                    }
                    Err(e) => e,
                },
                Stopped::Failed(e) => e,
            };
            self.metrics.etcd_error("lease");
            debug!(coordinator = %self.id, %error, "lease renewal failed; retrying");
            self.set_link(Link::Down {
                since_unix_ms: unix_ms(),
                error,
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(every);
        }
    }

    /// Renews the lease every `every` until shutdown, a failure, or etcd
    /// saying the lease is gone.
    async fn renew(&self, every: Duration, shutdown: &CancellationToken) -> Stopped {
        let failed = |what: &str, e: &dyn std::fmt::Display| Stopped::Failed(format!("lease keepalive: {what}{e}"));
        let lease = self.lease();
        let (mut keeper, mut answers) =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.client.clone().lease_keep_alive(lease)).await {
                Err(_) => return failed("", &"no answer"),
                // etcd-client reads the first answer itself and turns a TTL
                // of 0 (the lease expired while etcd was out of reach) into
                // this error, not an answer.
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                    return Stopped::Expired
                }
                Ok(Err(e)) => return failed("", &e),
                Ok(Ok(k)) => k,
            };
        loop {
            let asked = std::time::Instant::now();
            if let Err(e) = keeper.keep_alive().await {
                return failed("", &e);
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, answers.message()).await {
                Err(_) => return failed("", &"no answer"),
                Ok(Err(e)) => return failed("", &e),
                Ok(Ok(None)) => return failed("", &"stream closed"),
                Ok(Ok(Some(a))) if a.ttl() <= 0 => return Stopped::Expired,
                Ok(Ok(Some(_))) => {
                    self.metrics.lease_renewed(asked.elapsed());
                    self.set_link(Link::Up)
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Stopped::Shutdown,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// The lease expired while etcd was out of reach (others may have taken
    /// what was on it): a new lease, this coordinator's key on it again,
    /// and `epoch` bumped for the rest.
    async fn replace_lease(&self) -> Result<(), String> {
        warn!(coordinator = %self.id, "this coordinator's lease expired while etcd was out of reach; taking a new one");
        let lease = self.grant().await.map_err(|e| format!("lease grant: {e}"))?;
        if !self.claim(lease).await.map_err(|e| format!("claim: {e}"))? {
            self.revoke(lease).await;
            return Err(format!("coordinator id `{}` is held by another coordinator", self.id));
        }
        self.epoch.send_modify(|e| *e += 1);
        self.set_link(Link::Up);
        Ok(())
    }

    /// Reads every coordinator's key; returns the revision read at.
    async fn list_peers(&self) -> Result<i64, etcd_client::Error> {
        let prefix = self.keys.coordinators();
        let r = self
            .client
            .clone()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut peers = BTreeMap::new();
        for kv in r.kvs() {
            if let Some((id, info)) = self.parse_peer(&prefix, kv.key(), kv.value()) {
                peers.insert(id, info);
            }
        }
        self.peers.send_replace(Arc::new(peers));
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    fn parse_peer(&self, prefix: &str, key: &[u8], value: &[u8]) -> Option<(String, CoordinatorInfo)> {
        let id = self.keys.id_in(prefix, key)?;
        if value.len() > MAX_INFO_BYTES {
            return None;
        }
        let info = serde_json::from_slice(value).ok()?;
        Some((id.to_string(), info))
    }

    /// Follows `coordinators/`: a list, then a watch from just after it;
    /// on any failure, a fresh list.
    async fn watch_peers(self: Arc<Self>, shutdown: CancellationToken) {
        let prefix = self.keys.coordinators();
        loop {
            let _ = self.follow_peers(&prefix).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn follow_peers(&self, prefix: &str) -> Result<(), etcd_client::Error> {
        let rev = self.list_peers().await?;
        let options = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
        let mut stream = self.client.clone().watch(prefix.to_string(), Some(options)).await?;
        while let Some(resp) = stream.message().await? {
            if resp.canceled() {
                return Ok(());
            }
            self.peers.send_modify(|peers| {
                let peers = Arc::make_mut(peers);
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    match ev.event_type() {
                        etcd_client::EventType::Put => {
                            if let Some((id, info)) = self.parse_peer(prefix, kv.key(), kv.value()) {
                                peers.insert(id, info);
                            }
                        }
                        etcd_client::EventType::Delete => {
                            if let Some(id) = self.keys.id_in(prefix, kv.key()) {
                                peers.remove(id);
                            }
                        }
                    }
                }
            });
        }
        Ok(())
    }
}
