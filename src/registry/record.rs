//! The worker record: what the fleet knows about one worker, and how a
//! Hello (first contact or a resumption) rewrites it.
//!
//! Everything here is *fleet state* (see [`super::fleet`]): it is what
//! another coordinator would need to route to, place on, or resume this
//! worker. What only the coordinator holding the worker's stream knows
//! (the link, the heartbeat clock, the tunnel sender) is in
//! [`super::local`].

use crate::proto::{self, Hello, ServiceState};
use crate::routes::Endpoint;
use std::collections::{BTreeMap, BTreeSet};

/// A service's origin and path prefix, parsed from its URL.
pub type Target = (http::Uri, String);

/// One service on one worker.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    pub state: ServiceState,
    pub message: String,
    /// As the worker declared it, or as placement built it; shown to operators.
    pub url: String,
    /// Parsed `url`: where the proxy sends this service's traffic. Derived,
    /// kept so that no route rebuild parses a URL again.
    pub target: Option<Target>,
    /// The worker runs it by itself (not placed by the coordinator): placement
    /// never takes it away, and it counts as a provider.
    pub declared: bool,
}

impl ServiceEntry {
    /// A service the coordinator put on the worker (placed or adopted),
    /// waiting for the worker's first report.
    pub fn placed(url: String, message: &str) -> Self {
        ServiceEntry {
            state: ServiceState::Unspecified,
            message: message.into(),
            target: Endpoint::parse_url(&url),
            url,
            declared: false,
        }
    }

    /// A service first heard of in a status report: no URL, not declared.
    pub fn reported() -> Self {
        ServiceEntry {
            state: ServiceState::Unspecified,
            message: String::new(),
            url: String::new(),
            target: None,
            declared: false,
        }
    }
}

/// One worker as the whole fleet sees it. Times are milliseconds on the
/// registry's clock.
#[derive(Debug, Clone)]
pub struct FleetRecord {
    /// Assigned by the coordinator, stable across resumptions.
    pub worker_id: String,
    pub name: String,
    /// The worker's persistent id (it survives a worker restart); a Hello
    /// with it and no token resumes a disconnected record.
    pub instance_id: String,
    pub capabilities: proto::Capabilities,
    pub services: BTreeMap<String, ServiceEntry>,
    pub advertise_address: String,
    pub version: String,
    pub registered_ms: u64,
    /// The current session: calls from an older session are ignored.
    pub generation: u64,
    /// SHA-256 of the current resume token; the token itself is never kept.
    pub token_digest: [u8; 32],
    /// Set by an operator; never cleared for the record's life.
    pub draining: bool,
    /// Streams this worker id has had (1 + resumptions).
    pub sessions: u64,
    /// Catalog services placed on this worker, and the assignment's version.
    pub placed: BTreeSet<String>,
    pub assignment_version: u64,
    /// When the stream closed (for the placement grace); `None` while connected.
    pub disconnected_ms: Option<u64>,
    /// The worker routes its traffic through a tunnel it opens.
    pub tunnel_wanted: bool,
}

impl FleetRecord {
    /// The record a first Hello makes.
    pub fn new(worker_id: String, hello: &Hello, generation: u64, token_digest: [u8; 32], now_ms: u64) -> Self {
        let mut rec = FleetRecord {
            worker_id,
            name: String::new(),
            instance_id: hello.instance_id.clone(),
            capabilities: Default::default(),
            services: BTreeMap::new(),
            advertise_address: String::new(),
            version: String::new(),
            registered_ms: now_ms,
            generation,
            token_digest,
            draining: false,
            sessions: 1,
            placed: BTreeSet::new(),
            assignment_version: 1,
            disconnected_ms: None,
            tunnel_wanted: hello.tunnel,
        };
        rec.apply_hello(hello);
        rec
    }

    /// Takes in what a Hello says about the worker. Placed services stay
    /// placed across a resumption; their state is the worker's to report
    /// again. Declared services are replaced by the Hello's.
    pub fn apply_hello(&mut self, hello: &Hello) {
        self.name = hello.name.clone();
        self.capabilities = hello.capabilities.clone().unwrap_or_default();
        self.advertise_address = hello.advertise_address.clone();
        self.version = hello.version.clone();
        let placed: Vec<(String, ServiceEntry)> = std::mem::take(&mut self.services)
            .into_iter()
            .filter(|(name, _)| self.placed.contains(name))
            .map(|(name, mut e)| {
                e.state = ServiceState::Unspecified;
                e.message = "waiting for the worker's report".into();
                (name, e)
            })
            .collect();
        self.services = hello
            .services
            .iter()
            .map(|s| {
                let entry = ServiceEntry {
                    state: ServiceState::Unspecified,
                    message: "no status reported yet".into(),
                    url: s.url.clone(),
                    target: Endpoint::parse_url(&s.url),
                    declared: true,
                };
                (s.name.clone(), entry)
            })
            .collect();
        for (name, e) in placed {
            self.services.entry(name).or_insert(e);
        }
    }

    /// Services a new record's worker still runs from an earlier
    /// coordinator's placement (name -> URL the proxy dials), kept as placed
    /// so nothing is restarted. Declared services win; the service bound holds.
    pub fn adopt(&mut self, adopt: &BTreeMap<String, String>) {
        for (svc, url) in adopt {
            if self.placed.len() >= super::limits::MAX_SERVICES || self.services.contains_key(svc) {
                continue;
            }
            self.placed.insert(svc.clone());
            self.services.insert(
                svc.clone(),
                ServiceEntry::placed(url.clone(), "adopted: still running from an earlier placement"),
            );
        }
    }

    /// The services the worker runs by itself, as (name, URL).
    pub fn declared(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .filter(|(_, s)| s.declared)
            .map(|(n, s)| (n.clone(), s.url.clone()))
            .collect()
    }
}
