//! Everything the coordinator can be told, read in one place. Every
//! environment variable has a flag twin; durations accept seconds or
//! `500ms` / `5s` / `10m`.
//!
//! Every default is written once, in [`defaults`]: clap parses those strings
//! as if they had been typed, and [`CoordinatorConfig::default`] parses the
//! same strings, so the flags and the embedded configuration cannot drift.

use crate::duration::parse_duration;
use clap::builder::TypedValueParser as _;
use clap::parser::ValueSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The coordinator's defaults. Durations and addresses are written as an
/// operator would type them (clap's `default_value` takes a string); counts
/// are typed.
pub mod defaults {
    pub const LISTEN: &str = "8080";
    /// The seed fleet's `HEARTBEAT_TIMEOUT_SECONDS`.
    pub const HEARTBEAT_TIMEOUT: &str = "300";
    /// The seed fleet's `WORKER_TIMEOUT_SECONDS`.
    pub const WORKER_TIMEOUT: &str = "600";
    /// The keepalive interval, unless a shorter heartbeat timeout asks for a
    /// shorter one (see [`super::derive_timeouts`]).
    pub const KEEPALIVE_INTERVAL: &str = "5";
    pub const MAX_WORKERS: usize = 20_000;
    pub const MAX_CONNECTIONS: usize = 25_000;
    pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
    pub const MAX_PENDING_HANDSHAKES: usize = 1024;
    /// Enough for a host running many workers that all reconnect at once (a
    /// coordinator restart), few enough that one address holds a sliver of
    /// the total pool.
    pub const MAX_PENDING_HANDSHAKES_PER_ADDRESS: usize = 64;
    pub const HANDSHAKE_TIMEOUT: &str = "5s";
    pub const HTTP_IDLE_TIMEOUT: &str = "60s";
    pub const SHUTDOWN_GRACE: &str = "5s";
    pub const HTTP2_KEEPALIVE_INTERVAL: &str = "20s";
    pub const HTTP2_KEEPALIVE_TIMEOUT: &str = "10s";
    pub const PLACEMENT_GRACE: &str = "30s";
    pub const PROXY_TIMEOUT: &str = "30s";
    pub const PROXY_CONNECT_TIMEOUT: &str = "2s";
    pub const PROXY_RETRIES: u32 = 2;
    pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
}

/// Kept under its earlier name for callers outside this module.
pub const DEFAULT_MAX_PENDING_HANDSHAKES_PER_ADDRESS: usize = defaults::MAX_PENDING_HANDSHAKES_PER_ADDRESS;

/// A default duration, parsed as clap parses it.
fn default_duration(s: &str) -> Duration {
    parse_duration(s).expect("every default duration parses")
}

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorConfig {
    /// Where to serve gRPC and HTTP: a port alone (all interfaces) or HOST:PORT.
    #[arg(long = "listen", env = "PORT", default_value = defaults::LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// A connected worker silent this long is `degraded` (and gets no traffic).
    /// Default: 300 s, or half the worker timeout when only that is set and
    /// it is shorter than 600 s.
    #[arg(long, env = "HEARTBEAT_TIMEOUT_SECONDS", default_value = defaults::HEARTBEAT_TIMEOUT, hide_default_value = true, value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// A worker silent this long (connected or not) is removed. Default:
    /// 600 s, or twice the heartbeat timeout when that is set above 300 s.
    #[arg(long, env = "WORKER_TIMEOUT_SECONDS", default_value = defaults::WORKER_TIMEOUT, hide_default_value = true, value_parser = parse_duration)]
    pub worker_timeout: Duration,

    /// How often workers are told to send a keepalive. Default: a third of
    /// the heartbeat timeout, at most 5 s.
    #[arg(long, env = "KEEPALIVE_INTERVAL_SECONDS", default_value = defaults::KEEPALIVE_INTERVAL, hide_default_value = true, value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// Shared secret workers must present (`authorization: Bearer ...`) to connect.
    #[arg(long, env = "EDGEPLANE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// Secret for the Admin API and /api/admin/*, with the admin scope
    /// (drain, revoke, join tokens); with no admin or read token, open.
    #[arg(long, env = "EDGEPLANE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Secret with the read scope: list, get, watch and the health views,
    /// but not drain, revoke or join tokens.
    #[arg(long, env = "EDGEPLANE_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,

    /// Also serve `/metrics` here, plaintext and without a token (for a
    /// Prometheus on a private network); on the main port it needs the
    /// read token when one is set.
    #[arg(long = "metrics-listen", env = "EDGEPLANE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Worker records held at most (connected or waiting to resume); in a
    /// cluster, per coordinator.
    #[arg(long, env = "EDGEPLANE_MAX_WORKERS", default_value_t = defaults::MAX_WORKERS)]
    pub max_workers: usize,

    /// Open TCP connections at most (workers, operators and proxied clients
    /// together); past it new connections are closed at once.
    #[arg(long, env = "EDGEPLANE_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "EDGEPLANE_MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Connect streams allowed to wait for their Hello at once.
    #[arg(long, env = "EDGEPLANE_MAX_PENDING_HANDSHAKES", default_value_t = defaults::MAX_PENDING_HANDSHAKES)]
    pub max_pending_handshakes: usize,

    /// Of those, streams from one source address (IPv6: one /64) at most;
    /// past it that address's next streams are refused at once, so one peer
    /// cannot keep every other worker out.
    #[arg(long, env = "EDGEPLANE_MAX_PENDING_HANDSHAKES_PER_ADDRESS", default_value_t = defaults::MAX_PENDING_HANDSHAKES_PER_ADDRESS)]
    pub max_pending_handshakes_per_address: usize,

    /// A Connect stream that sends no Hello within this is ended.
    #[arg(long, env = "EDGEPLANE_HANDSHAKE_TIMEOUT", default_value = defaults::HANDSHAKE_TIMEOUT, value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// An HTTP/1 connection whose next request head has not arrived this
    /// long after the previous response (idle keep-alive, or a slow sender)
    /// is closed.
    #[arg(long, env = "EDGEPLANE_HTTP_IDLE_TIMEOUT", default_value = defaults::HTTP_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// Serve `/service/` requests from HTTP/1 clients with the byte-level
    /// fast path (`proxy::h1`; raw pipes through tunnels). Off: hyper serves
    /// them, as it serves everything the fast path hands over. The env var
    /// turns it off with `true`, `1`, `yes` or `on`; `false`, `0`, `no` or
    /// `off` keep it on.
    //
    // The flag and the env var say "no fast path", so the raw value is parsed
    // in that sense and inverted into this field, which says whether the fast
    // path is on. `SetFalse` cannot do this: clap stores an env var's value
    // as it is for `SetFalse`, which inverted the env var and refused `1`.
    #[arg(
        long = "no-http1-fast-path",
        env = "EDGEPLANE_NO_HTTP1_FAST_PATH",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new().map(fast_path_unless_no)
    )]
    pub http1_fast_path: bool,

    /// Do not count proxied requests (the `edgeplane_proxy_*` series): the
    /// one per-request cost of metrics, for measuring it (BENCHMARKS.md).
    #[arg(long = "no-proxy-metrics", env = "EDGEPLANE_NO_PROXY_METRICS")]
    pub no_proxy_metrics: bool,

    /// Also export a series per worker (`edgeplane_worker_info`,
    /// `edgeplane_worker_last_heard_seconds`): one or two per worker, for
    /// fleets where that many series are acceptable.
    #[arg(long = "metrics-per-worker", env = "EDGEPLANE_METRICS_PER_WORKER")]
    pub metrics_per_worker: bool,

    /// On SIGINT/SIGTERM: how long streams get to close before connections are cut.
    #[arg(long, env = "EDGEPLANE_SHUTDOWN_GRACE", default_value = defaults::SHUTDOWN_GRACE, value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// HTTP/2 ping interval, so a dead TCP path is noticed while nothing is sent.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE", default_value = defaults::HTTP2_KEEPALIVE_INTERVAL, value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE_TIMEOUT", default_value = defaults::HTTP2_KEEPALIVE_TIMEOUT, value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// Service catalog (TOML) replacing the embedded default.
    #[arg(long, env = "EDGEPLANE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// A disconnected worker keeps its placed services this long before they
    /// are placed elsewhere (a quick reconnect should not move a loaded model).
    #[arg(long, env = "EDGEPLANE_PLACEMENT_GRACE", default_value = defaults::PLACEMENT_GRACE, value_parser = parse_duration)]
    pub placement_grace: Duration,

    /// Proxy: time to the upstream's response head, unless the catalog sets one.
    #[arg(long, env = "EDGEPLANE_PROXY_TIMEOUT", default_value = defaults::PROXY_TIMEOUT, value_parser = parse_duration)]
    pub proxy_timeout: Duration,

    /// Proxy: time to connect to a replica before trying another.
    #[arg(long, env = "EDGEPLANE_PROXY_CONNECT_TIMEOUT", default_value = defaults::PROXY_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub proxy_connect_timeout: Duration,

    /// Proxy: extra attempts on other replicas after a connect failure or reset.
    #[arg(long, env = "EDGEPLANE_PROXY_RETRIES", default_value_t = defaults::PROXY_RETRIES)]
    pub proxy_retries: u32,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "EDGEPLANE_MAX_STREAMS_PER_CONNECTION", default_value_t = defaults::MAX_STREAMS_PER_CONNECTION)]
    pub max_streams_per_connection: u32,

    /// Several coordinators sharing one fleet through etcd (`--etcd`).
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterConfig,

    #[command(flatten)]
    pub tls: super::tls_config::TlsConfig,
}

impl Default for CoordinatorConfig {
    /// The flags' defaults (the same [`defaults`]), for tests and embedding.
    fn default() -> Self {
        let (heartbeat_timeout, worker_timeout, keepalive_interval) = derive_timeouts(None, None, None);
        CoordinatorConfig {
            listen: parse_listen(defaults::LISTEN).expect("the default listen address parses"),
            heartbeat_timeout,
            worker_timeout,
            keepalive_interval,
            join_token: None,
            admin_token: None,
            read_token: None,
            metrics_listen: None,
            max_workers: defaults::MAX_WORKERS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            max_pending_handshakes: defaults::MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_address: defaults::MAX_PENDING_HANDSHAKES_PER_ADDRESS,
            handshake_timeout: default_duration(defaults::HANDSHAKE_TIMEOUT),
            http_idle_timeout: default_duration(defaults::HTTP_IDLE_TIMEOUT),
            http1_fast_path: true,
            no_proxy_metrics: false,
            metrics_per_worker: false,
            shutdown_grace: default_duration(defaults::SHUTDOWN_GRACE),
            http2_keepalive_interval: default_duration(defaults::HTTP2_KEEPALIVE_INTERVAL),
            http2_keepalive_timeout: default_duration(defaults::HTTP2_KEEPALIVE_TIMEOUT),
            max_streams_per_connection: defaults::MAX_STREAMS_PER_CONNECTION,
            catalog: None,
            placement_grace: default_duration(defaults::PLACEMENT_GRACE),
            proxy_timeout: default_duration(defaults::PROXY_TIMEOUT),
            proxy_connect_timeout: default_duration(defaults::PROXY_CONNECT_TIMEOUT),
            proxy_retries: defaults::PROXY_RETRIES,
            cluster: crate::cluster::ClusterConfig::default(),
            tls: Default::default(),
        }
    }
}

/// The three liveness timings, each the one given or derived from those
/// given, so that setting any one of the seed fleet's two timeouts alone
/// always gives a configuration that works (`HEARTBEAT_TIMEOUT_SECONDS=5`
/// alone once failed on the fixed 5 s keepalive):
///
/// - heartbeat timeout: as given; else half the worker timeout when that is
///   given and shorter than twice the default; else 300 s;
/// - worker timeout: as given; else twice the heartbeat timeout, at least
///   600 s (so a heartbeat timeout set above 300 s still leaves time to
///   resume after it);
/// - keepalive interval: as given; else a third of the heartbeat timeout,
///   at most 5 s, so that two keepalives can be lost before a worker looks
///   degraded.
///
/// Values that were all given are kept as they are: a contradiction among
/// them is for [`CoordinatorConfig::validate`] to refuse, never to be
/// silently corrected.
pub fn derive_timeouts(
    heartbeat: Option<Duration>,
    worker: Option<Duration>,
    keepalive: Option<Duration>,
) -> (Duration, Duration, Duration) {
    let default_heartbeat = default_duration(defaults::HEARTBEAT_TIMEOUT);
    let default_worker = default_duration(defaults::WORKER_TIMEOUT);
    let heartbeat = heartbeat.unwrap_or_else(|| match worker {
        Some(w) => (w / 2).min(default_heartbeat),
        None => default_heartbeat,
    });
    let worker = worker.unwrap_or_else(|| heartbeat.saturating_mul(2).max(default_worker));
    let keepalive = keepalive.unwrap_or_else(|| (heartbeat / 3).min(default_duration(defaults::KEEPALIVE_INTERVAL)));
    (heartbeat, worker, keepalive)
}

/// A configuration that cannot work, found before anything is served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("keepalive interval ({0:?}) must be shorter than the heartbeat timeout ({1:?})")]
    KeepaliveTooSlow(Duration, Duration),
    #[error("heartbeat timeout ({0:?}) must not exceed the worker timeout ({1:?})")]
    HeartbeatAfterRemoval(Duration, Duration),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl CoordinatorConfig {
    /// Replaces the liveness timings a command line left unset (neither flag
    /// nor env var) with the ones [`derive_timeouts`] derives from those it
    /// set. `matches` are the `coordinator` subcommand's. The binary calls
    /// this once after parsing; a configuration built in code states its
    /// timings itself.
    pub fn derive_unset_timeouts(&mut self, matches: &clap::ArgMatches) {
        let given = |id: &str, v: Duration| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
            .then_some(v)
        };
        (self.heartbeat_timeout, self.worker_timeout, self.keepalive_interval) = derive_timeouts(
            given("heartbeat_timeout", self.heartbeat_timeout),
            given("worker_timeout", self.worker_timeout),
            given("keepalive_interval", self.keepalive_interval),
        );
    }

    /// Refuses timings and limits that cannot work, before anything is served.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker_timeout.is_zero() {
            return Err(ConfigError::Zero("worker timeout"));
        }
        if self.heartbeat_timeout.is_zero() {
            return Err(ConfigError::Zero("heartbeat timeout"));
        }
        if self.keepalive_interval.is_zero() {
            return Err(ConfigError::Zero("keepalive interval"));
        }
        if self.max_workers == 0 {
            return Err(ConfigError::Zero("max workers"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("max connections"));
        }
        if self.max_pending_handshakes == 0 {
            return Err(ConfigError::Zero("max pending handshakes"));
        }
        if self.max_pending_handshakes_per_address == 0 {
            return Err(ConfigError::Zero("max pending handshakes per address"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Zero("handshake timeout"));
        }
        if self.http_idle_timeout.is_zero() {
            return Err(ConfigError::Zero("HTTP idle timeout"));
        }
        if self.keepalive_interval >= self.heartbeat_timeout {
            return Err(ConfigError::KeepaliveTooSlow(
                self.keepalive_interval,
                self.heartbeat_timeout,
            ));
        }
        if self.heartbeat_timeout > self.worker_timeout {
            return Err(ConfigError::HeartbeatAfterRemoval(
                self.heartbeat_timeout,
                self.worker_timeout,
            ));
        }
        Ok(())
    }
}

/// `--no-http1-fast-path` / `EDGEPLANE_NO_HTTP1_FAST_PATH` say "no"; the
/// config field says whether the fast path is on.
fn fast_path_unless_no(no: bool) -> bool {
    !no
}

/// `8080` means every interface on port 8080; `127.0.0.1:0` is taken as is.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse().map_err(|_| format!("`{s}` is neither a port nor HOST:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_port_or_address() {
        assert_eq!(parse_listen("9000").unwrap(), "0.0.0.0:9000".parse().unwrap());
        assert_eq!(parse_listen("127.0.0.1:0").unwrap(), "127.0.0.1:0".parse().unwrap());
        assert!(parse_listen("localhost").is_err());
    }

    /// The flag and the env var together, in one test: the env var's name is
    /// fixed, and this is the only test in the crate that parses the
    /// coordinator's flags, so nothing else reads it while it is set.
    #[test]
    fn the_fast_path_is_on_unless_turned_off() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            c: CoordinatorConfig,
        }
        use clap::Parser as _;
        const VAR: &str = "EDGEPLANE_NO_HTTP1_FAST_PATH";
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("coordinator").chain(args.iter().copied()));
        std::env::remove_var(VAR);
        let on = parse(&[]).unwrap().c;
        assert!(on.http1_fast_path && CoordinatorConfig::default().http1_fast_path);
        let off = parse(&["--no-http1-fast-path"]).unwrap().c;
        assert!(!off.http1_fast_path);

        // The env var means what its name says, in the usual spellings.
        let mut wrong = Vec::new();
        for (value, fast_path) in [
            ("true", false),
            ("1", false),
            ("yes", false),
            ("on", false),
            ("TRUE", false),
            ("false", true),
            ("0", true),
            ("no", true),
            ("off", true),
        ] {
            std::env::set_var(VAR, value);
            match parse(&[]) {
                Ok(cli) if cli.c.http1_fast_path == fast_path => {}
                other => wrong.push(format!(
                    "{VAR}={value}: {:?}",
                    other.map(|c| c.c.http1_fast_path).map_err(|e| e.kind())
                )),
            }
        }
        // The flag wins over the env var.
        std::env::set_var(VAR, "false");
        let flag_wins = parse(&["--no-http1-fast-path"])
            .map(|c| c.c.http1_fast_path)
            .map_err(|e| e.kind());
        std::env::set_var(VAR, "maybe");
        let nonsense = parse(&[]).map(|c| c.c.http1_fast_path).map_err(|e| e.kind());
        std::env::remove_var(VAR);
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(matches!(flag_wins, Ok(false)), "{flag_wins:?}");
        assert!(nonsense.is_err(), "`maybe` is not a boolean: {nonsense:?}");
    }

    /// Parses a `coordinator` command line as the binary does, with every
    /// env twin ignored, so the process environment (and the test above,
    /// which sets one) cannot change the outcome.
    fn parse_clean(args: &[&str]) -> Result<CoordinatorConfig, clap::Error> {
        use clap::{CommandFactory as _, FromArgMatches as _};
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            c: CoordinatorConfig,
        }
        let m = Cli::command()
            .mut_args(|a| a.env(None))
            .try_get_matches_from(std::iter::once("coordinator").chain(args.iter().copied()))?;
        let mut c = Cli::from_arg_matches(&m)?.c;
        c.derive_unset_timeouts(&m);
        Ok(c)
    }

    #[test]
    fn an_empty_command_line_gives_the_same_configuration_as_default() {
        let parsed = parse_clean(&[]).unwrap();
        assert_eq!(format!("{parsed:#?}"), format!("{:#?}", CoordinatorConfig::default()));
        assert_eq!(parsed.keepalive_interval, Duration::from_secs(5));
    }

    #[test]
    fn either_seed_timeout_set_alone_gives_a_configuration_that_starts() {
        let secs = Duration::from_secs;
        let ok = |args: &[&str]| {
            let c = parse_clean(args).unwrap();
            assert_eq!(c.validate(), Ok(()), "{args:?}");
            (c.heartbeat_timeout, c.worker_timeout, c.keepalive_interval)
        };
        // The heartbeat timeout alone: the keepalive follows it down.
        assert_eq!(ok(&["--heartbeat-timeout", "5"]), (secs(5), secs(600), secs(5) / 3));
        assert_eq!(
            ok(&["--heartbeat-timeout", "1s"]).2,
            Duration::from_millis(333) + Duration::from_nanos(333_333)
        );
        assert_eq!(ok(&["--heartbeat-timeout", "60"]).2, secs(5));
        // ... and the worker timeout up, past the heartbeat timeout.
        assert_eq!(ok(&["--heartbeat-timeout", "900"]), (secs(900), secs(1800), secs(5)));
        // The worker timeout alone, below the heartbeat default.
        assert_eq!(ok(&["--worker-timeout", "60"]), (secs(30), secs(60), secs(5)));
        assert_eq!(
            ok(&["--worker-timeout", "3"]),
            (Duration::from_millis(1500), secs(3), Duration::from_millis(500))
        );
        assert_eq!(ok(&["--worker-timeout", "3600"]), (secs(300), secs(3600), secs(5)));
        // The keepalive interval alone changes nothing else.
        assert_eq!(ok(&["--keepalive-interval", "1s"]), (secs(300), secs(600), secs(1)));
    }

    #[test]
    fn a_contradiction_between_given_timeouts_stays_an_error() {
        let refused = |args: &[&str]| parse_clean(args).unwrap().validate().unwrap_err();
        let e = refused(&["--heartbeat-timeout", "5", "--keepalive-interval", "5"]);
        assert_eq!(
            e,
            ConfigError::KeepaliveTooSlow(Duration::from_secs(5), Duration::from_secs(5))
        );
        assert_eq!(
            e.to_string(),
            "keepalive interval (5s) must be shorter than the heartbeat timeout (5s)"
        );
        let e = refused(&["--heartbeat-timeout", "900", "--worker-timeout", "600"]);
        assert!(matches!(e, ConfigError::HeartbeatAfterRemoval(..)), "{e}");
        assert_eq!(refused(&["--worker-timeout", "0"]), ConfigError::Zero("worker timeout"));
    }

    #[test]
    fn inconsistent_timeouts_are_refused() {
        let mut c = CoordinatorConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.keepalive_interval = c.heartbeat_timeout;
        assert!(matches!(c.validate(), Err(ConfigError::KeepaliveTooSlow(..))));
        let c = CoordinatorConfig {
            worker_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::HeartbeatAfterRemoval(..))));
    }
}
