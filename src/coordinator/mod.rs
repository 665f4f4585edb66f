//! The coordinator: one port that speaks gRPC (WorkerControl, Admin,
//! grpc.health.v1, reflection v1 and v1alpha) and HTTP (`/health`,
//! `/api/admin/*`, the `/service/` proxy). [`front`] tells the protocols
//! apart: HTTP/2 goes to the tonic server, HTTP/1 is served there.
//!
//! [`Coordinator::serve`] takes a bound listener and a shutdown token, so
//! tests run the real server on `127.0.0.1:0`.

mod admin;
mod admin_credentials;
mod assignment;
mod catalog_views;
mod config;
mod conn;
mod control;
mod dashboard;
mod enroll;
mod event_frames;
mod event_notes;
mod event_stream;
mod events;
mod front;
mod handshakes;
mod http;
mod listener;
mod metrics_gauges;
mod placement_loop;
mod security;
mod service_health;
mod session;
mod shared;
mod sniff;
mod tls_config;
mod tunnel;

pub use config::{parse_listen, ConfigError, CoordinatorConfig, DEFAULT_MAX_PENDING_HANDSHAKES_PER_ADDRESS};
pub use tls_config::TlsConfig;

use crate::auth::Secret;
use crate::catalog::Catalog;
use crate::proto::{self, admin_server::AdminServer, worker_control_server::WorkerControlServer};
use crate::proxy::{Proxy, ProxyConfig, ProxyService, SERVICE_PREFIX};
use crate::registry::{Registry, RegistryConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::{interceptor::InterceptedService, Routes};
use tonic_health::ServingStatus;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0}")]
    Security(#[from] security::SecurityError),
}

pub struct Coordinator {
    config: CoordinatorConfig,
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    /// With `--etcd`: sends the registry's fleet records to etcd, and the
    /// clock they are written with.
    writer: Option<(crate::cluster::Writer, crate::cluster::record_codec::Times)>,
    security: Arc<security::Security>,
    metrics: Arc<crate::metrics::CoordinatorMetrics>,
}

impl Coordinator {
    pub fn new(mut config: CoordinatorConfig) -> Result<Self, CoordinatorError> {
        config.validate()?;
        // Settled once: the registry's records and the cluster membership
        // name the same coordinator.
        if config.cluster.enabled() {
            config.cluster.coordinator_id = Some(crate::cluster::coordinator_id(&config.cluster)?);
        }
        let registry_config = RegistryConfig {
            heartbeat_timeout: config.heartbeat_timeout,
            worker_timeout: config.worker_timeout,
            max_workers: config.max_workers,
        };
        // Clustered, fleet records live in etcd (mirrored in memory);
        // alone, in memory only.
        let (registry, writer) = if config.cluster.enabled() {
            let zero_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let times = crate::cluster::record_codec::Times { zero_unix_ms };
            let me = config.cluster.coordinator_id.clone().unwrap_or_default();
            let (store, writer) =
                crate::cluster::EtcdFleet::new(crate::cluster::Keys::new(&config.cluster.cluster), times, me.clone());
            let registry = Registry::with_store(registry_config, Box::new(store));
            registry.set_coordinator_id(me);
            (registry, Some((writer, times)))
        } else {
            (Registry::new(registry_config), None)
        };
        let registry = Arc::new(registry);
        let catalog = Arc::new(match &config.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::embedded(),
        });
        let security = Arc::new(security::Security::build(&config)?);
        let metrics = Arc::new(crate::metrics::CoordinatorMetrics::new(metrics_gauges::gauges(
            registry.clone(),
            catalog.clone(),
            security.clone(),
            config.metrics_per_worker,
        )));
        registry.count_into(metrics.fleet.clone());
        Ok(Coordinator {
            config,
            registry,
            catalog,
            writer,
            security,
            metrics,
        })
    }

    /// This coordinator's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<crate::metrics::CoordinatorMetrics> {
        self.metrics.clone()
    }

    /// The registry behind this coordinator (for embedding and tests).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Serves until `shutdown` is cancelled, then shuts down gracefully:
    /// health goes NOT_SERVING, every worker stream is told goodbye, and
    /// connections still open after the grace period are cut.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<(), CoordinatorError> {
        let cfg = self.config;
        let registry = self.registry;
        let catalog = self.catalog;
        let security = self.security;
        let metrics = self.metrics;
        let local = listener.local_addr()?;
        let closing = CancellationToken::new();
        // Joined before anything is served: a coordinator that cannot reach
        // its cluster's etcd says so and stops, rather than serve alone.
        let member = match cfg.cluster.enabled() {
            true => Some(
                crate::cluster::Member::join(&cfg.cluster, local, security.server.is_some(), metrics.cluster.clone())
                    .await?,
            ),
            false => None,
        };
        let leave = CancellationToken::new();
        let membership = member.clone().map(|m| tokio::spawn(m.run(leave.clone())));
        let stop_writing = CancellationToken::new();
        let writing = match (&member, self.writer) {
            (Some(m), Some((w, times))) => {
                let (reg, cat) = (registry.clone(), catalog.clone());
                let apply: crate::cluster::ApplyPlacement = Arc::new(move |worker_id, placed| {
                    if reg.holds(worker_id) {
                        placement_loop::apply(&reg, &cat, worker_id, placed);
                    }
                });
                let (reg, sec) = (registry.clone(), security.clone());
                let revoked: crate::cluster::LearnRevocation = Arc::new(move |worker_id, at| {
                    admin_credentials::learn_revocation(&reg, &sec, worker_id, at);
                });
                let watcher =
                    crate::cluster::Watcher::new(m.clone(), registry.clone(), times, apply).with_revocations(revoked);
                let _ = security.cluster.set(m.clone());
                tokio::spawn(crate::cluster::leader::run(m.clone(), leave.clone()));
                tokio::spawn(crate::cluster::compact::run(
                    m.clone(),
                    cfg.cluster.etcd_compact_interval,
                    closing.clone(),
                ));
                tokio::spawn(watcher.run(closing.clone()));
                if cfg.cluster.cluster_secret.as_deref().is_some_and(|s| !s.is_empty()) {
                    tokio::spawn(follow_peers(m.clone(), registry.clone(), closing.clone()));
                } else {
                    warn!(
                        "no --cluster-secret: tunnel replicas held by other coordinators are reached only through them"
                    );
                }
                Some(tokio::spawn(w.run(m.clone(), stop_writing.clone(), cfg.shutdown_grace)))
            }
            _ => None,
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        for svc in ["", proto::WORKER_CONTROL_SERVICE] {
            health.set_service_status(svc, ServingStatus::Serving).await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let shared = Arc::new(shared::ControlShared {
            registry: registry.clone(),
            catalog: catalog.clone(),
            config: cfg.clone(),
            handshakes: handshakes::Handshakes::new(cfg.max_pending_handshakes, cfg.max_pending_handshakes_per_address),
            security: security.clone(),
            metrics: metrics.fleet.clone(),
        });
        let control = InterceptedService::new(
            WorkerControlServer::new(control::ControlService::new(shared))
                .max_decoding_message_size(cfg.max_message_bytes)
                .max_encoding_message_size(cfg.max_message_bytes),
            control::Gate::new(closing.clone(), Secret::new(cfg.join_token.as_deref()))
                .with_certificates(security.revoked.clone(), security.require_client_cert)
                .with_metrics(metrics.fleet.clone()),
        );
        let enrollment = crate::proto::enrollment_server::EnrollmentServer::new(enroll::EnrollService {
            registry: registry.clone(),
            security: security.clone(),
        })
        .max_decoding_message_size(64 * 1024);
        let admin = AdminServer::with_interceptor(
            admin::AdminService::new(registry.clone(), catalog.clone(), closing.clone(), security.clone()),
            admin_credentials::interceptor(security.admin.clone()),
        );
        let proxy = Proxy::new(
            registry.routes(),
            catalog.clone(),
            ProxyConfig {
                timeout: cfg.proxy_timeout,
                connect_timeout: cfg.proxy_connect_timeout,
                retries: cfg.proxy_retries,
                peer_secret: crate::auth::SharedSecret::new(cfg.cluster.cluster_secret.as_deref()),
                service_tls: security.service_tls.clone(),
                peer_tls: security.peer_tls.clone(),
                metrics: (!cfg.no_proxy_metrics).then(|| metrics.proxy.clone()),
                ..ProxyConfig::default()
            },
        );
        let http = http::router(http::HttpState {
            registry: registry.clone(),
            catalog: catalog.clone(),
            admin: security.admin.clone(),
            closing: closing.clone(),
            member: member.clone(),
            metrics: metrics.clone(),
        })
        .route_service(SERVICE_PREFIX, ProxyService::http(proxy.clone()))
        .route_service(&format!("{SERVICE_PREFIX}/"), ProxyService::http(proxy.clone()))
        .route_service(
            &format!("{SERVICE_PREFIX}/{{*rest}}"),
            ProxyService::http(proxy.clone()),
        );
        let grpc = Routes::new(control)
            .add_service(enrollment)
            .add_service(admin)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        // Whatever no route claims: gRPC calls for catalog services, proxied.
        let router = grpc
            .into_axum_router()
            .merge(http)
            .fallback_service(ProxyService::grpc(proxy.clone()));
        let routes = Routes::from(router.clone());

        let stop_server = CancellationToken::new();
        let front = Arc::new(front::Front {
            proxy: ProxyService::http(proxy),
            router,
            first_byte_timeout: cfg.handshake_timeout,
            header_timeout: cfg.http_idle_timeout,
            fast_path: cfg.http1_fast_path,
            tls: security.server.clone(),
            metrics: Some(metrics.fleet.clone()),
        });
        if let Some(tls) = &security.server {
            tokio::spawn(tls.clone().watch(crate::tls::server::RELOAD_POLL, closing.clone()));
        }
        let stop_front = front::Stop {
            drain: stop_server.clone(),
            cut: CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
        };
        let _cut_on_return = stop_front.cut.clone().drop_guard();
        let incoming = front::spawn(listener, cfg.max_connections, front, stop_front.clone());
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(cfg.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(cfg.http2_keepalive_timeout))
            .max_concurrent_streams(Some(cfg.max_streams_per_connection))
            // The same bound on request heads as HTTP/1's (431 past it).
            .http2_max_header_list_size(crate::proxy::MAX_REQUEST_HEAD as u32)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, stop_server.clone().cancelled_owned());
        let mut server = tokio::spawn(server);
        let clock = tokio::spawn(health_clock(registry.clone(), closing.clone()));
        match &member {
            // In a cluster, only the elected leader places.
            Some(m) => tokio::spawn(placement_loop::run_clustered(
                registry.clone(),
                catalog.clone(),
                cfg.placement_grace,
                cfg.cluster.failover_grace,
                m.clone(),
                closing.clone(),
            )),
            None => tokio::spawn(placement_loop::run(
                registry.clone(),
                catalog.clone(),
                cfg.placement_grace,
                closing.clone(),
            )),
        };
        tokio::spawn(service_health::run(
            registry.routes(),
            catalog.clone(),
            health.clone(),
            closing.clone(),
        ));
        if let Some(at) = cfg.metrics_listen {
            let listener = TcpListener::bind(at).await?;
            info!(listen = %listener.local_addr()?, "serving /metrics");
            let m = metrics.clone();
            tokio::spawn(crate::metrics::serve::apart(
                listener,
                Arc::new(move || m.encode()),
                closing.clone(),
            ));
        }
        info!(listen = %local, tls = security.server.is_some(), "coordinator serving gRPC and HTTP");

        tokio::select! {
            _ = shutdown.cancelled() => {}
            res = &mut server => {
                closing.cancel();
                clock.abort();
                stop_writing.cancel();
                leave.cancel();
                return match res {
                    Ok(r) => r.map_err(Into::into),
                    Err(join) => Err(std::io::Error::other(join).into()),
                };
            }
        }
        info!("shutting down: health NOT_SERVING, telling workers");
        for svc in ["", proto::WORKER_CONTROL_SERVICE] {
            health.set_service_status(svc, ServingStatus::NotServing).await;
        }
        closing.cancel();
        registry.close_all("coordinator shutting down");
        stop_server.cancel();
        stop_front.tasks.close();
        // Both servers get the grace: tonic's connections, and the HTTP/1
        // ones finishing the request they were serving.
        let drained = async {
            let r = (&mut server).await;
            stop_front.tasks.wait().await;
            r
        };
        let res = match tokio::time::timeout(cfg.shutdown_grace, drained).await {
            Ok(Ok(r)) => r.map_err(Into::into),
            Ok(Err(join)) => Err(std::io::Error::other(join).into()),
            Err(_) => {
                warn!(grace = ?cfg.shutdown_grace, "connections still open after the grace period; closing them");
                server.abort();
                stop_front.cut.cancel();
                Ok(())
            }
        };
        clock.abort();
        // The sessions' last changes go to etcd, then the lease is given
        // back, so that this coordinator's keys vanish now rather than a
        // lease TTL later.
        stop_writing.cancel();
        if let Some(w) = writing {
            let _ = w.await;
        }
        leave.cancel();
        if let Some(m) = membership {
            let _ = m.await;
        }
        info!("coordinator stopped");
        res
    }
}

/// Keeps the registry's peer addresses current, for routes to the tunnel
/// replicas other coordinators hold.
async fn follow_peers(member: Arc<crate::cluster::Member>, registry: Arc<Registry>, closing: CancellationToken) {
    let mut peers = member.peers();
    loop {
        let map: std::collections::BTreeMap<String, String> = peers
            .borrow_and_update()
            .iter()
            .map(|(id, info)| (id.clone(), info.peer.clone()))
            .collect();
        registry.set_peers(&map);
        tokio::select! {
            () = closing.cancelled() => return,
            r = peers.changed() => if r.is_err() { return },
        }
    }
}

/// How often the health clock looks: fine enough to honour the heartbeat
/// timeout closely, coarse enough to cost nothing at fleet scale.
pub fn sweep_interval(heartbeat_timeout: Duration) -> Duration {
    (heartbeat_timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(500))
}

/// Sweeps the registry every [`sweep_interval`]. A tick that comes far too
/// late means this process was stopped (or starved) meanwhile: that time is
/// credited to the registry's clock before the sweep, so that workers are
/// not degraded or removed for a silence the coordinator caused itself
/// (their keepalives are waiting, unread, in its sockets).
async fn health_clock(registry: Arc<Registry>, closing: CancellationToken) {
    let every = sweep_interval(registry.config().heartbeat_timeout);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                if let Some(stall) = crate::registry::clock::stall_in(now - last, every) {
                    registry.clock().credit_stall(stall);
                    warn!(
                        stall = %crate::duration::format_short(stall),
                        "the coordinator did not run for a while (stopped, paused or starved); that time is not counted against its workers"
                    );
                }
                last = now;
                registry.sweep();
            }
            _ = closing.cancelled() => return,
        }
    }
}
