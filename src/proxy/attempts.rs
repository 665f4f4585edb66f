//! The attempt loop, one for both data planes: the hyper path
//! ([`super::Proxy::forward`]) and the HTTP/1 fast path ([`super::h1`]) each
//! say how to send one attempt to one replica ([`Attempt`]); this decides
//! which replica, how long an attempt may take, and whether a failed one is
//! tried again elsewhere.
//!
//! The rules, in one place so the fast path can never be weaker than the
//! path it shortcuts:
//! - a replica is picked by [`balance::pick`] (power of two choices, ejected
//!   replicas last) among those not yet tried;
//! - each attempt counts as in flight on its replica ([`InFlight`]) and gets
//!   the service's timeout, to the response head (504 past it, no retry: the
//!   request may be being processed);
//! - a failed connect ejects the replica for `eject_for`;
//! - a failure before any response byte is tried on another replica when
//!   the request may be replayed, a replica is left, the retry limit allows
//!   and the retry budget (20% of requests, at least 10 a second) has room;
//!   otherwise it is a 502 naming the worker.

use super::balance::{self, InFlight};
use super::ProxyError;
use crate::routes::{Endpoint, ServiceRoutes};
use crate::upstream::SendFailure;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::{debug, warn};

/// How one attempt is made: the caller's half of the loop.
pub(crate) trait Attempt {
    /// What a finished attempt gives back: a response, or a final answer
    /// that must not be retried (the caller decides what it means).
    type Output;

    /// Sends the request to `ep`. `in_flight` counts it as busy there and
    /// goes wherever the response body goes. `Err`: no response byte came,
    /// and the loop decides whether to try another replica.
    fn attempt(
        &mut self,
        ep: &Arc<Endpoint>,
        in_flight: InFlight,
    ) -> impl Future<Output = Result<Self::Output, SendFailure>> + Send;
}

/// The proxy-wide half: limits, the budget, and the clock ejections use.
pub(crate) struct RetryPolicy {
    /// Extra attempts per request, on other replicas.
    pub retries: u32,
    /// How long a replica that refused a connection gets no traffic.
    pub eject_for: Duration,
    budget: TpsBudget,
    /// Ejection deadlines are milliseconds since this.
    epoch: Instant,
}

impl RetryPolicy {
    pub fn new(retries: u32, eject_for: Duration) -> Self {
        RetryPolicy {
            retries,
            eject_for,
            // Retries may add 20% to the load, and at least 10 per second.
            budget: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            epoch: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// One request's attempts.
pub(crate) struct Attempts<'a> {
    pub policy: &'a RetryPolicy,
    pub service: &'a str,
    pub routes: &'a ServiceRoutes,
    /// To the response head, per attempt.
    pub timeout: Duration,
    /// The request can be sent again (no body, or a body kept whole).
    pub replayable: bool,
    pub request_id: &'a str,
    /// Where retries and failed attempts are counted.
    pub metrics: Option<&'a crate::metrics::ProxyMetrics>,
    /// How the last attempt went (a [`ViaCode`]), for the request's metrics.
    pub via: &'a ViaCode,
}

/// How a request reached its replica, kept where the caller reads it after
/// the loop (an atomic: the loop's future must stay `Send`).
#[derive(Debug, Default)]
pub(crate) struct ViaCode(std::sync::atomic::AtomicU8);

impl ViaCode {
    fn set(&self, via: &crate::routes::Via) {
        let code = match via {
            crate::routes::Via::Direct => 1,
            crate::routes::Via::Tunnel(_) => 2,
            crate::routes::Via::Peer => 3,
        };
        self.0.store(code, Ordering::Relaxed);
    }

    /// The label value: `none` until an attempt was made.
    pub fn label(&self) -> &'static str {
        use crate::metrics::proxy::via;
        match self.0.load(Ordering::Relaxed) {
            1 => via::DIRECT,
            2 => via::TUNNEL,
            3 => via::PEER,
            _ => via::NONE,
        }
    }
}

impl Attempts<'_> {
    /// Whether a failed attempt may be followed by another: the caller
    /// keeps what a second attempt needs (headers, body) only then.
    pub fn may_retry(&self) -> bool {
        self.replayable && self.routes.ready.len() > 1 && self.policy.retries > 0
    }

    /// Runs attempts until one finishes, or the request fails for good.
    pub async fn run<A: Attempt>(&self, a: &mut A) -> Result<A::Output, ProxyError> {
        let policy = self.policy;
        policy.budget.deposit();
        let may_retry = self.may_retry();
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        loop {
            let Some(ep) = balance::pick(&self.routes.ready, &tried, policy.now_ms()) else {
                unreachable!("retry stops before running out of replicas")
            };
            let in_flight = InFlight::start(&ep);
            self.via.set(&ep.via);
            let failure = match tokio::time::timeout(self.timeout, a.attempt(&ep, in_flight)).await {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    if let Some(m) = self.metrics {
                        m.upstream_error(self.service, "timeout");
                    }
                    warn!(service = self.service, worker = %ep.worker_name, timeout = ?self.timeout, request_id = self.request_id, "upstream timed out");
                    return Err(ProxyError::Timeout {
                        service: self.service.to_string(),
                        worker: ep.worker_name.clone(),
                        timeout: crate::duration::format_short(self.timeout),
                    });
                }
            };
            if let Some(m) = self.metrics {
                m.upstream_error(self.service, if failure.is_connect() { "connect" } else { "reset" });
            }
            if failure.is_connect() {
                let until = policy.now_ms() + policy.eject_for.as_millis() as u64;
                ep.load.ejected_until_ms.store(until, Ordering::Relaxed);
            }
            tried.push(ep.clone());
            let others_left = self
                .routes
                .ready
                .iter()
                .any(|r| !tried.iter().any(|t| Arc::ptr_eq(t, r)));
            let retry = may_retry && others_left && tried.len() <= policy.retries as usize && policy.budget.withdraw();
            let detail = failure.detail();
            warn!(service = self.service, worker = %ep.worker_name, error = %detail, retry, request_id = self.request_id, "upstream request failed");
            if !retry {
                return Err(ProxyError::Upstream {
                    service: self.service.to_string(),
                    worker: ep.worker_name.clone(),
                    detail,
                });
            }
            if let Some(m) = self.metrics {
                m.retry(self.service);
            }
            debug!(service = self.service, "retrying on another replica");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{EndpointLoad, Via};
    use tower::{Service, ServiceExt};
    use tower_test::mock;

    /// Replicas named `w0`, `w1`, ... .
    fn routes(n: usize) -> ServiceRoutes {
        let ready = (0..n)
            .map(|i| {
                Arc::new(Endpoint {
                    worker_id: format!("id{i}"),
                    worker_name: format!("w{i}"),
                    origin: format!("http://10.0.0.{i}:80").parse().unwrap(),
                    prefix: String::new(),
                    via: Via::Direct,
                    load: Arc::new(EndpointLoad::default()),
                })
            })
            .collect();
        ServiceRoutes {
            ready,
            ..ServiceRoutes::default()
        }
    }

    type Answer = Result<&'static str, SendFailure>;
    type Script = Vec<Result<&'static str, fn() -> SendFailure>>;
    type Handle = mock::Handle<String, Answer>;

    /// An attempt is a call to a mock service, which the test answers:
    /// the request is the replica's worker name.
    struct Mocked(mock::Mock<String, Answer>);

    impl Attempt for Mocked {
        type Output = &'static str;

        fn attempt(
            &mut self,
            ep: &Arc<Endpoint>,
            in_flight: InFlight,
        ) -> impl Future<Output = Result<&'static str, SendFailure>> + Send {
            let name = ep.worker_name.clone();
            let mut svc = self.0.clone();
            async move {
                let _in_flight = in_flight;
                let answer = svc.ready().await.unwrap().call(name).await.unwrap();
                answer
            }
        }
    }

    fn refused() -> SendFailure {
        SendFailure::connect(
            "10.0.0.9:80",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )
    }

    struct Setup {
        policy: RetryPolicy,
        routes: ServiceRoutes,
        registry: prometheus_client::registry::Registry,
        metrics: crate::metrics::ProxyMetrics,
        via: ViaCode,
    }

    impl Setup {
        fn new(replicas: usize, retries: u32) -> Self {
            let mut registry = prometheus_client::registry::Registry::with_prefix("edgeplane");
            let metrics = crate::metrics::ProxyMetrics::register(&mut registry);
            Setup {
                policy: RetryPolicy::new(retries, Duration::from_secs(5)),
                routes: routes(replicas),
                registry,
                metrics,
                via: ViaCode::default(),
            }
        }

        /// The exposition's sample lines that start with `prefix`.
        fn samples(&self, prefix: &str) -> Vec<String> {
            crate::metrics::encode(&self.registry)
                .lines()
                .filter(|l| l.starts_with(prefix))
                .map(String::from)
                .collect()
        }

        fn attempts(&self, replayable: bool) -> Attempts<'_> {
            Attempts {
                policy: &self.policy,
                service: "notes-coa",
                routes: &self.routes,
                timeout: Duration::from_secs(30),
                replayable,
                request_id: "rid",
                metrics: Some(&self.metrics),
                via: &self.via,
            }
        }
    }

    /// Runs one request against the mock; the handle answers its attempts.
    async fn run_with(
        setup: &Setup,
        replayable: bool,
        answers: impl FnOnce(Handle) -> tokio::task::JoinHandle<Vec<String>>,
    ) -> (Result<&'static str, ProxyError>, Vec<String>) {
        let (svc, handle) = mock::pair::<String, Answer>();
        let asked = answers(handle);
        let result = setup.attempts(replayable).run(&mut Mocked(svc)).await;
        (result, asked.await.unwrap())
    }

    /// Answers each attempt with the next of `script`, recording who was asked.
    fn script(script: Script) -> impl FnOnce(Handle) -> tokio::task::JoinHandle<Vec<String>> {
        move |mut handle| {
            tokio::spawn(async move {
                let mut asked = Vec::new();
                for answer in script {
                    let Some((worker, reply)) = handle.next_request().await else {
                        break;
                    };
                    asked.push(worker);
                    reply.send_response(answer.map_err(|f| f()));
                }
                asked
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connect_is_tried_on_another_replica_and_the_replica_ejected() {
        let setup = Setup::new(2, 2);
        let (result, asked) = run_with(&setup, true, script(vec![Err(refused), Ok("answer")])).await;
        assert_eq!(result.unwrap(), "answer");
        assert_eq!(asked.len(), 2);
        assert_ne!(asked[0], asked[1], "the second attempt goes to the other replica");
        let first = setup.routes.ready.iter().find(|e| e.worker_name == asked[0]).unwrap();
        let ejected_until = first.load.ejected_until_ms.load(Ordering::Relaxed);
        assert!(
            ejected_until >= setup.policy.now_ms() + 4_000,
            "ejected for about eject_for"
        );
        let second = setup.routes.ready.iter().find(|e| e.worker_name == asked[1]).unwrap();
        assert_eq!(second.load.ejected_until_ms.load(Ordering::Relaxed), 0);
        // One retry and one failed connect, counted once each.
        assert_eq!(
            setup.samples("edgeplane_proxy_retries_total"),
            [r#"edgeplane_proxy_retries_total{service="notes-coa"} 1"#]
        );
        assert_eq!(
            setup.samples("edgeplane_proxy_upstream_errors_total"),
            [r#"edgeplane_proxy_upstream_errors_total{service="notes-coa",kind="connect"} 1"#]
        );
        assert!(
            setup
                .routes
                .ready
                .iter()
                .all(|e| e.load.outstanding.load(Ordering::Relaxed) == 0),
            "nothing is left in flight"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_is_retried_without_ejecting() {
        let setup = Setup::new(2, 2);
        let reset = || SendFailure::reset("connection reset");
        let (result, asked) = run_with(&setup, true, script(vec![Err(reset), Ok("answer")])).await;
        assert_eq!(result.unwrap(), "answer");
        assert_eq!(asked.len(), 2);
        assert!(setup
            .routes
            .ready
            .iter()
            .all(|e| e.load.ejected_until_ms.load(Ordering::Relaxed) == 0));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_stop_at_the_retry_limit_with_the_last_workers_error() {
        let setup = Setup::new(4, 2);
        let (result, asked) = run_with(&setup, true, script(vec![Err(refused), Err(refused), Err(refused)])).await;
        assert_eq!(asked.len(), 3, "one attempt and two retries: {asked:?}");
        let distinct: std::collections::BTreeSet<_> = asked.iter().collect();
        assert_eq!(distinct.len(), 3, "never the same replica twice: {asked:?}");
        match result.unwrap_err() {
            ProxyError::Upstream { worker, detail, .. } => {
                assert_eq!(worker, asked[2]);
                assert!(detail.starts_with("connect to "), "{detail}");
            }
            e => panic!("{e:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_cannot_be_replayed_gets_one_attempt() {
        let setup = Setup::new(3, 2);
        let (result, asked) = run_with(&setup, false, script(vec![Err(refused)])).await;
        assert_eq!(asked.len(), 1);
        assert!(matches!(result, Err(ProxyError::Upstream { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn one_replica_means_no_retry() {
        let setup = Setup::new(1, 2);
        let (result, asked) = run_with(&setup, true, script(vec![Err(refused)])).await;
        assert_eq!(asked, ["w0"]);
        assert!(matches!(result, Err(ProxyError::Upstream { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_stops_retries() {
        // The floor (10 a second over the 10 s window) allows a reserve of
        // retries with no traffic at all; spend it.
        let setup = Setup::new(2, 1);
        let mut spent = 0;
        while setup.policy.budget.withdraw() {
            spent += 1;
            assert!(spent < 1000, "the budget has a bound");
        }
        assert!(spent >= 10, "the floor allowed {spent}");
        let (result, asked) = run_with(&setup, true, script(vec![Err(refused)])).await;
        assert_eq!(asked.len(), 1, "no retry without budget");
        assert!(matches!(result, Err(ProxyError::Upstream { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_the_timeout_is_a_504_and_not_retried() {
        let setup = Setup::new(2, 2);
        let (svc, mut handle) = mock::pair::<String, Answer>();
        let held = tokio::spawn(async move {
            // Takes the request and never answers.
            let (worker, reply) = handle.next_request().await.unwrap();
            let second = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
            drop(reply);
            (worker, matches!(second, Ok(Some(_))))
        });
        let started = Instant::now();
        let result = setup.attempts(true).run(&mut Mocked(svc)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(30),
            "the timeout, on the paused clock"
        );
        match result.unwrap_err() {
            ProxyError::Timeout { worker, timeout, .. } => {
                assert_eq!(timeout, "30s");
                let (asked, retried) = held.await.unwrap();
                assert_eq!(worker, asked);
                assert!(!retried, "a timed-out request is not sent again");
            }
            e => panic!("{e:?}"),
        }
    }
}
